//! [`Tokenizer`]: one type over the tiktoken vocabularies, raw bytes and the corpus BPE.

use std::fmt;
use std::sync::Arc;

use super::bpe::{self, CorpusBpe};
use super::byte_level::byte_level_string;
use super::kind::*;

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
