//! Training on the wgpu backend (a GPU, or lavapipe — Debian's CPU Vulkan — in CI).
//!
//! Built only with `--features wgpu`: `cargo test --features wgpu --test wgpu_smoke`.
#![cfg(feature = "wgpu")]

use engram::data::{DataConfig, PreparedData};
use engram::device::device_from_name;
use engram::engram::EngramConfig;
use engram::model::{MhcConfig, ModelConfig};
use engram::config::{ExperimentConfig, TrainConfig};
use engram::train::{run, RunOptions};

#[test]
fn a_small_engram_model_trains_on_wgpu() {
    let device = match device_from_name("wgpu") {
        Ok(d) => d,
        Err(e) => panic!("wgpu must be usable where this test runs (CI installs mesa-vulkan-drivers): {e}"),
    };
    // One short held-out book: the final evaluation scores every held-out byte.
    let data_cfg = DataConfig { val_books: vec!["carroll-alice".into()], ..DataConfig::bytes() };
    let data = PreparedData::prepare(&data_cfg).unwrap();
    let model = ModelConfig::new(256, 32, 2, 2, 16).with_engram(EngramConfig { layer_ids: vec![1], table_size: vec![512, 512], d_head: 8, ..EngramConfig::default() });
    let cfg = ExperimentConfig {
        name: "wgpu".into(),
        model,
        train: TrainConfig { steps: 12, batch_size: 4, seq_len: 16, warmup_steps: 2, eval_every: 12, eval_windows: 8, eval_stride: Some(16), ..TrainConfig::default() },
        data: data_cfg,
    };
    let dir = std::env::temp_dir().join(format!("engram-wgpu-{}", std::process::id()));
    let r = run(&cfg, &data, &device, &dir, &RunOptions::default()).unwrap();
    let first = r.curve.first().unwrap().train_loss;
    assert!(r.val_loss.is_finite() && r.val_bpb.is_finite());
    assert_eq!(r.val_bytes, 144_395, "every byte of Alice is scored");
    assert!(r.final_train_loss < first, "loss {first} → {}", r.final_train_loss);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The same small model trained for 24 steps on flex (the fused CPU kernels) and on wgpu
/// (burn's generic ops), both from the same weights (`train.init_from` a one-step flex run:
/// the two backends' random generators draw different initialisations): the logged training
/// losses and the final held-out loss agree within [`PARITY_TOLERANCE`] (relative), with and
/// without Engram, and on four residual streams with mHC. Float rounding differs between the
/// two (fused vs unfused sums, another matmul order), and 24 Adam steps carry it forward: the
/// tolerance is for that drift, not for a different computation.
#[test]
fn flex_and_wgpu_train_the_same_model_to_the_same_losses() {
    let wgpu = device_from_name("wgpu").expect("wgpu must be usable where this test runs");
    let flex = device_from_name("flex").unwrap();
    let data_cfg = DataConfig { val_books: vec!["carroll-alice".into()], ..DataConfig::bytes() };
    let data = PreparedData::prepare(&data_cfg).unwrap();
    let engram = EngramConfig { layer_ids: vec![1], table_size: vec![512, 512], d_head: 8, ..EngramConfig::default() };
    let mhc = ModelConfig::new(256, 32, 2, 2, 16).with_mhc(MhcConfig::default()).with_engram(engram.clone());
    for (name, model) in [("engram", ModelConfig::new(256, 32, 2, 2, 16).with_engram(engram)), ("baseline", ModelConfig::new(256, 32, 2, 2, 16)), ("mhc", mhc)] {
        let cfg = ExperimentConfig {
            name: name.into(),
            model,
            train: TrainConfig { steps: 24, batch_size: 4, seq_len: 16, warmup_steps: 2, eval_every: 8, eval_windows: 8, eval_stride: Some(16), ..TrainConfig::default() },
            data: data_cfg.clone(),
        };
        // The starting weights: one step on flex, kept as a finished run.
        let start = std::env::temp_dir().join(format!("engram-parity-{name}-start-{}", std::process::id()));
        let start_cfg = ExperimentConfig { train: TrainConfig { steps: 1, eval_every: 1, ..cfg.train.clone() }, ..cfg.clone() };
        run(&start_cfg, &data, &flex, &start, &RunOptions { checkpoints: true, ..RunOptions::default() }).unwrap();
        let cfg = ExperimentConfig { train: TrainConfig { init_from: Some(start.clone()), ..cfg.train.clone() }, ..cfg };
        let run_on = |device: &burn::tensor::Device, tag: &str| {
            let dir = std::env::temp_dir().join(format!("engram-parity-{name}-{tag}-{}", std::process::id()));
            let r = run(&cfg, &data, device, &dir, &RunOptions::default()).unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
            r
        };
        let (a, b) = (run_on(&flex, "flex"), run_on(&wgpu, "wgpu"));
        assert_eq!(a.curve.len(), b.curve.len());
        let rel = |x: f32, y: f32| ((x - y) / y).abs();
        let worst = a.curve.iter().zip(&b.curve).map(|(x, y)| rel(x.train_loss, y.train_loss)).fold(0f32, f32::max);
        let val = rel(a.val_loss, b.val_loss);
        eprintln!("{name}: train losses differ by at most {worst:e} (relative), final held-out loss by {val:e}");
        assert!(worst <= PARITY_TOLERANCE && val <= PARITY_TOLERANCE, "{name}: flex and wgpu differ: train {worst:e}, held-out {val:e}");
        assert!(a.curve.last().unwrap().train_loss < a.curve.first().unwrap().train_loss, "{name}: it trains");
        std::fs::remove_dir_all(&start).unwrap();
    }
}

/// Relative tolerance of the flex / wgpu parity (measured on lavapipe: 1.3e-6 with Engram,
/// 2.2e-7 without).
const PARITY_TOLERANCE: f32 = 1e-4;

/// The Engram layer alone on both backends: the same output and the same gradients (hidden
/// state and memory) for the same weights and inputs.
#[test]
fn the_engram_layer_has_the_same_values_and_gradients_on_flex_and_wgpu() {
    use burn::module::Module;
    use burn::tensor::{Tensor, TensorData};
    use engram::engram::EngramLayerConfig;
    let wgpu = device_from_name("wgpu").expect("wgpu must be usable where this test runs").autodiff();
    let flex = device_from_name("flex").unwrap().autodiff();
    let (b, t, d, dm) = (2, 11, 16, 24);
    let vals = |n: usize, salt: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32 + 1.0) * 0.731 + salt).sin()).collect() };
    let mut layer_flex = EngramLayerConfig::new(d, dm, 3).init(&flex);
    // A non-zero conv (it starts at zero), the same on both devices.
    let [c, k] = layer_flex.conv_weight.dims();
    let conv = Tensor::<2>::from_data(TensorData::new(vals(c * k, 0.3).iter().map(|x| x * 0.2).collect::<Vec<_>>(), [c, k]), &flex);
    layer_flex.conv_weight = burn::module::Param::from_tensor(conv);
    let layer_wgpu = layer_flex.clone().fork(&wgpu);
    let run = |layer: &engram::engram::Engram, device: &burn::tensor::Device| {
        let h = Tensor::<4>::from_data(TensorData::new(vals(b * t * d, 0.1), [b, t, 1, d]), device).require_grad();
        let e = Tensor::<3>::from_data(TensorData::new(vals(b * t * dm, 0.7), [b, t, dm]), device).require_grad();
        let y = layer.forward(h.clone(), e.clone());
        let r = Tensor::<4>::from_data(TensorData::new(vals(b * t * d, 1.9), [b, t, 1, d]), device);
        let g = (y.clone() * r).sum().backward();
        let out = |x: Tensor<4>| x.into_data().try_to_vec::<f32>().unwrap();
        (out(y), out(h.grad(&g).unwrap()), e.grad(&g).unwrap().into_data().try_to_vec::<f32>().unwrap())
    };
    let (fa, fb) = (run(&layer_flex, &flex), run(&layer_wgpu, &wgpu));
    let worst = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / y.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
    for (what, x, y) in [("output", &fa.0, &fb.0), ("hidden gradient", &fa.1, &fb.1), ("memory gradient", &fa.2, &fb.2)] {
        let e = worst(x, y);
        eprintln!("engram layer {what}: flex vs wgpu {e:e} (relative to the largest value)");
        assert!(e <= 1e-5, "{what}: {e:e}");
    }
}
