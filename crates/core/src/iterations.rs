//! The write-back of one run's iteration as a *merge* into the mission's current
//! iterations, never an overwrite of them.
//!
//! Devices write the whole `iterations` array on every edit (approving a step, leaving
//! `userFeedback`, executing a server step); the field is last-writer-wins as a whole. So
//! right before writing, the store reads the mission's current state — its snapshot and
//! every newer row, merged by the one LWW rule ([`crate::lww`]) — and hands it to
//! [`compose`], which decides the row:
//!
//! * **merge** ([`merge`]): every current iteration is kept exactly as it is now (a
//!   device's edit made during planning survives, and no step goes back to `planned`);
//!   the run's iteration is appended unless an iteration with its id already exists, in
//!   which case the current version wins. Merging twice changes nothing.
//! * **normalise**: the web app's executor calls `plan.some(…)` on every iteration and
//!   one throw stops it for every mission, so every written iteration has a `plan` array
//!   of objects: a missing or non-array `plan` becomes `[]`, non-object steps are left
//!   out, and entries that are not objects at all are not iterations and are left out.
//!   Well-formed iterations are never changed.
//! * **bound** ([`bound`]): at most `max_iterations` iterations (`MANA_AI_ITERATION_HISTORY`)
//!   and at most [`HISTORY_MAX_BYTES`](crate::limits::HISTORY_MAX_BYTES) of JSON, by
//!   dropping the oldest *finished* iterations first (array order is age order: the web
//!   app and the runner append). Never dropped: the run's own iteration and every
//!   iteration that is `running` or `awaiting-review` or has a step still `planned`
//!   ([`is_protected`]): those hold work a device has not done yet.
//! * **stamp**: the fields are stamped with the database clock, but never at or below
//!   the stamp of the value that was merged in (a device whose clock runs ahead would
//!   otherwise win over the merge that already contains its edit). [`compose`] gives
//!   the lower bounds ([`StampFloors`]); the database applies its clock in the same
//!   statement that writes the row (the store's `mana_ai.write_stamp`).
//! * **nextRunAt** is written only while the mission is still due at the run's due time:
//!   a device that rescheduled, paused-and-resumed or completed the mission during
//!   planning keeps its `nextRunAt`.
//!
//! A row is never larger than [`ROW_MAX_BYTES`](crate::limits::ROW_MAX_BYTES): when the
//! iterations that may not be dropped already exceed it, no iteration is written
//! ([`Composed::HistoryFull`]).

use std::io;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::{json, Map, Value};

use crate::iso::{parse_iso, to_iso_ms};
use crate::limits::{
    truncated, FEEDBACK_MAX_CHARS, HISTORY_MAX_BYTES, PAST_DEPTH_MAX, PAST_ITEMS_MAX,
    PAST_STEPS_MAX, PAST_STEP_TEXT_MAX_CHARS, PAST_SUMMARY_MAX_CHARS, PROMPT_ITERATIONS_MAX,
    ROW_MAX_BYTES,
};
use crate::lww::RecordState;

/// `overallStatus` of an iteration still being produced.
pub const STATUS_RUNNING: &str = "running";
/// `overallStatus` of an iteration whose steps wait for the user's devices.
pub const STATUS_AWAITING_REVIEW: &str = "awaiting-review";
/// Step `status` of a step no device has executed yet.
pub const STEP_PLANNED: &str = "planned";

/// The fields of a mission the write-back reads right before writing.
pub const READ_FIELDS: [&str; 3] = ["iterations", "nextRunAt", crate::lww::DELETED_AT_KEY];

/// How much history a write keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most iterations written (protected ones may exceed it).
    pub max_iterations: usize,
    /// Most JSON bytes of the written array (protected ones may exceed it).
    pub max_bytes: usize,
    /// Largest `data` ever written.
    pub row_max_bytes: usize,
}

impl HistoryLimits {
    /// `max_iterations` with the byte limits of [`crate::limits`].
    pub fn new(max_iterations: usize) -> Self {
        Self {
            max_iterations,
            max_bytes: HISTORY_MAX_BYTES,
            row_max_bytes: ROW_MAX_BYTES,
        }
    }
}

/// The mission as it is right before the write.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentMission {
    /// A tombstone was seen: nothing is written.
    pub deleted: bool,
    /// The current `iterations` (empty when absent or not an array).
    pub iterations: Vec<Value>,
    /// The instant of the current `iterations` stamp, when it parses.
    pub iterations_stamp: Option<DateTime<Utc>>,
    /// The current `nextRunAt`, when it is a string that parses.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The instant of the current `nextRunAt` stamp, when it parses.
    pub next_run_at_stamp: Option<DateTime<Utc>>,
}

impl CurrentMission {
    /// Reads the merged state of a mission (as [`RecordState`] merges it).
    pub fn from_state(state: &RecordState) -> Self {
        let Some(live) = state.live() else {
            return Self {
                deleted: state.is_deleted(),
                iterations: Vec::new(),
                iterations_stamp: None,
                next_run_at: None,
                next_run_at_stamp: None,
            };
        };
        Self {
            deleted: false,
            iterations: live
                .get("iterations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            iterations_stamp: live.stamp("iterations").and_then(parse_iso),
            next_run_at: live
                .get("nextRunAt")
                .and_then(Value::as_str)
                .and_then(parse_iso),
            next_run_at_stamp: live.stamp("nextRunAt").and_then(parse_iso),
        }
    }
}

/// True for an iteration that holds work not done yet: `running`, `awaiting-review`, or
/// a step still `planned`. Such an iteration is never dropped.
pub fn is_protected(iteration: &Value) -> bool {
    let status = iteration.get("overallStatus").and_then(Value::as_str);
    if matches!(status, Some(STATUS_RUNNING | STATUS_AWAITING_REVIEW)) {
        return true;
    }
    iteration
        .get("plan")
        .and_then(Value::as_array)
        .is_some_and(|plan| {
            plan.iter()
                .any(|s| s.get("status").and_then(Value::as_str) == Some(STEP_PLANNED))
        })
}

/// The iteration with a `plan` array of objects (see the module doc); `None` when it is
/// not an object. A well-formed iteration comes back unchanged.
pub fn normalise(iteration: &Value) -> Option<Value> {
    let obj = iteration.as_object()?;
    let well_formed = obj
        .get("plan")
        .and_then(Value::as_array)
        .is_some_and(|p| p.iter().all(Value::is_object));
    if well_formed {
        return Some(iteration.clone());
    }
    let plan: Vec<Value> = obj
        .get("plan")
        .and_then(Value::as_array)
        .map(|p| p.iter().filter(|s| s.is_object()).cloned().collect())
        .unwrap_or_default();
    let mut out: Map<String, Value> = obj.clone();
    out.insert("plan".into(), Value::Array(plan));
    Some(Value::Object(out))
}

fn id_of(iteration: &Value) -> Option<&str> {
    iteration.get("id").and_then(Value::as_str)
}

/// The current iterations (normalised, in their order) with `new` appended unless an
/// iteration with its id is already there (the current version wins).
pub fn merge(current: &[Value], new: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = current.iter().filter_map(normalise).collect();
    let new_id = id_of(new);
    let present = new_id.is_some() && out.iter().any(|it| id_of(it) == new_id);
    if !present {
        out.extend(normalise(new));
    }
    out
}

/// Counts the bytes written through it.
struct ByteCount(usize);

impl io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Length of the compact JSON text of `v`, without building it.
pub fn json_len(v: &Value) -> usize {
    let mut count = ByteCount(0);
    // Writing a `Value` into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, v);
    count.0
}

/// Drops the oldest finished iterations until at most `limits.max_iterations` remain
/// and their JSON array is at most `limits.max_bytes`, as far as that is possible
/// without dropping the iteration with id `keep_id` or a protected one.
pub fn bound(iterations: Vec<Value>, keep_id: &str, limits: &HistoryLimits) -> Vec<Value> {
    let sizes: Vec<usize> = iterations.iter().map(json_len).collect();
    let mut count = iterations.len();
    // `[` + items + commas + `]`.
    let mut bytes = 2 + sizes.iter().sum::<usize>() + count.saturating_sub(1);
    let mut drop = vec![false; count];
    for (i, it) in iterations.iter().enumerate() {
        if count <= limits.max_iterations && bytes <= limits.max_bytes {
            break;
        }
        if id_of(it) == Some(keep_id) || is_protected(it) {
            continue;
        }
        drop[i] = true;
        count -= 1;
        bytes -= sizes[i] + usize::from(count > 0);
    }
    iterations
        .into_iter()
        .zip(drop)
        .filter_map(|(it, dropped)| (!dropped).then_some(it))
        .collect()
}

/// What this run writes.
#[derive(Debug, Clone, Copy)]
pub struct RunWrite<'a> {
    /// The run's iteration.
    pub iteration: &'a Value,
    /// The run's next `nextRunAt` (`None` = `null`: no further run).
    pub next_run_at: Option<DateTime<Utc>>,
    /// The due time the run served.
    pub due_at: DateTime<Utc>,
    pub limits: HistoryLimits,
}

/// The lower bounds of the stamps of a write, one per field: the stamp of the value that
/// was merged in plus 1 ms ([`stamp_floor`]), `None` when it had no readable stamp. The
/// database stamps each field it writes with its clock, raised to the floor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StampFloors {
    pub iterations: Option<DateTime<Utc>>,
    pub next_run_at: Option<DateTime<Utc>>,
}

/// The decision for one write-back.
#[derive(Debug, Clone, PartialEq)]
pub enum Composed {
    /// Write `data` (its `iterations` and/or `nextRunAt`), stamped above `floors`.
    Write { data: Value, floors: StampFloors },
    /// The iterations that may not be dropped leave no room for this run's iteration
    /// within [`HistoryLimits::row_max_bytes`]: `data` holds only `nextRunAt` (when it is
    /// written at all; otherwise it is empty and no row should be written).
    HistoryFull {
        data: Value,
        floors: StampFloors,
        /// The size the row would have had.
        bytes: usize,
    },
    /// The mission was deleted meanwhile: nothing is written.
    Deleted,
}

/// The lowest stamp a write over a value stamped `merged` may carry: 1 ms after it (the
/// stamps' precision), so the write wins over the value it already contains.
pub fn stamp_floor(merged: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    merged.map(|m| m + Duration::milliseconds(1))
}

/// Decides the row of one write-back (see the module doc).
pub fn compose(current: &CurrentMission, run: &RunWrite<'_>) -> Composed {
    if current.deleted {
        return Composed::Deleted;
    }
    let keep_id = id_of(run.iteration).unwrap_or_default();
    let iterations = bound(
        merge(&current.iterations, run.iteration),
        keep_id,
        &run.limits,
    );
    let mut data = Map::new();
    // Compared at the database's precision (µs): the due time comes from a timestamptz.
    let still_due =
        current.next_run_at.map(|t| t.trunc_subsecs(6)) == Some(run.due_at.trunc_subsecs(6));
    if still_due {
        data.insert("nextRunAt".into(), json!(run.next_run_at.map(to_iso_ms)));
    }
    let floors = StampFloors {
        iterations: stamp_floor(current.iterations_stamp),
        next_run_at: stamp_floor(current.next_run_at_stamp),
    };
    let schedule_only = Value::Object(data.clone());
    data.insert("iterations".into(), Value::Array(iterations));
    let data = Value::Object(data);
    let bytes = json_len(&data);
    if bytes > run.limits.row_max_bytes {
        return Composed::HistoryFull {
            data: schedule_only,
            floors,
            bytes,
        };
    }
    Composed::Write { data, floors }
}

/// A copy of `v` with every string cut to `max_chars`, every array and object cut to
/// [`PAST_ITEMS_MAX`] entries, and nothing nested deeper than `depth` (deeper values
/// become `null`).
fn bounded_json(v: &Value, max_chars: usize, depth: usize) -> Value {
    if depth == 0 {
        return Value::Null;
    }
    match v {
        Value::String(s) => Value::String(truncated(s, max_chars)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .take(PAST_ITEMS_MAX)
                .map(|x| bounded_json(x, max_chars, depth - 1))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .take(PAST_ITEMS_MAX)
                .map(|(k, x)| {
                    let key = truncated(k, max_chars);
                    (key, bounded_json(x, max_chars, depth - 1))
                })
                .collect(),
        ),
        scalar => scalar.clone(),
    }
}

/// The earlier iterations as the prompt may see them: the newest
/// [`PROMPT_ITERATIONS_MAX`] objects, oldest first, with every text bounded — `summary`
/// to [`PAST_SUMMARY_MAX_CHARS`], `userFeedback` to [`FEEDBACK_MAX_CHARS`], at most
/// [`PAST_STEPS_MAX`] steps whose texts are cut to [`PAST_STEP_TEXT_MAX_CHARS`], and every
/// other value bounded the same way (see `bounded_json`).
pub fn for_prompt(iterations: &[Value]) -> Vec<Value> {
    let objects: Vec<&Map<String, Value>> =
        iterations.iter().filter_map(Value::as_object).collect();
    let start = objects.len().saturating_sub(PROMPT_ITERATIONS_MAX);
    objects[start..]
        .iter()
        .map(|it| {
            let bounded: Map<String, Value> = it
                .iter()
                .take(PAST_ITEMS_MAX)
                .map(|(key, value)| {
                    let value = match key.as_str() {
                        "plan" => match value.as_array() {
                            Some(steps) => Value::Array(
                                steps
                                    .iter()
                                    .take(PAST_STEPS_MAX)
                                    .map(|s| {
                                        bounded_json(s, PAST_STEP_TEXT_MAX_CHARS, PAST_DEPTH_MAX)
                                    })
                                    .collect(),
                            ),
                            None => Value::Null,
                        },
                        "userFeedback" => bounded_json(value, FEEDBACK_MAX_CHARS, PAST_DEPTH_MAX),
                        _ => bounded_json(value, PAST_SUMMARY_MAX_CHARS, PAST_DEPTH_MAX),
                    };
                    (truncated(key, PAST_STEP_TEXT_MAX_CHARS), value)
                })
                .collect();
            Value::Object(bounded)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_iterations_are_the_newest_three_bounded() {
        let long = "ü".repeat(PAST_SUMMARY_MAX_CHARS + 1);
        let mut all: Vec<Value> = (0..5)
            .map(|i| it(&format!("i{i}"), "approved", &[]))
            .collect();
        all.insert(4, json!("not an iteration"));
        all[5]["summary"] = json!(long);
        all[5]["userFeedback"] = json!("f".repeat(FEEDBACK_MAX_CHARS));
        all[5]["plan"] = Value::Array(
            (0..PAST_STEPS_MAX + 1)
                .map(|_| json!({"status": "planned", "summary": "s".repeat(1_000)}))
                .collect(),
        );
        let seen = for_prompt(&all);
        assert_eq!(ids(&seen), ["i2", "i3", "i4"]);
        let last = &seen[2];
        let summary = last["summary"].as_str().unwrap();
        assert_eq!(summary.chars().count(), PAST_SUMMARY_MAX_CHARS);
        assert!(summary.ends_with(crate::limits::TRUNCATION_MARKER));
        assert_eq!(
            last["userFeedback"], all[5]["userFeedback"],
            "exactly at the limit"
        );
        let steps = last["plan"].as_array().unwrap();
        assert_eq!(steps.len(), PAST_STEPS_MAX);
        let step = steps[0]["summary"].as_str().unwrap();
        assert_eq!(step.chars().count(), PAST_STEP_TEXT_MAX_CHARS);
        assert_eq!(steps[0]["status"], "planned");
        // Nesting is bounded too.
        let mut deep = json!("x");
        for _ in 0..50 {
            deep = json!([deep]);
        }
        let seen = for_prompt(&[json!({"id": "d", "errorDetails": deep})]);
        assert!(json_len(&seen[0]) < 200, "{}", seen[0]);
    }

    fn it(id: &str, status: &str, steps: &[&str]) -> Value {
        let plan: Vec<Value> = steps
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"id": format!("{id}-{i}"), "status": s}))
            .collect();
        json!({"id": id, "overallStatus": status, "plan": plan})
    }

    fn ids(v: &[Value]) -> Vec<&str> {
        v.iter().map(|i| id_of(i).unwrap_or("?")).collect()
    }

    #[test]
    fn protection_follows_the_web_app_status_names() {
        assert!(is_protected(&it("a", "running", &[])));
        assert!(is_protected(&it("a", "awaiting-review", &[])));
        assert!(is_protected(&it("a", "approved", &["approved", "planned"])));
        for finished in ["approved", "rejected", "failed", "", "weird"] {
            assert!(!is_protected(&it("a", finished, &["approved", "failed"])));
        }
        assert!(!is_protected(&json!({"id": "x"})));
    }

    #[test]
    fn normalise_gives_every_iteration_a_plan_array() {
        assert_eq!(normalise(&json!(3)), None);
        assert_eq!(normalise(&Value::Null), None);
        assert_eq!(
            normalise(&json!({"id": "a"})),
            Some(json!({"id": "a", "plan": []}))
        );
        assert_eq!(
            normalise(&json!({"id": "a", "plan": "x"})),
            Some(json!({"id": "a", "plan": []}))
        );
        assert_eq!(
            normalise(&json!({"id": "a", "plan": [null, {"s": 1}, 2]})),
            Some(json!({"id": "a", "plan": [{"s": 1}]}))
        );
        let good = it("a", "approved", &["approved"]);
        assert_eq!(normalise(&good), Some(good));
    }

    #[test]
    fn merge_keeps_the_current_version_and_appends_once() {
        let current = vec![
            it("a", "approved", &["approved"]),
            it("b", "awaiting-review", &["approved"]),
        ];
        // Our stale copy of `b` still has the step planned: the current version wins.
        let merged = merge(&current, &it("b", "awaiting-review", &["planned"]));
        assert_eq!(merged, current);
        let merged = merge(&current, &it("c", "awaiting-review", &["planned"]));
        assert_eq!(ids(&merged), ["a", "b", "c"]);
        assert_eq!(merge(&merged, &it("c", "x", &[])), merged);
    }

    #[test]
    fn bound_drops_the_oldest_finished_first() {
        let mut all: Vec<Value> = (0..10)
            .map(|i| it(&format!("f{i}"), "approved", &["approved"]))
            .collect();
        all[1] = it("p1", "approved", &["planned"]);
        all[3] = it("r3", "running", &[]);
        let limits = HistoryLimits::new(4);
        let kept = bound(all.clone(), "f9", &limits);
        assert_eq!(ids(&kept), ["p1", "r3", "f8", "f9"]);
        // Exactly at the limit: nothing dropped; one over: the oldest finished goes.
        assert_eq!(bound(all.clone(), "f9", &HistoryLimits::new(10)), all);
        assert_eq!(
            ids(&bound(all.clone(), "f9", &HistoryLimits::new(9))),
            ["p1", "f2", "r3", "f4", "f5", "f6", "f7", "f8", "f9"]
        );
        // Protected ones beyond the limit stay, and so does the run's own iteration.
        let kept = bound(all, "f0", &HistoryLimits::new(1));
        assert_eq!(ids(&kept), ["f0", "p1", "r3"]);
    }

    #[test]
    fn bound_respects_the_byte_limit_at_its_edge() {
        let all: Vec<Value> = (0..5)
            .map(|i| it(&format!("f{i}"), "approved", &[]))
            .collect();
        let total = json_len(&Value::Array(all.clone()));
        let mut limits = HistoryLimits::new(100);
        limits.max_bytes = total;
        assert_eq!(bound(all.clone(), "f4", &limits).len(), 5);
        limits.max_bytes = total - 1;
        let kept = bound(all, "f4", &limits);
        assert_eq!(ids(&kept), ["f1", "f2", "f3", "f4"]);
        assert!(json_len(&Value::Array(kept)) <= limits.max_bytes);
    }

    #[test]
    fn floors_are_one_millisecond_after_the_merged_stamp() {
        assert_eq!(stamp_floor(None), None);
        let ahead = parse_iso("2026-01-01T00:05:00.000Z");
        assert_eq!(stamp_floor(ahead), parse_iso("2026-01-01T00:05:00.001Z"));
    }

    fn current(iterations: Vec<Value>, next: &str) -> CurrentMission {
        CurrentMission {
            deleted: false,
            iterations,
            iterations_stamp: None,
            next_run_at: parse_iso(next),
            next_run_at_stamp: None,
        }
    }

    #[test]
    fn compose_writes_next_run_only_while_still_due_then() {
        let due = parse_iso("2026-01-05T06:00:00.000Z").unwrap();
        let now = parse_iso("2026-01-05T06:01:00.000Z").unwrap();
        let new = it("n", "awaiting-review", &["planned"]);
        let run = RunWrite {
            iteration: &new,
            next_run_at: Some(due + Duration::hours(1)),
            due_at: due,
            limits: HistoryLimits::new(50),
        };
        let mut state = current(vec![], "2026-01-05T06:00:00.000Z");
        state.iterations_stamp = Some(now);
        let Composed::Write { data, floors } = compose(&state, &run) else {
            panic!("a write")
        };
        assert_eq!(data["nextRunAt"], "2026-01-05T07:00:00.000Z");
        assert_eq!(floors.next_run_at, None);
        assert_eq!(floors.iterations, parse_iso("2026-01-05T06:01:00.001Z"));
        // Rescheduled by a device meanwhile: its nextRunAt stays.
        let Composed::Write { data, .. } =
            compose(&current(vec![], "2026-01-06T06:00:00.000Z"), &run)
        else {
            panic!("a write")
        };
        assert!(data.get("nextRunAt").is_none());
        assert_eq!(data["iterations"], json!([new]));
        let mut gone = current(vec![], "");
        gone.deleted = true;
        assert_eq!(compose(&gone, &run), Composed::Deleted);
    }

    #[test]
    fn compose_never_writes_a_row_over_the_limit() {
        let due = parse_iso("2026-01-05T06:00:00.000Z").unwrap();
        let big = "x".repeat(1_000);
        let pending: Vec<Value> = (0..10)
            .map(|i| {
                json!({"id": format!("p{i}"), "overallStatus": "awaiting-review",
                            "plan": [], "summary": big})
            })
            .collect();
        let new = it("n", "awaiting-review", &["planned"]);
        let mut limits = HistoryLimits::new(50);
        limits.row_max_bytes = 5_000;
        let run = RunWrite {
            iteration: &new,
            next_run_at: None,
            due_at: due,
            limits,
        };
        let state = current(pending, "2026-01-05T06:00:00.000Z");
        match compose(&state, &run) {
            Composed::HistoryFull { data, bytes, .. } => {
                assert_eq!(data, json!({"nextRunAt": null}));
                assert!(bytes > 10_000);
            }
            other => panic!("{other:?}"),
        }
    }
}
