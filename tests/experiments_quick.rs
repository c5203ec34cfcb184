//! The experiments end to end in `--quick` mode: each sweep binary trains its runs, writes
//! per-run directories, a `summary.json` with runs, aggregates and analysis, and its plots;
//! `exp_throughput` writes its timings, ratios and plot.

use std::path::{Path, PathBuf};
use std::process::Command;

use engram::experiment::SweepSummary;

/// A fresh output directory for one test.
fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engram-quick-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn run(bin: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin).args(args).output().expect("the experiment binary starts")
}

/// Run `bin --quick --out dir`, check the common layout, return the summary.
fn quick(bin: &str, dir: &Path) -> SweepSummary {
    let out = run(bin, &["--quick", "--no-progress", "--out", dir.to_str().expect("utf-8 temp path")]);
    assert!(out.status.success(), "{bin} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("val bpb"), "no end-of-run table:\n{stdout}");
    let s = SweepSummary::read(dir).expect("summary.json parses as a sweep summary");
    assert!(s.quick);
    assert!(s.seeds >= 3, "at least 3 seeds");
    assert_eq!(s.runs.len(), s.groups.len() * s.seeds, "every configuration with every seed");
    for r in &s.runs {
        for file in ["config.json", "metrics.csv", "summary.json"] {
            assert!(dir.join(&r.record.name).join(file).is_file(), "{}/{file} missing", r.record.name);
        }
        assert!(r.record.val_loss.is_finite() && r.record.val_loss > 0.0 && r.record.val_bpb > 0.0 && r.record.val_bytes > 0);
    }
    for g in &s.groups {
        assert_eq!(g.n, s.seeds, "{}", g.group);
        let mut seeds = g.seeds.clone();
        seeds.dedup();
        assert_eq!(seeds.len(), s.seeds, "{}: distinct seeds", g.group);
        assert!(g.val_bpb_mean.is_finite() && g.val_bpb_std >= 0.0);
    }
    assert!(!s.plots.is_empty());
    for p in &s.plots {
        assert!(Path::new(p).is_file(), "plot {p} missing");
    }
    let pngs = s.plots.iter().filter(|p| p.ends_with(".png")).count();
    let svgs = s.plots.iter().filter(|p| p.ends_with(".svg")).count();
    assert!(pngs >= 1 && pngs == svgs, "every plot as PNG and SVG: {:?}", s.plots);
    s
}

#[test]
fn exp_scaling_quick_writes_runs_fit_and_plot() {
    let bin = env!("CARGO_BIN_EXE_exp_scaling");
    let dir = out_dir("scaling");
    let s = quick(bin, &dir);
    let sizes: Vec<f64> = s.groups.iter().filter_map(|g| g.x).collect();
    assert!(sizes.len() >= 5, "at least 5 table sizes: {sizes:?}");
    assert!(sizes.windows(2).all(|w| w[1] > 2.0 * w[0]), "log-spaced table sizes: {sizes:?}");
    let base = s.group("baseline").expect("the baseline is trained with the same seeds");
    assert_eq!(base.params_table, 0);
    let fit = &s.analysis["fit_bpb_on_log10_slots"];
    assert!(fit["slope"].is_f64() && fit["slope_se"].is_f64(), "fit in the summary: {fit}");
    assert!(s.groups.iter().filter(|g| g.x.is_some()).all(|g| g.val_bpb_memory_off_mean.is_some()));
    // Memory off is evaluated for the first seed of each size only.
    for r in s.runs.iter().filter(|r| r.x.is_some()) {
        assert_eq!(r.record.val_bpb_memory_off.is_some(), r.record.seed == 0, "{}", r.record.name);
    }
    assert!(s.plots.iter().any(|p| p.ends_with("loss_vs_slots.png")));
    // Table use per size: rows touched never above the slots, more with a larger table.
    let uses = s.analysis["table_use_first_seed"].as_array().expect("table use in the summary");
    assert_eq!(uses.len(), sizes.len());
    let touched: Vec<f64> = uses.iter().map(|u| u["use"]["rows_touched"].as_array().unwrap().iter().map(|r| r.as_f64().unwrap()).sum()).collect();
    for (t, slots) in touched.iter().zip(&sizes) {
        assert!(*t > 0.0 && t <= slots, "{t} rows touched of {slots} slots");
    }
    assert!(touched.windows(2).all(|w| w[1] >= w[0]), "{touched:?}");
    assert!(uses.iter().all(|u| u["use"]["distinct_ngrams"] == uses[0]["use"]["distinct_ngrams"]), "the same windows for every size (first seed)");
    // The largest table lives in a file holding only the rows touched, the small ones in memory.
    let stores: Vec<&str> = uses.iter().map(|u| u["store"].as_str().unwrap()).collect();
    assert_eq!((stores[0], *stores.last().unwrap()), ("resident", "file"), "{stores:?}");
    let largest = s.runs.iter().find(|r| r.x == sizes.last().copied()).expect("a run of the largest size");
    let slab = dir.join(&largest.record.name).join("tables").join("table-0.slab");
    let len = std::fs::metadata(&slab).unwrap_or_else(|e| panic!("{}: {e}", slab.display())).len();
    assert!(len < (*touched.last().unwrap() as u64 + 100) * 256, "{len} bytes for {} touched rows", touched.last().unwrap());
    // Where the law bends (or that it does not), with the linear part's fit.
    let bend = &s.analysis["bend"];
    let points = bend["linear_points"].as_u64().expect("the bend fit in the summary") as usize;
    assert!((2..=sizes.len()).contains(&points), "{bend}");
    assert_eq!(bend["bend_x"].is_null(), points == sizes.len(), "{bend}");
    assert_eq!(bend["linear"], *fit, "the reported fit is the linear part's");

    // A finished experiment is not replaced without --overwrite: a message, not a panic.
    let again = run(bin, &["--quick", "--no-progress", "--out", dir.to_str().unwrap()]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("--overwrite") && !err.contains("panicked"), "{err}");
    // --plot-only redraws from the files.
    std::fs::remove_file(dir.join("loss_vs_slots.png")).unwrap();
    let redraw = run(bin, &["--quick", "--plot-only", "--out", dir.to_str().unwrap()]);
    assert!(redraw.status.success(), "{}", String::from_utf8_lossy(&redraw.stderr));
    assert!(dir.join("loss_vs_slots.png").is_file());
    // An interrupted experiment (no summary.json yet) reads its finished runs back instead of
    // training them again, and gets the same results.
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    let resumed = run(bin, &["--quick", "--no-progress", "--out", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{err}");
    assert!(err.contains("(reused)") && !err.contains("(trained)"), "runs were trained again:\n{err}");
    let r = SweepSummary::read(&dir).unwrap();
    let bpb = |s: &SweepSummary| s.runs.iter().map(|r| r.record.val_bpb.to_bits()).collect::<Vec<_>>();
    assert_eq!(bpb(&r), bpb(&s));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exp_allocation_quick_holds_the_sparse_budget_fixed() {
    let dir = out_dir("allocation");
    let s = quick(env!("CARGO_BIN_EXE_exp_allocation"), &dir);
    assert!(s.groups.len() >= 5, "at least 5 ratios");
    let shares: Vec<f64> = s.groups.iter().map(|g| g.x.expect("every group has its memory share")).collect();
    assert_eq!(shares.first(), Some(&0.0), "pure MoE first");
    assert!(shares.windows(2).all(|w| w[1] > w[0]));
    assert_eq!(s.groups[0].params_table, 0);
    let budget = s.groups[0].params_sparse as f64;
    for g in &s.groups {
        let dev = (g.params_sparse as f64 / budget - 1.0).abs();
        assert!(dev < 0.02, "{}: sparse parameters {} vs budget {budget} ({:.1} %)", g.group, g.params_sparse, 100.0 * dev);
    }
    assert!(s.runs.iter().any(|r| r.params_experts > 0));
    assert!(s.analysis["best_memory_share_percent"].is_f64());
    assert!(s.plots.iter().any(|p| p.ends_with("loss_vs_memory_share.png")));
    // Every group's routing: per MoE block, the held-out windows' assignments (64 tokens × top-2
    // each) spread over its experts; the training tokens per expert follow from E.
    let uses = s.analysis["expert_use_first_seed"].as_array().expect("expert use in the summary");
    assert_eq!(uses.len(), s.groups.len());
    for (u, g) in uses.iter().zip(&s.groups) {
        let e = u["experts"].as_u64().unwrap();
        assert!(g.group.ends_with(&format!("-e{e}")), "{} has {e} experts", g.group);
        let blocks = u["held_out_counts"].as_array().unwrap();
        assert_eq!(blocks.len(), 2, "both blocks are MoE");
        let sums: Vec<u64> = blocks.iter().map(|c| c.as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).sum()).collect();
        assert!(sums.iter().all(|&n| n == sums[0] && n > 0 && n % (2 * 32) == 0), "{sums:?}");
        let run = s.runs.iter().find(|r| r.group == g.group).unwrap();
        assert_eq!(u["train_tokens_per_expert"].as_f64().unwrap(), (2 * run.record.train_tokens) as f64 / e as f64);
        let (lo, hi, eff) = (u["min_share"].as_f64().unwrap(), u["max_share"].as_f64().unwrap(), u["effective_experts"].as_f64().unwrap());
        assert!(lo <= 1.0 / e as f64 + 1e-12 && hi >= 1.0 / e as f64 - 1e-12 && eff <= e as f64 + 1e-9 && eff >= 1.0, "{u}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exp_ablation_quick_has_every_variant_control_and_memory_off() {
    let dir = out_dir("ablation");
    let s = quick(env!("CARGO_BIN_EXE_exp_ablation"), &dir);
    let groups: Vec<&str> = s.groups.iter().map(|g| g.group.as_str()).collect();
    for want in ["baseline", "full", "no-gate", "no-conv", "no-compression", "2gram-only", "two-blocks", "size-one-table", "shuffled-hash", "frozen-table", "constant-gate", "scalar-gate", "bigram-hash", "iso-param", "mhc-baseline", "mhc-full"] {
        assert!(groups.contains(&want), "variant {want} missing from {groups:?}");
    }
    let full = s.group("full").unwrap();
    assert!(full.val_bpb_memory_off_mean.is_some(), "the full model is also evaluated with its memory zeroed");
    // Budget kept: 2-grams only has the table parameters of 2 + 3; the size-one control has one row per head.
    assert_eq!(s.group("2gram-only").unwrap().flops_per_token, full.flops_per_token);
    let table = full.params_table as f64;
    for g in ["2gram-only", "two-blocks"] {
        let t = s.group(g).unwrap().params_table as f64;
        assert!(t <= table && t > 0.97 * table, "{g}: table {t} vs full {table}");
    }
    assert!(s.group("size-one-table").unwrap().params_table < 1000);
    // The critics' dense controls spend the full model's budget: the BigramHash table has the
    // full layer's table parameters (to a row), the iso-parameter backbone all its parameters.
    let (base, bigram, iso) = (s.group("baseline").unwrap(), s.group("bigram-hash").unwrap(), s.group("iso-param").unwrap());
    let d_model = 32.0; // the quick setup's
    assert!((bigram.params_backbone as f64 - base.params_backbone as f64 - table).abs() <= d_model, "bigram table {} vs {table}", bigram.params_backbone - base.params_backbone);
    assert_eq!((bigram.params_table, iso.params_table), (0, 0));
    let full_total = (full.params_backbone + full.params_table) as f64;
    assert!((iso.params_backbone as f64 - full_total).abs() < 0.01 * full_total, "iso {} vs {full_total}", iso.params_backbone);
    for g in ["frozen-table", "constant-gate", "scalar-gate"] {
        assert_eq!(s.group(g).unwrap().params_table, full.params_table, "{g}");
    }
    let rows = s.analysis["paired_vs_baseline"].as_array().expect("paired differences in the summary");
    assert!(rows.iter().any(|r| r["variant"] == "full, memory off"));
    assert!(rows.iter().all(|r| r["delta_vs_baseline"].as_array().is_some_and(|d| d.len() == s.seeds)));
    assert!(rows.iter().all(|r| r["delta_ci95_half_width"].as_f64().is_some_and(|h| h >= 0.0)), "a 95 % interval for every paired difference");
    let critics = s.analysis["critics_vs_full"].as_array().expect("the critics' controls against full Engram");
    assert_eq!(critics.len(), 6);
    assert!(critics.iter().all(|c| c["delta_vs_full"].as_array().is_some_and(|d| d.len() == s.seeds) && c["delta_ci95_half_width"].is_number()));
    assert!(s.plots.iter().any(|p| p.ends_with("ablation.png")));
    // The multi-branch runs: four streams, Engram with one gate per stream.
    let multi = s.analysis["multi_branch"].as_array().expect("multi-branch comparisons in the summary");
    assert_eq!(multi.len(), 3);
    assert!(multi.iter().all(|r| r["delta"].as_array().is_some_and(|d| d.len() == s.seeds)));
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("mhc-full-s0/config.json")).unwrap()).unwrap();
    assert_eq!((cfg["model"]["mhc"]["streams"].as_u64(), cfg["model"]["engram"]["hc_mult"].as_u64()), (Some(4), Some(4)));
    // Their summaries carry the mHC amax gain of the trained stack (≈ 1: stable); others none.
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("mhc-full-s0/summary.json")).unwrap()).unwrap();
    let gain = &run["mhc_amax_gain"];
    for key in ["forward_mean", "forward_max", "backward_mean", "backward_max"] {
        assert!(gain[key].as_f64().is_some_and(|g| (0.5..2.0).contains(&g)), "{key}: {gain}");
    }
    let plain: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("full-s0/summary.json")).unwrap()).unwrap();
    assert!(plain.get("mhc_amax_gain").is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exp_compute_quick_prices_every_table_in_baseline_flops() {
    let dir = out_dir("compute");
    let s = quick(env!("CARGO_BIN_EXE_exp_compute"), &dir);
    let base: Vec<_> = s.groups.iter().filter(|g| g.group.starts_with("baseline-")).collect();
    assert!(base.len() >= 4, "at least four compute sizes: {}", base.len());
    let worth = s.analysis["worth"].as_array().expect("worth in the summary");
    assert_eq!(worth.len(), 3, "one entry per table size");
    for w in worth {
        let group = w["group"].as_str().unwrap();
        let own = w["flops_per_token"].as_f64().unwrap();
        let per_seed = w["per_seed"].as_array().unwrap();
        assert_eq!(per_seed.len(), s.seeds, "{group}: one value per seed");
        for (k, run) in per_seed.iter().zip(s.runs.iter().filter(|r| r.group == group)) {
            let Some(k) = k.as_f64() else { continue };
            // The FLOPs it is worth lie between two baselines of its seed whose bits per byte
            // bracket its own.
            let f = k * own;
            let pts: Vec<(f64, f64)> = s.runs.iter().filter(|b| b.group.starts_with("baseline-") && b.record.seed == run.record.seed).map(|b| (b.record.flops_per_token as f64, b.record.val_bpb)).collect();
            let bracketed = pts.iter().any(|a| pts.iter().any(|b| a.0 <= f && f <= b.0 && (a.1 - run.record.val_bpb) * (b.1 - run.record.val_bpb) <= 0.0));
            assert!(bracketed, "{group} seed {}: worth {k} ({f} FLOPs) not between baselines {pts:?}", run.record.seed);
        }
        if let Some([lo, hi]) = w["ci95"].as_array().map(|a| [a[0].as_f64().unwrap(), a[1].as_f64().unwrap()]) {
            let m = w["geo_mean"].as_f64().unwrap();
            assert!(lo <= m && m <= hi, "{group}: {m} outside [{lo}, {hi}]");
        }
    }
    assert!(s.plots.iter().any(|p| p.ends_with("compute_equivalence.png")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exp_ablation_refuses_an_unknown_variant_naming_the_known_ones() {
    let dir = out_dir("ablation-variants");
    let out = run(env!("CARGO_BIN_EXE_exp_ablation"), &["--quick", "--no-progress", "--variants", "frozen-table,no-such", "--out", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"no-such\"") && err.contains("frozen-table"), "{err}");
    assert!(!dir.join("summary.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exp_throughput_quick_times_every_configuration_and_rejects_zero_reps() {
    let bin = env!("CARGO_BIN_EXE_exp_throughput");
    let dir = out_dir("throughput");
    let d = dir.to_str().unwrap();
    let out = run(bin, &["--quick", "--no-progress", "--out", d]);
    assert!(out.status.success(), "exp_throughput failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let positive = |key: &str| {
        let v = s[key].as_f64().unwrap_or_else(|| panic!("{key} missing: {s}"));
        assert!(v.is_finite() && v > 0.0, "{key} = {v}");
        v
    };
    for key in ["backbone_step_seconds", "reference_config_step_seconds"] {
        positive(key);
    }
    for map in ["step_seconds", "dense_step_seconds", "peak_rss_bytes", "table_work_seconds"] {
        let m = s[map].as_object().unwrap_or_else(|| panic!("{map} missing"));
        assert_eq!(m.keys().collect::<Vec<_>>(), ["16384", "65536"], "{map}: one entry per table size");
    }
    // The ratios are the medians' ratios, with the quartiles of the step-by-step ratios.
    let (small, large) = (s["step_seconds"]["16384"].as_f64().unwrap(), s["step_seconds"]["65536"].as_f64().unwrap());
    assert!((positive("largest_over_smallest_sparse") - large / small).abs() < 1e-9);
    let q: Vec<f64> = s["largest_over_smallest_sparse_iqr"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(q.len() == 2 && 0.0 < q[0] && q[0] <= q[1], "{q:?}");
    // Four mHC streams against one: step-time ratios, and the FLOPs ratio (the extra work).
    for key in ["mhc4_over_m1_backbone", "mhc4_over_m1_engram"] {
        positive(key);
        assert!(s[format!("{key}_iqr")].as_array().is_some_and(|q| q.len() == 2), "{key}_iqr");
    }
    assert!(positive("mhc4_flops_ratio_backbone") > 1.0 && positive("mhc4_flops_ratio_engram") > 1.0);
    // The A/A control (the smallest size a second time) has a ratio and quartiles too.
    positive("control_over_smallest_sparse");
    let q: Vec<f64> = s["control_over_smallest_sparse_iqr"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(q.len() == 2 && 0.0 < q[0] && q[0] <= q[1], "{q:?}");
    for p in s["plots"].as_array().unwrap() {
        assert!(Path::new(p.as_str().unwrap()).is_file(), "plot {p} missing");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("reference config step") && stdout.contains("largest / smallest table, sparse") && stdout.contains("A/A control"), "{stdout}");

    let redraw = run(bin, &["--quick", "--plot-only", "--out", d]);
    assert!(redraw.status.success(), "--plot-only failed:\n{}", String::from_utf8_lossy(&redraw.stderr));

    let bad = run(bin, &["--quick", "--reps", "0", "--overwrite", "--out", d]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--reps"), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(dir.join("summary.json").is_file(), "a rejected run leaves the earlier results in place");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exp_memory_quick_measures_every_store_up_to_2_to_the_30_rows() {
    let bin = env!("CARGO_BIN_EXE_exp_memory");
    let dir = out_dir("memory");
    let d = dir.to_str().unwrap();
    let out = run(bin, &["--quick", "--no-progress", "--out", d]);
    assert!(out.status.success(), "exp_memory failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let runs = s["runs"].as_array().unwrap_or_else(|| panic!("runs missing: {s}"));
    let find = |name: &str| runs.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("{name} missing"));
    for r in runs {
        for key in ["step_seconds", "peak_rss_bytes", "rows_per_layer", "bytes_per_parameter"] {
            let v = r[key].as_f64().unwrap_or_else(|| panic!("{key} of {}", r["name"]));
            assert!(v.is_finite() && v > 0.0, "{key} of {} = {v}", r["name"]);
        }
        assert!(r["store"] == "resident" || r["store"] == "file");
    }
    // 2^30 rows per layer in the file-backed store, touching only what training used: its
    // table file on disk is a few MB, not the 210 GB the table spans.
    let big = find("file-adam-f32-2p30");
    assert_eq!(big["rows_per_layer"].as_u64(), Some(1 << 30));
    let (disk, records) = (big["disk_bytes"].as_u64().unwrap(), big["table_bytes"].as_u64().unwrap());
    assert!(records > 0 && disk < 64 << 20, "{disk} bytes on disk for {records} bytes of records");
    assert_eq!(find("file-row-wise-f32-2p30")["bytes_per_parameter"].as_f64(), Some(4.5));
    assert_eq!(find("file-row-wise-bf16-2p30")["bytes_per_parameter"].as_f64(), Some(2.5));
    assert_eq!(find("resident-adam-f32-2p14")["disk_bytes"].as_u64(), Some(0));
    for key in ["aa_ratio", "file_largest_over_resident_smallest", "no_prefetch_over_prefetch", "cold_over_warm", "cold_no_prefetch_over_warm"] {
        let r = s[key]["ratio"].as_f64().unwrap_or_else(|| panic!("{key} missing"));
        assert!(r.is_finite() && r > 0.0, "{key} = {r}");
    }
    let groups = s["loss"]["groups"].as_array().expect("the loss comparison");
    assert_eq!(groups.iter().map(|g| g["group"].as_str().unwrap()).collect::<Vec<_>>(), ["adam-f32", "row-wise-f32", "row-wise-bf16", "adam-bf16"]);
    let plots: Vec<&str> = s["plots"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(plots.iter().any(|p| p.ends_with(".png")) && plots.iter().any(|p| p.ends_with(".svg")), "{plots:?}");
    for p in &plots {
        assert!(Path::new(p).is_file(), "plot {p} missing");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("A/A control") && stdout.contains("largest file-backed / resident 2^14"), "{stdout}");
    let bad = run(bin, &["--quick", "--reps", "1", "--overwrite", "--out", d]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--reps"));
    std::fs::remove_dir_all(&dir).unwrap();
}
