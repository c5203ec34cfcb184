//! Engram in your own burn model.
//!
//! A user-defined model — token embedding, one Engram layer, one MLP, LM head — trained for a
//! few steps on a text with its own loop. It shows the three pieces a model needs:
//!
//! 1. [`NgramHasher`]: row ids of every (token, head), computed on the host once per batch;
//! 2. [`EngramTable`]: the table in host memory; `gather` the rows the batch touches and,
//!    after `backward`, `adam_step` exactly those rows (lazy Adam, 5× the learning rate);
//! 3. [`Engram`]: the burn module (gate + short conv) whose output you add to the residual.
//!
//! ```text
//! cargo run --example custom_model
//! ```

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};

use engram::engram::{Engram, EngramLayerConfig, EngramMemory, TABLE_LR_MULT};
use engram::hashing::{unique_rows, HashConfig, NgramHasher};
use engram::model::cross_entropy;
use engram::table::{EngramTable, TableAdam, UpdateMode};
use engram::tokenizer::{Tokenizer, TokenizerKind};

/// The user's model: nothing here is specific to this crate but the `engram` field.
#[derive(Module, Debug)]
struct MyModel {
    embed: Embedding,
    engram: Engram,
    hidden: Linear,
    head: Linear,
}

impl MyModel {
    fn new(vocab: usize, d: usize, d_mem: usize, max_n: usize, device: &Device) -> Self {
        Self {
            embed: EmbeddingConfig::new(vocab, d).init(device),
            engram: EngramLayerConfig::new(d, d_mem, max_n).init(device),
            hidden: LinearConfig::new(d, d).init(device),
            head: LinearConfig::new(d, vocab).init(device),
        }
    }

    /// tokens `[B, T]`, memory `[B, T, d_mem]` → logits `[B, T, V]`
    fn forward(&self, tokens: Tensor<2, Int>, memory: Tensor<3>) -> Tensor<3> {
        let h = self.embed.forward(tokens); // [B, T, D]
        let [b, t, d] = h.dims();
        let y = self.engram.forward(h.clone().reshape([b, t, 1, d]), memory); // [B, T, 1, D]
        let h = h + y.reshape([b, t, d]);
        let h = h.clone() + relu(self.hidden.forward(h));
        self.head.forward(h)
    }
}

fn main() -> anyhow::Result<()> {
    engram::runtime::tune_allocator();
    let device = Device::flex().autodiff();
    device.seed(0);

    // Byte-level tokens of a short text: 256 ids, no compression needed for the example.
    let text = "the quick brown fox jumps over the lazy dog. ".repeat(40);
    let tokens = Tokenizer::new(TokenizerKind::Bytes)?.encode(&text);
    let (batch, seq) = (4usize, 32usize);

    // One Engram layer at "block 0": orders 2 and 3, 4 heads each, 16-wide rows.
    let hash_cfg = HashConfig { max_ngram_size: 3, n_head_per_ngram: 4, engram_vocab_size: vec![1024, 1024], layer_ids: vec![0], seed: 0, pad_id: 0 };
    let hasher = NgramHasher::new(&hash_cfg, 256, 0)?;
    let heads = hasher.heads_per_layer();
    let d_head = 16;
    let mut table = EngramTable::new(hasher.layers()[0].total_rows as usize, d_head, 1.0, 0);

    let mut model = MyModel::new(256, 64, heads * d_head, 3, &device);
    let mut optim = AdamWConfig::new().init();
    let lr = 3e-3;
    let (mut rows, mut uniq, mut inverse, mut gathered) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for step in 0..30 {
        // A batch of windows (inputs and next-token targets).
        let starts: Vec<usize> = (0..batch).map(|b| (step * 37 + b * 101) % (tokens.len() - seq - 1)).collect();
        let inputs: Vec<u32> = starts.iter().flat_map(|&s| tokens[s..s + seq].to_vec()).collect();
        let targets: Vec<i32> = starts.iter().flat_map(|&s| tokens[s + 1..s + seq + 1].iter().map(|&x| x as i32)).collect();

        // 1. Hash on the host, once per batch; keep the distinct rows and their inverse.
        hasher.hash_batch_rows(&inputs, batch, seq, &mut rows)?;
        unique_rows(&rows[0], &mut uniq, &mut inverse);

        // 2. Gather those rows into an autodiff leaf.
        table.gather(&uniq, &mut gathered)?;
        let memory = EngramMemory::upload(std::mem::take(&mut gathered), d_head, &inverse, batch, seq, heads, &device, true);

        let x = Tensor::<2, Int>::from_data(TensorData::new(inputs.iter().map(|&i| i as i32).collect::<Vec<_>>(), [batch, seq]), &device);
        let y = Tensor::<2, Int>::from_data(TensorData::new(targets, [batch, seq]), &device);
        let loss = cross_entropy(model.forward(x, memory.embeddings()), y);
        let loss_value = loss.clone().into_scalar::<f32>();
        let grads = loss.backward();

        // 3. Sparse update of the touched rows, then the usual optimiser for the rest.
        let row_grads = memory.rows.grad(&grads).expect("rows are a leaf of the loss").into_data().try_into_vec::<f32>()?;
        table.adam_step(&uniq, &row_grads, (lr * TABLE_LR_MULT) as f32, &TableAdam::default(), UpdateMode::Sparse)?;
        let grads = GradientsParams::from_grads(grads, &model);
        model = optim.step(lr, model, grads);
        if step % 10 == 0 || step == 29 {
            println!("step {step:>2}  loss {loss_value:.3}  ({} distinct rows of {})", uniq.len(), table.rows());
        }
    }
    Ok(())
}
