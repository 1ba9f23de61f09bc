//! Deep-research jobs (`mana_ai.mission_research_jobs`): at most one row per mission.
//!
//! A row answers one due run of its mission (`due_at`). Its life:
//! `submitting` (written *before* the HTTP submit, carrying the idempotency key) →
//! `pending` (the provider accepted it; `task_id` is set) → `completed` (the rendered
//! answer kept in `result`), `failed` or `abandoned`. Terminal rows stay until the
//! mission's next due run replaces them, so a retried run of the same due time never
//! pays for a second job. Rows of missions that are gone, paused or archived are removed
//! by [`Store::cleanup_research_jobs`].

use chrono::{DateTime, Utc};

use crate::row::from_row;
use crate::{Store, StoreError};

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResearchJobState {
    /// Row written, submit not yet confirmed (crash-safe: re-submit with the same key).
    Submitting,
    /// Accepted by the provider; poll `task_id`.
    Pending,
    /// Finished; `result` holds the rendered answer (or nothing when it was empty).
    Completed,
    /// The provider reported failure/cancellation, or rejected the submit.
    Failed,
    /// Given up by us (too old, or the provider kept failing to answer).
    Abandoned,
}

impl ResearchJobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submitting => "submitting",
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Abandoned => "abandoned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "submitting" => Self::Submitting,
            "pending" => Self::Pending,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "abandoned" => Self::Abandoned,
            _ => return None,
        })
    }

    /// True once the job will not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Abandoned)
    }
}

/// One stored job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResearchJob {
    pub user_id: String,
    pub mission_id: String,
    /// Empty while `submitting`.
    pub task_id: String,
    pub provider_id: String,
    pub submitted_at: DateTime<Utc>,
    pub last_polled_at: Option<DateTime<Utc>>,
    /// The due run this job answers (`None` for rows written by the original service).
    pub due_at: Option<DateTime<Utc>>,
    pub idempotency_key: Option<String>,
    pub state: ResearchJobState,
    /// Consecutive failed polls (or ambiguous submit failures).
    pub poll_failures: i32,
    /// The rendered answer of a completed job.
    pub result: Option<String>,
}

/// A job about to be submitted.
#[derive(Debug, Clone)]
pub struct NewResearchJob<'a> {
    pub user_id: &'a str,
    pub mission_id: &'a str,
    pub provider_id: &'a str,
    pub due_at: DateTime<Utc>,
    pub idempotency_key: &'a str,
}

/// A row removed by [`Store::cleanup_research_jobs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedResearchJob {
    pub provider_id: String,
    pub state: ResearchJobState,
}

/// The mission's job row (`$1` user, `$2` mission), its columns in [`ResearchJob`] order.
const SELECT_JOB_SQL: &str = "SELECT user_id, mission_id, task_id, provider_id, submitted_at,
        last_polled_at, due_at, idempotency_key, state, poll_failures, result
   FROM mana_ai.mission_research_jobs WHERE user_id = $1 AND mission_id = $2";

/// A stored state text as a [`ResearchJobState`] (unknown text is a corrupt row).
fn parse_state(state: String) -> Result<ResearchJobState, StoreError> {
    ResearchJobState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("research job state {state:?}")))
}

/// A row of [`SELECT_JOB_SQL`].
fn job_from_row(r: &tokio_postgres::Row) -> Result<ResearchJob, StoreError> {
    Ok(from_row!(r, ResearchJob {
        user_id,
        mission_id,
        task_id,
        provider_id,
        submitted_at,
        last_polled_at,
        due_at,
        idempotency_key,
        state => parse_state,
        poll_failures,
        result,
    }))
}

fn refuse_empty(user_id: &str, mission_id: &str) -> Result<(), StoreError> {
    if user_id.is_empty() || mission_id.is_empty() {
        return Err(StoreError::Refused("empty user or mission id"));
    }
    Ok(())
}

impl Store {
    /// The mission's job row, if any.
    pub async fn research_job(
        &self,
        user_id: &str,
        mission_id: &str,
    ) -> Result<Option<ResearchJob>, StoreError> {
        refuse_empty(user_id, mission_id)?;
        let c = self.client().await?;
        let row = c
            .query_opt(SELECT_JOB_SQL, &[&user_id, &mission_id])
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Writes a `submitting` row unless the mission already has one, and returns the row
    /// that is stored afterwards (ours, or the one that was there).
    pub async fn insert_research_job(
        &self,
        job: &NewResearchJob<'_>,
    ) -> Result<ResearchJob, StoreError> {
        refuse_empty(job.user_id, job.mission_id)?;
        let c = self.client().await?;
        c.execute(
            "INSERT INTO mana_ai.mission_research_jobs
                 (user_id, mission_id, task_id, provider_id, due_at, idempotency_key, state)
             VALUES ($1, $2, '', $3, $4, $5, 'submitting')
             ON CONFLICT (user_id, mission_id) DO NOTHING",
            &[
                &job.user_id,
                &job.mission_id,
                &job.provider_id,
                &job.due_at,
                &job.idempotency_key,
            ],
        )
        .await?;
        let row = c
            .query_one(SELECT_JOB_SQL, &[&job.user_id, &job.mission_id])
            .await?;
        job_from_row(&row)
    }

    /// Records an accepted submit: `submitting` → `pending` with the provider's task id.
    /// Only the row carrying `idempotency_key` changes; false when there is none.
    pub async fn research_job_submitted(
        &self,
        user_id: &str,
        mission_id: &str,
        idempotency_key: &str,
        task_id: &str,
        provider_id: &str,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE mana_ai.mission_research_jobs
                    SET state = 'pending', task_id = $4, provider_id = $5, poll_failures = 0
                  WHERE user_id = $1 AND mission_id = $2 AND idempotency_key = $3
                    AND state = 'submitting'",
                &[
                    &user_id,
                    &mission_id,
                    &idempotency_key,
                    &task_id,
                    &provider_id,
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// Records one poll (or submit attempt): `ok` resets the failure streak, otherwise it
    /// grows by one. Returns the streak afterwards (0 when the row is gone).
    pub async fn research_job_polled(
        &self,
        user_id: &str,
        mission_id: &str,
        ok: bool,
    ) -> Result<i32, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "UPDATE mana_ai.mission_research_jobs
                    SET last_polled_at = now(),
                        poll_failures = CASE WHEN $3 THEN 0 ELSE poll_failures + 1 END
                  WHERE user_id = $1 AND mission_id = $2
                  RETURNING poll_failures",
                &[&user_id, &mission_id, &ok],
            )
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?.unwrap_or(0))
    }

    /// Moves an unfinished job to another due run of its mission (the schedule moved
    /// while the job was running: the paid job answers the run that is due now).
    pub async fn research_job_rekey(
        &self,
        user_id: &str,
        mission_id: &str,
        due_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE mana_ai.mission_research_jobs SET due_at = $3
              WHERE user_id = $1 AND mission_id = $2 AND state IN ('submitting', 'pending')",
            &[&user_id, &mission_id, &due_at],
        )
        .await?;
        Ok(())
    }

    /// Puts a job into a terminal state, keeping `result` (the rendered answer).
    pub async fn finish_research_job(
        &self,
        user_id: &str,
        mission_id: &str,
        state: ResearchJobState,
        result: Option<&str>,
    ) -> Result<(), StoreError> {
        if !state.is_terminal() {
            return Err(StoreError::Refused(
                "finish_research_job needs a final state",
            ));
        }
        let c = self.client().await?;
        c.execute(
            "UPDATE mana_ai.mission_research_jobs
                SET state = $3, result = $4, last_polled_at = now()
              WHERE user_id = $1 AND mission_id = $2",
            &[&user_id, &mission_id, &state.as_str(), &result],
        )
        .await?;
        Ok(())
    }

    /// Removes the mission's job row.
    pub async fn delete_research_job(
        &self,
        user_id: &str,
        mission_id: &str,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM mana_ai.mission_research_jobs WHERE user_id = $1 AND mission_id = $2",
            &[&user_id, &mission_id],
        )
        .await?;
        Ok(())
    }

    /// Deletes the jobs of missions that are deleted, not active (paused, archived…) or
    /// unknown. One statement; the jobs table holds at most one row per mission and each
    /// row costs one primary-key probe into the snapshots.
    pub async fn cleanup_research_jobs(&self) -> Result<Vec<RemovedResearchJob>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "DELETE FROM mana_ai.mission_research_jobs j
                  WHERE NOT EXISTS (
                        SELECT 1 FROM mana_ai.mission_snapshots s
                         WHERE s.user_id = j.user_id AND s.mission_id = j.mission_id
                           AND s.state = 'active' AND NOT s.deleted)
                  RETURNING j.provider_id, j.state",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(from_row!(r, RemovedResearchJob {
                    provider_id,
                    state => parse_state,
                }))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_terminality() {
        for (s, terminal) in [
            (ResearchJobState::Submitting, false),
            (ResearchJobState::Pending, false),
            (ResearchJobState::Completed, true),
            (ResearchJobState::Failed, true),
            (ResearchJobState::Abandoned, true),
        ] {
            assert_eq!(ResearchJobState::parse(s.as_str()), Some(s));
            assert_eq!(s.is_terminal(), terminal, "{s:?}");
        }
        assert_eq!(ResearchJobState::parse("queued"), None);
    }
}
