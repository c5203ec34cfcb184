//! Table optimiser step: row-sparse (lazy) Adam vs dense Adam, for growing tables with the
//! same touched rows — sparse should be flat in the table size, dense linear.
//!
//! `cargo bench --bench sparse_update`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use engram::table::{EngramTable, TableAdam, UpdateMode};

fn bench_update(c: &mut Criterion) {
    let dim = 16;
    let touched = 8192usize; // about the distinct rows of one 16 × 64-token batch with 8 heads
    let mut g = c.benchmark_group("table_adam_step");
    g.sample_size(20);
    for log2 in [14u32, 17, 20] {
        let rows = 1usize << log2;
        let uniq: Vec<u32> = (0..touched.min(rows)).map(|i| ((i as u64 * 2_654_435_761) % rows as u64) as u32).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let grads = vec![0.01f32; uniq.len() * dim];
        for mode in [UpdateMode::Sparse, UpdateMode::Dense] {
            let mut table = EngramTable::new(rows, dim, 0.02, 0);
            g.bench_with_input(BenchmarkId::new(format!("{mode:?}"), format!("2^{log2}")), &rows, |b, _| {
                b.iter(|| table.adam_step(&uniq, &grads, 1e-3, &TableAdam::default(), mode).expect("rows are in range"))
            });
        }
        let table = EngramTable::new(rows, dim, 0.02, 0);
        let mut buf = Vec::new();
        g.bench_with_input(BenchmarkId::new("gather", format!("2^{log2}")), &rows, |b, _| b.iter(|| table.gather(&uniq, &mut buf).expect("rows are in range")));
    }
    g.finish();
}

criterion_group!(benches, bench_update);
criterion_main!(benches);
