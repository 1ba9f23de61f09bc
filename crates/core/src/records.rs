//! Tolerant typed views of merged mission and agent records.
//!
//! Records come from many client versions and are only loosely typed, so these views
//! never fail: every field has a documented fallback. Text fields are kept exactly as
//! stored, including `enc:1:` ciphertext, which the views do not interpret.
//!
//! This module is the one reading of a mission record: [`MissionView`] for the runner,
//! and [`MissionIndex`] for the columns the store indexes a mission snapshot by (state,
//! `nextRunAt`, agent). Both read those fields through the same helpers, and the rule
//! "a mission without an `agentId` runs under the default agent" lives here only
//! ([`explicit_agent_id`], [`agent_id_or_default`]).

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::iso::parse_iso;

/// Id of the implicit agent that owns missions without `agentId` (also its actor
/// principal, [`crate::actor::LEGACY_AI_PRINCIPAL`]).
pub const DEFAULT_AGENT_ID: &str = "legacy:ai-default";
/// Display name of the implicit default agent.
pub const DEFAULT_AGENT_NAME: &str = "Mana";
/// Agent name used when a record has none.
pub const UNNAMED_AGENT: &str = "Unnamed";

/// `record[key]` when it is a string.
fn str_field<'a>(record: &'a Value, key: &str) -> Option<&'a str> {
    record.get(key).and_then(Value::as_str)
}

/// `record[key]` when it is a string, else `default` (non-strings count as missing).
fn text_or(record: &Value, key: &str, default: &str) -> String {
    str_field(record, key).unwrap_or(default).to_owned()
}

/// A mission's `state` when it is a string.
fn state_text(record: &Value) -> Option<&str> {
    str_field(record, "state")
}

/// A mission's `nextRunAt` as stored (when a string) and parsed as an instant.
fn next_run_at(record: &Value) -> (Option<&str>, Option<DateTime<Utc>>) {
    let raw = str_field(record, "nextRunAt");
    (raw, raw.and_then(parse_iso))
}

/// The agent a mission names: `agentId` when a non-empty string. `None` (absent, empty
/// or not a string) means the mission runs under the default agent.
pub fn explicit_agent_id(record: &Value) -> Option<&str> {
    str_field(record, "agentId").filter(|s| !s.is_empty())
}

/// The agent a mission runs under: the one it names, else [`DEFAULT_AGENT_ID`].
pub fn agent_id_or_default(explicit: Option<&str>) -> &str {
    explicit.unwrap_or(DEFAULT_AGENT_ID)
}

/// The columns the store indexes a mission snapshot by, read the way [`MissionView`]
/// reads the same fields (without building the whole view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissionIndex<'a> {
    /// `state` when a string, else `None` (stored as NULL).
    pub state: Option<&'a str>,
    /// `nextRunAt` parsed as an instant; `None` when absent, not a string or unparseable.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The agent the mission runs under, resolved ([`agent_id_or_default`]): never empty.
    pub agent_id: &'a str,
}

impl<'a> MissionIndex<'a> {
    /// Reads the indexed columns of a merged mission record; never fails.
    pub fn from_record(record: &'a Value) -> MissionIndex<'a> {
        MissionIndex {
            state: state_text(record),
            next_run_at: next_run_at(record).1,
            agent_id: agent_id_or_default(explicit_agent_id(record)),
        }
    }

    /// True when the state is `active` (the due listing's state filter).
    pub fn is_active(&self) -> bool {
        self.state == Some(MissionState::Active.as_str())
    }
}

/// Life-cycle state of a mission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissionState {
    Active,
    Paused,
    Done,
    Archived,
    /// Anything else, verbatim (`""` when absent or not a string).
    Other(String),
}

impl MissionState {
    fn from_text(v: Option<&str>) -> Self {
        match v {
            Some("active") => MissionState::Active,
            Some("paused") => MissionState::Paused,
            Some("done") => MissionState::Done,
            Some("archived") => MissionState::Archived,
            Some(other) => MissionState::Other(other.to_owned()),
            None => MissionState::Other(String::new()),
        }
    }

    /// The stored text.
    pub fn as_str(&self) -> &str {
        match self {
            MissionState::Active => "active",
            MissionState::Paused => "paused",
            MissionState::Done => "done",
            MissionState::Archived => "archived",
            MissionState::Other(s) => s,
        }
    }
}

/// One `inputs` entry of a mission: a record the planner should see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRef {
    pub module: String,
    pub table: String,
    pub id: String,
}

impl InputRef {
    /// `Some` only for an object whose `module`, `table` and `id` are all strings.
    fn from_value(v: &Value) -> Option<Self> {
        Some(InputRef {
            module: str_field(v, "module")?.to_owned(),
            table: str_field(v, "table")?.to_owned(),
            id: str_field(v, "id")?.to_owned(),
        })
    }
}

/// A merged mission record as the tick uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct MissionView {
    /// `record.id` when a string, else `""`.
    pub id: String,
    /// Owner, supplied by the caller (the snapshot row's `user_id`).
    pub user_id: String,
    /// Strings verbatim (ciphertext included); anything else `""`.
    pub title: String,
    pub objective: String,
    pub concept_markdown: String,
    pub state: MissionState,
    /// `nextRunAt` parsed as an instant; `None` when absent, not a string or unparseable.
    pub next_run_at: Option<DateTime<Utc>>,
    /// `nextRunAt` as stored, when it is a string.
    pub next_run_at_raw: Option<String>,
    /// Well-formed `inputs` entries in order; malformed entries are skipped.
    pub inputs: Vec<InputRef>,
    /// `cadence` as stored (`null` when absent); interpreted by the cadence module.
    pub cadence: Value,
    /// `iterations` when it is an array, else empty.
    pub iterations: Vec<Value>,
    /// `grant` unless absent or `null` (revoked).
    pub grant: Option<Value>,
    /// `agentId` when a non-empty string ([`explicit_agent_id`]); `None` means the
    /// default agent ([`MissionView::agent_id_or_default`]).
    pub agent_id: Option<String>,
    /// `timezone` when a string.
    pub timezone: Option<String>,
    /// `deletedAt` when a string.
    pub deleted_at: Option<String>,
    /// `spaceId` when a non-empty string: the shared space the mission belongs to.
    pub space_id: Option<String>,
}

impl MissionView {
    /// Builds the view; never fails.
    pub fn from_record(user_id: &str, record: &Value) -> MissionView {
        let (next_run_at_raw, next_run_at) = next_run_at(record);
        MissionView {
            id: text_or(record, "id", ""),
            user_id: user_id.to_owned(),
            title: text_or(record, "title", ""),
            objective: text_or(record, "objective", ""),
            concept_markdown: text_or(record, "conceptMarkdown", ""),
            state: MissionState::from_text(state_text(record)),
            next_run_at,
            next_run_at_raw: next_run_at_raw.map(str::to_owned),
            inputs: record
                .get("inputs")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(InputRef::from_value).collect())
                .unwrap_or_default(),
            cadence: record.get("cadence").cloned().unwrap_or(Value::Null),
            iterations: record
                .get("iterations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            grant: record.get("grant").filter(|g| !g.is_null()).cloned(),
            agent_id: explicit_agent_id(record).map(str::to_owned),
            timezone: str_field(record, "timezone").map(str::to_owned),
            deleted_at: str_field(record, "deletedAt").map(str::to_owned),
            space_id: str_field(record, "spaceId")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        }
    }

    /// The agent this mission runs under: its `agentId`, else [`DEFAULT_AGENT_ID`].
    pub fn agent_id_or_default(&self) -> &str {
        agent_id_or_default(self.agent_id.as_deref())
    }
}

/// Life-cycle state of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentState {
    Active,
    Paused,
    Archived,
    /// Any other value: the string verbatim, or the JSON text of a non-string.
    Other(String),
}

impl AgentState {
    fn from_value(v: Option<&Value>) -> Self {
        match v {
            None | Some(Value::Null) => AgentState::Active,
            Some(Value::String(s)) => match s.as_str() {
                "active" => AgentState::Active,
                "paused" => AgentState::Paused,
                "archived" => AgentState::Archived,
                other => AgentState::Other(other.to_owned()),
            },
            Some(other) => AgentState::Other(other.to_string()),
        }
    }

    /// The stored text.
    pub fn as_str(&self) -> &str {
        match self {
            AgentState::Active => "active",
            AgentState::Paused => "paused",
            AgentState::Archived => "archived",
            AgentState::Other(s) => s,
        }
    }
}

/// A merged agent record as the tick uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentView {
    /// `record.id` when a string, else `""`.
    pub id: String,
    pub user_id: String,
    /// `name` when a string, else `"Unnamed"`.
    pub name: String,
    /// `role` when a string, else `""`.
    pub role: String,
    pub avatar: Option<String>,
    /// Strings only; may be `enc:1:` ciphertext, which callers must not show the model.
    pub system_prompt: Option<String>,
    pub memory: Option<String>,
    /// `policy` when a JSON object (arrays and scalars are dropped); interpreted by policy.
    pub policy: Option<Value>,
    /// Default `Active` when absent or `null`.
    pub state: AgentState,
    /// Missions per agent per tick. Numbers only (default 1); fractions round up (the cap
    /// is compared with an integer count), negatives become 1, huge values saturate.
    pub max_concurrent_missions: u32,
    /// Daily token cap; `Some` only for a non-negative number (fractions round up, since
    /// it is compared with an integer sum). `None` = unlimited, `Some(0)` = fully paused.
    pub max_tokens_per_day: Option<u64>,
    /// `deletedAt` when a string.
    pub deleted_at: Option<String>,
}

impl AgentView {
    /// Builds the view; never fails.
    pub fn from_record(user_id: &str, record: &Value) -> AgentView {
        let max_concurrent_missions =
            match record.get("maxConcurrentMissions").and_then(Value::as_f64) {
                Some(n) if n >= 0.0 => saturating_ceil_u64(n).min(u64::from(u32::MAX)) as u32,
                _ => 1,
            };
        AgentView {
            id: text_or(record, "id", ""),
            user_id: user_id.to_owned(),
            name: text_or(record, "name", UNNAMED_AGENT),
            role: text_or(record, "role", ""),
            avatar: str_field(record, "avatar").map(str::to_owned),
            system_prompt: str_field(record, "systemPrompt").map(str::to_owned),
            memory: str_field(record, "memory").map(str::to_owned),
            policy: record.get("policy").filter(|p| p.is_object()).cloned(),
            state: AgentState::from_value(record.get("state")),
            max_concurrent_missions,
            max_tokens_per_day: record
                .get("maxTokensPerDay")
                .and_then(Value::as_f64)
                .filter(|n| *n >= 0.0)
                .map(saturating_ceil_u64),
            deleted_at: str_field(record, "deletedAt").map(str::to_owned),
        }
    }

    /// True when the record carries a `deletedAt` string.
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// `ceil(n)` as `u64` for a finite non-negative `n`, saturating at `u64::MAX`.
fn saturating_ceil_u64(n: f64) -> u64 {
    // `as` from f64 to u64 saturates and maps NaN to 0 (Rust semantics since 1.45).
    n.ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mission_full_record() {
        let rec = json!({
            "id": "m1", "title": "T", "objective": "enc:1:abc", "conceptMarkdown": "# c",
            "state": "active", "nextRunAt": "2026-01-01T00:00:00.000Z",
            "inputs": [{"module": "notes", "table": "notes", "id": "n1"}],
            "cadence": {"kind": "manual"}, "iterations": [{"id": "i1"}],
            "grant": {"wrappedKey": "x"}, "agentId": "a1", "timezone": "Europe/Berlin",
            "deletedAt": null
        });
        let m = MissionView::from_record("u1", &rec);
        assert_eq!(m.id, "m1");
        assert_eq!(m.user_id, "u1");
        assert_eq!(m.title, "T");
        assert_eq!(m.objective, "enc:1:abc");
        assert_eq!(m.concept_markdown, "# c");
        assert_eq!(m.state, MissionState::Active);
        assert_eq!(m.next_run_at, parse_iso("2026-01-01T00:00:00.000Z"));
        assert_eq!(
            m.next_run_at_raw.as_deref(),
            Some("2026-01-01T00:00:00.000Z")
        );
        assert_eq!(
            m.inputs,
            vec![InputRef {
                module: "notes".into(),
                table: "notes".into(),
                id: "n1".into()
            }]
        );
        assert_eq!(m.cadence, json!({"kind": "manual"}));
        assert_eq!(m.iterations, vec![json!({"id": "i1"})]);
        assert_eq!(m.grant, Some(json!({"wrappedKey": "x"})));
        assert_eq!(m.agent_id.as_deref(), Some("a1"));
        assert_eq!(m.timezone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(m.deleted_at, None);
    }

    #[test]
    fn mission_text_fields_fall_back_to_empty() {
        for v in [
            json!(null),
            json!(5),
            json!(true),
            json!({"a": 1}),
            json!([1]),
        ] {
            let rec = json!({"id": v, "title": v, "objective": v, "conceptMarkdown": v});
            let m = MissionView::from_record("u", &rec);
            assert_eq!((m.id.as_str(), m.title.as_str()), ("", ""), "{v}");
            assert_eq!(
                (m.objective.as_str(), m.concept_markdown.as_str()),
                ("", ""),
                "{v}"
            );
        }
        let m = MissionView::from_record("u", &json!({}));
        assert_eq!(m.title, "");
        assert_eq!(m.cadence, Value::Null);
    }

    #[test]
    fn mission_state_variants() {
        let cases = [
            (json!("active"), MissionState::Active),
            (json!("paused"), MissionState::Paused),
            (json!("done"), MissionState::Done),
            (json!("archived"), MissionState::Archived),
            (json!("weird"), MissionState::Other("weird".into())),
            (json!(null), MissionState::Other(String::new())),
            (json!(1), MissionState::Other(String::new())),
        ];
        for (v, want) in cases {
            let m = MissionView::from_record("u", &json!({"state": v}));
            assert_eq!(m.state, want, "{v}");
        }
        assert_eq!(MissionState::Other("x".into()).as_str(), "x");
        assert_eq!(MissionState::Done.as_str(), "done");
    }

    #[test]
    fn mission_next_run_at_parsing() {
        let cases: [(Value, Option<&str>, bool); 5] = [
            (
                json!("2026-01-01T00:00:00.000Z"),
                Some("2026-01-01T00:00:00.000Z"),
                true,
            ),
            (
                json!("2026-01-01T01:00:00+01:00"),
                Some("2026-01-01T01:00:00+01:00"),
                true,
            ),
            (json!("tomorrow"), Some("tomorrow"), false),
            (json!(12345), None, false),
            (json!(null), None, false),
        ];
        for (v, raw, parsed) in cases {
            let m = MissionView::from_record("u", &json!({"nextRunAt": v}));
            assert_eq!(m.next_run_at_raw.as_deref(), raw, "{v}");
            assert_eq!(m.next_run_at.is_some(), parsed, "{v}");
        }
    }

    #[test]
    fn mission_inputs_skip_malformed() {
        let rec = json!({"inputs": [
            {"module": "a", "table": "t", "id": "1"},
            {"module": "a", "table": "t"},
            {"module": "a", "table": "t", "id": 7},
            "notes:1",
            null,
            {"module": "b", "table": "u", "id": "2", "extra": true}
        ]});
        let ids: Vec<String> = MissionView::from_record("u", &rec)
            .inputs
            .into_iter()
            .map(|i| format!("{}/{}/{}", i.module, i.table, i.id))
            .collect();
        assert_eq!(ids, ["a/t/1", "b/u/2"]);
        for bad in [json!(null), json!({"0": {}}), json!("x")] {
            assert!(MissionView::from_record("u", &json!({"inputs": bad}))
                .inputs
                .is_empty());
        }
    }

    #[test]
    fn mission_iterations_grant_agent_timezone_deleted() {
        let m = MissionView::from_record(
            "u",
            &json!({"iterations": {"a": 1}, "grant": null, "agentId": "", "timezone": 3,
                    "deletedAt": "2026-01-01T00:00:00.000Z"}),
        );
        assert!(m.iterations.is_empty());
        assert_eq!(m.grant, None);
        assert_eq!(m.agent_id, None);
        assert_eq!(m.timezone, None);
        assert_eq!(m.deleted_at.as_deref(), Some("2026-01-01T00:00:00.000Z"));
        let m = MissionView::from_record("u", &json!({"agentId": 5, "grant": false}));
        assert_eq!(m.agent_id, None);
        assert_eq!(m.grant, Some(json!(false)));
    }

    #[test]
    fn mission_is_due() {
        // What the store's due listing decides from a snapshot: the indexed columns
        // (active, `nextRunAt` not after `now`, as instants) and the `deleted` flag the
        // refresh derives with the LWW merge.
        let now = parse_iso("2026-01-01T00:00:00.000Z").unwrap();
        let due = |rec: Value| {
            let index = MissionIndex::from_record(&rec);
            index.is_active()
                && index.next_run_at.is_some_and(|t| t <= now)
                && !crate::lww::RecordState::from_snapshot(&rec).is_deleted()
        };
        assert!(due(
            json!({"state": "active", "nextRunAt": "2026-01-01T00:00:00.000Z"})
        ));
        assert!(due(
            json!({"state": "active", "nextRunAt": "2026-01-01T00:30:00+01:00"})
        ));
        assert!(!due(
            json!({"state": "active", "nextRunAt": "2026-01-01T00:00:00.001Z"})
        ));
        assert!(!due(
            json!({"state": "paused", "nextRunAt": "2025-01-01T00:00:00.000Z"})
        ));
        assert!(!due(json!({"state": "active"})));
        assert!(!due(json!({"state": "active", "nextRunAt": "soon"})));
        assert!(!due(
            json!({"state": "active", "nextRunAt": "2025-01-01T00:00:00.000Z",
                            "deletedAt": "2025-06-01T00:00:00.000Z"})
        ));
    }

    #[test]
    fn mission_index_reads_what_the_view_reads() {
        let rec = json!({"state": "active", "nextRunAt": "2026-01-01T01:00:00+01:00",
                         "agentId": "a1"});
        let index = MissionIndex::from_record(&rec);
        let view = MissionView::from_record("u", &rec);
        assert_eq!(index.state, Some(view.state.as_str()));
        assert_eq!(index.next_run_at, view.next_run_at);
        assert_eq!(index.agent_id, view.agent_id_or_default());
        assert_eq!(index.agent_id, "a1");
        assert!(index.is_active());
        for rec in [
            json!({}),
            json!({"agentId": ""}),
            json!({"agentId": null}),
            json!({"agentId": 7}),
        ] {
            let index = MissionIndex::from_record(&rec);
            assert_eq!(index.agent_id, DEFAULT_AGENT_ID, "{rec}");
            assert_eq!(
                MissionView::from_record("u", &rec).agent_id_or_default(),
                DEFAULT_AGENT_ID
            );
            assert_eq!(explicit_agent_id(&rec), None, "{rec}");
        }
        let odd = json!({"state": 3, "nextRunAt": "soon"});
        let index = MissionIndex::from_record(&odd);
        assert_eq!((index.state, index.next_run_at), (None, None));
        assert!(!index.is_active());
        assert_eq!(
            MissionIndex::from_record(&json!({"state": "paused"})).state,
            Some("paused")
        );
    }

    #[test]
    fn agent_defaults() {
        let a = AgentView::from_record("u", &json!({"id": "a1"}));
        assert_eq!(a.id, "a1");
        assert_eq!(a.user_id, "u");
        assert_eq!(a.name, "Unnamed");
        assert_eq!(a.role, "");
        assert_eq!(
            (&a.avatar, &a.system_prompt, &a.memory),
            (&None, &None, &None)
        );
        assert_eq!(a.policy, None);
        assert_eq!(a.state, AgentState::Active);
        assert_eq!(a.max_concurrent_missions, 1);
        assert_eq!(a.max_tokens_per_day, None);
        assert!(!a.is_deleted());
    }

    #[test]
    fn agent_text_fields() {
        let a = AgentView::from_record(
            "u",
            &json!({"name": "Scout", "role": "r", "avatar": "🤖", "systemPrompt": "enc:1:x",
                    "memory": "m", "deletedAt": "2026-01-01T00:00:00.000Z"}),
        );
        assert_eq!(a.name, "Scout");
        assert_eq!(a.role, "r");
        assert_eq!(a.avatar.as_deref(), Some("🤖"));
        assert_eq!(a.system_prompt.as_deref(), Some("enc:1:x"));
        assert_eq!(a.memory.as_deref(), Some("m"));
        assert!(a.is_deleted());
        let a = AgentView::from_record(
            "u",
            &json!({"name": 3, "role": null, "avatar": 1, "systemPrompt": {}, "memory": [],
                    "deletedAt": true}),
        );
        assert_eq!(a.name, "Unnamed");
        assert_eq!(a.role, "");
        assert_eq!(
            (&a.avatar, &a.system_prompt, &a.memory),
            (&None, &None, &None)
        );
        assert!(!a.is_deleted());
    }

    #[test]
    fn agent_policy_only_objects() {
        let obj = json!({"tools": {}, "defaultForAi": "propose"});
        let a = AgentView::from_record("u", &json!({ "policy": obj }));
        assert_eq!(a.policy, Some(obj));
        for bad in [json!([]), json!("auto"), json!(null), json!(1)] {
            assert_eq!(
                AgentView::from_record("u", &json!({ "policy": bad })).policy,
                None
            );
        }
    }

    #[test]
    fn agent_state_variants() {
        let cases = [
            (json!("active"), AgentState::Active),
            (json!("paused"), AgentState::Paused),
            (json!("archived"), AgentState::Archived),
            (json!(null), AgentState::Active),
            (json!("sleeping"), AgentState::Other("sleeping".into())),
            (json!(2), AgentState::Other("2".into())),
        ];
        for (v, want) in cases {
            assert_eq!(
                AgentView::from_record("u", &json!({ "state": v })).state,
                want,
                "{v}"
            );
        }
        assert_eq!(AgentState::Paused.as_str(), "paused");
    }

    #[test]
    fn agent_max_concurrent_missions() {
        let cases = [
            (json!(3), 3),
            (json!(0), 0),
            (json!(-2), 1),
            (json!(1.2), 2),
            (json!("4"), 1),
            (json!(null), 1),
            (json!(1e12), u32::MAX),
        ];
        for (v, want) in cases {
            let a = AgentView::from_record("u", &json!({ "maxConcurrentMissions": v }));
            assert_eq!(a.max_concurrent_missions, want, "{v}");
        }
    }

    #[test]
    fn agent_max_tokens_per_day() {
        let cases = [
            (json!(1000), Some(1000)),
            (json!(0), Some(0)),
            (json!(10.5), Some(11)),
            (json!(-1), None),
            (json!("100"), None),
            (json!(null), None),
            (json!(1e300), Some(u64::MAX)),
        ];
        for (v, want) in cases {
            let a = AgentView::from_record("u", &json!({ "maxTokensPerDay": v }));
            assert_eq!(a.max_tokens_per_day, want, "{v}");
        }
    }

    #[test]
    fn constants() {
        assert_eq!(DEFAULT_AGENT_ID, "legacy:ai-default");
        assert_eq!(DEFAULT_AGENT_NAME, "Mana");
        assert_eq!(DEFAULT_AGENT_ID, crate::actor::LEGACY_AI_PRINCIPAL);
    }
}
