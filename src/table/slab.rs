//! The file-backed store: rows live in a memory-mapped slab file in first-touch order, behind
//! an index (row → slot) held in memory.
//!
//! # Why a slab, not a file indexed by row
//! A file with a record at every row's hashed position is sparse, but each first touch of a
//! row then lands on its own page: the filesystem allocates and zeroes a 4 KiB block per row
//! (measured 18–46 µs per page on a 2-core VM with ext4), and a table
//! that has seen a million rows holds 4 GiB of pages for 200 MB of records. Here a row gets the
//! next free slot when it is first touched; its initial record ([`super::layout::Init`]) is
//! appended with one `pwrite` per batch of new rows, so new rows share pages (20 rows of 196
//! bytes per page), disk and page cache hold only the bytes of rows touched, and no step takes
//! a page fault on a hole. The whole possible file (every row) is mapped once; only the part
//! below the file's end is ever accessed.
//!
//! # File
//! ```text
//! header   4096 bytes: magic "ENGRAMTB" | version u32 | rows u64 | dim u64 | layout code u32 |
//!          init seed u64 | init std (f32 bits) u32, little-endian, zero-padded
//! slots    record after record (layout in `super::layout`), in first-touch order
//! ```
//! A file is refused when its header names another table (rows, width, layout or
//! initialisation) or when it is shorter than the checkpoint says it was.
//!
//! # Checkpoints without copying the table: an undo journal
//! A checkpoint records the number of slots in use and an epoch number, after `msync` of the
//! slab; the slab itself stays where it is. From then on, before a slot that existed at the
//! checkpoint is first modified, its record (its pre-image) is appended to `<file>.journal`,
//! once per slot per epoch; slots created after the checkpoint need no pre-image. Resuming from
//! the checkpoint writes the journal's pre-images back and forgets the later slots, which
//! restores the slab to the checkpoint's state exactly. The journal's header carries its epoch:
//! after a new checkpoint is in place, the journal is restarted with the next epoch, and a
//! journal of an older epoch (a crash between the checkpoint and the restart) is ignored.
//! The journal is written before the slot changes, with ordinary writes: this survives the
//! process being killed at any point (the page cache outlives it). A power loss between
//! checkpoints is not covered (that would need an fsync of the journal before every step).
//! Resuming reads the slot headers once to rebuild the index.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::layout::{Init, RowLayout};
use super::error::TableError;

/// Bytes of the file header (one page, so records start page-aligned).
pub const SLAB_HEADER_BYTES: u64 = 4096;
const MAGIC: &[u8; 8] = b"ENGRAMTB";
const VERSION: u32 = 1;
const JOURNAL_MAGIC: &[u8; 8] = b"ENGRAMJL";
/// Bytes of the journal header: magic, epoch u64.
const JOURNAL_HEADER_BYTES: u64 = 16;

/// New records are written this many at a time (about 50 KB at 196-byte records), so the
/// buffer stays small however many rows a batch creates.
const WRITE_CHUNK_RECORDS: usize = 256;

type Index = std::collections::HashMap<u32, u32, ahash::RandomState>;

/// Bytes the row → slot index ([`Index`], the standard library's SwissTable) allocates after
/// `rows` entries were inserted one at a time: `buckets · (4 + 4 + 1) + 16` (key, value and a
/// control byte per bucket, and a trailing group of 16 control bytes) with
/// `buckets = next_power_of_two(⌈8·rows / 7⌉)` (its load factor 7/8; 4 or 8 buckets below 8
/// entries). A model of the table's layout, checked against its capacity in the tests.
pub(crate) fn index_bytes(rows: u64) -> u64 {
    if rows == 0 {
        return 0;
    }
    let buckets = if rows < 8 { (rows + 1).next_power_of_two().max(4) } else { (rows * 8).div_ceil(7).next_power_of_two() };
    buckets * (std::mem::size_of::<(u32, u32)>() as u64 + 1) + 16
}

fn io<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> TableError + 'p {
    move |source| TableError::Io(crate::run_dir::IoError { action, path: path.to_path_buf(), source })
}

/// A table's rows in a memory-mapped file, in first-touch order.
pub(crate) struct Slab {
    path: PathBuf,
    file: File,
    map: memmap2::MmapRaw,
    layout: RowLayout,
    rows: usize,
    index: Index,
    /// Slots in use.
    slots: usize,
    /// Slots that existed at the last checkpoint (pre-images are journaled for these).
    committed: usize,
    /// One bit per committed slot: its pre-image is in this epoch's journal.
    journaled: Vec<u64>,
    journal: Journal,
    /// Reused buffers: new records, pre-images.
    fresh: Vec<u32>,
    undo: Vec<u8>,
    /// Bumped whenever slots are forgotten (a restore, a failed write's rollback): a slot
    /// looked up under another generation may no longer hold its row.
    generation: u64,
}

struct Journal {
    path: PathBuf,
    file: File,
    epoch: u64,
}

impl Journal {
    fn path_of(slab: &Path) -> PathBuf {
        let mut p = slab.as_os_str().to_owned();
        p.push(".journal");
        PathBuf::from(p)
    }

    /// Start an empty journal for `epoch` (replacing what was there).
    fn restart(path: PathBuf, epoch: u64) -> Result<Self, TableError> {
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).map_err(io("create", &path))?;
        let mut head = [0u8; JOURNAL_HEADER_BYTES as usize];
        head[..8].copy_from_slice(JOURNAL_MAGIC);
        head[8..].copy_from_slice(&epoch.to_le_bytes());
        file.write_all(&head).map_err(io("write", &path))?;
        file.sync_all().map_err(io("sync", &path))?;
        Ok(Self { path, file, epoch })
    }
}

fn header_bytes(rows: usize, layout: &RowLayout, init: &Init) -> Vec<u8> {
    let mut h = Vec::with_capacity(SLAB_HEADER_BYTES as usize);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&(rows as u64).to_le_bytes());
    h.extend_from_slice(&(layout.dim as u64).to_le_bytes());
    h.extend_from_slice(&layout.code().to_le_bytes());
    h.extend_from_slice(&init.seed.to_le_bytes());
    h.extend_from_slice(&init.std.to_bits().to_le_bytes());
    h.resize(SLAB_HEADER_BYTES as usize, 0);
    h
}

impl Slab {
    /// Create (`fresh`, replacing any file there) or open the slab file at `path`.
    pub(crate) fn open(path: &Path, rows: usize, layout: RowLayout, init: &Init, fresh: bool) -> Result<Self, TableError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        let want = header_bytes(rows, &layout, init);
        let file = if fresh {
            let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).map_err(io("create", path))?;
            f.write_all(&want).map_err(io("write", path))?;
            f
        } else {
            let mut f = OpenOptions::new().read(true).write(true).open(path).map_err(io("open", path))?;
            let mut got = vec![0u8; SLAB_HEADER_BYTES as usize];
            let len = f.metadata().map_err(io("read", path))?.len();
            if len < SLAB_HEADER_BYTES {
                return Err(TableError::FileTruncated { path: path.to_path_buf(), bytes: len, expected: SLAB_HEADER_BYTES });
            }
            f.read_exact(&mut got).map_err(io("read", path))?;
            if got != want {
                return Err(TableError::FileMismatch { path: path.to_path_buf(), reason: describe_mismatch(&got, &want) });
            }
            f
        };
        let max = SLAB_HEADER_BYTES as usize + rows * layout.record_bytes();
        let map = memmap2::MmapOptions::new().len(max).map_raw(&file).map_err(io("memory-map", path))?;
        let jpath = Journal::path_of(path);
        let journal = if fresh {
            Journal::restart(jpath, 1)?
        } else {
            // Kept as it is until `restore` has read it.
            let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&jpath).map_err(io("open", &jpath))?;
            Journal { path: jpath, file, epoch: 0 }
        };
        Ok(Self {
            path: path.to_path_buf(),
            file,
            map,
            layout,
            rows,
            index: Index::default(),
            slots: 0,
            committed: 0,
            journaled: Vec::new(),
            journal,
            fresh: Vec::new(),
            undo: Vec::new(),
            generation: 0,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Slots in use (rows touched).
    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    /// Base of the records (word 0 of slot 0).
    pub(crate) fn base(&self) -> *mut u32 {
        // SAFETY: the header is inside the mapping (the mapping is at least header-long).
        unsafe { self.map.as_mut_ptr().add(SLAB_HEADER_BYTES as usize).cast() }
    }

    pub(crate) fn slot(&self, row: u32) -> Option<u32> {
        self.index.get(&row).copied()
    }

    /// Changes whenever slots are forgotten: slots looked up under the same generation still
    /// hold their rows.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Give every row of `rows` that has no slot yet the next free one, with its initial
    /// record (written in chunks of [`WRITE_CHUNK_RECORDS`], one write each). On an error the
    /// slots this call handed out are forgotten: the table is as before the call (records
    /// already written past the last slot are overwritten when those slots are handed out again).
    pub(crate) fn materialise(&mut self, rows: &[u32], init: &Init) -> Result<(), TableError> {
        let rw = self.layout.record_words();
        self.fresh.clear();
        let first = self.slots;
        let mut unwritten = first;
        for &r in rows {
            if let std::collections::hash_map::Entry::Vacant(e) = self.index.entry(r) {
                e.insert(self.slots as u32);
                self.slots += 1;
                let at = self.fresh.len();
                self.fresh.resize(at + rw, 0);
                self.layout.init_record(r, init, &mut self.fresh[at..]);
                if self.slots - unwritten == WRITE_CHUNK_RECORDS {
                    self.write_fresh(unwritten, first)?;
                    unwritten = self.slots;
                }
            }
        }
        if self.slots > unwritten {
            self.write_fresh(unwritten, first)?;
        }
        Ok(())
    }

    /// Write the records in `self.fresh` from slot `at`; on an error, forget the slots from
    /// `first` on.
    fn write_fresh(&mut self, at: usize, first: usize) -> Result<(), TableError> {
        let offset = SLAB_HEADER_BYTES + (at * self.layout.record_bytes()) as u64;
        let written = self.file.write_all_at(bytemuck::cast_slice(&self.fresh), offset);
        self.fresh.clear();
        if let Err(e) = written {
            self.index.retain(|_, s| (*s as usize) < first);
            self.slots = first;
            self.generation += 1;
            return Err(io("extend", &self.path)(e));
        }
        Ok(())
    }

    /// Append to the journal the pre-images of the committed slots among `slots` that have none
    /// in it yet; call before modifying them.
    pub(crate) fn journal(&mut self, slots: &[u32]) -> Result<(), TableError> {
        let rb = self.layout.record_bytes();
        self.undo.clear();
        let mut marked = Vec::new();
        for &s in slots {
            let s = s as usize;
            if s >= self.committed || self.journaled[s / 64] >> (s % 64) & 1 == 1 {
                continue;
            }
            self.undo.extend_from_slice(&(s as u64).to_le_bytes());
            // SAFETY: slot s < self.slots is inside the file and the mapping; nothing writes
            // to the table while `&mut self` is held.
            let rec = unsafe { std::slice::from_raw_parts(self.base().cast::<u8>().add(s * rb), rb) };
            self.undo.extend_from_slice(rec);
            marked.push(s);
        }
        if self.undo.is_empty() {
            return Ok(());
        }
        self.journal.file.write_all(&self.undo).map_err(io("append to", &self.journal.path))?;
        for s in marked {
            self.journaled[s / 64] |= 1 << (s % 64);
        }
        Ok(())
    }

    /// Bring the pages of `slots` into memory (read-touch one word per page of each record):
    /// what was evicted is read back now, not inside the step that uses it.
    pub(crate) fn touch(&self, slots: &[u32]) {
        let rb = self.layout.record_bytes();
        let base = self.base().cast::<u8>();
        for &s in slots {
            let start = s as usize * rb;
            for at in [start, start + rb - 4] {
                // SAFETY: inside record s, which lies below the file's end.
                unsafe { std::ptr::read_volatile(base.add(at)) };
            }
        }
    }

    /// Write every modified page to the file (before a checkpoint records it).
    pub(crate) fn flush(&self) -> Result<(), TableError> {
        let len = SLAB_HEADER_BYTES as usize + self.slots * self.layout.record_bytes();
        self.map.flush_range(0, len).map_err(io("sync", &self.path))?;
        self.file.sync_data().map_err(io("sync", &self.path))
    }

    /// The epoch a checkpoint written now records: the next one, whose journal will hold the
    /// pre-images relative to that checkpoint.
    pub(crate) fn next_epoch(&self) -> u64 {
        self.journal.epoch + 1
    }

    /// Write the modified pages, then drop every page of the file from this process and from
    /// the page cache (`madvise(MADV_DONTNEED)`, `posix_fadvise(POSIX_FADV_DONTNEED)`).
    pub(crate) fn evict(&self) -> Result<(), TableError> {
        use std::os::fd::AsRawFd;
        self.flush()?;
        let len = SLAB_HEADER_BYTES as usize + self.slots * self.layout.record_bytes();
        // SAFETY: [map, map + len) is inside the mapping; for a shared file mapping
        // MADV_DONTNEED only drops this process's page-table entries (the data stays in the
        // file, which was just synced), so later reads fault the pages back in.
        let r = unsafe { libc::madvise(self.map.as_mut_ptr().cast(), len, libc::MADV_DONTNEED) };
        if r != 0 {
            return Err(io("evict", &self.path)(std::io::Error::last_os_error()));
        }
        // SAFETY: a plain system call on an open file descriptor.
        let r = unsafe { libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if r != 0 {
            return Err(io("evict", &self.path)(std::io::Error::from_raw_os_error(r)));
        }
        Ok(())
    }

    /// A checkpoint recording the current slots and [`Slab::next_epoch`] is in place: start
    /// that epoch.
    pub(crate) fn committed_now(&mut self) -> Result<(), TableError> {
        self.start_epoch(self.journal.epoch + 1)
    }

    fn start_epoch(&mut self, epoch: u64) -> Result<(), TableError> {
        self.committed = self.slots;
        self.journaled.clear();
        self.journaled.resize(self.committed.div_ceil(64), 0);
        self.journal = Journal::restart(self.journal.path.clone(), epoch)?;
        Ok(())
    }

    /// Return to the state a checkpoint recorded: `slots` slots, journal epoch `epoch`.
    pub(crate) fn restore(&mut self, slots: usize, epoch: u64) -> Result<(), TableError> {
        let rb = self.layout.record_bytes();
        let need = SLAB_HEADER_BYTES + (slots * rb) as u64;
        let len = self.file.metadata().map_err(io("read", &self.path))?.len();
        if len < need {
            return Err(TableError::FileTruncated { path: self.path.clone(), bytes: len, expected: need });
        }
        // Write back the pre-images of this epoch's journal.
        let jpath = self.journal.path.clone();
        let bytes = std::fs::read(&jpath).map_err(io("read", &jpath))?;
        let epoch_of = |b: &[u8]| (b.len() >= 16 && &b[..8] == JOURNAL_MAGIC).then(|| u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")));
        if epoch_of(&bytes) == Some(epoch) {
            // A trailing partial entry was being written when the process died: the slot it
            // names was not modified yet.
            for entry in bytes[JOURNAL_HEADER_BYTES as usize..].chunks_exact(8 + rb) {
                let s = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
                if s as usize >= slots {
                    return Err(TableError::FileMismatch { path: jpath, reason: format!("journal names slot {s}, the checkpoint has {slots}") });
                }
                self.file.write_all_at(&entry[8..], SLAB_HEADER_BYTES + s * rb as u64).map_err(io("restore", &self.path))?;
            }
        }
        self.file.set_len(need).map_err(io("truncate", &self.path))?;
        self.file.sync_data().map_err(io("sync", &self.path))?;
        // Rebuild the index from the slots' row ids.
        self.generation += 1;
        self.index.clear();
        self.index.reserve(slots);
        let rw = self.layout.record_words();
        for s in 0..slots {
            // SAFETY: slot s < slots lies below the file's end (checked above).
            let row = unsafe { std::ptr::read(self.base().add(s * rw)) };
            if row as usize >= self.rows || self.index.insert(row, s as u32).is_some() {
                return Err(TableError::FileMismatch { path: self.path.clone(), reason: format!("slot {s} holds row {row}, out of range or repeated") });
            }
        }
        self.slots = slots;
        self.start_epoch(epoch)
    }

    /// Bytes the file occupies on disk (allocated blocks, not its apparent length).
    pub(crate) fn disk_bytes(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let of = |p: &Path| std::fs::metadata(p).map(|m| m.blocks() * 512).unwrap_or(0);
        of(&self.path) + of(&self.journal.path)
    }
}

fn describe_mismatch(got: &[u8], want: &[u8]) -> String {
    if &got[..8] != MAGIC {
        return "not an Engram table file (wrong magic bytes)".into();
    }
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    let fields: [(&str, u64, u64); 6] = [
        ("version", u32_at(got, 8).into(), u32_at(want, 8).into()),
        ("rows", u64_at(got, 12), u64_at(want, 12)),
        ("row width", u64_at(got, 20), u64_at(want, 20)),
        ("layout (optimizer/weights)", u32_at(got, 28).into(), u32_at(want, 28).into()),
        ("init seed", u64_at(got, 32), u64_at(want, 32)),
        ("init std bits", u32_at(got, 40).into(), u32_at(want, 40).into()),
    ];
    let diffs: Vec<String> = fields.iter().filter(|(_, g, w)| g != w).map(|(n, g, w)| format!("{n} {g} in the file, {w} in this config")).collect();
    if diffs.is_empty() {
        "its header differs from this table's".into()
    } else {
        format!("it belongs to another table: {}", diffs.join(", "))
    }
}
