//! The decrypt audit (`mana_ai.decrypt_audit`): one row per attempt to read an encrypted
//! input record under a mission key grant — `ok`, `failed` or `scope-violation`.
//!
//! This module owns the table: writing a row, the user-facing read
//! (`GET /api/v1/me/ai-audit`, newest first) and retention.
//!
//! Every statement runs inside a `withUser` transaction (the table has FORCE row-level
//! security scoped by `app.current_user_id`); the read also filters on `user_id`
//! explicitly. The service role may only SELECT and INSERT; rows are removed solely by
//! retention, through the `SECURITY DEFINER` function `mana_ai.prune_decrypt_audit()`
//! owned by the migration role, with the retention the migration role set (see
//! [`crate::schema::set_audit_retention`]).

use chrono::{DateTime, Utc};

use crate::row::from_row;
use crate::{Store, StoreError, UserTx};

/// Outcome recorded by an audit row (the `status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditStatus {
    /// The record was read and every encrypted field decrypted.
    Ok,
    /// Decryption failed; `reason` says why.
    Failed,
    /// The record is outside the grant's allowlist; nothing was read.
    ScopeViolation,
}

impl AuditStatus {
    /// The stored text: `ok`, `failed`, `scope-violation`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditStatus::Ok => "ok",
            AuditStatus::Failed => "failed",
            AuditStatus::ScopeViolation => "scope-violation",
        }
    }
}

/// One audit row to insert. `user_id` is the scope of the transaction it is written in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptAuditEntry<'a> {
    pub mission_id: &'a str,
    /// The server iteration this decrypt serves (set for every row the runner writes).
    pub iteration_id: Option<&'a str>,
    pub table_name: &'a str,
    pub record_id: &'a str,
    pub status: AuditStatus,
    /// A stable reason label (never key material or plaintext).
    pub reason: Option<&'a str>,
}

/// One audit row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub mission_id: String,
    pub iteration_id: Option<String>,
    pub table_name: String,
    pub record_id: String,
    /// `ok`, `failed` or `scope-violation`.
    pub status: String,
    pub reason: Option<String>,
    pub ts: DateTime<Utc>,
}

/// Largest page the read returns.
pub const MAX_AUDIT_LIMIT: i64 = 1000;

/// The newest rows of `$1`, of mission `$2` unless it is NULL, at most `$3`. Planned per
/// execution (the pool forces custom plans), so a NULL `$2` drops the filter.
const READ_SQL: &str =
    "SELECT id, mission_id, iteration_id, table_name, record_id, status, reason, ts
   FROM mana_ai.decrypt_audit
  WHERE user_id = $1 AND ($2::text IS NULL OR mission_id = $2)
  ORDER BY ts DESC, id DESC LIMIT $3";

/// Smallest retention `mana_ai.prune_decrypt_audit` accepts, in days: even a compromised
/// service role can never erase the recent audit trail through it.
pub const MIN_RETENTION_DAYS: u32 = 7;

/// Default retention (`MANA_AI_AUDIT_RETENTION_DAYS`).
pub const DEFAULT_RETENTION_DAYS: u32 = 365;

/// Inserts one audit row inside the caller's `withUser` transaction (the row's `user_id`
/// is the transaction's user). Returns the row id. Visible to others once committed.
pub async fn insert_decrypt_audit(
    tx: &UserTx,
    entry: &DecryptAuditEntry<'_>,
) -> Result<i64, StoreError> {
    let row = tx
        .client()
        .query_one(
            "INSERT INTO mana_ai.decrypt_audit
               (user_id, mission_id, iteration_id, table_name, record_id, status, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             RETURNING id",
            &[
                &tx.user_id(),
                &entry.mission_id,
                &entry.iteration_id,
                &entry.table_name,
                &entry.record_id,
                &entry.status.as_str(),
                &entry.reason,
            ],
        )
        .await?;
    Ok(row.try_get(0)?)
}

impl Store {
    /// Inserts and commits one audit row in its own `withUser(user_id)` transaction.
    pub async fn write_decrypt_audit(
        &self,
        user_id: &str,
        entry: &DecryptAuditEntry<'_>,
    ) -> Result<i64, StoreError> {
        let tx = self.begin_user(user_id).await?;
        let id = insert_decrypt_audit(&tx, entry).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The newest `limit` (clamped to 1..=1000) audit rows of `user_id`, optionally of one
    /// mission, ordered by `ts DESC` (ties: newest id first, so rows written in one
    /// transaction keep a stable order).
    pub async fn read_decrypt_audit(
        &self,
        user_id: &str,
        mission_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let limit = limit.clamp(1, MAX_AUDIT_LIMIT);
        let tx = self.begin_user(user_id).await?;
        let rows = tx
            .client()
            .query(READ_SQL, &[&user_id, &mission_id, &limit])
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(from_row!(
                    r,
                    AuditRow {
                        id,
                        mission_id,
                        iteration_id,
                        table_name,
                        record_id,
                        status,
                        reason,
                        ts
                    }
                ))
            })
            .collect()
    }

    /// Deletes audit rows older than the configured retention (all users) through
    /// `mana_ai.prune_decrypt_audit()`, which runs as the migration role and takes the
    /// retention from the migration-owned setting ([`crate::schema::set_audit_retention`]):
    /// the service role chooses nothing. Returns how many rows were deleted (0 when the
    /// setting keeps the trail forever).
    pub async fn prune_decrypt_audit(&self) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one("SELECT mana_ai.prune_decrypt_audit()", &[])
            .await?;
        let n: i64 = row.try_get(0)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
