//! The corpus tokenizer: a byte-level BPE trained on the training books with Hugging Face's
//! `tokenizers` crate, shipped as `data/tokenizer/bpe-<V>.json` with its sha256 in
//! `data/tokenizer/SHA256SUMS`, and loaded at run time.
//!
//! Byte-level: text is split by GPT-2's pre-tokenizer regex, each piece is written in the
//! GPT-2 byte→unicode alphabet, and merges are learnt on those strings. The initial alphabet
//! is all 256 bytes, so every string encodes (the byte-level form of byte fallback) and
//! decodes back to its exact bytes: there is no unknown id ([`CorpusBpe::load`] checks that
//! all 256 byte tokens are present). Id 0 is `<|endoftext|>`, the document boundary and the
//! hash's pad. No normaliser, no added prefix space.
//!
//! Reproduce the shipped file (`engram tokenizer train` prints its sha256):
//!
//! ```text
//! cargo run --bin engram -- tokenizer train --vocab-size 4096 --out data/tokenizer/bpe-4096.json
//! ```
//!
//! Not in the reference (which uses the DeepSeek-V3 tokenizer); its compression P follows the
//! same rules as DeepSeek-V3's ([`super::Compression::build`]).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, TokenizerBuilder};

use super::byte_level::bytes_of_byte_level;
use super::kind::{TokenizerError, TokenizerKind};

/// The document boundary and pad token, id 0.
pub const EOT: &str = "<|endoftext|>";
/// The experiments' vocabulary size. At d_model 64–128 the LM head (2·D·V FLOPs per token)
/// already costs more than the blocks at V = 4,096 (see `README.md`, "Tokenizer"); a larger V
/// would make the small models mostly head, a smaller one shortens the context in bytes (the
/// shipped 4,096-id BPE averages 3.27 bytes per held-out token, the 1,024-id one 2.52, the
/// 512-id one 2.04).
pub const DEFAULT_VOCAB_SIZE: usize = 4_096;
/// Directory of the shipped tokenizers, relative to the crate root.
pub const SHIPPED_DIR: &str = "data/tokenizer";
/// The list of shipped files and their sha256 (`sha256sum` format).
pub const SHA256SUMS: &str = "SHA256SUMS";
/// Smallest vocabulary: the 256 bytes, `<|endoftext|>` and at least one merge.
pub const MIN_VOCAB_SIZE: usize = 258;

/// The shipped file of vocabulary size `vocab_size` (`<crate>/data/tokenizer/bpe-<V>.json`),
/// whether or not it exists.
pub fn shipped_file(vocab_size: usize) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(SHIPPED_DIR).join(format!("bpe-{vocab_size}.json"))
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A loaded corpus BPE: the `tokenizers` tokenizer, every token's bytes, and where it came
/// from.
pub struct CorpusBpe {
    tok: tokenizers::Tokenizer,
    token_bytes: Vec<Vec<u8>>,
    path: PathBuf,
    sha256: String,
}

impl std::fmt::Debug for CorpusBpe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorpusBpe").field("path", &self.path).field("vocab_size", &self.vocab_size()).field("sha256", &self.sha256).finish()
    }
}

fn file_err(path: &Path, reason: impl Into<String>) -> TokenizerError {
    TokenizerError::File { path: path.to_path_buf(), reason: reason.into() }
}

impl CorpusBpe {
    /// Load and check a tokenizer file: it must parse, be a byte-level BPE with `<|endoftext|>`
    /// at id 0 and every one of the 256 byte tokens, have `vocab_size` ids when given, and,
    /// when a `SHA256SUMS` beside it lists the file, have that sha256. Every failure names
    /// the file and says how to get a good one.
    pub fn load(path: &Path, vocab_size: Option<usize>) -> Result<Self, TokenizerError> {
        let retrain = |v: usize| format!("restore it from git or rebuild it with `cargo run --bin engram -- tokenizer train --vocab-size {v} --out {}`", path.display());
        let v_hint = vocab_size.unwrap_or(DEFAULT_VOCAB_SIZE);
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => file_err(path, format!("does not exist; {}", retrain(v_hint))),
            _ => file_err(path, format!("cannot be read: {e}")),
        })?;
        let sha256 = sha256_hex(&bytes);
        if let Some(expected) = listed_sha256(path)? {
            if expected != sha256 {
                return Err(file_err(path, format!("sha256 is {sha256} but {} lists {expected}: the file is corrupt or was changed; {}", sums_path(path).display(), retrain(v_hint))));
            }
        }
        let tok = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| file_err(path, format!("is not a tokenizer JSON file ({e}); {}", retrain(v_hint))))?;
        let n = tok.get_vocab_size(true);
        if let Some(v) = vocab_size {
            if n != v {
                return Err(file_err(path, format!("has {n} ids but the config asks for data.vocab_size = {v}; point data.tokenizer_file at a {v}-id tokenizer or {}", retrain(v))));
            }
        }
        if tok.token_to_id(EOT) != Some(0) {
            return Err(file_err(path, format!("does not have {EOT} at id 0 (not a tokenizer made by `engram tokenizer train`)")));
        }
        let mut token_bytes = Vec::with_capacity(n);
        for id in 0..n as u32 {
            let s = tok.id_to_token(id).ok_or_else(|| file_err(path, format!("has no token for id {id} below its size {n}")))?;
            let b = if id == 0 { EOT.as_bytes().to_vec() } else { bytes_of_byte_level(&s).ok_or_else(|| file_err(path, format!("token {id} ({s:?}) is not a byte-level string")))? };
            token_bytes.push(b);
        }
        let singles: std::collections::HashSet<u8> = token_bytes.iter().skip(1).filter(|b| b.len() == 1).map(|b| b[0]).collect();
        if singles.len() != 256 {
            return Err(file_err(path, format!("has only {} of the 256 single-byte tokens, so some text would have no encoding", singles.len())));
        }
        Ok(Self { tok, token_bytes, path: path.to_path_buf(), sha256 })
    }

    /// Number of ids (including `<|endoftext|>`).
    pub fn vocab_size(&self) -> u32 {
        self.token_bytes.len() as u32
    }

    /// The `<|endoftext|>` id (0).
    pub fn eot_id(&self) -> u32 {
        0
    }

    /// The bytes of token `id` (`<|endoftext|>`: its literal text).
    ///
    /// # Panics
    /// If `id` is not below [`CorpusBpe::vocab_size`].
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        &self.token_bytes[id as usize]
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hex sha256 of that file.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Encode text (a literal `<|endoftext|>` in it becomes id 0, which decodes to the same
    /// bytes).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        // Encoding cannot fail for this model: every byte has a token.
        self.tok.encode_fast(text, false).expect("a byte-level BPE with all 256 bytes encodes any text").get_ids().to_vec()
    }
}

fn sums_path(file: &Path) -> PathBuf {
    file.with_file_name(SHA256SUMS)
}

/// The sha256 that the `SHA256SUMS` beside `file` lists for it, if that list exists and
/// names it.
fn listed_sha256(file: &Path) -> Result<Option<String>, TokenizerError> {
    let sums = sums_path(file);
    let text = match std::fs::read_to_string(&sums) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_err(&sums, format!("cannot be read: {e}"))),
    };
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    Ok(text.lines().filter_map(|l| l.split_once("  ")).find(|(_, f)| *f == name).map(|(h, _)| h.trim().to_string()))
}

/// Train a byte-level BPE of `vocab_size` ids on `texts` (each one document, e.g. a book) and
/// return its JSON. Deterministic: the same texts and size give the same bytes.
pub fn train(texts: &[&str], vocab_size: usize) -> Result<String, TokenizerError> {
    let fail = |e: tokenizers::Error| TokenizerError::Unavailable { kind: TokenizerKind::Bpe, reason: format!("training failed: {e}") };
    if vocab_size < MIN_VOCAB_SIZE {
        return Err(TokenizerError::Unavailable { kind: TokenizerKind::Bpe, reason: format!("vocab size {vocab_size} is below {MIN_VOCAB_SIZE} (256 bytes, {EOT} and one merge)") });
    }
    let mut trainer = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(vocab_size)
        .min_frequency(2)
        .special_tokens(vec![AddedToken::from(EOT, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let byte_level = ByteLevel::new(false, true, true);
    let mut tok = TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_normalizer(None::<tokenizers::NormalizerWrapper>)
        .with_pre_tokenizer(Some(byte_level))
        .with_post_processor(None::<tokenizers::PostProcessorWrapper>)
        .with_decoder(Some(byte_level))
        .build()
        .map_err(fail)?;
    tok.train(&mut trainer, texts.iter()).map_err(fail)?;
    tok.to_string(true).map_err(fail)
}
