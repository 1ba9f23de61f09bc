//! Applying the pending migrations: one instance at a time (the advisory lock
//! [`locks::MIGRATION`], waited for a bounded time), each migration in its own
//! transaction under `lock_timeout`, a concurrent index step outside of it, and the
//! migration recorded with its name and checksum once all its steps are done.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::migrations::{Migration, Step, LATEST_VERSION};
use super::status::{read_state, Compatibility};
use super::{render, run};
use crate::{locks, StoreError};

/// Default bound on waiting for another instance's migration (the advisory lock).
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(60);
/// Default `lock_timeout` of migration DDL: a statement that cannot get its table lock
/// within this time fails (and the migration with it) instead of queueing every other
/// statement on that table behind it.
pub const DEFAULT_DDL_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a waiting migrator retries the advisory lock.
const LOCK_POLL: Duration = Duration::from_millis(100);

/// Bookkeeping columns added to `mana_ai.schema_migrations` (created by migration 1 with
/// `version` and `applied_at` only, as every earlier build did).
const BOOKKEEPING_DDL: &str = "CREATE SCHEMA IF NOT EXISTS mana_ai;
CREATE TABLE IF NOT EXISTS mana_ai.schema_migrations (
  version INT PRIMARY KEY,
  applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE mana_ai.schema_migrations
  ADD COLUMN IF NOT EXISTS name TEXT,
  ADD COLUMN IF NOT EXISTS checksum TEXT,
  ADD COLUMN IF NOT EXISTS applied_by TEXT;";

/// How a migration run behaves.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// The service role to grant privileges to (skipped when `None` or when it is the
    /// connected role itself).
    pub service_role: Option<String>,
    /// Bound on waiting for another instance's migration.
    pub lock_wait: Duration,
    /// `lock_timeout` of every DDL statement.
    pub ddl_lock_timeout: Duration,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            service_role: None,
            lock_wait: DEFAULT_LOCK_WAIT,
            ddl_lock_timeout: DEFAULT_DDL_LOCK_TIMEOUT,
        }
    }
}

/// Applies every pending migration; answers the versions applied (empty: the schema was
/// current and no DDL ran). Refuses a database newer than this binary.
pub async fn migrate_with(client: &Client, opts: &MigrateOptions) -> Result<Vec<i32>, StoreError> {
    acquire_lock(client, opts.lock_wait).await?;
    let result = migrate_locked(client, opts).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&locks::MIGRATION])
        .await;
    result
}

/// Takes the session advisory lock, polling with `pg_try_advisory_lock` (a waiter holds
/// no snapshot between polls, so it never delays the other instance's concurrent index
/// build), and gives up after `wait`.
async fn acquire_lock(client: &Client, wait: Duration) -> Result<(), StoreError> {
    let deadline = Instant::now() + wait;
    loop {
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&locks::MIGRATION])
            .await
            .map_err(|e| StoreError::migration("lock", e))?
            .get(0);
        if got {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Schema(format!(
                "another instance has been migrating the schema for more than {} ms (MANA_AI_MIGRATION_LOCK_WAIT_MS); try again when it is done",
                wait.as_millis()
            )));
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
}

async fn migrate_locked(client: &Client, opts: &MigrateOptions) -> Result<Vec<i32>, StoreError> {
    check_sync_changes(client).await?;
    // Read under the lock: another instance may just have applied what was pending.
    let state = read_state(client).await?;
    if let Compatibility::Ahead { database } = state.compatibility() {
        return Err(ahead_error(database));
    }
    let pending = state.pending();
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let ms = opts.ddl_lock_timeout.as_millis().max(1);
    // Session-wide: the concurrent index steps run outside any transaction. No
    // statement_timeout: an index build takes as long as the table needs.
    run(
        client,
        &format!("SET lock_timeout = {ms}; SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0"),
        "session settings",
    )
    .await?;
    run(client, BOOKKEEPING_DDL, "schema_migrations bookkeeping").await?;
    let role = service_role_to_grant(client, opts.service_role.as_deref()).await?;
    let mut applied = Vec::new();
    for m in pending {
        apply(client, m, role.as_deref()).await?;
        tracing::info!(version = m.version, name = m.name, "migration applied");
        applied.push(m.version);
    }
    Ok(applied)
}

/// The one line an instance too old for its database stops with.
pub(crate) fn ahead_error(database: i32) -> StoreError {
    StoreError::Schema(format!(
        "the database schema is at version {database}, newer than this binary's {LATEST_VERSION}: refusing to start (an older mana-ai must not rewrite a newer schema); run a newer mana-ai"
    ))
}

async fn check_sync_changes(client: &Client) -> Result<(), StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('public.sync_changes') IS NOT NULL", &[])
        .await
        .map_err(|e| StoreError::migration("check sync_changes", e))?
        .get(0);
    if exists {
        Ok(())
    } else {
        Err(StoreError::Config(
            "table public.sync_changes does not exist: point SYNC_DATABASE_URL at the mana_sync database (or use `mana-ai dev`)".into(),
        ))
    }
}

/// The role to grant to: `None` when none is configured or it is the connected role.
async fn service_role_to_grant(
    client: &Client,
    role: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let Some(role) = role else { return Ok(None) };
    let me: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(|e| StoreError::migration("current_user", e))?
        .get(0);
    Ok((me != role).then(|| role.to_string()))
}

/// One migration: its transactional steps in one transaction, then its concurrent index
/// steps, then its record (in the transaction when it has no concurrent steps).
async fn apply(client: &Client, m: &Migration, role: Option<&str>) -> Result<(), StoreError> {
    let concurrent = m
        .steps
        .iter()
        .any(|s| matches!(s, Step::ConcurrentIndex { .. }));
    run(client, "BEGIN", "begin").await?;
    let tx = async {
        for step in m.steps {
            match step {
                Step::Sql { what, sql } => run(client, &render(sql, None), what).await?,
                Step::Grants { what, sql } => {
                    if let Some(role) = role {
                        run(client, &render(sql, Some(role)), what).await?;
                    }
                }
                Step::ConcurrentIndex { .. } => {}
            }
        }
        if !concurrent {
            record(client, m).await?;
        }
        run(client, "COMMIT", "commit").await
    };
    if let Err(e) = tx.await {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(e);
    }
    if concurrent {
        for step in m.steps {
            if let Step::ConcurrentIndex { name, sql } = step {
                concurrent_index(client, name, sql).await?;
            }
        }
        record(client, m).await?;
    }
    Ok(())
}

async fn record(client: &Client, m: &Migration) -> Result<(), StoreError> {
    let by = format!("mana-ai {}", env!("CARGO_PKG_VERSION"));
    client
        .execute(
            "INSERT INTO mana_ai.schema_migrations (version, name, checksum, applied_by, applied_at)
             VALUES ($1, $2, $3, $4, now())
             ON CONFLICT (version) DO UPDATE
               SET name = EXCLUDED.name, checksum = EXCLUDED.checksum,
                   applied_by = EXCLUDED.applied_by, applied_at = EXCLUDED.applied_at",
            &[&m.version, &m.name, &m.checksum(), &by],
        )
        .await
        .map_err(|e| StoreError::migration("record the migration", e))?;
    Ok(())
}

/// Builds index `name` concurrently unless a valid one exists; drops an INVALID leftover
/// (an interrupted concurrent build) concurrently first.
async fn concurrent_index(client: &Client, name: &str, sql: &str) -> Result<(), StoreError> {
    let valid: Option<bool> = client
        .query_opt(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relname = $1 AND n.nspname = 'public'",
            &[&name],
        )
        .await
        .map_err(|e| StoreError::migration("look up the index", e))?
        .map(|r| r.get(0));
    match valid {
        Some(true) => return Ok(()),
        Some(false) => {
            tracing::warn!(
                index = name,
                "dropping an invalid index left by an interrupted build"
            );
            let drop = format!(
                "DROP INDEX CONCURRENTLY IF EXISTS public.{}",
                super::quote_ident(name)
            );
            run(client, &drop, "drop an invalid index").await?;
        }
        None => {}
    }
    run(client, sql, "concurrent index on sync_changes").await
}
