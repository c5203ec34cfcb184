//! The exported file's layout: where each model parameter goes and in which layout, the
//! hash-constant metadata, and the constants both directions share.

use std::collections::BTreeMap;

use super::error::InteropError;
use crate::config::ExperimentConfig;
use crate::data::PreparedData;
use crate::hashing::NgramHasher;
use crate::model::Transformer;

/// Rows of a table written or read per chunk (a few MB at most).
pub(super) const TABLE_CHUNK_ROWS: usize = 1 << 16;
/// The `format` metadata value of an exported model.
pub const FORMAT: &str = "engram-rs/1";

/// Compact JSON of `v`.
pub(super) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialisable")
}

/// How an Engram parameter is laid out in the file relative to burn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FileLayout {
    /// As in burn.
    Same,
    /// A `Linear` weight: burn `[in, out]`, the file PyTorch's `[out, in]`.
    Transposed,
    /// The depthwise conv weight: burn `[C, k]`, the file PyTorch's `[C, 1, k]`.
    Conv,
}

/// The file name (under `engram.L.`) and layout of the Engram layer parameter at `suffix`,
/// its burn module path inside the layer (`value.weight`, `keys.0.bias`, `conv_weight` …).
pub(super) fn engram_file_name(suffix: &str) -> Option<(String, FileLayout)> {
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
pub(super) fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
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
pub(super) fn file_name_of(path: &str, blocks: &[usize]) -> Result<(String, FileLayout), InteropError> {
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
pub(super) fn metadata_of(cfg: &ExperimentConfig, data: &PreparedData, hasher: Option<&NgramHasher>, model: &Transformer) -> BTreeMap<String, String> {
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
pub(super) fn compression_map(cfg: &ExperimentConfig, data: &PreparedData) -> Vec<i64> {
    match &cfg.model.engram {
        Some(e) if e.compression => data.compression.iter().map(|&c| i64::from(c)).collect(),
        _ => (0..data.vocab_size as i64).collect(),
    }
}

/// The blocks that hold an Engram layer, in order.
pub(super) fn engram_blocks(model: &Transformer) -> Vec<usize> {
    model.blocks.iter().enumerate().filter(|(_, b)| b.engram.is_some()).map(|(i, _)| i).collect()
}


/// The file name of Engram layer `l`'s table.
pub(super) fn table_name(l: usize) -> String {
    format!("engram.{l}.multi_head_embedding.embedding.weight")
}

