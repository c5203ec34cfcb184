//! One pre-norm decoder block: `[Engram] → RMSNorm → attention → RMSNorm → SwiGLU or MoE`,
//! on one residual stream or, with mHC, on `M` streams (each sublayer then reads, writes and
//! mixes them through its own [`Mhc`]).

use burn::module::Module;
use burn::nn::{RmsNorm, RmsNormConfig};
use burn::tensor::{Device, Tensor};

use super::attention::{CausalSelfAttention, Rope};
use super::mhc::Mhc;
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
    /// mHC of the attention sublayer (`None` on a single residual stream).
    pub hc_attn: Option<Mhc>,
    /// mHC of the feed-forward sublayer (set with `hc_attn`).
    pub hc_ffn: Option<Mhc>,
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
            hc_attn: None,
            hc_ffn: None,
        }
    }

    /// The block on one residual stream (a block without mHC, or with one-stream mHC).
    ///
    /// # Shapes
    /// - `x`: `[B, T, D]`; `memory`: `[B, T, d_mem]` when this block has Engram → `[B, T, D]`
    pub fn forward(&self, x: Tensor<3>, memory: Option<Tensor<3>>, rope: &Rope) -> Tensor<3> {
        self.forward_with_aux(x, memory, rope).0
    }

    /// The block's output and, for an MoE block, its load-balancing loss, on one residual
    /// stream (as [`Block::forward`]).
    ///
    /// # Shapes
    /// - `x`: `[B, T, D]`; `memory`: `[B, T, d_mem]` when this block has Engram
    /// - output: `[B, T, D]`, aux `[1]`
    pub fn forward_with_aux(&self, x: Tensor<3>, memory: Option<Tensor<3>>, rope: &Rope) -> (Tensor<3>, Option<Tensor<1>>) {
        let [b, t, d] = x.dims();
        let (y, aux) = self.forward_streams(x.reshape([b, t, 1, d]), memory, rope);
        (y.reshape([b, t, d]), aux)
    }

    /// The block on `M` residual streams: Engram reads every stream and adds its output into
    /// each (before the first mHC coefficients, as in the reference demo and DeepSeek-V4.1),
    /// then the attention and the feed-forward sublayers. Without mHC, `M` = 1 and each
    /// sublayer is the plain residual `x + F(RMSNorm(x))`.
    ///
    /// # Shapes
    /// - `x`: `[B, T, M, D]`; `memory`: `[B, T, d_mem]` when this block has Engram
    /// - output: `[B, T, M, D]`, aux `[1]`
    pub fn forward_streams(&self, x: Tensor<4>, memory: Option<Tensor<3>>, rope: &Rope) -> (Tensor<4>, Option<Tensor<1>>) {
        self.forward_recording(x, memory, rope, None)
    }

    /// [`Block::forward_streams`], pushing each mHC sublayer's `comb` onto `combs` when given.
    pub(crate) fn forward_recording(&self, x: Tensor<4>, memory: Option<Tensor<3>>, rope: &Rope, combs: Option<&mut Vec<Tensor<4>>>) -> (Tensor<4>, Option<Tensor<1>>) {
        self.sublayers_recording(self.add_engram(x, memory), rope, combs)
    }

    /// [`Block::forward_streams`], giving instead of the load-balancing loss the tokens routed
    /// to each expert of an MoE block (`None` for a dense feed-forward).
    ///
    /// # Shapes
    /// - `x`: `[B, T, M, D]`; `memory`: `[B, T, d_mem]` when this block has Engram
    /// - output: `[B, T, M, D]`, `E` counts summing to `B·T·k`
    pub fn forward_counting_experts(&self, x: Tensor<4>, memory: Option<Tensor<3>>, rope: &Rope) -> (Tensor<4>, Option<Vec<usize>>) {
        self.sublayers_with(self.add_engram(x, memory), rope, None, |h| match &self.moe {
            Some(moe) => {
                let (y, _, counts) = moe.forward_counted(h);
                (y, Some(counts))
            }
            None => (self.ffn(h).0, None),
        })
    }

    /// `x` plus the Engram layer's output, when this block has Engram and is given a memory.
    fn add_engram(&self, x: Tensor<4>, memory: Option<Tensor<3>>) -> Tensor<4> {
        match (&self.engram, memory) {
            (Some(engram), Some(mem)) => x.clone() + engram.forward(x, mem),
            _ => x,
        }
    }

    /// The block after its Engram layer: attention, then the feed-forward, on streams `x` with
    /// the Engram output already added (what a caller that also needs that output runs, so the
    /// layer is not computed twice).
    ///
    /// # Shapes
    /// - `x`: `[B, T, M, D]` → `[B, T, M, D]`, aux `[1]`
    pub fn sublayers(&self, x: Tensor<4>, rope: &Rope) -> (Tensor<4>, Option<Tensor<1>>) {
        self.sublayers_recording(x, rope, None)
    }

    fn sublayers_recording(&self, x: Tensor<4>, rope: &Rope, combs: Option<&mut Vec<Tensor<4>>>) -> (Tensor<4>, Option<Tensor<1>>) {
        self.sublayers_with(x, rope, combs, |h| self.ffn(h))
    }

    /// The attention sublayer, then the feed-forward sublayer computed by `ffn` (given the
    /// normalised `h`, it returns `FFN(h)` and what the caller wants from it), each with its
    /// residual (and mHC mixing; each `comb` pushed onto `combs` when given).
    fn sublayers_with<A>(&self, x: Tensor<4>, rope: &Rope, mut combs: Option<&mut Vec<Tensor<4>>>, ffn: impl FnOnce(Tensor<3>) -> (Tensor<3>, A)) -> (Tensor<4>, A) {
        let (x, ()) = self.residual(self.hc_attn.as_ref(), x, combs.as_deref_mut(), |u| (self.attn.forward(rms_norm_module(&self.norm_attn, u), rope), ()));
        self.residual(self.hc_ffn.as_ref(), x, combs, |u| ffn(rms_norm_module(&self.norm_mlp, u)))
    }

    /// One residual sublayer around `f` (which applies the block's norm and the sublayer):
    /// with mHC, read `u = Σ pre·X`, `y = f(u)`, write and mix `X' = post ⊗ y + combᵀ X`
    /// (and push `comb` onto `combs` when given); without, `x + f(x)` on the single stream.
    ///
    /// # Shapes
    /// - `x`: `[B, T, M, D]`; `f`: `[B, T, D]` → `[B, T, D]`; output `[B, T, M, D]`
    pub(crate) fn residual<A>(&self, hc: Option<&Mhc>, x: Tensor<4>, combs: Option<&mut Vec<Tensor<4>>>, f: impl FnOnce(Tensor<3>) -> (Tensor<3>, A)) -> (Tensor<4>, A) {
        match hc {
            Some(hc) => {
                let (u, coeffs) = hc.pre_mix(x.clone());
                if let Some(combs) = combs {
                    combs.push(coeffs.comb.clone());
                }
                let (y, a) = f(u);
                (hc.post_merge(x, y, coeffs), a)
            }
            None => {
                let [b, t, m, d] = x.dims();
                assert_eq!(m, 1, "a block without mHC has one residual stream, got {m}");
                let x = x.reshape([b, t, d]);
                let (y, a) = f(x.clone());
                ((x + y).reshape([b, t, 1, d]), a)
            }
        }
    }

    /// The feed-forward `FFN(h)` of an already normalised `h` (no residual), and the MoE's
    /// load-balancing loss.
    ///
    /// # Shapes
    /// - `h`: `[B, T, D]` → `[B, T, D]`, aux `[1]`
    pub(crate) fn ffn(&self, h: Tensor<3>) -> (Tensor<3>, Option<Tensor<1>>) {
        match (&self.moe, &self.mlp) {
            (Some(moe), _) => {
                let (y, aux) = moe.forward(h);
                (y, Some(aux))
            }
            (None, Some(mlp)) => (mlp.forward(h), None),
            (None, None) => unreachable!("a block is built with a feed-forward (Block::new or Block::new_moe)"),
        }
    }
}
