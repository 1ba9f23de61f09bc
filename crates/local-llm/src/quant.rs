//! Quantized weight matrices and their dot products, run on the GGUF's own formats without
//! widening: Q4_1 (the layers of SmolLM2's Q4_1 file) and Q8_0 (its embedding table, also the
//! output projection), against activations quantized to 8 bits per 32-value block.
//!
//! The AVX2 kernels (`maddubs` integer products, 32 per instruction, written with `pulp`'s
//! safe intrinsics) are chosen at run time, so the crate needs no special compile flags
//! and no `unsafe`; elsewhere a
//! scalar kernel computes the same sums (integer products are exact, so both kernels agree
//! up to the order of float additions).

use half::f16;

/// Values per quantization block (both formats and the activations).
pub const BLOCK: usize = 32;
/// GGUF type id of Q4_1.
pub const GGML_Q4_1: u32 = 3;
/// GGUF type id of Q8_0.
pub const GGML_Q8_0: u32 = 8;
/// GGUF type id of f32.
pub const GGML_F32: u32 = 0;

/// The storage of one quantized matrix (rows of `cols` values, `cols` a multiple of 32).
enum Blocks {
    /// Per block: scale `d`, minimum `m`, 16 bytes of nibbles (value `d·q + m`). Nibble `j` of
    /// byte `i` is element `i + 16·j` of the block, as in GGUF.
    Q4_1 {
        d: Vec<f32>,
        m: Vec<f32>,
        qs: Vec<u8>,
    },
    /// Per block: scale `d`, 32 signed bytes (value `d·q`).
    Q8_0 { d: Vec<f32>, qs: Vec<i8> },
    /// Widened to f32 (the accuracy reference only): multiplied with the unquantized
    /// activations.
    F32(Vec<f32>),
}

/// A quantized weight matrix.
pub struct QMatrix {
    pub rows: usize,
    pub cols: usize,
    blocks: Blocks,
}

/// Activations quantized per 32-value block: `x ≈ d·q`, with `s = d·Σq` kept for Q4_1's
/// minimum term, and the values themselves (`x`, for widened matrices).
#[derive(Default)]
pub struct QActs {
    pub cols: usize,
    pub x: Vec<f32>,
    pub qs: Vec<i8>,
    pub d: Vec<f32>,
    pub s: Vec<f32>,
}

fn half_at(raw: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([raw[at], raw[at + 1]]).to_f32()
}

impl QMatrix {
    /// Reads GGUF block data (`raw`) of type `ggml_type` holding `rows × cols` values.
    pub fn from_gguf(ggml_type: u32, rows: usize, cols: usize, raw: &[u8]) -> Result<Self, String> {
        if !cols.is_multiple_of(BLOCK) {
            return Err(format!("{cols} columns is not a multiple of {BLOCK}"));
        }
        let n = rows * cols / BLOCK;
        let blocks = match ggml_type {
            GGML_Q4_1 => {
                if raw.len() != n * 20 {
                    return Err(format!(
                        "Q4_1 data has {} bytes, want {}",
                        raw.len(),
                        n * 20
                    ));
                }
                let mut d = Vec::with_capacity(n);
                let mut m = Vec::with_capacity(n);
                let mut qs = Vec::with_capacity(n * 16);
                for b in raw.chunks_exact(20) {
                    d.push(half_at(b, 0));
                    m.push(half_at(b, 2));
                    qs.extend_from_slice(&b[4..20]);
                }
                Blocks::Q4_1 { d, m, qs }
            }
            GGML_Q8_0 => {
                if raw.len() != n * 34 {
                    return Err(format!(
                        "Q8_0 data has {} bytes, want {}",
                        raw.len(),
                        n * 34
                    ));
                }
                let mut d = Vec::with_capacity(n);
                let mut qs = Vec::with_capacity(n * BLOCK);
                for b in raw.chunks_exact(34) {
                    d.push(half_at(b, 0));
                    qs.extend(b[2..34].iter().map(|&v| v as i8));
                }
                Blocks::Q8_0 { d, qs }
            }
            other => {
                return Err(format!(
                    "unsupported tensor type {other} (want Q4_1 or Q8_0)"
                ))
            }
        };
        Ok(Self { rows, cols, blocks })
    }

    /// Bytes held by the matrix.
    pub fn size_bytes(&self) -> usize {
        match &self.blocks {
            Blocks::Q4_1 { d, m, qs } => 4 * (d.len() + m.len()) + qs.len(),
            Blocks::Q8_0 { d, qs } => 4 * d.len() + qs.len(),
            Blocks::F32(w) => 4 * w.len(),
        }
    }

    /// The same matrix widened to f32 (4 bytes per weight): the reference that measures the
    /// accuracy of the quantized products.
    pub fn widened(&self) -> Self {
        let mut w = vec![0.0f32; self.rows * self.cols];
        for (r, row) in w.chunks_exact_mut(self.cols).enumerate() {
            self.row_f32(r, row);
        }
        Self {
            rows: self.rows,
            cols: self.cols,
            blocks: Blocks::F32(w),
        }
    }

    /// Row `r` widened to f32 (embedding lookups and tests).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let nb = self.cols / BLOCK;
        for b in 0..nb {
            let i = r * nb + b;
            let o = &mut out[b * BLOCK..(b + 1) * BLOCK];
            match &self.blocks {
                Blocks::Q4_1 { d, m, qs } => {
                    let q = &qs[i * 16..(i + 1) * 16];
                    for j in 0..16 {
                        o[j] = d[i] * f32::from(q[j] & 0x0F) + m[i];
                        o[j + 16] = d[i] * f32::from(q[j] >> 4) + m[i];
                    }
                }
                Blocks::Q8_0 { d, qs } => {
                    for (j, v) in o.iter_mut().enumerate() {
                        *v = d[i] * f32::from(qs[i * BLOCK + j]);
                    }
                }
                Blocks::F32(w) => o.copy_from_slice(&w[i * BLOCK..(i + 1) * BLOCK]),
            }
        }
    }

    /// Dot product of row `r` with quantized activations `a` (token `t` of a batch).
    pub fn dot(&self, r: usize, a: &QActs, t: usize) -> f32 {
        let mut out = [0.0f32];
        self.dot_block(r, a, t, 1, &mut out);
        out[0]
    }

    /// `out[i] = row (r0 + i) · token t`: consecutive rows against one token.
    pub fn dot_rows(&self, r0: usize, a: &QActs, t: usize, out: &mut [f32]) {
        self.dot_block(r0, a, t, 1, out);
    }

    /// `out[i·nt + j] = row (r0 + i) · token (t0 + j)`: a block of consecutive rows against
    /// `nt` consecutive tokens (`out.len() / nt` rows). Every (row, token) product is
    /// computed by the same instruction sequence whatever the block, so results do not
    /// depend on how products are grouped.
    pub fn dot_block(&self, r0: usize, a: &QActs, t0: usize, nt: usize, out: &mut [f32]) {
        let nb = self.cols / BLOCK;
        let acts = ActsRef {
            nb,
            d: &a.d,
            s: &a.s,
            qs: &a.qs,
        };
        let span = Span { r0, t0, nt };
        match &self.blocks {
            Blocks::Q4_1 { d, m, qs } => {
                let w = Q41Ref { nb, d, m, qs };
                #[cfg(target_arch = "x86_64")]
                if let Some(simd) = x86::v3() {
                    return x86::products(simd, &w, &acts, span, out);
                }
                for (i, o) in out.iter_mut().enumerate() {
                    let (r, t) = span.at(i);
                    let (wd, wm, wq) = w.row(r);
                    let (ad, as_, aq) = acts.tokens(t, 1);
                    *o = dot_q4_1_scalar(wd, wm, wq, ad, as_, aq);
                }
            }
            Blocks::Q8_0 { d, qs } => {
                let w = Q80Ref { nb, d, qs };
                #[cfg(target_arch = "x86_64")]
                if let Some(simd) = x86::v3() {
                    return x86::products(simd, &w, &acts, span, out);
                }
                for (i, o) in out.iter_mut().enumerate() {
                    let (r, t) = span.at(i);
                    let (wd, wq) = w.row(r);
                    let (ad, _, aq) = acts.tokens(t, 1);
                    *o = dot_q8_0_scalar(wd, wq, ad, aq);
                }
            }
            Blocks::F32(w) => {
                let c = self.cols;
                for (i, o) in out.iter_mut().enumerate() {
                    let (r, t) = span.at(i);
                    *o = dot_f32(&w[r * c..(r + 1) * c], &a.x[t * c..(t + 1) * c]);
                }
            }
        }
    }
}

/// A block of (row, token) products: rows `r0..`, tokens `t0..t0 + nt`, output `i` is row
/// `r0 + i / nt`, token `t0 + i % nt`.
#[derive(Clone, Copy)]
struct Span {
    r0: usize,
    t0: usize,
    nt: usize,
}

impl Span {
    #[inline(always)]
    fn at(self, i: usize) -> (usize, usize) {
        (self.r0 + i / self.nt, self.t0 + i % self.nt)
    }
}

/// Quantized activations, viewed per token.
struct ActsRef<'a> {
    nb: usize,
    d: &'a [f32],
    s: &'a [f32],
    qs: &'a [i8],
}

impl ActsRef<'_> {
    /// Scales, sums and values of `n` consecutive tokens from `t` (token-major, `nb`
    /// blocks each).
    #[inline(always)]
    fn tokens(&self, t: usize, n: usize) -> (&[f32], &[f32], &[i8]) {
        let (b0, b1) = (t * self.nb, (t + n) * self.nb);
        (
            &self.d[b0..b1],
            &self.s[b0..b1],
            &self.qs[b0 * BLOCK..b1 * BLOCK],
        )
    }
}

/// A Q4_1 matrix, viewed per row.
struct Q41Ref<'a> {
    nb: usize,
    d: &'a [f32],
    m: &'a [f32],
    qs: &'a [u8],
}

impl Q41Ref<'_> {
    #[inline(always)]
    fn row(&self, r: usize) -> (&[f32], &[f32], &[u8]) {
        let (b0, b1) = (r * self.nb, (r + 1) * self.nb);
        (&self.d[b0..b1], &self.m[b0..b1], &self.qs[b0 * 16..b1 * 16])
    }
}

/// A Q8_0 matrix, viewed per row.
struct Q80Ref<'a> {
    nb: usize,
    d: &'a [f32],
    qs: &'a [i8],
}

impl Q80Ref<'_> {
    #[inline(always)]
    fn row(&self, r: usize) -> (&[f32], &[i8]) {
        let (b0, b1) = (r * self.nb, (r + 1) * self.nb);
        (&self.d[b0..b1], &self.qs[b0 * BLOCK..b1 * BLOCK])
    }
}

/// Whether the AVX2 + FMA kernels run (else the scalar ones).
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86::v3().is_some()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn dot_q4_1_scalar(wd: &[f32], wm: &[f32], wq: &[u8], ad: &[f32], as_: &[f32], aq: &[i8]) -> f32 {
    let mut sum = 0.0f32;
    for b in 0..wd.len() {
        let q = &wq[b * 16..(b + 1) * 16];
        let a = &aq[b * BLOCK..(b + 1) * BLOCK];
        let mut acc = 0i32;
        for j in 0..16 {
            acc += i32::from(q[j] & 0x0F) * i32::from(a[j]);
            acc += i32::from(q[j] >> 4) * i32::from(a[j + 16]);
        }
        sum += wd[b] * ad[b] * acc as f32 + wm[b] * as_[b];
    }
    sum
}

fn dot_q8_0_scalar(wd: &[f32], wq: &[i8], ad: &[f32], aq: &[i8]) -> f32 {
    let mut sum = 0.0f32;
    for b in 0..wd.len() {
        let acc: i32 = wq[b * BLOCK..(b + 1) * BLOCK]
            .iter()
            .zip(&aq[b * BLOCK..(b + 1) * BLOCK])
            .map(|(&w, &a)| i32::from(w) * i32::from(a))
            .sum();
        sum += wd[b] * ad[b] * acc as f32;
    }
    sum
}

impl QActs {
    /// Quantizes `n` rows of `cols` values (`x` is row-major), reusing the buffers.
    pub fn quantize(&mut self, x: &[f32], cols: usize) {
        let nb = x.len() / BLOCK;
        self.cols = cols;
        self.x.clear();
        self.x.extend_from_slice(x);
        self.qs.resize(x.len(), 0);
        self.d.resize(nb, 0.0);
        self.s.resize(nb, 0.0);
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = x86::v3() {
            return x86::quantize(simd, x, &mut self.qs, &mut self.d, &mut self.s);
        }
        self.quantize_scalar(x);
    }

    fn quantize_scalar(&mut self, x: &[f32]) {
        let nb = x.len() / BLOCK;
        for b in 0..nb {
            let v = &x[b * BLOCK..(b + 1) * BLOCK];
            let amax = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for (q, &x) in self.qs[b * BLOCK..(b + 1) * BLOCK].iter_mut().zip(v) {
                // Round half away from zero; `as` truncates (no libm call, unlike `round`)
                // and saturates, and |x·inv| ≤ 127 by construction.
                let v = x * inv;
                let r = (v + 0.5f32.copysign(v)) as i32;
                let r = r.clamp(-127, 127) as i8;
                sum += i32::from(r);
                *q = r;
            }
            self.d[b] = d;
            self.s[b] = d * sum as f32;
        }
    }
}

/// `Σ a·b` over f32 slices of equal length (attention scores).
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = x86::v3() {
        return x86::dot_f32(simd, a, b);
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The f32 helpers attention needs, per instruction set.
trait F32Ops: Copy {
    /// `Σ a·b`.
    fn dot(self, a: &[f32], b: &[f32]) -> f32;
    /// `y += s·x`.
    fn axpy(self, y: &mut [f32], s: f32, x: &[f32]);
}

#[derive(Clone, Copy)]
struct Scalar;

impl F32Ops for Scalar {
    fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn axpy(self, y: &mut [f32], s: f32, x: &[f32]) {
        for (y, x) in y.iter_mut().zip(x) {
            *y += s * x;
        }
    }
}

/// One query's causal attention over cached keys and values: `out += Σ_j softmax(q·k_j ·
/// scale)·v_j` for the first `len` cached tokens. Keys and values are rows of `stride`
/// values, the head's part starting at `off`; `scores` is a reused buffer.
pub struct Attend<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub stride: usize,
    pub off: usize,
    pub len: usize,
    pub scale: f32,
    pub scores: &'a mut Vec<f32>,
    pub out: &'a mut [f32],
}

impl Attend<'_> {
    #[inline(always)]
    fn run<O: F32Ops>(self, ops: O) {
        let Self {
            q,
            k,
            v,
            stride,
            off,
            len,
            scale,
            scores,
            out,
        } = self;
        let hd = q.len();
        scores.clear();
        let mut max = f32::NEG_INFINITY;
        for j in 0..len {
            let s = ops.dot(q, &k[j * stride + off..j * stride + off + hd]) * scale;
            max = max.max(s);
            scores.push(s);
        }
        let mut sum = 0.0;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        for (j, &p) in scores.iter().enumerate() {
            ops.axpy(out, p / sum, &v[j * stride + off..j * stride + off + hd]);
        }
    }
}

/// Runs one query's attention ([`Attend`]) in one vectorised region.
pub fn attend(job: Attend<'_>) {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = x86::v3() {
        return x86::attend(simd, job);
    }
    job.run(Scalar);
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    }

    fn q4_1_raw(rows: usize, cols: usize, seed: &mut u64) -> Vec<u8> {
        let mut raw = Vec::new();
        for _ in 0..rows * cols / BLOCK {
            raw.extend(f16::from_f32(0.01 + lcg(seed).abs() * 0.1).to_le_bytes());
            raw.extend(f16::from_f32(lcg(seed)).to_le_bytes());
            raw.extend((0..16).map(|_| ((lcg(seed) + 0.5) * 255.0) as u8));
        }
        raw
    }

    fn q8_0_raw(rows: usize, cols: usize, seed: &mut u64) -> Vec<u8> {
        let mut raw = Vec::new();
        for _ in 0..rows * cols / BLOCK {
            raw.extend(f16::from_f32(0.001 + lcg(seed).abs() * 0.01).to_le_bytes());
            raw.extend((0..32).map(|_| (lcg(seed) * 254.0) as i8 as u8));
        }
        raw
    }

    /// The quantized dot product matches the f32 dot product of the widened row with the
    /// activations (up to the activations' 8-bit rounding), for both kernels and formats.
    #[test]
    fn dot_products_match_widened_rows() {
        let mut seed = 42;
        let (rows, cols) = (5, 96);
        for (ty, raw) in [
            (GGML_Q4_1, q4_1_raw(rows, cols, &mut seed)),
            (GGML_Q8_0, q8_0_raw(rows, cols, &mut seed)),
        ] {
            let m = QMatrix::from_gguf(ty, rows, cols, &raw).unwrap_or_else(|e| panic!("{e}"));
            let x: Vec<f32> = (0..2 * cols).map(|_| lcg(&mut seed) * 4.0).collect();
            let mut a = QActs::default();
            a.quantize(&x, cols);
            let mut row = vec![0.0; cols];
            for r in 0..rows {
                m.row_f32(r, &mut row);
                for t in 0..2 {
                    let exact: f32 = dot_f32(&row, &x[t * cols..(t + 1) * cols]);
                    let norm: f32 = row.iter().map(|v| v.abs()).sum::<f32>() * 4.0 / 127.0;
                    let got = m.dot(r, &a, t);
                    assert!(
                        (got - exact).abs() <= norm,
                        "{ty} {r} {t}: {got} vs {exact}"
                    );
                    let scalar = match &m.blocks {
                        Blocks::Q4_1 { d, m: mm, qs } => {
                            let nb = cols / BLOCK;
                            dot_q4_1_scalar(
                                &d[r * nb..(r + 1) * nb],
                                &mm[r * nb..(r + 1) * nb],
                                &qs[r * nb * 16..(r + 1) * nb * 16],
                                &a.d[t * nb..(t + 1) * nb],
                                &a.s[t * nb..(t + 1) * nb],
                                &a.qs[t * cols..(t + 1) * cols],
                            )
                        }
                        Blocks::Q8_0 { d, qs } => {
                            let nb = cols / BLOCK;
                            dot_q8_0_scalar(
                                &d[r * nb..(r + 1) * nb],
                                &qs[r * cols..(r + 1) * cols],
                                &a.d[t * nb..(t + 1) * nb],
                                &a.qs[t * cols..(t + 1) * cols],
                            )
                        }
                        Blocks::F32(_) => unreachable!("not widened"),
                    };
                    assert!((got - scalar).abs() <= 1e-4 * (1.0 + scalar.abs()));
                }
            }
        }
    }

    /// A product gives the same bits whether computed row by row, in row groups (one
    /// token) or in token groups (one row): what prompt reuse and batching rely on.
    #[test]
    fn products_do_not_depend_on_grouping() {
        let mut seed = 11;
        let (rows, cols, n) = (7, 96, 6);
        for (ty, raw) in [
            (GGML_Q4_1, q4_1_raw(rows, cols, &mut seed)),
            (GGML_Q8_0, q8_0_raw(rows, cols, &mut seed)),
        ] {
            let m = QMatrix::from_gguf(ty, rows, cols, &raw).unwrap_or_else(|e| panic!("{e}"));
            let x: Vec<f32> = (0..n * cols).map(|_| lcg(&mut seed) * 4.0).collect();
            let mut a = QActs::default();
            a.quantize(&x, cols);
            let mut block = vec![0.0; rows * n];
            m.dot_block(0, &a, 0, n, &mut block);
            for t in 0..n {
                let mut by_rows = vec![0.0; rows];
                m.dot_rows(0, &a, t, &mut by_rows);
                for r in 0..rows {
                    let one = m.dot(r, &a, t);
                    assert_eq!(one.to_bits(), by_rows[r].to_bits(), "{ty} r{r} t{t}");
                    assert_eq!(one.to_bits(), block[r * n + t].to_bits(), "{ty} r{r} t{t}");
                }
            }
        }
    }

    /// The vectorised quantization writes the same bytes and scales as the scalar one.
    #[test]
    fn quantization_kernels_agree() {
        let mut seed = 3;
        let mut x: Vec<f32> = (0..32 * 40).map(|_| lcg(&mut seed) * 30.0).collect();
        x[40..72].fill(0.0);
        x[100] = 1e30;
        x[200] = -1e-30;
        x[300] = f32::MAX;
        let (mut fast, mut slow) = (QActs::default(), QActs::default());
        fast.quantize(&x, 64);
        slow.qs.resize(x.len(), 0);
        slow.d.resize(x.len() / BLOCK, 0.0);
        slow.s.resize(x.len() / BLOCK, 0.0);
        slow.quantize_scalar(&x);
        assert_eq!(fast.qs, slow.qs);
        assert_eq!(fast.d, slow.d);
        assert_eq!(fast.s, slow.s);
    }

    #[test]
    fn malformed_data_is_refused() {
        assert!(QMatrix::from_gguf(GGML_Q4_1, 2, 32, &[0; 39]).is_err());
        assert!(QMatrix::from_gguf(GGML_Q8_0, 1, 33, &[0; 34]).is_err());
        assert!(QMatrix::from_gguf(GGML_F32, 1, 32, &[0; 128]).is_err());
    }

    /// The vectorised attention (heads of 64 and 128 values, key counts around the
    /// four-key grouping) agrees with the scalar one.
    #[test]
    fn attention_kernels_agree() {
        let mut seed = 7;
        for hd in [64, 128, 40] {
            let stride = 3 * hd;
            for len in [1, 3, 4, 5, 8, 13] {
                let k: Vec<f32> = (0..len * stride).map(|_| lcg(&mut seed)).collect();
                let v: Vec<f32> = (0..len * stride).map(|_| lcg(&mut seed)).collect();
                let q: Vec<f32> = (0..hd).map(|_| lcg(&mut seed) * 8.0).collect();
                let run = |vectorised: bool| {
                    let mut out = vec![0.5f32; hd];
                    let job = Attend {
                        q: &q,
                        k: &k,
                        v: &v,
                        stride,
                        off: hd,
                        len,
                        scale: 0.125,
                        scores: &mut Vec::new(),
                        out: &mut out,
                    };
                    if vectorised {
                        attend(job);
                    } else {
                        job.run(Scalar);
                    }
                    out
                };
                let (fast, slow) = (run(true), run(false));
                for (a, b) in fast.iter().zip(&slow) {
                    assert!((a - b).abs() < 1e-5, "hd {hd} len {len}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn f32_helpers() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let b = vec![2.0f32; 19];
        assert_eq!(dot_f32(&a, &b), 342.0);
        // Two cached tokens of stride 3, the head at offset 1 (2 values): scores 1·1 and
        // 1·3 with scale ln 2 give weights 1/3 and 2/3 of the values.
        let k = [9.0, 1.0, 0.0, 9.0, 3.0, 0.0];
        let v = [9.0, 3.0, 6.0, 9.0, 6.0, 0.0];
        let mut out = vec![1.0f32; 2];
        attend(Attend {
            q: &[1.0, 5.0],
            k: &k,
            v: &v,
            stride: 3,
            off: 1,
            len: 2,
            scale: std::f32::consts::LN_2 / 2.0,
            scores: &mut Vec::new(),
            out: &mut out,
        });
        assert!(
            (out[0] - 6.0).abs() < 1e-5 && (out[1] - 3.0).abs() < 1e-5,
            "{out:?}"
        );
    }
}
