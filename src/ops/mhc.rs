//! Multi-branch hyper-connections (mHC) on flex: the per-token coefficients with their
//! Sinkhorn normalisation, and the merge of a sublayer's output back into the streams — each
//! one kernel forward and one backward. (The collapse `Σ pre·X` stays on burn's operations: a
//! fused kernel for it measured slower, 0.94 against 0.56 ms forward + backward on 1,024
//! tokens, `benches/mhc.rs`.)
//!
//! The formulas are those of [`crate::model::mhc`] (Xie et al., arXiv 2512.24880, §4.2
//! Eqs. 7–9; DeepSeek's `tile_kernels/torch/mhc.py`). Composed from burn's operations, one
//! sublayer on four streams is about 120 small tensor operations (20 unrolled Sinkhorn
//! iterations of five each, the slices and gates of the coefficients, a batched `[M, M]`
//! product per token), each recorded for the backward pass; they made four streams cost
//! 2.2× the step time of one for 1.09× the FLOPs. Here the coefficients are one pass per token
//! over `[M² + 2M]` numbers, and the backward pass recomputes Sinkhorn's iterations per token
//! instead of keeping them (as DeepSeek's recomputing backward does): 7.4 → 3.9 ms forward +
//! backward for 1,024 tokens on four streams (`benches/mhc.rs`). Same values and
//! gradients as the composed operations up to float rounding (the tests compare them).

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, Flex, TensorMetadata};
use burn::tensor::Tensor;

use super::backend::{dims_of, enabled, flex_f32, host_f32, n_input_op, par_units, par_units_sum};
use super::simd::{dot, sigmoid};

/// Fewest tokens per thread (the per-token work is small).
const MIN_TOKENS_PER_THREAD: usize = 64;

/// Most streams [`mhc_coeffs`] takes (its per-token scratch lives on the stack); the model
/// composes burn's operations for more.
pub const MAX_STREAMS: usize = 16;

/// The mHC kernels as a burn backend extension (flex only).
#[backend_extension(Flex, Autodiff)]
pub trait MhcOps: Backend {
    /// The packed coefficients of one sublayer, see [`mhc_coeffs`].
    fn mhc_coeffs(mix: FloatTensor<Self>, xf: FloatTensor<Self>, scale: FloatTensor<Self>, base: FloatTensor<Self>, params: MhcParams) -> FloatTensor<Self>;
    /// `post[k]·y + Σ_j comb[j, k]·x[j]`, see [`mhc_merge`].
    fn mhc_merge(x: FloatTensor<Self>, y: FloatTensor<Self>, post: FloatTensor<Self>, comb: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The scalars of [`mhc_coeffs`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MhcParams {
    /// Streams `M`.
    pub streams: usize,
    /// Sinkhorn iterations (≥ 1).
    pub sinkhorn_iters: usize,
    /// Epsilon of the weightless RMS over the `M·D` features.
    pub norm_eps: f64,
    /// Added to `pre` after its sigmoid.
    pub pre_eps: f64,
    /// Sinkhorn's epsilon (added after the softmax and to every sum).
    pub sinkhorn_eps: f64,
    /// The factor of `post`'s sigmoid (2).
    pub post_mult: f64,
}

/// The coefficients of one mHC sublayer from the streams' projections, packed per token as
/// `[pre (M) | post (M) | comb (M², row-major comb[j, k])]`:
///
/// `r = 1/√(mean(xf²) + ε_norm)`, `z = mix·r`, `pre = σ(α₀·z[0..M] + b) + ε_pre`,
/// `post = post_mult·σ(α₁·z[M..2M] + b)`, `comb = sinkhorn(α₂·z[2M..] + b)` — the softmax
/// over `k` plus ε, then `iters` column passes with `iters − 1` row passes between them, each
/// dividing by the sum plus ε ([`crate::model::mhc::sinkhorn`]).
///
/// # Shapes
/// - `mix`: `[N, M² + 2M]` (`xf · φ`), `xf`: `[N, M·D]`, `scale`: `[3]`, `base`: `[M² + 2M]`
///   → `[N, M² + 2M]`
///
/// # Panics
/// Off flex (see [`enabled`]).
pub fn mhc_coeffs(mix: Tensor<2>, xf: Tensor<2>, scale: Tensor<1>, base: Tensor<1>, params: MhcParams) -> Tensor<2> {
    assert!(enabled(&mix.device()), "mhc_coeffs runs on flex only");
    Tensor::from_dispatch(<Dispatch as MhcOps>::mhc_coeffs(mix.into_dispatch(), xf.into_dispatch(), scale.into_dispatch(), base.into_dispatch(), params))
}

/// A sublayer's output written into the streams and the streams mixed:
/// `x'[k] = post[k]·y + Σ_j comb[j, k]·x[j]`.
///
/// # Shapes
/// - `x`: `[N, M, D]`, `y`: `[N, D]`, `post`: `[N, M]`, `comb`: `[N, M, M]` → `[N, M, D]`
///
/// # Panics
/// Off flex (see [`enabled`]).
pub fn mhc_merge(x: Tensor<3>, y: Tensor<2>, post: Tensor<2>, comb: Tensor<3>) -> Tensor<3> {
    assert!(enabled(&x.device()), "mhc_merge runs on flex only");
    Tensor::from_dispatch(<Dispatch as MhcOps>::mhc_merge(x.into_dispatch(), y.into_dispatch(), post.into_dispatch(), comb.into_dispatch()))
}

impl MhcOps for Flex {
    fn mhc_coeffs(mix: FlexTensor, xf: FlexTensor, scale: FlexTensor, base: FlexTensor, params: MhcParams) -> FlexTensor {
        coeffs_flex(&[mix, xf, scale, base], &params)
    }
    fn mhc_merge(x: FlexTensor, y: FlexTensor, post: FlexTensor, comb: FlexTensor) -> FlexTensor {
        merge_flex(&[x, y, post, comb], &())
    }
}

impl<C: CheckpointStrategy> MhcOps for Autodiff<Flex, C> {
    fn mhc_coeffs(mix: FloatTensor<Self>, xf: FloatTensor<Self>, scale: FloatTensor<Self>, base: FloatTensor<Self>, params: MhcParams) -> FloatTensor<Self> {
        n_input_op::<C, _, 4>([mix, xf, scale, base], params, coeffs_flex, coeffs_backward_flex)
    }
    fn mhc_merge(x: FloatTensor<Self>, y: FloatTensor<Self>, post: FloatTensor<Self>, comb: FloatTensor<Self>) -> FloatTensor<Self> {
        n_input_op::<C, _, 4>([x, y, post, comb], (), merge_flex, merge_backward_flex)
    }
}

// ---------------------------------------------------------------------------------------------
// Coefficients

/// `(N, M·D, K = M² + 2M)` of a [`mhc_coeffs`] call, checked.
fn coeff_dims(x: &[FlexTensor; 4], p: &MhcParams) -> (usize, usize, usize) {
    let [mix, xf, scale, base] = x;
    let (ms, xs) = (dims_of(&mix.shape()), dims_of(&xf.shape()));
    let k = p.streams * p.streams + 2 * p.streams;
    assert!(ms.len() == 2 && ms[1] == k, "mhc_coeffs: mix {ms:?} for {} streams", p.streams);
    assert!(xs.len() == 2 && xs[0] == ms[0], "mhc_coeffs: xf {xs:?} for mix {ms:?}");
    assert_eq!(dims_of(&scale.shape()), vec![3], "mhc_coeffs: scale shape");
    assert_eq!(dims_of(&base.shape()), vec![k], "mhc_coeffs: base shape");
    assert!(p.sinkhorn_iters >= 1, "mhc_coeffs: Sinkhorn needs at least one iteration");
    assert!(p.streams <= MAX_STREAMS, "mhc_coeffs takes at most {MAX_STREAMS} streams, got {}", p.streams);
    (ms[0], xs[1], k)
}

/// `1 / √(mean(row²) + eps)`.
#[inline(always)]
fn inv_rms(row: &[f32], eps: f64) -> f32 {
    1.0 / (dot(row, row) / row.len() as f32 + eps as f32).sqrt()
}

/// The pre-activations `g = α·(mix·r) + b` of one token into `g` (`[K]`), with `z = mix·r`
/// into `z`.
#[inline(always)]
fn pre_activations(mix: &[f32], r: f32, scale: &[f32], base: &[f32], m: usize, z: &mut [f32], g: &mut [f32]) {
    for c in 0..mix.len() {
        z[c] = mix[c] * r;
        let a = scale[if c < m { 0 } else if c < 2 * m { 1 } else { 2 }];
        g[c] = z[c] * a + base[c];
    }
}

/// Sinkhorn of one `[M, M]` logit matrix into `c`, keeping in `steps` (when given) each
/// normalisation's output `[M²]` and its `M` denominators (sum + ε), `2·iters − 1` of them
/// after the softmax; the softmax (before its ε) is kept at the front of `steps`.
///
/// The loops run over rows as slices (no index arithmetic in the inner loops): Sinkhorn is
/// most of this kernel's time.
#[inline(always)]
fn sinkhorn_row(logits: &[f32], m: usize, iters: usize, eps: f32, c: &mut [f32], mut steps: Option<&mut [f32]>) {
    let mm = m * m;
    // Softmax over k of each row j, then + ε.
    for (row, out) in logits.chunks_exact(m).zip(c.chunks_exact_mut(m)) {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
        let mut sum = 0.0f32;
        for (o, &x) in out.iter_mut().zip(row) {
            *o = (x - max).exp();
            sum += *o;
        }
        out.iter_mut().for_each(|o| *o /= sum);
    }
    if let Some(s) = steps.as_deref_mut() {
        s[..mm].copy_from_slice(c);
    }
    c.iter_mut().for_each(|x| *x += eps);
    let mut den = [0.0f32; MAX_STREAMS];
    let den = &mut den[..m];
    for i in 0..2 * iters - 1 {
        if i % 2 == 0 {
            // Columns: divide by the sums over j.
            den.fill(0.0);
            for row in c.chunks_exact(m) {
                den.iter_mut().zip(row).for_each(|(d, &x)| *d += x);
            }
            let mut inv = [0.0f32; MAX_STREAMS];
            for (d, r) in den.iter_mut().zip(inv.iter_mut()) {
                *d += eps;
                *r = 1.0 / *d;
            }
            for row in c.chunks_exact_mut(m) {
                row.iter_mut().zip(inv.iter()).for_each(|(x, &r)| *x *= r);
            }
        } else {
            // Rows: divide by the sums over k.
            for (row, d) in c.chunks_exact_mut(m).zip(den.iter_mut()) {
                *d = row.iter().fold(0.0f32, |s, &x| s + x) + eps;
                let r = 1.0 / *d;
                row.iter_mut().for_each(|x| *x *= r);
            }
        }
        if let Some(s) = steps.as_deref_mut() {
            let at = mm + i * (mm + m);
            s[at..at + mm].copy_from_slice(c);
            s[at + mm..at + mm + m].copy_from_slice(den);
        }
    }
}

/// Length of [`sinkhorn_row`]'s `steps`.
fn sinkhorn_steps_len(m: usize, iters: usize) -> usize {
    m * m + (2 * iters - 1) * (m * m + m)
}

/// Backward of [`sinkhorn_row`]: `dc` (`[M²]`, the output's gradient, consumed) → the logits'
/// gradient into `dlogits`.
#[inline(always)]
fn sinkhorn_row_backward(steps: &[f32], m: usize, iters: usize, dc: &mut [f32], dlogits: &mut [f32]) {
    let (mm, step) = (m * m, m * m + m);
    let mut dot_g = [0.0f32; MAX_STREAMS];
    let dot_g = &mut dot_g[..m];
    for i in (0..2 * iters - 1).rev() {
        let at = mm + i * step;
        let (out, den) = (&steps[at..at + mm], &steps[at + mm..at + step]);
        // B = A / den: dA = (dB − Σ_group dB⊙B) / den.
        if i % 2 == 0 {
            dot_g.fill(0.0);
            for (g, o) in dc.chunks_exact(m).zip(out.chunks_exact(m)) {
                dot_g.iter_mut().zip(g.iter().zip(o)).for_each(|(s, (&g, &o))| *s += g * o);
            }
            let mut inv = [0.0f32; MAX_STREAMS];
            inv.iter_mut().zip(den).for_each(|(r, &d)| *r = 1.0 / d);
            for g in dc.chunks_exact_mut(m) {
                g.iter_mut().zip(dot_g.iter().zip(inv.iter())).for_each(|(g, (&s, &r))| *g = (*g - s) * r);
            }
        } else {
            for ((g, o), &d) in dc.chunks_exact_mut(m).zip(out.chunks_exact(m)).zip(den.iter()) {
                let s = g.iter().zip(o).fold(0.0f32, |s, (&g, &o)| s + g * o);
                let r = 1.0 / d;
                g.iter_mut().for_each(|g| *g = (*g - s) * r);
            }
        }
    }
    // A0 = softmax + ε: dL = P ⊙ (dA0 − Σ_k dA0⊙P) per row.
    for ((p, g), dl) in steps[..mm].chunks_exact(m).zip(dc.chunks_exact(m)).zip(dlogits.chunks_exact_mut(m)) {
        let s = p.iter().zip(g).fold(0.0f32, |s, (&p, &g)| s + p * g);
        dl.iter_mut().zip(p.iter().zip(g)).for_each(|(o, (&p, &g))| *o = p * (g - s));
    }
}

simd_kernel! {
    /// Forward of [`mhc_coeffs`], tokens split over the cores.
    fn coeffs_flex(x: &[FlexTensor; 4], p: &MhcParams) -> FlexTensor {
        let (n, md, k) = coeff_dims(x, p);
        let m = p.streams;
        let (mix, xf, scale, base) = (host_f32(&x[0]), host_f32(&x[1]), host_f32(&x[2]), host_f32(&x[3]));
        let mut out = vec![0.0f32; n * k];
        par_units(&mut out, k, MIN_TOKENS_PER_THREAD * k, |n0, out| {
            let (mut z, mut g) = (vec![0.0f32; k], vec![0.0f32; k]);
            for (i, o) in out.chunks_exact_mut(k).enumerate() {
                let t = n0 + i;
                let r = inv_rms(&xf[t * md..(t + 1) * md], p.norm_eps);
                pre_activations(&mix[t * k..(t + 1) * k], r, &scale, &base, m, &mut z, &mut g);
                for j in 0..m {
                    o[j] = sigmoid(g[j]) + p.pre_eps as f32;
                    o[m + j] = sigmoid(g[m + j]) * p.post_mult as f32;
                }
                let (logits, comb) = (&g[2 * m..], &mut o[2 * m..]);
                // Four streams (the default) with the size known at compile time: unrolled.
                match m {
                    4 => sinkhorn_row(logits, 4, p.sinkhorn_iters, p.sinkhorn_eps as f32, comb, None),
                    m => sinkhorn_row(logits, m, p.sinkhorn_iters, p.sinkhorn_eps as f32, comb, None),
                }
            }
        });
        flex_f32(out, vec![n, k])
    }
}

simd_kernel! {
    /// Gradients of [`mhc_coeffs`] with respect to `mix`, `xf`, `scale` and `base`; Sinkhorn's
    /// iterations are recomputed per token.
    fn coeffs_backward_flex(x: &[FlexTensor; 4], grad: &FlexTensor, p: &MhcParams) -> [FlexTensor; 4] {
        let (n, md, k) = coeff_dims(x, p);
        let (m, iters) = (p.streams, p.sinkhorn_iters);
        let (mix, xf, scale, base, dy) = (host_f32(&x[0]), host_f32(&x[1]), host_f32(&x[2]), host_f32(&x[3]), host_f32(grad));
        // Per token: dmix [K] and dxf [M·D] side by side; per thread: dscale [3] and dbase [K].
        let unit = k + md;
        let mut work = vec![0.0f32; n * unit];
        let acc = par_units_sum(&mut work, unit, MIN_TOKENS_PER_THREAD * unit, 3 + k, |n0, work, acc| {
            let (dscale, dbase) = acc.split_at_mut(3);
            let (mut z, mut g, mut dg) = (vec![0.0f32; k], vec![0.0f32; k], vec![0.0f32; k]);
            let (mut c, mut dc, mut steps) = (vec![0.0f32; m * m], vec![0.0f32; m * m], vec![0.0f32; sinkhorn_steps_len(m, iters)]);
            for (i, w) in work.chunks_exact_mut(unit).enumerate() {
                let t = n0 + i;
                let (xrow, mrow, drow) = (&xf[t * md..(t + 1) * md], &mix[t * k..(t + 1) * k], &dy[t * k..(t + 1) * k]);
                let r = inv_rms(xrow, p.norm_eps);
                pre_activations(mrow, r, &scale, &base, m, &mut z, &mut g);
                for j in 0..m {
                    let s = sigmoid(g[j]);
                    dg[j] = drow[j] * s * (1.0 - s);
                    let s = sigmoid(g[m + j]);
                    dg[m + j] = drow[m + j] * p.post_mult as f32 * s * (1.0 - s);
                }
                dc.copy_from_slice(&drow[2 * m..]);
                let eps = p.sinkhorn_eps as f32;
                match m {
                    4 => {
                        sinkhorn_row(&g[2 * m..], 4, iters, eps, &mut c, Some(&mut steps));
                        sinkhorn_row_backward(&steps, 4, iters, &mut dc, &mut dg[2 * m..]);
                    }
                    m => {
                        sinkhorn_row(&g[2 * m..], m, iters, eps, &mut c, Some(&mut steps));
                        sinkhorn_row_backward(&steps, m, iters, &mut dc, &mut dg[2 * m..]);
                    }
                }
                // g = α·z + b, z = mix·r.
                let (dmix, dx) = w.split_at_mut(k);
                let mut dr = 0.0f32;
                for cc in 0..k {
                    let ai = if cc < m { 0 } else if cc < 2 * m { 1 } else { 2 };
                    dscale[ai] += dg[cc] * z[cc];
                    dbase[cc] += dg[cc];
                    let dz = dg[cc] * scale[ai];
                    dmix[cc] = dz * r;
                    dr += dz * mrow[cc];
                }
                // r = (mean(x²) + ε)^(−1/2): dx = dr · (−r³ / (M·D)) · x.
                let f = -dr * r * r * r / md as f32;
                for (o, &xv) in dx.iter_mut().zip(xrow) {
                    *o = f * xv;
                }
            }
        });
        let (mut dmix, mut dxf) = (vec![0.0f32; n * k], vec![0.0f32; n * md]);
        for (t, w) in work.chunks_exact(unit).enumerate() {
            dmix[t * k..(t + 1) * k].copy_from_slice(&w[..k]);
            dxf[t * md..(t + 1) * md].copy_from_slice(&w[k..]);
        }
        [flex_f32(dmix, vec![n, k]), flex_f32(dxf, vec![n, md]), flex_f32(acc[..3].to_vec(), vec![3]), flex_f32(acc[3..].to_vec(), vec![k])]
    }
}

// ---------------------------------------------------------------------------------------------
// Merge

/// `(N, M, D)` of a `[N, M, D]` stream tensor.
fn stream_dims(x: &FlexTensor, what: &str) -> (usize, usize, usize) {
    let s = dims_of(&x.shape());
    assert_eq!(s.len(), 3, "{what} takes streams as [N, M, D], got {s:?}");
    (s[0], s[1], s[2])
}

/// The shapes of a [`mhc_merge`] call, checked: `(N, M, D)`.
fn merge_dims(x: &[FlexTensor; 4]) -> (usize, usize, usize) {
    let (n, m, d) = stream_dims(&x[0], "mhc_merge");
    assert_eq!(dims_of(&x[1].shape()), vec![n, d], "mhc_merge: y shape");
    assert_eq!(dims_of(&x[2].shape()), vec![n, m], "mhc_merge: post shape");
    assert_eq!(dims_of(&x[3].shape()), vec![n, m, m], "mhc_merge: comb shape");
    (n, m, d)
}

simd_kernel! {
    fn merge_flex(x: &[FlexTensor; 4], _p: &()) -> FlexTensor {
        let (n, m, d) = merge_dims(x);
        let (xs, y, post, comb) = (host_f32(&x[0]), host_f32(&x[1]), host_f32(&x[2]), host_f32(&x[3]));
        let mut out = vec![0.0f32; n * m * d];
        par_units(&mut out, m * d, MIN_TOKENS_PER_THREAD * m * d, |n0, out| {
            for (i, o) in out.chunks_exact_mut((m * d).max(1)).enumerate() {
                let t = n0 + i;
                let yt = &y[t * d..(t + 1) * d];
                for k in 0..m {
                    let ok = &mut o[k * d..(k + 1) * d];
                    let pk = post[t * m + k];
                    ok.iter_mut().zip(yt).for_each(|(o, &y)| *o = pk * y);
                    for j in 0..m {
                        let (c, xj) = (comb[(t * m + j) * m + k], &xs[(t * m + j) * d..(t * m + j + 1) * d]);
                        ok.iter_mut().zip(xj).for_each(|(o, &x)| *o += c * x);
                    }
                }
            }
        });
        flex_f32(out, vec![n, m, d])
    }
}

simd_kernel! {
    /// `dx[j] = Σ_k comb[j, k]·dx'[k]`, `dy = Σ_k post[k]·dx'[k]`, `dpost[k] = ⟨y, dx'[k]⟩`,
    /// `dcomb[j, k] = ⟨x[j], dx'[k]⟩`.
    fn merge_backward_flex(x: &[FlexTensor; 4], grad: &FlexTensor, _p: &()) -> [FlexTensor; 4] {
        let (n, m, d) = merge_dims(x);
        let (xs, y, post, comb, g) = (host_f32(&x[0]), host_f32(&x[1]), host_f32(&x[2]), host_f32(&x[3]), host_f32(grad));
        let unit = m * d + d + m + m * m;
        let mut work = vec![0.0f32; n * unit];
        par_units(&mut work, unit, MIN_TOKENS_PER_THREAD * unit, |n0, work| {
            for (i, wk) in work.chunks_exact_mut(unit).enumerate() {
                let t = n0 + i;
                let (dx, rest) = wk.split_at_mut(m * d);
                let (dy, rest) = rest.split_at_mut(d);
                let (dpost, dcomb) = rest.split_at_mut(m);
                let yt = &y[t * d..(t + 1) * d];
                for k in 0..m {
                    let gk = &g[(t * m + k) * d..(t * m + k + 1) * d];
                    dpost[k] = dot(yt, gk);
                    let pk = post[t * m + k];
                    dy.iter_mut().zip(gk).for_each(|(o, &g)| *o += pk * g);
                    for j in 0..m {
                        let xj = &xs[(t * m + j) * d..(t * m + j + 1) * d];
                        dcomb[j * m + k] = dot(xj, gk);
                        let c = comb[(t * m + j) * m + k];
                        dx[j * d..(j + 1) * d].iter_mut().zip(gk).for_each(|(o, &g)| *o += c * g);
                    }
                }
            }
        });
        let (mut dx, mut dy, mut dpost, mut dcomb) = (vec![0.0f32; n * m * d], vec![0.0f32; n * d], vec![0.0f32; n * m], vec![0.0f32; n * m * m]);
        for (t, wk) in work.chunks_exact(unit).enumerate() {
            let (a, rest) = wk.split_at(m * d);
            let (b, rest) = rest.split_at(d);
            let (c, e) = rest.split_at(m);
            dx[t * m * d..(t + 1) * m * d].copy_from_slice(a);
            dy[t * d..(t + 1) * d].copy_from_slice(b);
            dpost[t * m..(t + 1) * m].copy_from_slice(c);
            dcomb[t * m * m..(t + 1) * m * m].copy_from_slice(e);
        }
        [flex_f32(dx, vec![n, m, d]), flex_f32(dy, vec![n, d]), flex_f32(dpost, vec![n, m]), flex_f32(dcomb, vec![n, m, m])]
    }
}

#[cfg(test)]
mod tests;
