//! Benchmark of the embedded model over fixed mission prompts:
//! `cargo bench --workspace --bench local_model`.
//!
//! Needs the model: `$MANA_AI_LOCAL_MODEL`, else `target/local-model/models/…` (created by
//! the server's local-model tests or `mana-ai model fetch`), else it is fetched there.
//! Prints load time, prompt and generation tokens/s, time per mission, peak RSS, and the
//! share of runs with a schema-valid tool call (every call is checked with
//! `validate_call`) and with a "sensible" one (the tool belongs to the expected module).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mana_ai_core::catalog::{function_specs, validate_call, Catalog, Tool};
use mana_ai_core::chat::ChatMessage;
use mana_ai_local_llm::fetch;
use mana_ai_local_llm::schema::ToolSchema;
use mana_ai_local_llm::{Decision, LocalModel, ToolMode};

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

fn main() {
    let path = model_path();
    let t0 = Instant::now();
    let model = LocalModel::load(&path).unwrap_or_else(|e| panic!("load: {e}"));
    let load = t0.elapsed();
    let cat = Catalog::builtin();
    let offered: Vec<&Tool> = MODULE_TOOLS
        .iter()
        .map(|n| cat.get(n).unwrap_or_else(|| panic!("no tool {n}")))
        .collect();
    let schemas =
        ToolSchema::from_specs(&function_specs(&offered)).unwrap_or_else(|e| panic!("{e}"));

    println!("| # | tool | valid | sensible | prompt tok | gen tok | prompt s | gen s |");
    println!("|---|---|---|---|---|---|---|---|");
    let (mut valid, mut sensible, mut calls) = (0usize, 0usize, 0usize);
    let (mut p_tok, mut g_tok) = (0usize, 0usize);
    let (mut p_time, mut g_time) = (Duration::ZERO, Duration::ZERO);
    let mut total = Duration::ZERO;
    // `MANA_AI_BENCH_MISSIONS=N` runs only the first N missions (quick runs in debug builds).
    let limit = std::env::var("MANA_AI_BENCH_MISSIONS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(MISSIONS.len())
        .min(MISSIONS.len());
    for (i, (goal, modules)) in MISSIONS.iter().take(limit).enumerate() {
        let messages = vec![
            ChatMessage::system(
                "You plan background work for the user's personal workbench. Pick the single \
                 best next tool call for the mission.",
            ),
            ChatMessage::user(format!("Mission: {goal}")),
        ];
        let started = Instant::now();
        let g = model
            .generate(&messages, &schemas, &ToolMode::Auto)
            .unwrap_or_else(|e| panic!("mission {i}: {e}"));
        total += started.elapsed();
        p_tok += g.prompt_tokens;
        g_tok += g.outcome.completion_tokens;
        p_time += g.prompt_time;
        g_time += g.generation_time;
        let (label, ok, good) = match &g.outcome.decision {
            Decision::Call { name, arguments } => {
                calls += 1;
                let ok = validate_call(&offered, name, arguments).is_ok();
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
    let n = limit;
    println!();
    println!("model load: {:.2} s", load.as_secs_f64());
    println!(
        "prompt: {p_tok} tokens in {:.2} s = {:.1} tok/s",
        p_time.as_secs_f64(),
        p_tok as f64 / p_time.as_secs_f64()
    );
    println!(
        "generation: {g_tok} tokens in {:.2} s = {:.1} tok/s",
        g_time.as_secs_f64(),
        g_tok as f64 / g_time.as_secs_f64()
    );
    println!(
        "time per planned mission (one constrained call): {:.2} s",
        total.as_secs_f64() / n as f64
    );
    println!(
        "peak RSS: {:.0} MiB (resident now: {:.0} MiB)",
        peak_rss_mib(),
        status_mib("VmRSS:")
    );
    println!(
        "runs with >=1 tool call: {calls}/{n}; schema-valid calls: {valid}/{calls}; sensible: {sensible}/{n}"
    );
    assert_eq!(valid, calls, "every emitted tool call must validate");
}
