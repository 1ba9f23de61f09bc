//! A private PostgreSQL cluster built from the system's PostgreSQL binaries, for
//! `mana-ai dev` (one persistent cluster per developer) and for integration tests
//! (throwaway clusters, see [`testkit`]).
//!
//! - [`find_pg_bindir`] locates `initdb`/`pg_ctl`; [`resolve_pg_bindir`] prefers a directory
//!   the caller configured (`ClusterConfig::bindir`).
//! - [`Cluster::start`] creates (initdb) and starts a cluster described by a
//!   [`ClusterConfig`], or reuses a running persistent one. The server listens on
//!   127.0.0.1 only, with scram-sha-256 auth and a random `postgres` superuser password.
//! - When this process is root the server runs as an unprivileged OS user
//!   ([`DEFAULT_OS_USER`] unless configured), created on first use.
//! - A throwaway cluster never outlives the process that started it: a watchdog process
//!   stops and deletes it when that process ends, even by SIGKILL.
//!
//! Everything here blocks (std::process); nothing is tied to an async runtime. The crate
//! runs programs, never SQL: test databases are made by `mana_ai_store::testkit`. The
//! environment it reads (where PostgreSQL is installed) is read in `config`.

mod cluster;
mod config;
mod discovery;
mod error;
mod host;
mod runas;
pub mod testkit;

pub use cluster::{Cluster, ClusterConfig};
pub use config::BINDIR_ENV;
pub use discovery::{find_pg_bindir, resolve_pg_bindir};
pub use error::ClusterError;
pub use runas::DEFAULT_OS_USER;
