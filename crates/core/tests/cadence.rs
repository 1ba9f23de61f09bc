//! Behaviour tests for `mana_ai_core::cadence`: wire parsing, next-run computation
//! (including DST gaps and overlaps), downtime collapse and failure backoff.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use chrono_tz::{America::New_York, Europe::Berlin, Tz, UTC};
use mana_ai_core::cadence::{
    next_run_after, next_run_after_failure, next_run_after_serving, parse_timezone,
    resolve_timezone, retry_delay, Cadence, CadenceError,
};
use proptest::prelude::*;
use serde_json::{json, Value};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad test timestamp {s}: {e}"))
        .with_timezone(&Utc)
}

fn cron(expr: &str) -> Cadence {
    Cadence::Cron {
        expression: expr.to_owned(),
    }
}

const DAILY_0230: Cadence = Cadence::Daily {
    at_hour: 2,
    at_minute: 30,
};

// ---------------------------------------------------------------------------------------
// parsing

#[test]
fn from_json_accepts_every_kind() {
    let cases: Vec<(Value, Cadence)> = vec![
        (json!({"kind": "manual"}), Cadence::Manual),
        (
            json!({"kind": "interval", "everyMinutes": 5}),
            Cadence::Interval { every_minutes: 5 },
        ),
        (
            json!({"kind": "interval", "everyMinutes": 5.0}),
            Cadence::Interval { every_minutes: 5 },
        ),
        (
            json!({"kind": "interval", "everyMinutes": 4294967295u64}),
            Cadence::Interval {
                every_minutes: u32::MAX,
            },
        ),
        (
            json!({"kind": "daily", "atHour": 0, "atMinute": 59}),
            Cadence::Daily {
                at_hour: 0,
                at_minute: 59,
            },
        ),
        (
            json!({"kind": "daily", "atHour": 23.0, "atMinute": 0.0}),
            Cadence::Daily {
                at_hour: 23,
                at_minute: 0,
            },
        ),
        (
            json!({"kind": "weekly", "dayOfWeek": 0, "atHour": 10}),
            Cadence::Weekly {
                day_of_week: 0,
                at_hour: 10,
            },
        ),
        (
            json!({"kind": "weekly", "dayOfWeek": 6, "atHour": 23, "atMinute": 45}),
            Cadence::Weekly {
                day_of_week: 6,
                at_hour: 23,
            },
        ),
        (
            json!({"kind": "cron", "expression": "*/15 * * * *"}),
            cron("*/15 * * * *"),
        ),
        (
            json!({"kind": "cron", "expression": "0 9 * * 1-5"}),
            cron("0 9 * * 1-5"),
        ),
        (
            json!({"kind": "cron", "expression": "30 0 9 * * MON"}),
            cron("30 0 9 * * MON"),
        ),
        (
            json!({"kind": "cron", "expression": "@daily"}),
            cron("@daily"),
        ),
        (
            json!({"kind": "cron", "expression": "0 0 29 2 *"}),
            cron("0 0 29 2 *"),
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(Cadence::from_json(&input), Ok(expected.clone()), "{input}");
        assert_eq!(
            Cadence::from_json(&input).map(|c| c.kind()),
            Ok(expected.kind())
        );
    }
}

#[test]
fn from_json_rejects_invalid_input_with_a_named_field() {
    use CadenceError as E;
    type Check = fn(&CadenceError) -> bool;
    let cases: Vec<(Value, &str, Check)> = vec![
        (json!([]), "JSON object", |e| {
            matches!(e, E::NotAnObject { .. })
        }),
        (json!("manual"), "JSON object", |e| {
            matches!(e, E::NotAnObject { .. })
        }),
        (json!({}), "`kind`", |e| {
            matches!(e, E::MissingField { field: "kind" })
        }),
        (json!({"kind": 3}), "`kind`", |e| {
            matches!(e, E::WrongType { field: "kind", .. })
        }),
        (
            json!({"kind": "hourly"}),
            "`kind`",
            |e| matches!(e, E::UnknownKind { kind } if kind == "hourly"),
        ),
        (json!({"kind": "interval"}), "`everyMinutes`", |e| {
            matches!(
                e,
                E::MissingField {
                    field: "everyMinutes"
                }
            )
        }),
        (
            json!({"kind": "interval", "everyMinutes": 0}),
            "`everyMinutes`",
            |e| {
                matches!(
                    e,
                    E::OutOfRange {
                        field: "everyMinutes",
                        ..
                    }
                )
            },
        ),
        (
            json!({"kind": "interval", "everyMinutes": -5}),
            "`everyMinutes`",
            |e| {
                matches!(
                    e,
                    E::OutOfRange {
                        field: "everyMinutes",
                        ..
                    }
                )
            },
        ),
        (
            json!({"kind": "interval", "everyMinutes": -5.0}),
            "`everyMinutes`",
            |e| {
                matches!(
                    e,
                    E::OutOfRange {
                        field: "everyMinutes",
                        ..
                    }
                )
            },
        ),
        (
            json!({"kind": "interval", "everyMinutes": 5.5}),
            "`everyMinutes`",
            |e| {
                matches!(
                    e,
                    E::NotAnInteger {
                        field: "everyMinutes",
                        ..
                    }
                )
            },
        ),
        (
            json!({"kind": "interval", "everyMinutes": "5"}),
            "`everyMinutes`",
            |e| {
                matches!(
                    e,
                    E::WrongType {
                        field: "everyMinutes",
                        ..
                    }
                )
            },
        ),
        (
            json!({"kind": "interval", "everyMinutes": 4294967296u64}),
            "`everyMinutes`",
            |e| {
                matches!(
                    e,
                    E::OutOfRange {
                        field: "everyMinutes",
                        ..
                    }
                )
            },
        ),
        (
            json!({"kind": "interval", "everyMinutes": 1e20}),
            "`everyMinutes`",
            |e| {
                matches!(
                    e,
                    E::OutOfRange {
                        field: "everyMinutes",
                        ..
                    }
                )
            },
        ),
        (
            json!({"kind": "daily", "atHour": 24, "atMinute": 0}),
            "`atHour`",
            |e| {
                matches!(
                    e,
                    E::OutOfRange {
                        field: "atHour",
                        ..
                    }
                )
            },
        ),
        (
            json!({"kind": "daily", "atHour": 9, "atMinute": 60}),
            "`atMinute`",
            |e| {
                matches!(
                    e,
                    E::OutOfRange {
                        field: "atMinute",
                        ..
                    }
                )
            },
        ),
        (json!({"kind": "daily", "atHour": 9}), "`atMinute`", |e| {
            matches!(e, E::MissingField { field: "atMinute" })
        }),
        (
            json!({"kind": "daily", "atHour": null, "atMinute": 0}),
            "`atHour`",
            |e| {
                matches!(
                    e,
                    E::WrongType {
                        field: "atHour",
                        found: "null",
                        ..
                    }
                )
            },
        ),
        (
            json!({"kind": "weekly", "dayOfWeek": 7, "atHour": 10}),
            "`dayOfWeek`",
            |e| {
                matches!(
                    e,
                    E::OutOfRange {
                        field: "dayOfWeek",
                        ..
                    }
                )
            },
        ),
        (
            json!({"kind": "weekly", "dayOfWeek": 1.5, "atHour": 10}),
            "`dayOfWeek`",
            |e| {
                matches!(
                    e,
                    E::NotAnInteger {
                        field: "dayOfWeek",
                        ..
                    }
                )
            },
        ),
        (
            json!({"kind": "weekly", "dayOfWeek": 1, "atHour": -1}),
            "`atHour`",
            |e| {
                matches!(
                    e,
                    E::OutOfRange {
                        field: "atHour",
                        ..
                    }
                )
            },
        ),
        (
            json!({"kind": "weekly", "atHour": 10}),
            "`dayOfWeek`",
            |e| matches!(e, E::MissingField { field: "dayOfWeek" }),
        ),
        (json!({"kind": "cron"}), "`expression`", |e| {
            matches!(
                e,
                E::MissingField {
                    field: "expression"
                }
            )
        }),
        (
            json!({"kind": "cron", "expression": 5}),
            "`expression`",
            |e| {
                matches!(
                    e,
                    E::WrongType {
                        field: "expression",
                        ..
                    }
                )
            },
        ),
        (
            json!({"kind": "cron", "expression": ""}),
            "`expression`",
            |e| matches!(e, E::InvalidCron { .. }),
        ),
        (
            json!({"kind": "cron", "expression": "61 * * * *"}),
            "`expression`",
            |e| matches!(e, E::InvalidCron { .. }),
        ),
        (
            json!({"kind": "cron", "expression": "* * * *"}),
            "`expression`",
            |e| matches!(e, E::InvalidCron { .. }),
        ),
        (
            json!({"kind": "cron", "expression": "* * * * * * *"}),
            "`expression`",
            |e| matches!(e, E::InvalidCron { .. }),
        ),
        (
            json!({"kind": "cron", "expression": "every monday"}),
            "`expression`",
            |e| matches!(e, E::InvalidCron { .. }),
        ),
        (
            json!({"kind": "cron", "expression": "0 0 31 4 *"}),
            "never matches",
            |e| matches!(e, E::CronNeverFires { .. }),
        ),
    ];
    for (input, message_part, check) in cases {
        let err = match Cadence::from_json(&input) {
            Ok(c) => panic!("{input} was accepted as {c:?}"),
            Err(e) => e,
        };
        assert!(check(&err), "{input}: unexpected error {err:?}");
        let text = err.to_string();
        assert!(
            text.contains(message_part),
            "{input}: message {text:?} does not mention {message_part:?}"
        );
    }
}

#[test]
fn validate_rejects_out_of_range_values_built_in_code() {
    let bad = [
        Cadence::Interval { every_minutes: 0 },
        Cadence::Daily {
            at_hour: 24,
            at_minute: 0,
        },
        Cadence::Daily {
            at_hour: 0,
            at_minute: 60,
        },
        Cadence::Weekly {
            day_of_week: 7,
            at_hour: 0,
        },
        cron("not a cron"),
    ];
    let from = utc("2026-01-01T00:00:00Z");
    for c in bad {
        assert!(c.validate().is_err(), "{c:?}");
        assert_eq!(next_run_after(&c, from, UTC), None, "{c:?}");
    }
    assert_eq!(Cadence::Manual.validate(), Ok(()));
    assert_eq!(cron("*/5 * * * *").validate(), Ok(()));
}

// ---------------------------------------------------------------------------------------
// next run

#[test]
fn next_run_after_table() {
    let weekly_sun_10 = Cadence::Weekly {
        day_of_week: 0,
        at_hour: 10,
    };
    let weekly_wed_8 = Cadence::Weekly {
        day_of_week: 3,
        at_hour: 8,
    };
    let daily_0930 = Cadence::Daily {
        at_hour: 9,
        at_minute: 30,
    };
    // (name, cadence, from, tz, expected)
    let cases: Vec<(&str, Cadence, &str, Tz, Option<&str>)> = vec![
        (
            "manual",
            Cadence::Manual,
            "2026-01-01T00:00:00Z",
            Berlin,
            None,
        ),
        (
            "interval adds minutes",
            Cadence::Interval { every_minutes: 5 },
            "2026-01-01T10:00:30.250Z",
            Berlin,
            Some("2026-01-01T10:05:30.250Z"),
        ),
        (
            "interval ignores DST",
            Cadence::Interval { every_minutes: 60 },
            "2026-03-29T00:30:00Z",
            Berlin,
            Some("2026-03-29T01:30:00Z"),
        ),
        // daily, UTC
        (
            "daily later today",
            daily_0930.clone(),
            "2026-01-10T07:00:00Z",
            UTC,
            Some("2026-01-10T09:30:00Z"),
        ),
        (
            "daily exactly at ⇒ tomorrow",
            daily_0930.clone(),
            "2026-01-10T09:30:00Z",
            UTC,
            Some("2026-01-11T09:30:00Z"),
        ),
        (
            "daily just before",
            daily_0930.clone(),
            "2026-01-10T09:29:59.999Z",
            UTC,
            Some("2026-01-10T09:30:00Z"),
        ),
        (
            "daily month end",
            daily_0930.clone(),
            "2026-01-31T10:00:00Z",
            UTC,
            Some("2026-02-01T09:30:00Z"),
        ),
        // daily, Berlin winter (UTC+1)
        (
            "daily Berlin",
            daily_0930.clone(),
            "2026-01-10T07:00:00Z",
            Berlin,
            Some("2026-01-10T08:30:00Z"),
        ),
        (
            "daily Berlin local date differs from UTC date",
            daily_0930.clone(),
            "2026-01-10T23:30:00Z",
            Berlin,
            Some("2026-01-11T08:30:00Z"),
        ),
        // Berlin spring forward 2026-03-29: 02:00 CET → 03:00 CEST (01:00Z)
        (
            "daily 02:30 in the gap runs at 03:00 CEST",
            DAILY_0230,
            "2026-03-28T12:00:00Z",
            Berlin,
            Some("2026-03-29T01:00:00Z"),
        ),
        (
            "daily after the gap run",
            DAILY_0230,
            "2026-03-29T01:00:00Z",
            Berlin,
            Some("2026-03-30T00:30:00Z"),
        ),
        (
            "daily the day before the gap",
            DAILY_0230,
            "2026-03-27T12:00:00Z",
            Berlin,
            Some("2026-03-28T01:30:00Z"),
        ),
        // Berlin fall back 2026-10-25: 03:00 CEST → 02:00 CET (01:00Z); 02:xx occurs twice
        (
            "daily ambiguous runs at the earlier instant",
            DAILY_0230,
            "2026-10-24T12:00:00Z",
            Berlin,
            Some("2026-10-25T00:30:00Z"),
        ),
        (
            "daily ambiguous runs only once",
            DAILY_0230,
            "2026-10-25T00:30:00Z",
            Berlin,
            Some("2026-10-26T01:30:00Z"),
        ),
        (
            "daily from inside the second pass",
            DAILY_0230,
            "2026-10-25T01:15:00Z",
            Berlin,
            Some("2026-10-26T01:30:00Z"),
        ),
        (
            "daily from the first pass before 02:30",
            DAILY_0230,
            "2026-10-25T00:10:00Z",
            Berlin,
            Some("2026-10-25T00:30:00Z"),
        ),
        // weekly, America/New_York; DST starts 2026-03-08 02:00, ends 2026-11-01 02:00
        (
            "weekly across spring forward",
            weekly_sun_10.clone(),
            "2026-03-07T12:00:00Z",
            New_York,
            Some("2026-03-08T14:00:00Z"),
        ),
        (
            "weekly same day earlier",
            weekly_sun_10.clone(),
            "2026-03-08T13:00:00Z",
            New_York,
            Some("2026-03-08T14:00:00Z"),
        ),
        (
            "weekly exactly at ⇒ next week",
            weekly_sun_10.clone(),
            "2026-03-08T14:00:00Z",
            New_York,
            Some("2026-03-15T14:00:00Z"),
        ),
        (
            "weekly in winter",
            weekly_sun_10.clone(),
            "2026-01-05T00:00:00Z",
            New_York,
            Some("2026-01-11T15:00:00Z"),
        ),
        (
            "weekly across fall back",
            weekly_sun_10.clone(),
            "2026-10-31T12:00:00Z",
            New_York,
            Some("2026-11-01T15:00:00Z"),
        ),
        (
            "weekly ambiguous 01:00 earlier instant",
            Cadence::Weekly {
                day_of_week: 0,
                at_hour: 1,
            },
            "2026-10-31T12:00:00Z",
            New_York,
            Some("2026-11-01T05:00:00Z"),
        ),
        (
            "weekly gap 02:00 runs at 03:00 EDT",
            Cadence::Weekly {
                day_of_week: 0,
                at_hour: 2,
            },
            "2026-03-07T12:00:00Z",
            New_York,
            Some("2026-03-08T07:00:00Z"),
        ),
        (
            "weekly local weekday differs from UTC",
            weekly_wed_8.clone(),
            "2026-01-07T02:00:00Z",
            New_York,
            Some("2026-01-07T13:00:00Z"),
        ),
        (
            "weekly UTC",
            weekly_wed_8,
            "2026-01-07T08:00:00Z",
            UTC,
            Some("2026-01-14T08:00:00Z"),
        ),
        // cron
        (
            "cron */15",
            cron("*/15 * * * *"),
            "2026-01-01T10:07:00Z",
            UTC,
            Some("2026-01-01T10:15:00Z"),
        ),
        (
            "cron */15 strictly after",
            cron("*/15 * * * *"),
            "2026-01-01T10:15:00Z",
            UTC,
            Some("2026-01-01T10:30:00Z"),
        ),
        (
            "cron */15 sub-second",
            cron("*/15 * * * *"),
            "2026-01-01T10:14:59.900Z",
            UTC,
            Some("2026-01-01T10:15:00Z"),
        ),
        (
            "cron */15 hour rollover",
            cron("*/15 * * * *"),
            "2026-01-01T23:50:00Z",
            UTC,
            Some("2026-01-02T00:00:00Z"),
        ),
        (
            "cron */15 gap collapses to 03:00 CEST",
            cron("*/15 * * * *"),
            "2026-03-29T00:50:00Z",
            Berlin,
            Some("2026-03-29T01:00:00Z"),
        ),
        (
            "cron */15 after the gap",
            cron("*/15 * * * *"),
            "2026-03-29T01:00:00Z",
            Berlin,
            Some("2026-03-29T01:15:00Z"),
        ),
        (
            "cron */15 first pass of overlap",
            cron("*/15 * * * *"),
            "2026-10-25T00:40:00Z",
            Berlin,
            Some("2026-10-25T00:45:00Z"),
        ),
        (
            "cron */15 skips the second pass",
            cron("*/15 * * * *"),
            "2026-10-25T00:45:00Z",
            Berlin,
            Some("2026-10-25T02:00:00Z"),
        ),
        (
            "cron */15 from inside the second pass",
            cron("*/15 * * * *"),
            "2026-10-25T01:05:00Z",
            Berlin,
            Some("2026-10-25T02:00:00Z"),
        ),
        (
            "cron every second pauses for the second pass",
            cron("* * * * * *"),
            "2026-10-25T01:05:00Z",
            Berlin,
            Some("2026-10-25T02:00:00Z"),
        ),
        (
            "cron every second in the first pass",
            cron("* * * * * *"),
            "2026-10-25T00:05:00Z",
            Berlin,
            Some("2026-10-25T00:05:01Z"),
        ),
        (
            "cron 30 2 in the gap",
            cron("30 2 * * *"),
            "2026-03-28T12:00:00Z",
            Berlin,
            Some("2026-03-29T01:00:00Z"),
        ),
        (
            "cron 30 2 ambiguous earlier",
            cron("30 2 * * *"),
            "2026-10-24T12:00:00Z",
            Berlin,
            Some("2026-10-25T00:30:00Z"),
        ),
        (
            "cron 30 2 ambiguous once",
            cron("30 2 * * *"),
            "2026-10-25T00:30:00Z",
            Berlin,
            Some("2026-10-26T01:30:00Z"),
        ),
        (
            "cron 30 2 from second pass",
            cron("30 2 * * *"),
            "2026-10-25T01:15:00Z",
            Berlin,
            Some("2026-10-26T01:30:00Z"),
        ),
        // 2026-01-09 is a Friday
        (
            "cron weekdays skips weekend",
            cron("0 9 * * 1-5"),
            "2026-01-09T09:00:00Z",
            Berlin,
            Some("2026-01-12T08:00:00Z"),
        ),
        (
            "cron weekdays same day",
            cron("0 9 * * 1-5"),
            "2026-01-12T07:59:00Z",
            Berlin,
            Some("2026-01-12T08:00:00Z"),
        ),
        (
            "cron weekdays exactly at",
            cron("0 9 * * 1-5"),
            "2026-01-12T08:00:00Z",
            Berlin,
            Some("2026-01-13T08:00:00Z"),
        ),
        (
            "cron weekdays summer",
            cron("0 9 * * 1-5"),
            "2026-07-03T12:00:00Z",
            Berlin,
            Some("2026-07-06T07:00:00Z"),
        ),
        (
            "cron with seconds",
            cron("30 * * * * *"),
            "2026-01-01T10:00:30Z",
            UTC,
            Some("2026-01-01T10:01:30Z"),
        ),
        (
            "cron leap day",
            cron("0 0 29 2 *"),
            "2026-01-01T00:00:00Z",
            UTC,
            Some("2028-02-29T00:00:00Z"),
        ),
        (
            "cron sunday as 7",
            cron("0 12 * * 7"),
            "2026-01-05T00:00:00Z",
            UTC,
            Some("2026-01-11T12:00:00Z"),
        ),
    ];
    for (name, cadence, from, tz, expected) in cases {
        let got = next_run_after(&cadence, utc(from), tz);
        assert_eq!(
            got,
            expected.map(utc),
            "{name}: {cadence:?} from {from} in {tz}"
        );
    }
}

#[test]
fn utc_is_the_fallback_zone() {
    let c = Cadence::Daily {
        at_hour: 9,
        at_minute: 0,
    };
    let tz = resolve_timezone(None, UTC);
    assert_eq!(
        next_run_after(&c, utc("2026-03-29T08:00:00Z"), tz),
        Some(utc("2026-03-29T09:00:00Z"))
    );
    assert_eq!(resolve_timezone(Some("Not/AZone"), UTC), UTC);
    assert_eq!(resolve_timezone(Some(""), Berlin), Berlin);
    assert_eq!(resolve_timezone(Some("America/New_York"), UTC), New_York);
}

#[test]
fn parse_timezone_table() {
    let ok: [(&str, Tz); 3] = [
        ("Europe/Berlin", Berlin),
        ("America/New_York", New_York),
        ("UTC", UTC),
    ];
    for (name, tz) in ok {
        assert_eq!(parse_timezone(name), Ok(tz));
    }
    for name in ["", "Europe/Atlantis", "berlin", " Europe/Berlin", "+02:00"] {
        let err = parse_timezone(name).expect_err(name);
        assert_eq!(
            err,
            CadenceError::UnknownTimezone {
                name: name.to_owned()
            }
        );
        assert!(err.to_string().contains("time zone"));
    }
}

// ---------------------------------------------------------------------------------------
// serving / downtime collapse

#[test]
fn interval_collapses_three_days_of_downtime_keeping_phase() {
    let c = Cadence::Interval { every_minutes: 5 };
    let due = utc("2026-01-01T00:00:00Z");
    let cases = [
        // (now, expected)
        ("2026-01-04T00:02:30Z", "2026-01-04T00:05:00Z"),
        ("2026-01-04T00:05:00Z", "2026-01-04T00:10:00Z"),
        ("2026-01-04T00:04:59.999Z", "2026-01-04T00:05:00Z"),
        ("2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"),
        // served before it was due: still one period after `due`
        ("2025-12-31T23:59:00Z", "2026-01-01T00:05:00Z"),
    ];
    for (now, expected) in cases {
        assert_eq!(
            next_run_after_serving(&c, due, utc(now), Berlin),
            Some(utc(expected)),
            "now={now}"
        );
    }
    // Fifty years of downtime with a one-minute interval still returns at once.
    let c = Cadence::Interval { every_minutes: 1 };
    assert_eq!(
        next_run_after_serving(&c, due, utc("2076-01-01T00:00:30Z"), UTC),
        Some(utc("2076-01-01T00:01:00Z"))
    );
}

#[test]
fn wall_clock_kinds_collapse_to_first_occurrence_after_now() {
    let due = utc("2026-01-01T08:00:00Z"); // 09:00 Berlin
    let now = utc("2026-01-04T10:00:00Z"); // three days later, 11:00 Berlin
    let cases: Vec<(Cadence, Option<&str>)> = vec![
        (
            Cadence::Daily {
                at_hour: 9,
                at_minute: 0,
            },
            Some("2026-01-05T08:00:00Z"),
        ),
        (
            Cadence::Weekly {
                day_of_week: 4, // Thursday; 2026-01-01 was a Thursday
                at_hour: 9,
            },
            Some("2026-01-08T08:00:00Z"),
        ),
        (cron("0 9 * * 1-5"), Some("2026-01-05T08:00:00Z")),
        (cron("*/15 * * * *"), Some("2026-01-04T10:15:00Z")),
        (Cadence::Manual, None),
    ];
    for (c, expected) in cases {
        assert_eq!(
            next_run_after_serving(&c, due, now, Berlin),
            expected.map(utc),
            "{c:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// backoff

const SEC: Duration = Duration::from_secs(1);

#[test]
fn retry_delay_table() {
    let base = 10 * SEC;
    let cap = 3600 * SEC;
    let cases: [(u32, f64, Duration); 14] = [
        (0, 0.5, 10 * SEC),
        (1, 0.5, 10 * SEC),
        (2, 0.5, 20 * SEC),
        (3, 0.5, 40 * SEC),
        (9, 0.5, 2560 * SEC),
        (10, 0.5, cap),
        (1, 0.0, 8 * SEC),
        (1, 1.0, 12 * SEC),
        (1, 0.25, 9 * SEC),
        (1, f64::NAN, 10 * SEC),
        (1, 7.0, 12 * SEC),
        (1, -3.0, 8 * SEC),
        (u32::MAX, 1.0, cap),
        (u32::MAX, 0.0, 2880 * SEC),
    ];
    for (attempt, jitter, expected) in cases {
        assert_eq!(
            retry_delay(attempt, base, cap, jitter),
            expected,
            "attempt={attempt} jitter={jitter}"
        );
    }
    // Extreme inputs neither panic nor exceed the cap.
    assert_eq!(
        retry_delay(200, Duration::MAX, Duration::MAX, 1.0),
        Duration::MAX
    );
    assert_eq!(
        retry_delay(u32::MAX, Duration::ZERO, cap, 1.0),
        Duration::ZERO
    );
    assert_eq!(retry_delay(3, base, Duration::ZERO, 1.0), Duration::ZERO);
}

#[test]
fn failure_retry_is_never_later_than_the_regular_run() {
    let now = utc("2026-01-10T12:00:00Z");
    let minute = 60 * SEC;
    let hourly = Cadence::Interval { every_minutes: 60 };
    let cases: Vec<(&str, Cadence, u32, &str)> = vec![
        (
            "retry sooner than regular",
            hourly.clone(),
            1,
            "2026-01-10T12:01:00Z",
        ),
        ("retry grows", hourly.clone(), 4, "2026-01-10T12:08:00Z"),
        (
            "regular sooner than retry",
            hourly,
            8,
            "2026-01-10T13:00:00Z",
        ),
        (
            "manual always retries",
            Cadence::Manual,
            20,
            "2026-01-10T18:00:00Z",
        ),
        (
            "daily run comes first",
            Cadence::Daily {
                at_hour: 14,
                at_minute: 0,
            },
            9,
            "2026-01-10T13:00:00Z",
        ),
    ];
    for (name, c, attempt, expected) in cases {
        assert_eq!(
            next_run_after_failure(&c, now, attempt, minute, 360 * minute, 0.5, Berlin),
            utc(expected),
            "{name}"
        );
    }
    // A delay beyond chrono's range saturates instead of panicking.
    let far = next_run_after_failure(
        &Cadence::Manual,
        now,
        u32::MAX,
        Duration::MAX,
        Duration::MAX,
        1.0,
        UTC,
    );
    assert_eq!(far, DateTime::<Utc>::MAX_UTC);
}

// ---------------------------------------------------------------------------------------
// properties

fn any_tz() -> impl Strategy<Value = Tz> {
    prop_oneof![
        Just(UTC),
        Just(Berlin),
        Just(New_York),
        Just(chrono_tz::Australia::Lord_Howe),
        Just(chrono_tz::Asia::Kolkata),
        Just(chrono_tz::Pacific::Apia),
    ]
}

fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 2000-01-01 .. 2060-01-01, millisecond resolution
    (946_684_800_000i64..2_840_140_800_000i64)
        .prop_map(|ms| DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default())
}

fn any_cadence() -> impl Strategy<Value = Cadence> {
    prop_oneof![
        (1u32..100_000).prop_map(|every_minutes| Cadence::Interval { every_minutes }),
        (0u8..24, 0u8..60).prop_map(|(at_hour, at_minute)| Cadence::Daily { at_hour, at_minute }),
        (0u8..7, 0u8..24).prop_map(|(day_of_week, at_hour)| Cadence::Weekly {
            day_of_week,
            at_hour
        }),
        prop_oneof![
            Just("*/15 * * * *"),
            Just("0 9 * * 1-5"),
            Just("30 2 * * *"),
            Just("0 0 1 * *"),
            Just("15 1,2,3 * * 0"),
        ]
        .prop_map(cron),
    ]
}

proptest! {
    #[test]
    fn retry_delay_is_capped_and_monotone(
        attempt in 0u32..=u32::MAX,
        base_ms in 0u64..10_000_000,
        cap_ms in 0u64..100_000_000,
        jitter in -1.0f64..2.0,
    ) {
        let base = Duration::from_millis(base_ms);
        let cap = Duration::from_millis(cap_ms);
        let d = retry_delay(attempt, base, cap, jitter);
        prop_assert!(d <= cap);
        let next = retry_delay(attempt.saturating_add(1), base, cap, jitter);
        prop_assert!(d <= next, "attempt {} gave {:?}, next gave {:?}", attempt, d, next);
        // Jitter stays within ±20 % of the capped exponential value.
        let shift = attempt.saturating_sub(1).min(60);
        let raw = base.as_secs_f64() * 2f64.powi(shift as i32);
        let capped = raw.min(cap.as_secs_f64());
        prop_assert!(d.as_secs_f64() >= capped * 0.8 - 1e-6);
        prop_assert!(d.as_secs_f64() <= capped * 1.2 + 1e-6);
    }

    #[test]
    fn next_run_is_strictly_after_and_bounded(c in any_cadence(), from in any_instant(), tz in any_tz()) {
        let next = next_run_after(&c, from, tz);
        prop_assert!(next.is_some());
        let next = next.unwrap_or(from);
        prop_assert!(next > from);
        // No cadence here waits longer than its period (plus DST slack).
        let bound = match &c {
            Cadence::Interval { every_minutes } => TimeDelta::minutes(i64::from(*every_minutes)),
            Cadence::Daily { .. } => TimeDelta::hours(27),
            Cadence::Weekly { .. } => TimeDelta::days(7) + TimeDelta::hours(3),
            _ => TimeDelta::days(32),
        };
        prop_assert!(next - from <= bound, "{:?} from {} in {}: {}", c, from, tz, next);
    }

    #[test]
    fn utc_wall_clock_results_hit_the_requested_time(c in any_cadence(), from in any_instant()) {
        let next = next_run_after(&c, from, UTC).unwrap_or(from);
        match c {
            Cadence::Daily { at_hour, at_minute } => {
                prop_assert_eq!((next.hour(), next.minute(), next.second()),
                    (u32::from(at_hour), u32::from(at_minute), 0));
                prop_assert!(next - from <= TimeDelta::days(1));
            }
            Cadence::Weekly { day_of_week, at_hour } => {
                use chrono::Datelike;
                prop_assert_eq!(next.weekday().num_days_from_sunday(), u32::from(day_of_week));
                prop_assert_eq!((next.hour(), next.minute(), next.second()), (u32::from(at_hour), 0, 0));
                prop_assert!(next - from <= TimeDelta::days(7));
            }
            _ => {}
        }
    }

    #[test]
    fn interval_serving_keeps_phase_and_is_the_smallest(
        every in 1u32..10_000,
        due in any_instant(),
        lag_ms in 0i64..(400 * 24 * 3_600_000),
    ) {
        let c = Cadence::Interval { every_minutes: every };
        let now = due + TimeDelta::milliseconds(lag_ms);
        let next = next_run_after_serving(&c, due, now, UTC);
        prop_assert!(next.is_some());
        let next = next.unwrap_or(now);
        let period = TimeDelta::minutes(i64::from(every));
        prop_assert!(next > now);
        prop_assert!(next - period <= now);
        prop_assert_eq!((next - due).num_milliseconds() % period.num_milliseconds(), 0);
    }

    #[test]
    fn serving_is_never_before_now(c in any_cadence(), due in any_instant(), lag_min in 0i64..10_000, tz in any_tz()) {
        let now = due + TimeDelta::minutes(lag_min);
        let next = next_run_after_serving(&c, due, now, tz);
        prop_assert!(next.is_some_and(|n| n > now));
    }

    #[test]
    fn failure_time_is_between_now_and_retry(c in any_cadence(), now in any_instant(), attempt in 1u32..40, jitter in 0.0f64..1.0) {
        let base = Duration::from_secs(30);
        let cap = Duration::from_secs(6 * 3600);
        let at = next_run_after_failure(&c, now, attempt, base, cap, jitter, Berlin);
        let retry = now + TimeDelta::from_std(retry_delay(attempt, base, cap, jitter)).unwrap_or_default();
        prop_assert!(at > now);
        prop_assert!(at <= retry);
        if let Some(regular) = next_run_after(&c, now, Berlin) {
            prop_assert!(at <= regular);
            prop_assert!(at == regular || at == retry);
        }
    }
}
