//! Incremental decoding: prefill a prompt once, then one position at a time with a key/value
//! cache per block and the short conv's state per Engram layer, instead of a full forward pass
//! over the whole sequence for every new token.
//!
//! [`Transformer::prefill`] runs the ordinary forward pass over the prompt (so its logits are
//! those of [`Transformer::forward`]) and keeps, per block, the rotated keys and the values of
//! every position, and per Engram layer the last `(kernel − 1)·dilation` inputs of its short
//! conv. [`Transformer::decode_step`] then takes the next token and its Engram memory (the rows
//! of its n-grams, hashed from the last tokens by the caller: see [`crate::generate`]) and
//! returns its logits, attending to the cache. The logits equal those of one forward pass over
//! the whole sequence up to float rounding (tested to 1e-4 relative on flex). On `M` mHC
//! streams nothing more is kept: the mHC coefficients are per token, so a step computes its
//! own from its streams.

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Int, Tensor};

use super::attention::{CausalSelfAttention, Rope};
use super::block::Block;
use super::transformer::Transformer;
use crate::engram::{Engram, EngramMemory};
use crate::ops::{self, linear_tokens, linear_tokens_columns, rms_norm_module};

/// What decoding keeps between positions.
#[derive(Clone, Debug)]
pub struct DecodeState {
    /// Positions seen so far (the next token's position).
    pub len: usize,
    /// Per block: keys (RoPE applied) and values `[B, H, len, d_head]`, and for an Engram block
    /// the short conv's last inputs `[B, (kernel − 1)·dilation, M·D]`.
    blocks: Vec<BlockCache>,
    /// The last token seen `[B, 1]`, which the next one's BigramHash row depends on.
    last: Tensor<2, Int>,
}

#[derive(Clone, Debug)]
struct BlockCache {
    k: Tensor<4>,
    v: Tensor<4>,
    conv: Option<Tensor<3>>,
}

impl Engram {
    /// Inputs of the short conv a decoding step needs from before it: `(kernel − 1)·dilation`.
    pub fn conv_history(&self) -> usize {
        if self.short_conv {
            (self.conv_weight.dims()[1] - 1) * self.dilation
        } else {
            0
        }
    }

    /// The output for the whole sequence `hidden` (as [`Engram::forward`]) and the short conv's
    /// state after it: its last [`Engram::conv_history`] inputs (zeros before the sequence).
    ///
    /// # Shapes
    /// - `hidden`: `[B, T, M, D]`, `memory`: `[B, T, d_mem]` → `[B, T, M, D]`, state
    ///   `[B, (kernel − 1)·dilation, M·D]`
    pub fn forward_prefill(&self, hidden: Tensor<4>, memory: Tensor<3>) -> (Tensor<4>, Tensor<3>) {
        let [b, t, m, d] = hidden.dims();
        let y = self.forward(hidden.clone(), memory.clone());
        let keep = self.conv_history();
        let device = hidden.device();
        if keep == 0 {
            return (y, Tensor::zeros([b, 0, m * d], &device));
        }
        let x = self.conv_input(self.gated_value(hidden, memory)); // [B, T, M·D]
        let state = if t >= keep {
            x.slice([0..b, t - keep..t, 0..m * d])
        } else {
            Tensor::cat(vec![Tensor::zeros([b, keep - t, m * d], &device), x], 1)
        };
        (y, state)
    }

    /// The output at one new position, given the short conv's `state` (its last
    /// [`Engram::conv_history`] inputs, from [`Engram::forward_prefill`] or the previous step),
    /// which moves on by one position.
    ///
    /// # Shapes
    /// - `hidden`: `[B, 1, M, D]`, `memory`: `[B, 1, d_mem]` → `[B, 1, M, D]`
    pub fn forward_step(&self, hidden: Tensor<4>, memory: Tensor<3>, state: &mut Tensor<3>) -> Tensor<4> {
        let [b, _, m, d] = hidden.dims();
        let v_tilde = self.gated_value(hidden, memory);
        let keep = self.conv_history();
        if !self.short_conv {
            return v_tilde;
        }
        let window = Tensor::cat(vec![state.clone(), self.conv_input(v_tilde.clone())], 1); // [B, keep + 1, M·D]
        let y = ops::causal_conv_silu(window.clone(), self.conv_weight.val(), self.dilation).slice([0..b, keep..keep + 1, 0..m * d]);
        *state = window.slice([0..b, 1..keep + 1, 0..m * d]);
        v_tilde + y.reshape([b, 1, m, d])
    }
}

impl CausalSelfAttention {
    /// Queries, keys (both rotated for positions `pos..pos + T`) and values of `x`.
    ///
    /// # Shapes
    /// - `x`: `[B, T, D]` → 3 × `[B, H, T, d_head]`
    fn qkv_at(&self, x: Tensor<3>, rope: &Rope, pos: usize) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let [b, t, d] = x.dims();
        let (h, dh) = (self.n_heads, d / self.n_heads);
        let part = |i: usize| linear_tokens_columns(&self.qkv, x.clone(), i * d..(i + 1) * d).reshape([b, t, h, dh]).swap_dims(1, 2);
        let half = rope.cos.dims()[1];
        let (cos, sin) = (rope.cos.clone().slice([pos..pos + t, 0..half]), rope.sin.clone().slice([pos..pos + t, 0..half]));
        (ops::rope_rotate(part(0), &cos, &sin), ops::rope_rotate(part(1), &cos, &sin), part(2))
    }
}

impl Block {
    /// [`Block::forward_streams`] over a whole prompt, and the block's cache after it.
    fn prefill(&self, x: Tensor<4>, memory: Option<Tensor<3>>, rope: &Rope) -> (Tensor<4>, BlockCache) {
        let (x, conv) = match (&self.engram, memory) {
            (Some(engram), Some(mem)) => {
                let (y, state) = engram.forward_prefill(x.clone(), mem);
                (x + y, Some(state))
            }
            _ => (x, None),
        };
        let (x, (k, v)) = self.residual(self.hc_attn.as_ref(), x, None, |u| {
            let normed = rms_norm_module(&self.norm_attn, u);
            let (_, k, v) = self.attn.qkv_at(normed.clone(), rope, 0);
            (self.attn.forward(normed, rope), (k, v))
        });
        let (x, _) = self.residual(self.hc_ffn.as_ref(), x, None, |u| self.ffn(rms_norm_module(&self.norm_mlp, u)));
        (x, BlockCache { k, v, conv })
    }

    /// One new position `pos` of the block, with its cache (which grows by one).
    fn step(&self, x: Tensor<4>, memory: Option<Tensor<3>>, rope: &Rope, cache: &mut BlockCache, pos: usize) -> Tensor<4> {
        let x = match (&self.engram, memory, cache.conv.as_mut()) {
            (Some(engram), Some(mem), Some(state)) => x.clone() + engram.forward_step(x, mem, state),
            _ => x,
        };
        let (x, ()) = self.residual(self.hc_attn.as_ref(), x, None, |u| {
            let [b, _, d] = u.dims();
            let (q, k, v) = self.attn.qkv_at(rms_norm_module(&self.norm_attn, u), rope, pos);
            cache.k = Tensor::cat(vec![cache.k.clone(), k], 2);
            cache.v = Tensor::cat(vec![cache.v.clone(), v], 2);
            // One query sees every cached position: no mask.
            let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: false };
            let y = attention(q, cache.k.clone(), cache.v.clone(), None, None, options); // [B, H, 1, dh]
            (linear_tokens(&self.attn.proj, y.swap_dims(1, 2).reshape([b, 1, d])), ())
        });
        self.residual(self.hc_ffn.as_ref(), x, None, |u| self.ffn(rms_norm_module(&self.norm_mlp, u))).0
    }
}

impl Transformer {
    /// Logits of every position of the prompt `tokens` (as [`Transformer::forward`]) and the
    /// state to decode on from. `memories`: one per Engram block, as for `forward`.
    ///
    /// # Shapes
    /// - `tokens`: `[B, T]`, `1 ≤ T ≤ max_seq_len` → logits `[B, T, V]`
    pub fn prefill(&self, tokens: Tensor<2, Int>, memories: &[EngramMemory]) -> (Tensor<3>, DecodeState) {
        let [b, t] = tokens.dims();
        let last = tokens.clone().slice([0..b, t - 1..t]);
        let mut x = self.enter(tokens);
        let mut mems = memories.iter();
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let mem = block.engram.as_ref().map(|_| mems.next().expect("one EngramMemory per Engram block").embeddings());
            let (y, cache) = block.prefill(x, mem, &self.rope);
            x = y;
            blocks.push(cache);
        }
        (linear_tokens(&self.head, self.exit(x)), DecodeState { len: t, blocks, last })
    }

    /// Logits of the next token `token` at position `state.len`, which then advances; `memories`
    /// holds each Engram block's memory at that position (`[B, 1, d_mem]`, in block order).
    /// The position must be below `max_seq_len` (the RoPE tables' length).
    ///
    /// # Shapes
    /// - `token`: `[B, 1]` → logits `[B, 1, V]`
    pub fn decode_step(&self, token: Tensor<2, Int>, memories: &[Tensor<3>], state: &mut DecodeState) -> Tensor<3> {
        let pos = state.len;
        assert!(pos < self.rope.cos.dims()[0], "position {pos} is past the model's context ({})", self.rope.cos.dims()[0]);
        let mut x = self.enter_after(token.clone(), Some(std::mem::replace(&mut state.last, token)));
        let mut mems = memories.iter();
        for (block, cache) in self.blocks.iter().zip(&mut state.blocks) {
            let mem = block.engram.as_ref().map(|_| mems.next().expect("one memory per Engram block").clone());
            x = block.step(x, mem, &self.rope, cache, pos);
        }
        state.len += 1;
        linear_tokens(&self.head, self.exit(x))
    }
}
