//! The exactly-once write-back of one claimed run, as a *merge* into the mission's
//! current iterations (issue 12.4–12.5; the decisions are core's
//! [`mana_ai_core::iterations`]).
//!
//! **Direct, one round trip** (the common case): the runner hands in the snapshot it
//! loaded ([`Loaded`]). Core's [`compose`] merges the run's iteration into it, and one
//! statement, `mana_ai.write_back_commit(..., version)` (`schema/0008`), locks this
//! runner's `running` claim and the mission snapshot, checks that the mission did not
//! change since the load (the snapshot's version is the same and the log holds no row of
//! the mission the snapshot has not folded in), closes the claim and inserts the row,
//! stamped by the database clock (`mana_ai.write_stamp`, raised to the merged stamps'
//! floors). The merge then saw exactly the current state.
//!
//! **Merged, two round trips** (the mission changed since the load — a device edited it
//! during planning — or no snapshot was handed in): one transaction, each round trip
//! pipelined with `BEGIN` / `COMMIT`:
//! 1. `BEGIN` + `mana_ai.write_back_current(...)` (`schema/0007`): scopes the
//!    transaction to the user, locks the claim and the snapshot and returns the mission
//!    snapshot and every row at or after the refresh cursor, projected to `iterations`,
//!    `nextRunAt`, `deletedAt` and their stamps;
//! 2. the rows are merged with the one LWW merge ([`RecordState`]), [`compose`] decides
//!    the row, and `mana_ai.write_back_commit(..., NULL)` writes it + `COMMIT`.
//!
//! A device edit that commits before the check is merged; one that commits later races
//! the write as any two devices do (field-level LWW on the whole array). A row that
//! cannot be decoded (absurd nesting, impossible times) is left out of the merge. On any
//! error the connection is discarded, so the server rolls an open transaction back.

use chrono::{DateTime, Utc};
use mana_ai_core::iterations::{
    compose, Composed, CurrentMission, HistoryLimits, RunWrite, StampFloors,
};
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
    /// The mission snapshot the run was planned from, if the caller has it: the
    /// write-back then takes one round trip unless the mission changed since.
    pub loaded: Option<Loaded<'a>>,
}

/// A mission snapshot as it was loaded ([`crate::DueMission`]).
#[derive(Debug, Clone, Copy)]
pub struct Loaded<'a> {
    /// The snapshot's record (with its `__fieldMeta`).
    pub record: &'a Value,
    /// The snapshot's version (`updated_at`) at the load.
    pub version: DateTime<Utc>,
}

/// Which way a write-back went (for the metric and the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePath {
    /// One statement over the loaded snapshot: nothing changed since the load.
    Direct,
    /// The mission changed since the load (or no snapshot was given): read and merged
    /// inside the write-back transaction.
    Merged,
}

impl WritePath {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Merged => "merged",
        }
    }
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

/// Merged step 1: scope, lock the claim, read the mission's current state.
const CURRENT_SQL: &str = "SELECT kind, op, data, field_meta, row_at
       FROM mana_ai.write_back_current($1, $2, $3, $4)";

/// Closes the claim and inserts the row (`$13`: the loaded version for the direct path,
/// NULL after a merge).
const COMMIT_SQL: &str =
    "SELECT mana_ai.write_back_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// Closes the claim as failed without writing a row.
const CLOSE_SQL: &str = "UPDATE mana_ai.mission_runs
        SET status = 'failed', finished_at = now(), error = $5
      WHERE user_id = $1 AND mission_id = $2 AND due_at = $3
        AND runner_id = $4 AND status = 'running'";

/// What step 1 found.
enum Current {
    Lost,
    Found {
        state: RecordState,
        /// The latest `iterations` stamp of a row left out of the merge (undecodable):
        /// the write is stamped after it too, so the merged array replaces that value.
        skipped_stamp: Option<DateTime<Utc>>,
    },
}

/// Folds the rows of `write_back_current` into the mission's merged state.
fn read_current(rows: &[Row]) -> Result<Current, StoreError> {
    let mut clock_seen = false;
    let mut state = RecordState::Absent;
    let mut skipped_stamp = None;
    for row in rows {
        let kind: String = row.try_get(0)?;
        match kind.as_str() {
            "lost" => return Ok(Current::Lost),
            // The clock row marks a found claim; the write is stamped by the commit.
            "now" => clock_seen = true,
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
    if !clock_seen {
        return Err(StoreError::Corrupt(
            "mana_ai.write_back_current gave no clock".to_string(),
        ));
    }
    Ok(Current::Found {
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
    commit: Statement,
    close: Statement,
}

/// What `write_back_commit` answered.
enum Committed {
    Written,
    Lost,
    /// Direct path only: the mission changed since the load; nothing was written.
    Stale,
}

impl Store {
    /// Writes the run's iteration, merged into the mission's current iterations, and
    /// closes the run, atomically (see the module doc). Writes only if this runner still
    /// owns a `running` claim, re-checked under the claim's row lock; otherwise nothing
    /// is written and the answer is [`WriteOutcome::ClaimLost`].
    pub async fn write_back(&self, wb: &WriteBack<'_>) -> Result<WriteOutcome, StoreError> {
        self.write_back_with_path(wb)
            .await
            .map(|(outcome, _)| outcome)
    }

    /// [`Store::write_back`], also telling which way it went.
    pub async fn write_back_with_path(
        &self,
        wb: &WriteBack<'_>,
    ) -> Result<(WriteOutcome, WritePath), StoreError> {
        if wb.user_id.is_empty() {
            return Err(StoreError::Refused("withUser: empty userID"));
        }
        let c = self.client().await?;
        let statements = Statements {
            current: c.prepare_cached(CURRENT_SQL).await?,
            commit: c.prepare_cached(COMMIT_SQL).await?,
            close: c.prepare_cached(CLOSE_SQL).await?,
        };
        let result = match write_direct(&c, &statements, wb).await {
            Ok(Some(outcome)) => Ok((outcome, WritePath::Direct)),
            Ok(None) => write_merged(&c, &statements, wb)
                .await
                .map(|outcome| (outcome, WritePath::Merged)),
            Err(e) => Err(e),
        };
        if result.is_err() {
            // A transaction may still be open: never return it to the pool.
            drop(deadpool_postgres::Object::take(c));
        }
        result
    }
}

fn run_write<'a>(wb: &WriteBack<'a>) -> RunWrite<'a> {
    RunWrite {
        iteration: wb.iteration,
        next_run_at: wb.next_run_at,
        due_at: wb.due_at,
        limits: wb.history,
    }
}

/// The direct path: compose over the loaded snapshot and write in one statement, unless
/// the mission changed since the load (`None`: merge instead).
async fn write_direct(
    c: &Client,
    st: &Statements,
    wb: &WriteBack<'_>,
) -> Result<Option<WriteOutcome>, StoreError> {
    let Some(loaded) = wb.loaded else {
        return Ok(None);
    };
    let current = CurrentMission::from_state(&RecordState::from_snapshot(loaded.record));
    let (data, floors, failure) = match compose(&current, &run_write(wb)) {
        Composed::Write { data, floors } => (data, floors, None),
        Composed::HistoryFull {
            data,
            floors,
            bytes,
        } if data.as_object().is_some_and(|d| !d.is_empty()) => (data, floors, Some(bytes)),
        // Nothing to write or a tombstone in the snapshot: the merged path decides
        // under the locks.
        Composed::HistoryFull { .. } | Composed::Deleted => return Ok(None),
    };
    let status = match failure {
        Some(_) => ("failed", Some(HISTORY_FULL_ERROR)),
        None => (if wb.failed { "failed" } else { "written" }, wb.error),
    };
    let committed = commit(c, st, wb, status, (&data, floors), Some(loaded.version)).await?;
    Ok(match committed {
        Committed::Stale => None,
        Committed::Lost => Some(WriteOutcome::ClaimLost),
        Committed::Written => Some(match failure {
            Some(bytes) => WriteOutcome::HistoryFull { bytes },
            None => WriteOutcome::Written,
        }),
    })
}

/// The merged path: read the current state under the locks, merge, write, in one
/// transaction of two round trips.
async fn write_merged(
    c: &Client,
    st: &Statements,
    wb: &WriteBack<'_>,
) -> Result<WriteOutcome, StoreError> {
    let ids: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&wb.user_id, &wb.mission_id, &wb.due_at, &wb.runner_id];
    let (begun, rows) = tokio::join!(c.batch_execute("BEGIN"), c.query(&st.current, &ids));
    begun?;
    let current = match read_current(&rows?)? {
        Current::Lost => {
            c.batch_execute("ROLLBACK").await?;
            return Ok(WriteOutcome::ClaimLost);
        }
        Current::Found {
            state,
            skipped_stamp,
        } => {
            let mut current = CurrentMission::from_state(&state);
            current.iterations_stamp = current.iterations_stamp.max(skipped_stamp);
            current
        }
    };
    // The write and `COMMIT` are pipelined: one round trip.
    let write = async {
        Ok::<_, StoreError>(match compose(&current, &run_write(wb)) {
            Composed::Write { data, floors } => {
                let status = (if wb.failed { "failed" } else { "written" }, wb.error);
                match commit(c, st, wb, status, (&data, floors), None).await? {
                    Committed::Written => WriteOutcome::Written,
                    Committed::Lost | Committed::Stale => WriteOutcome::ClaimLost,
                }
            }
            Composed::HistoryFull {
                data,
                floors,
                bytes,
            } => {
                let status = ("failed", Some(HISTORY_FULL_ERROR));
                if data.as_object().is_some_and(|d| !d.is_empty()) {
                    commit(c, st, wb, status, (&data, floors), None).await?;
                } else {
                    close_failed(c, st, wb, HISTORY_FULL_ERROR).await?;
                }
                WriteOutcome::HistoryFull { bytes }
            }
            Composed::Deleted => {
                close_failed(c, st, wb, DELETED_ERROR).await?;
                WriteOutcome::MissionDeleted
            }
        })
    };
    let (outcome, committed) = tokio::join!(write, c.batch_execute("COMMIT"));
    let outcome = outcome?;
    committed?;
    Ok(outcome)
}

/// `write_back_commit`: with `version`, the direct path's one statement (its own
/// transaction); without, the merged path's write inside the open transaction.
async fn commit(
    c: &Client,
    st: &Statements,
    wb: &WriteBack<'_>,
    (status, error): (&str, Option<&str>),
    (data, floors): (&Value, StampFloors),
    version: Option<DateTime<Utc>>,
) -> Result<Committed, StoreError> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 13] = [
        &wb.user_id,
        &wb.mission_id,
        &wb.due_at,
        &wb.runner_id,
        &status,
        &error,
        data,
        &floors.iterations,
        &floors.next_run_at,
        wb.actor,
        &CLIENT_ID,
        &wb.space_id,
        &version,
    ];
    let answer: String = c.query_one(&st.commit, &params).await?.try_get(0)?;
    match answer.as_str() {
        "written" => Ok(Committed::Written),
        "lost" => Ok(Committed::Lost),
        "stale" => Ok(Committed::Stale),
        other => Err(StoreError::Corrupt(format!(
            "mana_ai.write_back_commit answered {other:?}"
        ))),
    }
}

/// Closes the claim as failed without a row (inside the merged path's transaction).
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
    c.execute(&st.close, &params).await?;
    Ok(())
}
