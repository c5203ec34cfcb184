//! Fused CPU kernels with hand-written backward passes, for the flex backend: the SwiGLU gate
//! `SiLU(g) ⊙ u`, causal self-attention with RoPE, RMSNorm, the matrix product, Engram's
//! causal convolution + SiLU, Engram's whole gate and short convolution after its two
//! projections ([`engram_gate_conv`]: two RMSNorms, the score, its signed square root and
//! sigmoid, the gating, a third RMSNorm, the convolution, SiLU and the residual add — about
//! twenty burn operations and their backward steps, 2.9 → 1.9 ms forward + backward for the
//! default experiment's layer), and the LM head's softmax cross-entropy.
//!
//! burn composes the first ones from element-wise tensor operations, each a separate pass over
//! memory, mostly on one core, with the scalar `expf` of libm; in autodiff every one of them
//! also records a backward step. On the reference configuration of `exp_throughput` the gate
//! (forward and backward) took 21 ms per block and burn's attention 19 ms per block, a quarter
//! of the training step. Here each is one pass forward and one backward, split over rayon's
//! pool: element-wise work with the vectorised exponential of [`super::xent`], the attention
//! per (sequence, head) with `gemm`'s matrix kernels (the library burn-flex's own matrix
//! product calls) on the rotated queries and keys, its softmax kept for the backward pass.
//! burn-flex's matrix product zero-fills every output and then copies it into an aligned
//! buffer; [`matmul`] lets `gemm` write the output directly.
//!
//! The kernels are registered as a burn backend extension ([`FusedOps`]) for `Flex` and
//! `Autodiff<Flex>`; the public functions use them on a flex device and fall back to the
//! equivalent burn tensor operations on every other device. Tests check values and gradients
//! against burn's operations.

use std::borrow::Cow;

use rayon::prelude::*;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, Flex, TensorMetadata};
use burn::tensor::activation::silu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Device, Tensor, TensorData};

use super::attention::Rope;
use super::xent::exp_nonpositive;

/// Whether the fused kernels run on `device` (flex, with or without autodiff).
pub fn enabled(device: &Device) -> bool {
    device.clone().without_autodiff() == Device::flex()
}

/// The fused kernels as a burn backend extension. Use [`swiglu`] and [`causal_attention`],
/// which pick these on flex and burn's own operations elsewhere.
#[backend_extension(Flex, Autodiff)]
pub trait FusedOps: Backend {
    /// `SiLU(a[:, :F]) ⊙ a[:, F:]` for `a` of shape `[N, 2F]` → `[N, F]`.
    fn swiglu(gate_up: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Causal attention of the fused projection `qkv` (`[B, T, 3D]`: queries, keys, values),
    /// `n_heads` heads, RoPE tables `cos`/`sin` (`[≥ T, d_head / 2]`) applied to queries and
    /// keys → `[B, T, D]` (heads side by side).
    fn causal_attention(qkv: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>, n_heads: usize) -> FloatTensor<Self>;

    /// `lhs · rhs` for 2-D `lhs` `[M, K]` and `rhs` `[K, N]` (either may be a strided view).
    fn matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self>;

    /// RMSNorm over the last dimension: `x / √(mean(x²) + eps) · gamma`.
    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f64) -> FloatTensor<Self>;

    /// `SiLU(causal depthwise convolution)` of `x` `[B, T, C]` with `weight` `[C, k]` and
    /// dilation `dilation` (as [`crate::engram::causal_depthwise_conv`]).
    fn causal_conv_silu(x: FloatTensor<Self>, weight: FloatTensor<Self>, dilation: usize) -> FloatTensor<Self>;

    /// Engram's gate and short convolution for one branch, see [`engram_gate_conv`].
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
}

/// `SiLU(gate) ⊙ up`, the gate of a SwiGLU feed-forward, with gate and up side by side in one
/// tensor (the output of one fused projection).
///
/// # Shapes
/// - `gate_up`: `[N, 2F]` → `[N, F]`
///
/// ```
/// use burn::tensor::{Device, Distribution, Tensor};
/// use burn::tensor::activation::silu;
/// let device = Device::flex();
/// let a = Tensor::<2>::random([4, 6], Distribution::Default, &device);
/// let y = engram::model::fused::swiglu(a.clone());
/// let expected = silu(a.clone().slice([0..4, 0..3])) * a.slice([0..4, 3..6]);
/// assert!((y - expected).abs().max().into_scalar::<f32>() < 1e-6);
/// ```
pub fn swiglu(gate_up: Tensor<2>) -> Tensor<2> {
    if enabled(&gate_up.device()) {
        return Tensor::from_dispatch(<Dispatch as FusedOps>::swiglu(gate_up.into_dispatch()));
    }
    let [n, f2] = gate_up.dims();
    let f = f2 / 2;
    silu(gate_up.clone().slice([0..n, 0..f])) * gate_up.slice([0..n, f..f2])
}

/// Causal multi-head attention with RoPE on queries and keys, scale `1/√d_head`, from the
/// output of a fused query-key-value projection.
///
/// # Shapes
/// - `qkv`: `[B, T, 3D]` (queries, keys, values side by side; head `h` is columns
///   `h·d_head..(h+1)·d_head` of each) → `[B, T, D]`
pub fn causal_attention(qkv: Tensor<3>, rope: &Rope, n_heads: usize) -> Tensor<3> {
    let [b, t, d3] = qkv.dims();
    let d = d3 / 3;
    if enabled(&qkv.device()) {
        let cos = rope.cos.clone().into_dispatch();
        let sin = rope.sin.clone().into_dispatch();
        return Tensor::from_dispatch(<Dispatch as FusedOps>::causal_attention(qkv.into_dispatch(), cos, sin, n_heads));
    }
    let dh = d / n_heads;
    let part = |i: usize| qkv.clone().slice([0..b, 0..t, i * d..(i + 1) * d]).reshape([b, t, n_heads, dh]).swap_dims(1, 2);
    let q = rope.apply(part(0));
    let k = rope.apply(part(1));
    let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
    let y = attention(q, k, part(2), None, None, options); // [B, H, T, dh]
    y.swap_dims(1, 2).reshape([b, t, d])
}

/// `lhs · rhs` of two matrices.
///
/// Same as [`Tensor::matmul`]; on flex, the product writes straight into its output (burn-flex
/// zero-fills a buffer and then copies it into an aligned one before every product), and the
/// backward pass is the two products of the gradient, nothing else.
///
/// # Shapes
/// - `lhs`: `[M, K]`, `rhs`: `[K, N]` → `[M, N]`
pub fn matmul(lhs: Tensor<2>, rhs: Tensor<2>) -> Tensor<2> {
    if enabled(&lhs.device()) {
        return Tensor::from_dispatch(<Dispatch as FusedOps>::matmul(lhs.into_dispatch(), rhs.into_dispatch()));
    }
    lhs.matmul(rhs)
}

/// RMSNorm of the last dimension with gain `gamma` and epsilon `eps`, as burn's
/// [`burn::nn::RmsNorm`] computes it; one pass per row on flex.
///
/// # Shapes
/// - `x`: `[.., D]`, `gamma`: `[D]` → `[.., D]`
pub fn rms_norm<const N: usize>(x: Tensor<N>, gamma: Tensor<1>, eps: f64) -> Tensor<N> {
    if enabled(&x.device()) {
        return Tensor::from_dispatch(<Dispatch as FusedOps>::rms_norm(x.into_dispatch(), gamma.into_dispatch(), eps));
    }
    let rms = (x.clone().square().mean_dim(N - 1) + eps).sqrt();
    (x / rms) * gamma.unsqueeze()
}

/// `SiLU(causal_depthwise_conv(x, weight, dilation))`, the end of Engram's short convolution;
/// one pass forward and one backward on flex, burn's ops elsewhere.
///
/// # Shapes
/// - `x`: `[B, T, C]`, `weight`: `[C, k]` → `[B, T, C]`
pub fn causal_conv_silu(x: Tensor<3>, weight: Tensor<2>, dilation: usize) -> Tensor<3> {
    if enabled(&x.device()) {
        return Tensor::from_dispatch(<Dispatch as FusedOps>::causal_conv_silu(x.into_dispatch(), weight.into_dispatch(), dilation));
    }
    silu(crate::engram::causal_depthwise_conv(x, weight, dilation))
}

/// Engram's layer after its two projections, for one branch, in one pass forward and one
/// backward (flex only; [`crate::engram::Engram::forward`] composes burn's operations
/// elsewhere):
///
/// `α = σ(sign(s)·√max(|s|, 1e−6))` with `s = ⟨RMSNorm_q(h), RMSNorm_k(k)⟩ / √D`, `ṽ = α·v`,
/// `Y = ṽ + SiLU(CausalConv(RMSNorm_c(ṽ)))`.
///
/// # Shapes
/// - `value`, `key`, `hidden`: `[B, T, D]`; gains `[D]`; `conv_weight`: `[D, k]` → `[B, T, D]`
///
/// # Panics
/// Off flex (see [`enabled`]).
#[allow(clippy::too_many_arguments)]
pub fn engram_gate_conv(value: Tensor<3>, key: Tensor<3>, hidden: Tensor<3>, gamma_query: Tensor<1>, gamma_key: Tensor<1>, gamma_conv: Tensor<1>, conv_weight: Tensor<2>, params: GateConvParams) -> Tensor<3> {
    assert!(enabled(&value.device()), "engram_gate_conv runs on flex only");
    Tensor::from_dispatch(<Dispatch as FusedOps>::engram_gate_conv(
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

impl FusedOps for Flex {
    fn swiglu(gate_up: FlexTensor) -> FlexTensor {
        swiglu_flex(&gate_up)
    }

    fn causal_attention(qkv: FlexTensor, cos: FlexTensor, sin: FlexTensor, n_heads: usize) -> FlexTensor {
        attention_forward_flex(&qkv, &cos, &sin, n_heads, false).0
    }

    fn matmul(lhs: FlexTensor, rhs: FlexTensor) -> FlexTensor {
        matmul_flex(&lhs, &rhs, false, false)
    }

    fn rms_norm(x: FlexTensor, gamma: FlexTensor, eps: f64) -> FlexTensor {
        rms_norm_flex(&x, &gamma, eps)
    }

    fn causal_conv_silu(x: FlexTensor, weight: FlexTensor, dilation: usize) -> FlexTensor {
        conv_silu_flex(&x, &weight, dilation)
    }

    fn engram_gate_conv(v: FlexTensor, k: FlexTensor, h: FlexTensor, gq: FlexTensor, gk: FlexTensor, gc: FlexTensor, w: FlexTensor, params: GateConvParams) -> FlexTensor {
        gate_conv_flex(&[v, k, h, gq, gk, gc, w], &params)
    }
}

impl<C: CheckpointStrategy> FusedOps for Autodiff<Flex, C> {
    fn swiglu(gate_up: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SwiGluBackward;

        impl Backward<Flex, 1> for SwiGluBackward {
            type State = FlexTensor; // the input

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [parent] = ops.parents;
                let grad = grads.consume::<Flex>(&ops.node);
                if let Some(node) = parent {
                    grads.register::<Flex>(node.id, swiglu_backward_flex(&ops.state, &grad));
                }
            }
        }

        match SwiGluBackward.prepare::<C>([gate_up.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let input = gate_up.primitive().clone();
                let output = swiglu_flex(&input);
                prep.finish(input, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(swiglu_flex(gate_up.primitive())),
        }
    }

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

    fn matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        // d(lhs) = G · rhsᵀ, d(rhs) = lhsᵀ · G.
        let backward = |[l, r]: &[FlexTensor; 2], g: &FlexTensor, _: &()| [matmul_flex(g, r, false, true), matmul_flex(l, g, true, false)];
        n_input_op::<C, _, 2>([lhs, rhs], (), |[l, r], _| matmul_flex(l, r, false, false), backward)
    }

    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        n_input_op::<C, _, 2>([x, gamma], eps, |[x, g], &eps| rms_norm_flex(x, g, eps), |[x, g], grad, &eps| rms_norm_backward_flex(x, g, grad, eps).into())
    }

    fn causal_conv_silu(x: FloatTensor<Self>, weight: FloatTensor<Self>, dilation: usize) -> FloatTensor<Self> {
        n_input_op::<C, _, 2>([x, weight], dilation, |[x, w], &r| conv_silu_flex(x, w, r), |[x, w], grad, &r| conv_silu_backward_flex(x, w, grad, r).into())
    }

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

/// Forward of an `N`-input fused op: `(inputs, parameter) → output`.
type ForwardN<P, const N: usize> = fn(&[FlexTensor; N], &P) -> FlexTensor;
/// Backward of an `N`-input fused op: `(inputs, output gradient, parameter) → input gradients`.
type BackwardN<P, const N: usize> = fn(&[FlexTensor; N], &FlexTensor, &P) -> [FlexTensor; N];

/// The autodiff step of an `N`-input fused op; keeps the inputs for the backward pass.
#[derive(Debug)]
struct NInputBackward<P, const N: usize> {
    param: P,
    backward: BackwardN<P, N>,
}

impl<P: std::fmt::Debug + Send + 'static, const N: usize> Backward<Flex, N> for NInputBackward<P, N> {
    type State = [FlexTensor; N];

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let input_grads = (self.backward)(&ops.state, &grad, &self.param);
        for (node, g) in ops.parents.into_iter().zip(input_grads) {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, g);
            }
        }
    }
}

/// Run an `N`-input fused op on `Autodiff<Flex>`, recording its backward step when an input is
/// tracked.
fn n_input_op<C: CheckpointStrategy, P: std::fmt::Debug + Send + 'static, const N: usize>(inputs: [FloatTensor<Autodiff<Flex, C>>; N], param: P, forward: ForwardN<P, N>, backward: BackwardN<P, N>) -> FloatTensor<Autodiff<Flex, C>> {
    let primitives = inputs.each_ref().map(|x| x.primitive().clone());
    let output = forward(&primitives, &param);
    match (NInputBackward { param, backward }).prepare::<C>(inputs.each_ref().map(|x| x.node())).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(primitives, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

// ---------------------------------------------------------------------------------------------
// Host memory access

/// The elements of an f32 tensor in row-major order (borrowed when it is contiguous).
fn host_f32(t: &FlexTensor) -> Cow<'_, [f32]> {
    assert_eq!(t.dtype(), DType::F32, "the fused kernels take f32 tensors");
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(t.to_contiguous().into_data().try_into_vec::<f32>().expect("f32 data")),
    }
}

fn dims_of(shape: &burn::tensor::Shape) -> Vec<usize> {
    (0..shape.num_dims()).map(|i| shape[i]).collect()
}

fn flex_f32(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Split `out` into chunks of `unit · k` elements (`k` whole units each), one chunk per thread
/// (at most [`crate::runtime::threads_for`] of them), and run `f(first_unit, chunk)` on each,
/// on rayon's pool (the threads `gemm` uses; starting OS threads per call cost more than the
/// small kernels themselves).
fn par_units<T: Send>(out: &mut [T], unit: usize, min_per_thread: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    par_units_sum(out, unit, min_per_thread, 0, |u0, chunk, _| f(u0, chunk));
}

/// [`par_units`] with an accumulator of `acc_len` zeros per chunk, `f(first_unit, chunk, acc)`;
/// returns the accumulators' element-wise sum (for gradients summed over rows).
fn par_units_sum<T: Send>(out: &mut [T], unit: usize, min_per_thread: usize, acc_len: usize, f: impl Fn(usize, &mut [T], &mut [f32]) + Sync) -> Vec<f32> {
    let mut sum = vec![0.0f32; acc_len];
    if out.is_empty() || unit == 0 {
        return sum;
    }
    debug_assert_eq!(out.len() % unit, 0, "whole units only");
    let units = out.len() / unit;
    let threads = crate::runtime::threads_for(out.len(), min_per_thread).min(units.max(1));
    if threads <= 1 {
        f(0, out, &mut sum);
        return sum;
    }
    let per = units.div_ceil(threads);
    let chunks = units.div_ceil(per);
    let mut acc = vec![0.0f32; chunks * acc_len];
    let accs: Vec<&mut [f32]> = if acc_len == 0 { (0..chunks).map(|_| &mut [][..]).collect() } else { acc.chunks_mut(acc_len).collect() };
    out.par_chunks_mut(per * unit).zip(accs).enumerate().for_each(|(i, (chunk, a))| f(i * per, chunk, a));
    for a in acc.chunks_exact(acc_len.max(1)) {
        sum.iter_mut().zip(a).for_each(|(s, x)| *s += x);
    }
    sum
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

/// Fewest elements per thread for the element-wise kernels.
const MIN_ELEMS_PER_THREAD: usize = 1 << 15;

/// `σ(x)` through `exp(−|x|)`, exact in both tails; branch-free (vectorises).
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 {
        r
    } else {
        e * r
    }
}

fn swiglu_flex(input: &FlexTensor) -> FlexTensor {
    let shape = input.shape();
    let (n, f) = (shape[0], shape[1] / 2);
    let a = host_f32(input);
    let mut out = vec![0.0f32; n * f];
    swiglu_rows(&a, f, &mut out);
    flex_f32(out, vec![n, f])
}

simd_kernel! {
    /// `out[r, j] = SiLU(a[r, j]) · a[r, F + j]` for rows `a` of width `2F`.
    fn swiglu_rows(a: &[f32], f: usize, out: &mut [f32]) {
        if f == 0 {
            return;
        }
        par_units(out, f, MIN_ELEMS_PER_THREAD, |row0, out| {
            for (r, y) in out.chunks_exact_mut(f).enumerate() {
                let row = &a[(row0 + r) * 2 * f..(row0 + r + 1) * 2 * f];
                let (g, u) = row.split_at(f);
                for ((y, &g), &u) in y.iter_mut().zip(g).zip(u) {
                    *y = g * sigmoid(g) * u;
                }
            }
        });
    }
}

fn swiglu_backward_flex(input: &FlexTensor, grad: &FlexTensor) -> FlexTensor {
    let shape = input.shape();
    let (n, f2) = (shape[0], shape[1]);
    let a = host_f32(input);
    let dy = host_f32(grad);
    let mut da = vec![0.0f32; n * f2];
    swiglu_backward_rows(&a, &dy, f2 / 2, &mut da);
    flex_f32(da, vec![n, f2])
}

simd_kernel! {
    /// Gradient of [`swiglu_rows`]: `d[r, j] = dy · u · σ(g)(1 + g(1 − σ(g)))` for the gate,
    /// `d[r, F + j] = dy · SiLU(g)` for the up part.
    fn swiglu_backward_rows(a: &[f32], dy: &[f32], f: usize, da: &mut [f32]) {
        if f == 0 {
            return;
        }
        par_units(da, 2 * f, MIN_ELEMS_PER_THREAD, |row0, da| {
            for (r, d) in da.chunks_exact_mut(2 * f).enumerate() {
                let row = row0 + r;
                let (g, u) = a[row * 2 * f..(row + 1) * 2 * f].split_at(f);
                let dy = &dy[row * f..(row + 1) * f];
                let (dg, du) = d.split_at_mut(f);
                for j in 0..f {
                    let s = sigmoid(g[j]);
                    dg[j] = dy[j] * u[j] * s * (1.0 + g[j] * (1.0 - s));
                    du[j] = dy[j] * g[j] * s;
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Attention

/// A strided read-only matrix view for [`gemm`].
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    /// Offset of element (0, 0).
    at: usize,
    /// Row stride.
    rs: usize,
    /// Column stride.
    cs: usize,
}

impl<'a> Mat<'a> {
    fn rows(data: &'a [f32], at: usize, rs: usize) -> Self {
        Self { data, at, rs, cs: 1 }
    }

    /// The transpose of the row-major matrix at `at` with row stride `rs`.
    fn transposed(data: &'a [f32], at: usize, rs: usize) -> Self {
        Self { data, at, rs: 1, cs: rs }
    }
}

/// `dst = scale · lhs · rhs` with `lhs` `m × k`, `rhs` `k × n`, `dst` row-major `m × n` with row
/// stride `dst_rs`; one thread (the callers split their work over the cores themselves).
#[allow(clippy::too_many_arguments)] // flat kernel arguments
fn gemm(m: usize, n: usize, k: usize, dst: &mut [f32], dst_rs: usize, lhs: Mat, rhs: Mat, scale: f32) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst.iter_mut().for_each(|x| *x = 0.0);
        return;
    }
    // SAFETY: `dst` is a live, exclusively borrowed slice of `dst.len()` elements.
    unsafe { gemm_raw(m, n, k, dst.as_mut_ptr(), dst.len(), dst_rs, lhs, rhs, scale, gemm::Parallelism::None) }
}

/// [`gemm`] into raw memory: `dst` must be valid for writes of `dst_len` f32s and not overlap
/// the operands. Panics if an element of the operands or of the destination would fall outside
/// them; requires `m, n, k ≥ 1`.
#[allow(clippy::too_many_arguments)] // flat kernel arguments
unsafe fn gemm_raw(m: usize, n: usize, k: usize, dst: *mut f32, dst_len: usize, dst_rs: usize, lhs: Mat, rhs: Mat, scale: f32, par: gemm::Parallelism) {
    let last = |at: usize, rows: usize, rs: usize, cols: usize, cs: usize| at + (rows - 1) * rs + (cols - 1) * cs;
    assert!(m > 0 && n > 0 && k > 0);
    assert!(last(0, m, dst_rs, n, 1) < dst_len, "gemm: destination out of bounds");
    assert!(last(lhs.at, m, lhs.rs, k, lhs.cs) < lhs.data.len(), "gemm: left operand out of bounds");
    assert!(last(rhs.at, k, rhs.rs, n, rhs.cs) < rhs.data.len(), "gemm: right operand out of bounds");
    let s = |x: usize| x as isize;
    // SAFETY: every element gemm reads lies inside the operand slices and every element it
    // writes inside the destination (checked above); the caller guarantees `dst` is writable
    // and does not alias the operands.
    unsafe {
        gemm::gemm(m, n, k, dst, 1, s(dst_rs), false, lhs.data.as_ptr().add(lhs.at), s(lhs.cs), s(lhs.rs), rhs.data.as_ptr().add(rhs.at), s(rhs.cs), s(rhs.rs), 0.0, scale, false, false, false, par);
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


// ---------------------------------------------------------------------------------------------
// Matrix product

/// Products of at least this many multiply-adds use every core (burn-flex's threshold).
const PARALLEL_MACS: usize = 192 * 192 * 192;

/// `op(lhs) · op(rhs)` of two 2-D flex tensors, `op` the transpose where asked; strided views
/// are read in place.
fn matmul_flex(lhs: &FlexTensor, rhs: &FlexTensor, t_lhs: bool, t_rhs: bool) -> FlexTensor {
    let contiguous;
    let view = |t: &FlexTensor, transpose: bool| -> (Vec<usize>, isize, isize) {
        let s = t.shape();
        assert_eq!(s.num_dims(), 2, "matmul takes matrices, got shape {s:?}");
        let st = t.layout().strides();
        let (rows, cols, rs, cs) = (s[0], s[1], st[0], st[1]);
        if transpose {
            (vec![cols, rows], cs, rs)
        } else {
            (vec![rows, cols], rs, cs)
        }
    };
    // Negative strides (flips) are not handled by the views below: copy those.
    let fix = |t: &FlexTensor| t.layout().strides().iter().any(|&x| x < 0);
    let (lhs, rhs) = if fix(lhs) || fix(rhs) {
        contiguous = (lhs.to_contiguous(), rhs.to_contiguous());
        (&contiguous.0, &contiguous.1)
    } else {
        (lhs, rhs)
    };
    let (ls, l_rs, l_cs) = view(lhs, t_lhs);
    let (rs_shape, r_rs, r_cs) = view(rhs, t_rhs);
    let (m, k, n) = (ls[0], ls[1], rs_shape[1]);
    assert_eq!(k, rs_shape[0], "matmul: inner dimensions differ ({k} vs {})", rs_shape[0]);
    assert!(lhs.dtype() == DType::F32 && rhs.dtype() == DType::F32, "the fused kernels take f32 tensors");
    let (ld, rd) = (lhs.storage::<f32>(), rhs.storage::<f32>());
    let mat = |data, t: &FlexTensor, rs: isize, cs: isize| Mat { data, at: t.layout().start_offset(), rs: rs as usize, cs: cs as usize };
    let out = product_uninit(m, n, k, mat(ld, lhs, l_rs, l_cs), mat(rd, rhs, r_rs, r_cs));
    flex_f32(out, vec![m, n])
}

/// `lhs · rhs` (`m × k` times `k × n`) into a new row-major vector, written by gemm without
/// zero-filling it first; all cores for large products.
fn product_uninit(m: usize, n: usize, k: usize, lhs: Mat, rhs: Mat) -> Vec<f32> {
    let len = m * n;
    if len == 0 {
        return Vec::new();
    }
    if k == 0 {
        return vec![0.0; len];
    }
    let mut out: Vec<std::mem::MaybeUninit<f32>> = Vec::with_capacity(len);
    // SAFETY: MaybeUninit needs no initialisation.
    unsafe { out.set_len(len) };
    let parallel = m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MACS && crate::runtime::n_threads() > 1;
    // SAFETY: `gemm_raw` checks the operands' bounds; with `read_dst = false` gemm writes every
    // element of the m × n destination (row stride n) and reads none, so afterwards all `len`
    // elements are initialised f32s.
    unsafe {
        let par = if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
        gemm_raw(m, n, k, out.as_mut_ptr().cast::<f32>(), len, n, lhs, rhs, 1.0, par);
        let mut out = std::mem::ManuallyDrop::new(out);
        Vec::from_raw_parts(out.as_mut_ptr().cast::<f32>(), out.len(), out.capacity())
    }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

simd_kernel! {
    fn rms_norm_flex(x: &FlexTensor, gamma: &FlexTensor, eps: f64) -> FlexTensor {
        let shape = x.shape();
        let d = shape[shape.num_dims() - 1];
        let (xs, g) = (host_f32(x), host_f32(gamma));
        assert_eq!(g.len(), d, "RMSNorm gain of {} for rows of {d}", g.len());
        let mut out = vec![0.0f32; xs.len()];
        if d > 0 {
            par_units(&mut out, d, MIN_ELEMS_PER_THREAD, |row0, out| {
                for (r, y) in out.chunks_exact_mut(d).enumerate() {
                    rms_norm_row(&xs[(row0 + r) * d..(row0 + r + 1) * d], &g, eps, y);
                }
            });
        }
        flex_f32(out, dims_of(&shape))
    }
}

/// RMSNorm of one row: `y = x · inv · γ`; returns `inv` = [`inv_rms`] of `x`.
#[inline(always)]
fn rms_norm_row(x: &[f32], gamma: &[f32], eps: f64, y: &mut [f32]) -> f32 {
    let inv = inv_rms(x, eps);
    for ((y, &x), &g) in y.iter_mut().zip(x).zip(gamma) {
        *y = x * inv * g;
    }
    inv
}

/// `1 / √(mean(row²) + eps)`.
#[inline(always)]
fn inv_rms(row: &[f32], eps: f64) -> f32 {
    1.0 / (dot(row, row) / row.len() as f32 + eps as f32).sqrt()
}

/// Lanes of the partial sums in [`dot`] and [`dot3`]: two AVX2 registers.
const LANES: usize = 16;

/// `Σ a·b` in [`LANES`] independent partial sums. A serial sum is one chain of dependent
/// additions that the compiler may not reorder, so it neither vectorises nor pipelines; this one
/// does (inside [`simd_kernel!`]), at the price of adding in a different order.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    lanes_sum(acc) + tail
}

/// `Σ a·b·c`, as [`dot`].
#[inline(always)]
fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    debug_assert!(a.len() == b.len() && a.len() == c.len());
    let mut acc = [0.0f32; LANES];
    let (ca, cb, cc) = (a.chunks_exact(LANES), b.chunks_exact(LANES), c.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).zip(cc.remainder()).map(|((x, y), z)| x * y * z).sum();
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l] * z[l];
        }
    }
    lanes_sum(acc) + tail
}

/// `Σ a`, as [`dot`].
#[inline(always)]
fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let tail: f32 = ca.remainder().iter().sum();
    for x in ca {
        for l in 0..LANES {
            acc[l] += x[l];
        }
    }
    lanes_sum(acc) + tail
}

/// The sum of the partial sums, pairwise.
#[inline(always)]
fn lanes_sum(mut acc: [f32; LANES]) -> f32 {
    let mut n = LANES;
    while n > 1 {
        n /= 2;
        for l in 0..n {
            acc[l] += acc[l + n];
        }
    }
    acc[0]
}

simd_kernel! {
    /// Gradients of [`rms_norm_flex`]: with `x̂ = x · r`, `r = 1/√(mean(x²) + eps)`,
    /// `dx = r · (dy ⊙ γ − x̂ · mean(dy ⊙ γ ⊙ x̂))` per row, `dγ = Σ_rows dy ⊙ x̂`.
    fn rms_norm_backward_flex(x: &FlexTensor, gamma: &FlexTensor, grad: &FlexTensor, eps: f64) -> (FlexTensor, FlexTensor) {
        let shape = x.shape();
        let d = shape[shape.num_dims() - 1];
        let (xs, g, dy) = (host_f32(x), host_f32(gamma), host_f32(grad));
        let mut dx = vec![0.0f32; xs.len()];
        // Each thread sums dγ over its rows; the partial sums are added afterwards.
        let dgamma = par_units_sum(&mut dx, d, MIN_ELEMS_PER_THREAD, d, |row0, dx, dg| {
            for (r, out) in dx.chunks_exact_mut(d).enumerate() {
                let at = (row0 + r) * d;
                let (row, dyr) = (&xs[at..at + d], &dy[at..at + d]);
                let inv = inv_rms(row, eps);
                let mean = inv * dot3(row, dyr, &g) / d as f32;
                for j in 0..d {
                    let xhat = row[j] * inv;
                    out[j] = inv * (dyr[j] * g[j] - xhat * mean);
                    dg[j] += dyr[j] * xhat;
                }
            }
        });
        (flex_f32(dx, dims_of(&shape)), flex_f32(dgamma, vec![d]))
    }
}

// ---------------------------------------------------------------------------------------------
// LM head and loss

thread_local! {
    /// The logits of the last [`head_softmax_cross_entropy`] call on this thread, kept so that
    /// the next call writes into memory that is already mapped (`[N, V]` is 64 MiB for the
    /// reference configuration; a fresh buffer each step cost page faults and zeroing).
    static LOGITS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Gradients of the mean head loss with respect to `h`, `w` and the bias (if any).
pub(crate) type HeadGradVecs = (Vec<f32>, Vec<f32>, Option<Vec<f32>>);

/// Softmax cross-entropy of the logits `h·w (+ bias)` (`h` `[n, d]`, `w` `[d, v]`, row-major)
/// against `targets`: the summed loss, and with `scale = Some(1/n)` the gradients of the mean
/// loss, `G·wᵀ`, `hᵀ·G` and the column sums of `G` for `G = (softmax − onehot) / n`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn head_softmax_cross_entropy(h: &[f32], w: &[f32], bias: Option<&[f32]>, n: usize, d: usize, v: usize, targets: &[usize], scale: Option<f32>) -> (f64, Option<HeadGradVecs>) {
    assert!(h.len() == n * d && w.len() == d * v && targets.len() == n, "head: inconsistent sizes");
    LOGITS.with_borrow_mut(|logits| {
        logits.resize(n * v, 0.0);
        let parallel = n * v * d >= PARALLEL_MACS && crate::runtime::n_threads() > 1;
        let par = if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
        if n * v > 0 && d > 0 {
            // SAFETY: `logits` is an exclusively borrowed buffer of n·v elements.
            unsafe { gemm_raw(n, v, d, logits.as_mut_ptr(), n * v, v, Mat::rows(h, 0, d), Mat::rows(w, 0, v), 1.0, par) };
        } else {
            logits.iter_mut().for_each(|x| *x = 0.0);
        }
        if let Some(b) = bias {
            for row in logits.chunks_exact_mut(v.max(1)) {
                row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
            }
        }
        let total = super::xent::softmax_cross_entropy_rows(logits, v, targets, scale);
        let grads = scale.map(|_| {
            let g: &[f32] = logits;
            let gh = product_uninit(n, d, v, Mat::rows(g, 0, v), Mat::transposed(w, 0, v)); // G·wᵀ
            let gw = product_uninit(d, v, n, Mat::transposed(h, 0, d), Mat::rows(g, 0, v)); // hᵀ·G
            let gb = bias.map(|_| {
                let mut sums = vec![0.0f32; v];
                for row in g.chunks_exact(v.max(1)) {
                    sums.iter_mut().zip(row).for_each(|(s, x)| *s += x);
                }
                sums
            });
            (gh, gw, gb)
        });
        (total, grads)
    })
}

// ---------------------------------------------------------------------------------------------
// Causal depthwise convolution + SiLU

/// Sizes of a convolution call: `[B, T, C]` input, `k` taps, dilation `r`.
fn conv_dims(x: &FlexTensor, w: &FlexTensor) -> (usize, usize, usize, usize) {
    let (s, ws) = (x.shape(), w.shape());
    assert_eq!(s.num_dims(), 3, "the convolution takes [B, T, C], got {s:?}");
    assert!(ws.num_dims() == 2 && ws[0] == s[2], "convolution weight {ws:?} for {} channels", s[2]);
    (s[0], s[1], s[2], ws[1])
}

/// `[rows, cols]` → `[cols, rows]`, row-major.
fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; a.len()];
    for (i, row) in a.chunks_exact(cols.max(1)).enumerate().take(rows) {
        for (j, &x) in row.iter().enumerate() {
            out[j * rows + i] = x;
        }
    }
    out
}

/// The convolution of sequence `x` (`[T, C]`) into `out` (`[T, C]`): tap `j` reads position
/// `t − (k−1−j)·r` (zero before the start). `wt` is the weight tap-major, `[k, C]`, so that the
/// loop over channels reads it contiguously (and vectorises).
#[inline(always)]
fn conv_seq(x: &[f32], wt: &[f32], t: usize, c: usize, k: usize, r: usize, out: &mut [f32]) {
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
fn conv_silu_backward_seq(x: &[f32], wt: &[f32], dy: &[f32], t: usize, c: usize, k: usize, r: usize, dz: &mut [f32], dx: &mut [f32], dwt: &mut [f32]) {
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

// ---------------------------------------------------------------------------------------------
// Engram gate and short convolution

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
    /// The convolution weight tap-major, `[taps, D]`.
    wt: Vec<f32>,
    b: usize,
    t: usize,
    d: usize,
    taps: usize,
}

impl<'a> GateConvInputs<'a> {
    fn new(x: &'a [FlexTensor; 7]) -> Self {
        let [v, k, h, gq, gk, gc, w] = x;
        let s = v.shape();
        assert_eq!(s.num_dims(), 3, "engram_gate_conv takes [B, T, D], got {s:?}");
        let (b, t, d) = (s[0], s[1], s[2]);
        for (what, x) in [("key", k), ("hidden", h)] {
            assert_eq!(dims_of(&x.shape()), vec![b, t, d], "engram_gate_conv: {what} shape");
        }
        for (what, g) in [("query gain", gq), ("key gain", gk), ("conv gain", gc)] {
            assert_eq!(dims_of(&g.shape()), vec![d], "engram_gate_conv: {what} shape");
        }
        let ws = w.shape();
        assert!(ws.num_dims() == 2 && ws[0] == d, "convolution weight {ws:?} for {d} channels");
        let taps = ws[1];
        Self { v: host_f32(v), k: host_f32(k), h: host_f32(h), gq: host_f32(gq), gk: host_f32(gk), gc: host_f32(gc), wt: transpose(&host_f32(w), d, taps), b, t, d, taps }
    }

    /// The gate of every row of sequence `seq` into `rows`, `ṽ` into `vt` and
    /// `c = RMSNorm_c(ṽ)` into `c` (both `[T, D]`); `qk` is scratch of `2D`.
    #[inline(always)]
    fn gate_seq(&self, seq: usize, p: &GateConvParams, rows: &mut [GateRow], vt: &mut [f32], c: &mut [f32], qk: &mut [f32]) {
        let (t, d) = (self.t, self.d);
        let inv_sqrt_d = 1.0 / (d as f32).sqrt();
        let (qhat, khat) = qk.split_at_mut(d);
        for ti in 0..t {
            let at = (seq * t + ti) * d;
            let (v, k, h) = (&self.v[at..at + d], &self.k[at..at + d], &self.h[at..at + d]);
            let rq = rms_norm_row(h, &self.gq, p.eps_query, qhat);
            let rk = rms_norm_row(k, &self.gk, p.eps_key, khat);
            let s = dot(qhat, khat) * inv_sqrt_d;
            let alpha = sigmoid(s.signum() * if s == 0.0 { 0.0 } else { s.abs().max(crate::engram::GATE_SQRT_CLAMP).sqrt() });
            let (vt, c) = (&mut vt[ti * d..(ti + 1) * d], &mut c[ti * d..(ti + 1) * d]);
            for (o, &v) in vt.iter_mut().zip(v) {
                *o = alpha * v;
            }
            let rc = rms_norm_row(vt, &self.gc, p.eps_conv, c);
            rows[ti] = GateRow { rq, rk, rc, s, alpha };
        }
    }
}

simd_kernel! {
    /// Forward of [`engram_gate_conv`], one sequence per unit of work.
    fn gate_conv_flex(x: &[FlexTensor; 7], p: &GateConvParams) -> FlexTensor {
        let inp = GateConvInputs::new(x);
        let (b, t, d, taps) = (inp.b, inp.t, inp.d, inp.taps);
        let mut out = vec![0.0f32; b * t * d];
        par_units(&mut out, t * d, MIN_ELEMS_PER_THREAD, |s0, out| {
            let mut rows = vec![GateRow::default(); t];
            let (mut c, mut z, mut qk) = (vec![0.0f32; t * d], vec![0.0f32; t * d], vec![0.0f32; 2 * d]);
            for (i, y) in out.chunks_exact_mut((t * d).max(1)).enumerate() {
                // y ← ṽ, then y += SiLU(conv(c)).
                inp.gate_seq(s0 + i, p, &mut rows, y, &mut c, &mut qk);
                conv_seq(&c, &inp.wt, t, d, taps, p.dilation, &mut z);
                for (y, &z) in y.iter_mut().zip(&z) {
                    *y += z * sigmoid(z);
                }
            }
        });
        flex_f32(out, vec![b, t, d])
    }
}

simd_kernel! {
    /// Gradients of [`engram_gate_conv`] with respect to all seven inputs; the forward
    /// quantities are recomputed per sequence.
    fn gate_conv_backward_flex(x: &[FlexTensor; 7], grad: &FlexTensor, p: &GateConvParams) -> [FlexTensor; 7] {
        let inp = GateConvInputs::new(x);
        let (b, t, d, taps, r) = (inp.b, inp.t, inp.d, inp.taps, p.dilation);
        let dy = host_f32(grad);
        let inv_sqrt_d = 1.0 / (d as f32).sqrt();
        // Per sequence: dv, dk, dh side by side ([3, T, D]); per thread: the gains' and the
        // tap-major weight's gradients, [3D + taps·D].
        let unit = 3 * t * d;
        let mut work = vec![0.0f32; b * unit];
        let acc = par_units_sum(&mut work, unit, MIN_ELEMS_PER_THREAD, (3 + taps) * d, |s0, work, acc| {
            let mut rows = vec![GateRow::default(); t];
            let (mut vt, mut c, mut z, mut dc) = (vec![0.0f32; t * d], vec![0.0f32; t * d], vec![0.0f32; t * d], vec![0.0f32; t * d]);
            let mut qk = vec![0.0f32; 2 * d];
            let (dgq, rest) = acc.split_at_mut(d);
            let (dgk, rest) = rest.split_at_mut(d);
            let (dgc, dwt) = rest.split_at_mut(d);
            for (i, out) in work.chunks_exact_mut(unit.max(1)).enumerate() {
                let seq = s0 + i;
                inp.gate_seq(seq, p, &mut rows, &mut vt, &mut c, &mut qk);
                let g = &dy[seq * t * d..(seq + 1) * t * d];
                // dc = the convolution's input gradient; dw (tap-major) accumulates.
                dc.iter_mut().for_each(|x| *x = 0.0);
                conv_silu_backward_seq(&c, &inp.wt, g, t, d, taps, r, &mut z, &mut dc, dwt);
                let (dv, rest) = out.split_at_mut(t * d);
                let (dk, dh) = rest.split_at_mut(t * d);
                for (ti, &GateRow { rq, rk, rc, s, alpha }) in rows.iter().enumerate() {
                    let at = (seq * t + ti) * d;
                    let span = ti * d..(ti + 1) * d;
                    let (v, k, h) = (&inp.v[at..at + d], &inp.k[at..at + d], &inp.h[at..at + d]);
                    let (gy, vtr, dcr) = (&g[span.clone()], &vt[span.clone()], &dc[span.clone()]);
                    // Through RMSNorm_c and the residual: dṽ = dy + RMSNorm_c's input gradient.
                    let dvt = &mut dv[span.clone()]; // dṽ for now, dv below
                    rms_backward_row(vtr, rc, &inp.gc, dcr, dvt, dgc);
                    for (o, &g) in dvt.iter_mut().zip(gy) {
                        *o += g;
                    }
                    // ṽ = α·v: dα = ⟨dṽ, v⟩, dv = α·dṽ.
                    let dalpha = dot(dvt, v);
                    dvt.iter_mut().for_each(|x| *x *= alpha);
                    // α = σ(s'), s' = sign(s)·√max(|s|, ε): ds = dα·α(1−α) / (2√|s|) where |s| ≥ ε.
                    let abs_s = s.abs();
                    let ds = if abs_s >= crate::engram::GATE_SQRT_CLAMP { dalpha * alpha * (1.0 - alpha) * 0.5 / abs_s.sqrt() } else { 0.0 } * inv_sqrt_d;
                    // s = ⟨q̂, k̂⟩/√D with q̂ = h·rq⊙γq, k̂ = k·rk⊙γk; then each RMSNorm backward.
                    let (dqhat, dkhat) = qk.split_at_mut(d);
                    for j in 0..d {
                        dqhat[j] = ds * k[j] * rk * inp.gk[j];
                        dkhat[j] = ds * h[j] * rq * inp.gq[j];
                    }
                    rms_backward_row(h, rq, &inp.gq, dqhat, &mut dh[span.clone()], dgq);
                    rms_backward_row(k, rk, &inp.gk, dkhat, &mut dk[span], dgk);
                }
            }
        });
        // [B, 3, T, D] → three [B, T, D].
        let mut grads = [vec![0.0f32; b * t * d], vec![0.0f32; b * t * d], vec![0.0f32; b * t * d]];
        for (seq, w) in work.chunks_exact(unit.max(1)).enumerate() {
            for (part, g) in grads.iter_mut().enumerate() {
                g[seq * t * d..(seq + 1) * t * d].copy_from_slice(&w[part * t * d..(part + 1) * t * d]);
            }
        }
        let [dv, dk, dh] = grads;
        let shape = vec![b, t, d];
        [
            flex_f32(dv, shape.clone()),
            flex_f32(dk, shape.clone()),
            flex_f32(dh, shape),
            flex_f32(acc[..d].to_vec(), vec![d]),
            flex_f32(acc[d..2 * d].to_vec(), vec![d]),
            flex_f32(acc[2 * d..3 * d].to_vec(), vec![d]),
            flex_f32(transpose(&acc[3 * d..], taps, d), vec![d, taps]),
        ]
    }
}

/// RMSNorm backward of one row `x` (inverse RMS `inv`, gain `gamma`) for the output gradient
/// `dy`: `dx = inv·(dy⊙γ − x̂·mean(dy⊙γ⊙x̂))` into `dx`, `dγ += dy⊙x̂`.
#[inline(always)]
fn rms_backward_row(x: &[f32], inv: f32, gamma: &[f32], dy: &[f32], dx: &mut [f32], dgamma: &mut [f32]) {
    let mean = inv * dot3(dy, gamma, x) / x.len() as f32;
    for ((((dx, dg), &x), &g), &dy) in dx.iter_mut().zip(dgamma.iter_mut()).zip(x).zip(gamma).zip(dy) {
        let xhat = x * inv;
        *dg += dy * xhat;
        *dx = inv * (dy * g - xhat * mean);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// Largest difference ≤ `tol` × the larger of 1 and the reference's largest magnitude
    /// (an absolute floor: gradients that are zero up to rounding, such as RMSNorm's over a
    /// single feature, have no meaningful relative error).
    fn assert_close(what: &str, ours: &[f32], theirs: &[f32], tol: f32) {
        assert_eq!(ours.len(), theirs.len(), "{what}: lengths differ");
        let scale = theirs.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1.0);
        let worst = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= tol * scale, "{what}: max difference {worst} vs scale {scale}");
    }

    /// The fused op's value and input gradient (for a random upstream gradient `r`) against the
    /// composite one, computed with burn's own operations on the same device.
    fn compare<const D: usize, const E: usize>(what: &str, x: Tensor<D>, r: Tensor<E>, fused: impl Fn(Tensor<D>) -> Tensor<E>, composite: impl Fn(Tensor<D>) -> Tensor<E>, tol: f32) {
        let run = |f: &dyn Fn(Tensor<D>) -> Tensor<E>| {
            let xx = x.clone().require_grad();
            let y = f(xx.clone());
            let g = (y.clone() * r.clone()).sum().backward();
            (vals(y), vals(xx.grad(&g).expect("input gradient")))
        };
        let (ours, theirs) = (run(&fused), run(&composite));
        assert_close(&format!("{what} value"), &ours.0, &theirs.0, tol);
        assert_close(&format!("{what} gradient"), &ours.1, &theirs.1, tol);
    }

    fn composite_swiglu(a: Tensor<2>) -> Tensor<2> {
        let [n, f2] = a.dims();
        silu(a.clone().slice([0..n, 0..f2 / 2])) * a.slice([0..n, f2 / 2..f2])
    }

    #[test]
    fn swiglu_matches_burn_silu_times_up() {
        let device = Device::flex().autodiff();
        // Both a one-thread and a multi-thread size; large |x| exercise both sigmoid tails.
        for (n, f) in [(3, 5), (257, 131)] {
            let a = Tensor::<2>::random([n, 2 * f], Distribution::Normal(0.0, 4.0), &device);
            let r = Tensor::<2>::random([n, f], Distribution::Normal(0.0, 1.0), &device);
            compare(&format!("swiglu {n}x{f}"), a, r, swiglu, composite_swiglu, 2e-6);
        }
    }

    #[test]
    fn swiglu_tails_are_exact() {
        let device = Device::flex();
        let a = Tensor::<2>::from_data(TensorData::new(vec![-100.0f32, 0.0, 100.0, 2.0, 2.0, 2.0], [1, 6]), &device);
        let y = vals(swiglu(a));
        assert_eq!(y[0], 0.0);
        assert_eq!(y[1], 0.0);
        assert_eq!(y[2], 200.0);
    }

    fn composite_attention(rope: &Rope, heads: usize) -> impl Fn(Tensor<3>) -> Tensor<3> + '_ {
        move |qkv| {
            let [b, t, d3] = qkv.dims();
            let (d, dh) = (d3 / 3, d3 / 3 / heads);
            let part = |i: usize| qkv.clone().slice([0..b, 0..t, i * d..(i + 1) * d]).reshape([b, t, heads, dh]).swap_dims(1, 2);
            let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
            let y = attention(rope.apply(part(0)), rope.apply(part(1)), part(2), None, None, options);
            y.swap_dims(1, 2).reshape([b, t, d])
        }
    }

    #[test]
    fn attention_matches_burn_attention_with_rope() {
        let device = Device::flex().autodiff();
        // (batch, positions, heads, head width, RoPE table length): tables longer than the
        // sequence, one head, several heads over more units than threads.
        for (b, t, heads, dh, max_t) in [(1, 1, 1, 2, 4), (2, 7, 2, 4, 16), (3, 33, 3, 8, 33)] {
            let rope = Rope::new(max_t, dh, 10_000.0, &device);
            let qkv = Tensor::<3>::random([b, t, 3 * heads * dh], Distribution::Normal(0.0, 1.0), &device);
            let r = Tensor::<3>::random([b, t, heads * dh], Distribution::Normal(0.0, 1.0), &device);
            compare(&format!("attention {b}x{t} {heads}h{dh}"), qkv, r, |x| causal_attention(x, &rope, heads), composite_attention(&rope, heads), 1e-5);
        }
    }

    /// Changing the inputs at position `p` leaves every output before `p` bit-identical.
    #[test]
    fn attention_is_causal() {
        let device = Device::flex();
        let (b, t, heads, dh) = (2, 9, 2, 4);
        let rope = Rope::new(t, dh, 10_000.0, &device);
        let qkv = Tensor::<3>::random([b, t, 3 * heads * dh], Distribution::Normal(0.0, 1.0), &device);
        let base = vals(causal_attention(qkv.clone(), &rope, heads));
        let p = 5;
        let noise = Tensor::<3>::random([b, t - p, 3 * heads * dh], Distribution::Normal(0.0, 1.0), &device);
        let changed = qkv.clone().slice_assign([0..b, p..t, 0..3 * heads * dh], noise);
        let after = vals(causal_attention(changed, &rope, heads));
        let w = heads * dh;
        for bi in 0..b {
            let prefix = bi * t * w..(bi * t + p) * w;
            assert_eq!(base[prefix.clone()], after[prefix], "outputs before position {p} changed");
            assert_ne!(base[(bi * t + p) * w..(bi + 1) * t * w], after[(bi * t + p) * w..(bi + 1) * t * w]);
        }
    }

    #[test]
    fn the_kernels_run_on_flex_only() {
        assert!(enabled(&Device::flex()));
        assert!(enabled(&Device::flex().autodiff()));
    }

    /// [`compare`] for two inputs: the value and both inputs' gradients.
    fn compare_two<const A: usize, const B: usize, const E: usize>(what: &str, a: Tensor<A>, b: Tensor<B>, r: Tensor<E>, fused: impl Fn(Tensor<A>, Tensor<B>) -> Tensor<E>, composite: impl Fn(Tensor<A>, Tensor<B>) -> Tensor<E>) {
        let run = |f: &dyn Fn(Tensor<A>, Tensor<B>) -> Tensor<E>| {
            let (a, b) = (a.clone().require_grad(), b.clone().require_grad());
            let y = f(a.clone(), b.clone());
            let g = (y.clone() * r.clone()).sum().backward();
            [vals(y), vals(a.grad(&g).expect("first input's gradient")), vals(b.grad(&g).expect("second input's gradient"))]
        };
        let (ours, theirs) = (run(&fused), run(&composite));
        for (i, part) in ["value", "first input's gradient", "second input's gradient"].iter().enumerate() {
            assert_close(&format!("{what}: {part}"), &ours[i], &theirs[i], 1e-5);
        }
    }

    /// Against burn's matmul on strided operands (a transposed view, a column slice), below and
    /// above the size that uses every core.
    #[test]
    fn matmul_matches_burn_matmul_with_gradients() {
        let device = Device::flex().autodiff();
        for (m, k, n) in [(1, 1, 1), (5, 3, 7), (300, 200, 260)] {
            let a = Tensor::<2>::random([k, m], Distribution::Normal(0.0, 1.0), &device);
            let w = Tensor::<2>::random([k, 2 * n], Distribution::Normal(0.0, 1.0), &device);
            let r = Tensor::<2>::random([m, n], Distribution::Normal(0.0, 1.0), &device);
            let views = move |a: Tensor<2>, w: Tensor<2>| (a.transpose(), w.slice([0..k, n..2 * n]));
            let ours = move |a, w| {
                let (l, r) = views(a, w);
                matmul(l, r)
            };
            let theirs = move |a, w| {
                let (l, r) = views(a, w);
                l.matmul(r)
            };
            compare_two(&format!("matmul {m}x{k}x{n}"), a, w, r, ours, theirs);
        }
    }

    /// Against burn's `RmsNorm` module, input and gain gradients.
    #[test]
    fn rms_norm_matches_burn_rms_norm_with_gradients() {
        let device = Device::flex().autodiff();
        for (rows, d) in [(1, 2), (3, 5), (9, 37), (700, 96)] {
            let x = Tensor::<2>::random([rows, d], Distribution::Normal(0.5, 2.0), &device);
            let gamma = Tensor::<1>::random([d], Distribution::Normal(1.0, 0.5), &device);
            let r = Tensor::<2>::random([rows, d], Distribution::Normal(0.0, 1.0), &device);
            let theirs = |x, gamma| burn::nn::RmsNorm { gamma: burn::module::Param::from_tensor(gamma), epsilon: 1e-5 }.forward(x);
            compare_two(&format!("rms_norm {rows}x{d}"), x, gamma, r, |x, g| rms_norm(x, g, 1e-5), theirs);
        }
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
            let theirs = |x, w| silu(crate::engram::causal_depthwise_conv(x, w, r));
            compare_two(&format!("conv {b}x{t}x{c} k{k} r{r}"), x, w, rr, |x, w| causal_conv_silu(x, w, r), theirs);
        }
    }

    #[test]
    fn gemm_handles_strides_and_transposes() {
        // lhs 2×3 read transposed from a 3×2 buffer; rhs 3×2 with row stride 4.
        let a = [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]; // columns of [[1,2,3],[4,5,6]]
        let b = [1.0, 2.0, 0.0, 0.0, 3.0, 4.0, 0.0, 0.0, 5.0, 6.0, 0.0, 0.0];
        let mut c = [0.0f32; 4];
        gemm(2, 2, 3, &mut c, 2, Mat::transposed(&a, 0, 2), Mat::rows(&b, 0, 4), 2.0);
        assert_eq!(c, [44.0, 56.0, 98.0, 128.0]);
    }
}
