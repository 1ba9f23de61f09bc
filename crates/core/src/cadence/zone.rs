//! Which time zone a mission's wall-clock cadence runs in, from the signals the synced data
//! offers (the web app syncs no zone for missions; see `docs/users.md`).
//!
//! Resolution order ([`resolve_zone`]):
//! 1. the mission's own `timezone` field, when it names an IANA zone;
//! 2. the user's zone from their own synced data (the calendar app's `calendars.timezone`,
//!    newest row first): the first valid IANA name;
//! 3. the UTC offset implied by the browser-written `nextRunAt` of a `daily`/`weekly`
//!    mission (the browser sets local `atHour:atMinute`, so `local − utc` is its offset at
//!    that instant): the first zone, among the user's named zones and then a fixed list of
//!    representative zones ([`REPRESENTATIVE_ZONES`]), whose offset at that instant matches;
//! 4. the configured default zone.
//!
//! Everything here is pure; the caller reads the user's zones from the store.

use chrono::{DateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::{parse_timezone, Cadence};

/// Where a mission's zone came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneSource {
    /// The mission's `timezone` field.
    Mission,
    /// The user's synced data (`calendars.timezone`).
    UserData,
    /// The offset implied by the browser-written `nextRunAt`.
    ImpliedOffset,
    /// `MANA_AI_DEFAULT_TIMEZONE`.
    Default,
}

impl ZoneSource {
    /// A short label for logs and the report table.
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneSource::Mission => "mission",
            ZoneSource::UserData => "user-data",
            ZoneSource::ImpliedOffset => "implied-offset",
            ZoneSource::Default => "default",
        }
    }
}

/// The signals a mission's zone is resolved from.
#[derive(Debug, Clone, Copy, Default)]
pub struct ZoneSignals<'a> {
    /// The mission's `timezone` field, as written.
    pub mission_timezone: Option<&'a str>,
    /// Zone names from the user's synced data, newest first (invalid names are skipped).
    pub user_zones: &'a [String],
    /// The mission's current `nextRunAt`.
    pub next_run_at: Option<DateTime<Utc>>,
}

/// A resolved zone and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedZone {
    pub tz: Tz,
    pub source: ZoneSource,
}

/// Representative IANA zones, in order of preference, covering every UTC offset in use
/// (standard and daylight time) from −12:00 to +14:00. When only an offset is known, the
/// first zone with that offset at the instant in question is chosen, so the preference
/// decides between zones that share an offset (Berlin before Lagos, New York before
/// Bogotá). A zone that observes DST is thereby picked only when the offset matches its
/// rule on that date, which is what separates New York from Chicago in summer.
pub const REPRESENTATIVE_ZONES: &[Tz] = &[
    Tz::Europe__Berlin,
    Tz::Europe__London,
    Tz::America__New_York,
    Tz::America__Chicago,
    Tz::America__Denver,
    Tz::America__Los_Angeles,
    Tz::America__Phoenix,
    Tz::America__Anchorage,
    Tz::Pacific__Honolulu,
    Tz::America__Halifax,
    Tz::America__St_Johns,
    Tz::America__Sao_Paulo,
    Tz::America__Mexico_City,
    Tz::America__Bogota,
    Tz::America__Caracas,
    Tz::America__Santiago,
    Tz::America__Noronha,
    Tz::Atlantic__Azores,
    Tz::Atlantic__Cape_Verde,
    Tz::Europe__Helsinki,
    Tz::Africa__Cairo,
    Tz::Europe__Istanbul,
    Tz::Europe__Moscow,
    Tz::Asia__Tehran,
    Tz::Asia__Dubai,
    Tz::Asia__Kabul,
    Tz::Asia__Karachi,
    Tz::Asia__Kolkata,
    Tz::Asia__Kathmandu,
    Tz::Asia__Dhaka,
    Tz::Asia__Yangon,
    Tz::Asia__Bangkok,
    Tz::Asia__Shanghai,
    Tz::Australia__Eucla,
    Tz::Asia__Tokyo,
    Tz::Australia__Darwin,
    Tz::Australia__Adelaide,
    Tz::Australia__Brisbane,
    Tz::Australia__Sydney,
    Tz::Australia__Lord_Howe,
    Tz::Pacific__Noumea,
    Tz::Pacific__Auckland,
    Tz::Pacific__Fiji,
    Tz::Pacific__Chatham,
    Tz::Pacific__Tongatapu,
    Tz::Pacific__Kiritimati,
    Tz::Pacific__Pago_Pago,
    Tz::Pacific__Marquesas,
    Tz::Pacific__Gambier,
    Tz::Etc__GMTPlus12,
    Tz::UTC,
];

/// Smallest and largest UTC offset in use, in minutes.
const MIN_OFFSET_MIN: i32 = -12 * 60;
const MAX_OFFSET_MIN: i32 = 14 * 60;
/// Every offset in use is a multiple of 15 minutes.
const OFFSET_STEP_MIN: i32 = 15;
const DAY_MIN: i32 = 24 * 60;
const WEEK_MIN: i32 = 7 * DAY_MIN;

/// Resolves the zone of a mission with `cadence` from `signals` (order in the module docs).
pub fn resolve_zone(cadence: &Cadence, signals: &ZoneSignals<'_>, default: Tz) -> ResolvedZone {
    let found = |tz, source| ResolvedZone { tz, source };
    if let Some(tz) = signals
        .mission_timezone
        .and_then(|n| parse_timezone(n.trim()).ok())
    {
        return found(tz, ZoneSource::Mission);
    }
    let named: Vec<Tz> = signals
        .user_zones
        .iter()
        .filter_map(|n| parse_timezone(n.trim()).ok())
        .collect();
    if let Some(tz) = named.first() {
        return found(*tz, ZoneSource::UserData);
    }
    let implied = signals.next_run_at.and_then(|at| {
        let offsets = implied_offsets(cadence, at);
        zone_with_offset(&offsets, at, &named)
    });
    match implied {
        Some(tz) => found(tz, ZoneSource::ImpliedOffset),
        None => found(default, ZoneSource::Default),
    }
}

/// The UTC offsets (minutes, east positive) a browser could have been in when it wrote
/// `next_run_at` for `cadence`: empty unless the cadence is `daily` or `weekly` and the
/// instant looks browser-made (whole minute, zero seconds and milliseconds) with an offset
/// that is a multiple of 15 minutes. A daily cadence fixes the offset only modulo one day,
/// so it can yield two values 24 h apart (e.g. −10:00 and +14:00).
pub fn implied_offsets(cadence: &Cadence, next_run_at: DateTime<Utc>) -> Vec<i32> {
    if next_run_at.second() != 0 || next_run_at.nanosecond() != 0 {
        return Vec::new();
    }
    let utc_minute_of_day = (next_run_at.hour() * 60 + next_run_at.minute()) as i32;
    let (diff, period) = match cadence {
        Cadence::Daily { at_hour, at_minute } => {
            let local = i32::from(*at_hour) * 60 + i32::from(*at_minute);
            (local - utc_minute_of_day, DAY_MIN)
        }
        Cadence::Weekly {
            day_of_week,
            at_hour,
        } => {
            use chrono::Datelike;
            let utc_day = next_run_at.weekday().num_days_from_sunday() as i32;
            let local = i32::from(*day_of_week) * DAY_MIN + i32::from(*at_hour) * 60;
            (local - (utc_day * DAY_MIN + utc_minute_of_day), WEEK_MIN)
        }
        _ => return Vec::new(),
    };
    let base = diff.rem_euclid(period);
    if base % OFFSET_STEP_MIN != 0 {
        return Vec::new();
    }
    // All values ≡ base (mod period) within the range of offsets in use.
    let mut out = Vec::new();
    let mut o = base - period * ((base - MIN_OFFSET_MIN).div_euclid(period));
    while o <= MAX_OFFSET_MIN {
        if o >= MIN_OFFSET_MIN {
            out.push(o);
        }
        o += period;
    }
    out
}

/// The UTC offset of `tz` at `at`, in minutes east.
pub fn offset_minutes_at(tz: Tz, at: DateTime<Utc>) -> i32 {
    tz.offset_from_utc_datetime(&at.naive_utc())
        .fix()
        .local_minus_utc()
        / 60
}

/// The first zone among `preferred`, then [`REPRESENTATIVE_ZONES`], whose offset at `at`
/// is one of `offsets`.
pub fn zone_with_offset(offsets: &[i32], at: DateTime<Utc>, preferred: &[Tz]) -> Option<Tz> {
    if offsets.is_empty() {
        return None;
    }
    preferred
        .iter()
        .chain(REPRESENTATIVE_ZONES)
        .copied()
        .find(|tz| offsets.contains(&offset_minutes_at(*tz, at)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn daily(h: u8, m: u8) -> Cadence {
        Cadence::Daily {
            at_hour: h,
            at_minute: m,
        }
    }

    /// What a browser in `tz` writes as `nextRunAt` for local `date` at `h:m`.
    fn browser(tz: Tz, y: i32, mo: u32, d: u32, h: u32, m: u32) -> DateTime<Utc> {
        tz.with_ymd_and_hms(y, mo, d, h, m, 0)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    fn infer(c: &Cadence, at: DateTime<Utc>) -> Option<Tz> {
        let signals = ZoneSignals {
            next_run_at: Some(at),
            ..Default::default()
        };
        let r = resolve_zone(c, &signals, Tz::Europe__Berlin);
        (r.source == ZoneSource::ImpliedOffset).then_some(r.tz)
    }

    #[test]
    fn offsets_table() {
        let cases: &[(Cadence, &str, &[i32])] = &[
            (daily(7, 0), "2026-01-15T06:00:00Z", &[60]),
            (daily(7, 0), "2026-01-15T12:00:00Z", &[-300]),
            (daily(7, 0), "2026-01-14T22:00:00Z", &[540]),
            (daily(7, 0), "2026-01-15T01:30:00Z", &[330]),
            (daily(7, 0), "2026-01-15T10:30:00Z", &[-210]),
            (daily(7, 0), "2026-01-15T01:15:00Z", &[345]),
            // −10:00 and +14:00 are one day apart: both are candidates.
            (daily(7, 0), "2026-01-15T17:00:00Z", &[-600, 840]),
            (daily(7, 0), "2026-01-15T06:00:07Z", &[]),
            (daily(7, 0), "2026-01-15T06:07:00Z", &[]),
            (
                Cadence::Weekly {
                    day_of_week: 1,
                    at_hour: 7,
                },
                // Monday 07:00 in Tokyo is Sunday 22:00 UTC.
                "2026-01-18T22:00:00Z",
                &[540],
            ),
            (
                Cadence::Weekly {
                    day_of_week: 1,
                    at_hour: 7,
                },
                "2026-01-19T17:00:00Z",
                &[-600],
            ),
            (
                Cadence::Interval { every_minutes: 60 },
                "2026-01-15T06:00:00Z",
                &[],
            ),
        ];
        for (c, at, want) in cases {
            assert_eq!(implied_offsets(c, utc(at)), *want, "{c:?} {at}");
        }
    }

    #[test]
    fn positive_negative_and_half_hour_zones() {
        let cases: &[(Tz, u32)] = &[
            (Tz::America__New_York, 1),
            (Tz::America__New_York, 7),
            (Tz::Asia__Tokyo, 1),
            (Tz::Asia__Kolkata, 1),
            (Tz::Asia__Kolkata, 7),
            (Tz::America__St_Johns, 1),
            (Tz::America__St_Johns, 7),
            (Tz::Asia__Kathmandu, 4),
            (Tz::Europe__Berlin, 1),
            (Tz::Europe__Berlin, 7),
            (Tz::America__Los_Angeles, 7),
            (Tz::Australia__Sydney, 1),
            (Tz::Australia__Adelaide, 1),
        ];
        for (tz, month) in cases {
            let at = browser(*tz, 2026, *month, 15, 7, 0);
            let got = infer(&daily(7, 0), at).expect("an offset zone");
            assert_eq!(
                offset_minutes_at(got, at),
                offset_minutes_at(*tz, at),
                "{tz} month {month}: chose {got}"
            );
            assert_eq!(got, *tz, "{tz} month {month} is the preferred zone");
        }
    }

    #[test]
    fn dst_weeks_where_us_and_eu_differ() {
        // 2026: the US springs forward on 8 March, the EU on 29 March; the US falls back
        // on 1 November, the EU on 25 October.
        let cases: &[(Tz, u32, u32, Tz)] = &[
            (Tz::America__New_York, 3, 10, Tz::America__New_York),
            (Tz::America__Chicago, 3, 10, Tz::America__Chicago),
            (Tz::Europe__Berlin, 3, 10, Tz::Europe__Berlin),
            (Tz::Europe__London, 3, 10, Tz::Europe__London),
            (Tz::America__New_York, 10, 28, Tz::America__New_York),
            (Tz::Europe__Berlin, 10, 28, Tz::Europe__Berlin),
            (Tz::America__Los_Angeles, 10, 28, Tz::America__Los_Angeles),
        ];
        for (tz, month, day, want) in cases {
            let at = browser(*tz, 2026, *month, *day, 7, 0);
            assert_eq!(infer(&daily(7, 0), at), Some(*want), "{tz} {month}-{day}");
        }
    }

    #[test]
    fn order_of_signals() {
        let c = daily(7, 0);
        let ny_at = browser(Tz::America__New_York, 2026, 1, 15, 7, 0);
        let zones = vec!["Not/AZone".to_string(), "Asia/Tokyo".to_string()];
        let all = ZoneSignals {
            mission_timezone: Some("Europe/Paris"),
            user_zones: &zones,
            next_run_at: Some(ny_at),
        };
        let r = resolve_zone(&c, &all, Tz::Europe__Berlin);
        assert_eq!((r.tz, r.source), (Tz::Europe__Paris, ZoneSource::Mission));
        let no_mission = ZoneSignals {
            mission_timezone: Some("Mars/Base"),
            ..all
        };
        let r = resolve_zone(&c, &no_mission, Tz::Europe__Berlin);
        assert_eq!((r.tz, r.source), (Tz::Asia__Tokyo, ZoneSource::UserData));
        let only_offset = ZoneSignals {
            mission_timezone: None,
            user_zones: &[],
            next_run_at: Some(ny_at),
        };
        let r = resolve_zone(&c, &only_offset, Tz::Europe__Berlin);
        assert_eq!(
            (r.tz, r.source),
            (Tz::America__New_York, ZoneSource::ImpliedOffset)
        );
        let nothing = ZoneSignals::default();
        let r = resolve_zone(&c, &nothing, Tz::Asia__Tokyo);
        assert_eq!((r.tz, r.source), (Tz::Asia__Tokyo, ZoneSource::Default));
        // An interval mission never infers from nextRunAt.
        let r = resolve_zone(
            &Cadence::Interval { every_minutes: 5 },
            &only_offset,
            Tz::UTC,
        );
        assert_eq!(r.source, ZoneSource::Default);
    }

    #[test]
    fn preferred_zone_breaks_offset_ties() {
        // +01:00 in winter: Berlin by default, but Lagos when the user's data names it.
        let at = utc("2026-01-15T06:00:00Z");
        assert_eq!(zone_with_offset(&[60], at, &[]), Some(Tz::Europe__Berlin));
        assert_eq!(
            zone_with_offset(&[60], at, &[Tz::Africa__Lagos]),
            Some(Tz::Africa__Lagos)
        );
        // A named zone that does not match the offset is passed over.
        assert_eq!(
            zone_with_offset(&[-300], at, &[Tz::Asia__Tokyo]),
            Some(Tz::America__New_York)
        );
    }

    #[test]
    fn every_offset_in_use_has_a_representative() {
        // Every quarter-hour offset any zone has at these dates is covered by the list.
        for at in ["2026-01-15T12:00:00Z", "2026-07-15T12:00:00Z"] {
            let at = utc(at);
            for tz in chrono_tz::TZ_VARIANTS.iter().copied() {
                let o = offset_minutes_at(tz, at);
                if o % OFFSET_STEP_MIN != 0 {
                    continue;
                }
                assert!(
                    zone_with_offset(&[o], at, &[]).is_some(),
                    "offset {o} of {tz} at {at} has no representative"
                );
            }
        }
    }
}
