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
//! The SQL lives next to this file, one `.sql` file per part, each with its own comments:
//! `tables.sql` (the `mana_ai` tables), `runs.sql` (claim and write-back functions),
//! `budget.sql` (token reservation), `backfill.sql` (derived columns of older rows),
//! `discovery.sql` and `read.sql` (change discovery and the refresh read), `audit.sql`
//! (audit hardening), `write_back.sql` (the merging write-back's read), `grants.sql` /
//! `audit_grants.sql` / `write_back_grants.sql` (the service role's privileges)
//! and `sync_changes.sql` (dev and tests only). Values the SQL needs from Rust — lock
//! keys ([`crate::locks`]), the default agent id (core), the service role — are
//! formatted in by [`render`].

use mana_ai_core::records::DEFAULT_AGENT_ID;
use tokio_postgres::Client;

use crate::{locks, Store, StoreError};

/// DDL of `sync_changes` exactly as the sync server creates it (data-model §1.1).
/// Only `mana-ai dev` and the tests run this; in production the sync server owns it.
pub const SYNC_CHANGES_DDL: &str = include_str!("sync_changes.sql");

/// Current schema version written to `mana_ai.schema_migrations`.
pub const SCHEMA_VERSION: i32 = 1;

/// The plain part of the migration, in order: tables, the run and budget functions, the
/// backfill of older rows. Run as one batch.
const MANA_AI_PARTS: [&str; 4] = [
    include_str!("tables.sql"),
    include_str!("runs.sql"),
    include_str!("budget.sql"),
    include_str!("backfill.sql"),
];
const DISCOVERY_DDL: &str = include_str!("discovery.sql");
const READ_DDL: &str = include_str!("read.sql");
const GRANTS_DDL: &str = include_str!("grants.sql");
const AUDIT_HARDENING_DDL: &str = include_str!("audit.sql");
const AUDIT_GRANTS_DDL: &str = include_str!("audit_grants.sql");
/// The merging write-back's read (`write_back.sql`) and its grant.
const WRITE_BACK_DDL: &str = include_str!("write_back.sql");
const WRITE_BACK_GRANTS_DDL: &str = include_str!("write_back_grants.sql");

/// `sql` with its placeholders replaced: `{claim_seed}` ([`locks::CLAIM_SEED`]),
/// `{default_agent}` (core's default agent id, quoted) and, when given, `{role}` (the
/// quoted service role).
fn render(sql: &str, role: Option<&str>) -> String {
    let sql = sql
        .replace("{claim_seed}", &locks::CLAIM_SEED.to_string())
        .replace("{default_agent}", &quote_literal(DEFAULT_AGENT_ID));
    match role {
        Some(role) => sql.replace("{role}", &quote_ident(role)),
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

/// Runs the whole idempotent migration on `client` (which should be the migration
/// role). When `service_role` is given and differs from the connected role, grants it
/// the least privileges it needs. Serialised across instances by an advisory lock
/// ([`locks::MIGRATION`]).
pub async fn migrate(client: &Client, service_role: Option<&str>) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&locks::MIGRATION])
        .await
        .map_err(|e| StoreError::migration("lock", e))?;
    let result = migrate_locked(client, service_role).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&locks::MIGRATION])
        .await;
    result
}

async fn migrate_locked(client: &Client, service_role: Option<&str>) -> Result<(), StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('public.sync_changes') IS NOT NULL", &[])
        .await
        .map_err(|e| StoreError::migration("check sync_changes", e))?
        .get(0);
    if !exists {
        return Err(StoreError::Config(
            "table public.sync_changes does not exist: point SYNC_DATABASE_URL at the mana_sync database (or use `mana-ai dev`)".into(),
        ));
    }
    run(
        client,
        &render(&MANA_AI_PARTS.concat(), None),
        "mana_ai schema",
    )
    .await?;
    run(
        client,
        DISCOVERY_DDL,
        "change discovery (needs a role that owns sync_changes or is superuser; set MANA_AI_MIGRATION_DATABASE_URL)",
    )
    .await?;
    run(client, READ_DDL, "refresh read function").await?;
    if let Some(role) = service_role {
        grant_to_service_role(client, role, GRANTS_DDL, "grants for the service role").await?;
    }
    run(client, AUDIT_HARDENING_DDL, "decrypt audit hardening").await?;
    if let Some(role) = service_role {
        let what = "audit grants for the service role";
        grant_to_service_role(client, role, AUDIT_GRANTS_DDL, what).await?;
    }
    run(client, WRITE_BACK_DDL, "merging write-back read").await?;
    if let Some(role) = service_role {
        let what = "write-back grants for the service role";
        grant_to_service_role(client, role, WRITE_BACK_GRANTS_DDL, what).await?;
    }
    client
        .execute(
            "INSERT INTO mana_ai.schema_migrations (version) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&SCHEMA_VERSION],
        )
        .await
        .map_err(|e| StoreError::migration("record version", e))?;
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
    let owner: String = row.get(0);
    let bypass: bool = row.get(1);
    let stats: bool = row.get(2);
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
    match admin.batch_execute(&sql).await {
        Ok(()) => Ok(()),
        // Two test binaries may race to create the same cluster-wide role.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => Ok(()),
        Err(e) => Err(StoreError::migration("create service role", e)),
    }
}

/// Runs `ddl` with `{role}` replaced by the quoted service role, unless the migration runs
/// as that role itself (granting to oneself is pointless and may be refused).
async fn grant_to_service_role(
    client: &Client,
    role: &str,
    ddl: &str,
    what: &'static str,
) -> Result<(), StoreError> {
    let me: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(|e| StoreError::migration("current_user", e))?
        .get(0);
    if me != role {
        run(client, &render(ddl, Some(role)), what).await?;
    }
    Ok(())
}

/// Runs one migration step (a batch of statements), naming it in the error.
async fn run(client: &Client, sql: &str, step: &'static str) -> Result<(), StoreError> {
    client
        .batch_execute(sql)
        .await
        .map_err(|e| StoreError::migration(step, e))
}

impl Store {
    /// Runs the migration using this pool's role (single-DSN deployments).
    pub async fn migrate_self(&self) -> Result<(), StoreError> {
        let c = self.client().await?;
        migrate(&c, None).await
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
        for part in MANA_AI_PARTS
            .iter()
            .chain([&GRANTS_DDL, &AUDIT_GRANTS_DDL, &DISCOVERY_DDL, &READ_DDL])
            .chain([&WRITE_BACK_DDL, &WRITE_BACK_GRANTS_DDL])
        {
            let sql = render(part, Some("svc"));
            for placeholder in ["{claim_seed}", "{default_agent}", "{role}"] {
                assert!(!sql.contains(placeholder), "{placeholder} left in {sql}");
            }
        }
        let runs = render(MANA_AI_PARTS[1], None);
        assert!(runs.contains(&format!(", {})", locks::CLAIM_SEED)));
        assert!(render(MANA_AI_PARTS[3], None).contains("'legacy:ai-default'"));
    }
}
