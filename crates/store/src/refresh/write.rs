//! The write of one refresh batch: every mission and agent snapshot that changed, and
//! (for a window's last batch) the cursor, in one statement. The indexed mission columns
//! (state, `nextRunAt`, the resolved agent id) are read by core's
//! [`MissionIndex`], the one reading of a mission record. Rows refused by the batch
//! read go into `mana_ai.quarantined_rows` in the same statement, so they are recorded
//! exactly when the cursor moves past them.

use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use mana_ai_core::records::MissionIndex;
use serde_json::Value;

use super::CURSOR_STREAM;
use crate::quarantine::{clip_id, QuarantineReason, Refusal};
use crate::StoreError;

/// Every write of one batch in one statement (atomic without an explicit transaction):
/// mission upserts, agent upserts and — for the last batch of a window — the cursor.
const WRITE_SQL: &str = "WITH m AS (
   INSERT INTO mana_ai.mission_snapshots
       (user_id, mission_id, record, last_applied_at, updated_at, deleted, state, next_run_at, agent_id)
   SELECT u, m, r, l, now(), d, s, n, a
     FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::timestamptz[], $5::bool[],
                 $6::text[], $7::timestamptz[], $8::text[]) AS t(u, m, r, l, d, s, n, a)
   ON CONFLICT (user_id, mission_id) DO UPDATE SET
       record = EXCLUDED.record,
       last_applied_at = GREATEST(mana_ai.mission_snapshots.last_applied_at, EXCLUDED.last_applied_at),
       updated_at = now(), deleted = EXCLUDED.deleted, state = EXCLUDED.state,
       next_run_at = EXCLUDED.next_run_at, agent_id = EXCLUDED.agent_id
   RETURNING 1
 ), a AS (
   INSERT INTO mana_ai.agent_snapshots
       (user_id, agent_id, record, last_applied_at, updated_at, deleted)
   SELECT u, a, r, l, now(), d
     FROM unnest($9::text[], $10::text[], $11::jsonb[], $12::timestamptz[], $13::bool[])
          AS t(u, a, r, l, d)
   ON CONFLICT (user_id, agent_id) DO UPDATE SET
       record = EXCLUDED.record,
       last_applied_at = GREATEST(mana_ai.agent_snapshots.last_applied_at, EXCLUDED.last_applied_at),
       updated_at = now(), deleted = EXCLUDED.deleted
   RETURNING 1
 ), c AS (
   INSERT INTO mana_ai.refresh_cursor (stream, position, updated_at)
   SELECT $14::text, $15::timestamptz, now() WHERE $15::timestamptz IS NOT NULL
   ON CONFLICT (stream) DO UPDATE SET
       position = GREATEST(mana_ai.refresh_cursor.position, EXCLUDED.position),
       updated_at = now()
   RETURNING 1
 ), q AS (
   INSERT INTO mana_ai.quarantined_rows (user_id, table_name, record_id, created_at, reason, detail)
   SELECT * FROM unnest($16::text[], $17::text[], $18::text[], $19::timestamptz[], $20::text[],
                        $21::text[])
   ON CONFLICT DO NOTHING
   RETURNING 1
 )
 SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM a), (SELECT count(*) FROM c),
        (SELECT count(*) FROM q)";

/// The writes of one batch.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) missions: Vec<SnapshotWrite>,
    pub(super) agents: Vec<SnapshotWrite>,
    /// Rows refused by the read, recorded in `mana_ai.quarantined_rows`.
    pub(super) quarantined: Vec<Quarantined>,
    /// The window's end, for the window's last batch.
    pub(super) cursor: Option<DateTime<Utc>>,
}

/// One snapshot to upsert.
pub(super) struct SnapshotWrite {
    pub(super) user_id: String,
    pub(super) id: String,
    pub(super) record: Value,
    pub(super) deleted: bool,
    pub(super) last_at: DateTime<Utc>,
}

/// One refused row for the quarantine table (ids clipped to the id limit).
pub(super) struct Quarantined {
    pub(super) user_id: String,
    pub(super) table: String,
    pub(super) record_id: String,
    pub(super) created_at: DateTime<Utc>,
    pub(super) reason: QuarantineReason,
    pub(super) detail: String,
}

impl Quarantined {
    /// The entry for a refused row; logs it, with ids only.
    pub(super) fn new(
        user_id: &str,
        table: &str,
        record_id: &str,
        created_at: DateTime<Utc>,
        refusal: Refusal,
    ) -> Self {
        let q = Self {
            user_id: clip_id(user_id).to_string(),
            table: clip_id(table).to_string(),
            record_id: clip_id(record_id).to_string(),
            created_at,
            reason: refusal.reason,
            detail: refusal.detail,
        };
        tracing::warn!(
            user_id = %q.user_id, table = %q.table, record_id = %q.record_id,
            created_at = %q.created_at, reason = q.reason.as_str(), detail = %q.detail,
            "sync_changes row quarantined: skipped by the refresh"
        );
        q
    }
}

/// The quarantine entries of a batch as one array per column.
struct QuarantineColumns<'a> {
    users: Vec<&'a str>,
    tables: Vec<&'a str>,
    ids: Vec<&'a str>,
    at: Vec<DateTime<Utc>>,
    reasons: Vec<&'static str>,
    details: Vec<&'a str>,
}

impl<'a> QuarantineColumns<'a> {
    fn of(entries: &'a [Quarantined]) -> Self {
        Self {
            users: entries.iter().map(|q| q.user_id.as_str()).collect(),
            tables: entries.iter().map(|q| q.table.as_str()).collect(),
            ids: entries.iter().map(|q| q.record_id.as_str()).collect(),
            at: entries.iter().map(|q| q.created_at).collect(),
            reasons: entries.iter().map(|q| q.reason.as_str()).collect(),
            details: entries.iter().map(|q| q.detail.as_str()).collect(),
        }
    }
}

/// Writes one batch (nothing at all when it holds no write and no cursor).
pub(super) async fn write_batch(c: &Object, pending: &Pending) -> Result<(), StoreError> {
    let Pending {
        missions,
        agents,
        quarantined,
        cursor,
    } = pending;
    if missions.is_empty() && agents.is_empty() && quarantined.is_empty() && cursor.is_none() {
        return Ok(());
    }
    let m_users: Vec<&str> = missions.iter().map(|w| w.user_id.as_str()).collect();
    let m_ids: Vec<&str> = missions.iter().map(|w| w.id.as_str()).collect();
    let m_records: Vec<&Value> = missions.iter().map(|w| &w.record).collect();
    let m_last: Vec<DateTime<Utc>> = missions.iter().map(|w| w.last_at).collect();
    let m_deleted: Vec<bool> = missions.iter().map(|w| w.deleted).collect();
    let m_index: Vec<MissionIndex> = missions
        .iter()
        .map(|w| MissionIndex::from_record(&w.record))
        .collect();
    let m_states: Vec<Option<&str>> = m_index.iter().map(|i| i.state).collect();
    let m_next: Vec<Option<DateTime<Utc>>> = m_index.iter().map(|i| i.next_run_at).collect();
    let m_agents: Vec<&str> = m_index.iter().map(|i| i.agent_id).collect();
    let a_users: Vec<&str> = agents.iter().map(|w| w.user_id.as_str()).collect();
    let a_ids: Vec<&str> = agents.iter().map(|w| w.id.as_str()).collect();
    let a_records: Vec<&Value> = agents.iter().map(|w| &w.record).collect();
    let a_last: Vec<DateTime<Utc>> = agents.iter().map(|w| w.last_at).collect();
    let a_deleted: Vec<bool> = agents.iter().map(|w| w.deleted).collect();
    let q = QuarantineColumns::of(quarantined);
    let write = c.prepare_cached(WRITE_SQL).await?;
    let row = c
        .query_one(
            &write,
            &[
                &m_users,
                &m_ids,
                &m_records,
                &m_last,
                &m_deleted,
                &m_states,
                &m_next,
                &m_agents,
                &a_users,
                &a_ids,
                &a_records,
                &a_last,
                &a_deleted,
                &CURSOR_STREAM,
                &cursor,
                &q.users,
                &q.tables,
                &q.ids,
                &q.at,
                &q.reasons,
                &q.details,
            ],
        )
        .await?;
    let (m, a): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    if m as usize != missions.len() || a as usize != agents.len() {
        return Err(StoreError::Corrupt(format!(
            "snapshot write stored {m} missions and {a} agents instead of {} and {}",
            missions.len(),
            agents.len()
        )));
    }
    Ok(())
}
