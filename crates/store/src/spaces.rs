//! Shared spaces: one snapshot per `(space_id, record_id)`.
//!
//! The per-user refresh ([`crate::refresh`]) projects rows per `(user_id, record_id)`, but
//! a space record's rows come from every member who edited it (a row's `user_id` is its
//! pusher). After each refresh, the *space step* ([`Store::fold_spaces`]) walks the space
//! rows the refresh has folded since its own cursor (stream `ai-spaces`, never ahead of
//! the refresh's cursor): for each changed `(space, table, record)` it reads the record's
//! whole space history as a member who pushed a row of it (`mana_ai.read_space_record`,
//! RLS with `app.current_user_space_ids` set to that space), merges it with the core LWW
//! merge (together with the owner's current snapshot), and writes ONE snapshot under the
//! record's *owner* — the member whose row created it (the oldest `insert`; else the oldest
//! row), kept once chosen — with `space_id` set. The other members' partial copies are
//! marked deleted (the merge keeps deletions final, so the per-user refresh never revives
//! them). Personal records (no `space_id`) are untouched.
//!
//! Space missions are written back by [`Store::write_back_in_space`] as the owner with
//! `space_id` stamped; a space mission's agent is found by [`Store::space_agent`] in the
//! same space, whoever pushed it.

use chrono::{DateTime, Utc};
use mana_ai_core::lww::{ChangeRow, Op, RecordState};
use mana_ai_core::records::MissionIndex;
use serde_json::Value;

use crate::snapshots::AgentSnapshot;
use crate::{locks, Store, StoreError};

/// Rows read per space record (newest first); older rows beyond it are not merged.
pub const SPACE_RECORD_ROW_LIMIT: i32 = 5_000;

const CURSOR_STREAM: &str = "ai-spaces";
const MAIN_STREAM: &str = "ai";

/// What one space step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpaceStats {
    /// Space records merged and written.
    pub records: usize,
    /// Other members' partial copies marked deleted.
    pub copies_retired: usize,
}

const LOCK_SQL: &str = "SELECT pg_try_advisory_lock($1)";
const UNLOCK_SQL: &str = "SELECT pg_advisory_unlock($1)";
const CURSORS_SQL: &str = "SELECT
    (SELECT position FROM mana_ai.refresh_cursor WHERE stream = $1),
    (SELECT position FROM mana_ai.refresh_cursor WHERE stream = $2)";
const CHANGED_SQL: &str = "SELECT space_id, table_name, record_id, member
   FROM mana_ai.changed_space_records($1, $2) ORDER BY 1, 2, 3";
const READ_SQL: &str = "SELECT user_id, op, data, field_meta, created_at
   FROM mana_ai.read_space_record($1, $2, $3, $4, $5, $6)";
const OWNER_MISSION_SQL: &str = "SELECT user_id, record, deleted FROM mana_ai.mission_snapshots
  WHERE space_id = $1 AND mission_id = $2 ORDER BY deleted, user_id LIMIT 1";
const OWNER_AGENT_SQL: &str = "SELECT user_id, record, deleted FROM mana_ai.agent_snapshots
  WHERE space_id = $1 AND agent_id = $2 ORDER BY deleted, user_id LIMIT 1";
const PERSONAL_MISSION_SQL: &str = "SELECT record, deleted FROM mana_ai.mission_snapshots
  WHERE user_id = $1 AND mission_id = $2";
const PERSONAL_AGENT_SQL: &str = "SELECT record, deleted FROM mana_ai.agent_snapshots
  WHERE user_id = $1 AND agent_id = $2";
const WRITE_MISSION_SQL: &str = "INSERT INTO mana_ai.mission_snapshots
    (user_id, mission_id, record, last_applied_at, updated_at, deleted, state, next_run_at,
     agent_id, space_id)
  VALUES ($1, $2, $3, $4, now(), $5, $6, $7, $8, $9)
  ON CONFLICT (user_id, mission_id) DO UPDATE SET
    record = EXCLUDED.record, updated_at = now(), deleted = EXCLUDED.deleted,
    state = EXCLUDED.state, next_run_at = EXCLUDED.next_run_at,
    agent_id = EXCLUDED.agent_id, space_id = EXCLUDED.space_id,
    last_applied_at = GREATEST(mana_ai.mission_snapshots.last_applied_at, EXCLUDED.last_applied_at)";
const WRITE_AGENT_SQL: &str = "INSERT INTO mana_ai.agent_snapshots
    (user_id, agent_id, record, last_applied_at, updated_at, deleted, space_id)
  VALUES ($1, $2, $3, $4, now(), $5, $6)
  ON CONFLICT (user_id, agent_id) DO UPDATE SET
    record = EXCLUDED.record, updated_at = now(), deleted = EXCLUDED.deleted,
    space_id = EXCLUDED.space_id,
    last_applied_at = GREATEST(mana_ai.agent_snapshots.last_applied_at, EXCLUDED.last_applied_at)";
const RETIRE_MISSIONS_SQL: &str = "UPDATE mana_ai.mission_snapshots
    SET deleted = true, state = NULL, next_run_at = NULL, updated_at = now()
  WHERE mission_id = $1 AND user_id = ANY($2) AND user_id <> $3 AND NOT deleted";
const RETIRE_AGENTS_SQL: &str = "UPDATE mana_ai.agent_snapshots
    SET deleted = true, updated_at = now()
  WHERE agent_id = $1 AND user_id = ANY($2) AND user_id <> $3 AND NOT deleted";
const MOVE_CURSOR_SQL: &str = "INSERT INTO mana_ai.refresh_cursor (stream, position, updated_at)
  VALUES ($1, $2, now())
  ON CONFLICT (stream) DO UPDATE SET
    position = GREATEST(mana_ai.refresh_cursor.position, EXCLUDED.position), updated_at = now()";
const SPACE_AGENT_SQL: &str =
    "SELECT user_id, agent_id, record, updated_at FROM mana_ai.agent_snapshots
  WHERE space_id = $1 AND agent_id = $2 AND NOT deleted ORDER BY user_id LIMIT 1";

/// One changed space record, as discovered (ids only).
struct Changed {
    space: String,
    table: String,
    record: String,
    member: String,
}

impl Store {
    /// The space step (module docs). Skips (answers empty stats) while another runner
    /// holds its lock.
    pub async fn fold_spaces(&self) -> Result<SpaceStats, StoreError> {
        let c = self.client().await?;
        let got: bool = c.query_one(LOCK_SQL, &[&locks::SPACES]).await?.get(0);
        if !got {
            return Ok(SpaceStats::default());
        }
        let result = fold_locked(&c).await;
        if let Err(e) = c.execute(UNLOCK_SQL, &[&locks::SPACES]).await {
            drop(deadpool_postgres::Object::take(c));
            tracing::warn!(error = %e, "could not release the space lock; connection discarded");
        }
        result
    }

    /// The live agent `agent_id` of space `space_id`, whoever pushed it.
    pub async fn space_agent(
        &self,
        space_id: &str,
        agent_id: &str,
    ) -> Result<Option<AgentSnapshot>, StoreError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(SPACE_AGENT_SQL).await?;
        let row = c.query_opt(&stmt, &[&space_id, &agent_id]).await?;
        row.as_ref()
            .map(crate::snapshots::agent_from_row)
            .transpose()
    }
}

async fn fold_locked(c: &deadpool_postgres::Object) -> Result<SpaceStats, StoreError> {
    let cursors = c
        .query_one(CURSORS_SQL, &[&CURSOR_STREAM, &MAIN_STREAM])
        .await?;
    let from: DateTime<Utc> = cursors
        .get::<_, Option<DateTime<Utc>>>(0)
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let Some(to) = cursors.get::<_, Option<DateTime<Utc>>>(1) else {
        return Ok(SpaceStats::default());
    };
    let mut stats = SpaceStats::default();
    if to <= from {
        return Ok(stats);
    }
    let changed: Vec<Changed> = c
        .query(CHANGED_SQL, &[&from, &to])
        .await?
        .iter()
        .map(|r| Changed {
            space: r.get(0),
            table: r.get(1),
            record: r.get(2),
            member: r.get(3),
        })
        .collect();
    for ch in &changed {
        stats.copies_retired += fold_record(c, ch, to).await?;
        stats.records += 1;
    }
    c.execute(MOVE_CURSOR_SQL, &[&CURSOR_STREAM, &to]).await?;
    Ok(stats)
}

/// Merges and writes one space record; answers the number of copies retired.
async fn fold_record(
    c: &deadpool_postgres::Object,
    ch: &Changed,
    before: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let is_mission = ch.table == "aiMissions";
    let (authors, changes) = read_changes(c, ch, before).await?;
    if changes.is_empty() {
        return Ok(0);
    }
    let owner_sql = if is_mission {
        OWNER_MISSION_SQL
    } else {
        OWNER_AGENT_SQL
    };
    let known = c.query_opt(owner_sql, &[&ch.space, &ch.record]).await?;
    let owner = match &known {
        Some(r) => r.get::<_, String>(0),
        None => creator(&changes),
    };
    let personal_sql = if is_mission {
        PERSONAL_MISSION_SQL
    } else {
        PERSONAL_AGENT_SQL
    };
    let prior = c.query_opt(personal_sql, &[&owner, &ch.record]).await?;
    let mut state = match &prior {
        Some(r) if r.get::<_, bool>(1) => RecordState::Deleted,
        Some(r) => RecordState::from_snapshot(&r.get::<_, Value>(0)),
        None => RecordState::Absent,
    };
    let mut last_at = DateTime::<Utc>::UNIX_EPOCH;
    for (_, change) in &changes {
        state.apply(change);
        last_at = last_at.max(change.created_at);
    }
    let deleted = state.is_deleted();
    let record = state
        .to_record(&ch.record)
        .unwrap_or_else(|| serde_json::json!({ "id": ch.record, "__deleted": true }));
    write_snapshot(c, ch, &owner, (&record, deleted, last_at)).await?;
    let retire = if is_mission {
        RETIRE_MISSIONS_SQL
    } else {
        RETIRE_AGENTS_SQL
    };
    let retired = c.execute(retire, &[&ch.record, &authors, &owner]).await?;
    Ok(retired as usize)
}

/// The record's rows in its space (newest first) with their authors, and the distinct
/// authors.
async fn read_changes(
    c: &deadpool_postgres::Object,
    ch: &Changed,
    before: DateTime<Utc>,
) -> Result<(Vec<String>, Vec<(String, ChangeRow)>), StoreError> {
    let rows = c
        .query(
            READ_SQL,
            &[
                &ch.member,
                &ch.space,
                &ch.table,
                &ch.record,
                &before,
                &SPACE_RECORD_ROW_LIMIT,
            ],
        )
        .await?;
    let mut authors: Vec<String> = Vec::new();
    let mut changes = Vec::with_capacity(rows.len());
    for r in &rows {
        let user: String = r.get(0);
        let op_text: String = r.get(1);
        let op: Op = op_text.parse().map_err(|_| {
            StoreError::Corrupt(format!("unknown op {op_text:?} in record {}", ch.record))
        })?;
        if !authors.contains(&user) {
            authors.push(user.clone());
        }
        let change = ChangeRow {
            op,
            data: r.get::<_, Option<Value>>(2).filter(|v| !v.is_null()),
            field_meta: r.get::<_, Option<Value>>(3).filter(|v| !v.is_null()),
            created_at: r.get(4),
        };
        changes.push((user, change));
    }
    Ok((authors, changes))
}

/// Upserts the merged snapshot under `owner` with `space_id` set.
async fn write_snapshot(
    c: &deadpool_postgres::Object,
    ch: &Changed,
    owner: &str,
    (record, deleted, last_at): (&Value, bool, DateTime<Utc>),
) -> Result<(), StoreError> {
    if ch.table == "aiMissions" {
        let index = MissionIndex::from_record(record);
        c.execute(
            WRITE_MISSION_SQL,
            &[
                &owner,
                &ch.record,
                record,
                &last_at,
                &deleted,
                &index.state,
                &index.next_run_at,
                &index.agent_id,
                &ch.space,
            ],
        )
        .await?;
    } else {
        c.execute(
            WRITE_AGENT_SQL,
            &[&owner, &ch.record, record, &last_at, &deleted, &ch.space],
        )
        .await?;
    }
    Ok(())
}

/// The member whose row created the record: the oldest `insert`, else the oldest row.
/// `changes` is newest first.
fn creator(changes: &[(String, ChangeRow)]) -> String {
    let oldest = |only_inserts: bool| {
        changes
            .iter()
            .filter(|(_, c)| !only_inserts || c.op == Op::Insert)
            .min_by_key(|(user, c)| (c.created_at, user.clone()))
            .map(|(user, _)| user.clone())
    };
    oldest(true).or_else(|| oldest(false)).unwrap_or_default()
}
