//! The scalar building blocks of the kernels' loops, written so that those loops vectorise
//! (inside `simd_kernel!`, 8 lanes wide with AVX2): the exponential of a non-positive number,
//! the sigmoid, and sums and dot products in 16 independent partial sums.

/// `exp(x)` for `x ≤ 0` (larger arguments are not needed here and not handled), accurate to
/// about 2 ulp; 0 below −87.
///
/// Cephes' `expf`: `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, a degree-6 polynomial for `e^r`, and
/// `2^n` built from the exponent bits. Branch-free so loops over it vectorise.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer (|t| < 2^22).
    const ROUND: f32 = 12_582_912.0;
    let underflow = x < -87.0;
    let x = x.max(-87.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001201e-1, which rounds to 0.5 in f32
    let e = p * r * r + r + 1.0;
    // n ∈ [−126, 0]: a normal power of two. n sits in the low mantissa bits of `shifted`;
    // wrapping integer steps (no float-to-int conversion, no overflow check) keep the loop
    // vectorisable.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let two_n = f32::from_bits(n_bits.wrapping_add(127) << 23);
    if underflow {
        0.0
    } else {
        e * two_n
    }
}

/// `σ(x)` through `exp(−|x|)`, exact in both tails; branch-free (vectorises).
#[inline(always)]
pub(super) fn sigmoid(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 {
        r
    } else {
        e * r
    }
}

/// Lanes of the partial sums in [`dot`] and [`dot3`]: two AVX2 registers.
const LANES: usize = 16;

/// `Σ a·b` in [`LANES`] independent partial sums. A serial sum is one chain of dependent
/// additions that the compiler may not reorder, so it neither vectorises nor pipelines; this one
/// does (inside [`simd_kernel!`]), at the price of adding in a different order.
#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    lanes_sum(acc) + tail
}

/// `Σ a·b·c`, as [`dot`].
#[inline(always)]
pub(super) fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    debug_assert!(a.len() == b.len() && a.len() == c.len());
    let mut acc = [0.0f32; LANES];
    let (ca, cb, cc) = (a.chunks_exact(LANES), b.chunks_exact(LANES), c.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).zip(cc.remainder()).map(|((x, y), z)| x * y * z).sum();
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l] * z[l];
        }
    }
    lanes_sum(acc) + tail
}

/// `Σ a`, as [`dot`].
#[inline(always)]
pub(super) fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let tail: f32 = ca.remainder().iter().sum();
    for x in ca {
        for l in 0..LANES {
            acc[l] += x[l];
        }
    }
    lanes_sum(acc) + tail
}

/// The sum of the partial sums, pairwise.
#[inline(always)]
fn lanes_sum(mut acc: [f32; LANES]) -> f32 {
    let mut n = LANES;
    while n > 1 {
        n /= 2;
        for l in 0..n {
            acc[l] += acc[l + n];
        }
    }
    acc[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_within_3_ulp_on_its_domain() {
        let mut worst = 0.0f32;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (ours, std) = (exp_nonpositive(x), x.exp());
            worst = worst.max((ours - std).abs() / std);
            x += 0.000_37;
        }
        assert!(worst < 3.0 * f32::EPSILON, "worst relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-100.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
    }
}
