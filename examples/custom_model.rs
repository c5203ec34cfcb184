//! Engram in your own burn model.
//!
//! A user-defined model — token embedding, one Engram layer, one MLP, LM head — trained for a
//! few steps on a text with its own loop. The Engram layer is one field, built from its config
//! like any burn layer, and three calls per step:
//!
//! 1. `lookup`: hash the batch's ids on the host, gather the rows they read from the table;
//! 2. `forward`: the gated memory `[B, T, D]` to add to the residual stream;
//! 3. `step`: after `backward`, lazy Adam on exactly those rows (at 5× the learning rate).
//!
//! The usual optimiser steps the layer's parameters with the rest of the model.
//!
//! ```text
//! cargo run --example custom_model
//! ```

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};

use engram::engram::{HashedEngram, HashedEngramConfig, Lookup};

/// The user's model: nothing here is specific to this crate but the `engram` field.
#[derive(Module, Debug)]
struct MyModel {
    embed: Embedding,
    engram: HashedEngram,
    hidden: Linear,
    head: Linear,
}

impl MyModel {
    /// tokens `[B, T]` and their lookup → logits `[B, T, V]`
    fn forward(&self, tokens: Tensor<2, Int>, look: &Lookup) -> Tensor<3> {
        let h = self.embed.forward(tokens); // [B, T, D]
        let h = h.clone() + self.engram.forward(h, look);
        let h = h.clone() + relu(self.hidden.forward(h));
        self.head.forward(h)
    }
}

fn main() -> anyhow::Result<()> {
    let device = Device::flex().autodiff();
    device.seed(0);

    // Byte-level tokens of a short text: 256 ids.
    let text = "the quick brown fox jumps over the lazy dog. ".repeat(40);
    let tokens: Vec<u32> = text.bytes().map(u32::from).collect();
    let (vocab, d, batch, seq) = (256, 64, 4usize, 32usize);

    // One Engram layer: orders 2 and 3, 4 heads each, ~1,024-row tables, 16-wide rows.
    let engram = HashedEngramConfig::new(d, vocab).with_table_size(vec![1_024, 1_024]).init(&device)?;
    let mut model = MyModel {
        embed: EmbeddingConfig::new(vocab, d).init(&device),
        engram,
        hidden: LinearConfig::new(d, d).init(&device),
        head: LinearConfig::new(d, vocab).init(&device),
    };
    let mut optim = AdamWConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let lr = 3e-3;
    for step in 0..30 {
        // A batch of windows (inputs and next-token targets).
        let starts: Vec<usize> = (0..batch).map(|b| (step * 37 + b * 101) % (tokens.len() - seq - 1)).collect();
        let inputs: Vec<u32> = starts.iter().flat_map(|&s| tokens[s..s + seq].to_vec()).collect();
        let targets: Vec<i32> = starts.iter().flat_map(|&s| tokens[s + 1..s + seq + 1].iter().map(|&x| x as i32)).collect();
        let x = Tensor::<2, Int>::from_data(TensorData::new(inputs.iter().map(|&i| i as i32).collect::<Vec<_>>(), [batch, seq]), &device);
        let y = Tensor::<1, Int>::from_data(TensorData::new(targets, [batch * seq]), &device);

        let look = model.engram.lookup(&inputs, [batch, seq], &device)?;
        let logits = model.forward(x, &look).reshape([batch * seq, vocab]);
        let loss = loss_fn.forward(logits, y);
        let loss_value = loss.clone().into_scalar::<f32>();
        let grads = loss.backward();

        model.engram.step(&look, &grads, lr)?; // the table's rows
        let grads = GradientsParams::from_grads(grads, &model);
        model = optim.step(lr, model, grads); // everything else
        if step % 10 == 0 || step == 29 {
            println!("step {step:>2}  loss {loss_value:.3}  ({} distinct rows of {})", look.uniq().len(), model.engram.host().table().rows());
        }
    }
    Ok(())
}
