//! `engram import`: a model exported by [`super::export`] back into a run directory.
//!
//! The file is checked whole before anything is written: its `format`, its `config` (which must
//! validate and fit the data the config names, prepared here), every `engram.*` metadata key
//! against the hash constants that config and data give (layer ids, seed, pad ids, V', the
//! multipliers, primes, offsets and totals of every layer, …), the compression map entry by
//! entry, and every tensor of the model by name, dtype and shape — a file tensor the model does
//! not have is refused too. The first problem found is reported with the tensor or key it
//! concerns, and nothing is written.
//!
//! The run directory then gets `config.json` and a checkpoint at the run's last step: the
//! weights of the file with a fresh optimiser state (an export holds no optimiser moments). It
//! is a finished run for [`crate::train::LoadedRun`], `engram export` and `engram train --resume`
//! (which evaluates it and writes `summary.json`). A file-backed table is created in the new
//! directory's `tables/` (the exporting run's `table_dir` is dropped from the config) and gets
//! a record only for the rows whose weights differ from their initial value.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::store::ModuleSnapshot;
use burn::tensor::{Device, TensorData};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use super::error::InteropError;
use super::format::{compression_map, engram_blocks, file_name_of, metadata_of, table_name, transpose, FileLayout, FORMAT, TABLE_CHUNK_ROWS};
use crate::checkpoint::{self, Progress};
use crate::config::ExperimentConfig;
use crate::data::PreparedData;
use crate::engram::{EngramControl, EngramHost};
use crate::hashing::default_rng;
use crate::run_dir::{io_err, write_json};

/// What [`import`] wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImportSummary {
    /// The run directory.
    pub dir: PathBuf,
    /// Tensors read.
    pub tensors: usize,
    /// Per Engram table: its rows, and the rows given a record (all of them when resident).
    pub table_rows: Vec<(usize, usize)>,
}

fn file_err(path: &Path, reason: impl Into<String>) -> InteropError {
    InteropError::File { path: path.to_path_buf(), reason: reason.into() }
}

fn tensor_err(path: &Path, name: &str, reason: impl Into<String>) -> InteropError {
    InteropError::Tensor { path: path.to_path_buf(), name: name.to_string(), reason: reason.into() }
}

fn key_err(path: &Path, key: &str, reason: impl Into<String>) -> InteropError {
    InteropError::Metadata { path: path.to_path_buf(), key: key.to_string(), reason: reason.into() }
}

/// Whether two metadata values agree: as JSON values when both parse (integers exactly, other
/// numbers as f64, arrays element by element), else as strings.
fn same_value(a: &str, b: &str) -> bool {
    fn same(x: &Value, y: &Value) -> bool {
        match (x, y) {
            (Value::Number(a), Value::Number(b)) => match (a.as_i128(), b.as_i128()) {
                (Some(a), Some(b)) => a == b,
                _ => a.as_f64() == b.as_f64(),
            },
            (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y)),
            _ => x == y,
        }
    }
    match (serde_json::from_str::<Value>(a), serde_json::from_str::<Value>(b)) {
        (Ok(x), Ok(y)) => same(&x, &y),
        _ => a == b,
    }
}

/// Little-endian f32 values of `bytes`.
fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect()
}

/// The output directory must not exist yet, or be empty.
fn check_out(out: &Path) -> Result<bool, InteropError> {
    let refuse = |reason: String| InteropError::Out { path: out.to_path_buf(), reason };
    if !out.exists() {
        return Ok(true);
    }
    if !out.is_dir() {
        return Err(refuse("exists and is not a directory".into()));
    }
    let mut entries = std::fs::read_dir(out).map_err(|e| refuse(format!("cannot read it ({e})")))?;
    if entries.next().is_some() {
        return Err(refuse("is not empty; import into a new directory".into()));
    }
    Ok(false)
}

/// Import the exported model `file` into the new run directory `out` (see the module docs),
/// building the model on `device`.
pub fn import(file: &Path, out: &Path, device: &Device) -> Result<ImportSummary, InteropError> {
    let created = check_out(out)?;
    let f = std::fs::File::open(file).map_err(|e| file_err(file, format!("cannot open it ({e})")))?;
    // SAFETY: the map is only read, while `f` stays open; the file must not be truncated
    // meanwhile (as for any memory-mapped input).
    let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| file_err(file, format!("cannot map it ({e})")))?;
    let st = SafeTensors::deserialize(&map).map_err(|e| file_err(file, format!("not a safetensors file ({e})")))?;
    let (_, header) = SafeTensors::read_metadata(&map).map_err(|e| file_err(file, format!("not a safetensors file ({e})")))?;
    let meta: HashMap<String, String> = header.metadata().clone().unwrap_or_default();
    let key = |k: &str| meta.get(k).map(String::as_str).ok_or_else(|| key_err(file, k, "missing (was the file written by `engram export`?)"));

    let format = key("format")?;
    if format != FORMAT {
        return Err(key_err(file, "format", format!("{format:?}; this build reads {FORMAT:?}")));
    }
    let mut cfg: ExperimentConfig = serde_json::from_str(key("config")?).map_err(|e| key_err(file, "config", e.to_string()))?;
    cfg.validate().map_err(|e| key_err(file, "config", e.to_string()))?;
    if let Some(e) = &mut cfg.model.engram {
        if e.control != EngramControl::None {
            return Err(key_err(file, "config", format!("model.engram.control is {:?}: an exported model uses the reference layer", e.control)));
        }
        // A file-backed table belongs to the new run directory, not to the exporting run's.
        e.table_dir = None;
    }
    let data = PreparedData::prepare(&cfg.data)?;
    if cfg.model.vocab_size != data.vocab_size {
        return Err(key_err(file, "config", format!("model.vocab_size is {}, the data its config names gives {}", cfg.model.vocab_size, data.vocab_size)));
    }
    let hashing = crate::train::engram_hashing(&cfg.model, &data)?;
    let mut model = cfg.model.init(device);

    // The hash constants: what the config and the data give here, key by key.
    let expected = metadata_of(&cfg, &data, hashing.as_ref().map(|h| &h.hasher), &model);
    for (k, want) in &expected {
        if k == "config" || k == "format" {
            continue;
        }
        let got = key(k)?;
        if !same_value(got, want) {
            return Err(key_err(file, k, format!("the file says {got}, but its config with the data here gives {want}")));
        }
    }

    let mut used: HashSet<String> = HashSet::new();
    let view = |name: &str, dtype: Dtype, shape: &[usize]| {
        let v = st.tensor(name).map_err(|_| tensor_err(file, name, "missing"))?;
        if v.dtype() != dtype {
            return Err(tensor_err(file, name, format!("dtype {:?}, expected {dtype:?}", v.dtype())));
        }
        if v.shape() != shape {
            return Err(tensor_err(file, name, format!("shape {:?}, expected {shape:?}", v.shape())));
        }
        Ok(v)
    };
    let table_rows: Vec<usize> = hashing.as_ref().map(|h| h.table_rows()).unwrap_or_default();
    if hashing.is_some() {
        let name = "engram.compression_map";
        let want = compression_map(&cfg, &data);
        let v = view(name, Dtype::I64, &[want.len()])?;
        let got = v.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")));
        if let Some((i, (g, w))) = got.zip(&want).enumerate().find(|(_, (g, w))| g != *w) {
            return Err(tensor_err(file, name, format!("entry {i} is {g}, the tokenizer's compression gives {w}")));
        }
        used.insert(name.into());
        let d_head = cfg.model.engram.as_ref().map_or(0, |e| e.d_head);
        for (l, &rows) in table_rows.iter().enumerate() {
            view(&table_name(l), Dtype::F32, &[rows, d_head])?;
            used.insert(table_name(l));
        }
    }

    // Every model parameter from its file tensor, back in burn's layout.
    let blocks = engram_blocks(&model);
    let mut tensors = Vec::new();
    for t in model.collect(None, None, true) {
        let (path, shape) = (t.name.clone(), t.shape.to_vec());
        let (name, layout) = file_name_of(&path, &blocks)?;
        let file_shape = match (layout, &shape[..]) {
            (FileLayout::Same, _) => shape.clone(),
            (FileLayout::Transposed, &[i, o]) => vec![o, i],
            (FileLayout::Conv, &[c, k]) => vec![c, 1, k],
            _ => return Err(InteropError::Unsupported(format!("model tensor {path} has shape {shape:?}, not 2-D"))),
        };
        let values = f32s(view(&name, Dtype::F32, &file_shape)?.data());
        let values = if layout == FileLayout::Transposed { transpose(&values, file_shape[0], file_shape[1]) } else { values };
        tensors.push(burn::store::bridge::from_data(TensorData::new(values, shape), path, None));
        used.insert(name);
    }
    if let Some(extra) = st.names().into_iter().filter(|n| !used.contains(*n)).min() {
        return Err(tensor_err(file, extra, "is not a tensor of the model its config describes"));
    }
    let n_tensors = used.len();
    let applied = model.apply(tensors, None, None, true);
    if !applied.errors.is_empty() || !applied.missing.is_empty() || !applied.unused.is_empty() {
        return Err(InteropError::Unsupported(format!("loading the weights into the model: {applied}")));
    }

    // Everything checked: write the run directory (removed again if writing fails).
    let write = || -> Result<Vec<(usize, usize)>, InteropError> {
        std::fs::create_dir_all(out).map_err(|e| InteropError::Out { path: out.to_path_buf(), reason: format!("cannot create it ({e})") })?;
        write_json(&out.join("config.json"), &cfg)?;
        let mut hosts = crate::train::engram_hosts(&cfg.model, hashing.as_ref(), cfg.train.seed, out, false)?;
        let mut written = Vec::new();
        let mut chunk = Vec::new();
        for (l, host) in hosts.iter_mut().enumerate() {
            let name = table_name(l);
            let bytes = st.tensor(&name).expect("checked above").data();
            let (rows, dim) = (host.table().rows(), host.table().dim());
            let mut n = 0;
            for lo in (0..rows).step_by(TABLE_CHUNK_ROWS) {
                let hi = (lo + TABLE_CHUNK_ROWS).min(rows);
                chunk.clear();
                chunk.extend(f32s(&bytes[lo * dim * 4..hi * dim * 4]));
                n += host.table_mut().load_weights(lo, &chunk).map_err(|e| tensor_err(file, &name, e.to_string()))?;
            }
            written.push((rows, n));
        }
        let mut progress = Progress::start(default_rng(cfg.train.seed));
        progress.step = cfg.train.steps;
        let optim: ModuleOptimizer = AdamWConfig::new().init();
        let tables: Vec<_> = hosts.iter().map(EngramHost::table).collect();
        checkpoint::write(out, &cfg, checkpoint::data_fingerprint(&data), &progress, &model, &optim, &tables)?;
        for h in &mut hosts {
            h.table_mut().checkpoint_written().map_err(crate::train::TrainError::from)?;
        }
        Ok(written)
    };
    match write() {
        Ok(table_rows) => Ok(ImportSummary { dir: out.to_path_buf(), tensors: n_tensors, table_rows }),
        Err(e) => {
            // Leave the directory as it was: absent, or empty.
            let cleanup = if created {
                std::fs::remove_dir_all(out)
            } else {
                std::fs::read_dir(out).and_then(|entries| {
                    for entry in entries {
                        let p = entry?.path();
                        if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) }?;
                    }
                    Ok(())
                })
            };
            if let Err(c) = cleanup {
                return Err(InteropError::Out { path: out.to_path_buf(), reason: format!("{e}; and removing the partial import failed ({})", io_err("remove", out)(c)) });
            }
            Err(e)
        }
    }
}
