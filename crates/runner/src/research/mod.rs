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
//! The module is split by concern: [`shallow`] (news research), [`deep`] (the job state
//! machine) and `http` (the bounded HTTP helper both use). [`Researcher`] owns the step.
//!
//! Both results are untrusted text: they go into the inputs, which the prompt builder
//! wraps in delimited user-data blocks.

mod deep;
mod http;
mod shallow;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mana_ai_core::iso::to_iso_ms;
use mana_ai_core::prompt::{is_ciphertext, ResolvedInput};
use mana_ai_core::records::MissionView;
use mana_ai_store::{DueMission, Store};
use reqwest::header::HeaderValue;
use zeroize::Zeroizing;

pub use deep::{render_deep_research, Citation};
pub use shallow::{render_web_research, Article};

use crate::events::{self, Emit};
use crate::{defaults, Clock, Metrics, RunnerConfig};
use deep::Deep;
use http::ResearchHttp;

/// Words that ask for shallow research (matched at a word start, case-insensitively).
pub const DEFAULT_SHALLOW_TRIGGERS: &[&str] = defaults::SHALLOW_RESEARCH_TRIGGERS;

/// Phrases that ask for deep research (matched as whole words, case-insensitively).
pub const DEFAULT_DEEP_TRIGGERS: &[&str] = defaults::DEEP_RESEARCH_TRIGGERS;

/// The deep-research provider requested on submit.
pub const DEEP_RESEARCH_PROVIDER: &str = "gemini-deep-research-max";
/// Id, module and table of the injected research input.
pub const RESEARCH_INPUT_ID: &str = "__web-research__";
pub const RESEARCH_INPUT_MODULE: &str = "news-research";
pub const RESEARCH_INPUT_TABLE: &str = "web";
/// The closing line of both research texts.
pub const SOURCES_NOTE: &str =
    "Nutze diese Quellen fuer deinen Plan. Verwende nur URLs die oben stehen; erfinde keine.";
const TITLE_UNITS: usize = 60;

/// Whether planning may proceed after the research step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResearchGate {
    /// Plan now, with the research result as one more input (if research gave one).
    Proceed(Option<ResolvedInput>),
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
            discover: defaults::RESEARCH_DISCOVER_TIMEOUT,
            search: defaults::RESEARCH_SEARCH_TIMEOUT,
            submit: defaults::RESEARCH_SUBMIT_TIMEOUT,
            poll: defaults::RESEARCH_POLL_TIMEOUT,
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

/// A mission text the triggers may look at (ciphertext never matches).
fn plain(s: &str) -> &str {
    if is_ciphertext(s.trim()) {
        ""
    } else {
        s
    }
}

/// The research step of a mission run (and nothing else): deep research first, then
/// shallow research when deep research gave nothing.
pub(crate) struct Researcher {
    store: Store,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    cfg: Arc<RunnerConfig>,
    http: ResearchHttp,
}

impl Researcher {
    pub(crate) fn new(
        store: Store,
        metrics: Metrics,
        clock: Arc<dyn Clock>,
        cfg: Arc<RunnerConfig>,
    ) -> Self {
        Self {
            store,
            metrics,
            clock,
            cfg,
            http: ResearchHttp::new(),
        }
    }

    /// Runs deep research, then (when that gave nothing) shallow research; answers the
    /// result as one input. `Pending` means: skip this mission this tick (the run asks
    /// before it resolves its inputs, so a pending job costs no decrypts). Never fails
    /// the mission: a research failure only means planning without research. The caller
    /// bounds it by the mission deadline.
    pub(crate) async fn research(&self, due: &DueMission, mission: &MissionView) -> ResearchGate {
        match self.deep_research(due, mission).await {
            Ok(Deep::Pending) => return ResearchGate::Pending,
            Ok(Deep::Answered(input)) => return ResearchGate::Proceed(Some(input)),
            Ok(Deep::Nothing) => {}
            Err(e) => {
                // Without the job row we cannot tell whether a paid job is running for
                // this run; skip rather than plan without it or submit twice.
                events::ResearchLookupFailed {
                    mission_id: &due.mission_id,
                    error: &e,
                }
                .emit(&self.metrics);
                return ResearchGate::Pending;
            }
        }
        let trigger = Trigger::new(&self.cfg.shallow_research_triggers, false);
        if trigger.matches(plain(&mission.objective))
            || trigger.matches(plain(&mission.concept_markdown))
        {
            return ResearchGate::Proceed(self.shallow_research(due, mission).await);
        }
        ResearchGate::Proceed(None)
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
