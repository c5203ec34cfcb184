//! What a trained model's Engram layers do on a text: per token, layer and residual stream,
//! the gate and the size of the memory's contribution against the stream, and per token and
//! layer the rows (n-grams) read ([`TextInspection`]); written as JSON, a self-contained HTML
//! page ([`page`]) and a PNG heatmap ([`heatmap`]).
//!
//! A model with mHC runs on M residual streams and its Engram layers have one gate per stream
//! (one key projection and pair of norms each, [`crate::engram::Engram::gate_values`]), so
//! each layer holds one [`StreamInspection`] per stream; without mHC, exactly one. The rows
//! read depend only on the tokens, so the streams share them. In `inspect.json`:
//! `layers[l].streams[s].gate[t]` is the gate of token `t` on stream `s` of Engram layer `l`,
//! `layers[l].reads[t]` the rows that token read.

pub mod heatmap;
pub mod page;
pub mod stats;

use serde::{Deserialize, Serialize};

/// What `engram inspect --text` measured on one text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextInspection {
    /// The run directory inspected.
    pub run: String,
    /// The text.
    pub text: String,
    /// Its tokens, in order.
    pub tokens: Vec<TokenPiece>,
    /// One entry per Engram layer, in block order.
    pub layers: Vec<LayerInspection>,
}

/// One token of the text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenPiece {
    /// The model's token id.
    pub id: u32,
    /// What it decodes to (lossy UTF-8: a token holding part of a character shows U+FFFD).
    pub text: String,
}

/// One Engram layer on the text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerInspection {
    /// The Engram layer's index (0-based, in block order).
    pub layer: usize,
    /// The block it sits in.
    pub block: usize,
    /// One entry per residual stream, `streams[s]` for stream `s` (M entries with mHC's M
    /// streams, one without).
    pub streams: Vec<StreamInspection>,
    /// The rows read per token (one entry per token), one per head (orders 2..=N, heads within
    /// an order); shared by the streams.
    pub reads: Vec<Vec<RowRead>>,
}

/// One residual stream of one Engram layer on the text (one entry per token in each vector).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamInspection {
    /// The gate α ∈ [0, 1] per token (1 everywhere when the run has no gate).
    pub gate: Vec<f32>,
    /// ‖Y‖₂ per token: the layer's output on this stream, added to it.
    pub memory_norm: Vec<f32>,
    /// ‖h‖₂ per token: this stream entering the layer.
    pub residual_norm: Vec<f32>,
}

/// One table row read for one token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowRead {
    /// The n-gram order.
    pub n: usize,
    /// The head within the order.
    pub head: usize,
    /// The row, absolute in the layer's table.
    pub row: u32,
    /// The n-gram's token pieces, earliest first; positions before the text are `"<pad>"`.
    pub ngram: Vec<String>,
}

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::train::{LoadError, LoadedRun};

/// Why a run could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Loading the run or encoding the text.
    #[error(transparent)]
    Run(#[from] LoadError),
    /// The text.
    #[error("--text: {0}")]
    Text(String),
    /// Hashing or reading the tables.
    #[error(transparent)]
    Engram(#[from] crate::engram::EngramError),
    /// The run has no Engram layer.
    #[error("{0} has no Engram layer to inspect")]
    NoEngram(String),
    /// Writing the outputs.
    #[error(transparent)]
    Write(#[from] crate::run_dir::RunDirError),
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 values")
}

/// ‖x_{t,m}‖₂ per position and stream of `x` (`[B, T, M, D]`), `[B·T, M]` row-major.
fn norms(x: Tensor<4>) -> Vec<f32> {
    let d = x.dims()[3];
    values(x).chunks_exact(d).map(|r| r.iter().map(|a| a * a).sum::<f32>().sqrt()).collect()
}

/// One Engram layer on a batch of sequences, position by position and stream by stream.
pub(crate) struct LayerPass {
    /// The block it sits in.
    pub(crate) block: usize,
    /// Residual streams M.
    pub(crate) streams: usize,
    /// The gate, `[B·T, M]`.
    pub(crate) gate: Vec<f32>,
    /// ‖Y‖ per stream, `[B·T, M]`.
    pub(crate) memory_norm: Vec<f32>,
    /// ‖h‖ per stream, `[B·T, M]`.
    pub(crate) residual_norm: Vec<f32>,
    /// The rows read, `[B·T, heads]`.
    pub(crate) rows: Vec<u32>,
}

impl LayerPass {
    /// Column `s` of a `[B·T, M]` measure: stream `s` position by position, `[B·T]`.
    fn stream(&self, v: &[f32], s: usize) -> Vec<f32> {
        v.iter().skip(s).step_by(self.streams).copied().collect()
    }
}

/// The model's forward pass over `ids` (`[B, T]`, each sequence from position 0), block by
/// block as [`crate::model::Block::forward_streams`] computes it, recording at every Engram
/// layer the gate, ‖Y‖ and ‖h‖ of every residual stream, and the rows read.
pub(crate) fn engram_pass(run: &LoadedRun, ids: &[u32], [b, t]: [usize; 2], device: &Device) -> Result<Vec<LayerPass>, InspectError> {
    let mut looks = Vec::new();
    for host in &run.hosts {
        looks.push(host.lookup(ids, [b, t], device)?);
    }
    let input = Tensor::<2, Int>::from_data(TensorData::new(ids.iter().map(|&x| x as i32).collect::<Vec<_>>(), [b, t]), device);
    let model = &run.model;
    let mut x = model.enter(input); // [B, T, M, D]
    let mut out = Vec::new();
    for (k, block) in model.blocks.iter().enumerate() {
        x = match &block.engram {
            Some(g) => {
                let look = &looks[out.len()];
                let mem = look.memory().embeddings();
                let streams = x.dims()[2];
                let gate = values(g.gate_values(x.clone(), mem.clone())); // [B, T, M]
                let y = g.forward(x.clone(), mem);
                out.push(LayerPass { block: k, streams, gate, memory_norm: norms(y.clone()), residual_norm: norms(x.clone()), rows: look.rows().to_vec() });
                // The rest of the block on x + Y: the layer is computed once.
                block.sublayers(x + y, &model.rope).0
            }
            None => block.forward_streams(x, None, &model.rope).0,
        };
    }
    Ok(out)
}

/// What every Engram layer of `run` does on `text` (one sequence from position 0, at most the
/// model's context): per token and residual stream, the gate and ‖Y‖ against ‖h‖; per token,
/// the rows read. The forward pass is the model's own ([`crate::model::Block::forward_streams`]
/// block by block), so the numbers are those of the model on that input.
pub fn inspect_text(run: &LoadedRun, text: &str, device: &Device) -> Result<TextInspection, InspectError> {
    if run.hosts.is_empty() {
        return Err(InspectError::NoEngram(run.dir.display().to_string()));
    }
    let ids = run.encode(text).map_err(|e| match e {
        LoadError::Text(m) => InspectError::Text(m),
        other => other.into(),
    })?;
    let ctx = run.cfg.model.max_seq_len;
    if ids.len() > ctx {
        return Err(InspectError::Text(format!("{} tokens, more than the model's context of {ctx}; shorten it", ids.len())));
    }
    let tok = run.tokenizer()?;
    let piece = |id: u32| String::from_utf8_lossy(&tok.decode_bytes(id).unwrap_or_default()).into_owned();
    let tokens: Vec<TokenPiece> = ids.iter().map(|&id| TokenPiece { id, text: piece(id) }).collect();
    let t = ids.len();
    let per_order = run.hosts[0].hasher().config().n_head_per_ngram;
    let layers = engram_pass(run, &ids, [1, t], device)?
        .into_iter()
        .enumerate()
        .map(|(l, pass)| {
            let heads = pass.rows.len() / t;
            let reads = (0..t)
                .map(|p| {
                    (0..heads)
                        .map(|k| {
                            let n = 2 + k / per_order;
                            let ngram = (0..n).rev().map(|back| if p >= back { tokens[p - back].text.clone() } else { "<pad>".to_string() }).collect();
                            RowRead { n, head: k % per_order, row: pass.rows[p * heads + k], ngram }
                        })
                        .collect()
                })
                .collect();
            let streams = (0..pass.streams)
                .map(|s| StreamInspection { gate: pass.stream(&pass.gate, s), memory_norm: pass.stream(&pass.memory_norm, s), residual_norm: pass.stream(&pass.residual_norm, s) })
                .collect();
            LayerInspection { layer: l, block: pass.block, streams, reads }
        })
        .collect();
    Ok(TextInspection { run: run.dir.display().to_string(), text: text.to_string(), tokens, layers })
}
