//! Running PostgreSQL's programs as an unprivileged OS user, and the file-system chores
//! (ownership, traversal permissions, private files) that this requires.
//!
//! PostgreSQL refuses to run as root. When this process is root, every server program is
//! started with the uid/gid of a dedicated system user (created on first use); otherwise
//! programs simply run as the current user.

use std::fs::{OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Gid, Uid, User};

use crate::ClusterError;

/// OS user the cluster runs as when this process is root and no user is configured.
pub const DEFAULT_OS_USER: &str = "mana-ai-pg";

/// The unprivileged account server programs run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// Decides who runs the server: `None` (the current user) unless we are root, in which case
/// the configured user (default [`DEFAULT_OS_USER`]) is looked up or created.
pub(crate) fn resolve(os_user: Option<&str>) -> Result<Option<Identity>, ClusterError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    ensure_user(os_user.unwrap_or(DEFAULT_OS_USER)).map(Some)
}

fn lookup(name: &str) -> Result<Option<Identity>, ClusterError> {
    let user = User::from_name(name).map_err(|e| ClusterError::OsUser {
        user: name.to_owned(),
        reason: format!("user database lookup failed: {e}"),
    })?;
    Ok(user.map(|u| Identity {
        name: name.to_owned(),
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
    }))
}

/// Looks the user up and creates it with `useradd --system` when missing.
///
/// Concurrent `useradd` runs can each "succeed" with different uids while only one entry
/// survives, so creation is serialized: within this process by a mutex, across processes
/// (parallel test binaries) by an exclusive `flock` on a lock file.
fn ensure_user(name: &str) -> Result<Identity, ClusterError> {
    if let Some(id) = lookup(name)? {
        return checked(id);
    }
    static IN_PROCESS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = IN_PROCESS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _lock = lock_user_creation()?;
    create_user(name)
}

fn checked(id: Identity) -> Result<Identity, ClusterError> {
    if id.uid == 0 {
        return Err(ClusterError::OsUser {
            user: id.name,
            reason: "has uid 0; PostgreSQL refuses to run as root".into(),
        });
    }
    Ok(id)
}

/// Takes the cross-process lock for user creation (released when dropped).
fn lock_user_creation() -> Result<Flock<std::fs::File>, ClusterError> {
    // /run is writable only by root (we only create users as root); fall back to the temp
    // dir, refusing to follow a planted symlink there.
    let dir = if Path::new("/run").is_dir() {
        PathBuf::from("/run")
    } else {
        std::env::temp_dir()
    };
    let path = dir.join("mana-ai-pgcluster-useradd.lock");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| ClusterError::io(format!("could not open lock file {path:?}"), e))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| ClusterError::io(format!("could not lock {path:?}"), e.into()))
}

/// Creates the user (caller holds the creation lock), re-checking first.
fn create_user(name: &str) -> Result<Identity, ClusterError> {
    let mut last_failure = String::new();
    for attempt in 0..5u64 {
        if let Some(id) = lookup(name)? {
            return checked(id);
        }
        let shell = if Path::new("/usr/sbin/nologin").exists() {
            "/usr/sbin/nologin"
        } else {
            "/bin/false"
        };
        let out = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args(["--home-dir", "/nonexistent", "--shell", shell])
            .arg(name)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ClusterError::OsUser {
                user: name.to_owned(),
                reason: format!(
                    "could not run `useradd` ({e}); create the user yourself or configure another"
                ),
            })?;
        if out.status.success() {
            tracing::info!(
                user = name,
                "created OS user for the private PostgreSQL cluster"
            );
            continue;
        }
        last_failure = format!(
            "`useradd --system {name}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        std::thread::sleep(std::time::Duration::from_millis(100 * (attempt + 1)));
    }
    Err(ClusterError::OsUser {
        user: name.to_owned(),
        reason: last_failure,
    })
}

/// A command for a PostgreSQL program, run as `id` when given, from `/`, with no stdin.
pub(crate) fn command(program: &Path, id: Option<&Identity>) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir("/").stdin(Stdio::null());
    if let Some(id) = id {
        // std drops supplementary groups when switching uid as root.
        cmd.uid(id.uid).gid(id.gid);
    }
    cmd
}

/// Runs `cmd` to completion, capturing its output; a non-zero exit becomes an error.
pub(crate) fn run(mut cmd: Command, what: &str) -> Result<Output, ClusterError> {
    let out = cmd
        .output()
        .map_err(|e| ClusterError::io(format!("could not run {what}"), e))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(ClusterError::CommandFailed {
            program: what.to_owned(),
            status: out.status.to_string(),
            output: combined_output(&out),
        })
    }
}

/// Stdout and stderr of a finished program as one trimmed text.
pub(crate) fn combined_output(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(err.trim());
    }
    text
}

/// Gives `path` to `id` (no-op when running as the current user).
pub(crate) fn chown(path: &Path, id: Option<&Identity>) -> Result<(), ClusterError> {
    if let Some(id) = id {
        nix::unistd::chown(
            path,
            Some(Uid::from_raw(id.uid)),
            Some(Gid::from_raw(id.gid)),
        )
        .map_err(|e| {
            ClusterError::io(format!("could not chown {path:?} to {}", id.name), e.into())
        })?;
    }
    Ok(())
}

/// Checks that `id` can traverse every directory from `/` down to `dir`. Nothing is
/// changed: a directory closed to it (e.g. `/root`, mode 0700) is an error naming that
/// directory and what to do — adding `o+x` to a home directory behind the user's back
/// would open it to every local account.
pub(crate) fn ensure_traversable(dir: &Path, id: &Identity) -> Result<(), ClusterError> {
    let mut chain: Vec<&Path> = dir.ancestors().collect();
    chain.reverse();
    for d in chain {
        let meta = std::fs::metadata(d)
            .map_err(|e| ClusterError::io(format!("could not inspect {d:?}"), e))?;
        let mode = meta.mode();
        let can_traverse = if meta.uid() == id.uid {
            mode & 0o100 != 0
        } else if meta.gid() == id.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !can_traverse {
            return Err(ClusterError::InvalidDataDir {
                path: dir.to_path_buf(),
                reason: format!(
                    "PostgreSQL runs as the OS user {:?}, which cannot reach it: {} (mode {:o}) \
                     is closed to that user. Choose a data dir under a directory it can \
                     traverse (e.g. --data-dir /var/lib/mana-ai or under /tmp); mana-ai does \
                     not change the mode of your directories",
                    id.name,
                    d.display(),
                    mode & 0o7777
                ),
            });
        }
    }
    Ok(())
}

/// Writes a private file (mode 0600) owned by `id`, replacing any previous content.
///
/// Never follows a symlink: the content goes to a new temporary file next to `path`
/// (created exclusively, so nothing planted there is followed), which is then renamed
/// over `path` — a rename replaces a symlink itself, never its target. This matters in
/// directories the PostgreSQL OS user owns (the cluster's data dir), where a database
/// superuser could plant `mana-ai.conf -> /etc/passwd`.
pub(crate) fn write_private(
    path: &Path,
    content: &[u8],
    id: Option<&Identity>,
) -> Result<(), ClusterError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    // A leftover of a crashed run (or a planted name): removing a symlink removes the link.
    let _ = std::fs::remove_file(&tmp);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut file| {
            file.set_permissions(Permissions::from_mode(0o600))?;
            file.write_all(content)?;
            file.sync_all()
        })
        .map_err(|e| ClusterError::io(format!("could not write {tmp:?}"), e))
        .and_then(|()| chown(&tmp, id))
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .map_err(|e| ClusterError::io(format!("could not replace {path:?}"), e))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Reads a file that must not be a symlink (`O_NOFOLLOW`).
pub(crate) fn read_no_follow(path: &Path) -> Result<String, ClusterError> {
    let mut text = String::new();
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut f| std::io::Read::read_to_string(&mut f, &mut text))
        .map_err(|e| ClusterError::io(format!("could not read {path:?} (symlinks refused)"), e))?;
    Ok(text)
}

/// Creates `path` if missing (mode 0600, for appending) and gives it to `id`. A symlink at
/// `path` is refused (`O_NOFOLLOW`), so is anything but a regular file.
pub(crate) fn touch_private(path: &Path, id: Option<&Identity>) -> Result<(), ClusterError> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            ClusterError::io(format!("could not create {path:?} (symlinks refused)"), e)
        })?;
    let meta = file
        .metadata()
        .map_err(|e| ClusterError::io(format!("could not inspect {path:?}"), e))?;
    if !meta.is_file() {
        return Err(ClusterError::io(
            format!("{path:?} is not a regular file"),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        ));
    }
    chown(path, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_private_sets_mode_0600_and_replaces_content() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("secret");
        std::fs::write(&file, "old content that is longer").unwrap();
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        write_private(&file, b"new", None).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        let mode = std::fs::metadata(&file).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn write_private_replaces_a_planted_symlink_without_following_it() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let conf = tmp.path().join("mana-ai.conf");
        std::os::unix::fs::symlink(&victim, &conf).unwrap();
        write_private(&conf, b"port = 1\n", None).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(!std::fs::symlink_metadata(&conf)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&conf).unwrap(), "port = 1\n");
        // Reading and touching refuse a symlink outright.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(read_no_follow(&link).is_err());
        assert!(touch_private(&link, None).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    }

    #[test]
    fn ensure_traversable_refuses_and_changes_nothing() {
        if !Uid::effective().is_root() {
            return; // Only meaningful when another user must get in.
        }
        let tmp = tempfile::tempdir().unwrap();
        let closed = tmp.path().join("home");
        let inner = closed.join("data");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::set_permissions(&closed, Permissions::from_mode(0o700)).unwrap();
        let stranger = Identity {
            name: "nobody-test".into(),
            uid: 65_000,
            gid: 65_000,
        };
        let e = ensure_traversable(&inner, &stranger)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nobody-test") && e.contains("--data-dir"), "{e}");
        let mode = std::fs::metadata(&closed).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700, "the parent's mode is unchanged");
        std::fs::set_permissions(&closed, Permissions::from_mode(0o701)).unwrap();
        ensure_traversable(&inner, &stranger).unwrap();
    }
}
