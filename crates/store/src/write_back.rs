//! The exactly-once write-back of one claimed run, as a *merge* into the mission's
//! current iterations (issue 12.4–12.5; the decisions are core's
//! [`mana_ai_core::iterations`]).
//!
//! One transaction, two round trips (each pipelined with `BEGIN` / `COMMIT`):
//! 1. `BEGIN` + `mana_ai.write_back_current(...)` (SQL in `schema/write_back.sql`): scopes
//!    the transaction to the user, locks this runner's `running` claim and returns the
//!    database clock, the mission snapshot and every row at or after the refresh cursor,
//!    projected to `iterations`, `nextRunAt`, `deletedAt` and their stamps;
//! 2. the rows are merged with the one LWW merge ([`RecordState`]), and core's
//!    [`compose`] decides the row (keep every current iteration as it is now, add this
//!    run's, drop the oldest finished ones beyond the history limits, stamp with the
//!    database clock); then `mana_ai.write_back_run(...)` (`schema/runs.sql`: closes the
//!    claim, inserts the row) + `COMMIT`.
//!
//! A device edit that commits before step 1 is merged; one that commits later races the
//! write as any two devices do (field-level LWW on the whole array). A row that cannot be
//! decoded (absurd nesting, impossible times) is left out of the merge. On any error the
//! connection is discarded, so the server rolls the transaction back.

use chrono::{DateTime, Utc};
use mana_ai_core::iterations::{compose, Composed, CurrentMission, HistoryLimits, RunWrite};
use mana_ai_core::lww::{ChangeRow, Op, RecordState};
use serde_json::Value;
use tokio_postgres::{Client, Row, Statement};

use crate::{Store, StoreError};

/// One iteration write-back.
#[derive(Debug, Clone)]
pub struct WriteBack<'a> {
    /// The claimed run: `(user_id, mission_id, due_at)`, claimed by `runner_id`.
    pub user_id: &'a str,
    pub mission_id: &'a str,
    pub due_at: DateTime<Utc>,
    /// Writes only while this runner still owns the run's `running` claim.
    pub runner_id: &'a str,
    /// The run's iteration, merged into the mission's current iterations.
    pub iteration: &'a Value,
    /// The next run (`None`: `null`, no further run); written only while the mission is
    /// still due at `due_at`.
    pub next_run_at: Option<DateTime<Utc>>,
    pub actor: &'a Value,
    /// How much history the written row keeps.
    pub history: HistoryLimits,
    /// `written` for a plan, `failed` for a failed run.
    pub failed: bool,
    pub error: Option<&'a str>,
    /// A shared-space mission: the row is stamped with this `space_id`, so every member's
    /// device pulls it (`mana_ai.write_back_run_in_space`); `None` for personal missions.
    pub space_id: Option<&'a str>,
}

/// Outcome of [`Store::write_back`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// The claim was lost (expired and taken over, or already written): nothing written.
    ClaimLost,
    /// The mission was deleted during the run: nothing written, the run is closed as
    /// failed.
    MissionDeleted,
    /// The iterations that may not be dropped leave no room for this run's iteration
    /// under the row limit: only `nextRunAt` was written (when still due), and the run
    /// is closed as failed. `bytes`: the size the row would have had.
    HistoryFull {
        bytes: usize,
    },
}

/// `client_id` of every row the runner writes.
pub const CLIENT_ID: &str = "mana-ai-runner";

/// Error recorded for a run whose mission was deleted meanwhile.
const DELETED_ERROR: &str = "mission deleted during the run";
/// Error recorded for a run that found no room for its iteration.
const HISTORY_FULL_ERROR: &str = "iteration history full: too many unfinished iterations";

/// Step 1: scope, lock the claim, read the mission's current state.
const CURRENT_SQL: &str = "SELECT kind, op, data, field_meta, row_at
       FROM mana_ai.write_back_current($1, $2, $3, $4)";

/// Step 2: `mana_ai.write_back_run` closes the claim and inserts the row.
const WRITE_BACK_SQL: &str =
    "SELECT mana_ai.write_back_run($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
/// Step 2 for a shared-space mission: the same, with the row's `space_id` (`$11`).
const WRITE_BACK_IN_SPACE_SQL: &str =
    "SELECT mana_ai.write_back_run_in_space($11, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// Closes the claim as failed without writing a row.
const CLOSE_SQL: &str = "UPDATE mana_ai.mission_runs
        SET status = 'failed', finished_at = now(), error = $5
      WHERE user_id = $1 AND mission_id = $2 AND due_at = $3
        AND runner_id = $4 AND status = 'running'";

/// What step 1 found.
enum Current {
    Lost,
    Found {
        db_now: DateTime<Utc>,
        state: RecordState,
        /// The latest `iterations` stamp of a row left out of the merge (undecodable):
        /// the write is stamped after it too, so the merged array replaces that value.
        skipped_stamp: Option<DateTime<Utc>>,
    },
}

/// Folds the rows of `write_back_current` into the mission's merged state.
fn read_current(rows: &[Row]) -> Result<Current, StoreError> {
    let mut db_now = None;
    let mut state = RecordState::Absent;
    let mut skipped_stamp = None;
    for row in rows {
        let kind: String = row.try_get(0)?;
        match kind.as_str() {
            "lost" => return Ok(Current::Lost),
            "now" => db_now = Some(row.try_get::<_, DateTime<Utc>>(4)?),
            "snapshot" => {
                let deleted = row.try_get::<_, Option<String>>(1)?.as_deref() == Some("delete");
                if deleted {
                    state.join(&RecordState::Deleted);
                } else if let Ok(Some(record)) = row.try_get::<_, Option<Value>>(2) {
                    state.join(&RecordState::from_snapshot(&record));
                }
            }
            _ => match change_row(row) {
                Some(change) => state.apply(&change),
                None => skipped_stamp = skipped_stamp.max(stamp_of_skipped(row)),
            },
        }
    }
    let db_now = db_now.ok_or_else(|| {
        StoreError::Corrupt("mana_ai.write_back_current gave no clock".to_string())
    })?;
    Ok(Current::Found {
        db_now,
        state,
        skipped_stamp,
    })
}

/// The `iterations` stamp an undecodable row would have given (its `field_meta` entry,
/// else its `created_at`), when that much can be read.
fn stamp_of_skipped(row: &Row) -> Option<DateTime<Utc>> {
    let meta = row.try_get::<_, Option<Value>>(3).ok().flatten();
    meta.as_ref()
        .and_then(|m| m.get("iterations"))
        .and_then(Value::as_str)
        .and_then(mana_ai_core::iso::parse_iso)
        .or_else(|| row.try_get::<_, DateTime<Utc>>(4).ok())
}

/// One projected row, or `None` when it cannot be decoded (left out of the merge).
fn change_row(row: &Row) -> Option<ChangeRow> {
    let op: Op = row.try_get::<_, String>(1).ok()?.parse().ok()?;
    Some(ChangeRow {
        op,
        data: row.try_get::<_, Option<Value>>(2).ok()?,
        field_meta: row.try_get::<_, Option<Value>>(3).ok()?,
        created_at: row.try_get::<_, DateTime<Utc>>(4).ok()?,
    })
}

/// The prepared statements of one write-back.
struct Statements {
    current: Statement,
    write: Statement,
    close: Statement,
}

impl Store {
    /// Writes the run's iteration, merged into the mission's current iterations, and
    /// closes the run, atomically (see the module doc). Writes only if this runner still
    /// owns a `running` claim, re-checked under the claim's row lock; otherwise nothing
    /// is written and the answer is [`WriteOutcome::ClaimLost`].
    pub async fn write_back(&self, wb: &WriteBack<'_>) -> Result<WriteOutcome, StoreError> {
        if wb.user_id.is_empty() {
            return Err(StoreError::Refused("withUser: empty userID"));
        }
        let c = self.client().await?;
        let statements = Statements {
            current: c.prepare_cached(CURRENT_SQL).await?,
            write: match wb.space_id {
                Some(_) => c.prepare_cached(WRITE_BACK_IN_SPACE_SQL).await?,
                None => c.prepare_cached(WRITE_BACK_SQL).await?,
            },
            close: c.prepare_cached(CLOSE_SQL).await?,
        };
        let result = write_in_transaction(&c, &statements, wb).await;
        if result.is_err() {
            // The transaction may still be open: never return it to the pool.
            drop(deadpool_postgres::Object::take(c));
        }
        result
    }
}

async fn write_in_transaction(
    c: &Client,
    st: &Statements,
    wb: &WriteBack<'_>,
) -> Result<WriteOutcome, StoreError> {
    let ids: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&wb.user_id, &wb.mission_id, &wb.due_at, &wb.runner_id];
    let (begun, rows) = tokio::join!(c.batch_execute("BEGIN"), c.query(&st.current, &ids));
    begun?;
    let (db_now, current) = match read_current(&rows?)? {
        Current::Lost => {
            c.batch_execute("ROLLBACK").await?;
            return Ok(WriteOutcome::ClaimLost);
        }
        Current::Found {
            db_now,
            state,
            skipped_stamp,
        } => {
            let mut current = CurrentMission::from_state(&state);
            current.iterations_stamp = current.iterations_stamp.max(skipped_stamp);
            (db_now, current)
        }
    };
    let run = RunWrite {
        iteration: wb.iteration,
        next_run_at: wb.next_run_at,
        due_at: wb.due_at,
        limits: wb.history,
    };
    match compose(&current, &run, db_now) {
        Composed::Write { data, field_meta } => {
            let status = if wb.failed { "failed" } else { "written" };
            let written = insert_row(c, st, wb, (status, wb.error), (&data, &field_meta)).await?;
            Ok(if written {
                WriteOutcome::Written
            } else {
                WriteOutcome::ClaimLost
            })
        }
        Composed::HistoryFull {
            data,
            field_meta,
            bytes,
        } => {
            let schedule = ("failed", Some(HISTORY_FULL_ERROR));
            if data.as_object().is_some_and(|d| !d.is_empty()) {
                insert_row(c, st, wb, schedule, (&data, &field_meta)).await?;
            } else {
                close_failed(c, st, wb, HISTORY_FULL_ERROR).await?;
            }
            Ok(WriteOutcome::HistoryFull { bytes })
        }
        Composed::Deleted => {
            close_failed(c, st, wb, DELETED_ERROR).await?;
            Ok(WriteOutcome::MissionDeleted)
        }
    }
}

/// `write_back_run` + `COMMIT`, pipelined; whether the row was written.
async fn insert_row(
    c: &Client,
    st: &Statements,
    wb: &WriteBack<'_>,
    (status, error): (&str, Option<&str>),
    (data, field_meta): (&Value, &Value),
) -> Result<bool, StoreError> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 11] = [
        &wb.user_id,
        &wb.mission_id,
        &wb.due_at,
        &wb.runner_id,
        &status,
        &error,
        data,
        field_meta,
        wb.actor,
        &CLIENT_ID,
        &wb.space_id,
    ];
    let count = if wb.space_id.is_some() { 11 } else { 10 };
    let (written, committed) = tokio::join!(
        c.query_one(&st.write, &params[..count]),
        c.batch_execute("COMMIT")
    );
    let written: bool = written?.try_get(0)?;
    committed?;
    Ok(written)
}

/// Closes the claim as failed without a row, + `COMMIT`, pipelined.
async fn close_failed(
    c: &Client,
    st: &Statements,
    wb: &WriteBack<'_>,
    error: &str,
) -> Result<(), StoreError> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
        &wb.user_id,
        &wb.mission_id,
        &wb.due_at,
        &wb.runner_id,
        &error,
    ];
    let (closed, committed) =
        tokio::join!(c.execute(&st.close, &params), c.batch_execute("COMMIT"));
    closed?;
    committed?;
    Ok(())
}
