//! Shared spaces: a space mission is one mission whoever pushed its rows. Alice creates a
//! mission in space `sp-team`, Bob's device pushes the space's agent ("Team") and Bob
//! edits the mission (a partial update). One tick plans it exactly once, as the space
//! agent, with Alice's objective, and writes the iteration as Alice with `space_id`.

use mana_ai_core::chat::ChatRequest;
use mana_ai_runner::testkit::{FakeLlm, Reply, RunnerBuilder, TestClock};
use mana_ai_store::testkit::rows::{agent_record, mission_record, runner_rows, scalar};
use mana_ai_store::testkit::{fresh_db, Change};
use serde_json::json;

const SPACE: &str = "sp-team";
const DUE: &str = "2026-01-05T06:00:00.000Z";
const NOW: &str = "2026-01-05T09:00:00Z";

fn system_prompt(r: &ChatRequest) -> String {
    r.messages[0].content.clone().unwrap_or_default()
}

#[tokio::test]
async fn a_space_mission_edited_by_another_member_is_planned_once_as_the_space_agent() {
    let db = fresh_db("spaces_team").await;
    let admin = db.admin().await;
    let agent_id = format!("default:{SPACE}");
    // Alice creates the mission in the space (the web app stamps spaceId on create).
    Change::new(
        "alice",
        "aiMissions",
        "m-team",
        mission_record(json!({
            "title": "Teamplanung", "objective": "Plane die Aufgaben des Teams für die Woche",
            "agentId": agent_id, "spaceId": SPACE, "nextRunAt": "2026-01-04T06:00:00.000Z",
            "cadence": {"kind": "daily", "atHour": 7, "atMinute": 0}
        })),
    )
    .space(SPACE)
    .push(&admin)
    .await;
    // Bob's device created the space's default agent.
    Change::new(
        "bob",
        "agents",
        &agent_id,
        agent_record(json!({"name": "Team", "role": "Space", "spaceId": SPACE})),
    )
    .space(SPACE)
    .push(&admin)
    .await;
    // Bob resumes the mission: a partial update of `state` and `nextRunAt` only.
    Change::new(
        "bob",
        "aiMissions",
        "m-team",
        json!({"state": "active", "nextRunAt": DUE}),
    )
    .op("update")
    .field_meta(
        json!({"state": "2026-01-05T05:00:00.000Z", "nextRunAt": "2026-01-05T05:00:00.000Z"}),
    )
    .space(SPACE)
    .push(&admin)
    .await;

    let llm = FakeLlm::replying(Reply::text("ok"));
    let r = RunnerBuilder::new(&db)
        .llm(llm.clone())
        .clock(TestClock::at_iso(NOW))
        .config(|c| c.default_agent_max_concurrent = 5)
        .build();
    let stats = r.tick().await;
    assert_eq!(stats.due_mission_count, 1, "{stats:?}");
    assert_eq!(
        (stats.plans_written_back, stats.skipped),
        (1, 0),
        "{stats:?}"
    );
    assert!(stats.errors.is_empty(), "{stats:?}");

    // Planned as the space agent with Alice's objective.
    let requests = llm.requests();
    assert_eq!(requests.len(), 1);
    let system = system_prompt(&requests[0]);
    assert!(system.contains("Name: Team"), "{system}");
    let user = llm.user_prompts()[0].clone();
    assert!(
        user.contains("Plane die Aufgaben des Teams für die Woche"),
        "{user}"
    );

    // Written once, as Alice, into the space, with Bob's nextRunAt served.
    let rows = runner_rows(&admin, "m-team").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>("user_id"), "alice");
    assert_eq!(
        rows[0].get::<_, Option<String>>("space_id").as_deref(),
        Some(SPACE)
    );
    let data: serde_json::Value = rows[0].get("data");
    assert_eq!(data["iterations"].as_array().map(Vec::len), Some(1));
    let actor: serde_json::Value = rows[0].get("actor");
    assert!(actor.to_string().contains(&agent_id), "{actor}");

    // One live snapshot of the mission (Alice's), Bob's partial copy retired.
    let live: i64 = scalar(
        &admin,
        "SELECT count(*) FROM mana_ai.mission_snapshots WHERE mission_id = 'm-team' AND NOT deleted",
    )
    .await;
    assert_eq!(live, 1);
    let owner: String = scalar(
        &admin,
        "SELECT user_id FROM mana_ai.mission_snapshots WHERE mission_id = 'm-team' AND NOT deleted",
    )
    .await;
    assert_eq!(owner, "alice");

    // The next tick folds the runner's own row into the same mission: nothing is due.
    let stats = r.tick().await;
    assert_eq!(stats.due_mission_count, 0, "{stats:?}");
}

#[tokio::test]
async fn personal_missions_with_the_same_id_stay_apart() {
    let db = fresh_db("spaces_personal").await;
    let admin = db.admin().await;
    for user in ["u1", "u2"] {
        Change::new(
            user,
            "aiMissions",
            "same-id",
            mission_record(json!({
                "objective": format!("Ziel von {user}"), "nextRunAt": DUE,
                "cadence": {"kind": "interval", "everyMinutes": 60}
            })),
        )
        .push(&admin)
        .await;
    }
    let llm = FakeLlm::replying(Reply::text("ok"));
    let r = RunnerBuilder::new(&db)
        .llm(llm.clone())
        .clock(TestClock::at_iso(NOW))
        .build();
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 2, "{stats:?}");
    let rows = runner_rows(&admin, "same-id").await;
    assert!(rows
        .iter()
        .all(|r| r.get::<_, Option<String>>("space_id").is_none()));
}
