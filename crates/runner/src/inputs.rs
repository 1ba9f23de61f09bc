//! Input resolution for a mission run: the records a mission links (`mission.inputs`),
//! read from the event log and rendered for the prompt.
//!
//! * **Registry** ([`resolver_for`]): module key → sync app id, whether the records are
//!   encrypted, and how they are rendered (data-model §8). Unknown modules are skipped
//!   and counted (`mana_ai_resolver_failures_total{module="unknown"}`).
//! * **Plaintext** modules (`goals`) are replayed and rendered; no grant needed.
//! * **Encrypted** modules need the mission's key grant. Per mission the grant is
//!   unwrapped once (only if some input needs it); a failure is counted in
//!   `mana_ai_grant_skips_total{reason}` and the mission continues without encrypted
//!   inputs. The mission data key (MDK) lives only while this mission's inputs resolve
//!   and is wiped when dropped. For each encrypted input: outside the grant's allowlist ⇒
//!   `scope-violation` audit row + `mana_ai_grant_scope_violations_total{table}`; else the
//!   record is replayed and its `enc:1:` fields decrypted; a decrypt failure ⇒ `failed`
//!   audit row with a stable reason; success ⇒ `ok` audit row carrying the iteration id and
//!   `mana_ai_decrypts_total{table}` += decrypted fields. The replay, the decrypt and the
//!   audit insert share one `withUser` transaction that is committed *before* the
//!   plaintext is handed on, so no decrypted input is ever used unaudited.
//! * A resolver that fails (database error) drops only its own input and is counted in
//!   `mana_ai_resolver_failures_total{module}`; the mission always continues.
//!
//! Inputs resolve concurrently (at most [`RESOLVE_CONCURRENCY`] at a time); the result
//! keeps the order of `mission.inputs`. Logs carry ids, table labels and reasons only —
//! never record contents, plaintext or key bytes. Metric labels come from bounded sets.

use std::collections::HashSet;

use futures::StreamExt;
use mana_ai_core::crypto::{
    decrypt_value, is_encrypted, unwrap_grant, DecryptError, MissionDataKey,
};
use mana_ai_core::prompt::{input_char_limit, truncate_chars, ResolvedInput};
use mana_ai_core::records::{InputRef, MissionView};
use mana_ai_store::audit::insert_decrypt_audit;
use mana_ai_store::records::replay_record_in;
use mana_ai_store::{AuditStatus, DecryptAuditEntry, DueMission, StoreError};
use serde_json::{Map, Value};

use crate::Shared;

/// How many inputs of one mission resolve at the same time (each holds a connection).
pub(crate) const RESOLVE_CONCURRENCY: usize = 4;

/// Audit reason of a record outside the grant's allowlist.
const REASON_NOT_IN_ALLOWLIST: &str = "record-not-in-grant-allowlist";

/// How a module's records are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Goal,
    Note,
    Task,
    Event,
    Journal,
    Kontext,
    Profile,
}

/// One registry entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resolver {
    /// The module key (also the metric label).
    pub module: &'static str,
    /// The sync channel (`sync_changes.app_id`) the records live in.
    pub app_id: &'static str,
    /// Whether reading needs a key grant.
    pub encrypted: bool,
    pub format: Format,
}

/// The resolver registry (data-model §8). `todo` is an alias of `tasks`.
pub(crate) fn resolver_for(module: &str) -> Option<Resolver> {
    let (module, app_id, encrypted, format) = match module {
        "goals" => ("goals", "companion", false, Format::Goal),
        "notes" => ("notes", "notes", true, Format::Note),
        "tasks" => ("tasks", "todo", true, Format::Task),
        "todo" => ("todo", "todo", true, Format::Task),
        "calendar" => ("calendar", "calendar", true, Format::Event),
        "journal" => ("journal", "journal", true, Format::Journal),
        "kontext" => ("kontext", "kontext", true, Format::Kontext),
        "profile" => ("profile", "profile", true, Format::Profile),
        _ => return None,
    };
    Some(Resolver {
        module,
        app_id,
        encrypted,
        format,
    })
}

/// Bounded `table` metric label: the tables the webapp links, else `other` (the table
/// name comes from user data and must not mint label values).
pub(crate) fn table_label(table: &str) -> &'static str {
    match table {
        "notes" => "notes",
        "tasks" => "tasks",
        "events" => "events",
        "journalEntries" => "journalEntries",
        "kontextDoc" => "kontextDoc",
        "userContext" => "userContext",
        "companionGoals" => "companionGoals",
        _ => "other",
    }
}

/// The unwrapped grant of one mission: the MDK (wiped on drop) and the allowlist of
/// `"<table>:<id>"` entries. Deliberately neither `Debug` nor `Clone`.
struct GrantScope {
    key: MissionDataKey,
    allowlist: HashSet<String>,
}

/// Why one input produced nothing (logged and counted by the caller).
enum Dropped {
    /// Expected: no grant, record absent/deleted, out of scope, decrypt failed (audited).
    Quietly,
    /// The resolver failed; counted in `resolver_failures_total`.
    Failed(StoreError),
}

impl From<StoreError> for Dropped {
    fn from(e: StoreError) -> Self {
        Dropped::Failed(e)
    }
}

impl Shared {
    /// Resolves the mission's inputs. Never fails the mission: a failing resolver drops
    /// its input and is counted.
    pub(crate) async fn resolve_inputs(
        &self,
        due: &DueMission,
        mission: &MissionView,
        iteration_id: &str,
    ) -> Vec<ResolvedInput> {
        let needs_grant = mission
            .inputs
            .iter()
            .any(|r| resolver_for(&r.module).is_some_and(|res| res.encrypted));
        let scope = if needs_grant {
            self.open_grant(due, mission)
        } else {
            None
        };
        let scope_ref = scope.as_ref();
        // The futures are collected first: a stream over a closure that returns borrowing
        // futures trips the compiler's `Send` inference for the spawned mission task.
        let futures: Vec<_> = mission
            .inputs
            .iter()
            .map(|input| async move {
                let Some(resolver) = resolver_for(&input.module) else {
                    self.metrics
                        .resolver_failures_total
                        .with_label_values(&["unknown"])
                        .inc();
                    tracing::debug!(mission = %due.mission_id, "input with an unknown module skipped");
                    return None;
                };
                match self
                    .resolve_one(due, iteration_id, input, resolver, scope_ref)
                    .await
                {
                    Ok(v) => Some(v),
                    Err(Dropped::Quietly) => None,
                    Err(Dropped::Failed(e)) => {
                        self.metrics
                            .resolver_failures_total
                            .with_label_values(&[resolver.module])
                            .inc();
                        tracing::warn!(
                            mission = %due.mission_id,
                            module = resolver.module,
                            error = %e,
                            "input resolver failed; input dropped"
                        );
                        None
                    }
                }
            })
            .collect();
        let resolved: Vec<Option<ResolvedInput>> = futures::stream::iter(futures)
            .buffered(RESOLVE_CONCURRENCY)
            .collect()
            .await;
        // The MDK is wiped here, before planning starts.
        drop(scope);
        resolved.into_iter().flatten().collect()
    }

    /// Unwraps the mission's grant; `None` (counted, logged) when absent or unusable.
    fn open_grant(&self, due: &DueMission, mission: &MissionView) -> Option<GrantScope> {
        let grant = mission.grant.as_ref()?;
        match unwrap_grant(
            self.cfg.grant_key.as_deref(),
            grant,
            &due.mission_id,
            self.clock.now(),
        ) {
            Ok(key) => {
                let allowlist = grant
                    .pointer("/derivation/recordIds")
                    .and_then(Value::as_array)
                    .map(|ids| {
                        ids.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                Some(GrantScope { key, allowlist })
            }
            Err(failure) => {
                self.metrics
                    .grant_skips_total
                    .with_label_values(&[failure.as_str()])
                    .inc();
                tracing::warn!(
                    mission = %due.mission_id,
                    reason = failure.as_str(),
                    "mission grant unusable; encrypted inputs are skipped"
                );
                None
            }
        }
    }

    async fn resolve_one(
        &self,
        due: &DueMission,
        iteration_id: &str,
        input: &InputRef,
        resolver: Resolver,
        scope: Option<&GrantScope>,
    ) -> Result<ResolvedInput, Dropped> {
        if !resolver.encrypted {
            let record = self
                .store
                .replay_record(&due.user_id, resolver.app_id, &input.table, &input.id)
                .await?
                .ok_or(Dropped::Quietly)?;
            return Ok(format_input(resolver.format, input, &record));
        }
        let Some(scope) = scope else {
            return Err(Dropped::Quietly);
        };
        let label = table_label(&input.table);
        if !scope
            .allowlist
            .contains(&format!("{}:{}", input.table, input.id))
        {
            self.metrics
                .grant_scope_violations_total
                .with_label_values(&[label])
                .inc();
            tracing::warn!(
                mission = %due.mission_id,
                table = label,
                "input outside the grant allowlist refused"
            );
            self.store
                .write_decrypt_audit(
                    &due.user_id,
                    &audit_entry(
                        due,
                        iteration_id,
                        input,
                        AuditStatus::ScopeViolation,
                        Some(REASON_NOT_IN_ALLOWLIST),
                    ),
                )
                .await?;
            return Err(Dropped::Quietly);
        }
        let tx = self.store.begin_user(&due.user_id).await?;
        let Some(mut record) =
            replay_record_in(&tx, resolver.app_id, &input.table, &input.id).await?
        else {
            tx.commit().await?;
            return Err(Dropped::Quietly);
        };
        match decrypt_fields(&mut record, &scope.key) {
            Err(e) => {
                insert_decrypt_audit(
                    &tx,
                    &audit_entry(
                        due,
                        iteration_id,
                        input,
                        AuditStatus::Failed,
                        Some(e.reason()),
                    ),
                )
                .await?;
                tx.commit().await?;
                tracing::warn!(
                    mission = %due.mission_id,
                    table = label,
                    reason = e.reason(),
                    "input could not be decrypted; input dropped"
                );
                Err(Dropped::Quietly)
            }
            Ok(fields) => {
                insert_decrypt_audit(
                    &tx,
                    &audit_entry(due, iteration_id, input, AuditStatus::Ok, None),
                )
                .await?;
                // Committed before the plaintext is used: a crash after this point leaves
                // an `ok` row for a decrypt that happened, never a decrypt without a row.
                tx.commit().await?;
                if fields > 0 {
                    self.metrics
                        .decrypts_total
                        .with_label_values(&[label])
                        .inc_by(fields as u64);
                }
                Ok(format_input(resolver.format, input, &record))
            }
        }
    }
}

/// The audit row of one input of this run (every row carries the iteration id).
fn audit_entry<'a>(
    due: &'a DueMission,
    iteration_id: &'a str,
    input: &'a InputRef,
    status: AuditStatus,
    reason: Option<&'a str>,
) -> DecryptAuditEntry<'a> {
    DecryptAuditEntry {
        mission_id: &due.mission_id,
        iteration_id: Some(iteration_id),
        table_name: &input.table,
        record_id: &input.id,
        status,
        reason,
    }
}

/// Decrypts, in place, every top-level field holding an `enc:1:` value. Returns how many
/// fields were decrypted; on the first failure the whole record is unusable.
fn decrypt_fields(record: &mut Value, key: &MissionDataKey) -> Result<usize, DecryptError> {
    let Value::Object(map) = record else {
        return Ok(0);
    };
    let mut n = 0;
    for value in map.values_mut() {
        let plain = match value.as_str() {
            Some(s) if is_encrypted(s) => decrypt_value(s, key.expose())?,
            _ => continue,
        };
        *value = plain;
        n += 1;
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------
// Formatting (data-model §8). Lengths are counted in chars (the prompt module's unit).

/// Renders one resolved record for the prompt.
pub(crate) fn format_input(format: Format, input: &InputRef, record: &Value) -> ResolvedInput {
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
    fn registry_table() {
        let cases = [
            ("goals", "companion", false),
            ("notes", "notes", true),
            ("tasks", "todo", true),
            ("todo", "todo", true),
            ("calendar", "calendar", true),
            ("journal", "journal", true),
            ("kontext", "kontext", true),
            ("profile", "profile", true),
        ];
        for (module, app, encrypted) in cases {
            let r = resolver_for(module).unwrap();
            assert_eq!((r.module, r.app_id, r.encrypted), (module, app, encrypted));
        }
        for unknown in ["", "Notes", "news-research", "ai", "contacts"] {
            assert!(resolver_for(unknown).is_none(), "{unknown}");
        }
    }

    #[test]
    fn table_labels_are_bounded() {
        assert_eq!(table_label("notes"), "notes");
        assert_eq!(table_label("journalEntries"), "journalEntries");
        assert_eq!(table_label("a-user-chosen-table"), "other");
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
    fn decrypts_every_encrypted_top_level_field_and_counts_them() {
        let key = MissionDataKey::from_bytes([7u8; 32]);
        let enc = |v: Value| mana_ai_core::crypto::encrypt_value(&v, key.expose(), None).unwrap();
        let mut rec = json!({
            "id": "n1", "title": enc(json!("Geheim")), "content": enc(json!("Inhalt")),
            "pinned": true, "nested": {"inner": enc(json!("stays"))}
        });
        let nested_before = rec["nested"].clone();
        assert_eq!(decrypt_fields(&mut rec, &key).unwrap(), 2);
        assert_eq!(rec["title"], "Geheim");
        assert_eq!(rec["content"], "Inhalt");
        assert_eq!(rec["pinned"], true);
        assert_eq!(rec["nested"], nested_before);

        let mut plain = json!({"title": "offen"});
        assert_eq!(decrypt_fields(&mut plain, &key).unwrap(), 0);

        let other = MissionDataKey::from_bytes([8u8; 32]);
        let mut wrong = json!({"title": enc(json!("x"))});
        assert_eq!(
            decrypt_fields(&mut wrong, &other).unwrap_err().reason(),
            "ciphertext-tampered-or-wrong-key"
        );
        let mut malformed = json!({"title": "enc:1:nodot"});
        assert_eq!(
            decrypt_fields(&mut malformed, &key).unwrap_err().reason(),
            "ciphertext-malformed"
        );
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
