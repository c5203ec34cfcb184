//! Engram's n-gram hash: pure Rust, no burn, bit-exact with the reference.
//!
//! Implements the row-id computation of "Conditional Memory via Scalable Lookup: A New Axis of
//! Sparsity for Large Language Models" (Cheng et al., DeepSeek-AI & Peking University,
//! arXiv 2601.07372, 2026) exactly as the official demo `engram_demo_v1.py` in
//! deepseek-ai/Engram computes it (numpy):
//!
//! * [`numpy_rng`]: numpy's `default_rng(seed)` (SeedSequence + PCG64) and
//!   `Generator.integers(0, high)`, bit for bit — it fixes the per-layer hash multipliers.
//! * [`primes`]: deterministic Miller–Rabin and the global prime walk that sizes every head's
//!   table (one `seen` set shared by all layers and orders).
//! * [`ngram`]: the multiply-XOR hash of the last `n` compressed ids, `mod` one distinct prime per
//!   head, plus per-layer row offsets, batch hashing (optionally multi-threaded) and
//!   [`unique_rows`] for sparse table updates.
//!
//! Golden values live in `tests/data/engram_hash_testvectors.json` and `tests/hash_golden.rs`.
//!
//! # Deviations from the reference demo
//! * The demo recomputes the hash inside every Engram layer's `forward`; here it is computed once
//!   per batch (by the data loader) for all layers.
//! * The demo uses `int64` arithmetic; we use `u64`. Every product `x' · m` is below `2^63 − 1`
//!   by construction (`x' < V'`, `m < (2^63 − 1) / V'`), so the bits are identical.
//! * `x mod p` is computed with a precomputed reciprocal ([`FastMod`], Granlund–Montgomery for
//!   63-bit numerators) instead of a hardware division; it equals `%` for every input the hash
//!   produces (property-tested).
//! * Limits the demo does not have: ids are `u32`, each layer's table must have at most
//!   `i32::MAX` rows (row ids are stored in burn `i32` tensors), every table-size hint must be
//!   at most `i32::MAX`, and duplicate `layer_ids` are rejected (the demo silently merges them).
//! * The per-layer seed `seed + 10007 · layer_id` is computed in `u128`, so it never overflows
//!   (numpy uses unbounded Python integers; values up to `2^128` agree).

mod error;
pub mod ngram;
pub mod numpy_rng;
pub mod primes;

pub use error::HashError;
pub use ngram::{unique_rows, unique_rows_with, FastMod, HashConfig, LayerHash, NgramHasher, UniqueScratch, MAX_TABLE_ROWS, SEED_LAYER_STRIDE};
pub use numpy_rng::{default_rng, Pcg64, SeedSequence};
pub use primes::{is_prime, next_prime_after, prime_walk};
