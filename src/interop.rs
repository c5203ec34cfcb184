//! A trained run outside this crate: safetensors export with the hash constants, a probe of the
//! Engram layers' inputs and outputs for checking another implementation, and import of an
//! exported file back into a run directory ([`import()`], checked tensor by tensor and key by
//! key; see its module).
//!
//! # The exported file (`format` = `engram-rs/1`)
//! Tensors (little-endian, C order):
//! - `backbone.<path>`: every backbone parameter under its burn module path (burn layouts:
//!   a `Linear` weight is `[in, out]`).
//! - `engram.compression_map` I64 `[V]`: model token id → compressed id.
//! - per Engram layer `L` (0-based, in `engram.layer_ids` order), named as the reference demo's
//!   modules under `engram.L.`: `multi_head_embedding.embedding.weight` F32
//!   `[total_rows, d_head]` (the layer's concatenated table, streamed from the store in
//!   chunks, so a file-backed table is never in memory whole), `value_proj.weight` `[D, d_mem]`
//!   and `key_projs.{m}.weight` in PyTorch's `nn.Linear` layout (`[out, in]`) with their
//!   `.bias`, `norm1.{m}.weight` (the keys' RMSNorm), `norm2.{m}.weight` (the hidden state's),
//!   `short_conv.conv.weight` `[M·D, 1, kernel]` (PyTorch depthwise `Conv1d`, left padding
//!   `(kernel − 1)·dilation`), `short_conv.norms.{m}.weight`.
//!
//! Metadata (strings): the run's `config` (JSON), `tokenizer.kind`, `tokenizer.sha256`,
//! `engram.layer_ids`, `engram.max_ngram_size`, `engram.n_head_per_ngram`, `engram.seed`,
//! `engram.pad_id` (model id) and `engram.pad_compressed`, `engram.compressed_vocab_size`,
//! `engram.d_head`, `engram.hc_mult`, `engram.kernel_size`, `engram.dilation`, `engram.gate`,
//! `engram.short_conv`, `engram.norm_eps_gate`, `engram.norm_eps_conv`, and per layer
//! `engram.L.multipliers`, `engram.L.half_bound`, `engram.L.primes`, `engram.L.offsets`,
//! `engram.L.total_rows`: everything needed to compute row ids without this crate.
//!
//! # The probe (`format` = `engram-rs-probe/1`)
//! For one text (one sequence from position 0, at most the model's context): `input_ids` I64
//! `[T]`, and per Engram layer `L`: `rows.L` I64 `[T, heads]` (absolute rows in layer L's
//! table), `hidden_in.L` F32 `[T, M, D]` (the hidden state the layer receives) and
//! `engram_out.L` F32 `[T, M, D]` (its output, before it is added to the residual).
//! `tests/parity/engram_parity.py` checks both files with numpy alone.

mod error;
mod export;
mod format;
mod import;

pub use error::InteropError;
pub use export::{encode_text, export, probe, ExportSummary};
pub use format::FORMAT;
pub use import::{import, ImportSummary};
