//! Batches of training windows with their Engram row ids computed ahead of the forward pass.
//!
//! Spec §0: row ids depend only on the input ids, so they are computed once per batch here, in
//! the loader, for every Engram layer — never inside `forward` and never once per layer as the
//! reference demo does. The same pass extracts the distinct rows of each layer and the inverse
//! positions that the row-sparse table update needs.

use crate::engram::EngramControl;
use crate::hashing::{unique_rows_with, HashError, NgramHasher, Pcg64, UniqueScratch};

/// Row ids of one Engram layer for one batch.
#[derive(Clone, Debug, Default)]
pub struct LayerRows {
    /// Absolute row of every (sequence, position, head), `[B][T][H]` row-major.
    pub rows: Vec<u32>,
    /// Distinct rows, ascending.
    pub uniq: Vec<u32>,
    /// `rows[i] == uniq[inverse[i]]`.
    pub inverse: Vec<u32>,
}

/// One batch on the host.
#[derive(Clone, Debug, Default)]
pub struct HostBatch {
    /// Batch size B.
    pub batch: usize,
    /// Sequence length T.
    pub seq_len: usize,
    /// Input model ids `[B][T]`.
    pub inputs: Vec<u32>,
    /// Next-token targets `[B][T]`.
    pub targets: Vec<u32>,
    /// Per Engram layer (in block order) its rows.
    pub layers: Vec<LayerRows>,
}

/// What the batcher hashes for Engram.
#[derive(Debug)]
pub struct EngramHashing {
    /// The hasher (multipliers and primes of every Engram layer).
    pub hasher: NgramHasher,
    /// Model id → compressed id (identity when compression is off).
    pub compress: Vec<u32>,
    /// Control experiment.
    pub control: EngramControl,
}

impl EngramHashing {
    /// Rows of each layer's table: `Σ primes`, or `H` for the size-one control.
    pub fn table_rows(&self) -> Vec<usize> {
        let h = self.hasher.heads_per_layer();
        self.hasher
            .layers()
            .iter()
            .map(|l| if self.control == EngramControl::SizeOneTable { h } else { l.total_rows as usize })
            .collect()
    }
}

/// Builds [`HostBatch`]es from a token stream.
#[derive(Debug)]
pub struct Batcher {
    /// Batch size B.
    pub batch: usize,
    /// Sequence length T.
    pub seq_len: usize,
    engram: Option<EngramHashing>,
    compressed: Vec<u32>,
    scratch: Vec<Vec<u32>>,
    unique: UniqueScratch,
}

impl Batcher {
    /// A batcher of `batch × seq_len` windows; `engram` is `None` for a baseline.
    pub fn new(batch: usize, seq_len: usize, engram: Option<EngramHashing>) -> Self {
        Self { batch, seq_len, engram, compressed: Vec::new(), scratch: Vec::new(), unique: UniqueScratch::default() }
    }

    /// The Engram hashing, if any.
    pub fn engram(&self) -> Option<&EngramHashing> {
        self.engram.as_ref()
    }

    /// Window starts for a training batch: `B` uniform draws in `0..=len − T − 1`.
    pub fn sample_starts(&self, stream_len: usize, rng: &mut Pcg64) -> Vec<usize> {
        let span = (stream_len - self.seq_len - 1 + 1) as u64;
        (0..self.batch).map(|_| rng.below(span) as usize).collect()
    }

    /// Evenly spaced, deterministic window starts covering a validation stream: `n` windows.
    pub fn eval_starts(&self, stream_len: usize, n: usize) -> Vec<usize> {
        let last = stream_len - self.seq_len - 1;
        if n <= 1 {
            return vec![0];
        }
        (0..n).map(|i| i * last / (n - 1)).collect()
    }

    /// Fill `out` with the windows starting at `starts` (exactly `B` of them) of `stream`
    /// (model ids): inputs, targets, and the rows of every Engram layer.
    pub fn make(&mut self, stream: &[u32], starts: &[usize], out: &mut HostBatch) -> Result<(), HashError> {
        let (b, t) = (self.batch, self.seq_len);
        assert_eq!(starts.len(), b, "one start per sequence");
        out.batch = b;
        out.seq_len = t;
        out.inputs.clear();
        out.targets.clear();
        for &s in starts {
            out.inputs.extend_from_slice(&stream[s..s + t]);
            out.targets.extend_from_slice(&stream[s + 1..s + t + 1]);
        }
        let Some(eng) = &self.engram else {
            out.layers.clear();
            return Ok(());
        };
        self.compressed.clear();
        self.compressed.extend(out.inputs.iter().map(|&x| eng.compress[x as usize]));
        eng.hasher.hash_batch_rows(&self.compressed, b, t, &mut self.scratch)?;
        let h = eng.hasher.heads_per_layer();
        out.layers.resize_with(self.scratch.len(), LayerRows::default);
        for (layer, rows) in out.layers.iter_mut().zip(self.scratch.iter()) {
            apply_control(eng.control, rows, b, t, h, &mut layer.rows);
            unique_rows_with(&layer.rows, &mut layer.uniq, &mut layer.inverse, &mut self.unique);
        }
        Ok(())
    }
}

/// Apply a control to one layer's hashed rows (`[B][T][H]`), writing into `out`.
///
/// * [`EngramControl::None`] and the controls that keep the hash (frozen table, constant or
///   scalar gate): a copy.
/// * [`EngramControl::ShuffledHash`]: sequence `b` takes the rows of sequence `(b + 1) mod B`
///   (a fixed derangement for B ≥ 2), so the multiset of rows in the batch is unchanged.
/// * [`EngramControl::SizeOneTable`]: head `h` always reads row `h` (one row per head).
pub fn apply_control(control: EngramControl, rows: &[u32], batch: usize, seq_len: usize, heads: usize, out: &mut Vec<u32>) {
    let per_seq = seq_len * heads;
    out.clear();
    match control {
        EngramControl::None | EngramControl::FrozenTable | EngramControl::ConstantGate | EngramControl::ScalarGate => out.extend_from_slice(rows),
        EngramControl::ShuffledHash => {
            for b in 0..batch {
                let src = (b + 1) % batch;
                out.extend_from_slice(&rows[src * per_seq..(src + 1) * per_seq]);
            }
        }
        EngramControl::SizeOneTable => {
            out.extend((0..batch * seq_len).flat_map(|_| 0..heads as u32));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_for(batch: usize, t: usize, h: usize) -> Vec<u32> {
        (0..(batch * t * h) as u32).map(|x| x * 7 + 3).collect()
    }

    #[test]
    fn shuffled_hash_gives_each_sequence_another_sequences_rows() {
        let (b, t, h) = (4, 5, 3);
        let rows = rows_for(b, t, h);
        let mut out = Vec::new();
        apply_control(EngramControl::ShuffledHash, &rows, b, t, h, &mut out);
        let per = t * h;
        for s in 0..b {
            let mine = &out[s * per..(s + 1) * per];
            assert_ne!(mine, &rows[s * per..(s + 1) * per], "sequence {s} kept its own rows");
            assert!((0..b).any(|o| o != s && mine == &rows[o * per..(o + 1) * per]));
        }
        let (mut a, mut c) = (rows.clone(), out.clone());
        a.sort_unstable();
        c.sort_unstable();
        assert_eq!(a, c, "same multiset of rows per batch");
    }

    #[test]
    fn size_one_control_has_one_row_per_head() {
        let (b, t, h) = (3, 4, 6);
        let mut out = Vec::new();
        apply_control(EngramControl::SizeOneTable, &rows_for(b, t, h), b, t, h, &mut out);
        for (i, &r) in out.iter().enumerate() {
            assert_eq!(r as usize, i % h);
        }
        let distinct: std::collections::BTreeSet<_> = out.iter().collect();
        assert_eq!(distinct.len(), h);
    }

    #[test]
    fn no_control_is_the_identity() {
        let rows = rows_for(2, 3, 4);
        let mut out = Vec::new();
        apply_control(EngramControl::None, &rows, 2, 3, 4, &mut out);
        assert_eq!(out, rows);
    }
}
