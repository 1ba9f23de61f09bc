//! Benchmark of the embedded model over fixed mission prompts:
//! `cargo bench --workspace --bench local_model`.
//!
//! Needs the model: `$MANA_AI_LOCAL_MODEL`, else `target/local-model/models/…` (created by
//! the server's local-model tests or `mana-ai model fetch`), else it is fetched there.
//! Prints load time, prompt and generation tokens/s, time per mission, peak RSS, and the
//! share of runs with a schema-valid tool call (every call is checked with
//! `validate_call`) and with a "sensible" one (the tool belongs to the expected module).
//!
//! Every mission runs cold (cache cleared) so prompt speed is comparable with llama.cpp;
//! then raw greedy generation (no constraint), the constraint's share of the time per
//! token, and a two-round planning loop with and without prompt reuse are measured.
//! Environment: `MANA_AI_BENCH_MISSIONS=N` (first N missions only),
//! `MANA_AI_BENCH_DUMP=file` (write the prompts' token ids and output lengths as JSON lines,
//! for `scripts/bench-local-vs-llamacpp.sh`), `MANA_AI_BENCH_ACCURACY=1` (instead: compare
//! the quantized kernels' logits with the same weights widened to f32, on three prompts),
//! `MANA_AI_BENCH_RAW_TOKENS=N` (tokens of raw greedy generation per prompt, default 64;
//! a large N makes a profile of the run mostly generation), `MANA_AI_BENCH_TOOLS=all` (offer
//! the whole catalog instead of the 15 module tools, as a mission without a module does:
//! longer prompts after tool narrowing).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mana_ai_core::catalog::{function_specs, validate_call, Catalog, Tool};
use mana_ai_core::chat::ChatMessage;
use mana_ai_local_llm::fetch;
use mana_ai_local_llm::llama::KvCache;
use mana_ai_local_llm::schema::ToolSchema;
use mana_ai_local_llm::{prompt, Decision, LocalModel, ToolMode};

const SYSTEM: &str = "You plan background work for the user's personal workbench. Pick the \
                      single best next tool call for the mission.";
/// Tokens of raw greedy generation per measured prompt (default).
const RAW_TOKENS: usize = 64;

/// (mission text, modules whose tools count as sensible).
const MISSIONS: &[(&str, &[&str])] = &[
    (
        "Goal: run a half marathon in May. Create a goal to track weekly running distance.",
        &["goals"],
    ),
    (
        "Goal: read 12 books this year. Set up a monthly reading goal.",
        &["goals", "library"],
    ),
    (
        "Check my goal progress and pause the goal about learning Spanish.",
        &["goals"],
    ),
    (
        "Add a task to renew my passport before the end of the month.",
        &["todo"],
    ),
    (
        "Add a high-priority task: send the tax documents to the accountant by Friday.",
        &["todo"],
    ),
    ("List my open tasks so I can plan tomorrow.", &["todo"]),
    ("Mark the task 'buy printer ink' as done.", &["todo"]),
    ("Create a task to water the plants every Sunday.", &["todo"]),
    (
        "Write a journal entry about today's calm morning walk by the river.",
        &["journal"],
    ),
    (
        "Journal: I felt stressed at work but the evening with friends was lovely.",
        &["journal", "mood"],
    ),
    (
        "Summarise my week in a short journal entry titled 'Week 12'.",
        &["journal"],
    ),
    (
        "Record in my journal that I finished the first draft of the novel.",
        &["journal"],
    ),
    (
        "Research the latest news about heat pumps in Europe.",
        &["news-research", "news"],
    ),
    (
        "Find recent articles about open-source AI models.",
        &["news-research", "news"],
    ),
    (
        "Research news on the local elections and save the best article.",
        &["news-research", "news"],
    ),
    (
        "Look for news about electric bike subsidies.",
        &["news-research", "news"],
    ),
    (
        "Create a note with the shopping list: eggs, flour, apples.",
        &["notes"],
    ),
    (
        "Save a note with the meeting summary: budget approved, launch in June.",
        &["notes"],
    ),
    (
        "Make a note of the wifi password change for the guest network.",
        &["notes"],
    ),
    (
        "Plan my week: add a task to prepare Monday's presentation.",
        &["todo"],
    ),
    (
        "Goal: drink more water. Create a daily goal for it.",
        &["goals"],
    ),
    (
        "Write a gratitude journal entry about my family.",
        &["journal"],
    ),
    (
        "Research news about remote work trends and note the key points.",
        &["news-research", "news", "notes"],
    ),
    (
        "Add a task to call grandma on her birthday next Tuesday.",
        &["todo"],
    ),
];

const MODULE_TOOLS: &[&str] = &[
    "create_task",
    "complete_task",
    "complete_tasks_by_title",
    "list_tasks",
    "create_note",
    "append_to_note",
    "list_notes",
    "create_journal_entry",
    "research_news",
    "save_news_article",
    "list_goals",
    "get_goal_progress",
    "create_goal",
    "pause_goal",
    "log_mood",
];

fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os(fetch::MODEL_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/local-model");
    match fetch::fetch_model(&cache) {
        Ok(f) => match f {
            fetch::Fetched::AlreadyPresent(p) | fetch::Fetched::Downloaded(p) => p,
        },
        Err(e) => panic!("benchmark needs the model: {e}"),
    }
}

fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// A `kB` line of `/proc/self/status`, in MiB.
fn status_mib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn env_flag(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn messages(goal: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::system(SYSTEM),
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

fn main() {
    let path = model_path();
    if env_flag("MANA_AI_BENCH_ACCURACY").is_some() {
        return accuracy(&path);
    }
    let t0 = Instant::now();
    let model = LocalModel::load(&path).unwrap_or_else(|e| panic!("load: {e}"));
    let load = t0.elapsed();
    println!(
        "model load: {:.2} s; kernels {}; weights {:.1} MiB; RSS after load {:.0} MiB",
        load.as_secs_f64(),
        if mana_ai_local_llm::quant::has_avx2() {
            "AVX2"
        } else {
            "scalar"
        },
        model.llama().weight_bytes() as f64 / 1048576.0,
        status_mib("VmRSS:")
    );
    let cat = Catalog::builtin();
    let offered: Vec<&Tool> = if env_flag("MANA_AI_BENCH_TOOLS").as_deref() == Some("all") {
        cat.tools().iter().collect()
    } else {
        MODULE_TOOLS
            .iter()
            .map(|n| cat.get(n).unwrap_or_else(|| panic!("no tool {n}")))
            .collect()
    };
    let schemas =
        ToolSchema::from_specs(&function_specs(&offered)).unwrap_or_else(|e| panic!("{e}"));
    let limit = env_flag("MANA_AI_BENCH_MISSIONS")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(MISSIONS.len())
        .min(MISSIONS.len());
    let dump = missions(&model, cat, &offered, &schemas, limit);
    raw_generation(&model, &dump);
    planning_loop(&model, &schemas);
    println!(
        "peak RSS: {:.0} MiB (resident now: {:.0} MiB)",
        peak_rss_mib(),
        status_mib("VmRSS:")
    );
    if let Some(file) = env_flag("MANA_AI_BENCH_DUMP") {
        let lines: Vec<String> = dump
            .iter()
            .map(|(ids, n)| serde_json::json!({"prompt": ids, "gen_tokens": n}).to_string())
            .collect();
        std::fs::write(&file, lines.join("\n") + "\n").unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

/// The mission set, each cold; returns every prompt's ids and output length.
fn missions(
    model: &LocalModel,
    cat: &Catalog,
    offered: &[&Tool],
    schemas: &[ToolSchema],
    limit: usize,
) -> Vec<(Vec<u32>, usize)> {
    println!("| # | tool | valid | sensible | prompt tok | gen tok | prompt s | gen s |");
    println!("|---|---|---|---|---|---|---|---|");
    let (mut valid, mut sensible, mut calls) = (0usize, 0usize, 0usize);
    let (mut p_tok, mut g_tok) = (0usize, 0usize);
    let (mut p_time, mut g_time, mut m_time) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut total = Duration::ZERO;
    let mut dump = Vec::new();
    for (i, (goal, modules)) in MISSIONS.iter().take(limit).enumerate() {
        let messages = messages(goal);
        model.clear_cache();
        let started = Instant::now();
        let g = model
            .generate(&messages, schemas, &ToolMode::Auto)
            .unwrap_or_else(|e| panic!("mission {i}: {e}"));
        total += started.elapsed();
        let ids = model.encode_prompt(&prompt::render(&messages, schemas, &ToolMode::Auto));
        dump.push((ids, g.outcome.completion_tokens));
        p_tok += g.prompt_tokens;
        g_tok += g.outcome.completion_tokens;
        p_time += g.prompt_time;
        g_time += g.generation_time;
        m_time += g.model_time;
        let (label, ok, good) = match &g.outcome.decision {
            Decision::Call { name, arguments } => {
                calls += 1;
                let ok = validate_call(offered, name, arguments).is_ok();
                let good = ok
                    && cat
                        .get(name)
                        .is_some_and(|t| modules.contains(&t.module.as_str()));
                (format!("{name} {arguments}"), ok, good)
            }
            Decision::Final(text) => (format!("final: {text}"), false, false),
        };
        valid += usize::from(ok);
        sensible += usize::from(good);
        let label: String = label.chars().take(90).collect();
        println!(
            "| {i} | `{}` | {ok} | {good} | {} | {} | {:.2} | {:.2} |",
            label.replace('|', "/"),
            g.prompt_tokens,
            g.outcome.completion_tokens,
            g.prompt_time.as_secs_f64(),
            g.generation_time.as_secs_f64()
        );
    }
    let n = limit.max(1);
    println!();
    println!(
        "prompt (cold): {p_tok} tokens in {:.2} s = {:.1} tok/s",
        p_time.as_secs_f64(),
        p_tok as f64 / p_time.as_secs_f64()
    );
    println!(
        "generation (constrained): {g_tok} tokens in {:.2} s = {:.1} tok/s; model {:.2} s, \
         constraint {:.2} s ({:.1} % of the time per token)",
        g_time.as_secs_f64(),
        g_tok as f64 / g_time.as_secs_f64(),
        m_time.as_secs_f64(),
        (g_time - m_time).as_secs_f64(),
        100.0 * (g_time - m_time).as_secs_f64() / g_time.as_secs_f64()
    );
    println!(
        "time per planned mission (one constrained call, cold): {:.2} s",
        total.as_secs_f64() / n as f64
    );
    println!(
        "runs with >=1 tool call: {calls}/{limit}; schema-valid calls: {valid}/{calls}; sensible: {sensible}/{limit}"
    );
    assert_eq!(valid, calls, "every emitted tool call must validate");
    dump
}

/// Unconstrained greedy generation after the first prompts (the raw model speed).
fn raw_generation(model: &LocalModel, prompts: &[(Vec<u32>, usize)]) {
    let llama = model.llama();
    let raw_tokens = env_flag("MANA_AI_BENCH_RAW_TOKENS")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(RAW_TOKENS);
    let (mut tokens, mut time) = (0usize, Duration::ZERO);
    for (ids, _) in prompts.iter().take(3) {
        let mut cache = KvCache::default();
        let mut logits = llama
            .forward(&mut cache, ids)
            .unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        for _ in 0..raw_tokens {
            let next = argmax(&logits);
            logits = llama
                .forward(&mut cache, &[next])
                .unwrap_or_else(|e| panic!("{e}"));
        }
        time += started.elapsed();
        tokens += raw_tokens;
    }
    println!(
        "generation (raw greedy, no constraint): {tokens} tokens in {:.2} s = {:.1} tok/s",
        time.as_secs_f64(),
        tokens as f64 / time.as_secs_f64()
    );
}

/// Two rounds of one planning loop: round 2 adds the call and its result. Warm (prefix
/// reused) and cold must decide the same.
fn planning_loop(model: &LocalModel, schemas: &[ToolSchema]) {
    let mut msgs = messages(MISSIONS[3].0);
    model.clear_cache();
    let first = model
        .generate(&msgs, schemas, &ToolMode::Auto)
        .unwrap_or_else(|e| panic!("{e}"));
    let call = match &first.outcome.decision {
        Decision::Call { name, arguments } => mana_ai_core::chat::ToolCall {
            id: "c1".into(),
            name: name.clone(),
            arguments: arguments.clone(),
        },
        Decision::Final(_) => return println!("planning loop: round 1 answered in text"),
    };
    msgs.push(ChatMessage::assistant(None, vec![call]));
    msgs.push(ChatMessage::tool_result(
        "c1",
        "{\"proposalId\": \"p-1\", \"status\": \"pending\"}",
    ));
    let t = Instant::now();
    let warm = model
        .generate(&msgs, schemas, &ToolMode::Auto)
        .unwrap_or_else(|e| panic!("{e}"));
    let warm_time = t.elapsed();
    model.clear_cache();
    let t = Instant::now();
    let cold = model
        .generate(&msgs, schemas, &ToolMode::Auto)
        .unwrap_or_else(|e| panic!("{e}"));
    let cold_time = t.elapsed();
    assert_eq!(
        warm.outcome, cold.outcome,
        "prompt reuse changed the output"
    );
    println!(
        "planning loop round 2: {} prompt tokens, {} reused; warm {:.2} s (prompt {:.2} s) vs \
         cold {:.2} s (prompt {:.2} s); same output",
        warm.prompt_tokens,
        warm.reused_tokens,
        warm_time.as_secs_f64(),
        warm.prompt_time.as_secs_f64(),
        cold_time.as_secs_f64(),
        cold.prompt_time.as_secs_f64()
    );
}

/// Top-1 agreement and logit differences of the quantized kernels against the f32
/// reference, teacher-forced on the reference's greedy continuation of three prompts.
fn accuracy(path: &std::path::Path) {
    let model = LocalModel::load(path).unwrap_or_else(|e| panic!("load: {e}"));
    let reference = LocalModel::load(path)
        .unwrap_or_else(|e| panic!("load: {e}"))
        .widened();
    let cat = Catalog::builtin();
    let offered: Vec<&Tool> = MODULE_TOOLS.iter().filter_map(|n| cat.get(n)).collect();
    let schemas =
        ToolSchema::from_specs(&function_specs(&offered)).unwrap_or_else(|e| panic!("{e}"));
    let (mut agree, mut steps, mut max_diff, mut sum_rel) = (0usize, 0usize, 0f32, 0f64);
    for i in [0usize, 8, 16] {
        let ids = model.encode_prompt(&prompt::render(
            &messages(MISSIONS[i].0),
            &schemas,
            &ToolMode::Auto,
        ));
        let (mut cache, mut ref_cache) = (KvCache::default(), KvCache::default());
        let mut ours = model
            .llama()
            .forward(&mut cache, &ids)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut want = reference
            .llama()
            .forward(&mut ref_cache, &ids)
            .unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..16 {
            let next = argmax(&want);
            agree += usize::from(argmax(&ours) == next);
            steps += 1;
            let range = want.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x))
                - want.iter().fold(f32::INFINITY, |m, &x| m.min(x));
            let diff = ours
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            max_diff = max_diff.max(diff);
            sum_rel += f64::from(diff / range);
            ours = model
                .llama()
                .forward(&mut cache, &[next])
                .unwrap_or_else(|e| panic!("{e}"));
            want = reference
                .llama()
                .forward(&mut ref_cache, &[next])
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    println!(
        "accuracy vs f32 reference: top-1 agreement {agree}/{steps}; max |logit diff| {max_diff:.3}; \
         mean max-diff / logit range {:.4}",
        sum_rel / steps as f64
    );
}
