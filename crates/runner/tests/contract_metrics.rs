//! The metric names and types of the original service's contract (planner-service §3), from
//! the testkit's literal list rather than from production code: a rename in the code fails
//! this test instead of silently passing both.

use mana_ai_runner::testkit::metrics::CONTRACT_METRICS;
use mana_ai_runner::testkit::samples;
use mana_ai_runner::Metrics;

#[test]
fn every_contract_metric_is_registered_with_its_type() {
    let m = Metrics::new();
    // Touch a labelled family, as a pass would, so labelled families are exposed too.
    m.mission_failures_total.with_label_values(&["x"]).inc();
    let text = m.render();
    for (name, kind) in CONTRACT_METRICS {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} ({kind}) missing:\n{text}"
        );
    }
    // The default process collector is registered too.
    assert!(text.contains("mana_ai_process_resident_memory_bytes"));
    // Every series carries the service label.
    for s in samples(&text) {
        assert!(
            s.labels
                .iter()
                .any(|(k, v)| k == "service" && v == "mana-ai"),
            "{s:?}"
        );
    }
}
