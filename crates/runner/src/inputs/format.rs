//! How resolved records are rendered for the prompt (data-model §8). Lengths are counted
//! in chars (the prompt module's unit). A decrypted record is held as a [`PlainRecord`],
//! whose strings are wiped (zeroized) when it is dropped.

use mana_ai_core::prompt::{input_char_limit, truncate_chars, ResolvedInput};
use mana_ai_core::records::InputRef;
use serde_json::{Map, Value};
use zeroize::Zeroize;

/// A record that holds (or will hold) decrypted plaintext. Dropping it overwrites every
/// string in it — values and keys, nested too — with zeros before the memory is freed.
/// Neither `Debug` nor `Clone`: the plaintext leaves it only through [`format_input`].
pub(crate) struct PlainRecord(Value);

impl PlainRecord {
    pub(crate) fn new(record: Value) -> Self {
        Self(record)
    }

    pub(crate) fn value(&self) -> &Value {
        &self.0
    }

    pub(crate) fn value_mut(&mut self) -> &mut Value {
        &mut self.0
    }
}

impl Drop for PlainRecord {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Zeroizes every string of `value` in place (numbers and booleans carry no text).
fn wipe(value: &mut Value) {
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(map) => {
            for (_, v) in map.iter_mut() {
                wipe(v);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

use super::registry::Format;

/// Renders one resolved record for the prompt.
pub fn format_input(format: Format, input: &InputRef, record: &Value) -> ResolvedInput {
    let empty = Map::new();
    let rec = record.as_object().unwrap_or(&empty);
    let (title, content) = match format {
        Format::Goal => (goal_title(rec), goal_content(rec)),
        Format::Note => (title_or(rec, "Notiz"), notes_like(rec)),
        Format::Task => (title_or(rec, "Task"), task_content(rec)),
        Format::Event => (title_or(rec, "Termin"), event_content(rec)),
        Format::Journal => (
            title_or(rec, "Journal-Eintrag"),
            rec.get("content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        ),
        Format::Kontext => ("Mana-Kontext".to_owned(), notes_like(rec)),
        Format::Profile => ("Nutzerprofil".to_owned(), profile_content(rec)),
    };
    ResolvedInput {
        id: input.id.clone(),
        module: input.module.clone(),
        table: input.table.clone(),
        title: Some(title),
        content: truncate_chars(&content, input_char_limit(&input.module)),
    }
}

/// `record.title` when a non-empty string, else the module label.
fn title_or(rec: &Map<String, Value>, label: &str) -> String {
    match rec.get("title").and_then(Value::as_str) {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ => label.to_owned(),
    }
}

/// Goals: `record.title ?? 'Goal'`.
fn goal_title(rec: &Map<String, Value>) -> String {
    match rec.get("title") {
        None | Some(Value::Null) => "Goal".to_owned(),
        Some(v) => js_text(v),
    }
}

/// `Fortschritt: <currentValue ?? 0> / <target.value ?? '?'> (<period ?? 'unbekannt'>)`,
/// the period read from `target.period`, then the top-level `period`.
fn goal_content(rec: &Map<String, Value>) -> String {
    let target = rec.get("target");
    let current = present(rec.get("currentValue")).map_or_else(|| "0".to_owned(), js_text);
    let goal = present(target.and_then(|t| t.get("value"))).map_or_else(|| "?".to_owned(), js_text);
    let period = present(target.and_then(|t| t.get("period")))
        .or_else(|| present(rec.get("period")))
        .map_or_else(|| "unbekannt".to_owned(), js_text);
    format!("Fortschritt: {current} / {goal} ({period})")
}

/// Notes and kontext: `content` if a string, else `JSON.stringify(content ?? '')`.
fn notes_like(rec: &Map<String, Value>) -> String {
    match rec.get("content") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => "\"\"".to_owned(),
        Some(other) => other.to_string(),
    }
}

/// `[status] title — description (faellig: dueDate)`, falsy parts dropped.
fn task_content(rec: &Map<String, Value>) -> String {
    let mut parts = Vec::new();
    if let Some(s) = truthy_text(rec.get("status")) {
        parts.push(format!("[{s}]"));
    }
    parts.push(truthy_text(rec.get("title")).unwrap_or_else(|| "(ohne Titel)".to_owned()));
    if let Some(d) = truthy_text(rec.get("description")) {
        parts.push(format!("— {d}"));
    }
    if let Some(d) = truthy_text(rec.get("dueDate")) {
        parts.push(format!("(faellig: {d})"));
    }
    parts.join(" ")
}

/// `title @ startDate in location`, falsy parts dropped.
fn event_content(rec: &Map<String, Value>) -> String {
    let mut parts =
        vec![truthy_text(rec.get("title")).unwrap_or_else(|| "(ohne Titel)".to_owned())];
    if let Some(s) = truthy_text(rec.get("startDate")) {
        parts.push(format!("@ {s}"));
    }
    if let Some(l) = truthy_text(rec.get("location")) {
        parts.push(format!("in {l}"));
    }
    parts.join(" ")
}

/// Profile keys in order; non-blank strings trimmed, objects/arrays as JSON, the rest
/// skipped; joined by newlines.
fn profile_content(rec: &Map<String, Value>) -> String {
    const KEYS: [&str; 7] = [
        "about",
        "interests",
        "routine",
        "nutrition",
        "goals",
        "social",
        "freeform",
    ];
    KEYS.iter()
        .filter_map(|k| match rec.get(*k) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Some(v @ (Value::Object(_) | Value::Array(_))) => Some(v.to_string()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `Some` unless absent or `null` (the `??` operator).
fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

/// The value as text when JavaScript-truthy, else `None`.
fn truthy_text(v: Option<&Value>) -> Option<String> {
    v.filter(|v| mana_ai_core::lww::is_truthy(v)).map(js_text)
}

/// How a JavaScript template literal renders a JSON value; containers as JSON text
/// (where JavaScript would print `[object Object]`).
fn js_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
            _ => n.to_string(),
        },
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::registry::resolver_for;
    use serde_json::json;

    fn input(module: &str, table: &str) -> InputRef {
        InputRef {
            module: module.into(),
            table: table.into(),
            id: "r1".into(),
        }
    }

    fn render(module: &str, record: Value) -> (String, String) {
        let r = resolver_for(module).unwrap();
        let out = format_input(r.format, &input(module, "t"), &record);
        assert_eq!(out.id, "r1");
        assert_eq!(out.module, module);
        assert_eq!(out.table, "t");
        (out.title.unwrap(), out.content)
    }

    #[test]
    fn wipe_zeroizes_every_string() {
        let mut v = serde_json::json!({"content": "secret", "nested": {"a": ["x", 1]}});
        wipe(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"content": "", "nested": {"a": ["", 1]}})
        );
        let rec = PlainRecord::new(serde_json::json!({"title": "t"}));
        assert_eq!(rec.value()["title"], "t");
    }

    #[test]
    fn formatting_table() {
        let cases: Vec<(&str, Value, &str, &str)> = vec![
            // goals
            (
                "goals",
                json!({"title": "Laufen", "currentValue": 3, "target": {"value": 10, "period": "week"}}),
                "Laufen",
                "Fortschritt: 3 / 10 (week)",
            ),
            (
                "goals",
                json!({"period": "month", "target": {"value": 2.0}}),
                "Goal",
                "Fortschritt: 0 / 2 (month)",
            ),
            (
                "goals",
                json!({"title": "", "currentValue": 1.5}),
                "",
                "Fortschritt: 1.5 / ? (unbekannt)",
            ),
            (
                "goals",
                json!({"currentValue": 0, "target": {"value": 5, "period": null}, "period": "day"}),
                "Goal",
                "Fortschritt: 0 / 5 (day)",
            ),
            // notes
            (
                "notes",
                json!({"title": "Idee", "content": "Text"}),
                "Idee",
                "Text",
            ),
            ("notes", json!({"title": ""}), "Notiz", "\"\""),
            (
                "notes",
                json!({"content": {"blocks": [1]}}),
                "Notiz",
                "{\"blocks\":[1]}",
            ),
            // tasks
            (
                "tasks",
                json!({"title": "Einkaufen", "status": "open", "description": "Milch", "dueDate": "2026-01-05"}),
                "Einkaufen",
                "[open] Einkaufen — Milch (faellig: 2026-01-05)",
            ),
            (
                "todo",
                json!({"isCompleted": false}),
                "Task",
                "(ohne Titel)",
            ),
            ("tasks", json!({"title": "X", "description": ""}), "X", "X"),
            // calendar
            (
                "calendar",
                json!({"title": "Zahnarzt", "startDate": "2026-01-05T09:00", "location": "Praxis"}),
                "Zahnarzt",
                "Zahnarzt @ 2026-01-05T09:00 in Praxis",
            ),
            ("calendar", json!({}), "Termin", "(ohne Titel)"),
            // journal
            (
                "journal",
                json!({"content": "Heute"}),
                "Journal-Eintrag",
                "Heute",
            ),
            ("journal", json!({"content": 7}), "Journal-Eintrag", ""),
            // kontext
            (
                "kontext",
                json!({"title": "ignored", "content": "K"}),
                "Mana-Kontext",
                "K",
            ),
            // profile
            (
                "profile",
                json!({"freeform": "zuletzt", "about": "  Ich  ", "interests": ["a", "b"],
                       "routine": "   ", "nutrition": 5, "goals": {"x": 1}, "social": null}),
                "Nutzerprofil",
                "Ich\n[\"a\",\"b\"]\n{\"x\":1}\nzuletzt",
            ),
        ];
        for (module, record, title, content) in cases {
            let (t, c) = render(module, record.clone());
            assert_eq!(
                (t.as_str(), c.as_str()),
                (title, content),
                "{module} {record}"
            );
        }
    }

    #[test]
    fn truncation_limits_per_module() {
        let long = "x".repeat(3000);
        for (module, limit) in [
            ("notes", 500),
            ("tasks", 500),
            ("journal", 500),
            ("kontext", 1500),
            ("profile", 2000),
        ] {
            let rec = json!({"content": long, "title": long, "about": long});
            let (_, c) = render(module, rec);
            assert_eq!(c.chars().count(), limit + 1, "{module}");
            assert!(c.ends_with('…'), "{module}");
        }
        let exact = "y".repeat(500);
        let (_, c) = render("notes", json!({ "content": exact }));
        assert_eq!(c, exact);
    }

    #[test]
    fn js_text_renders_like_a_template_literal() {
        let cases = [
            (json!("s"), "s"),
            (json!(3), "3"),
            (json!(-4), "-4"),
            (json!(2.5), "2.5"),
            (json!(10.0), "10"),
            (json!(true), "true"),
            (json!(null), "null"),
        ];
        for (v, want) in cases {
            assert_eq!(js_text(&v), want, "{v}");
        }
    }
}
