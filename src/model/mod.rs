//! The decoder-only Transformer that takes Engram at chosen blocks.
//!
//! One model, configured ([`ModelConfig`]): the baseline is `engram: None`; an Engram model
//! places an [`crate::engram::Engram`] layer before the attention of each block listed in
//! `engram.layer_ids` (spec §0: added to the residual stream before that block's attention);
//! `moe` swaps every block's SwiGLU MLP for a mixture of experts ([`moe`]).

pub mod attention;
pub mod block;
pub mod fused;
pub mod mlp;
pub mod moe;
pub mod transformer;
pub mod xent;

pub use attention::{CausalSelfAttention, Rope};
pub use block::Block;
pub use mlp::SwiGluMlp;
pub use moe::{Moe, MoeConfig};
pub use transformer::{cross_entropy, head_cross_entropy, ModelConfig, Transformer};

use burn::nn::{Linear, RmsNorm};
use burn::tensor::Tensor;

/// `norm.forward(x)`, through [`fused::rms_norm`] (one pass per row on flex).
pub fn rms_norm<const D: usize>(norm: &RmsNorm, x: Tensor<D>) -> Tensor<D> {
    fused::rms_norm(x, norm.gamma.val(), norm.epsilon)
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
/// let y = engram::model::linear_tokens(&linear, x.clone());
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
    let mut y = fused::matmul(x.reshape([b * t, d]), w); // [B·T, n]
    if let Some(bias) = &linear.bias {
        y = y + bias.val().slice([cols]).unsqueeze_dim(0);
    }
    y.reshape([b, t, n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn::tensor::{Device, Distribution};

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
