//! Mixture-of-experts feed-forward: `E` routed SwiGLU experts with top-k routing, optional
//! shared experts, and a load-balancing auxiliary loss.
//!
//! Papers: Switch Transformer (Fedus et al., JMLR 2022, arXiv 2101.03961) for the auxiliary
//! loss; DeepSeekMoE (Dai et al., arXiv 2401.06066) for shared experts next to fine-grained
//! routed ones — the MoE that the Engram paper (spec §7) trades sparse parameters against.
//! Reference for the routing: Mixtral's sparse MoE block (softmax over the router logits, top-k,
//! the k weights renormalised to sum to 1).
//!
//! Per token `x` (after the block's RMSNorm):
//! `p = softmax(W_r x)` (`E` probabilities); `S` = the `k` experts of largest `p`;
//! `g_i = p_i / Σ_{j∈S} p_j` for `i ∈ S`; `y = Σ_{i∈S} g_i · FFN_i(x) + FFN_shared(x)`.
//!
//! Load balance (Switch §2.2, generalised to top-k as in DeepSeekMoE §4.1):
//! `aux = E · Σ_i f_i · P_i`, with `f_i` the fraction of the batch's `N·k` (token, slot)
//! assignments routed to expert `i` (a constant: no gradient through the selection) and `P_i`
//! the mean router probability of expert `i` over the `N` tokens. `aux = 1` when the router
//! is uniform and grows up to `E / k` when every token goes to the same experts.
//!
//! # Compute
//! Dispatch is sparse on every backend: the `[N, k]` expert ids are read back to the host,
//! assignments are sorted by expert, each expert runs on its own tokens only (one gather in),
//! and one gather out restores token order. FLOPs per token are therefore those of the `k`
//! activated experts plus the router ([`crate::cost`]). The price is one device → host read of
//! `N·k` ids per MoE layer and forward pass. [`Moe::forward_dense`] computes every expert on
//! every token and masks with the top-k gates; it is kept as the reference a test compares
//! the sparse dispatch against.
//!
//! # Deviations
//! * `S` shared experts of width `F` are stored fused as one SwiGLU of width `S·F` (the same
//!   function: a SwiGLU is a sum over its hidden units).
//! * DeepSeek-V3's auxiliary-loss-free balancing (per-expert routing biases) and its sigmoid
//!   scores are not implemented; this is the softmax router with the auxiliary loss.

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::ops::IndexingUpdateOp;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::mlp::SwiGluMlp;
use crate::ConfigError;

/// Default weight of the load-balancing loss in the training loss (Switch Transformer: 0.01).
pub const DEFAULT_AUX_LOSS_COEF: f64 = 0.01;

fn default_aux_loss_coef() -> f64 {
    DEFAULT_AUX_LOSS_COEF
}

/// A mixture-of-experts feed-forward, used in every block instead of the SwiGLU MLP.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MoeConfig {
    /// Routed experts E.
    pub n_experts: usize,
    /// Experts activated per token k (1 ≤ k ≤ E).
    pub top_k: usize,
    /// Hidden width F of each expert (routed and shared).
    pub d_expert: usize,
    /// Shared experts S, always active (DeepSeekMoE); 0 for none.
    #[serde(default)]
    pub n_shared_experts: usize,
    /// Weight of the load-balancing loss in the training loss.
    #[serde(default = "default_aux_loss_coef")]
    pub aux_loss_coef: f64,
}

impl MoeConfig {
    /// `n_experts` routed experts of width `d_expert`, `top_k` active, no shared expert, the
    /// default auxiliary-loss weight.
    pub fn new(n_experts: usize, top_k: usize, d_expert: usize) -> Self {
        Self { n_experts, top_k, d_expert, n_shared_experts: 0, aux_loss_coef: DEFAULT_AUX_LOSS_COEF }
    }

    /// The same with `n` shared experts.
    pub fn with_shared_experts(mut self, n: usize) -> Self {
        self.n_shared_experts = n;
        self
    }

    /// Check every field; the error names the field, its value and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.n_experts < 1 {
            return Err(ConfigError::new("moe.n_experts", self.n_experts, ">= 1"));
        }
        if self.top_k < 1 || self.top_k > self.n_experts {
            return Err(ConfigError::new("moe.top_k", self.top_k, format!("1 <= top_k <= moe.n_experts = {}", self.n_experts)));
        }
        if self.d_expert < 1 {
            return Err(ConfigError::new("moe.d_expert", self.d_expert, ">= 1"));
        }
        if !(self.aux_loss_coef.is_finite() && self.aux_loss_coef >= 0.0) {
            return Err(ConfigError::new("moe.aux_loss_coef", self.aux_loss_coef, "a finite number >= 0"));
        }
        Ok(())
    }

    /// Parameters of one routed expert: `3·D·F` (gate, up and down projections).
    pub fn expert_params(&self, d_model: usize) -> u64 {
        3 * d_model as u64 * self.d_expert as u64
    }

    /// Build the layer for width `d_model`: router N(0, `std`), experts as [`SwiGluMlp::new`].
    pub fn init(&self, d_model: usize, std: f64, proj_std: f64, device: &Device) -> Moe {
        Moe {
            router: LinearConfig::new(d_model, self.n_experts)
                .with_bias(false)
                .with_initializer(Initializer::Normal { mean: 0.0, std })
                .init(device),
            experts: (0..self.n_experts).map(|_| SwiGluMlp::new(d_model, self.d_expert, std, proj_std, device)).collect(),
            shared: (self.n_shared_experts > 0)
                .then(|| SwiGluMlp::new(d_model, self.n_shared_experts * self.d_expert, std, proj_std, device)),
            top_k: self.top_k,
        }
    }
}

/// The routing of one batch.
#[derive(Clone, Debug)]
pub struct Routing {
    /// Router probabilities `[N, E]`.
    pub probs: Tensor<2>,
    /// Renormalised weights of the selected experts `[N, k]` (each row sums to 1).
    pub gates: Tensor<2>,
    /// Selected expert of every (token, slot), row-major `[N][k]`, on the host.
    pub experts: Vec<usize>,
    /// Assignments per expert (sums to `N·k`).
    pub counts: Vec<usize>,
}

/// Mixture-of-experts feed-forward layer (see the module docs).
#[derive(Module, Debug)]
pub struct Moe {
    /// Router `D → E`, no bias.
    pub router: Linear,
    /// Routed experts.
    pub experts: Vec<SwiGluMlp>,
    /// Shared experts, fused into one SwiGLU of width `S·F`; `None` when `S = 0`.
    pub shared: Option<SwiGluMlp>,
    /// Experts per token k.
    #[module(skip)]
    pub top_k: usize,
}

impl Moe {
    /// Route tokens: router probabilities, the top-k experts of each token and their
    /// renormalised weights.
    ///
    /// # Shapes
    /// - `x`: `[N, D]` → probs `[N, E]`, gates `[N, k]`, experts `N·k` ids
    pub fn route(&self, x: Tensor<2>) -> Routing {
        let n_experts = self.experts.len();
        let k = self.top_k;
        let probs = softmax(self.router.forward(x), 1); // [N, E]
        // The selection carries no gradient; the weights get theirs through the gather.
        let (_, top) = probs.clone().detach().topk_with_indices(k, 1); // [N, k]
        let picked = probs.clone().gather(1, top.clone()); // [N, k]
        let gates = picked.clone() / picked.sum_dim(1); // [N, k]
        let experts: Vec<usize> = top.into_data().iter::<i64>().map(|e| e as usize).collect();
        let mut counts = vec![0usize; n_experts];
        for &e in &experts {
            counts[e] += 1;
        }
        Routing { probs, gates, experts, counts }
    }

    /// The load-balancing loss `E · Σ_i f_i · P_i` of a routing.
    ///
    /// # Shapes
    /// - output: `[1]`
    pub fn aux_loss(routing: &Routing) -> Tensor<1> {
        let n_experts = routing.counts.len();
        let total = routing.experts.len().max(1) as f32;
        let device = routing.probs.device();
        let f: Vec<f32> = routing.counts.iter().map(|&c| c as f32 / total).collect();
        let f = Tensor::<1>::from_data(TensorData::new(f, [n_experts]), &device); // [E]
        let p = routing.probs.clone().mean_dim(0).reshape([n_experts]); // [E]
        (p * f).sum() * n_experts as f32
    }

    /// Output and load-balancing loss, with sparse dispatch (each expert computes only the
    /// tokens routed to it).
    ///
    /// # Shapes
    /// - `x`: `[B, T, D]` → `([B, T, D], [1])`
    pub fn forward(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<1>) {
        let (y, aux, _) = self.forward_counted(x);
        (y, aux)
    }

    /// [`Moe::forward`], also giving the assignments each routed expert received (tokens
    /// routed to it; they sum to `B·T·k`).
    ///
    /// # Shapes
    /// - `x`: `[B, T, D]` → `([B, T, D], [1], E counts)`
    pub fn forward_counted(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<1>, Vec<usize>) {
        let [b, t, d] = x.dims();
        let n = b * t;
        let k = self.top_k;
        let device = x.device();
        let xf = x.clone().reshape([n, d]); // [N, D]
        let routing = self.route(xf.clone());
        // Assignments a = token·k + slot, sorted by expert (stable: token order within one).
        let mut order: Vec<usize> = (0..n * k).collect();
        order.sort_by_key(|&a| routing.experts[a]);
        let index = |v: Vec<i32>| {
            let len = v.len();
            Tensor::<1, Int>::from_data(TensorData::new(v, [len]), &device)
        };
        let tokens = index(order.iter().map(|&a| (a / k) as i32).collect());
        let dispatched = xf.select(0, tokens); // [N·k, D], grouped by expert
        let mut outputs = Vec::with_capacity(self.experts.len());
        let mut start = 0;
        for (expert, &count) in self.experts.iter().zip(&routing.counts) {
            if count == 0 {
                continue;
            }
            let xe = dispatched.clone().slice([start..start + count, 0..d]).reshape([1, count, d]);
            outputs.push(expert.forward(xe).reshape([count, d])); // [count, D]
            start += count;
        }
        let grouped = Tensor::cat(outputs, 0); // [N·k, D], grouped by expert
        let mut position = vec![0i32; n * k];
        for (pos, &a) in order.iter().enumerate() {
            position[a] = pos as i32;
        }
        let per_slot = grouped.select(0, index(position)).reshape([n, k, d]); // [N, k, D]
        let y = (per_slot * routing.gates.clone().reshape([n, k, 1])).sum_dim(1).reshape([b, t, d]); // [B, T, D]
        let aux = Self::aux_loss(&routing);
        (self.add_shared(y, x), aux, routing.counts)
    }

    /// The same function computed densely: every expert on every token, weighted by the top-k
    /// gates scattered to `[N, E]` (zero for unselected experts). A reference for tests; it
    /// costs `E / k` times the routed FLOPs.
    ///
    /// # Shapes
    /// - `x`: `[B, T, D]` → `([B, T, D], [1])`
    pub fn forward_dense(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<1>) {
        let [b, t, d] = x.dims();
        let n = b * t;
        let n_experts = self.experts.len();
        let device = x.device();
        let xf = x.clone().reshape([n, d]);
        let routing = self.route(xf);
        let ids: Vec<i32> = routing.experts.iter().map(|&e| e as i32).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [n, self.top_k]), &device);
        let weights = Tensor::<2>::zeros([n, n_experts], &device).scatter(1, ids, routing.gates.clone(), IndexingUpdateOp::Add); // [N, E]
        let mut y = Tensor::<3>::zeros([b, t, d], &device);
        for (e, expert) in self.experts.iter().enumerate() {
            let w = weights.clone().slice([0..n, e..e + 1]).reshape([b, t, 1]);
            y = y + expert.forward(x.clone()) * w;
        }
        let aux = Self::aux_loss(&routing);
        (self.add_shared(y, x), aux)
    }

    fn add_shared(&self, y: Tensor<3>, x: Tensor<3>) -> Tensor<3> {
        match &self.shared {
            Some(shared) => y + shared.forward(x),
            None => y,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::Distribution;

    fn dev() -> Device {
        Device::flex()
    }

    fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// A layer whose router is large enough that the routing is far from uniform.
    fn layer(cfg: &MoeConfig, d: usize, device: &Device) -> Moe {
        let mut moe = cfg.init(d, 0.2, 0.2, device);
        moe.router.weight = Param::from_tensor(Tensor::random([d, cfg.n_experts], Distribution::Normal(0.0, 1.0), device));
        moe
    }

    #[test]
    fn forward_has_documented_shapes() {
        let device = dev();
        for shared in [0, 2] {
            let cfg = MoeConfig::new(4, 2, 12).with_shared_experts(shared);
            let moe = cfg.init(16, 0.02, 0.02, &device);
            let x = Tensor::<3>::random([3, 5, 16], Distribution::Normal(0.0, 1.0), &device);
            let (y, aux) = moe.forward(x);
            assert_eq!(y.dims(), [3, 5, 16]);
            assert_eq!(aux.dims(), [1]);
            assert_eq!(moe.shared.as_ref().map(|s| s.down.weight.val().dims()), (shared > 0).then_some([shared * 12, 16]));
        }
    }

    #[test]
    fn top_k_selects_the_k_most_probable_experts_with_weights_summing_to_one() {
        let device = dev();
        let (e, k, d, n) = (6, 2, 8, 20);
        let moe = layer(&MoeConfig::new(e, k, 4), d, &device);
        let x = Tensor::<2>::random([n, d], Distribution::Normal(0.0, 1.0), &device);
        let r = moe.route(x);
        let probs: Vec<f32> = r.probs.clone().into_data().try_to_vec().expect("f32 probabilities");
        let gates: Vec<f32> = r.gates.clone().into_data().try_to_vec().expect("f32 gates");
        assert_eq!(r.experts.len(), n * k);
        assert_eq!(r.counts.iter().sum::<usize>(), n * k);
        for tok in 0..n {
            let p = &probs[tok * e..(tok + 1) * e];
            let chosen = &r.experts[tok * k..(tok + 1) * k];
            assert_ne!(chosen[0], chosen[1], "token {tok} picked one expert twice");
            let mut sorted: Vec<usize> = (0..e).collect();
            sorted.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            let mut want = sorted[..k].to_vec();
            let mut got = chosen.to_vec();
            want.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, want, "token {tok}: not the {k} most probable experts");
            let g = &gates[tok * k..(tok + 1) * k];
            assert!((g.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            let norm: f32 = chosen.iter().map(|&c| p[c]).sum();
            for (slot, &c) in chosen.iter().enumerate() {
                assert!((g[slot] - p[c] / norm).abs() < 1e-5, "gate is the renormalised probability");
            }
        }
    }

    #[test]
    fn only_the_selected_experts_contribute() {
        // Zeroing an expert's output weights changes exactly the tokens routed to it.
        let device = dev();
        let (e, k, d) = (5, 2, 8);
        let mut moe = layer(&MoeConfig::new(e, k, 6), d, &device);
        let x = Tensor::<3>::random([1, 16, d], Distribution::Normal(0.0, 1.0), &device);
        let r = moe.route(x.clone().reshape([16, d]));
        let (before, _) = moe.forward(x.clone());
        let victim = 3;
        moe.experts[victim].down.weight = Param::from_tensor(moe.experts[victim].down.weight.val().zeros_like());
        let (after, _) = moe.forward(x);
        for tok in 0..16 {
            let uses = r.experts[tok * k..(tok + 1) * k].contains(&victim);
            let diff = max_abs_diff(before.clone().slice([0..1, tok..tok + 1, 0..d]), after.clone().slice([0..1, tok..tok + 1, 0..d]));
            assert_eq!(diff > 0.0, uses, "token {tok}: routed to expert {victim}: {uses}, output changed by {diff}");
        }
    }

    #[test]
    fn sparse_dispatch_equals_dense_masked_computation() {
        let device = dev();
        for (e, k, shared) in [(4, 1, 0), (6, 2, 1), (3, 3, 0)] {
            let moe = layer(&MoeConfig::new(e, k, 10).with_shared_experts(shared), 12, &device);
            let x = Tensor::<3>::random([2, 7, 12], Distribution::Normal(0.0, 1.0), &device);
            let (ys, auxs) = moe.forward(x.clone());
            let (yd, auxd) = moe.forward_dense(x);
            assert!(max_abs_diff(ys, yd) < 1e-5, "E {e}, k {k}");
            assert!(max_abs_diff(auxs, auxd) < 1e-6);
        }
    }

    #[test]
    fn one_expert_with_k_1_equals_a_swiglu_mlp_with_the_same_weights() {
        let device = dev();
        let moe = layer(&MoeConfig::new(1, 1, 20), 16, &device);
        let mlp = SwiGluMlp { gate_up: moe.experts[0].gate_up.clone(), down: moe.experts[0].down.clone() };
        let x = Tensor::<3>::random([2, 9, 16], Distribution::Normal(0.0, 1.0), &device);
        let (y, aux) = moe.forward(x.clone());
        assert!(max_abs_diff(y, mlp.forward(x)) < 1e-6);
        assert!((aux.into_scalar::<f32>() - 1.0).abs() < 1e-6, "one expert is perfectly balanced");
    }

    #[test]
    fn aux_loss_is_one_when_uniform_and_e_over_k_when_collapsed() {
        let device = dev();
        let (e, k, d) = (4, 2, 8);
        let mut moe = MoeConfig::new(e, k, 4).init(d, 0.02, 0.02, &device);
        let x = Tensor::<3>::random([2, 6, d], Distribution::Normal(0.0, 1.0), &device);
        // A zero router gives P_i = 1/E whatever the selection: aux = Σ f_i = 1.
        moe.router.weight = Param::from_tensor(moe.router.weight.val().zeros_like());
        assert!((moe.forward(x.clone()).1.into_scalar::<f32>() - 1.0).abs() < 1e-5);
        // A router that puts (almost) all mass on experts 0 and 1 for every token:
        // f = (1/2, 1/2, 0, 0), P ≈ (1/2, 1/2, 0, 0) → aux ≈ E · 1/2 = E / k.
        let mut w = vec![0.0f32; d * e];
        for row in 0..d {
            w[row * e] = 1e3;
            w[row * e + 1] = 1e3;
        }
        moe.router.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [d, e]), &device));
        let positive = Tensor::<3>::random([2, 6, d], Distribution::Uniform(0.5, 1.0), &device);
        let aux = moe.forward(positive).1.into_scalar::<f32>();
        assert!((aux - e as f32 / k as f32).abs() < 1e-3, "aux {aux}");
    }

    #[test]
    fn router_and_selected_experts_receive_gradients() {
        let device = dev().autodiff();
        let (e, k, d) = (4, 2, 8);
        let moe = layer(&MoeConfig::new(e, k, 6), d, &device);
        let x = Tensor::<3>::random([1, 10, d], Distribution::Normal(0.0, 1.0), &device);
        let r = moe.route(x.clone().reshape([10, d]));
        let (y, aux) = moe.forward(x);
        let grads = (y.sum() + aux).backward();
        let g = moe.router.weight.val().grad(&grads).expect("the router is trained through gates and aux loss");
        assert!(g.abs().sum().into_scalar::<f32>() > 0.0);
        for (i, expert) in moe.experts.iter().enumerate() {
            let has = expert.down.weight.val().grad(&grads).is_some_and(|g| g.abs().sum().into_scalar::<f32>() > 0.0);
            assert_eq!(has, r.counts[i] > 0, "expert {i} with {} tokens", r.counts[i]);
        }
    }

    #[test]
    fn config_validation_names_the_field() {
        assert!(MoeConfig::new(0, 1, 4).validate().unwrap_err().to_string().contains("moe.n_experts"));
        assert!(MoeConfig::new(4, 5, 4).validate().unwrap_err().to_string().contains("moe.top_k"));
        assert!(MoeConfig::new(4, 0, 4).validate().unwrap_err().to_string().contains("moe.top_k"));
        assert!(MoeConfig::new(4, 2, 0).validate().unwrap_err().to_string().contains("moe.d_expert"));
        let mut c = MoeConfig::new(4, 2, 4);
        c.aux_loss_coef = -1.0;
        assert!(c.validate().unwrap_err().to_string().contains("moe.aux_loss_coef"));
        assert!(MoeConfig::new(4, 2, 4).validate().is_ok());
        let json = r#"{"n_experts": 8, "top_k": 2, "d_expert": 32}"#;
        let c: MoeConfig = serde_json::from_str(json).expect("defaults fill the optional fields");
        assert_eq!((c.n_shared_experts, c.aux_loss_coef), (0, DEFAULT_AUX_LOSS_COEF));
    }
}
