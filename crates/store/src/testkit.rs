//! Test support (feature `testkit`): one migrated template database per test binary
//! and a fresh copy per test, reached as the superuser *and* as an ordinary service
//! role (`NOSUPERUSER NOBYPASSRLS`), so tests exercise row-level security for real.
//!
//! - [`database`]: databases in the shared test cluster (templates, fresh copies);
//! - [`rows`]: the rows tests seed and inspect (`push_change`, `push_mission`,
//!   `push_agent`, written iterations, token usage, research jobs…), so every test's
//!   SQL lives in this crate;
//! - [`faults`]: breakages a test injects (a failing refresh or due listing, a lost claim,
//!   a panic inside the refresh);
//! - [`proxy`]: a TCP proxy that black-holes the database and heals.

pub mod database;
pub mod faults;
pub mod proxy;
pub mod rows;

pub use database::{create_template, fresh_database, fresh_database_from, TestDatabase};
pub use rows::{push_agent, push_change, push_mission, Change};

use crate::{schema, Store, StoreConfig};

/// The least-privilege role the service runs as in tests.
pub const SERVICE_ROLE: &str = "mana_ai_svc";
const SERVICE_PASSWORD: &str = "svc-test-password";
const TEMPLATE: &str = "mana_sync_tpl";

/// A fresh, migrated `mana_sync`-like database.
pub struct TestDb {
    pub name: String,
    pub superuser_url: String,
    pub service_url: String,
}

impl TestDb {
    /// A pool connected as the service role.
    pub fn service_store(&self) -> Store {
        Store::connect(&StoreConfig::new(self.service_url.clone())).expect("service pool")
    }

    /// A plain superuser connection (for test setup and inspection).
    pub async fn admin(&self) -> tokio_postgres::Client {
        crate::connect_once(&self.superuser_url)
            .await
            .expect("superuser connection")
    }

    /// A plain connection as the service role, outside any `UserTx`.
    pub async fn service_client(&self) -> tokio_postgres::Client {
        crate::connect_once(&self.service_url)
            .await
            .expect("service connection")
    }
}

/// Creates a fresh database from the migrated template.
pub async fn fresh_db(prefix: &str) -> TestDb {
    create_template(TEMPLATE, |url| async move {
        let admin = crate::connect_once(&url).await.map_err(|e| e.to_string())?;
        schema::ensure_service_role(&admin, SERVICE_ROLE, SERVICE_PASSWORD)
            .await
            .map_err(|e| e.to_string())?;
        schema::create_sync_changes_for_dev(&admin)
            .await
            .map_err(|e| e.to_string())?;
        schema::migrate(&admin, Some(SERVICE_ROLE))
            .await
            .map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    })
    .await;
    let db = fresh_database_from(prefix, TEMPLATE).await;
    let port = db.cluster().port();
    TestDb {
        superuser_url: db.superuser_url(),
        service_url: format!(
            "postgresql://{SERVICE_ROLE}:{SERVICE_PASSWORD}@127.0.0.1:{port}/{}",
            db.name
        ),
        name: db.name,
    }
}
