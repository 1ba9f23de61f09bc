//! The runner's error type: what ends a mission run without writing anything. Store
//! errors stay typed ([`StoreError`]) end to end; the display texts are the ones the pass
//! stats report (`mission=<id>: <error>`).

use mana_ai_store::StoreError;

/// An internal error of one mission run (nothing was written; the claim is released).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("load mission: {0}")]
    LoadMission(#[source] StoreError),
    #[error("agent lookup: {0}")]
    AgentLookup(#[source] StoreError),
    #[error("budget lookup: {0}")]
    BudgetLookup(#[source] StoreError),
    #[error("claim: {0}")]
    Claim(#[source] StoreError),
    /// The budget store failed while reserving tokens for an LLM call.
    #[error("token reservation: {0}")]
    TokenReservation(#[source] StoreError),
    #[error("write-back: {0}")]
    WriteBack(#[source] StoreError),
    #[error("mission task panicked")]
    Panicked,
    /// The mission task was cancelled (not a panic: those are caught inside the task).
    #[error("mission task ended: {0}")]
    TaskEnded(#[source] tokio::task::JoinError),
}
