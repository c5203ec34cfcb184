//! Additive BigramHash at the input embedding: the critics' control for Engram
//! (`../LANDSCAPE`: parameter-golf found it beat gated multi-head hashing at small scale).
//!
//! Every position `t` adds one row of a `[rows, D]` table to its token embedding, the row of
//! the bigram (token `t − 1`, token `t`) under the hash of modded-nanogpt's bigram hash
//! embedding record:
//!
//! ```text
//! row(t) = ((36313 · x_t) XOR (27191 · x_{t−1})) mod (rows − 1)     for t ≥ 1
//! row(0) = rows − 1                                                   (no previous token)
//! ```
//!
//! The table starts at zero (the model starts as its baseline) and trains with the backbone's
//! optimiser. There is no gate, no convolution, no compression and only order 2: what is left
//! of Engram when everything the paper adds to a hashed n-gram embedding is taken away.

use burn::nn::{Embedding, EmbeddingConfig, Initializer};
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Multiplier of the current token.
pub const BIGRAM_MUL_CUR: u32 = 36_313;
/// Multiplier of the previous token.
pub const BIGRAM_MUL_PREV: u32 = 27_191;

/// The BigramHash table of a model ([`crate::model::ModelConfig::bigram_hash`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BigramHashConfig {
    /// Rows of the table (the last one is read at the first position of a sequence).
    pub rows: usize,
}

impl BigramHashConfig {
    /// Check the rows, and that the hash's products of token ids fit the device's 32-bit ints.
    pub fn validate(&self, vocab_size: usize) -> Result<(), ConfigError> {
        if !(2..=i32::MAX as usize).contains(&self.rows) {
            return Err(ConfigError::new("model.bigram_hash.rows", self.rows, ">= 2"));
        }
        let largest = (vocab_size as u64).saturating_sub(1) * u64::from(BIGRAM_MUL_CUR);
        if largest > i32::MAX as u64 {
            return Err(ConfigError::new("model.vocab_size", vocab_size, format!("<= {} with model.bigram_hash (the hash multiplies ids by {BIGRAM_MUL_CUR} in 32 bits)", i32::MAX as u64 / u64::from(BIGRAM_MUL_CUR) + 1)));
        }
        Ok(())
    }

    /// The table `[rows, D]`, zero.
    pub fn init(&self, d_model: usize, device: &Device) -> Embedding {
        EmbeddingConfig::new(self.rows, d_model).with_initializer(Initializer::Zeros).init(device)
    }
}

/// The row of the bigram (`prev`, `cur`) in a table of `rows` rows; `prev = None` at a
/// sequence's first position. The formula on the host, as written in the module docs.
pub fn bigram_row(prev: Option<u32>, cur: u32, rows: usize) -> u32 {
    let last = rows as u32 - 1;
    match prev {
        None => last,
        Some(p) => (cur.wrapping_mul(BIGRAM_MUL_CUR) ^ p.wrapping_mul(BIGRAM_MUL_PREV)) % last,
    }
}

/// The rows of every position of `tokens` (`[B, T]` → `[B, T]`), on the tokens' device.
/// `before` (`[B, 1]`) is the token before each sequence's first one (decoding one token at a
/// time); `None` at the start of the sequences.
pub fn bigram_rows(tokens: Tensor<2, Int>, before: Option<Tensor<2, Int>>, rows: usize) -> Tensor<2, Int> {
    let [b, t] = tokens.dims();
    let device = tokens.device();
    // -1 stands for "no previous token" (ids are never negative).
    let first = before.unwrap_or_else(|| Tensor::full([b, 1], -1, &device));
    let prev = if t > 1 { Tensor::cat(vec![first, tokens.clone().slice([0..b, 0..t - 1])], 1) } else { first };
    let none = prev.clone().lower_elem(0);
    let last = rows as i64 - 1;
    let h = tokens.mul_scalar(BIGRAM_MUL_CUR as i64).bitwise_xor(prev.mul_scalar(BIGRAM_MUL_PREV as i64));
    h.remainder_scalar(last).mask_fill(none, last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{int_tensor, token_ids as ids};

    #[test]
    fn device_rows_follow_the_written_out_hash() {
        let device = Device::flex();
        let (b, t, rows, vocab) = (3, 9, 1_021, 4_096);
        let toks = ids(b * t, vocab, 1);
        let before = ids(b, vocab, 2);
        for with_before in [false, true] {
            let got: Vec<i64> = bigram_rows(int_tensor(&toks, [b, t], &device), with_before.then(|| int_tensor(&before, [b, 1], &device)), rows)
                .into_data()
                .convert::<i64>()
                .try_to_vec()
                .unwrap();
            for s in 0..b {
                for p in 0..t {
                    let prev = if p > 0 { Some(toks[s * t + p - 1]) } else { with_before.then_some(before[s]) };
                    // The formula by hand, in 64 bits.
                    let want = match prev {
                        None => rows as i64 - 1,
                        Some(q) => ((36_313 * toks[s * t + p] as i64) ^ (27_191 * q as i64)) % (rows as i64 - 1),
                    };
                    assert_eq!(got[s * t + p], want, "sequence {s} position {p}");
                    assert_eq!(bigram_row(prev, toks[s * t + p], rows) as i64, want);
                }
            }
        }
    }

}
