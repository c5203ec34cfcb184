//! Engram's tokenizer compression P: V → V' (spec §1): the demo's normalizer, the key of a
//! token, and the first-seen assignment of compressed ids. See the [parent module](super) for
//! the rules and the deviations from the reference.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use super::encoder::Tokenizer;
use super::kind::TokenizerError;

/// The demo's sentinel that protects a lone space from `Strip` (a private-use char).
const SPACE_SENTINEL: char = '\u{E000}';

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

#[cfg(test)]
mod tests {
    use super::*;

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
