//! One batch of a refresh: read the batch's users' new rows (through
//! `mana_ai.read_ai_rows`, under each user's RLS scope) with the stored snapshots of the
//! records they touch, and merge them with the core LWW merge into the snapshot writes.
//! Every column is decoded with `try_get`; a row that cannot be decoded or breaks a limit
//! of [`crate::quarantine`] is set aside for the quarantine instead of being merged.
//!
//! The answer is streamed, not collected: each new row is folded into its record's merge
//! state as it arrives and then dropped, so a batch holds one merge state per record it
//! touches (plus each row's `created_at`, in case the stored snapshot turns out to be
//! unreadable and the record's rows go to the quarantine), never its rows. The merge is
//! a join-semilattice ([`mana_ai_core::lww`]), so folding the rows first and joining the
//! stored snapshot afterwards gives exactly the snapshot-then-rows result, whatever order
//! the rows and snapshots arrive in.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use futures::TryStreamExt;
use mana_ai_core::lww::{ChangeRow, Op, RecordState};
use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::write::{Pending, Quarantined, SnapshotWrite};
use super::{RefreshStats, AGENTS, MISSIONS};
use crate::quarantine::{self, clip_id, QuarantineReason, Refusal, MAX_ID_BYTES, MAX_ROW_BYTES};
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
 SELECT false AS snap, r.user_id, r.table_name, r.record_id, r.op, r.data::text,
        r.field_meta::text, r.created_at, false AS deleted
   FROM r
 UNION ALL
 SELECT true, s.user_id, 'aiMissions', s.mission_id, NULL::text, s.record::text, NULL::text,
        NULL::timestamptz, s.deleted
   FROM mana_ai.mission_snapshots s
   JOIN k ON k.table_name = 'aiMissions' AND s.user_id = k.user_id AND s.mission_id = k.record_id
 UNION ALL
 SELECT true, s.user_id, 'agents', s.agent_id, NULL::text, s.record::text, NULL::text,
        NULL::timestamptz, s.deleted
   FROM mana_ai.agent_snapshots s
   JOIN k ON k.table_name = 'agents' AND s.user_id = k.user_id AND s.agent_id = k.record_id";

/// The new rows of one record, folded.
struct Folded {
    state: RecordState,
    rows: usize,
    last_at: DateTime<Utc>,
    /// `created_at` of every folded row: the quarantine entries if the stored snapshot
    /// turns out to be unreadable.
    row_times: Vec<DateTime<Utc>>,
}

impl Folded {
    fn new() -> Self {
        Self {
            state: RecordState::Absent,
            rows: 0,
            last_at: DateTime::<Utc>::UNIX_EPOCH,
            row_times: Vec::new(),
        }
    }

    fn fold(&mut self, row: &ChangeRow) {
        self.state.apply(row);
        self.rows += 1;
        self.last_at = self.last_at.max(row.created_at);
        self.row_times.push(row.created_at);
    }
}

/// A batch as read: the new rows folded by record, the stored snapshots they touch, and
/// the rows refused for the quarantine.
#[derive(Default)]
struct Read {
    changes: BTreeMap<Key, Folded>,
    existing: HashMap<Key, Existing>,
    /// Records whose stored snapshot could not be read: their new rows are quarantined
    /// and the snapshot is left as it is.
    unreadable: HashSet<Key>,
    quarantined: Vec<Quarantined>,
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
    let mut read = read_batch(c, users, from, to).await?;
    quarantine_unreadable(&mut read, from);
    for q in &read.quarantined {
        *stats.quarantined.entry(q.reason).or_default() += 1;
    }
    let quarantined = std::mem::take(&mut read.quarantined);
    let mut pending = merge(read, stats);
    pending.quarantined = quarantined;
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
    let params: [&(dyn ToSql + Sync); 3] = [&users, &from, &to];
    let answer = c
        .query_raw(&stmt, params.iter().map(|p| *p as &dyn ToSql))
        .await?;
    futures::pin_mut!(answer);
    let wanted: HashSet<&str> = users.iter().copied().collect();
    let mut read = Read::default();
    while let Some(r) = answer.try_next().await? {
        let is_snapshot: bool = r.try_get(0)?;
        let key = Key {
            user_id: r.try_get(1)?,
            table: r.try_get(2)?,
            record_id: r.try_get(3)?,
        };
        if !wanted.contains(key.user_id.as_str()) {
            return Err(StoreError::Corrupt(format!(
                "refresh read returned a row of user {:?}, which it did not ask for",
                key.user_id
            )));
        }
        #[cfg(feature = "testkit")]
        crate::testkit::faults::refresh_row_read(&key.user_id);
        if is_snapshot {
            read_snapshot(&r, key, &mut read)?;
            continue;
        }
        match change_row(&r, &key.record_id) {
            Ok(change) => read
                .changes
                .entry(key)
                .or_insert_with(Folded::new)
                .fold(&change),
            Err(refusal) => {
                let created_at: DateTime<Utc> = r.try_get(7).unwrap_or(from);
                read.quarantined.push(Quarantined::new(
                    &key.user_id,
                    &key.table,
                    &key.record_id,
                    created_at,
                    refusal,
                ));
            }
        }
    }
    Ok(read)
}

/// A stored snapshot of the read (columns 5 and 8). Snapshots were written by the refresh
/// itself, so only serde's own limits apply; one that cannot be read is remembered.
fn read_snapshot(r: &tokio_postgres::Row, key: Key, read: &mut Read) -> Result<(), StoreError> {
    let deleted: bool = r.try_get(8)?;
    let text: Option<String> = r.try_get(5)?;
    match text
        .as_deref()
        .map(serde_json::from_str::<Value>)
        .transpose()
    {
        Ok(record) => {
            let record = record.unwrap_or(Value::Null);
            read.existing.insert(key, Existing { record, deleted });
        }
        Err(_) => {
            tracing::warn!(
                user_id = %key.user_id, table = %key.table, record_id = %clip_id(&key.record_id),
                "stored snapshot cannot be read; the record's new rows are quarantined"
            );
            read.unreadable.insert(key);
        }
    }
    Ok(())
}

/// Moves the new rows of records with an unreadable snapshot into the quarantine.
fn quarantine_unreadable(read: &mut Read, from: DateTime<Utc>) {
    for key in std::mem::take(&mut read.unreadable) {
        let Some(folded) = read.changes.remove(&key) else {
            continue;
        };
        for created_at in folded.row_times {
            let refusal = Refusal::new(QuarantineReason::Undecodable, "stored snapshot unreadable");
            let at = if created_at > DateTime::<Utc>::UNIX_EPOCH {
                created_at
            } else {
                from
            };
            read.quarantined.push(Quarantined::new(
                &key.user_id,
                &key.table,
                &key.record_id,
                at,
                refusal,
            ));
        }
    }
}

/// A `sync_changes` row of the read (columns 4 to 7), checked against the limits of
/// [`crate::quarantine`]; a refusal says why it goes to the quarantine.
fn change_row(r: &tokio_postgres::Row, record_id: &str) -> Result<ChangeRow, Refusal> {
    if record_id.len() > MAX_ID_BYTES {
        let detail = format!("record id of {} bytes", record_id.len());
        return Err(Refusal::new(QuarantineReason::IdTooLong, detail));
    }
    let undecodable = |what: &str| Refusal::new(QuarantineReason::Undecodable, what.to_string());
    let op_text: Option<String> = r.try_get(4).map_err(|_| undecodable("op"))?;
    let op: Op = op_text
        .as_deref()
        .unwrap_or("")
        .parse()
        .map_err(|_| undecodable("unknown op"))?;
    let created_at: DateTime<Utc> = r
        .try_get(7)
        .map_err(|_| Refusal::new(QuarantineReason::BadTime, "created_at"))?;
    let data: Option<&str> = r.try_get(5).map_err(|_| undecodable("data"))?;
    let meta: Option<&str> = r.try_get(6).map_err(|_| undecodable("field_meta"))?;
    let mut budget = MAX_ROW_BYTES;
    Ok(ChangeRow {
        op,
        data: quarantine::parse_checked(data, &mut budget)?,
        field_meta: quarantine::parse_checked(meta, &mut budget)?,
        created_at,
    })
}

/// Merges every record of the batch; only snapshots whose content changed are written.
fn merge(read: Read, stats: &mut RefreshStats) -> Pending {
    let mut pending = Pending::default();
    for (key, folded) in read.changes {
        let prior = read.existing.get(&key);
        let (is_mission, is_agent) = (key.table == MISSIONS, key.table == AGENTS);
        if let Some(write) = merge_record(key, prior, folded, stats) {
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

/// Joins one record's folded new rows with its stored snapshot; `None` when there is
/// nothing to write (no live or deleted state, or the content did not change).
fn merge_record(
    key: Key,
    prior: Option<&Existing>,
    folded: Folded,
    stats: &mut RefreshStats,
) -> Option<SnapshotWrite> {
    let state = match prior {
        Some(e) if e.deleted => RecordState::Deleted,
        Some(e) => {
            let mut state = RecordState::from_snapshot(&e.record);
            state.join(&folded.state);
            state
        }
        None => folded.state,
    };
    stats.rows_applied += folded.rows;
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
        last_at: folded.last_at,
    })
}
