//! Reading metric values back from the Prometheus text exposition, by value rather than
//! by substring (`"…_total{…} 1"` would also match 10 to 19).

/// One sample line: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Every sample of a text exposition (comments and blank lines skipped).
///
/// # Panics
/// On a sample line that does not parse (the exposition is ours, so that is a bug).
pub fn samples(exposition: &str) -> Vec<Sample> {
    exposition
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| parse_sample(l).unwrap_or_else(|| panic!("unparsable sample line {l:?}")))
        .collect()
}

/// The sum of the samples named `name` whose labels include every `(label, value)` of
/// `labels`; `None` when no sample matches (the series was never touched).
pub fn metric_value(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples(exposition)
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series.to_string(), Vec::new()),
        Some((name, rest)) => (name.to_string(), parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `a="x",b="y \"q\""` → pairs, unescaping `\\`, `\"` and `\n`.
fn parse_labels(mut rest: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        out.push((key.trim_start_matches(',').to_string(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Some(out)
}

/// The metric names and types of the original service's contract (planner-service §3,
/// metrics table), written out here rather than taken from production code, so that a
/// rename in the code fails the tests that use it instead of silently passing both.
/// Dashboards and alerts depend on these.
pub const CONTRACT_METRICS: &[(&str, &str)] = &[
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

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x_total x\n# TYPE x_total counter\n\
        x_total{service=\"mana-ai\"} 1\n\
        y_total{kind=\"a\",service=\"mana-ai\"} 12\n\
        y_total{kind=\"b\",service=\"mana-ai\"} 3\n\
        z_bucket{le=\"+Inf\"} 4\n\
        w{v=\"q\\\"uote,d\"} 2.5\n";

    #[test]
    fn values_are_read_not_matched_as_text() {
        assert_eq!(
            metric_value(TEXT, "x_total", &[("service", "mana-ai")]),
            Some(1.0)
        );
        assert_eq!(metric_value(TEXT, "y_total", &[("kind", "a")]), Some(12.0));
        assert_eq!(metric_value(TEXT, "y_total", &[]), Some(15.0));
        assert_eq!(metric_value(TEXT, "y_total", &[("kind", "c")]), None);
        assert_eq!(metric_value(TEXT, "z_bucket", &[("le", "+Inf")]), Some(4.0));
        assert_eq!(metric_value(TEXT, "w", &[("v", "q\"uote,d")]), Some(2.5));
        assert_eq!(metric_value(TEXT, "x", &[]), None);
    }
}
