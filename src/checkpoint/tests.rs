//! Tests of the checkpoint format: round trips, refusals of damaged or foreign files.

use super::*;
use crate::hashing::default_rng;

fn progress() -> Progress {
    let mut p = Progress::start(default_rng(3));
    p.rng.next_u32(); // leaves a buffered half-word
    p.step = 7;
    p.loss_sum = 1.0 / 3.0;
    p.loss_n = 2;
    p.last_train_loss = 5.25;
    p.rows.push(MetricRow { step: 5, tokens: 640, train_loss: 6.1, val_loss: f32::NAN, val_bpb: 1.5, lr: 1e-3 / 7.0, elapsed_seconds: 0.125 });
    p.step_times = vec![0.01, 0.02];
    p
}

fn run_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("engram-ckpt-unit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn tiny_model() -> (ExperimentConfig, Transformer, ModuleOptimizer, Vec<EngramTable>) {
    let cfg = ExperimentConfig::tiny();
    let device = burn::tensor::Device::flex().autodiff();
    let model = cfg.model.init(&device);
    let optim = burn::optim::AdamWConfig::new().init();
    let mut table = EngramTable::new(50, 4, 1.0, 9);
    let g = vec![0.5f32; 8];
    table.adam_step(&[3, 7], &g, 0.1, &crate::table::TableAdam::default(), crate::table::UpdateMode::Sparse).unwrap();
    (cfg, model, optim, vec![table])
}

#[test]
fn write_then_read_restores_every_field_bit_exactly() {
    let dir = run_dir("roundtrip");
    let (cfg, model, optim, tables) = tiny_model();
    let p = progress();
    write(&dir, &cfg, 0xfeed, &p, &model, &optim, &[&tables[0]]).unwrap();
    let ck = read(&dir).unwrap();
    assert_eq!(ck.progress.rng, p.rng);
    assert_eq!(ck.progress.loss_sum.to_bits(), p.loss_sum.to_bits());
    assert_eq!(ck.progress.rows[0].lr.to_bits(), p.rows[0].lr.to_bits());
    assert!(ck.progress.rows[0].val_loss.is_nan());
    assert_eq!((ck.progress.step, ck.progress.loss_n, ck.progress.step_times.clone()), (7, 2, p.step_times.clone()));
    assert_eq!(ck.data_fingerprint, 0xfeed);
    ck.check_config(&cfg).unwrap();
    let s = &ck.tables[0];
    assert_eq!((&s.saved, s.step), (&SavedTable::Resident(tables[0].resident_records().unwrap().to_vec()), 1));
    let mut fresh = [EngramTable::new(50, 4, 1.0, 1)];
    ck.load_tables(&mut [&mut fresh[0]]).unwrap();
    assert_eq!(fresh[0].weights(), tables[0].weights());
    assert_eq!(peek(&dir).unwrap().step, 7);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_truncation_and_any_flipped_byte_is_detected() {
    let dir = run_dir("corrupt");
    let (cfg, model, optim, tables) = tiny_model();
    write(&dir, &cfg, 1, &progress(), &model, &optim, &[&tables[0]]).unwrap();
    let path = checkpoint_path(&dir);
    let good = std::fs::read(&path).unwrap();
    let cuts = [0, 5, 12, 20, good.len() / 3, good.len() / 2, good.len() - 5, good.len() - 1];
    for cut in cuts {
        std::fs::write(&path, &good[..cut]).unwrap();
        let e = read(&dir).unwrap_err();
        assert!(matches!(e, CheckpointError::Corrupt { .. }), "cut at {cut}: {e}");
    }
    for at in [3, 30, good.len() / 2, good.len() - 20] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        assert!(read(&dir).is_err(), "flipped byte {at} went unnoticed");
    }
    let mut longer = good.clone();
    longer.push(0);
    std::fs::write(&path, &longer).unwrap();
    assert!(read(&dir).unwrap_err().to_string().contains("after the end"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_changed_config_is_refused_naming_the_field() {
    let dir = run_dir("config");
    let (cfg, model, optim, tables) = tiny_model();
    write(&dir, &cfg, 1, &progress(), &model, &optim, &[&tables[0]]).unwrap();
    let ck = read(&dir).unwrap();
    let mut other = cfg.clone();
    other.train.lr *= 2.0;
    other.model.d_ff += 1;
    let e = ck.check_config(&other).unwrap_err().to_string();
    assert!(e.contains("train.lr") && e.contains("model.d_ff"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_checkpoint_is_reported_as_missing() {
    let dir = run_dir("missing");
    assert!(matches!(read(&dir), Err(CheckpointError::Missing { .. })));
}
