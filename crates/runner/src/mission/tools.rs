//! Which tools a run is offered, and the OpenAI tool specs of each offered tool set,
//! built once per set and shared by every round of every run that offers exactly that set.
//!
//! A run whose prompt carries untrusted content (research results: [`carries_untrusted`])
//! is offered no tool that moves money or reaches other people unless the agent's policy
//! opts it in, and its calls are checked with the stricter injection mode
//! ([`injection_mode`]); see `mana_ai_core::policy` and docs/security.md.

use std::collections::HashMap;
use std::sync::Arc;

use mana_ai_core::catalog::{function_specs_in, Tool};
use mana_ai_core::lang::Lang;
use mana_ai_core::plan::PolicyMode;
use mana_ai_core::policy::{filter_offered, filter_untrusted, untrusted_policy_mode, AgentPolicy};
use mana_ai_core::prompt::ResolvedInput;
use serde_json::Value;

use crate::research::RESEARCH_INPUT_MODULE;

use crate::sync::lock;

/// Whether the prompt carries text from outside the user's own data: research results
/// (the `news-research` input the research stage adds, shallow or deep).
pub(crate) fn carries_untrusted(inputs: &[ResolvedInput]) -> bool {
    inputs.iter().any(|i| i.module == RESEARCH_INPUT_MODULE)
}

/// The tools offered to a run: the server tools the agent's policy does not deny, minus
/// the money/people tools when the prompt carries untrusted content (unless opted in).
pub(crate) fn offered_tools<'a>(
    server: &[&'a Tool],
    policy: Option<&AgentPolicy>,
    untrusted: bool,
) -> Vec<&'a Tool> {
    let offered = filter_offered(server, policy);
    if untrusted {
        filter_untrusted(&offered, policy)
    } else {
        offered
    }
}

/// The injection mode of a run: `general` (`POLICY_MODE`), or for a run with untrusted
/// content the stricter of it and `untrusted` (`MANA_AI_UNTRUSTED_POLICY_MODE`).
pub(crate) fn injection_mode(
    general: PolicyMode,
    untrusted: PolicyMode,
    run_untrusted: bool,
) -> PolicyMode {
    if run_untrusted {
        untrusted_policy_mode(general, untrusted)
    } else {
        general
    }
}

/// Most distinct offered tool sets kept in a [`ToolSpecCache`]; when full it starts over.
const TOOL_SPEC_CACHE_MAX: usize = 256;

/// The OpenAI tool specs of one offered tool set, built once and shared by every round
/// of every run that offers exactly this set.
#[derive(Clone)]
pub(crate) struct ToolSpecs {
    pub(crate) specs: Arc<[Value]>,
    /// Characters of the specs' JSON, for the token estimate of each call.
    pub(crate) json_chars: usize,
}

/// Tool specs per offered tool set and language (the catalog is fixed, so the set of
/// offered names and the language determine the specs; each distinct agent policy yields
/// one entry per language at most).
#[derive(Default)]
pub(crate) struct ToolSpecCache {
    by_names: std::sync::Mutex<HashMap<String, ToolSpecs>>,
}

impl ToolSpecCache {
    /// The specs of `offered` with descriptions in `lang`, built on first use.
    pub(crate) fn get(&self, offered: &[&Tool], lang: Lang) -> ToolSpecs {
        let mut key = String::with_capacity(offered.len() * 16 + 3);
        key.push_str(lang.as_str());
        key.push('\u{1f}');
        for t in offered {
            key.push_str(&t.name);
            key.push('\u{1f}');
        }
        if let Some(hit) = self.lock().get(&key) {
            return hit.clone();
        }
        // Built outside the lock; two runs racing on a new set build it twice, harmlessly.
        let specs: Arc<[Value]> = function_specs_in(offered, lang).into();
        let json_chars = specs.iter().map(|s| s.to_string().chars().count()).sum();
        let built = ToolSpecs { specs, json_chars };
        let mut map = self.lock();
        if map.len() >= TOOL_SPEC_CACHE_MAX {
            map.clear();
        }
        map.insert(key, built.clone());
        built
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ToolSpecs>> {
        // A panic while holding the lock cannot leave the map inconsistent (inserts and
        // clears are single calls), so a poisoned lock is used as is.
        lock(&self.by_names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mana_ai_core::catalog::{function_specs, Catalog};

    #[test]
    fn untrusted_runs_are_offered_fewer_tools_and_enforce() {
        let catalog = Catalog::builtin();
        let server = catalog.server_tools();
        let input = |module: &str| ResolvedInput {
            id: "x".into(),
            module: module.into(),
            table: "t".into(),
            title: None,
            content: "c".into(),
        };
        assert!(!carries_untrusted(&[input("notes"), input("goals")]));
        assert!(carries_untrusted(&[
            input("notes"),
            input(RESEARCH_INPUT_MODULE)
        ]));
        let trusted = offered_tools(&server, None, false);
        assert_eq!(trusted.len(), server.len());
        let untrusted = offered_tools(&server, None, true);
        assert!(!untrusted.iter().any(|t| t.name == "add_transaction"));
        assert!(!untrusted.iter().any(|t| t.name == "create_contact"));
        assert!(untrusted.iter().any(|t| t.name == "create_task"));
        use PolicyMode::*;
        assert_eq!(injection_mode(LogOnly, Enforce, false), LogOnly);
        assert_eq!(injection_mode(LogOnly, Enforce, true), Enforce);
        assert_eq!(injection_mode(LogOnly, Off, true), LogOnly);
    }

    #[test]
    fn tool_specs_are_built_once_per_offered_set() {
        let catalog = Catalog::builtin();
        let server = catalog.server_tools();
        let cache = ToolSpecCache::default();
        let all = cache.get(&server, Lang::En);
        assert_eq!(&*all.specs, function_specs(&server).as_slice());
        let chars: usize = all
            .specs
            .iter()
            .map(|s| s.to_string().chars().count())
            .sum();
        assert_eq!(all.json_chars, chars);
        assert!(
            Arc::ptr_eq(&all.specs, &cache.get(&server, Lang::En).specs),
            "same set: the same shared list"
        );
        let fewer: Vec<&Tool> = server[1..].to_vec();
        let part = cache.get(&fewer, Lang::En);
        assert_eq!(part.specs.len(), server.len() - 1);
        assert_eq!(&*part.specs, function_specs(&fewer).as_slice());
        assert!(!Arc::ptr_eq(&all.specs, &part.specs));
        let german = cache.get(&server, Lang::De);
        assert!(!Arc::ptr_eq(&all.specs, &german.specs));
        assert_eq!(
            german.specs[0]["function"]["description"],
            server[0].description_in(Lang::De)
        );
        assert_ne!(german.specs[0], all.specs[0]);
    }
}
