//! A worker group's delivery state on disk (layout in `docs/FORMAT.md`): a
//! state file, rewritten whole and renamed into place, and a journal of
//! fixed-size entries appended through a mapping after it. Opening a group
//! reads both and writes them out again as a new state file and an empty
//! journal (a compaction); so does a full journal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::ranges::RangeSet;
use crate::error::{Corruption, IoError, TopicError};
use crate::log::RecoveryMode;
use crate::log::format::*;
use crate::log::names::check_group_name;
use crate::log::slots::write_file_atomic;
use crate::storage::{Mapped, Storage};

/// What is known of an unsettled message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    /// Deliveries so far.
    pub attempts: u32,
    /// Not to be delivered before this time (µs since the epoch; 0 = no delay).
    pub retry_at_us: u64,
    /// Rejected: to be dead-lettered, never delivered again.
    pub rejected: bool,
}

/// How a message was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    Acked = 1,
    DeadLettered = 2,
}

/// One journal entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    Delivered { offset: u64, attempt: u32 },
    Settled { offset: u64, how: Settled },
    Nacked { offset: u64, retry_at_us: u64 },
    Rejected { offset: u64 },
}

/// A group's durable state: what the state file and journal say together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Persisted {
    /// The journal generation that continues this state.
    pub generation: u64,
    /// Every offset below it is settled.
    pub low: u64,
    /// Settled offsets above `low`.
    pub settled: RangeSet,
    /// Attempts and delays of unsettled messages at or above `low`.
    pub facts: BTreeMap<u64, Facts>,
}

impl Persisted {
    /// Applies one journal entry.
    pub fn apply(&mut self, entry: Entry) {
        match entry {
            Entry::Delivered { offset, attempt } => {
                if self.is_open(offset) {
                    let facts = self.facts.entry(offset).or_default();
                    facts.attempts = facts.attempts.max(attempt);
                }
            }
            Entry::Nacked { offset, retry_at_us } => {
                if self.is_open(offset) {
                    self.facts.entry(offset).or_default().retry_at_us = retry_at_us;
                }
            }
            Entry::Rejected { offset } => {
                if self.is_open(offset) {
                    self.facts.entry(offset).or_default().rejected = true;
                }
            }
            Entry::Settled { offset, .. } => self.settle(offset),
        }
    }

    /// Whether `offset` is not settled.
    pub fn is_open(&self, offset: u64) -> bool {
        offset >= self.low && !self.settled.contains(offset)
    }

    /// Marks `[start, end)` settled.
    pub fn settle_range(&mut self, start: u64, end: u64) {
        let start = start.max(self.low);
        if start >= end {
            return;
        }
        self.settled.insert(start, end);
        if let Some(end) = self.settled.take_starting_at(self.low) {
            self.low = end;
        }
        let settled: Vec<u64> = self.facts.range(start..end).map(|(&o, _)| o).collect();
        for o in settled {
            self.facts.remove(&o);
        }
        let below: Vec<u64> = self.facts.range(..self.low).map(|(&o, _)| o).collect();
        for o in below {
            self.facts.remove(&o);
        }
    }

    pub fn settle(&mut self, offset: u64) {
        if offset == self.low && offset < u64::MAX {
            // The common case, in-order settling: move the mark, and over
            // the range of later settled offsets it now touches.
            self.low = self.settled.take_starting_at(offset + 1).unwrap_or(offset + 1);
            while self.facts.first_key_value().is_some_and(|(&o, _)| o < self.low) {
                self.facts.pop_first();
            }
            return;
        }
        self.settle_range(offset, offset.saturating_add(1));
    }

    /// Forgets everything at or above `end`: the log was cut there by
    /// recovery, and those offsets will be given to new messages.
    pub fn clamp(&mut self, end: u64) {
        self.low = self.low.min(end);
        self.settled.truncate(end);
        self.facts.retain(|&o, _| o < end);
    }

    /// Encodes the state file.
    pub fn encode(&self) -> Vec<u8> {
        let ranges = self.settled.ranges();
        let mut bytes =
            vec![0; QSTATE_HEADER_BYTES + ranges * QSTATE_RANGE_BYTES + self.facts.len() * QSTATE_FACT_BYTES];
        bytes[..8].copy_from_slice(&QSTATE_MAGIC);
        put_u32(&mut bytes, QSTATE_VERSION_AT, FORMAT_VERSION);
        put_u64(&mut bytes, QSTATE_GENERATION_AT, self.generation);
        put_u64(&mut bytes, QSTATE_LOW_AT, self.low);
        put_u32(&mut bytes, QSTATE_RANGES_AT, ranges as u32);
        put_u32(&mut bytes, QSTATE_FACTS_AT, self.facts.len() as u32);
        let mut at = QSTATE_HEADER_BYTES;
        for (start, end) in self.settled.iter() {
            put_u64(&mut bytes, at, start);
            put_u64(&mut bytes, at + 8, end);
            at += QSTATE_RANGE_BYTES;
        }
        for (&offset, facts) in &self.facts {
            put_u64(&mut bytes, at, offset);
            put_u32(&mut bytes, at + 8, facts.attempts);
            put_u32(&mut bytes, at + 12, u32::from(facts.rejected));
            put_u64(&mut bytes, at + 16, facts.retry_at_us);
            at += QSTATE_FACT_BYTES;
        }
        let crc = crc(&bytes[QSTATE_CRC_FROM..]);
        put_u32(&mut bytes, QSTATE_CRC_AT, crc);
        bytes
    }

    /// Decodes a state file; `Err(Some(v))` for a newer version `v`.
    pub fn decode(bytes: &[u8]) -> Result<Persisted, Option<u32>> {
        if bytes.len() < QSTATE_HEADER_BYTES || bytes[..8] != QSTATE_MAGIC {
            return Err(None);
        }
        let version = u32_at(bytes, QSTATE_VERSION_AT);
        if version > FORMAT_VERSION {
            return Err(Some(version));
        }
        if version != FORMAT_VERSION || crc(&bytes[QSTATE_CRC_FROM..]) != u32_at(bytes, QSTATE_CRC_AT) {
            return Err(None);
        }
        let ranges = u32_at(bytes, QSTATE_RANGES_AT) as usize;
        let facts = u32_at(bytes, QSTATE_FACTS_AT) as usize;
        let expected = ranges
            .checked_mul(QSTATE_RANGE_BYTES)
            .and_then(|r| facts.checked_mul(QSTATE_FACT_BYTES).and_then(|f| r.checked_add(f)))
            .and_then(|body| body.checked_add(QSTATE_HEADER_BYTES));
        if expected != Some(bytes.len()) {
            return Err(None);
        }
        let mut state = Persisted {
            generation: u64_at(bytes, QSTATE_GENERATION_AT),
            low: u64_at(bytes, QSTATE_LOW_AT),
            ..Persisted::default()
        };
        let mut at = QSTATE_HEADER_BYTES;
        let mut last_end = state.low;
        for _ in 0..ranges {
            let (start, end) = (u64_at(bytes, at), u64_at(bytes, at + 8));
            // Ranges are sorted, above `low`, and apart: anything else is forged.
            if start <= last_end || end <= start {
                return Err(None);
            }
            state.settled.insert(start, end);
            last_end = end;
            at += QSTATE_RANGE_BYTES;
        }
        for _ in 0..facts {
            let offset = u64_at(bytes, at);
            let flags = u32_at(bytes, at + 12);
            let facts = Facts {
                attempts: u32_at(bytes, at + 8),
                retry_at_us: u64_at(bytes, at + 16),
                rejected: flags & 1 == 1,
            };
            if flags > 1 || !state.is_open(offset) || state.facts.insert(offset, facts).is_some() {
                return Err(None);
            }
            at += QSTATE_FACT_BYTES;
        }
        Ok(state)
    }
}

impl Entry {
    fn encode(self, slot: &mut [u8], generation: u64) {
        let (kind, offset, value) = match self {
            Entry::Delivered { offset, attempt } => (QJOURNAL_DELIVERED, offset, u64::from(attempt)),
            Entry::Settled { offset, how } => (QJOURNAL_SETTLED, offset, how as u64),
            Entry::Nacked { offset, retry_at_us } => (QJOURNAL_NACKED, offset, retry_at_us),
            Entry::Rejected { offset } => (QJOURNAL_REJECTED, offset, 0),
        };
        slot[QJOURNAL_KIND_AT] = kind;
        slot[QJOURNAL_KIND_AT + 1..QJOURNAL_GENERATION_AT].fill(0);
        put_u64(slot, QJOURNAL_GENERATION_AT, generation);
        put_u64(slot, QJOURNAL_OFFSET_AT, offset);
        put_u64(slot, QJOURNAL_VALUE_AT, value);
        let crc = crc(&slot[QJOURNAL_CRC_FROM..QJOURNAL_ENTRY_BYTES]);
        put_u32(slot, QJOURNAL_CRC_AT, crc);
    }

    fn decode(slot: &[u8], generation: u64) -> Option<Entry> {
        if crc(&slot[QJOURNAL_CRC_FROM..QJOURNAL_ENTRY_BYTES]) != u32_at(slot, QJOURNAL_CRC_AT)
            || u64_at(slot, QJOURNAL_GENERATION_AT) != generation
        {
            return None;
        }
        let offset = u64_at(slot, QJOURNAL_OFFSET_AT);
        let value = u64_at(slot, QJOURNAL_VALUE_AT);
        match slot[QJOURNAL_KIND_AT] {
            QJOURNAL_DELIVERED => Some(Entry::Delivered { offset, attempt: u32::try_from(value).ok()? }),
            QJOURNAL_SETTLED => match value {
                1 => Some(Entry::Settled { offset, how: Settled::Acked }),
                2 => Some(Entry::Settled { offset, how: Settled::DeadLettered }),
                _ => None,
            },
            QJOURNAL_NACKED => Some(Entry::Nacked { offset, retry_at_us: value }),
            QJOURNAL_REJECTED if value == 0 => Some(Entry::Rejected { offset }),
            _ => None,
        }
    }
}

/// Applies the journal `bytes` of `state.generation` to `state`: every entry
/// up to the first that is not valid (a torn or never-written one).
pub(crate) fn replay(bytes: &[u8], state: &mut Persisted) {
    let header_ok = bytes.len() >= QJOURNAL_HEADER_BYTES
        && bytes[..8] == QJOURNAL_MAGIC
        && u32_at(bytes, QJOURNAL_VERSION_AT) == FORMAT_VERSION
        && u64_at(bytes, QJOURNAL_HEADER_GENERATION_AT) == state.generation
        && crc(&bytes[..QJOURNAL_HEADER_CRC_AT]) == u32_at(bytes, QJOURNAL_HEADER_CRC_AT);
    if !header_ok {
        return;
    }
    for slot in bytes[QJOURNAL_HEADER_BYTES..].chunks_exact(QJOURNAL_ENTRY_BYTES) {
        match Entry::decode(slot, state.generation) {
            Some(entry) => state.apply(entry),
            None => return,
        }
    }
}

/// Space is allocated for the journal in steps of this many bytes.
const JOURNAL_STEP_BYTES: usize = 64 << 10;

/// The open journal. One writer (the group, under its lock); any thread may
/// sync it.
#[derive(Debug)]
pub(crate) struct JournalFile {
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
    pub fn create(storage: &dyn Storage, path: &Path, generation: u64) -> Result<JournalFile, IoError> {
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
    pub fn append(&self, entry: Entry) -> Result<Option<u64>, IoError> {
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
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Makes the first `upto` entries durable (group commit: one sync covers
    /// every entry written by then, whoever wrote it).
    pub fn sync_through(&self, upto: u64) -> Result<(), IoError> {
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
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Everything written is now in a synced state file.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }
}

/// The files of a group: `queues/<group>/state` and `queues/<group>/journal`.
#[derive(Debug, Clone)]
pub(crate) struct GroupFiles {
    pub dir: PathBuf,
    pub state: PathBuf,
    pub journal: PathBuf,
}

impl GroupFiles {
    pub fn new(topic_dir: &Path, group: &str) -> GroupFiles {
        let dir = topic_dir.join(QUEUES_DIR).join(group);
        GroupFiles { state: dir.join(QSTATE_FILE), journal: dir.join(QJOURNAL_FILE), dir }
    }

    /// Reads the saved state, if the group has any. With
    /// [`RecoveryMode::Repair`], a damaged state file is treated as absent
    /// (the group starts over).
    pub fn load(&self, storage: &dyn Storage, mode: RecoveryMode) -> Result<Option<Persisted>, TopicError> {
        let io = |op, path: &Path, e| TopicError::Io(IoError::new(op, path, e));
        if !storage.exists(&self.state) {
            return Ok(None);
        }
        let bytes = storage.read_file(&self.state).map_err(|e| io("read", &self.state, e))?;
        let mut state = match Persisted::decode(&bytes) {
            Ok(state) => state,
            Err(Some(found)) => {
                return Err(TopicError::NewerVersion { path: self.state.clone(), found, supported: FORMAT_VERSION });
            }
            Err(None) if mode == RecoveryMode::Repair => return Ok(None),
            Err(None) => {
                return Err(TopicError::Corrupt(Corruption {
                    file: self.state.clone(),
                    position: 0,
                    reason: "not a valid queue state file",
                }));
            }
        };
        if storage.exists(&self.journal) {
            let bytes = storage.read_file(&self.journal).map_err(|e| io("read", &self.journal, e))?;
            replay(&bytes, &mut state);
        }
        Ok(Some(state))
    }

    /// Makes the group's directory, durably.
    /// Makes the group's directory, durably: its entries in `queues/` and
    /// the topic's directory are synced on every open, since a crash may
    /// have come between an earlier creation and its sync.
    pub fn create_dir(&self, storage: &dyn Storage) -> Result<(), IoError> {
        let queues = self.dir.parent().expect("queues/<group>");
        let topic = queues.parent().expect("<topic>/queues");
        if !storage.exists(&self.dir) {
            storage.create_dir_all(&self.dir).map_err(|e| IoError::new("create", &self.dir, e))?;
        }
        storage.sync_dir(topic).map_err(|e| IoError::new("sync", topic, e))?;
        storage.sync_dir(queues).map_err(|e| IoError::new("sync", queues, e))
    }

    /// Writes `state` as the state file (generation `state.generation`) and
    /// starts an empty journal of that generation after it. A crash between
    /// the two leaves a journal of an older generation, which `load` ignores.
    pub fn save(&self, storage: &dyn Storage, state: &Persisted) -> Result<JournalFile, IoError> {
        write_file_atomic(storage, &self.state, &state.encode())?;
        JournalFile::create(storage, &self.journal, state.generation)
    }
}

/// Recovery of a topic that was not shut down cleanly: forgets, in every
/// worker group's saved state, the offsets at or past `end`. The log was cut
/// there (or never reached them durably), and new messages will take them.
/// A group whose state cannot be read is left for its next open to report.
pub(crate) fn clamp_groups(
    storage: &dyn Storage,
    topic_dir: &Path,
    end: u64,
    mode: RecoveryMode,
) -> Result<(), TopicError> {
    let queues = topic_dir.join(QUEUES_DIR);
    if !storage.exists(&queues) {
        return Ok(());
    }
    let names = storage.list_dir(&queues).map_err(|e| TopicError::Io(IoError::new("list", &queues, e)))?;
    for name in names {
        if check_group_name(&name).is_err() {
            continue;
        }
        let files = GroupFiles::new(topic_dir, &name);
        let mut state = match files.load(storage, mode) {
            Ok(Some(state)) => state,
            Ok(None) | Err(TopicError::Corrupt(_) | TopicError::NewerVersion { .. }) => continue,
            Err(e) => return Err(e),
        };
        let before = state.clone();
        state.clamp(end);
        if state != before {
            state.generation += 1;
            files.save(storage, &state)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn entry() -> impl Strategy<Value = Entry> {
        prop_oneof![
            (0u64..40, 1u32..6).prop_map(|(offset, attempt)| Entry::Delivered { offset, attempt }),
            (0u64..40).prop_map(|offset| Entry::Settled { offset, how: Settled::Acked }),
            (0u64..40).prop_map(|offset| Entry::Settled { offset, how: Settled::DeadLettered }),
            (0u64..40, 0u64..1000).prop_map(|(offset, retry_at_us)| Entry::Nacked { offset, retry_at_us }),
            (0u64..40).prop_map(|offset| Entry::Rejected { offset }),
        ]
    }

    proptest! {
        /// A state written and read back, and a journal replayed, give what
        /// applying the entries in memory gives.
        #[test]
        fn state_and_journal_round_trip(before in proptest::collection::vec(entry(), 0..40), after in proptest::collection::vec(entry(), 0..40)) {
            let mut state = Persisted { generation: 3, low: 2, ..Persisted::default() };
            for e in &before { state.apply(*e); }
            let decoded = Persisted::decode(&state.encode()).unwrap();
            prop_assert_eq!(&decoded, &state);

            let mut journal = vec![0u8; QJOURNAL_HEADER_BYTES + (after.len() + 1) * QJOURNAL_ENTRY_BYTES];
            journal[..8].copy_from_slice(&QJOURNAL_MAGIC);
            put_u32(&mut journal, QJOURNAL_VERSION_AT, FORMAT_VERSION);
            put_u64(&mut journal, QJOURNAL_HEADER_GENERATION_AT, 3);
            let c = crc(&journal[..QJOURNAL_HEADER_CRC_AT]);
            put_u32(&mut journal, QJOURNAL_HEADER_CRC_AT, c);
            for (i, e) in after.iter().enumerate() {
                let at = QJOURNAL_HEADER_BYTES + i * QJOURNAL_ENTRY_BYTES;
                e.encode(&mut journal[at..at + QJOURNAL_ENTRY_BYTES], 3);
            }
            let mut replayed = decoded.clone();
            replay(&journal, &mut replayed);
            let mut expected = state.clone();
            for e in &after { expected.apply(*e); }
            prop_assert_eq!(&replayed, &expected);

            // A journal of another generation is ignored.
            let mut other = decoded.clone();
            other.generation = 4;
            replay(&journal, &mut other);
            prop_assert_eq!(other.settled, decoded.settled);
        }

        /// No byte string makes decoding panic.
        #[test]
        fn decoding_garbage_does_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Persisted::decode(&bytes);
            let mut state = Persisted::default();
            replay(&bytes, &mut state);
        }
    }

    #[test]
    fn settling_moves_the_low_water_mark() {
        let mut state = Persisted::default();
        state.apply(Entry::Delivered { offset: 1, attempt: 2 });
        state.settle(1);
        assert_eq!(state.low, 0);
        assert!(state.facts.is_empty());
        state.settle(0);
        assert_eq!(state.low, 2);
        assert_eq!(state.settled.len(), 0);
        state.settle(5);
        state.clamp(4);
        assert_eq!(state.settled.len(), 0);
        state.clamp(1);
        assert_eq!(state.low, 1);
    }
}
