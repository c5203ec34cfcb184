//! Helpers shared by the CLI integration tests: a scratch directory, the `engram` binary, and
//! a small trained run.

#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The training and held-out books of [`trained_run`].
pub const TRAIN_BOOK: &str = "shakespeare-caesar";
pub const VAL_BOOK: &str = "blake-poems";

/// A fresh, empty directory `engram-{name}-{pid}` in the temporary directory.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("engram-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run the `engram` binary with `args`.
pub fn engram(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engram")).args(args).output().unwrap()
}

/// A command's standard error, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A finished `tiny` run in `dir/name` (context 32; Engram at blocks 0 and 1 with N = 3 and
/// kernel 4; 20 steps) on a two-book corpus copied into `dir/corpus`, its config changed by
/// `edit` first.
pub fn trained_run(dir: &Path, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/gutenberg");
    for book in [TRAIN_BOOK, VAL_BOOK] {
        std::fs::copy(shipped.join(format!("{book}.txt.gz")), corpus.join(format!("{book}.txt.gz"))).unwrap();
    }
    let out = engram(&["train", "--print-config", "tiny"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["data"]["corpus_dir"] = Value::String(corpus.to_string_lossy().into_owned());
    v["data"]["val_books"] = serde_json::json!([VAL_BOOK]);
    v["model"]["engram"]["layer_ids"] = serde_json::json!([0, 1]);
    v["train"]["steps"] = serde_json::json!(20);
    edit(&mut v);
    let cfg = dir.join(format!("{name}.json"));
    std::fs::write(&cfg, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let run = dir.join(name);
    let out = engram(&["train", "--no-progress", "--config", cfg.to_str().unwrap(), "--out", run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    run
}
