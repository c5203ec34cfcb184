//! Causal multi-head self-attention with rotary position embeddings (RoPE).
//!
//! RoPE in the half-split form of GPT-NeoX / LLaMA (`x = [x1, x2]`, rotate pairs
//! `(x1_i, x2_i)`), base 10,000. burn's `RotaryEncoding` rotates interleaved pairs through a
//! matmul; this element-wise form is cheaper on the CPU and equally standard.

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor, TensorData};

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
        let half = d_head / 2;
        let mut cos = Vec::with_capacity(max_seq_len * half);
        let mut sin = Vec::with_capacity(max_seq_len * half);
        for pos in 0..max_seq_len {
            for i in 0..half {
                let freq = theta.powf(-(2.0 * i as f64) / d_head as f64);
                let a = pos as f64 * freq;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [max_seq_len, half]), device),
            sin: Tensor::from_data(TensorData::new(sin, [max_seq_len, half]), device),
        }
    }

    /// Rotate queries or keys.
    ///
    /// # Shapes
    /// - `x`: `[B, H, T, d_head]` → `[B, H, T, d_head]`
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, t, d] = x.dims();
        let half = d / 2;
        let cos = self.cos.clone().slice([0..t, 0..half]).unsqueeze::<4>(); // [1, 1, T, d/2]
        let sin = self.sin.clone().slice([0..t, 0..half]).unsqueeze::<4>();
        let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..half]);
        let x2 = x.slice([0..b, 0..h, 0..t, half..d]);
        let r1 = x1.clone() * cos.clone() - x2.clone() * sin.clone();
        let r2 = x2 * cos + x1 * sin;
        Tensor::cat(vec![r1, r2], 3)
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
        if super::fused::enabled(&x.device()) {
            // One projection, then the fused kernel (RoPE, causal softmax; see `fused`).
            let y = super::fused::causal_attention(super::linear_tokens(&self.qkv, x), rope, h);
            return super::linear_tokens(&self.proj, y);
        }
        let dh = d / h;
        // Columns [i·D, (i+1)·D) of the fused projection: query, key, value.
        let part = |i: usize| super::linear_tokens_columns(&self.qkv, x.clone(), i * d..(i + 1) * d).reshape([b, t, h, dh]).swap_dims(1, 2); // [B, H, T, dh]
        let q = rope.apply(part(0));
        let k = rope.apply(part(1));
        let v = part(2);
        let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
        let y = attention(q, k, v, None, None, options); // [B, H, T, dh]
        super::linear_tokens(&self.proj, y.swap_dims(1, 2).reshape([b, t, d]))
    }
}
