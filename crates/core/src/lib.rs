//! Pure core of mana-ai: everything that decides, nothing that does I/O.
//!
//! Architecture invariant: this crate never touches the network, the file system, a
//! database or an async runtime. Time comes in as a value (`DateTime<Utc>`), randomness
//! only where a caller passes it in (crypto key generation lives in adapters).

pub mod actor;
pub mod cadence;
pub mod catalog;
pub mod chat;
pub mod crypto;
pub mod iso;
pub mod iterations;
pub mod lang;
pub mod limits;
pub mod lww;
pub mod plan;
pub mod policy;
pub mod prompt;
pub mod records;
pub mod trace_context;
