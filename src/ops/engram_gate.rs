//! Engram's gate and short convolution after its projections, for `M` branches (residual
//! streams), as one flex kernel forward and one backward.
//!
//! Paper §2.3 (Cheng et al., arXiv 2601.07372; reference: `Engram.forward` and `ShortConv` in
//! deepseek-ai/Engram `engram_demo_v1.py`): per branch `i`,
//! `α_i = σ(sign(s_i)·√max(|s_i|, ε))` with `s_i = ⟨RMSNorm_q,i(h_i), RMSNorm_k,i(k_i)⟩ / √D`,
//! `ṽ_i = α_i·v` (one value `v` shared by the branches), and
//! `Y = ṽ + SiLU(CausalConv(RMSNorm_c(ṽ)))`, the convolution over the `M·D` channels of the
//! branches side by side, each branch with its own `RMSNorm_c,i`. That is two RMSNorms per
//! branch, the score, its signed square root and sigmoid, the gating, a third RMSNorm, the
//! convolution, SiLU and the residual add: about twenty burn operations per branch and their
//! backward steps, 2.9 → 1.9 ms forward + backward for the default experiment's one-branch
//! layer. One sequence is one unit of work; the backward pass recomputes the forward quantities
//! per sequence instead of keeping them. The same values and gradients as burn's operations up
//! to float rounding (the layer's tests compare them, on one branch and on four).

use std::borrow::Cow;

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, Flex, TensorMetadata};
use burn::tensor::Tensor;

use super::backend::{dims_of, enabled, flex_f32, host_f32, n_input_op, par_units, par_units_sum, transpose, MIN_ELEMS_PER_THREAD};
use super::conv::{conv_seq, conv_silu_backward_seq};
use super::rms_norm::{rms_backward_row, rms_norm_row};
use super::simd::{dot, sigmoid};

/// Engram's gate and short convolution as a burn backend extension (flex only).
#[backend_extension(Flex, Autodiff)]
pub trait EngramGateOps: Backend {
    /// Engram's gate and short convolution for `M` branches, see [`engram_gate_conv`].
    #[allow(clippy::too_many_arguments)]
    fn engram_gate_conv(
        value: FloatTensor<Self>,
        key: FloatTensor<Self>,
        hidden: FloatTensor<Self>,
        gamma_query: FloatTensor<Self>,
        gamma_key: FloatTensor<Self>,
        gamma_conv: FloatTensor<Self>,
        conv_weight: FloatTensor<Self>,
        params: GateConvParams,
    ) -> FloatTensor<Self>;
}

/// The scalars of [`engram_gate_conv`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GateConvParams {
    /// Dilation of the causal convolution.
    pub dilation: usize,
    /// Epsilon of the query's RMSNorm.
    pub eps_query: f64,
    /// Epsilon of the key's RMSNorm.
    pub eps_key: f64,
    /// Epsilon of the RMSNorm before the convolution.
    pub eps_conv: f64,
    /// Lower clamp of `|s|` before the square root of the score (the layer's
    /// `GATE_SQRT_CLAMP`).
    pub sqrt_clamp: f32,
}

/// Engram's layer after its projections, for `M` branches, in one pass forward and one
/// backward (flex only; [`crate::engram::Engram::forward`] composes burn's operations
/// elsewhere):
///
/// `α_i = σ(sign(s_i)·√max(|s_i|, ε))` (ε = `params.sqrt_clamp`, 1e−6 in the layer) with
/// `s_i = ⟨RMSNorm_q,i(h_i), RMSNorm_k,i(k_i)⟩ / √D`, `ṽ_i = α_i·v`,
/// `Y = ṽ + SiLU(CausalConv(RMSNorm_c(ṽ)))` with the convolution over the `M·D` channels
/// (branch-major, as `[B, T, M, D]` lies in memory).
///
/// # Shapes
/// - `value`: `[B, T, D]`; `key`, `hidden`: `[B, T, M, D]`; gains `[M, D]`;
///   `conv_weight`: `[M·D, k]` → `[B, T, M, D]`
///
/// # Panics
/// Off flex (see [`enabled`]).
#[allow(clippy::too_many_arguments)]
pub fn engram_gate_conv(value: Tensor<3>, key: Tensor<4>, hidden: Tensor<4>, gamma_query: Tensor<2>, gamma_key: Tensor<2>, gamma_conv: Tensor<2>, conv_weight: Tensor<2>, params: GateConvParams) -> Tensor<4> {
    assert!(enabled(&value.device()), "engram_gate_conv runs on flex only");
    Tensor::from_dispatch(<Dispatch as EngramGateOps>::engram_gate_conv(
        value.into_dispatch(),
        key.into_dispatch(),
        hidden.into_dispatch(),
        gamma_query.into_dispatch(),
        gamma_key.into_dispatch(),
        gamma_conv.into_dispatch(),
        conv_weight.into_dispatch(),
        params,
    ))
}

impl EngramGateOps for Flex {
    fn engram_gate_conv(v: FlexTensor, k: FlexTensor, h: FlexTensor, gq: FlexTensor, gk: FlexTensor, gc: FlexTensor, w: FlexTensor, params: GateConvParams) -> FlexTensor {
        gate_conv_flex(&[v, k, h, gq, gk, gc, w], &params)
    }
}

impl<C: CheckpointStrategy> EngramGateOps for Autodiff<Flex, C> {
    fn engram_gate_conv(
        v: FloatTensor<Self>,
        k: FloatTensor<Self>,
        h: FloatTensor<Self>,
        gq: FloatTensor<Self>,
        gk: FloatTensor<Self>,
        gc: FloatTensor<Self>,
        w: FloatTensor<Self>,
        params: GateConvParams,
    ) -> FloatTensor<Self> {
        n_input_op::<C, _, 7>([v, k, h, gq, gk, gc, w], params, gate_conv_flex, gate_conv_backward_flex)
    }
}

/// One branch's per-row quantities of [`engram_gate_conv`].
#[derive(Clone, Copy, Default)]
struct GateRow {
    /// Inverse RMS of the hidden state, the key and `ṽ`.
    rq: f32,
    rk: f32,
    rc: f32,
    /// The score `s` and the gate `α`.
    s: f32,
    alpha: f32,
}

/// The inputs of [`engram_gate_conv`] as host slices, and its sizes.
struct GateConvInputs<'a> {
    v: Cow<'a, [f32]>,
    k: Cow<'a, [f32]>,
    h: Cow<'a, [f32]>,
    gq: Cow<'a, [f32]>,
    gk: Cow<'a, [f32]>,
    gc: Cow<'a, [f32]>,
    /// The convolution weight tap-major, `[taps, M·D]`.
    wt: Vec<f32>,
    b: usize,
    t: usize,
    m: usize,
    d: usize,
    taps: usize,
}

impl<'a> GateConvInputs<'a> {
    fn new(x: &'a [FlexTensor; 7]) -> Self {
        let [v, k, h, gq, gk, gc, w] = x;
        let s = v.shape();
        assert_eq!(s.num_dims(), 3, "engram_gate_conv takes the value as [B, T, D], got {s:?}");
        let (b, t, d) = (s[0], s[1], s[2]);
        let hs = dims_of(&h.shape());
        assert!(hs.len() == 4 && hs[..2] == [b, t] && hs[3] == d, "engram_gate_conv: hidden {hs:?} for a value [{b}, {t}, {d}]");
        let m = hs[2];
        assert_eq!(dims_of(&k.shape()), vec![b, t, m, d], "engram_gate_conv: key shape");
        for (what, g) in [("query gain", gq), ("key gain", gk), ("conv gain", gc)] {
            assert_eq!(dims_of(&g.shape()), vec![m, d], "engram_gate_conv: {what} shape");
        }
        let ws = w.shape();
        assert!(ws.num_dims() == 2 && ws[0] == m * d, "convolution weight {ws:?} for {} channels", m * d);
        let taps = ws[1];
        Self { v: host_f32(v), k: host_f32(k), h: host_f32(h), gq: host_f32(gq), gk: host_f32(gk), gc: host_f32(gc), wt: transpose(&host_f32(w), m * d, taps), b, t, m, d, taps }
    }

    /// The gate of every (position, branch) of sequence `seq` into `rows` (`[T·M]`), `ṽ` into
    /// `vt` and `c = RMSNorm_c(ṽ)` into `c` (both `[T, M·D]`); `qk` is scratch of `2D`.
    #[inline(always)]
    fn gate_seq(&self, seq: usize, p: &GateConvParams, rows: &mut [GateRow], vt: &mut [f32], c: &mut [f32], qk: &mut [f32]) {
        let (t, m, d) = (self.t, self.m, self.d);
        let inv_sqrt_d = 1.0 / (d as f32).sqrt();
        let (qhat, khat) = qk.split_at_mut(d);
        for ti in 0..t {
            let v = &self.v[(seq * t + ti) * d..(seq * t + ti + 1) * d];
            for i in 0..m {
                let row = ti * m + i;
                let at = (seq * t * m + row) * d;
                let (k, h) = (&self.k[at..at + d], &self.h[at..at + d]);
                let gains = i * d..(i + 1) * d;
                let rq = rms_norm_row(h, &self.gq[gains.clone()], p.eps_query, qhat);
                let rk = rms_norm_row(k, &self.gk[gains.clone()], p.eps_key, khat);
                let s = dot(qhat, khat) * inv_sqrt_d;
                let alpha = sigmoid(s.signum() * if s == 0.0 { 0.0 } else { s.abs().max(p.sqrt_clamp).sqrt() });
                let (vt, c) = (&mut vt[row * d..(row + 1) * d], &mut c[row * d..(row + 1) * d]);
                for (o, &v) in vt.iter_mut().zip(v) {
                    *o = alpha * v;
                }
                let rc = rms_norm_row(vt, &self.gc[gains], p.eps_conv, c);
                rows[row] = GateRow { rq, rk, rc, s, alpha };
            }
        }
    }
}

simd_kernel! {
    /// Forward of [`engram_gate_conv`], one sequence per unit of work.
    fn gate_conv_flex(x: &[FlexTensor; 7], p: &GateConvParams) -> FlexTensor {
        let inp = GateConvInputs::new(x);
        let (b, t, m, d, taps) = (inp.b, inp.t, inp.m, inp.d, inp.taps);
        let c_len = m * d;
        let mut out = vec![0.0f32; b * t * c_len];
        par_units(&mut out, t * c_len, MIN_ELEMS_PER_THREAD, |s0, out| {
            let mut rows = vec![GateRow::default(); t * m];
            let (mut c, mut z, mut qk) = (vec![0.0f32; t * c_len], vec![0.0f32; t * c_len], vec![0.0f32; 2 * d]);
            for (i, y) in out.chunks_exact_mut((t * c_len).max(1)).enumerate() {
                // y ← ṽ, then y += SiLU(conv(c)).
                inp.gate_seq(s0 + i, p, &mut rows, y, &mut c, &mut qk);
                conv_seq(&c, &inp.wt, t, c_len, taps, p.dilation, &mut z);
                for (y, &z) in y.iter_mut().zip(&z) {
                    *y += z * sigmoid(z);
                }
            }
        });
        flex_f32(out, vec![b, t, m, d])
    }
}

simd_kernel! {
    /// Gradients of [`engram_gate_conv`] with respect to all seven inputs; the forward
    /// quantities are recomputed per sequence.
    fn gate_conv_backward_flex(x: &[FlexTensor; 7], grad: &FlexTensor, p: &GateConvParams) -> [FlexTensor; 7] {
        let inp = GateConvInputs::new(x);
        let (b, t, m, d, taps, r) = (inp.b, inp.t, inp.m, inp.d, inp.taps, p.dilation);
        let c_len = m * d;
        let dy = host_f32(grad);
        let inv_sqrt_d = 1.0 / (d as f32).sqrt();
        // Per sequence: dv ([T, D]), dk and dh ([T, M, D] each) side by side; per thread: the
        // gains' and the tap-major weight's gradients, [3·M·D + taps·M·D].
        let unit = t * d + 2 * t * c_len;
        let mut work = vec![0.0f32; b * unit];
        let acc = par_units_sum(&mut work, unit, MIN_ELEMS_PER_THREAD, (3 + taps) * c_len, |s0, work, acc| {
            let mut rows = vec![GateRow::default(); t * m];
            let (mut vt, mut c, mut z, mut dc) = (vec![0.0f32; t * c_len], vec![0.0f32; t * c_len], vec![0.0f32; t * c_len], vec![0.0f32; t * c_len]);
            let (mut qk, mut dvt) = (vec![0.0f32; 2 * d], vec![0.0f32; d]);
            let (dgq, rest) = acc.split_at_mut(c_len);
            let (dgk, rest) = rest.split_at_mut(c_len);
            let (dgc, dwt) = rest.split_at_mut(c_len);
            for (u, out) in work.chunks_exact_mut(unit.max(1)).enumerate() {
                let seq = s0 + u;
                inp.gate_seq(seq, p, &mut rows, &mut vt, &mut c, &mut qk);
                let g = &dy[seq * t * c_len..(seq + 1) * t * c_len];
                // dc = the convolution's input gradient; dw (tap-major) accumulates.
                dc.iter_mut().for_each(|x| *x = 0.0);
                conv_silu_backward_seq(&c, &inp.wt, g, t, c_len, taps, r, &mut z, &mut dc, dwt);
                let (dv, rest) = out.split_at_mut(t * d);
                let (dk, dh) = rest.split_at_mut(t * c_len);
                for (row, &GateRow { rq, rk, rc, s, alpha }) in rows.iter().enumerate() {
                    let (ti, i) = (row / m, row % m);
                    let at = (seq * t * m + row) * d;
                    let span = row * d..(row + 1) * d;
                    let gains = i * d..(i + 1) * d;
                    let v = &inp.v[(seq * t + ti) * d..(seq * t + ti + 1) * d];
                    let (k, h) = (&inp.k[at..at + d], &inp.h[at..at + d]);
                    let (gy, vtr, dcr) = (&g[span.clone()], &vt[span.clone()], &dc[span.clone()]);
                    // Through RMSNorm_c and the residual: dṽ = dy + RMSNorm_c's input gradient.
                    rms_backward_row(vtr, rc, &inp.gc[gains.clone()], dcr, &mut dvt, &mut dgc[gains.clone()]);
                    for (o, &g) in dvt.iter_mut().zip(gy) {
                        *o += g;
                    }
                    // ṽ_i = α_i·v: dα_i = ⟨dṽ_i, v⟩, dv += α_i·dṽ_i (the branches share v).
                    let dalpha = dot(&dvt, v);
                    let dv = &mut dv[ti * d..(ti + 1) * d];
                    if i == 0 {
                        dv.iter_mut().zip(&dvt).for_each(|(o, &x)| *o = x * alpha);
                    } else {
                        dv.iter_mut().zip(&dvt).for_each(|(o, &x)| *o += x * alpha);
                    }
                    // α = σ(s'), s' = sign(s)·√max(|s|, ε): ds = dα·α(1−α) / (2√|s|) where |s| ≥ ε.
                    let abs_s = s.abs();
                    let ds = if abs_s >= p.sqrt_clamp { dalpha * alpha * (1.0 - alpha) * 0.5 / abs_s.sqrt() } else { 0.0 } * inv_sqrt_d;
                    // s = ⟨q̂, k̂⟩/√D with q̂ = h·rq⊙γq, k̂ = k·rk⊙γk; then each RMSNorm backward.
                    let (gq, gk) = (&inp.gq[gains.clone()], &inp.gk[gains.clone()]);
                    let (dqhat, dkhat) = qk.split_at_mut(d);
                    for j in 0..d {
                        dqhat[j] = ds * k[j] * rk * gk[j];
                        dkhat[j] = ds * h[j] * rq * gq[j];
                    }
                    rms_backward_row(h, rq, gq, dqhat, &mut dh[span.clone()], &mut dgq[gains.clone()]);
                    rms_backward_row(k, rk, gk, dkhat, &mut dk[span], &mut dgk[gains]);
                }
            }
        });
        // Per sequence [dv | dk | dh] → three tensors.
        let (mut dv, mut dk, mut dh) = (vec![0.0f32; b * t * d], vec![0.0f32; b * t * c_len], vec![0.0f32; b * t * c_len]);
        for (seq, w) in work.chunks_exact(unit.max(1)).enumerate() {
            dv[seq * t * d..(seq + 1) * t * d].copy_from_slice(&w[..t * d]);
            dk[seq * t * c_len..(seq + 1) * t * c_len].copy_from_slice(&w[t * d..t * d + t * c_len]);
            dh[seq * t * c_len..(seq + 1) * t * c_len].copy_from_slice(&w[t * d + t * c_len..]);
        }
        let streams = vec![b, t, m, d];
        [
            flex_f32(dv, vec![b, t, d]),
            flex_f32(dk, streams.clone()),
            flex_f32(dh, streams),
            flex_f32(acc[..c_len].to_vec(), vec![m, d]),
            flex_f32(acc[c_len..2 * c_len].to_vec(), vec![m, d]),
            flex_f32(acc[2 * c_len..3 * c_len].to_vec(), vec![m, d]),
            flex_f32(transpose(&acc[3 * c_len..], taps, c_len), vec![c_len, taps]),
        ]
    }
}
