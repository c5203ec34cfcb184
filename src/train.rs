//! The one training loop every experiment uses.
//!
//! AdamW for the backbone (warmup + cosine schedule); the Engram tables in their own optimiser
//! — lazy Adam at `table_lr_mult ×` the backbone rate, no weight decay (spec §6) — updated only
//! on the rows the batch touched ([`crate::table`]). Periodic evaluation on held-out books.
//! Every run writes its own directory: `config.json` (before training), `metrics.csv`
//! (appended as training goes), `summary.json` and, with mHC streams, `mhc_amax.csv` (the
//! amax gain at every evaluation, [`amax_log`]). With [`RunOptions::checkpoints`] it also
//! keeps `checkpoint/` ([`crate::checkpoint`]) every `train.checkpoint_every` steps and at the
//! end, and [`RunOptions::resume`] continues a run from it with the same batches and updates.

mod amax_log;
mod error;
mod evaluate;
mod loaded;
mod outcome;
mod step;
mod table_use;

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::Device;

pub use error::TrainError;
pub use evaluate::evaluate;
pub use loaded::{LoadError, LoadedRun};
pub use outcome::{DataStats, RunOptions, RunResult};
pub use step::{engram_hashing, table_file, TABLE_DIR};
pub use table_use::{table_use, TableUse};
pub(crate) use step::engram_hosts;

use crate::checkpoint::{self, Progress};
use crate::config::ExperimentConfig;
use crate::cost::cost;
use crate::data::batcher::{Batcher, HostBatch};
use crate::data::PreparedData;
use crate::engram::{EngramHost, EngramMemory};
use crate::eval::{plan_windows, subset, EvalReport};
use crate::hashing::default_rng;
use crate::metrics::{MetricRow, METRICS_HEADER};
use crate::model::Transformer;
use crate::run_dir::{io_err, write_atomic, write_json, RunDirLock};
use crate::turns::Turn;
use crate::ConfigError;
use step::{gather_lookups, upload_batch, Prepared};

/// Remove what an earlier run in `out_dir` left that a fresh run would not replace at once:
/// its `summary.json` and its checkpoint.
fn remove_stale_results(out_dir: &Path) -> Result<(), TrainError> {
    let summary = out_dir.join("summary.json");
    match std::fs::remove_file(&summary) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err("remove", &summary)(e).into()),
        _ => {}
    }
    let amax = out_dir.join("mhc_amax.csv");
    match std::fs::remove_file(&amax) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err("remove", &amax)(e).into()),
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
    check_inputs(cfg, data)?;
    let tc = &cfg.train;
    // One process per run directory: a second one is refused here, before it reads or
    // writes anything.
    let _lock = RunDirLock::acquire(out_dir)?;
    let setup_turn = opts.turns.as_deref().map(Turn::hold);
    let data_fingerprint = checkpoint::data_fingerprint(data);
    let resume_from = start_run_dir(cfg, data, out_dir, opts.resume)?;
    let t_start = Instant::now();

    let train_device = device.clone().autodiff();
    train_device.seed(tc.seed);
    let mut model = cfg.model.init(&train_device);
    let hashing = engram_hashing(&cfg.model, data)?;
    let table_rows: Vec<usize> = hashing.as_ref().map(|h| h.table_rows()).unwrap_or_default();
    let mut hosts = step::engram_hosts(&cfg.model, hashing.as_ref(), tc.seed, out_dir, resume_from.is_some())?;
    let run_cost = cost(&cfg.model, tc.seq_len, &table_rows.iter().map(|&r| r as u64).collect::<Vec<_>>());
    let mut batcher = Batcher::new(tc.batch_size, tc.seq_len, hashing);
    let mut optim = AdamWConfig::new()
        .with_beta_1(tc.beta1)
        .with_beta_2(tc.beta2)
        .with_epsilon(tc.eps)
        .with_weight_decay(tc.weight_decay)
        .init();
    let mut progress = Progress::start(default_rng(tc.seed));
    if let (Some(src), None) = (&tc.init_from, &resume_from) {
        model = init_from(cfg, data, src, model, &mut hosts)?;
    }
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
    let mut metrics = open_metrics(&metrics_path, &curve)?;
    let mut amax_log = if model.hc_exit.is_some() { Some(amax_log::AmaxLog::open(&out_dir.join("mhc_amax.csv"), start_step)?) } else { None };
    let bar = progress_bar(cfg, opts.progress, start_step);
    let interactive = opts.progress && !bar.is_hidden();

    let mut batch = HostBatch::default();
    // The next step's batch when the second core prepared it, and a batch whose buffers it
    // reuses.
    let mut prepared: Option<Prepared> = None;
    let mut spare_batch = HostBatch::default();
    let tokens_per_step = (tc.batch_size * tc.seq_len) as u64;
    // Only file-backed tables have rows to prefetch (a resident table's prefetch is a no-op).
    let prefetch = opts.prefetch_tables && hosts.iter().any(|h| h.table().is_file_backed());
    let t_train = Instant::now();
    let eval_device = device.clone().without_autodiff();
    drop(setup_turn);
    for step in start_step..tc.steps {
        let _turn = opts.turns.as_deref().map(Turn::hold);
        if opts.evict_tables {
            // A benchmark of cold reads: the tables' pages leave memory before every step
            // (not timed).
            for h in &hosts {
                h.table().evict_from_memory()?;
            }
        }
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
        // With a second core, it makes the next batch (and prefetches the tables' rows) while
        // this thread runs the forward and backward passes, then updates the tables while this
        // thread steps the backbone's optimiser.
        let parallel = !(hosts.is_empty() || opts.sequential || crate::runtime::n_threads() < 2);
        let current: Vec<Vec<u32>> = if parallel && prefetch { looks.iter().map(|l| l.uniq().to_vec()).collect() } else { Vec::new() };
        let (hosts_ref, batcher_ref) = (&mut hosts, &mut batcher);
        let stepped = std::thread::scope(|scope| -> Result<(Transformer, Option<Prepared>, f32), TrainError> {
            let (ahead, mut idle) = if parallel {
                let a = step::Ahead {
                    batcher: batcher_ref,
                    stream: &data.train,
                    rng: rng.clone(),
                    batch: std::mem::take(&mut spare_batch),
                    hosts: hosts_ref,
                    current,
                    last: step + 1 == tc.steps,
                    prefetch,
                };
                (Some(scope.spawn(move || step::make_ahead(a))), None)
            } else {
                (None, Some(&mut hosts_ref[..]))
            };
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
            let mut next = None;
            if let Some(h) = ahead {
                let made = h.join().expect("making the next batch panicked")?;
                idle = Some(made.hosts);
                next = made.next;
            }
            let hosts = idle.expect("the hosts are back");
            let next_looks = next.as_mut().map(|(_, looks, _)| &mut looks[..]);
            let stepped = step::update(model, &mut optim, grads, lr, hosts, &looks, &row_grads, parallel, next_looks)?;
            Ok((stepped, next.map(|(batch, looks, rng)| Prepared { batch, looks, rng }), loss_value))
        });
        let (stepped, next, loss_value) = stepped?;
        model = stepped;
        if parallel {
            prepared = next;
            spare_batch = std::mem::take(&mut batch);
        }
        let dt = t0.elapsed().as_secs_f64();
        if opts.release_memory {
            crate::runtime::release_free_memory();
        }
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
                if let Some(log) = amax_log.as_mut() {
                    if let Some(g) = evaluate::amax_gain(&valid, &mut batcher, &hosts, data, windows, &eval_device)? {
                        log.append(done, &g)?;
                    }
                }
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
            for h in &mut hosts {
                h.table_mut().checkpoint_written()?;
            }
        }
    }
    let _final_turn = opts.turns.as_deref().map(Turn::hold);
    metrics.sync_all().map_err(io_err("sync", &metrics_path))?;
    if let Some(log) = &amax_log {
        log.sync()?;
    }
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
    let mhc_amax_gain = evaluate::amax_gain(&valid, &mut batcher, &hosts, data, &final_windows, &eval_device)?;
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
        mhc_amax_gain,
    };
    write_json(&out_dir.join("summary.json"), &result)?;
    Ok(result)
}

/// `model` and `hosts` with the weights of the finished run in `src` (`train.init_from`): its
/// backbone and Engram layer parameters, and every table row (a file-backed table gets records
/// only for rows that differ from their initial value). The optimiser state is not taken.
fn init_from(cfg: &ExperimentConfig, data: &PreparedData, src: &Path, model: Transformer, hosts: &mut [EngramHost]) -> Result<Transformer, TrainError> {
    let fail = |reason: String| TrainError::InitFrom { run: src.to_path_buf(), reason };
    let device = Device::flex();
    let source = LoadedRun::load(src, &device).map_err(|e| fail(e.to_string()))?;
    // The same model, up to where its tables live.
    let storage_free = |c: &ExperimentConfig| {
        let mut m = c.model.clone();
        if let Some(e) = &mut m.engram {
            e.table_store = Default::default();
            e.table_dir = None;
        }
        serde_json::to_value(&m).expect("a model config serialises")
    };
    if storage_free(cfg) != storage_free(&source.cfg) {
        let (a, b) = (storage_free(cfg), storage_free(&source.cfg));
        let fields: Vec<String> = a.as_object().into_iter().flatten().filter(|(k, v)| b.get(k.as_str()) != Some(v)).map(|(k, _)| format!("model.{k}")).collect();
        return Err(fail(format!("its model config differs ({}); fine-tuning keeps the model", fields.join(", "))));
    }
    if (source.data.tokenizer_sha256.as_ref(), source.data.vocab_size, &source.data.compression) != (data.tokenizer_sha256.as_ref(), data.vocab_size, &data.compression) {
        return Err(fail(format!("it was trained with another tokenizer ({} ids, sha256 {:?}; this run: {} ids, {:?})", source.data.vocab_size, source.data.tokenizer_sha256, data.vocab_size, data.tokenizer_sha256)));
    }
    let bytes = source.model.clone().into_record().into_bytes().map_err(|e| fail(format!("reading its weights: {e}")))?;
    let record = burn::store::ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes.to_vec())).map_err(|e| fail(format!("reading its weights: {e}")))?;
    let model = model.try_load_record(record).map_err(|e| fail(format!("loading its weights: {e}")))?;
    let mut rows = Vec::new();
    let mut ids: Vec<u32> = Vec::new();
    for (dst, src_host) in hosts.iter_mut().zip(&source.hosts) {
        let n = src_host.table().rows();
        for lo in (0..n).step_by(1 << 16) {
            ids.clear();
            ids.extend(lo as u32..(lo + (1 << 16)).min(n) as u32);
            src_host.table().gather(&ids, &mut rows)?;
            dst.table_mut().load_weights(lo, &rows)?;
        }
    }
    Ok(model)
}

/// The config is valid and fits the data: the model's vocabulary is the data's, and both
/// splits hold at least one window.
fn check_inputs(cfg: &ExperimentConfig, data: &PreparedData) -> Result<(), TrainError> {
    cfg.validate()?;
    if cfg.model.vocab_size != data.vocab_size {
        return Err(ConfigError::new(
            "model.vocab_size",
            cfg.model.vocab_size,
            format!("the prepared data's vocabulary size, {} (the corpus has fewer distinct tokens than data.vocab_size)", data.vocab_size),
        )
        .into());
    }
    let need = cfg.train.seq_len + 1;
    for (split, len) in [("train", data.train.len()), ("validation", data.val.len())] {
        if len < need {
            return Err(TrainError::DataTooShort { split, len, need });
        }
    }
    Ok(())
}

/// A fresh run writes `config.json` into a clean `out_dir`; a resumed one reads and checks its
/// checkpoint against the config and the data first, before anything is written.
fn start_run_dir(cfg: &ExperimentConfig, data: &PreparedData, out_dir: &Path, resume: bool) -> Result<Option<checkpoint::Checkpoint>, TrainError> {
    if resume {
        let ck = checkpoint::read(out_dir)?;
        ck.check_config(cfg)?;
        ck.check_data(data)?;
        return Ok(Some(ck));
    }
    std::fs::create_dir_all(out_dir).map_err(io_err("create", out_dir))?;
    remove_stale_results(out_dir)?;
    write_json(&out_dir.join("config.json"), cfg)?;
    Ok(None)
}

/// `metrics.csv`, opened for appending: the file starts as exactly the rows of the state
/// training starts from (none, or the checkpoint's); later rows are appended as they are
/// logged.
fn open_metrics(path: &Path, rows: &[MetricRow]) -> Result<std::fs::File, TrainError> {
    let mut text = format!("{METRICS_HEADER}\n");
    for row in rows {
        text.push_str(&row.csv());
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())?;
    Ok(std::fs::OpenOptions::new().append(true).open(path).map_err(io_err("open", path))?)
}

/// The run's progress bar (hidden without `progress`), at `start_step`.
fn progress_bar(cfg: &ExperimentConfig, progress: bool, start_step: usize) -> indicatif::ProgressBar {
    let bar = if progress { indicatif::ProgressBar::new(cfg.train.steps as u64) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} {msg}")
            .expect("static template is valid")
            .progress_chars("=> "),
    );
    bar.set_prefix(cfg.name.clone());
    bar.set_position(start_step as u64);
    bar
}
