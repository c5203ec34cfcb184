//! Causal multi-head self-attention with rotary position embeddings (RoPE).
//!
//! RoPE in the half-split form of GPT-NeoX / LLaMA (`x = [x1, x2]`, rotate pairs
//! `(x1_i, x2_i)`), base 10,000. burn's `RotaryEncoding` rotates interleaved pairs through a
//! matmul; this element-wise form is cheaper on the CPU and equally standard. The tables, the
//! rotation and the fused attention kernel are in [`crate::ops::attention`].

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor};

use crate::ops::{self, linear_tokens, linear_tokens_columns, rope_rotate, rope_tables};

/// Precomputed RoPE tables for positions `0..max_seq_len`.
#[derive(Module, Debug)]
pub struct Rope {
    /// `cos(pos · θ_i)`, `[max_seq_len, d_head / 2]`.
    pub cos: Tensor<2>,
    /// `sin(pos · θ_i)`, `[max_seq_len, d_head / 2]`.
    pub sin: Tensor<2>,
}

impl Rope {
    /// Tables for heads of width `d_head` (even) and base `theta`.
    pub fn new(max_seq_len: usize, d_head: usize, theta: f64, device: &Device) -> Self {
        let (cos, sin) = rope_tables(max_seq_len, d_head, theta, device);
        Self { cos, sin }
    }

    /// Rotate queries or keys.
    ///
    /// # Shapes
    /// - `x`: `[B, H, T, d_head]` → `[B, H, T, d_head]`
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        rope_rotate(x, &self.cos, &self.sin)
    }
}

/// Causal self-attention: fused QKV projection, RoPE, scaled dot-product attention, output
/// projection; no biases.
#[derive(Module, Debug)]
pub struct CausalSelfAttention {
    /// `D → 3D` (queries, keys, values).
    pub qkv: Linear,
    /// `D → D`.
    pub proj: Linear,
    /// Number of heads.
    #[module(skip)]
    pub n_heads: usize,
}

impl CausalSelfAttention {
    /// A layer of width `d_model` with `n_heads` heads; weights N(0, `std`), output projection
    /// N(0, `proj_std`).
    pub fn new(d_model: usize, n_heads: usize, std: f64, proj_std: f64, device: &Device) -> Self {
        Self {
            qkv: LinearConfig::new(d_model, 3 * d_model)
                .with_bias(false)
                .with_initializer(Initializer::Normal { mean: 0.0, std })
                .init(device),
            proj: LinearConfig::new(d_model, d_model)
                .with_bias(false)
                .with_initializer(Initializer::Normal { mean: 0.0, std: proj_std })
                .init(device),
            n_heads,
        }
    }

    /// # Shapes
    /// - `x`: `[B, T, D]` → `[B, T, D]`
    pub fn forward(&self, x: Tensor<3>, rope: &Rope) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let h = self.n_heads;
        if ops::enabled(&x.device()) {
            // One projection, then the fused kernel (RoPE, causal softmax; see `ops::attention`).
            let y = ops::causal_attention(linear_tokens(&self.qkv, x), &rope.cos, &rope.sin, h);
            return linear_tokens(&self.proj, y);
        }
        let dh = d / h;
        // Columns [i·D, (i+1)·D) of the fused projection: query, key, value.
        let part = |i: usize| linear_tokens_columns(&self.qkv, x.clone(), i * d..(i + 1) * d).reshape([b, t, h, dh]).swap_dims(1, 2); // [B, H, T, dh]
        let q = rope.apply(part(0));
        let k = rope.apply(part(1));
        let v = part(2);
        let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
        let y = attention(q, k, v, None, None, options); // [B, H, T, dh]
        linear_tokens(&self.proj, y.swap_dims(1, 2).reshape([b, t, d]))
    }
}
