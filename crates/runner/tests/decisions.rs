//! `mana_ai_agent_decisions_total{decision="ran"}` counts written plans: once per plan,
//! never at claim time, never for a failed run.

use mana_ai_runner::testkit::{FakeLlm, Reply, RunnerBuilder, TestClock};
use mana_ai_runner::Runner;
use mana_ai_store::testkit::rows::mission_record;
use mana_ai_store::testkit::{fresh_db, push_mission};
use serde_json::json;

const DUE: &str = "2026-01-05T06:00:00.000Z";
const NOW: &str = "2026-01-05T09:00:00Z";

fn ran(r: &Runner) -> u64 {
    r.metrics()
        .agent_decisions_total
        .with_label_values(&["ran"])
        .get()
}

fn mission() -> serde_json::Value {
    mission_record(json!({
        "objective": "Plane die Woche", "nextRunAt": DUE,
        "cadence": {"kind": "interval", "everyMinutes": 60}
    }))
}

#[tokio::test]
async fn a_failed_run_is_not_counted_as_ran_and_a_written_plan_is_counted_once() {
    let db = fresh_db("decisions_ran").await;
    let admin = db.admin().await;
    push_mission(&admin, "u1", "m-fail", mission()).await;
    let failing = RunnerBuilder::new(&db)
        .llm(FakeLlm::replying(Reply::provider_error(
            500, "upstream", "boom",
        )))
        .clock(TestClock::at_iso(NOW))
        .build();
    let stats = failing.tick().await;
    assert_eq!(
        (stats.failed, stats.plans_written_back),
        (1, 0),
        "{stats:?}"
    );
    assert_eq!(ran(&failing), 0, "a failed run is not a plan");

    push_mission(&admin, "u2", "m-ok", mission()).await;
    let planning = RunnerBuilder::new(&db)
        .llm(FakeLlm::replying(Reply::text("ok")))
        .clock(TestClock::at_iso(NOW))
        .build();
    let stats = planning.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    assert_eq!(ran(&planning), 1);
}
