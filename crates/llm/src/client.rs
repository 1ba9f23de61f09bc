//! [`HttpLlmClient`]: the OpenAI-compatible chat-completions client used by the tick.
//!
//! One call is up to `max_attempts` HTTP attempts. Each attempt has its own deadline that
//! covers the whole exchange (connect, headers and body); the optional overall deadline
//! bounds attempts and backoff sleeps together. Failures are mapped onto
//! [`LlmError`]; the bearer key is scrubbed from every error text.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use mana_ai_core::chat::{
    AttemptCharge, AttemptMeter, ChatRequest, ChatResponse, LlmClient, LlmError,
};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use zeroize::Zeroizing;

use crate::config::{AttemptHook, AttemptOutcome, AttemptReport, ConfigError, HttpLlmConfig};
use crate::{retry, wire};

/// Path appended to the base URL.
const COMPLETIONS_PATH: &str = "/v1/chat/completions";
/// `User-Agent` sent with every request.
const USER_AGENT: &str = concat!("mana-ai/", env!("CARGO_PKG_VERSION"));
/// How much of an error body is read (only its first 500 characters are kept).
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// How long an error body may take to arrive (within the attempt's deadline): a
/// trickling error page still ends as the provider error its status says.
const ERROR_BODY_WAIT: Duration = Duration::from_secs(2);
/// Replacement for the key wherever it shows up in an error text.
const REDACTED: &str = "[redacted]";

/// OpenAI-compatible HTTP client with deadlines, bounded retries and typed errors.
pub struct HttpLlmClient {
    http: reqwest::Client,
    endpoint: Url,
    /// `Bearer <key>`, marked sensitive so `http` never prints it.
    authorization: HeaderValue,
    /// Kept only to scrub the key out of provider-supplied error texts.
    key: Zeroizing<String>,
    default_model: String,
    temperature: f32,
    call_deadline: Duration,
    overall_deadline: Option<Duration>,
    max_attempts: u32,
    backoff_base: Duration,
    backoff_cap: Duration,
    max_response_bytes: usize,
    on_attempt: Option<AttemptHook>,
}

impl fmt::Debug for HttpLlmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpLlmClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("default_model", &self.default_model)
            .field("call_deadline", &self.call_deadline)
            .field("overall_deadline", &self.overall_deadline)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// A failed attempt with what the retry decision and the budget need.
struct AttemptFailure {
    error: LlmError,
    status: Option<u16>,
    retry_after: Option<Duration>,
    /// The provider may have produced (and billed) an answer: a timeout, or a 2xx whose
    /// body broke off or could not be used.
    maybe_billed: bool,
}

impl AttemptFailure {
    fn new(error: LlmError) -> Self {
        Self {
            error,
            status: None,
            retry_after: None,
            maybe_billed: false,
        }
    }

    fn outcome(&self) -> AttemptOutcome {
        match self.error {
            LlmError::Provider { .. } => AttemptOutcome::ProviderError,
            LlmError::Timeout(_) => AttemptOutcome::Timeout,
            LlmError::Transport(_) => AttemptOutcome::Transport,
            LlmError::InvalidResponse(_)
            | LlmError::ResponseTooLarge(_)
            | LlmError::Local(_)
            | LlmError::BudgetExhausted => AttemptOutcome::InvalidResponse,
        }
    }
}

impl HttpLlmClient {
    /// Validates the configuration and builds the pooled HTTP client. The key moves into
    /// a zeroizing buffer.
    pub fn new(cfg: HttpLlmConfig) -> Result<Self, ConfigError> {
        let key = Zeroizing::new(cfg.api_key);
        if key.is_empty() {
            return Err(ConfigError::InvalidApiKey);
        }
        let bearer = Zeroizing::new(format!("Bearer {}", key.as_str()));
        let mut authorization =
            HeaderValue::from_str(&bearer).map_err(|_| ConfigError::InvalidApiKey)?;
        authorization.set_sensitive(true);

        let endpoint = endpoint_url(&cfg.base_url)?;
        if cfg.max_attempts == 0 {
            return Err(ConfigError::InvalidSetting(
                "max_attempts must be at least 1",
            ));
        }
        if cfg.call_deadline.is_zero() {
            return Err(ConfigError::InvalidSetting(
                "call_deadline must be positive",
            ));
        }
        if cfg.overall_deadline.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::InvalidSetting(
                "overall_deadline must be positive when set",
            ));
        }
        if !cfg.temperature.is_finite() {
            return Err(ConfigError::InvalidSetting("temperature must be finite"));
        }
        if cfg.default_model.is_empty() {
            return Err(ConfigError::InvalidSetting(
                "default_model must not be empty",
            ));
        }
        if cfg.max_response_bytes == 0 {
            return Err(ConfigError::InvalidSetting(
                "max_response_bytes must be positive",
            ));
        }

        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            // A redirect would re-send the body and bearer key somewhere we did not choose.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| ConfigError::Http(error_chain(&e)))?;

        Ok(Self {
            http,
            endpoint,
            authorization,
            key,
            default_model: cfg.default_model,
            temperature: cfg.temperature,
            call_deadline: cfg.call_deadline,
            overall_deadline: cfg.overall_deadline,
            max_attempts: cfg.max_attempts,
            backoff_base: cfg.backoff_base,
            backoff_cap: cfg.backoff_cap,
            max_response_bytes: cfg.max_response_bytes,
            on_attempt: cfg.on_attempt,
        })
    }

    /// The full URL requests are posted to.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// One HTTP attempt bounded by `budget` (headers and body).
    /// On success, also returns the HTTP status.
    async fn attempt(
        &self,
        body: Vec<u8>,
        budget: Duration,
    ) -> Result<(ChatResponse, u16), AttemptFailure> {
        let exchange = async {
            let response = self
                .http
                .post(self.endpoint.clone())
                .header(CONTENT_TYPE, "application/json")
                .header(AUTHORIZATION, self.authorization.clone())
                .headers(trace_headers())
                .body(body)
                .send()
                .await
                .map_err(|e| AttemptFailure::new(self.transport_error(e)))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
            let fail = |error: LlmError| AttemptFailure {
                // A 2xx whose body failed: the provider may have billed it (not when the
                // body is an error object).
                maybe_billed: status.is_success() && !matches!(error, LlmError::Provider { .. }),
                error,
                status: Some(status.as_u16()),
                retry_after,
            };
            if status.is_success() {
                let (bytes, complete) = read_body(response, self.max_response_bytes)
                    .await
                    .map_err(|e| fail(self.transport_error(e)))?;
                if !complete {
                    return Err(fail(LlmError::ResponseTooLarge(self.max_response_bytes)));
                }
                wire::decode_response(&bytes)
                    .map(|response| (response, status.as_u16()))
                    .map_err(|e| fail(self.scrub(e)))
            } else {
                // A broken or trickling error body still leaves us the status: use what
                // arrived within a short wait.
                let bytes = read_body_lossy(response, ERROR_BODY_LIMIT, ERROR_BODY_WAIT).await;
                Err(fail(self.scrub(wire::decode_error(
                    status.as_u16(),
                    canonical_reason(status),
                    &bytes,
                ))))
            }
        };
        match tokio::time::timeout(budget, exchange).await {
            Ok(result) => result,
            Err(_) => Err(AttemptFailure {
                maybe_billed: true,
                ..AttemptFailure::new(LlmError::Timeout(duration_ms(budget)))
            }),
        }
    }

    /// A transport error without the endpoint's URL (error texts reach users as
    /// `errorDetails`; the provider's address is internal).
    fn transport_error(&self, error: reqwest::Error) -> LlmError {
        let error = error.without_url();
        let mut text = error_chain(&error);
        let endpoint = self.endpoint.as_str();
        if text.contains(endpoint) {
            text = text.replace(endpoint, "<llm>");
        }
        self.scrub(LlmError::Transport(format!(
            "POST {COMPLETIONS_PATH}: {text}"
        )))
    }

    /// Removes the key from every text an error carries.
    fn scrub(&self, error: LlmError) -> LlmError {
        let clean = |text: String| {
            if text.contains(self.key.as_str()) {
                text.replace(self.key.as_str(), REDACTED)
            } else {
                text
            }
        };
        match error {
            LlmError::Provider {
                status,
                kind,
                message,
            } => LlmError::Provider {
                status,
                kind: if kind.contains(self.key.as_str()) {
                    "unknown".to_owned()
                } else {
                    kind
                },
                message: clean(message),
            },
            LlmError::Transport(m) => LlmError::Transport(clean(m)),
            LlmError::InvalidResponse(m) => LlmError::InvalidResponse(clean(m)),
            LlmError::Local(m) => LlmError::Local(clean(m)),
            LlmError::Timeout(ms) => LlmError::Timeout(ms),
            LlmError::ResponseTooLarge(n) => LlmError::ResponseTooLarge(n),
            LlmError::BudgetExhausted => LlmError::BudgetExhausted,
        }
    }

    fn report(&self, report: AttemptReport) {
        tracing::debug!(
            attempt = report.attempt,
            status = report.status,
            duration_ms = duration_ms(report.duration),
            outcome = report.outcome.as_str(),
            will_retry = report.will_retry,
            "LLM attempt finished"
        );
        if let Some(hook) = &self.on_attempt {
            hook(&report);
        }
    }
}

/// The meter of plain [`LlmClient::complete`] calls: nothing to tell.
struct Unmetered;

#[async_trait::async_trait]
impl AttemptMeter for Unmetered {
    async fn before_attempt(&self, _attempt: u32) -> Result<(), LlmError> {
        Ok(())
    }
    async fn after_attempt(&self, _charge: AttemptCharge) {}
}

#[async_trait::async_trait]
impl LlmClient for HttpLlmClient {
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        self.complete_metered(request, &Unmetered).await
    }

    /// Up to `max_attempts` attempts; `meter` is asked before each one (a refusal ends
    /// the call with its error) and told what each cost.
    async fn complete_metered(
        &self,
        request: &ChatRequest,
        meter: &dyn AttemptMeter,
    ) -> Result<ChatResponse, LlmError> {
        let body = wire::encode_request(request, &self.default_model, self.temperature)
            // Unreachable in practice: the wire structs hold only strings, JSON values,
            // a finite float, integers and booleans, which always serialise.
            .map_err(|e| LlmError::InvalidResponse(format!("could not encode request: {e}")))?;
        let overall_end = self.overall_deadline.map(|d| Instant::now() + d);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            meter.before_attempt(attempt).await?;
            let mut budget = self.call_deadline;
            if let Some(end) = overall_end {
                budget = budget.min(end.saturating_duration_since(Instant::now()));
            }
            let started = Instant::now();
            let result = self.attempt(body.clone(), budget).await;
            let duration = started.elapsed();
            let failure = match result {
                Ok((response, status)) => {
                    self.report(AttemptReport {
                        attempt,
                        duration,
                        outcome: AttemptOutcome::Ok,
                        status: Some(status),
                        will_retry: false,
                    });
                    meter
                        .after_attempt(AttemptCharge {
                            attempt,
                            usage: Some(response.usage.normalised()),
                            maybe_billed: true,
                            error_kind: None,
                        })
                        .await;
                    return Ok(response);
                }
                Err(failure) => failure,
            };
            meter
                .after_attempt(AttemptCharge {
                    attempt,
                    usage: None,
                    maybe_billed: failure.maybe_billed,
                    error_kind: Some(failure.error.kind_label()),
                })
                .await;
            let Some(delay) = self.retry_delay(attempt, &failure, overall_end, duration) else {
                return Err(failure.error);
            };
            tokio::time::sleep(delay).await;
        }
    }
}

impl HttpLlmClient {
    /// Reports a failed attempt and answers the wait before the next one, or `None`
    /// when the call ends here (not retryable, attempts used up, or the overall
    /// deadline would pass during the wait).
    fn retry_delay(
        &self,
        attempt: u32,
        failure: &AttemptFailure,
        overall_end: Option<Instant>,
        duration: Duration,
    ) -> Option<Duration> {
        let delay = (attempt < self.max_attempts && retry::is_retryable(&failure.error))
            .then(|| {
                retry::next_delay(
                    attempt,
                    failure.retry_after,
                    self.backoff_base,
                    self.backoff_cap,
                    rand::random::<f64>(),
                )
            })
            .filter(|delay| overall_end.is_none_or(|end| Instant::now() + *delay < end));
        self.report(AttemptReport {
            attempt,
            duration,
            outcome: failure.outcome(),
            status: failure.status,
            will_retry: delay.is_some(),
        });
        match delay {
            None => tracing::warn!(
                attempts = attempt,
                kind = failure.error.kind_label(),
                status = failure.status,
                "LLM call failed"
            ),
            Some(delay) => tracing::warn!(
                attempt,
                kind = failure.error.kind_label(),
                status = failure.status,
                delay_ms = duration_ms(delay),
                "LLM attempt failed; retrying"
            ),
        }
        delay
    }
}

/// `<base without one trailing '/'>/v1/chat/completions`, checked to be plain http(s).
fn endpoint_url(base_url: &str) -> Result<Url, ConfigError> {
    let base = base_url.strip_suffix('/').unwrap_or(base_url);
    let parsed = Url::parse(base)
        .map_err(|e| ConfigError::InvalidBaseUrl(format!("does not parse ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError::InvalidBaseUrl(
            "scheme must be http or https".into(),
        ));
    }
    if parsed.host_str().is_none() {
        return Err(ConfigError::InvalidBaseUrl("no host".into()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ConfigError::InvalidBaseUrl(
            "credentials in the URL are not supported; use api_key".into(),
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(ConfigError::InvalidBaseUrl(
            "must not have a query or fragment".into(),
        ));
    }
    Url::parse(&format!("{base}{COMPLETIONS_PATH}"))
        .map_err(|e| ConfigError::InvalidBaseUrl(format!("does not parse ({e})")))
}

/// Reads at most `limit` bytes; the flag says whether the whole body fit.
async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Ok((Vec::new(), false));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if bytes.len() + chunk.len() > limit {
            let room = limit - bytes.len();
            bytes.extend_from_slice(&chunk[..room]);
            return Ok((bytes, false));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, true))
}

/// Reads up to `limit` bytes of an error body for at most `wait`, keeping whatever
/// arrived before a failure or the end of the wait.
async fn read_body_lossy(mut response: reqwest::Response, limit: usize, wait: Duration) -> Vec<u8> {
    let mut bytes = Vec::new();
    let end = tokio::time::Instant::now() + wait;
    while bytes.len() < limit {
        match tokio::time::timeout_at(end, response.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                let room = limit - bytes.len();
                bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
        }
    }
    bytes
}

fn canonical_reason(status: StatusCode) -> Option<&'static str> {
    status.canonical_reason()
}

/// An error and its sources, joined with `: `.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let piece = cause.to_string();
        if !text.contains(&piece) {
            text.push_str(": ");
            text.push_str(&piece);
        }
        source = cause.source();
    }
    text
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The W3C `traceparent` of the current span (empty when tracing is off), so the LLM
/// gateway's spans join the mission's trace.
fn trace_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(value) = mana_ai_core::trace_context::traceparent()
        .and_then(|v| reqwest::header::HeaderValue::from_str(&v).ok())
    {
        headers.insert(mana_ai_core::trace_context::TRACEPARENT_HEADER, value);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_table() {
        let table = [
            (
                "http://localhost:3020",
                Some("http://localhost:3020/v1/chat/completions"),
            ),
            (
                "http://localhost:3020/",
                Some("http://localhost:3020/v1/chat/completions"),
            ),
            (
                "https://llm.example/api",
                Some("https://llm.example/api/v1/chat/completions"),
            ),
            (
                "https://llm.example/api/",
                Some("https://llm.example/api/v1/chat/completions"),
            ),
            ("http://h//", Some("http://h//v1/chat/completions")),
            ("ftp://h", None),
            ("localhost:3020", None),
            ("", None),
            ("http://user:pw@h", None),
            ("http://h?x=1", None),
        ];
        for (base, want) in table {
            let got = endpoint_url(base).ok().map(|u| u.to_string());
            assert_eq!(got.as_deref(), want, "{base:?}");
        }
    }

    #[test]
    fn new_rejects_bad_settings() {
        let ok = || HttpLlmConfig::new("http://localhost:1", "key");
        let mut cases: Vec<(HttpLlmConfig, ConfigError)> = Vec::new();
        let mut c = ok();
        c.api_key = String::new();
        cases.push((c, ConfigError::InvalidApiKey));
        let mut c = ok();
        c.api_key = "bad\nkey".into();
        cases.push((c, ConfigError::InvalidApiKey));
        let mut c = ok();
        c.max_attempts = 0;
        cases.push((
            c,
            ConfigError::InvalidSetting("max_attempts must be at least 1"),
        ));
        let mut c = ok();
        c.call_deadline = Duration::ZERO;
        cases.push((
            c,
            ConfigError::InvalidSetting("call_deadline must be positive"),
        ));
        let mut c = ok();
        c.overall_deadline = Some(Duration::ZERO);
        cases.push((
            c,
            ConfigError::InvalidSetting("overall_deadline must be positive when set"),
        ));
        let mut c = ok();
        c.temperature = f32::NAN;
        cases.push((c, ConfigError::InvalidSetting("temperature must be finite")));
        let mut c = ok();
        c.default_model = String::new();
        cases.push((
            c,
            ConfigError::InvalidSetting("default_model must not be empty"),
        ));
        for (cfg, want) in cases {
            assert_eq!(HttpLlmClient::new(cfg).unwrap_err(), want);
        }
        let client = HttpLlmClient::new(ok()).unwrap();
        assert_eq!(client.endpoint(), "http://localhost:1/v1/chat/completions");
        assert!(!format!("{client:?}").contains("key\""));
    }

    #[test]
    fn user_agent_names_the_version() {
        assert_eq!(USER_AGENT, format!("mana-ai/{}", env!("CARGO_PKG_VERSION")));
    }
}
