//! The training loop on the shipped corpus: loss goes down, files are written, and
//! `exp_engram --quick` produces every promised output.

use std::path::PathBuf;
use std::process::Command;

use burn::tensor::Device;
use engram::data::{DataConfig, PreparedData};
use engram::engram::{EngramConfig, EngramControl};
use engram::model::ModelConfig;
use engram::table::UpdateMode;
use engram::checkpoint;
use engram::config::{ExperimentConfig, TrainConfig};
use engram::train::{run, table_use, RunOptions, RunResult};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("engram-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn small_config(engram: bool) -> ExperimentConfig {
    // One short held-out book keeps the final evaluation (every held-out byte) quick.
    let data = DataConfig { vocab_size: 512, val_books: vec!["carroll-alice".into()], ..DataConfig::default() };
    let mut model = ModelConfig::new(512, 32, 2, 2, 32);
    if engram {
        model = model.with_engram(EngramConfig { layer_ids: vec![0], table_size: vec![1024, 1024], d_head: 8, ..EngramConfig::default() });
    }
    ExperimentConfig {
        name: if engram { "engram" } else { "baseline" }.into(),
        model,
        train: TrainConfig { steps: 40, batch_size: 8, seq_len: 32, warmup_steps: 4, eval_every: 20, eval_windows: 16, ..TrainConfig::default() },
        data,
    }
}

#[test]
fn a_few_training_steps_reduce_the_loss_and_write_the_run_directory() {
    let data = PreparedData::prepare(&small_config(false).data).unwrap();
    for engram in [false, true] {
        let cfg = small_config(engram);
        let dir = temp_dir(&cfg.name);
        let r = run(&cfg, &data, &Device::flex(), &dir, &RunOptions { progress: false, eval_memory_off: true, ..RunOptions::default() }).unwrap();
        let first = r.curve.first().unwrap();
        let last = r.curve.last().unwrap();
        // ln(512) ≈ 6.24 is the loss of a uniform guess.
        assert!(first.train_loss < 6.5, "{}: first logged loss {}", cfg.name, first.train_loss);
        assert!(last.train_loss < first.train_loss - 0.3, "{}: {} → {}", cfg.name, first.train_loss, last.train_loss);
        assert!(r.val_loss.is_finite() && r.val_loss < 6.0, "{}: val {}", cfg.name, r.val_loss);
        assert_eq!(r.val_loss_memory_off.is_some(), engram);
        for f in ["config.json", "metrics.csv", "summary.json"] {
            assert!(dir.join(f).is_file(), "{} missing {f}", cfg.name);
        }
        let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
        assert!(csv.starts_with("step,tokens,train_loss,val_loss,val_bpb,lr,elapsed_seconds\n"));
        assert_eq!(csv.lines().count(), 1 + r.curve.len());
        if engram {
            assert_eq!(r.cost.table_rows.len(), 1);
            assert!(r.cost.params_table > 0);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn overlapping_the_table_update_and_next_batch_with_the_optimiser_changes_no_bit() {
    // With two or more cores, `run` updates the tables and prepares the next batch on a second
    // core (with the row-sparse update, in blocks of rows that both threads take); `sequential`
    // does everything on one thread. Both must train the same model.
    let data = PreparedData::prepare(&small_config(true).data).unwrap();
    for update in [UpdateMode::Sparse, UpdateMode::Dense] {
        let mut cfg = small_config(true);
        cfg.train.checkpoint_every = 0;
        cfg.model.engram.as_mut().unwrap().update = update;
        let mut results = Vec::new();
        for sequential in [false, true] {
            let dir = temp_dir(&format!("overlap-{update:?}-{sequential}"));
            let opts = RunOptions { eval_memory_off: true, checkpoints: true, sequential, ..RunOptions::default() };
            let r = run(&cfg, &data, &Device::flex(), &dir, &opts).unwrap();
            let ck = checkpoint::read(&dir).unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
            results.push((r, ck));
        }
        let bits = |(r, ck): &(RunResult, checkpoint::Checkpoint)| {
            let curve: Vec<_> = r.curve.iter().map(|row| (row.step, row.train_loss.to_bits(), row.val_loss.to_bits(), row.val_bpb.to_bits())).collect();
            let tables: Vec<_> = ck.tables.iter().map(|t| (t.step, t.saved.clone())).collect();
            // The backbone is compared through its losses: the checkpoint's module record also
            // holds parameter ids, which differ from run to run.
            (curve, r.val_loss.to_bits(), r.val_loss_memory_off.map(f32::to_bits), ck.progress.rng.clone(), tables)
        };
        let (overlapped, sequential) = (bits(&results[0]), bits(&results[1]));
        assert_eq!(overlapped.0.iter().filter(|row| f32::from_bits(row.2).is_finite()).count(), 2, "two evaluations");
        assert_eq!(overlapped.4[0].0, cfg.train.steps as u64, "one table step per training step");
        assert!(overlapped == sequential, "{update:?}: the overlapped run differs from the sequential one");
    }
}

#[test]
fn exp_engram_quick_writes_every_promised_file() {
    let dir = temp_dir("exp-engram-quick");
    let out = Command::new(env!("CARGO_BIN_EXE_exp_engram"))
        .args(["--quick", "--no-progress", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("val bpb") && stdout.contains("baseline-") && stdout.contains("engram-"), "{stdout}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let runs = summary["runs"].as_array().unwrap();
    assert!(runs.iter().filter(|r| r["variant"] == "baseline").count() >= 3);
    assert!(runs.iter().filter(|r| r["variant"] == "engram").count() >= 3);
    for r in runs {
        for key in ["name", "variant", "n_layers", "d_model", "table_rows", "params_backbone", "params_table", "table_bytes", "flops_per_token", "train_tokens", "val_loss", "val_bpb", "val_bytes", "epochs", "tokens_per_sec", "wall_seconds"] {
            assert!(!r[key].is_null(), "run {} lacks {key}", r["name"]);
        }
        let run_dir = dir.join(r["name"].as_str().unwrap());
        for f in ["config.json", "metrics.csv", "summary.json"] {
            assert!(run_dir.join(f).is_file());
        }
    }
    for stem in ["loss_vs_tokens", "loss_vs_flops", "loss_vs_params", "throughput_vs_table"] {
        for ext in ["png", "svg"] {
            let p = dir.join(format!("{stem}.{ext}"));
            assert!(std::fs::metadata(&p).map(|m| m.len() > 1000).unwrap_or(false), "{} missing or empty", p.display());
            assert!(summary["plots"].as_array().unwrap().iter().any(|x| x.as_str().unwrap().ends_with(&format!("{stem}.{ext}"))));
        }
    }
    // A second run into the same directory refuses to replace the finished experiment.
    let before = std::fs::read(dir.join("summary.json")).unwrap();
    let again = Command::new(env!("CARGO_BIN_EXE_exp_engram")).args(["--quick", "--no-progress", "--out"]).arg(&dir).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--overwrite"));
    assert_eq!(std::fs::read(dir.join("summary.json")).unwrap(), before);
    // Plots can be redrawn from the files alone.
    let replot = Command::new(env!("CARGO_BIN_EXE_exp_engram")).args(["--quick", "--plot-only", "--out"]).arg(&dir).output().unwrap();
    assert!(replot.status.success(), "{}", String::from_utf8_lossy(&replot.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_frozen_table_control_never_changes_a_row() {
    // A frozen table after 40 steps holds the records of a frozen table after 2 (its initial
    // ones: weights and optimiser state) and never stepped, while the layer around it trains;
    // the same run unfrozen moves its table.
    let data = PreparedData::prepare(&small_config(true).data).unwrap();
    let mut tables = Vec::new();
    for (control, steps) in [(EngramControl::FrozenTable, 40), (EngramControl::FrozenTable, 2), (EngramControl::None, 40)] {
        let mut cfg = small_config(true);
        cfg.train.steps = steps;
        cfg.train.checkpoint_every = 0;
        cfg.model.engram.as_mut().unwrap().control = control;
        let dir = temp_dir(&format!("frozen-{control:?}-{steps}"));
        let r = run(&cfg, &data, &Device::flex(), &dir, &RunOptions { checkpoints: true, ..RunOptions::default() }).unwrap();
        assert!(r.val_loss.is_finite());
        let ck = checkpoint::read(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        tables.push((ck.tables[0].step, ck.tables[0].saved.clone(), r.curve.last().unwrap().train_loss));
    }
    assert_eq!((tables[0].0, tables[1].0), (0, 0), "a frozen table never steps");
    assert!(tables[0].1 == tables[1].1, "a frozen table's records changed in training");
    assert_eq!(tables[2].0, 40);
    assert!(tables[2].1 != tables[0].1, "the unfrozen table did not move");
    assert!(tables[0].2 < 6.0, "the frozen run still trains: last loss {}", tables[0].2);
}

#[test]
fn the_replayed_table_use_counts_the_rows_training_updated() {
    // The rows the replay says the training batches read are exactly the table's rows with an
    // optimiser state after training (Adam's moments start at zero and move with any
    // non-zero gradient).
    use engram::table::{EngramTable, Init, RowLayout, TableOptimizer, WeightFormat};
    let cfg = {
        let mut c = small_config(true);
        c.train.checkpoint_every = 0;
        c
    };
    let data = PreparedData::prepare(&cfg.data).unwrap();
    let dir = temp_dir("table-use");
    run(&cfg, &data, &Device::flex(), &dir, &RunOptions { checkpoints: true, ..RunOptions::default() }).unwrap();
    let ck = checkpoint::read(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let t = &ck.tables[0];
    let checkpoint::SavedTable::Resident(records) = &t.saved else { panic!("a resident table") };
    let mut table = EngramTable::with_layout(t.rows, RowLayout { dim: t.dim, optimizer: TableOptimizer::Adam, weights: WeightFormat::F32 }, Init { seed: 0, std: 0.0 });
    table.restore_resident(t.step, records).unwrap();
    let state = table.snapshot().1;
    let trained = state.chunks_exact(2 * t.dim).filter(|s| s.iter().any(|&x| x != 0.0)).count() as u64;

    let used = table_use(&cfg, &data).unwrap();
    assert_eq!(used.rows_touched, vec![trained]);
    assert_eq!(used.tokens, (cfg.train.steps * cfg.train.batch_size * cfg.train.seq_len) as u64);
    let heads = cfg.model.engram.as_ref().unwrap().n_head_per_ngram as u64;
    assert_eq!(used.distinct_ngrams.len(), 2, "orders 2 and 3");
    assert!(used.distinct_ngrams[0] < used.distinct_ngrams[1], "{:?}", used.distinct_ngrams);
    assert!(trained <= heads * used.distinct_ngrams.iter().sum::<u64>(), "one row per n-gram and head at most");
    assert!(trained <= t.rows as u64);
}
