//! Which tokenizer ([`TokenizerKind`]), the constants of each, and the errors of the
//! tokenizer module ([`TokenizerError`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// DeepSeek-V3 ids including added tokens (`len(tokenizer)` in HF; the model pads its
/// embedding to 129,280).
pub const DEEPSEEK_V3_VOCAB_SIZE: u32 = 128_815;
/// DeepSeek-V3 `<｜begin▁of▁sentence｜>`; the tokenizer config sets `add_bos_token`.
pub const DEEPSEEK_V3_BOS_ID: u32 = 0;
/// DeepSeek-V3 `<｜▁pad▁｜>`, the demo's `pad_id = 2`.
pub const DEEPSEEK_V3_PAD_ID: u32 = 2;
/// First DeepSeek-V3 added token above the BPE ranks (`<｜place▁holder▁no▁0｜>`).
pub(super) const DEEPSEEK_V3_FIRST_ADDED: u32 = 128_000;
/// Highest DeepSeek-V3 id among the leading sentence markers (BOS 0, EOS 1, PAD 2).
pub(super) const DEEPSEEK_V3_LAST_MARKER: u32 = 2;
/// GPT-2 ids: 50,256 BPE ranks + `<|endoftext|>`.
pub const GPT2_VOCAB_SIZE: u32 = 50_257;
/// GPT-2 `<|endoftext|>`. GPT-2 has no pad token; we pad with end-of-text, the usual choice.
pub const GPT2_EOT_ID: u32 = 50_256;
/// One id per byte value.
pub const BYTES_VOCAB_SIZE: u32 = 256;
/// Byte tokenizer pad: the NUL byte, which never occurs in the shipped text.
pub const BYTES_PAD_ID: u32 = 0;
/// Key of the unknown-token id in a [`Vocab`]'s compression.
pub const UNK_KEY: &str = "<unk>";

/// Errors from tokenizers, compression tables and vocabularies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenizerError {
    /// A token id outside the vocabulary.
    #[error("token id {id} is out of range for the {vocab} vocabulary (allowed 0..{size})")]
    IdOutOfRange {
        /// The offending id.
        id: u32,
        /// Exclusive upper bound.
        size: u32,
        /// Which vocabulary (e.g. "deepseek-v3", "compression", "raw").
        vocab: String,
    },
    /// A raw id in a sequence given to [`Compression::compress`] is out of range.
    #[error("raw token id {id} at position {position} is out of range for the compression table (allowed 0..{size})")]
    CompressIdOutOfRange {
        /// The offending id.
        id: u32,
        /// Its index in the input.
        position: usize,
        /// Exclusive upper bound (the raw vocabulary size).
        size: u32,
    },
    /// An unknown tokenizer name.
    #[error("unknown tokenizer {0:?} (allowed: bpe, deepseek-v3, gpt2, bytes)")]
    UnknownKind(String),
    /// A tokenizer file is missing, unreadable, corrupt or not the one asked for.
    #[error("tokenizer file {}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, and how to fix it.
        reason: String,
    },
    /// The tiktoken build lacks a vocabulary or it has an unexpected size.
    #[error("tokenizer {kind}: {reason}")]
    Unavailable {
        /// The tokenizer.
        kind: TokenizerKind,
        /// What is wrong.
        reason: String,
    },
    /// A vocabulary size parameter outside its allowed range.
    #[error("vocabulary max_size {0} is too small (allowed: >= 2, one id is reserved for <unk>)")]
    VocabTooSmall(usize),
    /// A vocabulary built for one raw vocabulary used with another.
    #[error("vocabulary was built for a raw vocabulary of {expected} ids but the tokenizer has {actual} (allowed: equal sizes)")]
    RawVocabMismatch {
        /// The vocabulary's raw size.
        expected: u32,
        /// The tokenizer's size.
        actual: u32,
    },
    /// A deserialised vocabulary is inconsistent.
    #[error("invalid vocabulary: {0}")]
    InvalidVocab(String),
}

/// Which tokenizer. Serialised and parsed as `"bpe"`, `"deepseek-v3"`, `"gpt2"`, `"bytes"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TokenizerKind {
    /// Byte-level BPE trained on the training books ([`bpe`]), loaded from a file.
    #[serde(rename = "bpe")]
    Bpe,
    /// DeepSeek-V3 (the Engram paper's tokenizer; DeepSeek model licence).
    #[serde(rename = "deepseek-v3")]
    DeepSeekV3,
    /// GPT-2 (`r50k_base`).
    #[serde(rename = "gpt2")]
    Gpt2,
    /// Raw bytes, 256 ids.
    #[serde(rename = "bytes")]
    Bytes,
}

impl TokenizerKind {
    /// Every kind, in a fixed order.
    pub const ALL: [TokenizerKind; 4] = [Self::Bpe, Self::DeepSeekV3, Self::Gpt2, Self::Bytes];

    /// The serialised name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bpe => "bpe",
            Self::DeepSeekV3 => "deepseek-v3",
            Self::Gpt2 => "gpt2",
            Self::Bytes => "bytes",
        }
    }

    /// Whether a small model uses this tokenizer's whole vocabulary as its own (the corpus
    /// BPE and bytes), rather than a remapped [`Vocab`] of its most frequent ids with an
    /// unknown id (GPT-2, DeepSeek-V3).
    pub fn whole_vocab(self) -> bool {
        matches!(self, Self::Bpe | Self::Bytes)
    }
}

impl fmt::Display for TokenizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TokenizerKind {
    type Err = TokenizerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| TokenizerError::UnknownKind(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for k in TokenizerKind::ALL {
            assert_eq!(k.to_string().parse::<TokenizerKind>(), Ok(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
            assert_eq!(serde_json::from_str::<TokenizerKind>(&json).unwrap(), k);
        }
        assert!("deepseek_v3".parse::<TokenizerKind>().is_err());
    }
}
