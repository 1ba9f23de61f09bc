//! Real PostgreSQL: the per-mission statements read one mission's rows, whatever the number
//! of missions due at the same instant. Their plans are generic (made without the call's
//! values); a generic plan that scans a partial index on shared constants (the due-time
//! index) reads every mission due at that instant, per call — the cost per mission then
//! grows with the tick (migration 10). Counted with PostgreSQL's own table statistics.

use chrono::{DateTime, TimeZone, Utc};
use mana_ai_core::iso::to_iso_ms;
use mana_ai_store::testkit::rows::mission_record;
use mana_ai_store::testkit::{fresh_db, push_mission};
use mana_ai_store::RefreshOptions;
use serde_json::json;

/// Missions due at the same instant, one per user.
const DUE_TOGETHER: usize = 400;
/// Calls measured per statement.
const CALLS: usize = 20;
/// Snapshot rows one call may read (the mission's own row, plus the claim's look at the
/// user's other due missions — one here).
const ROWS_PER_CALL: i64 = 4;

fn due() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 6, 0, 0).single().unwrap()
}

/// Tuples read from `mana_ai.mission_snapshots` so far (index fetches and scans).
async fn snapshot_reads(admin: &tokio_postgres::Client) -> i64 {
    let row = admin
        .query_one(
            "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) \
             FROM pg_stat_all_tables WHERE schemaname = 'mana_ai' AND relname = 'mission_snapshots'",
            &[],
        )
        .await
        .expect("table statistics");
    row.get(0)
}

#[tokio::test]
async fn per_mission_statements_read_one_missions_rows() {
    let db = fresh_db("plans").await;
    let admin = db.admin().await;
    for i in 0..DUE_TOGETHER {
        let m = mission_record(json!({
            "nextRunAt": to_iso_ms(due()),
            "cadence": {"kind": "interval", "everyMinutes": 60}
        }));
        push_mission(&admin, &format!("user-{i}"), &format!("m-{i}"), m).await;
    }
    let opts = RefreshOptions {
        safety_margin: std::time::Duration::ZERO,
        ..RefreshOptions::default()
    };
    db.service_store()
        .refresh_snapshots(opts)
        .await
        .expect("refresh");

    // One connection of the service role, so its statistics can be flushed on demand.
    let service = db.service_client().await;
    let flush = || async {
        service
            .execute("SELECT pg_stat_force_next_flush()", &[])
            .await
            .expect("flush statistics");
        // The flush happens when the backend goes idle after this statement.
        service.execute("SELECT 1", &[]).await.expect("idle");
    };
    flush().await;
    let before = snapshot_reads(&admin).await;
    for i in 0..CALLS {
        let row = service
            .query_opt(
                "SELECT record FROM mana_ai.load_due_mission($1, $2, $3)",
                &[&format!("user-{i}"), &format!("m-{i}"), &due()],
            )
            .await
            .expect("load");
        assert!(row.is_some(), "mission m-{i} is due and loads");
    }
    flush().await;
    let loads = snapshot_reads(&admin).await - before;

    let before = snapshot_reads(&admin).await;
    for i in 0..CALLS {
        let got: String = service
            .query_one(
                "SELECT mana_ai.claim_run($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &format!("user-{i}"),
                    &format!("m-{i}"),
                    &due(),
                    &format!("it-{i}"),
                    &"default",
                    &1i64,
                    &"runner-1",
                    &60.0f64,
                ],
            )
            .await
            .expect("claim")
            .get(0);
        assert_eq!(got, "claimed", "claim of m-{i}");
    }
    flush().await;
    let claims = snapshot_reads(&admin).await - before;

    let limit = CALLS as i64 * ROWS_PER_CALL;
    assert!(
        loads <= limit,
        "{CALLS} loads read {loads} snapshot rows with {DUE_TOGETHER} missions due together \
         (at most {limit}): the load's plan scans the due missions"
    );
    assert!(
        claims <= limit,
        "{CALLS} claims read {claims} snapshot rows with {DUE_TOGETHER} missions due together \
         (at most {limit}): the claim's plan scans the due missions"
    );
}
