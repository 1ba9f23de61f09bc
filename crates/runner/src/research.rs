//! Research before planning.
//!
//! * **Deep research** (mana-research): when enabled and the mission asks for it (strict
//!   trigger), a job is submitted and the mission is skipped (`Pending`) until a later
//!   tick finds it finished. A job answers exactly one due run (`due.next_run_at`): the
//!   row is written first (state `submitting`, idempotency key derived from mission and
//!   due run), then submitted with an `Idempotency-Key` header, so a crash or a second
//!   runner re-submits the *same* job. Finished jobs stay recorded for their due run, so
//!   a retried run never pays for a second job; the next due run may submit again. Jobs
//!   that get too old, or whose polls keep failing, are abandoned.
//! * **Shallow research** (mana-api news research): when deep research produced nothing
//!   and the mission mentions research words, feeds are discovered and searched, and the
//!   articles become one input. Every failure only drops the input (and is counted).
//!
//! Both results are untrusted text: they go into the inputs, which the prompt builder
//! wraps in delimited user-data blocks.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mana_ai_core::iso::to_iso_ms;
use mana_ai_core::prompt::{is_ciphertext, ResolvedInput};
use mana_ai_core::records::MissionView;
use mana_ai_store::{DueMission, NewResearchJob, ResearchJob, ResearchJobState, StoreError};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::Shared;

/// Words that ask for shallow research (matched at a word start, case-insensitively).
pub const DEFAULT_SHALLOW_TRIGGERS: &[&str] = &[
    "recherchier",
    "research",
    "news",
    "finde",
    "suche",
    "aktuelle",
    "neueste",
    "today",
    "history",
    "historisch",
    "on this day",
];

/// Phrases that ask for deep research (matched as whole words, case-insensitively).
pub const DEFAULT_DEEP_TRIGGERS: &[&str] = &[
    "deep research",
    "tiefe recherche",
    "umfassende recherche",
    "hintergrundrecherche",
    "deep dive",
];

/// The deep-research provider requested on submit.
pub const DEEP_RESEARCH_PROVIDER: &str = "gemini-deep-research-max";
/// Id, module and table of the injected research input.
pub const RESEARCH_INPUT_ID: &str = "__web-research__";
pub const RESEARCH_INPUT_MODULE: &str = "news-research";
pub const RESEARCH_INPUT_TABLE: &str = "web";
/// The closing line of both research texts.
pub const SOURCES_NOTE: &str =
    "Nutze diese Quellen fuer deinen Plan. Verwende nur URLs die oben stehen; erfinde keine.";

/// Largest response body read from a research service.
const MAX_BODY_BYTES: usize = 4 << 20;
/// mana-research accepts queries of 1..4000 UTF-16 units.
const MAX_DEEP_QUERY_UNITS: usize = 4000;
const TITLE_UNITS: usize = 60;

/// Whether planning may proceed after the research step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResearchGate {
    /// Plan now (research results, if any, were appended to the inputs).
    Proceed,
    /// A deep-research job for this due run is still pending: skip, do not fail.
    Pending,
}

/// `MANA_SERVICE_KEY`: kept in a zeroizing buffer, never printed.
#[derive(Clone, Default)]
pub struct ServiceKey(Zeroizing<String>);

impl ServiceKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(Zeroizing::new(key.into()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key as a header value, marked sensitive (never logged by the HTTP stack).
    fn header_value(&self) -> Option<HeaderValue> {
        let mut v = HeaderValue::from_str(&self.0).ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

impl fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("ServiceKey(empty)")
        } else {
            f.write_str("ServiceKey(set, hidden)")
        }
    }
}

/// Deadlines of the research calls (the original's values by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResearchTimeouts {
    pub discover: Duration,
    pub search: Duration,
    pub submit: Duration,
    pub poll: Duration,
}

impl Default for ResearchTimeouts {
    fn default() -> Self {
        Self {
            discover: Duration::from_secs(15),
            search: Duration::from_secs(30),
            submit: Duration::from_secs(30),
            poll: Duration::from_secs(15),
        }
    }
}

/// A list of trigger words/phrases, matched case-insensitively where a word starts
/// (not preceded by a letter, digit or `_`); `whole_word` also requires that the match
/// is not followed by one.
#[derive(Debug, Clone)]
pub struct Trigger {
    phrases: Vec<String>,
    whole_word: bool,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl Trigger {
    pub fn new<S: AsRef<str>>(phrases: &[S], whole_word: bool) -> Self {
        Self {
            phrases: phrases
                .iter()
                .map(|p| p.as_ref().trim().to_lowercase())
                .filter(|p| !p.is_empty())
                .collect(),
            whole_word,
        }
    }

    /// True when any phrase occurs in `text` at a word start.
    pub fn matches(&self, text: &str) -> bool {
        if self.phrases.is_empty() || text.is_empty() {
            return false;
        }
        let hay = text.to_lowercase();
        self.phrases.iter().any(|p| self.occurs(&hay, p))
    }

    fn occurs(&self, hay: &str, phrase: &str) -> bool {
        let mut from = 0;
        while let Some(pos) = hay[from..].find(phrase) {
            let start = from + pos;
            let end = start + phrase.len();
            let before_ok = hay[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !is_word_char(c));
            let after_ok =
                !self.whole_word || hay[end..].chars().next().is_none_or(|c| !is_word_char(c));
            if before_ok && after_ok {
                return true;
            }
            // Advance by one char (phrase is non-empty, so `start` is a char boundary).
            from = start + hay[start..].chars().next().map_or(1, char::len_utf8);
        }
        false
    }
}

/// The idempotency key of the deep-research job for one due run of one mission.
pub fn idempotency_key(user_id: &str, mission_id: &str, due_at: DateTime<Utc>) -> uuid::Uuid {
    // A fixed namespace for mana-ai research submits.
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6d61_6e61_2d61_692d_7265_7365_6172_6368);
    let name = format!("{user_id}\u{1f}{mission_id}\u{1f}{}", to_iso_ms(due_at));
    uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes())
}

/// The longest prefix of `s` of at most `max` UTF-16 code units (never splitting a char).
pub fn truncate_utf16(s: &str, max: usize) -> &str {
    let mut units = 0;
    for (i, c) in s.char_indices() {
        units += c.len_utf16();
        if units > max {
            return &s[..i];
        }
    }
    s
}

/// JavaScript's `encodeURIComponent`.
pub fn encode_uri_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Untrusted single-line values stay on one line, so the markdown keeps its shape.
fn one_line(s: &str) -> String {
    s.split(['\r', '\n', '\u{2028}', '\u{2029}'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// One article found by news research.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Article {
    pub title: String,
    pub url: String,
    pub excerpt: Option<String>,
    pub published_at: Option<String>,
}

/// One citation of a deep-research answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Citation {
    pub title: String,
    pub url: String,
    pub snippet: Option<String>,
}

/// The shallow-research text: heading, counts, one block per article, sources note.
pub fn render_web_research(query: &str, feeds: usize, articles: &[Article]) -> String {
    let mut lines = vec![
        format!("# Web-Research: \"{query}\""),
        String::new(),
        format!(
            "{feeds} Quellen durchsucht, {} relevante Artikel gefunden:",
            articles.len()
        ),
        String::new(),
    ];
    for a in articles {
        lines.push(format!("## {}", one_line(&a.title)));
        if let Some(e) = a.excerpt.as_deref().map(one_line).filter(|e| !e.is_empty()) {
            lines.push(format!("> {e}"));
        }
        lines.push(format!("URL: {}", one_line(&a.url)));
        if let Some(d) = a
            .published_at
            .as_deref()
            .map(one_line)
            .filter(|d| !d.is_empty())
        {
            lines.push(format!("Datum: {d}"));
        }
        lines.push(String::new());
    }
    lines.push("---".into());
    lines.push(SOURCES_NOTE.into());
    lines.join("\n")
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

fn research_input(title_prefix: &str, objective: &str, content: String) -> ResolvedInput {
    ResolvedInput {
        id: RESEARCH_INPUT_ID.into(),
        module: RESEARCH_INPUT_MODULE.into(),
        table: RESEARCH_INPUT_TABLE.into(),
        title: Some(format!(
            "{title_prefix}: \"{}\"",
            truncate_utf16(objective, TITLE_UNITS)
        )),
        content,
    }
}

/// Why a research call produced nothing (bounded metric label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallError {
    Timeout,
    Network,
    Unauthorized,
    Status(u16),
    Invalid,
    Client,
}

impl CallError {
    fn label(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Network => "network-error",
            Self::Unauthorized => "unauthorized",
            Self::Status(_) => "http-error",
            Self::Invalid => "invalid-response",
            Self::Client => "client-error",
        }
    }

    /// A rejection that a retry with the same request will not change.
    fn is_definitive(self) -> bool {
        match self {
            Self::Unauthorized | Self::Client => true,
            Self::Status(s) => (400..500).contains(&s) && !matches!(s, 408 | 409 | 425 | 429),
            _ => false,
        }
    }
}

/// The HTTP client shared by the research calls (no redirects: the service key must
/// never be forwarded to another host).
pub(crate) struct ResearchHttp {
    client: Option<reqwest::Client>,
}

impl ResearchHttp {
    pub(crate) fn new() -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("mana-ai")
            .build();
        match client {
            Ok(c) => Self { client: Some(c) },
            Err(e) => {
                tracing::error!(error = %e, "research HTTP client unavailable; research disabled");
                Self { client: None }
            }
        }
    }
}

/// Sends one request within `deadline` (connect, headers and body) and parses the JSON
/// body of a 2xx answer.
async fn call_json(
    http: &ResearchHttp,
    request: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
    deadline: Duration,
    what: &'static str,
) -> Result<Value, CallError> {
    let client = http.client.as_ref().ok_or(CallError::Client)?;
    let exchange = async {
        let mut resp = request(client).send().await.map_err(|e| {
            if e.is_timeout() {
                CallError::Timeout
            } else if e.is_builder() {
                CallError::Client
            } else {
                CallError::Network
            }
        })?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|_| CallError::Network)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(CallError::Invalid);
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let head: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            tracing::warn!(call = what, status = status.as_u16(), body = %head, "research call rejected");
            return Err(match status.as_u16() {
                401 | 403 => CallError::Unauthorized,
                s => CallError::Status(s),
            });
        }
        serde_json::from_slice::<Value>(&body).map_err(|_| CallError::Invalid)
    };
    match tokio::time::timeout(deadline, exchange).await {
        Ok(r) => {
            if let Err(e) = r {
                tracing::warn!(call = what, outcome = e.label(), "research call failed");
            }
            r
        }
        Err(_) => {
            tracing::warn!(call = what, "research call timed out");
            Err(CallError::Timeout)
        }
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// `{"taskId", "status", "providerId"}` of a submit.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubmitReply {
    task_id: String,
    #[serde(default)]
    provider_id: Option<String>,
}

/// Metric label for a provider id (bounded: unknown ids become `other`).
fn provider_label(p: &str) -> &'static str {
    match p {
        "gemini-deep-research-max" => "gemini-deep-research-max",
        "gemini-deep-research" => "gemini-deep-research",
        "openai-deep-research" => "openai-deep-research",
        _ => "other",
    }
}

/// What deep research contributed to this run.
enum Deep {
    /// A job for this run is still running: skip the mission this tick.
    Pending,
    /// The finished answer.
    Answered(ResolvedInput),
    /// Nothing (not asked for, failed, abandoned, empty): shallow research may run.
    Nothing,
}

/// A mission text the triggers may look at (ciphertext never matches).
fn plain(s: &str) -> &str {
    if is_ciphertext(s.trim()) {
        ""
    } else {
        s
    }
}

impl Shared {
    /// Runs deep research, then (when that gave nothing) shallow research; appends the
    /// result to `inputs`. `Pending` means: skip this mission this tick. Never fails the
    /// mission: a research failure only means planning without research.
    pub(crate) async fn research(
        &self,
        due: &DueMission,
        mission: &MissionView,
        inputs: &mut Vec<ResolvedInput>,
    ) -> ResearchGate {
        match self.deep_research(due, mission).await {
            Ok(Deep::Pending) => return ResearchGate::Pending,
            Ok(Deep::Answered(input)) => {
                inputs.push(input);
                return ResearchGate::Proceed;
            }
            Ok(Deep::Nothing) => {}
            Err(e) => {
                // Without the job row we cannot tell whether a paid job is running for
                // this run; skip rather than plan without it or submit twice.
                tracing::error!(mission = %due.mission_id, error = %e, "research job lookup failed; mission skipped this tick");
                return ResearchGate::Pending;
            }
        }
        let trigger = Trigger::new(&self.cfg.shallow_research_triggers, false);
        if trigger.matches(plain(&mission.objective))
            || trigger.matches(plain(&mission.concept_markdown))
        {
            if let Some(input) = self.shallow_research(due, mission).await {
                inputs.push(input);
            }
        }
        ResearchGate::Proceed
    }

    /// Once per tick: drops research jobs of missions that are deleted, paused,
    /// archived or gone. Unfinished ones count as abandoned.
    pub(crate) async fn research_housekeeping(&self) {
        match self.store.cleanup_research_jobs().await {
            Ok(removed) => {
                for r in removed.iter().filter(|r| !r.state.is_terminal()) {
                    tracing::info!(provider = %r.provider_id, "research job of an inactive mission abandoned");
                    self.metrics
                        .research_jobs_abandoned_total
                        .with_label_values(&["mission-inactive"])
                        .inc();
                }
            }
            Err(e) => tracing::warn!(error = %e, "research job cleanup failed"),
        }
    }

    async fn shallow_research(
        &self,
        due: &DueMission,
        mission: &MissionView,
    ) -> Option<ResolvedInput> {
        let base = self.cfg.news_api_url.as_deref()?;
        let query = plain(&mission.objective).trim();
        let outcome = if query.is_empty() {
            Err("no-query")
        } else {
            self.news_research(base, &due.user_id, query).await
        };
        let label = match &outcome {
            Ok(_) => "ok",
            Err(l) => l,
        };
        self.metrics
            .shallow_research_total
            .with_label_values(&[label])
            .inc();
        let content = outcome.ok()?;
        Some(research_input("Web-Research", query, content))
    }

    fn news_headers(&self, user_id: &str) -> Result<HeaderMap, &'static str> {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(name) = self.cfg.news_service_key_header.as_deref() {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| "invalid-config")?;
            if let Some(v) = self.cfg.service_key.header_value() {
                h.insert(name, v);
            }
        }
        if let Some(name) = self.cfg.news_user_id_header.as_deref() {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| "invalid-config")?;
            h.insert(
                name,
                HeaderValue::from_str(user_id).map_err(|_| "invalid-config")?,
            );
        }
        Ok(h)
    }

    /// Discover feeds, search them, render the markdown. `Err` is the metric outcome.
    async fn news_research(
        &self,
        base: &str,
        user_id: &str,
        query: &str,
    ) -> Result<String, &'static str> {
        let headers = self.news_headers(user_id)?;
        let t = self.cfg.research_timeouts;
        let body = json!({"query": query, "language": "de", "limit": 5});
        let url = format!("{base}/api/v1/news-research/discover");
        let discovered = call_json(
            &self.research_http,
            |c| c.post(&url).headers(headers.clone()).json(&body),
            t.discover,
            "news-discover",
        )
        .await
        .map_err(CallError::label)?;
        let feeds: Vec<&str> = discovered
            .get("feeds")
            .and_then(Value::as_array)
            .ok_or("invalid-response")?
            .iter()
            .filter_map(|f| str_of(f, "url"))
            .filter(|u| !u.trim().is_empty())
            .collect();
        if feeds.is_empty() {
            return Err("no-feeds");
        }
        let body = json!({"feeds": feeds, "query": query, "limit": 8});
        let url = format!("{base}/api/v1/news-research/search");
        let found = call_json(
            &self.research_http,
            |c| c.post(&url).headers(headers).json(&body),
            t.search,
            "news-search",
        )
        .await
        .map_err(CallError::label)?;
        let articles: Vec<Article> = found
            .get("articles")
            .and_then(Value::as_array)
            .ok_or("invalid-response")?
            .iter()
            .filter_map(|a| {
                let url = str_of(a, "url").filter(|u| !u.trim().is_empty())?;
                Some(Article {
                    title: str_of(a, "title")
                        .filter(|t| !t.trim().is_empty())
                        .unwrap_or(url)
                        .to_string(),
                    url: url.to_string(),
                    excerpt: str_of(a, "excerpt").map(str::to_string),
                    published_at: str_of(a, "publishedAt").map(str::to_string),
                })
            })
            .collect();
        if articles.is_empty() {
            return Err("no-articles");
        }
        Ok(render_web_research(query, feeds.len(), &articles))
    }

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
    async fn deep_research(
        &self,
        due: &DueMission,
        mission: &MissionView,
    ) -> Result<Deep, StoreError> {
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
                    self.poll_job(base, &job, query).await
                }
            }
        }
    }

    async fn abandon(&self, job: &ResearchJob, reason: &'static str) -> Result<Deep, StoreError> {
        tracing::warn!(mission = %job.mission_id, reason, "deep-research job abandoned; falling back to shallow research");
        self.store
            .finish_research_job(
                &job.user_id,
                &job.mission_id,
                ResearchJobState::Abandoned,
                None,
            )
            .await?;
        self.metrics
            .research_jobs_abandoned_total
            .with_label_values(&[reason])
            .inc();
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
                    &self.research_http,
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
                self.metrics
                    .research_jobs_submitted_total
                    .with_label_values(&[provider_label(&provider)])
                    .inc();
                tracing::info!(mission = %job.mission_id, provider = %provider, "deep-research job submitted");
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
                self.metrics
                    .research_jobs_failed_total
                    .with_label_values(&[provider_label(&job.provider_id)])
                    .inc();
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
    ) -> Result<Deep, StoreError> {
        let url = format!(
            "{base}/api/v1/internal/research/async/{}",
            encode_uri_component(&job.task_id)
        );
        let reply = match self.research_headers(&job.user_id) {
            Ok(headers) => {
                call_json(
                    &self.research_http,
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
        let provider = provider_label(&job.provider_id);
        match str_of(&reply, "status") {
            Some("queued" | "running") => {
                self.store.research_job_polled(user, mid, true).await?;
                Ok(Deep::Pending)
            }
            Some("failed" | "cancelled") => {
                self.store
                    .finish_research_job(user, mid, ResearchJobState::Failed, None)
                    .await?;
                self.metrics
                    .research_jobs_failed_total
                    .with_label_values(&[provider])
                    .inc();
                Ok(Deep::Nothing)
            }
            Some("completed") => {
                let answer = reply
                    .get("result")
                    .and_then(|r| r.get("answer"))
                    .unwrap_or(&Value::Null);
                let citations: Vec<Citation> = answer
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
                    .unwrap_or_default();
                let content =
                    render_deep_research(query, str_of(answer, "answer").unwrap_or(""), &citations);
                self.store
                    .finish_research_job(user, mid, ResearchJobState::Completed, content.as_deref())
                    .await?;
                self.metrics
                    .research_jobs_completed_total
                    .with_label_values(&[provider])
                    .inc();
                Ok(content
                    .map(|c| Deep::Answered(research_input("Deep Research", query, c)))
                    .unwrap_or(Deep::Nothing))
            }
            _ => self.attempt_failed(job, "poll-failures").await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shallow_trigger_matches_word_starts_case_insensitively() {
        let t = Trigger::new(DEFAULT_SHALLOW_TRIGGERS, false);
        for (text, want) in [
            ("Recherchiere Preise", true),
            ("RESEARCH the market", true),
            ("Daily news digest", true),
            ("Newsletter schreiben", true), // prefix match, as the original
            ("Finde ein Restaurant", true),
            ("Suche Wohnungen", true),
            ("die aktuellen Zahlen", true),
            ("what happened ON THIS DAY", true),
            ("Propose today's tasks", true),
            ("(history) lesson", true),
            ("Wochennews", false), // not at a word start
            ("Grußnews", false),   // non-ASCII letters are word chars too
            ("Plan the week", false),
            ("", false),
        ] {
            assert_eq!(t.matches(text), want, "{text:?}");
        }
    }

    #[test]
    fn deep_trigger_needs_whole_words() {
        let t = Trigger::new(DEFAULT_DEEP_TRIGGERS, true);
        for (text, want) in [
            ("Bitte Deep Research zu Wärmepumpen", true),
            ("tiefe Recherche: Mietrecht", true),
            ("Deep-Dive? nein: deep dive!", true),
            ("Hintergrundrecherche", true),
            ("deep diver training", false),
            ("deep researcher", false),
            ("umfassende recherchen", false),
            ("recherchiere", false),
        ] {
            assert_eq!(t.matches(text), want, "{text:?}");
        }
    }

    #[test]
    fn trigger_lists_are_configurable() {
        let t = Trigger::new(&["  Markt ", ""], false);
        assert!(t.matches("Marktanalyse"));
        assert!(!t.matches("news"));
        assert!(!Trigger::new::<&str>(&[], false).matches("news"));
    }

    #[test]
    fn web_research_markdown_has_the_exact_shape() {
        let md = render_web_research(
            "Solar",
            3,
            &[
                Article {
                    title: "A".into(),
                    url: "https://a.example/1".into(),
                    excerpt: Some("Kurz".into()),
                    published_at: Some("2026-01-02".into()),
                },
                Article {
                    title: "B\nzwei".into(),
                    url: "https://b.example".into(),
                    excerpt: None,
                    published_at: Some(String::new()),
                },
            ],
        );
        assert_eq!(
            md,
            "# Web-Research: \"Solar\"\n\n3 Quellen durchsucht, 2 relevante Artikel gefunden:\n\n\
             ## A\n> Kurz\nURL: https://a.example/1\nDatum: 2026-01-02\n\n\
             ## B zwei\nURL: https://b.example\n\n---\n\
             Nutze diese Quellen fuer deinen Plan. Verwende nur URLs die oben stehen; erfinde keine."
        );
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

    #[test]
    fn encode_uri_component_matches_javascript() {
        for (raw, enc) in [
            ("task-1_a.b~c", "task-1_a.b~c"),
            ("a/b?c=d&e", "a%2Fb%3Fc%3Dd%26e"),
            ("ä ö", "%C3%A4%20%C3%B6"),
            ("!*'()", "!*'()"),
        ] {
            assert_eq!(encode_uri_component(raw), enc, "{raw}");
        }
    }

    #[test]
    fn idempotency_key_is_per_mission_and_due_run() {
        let t1: DateTime<Utc> = "2026-01-05T06:00:00Z".parse().unwrap();
        let t2: DateTime<Utc> = "2026-01-05T07:00:00Z".parse().unwrap();
        let k = idempotency_key("u", "m", t1);
        assert_eq!(k, idempotency_key("u", "m", t1));
        assert_eq!(k.get_version_num(), 5);
        assert_ne!(k, idempotency_key("u", "m", t2));
        assert_ne!(k, idempotency_key("u", "m2", t1));
        assert_ne!(k, idempotency_key("u2", "m", t1));
    }

    #[test]
    fn service_key_never_prints() {
        let k = ServiceKey::new("very-secret");
        assert!(!format!("{k:?}").contains("very-secret"));
        assert!(k.header_value().unwrap().is_sensitive());
    }

    #[test]
    fn truncate_utf16_counts_units() {
        assert_eq!(truncate_utf16("abc", 2), "ab");
        assert_eq!(truncate_utf16("a😀b", 2), "a"); // the emoji is 2 units
        assert_eq!(truncate_utf16("a😀b", 3), "a😀");
        assert_eq!(truncate_utf16("äbc", 60), "äbc");
    }

    proptest! {
        #[test]
        fn truncate_utf16_is_the_longest_fitting_prefix(s in "\\PC{0,80}", n in 0usize..70) {
            let t = truncate_utf16(&s, n);
            prop_assert!(s.starts_with(t));
            prop_assert!(t.encode_utf16().count() <= n);
            if t.len() < s.len() {
                let next = s[t.len()..].chars().next().unwrap();
                prop_assert!(t.encode_utf16().count() + next.len_utf16() > n);
            }
        }

        #[test]
        fn trigger_ignores_ascii_case_and_needs_a_word_start(
            pre in "[a-z ]{0,8}", post in "[a-z ]{0,8}", upper in any::<bool>()
        ) {
            let t = Trigger::new(&["news"], false);
            let text = format!("{pre}news {post}");
            let text = if upper { text.to_uppercase() } else { text };
            let at_start = pre.is_empty() || pre.ends_with(' ');
            // Other occurrences may lie wholly inside `pre` or `post`.
            prop_assert_eq!(
                t.matches(&text),
                at_start || t.matches(&pre) || t.matches(&post)
            );
        }
    }
}
