//! An experiment binary's command line, output directory and data, and running a list of
//! configurations through the one training loop.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::data::{DataConfig, PreparedData};
use crate::device::device_from_name;
use crate::config::ExperimentConfig;
use crate::train::{run, RunOptions, RunResult};

/// Options every experiment takes.
#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// A small, fast version (for CI and smoke tests).
    #[arg(long)]
    pub quick: bool,
    /// Output directory (default: runs/EXPERIMENT/, or runs/EXPERIMENT-quick/ with --quick).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Backend: flex (default), ndarray (feature `ndarray`), wgpu (feature `wgpu`) or cuda (feature `cuda`).
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// Base seed (runs with several seeds use seed, seed+1, ...).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace the results of a finished experiment in the output directory.
    #[arg(long)]
    pub overwrite: bool,
    /// Only redraw the plots from an existing output directory's files.
    #[arg(long)]
    pub plot_only: bool,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Tokenizer of the data: bpe (the corpus BPE, default), bytes (256 byte ids, to compare
    /// with byte-level results), or gpt2 / deepseek-v3 (remapped to the experiment's
    /// vocabulary size with an unknown id, for comparisons with earlier figures).
    #[arg(long, default_value = "bpe")]
    pub tokenizer: crate::tokenizer::TokenizerKind,
}

impl CommonArgs {
    /// The data of an experiment whose default vocabulary size is `vocab_size`: the chosen
    /// tokenizer at that size (bytes: 256); with `--quick`, [`QUICK_VAL_BOOKS`] held out.
    pub fn data(&self, vocab_size: usize) -> DataConfig {
        quick_data(DataConfig::for_tokenizer(self.tokenizer, vocab_size), self.quick)
    }
}

/// The held-out books of `--quick` runs: one short book, so that the final evaluation (every
/// held-out byte) stays a small share of a smoke run.
pub const QUICK_VAL_BOOKS: &[&str] = &["carroll-alice"];

pub(super) fn quick_data(mut data: DataConfig, quick: bool) -> DataConfig {
    if quick {
        data.val_books = QUICK_VAL_BOOKS.iter().map(|s| s.to_string()).collect();
    }
    data
}

/// Seeds per configuration of the multi-seed sweeps unless `--seeds` says otherwise.
pub const SWEEP_SEEDS: usize = 3;

/// Command-line flags of the multi-seed sweeps (`exp_scaling`, `exp_allocation`,
/// `exp_ablation`): [`CommonArgs`] plus the steps per run and the seeds per configuration.
#[derive(clap::Args, Clone, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Training steps per run (overrides the mode's default).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Seeds per configuration (at least 1).
    #[arg(long, default_value_t = SWEEP_SEEDS)]
    pub seeds: usize,
}

impl SweepArgs {
    /// Error unless `--seeds` is at least 1.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.seeds < 1 {
            anyhow::bail!("--seeds must be >= 1");
        }
        Ok(())
    }
}

/// Errors of an experiment binary.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// The output directory already holds a finished experiment.
    #[error("{0} already holds a finished experiment (summary.json); pass --overwrite to replace it or --out to write elsewhere")]
    Finished(PathBuf),
    /// The output directory cannot be created or written.
    #[error("cannot write to {path}: {source}")]
    Unwritable {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Anything else, with its message.
    #[error("{0}")]
    Other(String),
}

impl CommonArgs {
    /// The output directory for experiment `name`.
    pub fn out_dir(&self, name: &str) -> PathBuf {
        self.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(if self.quick { format!("{name}-quick") } else { name.to_string() }))
    }

    /// The chosen device (without autodiff).
    pub fn device(&self) -> anyhow::Result<Device> {
        Ok(device_from_name(&self.device)?)
    }
}

/// Make `dir` ready for a new experiment: refuse to replace a finished one without
/// `overwrite`, and check that it can be written.
pub fn prepare_out_dir(dir: &Path, overwrite: bool) -> Result<(), ExperimentError> {
    if dir.join("summary.json").exists() && !overwrite {
        return Err(ExperimentError::Finished(dir.to_path_buf()));
    }
    let unwritable = |source| ExperimentError::Unwritable { path: dir.to_path_buf(), source };
    std::fs::create_dir_all(dir).map_err(unwritable)?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"").map_err(unwritable)?;
    std::fs::remove_file(&probe).map_err(unwritable)?;
    Ok(())
}

/// Prepare the data, printing what was loaded.
pub fn load_data(cfg: &DataConfig) -> anyhow::Result<PreparedData> {
    let t = std::time::Instant::now();
    let data = PreparedData::prepare(cfg)?;
    eprintln!("data: {} ({:.1} s)", data.summary, t.elapsed().as_secs_f64());
    Ok(data)
}

/// Run every configuration in turn into `out/<name>/`, printing one line per finished run.
pub fn run_all(configs: &[ExperimentConfig], data: &PreparedData, device: &Device, out: &Path, progress: bool, eval_memory_off: bool) -> anyhow::Result<Vec<RunResult>> {
    let mut results = Vec::with_capacity(configs.len());
    for (i, cfg) in configs.iter().enumerate() {
        eprintln!("[{}/{}] {}", i + 1, configs.len(), cfg.name);
        // With its final checkpoint, so that `engram generate`, `inspect` and `export` read it.
        let r = run(cfg, data, device, &out.join(&cfg.name), &RunOptions { progress, eval_memory_off, checkpoints: true, ..RunOptions::default() })?;
        eprintln!(
            "[{}/{}] {}: {:.4} bpb, {:.0} tok/s, {:.1} s",
            i + 1,
            configs.len(),
            cfg.name,
            r.val_bpb,
            r.tokens_per_sec,
            r.wall_seconds
        );
        results.push(r);
    }
    Ok(results)
}

/// The per-run record of an experiment's `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// Run name (its directory under the experiment's).
    pub name: String,
    /// "baseline" or "engram".
    pub variant: String,
    /// Blocks.
    pub n_layers: usize,
    /// Hidden size.
    pub d_model: usize,
    /// Table rows summed over Engram layers (0 for a baseline).
    pub table_rows: u64,
    /// Dense parameters.
    pub params_backbone: u64,
    /// Table parameters.
    pub params_table: u64,
    /// Table bytes (f32 weights).
    pub table_bytes: u64,
    /// Forward FLOPs per token.
    pub flops_per_token: u64,
    /// Training tokens.
    pub train_tokens: u64,
    /// Final validation bits per byte, over every held-out byte (the headline metric).
    pub val_bpb: f64,
    /// Bits per byte with the memory zeroed (Engram runs).
    #[serde(default)]
    pub val_bpb_memory_off: Option<f64>,
    /// Final validation loss, nats per token.
    pub val_loss: f32,
    /// Nats per token with the memory zeroed (Engram runs).
    #[serde(default)]
    pub val_loss_memory_off: Option<f32>,
    /// Held-out bytes scored.
    pub val_bytes: u64,
    /// Epochs of the training stream seen.
    pub epochs: f64,
    /// Seconds of the final evaluation.
    pub eval_seconds: f64,
    /// Training tokens per second.
    pub tokens_per_sec: f64,
    /// Wall seconds of the run.
    pub wall_seconds: f64,
    /// Seed.
    pub seed: u64,
}

impl RunRecord {
    /// The record of a finished run of `cfg`.
    pub fn new(cfg: &ExperimentConfig, r: &RunResult) -> Self {
        Self {
            name: r.name.clone(),
            variant: r.variant.clone(),
            n_layers: cfg.model.n_layers,
            d_model: cfg.model.d_model,
            table_rows: r.cost.table_rows.iter().sum(),
            params_backbone: r.cost.params_backbone,
            params_table: r.cost.params_table,
            table_bytes: r.cost.table_bytes,
            flops_per_token: r.cost.flops_per_token,
            train_tokens: r.train_tokens,
            val_bpb: r.val_bpb,
            val_bpb_memory_off: r.val_bpb_memory_off,
            val_loss: r.val_loss,
            val_loss_memory_off: r.val_loss_memory_off,
            val_bytes: r.val_bytes,
            epochs: r.epochs,
            eval_seconds: r.eval_seconds,
            tokens_per_sec: r.tokens_per_sec,
            wall_seconds: r.wall_seconds,
            seed: r.seed,
        }
    }
}

/// Half-width of the 95 % confidence interval of the mean of `xs` (Student's t with
/// `n − 1` degrees of freedom: `t · s / √n`); `None` below two values.
pub fn ci95_half_width(xs: &[f64]) -> Option<f64> {
    // Two-sided 95 % quantiles t(0.975, df) for df = 1..=30 (standard tables); 1.96 beyond.
    const T975: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080,
        2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    let n = xs.len();
    if n < 2 {
        return None;
    }
    let t = T975.get(n - 2).copied().unwrap_or(1.96);
    Some(t * mean_std(xs).1 / (n as f64).sqrt())
}

/// Mean and sample standard deviation (0 for fewer than two values).
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Print a message and return a failure exit code for a binary's `main`.
pub fn exit_with(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std_of_known_values() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert!((m - 2.5).abs() < 1e-12);
        assert!((s - 1.2909944487358056).abs() < 1e-12);
        assert_eq!(mean_std(&[5.0]), (5.0, 0.0));
    }

    #[test]
    fn ci95_uses_students_t() {
        // Three values with s = 1: t(0.975, 2) = 4.303 from the tables, / √3.
        let h = ci95_half_width(&[1.0, 2.0, 3.0]).unwrap();
        assert!((h - 4.303 / 3f64.sqrt()).abs() < 1e-12, "{h}");
        assert!(ci95_half_width(&[1.0]).is_none());
        // Many values: the normal quantile.
        let xs: Vec<f64> = (0..100).map(|i| (i % 2) as f64).collect();
        assert!((ci95_half_width(&xs).unwrap() - 1.96 * mean_std(&xs).1 / 10.0).abs() < 1e-12);
    }

    #[test]
    fn a_finished_experiment_is_not_replaced_without_overwrite() {
        let dir = std::env::temp_dir().join(format!("engram-exp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("summary.json"), "{}").unwrap();
        let e = prepare_out_dir(&dir, false).unwrap_err();
        assert!(e.to_string().contains("--overwrite"));
        assert_eq!(std::fs::read_to_string(dir.join("summary.json")).unwrap(), "{}");
        assert!(prepare_out_dir(&dir, true).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
