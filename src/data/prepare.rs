//! From books to token streams, with the byte counts that bits per byte needs and the
//! tokenizer compression the hash uses.
//!
//! The corpus is split by book and every book is tokenised on its own, opened by the
//! tokenizer's boundary id ([`Tokenizer::boundary_id`]: `<|endoftext|>` for the corpus BPE),
//! so the first token of a book is predicted from a known context and the tokens of a book
//! decode to exactly its bytes. Training books are concatenated into one stream; held-out
//! books are kept apart ([`BookSpan`]) so that the final evaluation scores each of their
//! bytes exactly once ([`crate::eval`]).
//!
//! The model vocabulary is the tokenizer's own for the corpus BPE (the default) and bytes:
//! no unknown id. For GPT-2 and DeepSeek-V3 (kept for comparisons) it keeps the
//! `vocab_size − 1` most frequent raw ids of the *training* split (plus the boundary and pad
//! ids) and maps everything else to one unknown id ([`Vocab`]). Tokenizer compression P
//! (spec §1) is built over the model vocabulary.

use std::path::PathBuf;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::corpus::{Corpus, CorpusError, DEFAULT_VAL_BOOKS};
use crate::tokenizer::{bpe, Compression, Tokenizer, TokenizerError, TokenizerKind, Vocab, BYTES_VOCAB_SIZE};
use crate::ConfigError;

/// Corpus and tokenisation settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Tokenizer: "bpe" (the corpus BPE, default), "bytes", "gpt2" or "deepseek-v3".
    pub tokenizer: TokenizerKind,
    /// Model vocabulary size. "bpe": the tokenizer's size (the shipped file is
    /// `data/tokenizer/bpe-<vocab_size>.json`); "bytes": 256; "gpt2" / "deepseek-v3": the
    /// most frequent training ids + one unknown id.
    pub vocab_size: usize,
    /// A corpus-BPE file to use instead of the shipped `data/tokenizer/bpe-<vocab_size>.json`
    /// (e.g. one trained on another corpus with `engram tokenizer train`).
    #[serde(default)]
    pub tokenizer_file: Option<PathBuf>,
    /// Books held out for validation (names as in `data/gutenberg/`).
    pub val_books: Vec<String>,
    /// A directory of `.txt`/`.txt.gz` books instead of the shipped corpus.
    #[serde(default)]
    pub corpus_dir: Option<PathBuf>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            tokenizer: TokenizerKind::Bpe,
            vocab_size: bpe::DEFAULT_VOCAB_SIZE,
            tokenizer_file: None,
            val_books: DEFAULT_VAL_BOOKS.iter().map(|s| s.to_string()).collect(),
            corpus_dir: None,
        }
    }
}

impl DataConfig {
    /// The byte-level data: 256 byte ids, no merges, no unknown id.
    pub fn bytes() -> Self {
        Self { tokenizer: TokenizerKind::Bytes, vocab_size: BYTES_VOCAB_SIZE as usize, ..Self::default() }
    }

    /// Data with tokenizer `kind` at `vocab_size` (the byte tokenizer always has 256).
    pub fn for_tokenizer(kind: TokenizerKind, vocab_size: usize) -> Self {
        match kind {
            TokenizerKind::Bytes => Self::bytes(),
            _ => Self { tokenizer: kind, vocab_size, ..Self::default() },
        }
    }

    /// Check every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.tokenizer {
            TokenizerKind::Bpe if self.vocab_size < bpe::MIN_VOCAB_SIZE => {
                return Err(ConfigError::new("data.vocab_size", self.vocab_size, format!(">= {} for the corpus BPE (256 bytes, <|endoftext|>, merges)", bpe::MIN_VOCAB_SIZE)));
            }
            TokenizerKind::Bytes if self.vocab_size != BYTES_VOCAB_SIZE as usize => {
                return Err(ConfigError::new("data.vocab_size", self.vocab_size, "256 for the byte tokenizer"));
            }
            TokenizerKind::Gpt2 | TokenizerKind::DeepSeekV3 if self.vocab_size < 3 => {
                return Err(ConfigError::new("data.vocab_size", self.vocab_size, ">= 3 (the boundary, pad and unknown ids are reserved)"));
            }
            _ => {}
        }
        if self.tokenizer_file.is_some() && self.tokenizer != TokenizerKind::Bpe {
            return Err(ConfigError::new("data.tokenizer_file", format!("{:?}", self.tokenizer_file), format!("null unless data.tokenizer is \"bpe\" (it is {:?})", self.tokenizer.name())));
        }
        if self.tokenizer_file.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Err(ConfigError::new("data.tokenizer_file", "\"\"", "a file path, or null for the shipped tokenizer"));
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

    /// The tokenizer this config names (for "bpe", its file, checked against
    /// `data.vocab_size`).
    pub fn load_tokenizer(&self) -> Result<Tokenizer, TokenizerError> {
        match self.tokenizer {
            TokenizerKind::Bpe => {
                let path = self.tokenizer_file.clone().unwrap_or_else(|| bpe::shipped_file(self.vocab_size));
                Tokenizer::bpe(&path, Some(self.vocab_size))
            }
            kind => Tokenizer::new(kind),
        }
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
    /// A book's tokens do not decode to its bytes (a tokenizer that loses text).
    #[error("book {book:?}: its {tokenizer} tokens decode to {decoded} bytes, the text has {bytes}")]
    Lossy {
        /// The book.
        book: String,
        /// The tokenizer.
        tokenizer: TokenizerKind,
        /// Bytes its tokens decode to.
        decoded: u64,
        /// Bytes of its text.
        bytes: u64,
    },
}

/// Where one book lies in a token stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookSpan {
    /// Book name.
    pub name: String,
    /// Index of its boundary token in the stream.
    pub start: usize,
    /// Its tokens, the boundary token included.
    pub tokens: usize,
    /// Its text bytes (what its tokens after the boundary decode to).
    pub bytes: usize,
}

/// Token streams, byte counts and vocabulary shared by every run of an experiment.
#[derive(Clone, Debug)]
pub struct PreparedData {
    /// The configuration it was made from.
    pub config: DataConfig,
    /// Training stream (model ids): every training book opened by the boundary id.
    pub train: Vec<u32>,
    /// Training books in stream order.
    pub train_books: Vec<BookSpan>,
    /// Validation stream (model ids): every held-out book opened by the boundary id.
    pub val: Vec<u32>,
    /// Bytes of each token of `val` (0 for the boundary tokens).
    pub val_token_bytes: Vec<u32>,
    /// Held-out books in stream order.
    pub val_books: Vec<BookSpan>,
    /// Model vocabulary size.
    pub vocab_size: usize,
    /// Model id ↔ raw tokenizer id for GPT-2 / DeepSeek-V3; `None` when the model's ids are
    /// the tokenizer's (corpus BPE, bytes).
    pub vocab: Option<Vocab>,
    /// Model id → compressed id (tokenizer compression over the model vocabulary).
    pub compression: Vec<u32>,
    /// Number of compressed ids V'.
    pub compressed_vocab_size: u32,
    /// Model id of the tokenizer's pad token (the hash's left padding).
    pub pad_id: u32,
    /// Model id that opens every book.
    pub boundary_id: u32,
    /// sha256 of the tokenizer file (corpus BPE only).
    pub tokenizer_sha256: Option<String>,
    /// Books, bytes and tokens per split, for printing.
    pub summary: String,
    /// Fraction of validation tokens that are the unknown id (0 without a remapped vocabulary).
    pub val_unk_fraction: f64,
}

/// A tokenised book: its raw ids and the bytes of each.
struct Encoded {
    ids: Vec<u32>,
    bytes: Vec<u32>,
}

fn encode_books(tokenizer: &Tokenizer, books: &[&super::corpus::Book]) -> Result<Vec<Encoded>, DataError> {
    books
        .par_iter()
        .map(|book| {
            let ids = tokenizer.encode(&book.text);
            let bytes = ids.iter().map(|&id| tokenizer.decode_bytes(id).map(|b| b.len() as u32)).collect::<Result<Vec<_>, _>>()?;
            let total: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
            if total != book.text.len() as u64 {
                return Err(DataError::Lossy { book: book.name.clone(), tokenizer: tokenizer.kind(), decoded: total, bytes: book.text.len() as u64 });
            }
            Ok(Encoded { ids, bytes })
        })
        .collect()
}

/// Join encoded books into one stream of model ids, each opened by `boundary`; the spans and
/// the per-token bytes (boundary 0).
fn join(books: &[&super::corpus::Book], enc: &[Encoded], boundary: u32, to_model: impl Fn(u32) -> u32) -> (Vec<u32>, Vec<u32>, Vec<BookSpan>) {
    let total: usize = enc.iter().map(|e| e.ids.len() + 1).sum();
    let (mut ids, mut bytes, mut spans) = (Vec::with_capacity(total), Vec::with_capacity(total), Vec::new());
    for (book, e) in books.iter().zip(enc) {
        spans.push(BookSpan { name: book.name.clone(), start: ids.len(), tokens: e.ids.len() + 1, bytes: book.text.len() });
        ids.push(boundary);
        bytes.push(0);
        ids.extend(e.ids.iter().map(|&r| to_model(r)));
        bytes.extend_from_slice(&e.bytes);
    }
    (ids, bytes, spans)
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
        let tokenizer = cfg.load_tokenizer()?;
        let train_enc = encode_books(&tokenizer, &train_books)?;
        let val_enc = encode_books(&tokenizer, &val_books)?;
        let (boundary_raw, pad_raw) = (tokenizer.boundary_id(), tokenizer.pad_id());
        let (vocab, compression) = if cfg.tokenizer.whole_vocab() {
            (None, Compression::build(&tokenizer))
        } else {
            let all_train: Vec<u32> = train_enc.iter().flat_map(|e| e.ids.iter().copied()).collect();
            let vocab = Vocab::from_stream(&all_train, tokenizer.vocab_size(), cfg.vocab_size, &[boundary_raw, pad_raw])?;
            let compression = vocab.compression(&tokenizer)?;
            (Some(vocab), compression)
        };
        let to_model = |raw: u32| vocab.as_ref().map_or(raw, |v| v.to_model(raw));
        let (train, _, train_spans) = join(&train_books, &train_enc, to_model(boundary_raw), to_model);
        let (val, val_token_bytes, val_spans) = join(&val_books, &val_enc, to_model(boundary_raw), to_model);
        let vocab_size = vocab.as_ref().map_or(tokenizer.vocab_size() as usize, Vocab::len);
        let val_unk_fraction = match &vocab {
            Some(v) => val.iter().filter(|&&x| x == v.unk_id()).count() as f64 / val.len().max(1) as f64,
            None => 0.0,
        };
        let val_bytes: usize = val_spans.iter().map(|b| b.bytes).sum();
        let summary = format!(
            "{}; {} tokenizer: {} train / {} val tokens ({:.2} bytes per val token); model vocab {} (V' = {} after compression; {:.2} % of val tokens unknown)",
            corpus.stats(&val_names),
            cfg.tokenizer.name(),
            train.len(),
            val.len(),
            val_bytes as f64 / (val.len() - val_spans.len()).max(1) as f64,
            vocab_size,
            compression.compressed_vocab_size(),
            100.0 * val_unk_fraction
        );
        Ok(Self {
            config: cfg.clone(),
            vocab_size,
            pad_id: to_model(pad_raw),
            boundary_id: to_model(boundary_raw),
            compressed_vocab_size: compression.compressed_vocab_size(),
            compression: compression.lookup().to_vec(),
            tokenizer_sha256: tokenizer.as_bpe().map(|b| b.sha256().to_string()),
            vocab,
            train,
            train_books: train_spans,
            val,
            val_token_bytes,
            val_books: val_spans,
            summary,
            val_unk_fraction,
        })
    }

    /// Bytes of the held-out books (what the final evaluation scores).
    pub fn val_bytes(&self) -> usize {
        self.val_books.iter().map(|b| b.bytes).sum()
    }

    /// The training mix: each training book's name, bytes and share of the training bytes.
    pub fn train_mix(&self) -> Vec<(String, usize, f64)> {
        let total: usize = self.train_books.iter().map(|b| b.bytes).sum();
        self.train_books.iter().map(|b| (b.name.clone(), b.bytes, b.bytes as f64 / total.max(1) as f64)).collect()
    }
}
