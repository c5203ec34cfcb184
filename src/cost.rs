//! Cost accounting from a model configuration: parameters, table bytes and forward FLOPs.
//!
//! Conventions (documented so that every number in a plot can be recomputed by hand):
//! * A multiply-add is 2 FLOPs; a matmul `[n, a] × [a, b]` costs `2·n·a·b`.
//! * Per token, forward: every linear layer `a → b` costs `2·a·b` (QKV, output projection,
//!   SwiGLU, LM head, and Engram's value and key projections).
//! * Causal attention: scores `QKᵀ` and the weighted sum `AV` cost `2·D` FLOPs each per
//!   (query, key) pair; a query at position `t` sees `t + 1` keys, so the average over a window
//!   of `T` is `(T + 1)/2` keys: `4·D·(T + 1)/2 = 2·D·(T + 1)` per token per block.
//! * The Engram short conv costs `2·k·M·D` per token; norms, activations, the gate's dot
//!   product and softmax are element-wise and not counted (they are < 1 % here).
//! * The input-embedding lookup and the Engram gather cost no FLOPs; the gather is counted as
//!   memory traffic: `H · d_head · 4` bytes per token per Engram layer.
//! * `params_backbone` counts every parameter outside the Engram tables: Engram's
//!   projections, norms and conv, and every expert of a mixture of experts included;
//!   `params_table` counts table rows × `d_head`.
//! * Mixture of experts (E routed experts of width F, top-k, S shared): per block the router
//!   `D·E` and `(E + S)·3·D·F` expert parameters; FLOPs per token count the router `2·D·E` and
//!   only the `k + S` activated experts, `2·3·D·F·(k + S)` (the dispatch is sparse, see
//!   [`crate::model::moe`]). `params_activated` is `params_backbone` less the `E − k` routed
//!   experts a token does not use; the table rows a token reads (`H·d_head` per Engram layer)
//!   are not counted as activated, like the rows of the input embedding are.
//! * mHC on `M` streams ([`crate::model::mhc`]), per sublayer (two per block): parameters
//!   `(M² + 2M)(M·D + 1) + 3` (`φ`, `b`, `α`); FLOPs per token the coefficient product
//!   `2·M·D·(M² + 2M)`, the read `Σ pre·X` `2·M·D`, the write `post ⊗ y` `M·D` and the mixing
//!   `combᵀX` `2·M²·D`. The exit head adds `M·(M·D) + M + 1` parameters and `2·M·D·M + 2·M·D`
//!   FLOPs (the sum exit `M·D`). The RMS, sigmoids and Sinkhorn (`20·M²` divisions) are
//!   element-wise and not counted. mHC parameters count as backbone (activated) parameters.
//! * Sparse parameters (`params_sparse`): everything total but not activated, i.e. the idle
//!   routed experts plus the Engram tables — the budget that `exp_allocation` splits.

use serde::{Deserialize, Serialize};

use crate::model::ModelConfig;

/// Parameters, bytes and FLOPs of one model.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Cost {
    /// Dense parameters (everything but the Engram tables).
    pub params_backbone: u64,
    /// Of which in Engram layers (projections, norms, conv).
    pub params_engram_dense: u64,
    /// Engram table parameters (all layers).
    pub params_table: u64,
    /// Bytes of the table weights (f32).
    pub table_bytes: u64,
    /// Rows per Engram layer's table.
    pub table_rows: Vec<u64>,
    /// Forward FLOPs per token at sequence length `seq_len`.
    pub flops_per_token: u64,
    /// Engram gather traffic in bytes per token (all layers).
    pub gather_bytes_per_token: u64,
    /// Routed-expert parameters, all experts of all blocks (0 without a mixture of experts).
    #[serde(default)]
    pub params_experts: u64,
    /// Parameters a token activates: `params_backbone` less the idle routed experts.
    #[serde(default)]
    pub params_activated: u64,
}

impl Cost {
    /// Total parameters (backbone + tables).
    pub fn params_total(&self) -> u64 {
        self.params_backbone + self.params_table
    }

    /// Sparse parameters: total less activated (idle routed experts + tables).
    pub fn params_sparse(&self) -> u64 {
        self.params_total() - self.params_activated
    }
}

/// The cost of `model` at sequence length `seq_len`, with `table_rows[i]` rows in the table of
/// its i-th Engram layer (from the hasher's primes; empty for a baseline).
pub fn cost(model: &ModelConfig, seq_len: usize, table_rows: &[u64]) -> Cost {
    let (v, d, f, l) = (model.vocab_size as u64, model.d_model as u64, model.d_ff as u64, model.n_layers as u64);
    let t = seq_len as u64;
    // Feed-forward per block: (parameters, activated parameters, forward FLOPs per token).
    let (ffn_params, ffn_active, ffn_flops, experts) = match &model.moe {
        None => (3 * d * f, 3 * d * f, 2 * 3 * d * f, 0),
        Some(m) => {
            let (e, k, s) = (m.n_experts as u64, m.top_k as u64, m.n_shared_experts as u64);
            let per_expert = m.expert_params(model.d_model);
            let router = d * e;
            (router + (e + s) * per_expert, router + (k + s) * per_expert, 2 * router + 2 * (k + s) * per_expert, e * per_expert)
        }
    };
    let block_params = 2 * d /* norms */ + 3 * d * d + d * d /* attn */ + ffn_params;
    let mut params = v * d + l * block_params + d + d * v;
    let idle_experts = l * (ffn_params - ffn_active);
    let block_matmul_flops = 2 * 4 * d * d + ffn_flops;
    let attn_flops = 2 * d * (t + 1);
    let mut flops = l * (block_matmul_flops + attn_flops) + 2 * d * v;
    if let Some(h) = &model.mhc {
        let m = h.streams as u64;
        let k = h.coeff_width() as u64;
        params += l * 2 * h.sublayer_params(model.d_model) + h.exit_params(model.d_model);
        flops += l * 2 * (2 * m * d * k + 2 * m * d + m * d + 2 * m * m * d);
        flops += match h.exit {
            crate::model::MhcExit::Head => 2 * m * d * m + 2 * m * d,
            crate::model::MhcExit::Sum => m * d,
        };
    }
    if let Some(bh) = &model.bigram_hash {
        // One row added per token.
        params += bh.rows as u64 * d;
        flops += d;
    }
    let mut engram_dense = 0;
    let mut params_table = 0;
    let mut gather = 0;
    if let Some(e) = &model.engram {
        let (dm, m, k) = (e.d_mem() as u64, e.hc_mult as u64, e.kernel_size as u64);
        let per_layer = (dm * d + d) * (1 + m) /* value + keys, with biases */ + 3 * m * d /* norms */ + m * d * k /* conv */;
        let n = e.layer_ids.len() as u64;
        engram_dense = n * per_layer;
        params += engram_dense;
        let gate = if e.context_gate() { m } else { 0 };
        let conv = if e.short_conv { 2 * k * m * d } else { 0 };
        flops += n * (2 * dm * d * (1 + gate) + conv);
        params_table = table_rows.iter().sum::<u64>() * e.d_head as u64;
        gather = n * e.heads_per_layer() as u64 * e.d_head as u64 * 4;
    }
    Cost {
        params_backbone: params,
        params_engram_dense: engram_dense,
        params_table,
        table_bytes: params_table * 4,
        table_rows: table_rows.to_vec(),
        flops_per_token: flops,
        gather_bytes_per_token: gather,
        params_experts: l * experts,
        params_activated: params - idle_experts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engram::EngramConfig;

    #[test]
    fn baseline_params_match_a_hand_count() {
        // V 100, D 8, F 21, 1 block: embed 800 + norms 16 + attn 256 + mlp 504 + final norm 8 + head 800.
        let mut m = ModelConfig::new(100, 8, 1, 2, 16);
        m.d_ff = 21;
        let c = cost(&m, 16, &[]);
        assert_eq!(c.params_backbone, 800 + 16 + 256 + 504 + 8 + 800);
        assert_eq!(c.params_table, 0);
        // FLOPs: 2·(4·64 + 3·8·21) + 2·8·17 + 2·8·100
        assert_eq!(c.flops_per_token, 2 * (256 + 504) + 2 * 8 * 17 + 1600);
    }

    #[test]
    fn engram_adds_projection_flops_and_table_bytes_not_table_flops() {
        let base = ModelConfig::new(100, 8, 2, 2, 16);
        let e = EngramConfig { layer_ids: vec![0], max_ngram_size: 3, n_head_per_ngram: 2, d_head: 4, ..EngramConfig::default() };
        let with = base.clone().with_engram(e);
        let small = cost(&with, 16, &[1000]);
        let big = cost(&with, 16, &[1_000_000]);
        assert_eq!(small.flops_per_token, big.flops_per_token, "table size costs no FLOPs");
        assert_eq!(big.table_bytes, 1_000_000 * 4 * 4);
        let b = cost(&base, 16, &[]);
        // d_mem = 2·2·4 = 16; value + one key: 2·(2·16·8); conv: 2·4·8.
        assert_eq!(small.flops_per_token - b.flops_per_token, 2 * (2 * 16 * 8) + 2 * 4 * 8);
        assert_eq!(small.gather_bytes_per_token, 4 * 4 * 4);
        assert_eq!(small.params_activated, small.params_backbone, "no experts: everything dense is activated");
        assert_eq!(small.params_sparse(), small.params_table);
    }

    #[test]
    fn mhc_adds_its_coefficients_mixing_and_exit_by_hand() {
        use crate::model::{MhcConfig, MhcExit};
        // V 100, D 8, 1 block, M 2: coefficient width 2² + 2·2 = 8, φ [16, 8].
        let base = ModelConfig::new(100, 8, 1, 2, 16);
        let b = cost(&base, 16, &[]);
        let c = cost(&base.clone().with_mhc(MhcConfig::default().with_streams(2)), 16, &[]);
        // Per sublayer φ 16·8 + b 8 + α 3 = 139, two sublayers; head φ_h 16·2 + b_h 2 + α_h 1 = 35.
        assert_eq!(c.params_backbone - b.params_backbone, 2 * 139 + 35);
        assert_eq!(c.params_activated, c.params_backbone);
        // Per sublayer: coefficients 2·16·8, read 2·16, write 16, mixing 2·4·8; head 2·16·2 + 2·16.
        assert_eq!(c.flops_per_token - b.flops_per_token, 2 * (256 + 32 + 16 + 64) + 64 + 32);
        let s = cost(&base.with_mhc(MhcConfig::default().with_streams(2).with_exit(MhcExit::Sum)), 16, &[]);
        assert_eq!(s.params_backbone - b.params_backbone, 2 * 139);
        assert_eq!(s.flops_per_token - b.flops_per_token, 2 * (256 + 32 + 16 + 64) + 16);
    }

    #[test]
    fn moe_counts_all_experts_as_parameters_and_only_activated_ones_as_flops() {
        use crate::model::MoeConfig;
        // V 100, D 8, 1 block, E 4 experts of width F 5, top-2, 1 shared, T 16.
        let m = ModelConfig::new(100, 8, 1, 2, 16).with_moe(MoeConfig::new(4, 2, 5).with_shared_experts(1));
        let c = cost(&m, 16, &[]);
        // Per expert 3·8·5 = 120; router 8·4 = 32.
        // embed 800 + norms 16 + attn 256 + router 32 + (4 + 1)·120 + final norm 8 + head 800.
        assert_eq!(c.params_backbone, 800 + 16 + 256 + 32 + 600 + 8 + 800);
        assert_eq!(c.params_experts, 4 * 120);
        // Idle: E − k = 2 routed experts.
        assert_eq!(c.params_activated, c.params_backbone - 2 * 120);
        assert_eq!(c.params_sparse(), 240);
        // FLOPs: attention projections 2·4·64, router 2·32, experts 2·(2 + 1)·120,
        // attention scores 2·8·17, head 2·8·100.
        assert_eq!(c.flops_per_token, 2 * 4 * 64 + 2 * 32 + 2 * 3 * 120 + 2 * 8 * 17 + 1600);
        // More experts at the same k add parameters, not FLOPs (beyond the router's 2·D per expert).
        let wide = ModelConfig::new(100, 8, 1, 2, 16).with_moe(MoeConfig::new(8, 2, 5).with_shared_experts(1));
        let w = cost(&wide, 16, &[]);
        assert_eq!(w.flops_per_token - c.flops_per_token, 2 * 8 * 4);
        assert_eq!(w.params_sparse() - c.params_sparse(), 4 * 120);
    }
}
