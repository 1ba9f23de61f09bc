//! Database fault settings (`MANA_AI_DB_*`, `MANA_AI_MIGRATION_LOCK_*`): timeouts,
//! keepalives, the response watchdog, retries, and the migration's lock bounds. Their
//! defaults are the store's named constants (`mana_ai_store::pool`, `retry`, `schema`).

use std::collections::BTreeMap;
use std::time::Duration;

use mana_ai_store::schema::{self, MigrateOptions};
use mana_ai_store::{pool, retry, RetryPolicy, StoreConfig};

use super::parse::{opt_ms, opt_num};
use super::ConfigError;

/// The database settings of [`super::Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSettings {
    /// `MANA_AI_DB_CONNECT_TIMEOUT_MS`
    pub connect_timeout: Duration,
    /// `MANA_AI_DB_STATEMENT_TIMEOUT_MS` (0 = none, and no response watchdog)
    pub statement_timeout: Duration,
    /// `MANA_AI_DB_LOCK_TIMEOUT_MS` (0 = none)
    pub lock_timeout: Duration,
    /// `MANA_AI_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS` (0 = none)
    pub idle_in_transaction_timeout: Duration,
    /// `MANA_AI_DB_KEEPALIVE_IDLE_MS`
    pub keepalive_idle: Duration,
    /// `MANA_AI_DB_KEEPALIVE_INTERVAL_MS`
    pub keepalive_interval: Duration,
    /// `MANA_AI_DB_KEEPALIVE_RETRIES`
    pub keepalive_retries: u32,
    /// `MANA_AI_DB_RESPONSE_GRACE_MS`
    pub response_grace: Duration,
    /// `MANA_AI_DB_RETRY_ATTEMPTS`
    pub retry_attempts: u32,
    /// `MANA_AI_MIGRATION_LOCK_WAIT_MS`
    pub migration_lock_wait: Duration,
    /// `MANA_AI_MIGRATION_LOCK_TIMEOUT_MS`
    pub migration_lock_timeout: Duration,
}

const HOUR_MS: u64 = 3_600_000;

impl DbSettings {
    pub(super) fn from_env(env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let ms = |var, min, max, default| opt_ms(env, var, min, max, default);
        Ok(Self {
            connect_timeout: ms(
                "MANA_AI_DB_CONNECT_TIMEOUT_MS",
                100,
                600_000,
                pool::DEFAULT_CONNECT_TIMEOUT,
            )?,
            statement_timeout: ms(
                "MANA_AI_DB_STATEMENT_TIMEOUT_MS",
                0,
                HOUR_MS,
                pool::DEFAULT_STATEMENT_TIMEOUT,
            )?,
            lock_timeout: ms(
                "MANA_AI_DB_LOCK_TIMEOUT_MS",
                0,
                HOUR_MS,
                pool::DEFAULT_LOCK_TIMEOUT,
            )?,
            idle_in_transaction_timeout: ms(
                "MANA_AI_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
                0,
                HOUR_MS,
                pool::DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT,
            )?,
            keepalive_idle: ms(
                "MANA_AI_DB_KEEPALIVE_IDLE_MS",
                1_000,
                2 * HOUR_MS,
                pool::DEFAULT_KEEPALIVE_IDLE,
            )?,
            keepalive_interval: ms(
                "MANA_AI_DB_KEEPALIVE_INTERVAL_MS",
                1_000,
                600_000,
                pool::DEFAULT_KEEPALIVE_INTERVAL,
            )?,
            keepalive_retries: opt_num(
                env,
                "MANA_AI_DB_KEEPALIVE_RETRIES",
                1,
                20,
                pool::DEFAULT_KEEPALIVE_RETRIES,
            )?,
            response_grace: ms(
                "MANA_AI_DB_RESPONSE_GRACE_MS",
                100,
                600_000,
                pool::DEFAULT_RESPONSE_GRACE,
            )?,
            retry_attempts: opt_num(
                env,
                "MANA_AI_DB_RETRY_ATTEMPTS",
                1,
                10,
                retry::DEFAULT_RETRY_ATTEMPTS,
            )?,
            migration_lock_wait: ms(
                "MANA_AI_MIGRATION_LOCK_WAIT_MS",
                0,
                HOUR_MS,
                schema::DEFAULT_LOCK_WAIT,
            )?,
            migration_lock_timeout: ms(
                "MANA_AI_MIGRATION_LOCK_TIMEOUT_MS",
                100,
                600_000,
                schema::DEFAULT_DDL_LOCK_TIMEOUT,
            )?,
        })
    }

    /// The pool's settings for `url`.
    pub fn store_config(&self, url: &str, pool_size: usize) -> StoreConfig {
        let mut sc = StoreConfig::new(url);
        sc.max_connections = pool_size;
        sc.connect_timeout = self.connect_timeout;
        sc.statement_timeout = self.statement_timeout;
        sc.lock_timeout = self.lock_timeout;
        sc.idle_in_transaction_timeout = self.idle_in_transaction_timeout;
        sc.keepalive_idle = self.keepalive_idle;
        sc.keepalive_interval = self.keepalive_interval;
        sc.keepalive_retries = self.keepalive_retries;
        sc.response_grace = self.response_grace;
        sc.retry = RetryPolicy {
            attempts: self.retry_attempts,
            ..RetryPolicy::default()
        };
        sc
    }

    /// The migration's bounds, granting to `service_role`.
    pub fn migrate_options(&self, service_role: Option<String>) -> MigrateOptions {
        MigrateOptions {
            service_role,
            lock_wait: self.migration_lock_wait,
            ddl_lock_timeout: self.migration_lock_timeout,
        }
    }

    /// `mana-ai config` lines.
    pub(super) fn describe(&self) -> Vec<(&'static str, String)> {
        let ms = |d: Duration| d.as_millis().to_string();
        vec![
            ("MANA_AI_DB_CONNECT_TIMEOUT_MS", ms(self.connect_timeout)),
            (
                "MANA_AI_DB_STATEMENT_TIMEOUT_MS",
                ms(self.statement_timeout),
            ),
            ("MANA_AI_DB_LOCK_TIMEOUT_MS", ms(self.lock_timeout)),
            (
                "MANA_AI_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
                ms(self.idle_in_transaction_timeout),
            ),
            ("MANA_AI_DB_KEEPALIVE_IDLE_MS", ms(self.keepalive_idle)),
            (
                "MANA_AI_DB_KEEPALIVE_INTERVAL_MS",
                ms(self.keepalive_interval),
            ),
            (
                "MANA_AI_DB_KEEPALIVE_RETRIES",
                self.keepalive_retries.to_string(),
            ),
            ("MANA_AI_DB_RESPONSE_GRACE_MS", ms(self.response_grace)),
            ("MANA_AI_DB_RETRY_ATTEMPTS", self.retry_attempts.to_string()),
            (
                "MANA_AI_MIGRATION_LOCK_WAIT_MS",
                ms(self.migration_lock_wait),
            ),
            (
                "MANA_AI_MIGRATION_LOCK_TIMEOUT_MS",
                ms(self.migration_lock_timeout),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_stores_constants_and_edges_are_checked() {
        let d = DbSettings::from_env(&env(&[])).unwrap();
        assert_eq!(d.statement_timeout, pool::DEFAULT_STATEMENT_TIMEOUT);
        assert_eq!(d.migration_lock_wait, schema::DEFAULT_LOCK_WAIT);
        let sc = d.store_config("postgresql://u@h/db", 4);
        assert_eq!(
            sc.response_timeout(),
            Some(pool::DEFAULT_STATEMENT_TIMEOUT + pool::DEFAULT_RESPONSE_GRACE)
        );
        let off = DbSettings::from_env(&env(&[("MANA_AI_DB_STATEMENT_TIMEOUT_MS", "0")])).unwrap();
        assert_eq!(
            off.store_config("postgresql://u@h/db", 1)
                .response_timeout(),
            None
        );
        for (var, bad) in [
            ("MANA_AI_DB_STATEMENT_TIMEOUT_MS", "3600001"),
            ("MANA_AI_DB_CONNECT_TIMEOUT_MS", "99"),
            ("MANA_AI_DB_KEEPALIVE_RETRIES", "0"),
            ("MANA_AI_DB_RETRY_ATTEMPTS", "11"),
            ("MANA_AI_MIGRATION_LOCK_TIMEOUT_MS", "x"),
        ] {
            let e = DbSettings::from_env(&env(&[(var, bad)])).unwrap_err();
            assert_eq!(e.var, var);
        }
        let edge = DbSettings::from_env(&env(&[
            ("MANA_AI_DB_STATEMENT_TIMEOUT_MS", "3600000"),
            ("MANA_AI_DB_CONNECT_TIMEOUT_MS", "100"),
            ("MANA_AI_DB_RETRY_ATTEMPTS", "10"),
        ]))
        .unwrap();
        assert_eq!(edge.statement_timeout, Duration::from_secs(3600));
        assert_eq!(edge.retry_attempts, 10);
    }
}
