//! Training on the wgpu backend (a GPU, or lavapipe — Debian's CPU Vulkan — in CI).
//!
//! Built only with `--features wgpu`: `cargo test --features wgpu --test wgpu_smoke`.
#![cfg(feature = "wgpu")]

use engram::data::{DataConfig, PreparedData};
use engram::device::device_from_name;
use engram::engram::EngramConfig;
use engram::model::ModelConfig;
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
