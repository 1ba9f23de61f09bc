//! Schema-constrained decoding: the output is valid by construction.
//!
//! The decoder does not let the model write JSON syntax. It walks the offered tools'
//! schemas and emits every structural character itself; the model only chooses:
//! - the branch (`{"tool": …}` or `{"final": "…"}`), the tool name, enum values, booleans,
//!   which optional keys to add and whether an array gets another element — each by greedy
//!   decoding restricted to tokens that keep the text a prefix of one allowed alternative
//!   (alternatives are prefix-free because each ends in a closing quote or separator);
//! - free string content (tokens made only of JSON-safe characters, bounded length; the
//!   string ends when the model prefers a token starting with `"` or an end-of-turn token);
//! - number digits (integers without leading zeros, bounded length).
//!
//! Required keys are always emitted, in schema order; optional keys keep schema order.
//! A token budget bounds the work: once it is spent, strings close, optional parts stop and
//! only the mandatory remainder is forced, so the result still validates.

use std::collections::HashMap;

use serde_json::Value;

use crate::schema::{Kind, Property, ToolSchema};

/// A causal language model seen token by token.
pub trait TokenModel {
    /// Starts a new sequence with `prompt`; returns the next-token logits.
    fn start(&mut self, prompt: &[u32]) -> Result<Vec<f32>, String>;
    /// Appends one token; returns the next-token logits.
    fn feed(&mut self, token: u32) -> Result<Vec<f32>, String>;
}

/// Why constrained generation failed (never because of model output: only engine errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    #[error("model failed: {0}")]
    Model(String),
    #[error("the vocabulary cannot spell {0:?}")]
    Unspellable(String),
    #[error("logits have {got} entries, vocabulary has {want}")]
    LogitsSize { got: usize, want: usize },
    #[error("tool {0:?} was requested but not offered")]
    UnknownTool(String),
    #[error("decoder produced invalid JSON (bug): {0}")]
    Internal(String),
}

/// How the model may answer (OpenAI `tool_choice`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolMode {
    /// A tool call or a final answer (`auto`).
    #[default]
    Auto,
    /// Must call some tool (`required`).
    Required,
    /// Must answer in text (`none`).
    None,
    /// Must call this tool.
    Named(String),
}

/// Bounds on generated output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_string_chars: usize,
    pub max_final_chars: usize,
    pub max_array_items: usize,
    pub max_digits: usize,
    /// Soft budget of generated tokens (forced remainders may exceed it slightly).
    pub max_tokens: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_string_chars: 160,
            max_final_chars: 600,
            max_array_items: 4,
            max_digits: 7,
            max_tokens: 256,
        }
    }
}

/// What the model decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Call `name` with `arguments` (compact JSON object text).
    Call { name: String, arguments: String },
    /// A plain answer.
    Final(String),
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub decision: Decision,
    /// The full JSON text the decoder produced.
    pub raw: String,
    /// Tokens fed after the prompt.
    pub completion_tokens: usize,
}

/// Per-vocabulary tables, computed once per model, so that no decoding step scans the whole
/// vocabulary's bytes: forced text and alternatives look their prefixes up in `by_bytes`,
/// free strings walk a precomputed list with character counts.
pub struct VocabIndex {
    bytes: Vec<Vec<u8>>,
    /// Tokens allowed inside a free JSON string (no quote, backslash, control characters;
    /// complete UTF-8). Decoding walks `string_tokens`; this per-id table is what the
    /// tests check the classification against.
    #[cfg_attr(not(test), allow(dead_code))]
    string_ok: Vec<bool>,
    /// The string-safe tokens in id order: (id, characters, starts with whitespace).
    string_tokens: Vec<(u32, u32, bool)>,
    /// Token bytes → ids with exactly those bytes (ascending).
    by_bytes: HashMap<Vec<u8>, Vec<u32>>,
    /// Longest token, in bytes.
    max_len: usize,
    /// Tokens made only of ASCII digits.
    digits: Vec<u32>,
    /// Tokens starting with `"`: their score signals "end the string here".
    quote_start: Vec<u32>,
    /// Tokens that signal "end the number": punctuation runs starting with `,`, `}` or `]`.
    number_end: Vec<u32>,
    /// End-of-turn tokens (also end strings).
    stops: Vec<u32>,
}

impl VocabIndex {
    /// Builds the tables. `bytes[id]` is the raw text of a token (empty for control tokens);
    /// `stops` are end-of-turn ids.
    pub fn new(bytes: Vec<Vec<u8>>, stops: Vec<u32>) -> Self {
        let mut string_ok = Vec::with_capacity(bytes.len());
        let mut string_tokens = Vec::new();
        let mut by_bytes: HashMap<Vec<u8>, Vec<u32>> = HashMap::new();
        let mut digits = Vec::new();
        let mut quote_start = Vec::new();
        let mut number_end = Vec::new();
        for (i, b) in bytes.iter().enumerate() {
            let id = u32::try_from(i).unwrap_or(u32::MAX);
            let ok = !b.is_empty()
                && std::str::from_utf8(b).is_ok()
                && b.iter().all(|&c| c >= 0x20 && c != b'"' && c != b'\\');
            string_ok.push(ok);
            if ok {
                let chars = std::str::from_utf8(b).map_or(0, |s| s.chars().count());
                let chars = u32::try_from(chars).unwrap_or(u32::MAX);
                string_tokens.push((id, chars, b[0].is_ascii_whitespace()));
            }
            if !b.is_empty() {
                by_bytes.entry(b.clone()).or_default().push(id);
            }
            if !b.is_empty() && b.iter().all(u8::is_ascii_digit) {
                digits.push(id);
            }
            match b.first() {
                Some(b'"') => quote_start.push(id),
                Some(b',' | b'}' | b']') if b.iter().all(|c| b",}] \n\"".contains(c)) => {
                    number_end.push(id)
                }
                _ => {}
            }
        }
        let max_len = bytes.iter().map(Vec::len).max().unwrap_or(0);
        Self {
            bytes,
            string_ok,
            string_tokens,
            by_bytes,
            max_len,
            digits,
            quote_start,
            number_end,
            stops,
        }
    }

    /// Vocabulary size.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True for an empty vocabulary.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Ids of the tokens spelling exactly `b`.
    fn ids(&self, b: &[u8]) -> &[u32] {
        self.by_bytes.get(b).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The lowest id of the longest token that starts `text`, with its length.
    fn longest_prefix(&self, text: &[u8]) -> Option<(usize, u32)> {
        (1..=self.max_len.min(text.len()))
            .rev()
            .find_map(|l| self.ids(&text[..l]).first().map(|&id| (l, id)))
    }
}

/// Whether `(score, id)` beats the best so far: a higher score, or the same score and a
/// lower id (the first in vocabulary order, as a full scan would pick).
fn beats(score: f32, id: u32, best: Option<(f32, u32, usize)>) -> bool {
    best.is_none_or(|(s, b, _)| score > s || (score == s && id < b))
}

/// Score taken off a token already used in the same string.
const REPEAT_PENALTY: f32 = 1.5;

fn at(logits: &[f32], id: u32) -> f32 {
    usize::try_from(id)
        .ok()
        .and_then(|i| logits.get(i).copied())
        .unwrap_or(f32::NEG_INFINITY)
}

fn json_str(s: &str) -> String {
    // Serialising a `&str` cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

struct Decoder<'a, M: TokenModel> {
    model: &'a mut M,
    vocab: &'a VocabIndex,
    limits: Limits,
    logits: Vec<f32>,
    out: Vec<u8>,
    tokens: usize,
}

impl<M: TokenModel> Decoder<'_, M> {
    fn spent(&self) -> bool {
        self.tokens >= self.limits.max_tokens
    }

    fn push(&mut self, id: u32) -> Result<(), GenerateError> {
        let bytes = usize::try_from(id)
            .ok()
            .and_then(|i| self.vocab.bytes.get(i))
            .ok_or_else(|| GenerateError::Internal(format!("token {id} out of range")))?;
        self.out.extend_from_slice(bytes);
        self.tokens += 1;
        self.logits = self.model.feed(id).map_err(GenerateError::Model)?;
        if self.logits.len() != self.vocab.len() {
            return Err(GenerateError::LogitsSize {
                got: self.logits.len(),
                want: self.vocab.len(),
            });
        }
        Ok(())
    }

    /// Emits `text` exactly, using the longest matching token at each step.
    fn force(&mut self, text: &str) -> Result<(), GenerateError> {
        self.force_bytes(text.as_bytes(), text)
    }

    fn force_bytes(&mut self, mut rest: &[u8], label: &str) -> Result<(), GenerateError> {
        while !rest.is_empty() {
            let Some((len, id)) = self.vocab.longest_prefix(rest) else {
                return Err(GenerateError::Unspellable(label.to_owned()));
            };
            self.push(id)?;
            rest = &rest[len..];
        }
        Ok(())
    }

    /// Lets the model pick one of prefix-free `alts` (greedy over tokens that keep the output
    /// a prefix of a live alternative). When the budget is spent, `fallback` is forced.
    fn choose(&mut self, alts: &[String], fallback: Option<usize>) -> Result<usize, GenerateError> {
        if alts.len() == 1 {
            self.force(&alts[0])?;
            return Ok(0);
        }
        if let Some(f) = fallback.filter(|_| self.spent()) {
            self.force(&alts[f])?;
            return Ok(f);
        }
        let mut done: Vec<u8> = Vec::new();
        loop {
            let live: Vec<usize> = (0..alts.len())
                .filter(|&i| alts[i].as_bytes().starts_with(&done))
                .collect();
            if let Some(&i) = live.iter().find(|&&i| alts[i].len() == done.len()) {
                return Ok(i);
            }
            if let [only] = live[..] {
                let rest = &alts[only].as_bytes()[done.len()..];
                self.force_bytes(rest, &alts[only])?;
                return Ok(only);
            }
            // The fitting tokens are exactly the prefixes of the live remainders.
            let mut best: Option<(f32, u32, usize)> = None;
            for &i in &live {
                let rest = &alts[i].as_bytes()[done.len()..];
                for l in 1..=self.vocab.max_len.min(rest.len()) {
                    for &id in self.vocab.ids(&rest[..l]) {
                        let score = at(&self.logits, id);
                        if beats(score, id, best) {
                            best = Some((score, id, l));
                        }
                    }
                }
            }
            let Some((_, id, len)) = best else {
                return Err(GenerateError::Unspellable(alts[live[0]].clone()));
            };
            let start = self.out.len();
            self.push(id)?;
            done.extend_from_slice(&self.out[start..start + len]);
        }
    }

    /// Free string content followed by the closing quote (the opening one is emitted already).
    fn string_body(&mut self, max_chars: usize) -> Result<(), GenerateError> {
        let mut chars = 0usize;
        // Tokens already used in this string (few), penalised mildly against repetition.
        let mut seen: Vec<u32> = Vec::new();
        loop {
            if chars >= max_chars || self.spent() {
                return self.force("\"");
            }
            let room = max_chars - chars;
            let mut best: Option<(f32, u32, usize)> = None;
            let mut best_score = f32::NEG_INFINITY;
            for &(id, n, space) in &self.vocab.string_tokens {
                // Only complete UTF-8 tokens are listed, so `n` is a real char count.
                let score = self
                    .logits
                    .get(id as usize)
                    .copied()
                    .unwrap_or(f32::NEG_INFINITY);
                if score <= best_score || n as usize > room || (chars == 0 && space) {
                    continue;
                }
                best_score = score;
                best = Some((score, id, n as usize));
            }
            // The penalty can only lower scores: re-rank among the penalised candidates.
            if let Some((score, _, _)) = best.filter(|(_, id, _)| seen.contains(id)) {
                best = None;
                for &(cid, n, space) in &self.vocab.string_tokens {
                    let mut s = at(&self.logits, cid);
                    if s < score - REPEAT_PENALTY || n as usize > room || (chars == 0 && space) {
                        continue;
                    }
                    if seen.contains(&cid) {
                        s -= REPEAT_PENALTY;
                    }
                    if beats(s, cid, best) {
                        best = Some((s, cid, n as usize));
                    }
                }
            }
            let end_score = self
                .vocab
                .quote_start
                .iter()
                .chain(&self.vocab.stops)
                .map(|&id| at(&self.logits, id))
                .fold(f32::NEG_INFINITY, f32::max);
            match best {
                Some((score, id, n)) if chars == 0 || score >= end_score => {
                    if !seen.contains(&id) {
                        seen.push(id);
                    }
                    chars += n;
                    self.push(id)?;
                }
                _ => return self.force("\""),
            }
        }
    }

    /// Non-negative integer digits without leading zeros.
    fn digits(&mut self) -> Result<(), GenerateError> {
        let mut count = 0usize;
        loop {
            let mut best: Option<(f32, u32, usize)> = None;
            for &id in &self.vocab.digits {
                let Some(b) = self.vocab.bytes.get(id as usize) else {
                    continue;
                };
                if count == 0 && b.len() > 1 && b[0] == b'0' {
                    continue;
                }
                if count > 0 && count + b.len() > self.limits.max_digits {
                    continue;
                }
                let score = at(&self.logits, id);
                if best.is_none_or(|(s, _, _)| score > s) {
                    best = Some((score, id, b.len()));
                }
            }
            let Some((score, id, len)) = best else {
                // No digit tokens at all: a single zero keeps the JSON valid.
                return if count == 0 { self.force("0") } else { Ok(()) };
            };
            if count > 0 {
                let end = self
                    .vocab
                    .number_end
                    .iter()
                    .map(|&id| at(&self.logits, id))
                    .fold(f32::NEG_INFINITY, f32::max);
                if end > score || self.spent() {
                    return Ok(());
                }
            }
            let first_zero =
                count == 0 && self.vocab.bytes.get(id as usize).is_some_and(|b| b == b"0");
            self.push(id)?;
            count += len;
            if first_zero || count >= self.limits.max_digits {
                return Ok(());
            }
        }
    }

    fn value(&mut self, kind: &Kind) -> Result<(), GenerateError> {
        match kind {
            Kind::String { enum_values } if !enum_values.is_empty() => {
                self.force("\"")?;
                let alts: Vec<String> = enum_values
                    .iter()
                    .map(|v| json_str(v)[1..].to_owned())
                    .collect();
                self.choose(&alts, Some(0))?;
                Ok(())
            }
            Kind::String { .. } => {
                self.force("\"")?;
                self.string_body(self.limits.max_string_chars)
            }
            Kind::Number | Kind::Integer => self.digits(),
            Kind::Boolean => {
                self.choose(&["true".into(), "false".into()], Some(1))?;
                Ok(())
            }
            Kind::Array(items) => {
                self.force("[")?;
                let mut n = 0usize;
                loop {
                    self.value(items)?;
                    n += 1;
                    if n >= self.limits.max_array_items {
                        return self.force("]");
                    }
                    if self.choose(&[", ".into(), "]".into()], Some(1))? == 1 {
                        return Ok(());
                    }
                }
            }
            Kind::Object(props) => self.object(props),
        }
    }

    fn object(&mut self, props: &[Property]) -> Result<(), GenerateError> {
        self.force("{")?;
        let mut first = true;
        for p in props.iter().filter(|p| p.required) {
            let sep = if first { "" } else { ", " };
            self.force(&format!("{sep}{}: ", json_str(&p.name)))?;
            self.value(&p.kind)?;
            first = false;
        }
        let mut optional: Vec<&Property> = props.iter().filter(|p| !p.required).collect();
        while !optional.is_empty() {
            let sep = if first { "" } else { ", " };
            let mut alts: Vec<String> = optional
                .iter()
                .map(|p| format!("{sep}{}: ", json_str(&p.name)))
                .collect();
            alts.push("}".into());
            let close = alts.len() - 1;
            let pick = self.choose(&alts, Some(close))?;
            if pick == close {
                return Ok(());
            }
            self.value(&optional[pick].kind)?;
            optional.drain(..=pick);
            first = false;
        }
        self.force("}")
    }
}

/// Runs one constrained generation after `prompt`.
pub fn generate<M: TokenModel>(
    model: &mut M,
    vocab: &VocabIndex,
    prompt: &[u32],
    tools: &[ToolSchema],
    mode: &ToolMode,
    limits: Limits,
) -> Result<Outcome, GenerateError> {
    let offered: Vec<&ToolSchema> = match mode {
        ToolMode::Named(name) => {
            let t = tools
                .iter()
                .find(|t| &t.name == name)
                .ok_or_else(|| GenerateError::UnknownTool(name.clone()))?;
            vec![t]
        }
        ToolMode::None => Vec::new(),
        ToolMode::Auto | ToolMode::Required => tools.iter().collect(),
    };
    let allow_final = matches!(mode, ToolMode::Auto | ToolMode::None) || offered.is_empty();
    let logits = model.start(prompt).map_err(GenerateError::Model)?;
    if logits.len() != vocab.len() {
        return Err(GenerateError::LogitsSize {
            got: logits.len(),
            want: vocab.len(),
        });
    }
    let mut d = Decoder {
        model,
        vocab,
        limits,
        logits,
        out: Vec::new(),
        tokens: 0,
    };
    let mut branches: Vec<String> = Vec::new();
    if !offered.is_empty() {
        branches.push("{\"tool\": \"".into());
    }
    if allow_final {
        branches.push("{\"final\": \"".into());
    }
    let is_tool = d.choose(&branches, None)? == 0 && !offered.is_empty();
    if is_tool {
        let alts: Vec<String> = offered
            .iter()
            .map(|t| format!("{}, \"arguments\": ", &json_str(&t.name)[1..]))
            .collect();
        let pick = d.choose(&alts, None)?;
        d.object(&offered[pick].properties)?;
    } else {
        d.string_body(d.limits.max_final_chars)?;
    }
    d.force("}")?;
    let raw = String::from_utf8(d.out).map_err(|e| GenerateError::Internal(e.to_string()))?;
    let value: Value =
        serde_json::from_str(&raw).map_err(|e| GenerateError::Internal(format!("{e}: {raw}")))?;
    let decision = if let (Some(name), Some(args)) = (
        value.get("tool").and_then(Value::as_str),
        value.get("arguments"),
    ) {
        Decision::Call {
            name: name.to_owned(),
            arguments: args.to_string(),
        }
    } else {
        Decision::Final(
            value
                .get("final")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        )
    };
    Ok(Outcome {
        decision,
        raw,
        completion_tokens: d.tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mana_ai_core::catalog::{function_specs, validate_call, Catalog, Tool};
    use proptest::prelude::*;

    /// A tiny vocabulary: every single byte plus a few multi-byte tokens, so both the
    /// longest-match forcing and multi-byte choices are exercised.
    fn fake_vocab() -> (VocabIndex, u32) {
        let mut bytes: Vec<Vec<u8>> = vec![Vec::new()]; // id 0: end-of-turn control token
        bytes.extend((0u8..=255).map(|b| vec![b]));
        for extra in [
            "{\"",
            "tool",
            "\": \"",
            "\", \"",
            "arguments",
            "\": ",
            "final",
            "create",
            "_task",
            "title",
            " the",
            "Buy",
            " milk",
            "12",
            "00",
            "\"}",
            "true",
            "false",
            ", \"",
            "é", // complete 2-byte UTF-8
        ] {
            bytes.push(extra.as_bytes().to_vec());
        }
        bytes.push(vec![0xC3]); // an incomplete UTF-8 prefix: never allowed in strings
        (VocabIndex::new(bytes, vec![0]), 0)
    }

    /// Logits from a seeded xorshift, optionally biased towards some token ids.
    struct FakeModel {
        state: u64,
        n: usize,
        bias: Vec<(u32, f32)>,
        fed: Vec<u32>,
    }

    impl FakeModel {
        fn new(seed: u64, n: usize) -> Self {
            Self {
                state: seed | 1,
                n,
                bias: Vec::new(),
                fed: Vec::new(),
            }
        }
        fn logits(&mut self) -> Vec<f32> {
            let mut v = Vec::with_capacity(self.n);
            for _ in 0..self.n {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                v.push((self.state % 10_000) as f32 / 1000.0);
            }
            for &(id, b) in &self.bias {
                v[id as usize] += b;
            }
            v
        }
    }

    impl TokenModel for FakeModel {
        fn start(&mut self, _prompt: &[u32]) -> Result<Vec<f32>, String> {
            Ok(self.logits())
        }
        fn feed(&mut self, token: u32) -> Result<Vec<f32>, String> {
            self.fed.push(token);
            Ok(self.logits())
        }
    }

    fn offered(names: &[&str]) -> Vec<&'static Tool> {
        let cat = Catalog::builtin();
        names
            .iter()
            .map(|n| cat.get(n).unwrap_or_else(|| panic!("no tool {n}")))
            .collect()
    }

    fn schemas(tools: &[&Tool]) -> Vec<ToolSchema> {
        ToolSchema::from_specs(&function_specs(tools)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// One generation with a required tool call, default limits, no prompt tokens.
    fn required_call(model: &mut FakeModel, vocab: &VocabIndex, specs: &[ToolSchema]) -> Outcome {
        generate(
            model,
            vocab,
            &[],
            specs,
            &ToolMode::Required,
            Limits::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    const MIX: &[&str] = &[
        "create_task",
        "log_drink",
        "create_event",
        "import_articles_from_urls",
        "create_invoice",
        "add_website_block",
        "update_quiz",
        "get_task_stats",
        "log_mood",
        "create_place",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever the logits, every emitted call names an offered tool and validates.
        #[test]
        fn every_call_validates(seed in any::<u64>(), mode in 0u8..3, budget in 5usize..300) {
            let (vocab, _) = fake_vocab();
            let tools = offered(MIX);
            let specs = schemas(&tools);
            let mode = match mode { 0 => ToolMode::Auto, 1 => ToolMode::Required, _ => ToolMode::None };
            let limits = Limits { max_tokens: budget, ..Limits::default() };
            let mut model = FakeModel::new(seed, vocab.len());
            let out = generate(&mut model, &vocab, &[1, 2], &specs, &mode, limits)
                .unwrap_or_else(|e| panic!("{e}"));
            let parsed: Value = serde_json::from_str(&out.raw).unwrap_or_else(|e| panic!("{e}"));
            prop_assert!(parsed.is_object());
            prop_assert_eq!(out.completion_tokens, model.fed.len());
            match (&out.decision, &mode) {
                (Decision::Call { name, arguments }, ToolMode::Auto | ToolMode::Required) => {
                    let r = validate_call(&tools, name, arguments);
                    prop_assert!(r.is_ok(), "{} {} -> {:?}", name, arguments, r);
                }
                (Decision::Final(text), ToolMode::Auto | ToolMode::None) => {
                    prop_assert!(!text.is_empty());
                }
                (d, m) => prop_assert!(false, "decision {:?} under mode {:?}", d, m),
            }
        }
    }

    #[test]
    fn every_builtin_tool_can_be_forced_and_validates() {
        let (vocab, _) = fake_vocab();
        let cat = Catalog::builtin();
        let tools: Vec<&Tool> = cat.tools().iter().collect();
        let specs = schemas(&tools);
        for (i, t) in tools.iter().enumerate() {
            let mut model = FakeModel::new(i as u64 + 7, vocab.len());
            let out = generate(
                &mut model,
                &vocab,
                &[],
                &specs,
                &ToolMode::Named(t.name.clone()),
                Limits::default(),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
            let Decision::Call { name, arguments } = out.decision else {
                panic!("{}: expected a call", t.name)
            };
            assert_eq!(name, t.name);
            if let Err(e) = validate_call(&tools, &name, &arguments) {
                panic!("{name} {arguments}: {e}");
            }
        }
    }

    #[test]
    fn model_preference_picks_tool_and_enum() {
        let (vocab, _) = fake_vocab();
        let tools = offered(&["create_task", "log_drink"]);
        let specs = schemas(&tools);
        let mut model = FakeModel::new(3, vocab.len());
        // Strongly prefer 'l' (→ "log_drink") and 'w' (→ drinkType "water"); the random
        // part of the logits is below 10, so these biases decide every choice they enter.
        model.bias = vec![(1 + u32::from(b'l'), 45.0), (1 + u32::from(b'w'), 60.0)];
        let out = required_call(&mut model, &vocab, &specs);
        let Decision::Call { name, arguments } = &out.decision else {
            panic!("expected call, got {:?}", out.decision)
        };
        assert_eq!(name, "log_drink");
        let args: Value = serde_json::from_str(arguments).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(args["drinkType"], "water");
        assert!(args["quantityMl"].is_u64(), "{arguments}");
    }

    #[test]
    fn named_unknown_tool_is_an_error() {
        let (vocab, _) = fake_vocab();
        let specs = schemas(&offered(&["create_task"]));
        let mut model = FakeModel::new(1, vocab.len());
        let r = generate(
            &mut model,
            &vocab,
            &[],
            &specs,
            &ToolMode::Named("nope".into()),
            Limits::default(),
        );
        assert_eq!(r, Err(GenerateError::UnknownTool("nope".into())));
    }

    #[test]
    fn wrong_logit_width_is_reported() {
        let (vocab, _) = fake_vocab();
        let mut model = FakeModel::new(1, 10);
        let r = generate(
            &mut model,
            &vocab,
            &[],
            &[],
            &ToolMode::Auto,
            Limits::default(),
        );
        assert!(matches!(r, Err(GenerateError::LogitsSize { got: 10, .. })));
    }

    #[test]
    fn vocab_tables() {
        let (vocab, _) = fake_vocab();
        let quote = 1 + u32::from(b'"');
        let backslash = 1 + usize::from(b'\\');
        assert!(vocab.quote_start.contains(&quote));
        assert!(!vocab.string_ok[backslash]);
        assert!(!vocab.string_ok[1 + usize::from(b'\n')]);
        assert!(vocab.string_ok[1 + usize::from(b'a')]);
        assert!(
            !vocab.string_ok[vocab.len() - 1],
            "incomplete UTF-8 is excluded"
        );
        assert!(vocab.digits.contains(&(1 + u32::from(b'7'))));
    }

    /// Byte-level JSON escaping: a string value never breaks out of its quotes.
    #[test]
    fn decoded_strings_never_contain_raw_quotes() {
        let (vocab, _) = fake_vocab();
        let specs = schemas(&offered(&["create_note"]));
        for seed in 0..40u64 {
            let mut model = FakeModel::new(seed, vocab.len());
            model.bias = vec![(1 + u32::from(b'\\'), 100.0), (1 + u32::from(b'\n'), 100.0)];
            let out = required_call(&mut model, &vocab, &specs);
            assert!(
                !out.raw.contains('\\') && !out.raw.contains('\n'),
                "{}",
                out.raw
            );
        }
    }
}
