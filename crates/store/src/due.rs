//! The runner's fair due listing and its deferrals (`mana_ai.mission_deferrals`).
//!
//! # Fair listing
//! [`Store::list_due_keys`] shares the per-pass limit across users: every user's due
//! missions are ranked oldest `nextRunAt` first (`row_number() OVER (PARTITION BY
//! user_id …)`), and the listing takes rank 1 of every user, then rank 2, … (oldest
//! first within a rank) up to the limit. One user's backlog therefore never pushes
//! another user's due mission out of a pass, unless more users than the limit have due
//! missions at once (then the oldest first ranks win and the rest come next pass).
//!
//! # Deferrals
//! A mission skipped at a gate (agent paused, archived or missing, budget used up, claim
//! busy or held elsewhere, deep research pending, run already done) or failing with a
//! store error is *deferred* ([`Store::defer_mission`]): not listed again before its
//! `not_before`. The backoff doubles with each deferral of the same due run (`base ·
//! 2^(n-1)`, at most `cap`; the caller names base and cap). A deferral remembers the
//! versions (`updated_at`) of the mission snapshot and of the agent it looked up; the
//! listing ignores it as soon as either changed, so a resumed agent or an edited mission
//! is listed again at the next pass.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::row::from_row;
use crate::{DueKey, Store, StoreError};

/// The fair due listing: due missions without a deferral that still holds, ranked per
/// user oldest first, rank by rank. Served by the partial index
/// `idx_mission_snapshots_due_at` (and the deferrals' primary key per due row).
const FAIR_DUE_SQL: &str = "SELECT user_id, mission_id, next_run_at FROM (
   SELECT s.user_id, s.mission_id, s.next_run_at,
          row_number() OVER (PARTITION BY s.user_id ORDER BY s.next_run_at, s.mission_id) AS turn
     FROM mana_ai.mission_snapshots s
    WHERE s.state = 'active' AND NOT s.deleted AND s.next_run_at IS NOT NULL
      AND s.next_run_at <= $1
      AND NOT EXISTS (
          SELECT 1 FROM mana_ai.mission_deferrals d
           WHERE d.user_id = s.user_id AND d.mission_id = s.mission_id
             AND d.not_before > $1
             AND (d.mission_version IS NULL
                  OR (d.mission_version = s.updated_at
                      AND (d.agent_id IS NULL
                           OR d.agent_version IS NOT DISTINCT FROM (
                               SELECT a.updated_at FROM mana_ai.agent_snapshots a
                                WHERE a.user_id = d.user_id AND a.agent_id = d.agent_id
                                  AND NOT a.deleted)))))
 ) due
 WHERE turn <= $2
 ORDER BY turn, next_run_at, user_id, mission_id
 LIMIT $2";

/// Records (or renews) a mission's deferral; the backoff doubles per deferral of the same
/// due run. Deferrals that ended a day ago are pruned on the way (other missions' only).
const DEFER_SQL: &str = "WITH pruned AS (
   DELETE FROM mana_ai.mission_deferrals
    WHERE not_before < $5 - interval '1 day' AND NOT (user_id = $1 AND mission_id = $2)
 )
 INSERT INTO mana_ai.mission_deferrals AS d
     (user_id, mission_id, due_at, reason, attempts, not_before, mission_version,
      agent_id, agent_version, deferred_at)
 VALUES ($1, $2, $3, $4, 1, $5 + make_interval(secs => least($7, $6)), $8, $9, $10, now())
 ON CONFLICT (user_id, mission_id) DO UPDATE SET
     attempts = CASE WHEN d.due_at = EXCLUDED.due_at THEN least(d.attempts, 1000) + 1 ELSE 1 END,
     not_before = $5 + make_interval(secs => least($7, $6 * power(2::float8,
         CASE WHEN d.due_at = EXCLUDED.due_at THEN least(d.attempts, 40) ELSE 0 END))),
     due_at = EXCLUDED.due_at, reason = EXCLUDED.reason,
     mission_version = EXCLUDED.mission_version, agent_id = EXCLUDED.agent_id,
     agent_version = EXCLUDED.agent_version, deferred_at = now()
 RETURNING attempts, not_before";

/// What the run saw when it was deferred: a change of either lifts the deferral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenVersions {
    /// The mission snapshot's `updated_at` ([`crate::DueMission::version`]).
    pub mission: DateTime<Utc>,
    /// The agent looked up, and its snapshot's `updated_at` (`None`: it did not exist).
    /// `None` for a run that looked up no agent (the default agent).
    pub agent: Option<(String, Option<DateTime<Utc>>)>,
}

/// One deferral of a due run.
#[derive(Debug, Clone)]
pub struct Deferral<'a> {
    pub user_id: &'a str,
    pub mission_id: &'a str,
    /// The due run that was skipped.
    pub due_at: DateTime<Utc>,
    /// Why (a bounded label, e.g. `skipped-paused`, `error`).
    pub reason: &'a str,
    /// The runner's clock: the backoff counts from here.
    pub now: DateTime<Utc>,
    /// First backoff; doubled per deferral of the same due run.
    pub base: Duration,
    /// Longest backoff.
    pub cap: Duration,
    /// `None`: the deferral holds whatever changes (the mission could not be loaded).
    pub seen: Option<SeenVersions>,
}

/// A recorded deferral: how many in a row for this due run, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferred {
    pub attempts: i32,
    pub not_before: DateTime<Utc>,
}

impl Store {
    /// Keys of due missions, fair across users (see the module docs), at most `limit`.
    pub async fn list_due_keys(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DueKey>, StoreError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(FAIR_DUE_SQL).await?;
        let rows = c.query(&stmt, &[&now, &limit.max(0)]).await?;
        rows.iter()
            .map(|r| {
                Ok(from_row!(
                    r,
                    DueKey {
                        user_id,
                        mission_id,
                        next_run_at
                    }
                ))
            })
            .collect()
    }

    /// Defers a due run (see the module docs); answers the recorded deferral.
    pub async fn defer_mission(&self, d: &Deferral<'_>) -> Result<Deferred, StoreError> {
        if d.user_id.is_empty() {
            return Err(StoreError::Refused("defer: empty user id"));
        }
        let (mission_version, agent_id, agent_version) = match &d.seen {
            None => (None, None, None),
            Some(seen) => match &seen.agent {
                None => (Some(seen.mission), None, None),
                Some((id, version)) => (Some(seen.mission), Some(id.as_str()), *version),
            },
        };
        let base = d.base.as_secs_f64();
        let cap = d.cap.as_secs_f64();
        let c = self.client().await?;
        let stmt = c.prepare_cached(DEFER_SQL).await?;
        let row = c
            .query_one(
                &stmt,
                &[
                    &d.user_id,
                    &d.mission_id,
                    &d.due_at,
                    &d.reason,
                    &d.now,
                    &base,
                    &cap,
                    &mission_version,
                    &agent_id,
                    &agent_version,
                ],
            )
            .await?;
        Ok(from_row!(
            &row,
            Deferred {
                attempts,
                not_before
            }
        ))
    }
}
