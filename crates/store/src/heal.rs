//! The self-healing schedule: a mission whose served run is done in
//! `mana_ai.mission_runs` but whose `nextRunAt` a device re-stamped to that served time
//! (clock skew, an offline device replaying an old value) would answer `done` on every
//! claim and never run again. [`Store::heal_schedule`] writes the next run the runner
//! derived from the cadence, once: in one `withUser` transaction it locks the finished
//! run, checks that the refresh has folded the run's own write-back (the refresh cursor
//! is past the run's `finished_at`, so a snapshot that merely lags is never "healed"),
//! that the mission is still due at that time, and that this re-stamp was not healed yet
//! (`healed_at` older than the snapshot's last change); then it inserts the `nextRunAt`
//! row and records `healed_at`. A second runner, or a later pass before the
//! refresh caught up, finds it healed and writes nothing; a device that re-stamps again
//! later is healed again.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::refresh::CURSOR_STREAM;
use crate::{Store, StoreError};

/// The finished run, locked, with what the snapshot says now.
const LOCK_SQL: &str = "SELECT r.healed_at, s.updated_at, s.next_run_at,
        coalesce((SELECT c.position > r.finished_at FROM mana_ai.refresh_cursor c
                   WHERE c.stream = $4), false)
   FROM mana_ai.mission_runs r
   LEFT JOIN mana_ai.mission_snapshots s
     ON s.user_id = r.user_id AND s.mission_id = r.mission_id
  WHERE r.user_id = $1 AND r.mission_id = $2 AND r.due_at = $3 AND r.status <> 'running'
    FOR UPDATE OF r";

const INSERT_SQL: &str = "INSERT INTO sync_changes
     (app_id, table_name, record_id, user_id, op, data, field_meta, client_id,
      schema_version, actor, origin)
 VALUES ('ai', 'aiMissions', $1, $2, 'update', $3, $4, $5, 1, $6, 'agent')";

const MARK_SQL: &str = "UPDATE mana_ai.mission_runs SET healed_at = now()
  WHERE user_id = $1 AND mission_id = $2 AND due_at = $3";

const CLIENT_ID: &str = "mana-ai-runner";

/// One schedule repair: the row to write for a finished due run.
#[derive(Debug, Clone)]
pub struct ScheduleHeal<'a> {
    pub user_id: &'a str,
    pub mission_id: &'a str,
    /// The served due time the mission is stuck at.
    pub due_at: DateTime<Utc>,
    /// `sync_changes.data`: `{"nextRunAt": ...}`.
    pub data: &'a Value,
    /// `sync_changes.field_meta`: the stamp of `nextRunAt`.
    pub field_meta: &'a Value,
    pub actor: &'a Value,
}

/// Outcome of [`Store::heal_schedule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heal {
    /// The next run was written.
    Written,
    /// This re-stamp was healed already (by this or another runner).
    AlreadyHealed,
    /// Nothing to heal: the run is not finished, the refresh has not folded its
    /// write-back yet, or the mission moved on.
    NotStuck,
}

impl Store {
    /// Writes the next run of a mission stuck at a finished due run, at most once per
    /// re-stamp (see the module docs).
    pub async fn heal_schedule(&self, h: &ScheduleHeal<'_>) -> Result<Heal, StoreError> {
        let tx = self.begin_user(h.user_id).await?;
        let c = tx.client();
        let row = c
            .query_opt(
                LOCK_SQL,
                &[&h.user_id, &h.mission_id, &h.due_at, &CURSOR_STREAM],
            )
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(Heal::NotStuck);
        };
        let healed_at: Option<DateTime<Utc>> = row.try_get(0)?;
        let updated_at: Option<DateTime<Utc>> = row.try_get(1)?;
        let next_run_at: Option<DateTime<Utc>> = row.try_get(2)?;
        let folded: bool = row.try_get(3)?;
        if !folded || next_run_at != Some(h.due_at) {
            tx.rollback().await?;
            return Ok(Heal::NotStuck);
        }
        if let (Some(healed), Some(updated)) = (healed_at, updated_at) {
            if healed >= updated {
                tx.rollback().await?;
                return Ok(Heal::AlreadyHealed);
            }
        }
        c.execute(
            INSERT_SQL,
            &[
                &h.mission_id,
                &h.user_id,
                h.data,
                h.field_meta,
                &CLIENT_ID,
                h.actor,
            ],
        )
        .await?;
        c.execute(MARK_SQL, &[&h.user_id, &h.mission_id, &h.due_at])
            .await?;
        tx.commit().await?;
        Ok(Heal::Written)
    }
}
