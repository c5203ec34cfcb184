//! Manifold-constrained hyper-connections (mHC): the residual stream carried as `M` parallel
//! copies `[B, T, M, D]`, read, written and mixed per token by learned coefficients.
//!
//! Papers: Zhu et al., "Hyper-Connections", ICLR 2025 (arXiv 2409.19606) for the multi-stream
//! residual; Xie et al. (DeepSeek-AI), "mHC: Manifold-Constrained Hyper-Connections",
//! arXiv 2512.24880, §4.2 Eqs. 7–9 for the parameterisation. Reference numerics: the code
//! DeepSeek ships (`deepseek-ai/TileKernels` `tile_kernels/torch/mhc.py`, DeepSeek-V4
//! `inference/model.py` `Block.hc_pre` / `hc_post` / `hc_head`). "Spec §" numbers below refer
//! to the crate's mHC implementation notes, a digest of these sources.
//!
//! # One sublayer (spec §1)
//! With the streams `X` `[B, T, M, D]` flattened per token to `xf` (`M·D`, stream-major):
//! ```text
//! r    = 1 / √(mean(xf²) + ε_norm)                       weightless RMS over all M·D
//! mix  = (xf · φ) · r                                     [M² + 2M]   (norm after the matmul)
//! pre  = σ(α_pre  · mix[0..M]   + b[0..M])  + ε_pre       [M]   read weights
//! post = 2 · σ(α_post · mix[M..2M] + b[M..2M])            [M]   write weights, (0, 2)
//! R    = α_res · mix[2M..] + b[2M..]   as [M, M], R[j, k] = entry 2M + j·M + k
//! comb = sinkhorn(R)                                      [M, M] doubly stochastic
//! u    = Σ_j pre[j] · X[j]                                the sublayer input [D]
//! y    = F(RMSNorm(u))                                    the block's own pre-norm and F
//! X'[k] = post[k] · y + Σ_j comb[j, k] · X[j]             i.e. X' = post ⊗ y + combᵀ X
//! ```
//! `α = (α_pre, α_post, α_res)` are the scalar gating factors, `φ` the dynamic part (the
//! paper's `φ_l`, DeepSeek's `fn` transposed), `b` the static part (DeepSeek's `base`).
//!
//! # Orientation
//! `comb[j, k]` is the weight of source stream `j` in destination stream `k`: columns
//! (sums over `j`) are what the forward pass preserves. So `comb = (H^res)ᵀ` of the paper
//! (`x_{l+1} = H^res x_l`), and the Sinkhorn below — rows then columns of `comb`, ending on
//! columns — is exactly the paper's `T_r(T_c(·))` on `H^res`. Applying `comb` untransposed
//! silently swaps the forward and backward gains (spec §3.3); a test guards it.
//!
//! # Deviations
//! * DeepSeek's training-time initialisation of `φ` and `b` is not published; see [`Mhc`]
//!   for the one used here (exactly a pre-norm residual net at step 0, streams not
//!   symmetric).
//! * On flex the coefficients (Sinkhorn included) and the merge are fused kernels ([`crate::ops::mhc`](mod@crate::ops::mhc)) whose backward pass recomputes
//!   Sinkhorn's iterations per token, as DeepSeek's custom backward does (spec §3.3); on
//!   every other device, and for more than 16 streams, Sinkhorn is the unrolled loop below
//!   under autodiff (the same gradient). Everything is f32 (DeepSeek keeps the coefficients
//!   in f32 too, spec §7.3).
//! * V4.1's delayed `pre` (spec §3.8) is not implemented: each sublayer collapses with its
//!   own `pre`, as in V4 and the paper.

use burn::module::{Module, Param};
use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::ops;
use crate::ConfigError;

/// Streams `M` (DeepSeek's `hc_mult`; 4 in the paper, V4 and V4.1).
pub const DEFAULT_STREAMS: usize = 4;
/// Sinkhorn iterations `t_max` (paper Eq. 9 and all shipped code: 20).
pub const DEFAULT_SINKHORN_ITERS: usize = 20;
/// `ε_hc` of the shipped code (V4 `hc_eps`, TileKernels `pre_eps` / `sinkhorn_eps`): added to
/// `pre` and to the softmax, and inside every Sinkhorn row/column sum (spec §3.4).
pub const HC_EPS: f64 = 1e-6;
/// `ε_norm` of the weightless RMS over the flattened `M·D` streams: V4-Pro's `rms_norm_eps`
/// (the paper and V4.1 use 1e-20; either is fine in f32, spec §3.4).
pub const DEFAULT_NORM_EPS: f64 = 1e-6;
/// Multiplier of `post = 2·σ(·)` (paper Eq. 8; vLLM `hc_post_alpha = 2.0`): `post = 1` at a
/// zero logit.
pub const POST_MULT: f64 = 2.0;
/// Initial gating factors `α` (paper Table 5, "mHC/HC Gating Factor Init α": 0.01).
pub const DEFAULT_ALPHA_INIT: f64 = 0.01;
/// Standard deviation of the random part of `φ` at init (Hugging Face's DeepSeek-V4
/// `_init_weights`, `initializer_range = 0.02`; spec §3.5).
pub const DEFAULT_PHI_INIT_STD: f64 = 0.02;

/// How the `M` streams are collapsed to one hidden state before the final RMSNorm and the
/// LM head (spec §3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MhcExit {
    /// DeepSeek-V4's learned `hc_head`: a pre-only mHC collapse ([`HcHead`]).
    #[default]
    Head,
    /// Hyper-Connections' unweighted sum of the streams ([`sum_streams`]).
    Sum,
}

/// Everything that defines mHC in a model: streams, Sinkhorn, epsilons, exit and init.
///
/// Every field has a default (spec §3.5, "Recommended here"); a config file may set any
/// subset, and unknown keys are rejected.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MhcConfig {
    /// Parallel residual streams `M` (1 reduces every sublayer to a gated plain residual).
    pub streams: usize,
    /// Sinkhorn iterations `t_max` (≥ 1; the first is the fused softmax + column pass).
    pub sinkhorn_iters: usize,
    /// `ε_norm` of the RMS over the flattened `M·D` streams.
    pub norm_eps: f64,
    /// `ε` added to `pre = σ(·) + ε` (and to the head's weights).
    pub pre_eps: f64,
    /// `ε` of the Sinkhorn normalisation (after the softmax and in every sum).
    pub sinkhorn_eps: f64,
    /// Exit collapse before the final norm.
    pub exit: MhcExit,
    /// Initial value of every gating factor `α` (sublayers and head).
    pub alpha_init: f64,
    /// Standard deviation of the random columns of `φ` at init (0 gives the fully
    /// stream-symmetric init of spec §3.7, whose streams never separate: for tests).
    pub phi_init_std: f64,
    /// Initial static residual logits `b_res = τ·I` (spec §3.7 ablation: 0 "mix-first",
    /// 4 "identity-first").
    pub res_bias_diag: f64,
}

impl Default for MhcConfig {
    fn default() -> Self {
        Self {
            streams: DEFAULT_STREAMS,
            sinkhorn_iters: DEFAULT_SINKHORN_ITERS,
            norm_eps: DEFAULT_NORM_EPS,
            pre_eps: HC_EPS,
            sinkhorn_eps: HC_EPS,
            exit: MhcExit::Head,
            alpha_init: DEFAULT_ALPHA_INIT,
            phi_init_std: DEFAULT_PHI_INIT_STD,
            res_bias_diag: 0.0,
        }
    }
}

impl MhcConfig {
    /// The defaults with `streams` streams.
    pub fn with_streams(mut self, streams: usize) -> Self {
        self.streams = streams;
        self
    }

    /// The same config with another exit.
    pub fn with_exit(mut self, exit: MhcExit) -> Self {
        self.exit = exit;
        self
    }

    /// Check every field; the error names the field (`model.mhc.…`), its value and what is
    /// allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let finite = |name: &str, v: f64, ok: bool, allowed: &str| if v.is_finite() && ok { Ok(()) } else { Err(ConfigError::new(name, v, allowed)) };
        if self.streams < 1 {
            return Err(ConfigError::new("model.mhc.streams", self.streams, ">= 1"));
        }
        if self.sinkhorn_iters < 1 {
            return Err(ConfigError::new("model.mhc.sinkhorn_iters", self.sinkhorn_iters, ">= 1"));
        }
        finite("model.mhc.norm_eps", self.norm_eps, self.norm_eps > 0.0, "a finite number > 0")?;
        finite("model.mhc.pre_eps", self.pre_eps, self.pre_eps >= 0.0, "a finite number >= 0")?;
        // ε > 0 keeps every Sinkhorn sum away from 0 even where a softmax column underflows.
        finite("model.mhc.sinkhorn_eps", self.sinkhorn_eps, self.sinkhorn_eps > 0.0, "a finite number > 0")?;
        finite("model.mhc.alpha_init", self.alpha_init, true, "a finite number")?;
        finite("model.mhc.phi_init_std", self.phi_init_std, self.phi_init_std >= 0.0, "a finite number >= 0")?;
        finite("model.mhc.res_bias_diag", self.res_bias_diag, true, "a finite number")?;
        Ok(())
    }

    /// Width of one sublayer's coefficient vector: `M² + 2M` (pre, post, residual logits).
    pub fn coeff_width(&self) -> usize {
        self.streams * self.streams + 2 * self.streams
    }

    /// Parameters of one sublayer's mHC: `(M² + 2M)(M·D + 1) + 3` (`φ`, `b`, `α`).
    pub fn sublayer_params(&self, d_model: usize) -> u64 {
        let k = self.coeff_width() as u64;
        k * (self.streams as u64 * d_model as u64 + 1) + 3
    }

    /// Parameters of the exit: `M·(M·D) + M + 1` for the head, 0 for the sum.
    pub fn exit_params(&self, d_model: usize) -> u64 {
        match self.exit {
            MhcExit::Head => {
                let m = self.streams as u64;
                m * m * d_model as u64 + m + 1
            }
            MhcExit::Sum => 0,
        }
    }

    /// The mHC of one sublayer of width `d_model`, initialised as documented on [`Mhc`].
    /// Seeded by the device's RNG.
    pub fn init_sublayer(&self, d_model: usize, device: &Device) -> Mhc {
        let m = self.streams;
        let md = m * d_model;
        // φ: random pre and residual columns, zero post columns (see `Mhc`).
        let phi = Tensor::cat(vec![self.random_phi([md, m], device), Tensor::zeros([md, m], device), self.random_phi([md, m * m], device)], 1);
        // b: pre 0, post 0, residual τ·I (row-major).
        let mut base = vec![0.0f32; self.coeff_width()];
        for j in 0..m {
            base[2 * m + j * m + j] = self.res_bias_diag as f32;
        }
        Mhc {
            phi: Param::from_tensor(phi),
            base: Param::from_tensor(Tensor::from_data(TensorData::new(base, [self.coeff_width()]), device)),
            scale: Param::from_tensor(Tensor::full([3], self.alpha_init, device)),
            streams: m,
            sinkhorn_iters: self.sinkhorn_iters,
            norm_eps: self.norm_eps,
            pre_eps: self.pre_eps,
            sinkhorn_eps: self.sinkhorn_eps,
        }
    }

    /// The exit collapse for width `d_model`: a [`HcHead`] (`φ_h` random as the sublayers'
    /// `φ`, `b_h = 0`, `α_h = alpha_init`) or the sum.
    pub fn init_exit(&self, d_model: usize, device: &Device) -> StreamExit {
        let head = match self.exit {
            MhcExit::Head => Some(HcHead {
                phi: Param::from_tensor(self.random_phi([self.streams * d_model, self.streams], device)),
                base: Param::from_tensor(Tensor::zeros([self.streams], device)),
                scale: Param::from_tensor(Tensor::full([1], self.alpha_init, device)),
                norm_eps: self.norm_eps,
                pre_eps: self.pre_eps,
            }),
            MhcExit::Sum => None,
        };
        StreamExit { head }
    }

    fn random_phi(&self, shape: [usize; 2], device: &Device) -> Tensor<2> {
        if self.phi_init_std == 0.0 {
            Tensor::zeros(shape, device)
        } else {
            Tensor::random(shape, Distribution::Normal(0.0, self.phi_init_std), device)
        }
    }
}

/// Sinkhorn–Knopp normalisation of residual logits into (nearly) doubly stochastic
/// matrices, exactly as DeepSeek ships it (V4 `hc_split_sinkhorn_kernel`, TileKernels
/// `sinkhorn_normalize_ref`; spec §3.3):
/// ```text
/// c = softmax over k (last axis) of R + ε          exp fused with the first row pass
/// c = c / (Σ_j c + ε)                              column pass (sum over axis 1)
/// repeat iters − 1 times:
///     c = c / (Σ_k c + ε);  c = c / (Σ_j c + ε)    row pass, then column pass
/// ```
/// Orientation: `c[n, j, k]` is the weight of source stream `j` in destination stream `k`
/// (the merge is `X'[k] = Σ_j c[j, k] · X[j]`, see [`merge`]). The last pass is a column
/// pass, so every column sums to `S / (S + ε) = 1 − O(ε)` exactly; rows only converge: for
/// 4×4 logits of std ≤ 1 they are typically within ~1e-5 of 1 after 20 iterations (with a
/// tail: about 1 in 2000 std-1 draws is off by more than 1e-4), for peaked logits (std 2–6)
/// ~1e-2 (spec §3.3, §7.4). With `ε = 0` the result is the paper's Eq. 9 matrix `H^res` of
/// the logits `Rᵀ`, transposed.
///
/// `iters` ≥ 1 (the first iteration is the softmax and one column pass).
///
/// # Shapes
/// - `logits`: `[N, M, M]` (`R[n, j, k]`) → `[N, M, M]`
pub fn sinkhorn(logits: Tensor<3>, iters: usize, eps: f64) -> Tensor<3> {
    assert!(iters >= 1, "sinkhorn needs at least one iteration (the softmax and a column pass)");
    let col = |c: Tensor<3>| c.clone() / (c.sum_dim(1) + eps); // Σ over j: [N, 1, M]
    let row = |c: Tensor<3>| c.clone() / (c.sum_dim(2) + eps); // Σ over k: [N, M, 1]
    let mut c = col(softmax(logits, 2) + eps);
    for _ in 1..iters {
        c = col(row(c));
    }
    c
}

/// Whether `x` takes the fused mHC kernels: f32 on flex (the f64 gradient checks compose
/// burn's operations).
fn fused<const D: usize>(x: &Tensor<D>) -> bool {
    ops::enabled(&x.device()) && x.dtype() == burn::tensor::DType::F32
}

/// The streams weighted by `weights` and summed: `u = Σ_j w[j] · X[j]` (the read of a
/// sublayer, or the head's collapse).
///
/// # Shapes
/// - `x`: `[B, T, M, D]`, `weights`: `[B, T, M]` → `[B, T, D]`
pub fn collapse(x: Tensor<4>, weights: Tensor<3>) -> Tensor<3> {
    let [b, t, _, d] = x.dims();
    (x * weights.unsqueeze_dim::<4>(3)).sum_dim(2).reshape([b, t, d]) // [B, T, M, D] → [B, T, 1, D]
}

/// The write-back and stream mixing of one sublayer:
/// `X'[k] = post[k] · y + Σ_j comb[j, k] · X[j]`, i.e. `X' = post ⊗ y + combᵀ X` — `comb`
/// consumed transposed, as DeepSeek's `hc_post` (TileKernels einsum `abmn,abmc->abnc`).
///
/// # Shapes
/// - `x`: `[B, T, M, D]`, `y`: `[B, T, D]`, `post`: `[B, T, M]`, `comb`: `[B, T, M, M]`
///   (`comb[.., j, k]`) → `[B, T, M, D]`
pub fn merge(x: Tensor<4>, y: Tensor<3>, post: Tensor<3>, comb: Tensor<4>) -> Tensor<4> {
    if fused(&x) {
        let [b, t, m, d] = x.dims();
        let n = b * t;
        return ops::mhc_merge(x.reshape([n, m, d]), y.reshape([n, d]), post.reshape([n, m]), comb.reshape([n, m, m])).reshape([b, t, m, d]);
    }
    let write = post.unsqueeze_dim::<4>(3) * y.unsqueeze_dim::<4>(2); // [B, T, M, 1] · [B, T, 1, D]
    let keep = comb.swap_dims(2, 3).matmul(x); // [B, T, k, j] · [B, T, j, D] → [B, T, k, D]
    write + keep
}

/// Stream entry: the embedding repeated on a new stream axis (spec §3.6; the backward sums
/// the stream gradients).
///
/// # Shapes
/// - `x`: `[B, T, D]` → `[B, T, M, D]`
pub fn expand_streams(x: Tensor<3>, streams: usize) -> Tensor<4> {
    x.unsqueeze_dim::<4>(2).repeat_dim(2, streams)
}

/// Hyper-Connections' exit: the plain sum of the streams (HC §2.1).
///
/// # Shapes
/// - `x`: `[B, T, M, D]` → `[B, T, D]`
pub fn sum_streams(x: Tensor<4>) -> Tensor<3> {
    let [b, t, _, d] = x.dims();
    x.sum_dim(2).reshape([b, t, d])
}

/// The mHC paper's "amax gain" of a stack of sublayers (its Figs. 3 and 7; spec §7.4 item 7):
/// with `P = comb_0 · comb_1 ⋯ comb_{L−1}` per token (the product of the code's `comb`, which
/// is `(Π H^res)ᵀ`), the forward gain is the largest absolute column sum of `P` and the
/// backward gain the largest absolute row sum; both ≈ 1 for mHC, and far from 1 where the
/// unconstrained Hyper-Connections blow up.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AmaxGain {
    /// Forward gain, mean over tokens.
    pub forward_mean: f64,
    /// Forward gain, largest over tokens.
    pub forward_max: f64,
    /// Backward gain, mean over tokens.
    pub backward_mean: f64,
    /// Backward gain, largest over tokens.
    pub backward_max: f64,
}

impl AmaxGain {
    /// The gain of the sublayers whose `comb`s (`[B, T, M, M]`, in forward order) are given;
    /// `None` for none.
    pub fn of(combs: &[Tensor<4>]) -> Option<AmaxGain> {
        let mut p = combs.first()?.clone();
        for c in &combs[1..] {
            p = p.matmul(c.clone());
        }
        let p = p.abs();
        let stats = |sums: Tensor<4>| {
            let v = sums.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 values");
            (v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64, v.iter().fold(0f64, |m, &x| m.max(x as f64)))
        };
        // Column sums (over j, axis 2), largest over k; row sums (over k, axis 3), largest over j.
        let (forward_mean, forward_max) = stats(p.clone().sum_dim(2).max_dim(3));
        let (backward_mean, backward_max) = stats(p.sum_dim(3).max_dim(2));
        Some(AmaxGain { forward_mean, forward_max, backward_mean, backward_max })
    }
}

/// `1 / √(mean(xf²) + eps)` of every flattened token.
///
/// # Shapes
/// - `xf`: `[N, M·D]` → `[N, 1]`
fn inv_rms(xf: Tensor<2>, eps: f64) -> Tensor<2> {
    (xf.square().mean_dim(1) + eps).sqrt().recip()
}

/// The coefficients of one sublayer for one batch (spec §1 steps 4–5).
#[derive(Clone, Debug)]
pub struct MhcCoeffs {
    /// Read weights `pre = σ(·) + ε`, `[B, T, M]`.
    pub pre: Tensor<3>,
    /// Write weights `post = 2σ(·)`, `[B, T, M]`.
    pub post: Tensor<3>,
    /// Stream mixing `comb[.., j, k]` (source `j`, destination `k`; columns sum to 1),
    /// `[B, T, M, M]`.
    pub comb: Tensor<4>,
}

/// The mHC of one sublayer (one attention or one feed-forward): its coefficients, the read
/// ([`Mhc::pre_mix`]) and the write-back and mixing ([`Mhc::post_merge`]); the formulas are in
/// the module docs.
///
/// # Initialisation ([`MhcConfig::init_sublayer`], spec §3.7)
/// DeepSeek publishes only `α = 0.01`. Used here: `α = (0.01, 0.01, 0.01)`; `b_pre = 0`,
/// `b_post = 0`, `b_res = τ·I` (τ = `res_bias_diag`, default 0); `φ` random
/// N(0, 0.02²) in its `pre` and residual columns and **zero in its `post` columns**.
///
/// *Exactly pre-norm at step 0.* The streams enter as identical copies `h` and
/// `post = 2σ(0) = 1` for every stream and token. Then for any positive `pre` and any `comb`
/// whose columns sum to 1: `u = (Σ_j pre_j)·h` (the scale is removed by the block's RMSNorm)
/// and `X'_k = 1·y + Σ_j comb[j, k]·h = h + F(RMSNorm(h))` for every `k` — the streams stay
/// identical copies of the plain pre-norm residual net, through every sublayer (spec §3.7,
/// fact 1; the columns of `comb` sum to `1 − O(ε)`). "Exactly" up to the norms' ε: the block
/// RMSNorm reads `(Σ pre)·h` (≈ (M/2)·h), and the exit scales the common stream by `Σ_j w_j`
/// before the final RMSNorm; `ε` is 1e-5 of a unit mean square but ≈ 2.5 % of the 0.02²
/// of freshly initialised embeddings, so at step 0 the outputs differ from the pre-norm net's
/// by ~1e-5 relative on unit-scale activations and by up to ~1 % on the model's own. A random `φ`
/// in the `post` columns would make `post` token- and stream-dependent and break this
/// (the spec measured 7.5e-3 for HF's fully random `φ`).
///
/// *Streams not symmetric.* With `φ = 0` and stream-symmetric biases the whole net is
/// equivariant under stream permutations, gradients keep it so, and the `M` streams never
/// separate (spec §3.7, fact 2). The random `pre` and residual columns of `φ` (and the head's
/// random `φ_h`) weight the streams differently per token, so each stream receives a
/// different gradient; `φ_post` and `b_post` then become stream-dependent after the first
/// step and the streams diverge. `phi_init_std = 0` gives the symmetric trap (tests use it).
#[derive(Module, Debug)]
pub struct Mhc {
    /// `φ`: `[M·D, M² + 2M]`, columns pre `0..M`, post `M..2M`, residual `2M..` (row-major
    /// `R[j, k]` at `2M + j·M + k`). DeepSeek's `hc_*_fn` is its transpose.
    pub phi: Param<Tensor<2>>,
    /// `b`: `[M² + 2M]`, the static part, same layout (DeepSeek `hc_*_base`).
    pub base: Param<Tensor<1>>,
    /// `α = (α_pre, α_post, α_res)`: `[3]` (DeepSeek `hc_*_scale`).
    pub scale: Param<Tensor<1>>,
    /// Streams `M`.
    #[module(skip)]
    pub streams: usize,
    /// Sinkhorn iterations.
    #[module(skip)]
    pub sinkhorn_iters: usize,
    /// `ε_norm` of the flattened RMS.
    #[module(skip)]
    pub norm_eps: f64,
    /// `ε` of `pre`.
    #[module(skip)]
    pub pre_eps: f64,
    /// `ε` of Sinkhorn.
    #[module(skip)]
    pub sinkhorn_eps: f64,
}

impl Mhc {
    /// The coefficients `pre`, `post`, `comb` of every token, from the RMS-normalised
    /// flattened streams (spec §1 steps 1–5).
    ///
    /// # Shapes
    /// - `x`: `[B, T, M, D]` → `pre`, `post` `[B, T, M]`, `comb` `[B, T, M, M]`
    pub fn coeffs(&self, x: Tensor<4>) -> MhcCoeffs {
        let [b, t, m, d] = x.dims();
        assert_eq!(m, self.streams, "input has {m} streams, the mHC was built for {}", self.streams);
        let n = b * t;
        let xf = x.reshape([n, m * d]); // [N, M·D], stream-major
        if fused(&xf) && m <= ops::mhc::MAX_STREAMS {
            let params = ops::MhcParams {
                streams: m,
                sinkhorn_iters: self.sinkhorn_iters,
                norm_eps: self.norm_eps,
                pre_eps: self.pre_eps,
                sinkhorn_eps: self.sinkhorn_eps,
                post_mult: POST_MULT,
            };
            let mix = ops::matmul(xf.clone(), self.phi.val()); // [N, M² + 2M]
            let packed = ops::mhc_coeffs(mix, xf, self.scale.val(), self.base.val(), params);
            let pre = packed.clone().slice([0..n, 0..m]).reshape([b, t, m]);
            let post = packed.clone().slice([0..n, m..2 * m]).reshape([b, t, m]);
            let comb = packed.slice([0..n, 2 * m..m * m + 2 * m]).reshape([b, t, m, m]);
            return MhcCoeffs { pre, post, comb };
        }
        let mix = xf.clone().matmul(self.phi.val()) * inv_rms(xf, self.norm_eps); // [N, M² + 2M]
        let (scale, base) = (self.scale.val(), self.base.val());
        // α_i · mix[cols] + b[cols]: [N, cols]
        let part = |i: usize, cols: std::ops::Range<usize>| {
            let alpha = scale.clone().slice(i..i + 1).unsqueeze::<2>(); // [1, 1]
            mix.clone().slice([0..n, cols.clone()]) * alpha + base.clone().slice(cols).unsqueeze::<2>()
        };
        let pre = sigmoid(part(0, 0..m)) + self.pre_eps;
        let post = sigmoid(part(1, m..2 * m)) * POST_MULT;
        let logits = part(2, 2 * m..m * m + 2 * m).reshape([n, m, m]); // R[n, j, k]
        let comb = sinkhorn(logits, self.sinkhorn_iters, self.sinkhorn_eps);
        MhcCoeffs { pre: pre.reshape([b, t, m]), post: post.reshape([b, t, m]), comb: comb.reshape([b, t, m, m]) }
    }

    /// The read: the sublayer input `u = Σ_j pre[j] · X[j]` and the coefficients the
    /// write-back needs. The block's own RMSNorm is applied by the caller, to `u` (after the
    /// collapse, spec §3.6).
    ///
    /// # Shapes
    /// - `x`: `[B, T, M, D]` → `u` `[B, T, D]`, coefficients as [`Mhc::coeffs`]
    pub fn pre_mix(&self, x: Tensor<4>) -> (Tensor<3>, MhcCoeffs) {
        let coeffs = self.coeffs(x.clone());
        (collapse(x, coeffs.pre.clone()), coeffs)
    }

    /// The write-back and mixing: `X'[k] = post[k] · y + Σ_j comb[j, k] · X[j]` ([`merge`]),
    /// with `X` the same streams that [`Mhc::pre_mix`] read and `y` the sublayer's output.
    ///
    /// # Shapes
    /// - `x`: `[B, T, M, D]`, `y`: `[B, T, D]` → `[B, T, M, D]`
    pub fn post_merge(&self, x: Tensor<4>, y: Tensor<3>, coeffs: MhcCoeffs) -> Tensor<4> {
        merge(x, y, coeffs.post, coeffs.comb)
    }

    /// The whole sublayer: read, `y = sublayer(u)` (which must include the block's RMSNorm,
    /// e.g. `|u| attn(norm(u))`), write-back and mixing.
    ///
    /// # Shapes
    /// - `x`: `[B, T, M, D]`; `sublayer`: `[B, T, D]` → `[B, T, D]`; output `[B, T, M, D]`
    pub fn forward(&self, x: Tensor<4>, sublayer: impl FnOnce(Tensor<3>) -> Tensor<3>) -> Tensor<4> {
        let (u, coeffs) = self.pre_mix(x.clone());
        self.post_merge(x, sublayer(u), coeffs)
    }
}

/// DeepSeek-V4's exit (`hc_head`): a pre-only mHC collapse
/// `h = Σ_j (σ(α_h · (xf · φ_h) · r + b_h) + ε)[j] · X[j]`, without Sinkhorn (spec §3.6).
/// The final RMSNorm and the LM head follow it.
///
/// At init (`b_h = 0`, small `α_h`) the weights are ≈ 0.5 each, so on identical streams `h`
/// is ≈ `(M/2)·h_0`; the final RMSNorm removes the scale.
#[derive(Module, Debug)]
pub struct HcHead {
    /// `φ_h`: `[M·D, M]` (DeepSeek `hc_head_fn` transposed).
    pub phi: Param<Tensor<2>>,
    /// `b_h`: `[M]`.
    pub base: Param<Tensor<1>>,
    /// `α_h`: `[1]`.
    pub scale: Param<Tensor<1>>,
    /// `ε_norm` of the flattened RMS.
    #[module(skip)]
    pub norm_eps: f64,
    /// `ε` added to the weights.
    #[module(skip)]
    pub pre_eps: f64,
}

impl HcHead {
    /// The collapse weights `σ(α_h · mix_h + b_h) + ε` of every token.
    ///
    /// # Shapes
    /// - `x`: `[B, T, M, D]` → `[B, T, M]`
    pub fn weights(&self, x: Tensor<4>) -> Tensor<3> {
        let [b, t, m, d] = x.dims();
        let xf = x.reshape([b * t, m * d]);
        let mix = xf.clone().matmul(self.phi.val()) * inv_rms(xf, self.norm_eps); // [N, M]
        let w = sigmoid(mix * self.scale.val().unsqueeze::<2>() + self.base.val().unsqueeze::<2>()) + self.pre_eps;
        w.reshape([b, t, m])
    }

    /// The collapsed hidden state.
    ///
    /// # Shapes
    /// - `x`: `[B, T, M, D]` → `[B, T, D]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<3> {
        let w = self.weights(x.clone());
        collapse(x, w)
    }
}

/// The exit collapse of the streams before the final RMSNorm: the learned [`HcHead`], or the
/// sum ([`sum_streams`]) when `head` is `None` ([`MhcExit`]).
#[derive(Module, Debug)]
pub struct StreamExit {
    /// The head; `None` for the sum.
    pub head: Option<HcHead>,
}

impl StreamExit {
    /// The collapsed hidden state (before the final RMSNorm).
    ///
    /// # Shapes
    /// - `x`: `[B, T, M, D]` → `[B, T, D]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<3> {
        match &self.head {
            Some(head) => head.forward(x),
            None => sum_streams(x),
        }
    }
}

#[cfg(test)]
mod tests;
