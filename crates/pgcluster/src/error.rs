//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while finding, creating, starting or stopping a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `MANA_AI_PG_BINDIR` is set but does not hold the server binaries.
    #[error(
        "MANA_AI_PG_BINDIR is set to {path:?}, but that directory has no executable `initdb` and \
         `pg_ctl`; point it at PostgreSQL's bin directory (for example /usr/lib/postgresql/15/bin) \
         or unset it to search automatically"
    )]
    BindirEnvInvalid {
        /// The value of the variable.
        path: PathBuf,
    },
    /// No PostgreSQL server binaries anywhere we looked.
    #[error(
        "no PostgreSQL server binaries (initdb, pg_ctl) found; searched: {searched}. Install them \
         with `apt-get install -y postgresql` (Debian/Ubuntu), or set MANA_AI_PG_BINDIR to the \
         directory that holds initdb and pg_ctl"
    )]
    BinariesNotFound {
        /// Human-readable list of the places that were searched.
        searched: String,
    },
    /// A file-system or process-spawn operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being attempted.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An external program (initdb, pg_ctl, useradd) exited unsuccessfully.
    #[error("{program} failed ({status}): {output}")]
    CommandFailed {
        /// Program name and main arguments.
        program: String,
        /// Exit status as text.
        status: String,
        /// Captured output and, for server start failures, the tail of the server log.
        output: String,
    },
    /// The unprivileged OS user could not be found or created.
    #[error("OS user {user:?} for the cluster: {reason}")]
    OsUser {
        /// User name.
        user: String,
        /// What went wrong.
        reason: String,
    },
    /// The data directory path is unusable (no file name, no parent, ...).
    #[error("unusable data directory {path:?}: {reason}")]
    InvalidDataDir {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A throwaway cluster was asked to use a directory that already has content.
    #[error(
        "throwaway cluster needs an empty or missing data directory, but {path:?} is not empty"
    )]
    DataDirNotEmpty {
        /// The path.
        path: PathBuf,
    },
    /// A persistent cluster exists but its superuser password file is missing or empty.
    #[error(
        "cluster in {data_dir:?} exists but its superuser password file {password_file:?} is \
         missing or empty; restore the file or delete the cluster directory to start over"
    )]
    PasswordFileMissing {
        /// The cluster's data directory.
        data_dir: PathBuf,
        /// Where the password was expected.
        password_file: PathBuf,
    },
    /// The cluster is already running on another port than the one requested.
    #[error(
        "cluster in {data_dir:?} is already running on port {running}, not the requested port \
         {requested}; stop it first or do not request a port"
    )]
    PortMismatch {
        /// The cluster's data directory.
        data_dir: PathBuf,
        /// Port it runs on.
        running: u16,
        /// Port that was requested.
        requested: u16,
    },
    /// The server did not start (for automatically chosen ports: after several attempts).
    #[error("PostgreSQL did not start: {0}")]
    StartFailed(String),
}

impl ClusterError {
    /// Wraps an I/O error with a description of what was being attempted.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
