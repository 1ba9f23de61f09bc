//! The connection pool: [`StoreConfig`], URL parsing with the session settings the
//! service relies on, one-off admin connections, and [`Store`] itself (the pool handle
//! with its liveness and shutdown methods). Each table's queries live in their own module.

use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod};

use crate::connect::{SocketSettings, WatchedConnect};
use crate::retry::RetryPolicy;
use crate::StoreError;

/// Default `connect_timeout` (TCP connect per host; also the pool's create timeout).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default server-side `statement_timeout` of the service's sessions.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default server-side `lock_timeout` of the service's sessions.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `idle_in_transaction_session_timeout` of the service's sessions.
pub const DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Default TCP keepalive idle time (client socket; the server's side is set alike).
pub const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Default interval between TCP keepalive probes.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Default number of unanswered keepalive probes before the peer counts as dead.
pub const DEFAULT_KEEPALIVE_RETRIES: u32 = 3;
/// Default grace beyond `statement_timeout` before the response watchdog drops a
/// connection whose server owes an answer (see [`crate::connect`]).
pub const DEFAULT_RESPONSE_GRACE: Duration = Duration::from_secs(5);
/// Default wait for a free pooled connection.
pub const DEFAULT_POOL_WAIT: Duration = Duration::from_secs(30);
/// A pooled connection unused for longer than this is checked (an empty query) before
/// it is handed out; a dead one is discarded and replaced.
pub const DEFAULT_VERIFY_IDLE: Duration = Duration::from_secs(10);

/// Connection settings for [`Store::connect`]. Every field has a documented default
/// (the constants of this module); the server reads them from `MANA_AI_DB_*` variables.
/// Not `Debug`: the URL may hold a password.
#[derive(Clone)]
pub struct StoreConfig {
    pub url: String,
    pub max_connections: usize,
    pub connect_timeout: Duration,
    /// Server-side `statement_timeout` (zero: none — the watchdog is then off too).
    pub statement_timeout: Duration,
    /// Server-side `lock_timeout` (zero: none).
    pub lock_timeout: Duration,
    /// Server-side `idle_in_transaction_session_timeout` (zero: none).
    pub idle_in_transaction_timeout: Duration,
    pub keepalive_idle: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_retries: u32,
    /// Watchdog grace: a connection is dropped when its server owes an answer for
    /// `statement_timeout + response_grace` without sending a byte.
    pub response_grace: Duration,
    pub pool_wait: Duration,
    pub verify_idle: Duration,
    /// Retries of idempotent operations on transient errors ([`crate::retry`]).
    pub retry: RetryPolicy,
}

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 8,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            idle_in_transaction_timeout: DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT,
            keepalive_idle: DEFAULT_KEEPALIVE_IDLE,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            keepalive_retries: DEFAULT_KEEPALIVE_RETRIES,
            response_grace: DEFAULT_RESPONSE_GRACE,
            pool_wait: DEFAULT_POOL_WAIT,
            verify_idle: DEFAULT_VERIFY_IDLE,
            retry: RetryPolicy::default(),
        }
    }

    /// How long one database round trip can take at most before the watchdog drops the
    /// connection (`None`: unbounded, when `statement_timeout` is zero).
    pub fn response_timeout(&self) -> Option<Duration> {
        (!self.statement_timeout.is_zero()).then(|| self.statement_timeout + self.response_grace)
    }

    fn socket(&self) -> SocketSettings {
        SocketSettings {
            connect_timeout: self.connect_timeout,
            keepalive_idle: self.keepalive_idle,
            keepalive_interval: self.keepalive_interval,
            keepalive_retries: self.keepalive_retries,
            response_timeout: self.response_timeout(),
        }
    }

    /// Server-side session settings (`-c` options; a URL's own `options` come after
    /// them and win). The server's keepalives make it end a dead client's session, and
    /// release its locks, about as fast as the client notices.
    fn session_options(&self) -> String {
        let ms = |d: Duration| d.as_millis();
        let s = self.socket();
        format!(
            "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={} \
             -c tcp_keepalives_idle={} -c tcp_keepalives_interval={} -c tcp_keepalives_count={} \
             -c tcp_user_timeout={}",
            ms(self.statement_timeout),
            ms(self.lock_timeout),
            ms(self.idle_in_transaction_timeout),
            self.keepalive_idle.as_secs().max(1),
            self.keepalive_interval.as_secs().max(1),
            self.keepalive_retries,
            ms(s.tcp_user_timeout()),
        )
    }
}

/// Socket settings of one-off connections (migrations, admin tasks): keepalives, no
/// watchdog (an index build may take long).
fn admin_socket() -> SocketSettings {
    SocketSettings {
        response_timeout: None,
        ..StoreConfig::new("").socket()
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

/// Opens one plain connection (migrations, admin tasks, tests): TCP keepalives and the
/// default connect timeout; no statement timeout and no watchdog.
pub async fn connect_once(url: &str) -> Result<tokio_postgres::Client, StoreError> {
    let cfg = parse_url(url)?;
    let (client, conn) = crate::connect::connect(&cfg, &admin_socket())
        .await
        .map_err(|e| StoreError::Pool(crate::db_message(&e)))?;
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
    pub(crate) retry: RetryPolicy,
}

impl Store {
    /// Builds the pool. Connections are opened lazily; call [`Store::ping`] to check.
    pub fn connect(cfg: &StoreConfig) -> Result<Self, StoreError> {
        let mut pg = parse_url(&cfg.url)?;
        let opts = pg.get_options().unwrap_or("").to_string();
        pg.options(format!("{} {opts}", cfg.session_options()).trim());
        pg.connect_timeout(cfg.connect_timeout);
        let mgr = Manager::from_connect(
            pg,
            WatchedConnect(cfg.socket()),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let verify_idle = cfg.verify_idle;
        let probe_limit = cfg.connect_timeout;
        let pool = Pool::builder(mgr)
            .max_size(cfg.max_connections.max(1))
            .wait_timeout(Some(cfg.pool_wait))
            .create_timeout(Some(cfg.connect_timeout))
            .recycle_timeout(Some(cfg.connect_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            // A connection idle for a while may have died with the server (a restart) or
            // the network: check it before handing it out; a dead one is replaced.
            .pre_recycle(Hook::async_fn(move |client, metrics| {
                Box::pin(async move {
                    if metrics.last_used() < verify_idle {
                        return Ok(());
                    }
                    match tokio::time::timeout(probe_limit, client.simple_query("")).await {
                        Ok(Ok(_)) => Ok(()),
                        _ => Err(HookError::message("stale database connection discarded")),
                    }
                })
            }))
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Self {
            pool,
            retry: cfg.retry.clone(),
        })
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))
    }

    /// A cheap liveness check: one round trip on a pooled connection.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Drops every idle connection (the next checkout opens a fresh one).
    pub(crate) fn drop_idle_connections(&self) {
        self.pool.retain(|_, _| false);
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
