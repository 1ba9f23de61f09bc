//! Who made a change: the actor model shared with the webapp (`sync_changes.actor`).
//!
//! An [`Actor`] is a user, an AI agent working on a mission iteration, or a system
//! process. It serialises to the exact JSON the webapp writes: `kind` first, then the
//! fields in the order `principalId`, `displayName` and, for AI actors, `missionId`,
//! `iterationId`, `rationale`.
//!
//! A system actor whose source has no default display name (for example
//! `legacy:system`) carries `display_name: None` and the `displayName` key is then
//! omitted from its JSON — the same text `JSON.stringify` gives for an `undefined` value.
//!
//! [`normalize_actor`] turns any stored blob (possibly written by an old client) into an
//! [`Actor`] without failing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// System source: read-model projections.
pub const SYSTEM_PROJECTION: &str = "system:projection";
/// System source: automation rules.
pub const SYSTEM_RULE: &str = "system:rule";
/// System source: data migrations.
pub const SYSTEM_MIGRATION: &str = "system:migration";
/// System source: event-stream processing.
pub const SYSTEM_STREAM: &str = "system:stream";
/// System source: the mission runner.
pub const SYSTEM_MISSION_RUNNER: &str = "system:mission-runner";
/// System source: first-run bootstrap.
pub const SYSTEM_BOOTSTRAP: &str = "system:bootstrap";

/// Principal of changes attributed to an unknown user.
pub const LEGACY_USER_PRINCIPAL: &str = "legacy:user";
/// Principal of the implicit default agent: the default agent's id
/// ([`crate::records::DEFAULT_AGENT_ID`], which owns the value).
pub const LEGACY_AI_PRINCIPAL: &str = crate::records::DEFAULT_AGENT_ID;
/// Principal of system changes whose source is unknown.
pub const LEGACY_SYSTEM_PRINCIPAL: &str = "legacy:system";
/// Display name used when the real one is unknown.
pub const LEGACY_DISPLAY_NAME: &str = "Unbekannt";
/// Default display name of a user actor.
pub const DEFAULT_USER_DISPLAY_NAME: &str = "Du";

/// The six known system sources, in the order of the spec.
pub const SYSTEM_SOURCES: [&str; 6] = [
    SYSTEM_PROJECTION,
    SYSTEM_RULE,
    SYSTEM_MIGRATION,
    SYSTEM_STREAM,
    SYSTEM_MISSION_RUNNER,
    SYSTEM_BOOTSTRAP,
];

/// Default display name of a system source; `None` for anything not in [`SYSTEM_SOURCES`].
pub fn default_system_display_name(source: &str) -> Option<&'static str> {
    match source {
        SYSTEM_PROJECTION => Some("Projektion"),
        SYSTEM_RULE => Some("Regel"),
        SYSTEM_MIGRATION => Some("Migration"),
        SYSTEM_STREAM => Some("Event-Stream"),
        SYSTEM_MISSION_RUNNER => Some("Mission-Runner"),
        SYSTEM_BOOTSTRAP => Some("Bootstrap"),
        _ => None,
    }
}

/// Author of a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "lowercase",
    rename_all_fields = "camelCase"
)]
pub enum Actor {
    /// A human user.
    User {
        principal_id: String,
        display_name: String,
    },
    /// An AI agent acting within one mission iteration.
    Ai {
        /// The agent id.
        principal_id: String,
        display_name: String,
        mission_id: String,
        iteration_id: String,
        rationale: String,
    },
    /// A system process; `principal_id` is one of the `SYSTEM_*` sources or a legacy id.
    System {
        principal_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        display_name: Option<String>,
    },
}

impl Actor {
    /// The principal id of any kind of actor.
    pub fn principal_id(&self) -> &str {
        match self {
            Actor::User { principal_id, .. }
            | Actor::Ai { principal_id, .. }
            | Actor::System { principal_id, .. } => principal_id,
        }
    }

    /// The display name, `None` only for a system actor without one.
    pub fn display_name(&self) -> Option<&str> {
        match self {
            Actor::User { display_name, .. } | Actor::Ai { display_name, .. } => Some(display_name),
            Actor::System { display_name, .. } => display_name.as_deref(),
        }
    }

    /// The `kind` tag: `user`, `ai` or `system`.
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::User { .. } => "user",
            Actor::Ai { .. } => "ai",
            Actor::System { .. } => "system",
        }
    }

    /// The actor as a JSON object (the form stored in `sync_changes.actor`).
    pub fn to_json(&self) -> Value {
        let mut map = serde_json::Map::new();
        map.insert("kind".into(), Value::from(self.kind()));
        map.insert("principalId".into(), Value::from(self.principal_id()));
        if let Some(name) = self.display_name() {
            map.insert("displayName".into(), Value::from(name));
        }
        if let Actor::Ai {
            mission_id,
            iteration_id,
            rationale,
            ..
        } = self
        {
            map.insert("missionId".into(), Value::from(mission_id.as_str()));
            map.insert("iterationId".into(), Value::from(iteration_id.as_str()));
            map.insert("rationale".into(), Value::from(rationale.as_str()));
        }
        Value::Object(map)
    }

    /// Kind is `user`.
    pub fn is_user(&self) -> bool {
        matches!(self, Actor::User { .. })
    }

    /// Kind is `ai`.
    pub fn is_ai(&self) -> bool {
        matches!(self, Actor::Ai { .. })
    }

    /// Kind is `system`.
    pub fn is_system(&self) -> bool {
        matches!(self, Actor::System { .. })
    }

    /// A system actor whose principal is [`SYSTEM_MISSION_RUNNER`].
    pub fn is_from_mission_runner(&self) -> bool {
        matches!(self, Actor::System { principal_id, .. } if principal_id == SYSTEM_MISSION_RUNNER)
    }
}

/// The webapp's `USER_ACTOR`: `legacy:user` named `Du`.
pub fn user_actor() -> Actor {
    make_user_actor(LEGACY_USER_PRINCIPAL, None)
}

/// A user actor; `display_name` defaults to `Du`.
pub fn make_user_actor(user_id: &str, display_name: Option<&str>) -> Actor {
    Actor::User {
        principal_id: user_id.to_owned(),
        display_name: display_name.unwrap_or(DEFAULT_USER_DISPLAY_NAME).to_owned(),
    }
}

/// Inputs of [`make_agent_actor`], named to avoid mixing up five strings.
#[derive(Debug, Clone, Copy)]
pub struct AgentActorParts<'a> {
    pub agent_id: &'a str,
    pub display_name: &'a str,
    pub mission_id: &'a str,
    pub iteration_id: &'a str,
    pub rationale: &'a str,
}

/// An AI actor; the agent id becomes the principal id.
pub fn make_agent_actor(parts: AgentActorParts<'_>) -> Actor {
    Actor::Ai {
        principal_id: parts.agent_id.to_owned(),
        display_name: parts.display_name.to_owned(),
        mission_id: parts.mission_id.to_owned(),
        iteration_id: parts.iteration_id.to_owned(),
        rationale: parts.rationale.to_owned(),
    }
}

/// A system actor; without `display_name` the source's default is used, and an unknown
/// source gets none (its JSON then has no `displayName`).
pub fn make_system_actor(source: &str, display_name: Option<&str>) -> Actor {
    Actor::System {
        principal_id: source.to_owned(),
        display_name: display_name
            .or_else(|| default_system_display_name(source))
            .map(str::to_owned),
    }
}

/// `isUserActor`: `false` for `None`.
pub fn is_user_actor(actor: Option<&Actor>) -> bool {
    actor.is_some_and(Actor::is_user)
}

/// `isAiActor`: `false` for `None`.
pub fn is_ai_actor(actor: Option<&Actor>) -> bool {
    actor.is_some_and(Actor::is_ai)
}

/// `isSystemActor`: `false` for `None`.
pub fn is_system_actor(actor: Option<&Actor>) -> bool {
    actor.is_some_and(Actor::is_system)
}

/// `isFromMissionRunner`: `false` for `None`.
pub fn is_from_mission_runner(actor: Option<&Actor>) -> bool {
    actor.is_some_and(Actor::is_from_mission_runner)
}

/// Where a field value came from (the webapp's per-field provenance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FieldOrigin {
    User,
    Agent,
    System,
    Migration,
    /// Applied from the server by a client; never derived from an actor.
    ServerReplay,
}

impl FieldOrigin {
    /// The JSON text (also the `sync_changes.origin` value for the first four).
    pub fn as_str(self) -> &'static str {
        match self {
            FieldOrigin::User => "user",
            FieldOrigin::Agent => "agent",
            FieldOrigin::System => "system",
            FieldOrigin::Migration => "migration",
            FieldOrigin::ServerReplay => "server-replay",
        }
    }
}

/// Origin implied by an actor: ai ⇒ agent; system ⇒ migration for
/// [`SYSTEM_MIGRATION`], else system; user ⇒ user.
pub fn origin_from_actor(actor: &Actor) -> FieldOrigin {
    match actor {
        Actor::User { .. } => FieldOrigin::User,
        Actor::Ai { .. } => FieldOrigin::Agent,
        Actor::System { principal_id, .. } if principal_id == SYSTEM_MIGRATION => {
            FieldOrigin::Migration
        }
        Actor::System { .. } => FieldOrigin::System,
    }
}

/// The webapp's per-field stamp `{at, actor, origin}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldMeta {
    pub at: String,
    pub actor: Actor,
    pub origin: FieldOrigin,
}

impl FieldMeta {
    /// `makeFieldMeta`.
    pub fn new(at: impl Into<String>, actor: Actor, origin: FieldOrigin) -> Self {
        FieldMeta {
            at: at.into(),
            actor,
            origin,
        }
    }

    /// `isUserOriginatedField`: the origin is `user`.
    pub fn is_user_originated(&self) -> bool {
        self.origin == FieldOrigin::User
    }
}

/// Reads `obj[key]` with JavaScript `??` semantics: `None` when absent or `null`; a
/// string as itself; any other value as its JSON text (the original would keep the
/// non-string value itself, which an `Actor` cannot hold).
fn coalesce(obj: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    }
}

/// `obj[key] ?? default` (see [`coalesce`]).
fn coalesce_or(obj: &serde_json::Map<String, Value>, key: &str, default: &str) -> String {
    coalesce(obj, key).unwrap_or_else(|| default.to_owned())
}

/// True when both `principalId` and `displayName` are strings (the "keep as is" case).
fn has_string_identity(obj: &serde_json::Map<String, Value>) -> bool {
    obj.get("principalId").is_some_and(Value::is_string)
        && obj.get("displayName").is_some_and(Value::is_string)
}

/// Tolerant parse of a stored actor blob (`normalizeActor`), rule by rule:
/// 1. not an object (including `null`, `false`, `0`, `""`, arrays) ⇒ user `legacy:user`
///    named `Unbekannt`;
/// 2. `kind: "user"` ⇒ `principalId ?? "legacy:user"`, `displayName ?? "Du"`;
/// 3. `kind: "ai"` ⇒ `principalId ?? "legacy:ai-default"`, `displayName ?? "Unbekannt"`,
///    `missionId`/`iterationId`/`rationale` `?? ""`;
/// 4. `kind: "system"` ⇒ kept when `principalId` and `displayName` are strings; otherwise
///    principal `system:<source>` when `source` is a string, else `legacy:system`, with
///    the default display name of that principal (none for unknown principals);
/// 5. any other `kind` ⇒ as rule 1.
///
/// `??` falls back only for absent/`null`; other non-string values are kept as their
/// JSON text. Unknown extra keys are dropped (the original returned the blob itself when
/// both identity fields were strings, extra keys included). For an AI blob kept "as is"
/// the original could lack `missionId`/`iterationId`/`rationale`; here they become `""`.
pub fn normalize_actor(raw: &Value) -> Actor {
    let legacy_user = || make_user_actor(LEGACY_USER_PRINCIPAL, Some(LEGACY_DISPLAY_NAME));
    let Some(obj) = raw.as_object() else {
        return legacy_user();
    };
    match obj.get("kind").and_then(Value::as_str) {
        Some("user") => Actor::User {
            principal_id: coalesce_or(obj, "principalId", LEGACY_USER_PRINCIPAL),
            display_name: coalesce_or(obj, "displayName", DEFAULT_USER_DISPLAY_NAME),
        },
        Some("ai") => Actor::Ai {
            principal_id: coalesce_or(obj, "principalId", LEGACY_AI_PRINCIPAL),
            display_name: coalesce_or(obj, "displayName", LEGACY_DISPLAY_NAME),
            mission_id: coalesce_or(obj, "missionId", ""),
            iteration_id: coalesce_or(obj, "iterationId", ""),
            rationale: coalesce_or(obj, "rationale", ""),
        },
        Some("system") => {
            if has_string_identity(obj) {
                return Actor::System {
                    principal_id: coalesce_or(obj, "principalId", ""),
                    display_name: coalesce(obj, "displayName"),
                };
            }
            let principal = match obj.get("source").and_then(Value::as_str) {
                Some(source) => format!("system:{source}"),
                None => LEGACY_SYSTEM_PRINCIPAL.to_owned(),
            };
            make_system_actor(&principal, None)
        }
        _ => legacy_user(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_spec() {
        assert_eq!(SYSTEM_PROJECTION, "system:projection");
        assert_eq!(SYSTEM_RULE, "system:rule");
        assert_eq!(SYSTEM_MIGRATION, "system:migration");
        assert_eq!(SYSTEM_STREAM, "system:stream");
        assert_eq!(SYSTEM_MISSION_RUNNER, "system:mission-runner");
        assert_eq!(SYSTEM_BOOTSTRAP, "system:bootstrap");
        assert_eq!(LEGACY_USER_PRINCIPAL, "legacy:user");
        assert_eq!(LEGACY_AI_PRINCIPAL, "legacy:ai-default");
        assert_eq!(LEGACY_SYSTEM_PRINCIPAL, "legacy:system");
        assert_eq!(LEGACY_DISPLAY_NAME, "Unbekannt");
        let names: Vec<_> = SYSTEM_SOURCES
            .iter()
            .map(|s| default_system_display_name(s))
            .collect();
        assert_eq!(
            names,
            [
                Some("Projektion"),
                Some("Regel"),
                Some("Migration"),
                Some("Event-Stream"),
                Some("Mission-Runner"),
                Some("Bootstrap")
            ]
        );
        assert_eq!(default_system_display_name("legacy:system"), None);
    }
}
