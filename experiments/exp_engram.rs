//! `exp_engram` — memory versus compute on the shipped corpus.
//!
//! Trains a family of baselines of growing size (the compute axis) and Engram variants of one
//! backbone with growing tables (the memory axis), all for the same number of tokens, then
//! plots validation loss against training tokens, forward FLOPs per token and total
//! parameters, and training throughput against table size.
//!
//! ```text
//! cargo run --bin exp_engram                 # default (a few minutes on 2 cores)
//! cargo run --bin exp_engram -- --quick      # smoke test (< 90 s)
//! cargo run --bin exp_engram -- --plot-only  # redraw plots from runs/exp_engram/
//! ```

use std::path::Path;

use clap::Parser;
use serde::{Deserialize, Serialize};

use engram::data::DataConfig;
use engram::engram::EngramConfig;
use engram::experiment::{exit_with, flops_for_bpb, load_data, prepare_out_dir, run_all, CommonArgs, RunRecord, ScienceSetup};
use engram::model::ModelConfig;
use engram::metrics::{read_metrics, val_bpb_curve};
use engram::report::table::{render, si};
use engram::report::{line_chart, Chart, HBand, Series, Style};
use engram::run_dir::write_json;
use engram::config::{ExperimentConfig, TrainConfig};

#[derive(Parser)]
#[command(name = "exp_engram", about = "Baselines of growing size vs Engram variants with growing tables: loss vs FLOPs, parameters and throughput")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Training steps per run (overrides the default of the chosen mode).
    #[arg(long)]
    steps: Option<usize>,
}

#[derive(Serialize, Deserialize)]
struct Summary {
    experiment: String,
    device: String,
    seed: u64,
    data: String,
    runs: Vec<RunRecord>,
    plots: Vec<String>,
}

/// Baseline shapes (d_model, n_layers, n_heads), smallest first; the Engram backbone index;
/// table sizes per head; the training settings.
struct Plan {
    baselines: Vec<(usize, usize, usize)>,
    backbone: usize,
    table_sizes: Vec<u64>,
    train: TrainConfig,
    vocab_size: usize,
}

fn plan(quick: bool, seed: u64, steps: Option<usize>) -> Plan {
    if quick {
        Plan {
            baselines: vec![(32, 1, 2), (48, 2, 2), (64, 2, 4)],
            backbone: 0,
            table_sizes: vec![256, 2048, 16_384],
            // The science experiments' quick recipe (40 steps of 8 × 32 tokens).
            train: TrainConfig { seed, ..ScienceSetup::new(true, 0, steps).train },
            vocab_size: 1024,
        }
    } else {
        Plan {
            baselines: vec![(64, 2, 4), (96, 3, 4), (128, 4, 4)],
            backbone: 0,
            table_sizes: vec![1_024, 8_192, 65_536],
            train: TrainConfig {
                steps: steps.unwrap_or(500),
                batch_size: 16,
                seq_len: 64,
                warmup_steps: 40,
                eval_every: 100,
                eval_windows: 256,
                seed,
                ..TrainConfig::default()
            },
            vocab_size: 4096,
        }
    }
}

/// The runs of plan `p` on `data` (whose vocabulary size the models take).
fn configs(p: &Plan, data: &DataConfig) -> Vec<ExperimentConfig> {
    let vocab = data.vocab_size;
    let mut out = Vec::new();
    for &(d, l, h) in &p.baselines {
        out.push(ExperimentConfig {
            name: format!("baseline-d{d}-l{l}"),
            model: ModelConfig::new(vocab, d, l, h, p.train.seq_len),
            train: p.train.clone(),
            data: data.clone(),
        });
    }
    let (d, l, h) = p.baselines[p.backbone];
    for &size in &p.table_sizes {
        let engram = EngramConfig {
            // Block 1 of the backbone (block 0 when it has a single block): the paper's ablation
            // finds an early block best.
            layer_ids: vec![1.min(l - 1)],
            table_size: vec![size, size],
            ..EngramConfig::default()
        };
        out.push(ExperimentConfig {
            name: format!("engram-d{d}-l{l}-t{size}"),
            model: ModelConfig::new(vocab, d, l, h, p.train.seq_len).with_engram(engram),
            train: p.train.clone(),
            data: data.clone(),
        });
    }
    out
}

/// [`flops_for_bpb`] on the baselines' runs.
fn baseline_flops_for(base: &[&RunRecord], bpb: f64) -> Option<f64> {
    let pts: Vec<(f64, f64)> = base.iter().map(|r| (r.flops_per_token as f64, r.val_bpb)).collect();
    flops_for_bpb(&pts, bpb)
}

/// "How many times its own FLOPs per token a baseline needs for the same bits per byte" as
/// text: `2.10x` inside the baselines' range, `> 3.49x` when the run beats the largest baseline
/// (the bound is the largest baseline's FLOPs), `< 1.05x` when the smallest beats it.
fn worth(base: &[&RunRecord], r: &RunRecord) -> String {
    let own = r.flops_per_token as f64;
    if let Some(f) = baseline_flops_for(base, r.val_bpb) {
        return format!("{:.2}x", f / own);
    }
    let best = base.iter().min_by(|a, b| a.val_bpb.total_cmp(&b.val_bpb));
    let worst = base.iter().max_by(|a, b| a.val_bpb.total_cmp(&b.val_bpb));
    match (best, worst) {
        (Some(b), _) if r.val_bpb < b.val_bpb => format!("> {:.2}x", b.flops_per_token as f64 / own),
        (_, Some(w)) if r.val_bpb > w.val_bpb => format!("< {:.2}x", w.flops_per_token as f64 / own),
        _ => "-".into(),
    }
}

fn plots(dir: &Path, runs: &[RunRecord]) -> anyhow::Result<Vec<String>> {
    let mut paths = Vec::new();
    let (base, eng): (Vec<&RunRecord>, Vec<&RunRecord>) = runs.iter().partition(|r| r.variant == "baseline");

    // 1. Validation bits per byte vs training tokens, one line per run.
    let mut series = Vec::new();
    for r in runs {
        let m = read_metrics(&dir.join(&r.name).join("metrics.csv")).map_err(anyhow::Error::msg)?;
        series.push(Series { label: r.name.clone(), points: val_bpb_curve(&m), y_err: None, style: Style::LinePoints });
    }
    let chart = Chart {
        title: "Validation bits per byte during training".into(),
        x_label: "training tokens".into(),
        y_label: "validation bits per byte".into(),
        log_x: false,
        log_y: false,
        y_from_zero: false,
        series,
        bands: vec![],
        annotations: vec![],
    };
    paths.extend(line_chart(&chart, &dir.join("loss_vs_tokens"))?);

    // 2. Final bits per byte vs forward FLOPs per token; each Engram model joined by a line to
    // the FLOPs a baseline needs for the same bits per byte (interpolated on the baselines).
    let pts = |rs: &[&RunRecord], x: &dyn Fn(&RunRecord) -> f64| rs.iter().map(|r| (x(r), r.val_bpb)).collect::<Vec<_>>();
    let flops = |r: &RunRecord| r.flops_per_token as f64;
    let mut s = vec![Series { label: "baselines (compute axis)".into(), points: pts(&base, &flops), y_err: None, style: Style::LinePoints }];
    for r in &eng {
        let label = format!("Engram, {} table rows", si(r.table_rows as f64));
        s.push(Series { label, points: vec![(flops(r), r.val_bpb)], y_err: None, style: Style::Points });
        if let Some(f) = baseline_flops_for(&base, r.val_bpb) {
            let label = format!("  = baseline at {} FLOPs/token ({:.2}x)", si(f), f / flops(r));
            s.push(Series { label, points: vec![(flops(r), r.val_bpb), (f, r.val_bpb)], y_err: None, style: Style::Line });
        }
    }
    let chart = Chart {
        title: "Final validation bits per byte vs forward FLOPs per token".into(),
        x_label: "forward FLOPs per token".into(),
        y_label: "validation bits per byte (all held-out bytes)".into(),
        log_x: true,
        log_y: false,
        y_from_zero: false,
        series: s,
        bands: vec![],
        annotations: eng.iter().map(|r| format!("{} table rows: worth {} its FLOPs/token", si(r.table_rows as f64), worth(&base, r))).collect(),
    };
    paths.extend(line_chart(&chart, &dir.join("loss_vs_flops"))?);

    // 3. Final bits per byte vs total parameters (tables included), log x.
    let total = |r: &RunRecord| (r.params_backbone + r.params_table) as f64;
    let chart = Chart {
        title: "Final validation bits per byte vs total parameters".into(),
        x_label: "total parameters (backbone + tables)".into(),
        y_label: "validation bits per byte".into(),
        log_x: true,
        log_y: false,
        y_from_zero: false,
        series: vec![
            Series { label: "baselines".into(), points: pts(&base, &total), y_err: None, style: Style::LinePoints },
            Series { label: "Engram (growing table)".into(), points: pts(&eng, &total), y_err: None, style: Style::LinePoints },
        ],
        bands: vec![],
        annotations: vec![],
    };
    paths.extend(line_chart(&chart, &dir.join("loss_vs_params"))?);

    // 4. Training throughput vs table rows; the backbone without Engram as a band.
    if !eng.is_empty() {
        let backbone = base.iter().find(|b| b.d_model == eng[0].d_model && b.n_layers == eng[0].n_layers);
        let chart = Chart {
            title: "Training throughput vs table size".into(),
            x_label: "table rows (all Engram layers)".into(),
            y_label: "training tokens / s".into(),
            log_x: true,
            log_y: false,
            y_from_zero: true,
            series: vec![Series {
                label: "Engram".into(),
                points: eng.iter().map(|r| (r.table_rows as f64, r.tokens_per_sec)).collect(),
                y_err: None,
                style: Style::LinePoints,
            }],
            bands: backbone
                .map(|b| vec![HBand { label: format!("{} without Engram", b.name), center: b.tokens_per_sec, half_width: 0.0 }])
                .unwrap_or_default(),
            annotations: vec![],
        };
        paths.extend(line_chart(&chart, &dir.join("throughput_vs_table"))?);
    }
    Ok(paths.iter().map(|p| p.display().to_string()).collect())
}

fn print_table(runs: &[RunRecord]) {
    let base: Vec<&RunRecord> = runs.iter().filter(|r| r.variant == "baseline").collect();
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let worth = if r.variant == "baseline" { "-".to_string() } else { worth(&base, r) };
            vec![
                r.name.clone(),
                si(r.params_backbone as f64),
                si(r.params_table as f64),
                si(r.flops_per_token as f64),
                format!("{:.4}", r.val_bpb),
                r.val_bpb_memory_off.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into()),
                format!("{:.4}", r.val_loss),
                worth,
                format!("{:.0}", r.tokens_per_sec),
                format!("{:.1}", r.eval_seconds),
                format!("{:.1}", r.wall_seconds),
            ]
        })
        .collect();
    println!(
        "{}",
        render(&["run", "backbone", "table", "FLOPs/tok", "val bpb", "mem off", "nats/tok", "worth", "tok/s", "eval s", "seconds"], &rows)
    );
    println!("bpb: bits per byte over all {} held-out bytes; worth: the FLOPs per token a baseline needs for the same bpb (interpolated between baselines; a bound outside their range), over the run's own", runs.first().map_or(0, |r| r.val_bytes));
}

fn main_inner() -> anyhow::Result<()> {
    let args = Args::parse();
    let c = &args.common;
    let dir = c.out_dir("exp_engram");
    if c.plot_only {
        let text = std::fs::read_to_string(dir.join("summary.json")).map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("summary.json").display()))?;
        let mut summary: Summary = serde_json::from_str(&text)?;
        summary.plots = plots(&dir, &summary.runs)?;
        write_json(&dir.join("summary.json"), &summary)?;
        print_table(&summary.runs);
        return Ok(());
    }
    let device = c.device()?;
    prepare_out_dir(&dir, c.overwrite)?;
    let p = plan(c.quick, c.seed, args.steps);
    let cfgs = configs(&p, &c.data(p.vocab_size));
    let data = load_data(&cfgs[0].data)?;
    let t0 = std::time::Instant::now();
    let results = run_all(&cfgs, &data, &device, &dir, !c.no_progress, true)?;
    let runs: Vec<RunRecord> = cfgs.iter().zip(&results).map(|(cfg, r)| RunRecord::new(cfg, r)).collect();
    let plot_paths = plots(&dir, &runs)?;
    let summary = Summary { experiment: "exp_engram".into(), device: c.device.clone(), seed: c.seed, data: data.summary.clone(), runs, plots: plot_paths };
    write_json(&dir.join("summary.json"), &summary)?;
    print_table(&summary.runs);
    let (base, eng): (Vec<&RunRecord>, Vec<&RunRecord>) = summary.runs.iter().partition(|r| r.variant == "baseline");
    if let (Some(bb), Some(best)) = (
        base.iter().find(|b| eng.first().is_some_and(|e| e.d_model == b.d_model && e.n_layers == b.n_layers)),
        eng.iter().min_by(|a, b| a.val_bpb.total_cmp(&b.val_bpb)),
    ) {
        let verdict = if best.val_bpb < bb.val_bpb { "beats" } else { "does NOT beat" };
        println!(
            "\nbest Engram run {} ({:.4} bpb) {verdict} its backbone {} ({:.4} bpb): Δ = {:+.4} bits per byte at {:+.1} % FLOPs/token",
            best.name,
            best.val_bpb,
            bb.name,
            bb.val_bpb,
            best.val_bpb - bb.val_bpb,
            100.0 * (best.flops_per_token as f64 / bb.flops_per_token as f64 - 1.0)
        );
    }
    println!("\n{} runs in {:.1} s; results in {}", summary.runs.len(), t0.elapsed().as_secs_f64(), dir.display());
    Ok(())
}

fn main() -> std::process::ExitCode {
    engram::runtime::tune_allocator();
    exit_with(main_inner())
}
