//! Databases in the shared test cluster (moved here from `mana_ai_pgcluster::testkit`,
//! which now only starts and stops the cluster): templates built once per test binary,
//! and a fresh, uniquely named copy per test. All of their SQL lives here.
//!
//! These helpers panic with a descriptive message on failure: they exist for tests.
//! They need a tokio runtime (the admin connection is driven by `tokio::spawn`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use mana_ai_pgcluster::testkit::shared_cluster;
use mana_ai_pgcluster::Cluster;
use tokio::sync::OnceCell;

/// Maximum length kept from a caller's prefix (PostgreSQL names are at most 63 bytes).
const MAX_PREFIX: usize = 40;

/// A database created for one test in the shared cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestDatabase {
    /// The database name (unique within the test binary's cluster).
    pub name: String,
}

impl TestDatabase {
    /// Superuser connection URL for this database.
    pub fn superuser_url(&self) -> String {
        shared_cluster().superuser_url(&self.name)
    }

    /// The shared cluster this database lives in (for its port, or URLs of other databases).
    pub fn cluster(&self) -> &'static Cluster {
        shared_cluster()
    }
}

/// Creates an empty, uniquely named database (`<prefix>_<n>`) in the shared cluster.
///
/// # Panics
/// If the cluster or the database cannot be created.
pub async fn fresh_database(prefix: &str) -> TestDatabase {
    create_database(prefix, None).await
}

/// Creates a uniquely named database as a copy of `template`, which must have been made
/// with [`create_template`] (awaited) before.
///
/// # Panics
/// If the template does not exist or the database cannot be created.
pub async fn fresh_database_from(prefix: &str, template: &str) -> TestDatabase {
    create_database(prefix, Some(template)).await
}

/// Creates the template database `name` by running `setup` with its superuser URL, once
/// per test binary. Concurrent and later calls with the same name wait for that one run
/// and do nothing else; if `setup` fails, the call panics and the next call tries again.
///
/// `setup` must close its connections before it returns (lingering sessions are
/// terminated). Afterwards the template refuses new connections, so it stays pristine.
///
/// # Panics
/// If `name` is not a lowercase identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes), or the
/// database or `setup` fails.
pub async fn create_template<F, Fut, E>(name: &str, setup: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    assert!(
        is_identifier(name),
        "template name {name:?} must match [a-z_][a-z0-9_]* and be at most 63 bytes"
    );
    static TEMPLATES: OnceLock<Mutex<HashMap<String, Arc<OnceCell<()>>>>> = OnceLock::new();
    let cell = {
        let mut map = TEMPLATES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(map.entry(name.to_owned()).or_default())
    };
    let result: Result<&(), String> = cell.get_or_try_init(|| build_template(name, setup)).await;
    if let Err(message) = result {
        panic!("{message}");
    }
}

/// (Re)creates `name`, runs `setup` on it, then closes it to new connections.
async fn build_template<F, Fut, E>(name: &str, setup: F) -> Result<(), String>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    admin_execute(&format!("DROP DATABASE IF EXISTS \"{name}\"")).await?;
    admin_execute(&format!("CREATE DATABASE \"{name}\"")).await?;
    setup(shared_cluster().superuser_url(name))
        .await
        .map_err(|e| format!("setup of template {name:?} failed: {e}"))?;
    admin_execute(&format!(
        "ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS false;\
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{name}' AND pid <> pg_backend_pid();"
    ))
    .await
}

async fn create_database(prefix: &str, template: Option<&str>) -> TestDatabase {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{}_{n}", sanitize_prefix(prefix));
    let sql = match template {
        Some(t) => {
            assert!(is_identifier(t), "template name {t:?} is not an identifier");
            format!("CREATE DATABASE \"{name}\" TEMPLATE \"{t}\"")
        }
        None => format!("CREATE DATABASE \"{name}\""),
    };
    if let Err(message) = admin_execute(&sql).await {
        panic!("could not create test database {name:?}: {message}");
    }
    TestDatabase { name }
}

/// Runs statements on the shared cluster's `postgres` database as superuser.
async fn admin_execute(sql: &str) -> Result<(), String> {
    let url = shared_cluster().superuser_url("postgres");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("could not connect to the test cluster: {e}"))?;
    let driver = tokio::spawn(connection);
    let result = client
        .batch_execute(sql)
        .await
        .map_err(|e| format!("{sql}: {}", crate::db_message(&e)));
    drop(client);
    let _ = driver.await;
    result
}

/// Lowercase, `[a-z0-9_]` only, starting with a letter or underscore, at most 40 bytes.
fn sanitize_prefix(prefix: &str) -> String {
    let mut out: String = prefix
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_PREFIX)
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        out.insert(0, 't');
        out.truncate(MAX_PREFIX);
    }
    out
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sanitize_prefix_table() {
        let cases = [
            ("store", "store"),
            ("Store-Test", "store_test"),
            ("9lives", "t9lives"),
            ("", "t"),
            ("ä", "_"),
        ];
        for (input, want) in cases {
            assert_eq!(sanitize_prefix(input), want, "{input:?}");
        }
    }

    #[test]
    fn identifier_table() {
        let cases = [
            ("migrated", true),
            ("_x1", true),
            ("1x", false),
            ("Upper", false),
            ("a-b", false),
            ("", false),
        ];
        for (input, want) in cases {
            assert_eq!(is_identifier(input), want, "{input:?}");
        }
        assert!(!is_identifier(&"a".repeat(64)));
    }

    proptest! {
        #[test]
        fn sanitized_prefix_plus_counter_is_always_an_identifier(prefix in ".{0,80}", n in any::<u64>()) {
            let name = format!("{}_{n}", sanitize_prefix(&prefix));
            prop_assert!(is_identifier(&name), "{name:?}");
        }
    }
}
