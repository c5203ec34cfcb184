//! One pre-norm decoder block: `[Engram] → RMSNorm → attention → RMSNorm → SwiGLU`.

use burn::module::Module;
use burn::nn::{RmsNorm, RmsNormConfig};
use burn::tensor::{Device, Tensor};

use super::attention::{CausalSelfAttention, Rope};
use super::mlp::SwiGluMlp;
use crate::engram::Engram;

/// RMSNorm epsilon of the backbone.
pub const NORM_EPS: f64 = 1e-5;

/// A decoder block, optionally with an Engram layer in front of its attention.
#[derive(Module, Debug)]
pub struct Block {
    /// Engram layer (spec §0: added to the residual stream before the attention).
    pub engram: Option<Engram>,
    /// Norm before attention.
    pub norm_attn: RmsNorm,
    /// Causal self-attention.
    pub attn: CausalSelfAttention,
    /// Norm before the MLP.
    pub norm_mlp: RmsNorm,
    /// Feed-forward.
    pub mlp: SwiGluMlp,
}

impl Block {
    /// A block without Engram.
    pub fn new(d_model: usize, n_heads: usize, d_ff: usize, std: f64, proj_std: f64, device: &Device) -> Self {
        Self {
            engram: None,
            norm_attn: RmsNormConfig::new(d_model).with_epsilon(NORM_EPS).init(device),
            attn: CausalSelfAttention::new(d_model, n_heads, std, proj_std, device),
            norm_mlp: RmsNormConfig::new(d_model).with_epsilon(NORM_EPS).init(device),
            mlp: SwiGluMlp::new(d_model, d_ff, std, proj_std, device),
        }
    }

    /// # Shapes
    /// - `x`: `[B, T, D]`; `memory`: `[B, T, d_mem]` when this block has Engram → `[B, T, D]`
    pub fn forward(&self, x: Tensor<3>, memory: Option<Tensor<3>>, rope: &Rope) -> Tensor<3> {
        let x = match (&self.engram, memory) {
            (Some(engram), Some(mem)) => {
                let [b, t, d] = x.dims();
                let y = engram.forward(x.clone().reshape([b, t, 1, d]), mem); // [B, T, 1, D]
                x + y.reshape([b, t, d])
            }
            _ => x,
        };
        let x = x.clone() + self.attn.forward(self.norm_attn.forward(x), rope);
        x.clone() + self.mlp.forward(self.norm_mlp.forward(x))
    }
}
