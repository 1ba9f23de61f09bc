//! Mission runs: the claim on one due run (the exactly-once write-back that closes it is
//! in [`crate::write_back`]).
//!
//! A due run is identified by `(user_id, mission_id, due_at)`; its iteration id is
//! derived from the same pair, so a retry can never produce a second iteration. A
//! runner first *claims* the run (a `running` row with a lease), plans without holding
//! any transaction, then writes the iteration row into `sync_changes` and marks the run
//! `written`/`failed` in ONE transaction that re-checks the claim under a row lock. Any
//! number of runners may try; exactly one write lands. A crashed runner's claim expires
//! with its lease and the run is taken over.
//!
//! The claim is a single statement calling the `SECURITY INVOKER` function
//! `mana_ai.claim_run` that the migration creates (see [`crate::schema`], SQL in
//! `schema/runs.sql`): one round trip, prepared once per pooled connection. This module
//! owns `mana_ai.mission_runs`.

use chrono::{DateTime, Utc};

use crate::{Store, StoreError};

/// Per-agent concurrency limit checked while claiming.
#[derive(Debug, Clone)]
pub struct AgentSlot {
    /// The agent the mission runs under, resolved (the default agent's id for a mission
    /// without `agentId`, as [`mana_ai_core::records::agent_id_or_default`] gives it).
    /// The claim finds the agent's other due missions by this id, which the refresh
    /// stores resolved in the snapshot's `agent_id` column.
    pub agent_id: String,
    /// How many of this agent's runs may be `running` (unexpired) at once.
    pub max_concurrent: i64,
}

/// A claim request.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// The due run: `(user_id, mission_id, due_at)`.
    pub user_id: &'a str,
    pub mission_id: &'a str,
    pub due_at: DateTime<Utc>,
    /// The iteration this run writes (derived from the mission and the due time).
    pub iteration_id: &'a str,
    /// Who claims; a claim of the same runner is renewed.
    pub runner_id: &'a str,
    /// How long the claim holds without being renewed or written back.
    pub lease: std::time::Duration,
    /// The agent's concurrency limit.
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

/// One round trip: [`schema`](crate::schema)'s `mana_ai.claim_run` does the whole claim.
const CLAIM_SQL: &str = "SELECT mana_ai.claim_run($1, $2, $3, $4, $5, $6, $7, $8)";

const RELEASE_SQL: &str = "DELETE FROM mana_ai.mission_runs
      WHERE user_id = $1 AND mission_id = $2 AND due_at = $3
        AND runner_id = $4 AND status = 'running'";

impl Store {
    /// Claims a due run for this runner, in one statement (`mana_ai.claim_run`, one
    /// round trip, prepared once per connection). Serialised per agent by a
    /// transaction-level advisory lock inside it, so the slot check and the insert are
    /// atomic across runners:
    ///
    /// * a run already written back (or failed) is [`Claim::AlreadyDone`];
    /// * another runner's unexpired claim is [`Claim::HeldElsewhere`] (an expired one is
    ///   taken over; this runner's own claim is renewed);
    /// * [`Claim::AgentBusy`] when the agent's `max_concurrent` unexpired runs are in
    ///   flight, or when at least as many of the agent's *older* due runs wait (due,
    ///   unclaimed or with an expired claim, not waiting for deep research) as there are
    ///   free slots: oldest due first, and the oldest is never held back.
    pub async fn claim_run(&self, req: &ClaimRequest<'_>) -> Result<Claim, StoreError> {
        if req.user_id.is_empty() {
            return Err(StoreError::Refused("claim: empty user id"));
        }
        let c = self.client().await?;
        let stmt = c.prepare_cached(CLAIM_SQL).await?;
        let lease_secs = req.lease.as_secs_f64();
        let answer: String = c
            .query_one(
                &stmt,
                &[
                    &req.user_id,
                    &req.mission_id,
                    &req.due_at,
                    &req.iteration_id,
                    &req.slot.agent_id,
                    &req.slot.max_concurrent,
                    &req.runner_id,
                    &lease_secs,
                ],
            )
            .await?
            .try_get(0)?;
        match answer.as_str() {
            "claimed" => Ok(Claim::Claimed),
            "done" => Ok(Claim::AlreadyDone),
            "held" => Ok(Claim::HeldElsewhere),
            "busy" => Ok(Claim::AgentBusy),
            other => Err(StoreError::Corrupt(format!(
                "mana_ai.claim_run answered {other:?}"
            ))),
        }
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
        let stmt = c.prepare_cached(RELEASE_SQL).await?;
        c.execute(&stmt, &[&user_id, &mission_id, &due_at, &runner_id])
            .await?;
        Ok(())
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    //! The default agent as the claim sees it: the refresh stores the resolved agent id,
    //! so missions without `agentId` are found by the default agent's id.

    use chrono::{DateTime, Duration, Utc};
    use mana_ai_core::records::DEFAULT_AGENT_ID;
    use serde_json::{json, Value};

    use super::*;
    use crate::testkit::{fresh_db, SERVICE_ROLE};
    use crate::RefreshOptions;

    const USER: &str = "u-default";

    async fn push_mission(admin: &tokio_postgres::Client, id: &str, data: Value) {
        admin
            .execute(
                "INSERT INTO sync_changes
                     (app_id, table_name, record_id, user_id, op, data, field_meta, client_id)
                 VALUES ('ai', 'aiMissions', $1, $2, 'insert', $3, '{}', 'device-1')",
                &[&id, &USER, &data],
            )
            .await
            .expect("push mission");
    }

    async fn agent_column(admin: &tokio_postgres::Client, id: &str) -> Option<String> {
        admin
            .query_one(
                "SELECT agent_id FROM mana_ai.mission_snapshots
                  WHERE user_id = $1 AND mission_id = $2",
                &[&USER, &id],
            )
            .await
            .expect("snapshot")
            .get(0)
    }

    fn claim<'a>(mission: &'a str, due: DateTime<Utc>) -> ClaimRequest<'a> {
        ClaimRequest {
            user_id: USER,
            mission_id: mission,
            due_at: due,
            iteration_id: mission,
            runner_id: "runner-1",
            lease: std::time::Duration::from_secs(60),
            slot: AgentSlot {
                agent_id: DEFAULT_AGENT_ID.into(),
                max_concurrent: 1,
            },
        }
    }

    #[tokio::test]
    async fn missions_without_agent_id_are_claimed_as_the_default_agents() {
        let db = fresh_db("runs_default_agent").await;
        let (store, admin) = (db.service_store(), db.admin().await);
        // Due times as the snapshots hold them (milliseconds).
        let iso = |t: DateTime<Utc>| mana_ai_core::iso::to_iso_ms(t);
        let old = mana_ai_core::iso::parse_iso(&iso(Utc::now() - Duration::hours(2))).unwrap();
        let new = old + Duration::hours(1);
        push_mission(
            &admin,
            "m-old",
            json!({"state": "active", "nextRunAt": iso(old)}),
        )
        .await;
        let empty = json!({"state": "active", "nextRunAt": iso(new), "agentId": ""});
        push_mission(&admin, "m-new", empty).await;
        let opts = RefreshOptions {
            safety_margin: std::time::Duration::ZERO,
            ..RefreshOptions::default()
        };
        store.refresh_snapshots(opts).await.expect("refresh");
        for id in ["m-old", "m-new"] {
            assert_eq!(
                agent_column(&admin, id).await.as_deref(),
                Some(DEFAULT_AGENT_ID)
            );
        }
        // Oldest due first within the default agent: the newer run waits for the older.
        assert_eq!(
            store.claim_run(&claim("m-new", new)).await.unwrap(),
            Claim::AgentBusy
        );
        assert_eq!(
            store.claim_run(&claim("m-old", old)).await.unwrap(),
            Claim::Claimed
        );

        // Rows of earlier versions (NULL or empty column) are resolved by the migration
        // (migration 1, which runs again on a database an earlier build recorded).
        admin
            .execute(
                "UPDATE mana_ai.mission_snapshots SET agent_id = CASE mission_id
                     WHEN 'm-old' THEN NULL ELSE '' END",
                &[],
            )
            .await
            .expect("old-style columns");
        admin
            .execute("UPDATE mana_ai.schema_migrations SET checksum = NULL", &[])
            .await
            .expect("as recorded by an earlier build");
        crate::schema::migrate(&admin, Some(SERVICE_ROLE))
            .await
            .expect("migrate again");
        for id in ["m-old", "m-new"] {
            assert_eq!(
                agent_column(&admin, id).await.as_deref(),
                Some(DEFAULT_AGENT_ID)
            );
        }
    }
}
