//! One batch of a refresh: read the batch's users' new rows (through
//! `mana_ai.read_ai_rows`, under each user's RLS scope) with the stored snapshots of the
//! records they touch, and merge them with the core LWW merge into the snapshot writes.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use mana_ai_core::lww::{ChangeRow, Op, RecordState};
use serde_json::Value;

use super::write::{Pending, SnapshotWrite};
use super::{RefreshStats, AGENTS, MISSIONS};
use crate::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    user_id: String,
    table: String,
    record_id: String,
}

struct Existing {
    record: Value,
    deleted: bool,
}

/// One batch: the users' rows in `[$2, $3)`, read under each user's RLS scope by the
/// invoker function, followed by the stored snapshots of the records they touch.
const READ_SQL: &str = "WITH r AS MATERIALIZED (
   SELECT * FROM mana_ai.read_ai_rows($1::text[], $2::timestamptz, $3::timestamptz)
 ), k AS (
   SELECT DISTINCT r.user_id, r.table_name, r.record_id FROM r
 )
 SELECT false AS snap, r.user_id, r.table_name, r.record_id, r.op, r.data, r.field_meta,
        r.created_at, false AS deleted
   FROM r
 UNION ALL
 SELECT true, s.user_id, 'aiMissions', s.mission_id, NULL::text, s.record, NULL::jsonb,
        NULL::timestamptz, s.deleted
   FROM mana_ai.mission_snapshots s
   JOIN k ON k.table_name = 'aiMissions' AND s.user_id = k.user_id AND s.mission_id = k.record_id
 UNION ALL
 SELECT true, s.user_id, 'agents', s.agent_id, NULL::text, s.record, NULL::jsonb,
        NULL::timestamptz, s.deleted
   FROM mana_ai.agent_snapshots s
   JOIN k ON k.table_name = 'agents' AND s.user_id = k.user_id AND s.agent_id = k.record_id";

/// A batch as read: the new rows grouped by record, and the stored snapshots they touch.
#[derive(Default)]
struct Read {
    changes: BTreeMap<Key, Vec<ChangeRow>>,
    existing: HashMap<Key, Existing>,
}

/// Reads one batch of users' rows in `[from, to)` with their stored snapshots and merges
/// them; returns what changed (plus the cursor when `cursor` is given) for writing.
pub(super) async fn apply_batch(
    c: &Object,
    users: &[&str],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    cursor: Option<DateTime<Utc>>,
    stats: &mut RefreshStats,
) -> Result<Pending, StoreError> {
    let read = read_batch(c, users, from, to).await?;
    let mut pending = merge(read, stats);
    pending.cursor = cursor;
    Ok(pending)
}

async fn read_batch(
    c: &Object,
    users: &[&str],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Read, StoreError> {
    let stmt = c.prepare_cached(READ_SQL).await?;
    let answer = c.query(&stmt, &[&users, &from, &to]).await?;
    let wanted: HashSet<&str> = users.iter().copied().collect();
    let mut read = Read::default();
    for r in answer {
        let is_snapshot: bool = r.get(0);
        let key = Key {
            user_id: r.get(1),
            table: r.get(2),
            record_id: r.get(3),
        };
        if !wanted.contains(key.user_id.as_str()) {
            return Err(StoreError::Corrupt(format!(
                "refresh read returned a row of user {:?}, which it did not ask for",
                key.user_id
            )));
        }
        if is_snapshot {
            let record: Option<Value> = r.get(5);
            let existing = Existing {
                record: record.unwrap_or(Value::Null),
                deleted: r.get(8),
            };
            read.existing.insert(key, existing);
            continue;
        }
        let change = change_row(&r, &key.record_id)?;
        read.changes.entry(key).or_default().push(change);
    }
    Ok(read)
}

/// A `sync_changes` row of the read (columns 4 to 7).
fn change_row(r: &tokio_postgres::Row, record_id: &str) -> Result<ChangeRow, StoreError> {
    let op_text: Option<String> = r.get(4);
    let op: Op = op_text.as_deref().unwrap_or("").parse().map_err(|_| {
        StoreError::Corrupt(format!("unknown op {op_text:?} in record {record_id}"))
    })?;
    Ok(ChangeRow {
        op,
        data: r.get::<_, Option<Value>>(5).filter(|v| !v.is_null()),
        field_meta: r.get::<_, Option<Value>>(6).filter(|v| !v.is_null()),
        created_at: r.get(7),
    })
}

/// Merges every record of the batch; only snapshots whose content changed are written.
fn merge(read: Read, stats: &mut RefreshStats) -> Pending {
    let mut pending = Pending::default();
    for (key, rows) in read.changes {
        let prior = read.existing.get(&key);
        let (is_mission, is_agent) = (key.table == MISSIONS, key.table == AGENTS);
        if let Some(write) = merge_record(key, prior, &rows, stats) {
            if is_mission {
                pending.missions.push(write);
            } else if is_agent {
                pending.agents.push(write);
            }
        }
    }
    stats.missions_changed += pending.missions.len();
    pending
}

/// Folds one record's new rows into its stored snapshot; `None` when there is nothing
/// to write (no live or deleted state, or the content did not change).
fn merge_record(
    key: Key,
    prior: Option<&Existing>,
    rows: &[ChangeRow],
    stats: &mut RefreshStats,
) -> Option<SnapshotWrite> {
    let mut state = match prior {
        Some(e) if e.deleted => RecordState::Deleted,
        Some(e) => RecordState::from_snapshot(&e.record),
        None => RecordState::Absent,
    };
    let mut last_at = DateTime::<Utc>::UNIX_EPOCH;
    for row in rows {
        state.apply(row);
        last_at = last_at.max(row.created_at);
    }
    stats.rows_applied += rows.len();
    if matches!(state, RecordState::Absent) {
        return None;
    }
    let deleted = state.is_deleted();
    let record = state
        .to_record(&key.record_id)
        .unwrap_or_else(|| serde_json::json!({ "id": key.record_id, "__deleted": true }));
    match prior {
        Some(e) if e.deleted == deleted && e.record == record => {
            stats.unchanged_snapshots += 1;
            return None;
        }
        Some(_) => stats.updated_snapshots += 1,
        None => stats.new_snapshots += 1,
    }
    Some(SnapshotWrite {
        user_id: key.user_id,
        id: key.record_id,
        record,
        deleted,
        last_at,
    })
}
