//! # engram
//!
//! DeepSeek's Engram — "Conditional Memory via Scalable Lookup: A New Axis of Sparsity for
//! Large Language Models" (Cheng et al., arXiv 2601.07372, 2026) — in Rust on burn 0.22.
//!
//! * [`hashing`]: the bit-exact n-gram hash (numpy-compatible multipliers, prime table sizes).
//! * [`tokenizer`]: the corpus BPE, DeepSeek-V3 / GPT-2 / byte tokenizers and tokenizer
//!   compression P: V → V'.
//! * [`table`]: host-resident Engram tables with a row-sparse (lazy) Adam.
//! * [`engram`]: the Engram layer, a burn `Module` you can put in your own model.
//! * [`model`]: a small decoder-only Transformer that takes Engram at chosen blocks.
//! * [`ops`]: the fused CPU kernels (and their backward passes) below both the layer and the
//!   model.
//! * [`data`]: the shipped corpus and the batcher that hashes once per batch;
//!   [`eval`]: held-out evaluation in bits per byte.
//! * [`config`]: what defines a run, and its presets; [`metrics`]: its `metrics.csv`.
//! * [`train`]: the one training loop; [`checkpoint`]: its resumable state;
//!   [`run_dir`]: the run directory's lock and atomic writes;
//!   [`cost`]: parameters, bytes and FLOPs;
//!   [`report`]: plots and tables.

/// Defines the function written inside twice: compiled for AVX2 + FMA, called when the CPU has
/// them, and as is otherwise. The closures the function body defines (the per-thread work
/// handed to a parallel loop) inherit the AVX2 copy's target features, so their element-wise
/// loops vectorise 8 lanes wide; a closure handed to a `#[target_feature]` function from
/// outside does not (it is compiled, and not inlined, without them).
macro_rules! simd_kernel {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? $body
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body
        }
    };
}

pub mod checkpoint;
pub mod config;
pub mod cost;
pub mod data;
pub mod device;
pub mod engram;
pub mod eval;
pub mod experiment;
pub mod generate;
pub mod hashing;
pub mod inspect;
pub mod interop;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod report;
pub mod run_dir;
pub mod runtime;
pub mod table;
#[cfg(test)]
mod test_util;
pub mod tokenizer;
pub mod train;
pub mod turns;

/// A configuration value that is not allowed. The message names the field, its value and
/// what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid config: {field} = {value}; allowed: {allowed}")]
pub struct ConfigError {
    /// Dotted field path, e.g. `engram.layer_ids`.
    pub field: String,
    /// The value found.
    pub value: String,
    /// What is allowed.
    pub allowed: String,
}

impl ConfigError {
    /// A new error for `field`.
    pub fn new(field: &str, value: impl std::fmt::Display, allowed: impl std::fmt::Display) -> Self {
        Self { field: field.to_string(), value: value.to_string(), allowed: allowed.to_string() }
    }
}
