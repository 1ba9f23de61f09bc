//! Faults a test injects as the superuser, named by what they break (the store owns the
//! table and function names they touch): a refresh that fails, a due listing that fails,
//! a claim taken away from its runner mid-run, and a panic injected into the refresh.

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

/// Users whose rows make the refresh panic while it reads them (see
/// [`panic_refresh_on_user`]).
static PANIC_USERS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Every later refresh (of any store in this process) panics when it reads a row of
/// `user_id`, with its lock held — until [`stop_refresh_panics`] for that user. Tests use
/// a user id of their own, so tests running at the same time are not affected.
pub fn panic_refresh_on_user(user_id: &str) {
    lock_panic_users().push(user_id.to_string());
}

/// Ends [`panic_refresh_on_user`] for `user_id`.
pub fn stop_refresh_panics(user_id: &str) {
    lock_panic_users().retain(|u| u != user_id);
}

fn lock_panic_users() -> std::sync::MutexGuard<'static, Vec<String>> {
    PANIC_USERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The refresh's hook (feature `testkit` only): called for every row it reads.
pub(crate) fn refresh_row_read(user_id: &str) {
    let hit = lock_panic_users().iter().any(|u| u == user_id);
    if hit {
        panic!("injected refresh panic (user {user_id})");
    }
}

/// Users per page of a refresh window for [`page_refresh_users`] (0: the default).
static REFRESH_USER_PAGE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Every later refresh (of any store in this process) lists a window's users `n` at a
/// time instead of its default page; 0 restores the default. Paging changes how many
/// statements a refresh takes, never what it writes, so tests running at the same time
/// are not affected.
pub fn page_refresh_users(n: i64) {
    REFRESH_USER_PAGE.store(n.max(0), std::sync::atomic::Ordering::Relaxed);
}

/// The page size set by [`page_refresh_users`], if any.
pub(crate) fn refresh_user_page() -> Option<i64> {
    match REFRESH_USER_PAGE.load(std::sync::atomic::Ordering::Relaxed) {
        0 => None,
        n => Some(n),
    }
}
