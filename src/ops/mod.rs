//! Kernels below both the Engram layer and the model: fused CPU kernels with hand-written
//! backward passes for the flex backend, and the host-memory softmax cross-entropy of the LM
//! head.
//!
//! burn composes RMSNorm, the SwiGLU gate, attention with RoPE and Engram's gate from
//! element-wise tensor operations, each a separate pass over memory, mostly on one core, with
//! the scalar `expf` of libm; in autodiff every one of them also records a backward step. On
//! the reference configuration of `exp_throughput` the gate (forward and backward) took 21 ms
//! per block and burn's attention 19 ms per block, a quarter of the training step. Here each is
//! one pass forward and one backward, split over rayon's pool: element-wise work with a
//! vectorised exponential, the attention per (sequence, head) with `gemm`'s matrix kernels (the
//! library burn-flex's own matrix product calls) on the rotated queries and keys, its softmax
//! kept for the backward pass. burn-flex's matrix product zero-fills every output and then
//! copies it into an aligned buffer; [`matmul()`] lets `gemm` write the output directly.
//!
//! One file per kernel. Each registers its kernel as a burn backend extension (a trait
//! implemented for `Flex` and `Autodiff<Flex>`) and has a public function that uses it on a
//! flex device and falls back to the equivalent burn tensor operations on every other device;
//! its tests check values and gradients against burn's operations.
//!
//! * [`matmul`](mod@matmul): the matrix product (`gemm` on strided views) and
//!   [`linear_tokens`], through which every Linear over a token sequence goes;
//! * [`rms_norm`](mod@rms_norm): RMSNorm;
//! * [`swiglu`](mod@swiglu): the SwiGLU gate `SiLU(g) ⊙ u`;
//! * [`attention`]: causal self-attention with RoPE;
//! * [`conv`]: Engram's causal depthwise convolution, and it followed by SiLU;
//! * [`engram_gate`]: Engram's whole gate and short convolution after its two projections
//!   (two RMSNorms, the score, its signed square root and sigmoid, the gating, a third RMSNorm,
//!   the convolution, SiLU and the residual add — about twenty burn operations and their
//!   backward steps, 2.9 → 1.9 ms forward + backward for the default experiment's layer), on
//!   one residual stream or several;
//! * [`mhc`](mod@mhc): multi-branch hyper-connections — a sublayer's coefficients with their
//!   Sinkhorn normalisation, and the merge of a sublayer's output back into the streams;
//! * [`xent`]: row-wise softmax cross-entropy on host memory, and the LM head's softmax
//!   cross-entropy on flex.
//!
//! Shared by the kernels: `backend.rs` (whether they run on a device, host access to a flex
//! tensor's memory, the split of rows over the cores, the autodiff step of an `N`-input kernel)
//! and `simd.rs` (the exponential, the sigmoid and the sums whose loops vectorise).
//!
//! Nothing here imports the layer, the model or the training loop: what a kernel needs from
//! them (the RoPE tables, the gate's clamp) comes in as an argument.

pub mod attention;
mod backend;
pub mod conv;
pub mod engram_gate;
pub mod matmul;
pub mod mhc;
pub mod rms_norm;
mod simd;
pub mod swiglu;
#[cfg(test)]
mod testing;
pub mod xent;

pub use attention::{causal_attention, rope_rotate, rope_tables};
pub use backend::{enabled, with_generic_ops};
pub use conv::{causal_conv_silu, causal_depthwise_conv};
pub use engram_gate::{engram_gate_conv, GateConvParams};
pub use matmul::{linear_tokens, linear_tokens_columns, matmul};
pub use mhc::{mhc_coeffs, mhc_merge, MhcParams};
pub use rms_norm::{rms_norm, rms_norm_module};
pub use simd::exp_nonpositive;
pub use swiglu::swiglu;
