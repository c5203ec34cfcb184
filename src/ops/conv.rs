//! Engram's short convolution: a depthwise causal dilated convolution along time, and it
//! followed by SiLU.
//!
//! Paper §2.3 (Cheng et al., arXiv 2601.07372; reference: `ShortConv` in deepseek-ai/Engram
//! `engram_demo_v1.py`): kernel 4, dilation the largest n-gram order, zero-initialised.
//! Deviation (the same values):
//! [`causal_depthwise_conv`] writes it as a sum of `kernel` shifted, per-channel-scaled copies
//! of the input, exactly `Conv1d(C, C, k, groups=C, dilation=r, padding=(k−1)·r, bias=False)`
//! truncated to the first `T` outputs (a test checks it against burn's `Conv1d`), which avoids
//! a generic convolution kernel on the CPU. [`causal_conv_silu`] is SiLU of it, on flex one
//! pass forward and one backward with the sequences split over the cores.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, Flex, TensorMetadata};
use burn::tensor::activation::silu;
use burn::tensor::ops::PadMode;
use burn::tensor::Tensor;

use super::backend::{enabled, flex_f32, host_f32, n_input_op, par_units, par_units_sum, transpose, MIN_ELEMS_PER_THREAD};
use super::simd::sigmoid;

/// `SiLU(causal_depthwise_conv)` as a burn backend extension. Use [`causal_conv_silu`], which
/// picks it on flex and burn's own operations elsewhere.
#[backend_extension(Flex, Autodiff)]
pub trait ConvOps: Backend {
    /// `SiLU(causal depthwise convolution)` of `x` `[B, T, C]` with `weight` `[C, k]` and
    /// dilation `dilation` (as [`causal_depthwise_conv`]).
    fn causal_conv_silu(x: FloatTensor<Self>, weight: FloatTensor<Self>, dilation: usize) -> FloatTensor<Self>;
}

/// Depthwise causal dilated convolution along time.
///
/// `y[b, t, c] = Σ_j w[c, j] · x[b, t − (k−1−j)·r, c]` with zeros before the start: exactly
/// PyTorch's `Conv1d(C, C, k, groups=C, dilation=r, padding=(k−1)·r, bias=False)` on the
/// transposed input, truncated to the first `T` outputs.
///
/// # Shapes
/// - `x`: `[B, T, C]`, `weight`: `[C, k]` → `[B, T, C]`
pub fn causal_depthwise_conv(x: Tensor<3>, weight: Tensor<2>, dilation: usize) -> Tensor<3> {
    let [b, t, c] = x.dims();
    let [_, k] = weight.dims();
    let mut out: Option<Tensor<3>> = None;
    for j in 0..k {
        let shift = (k - 1 - j) * dilation;
        if shift >= t {
            continue; // this tap only ever reads the zero padding
        }
        let w_j = weight.clone().slice([0..c, j..j + 1]).reshape([1, 1, c]);
        let shifted = if shift == 0 {
            x.clone()
        } else {
            // [B, T − shift, C] padded with `shift` zeros in front → [B, T, C]
            x.clone().slice([0..b, 0..t - shift, 0..c]).pad([(0, 0), (shift, 0), (0, 0)], PadMode::Constant(0.0))
        };
        let term = shifted * w_j;
        out = Some(match out {
            Some(o) => o + term,
            None => term,
        });
    }
    out.unwrap_or_else(|| x.zeros_like())
}

/// `SiLU(causal_depthwise_conv(x, weight, dilation))`, the end of Engram's short convolution;
/// one pass forward and one backward on flex, burn's ops elsewhere.
///
/// # Shapes
/// - `x`: `[B, T, C]`, `weight`: `[C, k]` → `[B, T, C]`
pub fn causal_conv_silu(x: Tensor<3>, weight: Tensor<2>, dilation: usize) -> Tensor<3> {
    if enabled(&x.device()) {
        return Tensor::from_dispatch(<Dispatch as ConvOps>::causal_conv_silu(x.into_dispatch(), weight.into_dispatch(), dilation));
    }
    silu(causal_depthwise_conv(x, weight, dilation))
}

impl ConvOps for Flex {
    fn causal_conv_silu(x: FlexTensor, weight: FlexTensor, dilation: usize) -> FlexTensor {
        conv_silu_flex(&x, &weight, dilation)
    }
}

impl<C: CheckpointStrategy> ConvOps for Autodiff<Flex, C> {
    fn causal_conv_silu(x: FloatTensor<Self>, weight: FloatTensor<Self>, dilation: usize) -> FloatTensor<Self> {
        n_input_op::<C, _, 2>([x, weight], dilation, |[x, w], &r| conv_silu_flex(x, w, r), |[x, w], grad, &r| conv_silu_backward_flex(x, w, grad, r).into())
    }
}

/// Sizes of a convolution call: `[B, T, C]` input, `k` taps, dilation `r`.
fn conv_dims(x: &FlexTensor, w: &FlexTensor) -> (usize, usize, usize, usize) {
    let (s, ws) = (x.shape(), w.shape());
    assert_eq!(s.num_dims(), 3, "the convolution takes [B, T, C], got {s:?}");
    assert!(ws.num_dims() == 2 && ws[0] == s[2], "convolution weight {ws:?} for {} channels", s[2]);
    (s[0], s[1], s[2], ws[1])
}

/// The convolution of sequence `x` (`[T, C]`) into `out` (`[T, C]`): tap `j` reads position
/// `t − (k−1−j)·r` (zero before the start). `wt` is the weight tap-major, `[k, C]`, so that the
/// loop over channels reads it contiguously (and vectorises).
#[inline(always)]
pub(super) fn conv_seq(x: &[f32], wt: &[f32], t: usize, c: usize, k: usize, r: usize, out: &mut [f32]) {
    out.iter_mut().for_each(|o| *o = 0.0);
    for j in 0..k {
        let shift = (k - 1 - j) * r;
        let w = &wt[j * c..(j + 1) * c];
        for ti in shift..t {
            let (o, src) = (&mut out[ti * c..(ti + 1) * c], &x[(ti - shift) * c..(ti - shift + 1) * c]);
            for ((o, &w), &x) in o.iter_mut().zip(w).zip(src) {
                *o += w * x;
            }
        }
    }
}

/// Backward of `SiLU(conv(x))` for one sequence (`[T, C]`, weight tap-major `wt` `[k, C]`):
/// `dz ← dy · SiLU'(conv(x))` (scratch), `dx[t'] += Σ_j w_j · dz[t' + (k−1−j)·r]` and
/// `dwt[j] += Σ_t dz[t] · x[t − (k−1−j)·r]`.
#[allow(clippy::too_many_arguments)] // flat kernel arguments
#[inline(always)]
pub(super) fn conv_silu_backward_seq(x: &[f32], wt: &[f32], dy: &[f32], t: usize, c: usize, k: usize, r: usize, dz: &mut [f32], dx: &mut [f32], dwt: &mut [f32]) {
    conv_seq(x, wt, t, c, k, r, dz);
    for (z, &g) in dz.iter_mut().zip(dy) {
        let s = sigmoid(*z);
        *z = g * s * (1.0 + *z * (1.0 - s));
    }
    for j in 0..k {
        let shift = (k - 1 - j) * r;
        let (wj, dwj) = (&wt[j * c..(j + 1) * c], &mut dwt[j * c..(j + 1) * c]);
        for ti in shift..t {
            let (d, src, o) = (&dz[ti * c..(ti + 1) * c], &x[(ti - shift) * c..(ti - shift + 1) * c], ti - shift);
            for ((dxo, &w), &d) in dx[o * c..(o + 1) * c].iter_mut().zip(wj).zip(d) {
                *dxo += w * d;
            }
            for ((dw, &d), &x) in dwj.iter_mut().zip(d).zip(src) {
                *dw += d * x;
            }
        }
    }
}

simd_kernel! {
    fn conv_silu_flex(x: &FlexTensor, w: &FlexTensor, r: usize) -> FlexTensor {
        let (b, t, c, k) = conv_dims(x, w);
        let (xs, ws) = (host_f32(x), transpose(&host_f32(w), c, k));
        let mut out = vec![0.0f32; b * t * c];
        if t * c > 0 {
            par_units(&mut out, t * c, MIN_ELEMS_PER_THREAD, |b0, out| {
                for (i, y) in out.chunks_exact_mut(t * c).enumerate() {
                    let at = (b0 + i) * t * c;
                    conv_seq(&xs[at..at + t * c], &ws, t, c, k, r, y);
                    y.iter_mut().for_each(|v| *v *= sigmoid(*v));
                }
            });
        }
        flex_f32(out, vec![b, t, c])
    }
}

simd_kernel! {
    /// Gradients of [`conv_silu_flex`]: with `z` the convolution and `dz = dy · σ(z)(1 + z(1−σ(z)))`,
    /// `dx[t'] = Σ_j w[·, j] · dz[t' + (k−1−j)·r]` and `dw[·, j] = Σ_{b,t} dz[t] · x[t − (k−1−j)·r]`.
    fn conv_silu_backward_flex(x: &FlexTensor, w: &FlexTensor, grad: &FlexTensor, r: usize) -> (FlexTensor, FlexTensor) {
        let (b, t, c, k) = conv_dims(x, w);
        let (xs, ws, dy) = (host_f32(x), transpose(&host_f32(w), c, k), host_f32(grad));
        let mut dx = vec![0.0f32; b * t * c];
        // Each thread sums dw (tap-major, [k, C]) over its sequences; the partial sums are
        // added afterwards.
        let dwt = par_units_sum(&mut dx, t * c, MIN_ELEMS_PER_THREAD, c * k, |b0, dx, dw| {
            let mut dz = vec![0.0f32; t * c];
            for (i, dxs) in dx.chunks_exact_mut(t * c).enumerate() {
                let at = (b0 + i) * t * c;
                let (xq, g) = (&xs[at..at + t * c], &dy[at..at + t * c]);
                conv_silu_backward_seq(xq, &ws, g, t, c, k, r, &mut dz, dxs, dw);
            }
        });
        (flex_f32(dx, vec![b, t, c]), flex_f32(transpose(&dwt, k, c), vec![c, k]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::compare_two;
    use burn::module::Param;
    use burn::nn::conv::Conv1dConfig;
    use burn::nn::PaddingConfig1d;
    use burn::tensor::{Device, Distribution};

    fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    #[test]
    fn conv_matches_burn_depthwise_causal_conv1d() {
        let device = Device::flex();
        let (b, t, c, k, r) = (2, 20, 6, 4, 3);
        let x = Tensor::<3>::random([b, t, c], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<2>::random([c, k], Distribution::Normal(0.0, 1.0), &device);
        let ours = causal_depthwise_conv(x.clone(), w.clone(), r);
        let mut conv = Conv1dConfig::new(c, c, k)
            .with_groups(c)
            .with_dilation(r)
            .with_padding(PaddingConfig1d::Explicit((k - 1) * r, 0))
            .with_bias(false)
            .init(&device);
        conv.weight = Param::from_tensor(w.reshape([c, 1, k]));
        let theirs = conv.forward(x.swap_dims(1, 2)).swap_dims(1, 2); // [B, T, C]
        assert_eq!(theirs.dims(), [b, t, c]);
        assert!(max_abs_diff(ours, theirs) < 1e-5);
    }

    /// Against SiLU of the composite convolution, input and weight gradients, with taps that
    /// only read the zero padding (shift ≥ T) and several sequences per thread.
    #[test]
    fn causal_conv_silu_matches_the_composite_conv() {
        let device = Device::flex().autodiff();
        for (b, t, c, k, r) in [(1, 1, 1, 1, 1), (2, 5, 3, 4, 2), (5, 40, 130, 4, 3)] {
            let x = Tensor::<3>::random([b, t, c], Distribution::Normal(0.0, 1.0), &device);
            let w = Tensor::<2>::random([c, k], Distribution::Normal(0.0, 1.0), &device);
            let rr = Tensor::<3>::random([b, t, c], Distribution::Normal(0.0, 1.0), &device);
            let theirs = |x, w| silu(causal_depthwise_conv(x, w, r));
            compare_two(&format!("conv {b}x{t}x{c} k{k} r{r}"), x, w, rr, |x, w| causal_conv_silu(x, w, r), theirs);
        }
    }
}
