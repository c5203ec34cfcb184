//! `exp_scaling` — "infinite memory": validation loss against the number of Engram table slots
//! at fixed compute (spec §7: the paper finds loss falling linearly in log(slots)), from about
//! 10^3 slots to past 10^9, beyond this machine's memory.
//!
//! One backbone (the shared small-scale setup, [`ScienceSetup`]), Engram before block 1 with
//! 2- and 3-grams × 4 heads of width 16; only the per-head table size changes, over a log
//! scale. Table size costs no FLOPs (the gather is a lookup), so every Engram run has the same
//! forward FLOPs per token. Tables of 2^19 rows per head and more (4.2 M slots, 0.8 GB of
//! records resident) are file-backed ([`TableStore::File`]: rows created on first touch, in a
//! sparse file inside the run directory), which trains bit-identically to a resident table;
//! the largest, 2^27 rows per head (1.07 G slots), would take 210 GB resident. Each size and
//! the baseline (the same backbone without Engram) are trained with the same seeds.
//!
//! Reported for each size: mean ± std of bits per byte over seeds, the same with the
//! memory zeroed for the first seed (a second full evaluation, so only one seed pays it),
//! and the table's use in
//! training (replayed for the first seed, [`engram::train::table_use`]): the rows the updates
//! touched, as a share of the slots, and the distinct 2- and 3-grams behind them. A table
//! stops gaining from more slots once nearly every n-gram seen has rows of its own (rows
//! touched near heads × distinct n-grams): there the log-linear law bends. The bend is found
//! by [`bend_fit`] (one line against two joined lines, by BIC), and the slope ± standard error
//! is fitted over the linear part only. The plot shows the curve with both fits and the
//! baseline as a band, and under it the rows touched against the slots.
//!
//! ```text
//! cargo run --bin exp_scaling                 # default: 21 runs of 450 steps, about 25 min on 2 cores
//! cargo run --bin exp_scaling -- --long       # 4,000 steps per run (9× the tokens): several hours
//! cargo run --bin exp_scaling -- --quick      # smoke test (< 60 s)
//! cargo run --bin exp_scaling -- --plot-only  # redraw from runs/exp_scaling/
//! ```

use std::path::Path;

use clap::Parser;

use engram::config::ExperimentConfig;
use engram::engram::EngramConfig;
use engram::experiment::{bend_fit, exit_with, load_data, pm, sweep, BendFit, MemoryOff, ScienceSetup, SweepArgs, SweepSpec, SweepSummary};
use engram::report::table::{render, si};
use engram::report::{two_panel_chart, Chart, HBand, Series, Style};
use engram::run_dir::write_json;
use engram::table::TableStore;
use engram::train::{table_use, TableUse};

const NAME: &str = "exp_scaling";
/// Training steps of the default mode: 450 steps × 16 × 64 tokens (461k tokens). Measured on
/// the 2-core machine: 0.13–0.16 s per step with or without Engram, whatever the table size
/// or store; 21 runs of 500 steps took 1,830 s, so 450 steps keep the default near 25 min.
const DEFAULT_STEPS: usize = 450;
/// Training steps with `--long` (4.1 M tokens per run).
const LONG_STEPS: usize = 4_000;
/// Per-head base table sizes (the primes above them are the real sizes), default and
/// `--long`: 2^7 … 2^27, ×16 apart (8 heads: 1.0 k … 1.07 G slots).
const DEFAULT_SIZES: [u64; 6] = [1 << 7, 1 << 11, 1 << 15, 1 << 19, 1 << 23, 1 << 27];
/// Per-head base table sizes, `--quick`; the largest is file-backed.
const QUICK_SIZES: [u64; 5] = [64, 512, 4_096, 32_768, 1 << 23];
/// Per-head base sizes from which the tables live in files (2^19 × 8 heads × 196 bytes per
/// record would be 0.8 GB resident).
const FILE_FROM_SIZE: u64 = 1 << 19;
const BASELINE: &str = "baseline";

#[derive(Parser)]
#[command(name = NAME, about = "Validation loss vs Engram table slots (10^3 to 10^9, file-backed beyond RAM) at fixed compute, with where the log-linear law bends")]
struct Args {
    #[command(flatten)]
    sweep: SweepArgs,
    /// 4,000 steps per run instead of 450 (several hours; results in runs/exp_scaling-long/).
    #[arg(long, conflicts_with_all = ["quick", "steps"])]
    long: bool,
}

/// The store of a per-head base size.
fn store_of(size: u64) -> TableStore {
    if size >= FILE_FROM_SIZE {
        TableStore::File
    } else {
        TableStore::Resident
    }
}

fn specs(setup: &ScienceSetup, sizes: &[u64]) -> Vec<SweepSpec> {
    let mut out = vec![SweepSpec { group: BASELINE.into(), x: None, config: setup.config(BASELINE, setup.backbone()) }];
    for &size in sizes {
        let engram = EngramConfig { layer_ids: vec![setup.engram_block], table_size: vec![size, size], table_store: store_of(size), ..EngramConfig::default() };
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

fn fit(summary: &SweepSummary) -> Option<BendFit> {
    let eng: Vec<_> = summary.groups.iter().filter(|g| g.x.is_some()).collect();
    let xs: Vec<f64> = eng.iter().map(|g| g.x.unwrap_or(f64::NAN).log10()).collect();
    let ys: Vec<f64> = eng.iter().map(|g| g.val_bpb_mean).collect();
    bend_fit(&xs, &ys)
}

/// One Engram size's table in training (its first seed's run).
#[derive(serde::Serialize)]
struct SizeUse {
    group: String,
    store: TableStore,
    heads_per_order: usize,
    #[serde(rename = "use")]
    table: TableUse,
}

impl SizeUse {
    /// Rows the n-grams seen can fill at most: every distinct n-gram of every order in its own
    /// row of each of the order's heads.
    fn ngram_rows(&self) -> u64 {
        self.table.distinct_ngrams.iter().sum::<u64>() * self.heads_per_order as u64
    }

    fn rows_touched(&self) -> u64 {
        self.table.rows_touched.iter().sum()
    }
}

fn plots(dir: &Path, summary: &SweepSummary, fit: Option<&BendFit>, uses: &[SizeUse]) -> anyhow::Result<Vec<String>> {
    let eng: Vec<_> = summary.groups.iter().filter(|g| g.x.is_some()).collect();
    let mut series = vec![Series {
        label: format!("Engram (mean ± std over {} seeds)", summary.seeds),
        points: eng.iter().map(|g| (g.x.unwrap_or(f64::NAN), g.val_bpb_mean)).collect(),
        y_err: Some(eng.iter().map(|g| g.val_bpb_std).collect()),
        style: Style::LinePoints,
    }];
    let mut annotations = Vec::new();
    if let (Some(f), Some(lo), Some(hi)) = (fit, eng.first().and_then(|g| g.x), eng.get(fit.map_or(0, |f| f.linear_points.max(1) - 1)).and_then(|g| g.x)) {
        let line = |x: f64| f.linear.intercept + f.linear.slope * x.log10();
        let part = if f.bend_x.is_some() { "linear part" } else { "all sizes" };
        series.push(Series { label: format!("least-squares fit on log10(slots), {part}"), points: vec![(lo, line(lo)), (hi, line(hi))], y_err: None, style: Style::Line });
        annotations.push(format!("slope = {:+.4} ± {:.4} bits per byte per 10× slots", f.linear.slope, f.linear.slope_se));
        annotations.push(format!("R² = {:.3} over {} sizes", f.linear.r2, f.linear.n));
        match (f.bend_x, f.slope_after) {
            (Some(b), Some(after)) => annotations.push(format!("bend at {} slots; slope after {after:+.4}", si(10f64.powf(b)))),
            _ => annotations.push("no bend (one line fits better, BIC)".into()),
        }
    }
    let bands = summary
        .group(BASELINE)
        .map(|b| vec![HBand { label: format!("baseline without Engram ({})", pm(b.val_bpb_mean, b.val_bpb_std)), center: b.val_bpb_mean, half_width: b.val_bpb_std }])
        .unwrap_or_default();
    let top = Chart {
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
    let used: Vec<(f64, f64)> = eng
        .iter()
        .filter_map(|g| Some((g.x?, uses.iter().find(|u| u.group == g.group)?.rows_touched() as f64)))
        .collect();
    let mut bottom_series = vec![
        Series { label: "rows touched in training (first seed)".into(), points: used.clone(), y_err: None, style: Style::LinePoints },
        Series { label: "every slot".into(), points: used.iter().map(|&(x, _)| (x, x)).collect(), y_err: None, style: Style::Line },
    ];
    if let (Some(u), Some(lo), Some(hi)) = (uses.first(), used.first(), used.last()) {
        let cap = u.ngram_rows() as f64;
        let label = format!("{} heads × distinct 2- and 3-grams seen", u.heads_per_order);
        bottom_series.push(Series { label, points: vec![(lo.0, cap), (hi.0, cap)], y_err: None, style: Style::Line });
    }
    let bottom = Chart {
        title: "Table use: rows the updates touched".into(),
        x_label: "table slots (rows of all heads)".into(),
        y_label: "rows".into(),
        log_x: true,
        log_y: true,
        y_from_zero: false,
        series: bottom_series,
        bands: Vec::new(),
        annotations: Vec::new(),
    };
    Ok(two_panel_chart(&top, &bottom, &dir.join("loss_vs_slots"))?.iter().map(|p| p.display().to_string()).collect())
}

/// Each Engram size's table use in training (its first seed's run, replayed from the run
/// directory's config.json): rows touched and distinct n-grams, and the table store.
fn table_uses(dir: &Path, summary: &SweepSummary) -> anyhow::Result<Vec<SizeUse>> {
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
        let Some(e) = &cfg.model.engram else { continue };
        let table = table_use(&cfg, data.as_ref().expect("loaded above"))?;
        out.push(SizeUse { group: g.group.clone(), store: e.table_store, heads_per_order: e.n_head_per_ngram, table });
    }
    Ok(out)
}

fn print_table(summary: &SweepSummary, fit: Option<&BendFit>, uses: &[SizeUse]) {
    let base = summary.group(BASELINE).map(|b| b.val_bpb_mean);
    let rows: Vec<Vec<String>> = summary
        .groups
        .iter()
        .map(|g| {
            let u = uses.iter().find(|u| u.group == g.group);
            vec![
                g.group.clone(),
                g.x.map(si).unwrap_or_else(|| "-".into()),
                u.map_or_else(|| "-".into(), |u| serde_json::to_value(u.store).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()),
                si(g.flops_per_token as f64),
                g.n.to_string(),
                pm(g.val_bpb_mean, g.val_bpb_std),
                g.val_bpb_memory_off_mean.map(|m| format!("{m:.4}")).unwrap_or_else(|| "-".into()),
                base.map(|b| format!("{:+.4}", g.val_bpb_mean - b)).unwrap_or_default(),
                format!("{:.1}", g.wall_seconds_mean),
                u.map_or_else(|| "-".into(), |u| format!("{} ({:.2} %)", si(u.rows_touched() as f64), 100.0 * u.rows_touched() as f64 / g.x.unwrap_or(f64::NAN))),
                u.map_or_else(|| "-".into(), |u| format!("{:.0} %", 100.0 * u.rows_touched() as f64 / u.ngram_rows() as f64)),
                u.map_or_else(|| "-".into(), |u| u.table.distinct_ngrams.iter().map(|&n| si(n as f64)).collect::<Vec<_>>().join(" / ")),
            ]
        })
        .collect();
    println!(
        "{}",
        render(&["config", "slots", "store", "FLOPs/tok", "seeds", "val bpb", "memory off (first seed)", "Δ baseline", "s/run", "rows touched (of slots)", "of heads × n-grams", "distinct 2- / 3-grams"], &rows)
    );
    match fit {
        Some(f) => {
            match (f.bend_x, f.slope_after) {
                (Some(b), Some(after)) => println!(
                    "\nthe log-linear law bends at {} slots (two joined lines: BIC {:.1} against {:.1} for one); slope after the bend {after:+.4}",
                    si(10f64.powf(b)),
                    f.bic_bend.unwrap_or(f64::NAN),
                    f.bic_line
                ),
                _ => println!("\nno bend: one line fits the {} sizes better than two joined lines (BIC {:.1} against {:.1})", f.linear.n, f.bic_line, f.bic_bend.unwrap_or(f64::NAN)),
            }
            println!(
                "log-linear fit over the {} sizes of the linear part: bpb = {:.4} {:+.4} · log10(slots); slope ± se = {:+.4} ± {:.4} (R² {:.3})",
                f.linear.n, f.linear.intercept, f.linear.slope, f.linear.slope, f.linear.slope_se, f.linear.r2
            );
        }
        None => println!("\nno fit (fewer than two table sizes)"),
    }
}

fn main_inner() -> anyhow::Result<()> {
    let args = Args::parse();
    let c = &args.sweep.common;
    args.sweep.validate()?;
    let steps = if args.long { Some(LONG_STEPS) } else { args.sweep.steps };
    let setup = ScienceSetup::new(c.quick, DEFAULT_STEPS, steps).with_tokenizer(c.tokenizer);
    let sizes: &[u64] = if c.quick { &QUICK_SIZES } else { &DEFAULT_SIZES };
    let name = if args.long { "exp_scaling-long" } else { NAME };
    let (dir, mut summary) = sweep(c, name, specs(&setup, sizes), args.sweep.seeds, MemoryOff::FirstSeed)?;
    set_slots(&mut summary);
    let f = fit(&summary);
    let uses = table_uses(&dir, &summary)?;
    summary.analysis = serde_json::json!({
        "fit_bpb_on_log10_slots": f.map(|f| f.linear),
        "bend": f,
        "table_use_first_seed": uses,
    });
    summary.plots = plots(&dir, &summary, f.as_ref(), &uses)?;
    write_json(&dir.join("summary.json"), &summary)?;
    print_table(&summary, f.as_ref(), &uses);
    println!("\n{} runs, {:.0} s; results in {}", summary.runs.len(), summary.wall_seconds, dir.display());
    Ok(())
}

fn main() -> std::process::ExitCode {
    engram::runtime::tune_allocator();
    exit_with(main_inner())
}
