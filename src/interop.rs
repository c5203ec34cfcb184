//! A trained run outside this crate: safetensors export with the hash constants, a probe of the
//! Engram layers' inputs and outputs for checking another implementation, and import of an
//! exported file back into a run directory ([`import()`], checked tensor by tensor and key by
//! key; see its module).
//!
//! # The exported file (`format` = `engram-rs/1`)
//! Tensors (little-endian, C order):
//! - `backbone.<path>`: every backbone parameter under its burn module path (burn layouts:
//!   a `Linear` weight is `[in, out]`).
//! - `engram.compression_map` I64 `[V]`: model token id → compressed id.
//! - per Engram layer `L` (0-based, in `engram.layer_ids` order), named as the reference demo's
//!   modules under `engram.L.`: `multi_head_embedding.embedding.weight` F32
//!   `[total_rows, d_head]` (the layer's concatenated table, streamed from the store in
//!   chunks, so a file-backed table is never in memory whole), `value_proj.weight` `[D, d_mem]`
//!   and `key_projs.{m}.weight` in PyTorch's `nn.Linear` layout (`[out, in]`) with their
//!   `.bias`, `norm1.{m}.weight` (the keys' RMSNorm), `norm2.{m}.weight` (the hidden state's),
//!   `short_conv.conv.weight` `[M·D, 1, kernel]` (PyTorch depthwise `Conv1d`, left padding
//!   `(kernel − 1)·dilation`), `short_conv.norms.{m}.weight`.
//!
//! Metadata (strings): the run's `config` (JSON), `tokenizer.kind`, `tokenizer.sha256`,
//! `engram.layer_ids`, `engram.max_ngram_size`, `engram.n_head_per_ngram`, `engram.seed`,
//! `engram.pad_id` (model id) and `engram.pad_compressed`, `engram.compressed_vocab_size`,
//! `engram.d_head`, `engram.hc_mult`, `engram.kernel_size`, `engram.dilation`, `engram.gate`,
//! `engram.short_conv`, `engram.norm_eps_gate`, `engram.norm_eps_conv`, and per layer
//! `engram.L.multipliers`, `engram.L.half_bound`, `engram.L.primes`, `engram.L.offsets`,
//! `engram.L.total_rows`: everything needed to compute row ids without this crate.
//!
//! # The probe (`format` = `engram-rs-probe/1`)
//! For one text (one sequence from position 0, at most the model's context): `input_ids` I64
//! `[T]`, and per Engram layer `L`: `rows.L` I64 `[T, heads]` (absolute rows in layer L's
//! table), `hidden_in.L` F32 `[T, M, D]` (the hidden state the layer receives) and
//! `engram_out.L` F32 `[T, M, D]` (its output, before it is added to the residual).
//! `tests/parity/engram_parity.py` checks both files with numpy alone.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use burn::store::ModuleSnapshot;

use crate::checkpoint::{self, CheckpointError};
use crate::config::ExperimentConfig;
use crate::data::PreparedData;
use crate::engram::{EngramControl, EngramHost};
use crate::hashing::NgramHasher;
use crate::model::Transformer;
use crate::run_dir::{write_atomic_with, RunDirError};
use crate::train::TrainError;

mod import;

pub use import::{import, ImportSummary};

/// Rows of a table written or read per chunk (a few MB at most).
const TABLE_CHUNK_ROWS: usize = 1 << 16;
/// The `format` metadata value of an exported model.
pub const FORMAT: &str = "engram-rs/1";

/// Why a run could not be exported or probed.
#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    /// The run directory has no readable `config.json`.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The run's checkpoint is missing, unreadable or not of the finished run.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint is not at the run's last step.
    #[error("{run}: the checkpoint is at step {step} of {steps}; export a finished run (or finish it with `engram train --resume`)")]
    Unfinished {
        /// The run directory.
        run: PathBuf,
        /// The checkpoint's step.
        step: usize,
        /// The run's steps.
        steps: usize,
    },
    /// Preparing the tables or the hash failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// Preparing the data failed.
    #[error(transparent)]
    Data(#[from] crate::data::prepare::DataError),
    /// The run cannot be described by the reference hash.
    #[error("{0}")]
    Unsupported(String),
    /// The probe text.
    #[error("probe text: {0}")]
    Probe(String),
    /// Writing the file.
    #[error(transparent)]
    Write(#[from] RunDirError),
    /// The file to import cannot be read or is not a safetensors file.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor of the file to import is missing or does not fit the model.
    #[error("{}: tensor {name}: {reason}", path.display())]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A metadata key of the file to import is missing or disagrees with its config.
    #[error("{}: metadata key {key}: {reason}", path.display())]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The directory to import into.
    #[error("--out {}: {reason}", path.display())]
    Out {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

}

/// A finished run loaded for use: its config, data (tokenizer, compression), model and tables.
pub struct LoadedRun {
    /// The run directory.
    pub dir: PathBuf,
    /// Its config.
    pub cfg: ExperimentConfig,
    /// Its data (the tokenizer's compression and pad id; the held-out text).
    pub data: PreparedData,
    /// The trained model, without autodiff.
    pub model: Transformer,
    /// The Engram layers' tables and hashes, in block order.
    pub hosts: Vec<EngramHost>,
}

impl LoadedRun {
    /// Load the finished run in `dir` (its `config.json` and final checkpoint) on `device`.
    /// A file-backed table is opened in place and restored to the checkpoint's state, as
    /// `engram train --resume` would.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, InteropError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| InteropError::Config { path: path.clone(), reason: format!("cannot read it ({e}); is {} a run directory?", dir.display()) })?;
        let cfg: ExperimentConfig = serde_json::from_str(&text).map_err(|e| InteropError::Config { path: path.clone(), reason: e.to_string() })?;
        let ck = checkpoint::read(dir)?;
        if ck.progress.step != cfg.train.steps {
            return Err(InteropError::Unfinished { run: dir.to_path_buf(), step: ck.progress.step, steps: cfg.train.steps });
        }
        ck.check_config(&cfg)?;
        let data = PreparedData::prepare(&cfg.data)?;
        ck.check_data(&data)?;
        let model = ck.load_model(cfg.model.init(device))?;
        let hashing = crate::train::engram_hashing(&cfg.model, &data)?;
        let mut hosts = crate::train::engram_hosts(&cfg.model, hashing.as_ref(), cfg.train.seed, dir, true)?;
        ck.load_tables(&mut hosts.iter_mut().map(EngramHost::table_mut).collect::<Vec<_>>())?;
        Ok(Self { dir: dir.to_path_buf(), cfg, data, model, hosts })
    }

    fn check_exportable(&self) -> Result<(), InteropError> {
        if let Some(e) = &self.cfg.model.engram {
            if e.control != EngramControl::None {
                return Err(InteropError::Unsupported(format!("the run uses the {:?} control: its row ids are not the reference hash's", e.control)));
            }
        }
        Ok(())
    }
}

/// One tensor of a file being written.
struct Entry {
    name: String,
    dtype: &'static str,
    shape: Vec<usize>,
    payload: Payload,
}

enum Payload {
    Bytes(Vec<u8>),
    /// Engram layer `i`'s table, streamed.
    Table(usize),
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i64_bytes(v: impl IntoIterator<Item = i64>) -> Vec<u8> {
    v.into_iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn tensor_f32<const D: usize>(t: Tensor<D>) -> (Vec<usize>, Vec<f32>) {
    let shape = t.dims().to_vec();
    (shape, t.into_data().convert::<f32>().try_into_vec::<f32>().expect("an f32 tensor"))
}

fn push_f32<const D: usize>(out: &mut Vec<Entry>, name: String, t: Tensor<D>) {
    let (shape, v) = tensor_f32(t);
    out.push(Entry { name, dtype: "F32", shape, payload: Payload::Bytes(f32_bytes(&v)) });
}

/// Write `entries` as one safetensors file at `path` (atomically: a temporary file renamed
/// into place), streaming table payloads from `hosts`.
fn write_safetensors(path: &Path, entries: &[Entry], metadata: &BTreeMap<String, String>, hosts: &[EngramHost]) -> Result<(), InteropError> {
    let byte_len = |e: &Entry| -> usize {
        match &e.payload {
            Payload::Bytes(b) => b.len(),
            Payload::Table(_) => e.shape.iter().product::<usize>() * 4,
        }
    };
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::to_value(metadata).expect("strings"));
    let mut at = 0usize;
    for e in entries {
        let n = byte_len(e);
        header.insert(e.name.clone(), serde_json::json!({ "dtype": e.dtype, "shape": e.shape, "data_offsets": [at, at + n] }));
        at += n;
    }
    let mut head = serde_json::to_vec(&serde_json::Value::Object(header)).expect("a JSON map");
    // The data starts 8-byte aligned (as the safetensors crate writes it).
    while (8 + head.len()) % 8 != 0 {
        head.push(b' ');
    }
    let mut table_err = None;
    write_atomic_with(path, |w| {
        w.write_all(&(head.len() as u64).to_le_bytes())?;
        w.write_all(&head)?;
        let mut rows = Vec::new();
        let mut ids: Vec<u32> = Vec::new();
        for e in entries {
            match &e.payload {
                Payload::Bytes(b) => w.write_all(b)?,
                Payload::Table(i) => {
                    let table = hosts[*i].table();
                    let n = table.rows();
                    for lo in (0..n).step_by(TABLE_CHUNK_ROWS) {
                        ids.clear();
                        ids.extend(lo as u32..(lo + TABLE_CHUNK_ROWS).min(n) as u32);
                        if let Err(err) = table.gather(&ids, &mut rows) {
                            table_err = Some(err);
                            return Err(std::io::Error::other("reading the table failed"));
                        }
                        w.write_all(&f32_bytes(&rows))?;
                    }
                }
            }
        }
        Ok(())
    })
    .map_err(|e| match table_err.take() {
        Some(t) => InteropError::Unsupported(format!("reading a table for {}: {t}", path.display())),
        None => e.into(),
    })
}

/// What [`export`] wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExportSummary {
    /// The file.
    pub path: PathBuf,
    /// Its tensors.
    pub tensors: usize,
    /// Its size in bytes.
    pub bytes: u64,
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialisable")
}

/// How an Engram parameter is laid out in the file relative to burn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileLayout {
    /// As in burn.
    Same,
    /// A `Linear` weight: burn `[in, out]`, the file PyTorch's `[out, in]`.
    Transposed,
    /// The depthwise conv weight: burn `[C, k]`, the file PyTorch's `[C, 1, k]`.
    Conv,
}

/// The file name (under `engram.L.`) and layout of the Engram layer parameter at `suffix`,
/// its burn module path inside the layer (`value.weight`, `keys.0.bias`, `conv_weight` …).
fn engram_file_name(suffix: &str) -> Option<(String, FileLayout)> {
    if suffix == "conv_weight" {
        return Some(("short_conv.conv.weight".into(), FileLayout::Conv));
    }
    let (head, leaf) = suffix.rsplit_once('.')?;
    let (module, index) = match head.split_once('.') {
        Some((m, i)) => (m, Some(i)),
        None => (head, None),
    };
    let linear = |name: String| match leaf {
        "weight" => Some((format!("{name}.weight"), FileLayout::Transposed)),
        "bias" => Some((format!("{name}.bias"), FileLayout::Same)),
        _ => None,
    };
    let norm = |name: String| (leaf == "gamma").then(|| (format!("{name}.weight"), FileLayout::Same));
    match (module, index) {
        ("value", None) => linear("value_proj".into()),
        ("keys", Some(m)) => linear(format!("key_projs.{m}")),
        ("norm_key", Some(m)) => norm(format!("norm1.{m}")),
        ("norm_query", Some(m)) => norm(format!("norm2.{m}")),
        ("conv_norm", Some(m)) => norm(format!("short_conv.norms.{m}")),
        _ => None,
    }
}

/// `[rows, cols]` row-major → `[cols, rows]`.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = v[r * cols + c];
        }
    }
    t
}

/// Where a model parameter goes in the file: the file tensor's name and layout. Parameters of
/// the Engram layer in block `blocks[l]` go under `engram.l.`, the others under `backbone.`.
fn file_name_of(path: &str, blocks: &[usize]) -> Result<(String, FileLayout), InteropError> {
    for (l, b) in blocks.iter().enumerate() {
        if let Some(suffix) = path.strip_prefix(&format!("blocks.{b}.engram.")) {
            return engram_file_name(suffix)
                .map(|(name, layout)| (format!("engram.{l}.{name}"), layout))
                .ok_or_else(|| InteropError::Unsupported(format!("the Engram parameter {path} has no name in the exported format")));
        }
    }
    Ok((format!("backbone.{path}"), FileLayout::Same))
}

/// The hash constants and layer settings of a model with Engram (the `engram.*` metadata keys),
/// with the run's config and tokenizer: what [`export`] writes and [`import`] checks.
fn metadata_of(cfg: &ExperimentConfig, data: &PreparedData, hasher: Option<&NgramHasher>, model: &Transformer) -> BTreeMap<String, String> {
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), FORMAT.to_string());
    meta.insert("config".into(), json(cfg));
    meta.insert("tokenizer.kind".into(), cfg.data.tokenizer.name().to_string());
    meta.insert("tokenizer.sha256".into(), data.tokenizer_sha256.clone().unwrap_or_default());
    let (Some(e), Some(hasher)) = (&cfg.model.engram, hasher) else { return meta };
    let hc = hasher.config();
    meta.insert("engram.layer_ids".into(), json(&hc.layer_ids));
    meta.insert("engram.max_ngram_size".into(), hc.max_ngram_size.to_string());
    meta.insert("engram.n_head_per_ngram".into(), hc.n_head_per_ngram.to_string());
    meta.insert("engram.seed".into(), hc.seed.to_string());
    meta.insert("engram.pad_id".into(), data.pad_id.to_string());
    meta.insert("engram.pad_compressed".into(), hasher.pad_compressed().to_string());
    meta.insert("engram.compressed_vocab_size".into(), hasher.compressed_vocab_size().to_string());
    meta.insert("engram.d_head".into(), e.d_head.to_string());
    meta.insert("engram.hc_mult".into(), e.hc_mult.to_string());
    meta.insert("engram.kernel_size".into(), e.kernel_size.to_string());
    meta.insert("engram.gate".into(), e.gate.to_string());
    meta.insert("engram.short_conv".into(), e.short_conv.to_string());
    meta.insert("engram.norm_eps_gate".into(), format!("{:e}", crate::engram::GATE_NORM_EPS));
    meta.insert("engram.norm_eps_conv".into(), format!("{:e}", crate::engram::SHORT_CONV_NORM_EPS));
    let dilation = model.blocks.iter().find_map(|b| b.engram.as_ref()).map_or(0, |g| g.dilation);
    meta.insert("engram.dilation".into(), dilation.to_string());
    for (l, layer) in hasher.layers().iter().enumerate() {
        meta.insert(format!("engram.{l}.multipliers"), json(&layer.multipliers));
        meta.insert(format!("engram.{l}.half_bound"), layer.half_bound.to_string());
        meta.insert(format!("engram.{l}.primes"), json(&layer.primes));
        meta.insert(format!("engram.{l}.offsets"), json(&layer.offsets));
        meta.insert(format!("engram.{l}.total_rows"), layer.total_rows.to_string());
    }
    meta
}

/// The compression map as exported: model id → compressed id (the identity without
/// compression).
fn compression_map(cfg: &ExperimentConfig, data: &PreparedData) -> Vec<i64> {
    match &cfg.model.engram {
        Some(e) if e.compression => data.compression.iter().map(|&c| i64::from(c)).collect(),
        _ => (0..data.vocab_size as i64).collect(),
    }
}

/// The blocks that hold an Engram layer, in order.
fn engram_blocks(model: &Transformer) -> Vec<usize> {
    model.blocks.iter().enumerate().filter(|(_, b)| b.engram.is_some()).map(|(i, _)| i).collect()
}

/// Export `run` to the safetensors file `out` (see the module docs for its contents).
pub fn export(run: &LoadedRun, out: &Path) -> Result<ExportSummary, InteropError> {
    run.check_exportable()?;
    let hasher = run.hosts.first().map(EngramHost::hasher);
    let meta = metadata_of(&run.cfg, &run.data, hasher, &run.model);
    let blocks = engram_blocks(&run.model);
    let mut entries = Vec::new();
    // Every parameter by module path: the backbone's as burn holds them, the Engram layers'
    // under the demo's names in PyTorch layouts.
    for t in run.model.collect(None, None, true) {
        let (path, dtype, shape, _, bytes) = t.into_parts().map_err(|e| InteropError::Unsupported(format!("reading a model tensor: {e:?}")))?;
        if dtype != burn::tensor::DType::F32 {
            return Err(InteropError::Unsupported(format!("model tensor {path} has dtype {dtype:?}; only f32 is exported")));
        }
        let (name, layout) = file_name_of(&path, &blocks)?;
        let shape = shape.to_vec();
        let (shape, bytes) = match (layout, &shape[..]) {
            (FileLayout::Same, _) => (shape, bytes.to_vec()),
            (FileLayout::Transposed, &[i, o]) => {
                let v: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
                (vec![o, i], f32_bytes(&transpose(&v, i, o)))
            }
            (FileLayout::Conv, &[c, k]) => (vec![c, 1, k], bytes.to_vec()),
            _ => return Err(InteropError::Unsupported(format!("model tensor {path} has shape {shape:?}, not 2-D"))),
        };
        entries.push(Entry { name, dtype: "F32", shape, payload: Payload::Bytes(bytes) });
    }
    if let Some(hasher) = hasher {
        let compress = compression_map(&run.cfg, &run.data);
        entries.push(Entry { name: "engram.compression_map".into(), dtype: "I64", shape: vec![compress.len()], payload: Payload::Bytes(i64_bytes(compress)) });
        for l in 0..hasher.layers().len() {
            let table = run.hosts[l].table();
            entries.push(Entry { name: table_name(l), dtype: "F32", shape: vec![table.rows(), table.dim()], payload: Payload::Table(l) });
        }
    }
    write_safetensors(out, &entries, &meta, &run.hosts)?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(ExportSummary { path: out.to_path_buf(), tensors: entries.len(), bytes })
}

/// The file name of Engram layer `l`'s table.
fn table_name(l: usize) -> String {
    format!("engram.{l}.multi_head_embedding.embedding.weight")
}

/// Model token ids of `text` (the run's tokenizer; one sequence, no boundary token).
pub fn encode_text(run: &LoadedRun, text: &str) -> Result<Vec<u32>, InteropError> {
    if text.is_empty() {
        return Err(InteropError::Probe("the text is empty".into()));
    }
    if run.data.vocab.is_some() {
        return Err(InteropError::Unsupported(format!("probing a run on the remapped {} tokenizer is not supported; use the corpus BPE or bytes", run.cfg.data.tokenizer.name())));
    }
    let tok = run.cfg.data.load_tokenizer().map_err(|e| InteropError::Probe(e.to_string()))?;
    let ids = tok.encode(text);
    if ids.len() > run.cfg.model.max_seq_len {
        return Err(InteropError::Probe(format!("{} tokens, more than the model's context of {}; shorten it", ids.len(), run.cfg.model.max_seq_len)));
    }
    Ok(ids)
}

/// Write the probe of `text` (see the module docs) to the safetensors file `out`.
pub fn probe(run: &LoadedRun, text: &str, out: &Path, device: &Device) -> Result<usize, InteropError> {
    run.check_exportable()?;
    let ids = encode_text(run, text)?;
    let t = ids.len();
    let mut entries = vec![Entry { name: "input_ids".into(), dtype: "I64", shape: vec![t], payload: Payload::Bytes(i64_bytes(ids.iter().map(|&x| x as i64))) }];
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "engram-rs-probe/1".to_string());
    meta.insert("text".into(), text.to_string());
    let mut memories = Vec::new();
    for host in &run.hosts {
        let look = host.lookup(&ids, [1, t], device).map_err(|e| InteropError::Probe(e.to_string()))?;
        let heads = host.heads();
        entries.push(Entry { name: format!("rows.{}", memories.len()), dtype: "I64", shape: vec![t, heads], payload: Payload::Bytes(i64_bytes(look.rows().iter().map(|&r| r as i64))) });
        memories.push(look.into_memory());
    }
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids.iter().map(|&x| x as i32).collect::<Vec<_>>(), [1, t]), device);
    let model = &run.model;
    let mut x = model.embed.forward(tokens);
    let mut l = 0;
    for block in &model.blocks {
        let mem = if let Some(g) = &block.engram {
            let mem = memories[l].embeddings();
            let d = x.dims()[2];
            let h = x.clone().reshape([1, t, 1, d]);
            let y = g.forward(h.clone(), mem.clone());
            let m = y.dims()[2];
            push_f32(&mut entries, format!("hidden_in.{l}"), h.reshape([t, m, d]));
            push_f32(&mut entries, format!("engram_out.{l}"), y.reshape([t, m, d]));
            l += 1;
            Some(mem)
        } else {
            None
        };
        x = block.forward_with_aux(x, mem, &model.rope).0;
    }
    write_safetensors(out, &entries, &meta, &[])?;
    Ok(t)
}
