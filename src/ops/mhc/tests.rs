//! The mHC kernels against the same formulas composed from burn's operations (written out
//! here from the module's documentation, not taken from the model), values and every input's
//! gradient.

use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::{Device, Tensor};

use super::*;
use crate::ops::testing::{assert_close, vals};
use crate::test_util::seeded;

/// The packed coefficients composed from burn's operations.
fn coeffs_composed(mix: Tensor<2>, xf: Tensor<2>, scale: Tensor<1>, base: Tensor<1>, p: MhcParams) -> Tensor<2> {
    let (n, m) = (mix.dims()[0], p.streams);
    let r = (xf.square().mean_dim(1) + p.norm_eps).sqrt().recip(); // [N, 1]
    let z = mix * r;
    let part = |i: usize, cols: std::ops::Range<usize>| z.clone().slice([0..n, cols.clone()]) * scale.clone().slice(i..i + 1).unsqueeze::<2>() + base.clone().slice(cols).unsqueeze::<2>();
    let pre = sigmoid(part(0, 0..m)) + p.pre_eps;
    let post = sigmoid(part(1, m..2 * m)) * p.post_mult;
    let logits = part(2, 2 * m..m * m + 2 * m).reshape([n, m, m]);
    let col = |c: Tensor<3>| c.clone() / (c.sum_dim(1) + p.sinkhorn_eps);
    let row = |c: Tensor<3>| c.clone() / (c.sum_dim(2) + p.sinkhorn_eps);
    let mut c = col(softmax(logits, 2) + p.sinkhorn_eps);
    for _ in 1..p.sinkhorn_iters {
        c = col(row(c));
    }
    Tensor::cat(vec![pre, post, c.reshape([n, m * m])], 1)
}

fn params(m: usize, iters: usize) -> MhcParams {
    MhcParams { streams: m, sinkhorn_iters: iters, norm_eps: 1e-6, pre_eps: 1e-6, sinkhorn_eps: 1e-6, post_mult: 2.0 }
}

/// Values and gradients of `f` on `inputs` (each tracked) for the upstream gradient `r`.
fn value_and_grads<const N: usize>(inputs: [Tensor<2>; N], r: Tensor<2>, f: impl Fn([Tensor<2>; N]) -> Tensor<2>) -> Vec<Vec<f32>> {
    let inputs = inputs.map(|x| x.require_grad());
    let y = f(inputs.clone());
    let g = (y.clone() * r).sum().backward();
    std::iter::once(vals(y)).chain(inputs.iter().map(|x| vals(x.grad(&g).expect("input gradient")))).collect()
}

fn check(what: &str, ours: &[Vec<f32>], theirs: &[Vec<f32>], names: &[&str], tol: f32) {
    assert_eq!(ours.len(), names.len());
    for ((o, t), name) in ours.iter().zip(theirs).zip(names) {
        assert_close(&format!("{what}: {name}"), o, t, tol);
    }
}

#[test]
fn coefficients_have_the_value_and_gradients_of_the_composed_formula() {
    // One stream, three and four; a token count on one thread and on several; one Sinkhorn
    // iteration (the softmax and one column pass) and twenty; logits of std about 1 and, with a
    // large α₂, saturated ones.
    let device = Device::flex().autodiff();
    for (n, m, d, iters, alpha) in [(5, 1, 8, 20, 1.0), (7, 3, 8, 1, 1.0), (300, 4, 16, 20, 1.0), (40, 4, 8, 20, 30.0)] {
        let k = m * m + 2 * m;
        let xf = seeded::<2>([n, m * d], 0.3, 1.5, 1, &device);
        let mix = seeded::<2>([n, k], 0.0, 1.0, 2, &device);
        let scale = seeded::<1>([3], alpha, 0.3, 3, &device);
        let base = seeded::<1>([k], 0.0, 0.5, 4, &device);
        let r = seeded::<2>([n, k], 0.0, 1.0, 5, &device);
        let p = params(m, iters);
        let ours = value_and_grads([mix.clone(), xf.clone(), scale.clone().unsqueeze(), base.clone().unsqueeze()], r.clone(), |[a, b, c, e]| mhc_coeffs(a, b, c.reshape([3]), e.reshape([k]), p));
        let theirs = value_and_grads([mix, xf, scale.unsqueeze(), base.unsqueeze()], r, |[a, b, c, e]| coeffs_composed(a, b, c.reshape([3]), e.reshape([k]), p));
        check(&format!("coeffs n{n} m{m} iters{iters} α{alpha}"), &ours, &theirs, &["value", "mix", "xf", "scale", "base"], 2e-5);
        // The Sinkhorn part is doubly stochastic: columns sum to 1 within 1e-6.
        let c = &ours[0];
        for t in 0..n {
            for col in 0..m {
                let s: f32 = (0..m).map(|j| c[t * k + 2 * m + j * m + col]).sum();
                assert!((s - 1.0).abs() < 1e-5, "column sum {s}");
            }
        }
    }
}

#[test]
fn merge_has_the_value_and_gradients_of_the_composed_formula() {
    let device = Device::flex().autodiff();
    for (n, m, d) in [(3, 1, 5), (9, 4, 16), (400, 4, 64)] {
        let x = seeded::<2>([n, m * d], 0.0, 1.0, 11, &device);
        let y = seeded::<2>([n, d], 0.0, 1.0, 14, &device);
        let post = seeded::<2>([n, m], 1.0, 0.5, 15, &device);
        let comb = seeded::<2>([n, m * m], 0.3, 0.2, 16, &device);
        let r = seeded::<2>([n, m * d], 0.0, 1.0, 17, &device);
        // x'[k] = post[k]·y + Σ_j comb[j, k]·x[j], written with an explicit transpose.
        let composed = |x: Tensor<2>, y: Tensor<2>, post: Tensor<2>, comb: Tensor<2>| {
            let write = post.reshape([n, m, 1]) * y.reshape([n, 1, d]);
            let keep = comb.reshape([n, m, m]).swap_dims(1, 2).matmul(x.reshape([n, m, d]));
            (write + keep).reshape([n, m * d])
        };
        let ours = value_and_grads([x.clone(), y.clone(), post.clone(), comb.clone()], r.clone(), |[x, y, p, c]| mhc_merge(x.reshape([n, m, d]), y, p, c.reshape([n, m, m])).reshape([n, m * d]));
        let theirs = value_and_grads([x, y, post, comb], r, |[x, y, p, c]| composed(x, y, p, c));
        check(&format!("merge n{n} m{m} d{d}"), &ours, &theirs, &["value", "x", "y", "post", "comb"], 1e-5);
    }
}

#[test]
fn merge_reads_comb_transposed() {
    // comb[j, k] is source j's weight in destination k: with comb = [[0, 1], [0, 0]] and no
    // write, stream 1 receives stream 0 and stream 0 receives nothing.
    let device = Device::flex();
    let x = Tensor::<3>::from_floats([[[1.0, 2.0], [10.0, 20.0]]], &device);
    let y = Tensor::<2>::zeros([1, 2], &device);
    let post = Tensor::<2>::zeros([1, 2], &device);
    let comb = Tensor::<3>::from_floats([[[0.0, 1.0], [0.0, 0.0]]], &device);
    assert_eq!(vals(mhc_merge(x, y, post, comb).reshape([1, 4])), vec![0.0, 0.0, 1.0, 2.0]);
}
