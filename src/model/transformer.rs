//! The decoder-only Transformer: token embedding (repeated on `M` streams with mHC), blocks,
//! stream exit, final RMSNorm, LM head.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::ops::IndexingUpdateOp;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::attention::Rope;
use super::bigram::{bigram_rows, BigramHashConfig};
use super::block::{Block, NORM_EPS};
use super::mhc::{expand_streams, AmaxGain, MhcConfig, StreamExit};
use super::moe::MoeConfig;
use crate::engram::{EngramConfig, EngramMemory};
use crate::ops;
use crate::ConfigError;

/// Standard deviation of the weight initialisation (GPT-2).
pub const INIT_STD: f64 = 0.02;
/// RoPE base.
pub const ROPE_THETA: f64 = 10_000.0;

/// Everything that defines a model. The baseline is `engram: None`; `moe` replaces every
/// block's SwiGLU MLP by a mixture of experts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Model vocabulary (input embedding and LM head rows).
    pub vocab_size: usize,
    /// Hidden size D.
    pub d_model: usize,
    /// Number of blocks.
    pub n_layers: usize,
    /// Attention heads (D must be divisible by it, and D / heads even for RoPE).
    pub n_heads: usize,
    /// SwiGLU hidden width F.
    pub d_ff: usize,
    /// Longest sequence the RoPE tables cover.
    pub max_seq_len: usize,
    /// Engram placement and settings; `None` for the baseline.
    #[serde(default)]
    pub engram: Option<EngramConfig>,
    /// Mixture-of-experts feed-forward in every block (`d_ff` is then unused); `None` for the
    /// dense SwiGLU MLP.
    #[serde(default)]
    pub moe: Option<MoeConfig>,
    /// Multi-branch residual streams with mHC ([`crate::model::mhc`]); `None` for one plain
    /// residual stream (the model of a config without this key, bit for bit). With it, Engram's
    /// `hc_mult` must equal `mhc.streams`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mhc: Option<MhcConfig>,
    /// Additive BigramHash at the input embedding ([`crate::model::bigram`], the critics'
    /// control); `None` for none (the model of a config without this key, bit for bit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bigram_hash: Option<BigramHashConfig>,
}

impl ModelConfig {
    /// SwiGLU width `⌊8/3 · D⌋` (keeps the MLP at the parameter count of a 4·D GELU MLP).
    pub fn swiglu_width(d_model: usize) -> usize {
        8 * d_model / 3
    }

    /// A baseline of the given shape.
    pub fn new(vocab_size: usize, d_model: usize, n_layers: usize, n_heads: usize, max_seq_len: usize) -> Self {
        Self { vocab_size, d_model, n_layers, n_heads, d_ff: Self::swiglu_width(d_model), max_seq_len, engram: None, moe: None, mhc: None, bigram_hash: None }
    }

    /// Preset `tiny`: D 64, 2 blocks, 4 heads (tests, `--quick`).
    pub fn tiny(vocab_size: usize, max_seq_len: usize) -> Self {
        Self::new(vocab_size, 64, 2, 4, max_seq_len)
    }

    /// Preset `small`: D 128, 4 blocks, 4 heads (the default experiment's Engram backbone).
    pub fn small(vocab_size: usize, max_seq_len: usize) -> Self {
        Self::new(vocab_size, 128, 4, 4, max_seq_len)
    }

    /// Preset `reference`: D 256, 4 blocks, 4 heads, F ⌊8/3·256⌋ = 682, vocab 8192 — the
    /// configuration timed against PyTorch in `exp_throughput`.
    pub fn reference() -> Self {
        Self::new(8192, 256, 4, 4, 128)
    }

    /// The same model with Engram.
    pub fn with_engram(mut self, mut engram: EngramConfig) -> Self {
        if let Some(h) = &self.mhc {
            engram.hc_mult = h.streams;
        }
        self.engram = Some(engram);
        self
    }

    /// The same model with a mixture-of-experts feed-forward in every block.
    pub fn with_moe(mut self, moe: MoeConfig) -> Self {
        self.moe = Some(moe);
        self
    }

    /// The same model on `mhc.streams` residual streams with mHC; an Engram config present
    /// now or added later by [`ModelConfig::with_engram`] gets `hc_mult = mhc.streams`.
    pub fn with_mhc(mut self, mhc: MhcConfig) -> Self {
        if let Some(e) = &mut self.engram {
            e.hc_mult = mhc.streams;
        }
        self.mhc = Some(mhc);
        self
    }

    /// Residual streams `M`: `mhc.streams`, 1 without mHC.
    pub fn streams(&self) -> usize {
        self.mhc.as_ref().map_or(1, |h| h.streams)
    }

    /// Check every field; the error names the field, its value and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let pos = |name: &str, v: usize| if v == 0 { Err(ConfigError::new(name, v, ">= 1")) } else { Ok(()) };
        pos("model.vocab_size", self.vocab_size)?;
        pos("model.d_model", self.d_model)?;
        pos("model.n_layers", self.n_layers)?;
        pos("model.n_heads", self.n_heads)?;
        pos("model.d_ff", self.d_ff)?;
        pos("model.max_seq_len", self.max_seq_len)?;
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(ConfigError::new("model.d_model", self.d_model, format!("a multiple of model.n_heads = {}", self.n_heads)));
        }
        if !(self.d_model / self.n_heads).is_multiple_of(2) {
            return Err(ConfigError::new("model.n_heads", self.n_heads, "a head width d_model / n_heads that is even (RoPE rotates pairs)"));
        }
        if let Some(h) = &self.mhc {
            h.validate()?;
        }
        if let Some(e) = &self.engram {
            e.validate(self.n_layers)?;
            if e.hc_mult != self.streams() {
                let streams = match &self.mhc {
                    Some(h) => format!("model.mhc.streams = {}", h.streams),
                    None => "1, the model's single residual stream (no model.mhc)".to_string(),
                };
                return Err(ConfigError::new("engram.hc_mult", e.hc_mult, format!("the number of residual streams: {streams}")));
            }
        }
        if let Some(m) = &self.moe {
            m.validate()?;
        }
        if let Some(bh) = &self.bigram_hash {
            bh.validate(self.vocab_size)?;
        }
        Ok(())
    }

    /// Build the model. Initialisation is seeded by the device's RNG (`device.seed(..)`).
    pub fn init(&self, device: &Device) -> Transformer {
        let d = self.d_model;
        let proj_std = INIT_STD / (2.0 * self.n_layers as f64).sqrt();
        let mut blocks: Vec<Block> = (0..self.n_layers)
            .map(|_| match &self.moe {
                Some(moe) => Block::new_moe(d, self.n_heads, moe, INIT_STD, proj_std, device),
                None => Block::new(d, self.n_heads, self.d_ff, INIT_STD, proj_std, device),
            })
            .collect();
        if let Some(e) = &self.engram {
            for &l in &e.layer_ids {
                blocks[l].engram = Some(e.layer_config(d).init(device));
            }
        }
        let mut model = Transformer {
            embed: EmbeddingConfig::new(self.vocab_size, d)
                .with_initializer(Initializer::Normal { mean: 0.0, std: INIT_STD })
                .init(device),
            blocks,
            norm: RmsNormConfig::new(d).with_epsilon(NORM_EPS).init(device),
            head: LinearConfig::new(d, self.vocab_size)
                .with_bias(false)
                .with_initializer(Initializer::Normal { mean: 0.0, std: INIT_STD })
                .init(device),
            rope: Rope::new(self.max_seq_len, d / self.n_heads, ROPE_THETA, device),
            hc_exit: None,
            // Zero-initialised: no draw from the RNG, the other weights are the baseline's.
            bigram: self.bigram_hash.as_ref().map(|bh| bh.init(d, device)),
        };
        // mHC is drawn last, so that the backbone's weights are those of the same model
        // without it (for one seed).
        if let Some(h) = &self.mhc {
            for block in &mut model.blocks {
                block.hc_attn = Some(h.init_sublayer(d, device));
                block.hc_ffn = Some(h.init_sublayer(d, device));
            }
            model.hc_exit = Some(h.init_exit(d, device));
        }
        model
    }
}

/// The decoder-only Transformer.
#[derive(Module, Debug)]
pub struct Transformer {
    /// Token embedding `[V, D]`.
    pub embed: Embedding,
    /// Decoder blocks.
    pub blocks: Vec<Block>,
    /// Final RMSNorm.
    pub norm: RmsNorm,
    /// LM head `D → V` (untied).
    pub head: Linear,
    /// RoPE tables.
    pub rope: Rope,
    /// With mHC, the collapse of the streams before the final RMSNorm; `None` on one plain
    /// residual stream.
    pub hc_exit: Option<StreamExit>,
    /// The BigramHash table `[rows, D]` added at the input ([`crate::model::bigram`]); `None`
    /// without it.
    pub bigram: Option<Embedding>,
}

impl Transformer {
    /// Logits for every position.
    ///
    /// `memories` holds one [`EngramMemory`] per Engram block, in block order (ascending block
    /// index); it must be empty for a baseline. With `zero_memory` the Engram layers are skipped
    /// (their output is treated as zero: the "memory off" evaluation).
    ///
    /// # Shapes
    /// - `tokens`: `[B, T]` → logits `[B, T, V]`
    pub fn forward(&self, tokens: Tensor<2, Int>, memories: &[EngramMemory], zero_memory: bool) -> Tensor<3> {
        self.forward_with_aux(tokens, memories, zero_memory).0
    }

    /// Logits for every position and, for a mixture-of-experts model, the load-balancing loss
    /// averaged over its blocks (`None` for a dense model). Arguments as [`Transformer::forward`].
    ///
    /// # Shapes
    /// - `tokens`: `[B, T]` → logits `[B, T, V]`, aux `[1]`
    pub fn forward_with_aux(&self, tokens: Tensor<2, Int>, memories: &[EngramMemory], zero_memory: bool) -> (Tensor<3>, Option<Tensor<1>>) {
        let (h, aux) = self.hidden_with_aux(tokens, memories, zero_memory);
        (ops::linear_tokens(&self.head, h), aux)
    }

    /// Mean next-token cross-entropy of `targets` and the load-balancing loss (as
    /// [`Transformer::forward_with_aux`]), with the LM head and the loss fused by
    /// [`head_cross_entropy`]: the `[B·T, V]` logits never enter the autodiff graph. Same value
    /// and gradients as `cross_entropy(forward(..), targets)` up to float rounding; the training
    /// loop uses this.
    ///
    /// # Shapes
    /// - `tokens`, `targets`: `[B, T]` → loss `[1]`, aux `[1]`
    pub fn loss_with_aux(&self, tokens: Tensor<2, Int>, targets: Tensor<2, Int>, memories: &[EngramMemory], zero_memory: bool) -> (Tensor<1>, Option<Tensor<1>>) {
        let (h, aux) = self.hidden_with_aux(tokens, memories, zero_memory);
        let [b, t, d] = h.dims();
        let head = &self.head;
        let loss = head_cross_entropy(h.reshape([b * t, d]), head.weight.val(), head.bias.as_ref().map(|b| b.val()), targets.reshape([b * t]));
        (loss, aux)
    }

    /// The final normalised hidden state (the LM head's input) and the load-balancing loss.
    ///
    /// # Shapes
    /// - `tokens`: `[B, T]` → `[B, T, D]`, aux `[1]`
    pub fn hidden_with_aux(&self, tokens: Tensor<2, Int>, memories: &[EngramMemory], zero_memory: bool) -> (Tensor<3>, Option<Tensor<1>>) {
        let (x, aux) = self.blocks_forward(tokens, memories, zero_memory, None);
        (self.exit(x), aux)
    }

    /// The streams after the last block (before the exit) and the mean load-balancing loss;
    /// each mHC sublayer's `comb` is pushed onto `combs` when given.
    fn blocks_forward(&self, tokens: Tensor<2, Int>, memories: &[EngramMemory], zero_memory: bool, mut combs: Option<&mut Vec<Tensor<4>>>) -> (Tensor<4>, Option<Tensor<1>>) {
        let mut x = self.enter(tokens); // [B, T, M, D]
        let mut aux_sum: Option<Tensor<1>> = None;
        let mut n_aux = 0usize;
        for (block, mem) in self.blocks.iter().zip(self.block_memories(memories, zero_memory)) {
            let (y, aux) = block.forward_recording(x, mem, &self.rope, combs.as_deref_mut());
            x = y;
            if let Some(a) = aux {
                n_aux += 1;
                aux_sum = Some(match aux_sum {
                    Some(s) => s + a,
                    None => a,
                });
            }
        }
        (x, aux_sum.map(|s| s / n_aux as f32))
    }

    /// The forward pass of [`Transformer::forward`] counting, for every MoE block (in block
    /// order), the tokens routed to each of its experts; empty for a model without MoE.
    pub fn expert_counts(&self, tokens: Tensor<2, Int>, memories: &[EngramMemory]) -> Vec<Vec<usize>> {
        let mut x = self.enter(tokens);
        let mut out = Vec::new();
        for (block, mem) in self.blocks.iter().zip(self.block_memories(memories, false)) {
            let (y, counts) = block.forward_counting_experts(x, mem, &self.rope);
            x = y;
            out.extend(counts);
        }
        out
    }

    /// Each block's Engram memory, in block order: the next of `memories` for a block with
    /// Engram (`None` with `zero_memory`), `None` for one without.
    fn block_memories<'a>(&'a self, memories: &'a [EngramMemory], zero_memory: bool) -> impl Iterator<Item = Option<Tensor<3>>> + 'a {
        let mut mem_iter = memories.iter();
        self.blocks.iter().map(move |block| {
            let m = block.engram.as_ref().map(|_| mem_iter.next().expect("one EngramMemory per Engram block (checked by the caller's batcher)"));
            m.filter(|_| !zero_memory).map(EngramMemory::embeddings)
        })
    }

    /// The mHC amax gain ([`AmaxGain`]) of the whole stack on `tokens`: the forward pass of
    /// [`Transformer::forward`] keeping every sublayer's `comb`. `None` without mHC.
    pub fn amax_gain(&self, tokens: Tensor<2, Int>, memories: &[EngramMemory]) -> Option<AmaxGain> {
        self.hc_exit.as_ref()?;
        let mut combs = Vec::with_capacity(2 * self.blocks.len());
        self.blocks_forward(tokens, memories, false, Some(&mut combs));
        AmaxGain::of(&combs)
    }

    /// Residual streams `M` (1 without mHC).
    pub fn streams(&self) -> usize {
        self.blocks.first().and_then(|b| b.hc_attn.as_ref()).map_or(1, |h| h.streams)
    }

    /// Stream entry: the token embeddings, repeated on `M` streams with mHC (one stream
    /// otherwise).
    ///
    /// # Shapes
    /// - `tokens`: `[B, T]` → `[B, T, M, D]`
    pub fn enter(&self, tokens: Tensor<2, Int>) -> Tensor<4> {
        self.enter_after(tokens, None)
    }

    /// [`Transformer::enter`] for tokens that continue sequences: `before` (`[B, 1]`) is the
    /// token before each one's first (what the BigramHash reads there); `None` at their start.
    pub fn enter_after(&self, tokens: Tensor<2, Int>, before: Option<Tensor<2, Int>>) -> Tensor<4> {
        let mut x = self.embed.forward(tokens.clone()); // [B, T, D]
        if let Some(bigram) = &self.bigram {
            let rows = bigram.weight.dims()[0];
            x = x + bigram.forward(bigram_rows(tokens, before, rows));
        }
        match &self.hc_exit {
            Some(_) => expand_streams(x, self.streams()),
            None => x.unsqueeze_dim(2),
        }
    }

    /// Stream exit: the streams collapsed ([`StreamExit`]) with mHC, then the final RMSNorm —
    /// the LM head's input.
    ///
    /// # Shapes
    /// - `x`: `[B, T, M, D]` → `[B, T, D]`
    pub fn exit(&self, x: Tensor<4>) -> Tensor<3> {
        let h = match &self.hc_exit {
            Some(exit) => exit.forward(x),
            None => {
                let [b, t, _, d] = x.dims();
                x.reshape([b, t, d])
            }
        };
        ops::rms_norm_module(&self.norm, h)
    }

    /// Number of Engram blocks.
    pub fn n_engram_blocks(&self) -> usize {
        self.blocks.iter().filter(|b| b.engram.is_some()).count()
    }

    /// The same weights with every Engram layer removed (the baseline it extends).
    pub fn without_engram(mut self) -> Self {
        for b in &mut self.blocks {
            b.engram = None;
        }
        self
    }
}

/// Mean token cross-entropy (natural log).
///
/// # Shapes
/// - `logits`: `[B, T, V]`, `targets`: `[B, T]` → scalar `[1]`
pub fn cross_entropy(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
    let [b, t, v] = logits.dims();
    let logp = log_softmax(logits.reshape([b * t, v]), 1); // [B·T, V]
    let picked = logp.gather(1, targets.reshape([b * t, 1])); // [B·T, 1]
    picked.mean().neg()
}

/// Mean cross-entropy of a linear head `logits = h·W (+ bias)`, fused: the logits, their
/// softmax and the gradients `∂L/∂h`, `∂L/∂W`, `∂L/∂bias` are computed outside the autodiff graph,
/// and the graph receives them through a surrogate whose value is zero and whose gradient is
/// exactly those tensors. With `G = (softmax(logits) − onehot(targets)) / N`:
/// `∂L/∂h = G·Wᵀ`, `∂L/∂W = hᵀ·G`, `∂L/∂bias = Σ_rows G`.
///
/// Why: burn's autodiff decomposes `log_softmax` into about a dozen element-wise passes over the
/// `[N, V]` logits, forward and backward, most on one thread, with libm's scalar `expf`. On the
/// CPU backends the softmax, the loss and `G` are instead one kernel on the logits' own buffer
/// (three passes per row, rows split over the cores, a vectorised exponential:
/// [`crate::ops::xent`]); on other devices they are a few tensor operations. The logits are not kept
/// for the backward pass. The matrix products are the same three autodiff would run.
///
/// Without autodiff (evaluation) it computes the value only.
///
/// # Shapes
/// - `h`: `[N, D]`, `weight`: `[D, V]`, `bias`: `[V]`, `targets`: `[N]` → scalar `[1]`
pub fn head_cross_entropy(h: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>, targets: Tensor<1, Int>) -> Tensor<1> {
    let track = h.is_autodiff() || weight.is_autodiff();
    let hi = h.clone().inner();
    let wi = weight.clone().inner();
    let bi = bias.as_ref().map(|b| b.clone().inner());
    let (value, grads) = if on_host(&hi.device()) {
        head_loss_host(hi, wi, bi, targets, track)
    } else {
        head_loss_tensor(hi, wi, bi, targets, track)
    };
    let Some(HeadGrads { h: grad_h, weight: grad_w, bias: grad_b }) = grads else {
        return value;
    };
    let mut surrogate = (h * grad_h).sum() + (weight * grad_w).sum();
    if let (Some(b), Some(gb)) = (bias, grad_b) {
        surrogate = surrogate + (b * gb).sum();
    }
    // Value `value`, gradient that of `surrogate`.
    surrogate.clone() - surrogate.detach() + value.autodiff()
}

/// Gradients of the mean head loss (inner tensors, no autodiff).
struct HeadGrads {
    h: Tensor<2>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
}

/// [`head_cross_entropy`] on a host-memory device: the softmax, the loss and
/// `G = (softmax − onehot) / N` by [`ops::xent::softmax_cross_entropy_rows`] on the logits'
/// own buffer. (Splitting the rows into cache-sized blocks was measured no faster.) On flex all
/// of it, the three matrix products included, is [`ops::xent::head_softmax_cross_entropy`].
fn head_loss_host(h: Tensor<2>, w: Tensor<2>, bias: Option<Tensor<1>>, targets: Tensor<1, Int>, track: bool) -> (Tensor<1>, Option<HeadGrads>) {
    let [n, _] = h.dims();
    let v = w.dims()[1];
    let device = h.device();
    let targets: Vec<usize> = targets.into_data().iter::<i64>().map(|t| usize::try_from(t).unwrap_or(usize::MAX)).collect();
    let scale = track.then_some(1.0 / n as f32);
    if ops::enabled(&device) {
        let d = h.dims()[1];
        let f32s = |t: TensorData| t.try_into_vec::<f32>().expect("f32 tensors");
        let (hv, wv, bv) = (f32s(h.into_data()), f32s(w.into_data()), bias.map(|b| f32s(b.into_data())));
        let (total, grads) = ops::xent::head_softmax_cross_entropy(&hv, &wv, bv.as_deref(), n, d, v, &targets, scale);
        let value = Tensor::<1>::from_data(TensorData::new(vec![(total / n as f64) as f32], [1]), &device);
        let grads = grads.map(|(gh, gw, gb)| HeadGrads {
            h: Tensor::from_data(TensorData::new(gh, [n, d]), &device),
            weight: Tensor::from_data(TensorData::new(gw, [d, v]), &device),
            bias: gb.map(|gb| Tensor::from_data(TensorData::new(gb, [v]), &device)),
        });
        return (value, grads);
    }
    let mut logits = h.clone().matmul(w.clone()); // [N, V]
    if let Some(b) = &bias {
        logits = logits + b.clone().unsqueeze_dim(0);
    }
    let mut data = logits.into_data(); // no copy when the logits are not shared
    let rows = data.as_mut_slice::<f32>().expect("f32 logits");
    let total = ops::xent::softmax_cross_entropy_rows(rows, v, &targets, scale);
    let value = Tensor::<1>::from_data(TensorData::new(vec![(total / n as f64) as f32], [1]), &device);
    let grads = scale.map(|_| {
        let g = Tensor::<2>::from_data(data, &device); // [N, V]
        HeadGrads {
            h: g.clone().matmul(w.clone().transpose()),
            weight: h.transpose().matmul(g.clone()),
            bias: bias.map(|_| g.sum_dim(0).squeeze_dim::<1>(0)),
        }
    });
    (value, grads)
}

/// [`head_loss_host`] in tensor operations, for devices whose memory the host cannot write
/// (GPUs). The value is `max − log(max softmax) − logit[target]` per row (the log-sum-exp minus
/// the target's logit; never `log 0`), averaged.
fn head_loss_tensor(h: Tensor<2>, w: Tensor<2>, bias: Option<Tensor<1>>, targets: Tensor<1, Int>, track: bool) -> (Tensor<1>, Option<HeadGrads>) {
    let [n, _] = h.dims();
    let mut logits = h.clone().matmul(w.clone()); // [N, V]
    if let Some(b) = &bias {
        logits = logits + b.clone().unsqueeze_dim(0);
    }
    let idx = targets.reshape([n, 1]); // [N, 1]
    let row_max = logits.clone().max_dim(1); // [N, 1]
    let target_logit = logits.clone().gather(1, idx.clone()); // [N, 1]
    let p = softmax(logits, 1); // [N, V]
    // log Σ exp(x − max) = −log(max softmax), and max softmax ≥ 1/V never underflows.
    let lse = row_max - p.clone().max_dim(1).log(); // [N, 1]
    let value = (lse - target_logit).mean(); // [1]
    if !track {
        return (value, None);
    }
    let minus_one = Tensor::<2>::full([n, 1], -1.0, &p.device());
    let g = p.scatter(1, idx, minus_one, IndexingUpdateOp::Add) * (1.0 / n as f32); // [N, V]
    let grads = HeadGrads {
        h: g.clone().matmul(w.transpose()),
        weight: h.transpose().matmul(g.clone()),
        bias: bias.map(|_| g.sum_dim(0).squeeze_dim::<1>(0)),
    };
    (value, Some(grads))
}

/// Whether tensors on `device` live in this process's memory (flex, ndarray), so that the
/// host kernel of [`head_cross_entropy`] can work on them in place.
fn on_host(device: &Device) -> bool {
    let device = device.clone().without_autodiff();
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)] // burn 0.22 deprecates ndarray in favour of flex; kept for comparisons.
    if device == Device::ndarray() {
        return true;
    }
    device == Device::flex()
}

#[cfg(test)]
mod tests;
