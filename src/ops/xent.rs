//! Row-wise softmax cross-entropy on host memory: the CPU kernel of
//! [`super::head_cross_entropy`].
//!
//! One pass per row computes the row maximum, one more the exponentials and their sum, and
//! (for training) a last one turns the logits in place into the loss gradient
//! `G = (softmax − onehot(target)) · scale`. Rows are split over the cores. The exponential is
//! a polynomial that the compiler vectorises (AVX2 + FMA where the CPU has them, chosen at run
//! time); burn's CPU backends call the scalar `expf` of libm once per element, which made the
//! softmax of the `[B·T, V]` logits the largest cost of the step after the matrix products.
//!
//! On flex, [`head_softmax_cross_entropy`] is the whole LM head and loss on host memory: the
//! product `h·w` into a kept buffer, this softmax, and the three gradient products.

use super::matmul::{gemm_raw, product_uninit, Mat, PARALLEL_MACS};
use super::simd::exp_nonpositive;

/// Fewest logits per thread: below twice this, one thread does all rows.
const MIN_ELEMS_PER_THREAD: usize = 1 << 16;

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

// ---------------------------------------------------------------------------------------------
// LM head and loss

thread_local! {
    /// The logits of the last [`head_softmax_cross_entropy`] call on this thread, kept so that
    /// the next call writes into memory that is already mapped (`[N, V]` is 64 MiB for the
    /// reference configuration; a fresh buffer each step cost page faults and zeroing).
    ///
    /// A per-thread cache rather than a scratch argument: the caller, the model's
    /// `head_cross_entropy`, is a function of tensors called from `Transformer::loss`, so an
    /// explicit buffer would have to live in the model (a burn `Module`, cloned and saved with
    /// it) or be passed down through `loss` by the training loop and every other caller. The
    /// loss runs on the thread that calls it, so in training this is one buffer.
    static LOGITS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Gradients of the mean head loss with respect to `h`, `w` and the bias (if any).
pub(crate) type HeadGradVecs = (Vec<f32>, Vec<f32>, Option<Vec<f32>>);

/// Softmax cross-entropy of the logits `h·w (+ bias)` (`h` `[n, d]`, `w` `[d, v]`, row-major)
/// against `targets`: the summed loss, and with `scale = Some(1/n)` the gradients of the mean
/// loss, `G·wᵀ`, `hᵀ·G` and the column sums of `G` for `G = (softmax − onehot) / n`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn head_softmax_cross_entropy(h: &[f32], w: &[f32], bias: Option<&[f32]>, n: usize, d: usize, v: usize, targets: &[usize], scale: Option<f32>) -> (f64, Option<HeadGradVecs>) {
    assert!(h.len() == n * d && w.len() == d * v && targets.len() == n, "head: inconsistent sizes");
    LOGITS.with_borrow_mut(|logits| {
        logits.resize(n * v, 0.0);
        let parallel = n * v * d >= PARALLEL_MACS && crate::runtime::n_threads() > 1;
        let par = if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
        if n * v > 0 && d > 0 {
            // SAFETY: `logits` is an exclusively borrowed buffer of n·v elements.
            unsafe { gemm_raw(n, v, d, logits.as_mut_ptr(), n * v, v, Mat::rows(h, 0, d), Mat::rows(w, 0, v), 1.0, par) };
        } else {
            logits.iter_mut().for_each(|x| *x = 0.0);
        }
        if let Some(b) = bias {
            for row in logits.chunks_exact_mut(v.max(1)) {
                row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
            }
        }
        let total = softmax_cross_entropy_rows(logits, v, targets, scale);
        let grads = scale.map(|_| {
            let g: &[f32] = logits;
            let gh = product_uninit(n, d, v, Mat::rows(g, 0, v), Mat::transposed(w, 0, v)); // G·wᵀ
            let gw = product_uninit(d, v, n, Mat::transposed(h, 0, d), Mat::rows(g, 0, v)); // hᵀ·G
            let gb = bias.map(|_| {
                let mut sums = vec![0.0f32; v];
                for row in g.chunks_exact(v.max(1)) {
                    sums.iter_mut().zip(row).for_each(|(s, x)| *s += x);
                }
                sums
            });
            (gh, gw, gb)
        });
        (total, grads)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
