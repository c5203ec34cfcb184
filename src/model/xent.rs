//! Row-wise softmax cross-entropy on host memory: the CPU kernel of
//! [`super::head_cross_entropy`].
//!
//! One pass per row computes the row maximum, one more the exponentials and their sum, and
//! (for training) a last one turns the logits in place into the loss gradient
//! `G = (softmax − onehot(target)) · scale`. Rows are split over the cores. The exponential is
//! a polynomial that the compiler vectorises (AVX2 + FMA where the CPU has them, chosen at run
//! time); burn's CPU backends call the scalar `expf` of libm once per element, which made the
//! softmax of the `[B·T, V]` logits the largest cost of the step after the matrix products.

/// Fewest logits per thread: below twice this, one thread does all rows.
const MIN_ELEMS_PER_THREAD: usize = 1 << 16;

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

/// Softmax cross-entropy of each row of `logits` (`rows × v`, row-major) against `targets`
/// (one class per row, each `< v`). Returns the sum over rows of `logsumexp(row) − row[target]`
/// (in f64). With `scale = Some(s)` the logits are overwritten by `s · (softmax(row) −
/// onehot(target))`, the gradient of `s ×` that sum; with `None` they are left unchanged.
///
/// # Panics
/// If `logits.len() != targets.len() · v` or a target is `≥ v`.
pub fn softmax_cross_entropy_rows(logits: &mut [f32], v: usize, targets: &[usize], scale: Option<f32>) -> f64 {
    assert_eq!(logits.len(), targets.len() * v, "logits must hold one row of {v} per target");
    assert!(targets.iter().all(|&t| t < v), "a target is not below the number of classes {v}");
    if targets.is_empty() {
        return 0.0;
    }
    let threads = crate::runtime::threads_for(logits.len(), MIN_ELEMS_PER_THREAD);
    let rows_per = targets.len().div_ceil(threads);
    if threads == 1 {
        return rows_dispatch(logits, v, targets, scale);
    }
    std::thread::scope(|s| {
        let parts: Vec<_> = logits
            .chunks_mut(rows_per * v)
            .zip(targets.chunks(rows_per))
            .map(|(l, t)| s.spawn(move || rows_dispatch(l, v, t, scale)))
            .collect();
        parts.into_iter().map(|p| p.join().expect("softmax worker panicked")).sum()
    })
}

fn rows_dispatch(logits: &mut [f32], v: usize, targets: &[usize], scale: Option<f32>) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { rows_avx2(logits, v, targets, scale) };
    }
    rows(logits, v, targets, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2(logits: &mut [f32], v: usize, targets: &[usize], scale: Option<f32>) -> f64 {
    rows(logits, v, targets, scale)
}

#[inline(always)]
fn rows(logits: &mut [f32], v: usize, targets: &[usize], scale: Option<f32>) -> f64 {
    let mut total = 0.0f64;
    for (row, &target) in logits.chunks_exact_mut(v).zip(targets) {
        let max = max_of(row);
        let target_logit = row[target];
        // For training the exponentials are written in place, to be normalised below.
        let sum = if scale.is_some() { exp_sum::<true>(row, max) } else { exp_sum::<false>(row, max) };
        // sum ≥ 1 (the maximum contributes e^0), so the log is finite.
        total += f64::from(max) + f64::from(sum).ln() - f64::from(target_logit);
        if let Some(s) = scale {
            let k = s / sum;
            for x in row.iter_mut() {
                *x *= k;
            }
            row[target] -= s;
        }
    }
    total
}

/// `Σ exp(x − max)` over `row`, 16 lanes at a time; with `WRITE`, each `x` is replaced by its
/// exponential. (A const parameter, so each variant compiles to its own branch-free loop.)
#[inline(always)]
fn exp_sum<const WRITE: bool>(row: &mut [f32], max: f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut chunks = row.chunks_exact_mut(16);
    for c in &mut chunks {
        for (x, a) in c.iter_mut().zip(acc.iter_mut()) {
            let e = exp_nonpositive(*x - max);
            if WRITE {
                *x = e;
            }
            *a += e;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for x in chunks.into_remainder() {
        let e = exp_nonpositive(*x - max);
        if WRITE {
            *x = e;
        }
        sum += e;
    }
    sum
}

#[inline(always)]
fn max_of(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = row.chunks_exact(16);
    let mut m = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for (x, a) in c.iter().zip(acc.iter_mut()) {
            // Not f32::max: its NaN rule keeps the loop scalar.
            *a = if *x > *a { *x } else { *a };
        }
    }
    for a in acc {
        m = if a > m { a } else { m };
    }
    m
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

    /// Straightforward f64 softmax cross-entropy and gradient of one row.
    fn reference(row: &[f32], target: usize, scale: f32) -> (f64, Vec<f64>) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
        let lse = max + sum.ln();
        let grad = row
            .iter()
            .enumerate()
            .map(|(j, &x)| scale as f64 * ((x as f64 - lse).exp() - if j == target { 1.0 } else { 0.0 }))
            .collect();
        (lse - row[target] as f64, grad)
    }

    #[test]
    fn loss_and_gradient_equal_an_f64_reference_on_one_and_two_threads() {
        // 5 rows is one thread; 300 rows of 1000 is above the per-thread minimum on a
        // multi-core machine. Row lengths not a multiple of 16 exercise the remainders.
        for (rows, v) in [(5usize, 37usize), (300, 1000)] {
            let logits: Vec<f32> = (0..rows * v).map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 20.0).collect();
            let targets: Vec<usize> = (0..rows).map(|r| (r * 31 + 3) % v).collect();
            let scale = 1.0 / rows as f32;
            let mut grad = logits.clone();
            let total = softmax_cross_entropy_rows(&mut grad, v, &targets, Some(scale));
            let mut untouched = logits.clone();
            let value_only = softmax_cross_entropy_rows(&mut untouched, v, &targets, None);
            assert_eq!(untouched, logits, "value-only mode must not write");
            let mut expected_total = 0.0;
            for r in 0..rows {
                let (loss, g) = reference(&logits[r * v..(r + 1) * v], targets[r], scale);
                expected_total += loss;
                for (a, b) in grad[r * v..(r + 1) * v].iter().zip(&g) {
                    assert!((*a as f64 - b).abs() <= 1e-6 * scale as f64, "gradient {a} vs {b}");
                }
            }
            assert!((total - expected_total).abs() <= 1e-5 * expected_total.abs(), "{total} vs {expected_total}");
            assert!((value_only - total).abs() <= 1e-6 * total.abs(), "{value_only} vs {total}");
        }
    }

    #[test]
    fn extreme_rows_stay_finite() {
        // One logit far above the rest: the others' exponentials underflow to 0.
        let mut row = vec![0.0f32, 300.0, -1e30];
        let loss = softmax_cross_entropy_rows(&mut row, 3, &[0], Some(1.0));
        assert!((loss - 300.0).abs() < 1e-3, "{loss}");
        assert_eq!(row, vec![-1.0, 1.0, 0.0]);
    }

    #[test]
    #[should_panic(expected = "not below the number of classes")]
    fn a_target_out_of_range_panics() {
        softmax_cross_entropy_rows(&mut [0.0; 4], 2, &[0, 2], None);
    }
}
