//! The write-back stage: the iteration of this run (a plan or a failure) and the next
//! run — after the cadence for a plan, after a jittered backoff for a failure, none for a
//! cadence that cannot be read — written exactly once, then the run's outcome. The store
//! merges the iteration into the mission's current iterations and keeps at most
//! `iteration_history` of them (`MANA_AI_ITERATION_HISTORY`; see
//! [`mana_ai_core::iterations`]).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use mana_ai_core::actor::{make_agent_actor, AgentActorParts};
use mana_ai_core::cadence::{self, Cadence};
use mana_ai_core::iterations::HistoryLimits;
use mana_ai_core::limits::{
    truncated, AGENT_NAME_MAX_CHARS, ERROR_MESSAGE_MAX_CHARS, OBJECTIVE_MAX_CHARS,
};
use mana_ai_core::plan::{build_failed_iteration, build_iteration, IterationPhase};
use mana_ai_store::{Loaded, WriteBack, WriteOutcome};
use serde_json::Value;

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
        let rationale = truncated(&run.mission.objective, OBJECTIVE_MAX_CHARS);
        let display_name = truncated(&run.agent.name, AGENT_NAME_MAX_CHARS);
        let actor = make_agent_actor(AgentActorParts {
            agent_id: &run.agent.id,
            display_name: &display_name,
            mission_id: &run.due.mission_id,
            iteration_id: run.iteration_id,
            rationale: &rationale,
        })
        .to_json();
        let error = match &attempt {
            Attempt::Failed(f) => Some(truncated(&f.message, ERROR_MESSAGE_MAX_CHARS)),
            Attempt::Planned(_) => None,
        };
        let wb = WriteBack {
            user_id: &run.due.user_id,
            mission_id: &run.due.mission_id,
            due_at: run.due.next_run_at,
            runner_id: &self.cfg.runner_id,
            iteration: &iteration,
            next_run_at: next,
            actor: &actor,
            history: HistoryLimits::new(self.cfg.iteration_history),
            failed: error.is_some(),
            error: error.as_deref(),
            // A space mission is written as its owner with `space_id` stamped.
            space_id: run.mission.space_id.as_deref(),
            loaded: Some(Loaded {
                record: &run.due.record,
                version: run.due.version,
            }),
        };
        let result = self
            .store
            .write_back_with_path(&wb)
            .await
            .map(|(outcome, path)| {
                events::WroteBack(path).emit(&self.metrics);
                outcome
            });
        match result {
            Ok(WriteOutcome::Written) => Ok(self.written(attempt)),
            Ok(WriteOutcome::ClaimLost) => Err(Stop::Skip(SkipReason::ClaimLost)),
            Ok(WriteOutcome::MissionDeleted) => Err(Stop::Skip(SkipReason::NoLongerDue)),
            Ok(WriteOutcome::HistoryFull { bytes }) => Ok(self.history_full(run, bytes)),
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

    /// No room for the iteration (the mission holds too many unfinished ones): only the
    /// schedule was written; counted and answered as a failed run.
    fn history_full(&self, run: &ClaimedRun<'_>, bytes: usize) -> MissionOutcome {
        events::HistoryFull {
            mission_id: &run.due.mission_id,
            bytes,
        }
        .emit(&self.metrics);
        MissionOutcome::Failed {
            phase: IterationPhase::Finalizing,
            nothing_valid: false,
        }
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
