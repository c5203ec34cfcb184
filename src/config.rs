//! What defines a run: [`ExperimentConfig`] (data, model with its Engram placement, training)
//! and its presets, as written to each run's `config.json`.

use serde::{Deserialize, Serialize};

use crate::data::DataConfig;
use crate::engram::EngramConfig;
use crate::model::ModelConfig;
use crate::ConfigError;

/// Optimisation and evaluation settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Sequences per batch.
    pub batch_size: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Peak backbone learning rate.
    pub lr: f64,
    /// Final learning rate as a fraction of `lr` (cosine floor).
    pub min_lr_ratio: f64,
    /// Linear warmup steps.
    pub warmup_steps: usize,
    /// AdamW decoupled weight decay of the backbone.
    pub weight_decay: f32,
    /// AdamW β1.
    pub beta1: f32,
    /// AdamW β2.
    pub beta2: f32,
    /// AdamW ε.
    pub eps: f32,
    /// Evaluate every this many steps (and at the end).
    pub eval_every: usize,
    /// Windows of each periodic evaluation: a fixed, evenly spaced subset of the final
    /// evaluation's windows ([`crate::eval::subset`]). The final evaluation scores every
    /// held-out byte once, whatever this is.
    pub eval_windows: usize,
    /// Stride of the evaluation windows (`null`: `seq_len / 2`): every window after a book's
    /// first scores only its last `stride` targets, so each scored token has at least
    /// `seq_len − stride` tokens of context ([`crate::eval`]).
    #[serde(default)]
    pub eval_stride: Option<usize>,
    /// Seed of the initialisation and the data sampler.
    pub seed: u64,
    /// Write the run's checkpoint every this many steps (0: only at the end), in runs that
    /// write checkpoints ([`RunOptions::checkpoints`]).
    #[serde(default)]
    pub checkpoint_every: usize,
    /// Start from the weights of this finished run instead of the initialisation
    /// (fine-tuning): its backbone, Engram layers and table rows, with a fresh optimiser
    /// state. Its model config (up to where the tables are stored) and its tokenizer must be
    /// this run's; the data may differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<std::path::PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 300,
            batch_size: 16,
            seq_len: 64,
            lr: 3e-3,
            min_lr_ratio: 0.1,
            warmup_steps: 30,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            eval_every: 100,
            eval_windows: 128,
            eval_stride: None,
            seed: 0,
            checkpoint_every: 0,
            init_from: None,
        }
    }
}

impl TrainConfig {
    /// Check every field; the error names the field, its value and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let pos = |name: &str, v: usize| if v == 0 { Err(ConfigError::new(name, v, ">= 1")) } else { Ok(()) };
        pos("train.steps", self.steps)?;
        pos("train.batch_size", self.batch_size)?;
        pos("train.seq_len", self.seq_len)?;
        pos("train.eval_every", self.eval_every)?;
        pos("train.eval_windows", self.eval_windows)?;
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(ConfigError::new("train.lr", self.lr, "a finite number > 0"));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(ConfigError::new("train.min_lr_ratio", self.min_lr_ratio, "0 <= x <= 1"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(ConfigError::new("train.weight_decay", self.weight_decay, "a finite number >= 0"));
        }
        for (name, b) in [("train.beta1", self.beta1), ("train.beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(ConfigError::new(name, b, "0 <= x < 1"));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(ConfigError::new("train.eps", self.eps, "a finite number > 0"));
        }
        if let Some(s) = self.eval_stride {
            if s == 0 || s > self.seq_len {
                return Err(ConfigError::new("train.eval_stride", s, format!("null (seq_len / 2) or 1..=train.seq_len = {}", self.seq_len)));
            }
        }
        if self.checkpoint_every > self.steps {
            let allowed = format!("0 (only at the end) or 1..=train.steps = {}", self.steps);
            return Err(ConfigError::new("train.checkpoint_every", self.checkpoint_every, allowed));
        }
        Ok(())
    }

    /// The evaluation stride: `eval_stride`, or half the window (at least 1).
    pub fn stride(&self) -> usize {
        self.eval_stride.unwrap_or((self.seq_len / 2).max(1))
    }

    /// Learning rate at `step` (0-based): linear warmup to `lr`, cosine decay to
    /// `min_lr_ratio · lr` at the last step.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let floor = self.lr * self.min_lr_ratio;
        floor + 0.5 * (self.lr - floor) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// One run: a name, a model, its training and its data.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Run name (also its directory name in experiments).
    pub name: String,
    /// The model.
    pub model: ModelConfig,
    /// Optimisation.
    pub train: TrainConfig,
    /// Corpus and tokenisation.
    pub data: DataConfig,
}

/// Names of the [`ExperimentConfig::preset`]s.
pub const PRESET_NAMES: [&str; 3] = ["tiny", "small", "bytes"];

impl ExperimentConfig {
    /// Preset `tiny`, a run of seconds on a CPU (tests, smoke runs): D 32, 2 blocks, Engram at
    /// block 0 (2 orders × 4 heads of ~1,024-row tables, d_head 8), the 512-id corpus BPE with
    /// one short held-out book (*Alice*), 40 steps of 4 × 32 tokens, evaluation every 20
    /// steps, a checkpoint every 10.
    pub fn tiny() -> Self {
        const VOCAB: usize = 512;
        const SEQ_LEN: usize = 32;
        let engram = EngramConfig { layer_ids: vec![0], table_size: vec![1_024, 1_024], d_head: 8, ..EngramConfig::default() };
        Self {
            name: "tiny".into(),
            model: ModelConfig::new(VOCAB, 32, 2, 2, SEQ_LEN).with_engram(engram),
            train: TrainConfig {
                steps: 40,
                batch_size: 4,
                seq_len: SEQ_LEN,
                warmup_steps: 4,
                eval_every: 20,
                eval_windows: 8,
                checkpoint_every: 10,
                ..TrainConfig::default()
            },
            data: DataConfig { vocab_size: VOCAB, val_books: vec!["carroll-alice".into()], ..DataConfig::default() },
        }
    }

    /// Preset `small`, minutes on a CPU: the `small` model (D 128, 4 blocks) with Engram at
    /// block 1 (~8,192-row tables), the 4,096-id corpus BPE, 600 steps of 16 × 64 tokens, a
    /// checkpoint every 100 steps.
    pub fn small() -> Self {
        const VOCAB: usize = 4_096;
        const SEQ_LEN: usize = 64;
        let engram = EngramConfig { layer_ids: vec![1], table_size: vec![8_192, 8_192], ..EngramConfig::default() };
        Self {
            name: "small".into(),
            model: ModelConfig::small(VOCAB, SEQ_LEN).with_engram(engram),
            train: TrainConfig {
                steps: 600,
                batch_size: 16,
                seq_len: SEQ_LEN,
                warmup_steps: 40,
                eval_every: 100,
                eval_windows: 256,
                checkpoint_every: 100,
                ..TrainConfig::default()
            },
            data: DataConfig { vocab_size: VOCAB, ..DataConfig::default() },
        }
    }

    /// Preset `bytes`, the byte-level counterpart of `small` (to compare with byte-level
    /// results elsewhere): 256 byte ids, windows of 256 bytes (about the text of `small`'s 64
    /// tokens), Engram at block 1 on byte 2- to 4-grams, 600 steps of 16 × 256 bytes.
    pub fn bytes() -> Self {
        const SEQ_LEN: usize = 256;
        let data = DataConfig::bytes();
        let engram = EngramConfig { layer_ids: vec![1], max_ngram_size: 4, table_size: vec![8_192, 8_192, 8_192], ..EngramConfig::default() };
        Self {
            name: "bytes".into(),
            model: ModelConfig::small(data.vocab_size, SEQ_LEN).with_engram(engram),
            train: TrainConfig {
                steps: 600,
                batch_size: 16,
                seq_len: SEQ_LEN,
                warmup_steps: 40,
                eval_every: 100,
                eval_windows: 64,
                checkpoint_every: 100,
                ..TrainConfig::default()
            },
            data,
        }
    }

    /// The preset called `name` (one of [`PRESET_NAMES`]).
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "tiny" => Some(Self::tiny()),
            "small" => Some(Self::small()),
            "bytes" => Some(Self::bytes()),
            _ => None,
        }
    }

    /// Check every field, and that the model fits the data.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.model.validate()?;
        self.train.validate()?;
        self.data.validate()?;
        if self.model.vocab_size != self.data.vocab_size {
            return Err(ConfigError::new(
                "model.vocab_size",
                self.model.vocab_size,
                format!("equal to data.vocab_size = {}", self.data.vocab_size),
            ));
        }
        if self.train.seq_len > self.model.max_seq_len {
            return Err(ConfigError::new("train.seq_len", self.train.seq_len, format!("<= model.max_seq_len = {}", self.model.max_seq_len)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let tc = TrainConfig { steps: 100, warmup_steps: 10, lr: 1.0, min_lr_ratio: 0.1, ..TrainConfig::default() };
        assert!((tc.lr_at(0) - 0.1).abs() < 1e-12);
        assert!((tc.lr_at(9) - 1.0).abs() < 1e-12);
        assert!((tc.lr_at(10) - 1.0).abs() < 1e-12);
        assert!((tc.lr_at(100) - 0.1).abs() < 1e-12);
        assert!((1..100).all(|s| tc.lr_at(s) <= 1.0 && tc.lr_at(s) >= 0.1));
    }

    #[test]
    fn validation_names_the_field() {
        let tc = TrainConfig { lr: 0.0, ..TrainConfig::default() };
        assert!(tc.validate().unwrap_err().to_string().contains("train.lr"));
        let tc = TrainConfig { batch_size: 0, ..TrainConfig::default() };
        assert!(tc.validate().unwrap_err().to_string().contains("train.batch_size"));
    }
}
