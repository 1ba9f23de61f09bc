//! Faults a test injects as the superuser, named by what they break (the store owns the
//! table and function names they touch): a refresh that fails, a due listing that fails,
//! a claim taken away from its runner mid-run.

use tokio_postgres::GenericClient;

use super::SERVICE_ROLE;

/// Every later snapshot refresh fails (its horizon function is renamed away).
pub async fn break_refresh(c: &impl GenericClient) {
    c.batch_execute(
        "ALTER FUNCTION mana_ai.change_horizon(interval) RENAME TO change_horizon_broken",
    )
    .await
    .expect("break the refresh");
}

/// Every later due listing (and mission load) as the service role fails: it may no
/// longer read the snapshots.
pub async fn break_due_listing(c: &impl GenericClient) {
    c.batch_execute(&format!(
        "REVOKE SELECT ON mana_ai.mission_snapshots FROM {SERVICE_ROLE}"
    ))
    .await
    .expect("break the due listing");
}

/// Hands every running claim of `mission_id` to `runner_id` (as if another runner had
/// taken it over): the runner that held it loses it.
pub async fn reassign_running_claims(c: &impl GenericClient, mission_id: &str, runner_id: &str) {
    c.execute(
        "UPDATE mana_ai.mission_runs SET runner_id = $2
          WHERE mission_id = $1 AND status = 'running'",
        &[&mission_id, &runner_id],
    )
    .await
    .expect("reassign claims");
}
