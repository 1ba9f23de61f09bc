//! Byte-level BPE tokenizer built in memory from GGUF metadata (`tokenizer.ggml.tokens`,
//! `tokenizer.ggml.merges`, special token ids).
//!
//! Token strings use the GPT-2 convention: every raw byte is shown as one printable
//! character, so decoding maps those characters back to bytes. Special tokens (control
//! tokens such as `<|im_start|>`) are never produced by [`Tokenizer::encode`]: text that
//! merely looks like a special token is encoded as ordinary text, so message content cannot
//! forge role markers.

use std::collections::HashMap;

/// Why a tokenizer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer metadata is inconsistent: {0}")]
    Metadata(String),
}

/// The GPT-2 byte ↔ printable-character table: `table[b]` is the character for byte `b`.
fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            u32::from(b)
        } else {
            let c = next;
            next += 1;
            c
        };
        // All codes are below 0x200, far from the surrogate range, so this cannot fail.
        table[usize::from(b)] = char::from_u32(code).unwrap_or('\0');
    }
    table
}

/// A byte-level BPE tokenizer.
pub struct Tokenizer {
    /// Raw bytes of every token; empty for special/control tokens.
    bytes: Vec<Vec<u8>>,
    /// Token string (GPT-2 character form) → id.
    ids: HashMap<String, u32>,
    /// (left, right) → merge rank (lower merges first).
    ranks: HashMap<(String, String), usize>,
    byte_to_char: [char; 256],
    special: Vec<bool>,
    /// End of a chat turn (`<|im_end|>` for ChatML models).
    pub eos_id: u32,
    /// Start of a chat turn (`<|im_start|>`).
    pub bos_id: u32,
}

impl Tokenizer {
    /// Builds the tokenizer. `token_types` follows GGUF (`1` normal, `3` control, `6` byte…);
    /// tokens of type 3 are treated as special.
    pub fn new(
        tokens: Vec<String>,
        token_types: &[i32],
        merges: &[String],
        bos_id: u32,
        eos_id: u32,
    ) -> Result<Self, TokenizerError> {
        let byte_to_char = byte_chars();
        let char_to_byte: HashMap<char, u8> = byte_to_char
            .iter()
            .enumerate()
            .filter_map(|(b, c)| u8::try_from(b).ok().map(|b| (*c, b)))
            .collect();
        let n = tokens.len();
        if usize::try_from(bos_id).map_or(true, |i| i >= n)
            || usize::try_from(eos_id).map_or(true, |i| i >= n)
        {
            return Err(TokenizerError::Metadata(
                "special token id out of range".into(),
            ));
        }
        let mut bytes = Vec::with_capacity(n);
        let mut special = Vec::with_capacity(n);
        let mut ids = HashMap::with_capacity(n);
        for (i, tok) in tokens.into_iter().enumerate() {
            let is_special = token_types.get(i).copied() == Some(3);
            let raw = if is_special {
                Vec::new()
            } else {
                tok.chars()
                    .map(|c| char_to_byte.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    .unwrap_or_else(|| tok.as_bytes().to_vec())
            };
            bytes.push(raw);
            special.push(is_special);
            let id = u32::try_from(i)
                .map_err(|_| TokenizerError::Metadata("vocabulary too large".into()))?;
            ids.insert(tok, id);
        }
        let mut ranks = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let Some((l, r)) = m.split_once(' ') else {
                return Err(TokenizerError::Metadata(format!("bad merge entry {m:?}")));
            };
            ranks.insert((l.to_owned(), r.to_owned()), rank);
        }
        Ok(Self {
            bytes,
            ids,
            ranks,
            byte_to_char,
            special,
            eos_id,
            bos_id,
        })
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    /// Raw bytes of every token (empty for special tokens), indexed by id.
    pub fn token_bytes(&self) -> &[Vec<u8>] {
        &self.bytes
    }

    /// True for control tokens.
    pub fn is_special(&self, id: u32) -> bool {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.special.get(i).copied())
            .unwrap_or(true)
    }

    /// The id of an exact token string (GPT-2 character form), e.g. `<|im_start|>`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// Decodes ids to text, dropping special tokens; invalid UTF-8 is replaced.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = Vec::new();
        for &id in ids {
            if let Some(b) = usize::try_from(id).ok().and_then(|i| self.bytes.get(i)) {
                out.extend_from_slice(b);
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Encodes plain text (never yields special tokens).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        for piece in pre_tokenize(text) {
            self.encode_piece(piece, &mut out);
        }
        out
    }

    fn encode_piece(&self, piece: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<String> = piece
            .bytes()
            .map(|b| self.byte_to_char[usize::from(b)].to_string())
            .collect();
        loop {
            let mut best: Option<(usize, usize)> = None;
            for i in 0..symbols.len().saturating_sub(1) {
                if let Some(&rank) = self
                    .ranks
                    .get(&(symbols[i].clone(), symbols[i + 1].clone()))
                {
                    if best.is_none_or(|(r, _)| rank < r) {
                        best = Some((rank, i));
                    }
                }
            }
            let Some((_, i)) = best else { break };
            let right = symbols.remove(i + 1);
            symbols[i].push_str(&right);
        }
        for s in symbols {
            match self.ids.get(&s) {
                Some(&id) if !self.is_special(id) => out.push(id),
                _ => {
                    // Fall back to single-byte tokens, which every byte-level vocabulary has.
                    for c in s.chars() {
                        if let Some(&id) = self.ids.get(&c.to_string()) {
                            out.push(id);
                        }
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Digit,
    Space,
    Other,
}

fn class(c: char) -> Class {
    if c.is_alphabetic() {
        Class::Letter
    } else if c.is_numeric() {
        Class::Digit
    } else if c.is_whitespace() {
        Class::Space
    } else {
        Class::Other
    }
}

/// Splits text the way GPT-2-style pre-tokenizers do (with every digit on its own):
/// contractions, ` ?letters`, single digits, ` ?punctuation`, and whitespace runs whose last
/// space joins the following word.
pub(crate) fn pre_tokenize(text: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let end_of = |k: usize| chars.get(k).map_or(text.len(), |&(i, _)| i);
    let mut pieces = Vec::new();
    let mut k = 0;
    while k < chars.len() {
        let (start, c) = chars[k];
        // Contractions.
        if c == '\'' {
            let rest = &text[start..];
            let mut matched = None;
            for suffix in ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"] {
                if rest.starts_with(suffix) {
                    matched = Some(suffix.len());
                    break;
                }
            }
            if let Some(len) = matched {
                pieces.push(&text[start..start + len]);
                k += len; // all ASCII
                continue;
            }
        }
        let mut j = k;
        let lead_space = c == ' '
            && chars
                .get(k + 1)
                .is_some_and(|&(_, n)| matches!(class(n), Class::Letter | Class::Other));
        if lead_space {
            j += 1;
        }
        let cls = class(chars[j].1);
        match cls {
            Class::Digit => j += 1,
            Class::Letter | Class::Other => {
                while j < chars.len() && class(chars[j].1) == cls {
                    j += 1;
                }
            }
            Class::Space => {
                while j < chars.len() && class(chars[j].1) == Class::Space {
                    j += 1;
                }
                // Leave a final ' ' for the next word when one follows.
                if j < chars.len() && j - k > 1 && chars[j - 1].1 == ' ' {
                    let next = class(chars[j].1);
                    if matches!(next, Class::Letter | Class::Other) {
                        j -= 1;
                    }
                }
            }
        }
        pieces.push(&text[start..end_of(j)]);
        k = j;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_tokenize_table() {
        let cases: &[(&str, &[&str])] = &[
            ("Hello world", &["Hello", " world"]),
            ("it's 2024!", &["it", "'s", " ", "2", "0", "2", "4", "!"]),
            ("a  b", &["a", " ", " b"]),
            ("x\n\ny", &["x", "\n\n", "y"]),
            ("{\"tool\": 1}", &["{\"", "tool", "\":", " ", "1", "}"]),
            ("", &[]),
        ];
        for (text, want) in cases {
            assert_eq!(&pre_tokenize(text), want, "text {text:?}");
        }
    }

    #[test]
    fn pre_tokenize_covers_input() {
        for text in ["héllo wörld 12 ?!", "  lead", "trail  ", "\t\tmix ed"] {
            assert_eq!(pre_tokenize(text).concat(), text);
        }
    }

    fn tiny() -> Tokenizer {
        let table = byte_chars();
        let mut tokens: Vec<String> = vec!["<|im_start|>".into(), "<|im_end|>".into()];
        tokens.extend(table.iter().map(|c| c.to_string()));
        tokens.push("he".into());
        tokens.push("hel".into());
        tokens.push("Ġw".into());
        let mut types = vec![3, 3];
        types.extend(std::iter::repeat_n(1, tokens.len() - 2));
        let merges = vec!["h e".to_string(), "he l".into(), "Ġ w".into()];
        Tokenizer::new(tokens, &types, &merges, 0, 1).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn bpe_merges_and_round_trips() {
        let t = tiny();
        let ids = t.encode("help w");
        let hel = t.token_id("hel").unwrap_or(u32::MAX);
        assert_eq!(ids[0], hel);
        assert_eq!(t.decode(&ids), "help w");
        assert_eq!(ids.len(), 3, "hel + p + Ġw");
    }

    #[test]
    fn special_text_is_not_a_special_token() {
        let t = tiny();
        let ids = t.encode("<|im_end|>");
        assert!(ids.iter().all(|&id| !t.is_special(id)));
        assert_eq!(t.decode(&ids), "<|im_end|>");
    }
}
