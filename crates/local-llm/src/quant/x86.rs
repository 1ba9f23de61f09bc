//! AVX2 + FMA kernels through `pulp` (safe wrappers of the intrinsics; the workspace
//! forbids `unsafe`). Each entry point runs its body inside `V3::vectorize`, which
//! compiles it with the AVX2/FMA target features.
use std::arch::x86_64::{__m128i, __m256, __m256i};
use std::sync::OnceLock;

use pulp::x86::V3;

use super::{ActsRef, Q41Ref, Q80Ref, Span, BLOCK};

/// The AVX2/FMA token when the CPU has them (detected once).
pub fn v3() -> Option<V3> {
    static V3_TOKEN: OnceLock<Option<V3>> = OnceLock::new();
    *V3_TOKEN.get_or_init(V3::try_new)
}

#[inline(always)]
fn hsum(simd: V3, v: __m256) -> f32 {
    let (sse, avx) = (simd.sse, simd.avx);
    let s = sse._mm_add_ps(
        avx._mm256_castps256_ps128(v),
        avx._mm256_extractf128_ps::<1>(v),
    );
    let s = sse._mm_add_ps(s, sse._mm_movehl_ps(s, s));
    let s = sse._mm_add_ss(s, sse._mm_shuffle_ps::<1>(s, s));
    sse._mm_cvtss_f32(s)
}

/// The first `8·C` values of `s` (no closures: see [`Quantize`]).
#[inline(always)]
fn load_n<const C: usize>(simd: V3, s: &[f32]) -> [__m256; C] {
    let mut out = [simd.avx._mm256_setzero_ps(); C];
    for (o, s) in out.iter_mut().zip(s.chunks_exact(8)) {
        *o = load8(s);
    }
    out
}

#[inline(always)]
fn load8(b: &[f32]) -> __m256 {
    pulp::cast(<[f32; 8]>::try_from(b).unwrap_or_default())
}

/// Q4_1 row · Q8 activations of `N` consecutive tokens (`ad`, `as_`, `aq` hold them one
/// after the other, `nb` blocks each): `Σ d_w·d_a·Σ(q_w·q_a)` per block, plus `Σ m_w·s_a`
/// (8 blocks per instruction). The row's nibbles are unpacked once per block for all `N`
/// tokens; each token has its own accumulator and the same instruction sequence whatever
/// `N`, so results do not depend on the grouping.
#[inline(always)]
fn dot_q4_1<const N: usize>(
    simd: V3,
    (wd, wm, wq): (&[f32], &[f32], &[u8]),
    (ad, as_, aq): (&[f32], &[f32], &[i8]),
) -> [f32; N] {
    let (sse2, avx, avx2, fma) = (simd.sse2, simd.avx, simd.avx2, simd.fma);
    let nb = wd.len();
    // Slices of exactly `nb` elements, so that indexing by block needs no checks.
    let (wm, wq) = (&wm[..nb], &wq.as_chunks::<16>().0[..nb]);
    let aq = aq.as_chunks::<BLOCK>().0;
    let mut aqs: [&[[i8; BLOCK]]; N] = [&[]; N];
    let mut ads: [&[f32]; N] = [&[]; N];
    for j in 0..N {
        aqs[j] = &aq[j * nb..][..nb];
        ads[j] = &ad[j * nb..][..nb];
    }
    let low = sse2._mm_set1_epi8(0x0F);
    let ones = avx._mm256_set1_epi16(1);
    let mut acc = [avx._mm256_setzero_ps(); N];
    for b in 0..nb {
        let q: __m128i = pulp::cast(wq[b]);
        let lo = sse2._mm_and_si128(q, low);
        let hi = sse2._mm_and_si128(sse2._mm_srli_epi16::<4>(q), low);
        let w = avx._mm256_set_m128i(hi, lo);
        for j in 0..N {
            let a: __m256i = pulp::cast(aqs[j][b]);
            let p = avx2._mm256_madd_epi16(avx2._mm256_maddubs_epi16(w, a), ones);
            let scale = avx._mm256_set1_ps(wd[b] * ads[j][b]);
            acc[j] = fma._mm256_fmadd_ps(scale, avx._mm256_cvtepi32_ps(p), acc[j]);
        }
    }
    let full = nb / 8 * 8;
    let mut out = [0.0f32; N];
    for (j, o) in out.iter_mut().enumerate() {
        let as_ = &as_[j * nb..(j + 1) * nb];
        let mut acc = acc[j];
        for b0 in (0..full).step_by(8) {
            acc = fma._mm256_fmadd_ps(load8(&wm[b0..b0 + 8]), load8(&as_[b0..b0 + 8]), acc);
        }
        let mut tail = 0.0f32;
        for b in full..nb {
            tail += wm[b] * as_[b];
        }
        *o = hsum(simd, acc) + tail;
    }
    out
}

/// `R` Q4_1 rows · the Q8 activations of one token: the same instruction sequence per row
/// as [`dot_q4_1`] with one token (so the same result), with the rows interleaved so that
/// their accumulation chains overlap.
#[inline(always)]
fn dot_q4_1_rows<const R: usize>(
    simd: V3,
    rows: [(&[f32], &[f32], &[u8]); R],
    (ad, as_, aq): (&[f32], &[f32], &[i8]),
) -> [f32; R] {
    let (sse2, avx, avx2, fma) = (simd.sse2, simd.avx, simd.avx2, simd.fma);
    let nb = ad.len();
    let (as_, aq) = (&as_[..nb], &aq.as_chunks::<BLOCK>().0[..nb]);
    let mut wds: [&[f32]; R] = [&[]; R];
    let mut wqs: [&[[u8; 16]]; R] = [&[]; R];
    for r in 0..R {
        wds[r] = &rows[r].0[..nb];
        wqs[r] = &rows[r].2.as_chunks::<16>().0[..nb];
    }
    let low = sse2._mm_set1_epi8(0x0F);
    let ones = avx._mm256_set1_epi16(1);
    let mut acc = [avx._mm256_setzero_ps(); R];
    for b in 0..nb {
        let a: __m256i = pulp::cast(aq[b]);
        for r in 0..R {
            let q: __m128i = pulp::cast(wqs[r][b]);
            let lo = sse2._mm_and_si128(q, low);
            let hi = sse2._mm_and_si128(sse2._mm_srli_epi16::<4>(q), low);
            let w = avx._mm256_set_m128i(hi, lo);
            let p = avx2._mm256_madd_epi16(avx2._mm256_maddubs_epi16(w, a), ones);
            let scale = avx._mm256_set1_ps(wds[r][b] * ad[b]);
            acc[r] = fma._mm256_fmadd_ps(scale, avx._mm256_cvtepi32_ps(p), acc[r]);
        }
    }
    let full = nb / 8 * 8;
    let mut out = [0.0f32; R];
    for ((o, acc), (_, wm, _)) in out.iter_mut().zip(acc).zip(&rows) {
        let mut acc = acc;
        for b0 in (0..full).step_by(8) {
            acc = fma._mm256_fmadd_ps(load8(&wm[b0..b0 + 8]), load8(&as_[b0..b0 + 8]), acc);
        }
        let mut tail = 0.0f32;
        for b in full..nb {
            tail += wm[b] * as_[b];
        }
        *o = hsum(simd, acc) + tail;
    }
    out
}

/// Q8_0 row · Q8 activations.
#[inline(always)]
fn dot_q8_0(simd: V3, wd: &[f32], wq: &[i8], ad: &[f32], aq: &[i8]) -> f32 {
    let (avx, avx2, fma) = (simd.avx, simd.avx2, simd.fma);
    let ones = avx._mm256_set1_epi16(1);
    let mut acc = avx._mm256_setzero_ps();
    let blocks = wq
        .as_chunks::<BLOCK>()
        .0
        .iter()
        .zip(aq.as_chunks::<BLOCK>().0);
    for ((w, a), (wd, ad)) in blocks.zip(wd.iter().zip(ad)) {
        let (w, a): (__m256i, __m256i) = (pulp::cast(*w), pulp::cast(*a));
        // |w| · (a with w's sign): unsigned × signed, as maddubs wants.
        let p = avx2._mm256_maddubs_epi16(avx2._mm256_sign_epi8(w, w), avx2._mm256_sign_epi8(a, w));
        let p = avx2._mm256_madd_epi16(p, ones);
        let scale = avx._mm256_set1_ps(wd * ad);
        acc = fma._mm256_fmadd_ps(scale, avx._mm256_cvtepi32_ps(p), acc);
    }
    hsum(simd, acc)
}

// Each entry point hands `vectorize` a struct implementing `NullaryFnOnce` whose `call` is
// `#[inline(always)]`: the kernel body is then compiled inside pulp's AVX2 function. A
// closure is not reliably inlined there (its `FnOnce::call_once` shim was emitted out of
// line for the Q8_0 kernel, without the target features, so every intrinsic became a
// function call: a quarter of the generation time went to those calls).

/// A block of products ([`Span`]) of one matrix (`Q41Ref` or `Q80Ref`) in one AVX2 region.
pub(super) fn products<'r, 'a, W>(
    simd: V3,
    w: &'r W,
    a: &'r ActsRef<'a>,
    span: Span,
    out: &'r mut [f32],
) where
    Products<'r, 'a, W>: pulp::NullaryFnOnce<Output = ()>,
{
    simd.vectorize(Products {
        simd,
        w,
        a,
        span,
        out,
    })
}

pub(super) struct Products<'r, 'a, W> {
    simd: V3,
    w: &'r W,
    a: &'r ActsRef<'a>,
    span: Span,
    out: &'r mut [f32],
}

impl pulp::NullaryFnOnce for Products<'_, '_, Q41Ref<'_>> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let (simd, w, a, span, out) = (self.simd, self.w, self.a, self.span, self.out);
        if span.nt == 1 {
            // One token (generation): four rows at a time, four independent chains.
            let x = a.tokens(span.t0, 1);
            let done = out.len() / 4 * 4;
            let mut chunks = out.chunks_exact_mut(4);
            for (ci, o) in (&mut chunks).enumerate() {
                let r = span.r0 + 4 * ci;
                let rows = [w.row(r), w.row(r + 1), w.row(r + 2), w.row(r + 3)];
                o.copy_from_slice(&dot_q4_1_rows(simd, rows, x));
            }
            for (ri, o) in chunks.into_remainder().iter_mut().enumerate() {
                *o = dot_q4_1_rows(simd, [w.row(span.r0 + done + ri)], x)[0];
            }
            return;
        }
        for (ri, o) in out.chunks_exact_mut(span.nt).enumerate() {
            let row = w.row(span.r0 + ri);
            // Consecutive tokens (prompt processing): four at a time.
            let mut t = 0;
            while t + 4 <= span.nt {
                let x = a.tokens(span.t0 + t, 4);
                o[t..t + 4].copy_from_slice(&dot_q4_1::<4>(simd, row, x));
                t += 4;
            }
            for (tt, o) in o.iter_mut().enumerate().skip(t) {
                *o = dot_q4_1::<1>(simd, row, a.tokens(span.t0 + tt, 1))[0];
            }
        }
    }
}

impl pulp::NullaryFnOnce for Products<'_, '_, Q80Ref<'_>> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let (simd, w, a, span, out) = (self.simd, self.w, self.a, self.span, self.out);
        for (i, o) in out.iter_mut().enumerate() {
            let (r, t) = span.at(i);
            let (wd, wq) = w.row(r);
            let (ad, _, aq) = a.tokens(t, 1);
            *o = dot_q8_0(simd, wd, wq, ad, aq);
        }
    }
}

/// `Σ a·b`.
pub fn dot_f32(simd: V3, a: &[f32], b: &[f32]) -> f32 {
    simd.vectorize(DotF32 { simd, a, b })
}

struct DotF32<'r> {
    simd: V3,
    a: &'r [f32],
    b: &'r [f32],
}

impl pulp::NullaryFnOnce for DotF32<'_> {
    type Output = f32;

    #[inline(always)]
    fn call(self) -> f32 {
        dot8(self.simd, self.a, self.b)
    }
}

#[inline(always)]
fn dot8(simd: V3, a: &[f32], b: &[f32]) -> f32 {
    let mut acc = simd.avx._mm256_setzero_ps();
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let mut tail = 0.0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    for (x, y) in ca.zip(cb) {
        acc = simd.fma._mm256_fmadd_ps(load8(x), load8(y), acc);
    }
    hsum(simd, acc) + tail
}

/// One query's causal attention in one AVX2 region (see [`super::attend`]).
pub(super) fn attend(simd: V3, job: super::Attend<'_>) {
    simd.vectorize(AttendRun { simd, job })
}

struct AttendRun<'r> {
    simd: V3,
    job: super::Attend<'r>,
}

impl pulp::NullaryFnOnce for AttendRun<'_> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let simd = self.simd;
        match self.job.q.len() {
            64 => attend_in_registers::<8>(simd, self.job),
            128 => attend_in_registers::<16>(simd, self.job),
            _ => self.job.run(Avx2(simd)),
        }
    }
}

/// Attention for a head of `8·C` values: the query and the output stay in registers, and
/// scores are computed four keys at a time (one horizontal sum for four keys). The
/// grouping depends only on `len`, the query's own position, so a token's result does not
/// depend on how tokens are batched.
#[inline(always)]
fn attend_in_registers<const C: usize>(simd: V3, job: super::Attend<'_>) {
    let (sse, avx, fma) = (simd.sse, simd.avx, simd.fma);
    let super::Attend {
        q,
        k,
        v,
        stride,
        off,
        len,
        scale,
        scores,
        out,
    } = job;
    let hd = 8 * C;
    let qv: [__m256; C] = load_n(simd, q);
    let at = Head {
        stride,
        off,
        len: hd,
    };
    scores.clear();
    scores.resize(len, 0.0);
    let mut j = 0;
    while j + 4 <= len {
        let mut acc = [avx._mm256_setzero_ps(); 4];
        for (i, acc) in acc.iter_mut().enumerate() {
            let kr: [__m256; C] = load_n(simd, &k[at.of(j + i)]);
            for c in 0..C {
                *acc = fma._mm256_fmadd_ps(qv[c], kr[c], *acc);
            }
        }
        let s01 = avx._mm256_hadd_ps(acc[0], acc[1]);
        let s23 = avx._mm256_hadd_ps(acc[2], acc[3]);
        let s = avx._mm256_hadd_ps(s01, s23);
        let s = sse._mm_add_ps(
            avx._mm256_castps256_ps128(s),
            avx._mm256_extractf128_ps::<1>(s),
        );
        let s: [f32; 4] = pulp::cast(s);
        for (d, s) in scores[j..j + 4].iter_mut().zip(s) {
            *d = s * scale;
        }
        j += 4;
    }
    for (jj, d) in scores.iter_mut().enumerate().skip(j) {
        let kr: [__m256; C] = load_n(simd, &k[at.of(jj)]);
        let mut acc = avx._mm256_setzero_ps();
        for c in 0..C {
            acc = fma._mm256_fmadd_ps(qv[c], kr[c], acc);
        }
        *d = hsum(simd, acc) * scale;
    }
    let inv = 1.0 / softmax_weights(simd, scores);
    let mut o: [__m256; C] = load_n(simd, out);
    for (jj, &p) in scores.iter().enumerate() {
        let w = avx._mm256_set1_ps(p * inv);
        let vr: [__m256; C] = load_n(simd, &v[at.of(jj)]);
        for c in 0..C {
            o[c] = fma._mm256_fmadd_ps(w, vr[c], o[c]);
        }
    }
    for c in 0..C {
        let o: [f32; 8] = pulp::cast(o[c]);
        out[8 * c..8 * c + 8].copy_from_slice(&o);
    }
}

/// The f32 helpers of [`super::Attend`] on AVX2.
#[derive(Clone, Copy)]
struct Avx2(V3);

impl super::F32Ops for Avx2 {
    #[inline(always)]
    fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        dot8(self.0, a, b)
    }

    #[inline(always)]
    fn axpy(self, y: &mut [f32], s: f32, x: &[f32]) {
        axpy8(y, s, x);
    }
}

/// `y += s·x` (fused). A plain loop, vectorised by the compiler inside the AVX2 region
/// (an intrinsics version was compiled with an aligned load on an unaligned slice here,
/// which crashed once the kernel was inlined).
#[inline(always)]
fn axpy8(y: &mut [f32], s: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = s.mul_add(*x, *y);
    }
}

/// Where one head's values sit in a cached token's row.
#[derive(Clone, Copy)]
struct Head {
    stride: usize,
    off: usize,
    len: usize,
}

impl Head {
    #[inline(always)]
    fn of(self, j: usize) -> std::ops::Range<usize> {
        j * self.stride + self.off..j * self.stride + self.off + self.len
    }
}

/// Replaces `scores` by `exp(score − max)`, eight at a time, and returns their sum.
#[inline(always)]
fn softmax_weights(simd: V3, scores: &mut [f32]) -> f32 {
    let avx = simd.avx;
    let mut maxv = avx._mm256_set1_ps(f32::NEG_INFINITY);
    let mut chunks = scores.chunks_exact(8);
    for ch in &mut chunks {
        maxv = avx._mm256_max_ps(maxv, load8(ch));
    }
    let lanes: [f32; 8] = pulp::cast(maxv);
    let max = lanes
        .into_iter()
        .chain(chunks.remainder().iter().copied())
        .fold(f32::NEG_INFINITY, f32::max);
    let maxv = avx._mm256_set1_ps(max);
    let mut sumv = avx._mm256_setzero_ps();
    for ch in scores.chunks_mut(8) {
        // A short last chunk is padded with the maximum; its extra lanes are dropped.
        let mut x = [max; 8];
        x[..ch.len()].copy_from_slice(ch);
        let e: [f32; 8] = pulp::cast(exp_neg(simd, avx._mm256_sub_ps(load8(&x), maxv)));
        ch.copy_from_slice(&e[..ch.len()]);
        let mut kept = [0.0f32; 8];
        kept[..ch.len()].copy_from_slice(&e[..ch.len()]);
        sumv = avx._mm256_add_ps(sumv, load8(&kept));
    }
    hsum(simd, sumv)
}

/// `e^x` for `x ≤ 0` (relative error about 2e-7; below −87 the result is ~1e-38, not 0):
/// `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, a degree-6 polynomial for `e^r`, and `2^n` put
/// into the exponent bits.
#[inline(always)]
fn exp_neg(simd: V3, x: __m256) -> __m256 {
    let (avx, avx2, fma) = (simd.avx, simd.avx2, simd.fma);
    let x = avx._mm256_max_ps(x, avx._mm256_set1_ps(-87.0));
    let n = avx._mm256_round_ps::<0x08>(
        avx._mm256_mul_ps(x, avx._mm256_set1_ps(std::f32::consts::LOG2_E)),
    );
    // ln 2 split in two parts so that n·LN2_HI is exact.
    let r = fma._mm256_fnmadd_ps(n, avx._mm256_set1_ps(0.693_359_4), x);
    let r = fma._mm256_fnmadd_ps(n, avx._mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = avx._mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = fma._mm256_fmadd_ps(p, r, avx._mm256_set1_ps(c));
    }
    let r2 = avx._mm256_mul_ps(r, r);
    let p = fma._mm256_fmadd_ps(p, r2, avx._mm256_add_ps(r, avx._mm256_set1_ps(1.0)));
    let pow2 = avx2._mm256_slli_epi32::<23>(
        avx2._mm256_add_epi32(avx._mm256_cvtps_epi32(n), avx._mm256_set1_epi32(127)),
    );
    avx._mm256_mul_ps(p, avx._mm256_castsi256_ps(pow2))
}

/// [`super::QActs::quantize`]'s blocks, eight values per instruction: the same operations
/// in the same order as the scalar code (so the same bytes).
pub(super) fn quantize(simd: V3, x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    simd.vectorize(Quantize { simd, x, qs, d, s })
}

struct Quantize<'r> {
    simd: V3,
    x: &'r [f32],
    qs: &'r mut [i8],
    d: &'r mut [f32],
    s: &'r mut [f32],
}

impl pulp::NullaryFnOnce for Quantize<'_> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Self { simd, x, qs, d, s } = self;
        let (avx, avx2) = (simd.avx, simd.avx2);
        let sign = avx._mm256_set1_ps(-0.0);
        let half = avx._mm256_set1_ps(0.5);
        let (lo, hi) = (avx._mm256_set1_epi32(-127), avx._mm256_set1_epi32(127));
        let order = avx._mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let blocks = x.chunks_exact(BLOCK).zip(qs.chunks_exact_mut(BLOCK));
        for (b, (v, q)) in blocks.enumerate() {
            let v: [__m256; 4] = load_n(simd, v);
            let mut amax = avx._mm256_andnot_ps(sign, v[0]);
            for vi in &v[1..] {
                amax = avx._mm256_max_ps(amax, avx._mm256_andnot_ps(sign, *vi));
            }
            let lanes: [f32; 8] = pulp::cast(amax);
            let amax = lanes.into_iter().fold(0.0f32, f32::max);
            let db = amax / 127.0;
            let inv = avx._mm256_set1_ps(if db > 0.0 { 1.0 / db } else { 0.0 });
            // Plain loops, no closures: a closure here is compiled out of line, without the
            // target features.
            let mut r = [avx._mm256_setzero_si256(); 4];
            for (r, v) in r.iter_mut().zip(v) {
                let y = avx._mm256_mul_ps(v, inv);
                let y = avx._mm256_add_ps(y, avx._mm256_or_ps(half, avx._mm256_and_ps(sign, y)));
                let i = avx._mm256_cvttps_epi32(y);
                *r = avx2._mm256_min_epi32(avx2._mm256_max_epi32(i, lo), hi);
            }
            let sum = avx2._mm256_add_epi32(
                avx2._mm256_add_epi32(r[0], r[1]),
                avx2._mm256_add_epi32(r[2], r[3]),
            );
            let sum: [i32; 8] = pulp::cast(sum);
            let packed = avx2._mm256_packs_epi16(
                avx2._mm256_packs_epi32(r[0], r[1]),
                avx2._mm256_packs_epi32(r[2], r[3]),
            );
            let bytes: [i8; 32] = pulp::cast(avx2._mm256_permutevar8x32_epi32(packed, order));
            q.copy_from_slice(&bytes);
            d[b] = db;
            s[b] = db * sum.iter().sum::<i32>() as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_neg_is_accurate_on_the_softmax_range() {
        let Some(simd) = v3() else { return };
        let xs: Vec<f32> = (0..8000).map(|i| -(i as f32) * 0.0109).collect();
        for ch in xs.chunks_exact(8) {
            let got: [f32; 8] = pulp::cast(exp_neg(simd, load8(ch)));
            for (&x, g) in ch.iter().zip(got) {
                let want = x.exp();
                assert!(
                    (g - want).abs() <= 4e-7 * want + 1e-38,
                    "exp({x}) = {want}, got {g}"
                );
            }
        }
        let mut s = vec![3.0, 1.0, -2.0, 0.5, 3.0, -50.0, 2.0, 1.5, 0.0, -1.0, 2.5];
        let want: f32 = s.iter().map(|v: &f32| (v - 3.0).exp()).sum();
        let sum = softmax_weights(simd, &mut s);
        assert!((sum - want).abs() < 1e-6 * want, "{sum} vs {want}");
        assert!((s[0] - 1.0).abs() < 1e-7 && (s[10] - (-0.5f32).exp()).abs() < 1e-7);
    }
}
