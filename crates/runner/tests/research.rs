//! Research before planning, against a real PostgreSQL, fake mana-api / mana-research
//! servers and a fake LLM: the exact injected markdown, credentials, failures that only
//! drop the input, and the deep-research job life cycle across ticks (one job per
//! mission and due run, idempotent submits, abandonment, cleanup).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mana_ai_core::iso::parse_iso;
use mana_ai_runner::research::{idempotency_key, ServiceKey};
use mana_ai_runner::testkit::http::{ok_json as ok, Sequence};
use mana_ai_runner::testkit::{metric_value, FakeLlm, Reply, RunnerBuilder};
use mana_ai_runner::{Runner, RunnerConfig};
use mana_ai_store::testkit::rows::{
    age_research_jobs, insert_research_job, mission_record, research_job_missions, research_jobs,
    runner_data, JobRow, JobSummary,
};
use mana_ai_store::testkit::{fresh_db, push_mission, TestDb};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const DUE: &str = "2026-01-05T06:00:00.000Z";
const NOTE: &str =
    "Nutze diese Quellen fuer deinen Plan. Verwende nur URLs die oben stehen; erfinde keine.";
const DISCOVER: &str = "/api/v1/news-research/discover";
const SEARCH: &str = "/api/v1/news-research/search";
const SUBMIT: &str = "/api/v1/internal/research/async";
const POLL: &str = "/api/v1/internal/research/async/task-1";
const PROVIDER: &str = "gemini-deep-research-max";

/// Answers from a script, one entry per call (the last repeats).
fn script(replies: Vec<ResponseTemplate>) -> Sequence {
    Sequence::new(replies)
}

fn fake_llm() -> Arc<FakeLlm> {
    FakeLlm::replying(Reply::text("Nichts zu tun.").usage(10, 2))
}

/// A mana-api whose discover and search answer as given.
async fn news_api(discover: ResponseTemplate, search: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DISCOVER))
        .respond_with(discover)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(SEARCH))
        .respond_with(search)
        .mount(&server)
        .await;
    server
}

fn two_feeds() -> ResponseTemplate {
    ok(json!({"feeds": [
        {"url": "https://f1.example/rss", "title": "F1", "description": "eins"},
        {"url": "https://f2.example/rss", "title": "F2", "description": null}
    ]}))
}

fn two_articles() -> ResponseTemplate {
    ok(json!({"articles": [
        {"url": "https://a.example/1", "title": "Windpark eröffnet", "excerpt": "Ein neuer Park.",
         "publishedAt": "2026-01-04T10:00:00Z", "feedUrl": "https://f1.example/rss", "score": 0.9},
        {"url": "https://b.example/2", "title": "Netzausbau", "excerpt": null,
         "publishedAt": null, "feedUrl": "https://f2.example/rss", "score": 0.5}
    ]}))
}

const WEB_MD_BODY: &str = "2 Quellen durchsucht, 2 relevante Artikel gefunden:\n\n\
## Windpark eröffnet\n> Ein neuer Park.\nURL: https://a.example/1\nDatum: 2026-01-04T10:00:00Z\n\n\
## Netzausbau\nURL: https://b.example/2\n\n---\n";

fn web_markdown(query: &str) -> String {
    format!("# Web-Research: \"{query}\"\n\n{WEB_MD_BODY}{NOTE}")
}

/// A mana-research that accepts a submit as `task-1` and answers polls from a script.
async fn research_api(polls: Vec<ResponseTemplate>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SUBMIT))
        .respond_with(ok(json!({"taskId": "task-1", "status": "queued",
                                "providerId": "gemini-deep-research-max", "costCredits": 5})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(POLL))
        .respond_with(script(polls))
        .mount(&server)
        .await;
    server
}

fn status(s: &str) -> ResponseTemplate {
    ok(json!({"taskId": "task-1", "status": s, "providerId": "gemini-deep-research-max"}))
}

fn completed() -> ResponseTemplate {
    ok(
        json!({"taskId": "task-1", "status": "completed", "providerId": "gemini-deep-research-max",
        "result": {"answer": {"query": "q", "answer": "  Wärmepumpen werden günstiger.\n",
            "citations": [
                {"url": "https://c.example/1", "title": "Studie", "snippet": "Preise sinken"},
                {"url": "https://c.example/2", "title": "Bericht"}
            ]}}}),
    )
}

fn runner(db: &TestDb, llm: &Arc<FakeLlm>, tweak: impl FnOnce(&mut RunnerConfig)) -> Runner {
    RunnerBuilder::new(db)
        .llm(llm.clone())
        .config(|c| c.service_key = ServiceKey::new("svc-secret"))
        .config(tweak)
        .build()
}

fn mission(objective: &str, cadence: Value) -> Value {
    mission_record(
        json!({"title": "Recherche", "objective": objective, "nextRunAt": DUE,
                          "cadence": cadence}),
    )
}

fn hourly() -> Value {
    json!({"kind": "interval", "everyMinutes": 60})
}

/// A fresh database, its admin client and the fake LLM every test here plans with.
async fn setup(name: &str) -> (TestDb, tokio_postgres::Client, Arc<FakeLlm>) {
    let db = fresh_db(name).await;
    let admin = db.admin().await;
    (db, admin, fake_llm())
}

/// Pushes an hourly research mission with this objective.
async fn push(admin: &tokio_postgres::Client, user: &str, mission_id: &str, objective: &str) {
    push_mission(admin, user, mission_id, mission(objective, hourly())).await;
}

/// Turns deep research on against this mana-research.
fn deep(c: &mut RunnerConfig, research: &MockServer) {
    c.research_url = Some(research.uri());
    c.deep_research_enabled = true;
}

/// The rendered metrics `m` carry a sample of `name` with these labels.
fn assert_metric_seen(m: &str, name: &str, labels: &[(&str, &str)], context: &str) {
    assert!(metric_value(m, name, labels).is_some(), "{context}{m}");
}

async fn server_rows(admin: &tokio_postgres::Client, mission: &str) -> Vec<Value> {
    runner_data(admin, mission).await
}

/// (state, task_id, due_at, idempotency_key) of every job row of a mission.
async fn job_rows(admin: &tokio_postgres::Client, mission: &str) -> Vec<JobSummary> {
    research_jobs(admin, mission).await
}

/// The user prompt of the `i`-th LLM request.
fn user_prompt(llm: &FakeLlm, i: usize) -> String {
    llm.user_prompts()[i].clone()
}

async fn requests_to(server: &MockServer, p: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == p)
        .collect()
}

fn header(r: &Request, name: &str) -> Option<String> {
    r.headers.get(name).map(|v| v.to_str().unwrap().to_string())
}

fn body(r: &Request) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn due() -> DateTime<Utc> {
    parse_iso(DUE).unwrap()
}

#[tokio::test]
async fn shallow_research_injects_the_exact_markdown_with_credentials() {
    let (db, admin, llm) = setup("res_shallow").await;
    let news = news_api(two_feeds(), two_articles()).await;
    let objective =
        "Recherchiere Nachrichten zur Energiewende in Norddeutschland und fasse sie kurz zusammen";
    push(&admin, "u1", "m1", objective).await;
    let r = runner(&db, &llm, |c| c.news_api_url = Some(news.uri()));
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");

    let prompt = user_prompt(&llm, 0);
    let title: String = objective.chars().take(60).collect();
    // A German mission: the prompt's labels are German.
    let expected = format!(
        "Titel: Web-Research: \"{title}\"\n{}",
        web_markdown(objective)
    );
    assert!(prompt.contains(&expected), "{prompt}");
    assert!(prompt.contains("id=\"__web-research__\" source=\"news-research/web\""));

    let discover = requests_to(&news, DISCOVER).await;
    assert_eq!(discover.len(), 1);
    assert_eq!(
        body(&discover[0]),
        json!({"query": objective, "language": "de", "limit": 5})
    );
    let search = requests_to(&news, SEARCH).await;
    assert_eq!(search.len(), 1);
    assert_eq!(
        body(&search[0]),
        json!({"feeds": ["https://f1.example/rss", "https://f2.example/rss"],
               "query": objective, "limit": 8})
    );
    for req in [&discover[0], &search[0]] {
        assert_eq!(header(req, "x-service-key").as_deref(), Some("svc-secret"));
        assert_eq!(header(req, "x-user-id").as_deref(), Some("u1"));
    }
    let m = r.metrics().render();
    assert_metric_seen(
        &m,
        "mana_ai_shallow_research_total",
        &[("outcome", "ok")],
        "",
    );
    assert!(!m.contains("svc-secret"));
}

#[tokio::test]
async fn shallow_research_header_names_are_configurable_and_can_be_off() {
    let (db, admin, llm) = setup("res_headers").await;
    let news = news_api(two_feeds(), two_articles()).await;
    push(&admin, "u7", "m1", "News des Tages").await;
    let r = runner(&db, &llm, |c| {
        c.news_api_url = Some(news.uri());
        c.news_service_key_header = None;
        c.news_user_id_header = Some("X-Mana-User".into());
    });
    assert_eq!(r.tick().await.plans_written_back, 1);
    let discover = requests_to(&news, DISCOVER).await;
    assert_eq!(header(&discover[0], "x-service-key"), None);
    assert_eq!(header(&discover[0], "x-user-id"), None);
    assert_eq!(header(&discover[0], "x-mana-user").as_deref(), Some("u7"));
    assert!(user_prompt(&llm, 0).contains("# Web-Research: \"News des Tages\""));
}

#[tokio::test]
async fn shallow_research_failures_drop_the_input_and_the_mission_still_plans() {
    let (db, admin, llm) = setup("res_shallow_fail").await;
    let cases: Vec<(&str, ResponseTemplate, ResponseTemplate)> = vec![
        (
            "unauthorized",
            ResponseTemplate::new(401).set_body_string("{\"error\":\"no token\"}"),
            two_articles(),
        ),
        (
            "http-error",
            two_feeds(),
            ResponseTemplate::new(500).set_body_string("boom"),
        ),
        (
            "timeout",
            two_feeds().set_delay(Duration::from_secs(3)),
            two_articles(),
        ),
        (
            "invalid-response",
            ResponseTemplate::new(200).set_body_string("<html>not json</html>"),
            two_articles(),
        ),
        ("invalid-response", two_feeds(), ok(json!({"results": []}))),
        ("no-feeds", ok(json!({"feeds": []})), two_articles()),
        ("no-articles", two_feeds(), ok(json!({"articles": []}))),
    ];
    for (i, (outcome, discover, search)) in cases.into_iter().enumerate() {
        let news = news_api(discover, search).await;
        let user = format!("u{i}");
        push_mission(
            &admin,
            &user,
            &format!("m{i}"),
            mission("Suche Neuigkeiten", hourly()),
        )
        .await;
        let r = runner(&db, &llm, |c| {
            c.news_api_url = Some(news.uri());
            c.research_timeouts.discover = Duration::from_millis(300);
        });
        let stats = r.tick().await;
        assert_eq!(stats.plans_written_back, 1, "{outcome}: {stats:?}");
        assert!(stats.errors.is_empty(), "{outcome}: {stats:?}");
        let prompt = user_prompt(&llm, i);
        assert!(prompt.contains("Suche Neuigkeiten"), "case {i}");
        assert!(!prompt.contains("Web-Research"), "{outcome}: {prompt}");
        assert_metric_seen(
            &r.metrics().render(),
            "mana_ai_shallow_research_total",
            &[("outcome", outcome)],
            &format!("{outcome}: "),
        );
        let data = &server_rows(&admin, &format!("m{i}")).await[0];
        assert_ne!(
            data["iterations"][0]["overallStatus"], "failed",
            "{outcome}"
        );
    }
}

#[tokio::test]
async fn deep_research_pending_then_completed_answers_the_due_run_once() {
    let (db, admin, llm) = setup("res_deep").await;
    let research = research_api(vec![status("running"), completed()]).await;
    let news = news_api(two_feeds(), two_articles()).await;
    let objective = "Deep Dive: aktuelle Entwicklungen bei Wärmepumpen";
    push(&admin, "u1", "m1", objective).await;
    let r = runner(&db, &llm, |c| {
        c.news_api_url = Some(news.uri());
        deep(c, &research);
    });

    // Tick 1: submitted, mission skipped, nothing written.
    let stats = r.tick().await;
    assert_eq!(
        (stats.skipped, stats.plans_written_back),
        (1, 0),
        "{stats:?}"
    );
    assert!(server_rows(&admin, "m1").await.is_empty());
    let key = idempotency_key("u1", "m1", due()).to_string();
    assert_eq!(
        job_rows(&admin, "m1").await,
        vec![(
            "pending".into(),
            "task-1".into(),
            Some(due()),
            Some(key.clone())
        )]
    );
    let submits = requests_to(&research, SUBMIT).await;
    assert_eq!(submits.len(), 1);
    let s = &submits[0];
    assert_eq!(
        body(s),
        json!({"query": objective, "provider": "gemini-deep-research-max"})
    );
    assert_eq!(header(s, "x-service-key").as_deref(), Some("svc-secret"));
    assert_eq!(header(s, "x-user-id").as_deref(), Some("u1"));
    assert_eq!(header(s, "x-app-id").as_deref(), Some("mana-ai"));
    assert_eq!(header(s, "idempotency-key").as_deref(), Some(key.as_str()));

    // Tick 2: still running, skipped again.
    let stats = r.tick().await;
    assert_eq!(
        (stats.skipped, stats.plans_written_back),
        (1, 0),
        "{stats:?}"
    );
    assert!(llm.requests().is_empty());
    // Deferred runs are not "ran": that counts written plans only.
    let ran = || {
        r.metrics()
            .agent_decisions_total
            .with_label_values(&["ran"])
            .get()
    };
    assert_eq!(ran(), 0);

    // Tick 3: completed, injected, planned, next run scheduled.
    let before = Utc::now();
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    let prompt = user_prompt(&llm, 0);
    let expected = format!(
        "Titel: Deep Research: \"{objective}\"\n# Deep-Research: \"{objective}\"\n\n\
         Wärmepumpen werden günstiger.\n\n## Quellen\n\
         - [Studie](https://c.example/1) — Preise sinken\n- [Bericht](https://c.example/2)\n\n---\n{NOTE}"
    );
    assert!(prompt.contains(&expected), "{prompt}");
    assert!(!prompt.contains("# Web-Research"));
    let rows = server_rows(&admin, "m1").await;
    assert_eq!(rows.len(), 1);
    let next = parse_iso(rows[0]["nextRunAt"].as_str().unwrap()).unwrap();
    assert!(next > before);
    assert_eq!(ran(), 1);

    // Later ticks: not due, no second submit, no more polls.
    for _ in 0..2 {
        let stats = r.tick().await;
        assert_eq!(stats.due_mission_count, 0, "{stats:?}");
    }
    assert_eq!(requests_to(&research, SUBMIT).await.len(), 1);
    assert_eq!(requests_to(&research, POLL).await.len(), 2);
    assert!(requests_to(&news, DISCOVER).await.is_empty());
    let m = r.metrics().render();
    let provider = [("provider", PROVIDER), ("service", "mana-ai")];
    for (name, labels, want) in [
        ("mana_ai_research_jobs_submitted_total", &provider[..], 1.0),
        ("mana_ai_research_jobs_completed_total", &provider[..], 1.0),
        (
            "mana_ai_research_jobs_pending_skips_total",
            &provider[1..],
            2.0,
        ),
    ] {
        assert_eq!(metric_value(&m, name, labels), Some(want), "{name}:\n{m}");
    }
}

#[tokio::test]
async fn a_failed_job_falls_back_to_shallow_research() {
    let (db, admin, llm) = setup("res_deep_fail").await;
    let research = research_api(vec![status("failed")]).await;
    let news = news_api(two_feeds(), two_articles()).await;
    let objective = "Tiefe Recherche: aktuelle Mietpreise";
    push(&admin, "u1", "m1", objective).await;
    let r = runner(&db, &llm, |c| {
        c.news_api_url = Some(news.uri());
        deep(c, &research);
    });
    assert_eq!(r.tick().await.skipped, 1);
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    assert!(user_prompt(&llm, 0).contains(&web_markdown(objective)));
    assert_eq!(job_rows(&admin, "m1").await[0].0, "failed");
    assert_eq!(requests_to(&research, SUBMIT).await.len(), 1);
    let m = r.metrics().render();
    assert_eq!(
        metric_value(
            &m,
            "mana_ai_research_jobs_failed_total",
            &[("provider", PROVIDER), ("service", "mana-ai")]
        ),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test]
async fn a_stuck_job_is_abandoned_after_the_max_age() {
    let (db, admin, llm) = setup("res_stuck").await;
    let research = research_api(vec![status("running")]).await;
    let news = news_api(two_feeds(), two_articles()).await;
    let objective = "Deep research: aktuelle Zinsen";
    push(&admin, "u1", "m1", objective).await;
    let r = runner(&db, &llm, |c| {
        c.news_api_url = Some(news.uri());
        deep(c, &research);
        c.research_job_max_age = Duration::from_secs(3600);
    });
    assert_eq!(r.tick().await.skipped, 1);
    assert_eq!(r.tick().await.skipped, 1);
    age_research_jobs(&admin, "2 hours").await;
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    assert!(user_prompt(&llm, 0).contains(&web_markdown(objective)));
    // Abandoned without polling again, and never re-submitted for this due run.
    assert_eq!(requests_to(&research, POLL).await.len(), 1);
    assert_eq!(requests_to(&research, SUBMIT).await.len(), 1);
    assert_eq!(job_rows(&admin, "m1").await[0].0, "abandoned");
    assert_metric_seen(
        &r.metrics().render(),
        "mana_ai_research_jobs_abandoned_total",
        &[("reason", "max-age")],
        "",
    );
}

#[tokio::test]
async fn polls_that_keep_failing_abandon_the_job() {
    let (db, admin, llm) = setup("res_poll_fail").await;
    let research = research_api(vec![
        ResponseTemplate::new(404).set_body_string("{\"error\":\"unknown task\"}")
    ])
    .await;
    push(&admin, "u1", "m1", "Deep dive Steuern").await;
    let r = runner(&db, &llm, |c| {
        deep(c, &research);
        c.research_max_poll_failures = 2;
    });
    assert_eq!(r.tick().await.skipped, 1, "submit");
    assert_eq!(r.tick().await.skipped, 1, "first failed poll");
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 1, "second failed poll: {stats:?}");
    assert_eq!(requests_to(&research, POLL).await.len(), 2);
    assert_metric_seen(
        &r.metrics().render(),
        "mana_ai_research_jobs_abandoned_total",
        &[("reason", "poll-failures")],
        "",
    );
}

#[tokio::test]
async fn a_crash_between_row_and_submit_resubmits_with_the_same_key() {
    let (db, admin, llm) = setup("res_crash").await;
    let research = research_api(vec![status("queued")]).await;
    push(&admin, "u1", "m1", "Deep research Bahnstreik").await;
    // A previous runner wrote the row and died before submitting.
    let key = idempotency_key("u1", "m1", due()).to_string();
    insert_research_job(
        &admin,
        &JobRow {
            user_id: "u1",
            mission_id: "m1",
            task_id: "",
            due_at: Some(due()),
            idempotency_key: Some(&key),
            state: "submitting",
            result: None,
        },
    )
    .await;
    let r = runner(&db, &llm, |c| {
        deep(c, &research);
    });
    assert_eq!(r.tick().await.skipped, 1);
    let submits = requests_to(&research, SUBMIT).await;
    assert_eq!(submits.len(), 1);
    assert_eq!(
        header(&submits[0], "idempotency-key").as_deref(),
        Some(key.as_str())
    );
    assert_eq!(
        job_rows(&admin, "m1").await,
        vec![("pending".into(), "task-1".into(), Some(due()), Some(key))]
    );
}

#[tokio::test]
async fn an_ambiguous_submit_failure_retries_with_the_same_key() {
    let (db, admin, llm) = setup("res_retry").await;
    let research = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SUBMIT))
        .respond_with(script(vec![
            ResponseTemplate::new(503),
            ok(json!({"taskId": "task-1", "status": "queued"})),
        ]))
        .mount(&research)
        .await;
    push(&admin, "u1", "m1", "Deep research Bahnstreik").await;
    let r = runner(&db, &llm, |c| {
        deep(c, &research);
    });
    assert_eq!(r.tick().await.skipped, 1);
    assert_eq!(job_rows(&admin, "m1").await[0].0, "submitting");
    assert_eq!(r.tick().await.skipped, 1);
    let keys: Vec<Option<String>> = requests_to(&research, SUBMIT)
        .await
        .iter()
        .map(|r| header(r, "idempotency-key"))
        .collect();
    assert_eq!(keys.len(), 2);
    assert!(keys[0].is_some());
    assert_eq!(keys[0], keys[1]);
    let rows = job_rows(&admin, "m1").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1.as_str()),
        ("pending", "task-1")
    );
}

#[tokio::test]
async fn a_finished_job_answers_only_its_own_due_run() {
    let (db, admin, llm) = setup("res_keyed").await;
    let research = research_api(vec![status("queued")]).await;
    // m1: its job already completed for THIS due run (a retried run): reuse, no submit.
    push(&admin, "u1", "m1", "Deep dive Solarpflicht").await;
    // m2: its job completed for an EARLIER due run: this run submits a new job.
    push(&admin, "u2", "m2", "Deep dive Solarpflicht").await;
    let earlier = due() - chrono::Duration::hours(1);
    for (user, mid, at) in [("u1", "m1", due()), ("u2", "m2", earlier)] {
        let job = JobRow {
            user_id: user,
            mission_id: mid,
            task_id: "old",
            due_at: Some(at),
            idempotency_key: Some("k"),
            state: "completed",
            result: Some("STORED ANSWER"),
        };
        insert_research_job(&admin, &job).await;
    }
    let r = runner(&db, &llm, |c| {
        deep(c, &research);
    });
    let stats = r.tick().await;
    assert_eq!(
        (stats.plans_written_back, stats.skipped),
        (1, 1),
        "{stats:?}"
    );
    assert!(user_prompt(&llm, 0).contains("STORED ANSWER"));
    assert_eq!(server_rows(&admin, "m1").await.len(), 1);
    let submits = requests_to(&research, SUBMIT).await;
    assert_eq!(submits.len(), 1);
    assert_eq!(header(&submits[0], "x-user-id").as_deref(), Some("u2"));
    let m2 = job_rows(&admin, "m2").await;
    assert_eq!(m2.len(), 1);
    assert_eq!((m2[0].0.as_str(), m2[0].2), ("pending", Some(due())));
}

#[tokio::test]
async fn jobs_of_inactive_missions_are_cleaned_up_each_tick() {
    let (db, admin, llm) = setup("res_cleanup").await;
    let future = "2099-01-01T00:00:00.000Z";
    let mut active = mission("Deep dive", hourly());
    active["nextRunAt"] = json!(future);
    let mut paused = active.clone();
    paused["state"] = json!("paused");
    let mut archived = active.clone();
    archived["state"] = json!("archived");
    let mut deleted = active.clone();
    deleted["deletedAt"] = json!("2026-01-01T00:00:00.000Z");
    for (id, m) in [
        ("ma", active),
        ("mp", paused),
        ("mr", archived),
        ("md", deleted),
    ] {
        push_mission(&admin, "u1", id, m).await;
    }
    for (id, state) in [
        ("ma", "pending"),
        ("mp", "pending"),
        ("mr", "completed"),
        ("md", "pending"),
        ("gone", "pending"),
    ] {
        let job = JobRow {
            user_id: "u1",
            mission_id: id,
            task_id: "t",
            due_at: None,
            idempotency_key: None,
            state,
            result: None,
        };
        insert_research_job(&admin, &job).await;
    }
    let r = runner(&db, &llm, |_| {});
    r.tick().await;
    let left = research_job_missions(&admin).await;
    assert_eq!(left, vec!["ma".to_string()]);
    let m = r.metrics().render();
    assert_eq!(
        metric_value(
            &m,
            "mana_ai_research_jobs_abandoned_total",
            &[("reason", "mission-inactive"), ("service", "mana-ai")]
        ),
        Some(3.0),
        "{m}"
    );
}
