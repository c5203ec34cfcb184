//! A finished run loaded for use — by `engram export`, `generate`, `inspect` and fine-tuning
//! (`train.init_from`): its config, data, model and tables, restored from its final checkpoint.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::error::TrainError;
use super::step::{engram_hashing, engram_hosts};
use crate::checkpoint::{self, CheckpointError};
use crate::config::ExperimentConfig;
use crate::data::PreparedData;
use crate::engram::EngramHost;
use crate::model::Transformer;

/// Why a finished run could not be loaded, or a text encoded for it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The run directory has no readable `config.json`.
    #[error("{}: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The run's checkpoint is missing, unreadable or not of the finished run.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint is not at the run's last step.
    #[error("{}: the checkpoint is at step {step} of {steps}; use a finished run (or finish it with `engram train --resume`)", run.display())]
    Unfinished {
        /// The run directory.
        run: PathBuf,
        /// The checkpoint's step.
        step: usize,
        /// The run's steps.
        steps: usize,
    },
    /// Preparing the tables or the hash failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// Preparing the data failed.
    #[error(transparent)]
    Data(#[from] crate::data::prepare::DataError),
    /// A text to encode.
    #[error("{0}")]
    Text(String),
}

/// A finished run loaded for use: its config, data (tokenizer, compression), model and tables.
pub struct LoadedRun {
    /// The run directory.
    pub dir: PathBuf,
    /// Its config.
    pub cfg: ExperimentConfig,
    /// Its data (the tokenizer's compression and pad id; the held-out text).
    pub data: PreparedData,
    /// The trained model, without autodiff.
    pub model: Transformer,
    /// The Engram layers' tables and hashes, in block order.
    pub hosts: Vec<EngramHost>,
}

impl LoadedRun {
    /// Load the finished run in `dir` (its `config.json` and final checkpoint) on `device`.
    /// A file-backed table is opened in place and restored to the checkpoint's state, as
    /// `engram train --resume` would.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, LoadError> {
        Self::open(dir, device, |cfg| Ok(PreparedData::prepare(cfg)?))
    }

    /// [`LoadedRun::load`] with data already prepared (e.g. another run's of the same
    /// experiment), which saves tokenising the corpus again; refused unless it is the data the
    /// run was trained on.
    pub fn load_with_data(dir: &Path, data: PreparedData, device: &Device) -> Result<Self, LoadError> {
        Self::open(dir, device, |_| Ok(data))
    }

    fn open(dir: &Path, device: &Device, data: impl FnOnce(&crate::data::DataConfig) -> Result<PreparedData, LoadError>) -> Result<Self, LoadError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| LoadError::Config { path: path.clone(), reason: format!("cannot read it ({e}); is {} a run directory?", dir.display()) })?;
        let cfg: ExperimentConfig = serde_json::from_str(&text).map_err(|e| LoadError::Config { path: path.clone(), reason: e.to_string() })?;
        let ck = checkpoint::read(dir)?;
        if ck.progress.step != cfg.train.steps {
            return Err(LoadError::Unfinished { run: dir.to_path_buf(), step: ck.progress.step, steps: cfg.train.steps });
        }
        ck.check_config(&cfg)?;
        let data = data(&cfg.data)?;
        ck.check_data(&data)?;
        let model = ck.load_model(cfg.model.init(device))?;
        let hashing = engram_hashing(&cfg.model, &data)?;
        let mut hosts = engram_hosts(&cfg.model, hashing.as_ref(), cfg.train.seed, dir, true)?;
        ck.load_tables(&mut hosts.iter_mut().map(EngramHost::table_mut).collect::<Vec<_>>())?;
        Ok(Self { dir: dir.to_path_buf(), cfg, data, model, hosts })
    }

    /// An untrained model of `cfg` (its initialisation, with resident tables) and the data
    /// its config names, as a finished run would hold them: for benchmarks and tests of what
    /// reads a run, where the weights' values do not matter.
    pub fn untrained(cfg: &ExperimentConfig, device: &Device) -> Result<Self, LoadError> {
        let mut cfg = cfg.clone();
        if let Some(e) = &mut cfg.model.engram {
            e.table_store = crate::table::TableStore::Resident;
        }
        let data = PreparedData::prepare(&cfg.data)?;
        let model = cfg.model.init(device);
        let hashing = engram_hashing(&cfg.model, &data)?;
        let hosts = engram_hosts(&cfg.model, hashing.as_ref(), cfg.train.seed, Path::new("."), false)?;
        Ok(Self { dir: PathBuf::from("(untrained)"), cfg, data, model, hosts })
    }

    /// Tokens routed to each expert of every MoE block (in block order) while the model reads
    /// `windows` windows of the run's sequence length, evenly spaced over the held-out tokens
    /// (fewer when the held-out text is shorter); empty for a model without MoE. A window
    /// makes `seq_len · top_k` assignments per block.
    pub fn expert_counts(&self, windows: usize, device: &Device) -> Result<Vec<Vec<usize>>, LoadError> {
        let t = self.cfg.train.seq_len;
        let val = &self.data.val;
        let n = windows.min(val.len() / t.max(1));
        if self.cfg.model.moe.is_none() || n == 0 {
            return Ok(Vec::new());
        }
        let stride = (val.len() - t) / (n - 1).max(1);
        let ids: Vec<u32> = (0..n).flat_map(|w| val[w * stride..w * stride + t].iter().copied()).collect();
        let mems = self.hosts.iter().map(|h| h.lookup(&ids, [n, t], device).map(|l| l.into_memory())).collect::<Result<Vec<_>, _>>().map_err(TrainError::from)?;
        let input = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(burn::tensor::TensorData::new(ids.iter().map(|&x| x as i32).collect::<Vec<_>>(), [n, t]), device);
        Ok(self.model.expert_counts(input, &mems))
    }

    /// The run's tokenizer.
    pub fn tokenizer(&self) -> Result<crate::tokenizer::Tokenizer, LoadError> {
        self.cfg.data.load_tokenizer().map_err(|e| LoadError::Text(e.to_string()))
    }

    /// Model token ids of `text` (the run's tokenizer; one sequence, no boundary token). An
    /// empty text is refused, and so is a run on a remapped vocabulary (its ids are not the
    /// tokenizer's).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LoadError> {
        if text.is_empty() {
            return Err(LoadError::Text("the text is empty".into()));
        }
        if self.data.vocab.is_some() {
            return Err(LoadError::Text(format!("a run on the remapped {} tokenizer is not supported here; use the corpus BPE or bytes", self.cfg.data.tokenizer.name())));
        }
        Ok(self.tokenizer()?.encode(text))
    }
}
