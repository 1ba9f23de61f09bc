//! The environment this crate reads, in one place: where PostgreSQL is installed.
//!
//! The service reads `MANA_AI_PG_BINDIR` in its own configuration and passes it in
//! ([`crate::resolve_pg_bindir`]); these readings serve callers without one (the testkit,
//! the standalone discovery).

use std::ffi::OsString;

/// Name of the environment variable that overrides binary discovery.
pub const BINDIR_ENV: &str = "MANA_AI_PG_BINDIR";

/// `$MANA_AI_PG_BINDIR`, when set.
pub(crate) fn bindir_override() -> Option<OsString> {
    std::env::var_os(BINDIR_ENV)
}

/// `$PATH`, searched for `initdb`.
pub(crate) fn search_path() -> Option<OsString> {
    std::env::var_os("PATH")
}
