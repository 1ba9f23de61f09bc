//! The llama forward pass on quantized weights ([`crate::quant`]), with a key/value cache
//! that keeps the longest shared prefix between sequences (prompt reuse).
//!
//! Every token's computation is independent of how tokens are batched: activations are
//! quantized per token, each (row, token) dot product and each (token, head) attention sum is
//! computed by one thread in a fixed order. So a prompt processed in one pass, in pieces, or
//! on top of a reused cache prefix gives bit-identical logits.

use std::path::Path;

use rayon::prelude::*;

use crate::gguf;
use crate::quant::{self, QActs, QMatrix, GGML_F32, GGML_Q4_1, GGML_Q8_0};
use crate::LocalError;

/// Longest sequence (prompt + output) the cache accepts.
pub const MAX_SEQ_LEN: usize = 4096;
/// Tokens per forward pass of a prompt: a longer prompt runs in chunks, so its activations
/// (about 60 KiB per token) stay bounded.
pub const PROMPT_CHUNK: usize = 512;
/// The key/value cache grows by this many tokens at a time (not by doubling: at most this
/// much unused capacity per layer).
const KV_GROWTH_TOKENS: usize = 256;
/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 16;
/// Tokens per task of a batched product, about (the tile's activations stay in L1/L2 while
/// the matrix is applied to it).
const TOKENS_PER_TILE: usize = 32;

/// Model dimensions read from GGUF metadata.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub layers: usize,
    pub dim: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub eps: f32,
    pub rope_base: f32,
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: QMatrix,
    wk: QMatrix,
    wv: QMatrix,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    gate: QMatrix,
    up: QMatrix,
    down: QMatrix,
}

/// Loaded weights plus the worker threads.
pub struct Llama {
    pub cfg: Config,
    embed: QMatrix,
    output: Option<QMatrix>,
    out_norm: Vec<f32>,
    layers: Vec<Layer>,
    inv_freq: Vec<f32>,
    pool: rayon::ThreadPool,
}

/// Keys and values of the tokens processed so far (f32, `kv_heads·head_dim` per token and
/// layer), and those tokens; also the buffers of a forward pass, kept between passes (no
/// allocation churn per token or per prompt chunk).
#[derive(Default)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    tokens: Vec<u32>,
    scratch: Scratch,
}

impl KvCache {
    /// Tokens held.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Drops everything after the first `n` tokens.
    pub fn truncate(&mut self, n: usize) {
        if n >= self.tokens.len() {
            return;
        }
        let per = if self.tokens.is_empty() {
            0
        } else {
            self.k.first().map_or(0, |k| k.len() / self.tokens.len())
        };
        for (k, v) in self.k.iter_mut().zip(&mut self.v) {
            k.truncate(n * per);
            v.truncate(n * per);
        }
        self.tokens.truncate(n);
    }

    /// The cached tokens.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Bytes held by keys and values.
    pub fn size_bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|x| 4 * x.len()).sum()
    }
}

fn md_u32(c: &gguf::Content, key: &str) -> Result<usize, LocalError> {
    c.metadata
        .get(key)
        .and_then(gguf::Value::as_u32)
        .map(|v| v as usize)
        .ok_or_else(|| LocalError::Format(format!("GGUF metadata {key} is missing")))
}

fn md_f32(c: &gguf::Content, key: &str, default: f32) -> f32 {
    c.metadata
        .get(key)
        .and_then(gguf::Value::as_f32)
        .unwrap_or(default)
}

/// The open model file (tensors are read one at a time, so the load never holds the whole
/// file next to the converted weights).
type Source<'a> = (&'a gguf::Content, &'a mut std::fs::File);

/// Raw bytes of one tensor: (GGUF type id, shape as rows × cols, bytes).
fn raw_tensor(src: &mut Source<'_>, name: &str) -> Result<(u32, Vec<usize>, Vec<u8>), LocalError> {
    use std::io::{Read, Seek, SeekFrom};
    let c = src.0;
    let info = c
        .tensors
        .get(name)
        .ok_or_else(|| LocalError::Format(format!("tensor {name} is missing")))?;
    let n = info.elements();
    let size = match info.ggml_type {
        GGML_F32 => n * 4,
        GGML_Q4_1 => n / 32 * 20,
        GGML_Q8_0 => n / 32 * 34,
        other => {
            return Err(LocalError::Format(format!(
                "tensor {name} has GGML type {other}; supported: F32 (0), Q4_1 (3), Q8_0 (8)"
            )))
        }
    };
    let start = c.data_offset.saturating_add(info.offset);
    let file_len = src.1.metadata().map_or(0, |m| m.len());
    if start.saturating_add(size as u64) > file_len {
        return Err(LocalError::Format(format!(
            "tensor {name} lies outside the file"
        )));
    }
    let mut bytes = vec![0u8; size];
    src.1
        .seek(SeekFrom::Start(start))
        .and_then(|_| src.1.read_exact(&mut bytes))
        .map_err(|e| LocalError::Format(format!("tensor {name}: {e}")))?;
    Ok((info.ggml_type, info.dims.clone(), bytes))
}

fn matrix(src: &mut Source<'_>, name: &str) -> Result<QMatrix, LocalError> {
    let (ty, dims, raw) = raw_tensor(src, name)?;
    let [rows, cols] = dims[..] else {
        return Err(LocalError::Format(format!("{name} is not a matrix")));
    };
    QMatrix::from_gguf(ty, rows, cols, &raw).map_err(|e| LocalError::Format(format!("{name}: {e}")))
}

fn vector(src: &mut Source<'_>, name: &str) -> Result<Vec<f32>, LocalError> {
    let (ty, _, raw) = raw_tensor(src, name)?;
    if ty != GGML_F32 {
        return Err(LocalError::Format(format!("{name} is not f32")));
    }
    Ok(raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn config(c: &gguf::Content) -> Result<Config, LocalError> {
    let dim = md_u32(c, "llama.embedding_length")?;
    let heads = md_u32(c, "llama.attention.head_count")?;
    let kv_heads = md_u32(c, "llama.attention.head_count_kv").unwrap_or(heads);
    let cfg = Config {
        layers: md_u32(c, "llama.block_count")?,
        dim,
        heads,
        kv_heads,
        head_dim: dim / heads.max(1),
        ffn: md_u32(c, "llama.feed_forward_length")?,
        vocab: 0,
        eps: md_f32(c, "llama.attention.layer_norm_rms_epsilon", 1e-5),
        rope_base: md_f32(c, "llama.rope.freq_base", 10_000.0),
    };
    if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 || dim % heads != 0 {
        return Err(LocalError::Format(format!(
            "bad head counts {heads}/{kv_heads}"
        )));
    }
    Ok(cfg)
}

impl Llama {
    /// Loads the weights of a llama GGUF file (`content` read from `path`), keeping them in
    /// their quantized form. `threads` worker threads run the products.
    pub fn load(content: &gguf::Content, path: &Path, threads: usize) -> Result<Self, LocalError> {
        let mut file = std::fs::File::open(path).map_err(|e| LocalError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let src = &mut (content, &mut file);
        let mut cfg = config(content)?;
        let embed = matrix(src, "token_embd.weight")?;
        cfg.vocab = embed.rows;
        let output = if content.tensors.contains_key("output.weight") {
            Some(matrix(src, "output.weight")?)
        } else {
            None
        };
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let name = |n: &str| format!("blk.{i}.{n}.weight");
            layers.push(Layer {
                attn_norm: vector(src, &name("attn_norm"))?,
                wq: matrix(src, &name("attn_q"))?,
                wk: matrix(src, &name("attn_k"))?,
                wv: matrix(src, &name("attn_v"))?,
                wo: matrix(src, &name("attn_output"))?,
                ffn_norm: vector(src, &name("ffn_norm"))?,
                gate: matrix(src, &name("ffn_gate"))?,
                up: matrix(src, &name("ffn_up"))?,
                down: matrix(src, &name("ffn_down"))?,
            });
        }
        let out_norm = vector(src, "output_norm.weight")?;
        let half = cfg.head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| 1.0 / cfg.rope_base.powf(2.0 * i as f32 / cfg.head_dim as f32))
            .collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("local-llm-{i}"))
            .build()
            .map_err(|e| LocalError::Engine(format!("thread pool: {e}")))?;
        Ok(Self {
            cfg,
            embed,
            output,
            out_norm,
            layers,
            inv_freq,
            pool,
        })
    }

    /// Widens every matrix to f32 (~4× the memory): the reference for accuracy checks.
    pub fn widen(&mut self) {
        self.embed = self.embed.widened();
        self.output = self.output.as_ref().map(QMatrix::widened);
        for l in &mut self.layers {
            for m in [
                &mut l.wq,
                &mut l.wk,
                &mut l.wv,
                &mut l.wo,
                &mut l.gate,
                &mut l.up,
                &mut l.down,
            ] {
                *m = m.widened();
            }
        }
    }

    /// Bytes held by the weights.
    pub fn weight_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down]
                    .iter()
                    .map(|m| m.size_bytes())
                    .sum::<usize>()
                    + 4 * (l.attn_norm.len() + l.ffn_norm.len())
            })
            .sum();
        layers + self.embed.size_bytes() + self.output.as_ref().map_or(0, QMatrix::size_bytes)
    }

    /// Runs `tokens` after the cached ones and returns the logits after the last of them.
    pub fn forward(&self, cache: &mut KvCache, tokens: &[u32]) -> Result<Vec<f32>, LocalError> {
        // The whole pass runs on a worker, so each parallel product forks there instead of
        // waking the pool from outside (~150 products per token).
        self.pool.install(|| self.forward_in_pool(cache, tokens))
    }

    fn forward_in_pool(&self, cache: &mut KvCache, tokens: &[u32]) -> Result<Vec<f32>, LocalError> {
        let c = self.cfg;
        let n = tokens.len();
        if n == 0 {
            return Err(LocalError::Engine("no tokens to run".into()));
        }
        if cache.len() + n > MAX_SEQ_LEN {
            return Err(LocalError::PromptTooLong {
                tokens: cache.len() + n,
                max: MAX_SEQ_LEN,
            });
        }
        if cache.k.len() != c.layers {
            cache.k = vec![Vec::new(); c.layers];
            cache.v = vec![Vec::new(); c.layers];
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= c.vocab) {
            return Err(LocalError::Engine(format!("token {id} out of range")));
        }
        // Chunks of at most `PROMPT_CHUNK` tokens: the activations of one pass are bounded
        // whatever the prompt's length, and the logits are the same (they do not depend on
        // the batching).
        let kv_dim = c.kv_heads * c.head_dim;
        for kv in cache.k.iter_mut().chain(&mut cache.v) {
            grow_kv(
                kv,
                (cache.tokens.len() + n) * kv_dim,
                KV_GROWTH_TOKENS * kv_dim,
            );
        }
        let mut s = std::mem::take(&mut cache.scratch);
        let mut x = std::mem::take(&mut s.x);
        for chunk in tokens.chunks(PROMPT_CHUNK) {
            self.run_chunk(cache, chunk, &mut x, &mut s);
        }
        let last = &x[x.len() - c.dim..];
        let mut h = vec![0.0f32; c.dim];
        rms_norm(last, &self.out_norm, c.eps, &mut h);
        s.acts.quantize(&h, c.dim);
        let head = self.output.as_ref().unwrap_or(&self.embed);
        let mut logits = Vec::new();
        self.matmul(head, &s.acts, 1, &mut logits);
        s.x = x;
        cache.scratch = s;
        Ok(logits)
    }

    /// Runs `tokens` (checked, at most [`PROMPT_CHUNK`]) after the cached ones; leaves their
    /// final hidden states in `x`.
    fn run_chunk(&self, cache: &mut KvCache, tokens: &[u32], x: &mut Vec<f32>, s: &mut Scratch) {
        let c = self.cfg;
        let n = tokens.len();
        x.clear();
        x.resize(n * c.dim, 0.0);
        for (t, &id) in tokens.iter().enumerate() {
            self.embed
                .row_f32(id as usize, &mut x[t * c.dim..(t + 1) * c.dim]);
        }
        let start = cache.len();
        let rope = self.rope_table(start, n);
        for (li, layer) in self.layers.iter().enumerate() {
            self.block(layer, li, cache, start, &rope, x, s);
        }
        cache.tokens.extend_from_slice(tokens);
    }

    /// (cos, sin) per new token and frequency.
    fn rope_table(&self, start: usize, n: usize) -> Vec<(f32, f32)> {
        let mut t = Vec::with_capacity(n * self.inv_freq.len());
        for p in start..start + n {
            for &f in &self.inv_freq {
                let (s, c) = (p as f32 * f).sin_cos();
                t.push((c, s));
            }
        }
        t
    }

    /// One transformer block over `n` tokens at positions `start..`.
    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        l: &Layer,
        li: usize,
        cache: &mut KvCache,
        start: usize,
        rope: &[(f32, f32)],
        x: &mut [f32],
        s: &mut Scratch,
    ) {
        let c = self.cfg;
        let n = x.len() / c.dim;
        let kv_dim = c.kv_heads * c.head_dim;
        norm_rows(x, &l.attn_norm, c.eps, c.dim, &mut s.h);
        s.acts.quantize(&s.h, c.dim);
        self.matmuls(
            &s.acts,
            n,
            &mut [(&l.wq, &mut s.q), (&l.wk, &mut s.k), (&l.wv, &mut s.v)],
        );
        let half = c.head_dim / 2;
        for t in 0..n {
            let r = &rope[t * half..(t + 1) * half];
            apply_rope(&mut s.q[t * c.dim..(t + 1) * c.dim], c.head_dim, r);
            apply_rope(&mut s.k[t * kv_dim..(t + 1) * kv_dim], c.head_dim, r);
        }
        cache.k[li].extend_from_slice(&s.k);
        cache.v[li].extend_from_slice(&s.v);
        s.att.clear();
        s.att.resize(n * c.dim, 0.0);
        self.attention(&s.q, &cache.k[li], &cache.v[li], start, &mut s.att);
        s.acts.quantize(&s.att, c.dim);
        self.matmul(&l.wo, &s.acts, n, &mut s.o);
        add(x, &s.o);
        norm_rows(x, &l.ffn_norm, c.eps, c.dim, &mut s.h);
        s.acts.quantize(&s.h, c.dim);
        self.matmuls(&s.acts, n, &mut [(&l.gate, &mut s.g), (&l.up, &mut s.u)]);
        for (g, u) in s.g.iter_mut().zip(&s.u) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
        s.acts.quantize(&s.g, c.ffn);
        self.matmul(&l.down, &s.acts, n, &mut s.o);
        add(x, &s.o);
    }

    /// Causal attention of the new queries (`q`, `n × dim`, positions `start..`) over the
    /// cached keys/values; writes `n × dim` into `out`.
    fn attention(&self, q: &[f32], k: &[f32], v: &[f32], start: usize, out: &mut [f32]) {
        let c = self.cfg;
        let (hd, group) = (c.head_dim, c.heads / c.kv_heads);
        let kv_dim = c.kv_heads * hd;
        let scale = 1.0 / (hd as f32).sqrt();
        self.pool.install(|| {
            out.par_chunks_mut(hd)
                .enumerate()
                .for_each_init(Vec::new, |scores, (i, o)| {
                    let (t, h) = (i / c.heads, i % c.heads);
                    quant::attend(quant::Attend {
                        q: &q[t * c.dim + h * hd..t * c.dim + (h + 1) * hd],
                        k,
                        v,
                        stride: kv_dim,
                        off: (h / group) * hd,
                        len: start + t + 1,
                        scale,
                        scores,
                        out: o,
                    });
                })
        });
    }

    /// `out[t·rows + r] = w[r] · a[t]` for `n` tokens.
    fn matmul(&self, w: &QMatrix, a: &QActs, n: usize, out: &mut Vec<f32>) {
        self.matmuls(a, n, &mut [(w, out)]);
    }

    /// Several products of the same activations in one parallel region (fewer wake-ups per
    /// token). One token (generation): row blocks of every matrix are the tasks. Several
    /// tokens (prompt): token tiles of every matrix are the tasks; each writes its tokens'
    /// rows (`[t][r]`, a contiguous slice it owns), so nothing is transposed afterwards.
    fn matmuls(&self, a: &QActs, n: usize, jobs: &mut [(&QMatrix, &mut Vec<f32>)]) {
        let mut tasks: Vec<(&QMatrix, usize, &mut [f32])> = Vec::new();
        let tile = token_tile(n, self.pool.current_num_threads());
        for (w, out) in jobs.iter_mut() {
            out.clear();
            out.resize(w.rows * n, 0.0);
            if n == 1 {
                for (ci, chunk) in out.chunks_mut(ROWS_PER_TASK).enumerate() {
                    tasks.push((*w, ci * ROWS_PER_TASK, chunk));
                }
            } else {
                for (ti, chunk) in out.chunks_mut(tile * w.rows).enumerate() {
                    tasks.push((*w, ti * tile, chunk));
                }
            }
        }
        self.pool.install(|| {
            tasks.into_par_iter().for_each(|(w, first, o)| {
                if n == 1 {
                    w.dot_rows(first, a, 0, o)
                } else {
                    token_tile_product(w, a, first, o)
                }
            })
        });
    }
}

/// Tokens per task of a batched product: about [`TOKENS_PER_TILE`], a multiple of 4 (the
/// kernel's token group), and the tiles spread evenly over the `threads`.
fn token_tile(n: usize, threads: usize) -> usize {
    let per_round = TOKENS_PER_TILE * threads.max(1);
    let tiles = n.div_ceil(per_round) * threads.max(1);
    n.div_ceil(tiles).next_multiple_of(4).max(4)
}

/// Rows of `w` times tokens `t0..` (`o` holds `[t][r]` for its tokens): a block of
/// [`ROWS_PER_TASK`] rows is applied to the tile's tokens, then written out as one
/// contiguous run per token.
fn token_tile_product(w: &QMatrix, a: &QActs, t0: usize, o: &mut [f32]) {
    let nt = o.len() / w.rows;
    let mut block = vec![0.0f32; ROWS_PER_TASK * nt];
    for r0 in (0..w.rows).step_by(ROWS_PER_TASK) {
        let nr = ROWS_PER_TASK.min(w.rows - r0);
        w.dot_block(r0, a, t0, nt, &mut block[..nr * nt]);
        for t in 0..nt {
            let dst = &mut o[t * w.rows + r0..t * w.rows + r0 + nr];
            for (r, d) in dst.iter_mut().enumerate() {
                *d = block[r * nt + t];
            }
        }
    }
}

/// Reused buffers of one forward pass.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    acts: QActs,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
}

/// Makes room for `needed` values, growing by a multiple of `step` (exact steps, no
/// doubling).
fn grow_kv(v: &mut Vec<f32>, needed: usize, step: usize) {
    if v.capacity() < needed {
        let target = needed.div_ceil(step.max(1)) * step.max(1);
        v.reserve_exact(target - v.len());
    }
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(w) {
        *o = v * inv * w;
    }
}

fn norm_rows(x: &[f32], w: &[f32], eps: f32, dim: usize, out: &mut Vec<f32>) {
    out.clear();
    out.resize(x.len(), 0.0);
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        rms_norm(xr, w, eps, or);
    }
}

/// Rotates interleaved pairs `(x[2i], x[2i+1])` of every head (GGUF llama layout).
fn apply_rope(x: &mut [f32], head_dim: usize, table: &[(f32, f32)]) {
    for head in x.chunks_exact_mut(head_dim) {
        for (pair, &(cos, sin)) in head.chunks_exact_mut(2).zip(table) {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * cos - b * sin;
            pair[1] = a * sin + b * cos;
        }
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_rotates_pairs_and_keeps_norms() {
        let mut x = vec![1.0, 0.0, 0.0, 2.0];
        apply_rope(&mut x, 4, &[(0.0, 1.0), (1.0, 0.0)]);
        assert_eq!(x, vec![0.0, 1.0, 0.0, 2.0]);
    }

    #[test]
    fn rms_norm_scales_to_unit_mean_square() {
        let mut out = vec![0.0; 2];
        rms_norm(&[3.0, 4.0], &[1.0, 2.0], 0.0, &mut out);
        let r = (12.5f32).sqrt();
        assert!((out[0] - 3.0 / r).abs() < 1e-6 && (out[1] - 8.0 / r).abs() < 1e-6);
    }

    #[test]
    fn the_cache_grows_in_exact_steps() {
        let mut v: Vec<f32> = Vec::new();
        grow_kv(&mut v, 10, 256);
        assert_eq!(v.capacity(), 256);
        v.resize(256, 0.0);
        grow_kv(&mut v, 256, 256);
        assert_eq!(v.capacity(), 256, "enough room: unchanged");
        grow_kv(&mut v, 257, 256);
        assert_eq!(
            v.capacity(),
            512,
            "one step more, not a doubling of a large cache"
        );
        v.resize(512, 0.0);
        grow_kv(&mut v, 1300, 256);
        assert_eq!(v.capacity(), 1536);
    }

    #[test]
    fn cache_truncation_keeps_the_prefix() {
        let mut c = KvCache {
            k: vec![vec![1.0; 6]],
            v: vec![vec![2.0; 6]],
            tokens: vec![7, 8, 9],
            scratch: Scratch::default(),
        };
        c.truncate(5);
        assert_eq!(c.len(), 3);
        c.truncate(1);
        assert_eq!(
            (c.tokens(), c.k[0].len(), c.v[0].len()),
            (&[7u32][..], 2, 2)
        );
        c.truncate(0);
        assert!(c.is_empty() && c.size_bytes() == 0);
    }
}
