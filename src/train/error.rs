//! Errors of a training run.

use std::path::PathBuf;

use crate::checkpoint;
use crate::ConfigError;
use crate::engram::EngramError;
use crate::run_dir::{IoError, RunDirError};

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// I/O on the run directory.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The run directory's lock or an atomic write failed.
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// Hashing failed (e.g. an id outside the compressed vocabulary).
    #[error(transparent)]
    Hash(#[from] crate::hashing::HashError),
    /// A table operation failed.
    #[error(transparent)]
    Table(#[from] crate::table::TableError),
    /// An Engram layer's lookup or table step failed.
    #[error(transparent)]
    Engram(#[from] EngramError),
    /// The held-out books do not fit the evaluation windows.
    #[error(transparent)]
    Eval(#[from] crate::eval::EvalError),
    /// The data is too short for the windows.
    #[error("{split} split has {len} tokens, fewer than one window of seq_len + 1 = {need}")]
    DataTooShort {
        /// "train" or "validation".
        split: &'static str,
        /// Its tokens.
        len: usize,
        /// Tokens needed.
        need: usize,
    },
    /// The run to start from (`train.init_from`) cannot be used.
    #[error("train.init_from {}: {reason}", run.display())]
    InitFrom {
        /// The run.
        run: PathBuf,
        /// Why not.
        reason: String,
    },
    /// The loss became NaN or infinite.
    #[error("training diverged: loss is {loss} at step {step}")]
    NonFiniteLoss {
        /// The step.
        step: usize,
        /// The loss.
        loss: f32,
    },
    /// Writing, reading or applying a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// JSON (de)serialisation.
    #[error("{path}: {source}")]
    Json {
        /// The path.
        path: PathBuf,
        /// The error.
        source: serde_json::Error,
    },
}
