//! The language a mission run speaks: German or English, detected from the mission's own
//! text (title, objective, concept) by a small, deterministic scorer.
//!
//! Why our own scorer and not a general detector crate: the decision is binary (the two
//! languages we have wording for), the texts are short and full of product words
//! ("Tagesplan", "Newsletter"), and "undecidable" must be a real answer so the configured
//! default (`MANA_AI_DEFAULT_LANGUAGE`) applies; a general detector answers one of ~70
//! languages with a confidence we would have to map back onto two. The scorer is tested on
//! a labelled corpus (`crates/core/tests/lang_corpus.rs`).
//!
//! Scoring: every word is lower-cased; a German or English function word (articles,
//! pronouns, prepositions, common verbs of mission texts) scores 3 for its language;
//! otherwise spelling cues score 1: `ä ö ü ß`, `sch`, and the endings `-ung -keit -heit
//! -lich -isch -chen` for German; `th`, `wh`, `ee`/`oo`/`ea` and the endings `-ing -ly
//! -ed` for English. The higher total wins; a tie (including 0 : 0) is undecidable.

use std::fmt;

/// A language we have wording for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Lang {
    /// German, the product's default.
    #[default]
    De,
    /// English.
    En,
}

impl Lang {
    /// The ISO 639-1 code (`de`, `en`).
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::De => "de",
            Lang::En => "en",
        }
    }

    /// Parses `de` / `en`, case-insensitively, also with a region (`de-AT`, `en_US`).
    pub fn parse(s: &str) -> Option<Lang> {
        let code = s.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match code.as_str() {
            "de" => Some(Lang::De),
            "en" => Some(Lang::En),
            _ => None,
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Score of a function word.
const FUNCTION_WORD: u32 = 3;
/// Score of a spelling cue.
const CUE: u32 = 1;

/// German function words (words that also are common English words are left out).
const DE_WORDS: &[&str] = &[
    "der",
    "die",
    "das",
    "dem",
    "den",
    "des",
    "ein",
    "eine",
    "einen",
    "einem",
    "einer",
    "und",
    "oder",
    "aber",
    "nicht",
    "kein",
    "keine",
    "ist",
    "sind",
    "war",
    "wird",
    "werden",
    "hat",
    "haben",
    "habe",
    "kann",
    "soll",
    "sollen",
    "muss",
    "ich",
    "du",
    "er",
    "sie",
    "wir",
    "ihr",
    "mein",
    "meine",
    "meinen",
    "meinem",
    "meiner",
    "dein",
    "deine",
    "unsere",
    "mir",
    "mich",
    "dir",
    "dich",
    "uns",
    "sich",
    "mit",
    "für",
    "fuer",
    "auf",
    "aus",
    "bei",
    "nach",
    "von",
    "vom",
    "zum",
    "zur",
    "zu",
    "im",
    "ins",
    "es",
    "um",
    "bis",
    "über",
    "ueber",
    "unter",
    "vor",
    "wie",
    "was",
    "wer",
    "wann",
    "wo",
    "warum",
    "welche",
    "jeden",
    "jede",
    "jedes",
    "alle",
    "allen",
    "auch",
    "noch",
    "nur",
    "schon",
    "sehr",
    "mehr",
    "bitte",
    "dass",
    "wenn",
    "dann",
    "heute",
    "morgen",
    "woche",
    "täglich",
    "taeglich",
    "wöchentlich",
    "neue",
    "neuen",
    "erstelle",
    "plane",
    "finde",
    "suche",
    "schreibe",
    "fasse",
    "zusammen",
    "prüfe",
    "erinnere",
    "sammle",
    "halte",
    "gib",
    "mache",
    "mach",
    "aufgaben",
    "ziele",
    "termine",
    "nächste",
    "naechste",
    "letzte",
    "diese",
    "dieser",
    "diesen",
    "etwas",
    "immer",
];

/// English function words (words that also are common German words are left out).
const EN_WORDS: &[&str] = &[
    "the",
    "a",
    "and",
    "or",
    "but",
    "not",
    "no",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "has",
    "have",
    "had",
    "would",
    "can",
    "should",
    "must",
    "i",
    "you",
    "he",
    "she",
    "we",
    "they",
    "my",
    "your",
    "our",
    "their",
    "me",
    "us",
    "them",
    "it",
    "its",
    "this",
    "that",
    "these",
    "those",
    "with",
    "for",
    "of",
    "to",
    "on",
    "at",
    "from",
    "by",
    "about",
    "into",
    "what",
    "which",
    "who",
    "when",
    "where",
    "why",
    "how",
    "every",
    "each",
    "all",
    "only",
    "still",
    "very",
    "more",
    "please",
    "if",
    "then",
    "today",
    "tomorrow",
    "week",
    "daily",
    "weekly",
    "new",
    "create",
    "find",
    "search",
    "write",
    "summarize",
    "summarise",
    "check",
    "remind",
    "collect",
    "keep",
    "give",
    "make",
    "tasks",
    "goals",
    "next",
    "last",
    "some",
    "always",
    "any",
    "up",
    "out",
    "do",
];

/// Detects the language of `texts` taken together; `None` when undecidable.
pub fn detect<'a>(texts: impl IntoIterator<Item = &'a str>) -> Option<Lang> {
    let (mut de, mut en) = (0u32, 0u32);
    for text in texts {
        for word in words(text) {
            let (d, e) = score_word(&word);
            de += d;
            en += e;
        }
    }
    match de.cmp(&en) {
        std::cmp::Ordering::Greater => Some(Lang::De),
        std::cmp::Ordering::Less => Some(Lang::En),
        std::cmp::Ordering::Equal => None,
    }
}

/// [`detect`], else `default`.
pub fn detect_or<'a>(texts: impl IntoIterator<Item = &'a str>, default: Lang) -> Lang {
    detect(texts).unwrap_or(default)
}

/// Lower-cased words: maximal runs of letters (and apostrophes inside a word).
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphabetic() || c == '\''))
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
}

/// `(german, english)` score of one word.
fn score_word(w: &str) -> (u32, u32) {
    let de_word = DE_WORDS.contains(&w);
    let en_word = EN_WORDS.contains(&w);
    if de_word || en_word {
        return (
            if de_word { FUNCTION_WORD } else { 0 },
            if en_word { FUNCTION_WORD } else { 0 },
        );
    }
    if w.chars().count() < 3 {
        return (0, 0);
    }
    let de_cue = w.contains(['ä', 'ö', 'ü', 'ß'])
        || w.contains("sch")
        || ["ung", "keit", "heit", "lich", "isch", "chen", "ungen"]
            .iter()
            .any(|s| w.ends_with(s));
    let en_cue = w.contains("th")
        || w.starts_with("wh")
        || ["ee", "oo", "ea"].iter().any(|s| w.contains(s))
        || ["ing", "ly", "ed"].iter().any(|s| w.ends_with(s));
    (if de_cue { CUE } else { 0 }, if en_cue { CUE } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_codes() {
        for (s, want) in [
            ("de", Some(Lang::De)),
            ("DE", Some(Lang::De)),
            ("de-AT", Some(Lang::De)),
            ("en_US", Some(Lang::En)),
            (" en ", Some(Lang::En)),
            ("fr", None),
            ("", None),
        ] {
            assert_eq!(Lang::parse(s), want, "{s:?}");
        }
    }

    #[test]
    fn clear_cases_and_ties() {
        assert_eq!(
            detect(["Plane jeden Morgen meine Aufgaben für den Tag"]),
            Some(Lang::De)
        );
        assert_eq!(
            detect(["Every morning, plan my tasks for the day"]),
            Some(Lang::En)
        );
        assert_eq!(detect([""]), None);
        assert_eq!(detect(["Fitness", "Yoga"]), None);
        assert_eq!(detect_or(["Fitness"], Lang::En), Lang::En);
        // All fields count together.
        assert_eq!(
            detect([
                "Newsletter",
                "",
                "Fasse die wichtigsten Nachrichten zusammen"
            ]),
            Some(Lang::De)
        );
    }
}
