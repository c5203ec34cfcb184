//! The small-scale setup the science experiments share ([`ScienceSetup`]).

use super::cli::quick_data;
use crate::config::{ExperimentConfig, TrainConfig};
use crate::data::DataConfig;

/// The small-scale setup shared by the science experiments (`exp_scaling`, `exp_allocation`,
/// `exp_ablation`): one backbone, one data set, one training recipe; only the experiment's
/// variable changes between runs.
///
/// Default: the backbone and data of `exp_engram`'s default (D 64, 2 blocks, 4 heads, the
/// 4,096-id corpus BPE, batches of 16 × 64 tokens), Engram before block 1.
/// `--quick`: D 32, 2 blocks, 2 heads, vocabulary 1,024, 40 steps of 8 × 32 tokens, one
/// held-out book ([`QUICK_VAL_BOOKS`](super::QUICK_VAL_BOOKS)).
#[derive(Clone, Debug)]
pub struct ScienceSetup {
    /// Hidden size.
    pub d_model: usize,
    /// Blocks.
    pub n_layers: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Model vocabulary.
    pub vocab_size: usize,
    /// Tokenizer.
    pub tokenizer: crate::tokenizer::TokenizerKind,
    /// `--quick`: only [`QUICK_VAL_BOOKS`](super::QUICK_VAL_BOOKS) are held out.
    pub quick: bool,
    /// The block that gets Engram in single-block configurations.
    pub engram_block: usize,
    /// Training (seed set per run).
    pub train: TrainConfig,
}

impl ScienceSetup {
    /// The setup for `--quick` or the default mode; `default_steps` is the experiment's step
    /// count in the default mode, `steps` a command-line override (either mode).
    pub fn new(quick: bool, default_steps: usize, steps: Option<usize>) -> Self {
        if quick {
            Self {
                d_model: 32,
                n_layers: 2,
                n_heads: 2,
                vocab_size: 1024,
                tokenizer: crate::tokenizer::TokenizerKind::Bpe,
                quick: true,
                engram_block: 1,
                train: TrainConfig {
                    steps: steps.unwrap_or(40),
                    batch_size: 8,
                    seq_len: 32,
                    warmup_steps: 5,
                    eval_every: 20,
                    eval_windows: 32,
                    ..TrainConfig::default()
                },
            }
        } else {
            let steps = steps.unwrap_or(default_steps);
            Self {
                d_model: 64,
                n_layers: 2,
                n_heads: 4,
                vocab_size: 4096,
                tokenizer: crate::tokenizer::TokenizerKind::Bpe,
                quick: false,
                engram_block: 1,
                train: TrainConfig {
                    steps,
                    batch_size: 16,
                    seq_len: 64,
                    warmup_steps: (steps / 15).max(1),
                    eval_every: (steps / 4).max(1),
                    eval_windows: 256,
                    ..TrainConfig::default()
                },
            }
        }
    }

    /// The same setup with another tokenizer (bytes: vocabulary 256).
    pub fn with_tokenizer(mut self, kind: crate::tokenizer::TokenizerKind) -> Self {
        self.vocab_size = DataConfig::for_tokenizer(kind, self.vocab_size).vocab_size;
        self.tokenizer = kind;
        self
    }

    /// The data settings.
    pub fn data(&self) -> DataConfig {
        quick_data(DataConfig::for_tokenizer(self.tokenizer, self.vocab_size), self.quick)
    }

    /// The dense backbone without Engram.
    pub fn backbone(&self) -> crate::model::ModelConfig {
        crate::model::ModelConfig::new(self.vocab_size, self.d_model, self.n_layers, self.n_heads, self.train.seq_len)
    }

    /// A run of `model` named `name` with this setup's training and data.
    pub fn config(&self, name: &str, model: crate::model::ModelConfig) -> ExperimentConfig {
        ExperimentConfig { name: name.to_string(), model, train: self.train.clone(), data: self.data() }
    }
}
