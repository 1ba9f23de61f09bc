//! Reads of the projected snapshots (`mana_ai.mission_snapshots`,
//! `mana_ai.agent_snapshots`; the refresh writes them): the due listing and the loading of
//! a due mission for the runner, and one user's missions and agents for the ops views.
//! Snapshot tables hold no RLS of their own; callers scope by user explicitly.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::row::from_row;
use crate::{Store, StoreError};

/// A mission that is due: active, not deleted, `nextRunAt` at or before `now`.
#[derive(Debug, Clone, PartialEq)]
pub struct DueMission {
    pub user_id: String,
    pub mission_id: String,
    pub record: Value,
    pub next_run_at: DateTime<Utc>,
    /// The snapshot's `updated_at` when it was loaded (the version a deferral remembers).
    pub version: DateTime<Utc>,
}

/// The key of a due run: which mission, and the due time it serves. Listing keys only
/// (not records) keeps the due listing cheap at scale; the record is loaded when the
/// mission is about to run ([`Store::load_due_mission`]). The runner's listing is
/// [`Store::list_due_keys`] (fair across users, in `due.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueKey {
    pub user_id: String,
    pub mission_id: String,
    pub next_run_at: DateTime<Utc>,
}

/// One stored mission snapshot (ops view).
#[derive(Debug, Clone, PartialEq)]
pub struct MissionSnapshot {
    pub user_id: String,
    pub mission_id: String,
    pub record: Value,
    pub deleted: bool,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_applied_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One stored agent snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSnapshot {
    pub user_id: String,
    pub agent_id: String,
    pub record: Value,
    /// The snapshot's `updated_at` (the version a deferral remembers).
    pub updated_at: DateTime<Utc>,
}

/// The due-missions query with the given columns: active, not deleted, `nextRunAt` at or
/// before `$1` (instants), oldest first, at most `$2` rows; served by the partial index
/// `idx_mission_snapshots_due_at`. One predicate for every due listing.
macro_rules! due_query {
    ($columns:literal) => {
        concat!(
            "SELECT ",
            $columns,
            " FROM mana_ai.mission_snapshots
              WHERE state = 'active' AND NOT deleted AND next_run_at IS NOT NULL
                AND next_run_at <= $1
              ORDER BY next_run_at, user_id, mission_id
              LIMIT $2"
        )
    };
}

impl Store {
    /// Due missions, oldest `nextRunAt` first, compared as instants, at most `limit`.
    /// Served by the partial index `idx_mission_snapshots_due_at`. A plain global listing
    /// (ops, tests and benches); the runner lists with the fair [`Store::list_due_keys`].
    pub async fn list_due_missions(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DueMission>, StoreError> {
        let sql = due_query!("user_id, mission_id, record, next_run_at, updated_at");
        self.list_due(sql, now, limit, |r| {
            Ok(from_row!(
                r,
                DueMission {
                    user_id,
                    mission_id,
                    record,
                    next_run_at,
                    version
                }
            ))
        })
        .await
    }

    /// Runs a [`due_query!`] and decodes its rows.
    async fn list_due<T>(
        &self,
        sql: &str,
        now: DateTime<Utc>,
        limit: i64,
        decode: impl Fn(&tokio_postgres::Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = self
            .retrying("list due", crate::Idempotent::Yes, || async move {
                let c = self.client().await?;
                Ok(c.query(sql, &[&now, &limit.max(0)]).await?)
            })
            .await?;
        rows.iter().map(decode).collect()
    }

    /// Loads a due mission's record, if it is still due at the same time (it may have
    /// been paused, deleted or rescheduled since it was listed).
    pub async fn load_due_mission(&self, key: &DueKey) -> Result<Option<DueMission>, StoreError> {
        let row = self
            .retrying("load due mission", crate::Idempotent::Yes, || async move {
                let c = self.client().await?;
                let stmt = c.prepare_cached(LOAD_DUE_SQL).await?;
                Ok(
                    c.query_opt(&stmt, &[&key.user_id, &key.mission_id, &key.next_run_at])
                        .await?,
                )
            })
            .await?;
        row.map(|r| {
            Ok(DueMission {
                user_id: key.user_id.clone(),
                mission_id: key.mission_id.clone(),
                record: r.try_get(0)?,
                next_run_at: key.next_run_at,
                version: r.try_get(1)?,
            })
        })
        .transpose()
    }

    /// All mission snapshots of one user (deleted ones included, flagged).
    pub async fn user_missions(&self, user_id: &str) -> Result<Vec<MissionSnapshot>, StoreError> {
        refuse_empty(user_id)?;
        let rows = self
            .client()
            .await?
            .query(USER_MISSIONS_SQL, &[&user_id])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(from_row!(
                    r,
                    MissionSnapshot {
                        user_id,
                        mission_id,
                        record,
                        deleted,
                        next_run_at,
                        last_applied_at,
                        updated_at,
                    }
                ))
            })
            .collect()
    }

    /// Live (not deleted) agents of one user, including paused and archived ones.
    pub async fn user_agents(&self, user_id: &str) -> Result<Vec<AgentSnapshot>, StoreError> {
        refuse_empty(user_id)?;
        let rows = self
            .client()
            .await?
            .query(USER_AGENTS_SQL, &[&user_id])
            .await?;
        rows.iter().map(agent_from_row).collect()
    }

    /// One live agent, if it exists and is not deleted.
    pub async fn agent(
        &self,
        user_id: &str,
        agent_id: &str,
    ) -> Result<Option<AgentSnapshot>, StoreError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(AGENT_SQL).await?;
        let row = c.query_opt(&stmt, &[&user_id, &agent_id]).await?;
        row.as_ref().map(agent_from_row).transpose()
    }
}

/// `mana_ai.load_due_mission` (`schema/0009`: a generic plan instead of one per call).
const LOAD_DUE_SQL: &str = "SELECT record, updated_at FROM mana_ai.load_due_mission($1, $2, $3)";

const USER_MISSIONS_SQL: &str =
    "SELECT user_id, mission_id, record, deleted, next_run_at, last_applied_at, updated_at
   FROM mana_ai.mission_snapshots WHERE user_id = $1 ORDER BY mission_id";

const USER_AGENTS_SQL: &str =
    "SELECT user_id, agent_id, record, updated_at FROM mana_ai.agent_snapshots
  WHERE user_id = $1 AND NOT deleted ORDER BY agent_id";

const AGENT_SQL: &str = "SELECT user_id, agent_id, record, updated_at FROM mana_ai.agent_snapshots
  WHERE user_id = $1 AND agent_id = $2 AND NOT deleted";

pub(crate) fn agent_from_row(r: &tokio_postgres::Row) -> Result<AgentSnapshot, StoreError> {
    Ok(from_row!(
        r,
        AgentSnapshot {
            user_id,
            agent_id,
            record,
            updated_at
        }
    ))
}

fn refuse_empty(user_id: &str) -> Result<(), StoreError> {
    if user_id.is_empty() {
        return Err(StoreError::Refused("empty user id"));
    }
    Ok(())
}
