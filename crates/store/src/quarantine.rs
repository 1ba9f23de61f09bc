//! Quarantine of `sync_changes` rows the refresh cannot or must not fold in.
//!
//! Every user's devices write `sync_changes`, and the sync server checks little (no JSON
//! depth, size or type checks). A row that cannot be decoded, or that exceeds one of the
//! documented limits below, is *quarantined* by the refresh: it is skipped (the rest of
//! its record, its user and every other user are folded in as usual), logged with ids
//! only, counted by reason, and recorded in `mana_ai.quarantined_rows` in the same
//! statement that moves the refresh cursor past it, so the cursor never stops at it.
//! Operators list the table with `mana-ai quarantine list`.
//!
//! The limits are checked on the row's JSON text (its size, before parsing) and on the
//! parsed value (nesting depth, string length: one walk, bounded by serde's own limit of
//! 128 levels, which reports deeper text as too deep).

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::row::from_row;
use crate::{Store, StoreError};

/// Largest `data` + `field_meta` (JSON text, bytes) of one row: the sync server's request
/// body limit, so no row a device could push is refused for its size alone.
pub const MAX_ROW_BYTES: usize = 10 * 1024 * 1024;

/// Deepest JSON nesting accepted in `data` or `field_meta` (`{}` is depth 1). Mission and
/// agent records written by the web app and the runner stay below 12.
pub const MAX_JSON_DEPTH: usize = 32;

/// Longest single JSON string (object key or value, decoded).
pub const MAX_STRING_BYTES: usize = 1024 * 1024;

/// Longest record id. Ids are UUIDs in practice; a longer id would also overflow the
/// snapshot tables' primary-key index.
pub const MAX_ID_BYTES: usize = 256;

/// Why a row was quarantined (a closed set: the metric label and the table's check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuarantineReason {
    /// A column could not be decoded (invalid JSON for us, e.g. a number out of `f64`
    /// range; an unknown `op`; a stored snapshot of the record that cannot be read).
    Undecodable,
    /// `data` + `field_meta` over [`MAX_ROW_BYTES`].
    TooLarge,
    /// JSON nesting deeper than [`MAX_JSON_DEPTH`].
    TooDeep,
    /// A JSON string longer than [`MAX_STRING_BYTES`].
    FieldTooLarge,
    /// `data` or `field_meta` is neither an object nor null.
    NotAnObject,
    /// Record id longer than [`MAX_ID_BYTES`].
    IdTooLong,
    /// `created_at` cannot be represented (e.g. `-infinity`).
    BadTime,
}

impl QuarantineReason {
    /// Every reason, in a fixed order.
    pub const ALL: [QuarantineReason; 7] = [
        QuarantineReason::Undecodable,
        QuarantineReason::TooLarge,
        QuarantineReason::TooDeep,
        QuarantineReason::FieldTooLarge,
        QuarantineReason::NotAnObject,
        QuarantineReason::IdTooLong,
        QuarantineReason::BadTime,
    ];

    /// The label value (metric, table, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineReason::Undecodable => "undecodable",
            QuarantineReason::TooLarge => "too-large",
            QuarantineReason::TooDeep => "too-deep",
            QuarantineReason::FieldTooLarge => "field-too-large",
            QuarantineReason::NotAnObject => "not-an-object",
            QuarantineReason::IdTooLong => "id-too-long",
            QuarantineReason::BadTime => "bad-time",
        }
    }
}

/// A row the refresh refused: the reason and a short detail made of measurements only
/// (never any of the row's content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: QuarantineReason,
    pub detail: String,
}

impl Refusal {
    pub(crate) fn new(reason: QuarantineReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// Parses one JSON column of a row (`None` for SQL NULL) after checking it against the
/// limits; `budget` is what is left of [`MAX_ROW_BYTES`] for this row.
pub(crate) fn parse_checked(
    text: Option<&str>,
    budget: &mut usize,
) -> Result<Option<Value>, Refusal> {
    let Some(text) = text else {
        return Ok(None);
    };
    if text.len() > *budget {
        return Err(Refusal::new(
            QuarantineReason::TooLarge,
            format!("row over {MAX_ROW_BYTES} bytes"),
        ));
    }
    *budget -= text.len();
    let value: Value = serde_json::from_str(text).map_err(|e| {
        // serde refuses nesting over 128 levels itself; its messages name a position and
        // a category, never the content.
        if e.to_string().starts_with("recursion limit exceeded") {
            Refusal::new(
                QuarantineReason::TooDeep,
                format!("depth over {MAX_JSON_DEPTH}"),
            )
        } else {
            Refusal::new(
                QuarantineReason::Undecodable,
                format!("json: {:?}", e.classify()),
            )
        }
    })?;
    check_tree(&value, 0)?;
    match value {
        Value::Null => Ok(None),
        Value::Object(_) => Ok(Some(value)),
        other => Err(Refusal::new(
            QuarantineReason::NotAnObject,
            json_kind(&other).to_string(),
        )),
    }
}

/// The kind of a JSON value (for a refusal's detail).
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Refuses nesting deeper than [`MAX_JSON_DEPTH`] and strings (keys or values, decoded)
/// longer than [`MAX_STRING_BYTES`]. `depth` is the number of containers around `v`.
/// Parsed values are at most 128 deep (serde's limit), which bounds the recursion. A
/// walk over the parsed value costs 2–5 % of the parse; a byte scan before it cost 15–25 %.
pub(crate) fn check_tree(v: &Value, depth: usize) -> Result<(), Refusal> {
    let inner = depth + 1;
    let too_deep = || {
        Refusal::new(
            QuarantineReason::TooDeep,
            format!("depth over {MAX_JSON_DEPTH}"),
        )
    };
    match v {
        Value::String(s) => check_string(s.len()),
        Value::Array(items) => {
            if inner > MAX_JSON_DEPTH {
                return Err(too_deep());
            }
            items.iter().try_for_each(|x| check_tree(x, inner))
        }
        Value::Object(fields) => {
            if inner > MAX_JSON_DEPTH {
                return Err(too_deep());
            }
            fields.iter().try_for_each(|(k, x)| {
                check_string(k.len())?;
                check_tree(x, inner)
            })
        }
        _ => Ok(()),
    }
}

fn check_string(len: usize) -> Result<(), Refusal> {
    if len > MAX_STRING_BYTES {
        return Err(Refusal::new(
            QuarantineReason::FieldTooLarge,
            format!("string of {len} bytes"),
        ));
    }
    Ok(())
}

/// `id` cut to at most [`MAX_ID_BYTES`] bytes (on a character boundary), for logs and
/// the quarantine table.
pub fn clip_id(id: &str) -> &str {
    if id.len() <= MAX_ID_BYTES {
        return id;
    }
    let mut end = MAX_ID_BYTES;
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    &id[..end]
}

/// One row of `mana_ai.quarantined_rows`: which row (ids and its `created_at`), why, and
/// when it was quarantined.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantinedRow {
    pub user_id: String,
    pub app_id: String,
    pub table_name: String,
    pub record_id: String,
    pub created_at: DateTime<Utc>,
    pub reason: String,
    pub detail: String,
    pub quarantined_at: DateTime<Utc>,
}

const LIST_SQL: &str =
    "SELECT user_id, app_id, table_name, record_id, created_at, reason, detail, quarantined_at
   FROM mana_ai.quarantined_rows ORDER BY quarantined_at DESC, user_id, record_id LIMIT $1";

impl Store {
    /// The most recently quarantined rows, newest first, at most `limit`.
    pub async fn list_quarantined(&self, limit: i64) -> Result<Vec<QuarantinedRow>, StoreError> {
        let c = self.client().await?;
        let rows = c.query(LIST_SQL, &[&limit.max(0)]).await?;
        rows.iter()
            .map(|r| {
                Ok(from_row!(
                    r,
                    QuarantinedRow {
                        user_id,
                        app_id,
                        table_name,
                        record_id,
                        created_at,
                        reason,
                        detail,
                        quarantined_at,
                    }
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_is_refused_just_past_the_limit() {
        let at = format!("{{\"a\":{}}}", nested(MAX_JSON_DEPTH - 1));
        assert!(parse_checked(Some(&at), &mut { MAX_ROW_BYTES }).is_ok());
        let over = format!("{{\"a\":{}}}", nested(MAX_JSON_DEPTH));
        let e = parse_checked(Some(&over), &mut { MAX_ROW_BYTES }).unwrap_err();
        assert_eq!(e.reason, QuarantineReason::TooDeep);
        // Past serde's own limit (128) too: refused as too deep, not as undecodable.
        let far = format!("{{\"a\":{}}}", nested(200));
        let e = parse_checked(Some(&far), &mut { MAX_ROW_BYTES }).unwrap_err();
        assert_eq!(e.reason, QuarantineReason::TooDeep);
        // Brackets inside strings do not count.
        let quoted = format!("{{\"a\":\"{}\\\"{}\"}}", "[".repeat(100), "{".repeat(100));
        assert!(parse_checked(Some(&quoted), &mut { MAX_ROW_BYTES }).is_ok());
    }

    #[test]
    fn strings_rows_and_kinds_are_checked_at_their_edges() {
        let at = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_STRING_BYTES));
        assert!(parse_checked(Some(&at), &mut { MAX_ROW_BYTES }).is_ok());
        let over = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_STRING_BYTES + 1));
        let e = parse_checked(Some(&over), &mut { MAX_ROW_BYTES }).unwrap_err();
        assert_eq!(e.reason, QuarantineReason::FieldTooLarge);
        let mut budget = 10;
        assert!(parse_checked(Some("{\"a\":123}"), &mut budget).is_ok());
        assert_eq!(budget, 1);
        let e = parse_checked(Some("{}"), &mut budget).unwrap_err();
        assert_eq!(e.reason, QuarantineReason::TooLarge);
        for (text, kind) in [("[1]", "array"), ("\"s\"", "string"), ("7", "number")] {
            let e = parse_checked(Some(text), &mut 100).unwrap_err();
            assert_eq!(
                (e.reason, e.detail.as_str()),
                (QuarantineReason::NotAnObject, kind)
            );
        }
        assert_eq!(parse_checked(Some("null"), &mut 100), Ok(None));
        assert_eq!(parse_checked(None, &mut 0), Ok(None));
        let e = parse_checked(Some("{\"a\":1e400}"), &mut 100).unwrap_err();
        assert_eq!(e.reason, QuarantineReason::Undecodable);
    }

    #[test]
    fn ids_are_clipped_on_a_character_boundary() {
        assert_eq!(clip_id("abc"), "abc");
        let long = "é".repeat(MAX_ID_BYTES);
        let clipped = clip_id(&long);
        assert!(clipped.len() <= MAX_ID_BYTES && clipped.len() >= MAX_ID_BYTES - 1);
        assert!(long.starts_with(clipped));
    }

    #[test]
    fn every_reason_is_allowed_by_the_table() {
        let ddl = include_str!("schema/0003/quarantine.sql");
        for r in QuarantineReason::ALL {
            assert!(ddl.contains(&format!("'{}'", r.as_str())), "{r:?}");
        }
    }
}
