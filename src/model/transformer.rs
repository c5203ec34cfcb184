//! The decoder-only Transformer: token embedding (repeated on `M` streams with mHC), blocks,
//! stream exit, final RMSNorm, LM head.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::ops::IndexingUpdateOp;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::attention::Rope;
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
}

impl ModelConfig {
    /// SwiGLU width `⌊8/3 · D⌋` (keeps the MLP at the parameter count of a 4·D GELU MLP).
    pub fn swiglu_width(d_model: usize) -> usize {
        8 * d_model / 3
    }

    /// A baseline of the given shape.
    pub fn new(vocab_size: usize, d_model: usize, n_layers: usize, n_heads: usize, max_seq_len: usize) -> Self {
        Self { vocab_size, d_model, n_layers, n_heads, d_ff: Self::swiglu_width(d_model), max_seq_len, engram: None, moe: None, mhc: None }
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
        }
        if let Some(m) = &self.moe {
            m.validate()?;
        }
        if let Some(e) = &self.engram {
            if e.hc_mult != self.streams() {
                let streams = match &self.mhc {
                    Some(h) => format!("model.mhc.streams = {}", h.streams),
                    None => "1, the model's single residual stream (no model.mhc)".to_string(),
                };
                return Err(ConfigError::new("engram.hc_mult", e.hc_mult, format!("the number of residual streams: {streams}")));
            }
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
        let mut x = self.enter(tokens); // [B, T, M, D]
        let mut mem_iter = memories.iter();
        let mut aux_sum: Option<Tensor<1>> = None;
        let mut n_aux = 0usize;
        for block in &self.blocks {
            let mem = if block.engram.is_some() {
                let m = mem_iter.next().expect("one EngramMemory per Engram block (checked by the caller's batcher)");
                if zero_memory { None } else { Some(m.embeddings()) }
            } else {
                None
            };
            let (y, aux) = block.forward_streams(x, mem, &self.rope);
            x = y;
            if let Some(a) = aux {
                n_aux += 1;
                aux_sum = Some(match aux_sum {
                    Some(s) => s + a,
                    None => a,
                });
            }
        }
        (self.exit(x), aux_sum.map(|s| s / n_aux as f32))
    }

    /// The mHC amax gain ([`AmaxGain`]) of the whole stack on `tokens`: the forward pass of
    /// [`Transformer::forward`] keeping every sublayer's `comb`. `None` without mHC.
    pub fn amax_gain(&self, tokens: Tensor<2, Int>, memories: &[EngramMemory]) -> Option<AmaxGain> {
        self.hc_exit.as_ref()?;
        let mut x = self.enter(tokens);
        let mut mems = memories.iter();
        let mut combs = Vec::with_capacity(2 * self.blocks.len());
        for block in &self.blocks {
            if let Some(engram) = &block.engram {
                let mem = mems.next().expect("one EngramMemory per Engram block").embeddings();
                x = x.clone() + engram.forward(x, mem);
            }
            let (hc_attn, hc_ffn) = (block.hc_attn.as_ref()?, block.hc_ffn.as_ref()?);
            let (u, c) = hc_attn.pre_mix(x.clone());
            combs.push(c.comb.clone());
            let y = block.attn.forward(ops::rms_norm_module(&block.norm_attn, u), &self.rope);
            x = hc_attn.post_merge(x, y, c);
            let (u, c) = hc_ffn.pre_mix(x.clone());
            combs.push(c.comb.clone());
            let (y, _) = block.ffn(ops::rms_norm_module(&block.norm_mlp, u));
            x = hc_ffn.post_merge(x, y, c);
        }
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
        let x = self.embed.forward(tokens); // [B, T, D]
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
mod tests {
    use super::*;
    use crate::engram::EngramConfig;
    use burn::module::Param;
    use burn::tensor::{Distribution, TensorData};

    fn engram_cfg() -> EngramConfig {
        EngramConfig { layer_ids: vec![0, 1], max_ngram_size: 3, n_head_per_ngram: 2, d_head: 4, ..EngramConfig::default() }
    }

    fn tokens(ids: &[i32], b: usize, t: usize, device: &Device) -> Tensor<2, Int> {
        Tensor::from_data(TensorData::new(ids.to_vec(), [b, t]), device)
    }

    /// Random memories for the model's Engram layers; `rows[u]` is row u of a U-row table.
    fn memories(model: &Transformer, b: usize, t: usize, ids: &[u32], device: &Device) -> Vec<EngramMemory> {
        let heads = 4;
        (0..model.n_engram_blocks())
            .map(|l| {
                let u = 50;
                let rows: Vec<f32> = (0..u * 4).map(|i| ((i * 31 + l * 7) % 17) as f32 / 17.0 - 0.5).collect();
                // Row ids depend causally on the tokens (a toy hash of the current and previous token).
                let inverse: Vec<u32> = (0..b * t)
                    .flat_map(|p| {
                        let prev = if p % t == 0 { 0 } else { ids[p - 1] };
                        (0..heads as u32).map(move |h| (ids[p] * 3 + prev * 5 + h) % 50)
                    })
                    .collect();
                EngramMemory::upload(rows, 4, &inverse, b, t, heads, device, false)
            })
            .collect()
    }

    #[test]
    fn forward_has_documented_shapes() {
        let device = Device::flex();
        let model = ModelConfig::tiny(37, 16).with_engram(engram_cfg()).init(&device);
        let ids: Vec<u32> = (0..2 * 9).map(|i| (i * 5 % 37) as u32).collect();
        let x = tokens(&ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), 2, 9, &device);
        let logits = model.forward(x, &memories(&model, 2, 9, &ids, &device), false);
        assert_eq!(logits.dims(), [2, 9, 37]);
    }

    #[test]
    fn changing_a_future_token_never_changes_earlier_logits() {
        let device = Device::flex();
        for (engram, mhc) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut cfg = ModelConfig::tiny(37, 16);
            if mhc {
                cfg = cfg.with_mhc(MhcConfig::default());
            }
            if engram {
                cfg = cfg.with_engram(engram_cfg());
            }
            cfg.validate().unwrap();
            let mut model = cfg.init(&device);
            // A non-zero conv, so that the Engram path's causality is exercised too.
            for b in model.blocks.iter_mut() {
                if let Some(e) = b.engram.as_mut() {
                    let shape = e.conv_weight.val().dims();
                    e.conv_weight = Param::from_tensor(Tensor::random(shape, Distribution::Normal(0.0, 0.5), &device));
                }
            }
            let t = 12;
            let a: Vec<u32> = (0..t as u32).map(|i| (i * 7 + 3) % 37).collect();
            for pos in [3usize, 7, 11] {
                let mut b = a.clone();
                b[pos] = (b[pos] + 11) % 37;
                let run = |ids: &[u32]| {
                    let x = tokens(&ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), 1, t, &device);
                    model.forward(x, &memories(&model, 1, t, ids, &device), false)
                };
                let (la, lb) = (run(&a), run(&b));
                let early = |l: Tensor<3>| l.slice([0..1, 0..pos, 0..37]).into_data();
                assert_eq!(early(la.clone()), early(lb.clone()), "logits before {pos} changed");
                let at = |l: Tensor<3>| l.slice([0..1, pos..pos + 1, 0..37]);
                assert!((at(la) - at(lb)).abs().max().into_scalar::<f32>() > 0.0);
            }
        }
    }

    #[test]
    fn at_initialisation_every_mhc_stream_is_the_pre_norm_residual_stream() {
        // MHC_SPEC §3.7 fact 1: the streams enter as identical copies and `post = 1`, so with
        // columns of `comb` summing to 1 every stream stays the plain residual stream, block
        // after block (same backbone weights in both models). The exit then only scales it
        // (the final RMSNorm removes the scale up to its ε).
        // Unit-scale embeddings: the sublayers read `(Σ pre)·h` instead of `h`, the same up to
        // the block RMSNorm's ε, which is ~1 % of a mean square of 0.02² but 1e-5 of 1.
        let device = Device::flex();
        let mut plain = ModelConfig::tiny(37, 16).init(&device);
        plain.embed.weight = Param::from_tensor(Tensor::random([37, 64], Distribution::Normal(0.0, 1.0), &device));
        let ids: Vec<i32> = (0..2 * 12).map(|i| (i * 7 % 37) as i32).collect();
        let x = tokens(&ids, 2, 12, &device);
        let hc = MhcConfig::default();
        let mut model = plain.clone();
        for b in &mut model.blocks {
            b.hc_attn = Some(hc.init_sublayer(64, &device));
            b.hc_ffn = Some(hc.init_sublayer(64, &device));
        }
        model.hc_exit = Some(hc.init_exit(64, &device));
        assert_eq!(model.streams(), 4);
        let (mut h, mut streams) = (plain.embed.forward(x.clone()), model.enter(x.clone()));
        for (p, m) in plain.blocks.iter().zip(&model.blocks) {
            h = p.forward(h, None, &plain.rope);
            streams = m.forward_streams(streams, None, &model.rope).0;
            let scale = h.clone().abs().max().into_scalar::<f32>();
            for k in 0..4 {
                let s = streams.clone().slice([0..2, 0..12, k..k + 1, 0..64]).reshape([2, 12, 64]);
                let diff = (s - h.clone()).abs().max().into_scalar::<f32>();
                assert!(diff <= 1e-4 * scale, "stream {k}: differs by {diff} (scale {scale})");
            }
        }
        // A random post column of φ makes `post` token-dependent: no longer the residual net.
        let mut broken = model.clone();
        let hc_attn = broken.blocks[0].hc_attn.as_mut().unwrap();
        hc_attn.phi = Param::from_tensor(Tensor::random(hc_attn.phi.val().dims(), Distribution::Normal(0.0, 1.0), &device));
        hc_attn.scale = Param::from_tensor(Tensor::ones([3], &device));
        let s = broken.blocks[0].forward_streams(broken.enter(x.clone()), None, &broken.rope).0;
        let h = plain.blocks[0].forward(plain.embed.forward(x), None, &plain.rope);
        let off = (s.slice([0..2, 0..12, 0..1, 0..64]).reshape([2, 12, 64]) - h.clone()).abs().max().into_scalar::<f32>();
        assert!(off > 1e-3 * h.abs().max().into_scalar::<f32>(), "a random post column changed nothing ({off})");
    }

    #[test]
    fn the_amax_gain_is_one_at_initialisation_and_none_without_mhc() {
        let device = Device::flex();
        let ids: Vec<u32> = (0..2 * 9).map(|i| (i * 5 % 37) as u32).collect();
        let x = tokens(&ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), 2, 9, &device);
        let plain = ModelConfig::tiny(37, 16).with_engram(engram_cfg()).init(&device);
        assert!(plain.amax_gain(x.clone(), &memories(&plain, 2, 9, &ids, &device)).is_none());
        let model = ModelConfig::tiny(37, 16).with_mhc(MhcConfig::default()).with_engram(engram_cfg()).init(&device);
        let g = model.amax_gain(x, &memories(&model, 2, 9, &ids, &device)).unwrap();
        // Columns of every comb sum to 1 (to ε), so do those of their product; the rows only
        // converge (Sinkhorn ends on a column pass), to ~1e-5 for the small logits of the init.
        assert!((g.forward_max - 1.0).abs() < 1e-4 && (g.forward_mean - 1.0).abs() < 1e-4, "{g:?}");
        assert!((g.backward_max - 1.0).abs() < 1e-3 && g.backward_mean <= g.backward_max, "{g:?}");
    }

    #[test]
    fn mhc_config_is_optional_checked_and_sets_engrams_streams() {
        let plain = ModelConfig::tiny(37, 16).with_engram(engram_cfg());
        // Without mHC the config file has no `mhc` key: existing runs' files are unchanged.
        assert!(serde_json::to_value(&plain).unwrap().get("mhc").is_none());
        let hc = plain.clone().with_mhc(MhcConfig::default());
        assert_eq!(hc.engram.as_ref().unwrap().hc_mult, 4);
        hc.validate().unwrap();
        let back: ModelConfig = serde_json::from_value(serde_json::to_value(&hc).unwrap()).unwrap();
        assert_eq!(back, hc);
        let mut bad = hc.clone();
        bad.engram.as_mut().unwrap().hc_mult = 1;
        let e = bad.validate().unwrap_err();
        assert_eq!(e.field, "engram.hc_mult");
        assert!(e.allowed.contains("model.mhc.streams = 4"), "{e}");
        let mut bad = hc;
        bad.mhc.as_mut().unwrap().streams = 0;
        assert_eq!(bad.validate().unwrap_err().field, "model.mhc.streams");
    }

    #[test]
    fn zero_value_projection_gives_the_baseline_logits() {
        let device = Device::flex();
        let mut model = ModelConfig::tiny(37, 16).with_engram(engram_cfg()).init(&device);
        for b in model.blocks.iter_mut() {
            if let Some(e) = b.engram.as_mut() {
                e.value.weight = Param::from_tensor(e.value.weight.val().zeros_like());
                let bias = e.value.bias.take().expect("the value projection has a bias, as in the demo");
                e.value.bias = Some(Param::from_tensor(bias.val().zeros_like()));
            }
        }
        let ids: Vec<u32> = (0..2 * 10).map(|i| (i * 13 % 37) as u32).collect();
        let x = tokens(&ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), 2, 10, &device);
        let mems = memories(&model, 2, 10, &ids, &device);
        let with = model.forward(x.clone(), &mems, false).into_data();
        let baseline = model.without_engram();
        let without = baseline.forward(x, &[], false).into_data();
        assert_eq!(with, without);
    }

    #[test]
    fn zero_memory_evaluation_equals_the_baseline_it_extends() {
        let device = Device::flex();
        let model = ModelConfig::tiny(37, 16).with_engram(engram_cfg()).init(&device);
        let ids: Vec<u32> = (0..8).map(|i| (i * 3 % 37) as u32).collect();
        let x = tokens(&ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), 1, 8, &device);
        let mems = memories(&model, 1, 8, &ids, &device);
        let off = model.forward(x.clone(), &mems, true).into_data();
        let base = model.without_engram().forward(x, &[], false).into_data();
        assert_eq!(off, base);
    }

    fn moe_cfg() -> MoeConfig {
        MoeConfig::new(4, 2, 16).with_shared_experts(1)
    }

    #[test]
    fn moe_model_is_causal_and_returns_its_aux_loss() {
        let device = Device::flex();
        for engram in [None, Some(engram_cfg())] {
            let mut cfg = ModelConfig::tiny(37, 16).with_moe(moe_cfg());
            cfg.engram = engram;
            let model = cfg.init(&device);
            assert!(model.blocks.iter().all(|b| b.moe.is_some() && b.mlp.is_none()));
            let t = 12;
            let a: Vec<u32> = (0..t as u32).map(|i| (i * 7 + 3) % 37).collect();
            let run = |ids: &[u32]| {
                let x = tokens(&ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), 1, t, &device);
                model.forward_with_aux(x, &memories(&model, 1, t, ids, &device), false)
            };
            let (la, aux) = run(&a);
            let aux = aux.expect("an MoE model returns its load-balancing loss").into_scalar::<f32>();
            assert!((1.0..=2.0 + 1e-4).contains(&aux), "aux {aux} outside [1, E/k]");
            for pos in [2usize, 6, 11] {
                let mut b = a.clone();
                b[pos] = (b[pos] + 11) % 37;
                let (lb, _) = run(&b);
                let early = |l: Tensor<3>| l.slice([0..1, 0..pos, 0..37]).into_data();
                assert_eq!(early(la.clone()), early(lb.clone()), "logits before {pos} changed");
                let at = |l: Tensor<3>| l.slice([0..1, pos..pos + 1, 0..37]);
                assert!((at(la.clone()) - at(lb)).abs().max().into_scalar::<f32>() > 0.0);
            }
        }
    }

    #[test]
    fn dense_model_has_no_aux_loss_and_forward_equals_forward_with_aux() {
        let device = Device::flex();
        let model = ModelConfig::tiny(37, 16).init(&device);
        let x = tokens(&[1, 2, 3, 4, 5, 6], 1, 6, &device);
        let (logits, aux) = model.forward_with_aux(x.clone(), &[], false);
        assert!(aux.is_none());
        assert_eq!(logits.into_data(), model.forward(x, &[], false).into_data());
    }

    #[test]
    fn moe_config_round_trips_and_old_configs_still_load() {
        let cfg = ModelConfig::tiny(37, 16).with_moe(moe_cfg());
        let back: ModelConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        let old = r#"{"vocab_size": 10, "d_model": 8, "n_layers": 1, "n_heads": 2, "d_ff": 21, "max_seq_len": 8}"#;
        let old: ModelConfig = serde_json::from_str(old).expect("a config without `moe` is a dense model");
        assert_eq!(old.moe, None);
        let bad = ModelConfig::tiny(10, 8).with_moe(MoeConfig::new(2, 3, 8));
        assert!(bad.validate().unwrap_err().to_string().contains("moe.top_k"));
    }

    /// Largest |a − b| relative to the largest |b|.
    fn rel_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
        let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-12);
        (a - b).abs().max().into_scalar::<f32>() / scale
    }

    #[test]
    fn fused_head_loss_has_the_value_and_gradients_of_log_softmax_cross_entropy() {
        let device = Device::flex().autodiff();
        for bias in [false, true] {
            let (n, d, v): (usize, usize, usize) = (12, 8, 37);
            let h = Tensor::<2>::random([n, d], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let w = Tensor::<2>::random([d, v], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let bv = bias.then(|| Tensor::<1>::random([v], Distribution::Normal(0.0, 1.0), &device).require_grad());
            let ids: Vec<i32> = (0..n as i32).map(|i| (i * 7 + 3) % v as i32).collect();
            let y = Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), &device);

            let mut logits = h.clone().matmul(w.clone());
            if let Some(b) = &bv {
                logits = logits + b.clone().unsqueeze_dim(0);
            }
            let reference = cross_entropy(logits.reshape([1, n, v]), y.clone().reshape([1, n]));
            let fused = head_cross_entropy(h.clone(), w.clone(), bv.clone(), y);
            let (rv, fv) = (reference.clone().into_scalar::<f32>(), fused.clone().into_scalar::<f32>());
            assert!((rv - fv).abs() <= 1e-5 * rv.abs(), "loss {fv} vs {rv}");

            let (gr, gf) = (reference.backward(), fused.backward());
            assert!(rel_diff(h.grad(&gf).unwrap(), h.grad(&gr).unwrap()) < 1e-5, "dL/dh");
            assert!(rel_diff(w.grad(&gf).unwrap(), w.grad(&gr).unwrap()) < 1e-5, "dL/dW");
            if let Some(b) = &bv {
                let (a, r) = (b.grad(&gf).unwrap().unsqueeze_dim(0), b.grad(&gr).unwrap().unsqueeze_dim(0));
                assert!(rel_diff(a, r) < 1e-5, "dL/dbias");
            }
        }
    }

    /// The host path and the tensor-operation path (used on GPUs) give the same loss and
    /// gradients.
    #[test]
    fn host_and_tensor_head_loss_paths_agree() {
        let device = Device::flex();
        let (n, d, v): (usize, usize, usize) = (300, 6, 53);
        let h = Tensor::<2>::random([n, d], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<2>::random([d, v], Distribution::Normal(0.0, 1.0), &device);
        let bias = Tensor::<1>::random([v], Distribution::Normal(0.0, 1.0), &device);
        let ids: Vec<i32> = (0..n as i32).map(|i| (i * 11 + 5) % v as i32).collect();
        let y = Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), &device);
        assert!(on_host(&device) && on_host(&device.clone().autodiff()));
        for (with_bias, track) in [(false, false), (false, true), (true, true)] {
            let b = with_bias.then(|| bias.clone());
            let (hv, hg) = head_loss_host(h.clone(), w.clone(), b.clone(), y.clone(), track);
            let (tv, tg) = head_loss_tensor(h.clone(), w.clone(), b, y.clone(), track);
            let (hv, tv) = (hv.into_scalar::<f32>(), tv.into_scalar::<f32>());
            assert!((hv - tv).abs() <= 1e-5 * tv.abs(), "loss {hv} vs {tv}");
            assert_eq!(hg.is_some(), track);
            assert_eq!(tg.is_some(), track);
            if let (Some(hg), Some(tg)) = (hg, tg) {
                assert!(rel_diff(hg.h, tg.h) < 1e-5, "dL/dh differs");
                assert!(rel_diff(hg.weight, tg.weight) < 1e-5, "dL/dW differs");
                assert_eq!(hg.bias.is_some(), with_bias);
                if let (Some(a), Some(b)) = (hg.bias, tg.bias) {
                    assert!(rel_diff(a.unsqueeze_dim(0), b.unsqueeze_dim(0)) < 1e-5, "dL/dbias differs");
                }
            }
        }
    }

    #[test]
    fn fused_head_loss_stays_finite_when_the_target_probability_underflows() {
        // Target logit 200 below the row maximum: softmax(target) is 0 in f32, the loss is 200.
        let device = Device::flex();
        let h = Tensor::<2>::from_data(TensorData::new(vec![1.0f32], [1, 1]), &device);
        let w = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 200.0, 0.0], [1, 3]), &device);
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i32], [1]), &device);
        let loss = head_cross_entropy(h, w, None, y).into_scalar::<f32>();
        assert!((loss - 200.0).abs() < 1e-3, "{loss}");
    }

    #[test]
    fn model_loss_matches_the_unfused_loss_and_its_gradients() {
        let device = Device::flex().autodiff();
        let model = ModelConfig::tiny(37, 16).with_engram(engram_cfg()).init(&device);
        let ids: Vec<u32> = (0..2 * 9).map(|i| (i * 5 % 37) as u32).collect();
        let x = tokens(&ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), 2, 9, &device);
        let y = tokens(&ids.iter().map(|&i| ((i * 3 + 1) % 37) as i32).collect::<Vec<_>>(), 2, 9, &device);
        let mems = memories(&model, 2, 9, &ids, &device);
        let reference = cross_entropy(model.forward(x.clone(), &mems, false), y.clone());
        let (fused, _) = model.loss_with_aux(x, y, &mems, false);
        let (rv, fv) = (reference.clone().into_scalar::<f32>(), fused.clone().into_scalar::<f32>());
        assert!((rv - fv).abs() <= 1e-5 * rv.abs(), "loss {fv} vs {rv}");
        let (gr, gf) = (reference.backward(), fused.backward());
        let ew = model.embed.weight.val();
        assert!(rel_diff(ew.grad(&gf).unwrap(), ew.grad(&gr).unwrap()) < 1e-4, "embedding gradient");
        let hw = model.head.weight.val();
        assert!(rel_diff(hw.grad(&gf).unwrap(), hw.grad(&gr).unwrap()) < 1e-5, "head gradient");
    }

    #[test]
    fn config_validation_names_the_field() {
        let mut c = ModelConfig::tiny(10, 8);
        c.n_heads = 3;
        assert!(c.validate().unwrap_err().to_string().contains("model.d_model"));
        let c = ModelConfig::tiny(10, 8).with_engram(EngramConfig { layer_ids: vec![2], ..EngramConfig::default() });
        assert!(c.validate().unwrap_err().to_string().contains("engram.layer_ids"));
    }
}
