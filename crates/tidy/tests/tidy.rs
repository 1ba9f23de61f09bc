//! Tidy checks (as rust-analyzer keeps them): the invariants ARCHITECTURE.md states, checked
//! against the workspace's own source so they cannot quietly stop being true.
//!
//! Each check reads the non-test part of every `crates/*/src` file: the text before the
//! first `#[cfg(test)]` line (unit-test modules sit at the end of a file by convention), with
//! comment lines removed where the rule is about code.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use regex::Regex;

/// Most non-test lines a source file may have.
const MAX_FILE_LINES: usize = 600;
/// Most lines a function may span (signature to closing brace).
const MAX_FN_LINES: usize = 80;
/// Functions allowed to be longer: declarative tables, not logic. `path:fn_name`.
const LONG_FN_ALLOWED: &[&str] = &[
    // One registration per metric, in the order of docs/metrics.md.
    "crates/runner/src/metrics.rs:new",
    // One line per environment variable: how it is read, and how `mana-ai config` shows it.
    "crates/server/src/config/mod.rs:from_env",
    "crates/server/src/config/describe.rs:describe",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Every file under `crates/*/src` with one of the extensions, as (path relative to the root,
/// contents).
fn source_files(exts: &[&str]) -> Vec<(String, String)> {
    let root = workspace_root();
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = fs::read_dir(root.join("crates"))
        .expect("crates dir")
        .map(|e| e.expect("dir entry").path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
            {
                let rel = path
                    .strip_prefix(&root)
                    .expect("under root")
                    .to_string_lossy()
                    .replace('\\', "/");
                let text = fs::read_to_string(&path).expect("utf-8 source");
                out.push((rel, text));
            }
        }
    }
    out.sort();
    assert!(
        out.len() > 20,
        "tidy found too few source files: {}",
        out.len()
    );
    out
}

/// The part of a file before its unit tests.
fn non_test(text: &str) -> &str {
    match text.find("\n#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// Non-test code with comment lines (`//`, `//!`, `///`) blanked, line numbers kept.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    non_test(text)
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l))
        .collect()
}

fn in_crate(path: &str, krate: &str) -> bool {
    path.starts_with(&format!("crates/{krate}/"))
}

fn report(what: &str, offenders: &[String]) {
    assert!(
        offenders.is_empty(),
        "{what}:\n  {}",
        offenders.join("\n  ")
    );
}

/// A closure inside an AVX2 kernel may be compiled out of line, without the target
/// features, and then every intrinsic in it is a function call: 3–4× slower, nothing fails
/// (docs/local-model.md). The kernels file has none.
#[test]
fn simd_kernels_have_no_closures() {
    let closure = Regex::new(r"\|[^|]*\|").expect("regex");
    let kernels = "crates/local-llm/src/quant/x86.rs";
    let mut offenders = Vec::new();
    let mut seen = false;
    for (path, text) in source_files(&["rs"]) {
        if path != kernels {
            continue;
        }
        seen = true;
        for (n, line) in code_lines(&text) {
            if closure.is_match(line) {
                offenders.push(format!("{path}:{n}: {}", line.trim()));
            }
        }
    }
    assert!(
        seen,
        "{kernels} not found: update this rule if the kernels moved"
    );
    report("closures (or `||`) in the AVX2 kernels", &offenders);
}

#[test]
fn every_module_opens_with_a_doc_comment() {
    let offenders: Vec<String> = source_files(&["rs"])
        .into_iter()
        .filter(|(_, text)| {
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            !first.starts_with("//!")
        })
        .map(|(p, _)| p)
        .collect();
    report("modules without a `//!` doc at the top", &offenders);
}

#[test]
fn sql_and_the_event_log_live_only_in_the_store() {
    let sql = Regex::new(
        r"\b(SELECT\s+[\w*(]|INSERT\s+INTO|UPDATE\s+[\w.]+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|DATABASE|ROLE|INDEX|FUNCTION|SCHEMA|EXTENSION|POLICY)|DROP\s+(TABLE|DATABASE|ROLE|INDEX|FUNCTION|SCHEMA|OWNED)|ALTER\s+(TABLE|ROLE|DATABASE|SCHEMA)|GRANT\s+[A-Z]|REVOKE\s+[A-Z]|FROM\s+[a-z_.]+|WHERE\s+[a-z_]|pg_advisory|pg_terminate_backend)",
    )
    .expect("regex");
    // Outside string literals, the table's name is code that touches it (an identifier such
    // as `create_sync_changes_for_dev`); inside one, SQL text gives itself away above. A
    // metric's help text may still name the table in prose.
    let string = Regex::new(r#""(\\.|[^"\\])*""#).expect("regex");
    let mut offenders = Vec::new();
    for (path, text) in source_files(&["rs", "sql"]) {
        if in_crate(&path, "store") {
            continue;
        }
        for (n, line) in code_lines(&text) {
            let outside_strings = string.replace_all(line, "\"\"");
            if sql.is_match(line) || outside_strings.contains("sync_changes") {
                offenders.push(format!("{path}:{n}: {}", line.trim()));
            }
        }
    }
    report("SQL or `sync_changes` outside crates/store", &offenders);
}

#[test]
fn the_environment_is_read_only_in_config() {
    let env = Regex::new(r"\benv::(var|var_os|vars|vars_os)\b").expect("regex");
    let mut offenders = Vec::new();
    for (path, text) in source_files(&["rs"]) {
        // Each crate reads the environment in its `config` module only: the server's for
        // everything the service runs with, pgcluster's for where PostgreSQL is installed.
        if path.ends_with("/src/config.rs") || path.contains("/src/config/") {
            continue;
        }
        for (n, line) in code_lines(&text) {
            if env.is_match(line) {
                offenders.push(format!("{path}:{n}: {}", line.trim()));
            }
        }
    }
    report("environment read outside a crate's config.rs", &offenders);
}

#[test]
fn advisory_lock_keys_live_only_in_the_locks_module() {
    // A literal key handed to an advisory-lock function, a key-like constant, or one of the
    // project's key values (the 73667200xx family).
    let literal_call = Regex::new(r"pg_(try_)?advisory_\w*lock\w*\(\s*-?\d").expect("regex");
    let key_value = Regex::new(r"\b7_?366_?720_?0\d\d\b").expect("regex");
    let key_const = Regex::new(r"const\s+\w*LOCK\w*\s*:\s*i64").expect("regex");
    let hashed_seed = Regex::new(r"hashtextextended\([^)]*,\s*-?\d").expect("regex");
    let mut offenders = Vec::new();
    for (path, text) in source_files(&["rs", "sql"]) {
        if path == "crates/store/src/locks.rs" {
            continue;
        }
        for (n, line) in code_lines(&text) {
            if literal_call.is_match(line)
                || key_value.is_match(line)
                || key_const.is_match(line)
                || hashed_seed.is_match(line)
            {
                offenders.push(format!("{path}:{n}: {}", line.trim()));
            }
        }
    }
    report(
        "advisory-lock keys outside crates/store/src/locks.rs",
        &offenders,
    );
}

#[test]
fn source_files_stay_readable_in_size() {
    let offenders: Vec<String> = source_files(&["rs"])
        .into_iter()
        .filter_map(|(path, text)| {
            let n = non_test(&text).lines().count();
            (n > MAX_FILE_LINES).then(|| format!("{path}: {n} non-test lines"))
        })
        .collect();
    report(
        &format!("files over {MAX_FILE_LINES} non-test lines"),
        &offenders,
    );
}

#[test]
fn functions_stay_short() {
    let fn_start = Regex::new(
        r"^(\s*)(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\S+\s+)?fn\s+(\w+)",
    )
    .expect("regex");
    let mut offenders = Vec::new();
    for (path, text) in source_files(&["rs"]) {
        let lines: Vec<&str> = non_test(&text).lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(c) = fn_start.captures(line) else {
                continue;
            };
            let indent = &c[1];
            let name = &c[8];
            // rustfmt closes a body at the indentation of its `fn` line.
            let close = format!("{indent}}}");
            let Some(len) = lines[i..].iter().position(|l| *l == close) else {
                continue; // a declaration without a body (trait method)
            };
            if lines[i..i + len]
                .iter()
                .any(|l| l.trim_end().ends_with(';'))
                && !lines[i..i + len].iter().any(|l| l.contains('{'))
            {
                continue;
            }
            let key = format!("{path}:{name}");
            if len + 1 > MAX_FN_LINES && !LONG_FN_ALLOWED.contains(&key.as_str()) {
                offenders.push(format!("{path}:{}: fn {name} has {} lines", i + 1, len + 1));
            }
        }
    }
    report(&format!("functions over {MAX_FN_LINES} lines"), &offenders);
}

#[test]
fn sibling_modules_do_not_import_each_other() {
    // Within a crate, a top-level module `a` using `crate::b` while `b` uses `crate::a` is a
    // circle: one of them should own the shared piece.
    let uses = Regex::new(r"crate::(\w+)").expect("regex");
    let mut graph: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (path, text) in source_files(&["rs"]) {
        let mut parts = path.split('/');
        let (Some(_), Some(krate), Some(_), Some(file)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let module = file.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        for (_, line) in code_lines(&text) {
            for c in uses.captures_iter(line) {
                if c[1] != module {
                    graph
                        .entry((krate.to_string(), module.clone()))
                        .or_default()
                        .insert(c[1].to_string());
                }
            }
        }
    }
    let mut offenders = Vec::new();
    for ((krate, a), targets) in &graph {
        for b in targets {
            let back = graph
                .get(&(krate.clone(), b.clone()))
                .is_some_and(|t| t.contains(a));
            if back && a < b {
                offenders.push(format!("{krate}: {a} ↔ {b}"));
            }
        }
    }
    report("modules that import each other", &offenders);
}

#[test]
fn architecture_code_map_names_every_crate_and_only_real_paths() {
    let root = workspace_root();
    let arch = fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut offenders = Vec::new();
    for entry in fs::read_dir(root.join("crates")).expect("crates dir") {
        let dir = entry.expect("dir entry").path();
        let name = dir.file_name().expect("name").to_string_lossy().to_string();
        if !arch.contains(&format!("crates/{name}")) {
            offenders.push(format!("crates/{name} is not in the code map"));
        }
    }
    let paths = Regex::new(r"`((?:crates|docs|deploy)/[A-Za-z0-9_./-]+)`").expect("regex");
    for c in paths.captures_iter(&arch) {
        let p = c[1].trim_end_matches('/');
        if !root.join(p).exists() {
            offenders.push(format!("ARCHITECTURE.md names `{p}`, which does not exist"));
        }
    }
    report("ARCHITECTURE.md code map", &offenders);
}
