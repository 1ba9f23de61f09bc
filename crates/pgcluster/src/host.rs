//! What a cluster needs from the host, apart from PostgreSQL itself: live processes and
//! the postmaster's pid file, loopback ports, random passwords, small files, and the
//! quoting of `postgresql.conf` values and URL parts.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::ClusterError;

/// `(pid, port)` of the postmaster recorded in `postmaster.pid`, if that process is alive.
pub(crate) fn running_postmaster(data_dir: &Path) -> Option<(u32, u16)> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid: u32 = lines.next()?.trim().parse().ok()?;
    let port: u16 = lines.nth(2)?.trim().parse().ok()?;
    process_alive(pid).then_some((pid, port))
}

/// Whether `pid` is a live (not zombie) process.
pub(crate) fn process_alive(pid: u32) -> bool {
    use nix::errno::Errno;
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return false,
    }
    // An exited child of a parent that never reaps it still answers kill(0).
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !matches!(rest.trim_start().chars().next(), Some('Z' | 'X')))
            .unwrap_or(true),
        Err(_) => true, // No procfs: trust kill(0).
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| ClusterError::io("could not find a free loopback port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| ClusterError::io("could not find a free loopback port", e))
}

/// Whether a TCP connection to `127.0.0.1:port` succeeds within two seconds.
pub(crate) fn port_answers(port: u16) -> bool {
    let addr = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// Whether something else listens on `port` now.
pub(crate) fn port_taken(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err()
}

/// 24 random bytes from the OS, hex-encoded (URL-safe, no escaping needed).
pub(crate) fn generate_password() -> Result<Zeroizing<String>, ClusterError> {
    let mut bytes = Zeroizing::new([0u8; 24]);
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(bytes.as_mut()))
        .map_err(|e| ClusterError::io("could not read /dev/urandom", e))?;
    let mut hex = Zeroizing::new(String::with_capacity(48));
    for b in bytes.iter() {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    Ok(hex)
}

pub(crate) const HEX: &[u8; 16] = b"0123456789abcdef";

pub(crate) fn read_password(file: &Path) -> Option<Zeroizing<String>> {
    let raw = Zeroizing::new(std::fs::read_to_string(file).ok()?);
    let trimmed = raw.trim();
    (!trimmed.is_empty()).then(|| Zeroizing::new(trimmed.to_owned()))
}

pub(crate) fn remove_file_if_present(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(error = %e, file = %path.display(), "could not delete file");
        }
    }
}

/// The last `n` lines of a file (for error messages).
pub(crate) fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A `postgresql.conf` string literal.
pub(crate) fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)].to_ascii_uppercase()));
            out.push(char::from(HEX[usize::from(b & 0x0f)].to_ascii_uppercase()));
        }
    }
    out
}
