//! Reading the decrypt audit (`mana_ai.decrypt_audit`) for the user-facing
//! `GET /api/v1/me/ai-audit`: always inside the user's `withUser` transaction (row-level
//! security) *and* filtered on `user_id` explicitly, newest first.

use chrono::{DateTime, Utc};

use crate::{Store, StoreError};

/// Largest page the read returns.
pub const MAX_AUDIT_LIMIT: i64 = 1000;

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

impl Store {
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
        let rows = match mission_id {
            Some(m) => {
                tx.client()
                    .query(
                        "SELECT id, mission_id, iteration_id, table_name, record_id, status, reason, ts \
                         FROM mana_ai.decrypt_audit WHERE user_id = $1 AND mission_id = $2 \
                         ORDER BY ts DESC, id DESC LIMIT $3",
                        &[&user_id, &m, &limit],
                    )
                    .await?
            }
            None => {
                tx.client()
                    .query(
                        "SELECT id, mission_id, iteration_id, table_name, record_id, status, reason, ts \
                         FROM mana_ai.decrypt_audit WHERE user_id = $1 \
                         ORDER BY ts DESC, id DESC LIMIT $2",
                        &[&user_id, &limit],
                    )
                    .await?
            }
        };
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get(0)?,
                    mission_id: r.try_get(1)?,
                    iteration_id: r.try_get(2)?,
                    table_name: r.try_get(3)?,
                    record_id: r.try_get(4)?,
                    status: r.try_get(5)?,
                    reason: r.try_get(6)?,
                    ts: r.try_get(7)?,
                })
            })
            .collect()
    }
}
