//! Per-agent daily token budgets that hold under concurrency.
//!
//! Usage is booked in `mana_ai.token_usage` (the original's table and columns, one row
//! per LLM call). Before a call the runner *reserves* an estimate in
//! `mana_ai.token_reservations`; the check "booked usage in the rolling 24 h window plus
//! unexpired reservations is still below the cap" and the insert of the reservation run
//! under one transaction-level advisory lock per `(user, agent)`, so two runners can
//! never both see the same remaining budget; it is one statement, the `SECURITY INVOKER`
//! function `mana_ai.reserve_tokens` of the migration (one round trip; SQL in
//! `schema/budget.sql`, lock seed [`locks::RESERVE_SEED`]). After the call
//! the reservation is replaced by the real usage in one statement. Reservations carry an
//! expiry, so a runner that crashes mid-call holds budget only until then.
//!
//! Consequence: concurrent calls of one agent together exceed the cap by less than one
//! call's estimate (the last reservation admitted below the cap), as long as no call uses
//! more than it reserved.

use std::collections::HashMap;
use std::time::Duration;

use crate::{locks, Store, StoreError};

/// Rows deleted per statement when pruning, so one pass stays cheap.
const PRUNE_BATCH: i64 = 10_000;

/// A reservation request for one LLM call.
#[derive(Debug, Clone)]
pub struct ReserveRequest<'a> {
    pub user_id: &'a str,
    pub agent_id: &'a str,
    pub mission_id: &'a str,
    /// The agent's `maxTokensPerDay`.
    pub cap: u64,
    /// Estimated tokens of the call (prompt + completion allowance).
    pub estimate: u64,
    /// How long the reservation holds budget if it is never settled.
    pub ttl: Duration,
}

/// Outcome of [`Store::reserve_tokens`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Budget held; settle it with [`Store::settle_tokens`].
    Granted { id: i64 },
    /// Booked usage plus other reservations already reach the cap.
    Denied { committed: u64 },
}

/// An agent's budget position in the rolling 24 h window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetUse {
    /// Tokens booked in `token_usage` during the last 24 h.
    pub used_24h: u64,
    /// Tokens held by unexpired reservations (calls in flight).
    pub reserved: u64,
}

impl BudgetUse {
    /// Booked plus reserved tokens: what the cap is checked against.
    pub fn committed(&self) -> u64 {
        self.used_24h.saturating_add(self.reserved)
    }

    /// What is left under `cap` (never negative).
    pub fn left(&self, cap: u64) -> u64 {
        cap.saturating_sub(self.committed())
    }
}

/// What one pruning pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStats {
    pub usage_rows: u64,
    pub reservations: u64,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// `mana_ai.committed_tokens` (`schema/0009`: a generic plan instead of one per call).
const COMMITTED_SQL: &str = "SELECT used_24h, reserved FROM mana_ai.committed_tokens($1, $2)";

/// One round trip: `mana_ai.reserve_tokens` takes the `(user, agent)` advisory lock,
/// sums booked usage (24 h) and unexpired reservations, and inserts the reservation only
/// when that sum is below the cap. Answers the new id (NULL when denied) and the sums.
const RESERVE_SQL: &str =
    "SELECT reservation_id, used_24h, reserved FROM mana_ai.reserve_tokens($1, $2, $3, $4, $5, $6, $7)";

/// One statement, so atomic: the reservation goes, the real usage (if any) is booked
/// (`mana_ai.settle_tokens`, `schema/0009`).
const SETTLE_SQL: &str = "SELECT mana_ai.settle_tokens($1, $2, $3, $4, $5)";

impl Store {
    /// Reserves `req.estimate` tokens unless booked usage (24 h) plus unexpired
    /// reservations already reach `req.cap`. A cap of 0 is always denied.
    pub async fn reserve_tokens(
        &self,
        req: &ReserveRequest<'_>,
    ) -> Result<Reservation, StoreError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(RESERVE_SQL).await?;
        let ttl = req.ttl.as_secs_f64();
        let row = c
            .query_one(
                &stmt,
                &[
                    &req.user_id,
                    &req.agent_id,
                    &req.mission_id,
                    &to_i64(req.cap),
                    &to_i64(req.estimate),
                    &ttl,
                    &locks::RESERVE_SEED,
                ],
            )
            .await?;
        let id: Option<i64> = row.try_get(0)?;
        Ok(match id {
            Some(id) => Reservation::Granted { id },
            None => Reservation::Denied {
                committed: BudgetUse {
                    used_24h: to_u64(row.try_get(1)?),
                    reserved: to_u64(row.try_get(2)?),
                }
                .committed(),
            },
        })
    }

    /// Replaces a reservation by the real usage of its call, atomically (one
    /// statement): the reservation (if given and still present) is deleted and `tokens`
    /// (if > 0) are booked in `token_usage`. The usage is booked even when the
    /// reservation has already expired and been pruned.
    pub async fn settle_tokens(
        &self,
        reservation: Option<i64>,
        user_id: &str,
        agent_id: &str,
        mission_id: &str,
        tokens: u64,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(SETTLE_SQL).await?;
        // `tokens_used` is INT in the original schema; one call never comes near the limit.
        let tokens = i32::try_from(tokens).unwrap_or(i32::MAX);
        c.query_one(
            &stmt,
            &[&reservation, &user_id, &agent_id, &mission_id, &tokens],
        )
        .await?;
        Ok(())
    }

    /// Converts an abandoned reservation (its call was cancelled) into usage at its
    /// reserved amount — the provider may have billed the call. Idempotent: does
    /// nothing when the reservation is already gone. Returns the tokens booked.
    pub async fn book_abandoned_reservation(&self, reservation: i64) -> Result<u64, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let row = tx
            .query_opt(
                "DELETE FROM mana_ai.token_reservations WHERE id = $1
                 RETURNING user_id, agent_id, mission_id, tokens",
                &[&reservation],
            )
            .await?;
        let booked = match row {
            Some(r) => {
                let tokens = to_u64(r.try_get(3)?);
                let (user, agent, mission): (String, String, String) =
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                insert_usage(&tx, &user, &agent, &mission, tokens).await?;
                tokens
            }
            None => 0,
        };
        tx.commit().await?;
        Ok(booked)
    }

    /// Booked usage (24 h) and unexpired reservations of one agent.
    pub async fn agent_budget_use(
        &self,
        user_id: &str,
        agent_id: &str,
    ) -> Result<BudgetUse, StoreError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(COMMITTED_SQL).await?;
        let row = c.query_one(&stmt, &[&user_id, &agent_id]).await?;
        Ok(BudgetUse {
            used_24h: to_u64(row.try_get(0)?),
            reserved: to_u64(row.try_get(1)?),
        })
    }

    /// Budget positions of all agents of one user that used or reserved tokens in the
    /// window (agents absent from the map have used nothing).
    pub async fn user_budget_use(
        &self,
        user_id: &str,
    ) -> Result<HashMap<String, BudgetUse>, StoreError> {
        if user_id.is_empty() {
            return Err(StoreError::Refused("empty user id"));
        }
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT agent_id, SUM(used)::bigint, SUM(reserved)::bigint FROM (
                    SELECT agent_id, tokens_used::bigint AS used, 0::bigint AS reserved
                      FROM mana_ai.token_usage
                     WHERE user_id = $1 AND ts > now() - interval '24 hours'
                    UNION ALL
                    SELECT agent_id, 0::bigint, tokens
                      FROM mana_ai.token_reservations
                     WHERE user_id = $1 AND expires_at > now()
                 ) t GROUP BY agent_id",
                &[&user_id],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    BudgetUse {
                        used_24h: to_u64(r.try_get(1)?),
                        reserved: to_u64(r.try_get(2)?),
                    },
                ))
            })
            .collect()
    }

    /// Deletes usage rows older than 48 h and expired reservations (at most a bounded
    /// batch of each per call; meant to run once per tick).
    pub async fn prune_token_budget(&self) -> Result<PruneStats, StoreError> {
        let c = self.client().await?;
        let usage_rows = c
            .execute(
                "DELETE FROM mana_ai.token_usage WHERE id IN (
                    SELECT id FROM mana_ai.token_usage
                     WHERE ts < now() - interval '48 hours' LIMIT $1)",
                &[&PRUNE_BATCH],
            )
            .await?;
        let reservations = c
            .execute(
                "DELETE FROM mana_ai.token_reservations WHERE id IN (
                    SELECT id FROM mana_ai.token_reservations
                     WHERE expires_at < now() LIMIT $1)",
                &[&PRUNE_BATCH],
            )
            .await?;
        Ok(PruneStats {
            usage_rows,
            reservations,
        })
    }
}

/// One `token_usage` row, exactly the original's columns. Nothing for 0 tokens.
async fn insert_usage(
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: &str,
    agent_id: &str,
    mission_id: &str,
    tokens: u64,
) -> Result<(), StoreError> {
    if tokens == 0 {
        return Ok(());
    }
    // `tokens_used` is INT in the original schema; one call never comes near the limit.
    let tokens = i32::try_from(tokens).unwrap_or(i32::MAX);
    let stmt = tx
        .prepare_cached(
            "INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, tokens_used)
             VALUES ($1, $2, $3, $4)",
        )
        .await?;
    tx.execute(&stmt, &[&user_id, &agent_id, &mission_id, &tokens])
        .await?;
    Ok(())
}
