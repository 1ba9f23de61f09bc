//! Replays every `lww` vector of the shared compatibility file through the merge.

use std::path::{Path, PathBuf};

use mana_ai_core::iso::parse_iso;
use mana_ai_core::lww::{ChangeRow, Op, RecordState};
use serde_json::Value;

const VECTORS: &str = "vectors/compat-v1.json";

/// `$MANA_AI_SHARED_DIR`, else the first ancestor of this crate that has a sibling
/// `shared/vectors/compat-v1.json`. Panics when neither exists: the vectors are mandatory.
fn vectors_path() -> PathBuf {
    if let Ok(dir) = std::env::var("MANA_AI_SHARED_DIR") {
        let p = Path::new(&dir).join(VECTORS);
        assert!(
            p.is_file(),
            "MANA_AI_SHARED_DIR is set but {} is missing",
            p.display()
        );
        return p;
    }
    let start = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in start.ancestors() {
        let p = dir.join("shared").join(VECTORS);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "compat vectors not found: set MANA_AI_SHARED_DIR or place shared/{VECTORS} next to an \
         ancestor of {}",
        start.display()
    );
}

fn load_lww_vectors() -> Vec<Value> {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let all: Value = serde_json::from_str(&text).expect("compat-v1.json is valid JSON");
    all["lww"]
        .as_array()
        .expect("compat-v1.json has an `lww` array")
        .clone()
}

fn to_row(v: &Value) -> (String, ChangeRow) {
    let record_id = v["record_id"].as_str().expect("record_id").to_owned();
    let op: Op = v["op"].as_str().expect("op").parse().expect("known op");
    let opt = |k: &str| match v.get(k) {
        None | Some(Value::Null) => None,
        Some(x) => Some(x.clone()),
    };
    let created_at = parse_iso(v["created_at"].as_str().expect("created_at")).expect("iso");
    let row = ChangeRow {
        op,
        data: opt("data"),
        field_meta: opt("field_meta"),
        created_at,
    };
    (record_id, row)
}

#[test]
fn every_lww_vector_matches() {
    let vectors = load_lww_vectors();
    assert!(
        vectors.len() >= 6,
        "expected the lww vectors, got {}",
        vectors.len()
    );
    for vector in &vectors {
        let name = vector["name"].as_str().expect("name");
        let rows: Vec<(String, ChangeRow)> = vector["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(to_row)
            .collect();
        let record_id = rows[0].0.clone();
        assert!(
            rows.iter().all(|(id, _)| *id == record_id),
            "{name}: vector mixes record ids"
        );
        let expect = match &vector["expect"] {
            Value::Null => None,
            other => Some(other.clone()),
        };

        let in_order = RecordState::merge(rows.iter().map(|(_, r)| r));
        assert_eq!(in_order.to_record(&record_id), expect, "{name}: in order");

        // The merge is order-independent, so the reversed log must give the same record.
        let reversed = RecordState::merge(rows.iter().rev().map(|(_, r)| r));
        assert_eq!(reversed.to_record(&record_id), expect, "{name}: reversed");

        // Snapshot after every prefix, then the rest: same record.
        for cut in 1..rows.len() {
            let head = RecordState::merge(rows[..cut].iter().map(|(_, r)| r));
            let mut state = match head.to_record(&record_id) {
                Some(snapshot) => RecordState::from_snapshot(&snapshot),
                None => head,
            };
            for (_, r) in &rows[cut..] {
                state.apply(r);
            }
            assert_eq!(
                state.to_record(&record_id),
                expect,
                "{name}: snapshot at {cut}"
            );
        }
    }
}
