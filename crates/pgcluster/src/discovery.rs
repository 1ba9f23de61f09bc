//! Finding the PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`) on this machine.
//!
//! Order: `$MANA_AI_PG_BINDIR` (authoritative when set), `initdb` on `PATH` (symlinks
//! resolved), `pg_config --bindir`, then the highest-versioned `/usr/lib/postgresql/*/bin`.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::ClusterError;

use crate::config::BINDIR_ENV;

/// Directory searched last: one `<version>/bin` per installed major version (Debian layout).
const VERSIONED_ROOT: &str = "/usr/lib/postgresql";

/// Returns the directory holding PostgreSQL's `initdb` and `pg_ctl`.
///
/// Looks at `$MANA_AI_PG_BINDIR` first; when it is set (and non-empty) it is the only
/// candidate, and an error names it if it is wrong. Otherwise tries `initdb` on `PATH`
/// (following symlinks to the real directory), `pg_config --bindir`, and finally the highest
/// version under `/usr/lib/postgresql/*/bin` (numeric sort, so 10 beats 9.6).
pub fn find_pg_bindir() -> Result<PathBuf, ClusterError> {
    discover(
        crate::config::bindir_override().as_deref(),
        crate::config::search_path().as_deref(),
        pg_config_bindir,
        Path::new(VERSIONED_ROOT),
    )
}

/// The binaries directory for a cluster: `explicit` when the caller's configuration names
/// one (the service reads `MANA_AI_PG_BINDIR` in its `config` module and passes it here;
/// an error names that variable if the directory is wrong), else [`find_pg_bindir`].
pub fn resolve_pg_bindir(explicit: Option<&Path>) -> Result<PathBuf, ClusterError> {
    match explicit.filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => checked_bindir(dir.to_path_buf()),
        None => find_pg_bindir(),
    }
}

/// An explicitly named directory: used as is when it holds the binaries, an error naming
/// [`BINDIR_ENV`] otherwise.
fn checked_bindir(dir: PathBuf) -> Result<PathBuf, ClusterError> {
    if is_bindir(&dir) {
        Ok(dir)
    } else {
        Err(ClusterError::BindirEnvInvalid { path: dir })
    }
}

/// The discovery algorithm with every input injected (for tests).
fn discover(
    env_bindir: Option<&OsStr>,
    path_var: Option<&OsStr>,
    pg_config: impl FnOnce(Option<&OsStr>) -> Option<PathBuf>,
    versioned_root: &Path,
) -> Result<PathBuf, ClusterError> {
    if let Some(dir) = env_bindir.filter(|v| !v.is_empty()) {
        return checked_bindir(PathBuf::from(dir));
    }
    if let Some(dir) = initdb_on_path(path_var) {
        return Ok(dir);
    }
    if let Some(dir) = pg_config(path_var).filter(|d| is_bindir(d)) {
        return Ok(dir);
    }
    if let Some(dir) = highest_versioned_bindir(versioned_root) {
        return Ok(dir);
    }
    Err(ClusterError::BinariesNotFound {
        searched: format!(
            "${BINDIR_ENV} (unset), `initdb` on PATH, `pg_config --bindir`, {}/*/bin",
            versioned_root.display()
        ),
    })
}

/// True when `dir` holds executable `initdb` and `pg_ctl`.
fn is_bindir(dir: &Path) -> bool {
    is_executable(&dir.join("initdb")) && is_executable(&dir.join("pg_ctl"))
}

fn is_executable(file: &Path) -> bool {
    std::fs::metadata(file)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Finds `initdb` on `PATH`, resolves symlinks and returns its real directory if that
/// directory also has `pg_ctl`.
fn initdb_on_path(path_var: Option<&OsStr>) -> Option<PathBuf> {
    let path_var = path_var?;
    std::env::split_paths(path_var)
        .map(|dir| dir.join("initdb"))
        .filter(|candidate| is_executable(candidate))
        .filter_map(|candidate| std::fs::canonicalize(candidate).ok())
        .filter_map(|real| real.parent().map(Path::to_path_buf))
        .find(|dir| is_bindir(dir))
}

/// Runs `pg_config --bindir` (found on the given `PATH`) and returns its answer.
fn pg_config_bindir(path_var: Option<&OsStr>) -> Option<PathBuf> {
    let path_var = path_var?;
    let pg_config = std::env::split_paths(path_var)
        .map(|dir| dir.join("pg_config"))
        .find(|c| is_executable(c))?;
    let out = Command::new(pg_config)
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| PathBuf::from(trimmed))
}

/// Parses a directory name like `15` or `9.6` into comparable numeric parts.
fn parse_version(name: &OsStr) -> Option<Vec<u32>> {
    name.to_str()?
        .split('.')
        .map(|part| part.parse::<u32>().ok())
        .collect()
}

/// The `<root>/<version>/bin` with the highest numeric version that holds the binaries.
fn highest_versioned_bindir(root: &Path) -> Option<PathBuf> {
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = parse_version(&entry.file_name())?;
            let bin = entry.path().join("bin");
            is_bindir(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, dir)| dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::fs::symlink;

    /// Joins directories into a `PATH`-style value.
    fn path_of(dirs: &[&Path]) -> OsString {
        std::env::join_paths(dirs).unwrap()
    }

    fn fake_bindir(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        for name in ["initdb", "pg_ctl"] {
            let file = dir.join(name);
            std::fs::write(&file, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    fn no_pg_config(_: Option<&OsStr>) -> Option<PathBuf> {
        None
    }

    #[test]
    fn env_var_wins_when_valid() {
        let tmp = tempfile::tempdir().unwrap();
        let env_dir = tmp.path().join("env");
        let path_dir = tmp.path().join("path");
        fake_bindir(&env_dir);
        fake_bindir(&path_dir);
        let got = discover(
            Some(env_dir.as_os_str()),
            Some(&path_of(&[&path_dir])),
            no_pg_config,
            tmp.path(),
        )
        .unwrap();
        assert_eq!(got, env_dir);
    }

    #[test]
    fn env_var_pointing_nowhere_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path_dir = tmp.path().join("path");
        fake_bindir(&path_dir);
        let bogus = tmp.path().join("does-not-exist");
        let err = discover(
            Some(bogus.as_os_str()),
            Some(&path_of(&[&path_dir])),
            no_pg_config,
            tmp.path(),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, ClusterError::BindirEnvInvalid { .. }),
            "{text}"
        );
        assert!(text.contains("MANA_AI_PG_BINDIR"), "{text}");
        assert!(text.contains("does-not-exist"), "{text}");
    }

    #[test]
    fn empty_env_var_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let path_dir = tmp.path().join("path");
        fake_bindir(&path_dir);
        let got = discover(
            Some(OsStr::new("")),
            Some(&path_of(&[&path_dir])),
            no_pg_config,
            tmp.path(),
        )
        .unwrap();
        assert_eq!(got, path_dir.canonicalize().unwrap());
    }

    #[test]
    fn path_symlink_is_resolved_to_the_real_bindir() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("lib/pg/bin");
        fake_bindir(&real);
        let link_dir = tmp.path().join("usr-local-bin");
        std::fs::create_dir_all(&link_dir).unwrap();
        // Only initdb is linked, as a distribution might do; pg_ctl lives in the real dir.
        symlink(real.join("initdb"), link_dir.join("initdb")).unwrap();
        let empty_root = tmp.path().join("none");
        let got = discover(
            None,
            Some(&path_of(&[&link_dir])),
            no_pg_config,
            &empty_root,
        )
        .unwrap();
        assert_eq!(got, real.canonicalize().unwrap());
    }

    #[test]
    fn pg_config_is_used_after_path() {
        let tmp = tempfile::tempdir().unwrap();
        let answer = tmp.path().join("cfg/bin");
        fake_bindir(&answer);
        let reported = answer.clone();
        let got = discover(
            None,
            Some(&path_of(&[&tmp.path().join("empty")])),
            move |_| Some(reported),
            &tmp.path().join("none"),
        )
        .unwrap();
        assert_eq!(got, answer);
    }

    #[test]
    fn pg_config_answer_without_binaries_is_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("versions");
        fake_bindir(&root.join("14/bin"));
        let got = discover(
            None,
            None,
            |_| Some(PathBuf::from("/nonexistent/bin")),
            &root,
        )
        .unwrap();
        assert_eq!(got, root.join("14/bin"));
    }

    #[test]
    fn highest_numeric_version_wins() {
        let cases: &[(&[&str], &str)] = &[
            (&["9.6", "10", "15"], "15"),
            (&["9.6", "10"], "10"),
            (&["9.5", "9.6"], "9.6"),
            (&["16", "notaversion", "12"], "16"),
        ];
        for (versions, want) in cases {
            let tmp = tempfile::tempdir().unwrap();
            for v in *versions {
                fake_bindir(&tmp.path().join(v).join("bin"));
            }
            let got = discover(None, None, no_pg_config, tmp.path()).unwrap();
            assert_eq!(got, tmp.path().join(want).join("bin"), "{versions:?}");
        }
    }

    #[test]
    fn version_dir_without_binaries_is_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        fake_bindir(&tmp.path().join("13/bin"));
        std::fs::create_dir_all(tmp.path().join("17/bin")).unwrap();
        let got = discover(None, None, no_pg_config, tmp.path()).unwrap();
        assert_eq!(got, tmp.path().join("13/bin"));
    }

    #[test]
    fn nothing_found_says_what_to_install() {
        let tmp = tempfile::tempdir().unwrap();
        let err = discover(
            None,
            Some(&path_of(&[tmp.path()])),
            no_pg_config,
            tmp.path(),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("apt-get install -y postgresql"), "{text}");
        assert!(text.contains("MANA_AI_PG_BINDIR"), "{text}");
    }

    #[test]
    fn real_machine_has_binaries() {
        // The development machine and CI have PostgreSQL installed; every integration test
        // depends on this, so fail early and clearly here if it is missing.
        let dir = find_pg_bindir().unwrap();
        assert!(is_bindir(&dir), "{dir:?}");
    }
}
