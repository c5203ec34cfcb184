//! Seeded test inputs: a test's tolerance never depends on the device's global RNG, which
//! the tests running in parallel share (and draw from in an order that changes run to run).

use burn::module::Param;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// Seeded N(0, std²) values (splitmix64 + Box–Muller).
pub(crate) fn normal(n: usize, std: f64, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut uniform = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 + 0.5 / (1u64 << 53) as f64 // (0, 1)
    };
    (0..n).map(|_| std * (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos()).collect()
}

/// An f32 tensor of seeded N(mean, std²) values.
pub(crate) fn seeded<const D: usize>(shape: [usize; D], mean: f64, std: f64, seed: u64, device: &Device) -> Tensor<D> {
    let v = normal(shape.iter().product(), std, seed).into_iter().map(|x| (mean + x) as f32).collect::<Vec<_>>();
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// A parameter of seeded N(mean, std²) values with the shape of `like`.
pub(crate) fn seeded_param<const D: usize>(like: &Param<Tensor<D>>, mean: f64, std: f64, seed: u64) -> Param<Tensor<D>> {
    let t = like.val();
    Param::from_tensor(seeded(t.dims(), mean, std, seed, &t.device()))
}

/// `n` token ids below `vocab`, spread by a multiplicative hash of the position and `salt`.
pub(crate) fn token_ids(n: usize, vocab: u32, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(salt.wrapping_mul(40_503)) >> 9) % vocab).collect()
}

/// An int tensor of `shape` holding `v`.
pub(crate) fn int_tensor(v: &[u32], shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(v.iter().map(|&x| x as i32).collect::<Vec<_>>(), shape), device)
}
