//! `engram export`: a trained run with Engram at two blocks exported to safetensors with a
//! probe; the files read back with the `safetensors` crate; the independent numpy check
//! (`tests/parity/engram_parity.py`, written from the reference formulas) recomputes the row ids
//! from the metadata and the layers' outputs from the probe's hidden states and agrees; a
//! corrupted probe is caught; bad input is a clear error and a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const TRAIN_BOOK: &str = "shakespeare-caesar";
const VAL_BOOK: &str = "blake-poems";
const PROBE: &str = "Only Alexander the Great crossed the Hellespont";

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("engram-interop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn engram(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engram")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A finished `tiny` run with Engram at blocks 0 and 1 on a two-book corpus.
fn trained_run(dir: &Path) -> PathBuf {
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/gutenberg");
    for book in [TRAIN_BOOK, VAL_BOOK] {
        std::fs::copy(shipped.join(format!("{book}.txt.gz")), corpus.join(format!("{book}.txt.gz"))).unwrap();
    }
    let out = engram(&["train", "--print-config", "tiny"]);
    assert!(out.status.success());
    let mut v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["data"]["corpus_dir"] = Value::String(corpus.to_string_lossy().into_owned());
    v["data"]["val_books"] = serde_json::json!([VAL_BOOK]);
    v["model"]["engram"]["layer_ids"] = serde_json::json!([0, 1]);
    v["train"]["steps"] = serde_json::json!(20);
    let cfg = dir.join("cfg.json");
    std::fs::write(&cfg, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let run = dir.join("run");
    let out = engram(&["train", "--no-progress", "--config", cfg.to_str().unwrap(), "--out", run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    run
}

/// A Python 3 with numpy: `$ENGRAM_PYTHON`, `python3` or `/usr/bin/python3` (`.ci/run`
/// installs Debian's python3-numpy).
fn python_with_numpy() -> String {
    let candidates: Vec<String> = std::env::var("ENGRAM_PYTHON").into_iter().chain(["python3".to_string(), "/usr/bin/python3".to_string()]).collect();
    for p in &candidates {
        if Command::new(p).args(["-c", "import numpy"]).output().is_ok_and(|o| o.status.success()) {
            return p.clone();
        }
    }
    panic!("no Python 3 with numpy among {candidates:?}: install python3-numpy (the parity check needs it) or set ENGRAM_PYTHON");
}

fn parity(model: &Path, probe: &Path) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/engram_parity.py");
    Command::new(python_with_numpy()).arg(script).arg(model).arg(probe).output().unwrap()
}

#[test]
fn export_and_probe_agree_with_the_independent_numpy_implementation() {
    let dir = scratch("parity");
    let run = trained_run(&dir);
    let (model, probe) = (dir.join("model.safetensors"), dir.join("probe.safetensors"));
    let out = engram(&["export", "--run", run.to_str().unwrap(), "--out", model.to_str().unwrap(), "--probe", PROBE, "--probe-out", probe.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The safetensors crate reads both files; the Engram tensors carry the demo's names.
    let bytes = std::fs::read(&model).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names = st.names();
    for l in 0..2 {
        for t in ["multi_head_embedding.embedding.weight", "value_proj.weight", "key_projs.0.weight", "norm1.0.weight", "norm2.0.weight", "short_conv.conv.weight", "short_conv.norms.0.weight"] {
            assert!(names.iter().any(|n| *n == format!("engram.{l}.{t}")), "engram.{l}.{t} missing from {names:?}");
        }
    }
    assert!(names.iter().any(|n| n.starts_with("backbone.")), "no backbone tensors");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["engram.layer_ids"], "[0,1]");
    let pbytes = std::fs::read(&probe).unwrap();
    let p = safetensors::SafeTensors::deserialize(&pbytes).unwrap();
    let t = p.tensor("input_ids").unwrap().shape()[0];
    assert_eq!(p.tensor("hidden_in.1").unwrap().shape(), &[t, 1, 32]);

    // The conv is zero at initialisation; after training it is not, so the check covers it.
    let conv = st.tensor("engram.0.short_conv.conv.weight").unwrap();
    assert!(conv.data().chunks_exact(4).any(|b| f32::from_le_bytes(b.try_into().unwrap()) != 0.0), "the trained conv is still zero");

    // The checker itself agrees with the hash test vectors (made with the reference's numpy).
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let vectors = Command::new(python_with_numpy()).arg(root.join("tests/parity/engram_parity.py")).arg("--self-test-vectors").arg(root.join("tests/data/engram_hash_testvectors.json")).output().unwrap();
    assert!(vectors.status.success(), "{}{}", String::from_utf8_lossy(&vectors.stdout), stderr(&vectors));

    let out = parity(&model, &probe);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "parity check failed:\n{text}\n{}", stderr(&out));
    assert!(text.contains("rows ") && text.contains("PASS"), "{text}");

    // The check is not vacuous: one changed output value fails it (exit 1).
    let mut bad = pbytes.clone();
    let info = p.tensor("engram_out.1").unwrap();
    let header = 8 + u64::from_le_bytes(pbytes[..8].try_into().unwrap()) as usize;
    let at = header + (info.data().as_ptr() as usize - pbytes[header..].as_ptr() as usize) + 4 * 5;
    let v = f32::from_le_bytes(bad[at..at + 4].try_into().unwrap());
    bad[at..at + 4].copy_from_slice(&(v + 0.01 * (1.0 + v.abs())).to_le_bytes());
    let bad_probe = dir.join("bad-probe.safetensors");
    std::fs::write(&bad_probe, &bad).unwrap();
    let out = parity(&model, &bad_probe);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_export_input_is_a_clear_error() {
    let dir = scratch("bad");
    let out_file = dir.join("m.safetensors");
    // Not a run directory.
    let out = engram(&["export", "--run", dir.to_str().unwrap(), "--out", out_file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("config.json"), "{}", stderr(&out));
    assert!(!out_file.exists());
    // A run whose checkpoint is gone.
    let run = trained_run(&dir);
    let ck = run.join("checkpoint");
    let moved = dir.join("checkpoint-moved");
    std::fs::rename(&ck, &moved).unwrap();
    let out = engram(&["export", "--run", run.to_str().unwrap(), "--out", out_file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("checkpoint"), "{}", stderr(&out));
    std::fs::rename(&moved, &ck).unwrap();
    // An empty probe text and one longer than the context: refused, nothing written.
    let probe = dir.join("p.safetensors");
    for (text, says) in [("", "empty"), (&"the great king ".repeat(40)[..], "context")] {
        let out = engram(&["export", "--run", run.to_str().unwrap(), "--out", out_file.to_str().unwrap(), "--probe", text, "--probe-out", probe.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
        assert!(!probe.exists() && !out_file.exists(), "a refused probe wrote a file");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
