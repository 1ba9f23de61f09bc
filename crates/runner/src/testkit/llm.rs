//! One scriptable, in-process fake LLM ([`FakeLlm`]): it answers from a queue of
//! scripted replies (the last one repeats) or from a function of the request, each
//! reply optionally delayed, failing, panicking or hanging; it records every request it
//! saw, counts calls and measures how many calls were in flight at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use mana_ai_core::chat::{ChatRequest, ChatResponse, LlmClient, LlmError, Role, ToolCall, Usage};
use serde_json::Value;
use tokio::sync::Notify;

/// What one call does.
#[derive(Debug, Clone)]
enum Outcome {
    Answer(ChatResponse),
    Fail(LlmError),
    Panic(String),
    /// Never answers (until the caller's deadline drops the call).
    Hang,
}

/// One scripted reply: an outcome, the usage it reports and a delay before it.
#[derive(Debug, Clone)]
pub struct Reply {
    outcome: Outcome,
    delay: Duration,
}

impl Reply {
    /// A closing answer without tool calls (`finish_reason` `stop`).
    pub fn text(content: impl Into<String>) -> Self {
        Self::answer(ChatResponse {
            content: Some(content.into()),
            tool_calls: Vec::new(),
            finish_reason: Some("stop".into()),
            usage: Usage::default(),
        })
    }

    /// An answer calling `calls` (name, JSON arguments), ids `call_0`, `call_1`…
    pub fn tool_calls(calls: &[(&str, Value)]) -> Self {
        let tool_calls = calls
            .iter()
            .enumerate()
            .map(|(i, (name, args))| ToolCall {
                id: format!("call_{i}"),
                name: (*name).to_string(),
                arguments: args.to_string(),
            })
            .collect();
        Self::answer(ChatResponse {
            content: None,
            tool_calls,
            finish_reason: Some("tool_calls".into()),
            usage: Usage::default(),
        })
    }

    /// Any response, as given.
    pub fn answer(response: ChatResponse) -> Self {
        Self {
            outcome: Outcome::Answer(response),
            delay: Duration::ZERO,
        }
    }

    /// The call fails with `error`.
    pub fn error(error: LlmError) -> Self {
        Self {
            outcome: Outcome::Fail(error),
            delay: Duration::ZERO,
        }
    }

    /// The call fails as a provider error (`status`, `kind`, `message`).
    pub fn provider_error(status: u16, kind: &str, message: &str) -> Self {
        Self::error(LlmError::Provider {
            status,
            kind: kind.into(),
            message: message.into(),
        })
    }

    /// The call panics (inside the mission task that made it).
    pub fn panic(message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Panic(message.into()),
            delay: Duration::ZERO,
        }
    }

    /// The call never answers.
    pub fn hang() -> Self {
        Self {
            outcome: Outcome::Hang,
            delay: Duration::ZERO,
        }
    }

    /// Reports `prompt` + `completion` tokens (total their sum).
    pub fn usage(mut self, prompt: u64, completion: u64) -> Self {
        if let Outcome::Answer(r) = &mut self.outcome {
            r.usage = Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt + completion,
            };
        }
        self
    }

    /// Waits `delay` before answering.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Responder = dyn Fn(&ChatRequest) -> Reply + Send + Sync;

/// Where replies come from.
enum Source {
    /// One per call, in order; the last one repeats.
    Script(VecDeque<Reply>),
    /// Computed from the request.
    Function(Box<Responder>),
}

/// Holds calls until enough are in flight at once (see [`FakeLlm::hold_until_in_flight`]).
struct Gate {
    wanted: usize,
    timeout: Duration,
    /// Once open (enough calls met), the gate stays open.
    open: AtomicBool,
    opened: Notify,
}

/// A scriptable, in-process [`LlmClient`]. Share it as `Arc<FakeLlm>` (the runner takes
/// an `Arc<dyn LlmClient>`; keep a clone to inspect what it saw).
pub struct FakeLlm {
    source: Mutex<Source>,
    requests: Mutex<Vec<ChatRequest>>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    gate: Option<Gate>,
}

impl FakeLlm {
    /// Answers every call with `reply`.
    pub fn replying(reply: Reply) -> Arc<Self> {
        Self::script(vec![reply])
    }

    /// Answers call `i` with `replies[i]`; the last reply repeats.
    ///
    /// # Panics
    /// If `replies` is empty.
    pub fn script(replies: Vec<Reply>) -> Arc<Self> {
        assert!(!replies.is_empty(), "a script needs at least one reply");
        Arc::new(Self::with_source(Source::Script(replies.into())))
    }

    /// Answers each call with `respond(request)`.
    pub fn responding(
        respond: impl Fn(&ChatRequest) -> Reply + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self::with_source(Source::Function(Box::new(respond))))
    }

    /// Like [`FakeLlm::script`], but every call waits until `wanted` calls are in flight
    /// at once (or `timeout` passes) before it answers: a probe that concurrent callers
    /// really overlap, whatever the machine's speed.
    pub fn hold_until_in_flight(
        wanted: usize,
        timeout: Duration,
        replies: Vec<Reply>,
    ) -> Arc<Self> {
        assert!(!replies.is_empty(), "a script needs at least one reply");
        let mut fake = Self::with_source(Source::Script(replies.into()));
        fake.gate = Some(Gate {
            wanted,
            timeout,
            open: AtomicBool::new(false),
            opened: Notify::new(),
        });
        Arc::new(fake)
    }

    fn with_source(source: Source) -> Self {
        Self {
            source: Mutex::new(source),
            requests: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            gate: None,
        }
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<ChatRequest> {
        lock(&self.requests).clone()
    }

    /// How many calls were made.
    pub fn calls(&self) -> usize {
        lock(&self.requests).len()
    }

    /// The most calls that were in flight at the same time.
    pub fn peak_in_flight(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// The user messages of every request, one string per request (joined by `\n`).
    pub fn user_prompts(&self) -> Vec<String> {
        self.requests().iter().map(user_prompt).collect()
    }

    fn next_reply(&self, request: &ChatRequest) -> Reply {
        match &mut *lock(&self.source) {
            Source::Script(queue) if queue.len() > 1 => queue.pop_front().expect("non-empty"),
            Source::Script(queue) => queue.front().expect("non-empty").clone(),
            Source::Function(respond) => respond(request),
        }
    }

    async fn pass_gate(&self, now_in_flight: usize) {
        let Some(gate) = &self.gate else { return };
        if gate.open.load(Ordering::SeqCst) {
            return;
        }
        if now_in_flight >= gate.wanted {
            gate.open.store(true, Ordering::SeqCst);
            gate.opened.notify_waiters();
            return;
        }
        let opened = gate.opened.notified();
        // Checked again after registering, so an opening between the two is not missed.
        if gate.open.load(Ordering::SeqCst) {
            return;
        }
        let _ = tokio::time::timeout(gate.timeout, opened).await;
    }
}

/// The user messages of `request`, joined by `\n`.
pub fn user_prompt(request: &ChatRequest) -> String {
    request
        .messages
        .iter()
        .filter(|m| m.role == Role::User)
        .filter_map(|m| m.content.as_deref())
        .collect::<Vec<_>>()
        .join("\n")
}

/// True when `request` carries a tool result (the conversation is past its first call).
pub fn has_tool_result(request: &ChatRequest) -> bool {
    request.messages.iter().any(|m| m.role == Role::Tool)
}

/// Decrements the in-flight count when a call ends, however it ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl LlmClient for FakeLlm {
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        lock(&self.requests).push(request.clone());
        let reply = self.next_reply(request);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = InFlight(&self.in_flight);
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.pass_gate(now).await;
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        match reply.outcome {
            Outcome::Answer(response) => Ok(response),
            Outcome::Fail(error) => Err(error),
            Outcome::Panic(message) => panic!("{message}"),
            Outcome::Hang => std::future::pending().await,
        }
    }
}

/// A poisoned lock (a panicking test thread) is used as is: the data stays readable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Wraps a client and runs `hook` once, when the first call arrives and before it is
/// answered: the moment a mission is between its claim and its write-back, for tests
/// that change the world right then (pause another mission, take the claim away…).
pub struct OnFirstCall {
    inner: Arc<dyn LlmClient>,
    hook: tokio::sync::Mutex<Option<BoxFuture<'static, ()>>>,
}

impl OnFirstCall {
    pub fn new(
        inner: Arc<dyn LlmClient>,
        hook: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            inner,
            hook: tokio::sync::Mutex::new(Some(Box::pin(hook))),
        })
    }
}

#[async_trait::async_trait]
impl LlmClient for OnFirstCall {
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let hook = self.hook.lock().await.take();
        if let Some(hook) = hook {
            hook.await;
        }
        self.inner.complete(request).await
    }
}
