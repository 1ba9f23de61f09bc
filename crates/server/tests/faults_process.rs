//! Process faults (issue 13, point 3) with the real `mana-ai serve` binary on a real
//! PostgreSQL and a slow fake LLM: the service is killed with SIGKILL while a pass is
//! refreshing, claiming, planning or writing back, then a second runner takes over (a
//! restart: a new process with a new runner id), or two runners serve at once and one of
//! them is killed. In every case every due run is planned exactly once (one iteration row
//! per mission in `sync_changes`, one `written` run), none is lost, and the time from
//! the kill to the last run written is bounded by the mission deadline plus the claim
//! grace plus a few passes.
//!
//! The stage is known without hooks in the binary: the test holds the database lock the
//! stage needs (the per-agent claim lock, the refresh cursor row, the claim rows the
//! write-back updates) and waits until a backend of the service waits on it; planning
//! is seen at the fake LLM. Each scenario prints its row of `docs/reliability.md`.

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Duration as ChronoDuration, Utc};
use mana_ai_core::iso::to_iso_ms;
use mana_ai_core::records::DEFAULT_AGENT_ID;
use mana_ai_store::locks::CLAIM_SEED;
use mana_ai_store::testkit::rows::mission_record;
use mana_ai_store::testkit::{fresh_db, push_mission, Change, TestDb};
use mana_ai_store::RefreshOptions;
use serde_json::json;
use support::{free_port, hold_refresh_cursor, wait_for_lock_waiter};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const BIN: &str = env!("CARGO_BIN_EXE_mana-ai");
const DEADLINE: Duration = Duration::from_millis(3_000);
const GRACE: Duration = Duration::from_millis(1_000);
/// The shortest tick interval the configuration accepts.
const TICK: Duration = Duration::from_millis(1_000);
/// How long the fake model takes to answer.
const LLM_DELAY: Duration = Duration::from_millis(1_500);
/// Slack on top of deadline + grace for the recovery bound: passes, planning, a loaded
/// CI machine.
const SLACK: Duration = Duration::from_secs(10);
const MISSIONS: [(&str, &str); 3] = [("u1", "m1"), ("u2", "m2"), ("u3", "m3")];

/// A fake OpenAI-compatible model that answers after [`LLM_DELAY`] and counts requests
/// as they arrive.
struct SlowLlm {
    server: MockServer,
    calls: Arc<AtomicUsize>,
}

struct Counting {
    calls: Arc<AtomicUsize>,
}

impl Respond for Counting {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.calls.fetch_add(1, Ordering::SeqCst);
        ResponseTemplate::new(200)
            .set_body_json(json!({
                "id": "c1", "object": "chat.completion", "model": "fake",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "Nichts zu tun."}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
            }))
            .set_delay(LLM_DELAY)
    }
}

impl SlowLlm {
    async fn start() -> Self {
        let server = MockServer::start().await;
        let calls = Arc::new(AtomicUsize::new(0));
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(Counting {
                calls: Arc::clone(&calls),
            })
            .mount(&server)
            .await;
        Self { server, calls }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn wait_calls(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.calls() < n {
            assert!(Instant::now() < deadline, "the model was never asked");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A `mana-ai serve` process this test started; killed (SIGKILL) on drop.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Serve {
    fn start(db: &TestDb, llm: &SlowLlm) -> Self {
        let env: BTreeMap<&str, String> = BTreeMap::from([
            ("SYNC_DATABASE_URL", db.service_url.clone()),
            ("MANA_AI_MIGRATION_DATABASE_URL", db.superuser_url.clone()),
            ("MANA_LLM_URL", llm.server.uri()),
            ("MANA_AI_LLM_MAX_ATTEMPTS", "1".into()),
            ("PORT", free_port().to_string()),
            ("MANA_AI_BIND", "127.0.0.1".into()),
            ("TICK_INTERVAL_MS", TICK.as_millis().to_string()),
            (
                "MANA_AI_MISSION_DEADLINE_MS",
                DEADLINE.as_millis().to_string(),
            ),
            ("MANA_AI_CLAIM_GRACE_MS", GRACE.as_millis().to_string()),
            ("MANA_AI_DEFER_BASE_MS", "200".into()),
            ("MANA_AI_DEFER_WAIT_CAP_MS", "500".into()),
            ("MANA_SERVICE_KEY", "faults-test-key".into()),
        ]);
        let child = Command::new(BIN)
            .arg("serve")
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mana-ai serve");
        Serve(child)
    }

    /// `kill -9` of this process (by its handle); answers when it happened.
    fn kill(mut self) -> Instant {
        self.0.kill().expect("SIGKILL");
        let at = Instant::now();
        let _ = self.0.wait();
        at
    }
}

/// Three users' hourly missions, each due ten minutes ago.
async fn seed(db: &TestDb) -> tokio_postgres::Client {
    let admin = db.admin().await;
    let due = to_iso_ms(Utc::now() - ChronoDuration::minutes(10));
    for (user, mission) in MISSIONS {
        let record = mission_record(json!({
            "title": "Plan", "objective": "Propose tasks", "nextRunAt": due,
            "cadence": {"kind": "interval", "everyMinutes": 60}
        }));
        push_mission(&admin, user, mission, record).await;
    }
    admin
}

/// Iteration rows the runner wrote, per mission.
async fn planned(admin: &tokio_postgres::Client) -> BTreeMap<String, i64> {
    admin
        .query(
            "SELECT record_id, count(*) FROM sync_changes
              WHERE client_id = 'mana-ai-runner' AND data ? 'iterations'
              GROUP BY record_id",
            &[],
        )
        .await
        .expect("count iterations")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Waits until every mission has an iteration; answers the time since `from`.
async fn wait_all_planned(admin: &tokio_postgres::Client, from: Instant) -> Duration {
    let limit = DEADLINE + GRACE + SLACK + Duration::from_secs(20);
    loop {
        if planned(admin).await.len() == MISSIONS.len() {
            return from.elapsed();
        }
        assert!(
            from.elapsed() < limit,
            "runs lost: {:?}",
            planned(admin).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// After a few more passes: exactly one iteration and one `written` run per mission,
/// no claim left running.
async fn assert_exactly_once(admin: &tokio_postgres::Client) {
    tokio::time::sleep(TICK * 3).await;
    let want: BTreeMap<String, i64> = MISSIONS.iter().map(|(_, m)| (m.to_string(), 1)).collect();
    assert_eq!(planned(admin).await, want, "duplicates or lost runs");
    let runs: Vec<(String, String)> = admin
        .query(
            "SELECT mission_id, status FROM mana_ai.mission_runs ORDER BY mission_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let written: Vec<(String, String)> = MISSIONS
        .iter()
        .map(|(_, m)| (m.to_string(), "written".to_string()))
        .collect();
    assert_eq!(runs, written);
}

/// The recovery bound: a dead runner's claim ends with its lease (deadline + grace from
/// the claim), then a pass plans and writes the run.
fn assert_recovered_in_time(fault: &str, took: Duration, llm: &SlowLlm) {
    println!(
        "| kill -9 during {fault} | recovered in {:.1} s | model calls {} | iterations 1 per run |",
        took.as_secs_f64(),
        llm.calls()
    );
    assert!(
        took <= DEADLINE + GRACE + LLM_DELAY + SLACK,
        "{fault}: recovery took {took:?}"
    );
}

#[tokio::test]
async fn kill_during_planning_then_restart() {
    let db = fresh_db("fault_plan").await;
    let admin = seed(&db).await;
    let llm = SlowLlm::start().await;
    let a = Serve::start(&db, &llm);
    llm.wait_calls(MISSIONS.len()).await;
    let killed = a.kill();
    let _b = Serve::start(&db, &llm);
    let took = wait_all_planned(&admin, killed).await;
    assert_exactly_once(&admin).await;
    // The dead runner's claims were taken over only after their lease.
    assert!(
        took >= DEADLINE,
        "taken over before the lease ended: {took:?}"
    );
    assert_recovered_in_time("planning", took, &llm);
}

#[tokio::test]
async fn kill_during_claim_then_restart() {
    let db = fresh_db("fault_claim").await;
    let admin = seed(&db).await;
    // m1's claim waits for the per-agent claim lock this session holds.
    let holder = db.admin().await;
    holder
        .execute(
            "SELECT pg_advisory_lock(hashtextextended($1 || chr(31) || $2, $3))",
            &[&"u1", &DEFAULT_AGENT_ID, &CLAIM_SEED],
        )
        .await
        .expect("hold the claim lock");
    let llm = SlowLlm::start().await;
    let a = Serve::start(&db, &llm);
    wait_for_lock_waiter(&admin).await;
    let killed = a.kill();
    drop(holder);
    let _b = Serve::start(&db, &llm);
    let took = wait_all_planned(&admin, killed).await;
    assert_exactly_once(&admin).await;
    assert_recovered_in_time("claim", took, &llm);
}

#[tokio::test]
async fn kill_during_refresh_then_restart() {
    let db = fresh_db("fault_refresh").await;
    let admin = seed(&db).await;
    let opts = RefreshOptions {
        safety_margin: Duration::ZERO,
        ..RefreshOptions::default()
    };
    db.service_store()
        .refresh_snapshots(opts)
        .await
        .expect("first refresh (creates the cursor row)");
    // A device edit for the next refresh to fold, which then waits on the cursor row.
    Change::new("u1", "aiMissions", "m1", json!({"title": "Plan 2"}))
        .op("update")
        .field_meta(json!({"title": "2030-01-01T00:00:00.000Z"}))
        .push(&admin)
        .await;
    let mut holder_conn = db.admin().await;
    let holder = hold_refresh_cursor(&mut holder_conn).await;
    let llm = SlowLlm::start().await;
    let a = Serve::start(&db, &llm);
    wait_for_lock_waiter(&admin).await;
    let killed = a.kill();
    holder.rollback().await.expect("release the cursor");
    let _b = Serve::start(&db, &llm);
    let took = wait_all_planned(&admin, killed).await;
    assert_exactly_once(&admin).await;
    assert_recovered_in_time("refresh", took, &llm);
}

#[tokio::test]
async fn kill_during_write_back_then_restart() {
    let db = fresh_db("fault_write").await;
    let admin = seed(&db).await;
    let llm = SlowLlm::start().await;
    let a = Serve::start(&db, &llm);
    llm.wait_calls(MISSIONS.len()).await;
    // While the model thinks, the test locks every claim: the write-backs wait on them.
    let mut holder_conn = db.admin().await;
    let holder = holder_conn.transaction().await.unwrap();
    let locked = holder
        .query(
            "SELECT 1 FROM mana_ai.mission_runs WHERE status = 'running' FOR UPDATE",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(locked.len(), MISSIONS.len(), "every run is claimed");
    wait_for_lock_waiter(&admin).await;
    let killed = a.kill();
    holder.rollback().await.expect("release the claims");
    let _b = Serve::start(&db, &llm);
    let took = wait_all_planned(&admin, killed).await;
    assert_exactly_once(&admin).await;
    assert_recovered_in_time("write-back", took, &llm);
}

#[tokio::test]
async fn two_runners_one_killed_during_planning() {
    let db = fresh_db("fault_two").await;
    let admin = seed(&db).await;
    let llm = SlowLlm::start().await;
    let a = Serve::start(&db, &llm);
    let _b = Serve::start(&db, &llm);
    llm.wait_calls(1).await;
    let killed = a.kill();
    let took = wait_all_planned(&admin, killed).await;
    assert_exactly_once(&admin).await;
    assert_recovered_in_time("planning, two runners", took, &llm);
}
