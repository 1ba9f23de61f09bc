//! The one shared helper for HTTP fakes (wiremock): a responder that plays a script of
//! responses (the last repeats), and an OpenAI-compatible chat-completions server.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The chat-completions path of an OpenAI-compatible server.
pub const CHAT_PATH: &str = "/v1/chat/completions";

/// Answers call `i` with `replies[i]`; the last reply repeats.
pub struct Sequence {
    replies: Vec<ResponseTemplate>,
    calls: AtomicUsize,
}

impl Sequence {
    /// # Panics
    /// If `replies` is empty.
    pub fn new(replies: Vec<ResponseTemplate>) -> Self {
        assert!(!replies.is_empty(), "a sequence needs at least one reply");
        Self {
            replies,
            calls: AtomicUsize::new(0),
        }
    }
}

impl Respond for Sequence {
    fn respond(&self, _req: &Request) -> ResponseTemplate {
        let i = self.calls.fetch_add(1, Ordering::SeqCst);
        self.replies[i.min(self.replies.len() - 1)].clone()
    }
}

/// A 200 answer with a JSON body.
pub fn ok_json(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

/// A server answering `POST /v1/chat/completions` with `replies` in order.
pub async fn chat_server(replies: Vec<ResponseTemplate>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CHAT_PATH))
        .respond_with(Sequence::new(replies))
        .mount(&server)
        .await;
    server
}
