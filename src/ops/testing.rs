//! Helpers of the kernels' tests: a kernel's value and gradients against burn's operations.

use burn::tensor::Tensor;

pub(super) fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// Largest difference ≤ `tol` × the larger of 1 and the reference's largest magnitude
/// (an absolute floor: gradients that are zero up to rounding, such as RMSNorm's over a
/// single feature, have no meaningful relative error).
pub(super) fn assert_close(what: &str, ours: &[f32], theirs: &[f32], tol: f32) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths differ");
    let scale = theirs.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1.0);
    let worst = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= tol * scale, "{what}: max difference {worst} vs scale {scale}");
}

/// The fused op's value and input gradient (for a random upstream gradient `r`) against the
/// composite one, computed with burn's own operations on the same device.
pub(super) fn compare<const D: usize, const E: usize>(what: &str, x: Tensor<D>, r: Tensor<E>, fused: impl Fn(Tensor<D>) -> Tensor<E>, composite: impl Fn(Tensor<D>) -> Tensor<E>, tol: f32) {
    let run = |f: &dyn Fn(Tensor<D>) -> Tensor<E>| {
        let xx = x.clone().require_grad();
        let y = f(xx.clone());
        let g = (y.clone() * r.clone()).sum().backward();
        (vals(y), vals(xx.grad(&g).expect("input gradient")))
    };
    let (ours, theirs) = (run(&fused), run(&composite));
    assert_close(&format!("{what} value"), &ours.0, &theirs.0, tol);
    assert_close(&format!("{what} gradient"), &ours.1, &theirs.1, tol);
}

/// [`compare`] for two inputs: the value and both inputs' gradients.
pub(super) fn compare_two<const A: usize, const B: usize, const E: usize>(what: &str, a: Tensor<A>, b: Tensor<B>, r: Tensor<E>, fused: impl Fn(Tensor<A>, Tensor<B>) -> Tensor<E>, composite: impl Fn(Tensor<A>, Tensor<B>) -> Tensor<E>) {
    let run = |f: &dyn Fn(Tensor<A>, Tensor<B>) -> Tensor<E>| {
        let (a, b) = (a.clone().require_grad(), b.clone().require_grad());
        let y = f(a.clone(), b.clone());
        let g = (y.clone() * r.clone()).sum().backward();
        [vals(y), vals(a.grad(&g).expect("first input's gradient")), vals(b.grad(&g).expect("second input's gradient"))]
    };
    let (ours, theirs) = (run(&fused), run(&composite));
    for (i, part) in ["value", "first input's gradient", "second input's gradient"].iter().enumerate() {
        assert_close(&format!("{what}: {part}"), &ours[i], &theirs[i], 1e-5);
    }
}
