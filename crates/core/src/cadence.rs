//! Mission cadences: parsing the wire shape, computing the next run, and failure backoff.
//!
//! The original service never advanced `nextRunAt` on the server and never ran `cron`
//! cadences; this module is the server-side scheduler arithmetic that replaces both gaps.
//! Everything here is pure: the caller passes the current time, the time zone and (for
//! backoff) the jitter fraction.
//!
//! # Wall-clock rules
//!
//! `daily`, `weekly` and `cron` cadences name *local wall-clock* times in a time zone.
//! Two daylight-saving situations need a rule:
//!
//! * **Gap (spring forward).** A local time that does not exist on a given day (for
//!   example 02:30 in Europe/Berlin on 2026-03-29) runs at the first valid instant after
//!   the gap, i.e. at the transition itself (03:00 local in that example). Several
//!   wall-clock times inside the same gap therefore collapse into one run.
//! * **Overlap (fall back).** A local time that occurs twice runs once, at the earlier of
//!   the two instants. During the repeated hour nothing that already ran in the first pass
//!   runs again (a `*/15 * * * *` cron has no runs in the second 02:00–02:59 of Berlin's
//!   fall-back night).
//!
//! `interval` cadences are plain elapsed time and ignore time zones and DST.
//!
//! # Cron dialect
//!
//! Cron expressions are parsed with `croner` (POSIX/Vixie semantics): five fields
//! `minute hour day-of-month month day-of-week`, day-of-week `0`/`7` = Sunday, and when both
//! day fields are restricted a date matches if *either* matches. A sixth, leading *seconds*
//! field is accepted (`sec min hour dom month dow`). croner's extensions are accepted as well:
//! `L`, `#`, `W`, month/weekday names, `?` as `*`, and the `@hourly`-style nicknames.
//! An expression that never matches any date (for example `0 0 31 4 *`) is rejected.

use std::time::Duration;

use chrono::{DateTime, Datelike, Days, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde_json::Value;

mod wall_clock;
pub mod zone;
use wall_clock::next_wall_clock;

/// How often a mission runs (`MissionCadence` on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cadence {
    /// Only when a user starts it; no automatic next run.
    Manual,
    /// Every `every_minutes` minutes of elapsed time (≥ 1).
    Interval {
        /// Period in minutes, at least 1.
        every_minutes: u32,
    },
    /// Every day at `at_hour:at_minute` local time.
    Daily {
        /// Local hour, 0–23.
        at_hour: u8,
        /// Local minute, 0–59.
        at_minute: u8,
    },
    /// Every week on `day_of_week` at `at_hour:00` local time.
    Weekly {
        /// 0 = Sunday … 6 = Saturday.
        day_of_week: u8,
        /// Local hour, 0–23.
        at_hour: u8,
    },
    /// A cron expression evaluated in local time (see the module docs for the dialect).
    Cron {
        /// The expression as written by the user.
        expression: String,
    },
}

/// Why a cadence or time zone was rejected. Every variant names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CadenceError {
    /// The cadence value is not a JSON object.
    #[error("cadence must be a JSON object, got {found}")]
    NotAnObject {
        /// JSON type that was found.
        found: &'static str,
    },
    /// A required field is absent.
    #[error("cadence field `{field}` is missing")]
    MissingField {
        /// Wire name of the field.
        field: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error("cadence field `{field}` must be {expected}, got {found}")]
    WrongType {
        /// Wire name of the field.
        field: &'static str,
        /// What was expected.
        expected: &'static str,
        /// JSON type that was found.
        found: &'static str,
    },
    /// `kind` is not one of the known cadence kinds.
    #[error(
        "cadence field `kind` has unknown value {kind:?} \
         (expected manual, interval, daily, weekly or cron)"
    )]
    UnknownKind {
        /// The value found.
        kind: String,
    },
    /// A numeric field has a fractional part.
    #[error("cadence field `{field}` must be a whole number, got {value}")]
    NotAnInteger {
        /// Wire name of the field.
        field: &'static str,
        /// The number as JSON text.
        value: String,
    },
    /// A numeric field is outside its allowed range.
    #[error("cadence field `{field}` must be between {min} and {max}, got {value}")]
    OutOfRange {
        /// Wire name of the field.
        field: &'static str,
        /// The number as JSON text.
        value: String,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// `expression` is not a cron expression croner accepts.
    #[error(
        "cadence field `expression` is not a valid cron expression ({expression:?}): {reason}"
    )]
    InvalidCron {
        /// The expression as given.
        expression: String,
        /// croner's explanation.
        reason: String,
    },
    /// `expression` parses but matches no date at all.
    #[error("cadence field `expression` ({expression:?}) never matches any date")]
    CronNeverFires {
        /// The expression as given.
        expression: String,
    },
    /// A time-zone name is not in the IANA database.
    #[error("time zone {name:?} is not a known IANA time zone name")]
    UnknownTimezone {
        /// The name as given.
        name: String,
    },
}

impl Cadence {
    /// Reads the wire shape, e.g. `{"kind":"interval","everyMinutes":5}`.
    ///
    /// Numbers may be JSON floats with no fractional part (`5.0`). Unknown extra fields are
    /// ignored. Ranges: `everyMinutes` 1..=u32::MAX, `atHour` 0–23, `atMinute` 0–59,
    /// `dayOfWeek` 0–6; `expression` must parse and match at least one date.
    pub fn from_json(value: &Value) -> Result<Cadence, CadenceError> {
        let obj = value.as_object().ok_or(CadenceError::NotAnObject {
            found: json_type(value),
        })?;
        let kind_value = obj
            .get("kind")
            .ok_or(CadenceError::MissingField { field: "kind" })?;
        let kind = kind_value.as_str().ok_or(CadenceError::WrongType {
            field: "kind",
            expected: "a string",
            found: json_type(kind_value),
        })?;
        let number = |field: &'static str, min: u64, max: u64| -> Result<u64, CadenceError> {
            let v = obj.get(field).ok_or(CadenceError::MissingField { field })?;
            whole_number_in_range(field, v, min, max)
        };
        let cadence = match kind {
            "manual" => Cadence::Manual,
            "interval" => Cadence::Interval {
                every_minutes: to_u32(number("everyMinutes", 1, u64::from(u32::MAX))?),
            },
            "daily" => Cadence::Daily {
                at_hour: to_u8(number("atHour", 0, 23)?),
                at_minute: to_u8(number("atMinute", 0, 59)?),
            },
            "weekly" => Cadence::Weekly {
                day_of_week: to_u8(number("dayOfWeek", 0, 6)?),
                at_hour: to_u8(number("atHour", 0, 23)?),
            },
            "cron" => {
                let v = obj.get("expression").ok_or(CadenceError::MissingField {
                    field: "expression",
                })?;
                let expression = v.as_str().ok_or(CadenceError::WrongType {
                    field: "expression",
                    expected: "a string",
                    found: json_type(v),
                })?;
                Cadence::Cron {
                    expression: expression.to_owned(),
                }
            }
            other => {
                return Err(CadenceError::UnknownKind {
                    kind: other.to_owned(),
                })
            }
        };
        cadence.validate()?;
        Ok(cadence)
    }

    /// Checks the ranges of a value built in code (`from_json` already does this).
    pub fn validate(&self) -> Result<(), CadenceError> {
        let check = |field: &'static str, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(CadenceError::OutOfRange {
                    field,
                    value: value.to_string(),
                    min,
                    max,
                })
            }
        };
        match self {
            Cadence::Manual => Ok(()),
            Cadence::Interval { every_minutes } => check(
                "everyMinutes",
                u64::from(*every_minutes),
                1,
                u64::from(u32::MAX),
            ),
            Cadence::Daily { at_hour, at_minute } => {
                check("atHour", u64::from(*at_hour), 0, 23)?;
                check("atMinute", u64::from(*at_minute), 0, 59)
            }
            Cadence::Weekly {
                day_of_week,
                at_hour,
            } => {
                check("dayOfWeek", u64::from(*day_of_week), 0, 6)?;
                check("atHour", u64::from(*at_hour), 0, 23)
            }
            Cadence::Cron { expression } => validate_cron(expression).map(|_| ()),
        }
    }

    /// The wire `kind` string.
    pub fn kind(&self) -> &'static str {
        match self {
            Cadence::Manual => "manual",
            Cadence::Interval { .. } => "interval",
            Cadence::Daily { .. } => "daily",
            Cadence::Weekly { .. } => "weekly",
            Cadence::Cron { .. } => "cron",
        }
    }
}

/// The first run of `c` strictly after `from`, wall-clock kinds evaluated in `tz`.
///
/// `None` for `manual`, for a cadence that fails [`Cadence::validate`], and when the
/// result would leave chrono's representable range. DST rules: see the module docs.
pub fn next_run_after(c: &Cadence, from: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
    match c {
        Cadence::Manual => None,
        Cadence::Interval { every_minutes } => {
            if *every_minutes == 0 {
                return None;
            }
            from.checked_add_signed(TimeDelta::minutes(i64::from(*every_minutes)))
        }
        Cadence::Daily { at_hour, at_minute } => {
            let time = NaiveTime::from_hms_opt(u32::from(*at_hour), u32::from(*at_minute), 0)?;
            next_wall_clock(from, tz, |n| {
                let today = n.date().and_time(time);
                if today > n {
                    Some(today)
                } else {
                    Some(n.date().checked_add_days(Days::new(1))?.and_time(time))
                }
            })
        }
        Cadence::Weekly {
            day_of_week,
            at_hour,
        } => {
            if *day_of_week > 6 {
                return None;
            }
            let time = NaiveTime::from_hms_opt(u32::from(*at_hour), 0, 0)?;
            next_wall_clock(from, tz, |n| {
                let today = n.date().weekday().num_days_from_sunday();
                let diff = (u32::from(*day_of_week) + 7 - today) % 7;
                let candidate = n
                    .date()
                    .checked_add_days(Days::new(u64::from(diff)))?
                    .and_time(time);
                if candidate > n {
                    Some(candidate)
                } else {
                    Some(
                        candidate
                            .date()
                            .checked_add_days(Days::new(7))?
                            .and_time(time),
                    )
                }
            })
        }
        Cadence::Cron { expression } => {
            let cron = parse_cron(expression).ok()?;
            next_wall_clock(from, tz, |n| next_cron_naive(&cron, n))
        }
    }
}

/// The next run after a due run (scheduled for `due`) was served at `now`.
///
/// Missed runs collapse into one: the result is the first occurrence strictly after both
/// `now` and `due`. For `interval` the phase is kept: the result is `due + k·n` minutes
/// for the smallest `k ≥ 1` that lies strictly after `now`, computed in constant time.
pub fn next_run_after_serving(
    c: &Cadence,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
    tz: Tz,
) -> Option<DateTime<Utc>> {
    match c {
        Cadence::Interval { every_minutes } => {
            if *every_minutes == 0 {
                return None;
            }
            let period_ns = i128::from(*every_minutes) * 60 * 1_000_000_000;
            let elapsed_ns = if now > due { delta_nanos(now - due) } else { 0 };
            // k = floor(elapsed / period) + 1 is the smallest k with due + k·period > now.
            let k = elapsed_ns / period_ns + 1;
            let minutes = i64::try_from(k * i128::from(*every_minutes)).ok()?;
            due.checked_add_signed(TimeDelta::try_minutes(minutes)?)
        }
        _ => next_run_after(c, due.max(now), tz),
    }
}

/// Time zone of a mission: its own IANA name when valid, else `default`.
pub fn resolve_timezone(mission_tz: Option<&str>, default: Tz) -> Tz {
    mission_tz
        .and_then(|name| parse_timezone(name).ok())
        .unwrap_or(default)
}

/// Parses an IANA time-zone name exactly as written (e.g. `Europe/Berlin`, `UTC`).
pub fn parse_timezone(name: &str) -> Result<Tz, CadenceError> {
    name.parse::<Tz>()
        .map_err(|_| CadenceError::UnknownTimezone {
            name: name.to_owned(),
        })
}

/// Delay before retry number `attempt` (1-based count of consecutive failures).
///
/// `base · 2^(attempt-1)`, capped at `cap`, then scaled by a jitter factor between 0.8 and
/// 1.2: `jitter` 0 ⇒ −20 %, 0.5 ⇒ none, 1 ⇒ +20 % (values outside 0..=1 are clamped, NaN
/// counts as 0.5). The result never exceeds `cap` and the computation saturates instead of
/// overflowing. `attempt` 0 is treated as 1. For a fixed `jitter` the delay never decreases
/// as `attempt` grows.
pub fn retry_delay(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let shift = attempt.saturating_sub(1);
    let base_ns = base.as_nanos();
    let cap_ns = cap.as_nanos();
    let raw_ns = if shift >= 127 {
        if base_ns == 0 {
            0
        } else {
            u128::MAX
        }
    } else {
        base_ns.saturating_mul(1u128 << shift)
    };
    let capped = raw_ns.min(cap_ns);
    let jitter = if jitter.is_nan() {
        0.5
    } else {
        jitter.clamp(0.0, 1.0)
    };
    let factor = 0.8 + 0.4 * jitter;
    // Float multiplication and the saturating float→int cast are both monotone, so the
    // result stays monotone in `attempt`.
    let jittered = ((capped as f64) * factor) as u128;
    nanos_to_duration(jittered.min(cap_ns))
}

/// When to retry a mission whose run failed at `now` (`attempt` = consecutive failures).
///
/// The retry time `now + retry_delay(..)`, but never later than the cadence's next regular
/// run after `now`: a regular run that comes sooner replaces the retry. `manual` cadences
/// (no regular run) always get the retry time. Saturates at chrono's maximum date.
pub fn next_run_after_failure(
    c: &Cadence,
    now: DateTime<Utc>,
    attempt: u32,
    base: Duration,
    cap: Duration,
    jitter: f64,
    tz: Tz,
) -> DateTime<Utc> {
    let delay = retry_delay(attempt, base, cap, jitter);
    let retry = TimeDelta::from_std(delay)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    match next_run_after(c, now, tz) {
        Some(regular) if regular < retry => regular,
        _ => retry,
    }
}

// ---------------------------------------------------------------------------------------
// internals

/// Parses with croner's options (optional leading seconds field).
fn parse_cron(expression: &str) -> Result<Cron, CadenceError> {
    Cron::new(expression.trim())
        .with_seconds_optional()
        .parse()
        .map_err(|e| CadenceError::InvalidCron {
            expression: expression.to_owned(),
            reason: e.to_string(),
        })
}

/// Parses and checks that the expression matches at least one date.
fn validate_cron(expression: &str) -> Result<Cron, CadenceError> {
    let cron = parse_cron(expression)?;
    // croner searches forward up to the year 5000, far beyond one 400-year Gregorian cycle,
    // so any pattern that can match some date is found from this fixed reference.
    let reference = DateTime::UNIX_EPOCH.naive_utc();
    if next_cron_naive(&cron, reference).is_none() {
        return Err(CadenceError::CronNeverFires {
            expression: expression.to_owned(),
        });
    }
    Ok(cron)
}

/// Next wall-clock match strictly after `n`, computed on naive time (UTC has no gaps).
fn next_cron_naive(cron: &Cron, n: NaiveDateTime) -> Option<NaiveDateTime> {
    cron.find_next_occurrence(&n.and_utc(), false)
        .ok()
        .map(|dt| dt.naive_utc())
}

fn whole_number_in_range(
    field: &'static str,
    v: &Value,
    min: u64,
    max: u64,
) -> Result<u64, CadenceError> {
    let Value::Number(n) = v else {
        return Err(CadenceError::WrongType {
            field,
            expected: "a number",
            found: json_type(v),
        });
    };
    let out_of_range = || CadenceError::OutOfRange {
        field,
        value: n.to_string(),
        min,
        max,
    };
    let whole = if let Some(u) = n.as_u64() {
        u
    } else if n.is_i64() {
        // Negative integer.
        return Err(out_of_range());
    } else {
        let f = n.as_f64().unwrap_or(f64::NAN);
        if !f.is_finite() || f.fract() != 0.0 {
            return Err(CadenceError::NotAnInteger {
                field,
                value: n.to_string(),
            });
        }
        if f < 0.0 || f > max as f64 {
            return Err(out_of_range());
        }
        // In range 0..=max (≤ u32::MAX here), so the cast is exact.
        f as u64
    };
    if (min..=max).contains(&whole) {
        Ok(whole)
    } else {
        Err(out_of_range())
    }
}

/// Narrows an already range-checked value (the saturation is never reached).
fn to_u8(v: u64) -> u8 {
    u8::try_from(v).unwrap_or(u8::MAX)
}

/// Narrows an already range-checked value (the saturation is never reached).
fn to_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn delta_nanos(d: TimeDelta) -> i128 {
    i128::from(d.num_seconds()) * 1_000_000_000 + i128::from(d.subsec_nanos())
}

fn nanos_to_duration(ns: u128) -> Duration {
    let secs = u64::try_from(ns / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is below 1e9 and fits in u32.
    let nanos = u32::try_from(ns % 1_000_000_000).unwrap_or(0);
    Duration::new(secs, nanos)
}
