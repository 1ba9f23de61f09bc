//! What a run leaves for later passes when it did not get to write an iteration:
//!
//! * **Deferral** ([`MissionRunner::defer_after`]): a run skipped at a gate or ended by a
//!   store error is not listed again before a backoff (`defer.base`, doubled per deferral
//!   of the same due run, capped per kind: `wait_cap` for waits that end by themselves,
//!   `gate_cap` for gates that wait for a change, `error_cap` for errors). The deferral
//!   remembers the mission's and the agent's versions, so an edit or a resumed agent lists
//!   the mission again at once (see `mana_ai_store::due`). A mission that is no longer due,
//!   or that wrote an iteration (planned or failed), is not deferred: its `nextRunAt`
//!   moved.
//! * **Self-healing schedule** ([`MissionRunner::heal_schedule`]): a claim that answers
//!   `done` while the mission is still due at that time (a device re-stamped `nextRunAt`
//!   to the served time) gets the next run from the cadence written once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use mana_ai_core::actor::{make_agent_actor, AgentActorParts};
use mana_ai_core::cadence::{self, Cadence};
use mana_ai_core::iso::{parse_iso, to_iso_ms};
use mana_ai_core::lww::FIELD_META_KEY;
use mana_ai_core::records::MissionView;
use mana_ai_store::{Deferral, DueKey, DueMission, Heal, ScheduleHeal, SeenVersions};
use serde_json::{json, Value};

use super::gate::RunAgent;
use super::{MissionRunner, SeenAgent};
use crate::outcome::{AgentSkip, MissionOutcome, SkipReason};
use crate::DeferPolicy;

/// The deferral of an outcome: its reason label and the cap of its kind; `None` when the
/// run is not deferred.
pub(crate) fn deferral_for(
    outcome: &MissionOutcome,
    p: &DeferPolicy,
) -> Option<(&'static str, Duration)> {
    match outcome {
        MissionOutcome::Planned { .. } | MissionOutcome::Failed { .. } => None,
        MissionOutcome::Skipped(SkipReason::NoLongerDue) => None,
        MissionOutcome::Skipped(
            reason @ (SkipReason::Agent(AgentSkip::Concurrency)
            | SkipReason::HeldElsewhere
            | SkipReason::ClaimLost),
        ) => Some((reason.as_str(), p.wait_cap)),
        MissionOutcome::Skipped(reason @ (SkipReason::Agent(_) | SkipReason::AlreadyDone)) => {
            Some((reason.as_str(), p.gate_cap))
        }
        MissionOutcome::Deferred => Some((outcome.as_str(), p.wait_cap)),
        MissionOutcome::Error(_) => Some((outcome.as_str(), p.error_cap)),
    }
}

/// The stamp of a healing `nextRunAt`: now, or just after the stamp that re-stamped it
/// when that one is later (a device clock ahead), so the heal wins the field's LWW.
fn heal_stamp(record: &Value, now: DateTime<Utc>) -> DateTime<Utc> {
    record
        .get(FIELD_META_KEY)
        .and_then(|meta| meta.get("nextRunAt"))
        .and_then(Value::as_str)
        .and_then(parse_iso)
        .and_then(|t| t.checked_add_signed(chrono::Duration::milliseconds(1)))
        .filter(|t| *t > now)
        .unwrap_or(now)
}

impl MissionRunner {
    /// Defers the run if its outcome asks for it (see the module docs). A deferral that
    /// cannot be recorded is logged: the run is then simply listed again next pass.
    pub(super) async fn defer_after(
        &self,
        due: &DueMission,
        seen_agent: SeenAgent,
        outcome: &MissionOutcome,
    ) {
        let Some((reason, cap)) = deferral_for(outcome, &self.cfg.defer) else {
            return;
        };
        let seen = SeenVersions {
            mission: due.version,
            agent: seen_agent,
        };
        let key = (
            due.user_id.as_str(),
            due.mission_id.as_str(),
            due.next_run_at,
        );
        self.defer(key, reason, cap, Some(seen)).await;
    }

    /// Defers a due run whose mission could not even be loaded (a store error): it holds
    /// whatever changes, for the error backoff.
    pub(crate) async fn defer_unloaded(&self, key: &DueKey) {
        let k = (
            key.user_id.as_str(),
            key.mission_id.as_str(),
            key.next_run_at,
        );
        self.defer(k, "error", self.cfg.defer.error_cap, None).await;
    }

    async fn defer(
        &self,
        (user_id, mission_id, due_at): (&str, &str, DateTime<Utc>),
        reason: &str,
        cap: Duration,
        seen: Option<SeenVersions>,
    ) {
        if self.cfg.defer.base.is_zero() || cap.is_zero() {
            return;
        }
        let deferral = Deferral {
            user_id,
            mission_id,
            due_at,
            reason,
            now: self.clock.now(),
            base: self.cfg.defer.base,
            cap,
            seen,
        };
        match self.store.defer_mission(&deferral).await {
            Ok(d) => tracing::debug!(
                mission = %mission_id,
                reason,
                attempts = d.attempts,
                not_before = %to_iso_ms(d.not_before),
                "due run deferred"
            ),
            Err(e) => tracing::warn!(
                mission = %mission_id,
                reason,
                error = %e,
                "could not defer a due run; it is listed again next pass"
            ),
        }
    }

    /// Writes the next run of a mission whose due run is already done while it is still
    /// due at that time: once per re-stamp (the store checks), derived from the cadence.
    pub(super) async fn heal_schedule(
        &self,
        due: &DueMission,
        mission: &MissionView,
        agent: &RunAgent,
        iteration_id: &str,
    ) {
        let Ok(c) = Cadence::from_json(&mission.cadence) else {
            return;
        };
        let now = self.clock.now();
        let tz = cadence::resolve_timezone(mission.timezone.as_deref(), self.cfg.default_timezone);
        let Some(next) = cadence::next_run_after_serving(&c, due.next_run_at, now, tz) else {
            return;
        };
        let data = json!({ "nextRunAt": to_iso_ms(next) });
        let field_meta = json!({ "nextRunAt": to_iso_ms(heal_stamp(&due.record, now)) });
        let actor = make_agent_actor(AgentActorParts {
            agent_id: &agent.id,
            display_name: &agent.name,
            mission_id: &due.mission_id,
            iteration_id,
            rationale: &mission.objective,
        })
        .to_json();
        let heal = ScheduleHeal {
            user_id: &due.user_id,
            mission_id: &due.mission_id,
            due_at: due.next_run_at,
            data: &data,
            field_meta: &field_meta,
            actor: &actor,
        };
        match self.store.heal_schedule(&heal).await {
            Ok(Heal::Written) => tracing::info!(
                mission = %due.mission_id,
                next_run_at = %to_iso_ms(next),
                "schedule healed: the served run was done but the mission was still due at its time"
            ),
            Ok(Heal::AlreadyHealed | Heal::NotStuck) => {}
            Err(e) => tracing::warn!(
                mission = %due.mission_id,
                error = %e,
                "could not heal a mission's schedule"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RunError;
    use mana_ai_store::StoreError;

    #[test]
    fn every_outcome_has_its_deferral_kind() {
        let p = DeferPolicy::default();
        let agent = |s| MissionOutcome::Skipped(SkipReason::Agent(s));
        let cases = [
            (MissionOutcome::Planned { steps: 1 }, None),
            (MissionOutcome::Skipped(SkipReason::NoLongerDue), None),
            (
                agent(AgentSkip::Paused),
                Some(("skipped-paused", p.gate_cap)),
            ),
            (
                agent(AgentSkip::Budget),
                Some(("skipped-budget", p.gate_cap)),
            ),
            (
                agent(AgentSkip::MissingAgent),
                Some(("skipped-missing-agent", p.gate_cap)),
            ),
            (
                agent(AgentSkip::Concurrency),
                Some(("skipped-concurrency", p.wait_cap)),
            ),
            (
                MissionOutcome::Skipped(SkipReason::HeldElsewhere),
                Some(("held-elsewhere", p.wait_cap)),
            ),
            (
                MissionOutcome::Skipped(SkipReason::AlreadyDone),
                Some(("already-done", p.gate_cap)),
            ),
            (
                MissionOutcome::Deferred,
                Some(("research-pending", p.wait_cap)),
            ),
            (
                MissionOutcome::Error(RunError::Claim(StoreError::Refused("x"))),
                Some(("error", p.error_cap)),
            ),
        ];
        for (outcome, want) in cases {
            assert_eq!(deferral_for(&outcome, &p), want, "{outcome:?}");
        }
    }

    #[test]
    fn the_heal_stamp_beats_a_device_stamp_from_the_future() {
        let now = parse_iso("2026-01-05T09:00:00.000Z").unwrap();
        let ahead = json!({ FIELD_META_KEY: { "nextRunAt": "2026-01-05T10:00:00.000Z" } });
        assert_eq!(
            to_iso_ms(heal_stamp(&ahead, now)),
            "2026-01-05T10:00:00.001Z"
        );
        let behind = json!({ FIELD_META_KEY: { "nextRunAt": "2026-01-05T08:00:00.000Z" } });
        assert_eq!(heal_stamp(&behind, now), now);
        assert_eq!(heal_stamp(&json!({}), now), now);
    }
}
