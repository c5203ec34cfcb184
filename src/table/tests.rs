//! Tests of the host tables: initialisation, gathers, blocked updates, lazy (sparse) against dense Adam, and errors.

use super::*;
use layout::INIT_CHUNK_ROWS;

/// Test views of a table: its weights `[rows, dim]` and (Adam) moments `[rows, dim]` each,
/// read through [`EngramTable::snapshot`].
impl EngramTable {
    pub(crate) fn weights(&self) -> Vec<f32> {
        self.snapshot().0
    }

    pub(crate) fn moments(&self) -> (Vec<f32>, Vec<f32>) {
        let dim = self.dim();
        let state = self.snapshot().1;
        assert_eq!(self.layout().optimizer, TableOptimizer::Adam, "moments of an Adam table");
        let (mut m, mut v) = (Vec::new(), Vec::new());
        for row in state.chunks_exact(2 * dim) {
            m.extend_from_slice(&row[..dim]);
            v.extend_from_slice(&row[dim..]);
        }
        (m, v)
    }

    /// A resident copy (same records and step).
    pub(crate) fn clone_resident(&self) -> Self {
        let mut t = Self::with_layout(self.rows, self.layout, self.init);
        t.restore_resident(self.step, self.resident_records().expect("a resident table")).unwrap();
        t
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    layout::mix64(*state)
}

fn grads_for(uniq: &[u32], dim: usize, salt: f32) -> Vec<f32> {
    uniq.iter()
        .flat_map(|&r| (0..dim).map(move |j| ((r as f32 + 1.0) * 0.37 + j as f32 * 0.11 + salt).sin()))
        .collect()
}

#[test]
fn init_is_deterministic_and_thread_independent() {
    let a = EngramTable::new(10_000, 8, 1.0, 7);
    let b = EngramTable::new(10_000, 8, 1.0, 7);
    assert_eq!(a.weights(), b.weights());
    // Each row is a pure function of (seed, row): rows computed alone equal the table's.
    let mut row = vec![0.0f32; 8];
    for r in [0, INIT_CHUNK_ROWS - 1, INIT_CHUNK_ROWS, 9_999] {
        Init { seed: 7, std: 1.0 }.row(r, &mut row);
        assert_eq!(&a.weights()[r * 8..(r + 1) * 8], &row[..]);
    }
    let c = EngramTable::new(10_000, 8, 1.0, 8);
    assert_ne!(a.weights(), c.weights());
}

#[test]
fn init_has_requested_moments() {
    let t = EngramTable::new(20_000, 16, 0.5, 3);
    let n = t.weights().len() as f64;
    let mean = t.weights().iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = t.weights().iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    assert!(mean.abs() < 0.01, "mean {mean}");
    assert!((var.sqrt() - 0.5).abs() < 0.01, "std {}", var.sqrt());
}

#[test]
fn gather_copies_the_requested_rows() {
    let t = EngramTable::new(100, 4, 1.0, 1);
    let mut out = Vec::new();
    t.gather(&[3, 0, 99], &mut out).unwrap();
    assert_eq!(&out[0..4], &t.weights()[12..16]);
    assert_eq!(&out[4..8], &t.weights()[0..4]);
    assert_eq!(&out[8..12], &t.weights()[396..400]);
    assert_eq!(t.gather(&[100], &mut out), Err(TableError::RowOutOfRange { row: 100, rows: 100 }));
}

/// Ascending distinct rows of `0..rows`, each kept with probability about `keep`/64.
fn some_rows(rows: u32, keep: u64, seed: u64) -> Vec<u32> {
    let mut state = seed;
    (0..rows).filter(|_| splitmix64(&mut state) % 64 < keep).collect()
}

#[test]
fn blocked_update_then_gather_equals_adam_step_then_gather_in_any_order() {
    let (rows, dim) = (3000, 5);
    let adam = TableAdam::default();
    for (block_rows, seed) in [(1, 1), (7, 2), (64, 3), (100_000, 4)] {
        let mut blocked = EngramTable::new(rows, dim, 1.0, seed);
        let mut plain = blocked.clone_resident();
        for step in 0..3u64 {
            let uniq = some_rows(rows as u32, 20, seed * 10 + step);
            let next = some_rows(rows as u32, 20, seed * 10 + step + 100);
            assert!(uniq.iter().any(|r| next.contains(r)), "the two batches share rows");
            let g = grads_for(&uniq, dim, step as f32);
            let lr = 1e-2 * (step + 1) as f32;
            let mut got = vec![7.0; 3]; // replaced, not appended to
            let mut blocks = blocked.update_then_gather(&uniq, &g, lr, &adam, &next, &mut got, block_rows).unwrap();
            assert_eq!(blocks.len(), uniq.len().div_ceil(block_rows));
            // Last block first, and the rest on two threads: the order must not matter.
            let last = blocks.pop().unwrap();
            last.run();
            let (a, b): (Vec<_>, Vec<_>) = blocks.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
            std::thread::scope(|s| {
                for half in [a, b] {
                    s.spawn(move || half.into_iter().rev().for_each(|(_, block)| block.run()));
                }
            });
            plain.adam_step(&uniq, &g, lr, &adam, UpdateMode::Sparse).unwrap();
            let mut want = Vec::new();
            plain.gather(&next, &mut want).unwrap();
            assert_eq!(got, want, "block_rows {block_rows}, step {step}: gathered rows");
            assert_eq!(blocked.weights(), plain.weights());
            assert_eq!(blocked.moments(), plain.moments());
            assert_eq!(blocked.step(), plain.step());
        }
    }
}

#[test]
fn update_then_gather_with_no_update_or_no_gather() {
    let mut t = EngramTable::new(50, 3, 1.0, 4);
    let before = t.clone_resident();
    let mut out = Vec::new();
    for block in t.update_then_gather(&[], &[], 1e-2, &TableAdam::default(), &[0, 49], &mut out, 8).unwrap() {
        block.run();
    }
    assert_eq!(out, [&before.weights()[..3], &before.weights()[147..]].concat());
    assert_eq!(t.weights(), before.weights());
    assert_eq!(t.step(), 1);
    let g = grads_for(&[10], 3, 0.0);
    for block in t.update_then_gather(&[10], &g, 1e-2, &TableAdam::default(), &[], &mut out, 8).unwrap() {
        block.run();
    }
    assert!(out.is_empty());
    assert_ne!(&t.weights()[30..33], &before.weights()[30..33]);
}

#[test]
fn update_then_gather_rejects_bad_input_and_changes_nothing() {
    let mut t = EngramTable::new(100, 2, 1.0, 3);
    let before = t.clone_resident();
    let adam = TableAdam::default();
    let mut out = vec![1.0];
    let g2 = vec![0.5; 4];
    type Case<'a> = (&'a [u32], &'a [f32], &'a [u32], TableError);
    let cases: [Case; 5] = [
        (&[5, 3], &g2, &[], TableError::RowsNotAscending { what: "updated", prev: 5, row: 3 }),
        (&[3, 5], &g2, &[8, 8], TableError::RowsNotAscending { what: "gathered", prev: 8, row: 8 }),
        (&[3, 100], &g2, &[], TableError::RowOutOfRange { row: 100, rows: 100 }),
        (&[3, 5], &g2, &[200], TableError::RowOutOfRange { row: 200, rows: 100 }),
        (&[3, 5], &g2[..3], &[], TableError::GradShape { got: 3, expected: 4, uniq: 2, dim: 2 }),
    ];
    for (uniq, g, next, want) in cases {
        assert_eq!(t.update_then_gather(uniq, g, 1e-2, &adam, next, &mut out, 1).err(), Some(want));
        assert_eq!(t.weights(), before.weights());
        assert_eq!(t.step(), 0);
        assert_eq!(out, [1.0]);
    }
}

#[test]
fn sparse_equals_dense_when_every_row_is_touched_every_step() {
    let (rows, dim) = (64, 8);
    let mut sparse = EngramTable::new(rows, dim, 1.0, 5);
    let mut dense = sparse.clone_resident();
    let all: Vec<u32> = (0..rows as u32).collect();
    for step in 0..5 {
        let g = grads_for(&all, dim, step as f32);
        sparse.adam_step(&all, &g, 1e-2, &TableAdam::default(), UpdateMode::Sparse).unwrap();
        dense.adam_step(&all, &g, 1e-2, &TableAdam::default(), UpdateMode::Dense).unwrap();
    }
    assert_eq!(sparse.weights(), dense.weights());
    assert_eq!(sparse.moments(), dense.moments());
}

#[test]
fn sparse_equals_dense_on_the_first_step() {
    let (rows, dim) = (1000, 4);
    let mut sparse = EngramTable::new(rows, dim, 1.0, 5);
    let mut dense = sparse.clone_resident();
    let uniq = [2u32, 17, 500, 999];
    let g = grads_for(&uniq, dim, 0.0);
    sparse.adam_step(&uniq, &g, 1e-2, &TableAdam::default(), UpdateMode::Sparse).unwrap();
    dense.adam_step(&uniq, &g, 1e-2, &TableAdam::default(), UpdateMode::Dense).unwrap();
    // With zero moments, a zero gradient moves nothing: the two agree on every row.
    assert_eq!(sparse.weights(), dense.weights());
}

#[test]
fn rows_not_looked_up_stay_bit_identical() {
    let (rows, dim) = (500, 8);
    let mut t = EngramTable::new(rows, dim, 1.0, 9);
    let before = t.clone_resident();
    let touched = [[1u32, 5, 9], [5, 10, 11], [1, 2, 3]];
    for (s, uniq) in touched.iter().enumerate() {
        let g = grads_for(uniq, dim, s as f32);
        t.adam_step(uniq, &g, 1e-2, &TableAdam::default(), UpdateMode::Sparse).unwrap();
    }
    let hit: std::collections::BTreeSet<u32> = touched.iter().flatten().copied().collect();
    for r in 0..rows {
        let span = r * dim..(r + 1) * dim;
        if hit.contains(&(r as u32)) {
            assert_ne!(&t.weights()[span.clone()], &before.weights()[span]);
        } else {
            assert_eq!(&t.weights()[span.clone()].iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                       &before.weights()[span.clone()].iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            assert!(t.moments().0[span.clone()].iter().all(|&x| x == 0.0));
            assert!(t.moments().1[span].iter().all(|&x| x == 0.0));
        }
    }
    assert_eq!(t.step(), 3);
}

#[test]
fn dense_moves_untouched_rows_with_momentum() {
    // The difference between the two modes is real: after a row was touched once, dense Adam
    // keeps moving it while lazy Adam freezes it.
    let (rows, dim) = (10, 2);
    let mut sparse = EngramTable::new(rows, dim, 1.0, 1);
    let mut dense = sparse.clone_resident();
    let g = grads_for(&[4], dim, 0.0);
    sparse.adam_step(&[4], &g, 0.1, &TableAdam::default(), UpdateMode::Sparse).unwrap();
    dense.adam_step(&[4], &g, 0.1, &TableAdam::default(), UpdateMode::Dense).unwrap();
    let g2 = grads_for(&[7], dim, 1.0);
    sparse.adam_step(&[7], &g2, 0.1, &TableAdam::default(), UpdateMode::Sparse).unwrap();
    dense.adam_step(&[7], &g2, 0.1, &TableAdam::default(), UpdateMode::Dense).unwrap();
    assert_ne!(sparse.weights()[8..10], dense.weights()[8..10]);
    assert_eq!(sparse.weights()[14..16], dense.weights()[14..16]);
}

#[test]
fn bad_gradient_shape_is_an_error() {
    let mut t = EngramTable::new(10, 4, 1.0, 1);
    let err = t.adam_step(&[1, 2], &[0.0; 7], 0.1, &TableAdam::default(), UpdateMode::Sparse).unwrap_err();
    assert_eq!(err, TableError::GradShape { got: 7, expected: 8, uniq: 2, dim: 4 });
    assert_eq!(t.step(), 0, "a failed step does not advance the counter");
}

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("engram-table-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Three sparse steps on rows drawn from `seed`, the same for every table they are applied to.
fn train_steps(t: &mut EngramTable, seeds: std::ops::Range<u64>) {
    for s in seeds {
        train_step(t, s, false);
    }
}

#[test]
fn file_backed_tables_equal_resident_ones_and_touch_only_what_is_used() {
    let dir = scratch_dir("equal");
    for (optimizer, weights) in [(TableOptimizer::Adam, WeightFormat::F32), (TableOptimizer::RowWise, WeightFormat::F32), (TableOptimizer::RowWise, WeightFormat::Bf16)] {
        let layout = RowLayout { dim: 6, optimizer, weights };
        let init = Init { seed: 11, std: 0.5 };
        let mut resident = EngramTable::with_layout(20_000, layout, init);
        let mut file = EngramTable::open_file(&dir.join("t.slab"), 20_000, layout, init, true).unwrap();
        assert_eq!(resident.snapshot(), file.snapshot(), "{layout:?}: initial values");
        assert_eq!(file.materialised_rows(), 0, "reading touches nothing");
        train_steps(&mut resident, 0..4);
        train_steps(&mut file, 0..4);
        let (rs, fs) = (resident.snapshot(), file.snapshot());
        assert_eq!(rs.0.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), fs.0.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), "{layout:?}: weights");
        assert_eq!(rs.1.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), fs.1.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), "{layout:?}: state");
        let touched: std::collections::BTreeSet<u32> = (0..4).flat_map(|s| some_rows(20_000, 3, s).into_iter().chain(some_rows(20_000, 3, s + 1000))).collect();
        assert_eq!(file.materialised_rows(), touched.len(), "one record per row touched");
        assert!(file.disk_bytes() < 4096 * 3 + (touched.len() * layout.record_bytes()) as u64 * 2, "{} bytes on disk", file.disk_bytes());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_backed_table_returns_to_its_checkpoint_from_the_journal() {
    let dir = scratch_dir("journal");
    let path = dir.join("t.slab");
    let layout = RowLayout { dim: 4, optimizer: TableOptimizer::Adam, weights: WeightFormat::F32 };
    let init = Init { seed: 3, std: 0.1 };
    let mut t = EngramTable::open_file(&path, 5_000, layout, init, true).unwrap();
    train_steps(&mut t, 0..3);
    let (slots, epoch) = t.file_checkpoint().unwrap().unwrap();
    t.checkpoint_written().unwrap();
    let (at, step_at) = (t.snapshot(), t.step());
    // Changes after the checkpoint (old rows and new ones), then the process dies.
    train_steps(&mut t, 3..6);
    assert_ne!(t.snapshot(), at);
    drop(t);
    let mut u = EngramTable::open_file(&path, 5_000, layout, init, false).unwrap();
    u.restore_file(step_at, slots, epoch).unwrap();
    assert_eq!((u.snapshot(), u.step(), u.materialised_rows()), (at.clone(), step_at, slots as usize));

    // The process dies after a checkpoint is in place but before the journal restarted: the
    // journal then belongs to the epoch before, and resuming ignores it.
    train_steps(&mut u, 6..8);
    let (slots2, epoch2) = u.file_checkpoint().unwrap().unwrap();
    let (at2, step2) = (u.snapshot(), u.step());
    drop(u);
    let mut w = EngramTable::open_file(&path, 5_000, layout, init, false).unwrap();
    w.restore_file(step2, slots2, epoch2).unwrap();
    assert_eq!(w.snapshot(), at2);
    // And training goes on from there like the uninterrupted table.
    let mut resident = EngramTable::with_layout(5_000, layout, init);
    train_steps(&mut resident, 0..3);
    train_steps(&mut resident, 6..8);
    train_steps(&mut resident, 8..10);
    train_steps(&mut w, 8..10);
    assert_eq!(w.snapshot(), resident.snapshot());

    // Another table's file is refused, naming what differs.
    let e = EngramTable::open_file(&path, 5_001, layout, init, false).unwrap_err();
    assert!(e.to_string().contains("rows 5000 in the file, 5001 in this config"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Step `s` of [`train_steps`], after prefetching its rows when `prefetch`.
fn train_step(t: &mut EngramTable, s: u64, prefetch: bool) {
    let rows = t.rows() as u32;
    let (uniq, next) = (some_rows(rows, 3, s), some_rows(rows, 3, s + 1000));
    if prefetch {
        t.prefetch(&uniq, &next).unwrap();
    }
    let g = grads_for(&uniq, t.dim(), s as f32);
    let mut out = Vec::new();
    for block in t.update_then_gather(&uniq, &g, 1e-2, &TableAdam::default(), &next, &mut out, 64).unwrap() {
        block.run();
    }
}

#[test]
fn a_step_its_prefetch_readied_trains_and_journals_like_one_without() {
    let dir = scratch_dir("readied");
    let layout = RowLayout { dim: 4, optimizer: TableOptimizer::Adam, weights: WeightFormat::F32 };
    let init = Init { seed: 5, std: 0.1 };
    let (pp, qp) = (dir.join("p.slab"), dir.join("q.slab"));
    let mut p = EngramTable::open_file(&pp, 5_000, layout, init, true).unwrap();
    let mut q = EngramTable::open_file(&qp, 5_000, layout, init, true).unwrap();
    let mut resident = EngramTable::with_layout(5_000, layout, init);
    for s in 0..3 {
        train_step(&mut p, s, true);
        train_step(&mut q, s, false);
        train_step(&mut resident, s, false);
    }
    // A checkpoint between step 3's prefetch and its update: the update must journal the
    // pre-images of its rows in the new epoch although their slots were readied in the old one.
    let rows = some_rows(5_000, 3, 3);
    p.prefetch(&rows, &some_rows(5_000, 3, 1003)).unwrap();
    let cp = p.file_checkpoint().unwrap().unwrap();
    p.checkpoint_written().unwrap();
    let cq = q.file_checkpoint().unwrap().unwrap();
    q.checkpoint_written().unwrap();
    let (at, step_at) = (q.snapshot(), q.step());
    for s in 3..6 {
        train_step(&mut p, s, true);
        train_step(&mut q, s, false);
        train_step(&mut resident, s, false);
    }
    assert_eq!(p.snapshot(), resident.snapshot());
    assert_eq!(q.snapshot(), resident.snapshot());
    drop((p, q));
    let mut p = EngramTable::open_file(&pp, 5_000, layout, init, false).unwrap();
    p.restore_file(step_at, cp.0, cp.1).unwrap();
    assert_eq!((p.snapshot(), p.step()), (at.clone(), step_at), "the journal restores the checkpoint");

    // A restore between a prefetch and its update forgets the slots the prefetch created:
    // the update looks its rows up again (it would write past the file's end otherwise).
    p.prefetch(&some_rows(5_000, 3, 7), &some_rows(5_000, 3, 1007)).unwrap();
    assert!(p.materialised_rows() > cp.0 as usize);
    p.restore_file(step_at, cp.0, cp.1).unwrap();
    let mut q = EngramTable::open_file(&qp, 5_000, layout, init, false).unwrap();
    q.restore_file(step_at, cq.0, cq.1).unwrap();
    for s in 7..9 {
        train_step(&mut p, s, false);
        train_step(&mut q, s, false);
    }
    assert_eq!(p.snapshot(), q.snapshot());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn load_weights_sets_rows_and_clears_their_state() {
    let mut t = EngramTable::new(100, 4, 0.5, 3);
    let uniq = [10, 11, 12];
    t.adam_step(&uniq, &grads_for(&uniq, 4, 0.0), 1e-2, &TableAdam::default(), UpdateMode::Sparse).unwrap();
    let new: Vec<f32> = (0..8).map(|i| i as f32 * 0.25 - 1.0).collect();
    assert_eq!(t.load_weights(11, &new), Ok(2));
    let (w, (m, v)) = (t.weights(), t.moments());
    assert_eq!(&w[11 * 4..13 * 4], &new[..]);
    assert!(m[11 * 4..13 * 4].iter().chain(&v[11 * 4..13 * 4]).all(|&x| x == 0.0), "the loaded rows keep optimiser state");
    assert!(m[10 * 4..11 * 4].iter().any(|&x| x != 0.0), "a row not loaded lost its state");
    assert_eq!(t.step(), 1);
    assert_eq!(t.load_weights(99, &new), Err(TableError::RowOutOfRange { row: 100, rows: 100 }));
    assert!(matches!(t.load_weights(0, &new[..3]), Err(TableError::DataShape { .. })));
}

#[test]
fn load_weights_gives_file_records_only_to_changed_rows() {
    let dir = scratch_dir("load");
    let layout = RowLayout { dim: 6, optimizer: TableOptimizer::RowWise, weights: WeightFormat::F32 };
    let init = Init { seed: 9, std: 0.02 };
    let mut file = EngramTable::open_file(&dir.join("t.slab"), 10_000, layout, init, true).unwrap();
    // Rows 5000..5010 at their initial value: no record is created.
    let resident = EngramTable::with_layout(10_000, layout, init);
    let mut block = Vec::new();
    resident.gather(&(5000..5010).collect::<Vec<_>>(), &mut block).unwrap();
    assert_eq!(file.load_weights(5000, &block), Ok(0));
    assert_eq!(file.materialised_rows(), 0);
    // One changed value: that row alone gets a record, and reads back as loaded.
    block[3 * 6 + 2] += 1.0;
    assert_eq!(file.load_weights(5000, &block), Ok(1));
    assert_eq!(file.materialised_rows(), 1);
    let mut back = Vec::new();
    file.gather(&(5000..5010).collect::<Vec<_>>(), &mut back).unwrap();
    assert_eq!(back, block);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn load_weights_refuses_values_a_bf16_table_cannot_hold() {
    let layout = RowLayout { dim: 3, optimizer: TableOptimizer::RowWise, weights: WeightFormat::Bf16 };
    let mut t = EngramTable::with_layout(10, layout, Init { seed: 1, std: 0.02 });
    // bf16 values (8 significant bits) load exactly.
    assert_eq!(t.load_weights(2, &[0.5, -1.25, 3.0]), Ok(1));
    assert_eq!(&t.weights()[6..9], &[0.5, -1.25, 3.0]);
    // 1 + 2^-10 needs more bits: refused, naming row and element.
    let e = t.load_weights(4, &[1.0, 1.0 + 1.0 / 1024.0, 0.0]).unwrap_err();
    assert_eq!(e, TableError::NotBf16 { row: 4, element: 1, value: 1.0 + 1.0 / 1024.0 });
}

#[test]
fn the_index_size_model_matches_the_hash_tables_capacity() {
    // The standard library's table holds `buckets · 7 / 8` entries (`buckets − 1` below 8
    // buckets) before it grows; `index_bytes` must count the buckets it then has.
    let mut index = std::collections::HashMap::<u32, u32, ahash::RandomState>::default();
    let per_bucket = std::mem::size_of::<(u32, u32)>() as u64 + 1;
    for rows in 1..=100_000u32 {
        index.insert(rows * 7919, rows);
        if rows.is_power_of_two() || rows % 9_973 == 0 || rows < 40 {
            let cap = index.capacity() as u64;
            let buckets = if cap < 8 { cap + 1 } else { cap * 8 / 7 };
            assert_eq!(slab::index_bytes(rows as u64), buckets * per_bucket + 16, "{rows} rows: capacity {cap}");
        }
    }
    assert_eq!(slab::index_bytes(0), 0);
}
