//! Field-level last-writer-wins (LWW) merge of `sync_changes` rows into one record.
//!
//! One merge serves every projected table (missions, agents, single input records).
//! A record is built from the rows of its event log; every field of every row offers a
//! *candidate* `(stamp, value)` for that field and the greatest candidate wins.
//!
//! # Stamps
//! The stamp a row gives field `f` is, in this order:
//! 1. `field_meta[f]` when that entry is a JSON string;
//! 2. for an `update` row: the row's `created_at` rendered with [`crate::iso::to_iso_ms`];
//! 3. for an `insert` row: no stamp (*unstamped*). Insert fields therefore never appear in
//!    the `__fieldMeta` map of a merged record, and any stamped write beats them.
//!
//! # Candidate order (the tie-break)
//! Candidates for one field are totally ordered; the larger one wins:
//! * every unstamped candidate is below every stamped one;
//! * stamps that parse as ISO-8601 instants ([`crate::iso::parse_iso`]) are above stamps
//!   that do not, and compare by instant;
//! * equal instants (or two unparseable stamps) compare by the raw stamp text;
//! * still equal: by the canonical JSON text of the value ([`canonical_json`], object keys
//!   sorted recursively), then by the value's JSON text as stored.
//!
//! The original service let "the later row in arrival order" win ties, so its result
//! depended on how Postgres happened to order rows with equal `created_at`. Here the
//! winner is the maximum of a total order, so the merge is a join-semilattice: the result
//! depends only on the *set* of rows — any arrival order, duplicates ignored — and a
//! snapshot can be merged with later rows exactly as if all rows had been merged at once.
//!
//! # Record lifecycle
//! [`RecordState`] is `Absent` ⊑ `Live` ⊑ `Deleted`. Any non-delete row makes an absent
//! record live (non-object `data` contributes no fields). Deletes are final: an
//! `op = delete` row, or any row or snapshot whose `data.deletedAt` is truthy in the
//! JavaScript sense (not `null`, `false`, `0` or `""`), makes the record `Deleted`, and no
//! later row brings it back. A data key named `__fieldMeta` is never treated as a field.
//!
//! # The `id` field
//! A merged record is rendered as `{"id": <record id>, ...fields}`, so a field named `id`
//! overrides the record id. An *unstamped* `id` value (from an insert, as the webapp writes
//! them) cannot be told apart from that seeded record id once a snapshot has been stored,
//! so it is not kept as a field; stamped `id` writes are kept like any other field. This
//! keeps the snapshot round trip exact.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::iso::{parse_iso, to_iso_ms};

/// Key of the stamp map inside a merged record.
pub const FIELD_META_KEY: &str = "__fieldMeta";

/// Data key that turns a record into a tombstone when its value is truthy.
pub const DELETED_AT_KEY: &str = "deletedAt";

/// Operation of a `sync_changes` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    /// The text stored in the `op` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `op` column held something other than `insert`, `update` or `delete`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sync op {0:?}")]
pub struct UnknownOp(pub String);

impl FromStr for Op {
    type Err = UnknownOp;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "insert" => Ok(Op::Insert),
            "update" => Ok(Op::Update),
            "delete" => Ok(Op::Delete),
            other => Err(UnknownOp(other.to_owned())),
        }
    }
}

/// The merge-relevant columns of one `sync_changes` row.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    pub op: Op,
    /// The `data` column (`None` for SQL `NULL`).
    pub data: Option<Value>,
    /// The `field_meta` column: `{field: ISO stamp}`; non-string entries are ignored.
    pub field_meta: Option<Value>,
    /// The `created_at` column.
    pub created_at: DateTime<Utc>,
}

/// A field stamp: the raw text plus its parsed instant (when it parses).
#[derive(Debug, Clone)]
struct Stamp {
    raw: String,
    instant: Option<DateTime<Utc>>,
}

impl Stamp {
    fn new(raw: String) -> Self {
        let instant = parse_iso(&raw);
        Stamp { raw, instant }
    }
}

impl PartialEq for Stamp {
    fn eq(&self, other: &Self) -> bool {
        // `instant` is a function of `raw`.
        self.raw == other.raw
    }
}

/// Orders two optional stamps: unstamped < unparseable < parseable (by instant, then raw).
fn cmp_stamps(a: Option<&Stamp>, b: Option<&Stamp>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => match (x.instant, y.instant) {
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(ix), Some(iy)) => ix.cmp(&iy).then_with(|| x.raw.cmp(&y.raw)),
            (None, None) => x.raw.cmp(&y.raw),
        },
    }
}

/// Orders two values that carry the same stamp (the final, deterministic tie-break).
fn cmp_values(a: &Value, b: &Value) -> Ordering {
    if a == b {
        // `Value` equality ignores object key order; fall through to the stored text so
        // that even differently ordered but equal objects have a fixed winner.
        return a.to_string().cmp(&b.to_string());
    }
    canonical_json(a)
        .cmp(&canonical_json(b))
        .then_with(|| a.to_string().cmp(&b.to_string()))
}

/// JSON text of `v` with object keys sorted (recursively) and no insignificant whitespace.
/// Equal JSON values always give equal text, whatever their key order.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(inner) = map.get(k.as_str()) {
                    write_canonical(inner, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// JavaScript truthiness of a JSON value (`null`, `false`, `0` and `""` are falsy).
pub fn is_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// True when `data` is an object whose `deletedAt` is truthy.
fn data_marks_deleted(data: Option<&Value>) -> bool {
    data.and_then(|d| d.get(DELETED_AT_KEY))
        .is_some_and(is_truthy)
}

/// The winning value of one field together with its stamp.
#[derive(Debug, Clone, PartialEq)]
struct Cell {
    stamp: Option<Stamp>,
    value: Value,
}

/// The fields of a live record, each with its winning candidate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveRecord {
    fields: BTreeMap<String, Cell>,
}

impl LiveRecord {
    /// Current value of `field`.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field).map(|c| &c.value)
    }

    /// Stamp of `field`, `None` when the field is absent or unstamped.
    pub fn stamp(&self, field: &str) -> Option<&str> {
        self.fields
            .get(field)
            .and_then(|c| c.stamp.as_ref())
            .map(|s| s.raw.as_str())
    }

    /// Field names in sorted order.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().map(String::as_str)
    }

    /// Offers a candidate for `field`; it replaces the current one iff it is greater.
    fn offer(&mut self, field: &str, stamp: Option<Stamp>, value: &Value) {
        match self.fields.get_mut(field) {
            None => {
                self.fields.insert(
                    field.to_owned(),
                    Cell {
                        stamp,
                        value: value.clone(),
                    },
                );
            }
            Some(cell) => {
                let ord = cmp_stamps(stamp.as_ref(), cell.stamp.as_ref())
                    .then_with(|| cmp_values(value, &cell.value));
                if ord == Ordering::Greater {
                    cell.stamp = stamp;
                    cell.value = value.clone();
                }
            }
        }
    }

    /// Offers every field of `data` (when it is an object), stamped from `meta`, else
    /// from `fallback` (`None` = unstamped).
    fn absorb(&mut self, data: Option<&Value>, meta: Option<&Value>, fallback: Option<&str>) {
        let Some(Value::Object(map)) = data else {
            return;
        };
        for (key, value) in map {
            if key == FIELD_META_KEY {
                continue;
            }
            let raw = meta
                .and_then(|m| m.get(key.as_str()))
                .and_then(Value::as_str)
                .or(fallback);
            if raw.is_none() && key == "id" {
                // See the module doc: an unstamped id is the record id.
                continue;
            }
            self.offer(key, raw.map(|r| Stamp::new(r.to_owned())), value);
        }
    }

    fn join(&mut self, other: &LiveRecord) {
        for (key, cell) in &other.fields {
            self.offer(key, cell.stamp.clone(), &cell.value);
        }
    }
}

/// Merge state of one record.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum RecordState {
    /// No row seen yet.
    #[default]
    Absent,
    /// The record exists.
    Live(LiveRecord),
    /// A tombstone was seen; final.
    Deleted,
}

impl RecordState {
    /// State described by a stored snapshot record (as produced by [`Self::to_record`]):
    /// every key except `__fieldMeta` is a field, stamped by `__fieldMeta[key]` when that is
    /// a string and unstamped otherwise. A truthy `deletedAt` gives `Deleted`; a non-object
    /// snapshot gives a live record without fields.
    pub fn from_snapshot(record: &Value) -> RecordState {
        let mut state = RecordState::Absent;
        state.absorb_row(false, Some(record), record.get(FIELD_META_KEY), None);
        state
    }

    /// Folds one row into the state.
    pub fn apply(&mut self, row: &ChangeRow) {
        let fallback = match row.op {
            Op::Update => Some(to_iso_ms(row.created_at)),
            Op::Insert | Op::Delete => None,
        };
        self.absorb_row(
            row.op == Op::Delete,
            row.data.as_ref(),
            row.field_meta.as_ref(),
            fallback.as_deref(),
        );
    }

    fn absorb_row(
        &mut self,
        is_delete: bool,
        data: Option<&Value>,
        meta: Option<&Value>,
        fallback: Option<&str>,
    ) {
        if matches!(self, RecordState::Deleted) {
            return;
        }
        if is_delete || data_marks_deleted(data) {
            *self = RecordState::Deleted;
            return;
        }
        if matches!(self, RecordState::Absent) {
            *self = RecordState::Live(LiveRecord::default());
        }
        if let RecordState::Live(live) = self {
            live.absorb(data, meta, fallback);
        }
    }

    /// Least upper bound of two states (used to combine partial merges).
    pub fn join(&mut self, other: &RecordState) {
        match (&mut *self, other) {
            (_, RecordState::Absent) | (RecordState::Deleted, _) => {}
            (_, RecordState::Deleted) => *self = RecordState::Deleted,
            (RecordState::Absent, RecordState::Live(o)) => *self = RecordState::Live(o.clone()),
            (RecordState::Live(s), RecordState::Live(o)) => s.join(o),
        }
    }

    /// Merges a set of rows from nothing.
    pub fn merge<'a>(rows: impl IntoIterator<Item = &'a ChangeRow>) -> RecordState {
        let mut state = RecordState::Absent;
        for row in rows {
            state.apply(row);
        }
        state
    }

    /// True once a tombstone has been seen.
    pub fn is_deleted(&self) -> bool {
        matches!(self, RecordState::Deleted)
    }

    /// The live record, if any.
    pub fn live(&self) -> Option<&LiveRecord> {
        match self {
            RecordState::Live(l) => Some(l),
            _ => None,
        }
    }

    /// Renders a live record as `{"id": record_id, ...fields, "__fieldMeta": {...}}` with
    /// fields in sorted key order (a field named `id` overrides the record id) and
    /// `__fieldMeta` last, holding the stamp of every stamped field. `None` unless live.
    pub fn to_record(&self, record_id: &str) -> Option<Value> {
        let live = self.live()?;
        let mut out = Map::new();
        out.insert("id".to_owned(), Value::String(record_id.to_owned()));
        let mut meta = Map::new();
        for (key, cell) in &live.fields {
            out.insert(key.clone(), cell.value.clone());
            if let Some(stamp) = &cell.stamp {
                meta.insert(key.clone(), Value::String(stamp.raw.clone()));
            }
        }
        out.insert(FIELD_META_KEY.to_owned(), Value::Object(meta));
        Some(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        parse_iso(s).unwrap()
    }

    fn row(op: Op, data: Value, meta: Value, created: &str) -> ChangeRow {
        ChangeRow {
            op,
            data: Some(data),
            field_meta: Some(meta),
            created_at: at(created),
        }
    }

    #[test]
    fn op_round_trips_text() {
        for op in [Op::Insert, Op::Update, Op::Delete] {
            assert_eq!(op.as_str().parse::<Op>(), Ok(op));
            assert_eq!(op.to_string(), op.as_str());
        }
        assert_eq!("upsert".parse::<Op>(), Err(UnknownOp("upsert".into())));
        assert!("INSERT".parse::<Op>().is_err());
    }

    #[test]
    fn truthiness_follows_javascript() {
        let cases = [
            (json!(null), false),
            (json!(false), false),
            (json!(0), false),
            (json!(0.0), false),
            (json!(-0.0), false),
            (json!(""), false),
            (json!(true), true),
            (json!(1), true),
            (json!(-2.5), true),
            (json!("x"), true),
            (json!([]), true),
            (json!({}), true),
        ];
        for (v, want) in cases {
            assert_eq!(is_truthy(&v), want, "{v}");
        }
    }

    #[test]
    fn canonical_json_sorts_keys_recursively() {
        let a = json!({"b": 1, "a": {"z": [ {"y": 1, "x": 2} ], "c": "q"}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":"q","z":[{"x":2,"y":1}]},"b":1}"#
        );
        assert_eq!(canonical_json(&json!("a\"b")), r#""a\"b""#);
    }

    #[test]
    fn equal_stamps_break_ties_by_value_in_any_order() {
        let t = "2026-01-01T00:00:02.000Z";
        let a = row(Op::Update, json!({"x": "apple"}), json!({"x": t}), t);
        let b = row(Op::Update, json!({"x": "banana"}), json!({"x": t}), t);
        for rows in [[&a, &b], [&b, &a]] {
            let s = RecordState::merge(rows);
            assert_eq!(s.live().unwrap().get("x"), Some(&json!("banana")));
        }
    }

    #[test]
    fn equal_instants_break_ties_by_raw_stamp() {
        let z = row(
            Op::Update,
            json!({"x": "z"}),
            json!({"x": "2026-01-01T01:00:00.000+01:00"}),
            "2026-01-01T00:00:00.000Z",
        );
        let u = row(
            Op::Update,
            json!({"x": "u"}),
            json!({"x": "2026-01-01T00:00:00.000Z"}),
            "2026-01-01T00:00:00.000Z",
        );
        for rows in [[&z, &u], [&u, &z]] {
            let s = RecordState::merge(rows);
            // "2026-01-01T01..." > "2026-01-01T00..." as text.
            assert_eq!(s.live().unwrap().get("x"), Some(&json!("z")));
        }
    }

    #[test]
    fn instants_not_text_decide_between_offsets() {
        // 01:30+02:00 is 23:30Z the day before: older, although larger as text.
        let older = row(
            Op::Update,
            json!({"x": "old"}),
            json!({"x": "2026-01-02T01:30:00.000+02:00"}),
            "2026-01-01T00:00:00.000Z",
        );
        let newer = row(
            Op::Update,
            json!({"x": "new"}),
            json!({"x": "2026-01-02T00:00:00.000Z"}),
            "2026-01-01T00:00:00.000Z",
        );
        let s = RecordState::merge([&newer, &older]);
        assert_eq!(s.live().unwrap().get("x"), Some(&json!("new")));
    }

    #[test]
    fn unparseable_stamps_lose_to_parseable_and_beat_unstamped() {
        let ins = row(
            Op::Insert,
            json!({"x": "ins"}),
            json!({}),
            "2026-01-01T00:00:00.000Z",
        );
        let junk = row(
            Op::Update,
            json!({"x": "junk"}),
            json!({"x": "zzz-not-a-date"}),
            "2026-01-01T00:00:00.000Z",
        );
        let good = row(
            Op::Update,
            json!({"x": "good"}),
            json!({"x": "1999-01-01T00:00:00.000Z"}),
            "2026-01-01T00:00:00.000Z",
        );
        assert_eq!(
            RecordState::merge([&junk, &ins]).live().unwrap().get("x"),
            Some(&json!("junk"))
        );
        assert_eq!(
            RecordState::merge([&junk, &good, &ins])
                .live()
                .unwrap()
                .get("x"),
            Some(&json!("good"))
        );
    }

    #[test]
    fn non_string_meta_falls_back_to_created_at_for_updates_only() {
        let up = row(
            Op::Update,
            json!({"x": 1}),
            json!({"x": 5}),
            "2026-01-01T00:00:03.123Z",
        );
        let s = RecordState::merge([&up]);
        assert_eq!(
            s.live().unwrap().stamp("x"),
            Some("2026-01-01T00:00:03.123Z")
        );
        let ins = row(
            Op::Insert,
            json!({"x": 1}),
            json!({"x": 5}),
            "2026-01-01T00:00:03.123Z",
        );
        let s = RecordState::merge([&ins]);
        assert_eq!(s.live().unwrap().stamp("x"), None);
        let no_meta = ChangeRow {
            field_meta: None,
            ..up.clone()
        };
        let s = RecordState::merge([&no_meta]);
        assert_eq!(
            s.live().unwrap().stamp("x"),
            Some("2026-01-01T00:00:03.123Z")
        );
    }

    #[test]
    fn non_object_data_makes_record_live_without_fields() {
        for data in [json!(null), json!([1, 2]), json!("s"), json!(3)] {
            let r = row(Op::Update, data, json!({}), "2026-01-01T00:00:00.000Z");
            let s = RecordState::merge([&r]);
            assert_eq!(
                s.to_record("r9"),
                Some(json!({"id": "r9", "__fieldMeta": {}}))
            );
        }
        let none = ChangeRow {
            op: Op::Insert,
            data: None,
            field_meta: None,
            created_at: at("2026-01-01T00:00:00.000Z"),
        };
        assert!(RecordState::merge([&none]).live().is_some());
    }

    #[test]
    fn field_meta_key_in_data_is_ignored() {
        let r = row(
            Op::Update,
            json!({"__fieldMeta": {"x": "2030-01-01T00:00:00.000Z"}, "y": 1}),
            json!({"__fieldMeta": "2030-01-01T00:00:00.000Z"}),
            "2026-01-01T00:00:00.000Z",
        );
        let rec = RecordState::merge([&r]).to_record("r").unwrap();
        assert_eq!(
            rec,
            json!({"id": "r", "y": 1, "__fieldMeta": {"y": "2026-01-01T00:00:00.000Z"}})
        );
    }

    #[test]
    fn deletes_are_final() {
        let ins = row(
            Op::Insert,
            json!({"x": 1}),
            json!({}),
            "2026-01-01T00:00:00.000Z",
        );
        let del = row(Op::Delete, json!({}), json!({}), "2026-01-01T00:00:01.000Z");
        let later = row(
            Op::Update,
            json!({"x": 2}),
            json!({}),
            "2026-01-01T00:00:05.000Z",
        );
        let s = RecordState::merge([&ins, &del, &later]);
        assert!(s.is_deleted());
        assert_eq!(s.to_record("r"), None);
        // Truthy deletedAt in any row, even a losing one, is a tombstone.
        let stale_tomb = row(
            Op::Update,
            json!({"deletedAt": "x"}),
            json!({"deletedAt": "2000-01-01T00:00:00.000Z"}),
            "2026-01-01T00:00:00.000Z",
        );
        assert!(RecordState::merge([&later, &stale_tomb]).is_deleted());
        // Falsy deletedAt is an ordinary field.
        let undel = row(
            Op::Update,
            json!({"deletedAt": null}),
            json!({}),
            "2026-01-01T00:00:00.000Z",
        );
        let s = RecordState::merge([&undel]);
        assert_eq!(s.live().unwrap().get("deletedAt"), Some(&Value::Null));
    }

    #[test]
    fn id_field_rules() {
        let ins = row(
            Op::Insert,
            json!({"id": "other", "a": 1}),
            json!({}),
            "2026-01-01T00:00:00.000Z",
        );
        let rec = RecordState::merge([&ins]).to_record("r1").unwrap();
        assert_eq!(rec, json!({"id": "r1", "a": 1, "__fieldMeta": {}}));
        let up = row(
            Op::Update,
            json!({"id": "renamed"}),
            json!({}),
            "2026-01-01T00:00:01.000Z",
        );
        let rec = RecordState::merge([&ins, &up]).to_record("r1").unwrap();
        assert_eq!(rec["id"], json!("renamed"));
        assert_eq!(rec[FIELD_META_KEY]["id"], json!("2026-01-01T00:00:01.000Z"));
        // `id` stays the first key.
        assert_eq!(
            rec.as_object().unwrap().keys().next().map(String::as_str),
            Some("id")
        );
    }

    #[test]
    fn to_record_orders_keys() {
        let r = row(
            Op::Update,
            json!({"zeta": 1, "alpha": 2}),
            json!({"alpha": "2026-01-01T00:00:00.000Z"}),
            "2026-01-01T00:00:09.000Z",
        );
        let rec = RecordState::merge([&r]).to_record("r").unwrap();
        let keys: Vec<&str> = rec
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["id", "alpha", "zeta", FIELD_META_KEY]);
    }

    #[test]
    fn snapshot_round_trip_and_snapshot_tombstone() {
        let ins = row(
            Op::Insert,
            json!({"a": 1, "b": {"k": 1}}),
            json!({}),
            "2026-01-01T00:00:00.000Z",
        );
        let up = row(
            Op::Update,
            json!({"b": {"k": 2}}),
            json!({}),
            "2026-01-01T00:00:01.000Z",
        );
        let s = RecordState::merge([&ins, &up]);
        let snap = s.to_record("r").unwrap();
        assert_eq!(RecordState::from_snapshot(&snap), s);
        assert!(RecordState::from_snapshot(&json!({"id": "r", "deletedAt": "2026"})).is_deleted());
        assert_eq!(
            RecordState::from_snapshot(&json!("junk")).to_record("r"),
            Some(json!({"id": "r", "__fieldMeta": {}}))
        );
    }

    #[test]
    fn join_matches_merge_of_union() {
        let a = row(
            Op::Insert,
            json!({"x": 1, "y": 1}),
            json!({}),
            "2026-01-01T00:00:00.000Z",
        );
        let b = row(
            Op::Update,
            json!({"x": 2}),
            json!({}),
            "2026-01-01T00:00:01.000Z",
        );
        let mut left = RecordState::merge([&a]);
        left.join(&RecordState::merge([&b]));
        assert_eq!(left, RecordState::merge([&a, &b]));
        let mut abs = RecordState::Absent;
        abs.join(&left);
        assert_eq!(abs, left);
        let mut d = left.clone();
        d.join(&RecordState::Deleted);
        assert!(d.is_deleted());
        d.join(&left);
        assert!(d.is_deleted());
    }
}
