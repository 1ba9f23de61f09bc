//! Mission runs: the claim on one due run, and the exactly-once write-back.
//!
//! A due run is identified by `(user_id, mission_id, due_at)`; its iteration id is
//! derived from the same pair, so a retry can never produce a second iteration. A
//! runner first *claims* the run (a `running` row with a lease), plans without holding
//! any transaction, then writes the iteration row into `sync_changes` and marks the run
//! `written`/`failed` in ONE transaction that re-checks the claim under a row lock. Any
//! number of runners may try; exactly one write lands. A crashed runner's claim expires
//! with its lease and the run is taken over.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{Store, StoreError};

/// Per-agent concurrency limit checked while claiming.
#[derive(Debug, Clone)]
pub struct AgentSlot {
    pub agent_id: String,
    /// How many of this agent's runs may be `running` (unexpired) at once.
    pub max_concurrent: i64,
    /// True when the mission names its agent (`agentId`); false for missions of the
    /// default agent (no `agentId`). Used to find the agent's other due missions.
    pub explicit_agent: bool,
}

/// A claim request.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub user_id: &'a str,
    pub mission_id: &'a str,
    pub due_at: DateTime<Utc>,
    pub iteration_id: &'a str,
    pub runner_id: &'a str,
    pub lease: std::time::Duration,
    pub slot: AgentSlot,
}

/// Outcome of [`Store::claim_run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This runner owns the run now.
    Claimed,
    /// The run was already written back (or failed and was recorded).
    AlreadyDone,
    /// Another runner holds an unexpired claim on this run.
    HeldElsewhere,
    /// The agent already has `max_concurrent` runs in flight.
    AgentBusy,
}

/// One iteration write-back.
#[derive(Debug, Clone)]
pub struct WriteBack<'a> {
    pub user_id: &'a str,
    pub mission_id: &'a str,
    pub due_at: DateTime<Utc>,
    pub runner_id: &'a str,
    /// `sync_changes.data`: `{"iterations": [...], "nextRunAt": ...}`.
    pub data: &'a Value,
    /// `sync_changes.field_meta`: string stamps only.
    pub field_meta: &'a Value,
    pub actor: &'a Value,
    /// `written` for a plan, `failed` for a failed run.
    pub failed: bool,
    pub error: Option<&'a str>,
}

/// Outcome of [`Store::write_back`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// The claim was lost (expired and taken over, or already written): nothing written.
    ClaimLost,
}

const CLIENT_ID: &str = "mana-ai-runner";

impl Store {
    /// Claims a due run for this runner. Serialised per agent by a transaction-level
    /// advisory lock, so the concurrency check and the insert are atomic across runners.
    pub async fn claim_run(&self, req: &ClaimRequest<'_>) -> Result<Claim, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 7366720003))",
            &[&req.user_id, &req.slot.agent_id],
        )
        .await?;
        let lease_secs = req.lease.as_secs_f64();
        let existing = tx
            .query_opt(
                "SELECT status, runner_id, lease_until < now() AS expired
                   FROM mana_ai.mission_runs
                  WHERE user_id = $1 AND mission_id = $2 AND due_at = $3
                  FOR UPDATE",
                &[&req.user_id, &req.mission_id, &req.due_at],
            )
            .await?;
        if let Some(row) = &existing {
            let status: String = row.get(0);
            let runner: String = row.get(1);
            let expired: bool = row.get(2);
            if status != "running" {
                return Ok(Claim::AlreadyDone);
            }
            if runner != req.runner_id && !expired {
                return Ok(Claim::HeldElsewhere);
            }
        }
        let in_flight: i64 = tx
            .query_one(
                "SELECT count(*) FROM mana_ai.mission_runs
                  WHERE user_id = $1 AND agent_id = $2 AND status = 'running'
                    AND lease_until >= now()
                    AND NOT (mission_id = $3 AND due_at = $4)",
                &[
                    &req.user_id,
                    &req.slot.agent_id,
                    &req.mission_id,
                    &req.due_at,
                ],
            )
            .await?
            .get(0);
        // Oldest due first: a free slot goes to this run only if fewer older due runs of
        // the same agent are waiting (due, unclaimed or with an expired claim) than there
        // are free slots. The agent's oldest due run is never held back by this rule, so
        // nobody starves. Missions waiting for a deep-research job do not hold others back.
        let free = req.slot.max_concurrent - in_flight;
        if free <= 0 {
            return Ok(Claim::AgentBusy);
        }
        let older_waiting: i64 = tx
            .query_one(
                "SELECT count(*) FROM mana_ai.mission_snapshots s
                  WHERE s.user_id = $1 AND s.state = 'active' AND NOT s.deleted
                    AND s.next_run_at IS NOT NULL
                    AND (s.next_run_at, s.mission_id) < ($3, $4)
                    AND CASE WHEN $5 THEN s.agent_id = $2
                             ELSE s.agent_id IS NULL OR s.agent_id = '' END
                    AND NOT EXISTS (
                        SELECT 1 FROM mana_ai.mission_runs r
                         WHERE r.user_id = s.user_id AND r.mission_id = s.mission_id
                           AND r.due_at = s.next_run_at
                           AND (r.status <> 'running' OR r.lease_until >= now()))
                    AND NOT EXISTS (
                        SELECT 1 FROM mana_ai.mission_research_jobs j
                         WHERE j.user_id = s.user_id AND j.mission_id = s.mission_id)",
                &[
                    &req.user_id,
                    &req.slot.agent_id,
                    &req.due_at,
                    &req.mission_id,
                    &req.slot.explicit_agent,
                ],
            )
            .await?
            .get(0);
        if older_waiting >= free {
            return Ok(Claim::AgentBusy);
        }
        tx.execute(
            "INSERT INTO mana_ai.mission_runs
                 (user_id, mission_id, due_at, iteration_id, agent_id, status, runner_id, lease_until)
             VALUES ($1, $2, $3, $4, $5, 'running', $6, now() + make_interval(secs => $7::float8))
             ON CONFLICT (user_id, mission_id, due_at) DO UPDATE
               SET runner_id = EXCLUDED.runner_id, lease_until = EXCLUDED.lease_until,
                   started_at = now()",
            &[
                &req.user_id,
                &req.mission_id,
                &req.due_at,
                &req.iteration_id,
                &req.slot.agent_id,
                &req.runner_id,
                &lease_secs,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Claim::Claimed)
    }

    /// Gives a claimed run back without writing anything (shutdown, skipped gate), so
    /// the next pass may claim it immediately.
    pub async fn release_run(
        &self,
        user_id: &str,
        mission_id: &str,
        due_at: DateTime<Utc>,
        runner_id: &str,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM mana_ai.mission_runs
              WHERE user_id = $1 AND mission_id = $2 AND due_at = $3
                AND runner_id = $4 AND status = 'running'",
            &[&user_id, &mission_id, &due_at, &runner_id],
        )
        .await?;
        Ok(())
    }

    /// Writes the iteration row and closes the run in one RLS-scoped transaction. The
    /// claim is re-checked under a row lock first: if this runner no longer owns a
    /// `running` claim, nothing is written.
    pub async fn write_back(&self, wb: &WriteBack<'_>) -> Result<WriteOutcome, StoreError> {
        let tx = self.begin_user(wb.user_id).await?;
        let row = tx
            .client()
            .query_opt(
                "SELECT status, runner_id FROM mana_ai.mission_runs
                  WHERE user_id = $1 AND mission_id = $2 AND due_at = $3 FOR UPDATE",
                &[&wb.user_id, &wb.mission_id, &wb.due_at],
            )
            .await?;
        let owned = matches!(&row, Some(r) if r.get::<_, String>(0) == "running" && r.get::<_, String>(1) == wb.runner_id);
        if !owned {
            tx.rollback().await?;
            return Ok(WriteOutcome::ClaimLost);
        }
        tx.client()
            .execute(
                "INSERT INTO sync_changes
                   (app_id, table_name, record_id, user_id, op, data, field_meta, client_id,
                    schema_version, actor, origin)
                 VALUES ('ai', 'aiMissions', $1, $2, 'update', $3, $4, $5, 1, $6, 'agent')",
                &[
                    &wb.mission_id,
                    &wb.user_id,
                    wb.data,
                    wb.field_meta,
                    &CLIENT_ID,
                    wb.actor,
                ],
            )
            .await?;
        let status = if wb.failed { "failed" } else { "written" };
        tx.client()
            .execute(
                "UPDATE mana_ai.mission_runs
                    SET status = $4, finished_at = now(), error = $5
                  WHERE user_id = $1 AND mission_id = $2 AND due_at = $3",
                &[&wb.user_id, &wb.mission_id, &wb.due_at, &status, &wb.error],
            )
            .await?;
        tx.commit().await?;
        Ok(WriteOutcome::Written)
    }
}
