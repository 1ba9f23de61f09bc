//! Deep research: the mana-research job state machine of one due run (insert the row,
//! submit with an idempotency key, poll, finish or abandon) and the rendered answer.
//! A completed job's reported token usage (`result.answer.tokenUsage`) is booked against
//! the mission's agent in `token_usage`, once, right after the job is marked completed.

use mana_ai_core::prompt::ResolvedInput;
use mana_ai_core::records::{agent_id_or_default, MissionView};
use mana_ai_store::{DueMission, NewResearchJob, ResearchJob, ResearchJobState, StoreError};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{call_json, str_of, CallError};
use super::{
    encode_uri_component, idempotency_key, one_line, plain, research_input, truncate_utf16,
    Researcher, Trigger, DEEP_RESEARCH_PROVIDER, SOURCES_NOTE,
};
use crate::events::{self, Emit};

/// mana-research accepts queries of 1..4000 UTF-16 units.
const MAX_DEEP_QUERY_UNITS: usize = 4000;

/// One citation of a deep-research answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Citation {
    pub title: String,
    pub url: String,
    pub snippet: Option<String>,
}

/// The deep-research text; `None` when the answer is empty.
pub fn render_deep_research(query: &str, answer: &str, citations: &[Citation]) -> Option<String> {
    let answer = answer.trim();
    if answer.is_empty() {
        return None;
    }
    let mut lines = vec![
        format!("# Deep-Research: \"{query}\""),
        String::new(),
        answer.to_string(),
        String::new(),
    ];
    if !citations.is_empty() {
        lines.push("## Quellen".into());
        for c in citations {
            let mut line = format!("- [{}]({})", one_line(&c.title), one_line(&c.url));
            if let Some(s) = c.snippet.as_deref().map(one_line).filter(|s| !s.is_empty()) {
                line.push_str(" — ");
                line.push_str(&s);
            }
            lines.push(line);
        }
        lines.push(String::new());
    }
    lines.push("---".into());
    lines.push(SOURCES_NOTE.into());
    Some(lines.join("\n"))
}

/// The citations of a deep-research answer (entries without a URL are dropped; a missing
/// title becomes the URL).
fn citations_of(answer: &Value) -> Vec<Citation> {
    answer
        .get("citations")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| {
                    let url = str_of(c, "url").filter(|u| !u.trim().is_empty())?;
                    Some(Citation {
                        title: str_of(c, "title")
                            .filter(|t| !t.trim().is_empty())
                            .unwrap_or(url)
                            .to_string(),
                        url: url.to_string(),
                        snippet: str_of(c, "snippet").map(str::to_string),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The tokens a deep-research answer reports (`tokenUsage`): its total, else the sum of
/// its prompt/input and completion/output parts (camelCase or snake_case); 0 when absent.
pub fn reported_tokens(answer: &Value) -> u64 {
    let Some(usage) = answer.get("tokenUsage").filter(|u| u.is_object()) else {
        return 0;
    };
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| usage.get(*n).and_then(Value::as_u64))
            .unwrap_or(0)
    };
    let parts = field(&[
        "promptTokens",
        "prompt_tokens",
        "inputTokens",
        "input_tokens",
    ])
    .saturating_add(field(&[
        "completionTokens",
        "completion_tokens",
        "outputTokens",
        "output_tokens",
    ]));
    field(&["totalTokens", "total_tokens"]).max(parts)
}

/// `{"taskId", "status", "providerId"}` of a submit.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubmitReply {
    task_id: String,
    #[serde(default)]
    provider_id: Option<String>,
}

/// What deep research contributed to this run.
pub(super) enum Deep {
    /// A job for this run is still running: skip the mission this tick.
    Pending,
    /// The finished answer.
    Answered(ResolvedInput),
    /// Nothing (not asked for, failed, abandoned, empty): shallow research may run.
    Nothing,
}

impl Researcher {
    fn research_headers(&self, user_id: &str) -> Result<HeaderMap, CallError> {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(v) = self.cfg.service_key.header_value() {
            h.insert("x-service-key", v);
        }
        h.insert(
            "x-user-id",
            HeaderValue::from_str(user_id).map_err(|_| CallError::Client)?,
        );
        h.insert("x-app-id", HeaderValue::from_static("mana-ai"));
        Ok(h)
    }

    /// The deep-research state machine for this due run.
    pub(super) async fn deep_research(
        &self,
        due: &DueMission,
        mission: &MissionView,
    ) -> Result<Deep, StoreError> {
        let agent_id = agent_id_or_default(mission.agent_id.as_deref());
        let Some(base) = self.cfg.research_url.as_deref() else {
            return Ok(Deep::Nothing);
        };
        let (user, mid, due_at) = (&due.user_id, &due.mission_id, due.next_run_at);
        let query = plain(&mission.objective).trim();
        let mut job = self.store.research_job(user, mid).await?;
        if let Some(j) = &job {
            let same_run = j.due_at == Some(due_at);
            if j.state.is_terminal() && !same_run {
                // It answered an earlier due run; this run starts afresh.
                self.store.delete_research_job(user, mid).await?;
                job = None;
            } else if !j.state.is_terminal() && !same_run {
                // The schedule moved while the paid job ran: it answers this run now.
                self.store.research_job_rekey(user, mid, due_at).await?;
            }
        }
        let job = match job {
            Some(j) => j,
            None => {
                let trigger = Trigger::new(&self.cfg.deep_research_triggers, true);
                let asked =
                    trigger.matches(query) || trigger.matches(plain(&mission.concept_markdown));
                if !self.cfg.deep_research_enabled || !asked || query.is_empty() {
                    return Ok(Deep::Nothing);
                }
                let key = idempotency_key(user, mid, due_at).to_string();
                self.store
                    .insert_research_job(&NewResearchJob {
                        user_id: user,
                        mission_id: mid,
                        provider_id: DEEP_RESEARCH_PROVIDER,
                        due_at,
                        idempotency_key: &key,
                    })
                    .await?
            }
        };
        match job.state {
            ResearchJobState::Completed => Ok(job
                .result
                .map(|content| Deep::Answered(research_input("Deep Research", query, content)))
                .unwrap_or(Deep::Nothing)),
            ResearchJobState::Failed | ResearchJobState::Abandoned => Ok(Deep::Nothing),
            ResearchJobState::Submitting | ResearchJobState::Pending => {
                let age = self.clock.now() - job.submitted_at;
                let max_age = chrono::Duration::from_std(self.cfg.research_job_max_age)
                    .unwrap_or(chrono::Duration::MAX);
                if age > max_age {
                    return self.abandon(&job, "max-age").await;
                }
                if job.state == ResearchJobState::Submitting {
                    self.submit_job(base, &job, query).await
                } else {
                    self.poll_job(base, &job, query, agent_id).await
                }
            }
        }
    }

    async fn abandon(&self, job: &ResearchJob, reason: &'static str) -> Result<Deep, StoreError> {
        self.store
            .finish_research_job(
                &job.user_id,
                &job.mission_id,
                ResearchJobState::Abandoned,
                None,
            )
            .await?;
        events::ResearchJobAbandoned {
            mission_id: &job.mission_id,
            reason,
        }
        .emit(&self.metrics);
        Ok(Deep::Nothing)
    }

    /// One more failed attempt; abandons the job once the streak reaches the limit.
    async fn attempt_failed(
        &self,
        job: &ResearchJob,
        reason: &'static str,
    ) -> Result<Deep, StoreError> {
        let streak = self
            .store
            .research_job_polled(&job.user_id, &job.mission_id, false)
            .await?;
        if streak >= i32::try_from(self.cfg.research_max_poll_failures).unwrap_or(i32::MAX) {
            return self.abandon(job, reason).await;
        }
        Ok(Deep::Pending)
    }

    async fn submit_job(
        &self,
        base: &str,
        job: &ResearchJob,
        query: &str,
    ) -> Result<Deep, StoreError> {
        // The CHECK constraint guarantees a key on `submitting` rows.
        let key = job.idempotency_key.clone().unwrap_or_default();
        let url = format!("{base}/api/v1/internal/research/async");
        let body = json!({
            "query": truncate_utf16(query, MAX_DEEP_QUERY_UNITS),
            "provider": job.provider_id,
        });
        let reply = match self.research_headers(&job.user_id) {
            Ok(headers) => {
                call_json(
                    &self.http,
                    |c| {
                        c.post(&url)
                            .headers(headers)
                            .header("idempotency-key", key.as_str())
                            .json(&body)
                    },
                    self.cfg.research_timeouts.submit,
                    "research-submit",
                )
                .await
            }
            Err(e) => Err(e),
        };
        let parsed = reply.and_then(|v| {
            serde_json::from_value::<SubmitReply>(v)
                .ok()
                .filter(|r| !r.task_id.trim().is_empty())
                .ok_or(CallError::Invalid)
        });
        match parsed {
            Ok(r) => {
                let provider = r.provider_id.unwrap_or_else(|| job.provider_id.clone());
                self.store
                    .research_job_submitted(
                        &job.user_id,
                        &job.mission_id,
                        &key,
                        &r.task_id,
                        &provider,
                    )
                    .await?;
                events::ResearchJobSubmitted {
                    mission_id: &job.mission_id,
                    provider: &provider,
                }
                .emit(&self.metrics);
                Ok(Deep::Pending)
            }
            Err(e) if e.is_definitive() => {
                self.store
                    .finish_research_job(
                        &job.user_id,
                        &job.mission_id,
                        ResearchJobState::Failed,
                        None,
                    )
                    .await?;
                events::ResearchJobFinished {
                    provider: &job.provider_id,
                    completed: false,
                }
                .emit(&self.metrics);
                Ok(Deep::Nothing)
            }
            // Maybe accepted, maybe not: retry next tick with the same key.
            Err(_) => self.attempt_failed(job, "submit-failures").await,
        }
    }

    async fn poll_job(
        &self,
        base: &str,
        job: &ResearchJob,
        query: &str,
        agent_id: &str,
    ) -> Result<Deep, StoreError> {
        let url = format!(
            "{base}/api/v1/internal/research/async/{}",
            encode_uri_component(&job.task_id)
        );
        let reply = match self.research_headers(&job.user_id) {
            Ok(headers) => {
                call_json(
                    &self.http,
                    |c| c.get(&url).headers(headers),
                    self.cfg.research_timeouts.poll,
                    "research-poll",
                )
                .await
            }
            Err(e) => Err(e),
        };
        let Ok(reply) = reply else {
            return self.attempt_failed(job, "poll-failures").await;
        };
        let (user, mid) = (&job.user_id, &job.mission_id);
        let provider = job.provider_id.as_str();
        match str_of(&reply, "status") {
            Some("queued" | "running") => {
                self.store.research_job_polled(user, mid, true).await?;
                Ok(Deep::Pending)
            }
            Some("failed" | "cancelled") => {
                self.store
                    .finish_research_job(user, mid, ResearchJobState::Failed, None)
                    .await?;
                events::ResearchJobFinished {
                    provider,
                    completed: false,
                }
                .emit(&self.metrics);
                Ok(Deep::Nothing)
            }
            Some("completed") => {
                let answer = reply
                    .get("result")
                    .and_then(|r| r.get("answer"))
                    .unwrap_or(&Value::Null);
                let citations = citations_of(answer);
                let content =
                    render_deep_research(query, str_of(answer, "answer").unwrap_or(""), &citations);
                self.store
                    .finish_research_job(user, mid, ResearchJobState::Completed, content.as_deref())
                    .await?;
                self.book_research_tokens(job, agent_id, reported_tokens(answer))
                    .await;
                events::ResearchJobFinished {
                    provider,
                    completed: true,
                }
                .emit(&self.metrics);
                Ok(content
                    .map(|c| Deep::Answered(research_input("Deep Research", query, c)))
                    .unwrap_or(Deep::Nothing))
            }
            _ => self.attempt_failed(job, "poll-failures").await,
        }
    }
}

impl Researcher {
    /// Books a completed job's reported tokens against the agent (nothing for 0). A
    /// failure is logged: the job is already completed, so it is never booked twice.
    async fn book_research_tokens(&self, job: &ResearchJob, agent_id: &str, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let booked = self
            .store
            .settle_tokens(None, &job.user_id, agent_id, &job.mission_id, tokens)
            .await;
        match booked {
            Ok(()) => events::TokensUsed { agent_id, tokens }.emit(&self.metrics),
            Err(e) => tracing::warn!(error = %e, tokens, "could not book deep-research tokens"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_tokens_table() {
        let table = [
            (json!({}), 0),
            (json!({"tokenUsage": null}), 0),
            (json!({"tokenUsage": {"totalTokens": 900}}), 900),
            (
                json!({"tokenUsage": {"promptTokens": 100, "completionTokens": 50}}),
                150,
            ),
            (
                json!({"tokenUsage": {"input_tokens": 7, "output_tokens": 3}}),
                10,
            ),
            (
                json!({"tokenUsage": {"totalTokens": 5, "inputTokens": 7, "outputTokens": 3}}),
                10,
            ),
        ];
        for (answer, want) in table {
            assert_eq!(reported_tokens(&answer), want, "{answer}");
        }
    }

    #[test]
    fn deep_research_markdown_has_the_exact_shape() {
        let md = render_deep_research(
            "Q",
            "  Antwort\nzweite Zeile \n",
            &[
                Citation {
                    title: "T1".into(),
                    url: "https://1.example".into(),
                    snippet: Some("S1".into()),
                },
                Citation {
                    title: "T2".into(),
                    url: "https://2.example".into(),
                    snippet: None,
                },
            ],
        )
        .unwrap();
        assert_eq!(
            md,
            "# Deep-Research: \"Q\"\n\nAntwort\nzweite Zeile\n\n## Quellen\n\
             - [T1](https://1.example) — S1\n- [T2](https://2.example)\n\n---\n\
             Nutze diese Quellen fuer deinen Plan. Verwende nur URLs die oben stehen; erfinde keine."
        );
        assert_eq!(
            render_deep_research("Q", "A", &[]).unwrap(),
            format!("# Deep-Research: \"Q\"\n\nA\n\n---\n{SOURCES_NOTE}")
        );
        assert_eq!(render_deep_research("Q", " \n ", &[]), None);
    }
}
