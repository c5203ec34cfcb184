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
//! Tokenizers (all offline, vocabularies compiled in by the `tiktoken` crate):
//! - [`TokenizerKind::DeepSeekV3`]: the tokenizer of the Engram paper, 128,815 ids
//!   including the 818 added tokens (ids 0..=2 and 128000..=128814). **The DeepSeek
//!   vocabulary is distributed under the DeepSeek model licence**, not the crate's licence.
//! - [`TokenizerKind::Gpt2`]: GPT-2 / `r50k_base`, 50,257 ids.
//! - [`TokenizerKind::Bytes`]: 256 byte ids, no merges.
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

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

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
/// The demo's sentinel that protects a lone space from `Strip` (a private-use char).
const SPACE_SENTINEL: char = '\u{E000}';

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
    #[error("unknown tokenizer {0:?} (allowed: deepseek-v3, gpt2, bytes)")]
    UnknownKind(String),
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

/// Which tokenizer. Serialised and parsed as `"deepseek-v3"`, `"gpt2"`, `"bytes"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TokenizerKind {
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
    pub const ALL: [TokenizerKind; 3] = [Self::DeepSeekV3, Self::Gpt2, Self::Bytes];

    /// The serialised name.
    pub fn name(self) -> &'static str {
        match self {
            Self::DeepSeekV3 => "deepseek-v3",
            Self::Gpt2 => "gpt2",
            Self::Bytes => "bytes",
        }
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

/// The byte-level (GPT-2 alphabet) string of raw token bytes.
pub fn byte_level_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| BYTE_TO_CHAR[b as usize]).collect()
}

/// A tokenizer: encode text to raw ids, decode ids to bytes. Cheap to copy (the
/// vocabularies are process-wide statics).
#[derive(Clone, Copy)]
pub struct Tokenizer {
    kind: TokenizerKind,
    /// `None` for [`TokenizerKind::Bytes`].
    bpe: Option<&'static tiktoken::CoreBpe>,
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
    pub fn new(kind: TokenizerKind) -> Result<Self, TokenizerError> {
        let (name, size) = match kind {
            TokenizerKind::DeepSeekV3 => ("deepseek_v3", DEEPSEEK_V3_VOCAB_SIZE),
            TokenizerKind::Gpt2 => ("r50k_base", GPT2_VOCAB_SIZE),
            TokenizerKind::Bytes => return Ok(Self { kind, bpe: None }),
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
            bpe: Some(bpe),
        })
    }

    /// Which tokenizer this is.
    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// Number of ids, including added/special tokens (DeepSeek-V3 128,815; GPT-2 50,257;
    /// bytes 256).
    pub fn vocab_size(&self) -> u32 {
        match self.kind {
            TokenizerKind::DeepSeekV3 => DEEPSEEK_V3_VOCAB_SIZE,
            TokenizerKind::Gpt2 => GPT2_VOCAB_SIZE,
            TokenizerKind::Bytes => BYTES_VOCAB_SIZE,
        }
    }

    /// Encode ordinary text (special-token strings are encoded as plain text). No BOS is
    /// added; see [`Tokenizer::bos_id`].
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self.bpe {
            Some(bpe) => bpe.encode(text),
            None => text.bytes().map(u32::from).collect(),
        }
    }

    /// Beginning-of-sequence id the reference prepends to every sequence: DeepSeek-V3
    /// `Some(0)`; GPT-2 and bytes `None`.
    pub fn bos_id(&self) -> Option<u32> {
        match self.kind {
            TokenizerKind::DeepSeekV3 => Some(DEEPSEEK_V3_BOS_ID),
            TokenizerKind::Gpt2 | TokenizerKind::Bytes => None,
        }
    }

    /// Padding id, also the hash's left padding before compression: DeepSeek-V3 2 (the
    /// demo's `pad_id`), GPT-2 50256 (`<|endoftext|>`; GPT-2 has no pad token), bytes 0.
    pub fn pad_id(&self) -> u32 {
        match self.kind {
            TokenizerKind::DeepSeekV3 => DEEPSEEK_V3_PAD_ID,
            TokenizerKind::Gpt2 => GPT2_EOT_ID,
            TokenizerKind::Bytes => BYTES_PAD_ID,
        }
    }

    /// Whether `id` is an added/special token (decoded as its literal content).
    pub fn is_special(&self, id: u32) -> bool {
        match self.kind {
            TokenizerKind::DeepSeekV3 => {
                id <= DEEPSEEK_V3_LAST_MARKER
                    || (DEEPSEEK_V3_FIRST_ADDED..DEEPSEEK_V3_VOCAB_SIZE).contains(&id)
            }
            TokenizerKind::Gpt2 => id == GPT2_EOT_ID,
            TokenizerKind::Bytes => false,
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
        Ok(match self.bpe {
            Some(bpe) => bpe.decode(&[id]),
            // check_id bounds id to 0..256
            None => vec![id as u8],
        })
    }

    /// The bytes of a sequence of tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            out.extend_from_slice(&self.decode_bytes(id)?);
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

/// The demo's normalizer: NFKC; NFD; strip combining marks (HF `StripAccents`); per-char
/// lowercase (HF `Lowercase`); `[ \t\r\n]+` → `" "`; a result of exactly `" "` is kept
/// (via the demo's U+E000 sentinel), otherwise leading/trailing whitespace
/// (`char::is_whitespace`, HF `Strip`) is removed; finally U+E000 → `" "`.
/// May return an empty string (the caller then keys by the original text).
pub fn normalize(text: &str) -> String {
    let decomposed: String = text.nfkc().nfd().collect();
    let mut collapsed = String::with_capacity(decomposed.len());
    let mut in_space_run = false;
    for c in decomposed
        .chars()
        .filter(|&c| !is_combining_mark(c))
        .flat_map(char::to_lowercase)
    {
        if matches!(c, ' ' | '\t' | '\r' | '\n') {
            if !in_space_run {
                collapsed.push(' ');
            }
            in_space_run = true;
        } else {
            collapsed.push(c);
            in_space_run = false;
        }
    }
    // `Replace("^ $", SENTINEL)`: after the collapse no '\n' is left, so the
    // line anchors can only match the whole string.
    if collapsed == " " {
        collapsed = SPACE_SENTINEL.to_string();
    }
    collapsed
        .trim_matches(char::is_whitespace)
        .replace(SPACE_SENTINEL, " ")
}

/// The compression key of one raw token (spec §1 steps 1–3).
pub fn compression_key(tokenizer: &Tokenizer, id: u32) -> Result<String, TokenizerError> {
    let bytes = tokenizer.decode_bytes(id)?;
    let text = String::from_utf8_lossy(&bytes);
    if text.contains('\u{FFFD}') {
        return tokenizer.token_string(id);
    }
    let norm = normalize(&text);
    Ok(if norm.is_empty() {
        text.into_owned()
    } else {
        norm
    })
}

/// A key in first-seen assignment: token keys share one namespace (as in the demo);
/// extra keys (e.g. `<unk>`) never merge with a token key.
#[derive(PartialEq, Eq, Hash)]
enum Key {
    Token(String),
    Extra(String),
}

/// The compression table P: raw id → compressed id (spec §1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compression {
    lookup: Vec<u32>,
    compressed_vocab_size: u32,
}

impl Compression {
    fn from_keys(keys: impl IntoIterator<Item = Key>) -> Self {
        let mut seen: HashMap<Key, u32, ahash::RandomState> = HashMap::default();
        let lookup = keys
            .into_iter()
            .map(|key| {
                let next = seen.len() as u32;
                *seen.entry(key).or_insert(next)
            })
            .collect();
        Self {
            lookup,
            compressed_vocab_size: seen.len() as u32,
        }
    }

    /// The compression of a whole tokenizer vocabulary (ids 0..vocab_size), exactly as the
    /// demo builds it. DeepSeek-V3: 128,815 → 98,627.
    pub fn build(tokenizer: &Tokenizer) -> Self {
        Self::from_keys((0..tokenizer.vocab_size()).map(|id| {
            // ids below vocab_size always decode
            Key::Token(compression_key(tokenizer, id).expect("id is below vocab_size"))
        }))
    }

    /// The compression of a remapped model vocabulary: model id `i < raw_ids.len()` stands
    /// for raw token `raw_ids[i]` and is keyed like that token; model id
    /// `raw_ids.len() + j` stands for `extra_keys[j]` (e.g. [`UNK_KEY`]), which gets its
    /// own compressed id (equal extra keys share one). Ids are assigned in first-seen
    /// order over model ids. With `raw_ids = 0..vocab_size` and no extras this equals
    /// [`Compression::build`].
    pub fn build_for_subset(
        tokenizer: &Tokenizer,
        raw_ids: &[u32],
        extra_keys: &[&str],
    ) -> Result<Self, TokenizerError> {
        let token_keys = raw_ids
            .iter()
            .map(|&id| compression_key(tokenizer, id).map(Key::Token))
            .collect::<Result<Vec<_>, _>>()?;
        let extras = extra_keys.iter().map(|k| Key::Extra((*k).to_string()));
        Ok(Self::from_keys(token_keys.into_iter().chain(extras)))
    }

    /// A table from an explicit lookup (`lookup[raw] = compressed`); the compressed size
    /// is `max + 1` (0 for an empty table).
    pub fn from_lookup(lookup: Vec<u32>) -> Self {
        let compressed_vocab_size = lookup.iter().max().map_or(0, |&m| m + 1);
        Self {
            lookup,
            compressed_vocab_size,
        }
    }

    /// The identity on `0..n` (the "no tokenizer compression" ablation).
    pub fn identity(n: u32) -> Self {
        Self {
            lookup: (0..n).collect(),
            compressed_vocab_size: n,
        }
    }

    /// V', the number of compressed ids.
    pub fn compressed_vocab_size(&self) -> u32 {
        self.compressed_vocab_size
    }

    /// V, the number of raw ids the table covers.
    pub fn raw_vocab_size(&self) -> u32 {
        self.lookup.len() as u32
    }

    /// `lookup[raw] = compressed`.
    pub fn lookup(&self) -> &[u32] {
        &self.lookup
    }

    /// Compress one id.
    pub fn compress_id(&self, raw: u32) -> Result<u32, TokenizerError> {
        self.lookup
            .get(raw as usize)
            .copied()
            .ok_or_else(|| TokenizerError::IdOutOfRange {
                id: raw,
                size: self.raw_vocab_size(),
                vocab: "compression table's raw".to_string(),
            })
    }

    /// Clear `out` and fill it with the compressed ids of `raw`. On error (an id outside
    /// the table, named with its position) `out` is left empty.
    pub fn compress(&self, raw: &[u32], out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        out.clear();
        out.reserve(raw.len());
        for (position, &id) in raw.iter().enumerate() {
            match self.lookup.get(id as usize) {
                Some(&c) => out.push(c),
                None => {
                    out.clear();
                    return Err(TokenizerError::CompressIdOutOfRange {
                        id,
                        position,
                        size: self.raw_vocab_size(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// A dense remapped model vocabulary for small models: the most frequent raw ids of a
/// training stream plus one unknown id (the last). Model ids: first the `reserved` raw ids
/// (in the order given), then the others by falling count (ties: smaller raw id first);
/// ids that never occur are not kept. Serialised as `{raw_vocab_size, raw_ids}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "VocabRepr", into = "VocabRepr")]
pub struct Vocab {
    raw_vocab_size: u32,
    /// model id → raw id, for every model id but the unknown id.
    raw_ids: Vec<u32>,
    /// raw id → model id (unknown id for raw ids not kept).
    to_model: Vec<u32>,
}

#[derive(Serialize, Deserialize)]
struct VocabRepr {
    raw_vocab_size: u32,
    raw_ids: Vec<u32>,
}

impl From<Vocab> for VocabRepr {
    fn from(v: Vocab) -> Self {
        Self {
            raw_vocab_size: v.raw_vocab_size,
            raw_ids: v.raw_ids,
        }
    }
}

impl TryFrom<VocabRepr> for Vocab {
    type Error = TokenizerError;

    fn try_from(r: VocabRepr) -> Result<Self, Self::Error> {
        Self::from_raw_ids(r.raw_vocab_size, r.raw_ids)
    }
}

impl Vocab {
    /// A vocabulary from its model-id → raw-id list (the unknown id is appended). Errors if
    /// an id is out of range or repeated.
    pub fn from_raw_ids(raw_vocab_size: u32, raw_ids: Vec<u32>) -> Result<Self, TokenizerError> {
        let unk = raw_ids.len() as u32;
        let mut to_model = vec![unk; raw_vocab_size as usize];
        for (model, &raw) in raw_ids.iter().enumerate() {
            let slot = to_model.get_mut(raw as usize).ok_or_else(|| {
                TokenizerError::InvalidVocab(format!(
                    "raw id {raw} is out of range (allowed 0..{raw_vocab_size})"
                ))
            })?;
            if *slot != unk {
                return Err(TokenizerError::InvalidVocab(format!(
                    "raw id {raw} appears twice"
                )));
            }
            *slot = model as u32;
        }
        Ok(Self {
            raw_vocab_size,
            raw_ids,
            to_model,
        })
    }

    /// Keep the `max_size - 1` most frequent raw ids of `counts` (indexed by raw id; its
    /// length is the raw vocabulary size), `reserved` ids first, plus the unknown id.
    pub fn from_counts(
        counts: &[u64],
        max_size: usize,
        reserved: &[u32],
    ) -> Result<Self, TokenizerError> {
        if max_size < 2 {
            return Err(TokenizerError::VocabTooSmall(max_size));
        }
        let raw_vocab_size = counts.len() as u32;
        let mut raw_ids: Vec<u32> = Vec::new();
        for &r in reserved {
            if r >= raw_vocab_size {
                return Err(TokenizerError::IdOutOfRange {
                    id: r,
                    size: raw_vocab_size,
                    vocab: "raw".to_string(),
                });
            }
            if !raw_ids.contains(&r) {
                raw_ids.push(r);
            }
        }
        if raw_ids.len() > max_size - 1 {
            return Err(TokenizerError::VocabTooSmall(max_size));
        }
        let mut by_count: Vec<u32> = (0..raw_vocab_size)
            .filter(|&r| counts[r as usize] > 0 && !raw_ids.contains(&r))
            .collect();
        by_count.sort_by_key(|&r| (std::cmp::Reverse(counts[r as usize]), r));
        let room = max_size - 1 - raw_ids.len();
        raw_ids.extend(by_count.into_iter().take(room));
        Self::from_raw_ids(raw_vocab_size, raw_ids)
    }

    /// [`Vocab::from_counts`] over the token counts of `stream` (raw ids below
    /// `raw_vocab_size`, else an error naming the id).
    pub fn from_stream(
        stream: &[u32],
        raw_vocab_size: u32,
        max_size: usize,
        reserved: &[u32],
    ) -> Result<Self, TokenizerError> {
        let mut counts = vec![0u64; raw_vocab_size as usize];
        for &id in stream {
            let c = counts
                .get_mut(id as usize)
                .ok_or_else(|| TokenizerError::IdOutOfRange {
                    id,
                    size: raw_vocab_size,
                    vocab: "raw".to_string(),
                })?;
            *c += 1;
        }
        Self::from_counts(&counts, max_size, reserved)
    }

    /// Number of model ids, the unknown id included.
    pub fn len(&self) -> usize {
        self.raw_ids.len() + 1
    }

    /// Always false (the unknown id is always present).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The unknown id (the last model id).
    pub fn unk_id(&self) -> u32 {
        self.raw_ids.len() as u32
    }

    /// Size of the raw vocabulary this was built for.
    pub fn raw_vocab_size(&self) -> u32 {
        self.raw_vocab_size
    }

    /// Model id of a raw id; the unknown id for raw ids not kept (or out of range).
    pub fn to_model(&self, raw: u32) -> u32 {
        self.to_model
            .get(raw as usize)
            .copied()
            .unwrap_or_else(|| self.unk_id())
    }

    /// Raw id of a model id; `None` for the unknown id and out-of-range ids.
    pub fn to_raw(&self, model: u32) -> Option<u32> {
        self.raw_ids.get(model as usize).copied()
    }

    /// Model id → raw id for every model id but the unknown id.
    pub fn raw_ids(&self) -> &[u32] {
        &self.raw_ids
    }

    /// Map a raw stream to model ids.
    pub fn map_to_model(&self, raw: &[u32]) -> Vec<u32> {
        raw.iter().map(|&r| self.to_model(r)).collect()
    }

    /// The compression of this model vocabulary: model id → key of its raw token (§1
    /// rules); the unknown id gets its own key [`UNK_KEY`].
    pub fn compression(&self, tokenizer: &Tokenizer) -> Result<Compression, TokenizerError> {
        if tokenizer.vocab_size() != self.raw_vocab_size {
            return Err(TokenizerError::RawVocabMismatch {
                expected: self.raw_vocab_size,
                actual: tokenizer.vocab_size(),
            });
        }
        Compression::build_for_subset(tokenizer, &self.raw_ids, &[UNK_KEY])
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

    #[test]
    fn normalize_protects_lone_space_and_strips_otherwise() {
        assert_eq!(normalize(" "), " ");
        assert_eq!(normalize("\n\n"), " ");
        assert_eq!(normalize(" \t "), " ");
        assert_eq!(normalize(" Hello\n"), "hello");
        assert_eq!(normalize("a \n b"), "a b");
        assert_eq!(normalize("\u{3000}"), " "); // NFKC: ideographic space → ' '
        assert_eq!(normalize("\u{00A0}x"), "x");
        assert_eq!(normalize("\u{0b}"), ""); // vertical tab: stripped, not collapsed
        assert_eq!(normalize("ﬁ"), "fi");
        assert_eq!(normalize("Σ"), "σ");
    }
}
