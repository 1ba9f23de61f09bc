//! `GET /api/v1/me/ai-audit` over real HTTP against a fresh database (service role, RLS),
//! with tokens signed by a test Ed25519 key whose JWKS is served by wiremock; the JWKS
//! cache and refresh rules on the verifier itself (on a paused tokio clock); and CORS.
//! The operator commands `keys generate` / `grant mint` are tested in `cli.rs`.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::Utc;
use mana_ai::audit_http::ApiState;
use mana_ai::auth::{AuthError, Authenticator, JwtConfig, JwtVerifier};
use mana_ai_store::testkit::{fresh_db, TestDb};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{Api, App};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const JWKS_PATH: &str = "/api/v1/auth/jwks";
const USER_A: &str = "user-a";
const USER_B: &str = "user-b";

// ---------------------------------------------------------------- token helpers

struct Signer {
    kp: Ed25519KeyPair,
    kid: String,
}

impl Signer {
    fn new(kid: &str) -> Self {
        Self {
            kp: Ed25519KeyPair::generate().expect("ed25519 key"),
            kid: kid.to_string(),
        }
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(self.kp.public_key().as_ref()),
        })
    }

    fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{h}.{p}");
        let sig = URL_SAFE_NO_PAD.encode(self.kp.sign(input.as_bytes()).as_ref());
        format!("{input}.{sig}")
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": "EdDSA", "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }
}

fn now_s() -> i64 {
    Utc::now().timestamp()
}

fn claims(iss: &str, sub: &str) -> Value {
    json!({"sub": sub, "iss": iss, "aud": "mana", "iat": now_s(), "exp": now_s() + 300})
}

fn with(mut v: Value, key: &str, val: Value) -> Value {
    v[key] = val;
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().expect("object").remove(key);
    v
}

async fn jwks_server(keys: &[&Signer]) -> MockServer {
    let server = MockServer::start().await;
    let doc = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(doc))
        .mount(&server)
        .await;
    server
}

async fn jwks_hits(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == JWKS_PATH)
        .count()
}

// ---------------------------------------------------------------- app harness

fn base_env(db_url: &str, auth_url: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = [
        ("SYNC_DATABASE_URL", db_url),
        ("MANA_AUTH_URL", auth_url),
        ("MANA_SERVICE_KEY", "audit-test-service-key"),
        ("TICK_ENABLED", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        m.insert(k.to_string(), v.to_string());
    }
    m
}

/// Builds the router as `serve` does, `/api` included (`api` overrides the API state
/// built from the configuration).
async fn spawn(env: &BTreeMap<String, String>, api: Option<ApiState>) -> App {
    let api = match api {
        Some(a) => Api::Given(a),
        None => Api::FromConfig,
    };
    App::spawn(env, api).await
}

/// One seeded audit row: (user, mission, table, record, status, reason, seconds after a
/// fixed base instant).
type SeedRow<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    i64,
);

/// Inserts audit rows as the superuser (bypassing row-level security).
async fn seed(db: &TestDb, rows: &[SeedRow<'_>]) {
    let admin = db.admin().await;
    for (user, mission, table, record, status, reason, secs) in rows {
        admin
            .execute(
                "INSERT INTO mana_ai.decrypt_audit \
                 (user_id, mission_id, iteration_id, table_name, record_id, status, reason, ts) \
                 VALUES ($1, $2, CASE WHEN $5 = 'ok' THEN 'it-1' END, $3, $4, $5, $6, \
                         TIMESTAMPTZ '2026-04-28T09:00:00Z' + make_interval(secs => $7::float8))",
                &[
                    user,
                    mission,
                    table,
                    record,
                    status,
                    reason,
                    &(*secs as f64),
                ],
            )
            .await
            .expect("insert audit row");
    }
}

async fn standard_seed(db: &TestDb) {
    seed(
        db,
        &[
            (USER_A, "m1", "notes", "n1", "ok", None, 10),
            (
                USER_A,
                "m1",
                "tasks",
                "t1",
                "failed",
                Some("ciphertext-tampered-or-wrong-key"),
                30,
            ),
            (
                USER_A,
                "m2",
                "notes",
                "n2",
                "scope-violation",
                Some("not-in-grant"),
                20,
            ),
            (USER_B, "m1", "notes", "secret-b", "ok", None, 40),
            (USER_B, "m9", "events", "e9", "failed", Some("x"), 50),
        ],
    )
    .await;
}

async fn rows_of(r: reqwest::Response) -> Vec<Value> {
    assert_eq!(r.status(), StatusCode::OK, "status of {}", r.url());
    let body: Value = r.json().await.expect("json body");
    body["rows"].as_array().expect("rows array").clone()
}

async fn expect_401(r: reqwest::Response, message: &str) {
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json")),
        "401 must be JSON"
    );
    assert_eq!(
        r.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let body: Value = r.json().await.expect("json");
    assert_eq!(body, json!({ "error": message }));
}

// ---------------------------------------------------------------- endpoint tests

#[tokio::test]
async fn each_user_sees_only_their_rows_newest_first() {
    let signer = Signer::new("k1");
    let jwks = jwks_server(&[&signer]).await;
    let db = fresh_db("audit_iso").await;
    standard_seed(&db).await;
    let app = spawn(&base_env(&db.service_url, &jwks.uri(), &[]), None).await;
    let iss = jwks.uri();

    let a = rows_of(
        app.audit("", Some(&signer.sign(&claims(&iss, USER_A))))
            .await,
    )
    .await;
    let records: Vec<&str> = a.iter().map(|r| r["recordId"].as_str().unwrap()).collect();
    assert_eq!(records, vec!["t1", "n2", "n1"], "A's rows, ts DESC");
    let first = &a[0];
    assert!(
        first["id"].as_str().unwrap().parse::<i64>().is_ok(),
        "id is a string"
    );
    assert_eq!(first["missionId"], "m1");
    assert_eq!(first["iterationId"], Value::Null);
    assert_eq!(first["tableName"], "tasks");
    assert_eq!(first["status"], "failed");
    assert_eq!(first["reason"], "ciphertext-tampered-or-wrong-key");
    assert_eq!(first["ts"], "2026-04-28T09:00:30.000Z");
    assert_eq!(a[2]["iterationId"], "it-1");
    assert_eq!(a[2]["reason"], Value::Null);
    let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        vec![
            "id",
            "missionId",
            "iterationId",
            "tableName",
            "recordId",
            "status",
            "reason",
            "ts"
        ]
    );

    let b = rows_of(
        app.audit("", Some(&signer.sign(&claims(&iss, USER_B))))
            .await,
    )
    .await;
    let records: Vec<&str> = b.iter().map(|r| r["recordId"].as_str().unwrap()).collect();
    assert_eq!(records, vec!["e9", "secret-b"]);
    // B cannot reach A's rows through a shared mission id either.
    let b_m1 = rows_of(
        app.audit("?missionId=m1", Some(&signer.sign(&claims(&iss, USER_B))))
            .await,
    )
    .await;
    assert_eq!(b_m1.len(), 1);
    assert_eq!(b_m1[0]["recordId"], "secret-b");

    // A user without rows gets an empty list, not an error.
    let c = rows_of(
        app.audit("", Some(&signer.sign(&claims(&iss, "user-c"))))
            .await,
    )
    .await;
    assert!(c.is_empty());
}

#[tokio::test]
async fn mission_filter_and_limit_clamp() {
    let signer = Signer::new("k1");
    let jwks = jwks_server(&[&signer]).await;
    let db = fresh_db("audit_limit").await;
    standard_seed(&db).await;
    // 1100 more rows for A in mission "bulk".
    db.admin()
        .await
        .execute(
            "INSERT INTO mana_ai.decrypt_audit (user_id, mission_id, table_name, record_id, status, ts) \
             SELECT $1, 'bulk', 'notes', 'b' || g, 'ok', TIMESTAMPTZ '2026-01-01T00:00:00Z' + g * INTERVAL '1 second' \
             FROM generate_series(1, 1100) g",
            &[&USER_A],
        )
        .await
        .expect("bulk insert");
    let app = spawn(&base_env(&db.service_url, &jwks.uri(), &[]), None).await;
    let tok = signer.sign(&claims(&jwks.uri(), USER_A));

    let m2 = rows_of(app.audit("?missionId=m2", Some(&tok)).await).await;
    assert_eq!(m2.len(), 1);
    assert_eq!(m2[0]["recordId"], "n2");
    let m1 = rows_of(app.audit("?missionId=m1", Some(&tok)).await).await;
    assert_eq!(m1.len(), 2);
    assert!(m1.iter().all(|r| r["missionId"] == "m1"));
    let none = rows_of(app.audit("?missionId=nope", Some(&tok)).await).await;
    assert!(none.is_empty());

    for (query, want) in [
        ("", 200),
        ("?missionId=", 200),
        ("?limit=", 200),
        ("?limit=abc", 200),
        ("?limit=0", 1),
        ("?limit=-3", 1),
        ("?limit=5abc", 5),
        ("?limit=%205", 5),
        ("?limit=1000", 1000),
        ("?limit=5000", 1000),
        ("?limit=7&limit=9", 7),
        ("?missionId=bulk&limit=5000", 1000),
        ("?missionId=m1&limit=1", 1),
    ] {
        let rows = rows_of(app.audit(query, Some(&tok)).await).await;
        assert_eq!(rows.len(), want, "{query}");
    }
    // The newest rows come first across missions: the seeded April rows beat January's bulk.
    let top = rows_of(app.audit("?limit=3", Some(&tok)).await).await;
    let ids: Vec<&str> = top
        .iter()
        .map(|r| r["recordId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["t1", "n2", "n1"]);
}

#[tokio::test]
async fn bad_tokens_get_401_json() {
    let signer = Signer::new("k1");
    let impostor = Signer::new("k1"); // same kid, different key
    let jwks = jwks_server(&[&signer]).await;
    let db = fresh_db("audit_auth").await;
    standard_seed(&db).await;
    let app = spawn(
        &base_env(
            &db.service_url,
            &jwks.uri(),
            &[
                ("JWT_ISSUER", "https://issuer.example"),
                ("JWT_AUDIENCE", "mana"),
            ],
        ),
        None,
    )
    .await;
    let iss = jwks.uri();
    let good = claims(&iss, USER_A);

    expect_401(app.audit("", None).await, "Missing authorization header").await;
    let r = app
        .http
        .get(format!("{}/api/v1/me/ai-audit", app.base))
        .header("Authorization", "Basic dXNlcjpwdw==")
        .send()
        .await
        .unwrap();
    expect_401(r, "Missing authorization header").await;

    let invalid = [
        (
            "wrong issuer",
            signer.sign(&with(good.clone(), "iss", json!("https://evil.example"))),
        ),
        (
            "wrong audience",
            signer.sign(&with(good.clone(), "aud", json!("other"))),
        ),
        (
            "expired",
            signer.sign(&with(good.clone(), "exp", json!(now_s() - 5))),
        ),
        ("no exp", signer.sign(&without(good.clone(), "exp"))),
        (
            "not yet valid",
            signer.sign(&with(good.clone(), "nbf", json!(now_s() + 120))),
        ),
        ("bad signature", impostor.sign(&good)),
        ("unknown kid", Signer::new("k-unknown").sign(&good)),
        (
            "HS256 header",
            signer.sign_with_header(&json!({"alg": "HS256", "kid": "k1"}), &good),
        ),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (name, tok) in &invalid {
        let r = app.audit("", Some(tok)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{name}");
        expect_401(r, "Invalid or expired token").await;
    }
    let r = app
        .audit("", Some(&signer.sign(&without(good.clone(), "sub"))))
        .await;
    expect_401(r, "Token missing subject claim").await;

    // Accepted issuers: only JWT_ISSUER and MANA_AUTH_URL (the two issuers the original
    // always accepted are refused unless configured); audience lists.
    for iss in ["https://issuer.example", &iss] {
        let r = app
            .audit(
                "",
                Some(&signer.sign(&with(good.clone(), "iss", json!(iss)))),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK, "issuer {iss}");
    }
    for iss in ["https://auth.mana.how", "http://localhost:3001"] {
        let r = app
            .audit(
                "",
                Some(&signer.sign(&with(good.clone(), "iss", json!(iss)))),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "issuer {iss}");
    }
    let r = app
        .audit(
            "",
            Some(&signer.sign(&with(good.clone(), "aud", json!(["x", "mana"])))),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn jwks_unreachable_means_401_not_500() {
    let signer = Signer::new("k1");
    let down = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(ResponseTemplate::new(503))
        .mount(&down)
        .await;
    let db = fresh_db("audit_down").await;
    let app = spawn(&base_env(&db.service_url, &down.uri(), &[]), None).await;
    let r = app
        .audit("", Some(&signer.sign(&claims(&down.uri(), USER_A))))
        .await;
    expect_401(r, "Invalid or expired token").await;
}

#[tokio::test]
async fn dev_bypass_needs_node_env_development() {
    let db = fresh_db("audit_dev").await;
    standard_seed(&db).await;
    let nowhere = "http://127.0.0.1:9";
    let on = spawn(
        &base_env(
            &db.service_url,
            nowhere,
            &[
                ("NODE_ENV", "development"),
                ("DEV_BYPASS_AUTH", "true"),
                ("DEV_USER_ID", USER_B),
            ],
        ),
        None,
    )
    .await;
    let rows = rows_of(on.audit("", None).await).await;
    assert_eq!(rows.len(), 2, "bypass runs as DEV_USER_ID");
    assert!(rows.iter().all(|r| r["recordId"] != "n1"));

    let off = spawn(
        &base_env(
            &db.service_url,
            nowhere,
            &[
                ("NODE_ENV", "production"),
                ("DEV_BYPASS_AUTH", "true"),
                ("DEV_USER_ID", USER_B),
            ],
        ),
        None,
    )
    .await;
    expect_401(off.audit("", None).await, "Missing authorization header").await;
}

#[tokio::test]
async fn cors_preflight_and_headers_on_api_only() {
    let signer = Signer::new("k1");
    let jwks = jwks_server(&[&signer]).await;
    let db = fresh_db("audit_cors").await;
    let app = spawn(
        &base_env(
            &db.service_url,
            &jwks.uri(),
            &[(
                "MANA_AI_CORS_ORIGINS",
                "https://mana.how,http://localhost:5173",
            )],
        ),
        None,
    )
    .await;
    let url = format!("{}/api/v1/me/ai-audit", app.base);
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, &url)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type",
            )
            .send()
    };
    let h = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };

    let ok = preflight("https://mana.how").await.unwrap();
    assert!(
        ok.status().is_success(),
        "preflight answered before auth: {}",
        ok.status()
    );
    assert_eq!(
        h(&ok, "access-control-allow-origin").as_deref(),
        Some("https://mana.how")
    );
    let allowed = h(&ok, "access-control-allow-headers").unwrap_or_default();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    assert!(h(&ok, "access-control-allow-methods")
        .unwrap_or_default()
        .contains("get"));
    let dev = preflight("http://localhost:5173").await.unwrap();
    assert_eq!(
        h(&dev, "access-control-allow-origin").as_deref(),
        Some("http://localhost:5173")
    );

    let evil = preflight("https://evil.example").await.unwrap();
    assert_eq!(h(&evil, "access-control-allow-origin"), None);

    // Actual responses carry CORS too, including the 401, so the web app can read it.
    let r = app
        .get_from_origin("/api/v1/me/ai-audit", "https://mana.how")
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        h(&r, "access-control-allow-origin").as_deref(),
        Some("https://mana.how")
    );
    let r = app
        .http
        .get(&url)
        .header("Origin", "https://mana.how")
        .bearer_auth(signer.sign(&claims(&jwks.uri(), USER_A)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        h(&r, "access-control-allow-origin").as_deref(),
        Some("https://mana.how")
    );

    // Unknown /api paths: JSON 404 with CORS; outside /api: no CORS at all.
    let r = app
        .get_from_origin("/api/v1/nope", "https://mana.how")
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        h(&r, "access-control-allow-origin").as_deref(),
        Some("https://mana.how")
    );
    let r = app.get_from_origin("/health", "https://mana.how").await;
    assert_eq!(h(&r, "access-control-allow-origin"), None);
    let r = app
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/internal/tick", app.base),
        )
        .header("Origin", "https://mana.how")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(h(&r, "access-control-allow-origin"), None);

    // The metrics label is the route pattern.
    let m = app.metrics_text().await;
    assert!(
        m.contains("path=\"/api/v1/me/ai-audit\""),
        "metrics label missing"
    );
}

// ---------------------------------------------------------------- JWKS cache rules
//
// The verifier times its cache and cooldown with the tokio clock; these tests step that
// clock forward instead of sleeping through real windows, so a slow machine cannot push
// a "within the cooldown" request past it.

/// Moves the tokio clock forward by `by` at once (current-thread runtime only).
async fn advance_clock(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

fn verifier(jwks: &MockServer, cooldown: Duration, ttl: Duration) -> JwtVerifier {
    let mut cfg = JwtConfig::for_auth_url(&jwks.uri(), None, "mana");
    cfg.refresh_cooldown = cooldown;
    cfg.cache_ttl = ttl;
    JwtVerifier::new(cfg).expect("verifier")
}

#[tokio::test]
async fn unknown_kid_triggers_one_rate_limited_refresh() {
    let k1 = Signer::new("k1");
    let k2 = Signer::new("k2");
    let server = MockServer::start().await;
    // The first fetch sees only k1; later fetches see k1 and k2 (a key rotation).
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"keys": [k1.jwk()]})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"keys": [k1.jwk(), k2.jwk()]})),
        )
        .with_priority(2)
        .mount(&server)
        .await;
    let cooldown = Duration::from_secs(30);
    let v = verifier(&server, cooldown, Duration::from_secs(3600));
    let iss = server.uri();

    assert_eq!(
        v.verify(&k1.sign(&claims(&iss, "u")))
            .await
            .unwrap()
            .user_id,
        "u"
    );
    assert_eq!(jwks_hits(&server).await, 1);
    // Known kid: served from the cache.
    v.verify(&k1.sign(&claims(&iss, "u"))).await.unwrap();
    assert_eq!(jwks_hits(&server).await, 1);

    advance_clock(cooldown + Duration::from_millis(100)).await;
    // k2 is unknown to the cache: exactly one refresh finds it.
    assert_eq!(
        v.verify(&k2.sign(&claims(&iss, "u2")))
            .await
            .unwrap()
            .user_id,
        "u2"
    );
    assert_eq!(jwks_hits(&server).await, 2);

    // A forged kid within the cooldown: rejected without another fetch, however often.
    let forged = Signer::new("k-forged");
    for _ in 0..5 {
        assert_eq!(
            v.verify(&forged.sign(&claims(&iss, "u")))
                .await
                .unwrap_err(),
            AuthError::Invalid
        );
    }
    assert_eq!(jwks_hits(&server).await, 2);

    // After the cooldown, many concurrent unknown-kid requests share one fetch.
    advance_clock(cooldown + Duration::from_millis(100)).await;
    let tok = forged.sign(&claims(&iss, "u"));
    let results = futures::future::join_all((0..10).map(|_| v.verify(&tok))).await;
    assert!(results.iter().all(|r| *r == Err(AuthError::Invalid)));
    assert_eq!(jwks_hits(&server).await, 3);
}

#[tokio::test]
async fn keys_are_refetched_after_the_ttl_and_kept_when_the_fetch_fails() {
    let k1 = Signer::new("k1");
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"keys": [k1.jwk()]})))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(ResponseTemplate::new(500))
        .with_priority(2)
        .mount(&server)
        .await;
    let ttl = Duration::from_secs(600);
    let v = verifier(&server, Duration::ZERO, ttl);
    let tok = k1.sign(&claims(&server.uri(), "u"));
    v.verify(&tok).await.unwrap();
    v.verify(&tok).await.unwrap();
    assert_eq!(jwks_hits(&server).await, 1, "fresh cache");
    advance_clock(ttl + Duration::from_millis(100)).await;
    v.verify(&tok).await.unwrap();
    assert_eq!(jwks_hits(&server).await, 2, "stale cache refetched");
    advance_clock(ttl + Duration::from_millis(100)).await;
    // The auth service now fails: the cached key still verifies.
    v.verify(&tok).await.unwrap();
    assert_eq!(jwks_hits(&server).await, 3);
}

#[tokio::test]
async fn authenticator_maps_headers() {
    let k1 = Signer::new("k1");
    let server = jwks_server(&[&k1]).await;
    let auth = Authenticator::Jwt(Box::new(verifier(
        &server,
        Duration::ZERO,
        Duration::from_secs(60),
    )));
    let tok = k1.sign(&claims(&server.uri(), "u9"));
    assert_eq!(
        auth.authenticate(Some(&format!("Bearer {tok}")))
            .await
            .unwrap(),
        "u9"
    );
    assert_eq!(
        auth.authenticate(None).await.unwrap_err(),
        AuthError::MissingHeader
    );
    assert_eq!(
        auth.authenticate(Some("Token abc")).await.unwrap_err(),
        AuthError::MissingHeader
    );
    let dev = Authenticator::DevBypass {
        user_id: "dev".into(),
    };
    assert_eq!(dev.authenticate(None).await.unwrap(), "dev");
}
