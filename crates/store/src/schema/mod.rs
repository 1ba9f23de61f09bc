//! Schema management: the `mana_ai` schema (idempotent, versioned migration), the
//! privileged change-discovery functions, and — for dev and tests only — the
//! `sync_changes` table that normally belongs to the sync server.
//!
//! Two roles are involved:
//! * the **migration role** (superuser or `BYPASSRLS` + `pg_read_all_stats`) owns the
//!   `SECURITY DEFINER` functions that let the service discover *which* records changed
//!   across users without reading their contents;
//! * the **service role** (ordinary, no `BYPASSRLS`) does everything else, always inside
//!   a `withUser` scope when it touches a user's rows — a [`crate::UserTx`], or for the
//!   refresh's bulk read the `SECURITY INVOKER` function `mana_ai.read_ai_rows`, which
//!   sets that scope per user inside the database (row-level security stays in force).
//!
//! When both are the same role (the original's single-DSN deployment) the migration
//! still works if that role is privileged; if it is not, [`verify_discovery`] fails boot
//! with a clear message instead of letting the service silently see nothing.
//!
//! # Migrations
//! The schema is built by numbered migrations ([`MIGRATIONS`], in `migrations.rs`),
//! recorded in `mana_ai.schema_migrations` with name, checksum and time ([`status`]).
//! Applying them ([`migrate_with`], in `apply.rs`) is serialised across instances by an
//! advisory lock waited for a bounded time, runs each migration in one transaction under
//! `lock_timeout`, builds indexes on `sync_changes` concurrently outside a transaction,
//! and does nothing at all when the database is current. Boot compares versions first
//! ([`read_state`] → [`Compatibility`]): current → no DDL; behind → migrate (or fail with
//! what to run); ahead → refuse.
//!
//! **Adding a migration** is one entry at the end of [`MIGRATIONS`] (in `migrations.rs`)
//! plus its SQL files under `schema/<NNNN>/`:
//!
//! ```text
//! Migration { version: 2, name: "lease-grace", steps: &[
//!     Step::Sql { what: "claim with grace", sql: include_str!("0002/lease.sql") },
//!     Step::Grants { what: "grants", sql: include_str!("0002/lease_grants.sql") },
//! ] },
//! ```
//!
//! A `<topic>.sql` written for the old "one more `run(...)` at the end of
//! `migrate_locked`" pattern becomes such an entry: its DDL a [`Step::Sql`], the part that
//! uses `{role}` a [`Step::Grants`], an index on `sync_changes` a
//! [`Step::ConcurrentIndex`] (one statement). Steps must be idempotent (a crash before the
//! migration is recorded re-runs it). Then pin its checksum in the `migrations.rs` test.
//!
//! Migration 1 is the schema as it stood when numbering began, frozen in `schema/0001/`:
//! `tables.sql` (the `mana_ai` tables), `runs.sql` (claim and write-back functions),
//! `budget.sql` (token reservation), `backfill.sql` (derived columns of older rows),
//! `discovery.sql` and `read.sql` (change discovery and the refresh read), `audit.sql`
//! (audit hardening), `grants.sql` / `audit_grants.sql` (the service role's privileges)
//! and `sync_changes_index.sql` (built concurrently). `sync_changes.sql` here is for dev
//! and tests only. Values the SQL needs from Rust — lock keys ([`crate::locks`]), the
//! default agent id (core), the service role — are formatted in by [`render`].

mod apply;
mod migrations;
mod status;

pub use apply::{migrate_with, MigrateOptions, DEFAULT_DDL_LOCK_TIMEOUT, DEFAULT_LOCK_WAIT};
pub use migrations::{Migration, Step, LATEST_VERSION, MIGRATIONS};
pub use status::{read_state, AppliedMigration, Compatibility, SchemaState};

use mana_ai_core::records::DEFAULT_AGENT_ID;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::{locks, Store, StoreError};

/// DDL of `sync_changes` exactly as the sync server creates it (data-model §1.1).
/// Only `mana-ai dev` and the tests run this; in production the sync server owns it.
pub const SYNC_CHANGES_DDL: &str = include_str!("sync_changes.sql");

/// The schema version this binary brings (its newest migration).
pub const SCHEMA_VERSION: i32 = LATEST_VERSION;

/// `sql` with its placeholders replaced: `{claim_seed}` ([`locks::CLAIM_SEED`]),
/// `{default_agent}` (core's default agent id, quoted) and, when given, `{role}` (the
/// quoted service role).
pub(crate) fn render(sql: &str, role: Option<&str>) -> String {
    let sql = sql
        .replace("{claim_seed}", &locks::CLAIM_SEED.to_string())
        .replace("{default_agent}", &quote_literal(DEFAULT_AGENT_ID));
    match role {
        Some(role) => sql
            .replace("{role}", &quote_ident(role))
            .replace("{role_literal}", &quote_literal(role)),
        None => sql,
    }
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Creates `sync_changes` exactly as the sync server does. Dev and tests only.
pub async fn create_sync_changes_for_dev(client: &Client) -> Result<(), StoreError> {
    run(client, SYNC_CHANGES_DDL, "create sync_changes (dev)").await
}

/// Applies the pending migrations on `client` (which should be the migration role) with
/// the default bounds; `service_role`, when given and not the connected role, is granted
/// the least privileges it needs. Answers the versions applied. See [`migrate_with`].
pub async fn migrate(client: &Client, service_role: Option<&str>) -> Result<Vec<i32>, StoreError> {
    let opts = MigrateOptions {
        service_role: service_role.map(str::to_string),
        ..MigrateOptions::default()
    };
    migrate_with(client, &opts).await
}

/// Whether the connected role can run the migration itself: a superuser, or a member of
/// the role that owns `sync_changes` (the index and the discovery functions need that).
pub async fn can_migrate(client: &Client) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            "SELECT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user), false)
                 OR coalesce((SELECT pg_has_role(current_user, c.relowner, 'USAGE')
                                FROM pg_class c WHERE c.oid = to_regclass('public.sync_changes')), false)",
            &[],
        )
        .await
        .map_err(|e| StoreError::migration("check the role's privileges", e))?;
    Ok(row.get(0))
}

/// Sets the decrypt-audit retention the argument-less `mana_ai.prune_decrypt_audit()`
/// applies (`None`: keep forever). Run by the migration role at boot, from
/// `MANA_AI_AUDIT_RETENTION_DAYS`; the service role cannot change it. Fewer than
/// [`crate::audit::MIN_RETENTION_DAYS`] days is refused.
pub async fn set_audit_retention(client: &Client, days: Option<u32>) -> Result<(), StoreError> {
    let days = match days {
        None => None,
        Some(d) if d < crate::audit::MIN_RETENTION_DAYS => {
            return Err(StoreError::Refused(
                "audit retention below the minimum of 7 days",
            ))
        }
        Some(d) => Some(
            i32::try_from(d).map_err(|_| StoreError::Refused("audit retention out of range"))?,
        ),
    };
    client
        .execute(
            "INSERT INTO mana_ai.audit_retention (singleton, days) VALUES (true, $1)
             ON CONFLICT (singleton) DO UPDATE SET days = EXCLUDED.days, updated_at = now()",
            &[&days],
        )
        .await
        .map_err(|e| StoreError::migration("set audit retention", e))?;
    Ok(())
}

/// Checks, as the service role, that change discovery can really see across users:
/// the owner of `mana_ai.changed_ai_records` must bypass row-level security, and the
/// owner of `mana_ai.change_horizon` must be able to read other sessions' start times.
/// Without this check a non-privileged deployment would see zero missions, silently.
pub async fn verify_discovery(client: &Client) -> Result<(), StoreError> {
    let row = client
        .query_opt(
            "SELECT r.rolname::text, (r.rolsuper OR r.rolbypassrls) AS bypass,
                    (r.rolsuper OR pg_has_role(r.oid, 'pg_read_all_stats', 'MEMBER')) AS stats
               FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
              WHERE p.oid = to_regprocedure('mana_ai.changed_ai_records(timestamptz,timestamptz)')",
            &[],
        )
        .await
        .map_err(|e| StoreError::migration("verify discovery", e))?;
    let Some(row) = row else {
        return Err(StoreError::Config(
            "mana_ai.changed_ai_records is missing: the migration did not run".into(),
        ));
    };
    let decode = |e| StoreError::migration("verify discovery", e);
    let owner: String = row.try_get(0).map_err(decode)?;
    let bypass: bool = row.try_get(1).map_err(decode)?;
    let stats: bool = row.try_get(2).map_err(decode)?;
    if !bypass {
        return Err(StoreError::Config(format!(
            "change discovery is owned by role {owner:?}, which is subject to row-level security on sync_changes and would see no missions; run the migration as a superuser or BYPASSRLS role (MANA_AI_MIGRATION_DATABASE_URL)"
        )));
    }
    if !stats {
        return Err(StoreError::Config(format!(
            "change discovery is owned by role {owner:?}, which cannot read other sessions' transaction start times; grant it pg_read_all_stats or migrate as a superuser"
        )));
    }
    Ok(())
}

/// Creates (or updates the password of) an ordinary login role for the service:
/// NOSUPERUSER, NOBYPASSRLS. Dev and tests use it to run as least privilege.
pub async fn ensure_service_role(
    admin: &Client,
    role: &str,
    password: &str,
) -> Result<(), StoreError> {
    let exists = admin
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .map_err(|e| StoreError::migration("look up role", e))?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    let sql = format!(
        "{verb} ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD {}",
        quote_ident(role),
        quote_literal(password)
    );
    let mut attempt = 0;
    loop {
        attempt += 1;
        match admin.batch_execute(&sql).await {
            Ok(()) => return Ok(()),
            // Two processes (test binaries, two instances booting) may race to create the
            // same cluster-wide role.
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => return Ok(()),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => return Ok(()),
            // Or to alter it: PostgreSQL then fails one of them with an internal error
            // ("tuple concurrently updated"); the other's update is done, so try again.
            Err(e)
                if attempt < ROLE_UPDATE_ATTEMPTS
                    && e.code() == Some(&SqlState::INTERNAL_ERROR)
                    && e.as_db_error()
                        .is_some_and(|d| d.message().contains("concurrently updated")) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis((10 * attempt).min(100))).await;
            }
            Err(e) => return Err(StoreError::migration("create service role", e)),
        }
    }
}

/// Tries of the service role's create/alter when another process updates it at once.
const ROLE_UPDATE_ATTEMPTS: u64 = 20;

/// Runs one migration step (a batch of statements), naming it in the error.
pub(crate) async fn run(client: &Client, sql: &str, step: &str) -> Result<(), StoreError> {
    client
        .batch_execute(sql)
        .await
        .map_err(|e| StoreError::migration(step, e))
}

impl Store {
    /// Runs the migration using this pool's role (single-DSN deployments).
    pub async fn migrate_self(&self) -> Result<Vec<i32>, StoreError> {
        let c = self.client().await?;
        let result = migrate(&c, None).await;
        // Back to the connection's own settings before it returns to the pool.
        let _ = c
            .batch_execute("RESET lock_timeout; RESET statement_timeout; RESET idle_in_transaction_session_timeout")
            .await;
        result
    }

    /// Fails unless change discovery can see across users (see [`verify_discovery`]).
    pub async fn verify_discovery(&self) -> Result<(), StoreError> {
        let c = self.client().await?;
        verify_discovery(&c).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_fills_every_placeholder() {
        for m in MIGRATIONS {
            for step in m.steps {
                let (sql, role) = match step {
                    Step::Sql { sql, .. } | Step::ConcurrentIndex { sql, .. } => (sql, None),
                    Step::Grants { sql, .. } => (sql, Some("svc")),
                };
                let sql = render(sql, role);
                for placeholder in [
                    "{claim_seed}",
                    "{default_agent}",
                    "{role}",
                    "{role_literal}",
                ] {
                    assert!(!sql.contains(placeholder), "{placeholder} left in {sql}");
                }
            }
        }
        let runs = render(include_str!("0001/runs.sql"), None);
        assert!(runs.contains(&format!(", {})", locks::CLAIM_SEED)));
        assert!(render(include_str!("0001/backfill.sql"), None).contains("'legacy:ai-default'"));
    }
}
