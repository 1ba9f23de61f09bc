//! What `/health` answers from: the scheduler's [`SchedulerStatus`] and a background
//! database probe ([`DbProbe`]). A request reads both from memory and never takes a
//! database connection, so a flood of `/health` requests stays cheap and cannot starve
//! the passes.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mana_ai_runner::SchedulerStatus;
use mana_ai_store::probe::ProbeConnection;
use serde_json::{json, Value};
use tokio::sync::watch;

/// How often the background probe checks the database.
pub const PROBE_PERIOD: Duration = Duration::from_secs(5);

/// How long one probe (connect included) may take before the database counts as
/// unreachable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One probe result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbCheck {
    pub ok: bool,
    pub at: DateTime<Utc>,
}

/// The background database probe: one task with its own connection, checking every
/// [`PROBE_PERIOD`]. Dropping it stops the task.
pub struct DbProbe {
    latest: watch::Receiver<Option<DbCheck>>,
    task: tokio::task::JoinHandle<()>,
}

impl DbProbe {
    /// Starts probing the database at `url` (needs a tokio runtime).
    pub fn spawn(url: String) -> Self {
        let (tx, latest) = watch::channel(None);
        let task = tokio::spawn(async move {
            let mut probe = ProbeConnection::new(url, PROBE_TIMEOUT);
            loop {
                let ok = probe.check().await;
                if tx.send(Some(DbCheck { ok, at: Utc::now() })).is_err() {
                    return;
                }
                tokio::time::sleep(PROBE_PERIOD).await;
            }
        });
        Self { latest, task }
    }

    /// The latest result; right after start, waits (at most [`PROBE_TIMEOUT`] and a
    /// little) for the first one.
    pub async fn latest(&self) -> Option<DbCheck> {
        if let Some(check) = *self.latest.borrow() {
            return Some(check);
        }
        let mut rx = self.latest.clone();
        let first = rx.wait_for(Option::is_some);
        let waited = PROBE_TIMEOUT + Duration::from_millis(500);
        let first = match tokio::time::timeout(waited, first).await {
            Ok(Ok(check)) => *check,
            _ => None,
        };
        first
    }
}

impl Drop for DbProbe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The state `/health` answers from.
pub struct Health {
    pub tick_enabled: bool,
    pub scheduler: Arc<SchedulerStatus>,
    pub db: DbProbe,
}

impl Health {
    /// The `/health` body and whether it is healthy (200) or not (503). The original's
    /// fields come first (`ok`, `service`, `version`, `tick.enabled`, `tick.running`);
    /// everything else is added.
    pub async fn report(&self, version: &str, pass_in_flight: bool) -> (bool, Value) {
        let now = Utc::now();
        let db = self.db.latest().await;
        let db_ok = db.is_some_and(|c| c.ok);
        let stale = self.tick_enabled && self.scheduler.is_stale(now);
        let last = self.scheduler.last_pass().map(|p| {
            json!({
                "finishedAt": mana_ai_core::iso::to_iso_ms(p.finished_at),
                "durationMs": u64::try_from(p.duration.as_millis()).unwrap_or(u64::MAX),
                "ok": p.ok,
                "errors": p.errors,
            })
        });
        let ok = db_ok && !stale;
        let body = json!({
            "ok": ok,
            "service": "mana-ai",
            "version": version,
            "tick": {
                "enabled": self.tick_enabled,
                "running": self.scheduler.running(),
                "passInFlight": pass_in_flight,
                "intervalMs": u64::try_from(self.scheduler.interval().as_millis()).unwrap_or(u64::MAX),
                "lastPass": last,
                "stale": stale,
            },
            "database": match db {
                Some(DbCheck { ok: true, .. }) => "ok",
                Some(_) => "unreachable",
                None => "unknown",
            },
            "databaseCheckedAt": db.map(|c| mana_ai_core::iso::to_iso_ms(c.at)),
        });
        (ok, body)
    }
}
