//! The one training loop every experiment uses.
//!
//! AdamW for the backbone (warmup + cosine schedule); the Engram tables in their own optimiser
//! — lazy Adam at `table_lr_mult ×` the backbone rate, no weight decay (spec §6) — updated only
//! on the rows the batch touched ([`crate::table`]). Periodic evaluation on held-out books.
//! Every run writes its own directory: `config.json` (before training), `metrics.csv`
//! (appended as training goes) and `summary.json`. With [`RunOptions::checkpoints`] it also
//! keeps `checkpoint/` ([`crate::checkpoint`]) every `train.checkpoint_every` steps and at the
//! end, and [`RunOptions::resume`] continues a run from it with the same batches and updates.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, Progress};
use crate::cost::{cost, Cost};
use crate::data::batcher::{Batcher, EngramHashing, HostBatch};
use crate::data::{DataConfig, PreparedData};
use crate::engram::{EngramConfig, EngramMemory};
use crate::eval::{plan_windows, subset, BookScore, EvalReport, EvalWindow};
use crate::hashing::{default_rng, NgramHasher, Pcg64};
use crate::model::{ModelConfig, Transformer};
use crate::turns::Turn;
use crate::table::{EngramTable, TableBlock, UpdateMode};
use crate::ConfigError;

/// Optimisation and evaluation settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Sequences per batch.
    pub batch_size: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Peak backbone learning rate.
    pub lr: f64,
    /// Final learning rate as a fraction of `lr` (cosine floor).
    pub min_lr_ratio: f64,
    /// Linear warmup steps.
    pub warmup_steps: usize,
    /// AdamW decoupled weight decay of the backbone.
    pub weight_decay: f32,
    /// AdamW β1.
    pub beta1: f32,
    /// AdamW β2.
    pub beta2: f32,
    /// AdamW ε.
    pub eps: f32,
    /// Evaluate every this many steps (and at the end).
    pub eval_every: usize,
    /// Windows of each periodic evaluation: a fixed, evenly spaced subset of the final
    /// evaluation's windows ([`crate::eval::subset`]). The final evaluation scores every
    /// held-out byte once, whatever this is.
    pub eval_windows: usize,
    /// Stride of the evaluation windows (`null`: `seq_len / 2`): every window after a book's
    /// first scores only its last `stride` targets, so each scored token has at least
    /// `seq_len − stride` tokens of context ([`crate::eval`]).
    #[serde(default)]
    pub eval_stride: Option<usize>,
    /// Seed of the initialisation and the data sampler.
    pub seed: u64,
    /// Write the run's checkpoint every this many steps (0: only at the end), in runs that
    /// write checkpoints ([`RunOptions::checkpoints`]).
    #[serde(default)]
    pub checkpoint_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 300,
            batch_size: 16,
            seq_len: 64,
            lr: 3e-3,
            min_lr_ratio: 0.1,
            warmup_steps: 30,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            eval_every: 100,
            eval_windows: 128,
            eval_stride: None,
            seed: 0,
            checkpoint_every: 0,
        }
    }
}

impl TrainConfig {
    /// Check every field; the error names the field, its value and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let pos = |name: &str, v: usize| if v == 0 { Err(ConfigError::new(name, v, ">= 1")) } else { Ok(()) };
        pos("train.steps", self.steps)?;
        pos("train.batch_size", self.batch_size)?;
        pos("train.seq_len", self.seq_len)?;
        pos("train.eval_every", self.eval_every)?;
        pos("train.eval_windows", self.eval_windows)?;
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(ConfigError::new("train.lr", self.lr, "a finite number > 0"));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(ConfigError::new("train.min_lr_ratio", self.min_lr_ratio, "0 <= x <= 1"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(ConfigError::new("train.weight_decay", self.weight_decay, "a finite number >= 0"));
        }
        for (name, b) in [("train.beta1", self.beta1), ("train.beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(ConfigError::new(name, b, "0 <= x < 1"));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(ConfigError::new("train.eps", self.eps, "a finite number > 0"));
        }
        if let Some(s) = self.eval_stride {
            if s == 0 || s > self.seq_len {
                return Err(ConfigError::new("train.eval_stride", s, format!("null (seq_len / 2) or 1..=train.seq_len = {}", self.seq_len)));
            }
        }
        if self.checkpoint_every > self.steps {
            let allowed = format!("0 (only at the end) or 1..=train.steps = {}", self.steps);
            return Err(ConfigError::new("train.checkpoint_every", self.checkpoint_every, allowed));
        }
        Ok(())
    }

    /// The evaluation stride: `eval_stride`, or half the window (at least 1).
    pub fn stride(&self) -> usize {
        self.eval_stride.unwrap_or((self.seq_len / 2).max(1))
    }

    /// Learning rate at `step` (0-based): linear warmup to `lr`, cosine decay to
    /// `min_lr_ratio · lr` at the last step.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let floor = self.lr * self.min_lr_ratio;
        floor + 0.5 * (self.lr - floor) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// One run: a name, a model, its training and its data.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Run name (also its directory name in experiments).
    pub name: String,
    /// The model.
    pub model: ModelConfig,
    /// Optimisation.
    pub train: TrainConfig,
    /// Corpus and tokenisation.
    pub data: DataConfig,
}

/// Names of the [`ExperimentConfig::preset`]s.
pub const PRESET_NAMES: [&str; 3] = ["tiny", "small", "bytes"];

impl ExperimentConfig {
    /// Preset `tiny`, a run of seconds on a CPU (tests, smoke runs): D 32, 2 blocks, Engram at
    /// block 0 (2 orders × 4 heads of ~1,024-row tables, d_head 8), the 512-id corpus BPE, 40
    /// steps of 4 × 32 tokens, evaluation every 20 steps, a checkpoint every 10.
    pub fn tiny() -> Self {
        const VOCAB: usize = 512;
        const SEQ_LEN: usize = 32;
        let engram = EngramConfig { layer_ids: vec![0], table_size: vec![1_024, 1_024], d_head: 8, ..EngramConfig::default() };
        Self {
            name: "tiny".into(),
            model: ModelConfig::new(VOCAB, 32, 2, 2, SEQ_LEN).with_engram(engram),
            train: TrainConfig {
                steps: 40,
                batch_size: 4,
                seq_len: SEQ_LEN,
                warmup_steps: 4,
                eval_every: 20,
                eval_windows: 8,
                checkpoint_every: 10,
                ..TrainConfig::default()
            },
            data: DataConfig { vocab_size: VOCAB, ..DataConfig::default() },
        }
    }

    /// Preset `small`, minutes on a CPU: the `small` model (D 128, 4 blocks) with Engram at
    /// block 1 (~8,192-row tables), the 4,096-id corpus BPE, 600 steps of 16 × 64 tokens, a
    /// checkpoint every 100 steps.
    pub fn small() -> Self {
        const VOCAB: usize = 4_096;
        const SEQ_LEN: usize = 64;
        let engram = EngramConfig { layer_ids: vec![1], table_size: vec![8_192, 8_192], ..EngramConfig::default() };
        Self {
            name: "small".into(),
            model: ModelConfig::small(VOCAB, SEQ_LEN).with_engram(engram),
            train: TrainConfig {
                steps: 600,
                batch_size: 16,
                seq_len: SEQ_LEN,
                warmup_steps: 40,
                eval_every: 100,
                eval_windows: 256,
                checkpoint_every: 100,
                ..TrainConfig::default()
            },
            data: DataConfig { vocab_size: VOCAB, ..DataConfig::default() },
        }
    }

    /// Preset `bytes`, the byte-level counterpart of `small` (to compare with byte-level
    /// results elsewhere): 256 byte ids, windows of 256 bytes (about the text of `small`'s 64
    /// tokens), Engram at block 1 on byte 2- to 4-grams, 600 steps of 16 × 256 bytes.
    pub fn bytes() -> Self {
        const SEQ_LEN: usize = 256;
        let data = DataConfig::bytes();
        let engram = EngramConfig { layer_ids: vec![1], max_ngram_size: 4, table_size: vec![8_192, 8_192, 8_192], ..EngramConfig::default() };
        Self {
            name: "bytes".into(),
            model: ModelConfig::small(data.vocab_size, SEQ_LEN).with_engram(engram),
            train: TrainConfig {
                steps: 600,
                batch_size: 16,
                seq_len: SEQ_LEN,
                warmup_steps: 40,
                eval_every: 100,
                eval_windows: 64,
                checkpoint_every: 100,
                ..TrainConfig::default()
            },
            data,
        }
    }

    /// The preset called `name` (one of [`PRESET_NAMES`]).
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "tiny" => Some(Self::tiny()),
            "small" => Some(Self::small()),
            "bytes" => Some(Self::bytes()),
            _ => None,
        }
    }

    /// Check every field, and that the model fits the data.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.model.validate()?;
        self.train.validate()?;
        self.data.validate()?;
        if self.model.vocab_size != self.data.vocab_size {
            return Err(ConfigError::new(
                "model.vocab_size",
                self.model.vocab_size,
                format!("equal to data.vocab_size = {}", self.data.vocab_size),
            ));
        }
        if self.train.seq_len > self.model.max_seq_len {
            return Err(ConfigError::new("train.seq_len", self.train.seq_len, format!("<= model.max_seq_len = {}", self.model.max_seq_len)));
        }
        Ok(())
    }
}

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// I/O on the run directory.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Hashing failed (e.g. an id outside the compressed vocabulary).
    #[error(transparent)]
    Hash(#[from] crate::hashing::HashError),
    /// A table operation failed.
    #[error(transparent)]
    Table(#[from] crate::table::TableError),
    /// The held-out books do not fit the evaluation windows.
    #[error(transparent)]
    Eval(#[from] crate::eval::EvalError),
    /// The data is too short for the windows.
    #[error("{split} split has {len} tokens, fewer than one window of seq_len + 1 = {need}")]
    DataTooShort {
        /// "train" or "validation".
        split: &'static str,
        /// Its tokens.
        len: usize,
        /// Tokens needed.
        need: usize,
    },
    /// The loss became NaN or infinite.
    #[error("training diverged: loss is {loss} at step {step}")]
    NonFiniteLoss {
        /// The step.
        step: usize,
        /// The loss.
        loss: f32,
    },
    /// Writing, reading or applying a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// JSON (de)serialisation.
    #[error("{path}: {source}")]
    Json {
        /// The path.
        path: PathBuf,
        /// The error.
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io { path: path.to_path_buf(), source }
}

/// Write `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Write `value` as pretty JSON to `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TrainError> {
    let s = serde_json::to_string_pretty(value).map_err(|source| TrainError::Json { path: path.to_path_buf(), source })?;
    write_atomic(path, s.as_bytes())
}

/// One row of `metrics.csv`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MetricRow {
    /// Steps done.
    pub step: usize,
    /// Training tokens seen.
    pub tokens: u64,
    /// Mean training loss since the previous row.
    pub train_loss: f32,
    /// Validation loss in nats per token (NaN when not evaluated at this row).
    pub val_loss: f32,
    /// Validation bits per byte (NaN when not evaluated at this row).
    pub val_bpb: f32,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Seconds since the start of training (evaluation included).
    pub elapsed_seconds: f64,
}

/// Header of `metrics.csv`. Every column but the last, `elapsed_seconds` (wall-clock time), is
/// bit-identical between two runs of the same config and seed on the same backend, and between
/// a resumed run and an uninterrupted one. `val_loss` and `val_bpb` of the last row come from
/// the final evaluation (every held-out byte); earlier ones from the fixed subset of
/// `train.eval_windows` windows.
pub const METRICS_HEADER: &str = "step,tokens,train_loss,val_loss,val_bpb,lr,elapsed_seconds";

impl MetricRow {
    fn csv(&self) -> String {
        format!("{},{},{},{},{},{},{:.3}", self.step, self.tokens, self.train_loss, self.val_loss, self.val_bpb, self.lr, self.elapsed_seconds)
    }
}

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

/// How [`run`] reports progress.
#[derive(Clone, Debug, Default)]
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
}

/// Build the batcher's hashing for a model, from the prepared data.
pub fn engram_hashing(model: &ModelConfig, data: &PreparedData) -> Result<Option<EngramHashing>, TrainError> {
    let Some(e) = &model.engram else { return Ok(None) };
    let (compress, v_prime) = if e.compression {
        (data.compression.clone(), data.compressed_vocab_size as u64)
    } else {
        ((0..data.vocab_size as u32).collect(), data.vocab_size as u64)
    };
    let pad_c = compress[data.pad_id as usize];
    let mut hash_cfg = e.hash_config(data.pad_id);
    // The hasher walks primes in `layer_ids` order; the model's blocks run in ascending order.
    hash_cfg.layer_ids.sort_unstable();
    let hasher = NgramHasher::new(&hash_cfg, v_prime, pad_c)?;
    Ok(Some(EngramHashing { hasher, compress, control: e.control }))
}

fn upload_batch(batch: &HostBatch, device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let to_t = |v: &[u32]| {
        let ids: Vec<i32> = v.iter().map(|&x| x as i32).collect();
        Tensor::<2, Int>::from_data(TensorData::new(ids, [batch.batch, batch.seq_len]), device)
    };
    (to_t(&batch.inputs), to_t(&batch.targets))
}

/// Each Engram layer's rows of `batch`, gathered from its table.
fn gather_rows(batch: &HostBatch, tables: &[EngramTable]) -> Result<Vec<Vec<f32>>, TrainError> {
    let mut out = Vec::with_capacity(tables.len());
    for (layer, table) in batch.layers.iter().zip(tables) {
        let mut rows = Vec::new();
        table.gather(&layer.uniq, &mut rows)?;
        out.push(rows);
    }
    Ok(out)
}

/// The layers' memories of `batch` on `device`, from their gathered `rows` ([`gather_rows`]).
fn upload_memories(batch: &HostBatch, rows: Vec<Vec<f32>>, tables: &[EngramTable], heads: usize, device: &Device, track: bool) -> Vec<EngramMemory> {
    (rows.into_iter().zip(&batch.layers).zip(tables))
        .map(|((rows, layer), table)| EngramMemory::upload(rows, table.dim(), &layer.inverse, batch.batch, batch.seq_len, heads, device, track))
        .collect()
}

/// A training batch made ahead of its step, with its rows already gathered from the tables.
struct Prepared {
    batch: HostBatch,
    /// Gathered rows, one buffer per Engram layer.
    rows: Vec<Vec<f32>>,
    /// The sampling generator after this batch's window starts were drawn.
    rng: Pcg64,
}

/// Rows of a table's update per [`TableBlock`] (see [`EngramTable::update_then_gather`]).
const TABLE_BLOCK_ROWS: usize = 512;

/// Run queued table blocks until none is left.
fn run_blocks(queue: &Mutex<Vec<TableBlock<'_>>>) {
    loop {
        let block = queue.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let Some(block) = block else { break };
        block.run();
    }
}

/// Score `windows` of the held-out stream ([`crate::eval`]): the summed loss, tokens and bytes
/// of the targets each window scores, overall and per book. Windows run `batcher.batch` at a
/// time; the last batch is filled up with windows that score nothing.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &Transformer,
    batcher: &mut Batcher,
    tables: &[EngramTable],
    data: &PreparedData,
    windows: &[EvalWindow],
    device: &Device,
    zero_memory: bool,
) -> Result<EvalReport, TrainError> {
    let heads = batcher.engram().map(|e| e.hasher.heads_per_layer()).unwrap_or(0);
    let (b, t, v) = (batcher.batch, batcher.seq_len, data.vocab_size);
    let mut report = EvalReport::new(&data.val_books);
    let mut batch = HostBatch::default();
    for chunk in windows.chunks(b) {
        let mut starts: Vec<usize> = chunk.iter().map(|w| w.start).collect();
        starts.resize(b, chunk[0].start);
        batcher.make(&data.val, &starts, &mut batch)?;
        let (x, _) = upload_batch(&batch, device);
        let mems = upload_memories(&batch, gather_rows(&batch, tables)?, tables, heads, device, false);
        let logits = model.forward(x, &mems, zero_memory); // [B, T, V]
        let mut logits = logits.into_data().try_into_vec::<f32>().expect("logits are f32");
        for (i, w) in chunk.iter().enumerate() {
            for p in w.score_from..t {
                let row = (i * t + p) * v;
                let target = batch.targets[i * t + p] as usize;
                let nats = crate::ops::xent::softmax_cross_entropy_rows(&mut logits[row..row + v], v, &[target], None);
                report.add(w.book, nats, data.val_token_bytes[w.start + 1 + p]);
            }
        }
    }
    report.finish();
    Ok(report)
}

/// Remove what an earlier run in `out_dir` left that a fresh run would not replace at once:
/// its `summary.json` and its checkpoint.
fn remove_stale_results(out_dir: &Path) -> Result<(), TrainError> {
    let summary = out_dir.join("summary.json");
    match std::fs::remove_file(&summary) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&summary)(e)),
        _ => {}
    }
    let ckpt = out_dir.join(checkpoint::CHECKPOINT_DIR);
    if ckpt.exists() {
        std::fs::remove_dir_all(&ckpt).map_err(io_err(&ckpt))?;
    }
    Ok(())
}

/// Train one model as `cfg` says, writing `out_dir/{config.json, metrics.csv, summary.json}`
/// (and `checkpoint/` when `opts.checkpoints`); with `opts.resume`, continue the run whose
/// checkpoint is in `out_dir`.
pub fn run(cfg: &ExperimentConfig, data: &PreparedData, device: &Device, out_dir: &Path, opts: &RunOptions) -> Result<RunResult, TrainError> {
    cfg.validate()?;
    if cfg.model.vocab_size != data.vocab_size {
        return Err(ConfigError::new(
            "model.vocab_size",
            cfg.model.vocab_size,
            format!("the prepared data's vocabulary size, {} (the corpus has fewer distinct tokens than data.vocab_size)", data.vocab_size),
        )
        .into());
    }
    let tc = &cfg.train;
    for (split, len) in [("train", data.train.len()), ("validation", data.val.len())] {
        if len < tc.seq_len + 1 {
            return Err(TrainError::DataTooShort { split, len, need: tc.seq_len + 1 });
        }
    }
    let setup_turn = opts.turns.as_deref().map(Turn::hold);
    let data_fingerprint = checkpoint::data_fingerprint(data);
    // Everything a resumed run needs is read and checked before anything is written.
    let resume_from = if opts.resume {
        let ck = checkpoint::read(out_dir)?;
        ck.check_config(cfg)?;
        ck.check_data(data)?;
        Some(ck)
    } else {
        std::fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
        remove_stale_results(out_dir)?;
        write_json(&out_dir.join("config.json"), cfg)?;
        None
    };
    let t_start = Instant::now();

    let train_device = device.clone().autodiff();
    train_device.seed(tc.seed);
    let mut model = cfg.model.init(&train_device);
    let hashing = engram_hashing(&cfg.model, data)?;
    let heads = hashing.as_ref().map(|h| h.hasher.heads_per_layer()).unwrap_or(0);
    let table_rows: Vec<usize> = hashing.as_ref().map(|h| h.table_rows()).unwrap_or_default();
    let ecfg = cfg.model.engram.clone();
    let mut tables: Vec<EngramTable> = match &ecfg {
        Some(e) => table_rows
            .iter()
            .enumerate()
            .map(|(i, &rows)| EngramTable::new(rows, e.d_head, e.table_init_std, tc.seed.wrapping_mul(0x9E37_79B9).wrapping_add(1 + i as u64)))
            .collect(),
        None => Vec::new(),
    };
    let run_cost = cost(&cfg.model, tc.seq_len, &table_rows.iter().map(|&r| r as u64).collect::<Vec<_>>());
    let mut batcher = Batcher::new(tc.batch_size, tc.seq_len, hashing);
    let mut optim = AdamWConfig::new()
        .with_beta_1(tc.beta1)
        .with_beta_2(tc.beta2)
        .with_epsilon(tc.eps)
        .with_weight_decay(tc.weight_decay)
        .init();
    let mut progress = Progress::start(default_rng(tc.seed));
    if let Some(ck) = resume_from {
        model = ck.load_model(model)?;
        optim = ck.load_optimizer(optim)?;
        ck.load_tables(&mut tables)?;
        progress = ck.progress;
    }
    let Progress {
        step: start_step,
        mut rng,
        mut loss_sum,
        mut loss_n,
        last_train_loss: mut last_train,
        mut train_seconds,
        elapsed_seconds: elapsed_before,
        mut step_times,
        rows: mut curve,
    } = progress;
    let final_windows = plan_windows(&data.val_books, tc.seq_len, tc.stride())?;
    let subset_windows = subset(&final_windows, tc.eval_windows);
    let mut final_eval: Option<(EvalReport, f64)> = None;

    let metrics_path = out_dir.join("metrics.csv");
    // The file starts as exactly the rows of the state training starts from (none, or the
    // checkpoint's); later rows are appended as they are logged.
    let mut text = format!("{METRICS_HEADER}\n");
    for row in &curve {
        text.push_str(&row.csv());
        text.push('\n');
    }
    write_atomic(&metrics_path, text.as_bytes())?;
    let mut metrics = std::fs::OpenOptions::new().append(true).open(&metrics_path).map_err(io_err(&metrics_path))?;

    let bar = if opts.progress { indicatif::ProgressBar::new(tc.steps as u64) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} {msg}")
            .expect("static template is valid")
            .progress_chars("=> "),
    );
    bar.set_prefix(cfg.name.clone());
    bar.set_position(start_step as u64);
    let interactive = opts.progress && !bar.is_hidden();

    let mut batch = HostBatch::default();
    // The next step's batch when the second core prepared it, and a batch whose buffers it
    // reuses.
    let mut prepared: Option<Prepared> = None;
    let mut spare_batch = HostBatch::default();
    let tokens_per_step = (tc.batch_size * tc.seq_len) as u64;
    let t_train = Instant::now();
    let eval_device = device.clone().without_autodiff();
    drop(setup_turn);
    for step in start_step..tc.steps {
        let _turn = opts.turns.as_deref().map(Turn::hold);
        let t0 = Instant::now();
        let lr = tc.lr_at(step);
        let rows = match prepared.take() {
            Some(p) => {
                batch = p.batch;
                rng = p.rng;
                p.rows
            }
            None => {
                let starts = batcher.sample_starts(data.train.len(), &mut rng);
                batcher.make(&data.train, &starts, &mut batch)?;
                gather_rows(&batch, &tables)?
            }
        };
        let mems = upload_memories(&batch, rows, &tables, heads, &train_device, true);
        let (x, y) = upload_batch(&batch, &train_device);
        let (ce, aux) = model.loss_with_aux(x, y, &mems, false);
        let loss_value = ce.clone().into_scalar::<f32>(); // logged: the cross-entropy alone
        let loss = match (aux, &cfg.model.moe) {
            (Some(aux), Some(moe)) => ce + aux * moe.aux_loss_coef as f32,
            _ => ce,
        };
        if !loss_value.is_finite() {
            bar.abandon();
            return Err(TrainError::NonFiniteLoss { step: step + 1, loss: loss_value });
        }
        let grads = loss.backward();
        let row_grads: Vec<Vec<f32>> = mems
            .iter()
            .map(|mem| {
                let g = mem.rows.grad(&grads).expect("the gathered rows are an autodiff leaf used by the loss");
                g.into_data().try_into_vec::<f32>().expect("gradients are f32")
            })
            .collect();
        let grads = GradientsParams::from_grads(grads, &model);
        // The tables' update and the backbone's are independent: with a second core, the
        // tables update on it (and, below, share out the rest) while the backbone's optimizer
        // runs here.
        let update_tables = |tables: &mut Vec<EngramTable>| -> Result<(), TrainError> {
            if let Some(e) = &ecfg {
                for ((table, layer), g) in tables.iter_mut().zip(&batch.layers).zip(&row_grads) {
                    table.adam_step(&layer.uniq, g, (lr * e.table_lr_mult) as f32, &e.table_adam, e.update)?;
                }
            }
            Ok(())
        };
        if tables.is_empty() || opts.sequential || crate::runtime::n_threads() < 2 {
            update_tables(&mut tables)?;
            model = optim.step(lr, model, grads);
        } else {
            // The second core makes the next step's batch (from a copy of the generator: `rng`
            // advances when the next step takes the batch, so a checkpoint written at the end
            // of this step holds the state before that draw), then updates the tables and
            // gathers the next batch's rows from them. With the row-sparse update, these two
            // run as blocks of rows ([`EngramTable::update_then_gather`]) that this thread
            // helps with once the backbone's optimiser is done. The same values in the same
            // order as a sequential step, so results are bit-identical.
            let e = ecfg.as_ref().expect("tables exist only with an Engram config");
            let (last, table_lr) = (step + 1 == tc.steps, (lr * e.table_lr_mult) as f32);
            let queue = Mutex::new(Vec::new());
            let mut next_rng = rng.clone();
            let mut next_batch = std::mem::take(&mut spare_batch);
            let mut next_rows: Vec<Vec<f32>> = Vec::new();
            let (stepped, made) = std::thread::scope(|scope| {
                let (tables, queue, batcher, this_batch, row_grads) = (&mut tables, &queue, &mut batcher, &batch, &row_grads);
                let (next_batch, next_rows, next_rng) = (&mut next_batch, &mut next_rows, &mut next_rng);
                let worker = scope.spawn(move || -> Result<bool, TrainError> {
                    let starts = batcher.sample_starts(data.train.len(), next_rng);
                    if last || batcher.make(&data.train, &starts, next_batch).is_err() {
                        // Nothing to prepare, or an error the next step reports itself.
                        update_tables(tables)?;
                        return Ok(false);
                    }
                    let next: &HostBatch = next_batch;
                    if e.update == UpdateMode::Sparse {
                        next_rows.resize_with(tables.len(), Vec::new);
                        let mut blocks = Vec::new();
                        for (((table, layer), g), (next_layer, out)) in
                            tables.iter_mut().zip(&this_batch.layers).zip(row_grads).zip(next.layers.iter().zip(next_rows.iter_mut()))
                        {
                            blocks.extend(table.update_then_gather(&layer.uniq, g, table_lr, &e.table_adam, &next_layer.uniq, out, TABLE_BLOCK_ROWS)?);
                        }
                        *queue.lock().unwrap_or_else(PoisonError::into_inner) = blocks;
                        run_blocks(queue);
                    } else {
                        update_tables(tables)?;
                        *next_rows = gather_rows(next, tables)?;
                    }
                    Ok(true)
                });
                let stepped = optim.step(lr, model, grads);
                run_blocks(queue);
                (stepped, worker.join().expect("table update panicked"))
            });
            model = stepped;
            if made? {
                prepared = Some(Prepared { batch: next_batch, rows: next_rows, rng: next_rng });
            }
            spare_batch = std::mem::take(&mut batch);
        }
        let dt = t0.elapsed().as_secs_f64();
        step_times.push(dt);
        train_seconds += dt;
        loss_sum += loss_value as f64;
        loss_n += 1;
        bar.inc(1);
        bar.set_message(format!("loss {:.3}  {:.0} tok/s", loss_value, tokens_per_step as f64 / dt));

        let done = step + 1;
        let eval_now = done % tc.eval_every == 0 || done == tc.steps;
        let log_now = eval_now || done % (tc.eval_every / 4).max(1) == 0;
        if log_now {
            last_train = (loss_sum / loss_n as f64) as f32;
            let (val_loss, val_bpb) = if eval_now {
                let valid = model.valid();
                let t_eval = Instant::now();
                let windows = if done == tc.steps { &final_windows } else { &subset_windows };
                let r = evaluate(&valid, &mut batcher, &tables, data, windows, &eval_device, false)?;
                let scores = (r.loss() as f32, r.bpb() as f32);
                if done == tc.steps {
                    final_eval = Some((r, t_eval.elapsed().as_secs_f64()));
                }
                scores
            } else {
                (f32::NAN, f32::NAN)
            };
            let row = MetricRow {
                step: done,
                tokens: done as u64 * tokens_per_step,
                train_loss: last_train,
                val_loss,
                val_bpb,
                lr,
                elapsed_seconds: elapsed_before + t_train.elapsed().as_secs_f64(),
            };
            writeln!(metrics, "{}", row.csv()).map_err(io_err(&metrics_path))?;
            if eval_now {
                let set = if done == tc.steps { "all held-out bytes" } else { "subset" };
                let line = format!("{:>14} step {:>5}  train {:.4}  val {:.4} ({:.4} bpb, {set})  lr {:.2e}", cfg.name, done, last_train, val_loss, val_bpb, lr);
                if interactive {
                    bar.println(line);
                } else if opts.progress {
                    eprintln!("{line}");
                }
            }
            curve.push(row);
            loss_sum = 0.0;
            loss_n = 0;
        }
        let checkpoint_now = done == tc.steps || (tc.checkpoint_every > 0 && done % tc.checkpoint_every == 0);
        if opts.checkpoints && checkpoint_now {
            let state = Progress {
                step: done,
                rng: rng.clone(),
                loss_sum,
                loss_n,
                last_train_loss: last_train,
                train_seconds,
                elapsed_seconds: elapsed_before + t_train.elapsed().as_secs_f64(),
                step_times: step_times.clone(),
                rows: curve.clone(),
            };
            checkpoint::write(out_dir, cfg, data_fingerprint, &state, &model, &optim, &tables)?;
        }
    }
    let _final_turn = opts.turns.as_deref().map(Turn::hold);
    metrics.sync_all().map_err(io_err(&metrics_path))?;
    bar.finish_and_clear();
    let valid = model.valid();
    // A run resumed from its final checkpoint has no final evaluation in memory: redo it.
    let (final_report, mut eval_seconds) = match final_eval {
        Some(f) => f,
        None => {
            let t_eval = Instant::now();
            let r = evaluate(&valid, &mut batcher, &tables, data, &final_windows, &eval_device, false)?;
            (r, t_eval.elapsed().as_secs_f64())
        }
    };
    let memory_off = if opts.eval_memory_off && !tables.is_empty() {
        let t_eval = Instant::now();
        let r = evaluate(&valid, &mut batcher, &tables, data, &final_windows, &eval_device, true)?;
        eval_seconds += t_eval.elapsed().as_secs_f64();
        Some(r)
    } else {
        None
    };
    let mut sorted = step_times.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let result = RunResult {
        name: cfg.name.clone(),
        variant: if cfg.model.engram.is_some() { "engram" } else { "baseline" }.to_string(),
        cost: run_cost,
        train_tokens: tc.steps as u64 * tokens_per_step,
        val_loss: final_report.loss() as f32,
        val_bpb: final_report.bpb(),
        val_bytes: final_report.bytes,
        val_tokens: final_report.tokens,
        val_books: final_report.books.clone(),
        val_loss_memory_off: memory_off.as_ref().map(|r| r.loss() as f32),
        val_bpb_memory_off: memory_off.as_ref().map(EvalReport::bpb),
        eval_seconds,
        epochs: (tc.steps as u64 * tokens_per_step) as f64 / data.train.len() as f64,
        data: DataStats::of(data),
        final_train_loss: last_train,
        tokens_per_sec: (tc.steps as u64 * tokens_per_step) as f64 / train_seconds.max(1e-9),
        median_step_seconds: sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN),
        step_seconds: step_times.clone(),
        wall_seconds: elapsed_before + t_start.elapsed().as_secs_f64(),
        steps: tc.steps,
        seed: tc.seed,
        curve,
    };
    write_json(&out_dir.join("summary.json"), &result)?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let tc = TrainConfig { steps: 100, warmup_steps: 10, lr: 1.0, min_lr_ratio: 0.1, ..TrainConfig::default() };
        assert!((tc.lr_at(0) - 0.1).abs() < 1e-12);
        assert!((tc.lr_at(9) - 1.0).abs() < 1e-12);
        assert!((tc.lr_at(10) - 1.0).abs() < 1e-12);
        assert!((tc.lr_at(100) - 0.1).abs() < 1e-12);
        assert!((1..100).all(|s| tc.lr_at(s) <= 1.0 && tc.lr_at(s) >= 0.1));
    }

    #[test]
    fn validation_names_the_field() {
        let tc = TrainConfig { lr: 0.0, ..TrainConfig::default() };
        assert!(tc.validate().unwrap_err().to_string().contains("train.lr"));
        let tc = TrainConfig { batch_size: 0, ..TrainConfig::default() };
        assert!(tc.validate().unwrap_err().to_string().contains("train.batch_size"));
    }
}
