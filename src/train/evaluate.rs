//! Scoring held-out windows with a model and its tables.

use burn::tensor::{Device, Int, Tensor};

use super::error::TrainError;
use super::step::{gather_lookups, upload_batch};
use crate::data::batcher::{Batcher, HostBatch};
use crate::data::PreparedData;
use crate::engram::{EngramHost, EngramMemory};
use crate::eval::{EvalReport, EvalWindow};
use crate::model::{AmaxGain, Transformer};

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
            let (x, mems) = window_batch(batcher, &mut batch, hosts, data, chunk, device)?;
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

/// The mHC amax gain ([`Transformer::amax_gain`]) on the first windows of `windows` (one
/// training batch of them); `None` without mHC or without windows.
pub fn amax_gain(model: &Transformer, batcher: &mut Batcher, hosts: &[EngramHost], data: &PreparedData, windows: &[EvalWindow], device: &Device) -> Result<Option<AmaxGain>, TrainError> {
    if model.hc_exit.is_none() || windows.is_empty() {
        return Ok(None);
    }
    let chunk = &windows[..windows.len().min(batcher.batch)];
    let (x, mems) = window_batch(batcher, &mut HostBatch::default(), hosts, data, chunk, device)?;
    Ok(model.amax_gain(x, &mems))
}

/// The input ids and Engram memories on `device` of one batch of held-out windows (`chunk`,
/// at most `batcher.batch`; the rest of the batch repeats its first window), made in `batch`.
fn window_batch(batcher: &mut Batcher, batch: &mut HostBatch, hosts: &[EngramHost], data: &PreparedData, chunk: &[EvalWindow], device: &Device) -> Result<(Tensor<2, Int>, Vec<EngramMemory>), TrainError> {
    let mut starts: Vec<usize> = chunk.iter().map(|w| w.start).collect();
    starts.resize(batcher.batch, chunk[0].start);
    batcher.make(&data.val, &starts, batch)?;
    let (x, _) = upload_batch(batch, device);
    let mems = gather_lookups(batch, hosts)?.into_iter().map(|l| l.upload(device).into_memory()).collect();
    Ok((x, mems))
}
