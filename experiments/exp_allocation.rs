//! `exp_allocation` — the U-curve: at a fixed budget of sparse parameters and fixed activated
//! FLOPs, how much of the budget should be Engram memory and how much MoE experts?
//! (spec §7: the paper finds the loss lowest with ~20–25 % of the sparse parameters in memory.)
//!
//! # How the budget is held fixed
//! Every run is the shared small-scale backbone ([`ScienceSetup`]) with a mixture of experts in
//! both blocks: top-k = 2 routed experts of width F plus one shared expert of width F, so a token
//! always activates the same 3 expert FFNs (3·D·F parameters per block), whatever the number
//! of experts E. The sparse parameters are those a token does not activate: the `E − 2` idle
//! routed experts of each block, plus the Engram table.
//!
//! * Pure MoE (0 % memory): `E = E_max` experts, budget `B = L · (E_max − 2) · 3·D·F`.
//! * Memory share `s`: remove `round(s · (E_max − 2))` idle experts from every block and give
//!   their parameters to one Engram layer before block 1: `rows = removed · L · 3·D·F / d_head`
//!   table rows over its 2 orders × 4 heads. Head sizes are distinct primes (spec §3), so the
//!   base size is the largest whose primes sum to at most `rows`: the table is never over
//!   budget and under it by less than a few primes' gaps (< 1 %; printed as "sparse").
//! * 100 % memory: `E = 2`, both routed experts always active (a dense FFN of 3 experts).
//!
//! Activated FLOPs are equal up to two small terms, both printed in the table: the router
//! costs `2·D` FLOPs per token per expert (< 0.5 % across the sweep), and the Engram layer adds
//! its value/key projections and short conv (≈ 4 % of the backbone's FLOPs) to every run with
//! memory — the paper's iso-FLOPs comparisons carry the same small Engram overhead.
//!
//! ```text
//! cargo run --bin exp_allocation                 # default: 18 runs, about 25 min on 2 cores
//! cargo run --bin exp_allocation -- --quick      # smoke test (< 60 s)
//! cargo run --bin exp_allocation -- --plot-only  # redraw from runs/exp_allocation/
//! ```

use std::path::Path;

use clap::Parser;

use engram::engram::EngramConfig;
use engram::experiment::{engram_base_size_for_rows, exit_with, pm, sweep, MemoryOff, SweepArgs, ScienceSetup, SweepSpec, SweepSummary};
use engram::model::MoeConfig;
use engram::report::table::{render, si};
use engram::report::{line_chart, Chart, Series, Style};
use engram::run_dir::write_json;

const NAME: &str = "exp_allocation";
/// Training steps of the default mode. Measured on the 2-core machine while shared (load
/// average 5–7): 0.14–0.17 s per step (2 to 16 experts alike: the dispatch is sparse),
/// 74–93 s per run with its evaluations; the 18 runs took 1,431 s (24 min).
const DEFAULT_STEPS: usize = 500;
/// Routed experts a token activates.
const TOP_K: usize = 2;
/// Always-active shared experts.
const SHARED: usize = 1;
/// Target memory shares of the sparse budget (rounded to whole experts).
const SHARES: [f64; 6] = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];
/// Engram layout: orders 2..=3, 4 heads each.
const MAX_NGRAM: usize = 3;
const HEADS_PER_ORDER: usize = 4;

#[derive(Parser)]
#[command(name = NAME, about = "Fixed sparse-parameter budget split between Engram memory and MoE experts: the U-curve")]
struct Args {
    #[command(flatten)]
    sweep: SweepArgs,
}

/// Experts in the pure-MoE configuration, expert width and table row width of each mode.
struct Budget {
    e_max: usize,
    d_expert: usize,
    d_head: usize,
}

impl Budget {
    fn new(quick: bool) -> Self {
        if quick {
            Self { e_max: 8, d_expert: 32, d_head: 8 }
        } else {
            Self { e_max: 16, d_expert: 64, d_head: 16 }
        }
    }
}

fn specs(setup: &ScienceSetup, b: &Budget) -> Vec<SweepSpec> {
    let idle_max = b.e_max - TOP_K;
    let expert_params = 3 * setup.d_model * b.d_expert;
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for &share in &SHARES {
        let moved = (share * idle_max as f64).round() as usize;
        if seen.contains(&moved) {
            continue;
        }
        seen.push(moved);
        let exact_share = moved as f64 / idle_max as f64;
        let moe = MoeConfig::new(b.e_max - moved, TOP_K, b.d_expert).with_shared_experts(SHARED);
        let mut model = setup.backbone().with_moe(moe);
        if moved > 0 {
            let rows = (moved * setup.n_layers * expert_params / b.d_head) as u64;
            let per_head = engram_base_size_for_rows(rows, MAX_NGRAM - 1, HEADS_PER_ORDER, 1);
            model = model.with_engram(EngramConfig {
                layer_ids: vec![setup.engram_block],
                max_ngram_size: MAX_NGRAM,
                n_head_per_ngram: HEADS_PER_ORDER,
                table_size: vec![per_head; MAX_NGRAM - 1],
                d_head: b.d_head,
                ..EngramConfig::default()
            });
        }
        let group = format!("mem{:03.0}-e{}", 100.0 * exact_share, b.e_max - moved);
        out.push(SweepSpec { group: group.clone(), x: Some(100.0 * exact_share), config: setup.config(&group, model) });
    }
    out
}

fn plots(dir: &Path, summary: &SweepSummary) -> anyhow::Result<Vec<String>> {
    let g = &summary.groups;
    let best = g.iter().min_by(|a, b| a.val_bpb_mean.total_cmp(&b.val_bpb_mean));
    let chart = Chart {
        title: "Sparse budget split: Engram memory vs MoE experts".into(),
        x_label: "share of sparse parameters in Engram memory (%)".into(),
        y_label: "final validation loss (bits per byte)".into(),
        log_x: false,
        log_y: false,
        y_from_zero: false,
        series: vec![Series {
            label: format!("mean ± std over {} seeds", summary.seeds),
            points: g.iter().map(|g| (g.x.unwrap_or(f64::NAN), g.val_bpb_mean)).collect(),
            y_err: Some(g.iter().map(|g| g.val_bpb_std).collect()),
            style: Style::LinePoints,
        }],
        bands: vec![],
        annotations: best
            .map(|b| {
                vec![
                    format!("lowest mean bpb at {:.0} % memory ({})", b.x.unwrap_or(f64::NAN), pm(b.val_bpb_mean, b.val_bpb_std)),
                    format!("sparse budget ≈ {} parameters", si(g[0].params_sparse as f64)),
                ]
            })
            .unwrap_or_default(),
    };
    Ok(line_chart(&chart, &dir.join("loss_vs_memory_share"))?.iter().map(|p| p.display().to_string()).collect())
}

fn analysis(summary: &SweepSummary) -> serde_json::Value {
    let g = &summary.groups;
    let best = g.iter().min_by(|a, b| a.val_bpb_mean.total_cmp(&b.val_bpb_mean));
    let pure_moe = g.first();
    serde_json::json!({
        "best_memory_share_percent": best.and_then(|b| b.x),
        "best_val_bpb_mean": best.map(|b| b.val_bpb_mean),
        "pure_moe_val_bpb_mean": pure_moe.map(|p| p.val_bpb_mean),
        "sparse_params": g.iter().map(|g| g.params_sparse).collect::<Vec<_>>(),
        "flops_per_token": g.iter().map(|g| g.flops_per_token).collect::<Vec<_>>(),
    })
}

fn print_table(summary: &SweepSummary) {
    let pure = summary.groups.first().map(|g| g.val_bpb_mean);
    let rows: Vec<Vec<String>> = summary
        .groups
        .iter()
        .map(|g| {
            let experts = summary.runs.iter().find(|r| r.group == g.group).map(|r| r.params_experts).unwrap_or(0);
            vec![
                g.group.clone(),
                format!("{:.0} %", g.x.unwrap_or(f64::NAN)),
                si(experts as f64),
                si(g.params_table as f64),
                si(g.params_sparse as f64),
                si(g.params_activated as f64),
                si(g.flops_per_token as f64),
                pm(g.val_bpb_mean, g.val_bpb_std),
                pure.map(|p| format!("{:+.4}", g.val_bpb_mean - p)).unwrap_or_default(),
                format!("{:.1}", g.wall_seconds_mean),
            ]
        })
        .collect();
    println!(
        "{}",
        render(&["config", "memory", "experts", "table", "sparse", "activated", "FLOPs/tok", "val bpb", "Δ pure MoE", "s/run"], &rows)
    );
}

fn main_inner() -> anyhow::Result<()> {
    let args = Args::parse();
    let c = &args.sweep.common;
    args.sweep.validate()?;
    let setup = ScienceSetup::new(c.quick, DEFAULT_STEPS, args.sweep.steps).with_tokenizer(c.tokenizer);
    let (dir, mut summary) = sweep(c, NAME, specs(&setup, &Budget::new(c.quick)), args.sweep.seeds, MemoryOff::Never)?;
    summary.analysis = analysis(&summary);
    summary.plots = plots(&dir, &summary)?;
    write_json(&dir.join("summary.json"), &summary)?;
    print_table(&summary);
    if let Some(best) = summary.groups.iter().min_by(|a, b| a.val_bpb_mean.total_cmp(&b.val_bpb_mean)) {
        println!("\nlowest mean validation bits per byte: {} ({:.0} % memory)", best.group, best.x.unwrap_or(f64::NAN));
    }
    println!("\n{} runs, {:.0} s; results in {}", summary.runs.len(), summary.wall_seconds, dir.display());
    Ok(())
}

fn main() -> std::process::ExitCode {
    engram::runtime::tune_allocator();
    exit_with(main_inner())
}
