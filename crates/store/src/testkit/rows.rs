//! Rows tests seed and inspect, as the superuser (the sync server owns `sync_changes`;
//! here the test plays it): one pusher for `sync_changes` rows, record fixtures for
//! missions and agents, a successful write-back request, and readers for what the runner wrote (iterations, token usage,
//! reservations, claims, research jobs, the decrypt audit).
//!
//! Every helper panics on a database error: they exist for tests.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio_postgres::types::FromSqlOwned;
use tokio_postgres::{GenericClient, Row};

use mana_ai_core::iterations::HistoryLimits;
use mana_ai_core::lww::{ChangeRow, RecordState};

use crate::WriteBack;

/// The `client_id` of the rows the runner writes back.
pub const RUNNER_CLIENT_ID: &str = "mana-ai-runner";
/// The provider every research-job fixture names.
pub const RESEARCH_PROVIDER: &str = "gemini-deep-research-max";

/// The first column of every row `sql` (no parameters) returns, in order.
pub async fn first_column<T: FromSqlOwned>(c: &impl GenericClient, sql: &str) -> Vec<T> {
    c.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The one value `sql` (no parameters) returns: first column of its one row.
pub async fn scalar<T: FromSqlOwned>(c: &impl GenericClient, sql: &str) -> T {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// The history limit of [`written_run`] (the runner's default).
pub const TEST_ITERATION_HISTORY: usize = 50;

/// A successful write-back (`failed: false`, no error) of the run `(user, mission, due_at)`
/// claimed by `runner_id`: `iteration` merged into the mission's iterations, `nextRunAt`
/// set to `next_run_at` (while the mission is still due at `due_at`).
pub fn written_run<'a>(
    (user_id, mission_id, due_at): (&'a str, &'a str, DateTime<Utc>),
    runner_id: &'a str,
    iteration: &'a Value,
    next_run_at: Option<DateTime<Utc>>,
    actor: &'a Value,
) -> WriteBack<'a> {
    WriteBack {
        user_id,
        mission_id,
        due_at,
        runner_id,
        iteration,
        next_run_at,
        actor,
        history: HistoryLimits::new(TEST_ITERATION_HISTORY),
        failed: false,
        error: None,
        space_id: None,
        loaded: None,
    }
}

/// One `sync_changes` row, as a sync client sends it. Defaults: app `ai`, op `insert`,
/// empty `field_meta`, client `webapp`, no space.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    pub user_id: &'a str,
    pub app_id: &'a str,
    pub table_name: &'a str,
    pub record_id: &'a str,
    pub op: &'a str,
    pub data: Option<Value>,
    pub field_meta: Value,
    pub client_id: &'a str,
    pub space_id: Option<&'a str>,
}

impl<'a> Change<'a> {
    /// An `insert` of `data` into `table` of app `ai`.
    pub fn new(user_id: &'a str, table_name: &'a str, record_id: &'a str, data: Value) -> Self {
        Self {
            user_id,
            app_id: "ai",
            table_name,
            record_id,
            op: "insert",
            data: Some(data),
            field_meta: json!({}),
            client_id: "webapp",
            space_id: None,
        }
    }

    pub fn app(mut self, app_id: &'a str) -> Self {
        self.app_id = app_id;
        self
    }

    pub fn op(mut self, op: &'a str) -> Self {
        self.op = op;
        self
    }

    pub fn field_meta(mut self, field_meta: Value) -> Self {
        self.field_meta = field_meta;
        self
    }

    pub fn client(mut self, client_id: &'a str) -> Self {
        self.client_id = client_id;
        self
    }

    pub fn space(mut self, space_id: &'a str) -> Self {
        self.space_id = Some(space_id);
        self
    }

    /// Inserts the row (through a client or an open transaction).
    pub async fn push(&self, c: &impl GenericClient) {
        push_change(c, self).await;
    }
}

/// Inserts one `sync_changes` row the way the sync server does.
pub async fn push_change(c: &impl GenericClient, change: &Change<'_>) {
    c.execute(
        "INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta,
                                   client_id, space_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &change.app_id,
            &change.table_name,
            &change.record_id,
            &change.user_id,
            &change.op,
            &change.data,
            &change.field_meta,
            &change.client_id,
            &change.space_id,
        ],
    )
    .await
    .expect("push sync_changes row");
}

/// Inserts a mission record (`ai`/`aiMissions`, op `insert`).
pub async fn push_mission(c: &impl GenericClient, user_id: &str, mission_id: &str, data: Value) {
    Change::new(user_id, "aiMissions", mission_id, data)
        .push(c)
        .await;
}

/// Inserts an agent record (`ai`/`agents`, op `insert`).
pub async fn push_agent(c: &impl GenericClient, user_id: &str, agent_id: &str, data: Value) {
    Change::new(user_id, "agents", agent_id, data).push(c).await;
}

/// `base` with every top-level field of `overrides` set over it (`overrides` must be an
/// object; a `null` value sets the field to `null`).
pub fn with_fields(mut base: Value, overrides: Value) -> Value {
    let fields = overrides
        .as_object()
        .expect("overrides must be a JSON object");
    for (k, v) in fields {
        base[k] = v.clone();
    }
    base
}

/// An active mission record with no inputs and no iterations, `fields` set over the
/// defaults (title `Mission`, empty concept, objective `o`, manual cadence, no next run).
pub fn mission_record(fields: Value) -> Value {
    let base = json!({
        "title": "Mission", "conceptMarkdown": "", "objective": "o", "state": "active",
        "nextRunAt": null, "cadence": {"kind": "manual"}, "inputs": [], "iterations": []
    });
    with_fields(base, fields)
}

/// An active agent record, `fields` set over the defaults (name `Scout`, role
/// `Researcher`, one concurrent mission, an empty `propose` policy).
pub fn agent_record(fields: Value) -> Value {
    let base = json!({
        "name": "Scout", "role": "Researcher", "state": "active", "maxConcurrentMissions": 1,
        "policy": {"tools": {}, "defaultForAi": "propose"}
    });
    with_fields(base, fields)
}

/// Every row the runner wrote for `mission_id`, oldest first, with the columns
/// `app_id, table_name, record_id, user_id, op, data, field_meta, client_id,
/// schema_version, actor, origin, space_id`.
pub async fn runner_rows(c: &impl GenericClient, mission_id: &str) -> Vec<Row> {
    c.query(
        "SELECT app_id, table_name, record_id, user_id, op, data, field_meta, client_id,
                schema_version, actor, origin, space_id
           FROM sync_changes WHERE record_id = $1 AND client_id = $2
          ORDER BY created_at",
        &[&mission_id, &RUNNER_CLIENT_ID],
    )
    .await
    .expect("read runner rows")
}

/// The `data` of every row the runner wrote for `mission_id`, oldest first.
pub async fn runner_data(c: &impl GenericClient, mission_id: &str) -> Vec<Value> {
    runner_rows(c, mission_id)
        .await
        .iter()
        .map(|r| r.get("data"))
        .collect()
}

/// The mission `mission_id` of `user_id` as every reader converges to it: core's LWW
/// merge of all its rows (`None` when absent or deleted).
pub async fn merged_mission(
    c: &impl GenericClient,
    user_id: &str,
    mission_id: &str,
) -> Option<Value> {
    let rows = c
        .query(
            "SELECT op, data, field_meta, created_at FROM sync_changes
              WHERE user_id = $1 AND app_id = 'ai' AND table_name = 'aiMissions'
                AND record_id = $2",
            &[&user_id, &mission_id],
        )
        .await
        .expect("read mission rows");
    let changes: Vec<ChangeRow> = rows
        .iter()
        .map(|r| ChangeRow {
            op: r.get::<_, String>(0).parse().expect("op"),
            data: r.get(1),
            field_meta: r.get(2),
            created_at: r.get(3),
        })
        .collect();
    RecordState::merge(&changes).to_record(mission_id)
}

/// How many rows the runner wrote: for one mission, or (`None`) for all.
pub async fn runner_row_count(c: &impl GenericClient, mission_id: Option<&str>) -> i64 {
    c.query_one(
        "SELECT count(*) FROM sync_changes
          WHERE client_id = $1 AND ($2::text IS NULL OR record_id = $2)",
        &[&RUNNER_CLIENT_ID, &mission_id],
    )
    .await
    .expect("count runner rows")
    .get(0)
}

/// The `(user_id, agent_id, mission_id, tokens_used)` rows of the token usage table.
pub async fn token_usage_rows(c: &impl GenericClient) -> Vec<(String, String, String, i32)> {
    c.query(
        "SELECT user_id, agent_id, mission_id, tokens_used FROM mana_ai.token_usage",
        &[],
    )
    .await
    .expect("read token usage")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

/// Tokens booked for `agent_id` (all users, all time).
pub async fn token_usage_sum(c: &impl GenericClient, agent_id: &str) -> i64 {
    c.query_one(
        "SELECT COALESCE(SUM(tokens_used), 0)::bigint FROM mana_ai.token_usage WHERE agent_id = $1",
        &[&agent_id],
    )
    .await
    .expect("sum token usage")
    .get(0)
}

/// Books `tokens` for `agent_id` of mission `old-mission`, `age` (an SQL interval such
/// as `"2 hours"`) ago.
pub async fn insert_token_usage(
    c: &impl GenericClient,
    user_id: &str,
    agent_id: &str,
    tokens: i32,
    age: &str,
) {
    c.execute(
        "INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, tokens_used, ts)
         VALUES ($1, $2, 'old-mission', $3, now() - $4::text::interval)",
        &[&user_id, &agent_id, &tokens, &age],
    )
    .await
    .expect("insert token usage");
}

/// Deletes every booked token usage row.
pub async fn clear_token_usage(c: &impl GenericClient) {
    c.execute("DELETE FROM mana_ai.token_usage", &[])
        .await
        .expect("clear token usage");
}

/// Holds `tokens` for a call of `mission_id` in flight, expiring `expires_in` (an SQL
/// interval, negative for an already expired reservation) from now.
pub async fn insert_reservation(
    c: &impl GenericClient,
    user_id: &str,
    agent_id: &str,
    mission_id: &str,
    tokens: i64,
    expires_in: &str,
) {
    c.execute(
        "INSERT INTO mana_ai.token_reservations (user_id, agent_id, mission_id, tokens, expires_at)
         VALUES ($1, $2, $3, $4, now() + $5::text::interval)",
        &[&user_id, &agent_id, &mission_id, &tokens, &expires_in],
    )
    .await
    .expect("insert reservation");
}

/// The tokens of every reservation row (expired or not), in id order.
pub async fn reservation_tokens(c: &impl GenericClient) -> Vec<i64> {
    c.query(
        "SELECT tokens FROM mana_ai.token_reservations ORDER BY id",
        &[],
    )
    .await
    .expect("read reservations")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// How many mission runs (claims) exist: all, or (`Some`) those with this status.
pub async fn run_count(c: &impl GenericClient, status: Option<&str>) -> i64 {
    c.query_one(
        "SELECT count(*) FROM mana_ai.mission_runs WHERE $1::text IS NULL OR status = $1",
        &[&status],
    )
    .await
    .expect("count mission runs")
    .get(0)
}

/// The status of every run of `mission_id`.
pub async fn run_statuses(c: &impl GenericClient, mission_id: &str) -> Vec<String> {
    c.query(
        "SELECT status FROM mana_ai.mission_runs WHERE mission_id = $1 ORDER BY due_at",
        &[&mission_id],
    )
    .await
    .expect("read mission runs")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// A `mana_ai.mission_research_jobs` row to seed (provider [`RESEARCH_PROVIDER`]).
#[derive(Debug, Clone)]
pub struct JobRow<'a> {
    pub user_id: &'a str,
    pub mission_id: &'a str,
    pub task_id: &'a str,
    /// `None`: the database's `now()`.
    pub due_at: Option<DateTime<Utc>>,
    pub idempotency_key: Option<&'a str>,
    pub state: &'a str,
    pub result: Option<&'a str>,
}

/// Inserts a research job row.
pub async fn insert_research_job(c: &impl GenericClient, job: &JobRow<'_>) {
    c.execute(
        "INSERT INTO mana_ai.mission_research_jobs
             (user_id, mission_id, task_id, provider_id, due_at, idempotency_key, state, result)
         VALUES ($1, $2, $3, $4, COALESCE($5, now()), $6, $7, $8)",
        &[
            &job.user_id,
            &job.mission_id,
            &job.task_id,
            &RESEARCH_PROVIDER,
            &job.due_at,
            &job.idempotency_key,
            &job.state,
            &job.result,
        ],
    )
    .await
    .expect("insert research job");
}

/// A research job's `(state, task_id, due_at, idempotency_key)`.
pub type JobSummary = (String, String, Option<DateTime<Utc>>, Option<String>);

/// `(state, task_id, due_at, idempotency_key)` of every job row of `mission_id`.
pub async fn research_jobs(c: &impl GenericClient, mission_id: &str) -> Vec<JobSummary> {
    c.query(
        "SELECT state, task_id, due_at, idempotency_key FROM mana_ai.mission_research_jobs
          WHERE mission_id = $1",
        &[&mission_id],
    )
    .await
    .expect("read research jobs")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

/// The mission ids of every research job row.
pub async fn research_job_missions(c: &impl GenericClient) -> Vec<String> {
    c.query("SELECT mission_id FROM mana_ai.mission_research_jobs", &[])
        .await
        .expect("read research jobs")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Moves every research job's submission `age` (an SQL interval) into the past.
pub async fn age_research_jobs(c: &impl GenericClient, age: &str) {
    c.execute(
        "UPDATE mana_ai.mission_research_jobs SET submitted_at = now() - $1::text::interval",
        &[&age],
    )
    .await
    .expect("age research jobs");
}

/// A decrypt-audit row's `(table, record, status, reason, iteration)`.
pub type AuditSummary = (String, String, String, Option<String>, Option<String>);

/// `(table, record, status, reason, iteration)` of every decrypt-audit row, sorted.
pub async fn decrypt_audit_rows(c: &impl GenericClient) -> Vec<AuditSummary> {
    let mut rows: Vec<AuditSummary> = c
        .query(
            "SELECT table_name, record_id, status, reason, iteration_id FROM mana_ai.decrypt_audit",
            &[],
        )
        .await
        .expect("read decrypt audit")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    rows.sort();
    rows
}
