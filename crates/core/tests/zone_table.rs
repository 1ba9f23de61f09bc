//! The zone-resolution table over generated users: which signals each user's data offers
//! and which zone the runner chooses. `cargo test -p mana-ai-core --test zone_table --
//! --nocapture` prints it (the figure of issue 15).

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use mana_ai_core::cadence::zone::{resolve_zone, ZoneSignals};
use mana_ai_core::cadence::{next_run_after_serving, Cadence};

struct User {
    name: &'static str,
    mission_tz: Option<&'static str>,
    calendar: &'static [&'static str],
    /// The zone of the browser that wrote `nextRunAt`, and the local date it wrote.
    browser: Option<(Tz, (i32, u32, u32))>,
    cadence: Cadence,
    want: Tz,
}

const DAILY7: Cadence = Cadence::Daily {
    at_hour: 7,
    at_minute: 0,
};
const DAILY2130: Cadence = Cadence::Daily {
    at_hour: 21,
    at_minute: 30,
};
const MONDAY8: Cadence = Cadence::Weekly {
    day_of_week: 1,
    at_hour: 8,
};

fn local_run(c: &Cadence, tz: Tz, (y, m, d): (i32, u32, u32)) -> DateTime<Utc> {
    let (h, min) = match c {
        Cadence::Daily { at_hour, at_minute } => (u32::from(*at_hour), u32::from(*at_minute)),
        Cadence::Weekly { at_hour, .. } => (u32::from(*at_hour), 0),
        _ => (0, 0),
    };
    tz.with_ymd_and_hms(y, m, d, h, min, 0)
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

fn users() -> Vec<User> {
    use Tz::*;
    let u = |name, mission_tz, calendar, browser, cadence, want| User {
        name,
        mission_tz,
        calendar,
        browser,
        cadence,
        want,
    };
    vec![
        u(
            "u01",
            Some("America/Denver"),
            &["Asia/Tokyo"][..],
            Some((Asia__Tokyo, (2026, 1, 15))),
            DAILY7,
            America__Denver,
        ),
        u(
            "u02",
            Some("Bad/Zone"),
            &["Asia/Tokyo"][..],
            None,
            DAILY7,
            Asia__Tokyo,
        ),
        u(
            "u03",
            None,
            &["America/New_York"][..],
            Some((America__New_York, (2026, 1, 15))),
            DAILY7,
            America__New_York,
        ),
        u(
            "u04",
            None,
            &["Europe/Lisbon", "Europe/Berlin"][..],
            None,
            DAILY7,
            Europe__Lisbon,
        ),
        u(
            "u05",
            None,
            &["", "Asia/Kolkata"][..],
            None,
            DAILY7,
            Asia__Kolkata,
        ),
        u(
            "u06",
            None,
            &[][..],
            Some((America__New_York, (2026, 1, 15))),
            DAILY7,
            America__New_York,
        ),
        u(
            "u07",
            None,
            &[][..],
            Some((America__New_York, (2026, 7, 15))),
            DAILY7,
            America__New_York,
        ),
        u(
            "u08",
            None,
            &[][..],
            Some((America__New_York, (2026, 3, 10))),
            DAILY7,
            America__New_York,
        ),
        u(
            "u09",
            None,
            &[][..],
            Some((America__Chicago, (2026, 3, 10))),
            DAILY7,
            America__Chicago,
        ),
        u(
            "u10",
            None,
            &[][..],
            Some((Europe__Berlin, (2026, 3, 10))),
            DAILY7,
            Europe__Berlin,
        ),
        u(
            "u11",
            None,
            &[][..],
            Some((Europe__Berlin, (2026, 10, 28))),
            DAILY7,
            Europe__Berlin,
        ),
        u(
            "u12",
            None,
            &[][..],
            Some((Europe__London, (2026, 7, 15))),
            DAILY7,
            Europe__London,
        ),
        u(
            "u13",
            None,
            &[][..],
            Some((Asia__Tokyo, (2026, 1, 15))),
            DAILY7,
            Asia__Tokyo,
        ),
        u(
            "u14",
            None,
            &[][..],
            Some((Asia__Kolkata, (2026, 1, 15))),
            DAILY2130,
            Asia__Kolkata,
        ),
        u(
            "u15",
            None,
            &[][..],
            Some((America__St_Johns, (2026, 1, 15))),
            DAILY7,
            America__St_Johns,
        ),
        u(
            "u16",
            None,
            &[][..],
            Some((America__St_Johns, (2026, 7, 15))),
            DAILY7,
            America__St_Johns,
        ),
        u(
            "u17",
            None,
            &[][..],
            Some((Asia__Kathmandu, (2026, 1, 15))),
            DAILY7,
            Asia__Kathmandu,
        ),
        u(
            "u18",
            None,
            &[][..],
            Some((Australia__Sydney, (2026, 1, 15))),
            DAILY7,
            Australia__Sydney,
        ),
        u(
            "u19",
            None,
            &[][..],
            Some((America__Los_Angeles, (2026, 1, 19))),
            MONDAY8,
            America__Los_Angeles,
        ),
        u(
            "u20",
            None,
            &[][..],
            Some((Asia__Tokyo, (2026, 1, 19))),
            MONDAY8,
            Asia__Tokyo,
        ),
        u(
            "u21",
            None,
            &[][..],
            Some((America__Sao_Paulo, (2026, 1, 15))),
            DAILY7,
            America__Sao_Paulo,
        ),
        u(
            "u22",
            None,
            &["Africa/Lagos"][..],
            Some((Africa__Lagos, (2026, 1, 15))),
            DAILY7,
            Africa__Lagos,
        ),
        u("u23", None, &[][..], None, DAILY7, Europe__Berlin),
        u(
            "u24",
            None,
            &[][..],
            Some((Pacific__Auckland, (2026, 1, 15))),
            DAILY7,
            Pacific__Auckland,
        ),
        u(
            "u25",
            None,
            &[][..],
            Some((Europe__Moscow, (2026, 1, 15))),
            Cadence::Interval { every_minutes: 90 },
            Europe__Berlin,
        ),
    ]
}

#[test]
fn zone_resolution_table() {
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    println!("| user | cadence | mission tz | calendar zones (newest first) | nextRunAt written by | chosen zone | source | next run, local |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut wrong = Vec::new();
    for user in users() {
        let zones: Vec<String> = user.calendar.iter().map(|s| s.to_string()).collect();
        let next_run_at = user
            .browser
            .map(|(tz, date)| local_run(&user.cadence, tz, date));
        let signals = ZoneSignals {
            mission_timezone: user.mission_tz,
            user_zones: &zones,
            next_run_at,
        };
        let chosen = resolve_zone(&user.cadence, &signals, Tz::Europe__Berlin);
        let due = next_run_at.unwrap_or(now);
        let next = next_run_after_serving(&user.cadence, due, due, chosen.tz)
            .map(|t| {
                t.with_timezone(&chosen.tz)
                    .format("%a %Y-%m-%d %H:%M %Z")
                    .to_string()
            })
            .unwrap_or_default();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            user.name,
            user.cadence.kind(),
            user.mission_tz.unwrap_or("–"),
            if zones.is_empty() {
                "–".to_string()
            } else {
                format!("{zones:?}")
            },
            user.browser
                .map(|(tz, (y, m, d))| format!(
                    "{tz} browser, {y}-{m:02}-{d:02} → {}",
                    next_run_at.unwrap().format("%H:%MZ")
                ))
                .unwrap_or_else(|| "–".into()),
            chosen.tz,
            chosen.source.as_str(),
            next,
        );
        if chosen.tz != user.want {
            wrong.push(format!(
                "{}: chose {} want {}",
                user.name, chosen.tz, user.want
            ));
        }
    }
    assert!(users().len() >= 20);
    assert!(wrong.is_empty(), "{wrong:?}");
}
