//! What `mana_ai.schema_migrations` says, compared with this binary's [`MIGRATIONS`]:
//! the boot decision (current → no DDL; behind → migrate; ahead → refuse) and the
//! listing of `mana-ai migrate --status`. Reading it is plain `SELECT`s, so the
//! least-privilege service role can do it.
//!
//! Rows written before numbered migrations existed carry only `version` (always 1) and
//! `applied_at`: they are *legacy* rows. Every earlier build recorded `1` whatever its
//! schema looked like, so a legacy row does not prove migration 1 as frozen here was
//! applied: migration 1 counts as pending until it is recorded with its checksum.

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::migrations::{Migration, LATEST_VERSION, MIGRATIONS};
use crate::StoreError;

/// One row of `mana_ai.schema_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i32,
    pub applied_at: DateTime<Utc>,
    /// `None` on a legacy row.
    pub name: Option<String>,
    /// `None` on a legacy row.
    pub checksum: Option<String>,
}

/// The database's migration record (empty when the schema does not exist yet).
#[derive(Debug, Clone, Default)]
pub struct SchemaState {
    pub rows: Vec<AppliedMigration>,
}

/// How the database's schema relates to this binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compatibility {
    /// Every migration of this binary is recorded, none newer: no DDL is needed.
    Current,
    /// These migrations of this binary are not recorded yet (in order).
    Behind { pending: Vec<i32> },
    /// The database records a migration newer than any this binary knows.
    Ahead { database: i32 },
}

impl SchemaState {
    /// The highest version recorded (legacy rows included); 0 when none.
    pub fn database_version(&self) -> i32 {
        self.rows.iter().map(|r| r.version).max().unwrap_or(0)
    }

    /// The recorded row of `version` written by a numbered migration (not legacy).
    pub fn recorded(&self, version: i32) -> Option<&AppliedMigration> {
        self.rows
            .iter()
            .find(|r| r.version == version && r.checksum.is_some())
    }

    /// The migrations of this binary that are not recorded yet, in order.
    pub fn pending(&self) -> Vec<&'static Migration> {
        MIGRATIONS
            .iter()
            .filter(|m| self.recorded(m.version).is_none())
            .collect()
    }

    pub fn compatibility(&self) -> Compatibility {
        let database = self.database_version();
        if database > LATEST_VERSION {
            return Compatibility::Ahead { database };
        }
        let pending: Vec<i32> = self.pending().iter().map(|m| m.version).collect();
        if pending.is_empty() {
            Compatibility::Current
        } else {
            Compatibility::Behind { pending }
        }
    }

    /// Recorded migrations whose checksum differs from this binary's (version, recorded).
    pub fn checksum_mismatches(&self) -> Vec<(i32, String)> {
        MIGRATIONS
            .iter()
            .filter_map(|m| {
                let recorded = self.recorded(m.version)?.checksum.clone()?;
                (recorded != m.checksum()).then_some((m.version, recorded))
            })
            .collect()
    }

    /// The listing of `mana-ai migrate --status`: one line per migration.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "schema version: database {}, binary {} ({})",
            self.database_version(),
            LATEST_VERSION,
            match self.compatibility() {
                Compatibility::Current => "current".to_string(),
                Compatibility::Behind { pending } => format!("{} pending", pending.len()),
                Compatibility::Ahead { .. } =>
                    "database is NEWER than this binary: it refuses to start".to_string(),
            }
        )];
        for m in MIGRATIONS {
            let state = match (self.recorded(m.version), self.legacy(m.version)) {
                (Some(r), _) if r.checksum.as_deref() == Some(m.checksum().as_str()) => {
                    format!("applied {}", r.applied_at.to_rfc3339())
                }
                (Some(r), _) => format!(
                    "applied {} (checksum differs from this binary's)",
                    r.applied_at.to_rfc3339()
                ),
                (None, Some(r)) => format!(
                    "pending (a pre-numbering build recorded version {} on {})",
                    r.version,
                    r.applied_at.to_rfc3339()
                ),
                (None, None) => "pending".to_string(),
            };
            lines.push(format!("{:>4}  {:<24} {state}", m.version, m.name));
        }
        for r in self.rows.iter().filter(|r| r.version > LATEST_VERSION) {
            lines.push(format!(
                "{:>4}  {:<24} applied {} (unknown to this binary)",
                r.version,
                r.name.as_deref().unwrap_or("?"),
                r.applied_at.to_rfc3339()
            ));
        }
        lines
    }

    fn legacy(&self, version: i32) -> Option<&AppliedMigration> {
        self.rows
            .iter()
            .find(|r| r.version == version && r.checksum.is_none())
    }
}

/// Reads `mana_ai.schema_migrations` (either shape: with or without `name`/`checksum`).
/// A database without the table has no migrations.
pub async fn read_state(client: &Client) -> Result<SchemaState, StoreError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('mana_ai.schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| StoreError::migration("read the schema version", e))?
        .get(0);
    if !exists {
        return Ok(SchemaState::default());
    }
    let rows = client
        .query(
            "SELECT m.version, m.applied_at, to_jsonb(m)->>'name', to_jsonb(m)->>'checksum'
               FROM mana_ai.schema_migrations m ORDER BY m.version",
            &[],
        )
        .await
        .map_err(|e| StoreError::migration("read the schema version", e))?;
    Ok(SchemaState {
        rows: rows
            .iter()
            .map(|r| AppliedMigration {
                version: r.get(0),
                applied_at: r.get(1),
                name: r.get(2),
                checksum: r.get(3),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(version: i32, checksum: Option<String>) -> AppliedMigration {
        AppliedMigration {
            version,
            applied_at: Utc::now(),
            name: checksum.as_ref().map(|_| "x".to_string()),
            checksum,
        }
    }

    #[test]
    fn empty_legacy_current_and_ahead() {
        let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
        let empty = SchemaState::default();
        assert_eq!(
            empty.compatibility(),
            Compatibility::Behind {
                pending: all.clone()
            }
        );
        let legacy = SchemaState {
            rows: vec![row(1, None)],
        };
        assert_eq!(
            legacy.compatibility(),
            Compatibility::Behind { pending: all },
            "a pre-numbering row proves nothing"
        );
        let current = SchemaState {
            rows: MIGRATIONS
                .iter()
                .map(|m| row(m.version, Some(m.checksum())))
                .collect(),
        };
        assert_eq!(current.compatibility(), Compatibility::Current);
        assert!(current.checksum_mismatches().is_empty());
        let mut ahead = current.clone();
        ahead
            .rows
            .push(row(LATEST_VERSION + 1, Some("future".into())));
        assert_eq!(
            ahead.compatibility(),
            Compatibility::Ahead {
                database: LATEST_VERSION + 1
            }
        );
        let mut edited = current;
        edited.rows[0].checksum = Some("other".into());
        assert_eq!(edited.checksum_mismatches(), vec![(1, "other".to_string())]);
        assert!(edited.describe()[1].contains("checksum differs"));
    }
}
