//! numpy's `np.random.default_rng(seed)`, bit for bit: `SeedSequence` → `PCG64` →
//! `Generator.integers(0, high)` / `Generator.random()`.
//!
//! Engram (arXiv 2601.07372; deepseek-ai/Engram `engram_demo_v1.py`) draws its per-layer hash
//! multipliers with `np.random.default_rng(seed + 10007 * layer_id).integers(0, half_bound,
//! size=N, dtype=np.int64)`, so the multipliers — and with them every row id — are only
//! reproducible with an exact port of numpy's generator. This file follows numpy's
//! `bit_generator.pyx` (SeedSequence), `pcg64.c` (PCG64 XSL-RR 128/64, with its one-word `u32`
//! buffer) and `distributions.c` (`random_bounded_uint64_fill`: Lemire's multiply-shift with
//! rejection, a 32-bit variant for ranges that fit in 32 bits).
//!
//! Checked against numpy 2.4.6 in `tests/hash_golden.rs`. No deviations for the supported inputs
//! (integer seeds `< 2^128` without spawn keys; `high` in `1..=u64::MAX`, which covers both the
//! `int64` and `uint64` dtypes of `integers(0, high)`).

use serde::{Deserialize, Serialize};

use super::error::HashError;

/// SeedSequence pool size in 32-bit words (numpy `DEFAULT_POOL_SIZE`).
pub const POOL_SIZE: usize = 4;
/// Hash constant that starts the entropy hashmix (numpy `INIT_A`).
const INIT_A: u32 = 0x43b0_d7e5;
/// Multiplier that advances the entropy hashmix constant (numpy `MULT_A`).
const MULT_A: u32 = 0x931e_8875;
/// Hash constant that starts `generate_state` (numpy `INIT_B`).
const INIT_B: u32 = 0x8b51_f9dd;
/// Multiplier that advances the `generate_state` constant (numpy `MULT_B`).
const MULT_B: u32 = 0x58f3_8ded;
/// Left multiplier of the pool `mix` (numpy `MIX_MULT_L`).
const MIX_MULT_L: u32 = 0xca01_f9dd;
/// Right multiplier of the pool `mix` (numpy `MIX_MULT_R`).
const MIX_MULT_R: u32 = 0x4973_f715;
/// Xor-shift distance used by hashmix / mix / generate_state (numpy `XSHIFT`).
const XSHIFT: u32 = 16;

/// `PCG_DEFAULT_MULTIPLIER_128` of the PCG64 linear congruential step.
pub const PCG64_MULTIPLIER: u128 = 0x2360_ED05_1FC6_5DA4_4385_DF64_9FCC_F645;

/// `2^-53`: scale of numpy's `random()` (53 high bits of one `u64` draw).
const F64_UNIT: f64 = 1.0 / 9_007_199_254_740_992.0;

/// numpy's `hashmix`: mixes one entropy word into the running hash constant.
#[inline]
fn hashmix(value: u32, hash_const: &mut u32) -> u32 {
    let mut v = value ^ *hash_const;
    *hash_const = hash_const.wrapping_mul(MULT_A);
    v = v.wrapping_mul(*hash_const);
    v ^ (v >> XSHIFT)
}

/// numpy's `mix`: combines two pool words.
#[inline]
fn mix(x: u32, y: u32) -> u32 {
    let r = MIX_MULT_L.wrapping_mul(x).wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    r ^ (r >> XSHIFT)
}

/// numpy's `SeedSequence` for a non-negative integer seed (no spawn key), pool size 4.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedSequence {
    pool: [u32; POOL_SIZE],
}

impl SeedSequence {
    /// `SeedSequence(seed)` for a `u64` seed.
    pub fn new(seed: u64) -> Self {
        Self::from_u128(u128::from(seed))
    }

    /// `SeedSequence(seed)` for a seed below `2^128` (numpy accepts any non-negative int).
    pub fn from_u128(seed: u128) -> Self {
        // numpy `_coerce_to_uint32_array`: little-endian 32-bit words, `[0]` for zero.
        let mut words = Vec::with_capacity(4);
        let mut s = seed;
        loop {
            words.push(s as u32); // truncation intended: low 32-bit word
            s >>= 32;
            if s == 0 {
                break;
            }
        }
        Self::from_entropy_words(&words)
    }

    /// `SeedSequence` from an explicit entropy array of 32-bit words (numpy `mix_entropy`).
    pub fn from_entropy_words(entropy: &[u32]) -> Self {
        let mut pool = [0u32; POOL_SIZE];
        let mut hash_const = INIT_A;
        for (i, slot) in pool.iter_mut().enumerate() {
            *slot = hashmix(entropy.get(i).copied().unwrap_or(0), &mut hash_const);
        }
        for i_src in 0..POOL_SIZE {
            for i_dst in 0..POOL_SIZE {
                if i_src != i_dst {
                    let h = hashmix(pool[i_src], &mut hash_const);
                    pool[i_dst] = mix(pool[i_dst], h);
                }
            }
        }
        for &word in entropy.iter().skip(POOL_SIZE) {
            for slot in pool.iter_mut() {
                let h = hashmix(word, &mut hash_const);
                *slot = mix(*slot, h);
            }
        }
        Self { pool }
    }

    /// The mixed entropy pool (numpy `SeedSequence.pool`).
    pub fn pool(&self) -> [u32; POOL_SIZE] {
        self.pool
    }

    /// `generate_state(n_words, np.uint32)`.
    pub fn generate_state_u32(&self, n_words: usize) -> Vec<u32> {
        let mut hash_const = INIT_B;
        (0..n_words)
            .map(|i| {
                let mut v = self.pool[i % POOL_SIZE] ^ hash_const;
                hash_const = hash_const.wrapping_mul(MULT_B);
                v = v.wrapping_mul(hash_const);
                v ^ (v >> XSHIFT)
            })
            .collect()
    }

    /// `generate_state(n_words, np.uint64)`: `2·n_words` u32 words paired little-endian.
    pub fn generate_state_u64(&self, n_words: usize) -> Vec<u64> {
        self.generate_state_u32(2 * n_words)
            .chunks_exact(2)
            .map(|w| u64::from(w[0]) | (u64::from(w[1]) << 32))
            .collect()
    }
}

/// numpy's `PCG64` bit generator (PCG XSL-RR 128/64) including its one-word `u32` buffer.
///
/// The whole struct (LCG state, increment and the buffered half-word that numpy's
/// `next_uint32` keeps between calls) is serde-serialisable, so a checkpointed generator resumes
/// bit-exactly. [`Pcg64::state`] / [`Pcg64::from_state`] expose the 128-bit pair alone (the
/// same pair as numpy's `bit_generator.state['state']`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pcg64 {
    state: u128,
    inc: u128,
    /// numpy `has_uint32` / `uinteger`: the high half of the last `u64` split by `next_u32`.
    buffered_u32: Option<u32>,
}

/// `np.random.default_rng(seed)` for a `u64` seed.
pub fn default_rng(seed: u64) -> Pcg64 {
    Pcg64::from_seed_sequence(&SeedSequence::new(seed))
}

impl Pcg64 {
    /// `pcg64_srandom_r(initstate, initseq)`: `inc = initseq << 1 | 1`, step, add, step.
    pub fn new(initstate: u128, initseq: u128) -> Self {
        let mut rng = Self { state: 0, inc: (initseq << 1) | 1, buffered_u32: None };
        rng.step();
        rng.state = rng.state.wrapping_add(initstate);
        rng.step();
        rng
    }

    /// Seeds from a SeedSequence the way numpy's `PCG64.__init__` does:
    /// `v = generate_state(4, u64)`, `initstate = v0<<64 | v1`, `initseq = v2<<64 | v3`.
    pub fn from_seed_sequence(seq: &SeedSequence) -> Self {
        let v = seq.generate_state_u64(4);
        let initstate = (u128::from(v[0]) << 64) | u128::from(v[1]);
        let initseq = (u128::from(v[2]) << 64) | u128::from(v[3]);
        Self::new(initstate, initseq)
    }

    /// `np.random.default_rng(seed)` for any seed below `2^128`.
    pub fn default_rng_u128(seed: u128) -> Self {
        Self::from_seed_sequence(&SeedSequence::from_u128(seed))
    }

    /// `(state, inc)`: numpy's `bit_generator.state['state']` pair. Does not include the
    /// buffered `u32` (see [`Pcg64::buffered_u32`]); serialise the struct to keep both.
    pub fn state(&self) -> (u128, u128) {
        (self.state, self.inc)
    }

    /// Rebuilds a generator from a [`Pcg64::state`] pair with an empty `u32` buffer (numpy's
    /// state setter with `has_uint32 = 0`). `inc` is used as given (numpy does not check it).
    pub fn from_state(state: u128, inc: u128) -> Self {
        Self { state, inc, buffered_u32: None }
    }

    /// The half-word that the next [`Pcg64::next_u32`] will return without stepping, if any.
    pub fn buffered_u32(&self) -> Option<u32> {
        self.buffered_u32
    }

    /// Sets the buffered half-word (numpy `has_uint32` / `uinteger`).
    pub fn set_buffered_u32(&mut self, value: Option<u32>) {
        self.buffered_u32 = value;
    }

    #[inline]
    fn step(&mut self) {
        self.state = self.state.wrapping_mul(PCG64_MULTIPLIER).wrapping_add(self.inc);
    }

    /// One raw 64-bit output (numpy `random_raw`): step, then XSL-RR output of the new state.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.step();
        let hi = (self.state >> 64) as u64;
        let lo = self.state as u64; // truncation intended: low 64 bits
        let rot = (self.state >> 122) as u32;
        (hi ^ lo).rotate_right(rot)
    }

    /// numpy's `next_uint32`: the low half of a fresh `u64`, buffering the high half for the
    /// next call.
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        if let Some(v) = self.buffered_u32.take() {
            return v;
        }
        let x = self.next_u64();
        self.buffered_u32 = Some((x >> 32) as u32);
        x as u32 // truncation intended: low half first, as numpy
    }

    /// numpy's `Generator.random()`: `(next_u64 >> 11) · 2^-53`, in `[0, 1)`.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * F64_UNIT
    }

    /// A uniform integer in `[0, n)`, bit-identical to numpy's `integers(0, n)`; `n <= 1`
    /// returns 0 without drawing (numpy does the same for `n == 1`).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            return 0;
        }
        let rng = n - 1; // numpy's inclusive range `high - low - 1`
        if rng <= u64::from(u32::MAX) {
            if rng == u64::from(u32::MAX) {
                return u64::from(self.next_u32());
            }
            return u64::from(self.bounded_lemire_u32(n as u32)); // n <= 2^32 - 1 here
        }
        // rng < u64::MAX always holds because n <= u64::MAX.
        self.bounded_lemire_u64(n)
    }

    /// numpy's `Generator.integers(0, high)` (exclusive `high`, dtype `int64` or `uint64`):
    /// `Err` for `high == 0` (numpy raises `ValueError: high <= 0`).
    pub fn integers(&mut self, high: u64) -> Result<u64, HashError> {
        if high == 0 {
            return Err(HashError::EmptyRange { high });
        }
        Ok(self.below(high))
    }

    /// `integers(0, high, size=size)`: `size` successive draws.
    pub fn integers_vec(&mut self, high: u64, size: usize) -> Result<Vec<u64>, HashError> {
        if high == 0 {
            return Err(HashError::EmptyRange { high });
        }
        Ok((0..size).map(|_| self.below(high)).collect())
    }

    /// numpy `buffered_bounded_lemire_uint32` with `rng_excl = n` (`2 <= n < 2^32`).
    #[inline]
    fn bounded_lemire_u32(&mut self, n: u32) -> u32 {
        let mut m = u64::from(self.next_u32()) * u64::from(n);
        let mut leftover = m as u32; // truncation intended: low 32 bits
        if leftover < n {
            let threshold = n.wrapping_neg() % n; // (2^32 - n) mod n
            while leftover < threshold {
                m = u64::from(self.next_u32()) * u64::from(n);
                leftover = m as u32;
            }
        }
        (m >> 32) as u32
    }

    /// numpy `bounded_lemire_uint64` with `rng_excl = n` (`2^32 < n`).
    #[inline]
    fn bounded_lemire_u64(&mut self, n: u64) -> u64 {
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        let mut leftover = m as u64; // truncation intended: low 64 bits
        if leftover < n {
            let threshold = n.wrapping_neg() % n; // (2^64 - n) mod n
            while leftover < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
                leftover = m as u64;
            }
        }
        (m >> 64) as u64
    }
}
