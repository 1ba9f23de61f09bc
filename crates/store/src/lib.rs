//! The only crate with SQL. It owns the connection pool, the schema migration, the
//! RLS-scoped `withUser` transaction, the incremental snapshot refresh and every query
//! the runner and the HTTP layer need.
//!
//! Architecture invariant: every statement that reads or writes a user's rows in
//! `sync_changes` or `mana_ai.decrypt_audit` runs inside a [`UserTx`], which sets
//! `app.current_user_id` transaction-locally and refuses an empty user id — or is one of
//! the `SECURITY INVOKER` functions that apply the same rule themselves: the one-statement
//! write-back `mana_ai.write_back_run`, and the refresh's bulk read `mana_ai.read_ai_rows`
//! (scoped per user, so row-level security decides what it sees). The only
//! cross-user reads go through the `SECURITY DEFINER` discovery functions of
//! [`schema`], which return ids and positions, never contents.
//!
//! Hot statements (the per-mission ones) are prepared once per pooled connection with
//! `prepare_cached`: parsed once, executed in one round trip.

pub mod audit;
pub mod audit_read;
pub mod budget;
pub mod dev;
pub mod records;
pub mod refresh;
pub mod research;
pub mod runs;
pub mod schema;
pub mod snapshots;
#[cfg(feature = "testkit")]
pub mod testkit;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

pub use audit::{AuditStatus, DecryptAuditEntry};
pub use audit_read::AuditRow;
pub use budget::{BudgetUse, PruneStats, Reservation, ReserveRequest};
pub use records::REPLAY_ROW_LIMIT;
pub use refresh::{RefreshOptions, RefreshOutcome, RefreshStats};
pub use research::{NewResearchJob, RemovedResearchJob, ResearchJob, ResearchJobState};
pub use runs::{AgentSlot, Claim, ClaimRequest, WriteBack, WriteOutcome};
pub use snapshots::{AgentSnapshot, DueKey, DueMission, MissionSnapshot};

/// Errors of the store. Messages never contain connection passwords.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database configuration: {0}")]
    Config(String),
    #[error("database unavailable: {0}")]
    Pool(String),
    #[error(
        "migration step '{step}' failed: {}{}",
        db_message(cause),
        migration_hint(cause)
    )]
    Migration {
        step: String,
        cause: tokio_postgres::Error,
    },
    #[error("database error: {}", db_message(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("refused: {0}")]
    Refused(&'static str),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// The server's message (with detail and hint) instead of tokio-postgres' bare "db error".
pub fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("; detail: {d}"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            s
        }
        None => e.to_string(),
    }
}

fn migration_hint(e: &tokio_postgres::Error) -> &'static str {
    match e.code() {
        Some(c) if *c == tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE => {
            " — the role in SYNC_DATABASE_URL may not create the mana_ai schema or the change-discovery functions; set MANA_AI_MIGRATION_DATABASE_URL to a superuser (or BYPASSRLS owner) URL"
        }
        _ => "",
    }
}

impl StoreError {
    pub(crate) fn migration(step: &str, source: tokio_postgres::Error) -> Self {
        StoreError::Migration {
            step: step.to_string(),
            cause: source,
        }
    }

    /// True for errors worth retrying as a whole transaction (serialization failure,
    /// deadlock, lost connection).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Pool(_) => true,
            StoreError::Db(e) => {
                e.is_closed()
                    || matches!(
                        e.code(),
                        Some(&tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE)
                            | Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED)
                    )
            }
            _ => false,
        }
    }
}

/// Connection settings for [`Store::connect`].
#[derive(Clone)]
pub struct StoreConfig {
    pub url: String,
    pub max_connections: usize,
    pub connect_timeout: Duration,
}

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 8,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Parses a libpq-style URL, adding the session settings the service relies on:
/// custom plans always (the per-user queries must stay selective even for the shared
/// `legacy:ai-default` agent id) and an `application_name`. Custom plans stay forced
/// for prepared statements too: a cached statement skips the parse (and a round trip),
/// and is planned for its actual parameters on each execution, which for these
/// primary-key and per-user index lookups costs microseconds.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut cfg: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
        StoreError::Config(format!("invalid database URL: {e}"))
    })?;
    if cfg.get_application_name().is_none() {
        cfg.application_name("mana-ai");
    }
    let opts = cfg.get_options().unwrap_or("").to_string();
    cfg.options(format!("{opts} -c plan_cache_mode=force_custom_plan").trim());
    Ok(cfg)
}

/// The role name a URL logs in as (used to grant the service role its privileges).
pub fn url_user(url: &str) -> Option<String> {
    parse_url(url).ok()?.get_user().map(str::to_string)
}

/// Opens one plain connection (migrations, admin tasks, tests).
pub async fn connect_once(url: &str) -> Result<tokio_postgres::Client, StoreError> {
    let cfg = parse_url(url)?;
    let (client, conn) = cfg
        .connect(NoTls)
        .await
        .map_err(|e| StoreError::Pool(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "admin connection closed");
        }
    });
    Ok(client)
}

/// Handle to the database: a bounded connection pool.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    /// Builds the pool. Connections are opened lazily; call [`Store::ping`] to check.
    pub fn connect(cfg: &StoreConfig) -> Result<Self, StoreError> {
        let mut pg = parse_url(&cfg.url)?;
        pg.connect_timeout(cfg.connect_timeout);
        let mgr = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(cfg.max_connections.max(1))
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(cfg.connect_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Self { pool })
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))
    }

    /// A cheap liveness check for `/health`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Opens a `withUser` transaction for `user_id`.
    pub async fn begin_user(&self, user_id: &str) -> Result<UserTx, StoreError> {
        UserTx::begin(self.client().await?, user_id).await
    }

    /// Runs the migration using this pool's role (single-DSN deployments).
    pub async fn migrate_self(&self) -> Result<(), StoreError> {
        let c = self.client().await?;
        schema::migrate(&c, None).await
    }

    /// Fails unless change discovery can see across users (see [`schema::verify_discovery`]).
    pub async fn verify_discovery(&self) -> Result<(), StoreError> {
        let c = self.client().await?;
        schema::verify_discovery(&c).await
    }

    /// Closes the pool: no new connections; idle ones are dropped.
    pub fn close(&self) {
        self.pool.close();
    }

    /// (in use, idle) connections, for diagnostics.
    pub fn pool_status(&self) -> (usize, usize) {
        let s = self.pool.status();
        (s.size.saturating_sub(s.available), s.available)
    }
}

/// A transaction scoped to one user for row-level security: `BEGIN`, then
/// `set_config('app.current_user_id', <user>, true)`. Commit explicitly; dropping it
/// without commit discards the connection, which rolls the transaction back.
pub struct UserTx {
    client: Option<deadpool_postgres::Object>,
    user_id: String,
}

impl UserTx {
    async fn begin(client: deadpool_postgres::Object, user_id: &str) -> Result<Self, StoreError> {
        if user_id.is_empty() {
            return Err(StoreError::Refused("withUser: empty userID"));
        }
        client.batch_execute("BEGIN").await?;
        let tx = UserTx {
            client: Some(client),
            user_id: user_id.to_string(),
        };
        tx.client()
            .execute(
                "SELECT set_config('app.current_user_id', $1, true)",
                &[&user_id],
            )
            .await?;
        Ok(tx)
    }

    /// The user this transaction is scoped to.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The underlying client, inside the open transaction.
    pub fn client(&self) -> &tokio_postgres::Client {
        // Invariant: `client` is only taken by commit/rollback/drop, which consume self.
        self.client
            .as_ref()
            .map(|c| &***c)
            .unwrap_or_else(|| unreachable!())
    }

    /// Switches the scope to another user inside the same transaction (batch refresh).
    pub async fn switch_user(&mut self, user_id: &str) -> Result<(), StoreError> {
        if user_id.is_empty() {
            return Err(StoreError::Refused("withUser: empty userID"));
        }
        self.client()
            .execute(
                "SELECT set_config('app.current_user_id', $1, true)",
                &[&user_id],
            )
            .await?;
        self.user_id = user_id.to_string();
        Ok(())
    }

    pub async fn commit(mut self) -> Result<(), StoreError> {
        if let Some(c) = self.client.take() {
            if let Err(e) = c.batch_execute("COMMIT").await {
                drop(deadpool_postgres::Object::take(c));
                return Err(e.into());
            }
        }
        Ok(())
    }

    pub async fn rollback(mut self) -> Result<(), StoreError> {
        if let Some(c) = self.client.take() {
            if let Err(e) = c.batch_execute("ROLLBACK").await {
                drop(deadpool_postgres::Object::take(c));
                return Err(e.into());
            }
        }
        Ok(())
    }
}

impl Drop for UserTx {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            // Detach from the pool and close: the server rolls the transaction back.
            drop(deadpool_postgres::Object::take(c));
        }
    }
}
