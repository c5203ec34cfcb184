//! `exp_throughput` — does a bigger table cost memory and not time?
//!
//! For the Engram model of `exp_engram`'s default (d_model 64, 2 blocks, Engram at block 1,
//! batch 16 × 64 tokens), measures the median training-step time and tokens/s for table sizes
//! from 2^14 to 2^24 rows per layer with the row-sparse update, the same with the dense update
//! (the O(rows) baseline, up to 2^22 rows), and the same backbone without Engram — all in one
//! run, after warm-up steps, several repetitions each. Also measures the hash alone (demo
//! layout, one thread and all threads), the PyTorch reference configuration (d_model 256,
//! 4 blocks, 4 heads, SwiGLU 682, seq 128, batch 16, vocab 8,192, AdamW, no Engram), and, when
//! built with `--features ndarray`, the same backbone on ndarray beside flex.
//!
//! Peak memory is the process's peak resident set (VmHWM) after each size; sizes run in
//! ascending order, so it is the peak up to and including that size.
//!
//! ```text
//! cargo run --bin exp_throughput            # full sweep (a few minutes)
//! cargo run --bin exp_throughput -- --quick # 2^14 and 2^16 rows only
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;
use clap::Parser;
use serde::{Deserialize, Serialize};

use engram::data::{DataConfig, PreparedData};
use engram::engram::EngramConfig;
use engram::experiment::{exit_with, load_data, prepare_out_dir, CommonArgs};
use engram::hashing::{HashConfig, NgramHasher};
use engram::model::ModelConfig;
use engram::report::table::{render, si};
use engram::report::{two_panel_chart, Chart, HBand, Series, Style};
use engram::table::UpdateMode;
use engram::train::{run, write_json, ExperimentConfig, RunOptions, TrainConfig};

#[derive(Parser)]
#[command(name = "exp_throughput", about = "Training-step time and memory vs Engram table size (sparse vs dense update), hash throughput, reference-config step time")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Timed steps per configuration (after the warm-up steps).
    #[arg(long)]
    reps: Option<usize>,
}

/// PyTorch 2.15 on CPU (2 threads) for the reference configuration, measured on this machine
/// type; the figure this crate is compared against.
const PYTORCH_REFERENCE_STEP_SECONDS: f64 = 0.514;
/// Warm-up steps not timed.
const WARMUP_STEPS: usize = 3;

#[derive(Serialize, Deserialize)]
struct Summary {
    backend: String,
    step_seconds: BTreeMap<u64, f64>,
    dense_step_seconds: BTreeMap<u64, f64>,
    tokens_per_sec: BTreeMap<u64, f64>,
    peak_rss_bytes: BTreeMap<u64, u64>,
    backbone_step_seconds: f64,
    engram_over_backbone_at_default: f64,
    largest_over_smallest_sparse: f64,
    largest_over_smallest_dense: Option<f64>,
    default_table_rows: u64,
    hash_tokens_per_sec_1thread: f64,
    hash_tokens_per_sec: f64,
    hash_threads: usize,
    reference_config_step_seconds: f64,
    pytorch_reference_step_seconds: f64,
    ndarray_backbone_step_seconds: Option<f64>,
    tokens_per_step: usize,
    plots: Vec<String>,
}

fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn train_cfg(steps: usize, batch: usize, seq: usize, seed: u64) -> TrainConfig {
    TrainConfig { steps, batch_size: batch, seq_len: seq, warmup_steps: 1, eval_every: steps, eval_windows: batch, seed, ..TrainConfig::default() }
}

/// Median step seconds of `model` trained for warm-up + `reps` steps.
fn time_steps(name: &str, model: ModelConfig, data: &PreparedData, tc: TrainConfig, device: &Device, out: &Path) -> anyhow::Result<f64> {
    let cfg = ExperimentConfig { name: name.to_string(), model, train: tc, data: data.config.clone() };
    let r = run(&cfg, data, device, &out.join(name), &RunOptions::default())?;
    // Drop the warm-up steps: the median of the timed steps only.
    let mut t: Vec<f64> = r.step_seconds.iter().skip(WARMUP_STEPS).copied().collect();
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[t.len() / 2])
}

fn hash_throughput(threads_all: bool) -> anyhow::Result<f64> {
    // Demo layout: V' = 98,627 (DeepSeek-V3 compressed), 2 layers × 16 ids per token.
    let v_prime = 98_627u64;
    let hasher = NgramHasher::new(&HashConfig::demo(), v_prime, 2)?;
    let (batch, seq) = (64usize, 2048usize);
    let mut x = 0x2545F4914F6CDD1Du64;
    let tokens: Vec<u32> = (0..batch * seq)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % v_prime) as u32
        })
        .collect();
    let mut out = Vec::new();
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let t = Instant::now();
        if threads_all {
            hasher.hash_batch_rows(&tokens, batch, seq, &mut out)?;
        } else {
            hasher.hash_batch_rows_1thread(&tokens, batch, seq, &mut out)?;
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    // Tokens per second per layer (each layer's 16 ids per token), as the reference measures.
    Ok((batch * seq * hasher.layers().len()) as f64 / best)
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
    let device = c.device()?;
    prepare_out_dir(&dir, c.overwrite)?;
    let reps = args.reps.unwrap_or(if c.quick { 4 } else { 12 });
    let steps = WARMUP_STEPS + reps;
    let (batch, seq) = if c.quick { (8, 32) } else { (16, 64) };
    let log2_sizes: Vec<u32> = if c.quick { vec![14, 16] } else { vec![14, 16, 18, 20, 22, 24] };
    let dense_max_log2 = if c.quick { 16 } else { 22 };
    let default_log2 = 16;

    let data = load_data(&DataConfig { vocab_size: 4096, ..DataConfig::default() })?;
    let backbone = ModelConfig::new(4096, 64, 2, 4, seq);
    let engram_at = |rows_per_layer: u64, update: UpdateMode| {
        // (N−1)·K = 8 heads per layer: each head's base size is rows / 8.
        let per_head = rows_per_layer / 8;
        backbone.clone().with_engram(EngramConfig { layer_ids: vec![1], table_size: vec![per_head, per_head], update, ..EngramConfig::default() })
    };

    eprintln!("hash throughput (demo layout) ...");
    let hash_1 = hash_throughput(false)?;
    let hash_all = hash_throughput(true)?;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    eprintln!("backbone without Engram ...");
    let backbone_s = time_steps("backbone", backbone.clone(), &data, train_cfg(steps, batch, seq, c.seed), &device, &dir)?;
    let mut step_seconds = BTreeMap::new();
    let mut dense_seconds = BTreeMap::new();
    let mut tokens_per_sec = BTreeMap::new();
    let mut peak = BTreeMap::new();
    for &l in &log2_sizes {
        let rows = 1u64 << l;
        eprintln!("table 2^{l} rows: sparse ...");
        let s = time_steps(&format!("sparse-2p{l}"), engram_at(rows, UpdateMode::Sparse), &data, train_cfg(steps, batch, seq, c.seed), &device, &dir)?;
        step_seconds.insert(rows, s);
        tokens_per_sec.insert(rows, (batch * seq) as f64 / s);
        if l <= dense_max_log2 {
            eprintln!("table 2^{l} rows: dense ...");
            let d = time_steps(&format!("dense-2p{l}"), engram_at(rows, UpdateMode::Dense), &data, train_cfg(steps, batch, seq, c.seed), &device, &dir)?;
            dense_seconds.insert(rows, d);
        }
        peak.insert(rows, peak_rss_bytes());
    }

    eprintln!("reference configuration (d_model 256, 4 blocks, seq 128, batch 16, vocab 8192) ...");
    let ref_data = if c.quick { data.clone() } else { load_data(&DataConfig { vocab_size: 8192, ..DataConfig::default() })? };
    let mut reference = ModelConfig::reference();
    reference.vocab_size = ref_data.vocab_size;
    let ref_steps = if c.quick { WARMUP_STEPS + 2 } else { WARMUP_STEPS + 5 };
    let reference_s = time_steps("reference", reference, &ref_data, train_cfg(ref_steps, 16, 128, c.seed), &device, &dir)?;

    let ndarray_s = match engram::device::device_from_name("ndarray") {
        Ok(nd) if c.device != "ndarray" => {
            eprintln!("backbone on ndarray ...");
            Some(time_steps("backbone-ndarray", backbone.clone(), &data, train_cfg(steps, batch, seq, c.seed), &nd, &dir)?)
        }
        _ => None,
    };

    let smallest = step_seconds[&(1u64 << log2_sizes[0])];
    let largest = step_seconds[&(1u64 << log2_sizes[log2_sizes.len() - 1])];
    let dense_ratio = (dense_seconds.len() >= 2).then(|| dense_seconds.values().last().unwrap() / dense_seconds.values().next().unwrap());
    let default_rows = 1u64 << default_log2;
    let summary = Summary {
        backend: c.device.clone(),
        engram_over_backbone_at_default: step_seconds.get(&default_rows).copied().unwrap_or(f64::NAN) / backbone_s,
        step_seconds,
        dense_step_seconds: dense_seconds,
        tokens_per_sec,
        peak_rss_bytes: peak,
        backbone_step_seconds: backbone_s,
        largest_over_smallest_sparse: largest / smallest,
        largest_over_smallest_dense: dense_ratio,
        default_table_rows: default_rows,
        hash_tokens_per_sec_1thread: hash_1,
        hash_tokens_per_sec: hash_all,
        hash_threads: threads,
        reference_config_step_seconds: reference_s,
        pytorch_reference_step_seconds: PYTORCH_REFERENCE_STEP_SECONDS,
        ndarray_backbone_step_seconds: ndarray_s,
        tokens_per_step: batch * seq,
        plots: vec![],
    };
    let plots = plot(&dir, &summary)?;
    let summary = Summary { plots, ..summary };
    write_json(&dir.join("summary.json"), &summary)?;
    report(&summary);
    Ok(())
}

fn plot(dir: &Path, s: &Summary) -> anyhow::Result<Vec<String>> {
    let top = Chart {
        title: "Training step time vs table size".into(),
        x_label: "table rows per Engram layer".into(),
        y_label: "median step time (s)".into(),
        log_x: true,
        log_y: true,
        series: vec![
            Series { label: "row-sparse update".into(), points: s.step_seconds.iter().map(|(&r, &t)| (r as f64, t)).collect(), y_err: None, style: Style::LinePoints },
            Series { label: "dense update".into(), points: s.dense_step_seconds.iter().map(|(&r, &t)| (r as f64, t)).collect(), y_err: None, style: Style::LinePoints },
        ],
        bands: vec![HBand { label: "backbone without Engram".into(), center: s.backbone_step_seconds, half_width: 0.0 }],
        annotations: vec![format!("largest / smallest (sparse): {:.3}", s.largest_over_smallest_sparse)],
    };
    let bottom = Chart {
        title: "Peak resident memory vs table size".into(),
        x_label: "table rows per Engram layer".into(),
        y_label: "peak RSS (MiB)".into(),
        log_x: true,
        log_y: true,
        series: vec![Series { label: "peak RSS".into(), points: s.peak_rss_bytes.iter().map(|(&r, &b)| (r as f64, b as f64 / (1 << 20) as f64)).collect(), y_err: None, style: Style::LinePoints }],
        bands: vec![],
        annotations: vec![],
    };
    Ok(two_panel_chart(&top, &bottom, &dir.join("step_time_vs_table"))?.iter().map(|p| p.display().to_string()).collect())
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
                format!("{:.0}", s.peak_rss_bytes[&r] as f64 / (1 << 20) as f64),
            ]
        })
        .collect();
    println!("{}", render(&["rows/layer", "sparse ms", "dense ms", "tok/s", "peak MiB"], &rows));
    println!("backbone without Engram: {:.1} ms/step", s.backbone_step_seconds * 1e3);
    println!("Engram step / backbone step at 2^{} rows: {:.3}", s.default_table_rows.trailing_zeros(), s.engram_over_backbone_at_default);
    println!("largest / smallest table, sparse: {:.3}", s.largest_over_smallest_sparse);
    if let Some(d) = s.largest_over_smallest_dense {
        println!("largest / smallest table, dense:  {d:.3}");
    }
    println!(
        "hash (demo layout, per layer): {} tokens/s on 1 thread, {} tokens/s on {} threads",
        si(s.hash_tokens_per_sec_1thread),
        si(s.hash_tokens_per_sec),
        s.hash_threads
    );
    println!(
        "reference config step: {:.1} ms (PyTorch on this machine type: {:.0} ms; ratio {:.2})",
        s.reference_config_step_seconds * 1e3,
        s.pytorch_reference_step_seconds * 1e3,
        s.reference_config_step_seconds / s.pytorch_reference_step_seconds
    );
    match s.ndarray_backbone_step_seconds {
        Some(nd) => println!("backbone on ndarray: {:.1} ms/step (flex {:.1} ms)", nd * 1e3, s.backbone_step_seconds * 1e3),
        None => println!("ndarray: not measured (build with --features ndarray)"),
    }
}

fn main() -> std::process::ExitCode {
    engram::runtime::tune_allocator();
    exit_with(main_inner())
}
