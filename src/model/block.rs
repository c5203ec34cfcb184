//! One pre-norm decoder block: `[Engram] → RMSNorm → attention → RMSNorm → SwiGLU or MoE`.

use burn::module::Module;
use burn::nn::{RmsNorm, RmsNormConfig};
use burn::tensor::{Device, Tensor};

use super::attention::{CausalSelfAttention, Rope};
use super::mlp::SwiGluMlp;
use super::moe::{Moe, MoeConfig};
use crate::engram::Engram;
use crate::ops::rms_norm_module;

/// RMSNorm epsilon of the backbone.
pub const NORM_EPS: f64 = 1e-5;

/// A decoder block, optionally with an Engram layer in front of its attention. Its
/// feed-forward is either the SwiGLU `mlp` or the mixture of experts `moe` (exactly one is
/// set).
#[derive(Module, Debug)]
pub struct Block {
    /// Engram layer (spec §0: added to the residual stream before the attention).
    pub engram: Option<Engram>,
    /// Norm before attention.
    pub norm_attn: RmsNorm,
    /// Causal self-attention.
    pub attn: CausalSelfAttention,
    /// Norm before the feed-forward.
    pub norm_mlp: RmsNorm,
    /// Dense feed-forward (`None` when the block uses `moe`).
    pub mlp: Option<SwiGluMlp>,
    /// Mixture-of-experts feed-forward (`None` when the block uses `mlp`).
    pub moe: Option<Moe>,
}

impl Block {
    /// A block with a SwiGLU MLP of width `d_ff`, without Engram.
    pub fn new(d_model: usize, n_heads: usize, d_ff: usize, std: f64, proj_std: f64, device: &Device) -> Self {
        let attn = CausalSelfAttention::new(d_model, n_heads, std, proj_std, device);
        let mlp = SwiGluMlp::new(d_model, d_ff, std, proj_std, device);
        Self::assemble(d_model, attn, Some(mlp), None, device)
    }

    /// A block with a mixture-of-experts feed-forward, without Engram.
    pub fn new_moe(d_model: usize, n_heads: usize, moe: &MoeConfig, std: f64, proj_std: f64, device: &Device) -> Self {
        let attn = CausalSelfAttention::new(d_model, n_heads, std, proj_std, device);
        let moe = moe.init(d_model, std, proj_std, device);
        Self::assemble(d_model, attn, None, Some(moe), device)
    }

    fn assemble(d_model: usize, attn: CausalSelfAttention, mlp: Option<SwiGluMlp>, moe: Option<Moe>, device: &Device) -> Self {
        Self {
            engram: None,
            norm_attn: RmsNormConfig::new(d_model).with_epsilon(NORM_EPS).init(device),
            attn,
            norm_mlp: RmsNormConfig::new(d_model).with_epsilon(NORM_EPS).init(device),
            mlp,
            moe,
        }
    }

    /// # Shapes
    /// - `x`: `[B, T, D]`; `memory`: `[B, T, d_mem]` when this block has Engram → `[B, T, D]`
    pub fn forward(&self, x: Tensor<3>, memory: Option<Tensor<3>>, rope: &Rope) -> Tensor<3> {
        self.forward_with_aux(x, memory, rope).0
    }

    /// The block's output and, for an MoE block, its load-balancing loss.
    ///
    /// # Shapes
    /// - `x`: `[B, T, D]`; `memory`: `[B, T, d_mem]` when this block has Engram
    /// - output: `[B, T, D]`, aux `[1]`
    pub fn forward_with_aux(&self, x: Tensor<3>, memory: Option<Tensor<3>>, rope: &Rope) -> (Tensor<3>, Option<Tensor<1>>) {
        let x = match (&self.engram, memory) {
            (Some(engram), Some(mem)) => {
                let [b, t, d] = x.dims();
                let y = engram.forward(x.clone().reshape([b, t, 1, d]), mem); // [B, T, 1, D]
                x + y.reshape([b, t, d])
            }
            _ => x,
        };
        self.sublayers(x, rope)
    }

    /// The block after its Engram layer: attention, then the feed-forward, on `x` with the
    /// Engram output already added (what a caller that also needs that output runs, so the
    /// layer is not computed twice).
    ///
    /// # Shapes
    /// - `x`: `[B, T, D]` → `[B, T, D]`, aux `[1]`
    pub fn sublayers(&self, x: Tensor<3>, rope: &Rope) -> (Tensor<3>, Option<Tensor<1>>) {
        let x = x.clone() + self.attn.forward(rms_norm_module(&self.norm_attn, x), rope);
        self.feed_forward(x)
    }

    /// The feed-forward half: `x + FFN(RMSNorm(x))`, and the MoE's load-balancing loss.
    ///
    /// # Shapes
    /// - `x`: `[B, T, D]` → `[B, T, D]`, aux `[1]`
    pub(crate) fn feed_forward(&self, x: Tensor<3>) -> (Tensor<3>, Option<Tensor<1>>) {
        let h = rms_norm_module(&self.norm_mlp, x.clone());
        match (&self.moe, &self.mlp) {
            (Some(moe), _) => {
                let (y, aux) = moe.forward(h);
                (x + y, Some(aux))
            }
            (None, Some(mlp)) => (x + mlp.forward(h), None),
            (None, None) => unreachable!("a block is built with a feed-forward (Block::new or Block::new_moe)"),
        }
    }
}
