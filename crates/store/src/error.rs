//! The store's error type, [`StoreError`], and how database errors are rendered: the
//! server's message and SQLSTATE only ([`safe_db_message`]). PostgreSQL's DETAIL
//! ("Failing row contains (…)", key values), WHERE and query context can hold user data,
//! so they never reach an error's `Display` — neither logs nor HTTP answers (e.g. the
//! `errors` of `/internal/tick`) — and never a connection password.

/// Errors of the store. Messages never contain connection passwords.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database configuration: {0}")]
    Config(String),
    #[error("database unavailable: {0}")]
    Pool(String),
    #[error(
        "migration step '{step}' failed: {}{}",
        safe_db_message(cause),
        migration_hint(cause)
    )]
    Migration {
        step: String,
        cause: tokio_postgres::Error,
    },
    #[error("database error: {}", safe_db_message(.0))]
    Db(#[from] tokio_postgres::Error),
    /// The schema's version does not fit this binary, or another instance's migration
    /// did not finish in time. The message says what to do.
    #[error("{0}")]
    Schema(String),
    #[error("refused: {0}")]
    Refused(&'static str),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Longest server message kept in an error's `Display` (chars).
pub const MAX_DB_MESSAGE_CHARS: usize = 300;

/// What an error's `Display` says about a database error: the server's primary message
/// (capped at [`MAX_DB_MESSAGE_CHARS`]) and its SQLSTATE; no DETAIL, HINT, WHERE or
/// query position. Connection-level errors keep tokio-postgres' text (no row data).
pub fn safe_db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let message: String = db.message().chars().take(MAX_DB_MESSAGE_CHARS).collect();
            format!("{message} ({})", db.code().code())
        }
        None => e.to_string(),
    }
}

/// The server's message with detail and hint (tests and diagnostics only: the detail
/// may hold row contents; `Display` uses [`safe_db_message`]).
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

    /// True for errors worth retrying as a whole transaction: serialization failure
    /// (40001), deadlock (40P01) — both guarantee the transaction was rolled back — and a
    /// lost connection (which may have happened after a commit, so only idempotent
    /// operations retry it; see [`crate::retry`]).
    pub fn is_transient(&self) -> bool {
        self.rolled_back_conflict() || self.connection_lost()
    }

    /// 40001 or 40P01: the server rolled the transaction back; running it again is safe.
    pub fn rolled_back_conflict(&self) -> bool {
        let code = match self {
            StoreError::Db(e) | StoreError::Migration { cause: e, .. } => e.code(),
            _ => None,
        };
        matches!(
            code,
            Some(&tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE)
                | Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED)
        )
    }

    /// The connection was lost or could not be made (pool checkout, closed socket, the
    /// server shutting down: SQLSTATE class 08 and 57P01–57P03).
    pub fn connection_lost(&self) -> bool {
        match self {
            StoreError::Pool(_) => true,
            StoreError::Db(e) => {
                e.is_closed()
                    || is_io(e)
                    || e.code().is_some_and(|c| {
                        let c = c.code();
                        c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03")
                    })
            }
            _ => false,
        }
    }
}

/// True when the error came from the socket (an I/O error in its source chain).
fn is_io(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}
