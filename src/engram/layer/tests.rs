//! Tests of the Engram layer: shapes, the written-out formula with its gradients (one and
//! four streams), the fused path against burn's ops, the ablations, causality.

use super::*;
use crate::test_util::{seeded, seeded_param};

fn dev() -> Device {
    Device::flex()
}

/// `layer` with seeded value and key projections (weights and biases), so that a test's
/// tolerance does not depend on the device's global RNG.
fn seeded_layer(mut layer: Engram, seed: u64) -> Engram {
    let std = 1.0 / (layer.value.weight.val().dims()[0] as f64).sqrt();
    for (i, lin) in std::iter::once(&mut layer.value).chain(layer.keys.iter_mut()).enumerate() {
        let s = seed + 2 * i as u64;
        lin.weight = seeded_param(&lin.weight, 0.0, std, s);
        lin.bias = lin.bias.as_ref().map(|b| seeded_param(b, 0.0, std, s + 1));
    }
    layer
}

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

#[test]
fn forward_has_documented_shapes() {
    let device = dev();
    for m in [1, 2] {
        let layer = EngramLayerConfig::new(32, 48, 3).with_hc_mult(m).init(&device);
        let h = seeded::<4>([2, 7, m, 32], 0.0, 1.0, 1, &device);
        let e = seeded::<3>([2, 7, 48], 0.0, 1.0, 2, &device);
        assert_eq!(layer.forward(h, e).dims(), [2, 7, m, 32]);
    }
}

fn reference_v_tilde(layer: &Engram, h: Tensor<4>, e: Tensor<3>) -> Tensor<4> {
    // ṽ computed step by step, independently of `forward`'s batching of branches.
    let [b, t, m, d] = h.dims();
    let v = e.clone().matmul(layer.value.weight.val().unsqueeze()) + layer.value.bias.as_ref().unwrap().val().unsqueeze();
    let mut out = Vec::new();
    for i in 0..m {
        let hi = h.clone().slice([0..b, 0..t, i..i + 1, 0..d]).reshape([b, t, d]);
        let rms = |x: Tensor<3>, eps: f64| x.clone() / (x.square().mean_dim(2) + eps).sqrt();
        let ki = e.clone().matmul(layer.keys[i].weight.val().unsqueeze()) + layer.keys[i].bias.as_ref().unwrap().val().unsqueeze();
        let s = (rms(hi, GATE_NORM_EPS) * rms(ki, GATE_NORM_EPS)).sum_dim(2) / (d as f64).sqrt();
        let s = s.clone().sign() * s.abs().clamp_min(1e-6).sqrt();
        out.push(v.clone() * sigmoid(s));
    }
    Tensor::stack(out, 2)
}

#[test]
fn zero_initialised_conv_gives_output_equal_to_gated_value() {
    let device = dev();
    let layer = EngramLayerConfig::new(16, 24, 3).with_hc_mult(2).init(&device);
    let h = seeded::<4>([2, 9, 2, 16], 0.0, 1.0, 3, &device);
    let e = seeded::<3>([2, 9, 24], 0.0, 1.0, 4, &device);
    let y = layer.forward(h.clone(), e.clone());
    let v_tilde = reference_v_tilde(&layer, h, e);
    assert!(max_abs_diff(y, v_tilde) < 1e-5);
}

#[test]
fn layer_has_the_value_and_gradients_of_the_step_by_step_formula() {
    // The layer's output and every gradient against the formula written out with burn's
    // ops (the conv is zero-initialised: it adds nothing).
    let device = Device::flex().autodiff();
    let layer = seeded_layer(EngramLayerConfig::new(16, 24, 3).init(&device), 40);
    let h = seeded::<4>([2, 9, 1, 16], 0.0, 1.0, 5, &device).require_grad();
    let e = seeded::<3>([2, 9, 24], 0.0, 1.0, 6, &device).require_grad();
    let r = seeded::<4>([2, 9, 1, 16], 0.0, 1.0, 7, &device);
    let vals = |x: Tensor<2>| x.into_data().try_to_vec::<f32>().unwrap();
    let run = |ours: bool| {
        let y = if ours { layer.forward(h.clone(), e.clone()) } else { reference_v_tilde(&layer, h.clone(), e.clone()) };
        let g = (y.clone() * r.clone()).sum().backward();
        let flat3 = |x: Tensor<3>| vals(x.reshape([-1, 1]));
        vec![
            vals(y.reshape([-1, 1])),
            vals(h.grad(&g).unwrap().reshape([-1, 1])),
            flat3(e.grad(&g).unwrap()),
            vals(layer.value.weight.val().grad(&g).unwrap()),
            vals(layer.keys[0].weight.val().grad(&g).unwrap()),
            vals(layer.value.bias.as_ref().unwrap().val().grad(&g).unwrap().unsqueeze()),
            vals(layer.keys[0].bias.as_ref().unwrap().val().grad(&g).unwrap().unsqueeze()),
        ]
    };
    // Relative to each tensor's largest value: a gradient summed over tokens can cancel to
    // near zero in one entry while its terms, scaled by the gate's 1/(2√|s|), are large.
    for (i, (ours, theirs)) in run(true).iter().zip(run(false)).enumerate() {
        let scale = theirs.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(ours.len() == theirs.len() && worst <= 1e-4 * scale, "output/gradient #{i}: difference {worst}, scale {scale}");
    }
}

/// The whole layer written out on `M` streams (gains at their initial 1): `ṽ`, then per
/// stream RMSNorm, the depthwise causal conv over the `M·D` channels (channel `m·D + c`),
/// tap `j` reading position `t − (k − 1 − j)·dilation`, SiLU, and `Y = ṽ + conv`.
fn reference_output(layer: &Engram, h: Tensor<4>, e: Tensor<3>) -> Tensor<4> {
    let [b, t, m, d] = h.dims();
    let v_tilde = reference_v_tilde(layer, h, e);
    let rms = |x: Tensor<3>| x.clone() / (x.square().mean_dim(2) + SHORT_CONV_NORM_EPS).sqrt();
    let normed: Vec<Tensor<3>> = (0..m).map(|i| rms(v_tilde.clone().slice([0..b, 0..t, i..i + 1, 0..d]).reshape([b, t, d]))).collect();
    let x = Tensor::cat(normed, 2); // [B, T, M·D]
    let [c, k] = layer.conv_weight.dims();
    let pad = (k - 1) * layer.dilation;
    let padded = Tensor::cat(vec![Tensor::zeros([b, pad, c], &x.device()), x], 1);
    let mut acc = Tensor::<3>::zeros([b, t, c], &padded.device());
    for j in 0..k {
        let w = layer.conv_weight.val().slice([0..c, j..j + 1]).reshape([1, 1, c]);
        acc = acc + padded.clone().slice([0..b, j * layer.dilation..j * layer.dilation + t, 0..c]) * w;
    }
    v_tilde + burn::tensor::activation::silu(acc).reshape([b, t, m, d])
}

#[test]
fn four_stream_layer_has_the_value_and_gradients_of_the_written_out_formula() {
    // [B, T, 4, D] with a non-zero conv whose reach (3 taps back × dilation 3) exceeds T
    // at the start: every gradient against `reference_output`.
    let device = Device::flex().autodiff();
    let mut layer = seeded_layer(EngramLayerConfig::new(16, 24, 3).with_hc_mult(4).init(&device), 60);
    layer.conv_weight = seeded_param(&layer.conv_weight, 0.0, 0.5, 70);
    let h = seeded::<4>([2, 11, 4, 16], 0.0, 1.0, 71, &device).require_grad();
    let e = seeded::<3>([2, 11, 24], 0.0, 1.0, 72, &device).require_grad();
    let r = seeded::<4>([2, 11, 4, 16], 0.0, 1.0, 73, &device);
    let vals = |x: Tensor<2>| x.into_data().try_to_vec::<f32>().unwrap();
    let run = |ours: bool| {
        let y = if ours { layer.forward(h.clone(), e.clone()) } else { reference_output(&layer, h.clone(), e.clone()) };
        let g = (y.clone() * r.clone()).sum().backward();
        let mut out = vec![vals(y.reshape([-1, 1])), vals(h.grad(&g).unwrap().reshape([-1, 1])), vals(e.grad(&g).unwrap().reshape([-1, 1]))];
        out.push(vals(layer.value.weight.val().grad(&g).unwrap()));
        out.push(vals(layer.conv_weight.val().grad(&g).unwrap()));
        for key in &layer.keys {
            out.push(vals(key.weight.val().grad(&g).unwrap()));
        }
        out
    };
    let (ours, theirs) = (run(true), run(false));
    assert_eq!(ours.len(), 9);
    for (i, (ours, theirs)) in ours.iter().zip(&theirs).enumerate() {
        let scale = theirs.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        let worst = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(ours.len() == theirs.len() && worst <= 1e-4 * scale, "output/gradient #{i}: difference {worst}, scale {scale}");
    }
    // Each stream has its own gate: the four key projections got different gradients.
    assert!(theirs[5] != theirs[6], "the streams' key gradients are identical");
}

#[test]
fn fused_gate_and_conv_have_the_value_and_gradients_of_burns_ops() {
    // The fused path (value and keys in one product, then the fused kernel) against burn's
    // ops, on one stream and on four. Random gains and conv weight; sizes on one thread and on
    // several, a sequence shorter than the conv's reach (taps that only read padding),
    // dilations 2 and 3.
    let device = Device::flex().autodiff();
    for (b, t, m, d, n) in [(2, 9, 1, 16, 3), (1, 2, 1, 8, 3), (16, 40, 1, 64, 2), (2, 9, 4, 16, 3), (1, 2, 3, 8, 3), (16, 40, 4, 64, 2)] {
        let mut layer = seeded_layer(EngramLayerConfig::new(d, 24, n).with_hc_mult(m).init(&device), 20);
        layer.conv_weight = seeded_param(&layer.conv_weight, 0.0, 0.5, 30);
        for i in 0..m {
            for (k, norm) in [&mut layer.norm_query[i], &mut layer.norm_key[i], &mut layer.conv_norm[i]].into_iter().enumerate() {
                norm.gamma = seeded_param(&norm.gamma, 1.0, 0.5, 31 + (3 * i + k) as u64);
            }
        }
        let h = seeded::<4>([b, t, m, d], 0.0, 1.0, 9, &device).require_grad();
        let e = seeded::<3>([b, t, 24], 0.0, 1.0, 10, &device).require_grad();
        let r = seeded::<4>([b, t, m, d], 0.0, 1.0, 11, &device);
        let flat = |x: Tensor<2>| x.into_data().try_to_vec::<f32>().unwrap();
        let run = |fused: bool| {
            let y = layer.forward_with(h.clone(), e.clone(), fused);
            let g = (y.clone() * r.clone()).sum().backward();
            let g1 = |p: &Param<Tensor<1>>| flat(p.val().grad(&g).unwrap().unsqueeze());
            let mut out = vec![
                ("output".to_string(), flat(y.reshape([-1, 1]))),
                ("hidden".into(), flat(h.grad(&g).unwrap().reshape([-1, 1]))),
                ("memory".into(), flat(e.grad(&g).unwrap().reshape([-1, 1]))),
                ("W_V".into(), flat(layer.value.weight.val().grad(&g).unwrap())),
                ("b_V".into(), g1(layer.value.bias.as_ref().unwrap())),
                ("conv weight".into(), flat(layer.conv_weight.val().grad(&g).unwrap())),
            ];
            for i in 0..m {
                out.push((format!("W_K {i}"), flat(layer.keys[i].weight.val().grad(&g).unwrap())));
                out.push((format!("b_K {i}"), g1(layer.keys[i].bias.as_ref().unwrap())));
                out.push((format!("query gain {i}"), g1(&layer.norm_query[i].gamma)));
                out.push((format!("key gain {i}"), g1(&layer.norm_key[i].gamma)));
                out.push((format!("conv gain {i}"), g1(&layer.conv_norm[i].gamma)));
            }
            out
        };
        let (ours, theirs) = (run(true), run(false));
        assert_eq!(ours.len(), 6 + 5 * m);
        for ((name, ours), (_, theirs)) in ours.iter().zip(&theirs) {
            let scale = theirs.iter().fold(1.0f32, |m, x| m.max(x.abs()));
            let worst = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(ours.len() == theirs.len() && worst <= 1e-4 * scale, "{name} ({b}, {t}, {m}, {d}): difference {worst}, scale {scale}");
        }
    }
}

#[test]
fn gate_ablation_passes_the_value_through() {
    let device = dev();
    let mut cfg = EngramLayerConfig::new(16, 24, 3);
    cfg.gate = false;
    let layer = cfg.init(&device);
    let h = seeded::<4>([1, 5, 1, 16], 0.0, 1.0, 12, &device);
    let e = seeded::<3>([1, 5, 24], 0.0, 1.0, 13, &device);
    let v = layer.value.forward(e.clone()).unsqueeze_dim::<4>(2);
    assert!(max_abs_diff(layer.forward(h, e), v) < 1e-6);
}

#[test]
fn the_constant_gate_control_scales_the_value_by_its_constant_for_every_token() {
    let device = dev();
    for m in [1, 3] {
        let mut cfg = EngramLayerConfig::new(16, 24, 3).with_hc_mult(m);
        cfg.gate_kind = GateKind::Constant;
        cfg.short_conv = false;
        let layer = seeded_layer(cfg.init(&device), 30);
        assert!(layer.gate_scalar.is_none(), "no parameter for a constant");
        for seed in [31, 33] {
            let h = seeded::<4>([2, 5, m, 16], 0.0, 1.0, seed, &device);
            let e = seeded::<3>([2, 5, 24], 0.0, 1.0, seed + 1, &device);
            let alphas: Vec<f32> = layer.gate_values(h.clone(), e.clone()).into_data().try_to_vec().unwrap();
            assert!(alphas.len() == 2 * 5 * m && alphas.iter().all(|&a| a == CONSTANT_GATE), "{alphas:?}");
            // Y = 0.1 · (W_V e + b) on every branch, written out.
            let v = e.clone().matmul(layer.value.weight.val().unsqueeze()) + layer.value.bias.as_ref().unwrap().val().unsqueeze();
            let want = Tensor::stack::<4>(vec![v * CONSTANT_GATE as f64; m], 2);
            assert!(max_abs_diff(layer.forward(h, e), want) < 1e-6);
        }
    }
}

#[test]
fn the_scalar_gate_control_is_one_learned_sigmoid_per_branch() {
    let device = Device::flex().autodiff();
    let m = 2;
    let mut cfg = EngramLayerConfig::new(8, 12, 3).with_hc_mult(m);
    cfg.gate_kind = GateKind::Scalar;
    cfg.short_conv = false;
    let mut layer = seeded_layer(cfg.init(&device), 40);
    let logits = [0.7f32, -1.3];
    layer.gate_scalar = Some(Param::from_tensor(Tensor::from_data(TensorData::new(logits.to_vec(), [m]), &device).require_grad()));
    let h = seeded::<4>([2, 6, m, 8], 0.0, 1.0, 41, &device);
    let e = seeded::<3>([2, 6, 12], 0.0, 1.0, 42, &device);
    let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
    let alphas: Vec<f32> = layer.gate_values(h.clone(), e.clone()).into_data().try_to_vec().unwrap();
    for (k, a) in alphas.iter().enumerate() {
        assert!((a - sig(logits[k % m])).abs() < 1e-6, "token {} branch {}: {a}", k / m, k % m);
    }
    // d Σ Y / d s_i = σ'(s_i) · Σ (W_V e + b): the same value on every token of branch i.
    let y = layer.forward(h, e.clone());
    let g = y.sum().backward();
    let grad: Vec<f32> = layer.gate_scalar.as_ref().unwrap().val().grad(&g).unwrap().into_data().try_to_vec().unwrap();
    let v = e.matmul(layer.value.weight.val().unsqueeze()) + layer.value.bias.as_ref().unwrap().val().unsqueeze();
    let v_sum = v.sum().into_scalar::<f32>();
    for i in 0..m {
        let want = sig(logits[i]) * (1.0 - sig(logits[i])) * v_sum;
        assert!((grad[i] - want).abs() <= 1e-4 * want.abs().max(1.0), "branch {i}: {} vs {want}", grad[i]);
    }
}

#[test]
fn a_default_layer_has_no_scalar_gate_parameter() {
    let layer = EngramLayerConfig::new(8, 12, 3).init(&dev());
    assert!(layer.gate_scalar.is_none());
    let mut cfg = EngramLayerConfig::new(8, 12, 3);
    cfg.gate_kind = GateKind::Scalar;
    let s: Vec<f32> = cfg.init(&dev()).gate_scalar.expect("a scalar gate").val().into_data().try_to_vec().unwrap();
    assert_eq!(s, vec![0.0], "σ(0) = 0.5 at the start");
}

#[test]
fn layer_is_causal_in_the_memory_with_a_nonzero_conv() {
    // With a random conv, changing the memory at position t changes no output before t.
    let device = dev();
    let mut layer = EngramLayerConfig::new(8, 12, 3).init(&device);
    layer.conv_weight = Param::from_tensor(seeded([8, 4], 0.0, 1.0, 14, &device));
    let h = seeded::<4>([1, 16, 1, 8], 0.0, 1.0, 15, &device);
    let e = seeded::<3>([1, 16, 12], 0.0, 1.0, 16, &device);
    let y1 = layer.forward(h.clone(), e.clone());
    let bump = Tensor::<3>::ones([1, 1, 12], &device);
    let e2 = e.slice_assign([0..1, 10..11, 0..12], bump);
    let y2 = layer.forward(h, e2);
    let early = |y: Tensor<4>| y.slice([0..1, 0..10, 0..1, 0..8]);
    assert_eq!(early(y1.clone()).into_data(), early(y2.clone()).into_data());
    assert!(max_abs_diff(y1.slice([0..1, 10..11, 0..1, 0..8]), y2.slice([0..1, 10..11, 0..1, 0..8])) > 0.0);
}

#[test]
fn memory_embeddings_follow_the_inverse_indices() {
    let device = dev();
    let rows: Vec<f32> = (0..3 * 2).map(|x| x as f32).collect(); // 3 rows × d_head 2
    let inverse = [2u32, 0, 1, 1]; // B=1, T=2, H=2
    let mem = EngramMemory::upload(rows, 2, &inverse, 1, 2, 2, &device, false);
    let e = mem.embeddings();
    assert_eq!(e.dims(), [1, 2, 4]);
    assert_eq!(e.into_data().try_to_vec::<f32>().expect("f32 data"), vec![4.0, 5.0, 0.0, 1.0, 2.0, 3.0, 2.0, 3.0]);
}

#[test]
fn config_validation_names_the_field() {
    let c = EngramConfig { layer_ids: vec![5], ..EngramConfig::default() };
    let err = c.validate(4).unwrap_err().to_string();
    assert!(err.contains("engram.layer_ids") && err.contains("n_layers = 4"), "{err}");
    let c = EngramConfig { max_ngram_size: 1, ..EngramConfig::default() };
    assert!(c.validate(4).unwrap_err().to_string().contains("engram.max_ngram_size"));
    let c = EngramConfig { table_size: vec![10], ..EngramConfig::default() };
    assert!(c.validate(4).unwrap_err().to_string().contains("engram.table_size"));
    assert!(EngramConfig::default().validate(4).is_ok());
}
