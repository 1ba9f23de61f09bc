//! The OpenAI tool specs of each offered tool set, built once per set and shared by every
//! round of every run that offers exactly that set.

use std::collections::HashMap;
use std::sync::Arc;

use mana_ai_core::catalog::{function_specs, Tool};
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

/// Tool specs per offered tool set (the catalog is fixed, so the set of offered names
/// determines the specs; each distinct agent policy yields one entry at most).
#[derive(Default)]
pub(crate) struct ToolSpecCache {
    by_names: std::sync::Mutex<HashMap<String, ToolSpecs>>,
}

impl ToolSpecCache {
    /// The specs of `offered`, built on first use.
    pub(crate) fn get(&self, offered: &[&Tool]) -> ToolSpecs {
        let mut key = String::with_capacity(offered.len() * 16);
        for t in offered {
            key.push_str(&t.name);
            key.push('\u{1f}');
        }
        if let Some(hit) = self.lock().get(&key) {
            return hit.clone();
        }
        // Built outside the lock; two runs racing on a new set build it twice, harmlessly.
        let specs: Arc<[Value]> = function_specs(offered).into();
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
    use mana_ai_core::catalog::Catalog;

    #[test]
    fn tool_specs_are_built_once_per_offered_set() {
        let catalog = Catalog::builtin();
        let server = catalog.server_tools();
        let cache = ToolSpecCache::default();
        let all = cache.get(&server);
        assert_eq!(&*all.specs, function_specs(&server).as_slice());
        let chars: usize = all
            .specs
            .iter()
            .map(|s| s.to_string().chars().count())
            .sum();
        assert_eq!(all.json_chars, chars);
        assert!(
            Arc::ptr_eq(&all.specs, &cache.get(&server).specs),
            "same set: the same shared list"
        );
        let fewer: Vec<&Tool> = server[1..].to_vec();
        let part = cache.get(&fewer);
        assert_eq!(part.specs.len(), server.len() - 1);
        assert_eq!(&*part.specs, function_specs(&fewer).as_slice());
        assert!(!Arc::ptr_eq(&all.specs, &part.specs));
    }
}
