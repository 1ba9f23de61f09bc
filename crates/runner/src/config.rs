//! The runner's settings ([`RunnerConfig`]), validated by the binary's configuration;
//! every default comes from [`crate::defaults`].

use std::sync::Arc;
use std::time::Duration;

use crate::defaults;
use crate::research::{ResearchTimeouts, ServiceKey};

/// Runner settings (validated by the binary's config).
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub due_limit: i64,
    pub refresh_batch_rows: i32,
    pub max_concurrent_plans: usize,
    /// Wall-time limit of one run from before its claim: inputs, research and planning.
    pub mission_deadline: Duration,
    /// A claim's lease is `mission_deadline + claim_grace` (see [`defaults::CLAIM_GRACE`]).
    pub claim_grace: Duration,
    /// Most linked inputs one run resolves ([`defaults::MAX_INPUTS`]).
    pub max_inputs: usize,
    /// Backoff of deferred due runs ([`DeferPolicy`]).
    pub defer: DeferPolicy,
    pub refresh_safety_margin: Duration,
    /// Identifies this process in mission claims.
    pub runner_id: String,
    pub llm_model: String,
    /// Model of the compaction call (`MANA_AI_COMPACT_MODEL`).
    pub compact_model: String,
    /// Language of runs whose mission text is undecidable (`MANA_AI_DEFAULT_LANGUAGE`).
    pub default_language: mana_ai_core::lang::Lang,
    pub policy_mode: mana_ai_core::plan::PolicyMode,
    /// `max_tokens` of every LLM call; also what each call reserves for its completion.
    pub max_completion_tokens: u32,
    /// Injection policy of runs whose prompt carries untrusted content (research
    /// results); the stricter of it and `policy_mode` applies to such runs.
    pub untrusted_policy_mode: mana_ai_core::plan::PolicyMode,
    /// Model context window for compaction; 0 disables compaction.
    pub context_window_tokens: u64,
    pub default_timezone: chrono_tz::Tz,
    pub json_plan_fallback: bool,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Limits of missions without an agent (the default agent "Mana").
    pub default_agent_max_concurrent: u32,
    pub default_agent_tokens_per_day: Option<u64>,
    /// The service's RSA private key for unwrapping mission key grants
    /// (`MANA_AI_PRIVATE_KEY_PEM`); `None` disables encrypted inputs (grants are skipped
    /// with reason `not-configured`). Its `Debug` output is redacted.
    pub grant_key: Option<Arc<mana_ai_core::crypto::GrantPrivateKey>>,
    /// Base URL of mana-api for shallow news research (`MANA_API_URL`); `None`: off.
    pub news_api_url: Option<String>,
    /// Base URL of mana-research (`MANA_RESEARCH_URL`); `None`: no deep research at
    /// all (not even polling of existing jobs).
    pub research_url: Option<String>,
    /// Submit new deep-research jobs (`MANA_AI_DEEP_RESEARCH_ENABLED`).
    pub deep_research_enabled: bool,
    /// `MANA_SERVICE_KEY`, sent to mana-api and mana-research.
    pub service_key: ServiceKey,
    /// Words that trigger shallow research (word-start, case-insensitive); empty: off.
    pub shallow_research_triggers: Vec<String>,
    /// Phrases that trigger deep research (whole words, case-insensitive).
    pub deep_research_triggers: Vec<String>,
    /// Header carrying the service key to mana-api; `None`: not sent.
    pub news_service_key_header: Option<String>,
    /// Header carrying the mission owner's id to mana-api; `None`: not sent.
    pub news_user_id_header: Option<String>,
    /// A deep-research job older than this is abandoned (shallow fallback).
    pub research_job_max_age: Duration,
    /// A job whose polls (or submits) fail this many times in a row is abandoned.
    pub research_max_poll_failures: u32,
    pub research_timeouts: ResearchTimeouts,
    /// Most iterations a write-back keeps (`MANA_AI_ITERATION_HISTORY`; see
    /// [`mana_ai_core::iterations`]).
    pub iteration_history: usize,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            due_limit: defaults::DUE_LIMIT,
            refresh_batch_rows: defaults::REFRESH_BATCH_ROWS,
            max_concurrent_plans: defaults::MAX_CONCURRENT_PLANS,
            mission_deadline: defaults::MISSION_DEADLINE,
            claim_grace: defaults::CLAIM_GRACE,
            max_inputs: defaults::MAX_INPUTS,
            defer: DeferPolicy::default(),
            refresh_safety_margin: defaults::REFRESH_SAFETY_MARGIN,
            runner_id: format!("runner-{}", uuid::Uuid::new_v4()),
            llm_model: defaults::LLM_MODEL.into(),
            compact_model: defaults::COMPACT_MODEL.into(),
            default_language: defaults::DEFAULT_LANGUAGE,
            policy_mode: defaults::POLICY_MODE,
            max_completion_tokens: defaults::MAX_COMPLETION_TOKENS,
            untrusted_policy_mode: defaults::UNTRUSTED_POLICY_MODE,
            context_window_tokens: defaults::CONTEXT_WINDOW_TOKENS,
            default_timezone: defaults::DEFAULT_TIMEZONE,
            json_plan_fallback: defaults::JSON_PLAN_FALLBACK,
            retry_base: defaults::RETRY_BASE,
            retry_cap: defaults::RETRY_CAP,
            default_agent_max_concurrent: defaults::DEFAULT_AGENT_MAX_CONCURRENT,
            default_agent_tokens_per_day: Some(defaults::DEFAULT_AGENT_TOKENS_PER_DAY),
            grant_key: None,
            news_api_url: None,
            research_url: None,
            deep_research_enabled: defaults::DEEP_RESEARCH_ENABLED,
            service_key: ServiceKey::default(),
            shallow_research_triggers: words(defaults::SHALLOW_RESEARCH_TRIGGERS),
            deep_research_triggers: words(defaults::DEEP_RESEARCH_TRIGGERS),
            news_service_key_header: Some(defaults::NEWS_SERVICE_KEY_HEADER.into()),
            news_user_id_header: Some(defaults::NEWS_USER_ID_HEADER.into()),
            research_job_max_age: defaults::RESEARCH_JOB_MAX_AGE,
            research_max_poll_failures: defaults::RESEARCH_MAX_POLL_FAILURES,
            research_timeouts: ResearchTimeouts::default(),
            iteration_history: defaults::ITERATION_HISTORY,
        }
    }
}

impl RunnerConfig {
    /// How long a claim (and a token reservation) outlives the mission deadline.
    pub(crate) fn claim_lease(&self) -> Duration {
        self.mission_deadline + self.claim_grace
    }
}

/// How long a skipped or failing due run waits before it is listed again: `base`,
/// doubled per deferral of the same due run, at most the cap of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeferPolicy {
    pub base: Duration,
    /// Waits that end by themselves (slot busy, held elsewhere, research pending).
    pub wait_cap: Duration,
    /// Gates that wait for a change (agent state, budget, already done).
    pub gate_cap: Duration,
    /// Repeated store errors.
    pub error_cap: Duration,
}

impl Default for DeferPolicy {
    fn default() -> Self {
        Self {
            base: defaults::DEFER_BASE,
            wait_cap: defaults::DEFER_WAIT_CAP,
            gate_cap: defaults::DEFER_GATE_CAP,
            error_cap: defaults::DEFER_ERROR_CAP,
        }
    }
}

impl DeferPolicy {
    /// No deferral at all (every skipped run is listed again next pass).
    pub fn off() -> Self {
        Self {
            base: Duration::ZERO,
            wait_cap: Duration::ZERO,
            gate_cap: Duration::ZERO,
            error_cap: Duration::ZERO,
        }
    }
}

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}
