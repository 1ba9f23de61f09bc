//! Property tests: the LWW merge is a join-semilattice over sets of rows.

use chrono::{DateTime, Utc};
use mana_ai_core::iso::parse_iso;
use mana_ai_core::lww::{ChangeRow, Op, RecordState};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const RID: &str = "rec-1";

fn instant(s: &str) -> DateTime<Utc> {
    parse_iso(s).expect("test instant")
}

fn field_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("c".to_owned()),
        Just("id".to_owned()),
        Just("deletedAt".to_owned()),
        Just("__fieldMeta".to_owned()),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    // `deletedAt` only ever gets falsy values from here; tombstones are generated apart.
    prop_oneof![
        Just(Value::Null),
        Just(json!(false)),
        Just(json!(0)),
        Just(json!("")),
        (0i64..3).prop_map(Value::from),
        prop_oneof![Just("x"), Just("y")].prop_map(Value::from),
        (0i64..2, 0i64..2).prop_map(|(k, j)| json!({"k": k, "j": j})),
        (0i64..2, 0i64..2).prop_map(|(k, j)| json!({"j": j, "k": k})),
        (0i64..2).prop_map(|n| json!([n, "z"])),
    ]
}

/// Falsy values only, so a generated `deletedAt` never tombstones by accident.
fn falsy() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(false)),
        Just(json!(0)),
        Just(json!(""))
    ]
}

fn stamp() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("2026-01-01T00:00:00.000Z")),
        Just(json!("2026-01-01T00:00:01.000Z")),
        Just(json!("2026-01-01T00:00:02.000Z")),
        // Same instant as 00:00:01Z, different text.
        Just(json!("2026-01-01T01:00:01.000+01:00")),
        Just(json!("not-a-date")),
        Just(json!("also-bad")),
        // Non-string meta entries are ignored.
        Just(json!(5)),
    ]
}

fn created_at() -> impl Strategy<Value = DateTime<Utc>> {
    (0u32..4).prop_map(|s| instant(&format!("2026-01-01T00:00:0{s}.000Z")))
}

fn data() -> impl Strategy<Value = Option<Value>> {
    let object =
        proptest::collection::vec((field_key(), value(), falsy()), 0..4).prop_map(|entries| {
            let mut m = Map::new();
            for (k, v, f) in entries {
                let v = if k == "deletedAt" { f } else { v };
                m.insert(k, v);
            }
            Value::Object(m)
        });
    prop_oneof![
        6 => object.prop_map(Some),
        1 => Just(None),
        1 => Just(Some(Value::Null)),
        1 => Just(Some(json!([1, 2]))),
        1 => Just(Some(json!("scalar"))),
    ]
}

fn field_meta() -> impl Strategy<Value = Option<Value>> {
    let object = proptest::collection::vec((field_key(), stamp()), 0..4)
        .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<String, Value>>()));
    prop_oneof![4 => object.prop_map(Some), 1 => Just(None), 1 => Just(Some(Value::Null))]
}

/// Insert/update rows that never delete.
fn live_row() -> impl Strategy<Value = ChangeRow> {
    (
        prop_oneof![Just(Op::Insert), Just(Op::Update)],
        data(),
        field_meta(),
        created_at(),
    )
        .prop_map(|(op, data, field_meta, created_at)| ChangeRow {
            op,
            data,
            field_meta,
            created_at,
        })
}

/// A row that deletes: `op = delete`, or any op with a truthy `deletedAt`.
fn tombstone_row() -> impl Strategy<Value = ChangeRow> {
    (
        prop_oneof![Just(Op::Insert), Just(Op::Update), Just(Op::Delete)],
        prop_oneof![
            Just(json!("2026-01-01T00:00:09.000Z")),
            Just(json!(true)),
            Just(json!(1)),
            Just(json!({})),
        ],
        created_at(),
    )
        .prop_map(|(op, deleted_at, created_at)| ChangeRow {
            op,
            data: Some(json!({ "deletedAt": deleted_at })),
            field_meta: Some(json!({})),
            created_at,
        })
}

fn any_row() -> impl Strategy<Value = ChangeRow> {
    prop_oneof![12 => live_row(), 1 => tombstone_row()]
}

fn rows(max: usize) -> impl Strategy<Value = Vec<ChangeRow>> {
    proptest::collection::vec(any_row(), 0..max)
}

/// Observable result: what a snapshot would store.
fn record(rows: &[ChangeRow]) -> (bool, Option<Value>) {
    let s = RecordState::merge(rows);
    (s.is_deleted(), s.to_record(RID))
}

/// Snapshot round trip of a state: live ⇒ re-read from its record; otherwise unchanged.
fn through_snapshot(state: RecordState) -> RecordState {
    match state.to_record(RID) {
        Some(rec) => RecordState::from_snapshot(&rec),
        None => state,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn permutation_invariant(
        (original, shuffled) in rows(9).prop_flat_map(|r| (Just(r.clone()), Just(r).prop_shuffle()))
    ) {
        prop_assert_eq!(RecordState::merge(&original), RecordState::merge(&shuffled));
        prop_assert_eq!(record(&original), record(&shuffled));
    }

    #[test]
    fn duplicates_ignored(
        (base, picks) in rows(8).prop_flat_map(|r| {
            let n = r.len().max(1);
            (Just(r), proptest::collection::vec(0..n, 0..6))
        })
    ) {
        let mut with_dups = base.clone();
        for i in picks {
            if let Some(row) = base.get(i) {
                with_dups.insert(i % (with_dups.len() + 1), row.clone());
            }
        }
        prop_assert_eq!(record(&base), record(&with_dups));
        // Re-applying the whole log changes nothing either (idempotence).
        let mut twice = RecordState::merge(&base);
        for r in &base {
            twice.apply(r);
        }
        prop_assert_eq!(twice, RecordState::merge(&base));
    }

    #[test]
    fn snapshot_round_trip_is_associative(all in rows(10), cut_a in 0usize..11, cut_b in 0usize..11) {
        let (lo, hi) = if cut_a <= cut_b { (cut_a, cut_b) } else { (cut_b, cut_a) };
        let lo = lo.min(all.len());
        let hi = hi.min(all.len());
        // Two refreshes, each starting from the stored snapshot of the one before.
        let mut state = through_snapshot(RecordState::merge(&all[..lo]));
        for r in &all[lo..hi] {
            state.apply(r);
        }
        let mut state = through_snapshot(state);
        for r in &all[hi..] {
            state.apply(r);
        }
        prop_assert_eq!(state.to_record(RID), record(&all).1);
        prop_assert_eq!(state.is_deleted(), record(&all).0);

        // Joins of partial merges agree in any grouping.
        let a = RecordState::merge(&all[..lo]);
        let b = RecordState::merge(&all[lo..hi]);
        let c = RecordState::merge(&all[hi..]);
        let mut left = a.clone();
        left.join(&b);
        left.join(&c);
        let mut bc = b.clone();
        bc.join(&c);
        let mut right = a;
        right.join(&bc);
        prop_assert_eq!(&left, &right);
        prop_assert_eq!(left, RecordState::merge(&all));
    }

    #[test]
    fn snapshot_round_trip_is_identity(all in rows(10)) {
        let s = RecordState::merge(&all);
        if let Some(rec) = s.to_record(RID) {
            prop_assert_eq!(RecordState::from_snapshot(&rec), s);
        }
    }

    #[test]
    fn deletes_are_final(
        before in rows(6),
        tomb in tombstone_row(),
        after in proptest::collection::vec(live_row(), 0..6),
        pos in 0usize..7,
    ) {
        let mut all = before;
        let pos = pos.min(all.len());
        all.insert(pos, tomb);
        all.extend(after.iter().cloned());
        let s = RecordState::merge(&all);
        prop_assert!(s.is_deleted());
        prop_assert_eq!(s.to_record(RID), None);
        // Nothing applied later revives it.
        let mut s = s;
        for r in &after {
            s.apply(r);
        }
        prop_assert!(s.is_deleted());
    }

    #[test]
    fn live_rows_never_delete(all in proptest::collection::vec(live_row(), 1..8)) {
        let s = RecordState::merge(&all);
        prop_assert!(s.live().is_some());
        let rec = s.to_record(RID).unwrap();
        prop_assert!(rec.get("__fieldMeta").is_some_and(Value::is_object));
    }

    #[test]
    fn stamped_newer_beats_older(
        noise in proptest::collection::vec(live_row(), 0..8),
        key in prop_oneof![Just("a"), Just("b"), Just("c")],
        v in value(),
        pos in 0usize..9,
        via_meta in any::<bool>(),
    ) {
        // Newer than every stamp and created_at the generators produce.
        let newest = "2026-06-01T00:00:00.000Z";
        let row = if via_meta {
            ChangeRow {
                op: Op::Insert,
                data: Some(json!({ key: v.clone() })),
                field_meta: Some(json!({ key: newest })),
                created_at: instant("2026-01-01T00:00:00.000Z"),
            }
        } else {
            ChangeRow {
                op: Op::Update,
                data: Some(json!({ key: v.clone() })),
                field_meta: None,
                created_at: instant(newest),
            }
        };
        let mut all = noise;
        let pos = pos.min(all.len());
        all.insert(pos, row);
        let s = RecordState::merge(&all);
        let live = s.live().unwrap();
        prop_assert_eq!(live.get(key), Some(&v));
        prop_assert_eq!(live.stamp(key), Some(newest));
    }

    #[test]
    fn any_stamp_beats_unstamped_inserts(
        inserts in proptest::collection::vec(
            (data(), created_at()).prop_map(|(data, created_at)| ChangeRow {
                op: Op::Insert, data, field_meta: Some(json!({})), created_at,
            }),
            0..6,
        ),
        v in value(),
        bad_stamp in any::<bool>(),
    ) {
        let stamp = if bad_stamp { "garbage" } else { "1970-01-01T00:00:00.000Z" };
        let up = ChangeRow {
            op: Op::Update,
            data: Some(json!({ "a": v.clone() })),
            field_meta: Some(json!({ "a": stamp })),
            created_at: instant("2026-01-01T00:00:00.000Z"),
        };
        let mut all = inserts;
        all.push(up);
        let s = RecordState::merge(all.iter().rev());
        prop_assert_eq!(s.live().unwrap().get("a"), Some(&v));
    }
}
