//! The readers of tollgate's files, for fuzz targets (feature `fuzzing`; not
//! part of the stable API, hidden from the documentation).
//!
//! Each function hands bytes to the one reader the engine (and `inspect`)
//! uses for that kind of file, and returns what it decided as plain public
//! values, so that a fuzz target can check it: that nothing panics, that the
//! result is typed, and that what decodes encodes back to the same meaning.
//! The matching `encode_*` functions are the engine's writers. The targets
//! are `fuzz/fuzz_targets/decode_*.rs`, their checks
//! `tests/support/decoders.rs`.
//!
//! [`scan_segment`], [`scan_segment_windowed`] and [`recovery_plan`] are
//! recovery's view of one segment: the frame scanner (`log/scan.rs`) over
//! its bytes as a mapping and as `inspect`'s positional reads, and the
//! recovery rules as a pure function (`log/recovery/plan.rs`), for the
//! `segment_recovery` target (checks in `tests/support/segment_recovery.rs`).

use std::path::Path;

use bytes::Bytes;

use crate::error::TopicError;
use crate::inspect::{CutKind, scan_segment_bytes};
use crate::log::TopicConfig;
use crate::log::format::FORMAT_VERSION;
use crate::log::record::{OpenFrame, check_frame};
use crate::log::recovery::{Plan, RecoveryMode};
use crate::log::scan::{FrameScan, InMemory, scan_frames};
use crate::log::segment::{HeaderFault, check_header};
use crate::log::slots::{
    Checkpoint, CleanMark, CommittedOffset, MetaCheck, SlotFileCheck, SlotValue, check_meta, check_slot_file,
    encode_meta, encode_slot, encode_slot_file_header,
};
use crate::log::{Offset, Record};
use crate::queue::journal::{Persisted, replay};
use crate::storage::{SimDisk, Storage};

/// The format version this build writes.
pub const VERSION: u32 = FORMAT_VERSION;

/// The size of a two-slot file (`checkpoint`, `<group>.offset`).
pub const SLOT_FILE_BYTES: usize = crate::log::format::SLOT_FILE_BYTES;

/// Which two-slot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// A topic's `checkpoint`.
    Checkpoint,
    /// A consumer group's `<group>.offset`.
    Offset,
}

/// A valid slot's generation and its value as words A, B and C, after the
/// value's own decoding (a checkpoint without a clean mark has B = C = 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The slot's generation (never 0).
    pub generation: u64,
    /// Words A, B and C of the value.
    pub words: (u64, u64, u32),
}

/// What the engine's reader of two-slot files says of a file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotVerdict {
    /// Cut short while being created: opened as a new file.
    HalfCreated,
    /// Not a slot file of this kind.
    NotSlotFile,
    /// The header is damaged at this byte.
    DamagedHeader(u64),
    /// A newer format version.
    Newer(u32),
    /// A slot file of this kind, with its newest valid slot, if any.
    Valid(Option<Slot>),
    /// Both slots were written and neither is valid.
    NoValidSlot,
    /// The newest valid slot, at this byte, holds the highest generation
    /// (`SLOT_GENERATION_MAX`): damage, as no write could follow it.
    UsedUp(u64),
}

/// Reads a two-slot file's whole content as the engine opens it.
pub fn read_slot_file(kind: SlotKind, bytes: &[u8]) -> SlotVerdict {
    match kind {
        SlotKind::Checkpoint => slot_verdict(check_slot_file::<Checkpoint>(bytes)),
        SlotKind::Offset => slot_verdict(check_slot_file::<CommittedOffset>(bytes)),
    }
}

fn slot_verdict<V: SlotValue>(check: SlotFileCheck<V>) -> SlotVerdict {
    match check {
        SlotFileCheck::HalfCreated => SlotVerdict::HalfCreated,
        SlotFileCheck::NotSlotFile => SlotVerdict::NotSlotFile,
        SlotFileCheck::DamagedHeader(at) => SlotVerdict::DamagedHeader(at),
        SlotFileCheck::Newer(found) => SlotVerdict::Newer(found),
        SlotFileCheck::NoValidSlot => SlotVerdict::NoValidSlot,
        SlotFileCheck::UsedUp(at) => SlotVerdict::UsedUp(at),
        SlotFileCheck::Valid(newest) => {
            SlotVerdict::Valid(newest.map(|(generation, value)| Slot { generation, words: value.to_words() }))
        }
    }
}

/// A new two-slot file of `kind` as the engine writes it, with `slot`'s
/// value written to the slot its generation picks.
pub fn encode_slot_file(kind: SlotKind, slot: Slot) -> Vec<u8> {
    match kind {
        SlotKind::Checkpoint => encode_slot_file_of::<Checkpoint>(slot),
        SlotKind::Offset => encode_slot_file_of::<CommittedOffset>(slot),
    }
}

fn encode_slot_file_of<V: SlotValue>(slot: Slot) -> Vec<u8> {
    use crate::log::format::{SLOT_BYTES, SLOT_FILE_HEADER_BYTES};
    let mut bytes = vec![0; SLOT_FILE_BYTES];
    encode_slot_file_header(&mut bytes[..SLOT_FILE_HEADER_BYTES], V::MAGIC);
    let at = SLOT_FILE_HEADER_BYTES + (slot.generation % 2) as usize * SLOT_BYTES;
    let (a, b, c) = slot.words;
    encode_slot(&mut bytes[at..at + SLOT_BYTES], slot.generation, V::from_words(a, b, c));
    bytes
}

/// What the engine says of a `tollgate.meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaVerdict {
    /// This version's meta file.
    Valid,
    /// Not a tollgate meta file, or damaged.
    Invalid,
    /// A newer version.
    Newer(u32),
}

/// Reads a `tollgate.meta` as the engine opening a directory does.
pub fn read_meta(bytes: &[u8]) -> MetaVerdict {
    match check_meta(bytes) {
        MetaCheck::Valid => MetaVerdict::Valid,
        MetaCheck::Invalid => MetaVerdict::Invalid,
        MetaCheck::Newer(found) => MetaVerdict::Newer(found),
    }
}

/// The `tollgate.meta` the engine writes.
pub fn encode_meta_file() -> Vec<u8> {
    encode_meta().to_vec()
}

/// Where [`read_topic_conf`] puts the file on its simulated disk.
pub const TOPIC_CONF_PATH: &str = "/data/topics/t/topic.conf";

/// Reads `bytes` as a `topic.conf` with the engine's reader
/// (`TopicConfig::read`, from a simulated disk at [`TOPIC_CONF_PATH`]).
pub fn read_topic_conf(bytes: &[u8]) -> Result<TopicConfig, TopicError> {
    let disk = SimDisk::new();
    let path = Path::new(TOPIC_CONF_PATH);
    disk.create_dir_all(path.parent().expect("a parent")).expect("a new simulated disk has room");
    disk.write_file(path, bytes).expect("a new simulated disk has room");
    TopicConfig::read(&disk, path)
}

/// The `topic.conf` the engine writes for `config`.
pub fn encode_topic_conf(config: &TopicConfig) -> Vec<u8> {
    config.encode().to_vec()
}

/// Whether `config` is one the engine accepts for a new topic.
pub fn topic_config_is_valid(config: &TopicConfig) -> bool {
    config.validate().is_ok()
}

/// A worker group's state: a state file's content, or a state file and its
/// journal replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    /// The journal generation that continues it.
    pub generation: u64,
    /// Every offset below it is settled.
    pub low: u64,
    /// Settled ranges `[start, end)` above `low`, in order.
    pub settled: Vec<(u64, u64)>,
    /// Unsettled messages: (offset, attempts, retry time in µs, rejected).
    pub facts: Vec<(u64, u32, u64, bool)>,
}

/// Why a state file or journal was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupFault {
    /// A newer format version.
    Newer(u32),
    /// Damage at this byte, for this reason.
    Damaged {
        /// The byte.
        position: u64,
        /// Why.
        reason: &'static str,
    },
}

impl From<&Persisted> for GroupState {
    fn from(state: &Persisted) -> GroupState {
        GroupState {
            generation: state.generation,
            low: state.low,
            settled: state.settled.iter().collect(),
            facts: state.facts.iter().map(|(&o, f)| (o, f.attempts, f.retry_at_us, f.rejected)).collect(),
        }
    }
}

fn group_fault(fault: crate::queue::journal::StateFault) -> GroupFault {
    match fault {
        crate::queue::journal::StateFault::Newer(found) => GroupFault::Newer(found),
        crate::queue::journal::StateFault::Damaged { position, reason } => GroupFault::Damaged { position, reason },
    }
}

/// Decodes a state file strictly, as a plain open does.
pub fn decode_state(bytes: &[u8]) -> Result<GroupState, GroupFault> {
    Persisted::decode(bytes).map(|state| GroupState::from(&state)).map_err(group_fault)
}

/// What repair saves of a state file: `None` if its header is not valid.
pub fn salvage_state(bytes: &[u8]) -> Option<GroupState> {
    Persisted::salvage(bytes).map(|state| GroupState::from(&state))
}

/// Encodes the state file of the state a state file decoded to (see
/// [`decode_state`]); `None` if `state` is not one (its ranges not sorted
/// and apart above `low`, or a fact not of an unsettled offset).
pub fn encode_state(state: &GroupState) -> Option<Vec<u8>> {
    let persisted = persisted(state)?;
    Some(persisted.encode())
}

fn persisted(state: &GroupState) -> Option<Persisted> {
    let mut persisted = Persisted { generation: state.generation, low: state.low, ..Persisted::default() };
    let mut last_end = state.low;
    for &(start, end) in &state.settled {
        if start <= last_end || end <= start {
            return None;
        }
        persisted.settled.insert(start, end);
        last_end = end;
    }
    for &(offset, attempts, retry_at_us, rejected) in &state.facts {
        if !persisted.is_open(offset) {
            return None;
        }
        let facts = crate::queue::journal::Facts { attempts, retry_at_us, rejected };
        if persisted.facts.insert(offset, facts).is_some() {
            return None;
        }
    }
    Some(persisted)
}

/// Replays the journal `bytes` onto `state` (a state a state file holds,
/// see [`encode_state`]) as opening the group does: `strict` as a plain
/// open, else as repair. `None` if `state` is not a state file's.
pub fn replay_journal(state: &GroupState, bytes: &[u8], strict: bool) -> Option<Result<GroupState, GroupFault>> {
    let mut persisted = persisted(state)?;
    Some(replay(bytes, &mut persisted, strict).map(|()| GroupState::from(&persisted)).map_err(group_fault))
}

/// A frame the engine's checker accepted, and its records as the engine's
/// walk hands them out.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The frame's size in bytes.
    pub len: usize,
    /// Its first offset.
    pub first_offset: Offset,
    /// Its timestamp, µs since the Unix epoch.
    pub timestamp_us: u64,
    /// Its records, in order.
    pub records: Vec<Record>,
}

/// Checks the frame at the start of `bytes`, expected to hold `offset`
/// first, as reads and recovery do (`check_frame`), and walks its records
/// (`OpenFrame`); `Err` with the reason the engine gives.
pub fn read_frame(bytes: &[u8], offset: u64) -> Result<Frame, &'static str> {
    let info = check_frame(bytes, offset).map_err(|fault| fault.reason())?;
    let frame = Bytes::copy_from_slice(&bytes[..info.len]);
    let mut walk = OpenFrame::at_offset(frame, info, info.first_offset);
    let records = std::iter::from_fn(|| walk.next_record()).collect();
    Ok(Frame { len: info.len, first_offset: Offset::new(info.first_offset), timestamp_us: info.timestamp_us, records })
}

/// The size of a segment's header: its first frame starts after it.
pub const SEGMENT_HEADER_BYTES: usize = crate::log::format::SEGMENT_HEADER_BYTES;

/// Why [`SegmentScan::ends_early`] says valid frames stop short of the next
/// segment.
pub const ENDS_EARLY: &str = crate::log::scan::ENDS_EARLY;

/// What the engine says of a segment's header, checked against the base
/// offset its file name gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderVerdict {
    /// A header of this version for that base.
    Valid,
    /// Damaged at this byte of the header, for this reason.
    Damaged {
        /// The byte.
        at: usize,
        /// Why.
        reason: &'static str,
    },
    /// A newer format version.
    Newer(u32),
}

fn header_verdict(checked: Result<(), HeaderFault>) -> HeaderVerdict {
    match checked {
        Ok(()) => HeaderVerdict::Valid,
        Err(HeaderFault::Bad { at, reason }) => HeaderVerdict::Damaged { at, reason },
        Err(HeaderFault::Newer(found)) => HeaderVerdict::Newer(found),
    }
}

/// Where a scan of a segment's frames stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// Position after the last valid frame.
    pub end: u64,
    /// Offset after the last valid frame's records.
    pub next_offset: u64,
    /// The position and reason of the invalid frame the scan stopped at;
    /// `None` at a clean end (the end of the bytes, or zeros only after).
    pub fault: Option<(u64, &'static str)>,
}

impl From<FrameScan> for ScanEnd {
    fn from(scan: FrameScan) -> ScanEnd {
        ScanEnd {
            end: scan.end,
            next_offset: scan.next_offset,
            fault: scan.fault.map(|(position, fault)| (position, fault.reason())),
        }
    }
}

/// A frame the scanner accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedFrame {
    /// Where it starts in the segment.
    pub position: u64,
    /// Its size in bytes.
    pub len: usize,
    /// Its first offset.
    pub first_offset: u64,
    /// How many records it says it holds.
    pub count: u32,
}

/// What recovery's scanner finds in one segment's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// The header, checked against the base.
    pub header: HeaderVerdict,
    /// Every frame accepted, in order.
    pub frames: Vec<ScannedFrame>,
    /// Where the scan stopped.
    pub end: ScanEnd,
    scan: FrameScan,
}

impl SegmentScan {
    /// Where and why the segment is not whole, as recovery decides it
    /// (`FrameScan::ends_early`): its first invalid frame, or valid frames
    /// stopping short of `next`, where the next segment begins (`None`: no
    /// next segment, or not known).
    pub fn ends_early(&self, next: Option<u64>) -> Option<(u64, &'static str)> {
        self.scan.ends_early(next)
    }
}

/// Checks the header of a segment file holding `bytes` and named for
/// `base`, and scans its frames from the first, expected at `base`, as
/// recovery scans a segment's mapping (`Segment::scan`, whatever the
/// header says; recovery scans only a segment whose header is valid).
pub fn scan_segment(bytes: &[u8], base: u64) -> SegmentScan {
    let header = header_verdict(check_header(&bytes[..bytes.len().min(SEGMENT_HEADER_BYTES)], base));
    let mut frames = Vec::new();
    let Ok(scan) = scan_frames(&mut InMemory(bytes), SEGMENT_HEADER_BYTES as u64, base, |position, info| {
        frames.push(ScannedFrame { position, len: info.len, first_offset: info.first_offset, count: info.count });
    });
    SegmentScan { header, frames, end: scan.into(), scan }
}

/// The same as [`scan_segment`], as `inspect` reads a segment file:
/// positional reads through a window of `window_bytes` (at least 1).
pub fn scan_segment_windowed(bytes: &[u8], base: u64, window_bytes: usize) -> (HeaderVerdict, ScanEnd) {
    match scan_segment_bytes(bytes, base, window_bytes) {
        Ok((header, scan)) => (header_verdict(header), scan.into()),
        // Reading memory does not fail.
        Err(error) => unreachable!("reading a segment in memory: {error}"),
    }
}

/// A checkpoint's value: the recovery point, and a clean shutdown's mark
/// (the next offset and the end of the active segment's frames), if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointValue {
    /// The base of the first segment not known to be synced.
    pub recovery_point: u64,
    /// A clean shutdown's next offset and end position.
    pub clean: Option<(u64, u32)>,
}

/// The recovery plan for a topic, as [`recovery_plan`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// Index of the first segment scanned; those before are trusted.
    pub first_scanned: usize,
    /// The clean shutdown's mark the last segment must end at, if trusted.
    pub clean: Option<(u64, u32)>,
    /// What an invalid frame in each segment means, the directory closed.
    pub cut_kinds: Vec<CutKind>,
    /// The same, in a directory a running process holds.
    pub live_cut_kinds: Vec<CutKind>,
}

/// The recovery plan (`log/recovery/plan.rs`) for a topic whose segments
/// start at `bases` (sorted) and whose checkpoint holds `checkpoint`,
/// opened plainly or with `repair`.
pub fn recovery_plan(bases: &[u64], checkpoint: Option<CheckpointValue>, repair: bool) -> RecoveryPlan {
    let checkpoint = checkpoint.map(|value| Checkpoint {
        recovery_point: value.recovery_point,
        clean: value.clean.map(|(next_offset, end)| CleanMark { next_offset, end }),
    });
    let mode = if repair { RecoveryMode::Repair } else { RecoveryMode::Normal };
    let plan = Plan::new(bases, checkpoint, mode);
    RecoveryPlan {
        first_scanned: plan.first_scanned,
        clean: plan.clean.map(|mark| (mark.next_offset, mark.end)),
        cut_kinds: (0..bases.len()).map(|i| plan.cut_kind(i, false)).collect(),
        live_cut_kinds: (0..bases.len()).map(|i| plan.cut_kind(i, true)).collect(),
    }
}

/// Keeps freed memory in the process, for glibc's allocator: a fuzz target
/// allocates and frees the same few megabytes for every input, and by
/// default glibc hands the top of its heap back to the system and takes it
/// again each time, a page fault per page touched (a third of
/// `log_recovery`'s time, 300,000 faults over its corpus). Every target
/// calls it once, from its `init`. Does nothing with another allocator
/// (AddressSanitizer's ignores it).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets the allocator's parameters; the values
    // are in range (thresholds and a pad in bytes).
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}
