//! Tokenizers and Engram's tokenizer compression P: V → V'.
//!
//! Implements §1 of the Engram spec: the surjective map from raw token ids to
//! "compressed" ids that merges tokens differing only in case, accents, Unicode
//! compatibility form or surrounding whitespace (paper: Cheng et al., "Conditional
//! Memory via Scalable Lookup", arXiv 2601.07372, §2; reference:
//! `CompressedTokenizer` in deepseek-ai/Engram `engram_demo_v1.py`, which uses Hugging
//! Face `tokenizers` normalizers). The hash (§4) runs on compressed ids, and V' fixes
//! the hash multipliers (§2), so this table must be bit-exact.
//!
//! Tokenizers (all offline):
//! - [`TokenizerKind::Bpe`]: a byte-level BPE trained on the shipped training books with
//!   Hugging Face's `tokenizers` ([`bpe`]; `data/tokenizer/bpe-4096.json`), the experiments'
//!   default: no unknown id, every string encodes and decodes losslessly.
//! - [`TokenizerKind::DeepSeekV3`]: the tokenizer of the Engram paper, 128,815 ids
//!   including the 818 added tokens (ids 0..=2 and 128000..=128814). **The DeepSeek
//!   vocabulary is distributed under the DeepSeek model licence**, not the crate's licence.
//! - [`TokenizerKind::Gpt2`]: GPT-2 / `r50k_base`, 50,257 ids.
//! - [`TokenizerKind::Bytes`]: 256 byte ids, no merges.
//!
//! DeepSeek-V3 and GPT-2 compile their vocabularies in (the `tiktoken` crate); they serve the
//! hash presets and the CLI, and small models use them only through a remapped [`Vocab`]
//! with an unknown id.
//!
//! The key of a token (spec §1, as the demo computes it):
//! 1. `text` = `from_utf8_lossy(decode_bytes(id))` (HF `decode([id], skip_special_tokens=False)`;
//!    special tokens decode to their content).
//! 2. If `text` contains U+FFFD the key is [`Tokenizer::token_string`] (HF
//!    `convert_ids_to_tokens`: the byte-level string in the GPT-2 byte→unicode alphabet).
//! 3. Else the key is [`normalize`]`(text)` — NFKC, NFD, strip combining marks, per-char
//!    lowercase, `[ \t\r\n]+` → `" "`, protect a lone `" "`, strip whitespace — or `text`
//!    itself if that is empty.
//! 4. Compressed ids are assigned to keys in first-seen order over ids 0, 1, 2, …
//!
//! Deviations and notes:
//! - The demo protects a lone space by `Replace("^ $", U+E000)`, `Strip`, then
//!   `Replace(U+E000, " ")`; the last step also turns any literal U+E000 in a token into a
//!   space. [`normalize`] replicates those steps literally, so that quirk is kept.
//! - Unicode tables: normalization and combining marks come from the `unicode-normalization`
//!   crate and lowercase from Rust's `char::to_lowercase`; HF uses
//!   `unicode-normalization-alignments` (older Unicode). Tokens whose characters changed
//!   between Unicode versions could in principle key differently; the DeepSeek-V3 total
//!   V' = 98,627 is matched exactly (tested).
//! - [`Vocab`] (dense remapped vocabulary for small models) and its compression are not
//!   in the reference; the unknown-token id gets its own compressed id.
//! - The corpus BPE is not in the reference; its compression follows the same rules.

pub mod bpe;
mod compression;
mod vocab;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use bpe::CorpusBpe;
pub use compression::{compression_key, normalize, Compression};
pub use vocab::Vocab;

/// DeepSeek-V3 ids including added tokens (`len(tokenizer)` in HF; the model pads its
/// embedding to 129,280).
pub const DEEPSEEK_V3_VOCAB_SIZE: u32 = 128_815;
/// DeepSeek-V3 `<｜begin▁of▁sentence｜>`; the tokenizer config sets `add_bos_token`.
pub const DEEPSEEK_V3_BOS_ID: u32 = 0;
/// DeepSeek-V3 `<｜▁pad▁｜>`, the demo's `pad_id = 2`.
pub const DEEPSEEK_V3_PAD_ID: u32 = 2;
/// First DeepSeek-V3 added token above the BPE ranks (`<｜place▁holder▁no▁0｜>`).
const DEEPSEEK_V3_FIRST_ADDED: u32 = 128_000;
/// Highest DeepSeek-V3 id among the leading sentence markers (BOS 0, EOS 1, PAD 2).
const DEEPSEEK_V3_LAST_MARKER: u32 = 2;
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

/// GPT-2's byte→unicode alphabet: printable Latin-1 bytes map to themselves, the other
/// 68 bytes to U+0100.. in byte order (`bytes_to_unicode` in GPT-2's `encoder.py`).
const BYTE_TO_CHAR: [char; 256] = byte_to_char_table();

const fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    let mut b = 0usize;
    while b < 256 {
        let printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        let code = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        // All codes are below 0x200, hence valid scalar values.
        table[b] = match char::from_u32(code) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    table
}

/// The bytes of a byte-level (GPT-2 alphabet) string; `None` if a character is outside the
/// alphabet.
pub fn bytes_of_byte_level(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| BYTE_TO_CHAR.iter().position(|&x| x == c).map(|b| b as u8)).collect()
}

/// The byte-level (GPT-2 alphabet) string of raw token bytes.
pub fn byte_level_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| BYTE_TO_CHAR[b as usize]).collect()
}

/// A tokenizer: encode text to raw ids, decode ids to bytes. Cheap to clone (the tiktoken
/// vocabularies are process-wide statics, a corpus BPE is shared).
#[derive(Clone)]
pub struct Tokenizer {
    kind: TokenizerKind,
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Tiktoken(&'static tiktoken::CoreBpe),
    Bytes,
    Bpe(Arc<CorpusBpe>),
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl Tokenizer {
    /// Load a tokenizer (the first DeepSeek-V3 load decompresses its vocabulary, ~0.1 s).
    /// [`TokenizerKind::Bpe`] loads the shipped default, `data/tokenizer/bpe-4096.json`
    /// ([`bpe::DEFAULT_VOCAB_SIZE`]); see [`Tokenizer::bpe`] for another file.
    pub fn new(kind: TokenizerKind) -> Result<Self, TokenizerError> {
        let (name, size) = match kind {
            TokenizerKind::DeepSeekV3 => ("deepseek_v3", DEEPSEEK_V3_VOCAB_SIZE),
            TokenizerKind::Gpt2 => ("r50k_base", GPT2_VOCAB_SIZE),
            TokenizerKind::Bytes => return Ok(Self { kind, inner: Inner::Bytes }),
            TokenizerKind::Bpe => return Self::bpe(&bpe::shipped_file(bpe::DEFAULT_VOCAB_SIZE), Some(bpe::DEFAULT_VOCAB_SIZE)),
        };
        let bpe = tiktoken::get_encoding(name).ok_or_else(|| TokenizerError::Unavailable {
            kind,
            reason: format!("the tiktoken build lacks the {name} vocabulary"),
        })?;
        // Every id below `size` must decode and none at `size`: guards against a tiktoken
        // build whose added-token table differs from Hugging Face's.
        if bpe.decode(&[size - 1]).is_empty() || !bpe.decode(&[size]).is_empty() {
            return Err(TokenizerError::Unavailable {
                kind,
                reason: format!("tiktoken's {name} does not have exactly {size} ids"),
            });
        }
        Ok(Self {
            kind,
            inner: Inner::Tiktoken(bpe),
        })
    }

    /// A corpus BPE from its file, checked as [`CorpusBpe::load`] does (and its vocabulary
    /// size against `vocab_size` when given).
    pub fn bpe(path: &std::path::Path, vocab_size: Option<usize>) -> Result<Self, TokenizerError> {
        Ok(Self::from_bpe(CorpusBpe::load(path, vocab_size)?))
    }

    /// Wrap a loaded corpus BPE.
    pub fn from_bpe(bpe: CorpusBpe) -> Self {
        Self {
            kind: TokenizerKind::Bpe,
            inner: Inner::Bpe(Arc::new(bpe)),
        }
    }

    /// The corpus BPE behind this tokenizer, if it is one.
    pub fn as_bpe(&self) -> Option<&CorpusBpe> {
        match &self.inner {
            Inner::Bpe(b) => Some(b),
            _ => None,
        }
    }

    /// Which tokenizer this is.
    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// Number of ids, including added/special tokens (DeepSeek-V3 128,815; GPT-2 50,257;
    /// bytes 256; a corpus BPE its trained size).
    pub fn vocab_size(&self) -> u32 {
        match &self.inner {
            Inner::Bpe(b) => b.vocab_size(),
            _ => match self.kind {
                TokenizerKind::DeepSeekV3 => DEEPSEEK_V3_VOCAB_SIZE,
                TokenizerKind::Gpt2 => GPT2_VOCAB_SIZE,
                TokenizerKind::Bytes | TokenizerKind::Bpe => BYTES_VOCAB_SIZE,
            },
        }
    }

    /// Encode ordinary text (for tiktoken, special-token strings are encoded as plain text).
    /// No BOS is added; see [`Tokenizer::bos_id`].
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match &self.inner {
            Inner::Tiktoken(bpe) => bpe.encode(text),
            Inner::Bytes => text.bytes().map(u32::from).collect(),
            Inner::Bpe(b) => b.encode(text),
        }
    }

    /// Beginning-of-sequence id the reference prepends to every sequence: DeepSeek-V3
    /// `Some(0)`; the others `None`.
    pub fn bos_id(&self) -> Option<u32> {
        match self.kind {
            TokenizerKind::DeepSeekV3 => Some(DEEPSEEK_V3_BOS_ID),
            TokenizerKind::Gpt2 | TokenizerKind::Bytes | TokenizerKind::Bpe => None,
        }
    }

    /// Padding id, also the hash's left padding before compression: DeepSeek-V3 2 (the
    /// demo's `pad_id`), GPT-2 50256 (`<|endoftext|>`; GPT-2 has no pad token), bytes 0, a
    /// corpus BPE its `<|endoftext|>` (0).
    pub fn pad_id(&self) -> u32 {
        match &self.inner {
            Inner::Bpe(b) => b.eot_id(),
            _ => match self.kind {
                TokenizerKind::DeepSeekV3 => DEEPSEEK_V3_PAD_ID,
                TokenizerKind::Gpt2 => GPT2_EOT_ID,
                TokenizerKind::Bytes | TokenizerKind::Bpe => BYTES_PAD_ID,
            },
        }
    }

    /// The id that starts every document (book) in a token stream, so that its first token
    /// is predicted from a known context: DeepSeek-V3 BOS (0), GPT-2 and the corpus BPE
    /// `<|endoftext|>`, bytes NUL (which the shipped text never contains).
    pub fn boundary_id(&self) -> u32 {
        self.bos_id().unwrap_or_else(|| self.pad_id())
    }

    /// Whether `id` is an added/special token (decoded as its literal content).
    pub fn is_special(&self, id: u32) -> bool {
        match &self.inner {
            Inner::Bpe(b) => id == b.eot_id(),
            _ => match self.kind {
                TokenizerKind::DeepSeekV3 => {
                    id <= DEEPSEEK_V3_LAST_MARKER
                        || (DEEPSEEK_V3_FIRST_ADDED..DEEPSEEK_V3_VOCAB_SIZE).contains(&id)
                }
                TokenizerKind::Gpt2 => id == GPT2_EOT_ID,
                TokenizerKind::Bytes | TokenizerKind::Bpe => false,
            },
        }
    }

    fn check_id(&self, id: u32) -> Result<(), TokenizerError> {
        if id < self.vocab_size() {
            Ok(())
        } else {
            Err(TokenizerError::IdOutOfRange {
                id,
                size: self.vocab_size(),
                vocab: self.kind.name().to_string(),
            })
        }
    }

    /// The bytes of one token (special tokens: their content). Like HF
    /// `decode([id], skip_special_tokens=False)` before UTF-8 decoding.
    pub fn decode_bytes(&self, id: u32) -> Result<Vec<u8>, TokenizerError> {
        self.check_id(id)?;
        Ok(match &self.inner {
            Inner::Tiktoken(bpe) => bpe.decode(&[id]),
            // check_id bounds id to 0..256
            Inner::Bytes => vec![id as u8],
            Inner::Bpe(b) => b.token_bytes(id).to_vec(),
        })
    }

    /// The bytes of a sequence of tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            match &self.inner {
                Inner::Bpe(b) if id < b.vocab_size() => out.extend_from_slice(b.token_bytes(id)),
                _ => out.extend_from_slice(&self.decode_bytes(id)?),
            }
        }
        Ok(out)
    }

    /// The raw token string (HF `convert_ids_to_tokens`): the byte-level string of the
    /// token's bytes in the GPT-2 byte→unicode alphabet; for special tokens their content.
    pub fn token_string(&self, id: u32) -> Result<String, TokenizerError> {
        let bytes = self.decode_bytes(id)?;
        Ok(if self.is_special(id) {
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            byte_level_string(&bytes)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_matches_gpt2() {
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_TO_CHAR[0], 'Ā');
        assert_eq!(BYTE_TO_CHAR[b'a' as usize], 'a');
        assert_eq!(BYTE_TO_CHAR[0xAD], 'Ń');
        let distinct: std::collections::HashSet<char> = BYTE_TO_CHAR.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

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
