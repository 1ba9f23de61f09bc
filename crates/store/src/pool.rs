//! The connection pool: [`StoreConfig`], URL parsing with the session settings the
//! service relies on, one-off admin connections, and [`Store`] itself (the pool handle
//! with its liveness and shutdown methods). Each table's queries live in their own module.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::StoreError;

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
