//! Creating, starting, reusing and stopping one private PostgreSQL cluster.
//!
//! Files for a data directory `<parent>/<name>`:
//! - `<parent>/<name>/`: the cluster (owned by the OS user, mode 0700), with our settings in
//!   `mana-ai.conf` (rewritten on every start, included from `postgresql.conf`);
//! - `<parent>/<name>.log`: the server log;
//! - `<parent>/<name>.superuser-password`: the `postgres` password, mode 0600 (persistent
//!   clusters; throwaway clusters keep it in memory and delete the file after `initdb`);
//! - `<parent>/<name>.port`: the port, so a restarted `mana-ai dev` finds it again
//!   (persistent clusters only).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

#[cfg(test)]
use crate::host::HEX;
use crate::host::{
    conf_quote, free_port, generate_password, log_tail, percent_encode, port_answers, port_taken,
    process_alive, read_password, remove_file_if_present, running_postmaster,
};
use crate::runas::{self, Identity};
use crate::{resolve_pg_bindir, ClusterError};

/// Name of the settings file this crate manages inside the data directory.
const MANAGED_CONF: &str = "mana-ai.conf";
/// Line appended once to `postgresql.conf`.
const INCLUDE_LINE: &str = "include_if_exists = 'mana-ai.conf'";
/// How often an automatically chosen port is re-picked when another process grabbed it.
const PORT_ATTEMPTS: usize = 5;
/// Longest unix socket path the kernel accepts (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// Seconds `pg_ctl -w` waits for start/stop.
const PG_CTL_TIMEOUT_SECS: &str = "60";

/// Watchdog for throwaway clusters, run by `/bin/sh` as this process's user.
/// Arguments: `$1` the pid to watch, `$2` the data directory, then extra files to delete.
/// When the watched process is gone (exit, panic, SIGKILL), the postmaster gets SIGQUIT
/// (immediate shutdown), SIGKILL after 10 s if still there, and everything is removed.
const WATCHDOG_SCRIPT: &str = r#"
parent=$1; dir=$2; shift 2
while kill -0 "$parent" 2>/dev/null; do sleep 1; done
pidfile="$dir/postmaster.pid"
if [ -f "$pidfile" ]; then
  pm=$(head -n 1 "$pidfile")
  case "$pm" in ''|*[!0-9]*) pm='' ;; esac
  if [ -n "$pm" ]; then
    kill -QUIT "$pm" 2>/dev/null
    n=0
    while [ -f "$pidfile" ] && kill -0 "$pm" 2>/dev/null && [ "$n" -lt 10 ]; do
      sleep 1; n=$((n + 1))
    done
    if [ -f "$pidfile" ]; then kill -KILL "$pm" 2>/dev/null; fi
  fi
fi
rm -rf -- "$dir" "$@"
"#;

/// How to create or find a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The cluster's data directory. Created if missing; sidecar files (log, password,
    /// port) go next to it in its parent directory.
    pub data_dir: PathBuf,
    /// TCP port on 127.0.0.1. `None`: reuse the persisted port of a persistent cluster,
    /// otherwise pick a free loopback port.
    pub port: Option<u16>,
    /// OS user the server runs as when this process is root (default `"mana-ai-pg"`,
    /// created with `useradd --system` if missing). Ignored when not root.
    pub os_user: Option<String>,
    /// `true`: keep data, password and port across restarts, reuse a running server, and
    /// leave the server running on drop. `false` (throwaway): fast unsafe settings
    /// (`--no-sync`, `fsync=off`, `synchronous_commit=off`), password only in memory,
    /// stopped and deleted on drop or when the starting process dies.
    pub persistent: bool,
    /// PostgreSQL's binaries directory as configured by the caller (`mana-ai` passes its
    /// validated `MANA_AI_PG_BINDIR`). `None`: discovered (see [`crate::find_pg_bindir`]).
    pub bindir: Option<PathBuf>,
}

impl ClusterConfig {
    /// A persistent cluster in `data_dir` (for `mana-ai dev`), port chosen automatically.
    pub fn persistent(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            port: None,
            os_user: None,
            persistent: true,
            bindir: None,
        }
    }

    /// A throwaway cluster in `data_dir` (must be missing or empty), port chosen
    /// automatically.
    pub fn throwaway(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            port: None,
            os_user: None,
            persistent: false,
            bindir: None,
        }
    }
}

/// A running private PostgreSQL cluster listening on `127.0.0.1:port()`.
///
/// Dropping a throwaway cluster stops it (immediate mode) and deletes its files; dropping a
/// persistent one leaves the server running (call [`Cluster::stop`] to stop it).
pub struct Cluster {
    bindir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    password_file: PathBuf,
    port_file: PathBuf,
    port: u16,
    password: Zeroizing<String>,
    persistent: bool,
    run_as: Option<Identity>,
    watchdog: Option<Child>,
    /// Set once shut down, so `Drop` does nothing more.
    finished: bool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("data_dir", &self.data_dir)
            .field("port", &self.port)
            .field("persistent", &self.persistent)
            .field("os_user", &self.run_as.as_ref().map(|id| &id.name))
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Creates (initdb) the cluster if `cfg.data_dir` is not one yet, then starts it with
    /// `pg_ctl -w`, or reuses it when a persistent cluster's postmaster is already running.
    ///
    /// Blocking (std::process); call from a blocking context or accept a short stall.
    /// Errors: binaries missing, OS user, file system, `initdb`/`pg_ctl` failures (with the
    /// tail of the server log), a throwaway directory that is not empty, a persistent
    /// cluster whose password file is gone, or a running cluster on another port than
    /// `cfg.port`.
    pub fn start(cfg: ClusterConfig) -> Result<Cluster, ClusterError> {
        let bindir = resolve_pg_bindir(cfg.bindir.as_deref())?;
        let data_dir = std::path::absolute(&cfg.data_dir)
            .map_err(|e| ClusterError::io(format!("could not resolve {:?}", cfg.data_dir), e))?;
        let invalid = |reason: &str| ClusterError::InvalidDataDir {
            path: data_dir.clone(),
            reason: reason.to_owned(),
        };
        let name = data_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| invalid("needs a UTF-8 final component"))?
            .to_owned();
        let parent = data_dir
            .parent()
            .ok_or_else(|| invalid("needs a parent directory"))?
            .to_path_buf();
        let run_as = runas::resolve(cfg.os_user.as_deref())?;
        std::fs::create_dir_all(&parent)
            .map_err(|e| ClusterError::io(format!("could not create {parent:?}"), e))?;
        if let Some(id) = &run_as {
            runas::ensure_traversable(&parent, id)?;
        }
        let mut cluster = Cluster {
            bindir,
            log_file: parent.join(format!("{name}.log")),
            password_file: parent.join(format!("{name}.superuser-password")),
            port_file: parent.join(format!("{name}.port")),
            data_dir,
            port: 0,
            password: Zeroizing::new(String::new()),
            persistent: cfg.persistent,
            run_as,
            watchdog: None,
            finished: false,
        };
        if cfg.persistent {
            cluster.start_persistent(cfg.port)?;
        } else {
            // On error, `cluster` is dropped here, which cleans up what was created.
            cluster.start_throwaway(cfg.port)?;
        }
        Ok(cluster)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgresql://postgres:<password>@127.0.0.1:<port>/<db>` (the database name is
    /// percent-encoded where needed). Contains the secret: do not log it.
    pub fn superuser_url(&self, db: &str) -> String {
        format!(
            "postgresql://postgres:{}@127.0.0.1:{}/{}",
            self.password.as_str(),
            self.port,
            percent_encode(db)
        )
    }

    /// The (absolute) data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server log file (`<parent>/<name>.log`).
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The directory the PostgreSQL binaries were taken from.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// Whether this is a persistent (dev) cluster.
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// The postmaster's pid when it is running (read from `postmaster.pid`).
    pub fn postmaster_pid(&self) -> Option<u32> {
        running_postmaster(&self.data_dir).map(|(pid, _)| pid)
    }

    /// Stops the server (`pg_ctl stop -m fast`). A throwaway cluster's files are deleted
    /// as well; a persistent cluster keeps its data, password and port for the next start.
    pub fn stop(mut self) -> Result<(), ClusterError> {
        self.shutdown("fast")
    }

    fn start_persistent(&mut self, requested: Option<u16>) -> Result<(), ClusterError> {
        let is_cluster = self.data_dir.join("PG_VERSION").is_file();
        if is_cluster {
            self.password = read_password(&self.password_file).ok_or_else(|| {
                ClusterError::PasswordFileMissing {
                    data_dir: self.data_dir.clone(),
                    password_file: self.password_file.clone(),
                }
            })?;
        } else {
            self.write_new_password()?;
            self.initdb(false)?;
        }
        // A recorded live pid is only trusted if the port answers too (after a reboot the
        // pid may belong to an unrelated process; then postgres itself sorts the stale
        // lock file out on start).
        let running = running_postmaster(&self.data_dir).filter(|&(_, port)| port_answers(port));
        if let Some((pid, port)) = running {
            if let Some(requested) = requested.filter(|&r| r != port) {
                return Err(ClusterError::PortMismatch {
                    data_dir: self.data_dir.clone(),
                    running: port,
                    requested,
                });
            }
            tracing::info!(pid, port, data_dir = %self.data_dir.display(), "reusing running PostgreSQL cluster");
            self.port = port;
        } else {
            let persisted = std::fs::read_to_string(&self.port_file)
                .ok()
                .and_then(|s| s.trim().parse::<u16>().ok());
            self.launch(requested.or(persisted))?;
        }
        runas::write_private(&self.port_file, format!("{}\n", self.port).as_bytes(), None)
    }

    /// A fresh superuser password, written where `initdb` (as the cluster's OS user) reads it.
    fn write_new_password(&mut self) -> Result<(), ClusterError> {
        self.password = generate_password()?;
        runas::write_private(
            &self.password_file,
            self.password.as_bytes(),
            self.run_as.as_ref(),
        )
    }

    fn start_throwaway(&mut self, requested: Option<u16>) -> Result<(), ClusterError> {
        let not_empty = std::fs::read_dir(&self.data_dir)
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false);
        if not_empty {
            // Nothing of ours to clean up: do not let Drop delete someone's directory.
            self.finished = true;
            return Err(ClusterError::DataDirNotEmpty {
                path: self.data_dir.clone(),
            });
        }
        self.watchdog = Some(self.spawn_watchdog()?);
        self.write_new_password()?;
        let created = self.initdb(true);
        remove_file_if_present(&self.password_file);
        created?;
        self.launch(requested)
    }

    /// Starts a watchdog that stops and deletes this throwaway cluster once this process
    /// is gone, however it ends.
    fn spawn_watchdog(&self) -> Result<Child, ClusterError> {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("mana-ai-pg-watchdog")
            .arg(std::process::id().to_string())
            .arg(&self.data_dir)
            .arg(&self.log_file)
            .arg(&self.password_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group: a signal to the test's group must not take it down too.
            .process_group(0)
            .spawn()
            .map_err(|e| ClusterError::io("could not start the cluster watchdog", e))
    }

    /// Creates the data directory and runs `initdb` (password from the password file).
    fn initdb(&self, throwaway: bool) -> Result<(), ClusterError> {
        let id = self.run_as.as_ref();
        std::fs::create_dir_all(&self.data_dir)
            .map_err(|e| ClusterError::io(format!("could not create {:?}", self.data_dir), e))?;
        runas::chown(&self.data_dir, id)?;
        std::fs::set_permissions(
            &self.data_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .map_err(|e| ClusterError::io(format!("could not chmod {:?}", self.data_dir), e))?;
        let mut cmd = runas::command(&self.bindir.join("initdb"), id);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8"])
            .arg("--locale=C")
            .arg(format!("--pwfile={}", self.password_file.display()));
        if throwaway {
            cmd.arg("--no-sync");
        }
        runas::run(cmd, "initdb")?;
        // The data dir belongs to the PostgreSQL OS user: never follow a symlink there.
        let conf = self.data_dir.join("postgresql.conf");
        let mut text = runas::read_no_follow(&conf)?;
        if !text.lines().any(|l| l.trim() == INCLUDE_LINE) {
            text.push_str("\n# Added by mana-ai-pgcluster: settings managed by it.\n");
            text.push_str(INCLUDE_LINE);
            text.push('\n');
            runas::write_private(&conf, text.as_bytes(), id)?;
        }
        Ok(())
    }

    /// Starts the server with `pg_ctl -w` on `port`, or on a free port (re-picked a few
    /// times if another process takes it first).
    fn launch(&mut self, port: Option<u16>) -> Result<(), ClusterError> {
        let attempts = if port.is_some() { 1 } else { PORT_ATTEMPTS };
        let mut last_error = None;
        for _ in 0..attempts {
            let candidate = match port {
                Some(p) => p,
                None => free_port()?,
            };
            self.write_managed_conf(candidate)?;
            runas::touch_private(&self.log_file, self.run_as.as_ref())?;
            let mut cmd = runas::command(&self.bindir.join("pg_ctl"), self.run_as.as_ref());
            cmd.arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&self.log_file)
                .args(["-w", "-t", PG_CTL_TIMEOUT_SECS, "start"]);
            let out = cmd
                .output()
                .map_err(|e| ClusterError::io("could not run pg_ctl start", e))?;
            if out.status.success() {
                self.port = candidate;
                tracing::info!(port = candidate, data_dir = %self.data_dir.display(), "PostgreSQL cluster started");
                return Ok(());
            }
            let error = ClusterError::CommandFailed {
                program: "pg_ctl start".into(),
                status: out.status.to_string(),
                output: format!(
                    "{}\n--- last lines of {} ---\n{}",
                    runas::combined_output(&out),
                    self.log_file.display(),
                    log_tail(&self.log_file, 20)
                ),
            };
            if port.is_some() || !port_taken(candidate) {
                return Err(error);
            }
            tracing::debug!(port = candidate, "port taken meanwhile; picking another");
            last_error = Some(error);
        }
        Err(ClusterError::StartFailed(format!(
            "no free port after {attempts} attempts; last error: {}",
            last_error.map(|e| e.to_string()).unwrap_or_default()
        )))
    }

    /// Writes `mana-ai.conf`: loopback only, the port, the socket directory and, for
    /// throwaway clusters, durability switched off.
    fn write_managed_conf(&self, port: u16) -> Result<(), ClusterError> {
        let socket_dir = self.data_dir.to_string_lossy();
        // ".s.PGSQL.<port>" plus the separator.
        let socket_len = socket_dir.len() + 1 + ".s.PGSQL.".len() + port.to_string().len();
        let socket_setting = if socket_len <= MAX_SOCKET_PATH {
            conf_quote(&socket_dir)
        } else {
            // Too long for a unix socket: TCP only.
            "''".to_owned()
        };
        let mut conf = format!(
            "# Managed by mana-ai-pgcluster and rewritten on every start; do not edit.\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = {socket_setting}\n\
             logging_collector = off\n"
        );
        if !self.persistent {
            conf.push_str(
                "fsync = off\n\
                 synchronous_commit = off\n\
                 full_page_writes = off\n",
            );
        }
        runas::write_private(
            &self.data_dir.join(MANAGED_CONF),
            conf.as_bytes(),
            self.run_as.as_ref(),
        )
    }

    /// Stops the server with `pg_ctl stop -m <mode>`; for throwaway clusters also ends the
    /// watchdog and deletes the files. Idempotent.
    fn shutdown(&mut self, mode: &str) -> Result<(), ClusterError> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let mut result = Ok(());
        if running_postmaster(&self.data_dir).is_some() {
            let mut cmd = runas::command(&self.bindir.join("pg_ctl"), self.run_as.as_ref());
            cmd.arg("-D").arg(&self.data_dir).args([
                "-m",
                mode,
                "-w",
                "-t",
                PG_CTL_TIMEOUT_SECS,
                "stop",
            ]);
            if let Err(e) = runas::run(cmd, "pg_ctl stop") {
                if running_postmaster(&self.data_dir).is_some() {
                    result = Err(e);
                }
            }
        }
        if !self.persistent {
            if result.is_err() {
                self.kill_postmaster();
            }
            if let Some(mut watchdog) = self.watchdog.take() {
                // It may already have exited; either way it must not outlive us.
                let _ = watchdog.kill();
                let _ = watchdog.wait();
            }
            if let Err(e) = std::fs::remove_dir_all(&self.data_dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(error = %e, dir = %self.data_dir.display(), "could not delete throwaway cluster");
                }
            }
            remove_file_if_present(&self.log_file);
            remove_file_if_present(&self.password_file);
        }
        result
    }

    /// Last resort for a throwaway cluster pg_ctl could not stop: SIGQUIT, then SIGKILL.
    fn kill_postmaster(&self) {
        use nix::sys::signal::{kill, Signal};
        let Some((pid, _)) = running_postmaster(&self.data_dir) else {
            return;
        };
        let Ok(raw) = i32::try_from(pid) else {
            return;
        };
        let target = nix::unistd::Pid::from_raw(raw);
        let _ = kill(target, Signal::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if process_alive(pid) {
            let _ = kill(target, Signal::SIGKILL);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.persistent || self.finished {
            return;
        }
        if let Err(e) = self.shutdown("immediate") {
            tracing::warn!(error = %e, "could not stop throwaway PostgreSQL cluster");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_table() {
        let cases = [
            ("mana_sync", "mana_sync"),
            ("a b", "a%20b"),
            ("x/y?z", "x%2Fy%3Fz"),
            ("ü", "%C3%BC"),
            ("Te-st.1~", "Te-st.1~"),
        ];
        for (input, want) in cases {
            assert_eq!(percent_encode(input), want, "{input}");
        }
    }

    #[test]
    fn conf_quote_escapes_quotes_and_backslashes() {
        let cases = [
            ("/tmp/x", "'/tmp/x'"),
            ("/tmp/it's", "'/tmp/it''s'"),
            ("a\\b", "'a\\\\b'"),
        ];
        for (input, want) in cases {
            assert_eq!(conf_quote(input), want);
        }
    }

    #[test]
    fn passwords_are_48_hex_chars_and_differ() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.len(), 48);
        assert!(a.bytes().all(|c| HEX.contains(&c)));
        assert_ne!(*a, *b);
    }

    #[test]
    fn running_postmaster_reads_pid_and_port_and_checks_liveness() {
        let tmp = tempfile::tempdir().unwrap();
        let me = std::process::id();
        std::fs::write(
            tmp.path().join("postmaster.pid"),
            format!("{me}\n/data\n1700000000\n54321\n/tmp\n127.0.0.1\n  1 2\nready\n"),
        )
        .unwrap();
        assert_eq!(running_postmaster(tmp.path()), Some((me, 54321)));
        // A pid that cannot exist (above pid_max) is not running.
        std::fs::write(
            tmp.path().join("postmaster.pid"),
            "2147483000\n/data\n1\n54321\n",
        )
        .unwrap();
        assert_eq!(running_postmaster(tmp.path()), None);
        std::fs::remove_file(tmp.path().join("postmaster.pid")).unwrap();
        assert_eq!(running_postmaster(tmp.path()), None);
    }

    #[test]
    fn debug_does_not_reveal_the_password() {
        let cluster = Cluster {
            bindir: PathBuf::from("/bin"),
            data_dir: PathBuf::from("/nonexistent/data"),
            log_file: PathBuf::from("/nonexistent/data.log"),
            password_file: PathBuf::from("/nonexistent/data.superuser-password"),
            port_file: PathBuf::from("/nonexistent/data.port"),
            port: 1,
            password: Zeroizing::new("s3cr3t-value".into()),
            persistent: true,
            run_as: None,
            watchdog: None,
            finished: true,
        };
        let text = format!("{cluster:?}");
        assert!(!text.contains("s3cr3t-value"), "{text}");
        assert!(cluster.superuser_url("db").contains("s3cr3t-value"));
    }
}
