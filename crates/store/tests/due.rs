//! Real PostgreSQL, as the least-privilege service role: the fair due listing
//! (round-robin by user on both of its paths), deferrals that hold until `not_before`
//! unless the mission or its agent changed, and the schedule heal's guards.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use mana_ai_core::iso::to_iso_ms;
use mana_ai_store::testkit::rows::{agent_record, mission_record};
use mana_ai_store::testkit::{fresh_db, push_agent, push_mission, Change};
use mana_ai_store::{
    AgentSlot, Claim, ClaimRequest, Deferral, Heal, RefreshOptions, ScheduleHeal, SeenVersions,
    Store,
};
use serde_json::json;

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 6, minute, 0)
        .single()
        .expect("valid instant")
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).single().unwrap()
}

async fn refresh(store: &Store) {
    let opts = RefreshOptions {
        safety_margin: Duration::ZERO,
        ..RefreshOptions::default()
    };
    store.refresh_snapshots(opts).await.expect("refresh");
}

fn mission(minute: u32, agent: Option<&str>) -> serde_json::Value {
    let mut m = mission_record(json!({
        "nextRunAt": to_iso_ms(at(minute)), "cadence": {"kind": "interval", "everyMinutes": 60}
    }));
    if let Some(a) = agent {
        m["agentId"] = json!(a);
    }
    m
}

async fn listed(store: &Store, limit: i64) -> Vec<String> {
    store
        .list_due_keys(now(), limit)
        .await
        .expect("list")
        .into_iter()
        .map(|k| k.mission_id)
        .collect()
}

#[tokio::test]
async fn the_listing_is_round_robin_by_user_on_both_paths() {
    let db = fresh_db("due_fair").await;
    let (store, admin) = (db.service_store(), db.admin().await);
    for (user, id, minute) in [
        ("a", "a1", 1),
        ("a", "a2", 2),
        ("a", "a3", 3),
        ("a", "a4", 4),
        ("b", "b1", 5),
        ("c", "c1", 6),
        ("b", "b2", 7),
    ] {
        push_mission(&admin, user, id, mission(minute, None)).await;
    }
    refresh(&store).await;
    // Everything fits: the cheap path, in the fair order.
    assert_eq!(
        listed(&store, 10).await,
        ["a1", "b1", "c1", "a2", "b2", "a3", "a4"]
    );
    // Exactly fits (the edge of the cheap path).
    assert_eq!(listed(&store, 7).await.len(), 7);
    // More due than fit: the window listing keeps every user's oldest.
    assert_eq!(listed(&store, 3).await, ["a1", "b1", "c1"]);
    assert_eq!(listed(&store, 5).await, ["a1", "b1", "c1", "a2", "b2"]);
    assert_eq!(listed(&store, 0).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_deferral_holds_until_its_time_or_a_change_of_mission_or_agent() {
    let db = fresh_db("due_defer").await;
    let (store, admin) = (db.service_store(), db.admin().await);
    push_agent(&admin, "u", "ag", agent_record(json!({"state": "paused"}))).await;
    push_mission(&admin, "u", "m1", mission(1, Some("ag"))).await;
    push_mission(&admin, "u", "m2", mission(2, None)).await;
    refresh(&store).await;
    let m1 = store.user_missions("u").await.unwrap()[0].updated_at;
    let agent = store.agent("u", "ag").await.unwrap().unwrap().updated_at;
    let defer = |mission_id: &'static str, seen: Option<SeenVersions>| Deferral {
        user_id: "u",
        mission_id,
        due_at: at(1),
        reason: "skipped-paused",
        now: now(),
        base: Duration::from_secs(30),
        cap: Duration::from_secs(45),
        seen,
    };
    let seen = SeenVersions {
        mission: m1,
        agent: Some(("ag".into(), Some(agent))),
    };
    let d = store
        .defer_mission(&defer("m1", Some(seen.clone())))
        .await
        .unwrap();
    assert_eq!(
        (d.attempts, d.not_before),
        (1, now() + chrono::Duration::seconds(30))
    );
    // The cap bounds the doubling: 30 s, then 45 s instead of 60 s.
    let d = store
        .defer_mission(&defer("m1", Some(seen.clone())))
        .await
        .unwrap();
    assert_eq!(
        (d.attempts, d.not_before),
        (2, now() + chrono::Duration::seconds(45))
    );
    // An error deferral (no versions) of m2 holds whatever changes.
    store.defer_mission(&defer("m2", None)).await.unwrap();
    assert_eq!(listed(&store, 10).await, Vec::<String>::new());
    // Past not_before both are listed again.
    let later = now() + chrono::Duration::seconds(46);
    assert_eq!(store.list_due_keys(later, 10).await.unwrap().len(), 2);
    // The agent changes: m1's deferral lapses; m2's stays.
    Change::new("u", "agents", "ag", json!({"state": "active"}))
        .op("update")
        .field_meta(json!({"state": "2030-01-01T00:00:00.000Z"}))
        .push(&admin)
        .await;
    refresh(&store).await;
    assert_eq!(listed(&store, 10).await, ["m1"]);
    // A deferral that saw the new agent holds again, until the mission changes.
    let agent = store.agent("u", "ag").await.unwrap().unwrap().updated_at;
    let seen = SeenVersions {
        mission: m1,
        agent: Some(("ag".into(), Some(agent))),
    };
    store.defer_mission(&defer("m1", Some(seen))).await.unwrap();
    assert_eq!(listed(&store, 10).await, Vec::<String>::new());
    Change::new("u", "aiMissions", "m1", json!({"title": "neu"}))
        .op("update")
        .field_meta(json!({"title": "2030-01-01T00:00:00.000Z"}))
        .push(&admin)
        .await;
    refresh(&store).await;
    assert_eq!(listed(&store, 10).await, ["m1"]);
}

#[tokio::test]
async fn the_heal_writes_only_for_a_finished_run_the_refresh_has_seen() {
    let db = fresh_db("due_heal").await;
    let (store, admin) = (db.service_store(), db.admin().await);
    push_mission(&admin, "u", "m1", mission(1, None)).await;
    refresh(&store).await;
    let (data, meta) = (json!({"nextRunAt": "x"}), json!({"nextRunAt": "y"}));
    let actor = json!({"kind": "ai"});
    let heal = ScheduleHeal {
        user_id: "u",
        mission_id: "m1",
        due_at: at(1),
        data: &data,
        field_meta: &meta,
        actor: &actor,
    };
    // No run at all, then a run still running: nothing to heal.
    assert_eq!(store.heal_schedule(&heal).await.unwrap(), Heal::NotStuck);
    let claim = ClaimRequest {
        user_id: "u",
        mission_id: "m1",
        due_at: at(1),
        iteration_id: "it-1",
        runner_id: "r1",
        lease: Duration::from_secs(60),
        slot: AgentSlot {
            agent_id: mana_ai_core::records::DEFAULT_AGENT_ID.into(),
            max_concurrent: 1,
        },
    };
    assert_eq!(store.claim_run(&claim).await.unwrap(), Claim::Claimed);
    assert_eq!(store.heal_schedule(&heal).await.unwrap(), Heal::NotStuck);
    // Finished, but the refresh has not folded its write-back yet: not stuck (a lag).
    // The write-back leaves `nextRunAt` at the served time (as a device re-stamp would).
    let iteration = json!({"id": "it-1", "overallStatus": "awaiting-review", "plan": []});
    let written = mana_ai_store::testkit::rows::written_run(
        ("u", "m1", at(1)),
        "r1",
        &iteration,
        Some(at(1)),
        &actor,
    );
    store.write_back(&written).await.unwrap();
    assert_eq!(store.heal_schedule(&heal).await.unwrap(), Heal::NotStuck);
    // Folded, still due at the served time: healed once.
    refresh(&store).await;
    assert_eq!(store.heal_schedule(&heal).await.unwrap(), Heal::Written);
    assert_eq!(
        store.heal_schedule(&heal).await.unwrap(),
        Heal::AlreadyHealed
    );
}
