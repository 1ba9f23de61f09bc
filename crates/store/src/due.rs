//! The runner's fair due listing and its deferrals (`mana_ai.mission_deferrals`).
//!
//! # Fair listing
//! [`Store::list_due_keys`] shares the per-pass limit across users: every user's due
//! missions are ranked oldest `nextRunAt` first (`row_number() OVER (PARTITION BY
//! user_id …)`), and the listing takes rank 1 of every user, then rank 2, … (oldest
//! first within a rank) up to the limit. One user's backlog therefore never pushes
//! another user's due mission out of a pass, unless more users than the limit have due
//! missions at once (then the oldest first ranks win and the rest come next pass). When
//! everything due fits the limit (the usual case), a cheap index-ordered listing finds it
//! and only the order is made fair; the window function runs only for a backlog.
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

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::row::from_row;
use crate::{DueKey, Store, StoreError};

/// Due missions without a deferral that still holds (see the module docs): a deferral
/// holds until `not_before` while the mission's snapshot version is the one it saw and,
/// when it looked up an agent, that agent's version too. `{select}` and `{tail}` make the
/// two listings below from one predicate.
macro_rules! due_sql {
    ($select:literal, $tail:literal) => {
        concat!(
            $select,
            " FROM mana_ai.mission_snapshots s
    WHERE s.state = 'active' AND NOT s.deleted AND s.next_run_at IS NOT NULL
      AND s.next_run_at <= $1
      AND NOT EXISTS (
          SELECT 1 FROM (
              SELECT d.user_id, d.mission_id, d.mission_version
                FROM mana_ai.mission_deferrals d
                LEFT JOIN mana_ai.agent_snapshots a
                  ON a.user_id = d.user_id AND a.agent_id = d.agent_id AND NOT a.deleted
               WHERE d.not_before > $1
                 AND (d.agent_id IS NULL OR d.agent_version IS NOT DISTINCT FROM a.updated_at)
          ) held
           WHERE held.user_id = s.user_id AND held.mission_id = s.mission_id
             AND (held.mission_version IS NULL OR held.mission_version = s.updated_at))",
            $tail
        )
    };
}

/// The cheap listing: the oldest due missions, at most `$2` (the runner asks for one more
/// than its limit: when they all fit, every due mission is in this pass and only their
/// order is made fair, in Rust). Served by the partial index `idx_mission_snapshots_due_at`.
const OLDEST_DUE_SQL: &str = due_sql!(
    "SELECT s.user_id, s.mission_id, s.next_run_at",
    " ORDER BY s.next_run_at, s.user_id, s.mission_id LIMIT $2"
);

/// The fair listing when more missions are due than fit: ranked per user oldest first
/// (`row_number() OVER (PARTITION BY user_id …)`), rank by rank, at most `$2`.
const FAIR_DUE_SQL: &str = due_sql!(
    "SELECT user_id, mission_id, next_run_at FROM (
   SELECT s.user_id, s.mission_id, s.next_run_at,
          row_number() OVER (PARTITION BY s.user_id ORDER BY s.next_run_at, s.mission_id) AS turn",
    ") due
 WHERE turn <= $2
 ORDER BY turn, next_run_at, user_id, mission_id
 LIMIT $2"
);

/// Records (or renews) a mission's deferral; the backoff doubles per deferral of the same
/// due run. Deferrals that ended a day ago are pruned on the way (other missions' only).
const DEFER_SQL: &str = "WITH pruned AS (
   DELETE FROM mana_ai.mission_deferrals
    WHERE not_before < $5::timestamptz - interval '1 day' AND NOT (user_id = $1 AND mission_id = $2)
 )
 INSERT INTO mana_ai.mission_deferrals AS d
     (user_id, mission_id, due_at, reason, attempts, not_before, mission_version,
      agent_id, agent_version, deferred_at)
 VALUES ($1, $2, $3, $4, 1, $5::timestamptz + make_interval(secs => least($7::float8, $6::float8)),
         $8, $9, $10, now())
 ON CONFLICT (user_id, mission_id) DO UPDATE SET
     attempts = CASE WHEN d.due_at = EXCLUDED.due_at THEN least(d.attempts, 1000) + 1 ELSE 1 END,
     not_before = $5::timestamptz + make_interval(secs => least($7::float8, $6::float8 * power(2::float8,
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

fn key_from_row(r: &tokio_postgres::Row) -> Result<DueKey, StoreError> {
    Ok(from_row!(
        r,
        DueKey {
            user_id,
            mission_id,
            next_run_at
        }
    ))
}

/// `keys` (oldest first) in the fair order: every user's oldest first, then every
/// user's second, …; within a rank oldest first (the order of [`FAIR_DUE_SQL`]).
fn round_robin(keys: Vec<DueKey>) -> Vec<DueKey> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut ranked: Vec<(usize, DueKey)> = keys
        .into_iter()
        .map(|k| {
            let turn = seen.entry(k.user_id.clone()).or_insert(0);
            *turn += 1;
            (*turn, k)
        })
        .collect();
    // Stable: within a rank, the oldest-first order of the listing stays.
    ranked.sort_by_key(|(turn, _)| *turn);
    ranked.into_iter().map(|(_, k)| k).collect()
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
    /// Keys of due missions, fair across users (see the module docs), at most `limit`:
    /// rank 1 of every user first (oldest first), then rank 2, …. When no more than
    /// `limit` missions are due, the cheap oldest-first listing finds them all and they
    /// are only put in that order; otherwise the window-function listing picks them.
    /// A read: retried after a lost connection ([`Store::retrying`]).
    pub async fn list_due_keys(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DueKey>, StoreError> {
        self.retrying("list due", crate::Idempotent::Yes, || {
            self.list_due_keys_once(now, limit)
        })
        .await
    }

    async fn list_due_keys_once(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DueKey>, StoreError> {
        let limit = limit.max(0);
        let c = self.client().await?;
        let stmt = c.prepare_cached(OLDEST_DUE_SQL).await?;
        let rows = c.query(&stmt, &[&now, &(limit + 1)]).await?;
        if rows.len() as i64 <= limit {
            let keys = rows.iter().map(key_from_row).collect::<Result<_, _>>()?;
            return Ok(round_robin(keys));
        }
        let stmt = c.prepare_cached(FAIR_DUE_SQL).await?;
        let rows = c.query(&stmt, &[&now, &limit]).await?;
        rows.iter().map(key_from_row).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str, mission: &str, minute: u32) -> DueKey {
        DueKey {
            user_id: user.into(),
            mission_id: mission.into(),
            next_run_at: DateTime::from_timestamp(i64::from(minute) * 60, 0).unwrap(),
        }
    }

    #[test]
    fn round_robin_takes_every_users_oldest_first() {
        let oldest_first = vec![
            key("a", "a1", 1),
            key("a", "a2", 2),
            key("a", "a3", 3),
            key("b", "b1", 4),
            key("c", "c1", 5),
            key("b", "b2", 6),
        ];
        let order: Vec<String> = round_robin(oldest_first)
            .into_iter()
            .map(|k| k.mission_id)
            .collect();
        assert_eq!(order, ["a1", "b1", "c1", "a2", "b2", "a3"]);
    }
}
