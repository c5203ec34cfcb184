//! Sweeps: several configurations, each over several seeds, aggregated per configuration
//! (mean ± std, paired differences, linear fits), with the sweep's `summary.json`.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::data::PreparedData;
use crate::config::ExperimentConfig;
use crate::train::{run, RunOptions, RunResult};
use super::cli::*;

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
    /// Dense parameters (of the first run).
    #[serde(default)]
    pub params_backbone: u64,
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
            // Over the runs evaluated with memory off ([`MemoryOff`]).
            let off: Vec<f64> = members.iter().filter_map(|r| r.record.val_bpb_memory_off).collect();
            let off = (!off.is_empty()).then(|| mean_std(&off));
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
                params_backbone: first.record.params_backbone,
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

/// Which runs of a sweep are also evaluated with their Engram memory zeroed (a second full
/// evaluation, about a third of an Engram run's time here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryOff {
    /// None.
    Never,
    /// Every run with Engram.
    EveryRun,
    /// The first run of each configuration (its first seed).
    FirstSeed,
}

/// Train every spec into `out/<name>/`, printing one line per finished run. With `reuse`, a
/// run whose directory already holds a finished run of the same configuration (an
/// interrupted experiment) is read back instead of trained again.
pub fn run_sweep(specs: &[SweepSpec], data: &PreparedData, device: &Device, out: &Path, progress: bool, memory_off: MemoryOff, reuse: bool) -> anyhow::Result<Vec<SweepRun>> {
    let mut runs = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let cfg = &spec.config;
        let eval_memory_off = match memory_off {
            MemoryOff::Never => false,
            MemoryOff::EveryRun => true,
            MemoryOff::FirstSeed => !specs[..i].iter().any(|s| s.group == spec.group),
        };
        let dir = out.join(&cfg.name);
        let (r, how) = match reuse.then(|| finished_run(cfg, &dir)).flatten() {
            Some(r) => (r, "reused"),
            None => {
                eprintln!("[{}/{}] {}", i + 1, specs.len(), cfg.name);
                // The final checkpoint (train.checkpoint_every is 0 in the experiments' plans)
                // lets `engram generate`, `inspect` and `export` read the run.
                let opts = RunOptions { progress, eval_memory_off, checkpoints: true, ..RunOptions::default() };
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
pub fn sweep(common: &CommonArgs, experiment: &str, specs: Vec<SweepSpec>, n_seeds: usize, memory_off: MemoryOff) -> anyhow::Result<(PathBuf, SweepSummary)> {
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
    let runs = run_sweep(&specs, &data, &device, &dir, !common.no_progress, memory_off, !common.overwrite)?;
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
    use crate::data::DataConfig;

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
            train: crate::config::TrainConfig::default(),
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
