//! Per-agent AI policy: which catalog tools an agent may be offered.
//!
//! An agent's `policy` JSON has the shape
//! `{tools:{<toolName>:<decision>}, defaultsByModule?:{<module>:<decision>}, defaultForAi}`
//! with decisions `auto`, `propose` or `deny`. Parsing is tolerant: unknown decision strings,
//! non-string values and unexpected shapes are ignored, and a missing or unknown
//! `defaultForAi` means `propose`.
//!
//! Resolution order for a tool: `tools[name]` → `defaultsByModule[tool.module]` →
//! `defaultForAi`. The module is the tool's **catalog** module (the original looked it up in
//! a runtime registry, so module defaults silently did nothing for unregistered tools). Plain
//! map lookups, so names like `constructor` carry no special meaning.
//!
//! **Untrusted content** (a deliberate difference from the original): the web app runs
//! every planned step on arrival, without a human in between. A run whose prompt carries
//! text from outside the user's own data (research results from the web) is therefore
//! never offered the tools that move money or reach other people
//! ([`UNTRUSTED_RESTRICTED_TOOLS`]) unless the agent's policy opts the tool in explicitly
//! ([`AgentPolicy::explicitly_allows`]), and its tool calls are checked for injection
//! markers with the stricter of the two configured modes ([`untrusted_policy_mode`]).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::catalog::{Catalog, Tool};
use crate::plan::PolicyMode;

pub use crate::catalog::PolicyDecision;

/// Server tools that move money or reach other people, derived from the tool catalog
/// (`tool-catalog.json`, the `propose` subset): money — `add_transaction`,
/// `create_invoice`, `mark_invoice_paid`, and the image tools that consume credits
/// (`generate_comic_panel`, `generate_character_variant`); other people — `create_contact`,
/// `create_campaign_draft` (a newsletter), `publish_website` (public), and
/// `create_invoice` (sent to a client). Withheld from runs with untrusted content.
pub const UNTRUSTED_RESTRICTED_TOOLS: [&str; 8] = [
    "add_transaction",
    "create_invoice",
    "mark_invoice_paid",
    "generate_comic_panel",
    "generate_character_variant",
    "create_contact",
    "create_campaign_draft",
    "publish_website",
];

/// A parsed agent policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPolicy {
    tools: BTreeMap<String, PolicyDecision>,
    defaults_by_module: BTreeMap<String, PolicyDecision>,
    default_for_ai: PolicyDecision,
}

impl Default for AgentPolicy {
    /// No per-tool or per-module entries; `defaultForAi = propose`.
    fn default() -> Self {
        Self {
            tools: BTreeMap::new(),
            defaults_by_module: BTreeMap::new(),
            default_for_ai: PolicyDecision::Propose,
        }
    }
}

fn decision_map(value: Option<&Value>) -> BTreeMap<String, PolicyDecision> {
    value
        .and_then(Value::as_object)
        .map(|obj| {
            obj.iter()
                .filter_map(|(k, v)| {
                    v.as_str()
                        .and_then(PolicyDecision::parse)
                        .map(|d| (k.clone(), d))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl AgentPolicy {
    /// Parses an agent's `policy` value tolerantly. A non-object value yields the
    /// [`Default`] policy (which denies nothing).
    pub fn from_value(value: &Value) -> Self {
        let default_for_ai = value
            .get("defaultForAi")
            .and_then(Value::as_str)
            .and_then(PolicyDecision::parse)
            .unwrap_or(PolicyDecision::Propose);
        Self {
            tools: decision_map(value.get("tools")),
            defaults_by_module: decision_map(value.get("defaultsByModule")),
            default_for_ai,
        }
    }

    /// The equivalent of the original `DEFAULT_AI_POLICY`: every catalog tool mapped to its
    /// `defaultPolicy`, no module defaults, `defaultForAi = propose`.
    pub fn from_catalog_defaults(catalog: &Catalog) -> Self {
        Self {
            tools: catalog
                .tools()
                .iter()
                .map(|t| (t.name.clone(), t.default_policy))
                .collect(),
            ..Self::default()
        }
    }

    /// Returns the policy with a per-tool decision set (builder style).
    pub fn with_tool(mut self, name: impl Into<String>, decision: PolicyDecision) -> Self {
        self.tools.insert(name.into(), decision);
        self
    }

    /// Returns the policy with a per-module decision set (builder style).
    pub fn with_module_default(
        mut self,
        module: impl Into<String>,
        decision: PolicyDecision,
    ) -> Self {
        self.defaults_by_module.insert(module.into(), decision);
        self
    }

    /// Returns the policy with a different final fallback (builder style).
    pub fn with_default_for_ai(mut self, decision: PolicyDecision) -> Self {
        self.default_for_ai = decision;
        self
    }

    /// The final fallback decision.
    pub fn default_for_ai(&self) -> PolicyDecision {
        self.default_for_ai
    }

    /// The decision for `tool`: per-tool entry, else the entry for its catalog module, else
    /// `defaultForAi`.
    pub fn resolve(&self, tool: &Tool) -> PolicyDecision {
        self.tools
            .get(&tool.name)
            .or_else(|| self.defaults_by_module.get(&tool.module))
            .copied()
            .unwrap_or(self.default_for_ai)
    }
}

impl AgentPolicy {
    /// Whether the policy opts `tool` in explicitly for runs with untrusted content: its
    /// decision is `auto` and comes from a per-tool entry or the tool's module default,
    /// not from `defaultForAi`. (`propose` does not count: the web app's default policy
    /// lists every tool as `propose`, so it says nothing about the agent's owner's will.)
    pub fn explicitly_allows(&self, tool: &Tool) -> bool {
        let explicit = self
            .tools
            .get(&tool.name)
            .or_else(|| self.defaults_by_module.get(&tool.module));
        explicit == Some(&PolicyDecision::Auto)
    }
}

/// The tools to offer a run whose prompt carries untrusted content: `tools` minus the
/// [`UNTRUSTED_RESTRICTED_TOOLS`] the agent's policy does not explicitly allow (order
/// kept). Apply after [`filter_offered`].
pub fn filter_untrusted<'a>(tools: &[&'a Tool], policy: Option<&AgentPolicy>) -> Vec<&'a Tool> {
    tools
        .iter()
        .copied()
        .filter(|t| {
            !UNTRUSTED_RESTRICTED_TOOLS.contains(&t.name.as_str())
                || policy.is_some_and(|p| p.explicitly_allows(t))
        })
        .collect()
}

/// The injection policy of a run with untrusted content: the stricter of the general
/// `POLICY_MODE` and the untrusted-content mode (`off` < `log-only` < `enforce`).
pub fn untrusted_policy_mode(general: PolicyMode, untrusted: PolicyMode) -> PolicyMode {
    let rank = |m: PolicyMode| match m {
        PolicyMode::Off => 0,
        PolicyMode::LogOnly => 1,
        PolicyMode::Enforce => 2,
    };
    if rank(untrusted) > rank(general) {
        untrusted
    } else {
        general
    }
}

/// The tools to offer the model: `tools` minus those the policy resolves to `deny`, order
/// kept. Without a policy the list is returned unchanged.
pub fn filter_offered<'a>(tools: &[&'a Tool], policy: Option<&AgentPolicy>) -> Vec<&'a Tool> {
    match policy {
        None => tools.to_vec(),
        Some(p) => tools
            .iter()
            .copied()
            .filter(|t| p.resolve(t) != PolicyDecision::Deny)
            .collect(),
    }
}

#[cfg(test)]
mod untrusted_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn restricted_tools_are_server_tools_of_the_catalog() {
        let catalog = Catalog::builtin();
        let server: Vec<&str> = catalog
            .server_tools()
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        for name in UNTRUSTED_RESTRICTED_TOOLS {
            assert!(server.contains(&name), "{name} is not a server tool");
        }
    }

    #[test]
    fn untrusted_runs_lose_money_and_people_tools_unless_opted_in() {
        let catalog = Catalog::builtin();
        let server = catalog.server_tools();
        let names =
            |tools: &[&Tool]| -> Vec<String> { tools.iter().map(|t| t.name.clone()).collect() };
        // The web app's default policy (every tool at its catalog default) opts nothing in.
        let default = AgentPolicy::from_catalog_defaults(catalog);
        let offered = filter_untrusted(&server, Some(&default));
        assert_eq!(
            offered.len(),
            server.len() - UNTRUSTED_RESTRICTED_TOOLS.len()
        );
        for name in UNTRUSTED_RESTRICTED_TOOLS {
            assert!(!names(&offered).contains(&name.to_string()), "{name}");
        }
        assert!(names(&offered).contains(&"create_task".to_string()));
        assert_eq!(filter_untrusted(&server, None).len(), offered.len());
        // defaultForAi=auto is not explicit; a per-tool or module `auto` is.
        let lax = AgentPolicy::from_value(&json!({"defaultForAi": "auto"}));
        assert_eq!(filter_untrusted(&server, Some(&lax)).len(), offered.len());
        let opted = AgentPolicy::from_value(&json!({
            "tools": {"add_transaction": "auto", "create_contact": "propose"},
            "defaultsByModule": {"broadcast": "auto"},
        }));
        let got = names(&filter_untrusted(&server, Some(&opted)));
        assert!(got.contains(&"add_transaction".to_string()));
        assert!(got.contains(&"create_campaign_draft".to_string()));
        assert!(!got.contains(&"create_contact".to_string()));
    }

    #[test]
    fn the_stricter_mode_wins() {
        use PolicyMode::*;
        for (general, untrusted, want) in [
            (LogOnly, Enforce, Enforce),
            (LogOnly, Off, LogOnly),
            (Off, Off, Off),
            (Off, LogOnly, LogOnly),
            (Enforce, Off, Enforce),
        ] {
            assert_eq!(untrusted_policy_mode(general, untrusted), want);
        }
    }
}
