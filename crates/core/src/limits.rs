//! Every size limit on free text, in one place: what may enter a prompt, what a model may
//! write into a row, and how large a row the runner writes. Documented in
//! `docs/limits.md`; each limit is tested at its edge (exactly at, one over).
//!
//! Lengths of text are counted in Unicode scalar values (`char`s), never bytes, so a cut
//! never splits a character. A value over its limit is cut to the limit *including* the
//! marker [`TRUNCATION_MARKER`] ([`truncate`]): the result never exceeds the limit.
//! Tool arguments are the exception: they are not cut (a cut argument would change what
//! the call does); a call whose arguments are too large is rejected and the model is told
//! why ([`TOOL_ARGS_MAX_BYTES`]).
//!
//! Why these numbers: the sync server refuses bodies over 10 MB, and a device pushes the
//! whole `iterations` array on every edit, so a runner row must stay well below that. One
//! iteration is at most [`PLAN_STEPS_MAX`] steps of at most [`TOOL_ARGS_MAX_BYTES`] of
//! arguments plus bounded summaries (about 450 KB in the worst case, usually 1–5 KB); the
//! written history is kept under [`HISTORY_MAX_BYTES`] by dropping old finished
//! iterations, and a row is never written over [`ROW_MAX_BYTES`].

use std::borrow::Cow;

/// Appended to a cut value (U+2026, one char).
pub const TRUNCATION_MARKER: char = '…';

// ---- Prompt inputs (chars) -----------------------------------------------------------

/// Mission `title` shown to the model.
pub const TITLE_MAX_CHARS: usize = 300;
/// Mission `conceptMarkdown` shown to the model.
pub const CONCEPT_MAX_CHARS: usize = 8_000;
/// Mission `objective` shown to the model (also the actor's `rationale`).
pub const OBJECTIVE_MAX_CHARS: usize = 2_000;
/// Agent `name` shown to the model.
pub const AGENT_NAME_MAX_CHARS: usize = 200;
/// Agent `role` shown to the model.
pub const AGENT_ROLE_MAX_CHARS: usize = 1_000;
/// Agent persona (`systemPrompt`) shown to the model.
pub const PERSONA_MAX_CHARS: usize = 4_000;
/// Agent `memory` shown to the model.
pub const MEMORY_MAX_CHARS: usize = 4_000;
/// How many earlier iterations are passed to the prompt (the newest ones; equals
/// `prompt::ITERATION_HISTORY_LEN`, which is what the prompt shows).
pub const PROMPT_ITERATIONS_MAX: usize = 3;
/// `summary` (and any other text) of an earlier iteration shown to the model.
pub const PAST_SUMMARY_MAX_CHARS: usize = 1_000;
/// `userFeedback` of an earlier iteration shown to the model.
pub const FEEDBACK_MAX_CHARS: usize = 1_000;
/// Steps of one earlier iteration shown to the model.
pub const PAST_STEPS_MAX: usize = 25;
/// Any text of one step of an earlier iteration shown to the model (its `summary`,
/// `status`, …).
pub const PAST_STEP_TEXT_MAX_CHARS: usize = 300;
/// Entries of any other array or object inside an earlier iteration passed to the prompt.
pub const PAST_ITEMS_MAX: usize = 25;
/// Nesting depth of an earlier iteration passed to the prompt (deeper values are left
/// out).
pub const PAST_DEPTH_MAX: usize = 6;
/// Title of one resolved input.
pub const INPUT_TITLE_MAX_CHARS: usize = 300;
/// Content of one resolved input, whatever its module (the prompt cuts further per
/// module: 500, 1,500, 2,000 or 4,000).
pub const INPUT_CONTENT_MAX_CHARS: usize = 4_000;

// ---- What a model may write into a row -----------------------------------------------

/// Raw JSON text of one tool call's arguments, in bytes. Larger calls are rejected and
/// fed back to the model (label `too_large`), and their arguments are not kept in the
/// conversation.
pub const TOOL_ARGS_MAX_BYTES: usize = 16 * 1024;
/// Steps of one iteration, whatever the planner is configured to (the cap of the
/// planning loop and of a JSON plan).
pub const PLAN_STEPS_MAX: usize = 25;
/// `summary` of one written step.
pub const STEP_SUMMARY_MAX_CHARS: usize = 300;
/// `summary` of a written iteration (the model's closing text).
pub const ITERATION_SUMMARY_MAX_CHARS: usize = 2_000;
/// `errorDetails.message` of a failed iteration, and the run's error text.
pub const ERROR_MESSAGE_MAX_CHARS: usize = 500;

// ---- Rows -----------------------------------------------------------------------------

/// JSON size of the written `iterations` array that old finished iterations are dropped
/// to stay under (besides the count limit `MANA_AI_ITERATION_HISTORY`).
pub const HISTORY_MAX_BYTES: usize = 2 * 1024 * 1024;
/// Largest `data` the runner ever writes into one `sync_changes` row (JSON bytes); the
/// sync server's body limit is 10 MB. When the iterations that may not be dropped
/// (running, awaiting review, a step still planned) alone exceed it, the run writes no
/// iteration (only `nextRunAt`) and is recorded as failed.
pub const ROW_MAX_BYTES: usize = 4 * 1024 * 1024;

/// `s` cut to at most `max` chars: unchanged when it fits, else its first `max - 1`
/// chars and [`TRUNCATION_MARKER`] (`max == 0` gives `""`). Never splits a char.
pub fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some(_) if max == 0 => Cow::Borrowed(""),
        Some(_) => {
            // `max - 1 < max ≤ char count`, so this index exists.
            let cut = s.char_indices().nth(max - 1).map_or(s.len(), |(i, _)| i);
            let mut out = String::with_capacity(cut + TRUNCATION_MARKER.len_utf8());
            out.push_str(&s[..cut]);
            out.push(TRUNCATION_MARKER);
            Cow::Owned(out)
        }
    }
}

/// [`truncate`] into an owned `String`.
pub fn truncated(s: &str, max: usize) -> String {
    truncate(s, max).into_owned()
}

/// [`truncated`] for an optional value.
pub fn truncated_opt(s: Option<&str>, max: usize) -> Option<String> {
    s.map(|s| truncated(s, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_is_exact_at_the_edge() {
        assert_eq!(truncate("abc", 3), "abc");
        assert!(matches!(truncate("abc", 3), Cow::Borrowed(_)));
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("abcd", 3).chars().count(), 3);
        assert_eq!(truncate("", 0), "");
        assert_eq!(truncate("a", 0), "");
        assert_eq!(truncate("ab", 1), "…");
    }

    #[test]
    fn truncation_never_splits_a_char() {
        // Multi-byte chars: 'ä' (2 bytes), '€' (3), '😀' (4).
        let s = "ä€😀ä€😀";
        for max in 0..=7 {
            let t = truncate(s, max);
            assert!(t.chars().count() <= max, "{max}: {t}");
            assert!(s.starts_with(t.trim_end_matches(TRUNCATION_MARKER)));
        }
        assert_eq!(truncate(s, 6), s);
        assert_eq!(truncate(s, 5), "ä€😀ä…");
    }

    #[test]
    fn limits_keep_one_iteration_far_below_the_row_limit() {
        // Worst case of one written iteration: every step at the argument limit, every
        // text at its limit in 4-byte chars escaped as `\uXXXX\uXXXX` (12 bytes).
        let per_step = TOOL_ARGS_MAX_BYTES + STEP_SUMMARY_MAX_CHARS * 12 + 512;
        let iteration = PLAN_STEPS_MAX * per_step + ITERATION_SUMMARY_MAX_CHARS * 12 + 1024;
        assert!(iteration < HISTORY_MAX_BYTES / 3, "{iteration}");
        const { assert!(HISTORY_MAX_BYTES < ROW_MAX_BYTES) };
        // Far below the sync server's 10 MB body limit.
        const { assert!(ROW_MAX_BYTES <= 10_000_000 / 2) };
    }
}
