//! The OpenAI tool specs of each offered tool set, built once per set and shared by every
//! round of every run that offers exactly that set.

use std::collections::HashMap;
use std::sync::Arc;

use mana_ai_core::catalog::{function_specs_in, Tool};
use mana_ai_core::lang::Lang;
use serde_json::Value;

use crate::sync::lock;

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
