//! Primality and the global prime walk that sizes Engram's hash heads.
//!
//! Engram (arXiv 2601.07372, §2; deepseek-ai/Engram `engram_demo_v1.py`,
//! `calculate_vocab_size_across_layers`) gives every (layer, order, head) its own prime table
//! size: one `seen` set is shared by all layers and orders; for each layer in `layer_ids` order
//! and each order `n = 2..N`, the search restarts at `engram_vocab_size[n − 2] − 1` and takes the
//! next `K` primes above it that no earlier head took.
//!
//! Deviation: the demo tests primality with sympy's `isprime`; we use deterministic
//! Miller–Rabin with the first twelve prime bases (2..37), which is exact for every `u64`.

use std::collections::HashSet;

use super::error::HashError;

/// Witness bases that make Miller–Rabin deterministic for all `n < 3.3·10^24 > 2^64`.
const MR_BASES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];

#[inline]
fn mul_mod(a: u64, b: u64, m: u64) -> u64 {
    (u128::from(a) * u128::from(b) % u128::from(m)) as u64 // < m, fits
}

fn pow_mod(mut base: u64, mut exp: u64, m: u64) -> u64 {
    let mut acc = 1 % m;
    base %= m;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = mul_mod(acc, base, m);
        }
        base = mul_mod(base, base, m);
        exp >>= 1;
    }
    acc
}

/// Exact primality test for any `u64` (deterministic Miller–Rabin, bases 2..37).
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    for &p in &MR_BASES {
        if n.is_multiple_of(p) {
            return n == p;
        }
    }
    let s = (n - 1).trailing_zeros();
    let d = (n - 1) >> s;
    'witness: for &a in &MR_BASES {
        let mut x = pow_mod(a, d, n);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mul_mod(x, x, n);
            if x == n - 1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}

/// The smallest prime `p > start` with `p ∉ seen` (the demo's `find_next_prime`).
pub fn next_prime_after(start: u64, seen: &HashSet<u64>) -> Result<u64, HashError> {
    let mut candidate = start;
    loop {
        candidate = candidate.checked_add(1).ok_or(HashError::NoPrime { start })?;
        if is_prime(candidate) && !seen.contains(&candidate) {
            return Ok(candidate);
        }
    }
}

/// The global prime walk (spec §3): `result[layer][order − 2][head]` for `n_layers` layers in
/// `layer_ids` order, `engram_vocab_size.len()` orders and `n_head_per_ngram` heads each.
///
/// Every returned prime is distinct. For the demo layout (`[646400, 646400]`, `K = 8`, two
/// layers) layer 0 starts at 646403 and layer 1 at 646631.
pub fn prime_walk(
    engram_vocab_size: &[u64],
    n_head_per_ngram: usize,
    n_layers: usize,
) -> Result<Vec<Vec<Vec<u64>>>, HashError> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n_layers);
    for _ in 0..n_layers {
        let mut layer = Vec::with_capacity(engram_vocab_size.len());
        for &vocab in engram_vocab_size {
            let mut start = vocab.saturating_sub(1);
            let mut heads = Vec::with_capacity(n_head_per_ngram);
            for _ in 0..n_head_per_ngram {
                let p = next_prime_after(start, &seen)?;
                seen.insert(p);
                heads.push(p);
                start = p;
            }
            layer.push(heads);
        }
        out.push(layer);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_prime_matches_trial_division_below_10000() {
        for n in 0u64..10_000 {
            let trial = n >= 2 && (2..n).take_while(|d| d * d <= n).all(|d| n % d != 0);
            assert_eq!(is_prime(n), trial, "n = {n}");
        }
    }

    #[test]
    fn is_prime_known_large_values() {
        assert!(is_prime(18_446_744_073_709_551_557)); // largest u64 prime
        assert!(!is_prime(u64::MAX));
        assert!(is_prime(2_147_483_647)); // 2^31 - 1
                                          // strong pseudoprime to bases 2..=31 (Jaeschke): composite
        assert!(!is_prime(3_825_123_056_546_413_051));
    }
}
