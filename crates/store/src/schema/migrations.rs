//! The list of migrations ([`MIGRATIONS`]) and what one migration is made of.
//!
//! A migration is a numbered, named list of [`Step`]s. Its *checksum* (SHA-256 over its
//! steps' kinds and unrendered text) is recorded with it in `mana_ai.schema_migrations`;
//! a frozen migration never changes (a unit test pins every checksum), so a recorded
//! checksum that differs from the binary's means the database was migrated by a build
//! whose migration had other contents (`mana-ai migrate --status` shows it).

use sha2::{Digest, Sha256};

/// One part of a migration.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// Statements run in the migration's transaction, with `{claim_seed}` and
    /// `{default_agent}` filled in (see [`super::render`]).
    Sql {
        what: &'static str,
        sql: &'static str,
    },
    /// Grants to the service role (`{role}` filled in), in the migration's transaction.
    /// Skipped when no separate service role is configured (single-DSN deployments).
    Grants {
        what: &'static str,
        sql: &'static str,
    },
    /// One `CREATE INDEX CONCURRENTLY IF NOT EXISTS` statement, run on its own outside any
    /// transaction after the migration's transaction committed — and only when no valid
    /// index `name` exists (an INVALID leftover of an interrupted build is dropped
    /// concurrently first). Use it for indexes on busy tables such as `sync_changes`.
    ConcurrentIndex {
        name: &'static str,
        sql: &'static str,
    },
}

/// One numbered migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// 1, 2, 3, … without gaps, in the order they are applied.
    pub version: i32,
    /// A short name (`mana-ai migrate --status` shows it).
    pub name: &'static str,
    pub steps: &'static [Step],
}

impl Migration {
    /// SHA-256 (hex) of the steps' kinds and unrendered SQL.
    pub fn checksum(&self) -> String {
        let mut h = Sha256::new();
        for step in self.steps {
            let (kind, sql) = match step {
                Step::Sql { sql, .. } => ("sql", sql),
                Step::Grants { sql, .. } => ("grants", sql),
                Step::ConcurrentIndex { sql, .. } => ("concurrent-index", sql),
            };
            h.update(kind.as_bytes());
            h.update([0u8]);
            h.update(sql.as_bytes());
            h.update([0u8]);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Migration 1: the schema as it stood when numbered migrations were introduced
/// (frozen; the files under `schema/0001/`). It is idempotent, so it also upgrades a
/// database of any earlier build of this service and one created by the original
/// TypeScript service (`CREATE … IF NOT EXISTS`, `ADD COLUMN IF NOT EXISTS`, a backfill).
const M0001: &[Step] = &[
    Step::Sql {
        what: "mana_ai tables",
        sql: include_str!("0001/tables.sql"),
    },
    Step::Sql {
        what: "claim and write-back functions",
        sql: include_str!("0001/runs.sql"),
    },
    Step::Sql {
        what: "token reservation function",
        sql: include_str!("0001/budget.sql"),
    },
    Step::Sql {
        what: "backfill of older rows",
        sql: include_str!("0001/backfill.sql"),
    },
    Step::Sql {
        what: "change discovery (needs a role that owns sync_changes or is superuser; set MANA_AI_MIGRATION_DATABASE_URL)",
        sql: include_str!("0001/discovery.sql"),
    },
    Step::Sql {
        what: "refresh read function",
        sql: include_str!("0001/read.sql"),
    },
    Step::Grants {
        what: "grants for the service role",
        sql: include_str!("0001/grants.sql"),
    },
    Step::Sql {
        what: "decrypt audit hardening",
        sql: include_str!("0001/audit.sql"),
    },
    Step::Grants {
        what: "audit grants for the service role",
        sql: include_str!("0001/audit_grants.sql"),
    },
    Step::ConcurrentIndex {
        name: "mana_ai_sync_changes_ai_position",
        sql: include_str!("0001/sync_changes_index.sql"),
    },
];

/// Migration 2: drops what earlier builds left behind (see the SQL's comments).
const M0002: &[Step] = &[Step::Sql {
    what: "drop leftovers of earlier builds",
    sql: include_str!("0002/leftovers.sql"),
}];

/// Every migration, in order. **To add one** (the only change needed): put its SQL in
/// `schema/<NNNN>/<topic>.sql` (idempotent, as every step may run again after a crash
/// before the migration was recorded), and append
/// `Migration { version: <last + 1>, name: "<topic>", steps: &[Step::Sql { … }, …] }`
/// below. Never edit a migration that has been released; write a new one instead.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        steps: M0001,
    },
    Migration {
        version: 2,
        name: "drop-leftovers",
        steps: M0002,
    },
    Migration {
        version: 3,
        name: "quarantine",
        steps: &[
            Step::Sql {
                what: "quarantined rows table",
                sql: include_str!("0003/quarantine.sql"),
            },
            Step::Grants {
                what: "quarantine grants for the service role",
                sql: include_str!("0003/quarantine_grants.sql"),
            },
        ],
    },
    Migration {
        version: 4,
        name: "fair-due-deferrals-lease",
        steps: &[
            Step::Sql {
                what: "deferrals, fair due listing, claim with grace",
                sql: include_str!("0004/deferral.sql"),
            },
            Step::Grants {
                what: "deferral grants for the service role",
                sql: include_str!("0004/deferral_grants.sql"),
            },
        ],
    },
    Migration {
        version: 5,
        name: "shared-spaces",
        steps: &[
            Step::Sql {
                what: "shared-space projection",
                sql: include_str!("0005/spaces.sql"),
            },
            Step::Grants {
                what: "shared-space grants for the service role",
                sql: include_str!("0005/spaces_grants.sql"),
            },
        ],
    },
    Migration {
        version: 6,
        name: "least-privilege",
        steps: &[
            Step::Sql {
                what: "audit retention setting",
                sql: include_str!("0006/audit_retention.sql"),
            },
            Step::Grants {
                what: "least privilege of the service role",
                sql: include_str!("0006/least_privilege.sql"),
            },
        ],
    },
    Migration {
        version: 7,
        name: "merging-write-back",
        steps: &[
            Step::Sql {
                what: "merging write-back",
                sql: include_str!("0007/write_back.sql"),
            },
            Step::Grants {
                what: "write-back grants for the service role",
                sql: include_str!("0007/write_back_grants.sql"),
            },
        ],
    },
    Migration {
        version: 8,
        name: "one-statement-write-back",
        steps: &[
            Step::Sql {
                what: "one-statement write-back and its stamps",
                sql: include_str!("0008/write_back_commit.sql"),
            },
            Step::Grants {
                what: "one-statement write-back grants for the service role",
                sql: include_str!("0008/write_back_commit_grants.sql"),
            },
        ],
    },
    Migration {
        version: 9,
        name: "per-mission-plans",
        steps: &[
            Step::Sql {
                what: "per-mission reads and settlement with generic plans",
                sql: include_str!("0009/per_mission_reads.sql"),
            },
            Step::Grants {
                what: "per-mission function grants for the service role",
                sql: include_str!("0009/per_mission_reads_grants.sql"),
            },
        ],
    },
    Migration {
        version: 10,
        name: "per-mission-key-lookups",
        steps: &[Step::Sql {
            what: "per-mission load and log probes by key, not by a partial index",
            sql: include_str!("0010/key_lookups.sql"),
        }],
    },
];

/// The newest version this binary knows (the last entry of [`MIGRATIONS`]).
pub const LATEST_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_one_to_n_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.name);
            assert!(!m.steps.is_empty(), "{}", m.name);
        }
        assert_eq!(LATEST_VERSION, MIGRATIONS.len() as i32);
    }

    /// Released migrations are frozen: editing one changes its checksum and fails here.
    /// Add a new migration instead (and its checksum below).
    #[test]
    fn released_migrations_are_frozen() {
        let pinned = [
            (
                1,
                "d990063f34ac7062155952bd729d3a03fd084a2a0c7dae583c49074dfdaee0e1",
            ),
            (
                2,
                "85a60cba27784011988bf9bc4c3842e3d053f1e5d8a36dda4850bc2b1cf26142",
            ),
            (
                3,
                "673ce5cfc593005a8a4f7ae4b412d5078a6c800a49ea95ac69df9b2a7b1c2b43",
            ),
            (
                4,
                "8fcf6611a25689f65d775daa7bbfde74b143d05af382ffdcda077cee44ceb570",
            ),
            (
                5,
                "2b32aac1ae83c4e838b555e0fa40e20e710df329bc7899c75fa1df185c76b378",
            ),
            (
                6,
                "0ac4d7ac6938675eb4a1fe1ffc9687ebfb7405cd104b1d7da26840f85f97ed3c",
            ),
            (
                7,
                "723d754607ef662ea4aac1912eeccd249d057cb07fa4e9f9cb9805266c58e9d1",
            ),
            (
                8,
                "a855c24473550c41f743bed68a032fb08334b59ff6e2bc123c98e1bad3a41c7a",
            ),
            (
                9,
                "5a6b095bb73353c7c7680a0f5aad7dc8793aa89328e65674d468b10c010a0ea5",
            ),
            (
                10,
                "fd3bc59c820783b66a03ce2e6c43b37557c73c9d8ff957c0d61e1022257c8dd7",
            ),
        ];
        let changed: Vec<String> = pinned
            .iter()
            .filter_map(|(version, checksum)| {
                let m = &MIGRATIONS[*version as usize - 1];
                (m.checksum() != *checksum)
                    .then(|| format!("migration {version} ({}): {}", m.name, m.checksum()))
            })
            .collect();
        assert!(
            changed.is_empty(),
            "released migrations changed: {changed:#?}"
        );
        assert_eq!(
            pinned.len(),
            MIGRATIONS.len(),
            "pin every migration's checksum"
        );
    }

    #[test]
    fn a_concurrent_index_step_is_one_statement() {
        for m in MIGRATIONS {
            for s in m.steps {
                if let Step::ConcurrentIndex { name, sql } = s {
                    let code: String = sql
                        .lines()
                        .filter(|l| !l.trim_start().starts_with("--"))
                        .collect::<Vec<_>>()
                        .join("\n");
                    assert!(code.contains("CONCURRENTLY"), "{name}");
                    assert!(code.contains(name), "{name}");
                    assert!(
                        !code.trim_end().trim_end_matches(';').contains(';'),
                        "{name}"
                    );
                }
            }
        }
    }
}
