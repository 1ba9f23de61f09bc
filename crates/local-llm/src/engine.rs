//! The loaded model: GGUF weights run on the CPU in their quantized form ([`crate::llama`]),
//! the tokenizer built from the file's metadata, and the constrained decoder. The key/value
//! cache of the last sequence is kept, so a prompt that starts like the previous one (the
//! next round of a planning loop, or another mission with the same system prompt) only
//! processes its new tokens.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mana_ai_core::chat::ChatMessage;

use crate::constrain::{self, Limits, Outcome, TokenModel, ToolMode, VocabIndex};
use crate::gguf;
use crate::llama::{KvCache, Llama, MAX_SEQ_LEN};
use crate::prompt::{self, Segment};
use crate::schema::ToolSchema;
use crate::tokenizer::Tokenizer;
use crate::LocalError;

/// A loaded local model. Generation is serialised (one sequence at a time).
pub struct LocalModel {
    llama: Llama,
    cache: Mutex<KvCache>,
    tokenizer: Tokenizer,
    vocab: VocabIndex,
    im_start: u32,
    im_end: u32,
    load_time: Duration,
    limits: Limits,
}

/// One finished generation with its counters.
#[derive(Debug, Clone)]
pub struct Generation {
    pub outcome: Outcome,
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys/values were reused from the previous sequence.
    pub reused_tokens: usize,
    pub prompt_time: Duration,
    pub generation_time: Duration,
    /// The part of `generation_time` spent in the model (the rest is the constraint).
    pub model_time: Duration,
}

fn meta<'a>(content: &'a gguf::Content, key: &str) -> Result<&'a gguf::Value, LocalError> {
    content
        .metadata
        .get(key)
        .ok_or_else(|| LocalError::Format(format!("GGUF metadata {key} is missing")))
}

fn strings(content: &gguf::Content, key: &str) -> Result<Vec<String>, LocalError> {
    let bad = || LocalError::Format(format!("{key} is not an array of strings"));
    meta(content, key)?
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
        .collect()
}

impl LocalModel {
    /// Loads a GGUF file (llama architecture, GPT-2-style BPE vocabulary, ChatML template).
    pub fn load(path: &Path) -> Result<Self, LocalError> {
        let started = Instant::now();
        let mut file = std::fs::File::open(path).map_err(|e| LocalError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let content = gguf::Content::read(&mut file)
            .map_err(|e| LocalError::Format(format!("{}: {e}", path.display())))?;
        let arch = meta(&content, "general.architecture")?
            .as_str()
            .ok_or_else(|| LocalError::Format("general.architecture is not a string".into()))?;
        if arch != "llama" {
            return Err(LocalError::Format(format!(
                "unsupported architecture {arch:?} (expected llama)"
            )));
        }
        let tokens = strings(&content, "tokenizer.ggml.tokens")?;
        let merges = strings(&content, "tokenizer.ggml.merges")?;
        let types: Vec<i32> = meta(&content, "tokenizer.ggml.token_type")?
            .as_array()
            .ok_or_else(|| LocalError::Format("tokenizer.ggml.token_type is not an array".into()))?
            .iter()
            .map(|v| v.as_i32().unwrap_or(1))
            .collect();
        let id = |key: &str| -> Result<u32, LocalError> {
            meta(&content, key)?
                .as_u32()
                .ok_or_else(|| LocalError::Format(format!("{key} is not a u32")))
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let tokenizer = Tokenizer::new(tokens, &types, &merges, bos, eos)
            .map_err(|e| LocalError::Format(e.to_string()))?;
        let im_start = tokenizer.token_id("<|im_start|>").ok_or_else(|| {
            LocalError::Format("no <|im_start|> token: not a ChatML model".into())
        })?;
        let im_end = tokenizer
            .token_id("<|im_end|>")
            .ok_or_else(|| LocalError::Format("no <|im_end|> token: not a ChatML model".into()))?;
        let mut stops = vec![im_end];
        if let Some(eot) = tokenizer.token_id("<|endoftext|>") {
            stops.push(eot);
        }
        let vocab = VocabIndex::new(tokenizer.token_bytes().to_vec(), stops);
        drop(file);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let llama = Llama::load(&content, path, threads)?;
        if llama.cfg.vocab != vocab.len() {
            return Err(LocalError::Format(format!(
                "embedding has {} rows, vocabulary {} tokens",
                llama.cfg.vocab,
                vocab.len()
            )));
        }
        Ok(Self {
            llama,
            cache: Mutex::new(KvCache::default()),
            tokenizer,
            vocab,
            im_start,
            im_end,
            load_time: started.elapsed(),
            limits: Limits::default(),
        })
    }

    /// How long [`LocalModel::load`] took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// The tokenizer read from the file.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Replaces the output bounds.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Encodes a rendered prompt.
    pub fn encode_prompt(&self, segments: &[Segment]) -> Vec<u32> {
        let newline = self.tokenizer.encode("\n");
        let mut ids = Vec::new();
        for s in segments {
            match s {
                Segment::Open(role) => {
                    ids.push(self.im_start);
                    ids.extend(self.tokenizer.encode(role));
                    ids.extend(&newline);
                }
                Segment::Close => {
                    ids.push(self.im_end);
                    ids.extend(&newline);
                }
                Segment::Text(t) => ids.extend(self.tokenizer.encode(t)),
            }
        }
        ids
    }

    /// Runs one constrained generation for a conversation.
    pub fn generate(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolSchema],
        mode: &ToolMode,
    ) -> Result<Generation, LocalError> {
        let prompt = self.encode_prompt(&prompt::render(messages, tools, mode));
        let room = MAX_SEQ_LEN.saturating_sub(self.limits.max_tokens + 64);
        if prompt.len() > room {
            return Err(LocalError::PromptTooLong {
                tokens: prompt.len(),
                max: room,
            });
        }
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| LocalError::Engine("model lock poisoned".into()))?;
        let mut runner = Runner {
            llama: &self.llama,
            cache: &mut cache,
            reused: 0,
            prompt_time: Duration::ZERO,
            model_time: Duration::ZERO,
        };
        let started = Instant::now();
        let outcome =
            constrain::generate(&mut runner, &self.vocab, &prompt, tools, mode, self.limits)
                .map_err(|e| LocalError::Engine(e.to_string()))?;
        let prompt_time = runner.prompt_time;
        Ok(Generation {
            outcome,
            prompt_tokens: prompt.len(),
            reused_tokens: runner.reused,
            prompt_time,
            generation_time: started.elapsed().saturating_sub(prompt_time),
            model_time: runner.model_time,
        })
    }

    /// The quantized model itself (benchmarks and accuracy checks).
    pub fn llama(&self) -> &Llama {
        &self.llama
    }

    /// The model with its weights widened to f32 (the accuracy reference; ~4× the memory).
    pub fn widened(mut self) -> Self {
        self.llama.widen();
        self.clear_cache();
        self
    }

    /// Forgets the cached sequence, so the next generation runs cold.
    pub fn clear_cache(&self) {
        if let Ok(mut c) = self.cache.lock() {
            *c = KvCache::default();
        }
    }
}

/// Length of the common prefix of two token sequences.
pub fn shared_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

struct Runner<'a> {
    llama: &'a Llama,
    cache: &'a mut KvCache,
    reused: usize,
    prompt_time: Duration,
    model_time: Duration,
}

impl TokenModel for Runner<'_> {
    fn start(&mut self, prompt: &[u32]) -> Result<Vec<f32>, String> {
        if prompt.is_empty() {
            return Err("empty prompt".into());
        }
        let started = Instant::now();
        // Keep the cached prefix this prompt shares with the last sequence; at least one
        // token is run so there are logits to start from.
        let keep = shared_prefix(self.cache.tokens(), prompt).min(prompt.len() - 1);
        self.cache.truncate(keep);
        self.reused = keep;
        let logits = self.llama.forward(self.cache, &prompt[keep..]);
        if logits.is_err() {
            *self.cache = KvCache::default();
        }
        self.prompt_time = started.elapsed();
        logits.map_err(|e| e.to_string())
    }

    fn feed(&mut self, token: u32) -> Result<Vec<f32>, String> {
        let started = Instant::now();
        let logits = self.llama.forward(self.cache, &[token]);
        self.model_time += started.elapsed();
        logits.map_err(|e| e.to_string())
    }
}
