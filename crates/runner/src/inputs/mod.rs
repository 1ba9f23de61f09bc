//! Input resolution for a mission run: the records a mission links (`mission.inputs`),
//! read from the event log and rendered for the prompt.
//!
//! * **Registry** ([`registry::resolver_for`]): module key → sync app id, whether the records are
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
//! keeps the order of `mission.inputs`. At most `max_inputs` (`MANA_AI_MAX_INPUTS`,
//! default [`crate::defaults::MAX_INPUTS`]) are resolved, the first ones in order; when a
//! mission links more, the rest are not read at all and one note input tells the model
//! how many were left out ([`TRUNCATED_INPUT_ID`]). The caller bounds the whole step by
//! the mission deadline. [`InputResolver`] owns the step; rendering lives
//! in [`format`], the registry in [`registry`]. Logs carry ids, table labels and reasons only —
//! never record contents, plaintext or key bytes. Metric labels come from bounded sets.

pub(crate) mod format;
pub(crate) mod registry;

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use mana_ai_core::crypto::{
    decrypt_value, is_encrypted, unwrap_grant, DecryptError, GrantPrivateKey, MissionDataKey,
};
use mana_ai_core::prompt::ResolvedInput;
use mana_ai_core::records::{InputRef, MissionView};
use mana_ai_store::audit::insert_decrypt_audit;
use mana_ai_store::records::replay_record_in;
use mana_ai_store::{AuditStatus, DecryptAuditEntry, DueMission, Store, StoreError};
use serde_json::Value;

use crate::events::{self, Emit};
use crate::{Clock, Metrics};
use format::{format_input, PlainRecord};
use registry::{resolver_for, table_label, Resolver};

/// How many inputs of one mission resolve at the same time (each holds a connection).
pub(crate) const RESOLVE_CONCURRENCY: usize = 4;

/// Id of the note input that says how many linked inputs were left out.
pub const TRUNCATED_INPUT_ID: &str = "__inputs-truncated__";

/// Audit reason of a record outside the grant's allowlist.
const REASON_NOT_IN_ALLOWLIST: &str = "record-not-in-grant-allowlist";

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

/// The input step of a mission run.
pub(crate) struct InputResolver {
    store: Store,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    /// The service's key for unwrapping mission grants; `None`: encrypted inputs skipped.
    grant_key: Option<Arc<GrantPrivateKey>>,
}

/// The run an input belongs to (for logs and audit rows).
#[derive(Clone, Copy)]
struct RunRef<'a> {
    due: &'a DueMission,
    iteration_id: &'a str,
}

impl InputResolver {
    pub(crate) fn new(
        store: Store,
        metrics: Metrics,
        clock: Arc<dyn Clock>,
        grant_key: Option<Arc<GrantPrivateKey>>,
    ) -> Self {
        Self {
            store,
            metrics,
            clock,
            grant_key,
        }
    }

    /// Resolves the mission's first `max_inputs` inputs (plus a note when some were left
    /// out). Never fails the mission: a failing resolver drops its input and is counted.
    pub(crate) async fn resolve(
        &self,
        due: &DueMission,
        mission: &MissionView,
        iteration_id: &str,
        max_inputs: usize,
    ) -> Vec<ResolvedInput> {
        let kept = &mission.inputs[..mission.inputs.len().min(max_inputs)];
        let needs_grant = kept
            .iter()
            .any(|r| resolver_for(&r.module).is_some_and(|res| res.encrypted));
        let scope = if needs_grant {
            self.open_grant(due, mission)
        } else {
            None
        };
        let scope_ref = scope.as_ref();
        let run = RunRef { due, iteration_id };
        // The futures are collected first: a stream over a closure that returns borrowing
        // futures trips the compiler's `Send` inference for the spawned mission task.
        let futures: Vec<_> = kept
            .iter()
            .map(|input| self.resolve_counted(run, input, scope_ref))
            .collect();
        let resolved: Vec<Option<ResolvedInput>> = futures::stream::iter(futures)
            .buffered(RESOLVE_CONCURRENCY)
            .collect()
            .await;
        // The MDK is wiped here, before planning starts.
        drop(scope);
        let mut inputs: Vec<ResolvedInput> = resolved.into_iter().flatten().collect();
        let left_out = mission.inputs.len() - kept.len();
        if left_out > 0 {
            tracing::warn!(
                mission = %due.mission_id,
                linked = mission.inputs.len(),
                max_inputs,
                "mission links more inputs than resolved per run; the rest are left out"
            );
            inputs.push(truncation_note(mission.inputs.len(), kept.len()));
        }
        inputs
    }

    /// One input; a dropped input is `None` (counted and logged when a resolver failed).
    async fn resolve_counted(
        &self,
        run: RunRef<'_>,
        input: &InputRef,
        scope: Option<&GrantScope>,
    ) -> Option<ResolvedInput> {
        let mission_id = run.due.mission_id.as_str();
        let Some(resolver) = resolver_for(&input.module) else {
            events::UnknownInputModule { mission_id }.emit(&self.metrics);
            return None;
        };
        match self.resolve_one(run, input, resolver, scope).await {
            Ok(v) => Some(v),
            Err(Dropped::Quietly) => None,
            Err(Dropped::Failed(e)) => {
                events::ResolverFailed {
                    mission_id,
                    module: resolver.module,
                    error: &e,
                }
                .emit(&self.metrics);
                None
            }
        }
    }

    /// Unwraps the mission's grant; `None` (counted, logged) when absent or unusable.
    fn open_grant(&self, due: &DueMission, mission: &MissionView) -> Option<GrantScope> {
        let grant = mission.grant.as_ref()?;
        match unwrap_grant(
            self.grant_key.as_deref(),
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
                events::GrantUnusable {
                    mission_id: &due.mission_id,
                    reason: failure.as_str(),
                }
                .emit(&self.metrics);
                None
            }
        }
    }

    async fn resolve_one(
        &self,
        run: RunRef<'_>,
        input: &InputRef,
        resolver: Resolver,
        scope: Option<&GrantScope>,
    ) -> Result<ResolvedInput, Dropped> {
        if !resolver.encrypted {
            let record = self
                .store
                .replay_record(&run.due.user_id, resolver.app_id, &input.table, &input.id)
                .await?
                .ok_or(Dropped::Quietly)?;
            return Ok(format_input(resolver.format, input, &record));
        }
        let Some(scope) = scope else {
            return Err(Dropped::Quietly);
        };
        if !scope
            .allowlist
            .contains(&format!("{}:{}", input.table, input.id))
        {
            return self.refuse_out_of_scope(run, input).await;
        }
        self.decrypt_audited(run, input, resolver, &scope.key).await
    }

    /// An input outside the grant's allowlist: counted, logged and audited, then dropped.
    async fn refuse_out_of_scope(
        &self,
        run: RunRef<'_>,
        input: &InputRef,
    ) -> Result<ResolvedInput, Dropped> {
        events::GrantScopeViolation {
            mission_id: &run.due.mission_id,
            table: table_label(&input.table),
        }
        .emit(&self.metrics);
        self.store
            .write_decrypt_audit(
                &run.due.user_id,
                &audit_entry(
                    run,
                    input,
                    AuditStatus::ScopeViolation,
                    Some(REASON_NOT_IN_ALLOWLIST),
                ),
            )
            .await?;
        Err(Dropped::Quietly)
    }

    /// Replays and decrypts one encrypted input; the audit row is committed in the same
    /// transaction *before* the plaintext is used.
    async fn decrypt_audited(
        &self,
        run: RunRef<'_>,
        input: &InputRef,
        resolver: Resolver,
        key: &MissionDataKey,
    ) -> Result<ResolvedInput, Dropped> {
        let label = table_label(&input.table);
        let tx = self.store.begin_user(&run.due.user_id).await?;
        let Some(record) = replay_record_in(&tx, resolver.app_id, &input.table, &input.id).await?
        else {
            tx.commit().await?;
            return Err(Dropped::Quietly);
        };
        // Wiped on drop, whichever way this function returns.
        let mut record = PlainRecord::new(record);
        match decrypt_fields(record.value_mut(), key) {
            Err(e) => {
                insert_decrypt_audit(
                    &tx,
                    &audit_entry(run, input, AuditStatus::Failed, Some(e.reason())),
                )
                .await?;
                tx.commit().await?;
                events::DecryptFailed {
                    mission_id: &run.due.mission_id,
                    table: label,
                    reason: e.reason(),
                }
                .emit(&self.metrics);
                Err(Dropped::Quietly)
            }
            Ok(fields) => {
                insert_decrypt_audit(&tx, &audit_entry(run, input, AuditStatus::Ok, None)).await?;
                // Committed before the plaintext is used: a crash after this point leaves
                // an `ok` row for a decrypt that happened, never a decrypt without a row.
                tx.commit().await?;
                events::FieldsDecrypted {
                    table: label,
                    fields,
                }
                .emit(&self.metrics);
                Ok(format_input(resolver.format, input, record.value()))
            }
        }
    }
}

/// The note input that tells the model some linked inputs were left out.
fn truncation_note(linked: usize, kept: usize) -> ResolvedInput {
    ResolvedInput {
        id: TRUNCATED_INPUT_ID.into(),
        module: "mana-ai".into(),
        table: "note".into(),
        title: Some("Hinweis: nicht alle Eingaben geladen".into()),
        content: format!(
            "Diese Mission verknuepft {linked} Eingaben; geladen wurden nur die ersten {kept}. \
             Die uebrigen {} fehlen in diesem Lauf.",
            linked - kept
        ),
    }
}

/// The audit row of one input of this run (every row carries the iteration id).
fn audit_entry<'a>(
    run: RunRef<'a>,
    input: &'a InputRef,
    status: AuditStatus,
    reason: Option<&'a str>,
) -> DecryptAuditEntry<'a> {
    DecryptAuditEntry {
        mission_id: &run.due.mission_id,
        iteration_id: Some(run.iteration_id),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_truncation_note_counts_what_was_left_out() {
        let note = truncation_note(20_000, 100);
        assert_eq!(note.id, TRUNCATED_INPUT_ID);
        assert!(note.content.contains("20000 Eingaben"), "{}", note.content);
        assert!(note.content.contains("ersten 100"), "{}", note.content);
        assert!(note.content.contains("uebrigen 19900"), "{}", note.content);
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
}
