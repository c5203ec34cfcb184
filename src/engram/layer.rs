//! The layer's parameters and forward pass ([`Engram`], [`EngramConfig`]), its constants and
//! the placement options a model takes ([`EngramOptions`]); the hash and the host table that
//! feed it are in `hashed.rs`. The formulas and the deviations from the reference are in the
//! doc of `crate::engram`.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::sigmoid;
use burn::tensor::module::embedding;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::hashing::HashConfig;
use crate::table::{TableAdam, TableOptimizer, TableStore, UpdateMode, WeightFormat, DEFAULT_TABLE_INIT_STD};
use crate::ops::{self, linear_tokens, rms_norm_module};

/// Lower clamp of `|s|` before the square root of the gate score (\[D\]: `clamp_min(1e-6)`).
pub const GATE_SQRT_CLAMP: f32 = 1e-6;
/// Kernel size of the short conv (\[P\] §2.3, \[D\] `ShortConv(kernel_size=4)`).
pub const SHORT_CONV_KERNEL: usize = 4;
/// RMSNorm epsilon of the short conv (\[D\] `norm_eps=1e-5`).
pub const SHORT_CONV_NORM_EPS: f64 = 1e-5;
/// RMSNorm epsilon of the gate's query/key norms: the demo uses `nn.RMSNorm(hidden)` whose
/// default epsilon is `torch.finfo(float32).eps`.
pub const GATE_NORM_EPS: f64 = f32::EPSILON as f64;
/// Learning-rate multiplier of the tables relative to the backbone (\[P\] §6: 5×).
pub const TABLE_LR_MULT: f64 = 5.0;

/// A control that removes the information in the memory while keeping its shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum EngramControl {
    /// The real hash.
    #[default]
    None,
    /// Every head has a table of exactly one row: the memory is a learned per-head constant.
    SizeOneTable,
    /// Each sequence of a batch reads the row ids of another sequence of the same batch (the
    /// fixed derangement `b → (b + 1) mod B`): rows are touched with the same frequencies but
    /// carry no information about the current n-gram.
    ShuffledHash,
    /// The table is never updated: it keeps its random initialisation (the layer's projections,
    /// gate and conv still train).
    FrozenTable,
    /// The gate is the constant [`CONSTANT_GATE`] instead of the context-aware one.
    ConstantGate,
    /// The gate is one learned scalar per branch, `α = σ(s)` (`s` starts at 0), the same for
    /// every token.
    ScalarGate,
}

/// The gate of the [`EngramControl::ConstantGate`] control.
pub const CONSTANT_GATE: f32 = 0.1;

/// How a layer forms its gate α (when [`EngramLayerConfig::gate`] is on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum GateKind {
    /// The paper's context-aware gate from the hidden state and the memory's key.
    #[default]
    Context,
    /// The constant [`CONSTANT_GATE`].
    Constant,
    /// One learned scalar per branch, `α = σ(s)` ([`Engram::gate_scalar`]).
    Scalar,
}

impl EngramControl {
    /// The gate this control gives the layer.
    pub fn gate_kind(self) -> GateKind {
        match self {
            Self::ConstantGate => GateKind::Constant,
            Self::ScalarGate => GateKind::Scalar,
            Self::None | Self::SizeOneTable | Self::ShuffledHash | Self::FrozenTable => GateKind::Context,
        }
    }
}

/// Everything that defines Engram in a model: placement, hash, table and layer options.
///
/// `table_size` is the demo's `engram_vocab_size`: the base size of each head's table per
/// order; the actual sizes are the distinct primes above it (spec §3).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngramConfig {
    /// Transformer blocks (zero-based) that get an Engram layer before their attention.
    pub layer_ids: Vec<usize>,
    /// Largest n-gram order N (orders 2..=N are hashed).
    pub max_ngram_size: usize,
    /// Hash heads K per order.
    pub n_head_per_ngram: usize,
    /// Base table size per order (length N−1); each head gets a distinct prime above it.
    pub table_size: Vec<u64>,
    /// Width of one head's row; `d_mem = (N−1)·K·d_head`.
    pub d_head: usize,
    /// Residual branches M (1 = a plain residual stream).
    pub hc_mult: usize,
    /// Short-conv kernel size.
    pub kernel_size: usize,
    /// Seed of the hash multipliers (numpy `default_rng(seed + 10007·layer_id)`).
    pub seed: u64,
    /// Context-aware gate (ablation: `false` sets α = 1).
    pub gate: bool,
    /// Short causal conv (ablation: `false` gives `Y = ṽ`).
    pub short_conv: bool,
    /// Tokenizer compression P: V → V' before hashing (ablation: `false` hashes raw ids).
    pub compression: bool,
    /// Control experiment, see [`EngramControl`].
    pub control: EngramControl,
    /// Table learning rate = backbone learning rate × this.
    pub table_lr_mult: f64,
    /// Standard deviation of the table initialisation.
    pub table_init_std: f32,
    /// Sparse (lazy) or dense table updates.
    pub update: UpdateMode,
    /// Adam hyper-parameters of the tables.
    pub table_adam: TableAdam,
    /// Where the tables' rows live: in memory, or in memory-mapped files (one per layer).
    pub table_store: TableStore,
    /// Directory of the table files with `table_store = file` (default: `tables/` inside the
    /// run directory).
    pub table_dir: Option<String>,
    /// Optimiser state per row: Adam's two moments per value, or one row-wise second moment.
    pub table_optimizer: TableOptimizer,
    /// Weight storage: f32, or bf16 (no f32 master copy, stochastic rounding).
    pub table_weights: WeightFormat,
}

impl Default for EngramConfig {
    fn default() -> Self {
        Self {
            layer_ids: vec![1],
            max_ngram_size: 3,
            n_head_per_ngram: 4,
            table_size: vec![16_384, 16_384],
            d_head: 16,
            hc_mult: 1,
            kernel_size: SHORT_CONV_KERNEL,
            seed: 0,
            gate: true,
            short_conv: true,
            compression: true,
            control: EngramControl::None,
            table_lr_mult: TABLE_LR_MULT,
            table_init_std: DEFAULT_TABLE_INIT_STD,
            update: UpdateMode::Sparse,
            table_adam: TableAdam::default(),
            table_store: TableStore::Resident,
            table_dir: None,
            table_optimizer: TableOptimizer::Adam,
            table_weights: WeightFormat::F32,
        }
    }
}

impl EngramConfig {
    /// Heads per layer: `(N−1)·K`.
    pub fn heads_per_layer(&self) -> usize {
        self.max_ngram_size.saturating_sub(1) * self.n_head_per_ngram
    }

    /// Width of the concatenated memory `e_t`: `(N−1)·K·d_head`.
    pub fn d_mem(&self) -> usize {
        self.heads_per_layer() * self.d_head
    }

    /// The hash configuration for these settings and a tokenizer whose raw pad id is `pad_id`.
    pub fn hash_config(&self, pad_id: u32) -> HashConfig {
        HashConfig {
            max_ngram_size: self.max_ngram_size,
            n_head_per_ngram: self.n_head_per_ngram,
            engram_vocab_size: self.table_size.clone(),
            layer_ids: self.layer_ids.clone(),
            seed: self.seed,
            pad_id,
        }
    }

    /// The layer configuration for a model of width `d_model`.
    pub fn layer_config(&self, d_model: usize) -> EngramLayerConfig {
        EngramLayerConfig {
            d_model,
            d_mem: self.d_mem(),
            hc_mult: self.hc_mult,
            kernel_size: self.kernel_size,
            dilation: self.max_ngram_size,
            gate: self.gate,
            gate_kind: self.control.gate_kind(),
            short_conv: self.short_conv,
        }
    }

    /// Whether the layer computes the context-aware gate (and its key projections).
    pub fn context_gate(&self) -> bool {
        self.gate && self.control.gate_kind() == GateKind::Context
    }

    /// Check every field; the error names the field, its value and what is allowed.
    pub fn validate(&self, n_layers: usize) -> Result<(), crate::ConfigError> {
        use crate::ConfigError as E;
        if self.layer_ids.is_empty() {
            return Err(E::new("engram.layer_ids", "[]", "at least one block id"));
        }
        for &l in &self.layer_ids {
            if l >= n_layers {
                return Err(E::new("engram.layer_ids", format!("{:?}", self.layer_ids), format!("block ids < n_layers = {n_layers}")));
            }
        }
        let mut sorted = self.layer_ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.layer_ids.len() {
            return Err(E::new("engram.layer_ids", format!("{:?}", self.layer_ids), "distinct block ids"));
        }
        if self.max_ngram_size < 2 {
            return Err(E::new("engram.max_ngram_size", self.max_ngram_size, ">= 2"));
        }
        if self.n_head_per_ngram < 1 {
            return Err(E::new("engram.n_head_per_ngram", self.n_head_per_ngram, ">= 1"));
        }
        if self.table_size.len() != self.max_ngram_size - 1 {
            return Err(E::new(
                "engram.table_size",
                format!("{:?}", self.table_size),
                format!("one size per order 2..={}: {} values", self.max_ngram_size, self.max_ngram_size - 1),
            ));
        }
        if let Some(&s) = self.table_size.iter().find(|&&s| !(1..=crate::hashing::MAX_TABLE_ROWS).contains(&s)) {
            return Err(E::new("engram.table_size", s, format!("1..={}", crate::hashing::MAX_TABLE_ROWS)));
        }
        if self.d_head < 1 {
            return Err(E::new("engram.d_head", self.d_head, ">= 1"));
        }
        if self.hc_mult < 1 {
            // Equal to the model's residual streams: checked by `ModelConfig::validate`.
            return Err(E::new("engram.hc_mult", self.hc_mult, ">= 1"));
        }
        if self.kernel_size < 1 {
            return Err(E::new("engram.kernel_size", self.kernel_size, ">= 1"));
        }
        if !self.gate && self.control.gate_kind() != GateKind::Context {
            return Err(E::new("engram.gate", false, format!("true with the {:?} control (it replaces the gate)", self.control)));
        }
        if !(self.table_lr_mult.is_finite() && self.table_lr_mult > 0.0) {
            return Err(E::new("engram.table_lr_mult", self.table_lr_mult, "a finite number > 0"));
        }
        if !(self.table_init_std.is_finite() && self.table_init_std >= 0.0) {
            return Err(E::new("engram.table_init_std", self.table_init_std, "a finite number >= 0"));
        }
        let a = &self.table_adam;
        if !(0.0..1.0).contains(&a.beta1) || !(0.0..1.0).contains(&a.beta2) || !a.eps.is_finite() || a.eps <= 0.0 {
            return Err(E::new("engram.table_adam", format!("{a:?}"), "0 <= beta1, beta2 < 1 and eps > 0"));
        }
        if self.table_store == TableStore::File && self.update == UpdateMode::Dense {
            return Err(E::new("engram.update", "dense", "sparse with table_store = file (the dense update touches every row)"));
        }
        if let Some(dir) = &self.table_dir {
            if self.table_store != TableStore::File {
                return Err(E::new("engram.table_dir", dir, "unset unless table_store = file"));
            }
            if dir.is_empty() {
                return Err(E::new("engram.table_dir", "\"\"", "a directory path"));
            }
        }
        if self.table_weights == WeightFormat::Bf16 && self.d_head > crate::table::layout::MAX_BF16_DIM {
            return Err(E::new("engram.d_head", self.d_head, format!("<= {} with table_weights = bf16", crate::table::layout::MAX_BF16_DIM)));
        }
        Ok(())
    }
}

/// Configuration of one [`Engram`] layer (what its parameters need).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngramLayerConfig {
    /// Hidden size D of the residual stream.
    pub d_model: usize,
    /// Width of the gathered memory `e_t`.
    pub d_mem: usize,
    /// Residual branches M.
    pub hc_mult: usize,
    /// Short-conv kernel size (4).
    pub kernel_size: usize,
    /// Short-conv dilation (= N, the largest n-gram order).
    pub dilation: usize,
    /// Use the gate.
    pub gate: bool,
    /// Which gate, when `gate` is on (the controls replace the context-aware one).
    #[serde(default)]
    pub gate_kind: GateKind,
    /// Use the short conv.
    pub short_conv: bool,
}

impl EngramLayerConfig {
    /// A layer with the reference options (gate and conv on, kernel 4).
    pub fn new(d_model: usize, d_mem: usize, max_ngram_size: usize) -> Self {
        Self { d_model, d_mem, hc_mult: 1, kernel_size: SHORT_CONV_KERNEL, dilation: max_ngram_size, gate: true, gate_kind: GateKind::Context, short_conv: true }
    }

    /// Set the number of residual branches.
    pub fn with_hc_mult(mut self, hc_mult: usize) -> Self {
        self.hc_mult = hc_mult;
        self
    }

    /// Initialise the layer. Projections use PyTorch's `nn.Linear` default
    /// (Kaiming-uniform, bias on, as in the demo); RMSNorm gains are 1; the conv is zero.
    pub fn init(&self, device: &Device) -> Engram {
        let lin = || LinearConfig::new(self.d_mem, self.d_model).init(device);
        let norm = |eps| RmsNormConfig::new(self.d_model).with_epsilon(eps).init(device);
        let channels = self.hc_mult * self.d_model;
        let conv_weight = Initializer::Zeros.init([channels, self.kernel_size], device);
        Engram {
            value: lin(),
            keys: (0..self.hc_mult).map(|_| lin()).collect(),
            norm_key: (0..self.hc_mult).map(|_| norm(GATE_NORM_EPS)).collect(),
            norm_query: (0..self.hc_mult).map(|_| norm(GATE_NORM_EPS)).collect(),
            conv_norm: (0..self.hc_mult).map(|_| norm(SHORT_CONV_NORM_EPS)).collect(),
            conv_weight,
            gate_scalar: (self.gate && self.gate_kind == GateKind::Scalar).then(|| Initializer::Zeros.init([self.hc_mult], device)),
            dilation: self.dilation,
            gate: self.gate,
            gate_kind: self.gate_kind,
            short_conv: self.short_conv,
        }
    }
}

/// The gathered memory of one Engram layer for one batch.
///
/// `rows` holds the `U` distinct table rows the batch touches (`[U, d_head]`, the autodiff
/// leaf whose gradient drives the sparse table update); `inverse` maps every (token, head) to
/// its row in `rows` (`[B·T, H]`).
#[derive(Clone, Debug)]
pub struct EngramMemory {
    /// Distinct rows `[U, d_head]`.
    pub rows: Tensor<2>,
    /// Index into `rows` for each token and head, `[B·T, H]`.
    pub inverse: Tensor<2, Int>,
    /// Batch size B.
    pub batch: usize,
    /// Sequence length T.
    pub seq_len: usize,
}

impl EngramMemory {
    /// Upload gathered rows and inverse indices to `device`. With `track_grad`, `rows` becomes
    /// an autodiff leaf (the device must have autodiff enabled).
    ///
    /// # Shapes
    /// - `rows`: `U · d_head` values, row-major
    /// - `inverse`: `B · T · H` indices, row-major `[b][t][h]`
    #[allow(clippy::too_many_arguments)] // one flat call mirroring the documented shapes
    pub fn upload(rows: Vec<f32>, d_head: usize, inverse: &[u32], batch: usize, seq_len: usize, heads: usize, device: &Device, track_grad: bool) -> Self {
        debug_assert_eq!(inverse.len(), batch * seq_len * heads);
        let u = rows.len() / d_head.max(1);
        let rows = Tensor::<2>::from_data(TensorData::new(rows, [u, d_head]), device);
        let rows = if track_grad { rows.require_grad() } else { rows };
        let inv: Vec<i32> = inverse.iter().map(|&i| i as i32).collect();
        let inverse = Tensor::<2, Int>::from_data(TensorData::new(inv, [batch * seq_len, heads]), device);
        Self { rows, inverse, batch, seq_len }
    }

    /// The concatenated memory `e`, `[B, T, H·d_head]`.
    pub fn embeddings(&self) -> Tensor<3> {
        let e = embedding(self.rows.clone(), self.inverse.clone()); // [B·T, H, d_head]
        let [bt, h, d] = e.dims();
        debug_assert_eq!(bt, self.batch * self.seq_len);
        e.reshape([self.batch, self.seq_len, h * d])
    }
}

/// One Engram layer (a burn [`Module`]): value/key projections, gate and short conv.
///
/// Import it into any burn model: call [`Engram::forward`] with the hidden states and the
/// layer's [`EngramMemory`], and add the result to the residual stream.
#[derive(Module, Debug)]
pub struct Engram {
    /// `W_V`: `d_mem → D`, shared by the branches.
    pub value: Linear,
    /// `W_K^(m)`: one `d_mem → D` projection per branch.
    pub keys: Vec<Linear>,
    /// RMSNorm of the keys, per branch.
    pub norm_key: Vec<RmsNorm>,
    /// RMSNorm of the hidden state (the query), per branch.
    pub norm_query: Vec<RmsNorm>,
    /// RMSNorm before the conv, per branch.
    pub conv_norm: Vec<RmsNorm>,
    /// Depthwise conv weight `[M·D, kernel]` (PyTorch layout `[C, 1, k]` squeezed); tap `j`
    /// reads position `t − (kernel − 1 − j)·dilation`.
    pub conv_weight: Param<Tensor<2>>,
    /// The [`GateKind::Scalar`] control's gate logits `s`, one per branch (`α = σ(s)`); `None`
    /// for the other gates.
    pub gate_scalar: Option<Param<Tensor<1>>>,
    /// Conv dilation (= N).
    #[module(skip)]
    pub dilation: usize,
    /// Whether the gate is applied.
    #[module(skip)]
    pub gate: bool,
    /// Which gate (see [`GateKind`]).
    #[module(skip)]
    pub gate_kind: GateKind,
    /// Whether the short conv is applied.
    #[module(skip)]
    pub short_conv: bool,
}

impl Engram {
    /// The Engram output `Y` to be added to the residual stream.
    ///
    /// # Shapes
    /// - `hidden`: `[B, T, M, D]` (M = branches; 1 for a plain residual stream)
    /// - `memory`: `[B, T, d_mem]` (from [`EngramMemory::embeddings`])
    /// - output: `[B, T, M, D]`
    pub fn forward(&self, hidden: Tensor<4>, memory: Tensor<3>) -> Tensor<4> {
        let fused = ops::enabled(&hidden.device());
        self.forward_with(hidden, memory, fused)
    }

    /// [`Engram::forward`]; with `fused`, a layer with gate and conv on takes the fused kernel
    /// for everything after the projections ([`ops::engram_gate_conv`]), on any number of
    /// branches.
    fn forward_with(&self, hidden: Tensor<4>, memory: Tensor<3>, fused: bool) -> Tensor<4> {
        let m = hidden.dims()[2];
        assert_eq!(m, self.keys.len(), "hidden has {m} branches, the layer was built for {}", self.keys.len());
        let biases = self.value.bias.is_some();
        if fused && self.gate && self.gate_kind == GateKind::Context && self.short_conv && self.keys.iter().all(|k| k.bias.is_some() == biases) {
            let (v, k) = self.value_and_keys(memory); // [B, T, D], [B, T, M, D]
            let params = ops::GateConvParams {
                dilation: self.dilation,
                eps_query: self.norm_query[0].epsilon,
                eps_key: self.norm_key[0].epsilon,
                eps_conv: self.conv_norm[0].epsilon,
                sqrt_clamp: GATE_SQRT_CLAMP,
            };
            // [M, D]; one branch needs no copy.
            let gains = |norms: &[RmsNorm]| if m == 1 { norms[0].gamma.val().unsqueeze_dim(0) } else { Tensor::stack(norms.iter().map(|n| n.gamma.val()).collect(), 0) };
            return ops::engram_gate_conv(v, k, hidden, gains(&self.norm_query), gains(&self.norm_key), gains(&self.conv_norm), self.conv_weight.val(), params);
        }
        let v_tilde = self.gated_value(hidden, memory);
        if !self.short_conv {
            return v_tilde;
        }
        v_tilde.clone() + self.short_conv_forward(v_tilde)
    }

    /// The gated value `ṽ = α · W_V e` of every branch (`α = 1` without the gate): the layer's
    /// output before the short conv.
    ///
    /// # Shapes
    /// - `hidden`: `[B, T, M, D]`, `memory`: `[B, T, d_mem]` → `[B, T, M, D]`
    pub fn gated_value(&self, hidden: Tensor<4>, memory: Tensor<3>) -> Tensor<4> {
        let [b, t, m, d] = hidden.dims();
        let v = linear_tokens(&self.value, memory.clone()); // [B, T, D]
        let mut gated = Vec::with_capacity(m);
        for (i, key_proj) in self.keys.iter().enumerate() {
            if !self.gate {
                gated.push(v.clone());
                continue;
            }
            let alpha = match self.gate_kind {
                GateKind::Context => {
                    let h_i = hidden.clone().slice([0..b, 0..t, i..i + 1, 0..d]).reshape([b, t, d]);
                    self.gate_alpha(h_i, linear_tokens(key_proj, memory.clone()), i)
                }
                _ => self.uniform_gate(i).reshape([1, 1, 1]),
            };
            gated.push(v.clone() * alpha);
        }
        // [B, T, M, D]; one branch needs no copy.
        if m == 1 {
            gated.pop().expect("one branch").unsqueeze_dim::<4>(2)
        } else {
            Tensor::stack::<4>(gated, 2)
        }
    }

    /// The gate α of every branch (1 everywhere without the gate).
    ///
    /// # Shapes
    /// - `hidden`: `[B, T, M, D]`, `memory`: `[B, T, d_mem]` → `[B, T, M]`
    pub fn gate_values(&self, hidden: Tensor<4>, memory: Tensor<3>) -> Tensor<3> {
        let [b, t, m, d] = hidden.dims();
        if !self.gate {
            return Tensor::ones([b, t, m], &hidden.device());
        }
        if self.gate_kind != GateKind::Context {
            let alphas: Vec<Tensor<3>> = (0..m).map(|i| self.uniform_gate(i).reshape([1, 1, 1]).expand([b, t, 1])).collect();
            return Tensor::cat(alphas, 2);
        }
        let alphas: Vec<Tensor<3>> = (self.keys.iter().enumerate())
            .map(|(i, key_proj)| {
                let h_i = hidden.clone().slice([0..b, 0..t, i..i + 1, 0..d]).reshape([b, t, d]);
                self.gate_alpha(h_i, linear_tokens(key_proj, memory.clone()), i)
            })
            .collect();
        Tensor::cat(alphas, 2)
    }

    /// Branch `i`'s gate under a [`GateKind`] that is the same for every token: `[1]`.
    fn uniform_gate(&self, i: usize) -> Tensor<1> {
        let device = self.conv_weight.val().device();
        match (self.gate_kind, &self.gate_scalar) {
            (GateKind::Scalar, Some(s)) => sigmoid(s.val().narrow(0, i, 1)),
            (GateKind::Scalar, None) => panic!("a scalar-gate layer without its gate parameter"),
            (GateKind::Constant, _) => Tensor::from_data(TensorData::new(vec![CONSTANT_GATE], [1]), &device),
            (GateKind::Context, _) => unreachable!("the context gate depends on the token"),
        }
    }

    /// The gate `α = σ(sign(s)·√max(|s|, 1e−6))`, `s = ⟨RMSNorm_q(h), RMSNorm_k(k)⟩ / √D`, of
    /// branch `i`.
    ///
    /// # Shapes
    /// - `hidden`, `key`: `[B, T, D]` → `[B, T, 1]`
    fn gate_alpha(&self, hidden: Tensor<3>, key: Tensor<3>, i: usize) -> Tensor<3> {
        let d = hidden.dims()[2];
        let q = rms_norm_module(&self.norm_query[i], hidden);
        let k = rms_norm_module(&self.norm_key[i], key);
        let s = (q * k).sum_dim(2) / (d as f64).sqrt();
        let s = s.clone().sign() * s.abs().clamp_min(GATE_SQRT_CLAMP).sqrt();
        sigmoid(s)
    }

    /// `W_V e` and every branch's `W_K^(i) e` as one product with the weights side by side
    /// (fewer and wider products: 0.2–0.4 ms of the default layer's 1.6–2.1 ms forward +
    /// backward). The biases of all, or of none, must be present.
    ///
    /// # Shapes
    /// - `memory`: `[B, T, d_mem]` → (`[B, T, D]`, `[B, T, M, D]`)
    fn value_and_keys(&self, memory: Tensor<3>) -> (Tensor<3>, Tensor<4>) {
        let [b, t, dm] = memory.dims();
        let (d, m) = (self.value.weight.dims()[1], self.keys.len());
        let w = Tensor::cat(std::iter::once(&self.value).chain(&self.keys).map(|l| l.weight.val()).collect(), 1); // [d_mem, (1 + M)·D]
        let mut vk = ops::matmul(memory.reshape([b * t, dm]), w); // [B·T, (1 + M)·D]
        if self.value.bias.is_some() {
            let bias = Tensor::cat(std::iter::once(&self.value).chain(&self.keys).map(|l| l.bias.as_ref().expect("every bias or none").val()).collect(), 0);
            vk = vk + bias.unsqueeze_dim(0);
        }
        let v = vk.clone().slice([0..b * t, 0..d]).reshape([b, t, d]);
        let k = vk.slice([0..b * t, d..(1 + m) * d]).reshape([b, t, m, d]);
        (v, k)
    }

    /// `SiLU(DepthwiseCausalConv(RMSNorm(x)))` per branch.
    ///
    /// # Shapes
    /// - `x`: `[B, T, M, D]` → `[B, T, M, D]`
    pub fn short_conv_forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, t, m, d] = x.dims();
        let x = self.conv_input(x);
        // SiLU(conv): one pass on flex (`fused`), burn's ops elsewhere.
        ops::causal_conv_silu(x, self.conv_weight.val(), self.dilation).reshape([b, t, m, d])
    }

    /// The short conv's input: each branch's RMSNorm, branches side by side.
    ///
    /// # Shapes
    /// - `x`: `[B, T, M, D]` → `[B, T, M·D]`
    pub fn conv_input(&self, x: Tensor<4>) -> Tensor<3> {
        let [b, t, m, d] = x.dims();
        let mut normed: Vec<Tensor<3>> = (0..m)
            .map(|i| rms_norm_module(&self.conv_norm[i], x.clone().slice([0..b, 0..t, i..i + 1, 0..d]).reshape([b, t, d])))
            .collect();
        // One branch needs no copy.
        if m == 1 {
            normed.pop().expect("one branch")
        } else {
            Tensor::cat(normed, 2)
        }
    }
}

/// Depthwise causal dilated convolution along time (defined with the kernels, in
/// [`crate::ops::conv`]).
pub use crate::ops::causal_depthwise_conv;

#[cfg(test)]
mod tests;
