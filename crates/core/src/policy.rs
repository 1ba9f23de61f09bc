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

use std::collections::BTreeMap;

use serde_json::Value;

use crate::catalog::{Catalog, Tool};

pub use crate::catalog::PolicyDecision;

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
