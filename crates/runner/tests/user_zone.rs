//! The next run of a daily mission lands at the cadence's local time in the *user's*
//! zone: read from their synced calendar (New York) or inferred from the browser-written
//! `nextRunAt` (Tokyo), not in `MANA_AI_DEFAULT_TIMEZONE` (Berlin here).

use mana_ai_runner::testkit::{FakeLlm, Reply, RunnerBuilder, TestClock};
use mana_ai_store::testkit::rows::{mission_record, runner_data};
use mana_ai_store::testkit::{fresh_db, push_mission, Change};
use serde_json::json;

/// 10:00 in Berlin, 04:00 in New York, 18:00 in Tokyo.
const NOW: &str = "2026-01-05T09:00:00Z";

fn daily_seven(next: &str) -> serde_json::Value {
    mission_record(json!({
        "title": "Morgenplan", "objective": "Plane meinen Tag", "nextRunAt": next,
        "cadence": {"kind": "daily", "atHour": 7, "atMinute": 0}
    }))
}

#[tokio::test]
async fn new_york_and_tokyo_users_run_at_seven_their_time() {
    let db = fresh_db("user_zone_ny_tokyo").await;
    let admin = db.admin().await;
    // New York: the calendar app synced the zone (an older row named another one).
    Change::new(
        "ny",
        "calendars",
        "c-old",
        json!({"name": "Alt", "timezone": "Europe/Berlin"}),
    )
    .app("calendar")
    .push(&admin)
    .await;
    Change::new(
        "ny",
        "calendars",
        "c1",
        json!({"name": "Privat", "timezone": "America/New_York"}),
    )
    .app("calendar")
    .push(&admin)
    .await;
    // 07:00 EST on 4 January.
    push_mission(
        &admin,
        "ny",
        "m-ny",
        daily_seven("2026-01-04T12:00:00.000Z"),
    )
    .await;
    // Tokyo: no zone anywhere; the browser wrote 07:00 JST on 5 January.
    push_mission(
        &admin,
        "tokyo",
        "m-tokyo",
        daily_seven("2026-01-04T22:00:00.000Z"),
    )
    .await;
    // Berlin default for a user with no signal at all (a browser-looking time would be
    // inferred, so this one carries seconds, as a retry would).
    push_mission(
        &admin,
        "nosignal",
        "m-none",
        daily_seven("2026-01-05T06:00:13.000Z"),
    )
    .await;

    let r = RunnerBuilder::new(&db)
        .llm(FakeLlm::replying(Reply::text("ok")))
        .clock(TestClock::at_iso(NOW))
        .config(|c| c.default_agent_max_concurrent = 5)
        .build();
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 3, "{stats:?}");

    let next = |data: Vec<serde_json::Value>| data[0]["nextRunAt"].as_str().unwrap().to_string();
    // 07:00 EST on 5 January.
    assert_eq!(
        next(runner_data(&admin, "m-ny").await),
        "2026-01-05T12:00:00.000Z"
    );
    // 07:00 JST on 6 January.
    assert_eq!(
        next(runner_data(&admin, "m-tokyo").await),
        "2026-01-05T22:00:00.000Z"
    );
    // 07:00 CET on 6 January.
    assert_eq!(
        next(runner_data(&admin, "m-none").await),
        "2026-01-06T06:00:00.000Z"
    );
}
