//! Tests for the tool catalog, function specs, agent policy and call validation.

use std::collections::{BTreeMap, BTreeSet};

use mana_ai_core::catalog::{
    function_specs, tool_to_function_spec, validate_call, CallRejection, Catalog, CatalogError,
    ParamType, PolicyDecision, Tool,
};
use mana_ai_core::policy::{filter_offered, AgentPolicy};
use proptest::prelude::*;
use serde_json::{json, Value};

fn builtin() -> &'static Catalog {
    Catalog::builtin()
}

fn tool(name: &str) -> &'static Tool {
    builtin()
        .get(name)
        .unwrap_or_else(|| panic!("tool {name} missing"))
}

// ---- catalog counts -----------------------------------------------------------------------

/// The mood enum of `create_journal_entry`, in catalog order.
const MOODS: [&str; 8] = [
    "dankbar",
    "glücklich",
    "zufrieden",
    "neutral",
    "nachdenklich",
    "traurig",
    "gestresst",
    "wütend",
];

#[test]
fn builtin_catalog_counts() {
    let c = builtin();
    assert_eq!(c.len(), 110);
    let count = |d| c.tools().iter().filter(|t| t.default_policy == d).count();
    assert_eq!(count(PolicyDecision::Propose), 62);
    assert_eq!(count(PolicyDecision::Auto), 48);
    assert_eq!(count(PolicyDecision::Deny), 0);

    let params: Vec<_> = c.tools().iter().flat_map(|t| &t.parameters).collect();
    assert_eq!(params.len(), 277);
    let by_type = |ty| params.iter().filter(|p| p.ty == ty).count();
    assert_eq!(by_type(ParamType::String), 233);
    assert_eq!(by_type(ParamType::Number), 34);
    assert_eq!(by_type(ParamType::Boolean), 6);
    assert_eq!(by_type(ParamType::Array), 2);
    assert_eq!(by_type(ParamType::Object), 2);
    assert_eq!(by_type(ParamType::Integer), 0);
    assert_eq!(
        params.iter().filter(|p| !p.enum_values.is_empty()).count(),
        56
    );
    assert!(params
        .iter()
        .all(|p| p.enum_values.is_empty() || p.ty == ParamType::String));
    assert!(params.iter().all(|p| !p.description.trim().is_empty()));
    assert!(c.tools().iter().all(|t| !t.description.trim().is_empty()));
}

#[test]
fn builtin_modules_in_catalog_order_and_contiguous() {
    let expected = [
        "todo",
        "calendar",
        "notes",
        "places",
        "drink",
        "food",
        "news",
        "articles",
        "news-research",
        "journal",
        "habits",
        "myday",
        "goals",
        "contacts",
        "mood",
        "finance",
        "times",
        "wetter",
        "events",
        "quiz",
        "invoices",
        "library",
        "broadcast",
        "website",
        "writing",
        "comic",
        "augur",
        "lasts",
    ];
    assert_eq!(builtin().modules(), expected);
    // Contiguous: the module sequence changes exactly 27 times.
    let changes = builtin()
        .tools()
        .windows(2)
        .filter(|w| w[0].module != w[1].module)
        .count();
    assert_eq!(changes, 27);
    let with_propose: BTreeSet<&str> = builtin()
        .server_tools()
        .iter()
        .map(|t| t.module.as_str())
        .collect();
    assert_eq!(with_propose.len(), 25);
    for m in ["food", "myday", "wetter"] {
        assert!(!with_propose.contains(m), "{m} must have only auto tools");
    }
}

#[test]
fn builtin_parameterless_tools() {
    let none: Vec<&str> = builtin()
        .tools()
        .iter()
        .filter(|t| t.parameters.is_empty())
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(
        none,
        [
            "get_task_stats",
            "get_todays_events",
            "get_places",
            "get_current_location",
            "undo_drink",
            "get_drink_progress",
            "nutrition_summary",
            "get_habits",
            "get_myday_summary",
            "get_contacts",
            "get_mood_today",
            "stop_timer",
            "get_timer_status",
            "list_projects",
            "get_invoice_stats",
            "list_websites",
            "list_writing_styles",
            "suggest_lasts",
        ]
    );
}

#[test]
fn builtin_exact_enums_and_nested_schemas() {
    let mood = tool("create_journal_entry").param("mood").expect("mood");
    assert_eq!(mood.enum_values, MOODS);
    assert_eq!(
        tool("generate_comic_panel")
            .param("model")
            .expect("model")
            .enum_values,
        [
            "openai/gpt-image-2",
            "google/gemini-3-pro-image-preview",
            "google/gemini-3.1-flash-image-preview"
        ]
    );
    let urls = tool("import_articles_from_urls")
        .param("urls")
        .expect("urls");
    assert_eq!(urls.ty, ParamType::Array);
    assert_eq!(urls.items.as_ref().map(|i| i.ty), Some(ParamType::String));

    let lines = tool("create_invoice").param("lines").expect("lines");
    let items = lines.items.as_ref().expect("lines items");
    assert_eq!(items.ty, ParamType::Object);
    let fields: Vec<(&str, bool)> = items
        .properties
        .as_ref()
        .expect("line fields")
        .iter()
        .map(|p| (p.name.as_str(), p.required))
        .collect();
    assert_eq!(
        fields,
        [
            ("title", true),
            ("quantity", true),
            ("unitPrice", true),
            ("vatRate", false),
            ("unit", false)
        ]
    );
    for (t, p) in [
        ("add_website_block", "props"),
        ("update_website_block", "patch"),
    ] {
        let param = tool(t).param(p).expect("object param");
        assert_eq!(param.ty, ParamType::Object);
        assert!(param.properties.is_some(), "{t}.{p} declares a schema");
    }
}

// ---- server subset ------------------------------------------------------------------------

/// The 62 propose tools of planner-service.md §6.1, in catalog order.
const SERVER_TOOLS_AT_HEAD: [&str; 62] = [
    "create_task",
    "complete_task",
    "complete_tasks_by_title",
    "create_event",
    "create_note",
    "update_note",
    "append_to_note",
    "add_tag_to_note",
    "create_place",
    "visit_place",
    "undo_drink",
    "save_news_article",
    "save_article",
    "archive_article",
    "tag_article",
    "add_article_highlight",
    "research_news",
    "create_journal_entry",
    "create_habit",
    "log_habit",
    "create_goal",
    "pause_goal",
    "resume_goal",
    "complete_goal",
    "create_contact",
    "log_mood",
    "add_transaction",
    "start_timer",
    "stop_timer",
    "suggest_event",
    "create_quiz",
    "update_quiz",
    "add_quiz_question",
    "update_quiz_question",
    "delete_quiz_question",
    "create_invoice",
    "mark_invoice_paid",
    "create_library_entry",
    "update_library_entry_status",
    "rate_library_entry",
    "create_campaign_draft",
    "create_website",
    "apply_website_template",
    "create_website_page",
    "add_website_block",
    "update_website_block",
    "publish_website",
    "create_draft",
    "generate_draft_content",
    "refine_draft_selection",
    "set_draft_status",
    "save_draft_as_article",
    "create_comic_story",
    "generate_comic_panel",
    "create_comic_character",
    "generate_character_variant",
    "pin_character_variant",
    "capture_sign",
    "resolve_sign",
    "create_last",
    "confirm_last",
    "reclaim_last",
];

#[test]
fn server_tools_are_the_propose_tools_in_catalog_order() {
    let names: Vec<&str> = builtin()
        .server_tools()
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, SERVER_TOOLS_AT_HEAD);
    // Drift guard, both directions.
    let server: BTreeSet<&str> = names.iter().copied().collect();
    let proposable: BTreeSet<&str> = builtin()
        .tools()
        .iter()
        .filter(|t| t.default_policy == PolicyDecision::Propose)
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(server, proposable);
}

#[test]
fn seed_31_tools_over_16_modules_are_server_tools() {
    // From the service notes: "31 propose-Tools ueber 16 Module".
    let seed: [(&str, &[&str]); 16] = [
        (
            "todo",
            &["create_task", "complete_task", "complete_tasks_by_title"],
        ),
        ("calendar", &["create_event"]),
        (
            "notes",
            &[
                "create_note",
                "update_note",
                "append_to_note",
                "add_tag_to_note",
            ],
        ),
        ("places", &["create_place", "visit_place"]),
        ("drink", &["undo_drink"]),
        ("news", &["save_news_article"]),
        ("news-research", &["research_news"]),
        ("journal", &["create_journal_entry"]),
        ("habits", &["create_habit", "log_habit"]),
        ("contacts", &["create_contact"]),
        (
            "quiz",
            &[
                "create_quiz",
                "update_quiz",
                "add_quiz_question",
                "update_quiz_question",
                "delete_quiz_question",
            ],
        ),
        (
            "goals",
            &["create_goal", "pause_goal", "resume_goal", "complete_goal"],
        ),
        ("mood", &["log_mood"]),
        ("events", &["suggest_event"]),
        ("finance", &["add_transaction"]),
        ("times", &["start_timer", "stop_timer"]),
    ];
    assert_eq!(seed.iter().map(|(_, ts)| ts.len()).sum::<usize>(), 31);
    let server = builtin().server_tools();
    for (module, names) in seed {
        for name in names {
            let t = server
                .iter()
                .find(|t| t.name == *name)
                .unwrap_or_else(|| panic!("{name} not in server_tools"));
            assert_eq!(t.module, module, "{name}");
        }
    }
}

// ---- function specs -----------------------------------------------------------------------

const BOOK_ROOM: &str = r#"[{
  "name": "book_room",
  "module": "demo",
  "description": "Reserve a meeting room",
  "defaultPolicy": "propose",
  "parameters": [
    { "name": "roomId",   "type": "string",  "required": true,  "description": "Room identifier" },
    { "name": "size",     "type": "string",  "required": false, "description": "Room size", "enum": ["small", "large"] },
    { "name": "seats",    "type": "number",  "required": true,  "description": "Number of seats" },
    { "name": "catering", "type": "boolean", "required": false, "description": "Order food" },
    { "name": "guests",   "type": "array",   "required": false, "description": "List of guest e-mails" GUESTS_ITEMS },
    { "name": "tags",     "type": "string",  "required": false, "description": "Labels", "enum": [] }
  ]
}]"#;

fn book_room(items: &str) -> Catalog {
    Catalog::from_json(&BOOK_ROOM.replace("GUESTS_ITEMS", items)).expect("book_room parses")
}

#[test]
fn book_room_example_matches_documented_output_byte_for_byte() {
    let c = book_room("");
    let spec = tool_to_function_spec(&c.tools()[0]);
    let expected = r#"{"type":"function","function":{"name":"book_room","description":"Reserve a meeting room","parameters":{"type":"object","properties":{"roomId":{"type":"string","description":"Room identifier"},"size":{"type":"string","description":"Room size","enum":["small","large"]},"seats":{"type":"number","description":"Number of seats"},"catering":{"type":"boolean","description":"Order food"},"guests":{"type":"array","description":"List of guest e-mails"},"tags":{"type":"string","description":"Labels"}},"required":["roomId","seats"]}}}"#;
    assert_eq!(spec.to_string(), expected);
}

#[test]
fn book_room_with_declared_items_adds_items_after_description() {
    let c = book_room(r#", "items": {"type": "string", "description": "E-mail address"}"#);
    let spec = tool_to_function_spec(&c.tools()[0]);
    assert_eq!(
        spec["function"]["parameters"]["properties"]["guests"].to_string(),
        r#"{"type":"array","description":"List of guest e-mails","items":{"type":"string","description":"E-mail address"}}"#
    );
}

#[test]
fn nested_object_schema_key_order() {
    let spec = tool_to_function_spec(tool("create_invoice"));
    let lines = &spec["function"]["parameters"]["properties"]["lines"];
    let keys: Vec<&String> = lines.as_object().expect("obj").keys().collect();
    assert_eq!(keys, ["type", "description", "items"]);
    let item_keys: Vec<&String> = lines["items"].as_object().expect("obj").keys().collect();
    assert_eq!(item_keys, ["type", "description", "properties", "required"]);
    assert_eq!(
        lines["items"]["required"],
        json!(["title", "quantity", "unitPrice"])
    );
    let props = &spec["function"]["parameters"]["properties"];
    assert_eq!(
        props["currency"],
        json!({"type":"string","description":"Currency (default CHF)","enum":["CHF","EUR","USD"]})
    );
    let patch = &tool_to_function_spec(tool("update_website_block"))["function"]["parameters"]
        ["properties"]["patch"];
    assert_eq!(patch["properties"], json!({}));
    assert!(patch.get("required").is_none());
}

#[test]
fn zero_parameter_tool_spec() {
    let spec = tool_to_function_spec(tool("stop_timer"));
    assert_eq!(
        spec["function"]["parameters"].to_string(),
        r#"{"type":"object","properties":{},"required":[]}"#
    );
}

#[test]
fn function_specs_cover_every_builtin_tool_in_order() {
    let all: Vec<&Tool> = builtin().tools().iter().collect();
    let specs = function_specs(&all);
    assert_eq!(specs.len(), 110);
    for (t, s) in all.iter().zip(&specs) {
        let keys: Vec<&String> = s.as_object().expect("obj").keys().collect();
        assert_eq!(keys, ["type", "function"]);
        let f = &s["function"];
        let fkeys: Vec<&String> = f.as_object().expect("obj").keys().collect();
        assert_eq!(fkeys, ["name", "description", "parameters"], "{}", t.name);
        assert_eq!(f["name"], t.name.as_str());
        let props: Vec<&String> = f["parameters"]["properties"]
            .as_object()
            .expect("props")
            .keys()
            .collect();
        let names: Vec<&String> = t.parameters.iter().map(|p| &p.name).collect();
        assert_eq!(props, names, "{}", t.name);
        let required: Vec<&str> = t
            .parameters
            .iter()
            .filter(|p| p.required)
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(f["parameters"]["required"], json!(required), "{}", t.name);
        let pkeys: Vec<&String> = f["parameters"].as_object().expect("obj").keys().collect();
        assert_eq!(pkeys, ["type", "properties", "required"], "{}", t.name);
        for schema in f["parameters"]["properties"]
            .as_object()
            .expect("props")
            .values()
        {
            assert_schema_keys(schema, &t.name);
        }
    }
}

/// Every (nested) property schema only uses the JSON Schema keys we emit: no `module`,
/// `defaultPolicy`, `default`, `additionalProperties` or other extras.
fn assert_schema_keys(schema: &Value, tool: &str) {
    let obj = schema.as_object().expect("schema object");
    for key in obj.keys() {
        assert!(
            [
                "type",
                "description",
                "enum",
                "items",
                "properties",
                "required"
            ]
            .contains(&key.as_str()),
            "{tool}: unexpected schema key {key}"
        );
    }
    if let Some(items) = obj.get("items") {
        assert_schema_keys(items, tool);
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for p in props.values() {
            assert_schema_keys(p, tool);
        }
    }
}

// ---- from_json validation -----------------------------------------------------------------

fn one_tool(name: &str, policy: &str, params: &str) -> String {
    format!(
        r#"[{{"name":"{name}","module":"demo","defaultPolicy":"{policy}","description":"Demo tool","parameters":[{params}]}}]"#
    )
}

/// A catalog of one demo tool with one required parameter `param` of type `ty`
/// (described as `param` in upper case).
fn one_param_tool(
    name: &str,
    policy: &str,
    param: &str,
    ty: &str,
) -> Result<Catalog, CatalogError> {
    let description = param.to_uppercase();
    let param = format!(
        r#"{{"name":"{param}","type":"{ty}","required":true,"description":"{description}"}}"#
    );
    Catalog::from_json(&one_tool(name, policy, &param))
}

#[test]
fn from_json_rejections() {
    let p = |extra: &str| {
        format!(r#"{{"name":"x","type":"string","required":true,"description":"X"{extra}}}"#)
    };
    let cases: Vec<(String, &str)> = vec![
        (
            one_tool("t", "auto", r#"{"name":"x","type":"String","required":true,"description":"X"}"#),
            "Unsupported parameter type in tool catalog: \"String\"",
        ),
        (
            one_tool("t", "auto", r#"{"name":"x","type":"date","required":true,"description":"X"}"#),
            "Unsupported parameter type in tool catalog: \"date\"",
        ),
        (one_tool("Bad-Name", "auto", ""), "invalid tool name"),
        (one_tool("bad1", "auto", ""), "invalid tool name"),
        (one_tool("", "auto", ""), "invalid tool name"),
        (one_tool("t", "maybe", ""), "invalid policy \"maybe\""),
        (one_tool("t", "Auto", ""), "invalid policy"),
        (one_tool("t", "auto", &format!("{},{}", p(""), p(""))), "duplicate parameter name at t.x"),
        (
            one_tool("t", "auto", r#"{"name":"x","type":"string","required":true,"description":"  "}"#),
            "empty description at t.x",
        ),
        (
            one_tool("t", "auto", r#"{"name":"","type":"string","required":true,"description":"X"}"#),
            "empty parameter name",
        ),
        (
            one_tool("t", "auto", r#"{"name":"n","type":"number","required":true,"description":"N","enum":["1"]}"#),
            "enum on a non-string parameter at t.n",
        ),
        (
            one_tool("t", "auto", &p(r#","items":{"type":"string"}"#)),
            "`items` is only allowed on array",
        ),
        (
            one_tool("t", "auto", &p(r#","properties":[]"#)),
            "`properties` is only allowed on object",
        ),
        (
            one_tool(
                "t",
                "auto",
                r#"{"name":"o","type":"object","required":true,"description":"O","properties":[{"name":"a","type":"array","required":false,"description":"A","items":{"type":"string"}}]}"#,
            ),
            "nested schema too deep at t.o.a",
        ),
        (
            one_tool(
                "t",
                "auto",
                r#"{"name":"a","type":"array","required":true,"description":"A","items":{"type":"strnig"}}"#,
            ),
            "Unsupported parameter type in tool catalog: \"strnig\"",
        ),
        (one_tool("t", "auto", &p(r#","default":1"#)), "unknown field `default`"),
        ("{}".to_owned(), "not valid JSON"),
        (
            r#"[{"name":"t","module":"","defaultPolicy":"auto","description":"D","parameters":[]}]"#.to_owned(),
            "empty module",
        ),
        (
            r#"[{"name":"t","module":"m","defaultPolicy":"auto","description":"","parameters":[]}]"#.to_owned(),
            "empty description at t",
        ),
        (
            format!(
                "[{},{}]",
                one_tool("t", "auto", "").trim_matches(['[', ']']),
                one_tool("t", "propose", "").trim_matches(['[', ']'])
            ),
            "duplicate tool name in tool catalog: \"t\"",
        ),
    ];
    for (text, want) in cases {
        let err = Catalog::from_json(&text).expect_err(&text);
        let msg = err.to_string();
        assert!(msg.contains(want), "{text}\n  => {msg}\n  wanted {want}");
    }
}

#[test]
fn unknown_type_error_text_is_exact() {
    let err = one_param_tool("t", "auto", "x", "uuid").expect_err("must fail");
    assert!(matches!(err, CatalogError::UnsupportedType(ref t) if t == "uuid"));
    assert_eq!(
        err.to_string(),
        "Unsupported parameter type in tool catalog: \"uuid\""
    );
}

#[test]
fn from_json_accepts_deny_integer_and_empty_enum() {
    let c = Catalog::from_json(&one_tool(
        "t",
        "deny",
        r#"{"name":"n","type":"integer","required":false,"description":"N"},{"name":"s","type":"string","required":false,"description":"S","enum":[]},{"name":"b","type":"boolean","required":false,"description":"B","enum":[]}"#,
    ))
    .expect("valid");
    let t = &c.tools()[0];
    assert_eq!(t.default_policy, PolicyDecision::Deny);
    assert_eq!(t.parameters[0].ty, ParamType::Integer);
    assert!(t.parameters[1].enum_values.is_empty());
    assert!(c.server_tools().is_empty());
}

// ---- policy -------------------------------------------------------------------------------

#[test]
fn policy_parsing_is_tolerant() {
    let p = AgentPolicy::from_value(&json!({
        "tools": {"create_task": "deny", "create_note": "sometimes", "log_mood": 3, "undo_drink": "auto"},
        "defaultsByModule": {"quiz": "deny", "notes": null},
        "extra": true
    }));
    assert_eq!(p.default_for_ai(), PolicyDecision::Propose);
    assert_eq!(p.resolve(tool("create_task")), PolicyDecision::Deny);
    assert_eq!(p.resolve(tool("create_note")), PolicyDecision::Propose); // ignored decision
    assert_eq!(p.resolve(tool("log_mood")), PolicyDecision::Propose);
    assert_eq!(p.resolve(tool("undo_drink")), PolicyDecision::Auto);
    assert_eq!(p.resolve(tool("create_quiz")), PolicyDecision::Deny);

    for v in [
        json!(null),
        json!("deny"),
        json!([1]),
        json!({"defaultForAi": "nope"}),
    ] {
        assert_eq!(AgentPolicy::from_value(&v), AgentPolicy::default(), "{v}");
    }
    assert_eq!(
        AgentPolicy::from_value(&json!({"tools": {}, "defaultForAi": "deny"})).default_for_ai(),
        PolicyDecision::Deny
    );
}

#[test]
fn policy_resolution_order_table() {
    let base = json!({
        "tools": {"create_task": "auto", "create_event": "deny"},
        "defaultsByModule": {"todo": "deny", "calendar": "auto", "notes": "deny"},
        "defaultForAi": "auto"
    });
    let p = AgentPolicy::from_value(&base);
    let cases = [
        ("create_task", PolicyDecision::Auto), // tools beats module deny
        ("create_event", PolicyDecision::Deny), // tools beats module auto
        ("complete_task", PolicyDecision::Deny), // module default (catalog module todo)
        ("create_note", PolicyDecision::Deny), // module default
        ("log_mood", PolicyDecision::Auto),    // defaultForAi
    ];
    for (name, want) in cases {
        assert_eq!(p.resolve(tool(name)), want, "{name}");
    }
}

#[test]
fn module_default_uses_catalog_module_for_custom_tools() {
    let c = Catalog::from_json(&one_tool("book_room", "propose", "")).expect("valid");
    let p = AgentPolicy::default().with_module_default("demo", PolicyDecision::Deny);
    assert_eq!(p.resolve(&c.tools()[0]), PolicyDecision::Deny);
    let offered: Vec<&Tool> = c.tools().iter().collect();
    assert!(filter_offered(&offered, Some(&p)).is_empty());
}

#[test]
fn aggressive_preset_module_defaults_are_shadowed_by_full_tool_map() {
    // The preset copies every catalog default into `tools` and adds module defaults for
    // drink and food; `undo_drink` stays `propose` because `tools` wins.
    let mut tools = serde_json::Map::new();
    for t in builtin().tools() {
        tools.insert(t.name.clone(), json!(t.default_policy.as_str()));
    }
    let aggressive = AgentPolicy::from_value(&json!({
        "tools": tools,
        "defaultsByModule": {"drink": "auto", "food": "auto"},
        "defaultForAi": "auto"
    }));
    assert_eq!(
        aggressive.resolve(tool("undo_drink")),
        PolicyDecision::Propose
    );
    assert_eq!(
        AgentPolicy::from_catalog_defaults(builtin())
            .with_module_default("drink", PolicyDecision::Auto)
            .with_default_for_ai(PolicyDecision::Auto)
            .resolve(tool("undo_drink")),
        PolicyDecision::Propose
    );
    // Without the copied tool map the module default applies.
    let modules_only = AgentPolicy::from_value(&json!({
        "tools": {}, "defaultsByModule": {"drink": "auto", "food": "auto"}, "defaultForAi": "propose"
    }));
    assert_eq!(
        modules_only.resolve(tool("undo_drink")),
        PolicyDecision::Auto
    );
    assert_eq!(
        modules_only.resolve(tool("create_task")),
        PolicyDecision::Propose
    );
}

#[test]
fn catalog_default_policy_matches_default_policies() {
    let p = AgentPolicy::from_catalog_defaults(builtin());
    for t in builtin().tools() {
        assert_eq!(p.resolve(t), t.default_policy, "{}", t.name);
    }
}

#[test]
fn filter_offered_removes_only_denied_and_keeps_order() {
    let server = builtin().server_tools();
    assert_eq!(filter_offered(&server, None).len(), 62);
    let p = AgentPolicy::default()
        .with_tool("create_task", PolicyDecision::Deny)
        .with_module_default("quiz", PolicyDecision::Deny)
        .with_tool("create_quiz", PolicyDecision::Auto);
    let kept: Vec<&str> = filter_offered(&server, Some(&p))
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    let expected: Vec<&str> = SERVER_TOOLS_AT_HEAD
        .iter()
        .copied()
        .filter(|n| {
            *n != "create_task"
                && !matches!(
                    *n,
                    "update_quiz"
                        | "add_quiz_question"
                        | "update_quiz_question"
                        | "delete_quiz_question"
                )
        })
        .collect();
    assert_eq!(kept, expected);
    let deny_all = AgentPolicy::default().with_default_for_ai(PolicyDecision::Deny);
    assert!(filter_offered(&server, Some(&deny_all)).is_empty());
}

// ---- call validation ----------------------------------------------------------------------

fn offered_server() -> Vec<&'static Tool> {
    builtin().server_tools()
}

#[test]
fn validate_call_rejections_table() {
    let offered = offered_server();
    let numeric = |param: &str, expected| CallRejection::WrongType {
        param: param.into(),
        expected,
        found: "a numeric string",
    };
    let cases: Vec<(&str, &str, CallRejection, &str)> = vec![
        (
            "no_such_tool",
            "{}",
            CallRejection::UnknownTool("no_such_tool".into()),
            "unknown_tool",
        ),
        (
            "list_tasks",
            "{}",
            CallRejection::NotOffered("list_tasks".into()),
            "not_offered",
        ),
        (
            "create_task",
            "{\"title\": ",
            CallRejection::InvalidJson(String::new()),
            "invalid_json",
        ),
        (
            "create_task",
            "[\"x\"]",
            CallRejection::NotAnObject,
            "not_an_object",
        ),
        (
            "create_task",
            "\"title\"",
            CallRejection::NotAnObject,
            "not_an_object",
        ),
        (
            "create_task",
            "{}",
            CallRejection::MissingRequired("title".into()),
            "missing_required",
        ),
        (
            "create_task",
            r#"{"title": null}"#,
            CallRejection::MissingRequired("title".into()),
            "missing_required",
        ),
        (
            "create_task",
            r#"{"title": 5}"#,
            CallRejection::WrongType {
                param: "title".into(),
                expected: ParamType::String,
                found: "a number",
            },
            "wrong_type",
        ),
        (
            "add_transaction",
            r#"{"type":"income","amount":"12.5","description":"x"}"#,
            numeric("amount", ParamType::Number),
            "wrong_type",
        ),
        (
            "create_event",
            r#"{"title":"t","startTime":"s","endTime":"e","isAllDay":"true"}"#,
            CallRejection::WrongType {
                param: "isAllDay".into(),
                expected: ParamType::Boolean,
                found: "a string",
            },
            "wrong_type",
        ),
        (
            "create_task",
            r#"{"title":"t","priority":"urgent"}"#,
            CallRejection::NotInEnum {
                param: "priority".into(),
                allowed: vec!["low".into(), "medium".into(), "high".into()],
            },
            "not_in_enum",
        ),
        (
            "create_journal_entry",
            r#"{"content":"c","mood":"glucklich"}"#,
            CallRejection::NotInEnum {
                param: "mood".into(),
                allowed: MOODS.map(String::from).to_vec(),
            },
            "not_in_enum",
        ),
        (
            "create_task",
            r#"{"title":"t","due":"2025-01-01"}"#,
            CallRejection::UnknownParam("due".into()),
            "unknown_param",
        ),
        // Nested: array items and object properties.
        (
            "create_invoice",
            r#"{"clientName":"c","lines":"one line"}"#,
            CallRejection::WrongType {
                param: "lines".into(),
                expected: ParamType::Array,
                found: "a string",
            },
            "wrong_type",
        ),
        (
            "create_invoice",
            r#"{"clientName":"c","lines":[{"title":"a","quantity":1,"unitPrice":2},"b"]}"#,
            CallRejection::WrongType {
                param: "lines[1]".into(),
                expected: ParamType::Object,
                found: "a string",
            },
            "wrong_type",
        ),
        (
            "create_invoice",
            r#"{"clientName":"c","lines":[{"title":"a","quantity":1}]}"#,
            CallRejection::MissingRequired("lines[0].unitPrice".into()),
            "missing_required",
        ),
        (
            "create_invoice",
            r#"{"clientName":"c","lines":[{"title":"a","quantity":"2","unitPrice":2}]}"#,
            numeric("lines[0].quantity", ParamType::Number),
            "wrong_type",
        ),
        (
            "add_website_block",
            r#"{"pageId":"p","type":"hero","props":[1]}"#,
            CallRejection::WrongType {
                param: "props".into(),
                expected: ParamType::Object,
                found: "an array",
            },
            "wrong_type",
        ),
        (
            "create_campaign_draft",
            r#"{"name":"n","subject":"s","htmlContent":{"p":"x"}}"#,
            CallRejection::WrongType {
                param: "htmlContent".into(),
                expected: ParamType::String,
                found: "an object",
            },
            "wrong_type",
        ),
    ];
    for (name, args, want, label) in cases {
        let got = validate_call(&offered, name, args).expect_err(args);
        match (&got, &want) {
            (CallRejection::InvalidJson(msg), CallRejection::InvalidJson(_)) => {
                assert!(!msg.is_empty())
            }
            _ => assert_eq!(got, want, "{name} {args}"),
        }
        assert_eq!(got.label(), label);
        assert!(!got.to_string().is_empty());
    }
}

#[test]
fn validate_call_external_offer_for_auto_tools() {
    // Offer an auto tool explicitly, to reach array-of-string and integer-free number checks.
    let offered = [tool("import_articles_from_urls"), tool("list_tasks")];
    let ok = validate_call(
        &offered,
        "import_articles_from_urls",
        r#"{"urls":["https://a.example/x","https://b.example/y"]}"#,
    )
    .expect("valid");
    assert_eq!(
        ok["urls"],
        json!(["https://a.example/x", "https://b.example/y"])
    );
    assert_eq!(
        validate_call(&offered, "import_articles_from_urls", r#"{"urls":["a",2]}"#),
        Err(CallRejection::WrongType {
            param: "urls[1]".into(),
            expected: ParamType::String,
            found: "a number"
        })
    );
    assert_eq!(
        validate_call(&offered, "create_task", r#"{"title":"t"}"#),
        Err(CallRejection::NotOffered("create_task".into()))
    );
    assert_eq!(
        validate_call(&offered, "list_tasks", r#"{"limit":"20"}"#)
            .expect_err("numeric string")
            .to_string(),
        "Parameter \"limit\" must be a number, but a numeric string was given. Send numbers as JSON numbers without quotes, e.g. 12.5 instead of \"12.5\"."
    );
}

#[test]
fn validate_call_accepts_a_valid_call_per_type() {
    let offered = offered_server();
    let cases = [
        // string + enum + optional null dropped
        (
            "create_task",
            r#"{"title":"Buy milk","priority":"high","dueDate":null}"#,
            json!({"title":"Buy milk","priority":"high"}),
        ),
        // number (integer and fractional)
        (
            "add_transaction",
            r#"{"type":"expense","amount":12.5,"description":"Lunch"}"#,
            json!({"type":"expense","amount":12.5,"description":"Lunch"}),
        ),
        (
            "log_mood",
            r#"{"level":7,"emotion":"calm"}"#,
            json!({"level":7,"emotion":"calm"}),
        ),
        // boolean
        (
            "update_quiz",
            r#"{"quizId":"q1","isPinned":true}"#,
            json!({"quizId":"q1","isPinned":true}),
        ),
        // array of objects, extra nested key allowed, nested null optional dropped
        (
            "create_invoice",
            r#"{"clientName":"ACME","lines":[{"title":"Work","quantity":2,"unitPrice":100,"vatRate":null,"note":"x"}]}"#,
            json!({"clientName":"ACME","lines":[{"title":"Work","quantity":2,"unitPrice":100,"note":"x"}]}),
        ),
        // open object
        (
            "update_website_block",
            r#"{"blockId":"b","patch":{"title":"Hi","nested":{"a":1}}}"#,
            json!({"blockId":"b","patch":{"title":"Hi","nested":{"a":1}}}),
        ),
        // zero-parameter tool with empty arguments
        ("stop_timer", "", json!({})),
        ("stop_timer", "  {}  ", json!({})),
        // non-ASCII enum byte for byte
        (
            "create_journal_entry",
            r#"{"content":"Schöner Tag","mood":"glücklich"}"#,
            json!({"content":"Schöner Tag","mood":"glücklich"}),
        ),
    ];
    for (name, args, want) in cases {
        let got =
            validate_call(&offered, name, args).unwrap_or_else(|e| panic!("{name} {args}: {e}"));
        assert_eq!(Value::Object(got), want, "{name}");
    }
}

#[test]
fn integer_params_reject_fractions_but_accept_whole_floats() {
    let c = one_param_tool("count_things", "propose", "n", "integer").expect("valid");
    let offered: Vec<&Tool> = c.tools().iter().collect();
    for ok in [r#"{"n":3}"#, r#"{"n":-3}"#, r#"{"n":3.0}"#] {
        assert!(
            c.validate_call(&offered, "count_things", ok).is_ok(),
            "{ok}"
        );
    }
    assert_eq!(
        c.validate_call(&offered, "count_things", r#"{"n":3.5}"#),
        Err(CallRejection::WrongType {
            param: "n".into(),
            expected: ParamType::Integer,
            found: "a fractional number"
        })
    );
    assert_eq!(
        c.validate_call(&[], "count_things", "{}"),
        Err(CallRejection::NotOffered("count_things".into()))
    );
}

// ---- properties ---------------------------------------------------------------------------

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        (-1.0e6f64..1.0e6).prop_map(Value::from),
        "[a-z0-9 ]{0,12}".prop_map(Value::from),
        prop::sample::select(vec!["low", "high", "glücklich", "income", "12"])
            .prop_map(Value::from),
        Just(json!([])),
        Just(json!([{"title":"a","quantity":1,"unitPrice":1}])),
        Just(json!({})),
    ]
}

proptest! {
    /// Whatever the model sends, an accepted call only has declared keys, every required
    /// parameter, no nulls, and each value of the declared type and enum.
    #[test]
    fn accepted_calls_conform_to_the_schema(
        tool_idx in 0usize..62,
        entries in prop::collection::vec((0usize..12, arb_value()), 0..8),
    ) {
        let offered = offered_server();
        let t = offered[tool_idx];
        let mut obj = serde_json::Map::new();
        for (i, v) in entries {
            let key = t.parameters.get(i).map_or_else(|| format!("extra{i}"), |p| p.name.clone());
            obj.insert(key, v);
        }
        let raw = Value::Object(obj).to_string();
        if let Ok(args) = validate_call(&offered, &t.name, &raw) {
            for (k, v) in &args {
                let p = t.param(k);
                prop_assert!(p.is_some(), "undeclared key {k}");
                let p = p.expect("checked");
                prop_assert!(!v.is_null());
                let type_ok = match p.ty {
                    ParamType::String => v.is_string(),
                    ParamType::Number => v.is_number(),
                    ParamType::Integer => v.is_i64() || v.is_u64(),
                    ParamType::Boolean => v.is_boolean(),
                    ParamType::Array => v.is_array(),
                    ParamType::Object => v.is_object(),
                };
                prop_assert!(type_ok, "{k} has wrong type");
                if let Some(s) = v.as_str() {
                    prop_assert!(p.enum_values.is_empty() || p.enum_values.iter().any(|e| e == s));
                }
            }
            for p in t.parameters.iter().filter(|p| p.required) {
                prop_assert!(args.contains_key(&p.name), "missing {}", p.name);
            }
        }
    }

    /// Arbitrary text never panics the validator, and every rejection has a known label.
    #[test]
    fn arbitrary_argument_text_is_handled(raw in ".{0,64}") {
        let offered = offered_server();
        if let Err(e) = validate_call(&offered, "create_task", &raw) {
            prop_assert!([
                "invalid_json", "not_an_object", "missing_required", "wrong_type",
                "not_in_enum", "unknown_param",
            ].contains(&e.label()));
        }
    }

    /// Resolution follows tools → module → default for any combination of entries, and
    /// filter_offered keeps exactly the non-denied tools in order.
    #[test]
    fn policy_resolution_and_filter_invariants(
        tool_entries in prop::collection::btree_map(0usize..110, 0usize..3, 0..20),
        module_entries in prop::collection::btree_map(0usize..28, 0usize..3, 0..10),
        fallback in 0usize..3,
    ) {
        let decisions = [PolicyDecision::Auto, PolicyDecision::Propose, PolicyDecision::Deny];
        let tools = builtin().tools();
        let modules = builtin().modules();
        let tmap: BTreeMap<String, PolicyDecision> =
            tool_entries.iter().map(|(&i, &d)| (tools[i].name.clone(), decisions[d])).collect();
        let mmap: BTreeMap<String, PolicyDecision> =
            module_entries.iter().map(|(&i, &d)| (modules[i].to_owned(), decisions[d])).collect();
        let policy = AgentPolicy::from_value(&json!({
            "tools": tmap.iter().map(|(k, v)| (k.clone(), json!(v.as_str()))).collect::<serde_json::Map<_, _>>(),
            "defaultsByModule": mmap.iter().map(|(k, v)| (k.clone(), json!(v.as_str()))).collect::<serde_json::Map<_, _>>(),
            "defaultForAi": decisions[fallback].as_str(),
        }));
        let all: Vec<&Tool> = tools.iter().collect();
        for t in &all {
            let want = tmap.get(&t.name).or_else(|| mmap.get(&t.module)).copied().unwrap_or(decisions[fallback]);
            prop_assert_eq!(policy.resolve(t), want);
        }
        let kept = filter_offered(&all, Some(&policy));
        let expected: Vec<&str> = all.iter().filter(|t| policy.resolve(t) != PolicyDecision::Deny).map(|t| t.name.as_str()).collect();
        let kept_names: Vec<&str> = kept.iter().map(|t| t.name.as_str()).collect();
        prop_assert_eq!(kept_names, expected);
    }
}
