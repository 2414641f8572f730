//! A topic's side of a backup (the engine's `backup.rs` runs the whole):
//! the cut, taken under the topic's append lock and commit gate, and the
//! copy of its log up to the cut with a checkpoint marking a clean
//! shutdown, made after the locks are released. `docs/OPERATIONS.md`,
//! "Backup and restore", has the design.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::{MutexGuard, RwLockWriteGuard};

use super::format::*;
use super::slots::{Checkpoint, CleanMark, SlotFile};
use super::topic::{Appender, TopicLog};
use crate::error::{IoError, TopicError};

/// A topic frozen for a backup's cut: no publish, roll or consumer-group
/// commit until [`Frozen::release`].
pub(crate) struct Frozen<'a> {
    _append: MutexGuard<'a, Appender>,
    _commits: RwLockWriteGuard<'a, ()>,
    cut: LogCut,
}

impl Frozen<'_> {
    /// Lets writers go on; returns the cut, to copy.
    pub(crate) fn release(self) -> LogCut {
        self.cut
    }
}

/// Where a topic's log ended at a backup's cut: its segment files and how
/// much of each to copy. Retention deletes none of them while it lives.
pub(crate) struct LogCut {
    topic: Arc<TopicLog>,
    segments: Vec<SegmentCopy>,
    next_offset: u64,
    active_base: u64,
    active_end: usize,
}

/// One segment file to copy.
struct SegmentCopy {
    base: u64,
    path: PathBuf,
    /// Bytes to copy: the data of the active segment and of sealed ones not
    /// yet synced (whose files are longer than their data, and are being
    /// truncated); `None` for sealed, synced segments, copied whole with
    /// their index.
    len: Option<u64>,
}

impl TopicLog {
    /// Freezes the topic for a backup's cut: takes its append lock and its
    /// commit gate (in that order; nothing takes the gate and then the
    /// append lock), pins its segments against retention, and notes where
    /// the log ends.
    pub(crate) fn freeze(self: &Arc<Self>) -> Frozen<'_> {
        let append = self.append.lock();
        let commits = self.commits.write();
        // Before the segments are listed: retention checks the pin under
        // the segments' write lock, so it either removed a segment before
        // the listing below (which then leaves it out) or sees the pin.
        self.retention_pins.fetch_add(1, Ordering::SeqCst);
        let segments = self
            .segments
            .read()
            .values()
            .map(|slot| {
                let len = if slot.base == append.seg.base {
                    Some(append.position as u64)
                } else {
                    append.unsynced.iter().find(|s| s.base == slot.base).map(|s| s.end() as u64)
                };
                SegmentCopy { base: slot.base, path: slot.path.clone(), len }
            })
            .collect();
        let cut = LogCut {
            topic: self.clone(),
            segments,
            next_offset: append.next_offset,
            active_base: append.seg.base,
            active_end: append.position,
        };
        Frozen { _append: append, _commits: commits, cut }
    }

    /// Whether a backup is copying the topic's segments: retention then
    /// deletes none.
    pub(super) fn retention_pinned(&self) -> bool {
        self.retention_pins.load(Ordering::SeqCst) > 0
    }
}

impl LogCut {
    /// The offset the next publish got after the cut: the records the copy
    /// holds.
    pub(crate) fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Copies the log up to the cut into `dest`, the topic's directory in
    /// the copy (it exists and is empty): `topic.conf`, the segments (each
    /// synced), the indexes of sealed segments, and a checkpoint marking a
    /// clean shutdown at the cut. Returns the files and bytes written.
    pub(crate) fn copy_to(&self, dest: &Path) -> Result<(u64, u64), TopicError> {
        let storage = self.topic.storage();
        let io = |op, path: &Path, e| TopicError::Io(IoError::new(op, path, e));
        let (mut files, mut bytes) = (0, 0);
        let conf = self.topic.dir().join(TOPIC_FILE);
        let conf_bytes = storage.read_file(&conf).map_err(|e| io("read", &conf, e))?;
        let to = dest.join(TOPIC_FILE);
        storage.write_file(&to, &conf_bytes).map_err(|e| io("write", &to, e))?;
        files += 1;
        bytes += conf_bytes.len() as u64;
        for segment in &self.segments {
            let name = segment.path.file_name().expect("a segment file name");
            let to = dest.join(name);
            let len = match segment.len {
                Some(len) => len,
                None => storage.file_len(&segment.path).map_err(|e| io("stat", &segment.path, e))?,
            };
            storage.copy_file(&segment.path, &to, len).map_err(|e| io("copy", &segment.path, e))?;
            files += 1;
            bytes += len;
            if segment.len.is_none() {
                // The index is a cache, rebuilt when missing: a copy that
                // fails (none was written, or it is being rewritten) is
                // left out.
                let name = segment_file_name(segment.base, INDEX_SUFFIX);
                let (index, to) = (self.topic.dir().join(&name), dest.join(&name));
                let copied = storage.file_len(&index).and_then(|len| storage.copy_file(&index, &to, len).map(|()| len));
                match copied {
                    Ok(len) => {
                        files += 1;
                        bytes += len;
                    }
                    Err(_) if storage.exists(&to) => storage.remove_file(&to).map_err(|e| io("remove", &to, e))?,
                    Err(_) => {}
                }
            }
        }
        let path = dest.join(CHECKPOINT_FILE);
        let (mut checkpoint, _) = SlotFile::<Checkpoint>::open(storage, &path).map_err(super::recovery::slot_fault)?;
        let mark = CleanMark { next_offset: self.next_offset, end: self.active_end as u32 };
        checkpoint.write(Checkpoint { recovery_point: self.active_base, clean: Some(mark) })?;
        files += 1;
        bytes += SLOT_FILE_BYTES as u64;
        Ok((files, bytes))
    }
}

impl Drop for LogCut {
    fn drop(&mut self) {
        self.topic.retention_pins.fetch_sub(1, Ordering::SeqCst);
    }
}
