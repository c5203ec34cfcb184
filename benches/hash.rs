//! Hash throughput in the demo layout (2 Engram layers × 16 ids per token, V' = 98,627):
//! one thread and all threads, plus the unique-row pass the sparse update needs.
//!
//! `cargo bench --bench hash`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engram::hashing::{unique_rows_with, HashConfig, NgramHasher, UniqueScratch};

fn tokens(n: usize, v: u64) -> Vec<u32> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % v) as u32
        })
        .collect()
}

fn bench_hash(c: &mut Criterion) {
    let hasher = NgramHasher::new(&HashConfig::demo(), 98_627, 2).expect("demo layout is valid");
    let (batch, seq) = (16usize, 2048usize);
    let ids = tokens(batch * seq, 98_627);
    let mut out = Vec::new();
    let mut g = c.benchmark_group("hash_demo_layout");
    // Elements = tokens × layers: the figure comparable with "tokens/s per layer".
    g.throughput(Throughput::Elements((batch * seq * 2) as u64));
    g.bench_function("1_thread", |b| b.iter(|| hasher.hash_batch_rows_1thread(&ids, batch, seq, &mut out).expect("ids are in range")));
    g.bench_function("all_threads", |b| b.iter(|| hasher.hash_batch_rows(&ids, batch, seq, &mut out).expect("ids are in range")));
    g.finish();

    hasher.hash_batch_rows(&ids, batch, seq, &mut out).expect("ids are in range");
    let (mut uniq, mut inverse, mut scratch) = (Vec::new(), Vec::new(), UniqueScratch::default());
    let mut g = c.benchmark_group("unique_rows");
    g.throughput(Throughput::Elements(out[0].len() as u64));
    g.bench_function("one_layer", |b| b.iter(|| unique_rows_with(&out[0], &mut uniq, &mut inverse, &mut scratch)));
    g.finish();
}

criterion_group!(benches, bench_hash);
criterion_main!(benches);
