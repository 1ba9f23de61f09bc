//! The private cluster side of `mana-ai dev`: the data dir, starting (or reusing) the
//! persistent cluster, the service role's password file, and the `mana_sync` database
//! with the sync server's change table and the login role (all idempotent, through the
//! store).

use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mana_ai_pgcluster::{Cluster, ClusterConfig};

use super::{io_err, quiet, DevError, DevPassword, DEV_DATABASE, DEV_ROLE};

/// Creates the data dir if needed and returns it as an absolute path.
pub fn prepare_data_dir(dir: &Path) -> Result<PathBuf, DevError> {
    std::fs::create_dir_all(dir).map_err(io_err(format!("could not create {dir:?}")))?;
    std::path::absolute(dir).map_err(io_err(format!("could not resolve {dir:?}")))
}

/// Starts or reuses the persistent cluster in `pg_dir` (blocking work off the runtime),
/// with PostgreSQL's binaries from `bindir` (`MANA_AI_PG_BINDIR`) when configured.
pub(super) async fn start_cluster(
    pg_dir: PathBuf,
    bindir: Option<PathBuf>,
) -> Result<Cluster, DevError> {
    let cfg = ClusterConfig {
        bindir,
        ..ClusterConfig::persistent(pg_dir)
    };
    tokio::task::spawn_blocking(move || Cluster::start(cfg))
        .await
        .map_err(|e| DevError::Task(e.to_string()))?
        .map_err(DevError::from)
}

/// Reads the service role's password from `path`, or creates the file (mode 0600) with a
/// fresh random password. A file readable by others is tightened to 0600.
///
/// The file appears atomically with its content (written to a private temporary file,
/// then hard-linked into place), so a concurrent `mana-ai dev` never reads it half-written.
pub fn load_or_create_password(path: &Path) -> Result<DevPassword, DevError> {
    if path.exists() {
        return read_password(path);
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let tmp = PathBuf::from(tmp_name);
    let password = generate_password();
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            // `mode` only applies to new files: make sure a stale temp file is private too.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.write_all(password.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(format!("could not write {tmp:?}"))(e));
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(DevPassword(password)),
        // Another `mana-ai dev` was faster: use its password.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => read_password(path),
        Err(e) => Err(io_err(format!("could not create {path:?}"))(e)),
    }
}

fn read_password(path: &Path) -> Result<DevPassword, DevError> {
    let meta = std::fs::metadata(path).map_err(io_err(format!("could not read {path:?}")))?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(format!("could not restrict {path:?} to mode 0600")))?;
    }
    let raw = std::fs::read_to_string(path).map_err(io_err(format!("could not read {path:?}")))?;
    let password = raw.trim();
    let bad = |reason: &str| DevError::BadPasswordFile {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    if password.is_empty() {
        return Err(bad("is empty"));
    }
    // It goes into a URL unescaped: only RFC 3986 unreserved characters.
    if !password
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    {
        return Err(bad(
            "contains characters other than letters, digits and -._~",
        ));
    }
    Ok(DevPassword(password.to_owned()))
}

/// 64 hex characters (two v4 UUIDs: 244 bits from the OS random source).
fn generate_password() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Creates `mana_sync`, the sync server's change table and the service role (all
/// idempotent; the SQL is the store's, see `mana_ai_store::dev::prepare_database`).
pub(super) async fn prepare_database(
    cluster: &Cluster,
    password: &DevPassword,
) -> Result<(), DevError> {
    mana_ai_store::dev::prepare_database(
        |db| quiet(cluster.superuser_url(db)),
        DEV_DATABASE,
        DEV_ROLE,
        password.expose(),
    )
    .await
    .map_err(|e| DevError::Db {
        context: e.step,
        source: e.source,
    })
}
