//! The only crate with SQL. It owns the connection pool, the schema migration, the
//! RLS-scoped `withUser` transaction, the incremental snapshot refresh and every query
//! the runner and the HTTP layer need.
//!
//! Architecture invariant: every statement that reads or writes a user's rows in
//! `sync_changes` or `mana_ai.decrypt_audit` runs inside a [`UserTx`], which sets
//! `app.current_user_id` transaction-locally and refuses an empty user id — or is one of
//! the `SECURITY INVOKER` functions that apply the same rule themselves: the write-back's
//! `mana_ai.write_back_current` and `mana_ai.write_back_run`, and the refresh's bulk read
//! `mana_ai.read_ai_rows` (scoped per user, so row-level security decides what it sees).
//! The only cross-user reads go through the `SECURITY DEFINER` discovery functions of
//! [`schema`], which return ids and positions, never contents.
//!
//! Hot statements (the per-mission ones) are prepared once per pooled connection with
//! `prepare_cached`: parsed once, executed in one round trip.
//!
//! # Code map
//! [`Store`] is one handle; each module owns the `impl Store` block of one table or
//! concern, so a method is found from its subject:
//! * [`pool`] — the pool itself (`connect`, `ping`, `close`, `pool_status`), its
//!   session settings and the socket watchdog (`connect.rs`);
//! * [`retry`] — `retrying`: the one place transient errors are retried;
//! * [`probe`] — a liveness probe on its own connection (`/health`);
//! * [`user_tx`] — `begin_user` and the [`UserTx`] scope;
//! * [`schema`] — numbered migrations (`migrate`, `read_state`, `verify_discovery`), their
//!   SQL in `schema/<NNNN>/*.sql`;
//! * [`refresh`] — `refresh_snapshots` (`sync_changes` → snapshots);
//! * [`quarantine`] — rows the refresh refuses: limits, reasons, `list_quarantined`;
//! * [`snapshots`] — reads of the mission and agent snapshots (due missions, ops views);
//! * [`due`] — the runner's fair due listing and `mana_ai.mission_deferrals`;
//! * [`heal`] — the one-time schedule repair of a run already done;
//! * [`runs`] — `mana_ai.mission_runs`: claim, release;
//! * [`write_back`] — the merging, exactly-once write-back that closes a run;
//! * [`budget`] — token usage and reservations;
//! * [`research`] — deep-research jobs;
//! * [`audit`] — the decrypt audit (write, read, prune);
//! * [`records`] — replay of one linked input record;
//! * [`spaces`] — shared spaces: one snapshot per `(space, record)`, space write-back;
//! * [`zones`] — the user's time zone from their synced calendar data;
//! * [`locks`] — every advisory-lock key.

pub mod audit;
pub mod budget;
mod connect;
pub mod dev;
pub mod due;
mod error;
pub mod heal;
pub mod locks;
pub mod pool;
pub mod probe;
pub mod quarantine;
pub mod records;
pub mod refresh;
pub mod research;
pub mod retry;
mod row;
pub mod runs;
pub mod schema;
pub mod snapshots;
pub mod spaces;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod user_tx;
pub mod write_back;
pub mod zones;

pub use audit::{AuditRow, AuditStatus, DecryptAuditEntry};
pub use budget::{BudgetUse, PruneStats, Reservation, ReserveRequest};
pub use due::{Deferral, Deferred, SeenVersions};
pub use error::{db_message, safe_db_message, StoreError};
pub use heal::{Heal, ScheduleHeal};
pub use pool::{connect_once, parse_url, url_user, Store, StoreConfig};
pub use quarantine::{QuarantineReason, QuarantinedRow};
pub use records::REPLAY_ROW_LIMIT;
pub use refresh::{RefreshOptions, RefreshOutcome, RefreshStats};
pub use research::{NewResearchJob, RemovedResearchJob, ResearchJob, ResearchJobState};
pub use retry::{Idempotent, RetryPolicy};
pub use runs::{AgentSlot, Claim, ClaimRequest};
pub use snapshots::{AgentSnapshot, DueKey, DueMission, MissionSnapshot};
pub use spaces::{SpaceStats, SPACE_RECORD_ROW_LIMIT};
pub use user_tx::UserTx;
pub use write_back::{Loaded, WriteBack, WriteOutcome, WritePath};
pub use zones::USER_ZONE_LIMIT;
