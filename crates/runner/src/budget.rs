//! The budgeted LLM client every planning call of a run goes through (compaction calls
//! included): it bounds each call's completion (`max_tokens`), reserves an estimate
//! against the agent's `maxTokensPerDay` before every *attempt*, books each attempt's
//! usage afterwards, times the call and counts `tokens_used_total{agent_id}`.
//!
//! **Bound.** Every request carries `max_tokens` = the configured completion bound
//! (`MANA_AI_MAX_COMPLETION_TOKENS`, default [`defaults::MAX_COMPLETION_TOKENS`]), or the
//! request's own when smaller.
//!
//! **Estimate.** `ceil(prompt chars / 4) + max_tokens`, where the prompt chars are those
//! of every message text, tool-call name and argument string, and the JSON of the offered
//! tool specs (providers bill those as prompt tokens too).
//!
//! **Booking, per attempt.** The HTTP client retries inside one call; it reports every
//! attempt ([`AttemptMeter`]), and each attempt reserves and books on its own: the
//! provider's reported usage (total, or prompt + completion when larger); with no usage,
//! the estimate when the provider may have billed the attempt (a timeout, a 2xx body that
//! broke off or could not be used), else 0 (a rejected or unreachable request is not
//! billed). A call cut off by the mission deadline books its estimate through
//! [`BudgetedLlm::finish`]; a run that is cancelled or panics drops the client, whose
//! `Drop` books what is still reserved (on a spawned task) instead of leaving it to
//! expire.
//!
//! **Refusal.** When a reservation is denied the attempt is not made and the call
//! answers [`LlmError::BudgetExhausted`]; the planner ends the run with what it has.
//! When the budget store itself fails, the call never returns: the typed [`StoreError`]
//! is handed to [`BudgetedLlm::store_failure`], which the mission run awaits next to the
//! planning loop, so the run ends as an internal error (the loop is dropped).
//!
//! Agents without a cap reserve nothing; their usage is still booked per attempt.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument;

use mana_ai_core::chat::{
    AttemptCharge, AttemptMeter, ChatRequest, ChatResponse, LlmClient, LlmError,
};
use mana_ai_core::plan::compact::tokens_for_chars;
use mana_ai_store::{Reservation, ReserveRequest, Store, StoreError};
use tokio::sync::Notify;

use crate::events::{self, Emit};
use crate::sync::lock;
use crate::{defaults, Metrics};

/// Estimated tokens of one call: `ceil(prompt chars / 4)` plus the request's
/// `max_tokens` ([`defaults::MAX_COMPLETION_TOKENS`] when it sets none).
pub fn estimate_call_tokens(request: &ChatRequest) -> u64 {
    estimate_with_tool_chars(request, None)
}

/// [`estimate_call_tokens`], with the tool specs' JSON length already known when
/// `known` holds the very list the request carries (same `Arc`).
fn estimate_with_tool_chars(request: &ChatRequest, known: Option<&KnownTools>) -> u64 {
    let mut chars = 0usize;
    for m in &request.messages {
        chars += m.content.as_deref().map_or(0, |c| c.chars().count());
        for call in &m.tool_calls {
            chars += call.name.chars().count() + call.arguments.chars().count();
        }
    }
    match known {
        Some(k) if Arc::ptr_eq(&k.specs, &request.tools) => chars += k.json_chars,
        _ => {
            for tool in request.tools.iter() {
                chars += tool.to_string().chars().count();
            }
        }
    }
    let bound = request
        .max_tokens
        .unwrap_or(defaults::MAX_COMPLETION_TOKENS);
    tokens_for_chars(chars) + u64::from(bound)
}

/// A tool list whose JSON length was measured once (see [`BudgetedLlm::with_known_tools`]).
struct KnownTools {
    specs: Arc<[serde_json::Value]>,
    json_chars: usize,
}

/// Whom a run's calls are booked to, and under which cap.
#[derive(Debug, Clone)]
pub struct BudgetScope {
    pub user_id: String,
    pub agent_id: String,
    pub mission_id: String,
    /// `maxTokensPerDay`; `None` = unlimited (nothing reserved).
    pub cap: Option<u64>,
    /// Lifetime of an unsettled reservation (at least the mission deadline).
    pub reservation_ttl: Duration,
    /// `max_tokens` of every call (`MANA_AI_MAX_COMPLETION_TOKENS`).
    pub max_completion_tokens: u32,
}

/// An [`LlmClient`] that enforces one agent's token budget for one run.
pub struct BudgetedLlm<'a> {
    inner: &'a dyn LlmClient,
    store: &'a Store,
    metrics: &'a Metrics,
    scope: BudgetScope,
    /// Reservations whose call has not been settled yet.
    outstanding: Mutex<Vec<i64>>,
    spent: AtomicU64,
    /// The budget-store failure that stopped a call, until [`Self::store_failure`] takes it.
    store_error: Mutex<Option<StoreError>>,
    store_failed: Notify,
    known_tools: Option<KnownTools>,
}

impl<'a> BudgetedLlm<'a> {
    pub fn new(
        inner: &'a dyn LlmClient,
        store: &'a Store,
        metrics: &'a Metrics,
        scope: BudgetScope,
    ) -> Self {
        Self {
            inner,
            store,
            metrics,
            scope,
            outstanding: Mutex::new(Vec::new()),
            spent: AtomicU64::new(0),
            store_error: Mutex::new(None),
            store_failed: Notify::new(),
            known_tools: None,
        }
    }

    /// Declares that `json_chars` is the JSON length of `specs` (what
    /// [`estimate_call_tokens`] would count), so requests carrying this very list (same
    /// `Arc`) are estimated without serialising it again. Other lists are measured.
    pub fn with_known_tools(mut self, specs: Arc<[serde_json::Value]>, json_chars: usize) -> Self {
        self.known_tools = Some(KnownTools { specs, json_chars });
        self
    }

    /// Tokens booked for this run so far.
    pub fn spent(&self) -> u64 {
        self.spent.load(Ordering::SeqCst)
    }

    /// Resolves with the budget-store failure that stopped a call (that call never
    /// returns). Await it next to the planning loop and drop the loop when it resolves.
    pub async fn store_failure(&self) -> StoreError {
        loop {
            self.store_failed.notified().await;
            if let Some(e) = lock(&self.store_error).take() {
                return e;
            }
        }
    }

    /// Books reservations left behind by calls that never returned (cancelled by the
    /// mission deadline) at their estimate. Call once after the planning loop; a client
    /// dropped without it (cancelled or panicking run) does the same from `Drop`.
    pub async fn finish(&self) {
        let left: Vec<i64> = std::mem::take(&mut *lock(&self.outstanding));
        let booked = book_abandoned(self.store, self.metrics, &self.scope.agent_id, left).await;
        self.spent.fetch_add(booked, Ordering::SeqCst);
    }

    fn count(&self, tokens: u64) {
        if tokens > 0 {
            self.spent.fetch_add(tokens, Ordering::SeqCst);
        }
        events::TokensUsed {
            agent_id: &self.scope.agent_id,
            tokens,
        }
        .emit(self.metrics);
    }

    async fn reserve(&self, estimate: u64) -> Result<Option<i64>, LlmError> {
        let Some(cap) = self.scope.cap else {
            return Ok(None);
        };
        let req = ReserveRequest {
            user_id: &self.scope.user_id,
            agent_id: &self.scope.agent_id,
            mission_id: &self.scope.mission_id,
            cap,
            estimate,
            ttl: self.scope.reservation_ttl,
        };
        match self.store.reserve_tokens(&req).await {
            Ok(Reservation::Granted { id }) => {
                lock(&self.outstanding).push(id);
                Ok(Some(id))
            }
            Ok(Reservation::Denied { committed }) => {
                events::BudgetExhausted {
                    agent_id: &self.scope.agent_id,
                    mission_id: &self.scope.mission_id,
                    committed,
                    cap,
                }
                .emit(self.metrics);
                Err(LlmError::BudgetExhausted)
            }
            Err(e) => {
                tracing::error!(error = %e, "token reservation failed; call not made");
                *lock(&self.store_error) = Some(e);
                self.store_failed.notify_one();
                // The run ends through `store_failure`; this call never answers.
                std::future::pending().await
            }
        }
    }

    /// Tokens to book for one attempt (see the module doc).
    fn charge_tokens(charge: &AttemptCharge, estimate: u64) -> u64 {
        match charge.usage {
            Some(usage) => usage.normalised().total_tokens,
            None if charge.maybe_billed => estimate,
            None => 0,
        }
    }

    async fn settle(&self, reservation: Option<i64>, tokens: u64) {
        let settled = self
            .store
            .settle_tokens(
                reservation,
                &self.scope.user_id,
                &self.scope.agent_id,
                &self.scope.mission_id,
                tokens,
            )
            .await;
        match settled {
            Ok(()) => {
                if let Some(id) = reservation {
                    lock(&self.outstanding).retain(|r| *r != id);
                }
                self.count(tokens);
            }
            Err(e) => {
                // The reservation (if any) keeps holding the budget until it expires.
                tracing::error!(error = %e, tokens, "could not book token usage");
            }
        }
    }
}

impl Drop for BudgetedLlm<'_> {
    /// A run cancelled mid-call (pass dropped at shutdown) or unwinding from a panic
    /// books its outstanding reservations at their estimate on a spawned task.
    fn drop(&mut self) {
        let left: Vec<i64> = std::mem::take(&mut *lock(&self.outstanding));
        if left.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                reservations = left.len(),
                "no runtime to book abandoned reservations; they expire on their own"
            );
            return;
        };
        let (store, metrics) = (self.store.clone(), self.metrics.clone());
        let agent_id = self.scope.agent_id.clone();
        runtime.spawn(async move {
            book_abandoned(&store, &metrics, &agent_id, left).await;
        });
    }
}

/// Books abandoned reservations at their reserved amount, counts them and answers the
/// tokens booked.
async fn book_abandoned(store: &Store, metrics: &Metrics, agent_id: &str, left: Vec<i64>) -> u64 {
    let mut booked = 0;
    for id in left {
        match store.book_abandoned_reservation(id).await {
            Ok(tokens) => {
                booked += tokens;
                events::TokensUsed { agent_id, tokens }.emit(metrics);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not book an abandoned reservation; it expires on its own");
            }
        }
    }
    booked
}

/// One call's meter: each attempt reserves the call's estimate and books its charge.
struct CallMeter<'c, 'a> {
    llm: &'c BudgetedLlm<'a>,
    estimate: u64,
    /// The current attempt's reservation (`None`: uncapped agent or none yet).
    reservation: Mutex<Option<i64>>,
}

#[async_trait::async_trait]
impl AttemptMeter for CallMeter<'_, '_> {
    async fn before_attempt(&self, _attempt: u32) -> Result<(), LlmError> {
        let reservation = self.llm.reserve(self.estimate).await?;
        *lock(&self.reservation) = reservation;
        Ok(())
    }

    async fn after_attempt(&self, charge: AttemptCharge) {
        let reservation = lock(&self.reservation).take();
        if let Some(kind) = charge.error_kind {
            self.llm
                .metrics
                .llm_attempt_failures_total
                .with_label_values(&[kind])
                .inc();
        }
        let tokens = BudgetedLlm::charge_tokens(&charge, self.estimate);
        self.llm.settle(reservation, tokens).await;
    }
}

#[async_trait::async_trait]
impl LlmClient for BudgetedLlm<'_> {
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let bound = self.scope.max_completion_tokens;
        let bounded;
        let request = if request.max_tokens.is_some_and(|m| m <= bound) {
            request
        } else {
            bounded = ChatRequest {
                max_tokens: Some(bound),
                ..request.clone()
            };
            &bounded
        };
        let meter = CallMeter {
            llm: self,
            estimate: estimate_with_tool_chars(request, self.known_tools.as_ref()),
            reservation: Mutex::new(None),
        };
        let started = Instant::now();
        let span = tracing::info_span!(
            "llm.call",
            "llm.model" = request.model.as_deref().unwrap_or("(client default)"),
            "llm.tokens.prompt" = tracing::field::Empty,
            "llm.tokens.completion" = tracing::field::Empty,
            "llm.tokens.total" = tracing::field::Empty,
        );
        let result = self
            .inner
            .complete_metered(request, &meter)
            .instrument(span.clone())
            .await;
        if let Ok(r) = &result {
            let usage = r.usage.normalised();
            span.record("llm.tokens.prompt", usage.prompt_tokens);
            span.record("llm.tokens.completion", usage.completion_tokens);
            span.record("llm.tokens.total", usage.total_tokens);
        }
        events::LlmCallTimed {
            elapsed: started.elapsed(),
        }
        .emit(self.metrics);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mana_ai_core::chat::{ChatMessage, ToolCall};
    use serde_json::json;

    fn request(messages: Vec<ChatMessage>, tools: Vec<serde_json::Value>) -> ChatRequest {
        ChatRequest {
            model: None,
            messages,
            tools: tools.into(),
            temperature: None,
            max_tokens: None,
        }
    }

    #[test]
    fn estimate_table() {
        let tool = json!({"type": "function"});
        let tool_chars = tool.to_string().chars().count() as u64; // 19
        let cases: Vec<(ChatRequest, u64)> = vec![
            (
                request(vec![], vec![]),
                u64::from(defaults::MAX_COMPLETION_TOKENS),
            ),
            (
                request(vec![ChatMessage::user("abcd")], vec![]),
                1 + u64::from(defaults::MAX_COMPLETION_TOKENS),
            ),
            (
                request(vec![ChatMessage::user("abcde")], vec![]),
                2 + u64::from(defaults::MAX_COMPLETION_TOKENS),
            ),
            // Characters, not bytes: four umlauts are one token.
            (
                request(vec![ChatMessage::system("äöüß")], vec![]),
                1 + u64::from(defaults::MAX_COMPLETION_TOKENS),
            ),
            (
                request(
                    vec![ChatMessage::assistant(
                        None,
                        vec![ToolCall {
                            id: "ignored-id".into(),
                            name: "ab".into(),
                            arguments: "{}".into(),
                        }],
                    )],
                    vec![],
                ),
                1 + u64::from(defaults::MAX_COMPLETION_TOKENS),
            ),
            (
                request(vec![], vec![tool]),
                tool_chars.div_ceil(4) + u64::from(defaults::MAX_COMPLETION_TOKENS),
            ),
        ];
        for (i, (req, want)) in cases.iter().enumerate() {
            assert_eq!(estimate_call_tokens(req), *want, "case {i}");
        }
    }

    #[test]
    fn known_tools_are_used_only_for_the_same_list() {
        let tools: Arc<[serde_json::Value]> =
            vec![json!({"type": "function", "function": {"name": "create_task"}})].into();
        let real: usize = tools.iter().map(|t| t.to_string().chars().count()).sum();
        let req = ChatRequest {
            model: None,
            messages: vec![ChatMessage::user("abcd")],
            tools: Arc::clone(&tools),
            temperature: None,
            max_tokens: None,
        };
        let measured = estimate_call_tokens(&req);
        let known = KnownTools {
            specs: Arc::clone(&tools),
            json_chars: real,
        };
        assert_eq!(estimate_with_tool_chars(&req, Some(&known)), measured);
        // A declared length is taken as is for the very same list ...
        let declared = KnownTools {
            specs: Arc::clone(&tools),
            json_chars: real + 400,
        };
        assert_eq!(
            estimate_with_tool_chars(&req, Some(&declared)),
            measured + 100
        );
        // ... and ignored for an equal but different list.
        let copy = ChatRequest {
            tools: tools.to_vec().into(),
            ..req.clone()
        };
        assert_eq!(estimate_with_tool_chars(&copy, Some(&declared)), measured);
    }
}
