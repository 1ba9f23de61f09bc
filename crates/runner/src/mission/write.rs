//! The write-back stage: the iteration of this run (a plan or a failure) and the next
//! run — after the cadence for a plan, after a jittered backoff for a failure, none for a
//! cadence that cannot be read — written exactly once, then the run's outcome.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use mana_ai_core::actor::{make_agent_actor, AgentActorParts};
use mana_ai_core::cadence::{self, Cadence};
use mana_ai_core::iso::to_iso_ms;
use mana_ai_core::plan::{build_failed_iteration, build_iteration};
use mana_ai_store::{WriteBack, WriteOutcome};
use serde_json::{json, Value};

use super::{Attempt, ClaimedRun, MissionRunner, Stop};
use crate::error::RunError;
use crate::events::{self, Emit};
use crate::outcome::{MissionOutcome, SkipReason};

/// Number of consecutive failed server iterations at the end of the history.
fn trailing_failures(iterations: &[Value]) -> u32 {
    iterations
        .iter()
        .rev()
        .take_while(|it| it.get("overallStatus").and_then(Value::as_str) == Some("failed"))
        .count() as u32
}

impl MissionRunner {
    /// Writes the attempt back and answers the run's outcome. `cadence` is `None` when
    /// the mission's cadence cannot be read (the mission then stops until fixed).
    pub(super) async fn write_back(
        &self,
        run: &ClaimedRun<'_>,
        cadence: Option<&Cadence>,
        attempt: Attempt,
    ) -> Result<MissionOutcome, Stop> {
        let now = self.clock.now();
        let tz = self.mission_zone(run, cadence).await;
        let (iteration, next) = match &attempt {
            Attempt::Planned(outcome) => (
                build_iteration(run.iteration_id, outcome, now),
                self.next_after_plan(run, cadence, now, tz),
            ),
            Attempt::Failed(f) => (
                build_failed_iteration(run.iteration_id, f.phase, &f.message, now),
                self.next_after_failure(run, cadence, now, tz),
            ),
        };
        let mut iterations = run.mission.iterations.clone();
        iterations.push(iteration);
        let now_iso = to_iso_ms(now);
        let data = json!({
            "iterations": iterations,
            "nextRunAt": next.map(to_iso_ms),
        });
        let field_meta = json!({ "iterations": now_iso, "nextRunAt": now_iso });
        let actor = make_agent_actor(AgentActorParts {
            agent_id: &run.agent.id,
            display_name: &run.agent.name,
            mission_id: &run.due.mission_id,
            iteration_id: run.iteration_id,
            rationale: &run.mission.objective,
        })
        .to_json();
        let failure = match &attempt {
            Attempt::Failed(f) => Some(f),
            Attempt::Planned(_) => None,
        };
        let wb = WriteBack {
            user_id: &run.due.user_id,
            mission_id: &run.due.mission_id,
            due_at: run.due.next_run_at,
            runner_id: &self.cfg.runner_id,
            data: &data,
            field_meta: &field_meta,
            actor: &actor,
            failed: failure.is_some(),
            error: failure.map(|f| f.message.as_str()),
        };
        // A space mission is written as its owner with `space_id` stamped.
        let written = match run.mission.space_id.as_deref() {
            Some(space) => self.store.write_back_in_space(&wb, space).await,
            None => self.store.write_back(&wb).await,
        };
        match written {
            Ok(WriteOutcome::Written) => Ok(self.written(attempt)),
            Ok(WriteOutcome::ClaimLost) => Err(Stop::Skip(SkipReason::ClaimLost)),
            Err(e) => Err(RunError::WriteBack(e).into()),
        }
    }

    /// The next run after a plan: the cadence's next slot (in the mission's zone `tz`)
    /// after serving this due run.
    fn next_after_plan(
        &self,
        run: &ClaimedRun<'_>,
        cadence: Option<&Cadence>,
        now: DateTime<Utc>,
        tz: Tz,
    ) -> Option<DateTime<Utc>> {
        cadence.and_then(|c| cadence::next_run_after_serving(c, run.due.next_run_at, now, tz))
    }

    /// The next run after a failure: backoff by the number of failures in a row.
    fn next_after_failure(
        &self,
        run: &ClaimedRun<'_>,
        cadence: Option<&Cadence>,
        now: DateTime<Utc>,
        tz: Tz,
    ) -> Option<DateTime<Utc>> {
        let jitter: f64 = rand::random();
        // A cadence we cannot read: stop until the user fixes it.
        let c = cadence?;
        let attempt = trailing_failures(&run.mission.iterations) + 1;
        Some(cadence::next_run_after_failure(
            c,
            now,
            attempt,
            self.cfg.retry_base,
            self.cfg.retry_cap,
            jitter,
            tz,
        ))
    }

    /// Counts a written attempt and answers its outcome.
    fn written(&self, attempt: Attempt) -> MissionOutcome {
        match attempt {
            Attempt::Planned(outcome) => {
                events::PlanWritten.emit(&self.metrics);
                MissionOutcome::Planned {
                    steps: outcome.steps.len(),
                }
            }
            Attempt::Failed(f) => {
                events::MissionFailed {
                    phase: f.phase,
                    nothing_valid: f.nothing_valid,
                }
                .emit(&self.metrics);
                MissionOutcome::Failed {
                    phase: f.phase,
                    nothing_valid: f.nothing_valid,
                }
            }
        }
    }
}
