//! Single-record reads: the current state of one linked input record (a note, a task, a
//! goal …), replayed from its `sync_changes` rows with the shared core LWW merge
//! ([`mana_ai_core::lww::RecordState`]), always inside a `withUser` transaction.
//!
//! # Bound
//! The original replayed a record's *whole* history on every resolve. Here one replay
//! reads at most [`REPLAY_ROW_LIMIT`] rows of that record, newest first, through the
//! `(table_name, record_id, created_at)` index; the merge is order-independent, so the
//! order of the rows does not matter. When a record has more rows than that, its oldest
//! rows are not read: a field last written only by one of them is missing from the
//! result (logged as a warning). Deletion is never lost to the bound: for such a record a
//! second, indexed `EXISTS` query looks for a tombstone (an `op = 'delete'` row or a truthy
//! `data.deletedAt`) in the whole history.

use mana_ai_core::lww::{ChangeRow, Op, RecordState, FIELD_META_KEY};
use serde_json::Value;

use crate::{Store, StoreError, UserTx};

/// The most rows one replay reads (newest first).
pub const REPLAY_ROW_LIMIT: i64 = 5_000;

const REPLAY_SQL: &str = "SELECT op, data, field_meta, created_at
   FROM sync_changes
  WHERE user_id = $1 AND app_id = $2 AND table_name = $3 AND record_id = $4
  ORDER BY created_at DESC, id DESC
  LIMIT $5";

/// JavaScript truthiness of `data->'deletedAt'`, matching [`mana_ai_core::lww::is_truthy`].
const TOMBSTONE_SQL: &str = "SELECT EXISTS (
   SELECT 1 FROM sync_changes
    WHERE user_id = $1 AND app_id = $2 AND table_name = $3 AND record_id = $4
      AND (op = 'delete'
           OR (jsonb_typeof(data) = 'object' AND data ? 'deletedAt'
               AND data->'deletedAt' NOT IN ('null'::jsonb, 'false'::jsonb, '0'::jsonb, '\"\"'::jsonb))))";

/// Replays one record inside the caller's `withUser` transaction.
///
/// Returns the merged record as `{"id": record_id, ...fields}` (no `__fieldMeta`), or
/// `None` when the record has no rows or is deleted (a delete row or a truthy
/// `deletedAt`). Reads at most [`REPLAY_ROW_LIMIT`] rows (see the module docs).
pub async fn replay_record_in(
    tx: &UserTx,
    app_id: &str,
    table_name: &str,
    record_id: &str,
) -> Result<Option<Value>, StoreError> {
    let user_id = tx.user_id();
    let rows = tx
        .client()
        .query(
            REPLAY_SQL,
            &[
                &user_id,
                &app_id,
                &table_name,
                &record_id,
                &REPLAY_ROW_LIMIT,
            ],
        )
        .await?;
    let truncated = rows.len() as i64 >= REPLAY_ROW_LIMIT;
    let mut state = RecordState::Absent;
    for row in &rows {
        let op_text: String = row.try_get(0)?;
        let op: Op = op_text
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("unknown op in record {record_id}")))?;
        let change = ChangeRow {
            op,
            data: row.try_get::<_, Option<Value>>(1)?,
            field_meta: row.try_get::<_, Option<Value>>(2)?,
            created_at: row.try_get(3)?,
        };
        state.apply(&change);
    }
    if truncated && !state.is_deleted() {
        tracing::warn!(
            app = app_id,
            table = table_name,
            limit = REPLAY_ROW_LIMIT,
            "record history exceeds the replay bound; its oldest rows are ignored"
        );
        let tombstone: bool = tx
            .client()
            .query_one(TOMBSTONE_SQL, &[&user_id, &app_id, &table_name, &record_id])
            .await?
            .try_get(0)?;
        if tombstone {
            return Ok(None);
        }
    }
    Ok(state.to_record(record_id).map(|mut record| {
        if let Value::Object(map) = &mut record {
            map.remove(FIELD_META_KEY);
        }
        record
    }))
}

impl Store {
    /// [`replay_record_in`] in its own `withUser(user_id)` transaction (read-only; an
    /// empty user id is refused without touching the database).
    pub async fn replay_record(
        &self,
        user_id: &str,
        app_id: &str,
        table_name: &str,
        record_id: &str,
    ) -> Result<Option<Value>, StoreError> {
        let tx = self.begin_user(user_id).await?;
        let record = replay_record_in(&tx, app_id, table_name, record_id).await?;
        tx.commit().await?;
        Ok(record)
    }
}
