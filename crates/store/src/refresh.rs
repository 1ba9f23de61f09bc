//! Incremental refresh of `mana_ai.mission_snapshots` and `mana_ai.agent_snapshots`
//! from `sync_changes`.
//!
//! The cursor is an instant `C` in `mana_ai.refresh_cursor`. One refresh:
//! 1. reads the *horizon* `H` (`mana_ai.change_horizon()`): every transaction that
//!    started before `H` has finished, so every row with `created_at < H` is already
//!    visible — `created_at` is the inserting transaction's start time, which is why a
//!    plain "max(created_at) seen" cursor loses rows of transactions that commit late;
//! 2. walks `[C, H)` in batches of about `batch_rows` rows; for each batch it asks the
//!    discovery function which records changed (ids only), reads those rows per user
//!    inside `withUser` scope, merges them into the stored snapshots with the core LWW
//!    merge, writes only snapshots whose content changed, and advances the cursor — all
//!    in one transaction, so a crash repeats a batch (the merge is idempotent) and never
//!    skips one.
//!
//! Cost is proportional to the rows in `[C, H)` (a range scan on a partial index), not
//! to the history. Concurrent runners serialise on an advisory lock; the loser skips.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use mana_ai_core::lww::{ChangeRow, Op, RecordState};
use serde_json::Value;

use crate::{Store, StoreError, UserTx};

const CURSOR_STREAM: &str = "ai";
const REFRESH_LOCK: i64 = 7_366_720_002;
const MISSIONS: &str = "aiMissions";
const AGENTS: &str = "agents";

/// What one refresh did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshStats {
    /// Distinct users whose rows were read.
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
    /// Batches processed.
    pub batches: usize,
    /// The cursor after the refresh.
    pub position: Option<DateTime<Utc>>,
}

/// Result of [`Store::refresh_snapshots`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    Done(RefreshStats),
    /// Another runner is refreshing right now; nothing was done.
    Busy,
}

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

/// Tuning of one refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshOptions {
    /// Rows per batch (one transaction each).
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

impl Store {
    /// Folds every row that became visible since the last refresh into the snapshots.
    pub async fn refresh_snapshots(
        &self,
        opts: RefreshOptions,
    ) -> Result<RefreshOutcome, StoreError> {
        let lock_client = self.client().await?;
        let got: bool = lock_client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&REFRESH_LOCK])
            .await?
            .get(0);
        if !got {
            return Ok(RefreshOutcome::Busy);
        }
        let result = self.refresh_locked(opts).await;
        if let Err(e) = lock_client
            .execute("SELECT pg_advisory_unlock($1)", &[&REFRESH_LOCK])
            .await
        {
            // The lock dies with the session; make sure this one is not reused.
            drop(deadpool_postgres::Object::take(lock_client));
            tracing::warn!(error = %e, "could not release the refresh lock; connection discarded");
        }
        result.map(RefreshOutcome::Done)
    }

    async fn refresh_locked(&self, opts: RefreshOptions) -> Result<RefreshStats, StoreError> {
        let batch_rows = opts.batch_rows.max(1);
        let margin_secs = opts.safety_margin.as_secs_f64();
        let c = self.client().await?;
        let mut from: DateTime<Utc> = c
            .query_opt(
                "SELECT position FROM mana_ai.refresh_cursor WHERE stream = $1",
                &[&CURSOR_STREAM],
            )
            .await?
            .map(|r| r.get(0))
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        // Its own statement (and snapshot), strictly before the reads below.
        let horizon: DateTime<Utc> = c
            .query_one(
                "SELECT mana_ai.change_horizon(make_interval(secs => $1::float8))",
                &[&margin_secs],
            )
            .await?
            .get(0);
        drop(c);
        let mut stats = RefreshStats {
            position: Some(from),
            ..Default::default()
        };
        while from < horizon {
            let c = self.client().await?;
            let to: DateTime<Utc> = c
                .query_one(
                    "SELECT mana_ai.change_batch_end($1, $2, $3)",
                    &[&from, &horizon, &batch_rows],
                )
                .await?
                .get(0);
            let to = to.clamp(from, horizon);
            let changed = c
                .query(
                    "SELECT user_id, table_name, record_id FROM mana_ai.changed_ai_records($1, $2)",
                    &[&from, &to],
                )
                .await?;
            drop(c);
            let keys: Vec<Key> = changed
                .iter()
                .map(|r| Key {
                    user_id: r.get(0),
                    table: r.get(1),
                    record_id: r.get(2),
                })
                .collect();
            self.apply_batch(&keys, from, to, &mut stats).await?;
            stats.batches += 1;
            if to <= from {
                break; // defensive: no progress possible
            }
            from = to;
            stats.position = Some(from);
        }
        Ok(stats)
    }

    async fn apply_batch(
        &self,
        keys: &[Key],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        stats: &mut RefreshStats,
    ) -> Result<(), StoreError> {
        let mut by_user: BTreeMap<&str, Vec<&Key>> = BTreeMap::new();
        for k in keys {
            by_user.entry(k.user_id.as_str()).or_default().push(k);
        }
        let Some(first_user) = by_user.keys().next().copied() else {
            // Nothing changed in [from, to): just move the cursor.
            let c = self.client().await?;
            write_cursor(&c, to).await?;
            return Ok(());
        };
        let tx = self.begin_user(first_user).await?;
        let rows = read_rows_per_user(&tx, &by_user, from, to).await?;
        let existing = load_existing(&tx, keys).await?;

        let mut mission_writes = Vec::new();
        let mut agent_writes = Vec::new();
        for key in keys {
            let Some(key_rows) = rows.get(key) else {
                continue;
            };
            let prior = existing.get(key);
            let mut state = match prior {
                Some(e) if e.deleted => RecordState::Deleted,
                Some(e) => RecordState::from_snapshot(&e.record),
                None => RecordState::Absent,
            };
            let mut last_at = DateTime::<Utc>::UNIX_EPOCH;
            for (row, at) in key_rows {
                state.apply(row);
                last_at = last_at.max(*at);
            }
            stats.rows_applied += key_rows.len();
            let deleted = state.is_deleted();
            let record = state
                .to_record(&key.record_id)
                .unwrap_or_else(|| serde_json::json!({ "id": key.record_id, "__deleted": true }));
            if matches!(state, RecordState::Absent) {
                continue;
            }
            match prior {
                Some(e) if e.deleted == deleted && e.record == record => {
                    stats.unchanged_snapshots += 1;
                    continue;
                }
                Some(_) => stats.updated_snapshots += 1,
                None => stats.new_snapshots += 1,
            }
            let write = SnapshotWrite {
                user_id: key.user_id.clone(),
                id: key.record_id.clone(),
                record,
                deleted,
                last_at,
            };
            if key.table == MISSIONS {
                stats.missions_changed += 1;
                mission_writes.push(write);
            } else {
                agent_writes.push(write);
            }
        }
        write_missions(&tx, &mission_writes).await?;
        write_agents(&tx, &agent_writes).await?;
        write_cursor(tx.client(), to).await?;
        tx.commit().await?;
        stats.users_processed += by_user.len();
        Ok(())
    }
}

type KeyRows = HashMap<Key, Vec<(ChangeRow, DateTime<Utc>)>>;

/// Reads the batch's rows user by user, each under that user's RLS scope. The
/// statements are pipelined on one connection; every answer carries the scope it ran
/// under and is checked, so a reordering could never silently return nothing.
async fn read_rows_per_user(
    tx: &UserTx,
    by_user: &BTreeMap<&str, Vec<&Key>>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<KeyRows, StoreError> {
    let client = tx.client();
    let set_scope = client
        .prepare("SELECT set_config('app.current_user_id', $1, true)")
        .await?;
    let read = client
        .prepare(
            "SELECT current_setting('app.current_user_id', true) AS scope,
                    coalesce(json_agg(json_build_object(
                        't', s.table_name, 'r', s.record_id, 'op', s.op, 'd', s.data,
                        'm', s.field_meta, 'at', s.created_at)), '[]'::json) AS rows
               FROM sync_changes s
              WHERE s.user_id = $1 AND s.app_id = 'ai'
                AND s.table_name IN ('aiMissions', 'agents')
                AND s.record_id = ANY($2)
                AND s.created_at >= $3 AND s.created_at < $4",
        )
        .await?;
    let mut futs = Vec::with_capacity(by_user.len());
    for (user, keys) in by_user {
        let ids: Vec<&str> = keys.iter().map(|k| k.record_id.as_str()).collect();
        let user = *user;
        let set_scope = &set_scope;
        let read = &read;
        futs.push(async move {
            let scope_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&user];
            let read_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&user, &ids, &from, &to];
            let scoped = client.execute(set_scope, &scope_params);
            let rows = client.query_one(read, &read_params);
            let (s, r) = futures::future::join(scoped, rows).await;
            s?;
            Ok::<_, StoreError>((user, r?))
        });
    }
    let answers = futures::future::try_join_all(futs).await?;
    let mut out: KeyRows = HashMap::new();
    for (user, row) in answers {
        let scope: Option<String> = row.get(0);
        if scope.as_deref() != Some(user) {
            return Err(StoreError::Corrupt(format!(
                "refresh read ran under scope {scope:?} instead of the requested user"
            )));
        }
        let rows: Value = row.get(1);
        let Value::Array(items) = rows else {
            return Err(StoreError::Corrupt(
                "json_agg did not return an array".into(),
            ));
        };
        for item in items {
            let table = str_field(&item, "t")?;
            let record_id = str_field(&item, "r")?;
            let op: Op = str_field(&item, "op")?
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("unknown op in record {record_id}")))?;
            let at_raw = str_field(&item, "at")?;
            let at = parse_pg_timestamp(&at_raw)?;
            let change = ChangeRow {
                op,
                data: item.get("d").cloned().filter(|v| !v.is_null()),
                field_meta: item.get("m").cloned().filter(|v| !v.is_null()),
                created_at: at,
            };
            out.entry(Key {
                user_id: user.to_string(),
                table,
                record_id,
            })
            .or_default()
            .push((change, at));
        }
    }
    Ok(out)
}

fn str_field(v: &Value, key: &str) -> Result<String, StoreError> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| StoreError::Corrupt(format!("row field {key} missing")))
}

/// `json_build_object` renders timestamptz like `2026-01-01T00:00:01.123456+00:00`.
fn parse_pg_timestamp(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%#z"))
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| StoreError::Corrupt(format!("unparseable created_at {s:?}")))
}

async fn load_existing(tx: &UserTx, keys: &[Key]) -> Result<HashMap<Key, Existing>, StoreError> {
    let mut out = HashMap::new();
    for (table, sql) in [
        (
            MISSIONS,
            "SELECT s.user_id, s.mission_id, s.record, s.deleted
               FROM mana_ai.mission_snapshots s
               JOIN unnest($1::text[], $2::text[]) AS k(u, r) ON s.user_id = k.u AND s.mission_id = k.r",
        ),
        (
            AGENTS,
            "SELECT s.user_id, s.agent_id, s.record, s.deleted
               FROM mana_ai.agent_snapshots s
               JOIN unnest($1::text[], $2::text[]) AS k(u, r) ON s.user_id = k.u AND s.agent_id = k.r",
        ),
    ] {
        let (users, ids): (Vec<&str>, Vec<&str>) = keys
            .iter()
            .filter(|k| k.table == table)
            .map(|k| (k.user_id.as_str(), k.record_id.as_str()))
            .unzip();
        if users.is_empty() {
            continue;
        }
        for row in tx.client().query(sql, &[&users, &ids]).await? {
            out.insert(
                Key {
                    user_id: row.get(0),
                    table: table.to_string(),
                    record_id: row.get(1),
                },
                Existing {
                    record: row.get(2),
                    deleted: row.get(3),
                },
            );
        }
    }
    Ok(out)
}

struct SnapshotWrite {
    user_id: String,
    id: String,
    record: Value,
    deleted: bool,
    last_at: DateTime<Utc>,
}

async fn write_missions(tx: &UserTx, writes: &[SnapshotWrite]) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Ok(());
    }
    let users: Vec<&str> = writes.iter().map(|w| w.user_id.as_str()).collect();
    let ids: Vec<&str> = writes.iter().map(|w| w.id.as_str()).collect();
    let records: Vec<&Value> = writes.iter().map(|w| &w.record).collect();
    let deleted: Vec<bool> = writes.iter().map(|w| w.deleted).collect();
    let last: Vec<DateTime<Utc>> = writes.iter().map(|w| w.last_at).collect();
    let states: Vec<Option<&str>> = writes
        .iter()
        .map(|w| w.record.get("state").and_then(Value::as_str))
        .collect();
    let next: Vec<Option<DateTime<Utc>>> = writes
        .iter()
        .map(|w| {
            w.record
                .get("nextRunAt")
                .and_then(Value::as_str)
                .and_then(mana_ai_core::iso::parse_iso)
        })
        .collect();
    let agents: Vec<Option<&str>> = writes
        .iter()
        .map(|w| w.record.get("agentId").and_then(Value::as_str))
        .collect();
    tx.client()
        .execute(
            "INSERT INTO mana_ai.mission_snapshots
                 (user_id, mission_id, record, last_applied_at, updated_at, deleted, state, next_run_at, agent_id)
             SELECT u, m, r, l, now(), d, s, n, a
               FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::timestamptz[], $5::bool[],
                           $6::text[], $7::timestamptz[], $8::text[]) AS t(u, m, r, l, d, s, n, a)
             ON CONFLICT (user_id, mission_id) DO UPDATE SET
                 record = EXCLUDED.record,
                 last_applied_at = GREATEST(mana_ai.mission_snapshots.last_applied_at, EXCLUDED.last_applied_at),
                 updated_at = now(), deleted = EXCLUDED.deleted, state = EXCLUDED.state,
                 next_run_at = EXCLUDED.next_run_at, agent_id = EXCLUDED.agent_id",
            &[&users, &ids, &records, &last, &deleted, &states, &next, &agents],
        )
        .await?;
    Ok(())
}

async fn write_agents(tx: &UserTx, writes: &[SnapshotWrite]) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Ok(());
    }
    let users: Vec<&str> = writes.iter().map(|w| w.user_id.as_str()).collect();
    let ids: Vec<&str> = writes.iter().map(|w| w.id.as_str()).collect();
    let records: Vec<&Value> = writes.iter().map(|w| &w.record).collect();
    let deleted: Vec<bool> = writes.iter().map(|w| w.deleted).collect();
    let last: Vec<DateTime<Utc>> = writes.iter().map(|w| w.last_at).collect();
    tx.client()
        .execute(
            "INSERT INTO mana_ai.agent_snapshots
                 (user_id, agent_id, record, last_applied_at, updated_at, deleted)
             SELECT u, a, r, l, now(), d
               FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::timestamptz[], $5::bool[]) AS t(u, a, r, l, d)
             ON CONFLICT (user_id, agent_id) DO UPDATE SET
                 record = EXCLUDED.record,
                 last_applied_at = GREATEST(mana_ai.agent_snapshots.last_applied_at, EXCLUDED.last_applied_at),
                 updated_at = now(), deleted = EXCLUDED.deleted",
            &[&users, &ids, &records, &last, &deleted],
        )
        .await?;
    Ok(())
}

async fn write_cursor(c: &tokio_postgres::Client, to: DateTime<Utc>) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO mana_ai.refresh_cursor (stream, position, updated_at) VALUES ($1, $2, now())
         ON CONFLICT (stream) DO UPDATE SET position = GREATEST(mana_ai.refresh_cursor.position, EXCLUDED.position),
                                            updated_at = now()",
        &[&CURSOR_STREAM, &to],
    )
    .await?;
    Ok(())
}
