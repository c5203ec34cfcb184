//! What can go wrong in export, probe and import.

use std::path::PathBuf;

use crate::run_dir::RunDirError;
use crate::train::{LoadError, TrainError};

/// Why a run could not be exported or probed.
#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    /// Loading the run.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Preparing the tables or the hash.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// Preparing the data.
    #[error(transparent)]
    Data(#[from] crate::data::prepare::DataError),
    /// Writing a checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// The run cannot be described by the reference hash.
    #[error("{0}")]
    Unsupported(String),
    /// The probe text.
    #[error("probe text: {0}")]
    Probe(String),
    /// Writing the file.
    #[error(transparent)]
    Write(#[from] RunDirError),
    /// The file to import cannot be read or is not a safetensors file.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor of the file to import is missing or does not fit the model.
    #[error("{}: tensor {name}: {reason}", path.display())]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A metadata key of the file to import is missing or disagrees with its config.
    #[error("{}: metadata key {key}: {reason}", path.display())]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The directory to import into.
    #[error("--out {}: {reason}", path.display())]
    Out {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

