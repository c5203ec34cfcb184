//! Training checkpoints: everything a run needs to continue bit-exactly after an interruption.
//!
//! A run directory keeps its latest good checkpoint in one file, `checkpoint/state.ckpt`. A new
//! checkpoint is written to `state.ckpt.tmp`, fsynced, renamed over the previous one, and the
//! directory is fsynced ([`crate::run_dir::write_atomic_with`]): a crash at any moment leaves
//! the old or the new checkpoint, never a partial one, and a failed write (a full disk)
//! removes its temporary file.
//!
//! # What it holds
//! The backbone parameters (burn module record), the AdamW state (burn optimizer record), every
//! Engram table's weights, Adam moments and step, the data sampler's RNG (with its buffered
//! half-word), the step, the metrics rows so far, the running loss accumulators, the resolved
//! config with its hash, and a fingerprint of the prepared data. Resuming refuses a checkpoint
//! whose config or data differ from the run's.
//!
//! # Format (version [`FORMAT_VERSION`]; integers little-endian)
//! ```text
//! file    = magic "ENGRAMCK" (8 bytes) | version u32 | section*
//! section = tag [u8; 4] | len u64 | payload [len bytes] | crc32 u32 (of tag, len and payload)
//! ```
//! Sections, in this order:
//! * `META`: JSON — step, config (compact JSON) and its FNV-1a 64 hash, data fingerprint,
//!   sampler RNG, loss accumulators, metrics rows, step times, number of tables. Floats that
//!   must survive bit-exactly (and may be NaN) are stored as their IEEE bit patterns.
//! * `MODL`: the backbone's burnpack module record ([`Module::into_record`]).
//! * `OPTM`: the AdamW state's burnpack record ([`ModuleOptimizer::to_record`]).
//! * `TABL`, one per Engram table in block order: rows u64, dim u64, step u64, record layout
//!   code u64 ([`crate::table::RowLayout::code`]), store u64 (0 resident, 1 file-backed), then
//!   for a resident table every row's record (`rows` records of the layout, little-endian
//!   words), for a file-backed one the slots in use u64 and the journal epoch u64 — the rows
//!   themselves stay in the table file, which the journal returns to this state on resume
//!   (`crate::table` and its `slab` module).
//! * `END ` (empty).
//!
//! A wrong magic or version, a checksum mismatch, a section out of order, a length past the end
//! of the file, a missing `END ` or bytes after it are reported as a corrupt or truncated
//! checkpoint.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use crate::data::PreparedData;
use crate::hashing::Pcg64;
use crate::model::Transformer;
use crate::table::EngramTable;
use crate::config::ExperimentConfig;
use crate::metrics::MetricRow;
use crate::run_dir::{io_err, IoError};

/// Directory of the checkpoint inside a run directory.
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// File name of the checkpoint inside [`CHECKPOINT_DIR`].
pub const CHECKPOINT_FILE: &str = "state.ckpt";
/// Version of the file format written and read by this build.
pub const FORMAT_VERSION: u32 = 3;
/// First bytes of every checkpoint file.
const MAGIC: &[u8; 8] = b"ENGRAMCK";
/// Section tags, in file order.
const TAG_META: &[u8; 4] = b"META";
const TAG_MODEL: &[u8; 4] = b"MODL";
const TAG_OPTIM: &[u8; 4] = b"OPTM";
const TAG_TABLE: &[u8; 4] = b"TABL";
const TAG_END: &[u8; 4] = b"END ";
/// Header of a table section: rows, dim, step, layout, store (u64 each).
const TABLE_HEADER_BYTES: u64 = 40;
/// Bytes written per call when streaming a table to disk.
const WRITE_CHUNK_BYTES: usize = 1 << 20;
/// FNV-1a 64 offset basis and prime.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// At most this many differing config fields are named in an error.
const MAX_FIELDS_NAMED: usize = 6;

/// Errors of reading, writing or applying a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The run directory has no checkpoint.
    #[error("no checkpoint at {}", path.display())]
    Missing {
        /// The expected checkpoint file.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A file-backed table could not be written to its file before the checkpoint.
    #[error(transparent)]
    Table(#[from] crate::table::TableError),
    /// The atomic write of the checkpoint failed (its temporary file is removed).
    #[error(transparent)]
    Write(#[from] crate::run_dir::RunDirError),
    /// The file is not a complete, intact checkpoint.
    #[error("checkpoint {} is corrupt or truncated: {reason}", path.display())]
    Corrupt {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file was written by a build with another format version.
    #[error("checkpoint {} has format version {found}; this build reads version {FORMAT_VERSION}", path.display())]
    Version {
        /// The checkpoint file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
    },
    /// The checkpoint was written for another configuration.
    #[error("the checkpoint was written with a different config: {differences}; restore the config the run started with, or start a new run")]
    ConfigMismatch {
        /// The differing fields, e.g. `train.lr (checkpoint 0.003, now 0.01)`.
        differences: String,
    },
    /// The checkpoint was written for other training data.
    #[error("the checkpoint was written for different data (fingerprint {checkpoint:016x}, now {current:016x}): the corpus or its tokenisation changed")]
    DataMismatch {
        /// Fingerprint stored in the checkpoint.
        checkpoint: u64,
        /// Fingerprint of the data now.
        current: u64,
    },
    /// The checkpoint's state does not fit the model built from the config.
    #[error("checkpoint {} does not fit the model: {reason}", path.display())]
    Incompatible {
        /// The checkpoint file.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
}

/// The training loop's state besides tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// Optimiser steps done.
    pub step: usize,
    /// The data sampler's generator.
    pub rng: Pcg64,
    /// Sum of the training losses since the last metrics row.
    pub loss_sum: f64,
    /// Number of losses in `loss_sum`.
    pub loss_n: usize,
    /// Mean training loss of the last metrics row (NaN before the first).
    pub last_train_loss: f32,
    /// Seconds spent in training steps (evaluation excluded).
    pub train_seconds: f64,
    /// Seconds since the start of training (the `elapsed_seconds` column).
    pub elapsed_seconds: f64,
    /// Seconds of every step so far.
    pub step_times: Vec<f64>,
    /// The metrics rows so far.
    pub rows: Vec<MetricRow>,
}

impl Progress {
    /// The state before the first step.
    pub fn start(rng: Pcg64) -> Self {
        Self {
            step: 0,
            rng,
            loss_sum: 0.0,
            loss_n: 0,
            last_train_loss: f32::NAN,
            train_seconds: 0.0,
            elapsed_seconds: 0.0,
            step_times: Vec::new(),
            rows: Vec::new(),
        }
    }
}

/// One Engram table's optimiser state as a checkpoint holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct TableState {
    /// Rows.
    pub rows: usize,
    /// Row width.
    pub dim: usize,
    /// Optimiser steps taken.
    pub step: u64,
    /// [`crate::table::RowLayout::code`] of its records.
    pub layout: u32,
    /// The rows, or where they are.
    pub saved: SavedTable,
}

/// What a checkpoint holds of a table's rows.
#[derive(Clone, Debug, PartialEq)]
pub enum SavedTable {
    /// Every record of a resident table (little-endian words).
    Resident(Vec<u8>),
    /// A file-backed table's slots in use and journal epoch; the rows are in its file.
    File {
        /// Rows touched (slots in use).
        slots: u64,
        /// Journal epoch.
        epoch: u64,
    },
}

/// What identifies a checkpoint: its step and the config it was written with.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    /// The file.
    pub path: PathBuf,
    /// Steps done.
    pub step: usize,
    /// The config (compact JSON).
    pub config_json: String,
    /// FNV-1a 64 of `config_json`.
    pub config_hash: u64,
}

/// A checkpoint read back from disk (checksums verified).
#[derive(Debug)]
pub struct Checkpoint {
    /// Step, config and file.
    pub header: Header,
    /// Loop state.
    pub progress: Progress,
    /// [`data_fingerprint`] of the data it was trained on.
    pub data_fingerprint: u64,
    /// Burnpack bytes of the module record.
    pub model: Vec<u8>,
    /// Burnpack bytes of the optimizer record.
    pub optimizer: Vec<u8>,
    /// Engram tables in block order.
    pub tables: Vec<TableState>,
}

/// A metrics row with its floats as bit patterns (NaN survives, values are exact).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RowBits {
    step: usize,
    tokens: u64,
    train_loss: u32,
    val_loss: u32,
    val_bpb: u32,
    lr: u64,
    elapsed_seconds: u64,
}

impl From<&MetricRow> for RowBits {
    fn from(r: &MetricRow) -> Self {
        Self {
            step: r.step,
            tokens: r.tokens,
            train_loss: r.train_loss.to_bits(),
            val_loss: r.val_loss.to_bits(),
            val_bpb: r.val_bpb.to_bits(),
            lr: r.lr.to_bits(),
            elapsed_seconds: r.elapsed_seconds.to_bits(),
        }
    }
}

impl From<&RowBits> for MetricRow {
    fn from(r: &RowBits) -> Self {
        Self {
            step: r.step,
            tokens: r.tokens,
            train_loss: f32::from_bits(r.train_loss),
            val_loss: f32::from_bits(r.val_loss),
            val_bpb: f32::from_bits(r.val_bpb),
            lr: f64::from_bits(r.lr),
            elapsed_seconds: f64::from_bits(r.elapsed_seconds),
        }
    }
}

/// The `META` section.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    step: usize,
    config_hash: String,
    config: String,
    data_fingerprint: String,
    rng: Pcg64,
    loss_sum: u64,
    loss_n: usize,
    last_train_loss: u32,
    train_seconds: u64,
    elapsed_seconds: u64,
    step_times: Vec<f64>,
    rows: Vec<RowBits>,
    tables: usize,
}

/// `run_dir/checkpoint/state.ckpt`.
pub fn checkpoint_path(run_dir: &Path) -> PathBuf {
    run_dir.join(CHECKPOINT_DIR).join(CHECKPOINT_FILE)
}

/// FNV-1a 64 of `bytes`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// The compact JSON of a config and its FNV-1a 64 hash: what a checkpoint is tied to.
pub fn config_fingerprint(cfg: &ExperimentConfig) -> (String, u64) {
    let json = serde_json::to_string(cfg).expect("an ExperimentConfig always serialises (plain data, string keys)");
    let hash = fnv1a(json.as_bytes());
    (json, hash)
}

/// A 64-bit fingerprint of the prepared data: both token streams, the vocabulary size, the
/// compression table and the pad id (FNV-1a over 32-bit words).
pub fn data_fingerprint(data: &PreparedData) -> u64 {
    let word = |h: u64, w: u32| (h ^ u64::from(w)).wrapping_mul(FNV_PRIME);
    let mut h = FNV_OFFSET;
    for part in [&data.train[..], &data.val[..], &data.compression[..]] {
        h = word(h, part.len() as u32);
        h = part.iter().fold(h, |h, &w| word(h, w));
    }
    h = word(h, data.vocab_size as u32);
    word(h, data.pad_id)
}

/// A section being written: counts its bytes and accumulates its checksum.
struct SectionWriter<'w, W: Write> {
    out: &'w mut W,
    crc: crc32fast::Hasher,
    left: u64,
}

impl<'w, W: Write> SectionWriter<'w, W> {
    fn begin(out: &'w mut W, tag: &[u8; 4], len: u64) -> std::io::Result<Self> {
        let mut crc = crc32fast::Hasher::new();
        crc.update(tag);
        crc.update(&len.to_le_bytes());
        out.write_all(tag)?;
        out.write_all(&len.to_le_bytes())?;
        Ok(Self { out, crc, left: len })
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.left = self.left.checked_sub(bytes.len() as u64).expect("section payload longer than its declared length");
        self.crc.update(bytes);
        self.out.write_all(bytes)
    }

    fn finish(self) -> std::io::Result<()> {
        assert_eq!(self.left, 0, "section payload shorter than its declared length");
        self.out.write_all(&self.crc.finalize().to_le_bytes())
    }
}

fn write_section<W: Write>(out: &mut W, tag: &[u8; 4], payload: &[u8]) -> std::io::Result<()> {
    let mut s = SectionWriter::begin(out, tag, payload.len() as u64)?;
    s.put(payload)?;
    s.finish()
}

/// Write the checkpoint of a run at `progress.step` into `run_dir/checkpoint/`, atomically
/// ([`crate::run_dir::write_atomic_with`]: temporary file, fsync, rename, fsync of the
/// directory). The previous checkpoint stays in place until the new one is complete; a failed
/// write removes its temporary file.
#[allow(clippy::too_many_arguments)]
pub fn write(
    run_dir: &Path,
    cfg: &ExperimentConfig,
    data_fingerprint: u64,
    progress: &Progress,
    model: &Transformer,
    optim: &ModuleOptimizer,
    tables: &[&EngramTable],
) -> Result<PathBuf, CheckpointError> {
    let (config, config_hash) = config_fingerprint(cfg);
    let meta = Meta {
        step: progress.step,
        config_hash: format!("{config_hash:016x}"),
        config,
        data_fingerprint: format!("{data_fingerprint:016x}"),
        rng: progress.rng.clone(),
        loss_sum: progress.loss_sum.to_bits(),
        loss_n: progress.loss_n,
        last_train_loss: progress.last_train_loss.to_bits(),
        train_seconds: progress.train_seconds.to_bits(),
        elapsed_seconds: progress.elapsed_seconds.to_bits(),
        step_times: progress.step_times.clone(),
        rows: progress.rows.iter().map(RowBits::from).collect(),
        tables: tables.len(),
    };
    let meta = serde_json::to_vec(&meta).expect("checkpoint metadata always serialises (plain data, string keys)");
    let path = checkpoint_path(run_dir);
    let record_err = |what: &str, e: burn::store::RecordError| -> CheckpointError {
        IoError { action: "serialise the state for", path: path.clone(), source: std::io::Error::other(format!("{what}: {e}")) }.into()
    };
    let model_bytes = model.clone().into_record().into_bytes().map_err(|e| record_err("model", e))?;
    let optim_bytes = optim.to_record().into_bytes().map_err(|e| record_err("optimizer", e))?;

    // File-backed tables write their modified pages to their files first.
    let files: Vec<Option<(u64, u64)>> = tables.iter().map(|t| t.file_checkpoint()).collect::<Result<_, _>>()?;
    let dir = run_dir.join(CHECKPOINT_DIR);
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    crate::run_dir::write_atomic_with(&path, |out| {
        out.write_all(MAGIC)?;
        out.write_all(&FORMAT_VERSION.to_le_bytes())?;
        write_section(out, TAG_META, &meta)?;
        write_section(out, TAG_MODEL, &model_bytes)?;
        write_section(out, TAG_OPTIM, &optim_bytes)?;
        for (t, file) in tables.iter().zip(&files) {
            let head = [t.rows() as u64, t.dim() as u64, t.step(), u64::from(t.layout().code()), u64::from(file.is_some())];
            // A file-backed table's slots and epoch, or a resident table's records.
            let file_tail: Vec<u8>;
            let tail: &[u8] = match file {
                Some((slots, epoch)) => {
                    file_tail = [slots, epoch].iter().flat_map(|x| x.to_le_bytes()).collect();
                    &file_tail
                }
                None => t.resident_records().expect("a table without a file is resident"),
            };
            let mut s = SectionWriter::begin(out, TAG_TABLE, TABLE_HEADER_BYTES + tail.len() as u64)?;
            for x in head {
                s.put(&x.to_le_bytes())?;
            }
            for chunk in tail.chunks(WRITE_CHUNK_BYTES) {
                s.put(chunk)?;
            }
            s.finish()?;
        }
        write_section(out, TAG_END, &[])
    })?;
    Ok(path)
}

/// Reads sections one by one, verifying lengths and checksums.
struct SectionReader {
    path: PathBuf,
    input: BufReader<File>,
    left: u64,
}

impl SectionReader {
    fn open(run_dir: &Path) -> Result<Self, CheckpointError> {
        let path = checkpoint_path(run_dir);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
                return Err(CheckpointError::Missing { path })
            }
            Err(e) => return Err(io_err("open", &path)(e).into()),
        };
        let len = file.metadata().map_err(io_err("read", &path))?.len();
        let mut r = Self { input: BufReader::new(file), left: len, path };
        let mut head = [0u8; 12];
        r.read_exact(&mut head, "the header")?;
        if &head[..8] != MAGIC {
            return Err(r.corrupt("not a checkpoint file (wrong magic bytes)".into()));
        }
        let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        if version != FORMAT_VERSION {
            return Err(CheckpointError::Version { path: r.path, found: version });
        }
        Ok(r)
    }

    fn corrupt(&self, reason: String) -> CheckpointError {
        CheckpointError::Corrupt { path: self.path.clone(), reason }
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), CheckpointError> {
        if (buf.len() as u64) > self.left {
            return Err(self.corrupt(format!("the file ends inside {what}")));
        }
        self.input.read_exact(buf).map_err(io_err("read", &self.path))?;
        self.left -= buf.len() as u64;
        Ok(())
    }

    /// The next section, which must carry `tag`.
    fn next(&mut self, tag: &[u8; 4]) -> Result<Vec<u8>, CheckpointError> {
        let name = String::from_utf8_lossy(tag).into_owned();
        let mut head = [0u8; 12];
        self.read_exact(&mut head, &format!("the header of section {name:?}"))?;
        if &head[..4] != tag {
            return Err(self.corrupt(format!("expected section {name:?}, found {:?}", String::from_utf8_lossy(&head[..4]))));
        }
        let len = u64::from_le_bytes(head[4..12].try_into().expect("8 bytes"));
        if len.saturating_add(4) > self.left {
            return Err(self.corrupt(format!("section {name:?} declares {len} bytes but the file ends after {}", self.left.saturating_sub(4))));
        }
        let mut payload = vec![0u8; len as usize];
        self.read_exact(&mut payload, &format!("section {name:?}"))?;
        let mut crc = [0u8; 4];
        self.read_exact(&mut crc, &format!("the checksum of section {name:?}"))?;
        let mut h = crc32fast::Hasher::new();
        h.update(&head);
        h.update(&payload);
        if h.finalize() != u32::from_le_bytes(crc) {
            return Err(self.corrupt(format!("checksum mismatch in section {name:?}")));
        }
        Ok(payload)
    }

    fn meta(&mut self) -> Result<(Meta, Header), CheckpointError> {
        let bytes = self.next(TAG_META)?;
        let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| self.corrupt(format!("section \"META\": {e}")))?;
        let config_hash = parse_hex(self, "config_hash", &meta.config_hash)?;
        if fnv1a(meta.config.as_bytes()) != config_hash {
            return Err(self.corrupt("META.config does not match META.config_hash".into()));
        }
        let header = Header { path: self.path.clone(), step: meta.step, config_json: meta.config.clone(), config_hash };
        Ok((meta, header))
    }
}

fn parse_hex(reader: &SectionReader, field: &str, s: &str) -> Result<u64, CheckpointError> {
    u64::from_str_radix(s, 16).map_err(|_| reader.corrupt(format!("META.{field} = {s:?} is not a hexadecimal u64")))
}

/// The step and config of the checkpoint in `run_dir`, reading only the start of the file (the
/// rest is verified by [`read`]).
pub fn peek(run_dir: &Path) -> Result<Header, CheckpointError> {
    Ok(SectionReader::open(run_dir)?.meta()?.1)
}

/// Read and verify the checkpoint in `run_dir`.
pub fn read(run_dir: &Path) -> Result<Checkpoint, CheckpointError> {
    let mut r = SectionReader::open(run_dir)?;
    let (meta, header) = r.meta()?;
    let data_fingerprint = parse_hex(&r, "data_fingerprint", &meta.data_fingerprint)?;
    let model = r.next(TAG_MODEL)?;
    let optimizer = r.next(TAG_OPTIM)?;
    let mut tables = Vec::with_capacity(meta.tables);
    for i in 0..meta.tables {
        let payload = r.next(TAG_TABLE)?;
        let word = |k: usize| payload.get(8 * k..8 * k + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        let (Some(rows), Some(dim), Some(step), Some(layout), Some(store)) = (word(0), word(1), word(2), word(3), word(4)) else {
            return Err(r.corrupt(format!("table {i}: section shorter than its header")));
        };
        let saved = match store {
            0 => SavedTable::Resident(payload[TABLE_HEADER_BYTES as usize..].to_vec()),
            1 => match (word(5), word(6), payload.len() as u64 == TABLE_HEADER_BYTES + 16) {
                (Some(slots), Some(epoch), true) => SavedTable::File { slots, epoch },
                _ => return Err(r.corrupt(format!("table {i}: a file-backed table's section must hold slots and epoch"))),
            },
            other => return Err(r.corrupt(format!("table {i}: unknown store {other}"))),
        };
        let layout = u32::try_from(layout).map_err(|_| r.corrupt(format!("table {i}: layout code {layout}")))?;
        tables.push(TableState { rows: rows as usize, dim: dim as usize, step, layout, saved });
    }
    r.next(TAG_END)?;
    if r.left != 0 {
        return Err(r.corrupt(format!("{} unexpected bytes after the end", r.left)));
    }
    let progress = Progress {
        step: meta.step,
        rng: meta.rng,
        loss_sum: f64::from_bits(meta.loss_sum),
        loss_n: meta.loss_n,
        last_train_loss: f32::from_bits(meta.last_train_loss),
        train_seconds: f64::from_bits(meta.train_seconds),
        elapsed_seconds: f64::from_bits(meta.elapsed_seconds),
        step_times: meta.step_times,
        rows: meta.rows.iter().map(MetricRow::from).collect(),
    };
    Ok(Checkpoint { header, progress, data_fingerprint, model, optimizer, tables })
}

/// Leaves of two JSON values that differ, as `path (checkpoint A, now B)`.
fn json_differences(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                match (x.get(k), y.get(k)) {
                    (Some(a), Some(b)) => json_differences(&join(k), a, b, out),
                    (None, Some(b)) => out.push(format!("{} (absent in the checkpoint, now {b})", join(k))),
                    (Some(a), None) => out.push(format!("{} (checkpoint {a}, absent now)", join(k))),
                    (None, None) => {}
                }
            }
        }
        _ if a != b => out.push(format!("{} (checkpoint {a}, now {b})", if path.is_empty() { "config" } else { path })),
        _ => {}
    }
}

impl Header {
    /// Check that the checkpoint was written with `cfg`; the error names the differing fields.
    pub fn check_config(&self, cfg: &ExperimentConfig) -> Result<(), CheckpointError> {
        let (json, hash) = config_fingerprint(cfg);
        if hash == self.config_hash && json == self.config_json {
            return Ok(());
        }
        let mut diffs = Vec::new();
        match (serde_json::from_str(&self.config_json), serde_json::from_str(&json)) {
            (Ok(a), Ok(b)) => json_differences("", &a, &b, &mut diffs),
            _ => diffs.push("config (unreadable)".into()),
        }
        if diffs.is_empty() {
            diffs.push("a number differs in its last digits".into());
        }
        let more = diffs.len().saturating_sub(MAX_FIELDS_NAMED);
        diffs.truncate(MAX_FIELDS_NAMED);
        let mut differences = diffs.join(", ");
        if more > 0 {
            differences.push_str(&format!(" and {more} more"));
        }
        Err(CheckpointError::ConfigMismatch { differences })
    }
}

impl Checkpoint {
    /// Check that the checkpoint was written with `cfg`; the error names the differing fields.
    pub fn check_config(&self, cfg: &ExperimentConfig) -> Result<(), CheckpointError> {
        self.header.check_config(cfg)
    }

    /// Check that the checkpoint was trained on `data`.
    pub fn check_data(&self, data: &PreparedData) -> Result<(), CheckpointError> {
        let current = data_fingerprint(data);
        if current == self.data_fingerprint {
            Ok(())
        } else {
            Err(CheckpointError::DataMismatch { checkpoint: self.data_fingerprint, current })
        }
    }

    fn incompatible(&self, reason: String) -> CheckpointError {
        CheckpointError::Incompatible { path: self.header.path.clone(), reason }
    }

    /// Load the backbone parameters (and their ids, which key the optimizer state) into `model`.
    pub fn load_model(&self, model: Transformer) -> Result<Transformer, CheckpointError> {
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(self.model.clone())).map_err(|e| self.incompatible(format!("model record: {e}")))?;
        model.try_load_record(record).map_err(|e| self.incompatible(format!("model record: {e}")))
    }

    /// Load the AdamW state into `optim`; every state in the record must be restored.
    pub fn load_optimizer(&self, optim: ModuleOptimizer) -> Result<ModuleOptimizer, CheckpointError> {
        let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(self.optimizer.clone())).map_err(|e| self.incompatible(format!("optimizer record: {e}")))?;
        let expected = record.len();
        let optim = optim.load_record(record);
        let restored = optim.to_record().len();
        if restored != expected {
            return Err(self.incompatible(format!("optimizer record: {restored} of {expected} state tensors restored")));
        }
        Ok(optim)
    }

    /// Restore every Engram table (weights, optimiser state, step): a resident table from the
    /// checkpoint's records, a file-backed one by returning its file to the checkpoint's state.
    pub fn load_tables(&self, tables: &mut [&mut EngramTable]) -> Result<(), CheckpointError> {
        if tables.len() != self.tables.len() {
            return Err(self.incompatible(format!("{} Engram tables in the checkpoint, {} in the model", self.tables.len(), tables.len())));
        }
        for (i, (t, s)) in tables.iter_mut().zip(&self.tables).enumerate() {
            if (t.rows(), t.dim()) != (s.rows, s.dim) {
                return Err(self.incompatible(format!("table {i} is {} × {} in the checkpoint, {} × {} in the model", s.rows, s.dim, t.rows(), t.dim())));
            }
            if t.layout().code() != s.layout {
                return Err(self.incompatible(format!("table {i} has record layout {} in the checkpoint, {} in the model", s.layout, t.layout().code())));
            }
            let done = match &s.saved {
                SavedTable::Resident(records) => t.restore_resident(s.step, records),
                SavedTable::File { slots, epoch } => t.restore_file(s.step, *slots, *epoch),
            };
            done.map_err(|e| self.incompatible(format!("table {i}: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
