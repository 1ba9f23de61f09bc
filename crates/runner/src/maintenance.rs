//! Housekeeping that is not a mission run: research-job cleanup and token-usage pruning
//! (once per pass, before the due missions are listed) and decrypt-audit retention (once a
//! day, in its own task). Failures are logged and never stop a pass.

use std::time::Duration;

use mana_ai_store::Store;

use crate::events::{self, Emit, MaintenanceStep};
use crate::Metrics;

/// How often the decrypt-audit retention runs.
pub const AUDIT_RETENTION_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// The maintenance jobs of one runner.
#[derive(Clone)]
pub struct Maintenance {
    store: Store,
    metrics: Metrics,
}

impl Maintenance {
    pub fn new(store: Store, metrics: Metrics) -> Self {
        Self { store, metrics }
    }

    /// What a pass does before listing due missions: research-job cleanup, then token
    /// budget pruning.
    pub async fn before_pass(&self) {
        self.cleanup_research_jobs().await;
        self.prune_token_usage().await;
    }

    /// Drops research jobs of missions that are deleted, paused, archived or gone.
    /// Unfinished ones count as abandoned.
    pub async fn cleanup_research_jobs(&self) {
        match self.store.cleanup_research_jobs().await {
            Ok(removed) => {
                for r in removed.iter().filter(|r| !r.state.is_terminal()) {
                    events::InactiveResearchJobAbandoned {
                        provider: &r.provider_id,
                    }
                    .emit(&self.metrics);
                }
            }
            Err(e) => events::MaintenanceFailed {
                what: MaintenanceStep::ResearchJobCleanup,
                error: &e,
            }
            .emit(&self.metrics),
        }
    }

    /// Token budget housekeeping: usage older than 48 h, expired reservations.
    pub async fn prune_token_usage(&self) {
        if let Err(e) = self.store.prune_token_budget().await {
            events::MaintenanceFailed {
                what: MaintenanceStep::TokenBudgetPruning,
                error: &e,
            }
            .emit(&self.metrics);
        }
    }

    /// Deletes decrypt-audit rows older than the retention the migration role set
    /// (inside `mana_ai.prune_decrypt_audit()`, owned by the migration role).
    pub async fn apply_audit_retention(&self) {
        match self.store.prune_decrypt_audit().await {
            Ok(n) => tracing::info!(deleted = n, "decrypt audit retention applied"),
            Err(e) => events::MaintenanceFailed {
                what: MaintenanceStep::AuditRetention,
                error: &e,
            }
            .emit(&self.metrics),
        }
    }

    /// Applies the audit retention once a day (first run right away) until aborted.
    pub fn spawn_audit_retention(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(AUDIT_RETENTION_INTERVAL);
            loop {
                every.tick().await;
                self.apply_audit_retention().await;
            }
        })
    }
}
