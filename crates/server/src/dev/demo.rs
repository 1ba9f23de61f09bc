//! The demo data of `mana-ai dev --demo`: one user's agent, goal and due mission shaped
//! like the web app's records, seeded as change rows through
//! [`mana_ai_store::dev`], and the demo pass (one tick, then the new iteration as text).

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Timelike, Utc};
use mana_ai_core::chat::LlmClient;
use mana_ai_runner::Metrics;
use mana_ai_store::dev::{SeedOrigin, SeedRecord};
use mana_ai_store::{RefreshOptions, Store, StoreConfig};
use serde_json::{json, Value};

use super::{
    db_err, DevError, DEMO_AGENT_ID, DEMO_CLIENT_ID, DEMO_GOAL_ID, DEMO_MISSION_ID, DEMO_SPACE_ID,
    DEMO_USER,
};
use crate::config::{Config, LlmBackend};

/// `--demo`: one tick now, then the demo mission's newest iteration as text.
pub async fn demo_pass(cfg: &Config, llm: Arc<dyn LlmClient>) -> anyhow::Result<String> {
    println!(
        "mana-ai dev: planning the demo mission with the {} model (one tick)…",
        match cfg.llm_backend {
            LlmBackend::Local => "local",
            LlmBackend::Http => "configured",
        }
    );
    crate::app::migrate(cfg).await.context("schema migration")?;
    let store = crate::app::store_for(cfg)?;
    store
        .verify_discovery()
        .await
        .context("checking change discovery")?;
    let runner = crate::app::runner_with_llm(cfg, store.clone(), Metrics::new(), llm)?;
    // The refresh folds in only rows older than its safety margin: the demo rows were
    // seeded moments ago, so the tick waits until they are (else it finds nothing due).
    let opts = RefreshOptions::default();
    let margin = opts
        .safety_margin
        .max(mana_ai_runner::defaults::REFRESH_SAFETY_MARGIN);
    let settle = margin + std::time::Duration::from_millis(50);
    tokio::time::sleep(settle).await;
    let stats = runner.tick().await;
    // The tick's refresh ran before the plan was written; one more refresh projects it
    // once the row is older than the refresh's safety margin.
    tokio::time::sleep(settle).await;
    store
        .refresh_snapshots(opts)
        .await
        .context("refreshing after the demo tick")?;
    let missions = store
        .user_missions(DEMO_USER)
        .await
        .context("reading the demo mission")?;
    store.close();
    let mission = missions.iter().find(|m| m.mission_id == DEMO_MISSION_ID);
    Ok(demo_report(
        &stats.errors,
        stats.duration_ms,
        mission.map(|m| &m.record),
        &super::banner::http_base(cfg.bind, cfg.port),
    ))
}

/// Text for the demo pass: the newest iteration's steps (tool names, arguments), or why
/// there is none, and where to look next.
pub fn demo_report(
    errors: &[String],
    duration_ms: u64,
    mission: Option<&Value>,
    base: &str,
) -> String {
    let mut out = String::new();
    let iteration = mission
        .and_then(|m| m.get("iterations"))
        .and_then(Value::as_array)
        .and_then(|its| its.last());
    match iteration {
        None => {
            let _ = writeln!(
                out,
                "demo: the tick ({duration_ms} ms) wrote no iteration for {DEMO_MISSION_ID}"
            );
            for e in errors {
                let _ = writeln!(out, "   error      {e}");
            }
        }
        Some(it) => write_iteration(&mut out, it, duration_ms),
    }
    let _ = writeln!(
        out,
        "   next       curl -H 'X-Service-Key: $MANA_SERVICE_KEY' {base}/internal/missions/{DEMO_USER}"
    );
    let _ = write!(out, "              curl {base}/metrics");
    out
}

/// The iteration part of [`demo_report`]: status, summary, one line per step, errors.
fn write_iteration(out: &mut String, it: &Value, duration_ms: u64) {
    let status = it
        .get("overallStatus")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let _ = writeln!(
        out,
        "demo: tick took {duration_ms} ms; iteration {} of {DEMO_MISSION_ID}: {status}",
        it.get("id").and_then(Value::as_str).unwrap_or("?")
    );
    if let Some(summary) = it.get("summary").and_then(Value::as_str) {
        if !summary.is_empty() {
            let _ = writeln!(out, "   summary    {summary}");
        }
    }
    let steps = it
        .get("plan")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, step) in steps.iter().enumerate() {
        let intent = step.get("intent").cloned().unwrap_or(Value::Null);
        let _ = writeln!(
            out,
            "   step {}     {} {}",
            i + 1,
            intent
                .get("toolName")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            intent.get("params").cloned().unwrap_or(Value::Null)
        );
    }
    if let Some(details) = it.get("errorDetails") {
        let _ = writeln!(out, "   error      {details}");
    }
}

/// One demo record: where it goes and its JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoRecord {
    pub app_id: &'static str,
    pub table_name: &'static str,
    pub record_id: &'static str,
    pub kind: &'static str,
    pub data: Value,
}

/// The demo agent, goal and mission as the web app would push them on create, stamped
/// with `now` (the mission is due at `now`).
pub fn demo_records(now: DateTime<Utc>) -> Vec<DemoRecord> {
    let at = mana_ai_core::iso::to_iso_ms(now);
    let day_start = now
        .with_hour(0)
        .and_then(|t| t.with_minute(0))
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now);
    let day_start = mana_ai_core::iso::to_iso_ms(day_start);
    vec![
        DemoRecord {
            app_id: "ai",
            table_name: "agents",
            record_id: DEMO_AGENT_ID,
            kind: "agent",
            data: demo_agent(&at),
        },
        DemoRecord {
            app_id: "companion",
            table_name: "companionGoals",
            record_id: DEMO_GOAL_ID,
            kind: "goal",
            data: demo_goal(&at, &day_start),
        },
        DemoRecord {
            app_id: "ai",
            table_name: "aiMissions",
            record_id: DEMO_MISSION_ID,
            kind: "mission",
            data: demo_mission(&at),
        },
    ]
}

/// The demo agent (`ai/agents`).
fn demo_agent(at: &str) -> Value {
    json!({
        "id": DEMO_AGENT_ID,
        "createdAt": at,
        "updatedAt": at,
        "name": "Mana Demo",
        "avatar": "🗓️",
        "role": "Daily planner: turns your goals into a short, realistic plan for today.",
        "policy": {"tools": {}, "defaultsByModule": {}, "defaultForAi": "propose"},
        "maxTokensPerDay": 50000,
        "maxConcurrentMissions": 1,
        "state": "active",
        "spaceId": DEMO_SPACE_ID,
        "authorId": DEMO_USER,
        "visibility": "space",
    })
}

/// The demo goal (`companion/companionGoals`), with progress counted since `day_start`.
fn demo_goal(at: &str, day_start: &str) -> Value {
    json!({
        "id": DEMO_GOAL_ID,
        "title": "Finish three focused tasks a day",
        "description": "Small steady progress beats heroic days.",
        "metric": {"source": "event_count", "eventType": "TaskCompleted"},
        "target": {"value": 3, "period": "day", "comparison": "gte"},
        "moduleId": "todo",
        "status": "active",
        "currentValue": 1,
        "currentPeriodStart": day_start,
        "createdAt": at,
        "updatedAt": at,
        "spaceId": DEMO_SPACE_ID,
        "authorId": DEMO_USER,
        "visibility": "space",
    })
}

/// The demo mission (`ai/aiMissions`), due at `at`.
fn demo_mission(at: &str) -> Value {
    json!({
        "id": DEMO_MISSION_ID,
        "createdAt": at,
        "updatedAt": at,
        "title": "Plan today's tasks",
        "objective": "Propose at most three concrete tasks for today that move the goal \"Finish three focused tasks a day\" forward, given today's progress.",
        "conceptMarkdown": "## Plan today\n\nEvery morning, look at the goal and its progress so far, then propose a short list of tasks for today:\n\n- at most three tasks, each doable in one focused block;\n- prefer tasks that close something rather than start something new;\n- if the goal is already met today, propose nothing and say so.\n",
        "inputs": [{"module": "goals", "table": "companionGoals", "id": DEMO_GOAL_ID}],
        "cadence": {"kind": "daily", "atHour": 7, "atMinute": 0},
        "state": "active",
        "nextRunAt": at,
        "iterations": [],
        "agentId": DEMO_AGENT_ID,
        "spaceId": DEMO_SPACE_ID,
        "authorId": DEMO_USER,
        "visibility": "space",
    })
}

/// The actor the web app attaches to a signed-in user's own writes.
fn demo_actor() -> Value {
    json!({"kind": "user", "principalId": DEMO_USER, "displayName": "Du"})
}

/// What [`seed_demo`] did, per record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// `(kind, record id)` of rows inserted now.
    pub inserted: Vec<(&'static str, &'static str)>,
    /// `(kind, record id)` of records that already had rows (left untouched).
    pub existing: Vec<(&'static str, &'static str)>,
}

/// Inserts the demo records as `insert` rows of [`DEMO_USER`], skipping every record that
/// already has a row (any op): idempotent, and it never overwrites later edits.
/// `superuser_url` is the cluster superuser's URL of the dev database (the service role
/// has no grants before the first migration).
pub async fn seed_demo(superuser_url: &str, now: DateTime<Utc>) -> Result<SeedReport, DevError> {
    let mut sc = StoreConfig::new(superuser_url);
    sc.max_connections = 1;
    let store =
        Store::connect(&sc).map_err(db_err("connecting to mana_sync as the cluster superuser"))?;
    let records = demo_records(now);
    let actor = demo_actor();
    let origin = SeedOrigin {
        client_id: DEMO_CLIENT_ID,
        actor: &actor,
        space_id: DEMO_SPACE_ID,
    };
    let rows: Vec<SeedRecord<'_>> = records
        .iter()
        .map(|r| SeedRecord {
            app_id: r.app_id,
            table_name: r.table_name,
            record_id: r.record_id,
            data: &r.data,
        })
        .collect();
    let inserted = mana_ai_store::dev::seed_records(&store, DEMO_USER, &origin, &rows).await;
    store.close();
    let inserted = inserted.map_err(db_err("seeding the demo rows"))?;
    let mut report = SeedReport::default();
    for (rec, new) in records.iter().zip(inserted) {
        let entry = (rec.kind, rec.record_id);
        if new {
            report.inserted.push(entry);
        } else {
            report.existing.push(entry);
        }
    }
    Ok(report)
}
