//! Property tests of the n-gram hash, the numpy RNG port and `unique_rows`.

use engram::hashing::{
    default_rng, is_prime, unique_rows, unique_rows_with, FastMod, HashConfig, HashError, NgramHasher, Pcg64, UniqueScratch, MAX_TABLE_ROWS,
};
use proptest::prelude::*;

/// Straight-from-the-spec reference: int64 products (checked in i128), XOR, `%` by the prime.
fn reference_ids(h: &NgramHasher, layer_idx: usize, seq: &[u32]) -> Vec<u64> {
    let layer = &h.layers()[layer_idx];
    let n_max = h.config().max_ngram_size;
    let pad = h.pad_compressed();
    let mut out = Vec::new();
    for t in 0..seq.len() {
        for n in 2..=n_max {
            let mut mix: i64 = 0;
            for k in 0..n {
                let s = if t >= k { seq[t - k] } else { pad };
                let prod = i128::from(s) * i128::from(layer.multipliers[k]);
                assert!(prod <= i128::from(i64::MAX), "int64 overflow: {s} * {}", layer.multipliers[k]);
                mix ^= prod as i64;
            }
            assert!(mix >= 0);
            for &p in &layer.primes[n - 2] {
                out.push(mix as u64 % p);
            }
        }
    }
    out
}

/// A small random but valid configuration, its V' and compressed pad, and a sequence for it.
fn arb_setup(max_len: usize) -> impl Strategy<Value = (HashConfig, u64, u32, Vec<u32>)> {
    (
        2usize..=5,
        1usize..=9,
        prop::collection::vec(1u64..5_000, 4),
        prop::collection::btree_set(0usize..40, 1..4),
        any::<u64>(),
        prop_oneof![1u64..50, 50u64..200_000, (1u64 << 31)..=(1u64 << 32)],
    )
        .prop_flat_map(move |(n, k, sizes, layers, seed, vocab)| {
            let cfg = HashConfig {
                max_ngram_size: n,
                n_head_per_ngram: k,
                engram_vocab_size: sizes[..n - 1].to_vec(),
                layer_ids: layers.into_iter().collect(),
                seed,
                pad_id: 2,
            };
            let id_max = u32::try_from(vocab - 1).expect("vocab <= 2^32");
            (Just(cfg), Just(vocab), 0..=id_max, prop::collection::vec(0..=id_max, 0..max_len))
        })
}

fn demo_hasher() -> NgramHasher {
    NgramHasher::new(&HashConfig::demo(), 99_092, 2).expect("demo config is valid")
}

fn rows_of(h: &NgramHasher, li: usize, seq: &[u32]) -> Vec<u32> {
    let mut out = vec![0u32; seq.len() * h.heads_per_layer()];
    h.hash_rows(li, seq, &mut out).expect("ids in range");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ids_equal_int64_reference_for_any_config((cfg, vocab, pad, seq) in arb_setup(40)) {
        let h = NgramHasher::new(&cfg, vocab, pad).expect("valid config");
        for li in 0..h.layers().len() {
            let mut ids = vec![0u64; seq.len() * h.heads_per_layer()];
            h.hash_ids(li, &seq, &mut ids).expect("ids in range");
            prop_assert_eq!(&ids, &reference_ids(&h, li, &seq));
        }
    }

    #[test]
    fn every_head_id_is_below_its_prime((cfg, vocab, pad, seq) in arb_setup(40)) {
        let h = NgramHasher::new(&cfg, vocab, pad).expect("valid config");
        let heads = h.heads_per_layer();
        for (li, layer) in h.layers().iter().enumerate() {
            let primes: Vec<u64> = layer.primes.iter().flatten().copied().collect();
            let mut ids = vec![0u64; seq.len() * heads];
            h.hash_ids(li, &seq, &mut ids).expect("ids in range");
            for (i, &id) in ids.iter().enumerate() {
                prop_assert!(id < primes[i % heads]);
            }
        }
    }

    #[test]
    fn rows_lie_in_their_head_range((cfg, vocab, pad, seq) in arb_setup(40)) {
        let h = NgramHasher::new(&cfg, vocab, pad).expect("valid config");
        let heads = h.heads_per_layer();
        for (li, layer) in h.layers().iter().enumerate() {
            let primes: Vec<u64> = layer.primes.iter().flatten().copied().collect();
            for (i, &r) in rows_of(&h, li, &seq).iter().enumerate() {
                let (off, p) = (layer.offsets[i % heads], primes[i % heads]);
                prop_assert!(u64::from(r) >= off && u64::from(r) < off + p);
                prop_assert!(u64::from(r) < layer.total_rows);
            }
        }
    }

    #[test]
    fn changing_future_tokens_never_changes_earlier_rows(
        seq in prop::collection::vec(0u32..99_092, 1..64),
        cut in any::<prop::sample::Index>(),
        tail in prop::collection::vec(0u32..99_092, 64),
    ) {
        let h = demo_hasher();
        let heads = h.heads_per_layer();
        let t = cut.index(seq.len());
        let mut changed = seq.clone();
        for (dst, &src) in changed[t + 1..].iter_mut().zip(&tail) {
            *dst = src;
        }
        for li in 0..h.layers().len() {
            let a = rows_of(&h, li, &seq);
            let b = rows_of(&h, li, &changed);
            prop_assert_eq!(&a[..(t + 1) * heads], &b[..(t + 1) * heads]);
        }
    }

    #[test]
    fn hashing_is_deterministic_across_hashers_and_calls((cfg, vocab, pad, seq) in arb_setup(30)) {
        let h1 = NgramHasher::new(&cfg, vocab, pad).expect("valid config");
        let h2 = NgramHasher::new(&cfg, vocab, pad).expect("valid config");
        for li in 0..h1.layers().len() {
            let a = rows_of(&h1, li, &seq);
            prop_assert_eq!(&a, &rows_of(&h1, li, &seq));
            prop_assert_eq!(&a, &rows_of(&h2, li, &seq));
        }
    }

    #[test]
    fn batch_equals_per_sequence(
        (cfg, vocab, pad, _seq) in arb_setup(1),
        batch in 0usize..6,
        seq_len in 0usize..20,
        salt in any::<u64>(),
    ) {
        let h = NgramHasher::new(&cfg, vocab, pad).expect("valid config");
        let mut rng = default_rng(salt);
        let tokens: Vec<u32> = (0..batch * seq_len).map(|_| rng.below(vocab) as u32).collect();
        let mut out = Vec::new();
        h.hash_batch_rows_1thread(&tokens, batch, seq_len, &mut out).expect("ids in range");
        prop_assert_eq!(out.len(), h.layers().len());
        for (li, got) in out.iter().enumerate() {
            let want: Vec<u32> = tokens
                .chunks(seq_len.max(1))
                .flat_map(|s| rows_of(&h, li, s))
                .collect();
            prop_assert_eq!(got, &want);
        }
    }

    #[test]
    fn multithreaded_equals_single_threaded(
        batch in 1usize..5,
        seq_len in 1usize..700,
        threads in 2usize..9,
        salt in any::<u64>(),
    ) {
        let h = demo_hasher();
        let mut rng = default_rng(salt);
        let tokens: Vec<u32> = (0..batch * seq_len).map(|_| rng.below(99_092) as u32).collect();
        let (mut one, mut many, mut auto) = (Vec::new(), Vec::new(), Vec::new());
        h.hash_batch_rows_1thread(&tokens, batch, seq_len, &mut one).expect("ids in range");
        h.hash_batch_rows_threads(&tokens, batch, seq_len, &mut many, threads).expect("ids in range");
        h.hash_batch_rows(&tokens, batch, seq_len, &mut auto).expect("ids in range");
        prop_assert_eq!(&one, &many);
        prop_assert_eq!(&one, &auto);
    }

    #[test]
    fn unique_rows_reconstructs_rows(
        rows in prop_oneof![
            prop::collection::vec(0u32..50, 0..3000),
            prop::collection::vec(any::<u32>(), 0..3000),
            prop::collection::vec(0u32..100_000, 2048..6000), // bitmap path
            prop::collection::vec(0u32..20_000_000, 2048..6000), // radix path
        ],
    ) {
        let (mut uniq, mut inverse) = (vec![7u32; 3], vec![9u32; 5]);
        unique_rows(&rows, &mut uniq, &mut inverse);
        prop_assert_eq!(inverse.len(), rows.len());
        prop_assert!(uniq.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
        for (i, &r) in rows.iter().enumerate() {
            prop_assert_eq!(uniq[inverse[i] as usize], r);
        }
        let mut want = rows.clone();
        want.sort_unstable();
        want.dedup();
        prop_assert_eq!(&uniq, &want);
    }

    /// One scratch reused over batches that take the bitmap and the radix paths in turn gives
    /// what a fresh scratch gives.
    #[test]
    fn unique_rows_with_a_reused_scratch_equals_a_fresh_one(
        batches in prop::collection::vec(prop_oneof![
            prop::collection::vec(0u32..100_000, 2048..4000),
            prop::collection::vec(0u32..20_000_000, 2048..4000),
            prop::collection::vec(0u32..50, 0..300),
        ], 1..5),
    ) {
        let mut scratch = UniqueScratch::default();
        let (mut uniq, mut inverse) = (Vec::new(), Vec::new());
        for rows in &batches {
            unique_rows_with(rows, &mut uniq, &mut inverse, &mut scratch);
            let (mut u, mut i) = (Vec::new(), Vec::new());
            unique_rows(rows, &mut u, &mut i);
            prop_assert_eq!(&uniq, &u);
            prop_assert_eq!(&inverse, &i);
        }
    }

    #[test]
    fn fastmod_equals_remainder(a in 0u64..(1u64 << 63), d in 2u64..=(1u64 << 32)) {
        let fm = FastMod::new(d).expect("d in 2..=2^32");
        prop_assert_eq!(fm.rem(a), a % d);
    }

    #[test]
    fn fastmod_equals_remainder_for_table_sized_primes(a in 0u64..(1u64 << 63), d in 2u64..=MAX_TABLE_ROWS) {
        let fm = FastMod::new(d).expect("d in range");
        prop_assert_eq!(fm.rem(a), a % d);
        prop_assert_eq!(fm.rem(i64::MAX as u64 - (a % 1024)), (i64::MAX as u64 - (a % 1024)) % d);
    }

    #[test]
    fn any_length_never_panics(len in 0usize..5, salt in any::<u64>()) {
        let h = demo_hasher();
        let mut rng = default_rng(salt);
        let seq: Vec<u32> = (0..len).map(|_| rng.below(99_092) as u32).collect();
        let heads = h.heads_per_layer();
        prop_assert!(h.hash_rows(0, &seq, &mut vec![0; len * heads]).is_ok());
        prop_assert!(h.hash_ids(1, &seq, &mut vec![0; len * heads]).is_ok());
        prop_assert!(h.hash_batch_rows(&seq, 1, len, &mut Vec::new()).is_ok());
        prop_assert!(h.hash_batch_rows(&seq, len, 1, &mut Vec::new()).is_ok());
        prop_assert!(h.hash_rows(0, &seq, &mut vec![0; len * heads + 1]).is_err());
    }

    #[test]
    fn out_of_range_id_is_an_error(
        seq in prop::collection::vec(0u32..99_092, 1..50),
        at in any::<prop::sample::Index>(),
        bad in 99_092u32..,
    ) {
        let h = demo_hasher();
        let mut seq = seq;
        let pos = at.index(seq.len());
        seq[pos] = bad;
        let want = HashError::IdOutOfRange { id: bad, position: pos, vocab_size: 99_092 };
        let heads = h.heads_per_layer();
        prop_assert_eq!(h.hash_rows(0, &seq, &mut vec![0; seq.len() * heads]), Err(want.clone()));
        prop_assert_eq!(h.hash_ids(0, &seq, &mut vec![0; seq.len() * heads]), Err(want.clone()));
        prop_assert_eq!(h.hash_batch_rows(&seq, 1, seq.len(), &mut Vec::new()), Err(want));
    }

    #[test]
    fn below_is_in_range_and_equals_integers(seed in any::<u64>(), n in 1u64..) {
        let (mut a, mut b) = (default_rng(seed), default_rng(seed));
        for _ in 0..4 {
            let x = a.below(n);
            prop_assert!(x < n);
            prop_assert_eq!(Ok(x), b.integers(n));
        }
    }

    #[test]
    fn serialized_pcg64_resumes_bit_exactly(seed in any::<u64>(), warm in 0usize..5) {
        let mut rng = default_rng(seed);
        for _ in 0..warm {
            rng.below(10); // leaves a buffered u32 half the time
        }
        let json = serde_json::to_string(&rng).expect("serialise");
        let mut back: Pcg64 = serde_json::from_str(&json).expect("deserialise");
        prop_assert_eq!(&back, &rng);
        for _ in 0..4 {
            prop_assert_eq!(back.below(10), rng.below(10));
            prop_assert_eq!(back.next_u64(), rng.next_u64());
        }
        let (s, i) = rng.state();
        prop_assert_eq!(Pcg64::from_state(s, i).next_u64(), rng.clone().next_u64());
    }
}

#[test]
fn fastmod_equals_remainder_at_edges() {
    let mut divisors = vec![2u64, 3, 5, 7, 646_403, MAX_TABLE_ROWS, 1 << 32];
    for l in 1..=32u32 {
        let p = 1u64 << l;
        divisors.extend([p - 1, p, p + 1]);
    }
    divisors.retain(|&d| (2..=1 << 32).contains(&d));
    let top = (1u64 << 63) - 1;
    for &d in &divisors {
        let fm = FastMod::new(d).expect("d in range");
        for a in (0..2000).chain(top - 2000..=top).chain([d - 1, d, d + 1, 2 * d - 1, top / d * d, top / d * d - 1]) {
            assert_eq!(fm.rem(a), a % d, "a = {a}, d = {d}");
        }
    }
    assert!(FastMod::new(0).is_none());
    assert!(FastMod::new(1).is_none());
    assert!(FastMod::new((1 << 32) + 1).is_none());
}

#[test]
fn fastmod_equals_remainder_on_a_million_random_pairs() {
    let mut rng = default_rng(2024);
    for _ in 0..1000 {
        let d = match rng.below(3) {
            0 => 2 + rng.below(1 << 20),
            1 => 2 + rng.below(MAX_TABLE_ROWS - 1),
            _ => 2 + rng.below((1 << 32) - 1),
        };
        let fm = FastMod::new(d).expect("d in 2..=2^32");
        for _ in 0..1000 {
            let a = rng.next_u64() >> 1;
            assert_eq!(fm.rem(a), a % d, "a = {a}, d = {d}");
        }
    }
}

#[test]
fn invalid_config_errors_name_the_field() {
    let cases: Vec<(&str, HashConfig)> = vec![
        ("max_ngram_size", HashConfig { max_ngram_size: 1, engram_vocab_size: vec![], ..HashConfig::demo() }),
        ("n_head_per_ngram", HashConfig { n_head_per_ngram: 0, ..HashConfig::demo() }),
        ("engram_vocab_size", HashConfig { engram_vocab_size: vec![646_400], ..HashConfig::demo() }),
        ("engram_vocab_size", HashConfig { engram_vocab_size: vec![0, 5], ..HashConfig::demo() }),
        ("engram_vocab_size", HashConfig { engram_vocab_size: vec![5, MAX_TABLE_ROWS + 1], ..HashConfig::demo() }),
        ("layer_ids", HashConfig { layer_ids: vec![], ..HashConfig::demo() }),
        ("layer_ids", HashConfig { layer_ids: vec![1, 3, 1], ..HashConfig::demo() }),
    ];
    for (field, cfg) in cases {
        match cfg.validate() {
            Err(HashError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected InvalidConfig, got {other:?}"),
        }
        assert!(NgramHasher::new(&cfg, 99_092, 2).is_err());
    }
    assert!(HashConfig::demo().validate().is_ok());
    assert_eq!(HashConfig::demo().heads_per_layer(), 16);
}

#[test]
fn invalid_hasher_arguments_are_errors() {
    let demo = HashConfig::demo();
    assert!(matches!(
        NgramHasher::new(&demo, 0, 0),
        Err(HashError::InvalidConfig { field: "compressed_vocab_size", .. })
    ));
    assert!(matches!(
        NgramHasher::new(&demo, (1 << 32) + 1, 0),
        Err(HashError::InvalidConfig { field: "compressed_vocab_size", .. })
    ));
    assert!(matches!(
        NgramHasher::new(&demo, 99_092, 99_092),
        Err(HashError::InvalidConfig { field: "pad_compressed", .. })
    ));
    let huge = HashConfig { engram_vocab_size: vec![1 << 30, 1 << 30], ..HashConfig::demo() };
    assert!(matches!(NgramHasher::new(&huge, 99_092, 2), Err(HashError::TableTooLarge { .. })));
    let h = demo_hasher();
    assert_eq!(h.hash_rows(2, &[1, 2], &mut [0; 32]), Err(HashError::LayerIndexOutOfRange { index: 2, n_layers: 2 }));
    assert_eq!(
        h.hash_batch_rows(&[1, 2, 3], 2, 2, &mut Vec::new()),
        Err(HashError::BatchShape { got: 3, batch: 2, seq_len: 2 })
    );
}

#[test]
fn largest_vocab_keeps_products_in_int64() {
    // V' = 2^32: half_bound = floor(floor((2^63-1)/2^32)/2) = 2^30 - 1; extreme ids hash fine.
    let h = NgramHasher::new(&HashConfig::demo(), 1 << 32, u32::MAX).expect("valid");
    assert_eq!(h.layers()[0].half_bound, (1 << 30) - 1);
    let seq = [u32::MAX, 0, u32::MAX, u32::MAX];
    for li in 0..2 {
        let mut ids = vec![0u64; seq.len() * 16];
        h.hash_ids(li, &seq, &mut ids).expect("ids in range");
        assert_eq!(ids, reference_ids(&h, li, &seq));
    }
}

#[test]
fn batch_output_buffers_are_reused_without_reallocation() {
    let h = demo_hasher();
    let tokens: Vec<u32> = (0..4 * 300).map(|i| (i * 7919) % 99_092).collect();
    let mut out = Vec::new();
    h.hash_batch_rows(&tokens, 4, 300, &mut out).expect("ids in range");
    let ptrs: Vec<*const u32> = out.iter().map(|v| v.as_ptr()).collect();
    h.hash_batch_rows(&tokens, 4, 300, &mut out).expect("ids in range");
    assert_eq!(ptrs, out.iter().map(|v| v.as_ptr()).collect::<Vec<_>>());
}

#[test]
fn demo_primes_are_prime_and_distinct_across_layers() {
    let h = demo_hasher();
    let all: Vec<u64> = h.layers().iter().flat_map(|l| l.primes.iter().flatten().copied()).collect();
    assert!(all.iter().all(|&p| is_prime(p)));
    let mut sorted = all.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), all.len());
}

#[test]
fn numpy_small_bounds_use_the_buffered_32_bit_path() {
    // integers(0, 10) consumes half a u64: two draws per raw output, low half first.
    let mut raw = default_rng(0);
    let x = raw.next_u64();
    let mut g = default_rng(0);
    assert_eq!(g.below(10), ((x & 0xFFFF_FFFF) * 10) >> 32);
    assert_eq!(g.below(10), ((x >> 32) * 10) >> 32);
    assert_eq!(g.buffered_u32(), None);
    assert_eq!(g.below(1), 0);
    assert_eq!(g.state(), raw.state(), "two 32-bit draws and a below(1) consumed exactly one u64");
}

/// Ids for a hasher of vocabulary `vocab`: mostly in range, some anywhere in `u32`.
fn arb_ids(vocab: u64, max_len: usize) -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec((prop::bool::weighted(0.9), any::<u32>()), 0..max_len)
        .prop_map(move |v| v.into_iter().map(|(ok, x)| if ok { (u64::from(x) % vocab) as u32 } else { x }).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Any config, any ids, any shape: `hash_batch_rows` never panics; it returns rows inside
    /// each head's range, or the error that names the first bad id or the shape mismatch.
    #[test]
    fn batch_rows_of_arbitrary_ids_are_in_range_or_an_error(
        (cfg, vocab, pad, ids) in arb_setup(1).prop_flat_map(|(cfg, vocab, pad, _)| (Just(cfg), Just(vocab), Just(pad), arb_ids(vocab, 120))),
        batch in 0usize..6,
        seq_len in 0usize..40,
        threads in 1usize..4,
    ) {
        let h = NgramHasher::new(&cfg, vocab, pad).expect("valid config");
        let heads = h.heads_per_layer();
        let mut out = Vec::new();
        let n = (batch * seq_len).min(ids.len());
        // The first n ids, hashed as `batch` rows when that shape fits, else the mismatch.
        let tokens = &ids[..n];
        let result = h.hash_batch_rows_threads(tokens, batch, seq_len, &mut out, threads);
        if n != batch * seq_len {
            prop_assert_eq!(result, Err(HashError::BatchShape { got: n, batch, seq_len }));
            return Ok(());
        }
        match tokens.iter().position(|&x| u64::from(x) >= vocab) {
            Some(position) => {
                prop_assert_eq!(result, Err(HashError::IdOutOfRange { id: tokens[position], position, vocab_size: vocab }));
            }
            None => {
                prop_assert!(result.is_ok());
                prop_assert_eq!(out.len(), h.layers().len());
                for (layer, rows) in h.layers().iter().zip(&out) {
                    let primes: Vec<u64> = layer.primes.iter().flatten().copied().collect();
                    prop_assert_eq!(rows.len(), n * heads);
                    for (i, &r) in rows.iter().enumerate() {
                        let (off, p) = (layer.offsets[i % heads], primes[i % heads]);
                        prop_assert!(u64::from(r) >= off && u64::from(r) < off + p);
                        prop_assert!(u64::from(r) < layer.total_rows);
                    }
                }
                let mut single = Vec::new();
                h.hash_batch_rows(tokens, batch, seq_len, &mut single).expect("same input");
                prop_assert_eq!(&single, &out, "thread count changes nothing");
            }
        }
    }
}
