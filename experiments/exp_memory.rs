//! `exp_memory` — tables past RAM: step time, peak memory and disk against table rows.
//!
//! For the Engram model of `exp_throughput` (d_model 64, 2 blocks, Engram at block 1, batch
//! 16 × 64 tokens; `--quick`: 8 × 32), trains with Engram tables from 2^14 up to 2^30 rows per
//! layer (2^30 rows × 16 values = 17 B table parameters, a 196 GiB table in the crate's record
//! layout, eight times this machine's RAM) in
//! * the resident store (every row in memory; up to 2^24 rows, 3.3 GB),
//! * the file-backed store (a memory-mapped slab file per table, rows created on first touch),
//!   with the second core's prefetch and without it,
//! * the row-wise optimiser (one second moment per row) with f32 and bf16 weights,
//! * cold reads: the file's pages evicted from memory before every step, with and without the
//!   prefetch, against the same configuration warm.
//!
//! Timing is interleaved as in `exp_throughput` ([`engram::experiment::time_interleaved`]):
//! every configuration trains in its own thread, one step each in turn, two passes in opposite
//! orders, with an A/A control (a second copy of the resident 2^14 configuration) that shows
//! how far from 1 the method and the machine put a ratio on their own. A configuration's
//! figure is the median of its timed steps; ratios are ratios of medians, with the
//! interquartile range of the step-by-step ratios.
//!
//! Memory is measured per configuration in its own process (the same steps, run alone): its
//! peak resident set while training (VmHWM, reset after the data is prepared; it counts the
//! table file's pages while they are mapped), the bytes of the records it holds (rows touched
//! × record size), and the bytes its table files occupy on disk (allocated blocks). The peak
//! is measured twice, in two processes: as every experiment runs, where the allocator keeps
//! freed memory for the next step ([`engram::runtime::tune_allocator`]; a few hundred MB here,
//! whose placement moves a peak by several MB between configurations), and with that free
//! memory returned to the kernel before training and after every step
//! ([`engram::runtime::release_free_memory`]) and one heap for all threads
//! ([`engram::runtime::use_one_arena`]; with a heap per thread, a peak moved by up to 50 MB
//! between runs of one configuration), which measures the memory the run uses.
//!
//! The memory bound compares the largest file-backed table's peak with the resident 2^14 peak
//! plus what the touched rows cost: their records, and their entries in the file-backed
//! store's row → slot index, which a resident table does not have ([`file_index_bytes`]: the
//! hash table's allocation for that many entries, computed from its layout, not measured).
//! The index's transient while it grows (old and new table side by side for one rehash) is
//! not counted.
//!
//! Then the loss effect of the compact layouts: `exp_engram`'s Engram model (D 64, 2 blocks,
//! 65,536 rows per head) with the science experiments' recipe (500 steps, 3 seeds) for Adam
//! with f32 weights, row-wise with f32 and bf16 weights, and Adam with bf16 weights, in bits
//! per byte with per-seed paired differences against Adam/f32.
//!
//! ```text
//! cargo run --bin exp_memory                 # full (about 20 minutes on 2 cores)
//! cargo run --bin exp_memory -- --quick      # smoke test: 2^14 and 2^30 rows, few steps
//! cargo run --bin exp_memory -- --no-loss    # timing and memory only
//! cargo run --bin exp_memory -- --plot-only  # redraw from runs/exp_memory/summary.json
//! ```

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use clap::Parser;
use serde::{Deserialize, Serialize};

use engram::config::{ExperimentConfig, TrainConfig};
use engram::data::{DataConfig, PreparedData};
use engram::engram::EngramConfig;
use engram::experiment::{
    aggregate, cpu_ticks, exit_with, iqr, load_data, median, paired_differences, peak_rss_bytes, pm, prepare_out_dir, reset_peak_rss, MemoryOff, run_sweep, time_interleaved, with_seeds, CommonArgs, GroupStats, ScienceSetup,
    SweepSpec, TimingJob,
};
use engram::model::ModelConfig;
use engram::report::table::render;
use engram::report::{two_panel_chart, Chart, HBand, Series, Style};
use engram::run_dir::write_json;
use engram::table::{file_index_bytes, RowLayout, TableOptimizer, TableStore, WeightFormat};
use engram::train::{run, RunOptions, TABLE_DIR};

#[derive(Parser)]
#[command(name = "exp_memory", about = "Engram tables past RAM: step time, peak memory and disk vs table rows for resident and file-backed stores, row-wise and bf16 rows; their loss effect")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Timed steps per configuration, split over the two passes [default: 40, quick 4].
    #[arg(long)]
    reps: Option<usize>,
    /// Largest table, as log2 of the rows per layer.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(14..=30))]
    max_log2: u32,
    /// Skip the loss comparison of the compact layouts.
    #[arg(long)]
    no_loss: bool,
    /// Internal: measure the memory of one configuration in this process and print it as JSON.
    #[arg(long, hide = true)]
    measure_one: Option<String>,
    /// Internal, with `--measure-one`: return the allocator's free memory after every step.
    #[arg(long, hide = true)]
    release_memory: bool,
}

/// Warm-up steps not timed.
const WARMUP_STEPS: usize = 3;
/// Largest resident table (rows per layer): 3.3 GB of records.
const RESIDENT_MAX_LOG2: u32 = 24;

/// One measured configuration.
#[derive(Clone, Debug)]
struct Variant {
    name: String,
    store: TableStore,
    optimizer: TableOptimizer,
    weights: WeightFormat,
    log2: u32,
    prefetch: bool,
    evict: bool,
    /// Timed in the second group (cold reads), with its warm reference.
    cold_group: bool,
}

fn kebab<T: Serialize>(x: T) -> String {
    serde_json::to_value(x).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

impl Variant {
    fn new(store: TableStore, optimizer: TableOptimizer, weights: WeightFormat, log2: u32) -> Self {
        let name = format!("{}-{}-{}-2p{log2}", kebab(store), kebab(optimizer), kebab(weights));
        Self { name, store, optimizer, weights, log2, prefetch: true, evict: false, cold_group: false }
    }

    fn named(mut self, prefix: &str) -> Self {
        self.name = format!("{prefix}-{}", self.name);
        self
    }

    fn layout(&self) -> RowLayout {
        RowLayout { dim: 16, optimizer: self.optimizer, weights: self.weights }
    }
}

/// Every configuration, in timing order.
fn variants(quick: bool, max_log2: u32) -> Vec<Variant> {
    use TableOptimizer::{Adam, RowWise};
    use TableStore::{File, Resident};
    use WeightFormat::{Bf16, F32};
    let mut v = vec![Variant::new(Resident, Adam, F32, 14), Variant::new(Resident, Adam, F32, 14).named("control")];
    let sizes: Vec<u32> = if quick { vec![14, max_log2] } else { vec![14, 20, 24, 27, max_log2] };
    let mut sizes: Vec<u32> = sizes.into_iter().filter(|&l| l <= max_log2).collect();
    sizes.dedup();
    if !quick {
        v.extend(sizes.iter().filter(|&&l| l > 14 && l <= RESIDENT_MAX_LOG2).map(|&l| Variant::new(Resident, Adam, F32, l)));
    }
    v.extend(sizes.iter().map(|&l| Variant::new(File, Adam, F32, l)));
    let top = max_log2;
    v.push(Variant { prefetch: false, ..Variant::new(File, Adam, F32, top).named("no-prefetch") });
    v.push(Variant::new(File, RowWise, F32, top));
    v.push(Variant::new(File, RowWise, Bf16, top));
    v.push(Variant { cold_group: true, ..Variant::new(File, Adam, F32, top).named("warm") });
    v.push(Variant { evict: true, cold_group: true, ..Variant::new(File, Adam, F32, top).named("cold") });
    v.push(Variant { evict: true, prefetch: false, cold_group: true, ..Variant::new(File, Adam, F32, top).named("cold-no-prefetch") });
    v
}

/// The run of variant `v`: `exp_throughput`'s Engram model with `v`'s table.
fn experiment(v: &Variant, data: &PreparedData, steps: usize, quick: bool, seed: u64) -> ExperimentConfig {
    let (batch, seq) = if quick { (8, 32) } else { (16, 64) };
    // (N−1)·K = 8 heads per layer: each head's base size is rows / 8.
    let per_head = (1u64 << v.log2) / 8;
    let engram = EngramConfig {
        layer_ids: vec![1],
        table_size: vec![per_head, per_head],
        table_store: v.store,
        table_optimizer: v.optimizer,
        table_weights: v.weights,
        ..EngramConfig::default()
    };
    ExperimentConfig {
        name: v.name.clone(),
        model: ModelConfig::new(data.vocab_size, 64, 2, 4, seq).with_engram(engram),
        train: TrainConfig { steps, batch_size: batch, seq_len: seq, warmup_steps: 1, eval_every: steps, eval_windows: batch, seed, ..TrainConfig::default() },
        data: data.config.clone(),
    }
}

fn options(v: &Variant) -> RunOptions {
    RunOptions { prefetch_tables: v.prefetch, evict_tables: v.evict, ..RunOptions::default() }
}

/// Memory of one configuration, measured twice: as the experiments run (the allocator keeps
/// freed memory for speed, [`engram::runtime::tune_allocator`]), and with that memory returned
/// to the kernel after every step ([`RunOptions::release_memory`]).
#[derive(Clone, Debug)]
struct Measured {
    as_run: Memory,
    released: Memory,
}

/// What one configuration's own process measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Memory {
    peak_rss_bytes: u64,
    /// Rows holding a record at the end (all of a resident table's).
    rows_touched: u64,
    /// Their records' bytes (rows touched × record size).
    table_bytes: u64,
    /// Bytes the table files occupy on disk (allocated blocks; 0 when resident).
    disk_bytes: u64,
}

/// Bytes on disk of the files in `dir` (allocated blocks).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir).map(|it| it.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.blocks() * 512).sum()).unwrap_or(0)
}

/// Train `v` alone in this process and measure its memory; with `release`, the allocator's
/// free memory is returned to the kernel before training and after every step.
fn measure(v: &Variant, data: &PreparedData, steps: usize, quick: bool, seed: u64, dir: &Path, release: bool) -> anyhow::Result<Memory> {
    let mut cfg = experiment(v, data, steps, quick, seed);
    cfg.name = format!("memory-{}", v.name);
    let device = burn::tensor::Device::flex();
    let run_dir = dir.join(&cfg.name);
    if release {
        engram::runtime::release_free_memory();
    }
    // The peak of training alone, not of preparing the data (tokenising the corpus).
    anyhow::ensure!(reset_peak_rss(), "cannot reset the peak resident set (/proc/self/clear_refs): exp_memory needs Linux");
    run(&cfg, data, &device, &run_dir, &RunOptions { release_memory: release, ..options(v) })?;
    let peak = peak_rss_bytes();
    let rec = v.layout().record_bytes() as u64;
    let (rows_touched, disk) = match v.store {
        TableStore::Resident => (1u64 << v.log2, 0),
        TableStore::File => {
            let file = run_dir.join(TABLE_DIR).join("table-0.slab");
            let len = std::fs::metadata(&file)?.len();
            ((len - engram::table::SLAB_HEADER_BYTES) / rec, disk_bytes(&run_dir.join(TABLE_DIR)))
        }
    };
    Ok(Memory { peak_rss_bytes: peak, rows_touched, table_bytes: rows_touched * rec, disk_bytes: disk })
}

/// One configuration's figures in `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RunFigures {
    name: String,
    store: TableStore,
    optimizer: TableOptimizer,
    weights: WeightFormat,
    rows_per_layer: u64,
    prefetch: bool,
    evict: bool,
    /// Median seconds per timed step.
    step_seconds: f64,
    /// Interquartile range of its step times.
    step_seconds_iqr: Option<[f64; 2]>,
    /// Peak resident set of the configuration run alone (bytes), as the experiments run: it
    /// includes freed memory the allocator keeps for speed.
    peak_rss_bytes: u64,
    /// The same with the allocator's free memory returned to the kernel after every step: the
    /// memory the run uses.
    peak_rss_released_bytes: u64,
    /// Bytes of its table files on disk (allocated).
    disk_bytes: u64,
    /// Rows holding a record at the end of the memory run.
    rows_touched: u64,
    /// Their bytes (rows touched × record bytes).
    table_bytes: u64,
    /// Table bytes per parameter of its record layout.
    bytes_per_parameter: f64,
}

/// A ratio of two configurations' medians and the IQR of their step-by-step ratios.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Ratio {
    of: String,
    over: String,
    ratio: f64,
    step_by_step_iqr: Option<[f64; 2]>,
}

/// The loss comparison of the compact layouts.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LossFigures {
    groups: Vec<GroupStats>,
    /// Per-seed differences of each layout's bits per byte from Adam/f32's.
    paired_vs_adam_f32: Vec<(String, Vec<f64>)>,
    wall_seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Default)]
struct Summary {
    quick: bool,
    timed_steps: usize,
    tokens_per_step: usize,
    runs: Vec<RunFigures>,
    /// A/A control: the resident 2^14 configuration timed twice.
    aa_ratio: Option<Ratio>,
    /// The largest file-backed table against the smallest resident one.
    file_largest_over_resident_smallest: Option<Ratio>,
    /// The largest file-backed table without the prefetch, against the same with it.
    no_prefetch_over_prefetch: Option<Ratio>,
    /// Cold reads (pages evicted before every step), with and without the prefetch, against warm.
    cold_over_warm: Option<Ratio>,
    cold_no_prefetch_over_warm: Option<Ratio>,
    /// The memory bound: the largest file-backed table's peak against the resident 2^14 peak
    /// plus the bytes of the rows the large table touched (records and index); as run, and with free memory
    /// released after every step.
    rss_bound_as_run: Option<RssBound>,
    rss_bound_released: Option<RssBound>,
    loss: Option<LossFigures>,
    cpu_steal_percent: Option<f64>,
    wall_seconds: f64,
    plots: Vec<String>,
}

/// Peak RSS of the largest file-backed table against the resident 2^14 figure plus the bytes
/// of the rows the large table touched: their records, and their entries in the file-backed
/// store's row → slot index (a resident table has none; [`file_index_bytes`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RssBound {
    peak_rss_bytes: u64,
    resident_smallest_peak_rss_bytes: u64,
    touched_record_bytes: u64,
    /// The index's allocation for the touched rows ([`file_index_bytes`]).
    touched_index_bytes: u64,
    /// resident_smallest_peak_rss_bytes + touched_record_bytes + touched_index_bytes.
    bound_bytes: u64,
    /// bound − peak (negative: missed).
    margin_bytes: i64,
}

fn rss_bound(runs: &[RunFigures], largest: &str, base: &str, peak: impl Fn(&RunFigures) -> u64) -> Option<RssBound> {
    let (l, b) = (runs.iter().find(|r| r.name == largest)?, runs.iter().find(|r| r.name == base)?);
    let index = file_index_bytes(l.rows_touched);
    let bound = peak(b) + l.table_bytes + index;
    Some(RssBound {
        peak_rss_bytes: peak(l),
        resident_smallest_peak_rss_bytes: peak(b),
        touched_record_bytes: l.table_bytes,
        touched_index_bytes: index,
        bound_bytes: bound,
        margin_bytes: bound as i64 - peak(l) as i64,
    })
}

fn ratio(names: &[String], steps: &[Vec<f64>], of: &str, over: &str) -> Option<Ratio> {
    let (a, b) = (names.iter().position(|n| n == of)?, names.iter().position(|n| n == over)?);
    let per_step: Vec<f64> = steps[a].iter().zip(&steps[b]).map(|(x, y)| x / y).collect();
    Some(Ratio { of: of.into(), over: over.into(), ratio: median(&steps[a]) / median(&steps[b]), step_by_step_iqr: iqr(&per_step) })
}

fn loss_comparison(common: &CommonArgs, dir: &Path) -> anyhow::Result<LossFigures> {
    let t0 = Instant::now();
    let setup = ScienceSetup::new(common.quick, 500, None);
    let size = if common.quick { 2_048 } else { 65_536 };
    let mut specs = Vec::new();
    for (optimizer, weights) in [(TableOptimizer::Adam, WeightFormat::F32), (TableOptimizer::RowWise, WeightFormat::F32), (TableOptimizer::RowWise, WeightFormat::Bf16), (TableOptimizer::Adam, WeightFormat::Bf16)] {
        let group = format!("{}-{}", kebab(optimizer), kebab(weights));
        let engram = EngramConfig { layer_ids: vec![setup.engram_block], table_size: vec![size, size], table_optimizer: optimizer, table_weights: weights, ..EngramConfig::default() };
        specs.push(SweepSpec { group: group.clone(), x: None, config: setup.config(&group, setup.backbone().with_engram(engram)) });
    }
    let seeds = if common.quick { 1 } else { 3 };
    let specs = with_seeds(specs, common.seed, seeds);
    let data = load_data(&specs[0].config.data)?;
    let runs = run_sweep(&specs, &data, &common.device()?, &dir.join("loss"), !common.no_progress, MemoryOff::Never, false)?;
    let groups = aggregate(&runs);
    let paired = groups.iter().skip(1).map(|g| (g.group.clone(), paired_differences(&runs, &g.group, "adam-f32", |r| Some(r.record.val_bpb)))).collect();
    Ok(LossFigures { groups, paired_vs_adam_f32: paired, wall_seconds: t0.elapsed().as_secs_f64() })
}

fn main_inner() -> anyhow::Result<()> {
    let args = Args::parse();
    let c = &args.common;
    let dir = c.out_dir("exp_memory");
    if c.plot_only {
        let s: Summary = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json"))?)?;
        plot(&dir, &s)?;
        report(&s);
        return Ok(());
    }
    anyhow::ensure!(c.device == "flex", "exp_memory measures the host tables on the flex CPU backend (--device {} is not supported)", c.device);
    let reps = args.reps.unwrap_or(if c.quick { 4 } else { 40 });
    anyhow::ensure!(reps >= 2, "--reps must be at least 2");
    let steps = WARMUP_STEPS + reps.div_ceil(2);
    // Only the short book is held out: the experiment times steps, not the final evaluation.
    let data_cfg = DataConfig { val_books: engram::experiment::QUICK_VAL_BOOKS.iter().map(|b| b.to_string()).collect(), ..DataConfig { vocab_size: 4096, ..DataConfig::default() } };
    let all = variants(c.quick, args.max_log2);

    if let Some(name) = &args.measure_one {
        let v = all.iter().find(|v| &v.name == name).ok_or_else(|| anyhow::anyhow!("--measure-one: no configuration {name:?}"))?;
        let data = load_data(&data_cfg)?;
        let m = measure(v, &data, steps, c.quick, c.seed, &dir, args.release_memory)?;
        println!("{}", serde_json::to_string(&m)?);
        return Ok(());
    }
    prepare_out_dir(&dir, c.overwrite)?;
    let t_start = Instant::now();
    let data = load_data(&data_cfg)?;

    // Memory: each configuration alone, in its own process, so its peak is its own.
    let exe = std::env::current_exe()?;
    let out_arg = dir.to_str().ok_or_else(|| anyhow::anyhow!("output path is not UTF-8"))?;
    let measure_in_child = |v: &Variant, release: bool| -> anyhow::Result<Memory> {
        let mut cmd = Command::new(&exe);
        cmd.args(["--measure-one", &v.name, "--out", out_arg, "--reps", &reps.to_string(), "--max-log2", &args.max_log2.to_string(), "--seed", &c.seed.to_string(), "--no-progress"]);
        if c.quick {
            cmd.arg("--quick");
        }
        if release {
            cmd.arg("--release-memory");
        }
        let out = cmd.output()?;
        anyhow::ensure!(out.status.success(), "measuring {}: {}", v.name, String::from_utf8_lossy(&out.stderr).trim());
        // The table files are not needed after measuring; a 2^30-row run leaves tens of MB.
        let _ = std::fs::remove_dir_all(dir.join(format!("memory-{}", v.name)).join(TABLE_DIR));
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let mut memory = Vec::new();
    for v in &all {
        eprintln!("memory: {} ...", v.name);
        memory.push(Measured { as_run: measure_in_child(v, false)?, released: measure_in_child(v, true)? });
    }

    // Time: the warm configurations interleaved, then the cold-read group.
    let ticks_before = cpu_ticks();
    let mut steps_of: Vec<Vec<f64>> = vec![Vec::new(); all.len()];
    for cold in [false, true] {
        let idx: Vec<usize> = (0..all.len()).filter(|&i| all[i].cold_group == cold).collect();
        eprintln!("timing {} configurations interleaved, 2 passes of {WARMUP_STEPS} warm-up + {} timed steps each ...", idx.len(), reps.div_ceil(2));
        let jobs: Vec<TimingJob> = idx.iter().map(|&i| TimingJob { cfg: experiment(&all[i], &data, steps, c.quick, c.seed), data: &data, device: burn::tensor::Device::flex(), opts: options(&all[i]) }).collect();
        for (&i, s) in idx.iter().zip(time_interleaved(&jobs, WARMUP_STEPS, &dir)?) {
            steps_of[i] = s;
        }
        for &i in &idx {
            let _ = std::fs::remove_dir_all(dir.join(&all[i].name).join(TABLE_DIR));
        }
    }
    let cpu_steal_percent = ticks_before.zip(cpu_ticks()).and_then(|((s0, t0), (s1, t1))| (t1 > t0).then(|| 100.0 * (s1 - s0) as f64 / (t1 - t0) as f64));

    let names: Vec<String> = all.iter().map(|v| v.name.clone()).collect();
    let runs: Vec<RunFigures> = all
        .iter()
        .zip(&memory)
        .zip(&steps_of)
        .map(|((v, m), s)| RunFigures {
            name: v.name.clone(),
            store: v.store,
            optimizer: v.optimizer,
            weights: v.weights,
            rows_per_layer: 1 << v.log2,
            prefetch: v.prefetch,
            evict: v.evict,
            step_seconds: median(s),
            step_seconds_iqr: iqr(s),
            peak_rss_bytes: m.as_run.peak_rss_bytes,
            peak_rss_released_bytes: m.released.peak_rss_bytes,
            disk_bytes: m.as_run.disk_bytes,
            rows_touched: m.as_run.rows_touched,
            table_bytes: m.as_run.table_bytes,
            bytes_per_parameter: v.layout().bytes_per_parameter(),
        })
        .collect();
    let top = args.max_log2;
    let base = "resident-adam-f32-2p14".to_string();
    let largest = format!("file-adam-f32-2p{top}");
    let loss = if args.no_loss { None } else { Some(loss_comparison(c, &dir)?) };
    let summary = Summary {
        quick: c.quick,
        timed_steps: 2 * reps.div_ceil(2),
        tokens_per_step: if c.quick { 8 * 32 } else { 16 * 64 },
        aa_ratio: ratio(&names, &steps_of, &format!("control-{base}"), &base),
        file_largest_over_resident_smallest: ratio(&names, &steps_of, &largest, &base),
        no_prefetch_over_prefetch: ratio(&names, &steps_of, &format!("no-prefetch-{largest}"), &largest),
        cold_over_warm: ratio(&names, &steps_of, &format!("cold-{largest}"), &format!("warm-{largest}")),
        cold_no_prefetch_over_warm: ratio(&names, &steps_of, &format!("cold-no-prefetch-{largest}"), &format!("warm-{largest}")),
        rss_bound_as_run: rss_bound(&runs, &largest, &base, |r| r.peak_rss_bytes),
        rss_bound_released: rss_bound(&runs, &largest, &base, |r| r.peak_rss_released_bytes),
        runs,
        loss,
        cpu_steal_percent,
        wall_seconds: t_start.elapsed().as_secs_f64(),
        plots: vec![],
    };
    let plots = plot(&dir, &summary)?;
    let summary = Summary { plots, ..summary };
    write_json(&dir.join("summary.json"), &summary)?;
    report(&summary);
    Ok(())
}

fn plot(dir: &Path, s: &Summary) -> anyhow::Result<Vec<String>> {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let curve = |store: TableStore, f: &dyn Fn(&RunFigures) -> f64| -> Vec<(f64, f64)> {
        s.runs
            .iter()
            .filter(|r| r.store == store && r.name.starts_with(&format!("{}-adam-f32-", kebab(store))))
            .map(|r| (r.rows_per_layer as f64, f(r)))
            .collect()
    };
    let point = |name_prefix: &str, f: &dyn Fn(&RunFigures) -> f64| -> Vec<(f64, f64)> {
        s.runs.iter().filter(|r| r.name.starts_with(name_prefix)).map(|r| (r.rows_per_layer as f64, f(r))).collect()
    };
    let ms = |r: &RunFigures| r.step_seconds * 1e3;
    let mut top_series = vec![
        Series { label: "resident (Adam, f32)".into(), points: curve(TableStore::Resident, &ms), y_err: None, style: Style::LinePoints },
        Series { label: "file-backed, prefetch (Adam, f32)".into(), points: curve(TableStore::File, &ms), y_err: None, style: Style::LinePoints },
    ];
    for (prefix, label) in [("no-prefetch-", "file-backed, no prefetch"), ("file-row-wise-f32", "file-backed row-wise f32"), ("file-row-wise-bf16", "file-backed row-wise bf16")] {
        top_series.push(Series { label: label.into(), points: point(prefix, &ms), y_err: None, style: Style::Points });
    }
    let base = s.runs.iter().find(|r| r.name == "resident-adam-f32-2p14");
    let aa_band = base.zip(s.aa_ratio.as_ref()).map(|(b, r)| {
        let stray = match r.step_by_step_iqr {
            Some([lo, hi]) => (hi - 1.0).abs().max((1.0 - lo).abs()),
            None => (r.ratio - 1.0).abs(),
        };
        HBand { label: "A/A noise: resident 2^14 timed twice".into(), center: b.step_seconds * 1e3, half_width: stray * b.step_seconds * 1e3 }
    });
    let top = Chart {
        title: "Training step time vs table rows (band: A/A noise)".into(),
        x_label: "table rows per Engram layer".into(),
        y_label: "median step time (ms)".into(),
        log_x: true,
        log_y: false,
        y_from_zero: true,
        series: top_series,
        bands: aa_band.into_iter().collect(),
        annotations: s.file_largest_over_resident_smallest.iter().map(|r| format!("{} / {}: {:.3}", r.of, r.over, r.ratio)).collect(),
    };
    let rss = |r: &RunFigures| mib(r.peak_rss_bytes);
    let released = |r: &RunFigures| mib(r.peak_rss_released_bytes);
    let disk = |r: &RunFigures| mib(r.disk_bytes.max(1));
    let bottom = Chart {
        title: "Peak resident memory and disk vs table rows".into(),
        x_label: "table rows per Engram layer".into(),
        y_label: "MiB".into(),
        log_x: true,
        log_y: true,
        y_from_zero: false,
        series: vec![
            Series { label: "peak RSS, resident".into(), points: curve(TableStore::Resident, &rss), y_err: None, style: Style::LinePoints },
            Series { label: "peak RSS, file-backed".into(), points: curve(TableStore::File, &rss), y_err: None, style: Style::LinePoints },
            Series { label: "same, free memory released each step: resident".into(), points: curve(TableStore::Resident, &released), y_err: None, style: Style::LinePoints },
            Series { label: "same: file-backed".into(), points: curve(TableStore::File, &released), y_err: None, style: Style::LinePoints },
            Series { label: "disk, file-backed".into(), points: curve(TableStore::File, &disk), y_err: None, style: Style::LinePoints },
            Series { label: "peak RSS (released), file row-wise bf16".into(), points: point("file-row-wise-bf16", &released), y_err: None, style: Style::Points },
        ],
        bands: vec![],
        annotations: vec![],
    };
    Ok(two_panel_chart(&top, &bottom, &dir.join("memory_vs_rows"))?.iter().map(|p| p.display().to_string()).collect())
}

fn report(s: &Summary) {
    let mib = |b: u64| format!("{:.0}", b as f64 / (1 << 20) as f64);
    let rows: Vec<Vec<String>> = s
        .runs
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                format!("2^{}", r.rows_per_layer.trailing_zeros()),
                format!("{:.1}", r.step_seconds * 1e3),
                mib(r.peak_rss_bytes),
                mib(r.peak_rss_released_bytes),
                mib(r.table_bytes),
                mib(r.disk_bytes),
                format!("{:.2}", r.bytes_per_parameter),
            ]
        })
        .collect();
    println!("{} timed steps per configuration ({} tokens each), interleaved (medians)", s.timed_steps, s.tokens_per_step);
    println!("{}", render(&["configuration", "rows/layer", "step ms", "peak RSS MiB", "released MiB", "records MiB", "disk MiB", "B/param"], &rows));
    for (what, r) in [
        ("A/A control", &s.aa_ratio),
        ("largest file-backed / resident 2^14", &s.file_largest_over_resident_smallest),
        ("no prefetch / prefetch (largest)", &s.no_prefetch_over_prefetch),
        ("cold / warm, prefetch", &s.cold_over_warm),
        ("cold / warm, no prefetch", &s.cold_no_prefetch_over_warm),
    ] {
        if let Some(r) = r {
            let spread = r.step_by_step_iqr.map(|[lo, hi]| format!(" (step-by-step IQR {lo:.3}–{hi:.3})")).unwrap_or_default();
            println!("{what}: {:.3}{spread}", r.ratio);
        }
    }
    let mb = |b: u64| b as f64 / 1e6;
    for (what, b) in [("as run", &s.rss_bound_as_run), ("free memory released after every step", &s.rss_bound_released)] {
        if let Some(b) = b {
            let verdict = if b.margin_bytes >= 0 { "met" } else { "missed" };
            println!(
                "peak RSS bound, {what}: largest file-backed {:.1} MB vs resident 2^14 {:.1} MB + touched records {:.1} MB + their index {:.1} MB = {:.1} MB: {verdict} by {:.1} MB",
                mb(b.peak_rss_bytes),
                mb(b.resident_smallest_peak_rss_bytes),
                mb(b.touched_record_bytes),
                mb(b.touched_index_bytes),
                mb(b.bound_bytes),
                b.margin_bytes.unsigned_abs() as f64 / 1e6
            );
        }
    }
    if let Some(p) = s.cpu_steal_percent {
        println!("CPU time stolen by the hypervisor while timing: {p:.1} %");
    }
    if let Some(l) = &s.loss {
        let rows: Vec<Vec<String>> = l
            .groups
            .iter()
            .map(|g| {
                let d = l.paired_vs_adam_f32.iter().find(|(n, _)| n == &g.group).map(|(_, d)| {
                    let (m, sd) = engram::experiment::mean_std(d);
                    format!("{:+.4} ± {sd:.4}", m)
                });
                vec![g.group.clone(), pm(g.val_bpb_mean, g.val_bpb_std), d.unwrap_or_else(|| "-".into()), g.n.to_string()]
            })
            .collect();
        println!("{}", render(&["table layout", "val bpb", "paired Δ vs adam-f32", "seeds"], &rows));
    }
}

fn main() -> std::process::ExitCode {
    engram::runtime::tune_allocator();
    // A measurement of the memory a run uses (see the module docs): one heap for all threads.
    if std::env::args().any(|a| a == "--release-memory") {
        engram::runtime::use_one_arena();
    }
    exit_with(main_inner())
}
