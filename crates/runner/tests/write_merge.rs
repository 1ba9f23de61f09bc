//! Issue 12.4–12.6 through a whole pass, on real PostgreSQL: a device edit made during a
//! slow planning call survives the write-back; the written history is bounded; text that
//! enters the prompt and text a model writes are bounded (a 5 MB tool argument never
//! reaches the row).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use mana_ai_core::iso::to_iso_ms;
use mana_ai_core::limits::{OBJECTIVE_MAX_CHARS, TITLE_MAX_CHARS};
use mana_ai_core::plan::iteration_id_for;
use mana_ai_runner::testkit::{metric_value, FakeLlm, Reply, RunnerBuilder};
use mana_ai_store::testkit::rows::{merged_mission, mission_record, runner_data};
use mana_ai_store::testkit::{fresh_db, push_mission, Change};
use serde_json::{json, Value};

const USER: &str = "u1";
const DUE: &str = "2026-01-05T06:00:00.000Z";

fn mission(iterations: Vec<Value>) -> Value {
    mission_record(json!({
        "title": "Wochenplan", "objective": "Plane den Tag", "nextRunAt": DUE,
        "cadence": {"kind": "interval", "everyMinutes": 60}, "iterations": iterations
    }))
}

fn server_iteration(id: &str, overall: &str, step: &str) -> Value {
    json!({"id": id, "source": "server", "overallStatus": overall,
           "startedAt": "2026-01-04T06:00:00.000Z", "summary": "vorher",
           "plan": [{"id": format!("{id}-0"), "summary": "Einkaufen", "status": step,
                     "intent": {"kind": "toolCall", "toolName": "create_task",
                                "params": {"title": "Einkaufen"}}}]})
}

fn ids(iterations: &Value) -> Vec<String> {
    iterations
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[tokio::test]
async fn a_device_edit_during_a_two_second_planning_call_survives() {
    let db = fresh_db("merge_device_edit").await;
    let admin = db.admin().await;
    let earlier = server_iteration("earlier", "awaiting-review", "planned");
    push_mission(&admin, USER, "m1", mission(vec![earlier.clone()])).await;
    // The first call takes 2 s; the device acts meanwhile.
    let llm = FakeLlm::script(vec![
        Reply::tool_calls(&[("create_task", json!({"title": "Wäsche"}))])
            .delay(Duration::from_secs(2)),
        Reply::text("Wäsche vorgeschlagen."),
    ]);
    let runner = RunnerBuilder::new(&db).llm(llm).build_arc();
    let pass = tokio::spawn({
        let runner = Arc::clone(&runner);
        async move { runner.tick().await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The device executed the earlier step and left feedback (whole array, fresh stamp).
    let mut edited = earlier.clone();
    edited["plan"][0]["status"] = json!("approved");
    edited["overallStatus"] = json!("approved");
    edited["userFeedback"] = json!("Passt, danke");
    Change::new(USER, "aiMissions", "m1", json!({"iterations": [edited]}))
        .op("update")
        .field_meta(json!({"iterations": to_iso_ms(Utc::now())}))
        .push(&admin)
        .await;
    let stats = pass.await.expect("pass task");
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    let rendered = runner.metrics().render();
    let path = |p: &str| metric_value(&rendered, "mana_ai_write_backs_total", &[("path", p)]);
    assert_eq!(
        (path("merged"), path("direct")),
        (Some(1.0), None),
        "the edit sent the write-back through the merge, and the metric says so"
    );

    let merged = merged_mission(&admin, USER, "m1").await.expect("mission");
    let iterations = merged["iterations"].as_array().unwrap();
    assert_eq!(
        ids(&merged["iterations"]),
        ["earlier", &iteration_id_for("m1", DUE)]
    );
    assert_eq!(iterations[0], edited, "the device's edit is intact");
    assert_eq!(
        iterations[0]["plan"][0]["status"], "approved",
        "not reverted to planned"
    );
    assert_eq!(iterations[1]["plan"][0]["status"], "planned");
    assert_eq!(
        iterations[1]["plan"][0]["intent"]["params"]["title"],
        "Wäsche"
    );
}

#[tokio::test]
async fn the_written_history_keeps_the_configured_number_and_unfinished_ones() {
    let db = fresh_db("merge_history").await;
    let admin = db.admin().await;
    let filler = "x".repeat(1_900);
    let mut history: Vec<Value> = (0..400)
        .map(|i| {
            let mut it = server_iteration(&format!("i{i}"), "approved", "approved");
            it["summary"] = json!(filler);
            it
        })
        .collect();
    history[10]["plan"][0]["status"] = json!("planned");
    history[20]["overallStatus"] = json!("running");
    push_mission(&admin, USER, "m1", mission(history)).await;
    let runner = RunnerBuilder::new(&db)
        .llm(FakeLlm::replying(Reply::text("nichts zu tun")))
        .config(|c| c.iteration_history = 10)
        .build();
    let stats = runner.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    let data = runner_data(&admin, "m1").await.remove(0);
    let kept = ids(&data["iterations"]);
    assert_eq!(kept.len(), 10, "{kept:?}");
    assert_eq!(&kept[..3], ["i10", "i20", "i393"]);
    assert_eq!(kept[9], iteration_id_for("m1", DUE));
    assert!(data.to_string().len() < 40_000);
}

#[tokio::test]
async fn a_five_megabyte_tool_argument_never_reaches_the_row() {
    let db = fresh_db("merge_huge_arg").await;
    let admin = db.admin().await;
    push_mission(&admin, USER, "m1", mission(vec![])).await;
    let huge = "A".repeat(5 * 1024 * 1024);
    let llm = FakeLlm::script(vec![
        Reply::tool_calls(&[("create_task", json!({"title": huge}))]),
        Reply::tool_calls(&[("create_task", json!({"title": "kurz"}))]),
        Reply::text("fertig"),
    ]);
    let runner = RunnerBuilder::new(&db).llm(llm.clone()).build();
    let stats = runner.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    let data = runner_data(&admin, "m1").await.remove(0);
    let bytes = data.to_string().len();
    assert!(bytes < 8_192, "{bytes} bytes");
    let steps = data["iterations"][0]["plan"].as_array().unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0]["intent"]["params"]["title"], "kurz");
    // The model was told, and the huge call was not sent back to it.
    let second = &llm.requests()[1];
    let sent = serde_json::to_string(&second.messages).unwrap();
    assert!(
        sent.contains("too_large") && sent.len() < 100_000,
        "{}",
        sent.len()
    );
}

#[tokio::test]
async fn prompt_inputs_are_bounded() {
    let db = fresh_db("merge_prompt").await;
    let admin = db.admin().await;
    let mut record = mission(vec![json!({
        "id": "old", "overallStatus": "approved", "plan": [],
        "summary": "s".repeat(100_000), "userFeedback": "f".repeat(100_000)
    })]);
    record["title"] = json!("T".repeat(100_000));
    record["objective"] = json!("O".repeat(100_000));
    record["conceptMarkdown"] = json!("C".repeat(100_000));
    push_mission(&admin, USER, "m1", record).await;
    let llm = FakeLlm::replying(Reply::text("ok"));
    let runner = RunnerBuilder::new(&db).llm(llm.clone()).build();
    let stats = runner.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    let prompt = &llm.user_prompts()[0];
    assert!(prompt.len() < 30_000, "{} chars", prompt.len());
    assert!(prompt.contains(&"T".repeat(TITLE_MAX_CHARS - 1)));
    assert!(!prompt.contains(&"T".repeat(TITLE_MAX_CHARS)));
    assert!(prompt.contains(&"O".repeat(OBJECTIVE_MAX_CHARS - 1)));
    assert!(!prompt.contains(&"O".repeat(OBJECTIVE_MAX_CHARS)));
    // The actor's rationale (the objective) is bounded in the row too.
    let rows = mana_ai_store::testkit::rows::runner_rows(&admin, "m1").await;
    let actor: Value = rows[0].get("actor");
    assert_eq!(
        actor["rationale"].as_str().unwrap().chars().count(),
        OBJECTIVE_MAX_CHARS
    );
}
