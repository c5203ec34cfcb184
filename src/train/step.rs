//! The host side of a training step: the batch and its Engram lookups, and the updates of one
//! step — tables and backbone, on two cores when there are two.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::error::TrainError;
use crate::data::batcher::{Batcher, EngramHashing, HostBatch};
use crate::data::PreparedData;
use crate::engram::{EngramControl, EngramHost, HostLookup, Lookup, TableOptim};
use crate::hashing::{NgramHasher, Pcg64};
use crate::model::{ModelConfig, Transformer};
use crate::engram::EngramConfig;
use crate::table::{EngramTable, Init, RowLayout, TableBlock, TableStore};

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

pub(super) fn upload_batch(batch: &HostBatch, device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let to_t = |v: &[u32]| {
        let ids: Vec<i32> = v.iter().map(|&x| x as i32).collect();
        Tensor::<2, Int>::from_data(TensorData::new(ids, [batch.batch, batch.seq_len]), device)
    };
    (to_t(&batch.inputs), to_t(&batch.targets))
}

/// Each Engram layer's lookup of `batch`, whose rows the batcher hashed (on the second core,
/// a step ahead): moved out of the batch, not yet gathered.
pub(super) fn host_lookups(batch: &mut HostBatch, hosts: &[EngramHost]) -> Vec<HostLookup> {
    let (b, t) = (batch.batch, batch.seq_len);
    (batch.layers.iter_mut().zip(hosts))
        .map(|(l, h)| {
            let (rows, uniq, inverse) = (std::mem::take(&mut l.rows), std::mem::take(&mut l.uniq), std::mem::take(&mut l.inverse));
            HostLookup { batch: b, seq_len: t, heads: h.heads(), rows, uniq, inverse, d_head: 0, values: Vec::new() }
        })
        .collect()
}

/// Each Engram layer's lookup of `batch`, gathered from its table.
pub(super) fn gather_lookups(batch: &mut HostBatch, hosts: &[EngramHost]) -> Result<Vec<HostLookup>, TrainError> {
    let mut looks = host_lookups(batch, hosts);
    for (look, h) in looks.iter_mut().zip(hosts) {
        h.gather(look)?;
    }
    Ok(looks)
}

/// A training batch made ahead of its step, with its rows already gathered from the tables.
pub(super) struct Prepared {
    pub(super) batch: HostBatch,
    /// Gathered lookups, one per Engram layer.
    pub(super) looks: Vec<HostLookup>,
    /// The sampling generator after this batch's window starts were drawn.
    pub(super) rng: Pcg64,
}

/// Rows of a table's update per [`TableBlock`] (see [`EngramTable::update_then_gather`]).
pub(super) const TABLE_BLOCK_ROWS: usize = 512;

/// Run queued table blocks until none is left.
fn run_blocks(queue: &Mutex<Vec<TableBlock<'_>>>) {
    loop {
        let block = queue.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let Some(block) = block else { break };
        block.run();
    }
}

/// The file of table `i` of a run in `run_dir` with `table_store = file`.
pub fn table_file(e: &EngramConfig, run_dir: &Path, i: usize) -> PathBuf {
    let dir = e.table_dir.as_ref().map_or_else(|| run_dir.join(TABLE_DIR), PathBuf::from);
    dir.join(format!("table-{i}.slab"))
}

/// Directory of a run's table files (`table_store = file`, no `table_dir`).
pub const TABLE_DIR: &str = "tables";

/// The Engram layers' host parts for a model: one table per layer, initialised from the run's
/// seed, sharing the batcher's hasher and compression. File-backed tables live in
/// [`table_file`]s of `run_dir`: created afresh, or opened as they are for a resumed run
/// (`resume`), whose checkpoint then restores them.
pub(crate) fn engram_hosts(model: &ModelConfig, hashing: Option<&EngramHashing>, seed: u64, run_dir: &Path, resume: bool) -> Result<Vec<EngramHost>, TrainError> {
    let (Some(e), Some(h)) = (&model.engram, hashing) else { return Ok(Vec::new()) };
    let (hasher, compress): (Arc<NgramHasher>, Arc<[u32]>) = (Arc::new(h.hasher.clone()), h.compress.clone().into());
    let optim = TableOptim { lr_mult: e.table_lr_mult, adam: e.table_adam, update: e.update, frozen: e.control == EngramControl::FrozenTable };
    let layout = RowLayout { dim: e.d_head, optimizer: e.table_optimizer, weights: e.table_weights };
    (h.table_rows().iter().enumerate())
        .map(|(i, &rows)| {
            let init = Init { seed: seed.wrapping_mul(0x9E37_79B9).wrapping_add(1 + i as u64), std: e.table_init_std };
            let table = match e.table_store {
                TableStore::Resident => EngramTable::with_layout(rows, layout, init),
                TableStore::File => EngramTable::open_file(&table_file(e, run_dir, i), rows, layout, init, !resume)?,
            };
            Ok(EngramHost::new(hasher.clone(), i, compress.clone(), table, optim)?)
        })
        .collect()
}

/// What the second core prepares while the backbone computes a step: the next batch, drawn
/// from a copy of the generator (`rng` advances when the next step takes the batch, so a
/// checkpoint written at the end of this step holds the state before that draw), into a spare
/// batch's buffers; and, with `prefetch`, the tables' rows of this step and the next
/// ([`EngramTable::prefetch`]).
pub(super) struct Ahead<'a> {
    pub(super) batcher: &'a mut Batcher,
    pub(super) stream: &'a [u32],
    pub(super) rng: Pcg64,
    pub(super) batch: HostBatch,
    pub(super) hosts: &'a mut [EngramHost],
    /// Each table's rows this step updates.
    pub(super) current: Vec<Vec<u32>>,
    /// The last step: no batch to make.
    pub(super) last: bool,
    pub(super) prefetch: bool,
}

/// What [`make_ahead`] gives back: the tables it borrowed, and the next batch with its
/// lookups (not yet gathered) and generator — none on the last step, or when making it failed
/// (the next step makes it again and reports the error).
pub(super) struct Made<'a> {
    pub(super) hosts: &'a mut [EngramHost],
    pub(super) next: Option<(HostBatch, Vec<HostLookup>, Pcg64)>,
}

/// Make the next batch and prefetch the tables' rows (see [`Ahead`]).
pub(super) fn make_ahead(a: Ahead<'_>) -> Result<Made<'_>, TrainError> {
    let Ahead { batcher, stream, mut rng, mut batch, hosts, current, last, prefetch } = a;
    let starts = batcher.sample_starts(stream.len(), &mut rng);
    let next = (!last && batcher.make(stream, &starts, &mut batch).is_ok()).then(|| {
        let looks = host_lookups(&mut batch, hosts);
        (batch, looks, rng)
    });
    if prefetch {
        for (i, host) in hosts.iter_mut().enumerate() {
            let gather = next.as_ref().map_or(&[][..], |(_, looks, _)| &looks[i].uniq[..]);
            host.table_mut().prefetch(current.get(i).map_or(&[][..], |c| &c[..]), gather)?;
        }
    }
    Ok(Made { hosts, next })
}

/// One step's updates at learning rate `lr`: the tables on the rows `looks` read, with their
/// gradients `row_grads`, and the backbone from `grads`. Sequentially on this thread, or with
/// `parallel` the tables on a second core while the backbone's optimiser runs here — and, given
/// the next batch's lookups `next`, the tables' update and the gather of those rows as blocks
/// of rows ([`EngramHost::step_then_gather`]) that this thread helps with once the backbone's
/// optimiser is done: the same values in the same order as the sequential step, so results
/// are bit-identical. Returns the stepped model.
#[allow(clippy::too_many_arguments)]
pub(super) fn update(
    model: Transformer,
    optim: &mut ModuleOptimizer,
    grads: GradientsParams,
    lr: f64,
    hosts: &mut [EngramHost],
    looks: &[Lookup],
    row_grads: &[Vec<f32>],
    parallel: bool,
    next: Option<&mut [HostLookup]>,
) -> Result<Transformer, TrainError> {
    let update_tables = |hosts: &mut [EngramHost]| -> Result<(), TrainError> {
        for ((host, look), g) in hosts.iter_mut().zip(looks).zip(row_grads) {
            host.step_rows(look.uniq(), g, lr)?;
        }
        Ok(())
    };
    if !parallel {
        update_tables(hosts)?;
        return Ok(optim.step(lr, model, grads));
    }
    let queue = Mutex::new(Vec::new());
    let (stepped, done) = std::thread::scope(|scope| {
        let queue = &queue;
        let worker = scope.spawn(move || -> Result<(), TrainError> {
            let Some(next) = next else { return update_tables(hosts) };
            let mut blocks = Vec::new();
            for ((host, look), (g, next)) in hosts.iter_mut().zip(looks).zip(row_grads.iter().zip(next.iter_mut())) {
                blocks.extend(host.step_then_gather(look.uniq(), g, lr, next, TABLE_BLOCK_ROWS)?);
            }
            *queue.lock().unwrap_or_else(PoisonError::into_inner) = blocks;
            run_blocks(queue);
            Ok(())
        });
        let stepped = optim.step(lr, model, grads);
        run_blocks(queue);
        (stepped, worker.join().expect("table update panicked"))
    });
    done?;
    Ok(stepped)
}
