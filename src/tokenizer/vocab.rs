//! A dense remapped model vocabulary for the large pretrained tokenizers (GPT-2,
//! DeepSeek-V3) in small models: the most frequent training ids plus one unknown id. The
//! corpus BPE and the byte tokenizer need none: their whole vocabulary is the model's.

use serde::{Deserialize, Serialize};

use super::compression::Compression;
use super::encoder::Tokenizer;
use super::kind::{TokenizerError, UNK_KEY};

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
