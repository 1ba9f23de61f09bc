//! Actor model (spec §5): factories, exact JSON, predicates, origins and `normalize_actor`.

use mana_ai_core::actor::*;
use serde_json::{json, Value};

fn ai() -> Actor {
    make_agent_actor(AgentActorParts {
        agent_id: "agent-1",
        display_name: "Scout",
        mission_id: "m-1",
        iteration_id: "it-1",
        rationale: "because",
    })
}

#[test]
fn ai_actor_json_has_exact_key_order() {
    let text = serde_json::to_string(&ai()).unwrap();
    assert_eq!(
        text,
        r#"{"kind":"ai","principalId":"agent-1","displayName":"Scout","missionId":"m-1","iterationId":"it-1","rationale":"because"}"#
    );
    assert_eq!(serde_json::to_string(&ai().to_json()).unwrap(), text);
}

#[test]
fn user_and_system_json() {
    let u = make_user_actor("u-1", None);
    let text = serde_json::to_string(&u).unwrap();
    assert_eq!(
        text,
        r#"{"kind":"user","principalId":"u-1","displayName":"Du"}"#
    );
    assert_eq!(serde_json::to_string(&u.to_json()).unwrap(), text);

    let s = make_system_actor(SYSTEM_MISSION_RUNNER, None);
    let text = serde_json::to_string(&s).unwrap();
    assert_eq!(
        text,
        r#"{"kind":"system","principalId":"system:mission-runner","displayName":"Mission-Runner"}"#
    );
    assert_eq!(serde_json::to_string(&s.to_json()).unwrap(), text);
}

#[test]
fn unknown_system_source_omits_display_name() {
    let s = make_system_actor("system:unknown", None);
    assert_eq!(s.display_name(), None);
    let text = serde_json::to_string(&s).unwrap();
    assert_eq!(text, r#"{"kind":"system","principalId":"system:unknown"}"#);
    assert_eq!(serde_json::to_string(&s.to_json()).unwrap(), text);
    // And it reads back.
    let back: Actor = serde_json::from_str(&text).unwrap();
    assert_eq!(back, s);
}

#[test]
fn factories() {
    assert_eq!(
        make_user_actor("u", Some("Anna")),
        Actor::User {
            principal_id: "u".into(),
            display_name: "Anna".into()
        }
    );
    assert_eq!(
        user_actor(),
        Actor::User {
            principal_id: "legacy:user".into(),
            display_name: "Du".into()
        }
    );
    assert_eq!(
        make_system_actor(SYSTEM_RULE, Some("Meine Regel")).display_name(),
        Some("Meine Regel")
    );
    for source in SYSTEM_SOURCES {
        let s = make_system_actor(source, None);
        assert_eq!(s.principal_id(), source);
        assert_eq!(s.display_name(), default_system_display_name(source));
        assert!(s.display_name().is_some());
    }
    let a = ai();
    assert_eq!(a.principal_id(), "agent-1");
    assert_eq!(a.display_name(), Some("Scout"));
    assert_eq!(a.kind(), "ai");
}

#[test]
fn serde_round_trip_all_kinds() {
    for actor in [
        make_user_actor("u", None),
        ai(),
        make_system_actor(SYSTEM_BOOTSTRAP, None),
        make_system_actor(LEGACY_SYSTEM_PRINCIPAL, None),
    ] {
        let v = serde_json::to_value(&actor).unwrap();
        let back: Actor = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, actor);
        assert_eq!(
            normalize_actor(&v),
            actor,
            "normalize keeps well-formed actors"
        );
    }
}

#[test]
fn predicates() {
    let u = make_user_actor("u", None);
    let a = ai();
    let runner = make_system_actor(SYSTEM_MISSION_RUNNER, None);
    let other_sys = make_system_actor(SYSTEM_STREAM, None);
    let table = [
        (Some(&u), [true, false, false, false]),
        (Some(&a), [false, true, false, false]),
        (Some(&runner), [false, false, true, true]),
        (Some(&other_sys), [false, false, true, false]),
        (None, [false, false, false, false]),
    ];
    for (actor, want) in table {
        let got = [
            is_user_actor(actor),
            is_ai_actor(actor),
            is_system_actor(actor),
            is_from_mission_runner(actor),
        ];
        assert_eq!(got, want, "{actor:?}");
    }
    // A user whose principal happens to be the runner id is not the runner.
    let fake = make_user_actor(SYSTEM_MISSION_RUNNER, None);
    assert!(!fake.is_from_mission_runner());
}

#[test]
fn origins() {
    let cases = [
        (make_user_actor("u", None), FieldOrigin::User),
        (ai(), FieldOrigin::Agent),
        (
            make_system_actor(SYSTEM_MIGRATION, None),
            FieldOrigin::Migration,
        ),
        (
            make_system_actor(SYSTEM_PROJECTION, None),
            FieldOrigin::System,
        ),
        (
            make_system_actor("legacy:system", None),
            FieldOrigin::System,
        ),
    ];
    for (actor, want) in cases {
        assert_eq!(origin_from_actor(&actor), want, "{actor:?}");
    }
    let texts: Vec<String> = [
        FieldOrigin::User,
        FieldOrigin::Agent,
        FieldOrigin::System,
        FieldOrigin::Migration,
        FieldOrigin::ServerReplay,
    ]
    .iter()
    .map(|o| {
        let t = serde_json::to_value(o).unwrap();
        assert_eq!(t, json!(o.as_str()));
        o.as_str().to_owned()
    })
    .collect();
    assert_eq!(
        texts,
        ["user", "agent", "system", "migration", "server-replay"]
    );
}

#[test]
fn field_meta() {
    let m = FieldMeta::new("2026-01-01T00:00:00.000Z", ai(), FieldOrigin::Agent);
    assert!(!m.is_user_originated());
    let u = FieldMeta::new("t", user_actor(), FieldOrigin::User);
    assert!(u.is_user_originated());
    assert_eq!(
        serde_json::to_value(&u).unwrap(),
        json!({"at": "t", "actor": {"kind": "user", "principalId": "legacy:user", "displayName": "Du"}, "origin": "user"})
    );
}

fn unknown_user() -> Actor {
    make_user_actor("legacy:user", Some("Unbekannt"))
}

#[test]
fn rule1_falsy_or_non_object() {
    for raw in [
        Value::Null,
        json!(false),
        json!(0),
        json!(""),
        json!("user"),
        json!(42),
        json!(true),
        json!([{"kind": "user"}]),
    ] {
        assert_eq!(normalize_actor(&raw), unknown_user(), "{raw}");
    }
}

#[test]
fn rule2_user() {
    assert_eq!(
        normalize_actor(
            &json!({"kind": "user", "principalId": "u1", "displayName": "Anna", "x": 1})
        ),
        make_user_actor("u1", Some("Anna"))
    );
    assert_eq!(
        normalize_actor(&json!({"kind": "user"})),
        make_user_actor("legacy:user", Some("Du"))
    );
    assert_eq!(
        normalize_actor(&json!({"kind": "user", "principalId": "u1", "displayName": null})),
        make_user_actor("u1", Some("Du"))
    );
    assert_eq!(
        normalize_actor(&json!({"kind": "user", "principalId": null, "displayName": "Anna"})),
        make_user_actor("legacy:user", Some("Anna"))
    );
    // `??` keeps non-null non-strings: as JSON text here.
    assert_eq!(
        normalize_actor(&json!({"kind": "user", "principalId": 7, "displayName": false})),
        make_user_actor("7", Some("false"))
    );
    assert_eq!(
        normalize_actor(&json!({"kind": "user", "principalId": "", "displayName": ""})),
        make_user_actor("", Some(""))
    );
}

#[test]
fn rule3_ai() {
    assert_eq!(normalize_actor(&ai().to_json()), ai());
    assert_eq!(
        normalize_actor(&json!({"kind": "ai"})),
        make_agent_actor(AgentActorParts {
            agent_id: "legacy:ai-default",
            display_name: "Unbekannt",
            mission_id: "",
            iteration_id: "",
            rationale: "",
        })
    );
    assert_eq!(
        normalize_actor(&json!({"kind": "ai", "principalId": "a", "missionId": "m",
                                "iterationId": null, "rationale": {"r": 1}})),
        make_agent_actor(AgentActorParts {
            agent_id: "a",
            display_name: "Unbekannt",
            mission_id: "m",
            iteration_id: "",
            rationale: r#"{"r":1}"#,
        })
    );
    // Both identity fields strings but mission fields missing: "" (documented deviation).
    assert_eq!(
        normalize_actor(&json!({"kind": "ai", "principalId": "a", "displayName": "A"})),
        make_agent_actor(AgentActorParts {
            agent_id: "a",
            display_name: "A",
            mission_id: "",
            iteration_id: "",
            rationale: "",
        })
    );
}

#[test]
fn rule4_system() {
    // As is, even with a non-default or unknown principal.
    assert_eq!(
        normalize_actor(
            &json!({"kind": "system", "principalId": "system:rule", "displayName": "X"})
        ),
        make_system_actor("system:rule", Some("X"))
    );
    assert_eq!(
        normalize_actor(&json!({"kind": "system", "principalId": "custom", "displayName": "C"})),
        make_system_actor("custom", Some("C"))
    );
    // Old shape {kind:'system', source:'mission-runner'} (what early mana-ai wrote).
    let old = normalize_actor(&json!({"kind": "system", "source": "mission-runner"}));
    assert_eq!(old, make_system_actor(SYSTEM_MISSION_RUNNER, None));
    assert_eq!(old.display_name(), Some("Mission-Runner"));
    assert!(old.is_from_mission_runner());
    // Unknown source: principal built, no display name.
    let unk = normalize_actor(&json!({"kind": "system", "source": "cron"}));
    assert_eq!(unk.principal_id(), "system:cron");
    assert_eq!(unk.display_name(), None);
    // No string source: legacy:system without a name, even when displayName is a string.
    for raw in [
        json!({"kind": "system"}),
        json!({"kind": "system", "source": 5}),
        json!({"kind": "system", "displayName": "D"}),
        json!({"kind": "system", "principalId": "system:rule"}),
    ] {
        let a = normalize_actor(&raw);
        assert_eq!(
            a,
            Actor::System {
                principal_id: "legacy:system".into(),
                display_name: None
            },
            "{raw}"
        );
    }
    // principalId string, displayName missing, but a source: rebuilt from source.
    assert_eq!(
        normalize_actor(&json!({"kind": "system", "principalId": "p", "source": "migration"})),
        make_system_actor(SYSTEM_MIGRATION, None)
    );
}

#[test]
fn rule5_other_kinds() {
    for raw in [
        json!({}),
        json!({"kind": "robot", "principalId": "r", "displayName": "R"}),
        json!({"kind": "User"}),
        json!({"kind": 1}),
        json!({"kind": null}),
    ] {
        assert_eq!(normalize_actor(&raw), unknown_user(), "{raw}");
    }
}
