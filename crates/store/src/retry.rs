//! The one place database operations are retried: [`Store::retrying`].
//!
//! Retried, with jittered exponential backoff and at most [`RetryPolicy::attempts`]
//! attempts:
//! * serialization failures (40001) and deadlocks (40P01) — the server rolled the
//!   transaction back, so running it again is always safe;
//! * a lost connection (closed socket, refused connect, the server shutting down) — but
//!   only for operations the caller marks [`Idempotent::Yes`]: a connection lost during
//!   `COMMIT` may or may not have committed.
//!
//! Everything else (constraint violations, permission errors, bad SQL, timeouts of a
//! live server) is returned at once.

use std::future::Future;
use std::time::Duration;

use crate::{Store, StoreError};

/// Default attempts of one operation (first try included).
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 3;
/// Default first backoff; doubled per attempt, with ±50 % jitter.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(100);
/// Default longest backoff.
pub const DEFAULT_RETRY_CAP: Duration = Duration::from_secs(2);

/// How [`Store::retrying`] retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total (1 = no retry).
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: DEFAULT_RETRY_ATTEMPTS,
            base: DEFAULT_RETRY_BASE,
            cap: DEFAULT_RETRY_CAP,
        }
    }
}

impl RetryPolicy {
    /// The backoff before attempt `attempt + 1` (`attempt` ≥ 1), jittered by `unit`
    /// in `[0, 1)`.
    pub fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        let exp = self.base.saturating_mul(1u32 << (attempt - 1).min(16));
        let d = exp.min(self.cap);
        d.mul_f64(0.5 + unit.clamp(0.0, 1.0))
    }
}

/// Whether an operation may be repeated after a lost connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotent {
    /// Running it twice has the effect of running it once (reads, upserts to the same
    /// value, a claim by the same runner).
    Yes,
    /// Not safe to repeat if the first attempt may have committed: only rolled-back
    /// conflicts (40001, 40P01) are retried.
    No,
}

/// Whether `e` is retried for an operation of kind `idem`.
pub fn retryable(e: &StoreError, idem: Idempotent) -> bool {
    e.rolled_back_conflict() || (idem == Idempotent::Yes && e.connection_lost())
}

impl Store {
    /// Runs `op` (which opens its own transaction or statement each time), retrying
    /// transient errors per this store's [`RetryPolicy`]; `what` names it in the log.
    /// A lost connection also drops the pool's idle connections: after a server restart or
    /// killed sessions they are as dead as the one that failed, and a retry must not be
    /// handed another of them.
    pub async fn retrying<T, F, Fut>(
        &self,
        what: &'static str,
        idem: Idempotent,
        mut op: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        retry_with(&self.retry, what, idem, || {
            let attempt = op();
            async move {
                let result = attempt.await;
                if result.as_ref().is_err_and(StoreError::connection_lost) {
                    self.drop_idle_connections();
                }
                result
            }
        })
        .await
    }
}

/// [`Store::retrying`] with an explicit policy.
pub async fn retry_with<T, F, Fut>(
    policy: &RetryPolicy,
    what: &'static str,
    idem: Idempotent,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < policy.attempts.max(1) && retryable(&e, idem) => {
                let wait = policy.backoff(attempt, jitter());
                tracing::warn!(operation = what, attempt, error = %e, wait_ms = wait.as_millis() as u64, "transient database error: retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A number in `[0, 1)` from the clock's nanoseconds (jitter only; no randomness needed).
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_half_to_one_and_a_half_jitter() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1, 0.5), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 0.5), Duration::from_millis(200));
        assert_eq!(p.backoff(10, 0.5), Duration::from_secs(2));
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(50));
        assert_eq!(p.backoff(40, 1.0), Duration::from_secs(3));
    }

    #[tokio::test]
    async fn pool_errors_are_retried_only_when_idempotent() {
        let p = RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(1),
        };
        for (idem, want_calls) in [(Idempotent::Yes, 3), (Idempotent::No, 1)] {
            let mut calls = 0;
            let r: Result<(), _> = retry_with(&p, "t", idem, || {
                calls += 1;
                async { Err(StoreError::Pool("refused".into())) }
            })
            .await;
            assert!(r.is_err());
            assert_eq!(calls, want_calls, "{idem:?}");
        }
        let mut calls = 0;
        let r: Result<(), _> = retry_with(&p, "t", Idempotent::Yes, || {
            calls += 1;
            async { Err(StoreError::Corrupt("x".into())) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "a non-transient error is not retried");
    }
}
