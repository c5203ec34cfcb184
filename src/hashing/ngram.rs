//! The Engram n-gram hash: compressed token ids → per-head table rows.
//!
//! Paper: Cheng et al., "Conditional Memory via Scalable Lookup", arXiv 2601.07372, §2.2
//! (multi-head hashing of suffix n-grams). Reference: deepseek-ai/Engram `engram_demo_v1.py`,
//! `NgramHashMapping`. For Engram layer ℓ (block `layer_ids[ℓ]`), position `t`, order
//! `n = 2..N` and head `j = 0..K`:
//!
//! ```text
//! s_k[t]   = x'[t − k] if t ≥ k else pad'          k = 0..N−1 (no reset at document ends)
//! mix_n[t] = (s_0·m_0) XOR (s_1·m_1) XOR … XOR (s_{n−1}·m_{n−1})
//! id       = mix_n[t] mod p_{n,j}                   every head of an order shares one mix
//! row      = id + offset_{n,j}                      offsets: prefix sums in (order, head) order
//! ```
//!
//! with odd multipliers `m_k = 2·r_k + 1`, `r = default_rng(seed + 10007·layer_id)
//! .integers(0, half_bound, N)` and `half_bound = max(1, ⌊⌊(2^63 − 1)/V'⌋ / 2⌋)`.
//!
//! Deviations from the demo (bits are identical): `u64` instead of `int64` arithmetic (every
//! product is `< 2^63` by construction), `mod` by a precomputed reciprocal ([`FastMod`]) instead
//! of a division, hashing once per batch for all layers (optionally multi-threaded), limits
//! (`u32` ids, at most [`MAX_TABLE_ROWS`] rows per layer, distinct `layer_ids`) checked with
//! typed errors.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::numpy_rng::Pcg64;
use super::primes::prime_walk;
use super::error::HashError;

/// Per-layer seed stride: layer `ℓ`'s multipliers come from `default_rng(seed + 10007·ℓ)` (demo).
pub const SEED_LAYER_STRIDE: u64 = 10_007;
/// `2^63 − 1` (numpy's `np.iinfo(np.int64).max`), the bound that keeps every product in int64.
pub const INT64_MAX: u64 = i64::MAX as u64;
/// Largest table a layer may have: row ids are stored in burn `i32` tensors.
pub const MAX_TABLE_ROWS: u64 = i32::MAX as u64;
/// Demo per-order table-size hint: `129280 · 5` (the DeepSeek-V3 embedding rows × 5).
pub const DEMO_ENGRAM_VOCAB_SIZE: u64 = 646_400;
/// Demo maximum n-gram order `N`.
pub const DEMO_MAX_NGRAM_SIZE: usize = 3;
/// Demo hash heads per order `K`.
pub const DEMO_N_HEAD_PER_NGRAM: usize = 8;
/// Demo Engram block indices, exactly as written in the demo (`layer_ids = [1, 15]`).
pub const DEMO_LAYER_IDS: [usize; 2] = [1, 15];
/// Demo raw pad id (`pad_id = 2` in the demo).
pub const DEMO_PAD_ID: u32 = 2;
/// Below this many tokens, batch hashing stays on the calling thread.
pub const PARALLEL_MIN_TOKENS: usize = 4096;
/// Minimum tokens per worker thread in batch hashing.
const MIN_TOKENS_PER_THREAD: usize = 2048;

/// Hash hyper-parameters (the demo's `EngramConfig` minus the layer sizes).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HashConfig {
    /// Largest n-gram order `N` (orders `2..=N` are hashed); `>= 2`.
    pub max_ngram_size: usize,
    /// Heads (distinct primes) per order `K`; `>= 1`.
    pub n_head_per_ngram: usize,
    /// Per-order table-size hint, length `N − 1`: each order's primes start above `size − 1`.
    pub engram_vocab_size: Vec<u64>,
    /// Block indices that carry an Engram layer, in table order; distinct, non-empty.
    pub layer_ids: Vec<usize>,
    /// Base seed of the multiplier RNG.
    pub seed: u64,
    /// RAW (uncompressed) pad id; the hasher takes its compressed image separately.
    pub pad_id: u32,
}

impl HashConfig {
    /// The demo layout: `engram_vocab_size [646400, 646400]`, `N = 3`, `K = 8`,
    /// `layer_ids [1, 15]`, seed 0, pad id 2.
    pub fn demo() -> Self {
        Self {
            max_ngram_size: DEMO_MAX_NGRAM_SIZE,
            n_head_per_ngram: DEMO_N_HEAD_PER_NGRAM,
            engram_vocab_size: vec![DEMO_ENGRAM_VOCAB_SIZE; DEMO_MAX_NGRAM_SIZE - 1],
            layer_ids: DEMO_LAYER_IDS.to_vec(),
            seed: 0,
            pad_id: DEMO_PAD_ID,
        }
    }

    /// Checks every field; the error names the field, its value and what is allowed.
    pub fn validate(&self) -> Result<(), HashError> {
        let bad = |field: &'static str, value: String, allowed: String| {
            Err(HashError::InvalidConfig { field, value, allowed })
        };
        if self.max_ngram_size < 2 {
            return bad("max_ngram_size", self.max_ngram_size.to_string(), ">= 2".into());
        }
        if self.n_head_per_ngram == 0 {
            return bad("n_head_per_ngram", "0".into(), ">= 1".into());
        }
        if self.engram_vocab_size.len() != self.max_ngram_size - 1 {
            return bad(
                "engram_vocab_size",
                format!("{:?} (length {})", self.engram_vocab_size, self.engram_vocab_size.len()),
                format!("exactly max_ngram_size - 1 = {} entries", self.max_ngram_size - 1),
            );
        }
        if let Some(v) = self.engram_vocab_size.iter().find(|&&v| v == 0 || v > MAX_TABLE_ROWS) {
            return bad(
                "engram_vocab_size",
                format!("{:?} (entry {v})", self.engram_vocab_size),
                format!("entries in 1..={MAX_TABLE_ROWS}"),
            );
        }
        if self.layer_ids.is_empty() {
            return bad("layer_ids", "[]".into(), "at least one block index".into());
        }
        let mut seen = HashSet::new();
        if let Some(dup) = self.layer_ids.iter().find(|&&l| !seen.insert(l)) {
            return bad(
                "layer_ids",
                format!("{:?} (duplicate {dup})", self.layer_ids),
                "distinct block indices".into(),
            );
        }
        Ok(())
    }

    /// Ids per token per layer: `(N − 1)·K`.
    pub fn heads_per_layer(&self) -> usize {
        self.max_ngram_size.saturating_sub(1) * self.n_head_per_ngram
    }
}

/// `a mod d` for `a < 2^63` and `2 <= d <= 2^32` without a division (Granlund & Montgomery
/// 1994, Thm 4.2, with `N = 63`-bit numerators): `m = ⌊2^(63+ℓ)/d⌋ + 1`, `ℓ = ⌈log2 d⌉`,
/// `⌊a/d⌋ = ⌊a·m / 2^(63+ℓ)⌋` — one widening multiply, one shift, one multiply-subtract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastMod {
    d: u64,
    m: u64,
    /// `ℓ − 1`: shift applied to the high 64 bits of `a·m`.
    shift: u32,
}

impl FastMod {
    /// Largest supported divisor.
    pub const MAX_DIVISOR: u64 = 1 << 32;
    /// Exclusive bound on numerators: `2^63`.
    pub const NUMERATOR_BOUND: u64 = 1 << 63;

    /// Precomputes the reciprocal of `d`; `None` unless `2 <= d <= 2^32`.
    pub fn new(d: u64) -> Option<Self> {
        if !(2..=Self::MAX_DIVISOR).contains(&d) {
            return None;
        }
        let l = 64 - (d - 1).leading_zeros(); // ⌈log2 d⌉ ∈ 1..=32
        let m = (1u128 << (63 + l)) / u128::from(d) + 1;
        Some(Self { d, m: u64::try_from(m).ok()?, shift: l - 1 })
    }

    /// The divisor `d`.
    pub fn divisor(&self) -> u64 {
        self.d
    }

    /// `a % d`; exact for every `a < 2^63` (debug-asserted).
    #[inline(always)]
    pub fn rem(&self, a: u64) -> u64 {
        debug_assert!(a < Self::NUMERATOR_BOUND);
        let q = ((u128::from(a) * u128::from(self.m)) >> 64) as u64 >> self.shift;
        a - q * self.d
    }
}

/// One head's precomputed modulus and row offset.
#[derive(Clone, Copy, Debug)]
struct Head {
    modulus: FastMod,
    offset: u32,
}

/// Everything one Engram layer needs to hash: multipliers, primes, offsets.
#[derive(Clone, Debug)]
pub struct LayerHash {
    /// Block index (`layer_ids[i]`).
    pub layer_id: usize,
    /// `max(1, ⌊⌊(2^63 − 1)/V'⌋ / 2⌋)`: exclusive bound of the random draws.
    pub half_bound: u64,
    /// `m_k = 2·r_k + 1`, `k = 0..N` (one per look-back distance, shared by all orders).
    pub multipliers: Vec<u64>,
    /// Table primes `[order − 2][head]`.
    pub primes: Vec<Vec<u64>>,
    /// Row offset of each head, flat in (order, head) order.
    pub offsets: Vec<u64>,
    /// Rows of this layer's concatenated table (sum of its primes).
    pub total_rows: u64,
    heads: Vec<Head>,
}

/// Hashes compressed-id sequences into Engram table rows for every configured layer.
#[derive(Clone, Debug)]
pub struct NgramHasher {
    cfg: HashConfig,
    vocab_size: u64,
    pad: u32,
    layers: Vec<LayerHash>,
    heads: usize,
}

impl NgramHasher {
    /// Builds the hasher: validates `cfg`, draws multipliers (numpy-exact) for `V' =
    /// compressed_vocab_size`, walks the primes and precomputes offsets and moduli.
    ///
    /// Errors: invalid config; `compressed_vocab_size` outside `1..=2^32`; `pad_compressed >=
    /// compressed_vocab_size`; a layer with more than [`MAX_TABLE_ROWS`] rows.
    pub fn new(cfg: &HashConfig, compressed_vocab_size: u64, pad_compressed: u32) -> Result<Self, HashError> {
        cfg.validate()?;
        if !(1..=1u64 << 32).contains(&compressed_vocab_size) {
            return Err(HashError::InvalidConfig {
                field: "compressed_vocab_size",
                value: compressed_vocab_size.to_string(),
                allowed: "1..=2^32 (ids are u32)".into(),
            });
        }
        if u64::from(pad_compressed) >= compressed_vocab_size {
            return Err(HashError::InvalidConfig {
                field: "pad_compressed",
                value: pad_compressed.to_string(),
                allowed: format!("< compressed_vocab_size = {compressed_vocab_size}"),
            });
        }
        // Cheap pre-check so an oversized config fails before the prime walk.
        let hint_rows: u64 = cfg
            .engram_vocab_size
            .iter()
            .map(|&v| v.saturating_mul(cfg.n_head_per_ngram as u64))
            .fold(0u64, u64::saturating_add);
        if hint_rows > MAX_TABLE_ROWS {
            return Err(HashError::TableTooLarge { layer_id: cfg.layer_ids[0], rows: hint_rows, max: MAX_TABLE_ROWS });
        }
        let half_bound = (INT64_MAX / compressed_vocab_size / 2).max(1);
        let walk = prime_walk(&cfg.engram_vocab_size, cfg.n_head_per_ngram, cfg.layer_ids.len())?;
        let mut layers = Vec::with_capacity(cfg.layer_ids.len());
        for (&layer_id, primes) in cfg.layer_ids.iter().zip(walk) {
            let seed = u128::from(cfg.seed) + u128::from(SEED_LAYER_STRIDE) * layer_id as u128;
            let mut rng = Pcg64::default_rng_u128(seed);
            let multipliers: Vec<u64> = rng
                .integers_vec(half_bound, cfg.max_ngram_size)?
                .into_iter()
                .map(|r| 2 * r + 1) // r < half_bound <= 2^62: no overflow
                .collect();
            let flat: Vec<u64> = primes.iter().flatten().copied().collect();
            let total_rows = flat.iter().fold(0u64, |a, &p| a.saturating_add(p));
            if total_rows > MAX_TABLE_ROWS {
                return Err(HashError::TableTooLarge { layer_id, rows: total_rows, max: MAX_TABLE_ROWS });
            }
            let mut offsets = Vec::with_capacity(flat.len());
            let mut heads = Vec::with_capacity(flat.len());
            let mut acc = 0u64;
            for &p in &flat {
                offsets.push(acc);
                heads.push(Head {
                    modulus: FastMod::new(p).expect("prime is in 2..=i32::MAX, checked via total_rows"),
                    offset: u32::try_from(acc).expect("offset < total_rows <= i32::MAX"),
                });
                acc += p;
            }
            layers.push(LayerHash { layer_id, half_bound, multipliers, primes, offsets, total_rows, heads });
        }
        Ok(Self {
            cfg: cfg.clone(),
            vocab_size: compressed_vocab_size,
            pad: pad_compressed,
            layers,
            heads: cfg.heads_per_layer(),
        })
    }

    /// The configuration this hasher was built from.
    pub fn config(&self) -> &HashConfig {
        &self.cfg
    }

    /// Per-layer hash parameters, in `layer_ids` order.
    pub fn layers(&self) -> &[LayerHash] {
        &self.layers
    }

    /// Ids per token per layer: `(N − 1)·K`.
    pub fn heads_per_layer(&self) -> usize {
        self.heads
    }

    /// The compressed vocabulary size `V'` the multipliers were drawn for.
    pub fn compressed_vocab_size(&self) -> u64 {
        self.vocab_size
    }

    /// The compressed pad id used for positions before the sequence start.
    pub fn pad_compressed(&self) -> u32 {
        self.pad
    }

    fn layer(&self, layer_idx: usize) -> Result<&LayerHash, HashError> {
        self.layers
            .get(layer_idx)
            .ok_or(HashError::LayerIndexOutOfRange { index: layer_idx, n_layers: self.layers.len() })
    }

    fn check_ids(&self, seq: &[u32]) -> Result<(), HashError> {
        // Branch-free max first (vectorises); locate the culprit only on failure.
        let max = seq.iter().copied().max().unwrap_or(0);
        if u64::from(max) < self.vocab_size {
            return Ok(());
        }
        let position = seq.iter().position(|&x| u64::from(x) >= self.vocab_size).unwrap_or(0);
        Err(HashError::IdOutOfRange { id: seq[position], position, vocab_size: self.vocab_size })
    }

    fn check_len(expected: usize, got: usize) -> Result<(), HashError> {
        if expected == got {
            Ok(())
        } else {
            Err(HashError::BufferLength { expected, got })
        }
    }

    /// Per-head ids (without offsets) of layer `layer_idx` (index into `layer_ids`) for one
    /// sequence of compressed ids.
    ///
    /// # Shapes
    /// `seq: [T]`, `out: [T · heads]`, row-major `[t][head]`, heads in (order, head) order.
    pub fn hash_ids(&self, layer_idx: usize, seq: &[u32], out: &mut [u64]) -> Result<(), HashError> {
        let layer = self.layer(layer_idx)?;
        Self::check_len(seq.len() * self.heads, out.len())?;
        self.check_ids(seq)?;
        self.hash_span::<IdSink>(layer, seq, 0, out);
        Ok(())
    }

    /// Absolute rows (`id + offset`, `< total_rows <= i32::MAX`) of layer `layer_idx` for one
    /// sequence.
    ///
    /// # Shapes
    /// `seq: [T]`, `out: [T · heads]`, row-major `[t][head]`.
    pub fn hash_rows(&self, layer_idx: usize, seq: &[u32], out: &mut [u32]) -> Result<(), HashError> {
        let layer = self.layer(layer_idx)?;
        Self::check_len(seq.len() * self.heads, out.len())?;
        self.check_ids(seq)?;
        self.hash_span::<RowSink>(layer, seq, 0, out);
        Ok(())
    }

    /// Rows of every layer for a batch of `batch` sequences of `seq_len` ids stored contiguously.
    /// Fills `out[layer][b·seq_len·heads + t·heads + h]`, resizing `out` (no allocation when
    /// already sized). Uses `std::thread::available_parallelism()` scoped threads when the batch
    /// has at least [`PARALLEL_MIN_TOKENS`] tokens. On error `out` is unspecified.
    ///
    /// # Shapes
    /// `tokens: [batch · seq_len]`, `out: [n_layers][batch · seq_len · heads]`.
    pub fn hash_batch_rows(
        &self,
        tokens: &[u32],
        batch: usize,
        seq_len: usize,
        out: &mut Vec<Vec<u32>>,
    ) -> Result<(), HashError> {
        let n_tokens = tokens.len();
        let threads = if n_tokens >= PARALLEL_MIN_TOKENS {
            crate::runtime::threads_for(n_tokens, MIN_TOKENS_PER_THREAD)
        } else {
            1
        };
        self.hash_batch_rows_threads(tokens, batch, seq_len, out, threads)
    }

    /// [`NgramHasher::hash_batch_rows`] on the calling thread only (for benchmarks).
    pub fn hash_batch_rows_1thread(
        &self,
        tokens: &[u32],
        batch: usize,
        seq_len: usize,
        out: &mut Vec<Vec<u32>>,
    ) -> Result<(), HashError> {
        self.hash_batch_rows_threads(tokens, batch, seq_len, out, 1)
    }

    /// [`NgramHasher::hash_batch_rows`] with an explicit worker count (`0` is treated as 1).
    pub fn hash_batch_rows_threads(
        &self,
        tokens: &[u32],
        batch: usize,
        seq_len: usize,
        out: &mut Vec<Vec<u32>>,
        threads: usize,
    ) -> Result<(), HashError> {
        if batch.checked_mul(seq_len) != Some(tokens.len()) {
            return Err(HashError::BatchShape { got: tokens.len(), batch, seq_len });
        }
        self.check_ids(tokens)?;
        let h = self.heads;
        let n_tokens = tokens.len();
        out.resize_with(self.layers.len(), Vec::new);
        for v in out.iter_mut() {
            v.resize(n_tokens * h, 0);
        }
        let threads = threads.clamp(1, n_tokens.max(1));
        if threads == 1 {
            for (layer, rows) in self.layers.iter().zip(out.iter_mut()) {
                self.hash_flat_range(layer, tokens, seq_len, 0, rows);
            }
            return Ok(());
        }
        // Split the flat token range [0, n_tokens) into `threads` contiguous chunks; a chunk may
        // start or end inside a sequence (the hash only looks back within its own sequence).
        let chunk = n_tokens.div_ceil(threads);
        let mut work: Vec<Vec<&mut [u32]>> = (0..threads).map(|_| Vec::with_capacity(out.len())).collect();
        for rows in out.iter_mut() {
            for (w, part) in work.iter_mut().zip(rows.chunks_mut(chunk * h)) {
                w.push(part);
            }
        }
        std::thread::scope(|s| {
            for (i, parts) in work.into_iter().enumerate() {
                let start = i * chunk;
                s.spawn(move || {
                    for (layer, rows) in self.layers.iter().zip(parts) {
                        self.hash_flat_range(layer, tokens, seq_len, start, rows);
                    }
                });
            }
        });
        Ok(())
    }

    /// Hashes flat token positions `start .. start + out.len()/heads` of a contiguous batch.
    fn hash_flat_range(&self, layer: &LayerHash, tokens: &[u32], seq_len: usize, start: usize, out: &mut [u32]) {
        let h = self.heads;
        let end = start + out.len() / h;
        let mut pos = start;
        while pos < end {
            let b = pos / seq_len;
            let t = pos - b * seq_len;
            let stop = end.min((b + 1) * seq_len);
            let seq = &tokens[b * seq_len..(b + 1) * seq_len];
            self.hash_span::<RowSink>(layer, seq, t, &mut out[(pos - start) * h..(stop - start) * h]);
            pos = stop;
        }
    }

    /// Hashes positions `t0 .. t0 + out.len()/heads` of `seq` (ids already range-checked).
    #[inline]
    fn hash_span<S: Sink>(&self, layer: &LayerHash, seq: &[u32], t0: usize, out: &mut [S::Out]) {
        let k = self.cfg.n_head_per_ngram;
        match (self.cfg.max_ngram_size, k) {
            (3, 8) => span_fixed::<S, 3, 8>(layer, seq, self.pad, t0, out),
            (2, 8) => span_fixed::<S, 2, 8>(layer, seq, self.pad, t0, out),
            (3, 4) => span_fixed::<S, 3, 4>(layer, seq, self.pad, t0, out),
            (4, 8) => span_fixed::<S, 4, 8>(layer, seq, self.pad, t0, out),
            (n, _) => span_dyn::<S>(layer, seq, self.pad, t0, n, k, out),
        }
    }
}

/// Where a head's id goes: raw id (`u64`) or absolute row (`u32`).
trait Sink {
    type Out: Copy + Send;
    fn put(id: u64, offset: u32) -> Self::Out;
}

struct IdSink;
impl Sink for IdSink {
    type Out = u64;
    #[inline(always)]
    fn put(id: u64, _offset: u32) -> u64 {
        id
    }
}

struct RowSink;
impl Sink for RowSink {
    type Out = u32;
    #[inline(always)]
    fn put(id: u64, offset: u32) -> u32 {
        // id < p and offset + p <= total_rows <= i32::MAX, so this neither truncates nor wraps.
        id as u32 + offset
    }
}

/// The hash with `N` and `K` known at compile time (fully unrolled inner loops).
#[inline]
fn span_fixed<S: Sink, const N: usize, const K: usize>(
    layer: &LayerHash,
    seq: &[u32],
    pad: u32,
    t0: usize,
    out: &mut [S::Out],
) {
    let mut m = [0u64; N];
    m.copy_from_slice(&layer.multipliers[..N]);
    let heads: &[Head] = &layer.heads[..(N - 1) * K];
    let h = (N - 1) * K;
    for (i, row) in out.chunks_exact_mut(h).enumerate() {
        let t = t0 + i;
        let mut mix = u64::from(seq[t]) * m[0];
        for k in 1..N {
            let s = if t >= k { seq[t - k] } else { pad };
            mix ^= u64::from(s) * m[k];
            let base = (k - 1) * K;
            for j in 0..K {
                let hd = heads[base + j];
                row[base + j] = S::put(hd.modulus.rem(mix), hd.offset);
            }
        }
    }
}

/// The hash for any `N`, `K`.
fn span_dyn<S: Sink>(
    layer: &LayerHash,
    seq: &[u32],
    pad: u32,
    t0: usize,
    n: usize,
    k_heads: usize,
    out: &mut [S::Out],
) {
    let h = (n - 1) * k_heads;
    for (i, row) in out.chunks_exact_mut(h).enumerate() {
        let t = t0 + i;
        let mut mix = u64::from(seq[t]) * layer.multipliers[0];
        for k in 1..n {
            let s = if t >= k { seq[t - k] } else { pad };
            mix ^= u64::from(s) * layer.multipliers[k];
            let base = (k - 1) * k_heads;
            for (slot, hd) in row[base..base + k_heads].iter_mut().zip(&layer.heads[base..base + k_heads]) {
                *slot = S::put(hd.modulus.rem(mix), hd.offset);
            }
        }
    }
}

/// Scratch memory of [`unique_rows_with`] (bitmap words interleaved with their ranks, or radix
/// keys): a loop that finds a batch's distinct rows every step keeps one and passes it in, so
/// that no call allocates once the buffers have grown.
#[derive(Clone, Debug, Default)]
pub struct UniqueScratch {
    words: Vec<u64>,
    keys: Vec<u64>,
    tmp: Vec<u64>,
}

/// [`unique_rows`] uses a bitmap over `0..=max_row` when it has at most this many 64-bit words
/// per input row; otherwise it radix-sorts.
const BITMAP_WORDS_PER_ROW: usize = 4;
/// Radix digit width of the sort fallback (4096 buckets: the histogram stays in L1).
const RADIX_BITS: u32 = 12;
/// Below this many rows the sort fallback uses a comparison sort.
const RADIX_MIN_LEN: usize = 2048;

/// Unique rows of one layer's batch and the inverse map: `uniq` sorted ascending and distinct,
/// `uniq[inverse[i]] == rows[i]`. Reuses both buffers; its scratch memory is allocated for this
/// call ([`unique_rows_with`] takes it from the caller, for loops). Linear time:
/// a bitmap with popcount ranks when `max_row / 64` is small relative to `rows.len()` (the usual
/// case: a batch's rows against a table of a few million rows), else an LSD radix sort of
/// `(row, index)` keys.
///
/// # Shapes
/// `rows: [n]` → `uniq: [u ≤ n]`, `inverse: [n]`.
///
/// # Panics
/// If `rows.len() > u32::MAX` (inverse indices are `u32`).
pub fn unique_rows(rows: &[u32], uniq: &mut Vec<u32>, inverse: &mut Vec<u32>) {
    unique_rows_with(rows, uniq, inverse, &mut UniqueScratch::default());
}

/// [`unique_rows`] with the caller's scratch memory: the same result, and no allocation once
/// `scratch`, `uniq` and `inverse` have grown to the batch's size.
///
/// # Panics
/// If `rows.len() > u32::MAX`.
pub fn unique_rows_with(rows: &[u32], uniq: &mut Vec<u32>, inverse: &mut Vec<u32>, scratch: &mut UniqueScratch) {
    assert!(rows.len() <= u32::MAX as usize, "unique_rows: more than u32::MAX rows");
    uniq.clear();
    inverse.clear();
    if rows.is_empty() {
        return;
    }
    let max = rows.iter().copied().max().unwrap_or(0);
    let n_words = (max as usize >> 6) + 1;
    if n_words <= BITMAP_WORDS_PER_ROW.saturating_mul(rows.len()) {
        unique_bitmap(rows, n_words, scratch, uniq, inverse);
    } else {
        unique_radix(rows, max, scratch, uniq, inverse);
    }
}

/// Bitmap + rank: set one bit per row, rank each word by a prefix popcount, read ranks back.
/// `words[2w]` holds bitmap word `w` and `words[2w + 1]` its rank, so a lookup touches one line.
fn unique_bitmap(rows: &[u32], n_words: usize, s: &mut UniqueScratch, uniq: &mut Vec<u32>, inverse: &mut Vec<u32>) {
    let words = &mut s.words;
    words.clear();
    words.resize(2 * n_words, 0);
    for &r in rows {
        words[2 * (r >> 6) as usize] |= 1u64 << (r & 63);
    }
    let mut count = 0u64;
    for (wi, pair) in words.chunks_exact_mut(2).enumerate() {
        let w = pair[0];
        pair[1] = count;
        count += u64::from(w.count_ones());
        let mut bits = w;
        while bits != 0 {
            uniq.push(((wi as u32) << 6) | bits.trailing_zeros()); // wi < 2^26: fits
            bits &= bits - 1;
        }
    }
    inverse.extend(rows.iter().map(|&r| {
        let wi = 2 * (r >> 6) as usize;
        let below = words[wi] & ((1u64 << (r & 63)) - 1);
        // rank < rows.len() <= u32::MAX, checked by the caller.
        (words[wi + 1] + u64::from(below.count_ones())) as u32
    }));
}

/// LSD radix sort of `row << 32 | index` keys, then one pass to emit `uniq` and `inverse`.
fn unique_radix(rows: &[u32], max: u32, s: &mut UniqueScratch, uniq: &mut Vec<u32>, inverse: &mut Vec<u32>) {
    inverse.resize(rows.len(), 0);
    let (keys, tmp) = (&mut s.keys, &mut s.tmp);
    keys.clear();
    keys.extend(rows.iter().enumerate().map(|(i, &r)| (u64::from(r) << 32) | i as u64));
    if rows.len() < RADIX_MIN_LEN {
        keys.sort_unstable();
    } else {
        let passes = (32 - max.leading_zeros()).div_ceil(RADIX_BITS);
        tmp.clear();
        tmp.resize(keys.len(), 0);
        let mask = (1u64 << RADIX_BITS) - 1;
        for pass in 0..passes {
            let shift = 32 + pass * RADIX_BITS;
            let mut counts = [0usize; 1 << RADIX_BITS];
            for &k in keys.iter() {
                counts[((k >> shift) & mask) as usize] += 1;
            }
            let mut sum = 0;
            for c in counts.iter_mut() {
                let n = *c;
                *c = sum;
                sum += n;
            }
            for &k in keys.iter() {
                let d = ((k >> shift) & mask) as usize;
                tmp[counts[d]] = k;
                counts[d] += 1;
            }
            std::mem::swap(keys, tmp);
        }
    }
    let mut last = u64::MAX;
    for &k in keys.iter() {
        let row = k >> 32;
        if row != last {
            uniq.push(row as u32); // row came from a u32
            last = row;
        }
        // uniq.len() <= rows.len() <= u32::MAX, checked by the caller.
        inverse[(k & 0xFFFF_FFFF) as usize] = (uniq.len() - 1) as u32;
    }
}
