//! Causal multi-head self-attention with rotary position embeddings (RoPE), from the output of
//! a fused query-key-value projection.
//!
//! RoPE in the half-split form of GPT-NeoX / LLaMA (`x = [x1, x2]`, rotate pairs
//! `(x1_i, x2_i)`): [`rope_tables`] and, in tensor operations, [`rope_rotate`]. burn's
//! `RotaryEncoding` rotates interleaved pairs through a matmul; this element-wise form is
//! cheaper on the CPU and equally standard. On flex, [`causal_attention`] is one kernel forward
//! and one backward: per (sequence, head), `gemm`'s matrix kernels on the rotated queries and
//! keys, the causal softmax kept for the backward pass, the (sequence, head) pairs split over
//! the cores; elsewhere it is [`rope_rotate`] and burn's `attention`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, Flex, TensorMetadata};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor, TensorData};

use super::backend::{enabled, flex_f32, host_f32, par_units};
use super::matmul::{gemm, Mat};
use super::simd::{dot, exp_nonpositive, sum};

/// Causal attention as a burn backend extension. Use [`causal_attention`], which picks it on
/// flex and burn's own operations elsewhere.
#[backend_extension(Flex, Autodiff)]
pub trait AttentionOps: Backend {
    /// Causal attention of the fused projection `qkv` (`[B, T, 3D]`: queries, keys, values),
    /// `n_heads` heads, RoPE tables `cos`/`sin` (`[≥ T, d_head / 2]`) applied to queries and
    /// keys → `[B, T, D]` (heads side by side).
    fn causal_attention(qkv: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>, n_heads: usize) -> FloatTensor<Self>;
}

/// RoPE tables for heads of width `d_head` (even) and base `theta`, positions
/// `0..max_seq_len`: `cos(pos · θ_i)` and `sin(pos · θ_i)` with `θ_i = theta^(−2i / d_head)`,
/// each `[max_seq_len, d_head / 2]`.
pub fn rope_tables(max_seq_len: usize, d_head: usize, theta: f64, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let half = d_head / 2;
    let mut cos = Vec::with_capacity(max_seq_len * half);
    let mut sin = Vec::with_capacity(max_seq_len * half);
    for pos in 0..max_seq_len {
        for i in 0..half {
            let freq = theta.powf(-(2.0 * i as f64) / d_head as f64);
            let a = pos as f64 * freq;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [max_seq_len, half]), device),
        Tensor::from_data(TensorData::new(sin, [max_seq_len, half]), device),
    )
}

/// Rotate queries or keys by the RoPE tables `cos`, `sin` ([`rope_tables`]), in tensor
/// operations: `[x1, x2] → [x1·cos − x2·sin, x2·cos + x1·sin]`.
///
/// # Shapes
/// - `x`: `[B, H, T, d_head]`, tables `[≥ T, ≥ d_head / 2]` → `[B, H, T, d_head]`
pub fn rope_rotate(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<4> {
    let [b, h, t, d] = x.dims();
    let half = d / 2;
    let cos = cos.clone().slice([0..t, 0..half]).unsqueeze::<4>(); // [1, 1, T, d/2]
    let sin = sin.clone().slice([0..t, 0..half]).unsqueeze::<4>();
    let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..half]);
    let x2 = x.slice([0..b, 0..h, 0..t, half..d]);
    let r1 = x1.clone() * cos.clone() - x2.clone() * sin.clone();
    let r2 = x2 * cos + x1 * sin;
    Tensor::cat(vec![r1, r2], 3)
}

/// Causal multi-head attention with RoPE on queries and keys, scale `1/√d_head`, from the
/// output of a fused query-key-value projection. `cos` and `sin` are the RoPE tables of
/// [`rope_tables`] (`[≥ T, d_head / 2]`).
///
/// # Shapes
/// - `qkv`: `[B, T, 3D]` (queries, keys, values side by side; head `h` is columns
///   `h·d_head..(h+1)·d_head` of each) → `[B, T, D]`
pub fn causal_attention(qkv: Tensor<3>, cos: &Tensor<2>, sin: &Tensor<2>, n_heads: usize) -> Tensor<3> {
    let [b, t, d3] = qkv.dims();
    let d = d3 / 3;
    if enabled(&qkv.device()) {
        let cos = cos.clone().into_dispatch();
        let sin = sin.clone().into_dispatch();
        return Tensor::from_dispatch(<Dispatch as AttentionOps>::causal_attention(qkv.into_dispatch(), cos, sin, n_heads));
    }
    let dh = d / n_heads;
    let part = |i: usize| qkv.clone().slice([0..b, 0..t, i * d..(i + 1) * d]).reshape([b, t, n_heads, dh]).swap_dims(1, 2);
    let q = rope_rotate(part(0), cos, sin);
    let k = rope_rotate(part(1), cos, sin);
    let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
    let y = attention(q, k, part(2), None, None, options); // [B, H, T, dh]
    y.swap_dims(1, 2).reshape([b, t, d])
}

impl AttentionOps for Flex {
    fn causal_attention(qkv: FlexTensor, cos: FlexTensor, sin: FlexTensor, n_heads: usize) -> FlexTensor {
        attention_forward_flex(&qkv, &cos, &sin, n_heads, false).0
    }
}

impl<C: CheckpointStrategy> AttentionOps for Autodiff<Flex, C> {
    fn causal_attention(qkv: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>, n_heads: usize) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct AttentionBackward {
            n_heads: usize,
        }

        impl Backward<Flex, 1> for AttentionBackward {
            /// The input, the softmax of every (sequence, head), the RoPE tables.
            type State = (FlexTensor, Vec<f32>, FlexTensor, FlexTensor);

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [parent] = ops.parents;
                let grad = grads.consume::<Flex>(&ops.node);
                if let Some(node) = parent {
                    let (qkv, probs, cos, sin) = &ops.state;
                    grads.register::<Flex>(node.id, attention_backward_flex(qkv, probs, cos, sin, &grad, self.n_heads));
                }
            }
        }

        let (cos, sin) = (cos.primitive().clone(), sin.primitive().clone());
        match (AttentionBackward { n_heads }).prepare::<C>([qkv.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let input = qkv.primitive().clone();
                let (output, probs) = attention_forward_flex(&input, &cos, &sin, n_heads, true);
                prep.finish((input, probs, cos, sin), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(attention_forward_flex(qkv.primitive(), &cos, &sin, n_heads, false).0),
        }
    }
}

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug)]
struct AttnDims {
    b: usize,
    t: usize,
    heads: usize,
    dh: usize,
    /// Row width of the RoPE tables (≥ dh / 2).
    rope_w: usize,
}

impl AttnDims {
    fn new(qkv: &FlexTensor, cos: &FlexTensor, n_heads: usize) -> Self {
        let s = qkv.shape();
        let (b, t, d3) = (s[0], s[1], s[2]);
        assert!(n_heads > 0 && d3 % (3 * n_heads) == 0, "qkv width {d3} is not 3 × a multiple of {n_heads} heads");
        let dh = d3 / 3 / n_heads;
        assert!(dh.is_multiple_of(2), "RoPE needs an even head width, got {dh}");
        let c = cos.shape();
        assert!(c[0] >= t && c[1] >= dh / 2, "RoPE tables {c:?} too small for {t} positions of width {dh}");
        Self { b, t, heads: n_heads, dh, rope_w: c[1] }
    }

    fn d(&self) -> usize {
        self.heads * self.dh
    }

    /// Offset in `qkv` of part `part` (0 queries, 1 keys, 2 values) of head `h`, sequence `b`,
    /// position 0.
    fn at(&self, b: usize, h: usize, part: usize) -> usize {
        b * self.t * 3 * self.d() + part * self.d() + h * self.dh
    }
}

/// Rotate (`sign = 1`) or rotate back (`sign = −1`, the transpose, for gradients) `T` rows of
/// width `dh` from `src` (row stride `src_rs`, from offset `at`) into `dst` (`T × dh`).
#[allow(clippy::too_many_arguments)] // flat kernel arguments
fn rope_rows(src: &[f32], at: usize, src_rs: usize, cos: &[f32], sin: &[f32], dims: &AttnDims, sign: f32, dst: &mut [f32]) {
    let half = dims.dh / 2;
    for (t, out) in dst.chunks_exact_mut(dims.dh).enumerate().take(dims.t) {
        let x = &src[at + t * src_rs..at + t * src_rs + dims.dh];
        let (c, s) = (&cos[t * dims.rope_w..t * dims.rope_w + half], &sin[t * dims.rope_w..t * dims.rope_w + half]);
        let (o1, o2) = out.split_at_mut(half);
        for i in 0..half {
            let (x1, x2, s) = (x[i], x[half + i], sign * s[i]);
            o1[i] = x1 * c[i] - x2 * s;
            o2[i] = x2 * c[i] + x1 * s;
        }
    }
}

simd_kernel! {
    /// Forward attention; with `keep_probs`, also the softmax of every (sequence, head) for the
    /// backward pass (`[B, H, T, T]`, zero above the diagonal).
    fn attention_forward_flex(qkv: &FlexTensor, cos: &FlexTensor, sin: &FlexTensor, n_heads: usize, keep_probs: bool) -> (FlexTensor, Vec<f32>) {
        let dims = AttnDims::new(qkv, cos, n_heads);
        let (x, cos, sin) = (host_f32(qkv), host_f32(cos), host_f32(sin));
        let AttnDims { b, t, heads, dh, .. } = dims;
        let units = b * heads;
        let scale = 1.0 / (dh as f32).sqrt();
        // Per (sequence, head): its output [T, dh], then its probabilities [T, T] when kept.
        let unit = t * dh + if keep_probs { t * t } else { 0 };
        let mut work = vec![0.0f32; units * unit];
        par_units(&mut work, unit, 1, |u0, chunk| {
            let mut q = vec![0.0f32; t * dh];
            let mut k = vec![0.0f32; t * dh];
            let mut p = vec![0.0f32; t * t];
            for (i, out) in chunk.chunks_exact_mut(unit).enumerate() {
                let (bi, h) = ((u0 + i) / heads, (u0 + i) % heads);
                let rs = 3 * dims.d();
                rope_rows(&x, dims.at(bi, h, 0), rs, &cos, &sin, &dims, 1.0, &mut q);
                rope_rows(&x, dims.at(bi, h, 1), rs, &cos, &sin, &dims, 1.0, &mut k);
                gemm(t, t, dh, &mut p, t, Mat::rows(&q, 0, dh), Mat::transposed(&k, 0, dh), scale);
                causal_softmax_rows(&mut p, t);
                let (y, probs) = out.split_at_mut(t * dh);
                gemm(t, dh, t, y, dh, Mat::rows(&p, 0, t), Mat::rows(&x, dims.at(bi, h, 2), rs), 1.0);
                if keep_probs {
                    probs.copy_from_slice(&p);
                }
            }
        });
        // [B, H, T, dh] → [B, T, H·dh].
        let mut y = vec![0.0f32; b * t * dims.d()];
        for (u, out) in work.chunks_exact(unit).enumerate() {
            let (bi, h) = (u / heads, u % heads);
            for ti in 0..t {
                let at = (bi * t + ti) * dims.d() + h * dh;
                y[at..at + dh].copy_from_slice(&out[ti * dh..(ti + 1) * dh]);
            }
        }
        let probs = if keep_probs { work.chunks_exact(unit).flat_map(|c| c[t * dh..].iter().copied()).collect() } else { Vec::new() };
        (flex_f32(y, vec![b, t, dims.d()]), probs)
    }
}

/// Row `i` of the `T × T` scores → the softmax of its first `i + 1` entries, zeros after.
#[inline(always)]
fn causal_softmax_rows(p: &mut [f32], t: usize) {
    for (i, row) in p.chunks_exact_mut(t).enumerate() {
        let (live, masked) = row.split_at_mut(i + 1);
        let max = live.iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
        live.iter_mut().for_each(|x| *x = exp_nonpositive(*x - max));
        let inv = 1.0 / sum(live);
        live.iter_mut().for_each(|x| *x *= inv);
        masked.iter_mut().for_each(|x| *x = 0.0);
    }
}

simd_kernel! {
    /// Gradient of [`attention_forward_flex`] with respect to `qkv`, given the kept probabilities.
    fn attention_backward_flex(qkv: &FlexTensor, probs: &[f32], cos: &FlexTensor, sin: &FlexTensor, grad: &FlexTensor, n_heads: usize) -> FlexTensor {
        let dims = AttnDims::new(qkv, cos, n_heads);
        let (x, cos, sin, dy) = (host_f32(qkv), host_f32(cos), host_f32(sin), host_f32(grad));
        let AttnDims { b, t, heads, dh, .. } = dims;
        let d = dims.d();
        let scale = 1.0 / (dh as f32).sqrt();
        // Per (sequence, head): the gradients of its queries, keys and values, [3, T, dh].
        let unit = 3 * t * dh;
        let mut work = vec![0.0f32; b * heads * unit];
        par_units(&mut work, unit, 1, |u0, chunk| {
            let mut q = vec![0.0f32; t * dh];
            let mut k = vec![0.0f32; t * dh];
            let mut dr = vec![0.0f32; t * dh];
            let mut ds = vec![0.0f32; t * t];
            for (i, out) in chunk.chunks_exact_mut(unit).enumerate() {
                let u = u0 + i;
                let (bi, h) = (u / heads, u % heads);
                let rs = 3 * d;
                let p = &probs[u * t * t..(u + 1) * t * t];
                let g = Mat::rows(&dy, (bi * t) * d + h * dh, d); // dY of this head, [T, dh]
                rope_rows(&x, dims.at(bi, h, 0), rs, &cos, &sin, &dims, 1.0, &mut q);
                rope_rows(&x, dims.at(bi, h, 1), rs, &cos, &sin, &dims, 1.0, &mut k);
                let (dq, rest) = out.split_at_mut(t * dh);
                let (dk, dv) = rest.split_at_mut(t * dh);
                // dV = Pᵀ dY; dP = dY Vᵀ.
                gemm(t, dh, t, dv, dh, Mat::transposed(p, 0, t), g, 1.0);
                gemm(t, t, dh, &mut ds, t, g, Mat::transposed(&x, dims.at(bi, h, 2), rs), 1.0);
                // dS = P ⊙ (dP − rowsum(dP ⊙ P)), the softmax's backward (zero above the diagonal).
                for (row_ds, row_p) in ds.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
                    let dot = dot(row_ds, row_p);
                    for (a, &pp) in row_ds.iter_mut().zip(row_p) {
                        *a = pp * (*a - dot);
                    }
                }
                // d(rotated Q) = scale · dS K; d(rotated K) = scale · dSᵀ Q; then rotate back.
                gemm(t, dh, t, &mut dr, dh, Mat::rows(&ds, 0, t), Mat::rows(&k, 0, dh), scale);
                rope_rows(&dr, 0, dh, &cos, &sin, &dims, -1.0, dq);
                gemm(t, dh, t, &mut dr, dh, Mat::transposed(&ds, 0, t), Mat::rows(&q, 0, dh), scale);
                rope_rows(&dr, 0, dh, &cos, &sin, &dims, -1.0, dk);
            }
        });
        // [B, H, 3, T, dh] → [B, T, 3·H·dh].
        let mut dx = vec![0.0f32; b * t * 3 * d];
        for (u, out) in work.chunks_exact(unit).enumerate() {
            let (bi, h) = (u / heads, u % heads);
            for part in 0..3 {
                for ti in 0..t {
                    let at = (bi * t + ti) * 3 * d + part * d + h * dh;
                    let from = (part * t + ti) * dh;
                    dx[at..at + dh].copy_from_slice(&out[from..from + dh]);
                }
            }
        }
        flex_f32(dx, vec![b, t, 3 * d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{compare, vals};
    use burn::tensor::Distribution;

    fn composite_attention<'a>(cos: &'a Tensor<2>, sin: &'a Tensor<2>, heads: usize) -> impl Fn(Tensor<3>) -> Tensor<3> + 'a {
        move |qkv| {
            let [b, t, d3] = qkv.dims();
            let (d, dh) = (d3 / 3, d3 / 3 / heads);
            let part = |i: usize| qkv.clone().slice([0..b, 0..t, i * d..(i + 1) * d]).reshape([b, t, heads, dh]).swap_dims(1, 2);
            let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
            let y = attention(rope_rotate(part(0), cos, sin), rope_rotate(part(1), cos, sin), part(2), None, None, options);
            y.swap_dims(1, 2).reshape([b, t, d])
        }
    }

    #[test]
    fn attention_matches_burn_attention_with_rope() {
        let device = Device::flex().autodiff();
        // (batch, positions, heads, head width, RoPE table length): tables longer than the
        // sequence, one head, several heads over more units than threads.
        for (b, t, heads, dh, max_t) in [(1, 1, 1, 2, 4), (2, 7, 2, 4, 16), (3, 33, 3, 8, 33)] {
            let (cos, sin) = rope_tables(max_t, dh, 10_000.0, &device);
            let qkv = Tensor::<3>::random([b, t, 3 * heads * dh], Distribution::Normal(0.0, 1.0), &device);
            let r = Tensor::<3>::random([b, t, heads * dh], Distribution::Normal(0.0, 1.0), &device);
            compare(&format!("attention {b}x{t} {heads}h{dh}"), qkv, r, |x| causal_attention(x, &cos, &sin, heads), composite_attention(&cos, &sin, heads), 1e-5);
        }
    }

    /// Changing the inputs at position `p` leaves every output before `p` bit-identical.
    #[test]
    fn attention_is_causal() {
        let device = Device::flex();
        let (b, t, heads, dh) = (2, 9, 2, 4);
        let (cos, sin) = rope_tables(t, dh, 10_000.0, &device);
        let qkv = Tensor::<3>::random([b, t, 3 * heads * dh], Distribution::Normal(0.0, 1.0), &device);
        let base = vals(causal_attention(qkv.clone(), &cos, &sin, heads));
        let p = 5;
        let noise = Tensor::<3>::random([b, t - p, 3 * heads * dh], Distribution::Normal(0.0, 1.0), &device);
        let changed = qkv.clone().slice_assign([0..b, p..t, 0..3 * heads * dh], noise);
        let after = vals(causal_attention(changed, &cos, &sin, heads));
        let w = heads * dh;
        for bi in 0..b {
            let prefix = bi * t * w..(bi * t + p) * w;
            assert_eq!(base[prefix.clone()], after[prefix], "outputs before position {p} changed");
            assert_ne!(base[(bi * t + p) * w..(bi + 1) * t * w], after[(bi * t + p) * w..(bi + 1) * t * w]);
        }
    }
}
