//! Property tests of the write-back merge ([`mana_ai_core::iterations`]): it never loses
//! or changes an existing iteration, adds the run's iteration once, is idempotent, and
//! the history bound never drops a protected iteration or the run's own.

use mana_ai_core::iterations::{bound, is_protected, merge, normalise, HistoryLimits};
use proptest::prelude::*;
use serde_json::{json, Value};

fn step_status() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("planned"),
        Just("approved"),
        Just("failed"),
        Just("skipped"),
        Just("staged"),
    ]
}

fn overall() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("running"),
        Just("awaiting-review"),
        Just("approved"),
        Just("rejected"),
        Just("failed"),
    ]
}

/// A well-formed iteration with an id from a small pool (so ids collide).
fn iteration() -> impl Strategy<Value = Value> {
    (
        0u8..12,
        overall(),
        prop::collection::vec(step_status(), 0..4),
        prop::option::of("[a-z ]{0,12}"),
    )
        .prop_map(|(id, status, steps, feedback)| {
            let plan: Vec<Value> = steps
                .iter()
                .enumerate()
                .map(|(i, s)| json!({"id": format!("s{i}"), "status": s}))
                .collect();
            let mut it = json!({"id": format!("it-{id}"), "overallStatus": status, "plan": plan});
            if let Some(f) = feedback {
                it["userFeedback"] = json!(f);
            }
            it
        })
}

/// Anything a device might have written into the array.
fn entry() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => iteration(),
        1 => Just(json!(null)),
        1 => Just(json!("text")),
        1 => (0u8..12).prop_map(|id| json!({"id": format!("it-{id}")})),
        1 => (0u8..12).prop_map(|id| json!({"id": format!("it-{id}"), "plan": [null, {"status": "planned"}]})),
    ]
}

/// Distinct iterations (each carries its position), so equality identifies one.
fn distinct(max: usize) -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(iteration(), 0..max).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, mut it)| {
                it["startedAt"] = json!(i);
                it
            })
            .collect()
    })
}

fn id(v: &Value) -> Option<&str> {
    v.get("id").and_then(Value::as_str)
}

proptest! {
    #[test]
    fn merge_keeps_every_existing_iteration_unchanged(
        current in prop::collection::vec(entry(), 0..12),
        new in iteration(),
    ) {
        let merged = merge(&current, &new);
        let kept: Vec<Value> = current.iter().filter_map(normalise).collect();
        // Every existing iteration is there, in order, as it is now (well-formed ones
        // byte for byte; others only with their plan made an array of objects).
        prop_assert_eq!(&merged[..kept.len()], &kept[..]);
        for before in &current {
            let Some(after) = normalise(before) else { continue };
            let well_formed = before["plan"]
                .as_array()
                .is_some_and(|p| p.iter().all(Value::is_object));
            if well_formed {
                prop_assert_eq!(before, &after);
            }
            prop_assert!(after["plan"]
                .as_array()
                .is_some_and(|p| p.iter().all(Value::is_object)));
        }
        // The run's iteration is there exactly once (the current version if it existed).
        let with_id = merged.iter().filter(|it| id(it) == id(&new)).count();
        let existed = kept.iter().filter(|it| id(it) == id(&new)).count();
        prop_assert_eq!(with_id, existed.max(1));
        prop_assert_eq!(merged.len(), kept.len() + usize::from(existed == 0));
        // Idempotent.
        prop_assert_eq!(merge(&merged, &new), merged);
    }

    #[test]
    fn bound_never_drops_protected_or_the_runs_own(
        current in distinct(30),
        new in iteration(),
        limit in 1usize..20,
        max_bytes in prop_oneof![Just(usize::MAX), 0usize..3_000],
    ) {
        let merged = merge(&current, &new);
        let keep = id(&new).unwrap_or_default().to_string();
        let limits = HistoryLimits { max_iterations: limit, max_bytes, row_max_bytes: usize::MAX };
        let kept = bound(merged.clone(), &keep, &limits);
        let must = |it: &Value| is_protected(it) || id(it) == Some(keep.as_str());
        // A subsequence of the merged array (entries are distinct).
        let mut rest = kept.iter().peekable();
        let mut kept_flags = Vec::new();
        for it in &merged {
            let is_kept = rest.peek() == Some(&it);
            if is_kept {
                rest.next();
            }
            kept_flags.push(is_kept);
            prop_assert!(is_kept || !must(it), "dropped a protected iteration {}", it);
        }
        prop_assert!(rest.next().is_none(), "bound invented or reordered iterations");
        // Within the count limit unless protected ones alone exceed it.
        let must_count = merged.iter().filter(|it| must(it)).count();
        prop_assert!(kept.len() <= limit.max(must_count));
        // Oldest finished first: no finished iteration older than a dropped one is kept.
        if let Some(last_dropped) = kept_flags.iter().rposition(|k| !k) {
            for (it, k) in merged[..last_dropped].iter().zip(&kept_flags) {
                prop_assert!(!*k || must(it), "kept an older finished iteration {}", it);
            }
        }
        // Bounding again changes nothing.
        prop_assert_eq!(bound(kept.clone(), &keep, &limits), kept);
    }
}

#[test]
fn four_hundred_iterations_keep_fifty_and_the_planned_one() {
    let filler = "x".repeat(1_900);
    let mut all: Vec<Value> = (0..400)
        .map(|i| {
            json!({"id": format!("i{i}"), "overallStatus": "approved", "summary": filler,
                   "plan": [{"id": "s", "status": "approved"}]})
        })
        .collect();
    all[3]["plan"][0]["status"] = json!("planned");
    let new = json!({"id": "new", "overallStatus": "awaiting-review", "plan": []});
    let kept = bound(merge(&all, &new), "new", &HistoryLimits::new(50));
    assert_eq!(kept.len(), 50);
    assert_eq!(kept[0]["id"], "i3", "the old planned one stays");
    assert_eq!(kept[1]["id"], "i352", "then the newest finished ones");
    assert_eq!(kept[49]["id"], "new");
}
