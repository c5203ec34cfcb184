//! `engram export` and the probe: a finished run to safetensors (see the parent module for
//! the format), written by a streaming writer so a file-backed table is never in memory whole.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::store::ModuleSnapshot;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::error::InteropError;
use super::format::{compression_map, engram_blocks, file_name_of, metadata_of, table_name, transpose, FileLayout, TABLE_CHUNK_ROWS};
use crate::engram::{EngramControl, EngramHost};
use crate::run_dir::write_atomic_with;
use crate::train::{LoadError, LoadedRun};

fn check_exportable(run: &LoadedRun) -> Result<(), InteropError> {
    if run.cfg.model.bigram_hash.is_some() {
        return Err(InteropError::Unsupported("the model has a BigramHash input table, which the format does not hold".into()));
    }
    if let Some(e) = &run.cfg.model.engram {
        if e.control != EngramControl::None {
            return Err(InteropError::Unsupported(format!("the run uses the {:?} control: its layer is not the reference's", e.control)));
        }
    }
    Ok(())
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
    while !(8 + head.len()).is_multiple_of(8) {
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


/// Export `run` to the safetensors file `out` (see the module docs for its contents).
pub fn export(run: &LoadedRun, out: &Path) -> Result<ExportSummary, InteropError> {
    check_exportable(run)?;
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

/// Model token ids of the probe text `text` (the run's tokenizer; one sequence, no boundary
/// token), at most the model's context.
pub fn encode_text(run: &LoadedRun, text: &str) -> Result<Vec<u32>, InteropError> {
    let ids = run.encode(text).map_err(|e| match e {
        LoadError::Text(m) => InteropError::Probe(m),
        other => other.into(),
    })?;
    if ids.len() > run.cfg.model.max_seq_len {
        return Err(InteropError::Probe(format!("{} tokens, more than the model's context of {}; shorten it", ids.len(), run.cfg.model.max_seq_len)));
    }
    Ok(ids)
}

/// Write the probe of `text`, whose ids [`encode_text`] gave, (see the module docs) to the
/// safetensors file `out`.
pub fn probe(run: &LoadedRun, text: &str, ids: &[u32], out: &Path, device: &Device) -> Result<usize, InteropError> {
    check_exportable(run)?;
    let t = ids.len();
    let mut entries = vec![Entry { name: "input_ids".into(), dtype: "I64", shape: vec![t], payload: Payload::Bytes(i64_bytes(ids.iter().map(|&x| x as i64))) }];
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "engram-rs-probe/1".to_string());
    meta.insert("text".into(), text.to_string());
    let mut memories = Vec::new();
    for host in &run.hosts {
        let look = host.lookup(ids, [1, t], device).map_err(|e| InteropError::Probe(e.to_string()))?;
        let heads = host.heads();
        entries.push(Entry { name: format!("rows.{}", memories.len()), dtype: "I64", shape: vec![t, heads], payload: Payload::Bytes(i64_bytes(look.rows().iter().map(|&r| r as i64))) });
        memories.push(look.into_memory());
    }
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids.iter().map(|&x| x as i32).collect::<Vec<_>>(), [1, t]), device);
    let model = &run.model;
    let mut x = model.enter(tokens); // [1, T, M, D]
    let mut l = 0;
    for block in &model.blocks {
        x = match &block.engram {
            Some(g) => {
                let [_, _, m, d] = x.dims();
                let y = g.forward(x.clone(), memories[l].embeddings());
                push_f32(&mut entries, format!("hidden_in.{l}"), x.clone().reshape([t, m, d]));
                push_f32(&mut entries, format!("engram_out.{l}"), y.clone().reshape([t, m, d]));
                l += 1;
                // The rest of the block on x + Y: the layer is computed once.
                block.sublayers(x + y, &model.rope).0
            }
            None => block.forward_streams(x, None, &model.rope).0,
        };
    }
    write_safetensors(out, &entries, &meta, &[])?;
    Ok(t)
}
