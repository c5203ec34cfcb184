//! The Engram layer: hashed n-gram memory, context-aware gating and a short causal conv.
//!
//! Paper: "Conditional Memory via Scalable Lookup: A New Axis of Sparsity for Large Language
//! Models" (Cheng et al., DeepSeek-AI & PKU, arXiv 2601.07372, 2026), §2.
//! Reference: `engram_demo_v1.py` in deepseek-ai/Engram (`Engram`, `ShortConv`).
//!
//! Per token: `e_t` = concatenation of the `(N−1)·K` gathered table rows (`d_mem` wide);
//! `v = W_V e_t`; per branch `m`: `k = W_K^(m) e_t`,
//! `s = ⟨RMSNorm_q(h^(m)), RMSNorm_k(k)⟩ / √D`, `s ← sign(s)·sqrt(max(|s|, 1e−6))`,
//! `α = σ(s)`, `ṽ = α·v`; `Y = ṽ + SiLU(DepthwiseCausalConv(RMSNorm(ṽ)))` (kernel 4,
//! dilation N, zero-initialised); the caller adds `Y` to the residual stream before the
//! block's attention.
//!
//! [`HashedEngram`] is the layer a model takes: one object, built from its
//! [`HashedEngramConfig`], that owns the hash, the host table, the parameters below ([`Engram`])
//! and the table's optimiser (`engram/hashed.rs`); the parameters and forward pass are in `engram/layer.rs`. The pieces stay public for a model that
//! wires them itself, as the crate's [`crate::model::Transformer`] and training loop do.
//!
//! # Deviations from the reference, all deliberate
//! * The n-gram hash is not computed here: row ids depend only on the input ids, so the data
//!   loader computes them once per batch ([`crate::data::batcher`]) and the layer receives the
//!   gathered rows ([`EngramMemory`]). The demo recomputes the hash with numpy inside
//!   `forward`, once per layer.
//! * The table is not a burn parameter: it lives in host memory
//!   ([`crate::table::EngramTable`]) and only the rows a batch touches enter autodiff.
//! * The depthwise causal conv is written as a sum of `kernel` shifted, per-channel-scaled
//!   copies of the input. This is exactly `Conv1d(C, C, k, groups=C, dilation=r,
//!   padding=(k−1)·r, bias=False)` truncated to the first `T` outputs (a test checks it against
//!   burn's `Conv1d`), and avoids a generic convolution kernel on the CPU.
//! * Ablation switches (`gate`, `short_conv`) that the reference does not have.

mod hashed;
mod layer;

/// The whole layer in three calls: [`HashedEngramConfig::init`], then per batch
/// [`HashedEngram::lookup`], [`HashedEngram::forward`] and [`HashedEngram::step`].
pub use hashed::{EngramError, EngramHost, HashedEngram, HashedEngramConfig, HostLookup, Lookup, TableOptim};
pub use layer::*;
