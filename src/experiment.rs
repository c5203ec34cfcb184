//! What every experiment binary shares: its command-line options, its output directory, its
//! data, and running a list of configurations through the one training loop.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::data::{DataConfig, PreparedData};
use crate::device::device_from_name;
use crate::train::{run, ExperimentConfig, RunOptions, RunResult};

/// Options every experiment takes.
#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// A small, fast version (for CI and smoke tests).
    #[arg(long)]
    pub quick: bool,
    /// Output directory (default: runs/EXPERIMENT/, or runs/EXPERIMENT-quick/ with --quick).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Backend: flex (default), ndarray (feature `ndarray`) or wgpu (feature `wgpu`).
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

fn quick_data(mut data: DataConfig, quick: bool) -> DataConfig {
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
        let r = run(cfg, data, device, &out.join(&cfg.name), &RunOptions { progress, eval_memory_off, ..RunOptions::default() })?;
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

// ---------------------------------------------------------------------------------------
// Sweeps: several configurations, each over several seeds, aggregated per configuration.
// ---------------------------------------------------------------------------------------

/// One configuration of a sweep, to be trained once per seed.
#[derive(Clone, Debug)]
pub struct SweepSpec {
    /// The configuration's label, shared by its seeds (e.g. `engram-t4096`).
    pub group: String,
    /// Its value on the sweep's numeric axis (e.g. table slots), if the sweep has one.
    pub x: Option<f64>,
    /// The run (its `name` must be unique in the sweep; `train.seed` set per seed).
    pub config: ExperimentConfig,
}

/// One finished run of a sweep, as recorded in the experiment's `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SweepRun {
    /// The configuration this run belongs to.
    pub group: String,
    /// The group's value on the sweep's numeric axis.
    #[serde(default)]
    pub x: Option<f64>,
    /// What every experiment records of a run.
    #[serde(flatten)]
    pub record: RunRecord,
    /// Routed-expert parameters (0 without a mixture of experts).
    pub params_experts: u64,
    /// Parameters a token activates.
    pub params_activated: u64,
    /// Sparse parameters: idle routed experts + Engram tables.
    pub params_sparse: u64,
    /// Median seconds per training step.
    pub median_step_seconds: f64,
}

impl SweepRun {
    /// The record of a finished run of `spec`.
    pub fn new(spec: &SweepSpec, r: &RunResult) -> Self {
        Self {
            group: spec.group.clone(),
            x: spec.x,
            record: RunRecord::new(&spec.config, r),
            params_experts: r.cost.params_experts,
            params_activated: r.cost.params_activated,
            params_sparse: r.cost.params_sparse(),
            median_step_seconds: r.median_step_seconds,
        }
    }
}

/// Mean ± standard deviation of one configuration over its seeds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GroupStats {
    /// The configuration's label.
    pub group: String,
    /// Its value on the sweep's numeric axis.
    pub x: Option<f64>,
    /// Runs (seeds) aggregated.
    pub n: usize,
    /// Their seeds.
    pub seeds: Vec<u64>,
    /// Mean final validation bits per byte.
    pub val_bpb_mean: f64,
    /// Sample standard deviation of the final bits per byte (0 for one seed).
    pub val_bpb_std: f64,
    /// Mean bits per byte with the memory zeroed (when every run measured it).
    pub val_bpb_memory_off_mean: Option<f64>,
    /// Its standard deviation.
    pub val_bpb_memory_off_std: Option<f64>,
    /// Mean final validation loss, nats per token.
    pub val_loss_mean: f64,
    /// Table parameters (of the first run; equal across seeds).
    pub params_table: u64,
    /// Sparse parameters (idle experts + tables).
    pub params_sparse: u64,
    /// Activated parameters.
    pub params_activated: u64,
    /// Forward FLOPs per token.
    pub flops_per_token: u64,
    /// Mean wall seconds per run.
    pub wall_seconds_mean: f64,
}

/// Group `items` by `key`, groups in order of first appearance, items in input order.
pub fn group_by<T, K: PartialEq>(items: &[T], key: impl Fn(&T) -> K) -> Vec<(K, Vec<&T>)> {
    let mut groups: Vec<(K, Vec<&T>)> = Vec::new();
    for item in items {
        let k = key(item);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, members)) => members.push(item),
            None => groups.push((k, vec![item])),
        }
    }
    groups
}

/// Aggregate runs per group (in order of first appearance).
pub fn aggregate(runs: &[SweepRun]) -> Vec<GroupStats> {
    group_by(runs, |r| r.group.clone())
        .into_iter()
        .map(|(group, members)| {
            let first = members[0];
            let bpb: Vec<f64> = members.iter().map(|r| r.record.val_bpb).collect();
            let (val_bpb_mean, val_bpb_std) = mean_std(&bpb);
            let losses: Vec<f64> = members.iter().map(|r| r.record.val_loss as f64).collect();
            let off: Option<Vec<f64>> = members.iter().map(|r| r.record.val_bpb_memory_off).collect();
            let off = off.filter(|v| !v.is_empty()).map(|v| mean_std(&v));
            let walls: Vec<f64> = members.iter().map(|r| r.record.wall_seconds).collect();
            GroupStats {
                group,
                x: first.x,
                n: members.len(),
                seeds: members.iter().map(|r| r.record.seed).collect(),
                val_bpb_mean,
                val_bpb_std,
                val_bpb_memory_off_mean: off.map(|o| o.0),
                val_bpb_memory_off_std: off.map(|o| o.1),
                val_loss_mean: mean_std(&losses).0,
                params_table: first.record.params_table,
                params_sparse: first.params_sparse,
                params_activated: first.params_activated,
                flops_per_token: first.record.flops_per_token,
                wall_seconds_mean: mean_std(&walls).0,
            }
        })
        .collect()
}

/// An ordinary least-squares line `y = intercept + slope · x` with standard errors.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct LinearFit {
    /// Slope.
    pub slope: f64,
    /// Standard error of the slope, `sqrt(s² / Sxx)` with `s² = RSS / (n − 2)`; NaN for n = 2.
    pub slope_se: f64,
    /// Intercept.
    pub intercept: f64,
    /// Standard error of the intercept, `sqrt(s² · (1/n + x̄² / Sxx))`; NaN for n = 2.
    pub intercept_se: f64,
    /// Coefficient of determination.
    pub r2: f64,
    /// Points fitted.
    pub n: usize,
}

/// Least-squares fit of `ys` on `xs`; `None` with fewer than two points or when every x is
/// equal.
pub fn linear_fit(xs: &[f64], ys: &[f64]) -> Option<LinearFit> {
    let n = xs.len().min(ys.len());
    if n < 2 {
        return None;
    }
    let (xs, ys) = (&xs[..n], &ys[..n]);
    let nf = n as f64;
    let mx = xs.iter().sum::<f64>() / nf;
    let my = ys.iter().sum::<f64>() / nf;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let syy: f64 = ys.iter().map(|y| (y - my).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let rss: f64 = xs.iter().zip(ys).map(|(x, y)| (y - intercept - slope * x).powi(2)).sum();
    let s2 = if n > 2 { rss / (nf - 2.0) } else { f64::NAN };
    Some(LinearFit {
        slope,
        slope_se: (s2 / sxx).sqrt(),
        intercept,
        intercept_se: (s2 * (1.0 / nf + mx * mx / sxx)).sqrt(),
        r2: if syy > 0.0 { 1.0 - rss / syy } else { f64::NAN },
        n,
    })
}

/// An experiment's `summary.json` for a sweep: every run, the per-group aggregates, the
/// experiment's own analysis and its plots.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepSummary {
    /// Experiment name.
    pub experiment: String,
    /// Backend.
    pub device: String,
    /// Base seed.
    pub seed: u64,
    /// Seeds per configuration.
    pub seeds: usize,
    /// `--quick` mode.
    pub quick: bool,
    /// The data, in words.
    pub data: String,
    /// Every run.
    pub runs: Vec<SweepRun>,
    /// Mean ± std per configuration.
    pub groups: Vec<GroupStats>,
    /// What the experiment computed from the groups (fits, budgets, ...).
    #[serde(default)]
    pub analysis: serde_json::Value,
    /// Plot files.
    pub plots: Vec<String>,
    /// Wall seconds of the whole experiment (training and evaluation).
    pub wall_seconds: f64,
}

impl SweepSummary {
    /// Read `dir/summary.json`.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("summary.json");
        let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e} (run the experiment first, without --plot-only)", path.display()))?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// The group labelled `group`.
    pub fn group(&self, group: &str) -> Option<&GroupStats> {
        self.groups.iter().find(|g| g.group == group)
    }
}

/// The result of `cfg` already finished in `dir` (same `config.json`), if any.
fn finished_run(cfg: &ExperimentConfig, dir: &Path) -> Option<RunResult> {
    let config: ExperimentConfig = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).ok()?).ok()?;
    if &config != cfg {
        return None;
    }
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).ok()?).ok()
}

/// Train every spec into `out/<name>/`, printing one line per finished run. With `reuse`, a
/// run whose directory already holds a finished run of the same configuration (an
/// interrupted experiment) is read back instead of trained again.
pub fn run_sweep(specs: &[SweepSpec], data: &PreparedData, device: &Device, out: &Path, progress: bool, eval_memory_off: bool, reuse: bool) -> anyhow::Result<Vec<SweepRun>> {
    let mut runs = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let cfg = &spec.config;
        let dir = out.join(&cfg.name);
        let (r, how) = match reuse.then(|| finished_run(cfg, &dir)).flatten() {
            Some(r) => (r, "reused"),
            None => {
                eprintln!("[{}/{}] {}", i + 1, specs.len(), cfg.name);
                let opts = RunOptions { progress, eval_memory_off, ..RunOptions::default() };
                (run(cfg, data, device, &dir, &opts)?, "trained")
            }
        };
        eprintln!(
            "[{}/{}] {} ({how}): {:.4} bpb{}, {:.3} s/step, {:.1} s",
            i + 1,
            specs.len(),
            cfg.name,
            r.val_bpb,
            r.val_bpb_memory_off.map(|v| format!(" (memory off {v:.4})")).unwrap_or_default(),
            r.median_step_seconds,
            r.wall_seconds
        );
        runs.push(SweepRun::new(spec, &r));
    }
    Ok(runs)
}

/// `specs` for every seed `base_seed .. base_seed + n_seeds`: each configuration's name gets
/// a `-s<seed>` suffix and its `train.seed` is set.
pub fn with_seeds(specs: Vec<SweepSpec>, base_seed: u64, n_seeds: usize) -> Vec<SweepSpec> {
    let mut out = Vec::with_capacity(specs.len() * n_seeds);
    for spec in specs {
        for s in 0..n_seeds as u64 {
            let mut run = spec.clone();
            let seed = base_seed + s;
            run.config.name = format!("{}-s{seed}", spec.config.name);
            run.config.train.seed = seed;
            out.push(run);
        }
    }
    out
}

/// Run a sweep experiment, or with `--plot-only` read its finished summary back.
///
/// Returns the output directory and the summary with `runs` and `groups` filled; the caller
/// adds its `analysis` and `plots` and writes it with [`crate::run_dir::write_json`].
pub fn sweep(common: &CommonArgs, experiment: &str, specs: Vec<SweepSpec>, n_seeds: usize, eval_memory_off: bool) -> anyhow::Result<(PathBuf, SweepSummary)> {
    let dir = common.out_dir(experiment);
    if common.plot_only {
        let summary = SweepSummary::read(&dir)?;
        return Ok((dir, summary));
    }
    let device = common.device()?;
    prepare_out_dir(&dir, common.overwrite)?;
    let specs = with_seeds(specs, common.seed, n_seeds);
    let first = specs.first().ok_or_else(|| anyhow::anyhow!("{experiment}: no configurations"))?;
    let data = load_data(&first.config.data)?;
    let t0 = std::time::Instant::now();
    let runs = run_sweep(&specs, &data, &device, &dir, !common.no_progress, eval_memory_off, !common.overwrite)?;
    let groups = aggregate(&runs);
    let summary = SweepSummary {
        experiment: experiment.to_string(),
        device: common.device.clone(),
        seed: common.seed,
        seeds: n_seeds,
        quick: common.quick,
        data: data.summary.clone(),
        runs,
        groups,
        analysis: serde_json::Value::Null,
        plots: Vec::new(),
        wall_seconds: t0.elapsed().as_secs_f64(),
    };
    Ok((dir, summary))
}

/// Per-seed differences `value(run of group) − val_bpb(run of reference)`, pairing runs by
/// seed (seeds missing from either group are skipped; so are runs where `value` is `None`).
pub fn paired_differences(runs: &[SweepRun], group: &str, reference: &str, value: impl Fn(&SweepRun) -> Option<f64>) -> Vec<f64> {
    runs.iter()
        .filter(|r| r.group == group)
        .filter_map(|r| {
            let base = runs.iter().find(|b| b.group == reference && b.record.seed == r.record.seed)?;
            Some(value(r)? - base.record.val_bpb)
        })
        .collect()
}

/// Table rows of Engram layers whose heads all start at per-head base size `base`: the sum of
/// the spec §3 prime walk over `layers` layers × `orders` orders × `heads_per_order` heads.
pub fn engram_table_rows(base: u64, orders: usize, heads_per_order: usize, layers: usize) -> u64 {
    let walk = crate::hashing::prime_walk(&vec![base; orders], heads_per_order, layers).expect("a prime exists above every u32-sized base");
    walk.iter().flatten().flatten().sum()
}

/// The largest per-head base size whose tables ([`engram_table_rows`]) have at most `rows`
/// rows in all: how experiments hold a table budget fixed although head sizes are distinct
/// primes above the base.
pub fn engram_base_size_for_rows(rows: u64, orders: usize, heads_per_order: usize, layers: usize) -> u64 {
    let heads = (orders * heads_per_order * layers).max(1) as u64;
    let mut base = (rows / heads).max(1);
    while base > 1 && engram_table_rows(base, orders, heads_per_order, layers) > rows {
        base -= 1;
    }
    base
}

/// `mean ± std` with 4 decimals.
pub fn pm(mean: f64, std: f64) -> String {
    format!("{mean:.4} ± {std:.4}")
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    fn run(group: &str, seed: u64, bpb: f64, off: Option<f64>) -> SweepRun {
        SweepRun {
            group: group.into(),
            x: Some(seed as f64),
            record: RunRecord {
                name: format!("{group}-s{seed}"),
                variant: "engram".into(),
                n_layers: 2,
                d_model: 64,
                table_rows: 10,
                params_backbone: 100,
                params_table: 160,
                table_bytes: 640,
                flops_per_token: 1000,
                train_tokens: 1,
                val_bpb: bpb,
                val_bpb_memory_off: off,
                // nats per token at 4 bytes per token
                val_loss: (bpb * 4.0 * std::f64::consts::LN_2) as f32,
                val_loss_memory_off: off.map(|o| (o * 4.0 * std::f64::consts::LN_2) as f32),
                val_bytes: 400,
                epochs: 0.5,
                eval_seconds: 0.5,
                tokens_per_sec: 1.0,
                wall_seconds: 2.0,
                seed,
            },
            params_experts: 0,
            params_activated: 100,
            params_sparse: 160,
            median_step_seconds: 0.1,
        }
    }

    #[test]
    fn group_by_keeps_first_appearance_order() {
        let g = group_by(&[3, 1, 4, 1, 5, 9, 2, 6], |x| x % 3);
        let keys: Vec<i32> = g.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, vec![0, 1, 2]);
        assert_eq!(g[1].1, vec![&1, &4, &1]);
    }

    #[test]
    fn aggregate_gives_mean_and_sample_std_per_group() {
        let runs = vec![run("a", 0, 4.0, Some(5.0)), run("b", 0, 1.0, None), run("a", 1, 6.0, Some(7.0))];
        let g = aggregate(&runs);
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].group.as_str(), g[0].n, g[0].seeds.clone()), ("a", 2, vec![0, 1]));
        assert!((g[0].val_bpb_mean - 5.0).abs() < 1e-12);
        assert!((g[0].val_bpb_std - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(g[0].val_bpb_memory_off_mean, Some(6.0));
        assert_eq!((g[1].val_bpb_std, g[1].val_bpb_memory_off_mean), (0.0, None));
    }

    #[test]
    fn linear_fit_recovers_a_line_and_its_standard_error() {
        let f = linear_fit(&[1.0, 2.0, 3.0, 4.0], &[3.0, 5.0, 7.0, 9.0]).unwrap();
        assert!((f.slope - 2.0).abs() < 1e-12 && (f.intercept - 1.0).abs() < 1e-12);
        assert!(f.slope_se.abs() < 1e-12 && (f.r2 - 1.0).abs() < 1e-12);
        // y = 0, 1, 0, 1 on x = 0..4: slope 0.2, RSS 0.8, s² 0.4, Sxx 5 → se sqrt(0.08).
        let f = linear_fit(&[0.0, 1.0, 2.0, 3.0], &[0.0, 1.0, 0.0, 1.0]).unwrap();
        assert!((f.slope - 0.2).abs() < 1e-12);
        assert!((f.slope_se - 0.08f64.sqrt()).abs() < 1e-12);
        assert!((f.intercept - 0.2).abs() < 1e-12);
        // se(intercept) = sqrt(0.4 · (1/4 + 1.5²/5)) = sqrt(0.28).
        assert!((f.intercept_se - 0.28f64.sqrt()).abs() < 1e-12);
        assert!(linear_fit(&[1.0], &[1.0]).is_none());
        assert!(linear_fit(&[2.0, 2.0], &[1.0, 3.0]).is_none());
        assert!(linear_fit(&[1.0, 2.0], &[1.0, 3.0]).unwrap().slope_se.is_nan());
    }

    #[test]
    fn seeds_get_their_own_names_and_train_seeds() {
        let cfg = ExperimentConfig {
            name: "x".into(),
            model: crate::model::ModelConfig::tiny(16, 8),
            train: crate::train::TrainConfig::default(),
            data: DataConfig::default(),
        };
        let specs = with_seeds(vec![SweepSpec { group: "g".into(), x: None, config: cfg }], 7, 3);
        let names: Vec<(String, u64)> = specs.iter().map(|s| (s.config.name.clone(), s.config.train.seed)).collect();
        assert_eq!(names, vec![("x-s7".into(), 7), ("x-s8".into(), 8), ("x-s9".into(), 9)]);
    }

    #[test]
    fn paired_differences_match_runs_by_seed() {
        let runs = vec![run("base", 0, 5.0, None), run("base", 1, 6.0, None), run("v", 1, 5.5, Some(7.0)), run("v", 0, 4.0, None), run("v", 2, 1.0, None)];
        let d = paired_differences(&runs, "v", "base", |r| Some(r.record.val_bpb));
        assert_eq!(d, vec![-0.5, -1.0], "seed 2 has no baseline");
        let off = paired_differences(&runs, "v", "base", |r| r.record.val_bpb_memory_off);
        assert_eq!(off, vec![1.0]);
    }

    #[test]
    fn base_size_keeps_the_table_within_its_row_budget() {
        // Demo layout (spec §3): base 646400, 2 orders × 8 heads → 10,344,164 rows in layer 1.
        assert_eq!(engram_table_rows(646_400, 2, 8, 1), 10_344_164);
        for (rows, orders, heads, layers) in [(8_000u64, 2, 4, 1), (8_000, 1, 8, 1), (8_000, 2, 4, 2), (100_000, 2, 4, 1)] {
            let base = engram_base_size_for_rows(rows, orders, heads, layers);
            let got = engram_table_rows(base, orders, heads, layers);
            assert!(got <= rows, "{got} > {rows}");
            assert!(engram_table_rows(base + 1, orders, heads, layers) > rows || got == rows, "base {base} is not the largest");
            assert!(got as f64 > 0.97 * rows as f64, "{got} far below {rows}");
        }
    }

    #[test]
    fn sweep_run_round_trips_through_json_flattened() {
        let r = run("a", 3, 4.5, Some(4.75));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["val_bpb"], 4.5);
        assert_eq!(v["group"], "a");
        let back: SweepRun = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}

use crate::train::TrainConfig;

/// The small-scale setup shared by the science experiments (`exp_scaling`, `exp_allocation`,
/// `exp_ablation`): one backbone, one data set, one training recipe; only the experiment's
/// variable changes between runs.
///
/// Default: the backbone and data of `exp_engram`'s default (D 64, 2 blocks, 4 heads, the
/// 4,096-id corpus BPE, batches of 16 × 64 tokens), Engram before block 1.
/// `--quick`: D 32, 2 blocks, 2 heads, vocabulary 1,024, 40 steps of 8 × 32 tokens, one
/// held-out book ([`QUICK_VAL_BOOKS`]).
#[derive(Clone, Debug)]
pub struct ScienceSetup {
    /// Hidden size.
    pub d_model: usize,
    /// Blocks.
    pub n_layers: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Model vocabulary.
    pub vocab_size: usize,
    /// Tokenizer.
    pub tokenizer: crate::tokenizer::TokenizerKind,
    /// `--quick`: only [`QUICK_VAL_BOOKS`] are held out.
    pub quick: bool,
    /// The block that gets Engram in single-block configurations.
    pub engram_block: usize,
    /// Training (seed set per run).
    pub train: TrainConfig,
}

impl ScienceSetup {
    /// The setup for `--quick` or the default mode; `default_steps` is the experiment's step
    /// count in the default mode, `steps` a command-line override (either mode).
    pub fn new(quick: bool, default_steps: usize, steps: Option<usize>) -> Self {
        if quick {
            Self {
                d_model: 32,
                n_layers: 2,
                n_heads: 2,
                vocab_size: 1024,
                tokenizer: crate::tokenizer::TokenizerKind::Bpe,
                quick: true,
                engram_block: 1,
                train: TrainConfig {
                    steps: steps.unwrap_or(40),
                    batch_size: 8,
                    seq_len: 32,
                    warmup_steps: 5,
                    eval_every: 20,
                    eval_windows: 32,
                    ..TrainConfig::default()
                },
            }
        } else {
            let steps = steps.unwrap_or(default_steps);
            Self {
                d_model: 64,
                n_layers: 2,
                n_heads: 4,
                vocab_size: 4096,
                tokenizer: crate::tokenizer::TokenizerKind::Bpe,
                quick: false,
                engram_block: 1,
                train: TrainConfig {
                    steps,
                    batch_size: 16,
                    seq_len: 64,
                    warmup_steps: (steps / 15).max(1),
                    eval_every: (steps / 4).max(1),
                    eval_windows: 256,
                    ..TrainConfig::default()
                },
            }
        }
    }

    /// The same setup with another tokenizer (bytes: vocabulary 256).
    pub fn with_tokenizer(mut self, kind: crate::tokenizer::TokenizerKind) -> Self {
        self.vocab_size = DataConfig::for_tokenizer(kind, self.vocab_size).vocab_size;
        self.tokenizer = kind;
        self
    }

    /// The data settings.
    pub fn data(&self) -> DataConfig {
        quick_data(DataConfig::for_tokenizer(self.tokenizer, self.vocab_size), self.quick)
    }

    /// The dense backbone without Engram.
    pub fn backbone(&self) -> crate::model::ModelConfig {
        crate::model::ModelConfig::new(self.vocab_size, self.d_model, self.n_layers, self.n_heads, self.train.seq_len)
    }

    /// A run of `model` named `name` with this setup's training and data.
    pub fn config(&self, name: &str, model: crate::model::ModelConfig) -> ExperimentConfig {
        ExperimentConfig { name: name.to_string(), model, train: self.train.clone(), data: self.data() }
    }
}
