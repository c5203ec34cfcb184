//! `engram export`: a trained run with Engram at two blocks (on one residual stream, and on four
//! with mHC) exported to safetensors with a probe; the files read back with the `safetensors` crate; the independent numpy check
//! (`tests/parity/engram_parity.py`, written from the reference formulas) recomputes the row ids
//! from the metadata and the layers' outputs from the probe's hidden states and agrees; a
//! corrupted probe is caught; bad input is a clear error and a non-zero exit. `engram import`:
//! export → import → the same logits bit for bit, the same held-out score, and an export of the
//! imported run byte-identical to the first (resident and file-backed tables); a file with a
//! missing, misshapen, mistyped or extra tensor, or hash metadata that disagrees with its
//! config, is refused naming the tensor or key, and nothing is written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;

use common::{engram, scratch, stderr, trained_run as trained_run_with};

const PROBE: &str = "Only Alexander the Great crossed the Hellespont";

/// A finished `tiny` run with Engram at blocks 0 and 1 on a two-book corpus.
fn trained_run(dir: &Path) -> PathBuf {
    trained_run_with(dir, "run", |_| {})
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
    let dir = scratch("interop-parity");
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

    // Four residual streams with mHC: one gate, key projection and pair of norms per stream,
    // the conv over 4·D channels; the probe's hidden states are those of the four streams.
    let run = trained_run_with(&dir, "mhc", with_mhc);
    let (model, probe) = (dir.join("mhc.safetensors"), dir.join("mhc-probe.safetensors"));
    let out = engram(&["export", "--run", run.to_str().unwrap(), "--out", model.to_str().unwrap(), "--probe", PROBE, "--probe-out", probe.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&model).unwrap();
    let names = safetensors::SafeTensors::deserialize(&bytes).unwrap().names().into_iter().map(str::to_string).collect::<Vec<_>>();
    for t in ["engram.0.key_projs.3.weight", "engram.1.norm2.3.weight", "engram.1.short_conv.norms.3.weight", "backbone.blocks.1.hc_ffn.phi", "backbone.hc_exit.head.phi"] {
        assert!(names.iter().any(|n| n == t), "{t} missing from {names:?}");
    }
    let pbytes = std::fs::read(&probe).unwrap();
    let p = safetensors::SafeTensors::deserialize(&pbytes).unwrap();
    let t = p.tensor("input_ids").unwrap().shape()[0];
    assert_eq!(p.tensor("hidden_in.0").unwrap().shape(), &[t, 4, 32]);
    let streams = |name: &str| -> Vec<Vec<u32>> { p.tensor(name).unwrap().data().chunks_exact(4 * 4 * 32).map(|tok| tok.chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).collect()).collect() };
    // The streams entering the second Engram layer differ (per-stream gates, and mHC mixing).
    assert!(streams("hidden_in.1").iter().any(|tok| tok[..32] != tok[32..64]), "the streams are still identical copies");
    let out = parity(&model, &probe);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("M=4") && text.contains("PASS"), "parity check failed:\n{text}\n{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A run config on four residual streams with mHC (Engram's `hc_mult` to match).
fn with_mhc(v: &mut Value) {
    v["model"]["mhc"] = serde_json::json!({ "streams": 4 });
    v["model"]["engram"]["hc_mult"] = serde_json::json!(4);
}

#[test]
fn bad_export_input_is_a_clear_error() {
    let dir = scratch("interop-bad");
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

fn export_to(run: &Path, file: &Path) {
    let out = engram(&["export", "--run", run.to_str().unwrap(), "--out", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn import_to(file: &Path, run: &Path) -> Output {
    engram(&["import", file.to_str().unwrap(), "--out", run.to_str().unwrap()])
}

/// The logits of the run's model on the first context of held-out tokens (flex).
fn held_out_logits(run: &Path) -> Vec<f32> {
    use burn::tensor::{Int, Tensor, TensorData};
    let device = engram::device::device_from_name("flex").unwrap();
    let r = engram::train::LoadedRun::load(run, &device).unwrap();
    let ids = &r.data.val[..r.cfg.model.max_seq_len.min(r.data.val.len())];
    let t = ids.len();
    let mems: Vec<_> = r.hosts.iter().map(|h| h.lookup(ids, [1, t], &device).unwrap().into_memory()).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids.iter().map(|&x| x as i32).collect::<Vec<_>>(), [1, t]), &device);
    r.model.forward(tokens, &mems, false).into_data().try_to_vec::<f32>().unwrap()
}

fn summary(run: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn export_then_import_gives_the_same_model_bit_for_bit() {
    let dir = scratch("interop-roundtrip");
    for (name, store, mhc) in [("resident", "resident", false), ("file", "file", false), ("mhc", "resident", true)] {
        let run = trained_run_with(&dir, name, |v| {
            v["model"]["engram"]["table_store"] = Value::String(store.into());
            if mhc {
                with_mhc(v);
            }
        });
        let (a, b) = (dir.join(format!("{name}-a.safetensors")), dir.join(format!("{name}-b.safetensors")));
        export_to(&run, &a);
        let imported = dir.join(format!("{name}-imported"));
        let out = import_to(&a, &imported);
        assert!(out.status.success(), "{}", stderr(&out));
        // Identical logits on held-out text, bit for bit.
        let (want, got) = (held_out_logits(&run), held_out_logits(&imported));
        assert_eq!(want.len(), got.len());
        let differ = want.iter().zip(&got).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
        assert_eq!(differ, 0, "{name}: {differ} of {} logits differ after the round trip", want.len());
        // Exporting the imported run gives the same file, byte for byte.
        export_to(&imported, &b);
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "{name}: the re-export differs from the export");
        // `train --resume` evaluates the imported run: the held-out score of the original run.
        let out = engram(&["train", "--no-progress", "--resume", imported.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        let (s0, s1) = (summary(&run), summary(&imported));
        for k in ["val_loss", "val_bpb", "val_bytes", "val_tokens"] {
            assert_eq!(s0[k], s1[k], "{name}: {k}");
        }
        if store == "file" {
            // Only the trained rows got records: as many as the training run touched.
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("bits per byte"), "{text}");
            let slabs = |d: &Path| -> Vec<u64> { (0..2).map(|i| std::fs::metadata(d.join(format!("tables/table-{i}.slab"))).unwrap().len()).collect() };
            assert_eq!(slabs(&run), slabs(&imported), "the imported table files hold another number of rows");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The tensors of `file` with `edit` applied, written to `out` with metadata `meta`.
fn rewrite(file: &Path, out: &Path, edit: impl FnOnce(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>, &mut std::collections::HashMap<String, String>)) {
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    let mut tensors: Vec<_> = st.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    edit(&mut tensors, &mut meta);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors.iter().map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(out, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

#[test]
fn bad_import_files_are_refused_naming_the_tensor_or_key() {
    let dir = scratch("interop-badimport");
    let run = trained_run(&dir);
    let good = dir.join("good.safetensors");
    export_to(&run, &good);
    let bad = dir.join("bad.safetensors");
    let out_dir = dir.join("imported");
    let refused = |file: &Path, says: &[&str]| {
        let out = import_to(file, &out_dir);
        assert!(!out.status.success(), "accepted a bad file (should say {says:?})");
        for s in says {
            assert!(stderr(&out).contains(s), "expected {s:?} in: {}", stderr(&out));
        }
        assert!(!out_dir.exists(), "a refused import left {}", out_dir.display());
    };
    std::fs::write(&bad, b"not a safetensors file at all").unwrap();
    refused(&bad, &["not a safetensors file"]);
    type Tensors = Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>;
    type Meta = std::collections::HashMap<String, String>;
    type Edit = Box<dyn Fn(&mut Tensors, &mut Meta)>;
    let cases: Vec<(Edit, Vec<&str>)> = vec![
        (Box::new(|t: &mut Tensors, _: &mut Meta| t.retain(|x| x.0 != "engram.1.key_projs.0.weight")), vec!["tensor engram.1.key_projs.0.weight", "missing"]),
        (Box::new(|t: &mut Tensors, _: &mut Meta| t.iter_mut().filter(|x| x.0 == "engram.0.value_proj.weight").for_each(|x| x.2.reverse())), vec!["tensor engram.0.value_proj.weight", "shape"]),
        (Box::new(|t: &mut Tensors, _: &mut Meta| t.iter_mut().filter(|x| x.0 == "engram.0.norm2.0.weight").for_each(|x| x.1 = safetensors::Dtype::I32)), vec!["tensor engram.0.norm2.0.weight", "dtype"]),
        (Box::new(|t: &mut Tensors, _: &mut Meta| t.push(("backbone.extra.weight".into(), safetensors::Dtype::F32, vec![1], vec![0; 4]))), vec!["tensor backbone.extra.weight", "not a tensor of the model"]),
        (Box::new(|t: &mut Tensors, _: &mut Meta| t.iter_mut().filter(|x| x.0 == "engram.compression_map").for_each(|x| x.3[..8].copy_from_slice(&7i64.to_le_bytes()))), vec!["tensor engram.compression_map", "entry 0"]),
        (Box::new(|_: &mut Tensors, m: &mut Meta| {
            // The primes of each order's heads: change the first.
            let mut primes: Vec<Vec<u64>> = serde_json::from_str(&m["engram.1.primes"]).unwrap();
            primes[0][0] += 2;
            m.insert("engram.1.primes".into(), serde_json::to_string(&primes).unwrap());
        }), vec!["metadata key engram.1.primes"]),
        (Box::new(|_: &mut Tensors, m: &mut Meta| {
            m.insert("engram.seed".into(), "1".into());
        }), vec!["metadata key engram.seed"]),
        (Box::new(|_: &mut Tensors, m: &mut Meta| {
            m.remove("engram.0.multipliers");
        }), vec!["metadata key engram.0.multipliers", "missing"]),
        (Box::new(|_: &mut Tensors, m: &mut Meta| {
            m.insert("format".into(), "something-else/9".into());
        }), vec!["metadata key format"]),
    ];
    for (edit, says) in cases {
        rewrite(&good, &bad, |t, m| edit(t, m));
        refused(&bad, &says);
    }
    // A directory that holds files is not imported into, and keeps them.
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(out_dir.join("keep.txt"), b"mine").unwrap();
    let out = import_to(&good, &out_dir);
    assert!(!out.status.success() && stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(std::fs::read(out_dir.join("keep.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_finished_or_imported_run_is_fine_tuned_with_init_from() {
    let dir = scratch("interop-finetune");
    let run = trained_run(&dir);
    let file = dir.join("model.safetensors");
    export_to(&run, &file);
    let imported = dir.join("imported");
    assert!(import_to(&file, &imported).status.success());
    // The same model for one step at a negligible learning rate: it starts from the imported
    // weights, so it scores what the trained run scores (4.19 bpb here; the same step from the
    // initialisation scores 4.64).
    let base: Value = serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    let write_cfg = |name: &str, edit: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        v["name"] = Value::String(name.into());
        edit(&mut v);
        let p = dir.join(format!("{name}.json"));
        std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        p
    };
    let tiny_lr = write_cfg("tuned", &|v| {
        v["train"]["steps"] = serde_json::json!(1);
        v["train"]["warmup_steps"] = serde_json::json!(0);
        v["train"]["eval_every"] = serde_json::json!(1);
        v["train"]["lr"] = serde_json::json!(1e-12);
        v["train"]["checkpoint_every"] = serde_json::json!(0);
    });
    let train = |cfg: &Path, out: &Path, from: Option<&Path>| {
        let mut args = vec!["train".to_string(), "--no-progress".into(), "--config".into(), cfg.display().to_string(), "--out".into(), out.display().to_string()];
        if let Some(f) = from {
            args.extend(["--init-from".into(), f.display().to_string()]);
        }
        engram(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let tuned = dir.join("tuned");
    let out = train(&tiny_lr, &tuned, Some(&imported));
    assert!(out.status.success(), "{}", stderr(&out));
    let (want, got) = (summary(&run)["val_bpb"].as_f64().unwrap(), summary(&tuned)["val_bpb"].as_f64().unwrap());
    assert!((want - got).abs() < 1e-5, "fine-tuned from the import: {got} bpb, the trained run {want}");
    let cfg: Value = serde_json::from_slice(&std::fs::read(tuned.join("config.json")).unwrap()).unwrap();
    assert!(cfg["train"]["init_from"].as_str().is_some_and(|p| p.ends_with("imported")), "config.json records where it started: {cfg}");
    let fresh = dir.join("fresh");
    assert!(train(&tiny_lr, &fresh, None).status.success());
    let cold = summary(&fresh)["val_bpb"].as_f64().unwrap();
    assert!(cold > want + 0.2, "a fresh start ({cold} bpb) is far from the trained run ({want} bpb)");
    // Another model is refused, naming what differs; so is a directory that is not a run.
    let wider = write_cfg("wider", &|v| {
        v["model"]["d_model"] = serde_json::json!(48);
        v["model"]["n_heads"] = serde_json::json!(2);
        v["model"]["d_ff"] = serde_json::json!(128);
    });
    let out = train(&wider, &dir.join("wider"), Some(&run));
    assert!(!out.status.success() && stderr(&out).contains("model.d_model"), "{}", stderr(&out));
    let out = train(&tiny_lr, &dir.join("nope"), Some(&dir.join("corpus")));
    assert!(!out.status.success() && stderr(&out).contains("not a run directory"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}
