//! The matrix product on flex, and the Linear layer over a token sequence built on it.
//!
//! [`matmul()`] is burn's `Tensor::matmul` with `gemm` (the library burn-flex's own matrix
//! product calls) writing straight into its output: burn-flex zero-fills a buffer and then
//! copies it into an aligned one before every product. Its backward pass is the two products of
//! the gradient, nothing else. Operands are strided views (`Mat`), read in place; the
//! single-threaded `gemm` on them is also the matrix kernel of [`super::attention`] and of the
//! LM head in [`super::xent`]. [`linear_tokens`] computes a Linear of a `[B, T, D]` input as
//! one 2-D product over the `B·T` tokens.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, Flex, TensorMetadata};
use burn::nn::Linear;
use burn::tensor::{DType, Tensor};

use super::backend::{enabled, flex_f32, n_input_op};

/// The matrix product as a burn backend extension. Use [`matmul()`], which picks it on flex and
/// burn's own product elsewhere.
#[backend_extension(Flex, Autodiff)]
pub trait MatmulOps: Backend {
    /// `lhs · rhs` for 2-D `lhs` `[M, K]` and `rhs` `[K, N]` (either may be a strided view).
    fn matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self>;
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
        return Tensor::from_dispatch(<Dispatch as MatmulOps>::matmul(lhs.into_dispatch(), rhs.into_dispatch()));
    }
    lhs.matmul(rhs)
}

/// `linear.forward(x)` for a `[B, T, D]` input, computed as one 2-D product over the `B·T`
/// tokens.
///
/// Same value and gradients as [`Linear::forward`], which multiplies a 3-D input by the weight
/// broadcast over the batch: on the CPU backends that is `B` small products forward, and
/// backward `B` products of `[D, T]·[T, N]` (inner dimension only `T`) written out in full and
/// then summed for the weight's gradient. Here the weight gradient is one product with inner
/// dimension `B·T`. Every Linear of this crate's models that sees a token sequence goes through
/// it.
///
/// # Shapes
/// - `x`: `[B, T, D_in]` → `[B, T, D_out]`
///
/// ```
/// use burn::nn::LinearConfig;
/// use burn::tensor::{Device, Distribution, Tensor};
/// let device = Device::flex();
/// let linear = LinearConfig::new(8, 3).init(&device);
/// let x = Tensor::<3>::random([2, 5, 8], Distribution::Default, &device);
/// let y = engram::ops::linear_tokens(&linear, x.clone());
/// let diff = (y - linear.forward(x)).abs().max().into_scalar::<f32>();
/// assert!(diff < 1e-6);
/// ```
pub fn linear_tokens(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    let n = linear.weight.dims()[1];
    linear_tokens_columns(linear, x, 0..n)
}

/// Output columns `cols` of [`linear_tokens`]: `x·W[:, cols] (+ bias[cols])`.
///
/// For a Linear whose output is several tensors side by side (fused gate and up projections,
/// fused query, key and value): slicing the small weight instead of the `[B, T, D_out]`
/// output saves a copy of each part forward and, backward, a zero-filled output-sized gradient
/// per part that the slice's gradient is written into.
///
/// # Shapes
/// - `x`: `[B, T, D_in]` → `[B, T, cols.len()]`
pub fn linear_tokens_columns(linear: &Linear, x: Tensor<3>, cols: std::ops::Range<usize>) -> Tensor<3> {
    let [b, t, d] = x.dims();
    let n = cols.len();
    let w = linear.weight.val().slice([0..d, cols.clone()]); // [D_in, n]
    let mut y = matmul(x.reshape([b * t, d]), w); // [B·T, n]
    if let Some(bias) = &linear.bias {
        y = y + bias.val().slice([cols]).unsqueeze_dim(0);
    }
    y.reshape([b, t, n])
}

impl MatmulOps for Flex {
    fn matmul(lhs: FlexTensor, rhs: FlexTensor) -> FlexTensor {
        matmul_flex(&lhs, &rhs, false, false)
    }
}

impl<C: CheckpointStrategy> MatmulOps for Autodiff<Flex, C> {
    fn matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        // d(lhs) = G · rhsᵀ, d(rhs) = lhsᵀ · G.
        let backward = |[l, r]: &[FlexTensor; 2], g: &FlexTensor, _: &()| [matmul_flex(g, r, false, true), matmul_flex(l, g, true, false)];
        n_input_op::<C, _, 2>([lhs, rhs], (), |[l, r], _| matmul_flex(l, r, false, false), backward)
    }
}

// ---------------------------------------------------------------------------------------------
// Strided matrix views and gemm

/// A strided read-only matrix view for [`gemm`].
#[derive(Clone, Copy)]
pub(super) struct Mat<'a> {
    data: &'a [f32],
    /// Offset of element (0, 0).
    at: usize,
    /// Row stride.
    rs: usize,
    /// Column stride.
    cs: usize,
}

impl<'a> Mat<'a> {
    pub(super) fn rows(data: &'a [f32], at: usize, rs: usize) -> Self {
        Self { data, at, rs, cs: 1 }
    }

    /// The transpose of the row-major matrix at `at` with row stride `rs`.
    pub(super) fn transposed(data: &'a [f32], at: usize, rs: usize) -> Self {
        Self { data, at, rs: 1, cs: rs }
    }
}

/// `dst = scale · lhs · rhs` with `lhs` `m × k`, `rhs` `k × n`, `dst` row-major `m × n` with row
/// stride `dst_rs`; one thread (the callers split their work over the cores themselves).
#[allow(clippy::too_many_arguments)] // flat kernel arguments
pub(super) fn gemm(m: usize, n: usize, k: usize, dst: &mut [f32], dst_rs: usize, lhs: Mat, rhs: Mat, scale: f32) {
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
pub(super) unsafe fn gemm_raw(m: usize, n: usize, k: usize, dst: *mut f32, dst_len: usize, dst_rs: usize, lhs: Mat, rhs: Mat, scale: f32, par: gemm::Parallelism) {
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

/// Products of at least this many multiply-adds use every core (burn-flex's threshold).
pub(super) const PARALLEL_MACS: usize = 192 * 192 * 192;

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
pub(super) fn product_uninit(m: usize, n: usize, k: usize, lhs: Mat, rhs: Mat) -> Vec<f32> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::compare_two;
    use burn::nn::LinearConfig;
    use burn::tensor::{Device, Distribution};

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

    #[test]
    fn gemm_handles_strides_and_transposes() {
        // lhs 2×3 read transposed from a 3×2 buffer; rhs 3×2 with row stride 4.
        let a = [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]; // columns of [[1,2,3],[4,5,6]]
        let b = [1.0, 2.0, 0.0, 0.0, 3.0, 4.0, 0.0, 0.0, 5.0, 6.0, 0.0, 0.0];
        let mut c = [0.0f32; 4];
        gemm(2, 2, 3, &mut c, 2, Mat::transposed(&a, 0, 2), Mat::rows(&b, 0, 4), 2.0);
        assert_eq!(c, [44.0, 56.0, 98.0, 128.0]);
    }

    /// Value and every gradient (input, weight, bias) equal burn's `Linear::forward`.
    #[test]
    fn linear_tokens_equals_linear_forward() {
        let device = Device::flex().autodiff();
        for bias in [false, true] {
            let linear = LinearConfig::new(6, 5).with_bias(bias).init(&device);
            let x = Tensor::<3>::random([3, 4, 6], Distribution::Normal(0.0, 1.0), &device);
            let r = Tensor::<3>::random([3, 4, 5], Distribution::Normal(0.0, 1.0), &device);
            let grads = |ours: bool| {
                let x = x.clone().require_grad();
                let y = if ours { linear_tokens(&linear, x.clone()) } else { linear.forward(x.clone()) };
                let g = (y.clone() * r.clone()).sum().backward();
                let gx = x.grad(&g).unwrap().into_data().try_to_vec::<f32>().unwrap();
                let gw = linear.weight.grad(&g).unwrap().into_data().try_to_vec::<f32>().unwrap();
                let gb = linear.bias.as_ref().map(|b| b.grad(&g).unwrap().into_data().try_to_vec::<f32>().unwrap());
                (y.into_data().try_to_vec::<f32>().unwrap(), gx, gw, gb)
            };
            let (ours, theirs) = (grads(true), grads(false));
            let close = |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()));
            assert!(close(&ours.0, &theirs.0), "values differ (bias {bias})");
            assert!(close(&ours.1, &theirs.1), "input gradients differ (bias {bias})");
            assert!(close(&ours.2, &theirs.2), "weight gradients differ (bias {bias})");
            assert_eq!(ours.3.is_some(), bias);
            if let (Some(a), Some(b)) = (&ours.3, &theirs.3) {
                assert!(close(a, b), "bias gradients differ");
            }
        }
    }
}
