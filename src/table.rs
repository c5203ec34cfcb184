//! Engram table storage and its row-sparse (lazy) Adam optimiser.
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
//! table. Here the table is plain host memory (`Vec<f32>`), which is also the deployment model
//! of the paper (§ offloading: tables in host DRAM, prefetched while the first blocks run).
//! Per batch the loader computes the unique rows `U` the batch touches; [`EngramTable::gather`]
//! copies exactly those rows into a small `[U, d_head]` leaf tensor, autodiff differentiates
//! only that leaf, and [`EngramTable::adam_step`] updates only those rows and their moments.
//! The cost of a step is O(U · d_head), independent of the number of rows.
//!
//! A training loop that already knows its next batch can fuse the update with the next
//! gather: [`EngramTable::update_then_gather`] splits both into blocks of row ranges that any
//! threads may run in any order (the crate's loop shares them between the thread that steps
//! the backbone's optimiser and a second one), with the same result as `adam_step` followed by
//! `gather`.
//!
//! # Lazy Adam semantics (documented deviation from dense Adam)
//! * One step counter per table (like PyTorch `SparseAdam`), incremented once per
//!   [`EngramTable::adam_step`] call; bias correction uses that global step.
//! * Rows not looked up in a step keep their weights **and** their moments bit-identical (a
//!   dense Adam would keep moving them by their decaying momentum).
//! * No weight decay (spec §6).
//! * Update: `m ← β1 m + (1−β1) g`, `v ← β2 v + (1−β2) g²`,
//!   `w ← w − lr · (m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + ε)` — the same formula as
//!   [`UpdateMode::Dense`], so the two agree exactly on every row that is touched in every step,
//!   and on every row after the first step.
//!
//! [`UpdateMode::Dense`] applies that formula to every row with a zero gradient for untouched
//! rows. It exists as the baseline whose cost grows with the table.

use serde::{Deserialize, Serialize};

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

/// Error of a table operation.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TableError {
    /// A row id is not in the table.
    #[error("table row {row} is out of range: the table has {rows} rows")]
    RowOutOfRange {
        /// The offending row.
        row: u32,
        /// Number of rows in the table.
        rows: usize,
    },
    /// A gradient buffer has the wrong length.
    #[error("gradient has {got} values, expected {expected} (= {uniq} rows × {dim})")]
    GradShape {
        /// Values received.
        got: usize,
        /// Values expected.
        expected: usize,
        /// Unique rows.
        uniq: usize,
        /// Row width.
        dim: usize,
    },
    /// Row ids that must be strictly ascending are not.
    #[error("{what} row ids must be strictly ascending: {prev} is followed by {row}")]
    RowsNotAscending {
        /// Which list: the rows to update or the rows to gather.
        what: &'static str,
        /// The earlier id.
        prev: u32,
        /// The id that follows it.
        row: u32,
    },
    /// Raw data loaded into a table has the wrong size.
    #[error("table data has {got} values, expected {expected}")]
    DataShape {
        /// Values received.
        got: usize,
        /// Values expected.
        expected: usize,
    },
}

/// One Engram layer's table: `rows × dim` weights plus Adam moments, in host memory.
///
/// Weights and both moments are resident from construction (3 × rows × dim × 4 bytes): see
/// `prefault` for why the moments' pages are touched up front.
#[derive(Clone, Debug)]
pub struct EngramTable {
    rows: usize,
    dim: usize,
    weights: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    step: u64,
}

/// SplitMix64: a small, well-mixed generator used to initialise tables in parallel chunks
/// with a result that does not depend on the number of threads.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fill `out` with N(0, std) values from a generator seeded by `(seed, chunk)` (Box–Muller).
fn fill_normal(out: &mut [f32], seed: u64, chunk: u64, std: f32) {
    let mut s = seed ^ chunk.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    let mut i = 0;
    while i < out.len() {
        let u1 = ((splitmix64(&mut s) >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64);
        let u2 = (splitmix64(&mut s) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let r = (-2.0 * u1.ln()).sqrt();
        let (sin, cos) = (2.0 * std::f64::consts::PI * u2).sin_cos();
        out[i] = (r * cos) as f32 * std;
        if i + 1 < out.len() {
            out[i + 1] = (r * sin) as f32 * std;
        }
        i += 2;
    }
}

/// Touch every page of a freshly allocated, zeroed buffer.
///
/// `vec![0.0; n]` is backed by untouched zero pages; the first write to each page then costs a
/// page fault inside a training step. Sparse updates write rows spread over the whole table, so
/// with a big table nearly every row of the first thousands of steps faults in two new pages
/// (first and second moment) — measured: +17 % step time at 2^24 rows. Faulting them in at
/// construction makes step time independent of the table size from the first step, at the
/// memory cost Adam has anyway once every row has been seen (3 × the weights).
fn prefault(buf: &mut [f32]) {
    const PAGE_FLOATS: usize = 4096 / std::mem::size_of::<f32>();
    let threads = crate::runtime::n_threads();
    let chunk = buf.len().div_ceil(threads).max(PAGE_FLOATS);
    std::thread::scope(|scope| {
        for part in buf.chunks_mut(chunk) {
            scope.spawn(move || {
                for i in (0..part.len()).step_by(PAGE_FLOATS) {
                    // A volatile write: the compiler cannot drop it as a store of a known zero.
                    // SAFETY: `i < part.len()`, so the pointer is in bounds and aligned.
                    unsafe { std::ptr::write_volatile(part.as_mut_ptr().add(i), 0.0) };
                }
            });
        }
    });
}

/// `n` zeros for a table-sized buffer, backed by transparent huge pages where the kernel offers
/// them (Linux with THP in `madvise` or `always` mode).
///
/// Lookups and sparse updates touch rows scattered over the whole table; with 4 KiB pages
/// nearly every one of them misses the TLB once the table spans gigabytes, with 2 MiB pages
/// the translations of a few-GiB table fit in the TLB. The advice is given before the first
/// write, so the pages are faulted in huge; where THP is off it is a no-op.
fn table_buffer(n: usize) -> Vec<f32> {
    let mut buf = vec![0.0f32; n];
    advise_huge_pages(&mut buf);
    buf
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(buf: &mut [f32]) {
    const HUGE: usize = 2 << 20;
    let start = buf.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(buf);
    let first = start.next_multiple_of(HUGE);
    if end >= first + HUGE {
        let len = (end - first) / HUGE * HUGE;
        // SAFETY: [first, first + len) lies inside `buf`'s allocation, which `buf` borrows
        // mutably; MADV_HUGEPAGE changes how the kernel backs the pages, never their contents.
        // A refusal (THP disabled, old kernel) leaves ordinary pages, so the result is ignored.
        unsafe {
            libc::madvise(first as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_buf: &mut [f32]) {}

/// How many rows ahead [`EngramTable::gather`] and the sparse update prefetch: enough
/// misses in flight to cover a DRAM (and TLB) miss while earlier rows are copied or updated.
const PREFETCH_AHEAD: usize = 16;

/// Ask the CPU to start loading row `row` of `buf` (`dim` floats per row) into the cache.
/// A hint only: no effect on results, a no-op off x86-64.
#[inline(always)]
fn prefetch_row(buf: &[f32], row: usize, dim: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(span) = buf.get(row * dim..(row + 1) * dim) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // A row may straddle two cache lines: touch its first and last element.
        for p in [span.as_ptr(), span.as_ptr().wrapping_add(dim.saturating_sub(1))] {
            // SAFETY: prefetching never faults and both pointers lie inside `span`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (buf, row, dim);
}


/// Hand the rows `rows` of `buf` (`dim` floats per row, `buf` starting at row `first_row`) to
/// `put`, in order, prefetching [`PREFETCH_AHEAD`] rows ahead.
#[inline(always)]
fn copy_rows(buf: &[f32], first_row: usize, dim: usize, rows: &[u32], mut put: impl FnMut(&[f32])) {
    for (i, &r) in rows.iter().enumerate() {
        if let Some(&ahead) = rows.get(i + PREFETCH_AHEAD) {
            prefetch_row(buf, ahead as usize - first_row, dim);
        }
        let r = r as usize - first_row;
        put(&buf[r * dim..(r + 1) * dim]);
    }
}

/// Rows per initialisation chunk (the unit that fixes the random stream).
const INIT_CHUNK_ROWS: usize = 4096;

impl EngramTable {
    /// A table of `rows × dim` values drawn from N(0, `std`), deterministic in `seed` (and
    /// independent of the number of threads), with zero moments and step 0.
    pub fn new(rows: usize, dim: usize, std: f32, seed: u64) -> Self {
        let mut weights = table_buffer(rows * dim);
        if std != 0.0 && !weights.is_empty() {
            let chunk_len = INIT_CHUNK_ROWS * dim;
            let chunks: Vec<(usize, &mut [f32])> = weights.chunks_mut(chunk_len).enumerate().collect();
            let per_thread = chunks.len().div_ceil(crate::runtime::n_threads());
            std::thread::scope(|scope| {
                let mut chunks = chunks;
                while !chunks.is_empty() {
                    let rest = chunks.split_off(per_thread.min(chunks.len()));
                    let mine = std::mem::replace(&mut chunks, rest);
                    scope.spawn(move || {
                        for (c, out) in mine {
                            fill_normal(out, seed, c as u64, std);
                        }
                    });
                }
            });
        }
        let mut m = table_buffer(rows * dim);
        let mut v = table_buffer(rows * dim);
        prefault(&mut m);
        prefault(&mut v);
        Self { rows, dim, weights, m, v, step: 0 }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Width of a row (`d_head`).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Optimiser steps taken so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Bytes of the weights alone (what inference needs).
    pub fn weight_bytes(&self) -> usize {
        self.weights.len() * std::mem::size_of::<f32>()
    }

    /// All weights, row-major `[rows, dim]`.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// Mutable weights, row-major `[rows, dim]` (e.g. to load pretrained values).
    pub fn weights_mut(&mut self) -> &mut [f32] {
        &mut self.weights
    }

    /// First and second Adam moments, row-major `[rows, dim]`.
    pub fn moments(&self) -> (&[f32], &[f32]) {
        (&self.m, &self.v)
    }

    /// Restore the full state (weights, moments, step), e.g. from a checkpoint.
    pub fn set_state(&mut self, weights: Vec<f32>, m: Vec<f32>, v: Vec<f32>, step: u64) -> Result<(), TableError> {
        let n = self.rows * self.dim;
        for got in [weights.len(), m.len(), v.len()] {
            if got != n {
                return Err(TableError::DataShape { got, expected: n });
            }
        }
        self.weights = weights;
        self.m = m;
        self.v = v;
        for buf in [&mut self.weights, &mut self.m, &mut self.v] {
            // Already written: the kernel may collapse them into huge pages later.
            advise_huge_pages(buf);
        }
        self.step = step;
        Ok(())
    }

    fn check_rows(&self, uniq: &[u32]) -> Result<(), TableError> {
        match uniq.iter().find(|&&r| r as usize >= self.rows) {
            Some(&row) => Err(TableError::RowOutOfRange { row, rows: self.rows }),
            None => Ok(()),
        }
    }

    /// Copy the rows `uniq` into `out` (`[uniq.len(), dim]`, row-major), reusing its capacity.
    pub fn gather(&self, uniq: &[u32], out: &mut Vec<f32>) -> Result<(), TableError> {
        self.check_rows(uniq)?;
        out.clear();
        out.reserve(uniq.len() * self.dim);
        copy_rows(&self.weights, 0, self.dim, uniq, |row| out.extend_from_slice(row));
        Ok(())
    }

    /// One row-sparse Adam step for the rows `uniq` (like [`EngramTable::adam_step`] in
    /// [`UpdateMode::Sparse`]), then a copy of the rows `next` into `out` (like
    /// [`EngramTable::gather`]) — split into [`TableBlock`]s that any threads may run, in any
    /// order, with a bit-identical result.
    ///
    /// Each block owns a range of rows: it updates the rows of `uniq` in its range, then copies
    /// the rows of `next` in its range into their place in `out`. The ranges tile the table, so
    /// every row is updated before it is copied. About `block_rows` rows of `uniq` per block.
    /// The step counter advances here, once. Both lists must be strictly ascending (the
    /// batcher's unique-row pass gives them so); on any error nothing has changed.
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
        let dim = self.dim;
        if grads.len() != uniq.len() * dim {
            return Err(TableError::GradShape { got: grads.len(), expected: uniq.len() * dim, uniq: uniq.len(), dim });
        }
        let c = self.next_coeffs(lr, adam);
        out.clear();
        out.resize(next.len() * dim, 0.0);
        let block_rows = block_rows.max(1);
        let chunks: Vec<&[u32]> = if uniq.is_empty() { vec![uniq] } else { uniq.chunks(block_rows).collect() };
        let n = chunks.len();
        let (mut w, mut m, mut v) = (&mut self.weights[..], &mut self.m[..], &mut self.v[..]);
        let (mut out, mut next, mut grads) = (&mut out[..], next, grads);
        let mut blocks = Vec::with_capacity(n);
        let mut lo = 0usize;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let hi = if i + 1 == n { self.rows } else { uniq[(i + 1) * block_rows] as usize };
            let take = (hi - lo) * dim;
            let (bw, rest) = std::mem::take(&mut w).split_at_mut(take);
            w = rest;
            let (bm, rest) = std::mem::take(&mut m).split_at_mut(take);
            m = rest;
            let (bv, rest) = std::mem::take(&mut v).split_at_mut(take);
            v = rest;
            let (bg, rest) = grads.split_at(chunk.len() * dim);
            grads = rest;
            let k = next.partition_point(|&r| (r as usize) < hi);
            let (bn, rest) = next.split_at(k);
            next = rest;
            let (bo, rest) = std::mem::take(&mut out).split_at_mut(k * dim);
            out = rest;
            blocks.push(TableBlock { c, dim, first_row: lo, uniq: chunk, grads: bg, weights: bw, m: bm, v: bv, next: bn, out: bo });
            lo = hi;
        }
        Ok(blocks)
    }

    /// Advance the step counter and return the Adam coefficients of the new step.
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
        }
    }

    /// One Adam step at learning rate `lr` with gradient `grads` (`[uniq.len(), dim]`) for the
    /// distinct rows `uniq`. See the module docs for the lazy semantics of [`UpdateMode::Sparse`].
    /// `uniq` must not repeat a row (the batcher's unique-row pass guarantees it).
    pub fn adam_step(
        &mut self,
        uniq: &[u32],
        grads: &[f32],
        lr: f32,
        adam: &TableAdam,
        mode: UpdateMode,
    ) -> Result<(), TableError> {
        self.check_rows(uniq)?;
        let dim = self.dim;
        if grads.len() != uniq.len() * dim {
            return Err(TableError::GradShape { got: grads.len(), expected: uniq.len() * dim, uniq: uniq.len(), dim });
        }
        let c = self.next_coeffs(lr, adam);
        match mode {
            UpdateMode::Sparse => sparse_update(&c, uniq, grads, dim, 0, &mut self.weights, &mut self.m, &mut self.v),
            UpdateMode::Dense => {
                // Scatter the sparse gradient into a dense one (rows not looked up get zeros),
                // then update every row: the O(rows) baseline.
                let mut dense = vec![0.0f32; self.rows * dim];
                for (i, &r) in uniq.iter().enumerate() {
                    let r = r as usize;
                    dense[r * dim..(r + 1) * dim].copy_from_slice(&grads[i * dim..(i + 1) * dim]);
                }
                let threads = crate::runtime::n_threads();
                let chunk = (self.rows.div_ceil(threads)).max(1) * dim;
                std::thread::scope(|scope| {
                    for (((w, m), v), g) in self
                        .weights
                        .chunks_mut(chunk)
                        .zip(self.m.chunks_mut(chunk))
                        .zip(self.v.chunks_mut(chunk))
                        .zip(dense.chunks(chunk))
                    {
                        scope.spawn(move || c.update(w, m, v, g));
                    }
                });
            }
        }
        Ok(())
    }
}

/// Part of one [`EngramTable::update_then_gather`]: the rows of one range of the table to
/// update, then to copy out. Blocks of one call touch disjoint memory.
pub struct TableBlock<'a> {
    c: AdamCoeffs,
    dim: usize,
    /// First row of the range; `weights`, `m` and `v` start there.
    first_row: usize,
    uniq: &'a [u32],
    grads: &'a [f32],
    weights: &'a mut [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
    next: &'a [u32],
    out: &'a mut [f32],
}

impl TableBlock<'_> {
    /// Update this range's rows, then copy its gathered rows out.
    pub fn run(self) {
        let Self { c, dim, first_row, uniq, grads, weights, m, v, next, out } = self;
        sparse_update(&c, uniq, grads, dim, first_row, weights, m, v);
        let mut dst = out.chunks_exact_mut(dim);
        copy_rows(weights, first_row, dim, next, |row| dst.next().expect("`out` holds a row per gathered id").copy_from_slice(row));
    }
}

#[derive(Clone, Copy)]
struct AdamCoeffs {
    lr: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    bc1: f32,
    bc2: f32,
}

simd_kernel! {
    /// The lazy Adam update of rows `uniq` (gradient rows `grads`), in that order; `weights`,
    /// `m` and `v` start at row `first_row`.
    #[allow(clippy::too_many_arguments)]
    fn sparse_update(c: &AdamCoeffs, uniq: &[u32], grads: &[f32], dim: usize, first_row: usize, weights: &mut [f32], m: &mut [f32], v: &mut [f32]) {
        for (i, &r) in uniq.iter().enumerate() {
            if let Some(&ahead) = uniq.get(i + PREFETCH_AHEAD) {
                for buf in [&*weights, &*m, &*v] {
                    prefetch_row(buf, ahead as usize - first_row, dim);
                }
            }
            let r = r as usize - first_row;
            let span = r * dim..(r + 1) * dim;
            c.update(&mut weights[span.clone()], &mut m[span.clone()], &mut v[span], &grads[i * dim..(i + 1) * dim]);
        }
    }
}

impl AdamCoeffs {
    #[inline(always)]
    fn update(&self, w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        for (((w, m), v), &g) in w.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
            *m = self.b1 * *m + (1.0 - self.b1) * g;
            *v = self.b2 * *v + (1.0 - self.b2) * g * g;
            let mhat = *m / self.bc1;
            let vhat = *v / self.bc2;
            *w -= self.lr * mhat / (vhat.sqrt() + self.eps);
        }
    }
}

#[cfg(test)]
mod tests;
