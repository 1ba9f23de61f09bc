//! The one way tests build a [`Runner`]: a store (usually a test database's service
//! role), fresh metrics, an LLM (by default a [`FakeLlm`] that answers "ok"), a clock
//! (by default the wall clock) and config overrides over [`test_config`].

use std::sync::Arc;
use std::time::Duration;

use mana_ai_core::chat::LlmClient;
use mana_ai_store::testkit::TestDb;
use mana_ai_store::Store;

use super::llm::{FakeLlm, Reply};
use crate::{Clock, Metrics, Runner, RunnerConfig, RunnerDeps, SystemClock};

/// The runner settings tests start from: the defaults, with no refresh safety margin
/// (rows pushed just before a pass are folded in by that pass) and deferral off (a test's
/// passes at one pinned time each see every due run; tests of deferral turn it on with
/// `c.defer = DeferPolicy::default()`).
pub fn test_config() -> RunnerConfig {
    RunnerConfig {
        refresh_safety_margin: Duration::ZERO,
        defer: crate::DeferPolicy::off(),
        ..RunnerConfig::default()
    }
}

/// Builds a [`Runner`] for a test.
pub struct RunnerBuilder {
    store: Store,
    metrics: Metrics,
    llm: Arc<dyn LlmClient>,
    clock: Arc<dyn Clock>,
    cfg: RunnerConfig,
}

impl RunnerBuilder {
    /// A runner on `db` as the least-privilege service role.
    pub fn new(db: &TestDb) -> Self {
        Self::on_store(db.service_store())
    }

    /// A runner on any store.
    pub fn on_store(store: Store) -> Self {
        Self {
            store,
            metrics: Metrics::new(),
            llm: FakeLlm::replying(Reply::text("ok")),
            clock: Arc::new(SystemClock),
            cfg: test_config(),
        }
    }

    /// The LLM client (e.g. a `FakeLlm`, or an HTTP client against a fake server).
    pub fn llm(mut self, llm: Arc<dyn LlmClient>) -> Self {
        self.llm = llm;
        self
    }

    /// The clock (e.g. a `TestClock`).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The metrics registry (fresh by default).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Changes the config (applied over [`test_config`] and earlier changes).
    pub fn config(mut self, change: impl FnOnce(&mut RunnerConfig)) -> Self {
        change(&mut self.cfg);
        self
    }

    pub fn build(self) -> Runner {
        Runner::new(
            RunnerDeps {
                store: self.store,
                metrics: self.metrics,
                llm: self.llm,
                clock: self.clock,
            },
            self.cfg,
        )
    }

    /// Builds the runner behind an `Arc` (for concurrent ticks).
    pub fn build_arc(self) -> Arc<Runner> {
        Arc::new(self.build())
    }
}
