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
//! # Do the experts get a fair chance?
//! Each token makes `k = 2` routed assignments per block, so over training every routed
//! expert of an `E`-expert block receives on average `2 · tokens / E` tokens (exact, not
//! sampled): 64k at 16 experts, 410k at 2 (both always active). How evenly the trained router
//! spreads them is measured on the first seed's final model routing 256 held-out windows
//! ([`LoadedRun::expert_counts`]): the least- and most-used experts' shares and
//! the effective number of experts `exp(H)` of the shares (E when perfectly balanced), from
//! which the least-used expert's training tokens are estimated. `--steps` trains longer.
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
use engram::train::LoadedRun;

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

/// Held-out windows the trained routers are measured on.
const ROUTING_WINDOWS: usize = 256;

/// How one group's trained routers spread the tokens over their experts (first seed).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct ExpertUse {
    group: String,
    /// Routed experts per block.
    experts: usize,
    /// Average training tokens per routed expert: `top_k · train_tokens / E` (exact).
    train_tokens_per_expert: f64,
    /// Per MoE block: tokens routed to each expert over the held-out windows.
    held_out_counts: Vec<Vec<usize>>,
    /// Least- and most-used expert's share of the assignments (over blocks: min and max).
    min_share: f64,
    max_share: f64,
    /// `exp(entropy)` of the shares, averaged over blocks (E when balanced).
    effective_experts: f64,
    /// The least-used expert's training tokens, estimated as `top_k · train_tokens · min_share`.
    least_used_train_tokens: f64,
}

/// The routing of each group's first-seed run, loaded from its directory.
fn expert_use(dir: &Path, summary: &SweepSummary) -> anyhow::Result<Vec<ExpertUse>> {
    let device = burn::tensor::Device::flex();
    let mut out = Vec::new();
    // Every run trained on the same data: tokenise the corpus once.
    let mut data = None;
    for g in &summary.groups {
        let Some(run) = summary.runs.iter().find(|r| r.group == g.group) else { continue };
        let run_dir = dir.join(&run.record.name);
        let loaded = match data.take() {
            Some(d) => LoadedRun::load_with_data(&run_dir, d, &device)?,
            None => LoadedRun::load(&run_dir, &device)?,
        };
        let counts = loaded.expert_counts(ROUTING_WINDOWS, &device)?;
        data = Some(loaded.data);
        let experts = counts.first().map_or(0, Vec::len);
        if experts == 0 {
            continue;
        }
        let shares: Vec<Vec<f64>> = counts
            .iter()
            .map(|c| {
                let total = c.iter().sum::<usize>().max(1) as f64;
                c.iter().map(|&n| n as f64 / total).collect()
            })
            .collect();
        let flat = || shares.iter().flatten().copied();
        let min_share = flat().fold(f64::INFINITY, f64::min);
        let entropy = |s: &Vec<f64>| -s.iter().filter(|&&p| p > 0.0).map(|p| p * p.ln()).sum::<f64>();
        let assignments = (TOP_K as u64 * run.record.train_tokens) as f64;
        out.push(ExpertUse {
            group: g.group.clone(),
            experts,
            train_tokens_per_expert: assignments / experts as f64,
            held_out_counts: counts.clone(),
            min_share,
            max_share: flat().fold(0.0, f64::max),
            effective_experts: shares.iter().map(|s| entropy(s).exp()).sum::<f64>() / shares.len() as f64,
            least_used_train_tokens: assignments * min_share,
        });
    }
    Ok(out)
}

fn analysis(summary: &SweepSummary, uses: &[ExpertUse]) -> serde_json::Value {
    let g = &summary.groups;
    let best = g.iter().min_by(|a, b| a.val_bpb_mean.total_cmp(&b.val_bpb_mean));
    let pure_moe = g.first();
    serde_json::json!({
        "best_memory_share_percent": best.and_then(|b| b.x),
        "best_val_bpb_mean": best.map(|b| b.val_bpb_mean),
        "pure_moe_val_bpb_mean": pure_moe.map(|p| p.val_bpb_mean),
        "sparse_params": g.iter().map(|g| g.params_sparse).collect::<Vec<_>>(),
        "flops_per_token": g.iter().map(|g| g.flops_per_token).collect::<Vec<_>>(),
        "expert_use_first_seed": uses,
    })
}

fn print_table(summary: &SweepSummary, uses: &[ExpertUse]) {
    let pure = summary.groups.first().map(|g| g.val_bpb_mean);
    let rows: Vec<Vec<String>> = summary
        .groups
        .iter()
        .map(|g| {
            let experts = summary.runs.iter().find(|r| r.group == g.group).map(|r| r.params_experts).unwrap_or(0);
            let u = uses.iter().find(|u| u.group == g.group);
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
                u.map_or_else(|| "-".into(), |u| si(u.train_tokens_per_expert)),
                u.map_or_else(|| "-".into(), |u| format!("{:.1} / {:.1} %", 100.0 * u.min_share, 100.0 * u.max_share)),
                u.map_or_else(|| "-".into(), |u| format!("{:.1} of {}", u.effective_experts, u.experts)),
                u.map_or_else(|| "-".into(), |u| si(u.least_used_train_tokens)),
            ]
        })
        .collect();
    println!(
        "{}",
        render(
            &["config", "memory", "experts", "table", "sparse", "activated", "FLOPs/tok", "val bpb", "Δ pure MoE", "s/run", "tokens/expert", "min / max share", "effective experts", "least-used tokens"],
            &rows
        )
    );
    println!("(tokens/expert: top-2 assignments per routed expert in training, exact; shares and effective experts exp(H): the first seed's trained routers on {ROUTING_WINDOWS} held-out windows; least-used tokens: estimated from its share)");
}

fn main_inner() -> anyhow::Result<()> {
    let args = Args::parse();
    let c = &args.sweep.common;
    args.sweep.validate()?;
    let setup = ScienceSetup::new(c.quick, DEFAULT_STEPS, args.sweep.steps).with_tokenizer(c.tokenizer);
    let (dir, mut summary) = sweep(c, NAME, specs(&setup, &Budget::new(c.quick)), args.sweep.seeds, MemoryOff::Never)?;
    // Redrawing reads the routing measured when the experiment ran.
    let uses = match (c.plot_only, summary.analysis.get("expert_use_first_seed")) {
        (true, Some(u)) => serde_json::from_value(u.clone())?,
        _ => expert_use(&dir, &summary)?,
    };
    summary.analysis = analysis(&summary, &uses);
    summary.plots = plots(&dir, &summary)?;
    write_json(&dir.join("summary.json"), &summary)?;
    print_table(&summary, &uses);
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
