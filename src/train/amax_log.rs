//! `mhc_amax.csv`: the mHC amax gain ([`AmaxGain`]) of a run on four (or any number > 1 of)
//! streams at every evaluation, so that the stack's stability can be read along the run and
//! not only at its end (`summary.json`'s `mhc_amax_gain`). One row per evaluation, measured on
//! the first training batch of the held-out windows that evaluation scores (the fixed subset,
//! or at the last step every window's first batch). Runs without mHC write no file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::model::AmaxGain;
use crate::run_dir::{io_err, write_atomic};

use super::error::TrainError;

/// Header of `mhc_amax.csv`.
pub const AMAX_HEADER: &str = "step,forward_mean,forward_max,backward_mean,backward_max";

/// `mhc_amax.csv`, open for appending.
pub(super) struct AmaxLog {
    path: PathBuf,
    file: std::fs::File,
}

impl AmaxLog {
    /// The file at `path`, starting as the rows of an earlier run up to `start_step` (a
    /// resumed run; rows logged after its checkpoint are dropped, they are logged again) or
    /// as the header alone.
    pub(super) fn open(path: &Path, start_step: usize) -> Result<Self, TrainError> {
        let mut text = format!("{AMAX_HEADER}\n");
        if start_step > 0 {
            if let Ok(old) = std::fs::read_to_string(path) {
                for line in old.lines().skip(1) {
                    match line.split(',').next().and_then(|s| s.parse::<usize>().ok()) {
                        Some(step) if step <= start_step => {
                            text.push_str(line);
                            text.push('\n');
                        }
                        _ => {}
                    }
                }
            }
        }
        write_atomic(path, text.as_bytes())?;
        let file = std::fs::OpenOptions::new().append(true).open(path).map_err(io_err("open", path))?;
        Ok(Self { path: path.to_path_buf(), file })
    }

    /// Append the gain measured after `step` steps.
    pub(super) fn append(&mut self, step: usize, g: &AmaxGain) -> Result<(), TrainError> {
        writeln!(self.file, "{step},{},{},{},{}", g.forward_mean, g.forward_max, g.backward_mean, g.backward_max).map_err(io_err("append to", &self.path))?;
        Ok(())
    }

    /// Flush to disk.
    pub(super) fn sync(&self) -> Result<(), TrainError> {
        self.file.sync_all().map_err(io_err("sync", &self.path))?;
        Ok(())
    }
}
