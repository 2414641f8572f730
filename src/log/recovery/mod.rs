//! Opening a topic directory: the recovery rules of `docs/FORMAT.md`.
//!
//! - `plan.rs`: the rules as a pure function: which segments are trusted,
//!   which are scanned, what an invalid frame means (shared with `inspect`);
//! - this file: executing the plan. Sealed segments below the checkpoint's
//!   recovery point are trusted and not read; the segments from the recovery
//!   point on are scanned frame by frame, the log is cut at the first
//!   invalid frame (later segments deleted), the cut is synced, and group
//!   offsets above the new end are lowered to it.

mod plan;

pub use plan::CutKind;
pub(crate) use plan::Plan;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use super::config::TopicConfig;
use super::format::*;
use super::segment::{OpenFault, Segment};
use super::slots::{Checkpoint, CommittedOffset, SlotFile, SlotFileError};
use super::topic::{Appender, FlushState, Slot, TopicLog};
use crate::error::{Corruption, IoError, ReadError, TopicError};
use crate::storage::Storage;

pub(crate) fn read_fault(fault: OpenFault) -> ReadError {
    match fault {
        OpenFault::Corrupt(c) => ReadError::Corrupt(c),
        OpenFault::Io(e) => ReadError::Io(e),
        OpenFault::Newer { path, .. } => ReadError::Corrupt(crate::error::Corruption {
            file: path,
            position: 0,
            reason: "the segment has a newer format version",
        }),
    }
}

fn topic_fault(fault: OpenFault) -> TopicError {
    match fault {
        OpenFault::Corrupt(c) => TopicError::Corrupt(c),
        OpenFault::Io(e) => TopicError::Io(e),
        OpenFault::Newer { path, found } => TopicError::NewerVersion { path, found, supported: FORMAT_VERSION },
    }
}

pub(crate) fn slot_fault(fault: SlotFileError) -> TopicError {
    match fault {
        SlotFileError::Corrupt(c) => TopicError::Corrupt(c),
        SlotFileError::Io(e) => TopicError::Io(e),
        SlotFileError::Newer { path, found } => TopicError::NewerVersion { path, found, supported: FORMAT_VERSION },
    }
}

/// How opening a topic treats damage, from
/// [`EngineConfig::recovery`](crate::EngineConfig::recovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Trust what the checkpoint says is synced and scan only what was
    /// written since (after a clean shutdown, only the active segment).
    /// Corruption in an older segment is reported by the reads (and
    /// [`Topic::verify`](crate::Topic::verify)) that meet it; a damaged
    /// checkpoint or group offset file is an error.
    #[default]
    Normal,
    /// Scan every segment and cut each log at its first corrupt frame,
    /// deleting everything after it (see
    /// [`Topic::recovery_report`](crate::Topic::recovery_report)). A
    /// checkpoint too damaged to read is replaced; group offset files and
    /// worker-group state too damaged to read are removed (those groups
    /// start over, as new groups do).
    Repair,
}

/// What opening a topic found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// The last shutdown was clean: nothing was scanned.
    pub clean: bool,
    /// Segments read frame by frame.
    pub segments_scanned: usize,
    /// Bytes of frames checked.
    pub bytes_scanned: u64,
    /// Where the log was cut, and why: a torn tail after a crash, or with
    /// [`RecoveryMode::Repair`] a corrupt frame
    /// anywhere. Everything from there on was removed.
    pub cut: Option<Corruption>,
    /// Segment files deleted because they came after the cut.
    pub segments_removed: usize,
}

/// Opens (recovering if needed) the topic in `dir`. With
/// [`RecoveryMode::Repair`], every segment is scanned, not only those from
/// the recovery point on.
pub(crate) fn open_topic(
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    name: String,
    config: TopicConfig,
    mode: RecoveryMode,
) -> Result<TopicLog, TopicError> {
    let mut report = RecoveryReport::default();
    let io = |op, path: &Path, e| TopicError::Io(IoError::new(op, path, e));
    let capacity = config.segment_bytes as usize;
    let mut bases = Vec::new();
    for file in storage.list_dir(&dir).map_err(|e| io("list", &dir, e))? {
        if let Some(base) = parse_segment_file_name(&file, SEGMENT_SUFFIX) {
            bases.push(base);
        } else if file.ends_with(".tmp") {
            let path = dir.join(&file);
            storage.remove_file(&path).map_err(|e| io("remove", &path, e))?;
        }
    }
    bases.sort_unstable();

    let checkpoint_path = dir.join(CHECKPOINT_FILE);
    let (checkpoint, saved) = match SlotFile::<Checkpoint>::open(&*storage, &checkpoint_path) {
        // Repair scans every segment, so it needs no recovery point: a
        // checkpoint too damaged to read is replaced by a new one.
        Err(SlotFileError::Corrupt(_)) if mode == RecoveryMode::Repair => {
            storage.remove_file(&checkpoint_path).map_err(|e| io("remove", &checkpoint_path, e))?;
            storage.sync_dir(&dir).map_err(|e| io("sync", &dir, e))?;
            SlotFile::open(&*storage, &checkpoint_path)
        }
        opened => opened,
    }
    .map_err(slot_fault)?;

    if bases.is_empty() {
        let first = capacity.min(super::topic::ALLOCATE_STEP_BYTES);
        let seg = Segment::create(&*storage, &dir, 0, capacity, first)?;
        seg.map().file().sync().map_err(|e| io("sync", &seg.path, e))?;
        storage.sync_dir(&dir).map_err(|e| io("sync", &dir, e))?;
        bases.push(0);
        return finish(storage, dir, name, config, checkpoint, bases, seg, first, report, mode);
    }

    let plan = Plan::new(&bases, saved, mode);
    let last = *bases.last().expect("not empty");
    // Rule 1: a clean shutdown recorded where the active segment ends.
    if let Some(mark) = plan.clean {
        let path = dir.join(segment_file_name(last, SEGMENT_SUFFIX));
        let file_len = storage.file_len(&path).map_err(|e| io("stat", &path, e))? as usize;
        let (seg, file_len) = Segment::open(&*storage, path, last, capacity.max(file_len)).map_err(topic_fault)?;
        // The active segment is scanned even so: appending after an
        // undetected bad frame would make everything after it unreachable at
        // the next recovery. Damage found here, after a clean shutdown, is
        // not a torn write: it is reported, and `repair` cuts it.
        let index_path = dir.join(segment_file_name(last, INDEX_SUFFIX));
        let scan = seg.scan(SEGMENT_HEADER_BYTES, file_len, last, Vec::new());
        report.segments_scanned += 1;
        report.bytes_scanned += (scan.end - SEGMENT_HEADER_BYTES) as u64;
        if scan.fault.is_none() && scan.end == mark.end as usize && scan.next_offset == mark.next_offset {
            seg.adopt(&scan);
            if storage.exists(&index_path) {
                storage.remove_file(&index_path).map_err(|e| io("remove", &index_path, e))?;
            }
            report.clean = true;
            return finish(storage, dir, name, config, checkpoint, bases, seg, file_len, report, mode);
        }
        let (position, reason) = match scan.fault {
            Some((position, fault)) => (position, fault.reason()),
            None => (scan.end, "the segment does not end where the clean shutdown recorded"),
        };
        return Err(TopicError::Corrupt(Corruption { file: seg.path.clone(), position: position as u64, reason }));
    }

    // Rules 2 and 3: scan from the recovery point (or at least the last segment).
    let mut i = plan.first_scanned;
    let mut expected = bases[i];
    let (active, active_len) = loop {
        let base = bases[i];
        let path = dir.join(segment_file_name(base, SEGMENT_SUFFIX));
        let file_len = storage.file_len(&path).map_err(|e| io("stat", &path, e))? as usize;
        let opened = if base == expected {
            match Segment::open(&*storage, path.clone(), base, capacity.max(file_len)) {
                Ok(opened) => Some(opened),
                Err(OpenFault::Corrupt(c)) => {
                    report.cut = Some(c);
                    None
                }
                Err(e) => return Err(topic_fault(e)),
            }
        } else {
            report.cut = Some(Corruption {
                file: path.clone(),
                position: 0,
                reason: "the segment does not start where the previous one ended",
            });
            None
        };
        let Some((seg, file_len)) = opened else {
            // A segment whose header is torn, or that does not start where the
            // previous one ended, ends the log: it and later ones go.
            report.segments_removed += bases.len() - i;
            if i == 0 {
                // Nothing valid at all: start over with an empty first segment.
                remove_segments(&*storage, &dir, &bases[i..])?;
                let first = capacity.min(super::topic::ALLOCATE_STEP_BYTES);
                let seg = Segment::create(&*storage, &dir, base, capacity, first)?;
                seg.map().file().sync().map_err(|e| io("sync", &seg.path, e))?;
                storage.sync_dir(&dir).map_err(|e| io("sync", &dir, e))?;
                bases.truncate(i);
                bases.push(base);
                break (seg, first);
            }
            remove_segments(&*storage, &dir, &bases[i..])?;
            storage.sync_dir(&dir).map_err(|e| io("sync", &dir, e))?;
            bases.truncate(i);
            i -= 1;
            let base = bases[i];
            let path = dir.join(segment_file_name(base, SEGMENT_SUFFIX));
            let file_len = storage.file_len(&path).map_err(|e| io("stat", &path, e))? as usize;
            let (seg, file_len) = Segment::open(&*storage, path, base, capacity.max(file_len)).map_err(topic_fault)?;
            let scan = seg.scan(SEGMENT_HEADER_BYTES, file_len, base, Vec::new());
            report.segments_scanned += 1;
            report.bytes_scanned += (scan.end - SEGMENT_HEADER_BYTES) as u64;
            if let Some((position, fault)) = scan.fault {
                // Rule 3 applies here too: cut at the fault and zero what
                // follows, or appends could line up behind stale frames.
                report.cut =
                    Some(Corruption { file: seg.path.clone(), position: position as u64, reason: fault.reason() });
                seg.map().file().set_len(scan.end as u64).map_err(|e| io("truncate", &seg.path, e))?;
            }
            let allocated = if scan.fault.is_some() { scan.end } else { file_len };
            seg.adopt(&scan);
            seg.map().file().sync().map_err(|e| io("sync", &seg.path, e))?;
            break (seg, allocated);
        };
        let scan = seg.scan(SEGMENT_HEADER_BYTES, file_len, base, Vec::new());
        report.segments_scanned += 1;
        report.bytes_scanned += (scan.end - SEGMENT_HEADER_BYTES) as u64;
        let is_last = i + 1 == bases.len();
        let continues = !is_last && scan.next_offset == bases[i + 1];
        if scan.fault.is_some() || (!is_last && !continues) {
            // Rule 3: cut here. Truncate (zeroing what follows) and delete
            // every later segment.
            let reason = scan.fault.map_or("the segment ends before the next one begins", |(_, f)| f.reason());
            report.cut = Some(Corruption { file: seg.path.clone(), position: scan.end as u64, reason });
            report.segments_removed += bases.len() - i - 1;
            let file = seg.map().file();
            file.set_len(scan.end as u64).map_err(|e| io("truncate", &seg.path, e))?;
            file.sync().map_err(|e| io("sync", &seg.path, e))?;
            remove_segments(&*storage, &dir, &bases[i + 1..])?;
            storage.sync_dir(&dir).map_err(|e| io("sync", &dir, e))?;
            bases.truncate(i + 1);
            seg.adopt(&scan);
            break (seg, scan.end);
        }
        seg.map().file().sync().map_err(|e| io("sync", &seg.path, e))?;
        if is_last {
            seg.adopt(&scan);
            break (seg, file_len);
        }
        expected = scan.next_offset;
        i += 1;
    };
    finish(storage, dir, name, config, checkpoint, bases, active, active_len, report, mode)
}

/// Deletes segment files and their indexes.
fn remove_segments(storage: &dyn Storage, dir: &Path, bases: &[u64]) -> Result<(), TopicError> {
    for &base in bases {
        for suffix in [SEGMENT_SUFFIX, INDEX_SUFFIX] {
            let path = dir.join(segment_file_name(base, suffix));
            if storage.exists(&path) {
                storage.remove_file(&path).map_err(|e| TopicError::Io(IoError::new("remove", &path, e)))?;
            }
        }
    }
    Ok(())
}

/// Builds the topic around its recovered active segment: writes the
/// unclean checkpoint (rule 4), clamps group offsets (rule 5).
#[allow(clippy::too_many_arguments)]
fn finish(
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    name: String,
    config: TopicConfig,
    mut checkpoint: SlotFile<Checkpoint>,
    bases: Vec<u64>,
    active: Segment,
    allocated: usize,
    report: RecoveryReport,
    mode: RecoveryMode,
) -> Result<TopicLog, TopicError> {
    checkpoint.write(Checkpoint { recovery_point: active.base, clean: None })?;
    let next = active.next_offset();
    let position = active.end();
    clamp_groups(&*storage, &dir, next, mode)?;
    let active = Arc::new(active);
    let mut segments = BTreeMap::new();
    for base in bases {
        let path = dir.join(segment_file_name(base, SEGMENT_SUFFIX));
        let (bytes, loaded) = if base == active.base {
            (position as u64, Some(active.clone()))
        } else {
            (super::topic::BYTES_UNKNOWN, None)
        };
        segments.insert(base, Arc::new(Slot { base, path, bytes: AtomicU64::new(bytes), loaded: Mutex::new(loaded) }));
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
    let flush = FlushState { checkpoint, segment_base: active.base, flushed_to: position, last_flush: Instant::now() };
    Ok(TopicLog {
        name,
        dir,
        config,
        storage,
        append: Mutex::new(appender),
        flush: Mutex::new(flush),
        segments: RwLock::new(segments),
        committed: super::doorbell::Doorbell::new(next),
        durable: AtomicU64::new(next),
        recovery_point: AtomicU64::new(active.base),
        poisoned: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        deleted: AtomicBool::new(false),
        groups: Mutex::new(HashSet::new()),
        recovery: report,
    })
}

/// Rule 5: lowers committed group offsets above the end of the log. With
/// [`RecoveryMode::Repair`], removes group files too damaged to read (those groups start
/// over, as new groups do).
fn clamp_groups(storage: &dyn Storage, dir: &Path, next: u64, mode: RecoveryMode) -> Result<(), TopicError> {
    let groups = dir.join(GROUPS_DIR);
    if !storage.exists(&groups) {
        return Ok(());
    }
    let names = storage.list_dir(&groups).map_err(|e| TopicError::Io(IoError::new("list", &groups, e)))?;
    for file in names {
        if !file.ends_with(OFFSET_SUFFIX) {
            continue;
        }
        let path = groups.join(&file);
        // A damaged group file must not keep the topic from opening: its
        // group's next subscribe reports the damage.
        let (mut slots, saved) = match SlotFile::<CommittedOffset>::open(storage, &path) {
            Ok(opened) => opened,
            Err(SlotFileError::Corrupt(_)) if mode == RecoveryMode::Repair => {
                storage.remove_file(&path).map_err(|e| TopicError::Io(IoError::new("remove", &path, e)))?;
                storage.sync_dir(&groups).map_err(|e| TopicError::Io(IoError::new("sync", &groups, e)))?;
                continue;
            }
            Err(SlotFileError::Corrupt(_) | SlotFileError::Newer { .. }) => continue,
            Err(e) => return Err(slot_fault(e)),
        };
        if let Some(saved) = saved
            && saved.offset > next
        {
            slots.write(CommittedOffset { offset: next, ..saved })?;
        }
    }
    Ok(())
}
