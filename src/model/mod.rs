//! The decoder-only Transformer that takes Engram at chosen blocks.
//!
//! One model, configured ([`ModelConfig`]): the baseline is `engram: None`; an Engram model
//! places an [`crate::engram::Engram`] layer before the attention of each block listed in
//! `engram.layer_ids` (spec §0: added to the residual stream before that block's attention).

pub mod attention;
pub mod block;
pub mod mlp;
pub mod transformer;

pub use attention::{CausalSelfAttention, Rope};
pub use block::Block;
pub use mlp::SwiGluMlp;
pub use transformer::{cross_entropy, ModelConfig, Transformer};
