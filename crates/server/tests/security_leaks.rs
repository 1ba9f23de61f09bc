//! Security suite, what leaks and what outlives its welcome (issue 14, point 6):
//!
//! * PostgreSQL error details ("Failing row contains (…)") never reach the
//!   `/internal/tick` answer (the store error's `Display` is the one sanitising place);
//! * a transport error does not put the internal LLM URL into the user-visible
//!   `errorDetails` of the failed iteration;
//! * a JWKS key removed upstream stops verifying — at the next refetch when the endpoint
//!   answers, and after the bounded stale age when it does not.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::Utc;
use mana_ai::auth::{AuthError, JwtConfig, JwtVerifier};
use mana_ai_store::testkit::rows::{mission_record, runner_data};
use mana_ai_store::testkit::{fresh_db, push_mission};
use serde_json::{json, Value};
use support::{closed_port, Api, App};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "security-leaks-key-0123";

fn env(db_url: &str, llm_url: &str) -> BTreeMap<String, String> {
    [
        ("SYNC_DATABASE_URL", db_url),
        ("MANA_LLM_URL", llm_url),
        ("MANA_SERVICE_KEY", KEY),
        ("MANA_AI_LLM_MAX_ATTEMPTS", "1"),
        ("TICK_ENABLED", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

async fn tick(app: &App) -> Value {
    // Rows become visible to the refresh once they are older than its safety margin.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = app
        .http
        .post(app.url("/internal/tick"))
        .header("x-service-key", KEY)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

#[tokio::test]
async fn tick_answers_carry_no_postgres_details() {
    let db = fresh_db("sec_sql_detail").await;
    let admin = db.admin().await;
    // Every snapshot write fails with a DETAIL carrying row contents, as a constraint
    // violation's "Failing row contains (…)" does.
    admin
        .batch_execute(
            "CREATE FUNCTION public.fail_with_detail() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               RAISE EXCEPTION 'snapshot write refused'
                 USING DETAIL = 'Failing row contains (u1, m1, secret-row-content)',
                       HINT = 'secret-hint-content';
             END $$;
             CREATE TRIGGER fail_with_detail BEFORE INSERT OR UPDATE ON mana_ai.mission_snapshots
               FOR EACH ROW EXECUTE FUNCTION public.fail_with_detail();",
        )
        .await
        .unwrap();
    push_mission(&admin, "u1", "m1", mission_record(json!({"title": "t"}))).await;
    let app = App::spawn(
        &env(
            &db.service_url,
            &format!("http://127.0.0.1:{}", closed_port()),
        ),
        Api::Off,
    )
    .await;
    let body = tick(&app).await;
    let errors = body["errors"].to_string();
    assert!(errors.contains("snapshot write refused"), "{errors}");
    for secret in [
        "Failing row",
        "secret-row-content",
        "secret-hint-content",
        "DETAIL",
    ] {
        assert!(!errors.contains(secret), "{secret} leaked: {errors}");
    }
}

#[tokio::test]
async fn transport_errors_keep_internal_urls_out_of_error_details() {
    let db = fresh_db("sec_url_leak").await;
    let admin = db.admin().await;
    let port = closed_port();
    let llm_url = format!("http://127.0.0.1:{port}/internal-llm-gateway");
    push_mission(
        &admin,
        "u1",
        "m1",
        mission_record(json!({"title": "t", "nextRunAt": "2026-01-05T06:00:00.000Z"})),
    )
    .await;
    let app = App::spawn(&env(&db.service_url, &llm_url), Api::Off).await;
    let body = tick(&app).await;
    assert_eq!(body["failed"], json!(1), "{body}");
    let data = runner_data(&admin, "m1").await.remove(0);
    let details = data["iterations"][0]["errorDetails"].to_string();
    assert!(details.contains("LLM unreachable"), "{details}");
    for secret in ["127.0.0.1", &port.to_string(), "internal-llm-gateway"] {
        assert!(!details.contains(secret), "{secret} in {details}");
    }
}

// ------------------------------------------------------------------ JWKS key removal

struct Signer {
    kp: Ed25519KeyPair,
    kid: &'static str,
}

impl Signer {
    fn new(kid: &'static str) -> Self {
        Self {
            kp: Ed25519KeyPair::generate().unwrap(),
            kid,
        }
    }

    fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid,
               "x": URL_SAFE_NO_PAD.encode(self.kp.public_key().as_ref())})
    }

    fn token(&self, iss: &str) -> String {
        let now = Utc::now().timestamp();
        let h = URL_SAFE_NO_PAD.encode(json!({"alg": "EdDSA", "kid": self.kid}).to_string());
        let p = URL_SAFE_NO_PAD.encode(
            json!({"sub": "u", "iss": iss, "aud": "mana", "exp": now + 86_400}).to_string(),
        );
        let input = format!("{h}.{p}");
        let sig = URL_SAFE_NO_PAD.encode(self.kp.sign(input.as_bytes()).as_ref());
        format!("{input}.{sig}")
    }
}

const JWKS: &str = "/api/v1/auth/jwks";

async fn advance(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

/// A JWKS endpoint that serves `first` once, then answers with `then` for every fetch.
async fn jwks(first: Value, then: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(JWKS))
        .respond_with(ResponseTemplate::new(200).set_body_json(first))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(JWKS))
        .respond_with(then)
        .with_priority(2)
        .mount(&server)
        .await;
    server
}

fn verifier(server: &MockServer) -> JwtVerifier {
    let mut cfg = JwtConfig::for_auth_url(&server.uri(), None, "mana");
    cfg.refresh_cooldown = Duration::ZERO;
    JwtVerifier::new(cfg).unwrap()
}

#[tokio::test]
async fn a_key_removed_upstream_stops_verifying_at_the_next_refetch() {
    let (old, new) = (Signer::new("old"), Signer::new("new"));
    let server = jwks(
        json!({"keys": [old.jwk()]}),
        ResponseTemplate::new(200).set_body_json(json!({"keys": [new.jwk()]})),
    )
    .await;
    let v = verifier(&server);
    let tok = old.token(&server.uri());
    v.verify(&tok).await.unwrap();
    advance(v.config().cache_ttl + Duration::from_secs(1)).await;
    assert_eq!(v.verify(&tok).await.unwrap_err(), AuthError::Invalid);
    v.verify(&new.token(&server.uri())).await.unwrap();
}

#[tokio::test]
async fn cached_keys_expire_while_the_jwks_endpoint_is_unreachable() {
    let old = Signer::new("old");
    let server = jwks(json!({"keys": [old.jwk()]}), ResponseTemplate::new(503)).await;
    let v = verifier(&server);
    let tok = old.token(&server.uri());
    v.verify(&tok).await.unwrap();
    // Past the TTL the refetch fails: the cached key still serves, within the bound.
    advance(v.config().cache_ttl + Duration::from_secs(1)).await;
    v.verify(&tok).await.unwrap();
    // Past the stale bound: refused until a fetch succeeds.
    advance(v.config().max_stale).await;
    assert_eq!(v.verify(&tok).await.unwrap_err(), AuthError::Invalid);
}
