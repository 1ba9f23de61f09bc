//! Real PostgreSQL, as the least-privilege service role: the one-statement claim
//! (`mana_ai.claim_run`) and write-back (`mana_ai.write_back_run`) keep their rules —
//! exactly one claim per due run under races, per-agent slots, oldest due first,
//! takeover of expired claims — and the write-back lands once, RLS-scoped.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use mana_ai_store::testkit::rows::{first_column, run_statuses, runner_row_count, written_run};
use mana_ai_store::testkit::{fresh_db, TestDb, SERVICE_ROLE};
use mana_ai_store::{schema, AgentSlot, Claim, ClaimRequest, Store, StoreError, WriteOutcome};
use serde_json::json;

const USER: &str = "user-a";
const AGENT: &str = "agent-1";

fn due(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 6, minute, 0)
        .single()
        .expect("valid instant")
}

fn slot(max: i64) -> AgentSlot {
    AgentSlot {
        agent_id: AGENT.into(),
        max_concurrent: max,
    }
}

struct Req {
    mission: String,
    due_at: DateTime<Utc>,
    runner: String,
    lease: Duration,
    max: i64,
}

impl Req {
    fn new(mission: &str, due_at: DateTime<Utc>, runner: &str) -> Self {
        Self {
            mission: mission.into(),
            due_at,
            runner: runner.into(),
            lease: Duration::from_secs(300),
            max: 5,
        }
    }
}

async fn claim(store: &Store, r: &Req) -> Claim {
    let iteration = format!("it-{}-{}", r.mission, r.due_at.timestamp());
    store
        .claim_run(&ClaimRequest {
            user_id: USER,
            mission_id: &r.mission,
            due_at: r.due_at,
            iteration_id: &iteration,
            runner_id: &r.runner,
            lease: r.lease,
            slot: slot(r.max),
        })
        .await
        .expect("claim")
}

async fn write(store: &Store, mission: &str, due_at: DateTime<Utc>, runner: &str) -> WriteOutcome {
    let iteration = json!({"id": "x", "plan": []});
    let actor = json!({"kind": "ai", "principalId": AGENT});
    store
        .write_back(&written_run(
            (USER, mission, due_at),
            runner,
            &iteration,
            None,
            &actor,
        ))
        .await
        .expect("write-back")
}

async fn iteration_rows(admin: &tokio_postgres::Client, mission: &str) -> i64 {
    runner_row_count(admin, Some(mission)).await
}

/// Claims `m-1`'s run due at minute 0 as `runner-a` and writes it back.
async fn claim_and_write(store: &Store) {
    assert_eq!(
        claim(store, &Req::new("m-1", due(0), "runner-a")).await,
        Claim::Claimed
    );
    assert_eq!(
        write(store, "m-1", due(0), "runner-a").await,
        WriteOutcome::Written
    );
}

/// A due mission snapshot of `AGENT` (what the oldest-first rule looks at).
async fn due_snapshot(admin: &tokio_postgres::Client, mission: &str, due_at: DateTime<Utc>) {
    admin
        .execute(
            "INSERT INTO mana_ai.mission_snapshots
                 (user_id, mission_id, record, state, next_run_at, agent_id)
             VALUES ($1, $2, '{}', 'active', $3, $4)",
            &[&USER, &mission, &due_at, &AGENT],
        )
        .await
        .expect("insert snapshot");
}

async fn setup(prefix: &str) -> (TestDb, Store, Store, tokio_postgres::Client) {
    let db = fresh_db(prefix).await;
    let (a, b) = (db.service_store(), db.service_store());
    let admin = db.admin().await;
    (db, a, b, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claims_of_one_due_run_yield_exactly_one_winner() {
    let (_db, a, b, _admin) = setup("runs_race").await;
    for i in 0..20u32 {
        let mission = format!("m-{i}");
        // Enough slots for every round's winner: only the per-run rule is under test.
        let mut ra = Req::new(&mission, due(0), "runner-a");
        let mut rb = Req::new(&mission, due(0), "runner-b");
        ra.max = 100;
        rb.max = 100;
        let (x, y) = tokio::join!(claim(&a, &ra), claim(&b, &rb));
        let mut got = [x, y];
        got.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(
            got,
            [Claim::Claimed, Claim::HeldElsewhere],
            "round {i}: exactly one runner wins"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claims_never_exceed_the_agent_slots() {
    let (_db, a, b, _admin) = setup("runs_slots").await;
    // Six different missions of one agent with two slots, claimed by two runners at once.
    let reqs: Vec<Req> = (0..6)
        .map(|i| {
            let mut r = Req::new(
                &format!("m-{i}"),
                due(0),
                if i % 2 == 0 { "runner-a" } else { "runner-b" },
            );
            r.max = 2;
            r
        })
        .collect();
    let claims = futures::future::join_all(
        reqs.iter()
            .enumerate()
            .map(|(i, r)| claim(if i % 2 == 0 { &a } else { &b }, r)),
    )
    .await;
    let won = claims.iter().filter(|c| **c == Claim::Claimed).count();
    let busy = claims.iter().filter(|c| **c == Claim::AgentBusy).count();
    assert_eq!((won, busy), (2, 4), "{claims:?}");

    // A finished run frees its slot; the next claim gets it, the one after does not.
    let winner = reqs
        .iter()
        .zip(&claims)
        .find(|(_, c)| **c == Claim::Claimed)
        .map(|(r, _)| r)
        .expect("a winner");
    let store = if winner.runner == "runner-a" { &a } else { &b };
    assert_eq!(
        write(store, &winner.mission, winner.due_at, &winner.runner).await,
        WriteOutcome::Written
    );
    let losers: Vec<&Req> = reqs
        .iter()
        .zip(&claims)
        .filter(|(_, c)| **c == Claim::AgentBusy)
        .map(|(r, _)| r)
        .collect();
    assert_eq!(claim(&a, losers[0]).await, Claim::Claimed);
    assert_eq!(claim(&a, losers[1]).await, Claim::AgentBusy);
    // The finished run itself is done, whoever asks.
    assert_eq!(claim(&b, winner).await, Claim::AlreadyDone);
}

#[tokio::test]
async fn a_free_slot_goes_to_the_oldest_waiting_due_run() {
    let (_db, a, _b, admin) = setup("runs_oldest").await;
    due_snapshot(&admin, "m-old", due(0)).await;
    due_snapshot(&admin, "m-new", due(30)).await;
    let mut newer = Req::new("m-new", due(30), "runner-a");
    newer.max = 1;
    let mut older = Req::new("m-old", due(0), "runner-a");
    older.max = 1;
    assert_eq!(
        claim(&a, &newer).await,
        Claim::AgentBusy,
        "an older due run of the agent waits"
    );
    assert_eq!(claim(&a, &older).await, Claim::Claimed);
    assert_eq!(
        claim(&a, &newer).await,
        Claim::AgentBusy,
        "the only slot is taken"
    );
    assert_eq!(
        write(&a, "m-old", due(0), "runner-a").await,
        WriteOutcome::Written
    );
    assert_eq!(
        claim(&a, &newer).await,
        Claim::Claimed,
        "the older run is done: the newer one may run"
    );

    // With two slots, one older waiting run still leaves a slot for the next.
    due_snapshot(&admin, "m-2a", due(40)).await;
    due_snapshot(&admin, "m-2b", due(50)).await;
    let mut later = Req::new("m-2b", due(50), "runner-a");
    later.max = 3;
    assert_eq!(
        claim(&a, &later).await,
        Claim::Claimed,
        "1 in flight, 1 older waiting, 3 slots"
    );
}

#[tokio::test]
async fn expired_claims_are_taken_over_and_the_old_owner_writes_nothing() {
    let (_db, a, b, admin) = setup("runs_takeover").await;
    let mut first = Req::new("m-1", due(0), "runner-a");
    first.lease = Duration::ZERO;
    assert_eq!(claim(&a, &first).await, Claim::Claimed);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = Req::new("m-1", due(0), "runner-b");
    assert_eq!(
        claim(&b, &second).await,
        Claim::Claimed,
        "expired lease: taken over"
    );
    // Runner b's unexpired claim: a may not take it, b may renew it.
    assert_eq!(claim(&a, &first).await, Claim::HeldElsewhere);
    assert_eq!(claim(&b, &second).await, Claim::Claimed);

    assert_eq!(
        write(&a, "m-1", due(0), "runner-a").await,
        WriteOutcome::ClaimLost
    );
    assert_eq!(iteration_rows(&admin, "m-1").await, 0);
    assert_eq!(
        write(&b, "m-1", due(0), "runner-b").await,
        WriteOutcome::Written
    );
    assert_eq!(
        write(&b, "m-1", due(0), "runner-b").await,
        WriteOutcome::ClaimLost,
        "a closed run is never written twice"
    );
    assert_eq!(iteration_rows(&admin, "m-1").await, 1);
    let row = admin
        .query_one(
            "SELECT user_id, app_id, table_name, op, origin, schema_version, actor->>'principalId'
               FROM sync_changes WHERE record_id = 'm-1'",
            &[],
        )
        .await
        .expect("row");
    assert_eq!(row.get::<_, String>(0), USER);
    assert_eq!(row.get::<_, String>(1), "ai");
    assert_eq!(row.get::<_, String>(2), "aiMissions");
    assert_eq!(row.get::<_, String>(3), "update");
    assert_eq!(row.get::<_, String>(4), "agent");
    assert_eq!(row.get::<_, i32>(5), 1);
    assert_eq!(row.get::<_, String>(6), AGENT);
    let status = run_statuses(&admin, "m-1").await.remove(0);
    assert_eq!(status, "written");
}

#[tokio::test]
async fn write_back_is_rls_scoped_and_refuses_an_empty_user() {
    let (db, a, _b, admin) = setup("runs_rls").await;
    let iteration = json!({"id": "x", "plan": []});
    let actor = json!({});
    let wb = written_run(("", "m-1", due(0)), "runner-a", &iteration, None, &actor);
    assert!(matches!(
        a.write_back(&wb).await,
        Err(StoreError::Refused(_))
    ));
    // The function itself refuses an empty user, and its insert cannot pass the RLS
    // check for another user than the one it scoped itself to.
    let svc = db.service_client().await;
    let err = svc
        .query_one(
            "SELECT mana_ai.write_back_run('', 'm', now(), 'r', 'written', NULL, '{}', '{}', '{}', 'x')",
            &[],
        )
        .await
        .expect_err("empty user refused");
    assert_eq!(
        err.as_db_error().map(|d| d.message()),
        Some("withUser: empty userID")
    );
    // A cross-user write: another user's id on this user's claimed run. The function
    // scopes itself to that other user, finds no run of theirs and writes nothing; the
    // claim stays with its owner.
    assert_eq!(
        claim(&a, &Req::new("m-1", due(0), "runner-a")).await,
        Claim::Claimed
    );
    let wrote: bool = svc
        .query_one(
            "SELECT mana_ai.write_back_run('user-b', 'm-1', $1, 'runner-a', 'written', NULL,
                                           '{}', '{}', '{}', 'mana-ai-runner')",
            &[&due(0)],
        )
        .await
        .expect("cross-user write answered")
        .get(0);
    assert!(!wrote, "a cross-user write is refused");
    assert_eq!(iteration_rows(&admin, "m-1").await, 0);
    assert_eq!(run_statuses(&admin, "m-1").await, ["running"]);
    // Written rows are visible to their user only.
    assert_eq!(
        write(&a, "m-1", due(0), "runner-a").await,
        WriteOutcome::Written
    );
    let seen = |user: &'static str| {
        let svc = &svc;
        async move {
            svc.batch_execute("BEGIN").await.expect("begin");
            svc.execute(
                "SELECT set_config('app.current_user_id', $1, true)",
                &[&user],
            )
            .await
            .expect("scope");
            let n: i64 = svc
                .query_one("SELECT count(*) FROM sync_changes", &[])
                .await
                .expect("count")
                .get(0);
            svc.batch_execute("COMMIT").await.expect("commit");
            n
        }
    };
    assert_eq!(seen(USER).await, 1);
    assert_eq!(seen("user-b").await, 0);
    assert_eq!(iteration_rows(&admin, "m-1").await, 1);
}

#[tokio::test]
async fn the_migration_stays_idempotent_with_the_run_functions() {
    let (_db, a, _b, admin) = setup("runs_migrate").await;
    schema::migrate(&admin, Some(SERVICE_ROLE))
        .await
        .expect("second migration");
    schema::migrate(&admin, Some(SERVICE_ROLE))
        .await
        .expect("third migration");
    let invoker: Vec<bool> = first_column(
        &admin,
        "SELECT prosecdef FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'mana_ai' AND p.proname IN ('claim_run', 'write_back_run')",
    )
    .await;
    assert_eq!(
        invoker,
        vec![false, false],
        "one of each, both SECURITY INVOKER"
    );
    claim_and_write(&a).await;
}
