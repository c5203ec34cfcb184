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
mod byte_level;
mod compression;
mod encoder;
mod kind;
mod vocab;

pub use bpe::CorpusBpe;
pub use byte_level::{byte_level_string, bytes_of_byte_level};
pub use compression::{compression_key, normalize, Compression};
pub use encoder::Tokenizer;
pub use kind::*;
pub use vocab::Vocab;
