//! The run directory: its lock, and the one way files in it are written (atomically).
//!
//! * [`RunDirLock`]: a run directory is used by one process at a time. The lock is an
//!   advisory `flock` on `DIR/.lock`, taken without waiting: a second process started on the
//!   same directory is refused at once, with the first one's process id. The operating system
//!   drops the lock when the process ends in any way (a `kill -9` included), so a crashed run
//!   never leaves a stale lock behind; the empty `.lock` file itself stays.
//! * [`write_atomic`] / [`write_atomic_with`] / [`write_json`]: a temporary file beside the
//!   target, fsynced, renamed over the target, then the directory fsynced. A failed write (a
//!   full disk, say) removes its temporary file and leaves the previous file as it was.
//!
//! Errors name the action and the path once; the operating system's message is their
//! [`std::error::Error::source`] (printed by `{:#}` as `cannot write …: No space left on
//! device`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Name of the lock file inside a run directory.
pub const LOCK_FILE: &str = ".lock";

/// An I/O operation on a file of a run failed: what was being done, on which path, and the
/// operating system's error as the source (so that it is printed once, after this message).
/// Every error of the run directory, the checkpoints and the training loop reports I/O with it.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}", path.display())]
pub struct IoError {
    /// What was being done ("write", "rename into place", …).
    pub action: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: std::io::Error,
}

/// Errors of run-directory I/O.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// An I/O operation failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Another process holds the directory's lock.
    #[error("{} is in use by another process{}: wait for it to finish, or use another directory", dir.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        /// The run directory.
        dir: PathBuf,
        /// The holder's process id, if it wrote one.
        pid: Option<u32>,
    },
    /// A value could not be serialised to JSON.
    #[error("cannot serialise {}: {source}", path.display())]
    Json {
        /// The file it was for.
        path: PathBuf,
        /// The error.
        source: serde_json::Error,
    },
}

/// `map_err` adapter for [`IoError`]: `file.sync_all().map_err(io_err("sync", &path))?` (the
/// `?` converts it into the caller's error type).
pub(crate) fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> IoError + 'p {
    move |source| IoError { action, path: path.to_path_buf(), source }
}

/// The held lock of a run directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunDirLock {
    _file: File,
    dir: PathBuf,
}

impl RunDirLock {
    /// Create `dir` if needed and take its lock, or fail at once if another process holds it.
    pub fn acquire(dir: &Path) -> Result<Self, RunDirError> {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io_err("open", &path))?;
        // SAFETY: flock on a file descriptor this process owns; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                let pid = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok());
                return Err(RunDirError::Locked { dir: dir.to_path_buf(), pid });
            }
            return Err(io_err("lock", &path)(e).into());
        }
        // The holder's pid, for the message a second process prints.
        file.set_len(0).and_then(|()| write!(file, "{}", std::process::id())).map_err(io_err("write", &path))?;
        Ok(Self { _file: file, dir: dir.to_path_buf() })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The temporary file [`write_atomic_with`] writes `path` through: `<name>.tmp` beside it.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Write `path` atomically with `fill`, which writes the whole content into the buffered
/// temporary file: fsync, rename over `path`, fsync of the directory. On any failure the
/// temporary file is removed and `path` keeps its previous content.
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) -> Result<(), RunDirError> {
    let tmp = temp_path(path);
    let result = (|| -> Result<(), RunDirError> {
        let file = File::create(&tmp).map_err(io_err("create", &tmp))?;
        let mut out = BufWriter::new(file);
        fill(&mut out).and_then(|()| out.flush()).map_err(io_err("write", &tmp))?;
        let file = out.into_inner().map_err(|e| io_err("write", &tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err("sync", &tmp))?;
        drop(file);
        Ok(std::fs::rename(&tmp, path).map_err(io_err("rename into place", path))?)
    })();
    if result.is_err() {
        // Best effort: the error that matters is the one above.
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok(File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("sync", dir))?)
}

/// Write `bytes` to `path` atomically ([`write_atomic_with`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunDirError> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Write `value` as pretty JSON to `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RunDirError> {
    let s = serde_json::to_string_pretty(value).map_err(|source| RunDirError::Json { path: path.to_path_buf(), source })?;
    write_atomic(path, s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("engram-rundir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_until_the_first_is_dropped() {
        let dir = temp_dir("lock");
        let first = RunDirLock::acquire(&dir).unwrap();
        // flock locks belong to the open file: a second open, even in this process, conflicts.
        let e = RunDirLock::acquire(&dir).unwrap_err();
        assert!(matches!(&e, RunDirError::Locked { pid: Some(p), .. } if *p == std::process::id()), "{e}");
        assert!(e.to_string().contains("in use by another process") && e.to_string().contains(&dir.display().to_string()));
        drop(first);
        assert!(RunDirLock::acquire(&dir).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_removes_its_temporary_file_and_keeps_the_old_content() {
        let dir = temp_dir("atomic");
        let path = dir.join("summary.json");
        write_atomic(&path, b"old").unwrap();
        // The writer fails half-way (as on a full disk).
        let e = write_atomic_with(&path, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device"))
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("cannot write") && !e.to_string().contains("No space"), "the OS message is the source, not repeated: {e}");
        assert_eq!(std::error::Error::source(&e).map(|s| s.to_string()), Some("No space left on device".into()));
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert!(!temp_path(&path).exists(), "temporary file left behind");
        // The rename fails (the target is a non-empty directory): same guarantees.
        let target = dir.join("occupied");
        std::fs::create_dir_all(target.join("x")).unwrap();
        assert!(write_atomic(&target, b"new").is_err());
        assert!(!temp_path(&target).exists());
        assert!(target.join("x").is_dir());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_successful_write_replaces_the_file_and_leaves_nothing_else() {
        let dir = temp_dir("ok");
        let path = dir.join("a.json");
        write_json(&path, &serde_json::json!({"x": 1})).unwrap();
        write_json(&path, &serde_json::json!({"x": 2})).unwrap();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["x"], 2);
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
