//! A topic: appending frames (one writer at a time, under the append lock),
//! reading by offset, rolling and sealing segments, durability with group
//! commit, retention, and a clean close.
//!
//! Locks, always taken in this order: `flush`, then `append`, then
//! `segments`. The append lock is held only to reserve, write and publish a
//! frame (and to roll); syncing happens under `flush` alone, so publishers
//! keep appending while a sync is in flight.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use super::clock::Clock;
use super::commit::CommitSlot;
use super::config::{Durability, TopicConfig};
use super::doorbell::Doorbell;
use super::format::*;
use super::record::{Message, Offset, OpenFrame, Record, encode_entry_parts, plain_entry_bytes, seal_frame};
use super::recovery::RecoveryReport;
use super::segment::{IndexEntry, Segment, encode_index};
use super::slots::{Checkpoint, CleanMark, SlotFile};
use crate::error::{Corruption, IoError, PublishError, ReadError};
use crate::storage::Storage;

/// `Slot::bytes` before anyone asked for it.
pub(crate) const BYTES_UNKNOWN: u64 = u64::MAX;

/// Space is allocated for a segment in steps of this many bytes.
pub(crate) const ALLOCATE_STEP_BYTES: usize = 4 << 20;

/// What a topic holds, from [`Topic::info`](crate::Topic::info).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
    /// Its configuration.
    pub config: TopicConfig,
    /// The oldest offset still retained.
    pub oldest: Offset,
    /// The offset the next publish gets (the number of records ever published).
    pub next: Offset,
    /// Records below this offset are known to be on disk.
    pub durable: Offset,
    /// Number of segment files.
    pub segments: usize,
    /// Bytes of data in them.
    pub bytes: u64,
}

/// A segment in the topic's map: sealed ones are mapped on first use.
#[derive(Debug)]
pub(crate) struct Slot {
    pub base: u64,
    pub path: PathBuf,
    /// Bytes of data of a sealed segment (its file length until it is
    /// loaded; `BYTES_UNKNOWN` until first asked, so that opening a topic
    /// does not stat every segment). The active segment's is its end.
    pub bytes: AtomicU64,
    pub loaded: Mutex<Option<Arc<Segment>>>,
}

/// The writer's state, under the append lock.
#[derive(Debug)]
pub(crate) struct Appender {
    pub seg: Arc<Segment>,
    /// Where the next frame goes (== `seg.end()`).
    pub position: usize,
    /// Bytes of the file with space allocated.
    pub allocated: usize,
    pub next_offset: u64,
    pub last_indexed: Option<usize>,
    /// Sealed segments not yet synced, oldest first.
    pub unsynced: Vec<Arc<Segment>>,
}

/// The sync state, under the flush lock.
#[derive(Debug)]
pub(crate) struct FlushState {
    pub checkpoint: SlotFile<Checkpoint>,
    /// Segment and position up to which bytes were flushed.
    pub segment_base: u64,
    pub flushed_to: usize,
    pub last_flush: Instant,
}

#[derive(Debug)]
///
/// Its fields are the log's own (`pub(super)`); the layers above read it
/// through the accessors below.
pub(crate) struct TopicLog {
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) config: TopicConfig,
    pub(super) storage: Arc<dyn Storage>,
    /// The clocks the queues on this topic read (the storage's).
    clock: Clock,
    pub(super) append: Mutex<Appender>,
    pub(super) flush: Mutex<FlushState>,
    /// Never empty once the topic is open: retention keeps the last segment.
    pub(super) segments: RwLock<BTreeMap<u64, Arc<Slot>>>,
    /// Offset after the last published record; readers see records below
    /// it, and caught-up subscribers wait on it.
    pub(super) committed: Doorbell,
    /// Records below this offset are durable; tasks waiting for a `Sync`
    /// publish to be durable wait on it (`publish.rs`). Raised under `flush`.
    pub(super) durable: Doorbell,
    /// The highest end a task asked to be made durable, and how it asks the
    /// engine's flusher to sync (`None`: no flusher; the task syncs itself).
    pub(super) sync_wanted: AtomicU64,
    sync_requester: OnceLock<SyncRequester>,
    /// Why the last sync failed, for the tasks that waited on it.
    sync_failure: Mutex<Option<PublishError>>,
    /// Consumer-group offset files with a task's commit to write
    /// (`commit.rs`), for the flusher.
    pending_commits: Mutex<Vec<Arc<CommitSlot>>>,
    /// A task waits for a worker group's journal sync: the flusher's next
    /// pass looks at the groups (only then, so that it holds none of them
    /// when nobody asked).
    group_sync_wanted: AtomicBool,
    /// Base of the first segment not known to be synced.
    pub(super) recovery_point: AtomicU64,
    /// An I/O error left the tail in doubt: no more writes.
    poisoned: AtomicBool,
    /// The engine closed the topic ([`TopicLog::close`]).
    closed: AtomicBool,
    /// The topic was deleted ([`TopicLog::delete_with`]).
    deleted: AtomicBool,
    /// Groups with a live subscription.
    pub(super) groups: Mutex<HashSet<String>>,
    /// Held (read) by consumer-group commits while they write; a backup's
    /// cut holds it (write) to stop them (`backup.rs`).
    pub(super) commits: RwLock<()>,
    /// Backups copying the segments: retention deletes none while any does.
    pub(super) retention_pins: AtomicU64,
    /// What opening the topic found.
    pub(super) recovery: RecoveryReport,
}

/// How a topic asks the engine's flusher to sync it.
struct SyncRequester(Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for SyncRequester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncRequester")
    }
}

/// What recovery hands over to build a topic's log around
/// ([`TopicLog::new`]).
#[derive(Debug)]
pub(crate) struct Recovered {
    /// The checkpoint, already marked unclean (rule 4).
    pub checkpoint: SlotFile<Checkpoint>,
    /// Base offsets of the segment files, ascending; the last is `active`'s.
    pub bases: Vec<u64>,
    /// The last segment, scanned: its end is where the next frame goes.
    pub active: Segment,
    /// Bytes of the active segment's file with space allocated.
    pub allocated: usize,
    pub report: RecoveryReport,
}

impl TopicLog {
    /// The topic's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The topic's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The topic's configuration.
    pub(crate) fn config(&self) -> &TopicConfig {
        &self.config
    }

    /// The storage its files are on.
    pub(crate) fn storage(&self) -> &dyn Storage {
        &*self.storage
    }

    /// The offset after the last published record, and parking until it
    /// moves.
    pub(crate) fn committed(&self) -> &Doorbell {
        &self.committed
    }

    /// The clocks the queues on this topic read: the system's, or a
    /// simulated disk's (`log/clock.rs`).
    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    /// What opening the topic found.
    pub(crate) fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The oldest offset still retained: the first segment's base.
    pub(crate) fn oldest(&self) -> u64 {
        oldest_in(&self.segments.read())
    }

    /// Whether the topic was deleted: its directory may already belong to a
    /// new topic of the same name. Set under the flush and append locks, so
    /// a check under either is final.
    #[inline]
    pub(crate) fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Whether the engine closed the topic: its files may already belong to
    /// another engine.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether an I/O error left the tail in doubt (no more writes).
    #[inline]
    pub(super) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Deletes the topic: `rename` (which moves its directory away) runs
    /// under the flush and append locks, so no publish, sync or retention
    /// pass touches the directory after it, when the name may belong to a
    /// new topic; if it succeeds the topic is marked deleted, and waiting
    /// subscribers and workers are woken to see it.
    pub(crate) fn delete_with<E>(&self, rename: impl FnOnce() -> Result<(), E>) -> Result<(), E> {
        {
            let _flush = self.flush.lock();
            let _append = self.append.lock();
            rename()?;
            self.deleted.store(true, Ordering::Release);
        }
        self.wake_durability_waiters();
        Ok(())
    }

    /// A topic's log around what recovery found: the sealed segments are
    /// mapped on first use, the active one is ready to append to.
    pub(crate) fn new(
        name: String,
        dir: PathBuf,
        config: TopicConfig,
        storage: Arc<dyn Storage>,
        recovered: Recovered,
    ) -> TopicLog {
        let Recovered { checkpoint, bases, active, allocated, report } = recovered;
        debug_assert_eq!(bases.last(), Some(&active.base), "the active segment is the last one");
        let next = active.next_offset();
        let position = active.end();
        let active = Arc::new(active);
        let mut segments = BTreeMap::new();
        for base in bases {
            let path = dir.join(segment_file_name(base, SEGMENT_SUFFIX));
            let (bytes, loaded) =
                if base == active.base { (position as u64, Some(active.clone())) } else { (BYTES_UNKNOWN, None) };
            segments
                .insert(base, Arc::new(Slot { base, path, bytes: AtomicU64::new(bytes), loaded: Mutex::new(loaded) }));
        }
        let last_indexed = active.index().last().map(|e| e.position as usize);
        let appender = Appender {
            seg: active.clone(),
            position,
            allocated: allocated.max(position),
            next_offset: next,
            last_indexed,
            unsynced: Vec::new(),
        };
        let flush =
            FlushState { checkpoint, segment_base: active.base, flushed_to: position, last_flush: Instant::now() };
        TopicLog {
            name,
            dir,
            config,
            clock: Clock::of(&*storage),
            storage,
            append: Mutex::new(appender),
            flush: Mutex::new(flush),
            segments: RwLock::new(segments),
            committed: Doorbell::new(next),
            durable: Doorbell::new(next),
            sync_wanted: AtomicU64::new(0),
            sync_requester: OnceLock::new(),
            sync_failure: Mutex::new(None),
            pending_commits: Mutex::new(Vec::new()),
            group_sync_wanted: AtomicBool::new(false),
            recovery_point: AtomicU64::new(active.base),
            poisoned: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            deleted: AtomicBool::new(false),
            groups: Mutex::new(HashSet::new()),
            commits: RwLock::new(()),
            retention_pins: AtomicU64::new(0),
            recovery: report,
        }
    }

    /// Publishes one payload; returns its offset once it is as durable as
    /// the topic's [`Durability`] promises.
    pub(crate) fn publish(&self, payload: impl AsRef<[u8]>) -> Result<Offset, PublishError> {
        let payload = payload.as_ref();
        let entry_bytes = plain_entry_bytes(payload.len());
        self.check_message_size(entry_bytes)?;
        let frame_bytes = FRAME_HEADER_BYTES + entry_bytes;
        let first =
            self.append(frame_bytes, 1, |entries| encode_entry_parts(entries, &[], 0, std::iter::empty(), payload))?;
        self.made_durable(first + 1)?;
        Ok(Offset::new(first))
    }

    /// Publishes a message with a key and headers.
    pub(crate) fn publish_message(&self, message: Message) -> Result<Offset, PublishError> {
        let entry_bytes = message.entry_bytes()?;
        self.check_message_size(entry_bytes)?;
        let first = self.append(FRAME_HEADER_BYTES + entry_bytes, 1, |entries| message.encode_entry(entries))?;
        self.made_durable(first + 1)?;
        Ok(Offset::new(first))
    }

    /// Publishes messages atomically, as one frame: after a crash either all
    /// of them are in the log, with consecutive offsets, or none is. Returns
    /// their offsets. At most 65,536 messages, and the batch must fit in one
    /// segment.
    pub(crate) fn publish_batch<I>(&self, messages: I) -> Result<std::ops::Range<Offset>, PublishError>
    where
        I: IntoIterator,
        I::Item: Into<Message>,
    {
        let (first, end) = self.append_batch(messages.into_iter().map(Into::into).collect())?;
        self.made_durable(end)?;
        Ok(Offset::new(first)..Offset::new(end))
    }

    /// Appends `messages` as one frame and returns their offsets, without
    /// waiting for durability.
    pub(super) fn append_batch(&self, messages: Vec<Message>) -> Result<(u64, u64), PublishError> {
        if messages.is_empty() {
            return Err(PublishError::InvalidMessage { reason: "a batch needs at least one message" });
        }
        if messages.len() > FRAME_RECORDS_MAX {
            return Err(PublishError::InvalidMessage { reason: "a batch holds at most 65536 messages" });
        }
        let mut sizes = Vec::with_capacity(messages.len());
        for message in &messages {
            let bytes = message.entry_bytes()?;
            self.check_message_size(bytes)?;
            sizes.push(bytes);
        }
        let frame_bytes = FRAME_HEADER_BYTES + sizes.iter().sum::<usize>();
        let frame_max = self.config.segment_bytes as usize - SEGMENT_HEADER_BYTES;
        if frame_bytes > frame_max {
            return Err(PublishError::TooLarge { bytes: frame_bytes, max: frame_max });
        }
        let first = self.append(frame_bytes, messages.len() as u32, |mut entries| {
            for (message, bytes) in messages.iter().zip(&sizes) {
                let (entry, rest) = entries.split_at_mut(*bytes);
                message.encode_entry(entry);
                entries = rest;
            }
        })?;
        Ok((first, first + messages.len() as u64))
    }

    /// The record at `offset`.
    pub(crate) fn read(&self, offset: Offset) -> Result<Record, ReadError> {
        let offset = offset.get();
        let next = self.committed.load();
        if offset >= next {
            return Err(ReadError::NotWritten { requested: offset, next });
        }
        let seg = self.segment_for(offset)?;
        let (mut position, mut first) = seg.seek(offset);
        loop {
            let (info, frame) = seg.frame(position, first)?;
            if offset < info.end_offset()
                && let Some(record) = OpenFrame::at_offset(frame, info, offset).next_record()
            {
                return Ok(record);
            }
            position += info.len;
            first = info.end_offset();
        }
    }

    /// Offsets, sizes and configuration.
    pub(crate) fn info(&self) -> TopicInfo {
        let segments = self.segments.read();
        let oldest = oldest_in(&segments);
        let bytes = self.total_bytes(&segments);
        TopicInfo {
            name: self.name.clone(),
            config: self.config,
            oldest: Offset::new(oldest),
            next: Offset::new(self.committed.load()),
            durable: Offset::new(self.durable.load()),
            segments: segments.len(),
            bytes,
        }
    }

    /// Checks the CRC and structure of every record in every segment. Returns
    /// the first corruption found, naming the file and position.
    pub(crate) fn verify(&self) -> Result<u64, ReadError> {
        // One snapshot of where the log ends, taken under the append lock, so
        // that concurrent publishes and rolls are not mistaken for damage.
        let (bases, committed, active_end) = {
            let a = self.append.lock();
            let bases: Vec<u64> = self.segments.read().keys().copied().collect();
            (bases, a.next_offset, a.position)
        };
        let mut records = 0;
        for (i, base) in bases.iter().enumerate() {
            let seg = match self.load_slot(*base) {
                Ok(seg) => seg,
                Err(ReadError::NotRetained { .. }) => continue,
                Err(e) => return Err(e),
            };
            let end = if i + 1 == bases.len() { active_end } else { seg.end() };
            let scan = seg.scan(SEGMENT_HEADER_BYTES, end, seg.base, Vec::new());
            // Every segment is trusted here, the active one up to the end
            // of the published records: any invalid frame is corruption.
            let expected_next = bases.get(i + 1).copied().unwrap_or(committed);
            if let Some((position, reason)) = scan.frames().ends_early(Some(expected_next)) {
                return Err(ReadError::Corrupt(Corruption { file: seg.path.clone(), position, reason }));
            }
            records += scan.next_offset - seg.base;
        }
        Ok(records)
    }

    fn check_message_size(&self, entry_bytes: usize) -> Result<(), PublishError> {
        if entry_bytes - super::format::ENTRY_HEADER_BYTES > self.config.max_message_bytes {
            return Err(PublishError::TooLarge {
                bytes: entry_bytes - super::format::ENTRY_HEADER_BYTES,
                max: self.config.max_message_bytes,
            });
        }
        Ok(())
    }

    #[inline]
    fn writable(&self) -> Result<(), PublishError> {
        if self.is_deleted() {
            Err(PublishError::Deleted)
        } else if self.is_closed() {
            Err(PublishError::Closed)
        } else if self.is_poisoned() {
            Err(PublishError::PreviousIo)
        } else {
            Ok(())
        }
    }

    /// Appends one frame of `frame_bytes` holding `count` records; `write`
    /// fills in the entries (the frame minus its header). Returns the first
    /// record's offset once readers can see the frame.
    #[inline]
    fn append(&self, frame_bytes: usize, count: u32, write: impl FnOnce(&mut [u8])) -> Result<u64, PublishError> {
        let mut a = self.append.lock();
        self.writable()?;
        if a.next_offset > u64::MAX - u64::from(count) {
            return Err(PublishError::InvalidMessage { reason: "the topic has used every offset" });
        }
        if a.position + frame_bytes > a.allocated {
            self.make_room(&mut a, frame_bytes)?;
        }
        let first = a.next_offset;
        let timestamp_us = now_us();
        {
            // SAFETY: `[position, position + frame_bytes)` is allocated
            // (make_room) and at or after the segment's published end, so no
            // reader looks at it; the append lock makes us its only writer.
            let frame = unsafe { a.seg.map().slice_mut(a.position, frame_bytes) };
            write(&mut frame[FRAME_HEADER_BYTES..]);
            seal_frame(frame, count, first, timestamp_us);
        }
        if a.last_indexed.is_none_or(|at| a.position - at >= INDEX_INTERVAL_BYTES) {
            let entry = IndexEntry { relative_offset: (first - a.seg.base) as u32, position: a.position as u32 };
            a.seg.push_index(entry);
            a.last_indexed = Some(a.position);
        }
        a.position += frame_bytes;
        a.next_offset += u64::from(count);
        a.seg.publish(a.position, a.next_offset, timestamp_us);
        debug_assert_eq!(a.seg.end(), a.position, "the appender's position is the active segment's end");
        debug_assert!(a.position <= a.allocated, "a frame is written only where space was allocated");
        // Release: a reader that sees the new offset sees the frame. Set under
        // the append lock so that the committed offset only grows.
        self.committed.set(a.next_offset);
        drop(a);
        self.committed.notify();
        Ok(first)
    }

    /// Allocates more of the active segment, or rolls to a new one when the
    /// frame does not fit. Nothing is written if this fails.
    #[cold]
    fn make_room(&self, a: &mut Appender, frame_bytes: usize) -> Result<(), PublishError> {
        let capacity = self.config.segment_bytes as usize;
        // A frame that would not fit even an empty segment must not roll
        // (that would leave an empty segment, or clash with its own name).
        let frame_max = capacity - SEGMENT_HEADER_BYTES;
        if frame_bytes > frame_max {
            return Err(PublishError::TooLarge { bytes: frame_bytes, max: frame_max });
        }
        if a.position + frame_bytes > capacity {
            self.roll(a)?;
        }
        if a.position + frame_bytes > a.allocated {
            let want = (a.position + frame_bytes).next_multiple_of(ALLOCATE_STEP_BYTES).min(capacity);
            a.seg.map().file().allocate(want as u64).map_err(|e| IoError::new("allocate", &a.seg.path, e))?;
            a.seg.map().file().prefault(a.allocated, want - a.allocated);
            a.allocated = want;
        }
        Ok(())
    }

    /// Seals the active segment and starts the next one.
    fn roll(&self, a: &mut Appender) -> Result<(), PublishError> {
        let capacity = self.config.segment_bytes as usize;
        let base = a.next_offset;
        let first = capacity.min(ALLOCATE_STEP_BYTES);
        let seg = Segment::create(&*self.storage, &self.dir, base, capacity, first)?;
        if let Err(e) = self.storage.sync_dir(&self.dir) {
            let _ = self.storage.remove_file(&seg.path);
            return Err(IoError::new("sync", &self.dir, e).into());
        }
        let seg = Arc::new(seg);
        let slot = Arc::new(Slot {
            base,
            path: seg.path.clone(),
            bytes: AtomicU64::new(SEGMENT_HEADER_BYTES as u64),
            loaded: Mutex::new(Some(seg.clone())),
        });
        let old = std::mem::replace(&mut a.seg, seg);
        if let Some(old_slot) = self.segments.read().get(&old.base) {
            old_slot.bytes.store(a.position as u64, Ordering::Relaxed);
        }
        self.segments.write().insert(base, slot);
        a.unsynced.push(old);
        a.position = SEGMENT_HEADER_BYTES;
        a.allocated = first;
        a.last_indexed = None;
        Ok(())
    }

    /// Returns once records below `end` are as durable as the topic promises.
    #[inline]
    fn made_durable(&self, end: u64) -> Result<(), PublishError> {
        match self.config.durability {
            Durability::Sync if self.durable.load() < end => self.sync_through(end),
            _ => Ok(()),
        }
    }

    /// Group commit: the first caller syncs everything published so far;
    /// callers that queued behind it find their records already durable.
    pub(super) fn sync_through(&self, end: u64) -> Result<(), PublishError> {
        let mut flush = self.flush.lock();
        if self.durable.load() >= end {
            return Ok(());
        }
        self.sync_locked(&mut flush, true)
    }

    /// Syncs sealed segments, and with `active` the active one too.
    pub(crate) fn sync(&self, active: bool) -> Result<(), PublishError> {
        let mut flush = self.flush.lock();
        self.sync_locked(&mut flush, active)
    }

    fn sync_locked(&self, flush: &mut FlushState, active: bool) -> Result<(), PublishError> {
        // Checked under `flush`, which `delete_topic` holds across its rename.
        if self.is_deleted() {
            return Err(PublishError::Deleted);
        }
        if self.is_poisoned() {
            return Err(PublishError::PreviousIo);
        }
        let result = self.sync_unpoisoned(flush, active);
        if let Err(error) = &result {
            // The tail's state on disk is unknown: refuse writes after it.
            *self.sync_failure.lock() = Some(error.clone());
            self.poisoned.store(true, Ordering::Release);
            // Tasks waiting for durability see the failure.
            self.durable.wake();
        }
        result
    }

    fn sync_unpoisoned(&self, flush: &mut FlushState, active: bool) -> Result<(), PublishError> {
        let (unsynced, seg, position, next) = {
            let a = self.append.lock();
            (a.unsynced.clone(), a.seg.clone(), a.position, a.next_offset)
        };
        for sealed in &unsynced {
            let from = if flush.segment_base == sealed.base { flush.flushed_to } else { 0 };
            let end = sealed.end();
            let file = sealed.map().file();
            let io = |op, e| PublishError::from(IoError::new(op, &sealed.path, e));
            file.flush(from, end - from).map_err(|e| io("sync", e))?;
            file.set_len(end as u64).map_err(|e| io("truncate", e))?;
            file.sync().map_err(|e| io("sync", e))?;
            // The index is a cache, rebuilt if missing: a failure to write it
            // (say, a full disk) is not an error of the log.
            let index_path = self.dir.join(segment_file_name(sealed.base, INDEX_SUFFIX));
            if self.storage.write_file(&index_path, &encode_index(sealed.base, end, &sealed.index())).is_err() {
                let _ = self.storage.remove_file(&index_path);
            }
            // The topic stops holding the sealed segment's mapping (and file
            // descriptor): readers keep theirs, and `load_slot` maps it again
            // on demand. A long log then costs descriptors and mappings only
            // for the segments in use, not for every segment ever sealed.
            if let Some(slot) = self.segments.read().get(&sealed.base) {
                slot.bytes.store(end as u64, Ordering::Relaxed);
                *slot.loaded.lock() = None;
            }
        }
        if !unsynced.is_empty() {
            self.storage.sync_dir(&self.dir).map_err(|e| IoError::new("sync", &self.dir, e))?;
            let recovery_point = seg.base;
            flush.checkpoint.write(Checkpoint { recovery_point, clean: None })?;
            self.recovery_point.store(recovery_point, Ordering::Release);
            self.append.lock().unsynced.drain(..unsynced.len());
            self.raise_durable(seg.base);
        }
        if active {
            let from = if flush.segment_base == seg.base { flush.flushed_to } else { 0 };
            seg.map().file().flush(from, position - from).map_err(|e| IoError::new("sync", &seg.path, e))?;
            flush.segment_base = seg.base;
            flush.flushed_to = position;
            self.raise_durable(next);
        }
        if active {
            // Only a sync of everything restarts the interval: syncing
            // sealed segments alone must not hold the interval flush off.
            flush.last_flush = Instant::now();
        }
        Ok(())
    }

    /// Raises the durable mark to `end` (if higher) and wakes the tasks
    /// waiting on it. Under `flush`, so the mark only grows.
    fn raise_durable(&self, end: u64) {
        if end > self.durable.load() {
            self.durable.set(end);
            self.durable.notify();
        }
    }

    /// Has `sync` run on the engine's flusher thread when a task asks for a
    /// `Sync` publish to be made durable (`request_sync`). Set once, when
    /// the engine opens the topic with a flusher thread.
    pub(crate) fn set_sync_requester(&self, request: Box<dyn Fn() + Send + Sync>) {
        let _ = self.sync_requester.set(SyncRequester(request));
    }

    /// Asks for records below `end` to be made durable by the flusher.
    /// Returns `false` if there is no flusher: the caller syncs itself.
    pub(super) fn request_sync(&self, end: u64) -> bool {
        if self.sync_requester.get().is_none() {
            return false;
        }
        self.sync_wanted.fetch_max(end, Ordering::AcqRel);
        self.request_flusher()
    }

    /// Asks the engine's flusher for a pass now (a task waits for something
    /// on this topic to be synced, such as a worker group's journal).
    /// Returns `false` if there is no flusher: the caller syncs itself.
    pub(crate) fn request_flusher(&self) -> bool {
        let Some(SyncRequester(request)) = self.sync_requester.get() else { return false };
        request();
        true
    }

    /// For the flusher: syncs what tasks asked for, if it is not durable
    /// yet, and writes the consumer-group commits they asked for. A failure
    /// poisons the topic (or fails the commit) and reaches the waiting tasks.
    pub(crate) fn sync_requested(&self) {
        let wanted = self.sync_wanted.load(Ordering::Acquire);
        if wanted > self.durable.load() && !self.is_closed() {
            let _ = self.sync_through(wanted);
        }
        let commits = std::mem::take(&mut *self.pending_commits.lock());
        for slot in commits {
            slot.write_requested(self);
        }
    }

    /// Wakes every waiter of this topic (it closed or was deleted): parked
    /// subscribers and workers, and tasks waiting for a sync or a commit.
    fn wake_durability_waiters(&self) {
        self.committed.wake();
        self.durable.wake();
        for slot in std::mem::take(&mut *self.pending_commits.lock()) {
            slot.wake();
        }
    }

    /// Asks the flusher to sync the worker groups' journals through what
    /// tasks wait for. Returns `false` if there is no flusher.
    pub(crate) fn request_group_sync(&self) -> bool {
        if !self.has_flusher() {
            return false;
        }
        self.group_sync_wanted.store(true, Ordering::Release);
        self.request_flusher()
    }

    /// For the flusher: whether a task asked for a group's journal sync since
    /// the last call.
    pub(crate) fn take_group_sync_request(&self) -> bool {
        self.group_sync_wanted.swap(false, Ordering::AcqRel)
    }

    /// Hands a task's commit on `slot` to the flusher.
    pub(super) fn queue_commit(&self, slot: Arc<CommitSlot>) {
        self.pending_commits.lock().push(slot);
    }

    /// Whether tasks' syncs and commits run on an engine's flusher thread.
    pub(crate) fn has_flusher(&self) -> bool {
        self.sync_requester.get().is_some()
    }

    /// Why the last sync failed, if one did (the topic is then poisoned).
    pub(super) fn sync_failure(&self) -> Option<PublishError> {
        self.sync_failure.lock().clone()
    }

    /// Background work: the interval flush, syncing sealed segments, and
    /// retention. Returns when it next wants to run. `after_interval_flush`
    /// runs after each interval flush of the whole topic (the engine syncs
    /// the topic's worker-group journals there).
    pub(crate) fn background(&self, after_interval_flush: impl FnOnce()) -> Option<Duration> {
        if self.is_closed() || self.is_poisoned() || self.is_deleted() {
            return None;
        }
        let has_unsynced = !self.append.lock().unsynced.is_empty();
        let wait = match self.config.durability {
            Durability::Interval(interval) => {
                let since = self.flush.lock().last_flush.elapsed();
                if since >= interval {
                    let _ = self.sync(true);
                    after_interval_flush();
                    Some(interval)
                } else {
                    if has_unsynced {
                        let _ = self.sync(false);
                    }
                    Some(interval - since)
                }
            }
            _ => {
                if has_unsynced {
                    let _ = self.sync(false);
                }
                None
            }
        };
        self.apply_retention();
        wait
    }

    /// Deletes the oldest sealed, synced segments that retention rules out.
    /// Readers positioned in them keep their mapping; new reads below the
    /// oldest retained offset get `NotRetained`.
    pub(crate) fn apply_retention(&self) {
        if self.config.retention_bytes.is_none() && self.config.retention_age.is_none() {
            return;
        }
        // Under `flush`: `delete_topic` holds it across its rename, so this
        // never deletes files of a new topic that took over the name.
        let _flush = self.flush.lock();
        if self.is_deleted() {
            return;
        }
        let recovery_point = self.recovery_point.load(Ordering::Acquire);
        let now = now_us();
        let age_us = self.config.retention_age.map(|age| u64::try_from(age.as_micros()).unwrap_or(u64::MAX));
        loop {
            let (oldest, total) = {
                let segments = self.segments.read();
                let total = self.total_bytes(&segments);
                match segments.iter().next() {
                    Some((_, slot)) if segments.len() > 1 && slot.base < recovery_point => (slot.clone(), total),
                    _ => return,
                }
            };
            let over_bytes = self.config.retention_bytes.is_some_and(|max| total > max);
            let too_old = age_us.is_some_and(|age_us| {
                let newest = match self.load_slot(oldest.base) {
                    Ok(seg) => seg.newest_us(),
                    Err(_) => return false,
                };
                newest.saturating_add(age_us) < now
            });
            if !over_bytes && !too_old {
                return;
            }
            {
                let mut segments = self.segments.write();
                // Checked under the write lock: see `TopicLog::freeze`.
                if self.retention_pinned() {
                    return;
                }
                segments.remove(&oldest.base);
            }
            let index = self.dir.join(segment_file_name(oldest.base, INDEX_SUFFIX));
            let removed = self.storage.remove_file(&oldest.path);
            let _ = self.storage.remove_file(&index);
            let _ = self.storage.sync_dir(&self.dir);
            if removed.is_err() {
                return;
            }
        }
    }

    /// Bytes of data in all segments: sealed ones as recorded (a `stat` the
    /// first time), the active one up to its published end.
    pub(crate) fn total_bytes(&self, segments: &BTreeMap<u64, Arc<Slot>>) -> u64 {
        let active = segments.keys().next_back().copied();
        segments
            .values()
            .map(|slot| {
                if Some(slot.base) == active
                    && let Some(seg) = &*slot.loaded.lock()
                {
                    return seg.end() as u64;
                }
                let bytes = slot.bytes.load(Ordering::Relaxed);
                if bytes != BYTES_UNKNOWN {
                    return bytes;
                }
                let bytes = self.storage.file_len(&slot.path).unwrap_or(0);
                slot.bytes.store(bytes, Ordering::Relaxed);
                bytes
            })
            .sum()
    }

    /// The segment holding `offset` (which is below `committed`).
    pub(crate) fn segment_for(&self, offset: u64) -> Result<Arc<Segment>, ReadError> {
        let base = {
            let segments = self.segments.read();
            match segments.range(..=offset).next_back() {
                Some((base, _)) => *base,
                None => {
                    let oldest = oldest_in(&segments);
                    return Err(ReadError::NotRetained { requested: offset, oldest });
                }
            }
        };
        self.load_slot(base).map_err(|e| match e {
            ReadError::NotRetained { oldest, .. } => ReadError::NotRetained { requested: offset, oldest },
            e => e,
        })
    }

    /// The segment at `base`, mapping it (and reading or rebuilding its
    /// index) on first use.
    pub(crate) fn load_slot(&self, base: u64) -> Result<Arc<Segment>, ReadError> {
        if self.is_deleted() {
            return Err(ReadError::Deleted);
        }
        let (slot, next_base) = {
            let segments = self.segments.read();
            let Some(slot) = segments.get(&base) else {
                let oldest = oldest_in(&segments);
                return Err(ReadError::NotRetained { requested: base, oldest });
            };
            let after = (std::ops::Bound::Excluded(base), std::ops::Bound::Unbounded);
            (slot.clone(), segments.range(after).next().map(|(b, _)| *b))
        };
        let mut loaded = slot.loaded.lock();
        if let Some(seg) = &*loaded {
            return Ok(seg.clone());
        }
        // Retention may have deleted the file since the lookup above.
        let gone = |e: ReadError| match e {
            ReadError::Io(io)
                if io.kind() == std::io::ErrorKind::NotFound && !self.segments.read().contains_key(&base) =>
            {
                let oldest = self.oldest();
                ReadError::NotRetained { requested: base, oldest }
            }
            e => e,
        };
        let file_len =
            self.storage.file_len(&slot.path).map_err(|e| gone(ReadError::Io(IoError::new("stat", &slot.path, e))))?
                as usize;
        let (seg, file_len) = Segment::open(&*self.storage, slot.path.clone(), base, file_len.max(1))
            .map_err(|fault| gone(super::recovery::read_fault(fault)))?;
        let index_path = self.dir.join(segment_file_name(base, INDEX_SUFFIX));
        let stored = self
            .storage
            .read_file(&index_path)
            .ok()
            .and_then(|bytes| super::segment::decode_index(&bytes, base, file_len));
        // An index file is a cache and may be stale (written before the
        // segment grew, then a crash): trust it only if the frames from its
        // last entry end exactly at its end, where the next segment begins.
        let checked = stored.and_then(|(end, index)| {
            let last = *index.last()?;
            let from = base + u64::from(last.relative_offset);
            let tail = seg.scan(last.position as usize, file_len, from, Vec::new());
            let agrees = tail.end == end && next_base.is_none_or(|next| tail.next_offset == next);
            agrees.then_some(super::segment::Scan {
                end,
                next_offset: tail.next_offset,
                newest_us: tail.newest_us,
                index,
                fault: None,
            })
        });
        match checked {
            Some(scan) => seg.adopt(&scan),
            None => {
                let scan = seg.scan(SEGMENT_HEADER_BYTES, file_len, base, Vec::new());
                seg.adopt(&scan);
            }
        }
        let seg = Arc::new(seg);
        *loaded = Some(seg.clone());
        Ok(seg)
    }

    /// Marks the topic closed, syncs it, and writes a clean checkpoint.
    /// `before_sync` runs once the topic is closed to writers, before the
    /// final sync (the engine syncs the worker-group journals there).
    pub(crate) fn close(&self, before_sync: impl FnOnce()) {
        let mut flush = self.flush.lock();
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        before_sync();
        let healthy = !self.is_deleted() && !self.is_poisoned();
        if healthy && self.sync_locked(&mut flush, true).is_ok() {
            let a = self.append.lock();
            let mark = CleanMark { next_offset: a.next_offset, end: a.position as u32 };
            let clean = Checkpoint { recovery_point: a.seg.base, clean: Some(mark) };
            let _ = flush.checkpoint.write(clean);
        }
        drop(flush);
        // Whatever happened above: parked subscribers and workers leave, and
        // tasks waiting for durability see the mark or the closed topic.
        self.wake_durability_waiters();
    }
}

/// The oldest retained offset of a topic whose segments are `segments`: the
/// first one's base (0 before the first segment exists).
fn oldest_in(segments: &BTreeMap<u64, Arc<Slot>>) -> u64 {
    segments.keys().next().copied().unwrap_or(0)
}
