//! The runner: one tick pass = refresh snapshots → maintenance → list due missions → run
//! each due mission (concurrently, bounded) → report stats. Also the scheduler that runs
//! passes on an interval, never two at once, with a two-phase shutdown.
//!
//! Where things live (a reader finds a method from its type):
//! * [`Runner`] and the pass: `pass.rs`; [`Scheduler`]: `scheduler.rs`;
//! * a mission run as named stages (gate → claim → inputs → research → plan → write
//!   back → outcome): [`mission`], ending in a [`MissionOutcome`] (`outcome.rs`) or a
//!   [`RunError`] (`error.rs`);
//! * input resolution: `inputs/`; research: [`research`] (shallow, deep, http);
//! * housekeeping (research-job cleanup, token-usage pruning, audit retention):
//!   [`maintenance`];
//! * every log line and counter of an event together: `events.rs`; the metrics
//!   themselves: [`metrics`]; the token budget client: [`budget`];
//! * settings: [`RunnerConfig`] (`config.rs`) with its defaults in [`defaults`];
//! * test support (feature `testkit`): a scriptable fake LLM, a test clock, a runner
//!   builder: `testkit.rs`.
//!
//! Library crates never install signal handlers: the binary owns them and calls
//! [`Scheduler::shutdown`].

pub mod budget;
mod config;
pub mod defaults;
mod error;
mod events;
mod inputs;
pub mod maintenance;
pub mod metrics;
pub mod mission;
mod outcome;
mod pass;
pub mod research;
mod scheduler;
mod sync;
#[cfg(feature = "testkit")]
pub mod testkit;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use mana_ai_core::chat::LlmClient;
use mana_ai_store::Store;

pub use config::{DeferPolicy, RunnerConfig};
pub use error::RunError;
pub use metrics::Metrics;
pub use outcome::{AgentDecision, AgentSkip, MissionOutcome, SkipReason};
pub use pass::{RefreshReport, Runner, TickStats};
pub use scheduler::{LastPass, Scheduler, SchedulerStatus, STALE_AFTER_INTERVALS};

/// A source of "now" (injected so tests can pin time).
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// What a runner is built from.
pub struct RunnerDeps {
    pub store: Store,
    pub metrics: Metrics,
    pub llm: Arc<dyn LlmClient>,
    pub clock: Arc<dyn Clock>,
}
