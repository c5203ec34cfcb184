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
use crate::config::ExperimentConfig;
use crate::metrics::{MetricRow, METRICS_HEADER};
use crate::cost::{cost, Cost};
use crate::data::batcher::{Batcher, EngramHashing, HostBatch};
use crate::data::PreparedData;
use crate::engram::{EngramError, EngramHost, EngramMemory, HostLookup, TableOptim};
use crate::eval::{plan_windows, subset, BookScore, EvalReport, EvalWindow};
use crate::hashing::{default_rng, NgramHasher, Pcg64};
use crate::model::{ModelConfig, Transformer};
use crate::turns::Turn;
use crate::table::{EngramTable, TableBlock};
use crate::run_dir::{write_atomic, write_json, RunDirError, RunDirLock};
use crate::ConfigError;

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// I/O on the run directory.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The run directory's lock or an atomic write failed.
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// Hashing failed (e.g. an id outside the compressed vocabulary).
    #[error(transparent)]
    Hash(#[from] crate::hashing::HashError),
    /// A table operation failed.
    #[error(transparent)]
    Table(#[from] crate::table::TableError),
    /// An Engram layer's lookup or table step failed.
    #[error(transparent)]
    Engram(#[from] EngramError),
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

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> TrainError + 'p {
    move |source| TrainError::Io { action, path: path.to_path_buf(), source }
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

/// Each Engram layer's lookup of `batch`, whose rows the batcher hashed (on the second core,
/// a step ahead): moved out of the batch, not yet gathered.
fn host_lookups(batch: &mut HostBatch, hosts: &[EngramHost]) -> Vec<HostLookup> {
    let (b, t) = (batch.batch, batch.seq_len);
    (batch.layers.iter_mut().zip(hosts))
        .map(|(l, h)| {
            let (rows, uniq, inverse) = (std::mem::take(&mut l.rows), std::mem::take(&mut l.uniq), std::mem::take(&mut l.inverse));
            HostLookup { batch: b, seq_len: t, heads: h.heads(), rows, uniq, inverse, d_head: 0, values: Vec::new() }
        })
        .collect()
}

/// Each Engram layer's lookup of `batch`, gathered from its table.
fn gather_lookups(batch: &mut HostBatch, hosts: &[EngramHost]) -> Result<Vec<HostLookup>, TrainError> {
    let mut looks = host_lookups(batch, hosts);
    for (look, h) in looks.iter_mut().zip(hosts) {
        h.gather(look)?;
    }
    Ok(looks)
}

/// A training batch made ahead of its step, with its rows already gathered from the tables.
struct Prepared {
    batch: HostBatch,
    /// Gathered lookups, one per Engram layer.
    looks: Vec<HostLookup>,
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
/// of the targets each window scores, overall and per book. Windows run [`EVAL_BATCH`] (or the
/// training batch, if larger) at a time; the last batch is filled up with windows that score
/// nothing.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &Transformer,
    batcher: &mut Batcher,
    hosts: &[EngramHost],
    data: &PreparedData,
    windows: &[EvalWindow],
    device: &Device,
    zero_memory: bool,
) -> Result<EvalReport, TrainError> {
    // Larger batches than training's: the forward pass alone needs less memory, and fewer,
    // larger products are faster. The batcher is set back to the training batch size below.
    let train_batch = batcher.batch;
    let (b, t, v) = (train_batch.max(EVAL_BATCH), batcher.seq_len, data.vocab_size);
    batcher.batch = b;
    let report = (|| -> Result<EvalReport, TrainError> {
        let mut report = EvalReport::new(&data.val_books);
        let mut batch = HostBatch::default();
        for chunk in windows.chunks(b) {
            let mut starts: Vec<usize> = chunk.iter().map(|w| w.start).collect();
            starts.resize(b, chunk[0].start);
            batcher.make(&data.val, &starts, &mut batch)?;
            let (x, _) = upload_batch(&batch, device);
            let mems: Vec<EngramMemory> = gather_lookups(&mut batch, hosts)?.into_iter().map(|l| l.upload(device).into_memory()).collect();
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
    })();
    batcher.batch = train_batch;
    report
}

/// Windows per forward pass of [`evaluate`] (at least the training batch).
const EVAL_BATCH: usize = 64;

/// Remove what an earlier run in `out_dir` left that a fresh run would not replace at once:
/// its `summary.json` and its checkpoint.
fn remove_stale_results(out_dir: &Path) -> Result<(), TrainError> {
    let summary = out_dir.join("summary.json");
    match std::fs::remove_file(&summary) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err("remove", &summary)(e)),
        _ => {}
    }
    let ckpt = out_dir.join(checkpoint::CHECKPOINT_DIR);
    if ckpt.exists() {
        std::fs::remove_dir_all(&ckpt).map_err(io_err("remove", &ckpt))?;
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
    // One process per run directory: a second one is refused here, before it reads or
    // writes anything.
    let _lock = RunDirLock::acquire(out_dir)?;
    let setup_turn = opts.turns.as_deref().map(Turn::hold);
    let data_fingerprint = checkpoint::data_fingerprint(data);
    // Everything a resumed run needs is read and checked before anything is written.
    let resume_from = if opts.resume {
        let ck = checkpoint::read(out_dir)?;
        ck.check_config(cfg)?;
        ck.check_data(data)?;
        Some(ck)
    } else {
        std::fs::create_dir_all(out_dir).map_err(io_err("create", out_dir))?;
        remove_stale_results(out_dir)?;
        write_json(&out_dir.join("config.json"), cfg)?;
        None
    };
    let t_start = Instant::now();

    let train_device = device.clone().autodiff();
    train_device.seed(tc.seed);
    let mut model = cfg.model.init(&train_device);
    let hashing = engram_hashing(&cfg.model, data)?;
    let table_rows: Vec<usize> = hashing.as_ref().map(|h| h.table_rows()).unwrap_or_default();
    let ecfg = cfg.model.engram.clone();
    let mut hosts: Vec<EngramHost> = match (&ecfg, &hashing) {
        (Some(e), Some(h)) => {
            let (hasher, compress): (Arc<NgramHasher>, Arc<[u32]>) = (Arc::new(h.hasher.clone()), h.compress.clone().into());
            let optim = TableOptim { lr_mult: e.table_lr_mult, adam: e.table_adam, update: e.update };
            (table_rows.iter().enumerate())
                .map(|(i, &rows)| {
                    let table = EngramTable::new(rows, e.d_head, e.table_init_std, tc.seed.wrapping_mul(0x9E37_79B9).wrapping_add(1 + i as u64));
                    EngramHost::new(hasher.clone(), i, compress.clone(), table, optim)
                })
                .collect::<Result<_, EngramError>>()?
        }
        _ => Vec::new(),
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
        ck.load_tables(&mut hosts.iter_mut().map(EngramHost::table_mut).collect::<Vec<_>>())?;
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
    let mut metrics = std::fs::OpenOptions::new().append(true).open(&metrics_path).map_err(io_err("open", &metrics_path))?;

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
        let looks = match prepared.take() {
            Some(p) => {
                batch = p.batch;
                rng = p.rng;
                p.looks
            }
            None => {
                let starts = batcher.sample_starts(data.train.len(), &mut rng);
                batcher.make(&data.train, &starts, &mut batch)?;
                gather_lookups(&mut batch, &hosts)?
            }
        };
        let looks: Vec<_> = looks.into_iter().map(|l| l.upload(&train_device)).collect();
        let mems: Vec<EngramMemory> = looks.iter().map(|l| l.memory().clone()).collect();
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
        let row_grads: Vec<Vec<f32>> = looks.iter().map(|l| l.row_grads(&grads)).collect::<Result<_, _>>()?;
        let grads = GradientsParams::from_grads(grads, &model);
        // The tables' update and the backbone's are independent: with a second core, the
        // tables update on it (and, below, share out the rest) while the backbone's optimizer
        // runs here.
        let update_tables = |hosts: &mut Vec<EngramHost>| -> Result<(), TrainError> {
            for ((host, look), g) in hosts.iter_mut().zip(&looks).zip(&row_grads) {
                host.step_rows(look.uniq(), g, lr)?;
            }
            Ok(())
        };
        if hosts.is_empty() || opts.sequential || crate::runtime::n_threads() < 2 {
            update_tables(&mut hosts)?;
            model = optim.step(lr, model, grads);
        } else {
            // The second core makes the next step's batch (from a copy of the generator: `rng`
            // advances when the next step takes the batch, so a checkpoint written at the end
            // of this step holds the state before that draw), then updates the tables and
            // gathers the next batch's rows from them. With the row-sparse update, these two
            // run as blocks of rows ([`EngramHost::step_then_gather`]) that this thread
            // helps with once the backbone's optimiser is done. The same values in the same
            // order as a sequential step, so results are bit-identical.
            let last = step + 1 == tc.steps;
            let queue = Mutex::new(Vec::new());
            let mut next_rng = rng.clone();
            let mut next_batch = std::mem::take(&mut spare_batch);
            let mut next_looks: Vec<HostLookup> = Vec::new();
            let (stepped, made) = std::thread::scope(|scope| {
                let (hosts, queue, batcher, looks, row_grads) = (&mut hosts, &queue, &mut batcher, &looks, &row_grads);
                let (next_batch, next_looks, next_rng) = (&mut next_batch, &mut next_looks, &mut next_rng);
                let worker = scope.spawn(move || -> Result<bool, TrainError> {
                    let starts = batcher.sample_starts(data.train.len(), next_rng);
                    if last || batcher.make(&data.train, &starts, next_batch).is_err() {
                        // Nothing to prepare, or an error the next step reports itself.
                        update_tables(hosts)?;
                        return Ok(false);
                    }
                    *next_looks = host_lookups(next_batch, hosts);
                    let mut blocks = Vec::new();
                    for ((host, look), (g, next)) in hosts.iter_mut().zip(looks).zip(row_grads.iter().zip(next_looks.iter_mut())) {
                        blocks.extend(host.step_then_gather(look.uniq(), g, lr, next, TABLE_BLOCK_ROWS)?);
                    }
                    *queue.lock().unwrap_or_else(PoisonError::into_inner) = blocks;
                    run_blocks(queue);
                    Ok(true)
                });
                let stepped = optim.step(lr, model, grads);
                run_blocks(queue);
                (stepped, worker.join().expect("table update panicked"))
            });
            model = stepped;
            if made? {
                prepared = Some(Prepared { batch: next_batch, looks: next_looks, rng: next_rng });
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
                let r = evaluate(&valid, &mut batcher, &hosts, data, windows, &eval_device, false)?;
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
            writeln!(metrics, "{}", row.csv()).map_err(io_err("append to", &metrics_path))?;
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
            checkpoint::write(out_dir, cfg, data_fingerprint, &state, &model, &optim, &hosts.iter().map(EngramHost::table).collect::<Vec<_>>())?;
        }
    }
    let _final_turn = opts.turns.as_deref().map(Turn::hold);
    metrics.sync_all().map_err(io_err("sync", &metrics_path))?;
    bar.finish_and_clear();
    let valid = model.valid();
    // A run resumed from its final checkpoint has no final evaluation in memory: redo it.
    let (final_report, mut eval_seconds) = match final_eval {
        Some(f) => f,
        None => {
            let t_eval = Instant::now();
            let r = evaluate(&valid, &mut batcher, &hosts, data, &final_windows, &eval_device, false)?;
            (r, t_eval.elapsed().as_secs_f64())
        }
    };
    let memory_off = if opts.eval_memory_off && !hosts.is_empty() {
        let t_eval = Instant::now();
        let r = evaluate(&valid, &mut batcher, &hosts, data, &final_windows, &eval_device, true)?;
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
