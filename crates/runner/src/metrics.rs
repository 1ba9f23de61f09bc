//! Every Prometheus metric of the service, under the original names (a contract with
//! dashboards and alerts). Label values always come from bounded sets: never a mission,
//! record or user id. Two labels carry outside input and are bounded here: the HTTP
//! `method` (a fixed set, anything else is `other`: [`http_method_label`]) and `agent_id`
//! on `tokens_used_total` (the original's contract; ids of at most
//! [`MAX_AGENT_LABEL_BYTES`] bytes, at most [`MAX_AGENT_LABELS`] distinct values per
//! process, the rest counted under `other`: [`Metrics::add_tokens_used`]). The exact
//! per-agent figure is in the ops view (`/internal/missions/{userId}`, `usedLast24h`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Longest `agent_id` label value kept as is (bytes); longer ids count as `other`.
pub const MAX_AGENT_LABEL_BYTES: usize = 64;
/// Most distinct `agent_id` label values per process; later new ids count as `other`.
pub const MAX_AGENT_LABELS: usize = 256;
/// The label value of everything outside a bounded set.
pub const OTHER_LABEL: &str = "other";

/// The `method` label of an HTTP request: the standard methods, else `other` (a client
/// can send any token as its method).
pub fn http_method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => OTHER_LABEL,
    }
}

/// One registered metric family: what docs/metrics.md documents for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricFamily {
    pub name: String,
    pub help: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// Label names, in declaration order.
    pub labels: Vec<String>,
}

/// All metrics, registered in one registry with the constant label `service="mana-ai"`.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub http_requests_total: IntCounterVec,
    pub http_request_duration_seconds: HistogramVec,
    pub ticks_total: IntCounter,
    pub tick_duration_seconds: Histogram,
    pub plans_produced_total: IntCounter,
    pub plans_written_back_total: IntCounter,
    pub parse_failures_total: IntCounter,
    pub mission_errors_total: IntCounter,
    pub mission_failures_total: IntCounterVec,
    pub research_jobs_submitted_total: IntCounterVec,
    pub research_jobs_completed_total: IntCounterVec,
    pub research_jobs_failed_total: IntCounterVec,
    pub research_jobs_pending_skips_total: IntCounter,
    pub research_jobs_abandoned_total: IntCounterVec,
    pub shallow_research_total: IntCounterVec,
    pub planner_request_duration_seconds: Histogram,
    pub snapshots_new_total: IntCounter,
    pub snapshots_updated_total: IntCounter,
    pub snapshot_rows_applied_total: IntCounter,
    pub refresh_duration_seconds: Histogram,
    pub refresh_lag_seconds: prometheus::Gauge,
    pub due_oldest_age_seconds: prometheus::Gauge,
    pub decrypts_total: IntCounterVec,
    pub grant_scope_violations_total: IntCounterVec,
    pub grant_skips_total: IntCounterVec,
    pub agent_decisions_total: IntCounterVec,
    pub tokens_used_total: IntCounterVec,
    pub tool_calls_total: IntCounterVec,
    pub planner_rounds: Histogram,
    pub provider_errors_total: IntCounterVec,
    /// Failed LLM attempts (retried or not), by the closed `kind` set
    /// ([`mana_ai_core::chat::ERROR_KINDS`]).
    pub llm_attempt_failures_total: IntCounterVec,
    pub reminders_emitted_total: IntCounterVec,
    pub compactions_triggered_total: IntCounter,
    pub compacted_turns: Histogram,
    pub missions_in_flight: IntGauge,
    pub resolver_failures_total: IntCounterVec,
    pub rows_quarantined_total: IntCounterVec,
    pub pass_panics_total: IntCounterVec,
    pub write_backs_total: IntCounterVec,
    families: Vec<(String, String, &'static str)>,
    /// `agent_id` label values handed out so far (bounded, see the module docs).
    agent_labels: Arc<Mutex<HashSet<String>>>,
}

fn counter(reg: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::with_opts(Opts::new(name, help)).unwrap_or_else(|e| panic!("{name}: {e}"));
    reg.register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    c
}

fn counter_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c =
        IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}"));
    reg.register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    c
}

fn histogram(reg: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    reg.register(Box::new(h.clone()))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    h
}

impl Metrics {
    /// Builds and registers every metric plus the process collector
    /// (`mana_ai_process_*`). Names are static, so a failure here is a programming
    /// error caught by the unit test below; it panics with the metric name.
    pub fn new() -> Self {
        let mut labels = std::collections::HashMap::new();
        labels.insert("service".to_string(), "mana-ai".to_string());
        let registry = Registry::new_custom(None, Some(labels)).expect("static registry config");
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::new(
                std::process::id() as i32,
                "mana_ai",
            );
            registry
                .register(Box::new(pc))
                .expect("process collector registers once");
        }
        let r = &registry;
        let http_requests_total = counter_vec(
            r,
            "mana_ai_http_requests_total",
            "HTTP requests received",
            &["method", "path", "status"],
        );
        let http_request_duration_seconds = {
            let h = HistogramVec::new(
                HistogramOpts::new(
                    "mana_ai_http_request_duration_seconds",
                    "Per-request latency",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
                &["method", "path", "status"],
            )
            .expect("static histogram");
            r.register(Box::new(h.clone())).expect("registers once");
            h
        };
        Self {
            http_requests_total,
            http_request_duration_seconds,
            ticks_total: counter(r, "mana_ai_ticks_total", "Completed tick passes"),
            tick_duration_seconds: histogram(
                r,
                "mana_ai_tick_duration_seconds",
                "Wall time of one tick pass",
                &[0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0],
            ),
            plans_produced_total: counter(
                r,
                "mana_ai_plans_produced_total",
                "Missions for which the planner produced a usable plan",
            ),
            plans_written_back_total: counter(
                r,
                "mana_ai_plans_written_back_total",
                "Plans persisted as server iterations",
            ),
            parse_failures_total: counter(
                r,
                "mana_ai_parse_failures_total",
                "Planner runs that produced nothing valid",
            ),
            mission_errors_total: counter(
                r,
                "mana_ai_mission_errors_total",
                "Missions whose run failed (provider error, timeout, nothing valid, internal)",
            ),
            mission_failures_total: counter_vec(
                r,
                "mana_ai_mission_failures_total",
                "Failed mission runs by phase",
                &["phase"],
            ),
            research_jobs_submitted_total: counter_vec(
                r,
                "mana_ai_research_jobs_submitted_total",
                "Deep-research jobs submitted",
                &["provider"],
            ),
            research_jobs_completed_total: counter_vec(
                r,
                "mana_ai_research_jobs_completed_total",
                "Deep-research jobs that completed and fed the planner",
                &["provider"],
            ),
            research_jobs_failed_total: counter_vec(
                r,
                "mana_ai_research_jobs_failed_total",
                "Deep-research jobs that failed or were cancelled",
                &["provider"],
            ),
            research_jobs_pending_skips_total: counter(
                r,
                "mana_ai_research_jobs_pending_skips_total",
                "Missions skipped because deep research is pending",
            ),
            research_jobs_abandoned_total: counter_vec(
                r,
                "mana_ai_research_jobs_abandoned_total",
                "Deep-research jobs given up (too old, or polling keeps failing)",
                &["reason"],
            ),
            shallow_research_total: counter_vec(
                r,
                "mana_ai_shallow_research_total",
                "Shallow news-research attempts by outcome",
                &["outcome"],
            ),
            planner_request_duration_seconds: histogram(
                r,
                "mana_ai_planner_request_duration_seconds",
                "Latency of one LLM chat-completion call (all attempts)",
                &[0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0],
            ),
            snapshots_new_total: counter(r, "mana_ai_snapshots_new_total", "Snapshot rows created"),
            snapshots_updated_total: counter(
                r,
                "mana_ai_snapshots_updated_total",
                "Snapshot rows whose content changed",
            ),
            snapshot_rows_applied_total: counter(
                r,
                "mana_ai_snapshot_rows_applied_total",
                "sync_changes rows folded into snapshots",
            ),
            refresh_duration_seconds: histogram(
                r,
                "mana_ai_refresh_duration_seconds",
                "Wall time of one snapshot refresh",
                &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0],
            ),
            refresh_lag_seconds: {
                let g = prometheus::Gauge::with_opts(Opts::new(
                    "mana_ai_refresh_lag_seconds",
                    "How far the refresh cursor trails the wall clock",
                ))
                .expect("static gauge");
                r.register(Box::new(g.clone())).expect("registers once");
                g
            },
            due_oldest_age_seconds: {
                let g = prometheus::Gauge::with_opts(Opts::new(
                    "mana_ai_due_oldest_age_seconds",
                    "How long the oldest mission listed as due by the last pass has been due",
                ))
                .expect("static gauge");
                r.register(Box::new(g.clone())).expect("registers once");
                g
            },
            decrypts_total: counter_vec(
                r,
                "mana_ai_decrypts_total",
                "Fields decrypted under a grant",
                &["table"],
            ),
            grant_scope_violations_total: counter_vec(
                r,
                "mana_ai_grant_scope_violations_total",
                "Decrypts refused: record outside the grant allowlist",
                &["table"],
            ),
            grant_skips_total: counter_vec(
                r,
                "mana_ai_grant_skips_total",
                "Grant unwraps that failed",
                &["reason"],
            ),
            agent_decisions_total: counter_vec(
                r,
                "mana_ai_agent_decisions_total",
                "Per-mission agent gate outcome",
                &["decision"],
            ),
            tokens_used_total: counter_vec(
                r,
                "mana_ai_tokens_used_total",
                "Planner tokens consumed",
                &["agent_id"],
            ),
            tool_calls_total: counter_vec(
                r,
                "mana_ai_tool_calls_total",
                "Tool calls captured from the planner",
                &["tool", "policy", "outcome"],
            ),
            planner_rounds: histogram(
                r,
                "mana_ai_planner_rounds",
                "Loop rounds used per mission run",
                &[1.0, 2.0, 3.0, 4.0, 5.0],
            ),
            provider_errors_total: counter_vec(
                r,
                "mana_ai_provider_errors_total",
                "LLM provider errors",
                &["provider", "kind"],
            ),
            llm_attempt_failures_total: counter_vec(
                r,
                "mana_ai_llm_attempt_failures_total",
                "Failed LLM call attempts, retried or not, by kind",
                &["kind"],
            ),
            reminders_emitted_total: counter_vec(
                r,
                "mana_ai_reminders_emitted_total",
                "Reminders emitted into planner rounds",
                &["producer", "severity"],
            ),
            compactions_triggered_total: counter(
                r,
                "mana_ai_compactions_triggered_total",
                "Compactions that folded at least one turn",
            ),
            compacted_turns: histogram(
                r,
                "mana_ai_compacted_turns",
                "Messages folded per compaction",
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
            ),
            missions_in_flight: {
                let g = IntGauge::with_opts(Opts::new(
                    "mana_ai_missions_in_flight",
                    "Missions being planned right now",
                ))
                .expect("static gauge");
                r.register(Box::new(g.clone())).expect("registers once");
                g
            },
            resolver_failures_total: counter_vec(
                r,
                "mana_ai_resolver_failures_total",
                "Input resolvers that failed (input dropped, mission continued)",
                &["module"],
            ),
            rows_quarantined_total: counter_vec(
                r,
                "mana_ai_rows_quarantined_total",
                "sync_changes rows the refresh skipped and recorded in mana_ai.quarantined_rows",
                &["reason"],
            ),
            pass_panics_total: counter_vec(
                r,
                "mana_ai_pass_panics_total",
                "Panics caught in a tick pass (the pass or mission ended with an error)",
                &["stage"],
            ),
            write_backs_total: counter_vec(
                r,
                "mana_ai_write_backs_total",
                "Write-backs that reached the database, by path: direct (one statement, the \
                 mission unchanged since its load) or merged (changed during planning)",
                &["path"],
            ),
            families: Vec::new(),
            agent_labels: Arc::default(),
            registry,
        }
        .with_declared_families()
    }

    /// The `agent_id` label value for `agent_id`: the id itself while it is short
    /// (≤ [`MAX_AGENT_LABEL_BYTES`], no control characters) and among the first
    /// [`MAX_AGENT_LABELS`] distinct ids seen, else `other`.
    pub fn agent_label(&self, agent_id: &str) -> String {
        if agent_id.len() > MAX_AGENT_LABEL_BYTES || agent_id.chars().any(char::is_control) {
            return OTHER_LABEL.to_string();
        }
        let mut known = self
            .agent_labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.contains(agent_id) {
            return agent_id.to_string();
        }
        if known.len() >= MAX_AGENT_LABELS {
            return OTHER_LABEL.to_string();
        }
        known.insert(agent_id.to_string());
        agent_id.to_string()
    }

    /// Books `tokens` to `tokens_used_total{agent_id}` under the bounded label.
    pub fn add_tokens_used(&self, agent_id: &str, tokens: u64) {
        self.tokens_used_total
            .with_label_values(&[&self.agent_label(agent_id)])
            .inc_by(tokens);
    }

    /// Remembers every family's name, help and type so that labelled families without
    /// any series yet are still announced (`# HELP`/`# TYPE`), as prom-client does.
    fn with_declared_families(mut self) -> Self {
        self.families = self
            .families()
            .into_iter()
            .map(|f| (f.name, f.help, f.kind))
            .collect();
        self
    }

    /// Every metric family of the service (the process collector's aside): name, help,
    /// type and label names. docs/metrics.md is checked against this list.
    pub fn families(&self) -> Vec<MetricFamily> {
        use prometheus::core::Collector;
        let all: &[(&dyn Collector, &'static str)] = &[
            (&self.http_requests_total, "counter"),
            (&self.http_request_duration_seconds, "histogram"),
            (&self.ticks_total, "counter"),
            (&self.tick_duration_seconds, "histogram"),
            (&self.plans_produced_total, "counter"),
            (&self.plans_written_back_total, "counter"),
            (&self.parse_failures_total, "counter"),
            (&self.mission_errors_total, "counter"),
            (&self.mission_failures_total, "counter"),
            (&self.research_jobs_submitted_total, "counter"),
            (&self.research_jobs_completed_total, "counter"),
            (&self.research_jobs_failed_total, "counter"),
            (&self.research_jobs_pending_skips_total, "counter"),
            (&self.research_jobs_abandoned_total, "counter"),
            (&self.shallow_research_total, "counter"),
            (&self.planner_request_duration_seconds, "histogram"),
            (&self.snapshots_new_total, "counter"),
            (&self.snapshots_updated_total, "counter"),
            (&self.snapshot_rows_applied_total, "counter"),
            (&self.refresh_duration_seconds, "histogram"),
            (&self.refresh_lag_seconds, "gauge"),
            (&self.due_oldest_age_seconds, "gauge"),
            (&self.decrypts_total, "counter"),
            (&self.grant_scope_violations_total, "counter"),
            (&self.grant_skips_total, "counter"),
            (&self.agent_decisions_total, "counter"),
            (&self.tokens_used_total, "counter"),
            (&self.tool_calls_total, "counter"),
            (&self.planner_rounds, "histogram"),
            (&self.provider_errors_total, "counter"),
            (&self.llm_attempt_failures_total, "counter"),
            (&self.reminders_emitted_total, "counter"),
            (&self.compactions_triggered_total, "counter"),
            (&self.compacted_turns, "histogram"),
            (&self.missions_in_flight, "gauge"),
            (&self.resolver_failures_total, "counter"),
            (&self.rows_quarantined_total, "counter"),
            (&self.pass_panics_total, "counter"),
            (&self.write_backs_total, "counter"),
        ];
        let mut out: Vec<MetricFamily> = Vec::new();
        for &(collector, kind) in all {
            for d in collector.desc() {
                if out.iter().any(|f| f.name == d.fq_name) {
                    continue;
                }
                out.push(MetricFamily {
                    name: d.fq_name.clone(),
                    help: d.help.clone(),
                    kind,
                    labels: d.variable_labels.clone(),
                });
            }
        }
        out
    }

    /// Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        let enc = prometheus::TextEncoder::new();
        if let Err(e) = enc.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        let mut text = String::from_utf8(buf).unwrap_or_default();
        for (name, help, kind) in &self.families {
            if !text.contains(&format!("# TYPE {name} ")) {
                text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            }
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_a_fixed_set() {
        assert_eq!(http_method_label("GET"), "GET");
        assert_eq!(http_method_label("OPTIONS"), "OPTIONS");
        for invented in ["X0", "get", "PROPFIND", "", "GET "] {
            assert_eq!(http_method_label(invented), "other", "{invented:?}");
        }
    }

    #[test]
    fn agent_labels_are_bounded_in_length_and_count() {
        let m = Metrics::new();
        let edge = "a".repeat(MAX_AGENT_LABEL_BYTES);
        assert_eq!(m.agent_label(&edge), edge);
        assert_eq!(
            m.agent_label(&"a".repeat(MAX_AGENT_LABEL_BYTES + 1)),
            "other"
        );
        assert_eq!(m.agent_label("bad\nid"), "other");
        for i in 1..MAX_AGENT_LABELS {
            assert_eq!(m.agent_label(&format!("agent-{i}")), format!("agent-{i}"));
        }
        // The set is full: a new id is `other`, a known one keeps its label.
        assert_eq!(m.agent_label("one-too-many"), "other");
        assert_eq!(m.agent_label("agent-1"), "agent-1");
        assert_eq!(
            m.clone().agent_label("one-too-many"),
            "other",
            "shared by clones"
        );
        m.add_tokens_used("one-too-many", 5);
        m.add_tokens_used("x".repeat(1000).as_str(), 7);
        assert_eq!(m.tokens_used_total.with_label_values(&["other"]).get(), 12);
    }
}
