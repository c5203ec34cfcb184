//! The decoder-only Transformer that takes Engram at chosen blocks.
//!
//! One model, configured ([`ModelConfig`]): the baseline is `engram: None`; an Engram model
//! places an [`crate::engram::Engram`] layer before the attention of each block listed in
//! `engram.layer_ids` (spec §0: added to the residual stream before that block's attention);
//! `moe` swaps every block's SwiGLU MLP for a mixture of experts ([`moe`]); `mhc` carries the
//! residual stream as `M` parallel streams mixed by manifold-constrained hyper-connections
//! ([`mhc`]), with one Engram gate per stream.

pub mod attention;
pub mod bigram;
pub mod block;
pub mod decode;
pub mod mhc;
pub mod mlp;
pub mod moe;
pub mod transformer;

pub use attention::{CausalSelfAttention, Rope};
pub use bigram::BigramHashConfig;
pub use block::Block;
pub use decode::DecodeState;
pub use mhc::{AmaxGain, HcHead, Mhc, MhcCoeffs, MhcConfig, MhcExit, StreamExit};
pub use mlp::SwiGluMlp;
pub use moe::{Moe, MoeConfig};
pub use transformer::{cross_entropy, head_cross_entropy, ModelConfig, Transformer};
