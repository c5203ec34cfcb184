//! What a run is asked for ([`RunOptions`]) and what it measured ([`RunResult`], the run's
//! `summary.json`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cost::Cost;
use crate::data::PreparedData;
use crate::eval::BookScore;
use crate::metrics::MetricRow;
use crate::turns::Turn;

/// What a run measured; also written as the run's `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    /// Run name.
    pub name: String,
    /// "baseline" or "engram".
    pub variant: String,
    /// Parameters, bytes, FLOPs.
    pub cost: Cost,
    /// Training tokens seen.
    pub train_tokens: u64,
    /// Final validation loss, nats per token over every held-out token.
    pub val_loss: f32,
    /// Final validation bits per byte over every held-out byte (the headline metric).
    pub val_bpb: f64,
    /// Bytes the final evaluation scored (the held-out books' bytes).
    pub val_bytes: u64,
    /// Tokens the final evaluation scored.
    pub val_tokens: u64,
    /// The final evaluation per held-out book.
    pub val_books: Vec<BookScore>,
    /// Final validation loss (nats per token) with the Engram memory zeroed (Engram runs only).
    pub val_loss_memory_off: Option<f32>,
    /// Final bits per byte with the Engram memory zeroed (Engram runs only).
    pub val_bpb_memory_off: Option<f64>,
    /// Seconds of the final evaluation (with memory off, if run, included).
    pub eval_seconds: f64,
    /// Training tokens seen over the training stream's length.
    pub epochs: f64,
    /// Tokenizer, vocabulary and the training mix of the data.
    pub data: DataStats,
    /// Mean training loss over the last logging interval.
    pub final_train_loss: f32,
    /// Training throughput (tokens per second of training steps, evaluation excluded).
    pub tokens_per_sec: f64,
    /// Median seconds per training step.
    pub median_step_seconds: f64,
    /// Seconds of every training step, in order (evaluation excluded).
    #[serde(default)]
    pub step_seconds: Vec<f64>,
    /// Wall time of the whole run.
    pub wall_seconds: f64,
    /// Steps run.
    pub steps: usize,
    /// Seed.
    pub seed: u64,
    /// The metrics rows.
    pub curve: Vec<MetricRow>,
    /// With mHC: the amax gain of the trained stack on the first held-out windows (one
    /// evaluation batch), the mHC paper's stability measure ([`crate::model::AmaxGain`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mhc_amax_gain: Option<crate::model::AmaxGain>,
}

/// What a run's data was: written into its `summary.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DataStats {
    /// Tokenizer name.
    pub tokenizer: String,
    /// sha256 of the tokenizer file (corpus BPE).
    pub tokenizer_sha256: Option<String>,
    /// Model vocabulary size.
    pub vocab_size: usize,
    /// V', compressed ids.
    pub compressed_vocab_size: u32,
    /// Tokens of the training stream.
    pub train_stream_tokens: u64,
    /// Bytes of the training books.
    pub train_bytes: u64,
    /// Tokens of the held-out stream (boundaries included).
    pub val_stream_tokens: u64,
    /// Bytes of the held-out books.
    pub val_bytes: u64,
    /// Fraction of held-out tokens that are the unknown id.
    pub val_unk_fraction: f64,
    /// Training books: name, bytes, share of the training bytes.
    pub train_mix: Vec<(String, u64, f64)>,
}

impl DataStats {
    /// The stats of prepared data.
    pub fn of(data: &PreparedData) -> Self {
        Self {
            tokenizer: data.config.tokenizer.name().to_string(),
            tokenizer_sha256: data.tokenizer_sha256.clone(),
            vocab_size: data.vocab_size,
            compressed_vocab_size: data.compressed_vocab_size,
            train_stream_tokens: data.train.len() as u64,
            train_bytes: data.train_books.iter().map(|b| b.bytes as u64).sum(),
            val_stream_tokens: data.val.len() as u64,
            val_bytes: data.val_bytes() as u64,
            val_unk_fraction: data.val_unk_fraction,
            train_mix: data.train_mix().into_iter().map(|(n, b, f)| (n, b as u64, f)).collect(),
        }
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { progress: false, eval_memory_off: false, checkpoints: false, resume: false, turns: None, sequential: false, prefetch_tables: true, evict_tables: false, release_memory: false }
    }
}

/// How [`run`] reports progress.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Show a progress bar (on a terminal) and print evaluation lines.
    pub progress: bool,
    /// Also evaluate with the Engram memory zeroed at the end.
    pub eval_memory_off: bool,
    /// Keep `out_dir/checkpoint/` every `train.checkpoint_every` steps and at the end.
    pub checkpoints: bool,
    /// Continue from `out_dir/checkpoint/` (written with the same config and data) instead of
    /// starting afresh: the same batches and updates as an uninterrupted run.
    pub resume: bool,
    /// Take turns with other runs in other threads (interleaved timing): hold the turn for the
    /// set-up, each step and the final evaluation. See [`crate::turns`].
    pub turns: Option<Arc<Turn>>,
    /// Run each step on this thread alone. By default, with two or more cores, the Engram
    /// tables' update and the next step's batch (hashing and gathering its rows) run on a
    /// second core while the backbone's optimiser steps; the results are bit-identical either
    /// way.
    pub sequential: bool,
    /// Whether the second core prefetches file-backed tables' rows while the backbone computes
    /// ([`crate::table::EngramTable::prefetch`]); otherwise the rows are read and created when
    /// the tables' update needs them. Results are bit-identical either way.
    pub prefetch_tables: bool,
    /// Drop the file-backed tables' pages from memory before every step (a benchmark of cold
    /// reads; the eviction itself is not in the step time).
    pub evict_tables: bool,
    /// Return the allocator's free memory to the kernel after every step
    /// ([`crate::runtime::release_free_memory`]; not in the step time), so that the process's
    /// peak resident set measures the memory the run uses, not what the allocator keeps.
    pub release_memory: bool,
}
