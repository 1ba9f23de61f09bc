//! The only crate with SQL. It owns the connection pool, the schema migration, the
//! RLS-scoped `withUser` transaction, the incremental snapshot refresh and every query
//! the runner and the HTTP layer need.
//!
//! Architecture invariant: every statement that reads or writes a user's rows in
//! `sync_changes` or `mana_ai.decrypt_audit` runs inside a [`UserTx`], which sets
//! `app.current_user_id` transaction-locally and refuses an empty user id — or is one of
//! the `SECURITY INVOKER` functions that apply the same rule themselves: the one-statement
//! write-back `mana_ai.write_back_run`, and the refresh's bulk read `mana_ai.read_ai_rows`
//! (scoped per user, so row-level security decides what it sees). The only
//! cross-user reads go through the `SECURITY DEFINER` discovery functions of
//! [`schema`], which return ids and positions, never contents.
//!
//! Hot statements (the per-mission ones) are prepared once per pooled connection with
//! `prepare_cached`: parsed once, executed in one round trip.
//!
//! # Code map
//! [`Store`] is one handle; each module owns the `impl Store` block of one table or
//! concern, so a method is found from its subject:
//! * [`pool`] — the pool itself (`connect`, `ping`, `close`, `pool_status`);
//! * [`user_tx`] — `begin_user` and the [`UserTx`] scope;
//! * [`schema`] — the migration (`migrate_self`, `verify_discovery`), its SQL in
//!   `schema/*.sql`;
//! * [`refresh`] — `refresh_snapshots` (`sync_changes` → snapshots);
//! * [`snapshots`] — reads of the mission and agent snapshots (due listing, ops views);
//! * [`runs`] — `mana_ai.mission_runs`: claim, release, write-back;
//! * [`budget`] — token usage and reservations;
//! * [`research`] — deep-research jobs;
//! * [`audit`] — the decrypt audit (write, read, prune);
//! * [`records`] — replay of one linked input record;
//! * [`spaces`] — shared spaces: one snapshot per `(space, record)`, space write-back;
//! * [`zones`] — the user's time zone from their synced calendar data;
//! * [`locks`] — every advisory-lock key.

pub mod audit;
pub mod budget;
pub mod dev;
mod error;
pub mod locks;
pub mod pool;
pub mod records;
pub mod refresh;
pub mod research;
mod row;
pub mod runs;
pub mod schema;
pub mod snapshots;
pub mod spaces;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod user_tx;
pub mod zones;

pub use audit::{AuditRow, AuditStatus, DecryptAuditEntry};
pub use budget::{BudgetUse, PruneStats, Reservation, ReserveRequest};
pub use error::{db_message, StoreError};
pub use pool::{connect_once, parse_url, url_user, Store, StoreConfig};
pub use records::REPLAY_ROW_LIMIT;
pub use refresh::{RefreshOptions, RefreshOutcome, RefreshStats};
pub use research::{NewResearchJob, RemovedResearchJob, ResearchJob, ResearchJobState};
pub use runs::{AgentSlot, Claim, ClaimRequest, WriteBack, WriteOutcome};
pub use snapshots::{AgentSnapshot, DueKey, DueMission, MissionSnapshot};
pub use spaces::{SpaceStats, SPACE_RECORD_ROW_LIMIT};
pub use user_tx::UserTx;
pub use zones::USER_ZONE_LIMIT;
