//! The operator's assets cannot drift from the service: every metric and label that the
//! alert rules (`deploy/prometheus/mana-ai-rules.yml`) and the Grafana dashboard
//! (`deploy/grafana/mana-ai.json`) query is one the service exports; every alert has its
//! runbook section in docs/operations.md; and the rules pass their `promtool` unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use mana_ai_runner::Metrics;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Labels every series has besides its own: the constant label and the scrape target's.
const AMBIENT_LABELS: [&str; 3] = ["service", "instance", "job"];

/// Exported metric name → its label names. Histograms also answer to their `_bucket`
/// (with `le`), `_sum` and `_count` series; the process collector's metrics have no labels.
fn exported() -> BTreeMap<String, BTreeSet<String>> {
    let metrics = Metrics::new();
    let mut out = BTreeMap::new();
    for family in metrics.families() {
        let labels: BTreeSet<String> = family.labels.iter().cloned().collect();
        if family.kind == "histogram" {
            let mut with_le = labels.clone();
            with_le.insert("le".to_string());
            out.insert(format!("{}_bucket", family.name), with_le);
            out.insert(format!("{}_sum", family.name), labels.clone());
            out.insert(format!("{}_count", family.name), labels.clone());
        }
        out.insert(family.name, labels);
    }
    for family in metrics.registry.gather() {
        out.entry(family.name().to_string()).or_default();
    }
    out
}

/// The PromQL expressions of the rules file: the indented block after each `expr: |`.
fn rule_expressions(text: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(indent) = line.find("expr: |") else {
            continue;
        };
        let mut expr = String::new();
        while let Some(next) = lines.peek() {
            let body_indent = next.len() - next.trim_start().len();
            if next.trim().is_empty() || body_indent <= indent {
                break;
            }
            expr.push_str(next.trim());
            expr.push('\n');
            lines.next();
        }
        exprs.push(expr);
    }
    exprs
}

/// The PromQL expressions of the dashboard's panel targets and template queries.
fn dashboard_expressions(dashboard: &serde_json::Value) -> Vec<String> {
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => walk(value, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    walk(dashboard, &mut exprs);
    exprs
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `(metric, labels named in its selector)` for every `mana_ai_…` token, and the label
/// names of every `by (…)` / `without (…)` clause of the expression.
fn references(expr: &str) -> (Vec<(String, BTreeSet<String>)>, BTreeSet<String>) {
    let mut metrics = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("mana_ai_") {
        let preceded = rest[..at].chars().next_back().is_some_and(is_name_char);
        let tail = &rest[at..];
        let end = tail.find(|c| !is_name_char(c)).unwrap_or(tail.len());
        let name = tail[..end].to_string();
        let mut labels = BTreeSet::new();
        let after = &tail[end..];
        if let Some(selector) = after.strip_prefix('{') {
            let close = selector.find('}').expect("selector is closed");
            for matcher in selector[..close].split(',') {
                let label: String = matcher
                    .trim()
                    .chars()
                    .take_while(|c| is_name_char(*c))
                    .collect();
                if !label.is_empty() {
                    labels.insert(label);
                }
            }
        }
        if !preceded {
            metrics.push((name, labels));
        }
        rest = &tail[end..];
    }
    let mut grouping = BTreeSet::new();
    for keyword in ["by (", "without ("] {
        let mut rest = expr;
        while let Some(at) = rest.find(keyword) {
            let inner = &rest[at + keyword.len()..];
            let close = inner.find(')').expect("grouping is closed");
            for label in inner[..close].split(',') {
                grouping.insert(label.trim().to_string());
            }
            rest = &inner[close..];
        }
    }
    (metrics, grouping)
}

/// Checks one expression against the exported metrics; returns the problems found.
fn check(expr: &str, exported: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let (metrics, grouping) = references(expr);
    let mut problems = Vec::new();
    if metrics.is_empty() {
        problems.push(format!("no mana_ai metric in `{expr}`"));
    }
    let mut available: BTreeSet<String> = AMBIENT_LABELS.iter().map(|s| s.to_string()).collect();
    for (name, labels) in &metrics {
        let Some(known) = exported.get(name) else {
            problems.push(format!("`{name}` is not exported (in `{expr}`)"));
            continue;
        };
        available.extend(known.iter().cloned());
        for label in labels {
            if !known.contains(label) && !AMBIENT_LABELS.contains(&label.as_str()) {
                problems.push(format!("`{name}` has no label `{label}` (in `{expr}`)"));
            }
        }
    }
    for label in grouping {
        if !available.contains(&label) {
            problems.push(format!(
                "grouping label `{label}` is on no metric of `{expr}`"
            ));
        }
    }
    problems
}

#[test]
fn the_reference_parser_sees_metrics_selectors_and_groupings() {
    let (metrics, grouping) = references(
        r#"sum by (kind, le) (rate(mana_ai_x_bucket{service="a",kind=~"t.*"}[5m])) / mana_ai_y"#,
    );
    assert_eq!(metrics[0].0, "mana_ai_x_bucket");
    assert_eq!(
        metrics[0].1,
        ["kind", "service"].iter().map(|s| s.to_string()).collect()
    );
    assert_eq!(metrics[1].0, "mana_ai_y");
    assert_eq!(
        grouping,
        ["kind", "le"].iter().map(|s| s.to_string()).collect()
    );
    let exported = exported();
    assert!(!check("sum(rate(mana_ai_no_such_metric[5m]))", &exported).is_empty());
    assert!(!check("sum by (nope) (rate(mana_ai_ticks_total[5m]))", &exported).is_empty());
    assert!(!check(r#"mana_ai_ticks_total{kind="x"}"#, &exported).is_empty());
    assert!(check(
        "sum by (le) (rate(mana_ai_tick_duration_seconds_bucket[5m]))",
        &exported
    )
    .is_empty());
}

#[test]
fn alert_rules_query_only_exported_metrics_and_labels() {
    let exported = exported();
    let exprs = rule_expressions(&read("deploy/prometheus/mana-ai-rules.yml"));
    assert!(exprs.len() >= 8, "the rules were read: {}", exprs.len());
    let problems: Vec<String> = exprs.iter().flat_map(|e| check(e, &exported)).collect();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn dashboard_queries_only_exported_metrics_and_labels() {
    let exported = exported();
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/mana-ai.json")).expect("dashboard is JSON");
    let exprs = dashboard_expressions(&dashboard);
    assert!(exprs.len() >= 20, "the panels were read: {}", exprs.len());
    let problems: Vec<String> = exprs.iter().flat_map(|e| check(e, &exported)).collect();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_alert_has_a_runbook_section() {
    let rules = read("deploy/prometheus/mana-ai-rules.yml");
    let ops = read("docs/operations.md");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 8);
    for alert in alerts {
        assert!(
            ops.contains(&format!("### Alert: {alert}")),
            "docs/operations.md has no section `### Alert: {alert}`"
        );
        assert!(
            rules.contains(&format!("\"Alert: {alert}\"")),
            "{alert} links its runbook"
        );
    }
}

/// `promtool test rules`: the Debian package `prometheus` (`.ci/run` installs it). A
/// missing promtool fails this test; it is never skipped.
#[test]
fn alert_rules_pass_their_promtool_unit_tests() {
    let dir = repo().join("deploy/prometheus");
    let output = Command::new("promtool")
        .args(["test", "rules", "mana-ai-rules.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool is needed (Debian package `prometheus`; .ci/run installs it): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool test rules failed:\n{text}"
    );
    assert!(text.contains("SUCCESS"), "{text}");
}
