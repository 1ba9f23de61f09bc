//! Security suite, HTTP side (issue 14, points 1–3): the attacks as tests.
//!
//! * `serve` refuses a public, empty or short service key (and the auth bypass) on a
//!   network address: exit code 2, one line naming the variable;
//! * slow-header (half a request line) and idle keep-alive connections are closed by the
//!   server loop `serve` uses ([`mana_ai::http_server`]), a slow request is answered 408,
//!   connections beyond the cap wait;
//! * invented HTTP methods do not mint `method` label values.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use mana_ai::config::HttpLimits;
use mana_ai::http_server;
use mana_ai_store::testkit::fresh_db;
use support::{metric_value, Api, App};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_mana-ai");

/// Runs `mana-ai serve` with only `env` (plus a database URL nothing listens on) and
/// returns (exit code, stderr). A refused configuration exits before touching it.
fn serve_with_env(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut c = Command::new(BIN);
    c.arg("serve")
        .env_clear()
        .env(
            "SYNC_DATABASE_URL",
            format!(
                "postgresql://u:p@127.0.0.1:{}/db?connect_timeout=1",
                support::closed_port()
            ),
        )
        .env("TICK_ENABLED", "false")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run mana-ai");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_refuses_a_public_empty_or_short_key_on_a_network_address() {
    let cases: [&[(&str, &str)]; 5] = [
        &[],                                        // unset ⇒ the public default
        &[("MANA_SERVICE_KEY", "")],                // empty (compose with an unset var)
        &[("MANA_SERVICE_KEY", "dev-service-key")], // the documented default
        &[("MANA_SERVICE_KEY", "0123456789abcde")], // 15 bytes
        &[
            ("MANA_SERVICE_KEY", "0123456789abcdef"),
            ("MANA_AI_BIND", "0.0.0.0"),
            ("NODE_ENV", "development"),
            ("DEV_BYPASS_AUTH", "true"),
        ],
    ];
    for (i, env) in cases.iter().enumerate() {
        let (code, stderr) = serve_with_env(env);
        assert_eq!(code, Some(2), "case {i}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "case {i}: one line: {stderr}");
        let var = if i == 4 {
            "DEV_BYPASS_AUTH"
        } else {
            "MANA_SERVICE_KEY"
        };
        assert!(lines[0].contains(var), "case {i}: {stderr}");
    }
}

#[test]
fn serve_accepts_a_weak_key_on_loopback_and_a_strong_key_anywhere() {
    // Neither is refused by the exposure check: both get as far as the database (which
    // does not answer), so the exit is a runtime failure (1), not a refusal (2).
    for env in [
        &[("MANA_AI_BIND", "127.0.0.1")][..],
        &[("MANA_SERVICE_KEY", "0123456789abcdef")][..],
    ] {
        let (code, stderr) = serve_with_env(env);
        assert_eq!(code, Some(1), "{env:?}: {stderr}");
        assert!(!stderr.contains("invalid MANA_SERVICE_KEY"), "{stderr}");
    }
}

/// The server loop with `limits` on a free loopback port, serving a tiny router with a
/// slow route (`/slow` answers after 5 s).
async fn serve_limited(limits: HttpLimits) -> std::net::SocketAddr {
    let router = Router::new().route("/ok", get(|| async { "ok" })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(http_server::serve(
        listener,
        router,
        limits,
        std::future::pending(),
    ));
    addr
}

fn short_limits() -> HttpLimits {
    HttpLimits {
        header_read_timeout: Duration::from_millis(600),
        request_timeout: Duration::from_millis(800),
        idle_timeout: Duration::from_millis(1_000),
        max_connections: 64,
    }
}

/// Waits until the server closes `s` (EOF or reset); answers how long that took, or
/// `None` when it is still open after `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue, // a response (e.g. 408) before the close
        }
    }
}

#[tokio::test]
async fn half_request_lines_are_closed_after_the_header_timeout() {
    let addr = serve_limited(short_limits()).await;
    let mut conns = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /ok HT").await.unwrap();
        conns.push(s);
    }
    for s in &mut conns {
        let took = closed_within(s, Duration::from_secs(5)).await;
        assert!(took.is_some(), "a stalled connection stayed open");
    }
}

#[tokio::test]
async fn idle_connections_are_closed() {
    // The idle timer alone: the header timer is longer than the test's limit.
    let mut limits = short_limits();
    limits.header_read_timeout = Duration::from_secs(30);
    let addr = serve_limited(limits).await;
    // Connected, never sent a byte.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // One request answered, then idle on keep-alive.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    for s in [&mut silent, &mut kept] {
        let took = closed_within(s, Duration::from_secs(5)).await;
        let took = took.expect("an idle connection stayed open");
        assert!(took <= Duration::from_millis(2_500), "{took:?}");
    }
}

#[tokio::test]
async fn a_slow_request_is_answered_408_within_the_request_timeout() {
    let addr = serve_limited(short_limits()).await;
    let started = Instant::now();
    let r = reqwest::get(format!("http://{addr}/slow")).await.unwrap();
    assert_eq!(r.status().as_u16(), 408);
    assert!(started.elapsed() < Duration::from_secs(3));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "request timed out");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let mut limits = short_limits();
    limits.max_connections = 2;
    limits.header_read_timeout = Duration::from_secs(2);
    limits.idle_timeout = Duration::from_secs(2);
    let addr = serve_limited(limits).await;
    // Two stalled connections take both slots.
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    a.write_all(b"GET").await.unwrap();
    b.write_all(b"GET").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third is not served while they hold the slots, then is once they are closed.
    let started = Instant::now();
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/ok"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1_000),
        "served at once: {waited:?}"
    );
    drop((a, b));
}

#[tokio::test]
async fn invented_methods_do_not_mint_label_values() {
    let db = fresh_db("sec_methods").await;
    let env: BTreeMap<String, String> = [
        ("SYNC_DATABASE_URL", db.service_url.as_str()),
        ("TICK_ENABLED", "false"),
        ("MANA_SERVICE_KEY", "security-test-key-0001"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let app = App::spawn(&env, Api::Off).await;
    for i in 0..300 {
        let m = reqwest::Method::from_bytes(format!("X{i}").as_bytes()).unwrap();
        app.http
            .request(m, app.url("/health"))
            .send()
            .await
            .unwrap();
    }
    let text = app.get("/metrics").await.text().await.unwrap();
    let series = text
        .lines()
        .filter(|l| l.starts_with("mana_ai_http_requests_total{"))
        .count();
    assert!(series <= 5, "{series} series:\n{text}");
    assert!(!text.contains("method=\"X1\""));
    let other = metric_value(&text, "mana_ai_http_requests_total", &[("method", "other")]);
    assert_eq!(other, Some(300.0));
}
