//! The metric names and types of the original service's contract (planner-service §3),
//! written out here rather than taken from the production list: a rename in the code
//! fails this test instead of silently passing both.

use mana_ai_runner::testkit::samples;
use mana_ai_runner::Metrics;

/// planner-service §3: (name, type). Dashboards and alerts depend on these.
const CONTRACT: &[(&str, &str)] = &[
    ("mana_ai_http_requests_total", "counter"),
    ("mana_ai_http_request_duration_seconds", "histogram"),
    ("mana_ai_ticks_total", "counter"),
    ("mana_ai_tick_duration_seconds", "histogram"),
    ("mana_ai_plans_produced_total", "counter"),
    ("mana_ai_plans_written_back_total", "counter"),
    ("mana_ai_parse_failures_total", "counter"),
    ("mana_ai_mission_errors_total", "counter"),
    ("mana_ai_research_jobs_submitted_total", "counter"),
    ("mana_ai_research_jobs_completed_total", "counter"),
    ("mana_ai_research_jobs_failed_total", "counter"),
    ("mana_ai_research_jobs_pending_skips_total", "counter"),
    ("mana_ai_planner_request_duration_seconds", "histogram"),
    ("mana_ai_snapshots_new_total", "counter"),
    ("mana_ai_snapshots_updated_total", "counter"),
    ("mana_ai_snapshot_rows_applied_total", "counter"),
    ("mana_ai_decrypts_total", "counter"),
    ("mana_ai_grant_scope_violations_total", "counter"),
    ("mana_ai_grant_skips_total", "counter"),
    ("mana_ai_agent_decisions_total", "counter"),
    ("mana_ai_tokens_used_total", "counter"),
    ("mana_ai_tool_calls_total", "counter"),
    ("mana_ai_planner_rounds", "histogram"),
    ("mana_ai_provider_errors_total", "counter"),
    ("mana_ai_reminders_emitted_total", "counter"),
    ("mana_ai_compactions_triggered_total", "counter"),
    ("mana_ai_compacted_turns", "histogram"),
];

#[test]
fn every_contract_metric_is_registered_with_its_type() {
    let m = Metrics::new();
    // Touch a labelled family, as a pass would, so labelled families are exposed too.
    m.mission_failures_total.with_label_values(&["x"]).inc();
    let text = m.render();
    for (name, kind) in CONTRACT {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} ({kind}) missing:\n{text}"
        );
    }
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
