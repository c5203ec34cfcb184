//! Tests of the Transformer: shapes, causality, the baseline equivalences, mHC at init, the
//! fused head loss, the BigramHash input table.

use super::*;
use crate::engram::EngramConfig;
use crate::model::bigram::bigram_row;
use crate::test_util::{int_tensor, seeded_param, token_ids};
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
    let ids: Vec<i32> = (0..2 * 12).map(|i| i * 7 % 37).collect();
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
fn expert_counts_are_the_routers_choices_block_by_block() {
    let device = Device::flex();
    for engram in [None, Some(engram_cfg())] {
        let mut cfg = ModelConfig::tiny(37, 16).with_moe(moe_cfg());
        cfg.engram = engram;
        let mut model = cfg.init(&device);
        // Routers large enough that the routing is far from uniform.
        for (i, block) in model.blocks.iter_mut().enumerate() {
            let moe = block.moe.as_mut().expect("an MoE block");
            moe.router.weight = seeded_param(&moe.router.weight, 0.0, 1.0, 40 + i as u64);
        }
        let (b, t, d) = (3, 14, cfg.d_model);
        let ids = token_ids(b * t, 37, 5);
        let mems = memories(&model, b, t, &ids, &device);
        let x = tokens(&ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), b, t, &device);
        let counts = model.expert_counts(x.clone(), &mems);
        assert_eq!(counts.len(), 2);
        // Written out: each block's Engram, attention sublayer, then the router on the normed
        // hidden state; the block's output from forward_streams.
        let mut h = model.enter(x);
        let mut mem = mems.iter();
        for (block, got) in model.blocks.iter().zip(&counts) {
            let m = block.engram.as_ref().map(|_| mem.next().unwrap().embeddings());
            let mut u = h.clone();
            if let (Some(g), Some(m)) = (&block.engram, m.clone()) {
                u = u.clone() + g.forward(u, m);
            }
            let u = u.reshape([b, t, d]);
            let u = u.clone() + block.attn.forward(crate::ops::rms_norm_module(&block.norm_attn, u), &model.rope);
            let routed = block.moe.as_ref().unwrap().route(crate::ops::rms_norm_module(&block.norm_mlp, u).reshape([b * t, d]));
            assert_eq!(got, &routed.counts);
            assert_eq!(got.iter().sum::<usize>(), b * t * 2);
            let (with_counts, _) = block.forward_counting_experts(h.clone(), m.clone(), &model.rope);
            let (plain, _) = block.forward_streams(h, m, &model.rope);
            assert_eq!(with_counts.to_data(), plain.to_data(), "counting changes nothing");
            h = plain;
        }
        assert!(counts.iter().flatten().any(|&c| c != b * t * 2 / 4), "uniform routing proves little: {counts:?}");
    }
    // A dense model has no experts to count.
    let dense = ModelConfig::tiny(37, 16).init(&device);
    assert!(dense.expert_counts(tokens(&[1, 2, 3], 1, 3, &device), &[]).is_empty());
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

/// Every float parameter's gradient, in the module's order (empty where it has none).
struct ParamGrads<'a> {
    grads: &'a burn::tensor::Gradients,
    out: Vec<Vec<f32>>,
}

impl burn::module::ModuleVisitor for ParamGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let g = param.val().grad(self.grads).map(|g| g.into_data().try_to_vec::<f32>().unwrap());
        self.out.push(g.unwrap_or_default());
    }
}

/// Every randomly initialised parameter replaced by seeded N(0, 0.1²) values (constant ones —
/// gains, zeros, the mHC scales — kept): the same model in every run, whatever other tests
/// draw from the device's generator meanwhile.
struct SeededWeights(u64);

impl burn::module::ModuleMapper for SeededWeights {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.0 += 1;
        let v = param.val().into_data().try_to_vec::<f32>().unwrap();
        if v.iter().all(|&x| x == v[0]) {
            param
        } else {
            crate::test_util::seeded_param(&param, 0.0, 0.1, 1_000 + self.0)
        }
    }
}

#[test]
fn the_fused_kernels_give_the_loss_and_every_gradient_of_burns_ops_on_four_mhc_streams() {
    // Engram at two blocks on four streams: the fused path (gate and conv on four branches,
    // the mHC coefficients with Sinkhorn, collapse and merge, and the backbone's kernels)
    // against the same model composing burn's operations on the same device. The conv is
    // made non-zero and φ's post columns random, so that no part is trivially zero. Seeded
    // weights: a gate score near 0 magnifies rounding by 1/(2√|s|), so a random draw could
    // fail a tolerance that the drawn-once weights here meet.
    let device = Device::flex().autodiff();
    let cfg = ModelConfig::tiny(37, 16).with_engram(EngramConfig { layer_ids: vec![0, 1], ..engram_cfg() }).with_mhc(crate::model::MhcConfig::default().with_streams(4));
    let mut model = cfg.init(&device).map(&mut SeededWeights(0));
    for (i, block) in model.blocks.iter_mut().enumerate() {
        let eg = block.engram.as_mut().unwrap();
        eg.conv_weight = crate::test_util::seeded_param(&eg.conv_weight, 0.0, 0.3, 90 + i as u64);
        for (k, hc) in [block.hc_attn.as_mut().unwrap(), block.hc_ffn.as_mut().unwrap()].into_iter().enumerate() {
            hc.phi = crate::test_util::seeded_param(&hc.phi, 0.0, 0.05, 100 + 2 * i as u64 + k as u64);
            hc.scale = Param::from_tensor(Tensor::from_data(TensorData::new(vec![0.5f32, 0.5, 2.0], [3]), &device));
        }
    }
    let (b, t) = (3, 11);
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 7 % 37) as u32).collect();
    let x = tokens(&ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), b, t, &device);
    let y = tokens(&ids.iter().map(|&i| ((i * 3 + 1) % 37) as i32).collect::<Vec<_>>(), b, t, &device);
    let mems = memories(&model, b, t, &ids, &device);
    let run = || {
        let (loss, _) = model.loss_with_aux(x.clone(), y.clone(), &mems, false);
        let value = loss.clone().into_scalar::<f32>();
        let grads = loss.backward();
        let mut visitor = ParamGrads { grads: &grads, out: vec![] };
        model.visit(&mut visitor);
        (value, visitor.out)
    };
    let (fused, composed) = (run(), crate::ops::with_generic_ops(run));
    assert!((fused.0 - composed.0).abs() <= 1e-5 * composed.0.abs(), "loss {} vs {}", fused.0, composed.0);
    assert_eq!(fused.1.len(), composed.1.len());
    let mut compared = 0;
    for (i, (ours, theirs)) in fused.1.iter().zip(&composed.1).enumerate() {
        assert_eq!(ours.len(), theirs.len(), "parameter #{i}: a gradient on one path only");
        let scale = theirs.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
        let worst = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-4 * scale, "parameter #{i} ({} values): difference {worst}, scale {scale}", theirs.len());
        compared += usize::from(!theirs.is_empty());
    }
    // Every parameter of the model has a gradient (the mHC and Engram ones included).
    assert_eq!(compared, fused.1.len(), "parameters without a gradient");
}

#[test]
fn the_bigram_hash_table_adds_its_rows_at_the_input_only() {
    let device = Device::flex();
    let (b, t, rows) = (2, 7, 301);
    let mut cfg = ModelConfig::new(256, 16, 1, 2, 16);
    cfg.bigram_hash = Some(BigramHashConfig { rows });
    cfg.validate().unwrap();
    let mut model = cfg.init(&device);
    let table = model.bigram.as_mut().unwrap();
    assert_eq!(table.weight.val().abs().max().into_scalar::<f32>(), 0.0, "starts at zero");
    table.weight = seeded_param(&table.weight, 0.0, 1.0, 5);
    let toks = token_ids(b * t, 256, 3);
    let x: Vec<f32> = model.enter(int_tensor(&toks, [b, t], &device)).into_data().try_to_vec().unwrap();
    let embed: Vec<f32> = model.embed.weight.val().into_data().try_to_vec().unwrap();
    let bigram: Vec<f32> = model.bigram.as_ref().unwrap().weight.val().into_data().try_to_vec().unwrap();
    for i in 0..b * t {
        let prev = (i % t > 0).then(|| toks[i - 1]);
        let r = bigram_row(prev, toks[i], rows) as usize;
        for j in 0..16 {
            let want = embed[toks[i] as usize * 16 + j] + bigram[r * 16 + j];
            assert_eq!(x[i * 16 + j], want, "token {i} element {j}");
        }
    }
    // Decoding one token at a time reads the previous token's bigram as the whole
    // sequence does.
    let all = model.forward(int_tensor(&toks, [b, t], &device), &[], false);
    let (_, mut state) = model.prefill(int_tensor(&toks, [b, t], &device).slice([0..b, 0..3]), &[]);
    for p in 3..t {
        let tok = int_tensor(&toks, [b, t], &device).slice([0..b, p..p + 1]);
        let step = model.decode_step(tok, &[], &mut state);
        let diff = (step - all.clone().slice([0..b, p..p + 1])).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-5, "position {p}: {diff}");
    }
}

#[test]
fn bad_bigram_configs_are_refused_naming_the_field() {
    let mut cfg = ModelConfig::new(256, 16, 1, 2, 16);
    cfg.bigram_hash = Some(BigramHashConfig { rows: 1 });
    assert!(cfg.validate().unwrap_err().to_string().contains("model.bigram_hash.rows"));
    let mut cfg = ModelConfig::new(100_000, 16, 1, 2, 16);
    cfg.bigram_hash = Some(BigramHashConfig { rows: 64 });
    assert!(cfg.validate().unwrap_err().to_string().contains("model.vocab_size"));
}
