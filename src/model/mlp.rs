//! SwiGLU feed-forward: `W_2 (SiLU(W_1 x) ⊙ W_3 x)` (Shazeer 2020), with `W_1` and `W_3` fused
//! into one `D → 2F` projection.

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor};

use crate::ops::{self, linear_tokens, linear_tokens_columns};

/// SwiGLU MLP of width `d_ff`.
#[derive(Module, Debug)]
pub struct SwiGluMlp {
    /// `D → 2F`: gate and up projections side by side.
    pub gate_up: Linear,
    /// `F → D`.
    pub down: Linear,
}

impl SwiGluMlp {
    /// Weights N(0, `std`), down projection N(0, `proj_std`); no biases.
    pub fn new(d_model: usize, d_ff: usize, std: f64, proj_std: f64, device: &Device) -> Self {
        Self {
            gate_up: LinearConfig::new(d_model, 2 * d_ff)
                .with_bias(false)
                .with_initializer(Initializer::Normal { mean: 0.0, std })
                .init(device),
            down: LinearConfig::new(d_ff, d_model)
                .with_bias(false)
                .with_initializer(Initializer::Normal { mean: 0.0, std: proj_std })
                .init(device),
        }
    }

    /// # Shapes
    /// - `x`: `[B, T, D]` → `[B, T, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let f = self.gate_up.weight.dims()[1] / 2;
        if ops::enabled(&x.device()) {
            // One projection, then the fused gate (see `ops::swiglu`).
            let [b, t, _] = x.dims();
            let gate_up = linear_tokens(&self.gate_up, x).reshape([b * t, 2 * f]);
            return linear_tokens(&self.down, ops::swiglu(gate_up).reshape([b, t, f]));
        }
        let gate = linear_tokens_columns(&self.gate_up, x.clone(), 0..f); // [B, T, F]
        let up = linear_tokens_columns(&self.gate_up, x, f..2 * f); // [B, T, F]
        linear_tokens(&self.down, silu(gate) * up)
    }
}
