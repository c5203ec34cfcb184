//! Engram table storage and its row-sparse (lazy) optimiser.
//!
//! Paper: "Conditional Memory via Scalable Lookup" (Cheng et al., arXiv 2601.07372), §2 and
//! §6 of the crate's spec: each Engram layer owns one table of `Σ primes` rows of width
//! `d_head`; the tables are trained with Adam at 5× the backbone learning rate and no weight
//! decay. The reference demo (`engram_demo_v1.py`) keeps the table as an `nn.Embedding`
//! initialised N(0, 1).
//!
//! # Why the table lives on the host
//! In burn 0.22 the gradient of an embedding lookup is a dense tensor the size of the whole
//! table, and AdamW then updates (and decays) every row, so step time grows linearly with the
//! table. Here the table is plain host memory, which is also the deployment model of the paper
//! (§ offloading: tables in host DRAM, prefetched while the first blocks run). Per batch the
//! loader computes the unique rows `U` the batch touches; [`EngramTable::gather`] copies exactly
//! those rows into a small `[U, d_head]` leaf tensor, autodiff differentiates only that leaf,
//! and [`EngramTable::adam_step`] updates only those rows and their optimiser state. The cost
//! of a step is O(U · d_head), independent of the number of rows.
//!
//! A training loop that already knows its next batch can fuse the update with the next
//! gather: [`EngramTable::update_then_gather`] splits both into blocks of row ranges that any
//! threads may run in any order (the crate's loop shares them between the thread that steps
//! the backbone's optimiser and a second one), with the same result as `adam_step` followed by
//! `gather`.
//!
//! # Storage: one record per row, in memory or in a file
//! Every row is one record ([`layout`]): its id, its weights (f32, or bf16 —
//! [`WeightFormat`]) and its optimiser state (Adam's two moments per value, or one row-wise
//! second moment — [`TableOptimizer`]): 12.25, 4.5 or 2.5 bytes per parameter at `d_head = 16`.
//! Where the records live is the one seam ([`TableStore`]):
//! * **resident** ([`EngramTable::new`], [`EngramTable::with_layout`]): every row's record in
//!   memory at its row's position, initialised at construction;
//! * **file-backed** ([`EngramTable::open_file`]): records in a memory-mapped slab file in
//!   first-touch order behind an in-memory index, so untouched rows cost neither memory nor
//!   disk and a 2^30-row table costs nothing until it is used; checkpoints record the slab's
//!   length and an undo journal returns it to that state after a crash (see `slab.rs`).
//!
//! A row's initial value is a pure function of the table's seed and the row ([`Init`]), so a
//! row can be created when it is first touched and both stores train bit-identically (tested);
//! it is also bit-identical to the chunked initialisation tables had before records existed.
//! [`EngramTable::prefetch`] lets a loop create and page in the rows of the coming update and
//! gather on a spare core, before the step needs them.
//!
//! # Lazy semantics (documented deviation from dense Adam)
//! * One step counter per table (like PyTorch `SparseAdam`), incremented once per
//!   [`EngramTable::adam_step`] call; bias correction uses that global step.
//! * Rows not looked up in a step keep their weights **and** their state bit-identical (a
//!   dense Adam would keep moving them by their decaying momentum).
//! * No weight decay (spec §6).
//! * Adam update: `m ← β1 m + (1−β1) g`, `v ← β2 v + (1−β2) g²`,
//!   `w ← w − lr · (m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + ε)` — the same formula as
//!   [`UpdateMode::Dense`], so the two agree exactly on every row that is touched in every step,
//!   and on every row after the first step. The row-wise update is in [`TableOptimizer`].
//!
//! [`UpdateMode::Dense`] applies that formula to every row with a zero gradient for untouched
//! rows (resident tables only). It exists as the baseline whose cost grows with the table.

use serde::{Deserialize, Serialize};

mod error;
mod kernels;
pub mod layout;
mod slab;

pub use layout::{Init, RowLayout, TableOptimizer, WeightFormat};
pub use slab::SLAB_HEADER_BYTES;
use kernels::{copy_rows, table_buffer, update_slots, NO_SLOT};
use layout::AdamCoeffs;
pub use error::TableError;

/// Standard deviation of the demo's table initialisation (`nn.Embedding`'s default N(0, 1)).
pub const DEMO_TABLE_INIT_STD: f32 = 1.0;

/// Default standard deviation of the table initialisation for training: N(0, 0.02²), the
/// scale of the token embedding (GPT-2's 0.02).
///
/// The paper gives no table initialisation. With the demo's N(0, 1) and PyTorch's default
/// `nn.Linear` init of `W_V`, the Engram output at step 0 is ~30× larger than a small model's
/// residual stream and drowns it: measured on the shipped corpus (d_model 64, 2 blocks,
/// 300 steps, 8,192 rows per head), validation loss 5.43 with N(0, 1), 4.80 with N(0, 0.02²),
/// 4.99 for the same model without Engram.
pub const DEFAULT_TABLE_INIT_STD: f32 = 0.02;

/// How an optimiser step treats rows that the batch did not look up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateMode {
    /// Lazy Adam: only touched rows (and their moments) change. O(U · d) per step.
    #[default]
    Sparse,
    /// Dense Adam: every row is updated with a zero gradient where untouched. O(rows · d).
    Dense,
}

/// Where an Engram table's rows live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TableStore {
    /// Every row in memory, initialised at construction.
    #[default]
    Resident,
    /// Rows in a memory-mapped file, created as they are first touched ([`EngramTable::open_file`]).
    File,
}

/// Adam hyper-parameters of the tables.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableAdam {
    /// β1.
    pub beta1: f32,
    /// β2.
    pub beta2: f32,
    /// ε added to the square root of the second moment.
    pub eps: f32,
}

impl Default for TableAdam {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// Bytes of memory the file-backed store's row → slot index takes for `rows` touched rows (a
/// resident table has no index): the hash table's allocation, computed from its layout.
pub fn file_index_bytes(rows: u64) -> u64 {
    slab::index_bytes(rows)
}

/// Where a table's rows live.
enum Store {
    /// Every row's record in memory, at its row's position, materialised at construction.
    Resident(Vec<u32>),
    /// Rows in a memory-mapped file, in first-touch order ([`slab`]).
    File(Box<slab::Slab>),
}

/// One Engram layer's table: `rows` rows of `dim` weights with their optimiser state.
///
/// Each row is one record ([`layout`]: row id, weights in f32 or bf16, Adam moments or one
/// row-wise second moment). The resident store ([`EngramTable::new`],
/// [`EngramTable::with_layout`]) keeps every record in memory; the file-backed one
/// ([`EngramTable::open_file`]) keeps only the rows touched so far, in a memory-mapped file.
/// Both give bit-identical results: a row's initial value is a pure function of the seed and
/// the row ([`Init`]), computed when the row is first touched.
pub struct EngramTable {
    rows: usize,
    layout: RowLayout,
    init: Init,
    store: Store,
    step: u64,
    /// Slots of the rows being updated and gathered (file-backed store), reused.
    uslots: Vec<u32>,
    nslots: Vec<u32>,
    /// The rows whose slots `uslots` and `nslots` hold, and the slab generation they were
    /// looked up under.
    readied: Readied,
}

/// Which rows [`EngramTable::prefetch`] last readied: the rows the step's update then asks
/// for, which need no second materialisation or lookup. Only the prefetch records them (a
/// table trained without prefetch copies no lists).
#[derive(Default)]
struct Readied {
    generation: Option<u64>,
    uniq: Vec<u32>,
    next: Vec<u32>,
}

impl std::fmt::Debug for EngramTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngramTable")
            .field("rows", &self.rows)
            .field("layout", &self.layout)
            .field("store", &match &self.store {
                Store::Resident(_) => "resident".to_string(),
                Store::File(s) => format!("file {}", s.path().display()),
            })
            .field("step", &self.step)
            .finish()
    }
}

impl EngramTable {
    /// A resident table of `rows × dim` values drawn from N(0, `std`) (Adam, f32 weights),
    /// deterministic in `seed` (and independent of the number of threads), with zero moments
    /// and step 0.
    pub fn new(rows: usize, dim: usize, std: f32, seed: u64) -> Self {
        Self::with_layout(rows, RowLayout { dim, optimizer: TableOptimizer::Adam, weights: WeightFormat::F32 }, Init { seed, std })
    }

    /// A resident table of `rows` rows with the record layout `layout`, every row initialised
    /// now (in parallel chunks; the values do not depend on the number of threads).
    pub fn with_layout(rows: usize, layout: RowLayout, init: Init) -> Self {
        let rw = layout.record_words();
        let mut words = table_buffer(rows * rw);
        if rows > 0 {
            let per_thread = rows.div_ceil(crate::runtime::n_threads()).max(1);
            std::thread::scope(|scope| {
                for (t, part) in words.chunks_mut(per_thread * rw).enumerate() {
                    scope.spawn(move || {
                        for (i, rec) in part.chunks_exact_mut(rw).enumerate() {
                            layout.init_record((t * per_thread + i) as u32, &init, rec);
                        }
                    });
                }
            });
        }
        Self { rows, layout, init, store: Store::Resident(words), step: 0, uslots: Vec::new(), nslots: Vec::new(), readied: Readied::default() }
    }

    /// A file-backed table at `path` ([`slab`]): `fresh` creates the file (replacing one that
    /// is there); otherwise the file is opened for [`EngramTable::restore_file`], and refused
    /// if its header names another table. No row costs memory or disk until it is touched.
    pub fn open_file(path: &std::path::Path, rows: usize, layout: RowLayout, init: Init, fresh: bool) -> Result<Self, TableError> {
        let slab = slab::Slab::open(path, rows, layout, &init, fresh)?;
        Ok(Self { rows, layout, init, store: Store::File(Box::new(slab)), step: 0, uslots: Vec::new(), nslots: Vec::new(), readied: Readied::default() })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Width of a row (`d_head`).
    pub fn dim(&self) -> usize {
        self.layout.dim
    }

    /// The record layout.
    pub fn layout(&self) -> RowLayout {
        self.layout
    }

    /// Optimiser steps taken so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Whether the rows live in a file.
    pub fn is_file_backed(&self) -> bool {
        matches!(self.store, Store::File(_))
    }

    /// Rows that hold a record: every row when resident, the rows touched so far when
    /// file-backed.
    pub fn materialised_rows(&self) -> usize {
        match &self.store {
            Store::Resident(_) => self.rows,
            Store::File(s) => s.slots(),
        }
    }

    /// Bytes a file-backed table occupies on disk (file and journal), 0 when resident.
    pub fn disk_bytes(&self) -> u64 {
        match &self.store {
            Store::Resident(_) => 0,
            Store::File(s) => s.disk_bytes(),
        }
    }

    /// Bytes of the weights alone at 4 bytes per value (what inference needs in f32).
    pub fn weight_bytes(&self) -> usize {
        self.rows * self.layout.dim * std::mem::size_of::<f32>()
    }

    fn check_rows(&self, uniq: &[u32]) -> Result<(), TableError> {
        match uniq.iter().find(|&&r| r as usize >= self.rows) {
            Some(&row) => Err(TableError::RowOutOfRange { row, rows: self.rows }),
            None => Ok(()),
        }
    }

    /// Every row's weights (widened to f32) and optimiser state, row-major, materialising
    /// nothing: untouched rows read as their initial value and a zero state. O(rows) — for
    /// tests and small tables.
    pub fn snapshot(&self) -> (Vec<f32>, Vec<f32>) {
        let sw = self.layout.state_words();
        let all: Vec<u32> = (0..self.rows as u32).collect();
        let mut weights = Vec::new();
        self.gather(&all, &mut weights).expect("every row is in range");
        let mut state = vec![0f32; self.rows * sw];
        let (base, rw) = (self.base() as *const u32, self.layout.record_words());
        for r in 0..self.rows as u32 {
            if let Some(s) = self.slot(r) {
                // SAFETY: `s` is a record of this table; `&self` excludes writers.
                let rec = unsafe { std::slice::from_raw_parts(base.add(s as usize * rw), rw) };
                let st: &[f32] = bytemuck::cast_slice(&rec[1 + self.layout.weight_words()..]);
                state[r as usize * sw..(r as usize + 1) * sw].copy_from_slice(st);
            }
        }
        (weights, state)
    }

    fn base(&self) -> *mut u32 {
        match &self.store {
            Store::Resident(w) => w.as_ptr().cast_mut(),
            Store::File(s) => s.base(),
        }
    }

    fn slot(&self, row: u32) -> Option<u32> {
        match &self.store {
            Store::Resident(_) => Some(row),
            Store::File(s) => s.slot(row),
        }
    }

    /// Copy the rows `uniq` into `out` (`[uniq.len(), dim]`, row-major, f32), reusing its
    /// capacity. Rows of a file-backed table not touched yet read as their initial value and
    /// stay untouched.
    pub fn gather(&self, uniq: &[u32], out: &mut Vec<f32>) -> Result<(), TableError> {
        self.check_rows(uniq)?;
        out.clear();
        out.resize(uniq.len() * self.layout.dim, 0.0);
        let slots: std::borrow::Cow<'_, [u32]> = match &self.store {
            Store::Resident(_) => uniq.into(),
            Store::File(s) => uniq.iter().map(|&r| s.slot(r).unwrap_or(NO_SLOT)).collect::<Vec<_>>().into(),
        };
        // SAFETY: every slot is a record of this table or NO_SLOT; `&self` excludes writers.
        unsafe { copy_rows(self.base(), &self.layout, &self.init, uniq, &slots, out) };
        Ok(())
    }

    /// Make a step's rows ready before the step needs them (what a training loop runs on a
    /// spare core while the backbone computes): a file-backed table reads the pages of the rows
    /// `update` (this step's, about to be updated) back into memory if they were evicted and
    /// journals their pre-images; it gives the rows of `gather` (the next batch's) that were
    /// never touched a record with their initial value, and reads the others' pages back. The
    /// step's update and gather then neither wait for the disk nor compute initial values.
    /// The table's values do not change. A no-op when resident.
    pub fn prefetch(&mut self, update: &[u32], gather: &[u32]) -> Result<(), TableError> {
        self.check_rows(update)?;
        self.check_rows(gather)?;
        self.ready_slots(update, gather)?;
        if let Store::File(s) = &self.store {
            s.touch(&self.uslots);
            s.touch(&self.nslots);
            let r = &mut self.readied;
            if r.generation != Some(s.generation()) {
                r.uniq.clear();
                r.uniq.extend_from_slice(update);
                r.next.clear();
                r.next.extend_from_slice(gather);
                r.generation = Some(s.generation());
            }
        }
        Ok(())
    }

    /// Drop a file-backed table's pages from memory (after writing the modified ones to the
    /// file), so the next accesses read from the disk: for measuring cold reads. A no-op when
    /// resident.
    pub fn evict_from_memory(&self) -> Result<(), TableError> {
        match &self.store {
            Store::Resident(_) => Ok(()),
            Store::File(s) => s.evict(),
        }
    }

    /// Advance the step counter and return the coefficients of the new step.
    fn next_coeffs(&mut self, lr: f32, adam: &TableAdam) -> AdamCoeffs {
        self.step += 1;
        let t = self.step as i32;
        AdamCoeffs {
            lr,
            b1: adam.beta1,
            b2: adam.beta2,
            eps: adam.eps,
            bc1: 1.0 - adam.beta1.powi(t),
            bc2: 1.0 - adam.beta2.powi(t),
            step: self.step,
        }
    }

    /// Give the rows `uniq` records (file-backed: materialise and journal them) and put their
    /// slots in `self.uslots`; `next`'s into `self.nslots` (materialised too). When the last
    /// prefetch readied the same rows (the step's update after its prefetch) and no slot was
    /// forgotten since, the slots are already there; only the journal is brought up to date (a
    /// checkpoint may have started a new epoch in between).
    fn ready_slots(&mut self, uniq: &[u32], next: &[u32]) -> Result<(), TableError> {
        let Store::File(s) = &mut self.store else { return Ok(()) };
        let r = &mut self.readied;
        if r.generation != Some(s.generation()) || r.uniq != uniq || r.next != next {
            r.generation = None;
            s.materialise(uniq, &self.init)?;
            s.materialise(next, &self.init)?;
            self.uslots.clear();
            self.uslots.extend(uniq.iter().map(|&r| s.slot(r).expect("materialised above")));
            self.nslots.clear();
            self.nslots.extend(next.iter().map(|&r| s.slot(r).expect("materialised above")));
        }
        s.journal(&self.uslots)
    }

    /// One row-sparse optimiser step for the rows `uniq` (like [`EngramTable::adam_step`] in
    /// [`UpdateMode::Sparse`]), then a copy of the rows `next` into `out` (like
    /// [`EngramTable::gather`]) — split into [`TableBlock`]s that any threads may run, in any
    /// order, with a bit-identical result.
    ///
    /// Each block owns a range of rows: it updates the rows of `uniq` in its range, then copies
    /// the rows of `next` in its range into their place in `out`. The ranges tile the table, so
    /// every row is updated before it is copied. About `block_rows` rows of `uniq` per block.
    /// The step counter advances here, once. Both lists must be strictly ascending (the
    /// batcher's unique-row pass gives them so); on any error the table's values and step are
    /// unchanged.
    ///
    /// ```
    /// use engram::table::{EngramTable, TableAdam};
    /// let mut table = EngramTable::new(1000, 4, 0.02, 7);
    /// let (uniq, grads) = (vec![3, 500, 999], vec![0.1f32; 12]);
    /// let next = vec![3, 4];
    /// let mut rows = Vec::new();
    /// let blocks = table.update_then_gather(&uniq, &grads, 1e-3, &TableAdam::default(), &next, &mut rows, 2).unwrap();
    /// std::thread::scope(|s| {
    ///     for block in blocks {
    ///         s.spawn(move || block.run());
    ///     }
    /// });
    /// assert_eq!(rows.len(), 2 * 4);
    /// assert_eq!(table.step(), 1);
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn update_then_gather<'a>(
        &'a mut self,
        uniq: &'a [u32],
        grads: &'a [f32],
        lr: f32,
        adam: &TableAdam,
        next: &'a [u32],
        out: &'a mut Vec<f32>,
        block_rows: usize,
    ) -> Result<Vec<TableBlock<'a>>, TableError> {
        self.check_rows(uniq)?;
        self.check_rows(next)?;
        for (what, ids) in [("updated", uniq), ("gathered", next)] {
            if let Some(w) = ids.windows(2).find(|w| w[0] >= w[1]) {
                return Err(TableError::RowsNotAscending { what, prev: w[0], row: w[1] });
            }
        }
        let dim = self.layout.dim;
        if grads.len() != uniq.len() * dim {
            return Err(TableError::GradShape { got: grads.len(), expected: uniq.len() * dim, uniq: uniq.len(), dim });
        }
        self.ready_slots(uniq, next)?;
        let c = self.next_coeffs(lr, adam);
        out.clear();
        out.resize(next.len() * dim, 0.0);
        let base = self.base();
        let this: &'a EngramTable = self;
        let (uslots, nslots): (&'a [u32], &'a [u32]) = match &this.store {
            Store::Resident(_) => (uniq, next),
            Store::File(_) => (&this.uslots, &this.nslots),
        };
        let (layout, init) = (this.layout, this.init);
        let block_rows = block_rows.max(1);
        let n = if uniq.is_empty() { 1 } else { uniq.len().div_ceil(block_rows) };
        let (mut out, mut next, mut nslots) = (&mut out[..], next, nslots);
        let mut blocks = Vec::with_capacity(n);
        for i in 0..n {
            let lo = (i * block_rows).min(uniq.len());
            let hi = ((i + 1) * block_rows).min(uniq.len());
            let end_row = if i + 1 == n { usize::MAX } else { uniq[hi] as usize };
            let k = next.partition_point(|&r| (r as usize) < end_row);
            let (bn, rest) = next.split_at(k);
            next = rest;
            let (bs, rest) = nslots.split_at(k);
            nslots = rest;
            let (bo, rest) = std::mem::take(&mut out).split_at_mut(k * dim);
            out = rest;
            blocks.push(TableBlock {
                c,
                layout,
                init,
                base,
                uslots: &uslots[lo..hi],
                grads: &grads[lo * dim..hi * dim],
                next: bn,
                nslots: bs,
                out: bo,
                _table: std::marker::PhantomData,
            });
        }
        Ok(blocks)
    }

    /// One optimiser step at learning rate `lr` with gradient `grads` (`[uniq.len(), dim]`) for
    /// the distinct rows `uniq`. See the module docs for the lazy semantics of
    /// [`UpdateMode::Sparse`]. `uniq` must not repeat a row (the batcher's unique-row pass
    /// guarantees it). [`UpdateMode::Dense`] needs a resident table.
    pub fn adam_step(&mut self, uniq: &[u32], grads: &[f32], lr: f32, adam: &TableAdam, mode: UpdateMode) -> Result<(), TableError> {
        self.check_rows(uniq)?;
        let dim = self.layout.dim;
        if grads.len() != uniq.len() * dim {
            return Err(TableError::GradShape { got: grads.len(), expected: uniq.len() * dim, uniq: uniq.len(), dim });
        }
        if mode == UpdateMode::Dense && self.is_file_backed() {
            return Err(TableError::NeedsResident { what: "the dense update" });
        }
        self.ready_slots(uniq, &[])?;
        let c = self.next_coeffs(lr, adam);
        let (layout, sr, base) = (self.layout, self.init.seed, self.base());
        match (mode, &mut self.store) {
            (UpdateMode::Sparse, Store::Resident(_)) => update_slots(&layout, &c, sr, base, uniq, grads),
            (UpdateMode::Sparse, Store::File(_)) => update_slots(&layout, &c, sr, base, &self.uslots, grads),
            (UpdateMode::Dense, Store::Resident(words)) => {
                // Scatter the sparse gradient into a dense one (rows not looked up get zeros),
                // then update every row: the O(rows) baseline.
                let mut dense = vec![0.0f32; self.rows * dim];
                for (i, &r) in uniq.iter().enumerate() {
                    let r = r as usize;
                    dense[r * dim..(r + 1) * dim].copy_from_slice(&grads[i * dim..(i + 1) * dim]);
                }
                let rw = layout.record_words();
                let per = self.rows.div_ceil(crate::runtime::n_threads()).max(1);
                std::thread::scope(|scope| {
                    for (recs, g) in words.chunks_mut(per * rw).zip(dense.chunks(per * dim)) {
                        scope.spawn(move || {
                            for (rec, g) in recs.chunks_exact_mut(rw).zip(g.chunks_exact(dim)) {
                                layout.update(&c, rec, g, sr);
                            }
                        });
                    }
                });
            }
            (UpdateMode::Dense, Store::File(_)) => unreachable!("refused above"),
        }
        Ok(())
    }

    /// Set the weights of the rows `first..first + n` to `weights` (`[n, dim]`, row-major)
    /// with a zero optimiser state — what importing trained weights does (the step counter is
    /// left as it is). Returns how many rows were written. A file-backed table skips the rows
    /// that have no record and whose weights equal their initial value bit for bit (reading
    /// them gives those weights already), so importing a table whose rows were mostly never
    /// trained creates records only for the trained ones. A bf16 table refuses a value it
    /// cannot hold exactly ([`TableError::NotBf16`]); rows before the refused one are written.
    pub fn load_weights(&mut self, first: usize, weights: &[f32]) -> Result<usize, TableError> {
        let dim = self.layout.dim;
        if dim == 0 || !weights.len().is_multiple_of(dim) {
            return Err(TableError::DataShape { got: weights.len(), expected: weights.len().div_ceil(dim.max(1)) * dim });
        }
        let n = weights.len() / dim;
        if first + n > self.rows {
            return Err(TableError::RowOutOfRange { row: (first + n - 1) as u32, rows: self.rows });
        }
        let rows: Vec<u32> = match &self.store {
            Store::Resident(_) => (first as u32..(first + n) as u32).collect(),
            Store::File(s) => {
                let mut init = vec![0f32; dim];
                (0..n)
                    .filter(|&i| {
                        let r = (first + i) as u32;
                        if s.slot(r).is_some() {
                            return true;
                        }
                        self.layout.init_weights(r, &self.init, &mut init);
                        init.iter().zip(&weights[i * dim..(i + 1) * dim]).any(|(a, b)| a.to_bits() != b.to_bits())
                    })
                    .map(|i| (first + i) as u32)
                    .collect()
            }
        };
        self.ready_slots(&rows, &[])?;
        let (base, rw) = (self.base(), self.layout.record_words());
        for (k, &r) in rows.iter().enumerate() {
            let s = match &self.store {
                Store::Resident(_) => r,
                Store::File(_) => self.uslots[k],
            };
            let i = r as usize - first;
            // SAFETY: `s` is a record of this table; `&mut self` excludes other access.
            let rec = unsafe { std::slice::from_raw_parts_mut(base.add(s as usize * rw), rw) };
            let w = &weights[i * dim..(i + 1) * dim];
            self.layout.write_record(r, w, rec).map_err(|j| TableError::NotBf16 { row: r, element: j, value: w[j] })?;
        }
        Ok(rows.len())
    }

    /// The resident records, for a checkpoint (`None` when file-backed).
    pub fn resident_records(&self) -> Option<&[u8]> {
        match &self.store {
            Store::Resident(w) => Some(bytemuck::cast_slice(w)),
            Store::File(_) => None,
        }
    }

    /// Restore a resident table's step and records (as [`Self::resident_records`] gave them).
    pub fn restore_resident(&mut self, step: u64, records: &[u8]) -> Result<(), TableError> {
        let Store::Resident(words) = &mut self.store else { return Err(TableError::NeedsResident { what: "restoring resident records" }) };
        let expected = words.len() * 4;
        if records.len() != expected {
            return Err(TableError::DataShape { got: records.len(), expected });
        }
        bytemuck::cast_slice_mut::<u32, u8>(words).copy_from_slice(records);
        self.step = step;
        Ok(())
    }

    /// A file-backed table's state for a checkpoint: (slots in use, epoch), after writing every
    /// modified page to the file; `None` when resident. Call [`Self::checkpoint_written`] once
    /// the checkpoint is in place.
    pub fn file_checkpoint(&self) -> Result<Option<(u64, u64)>, TableError> {
        match &self.store {
            Store::Resident(_) => Ok(None),
            Store::File(s) => {
                s.flush()?;
                Ok(Some((s.slots() as u64, s.next_epoch())))
            }
        }
    }

    /// The checkpoint that [`Self::file_checkpoint`] described is in place: a file-backed table
    /// starts journaling against it. A no-op when resident.
    pub fn checkpoint_written(&mut self) -> Result<(), TableError> {
        match &mut self.store {
            Store::Resident(_) => Ok(()),
            Store::File(s) => s.committed_now(),
        }
    }

    /// Return a file-backed table to the checkpoint's state: `slots` rows touched, journal
    /// epoch `epoch`, `step` optimiser steps (undoing the changes made after it).
    pub fn restore_file(&mut self, step: u64, slots: u64, epoch: u64) -> Result<(), TableError> {
        let Store::File(s) = &mut self.store else {
            return Err(TableError::FileMismatch { path: "(resident table)".into(), reason: "the checkpoint describes a file-backed table".into() });
        };
        s.restore(slots as usize, epoch)?;
        self.step = step;
        Ok(())
    }
}

/// Part of one [`EngramTable::update_then_gather`]: the rows of one range of the table to
/// update, then to copy out. Blocks of one call touch disjoint records.
pub struct TableBlock<'a> {
    c: AdamCoeffs,
    layout: RowLayout,
    init: Init,
    base: *mut u32,
    uslots: &'a [u32],
    grads: &'a [f32],
    next: &'a [u32],
    nslots: &'a [u32],
    out: &'a mut [f32],
    _table: std::marker::PhantomData<&'a mut [u32]>,
}

// SAFETY: a block accesses only the records of the rows in its own range (distinct rows have
// distinct slots), through `base`, while the table stays mutably borrowed for `'a`; no two
// blocks of a call share a record.
unsafe impl Send for TableBlock<'_> {}

impl TableBlock<'_> {
    /// Update this range's rows, then copy its gathered rows out.
    pub fn run(self) {
        let Self { c, layout, init, base, uslots, grads, next, nslots, out, .. } = self;
        update_slots(&layout, &c, init.seed, base, uslots, grads);
        // SAFETY: the rows of `next` in this range are records only this block accesses.
        unsafe { copy_rows(base, &layout, &init, next, nslots, out) };
    }
}

#[cfg(test)]
mod tests;
