//! The gate of a SwiGLU feed-forward, `SiLU(g) ⊙ u` (Shazeer 2020), on the output of one fused
//! gate-and-up projection; on flex one pass forward and one backward, rows split over the
//! cores, with a sigmoid that is exact in both tails and vectorises.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, Flex, TensorMetadata};
use burn::tensor::activation::silu;
use burn::tensor::Tensor;

use super::backend::{enabled, flex_f32, host_f32, par_units, MIN_ELEMS_PER_THREAD};
use super::simd::sigmoid;

/// The SwiGLU gate as a burn backend extension. Use [`swiglu()`], which picks it on flex and
/// burn's own operations elsewhere.
#[backend_extension(Flex, Autodiff)]
pub trait SwiGluOps: Backend {
    /// `SiLU(a[:, :F]) ⊙ a[:, F:]` for `a` of shape `[N, 2F]` → `[N, F]`.
    fn swiglu(gate_up: FloatTensor<Self>) -> FloatTensor<Self>;
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
/// let y = engram::ops::swiglu(a.clone());
/// let expected = silu(a.clone().slice([0..4, 0..3])) * a.slice([0..4, 3..6]);
/// assert!((y - expected).abs().max().into_scalar::<f32>() < 1e-6);
/// ```
pub fn swiglu(gate_up: Tensor<2>) -> Tensor<2> {
    if enabled(&gate_up.device()) {
        return Tensor::from_dispatch(<Dispatch as SwiGluOps>::swiglu(gate_up.into_dispatch()));
    }
    let [n, f2] = gate_up.dims();
    let f = f2 / 2;
    silu(gate_up.clone().slice([0..n, 0..f])) * gate_up.slice([0..n, f..f2])
}

impl SwiGluOps for Flex {
    fn swiglu(gate_up: FlexTensor) -> FlexTensor {
        swiglu_flex(&gate_up)
    }
}

impl<C: CheckpointStrategy> SwiGluOps for Autodiff<Flex, C> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{compare, vals};
    use burn::tensor::{Device, Distribution, TensorData};

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
}
