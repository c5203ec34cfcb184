//! `engram train`: a run killed with SIGKILL and resumed equals the uninterrupted run bit for
//! bit; runs are deterministic; every bad input is a one-line `error: ...`, a non-zero exit and
//! leaves the files that existed before byte-identical.
//!
//! Runs use the `tiny` preset on a two-book corpus copied from the shipped one, so each takes
//! well under a second.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use engram::checkpoint;
use engram::config::ExperimentConfig;
use serde_json::Value;

/// Books of the test corpus: one for training, one (the validation book) held out.
const TRAIN_BOOK: &str = "shakespeare-caesar";
const VAL_BOOK: &str = "blake-poems";

/// A fresh, empty directory unique to this test process and call.
fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!("engram-train-cli-{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `dir/corpus` with the two test books.
fn corpus(dir: &Path) -> PathBuf {
    let c = dir.join("corpus");
    std::fs::create_dir_all(&c).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/gutenberg");
    for book in [TRAIN_BOOK, VAL_BOOK] {
        std::fs::copy(shipped.join(format!("{book}.txt.gz")), c.join(format!("{book}.txt.gz"))).unwrap();
    }
    c
}

/// The `tiny` preset as `engram train --print-config tiny` prints it, on the test corpus,
/// edited by `edit`, written to `dir/<name>.json`.
fn config_file(dir: &Path, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let out = engram(&["train", "--print-config", "tiny"]);
    assert!(out.status.success());
    let mut v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["data"]["corpus_dir"] = Value::String(corpus(dir).to_string_lossy().into_owned());
    v["data"]["val_books"] = serde_json::json!([VAL_BOOK]);
    edit(&mut v);
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    path
}

fn engram(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engram")).args(args).output().unwrap()
}

fn train(config: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--no-progress", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    engram(&args)
}

/// `engram train --config config --out out` started in the background, output discarded.
fn spawn_train(config: &Path, out: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_engram"))
        .args(["train", "--no-progress", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn resume(dir: &Path) -> Output {
    engram(&["train", "--no-progress", "--resume", dir.to_str().unwrap()])
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(out.status.success(), "failed: {}", stderr(out));
}

/// Exit code 1, one `error: ...` line naming `needles`, and no panic.
fn assert_error(out: &Output, needles: &[&str]) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "a panic: {err}");
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no `error: ` line in {err:?}"));
    assert_eq!(err.lines().filter(|l| l.starts_with("error")).count(), 1, "{err}");
    for n in needles {
        assert!(line.contains(n), "{line:?} does not mention {n:?}");
    }
    line.to_string()
}

/// Every file under `dir` with its bytes (but the lock file, which holds its last holder's pid).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name() != Some(std::ffi::OsStr::new(engram::run_dir::LOCK_FILE)) {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Every file of `before` is still there with the same bytes.
fn assert_unchanged(before: &BTreeMap<PathBuf, Vec<u8>>, dir: &Path) {
    let after = snapshot(dir);
    for (path, bytes) in before {
        assert!(after.get(path) == Some(bytes), "{} changed or vanished", path.display());
    }
}

/// metrics.csv without its timing column (the last), which differs between runs.
fn metrics_without_timing(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let lines: Vec<String> = text.lines().map(|l| l.rsplit_once(',').unwrap().0.to_string()).collect();
    assert_eq!(lines[0], "step,tokens,train_loss,val_loss,val_bpb,lr");
    lines
}

/// Bits of the final validation loss, bits per byte and training loss in summary.json.
fn final_loss_bits(dir: &Path) -> (u32, u64, u32) {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let get = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in summary.json"));
    ((get("val_loss") as f32).to_bits(), get("val_bpb").to_bits(), (get("final_train_loss") as f32).to_bits())
}

/// A finished `tiny` run in `dir/run`, with its config file.
fn finished_run(dir: &Path) -> (PathBuf, PathBuf) {
    let cfg = config_file(dir, "tiny", |_| {});
    let run = dir.join("run");
    assert_ok(&train(&cfg, &run, &[]));
    (cfg, run)
}

/// A `tiny` run that stopped after its final checkpoint, before writing summary.json.
fn interrupted_run(dir: &Path) -> PathBuf {
    let (_, run) = finished_run(dir);
    std::fs::remove_file(run.join("summary.json")).unwrap();
    run
}

/// A 300-step run (checkpoints every 10 steps) killed with SIGKILL after its checkpoint at
/// step 50 or later, then resumed, equals the same run uninterrupted: metrics, final losses.
fn sigkill_then_resume_equals_uninterrupted(name: &str, edit: impl Fn(&mut Value)) {
    let dir = scratch(name);
    let cfg = config_file(&dir, "long", |v| {
        v["train"]["steps"] = 300.into();
        v["train"]["eval_every"] = 40.into();
        v["train"]["checkpoint_every"] = 10.into();
        edit(v);
    });
    let (a, b) = (dir.join("a"), dir.join("b"));
    assert_ok(&train(&cfg, &b, &[]));

    let mut child = spawn_train(&cfg, &a);
    let deadline = Instant::now() + Duration::from_secs(120);
    let killed_after = loop {
        if let Ok(h) = checkpoint::peek(&a) {
            if h.step >= 50 {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                break h.step;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "the run finished before it could be killed");
        assert!(Instant::now() < deadline, "no checkpoint past step 50");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(!a.join("summary.json").exists(), "killed after step {killed_after}, yet finished");
    let k = checkpoint::peek(&a).unwrap().step;
    assert!((50..300).contains(&k), "checkpoint at step {k}");

    let out = resume(&a);
    assert_ok(&out);
    assert!(stderr(&out).contains(&format!("resuming {} at step {k} of 300", a.display())), "{}", stderr(&out));
    let (ma, mb) = (metrics_without_timing(&a), metrics_without_timing(&b));
    assert_eq!(ma.len(), 1 + 300 / 10, "one row per 10 steps");
    assert_eq!(ma, mb, "metrics differ (resumed at step {k})");
    assert_eq!(final_loss_bits(&a), final_loss_bits(&b));
    assert_eq!(checkpoint::peek(&a).unwrap().step, 300);
    // mHC runs log the amax gain at every evaluation: the resumed run's log is the
    // uninterrupted one's (the rows written after the checkpoint are dropped and logged again).
    let amax = |d: &Path| std::fs::read_to_string(d.join("mhc_amax.csv")).ok();
    assert_eq!(amax(&a), amax(&b), "mhc_amax.csv differs (resumed at step {k})");
    if let Some(text) = amax(&b) {
        let rows: Vec<Vec<f64>> = text.lines().skip(1).map(|l| l.split(',').map(|c| c.parse().unwrap()).collect()).collect();
        assert_eq!(rows.iter().map(|r| r[0] as usize).collect::<Vec<_>>(), vec![40, 80, 120, 160, 200, 240, 280, 300]);
        let summary: Value = serde_json::from_slice(&std::fs::read(b.join("summary.json")).unwrap()).unwrap();
        let g = &summary["mhc_amax_gain"];
        // The last evaluation and the summary measure the same held-out batch.
        let want = ["forward_mean", "forward_max", "backward_mean", "backward_max"].map(|k| g[k].as_f64().unwrap());
        assert!(rows[7][1..].iter().zip(want).all(|(a, b)| (a - b).abs() <= 1e-12 * b.abs()), "{:?} vs {want:?}", &rows[7][1..]);
        assert!(rows.iter().all(|r| r[1..].iter().all(|&x| x.is_finite() && x > 0.5)), "{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_killed_with_sigkill_and_resumed_equals_the_uninterrupted_run() {
    sigkill_then_resume_equals_uninterrupted("sigkill", |_| {});
}

/// With a file-backed table the checkpoint holds no rows: resuming undoes the changes made
/// after it from the table file's journal.
#[test]
fn a_run_with_a_file_backed_table_killed_with_sigkill_and_resumed_equals_the_uninterrupted_run() {
    sigkill_then_resume_equals_uninterrupted("sigkill-file", |v| v["model"]["engram"]["table_store"] = "file".into());
}

/// Four residual streams with mHC: its parameters and their optimiser state are in the
/// checkpoint.
#[test]
fn a_run_with_mhc_killed_with_sigkill_and_resumed_equals_the_uninterrupted_run() {
    sigkill_then_resume_equals_uninterrupted("sigkill-mhc", |v| {
        v["model"]["mhc"] = serde_json::json!({ "streams": 4 });
        v["model"]["engram"]["hc_mult"] = 4.into();
    });
}

#[test]
fn file_backed_and_resident_tables_train_bit_identically() {
    let dir = scratch("stores");
    for (optimizer, weights) in [("adam", "f32"), ("row-wise", "f32"), ("row-wise", "bf16")] {
        let mut runs = Vec::new();
        for store in ["resident", "file"] {
            let cfg = config_file(&dir, &format!("{store}-{optimizer}-{weights}"), |v| {
                let e = &mut v["model"]["engram"];
                e["table_store"] = store.into();
                e["table_optimizer"] = optimizer.into();
                e["table_weights"] = weights.into();
            });
            let run = dir.join(format!("{store}-{optimizer}-{weights}"));
            assert_ok(&train(&cfg, &run, &[]));
            runs.push(run);
        }
        assert!(runs[1].join("tables/table-0.slab").is_file(), "the file-backed run kept its table in the run directory");
        assert_eq!(metrics_without_timing(&runs[0]), metrics_without_timing(&runs[1]), "{optimizer}/{weights}");
        assert_eq!(final_loss_bits(&runs[0]), final_loss_bits(&runs[1]), "{optimizer}/{weights}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_truncated_or_foreign_table_file_is_refused_on_resume() {
    let dir = scratch("table-file");
    let cfg = config_file(&dir, "file", |v| v["model"]["engram"]["table_store"] = "file".into());
    let run = dir.join("run");
    assert_ok(&train(&cfg, &run, &[]));
    std::fs::remove_file(run.join("summary.json")).unwrap();
    let table = run.join("tables/table-0.slab");
    let good = std::fs::read(&table).unwrap();

    // Cut the file inside its rows.
    std::fs::write(&table, &good[..good.len() - 100]).unwrap();
    let line = assert_error(&resume(&run), &["truncated", "table-0.slab"]);
    assert!(line.contains(&format!("{} bytes", good.len() - 100)), "{line}");

    // A table file of another table: the header's row count differs.
    let mut other = good.clone();
    other[12] ^= 1;
    std::fs::write(&table, &other).unwrap();
    assert_error(&resume(&run), &["table-0.slab", "belongs to another table", "rows"]);

    // The original file resumes (nothing left to train: the run just finishes).
    std::fs::write(&table, &good).unwrap();
    assert_ok(&resume(&run));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A table file that cannot grow (here the file-size limit, `ulimit -f`, which fails the
/// write the way a full disk does) stops the run with an error naming the file; the last
/// checkpoint stays usable and, once the file can grow, the resumed run equals one never
/// interrupted.
#[test]
fn a_table_file_that_cannot_grow_is_a_clear_error_and_the_last_checkpoint_resumes() {
    let dir = scratch("table-full");
    let cfg = config_file(&dir, "file", |v| {
        v["model"]["engram"]["table_store"] = "file".into();
        v["train"]["steps"] = 200.into();
        v["train"]["eval_every"] = 50.into();
        v["train"]["checkpoint_every"] = 10.into();
        v["model"]["engram"]["table_dir"] = dir.join("tables").to_string_lossy().into_owned().into();
    });
    let (a, b) = (dir.join("a"), dir.join("b"));
    // The uninterrupted run, with its own table directory.
    let cfg_b = dir.join("b.json");
    let mut vb: Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    vb["model"]["engram"]["table_dir"] = dir.join("tables-b").to_string_lossy().into_owned().into();
    std::fs::write(&cfg_b, serde_json::to_string(&vb).unwrap()).unwrap();
    assert_ok(&train(&cfg_b, &b, &[]));
    let full = std::fs::metadata(dir.join("tables-b/table-0.slab")).unwrap().len();

    // Limit every file of the process to just under the table's final size (in 1 KiB blocks),
    // so the table hits it late in the run, after checkpoints; the signal the limit raises is
    // ignored, so the write fails with an error instead.
    let script = format!("trap '' XFSZ; ulimit -f {}; exec \"$0\" train --no-progress --config \"$1\" --out \"$2\"", full / 1024 - 1);
    let out = Command::new("bash").args(["-c", &script, env!("CARGO_BIN_EXE_engram"), cfg.to_str().unwrap(), a.to_str().unwrap()]).output().unwrap();
    let line = assert_error(&out, &["table-0.slab"]);
    assert!(line.contains("File too large") || line.contains("No space"), "{line}");
    let k = checkpoint::peek(&a).expect("the last good checkpoint is there").step;
    assert!(k > 0 && k < 200, "checkpoint at step {k}");
    let out = resume(&a);
    assert_ok(&out);
    assert_eq!(metrics_without_timing(&a), metrics_without_timing(&b), "resumed at step {k}");
    assert_eq!(final_loss_bits(&a), final_loss_bits(&b));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_process_on_a_run_directory_in_use_is_refused_at_once() {
    let dir = scratch("lock");
    let cfg = config_file(&dir, "long", |v| {
        v["train"]["steps"] = 2000.into();
        v["train"]["checkpoint_every"] = 10.into();
    });
    let a = dir.join("a");
    let mut child = spawn_train(&cfg, &a);
    // Wait until the first run trains (its first checkpoint is written).
    let deadline = Instant::now() + Duration::from_secs(120);
    while checkpoint::peek(&a).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "the first run stopped early");
        assert!(Instant::now() < deadline, "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    let config_before = std::fs::read(a.join("config.json")).unwrap();
    let rows_before = std::fs::read_to_string(a.join("metrics.csv")).unwrap().lines().count();
    for out in [train(&cfg, &a, &["--overwrite"]), resume(&a)] {
        let err = assert_error(&out, &["in use by another process", &format!("pid {}", child.id())]);
        assert!(!err.contains("panicked"), "{err}");
    }
    // Refused before touching anything: --overwrite removed and rewrote nothing, and the
    // first run's metrics only grew.
    assert_eq!(std::fs::read(a.join("config.json")).unwrap(), config_before, "config.json untouched");
    assert!(std::fs::read_to_string(a.join("metrics.csv")).unwrap().lines().count() >= rows_before, "metrics.csv not truncated");
    assert!(child.try_wait().unwrap().is_none(), "the first run is unharmed");
    child.kill().unwrap();
    child.wait().unwrap();
    // Once it is gone (even by SIGKILL) its lock is gone with it.
    assert!(engram::run_dir::RunDirLock::acquire(&a).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_same_config_and_seed_give_bit_identical_metrics() {
    let dir = scratch("determinism");
    let cfg = config_file(&dir, "tiny", |_| {});
    let other_seed = config_file(&dir, "seed1", |v| v["train"]["seed"] = 1.into());
    let runs = [dir.join("r1"), dir.join("r2"), dir.join("r3")];
    assert_ok(&train(&cfg, &runs[0], &[]));
    assert_ok(&train(&cfg, &runs[1], &[]));
    assert_ok(&train(&other_seed, &runs[2], &[]));
    assert_eq!(metrics_without_timing(&runs[0]), metrics_without_timing(&runs[1]));
    assert_eq!(final_loss_bits(&runs[0]), final_loss_bits(&runs[1]));
    assert_ne!(metrics_without_timing(&runs[0]), metrics_without_timing(&runs[2]), "the seed has no effect");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn print_config_presets_are_complete_valid_configs() {
    for (name, preset) in [("tiny", ExperimentConfig::tiny()), ("small", ExperimentConfig::small()), ("bytes", ExperimentConfig::bytes())] {
        let out = engram(&["train", "--print-config", name]);
        assert_ok(&out);
        let cfg: ExperimentConfig = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(cfg, preset);
        cfg.validate().unwrap();
    }
    let out = engram(&["train", "--print-config", "huge"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(stderr(&out).contains("tiny") && stderr(&out).contains("small"));
}

#[test]
fn help_of_every_subcommand_shows_examples() {
    for args in [&["--help"][..], &["train", "--help"], &["hash", "--help"]] {
        let out = engram(args);
        assert_ok(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Example"), "{args:?}: {text}");
    }
    let text = String::from_utf8_lossy(&engram(&["train", "--help"]).stdout).into_owned();
    for flag in ["--config", "--out", "--resume", "--print-config", "--device", "--overwrite"] {
        assert!(text.contains(flag), "{flag} not in train --help");
    }
}

#[test]
fn a_missing_or_empty_corpus_is_a_clear_error() {
    let dir = scratch("corpus");
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::write(dir.join("empty/notes.md"), "not a book").unwrap();
    for (sub, needle) in [("missing", "does not exist"), ("empty", "no non-empty .txt or .txt.gz book")] {
        let corpus_dir = dir.join(sub);
        let cfg = config_file(&dir, sub, |v| v["data"]["corpus_dir"] = Value::String(corpus_dir.to_string_lossy().into_owned()));
        let before = snapshot(&dir);
        let out = train(&cfg, &dir.join(format!("run-{sub}")), &[]);
        assert_error(&out, &[needle, sub]);
        assert_unchanged(&before, &dir);
        assert!(!dir.join(format!("run-{sub}/config.json")).exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_truncated_or_corrupt_checkpoint_is_refused() {
    let dir = scratch("corrupt");
    let run = interrupted_run(&dir);
    let ckpt = checkpoint::checkpoint_path(&run);
    let good = std::fs::read(&ckpt).unwrap();
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    for (bytes, needle) in [(good[..good.len() / 3].to_vec(), "truncated"), (flipped, "checksum mismatch"), (b"junk".to_vec(), "corrupt")] {
        std::fs::write(&ckpt, &bytes).unwrap();
        let before = snapshot(&dir);
        assert_error(&resume(&run), &[needle, "checkpoint"]);
        assert_unchanged(&before, &dir);
    }
    std::fs::write(&ckpt, &good).unwrap();
    assert_ok(&resume(&run));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resuming_with_an_edited_config_is_refused_naming_the_field() {
    let dir = scratch("edited");
    let run = interrupted_run(&dir);
    let path = run.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["train"]["lr"] = 0.01.into();
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let before = snapshot(&dir);
    let line = assert_error(&resume(&run), &["different config", "train.lr", "0.003", "0.01"]);
    assert!(!line.contains("train.steps"), "only the edited field is named: {line}");
    assert_unchanged(&before, &dir);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_finished_or_interrupted_run_is_not_replaced_without_overwrite() {
    let dir = scratch("finished");
    let (cfg, run) = finished_run(&dir);
    let before = snapshot(&dir);
    assert_error(&train(&cfg, &run, &[]), &["already holds a finished run", "--overwrite"]);
    assert_error(&resume(&run), &["finished run", "nothing to resume"]);
    assert_unchanged(&before, &dir);

    std::fs::remove_file(run.join("summary.json")).unwrap();
    let before = snapshot(&dir);
    assert_error(&train(&cfg, &run, &[]), &["interrupted run", "--resume", "--overwrite"]);
    assert_unchanged(&before, &dir);

    assert_ok(&train(&cfg, &run, &["--overwrite"]));
    assert!(run.join("summary.json").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_diverging_loss_stops_and_keeps_the_last_good_checkpoint() {
    let dir = scratch("diverge");
    let cfg = config_file(&dir, "huge-lr", |v| {
        v["train"]["lr"] = 1e6.into();
        v["train"]["warmup_steps"] = 0.into();
        v["train"]["checkpoint_every"] = 1.into();
    });
    let run = dir.join("run");
    let before = snapshot(&dir);
    let line = assert_error(&train(&cfg, &run, &[]), &["training diverged", "at step", "last good checkpoint"]);
    assert_unchanged(&before, &dir);
    let step: usize = line.split("at step ").nth(1).unwrap().split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap();
    assert!(step >= 2, "the first loss is that of the initial model: {line}");
    let kept = checkpoint::read(&run).expect("the last good checkpoint is intact");
    assert_eq!(kept.progress.step, step - 1, "{line}");
    assert!(line.contains(&format!("(step {})", step - 1)), "{line}");
    assert!(!run.join("summary.json").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unwritable_output_directory_is_a_clear_error() {
    let dir = scratch("unwritable");
    let cfg = config_file(&dir, "tiny", |_| {});
    // Tests may run as root, for whom permissions do not stop a write: put --out under a
    // regular file instead.
    let file = dir.join("a-file");
    std::fs::write(&file, "keep me").unwrap();
    let before = snapshot(&dir);
    assert_error(&train(&cfg, &file.join("run"), &[]), &["cannot write to output directory", "a-file"]);
    assert_error(&train(&cfg, &file, &[]), &["exists and is not a directory"]);
    assert_unchanged(&before, &dir);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unusable_device_is_a_clear_error() {
    let dir = scratch("device");
    let cfg = config_file(&dir, "tiny", |_| {});
    let before = snapshot(&dir);
    assert_error(&train(&cfg, &dir.join("run-tpu"), &["--device", "tpu"]), &["unknown device", "flex, ndarray, wgpu"]);
    let out = train(&cfg, &dir.join("run-wgpu"), &["--device", "wgpu"]);
    if cfg!(feature = "wgpu") {
        // Built with wgpu: either an adapter exists and the run works, or the message says so.
        if !out.status.success() {
            assert_error(&out, &["no graphics adapter"]);
        }
    } else {
        assert_error(&out, &["wgpu", "--features wgpu"]);
    }
    assert_unchanged(&before, &dir);
    assert!(!dir.join("run-tpu").exists(), "nothing is created before the device is checked");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_keys_and_invalid_values_in_the_config_are_refused() {
    let dir = scratch("keys");
    // (file name, edit of the tiny preset, what the error names)
    type Case = (&'static str, fn(&mut Value), &'static [&'static str]);
    let cases: [Case; 5] = [
        ("top", |v| v["optimizer"] = "sgd".into(), &["unknown field `optimizer`"]),
        ("nested", |v| v["train"]["lrr"] = 0.1.into(), &["unknown field `lrr`", "line"]),
        ("engram", |v| v["model"]["engram"]["tabel_size"] = serde_json::json!([1]), &["unknown field `tabel_size`"]),
        ("value", |v| v["train"]["checkpoint_every"] = 1000.into(), &["train.checkpoint_every = 1000"]),
        ("cross", |v| v["train"]["seq_len"] = 64.into(), &["train.seq_len = 64", "model.max_seq_len = 32"]),
    ];
    for (name, edit, needles) in cases {
        let cfg = config_file(&dir, name, edit);
        let before = snapshot(&dir);
        let run = dir.join(format!("run-{name}"));
        let line = assert_error(&train(&cfg, &run, &[]), needles);
        assert!(line.contains(&format!("{name}.json")), "the file is named: {line}");
        assert_unchanged(&before, &dir);
        assert!(!run.exists(), "nothing is created for an invalid config");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resuming_without_a_checkpoint_says_how_to_restart() {
    let dir = scratch("nockpt");
    let run = interrupted_run(&dir);
    std::fs::remove_dir_all(run.join(checkpoint::CHECKPOINT_DIR)).unwrap();
    let before = snapshot(&dir);
    assert_error(&resume(&run), &["no checkpoint to resume from", "--overwrite"]);
    assert_error(&resume(&dir.join("nowhere")), &["no such run directory"]);
    assert_unchanged(&before, &dir);
    std::fs::remove_dir_all(&dir).unwrap();
}
