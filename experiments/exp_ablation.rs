//! `exp_ablation` — which parts of Engram matter at small scale, against the controls that
//! remove the memory's information while keeping its shape (spec §7).
//!
//! The shared small-scale backbone ([`ScienceSetup`]) with one Engram layer before block 1
//! (2- and 3-grams × 4 heads, width 16, the same table budget everywhere), trained with the
//! same seeds in each variant:
//!
//! | variant          | change                                                            |
//! |------------------|-------------------------------------------------------------------|
//! | `full`           | the reference layer                                               |
//! | `no-gate`        | `gate: false` (α = 1)                                             |
//! | `no-conv`        | `short_conv: false`                                               |
//! | `no-compression` | `compression: false` (hash raw model ids)                         |
//! | `2gram-only`     | `max_ngram_size: 2` with 8 heads: same heads, rows and FLOPs      |
//! | `two-blocks`     | Engram before blocks 0 and 1, the same rows in all (≤ full's)     |
//! | `size-one-table` | control: one row per head (a learned constant)                    |
//! | `shuffled-hash`  | control: each sequence reads another sequence's rows              |
//! | `frozen-table`   | critics' control: the table never updated (random, fixed rows)    |
//! | `constant-gate`  | critics' control: α = 0.1 for every token                         |
//! | `scalar-gate`    | critics' control: α = σ(s), one learned scalar                    |
//! | `bigram-hash`    | critics' control: no Engram; additive BigramHash at the input     |
//! |                  | with the full layer's table parameters (`rows · D` = its table)   |
//! | `iso-param`      | critics' control: no Engram; the backbone widened to the full     |
//! |                  | model's backbone + table parameters (within 1 %)                  |
//! | `baseline`       | no Engram                                                         |
//! | `mhc-full`       | `full` on 4 residual streams with mHC (one gate per stream)       |
//! | `mhc-baseline`   | no Engram, 4 residual streams with mHC                            |
//!
//! and `full, memory off`: the trained `full` models evaluated with their Engram output zeroed.
//! The bar chart shows each variant's validation loss minus the baseline's, paired by seed
//! (mean ± std over seeds); the table also gives the absolute losses and the paired
//! difference's 95 % interval (Student's t over the seeds). A third table answers the critics
//! (`../LANDSCAPE`): each of their controls paired by seed with the full layer, where a
//! difference near zero sides with the critic. A second table pairs the
//! multi-branch runs: the paper's "without multi-branch" ablation (`full` − `mhc-full`, one
//! stream against four at the same backbone), mHC without Engram (`mhc-baseline` −
//! `baseline`), and Engram on four streams (`mhc-full` − `mhc-baseline`).
//!
//! ```text
//! cargo run --bin exp_ablation                 # default: 48 runs
//! cargo run --bin exp_ablation -- --variants frozen-table,constant-gate   # these + baseline
//! cargo run --bin exp_ablation -- --quick      # smoke test (< 60 s)
//! cargo run --bin exp_ablation -- --plot-only  # redraw from runs/exp_ablation/
//! ```

use std::path::Path;

use clap::Parser;

use engram::engram::{EngramConfig, EngramControl};
use engram::model::{BigramHashConfig, MhcConfig};
use engram::experiment::{
    ci95_half_width, engram_base_size_for_rows, engram_table_rows, exit_with, iso_parameter_backbone, mean_std, paired_differences, pm, sweep, MemoryOff, SweepArgs, ScienceSetup,
    SweepSpec, SweepSummary,
};
use engram::report::table::{render, si};
use engram::report::{bar_chart, Bar};
use engram::run_dir::write_json;

const NAME: &str = "exp_ablation";
/// Training steps of the default mode. Measured on the 2-core machine: 0.04–0.08 s per step
/// (four mHC streams 0.07–0.08), 31–86 s per run with its evaluations; the 48 runs took
/// 2,400 s (40 min) with builds beside them at times.
const DEFAULT_STEPS: usize = 400;
/// Per-head base table size of the full layer (default mode; `--quick`: a quarter).
const TABLE_SIZE: u64 = 4_096;
const BASELINE: &str = "baseline";
const FULL: &str = "full";
const MEMORY_OFF: &str = "full, memory off";
const MHC_FULL: &str = "mhc-full";
const MHC_BASELINE: &str = "mhc-baseline";
/// The critics' questions, each a control paired by seed with the full layer: (critique,
/// control). A difference near zero sides with the critic.
const CRITICS: [(&str, &str); 6] = [
    ("a table frozen at its random initialisation does as well", "frozen-table"),
    ("a constant gate (0.1) does as well as the learned one", "constant-gate"),
    ("one learned scalar gate does as well", "scalar-gate"),
    ("plain additive BigramHash at the input does as well or better", "bigram-hash"),
    ("a dense model with the same parameters does as well", "iso-param"),
    ("a size-1 table (no memory, same pathway) does as well", "size-one-table"),
];
/// The multi-branch comparisons, paired by seed: (label, group, reference).
const MULTI_BRANCH: [(&str, &str, &str); 3] = [
    ("without multi-branch (full − mhc-full)", FULL, MHC_FULL),
    ("mHC without Engram (mhc-baseline − baseline)", MHC_BASELINE, BASELINE),
    ("Engram on 4 streams (mhc-full − mhc-baseline)", MHC_FULL, MHC_BASELINE),
];

#[derive(Parser)]
#[command(name = NAME, about = "Engram ablations and controls vs the baseline, mean ± std over seeds")]
struct Args {
    #[command(flatten)]
    sweep: SweepArgs,
    /// Run only these variants (comma-separated; the baseline always runs, every difference is
    /// against it) [default: all]
    #[arg(long, value_delimiter = ',')]
    variants: Vec<String>,
}

fn specs(setup: &ScienceSetup, table_size: u64) -> Vec<SweepSpec> {
    let full = EngramConfig { layer_ids: vec![setup.engram_block], table_size: vec![table_size, table_size], ..EngramConfig::default() };
    // Two layers share the full layer's rows (head sizes are primes: the largest base that fits).
    let (orders, heads) = (full.max_ngram_size - 1, full.n_head_per_ngram);
    let two_blocks = engram_base_size_for_rows(engram_table_rows(table_size, orders, heads, 1), orders, heads, 2);
    let variants: Vec<(&str, Option<EngramConfig>)> = vec![
        (BASELINE, None),
        (FULL, Some(full.clone())),
        ("no-gate", Some(EngramConfig { gate: false, ..full.clone() })),
        ("no-conv", Some(EngramConfig { short_conv: false, ..full.clone() })),
        ("no-compression", Some(EngramConfig { compression: false, ..full.clone() })),
        (
            "2gram-only",
            Some(EngramConfig { max_ngram_size: 2, n_head_per_ngram: 2 * full.n_head_per_ngram, table_size: vec![table_size], ..full.clone() }),
        ),
        ("two-blocks", Some(EngramConfig { layer_ids: vec![0, 1], table_size: vec![two_blocks; 2], ..full.clone() })),
        ("size-one-table", Some(EngramConfig { control: EngramControl::SizeOneTable, ..full.clone() })),
        ("shuffled-hash", Some(EngramConfig { control: EngramControl::ShuffledHash, ..full.clone() })),
        ("frozen-table", Some(EngramConfig { control: EngramControl::FrozenTable, ..full.clone() })),
        ("constant-gate", Some(EngramConfig { control: EngramControl::ConstantGate, ..full.clone() })),
        ("scalar-gate", Some(EngramConfig { control: EngramControl::ScalarGate, ..full.clone() })),
    ];
    let mut specs: Vec<SweepSpec> = variants
        .into_iter()
        .map(|(name, engram)| {
            let mut model = setup.backbone();
            model.engram = engram;
            SweepSpec { group: name.into(), x: None, config: setup.config(name, model) }
        })
        .collect();
    // The critics' dense controls at the full layer's budget: its table parameters as an
    // input BigramHash, and all its parameters in a wider backbone.
    let table_params = engram_table_rows(table_size, orders, heads, 1) * full.d_head as u64;
    let mut bigram = setup.backbone();
    bigram.bigram_hash = Some(BigramHashConfig { rows: (table_params as f64 / setup.d_model as f64).round() as usize });
    specs.push(SweepSpec { group: "bigram-hash".into(), x: None, config: setup.config("bigram-hash", bigram) });
    let full_model = setup.backbone().with_engram(full.clone());
    let full_cost = engram::cost::cost(&full_model, setup.train.seq_len, &[engram_table_rows(table_size, orders, heads, 1)]);
    let iso = iso_parameter_backbone(&setup.backbone(), full_cost.params_total());
    specs.push(SweepSpec { group: "iso-param".into(), x: None, config: setup.config("iso-param", iso) });
    // The same backbone on four mHC streams, without and with the full layer (whose hc_mult
    // becomes 4: one key projection and gate per stream).
    for (name, engram) in [(MHC_BASELINE, None), (MHC_FULL, Some(full))] {
        let mut model = setup.backbone().with_mhc(MhcConfig::default());
        if let Some(e) = engram {
            model = model.with_engram(e);
        }
        specs.push(SweepSpec { group: name.into(), x: None, config: setup.config(name, model) });
    }
    specs
}

/// (label, per-seed differences, mean, std) of every multi-branch comparison with runs.
fn multi_branch(summary: &SweepSummary) -> Vec<(String, Vec<f64>, f64, f64)> {
    MULTI_BRANCH
        .iter()
        .map(|&(label, group, reference)| {
            let d = paired_differences(&summary.runs, group, reference, |r| Some(r.record.val_bpb));
            let (m, s) = mean_std(&d);
            (label.to_string(), d, m, s)
        })
        .filter(|(_, d, _, _)| !d.is_empty())
        .collect()
}

/// (critique, control, per-seed differences control − full) of every critique with runs.
fn critics(summary: &SweepSummary) -> Vec<(&'static str, &'static str, Vec<f64>)> {
    CRITICS
        .iter()
        .map(|&(critique, control)| (critique, control, paired_differences(&summary.runs, control, FULL, |r| Some(r.record.val_bpb))))
        .filter(|(_, _, d)| !d.is_empty())
        .collect()
}

/// (label, per-seed differences to the baseline, absolute mean, absolute std) for every bar.
fn bars(summary: &SweepSummary) -> Vec<(String, Vec<f64>, f64, f64)> {
    let mut out = Vec::new();
    for g in summary.groups.iter().filter(|g| g.group != BASELINE) {
        let d = paired_differences(&summary.runs, &g.group, BASELINE, |r| Some(r.record.val_bpb));
        out.push((g.group.clone(), d, g.val_bpb_mean, g.val_bpb_std));
        if g.group == FULL {
            if let (Some(m), Some(s)) = (g.val_bpb_memory_off_mean, g.val_bpb_memory_off_std) {
                let d = paired_differences(&summary.runs, FULL, BASELINE, |r| r.record.val_bpb_memory_off);
                out.push((MEMORY_OFF.into(), d, m, s));
            }
        }
    }
    out
}

fn plots(dir: &Path, summary: &SweepSummary) -> anyhow::Result<Vec<String>> {
    let bars: Vec<Bar> = bars(summary)
        .into_iter()
        .filter(|(_, d, _, _)| !d.is_empty())
        .map(|(label, d, _, _)| {
            let (m, s) = mean_std(&d);
            Bar { label, value: m, err: Some(s) }
        })
        .collect();
    if bars.is_empty() {
        anyhow::bail!("no variant shares a seed with the baseline; nothing to plot");
    }
    let title = format!("Engram ablations vs baseline ({} seeds, paired)", summary.seeds);
    let paths = bar_chart(&title, "Δ validation bits per byte vs baseline", &bars, Some(("baseline (no Engram)", 0.0)), &dir.join("ablation"))?;
    Ok(paths.iter().map(|p| p.display().to_string()).collect())
}

fn analysis(summary: &SweepSummary) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = bars(summary)
        .into_iter()
        .map(|(label, d, m, s)| {
            let (dm, ds) = mean_std(&d);
            serde_json::json!({ "variant": label, "val_bpb_mean": m, "val_bpb_std": s, "delta_vs_baseline": d, "delta_mean": dm, "delta_std": ds, "delta_ci95_half_width": ci95_half_width(&d) })
        })
        .collect();
    let multi: Vec<serde_json::Value> = multi_branch(summary)
        .into_iter()
        .map(|(label, d, m, s)| serde_json::json!({ "comparison": label, "delta": d, "delta_mean": m, "delta_std": s }))
        .collect();
    let critics: Vec<serde_json::Value> = critics(summary)
        .into_iter()
        .map(|(critique, control, d)| {
            let (m, s) = mean_std(&d);
            serde_json::json!({ "critique": critique, "control": control, "delta_vs_full": d, "delta_mean": m, "delta_std": s, "delta_ci95_half_width": ci95_half_width(&d) })
        })
        .collect();
    serde_json::json!({ "paired_vs_baseline": rows, "multi_branch": multi, "critics_vs_full": critics })
}

fn print_table(summary: &SweepSummary) {
    let mut rows: Vec<Vec<String>> = Vec::new();
    if let Some(b) = summary.group(BASELINE) {
        rows.push(vec![BASELINE.into(), "0".into(), si(b.params_backbone as f64), si(b.flops_per_token as f64), pm(b.val_bpb_mean, b.val_bpb_std), "-".into(), "-".into()]);
    }
    for (label, d, m, s) in bars(summary) {
        let g = summary.group(if label == MEMORY_OFF { FULL } else { &label });
        let (dm, ds) = mean_std(&d);
        rows.push(vec![
            label.clone(),
            g.map(|g| si(g.params_table as f64)).unwrap_or_default(),
            g.map(|g| si(g.params_backbone as f64)).unwrap_or_default(),
            g.map(|g| si(g.flops_per_token as f64)).unwrap_or_default(),
            pm(m, s),
            if d.is_empty() { "-".into() } else { format!("{dm:+.4} ± {ds:.4}") },
            ci95_half_width(&d).map_or_else(|| "-".into(), |h| format!("[{:+.4}, {:+.4}]", dm - h, dm + h)),
        ]);
    }
    println!("{}", render(&["variant", "table params", "backbone params", "FLOPs/tok", "val bpb", "Δ vs baseline (paired)", "95 % interval"], &rows));
    let crit: Vec<Vec<String>> = critics(summary)
        .into_iter()
        .map(|(critique, control, d)| {
            let (m, s) = mean_std(&d);
            let ci = ci95_half_width(&d).map_or_else(|| "-".into(), |h| format!("[{:+.4}, {:+.4}]", m - h, m + h));
            let per_seed = d.iter().map(|x| format!("{x:+.3}")).collect::<Vec<_>>().join(", ");
            vec![critique.to_string(), control.to_string(), format!("{m:+.4} ± {s:.4}"), ci, per_seed]
        })
        .collect();
    if !crit.is_empty() {
        println!("\n{}", render(&["critique", "control", "Δ val bpb vs full (paired)", "95 % interval", "per seed"], &crit));
    }
    let multi: Vec<Vec<String>> = multi_branch(summary).into_iter().map(|(label, d, m, s)| vec![label, format!("{m:+.4} ± {s:.4}"), d.len().to_string()]).collect();
    if !multi.is_empty() {
        println!("\n{}", render(&["multi-branch comparison", "Δ val bpb (paired)", "seeds"], &multi));
    }
}

fn main_inner() -> anyhow::Result<()> {
    let args = Args::parse();
    let c = &args.sweep.common;
    args.sweep.validate()?;
    let setup = ScienceSetup::new(c.quick, DEFAULT_STEPS, args.sweep.steps).with_tokenizer(c.tokenizer);
    let table_size = if c.quick { TABLE_SIZE / 4 } else { TABLE_SIZE };
    let mut specs = specs(&setup, table_size);
    if !args.variants.is_empty() {
        if let Some(v) = args.variants.iter().find(|v| !specs.iter().any(|s| &s.group == *v)) {
            let names: Vec<&str> = specs.iter().map(|s| s.group.as_str()).collect();
            anyhow::bail!("--variants: no variant {v:?}; the variants are {}", names.join(", "));
        }
        specs.retain(|s| s.group == BASELINE || args.variants.contains(&s.group));
    }
    let (dir, mut summary) = sweep(c, NAME, specs, args.sweep.seeds, MemoryOff::EveryRun)?;
    summary.analysis = analysis(&summary);
    summary.plots = plots(&dir, &summary)?;
    write_json(&dir.join("summary.json"), &summary)?;
    print_table(&summary);
    println!("\n{} runs, {:.0} s; results in {}", summary.runs.len(), summary.wall_seconds, dir.display());
    Ok(())
}

fn main() -> std::process::ExitCode {
    engram::runtime::tune_allocator();
    exit_with(main_inner())
}
