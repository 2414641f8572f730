//! The open journal: a file of fixed-size entries appended through a
//! mapping, allocated in steps, and synced by group commit (one sync covers
//! every entry written by then, whoever wrote it). After each sync it records
//! how many entries are on disk (the synced mark, in two alternating slots),
//! so that opening it can tell damage below the mark from a torn tail.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use parking_lot::Mutex;

use super::entry::Entry;
use super::recovery::mark_crc;
use crate::error::IoError;
use crate::log::doorbell::{Doorbell, Listening};
use crate::log::format::*;
use crate::storage::{Mapped, Storage};

/// Space is allocated for the journal in steps of this many bytes.
const JOURNAL_STEP_BYTES: usize = 64 << 10;

/// What a journal knows of its syncs; under its lock.
#[derive(Debug, Default)]
struct Synced {
    /// Entries known to be on disk.
    entries: u64,
    /// Marks written into the mapping: the next goes to slot `marks % 2`.
    marks: u64,
    /// The count the newest mark in the mapping says.
    marked: u64,
    /// The count the newest mark known to be on disk says.
    marked_on_disk: u64,
}

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
    /// Entries known to be on disk, and the synced marks.
    synced: Mutex<Synced>,
    /// A later state file holds everything in this journal, synced.
    retired: AtomicBool,
    /// A sync failed: the kernel may have dropped dirty pages, so a later
    /// sync succeeding proves nothing. No more syncs succeed; the group
    /// compacts before its next entry.
    failed: AtomicBool,
    /// `synced.entries`, rung when it grows, when a sync fails and when the
    /// journal retires: tasks waiting for a settle to be durable wait on it.
    synced_bell: Doorbell,
    /// The most entries a task asked the flusher to sync.
    wanted: AtomicU64,
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
        let created = file.allocate(JOURNAL_STEP_BYTES as u64).map_err(|e| io("allocate", e)).and_then(|()| {
            let map = Mapped::new(file);
            {
                // SAFETY: the file was just created with the header's bytes
                // allocated, and nobody else has it.
                encode_header(unsafe { map.slice_mut(0, QJOURNAL_HEADER_BYTES) }, generation);
            }
            map.file().sync().map_err(|e| io("sync", e))?;
            let dir = path.parent().unwrap_or(Path::new("."));
            storage.sync_dir(dir).map_err(|e| IoError::new("sync", dir, e))?;
            Ok(map)
        });
        // A full disk, say: a journal that could not be created leaves no
        // file. The state file before it is whole, and a group with a state
        // file and no journal is one between a compaction's two steps.
        let map = created.inspect_err(|_| {
            let _ = storage.remove_file(path);
        })?;
        Ok(JournalFile {
            path: path.to_owned(),
            map,
            generation,
            written: AtomicU64::new(0),
            allocated: AtomicU64::new(JOURNAL_STEP_BYTES as u64),
            synced: Mutex::new(Synced::default()),
            retired: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            synced_bell: Doorbell::new(0),
            wanted: AtomicU64::new(0),
        })
    }

    /// Appends `entry`; returns the number of entries written so far, or
    /// `Ok(None)` if the journal is full. The caller is the only writer.
    pub(in crate::queue) fn append(&self, entry: Entry) -> Result<Option<u64>, IoError> {
        let n = self.written.load(Ordering::Relaxed);
        let at = QJOURNAL_ENTRIES_AT + n as usize * QJOURNAL_ENTRY_BYTES;
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
    /// every entry written by then, whoever wrote it), then writes the synced
    /// mark that says so into the mapping. The mark is not synced here, to
    /// keep one sync per group commit: the kernel writes it back in its own
    /// time, and [`sync_all`] syncs it. It is only ever a lower bound (written
    /// after the entries it counts were synced), so a mark on disk never
    /// counts an entry that is not.
    ///
    /// [`sync_all`]: JournalFile::sync_all
    pub(in crate::queue) fn sync_through(&self, upto: u64) -> Result<(), IoError> {
        let mut synced = self.synced.lock();
        if self.retired.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(IoError::new("sync", &self.path, std::io::Error::other("an earlier sync of it failed")));
        }
        if synced.entries >= upto {
            return Ok(());
        }
        let written = self.written.load(Ordering::Acquire);
        let from = QJOURNAL_ENTRIES_AT + synced.entries as usize * QJOURNAL_ENTRY_BYTES;
        let to = QJOURNAL_ENTRIES_AT + written as usize * QJOURNAL_ENTRY_BYTES;
        self.flush(from, to - from)?;
        synced.entries = written;
        self.write_mark(&mut synced);
        // Under `synced`: the bell's value only grows.
        self.synced_bell.set(written);
        self.synced_bell.notify();
        Ok(())
    }

    /// The task's form of [`sync_through`](Self::sync_through): `Ready` once
    /// the first `upto` entries are durable (or the journal retired, its
    /// entries being in a synced state file), or with the error if a sync
    /// failed. `request` asks the engine's flusher to sync; it returns
    /// `false` if there is none, and the task then syncs itself.
    pub(in crate::queue) fn poll_synced(
        &self,
        cx: &mut Context<'_>,
        upto: u64,
        listening: &mut Listening,
        request: impl Fn() -> bool,
    ) -> Poll<Result<(), IoError>> {
        loop {
            if self.retired.load(Ordering::Acquire) || self.synced_bell.load() >= upto {
                self.synced_bell.forget(listening);
                return Poll::Ready(Ok(()));
            }
            self.wanted.fetch_max(upto, Ordering::AcqRel);
            if self.failed.load(Ordering::Acquire) || !request() {
                self.synced_bell.forget(listening);
                return Poll::Ready(self.sync_through(upto));
            }
            let stop = || self.failed.load(Ordering::Acquire) || self.retired.load(Ordering::Acquire);
            if self.synced_bell.poll_wait(listening, cx, upto - 1, stop).is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// Gives up a task's wait (its future was dropped).
    pub(in crate::queue) fn forget(&self, listening: &mut Listening) {
        self.synced_bell.forget(listening);
    }

    /// For the flusher: syncs what tasks asked for. A failure is kept by
    /// the journal and reaches the tasks through `poll_synced`.
    pub(in crate::queue) fn sync_requested(&self) {
        if self.wanted.load(Ordering::Acquire) > self.synced_bell.load() {
            let _ = self.sync_through(self.wanted.load(Ordering::Acquire));
        }
    }

    /// Makes every entry written so far durable, and the synced mark that
    /// says so: after it, opening the journal treats any invalid entry as
    /// damage. For interval flushes and closing.
    pub(in crate::queue) fn sync_all(&self) -> Result<(), IoError> {
        self.sync_through(self.written())?;
        let mut synced = self.synced.lock();
        if self.retired.load(Ordering::Acquire) || synced.marked_on_disk >= synced.entries {
            return Ok(());
        }
        self.flush(QJOURNAL_MARKS_AT, 2 * QJOURNAL_MARK_BYTES)?;
        synced.marked_on_disk = synced.marked;
        Ok(())
    }

    /// Writes a mark of `synced.entries` into the next mark slot (in the
    /// mapping only), if it says more than the newest.
    fn write_mark(&self, synced: &mut Synced) {
        if synced.marked >= synced.entries {
            return;
        }
        let at = QJOURNAL_MARKS_AT + (synced.marks % 2) as usize * QJOURNAL_MARK_BYTES;
        {
            // SAFETY: mark slots are inside the first allocation step and
            // are written only here, under the `synced` lock.
            encode_mark(unsafe { self.map.slice_mut(at, QJOURNAL_MARK_BYTES) }, synced.entries, self.generation);
        }
        synced.marks += 1;
        synced.marked = synced.entries;
    }

    /// Syncs `len` bytes from `at`; a failure fails the journal for good.
    fn flush(&self, at: usize, len: usize) -> Result<(), IoError> {
        self.map.file().flush(at, len).map_err(|e| {
            self.failed.store(true, Ordering::Release);
            self.synced_bell.wake();
            IoError::new("sync", &self.path, e)
        })
    }

    /// Whether a sync of it failed.
    pub(in crate::queue) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Everything written is now in a synced state file.
    pub(in crate::queue) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.synced_bell.wake();
    }
}

/// Writes a journal's header for `generation`.
pub(super) fn encode_header(header: &mut [u8], generation: u64) {
    header[..8].copy_from_slice(&QJOURNAL_MAGIC);
    put_u32(header, QJOURNAL_VERSION_AT, FORMAT_VERSION);
    put_u32(header, QJOURNAL_VERSION_AT + 4, 0);
    put_u64(header, QJOURNAL_HEADER_GENERATION_AT, generation);
    put_u32(header, QJOURNAL_HEADER_GENERATION_AT + 8, 0);
    let crc = crc(&header[..QJOURNAL_HEADER_CRC_AT]);
    put_u32(header, QJOURNAL_HEADER_CRC_AT, crc);
}

/// Writes a synced mark of `entries` into a mark slot of the journal of
/// `generation`.
pub(super) fn encode_mark(slot: &mut [u8], entries: u64, generation: u64) {
    put_u64(slot, 0, entries);
    put_u32(slot, 8, 0);
    let crc = mark_crc(slot, generation);
    put_u32(slot, QJOURNAL_MARK_CRC_AT, crc);
}
