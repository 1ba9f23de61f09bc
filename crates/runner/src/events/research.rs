//! The research events (shallow research, deep-research jobs): each writes its log line
//! and moves its metrics together, like every event of [`super`].

use std::fmt::Display;

use super::Emit;
use crate::Metrics;

// ---------------------------------------------------------------------------- research

/// The research job row could not be read: the mission is skipped this pass.
pub(crate) struct ResearchLookupFailed<'a, E: Display> {
    pub mission_id: &'a str,
    pub error: &'a E,
}

impl<E: Display> Emit for ResearchLookupFailed<'_, E> {
    fn emit(self, _: &Metrics) {
        tracing::error!(mission = %self.mission_id, error = %self.error, "research job lookup failed; mission skipped this tick");
    }
}

/// A shallow-research attempt ended (`outcome`: `ok` or a bounded failure label).
pub(crate) struct ShallowResearched {
    pub outcome: &'static str,
}

impl Emit for ShallowResearched {
    fn emit(self, m: &Metrics) {
        m.shallow_research_total
            .with_label_values(&[self.outcome])
            .inc();
    }
}

/// A deep-research job was given up (`reason`: `max-age`, `submit-failures`,
/// `poll-failures`).
pub(crate) struct ResearchJobAbandoned<'a> {
    pub mission_id: &'a str,
    pub reason: &'static str,
}

impl Emit for ResearchJobAbandoned<'_> {
    fn emit(self, m: &Metrics) {
        tracing::warn!(mission = %self.mission_id, reason = self.reason, "deep-research job abandoned; falling back to shallow research");
        m.research_jobs_abandoned_total
            .with_label_values(&[self.reason])
            .inc();
    }
}

/// A deep-research job was accepted by mana-research.
pub(crate) struct ResearchJobSubmitted<'a> {
    pub mission_id: &'a str,
    /// The provider id as answered (logged); the metric gets its bounded label.
    pub provider: &'a str,
}

impl Emit for ResearchJobSubmitted<'_> {
    fn emit(self, m: &Metrics) {
        m.research_jobs_submitted_total
            .with_label_values(&[provider_label(self.provider)])
            .inc();
        tracing::info!(mission = %self.mission_id, provider = %self.provider, "deep-research job submitted");
    }
}

/// A deep-research job ended: `completed` or not (failed, cancelled, rejected).
pub(crate) struct ResearchJobFinished<'a> {
    pub provider: &'a str,
    pub completed: bool,
}

impl Emit for ResearchJobFinished<'_> {
    fn emit(self, m: &Metrics) {
        let counter = if self.completed {
            &m.research_jobs_completed_total
        } else {
            &m.research_jobs_failed_total
        };
        counter
            .with_label_values(&[provider_label(self.provider)])
            .inc();
    }
}

/// Metric label for a provider id (bounded: unknown ids become `other`).
pub(crate) fn provider_label(p: &str) -> &'static str {
    match p {
        "gemini-deep-research-max" => "gemini-deep-research-max",
        "gemini-deep-research" => "gemini-deep-research",
        "openai-deep-research" => "openai-deep-research",
        _ => "other",
    }
}
