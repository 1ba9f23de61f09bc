//! The loaded model: GGUF weights run on the CPU with candle's quantized llama
//! implementation, the tokenizer built from the file's metadata, and the constrained decoder.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::{ModelWeights, MAX_SEQ_LEN};
use mana_ai_core::chat::ChatMessage;

use crate::constrain::{self, Limits, Outcome, TokenModel, ToolMode, VocabIndex};
use crate::prompt::{self, Segment};
use crate::schema::ToolSchema;
use crate::tokenizer::Tokenizer;
use crate::LocalError;

/// A loaded local model. Generation is serialised (one sequence at a time).
pub struct LocalModel {
    weights: Mutex<ModelWeights>,
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
    pub prompt_time: Duration,
    pub generation_time: Duration,
}

fn meta<'a>(
    content: &'a gguf_file::Content,
    key: &str,
) -> Result<&'a gguf_file::Value, LocalError> {
    content
        .metadata
        .get(key)
        .ok_or_else(|| LocalError::Format(format!("GGUF metadata {key} is missing")))
}

fn strings(content: &gguf_file::Content, key: &str) -> Result<Vec<String>, LocalError> {
    meta(content, key)?
        .to_vec()
        .map_err(|e| LocalError::Format(format!("{key}: {e}")))?
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|e| LocalError::Format(format!("{key}: {e}")))
        })
        .collect()
}

/// The model's weights with every quantized matrix widened to `f32`.
///
/// candle has SIMD kernels for some quantized formats only when the crate is compiled for
/// AVX (not the default x86-64 target), and none at all for Q4_1: profiled, 81 % of a
/// generation went to its scalar dot product. `f32` matrices go through `gemm`, which picks
/// AVX2/FMA at run time. The cost is memory (4 bytes per weight: ~0.5 GB for 135M weights)
/// and a slower load. The widened tensors are written into an in-memory GGUF that candle's
/// llama loader reads like the original file.
fn widened_weights(
    content: &gguf_file::Content,
    file: &mut std::fs::File,
) -> candle_core::Result<ModelWeights> {
    let device = Device::Cpu;
    let mut image = std::io::Cursor::new(Vec::new());
    {
        let mut tensors: Vec<(&str, QTensor)> = Vec::with_capacity(content.tensor_infos.len());
        for name in content.tensor_infos.keys() {
            let q = content.tensor(file, name, &device)?;
            let wide = match q.dtype() {
                GgmlDType::F32 => q,
                _ => QTensor::quantize(&q.dequantize(&device)?, GgmlDType::F32)?,
            };
            tensors.push((name.as_str(), wide));
        }
        let metadata: Vec<(&str, &gguf_file::Value)> = content
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
        gguf_file::write(&mut image, &metadata, &refs)?;
    }
    image.set_position(0);
    let widened = gguf_file::Content::read(&mut image)?;
    ModelWeights::from_gguf(widened, &mut image, &device)
}

impl LocalModel {
    /// Loads a GGUF file (llama architecture, GPT-2-style BPE vocabulary, ChatML template).
    pub fn load(path: &Path) -> Result<Self, LocalError> {
        let started = Instant::now();
        let mut file = std::fs::File::open(path).map_err(|e| LocalError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| LocalError::Format(format!("{}: {e}", path.display())))?;
        let arch = meta(&content, "general.architecture")?
            .to_string()
            .map_err(|e| LocalError::Format(e.to_string()))?;
        if arch != "llama" {
            return Err(LocalError::Format(format!(
                "unsupported architecture {arch:?} (expected llama)"
            )));
        }
        let tokens = strings(&content, "tokenizer.ggml.tokens")?;
        let merges = strings(&content, "tokenizer.ggml.merges")?;
        let types: Vec<i32> = meta(&content, "tokenizer.ggml.token_type")?
            .to_vec()
            .map_err(|e| LocalError::Format(e.to_string()))?
            .iter()
            .map(|v| v.to_i32().unwrap_or(1))
            .collect();
        let id = |key: &str| -> Result<u32, LocalError> {
            meta(&content, key)?
                .to_u32()
                .map_err(|e| LocalError::Format(format!("{key}: {e}")))
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
        let weights = widened_weights(&content, &mut file)
            .map_err(|e| LocalError::Format(format!("weights: {e}")))?;
        Ok(Self {
            weights: Mutex::new(weights),
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
        let mut weights = self
            .weights
            .lock()
            .map_err(|_| LocalError::Engine("model lock poisoned".into()))?;
        let mut runner = Runner {
            weights: &mut weights,
            pos: 0,
            prompt_time: Duration::ZERO,
        };
        let started = Instant::now();
        let outcome =
            constrain::generate(&mut runner, &self.vocab, &prompt, tools, mode, self.limits)
                .map_err(|e| LocalError::Engine(e.to_string()))?;
        let prompt_time = runner.prompt_time;
        Ok(Generation {
            outcome,
            prompt_tokens: prompt.len(),
            prompt_time,
            generation_time: started.elapsed().saturating_sub(prompt_time),
        })
    }
}

struct Runner<'a> {
    weights: &'a mut ModelWeights,
    pos: usize,
    prompt_time: Duration,
}

impl Runner<'_> {
    fn run(&mut self, ids: &[u32]) -> Result<Vec<f32>, String> {
        let input = Tensor::new(ids, &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .map_err(|e| e.to_string())?;
        let logits = self
            .weights
            .forward(&input, self.pos)
            .and_then(|t| t.squeeze(0))
            .and_then(|t| t.to_dtype(candle_core::DType::F32))
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| e.to_string())?;
        self.pos += ids.len();
        Ok(logits)
    }
}

impl TokenModel for Runner<'_> {
    fn start(&mut self, prompt: &[u32]) -> Result<Vec<f32>, String> {
        if prompt.is_empty() {
            return Err("empty prompt".into());
        }
        let started = Instant::now();
        self.pos = 0;
        // The whole prompt goes in one forward pass at position 0, which also resets the
        // key/value cache (the quantized llama only masks correctly from position 0).
        let logits = self.run(prompt);
        self.prompt_time = started.elapsed();
        logits
    }

    fn feed(&mut self, token: u32) -> Result<Vec<f32>, String> {
        self.run(&[token])
    }
}
