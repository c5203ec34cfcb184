//! How the kernels of this module plug into burn's flex backend: whether they run on a device,
//! host access to a flex tensor's memory, the split of a kernel's rows over rayon's pool, and
//! the autodiff step of the kernels whose backward pass is one function of their inputs.

use std::borrow::Cow;

use rayon::prelude::*;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::Flex;
use burn::tensor::{DType, Device, TensorData};

thread_local! {
    /// Set inside [`with_generic_ops`].
    static GENERIC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the fused kernels run on `device` (flex, with or without autodiff, outside
/// [`with_generic_ops`]).
pub fn enabled(device: &Device) -> bool {
    !GENERIC.with(std::cell::Cell::get) && device.clone().without_autodiff() == Device::flex()
}

/// `f()` with the fused kernels off on this thread: every layer built on them composes burn's
/// own operations instead, on flex too. For checking the fused path against burn's: a model's
/// forward pass inside and outside gives the same values and (its backward pass then follows
/// what the forward recorded) the same gradients, up to float rounding.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// let x = Tensor::<2>::ones([2, 3], &Device::flex());
/// let g = Tensor::<1>::ones([3], &Device::flex());
/// let fused = engram::ops::rms_norm(x.clone(), g.clone(), 1e-6);
/// let composed = engram::ops::with_generic_ops(|| engram::ops::rms_norm(x, g, 1e-6));
/// assert!(fused.all_close(composed, None, Some(1e-6)));
/// ```
pub fn with_generic_ops<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GENERIC.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GENERIC.with(|g| g.replace(true)));
    f()
}

/// Fewest elements per thread for the element-wise kernels.
pub(super) const MIN_ELEMS_PER_THREAD: usize = 1 << 15;

// ---------------------------------------------------------------------------------------------
// Autodiff

/// Forward of an `N`-input fused op: `(inputs, parameter) → output`.
pub(super) type ForwardN<P, const N: usize> = fn(&[FlexTensor; N], &P) -> FlexTensor;
/// Backward of an `N`-input fused op: `(inputs, output gradient, parameter) → input gradients`.
pub(super) type BackwardN<P, const N: usize> = fn(&[FlexTensor; N], &FlexTensor, &P) -> [FlexTensor; N];

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
pub(super) fn n_input_op<C: CheckpointStrategy, P: std::fmt::Debug + Send + 'static, const N: usize>(inputs: [FloatTensor<Autodiff<Flex, C>>; N], param: P, forward: ForwardN<P, N>, backward: BackwardN<P, N>) -> FloatTensor<Autodiff<Flex, C>> {
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
pub(super) fn host_f32(t: &FlexTensor) -> Cow<'_, [f32]> {
    assert_eq!(t.dtype(), DType::F32, "the fused kernels take f32 tensors");
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(t.to_contiguous().into_data().try_into_vec::<f32>().expect("f32 data")),
    }
}

pub(super) fn dims_of(shape: &burn::tensor::Shape) -> Vec<usize> {
    (0..shape.num_dims()).map(|i| shape[i]).collect()
}

pub(super) fn flex_f32(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Split `out` into chunks of `unit · k` elements (`k` whole units each), one chunk per thread
/// (at most [`crate::runtime::threads_for`] of them), and run `f(first_unit, chunk)` on each,
/// on rayon's pool (the threads `gemm` uses; starting OS threads per call cost more than the
/// small kernels themselves).
pub(super) fn par_units<T: Send>(out: &mut [T], unit: usize, min_per_thread: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    par_units_sum(out, unit, min_per_thread, 0, |u0, chunk, _| f(u0, chunk));
}

/// [`par_units`] with an accumulator of `acc_len` zeros per chunk, `f(first_unit, chunk, acc)`;
/// returns the accumulators' element-wise sum (for gradients summed over rows).
pub(super) fn par_units_sum<T: Send>(out: &mut [T], unit: usize, min_per_thread: usize, acc_len: usize, f: impl Fn(usize, &mut [T], &mut [f32]) + Sync) -> Vec<f32> {
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

/// `[rows, cols]` → `[cols, rows]`, row-major.
pub(super) fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; a.len()];
    for (i, row) in a.chunks_exact(cols.max(1)).enumerate().take(rows) {
        for (j, &x) in row.iter().enumerate() {
            out[j * rows + i] = x;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_run_on_flex_only() {
        assert!(enabled(&Device::flex()));
        assert!(enabled(&Device::flex().autodiff()));
    }
}
