//! The open journal: a file of fixed-size entries appended through a
//! mapping, allocated in steps, and synced by group commit (one sync covers
//! every entry written by then, whoever wrote it).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::entry::Entry;
use crate::error::IoError;
use crate::log::format::*;
use crate::storage::{Mapped, Storage};

/// Space is allocated for the journal in steps of this many bytes.
const JOURNAL_STEP_BYTES: usize = 64 << 10;

/// The open journal. One writer (the group, under its lock); any thread may
/// sync it.
#[derive(Debug)]
pub(in crate::queue) struct JournalFile {
    path: PathBuf,
    map: Mapped,
    generation: u64,
    /// Entries written (published with Release after the bytes).
    written: AtomicU64,
    /// Bytes of the file allocated; under the group's lock.
    allocated: AtomicU64,
    /// Entries known to be on disk.
    synced: Mutex<u64>,
    /// A later state file holds everything in this journal, synced.
    retired: AtomicBool,
    /// A sync failed: the kernel may have dropped dirty pages, so a later
    /// sync succeeding proves nothing. No more syncs succeed; the group
    /// compacts before its next entry.
    failed: AtomicBool,
}

impl JournalFile {
    /// Creates an empty journal of `generation` at `path`, replacing any
    /// file there, and makes it durable.
    pub(super) fn create(storage: &dyn Storage, path: &Path, generation: u64) -> Result<JournalFile, IoError> {
        let io = |op, e| IoError::new(op, path, e);
        if storage.exists(path) {
            storage.remove_file(path).map_err(|e| io("remove", e))?;
        }
        let file = storage.open_mapped(path, true, JOURNAL_MAP_BYTES).map_err(|e| io("create", e))?;
        file.allocate(JOURNAL_STEP_BYTES as u64).map_err(|e| io("allocate", e))?;
        let map = Mapped::new(file);
        {
            // SAFETY: the file was just created with the header's bytes
            // allocated, and nobody else has it.
            let header = unsafe { map.slice_mut(0, QJOURNAL_HEADER_BYTES) };
            header[..8].copy_from_slice(&QJOURNAL_MAGIC);
            put_u32(header, QJOURNAL_VERSION_AT, FORMAT_VERSION);
            put_u64(header, QJOURNAL_HEADER_GENERATION_AT, generation);
            let crc = crc(&header[..QJOURNAL_HEADER_CRC_AT]);
            put_u32(header, QJOURNAL_HEADER_CRC_AT, crc);
        }
        map.file().sync().map_err(|e| io("sync", e))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        storage.sync_dir(dir).map_err(|e| IoError::new("sync", dir, e))?;
        Ok(JournalFile {
            path: path.to_owned(),
            map,
            generation,
            written: AtomicU64::new(0),
            allocated: AtomicU64::new(JOURNAL_STEP_BYTES as u64),
            synced: Mutex::new(0),
            retired: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        })
    }

    /// Appends `entry`; returns the number of entries written so far, or
    /// `Ok(None)` if the journal is full. The caller is the only writer.
    pub(in crate::queue) fn append(&self, entry: Entry) -> Result<Option<u64>, IoError> {
        let n = self.written.load(Ordering::Relaxed);
        let at = QJOURNAL_HEADER_BYTES + n as usize * QJOURNAL_ENTRY_BYTES;
        if at + QJOURNAL_ENTRY_BYTES > JOURNAL_MAP_BYTES {
            return Ok(None);
        }
        let allocated = self.allocated.load(Ordering::Relaxed) as usize;
        if at + QJOURNAL_ENTRY_BYTES > allocated {
            let want = (allocated + JOURNAL_STEP_BYTES).min(JOURNAL_MAP_BYTES);
            self.map.file().allocate(want as u64).map_err(|e| IoError::new("allocate", &self.path, e))?;
            self.allocated.store(want as u64, Ordering::Relaxed);
        }
        {
            // SAFETY: the slot is allocated (above) and past `written`: no
            // sync reads it yet, and the caller is the only writer.
            let slot = unsafe { self.map.slice_mut(at, QJOURNAL_ENTRY_BYTES) };
            entry.encode(slot, self.generation);
        }
        self.written.store(n + 1, Ordering::Release);
        Ok(Some(n + 1))
    }

    /// Entries written so far.
    pub(in crate::queue) fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Makes the first `upto` entries durable (group commit: one sync covers
    /// every entry written by then, whoever wrote it).
    pub(in crate::queue) fn sync_through(&self, upto: u64) -> Result<(), IoError> {
        let mut synced = self.synced.lock();
        if self.retired.load(Ordering::Acquire) {
            return Ok(());
        }
        let failed = || IoError::new("sync", &self.path, std::io::Error::other("an earlier sync of it failed"));
        if self.failed.load(Ordering::Acquire) {
            return Err(failed());
        }
        if *synced >= upto {
            return Ok(());
        }
        let written = self.written.load(Ordering::Acquire);
        let from = QJOURNAL_HEADER_BYTES + *synced as usize * QJOURNAL_ENTRY_BYTES;
        let to = QJOURNAL_HEADER_BYTES + written as usize * QJOURNAL_ENTRY_BYTES;
        if let Err(e) = self.map.file().flush(from, to - from) {
            self.failed.store(true, Ordering::Release);
            return Err(IoError::new("sync", &self.path, e));
        }
        *synced = written;
        Ok(())
    }

    /// Whether a sync of it failed.
    pub(in crate::queue) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Everything written is now in a synced state file.
    pub(in crate::queue) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }
}
