//! Tests of [`super::HashedEngram`]: the one-object path against the low-level pieces.

use super::*;
use crate::hashing::HashConfig;
use burn::module::Param;
use burn::tensor::{Distribution, Int, TensorData};

fn bits(x: Tensor<3>) -> Vec<u32> {
    x.into_data().try_to_vec::<f32>().expect("f32").iter().map(|v| v.to_bits()).collect()
}

fn ids_for(n: usize, vocab: u32, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(salt.wrapping_mul(40_503)) >> 7) % vocab).collect()
}

fn small_config() -> HashedEngramConfig {
    HashedEngramConfig::new(16, 40).with_table_size(vec![97, 89]).with_d_head(4).with_n_head_per_ngram(2).with_table_seed(3)
}

/// A compression that merges ids in pairs, with the pad (id 1) mapped to compressed id 0.
fn pairs(vocab: u32) -> Compression {
    Compression::from_lookup((0..vocab).map(|i| i / 2).collect())
}

#[test]
fn lookup_forward_step_equal_the_hand_written_path_bit_for_bit() {
    // The path `examples/custom_model.rs` used to spell out: the hasher, unique rows, the
    // gather, the upload, the 4-D forward and the table's Adam step, from the same config,
    // against the object, over three steps with different ids.
    let device = Device::flex().autodiff();
    let cfg = small_config().with_pad_id(1);
    let compression = pairs(40);
    let engram = cfg.init_with_compression(&compression, &device).unwrap();
    let mut conv = engram.layer.clone();
    conv.conv_weight = Param::from_tensor(Tensor::random([16, 4], Distribution::Normal(0.0, 0.5), &device));
    let engram = HashedEngram { layer: conv, host: engram.host.clone() };
    let layer = engram.layer.clone();

    let hash_cfg = HashConfig { max_ngram_size: 3, n_head_per_ngram: 2, engram_vocab_size: vec![97, 89], layer_ids: vec![0], seed: 0, pad_id: 1 };
    let hasher = NgramHasher::new(&hash_cfg, u64::from(compression.compressed_vocab_size()), compression.lookup()[1]).unwrap();
    let heads = hasher.heads_per_layer();
    let mut table = EngramTable::new(hasher.layers()[0].total_rows as usize, 4, DEFAULT_TABLE_INIT_STD, 3);
    assert_eq!(table.weights(), engram.host().table().weights(), "same initial table");

    let (b, t) = (3, 11);
    let (mut rows, mut uniq, mut inverse, mut gathered) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for step in 0..3u32 {
        let ids = ids_for(b * t, 40, step);
        let hidden = Tensor::<3>::random([b, t, 16], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let r = Tensor::<3>::random([b, t, 16], Distribution::Normal(0.0, 1.0), &device);
        let lr = 1e-2 * f64::from(step + 1);

        let look = engram.lookup(&ids, [b, t], &device).unwrap();
        let y = engram.forward(hidden.clone(), &look);
        let grads = (y.clone() * r.clone()).sum().backward();
        let ours = (bits(y), bits(hidden.grad(&grads).unwrap()), look.row_grads(&grads).unwrap());
        engram.step(&look, &grads, lr).unwrap();

        let compressed: Vec<u32> = ids.iter().map(|&i| compression.lookup()[i as usize]).collect();
        hasher.hash_batch_rows(&compressed, b, t, &mut rows).unwrap();
        unique_rows(&rows[0], &mut uniq, &mut inverse);
        assert_eq!(look.rows(), &rows[0][..]);
        assert_eq!(look.uniq(), &uniq[..]);
        table.gather(&uniq, &mut gathered).unwrap();
        let memory = EngramMemory::upload(std::mem::take(&mut gathered), 4, &inverse, b, t, heads, &device, true);
        let y = layer.forward(hidden.clone().reshape([b, t, 1, 16]), memory.embeddings()).reshape([b, t, 16]);
        let grads = (y.clone() * r).sum().backward();
        let row_grads = memory.rows.grad(&grads).unwrap().into_data().try_into_vec::<f32>().unwrap();
        let theirs = (bits(y), bits(hidden.grad(&grads).unwrap()), row_grads.clone());
        table.adam_step(&uniq, &row_grads, (lr * TABLE_LR_MULT) as f32, &TableAdam::default(), UpdateMode::Sparse).unwrap();

        assert_eq!(ours.0, theirs.0, "step {step}: output");
        assert_eq!(ours.1, theirs.1, "step {step}: gradient of the hidden states");
        let to_bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(to_bits(&ours.2), to_bits(&theirs.2), "step {step}: gradient of the rows");
        let host = engram.host();
        assert_eq!(to_bits(&host.table().weights()), to_bits(&table.weights()), "step {step}: table");
        assert_eq!(host.table().moments(), table.moments(), "step {step}: moments");
        assert_eq!(host.table().step(), table.step());
    }
}

#[test]
fn changing_a_future_token_changes_no_earlier_row_or_output() {
    let device = Device::flex();
    let mut engram = small_config().init(&device).unwrap();
    engram.layer.conv_weight = Param::from_tensor(Tensor::random([16, 4], Distribution::Normal(0.0, 1.0), &device));
    let (b, t, p) = (2, 16, 9);
    let heads = engram.host().heads();
    let ids = ids_for(b * t, 40, 5);
    let mut changed = ids.clone();
    changed[t + p] = (changed[t + p] + 1) % 40; // sequence 1, position p
    let hidden = Tensor::<3>::random([b, t, 16], Distribution::Normal(0.0, 1.0), &device);
    let (l1, l2) = (engram.lookup(&ids, [b, t], &device).unwrap(), engram.lookup(&changed, [b, t], &device).unwrap());
    let seq1 = |l: &Lookup| l.rows()[t * heads..2 * t * heads].to_vec();
    assert_eq!(l1.rows()[..t * heads], l2.rows()[..t * heads], "the other sequence keeps its rows");
    assert_eq!(seq1(&l1)[..p * heads], seq1(&l2)[..p * heads], "earlier positions keep their rows");
    assert_ne!(seq1(&l1)[p * heads..(p + 1) * heads], seq1(&l2)[p * heads..(p + 1) * heads]);
    let (y1, y2) = (engram.forward(hidden.clone(), &l1), engram.forward(hidden, &l2));
    let part = |y: &Tensor<3>, r: std::ops::Range<usize>| bits(y.clone().slice([1..2, r, 0..16]));
    assert_eq!(part(&y1, 0..p), part(&y2, 0..p), "earlier outputs are unchanged");
    assert_ne!(part(&y1, p..p + 1), part(&y2, p..p + 1), "the changed position's output changes");
    assert_eq!(bits(y1.slice([0..1, 0..t, 0..16])), bits(y2.slice([0..1, 0..t, 0..16])));
}

#[test]
fn bad_input_is_a_typed_error() {
    let device = Device::flex().autodiff();
    let engram = small_config().init(&device).unwrap();
    let mut ids = ids_for(8, 40, 1);
    assert_eq!(engram.lookup(&ids, [3, 3], &device).unwrap_err(), EngramError::BatchShape { got: 8, batch: 3, seq_len: 3 });
    let msg = engram.lookup(&ids, [3, 3], &device).unwrap_err().to_string();
    assert!(msg.contains("8 values") && msg.contains("= 9"), "{msg}");
    ids[5] = 40;
    assert_eq!(engram.lookup(&ids, [2, 4], &device).unwrap_err(), EngramError::IdOutOfVocab { id: 40, position: 5, vocab_size: 40 });

    // A lookup without autodiff has no gradient to step on; nothing changes.
    ids[5] = 0;
    let plain = Device::flex();
    let look = engram.lookup(&ids, [2, 4], &plain).unwrap();
    let loss = engram.forward(Tensor::<3>::ones([2, 4, 16], &device).require_grad(), &engram.lookup(&ids, [2, 4], &device).unwrap()).sum();
    let grads = loss.backward();
    assert_eq!(engram.step(&look, &grads, 1e-2).unwrap_err(), EngramError::NoGradient);
    assert_eq!(engram.host().table().step(), 0);

    let err = small_config().with_table_size(vec![97]).init(&device).unwrap_err();
    assert!(matches!(&err, EngramError::Config(c) if c.field == "engram.table_size"), "{err}");
    let err = small_config().with_pad_id(40).init(&device).unwrap_err();
    assert!(matches!(&err, EngramError::Config(c) if c.field == "engram.pad_id"), "{err}");
    let err = small_config().init_with_compression(&pairs(30), &device).unwrap_err();
    assert!(matches!(&err, EngramError::Config(c) if c.field == "engram.compression"), "{err}");
}

#[test]
fn a_model_holding_the_layer_trains_and_its_valid_copy_reads_the_live_table() {
    use burn::nn::{Embedding, EmbeddingConfig};
    use burn::optim::{AdamWConfig, GradientsParams};

    #[derive(Module, Debug)]
    struct Tiny {
        embed: Embedding,
        engram: HashedEngram,
    }

    let device = Device::flex().autodiff();
    let mut model = Tiny { embed: EmbeddingConfig::new(40, 16).init(&device), engram: small_config().init(&device).unwrap() };
    let mut optim = AdamWConfig::new().init();
    let (b, t) = (2, 6);
    let ids = ids_for(b * t, 40, 2);
    let x = Tensor::<2, Int>::from_data(TensorData::new(ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), [b, t]), &device);
    let look = model.engram.lookup(&ids, [b, t], &device).unwrap();
    let h = model.embed.forward(x);
    let grads = (h.clone() + model.engram.forward(h, &look)).square().sum().backward();
    let value_before = model.engram.layer.value.weight.val().into_data();
    model.engram.step(&look, &grads, 1e-2).unwrap();
    let grads = GradientsParams::from_grads(grads, &model);
    model = optim.step(1e-2, model, grads);
    assert_ne!(model.engram.layer.value.weight.val().into_data(), value_before, "the backbone optimiser steps the layer's parameters");

    // The evaluation copy shares the table: its lookup reads the updated rows.
    let valid = model.valid();
    let eval_look = valid.engram.lookup(&ids, [b, t], &device.clone().without_autodiff()).unwrap();
    let mut want = Vec::new();
    model.engram.host().table().gather(eval_look.uniq(), &mut want).unwrap();
    let got = eval_look.memory().rows.clone().into_data().try_into_vec::<f32>().unwrap();
    assert_eq!(got, want);
    assert_eq!(valid.engram.host().table().step(), 1);
}

#[test]
fn blocked_step_then_gather_equals_step_then_gather() {
    // Both update modes: the blocks (run on two threads, last first) against step_rows
    // followed by gather on a copy of the same table.
    for update in [UpdateMode::Sparse, UpdateMode::Dense] {
        let cfg = small_config().with_update(update);
        let engram = cfg.init(&Device::flex()).unwrap();
        let mut host = engram.host_mut();
        let mut plain = EngramHost::new(host.hasher.clone(), 0, host.compress.clone(), host.table().clone_resident(), *host.optim()).unwrap();
        for step in 0..3u32 {
            let this = host.hash(&ids_for(24, 40, step), [2, 12]).unwrap();
            let grads: Vec<f32> = (0..this.uniq.len() * 4).map(|i| ((i as f32) * 0.37 + step as f32).sin()).collect();
            let mut next = host.hash(&ids_for(24, 40, step + 10), [2, 12]).unwrap();
            let mut want = next.clone();
            let lr = 1e-2 * f64::from(step + 1);
            let mut blocks = host.step_then_gather(&this.uniq, &grads, lr, &mut next, 3).unwrap();
            assert_eq!(blocks.is_empty(), update == UpdateMode::Dense || this.uniq.is_empty());
            if let Some(last) = blocks.pop() {
                last.run();
            }
            let (a, b): (Vec<_>, Vec<_>) = blocks.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
            std::thread::scope(|s| {
                for half in [a, b] {
                    s.spawn(move || half.into_iter().for_each(|(_, block)| block.run()));
                }
            });
            plain.step_rows(&this.uniq, &grads, lr).unwrap();
            plain.gather(&mut want).unwrap();
            assert_eq!((next.d_head, &next.values), (want.d_head, &want.values), "{update:?} step {step}: next batch's rows");
            assert_eq!(host.table().weights(), plain.table().weights(), "{update:?} step {step}: table");
            assert_eq!(host.table().moments(), plain.table().moments());
            assert_eq!(host.table().step(), plain.table().step());
        }
    }
}

#[test]
fn default_table_init_is_the_crates_training_default() {
    let engram = HashedEngramConfig::new(8, 16).with_table_size(vec![4_001, 4_001]).init(&Device::flex()).unwrap();
    let host = engram.host();
    let w = host.table().weights();
    let std = (w.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
    assert!((std - f64::from(DEFAULT_TABLE_INIT_STD)).abs() < 1e-3, "table std {std}");
}
