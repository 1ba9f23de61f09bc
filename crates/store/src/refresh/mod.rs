//! Incremental refresh of `mana_ai.mission_snapshots` and `mana_ai.agent_snapshots`
//! from `sync_changes`.
//!
//! The cursor is an instant `C` in `mana_ai.refresh_cursor`. One refresh:
//! 1. reads the *horizon* `H` (`mana_ai.change_horizon()`): every transaction that
//!    started before `H` has finished, so every row with `created_at < H` is already
//!    visible — `created_at` is the inserting transaction's start time, which is why a
//!    plain "max(created_at) seen" cursor loses rows of transactions that commit late;
//! 2. walks `[C, H)` in *windows* of up to `WINDOW_BATCHES × batch_rows` rows (by
//!    default 5,000,000: a catch-up of a long history is one window). For each window the
//!    `SECURITY DEFINER` discovery function `mana_ai.changed_ai_users` says which users
//!    have new rows and how many (ids and counts, never contents), a page of
//!    `USER_PAGE` users at a time;
//! 3. splits those users into *batches* of about `batch_rows` rows. One statement per
//!    batch reads the rows through the `SECURITY INVOKER` function
//!    `mana_ai.read_ai_rows`, which scopes itself to each user in turn
//!    (`set_config('app.current_user_id', user, true)`, the `withUser` rule), so
//!    row-level security decides what the service sees, and returns the stored snapshots
//!    of the touched records with them;
//! 4. folds the streamed rows with the core LWW merge as they arrive and writes, in one
//!    statement, only the snapshots whose content changed. The last batch of a window
//!    also moves the cursor to the window's end in that statement.
//!
//! A batch holds every row of its users in the window, so each record is merged over the
//! whole window and written at most once per window: a catch-up writes each record once
//! (unless its backlog exceeds a window). Memory stays bounded by one batch's merge
//! states and one page of user ids: rows are folded as they stream in and never held.
//! A crash before a window is finished leaves the cursor at the window's start; the next
//! refresh repeats it, which is harmless because the merge is idempotent (snapshots
//! already written simply come out unchanged).
//!
//! Cost is proportional to the rows in `[C, H)` (range scans on a partial index and on
//! the per-user index), not to the history: a refresh after a few new rows is four
//! round trips (lock with cursor and horizon; window; read; write with release).
//! Concurrent runners serialise on an advisory lock ([`crate::locks::REFRESH`]); the
//! loser skips. The lock is a session lock held across the windows' own commits; the
//! connection holding it is discarded unless the lock was released cleanly, so an error,
//! a panic or a cancellation never leaves it held on a pooled connection.
//!
//! Rows that cannot be decoded or break a documented limit are quarantined
//! ([`crate::quarantine`]): skipped, recorded with the write that moves the cursor past
//! them, and counted in [`RefreshStats::quarantined`].
//!
//! Files: this one walks the windows and holds the lock; `batch.rs` reads and merges one
//! batch; `write.rs` writes it (the indexed mission columns come from
//! [`mana_ai_core::records::MissionIndex`]).

mod batch;
mod write;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use deadpool_postgres::Object;

use crate::quarantine::QuarantineReason;
use crate::{locks, Store, StoreError};
use batch::apply_batch;
use write::{write_batch, Pending};

pub(crate) const CURSOR_STREAM: &str = "ai";
const MISSIONS: &str = "aiMissions";
const AGENTS: &str = "agents";
/// A window spans at most this many batches' worth of rows. Reads stream and the user
/// list is paged, so memory does not grow with the window; it only bounds how much work
/// a crash can make a refresh repeat, and a record is written at most once per window.
const WINDOW_BATCHES: i32 = 1_000;
/// Users (ids and row counts) listed at once for a window.
const USER_PAGE: i64 = 20_000;

/// What one refresh did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshStats {
    /// Distinct users whose rows were read (summed over windows).
    pub users_processed: usize,
    /// Snapshot rows created (missions + agents).
    pub new_snapshots: usize,
    /// Snapshot rows whose content changed (including records that became deleted).
    pub updated_snapshots: usize,
    /// Records touched by new rows whose merged content did not change (not rewritten).
    pub unchanged_snapshots: usize,
    /// `sync_changes` rows folded in.
    pub rows_applied: usize,
    /// Mission snapshots created or changed (subset of new + updated).
    pub missions_changed: usize,
    /// Batches processed (one read and one write statement each; a window with nothing
    /// new counts one batch, the write that moves the cursor).
    pub batches: usize,
    /// Windows walked (the cursor moves once per window).
    pub windows: usize,
    /// The cursor after the refresh.
    pub position: Option<DateTime<Utc>>,
    /// Rows quarantined (skipped and recorded, see [`crate::quarantine`]), by reason.
    pub quarantined: BTreeMap<QuarantineReason, usize>,
    /// The shared-space step run after the refresh ([`crate::spaces`]).
    pub spaces: crate::SpaceStats,
}

/// Result of [`Store::refresh_snapshots`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    Done(RefreshStats),
    /// Another runner is refreshing right now; nothing was done.
    Busy,
}

/// Tuning of one refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshOptions {
    /// Rows read and merged at once (a batch of users); a window spans up to
    /// `WINDOW_BATCHES` (1,000) times as many rows.
    pub batch_rows: i32,
    /// How far behind the clock the horizon stays even when no transaction is open
    /// (covers the instant between a backend taking its start time and publishing it).
    pub safety_margin: std::time::Duration,
}

impl Default for RefreshOptions {
    fn default() -> Self {
        Self {
            batch_rows: 5_000,
            safety_margin: std::time::Duration::from_millis(250),
        }
    }
}

/// Cursor and horizon in one statement. The horizon is read in its own statement (and
/// snapshot), strictly before any row is read.
const START_SQL: &str = "SELECT (SELECT position FROM mana_ai.refresh_cursor WHERE stream = $1),
        mana_ai.change_horizon(make_interval(secs => $2::float8))";

/// The end of the next window and the first `$4` users with rows in it (ids and counts
/// only, in id order). Always at least one row; `user_id` is NULL when the window holds
/// nothing. `e` must stay MATERIALIZED: inlined, the window-end scan would run once per
/// output row.
const WINDOW_SQL: &str =
    "WITH e AS MATERIALIZED (SELECT mana_ai.change_batch_end($1, $2, $3) AS to_at)
 SELECT e.to_at, u.user_id, u.row_count
   FROM e LEFT JOIN LATERAL (
          SELECT c.user_id, c.row_count FROM mana_ai.changed_ai_users($1, e.to_at) AS c
           ORDER BY c.user_id LIMIT $4) AS u ON true
  ORDER BY u.user_id";

/// The next `$4` users after `$3` with rows in the window `[$1, $2)`.
const USERS_SQL: &str = "SELECT c.user_id, c.row_count FROM mana_ai.changed_ai_users($1, $2) AS c
  WHERE c.user_id > $3 ORDER BY c.user_id LIMIT $4";

/// Session settings of the refresh connection, set with the lock and restored with its
/// release: the refresh's own statements are fixed and selective, so their cached
/// generic plans are safe and save a planning per statement (the pool's default,
/// `force_custom_plan`, guards the per-record queries elsewhere).
const SESSION_SQL: &str = "SET plan_cache_mode = auto";
const RESET_SQL: &str = "RESET plan_cache_mode";
const LOCK_SQL: &str = "SELECT pg_try_advisory_lock($1)";
const UNLOCK_SQL: &str = "SELECT pg_advisory_unlock($1)";

/// The refresh's connection while it may hold the session lock. Unless the lock was
/// released and the session restored ([`LockedConn::mark_clean`]), dropping it — on an
/// error, a panic or a cancelled future — discards the connection instead of returning
/// it to the pool: the session ends, and the server releases the lock with it. A pooled
/// connection never keeps the lock.
struct LockedConn {
    conn: Option<Object>,
    clean: AtomicBool,
}

impl LockedConn {
    fn new(conn: Object) -> Self {
        Self {
            conn: Some(conn),
            clean: AtomicBool::new(false),
        }
    }

    fn conn(&self) -> &Object {
        // Only `drop` takes the connection out.
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }

    fn mark_clean(&self) {
        self.clean.store(true, Ordering::Release);
    }
}

impl Drop for LockedConn {
    fn drop(&mut self) {
        if self.clean.load(Ordering::Acquire) {
            return;
        }
        if let Some(c) = self.conn.take() {
            drop(Object::take(c));
            tracing::warn!(
                "refresh ended without releasing its lock; its connection was discarded"
            );
        }
    }
}

impl Store {
    /// Folds every row that became visible since the last refresh into the snapshots.
    /// Idempotent (the cursor moves with the snapshots), so transient errors are retried.
    pub async fn refresh_snapshots(
        &self,
        opts: RefreshOptions,
    ) -> Result<RefreshOutcome, StoreError> {
        self.retrying("refresh", crate::Idempotent::Yes, || {
            self.refresh_once(opts)
        })
        .await
    }

    async fn refresh_once(&self, opts: RefreshOptions) -> Result<RefreshOutcome, StoreError> {
        // One connection for the whole refresh: it holds the (session) lock, and its
        // cached prepared statements save a round trip per statement. Statements that do
        // not depend on each other's answers are pipelined; the server still runs them in
        // order (the cursor is read after the lock is taken).
        let guard = LockedConn::new(self.client().await?);
        let c = guard.conn();
        let lock = c.prepare_cached(LOCK_SQL).await?;
        let start = c.prepare_cached(START_SQL).await?;
        let margin_secs = opts.safety_margin.as_secs_f64();
        let (set, got, started) = futures::future::join3(
            c.batch_execute(SESSION_SQL),
            c.query_one(&lock, &[&locks::REFRESH]),
            c.query_one(&start, &[&CURSOR_STREAM, &margin_secs]),
        )
        .await;
        // On any error the lock may be held and the session changed: the guard drops
        // the connection.
        let (got, started) = (got?.try_get::<_, bool>(0)?, started?);
        set?;
        if !got {
            c.batch_execute(RESET_SQL).await?;
            guard.mark_clean();
            return Ok(RefreshOutcome::Busy);
        }
        let mut released = false;
        let result = refresh_locked(c, opts, &started, &mut released).await;
        if !released {
            match release(c, None).await {
                Ok(_) => released = true,
                Err(e) => {
                    tracing::warn!(error = %e, "could not release the refresh lock; connection discarded");
                }
            }
        }
        if released {
            guard.mark_clean();
        }
        // Back to the pool (or discarded) before the space step takes a connection.
        drop(guard);
        let mut stats = result?;
        // Shared spaces: fold each changed space record into one snapshot (additive step;
        // see `crate::spaces`).
        stats.spaces = self.fold_spaces().await?;
        Ok(RefreshOutcome::Done(stats))
    }
}

/// Releases the lock and restores the session, pipelined after `last` (the refresh's
/// final write) when given. The write's own error, if any, comes back in the `Ok`.
async fn release<'a>(
    c: &'a Object,
    last: Option<futures::future::BoxFuture<'a, Result<(), StoreError>>>,
) -> Result<Result<(), StoreError>, StoreError> {
    let unlock = c.prepare_cached(UNLOCK_SQL).await?;
    let last = async move {
        match last {
            Some(f) => f.await,
            None => Ok(()),
        }
    };
    let (written, unlocked, reset) = futures::future::join3(
        last,
        c.execute(&unlock, &[&locks::REFRESH]),
        c.batch_execute(RESET_SQL),
    )
    .await;
    unlocked?;
    reset?;
    Ok(written)
}

async fn refresh_locked(
    c: &Object,
    opts: RefreshOptions,
    started: &tokio_postgres::Row,
    released: &mut bool,
) -> Result<RefreshStats, StoreError> {
    let batch_rows = opts.batch_rows.max(1);
    let window_rows = batch_rows.saturating_mul(WINDOW_BATCHES);
    let mut from: DateTime<Utc> = started
        .try_get::<_, Option<DateTime<Utc>>>(0)?
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let horizon: DateTime<Utc> = started.try_get(1)?;
    let mut stats = RefreshStats {
        position: Some(from),
        ..Default::default()
    };
    let window = c.prepare_cached(WINDOW_SQL).await?;
    let page = user_page();
    // One more than a page, to learn whether another page follows.
    let page_query = page + 1;
    while from < horizon {
        let rows = c
            .query(&window, &[&from, &horizon, &window_rows, &page_query])
            .await?;
        let mut to: Option<DateTime<Utc>> = None;
        let mut users: Vec<(String, i64)> = Vec::with_capacity(rows.len());
        for r in &rows {
            to = Some(r.try_get(0)?);
            if let Some(user) = r.try_get::<_, Option<String>>(1)? {
                users.push((user, r.try_get(2)?));
            }
        }
        drop(rows);
        let to = to.ok_or_else(|| StoreError::Corrupt("window query returned nothing".into()))?;
        if to <= from || to > horizon {
            return Err(StoreError::Corrupt(format!(
                "window end {to} outside ({from}, {horizon}]"
            )));
        }
        let final_window = to == horizon;
        let span = Span {
            from,
            to,
            final_window,
        };
        loop {
            let more = users.len() as i64 > page;
            users.truncate(usize::try_from(page).unwrap_or(usize::MAX));
            walk_page(c, &users, span, more, batch_rows, &mut stats, released).await?;
            if !more {
                break;
            }
            let after = users.last().map(|(u, _)| u.clone()).unwrap_or_default();
            users = next_users(c, from, to, &after, page_query).await?;
        }
        stats.windows += 1;
        from = to;
        stats.position = Some(from);
    }
    Ok(stats)
}

/// Users listed per page of a window (a test may make it smaller).
fn user_page() -> i64 {
    #[cfg(feature = "testkit")]
    if let Some(n) = crate::testkit::faults::refresh_user_page() {
        return n;
    }
    USER_PAGE
}

/// The window being walked.
#[derive(Clone, Copy)]
struct Span {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// The refresh's last window: its last write is pipelined with the release.
    final_window: bool,
}

/// Reads, merges and writes one page of a window's users, batch by batch. Each record
/// is read over the whole window at once (every row of a user in the window is in that
/// user's batch), so it is merged once and written at most once per window. Unless
/// another page follows (`more`), the page's last write also moves the cursor to the
/// window's end — a page without users writes only that.
async fn walk_page(
    c: &Object,
    users: &[(String, i64)],
    span: Span,
    more: bool,
    batch_rows: i32,
    stats: &mut RefreshStats,
    released: &mut bool,
) -> Result<(), StoreError> {
    let batches = split_into_batches(users, i64::from(batch_rows));
    let cursor = (!more).then_some(span.to);
    if batches.is_empty() {
        if cursor.is_some() {
            // Nothing (more) changed in [from, to): just move the cursor.
            let pending = Pending {
                cursor,
                ..Pending::default()
            };
            finish_batch(c, pending, span.final_window, released).await?;
            stats.batches += 1;
        }
        return Ok(());
    }
    let last = batches.len() - 1;
    for (i, batch) in batches.iter().enumerate() {
        let is_last = i == last && !more;
        let cursor = if is_last { cursor } else { None };
        let pending = apply_batch(c, batch, span.from, span.to, cursor, stats).await?;
        finish_batch(c, pending, span.final_window && is_last, released).await?;
        stats.users_processed += batch.len();
        stats.batches += 1;
    }
    Ok(())
}

/// The next page of a window's users after `after` (at most `limit`).
async fn next_users(
    c: &Object,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    after: &str,
    limit: i64,
) -> Result<Vec<(String, i64)>, StoreError> {
    let stmt = c.prepare_cached(USERS_SQL).await?;
    let rows = c.query(&stmt, &[&from, &to, &after, &limit]).await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Writes one batch; the refresh's final write is pipelined with the release.
async fn finish_batch(
    c: &Object,
    pending: Pending,
    is_final: bool,
    released: &mut bool,
) -> Result<(), StoreError> {
    if !is_final {
        return write_batch(c, &pending).await;
    }
    let write: futures::future::BoxFuture<'_, Result<(), StoreError>> =
        Box::pin(write_batch(c, &pending));
    let written = release(c, Some(write)).await?;
    *released = true;
    written
}

/// Groups users (sorted) into batches of about `batch_rows` rows; a user with more rows
/// than that forms a batch alone (its rows are streamed, so memory holds its records'
/// merge states, not its rows).
fn split_into_batches(users: &[(String, i64)], batch_rows: i64) -> Vec<Vec<&str>> {
    let mut out: Vec<Vec<&str>> = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut rows = 0i64;
    for (user, n) in users {
        if !current.is_empty() && rows.saturating_add(*n) > batch_rows {
            out.push(std::mem::take(&mut current));
            rows = 0;
        }
        current.push(user.as_str());
        rows = rows.saturating_add(*n);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::split_into_batches;

    fn users(spec: &[(&str, i64)]) -> Vec<(String, i64)> {
        spec.iter().map(|(u, n)| (u.to_string(), *n)).collect()
    }

    #[test]
    fn batches_hold_about_batch_rows_rows_and_every_user_once() {
        /// (users with row counts, batch_rows, expected batches)
        type Case<'a> = (&'a [(&'a str, i64)], i64, &'a [&'a [&'a str]]);
        let table: &[Case] = &[
            (&[], 10, &[]),
            (&[("a", 3)], 10, &[&["a"]]),
            (&[("a", 3), ("b", 7)], 10, &[&["a", "b"]]),
            (&[("a", 3), ("b", 8)], 10, &[&["a"], &["b"]]),
            (&[("a", 25), ("b", 1), ("c", 1)], 10, &[&["a"], &["b", "c"]]),
            (
                &[("a", 1), ("b", 25), ("c", 1)],
                10,
                &[&["a"], &["b"], &["c"]],
            ),
            (
                &[("a", 1), ("b", 1), ("c", 1)],
                1,
                &[&["a"], &["b"], &["c"]],
            ),
        ];
        for (spec, rows, expected) in table {
            let input = users(spec);
            let got = split_into_batches(&input, *rows);
            let want: Vec<Vec<&str>> = expected.iter().map(|b| b.to_vec()).collect();
            assert_eq!(got, want, "{spec:?} with {rows}");
        }
    }
}
