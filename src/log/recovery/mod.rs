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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::config::TopicConfig;
use super::format::*;
use super::segment::{HeaderFault, OpenFault, Scan, Segment, segment_bases};
use super::slots::{Checkpoint, CommittedOffset, SlotFile, SlotFileCheck, SlotFileError, check_slot_file};
use super::topic::{Recovered, TopicLog};
use crate::error::{Corruption, IoError, ReadError, TopicError};
use crate::storage::Storage;

pub(crate) fn read_fault(fault: OpenFault) -> ReadError {
    match fault {
        OpenFault::Corrupt(c) => ReadError::Corrupt(c),
        OpenFault::Io(e) => ReadError::Io(e),
        OpenFault::Newer { path, found } => ReadError::Corrupt(HeaderFault::Newer(found).corruption(&path)),
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
    /// checkpoint too damaged to read is replaced, and consumer-group offset
    /// files too damaged to read are removed (those groups start over, as
    /// new groups do). A worker group whose state file is too damaged to
    /// read starts over when it is next opened by an engine in this mode.
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
    /// anywhere. Everything from there on was removed; a cut in a segment's
    /// header (a position below its 32 bytes, the byte whose check failed)
    /// removed that whole file.
    pub cut: Option<Corruption>,
    /// Segment files deleted: those after the cut, and the cut one if the
    /// cut is in its header.
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
    let capacity = config.segment_bytes as usize;
    let mut opening = Opening { storage, dir, name, config, mode, capacity, report: RecoveryReport::default() };
    let (storage, dir) = (opening.storage.clone(), opening.dir.clone());
    // Temporary files a crash left behind (`write_file_atomic`).
    for file in storage.list_dir(&dir).map_err(|e| io("list", &dir, e))? {
        if file.ends_with(TMP_SUFFIX) {
            let path = dir.join(&file);
            storage.remove_file(&path).map_err(|e| io("remove", &path, e))?;
        }
    }
    let mut bases = segment_bases(&*storage, &dir).map_err(|e| io("list", &dir, e))?;

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
        // Rule 6.
        let (seg, allocated) = opening.create_segment(0)?;
        return opening.finish(checkpoint, vec![0], seg, allocated);
    }

    let plan = Plan::new(&bases, saved, mode);
    // Rule 1: a clean shutdown recorded where the active segment ends.
    if let Some(mark) = plan.clean {
        let last = *bases.last().expect("not empty");
        let (seg, file_len) = opening.open_segment(last).map_err(topic_fault)?;
        // The active segment is scanned even so: appending after an
        // undetected bad frame would make everything after it unreachable at
        // the next recovery. Damage found here, after a clean shutdown, is
        // not a torn write: it is reported, and `repair` cuts it.
        let scan = opening.scan(&seg, file_len);
        if scan.fault.is_none() && scan.end == mark.end as usize && scan.next_offset == mark.next_offset {
            seg.adopt(&scan);
            let index_path = dir.join(segment_file_name(last, INDEX_SUFFIX));
            if storage.exists(&index_path) {
                storage.remove_file(&index_path).map_err(|e| io("remove", &index_path, e))?;
            }
            opening.report.clean = true;
            return opening.finish(checkpoint, bases, seg, file_len);
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
        let opened = if base == expected {
            match opening.open_segment(base) {
                Ok(opened) => Some(opened),
                Err(OpenFault::Corrupt(c)) => {
                    opening.report.cut = Some(c);
                    None
                }
                Err(e) => return Err(topic_fault(e)),
            }
        } else {
            opening.report.cut = Some(Corruption {
                file: opening.segment_path(base),
                position: 0,
                reason: "the segment does not start where the previous one ended",
            });
            None
        };
        let Some((seg, file_len)) = opened else {
            // A segment whose header is torn, or that does not start where the
            // previous one ended, ends the log: it and later ones go.
            opening.report.segments_removed += bases.len() - i;
            remove_segments(&*storage, &dir, &bases[i..])?;
            bases.truncate(i);
            if i == 0 {
                // Nothing valid at all: start over with an empty first segment.
                let (seg, allocated) = opening.create_segment(base)?;
                bases.push(base);
                break (seg, allocated);
            }
            storage.sync_dir(&dir).map_err(|e| io("sync", &dir, e))?;
            i -= 1;
            let (seg, file_len) = opening.open_segment(bases[i]).map_err(topic_fault)?;
            let scan = opening.scan(&seg, file_len);
            if let Some((position, fault)) = scan.fault {
                // Rule 3 applies here too: cut at the fault and zero what
                // follows, or appends could line up behind stale frames.
                opening.report.cut =
                    Some(Corruption { file: seg.path.clone(), position: position as u64, reason: fault.reason() });
                seg.map().file().set_len(scan.end as u64).map_err(|e| io("truncate", &seg.path, e))?;
            }
            let allocated = if scan.fault.is_some() { scan.end } else { file_len };
            seg.adopt(&scan);
            seg.map().file().sync().map_err(|e| io("sync", &seg.path, e))?;
            break (seg, allocated);
        };
        let scan = opening.scan(&seg, file_len);
        let is_last = i + 1 == bases.len();
        if let Some((position, reason)) = scan.frames().ends_early(bases.get(i + 1).copied()) {
            // Rule 3: cut here. Truncate (zeroing what follows) and delete
            // every later segment.
            opening.report.cut = Some(Corruption { file: seg.path.clone(), position, reason });
            opening.report.segments_removed += bases.len() - i - 1;
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
    opening.finish(checkpoint, bases, active, active_len)
}

fn io(op: &'static str, path: &Path, e: std::io::Error) -> TopicError {
    TopicError::Io(IoError::new(op, path, e))
}

/// A topic being opened: where it is, how, and what recovery found so far.
struct Opening {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    name: String,
    config: TopicConfig,
    mode: RecoveryMode,
    /// Bytes a segment of this topic may hold (what it is mapped for).
    capacity: usize,
    report: RecoveryReport,
}

impl Opening {
    fn segment_path(&self, base: u64) -> PathBuf {
        self.dir.join(segment_file_name(base, SEGMENT_SUFFIX))
    }

    /// Opens the existing segment at `base`, its header checked: the
    /// segment and its file's length.
    fn open_segment(&self, base: u64) -> Result<(Segment, usize), OpenFault> {
        let path = self.segment_path(base);
        let file_len = self.storage.file_len(&path).map_err(|e| OpenFault::Io(IoError::new("stat", &path, e)))?;
        Segment::open(&*self.storage, path, base, self.capacity.max(file_len as usize))
    }

    /// Scans a segment's frames from its first, counting what was read.
    fn scan(&mut self, seg: &Segment, file_len: usize) -> Scan {
        let scan = seg.scan(SEGMENT_HEADER_BYTES, file_len, seg.base, Vec::new());
        self.report.segments_scanned += 1;
        self.report.bytes_scanned += (scan.end - SEGMENT_HEADER_BYTES) as u64;
        scan
    }

    /// Creates an empty segment at `base`, synced with its directory entry:
    /// the segment and the bytes allocated for it.
    fn create_segment(&self, base: u64) -> Result<(Segment, usize), TopicError> {
        let allocated = self.capacity.min(super::topic::ALLOCATE_STEP_BYTES);
        let seg = Segment::create(&*self.storage, &self.dir, base, self.capacity, allocated)?;
        seg.map().file().sync().map_err(|e| io("sync", &seg.path, e))?;
        self.storage.sync_dir(&self.dir).map_err(|e| io("sync", &self.dir, e))?;
        Ok((seg, allocated))
    }

    /// Builds the topic around its recovered active segment: writes the
    /// unclean checkpoint (rule 4), clamps group offsets (rule 5).
    fn finish(
        self,
        mut checkpoint: SlotFile<Checkpoint>,
        bases: Vec<u64>,
        active: Segment,
        allocated: usize,
    ) -> Result<TopicLog, TopicError> {
        checkpoint.write(Checkpoint { recovery_point: active.base, clean: None })?;
        clamp_groups(&*self.storage, &self.dir, active.next_offset(), self.mode)?;
        let recovered = Recovered { checkpoint, bases, active, allocated, report: self.report };
        Ok(TopicLog::new(self.name, self.dir, self.config, self.storage, recovered))
    }
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
        // Opening must not need free space: a file that needs no change is
        // only read (one a crash left half-created is recreated by its
        // group's next subscribe, not here).
        let bytes = storage.read_file(&path).map_err(|e| TopicError::Io(IoError::new("read", &path, e)))?;
        match check_slot_file::<CommittedOffset>(&bytes) {
            SlotFileCheck::HalfCreated => continue,
            SlotFileCheck::Valid(newest) if newest.is_none_or(|(_, saved)| saved.offset <= next) => continue,
            _ => {}
        }
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
