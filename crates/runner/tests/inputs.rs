//! Mission inputs against a real PostgreSQL and a fake LLM: real grants (minted with
//! `mint_grant` for a freshly generated key pair), fixtures encrypted under the mission
//! data key, the decrypt audit, grant skips, resolver failures, the bounded replay, the
//! audit table's privileges and retention, and what reaches the logs.

use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use mana_ai_core::crypto::{
    derive_mission_data_key, encode_standard, encrypt_value, generate_keypair, mint_grant,
    GrantDerivation, GrantPrivateKey, GrantPublicKey, MissionDataKey,
};
use mana_ai_core::plan::iteration_id_for;
use mana_ai_runner::testkit::{FakeLlm, Reply, RunnerBuilder};
use mana_ai_runner::{Runner, TickStats};
use mana_ai_store::testkit::rows::{
    decrypt_audit_rows, first_column, mission_record, AuditSummary,
};
use mana_ai_store::testkit::{fresh_db, push_mission as push_mission_row, Change, TestDb};
use mana_ai_store::{AuditStatus, DecryptAuditEntry, Store, StoreError, REPLAY_ROW_LIMIT};
use prometheus::IntCounterVec;
use serde_json::{json, Value};

const DUE: &str = "2026-01-05T06:00:00.000Z";
const MASTER_KEY: [u8; 32] = [0x5a; 32];

// ---------------------------------------------------------------------------------------
// fixtures

struct Keys {
    private_pem: String,
    private: Arc<GrantPrivateKey>,
    public: GrantPublicKey,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(new_keys)
}

fn other_keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(new_keys)
}

fn new_keys() -> Keys {
    let (private_pem, public_pem) = generate_keypair().unwrap();
    Keys {
        private: Arc::new(GrantPrivateKey::from_pem(&private_pem).unwrap()),
        public: GrantPublicKey::from_pem(&public_pem).unwrap(),
        private_pem: private_pem.to_string(),
    }
}

/// A grant for `mission_id` over `record_ids` ("<table>:<id>"), wrapped for `public`,
/// plus the MDK the issuer derived (for encrypting fixtures).
fn grant(
    public: &GrantPublicKey,
    mission_id: &str,
    record_ids: &[&str],
    now: DateTime<Utc>,
    ttl_ms: Option<i64>,
) -> (Value, MissionDataKey) {
    let record_ids: Vec<String> = record_ids.iter().map(|s| s.to_string()).collect();
    let mut tables: Vec<String> = record_ids
        .iter()
        .map(|r| r.split(':').next().unwrap().to_string())
        .collect();
    tables.sort();
    tables.dedup();
    let g = mint_grant(
        &MASTER_KEY,
        public,
        mission_id,
        &tables,
        &record_ids,
        ttl_ms,
        now,
    )
    .unwrap();
    let mdk = derive_mission_data_key(
        &MASTER_KEY,
        &GrantDerivation {
            version: "v1".into(),
            mission_id: mission_id.into(),
            tables,
            record_ids,
        },
    )
    .unwrap();
    (g, mdk)
}

fn enc(key: &MissionDataKey, v: &str) -> String {
    encrypt_value(&json!(v), key.expose(), None).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A record: (app, table, id).
type Rec<'a> = (&'a str, &'a str, &'a str);

/// Pushes one change of `user` to the record `(app, table, id)`.
async fn push(
    c: &tokio_postgres::Client,
    user: &str,
    (app, table, id): Rec<'_>,
    op: &str,
    data: Value,
) {
    Change::new(user, table, id, data)
        .app(app)
        .op(op)
        .push(c)
        .await;
}

/// Pushes these changes of `user`, in order.
async fn push_all(c: &tokio_postgres::Client, user: &str, changes: Vec<(Rec<'_>, &str, Value)>) {
    for (rec, op, data) in changes {
        push(c, user, rec, op, data).await;
    }
}

fn input(module: &str, table: &str, id: &str) -> Value {
    json!({"module": module, "table": table, "id": id})
}

async fn push_mission(
    c: &tokio_postgres::Client,
    user: &str,
    id: &str,
    inputs: &[Rec<'_>],
    grant: Option<Value>,
) {
    let inputs: Vec<Value> = inputs.iter().map(|&(m, t, i)| input(m, t, i)).collect();
    let mut m = mission_record(json!({
        "title": "Wochenplan", "conceptMarkdown": "Plan the week", "objective": "Propose tasks",
        "nextRunAt": DUE, "cadence": {"kind": "interval", "everyMinutes": 60}, "inputs": inputs
    }));
    if let Some(g) = grant {
        m["grant"] = g;
    }
    push_mission_row(c, user, id, m).await;
}

/// A fake LLM that answers every call with a final text (a plan with no steps).
fn fake_llm() -> Arc<FakeLlm> {
    FakeLlm::replying(Reply::text("Nichts zu tun.").usage(10, 5))
}

/// A fresh database, its admin client and the fake LLM.
async fn setup(name: &str) -> (TestDb, tokio_postgres::Client, Arc<FakeLlm>) {
    let db = fresh_db(name).await;
    let admin = db.admin().await;
    (db, admin, fake_llm())
}

/// One tick that must write exactly one plan back; returns its stats.
async fn plans_one(r: &Runner) -> TickStats {
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    stats
}

/// A runner holding the grant key, after one tick that wrote exactly one plan back.
async fn keyed_runner_plans_one(db: &TestDb, llm: &Arc<FakeLlm>) -> Runner {
    let r = runner(db, llm, Some(keys().private.clone()));
    plans_one(&r).await;
    r
}

/// The value of one labelled counter.
fn count(v: &IntCounterVec, label: &str) -> u64 {
    v.with_label_values(&[label]).get()
}

fn runner(db: &TestDb, llm: &Arc<FakeLlm>, key: Option<Arc<GrantPrivateKey>>) -> Runner {
    RunnerBuilder::new(db)
        .llm(llm.clone())
        .config(|c| c.grant_key = key)
        .build()
}

/// The user messages of every LLM request, one string per request.
fn prompts(llm: &FakeLlm) -> Vec<String> {
    llm.user_prompts()
}

fn block(id: &str, source: &str, title: &str, content: &str) -> String {
    format!("<user_data kind=\"input\" id=\"{id}\" source=\"{source}\">\nTitle: {title}\n{content}\n</user_data>")
}

/// (table, record, status, reason, iteration) of every audit row, sorted.
async fn audit_rows(admin: &tokio_postgres::Client) -> Vec<AuditSummary> {
    decrypt_audit_rows(admin).await
}

/// Seeds user u1 / mission m1 with a grant over notes:n1, tasks:t1, events:e1,
/// journalEntries:j1 and inputs covering every outcome. Returns (MDK, grant JSON).
async fn seed_granted_mission(admin: &tokio_postgres::Client) -> (MissionDataKey, Value) {
    let (g, mdk) = grant(
        &keys().public,
        "m1",
        &["notes:n1", "tasks:t1", "events:e1", "journalEntries:j1"],
        Utc::now(),
        None,
    );
    push_all(
        admin,
        "u1",
        vec![
            (
                ("notes", "notes", "n1"),
                "insert",
                json!({"title": enc(&mdk, "Geheime Notiz"),
                       "content": enc(&mdk, "Notizinhalt XYZ")}),
            ),
            (
                ("notes", "notes", "n2"),
                "insert",
                json!({"title": "Nicht freigegeben",
                       "content": enc(&mdk, "Verbotener Inhalt QQQ")}),
            ),
            (
                ("todo", "tasks", "t1"),
                "insert",
                json!({"title": enc(&mdk, "Steuer"), "status": "open",
                       "description": enc(&mdk, "Belege sammeln"), "dueDate": "2026-02-01"}),
            ),
        ],
    )
    .await;
    // Tampered: a valid blob with one ciphertext bit flipped.
    let blob = enc(&mdk, "Zahnarzt Geheimtermin");
    let (head, ct) = blob.split_once('.').unwrap();
    let mut ct = mana_ai_core::crypto::decode_forgiving(ct).unwrap();
    ct[0] ^= 0x01;
    let tampered = format!("{head}.{}", encode_standard(&ct));
    push_all(
        admin,
        "u1",
        vec![
            (
                ("calendar", "events", "e1"),
                "insert",
                json!({"title": tampered}),
            ),
            (
                ("journal", "journalEntries", "j1"),
                "insert",
                json!({"content": "enc:1:no-separator-here"}),
            ),
            (
                ("companion", "companionGoals", "g1"),
                "insert",
                json!({"title": "Laufen", "currentValue": 3,
                       "target": {"value": 10, "period": "week"}}),
            ),
        ],
    )
    .await;
    push_mission(
        admin,
        "u1",
        "m1",
        &[
            ("notes", "notes", "n1"),
            ("notes", "notes", "n2"),
            ("tasks", "tasks", "t1"),
            ("calendar", "events", "e1"),
            ("contacts", "contacts", "c1"),
            ("journal", "journalEntries", "j1"),
            ("goals", "companionGoals", "g1"),
            ("notes", "notes", "missing"),
        ],
        Some(g.clone()),
    )
    .await;
    (mdk, g)
}

// ---------------------------------------------------------------------------------------
// tests

#[tokio::test]
async fn granted_inputs_reach_the_llm_and_every_decrypt_outcome_is_audited() {
    let (db, admin, llm) = setup("inputs_granted").await;
    let (_mdk, _g) = seed_granted_mission(&admin).await;
    let r = runner(&db, &llm, Some(keys().private.clone()));
    let stats = plans_one(&r).await;
    assert!(stats.errors.is_empty(), "{stats:?}");

    let prompts = prompts(&llm);
    assert_eq!(prompts.len(), 1);
    let p = &prompts[0];
    let note = block("n1", "notes/notes", "Geheime Notiz", "Notizinhalt XYZ");
    let task = block(
        "t1",
        "tasks/tasks",
        "Steuer",
        "[open] Steuer — Belege sammeln (faellig: 2026-02-01)",
    );
    let goal = block(
        "g1",
        "goals/companionGoals",
        "Laufen",
        "Fortschritt: 3 / 10 (week)",
    );
    let (a, b, c) = (
        p.find(&note).expect("note block"),
        p.find(&task).expect("task block"),
        p.find(&goal).expect("goal block"),
    );
    assert!(a < b && b < c, "inputs keep their order");
    for absent in [
        "Verbotener Inhalt",
        "Nicht freigegeben",
        "Zahnarzt",
        "enc:1:",
        "id=\"e1\"",
        "id=\"j1\"",
        "id=\"c1\"",
        "id=\"missing\"",
    ] {
        assert!(!p.contains(absent), "{absent:?} must not reach the LLM");
    }

    let it = Some(iteration_id_for("m1", DUE));
    let row = |table: &str, id: &str, status: &str, reason: Option<&str>| {
        let s = |x: &str| x.to_string();
        (s(table), s(id), s(status), reason.map(s), it.clone())
    };
    assert_eq!(
        audit_rows(&admin).await,
        vec![
            row(
                "events",
                "e1",
                "failed",
                Some("ciphertext-tampered-or-wrong-key")
            ),
            row(
                "journalEntries",
                "j1",
                "failed",
                Some("ciphertext-malformed")
            ),
            row(
                "notes",
                "missing",
                "scope-violation",
                Some("record-not-in-grant-allowlist")
            ),
            row("notes", "n1", "ok", None),
            row(
                "notes",
                "n2",
                "scope-violation",
                Some("record-not-in-grant-allowlist")
            ),
            row("tasks", "t1", "ok", None),
        ]
    );
    // The service role reads them back through RLS, newest first, scoped to the user.
    let store = db.service_store();
    let mine = store
        .read_decrypt_audit("u1", Some("m1"), 100)
        .await
        .unwrap();
    assert_eq!(mine.len(), 6);
    assert!(mine.windows(2).all(|w| w[0].ts >= w[1].ts));
    assert!(store
        .read_decrypt_audit("u2", None, 100)
        .await
        .unwrap()
        .is_empty());

    let m = r.metrics();
    assert_eq!(count(&m.decrypts_total, "notes"), 2);
    assert_eq!(count(&m.decrypts_total, "tasks"), 2);
    assert_eq!(count(&m.decrypts_total, "events"), 0);
    assert_eq!(count(&m.grant_scope_violations_total, "notes"), 2);
    assert_eq!(count(&m.resolver_failures_total, "unknown"), 1);
    for reason in mana_ai_core::crypto::UnwrapFailure::ALL {
        assert_eq!(count(&m.grant_skips_total, reason.as_str()), 0);
    }
}

#[tokio::test]
async fn unusable_grants_are_skipped_with_their_reason_and_missions_still_plan() {
    let (db, admin, llm) = setup("inputs_skips").await;
    let now = Utc::now();
    let ids = ["notes:n1"];
    // One user and mission per case, each with a note encrypted under the mission's real
    // MDK and a grant broken in one way. (Mission ids differ: iteration ids are unique.)
    let cases = [
        "expired",
        "malformed",
        "tampered",
        "wrong-key",
        "other-mission",
        "bad-shape",
    ];
    let mut expected = Vec::new();
    for case in cases {
        let (user, mission) = (format!("u-{case}"), format!("m-{case}"));
        let (mut g, mdk) = grant(&keys().public, &mission, &ids, now, None);
        let reason = match case {
            "expired" => {
                g = grant(
                    &keys().public,
                    &mission,
                    &ids,
                    now - chrono::Duration::hours(2),
                    Some(3_600_000),
                )
                .0;
                "expired"
            }
            "malformed" => {
                g["wrappedKey"] = json!("%%% not base64 %%%");
                "malformed"
            }
            "tampered" => {
                let mut w =
                    mana_ai_core::crypto::decode_forgiving(g["wrappedKey"].as_str().unwrap())
                        .unwrap();
                w[17] ^= 0x01;
                g["wrappedKey"] = json!(encode_standard(&w));
                "wrap-rejected"
            }
            "wrong-key" => {
                g = grant(&other_keys().public, &mission, &ids, now, None).0;
                "wrap-rejected"
            }
            "other-mission" => {
                g = grant(&keys().public, "m-other", &ids, now, None).0;
                "mission-mismatch"
            }
            _ => {
                g = json!({"wrappedKey": 5});
                "malformed"
            }
        };
        expected.push(reason);
        push_all(
            &admin,
            &user,
            vec![
                (
                    ("notes", "notes", "n1"),
                    "insert",
                    json!({"title": "T", "content": enc(&mdk, "Skip-Geheimnis")}),
                ),
                (
                    ("companion", "companionGoals", "g1"),
                    "insert",
                    json!({"title": "Ziel", "currentValue": 1}),
                ),
            ],
        )
        .await;
        push_mission(
            &admin,
            &user,
            &mission,
            &[("notes", "notes", "n1"), ("goals", "companionGoals", "g1")],
            Some(g),
        )
        .await;
    }
    let r = runner(&db, &llm, Some(keys().private.clone()));
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, cases.len(), "{stats:?}");
    assert!(stats.errors.is_empty(), "{stats:?}");
    let m = r.metrics();
    for reason in ["expired", "malformed", "wrap-rejected", "mission-mismatch"] {
        let want = expected.iter().filter(|r| **r == reason).count() as u64;
        assert_eq!(count(&m.grant_skips_total, reason), want, "{reason}");
    }
    assert_eq!(count(&m.grant_skips_total, "not-configured"), 0);
    let prompts = prompts(&llm);
    assert_eq!(prompts.len(), cases.len());
    for p in &prompts {
        assert!(!p.contains("Skip-Geheimnis") && !p.contains("id=\"n1\""));
        assert!(p.contains(&block(
            "g1",
            "goals/companionGoals",
            "Ziel",
            "Fortschritt: 1 / ? (unbekannt)"
        )));
    }
    assert!(
        audit_rows(&admin).await.is_empty(),
        "no decrypt was attempted"
    );
}

#[tokio::test]
async fn without_a_configured_key_grants_are_skipped_as_not_configured() {
    let (db, admin, llm) = setup("inputs_nokey").await;
    seed_granted_mission(&admin).await;
    let r = runner(&db, &llm, None);
    plans_one(&r).await;
    assert_eq!(count(&r.metrics().grant_skips_total, "not-configured"), 1);
    let p = &prompts(&llm)[0];
    assert!(!p.contains("Notizinhalt") && p.contains("id=\"g1\""));
    assert!(audit_rows(&admin).await.is_empty());
}

#[tokio::test]
async fn a_plaintext_goal_resolves_without_a_grant() {
    let (db, admin, llm) = setup("inputs_plain").await;
    push_all(
        &admin,
        "u1",
        vec![
            (
                ("companion", "companionGoals", "g1"),
                "insert",
                json!({"title": "Lesen", "currentValue": 2, "period": "month",
                       "target": {"value": 4}}),
            ),
            // A later update wins field-wise (shared LWW merge).
            (
                ("companion", "companionGoals", "g1"),
                "update",
                json!({"currentValue": 3}),
            ),
            (
                ("notes", "notes", "n1"),
                "insert",
                json!({"content": "plain but encrypted module"}),
            ),
        ],
    )
    .await;
    let inputs = [("goals", "companionGoals", "g1"), ("notes", "notes", "n1")];
    push_mission(&admin, "u1", "m1", &inputs, None).await;
    let r = keyed_runner_plans_one(&db, &llm).await;
    let p = &prompts(&llm)[0];
    assert!(p.contains(&block(
        "g1",
        "goals/companionGoals",
        "Lesen",
        "Fortschritt: 3 / 4 (month)"
    )));
    assert!(
        !p.contains("id=\"n1\""),
        "an encrypted module needs a grant"
    );
    for reason in mana_ai_core::crypto::UnwrapFailure::ALL {
        assert_eq!(
            count(&r.metrics().grant_skips_total, reason.as_str()),
            0,
            "no grant, nothing to skip"
        );
    }
    assert!(audit_rows(&admin).await.is_empty());
}

#[tokio::test]
async fn a_failing_resolver_drops_only_its_own_input() {
    let (db, admin, llm) = setup("inputs_fail").await;
    // Reading record "boom" raises inside the database (a restrictive RLS policy whose
    // check errors for that record only): a real query failure for one resolver.
    admin
        .batch_execute(
            "CREATE FUNCTION public.boom_guard(r TEXT) RETURNS BOOLEAN LANGUAGE plpgsql AS $$
             BEGIN
               IF r = 'boom' THEN RAISE EXCEPTION 'simulated storage failure'; END IF;
               RETURN true;
             END $$;
             CREATE POLICY boom ON sync_changes AS RESTRICTIVE FOR SELECT
               USING (public.boom_guard(record_id));",
        )
        .await
        .unwrap();
    let (g, mdk) = grant(&keys().public, "m1", &["notes:n1"], Utc::now(), None);
    push(
        &admin,
        "u1",
        ("notes", "notes", "n1"),
        "insert",
        json!({"title": "Bleibt", "content": enc(&mdk, "Noch da")}),
    )
    .await;
    for id in ["g1", "boom"] {
        push(
            &admin,
            "u1",
            ("companion", "companionGoals", id),
            "insert",
            json!({"title": format!("Ziel {id}")}),
        )
        .await;
    }
    let inputs = [
        ("goals", "companionGoals", "boom"),
        ("goals", "companionGoals", "g1"),
        ("notes", "notes", "n1"),
    ];
    push_mission(&admin, "u1", "m1", &inputs, Some(g)).await;
    let r = keyed_runner_plans_one(&db, &llm).await;
    assert_eq!(count(&r.metrics().resolver_failures_total, "goals"), 1);
    let p = &prompts(&llm)[0];
    assert!(!p.contains("id=\"boom\""));
    assert!(p.contains(&block(
        "g1",
        "goals/companionGoals",
        "Ziel g1",
        "Fortschritt: 0 / ? (unbekannt)"
    )));
    assert!(p.contains(&block("n1", "notes/notes", "Bleibt", "Noch da")));
}

/// Replays u1's note `id` through the store.
async fn replay_note(store: &Store, id: &str) -> Option<Value> {
    store
        .replay_record("u1", "notes", "notes", id)
        .await
        .unwrap()
}

/// The server's message of a database error.
fn db_msg(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string())
}

/// A `MakeWriter` that appends to a shared buffer.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log capture of this test binary: one global TRACE subscriber (a thread-local one
/// misses events whose callsite interest another test thread cached first). Every test's
/// logs land here, which only widens what the leak check below covers.
fn log_capture() -> &'static LogBuf {
    static BUF: OnceLock<LogBuf> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = LogBuf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
        buf
    })
}

#[tokio::test]
async fn logs_never_carry_key_bytes_or_plaintext() {
    let buf = log_capture();
    let (db, admin, llm) = setup("inputs_logs").await;
    let (mdk, g) = seed_granted_mission(&admin).await;
    let _r = keyed_runner_plans_one(&db, &llm).await;
    // The plaintext did reach the LLM, so its absence from the logs means something.
    assert!(prompts(&llm)[0].contains("Notizinhalt XYZ"));
    let mut out = buf.0.lock().unwrap().clone();
    writeln!(out).unwrap();
    let logs = String::from_utf8(out).unwrap();
    assert!(
        logs.contains("input outside the grant allowlist refused")
            && logs.contains("ciphertext-tampered-or-wrong-key"),
        "the capture works and sees the resolver's warnings:\n{logs}"
    );
    let wrapped = g["wrappedKey"].as_str().unwrap().to_string();
    let mut secrets = vec![
        hex(mdk.expose()),
        hex(mdk.expose()).to_uppercase(),
        encode_standard(mdk.expose()),
        encode_standard(mdk.expose())
            .trim_end_matches('=')
            .to_string(),
        hex(&MASTER_KEY),
        encode_standard(&MASTER_KEY),
        wrapped[..40].to_string(),
        format!("{:?}", &mdk.expose()[..8]),
    ];
    // Any line of the private key's base64 body.
    secrets.extend(
        keys()
            .private_pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 20)
            .map(str::to_string),
    );
    for plaintext in [
        "Geheime Notiz",
        "Notizinhalt",
        "Belege sammeln",
        "Steuer",
        "Verbotener Inhalt",
        "Zahnarzt",
    ] {
        secrets.push(plaintext.to_string());
    }
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "logs leak {s:?}");
    }
}

#[tokio::test]
async fn the_audit_is_append_only_for_the_service_role_and_retention_prunes_old_rows() {
    let db = fresh_db("inputs_audit").await;
    let admin = db.admin().await;
    let store = db.service_store();
    let entry = DecryptAuditEntry {
        mission_id: "m1",
        iteration_id: Some("it-1"),
        table_name: "notes",
        record_id: "n1",
        status: AuditStatus::Ok,
        reason: None,
    };
    store.write_decrypt_audit("u1", &entry).await.unwrap();

    // UPDATE, DELETE and TRUNCATE as the service role fail on privileges.
    for sql in [
        "UPDATE mana_ai.decrypt_audit SET status = 'failed'",
        "DELETE FROM mana_ai.decrypt_audit",
        "TRUNCATE mana_ai.decrypt_audit",
        "SELECT mana_ai.decrypt_audit_append_only()",
    ] {
        let tx = store.begin_user("u1").await.unwrap();
        let e = tx.client().batch_execute(sql).await.unwrap_err();
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {e}"
        );
    }
    // Inserting a row for another user is refused by row-level security.
    let tx = store.begin_user("u1").await.unwrap();
    let e = tx
        .client()
        .execute(
            "INSERT INTO mana_ai.decrypt_audit (user_id, mission_id, table_name, record_id, status)
             VALUES ('u2', 'm', 't', 'r', 'ok')",
            &[],
        )
        .await
        .unwrap_err();
    assert!(db_msg(&e).contains("row-level security"), "{e:?}");
    drop(tx);
    // Even the owner/superuser cannot rewrite history by accident (trigger).
    let e = admin
        .batch_execute("UPDATE mana_ai.decrypt_audit SET status = 'failed'")
        .await
        .unwrap_err();
    assert!(db_msg(&e).contains("append-only"), "{e:?}");
    let e = admin
        .batch_execute("DELETE FROM mana_ai.decrypt_audit")
        .await
        .unwrap_err();
    assert!(db_msg(&e).contains("append-only"), "{e:?}");

    // Retention: rows older than the window go, through the SECURITY DEFINER function.
    admin
        .batch_execute(
            "INSERT INTO mana_ai.decrypt_audit (user_id, mission_id, table_name, record_id, status, ts)
             VALUES ('u1', 'm1', 'notes', 'old', 'ok', now() - interval '400 days'),
                    ('u2', 'm9', 'notes', 'old2', 'failed', now() - interval '366 days'),
                    ('u1', 'm1', 'notes', 'mid', 'ok', now() - interval '10 days')",
        )
        .await
        .unwrap();
    // The retention is the migration-owned setting (365 by default); the service calls
    // the argument-less prune.
    assert_eq!(store.prune_decrypt_audit().await.unwrap(), 2);
    let left: Vec<String> = first_column(
        &admin,
        "SELECT record_id FROM mana_ai.decrypt_audit ORDER BY ts",
    )
    .await;
    assert_eq!(left, ["mid", "n1"]);
    // Below the floor: refused by the setter and by the database function itself; the
    // service role may not call the one-argument prune at all.
    assert!(matches!(
        mana_ai_store::schema::set_audit_retention(&admin, Some(6)).await,
        Err(StoreError::Refused(_))
    ));
    let e = admin
        .batch_execute("SELECT mana_ai.prune_decrypt_audit(1)")
        .await
        .unwrap_err();
    assert!(db_msg(&e).contains("at least 7 days"), "{e:?}");
    let svc = mana_ai_store::connect_once(&db.service_url).await.unwrap();
    let e = svc
        .batch_execute("SELECT mana_ai.prune_decrypt_audit(7)")
        .await
        .unwrap_err();
    assert!(db_msg(&e).contains("permission denied"), "{e:?}");
    mana_ai_store::schema::set_audit_retention(&admin, Some(7))
        .await
        .unwrap();
    assert_eq!(store.prune_decrypt_audit().await.unwrap(), 1);
    // The prune flag does not outlive the function: a later DELETE is refused again.
    let tx = store.begin_user("u1").await.unwrap();
    tx.client()
        .batch_execute("SELECT mana_ai.prune_decrypt_audit()")
        .await
        .unwrap();
    let flag: Option<String> = tx
        .client()
        .query_one("SELECT current_setting('mana_ai.audit_prune', true)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(flag.as_deref(), Some("off"));
}

#[tokio::test]
async fn replay_is_rls_scoped_bounded_and_honours_old_tombstones() {
    let db = fresh_db("inputs_replay").await;
    let admin = db.admin().await;
    let store = db.service_store();
    assert_eq!(replay_note(&store, "nothing").await, None);
    assert!(matches!(
        store.replay_record("", "notes", "notes", "x").await,
        Err(StoreError::Refused(_))
    ));
    for (user, app, op, data) in [
        (
            "u1",
            "notes",
            "insert",
            json!({"title": "A", "content": "x"}),
        ),
        ("u1", "notes", "update", json!({"content": "y"})),
        ("u2", "notes", "update", json!({"content": "other user's"})),
        ("u1", "todo", "update", json!({"content": "other app"})),
    ] {
        push(&admin, user, (app, "notes", "a"), op, data).await;
    }
    assert_eq!(
        replay_note(&store, "a").await,
        Some(json!({"id": "a", "content": "y", "title": "A"}))
    );
    // deletedAt truthy ⇒ gone
    push(
        &admin,
        "u1",
        ("notes", "notes", "a"),
        "update",
        json!({"deletedAt": "2026-01-01T00:00:00.000Z"}),
    )
    .await;
    assert_eq!(replay_note(&store, "a").await, None);

    // A record with more rows than the bound: only the newest rows are read.
    admin
        .execute(
            "INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, created_at)
             VALUES ('notes', 'notes', 'big', 'u1', 'insert', '{\"title\": \"alt\", \"counter\": 0}', '{}', 'w',
                     now() - interval '1 day')",
            &[],
        )
        .await
        .unwrap();
    admin
        .execute(
            "INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, created_at)
             SELECT 'notes', 'notes', 'big', 'u1', 'update', jsonb_build_object('counter', g), '{}', 'w',
                    now() - make_interval(secs => $1::int - g)
               FROM generate_series(1, $1::int) g",
            &[&(REPLAY_ROW_LIMIT as i32)],
        )
        .await
        .unwrap();
    assert_eq!(
        replay_note(&store, "big").await,
        Some(json!({"id": "big", "counter": REPLAY_ROW_LIMIT})),
        "the insert row is beyond the bound, so its title is not read"
    );
    // A delete older than the newest rows still wins.
    admin
        .execute(
            "INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, created_at)
             VALUES ('notes', 'notes', 'big', 'u1', 'delete', NULL, '{}', 'w', now() - interval '2 days')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(replay_note(&store, "big").await, None);
}
