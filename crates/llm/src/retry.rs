//! Retry policy: which failures are worth another attempt, how long to wait
//! (exponential backoff with full jitter, or the provider's `Retry-After`), all pure.

use std::time::{Duration, SystemTime};

use mana_ai_core::chat::LlmError;

/// Provider kinds that a retry cannot fix, whatever the status.
const PERMANENT_KINDS: [&str; 4] = ["blocked", "capability", "auth", "truncated"];

/// Whether another attempt may succeed: 429 and 500/502/503/504 (unless the provider
/// says the cause is permanent), transport failures and timeouts.
pub(crate) fn is_retryable(error: &LlmError) -> bool {
    match error {
        LlmError::Provider { status, kind, .. } => {
            matches!(status, 429 | 500 | 502 | 503 | 504)
                && !PERMANENT_KINDS.contains(&kind.as_str())
        }
        LlmError::Transport(_) | LlmError::Timeout(_) => true,
        // A too-large answer would come back as large (and be billed again).
        LlmError::InvalidResponse(_)
        | LlmError::ResponseTooLarge(_)
        | LlmError::Local(_)
        | LlmError::BudgetExhausted => false,
    }
}

/// Jittered backoff before retry number `retry` (1 for the first retry): a uniform pick
/// in `[0, min(cap, base · 2^(retry-1))]`, where `unit` in `[0, 1]` is the random draw.
pub(crate) fn backoff_delay(retry: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let exponent = retry.saturating_sub(1).min(31);
    let ceiling = base.saturating_mul(1u32 << exponent).min(cap);
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    Duration::try_from_secs_f64(ceiling.as_secs_f64() * unit)
        .unwrap_or(ceiling)
        .min(ceiling)
}

/// Parses a `Retry-After` value: delay seconds or an HTTP-date (relative to `now`;
/// a date in the past means no wait). `None` when the value is neither.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: huge values saturate, they are capped by the caller anyway.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The wait before the next attempt: the provider's `Retry-After` capped at `4 · cap`
/// when given, else the jittered backoff.
pub(crate) fn next_delay(
    retry: u32,
    retry_after: Option<Duration>,
    base: Duration,
    cap: Duration,
    unit: f64,
) -> Duration {
    match retry_after {
        Some(asked) => asked.min(cap.saturating_mul(4)),
        None => backoff_delay(retry, base, cap, unit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn provider(status: u16, kind: &str) -> LlmError {
        LlmError::Provider {
            status,
            kind: kind.to_owned(),
            message: String::new(),
        }
    }

    #[test]
    fn retryable_table() {
        let table = [
            (provider(429, "rate_limit"), true),
            (provider(429, "unknown"), true),
            (provider(500, "unknown"), true),
            (provider(502, "unknown"), true),
            (provider(503, "no_healthy_provider"), true),
            (provider(504, "unknown"), true),
            (provider(502, "auth"), false),
            (provider(502, "truncated"), false),
            (provider(503, "capability"), false),
            (provider(429, "blocked"), false),
            (provider(422, "blocked"), false),
            (provider(400, "capability"), false),
            (provider(400, "unknown"), false),
            (provider(401, "unknown"), false),
            (provider(404, "unknown"), false),
            (provider(501, "unknown"), false),
            (provider(505, "unknown"), false),
            (LlmError::Transport("refused".into()), true),
            (LlmError::Timeout(10), true),
            (LlmError::InvalidResponse("x".into()), false),
            (LlmError::Local("x".into()), false),
        ];
        for (error, want) in table {
            assert_eq!(is_retryable(&error), want, "{error:?}");
        }
    }

    #[test]
    fn backoff_grows_then_caps() {
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(8);
        let table = [
            (1, 500),
            (2, 1000),
            (3, 2000),
            (4, 4000),
            (5, 8000),
            (6, 8000),
            (40, 8000),
        ];
        for (retry, ceiling_ms) in table {
            assert_eq!(
                backoff_delay(retry, base, cap, 1.0),
                Duration::from_millis(ceiling_ms),
                "retry {retry}"
            );
            assert_eq!(backoff_delay(retry, base, cap, 0.0), Duration::ZERO);
            assert_eq!(
                backoff_delay(retry, base, cap, 0.5),
                Duration::from_millis(ceiling_ms / 2)
            );
        }
        assert_eq!(backoff_delay(1, base, cap, f64::NAN), Duration::ZERO);
        assert_eq!(backoff_delay(1, base, cap, 7.0), base);
    }

    #[test]
    fn retry_after_values() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let table = [
            ("1", Some(Duration::from_secs(1))),
            (" 120 ", Some(Duration::from_secs(120))),
            ("0", Some(Duration::ZERO)),
            (
                "99999999999999999999999",
                Some(Duration::from_secs(u64::MAX)),
            ),
            (
                "Sun, 06 Nov 1994 08:49:47 GMT",
                Some(Duration::from_secs(10)),
            ),
            (
                "Sunday, 06-Nov-94 08:50:37 GMT",
                Some(Duration::from_secs(60)),
            ),
            ("Sun Nov  6 08:49:38 1994", Some(Duration::from_secs(1))),
            ("Sun, 06 Nov 1994 08:00:00 GMT", Some(Duration::ZERO)),
            ("-1", None),
            ("1.5", None),
            ("soon", None),
            ("", None),
        ];
        for (value, want) in table {
            assert_eq!(parse_retry_after(value, now), want, "{value:?}");
        }
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(8);
        assert_eq!(
            next_delay(1, Some(Duration::from_secs(3)), base, cap, 0.0),
            Duration::from_secs(3)
        );
        assert_eq!(
            next_delay(1, Some(Duration::from_secs(3600)), base, cap, 0.0),
            Duration::from_secs(32)
        );
        assert_eq!(next_delay(2, None, base, cap, 1.0), Duration::from_secs(1));
    }

    proptest! {
        #[test]
        fn backoff_stays_within_bounds(
            retry in 0u32..100,
            base_ms in 0u64..10_000,
            cap_ms in 0u64..100_000,
            unit in 0.0f64..=1.0,
        ) {
            let base = Duration::from_millis(base_ms);
            let cap = Duration::from_millis(cap_ms);
            let delay = backoff_delay(retry, base, cap, unit);
            prop_assert!(delay <= cap);
            let exponent = retry.saturating_sub(1).min(31);
            prop_assert!(delay <= base.saturating_mul(1u32 << exponent));
        }

        #[test]
        fn backoff_is_monotonic_in_the_draw(
            retry in 1u32..20,
            a in 0.0f64..=1.0,
            b in 0.0f64..=1.0,
        ) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let base = Duration::from_millis(500);
            let cap = Duration::from_secs(8);
            prop_assert!(backoff_delay(retry, base, cap, lo) <= backoff_delay(retry, base, cap, hi));
        }

        #[test]
        fn retry_after_never_exceeds_four_caps(secs in 0u64..1_000_000, cap_ms in 0u64..60_000) {
            let cap = Duration::from_millis(cap_ms);
            let delay = next_delay(1, Some(Duration::from_secs(secs)), Duration::from_millis(1), cap, 0.5);
            prop_assert!(delay <= cap * 4);
            prop_assert!(delay <= Duration::from_secs(secs));
        }
    }
}
