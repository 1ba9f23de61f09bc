//! Test support: one throwaway cluster per test binary, started on first use and never
//! stopped by hand (its watchdog stops and deletes it when the binary exits).
//!
//! This module only starts the cluster. Databases in it (templates, a fresh database
//! per test, the admin connection) are made by `mana_ai_store::testkit`: the store is the
//! only crate with SQL.
//!
//! ```no_run
//! let cluster = mana_ai_pgcluster::testkit::shared_cluster();
//! let url = cluster.superuser_url("postgres");
//! # let _ = url;
//! ```
//!
//! The cluster is started with blocking calls, so it works from any number of tokio
//! runtimes (each `#[tokio::test]` has its own).

use std::sync::OnceLock;

use crate::{Cluster, ClusterConfig};

/// The throwaway cluster shared by all tests of this test binary, started on first use.
///
/// Thread-safe and runtime-independent (blocking start). It is never dropped; its watchdog
/// stops and deletes it when the test binary exits.
///
/// # Panics
/// If the cluster cannot be started (the message says why, e.g. which package to install);
/// every later call panics with the same message without retrying.
pub fn shared_cluster() -> &'static Cluster {
    static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
    let started = SHARED.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("mana-ai-pg-")
            .tempdir()
            .map_err(|e| format!("could not create a temporary directory: {e}"))?
            // The cluster (and its watchdog) deletes the directory, not TempDir.
            .keep();
        Cluster::start(ClusterConfig::throwaway(dir)).map_err(|e| e.to_string())
    });
    match started {
        Ok(cluster) => cluster,
        Err(message) => panic!("shared test PostgreSQL cluster unavailable: {message}"),
    }
}
