//! One table row as stored: its record layout, its deterministic initial value, and the
//! optimiser updates that act on it in place.
//!
//! # Record
//! A row is one contiguous record of 32-bit words, the same in every store (so a row is one
//! page-in on disk, not three):
//! ```text
//! word 0            the row id (lets a file-backed store rebuild its index from the file)
//! weights           dim f32 words, or ⌈dim/2⌉ words of two bf16 each (element 2k in the low half)
//! optimiser state   Adam: m [dim] then v [dim] (f32); row-wise: one f32 second moment
//! ```
//! Bytes per parameter at `d_head = 16`: Adam f32 12.25, row-wise f32 4.5, row-wise bf16 2.5.
//!
//! # Initial value
//! Row `r`'s initial weights are a pure function of (seed, r): the same N(0, std) values the
//! table's first implementation drew chunk by chunk ([`INIT_CHUNK_ROWS`] rows per chunk, a
//! SplitMix64 stream per chunk, Box–Muller pairs), computed here for one row without the rows
//! before it. SplitMix64 is a counter-based generator — its k-th output is a mix of
//! `state + k·γ` — so any row's values come straight from its position. Each layer's table has
//! its own seed (derived from the run's seed and the layer). A row can therefore be
//! materialised when it is first touched and untouched rows cost nothing, with results
//! bit-identical to a table initialised whole at construction.

use serde::{Deserialize, Serialize};

/// Rows per initialisation chunk (the unit that fixes the random stream).
pub const INIT_CHUNK_ROWS: usize = 4096;
/// Widest row a bf16 table supports (its rows are widened into a stack buffer to update).
pub const MAX_BF16_DIM: usize = 1024;

/// The optimiser state a table keeps per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TableOptimizer {
    /// Adam: two f32 moments per value (8 bytes per parameter).
    #[default]
    Adam,
    /// Row-wise: one f32 second moment per row, no first moment (FBGEMM's row-wise AdaGrad and
    /// nanochat's host table keep one scalar per row). `v ← β2 v + (1−β2)·mean_j(g_j²)`,
    /// `w ← w − lr · g / (sqrt(v / (1−β2^t)) + ε)`: Adam without momentum, with the second moment
    /// shared by the row. ≈ 4/d bytes of state per parameter.
    RowWise,
}

/// How a table stores its weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WeightFormat {
    /// 32-bit floats.
    #[default]
    F32,
    /// bfloat16 with no f32 master copy: the update is computed in f32 and rounded back
    /// stochastically (a deterministic function of seed, step, row and element), so updates
    /// smaller than half a bf16 step are kept in expectation instead of lost. The initial
    /// values are rounded to nearest.
    Bf16,
}

/// The record layout of a table's rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowLayout {
    /// Values per row (`d_head`).
    pub dim: usize,
    /// Optimiser state per row.
    pub optimizer: TableOptimizer,
    /// Weight storage.
    pub weights: WeightFormat,
}

/// Adam (or row-wise) coefficients of one step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdamCoeffs {
    pub(crate) lr: f32,
    pub(crate) b1: f32,
    pub(crate) b2: f32,
    pub(crate) eps: f32,
    pub(crate) bc1: f32,
    pub(crate) bc2: f32,
    /// The step these coefficients belong to (stochastic rounding's counter).
    pub(crate) step: u64,
}

impl AdamCoeffs {
    #[inline(always)]
    fn adam(&self, w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        for (((w, m), v), &g) in w.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
            *m = self.b1 * *m + (1.0 - self.b1) * g;
            *v = self.b2 * *v + (1.0 - self.b2) * g * g;
            let mhat = *m / self.bc1;
            let vhat = *v / self.bc2;
            *w -= self.lr * mhat / (vhat.sqrt() + self.eps);
        }
    }

    #[inline(always)]
    fn row_wise(&self, w: &mut [f32], v: &mut f32, g: &[f32]) {
        let g2 = g.iter().map(|&g| g * g).sum::<f32>() / g.len().max(1) as f32;
        *v = self.b2 * *v + (1.0 - self.b2) * g2;
        let denom = (*v / self.bc2).sqrt() + self.eps;
        for (w, &g) in w.iter_mut().zip(g) {
            *w -= self.lr * g / denom;
        }
    }
}

/// SplitMix64's output function.
#[inline(always)]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
const CHUNK_KEY: u64 = 0xD6E8_FEB8_6659_FD93;

/// The N(0, std) initialisation of a table, seeded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Init {
    /// Seed of this table.
    pub seed: u64,
    /// Standard deviation (0 gives zeros).
    pub std: f32,
}

impl Init {
    /// Row `row`'s initial weights (`out.len()` = dim values).
    pub fn row(&self, row: usize, out: &mut [f32]) {
        let dim = out.len();
        if self.std == 0.0 {
            out.fill(0.0);
            return;
        }
        let chunk = (row / INIT_CHUNK_ROWS) as u64;
        let s0 = self.seed ^ chunk.wrapping_mul(CHUNK_KEY);
        let first = (row % INIT_CHUNK_ROWS) * dim;
        let mut j = 0;
        while j < dim {
            let i = first + j;
            let pair = (i / 2) as u64;
            // The pair's two draws are the stream's outputs 2·pair + 1 and 2·pair + 2.
            let u1 = ((mix64(s0.wrapping_add((2 * pair + 1).wrapping_mul(GAMMA))) >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64);
            let u2 = (mix64(s0.wrapping_add((2 * pair + 2).wrapping_mul(GAMMA))) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
            let r = (-2.0 * u1.ln()).sqrt();
            let (sin, cos) = (2.0 * std::f64::consts::PI * u2).sin_cos();
            if i.is_multiple_of(2) {
                out[j] = (r * cos) as f32 * self.std;
                if j + 1 < dim {
                    out[j + 1] = (r * sin) as f32 * self.std;
                }
                j += 2;
            } else {
                out[j] = (r * sin) as f32 * self.std;
                j += 1;
            }
        }
    }
}

/// bf16 bits of `x`, rounded to nearest even.
#[inline(always)]
pub(crate) fn bf16_nearest(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// bf16 bits of `x`, rounded stochastically with the 16 random bits `r`: up with probability
/// equal to the dropped fraction.
#[inline(always)]
fn bf16_stochastic(x: f32, r: u16) -> u16 {
    let b = x.to_bits();
    if !x.is_finite() {
        return bf16_nearest(x);
    }
    let up = b.wrapping_add(u32::from(r));
    // Rounding up must not turn the largest finite value into infinity.
    if f32::from_bits(up & 0xFFFF_0000).is_infinite() {
        return (b >> 16) as u16;
    }
    (up >> 16) as u16
}

impl RowLayout {
    /// Words of the weights.
    pub fn weight_words(&self) -> usize {
        match self.weights {
            WeightFormat::F32 => self.dim,
            WeightFormat::Bf16 => self.dim.div_ceil(2),
        }
    }

    /// Words of the optimiser state.
    pub fn state_words(&self) -> usize {
        match self.optimizer {
            TableOptimizer::Adam => 2 * self.dim,
            TableOptimizer::RowWise => 1,
        }
    }

    /// Words per record (row id + weights + state).
    pub fn record_words(&self) -> usize {
        1 + self.weight_words() + self.state_words()
    }

    /// Bytes per record.
    pub fn record_bytes(&self) -> usize {
        4 * self.record_words()
    }

    /// Bytes per parameter (record bytes / dim).
    pub fn bytes_per_parameter(&self) -> f64 {
        self.record_bytes() as f64 / self.dim as f64
    }

    /// A small integer naming the layout's formats (stored in checkpoints and table files).
    pub fn code(&self) -> u32 {
        let o = match self.optimizer {
            TableOptimizer::Adam => 0,
            TableOptimizer::RowWise => 1,
        };
        let w = match self.weights {
            WeightFormat::F32 => 0,
            WeightFormat::Bf16 => 1,
        };
        o | (w << 8)
    }

    /// Write row `row`'s initial record into `rec`.
    pub(crate) fn init_record(&self, row: u32, init: &Init, rec: &mut [u32]) {
        rec[0] = row;
        let ww = self.weight_words();
        match self.weights {
            WeightFormat::F32 => init.row(row as usize, bytemuck::cast_slice_mut(&mut rec[1..1 + ww])),
            WeightFormat::Bf16 => {
                let mut buf = [0f32; MAX_BF16_DIM];
                init.row(row as usize, &mut buf[..self.dim]);
                let halves: &mut [u16] = bytemuck::cast_slice_mut(&mut rec[1..1 + ww]);
                for (h, &x) in halves.iter_mut().zip(&buf[..self.dim]) {
                    *h = bf16_nearest(x);
                }
                if self.dim % 2 == 1 {
                    halves[self.dim] = 0;
                }
            }
        }
        rec[1 + ww..].fill(0);
    }

    /// Row `row`'s initial weights as its record stores them (rounded to bf16 for a bf16
    /// table), widened to f32: what reading the row gives before it is first updated.
    pub(crate) fn init_weights(&self, row: u32, init: &Init, out: &mut [f32]) {
        init.row(row as usize, out);
        if self.weights == WeightFormat::Bf16 {
            for x in out.iter_mut() {
                *x = f32::from_bits(u32::from(bf16_nearest(*x)) << 16);
            }
        }
    }

    /// Overwrite record `rec` with row `row`, the weights `w` and a zero optimiser state (an
    /// imported row: trained weights, no optimiser history). A bf16 table takes only values
    /// that bf16 holds exactly; the first that it does not is returned as `Err(index)`, and
    /// the record is then unchanged.
    pub(crate) fn write_record(&self, row: u32, w: &[f32], rec: &mut [u32]) -> Result<(), usize> {
        let ww = self.weight_words();
        if self.weights == WeightFormat::Bf16 {
            if let Some(j) = w.iter().position(|&x| u32::from(bf16_nearest(x)) << 16 != x.to_bits()) {
                return Err(j);
            }
        }
        rec[0] = row;
        match self.weights {
            WeightFormat::F32 => rec[1..1 + ww].copy_from_slice(bytemuck::cast_slice(w)),
            WeightFormat::Bf16 => {
                let halves: &mut [u16] = bytemuck::cast_slice_mut(&mut rec[1..1 + ww]);
                for (h, &x) in halves.iter_mut().zip(w) {
                    *h = bf16_nearest(x);
                }
                if self.dim % 2 == 1 {
                    halves[self.dim] = 0;
                }
            }
        }
        rec[1 + ww..].fill(0);
        Ok(())
    }

    /// The weights of record `rec`, widened to f32, into `out`.
    #[inline(always)]
    pub(crate) fn read_weights(&self, rec: &[u32], out: &mut [f32]) {
        let ww = self.weight_words();
        match self.weights {
            WeightFormat::F32 => out.copy_from_slice(bytemuck::cast_slice(&rec[1..1 + ww])),
            WeightFormat::Bf16 => {
                let halves: &[u16] = bytemuck::cast_slice(&rec[1..1 + ww]);
                for (o, &h) in out.iter_mut().zip(halves) {
                    *o = f32::from_bits(u32::from(h) << 16);
                }
            }
        }
    }

    /// One optimiser step of record `rec` with gradient `g`; `sr_seed` keys the stochastic
    /// rounding of bf16 weights.
    #[inline(always)]
    pub(crate) fn update(&self, c: &AdamCoeffs, rec: &mut [u32], g: &[f32], sr_seed: u64) {
        let (dim, ww) = (self.dim, self.weight_words());
        let row = rec[0];
        let (wpart, state) = rec[1..].split_at_mut(ww);
        let state: &mut [f32] = bytemuck::cast_slice_mut(state);
        let step = |w: &mut [f32], state: &mut [f32]| match self.optimizer {
            TableOptimizer::Adam => {
                let (m, v) = state.split_at_mut(dim);
                c.adam(w, m, v, g)
            }
            TableOptimizer::RowWise => c.row_wise(w, &mut state[0], g),
        };
        match self.weights {
            WeightFormat::F32 => step(bytemuck::cast_slice_mut(wpart), state),
            WeightFormat::Bf16 => {
                let mut buf = [0f32; MAX_BF16_DIM];
                let w = &mut buf[..dim];
                let halves: &mut [u16] = bytemuck::cast_slice_mut(wpart);
                for (o, &h) in w.iter_mut().zip(halves.iter()) {
                    *o = f32::from_bits(u32::from(h) << 16);
                }
                step(w, state);
                let key = mix64(sr_seed ^ c.step.wrapping_mul(GAMMA) ^ u64::from(row).wrapping_mul(CHUNK_KEY));
                for (j, (h, &x)) in halves.iter_mut().zip(w.iter()).enumerate() {
                    let bits = mix64(key.wrapping_add((j as u64 / 4 + 1).wrapping_mul(GAMMA)));
                    *h = bf16_stochastic(x, (bits >> (16 * (j % 4))) as u16);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's first implementation of the initialisation: one SplitMix64 stream per chunk
    /// of rows, drawn sequentially. The per-row formula must reproduce it exactly.
    fn sequential_chunk(out: &mut [f32], seed: u64, chunk: u64, std: f32) {
        let mut s = seed ^ chunk.wrapping_mul(CHUNK_KEY);
        let mut next = || {
            s = s.wrapping_add(GAMMA);
            mix64(s)
        };
        let mut i = 0;
        while i < out.len() {
            let u1 = ((next() >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64);
            let u2 = (next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
            let r = (-2.0 * u1.ln()).sqrt();
            let (sin, cos) = (2.0 * std::f64::consts::PI * u2).sin_cos();
            out[i] = (r * cos) as f32 * std;
            if i + 1 < out.len() {
                out[i + 1] = (r * sin) as f32 * std;
            }
            i += 2;
        }
    }

    #[test]
    fn a_rows_initial_value_equals_the_sequential_chunk_stream_bit_for_bit() {
        for (rows, dim) in [(5000usize, 16usize), (4100, 3), (9, 1), (4097, 5)] {
            let init = Init { seed: 77, std: 0.02 };
            let mut want = vec![0f32; rows * dim];
            for (c, chunk) in want.chunks_mut(INIT_CHUNK_ROWS * dim).enumerate() {
                sequential_chunk(chunk, init.seed, c as u64, init.std);
            }
            let mut got = vec![0f32; dim];
            for r in [0, 1, 2, 4095, 4096, 4097, rows - 1].into_iter().filter(|&r| r < rows) {
                init.row(r, &mut got);
                let w: Vec<u32> = want[r * dim..(r + 1) * dim].iter().map(|x| x.to_bits()).collect();
                assert_eq!(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), w, "rows {rows} dim {dim} row {r}");
            }
        }
        let mut z = [1f32; 4];
        Init { seed: 1, std: 0.0 }.row(3, &mut z);
        assert_eq!(z.map(f32::to_bits), [0; 4], "std 0 gives +0.0");
    }

    #[test]
    fn bf16_rounding_to_nearest_even_and_stochastic_bounds() {
        // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1 + 2^-7: ties go to even (1.0).
        assert_eq!(bf16_nearest(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(bf16_nearest(1.0 + 3.0 / 256.0), 0x3F82);
        assert_eq!(bf16_nearest(-2.0), 0xC000);
        let x = 1.0 + 1.0 / 512.0; // a quarter of the way from 1.0 to the next bf16
        let ups = (0..=u16::MAX).filter(|&r| bf16_stochastic(x, r) == 0x3F81).count();
        assert_eq!(ups, 1 << 14, "rounds up for exactly a quarter of the random values");
        assert!((0..=u16::MAX).all(|r| matches!(bf16_stochastic(x, r), 0x3F80 | 0x3F81)));
        assert_eq!(bf16_stochastic(f32::MAX, u16::MAX), 0x7F7F, "no overflow to infinity");
    }

    #[test]
    fn record_sizes_per_parameter() {
        let l = |optimizer, weights| RowLayout { dim: 16, optimizer, weights }.bytes_per_parameter();
        assert_eq!(l(TableOptimizer::Adam, WeightFormat::F32), 12.25);
        assert_eq!(l(TableOptimizer::RowWise, WeightFormat::F32), 4.5);
        assert_eq!(l(TableOptimizer::RowWise, WeightFormat::Bf16), 2.5);
    }

    #[test]
    fn row_wise_step_matches_the_formula_by_hand() {
        // One row of two values, g = (3, 4): mean g² = 12.5; v = (1 − 0.9)·12.5 = 1.25 at step 1
        // with β2 = 0.9, v̂ = 1.25 / 0.1 = 12.5, denominator sqrt(12.5) + 0 ≈ 3.5355.
        let layout = RowLayout { dim: 2, optimizer: TableOptimizer::RowWise, weights: WeightFormat::F32 };
        let mut rec = vec![7u32, 1.0f32.to_bits(), 2.0f32.to_bits(), 0];
        let c = AdamCoeffs { lr: 0.5, b1: 0.0, b2: 0.9, eps: 0.0, bc1: 1.0, bc2: 0.1, step: 1 };
        layout.update(&c, &mut rec, &[3.0, 4.0], 0);
        let w: Vec<f32> = rec[1..3].iter().map(|&b| f32::from_bits(b)).collect();
        let d = 12.5f32.sqrt();
        assert!((w[0] - (1.0 - 0.5 * 3.0 / d)).abs() < 1e-6 && (w[1] - (2.0 - 0.5 * 4.0 / d)).abs() < 1e-6, "{w:?}");
        assert!((f32::from_bits(rec[3]) - 1.25).abs() < 1e-6);
        assert_eq!(rec[0], 7, "the row id is untouched");
    }
}
