//! Foundation benchmark (issue 2): projection and refresh at scale.
//!
//! Fills `sync_changes` of a throwaway PostgreSQL database with 1,000,000 `app_id='ai'`
//! history rows over 10,000 users (three missions and one agent each) plus 200,000 rows
//! of other apps, then measures, with the least-privilege service role's `Store`:
//!
//! * the one-off catch-up refresh from an empty cursor;
//! * a refresh after 100 new rows spread over 100 users (target: median < 50 ms);
//! * a refresh with nothing new (target: median < 5 ms);
//! * `list_due_keys(now, 10_000)` with 10,000 missions due, the runner's keys-only path
//!   (target: median < 100 ms), and `list_due_missions` with full records as a diagnostic;
//! * the resident memory of the release `mana-ai serve` binary at idle (target: < 30 MB),
//!   after one tick pass, and after a tick that catches up the whole history (snapshots
//!   and cursor reset; target: < 40 MiB);
//! * the catch-up's snapshot writes per record (target: 1) and this process's memory
//!   around it.
//!
//! Run with `cargo bench --workspace --bench foundation`. It prints a markdown table at
//! the end; `docs/benchmarks.md` records the results. Percentiles are nearest-rank.
//! Diagnostics: `FOUNDATION_BENCH_ONLY_CATCHUP=1` runs only the service's catch-up after
//! the fill, and `FOUNDATION_BENCH_CATCHUP_ENV` repeats it with other environments (see
//! [`catch_up_variants`]).

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use chrono::{DateTime, Utc};
use mana_ai_store::testkit::{fresh_db, TestDb};
use mana_ai_store::{RefreshOptions, RefreshOutcome, RefreshStats};

/// Users in the synthetic workload (the issue's scale). `FOUNDATION_BENCH_USERS`
/// overrides it for a quick smoke run; the other sizes scale with it.
const DEFAULT_USERS: i64 = 10_000;
/// `app_id='ai'` history rows per user (1 agent insert, 3 mission inserts, updates).
const AI_ROWS_PER_USER: i64 = 100;
/// Rows of other apps (`todo`, `notes`) per user: the partial discovery index must
/// skip them.
const OTHER_ROWS_PER_USER: i64 = 20;
/// Rows inserted per fill statement (progress granularity).
const FILL_CHUNK: i64 = 100_000;

const NEW_ROWS_RUNS: usize = 30;
const IDLE_REFRESH_RUNS: usize = 100;
const LIST_DUE_RUNS: usize = 20;

/// One synthetic `ai` history row per `g` in `[lo, hi]`. User `u = g % USERS` and slot
/// `k = g / USERS` (0..99), so every user's slot k happens before its slot k+1:
/// * k = 0: agent `legacy:ai-default` insert (the id every user's default agent shares);
/// * k = 1..3: insert of mission `m-<user>-<k>` with the full record (1 and 2 active,
///   3 paused); mission 1 is due (its `nextRunAt` lies in the past), mission 2 is not;
/// * k % 24 = 4: agent update (memory);
/// * k = 99 for every 50th user: delete of mission 3;
/// * otherwise: a stamped update of mission `k % 3 + 1`, one field group chosen by
///   `k % 5`; mission 1 gets its growing `iterations` array (up to ~3.5 KB) this way.
///
/// `$1` is the history's start; rows are 2.5 s apart, so the history ends ~1.1 days ago.
const FILL_AI_SQL: &str = r#"
WITH slots AS (
  SELECT g, u, k, uid, at,
         to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS iso,
         CASE WHEN k = 0 THEN 'agent-insert'
              WHEN k <= 3 THEN 'mission-insert'
              WHEN k % 24 = 4 THEN 'agent-update'
              WHEN k = 99 AND u % 50 = 0 THEN 'mission-delete'
              ELSE 'mission-update' END AS kind,
         CASE WHEN k BETWEEN 1 AND 3 THEN k
              WHEN k = 99 AND u % 50 = 0 THEN 3
              ELSE k % 3 + 1 END AS m
    FROM (SELECT g, g % $3::bigint AS u, g / $3::bigint AS k,
                 'u' || lpad((g % $3::bigint)::text, 5, '0') AS uid,
                 $1::timestamptz + g * interval '2.5 seconds' AS at
            FROM generate_series($2::bigint, $2::bigint + $4::bigint - 1) AS g) AS raw
), payload AS MATERIALIZED (
  SELECT s.*,
    CASE s.kind
      WHEN 'agent-insert' THEN jsonb_build_object(
        'id', 'legacy:ai-default', 'createdAt', s.iso, 'updatedAt', s.iso,
        'name', 'Mana', 'avatar', 'robot', 'role', 'Personal assistant of ' || s.uid,
        'systemPrompt', 'You help ' || s.uid || ' plan the week. ' || md5(s.uid),
        'policy', jsonb_build_object(
          'tools', jsonb_build_object('create_task', 'propose', 'add_note', 'auto',
                                      'send_email', 'deny'),
          'defaultsByModule', jsonb_build_object('todo', 'propose'),
          'defaultForAi', 'propose'),
        'maxTokensPerDay', 200000, 'maxConcurrentMissions', 1, 'state', 'active')
      WHEN 'agent-update' THEN jsonb_build_object(
        'memory', 'Prefers mornings. Notes ' || md5(s.g::text) || md5((s.g + 1)::text),
        'updatedAt', s.iso)
      WHEN 'mission-insert' THEN jsonb_build_object(
        'id', 'm-' || s.uid || '-' || s.m, 'createdAt', s.iso, 'updatedAt', s.iso,
        'title', 'Mission ' || s.m || ' of ' || s.uid,
        'conceptMarkdown', E'# Concept\n\nKeep an eye on ' || md5(s.g::text) || E'\n\n- weekly review\n- inbox zero',
        'objective', 'Summarise what changed and propose next steps (' || s.m || ')',
        'inputs', jsonb_build_array(
          jsonb_build_object('module', 'notes', 'table', 'notes', 'id', 'n-' || s.uid),
          jsonb_build_object('module', 'todo', 'table', 'tasks', 'id', 't-' || s.uid)),
        'cadence', CASE s.m
          WHEN 1 THEN jsonb_build_object('kind', 'interval', 'everyMinutes', 60)
          WHEN 2 THEN jsonb_build_object('kind', 'daily', 'atHour', 7, 'atMinute', 0)
          ELSE jsonb_build_object('kind', 'weekly', 'dayOfWeek', 0, 'atHour', 10) END,
        'state', CASE s.m WHEN 3 THEN 'paused' ELSE 'active' END,
        'nextRunAt', CASE s.m
          WHEN 2 THEN to_char((now() + interval '30 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
          ELSE to_char((s.at + interval '1 hour') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') END,
        'iterations', '[]'::jsonb, 'agentId', 'legacy:ai-default',
        'spaceId', 'space-' || s.uid, 'authorId', s.uid, 'visibility', 'space')
      WHEN 'mission-delete' THEN NULL
      ELSE CASE s.k % 5
        WHEN 0 THEN jsonb_build_object('title', 'Mission ' || s.m || ' rev ' || s.k, 'updatedAt', s.iso)
        WHEN 1 THEN CASE s.m
          WHEN 1 THEN jsonb_build_object('iterations', (
            SELECT jsonb_agg(jsonb_build_object(
                     'id', 'it-' || s.g || '-' || i, 'startedAt', s.iso, 'finishedAt', s.iso,
                     'overallStatus', 'approved', 'source', 'server',
                     'summary', 'Checked inputs; ' || md5((s.g * 10 + i)::text) || md5((s.g * 10 + i + 5)::text),
                     'plan', jsonb_build_array(
                       jsonb_build_object('id', 'st-' || i || '-1', 'summary', 'Create a follow-up task',
                         'intent', jsonb_build_object('kind', 'toolCall', 'toolName', 'create_task',
                           'params', jsonb_build_object('title', 'Follow up ' || md5((s.g + i)::text))),
                         'status', 'approved'),
                       jsonb_build_object('id', 'st-' || i || '-2', 'summary', 'Note the outcome',
                         'intent', jsonb_build_object('kind', 'note', 'body', md5((s.g - i)::text)),
                         'status', 'staged'))))
              FROM generate_series(1, 1 + s.k / 16) AS i),
            'updatedAt', s.iso)
          ELSE jsonb_build_object('inputs', jsonb_build_array(
            jsonb_build_object('module', 'notes', 'table', 'notes', 'id', 'n-' || s.uid || '-' || s.k)),
            'updatedAt', s.iso) END
        WHEN 2 THEN jsonb_build_object('nextRunAt', CASE s.m
          WHEN 2 THEN to_char((now() + interval '30 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
          ELSE to_char((s.at + interval '1 hour') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') END,
          'updatedAt', s.iso)
        WHEN 3 THEN jsonb_build_object('objective', 'Objective rev ' || s.k || ': ' || md5(s.g::text), 'updatedAt', s.iso)
        ELSE jsonb_build_object('conceptMarkdown', E'# Concept rev ' || s.k || E'\n\n' || md5(s.g::text) || md5((s.g * 3)::text), 'updatedAt', s.iso)
      END
    END AS data
  FROM slots s
)
INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, created_at)
SELECT 'ai',
       CASE WHEN p.kind LIKE 'agent-%' THEN 'agents' ELSE 'aiMissions' END,
       CASE WHEN p.kind LIKE 'agent-%' THEN 'legacy:ai-default' ELSE 'm-' || p.uid || '-' || p.m END,
       p.uid,
       CASE p.kind WHEN 'agent-insert' THEN 'insert' WHEN 'mission-insert' THEN 'insert'
                   WHEN 'mission-delete' THEN 'delete' ELSE 'update' END,
       p.data,
       CASE WHEN p.kind LIKE '%-update'
            THEN (SELECT jsonb_object_agg(f, p.iso) FROM jsonb_object_keys(p.data) AS f)
            ELSE '{}'::jsonb END,
       'web-' || (p.u % 3),
       p.at
  FROM payload p
"#;

/// Rows of two other apps interleaved in time with the `ai` history (`$1` start,
/// `$2` first g, `$3` count).
const FILL_OTHER_SQL: &str = r#"
INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, created_at)
SELECT CASE g % 2 WHEN 0 THEN 'todo' ELSE 'notes' END,
       CASE g % 2 WHEN 0 THEN 'tasks' ELSE 'notes' END,
       'r-' || (g / 10),
       'u' || lpad(((g * 7) % 10000)::text, 5, '0'),
       CASE WHEN g % 10 = 0 THEN 'insert' ELSE 'update' END,
       jsonb_build_object('title', 'Item ' || md5(g::text), 'done', g % 3 = 0),
       CASE WHEN g % 10 = 0 THEN '{}'::jsonb
            ELSE jsonb_build_object('title', to_char(($1::timestamptz + g * interval '12.5 seconds') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                                    'done', to_char(($1::timestamptz + g * interval '12.5 seconds') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')) END,
       'web-0',
       $1::timestamptz + g * interval '12.5 seconds' + interval '1.25 seconds'
  FROM generate_series($2::bigint, $2::bigint + $3::bigint - 1) AS g
"#;

/// 100 new rows for 100 distinct users (`$1`: user numbers): a mix of a grown
/// `iterations` array on mission 1, a title change on mission 2, an agent memory update
/// and an objective change on mission 1. None of them changes whether a mission is due.
const NEW_ROWS_SQL: &str = r#"
INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id)
SELECT 'ai',
       CASE WHEN j % 4 = 2 THEN 'agents' ELSE 'aiMissions' END,
       CASE j % 4 WHEN 1 THEN 'm-' || uid || '-2' WHEN 2 THEN 'legacy:ai-default'
                  ELSE 'm-' || uid || '-1' END,
       uid, 'update', d, (SELECT jsonb_object_agg(f, iso) FROM jsonb_object_keys(d) AS f),
       'web-1'
  FROM (
    SELECT j, uid, iso,
      CASE j % 4
        WHEN 0 THEN jsonb_build_object('iterations', (
          SELECT jsonb_agg(jsonb_build_object('id', 'it-new-' || i || '-' || md5(iso),
                   'startedAt', iso, 'overallStatus', 'awaiting-review', 'source', 'server',
                   'summary', md5(iso || i) || md5(uid || i),
                   'plan', jsonb_build_array(jsonb_build_object('id', 'st-' || i, 'summary', 'Create a task',
                     'intent', jsonb_build_object('kind', 'toolCall', 'toolName', 'create_task',
                       'params', jsonb_build_object('title', md5(uid || iso))),
                     'status', 'planned'))))
            FROM generate_series(1, 6) AS i), 'updatedAt', iso)
        WHEN 1 THEN jsonb_build_object('title', 'Renamed ' || md5(iso || uid), 'updatedAt', iso)
        WHEN 2 THEN jsonb_build_object('memory', 'Learned ' || md5(iso || uid), 'updatedAt', iso)
        ELSE jsonb_build_object('objective', 'New objective ' || md5(uid || iso), 'updatedAt', iso)
      END AS d
    FROM (SELECT j, 'u' || lpad(n::text, 5, '0') AS uid,
                 to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS iso
            FROM unnest($1::bigint[]) WITH ORDINALITY AS t(n, j)) AS picked
  ) AS picked_rows
"#;

#[derive(Debug, Clone)]
struct Summary {
    runs: usize,
    median: Duration,
    p95: Duration,
    min: Duration,
    max: Duration,
}

/// Nearest-rank percentiles of the samples.
fn summarize(samples: &[Duration]) -> Summary {
    let mut s = samples.to_vec();
    s.sort();
    let rank = |p: f64| {
        let idx = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
        s[idx]
    };
    Summary {
        runs: s.len(),
        median: rank(0.50),
        p95: rank(0.95),
        min: s[0],
        max: s[s.len() - 1],
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn done(outcome: RefreshOutcome) -> anyhow::Result<RefreshStats> {
    match outcome {
        RefreshOutcome::Done(stats) => Ok(stats),
        RefreshOutcome::Busy => bail!("refresh reported Busy, but nothing else refreshes"),
    }
}

fn margin0() -> RefreshOptions {
    RefreshOptions {
        safety_margin: Duration::ZERO,
        ..RefreshOptions::default()
    }
}

/// The user numbers receiving new rows in run `run`: 100 distinct users, different ones
/// in every run (97 is coprime with 10,000, so `n * 97 mod 10,000` is a permutation).
fn users_for_run(run: usize, users: i64) -> Vec<i64> {
    (0..100)
        .map(|j| ((run as i64 * 100 + j) * 97).rem_euclid(users))
        .collect()
}

/// The number of users: the issue's 10,000 unless `FOUNDATION_BENCH_USERS` says otherwise.
fn users_from_env() -> anyhow::Result<i64> {
    let users = match std::env::var("FOUNDATION_BENCH_USERS") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("FOUNDATION_BENCH_USERS={v:?}"))?,
        Err(_) => DEFAULT_USERS,
    };
    // 100 distinct users per run need 100 users; ids have five digits.
    ensure!(
        (100..=99_999).contains(&users),
        "FOUNDATION_BENCH_USERS must be between 100 and 99999"
    );
    Ok(users)
}

struct Row {
    what: String,
    target: String,
    result: String,
    verdict: &'static str,
}

fn row(what: &str, target: &str, result: String, met: Option<bool>) -> Row {
    Row {
        what: what.to_string(),
        target: target.to_string(),
        result,
        verdict: match met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "-",
        },
    }
}

fn timing(s: &Summary) -> String {
    format!(
        "median {}, p95 {} (min {}, max {}, n={})",
        ms(s.median),
        ms(s.p95),
        ms(s.min),
        ms(s.max),
        s.runs
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; this harness takes no options.
    let mut rows: Vec<Row> = Vec::new();
    let users_n = users_from_env()?;
    // Mission 1 of every user is due after the catch-up.
    let expected_due = users_n as usize;
    let other_total = users_n * OTHER_ROWS_PER_USER;
    println!("foundation bench: starting a throwaway PostgreSQL cluster");
    let db = fresh_db("foundation_bench").await;
    let admin = db.admin().await;
    let version: String = admin.query_one("SHOW server_version", &[]).await?.get(0);
    println!("PostgreSQL {version}, database {}", db.name);

    // ---- fill ---------------------------------------------------------------------
    // JIT compilation of the big generating statement costs seconds per chunk and buys
    // nothing here; it only affects this setup session.
    admin.batch_execute("SET jit = off").await?;
    let fill_started = Instant::now();
    let base: DateTime<Utc> = Utc::now() - chrono::Duration::days(30);
    let ai_total = users_n * AI_ROWS_PER_USER;
    let mut lo = 0;
    while lo < ai_total {
        let n = FILL_CHUNK.min(ai_total - lo);
        admin
            .execute(FILL_AI_SQL, &[&base, &lo, &users_n, &n])
            .await
            .context("filling ai rows")?;
        lo += n;
        println!(
            "  filled {lo} ai rows ({:.1} s)",
            fill_started.elapsed().as_secs_f64()
        );
    }
    let mut lo = 0;
    while lo < other_total {
        let n = FILL_CHUNK.min(other_total - lo);
        admin
            .execute(FILL_OTHER_SQL, &[&base, &lo, &n])
            .await
            .context("filling other apps' rows")?;
        lo += n;
    }
    let insert_time = fill_started.elapsed();
    admin
        .batch_execute("VACUUM (ANALYZE) sync_changes")
        .await
        .context("vacuum analyze")?;
    let fill_time = fill_started.elapsed();
    let counts = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE app_id = 'ai'),
                    count(*) FILTER (WHERE app_id = 'ai' AND table_name = 'aiMissions'),
                    count(*) FILTER (WHERE app_id = 'ai' AND table_name = 'agents'),
                    count(*) FILTER (WHERE app_id <> 'ai'),
                    count(DISTINCT user_id) FILTER (WHERE app_id = 'ai'),
                    pg_size_pretty(pg_total_relation_size('sync_changes')),
                    pg_size_pretty(pg_relation_size('sync_changes')),
                    pg_size_pretty(pg_indexes_size('sync_changes')),
                    pg_size_pretty(pg_relation_size('mana_ai_sync_changes_ai_position'))
               FROM sync_changes",
            &[],
        )
        .await?;
    let ai_rows: i64 = counts.get(0);
    let mission_rows: i64 = counts.get(1);
    let agent_rows: i64 = counts.get(2);
    let other_rows: i64 = counts.get(3);
    let users: i64 = counts.get(4);
    let total_size: String = counts.get(5);
    let heap_size: String = counts.get(6);
    let index_size: String = counts.get(7);
    let partial_size: String = counts.get(8);
    ensure!(
        ai_rows == ai_total,
        "{ai_rows} ai rows instead of {ai_total}"
    );
    ensure!(users == users_n, "{users} users instead of {users_n}");
    println!(
        "fill: {ai_rows} ai rows ({mission_rows} mission, {agent_rows} agent) + {other_rows} other; \
         insert {:.1} s, with VACUUM ANALYZE {:.1} s; sync_changes {total_size} \
         (heap {heap_size}, indexes {index_size}, partial index {partial_size})",
        insert_time.as_secs_f64(),
        fill_time.as_secs_f64()
    );
    rows.push(row(
        "Fill (set-based INSERT … SELECT, superuser) + VACUUM ANALYZE",
        "-",
        format!(
            "{ai_rows} `ai` rows over {users} users + {other_rows} other-app rows: insert {:.1} s, total {:.1} s; \
             table {total_size} (heap {heap_size}, indexes {index_size}; partial discovery index {partial_size})",
            insert_time.as_secs_f64(),
            fill_time.as_secs_f64()
        ),
        None,
    ));

    if std::env::var_os("FOUNDATION_BENCH_ONLY_CATCHUP").is_some() {
        // Diagnostic mode: only the service's catch-up runs.
        for extra in &catch_up_variants() {
            let c = measure_catch_up(&db, &admin, extra).await?;
            rows.push(catch_up_row(&c));
        }
        print_table(&rows);
        return Ok(());
    }

    // ---- catch-up -----------------------------------------------------------------
    let store = db.service_store();
    // This process's memory around the catch-up: the peak is reset first (Linux
    // `clear_refs` 5), so VmHWM afterwards is the catch-up's own peak.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before_catch_up = read_rss(std::process::id())?;
    let t = Instant::now();
    let catch_up = done(store.refresh_snapshots(margin0()).await?)?;
    let catch_up_time = t.elapsed();
    let after_catch_up = read_rss(std::process::id())?;
    println!(
        "bench process around the catch-up: VmRSS {:.1} MB before, {:.1} MB after, VmHWM {:.1} MB",
        before_catch_up.0, after_catch_up.0, after_catch_up.1
    );
    println!(
        "catch-up refresh: {:.1} s, {catch_up:?}",
        catch_up_time.as_secs_f64()
    );
    ensure!(
        catch_up.rows_applied as i64 == ai_rows,
        "catch-up applied {} rows, expected {ai_rows}",
        catch_up.rows_applied
    );
    let snap = admin
        .query_one(
            "SELECT (SELECT count(*) FROM mana_ai.mission_snapshots),
                    (SELECT count(*) FROM mana_ai.mission_snapshots WHERE deleted),
                    (SELECT count(*) FROM mana_ai.agent_snapshots),
                    pg_size_pretty(pg_total_relation_size('mana_ai.mission_snapshots'))",
            &[],
        )
        .await?;
    let missions: i64 = snap.get(0);
    let deleted: i64 = snap.get(1);
    let agents: i64 = snap.get(2);
    let snap_size: String = snap.get(3);
    ensure!(missions == 3 * users_n, "{missions} mission snapshots");
    ensure!(
        deleted == (users_n + 49) / 50,
        "{deleted} deleted mission snapshots"
    );
    ensure!(agents == users_n, "{agents} agent snapshots");
    rows.push(row(
        "Catch-up refresh from an empty cursor (one-off)",
        "-",
        format!(
            "{:.1} s: {} rows in {} windows / {} batches, {} snapshot writes ({} new + {} rewritten) → {missions} mission snapshots ({deleted} deleted, {snap_size}), {agents} agent snapshots",
            catch_up_time.as_secs_f64(),
            catch_up.rows_applied,
            catch_up.windows,
            catch_up.batches,
            catch_up.new_snapshots + catch_up.updated_snapshots,
            catch_up.new_snapshots,
            catch_up.updated_snapshots
        ),
        None,
    ));
    let writes = catch_up.new_snapshots + catch_up.updated_snapshots;
    let records = (missions + agents) as usize;
    let per_record = writes as f64 / records as f64;
    println!(
        "catch-up: {writes} snapshot writes for {records} records = {per_record:.2} per record"
    );
    rows.push(row(
        "Catch-up: snapshot writes per record",
        "1",
        format!("{per_record:.2} ({writes} writes for {records} records)"),
        Some(writes == records),
    ));
    rows.push(row(
        "Catch-up: memory of the bench process (in-process `Store`; peak reset before it)",
        "-",
        format!(
            "VmRSS {:.1} MB before, {:.1} MB after (VmHWM during it {:.1} MB)",
            before_catch_up.0, after_catch_up.0, after_catch_up.1
        ),
        None,
    ));
    admin
        .batch_execute("VACUUM (ANALYZE) mana_ai.mission_snapshots, mana_ai.agent_snapshots")
        .await?;

    // ---- (a) refresh after 100 new rows -------------------------------------------
    let mut samples = Vec::with_capacity(NEW_ROWS_RUNS);
    for run in 0..NEW_ROWS_RUNS {
        let users = users_for_run(run, users_n);
        let n = admin.execute(NEW_ROWS_SQL, &[&users]).await?;
        ensure!(n == 100, "inserted {n} new rows");
        let t = Instant::now();
        let stats = done(store.refresh_snapshots(margin0()).await?)?;
        samples.push(t.elapsed());
        ensure!(
            stats.rows_applied == 100 && stats.users_processed == 100,
            "refresh after 100 rows: {stats:?}"
        );
        ensure!(stats.updated_snapshots == 100, "{stats:?}");
    }
    let new_rows = summarize(&samples);
    println!("refresh after 100 new rows: {}", timing(&new_rows));
    rows.push(row(
        "Refresh after 100 new rows over 100 users (margin 0)",
        "< 50 ms median",
        timing(&new_rows),
        Some(new_rows.median < Duration::from_millis(50)),
    ));
    // Once with the default safety margin (the rows must be older than the margin).
    let n = admin
        .execute(NEW_ROWS_SQL, &[&users_for_run(NEW_ROWS_RUNS, users_n)])
        .await?;
    ensure!(n == 100, "inserted {n} new rows");
    let margin = RefreshOptions::default().safety_margin;
    tokio::time::sleep(margin + Duration::from_millis(50)).await;
    let t = Instant::now();
    let stats = done(store.refresh_snapshots(RefreshOptions::default()).await?)?;
    let default_margin_new = t.elapsed();
    ensure!(stats.rows_applied == 100, "default margin: {stats:?}");
    rows.push(row(
        &format!(
            "Refresh after 100 new rows, default margin ({} ms), one run",
            margin.as_millis()
        ),
        "< 50 ms",
        ms(default_margin_new),
        Some(default_margin_new < Duration::from_millis(50)),
    ));

    // ---- (b) refresh with nothing new ---------------------------------------------
    let mut samples = Vec::with_capacity(IDLE_REFRESH_RUNS);
    for _ in 0..IDLE_REFRESH_RUNS {
        let t = Instant::now();
        let stats = done(store.refresh_snapshots(margin0()).await?)?;
        samples.push(t.elapsed());
        ensure!(stats.rows_applied == 0, "nothing new, yet {stats:?}");
    }
    let idle = summarize(&samples);
    println!("refresh with nothing new: {}", timing(&idle));
    rows.push(row(
        "Refresh with nothing new (margin 0)",
        "< 5 ms median",
        timing(&idle),
        Some(idle.median < Duration::from_millis(5)),
    ));
    tokio::time::sleep(margin).await;
    let t = Instant::now();
    let stats = done(store.refresh_snapshots(RefreshOptions::default()).await?)?;
    let default_margin_idle = t.elapsed();
    ensure!(stats.rows_applied == 0, "default margin idle: {stats:?}");
    rows.push(row(
        "Refresh with nothing new, default margin, one run",
        "< 5 ms",
        ms(default_margin_idle),
        Some(default_margin_idle < Duration::from_millis(5)),
    ));

    // ---- (c) list 10,000 due missions ---------------------------------------------
    // The runner's path: keys only (`list_due_keys`); a mission's record is loaded when
    // it is about to run.
    let mut samples = Vec::with_capacity(LIST_DUE_RUNS);
    for _ in 0..LIST_DUE_RUNS {
        let t = Instant::now();
        let due = store.list_due_keys(Utc::now(), users_n).await?;
        samples.push(t.elapsed());
        ensure!(
            due.len() == expected_due,
            "{} due keys instead of {expected_due}",
            due.len()
        );
    }
    let list_keys = summarize(&samples);
    println!("list_due_keys(now, {users_n}): {}", timing(&list_keys));
    rows.push(row(
        &format!("`list_due_keys(now, {users_n})` → {users_n} due missions (the runner's path)"),
        "< 100 ms median",
        timing(&list_keys),
        Some(list_keys.median < Duration::from_millis(100)),
    ));
    // Diagnostic: the same listing with full records (`list_due_missions`).
    let mut samples = Vec::with_capacity(LIST_DUE_RUNS);
    let mut payload_bytes = 0usize;
    for _ in 0..LIST_DUE_RUNS {
        let t = Instant::now();
        let due = store.list_due_missions(Utc::now(), users_n).await?;
        samples.push(t.elapsed());
        ensure!(
            due.len() == expected_due,
            "{} due missions instead of {expected_due}",
            due.len()
        );
        payload_bytes = due.iter().map(|d| d.record.to_string().len()).sum();
    }
    let list_due = summarize(&samples);
    println!(
        "list_due_missions(now, {users_n}): {} ({:.1} MB of records)",
        timing(&list_due),
        payload_bytes as f64 / 1e6
    );
    rows.push(row(
        &format!("Diagnostic: `list_due_missions(now, {users_n})` → {users_n} full records"),
        "-",
        format!(
            "{} ({:.1} MB of record JSON)",
            timing(&list_due),
            payload_bytes as f64 / 1e6
        ),
        None,
    ));
    store.close();
    diagnose_list_due(&db, users_n).await?;
    diagnose_refresh(&db, &admin).await?;

    // ---- memory of the release binary ---------------------------------------------
    let mem = measure_memory(&db, &admin).await?;
    rows.push(row(
        "`mana-ai serve` RSS at idle (TICK_ENABLED=false, after /health ok + 2 s)",
        "< 30 MB",
        format!("VmRSS {:.1} MB (VmHWM {:.1} MB)", mem.idle.0, mem.idle.1),
        Some(mem.idle.0 < 30.0),
    ));
    rows.push(row(
        "… after one `POST /internal/tick` (MANA_AI_DUE_LIMIT=100) + 2 s",
        "-",
        format!(
            "VmRSS {:.1} MB (VmHWM {:.1} MB); tick took {} ms, due listed {}",
            mem.after_tick.0, mem.after_tick.1, mem.tick_ms, mem.tick_due
        ),
        None,
    ));
    rows.push(row(
        "`mana-ai serve` with the scheduler (TICK_ENABLED=true, default due limit 1000) after its first tick + 2 s",
        "-",
        format!(
            "VmRSS {:.1} MB (VmHWM {:.1} MB)",
            mem.scheduled.0, mem.scheduled.1
        ),
        None,
    ));
    for c in &mem.catch_ups {
        rows.push(catch_up_row(c));
    }
    print_table(&rows);
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!();
    println!("| Measurement | Target | Result | |");
    println!("|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} |",
            r.what, r.target, r.result, r.verdict
        );
    }
}

/// The same due query as the store's, by projection: where does the time go?
const DUE_SQL: &str = "SELECT user_id, mission_id, {cols}, next_run_at
   FROM mana_ai.mission_snapshots
  WHERE state = 'active' AND NOT deleted AND next_run_at IS NOT NULL AND next_run_at <= $1
  ORDER BY next_run_at, user_id, mission_id
  LIMIT $2";

/// Diagnostics for `list_due_missions`: the server-side plan and execution time, and
/// client-side timings of cheaper projections (printed, not asserted).
async fn diagnose_list_due(db: &TestDb, limit: i64) -> anyhow::Result<()> {
    let c = mana_ai_store::connect_once(&db.service_url).await?;
    let now = Utc::now();
    let plan = c
        .query(
            &format!(
                "EXPLAIN (ANALYZE, BUFFERS) {}",
                DUE_SQL.replace("{cols}", "record")
            ),
            &[&now, &limit],
        )
        .await?;
    println!("\ndiagnostics: EXPLAIN ANALYZE of the due query (service role):");
    for r in &plan {
        let line: String = r.get(0);
        println!("    {line}");
    }
    for (label, cols, parse) in [
        (
            "full record, parsed as JSON (what the store does)",
            "record",
            true,
        ),
        ("full record as text, not parsed", "record::text", false),
        (
            "record without iterations, parsed",
            "record - 'iterations'",
            true,
        ),
        ("ids only", "NULL::text", false),
    ] {
        let sql = DUE_SQL.replace("{cols}", cols);
        let stmt = c.prepare(&sql).await?;
        let mut samples = Vec::new();
        let mut bytes = 0usize;
        for _ in 0..LIST_DUE_RUNS {
            let t = Instant::now();
            let rows = c.query(&stmt, &[&now, &limit]).await?;
            if parse {
                bytes = rows
                    .iter()
                    .map(|r| r.get::<_, serde_json::Value>(2).to_string().len())
                    .sum();
            } else {
                bytes = rows
                    .iter()
                    .map(|r| r.get::<_, Option<String>>(2).map_or(0, |s| s.len()))
                    .sum();
            }
            samples.push(t.elapsed());
            ensure!(rows.len() as i64 == limit, "{} rows", rows.len());
        }
        println!(
            "  due query, {label}: {} ({:.1} MB)",
            timing(&summarize(&samples)),
            bytes as f64 / 1e6
        );
    }
    Ok(())
}

/// Diagnostics for an incremental refresh, for the window holding the last 100 new
/// rows: the plan of the discovery query (the body of the `SECURITY DEFINER` function,
/// as superuser); the generic plan of the per-user query inside the `SECURITY INVOKER`
/// function `mana_ai.read_ai_rows` (as the service role, in one user's scope — the
/// function plans it once per session); and the server time of one call of that
/// function for all the window's users.
async fn diagnose_refresh(db: &TestDb, admin: &tokio_postgres::Client) -> anyhow::Result<()> {
    let last = admin
        .query_one(
            "SELECT created_at, array_agg(DISTINCT user_id)
               FROM sync_changes
              WHERE created_at = (SELECT max(created_at) FROM sync_changes WHERE app_id = 'ai')
                AND app_id = 'ai'
              GROUP BY created_at",
            &[],
        )
        .await?;
    let at: DateTime<Utc> = last.get(0);
    let users: Vec<String> = last.get(1);
    let to = at + chrono::Duration::milliseconds(1);
    println!("diagnostics: changed_ai_records body for the last 100-row window:");
    let plan = admin
        .query(
            "EXPLAIN (ANALYZE, BUFFERS) SELECT s.user_id, s.table_name, s.record_id, max(s.created_at)
               FROM public.sync_changes s
              WHERE s.app_id = 'ai' AND s.table_name IN ('aiMissions', 'agents')
                AND s.created_at >= $1 AND s.created_at < $2
              GROUP BY s.user_id, s.table_name, s.record_id",
            &[&at, &to],
        )
        .await?;
    for r in &plan {
        println!("    {}", r.get::<_, String>(0));
    }
    let mut c = mana_ai_store::connect_once(&db.service_url).await?;
    let tx = c.transaction().await?;
    tx.execute(
        "SELECT set_config('app.current_user_id', $1, true)",
        &[&users[0]],
    )
    .await?;
    tx.batch_execute(
        "SET LOCAL plan_cache_mode = force_generic_plan;
         PREPARE per_user(text, timestamptz, timestamptz) AS
         SELECT s.user_id, s.table_name, s.record_id, s.op, s.data, s.field_meta, s.created_at
           FROM public.sync_changes s
          WHERE s.user_id = $1 AND s.app_id = 'ai'
            AND s.table_name IN ('aiMissions', 'agents')
            AND s.created_at >= $2 AND s.created_at < $3",
    )
    .await?;
    println!("diagnostics: generic plan of read_ai_rows' per-user query (service role, in scope):");
    // EXPLAIN EXECUTE takes literals, not bind parameters.
    let lit = |t: DateTime<Utc>| mana_ai_store::schema::quote_literal(&t.to_rfc3339());
    let plan = tx
        .query(
            &format!(
                "EXPLAIN (ANALYZE, BUFFERS) EXECUTE per_user({}, {}, {})",
                mana_ai_store::schema::quote_literal(&users[0]),
                lit(at),
                lit(to)
            ),
            &[],
        )
        .await?;
    for r in &plan {
        println!("    {}", r.get::<_, String>(0));
    }
    tx.batch_execute("DEALLOCATE per_user").await?;
    tx.rollback().await?;
    for call in ["first (plans the query)", "second (cached plan)"] {
        println!(
            "diagnostics: {call} read_ai_rows call in a session, the window's {} users (service role):",
            users.len()
        );
        let plan = c
            .query(
                "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM mana_ai.read_ai_rows($1::text[], $2, $3)",
                &[&users, &at, &to],
            )
            .await?;
        for r in &plan {
            println!("    {}", r.get::<_, String>(0));
        }
    }
    Ok(())
}

const MIB: f64 = 1024.0 * 1024.0;

fn catch_up_row(c: &CatchUp) -> Row {
    let (rss, hwm) = c.mem;
    let env = if c.env.is_empty() {
        String::new()
    } else {
        format!(", with {}", c.env)
    };
    row(
        &format!("`mana-ai serve`: one requested tick that catches up the whole history (snapshots and cursor reset; MANA_AI_DUE_LIMIT=100{env}) + 2 s"),
        "VmRSS < 40 MiB",
        format!(
            "VmRSS {rss:.1} MB = {:.1} MiB (VmHWM {hwm:.1} MB = {:.1} MiB); tick took {} ms: {}",
            rss * 1e6 / MIB,
            hwm * 1e6 / MIB,
            c.tick_ms,
            c.refresh
        ),
        Some(rss * 1e6 < 40.0 * MIB),
    )
}

struct Memory {
    /// (VmRSS MB, VmHWM MB)
    idle: (f64, f64),
    after_tick: (f64, f64),
    scheduled: (f64, f64),
    tick_ms: u64,
    tick_due: u64,
    /// After ticks whose refresh caught up the whole history.
    catch_ups: Vec<CatchUp>,
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// (VmRSS, VmHWM) of `pid` in MB (10^6 bytes).
fn read_rss(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} missing in /proc/{pid}/status"))?;
        let kb: f64 = line
            .split_whitespace()
            .nth(1)
            .with_context(|| format!("malformed {line:?}"))?
            .parse()?;
        Ok(kb * 1024.0 / 1e6)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

struct Service {
    child: tokio::process::Child,
    pid: u32,
    base: String,
}

async fn start_service(db: &TestDb, extra: &[(&str, &str)]) -> anyhow::Result<Service> {
    let port = free_port()?;
    let llm_port = free_port()?; // nothing listens there
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_mana-ai"));
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SYNC_DATABASE_URL", &db.service_url)
        .env("MANA_AI_MIGRATION_DATABASE_URL", &db.superuser_url)
        .env("PORT", port.to_string())
        .env("MANA_AI_BIND", "127.0.0.1")
        .env("MANA_LLM_URL", format!("http://127.0.0.1:{llm_port}"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd.spawn().context("starting mana-ai")?;
    let pid = child.id().context("mana-ai has no pid")?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(resp) = http.get(format!("{base}/health")).send().await {
            if resp.status().is_success() {
                let body: serde_json::Value = resp.json().await?;
                if body["ok"] == serde_json::Value::Bool(true) {
                    break;
                }
            }
        }
        ensure!(Instant::now() < deadline, "mana-ai did not become healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Service { child, pid, base })
}

async fn stop_service(mut svc: Service) -> anyhow::Result<()> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(svc.pid)?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    let status = tokio::time::timeout(Duration::from_secs(40), svc.child.wait())
        .await
        .context("mana-ai did not stop after SIGTERM")??;
    ensure!(status.success(), "mana-ai exited with {status}");
    Ok(())
}

async fn ticks_total(http: &reqwest::Client, base: &str) -> anyhow::Result<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    // `mana_ai_ticks_total{service="mana-ai"} 1` (the registry adds a constant label).
    Ok(text
        .lines()
        .filter(|l| {
            l.strip_prefix("mana_ai_ticks_total")
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .find_map(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0.0))
}

async fn measure_memory(db: &TestDb, admin: &tokio_postgres::Client) -> anyhow::Result<Memory> {
    let http = reqwest::Client::new();
    // Run 1: no scheduler. Idle figure first, then one requested pass.
    let svc = start_service(
        db,
        &[("TICK_ENABLED", "false"), ("MANA_AI_DUE_LIMIT", "100")],
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = read_rss(svc.pid)?;
    println!("idle: VmRSS {:.1} MB, VmHWM {:.1} MB", idle.0, idle.1);
    let stats: serde_json::Value = request_tick(&http, &svc.base).await?;
    let tick_ms = stats["durationMs"].as_u64().unwrap_or_default();
    let tick_due = stats["dueMissionCount"].as_u64().unwrap_or_default();
    ensure!(
        tick_due == 100,
        "requested tick listed {tick_due} due: {stats}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_tick = read_rss(svc.pid)?;
    println!(
        "after one tick: VmRSS {:.1} MB, VmHWM {:.1} MB ({stats})",
        after_tick.0, after_tick.1
    );
    stop_service(svc).await?;

    // Run 2: scheduler on, long interval; the first pass runs at start.
    let svc = start_service(
        db,
        &[("TICK_ENABLED", "true"), ("TICK_INTERVAL_MS", "3600000")],
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ticks_total(&http, &svc.base).await? < 1.0 {
        ensure!(Instant::now() < deadline, "the first tick did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let scheduled = read_rss(svc.pid)?;
    println!(
        "scheduler, after first tick: VmRSS {:.1} MB, VmHWM {:.1} MB",
        scheduled.0, scheduled.1
    );
    stop_service(svc).await?;

    let variants = catch_up_variants();
    let mut catch_ups = Vec::with_capacity(variants.len());
    for extra in &variants {
        catch_ups.push(measure_catch_up(db, admin, extra).await?);
    }
    Ok(Memory {
        idle,
        after_tick,
        scheduled,
        tick_ms,
        tick_due,
        catch_ups,
    })
}

/// The service's environment for each catch-up run: `FOUNDATION_BENCH_CATCHUP_ENV`
/// holds `;`-separated variants of space-separated `KEY=VALUE` pairs (for example
/// `;MALLOC_ARENA_MAX=1` runs the catch-up twice, the second time with one malloc arena);
/// by default one run with nothing extra.
fn catch_up_variants() -> Vec<Vec<(String, String)>> {
    let spec = std::env::var("FOUNDATION_BENCH_CATCHUP_ENV").unwrap_or_default();
    spec.split(';')
        .map(|variant| {
            variant
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// After a catch-up tick of the service.
struct CatchUp {
    /// The extra environment of the run (`KEY=VALUE …`, or empty).
    env: String,
    /// (VmRSS MB, VmHWM MB) 2 s after the tick.
    mem: (f64, f64),
    tick_ms: u64,
    /// The tick's refresh report (JSON).
    refresh: String,
}

/// Run 3: the service catches up the whole history in one requested tick
/// (MANA_AI_DUE_LIMIT=100). The snapshots and the cursor are reset first, so its refresh
/// is a first catch-up.
async fn measure_catch_up(
    db: &TestDb,
    admin: &tokio_postgres::Client,
    extra: &[(String, String)],
) -> anyhow::Result<CatchUp> {
    let http = reqwest::Client::new();
    let mut env: Vec<(&str, &str)> = vec![("TICK_ENABLED", "false"), ("MANA_AI_DUE_LIMIT", "100")];
    env.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let label = extra
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    admin
        .batch_execute(
            "TRUNCATE mana_ai.mission_snapshots, mana_ai.agent_snapshots;
             DELETE FROM mana_ai.refresh_cursor WHERE stream = 'ai'",
        )
        .await
        .context("resetting the snapshots")?;
    let svc = start_service(db, &env).await?;
    let stats: serde_json::Value = request_tick(&http, &svc.base).await?;
    let catch_up_ms = stats["durationMs"].as_u64().unwrap_or_default();
    let catch_up_refresh = stats["refresh"].to_string();
    ensure!(
        stats["refresh"]["rowsApplied"].as_u64().unwrap_or_default() > 0,
        "the catch-up tick applied no rows: {stats}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let catch_up = read_rss(svc.pid)?;
    println!(
        "after a catch-up tick [{label}]: VmRSS {:.1} MB, VmHWM {:.1} MB ({})",
        catch_up.0, catch_up.1, stats["refresh"]
    );
    stop_service(svc).await?;
    Ok(CatchUp {
        env: label,
        mem: catch_up,
        tick_ms: catch_up_ms,
        refresh: catch_up_refresh,
    })
}

/// `POST /internal/tick` on the service at `base`; its JSON answer.
async fn request_tick(http: &reqwest::Client, base: &str) -> anyhow::Result<serde_json::Value> {
    Ok(http
        .post(format!("{base}/internal/tick"))
        .header("X-Service-Key", "dev-service-key")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}
