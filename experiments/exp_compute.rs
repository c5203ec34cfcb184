//! `exp_compute` — what an Engram table is worth in compute: "memory substitutes compute",
//! with its uncertainty over seeds.
//!
//! Dense baselines at five compute sizes (the compute axis) and the ablation's Engram model
//! (the d64, 2-block backbone of [`ScienceSetup`], Engram before block 1) with three table
//! sizes, every configuration with the same seeds and recipe. For each seed, that seed's
//! baselines give a curve of bits per byte against log FLOPs per token (straight between
//! neighbouring sizes, [`flops_for_bpb`]); an Engram run of the same seed is **worth k×
//! compute** when a baseline needs `k` times its forward FLOPs per token for its bits per
//! byte. `k` is reported as the geometric mean over seeds with a 95 % interval (Student's t
//! on `log10 k`); a seed whose run beats every baseline (or loses to the smallest) has no
//! finite worth on this curve and is counted apart.
//!
//! ```text
//! cargo run --bin exp_compute                 # default: 24 runs
//! cargo run --bin exp_compute -- --quick      # smoke test
//! cargo run --bin exp_compute -- --plot-only  # redraw from runs/exp_compute/
//! ```

use std::path::Path;

use clap::Parser;
use serde::{Deserialize, Serialize};

use engram::engram::EngramConfig;
use engram::experiment::{ci95_half_width, exit_with, flops_for_bpb, mean_std, pm, sweep, MemoryOff, ScienceSetup, SweepArgs, SweepSpec, SweepSummary};
use engram::model::ModelConfig;
use engram::report::table::{render, si};
use engram::report::{line_chart, Chart, Series, Style};
use engram::run_dir::write_json;

const NAME: &str = "exp_compute";
/// Training steps of the default mode (the ablation's).
const DEFAULT_STEPS: usize = 400;

#[derive(Parser)]
#[command(name = NAME, about = "What an Engram table is worth in baseline compute, with its uncertainty over seeds")]
struct Args {
    #[command(flatten)]
    sweep: SweepArgs,
}

/// Baseline shapes (d_model, n_layers), smallest first, and the Engram table sizes (base rows
/// per head) of a mode.
fn shapes(quick: bool) -> (Vec<(usize, usize)>, Vec<u64>) {
    if quick {
        (vec![(16, 1), (24, 2), (32, 2), (48, 2), (64, 2)], vec![64, 256, 1_024])
    } else {
        (vec![(48, 2), (64, 2), (96, 3), (128, 4), (256, 4)], vec![1_024, 4_096, 16_384])
    }
}

fn baseline_group(d: usize, l: usize) -> String {
    format!("baseline-d{d}-l{l}")
}

fn engram_group(size: u64) -> String {
    format!("engram-t{size}")
}

fn specs(setup: &ScienceSetup) -> Vec<SweepSpec> {
    let (baselines, tables) = shapes(setup.quick);
    let mut specs = Vec::new();
    for (d, l) in baselines {
        let model = ModelConfig { d_model: d, n_layers: l, d_ff: ModelConfig::swiglu_width(d), ..setup.backbone() };
        let group = baseline_group(d, l);
        specs.push(SweepSpec { config: setup.config(&group, model), group, x: None });
    }
    for size in tables {
        let engram = EngramConfig { layer_ids: vec![setup.engram_block], table_size: vec![size, size], ..EngramConfig::default() };
        let group = engram_group(size);
        specs.push(SweepSpec { config: setup.config(&group, setup.backbone().with_engram(engram)), group, x: Some(size as f64) });
    }
    specs
}

/// What one Engram configuration is worth, over the seeds.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Worth {
    group: String,
    table_params: u64,
    flops_per_token: u64,
    /// Per seed: the baseline FLOPs per token for its bits per byte over its own (`None`:
    /// outside that seed's baselines).
    per_seed: Vec<Option<f64>>,
    /// Seeds whose run beats every baseline of that seed.
    above: usize,
    /// The largest baseline's FLOPs over this model's: those seeds beat every baseline up to
    /// this many times their FLOPs (not a worth: the baselines' curve need not fall to the end).
    above_bound: f64,
    /// Seeds whose run loses to the smallest baseline.
    below: usize,
    /// Geometric mean of the seeds inside the range, and its 95 % interval.
    geo_mean: Option<f64>,
    ci95: Option<[f64; 2]>,
}

fn worth(summary: &SweepSummary) -> Vec<Worth> {
    let base: Vec<_> = summary.runs.iter().filter(|r| r.group.starts_with("baseline-")).collect();
    let largest = base.iter().map(|r| r.record.flops_per_token).max().unwrap_or(0) as f64;
    summary
        .groups
        .iter()
        .filter(|g| g.group.starts_with("engram-"))
        .map(|g| {
            let own = g.flops_per_token as f64;
            let (mut above, mut below, mut per_seed) = (0, 0, Vec::new());
            for r in summary.runs.iter().filter(|r| r.group == g.group) {
                let pts: Vec<(f64, f64)> = base.iter().filter(|b| b.record.seed == r.record.seed).map(|b| (b.record.flops_per_token as f64, b.record.val_bpb)).collect();
                let k = flops_for_bpb(&pts, r.record.val_bpb).map(|f| f / own);
                if k.is_none() {
                    let best = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
                    if r.record.val_bpb < best {
                        above += 1;
                    } else {
                        below += 1;
                    }
                }
                per_seed.push(k);
            }
            let logs: Vec<f64> = per_seed.iter().flatten().map(|k| k.log10()).collect();
            let geo_mean = (!logs.is_empty()).then(|| 10f64.powf(mean_std(&logs).0));
            let ci95 = ci95_half_width(&logs).map(|h| {
                let m = mean_std(&logs).0;
                [10f64.powf(m - h), 10f64.powf(m + h)]
            });
            Worth { group: g.group.clone(), table_params: g.params_table, flops_per_token: g.flops_per_token, per_seed, above, above_bound: largest / own, below, geo_mean, ci95 }
        })
        .collect()
}

fn describe(w: &Worth) -> String {
    let inside = w.per_seed.iter().flatten().count();
    let mut s = match (w.geo_mean, w.ci95) {
        (Some(m), Some([lo, hi])) => format!("{m:.2}x (95 % {lo:.2}–{hi:.2}x, {inside} seeds)"),
        (Some(m), None) => format!("{m:.2}x ({inside} seed)"),
        _ => String::new(),
    };
    let sep = |s: &str| if s.is_empty() { "" } else { "; " };
    if w.above > 0 {
        s = format!("{s}{}{} seeds beat every baseline (up to {:.2}x its FLOPs)", sep(&s), w.above, w.above_bound);
    }
    if w.below > 0 {
        s = format!("{s}{}{} seeds lose to the smallest baseline", sep(&s), w.below);
    }
    if s.is_empty() { "-".into() } else { s }
}

fn plots(dir: &Path, summary: &SweepSummary, worths: &[Worth]) -> anyhow::Result<Vec<String>> {
    let err = |g: &engram::experiment::GroupStats| g.val_bpb_std;
    let (base, eng): (Vec<_>, Vec<_>) = summary.groups.iter().partition(|g| g.group.starts_with("baseline-"));
    let mut series = vec![Series {
        label: "dense baselines (mean ± std over seeds)".into(),
        points: base.iter().map(|g| (g.flops_per_token as f64, g.val_bpb_mean)).collect(),
        y_err: Some(base.iter().map(|g| err(g)).collect()),
        style: Style::LinePoints,
    }];
    for (g, w) in eng.iter().zip(worths) {
        series.push(Series {
            label: format!("Engram, {} table parameters", si(g.params_table as f64)),
            points: vec![(g.flops_per_token as f64, g.val_bpb_mean)],
            y_err: Some(vec![err(g)]),
            style: Style::Points,
        });
        if let Some(m) = w.geo_mean {
            let f = m * g.flops_per_token as f64;
            series.push(Series { label: format!("  worth {m:.2}x its FLOPs"), points: vec![(g.flops_per_token as f64, g.val_bpb_mean), (f, g.val_bpb_mean)], y_err: None, style: Style::Line });
        }
    }
    let chart = Chart {
        title: format!("What a table is worth in compute ({} seeds)", summary.seeds),
        x_label: "forward FLOPs per token".into(),
        y_label: "validation bits per byte".into(),
        log_x: true,
        log_y: false,
        y_from_zero: false,
        series,
        bands: vec![],
        annotations: worths
            .iter()
            .map(|w| {
                let inside = w.per_seed.iter().flatten().count();
                let mut parts = Vec::new();
                if let Some(m) = w.geo_mean {
                    parts.push(format!("worth {m:.2}x ({inside} of {} seeds)", w.per_seed.len()));
                }
                if w.above > 0 {
                    parts.push(format!("{} seeds beat every baseline", w.above));
                }
                format!("{}: {}", w.group, parts.join("; "))
            })
            .collect(),
    };
    Ok(line_chart(&chart, &dir.join("compute_equivalence"))?.iter().map(|p| p.display().to_string()).collect())
}

fn print_table(summary: &SweepSummary, worths: &[Worth]) {
    let rows: Vec<Vec<String>> = summary
        .groups
        .iter()
        .map(|g| {
            let w = worths.iter().find(|w| w.group == g.group);
            vec![
                g.group.clone(),
                si(g.params_backbone as f64),
                si(g.params_table as f64),
                si(g.flops_per_token as f64),
                pm(g.val_bpb_mean, g.val_bpb_std),
                w.map_or_else(|| "-".into(), describe),
            ]
        })
        .collect();
    println!("{}", render(&["configuration", "backbone params", "table params", "FLOPs/tok", "val bpb", "worth (baseline FLOPs / own)"], &rows));
}

fn main_inner() -> anyhow::Result<()> {
    let args = Args::parse();
    let c = &args.sweep.common;
    args.sweep.validate()?;
    let setup = ScienceSetup::new(c.quick, DEFAULT_STEPS, args.sweep.steps).with_tokenizer(c.tokenizer);
    let (dir, mut summary) = sweep(c, NAME, specs(&setup), args.sweep.seeds, MemoryOff::Never)?;
    let worths = worth(&summary);
    summary.analysis = serde_json::json!({ "worth": worths });
    summary.plots = plots(&dir, &summary, &worths)?;
    write_json(&dir.join("summary.json"), &summary)?;
    print_table(&summary, &worths);
    println!("\n{} runs, {:.0} s; results in {}", summary.runs.len(), summary.wall_seconds, dir.display());
    Ok(())
}

fn main() -> std::process::ExitCode {
    engram::runtime::tune_allocator();
    exit_with(main_inner())
}
