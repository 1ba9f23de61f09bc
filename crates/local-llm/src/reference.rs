//! The f32 reference: every quantized matrix widened to f32 and run through candle's llama
//! (the engine before issue 17). Used only to measure the accuracy of the quantized kernels
//! (`cargo bench --bench local_model`, the model-backed tests); ~0.5 GB resident.

use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;

use crate::LocalError;

/// Widened weights and the position of the next token.
pub struct Reference {
    weights: ModelWeights,
    pos: usize,
}

fn err(e: candle_core::Error) -> LocalError {
    LocalError::Engine(e.to_string())
}

impl Reference {
    /// Loads `path`, widening every quantized tensor to f32 (an in-memory GGUF copy).
    pub fn load(path: &Path) -> Result<Self, LocalError> {
        let device = Device::Cpu;
        let mut file = std::fs::File::open(path).map_err(|e| LocalError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let content = gguf_file::Content::read(&mut file).map_err(err)?;
        let mut image = std::io::Cursor::new(Vec::new());
        {
            let mut tensors: Vec<(&str, QTensor)> = Vec::new();
            for name in content.tensor_infos.keys() {
                let q = content.tensor(&mut file, name, &device).map_err(err)?;
                let wide = match q.dtype() {
                    GgmlDType::F32 => q,
                    _ => QTensor::quantize(&q.dequantize(&device).map_err(err)?, GgmlDType::F32)
                        .map_err(err)?,
                };
                tensors.push((name.as_str(), wide));
            }
            let metadata: Vec<(&str, &gguf_file::Value)> =
                content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
            let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
            gguf_file::write(&mut image, &metadata, &refs).map_err(err)?;
        }
        image.set_position(0);
        let widened = gguf_file::Content::read(&mut image).map_err(err)?;
        let weights = ModelWeights::from_gguf(widened, &mut image, &device).map_err(err)?;
        Ok(Self { weights, pos: 0 })
    }

    /// Logits after the last of `prompt`, run as a fresh sequence (candle's llama masks a
    /// multi-token batch correctly only from position 0).
    pub fn start(&mut self, prompt: &[u32]) -> Result<Vec<f32>, LocalError> {
        self.pos = 0;
        self.run(prompt)
    }

    /// Logits after appending one token.
    pub fn feed(&mut self, token: u32) -> Result<Vec<f32>, LocalError> {
        self.run(&[token])
    }

    fn run(&mut self, tokens: &[u32]) -> Result<Vec<f32>, LocalError> {
        let input = Tensor::new(tokens, &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .map_err(err)?;
        let pos = self.pos;
        self.pos += tokens.len();
        self.weights
            .forward(&input, pos)
            .and_then(|t| t.squeeze(0))
            .and_then(|t| t.to_dtype(candle_core::DType::F32))
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(err)
    }
}
