//! One complete Engram layer from one config: the hash, the host table, the burn module and
//! the table's optimiser, used in three calls (`lookup`, `forward`, `step`).
//!
//! Paper: "Conditional Memory via Scalable Lookup" (Cheng et al., arXiv 2601.07372), §2; the
//! crate's spec §0–§6. Nothing here computes anything new: [`HashedEngram`] strings together
//! the pieces that stay public for those who need them — [`NgramHasher`] and [`unique_rows`]
//! (row ids on the host), [`EngramTable`] (host rows and their lazy Adam), [`EngramMemory`]
//! (the rows as an autodiff leaf) and [`Engram`] (gate and short conv) — with the same values
//! in the same order, so its results are bit-identical to the hand-written path (tested).
//!
//! ```no_run
//! # use burn::tensor::{Device, Tensor};
//! # use engram::engram::HashedEngramConfig;
//! # fn main() -> Result<(), engram::engram::EngramError> {
//! let device = Device::flex().autodiff();
//! let engram = HashedEngramConfig::new(64, 256).init(&device)?; // d_model 64, 256 token ids
//! let (b, t) = (4, 32);
//! let ids = vec![7u32; b * t]; // the batch's input ids, [B·T] row-major
//! let hidden = Tensor::<3>::zeros([b, t, 64], &device);
//! let look = engram.lookup(&ids, [b, t], &device)?; // hash, unique rows, gather, upload
//! let y = engram.forward(hidden.clone(), &look); // [B, T, D]: add it to the residual stream
//! let grads = (hidden + y).sum().backward();
//! engram.step(&look, &grads, 3e-3)?; // lazy Adam on the touched rows at lr × 5
//! # Ok(())
//! # }
//! ```
//!
//! # Why a module with a shared host part
//! The table is not a burn parameter (see [`crate::table`]): it lives in host memory, and the
//! backbone's optimiser, `valid()` and the module's saved weights must not see it. A model
//! that holds the layer must still derive `Module`, be moved through `optim.step` and copied
//! by `valid()` for evaluation. So [`HashedEngram`] is a `Module` whose parameters are those
//! of its public [`Engram`] field `layer`, and whose host part — hasher, compression, table,
//! optimiser settings: an [`EngramHost`] — is a skipped field behind an `Arc<RwLock<_>>`.
//! Clones of the module (`valid()`, `clone()`) share that one table, exactly as burn's
//! `BatchNorm` clones share their running statistics: the evaluation copy reads the rows the
//! training copy updates, and no copy of a table that may be gigabytes is ever made. What
//! that means in practice:
//! * the backbone's `GradientsParams::from_grads(grads, &model)` and `optim.step` see the
//!   layer's parameters only; [`HashedEngram::step`] updates the table;
//! * `model.save_file(..)` stores the parameters, not the table: save
//!   [`EngramTable::weights`] (and [`EngramTable::moments`] to resume) from
//!   [`HashedEngram::host`];
//! * a `clone()` kept as a snapshot keeps reading the live table.
//!
//! A training loop that hashes the next batch on another core while the backbone's optimiser
//! runs (the crate's [`crate::train`]) uses [`EngramHost`] directly: [`EngramHost::hash`]
//! and [`EngramHost::gather`] are the host half of a lookup (no device), and
//! [`HostLookup::upload`] the device half.
//!
//! # Deviations
//! * One layer, one residual stream (`hc_mult = 1`): `forward` takes and returns
//!   `[B, T, D]`. Several residual branches use [`Engram`] directly.
//! * Each [`HashedEngramConfig::init`] walks the primes of its own layer only. A model with
//!   several Engram layers that must match the reference's row ids (one prime walk shared by
//!   every layer, spec §3) builds one [`NgramHasher`] for all of them and one
//!   [`EngramHost::new`] per layer, then [`HashedEngram::new`].

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Gradients, Tensor};

use super::layer::{Engram, EngramConfig, EngramControl, EngramMemory, SHORT_CONV_KERNEL, TABLE_LR_MULT};
use crate::hashing::{unique_rows, HashError, NgramHasher};
use crate::table::{EngramTable, TableAdam, TableBlock, TableError, UpdateMode, DEFAULT_TABLE_INIT_STD};
use crate::tokenizer::Compression;
use crate::ConfigError;

/// Error of a [`HashedEngram`] or [`EngramHost`] call.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum EngramError {
    /// The ids of a lookup are not `batch × seq_len` values.
    #[error("ids has {got} values, expected batch {batch} × seq_len {seq_len} = {}", batch * seq_len)]
    BatchShape {
        /// Values passed.
        got: usize,
        /// Batch size B asked for.
        batch: usize,
        /// Sequence length T asked for.
        seq_len: usize,
    },
    /// A token id is not in the vocabulary the layer was built for.
    #[error("token id {id} at position {position} is outside the vocabulary of {vocab_size} ids")]
    IdOutOfVocab {
        /// The id.
        id: u32,
        /// Its flat index in the ids (`b · seq_len + t`).
        position: usize,
        /// Ids the layer accepts: `0..vocab_size`.
        vocab_size: usize,
    },
    /// [`HashedEngram::step`] found no gradient for the lookup's rows.
    #[error(
        "the looked-up rows have no gradient: look up on an autodiff device \
         (`Device::autodiff()`) and use the lookup's output in the loss before `backward`"
    )]
    NoGradient,
    /// An invalid configuration value.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Building the hasher or hashing failed.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// A table operation failed (e.g. a lookup made for another table).
    #[error(transparent)]
    Table(#[from] TableError),
}

/// How the table of one layer is trained: its own Adam at `lr × lr_mult`, no weight decay
/// (spec §6), on the touched rows only or on every row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TableOptim {
    /// Table learning rate = the step's learning rate × this (the paper's 5×).
    pub lr_mult: f64,
    /// Adam hyper-parameters.
    pub adam: TableAdam,
    /// Row-sparse (lazy) or dense updates.
    pub update: UpdateMode,
    /// Never update the table (the [`EngramControl::FrozenTable`] control): it keeps its
    /// initial values and its step counter.
    pub frozen: bool,
}

impl Default for TableOptim {
    fn default() -> Self {
        Self { lr_mult: TABLE_LR_MULT, adam: TableAdam::default(), update: UpdateMode::Sparse, frozen: false }
    }
}

impl TableOptim {
    /// The table's learning rate for a step at `lr`, as the table update receives it.
    pub fn table_lr(&self, lr: f64) -> f32 {
        (lr * self.lr_mult) as f32
    }
}

/// Configuration of a [`HashedEngram`]: one Engram layer with its hash and table.
///
/// The defaults are those of [`EngramConfig::default`]: orders 2 and 3, 4 heads per order,
/// ~16,384-row tables per head, 16-wide rows, gate and short conv on, the table initialised
/// N(0, [`DEFAULT_TABLE_INIT_STD`]²) and trained by lazy Adam at [`TABLE_LR_MULT`]× the
/// learning rate.
#[derive(Config, Debug)]
pub struct HashedEngramConfig {
    /// Hidden size D of the residual stream.
    pub d_model: usize,
    /// Token ids the layer accepts: `0..vocab_size` (the model's vocabulary).
    pub vocab_size: usize,
    /// Largest n-gram order N (orders 2..=N are hashed).
    #[config(default = 3)]
    pub max_ngram_size: usize,
    /// Hash heads K per order.
    #[config(default = 4)]
    pub n_head_per_ngram: usize,
    /// Base table size per order (N − 1 values); each head gets a distinct prime above it.
    #[config(default = "vec![16_384, 16_384]")]
    pub table_size: Vec<u64>,
    /// Width of one head's row; the memory is `(N − 1)·K·d_head` wide.
    #[config(default = 16)]
    pub d_head: usize,
    /// Short-conv kernel size.
    #[config(default = "SHORT_CONV_KERNEL")]
    pub kernel_size: usize,
    /// Context-aware gate (ablation: `false` sets α = 1).
    #[config(default = true)]
    pub gate: bool,
    /// Short causal conv (ablation: `false` gives `Y = ṽ`).
    #[config(default = true)]
    pub short_conv: bool,
    /// Block index of the layer in its model: with `seed`, it fixes the hash multipliers
    /// (numpy `default_rng(seed + 10007 · block)`, as the reference).
    #[config(default = 0)]
    pub block: usize,
    /// Seed of the hash multipliers.
    #[config(default = 0)]
    pub seed: u64,
    /// Raw id of the pad token that stands for the positions before a sequence's start.
    #[config(default = 0)]
    pub pad_id: u32,
    /// Standard deviation of the table initialisation.
    #[config(default = "DEFAULT_TABLE_INIT_STD")]
    pub table_init_std: f32,
    /// Seed of the table initialisation.
    #[config(default = 0)]
    pub table_seed: u64,
    /// Table learning rate = the step's learning rate × this.
    #[config(default = "TABLE_LR_MULT")]
    pub table_lr_mult: f64,
    /// Adam hyper-parameters of the table.
    #[config(default = "TableAdam::default()")]
    pub table_adam: TableAdam,
    /// Sparse (lazy) or dense table updates.
    #[config(default = "UpdateMode::Sparse")]
    pub update: UpdateMode,
}

impl HashedEngramConfig {
    /// The model-level [`EngramConfig`] of this one layer (block `block`).
    pub fn engram_config(&self) -> EngramConfig {
        EngramConfig {
            layer_ids: vec![self.block],
            max_ngram_size: self.max_ngram_size,
            n_head_per_ngram: self.n_head_per_ngram,
            table_size: self.table_size.clone(),
            d_head: self.d_head,
            hc_mult: 1,
            kernel_size: self.kernel_size,
            seed: self.seed,
            gate: self.gate,
            short_conv: self.short_conv,
            compression: true,
            control: EngramControl::None,
            table_lr_mult: self.table_lr_mult,
            table_init_std: self.table_init_std,
            update: self.update,
            table_adam: self.table_adam,
            ..EngramConfig::default()
        }
    }

    /// Check every field; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.d_model < 1 {
            return Err(ConfigError::new("engram.d_model", self.d_model, ">= 1"));
        }
        if !(1..=1usize << 32).contains(&self.vocab_size) {
            return Err(ConfigError::new("engram.vocab_size", self.vocab_size, "1..=2^32 (ids are u32)"));
        }
        if self.pad_id as usize >= self.vocab_size {
            return Err(ConfigError::new("engram.pad_id", self.pad_id, format!("< vocab_size = {}", self.vocab_size)));
        }
        self.engram_config().validate(self.block + 1)
    }

    /// The layer without tokenizer compression: ids are hashed as they are (`V' = vocab_size`).
    pub fn init(&self, device: &Device) -> Result<HashedEngram, EngramError> {
        let n = u32::try_from(self.vocab_size).map_err(|_| ConfigError::new("engram.vocab_size", self.vocab_size, "< 2^32"))?;
        self.init_with_compression(&Compression::identity(n), device)
    }

    /// The layer with tokenizer compression P: V → V' (spec §1) applied before hashing, e.g.
    /// `Compression::build(&tokenizer)` for a tokenizer of this crate. `compression` must cover
    /// exactly `vocab_size` ids.
    pub fn init_with_compression(&self, compression: &Compression, device: &Device) -> Result<HashedEngram, EngramError> {
        self.validate()?;
        if compression.raw_vocab_size() as usize != self.vocab_size {
            let allowed = format!("a compression of vocab_size = {} ids", self.vocab_size);
            return Err(ConfigError::new("engram.compression", format!("{} ids", compression.raw_vocab_size()), allowed).into());
        }
        let e = self.engram_config();
        let compress = compression.lookup();
        let hasher = NgramHasher::new(&e.hash_config(self.pad_id), u64::from(compression.compressed_vocab_size()), compress[self.pad_id as usize])?;
        let rows = hasher.layers()[0].total_rows as usize;
        let table = EngramTable::new(rows, self.d_head, self.table_init_std, self.table_seed);
        let optim = TableOptim { lr_mult: self.table_lr_mult, adam: self.table_adam, update: self.update, frozen: false };
        let host = EngramHost::new(Arc::new(hasher), 0, compress, table, optim)?;
        Ok(HashedEngram::new(e.layer_config(self.d_model).init(device), host))
    }
}

/// The host part of one Engram layer: its hasher, the compression of its ids, its table and
/// the table's optimiser settings. No tensors, no device.
pub struct EngramHost {
    hasher: Arc<NgramHasher>,
    layer: usize,
    compress: Arc<[u32]>,
    table: EngramTable,
    optim: TableOptim,
}

impl std::fmt::Debug for EngramHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngramHost")
            .field("layer_id", &self.hasher.layers()[self.layer].layer_id)
            .field("vocab_size", &self.compress.len())
            .field("compressed_vocab_size", &self.hasher.compressed_vocab_size())
            .field("heads", &self.hasher.heads_per_layer())
            .field("rows", &self.table.rows())
            .field("d_head", &self.table.dim())
            .field("step", &self.table.step())
            .field("optim", &self.optim)
            .finish()
    }
}

impl EngramHost {
    /// Layer `layer` (an index into `hasher.layers()`) of `hasher`, reading `table`.
    /// `compress[id]` is the compressed id of token `id` (the identity without compression).
    ///
    /// The table is not checked against the hasher's row count: a smaller one (e.g. the
    /// size-one control) fails at the first lookup that reads past its end.
    pub fn new(hasher: Arc<NgramHasher>, layer: usize, compress: impl Into<Arc<[u32]>>, table: EngramTable, optim: TableOptim) -> Result<Self, EngramError> {
        let n_layers = hasher.layers().len();
        if layer >= n_layers {
            return Err(HashError::LayerIndexOutOfRange { index: layer, n_layers }.into());
        }
        Ok(Self { hasher, layer, compress: compress.into(), table, optim })
    }

    /// The hasher (possibly shared with the model's other Engram layers).
    pub fn hasher(&self) -> &NgramHasher {
        &self.hasher
    }

    /// This layer's index into [`NgramHasher::layers`].
    pub fn layer_index(&self) -> usize {
        self.layer
    }

    /// Token ids the layer accepts: `0..vocab_size`.
    pub fn vocab_size(&self) -> usize {
        self.compress.len()
    }

    /// Heads H per token: `(N − 1)·K`.
    pub fn heads(&self) -> usize {
        self.hasher.heads_per_layer()
    }

    /// The table.
    pub fn table(&self) -> &EngramTable {
        &self.table
    }

    /// The table, to restore its state from a checkpoint, to prefetch its rows
    /// ([`EngramTable::prefetch`]) or to run the
    /// blocked update of a pipelined loop ([`EngramTable::update_then_gather`]).
    pub fn table_mut(&mut self) -> &mut EngramTable {
        &mut self.table
    }

    /// The table's optimiser settings.
    pub fn optim(&self) -> &TableOptim {
        &self.optim
    }

    /// The rows a batch of token ids reads: compression, the n-gram hash (positions before a
    /// sequence's start read the pad id), then the distinct rows and the inverse map. No
    /// values yet ([`EngramHost::gather`]).
    ///
    /// # Shapes
    /// - `ids`: `[B · T]`, row-major `[b][t]`, with `[batch, seq_len] = [B, T]`
    pub fn hash(&self, ids: &[u32], [batch, seq_len]: [usize; 2]) -> Result<HostLookup, EngramError> {
        if batch.checked_mul(seq_len) != Some(ids.len()) {
            return Err(EngramError::BatchShape { got: ids.len(), batch, seq_len });
        }
        let vocab_size = self.compress.len();
        let compressed = ids
            .iter()
            .enumerate()
            .map(|(position, &id)| self.compress.get(id as usize).copied().ok_or(EngramError::IdOutOfVocab { id, position, vocab_size }))
            .collect::<Result<Vec<u32>, _>>()?;
        let heads = self.heads();
        let rows = if self.hasher.layers().len() == 1 {
            // The batch call (threaded for big batches) hashes every layer: here just this one.
            let mut out = Vec::with_capacity(1);
            self.hasher.hash_batch_rows(&compressed, batch, seq_len, &mut out)?;
            out.pop().expect("the hasher has one layer")
        } else {
            let mut rows = vec![0u32; ids.len() * heads];
            for (seq, out) in compressed.chunks(seq_len.max(1)).zip(rows.chunks_mut((seq_len * heads).max(1))) {
                self.hasher.hash_rows(self.layer, seq, out)?;
            }
            rows
        };
        Ok(HostLookup::from_rows(rows, [batch, seq_len], heads))
    }

    /// Copy the rows `look` reads from the table into `look.values`.
    pub fn gather(&self, look: &mut HostLookup) -> Result<(), EngramError> {
        self.table.gather(&look.uniq, &mut look.values)?;
        look.d_head = self.table.dim();
        Ok(())
    }

    /// [`EngramHost::hash`], [`EngramHost::gather`] and [`HostLookup::upload`] in one call.
    pub fn lookup(&self, ids: &[u32], shape: [usize; 2], device: &Device) -> Result<Lookup, EngramError> {
        let mut look = self.hash(ids, shape)?;
        self.gather(&mut look)?;
        Ok(look.upload(device))
    }

    /// One optimiser step of the table on the rows `look` read, with their gradient from
    /// `grads`, at `lr ×` [`TableOptim::lr_mult`].
    pub fn step(&mut self, look: &Lookup, grads: &Gradients, lr: f64) -> Result<(), EngramError> {
        let g = look.row_grads(grads)?;
        self.step_rows(&look.uniq, &g, lr)
    }

    /// [`EngramHost::step`] from a gradient already on the host: `row_grads` is
    /// `[uniq.len(), d_head]` row-major, `uniq` ascending and distinct.
    pub fn step_rows(&mut self, uniq: &[u32], row_grads: &[f32], lr: f64) -> Result<(), EngramError> {
        let o = self.optim;
        if o.frozen {
            return Ok(());
        }
        self.table.adam_step(uniq, row_grads, o.table_lr(lr), &o.adam, o.update)?;
        Ok(())
    }

    /// [`EngramHost::step_rows`] for this batch, then [`EngramHost::gather`] for the next one,
    /// as blocks of rows that any threads may run in any order with the same result
    /// ([`EngramTable::update_then_gather`]): what a loop that prepares the next batch while
    /// the backbone's optimiser runs needs. `next` is the next batch's [`EngramHost::hash`];
    /// its values are complete once every block has run. With [`UpdateMode::Dense`] the update
    /// and the gather run here and no blocks are returned; a frozen table only gathers.
    pub fn step_then_gather<'a>(&'a mut self, uniq: &'a [u32], row_grads: &'a [f32], lr: f64, next: &'a mut HostLookup, block_rows: usize) -> Result<Vec<TableBlock<'a>>, EngramError> {
        if self.optim.update == UpdateMode::Dense || self.optim.frozen {
            self.step_rows(uniq, row_grads, lr)?;
            self.gather(next)?;
            return Ok(Vec::new());
        }
        let o = self.optim;
        next.d_head = self.table.dim();
        let HostLookup { uniq: next_uniq, values, .. } = next;
        Ok(self.table.update_then_gather(uniq, row_grads, o.table_lr(lr), &o.adam, next_uniq, values, block_rows)?)
    }
}

/// The host half of a lookup: the rows one batch reads and, once gathered, their values.
#[derive(Clone, Debug, Default)]
pub struct HostLookup {
    /// Batch size B.
    pub batch: usize,
    /// Sequence length T.
    pub seq_len: usize,
    /// Heads H per token.
    pub heads: usize,
    /// Absolute row of every (sequence, position, head), `[B][T][H]` row-major.
    pub rows: Vec<u32>,
    /// Distinct rows, ascending.
    pub uniq: Vec<u32>,
    /// `rows[i] == uniq[inverse[i]]`.
    pub inverse: Vec<u32>,
    /// Row width (set by [`EngramHost::gather`]).
    pub d_head: usize,
    /// Gathered values `[uniq.len(), d_head]` row-major (empty before the gather).
    pub values: Vec<f32>,
}

impl HostLookup {
    /// A lookup of `rows` (`[B][T][H]`), e.g. hashed elsewhere: finds the distinct rows.
    pub fn from_rows(rows: Vec<u32>, [batch, seq_len]: [usize; 2], heads: usize) -> Self {
        let (mut uniq, mut inverse) = (Vec::new(), Vec::new());
        unique_rows(&rows, &mut uniq, &mut inverse);
        Self { batch, seq_len, heads, rows, uniq, inverse, d_head: 0, values: Vec::new() }
    }

    /// Put the gathered values on `device`. On an autodiff device the rows become a leaf whose
    /// gradient [`HashedEngram::step`] reads; elsewhere (evaluation) they are constants.
    pub fn upload(mut self, device: &Device) -> Lookup {
        let values = std::mem::take(&mut self.values);
        let memory = EngramMemory::upload(values, self.d_head, &self.inverse, self.batch, self.seq_len, self.heads, device, device.is_autodiff());
        Lookup { uniq: self.uniq, rows: self.rows, memory }
    }
}

/// The rows one batch reads, on the device: what [`HashedEngram::forward`] consumes and
/// [`HashedEngram::step`] updates.
#[derive(Clone, Debug)]
pub struct Lookup {
    uniq: Vec<u32>,
    rows: Vec<u32>,
    memory: EngramMemory,
}

impl Lookup {
    /// Batch size B.
    pub fn batch(&self) -> usize {
        self.memory.batch
    }

    /// Sequence length T.
    pub fn seq_len(&self) -> usize {
        self.memory.seq_len
    }

    /// Absolute row of every (sequence, position, head), `[B][T][H]` row-major.
    pub fn rows(&self) -> &[u32] {
        &self.rows
    }

    /// Distinct rows, ascending: the rows a step updates.
    pub fn uniq(&self) -> &[u32] {
        &self.uniq
    }

    /// The gathered memory (for [`Engram::forward`] or a model that takes [`EngramMemory`]).
    pub fn memory(&self) -> &EngramMemory {
        &self.memory
    }

    /// The gathered memory, by value (for a model that takes a list of [`EngramMemory`]).
    pub fn into_memory(self) -> EngramMemory {
        self.memory
    }

    /// The gradient of the distinct rows, `[uniq.len(), d_head]` row-major.
    pub fn row_grads(&self, grads: &Gradients) -> Result<Vec<f32>, EngramError> {
        let g = self.memory.rows.grad(grads).ok_or(EngramError::NoGradient)?;
        Ok(g.into_data().try_into_vec::<f32>().expect("gradients of f32 rows are f32"))
    }
}

/// One Engram layer with its hash and table: a burn [`Module`] for the parameters (the public
/// field `layer`) and a shared host part ([`EngramHost`]; see the module docs for why).
///
/// Built by [`HashedEngramConfig::init`]; per batch [`HashedEngram::lookup`], then
/// [`HashedEngram::forward`], then after `backward` [`HashedEngram::step`].
#[derive(Module, Debug)]
pub struct HashedEngram {
    /// The parameters: value/key projections, norms and short conv.
    pub layer: Engram,
    /// Hasher, table and optimiser settings, shared by clones.
    #[module(skip)]
    host: Arc<RwLock<EngramHost>>,
}

impl HashedEngram {
    /// A layer from its parameters and its host part (e.g. one of several layers sharing one
    /// hasher).
    pub fn new(layer: Engram, host: EngramHost) -> Self {
        Self { layer, host: Arc::new(RwLock::new(host)) }
    }

    /// The host part (hasher, table, optimiser settings), read-only.
    pub fn host(&self) -> RwLockReadGuard<'_, EngramHost> {
        self.host.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The host part, writable (e.g. to load a table). Shared with every clone of the layer.
    pub fn host_mut(&self) -> RwLockWriteGuard<'_, EngramHost> {
        self.host.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hash a batch of token ids, find its distinct rows, gather them from the table and put
    /// them on `device` (as an autodiff leaf on an autodiff device).
    ///
    /// # Shapes
    /// - `ids`: `[B · T]` token ids, row-major `[b][t]`, each `< vocab_size`
    /// - `shape`: `[B, T]`
    ///
    /// # Errors
    /// [`EngramError::BatchShape`] when `ids` is not `B · T` long,
    /// [`EngramError::IdOutOfVocab`] for an id outside the vocabulary.
    pub fn lookup(&self, ids: &[u32], shape: [usize; 2], device: &Device) -> Result<Lookup, EngramError> {
        self.host().lookup(ids, shape, device)
    }

    /// The Engram output `Y` (gate and short conv over the looked-up memory) to add to the
    /// residual stream.
    ///
    /// # Shapes
    /// - `hidden`: `[B, T, D]`, with `[B, T]` those of `look`
    /// - output: `[B, T, D]`
    ///
    /// # Panics
    /// If `hidden` is not `[B, T, D]` for the lookup's `B`, `T` and the layer's `D`.
    pub fn forward(&self, hidden: Tensor<3>, look: &Lookup) -> Tensor<3> {
        let [b, t, d] = hidden.dims();
        assert_eq!([b, t], [look.batch(), look.seq_len()], "hidden is [B, T, D] = {:?}, the lookup was made for [B, T] = {:?}", [b, t, d], [look.batch(), look.seq_len()]);
        let y = self.layer.forward(hidden.reshape([b, t, 1, d]), look.memory.embeddings()); // [B, T, 1, D]
        y.reshape([b, t, d])
    }

    /// One optimiser step of the table on the rows `look` read: their gradient from `grads`,
    /// Adam at `lr ×` the table's multiplier ([`HashedEngramConfig::table_lr_mult`]).
    ///
    /// # Errors
    /// [`EngramError::NoGradient`] when the rows took no part in the loss (or were looked up
    /// without autodiff); a table error for a lookup made by another layer.
    pub fn step(&self, look: &Lookup, grads: &Gradients, lr: f64) -> Result<(), EngramError> {
        self.host_mut().step(look, grads, lr)
    }
}

#[cfg(test)]
mod tests;
