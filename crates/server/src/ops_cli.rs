//! Operator commands: the arguments of `mana-ai migrate [--status]` (run by
//! [`crate::app`]), the quarantine listing, and for mission key grants:
//!
//! - `mana-ai keys generate --out-dir DIR [--force]`: a fresh RSA-2048 key pair,
//!   `mana-ai-private.pem` (PKCS#8, mode 0600, for `MANA_AI_PRIVATE_KEY_PEM`) and
//!   `mana-ai-public.pem` (SPKI, for mana-auth's `MANA_AI_PUBLIC_KEY_PEM`).
//! - `mana-ai grant mint …`: a `MissionGrant` JSON minted exactly like mana-auth does
//!   (same derivation, TTL clamp 1 h–30 d, at most 1000 record ids, sorted scope), for
//!   tests and manual operation.
//! - `mana-ai quarantine list [--json] [--limit N]`: the `sync_changes` rows the refresh
//!   skipped (ids, reason, measurements; never row content), newest first.
//!
//! Key material never reaches stdout/stderr except the intended output (the grant JSON
//! holds only the RSA-wrapped key); error messages name files and rules, never bytes.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use mana_ai_core::crypto::{
    clamp_ttl_ms, generate_keypair, mint_grant, GrantPublicKey, KEY_LEN, MAX_RECORD_IDS,
};
use serde_json::Value;
use zeroize::Zeroizing;

/// File name of the generated private key.
pub const PRIVATE_FILE: &str = "mana-ai-private.pem";
/// File name of the generated public key.
pub const PUBLIC_FILE: &str = "mana-ai-public.pem";

/// Errors of the operator commands. Messages never contain key bytes.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{0} already exists (use --force to replace the key pair)")]
    Exists(PathBuf),
    #[error("key generation failed: {0}")]
    Keygen(String),
    #[error("{0}")]
    Input(String),
    #[error("cannot mint the grant: {0}")]
    Mint(String),
}

fn io_err(path: &Path, e: std::io::Error) -> OpsError {
    OpsError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// `mana-ai migrate [--status]`
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// List every migration of this binary as applied or pending (with when), and the
    /// database's version; change nothing.
    #[arg(long)]
    pub status: bool,
}

/// `mana-ai keys …`
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate the RSA-2048 key pair that wraps mission grants.
    Generate(KeysGenerateArgs),
}

#[derive(Debug, Args)]
pub struct KeysGenerateArgs {
    /// Directory for mana-ai-private.pem (mode 0600) and mana-ai-public.pem; created (0700) if missing.
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Replace an existing key pair (grants wrapped for the old key stop working).
    #[arg(long)]
    pub force: bool,
}

/// `mana-ai grant …`
#[derive(Debug, Args)]
pub struct GrantArgs {
    #[command(subcommand)]
    pub command: GrantCommand,
}

#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Mint a MissionGrant JSON for a mission (as mana-auth would) and print it.
    Mint(GrantMintArgs),
}

#[derive(Debug, Args)]
pub struct GrantMintArgs {
    /// The user's 32-byte master key as 64 hex digits. Visible in the process list and
    /// shell history: prefer --master-key-file or the environment variable.
    #[arg(
        long,
        value_name = "HEX",
        env = "MANA_AI_GRANT_MASTER_KEY_HEX",
        hide_env_values = true,
        conflicts_with = "master_key_file",
        required_unless_present = "master_key_file"
    )]
    pub master_key_hex: Option<String>,
    /// File holding the master key: 64 hex digits, or exactly 32 raw bytes; `-` reads stdin.
    #[arg(long, value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,
    /// mana-ai's public key PEM (SPKI "PUBLIC KEY"), e.g. mana-ai-public.pem.
    #[arg(long, value_name = "FILE")]
    pub public_key: PathBuf,
    /// The mission the grant is for (also the derivation salt).
    #[arg(long, value_name = "ID")]
    pub mission_id: String,
    /// A table in scope (repeat, or comma-separate).
    #[arg(long = "table", value_name = "T", required = true, num_args = 1.., value_delimiter = ',')]
    pub tables: Vec<String>,
    /// A record in scope as "<table>:<id>" (repeat, or comma-separate).
    #[arg(long = "record-id", value_name = "R", required = true, num_args = 1.., value_delimiter = ',')]
    pub record_ids: Vec<String>,
    /// Lifetime in ms (default 7 days; clamped to 1 hour..30 days).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub ttl_ms: Option<i64>,
}

/// Where `keys generate` wrote the pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedKeys {
    pub private_path: PathBuf,
    pub public_path: PathBuf,
}

/// Runs `keys generate`: refuses to replace existing files unless `force`.
pub fn keys_generate(args: &KeysGenerateArgs) -> Result<GeneratedKeys, OpsError> {
    let dir = &args.out_dir;
    create_private_dir(dir)?;
    let private_path = dir.join(PRIVATE_FILE);
    let public_path = dir.join(PUBLIC_FILE);
    if !args.force {
        for p in [&private_path, &public_path] {
            if fs::symlink_metadata(p).is_ok() {
                return Err(OpsError::Exists(p.clone()));
            }
        }
    }
    let (private_pem, public_pem) =
        generate_keypair().map_err(|e| OpsError::Keygen(e.to_string()))?;
    // Each file is written under a temporary name and renamed into place, so a reader
    // never sees a half-written key and a crash leaves the old pair intact.
    write_atomically(
        dir,
        &private_path,
        private_pem.as_bytes(),
        0o600,
        args.force,
    )?;
    if let Err(e) = write_atomically(dir, &public_path, public_pem.as_bytes(), 0o644, args.force) {
        if !args.force {
            let _ = fs::remove_file(&private_path);
        }
        return Err(e);
    }
    Ok(GeneratedKeys {
        private_path,
        public_path,
    })
}

fn create_private_dir(dir: &Path) -> Result<(), OpsError> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|e| io_err(dir, e))
}

fn write_atomically(
    dir: &Path,
    target: &Path,
    bytes: &[u8],
    mode: u32,
    replace: bool,
) -> Result<(), OpsError> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&tmp, e));
    }
    if !replace {
        // hard_link fails if the target appeared meanwhile: never clobber without --force.
        let linked = fs::hard_link(&tmp, target);
        let _ = fs::remove_file(&tmp);
        return linked.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                OpsError::Exists(target.to_path_buf())
            } else {
                io_err(target, e)
            }
        });
    }
    fs::rename(&tmp, target).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(target, e)
    })
}

/// Reads the master key from the arguments into a wiped buffer of exactly 32 bytes.
fn master_key(args: &GrantMintArgs) -> Result<Zeroizing<Vec<u8>>, OpsError> {
    if let Some(hex) = &args.master_key_hex {
        return parse_hex_key(hex.as_bytes(), "--master-key-hex");
    }
    let path = args
        .master_key_file
        .as_ref()
        .ok_or_else(|| OpsError::Input("give --master-key-hex or --master-key-file".into()))?;
    let mut raw = Zeroizing::new(Vec::new());
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut raw)
            .map_err(|e| io_err(path, e))?;
    } else {
        let mut f = fs::File::open(path).map_err(|e| io_err(path, e))?;
        f.read_to_end(&mut raw).map_err(|e| io_err(path, e))?;
    }
    if raw.len() == KEY_LEN {
        return Ok(raw);
    }
    parse_hex_key(&raw, "--master-key-file")
}

/// 64 hex digits (surrounding whitespace ignored) to 32 bytes.
fn parse_hex_key(text: &[u8], what: &str) -> Result<Zeroizing<Vec<u8>>, OpsError> {
    let trimmed = text.trim_ascii();
    let bad = || {
        OpsError::Input(format!(
            "{what}: expected {} hex digits (a {KEY_LEN}-byte master key)",
            KEY_LEN * 2
        ))
    };
    if trimmed.len() != KEY_LEN * 2 {
        return Err(bad());
    }
    let mut out = Zeroizing::new(Vec::with_capacity(KEY_LEN));
    for pair in trimmed.chunks_exact(2) {
        let hi = hex_val(pair[0]).ok_or_else(bad)?;
        let lo = hex_val(pair[1]).ok_or_else(bad)?;
        out.push(hi << 4 | lo);
    }
    Ok(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Runs `grant mint` at `now`: checks the scope, mints, returns the grant JSON and
/// notes for stderr (e.g. a clamped TTL).
pub fn grant_mint(
    args: &GrantMintArgs,
    now: DateTime<Utc>,
) -> Result<(Value, Vec<String>), OpsError> {
    let mut notes = Vec::new();
    let pem = fs::read_to_string(&args.public_key).map_err(|e| io_err(&args.public_key, e))?;
    let public = GrantPublicKey::from_pem(&pem).map_err(|e| {
        OpsError::Input(format!(
            "{}: not an RSA public key PEM ({e})",
            args.public_key.display()
        ))
    })?;
    if args.mission_id.trim().is_empty() {
        return Err(OpsError::Input("--mission-id must not be empty".into()));
    }
    if args.tables.iter().any(|t| t.is_empty() || t.contains(':')) {
        return Err(OpsError::Input(
            "--table: table names are non-empty and contain no ':'".into(),
        ));
    }
    if args.record_ids.len() > MAX_RECORD_IDS {
        return Err(OpsError::Input(format!(
            "--record-id: at most {MAX_RECORD_IDS} record ids, got {}",
            args.record_ids.len()
        )));
    }
    // Unlike the original issuer, check that every record id names a table in scope:
    // the resolver would otherwise audit it as a scope violation on every tick.
    for r in &args.record_ids {
        let ok = r
            .split_once(':')
            .is_some_and(|(t, id)| !id.is_empty() && args.tables.iter().any(|x| x == t));
        if !ok {
            return Err(OpsError::Input(format!(
                "--record-id {r:?}: expected \"<table>:<id>\" with a table given by --table"
            )));
        }
    }
    let ttl = clamp_ttl_ms(args.ttl_ms);
    if let Some(asked) = args.ttl_ms {
        if asked != ttl {
            notes.push(format!(
                "note: --ttl-ms {asked} clamped to {ttl} (allowed 1 hour..30 days)"
            ));
        }
    }
    let key = master_key(args)?;
    let grant = mint_grant(
        &key,
        &public,
        &args.mission_id,
        &args.tables,
        &args.record_ids,
        Some(ttl),
        now,
    )
    .map_err(|e| OpsError::Mint(e.to_string()))?;
    Ok((grant, notes))
}

/// Runs `mana-ai keys …`, printing what was written.
pub fn run_keys(args: &KeysArgs) -> Result<(), OpsError> {
    match &args.command {
        KeysCommand::Generate(g) => {
            let out = keys_generate(g)?;
            println!("wrote {} (mode 0600)", out.private_path.display());
            println!("wrote {}", out.public_path.display());
            println!(
                "mana-ai: set MANA_AI_PRIVATE_KEY_PEM from the private file; give mana-auth the public file as MANA_AI_PUBLIC_KEY_PEM."
            );
            Ok(())
        }
    }
}

/// Runs `mana-ai grant …`, printing the grant JSON on stdout.
pub fn run_grant(args: &GrantArgs) -> Result<(), OpsError> {
    match &args.command {
        GrantCommand::Mint(m) => {
            let (grant, notes) = grant_mint(m, Utc::now())?;
            for n in notes {
                eprintln!("{n}");
            }
            println!("{grant}");
            Ok(())
        }
    }
}

/// `mana-ai quarantine …`
#[derive(Debug, Args)]
pub struct QuarantineArgs {
    #[command(subcommand)]
    pub command: QuarantineCommand,
}

#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// List the event-log rows the refresh skipped (ids, reason, detail), newest first.
    List(QuarantineListArgs),
}

#[derive(Debug, Args)]
pub struct QuarantineListArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// At most this many rows.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: i64,
}

/// The quarantine listing as an aligned text table (one header line, one line per row).
pub fn quarantine_table(rows: &[mana_ai_store::QuarantinedRow]) -> String {
    let header = [
        "QUARANTINED_AT",
        "REASON",
        "USER_ID",
        "TABLE",
        "RECORD_ID",
        "CREATED_AT",
        "DETAIL",
    ];
    let iso = mana_ai_core::iso::to_iso_ms;
    let lines: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                iso(r.quarantined_at),
                r.reason.clone(),
                r.user_id.clone(),
                r.table_name.clone(),
                r.record_id.clone(),
                iso(r.created_at),
                r.detail.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.map(str::to_string);
    for line in std::iter::once(&header).chain(&lines) {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Runs `mana-ai quarantine …` against the service's database, printing to stdout.
pub async fn run_quarantine(
    store: &mana_ai_store::Store,
    args: &QuarantineArgs,
) -> anyhow::Result<()> {
    match &args.command {
        QuarantineCommand::List(l) => {
            let rows = store.list_quarantined(l.limit).await?;
            if l.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", quarantine_table(&rows));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_keys() {
        let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F";
        let k = parse_hex_key(format!(" {hex}\n").as_bytes(), "x").unwrap();
        assert_eq!(k.as_slice(), (0u8..32).collect::<Vec<_>>().as_slice());
        for bad in ["", "00", &hex[..63], &format!("{}zz", &hex[..62])] {
            let e = parse_hex_key(bad.as_bytes(), "x").unwrap_err().to_string();
            assert!(e.contains("64 hex digits"), "{e}");
        }
        // The message never echoes the input.
        let secret = "f".repeat(63) + "g";
        let e = parse_hex_key(secret.as_bytes(), "x")
            .unwrap_err()
            .to_string();
        assert!(!e.contains(&secret[..10]), "{e}");
    }
}
