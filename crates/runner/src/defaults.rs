//! The default of every [`RunnerConfig`](crate::RunnerConfig) setting, as named constants:
//! the one place these values are written. `RunnerConfig::default()` uses them, and the
//! binary's configuration takes its defaults from here too.

use std::time::Duration;

/// Most due missions listed per pass (`MANA_AI_DUE_LIMIT`).
pub const DUE_LIMIT: i64 = 1_000;
/// `sync_changes` rows folded per refresh batch (`MANA_AI_REFRESH_BATCH_ROWS`).
pub const REFRESH_BATCH_ROWS: i32 = 5_000;
/// Missions planned at the same time (`MANA_AI_MAX_CONCURRENT_PLANS`).
pub const MAX_CONCURRENT_PLANS: usize = 64;
/// Wall-time limit of one mission run (`MANA_AI_MISSION_DEADLINE_MS`).
pub const MISSION_DEADLINE: Duration = Duration::from_secs(300);
/// How far behind "now" the refresh stops, so in-flight commits are not skipped.
pub const REFRESH_SAFETY_MARGIN: Duration = Duration::from_millis(250);
/// A claim's lease outlives the mission deadline by this much (token reservations too):
/// the time left for the write-back after the deadline. A crashed runner's claim is
/// taken over at most deadline + grace after it was made (`MANA_AI_CLAIM_GRACE_MS`).
pub const CLAIM_GRACE: Duration = Duration::from_secs(15);
/// Most linked inputs one run resolves (`MANA_AI_MAX_INPUTS`); the rest are left out and
/// the model is told how many.
pub const MAX_INPUTS: usize = 100;
/// First backoff of a deferred due run (`MANA_AI_DEFER_BASE_MS`); doubled per deferral
/// of the same due run, up to the cap of its kind.
pub const DEFER_BASE: Duration = Duration::from_secs(30);
/// Cap for waits that end by themselves soon: agent slot busy, claim held elsewhere or
/// lost, deep research pending (`MANA_AI_DEFER_WAIT_CAP_MS`).
pub const DEFER_WAIT_CAP: Duration = Duration::from_secs(120);
/// Cap for gates that wait for a change: agent paused, archived or missing, budget used
/// up, run already done (`MANA_AI_DEFER_GATE_CAP_MS`). A change of the mission or its
/// agent lifts the deferral at once.
pub const DEFER_GATE_CAP: Duration = Duration::from_secs(15 * 60);
/// Cap for repeated failures: store errors while loading, gating, claiming or writing
/// back (`MANA_AI_DEFER_ERROR_CAP_MS`).
pub const DEFER_ERROR_CAP: Duration = Duration::from_secs(10 * 60);
/// Planning model (`MANA_AI_LLM_MODEL`).
pub const LLM_MODEL: &str = mana_ai_core::chat::DEFAULT_MODEL;
/// `MANA_AI_COMPACT_MODEL`: the original's concrete compaction model (cheaper than the
/// planner model).
pub const COMPACT_MODEL: &str = "google/gemini-2.5-flash-lite";
/// `MANA_AI_DEFAULT_LANGUAGE`: the language of a run whose mission text is undecidable.
pub const DEFAULT_LANGUAGE: mana_ai_core::lang::Lang = mana_ai_core::lang::Lang::De;
/// `MANA_AI_DEFAULT_LANGUAGE` as written.
pub const DEFAULT_LANGUAGE_NAME: &str = "de";
/// Injection policy (`MANA_AI_POLICY_MODE`).
pub const POLICY_MODE: mana_ai_core::plan::PolicyMode = mana_ai_core::plan::PolicyMode::LogOnly;
/// `max_tokens` of every LLM call, and the completion part of each call's budget
/// reservation (`MANA_AI_MAX_COMPLETION_TOKENS`).
pub const MAX_COMPLETION_TOKENS: u32 = 1_024;

/// Injection policy of runs whose prompt carries research results
/// (`MANA_AI_UNTRUSTED_POLICY_MODE`; the stricter of it and `POLICY_MODE` applies).
pub const UNTRUSTED_POLICY_MODE: mana_ai_core::plan::PolicyMode =
    mana_ai_core::plan::PolicyMode::Enforce;
/// Context window for compaction (`MANA_AI_COMPACT_MAX_CTX`); 0 disables compaction.
pub const CONTEXT_WINDOW_TOKENS: u64 = 1_000_000;
/// Time zone of missions without one (`MANA_AI_DEFAULT_TIMEZONE`), by name.
pub const DEFAULT_TIMEZONE_NAME: &str = "Europe/Berlin";
/// [`DEFAULT_TIMEZONE_NAME`] as a time zone.
pub const DEFAULT_TIMEZONE: chrono_tz::Tz = chrono_tz::Europe::Berlin;
/// Accept JSON plans written as text (`MANA_AI_JSON_PLAN_FALLBACK`).
pub const JSON_PLAN_FALLBACK: bool = false;
/// First backoff after a failed run (`MANA_AI_RETRY_BASE_MS`).
pub const RETRY_BASE: Duration = Duration::from_secs(60);
/// Longest backoff after failed runs (`MANA_AI_RETRY_CAP_MS`).
pub const RETRY_CAP: Duration = Duration::from_secs(6 * 3600);
/// Concurrent missions of the default agent (`MANA_AI_DEFAULT_AGENT_MAX_CONCURRENT`).
pub const DEFAULT_AGENT_MAX_CONCURRENT: u32 = 1;
/// Daily tokens of the default agent (`MANA_AI_DEFAULT_AGENT_TOKENS_PER_DAY`).
pub const DEFAULT_AGENT_TOKENS_PER_DAY: u64 = 200_000;
/// Most iterations a write-back keeps in the mission (`MANA_AI_ITERATION_HISTORY`): the
/// oldest finished ones are dropped first; unfinished ones are never dropped.
pub const ITERATION_HISTORY: usize = 50;
/// Smallest accepted `MANA_AI_ITERATION_HISTORY` (the prompt shows the last three).
pub const ITERATION_HISTORY_MIN: usize = 3;
/// Largest accepted `MANA_AI_ITERATION_HISTORY` (the byte limit bounds the row anyway).
pub const ITERATION_HISTORY_MAX: usize = 1_000;
/// Submit new deep-research jobs (`MANA_AI_DEEP_RESEARCH_ENABLED`).
pub const DEEP_RESEARCH_ENABLED: bool = false;
/// Words that ask for shallow research (matched at a word start, case-insensitively).
pub const SHALLOW_RESEARCH_TRIGGERS: &[&str] = &[
    "recherchier",
    "research",
    "news",
    "finde",
    "suche",
    "aktuelle",
    "neueste",
    "today",
    "history",
    "historisch",
    "on this day",
];
/// Phrases that ask for deep research (matched as whole words, case-insensitively).
pub const DEEP_RESEARCH_TRIGGERS: &[&str] = &[
    "deep research",
    "tiefe recherche",
    "umfassende recherche",
    "hintergrundrecherche",
    "deep dive",
];
/// Header carrying the service key to mana-api (`MANA_AI_NEWS_SERVICE_KEY_HEADER`).
pub const NEWS_SERVICE_KEY_HEADER: &str = "X-Service-Key";
/// Header carrying the mission owner's id to mana-api (`MANA_AI_NEWS_USER_ID_HEADER`).
pub const NEWS_USER_ID_HEADER: &str = "X-User-Id";
/// A deep-research job older than this is abandoned (`MANA_AI_RESEARCH_MAX_AGE_MS`).
pub const RESEARCH_JOB_MAX_AGE: Duration = Duration::from_secs(2 * 3600);
/// Failed polls (or submits) in a row before a job is abandoned
/// (`MANA_AI_RESEARCH_MAX_POLL_FAILURES`).
pub const RESEARCH_MAX_POLL_FAILURES: u32 = 10;
/// Deadline of a news feed discovery call.
pub const RESEARCH_DISCOVER_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline of a news search call.
pub const RESEARCH_SEARCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of a deep-research submit.
pub const RESEARCH_SUBMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of a deep-research poll.
pub const RESEARCH_POLL_TIMEOUT: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_zone_name_and_value_agree() {
        assert_eq!(
            DEFAULT_TIMEZONE_NAME.parse::<chrono_tz::Tz>().ok(),
            Some(DEFAULT_TIMEZONE)
        );
    }
}
