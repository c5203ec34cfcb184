//! From books to token streams in a small dense model vocabulary, with its compression.
//!
//! The corpus is split by book; both splits are tokenised once; the model vocabulary keeps the
//! `vocab_size − 1` most frequent raw ids of the *training* split (plus the tokenizer's pad id)
//! and maps everything else to one unknown id, so the output layer of a small model stays
//! small. Tokenizer compression P (spec §1) is built over that model vocabulary.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::corpus::{join_books, Corpus, CorpusError, DEFAULT_VAL_BOOKS};
use crate::tokenizer::{Tokenizer, TokenizerError, TokenizerKind, Vocab};
use crate::ConfigError;

/// Corpus and tokenisation settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Tokenizer: "gpt2", "deepseek-v3" or "bytes".
    pub tokenizer: TokenizerKind,
    /// Model vocabulary size (most frequent training ids + one unknown id).
    pub vocab_size: usize,
    /// Books held out for validation (names as in `data/gutenberg/`).
    pub val_books: Vec<String>,
    /// A directory of `.txt`/`.txt.gz` books instead of the shipped corpus.
    #[serde(default)]
    pub corpus_dir: Option<PathBuf>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            tokenizer: TokenizerKind::Gpt2,
            vocab_size: 8192,
            val_books: DEFAULT_VAL_BOOKS.iter().map(|s| s.to_string()).collect(),
            corpus_dir: None,
        }
    }
}

impl DataConfig {
    /// Check every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vocab_size < 2 {
            return Err(ConfigError::new("data.vocab_size", self.vocab_size, ">= 2 (one id is the unknown token)"));
        }
        if self.val_books.is_empty() {
            return Err(ConfigError::new("data.val_books", "[]", "at least one book"));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(bad) = self.val_books.iter().find(|b| b.trim().is_empty() || !seen.insert(b.as_str())) {
            return Err(ConfigError::new("data.val_books", format!("{:?} (entry {bad:?})", self.val_books), "distinct, non-empty book names"));
        }
        if self.corpus_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Err(ConfigError::new("data.corpus_dir", "\"\"", "a directory path, or null for the shipped corpus"));
        }
        Ok(())
    }
}

/// Errors while preparing data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The corpus could not be read.
    #[error(transparent)]
    Corpus(#[from] CorpusError),
    /// Tokenizer or vocabulary failure.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Every book was held out.
    #[error("no training books left after holding out {0:?}")]
    NoTrainingBooks(Vec<String>),
}

/// Token streams and vocabulary shared by every run of an experiment.
#[derive(Clone, Debug)]
pub struct PreparedData {
    /// The configuration it was made from.
    pub config: DataConfig,
    /// Training stream (model ids).
    pub train: Vec<u32>,
    /// Validation stream (model ids).
    pub val: Vec<u32>,
    /// Model vocabulary size.
    pub vocab_size: usize,
    /// Model id ↔ raw tokenizer id.
    pub vocab: Vocab,
    /// Model id → compressed id (tokenizer compression over the model vocabulary).
    pub compression: Vec<u32>,
    /// Number of compressed ids V'.
    pub compressed_vocab_size: u32,
    /// Model id of the tokenizer's pad token (the hash's left padding).
    pub pad_id: u32,
    /// Books and bytes per split, for printing.
    pub summary: String,
    /// Fraction of validation tokens that are the unknown id.
    pub val_unk_fraction: f64,
}

impl PreparedData {
    /// Load, split, tokenise and map the corpus as `cfg` says.
    pub fn prepare(cfg: &DataConfig) -> Result<Self, DataError> {
        cfg.validate()?;
        let corpus = match &cfg.corpus_dir {
            Some(dir) => Corpus::load_dir(dir)?,
            None => Corpus::load_shipped()?,
        };
        let val_names: Vec<&str> = cfg.val_books.iter().map(|s| s.as_str()).collect();
        corpus.check_books(&val_names)?;
        let (train_books, val_books) = corpus.split_by_book(&val_names);
        if train_books.is_empty() {
            return Err(DataError::NoTrainingBooks(cfg.val_books.clone()));
        }
        let tokenizer = Tokenizer::new(cfg.tokenizer)?;
        let train_raw = tokenizer.encode(&join_books(&train_books));
        let val_raw = tokenizer.encode(&join_books(&val_books));
        let pad_raw = tokenizer.pad_id();
        let vocab = Vocab::from_stream(&train_raw, tokenizer.vocab_size(), cfg.vocab_size, &[pad_raw])?;
        let compression = vocab.compression(&tokenizer)?;
        let train = vocab.map_to_model(&train_raw);
        let val = vocab.map_to_model(&val_raw);
        let unk = vocab.unk_id();
        let val_unk_fraction = val.iter().filter(|&&x| x == unk).count() as f64 / val.len().max(1) as f64;
        let summary = format!(
            "{}; {} tokenizer: {} train / {} val tokens; model vocab {} (V' = {} after compression; {:.2} % of val tokens unknown)",
            corpus.stats(&val_names),
            cfg.tokenizer.name(),
            train.len(),
            val.len(),
            vocab.len(),
            compression.compressed_vocab_size(),
            100.0 * val_unk_fraction
        );
        Ok(Self {
            config: cfg.clone(),
            vocab_size: vocab.len(),
            pad_id: vocab.to_model(pad_raw),
            compressed_vocab_size: compression.compressed_vocab_size(),
            compression: compression.lookup().to_vec(),
            vocab,
            train,
            val,
            summary,
            val_unk_fraction,
        })
    }
}
