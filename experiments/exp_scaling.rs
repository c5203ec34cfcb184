//! `exp_scaling` — "infinite memory": validation loss against the number of Engram table slots
//! at fixed compute (spec §7: the paper finds loss falling linearly in log(slots)).
//!
//! One backbone (the shared small-scale setup, [`ScienceSetup`]), Engram before block 1 with
//! 2- and 3-grams × 4 heads of width 16; only the per-head table size changes, over a log
//! scale. Table size costs no FLOPs (the gather is a lookup), so every Engram run has the same
//! forward FLOPs per token. Each size and the baseline (the same backbone without Engram) are
//! trained with the same seeds. The plot shows mean ± std over seeds against the total slots
//! (log x), the least-squares line of the mean loss on log10(slots) with its slope ± standard
//! error, and the baseline as a band (mean ± std). For each size, the table's use in
//! training (replayed for the first seed, [`engram::train::table_use`]): the rows the
//! updates touched, as a share of the slots, and the distinct 2- and 3-grams behind them.
//!
//! ```text
//! cargo run --bin exp_scaling                 # default: 21 runs, about 25 min on 2 cores
//! cargo run --bin exp_scaling -- --quick      # smoke test (< 60 s)
//! cargo run --bin exp_scaling -- --plot-only  # redraw from runs/exp_scaling/
//! ```

use std::path::Path;

use clap::Parser;

use engram::engram::EngramConfig;
use engram::config::ExperimentConfig;
use engram::experiment::{exit_with, linear_fit, load_data, pm, sweep, SweepArgs, LinearFit, ScienceSetup, SweepSpec, SweepSummary};
use engram::train::{table_use, TableUse};
use engram::report::table::{render, si};
use engram::report::{line_chart, Chart, HBand, Series, Style};
use engram::run_dir::write_json;

const NAME: &str = "exp_scaling";
/// Training steps of the default mode. Measured on the 2-core machine while shared (load
/// average 5–7): 0.13–0.16 s per step with or without Engram (table size does not matter),
/// 75–90 s per 500-step run with its evaluations; 21 runs of 500 steps took 1,830 s, so the
/// default is 450 steps (≈ 25 min).
const DEFAULT_STEPS: usize = 450;
/// Per-head base table sizes (the primes above them are the real sizes), default mode.
const DEFAULT_SIZES: [u64; 6] = [64, 256, 1_024, 4_096, 16_384, 65_536];
/// Per-head base table sizes, `--quick`.
const QUICK_SIZES: [u64; 5] = [64, 256, 1_024, 4_096, 16_384];
const BASELINE: &str = "baseline";

#[derive(Parser)]
#[command(name = NAME, about = "Validation loss vs Engram table slots at fixed compute, with a log-linear fit and the baseline")]
struct Args {
    #[command(flatten)]
    sweep: SweepArgs,
}

fn specs(setup: &ScienceSetup, sizes: &[u64]) -> Vec<SweepSpec> {
    let mut out = vec![SweepSpec { group: BASELINE.into(), x: None, config: setup.config(BASELINE, setup.backbone()) }];
    for &size in sizes {
        let engram = EngramConfig { layer_ids: vec![setup.engram_block], table_size: vec![size, size], ..EngramConfig::default() };
        let group = format!("engram-t{size}");
        out.push(SweepSpec { group: group.clone(), x: None, config: setup.config(&group, setup.backbone().with_engram(engram)) });
    }
    out
}

/// Slots on the x axis: the table rows of each run (sums of primes, not the base sizes).
fn set_slots(summary: &mut SweepSummary) {
    for r in &mut summary.runs {
        r.x = (r.record.table_rows > 0).then_some(r.record.table_rows as f64);
    }
    summary.groups = engram::experiment::aggregate(&summary.runs);
}

fn fit(summary: &SweepSummary) -> Option<LinearFit> {
    let eng: Vec<_> = summary.groups.iter().filter(|g| g.x.is_some()).collect();
    let xs: Vec<f64> = eng.iter().map(|g| g.x.unwrap_or(f64::NAN).log10()).collect();
    let ys: Vec<f64> = eng.iter().map(|g| g.val_bpb_mean).collect();
    linear_fit(&xs, &ys)
}

fn plots(dir: &Path, summary: &SweepSummary, fit: Option<&LinearFit>) -> anyhow::Result<Vec<String>> {
    let eng: Vec<_> = summary.groups.iter().filter(|g| g.x.is_some()).collect();
    let mut series = vec![Series {
        label: format!("Engram (mean ± std over {} seeds)", summary.seeds),
        points: eng.iter().map(|g| (g.x.unwrap_or(f64::NAN), g.val_bpb_mean)).collect(),
        y_err: Some(eng.iter().map(|g| g.val_bpb_std).collect()),
        style: Style::LinePoints,
    }];
    let mut annotations = Vec::new();
    if let (Some(f), Some(lo), Some(hi)) = (fit, eng.first().and_then(|g| g.x), eng.last().and_then(|g| g.x)) {
        let line = |x: f64| f.intercept + f.slope * x.log10();
        series.push(Series { label: "least-squares fit on log10(slots)".into(), points: vec![(lo, line(lo)), (hi, line(hi))], y_err: None, style: Style::Line });
        annotations.push(format!("slope = {:+.4} ± {:.4} bits per byte per 10× slots", f.slope, f.slope_se));
        annotations.push(format!("R² = {:.3}, {} sizes", f.r2, f.n));
    }
    let bands = summary
        .group(BASELINE)
        .map(|b| vec![HBand { label: format!("baseline without Engram ({})", pm(b.val_bpb_mean, b.val_bpb_std)), center: b.val_bpb_mean, half_width: b.val_bpb_std }])
        .unwrap_or_default();
    let chart = Chart {
        title: "Validation bits per byte vs Engram table slots (fixed compute)".into(),
        x_label: "table slots (rows of all heads)".into(),
        y_label: "final validation loss (bits per byte)".into(),
        log_x: true,
        log_y: false,
        y_from_zero: false,
        series,
        bands,
        annotations,
    };
    Ok(line_chart(&chart, &dir.join("loss_vs_slots"))?.iter().map(|p| p.display().to_string()).collect())
}

/// Each Engram size's table use in training (its first seed's run, replayed from the run
/// directory's config.json): rows touched and distinct n-grams.
fn table_uses(dir: &Path, summary: &SweepSummary) -> anyhow::Result<Vec<(String, TableUse)>> {
    let mut data = None;
    let mut out = Vec::new();
    for g in summary.groups.iter().filter(|g| g.x.is_some()) {
        let Some(run) = summary.runs.iter().find(|r| r.group == g.group) else { continue };
        let path = dir.join(&run.record.name).join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let cfg: ExperimentConfig = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if data.is_none() {
            data = Some(load_data(&cfg.data)?);
        }
        out.push((g.group.clone(), table_use(&cfg, data.as_ref().expect("loaded above"))?));
    }
    Ok(out)
}

fn print_table(summary: &SweepSummary, fit: Option<&LinearFit>, uses: &[(String, TableUse)]) {
    let base = summary.group(BASELINE).map(|b| b.val_bpb_mean);
    let rows: Vec<Vec<String>> = summary
        .groups
        .iter()
        .map(|g| {
            vec![
                g.group.clone(),
                g.x.map(si).unwrap_or_else(|| "-".into()),
                si(g.flops_per_token as f64),
                g.n.to_string(),
                pm(g.val_bpb_mean, g.val_bpb_std),
                g.val_bpb_memory_off_mean.map(|m| pm(m, g.val_bpb_memory_off_std.unwrap_or(0.0))).unwrap_or_else(|| "-".into()),
                base.map(|b| format!("{:+.4}", g.val_bpb_mean - b)).unwrap_or_default(),
                format!("{:.1}", g.wall_seconds_mean),
                uses.iter().find(|(n, _)| n == &g.group).map_or_else(|| "-".into(), |(_, u)| {
                    let rows = u.rows_touched.iter().sum::<u64>();
                    format!("{} ({:.0} %)", si(rows as f64), 100.0 * rows as f64 / g.x.unwrap_or(f64::NAN))
                }),
                uses.iter().find(|(n, _)| n == &g.group).map_or_else(|| "-".into(), |(_, u)| u.distinct_ngrams.iter().map(|&n| si(n as f64)).collect::<Vec<_>>().join(" / ")),
            ]
        })
        .collect();
    println!("{}", render(&["config", "slots", "FLOPs/tok", "seeds", "val bpb", "memory off", "Δ baseline", "s/run", "rows touched (of slots)", "distinct 2- / 3-grams"], &rows));
    match fit {
        Some(f) => println!(
            "\nlog-linear fit over {} sizes: bpb = {:.4} {:+.4} · log10(slots); slope ± se = {:+.4} ± {:.4} (R² {:.3})",
            f.n, f.intercept, f.slope, f.slope, f.slope_se, f.r2
        ),
        None => println!("\nno fit (fewer than two table sizes)"),
    }
}

fn main_inner() -> anyhow::Result<()> {
    let args = Args::parse();
    let c = &args.sweep.common;
    args.sweep.validate()?;
    let setup = ScienceSetup::new(c.quick, DEFAULT_STEPS, args.sweep.steps).with_tokenizer(c.tokenizer);
    let sizes: &[u64] = if c.quick { &QUICK_SIZES } else { &DEFAULT_SIZES };
    let (dir, mut summary) = sweep(c, NAME, specs(&setup, sizes), args.sweep.seeds, true)?;
    set_slots(&mut summary);
    let f = fit(&summary);
    let uses = table_uses(&dir, &summary)?;
    let use_json: Vec<serde_json::Value> = uses.iter().map(|(g, u)| serde_json::json!({ "group": g, "use": u })).collect();
    summary.analysis = serde_json::json!({ "fit_bpb_on_log10_slots": f, "table_use_first_seed": use_json });
    summary.plots = plots(&dir, &summary, f.as_ref())?;
    write_json(&dir.join("summary.json"), &summary)?;
    print_table(&summary, f.as_ref(), &uses);
    println!("\n{} runs, {:.0} s; results in {}", summary.runs.len(), summary.wall_seconds, dir.display());
    Ok(())
}

fn main() -> std::process::ExitCode {
    engram::runtime::tune_allocator();
    exit_with(main_inner())
}
