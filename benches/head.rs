//! The LM head of the PyTorch reference configuration (one batch of 16 × 128 tokens, d_model
//! 256, vocabulary 8,192), alone: its three matrix products (forward `h·W`, backward `G·Wᵀ`
//! and `hᵀ·G`) and the head + mean cross-entropy forward and backward, fused
//! (`head_cross_entropy`, what training uses) against burn's `log_softmax` path. These products
//! are most of a reference training step, so their GFLOP/s bound it.
//!
//! `cargo bench --bench head` (flex; `--features ndarray` or `openblas` adds ndarray)

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engram::model::{cross_entropy, head_cross_entropy};

/// Rows, width and vocabulary of the reference configuration's LM head.
const N: usize = 2048;
const D: usize = 256;
const V: usize = 8192;

fn devices() -> Vec<(&'static str, Device)> {
    let mut out = vec![("flex", Device::flex())];
    if let Ok(nd) = engram::device::device_from_name("ndarray") {
        out.push(("ndarray", nd));
    }
    out
}

fn bench_products(c: &mut Criterion) {
    let mut g = c.benchmark_group("head_matmul");
    g.sample_size(10);
    // Elements = floating-point operations: criterion's "elem/s" is FLOP/s.
    g.throughput(Throughput::Elements(2 * (N * D * V) as u64));
    for (name, dev) in devices() {
        let h = Tensor::<2>::random([N, D], Distribution::Default, &dev);
        let w = Tensor::<2>::random([D, V], Distribution::Default, &dev);
        let gr = Tensor::<2>::random([N, V], Distribution::Default, &dev);
        // The output is read back each time, so that a lazy backend computes it.
        g.bench_function(BenchmarkId::new("h·W", name), |b| b.iter(|| h.clone().matmul(w.clone()).into_data()));
        g.bench_function(BenchmarkId::new("G·Wᵀ", name), |b| b.iter(|| gr.clone().matmul(w.clone().transpose()).into_data()));
        g.bench_function(BenchmarkId::new("hᵀ·G", name), |b| b.iter(|| h.clone().transpose().matmul(gr.clone()).into_data()));
    }
    g.finish();
}

fn bench_head_loss(c: &mut Criterion) {
    let mut g = c.benchmark_group("head_loss_forward_backward");
    g.sample_size(10);
    for (name, dev) in devices() {
        let dev = dev.autodiff();
        let h = Tensor::<2>::random([N, D], Distribution::Normal(0.0, 1.0), &dev);
        let w = Tensor::<2>::random([D, V], Distribution::Normal(0.0, 0.02), &dev);
        let y = Tensor::<1, Int>::from_data(TensorData::new((0..N as i32).map(|i| (i * 7919) % V as i32).collect::<Vec<_>>(), [N]), &dev);
        for fused in [true, false] {
            let id = BenchmarkId::new(if fused { "fused" } else { "burn_log_softmax" }, name);
            g.bench_function(id, |b| {
                b.iter(|| {
                    let (h, w) = (h.clone().require_grad(), w.clone().require_grad());
                    let loss = if fused {
                        head_cross_entropy(h.clone(), w.clone(), None, y.clone())
                    } else {
                        cross_entropy(h.clone().matmul(w.clone()).reshape([1, N, V]), y.clone().reshape([1, N]))
                    };
                    let grads = loss.backward();
                    (h.grad(&grads).expect("h takes part in the loss").into_data(), w.grad(&grads).expect("w takes part in the loss").into_data())
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_products, bench_head_loss);
criterion_main!(benches);
