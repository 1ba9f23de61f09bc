//! The SQL of `mana-ai dev` (the zero-setup local environment): creating its database in
//! a private cluster and seeding demo records as `sync_changes` rows. The `mana-ai`
//! binary decides *what* to seed (the demo records' JSON); this module owns *how* rows
//! get into `sync_changes`: one [`UserTx`](crate::UserTx) per seed, so the seed follows
//! the same `withUser` rule as every other write of a user's rows.

use serde_json::Value;

use crate::{schema, Store, StoreError};

/// A failed step of [`prepare_database`]: what was being done, and the store error.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct DevSetupError {
    /// What was being done (`"creating the mana_sync database"` …).
    pub step: &'static str,
    #[source]
    pub source: StoreError,
}

fn step(step: &'static str) -> impl FnOnce(StoreError) -> DevSetupError {
    move |source| DevSetupError { step, source }
}

/// Prepares a dev database the way a production deployment is prepared, idempotently:
/// the database `database` (created if missing), the login role `role` with `password`
/// (least privilege; the migration grants it the rest), and the sync server's change
/// table in that database. `superuser_url(db)` is the cluster superuser's URL of the
/// database named `db` (the function connects to `postgres` first).
pub async fn prepare_database(
    superuser_url: impl Fn(&str) -> String,
    database: &str,
    role: &str,
    password: &str,
) -> Result<(), DevSetupError> {
    let admin = crate::connect_once(&superuser_url("postgres"))
        .await
        .map_err(step("connecting to the private cluster as its superuser"))?;
    create_database_if_missing(&admin, database)
        .await
        .map_err(step("creating the mana_sync database"))?;
    schema::ensure_service_role(&admin, role, password)
        .await
        .map_err(step("creating the mana_ai login role"))?;
    drop(admin);
    let db = crate::connect_once(&superuser_url(database))
        .await
        .map_err(step("connecting to mana_sync as the cluster superuser"))?;
    schema::create_sync_changes_for_dev(&db)
        .await
        .map_err(step("creating sync_changes"))?;
    Ok(())
}

/// Creates the database `name` on the cluster `admin` is connected to (as a superuser),
/// unless it exists. Returns whether this call created it; another creator winning the
/// race (`42P04 duplicate_database`) counts as "already there".
pub async fn create_database_if_missing(
    admin: &tokio_postgres::Client,
    name: &str,
) -> Result<bool, StoreError> {
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if exists {
        return Ok(false);
    }
    let sql = format!("CREATE DATABASE {}", schema::quote_ident(name));
    match admin.batch_execute(&sql).await {
        Ok(()) => Ok(true),
        Err(e) if e.code().map(|c| c.code()) == Some("42P04") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// One record to seed: where it goes and its JSON (`data`, with `id` inside).
#[derive(Debug, Clone, Copy)]
pub struct SeedRecord<'a> {
    pub app_id: &'a str,
    pub table_name: &'a str,
    pub record_id: &'a str,
    pub data: &'a Value,
}

/// Where seeded rows say they come from, as the web app stamps its own writes.
#[derive(Debug, Clone, Copy)]
pub struct SeedOrigin<'a> {
    /// `client_id` (the web app writes its device id there).
    pub client_id: &'a str,
    /// `actor` JSON (`{"kind":"user","principalId":…}`).
    pub actor: &'a Value,
    /// `space_id` of every row.
    pub space_id: &'a str,
}

const SEED_SQL: &str = "INSERT INTO public.sync_changes
   (app_id, table_name, record_id, user_id, op, data, field_meta, client_id,
    schema_version, actor, origin, space_id)
 SELECT $1, $2, $3, $4, 'insert', $5, '{}'::jsonb, $6, 1, $7, 'user', $8
  WHERE NOT EXISTS (
    SELECT 1 FROM public.sync_changes
     WHERE user_id = $4 AND app_id = $1 AND table_name = $2 AND record_id = $3)";

/// Inserts every record as an `insert` row of `user_id`, skipping each record that
/// already has a row (any op): idempotent, and it never overwrites later edits. Runs in
/// one `withUser(user_id)` transaction, serialised across seeders by [`locks::DEV_SEED`](crate::locks::DEV_SEED).
/// Returns, per record in order, whether a row was inserted now.
///
/// `store` must be able to insert rows for `user_id` (`mana-ai dev` seeds as the cluster
/// superuser, before the service role has its grants).
pub async fn seed_records(
    store: &Store,
    user_id: &str,
    origin: &SeedOrigin<'_>,
    records: &[SeedRecord<'_>],
) -> Result<Vec<bool>, StoreError> {
    let tx = store.begin_user(user_id).await?;
    tx.client()
        .execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&crate::locks::DEV_SEED],
        )
        .await?;
    let mut inserted = Vec::with_capacity(records.len());
    for rec in records {
        let n = tx
            .client()
            .execute(
                SEED_SQL,
                &[
                    &rec.app_id,
                    &rec.table_name,
                    &rec.record_id,
                    &tx.user_id(),
                    rec.data,
                    &origin.client_id,
                    origin.actor,
                    &origin.space_id,
                ],
            )
            .await?;
        inserted.push(n == 1);
    }
    tx.commit().await?;
    Ok(inserted)
}
