//! `exp_throughput` — does a bigger table cost memory and not time?
//!
//! For the Engram model of `exp_engram`'s default (d_model 64, 2 blocks, Engram at block 1,
//! batch 16 × 64 tokens), measures the median training-step time and tokens/s for table sizes
//! from 2^14 to 2^24 rows per layer with the row-sparse update, the same with the dense update
//! (the O(rows) baseline, up to 2^22 rows), and the same backbone without Engram — all in one
//! run, after warm-up steps, several repetitions each; the host-side table work alone per size;
//! the PyTorch reference configuration (d_model 256, 4 blocks, 4 heads, SwiGLU 682, seq 128,
//! batch 16, vocab 8,192, AdamW, no Engram); and, when built with `--features ndarray` (or
//! `openblas`), the backbone and the reference configuration on ndarray beside flex. The
//! micro-benchmarks are criterion benches: the hash in `benches/hash.rs`, the table update in
//! `benches/sparse_update.rs`, the reference configuration's LM head (its matrix products, the
//! fused head loss against burn's) in `benches/head.rs`.
//!
//! Timing is interleaved step by step: every configuration trains in its own thread and they
//! take turns ([`engram::turns`]) — one step of each, then the next step of each — so a slow
//! spell of a shared or virtual machine hits all of them alike and only one computes at a time.
//! This runs twice, the second time in the reverse order, because a configuration's place in
//! the cycle can move its step time by up to ±10 % on a virtual machine; and in two groups —
//! backbone and row-sparse tables, then the heavy rest (dense updates, the reference model,
//! ndarray) — because a step right after a heavy one runs slower. A configuration's
//! figure is the median of its timed steps of both passes (after warm-up steps); a ratio of two
//! configurations is the ratio of their medians, and its spread is the interquartile range of
//! the step-by-step ratios of the same cycle (`*_iqr`). An A/A control — a second, identical
//! copy of the smallest table's configuration in the same group — measures how far from 1 the
//! method and the machine put a ratio on their own (`control_over_smallest_sparse`).
//!
//! Multi-branch streams: the same backbone and the Engram model at 2^16 rows on four mHC
//! streams (`mhc4-backbone`, `mhc4-2p16`), timed in the light group beside their one-stream
//! twins; the summary gives the step-time ratios M = 4 / M = 1 with their quartiles, beside the
//! ratio of the forward FLOPs per token ([`engram::cost::cost`]) — the extra work.
//!
//! Peak memory is measured in a first, sequential pass over the table sizes (a few steps each,
//! ascending): the process's peak resident set (VmHWM) after each size, so the peak up to and
//! including that size.
//!
//! ```text
//! cargo run --bin exp_throughput                      # full sweep (a few minutes)
//! cargo run --bin exp_throughput -- --quick           # 2^14 and 2^16 rows only
//! cargo run --bin exp_throughput -- --reference-only  # the reference configuration only
//! cargo run --features openblas --bin exp_throughput  # flex and ndarray + OpenBLAS
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;
use clap::Parser;
use serde::{Deserialize, Serialize};

use engram::data::{DataConfig, PreparedData};
use engram::engram::EngramConfig;
use engram::experiment::{cpu_ticks, exit_with, iqr, load_data, median, peak_rss_bytes, prepare_out_dir, time_interleaved, CommonArgs, TimingJob};
use engram::cost::cost;
use engram::model::{MhcConfig, ModelConfig};
use engram::report::table::render;
use engram::report::{two_panel_chart, Chart, HBand, Series, Style};
use engram::table::UpdateMode;
use engram::run_dir::write_json;
use engram::config::{ExperimentConfig, TrainConfig};
use engram::train::{run, RunOptions};

#[derive(Parser)]
#[command(name = "exp_throughput", about = "Training-step time and memory vs Engram table size (sparse vs dense update), reference-config step time")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Timed steps per configuration, split over the two passes [default: 60, quick 2]. Fewer
    /// run faster; the ratios then spread more from run to run (A/A up to ±4 % with 20).
    #[arg(long)]
    reps: Option<usize>,
    /// Time only the reference configuration.
    #[arg(long)]
    reference_only: bool,
}

/// PyTorch 2.15 on CPU (2 threads) for the reference configuration, measured on this machine
/// type; the figure this crate is compared against.
const PYTORCH_REFERENCE_STEP_SECONDS: f64 = 0.514;
/// Warm-up steps not timed.
const WARMUP_STEPS: usize = 3;

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct Summary {
    backend: String,
    timed_steps: usize,
    step_seconds: BTreeMap<u64, f64>,
    dense_step_seconds: BTreeMap<u64, f64>,
    tokens_per_sec: BTreeMap<u64, f64>,
    peak_rss_bytes: BTreeMap<u64, u64>,
    backbone_step_seconds: Option<f64>,
    engram_over_backbone_at_default: Option<f64>,
    largest_over_smallest_sparse: Option<f64>,
    /// Interquartile range of the step-by-step ratios (same cycle of the interleaving).
    largest_over_smallest_sparse_iqr: Option<[f64; 2]>,
    engram_over_backbone_at_default_iqr: Option<[f64; 2]>,
    largest_over_smallest_dense: Option<f64>,
    /// A/A control: a second, identical copy of the smallest row-sparse configuration, timed
    /// in the same group, over the first. How far it is from 1 is what the timing method and
    /// the machine alone produce; read the other ratios against it.
    control_over_smallest_sparse: Option<f64>,
    control_over_smallest_sparse_iqr: Option<[f64; 2]>,
    default_table_rows: u64,
    /// Seconds per step of the table work alone (unique rows, gather, sparse Adam) per size.
    table_work_seconds: BTreeMap<u64, f64>,
    reference_config_step_seconds: f64,
    pytorch_reference_step_seconds: f64,
    /// `ndarray` or `ndarray+openblas`, when built with it.
    ndarray_backend: Option<String>,
    ndarray_backbone_step_seconds: Option<f64>,
    ndarray_reference_config_step_seconds: Option<f64>,
    tokens_per_step: usize,
    /// Step time on four mHC streams over one stream: the backbone, and the Engram model at
    /// the default table size; with the step-by-step quartiles.
    mhc4_over_m1_backbone: Option<f64>,
    mhc4_over_m1_backbone_iqr: Option<[f64; 2]>,
    mhc4_over_m1_engram: Option<f64>,
    mhc4_over_m1_engram_iqr: Option<[f64; 2]>,
    /// Forward FLOPs per token on four streams over one stream (the extra work): backbone,
    /// Engram model.
    mhc4_flops_ratio_backbone: Option<f64>,
    mhc4_flops_ratio_engram: Option<f64>,
    /// Share of the machine's CPU time that the hypervisor gave to other guests during the
    /// timing passes (`steal` in `/proc/stat`); `None` where not reported.
    cpu_steal_percent: Option<f64>,
    plots: Vec<String>,
}

fn train_cfg(steps: usize, batch: usize, seq: usize, seed: u64) -> TrainConfig {
    TrainConfig { steps, batch_size: batch, seq_len: seq, warmup_steps: 1, eval_every: steps, eval_windows: batch, seed, ..TrainConfig::default() }
}

/// Step seconds of `model` trained for warm-up + timed steps (`tc.steps` in all), alone: the
/// timed steps only.
fn time_steps(name: &str, model: ModelConfig, data: &PreparedData, tc: TrainConfig, device: &Device, out: &Path) -> anyhow::Result<Vec<f64>> {
    let cfg = ExperimentConfig { name: name.to_string(), model, train: tc, data: data.config.clone() };
    let r = run(&cfg, data, device, &out.join(name), &RunOptions::default())?;
    Ok(r.step_seconds.iter().skip(WARMUP_STEPS).copied().collect())
}

/// `n` pseudo-random ids below `bound` (xorshift64, continuing from `state`).
fn random_ids(state: &mut u64, n: usize, bound: u64) -> impl Iterator<Item = u32> + '_ {
    (0..n).map(move |_| {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*state % bound) as u32
    })
}

/// One timed configuration: its name, what it trains, on which device, and its timed steps.
struct Timed {
    name: String,
    model: ModelConfig,
    data: usize,
    tc: TrainConfig,
    device: Device,
    steps: Vec<f64>,
}

impl Timed {
    fn median(&self) -> f64 {
        median(&self.steps)
    }
}

/// Seconds per step of the host-side table work alone — unique rows, gather, sparse Adam — for
/// one table of `rows` × 16 and the default model's 8,192 lookups per step (16 × 64 tokens ×
/// 8 heads, uniformly random rows), median of 30 steps after 5 warm-up steps. Isolates the
/// part of a step whose cost can depend on the table size from the rest, which cannot.
fn table_work_seconds(rows: usize, lookups: usize) -> anyhow::Result<f64> {
    use engram::hashing::{unique_rows_with, UniqueScratch};
    use engram::table::{EngramTable, TableAdam};
    let mut table = EngramTable::new(rows, 16, 0.02, 1);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let (mut ids, mut uniq, mut inverse, mut gathered, mut grads) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut scratch = UniqueScratch::default();
    let mut t = Vec::new();
    for _ in 0..35 {
        ids.clear();
        ids.extend(random_ids(&mut x, lookups, rows as u64));
        let t0 = Instant::now();
        unique_rows_with(&ids, &mut uniq, &mut inverse, &mut scratch);
        table.gather(&uniq, &mut gathered)?;
        grads.clear();
        grads.extend(gathered.iter().map(|w| 0.01 * w));
        table.adam_step(&uniq, &grads, 1e-3, &TableAdam::default(), UpdateMode::Sparse)?;
        t.push(t0.elapsed().as_secs_f64());
    }
    Ok(median(&t[5..]))
}

fn main_inner() -> anyhow::Result<()> {
    let args = Args::parse();
    let c = &args.common;
    let dir = c.out_dir("exp_throughput");
    if c.plot_only {
        let s: Summary = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json"))?)?;
        plot(&dir, &s)?;
        return Ok(());
    }
    let reps = args.reps.unwrap_or(if c.quick { 2 } else { 60 });
    anyhow::ensure!(reps >= 1, "--reps must be at least 1");
    let device = c.device()?;
    prepare_out_dir(&dir, c.overwrite)?;
    // Each configuration trains once per timing pass (two passes, see below).
    let per_pass = reps.div_ceil(2);
    let steps = WARMUP_STEPS + per_pass;
    let (batch, seq) = if c.quick { (8, 32) } else { (16, 64) };
    let log2_sizes: Vec<u32> = if c.quick { vec![14, 16] } else { vec![14, 16, 18, 20, 22, 24] };
    let dense_max_log2 = if c.quick { 16 } else { 22 };
    let default_log2 = 16;

    // datasets[0]: the Engram sweep's (the experiments' 4,096-id corpus BPE); datasets[REF]:
    // the reference configuration's (the same one with --quick), whose 8,192-id vocabulary is
    // GPT-2's most frequent ids: speed depends on the vocabulary's size, not on its tokens, and
    // this keeps the configuration the PyTorch comparison was measured on.
    // Only the short book is held out: this experiment times training steps, and the final
    // evaluation of each run (every held-out byte) is not what it measures.
    let short_val = |d: DataConfig| DataConfig { val_books: engram::experiment::QUICK_VAL_BOOKS.iter().map(|b| b.to_string()).collect(), ..d };
    let mut datasets = vec![load_data(&short_val(DataConfig { vocab_size: 4096, ..DataConfig::default() }))?];
    if !c.quick {
        datasets.push(load_data(&short_val(DataConfig::for_tokenizer(engram::tokenizer::TokenizerKind::Gpt2, 8192)))?);
    }
    let reference_data = datasets.len() - 1;
    let backbone = ModelConfig::new(4096, 64, 2, 4, seq);
    let engram_at = |rows_per_layer: u64, update: UpdateMode| {
        // (N−1)·K = 8 heads per layer: each head's base size is rows / 8.
        let per_head = rows_per_layer / 8;
        backbone.clone().with_engram(EngramConfig { layer_ids: vec![1], table_size: vec![per_head, per_head], update, ..EngramConfig::default() })
    };
    let mut reference = ModelConfig::reference();
    reference.vocab_size = datasets[reference_data].vocab_size;
    let ndarray = match engram::device::device_from_name("ndarray") {
        Ok(nd) if c.device != "ndarray" => Some(nd),
        _ => None,
    };
    let ndarray_backend = ndarray.as_ref().map(|_| if cfg!(feature = "openblas") { "ndarray+openblas" } else { "ndarray" }.to_string());

    // Every configuration, in the order a forward timing pass runs them.
    let tc = |reference: bool| if reference { train_cfg(steps, 16, 128, c.seed) } else { train_cfg(steps, batch, seq, c.seed) };
    let mut configs: Vec<Timed> = Vec::new();
    let mut add = |name: String, model: ModelConfig, reference: bool, device: &Device| {
        let data = if reference { reference_data } else { 0 };
        configs.push(Timed { name, model, data, tc: tc(reference), device: device.clone(), steps: vec![] })
    };
    if !args.reference_only {
        add("backbone".into(), backbone.clone(), false, &device);
        if let Some(&l) = log2_sizes.first() {
            add(format!("control-2p{l}"), engram_at(1 << l, UpdateMode::Sparse), false, &device);
        }
        for &l in &log2_sizes {
            add(format!("sparse-2p{l}"), engram_at(1 << l, UpdateMode::Sparse), false, &device);
            if l <= dense_max_log2 {
                add(format!("dense-2p{l}"), engram_at(1 << l, UpdateMode::Dense), false, &device);
            }
        }
        add("mhc4-backbone".into(), backbone.clone().with_mhc(MhcConfig::default()), false, &device);
        add(format!("mhc4-2p{default_log2}"), engram_at(1 << default_log2, UpdateMode::Sparse).with_mhc(MhcConfig::default()), false, &device);
    }
    add("reference".into(), reference.clone(), true, &device);
    if let Some(nd) = &ndarray {
        if !args.reference_only {
            add("backbone-ndarray".into(), backbone.clone(), false, nd);
        }
        add("reference-ndarray".into(), reference.clone(), true, nd);
    }

    // Memory: the sparse sizes one after another, ascending, a few steps each.
    let mut peak = BTreeMap::new();
    for cfg in configs.iter().filter(|t| t.name.starts_with("sparse-2p")) {
        eprintln!("memory: {} ...", cfg.name);
        let tc = TrainConfig { steps: 2, eval_every: 2, ..cfg.tc.clone() };
        time_steps(&format!("memory-{}", cfg.name), cfg.model.clone(), &datasets[cfg.data], tc, &cfg.device, &dir)?;
        if let Some(rows) = cfg.model.engram.as_ref().map(|e| e.table_size[0] * 8) {
            peak.insert(rows, peak_rss_bytes());
        }
    }

    // After the memory pass: its tables would raise the peak of the small sizes.
    let mut table_work = BTreeMap::new();
    if !args.reference_only {
        eprintln!("table work alone (unique rows, gather, sparse Adam) ...");
        for &l in &log2_sizes {
            table_work.insert(1u64 << l, table_work_seconds(1 << l, batch * seq * 8)?);
        }
    }

    // Time: the configurations of a group at once, one step each in turn; two passes, the
    // second in the reverse order. A step runs measurably slower right after a heavy one (a
    // dense table update, the reference model: caches, TLB and freshly mapped memory left
    // behind), so the light configurations — backbone and row-sparse tables, the comparison
    // that matters — form one group and the heavy ones another.
    let heavy = |t: &Timed| !(t.name == "backbone" || t.name.starts_with("sparse-2p") || t.name.starts_with("control-2p") || t.name.starts_with("mhc4-"));
    let groups: Vec<Vec<usize>> = [false, true].iter().map(|&h| (0..configs.len()).filter(|&i| heavy(&configs[i]) == h).collect()).filter(|g: &Vec<usize>| !g.is_empty()).collect();
    let t_timing = Instant::now();
    let ticks_before = cpu_ticks();
    for group in &groups {
        eprintln!("timing {} configurations interleaved, 2 passes of {} warm-up + {per_pass} timed steps each ...", group.len(), WARMUP_STEPS);
        let jobs: Vec<TimingJob> = group
            .iter()
            .map(|&i| {
                let t = &configs[i];
                let data = &datasets[t.data];
                let cfg = ExperimentConfig { name: t.name.clone(), model: t.model.clone(), train: t.tc.clone(), data: data.config.clone() };
                TimingJob { cfg, data, device: t.device.clone(), opts: RunOptions::default() }
            })
            .collect();
        for (&i, steps) in group.iter().zip(time_interleaved(&jobs, WARMUP_STEPS, &dir)?) {
            configs[i].steps.extend(steps);
        }
    }
    eprintln!("timing took {:.0} s", t_timing.elapsed().as_secs_f64());
    let cpu_steal_percent = ticks_before.zip(cpu_ticks()).and_then(|((s0, t0), (s1, t1))| (t1 > t0).then(|| 100.0 * (s1 - s0) as f64 / (t1 - t0) as f64));

    let find = |name: &str| configs.iter().find(|t| t.name == name);
    let by_rows = |prefix: &str| -> BTreeMap<u64, &Timed> {
        configs.iter().filter_map(|t| t.name.strip_prefix(prefix).and_then(|l| l.parse::<u32>().ok()).map(|l| (1u64 << l, t))).collect()
    };
    let sparse = by_rows("sparse-2p");
    let dense = by_rows("dense-2p");
    let step_seconds: BTreeMap<u64, f64> = sparse.iter().map(|(&r, t)| (r, t.median())).collect();
    let dense_seconds: BTreeMap<u64, f64> = dense.iter().map(|(&r, t)| (r, t.median())).collect();
    let tokens_per_sec: BTreeMap<u64, f64> = step_seconds.iter().map(|(&r, &s)| (r, (batch * seq) as f64 / s)).collect();
    let paired_iqr = |a: Option<&Timed>, b: Option<&Timed>| -> Option<[f64; 2]> {
        let (a, b) = (a?, b?);
        iqr(&a.steps.iter().zip(&b.steps).map(|(x, y)| x / y).collect::<Vec<_>>())
    };
    let default_rows = 1u64 << default_log2;
    let (smallest, largest) = (sparse.values().next().copied(), sparse.values().last().copied());
    let control = configs.iter().find(|t| t.name.starts_with("control-2p"));
    let ratio = |a: Option<&Timed>, b: Option<&Timed>| a.zip(b).map(|(a, b)| a.median() / b.median());
    let dense_ratio = if dense.len() >= 2 { ratio(dense.values().last().copied(), dense.values().next().copied()) } else { None };
    let backbone_t = find("backbone");
    let (mhc_backbone, mhc_engram) = (find("mhc4-backbone"), find(&format!("mhc4-2p{default_log2}")));
    let flops = |t: &Timed| cost(&t.model, t.tc.seq_len, &[]).flops_per_token as f64;
    let flops_ratio = |a: Option<&Timed>, b: Option<&Timed>| a.zip(b).map(|(a, b)| flops(a) / flops(b));
    let summary = Summary {
        mhc4_over_m1_backbone: ratio(mhc_backbone, backbone_t),
        mhc4_over_m1_backbone_iqr: paired_iqr(mhc_backbone, backbone_t),
        mhc4_over_m1_engram: ratio(mhc_engram, sparse.get(&default_rows).copied()),
        mhc4_over_m1_engram_iqr: paired_iqr(mhc_engram, sparse.get(&default_rows).copied()),
        mhc4_flops_ratio_backbone: flops_ratio(mhc_backbone, backbone_t),
        mhc4_flops_ratio_engram: flops_ratio(mhc_engram, sparse.get(&default_rows).copied()),
        backend: c.device.clone(),
        timed_steps: 2 * per_pass,
        engram_over_backbone_at_default: ratio(sparse.get(&default_rows).copied(), backbone_t),
        engram_over_backbone_at_default_iqr: paired_iqr(sparse.get(&default_rows).copied(), backbone_t),
        largest_over_smallest_sparse: ratio(largest, smallest),
        largest_over_smallest_sparse_iqr: paired_iqr(largest, smallest),
        control_over_smallest_sparse: ratio(control, smallest),
        control_over_smallest_sparse_iqr: paired_iqr(control, smallest),
        step_seconds,
        dense_step_seconds: dense_seconds,
        tokens_per_sec,
        peak_rss_bytes: peak,
        backbone_step_seconds: backbone_t.map(Timed::median),
        largest_over_smallest_dense: dense_ratio,
        default_table_rows: default_rows,
        table_work_seconds: table_work,
        reference_config_step_seconds: find("reference").map(Timed::median).expect("the reference configuration always runs"),
        pytorch_reference_step_seconds: PYTORCH_REFERENCE_STEP_SECONDS,
        ndarray_backend,
        ndarray_backbone_step_seconds: find("backbone-ndarray").map(Timed::median),
        ndarray_reference_config_step_seconds: find("reference-ndarray").map(Timed::median),
        tokens_per_step: batch * seq,
        cpu_steal_percent,
        plots: vec![],
    };
    let plots = if args.reference_only { vec![] } else { plot(&dir, &summary)? };
    let summary = Summary { plots, ..summary };
    write_json(&dir.join("summary.json"), &summary)?;
    report(&summary);
    Ok(())
}

fn plot(dir: &Path, s: &Summary) -> anyhow::Result<Vec<String>> {
    // The A/A noise band: around the smallest table's row-sparse step time, as wide as the
    // control's step-by-step ratio strays from 1 (its interquartile range, else the ratio), so
    // differences between table sizes read against the machine's own noise, not a zoomed axis.
    let aa_band = s.step_seconds.values().next().zip(s.control_over_smallest_sparse).map(|(&center, r)| {
        let stray = match s.control_over_smallest_sparse_iqr {
            Some([lo, hi]) => (hi - 1.0).abs().max((1.0 - lo).abs()),
            None => (r - 1.0).abs(),
        };
        HBand { label: "A/A noise: smallest table timed twice".into(), center, half_width: stray * center }
    });
    let top = Chart {
        title: "Training step time vs table size (band: A/A noise)".into(),
        x_label: "table rows per Engram layer".into(),
        y_label: "median step time (s)".into(),
        log_x: true,
        log_y: true,
        y_from_zero: false,
        series: vec![
            Series { label: "row-sparse update".into(), points: s.step_seconds.iter().map(|(&r, &t)| (r as f64, t)).collect(), y_err: None, style: Style::LinePoints },
            Series { label: "dense update".into(), points: s.dense_step_seconds.iter().map(|(&r, &t)| (r as f64, t)).collect(), y_err: None, style: Style::LinePoints },
        ],
        bands: s.backbone_step_seconds.map(|b| HBand { label: "backbone without Engram".into(), center: b, half_width: 0.0 }).into_iter().chain(aa_band).collect(),
        annotations: s.largest_over_smallest_sparse.map(|r| format!("largest / smallest (sparse): {r:.3}{}", spread(s.largest_over_smallest_sparse_iqr))).into_iter().collect(),
    };
    let bottom = Chart {
        title: "Peak resident memory vs table size".into(),
        x_label: "table rows per Engram layer".into(),
        y_label: "peak RSS (MiB)".into(),
        log_x: true,
        log_y: true,
        y_from_zero: false,
        series: vec![Series { label: "peak RSS".into(), points: s.peak_rss_bytes.iter().map(|(&r, &b)| (r as f64, b as f64 / (1 << 20) as f64)).collect(), y_err: None, style: Style::LinePoints }],
        bands: vec![],
        annotations: vec![],
    };
    Ok(two_panel_chart(&top, &bottom, &dir.join("step_time_vs_table"))?.iter().map(|p| p.display().to_string()).collect())
}

/// `" (step-by-step IQR 1.01–1.04)"`, or nothing without one.
fn spread(iqr: Option<[f64; 2]>) -> String {
    iqr.map(|[lo, hi]| format!(" (step-by-step IQR {lo:.3}–{hi:.3})")).unwrap_or_default()
}

fn report(s: &Summary) {
    let rows: Vec<Vec<String>> = s
        .step_seconds
        .iter()
        .map(|(&r, &t)| {
            vec![
                format!("2^{}", r.trailing_zeros()),
                format!("{:.1}", t * 1e3),
                s.dense_step_seconds.get(&r).map(|d| format!("{:.1}", d * 1e3)).unwrap_or_else(|| "-".into()),
                format!("{:.0}", s.tokens_per_sec[&r]),
                s.peak_rss_bytes.get(&r).map(|b| format!("{:.0}", *b as f64 / (1 << 20) as f64)).unwrap_or_else(|| "-".into()),
                s.table_work_seconds.get(&r).map(|w| format!("{:.2}", w * 1e3)).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    println!("{} timed steps per configuration, interleaved (medians)", s.timed_steps);
    if let Some(p) = s.cpu_steal_percent {
        println!("CPU time stolen by the hypervisor while timing: {p:.1} %");
    }
    if !rows.is_empty() {
        println!("{}", render(&["rows/layer", "sparse ms", "dense ms", "tok/s", "peak MiB", "table work ms"], &rows));
    }
    if let Some(b) = s.backbone_step_seconds {
        println!("backbone without Engram: {:.1} ms/step", b * 1e3);
    }
    if let Some(r) = s.engram_over_backbone_at_default {
        println!("Engram step / backbone step at 2^{} rows: {r:.3}{}", s.default_table_rows.trailing_zeros(), spread(s.engram_over_backbone_at_default_iqr));
    }
    if let Some(r) = s.largest_over_smallest_sparse {
        println!("largest / smallest table, sparse: {r:.3}{}", spread(s.largest_over_smallest_sparse_iqr));
    }
    if let Some(r) = s.control_over_smallest_sparse {
        println!("A/A control, smallest table twice:  {r:.3}{}", spread(s.control_over_smallest_sparse_iqr));
    }
    for (what, r, q, f) in [("backbone", s.mhc4_over_m1_backbone, s.mhc4_over_m1_backbone_iqr, s.mhc4_flops_ratio_backbone), ("Engram model", s.mhc4_over_m1_engram, s.mhc4_over_m1_engram_iqr, s.mhc4_flops_ratio_engram)] {
        if let (Some(r), Some(f)) = (r, f) {
            println!("4 mHC streams / 1 stream, {what}: step {r:.3}{}, forward FLOPs {f:.3}", spread(q));
        }
    }
    if let (Some((&r0, &w0)), Some((&r1, &w1))) = (s.table_work_seconds.iter().next(), s.table_work_seconds.iter().last()) {
        println!("table work alone (unique rows, gather, sparse Adam): {:.2} ms at 2^{}, {:.2} ms at 2^{}", w0 * 1e3, r0.trailing_zeros(), w1 * 1e3, r1.trailing_zeros());
    }
    if let Some(d) = s.largest_over_smallest_dense {
        println!("largest / smallest table, dense:  {d:.3}");
    }
    println!(
        "reference config step: {:.1} ms (PyTorch on this machine type: {:.0} ms; ratio {:.2})",
        s.reference_config_step_seconds * 1e3,
        s.pytorch_reference_step_seconds * 1e3,
        s.reference_config_step_seconds / s.pytorch_reference_step_seconds
    );
    match (&s.ndarray_backend, s.ndarray_reference_config_step_seconds) {
        (Some(name), Some(r)) => {
            if let (Some(nb), Some(fb)) = (s.ndarray_backbone_step_seconds, s.backbone_step_seconds) {
                println!("backbone on {name}: {:.1} ms/step (flex {:.1} ms)", nb * 1e3, fb * 1e3);
            }
            println!("reference config on {name}: {:.1} ms/step (flex {:.1} ms)", r * 1e3, s.reference_config_step_seconds * 1e3);
        }
        _ => println!("ndarray: not measured (build with --features ndarray or --features openblas)"),
    }
}

fn main() -> std::process::ExitCode {
    engram::runtime::tune_allocator();
    exit_with(main_inner())
}
