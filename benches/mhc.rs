//! Where the time of four mHC streams goes, and what the fused flex kernels save: forward +
//! backward of the pieces that multi-branch streams add or widen, at the size of
//! `exp_throughput`'s small model (d_model 64, batch 16 × 64 tokens, Engram's memory 2 orders
//! × 4 heads × 32), on flex with the fused kernels and with burn's composed operations
//! ([`engram::ops::with_generic_ops`]).
//!
//! * one mHC sublayer around an identity sublayer, and its three parts alone: the
//!   coefficients (φ product, RMS, gates, 20 Sinkhorn iterations), the collapse (burn's
//!   operations on every path) and the merge;
//! * the Engram layer on one stream and on four (gate per stream, conv over 4·D channels).
//!
//! Every piece is timed `ROUNDS` times, the pieces interleaved, medians reported; the first
//! piece is timed twice (A and A′) so that the A/A ratio shows the run's noise.
//!
//! `cargo test --bench mhc` (the `dev` profile that `cargo run` uses; `cargo bench` builds
//! another profile)

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use engram::engram::{EngramLayerConfig, EngramMemory};
use engram::model::MhcConfig;
use engram::ops::with_generic_ops;

const B: usize = 16;
const T: usize = 64;
const D: usize = 64;
const M: usize = 4;
const ROUNDS: usize = 40;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

type Piece = Box<dyn Fn()>;

fn main() {
    engram::runtime::tune_allocator();
    let device = Device::flex().autodiff();
    let mhc = MhcConfig::default().with_streams(M).init_sublayer(D, &device);
    let x4 = Tensor::<4>::random([B, T, M, D], Distribution::Normal(0.0, 1.0), &device);
    let r4 = Tensor::<4>::random([B, T, M, D], Distribution::Normal(0.0, 1.0), &device);
    let sublayer = {
        let (mhc, x, r) = (mhc.clone(), x4.clone(), r4.clone());
        move || {
            let x = x.clone().require_grad();
            let y = mhc.forward(x.clone(), |u| u);
            let g = (y * r.clone()).sum().backward();
            std::hint::black_box(x.grad(&g));
        }
    };
    // The sublayer's three parts alone, with random upstream gradients.
    let coeffs = {
        let (mhc, x) = (mhc.clone(), x4.clone());
        let r = [B * T * M, B * T * M, B * T * M * M].map(|n| Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &device));
        move || {
            let x = x.clone().require_grad();
            let c = mhc.coeffs(x.clone());
            let loss = (c.pre.reshape([-1]) * r[0].clone()).sum() + (c.post.reshape([-1]) * r[1].clone()).sum() + (c.comb.reshape([-1]) * r[2].clone()).sum();
            let g = loss.backward();
            std::hint::black_box(x.grad(&g));
        }
    };
    let w3 = Tensor::<3>::random([B, T, M], Distribution::Normal(0.5, 0.2), &device);
    let comb4 = Tensor::<4>::random([B, T, M, M], Distribution::Normal(0.25, 0.1), &device);
    let y3 = Tensor::<3>::random([B, T, D], Distribution::Normal(0.0, 1.0), &device);
    let collapse = {
        let (x, w, r) = (x4.clone(), w3.clone(), y3.clone());
        move || {
            let (x, w) = (x.clone().require_grad(), w.clone().require_grad());
            let g = (engram::model::mhc::collapse(x.clone(), w.clone()) * r.clone()).sum().backward();
            std::hint::black_box((x.grad(&g), w.grad(&g)));
        }
    };
    let merge = {
        let (x, y, post, comb, r) = (x4.clone(), y3.clone(), w3.clone(), comb4, r4.clone());
        move || {
            let (x, y, post, comb) = (x.clone().require_grad(), y.clone().require_grad(), post.clone().require_grad(), comb.clone().require_grad());
            let g = (engram::model::mhc::merge(x.clone(), y.clone(), post.clone(), comb.clone()) * r.clone()).sum().backward();
            std::hint::black_box((x.grad(&g), y.grad(&g), post.grad(&g), comb.grad(&g)));
        }
    };
    let layer = |m: usize| {
        let layer = EngramLayerConfig::new(D, 2 * 4 * 32, 3).with_hc_mult(m).init(&device);
        let h = Tensor::<4>::random([B, T, m, D], Distribution::Normal(0.0, 1.0), &device);
        let r = Tensor::<4>::random([B, T, m, D], Distribution::Normal(0.0, 1.0), &device);
        let rows: Vec<f32> = (0..500 * 32).map(|i| ((i * 37) % 101) as f32 / 101.0 - 0.5).collect();
        let inverse: Vec<u32> = (0..B * T * 8).map(|i| (i * 13 % 500) as u32).collect();
        let device = device.clone();
        move || {
            let h = h.clone().require_grad();
            let mem = EngramMemory::upload(rows.clone(), 32, &inverse, B, T, 8, &device, true);
            let y = layer.forward(h.clone(), mem.embeddings());
            let g = (y * r.clone()).sum().backward();
            std::hint::black_box(h.grad(&g));
        }
    };
    let generic = |f: Piece| -> Piece { Box::new(move || with_generic_ops(&f)) };
    let pieces: Vec<(&str, Piece)> = vec![
        ("mHC sublayer, M=4, fused (A)", Box::new(sublayer.clone())),
        ("mHC sublayer, M=4, fused (A')", Box::new(sublayer.clone())),
        ("mHC sublayer, M=4, burn ops", generic(Box::new(sublayer))),
        ("  its coefficients, fused", Box::new(coeffs.clone())),
        ("  its coefficients, burn ops", generic(Box::new(coeffs))),
        ("  its collapse (burn ops)", Box::new(collapse)),
        ("  its merge, fused", Box::new(merge.clone())),
        ("  its merge, burn ops", generic(Box::new(merge))),
        ("Engram layer, M=1, fused", Box::new(layer(1))),
        ("Engram layer, M=4, fused", Box::new(layer(M))),
        ("Engram layer, M=4, burn ops", generic(Box::new(layer(M)))),
    ];
    for (_, f) in &pieces {
        f(); // warm-up
    }
    let mut times = vec![Vec::with_capacity(ROUNDS); pieces.len()];
    for _ in 0..ROUNDS {
        for (i, (_, f)) in pieces.iter().enumerate() {
            let t0 = Instant::now();
            f();
            times[i].push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let med: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    println!("forward + backward, flex, B {B} × T {T}, d_model {D}; medians of {ROUNDS} interleaved rounds");
    println!("{:<32} {:>9} {:>9}", "piece", "ms", "vs A");
    for ((name, _), &ms) in pieces.iter().zip(&med) {
        println!("{name:<32} {ms:>9.3} {:>9.3}", ms / med[0]);
    }
    let at = |name: &str| med[pieces.iter().position(|(n, _)| *n == name).expect("a piece")];
    println!(
        "A/A: {:.3}; mHC sublayer burn ops / fused: {:.2}; Engram M=4 burn ops / fused: {:.2}; Engram fused M=4 / M=1: {:.2}",
        med[1] / med[0],
        at("mHC sublayer, M=4, burn ops") / med[0],
        at("Engram layer, M=4, burn ops") / at("Engram layer, M=4, fused"),
        at("Engram layer, M=4, fused") / at("Engram layer, M=1, fused")
    );
}
