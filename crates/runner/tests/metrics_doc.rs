//! docs/metrics.md cannot drift: every metric row of its tables (name, type, label names)
//! matches a registered metric, and every registered metric has its row.

use std::collections::BTreeMap;

use mana_ai_runner::Metrics;

/// `(type, label names)` per metric name, from the markdown tables.
fn documented() -> BTreeMap<String, (String, Vec<String>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md");
    let text = std::fs::read_to_string(path).expect("docs/metrics.md is readable");
    let mut rows = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `mana_ai_")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert!(
            cells.len() >= 4,
            "a metric row has at least 4 cells: {line}"
        );
        let name = cells[0].trim_matches('`').to_string();
        let kind = cells[1]
            .split([',', ' '])
            .next()
            .unwrap_or_default()
            .to_string();
        let labels = if cells[3] == "–" {
            Vec::new()
        } else {
            cells[3]
                .split(',')
                .map(|l| l.trim().trim_matches('`').to_string())
                .collect()
        };
        let before = rows.insert(name.clone(), (kind, labels));
        assert!(before.is_none(), "{name} is documented twice");
    }
    rows
}

#[test]
fn every_documented_metric_is_registered_as_documented() {
    let registered: BTreeMap<String, (String, Vec<String>)> = Metrics::new()
        .families()
        .into_iter()
        .map(|f| (f.name, (f.kind.to_string(), f.labels)))
        .collect();
    let documented = documented();
    assert!(documented.len() >= 30, "the tables were read");
    for (name, doc) in &documented {
        let reg = registered
            .get(name)
            .unwrap_or_else(|| panic!("{name} is documented but not registered"));
        assert_eq!(doc, reg, "{name}: documented (type, labels) vs registered");
    }
    for name in registered.keys() {
        assert!(
            documented.contains_key(name),
            "{name} is registered but not documented in docs/metrics.md"
        );
    }
}

#[test]
fn every_registered_family_is_exposed() {
    let m = Metrics::new();
    let text = m.render();
    for f in m.families() {
        assert!(
            text.contains(&format!("# TYPE {} {}", f.name, f.kind)),
            "{} is not announced as a {}",
            f.name,
            f.kind
        );
    }
}
