//! A settable, advanceable [`Clock`] so tests decide what "now" is for a pass (due
//! listing, next-run scheduling, retry backoff, prompt dates, research job ages).

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::Clock;

/// A clock that stands still until the test moves it.
#[derive(Debug)]
pub struct TestClock {
    now: Mutex<DateTime<Utc>>,
}

impl TestClock {
    /// A clock standing at `now`.
    pub fn at(now: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self {
            now: Mutex::new(now),
        })
    }

    /// A clock standing at an RFC 3339 instant (`"2026-01-05T09:00:00Z"`).
    ///
    /// # Panics
    /// If `iso` is not an RFC 3339 instant.
    pub fn at_iso(iso: &str) -> Arc<Self> {
        let now = DateTime::parse_from_rfc3339(iso)
            .unwrap_or_else(|e| panic!("{iso:?} is not an RFC 3339 instant: {e}"))
            .with_timezone(&Utc);
        Self::at(now)
    }

    /// Moves the clock to `now` (also backwards).
    pub fn set(&self, now: DateTime<Utc>) {
        *self.lock() = now;
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let by = chrono::TimeDelta::from_std(by).expect("a representable duration");
        let mut now = self.lock();
        *now += by;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        self.now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}
