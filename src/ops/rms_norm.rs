//! RMSNorm over the last dimension, `x / √(mean(x²) + eps) · γ`, as burn's `RmsNorm` computes
//! it; on flex one pass per row forward and one backward, rows split over the cores.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, Flex, TensorMetadata};
use burn::nn::RmsNorm;
use burn::tensor::Tensor;

use super::backend::{dims_of, enabled, flex_f32, host_f32, n_input_op, par_units, par_units_sum, MIN_ELEMS_PER_THREAD};
use super::simd::{dot, dot3};

/// RMSNorm as a burn backend extension. Use [`rms_norm()`], which picks it on flex and burn's
/// own operations elsewhere.
#[backend_extension(Flex, Autodiff)]
pub trait RmsNormOps: Backend {
    /// RMSNorm over the last dimension: `x / √(mean(x²) + eps) · gamma`.
    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f64) -> FloatTensor<Self>;
}

/// RMSNorm of the last dimension with gain `gamma` and epsilon `eps`, as burn's
/// [`burn::nn::RmsNorm`] computes it; one pass per row on flex.
///
/// # Shapes
/// - `x`: `[.., D]`, `gamma`: `[D]` → `[.., D]`
pub fn rms_norm<const N: usize>(x: Tensor<N>, gamma: Tensor<1>, eps: f64) -> Tensor<N> {
    if enabled(&x.device()) {
        return Tensor::from_dispatch(<Dispatch as RmsNormOps>::rms_norm(x.into_dispatch(), gamma.into_dispatch(), eps));
    }
    let rms = (x.clone().square().mean_dim(N - 1) + eps).sqrt();
    (x / rms) * gamma.unsqueeze()
}

/// `norm.forward(x)`, through [`rms_norm`] (one pass per row on flex).
pub fn rms_norm_module<const D: usize>(norm: &RmsNorm, x: Tensor<D>) -> Tensor<D> {
    rms_norm(x, norm.gamma.val(), norm.epsilon)
}

impl RmsNormOps for Flex {
    fn rms_norm(x: FlexTensor, gamma: FlexTensor, eps: f64) -> FlexTensor {
        rms_norm_flex(&x, &gamma, eps)
    }
}

impl<C: CheckpointStrategy> RmsNormOps for Autodiff<Flex, C> {
    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        n_input_op::<C, _, 2>([x, gamma], eps, |[x, g], &eps| rms_norm_flex(x, g, eps), |[x, g], grad, &eps| rms_norm_backward_flex(x, g, grad, eps).into())
    }
}

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
pub(super) fn rms_norm_row(x: &[f32], gamma: &[f32], eps: f64, y: &mut [f32]) -> f32 {
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

/// RMSNorm backward of one row `x` (inverse RMS `inv`, gain `gamma`) for the output gradient
/// `dy`: `dx = inv·(dy⊙γ − x̂·mean(dy⊙γ⊙x̂))` into `dx`, `dγ += dy⊙x̂`.
#[inline(always)]
pub(super) fn rms_backward_row(x: &[f32], inv: f32, gamma: &[f32], dy: &[f32], dx: &mut [f32], dgamma: &mut [f32]) {
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
    use crate::ops::testing::compare_two;
    use burn::tensor::{Device, Distribution};

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
}
