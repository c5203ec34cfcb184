//! What a run's training batches use of its Engram tables, replayed from its seed without
//! training: the distinct rows the table updates touch, and the distinct n-grams behind them.

use serde::{Deserialize, Serialize};

use super::error::TrainError;
use super::step::engram_hashing;
use crate::config::ExperimentConfig;
use crate::data::batcher::{Batcher, HostBatch};
use crate::data::PreparedData;
use crate::hashing::default_rng;

/// Table use of a run's training ([`table_use`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TableUse {
    /// Per Engram layer (block order): the distinct rows of its table the training batches
    /// read, which are the rows its optimiser updates.
    pub rows_touched: Vec<u64>,
    /// Per n-gram order 2..=N: the distinct n-grams of compressed ids (the pad standing for
    /// positions before a window's start) in the training windows, before hashing.
    pub distinct_ngrams: Vec<u64>,
    /// Training tokens replayed.
    pub tokens: u64,
}

/// Replay the training batches of `cfg` on `data` (the windows [`super::run`] trains on, drawn
/// from the same generator in the same order) and count what they use of the tables; empty
/// for a model without Engram. Costs the batches' hashing, no training.
pub fn table_use(cfg: &ExperimentConfig, data: &PreparedData) -> Result<TableUse, TrainError> {
    let Some(e) = &cfg.model.engram else { return Ok(TableUse::default()) };
    let hashing = engram_hashing(&cfg.model, data)?.expect("a model with Engram has its hashing");
    let rows = hashing.table_rows();
    let (compress, pad) = (hashing.compress.clone(), hashing.compress[data.pad_id as usize]);
    let tc = &cfg.train;
    let mut batcher = Batcher::new(tc.batch_size, tc.seq_len, Some(hashing));
    let mut rng = default_rng(tc.seed);
    let mut touched: Vec<Vec<u64>> = rows.iter().map(|&r| vec![0u64; r.div_ceil(64)]).collect();
    let orders = e.max_ngram_size - 1;
    let mut ngrams: Vec<std::collections::HashSet<Vec<u32>, ahash::RandomState>> = (0..orders).map(|_| Default::default()).collect();
    let mut batch = HostBatch::default();
    for _ in 0..tc.steps {
        let starts = batcher.sample_starts(data.train.len(), &mut rng);
        batcher.make(&data.train, &starts, &mut batch)?;
        for (bits, layer) in touched.iter_mut().zip(&batch.layers) {
            for &r in &layer.uniq {
                bits[r as usize / 64] |= 1 << (r % 64);
            }
        }
        for seq in batch.inputs.chunks_exact(tc.seq_len) {
            let c: Vec<u32> = seq.iter().map(|&x| compress[x as usize]).collect();
            for p in 0..c.len() {
                for (k, set) in ngrams.iter_mut().enumerate() {
                    let n = k + 2;
                    let gram: Vec<u32> = (0..n).map(|j| if p + j + 1 >= n { c[p + j + 1 - n] } else { pad }).collect();
                    set.insert(gram);
                }
            }
        }
    }
    Ok(TableUse {
        rows_touched: touched.iter().map(|bits| bits.iter().map(|w| u64::from(w.count_ones())).sum()).collect(),
        distinct_ngrams: ngrams.iter().map(|s| s.len() as u64).collect(),
        tokens: (tc.steps * tc.batch_size * tc.seq_len) as u64,
    })
}
