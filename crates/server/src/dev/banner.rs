//! The start-up banner of `mana-ai dev`: where the data, database and HTTP endpoints are,
//! how to call them and how to stop the cluster, with no secrets in it.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use mana_ai_pgcluster::DEFAULT_OS_USER;

use super::{SeedReport, DEMO_USER};
use crate::config::{mask_url, Config, DEFAULT_SERVICE_KEY};

/// Everything the start-up banner shows.
pub struct BannerInfo<'a> {
    pub cfg: &'a Config,
    pub data_dir: &'a Path,
    /// The cluster's data directory, binaries, log file and port.
    pub pg_data_dir: &'a Path,
    pub pg_bindir: &'a Path,
    pub pg_log: &'a Path,
    pub pg_port: u16,
    pub running_as_root: bool,
    pub sync_url_ignored: bool,
    pub seeded: Option<&'a SeedReport>,
}

/// The start-up banner (no secrets: the database URL is masked, the service key is only
/// shown when it is the public default).
pub fn banner(info: &BannerInfo<'_>) -> String {
    let cfg = info.cfg;
    let base = http_base(cfg.bind, cfg.port);
    let key_hint = if cfg.service_key == DEFAULT_SERVICE_KEY {
        format!("X-Service-Key: {DEFAULT_SERVICE_KEY}   (the default; set MANA_SERVICE_KEY to change it)")
    } else {
        "X-Service-Key: <your MANA_SERVICE_KEY>".to_owned()
    };
    let pg_ctl = info.pg_bindir.join("pg_ctl");
    let stop_db = format!(
        "{}{} -D {} stop",
        if info.running_as_root {
            format!("runuser -u {DEFAULT_OS_USER} -- ")
        } else {
            String::new()
        },
        pg_ctl.display(),
        info.pg_data_dir.display()
    );
    let rule = "=".repeat(72);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(out, " mana-ai dev");
    let _ = writeln!(out, "   data dir   {}", info.data_dir.display());
    let _ = writeln!(
        out,
        "   database   {}   (PostgreSQL {} on port {}, log {})",
        mask_url(&cfg.sync_database_url),
        info.pg_bindir.display(),
        info.pg_port,
        info.pg_log.display()
    );
    let _ = writeln!(
        out,
        "   HTTP       {base}   (health: {base}/health, metrics: {base}/metrics)"
    );
    let _ = writeln!(out, "   service    {key_hint}");
    let _ = writeln!(
        out,
        "   tick       {}",
        if cfg.tick_enabled {
            format!("every {} ms", cfg.tick_interval.as_millis())
        } else {
            "off (TICK_ENABLED=false); POST /internal/tick runs a pass".to_owned()
        }
    );
    if info.sync_url_ignored {
        let _ = writeln!(
            out,
            "   note       SYNC_DATABASE_URL is ignored by `dev` (it uses its own cluster)"
        );
    }
    if let Some(seed) = info.seeded {
        write_seed(&mut out, seed, cfg, &base);
    }
    let _ = writeln!(
        out,
        "   stop       Ctrl-C (or SIGTERM). PostgreSQL keeps running for a fast restart;"
    );
    let _ = writeln!(out, "              stop it with: {stop_db}");
    let _ = write!(out, "{rule}");
    out
}

/// The demo lines of the banner: what was seeded, and how to look at it.
fn write_seed(out: &mut String, seed: &SeedReport, cfg: &Config, base: &str) {
    let list = |items: &[(&str, &str)]| {
        items
            .iter()
            .map(|(kind, id)| format!("{kind} {id}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !seed.inserted.is_empty() {
        let _ = writeln!(
            out,
            "   demo       seeded for user {DEMO_USER}: {}",
            list(&seed.inserted)
        );
    }
    if !seed.existing.is_empty() {
        let _ = writeln!(
            out,
            "   demo       already present for user {DEMO_USER}: {}",
            list(&seed.existing)
        );
    }
    let key = if cfg.service_key == DEFAULT_SERVICE_KEY {
        DEFAULT_SERVICE_KEY
    } else {
        "$MANA_SERVICE_KEY"
    };
    let _ = writeln!(
        out,
        "   look       curl -H 'X-Service-Key: {key}' {base}/internal/missions/{DEMO_USER}"
    );
    let _ = writeln!(
        out,
        "              (missions appear after the first tick; curl -X POST -H 'X-Service-Key: {key}' {base}/internal/tick runs one now)"
    );
}

/// The URL clients use: loopback when listening on all interfaces.
pub(super) fn http_base(bind: IpAddr, port: u16) -> String {
    let host = if bind.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        bind
    };
    format!("http://{}", SocketAddr::new(host, port))
}

/// Whether this process runs as root (then the cluster runs as [`DEFAULT_OS_USER`]).
pub(super) fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
