//! Reading a data directory without opening it: the topics, segments,
//! consumer groups and worker groups in it, its records, and a check of every
//! checksum. The `tollgate` command-line tool's `inspect`, `verify`, `dump`
//! and `tail` are built on this module (`docs/CLI.md`).
//!
//! Nothing here writes a byte or takes the directory's lock, so it is safe on
//! a directory that a running [`Engine`](crate::Engine) holds open, and an
//! engine opening the directory meanwhile is not disturbed: on Linux,
//! whether the directory is held open is read from the kernel's lock table
//! ([`Directory::held_open`]; elsewhere it is probed with a lock released at
//! once, which an engine opening in that instant would meet). Files are
//! read through the engine's storage seam with a handle that can only read
//! (`ReadStorage`: the real file system, or a `SimDisk` through
//! `Directory::open_sim` with the `sim` feature), with positional reads, a
//! window at a time, and never mapped: a running engine truncates sealed
//! segments to their data, and reading a mapping past a file's new end
//! would kill the process (`SIGBUS`). A file that disappears
//! while it is read (retention, a deleted topic) is skipped with a note or
//! ends the read with an error. As in the engine, no symbolic link inside
//! the directory is followed: a topic, group or file that is one is listed,
//! and reading it fails with an error naming the link
//! ([`IoError::symlink`](crate::IoError::symlink)).
//!
//! # Damage and the end of the log
//!
//! An invalid frame means different things in different places; the rules
//! are recovery's (`docs/FORMAT.md`, "Recovery rules"):
//!
//! - In a sealed segment below the checkpoint's recovery point, which
//!   recovery trusts without reading, it is **corruption**
//!   ([`CutKind::Corrupt`]).
//! - After a clean shutdown (and with no process holding the directory), the
//!   last segment must end exactly where the shutdown recorded. An invalid
//!   frame there is corruption too; valid frames ending elsewhere are the
//!   checkpoint's damage ([`TopicVerdict::damaged`]): opening the topic
//!   fails until repair mode rewrites the checkpoint. Before saying either,
//!   [`Directory::verify`] looks again: if an engine has opened the
//!   directory since the check began, this is the tail it is writing.
//! - In the segments from the recovery point on, which recovery scans after
//!   an unclean shutdown, the first invalid frame is a **torn tail**
//!   ([`CutKind::TornTail`]): the next open cuts the log there.
//! - In the last segment of a directory held open by a running process, it
//!   is the frame being written: an **incomplete tail**
//!   ([`CutKind::IncompleteTail`]).
//!
//! Zeros after the last frame (space allocated ahead of the writer) are the
//! end of the data, as in recovery; a zero frame size followed by bytes that
//! are not all zero is an invalid frame.
//!
//! ```
//! # let dir = tempfile::tempdir()?;
//! use tollgate::Engine;
//! use tollgate::inspect::Directory;
//!
//! let engine = Engine::open(dir.path())?;
//! engine.topic("orders")?.publish(b"order 1001")?;
//!
//! // Safe while the engine holds the directory: nothing is written or locked.
//! let data = Directory::open(dir.path())?;
//! assert!(data.held_open());
//! assert_eq!(data.topics()?, ["orders"]);
//! assert_eq!(data.topic("orders")?.end.get(), 1);
//! assert!(data.verify(|_, _| {})?.is_clean());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Corruption, Error, Escaped, IoError, OpenError, ReadError, TopicError};
use crate::log::config::TopicConfig;
use crate::log::format::*;
use crate::log::names::{check_group_name, check_topic_name};
use crate::log::record::{FrameFault, FrameInfo, Offset, OpenFrame, Record, check_frame};
pub use crate::log::recovery::CutKind;
use crate::log::recovery::{Plan, RecoveryMode};
use crate::log::scan::{ENDS_EARLY, FrameScan, FrameSource, scan_frames};
use crate::log::segment::{HeaderFault, check_header, corrupt, decode_index, segment_bases};
use crate::log::slots::{
    Checkpoint, CleanMark, CommittedOffset, DAMAGED_META, DAMAGED_SLOT_HEADER, GENERATIONS_USED_UP, MetaCheck,
    NEWER_VERSION, NO_VALID_SLOT, NOT_SLOT_FILE, SlotFileCheck, SlotValue, check_meta, check_slot_file,
};
use crate::queue::journal::{GroupFiles, SavedGroup};
use crate::storage::{OsStorage, ReadAt, ReadStorage};

/// A data directory, opened for reading only: no lock is taken and nothing
/// is written, so a running engine may hold it at the same time.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// use tollgate::inspect::Directory;
/// use tollgate::{Engine, OpenError};
///
/// // Only an existing tollgate directory opens.
/// assert!(matches!(Directory::open(dir.path()), Err(OpenError::NotTollgate { .. })));
/// drop(Engine::open(dir.path())?);
/// let data = Directory::open(dir.path())?;
/// assert!(!data.held_open());
/// assert!(data.topics()?.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Directory {
    path: PathBuf,
    /// Every read goes through it; it has no way to write.
    fs: Arc<dyn ReadStorage>,
}

/// What a topic holds, as its files say ([`Directory::topic`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicSummary {
    /// The topic's name.
    pub name: String,
    /// Its configuration, from `topic.conf`.
    pub config: TopicConfig,
    /// The last engine to open the topic closed it cleanly, and no process
    /// holds the directory now.
    pub clean_shutdown: bool,
    /// The segment files, oldest first.
    pub segments: Vec<SegmentSummary>,
    /// The oldest retained offset: the first segment's base.
    pub oldest: Offset,
    /// The offset after the last readable record (the next offset a publish
    /// would get, unless the log's tail is cut when it is next opened).
    pub end: Offset,
    /// Bytes of data in the segments: headers and frames, not the space
    /// allocated after them.
    pub bytes: u64,
    /// Consumer groups with a committed-offset file, by name.
    pub groups: Vec<GroupSummary>,
    /// Worker groups with a state file, by name.
    pub workers: Vec<WorkerSummary>,
    /// What else is worth knowing: how the last segment's data ends when not
    /// at a clean end, files that vanished while being read.
    pub notes: Vec<String>,
}

/// One segment file ([`TopicSummary::segments`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentSummary {
    /// The file.
    pub path: PathBuf,
    /// The offset of its first record.
    pub base: Offset,
    /// The offset after its last record.
    pub end: Offset,
    /// Bytes of data: the header and the frames.
    pub bytes: u64,
    /// The file's length, with space allocated after the data.
    pub file_bytes: u64,
}

/// A consumer group's committed offset ([`TopicSummary::groups`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupSummary {
    /// The group's name.
    pub name: String,
    /// The next offset the group will read; `None` if it never committed
    /// (a subscription then starts where `StartAt` says).
    pub committed: Option<Offset>,
    /// When it committed, in microseconds since the Unix epoch.
    pub committed_at_us: Option<u64>,
    /// Records published but not committed: the end minus the committed
    /// offset (minus the oldest offset if it never committed).
    pub lag: u64,
    /// The offset file fails its checks: the other fields are empty.
    pub damage: Option<Corruption>,
}

/// A worker group's delivery state ([`TopicSummary::workers`]), from its
/// state file and journal.
///
/// Offline, a message that was delivered and not settled may be in flight
/// (a worker has it) or waiting to be delivered again (a nack, an expired
/// visibility deadline, a crash): the files do not say which, so
/// [`attempted`](Self::attempted) counts both.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerSummary {
    /// The group's name.
    pub name: String,
    /// Every offset below it is settled.
    pub low_water: Offset,
    /// Offsets above the low-water mark that are settled (acked or
    /// dead-lettered out of order).
    pub settled_above: u64,
    /// Unsettled messages delivered at least once: in flight or awaiting a
    /// retry. Rejected messages are not counted here.
    pub attempted: u64,
    /// Of those, messages nacked with a retry time still in the future.
    pub retry_scheduled: u64,
    /// Rejected messages whose dead letter is not yet recorded.
    pub rejected: u64,
    /// Messages published and not settled. A group's filter is not stored
    /// on disk, and the messages it skips are recorded as settled only when
    /// the group next compacts its journal into a new state file (when the
    /// journal fills): until then they count here.
    pub lag: u64,
    /// The default dead-letter topic, `<topic>.dlq`. A group configured with
    /// another one is not recorded on disk, so it cannot be known offline.
    pub dead_letter_topic: String,
    /// Records in [`dead_letter_topic`](Self::dead_letter_topic) that name
    /// this topic and group in their `tollgate.dlq.*` headers; `None` if
    /// that topic does not exist or cannot be read.
    pub dead_lettered: Option<u64>,
    /// The state file fails its checks: the counts are empty.
    pub damage: Option<Corruption>,
}

/// What [`Directory::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Files checked.
    pub files: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Records whose frames passed every check.
    pub records: u64,
    /// Each topic's verdict, by name.
    pub topics: Vec<TopicVerdict>,
    /// A process held the directory when the check started.
    pub held_open: bool,
}

/// One topic's result in a [`VerifyReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicVerdict {
    /// The topic's name.
    pub name: String,
    /// Segment files checked.
    pub segments: usize,
    /// Records whose frames passed every check.
    pub records: u64,
    /// Where the log's valid data ends early, if it does: the first invalid
    /// frame or segment.
    pub cut: Option<Cut>,
    /// Other files that fail their checks: `topic.conf`, `checkpoint`, a
    /// group's offset file, a worker group's state file.
    pub damaged: Vec<Corruption>,
    /// What else is worth knowing (stale index files, files that vanished
    /// while being read, a damaged journal header).
    pub notes: Vec<String>,
}

/// Where a topic's valid data ends before the end of its files.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cut {
    /// What it means (see the module's documentation).
    pub kind: CutKind,
    /// The file, the byte position of the first invalid frame (or of the
    /// segment's end, or the header's byte whose check failed), and which
    /// check failed: the place recovery's report and errors name.
    pub at: Corruption,
    /// The offset the first unreadable record would have: everything from
    /// it on is lost if the log is cut here.
    pub first_lost: Offset,
    /// Bytes of that file the cut removes (allocated space included): from
    /// the position on, or all of them for a cut in the header.
    pub bytes_after: u64,
    /// Segment files after it, which a cut removes. A cut in the header
    /// ([`Cut::removes_its_file`]) removes its own file too.
    pub later_segments: usize,
    /// Their bytes.
    pub later_bytes: u64,
}

impl Cut {
    /// Whether the cut is in its segment's header (a position below the
    /// header's 32 bytes: an invalid header, or a segment that does not
    /// start where the one before it ended). Such a segment is invalid as a
    /// whole: cutting there removes its file too, not only the bytes from
    /// the position on.
    pub fn removes_its_file(&self) -> bool {
        self.at.position < SEGMENT_HEADER_BYTES as u64
    }
}

impl VerifyReport {
    /// No topic has corruption or damaged files (torn and incomplete tails
    /// are not damage).
    pub fn is_clean(&self) -> bool {
        self.topics.iter().all(TopicVerdict::is_clean)
    }
}

impl TopicVerdict {
    /// No corruption in the log and no damaged file.
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty() && !self.cut.as_ref().is_some_and(|cut| cut.kind == CutKind::Corrupt)
    }
}

impl Directory {
    /// Opens the data directory at `path` for reading. Fails if it does not
    /// exist, is not a tollgate directory (no valid `tollgate.meta`), or was
    /// written by a newer format version.
    pub fn open(path: impl AsRef<Path>) -> Result<Directory, OpenError> {
        Self::open_on(Arc::new(OsStorage::new(path.as_ref())), path.as_ref())
    }

    /// Opens the data directory `dir` of a simulated disk for reading, as
    /// [`Directory::open`] does on the real file system: for tests that
    /// compare what `inspect` says of a crash image with what recovery does.
    ///
    /// Read while no engine writes to the disk (its workload has stopped, or
    /// it is a [`power_cut`](crate::SimDisk::power_cut) image), as for
    /// `power_cut`: the simulated files are memory that an engine writes
    /// through its mappings without a lock, so reading them meanwhile is a
    /// data race. (A real disk has no such limit: [`Directory::open`] reads
    /// a directory in use.) A file being read counts as mapped until the
    /// reader lets it go.
    #[cfg(feature = "sim")]
    pub fn open_sim(disk: &crate::SimDisk, dir: impl AsRef<Path>) -> Result<Directory, OpenError> {
        Self::open_on(Arc::new(disk.clone()), dir.as_ref())
    }

    fn open_on(fs: Arc<dyn ReadStorage>, path: &Path) -> Result<Directory, OpenError> {
        let path = path.to_path_buf();
        fs.identity(&path).map_err(|e| OpenError::Io(IoError::new("open", &path, e)))?;
        if !fs.is_dir(&path) {
            return Err(OpenError::NotTollgate { path, reason: "it is not a directory" });
        }
        let meta = path.join(META_FILE);
        let bytes = match fs.read_file(&meta) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(OpenError::NotTollgate { path, reason: "it has no tollgate.meta" });
            }
            Err(e) => return Err(OpenError::Io(IoError::new("read", &meta, e))),
        };
        match check_meta(&bytes) {
            MetaCheck::Valid => Ok(Directory { path, fs }),
            MetaCheck::Newer(found) => Err(OpenError::NewerVersion { path: meta, found, supported: FORMAT_VERSION }),
            MetaCheck::Invalid => Err(OpenError::NotTollgate { path, reason: DAMAGED_META }),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a process holds the directory open now (an engine holds a
    /// `flock` on `tollgate.lock` for its life).
    ///
    /// Takes no lock: on Linux, it looks the lock file's device and inode
    /// up in the kernel's lock table, `/proc/locks`, so an engine opening
    /// the directory at the same moment is not disturbed. Two limits of
    /// that table: a lock held by a process in another PID namespace (a
    /// process in another container sharing the directory) is not listed,
    /// and neither is one whose locking process has exited while a child
    /// it forked keeps the descriptor, unless `/proc` belongs to the
    /// initial PID namespace.
    ///
    /// Where `/proc/locks` cannot be read (other systems, `/proc` not
    /// mounted), it falls back to probing with a shared, non-blocking lock
    /// on the lock file, released at once: an engine opening the directory
    /// in the same microseconds would then find it locked and fail to open.
    /// If the lock file cannot be examined, the answer is `true`, the
    /// cautious one; if it does not exist, `false`.
    pub fn held_open(&self) -> bool {
        self.fs.lock_held(&self.path.join(LOCK_FILE))
    }

    /// The names of the topics, sorted.
    pub fn topics(&self) -> Result<Vec<String>, IoError> {
        let dir = self.path.join(TOPICS_DIR);
        let mut names: Vec<String> = list_dir(&*self.fs, &dir)
            .map_err(|e| IoError::new("list", &dir, e))?
            .into_iter()
            .filter(|name| check_topic_name(name).is_ok() && self.fs.exists(&dir.join(name).join(TOPIC_FILE)))
            .collect();
        names.sort();
        Ok(names)
    }

    /// What the topic `name` holds: configuration, segments, offsets,
    /// consumer and worker groups.
    ///
    /// Sealed segments are measured from their index files, and the last
    /// one is scanned to find the end (unless a clean shutdown recorded it).
    /// Dead letters are counted by reading the dead-letter topic.
    pub fn topic(&self, name: &str) -> Result<TopicSummary, TopicError> {
        let live = self.held_open();
        let files = TopicFiles::read(self, name)?;
        let config = files.config()?;
        let mut notes = Vec::new();
        if let Err(damage) = &files.checkpoint {
            notes.push(format!("the checkpoint is damaged ({damage})"));
        }
        let clean = files.clean(live);
        let mut segments = Vec::new();
        for (i, &base) in files.bases.iter().enumerate() {
            let path = files.segment_path(base);
            let next_base = files.bases.get(i + 1).copied();
            let measured = match measure_segment(&files, &path, base, next_base, clean) {
                Ok(measured) => measured,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    notes.push(format!("{} was removed while being read (retention)", Escaped::path(&path)));
                    continue;
                }
                Err(e) => return Err(TopicError::Io(IoError::new("read", &path, e))),
            };
            if measured.mark_disagrees {
                notes.push(CHECKPOINT_DISAGREES_NOTE.to_owned());
            }
            if let Some(fault) = measured.fault {
                let kind = match files.cut_kind(i, live) {
                    CutKind::Corrupt => "corrupt data",
                    CutKind::TornTail => "a torn tail (the next open cuts it)",
                    CutKind::IncompleteTail => "an incomplete tail (the directory is in use)",
                };
                notes.push(format!("the readable data ends with {kind}: {fault}"));
            }
            segments.push(SegmentSummary {
                path,
                base: Offset::new(base),
                end: Offset::new(measured.end),
                bytes: measured.bytes,
                file_bytes: measured.file_bytes,
            });
        }
        let oldest = segments.first().map_or(0, |s| s.base.get());
        let end = segments.last().map_or(oldest, |s| s.end.get());
        let bytes = segments.iter().map(|s| s.bytes).sum();
        let groups = files.groups(oldest, end)?;
        let dead_letter_topic = format!("{name}.dlq");
        let worker_groups = files.worker_groups()?;
        let dead_letters = if worker_groups.is_empty() {
            None
        } else {
            self.count_dead_letters(&dead_letter_topic, name).unwrap_or_else(|e| {
                notes.push(format!("cannot count dead letters in {dead_letter_topic:?}: {e}"));
                None
            })
        };
        let workers = files.workers(worker_groups, end, &dead_letter_topic, dead_letters.as_ref())?;
        Ok(TopicSummary {
            name: name.to_owned(),
            config,
            clean_shutdown: clean.is_some(),
            segments,
            oldest: Offset::new(oldest),
            end: Offset::new(end),
            bytes,
            groups,
            workers,
            notes,
        })
    }

    /// The topic's oldest retained offset and the offset after its last
    /// readable record. Cheaper than [`Directory::topic`]: only the last
    /// segment is read (and not even that after a clean shutdown).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use tollgate::inspect::Directory;
    /// use tollgate::{Engine, Offset};
    ///
    /// let engine = Engine::open(dir.path())?;
    /// engine.topic("orders")?.publish_batch(["a", "b", "c"])?;
    /// let offsets = Directory::open(dir.path())?.offsets("orders")?;
    /// assert_eq!(offsets, Offset::new(0)..Offset::new(3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn offsets(&self, topic: &str) -> Result<Range<Offset>, TopicError> {
        let live = self.held_open();
        let files = TopicFiles::read(self, topic)?;
        let (Some(&oldest), Some(&last)) = (files.bases.first(), files.bases.last()) else {
            return Ok(Offset::new(0)..Offset::new(0));
        };
        let path = files.segment_path(last);
        let measured = measure_segment(&files, &path, last, None, files.clean(live))
            .map_err(|e| TopicError::Io(IoError::new("read", &path, e)))?;
        Ok(Offset::new(oldest)..Offset::new(measured.end))
    }

    /// A reader of the topic's records from offset `from` (the oldest
    /// retained one if `None`).
    ///
    /// Fails with [`TopicError::NotFound`] for a topic that does not exist,
    /// [`ReadError::NotRetained`] below the oldest retained offset, and
    /// [`ReadError::NotWritten`] past the end.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use tollgate::inspect::Directory;
    /// use tollgate::{Engine, Message, Offset};
    ///
    /// let engine = Engine::open(dir.path())?;
    /// let orders = engine.topic("orders")?;
    /// orders.publish_message(Message::new("order 1001").key("sku:42"))?;
    /// orders.publish(b"order 1002")?;
    ///
    /// let mut records = Directory::open(dir.path())?.records("orders", Some(Offset::new(1)))?;
    /// let rec = records.next()?.expect("published above");
    /// assert_eq!(rec.payload().as_ref(), b"order 1002");
    /// assert!(records.next()?.is_none()); // nothing more, for now
    ///
    /// orders.publish(b"order 1003")?;
    /// assert_eq!(records.next()?.expect("published since").offset(), Offset::new(2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn records(&self, topic: &str, from: Option<Offset>) -> Result<Records, Error> {
        let files = TopicFiles::read(self, topic)?;
        let strict = files.clean(self.held_open()).is_some();
        let oldest = files.bases.first().copied().unwrap_or(0);
        let from = from.map_or(oldest, Offset::get);
        if from < oldest {
            return Err(ReadError::NotRetained { requested: from, oldest }.into());
        }
        let mut records = Records {
            fs: self.fs.clone(),
            root: self.path.clone(),
            identity: self.fs.identity(&files.dir).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Error::Topic(TopicError::NotFound { name: topic.to_owned() }),
                _ => Error::Topic(TopicError::Io(IoError::new("stat", &files.dir, e))),
            })?,
            dir: files.dir.clone(),
            strict,
            seg: None,
            position: SEGMENT_HEADER_BYTES as u64,
            position_offset: 0,
            frame: None,
            next: from,
            zeros_checked: None,
        };
        let base = files.bases.iter().rev().find(|&&b| b <= from).copied().unwrap_or(from);
        records.open_at(base, from).map_err(Error::Read)?;
        // Open the frame holding `from`, to tell a position past the end.
        if !records.open_frame()? && records.position_offset < from {
            return Err(ReadError::NotWritten { requested: from, next: records.position_offset }.into());
        }
        Ok(records)
    }

    /// Checks every file of every topic: each frame's CRC and structure and
    /// the segments' continuity, `topic.conf`, the checkpoint and group
    /// offset files, worker groups' state files and journal headers, index
    /// files. `progress` is called with bytes read so far and the bytes to
    /// read in all, as reading goes on.
    ///
    /// Stops reading a topic's segments at the first invalid frame (a
    /// [`Cut`]): what follows it cannot be trusted.
    pub fn verify(&self, mut progress: impl FnMut(u64, u64)) -> Result<VerifyReport, IoError> {
        let held_open = self.held_open();
        let names = self.topics()?;
        let total = names.iter().map(|name| tree_bytes(&*self.fs, &self.path.join(TOPICS_DIR).join(name))).sum::<u64>();
        let mut report = VerifyReport { files: 0, bytes: 0, records: 0, topics: Vec::new(), held_open };
        for name in names {
            let mut count = Counter { files: 0, bytes: report.bytes, total, progress: &mut progress };
            let verdict = verify_topic(self, &name, held_open, &mut count);
            report.files += count.files;
            report.bytes = count.bytes;
            report.records += verdict.records;
            report.topics.push(verdict);
        }
        progress(report.bytes, total.max(report.bytes));
        Ok(report)
    }

    /// Counts the records of the dead-letter topic `dead_letter_topic` that
    /// came from `topic`, by worker group; `None` if it does not exist.
    fn count_dead_letters(&self, dead_letter_topic: &str, topic: &str) -> Result<Option<HashMap<String, u64>>, Error> {
        let topics = self.topics().map_err(TopicError::Io)?;
        if check_topic_name(dead_letter_topic).is_err() || !topics.iter().any(|t| t == dead_letter_topic) {
            return Ok(None);
        }
        let mut counts = HashMap::new();
        let mut records = self.records(dead_letter_topic, None)?;
        while let Some(record) = records.next()? {
            if record.header(DLQ_TOPIC_HEADER) != Some(topic.as_bytes()) {
                continue;
            }
            if let Some(group) = record.header(DLQ_GROUP_HEADER) {
                *counts.entry(String::from_utf8_lossy(group).into_owned()).or_insert(0) += 1;
            }
        }
        Ok(Some(counts))
    }
}

/// A reader of one topic's records, straight from its segment files
/// ([`Directory::records`]).
///
/// Follows the log across segment files as they roll. In the last segment,
/// an invalid frame is the end of the data for now (the frame being written
/// or a torn tail), unless the topic was shut down cleanly and nobody holds
/// the directory: then it is corruption, as it is anywhere else.
#[derive(Debug)]
pub struct Records {
    fs: Arc<dyn ReadStorage>,
    root: PathBuf,
    dir: PathBuf,
    /// The topic directory's identity when the reader was opened: a topic
    /// deleted and created again under the same name has another one.
    identity: Option<(u64, u64)>,
    /// Whether the last segment must end cleanly (see above).
    strict: bool,
    seg: Option<SegmentFile>,
    /// Position and first offset of the next frame in `seg`.
    position: u64,
    position_offset: u64,
    /// The frame holding `next`, positioned at it.
    frame: Option<OpenFrame>,
    /// The offset `next` returns next.
    next: u64,
    /// The last segment's bytes from this position to this file length were
    /// found all zero (so an idle follower does not read them on every poll).
    zeros_checked: Option<(u64, u64)>,
}

impl Records {
    /// The next record, or `None` if every record written so far has been
    /// read: calling again later returns records written since (this is
    /// how `tollgate tail -f` follows a topic).
    ///
    /// Fails with [`ReadError::Deleted`] once the topic's directory is gone
    /// (or is another one: the topic was deleted and created again),
    /// [`ReadError::Corrupt`] at damage, [`ReadError::NotRetained`] if
    /// retention deleted the next segment before it was read.
    // Not `Iterator::next`: it can fail, and `None` means "nothing yet", not "done".
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Record>, ReadError> {
        loop {
            if let Some(record) = self.frame.as_mut().and_then(OpenFrame::next_record) {
                self.next = record.offset().get() + 1;
                return Ok(Some(record));
            }
            self.frame = None;
            if !self.open_frame()? {
                return Ok(None);
            }
        }
    }

    /// The offset of the record `next` returns next.
    pub fn position(&self) -> Offset {
        Offset::new(self.next)
    }

    /// Opens the frame holding `self.next`, positioned at it; false at the
    /// end of the data for now.
    fn open_frame(&mut self) -> Result<bool, ReadError> {
        let mut retried = false;
        loop {
            let Some(seg) = &mut self.seg else {
                // The segment holding `position_offset` is not there (yet).
                if self.open_next()? {
                    continue;
                }
                return Ok(false);
            };
            let fault = match seg.frame(self.position, self.position_offset).map_err(|e| read_io(&seg.path, e))? {
                Ok(info) => {
                    let position = self.position;
                    self.position += info.len as u64;
                    self.position_offset = info.end_offset();
                    if info.end_offset() > self.next {
                        let bytes = Bytes::copy_from_slice(seg.frame_bytes(position, info));
                        self.frame = Some(OpenFrame::at_offset(bytes, info, self.next));
                        return Ok(true);
                    }
                    continue;
                }
                Err(fault) => fault,
            };
            if !self.past_end_of_data(fault, &mut retried)? {
                return Ok(false);
            }
        }
    }

    /// The frame at the position is invalid (`fault`). Returns true to read
    /// on: the next segment continues this one (it is opened next), or a
    /// later segment exists and this one is read once more (the bytes may
    /// have been read while being written). Returns false where the data
    /// ends for now, and an error where that is corruption.
    fn past_end_of_data(&mut self, fault: FrameFault, retried: &mut bool) -> Result<bool, ReadError> {
        let bases = self.bases()?;
        let seg = self.seg.as_mut().expect("called with a segment");
        let bad = |reason| ReadError::Corrupt(corrupt(&seg.path, self.position as usize, reason));
        match bases.iter().copied().find(|&b| b > seg.base) {
            Some(next) if fault == FrameFault::End && next == self.position_offset => {
                self.seg = None;
                Ok(true)
            }
            Some(_) if !*retried => {
                *retried = true;
                seg.forget();
                Ok(true)
            }
            Some(_) if fault == FrameFault::End => Err(bad(ENDS_EARLY)),
            Some(_) => Err(bad(fault.reason())),
            None if !self.strict => {
                seg.forget();
                Ok(false)
            }
            None => self.strict_end(fault, &bases),
        }
    }

    /// The end of the last segment's data after a clean shutdown: the rest
    /// of the file must be zeros, unless an engine has opened the topic
    /// since (then this is the tail it is writing, and reading goes on
    /// leniently).
    fn strict_end(&mut self, fault: FrameFault, bases: &[u64]) -> Result<bool, ReadError> {
        let seg = self.seg.as_mut().expect("called with a segment");
        let file_bytes = seg.file_bytes().map_err(|e| read_io(&seg.path, e))?;
        if fault == FrameFault::End {
            let checked = self.zeros_checked == Some((self.position, file_bytes));
            if checked || seg.zeros_from(self.position).map_err(|e| read_io(&seg.path, e))? {
                self.zeros_checked = Some((self.position, file_bytes));
                seg.forget();
                return Ok(false);
            }
        }
        let checkpoint = read_slot_file::<Checkpoint>(&*self.fs, &self.dir.join(CHECKPOINT_FILE));
        let still_clean = clean_mark(checkpoint.ok().flatten().map(|(_, value)| value), bases).is_some();
        if !still_clean || self.fs.lock_held(&self.root.join(LOCK_FILE)) {
            self.strict = false;
            seg.forget();
            return Ok(true);
        }
        Err(ReadError::Corrupt(corrupt(&seg.path, self.position as usize, fault.reason())))
    }

    /// The topic's segments now; [`ReadError::Deleted`] if it is gone, or
    /// was deleted and created again (its directory is another one: the
    /// new topic's segments do not continue what was read).
    fn bases(&self) -> Result<Vec<u64>, ReadError> {
        let gone = |e: io::Error| match e.kind() {
            io::ErrorKind::NotFound => ReadError::Deleted,
            _ => ReadError::Io(IoError::new("list", &self.dir, e)),
        };
        if !self.fs.exists(&self.dir.join(TOPIC_FILE)) || self.fs.identity(&self.dir).map_err(gone)? != self.identity {
            return Err(ReadError::Deleted);
        }
        let bases = segment_bases(&*self.fs, &self.dir).map_err(gone)?;
        // Deleted and created again while being listed.
        if self.fs.identity(&self.dir).map_err(gone)? != self.identity {
            return Err(ReadError::Deleted);
        }
        Ok(bases)
    }

    /// Opens the segment whose base is `position_offset`, if it is there
    /// with its header written.
    fn open_next(&mut self) -> Result<bool, ReadError> {
        let bases = self.bases()?;
        if !bases.contains(&self.position_offset) {
            if let Some(&oldest) = bases.first()
                && oldest > self.position_offset
            {
                return Err(ReadError::NotRetained { requested: self.next, oldest });
            }
            return Ok(false);
        }
        self.open_at(self.position_offset, self.next)
    }

    /// Opens the segment at `base` and positions the reader at the frame
    /// holding `offset`, or the last indexed frame before it. Returns false
    /// if the segment is not there yet, or (unless strict) its header is
    /// not written yet.
    fn open_at(&mut self, base: u64, offset: u64) -> Result<bool, ReadError> {
        self.seg = None;
        self.frame = None;
        self.position_offset = base;
        let path = self.dir.join(segment_file_name(base, SEGMENT_SUFFIX));
        let mut seg = match SegmentFile::open(&*self.fs, path.clone(), base) {
            Ok(seg) => seg,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return match self.bases()?.first() {
                    Some(&oldest) if oldest > base => Err(ReadError::NotRetained { requested: offset, oldest }),
                    _ => Ok(false),
                };
            }
            Err(e) => return Err(read_io(&path, e)),
        };
        match seg.header().map_err(|e| read_io(&path, e))? {
            Ok(()) => {}
            // A new segment's file exists, zero-filled, a moment before its
            // header is written.
            Err(_)
                if !self.strict && seg.bytes_at(0, SEGMENT_HEADER_BYTES).is_ok_and(|h| h.iter().all(|&b| b == 0)) =>
            {
                return Ok(false);
            }
            Err(fault) => return Err(ReadError::Corrupt(fault.corruption(&path))),
        }
        let (position, position_offset) = seek_in_segment(&*self.fs, &self.dir, &mut seg, offset);
        self.seg = Some(seg);
        self.position = position;
        self.position_offset = position_offset;
        self.zeros_checked = None;
        Ok(true)
    }
}

/// The position and first offset of the indexed frame nearest below
/// `offset` in `seg`, if its index file points at a valid frame there;
/// else the first frame.
fn seek_in_segment(fs: &dyn ReadStorage, dir: &Path, seg: &mut SegmentFile, offset: u64) -> (u64, u64) {
    let start = (SEGMENT_HEADER_BYTES as u64, seg.base);
    let index = dir.join(segment_file_name(seg.base, INDEX_SUFFIX));
    let (Ok(bytes), Ok(file_bytes)) = (fs.read_file(&index), seg.file_bytes()) else { return start };
    let Some((_, entries)) = decode_index(&bytes, seg.base, file_bytes as usize) else { return start };
    let relative = offset - seg.base;
    let Some(entry) = entries.iter().rev().find(|e| u64::from(e.relative_offset) <= relative) else { return start };
    let (position, first) = (u64::from(entry.position), seg.base + u64::from(entry.relative_offset));
    // An index is a cache: trust an entry only if a valid frame is there.
    match seg.frame(position, first) {
        Ok(Ok(_)) => (position, first),
        _ => start,
    }
}

fn read_io(path: &Path, e: io::Error) -> ReadError {
    ReadError::Io(IoError::new("read", path, e))
}

/// A topic's directory as listed at one moment.
#[derive(Debug)]
struct TopicFiles {
    fs: Arc<dyn ReadStorage>,
    /// The data directory.
    root: PathBuf,
    dir: PathBuf,
    /// Base offsets of the segment files, ascending.
    bases: Vec<u64>,
    /// The checkpoint's newest valid value, if any.
    checkpoint: Result<Option<Checkpoint>, Corruption>,
}

impl TopicFiles {
    /// Lists the topic `name` of the data directory `data`.
    fn read(data: &Directory, name: &str) -> Result<TopicFiles, TopicError> {
        check_topic_name(name)?;
        let fs = &*data.fs;
        let dir = data.path.join(TOPICS_DIR).join(name);
        if !fs.exists(&dir.join(TOPIC_FILE)) {
            return Err(TopicError::NotFound { name: name.to_owned() });
        }
        let bases = segment_bases(fs, &dir).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => TopicError::NotFound { name: name.to_owned() },
            _ => TopicError::Io(IoError::new("list", &dir, e)),
        })?;
        let path = dir.join(CHECKPOINT_FILE);
        let checkpoint = match read_slot_file::<Checkpoint>(fs, &path) {
            Ok(slots) => Ok(slots.map(|(_, value)| value)),
            Err(SlotFileRead::Damaged(damage)) => Err(damage),
            // A topic whose first open has not written one yet.
            Err(SlotFileRead::Io(e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(SlotFileRead::Io(e)) => return Err(TopicError::Io(IoError::new("read", &path, e))),
        };
        Ok(TopicFiles { fs: data.fs.clone(), root: data.path.clone(), dir, bases, checkpoint })
    }

    fn config(&self) -> Result<TopicConfig, TopicError> {
        TopicConfig::read(&*self.fs, &self.dir.join(TOPIC_FILE))
    }

    fn segment_path(&self, base: u64) -> PathBuf {
        self.dir.join(segment_file_name(base, SEGMENT_SUFFIX))
    }

    /// Recovery's plan for the topic as it is now (`log/recovery/plan.rs`).
    /// With `live` (a process holds the directory), a clean-shutdown record
    /// is not trusted: an engine marks the checkpoint unclean when it opens
    /// the topic, and may be about to.
    fn plan(&self, live: bool) -> Plan {
        let checkpoint = self.checkpoint.clone().ok().flatten();
        let checkpoint = checkpoint.map(|c| if live { Checkpoint { clean: None, ..c } } else { c });
        Plan::new(&self.bases, checkpoint, RecoveryMode::Normal)
    }

    /// The clean-shutdown record, if the last segment is to end exactly where
    /// it says.
    fn clean(&self, live: bool) -> Option<CleanMark> {
        self.plan(live).clean
    }

    /// What an invalid frame in segment `i` means (the module's rules).
    fn cut_kind(&self, i: usize, live: bool) -> CutKind {
        self.plan(live).cut_kind(i, live)
    }

    /// The consumer groups' offset files.
    fn groups(&self, oldest: u64, end: u64) -> Result<Vec<GroupSummary>, TopicError> {
        let mut groups = Vec::new();
        for (name, path) in self.group_files()? {
            let mut group = GroupSummary {
                name,
                committed: None,
                committed_at_us: None,
                lag: end.saturating_sub(oldest),
                damage: None,
            };
            match read_slot_file::<CommittedOffset>(&*self.fs, &path) {
                Ok(Some((_, saved))) => {
                    group.committed = Some(Offset::new(saved.offset));
                    group.committed_at_us = Some(saved.at_us);
                    group.lag = end.saturating_sub(saved.offset);
                }
                Ok(None) => {}
                Err(SlotFileRead::Damaged(damage)) => {
                    group.lag = 0;
                    group.damage = Some(damage);
                }
                Err(SlotFileRead::Io(e)) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(SlotFileRead::Io(e)) => return Err(TopicError::Io(IoError::new("read", &path, e))),
            }
            groups.push(group);
        }
        Ok(groups)
    }

    /// `(group, path)` of every `groups/<group>.offset` file, by name.
    fn group_files(&self) -> Result<Vec<(String, PathBuf)>, TopicError> {
        let dir = self.dir.join(GROUPS_DIR);
        let mut files: Vec<(String, PathBuf)> = list_dir(&*self.fs, &dir)
            .map_err(|e| TopicError::Io(IoError::new("list", &dir, e)))?
            .into_iter()
            .filter_map(|file| {
                let group = file.strip_suffix(OFFSET_SUFFIX)?;
                check_group_name(group).is_ok().then(|| (group.to_owned(), dir.join(&file)))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// The state of the worker groups `names`, with the dead letters counted
    /// by `dead_letters` (group -> count, `None` if unknown).
    fn workers(
        &self,
        names: Vec<String>,
        end: u64,
        dead_letter_topic: &str,
        dead_letters: Option<&HashMap<String, u64>>,
    ) -> Result<Vec<WorkerSummary>, TopicError> {
        let mut workers = Vec::new();
        let now_us = now_us();
        for name in names {
            let mut worker = WorkerSummary {
                name: name.clone(),
                low_water: Offset::new(0),
                settled_above: 0,
                attempted: 0,
                retry_scheduled: 0,
                rejected: 0,
                lag: 0,
                dead_letter_topic: dead_letter_topic.to_owned(),
                dead_lettered: dead_letters.map(|counts| counts.get(&name).copied().unwrap_or(0)),
                damage: None,
            };
            let state = match read_worker_state(&*self.fs, &self.dir, &name) {
                Ok(Some(state)) => state.persisted,
                // A group being created: no state file yet.
                Ok(None) => continue,
                Err(WorkerRead::Damaged(damage)) => {
                    worker.damage = Some(damage);
                    workers.push(worker);
                    continue;
                }
                Err(WorkerRead::Io(e)) => return Err(TopicError::Io(e)),
            };
            let open = state.facts.values();
            worker.low_water = Offset::new(state.low);
            worker.settled_above = state.settled.len();
            worker.attempted = open.clone().filter(|f| f.attempts > 0 && !f.rejected).count() as u64;
            worker.retry_scheduled =
                open.clone().filter(|f| f.attempts > 0 && !f.rejected && f.retry_at_us > now_us).count() as u64;
            worker.rejected = open.filter(|f| f.rejected).count() as u64;
            worker.lag = end.saturating_sub(state.low).saturating_sub(state.settled.len());
            workers.push(worker);
        }
        Ok(workers)
    }

    /// The names of the directories in `queues/`, sorted.
    fn worker_groups(&self) -> Result<Vec<String>, TopicError> {
        let dir = self.dir.join(QUEUES_DIR);
        let mut names: Vec<String> = list_dir(&*self.fs, &dir)
            .map_err(|e| TopicError::Io(IoError::new("list", &dir, e)))?
            .into_iter()
            .filter(|name| check_group_name(name).is_ok() && self.fs.is_dir(&dir.join(name)))
            .collect();
        names.sort();
        Ok(names)
    }
}

/// What [`measure_segment`] found.
#[derive(Debug)]
struct Measured {
    /// Offset after the segment's last valid record.
    end: u64,
    /// Position after its last valid frame.
    bytes: u64,
    file_bytes: u64,
    /// Where its valid data ends early, if it does.
    fault: Option<Corruption>,
    /// The clean shutdown's record cannot describe this (last) segment, so
    /// it was scanned instead.
    mark_disagrees: bool,
}

/// Measures one segment for [`Directory::topic`]. A sealed segment (one
/// with `next_base` after it) is measured by its index file when that is
/// valid; the last one by the clean shutdown's record when there is one
/// and it could describe the file (its next offset at least the base, its
/// position within the file); any other is scanned.
fn measure_segment(
    files: &TopicFiles,
    path: &Path,
    base: u64,
    next_base: Option<u64>,
    clean: Option<CleanMark>,
) -> io::Result<Measured> {
    let file_bytes = files.fs.file_len(path)?;
    let mut mark_disagrees = false;
    match (next_base, clean) {
        (None, Some(clean)) => {
            let (end, bytes) = (clean.next_offset, u64::from(clean.end));
            // Trusted only if it could describe this file; else it is scanned.
            if end >= base && (SEGMENT_HEADER_BYTES as u64..=file_bytes).contains(&bytes) {
                return Ok(Measured { end, bytes, file_bytes, fault: None, mark_disagrees });
            }
            mark_disagrees = true;
        }
        (Some(next), _) => {
            let index = files.dir.join(segment_file_name(base, INDEX_SUFFIX));
            let read = files.fs.read_file(&index).ok();
            if let Some((end, _)) = read.and_then(|bytes| decode_index(&bytes, base, file_bytes as usize)) {
                return Ok(Measured { end: next, bytes: end as u64, file_bytes, fault: None, mark_disagrees });
            }
        }
        (None, None) => {}
    }
    let mut seg = SegmentFile::open(&*files.fs, path.to_path_buf(), base)?;
    if let Err(fault) = seg.header()? {
        let fault = Some(fault.corruption(path));
        return Ok(Measured { end: base, bytes: 0, file_bytes, fault, mark_disagrees });
    }
    let scan = scan_segment(&mut seg, base, &mut |_| {})?;
    let fault = scan.ends_early(next_base).map(|(position, reason)| corrupt(path, position as usize, reason));
    Ok(Measured { end: scan.next_offset, bytes: scan.end, file_bytes, fault, mark_disagrees })
}

/// The note for a clean-shutdown record that cannot describe the last
/// segment (what opening the topic then does: `open_topic`'s rule 1).
const CHECKPOINT_DISAGREES_NOTE: &str = "the checkpoint's clean-shutdown record disagrees with the segment files, \
     so the last segment was scanned: opening the topic fails until it is opened in repair mode \
     (`tollgate repair`), which rewrites the checkpoint";

/// The checkpoint's clean-shutdown mark, if it records one for the last of
/// `bases`: the offset and position where its data ends.
fn clean_mark(checkpoint: Option<Checkpoint>, bases: &[u64]) -> Option<CleanMark> {
    Plan::new(bases, checkpoint, RecoveryMode::Normal).clean
}

/// Byte and file counts for [`Directory::verify`], with its progress callback.
struct Counter<'a> {
    files: u64,
    bytes: u64,
    total: u64,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl Counter<'_> {
    fn add(&mut self, bytes: u64) {
        self.bytes += bytes;
        (self.progress)(self.bytes, self.total.max(self.bytes));
    }
}

/// Checks one topic ([`Directory::verify`]).
fn verify_topic(data: &Directory, name: &str, live: bool, count: &mut Counter<'_>) -> TopicVerdict {
    let mut verdict =
        TopicVerdict { name: name.to_owned(), segments: 0, records: 0, cut: None, damaged: Vec::new(), notes: vec![] };
    let files = match TopicFiles::read(data, name) {
        Ok(files) => files,
        Err(TopicError::NotFound { .. }) => {
            verdict.notes.push("the topic was deleted while being checked".to_owned());
            return verdict;
        }
        Err(e) => {
            verdict.notes.push(format!("cannot list the topic: {e}"));
            return verdict;
        }
    };
    count.files += 1;
    count.add(TOPIC_BYTES as u64);
    if files.fs.exists(&files.dir.join(CHECKPOINT_FILE)) {
        count.files += 1;
        count.add(SLOT_FILE_BYTES as u64);
    }
    match files.config() {
        Ok(_) => {}
        Err(TopicError::Corrupt(damage)) => verdict.damaged.push(damage),
        Err(e) => verdict.notes.push(format!("cannot read topic.conf: {e}")),
    }
    if let Err(damage) = &files.checkpoint {
        verdict.damaged.push(damage.clone());
    }
    if let Err(e) = verify_segments(&files, live, &mut verdict, count) {
        verdict.notes.push(format!("stopped reading segments: {e}"));
    }
    verify_groups(&files, &mut verdict, count);
    verdict
}

/// Checks the segments of a topic, stopping at the first cut.
fn verify_segments(
    files: &TopicFiles,
    live: bool,
    verdict: &mut TopicVerdict,
    count: &mut Counter<'_>,
) -> Result<(), IoError> {
    for (i, &base) in files.bases.iter().enumerate() {
        let path = files.segment_path(base);
        let mut seg = match SegmentFile::open(&*files.fs, path.clone(), base) {
            Ok(seg) => seg,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                verdict.notes.push(format!("{} was removed while being checked (retention)", Escaped::path(&path)));
                continue;
            }
            Err(e) => return Err(IoError::new("open", &path, e)),
        };
        verdict.segments += 1;
        count.files += 1;
        let io = |e| IoError::new("read", &path, e);
        let (position, reason, first_lost) =
            match check_segment(files, i, live, &mut seg, verdict, count).map_err(io)? {
                SegmentCheck::Valid => continue,
                SegmentCheck::Cut { position, reason, first_lost } => (position, reason, first_lost),
                SegmentCheck::NotAtCleanMark { end, next_offset, mark } => {
                    match clean_mark_now(files) {
                        Some(generation) => {
                            checkpoint_disagrees(files, generation, verdict, &path, (end, next_offset), mark)
                        }
                        None => verdict.notes.push(OPENED_DURING_CHECK.to_owned()),
                    }
                    return Ok(());
                }
            };
        let mut kind = files.cut_kind(i, live);
        let last = i + 1 == files.bases.len();
        // The last segment is held to the clean shutdown's record: unless an
        // engine opened the topic since the check began and is writing it.
        if kind == CutKind::Corrupt && last && files.clean(live).is_some() && clean_mark_now(files).is_none() {
            kind = CutKind::IncompleteTail;
            verdict.notes.push(OPENED_DURING_CHECK.to_owned());
        }
        let later = &files.bases[i + 1..];
        let mut cut = Cut {
            kind,
            at: corrupt(&path, position as usize, reason),
            first_lost: Offset::new(first_lost),
            bytes_after: 0,
            later_segments: later.len(),
            later_bytes: later.iter().map(|&b| files.fs.file_len(&files.segment_path(b)).unwrap_or(0)).sum(),
        };
        let kept = if cut.removes_its_file() { 0 } else { position };
        cut.bytes_after = seg.file_bytes().map_err(io)?.saturating_sub(kept);
        verdict.cut = Some(cut);
        return Ok(());
    }
    Ok(())
}

/// A note for a topic that an engine opened while it was being checked.
const OPENED_DURING_CHECK: &str =
    "an engine opened the directory while it was being checked: its last segment was read as it was being written";

/// Whether the checkpoint still records the clean shutdown the check
/// started from, and nobody holds the directory: the generation of its
/// slot then, else `None` (an engine has opened the topic since, or holds
/// the directory).
fn clean_mark_now(files: &TopicFiles) -> Option<u64> {
    if files.fs.lock_held(&files.root.join(LOCK_FILE)) {
        return None;
    }
    let (generation, value) =
        read_slot_file::<Checkpoint>(&*files.fs, &files.dir.join(CHECKPOINT_FILE)).ok().flatten()?;
    let then = files.checkpoint.as_ref().ok().copied().flatten();
    (then == Some(value) && clean_mark(Some(value), &files.bases).is_some()).then_some(generation)
}

/// Adds the damage, and a note, for a checkpoint whose clean-shutdown record
/// `mark` (in the slot of `generation`) disagrees with the last segment,
/// `path`, whose valid frames end at position `end` with `next_offset`.
fn checkpoint_disagrees(
    files: &TopicFiles,
    generation: u64,
    verdict: &mut TopicVerdict,
    path: &Path,
    (end, next_offset): (u64, u64),
    mark: CleanMark,
) {
    let mut note = format!(
        "the checkpoint records a clean shutdown with the data of {} ending at byte {}, next offset {}; \
         its frames are all valid and end at byte {end}, next offset {next_offset}",
        Escaped::path(&path),
        mark.end,
        mark.next_offset
    );
    if mark.next_offset > next_offset {
        note.push_str(&format!(" (offsets {next_offset}..{} are not there)", mark.next_offset));
    }
    note.push_str(
        ". Opening the topic fails until it is opened in repair mode (`tollgate repair`), \
         which scans every segment, cuts nothing here and rewrites the checkpoint",
    );
    verdict.notes.push(note);
    let slot = (generation % 2) as usize;
    let at = SLOT_FILE_HEADER_BYTES + slot * SLOT_BYTES;
    verdict.damaged.push(corrupt(&files.dir.join(CHECKPOINT_FILE), at, CHECKPOINT_DISAGREES));
}

/// Why a checkpoint whose clean-shutdown record does not match the last
/// segment is damage.
const CHECKPOINT_DISAGREES: &str = "its clean-shutdown record disagrees with the last segment's data";

/// What [`check_segment`] found.
#[derive(Debug)]
enum SegmentCheck {
    /// Every frame is valid, and the segment ends where it should.
    Valid,
    /// The valid data ends early at `position`, for `reason`; `first_lost`
    /// is the offset the first record lost there would have.
    Cut { position: u64, reason: &'static str, first_lost: u64 },
    /// The last segment's frames are all valid, but end (at `end`, with
    /// `next_offset`) elsewhere than the clean shutdown recorded (`mark`).
    NotAtCleanMark { end: u64, next_offset: u64, mark: CleanMark },
}

/// Checks segment `i` of a topic: its header, every frame, that it ends
/// where the next segment begins (or, after a clean shutdown, where the
/// checkpoint says), and its index file.
fn check_segment(
    files: &TopicFiles,
    i: usize,
    live: bool,
    seg: &mut SegmentFile,
    verdict: &mut TopicVerdict,
    count: &mut Counter<'_>,
) -> io::Result<SegmentCheck> {
    let base = seg.base;
    let header = seg.header()?;
    let mut reported = 0;
    let mut read = |read_bytes: u64| {
        count.add(read_bytes - reported);
        reported = read_bytes;
    };
    if let Err(fault) = header {
        read(seg.read_bytes);
        // Reported where the header's check failed, as recovery reports it;
        // the cut removes the whole file.
        let at = fault.corruption(&seg.path);
        return Ok(SegmentCheck::Cut { position: at.position, reason: at.reason, first_lost: base });
    }
    let scan = scan_segment(seg, base, &mut read)?;
    verdict.records += scan.next_offset - base;
    let next_base = files.bases.get(i + 1).copied();
    if let Some((position, reason)) = scan.ends_early(next_base) {
        return Ok(SegmentCheck::Cut { position, reason, first_lost: scan.next_offset });
    }
    Ok(match next_base {
        Some(_) => {
            check_index(files, seg, scan.end, verdict, count);
            SegmentCheck::Valid
        }
        None => match files.clean(live) {
            Some(mark) if (u64::from(mark.end), mark.next_offset) != (scan.end, scan.next_offset) => {
                SegmentCheck::NotAtCleanMark { end: scan.end, next_offset: scan.next_offset, mark }
            }
            _ => SegmentCheck::Valid,
        },
    })
}

/// Checks a sealed segment's index file, if it has one: a damaged or stale
/// index is rebuilt when the segment is read, so it is a note, not damage.
fn check_index(
    files: &TopicFiles,
    seg: &mut SegmentFile,
    end: u64,
    verdict: &mut TopicVerdict,
    count: &mut Counter<'_>,
) {
    let base = seg.base;
    let path = files.dir.join(segment_file_name(base, INDEX_SUFFIX));
    let Ok(bytes) = files.fs.read_file(&path) else { return };
    count.files += 1;
    count.add(bytes.len() as u64);
    let file_bytes = seg.file_bytes().unwrap_or(0) as usize;
    let agrees = decode_index(&bytes, base, file_bytes).is_some_and(|(index_end, _)| index_end as u64 == end);
    if !agrees {
        verdict
            .notes
            .push(format!("{} is damaged or stale; it is rebuilt when the segment is read", Escaped::path(&path)));
    }
}

/// Checks the consumer groups' offset files and the worker groups' state
/// files and journals.
fn verify_groups(files: &TopicFiles, verdict: &mut TopicVerdict, count: &mut Counter<'_>) {
    match files.group_files() {
        Ok(groups) => {
            for (_, path) in groups {
                count.files += 1;
                count.add(SLOT_FILE_BYTES as u64);
                match read_slot_file::<CommittedOffset>(&*files.fs, &path) {
                    Ok(_) => {}
                    Err(SlotFileRead::Damaged(damage)) => verdict.damaged.push(damage),
                    Err(SlotFileRead::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(SlotFileRead::Io(e)) => {
                        verdict.notes.push(format!("cannot read {}: {e}", Escaped::path(&path)))
                    }
                }
            }
        }
        Err(e) => verdict.notes.push(format!("cannot list the consumer groups: {e}")),
    }
    let workers = match files.worker_groups() {
        Ok(workers) => workers,
        Err(e) => return verdict.notes.push(format!("cannot list the worker groups: {e}")),
    };
    for name in workers {
        match read_worker_state(&*files.fs, &files.dir, &name) {
            Ok(None) => {}
            Ok(Some(state)) => {
                count.files += 1 + u64::from(state.journal_bytes > 0);
                count.add(state.state_bytes + state.journal_bytes);
                if state.journal_header_damaged {
                    verdict.notes.push(format!(
                        "worker group {name:?}: its journal's header is damaged in front of no entry (a crash while creating it; nothing is lost)"
                    ));
                }
            }
            Err(WorkerRead::Damaged(damage)) => verdict.damaged.push(damage),
            Err(WorkerRead::Io(e)) => verdict.notes.push(format!("worker group {name:?}: {e}")),
        }
    }
}

/// Why a two-slot file could not be read.
#[derive(Debug)]
enum SlotFileRead {
    /// Wrong magic or size, a newer version, or no valid slot although both
    /// were written.
    Damaged(Corruption),
    Io(io::Error),
}

/// Reads a two-slot file, with the engine's checks (`SlotFile::open`): its
/// newest valid slot, if any.
fn read_slot_file<V: SlotValue>(fs: &dyn ReadStorage, path: &Path) -> Result<Option<(u64, V)>, SlotFileRead> {
    let bytes = fs.read_file(path).map_err(SlotFileRead::Io)?;
    let damaged = |reason| SlotFileRead::Damaged(corrupt(path, 0, reason));
    match check_slot_file::<V>(&bytes) {
        SlotFileCheck::HalfCreated => Ok(None),
        SlotFileCheck::NotSlotFile => Err(damaged(NOT_SLOT_FILE)),
        SlotFileCheck::DamagedHeader(position) => {
            Err(SlotFileRead::Damaged(Corruption { file: path.into(), position, reason: DAMAGED_SLOT_HEADER }))
        }
        SlotFileCheck::Newer(_) => Err(SlotFileRead::Damaged(corrupt(path, SLOT_FILE_VERSION_AT, NEWER_VERSION))),
        SlotFileCheck::Valid(newest) => Ok(newest),
        SlotFileCheck::UsedUp(position) => {
            Err(SlotFileRead::Damaged(Corruption { file: path.into(), position, reason: GENERATIONS_USED_UP }))
        }
        SlotFileCheck::NoValidSlot => Err(SlotFileRead::Damaged(corrupt(path, SLOT_FILE_HEADER_BYTES, NO_VALID_SLOT))),
    }
}

/// Why a worker group's saved state could not be read.
#[derive(Debug)]
enum WorkerRead {
    Damaged(Corruption),
    Io(IoError),
}

/// Reads `queues/<group>/state` and replays its journal with the engine's
/// reader (`GroupFiles::read`), without writing them out again. `None` if
/// there is no state file (a group being created, or a directory removed
/// meanwhile).
fn read_worker_state(fs: &dyn ReadStorage, topic_dir: &Path, group: &str) -> Result<Option<SavedGroup>, WorkerRead> {
    GroupFiles::new(topic_dir, group).read(fs).map_err(|e| match e {
        TopicError::Corrupt(damage) => WorkerRead::Damaged(damage),
        TopicError::NewerVersion { path, .. } => {
            // The version is at byte 8 of the state file and of the journal.
            WorkerRead::Damaged(corrupt(&path, QSTATE_VERSION_AT, NEWER_VERSION))
        }
        TopicError::Io(e) => WorkerRead::Io(e),
        // `GroupFiles::read` fails only in the three ways above.
        other => WorkerRead::Io(IoError::new("read", topic_dir, io::Error::other(other.to_string()))),
    })
}

/// Scans a segment's frames from its first with the engine's scanner
/// (`log/scan.rs`), as recovery does: every frame checked completely, in
/// offset order from the segment's base, until the first invalid one or the
/// end of the data. `read` is told the segment's bytes read so far as the
/// scan goes on.
fn scan_segment(seg: &mut SegmentFile, base: u64, read: &mut dyn FnMut(u64)) -> io::Result<FrameScan> {
    let reported = seg.read_bytes;
    let mut source = Progress { seg, read, reported };
    let scan = scan_frames(&mut source, SEGMENT_HEADER_BYTES as u64, base, |_, _| {})?;
    (source.read)(source.seg.read_bytes);
    Ok(scan)
}

/// Checks the header of a segment file holding `bytes` (named for `base`)
/// and scans its frames as `inspect` reads a directory: positional reads
/// through a window of `window_bytes`. For the `segment_recovery` fuzz
/// target (`crate::fuzzing::scan_segment_windowed`), which compares it
/// with the scan of a mapping that recovery does.
#[cfg(feature = "fuzzing")]
pub(crate) fn scan_segment_bytes(
    bytes: &[u8],
    base: u64,
    window_bytes: usize,
) -> io::Result<(Result<(), HeaderFault>, FrameScan)> {
    /// A file's bytes in memory, read with positional reads.
    #[derive(Debug)]
    struct InMemoryFile(Vec<u8>);

    impl ReadAt for InMemoryFile {
        fn len(&self) -> io::Result<u64> {
            Ok(self.0.len() as u64)
        }

        fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
            let rest = self.0.get(usize::try_from(position).unwrap_or(usize::MAX)..).unwrap_or_default();
            let n = buf.len().min(rest.len());
            buf[..n].copy_from_slice(&rest[..n]);
            Ok(n)
        }
    }

    let mut seg = SegmentFile {
        path: PathBuf::from(segment_file_name(base, SEGMENT_SUFFIX)),
        base,
        file: Box::new(InMemoryFile(bytes.to_vec())),
        window: Vec::new(),
        window_len: 0,
        window_at: 0,
        read_bytes: 0,
        window_bytes: window_bytes.max(1),
    };
    let header = seg.header()?;
    Ok((header, scan_segment(&mut seg, base, &mut |_| {})?))
}

/// A segment file read for the scanner, reporting progress as it goes.
struct Progress<'a> {
    seg: &'a mut SegmentFile,
    read: &'a mut dyn FnMut(u64),
    reported: u64,
}

impl FrameSource for Progress<'_> {
    type Error = io::Error;

    fn frame(&mut self, position: u64, expected: u64) -> io::Result<Result<FrameInfo, FrameFault>> {
        if self.seg.read_bytes - self.reported >= PROGRESS_STEP_BYTES {
            self.reported = self.seg.read_bytes;
            (self.read)(self.reported);
        }
        self.seg.frame(position, expected)
    }

    fn zeros_from(&mut self, position: u64) -> io::Result<bool> {
        self.seg.zeros_from(position)
    }
}

/// Bytes read between two progress reports of a scan.
const PROGRESS_STEP_BYTES: u64 = 4 << 20;

/// Bytes read from a segment file at a time.
const WINDOW_BYTES: usize = 4 << 20;

/// A segment file read with positional reads through a window of its bytes.
#[derive(Debug)]
struct SegmentFile {
    path: PathBuf,
    base: u64,
    file: Box<dyn ReadAt>,
    /// `window[..window_len]` holds the file's bytes from `window_at` on,
    /// as they were when read.
    window: Vec<u8>,
    window_len: usize,
    window_at: u64,
    /// Bytes read from the file so far.
    read_bytes: u64,
    /// Bytes to read at a time (at least; a larger frame is read whole).
    window_bytes: usize,
}

impl SegmentFile {
    fn open(fs: &dyn ReadStorage, path: PathBuf, base: u64) -> io::Result<SegmentFile> {
        let file = fs.open_read(&path)?;
        Ok(SegmentFile {
            path,
            base,
            file,
            window: Vec::new(),
            window_len: 0,
            window_at: 0,
            read_bytes: 0,
            window_bytes: WINDOW_BYTES,
        })
    }

    fn file_bytes(&self) -> io::Result<u64> {
        self.file.len()
    }

    /// Checks the segment's header against its base offset.
    fn header(&mut self) -> io::Result<Result<(), HeaderFault>> {
        let base = self.base;
        Ok(check_header(self.bytes_at(0, SEGMENT_HEADER_BYTES)?, base))
    }

    /// The frame at `position`, whose first offset must be `expected`,
    /// checked completely: its header and its bytes. Once it is valid, its
    /// bytes are in the window ([`SegmentFile::frame_bytes`]).
    fn frame(&mut self, position: u64, expected: u64) -> io::Result<Result<FrameInfo, FrameFault>> {
        let head = self.bytes_at(position, FRAME_HEADER_BYTES)?;
        let frame_bytes = if head.len() >= 4 { u32_at(head, FRAME_LEN_AT) as usize } else { 0 };
        Ok(check_frame(self.bytes_at(position, frame_bytes.max(FRAME_HEADER_BYTES))?, expected))
    }

    /// The bytes of the frame `info` that [`SegmentFile::frame`] just
    /// checked at `position`.
    fn frame_bytes(&self, position: u64, info: FrameInfo) -> &[u8] {
        let at = (position - self.window_at) as usize;
        &self.window[at..at + info.len]
    }

    /// Whether every byte from `position` to the end of the file is zero.
    fn zeros_from(&mut self, mut position: u64) -> io::Result<bool> {
        loop {
            let window_bytes = self.window_bytes;
            let bytes = self.bytes_at(position, window_bytes)?;
            if bytes.is_empty() {
                return Ok(true);
            }
            if !all_zero(bytes) {
                return Ok(false);
            }
            position += bytes.len() as u64;
        }
    }

    /// Forgets the bytes read, so that the next read sees the file as it is
    /// then (a live segment grows).
    fn forget(&mut self) {
        self.window_len = 0;
    }

    /// The file's bytes from `position` on, as far as they were read: at
    /// least `want` of them, unless the file ends first.
    fn bytes_at(&mut self, position: u64, want: usize) -> io::Result<&[u8]> {
        let window_end = self.window_at + self.window_len as u64;
        if position < self.window_at || position + want as u64 > window_end {
            self.read_window(position, want)?;
        }
        Ok(&self.window[(position - self.window_at) as usize..self.window_len])
    }

    /// Reads the window from `position`: `want` bytes or a window's worth,
    /// whichever is more, or up to the end of the file.
    fn read_window(&mut self, position: u64, want: usize) -> io::Result<()> {
        let file_bytes = self.file_bytes()?;
        let len = (want.max(self.window_bytes) as u64).min(file_bytes.saturating_sub(position)) as usize;
        if self.window.len() < len {
            self.window.resize(len, 0);
        }
        let mut filled = 0;
        while filled < len {
            match self.file.read_at(&mut self.window[filled..len], position + filled as u64) {
                // The file was truncated since its length was read.
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.window_at = position;
        self.window_len = filled;
        self.read_bytes += filled as u64;
        Ok(())
    }
}

/// The names in a directory; none if it does not exist.
fn list_dir(fs: &dyn ReadStorage, dir: &Path) -> io::Result<Vec<String>> {
    match fs.list_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        listed => listed,
    }
}

/// Bytes of all files under `dir` (what verify reads, about).
fn tree_bytes(fs: &dyn ReadStorage, dir: &Path) -> u64 {
    let Ok(names) = fs.list_dir(dir) else { return 0 };
    names
        .iter()
        .map(|name| {
            let path = dir.join(name);
            if fs.is_dir(&path) { tree_bytes(fs, &path) } else { fs.file_len(&path).unwrap_or(0) }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::log::record::{encode_entry_parts, plain_entry_bytes, seal_frame};
    use crate::log::segment::encode_header;
    use crate::log::slots::{encode_slot, encode_slot_file_header};
    use crate::{Engine, Message};
    use crate::{OpenError, TopicConfig};

    /// A segment file's bytes: its header, then one frame per batch of
    /// payloads, with offsets from `base`.
    fn segment(base: u64, batches: &[&[&[u8]]]) -> Vec<u8> {
        let mut bytes = vec![0; SEGMENT_HEADER_BYTES];
        encode_header(&mut bytes, base);
        let mut offset = base;
        for batch in batches {
            let len = FRAME_HEADER_BYTES + batch.iter().map(|p| plain_entry_bytes(p.len())).sum::<usize>();
            let mut frame = vec![0; len];
            let mut at = FRAME_HEADER_BYTES;
            for payload in *batch {
                let entry = plain_entry_bytes(payload.len());
                encode_entry_parts(&mut frame[at..at + entry], &[], 0, std::iter::empty(), payload);
                at += entry;
            }
            seal_frame(&mut frame, batch.len() as u32, offset, 1_000_000);
            offset += batch.len() as u64;
            bytes.extend_from_slice(&frame);
        }
        bytes
    }

    /// `bytes` as the segment file at `base` in `dir`, read through a window
    /// of `window_bytes`.
    fn open(dir: &Path, base: u64, bytes: &[u8], window_bytes: usize) -> SegmentFile {
        let path = dir.join(segment_file_name(base, SEGMENT_SUFFIX));
        std::fs::write(&path, bytes).unwrap();
        let mut seg = SegmentFile::open(&OsStorage::new(dir), path, base).unwrap();
        seg.window_bytes = window_bytes;
        seg
    }

    #[test]
    fn scan_checks_frames_across_windows_and_frames_larger_than_one() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![7u8; 300];
        let small: &[&[u8]] = &[b"a", b"bc"];
        let bytes = segment(10, &[small, &[&big], small, &[b"d"]]);
        let mut seg = open(dir.path(), 10, &bytes, 16);
        assert_eq!(seg.header().unwrap(), Ok(()));
        let scan = scan_segment(&mut seg, 10, &mut |_| {}).unwrap();
        assert_eq!(scan, FrameScan { end: bytes.len() as u64, next_offset: 16, fault: None });
    }

    #[test]
    fn zeros_after_the_data_end_it_and_anything_else_is_a_fault() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = segment(0, &[&[b"one"], &[b"two"]]);
        let data_end = bytes.len() as u64;
        bytes.resize(bytes.len() + 100, 0);
        let mut seg = open(dir.path(), 0, &bytes, 32);
        let scan = scan_segment(&mut seg, 0, &mut |_| {}).unwrap();
        assert_eq!(scan, FrameScan { end: data_end, next_offset: 2, fault: None });
        // A frame size of zero with bytes after it: a frame being written.
        let last = bytes.len() - 1;
        bytes[last] = 1;
        let mut seg = open(dir.path(), 0, &bytes, 32);
        let scan = scan_segment(&mut seg, 0, &mut |_| {}).unwrap();
        assert_eq!(scan.fault, Some((data_end, FrameFault::End)));
        // A flipped bit in the second frame.
        let mut bytes = segment(0, &[&[b"one"], &[b"two"]]);
        let second = bytes.len() - 1;
        bytes[second] ^= 1;
        let mut seg = open(dir.path(), 0, &bytes, 4096);
        let scan = scan_segment(&mut seg, 0, &mut |_| {}).unwrap();
        let first_end = segment(0, &[&[b"one"]]).len() as u64;
        assert_eq!(scan, FrameScan { end: first_end, next_offset: 1, fault: Some((first_end, FrameFault::BadCrc)) });
    }

    #[test]
    fn a_frame_with_the_wrong_offset_or_a_short_file_is_a_fault() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = segment(5, &[&[b"x"]]);
        let mut seg = open(dir.path(), 5, &bytes, 4096);
        assert_eq!(seg.frame(SEGMENT_HEADER_BYTES as u64, 6).unwrap(), Err(FrameFault::BadOffset));
        let cut = &bytes[..bytes.len() - 1];
        let mut seg = open(dir.path(), 5, cut, 4096);
        assert_eq!(seg.frame(SEGMENT_HEADER_BYTES as u64, 5).unwrap(), Err(FrameFault::BadLength));
        // A header naming another base offset.
        let mut seg = open(dir.path(), 6, &bytes, 4096);
        assert!(matches!(seg.header().unwrap(), Err(HeaderFault::Bad { .. })));
    }

    #[test]
    fn slot_files_need_one_valid_slot_unless_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.offset");
        let mut bytes = vec![0; SLOT_FILE_BYTES];
        encode_slot_file_header(&mut bytes, OFFSET_MAGIC);
        let write = |bytes: &[u8]| std::fs::write(&path, bytes).unwrap();
        write(&bytes);
        assert!(matches!(read_slot_file::<CommittedOffset>(&OsStorage::new(dir.path()), &path), Ok(None)));
        let slot0 = SLOT_FILE_HEADER_BYTES;
        let slot1 = slot0 + SLOT_BYTES;
        encode_slot(&mut bytes[slot1..slot1 + SLOT_BYTES], 1, CommittedOffset { offset: 42, at_us: 7 });
        encode_slot(&mut bytes[slot0..slot0 + SLOT_BYTES], 2, CommittedOffset { offset: 50, at_us: 8 });
        let read = || {
            read_slot_file::<CommittedOffset>(&OsStorage::new(dir.path()), &path).unwrap().map(|(g, v)| (g, v.offset))
        };
        write(&bytes);
        assert_eq!(read(), Some((2, 50)));
        // A torn write damages one slot: the other one is read.
        bytes[slot0 + SLOT_A_AT] ^= 1;
        write(&bytes);
        assert_eq!(read(), Some((1, 42)));
        // Both damaged is not a torn write.
        bytes[slot1 + SLOT_A_AT] ^= 1;
        write(&bytes);
        let Err(SlotFileRead::Damaged(damage)) = read_slot_file::<CommittedOffset>(&OsStorage::new(dir.path()), &path)
        else {
            panic!("not damaged")
        };
        assert_eq!((damage.position, damage.reason), (SLOT_FILE_HEADER_BYTES as u64, "neither slot is valid"));
        // So is the wrong magic.
        let Err(SlotFileRead::Damaged(damage)) = read_slot_file::<Checkpoint>(&OsStorage::new(dir.path()), &path)
        else {
            panic!("accepted")
        };
        assert_eq!(damage.reason, NOT_SLOT_FILE);
    }

    #[test]
    fn invalid_frames_mean_what_recovery_makes_of_them() {
        let files = |checkpoint: Option<Checkpoint>| TopicFiles {
            fs: Arc::new(OsStorage::new(PathBuf::new())),
            root: PathBuf::new(),
            dir: PathBuf::new(),
            bases: vec![0, 100, 200],
            checkpoint: Ok(checkpoint),
        };
        // A clean shutdown: everything is trusted, the last segment too.
        let mark = CleanMark { next_offset: 250, end: 4000 };
        let clean = files(Some(Checkpoint { recovery_point: 200, clean: Some(mark) }));
        for i in 0..3 {
            assert_eq!(clean.cut_kind(i, false), CutKind::Corrupt);
        }
        // Unclean, recovery point at the second segment: from it on, a tail.
        let unclean = files(Some(Checkpoint { recovery_point: 100, clean: None }));
        let kinds: Vec<CutKind> = (0..3).map(|i| unclean.cut_kind(i, false)).collect();
        assert_eq!(kinds, [CutKind::Corrupt, CutKind::TornTail, CutKind::TornTail]);
        // In use: the last segment is being written, whatever the checkpoint says.
        for files in [&clean, &unclean] {
            assert_eq!(files.cut_kind(2, true), CutKind::IncompleteTail);
            assert_eq!(files.cut_kind(0, true), CutKind::Corrupt);
        }
        // No checkpoint: recovery scans everything.
        assert_eq!(files(None).cut_kind(0, false), CutKind::TornTail);
    }

    #[test]
    fn records_start_inside_batches_and_index_entries_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = Engine::open(dir.path()).unwrap();
            // Sealed segments with several index entries each.
            let config = TopicConfig { segment_bytes: 32 << 10, max_message_bytes: 1024, ..TopicConfig::default() };
            let topic = engine.create_topic("t", config).unwrap();
            for batch in 0..1000u64 {
                let messages = (0..3).map(|i| Message::new(format!("{}", batch * 3 + i)));
                topic.publish_batch(messages).unwrap();
            }
            assert!(topic.info().segments > 2);
        }
        let data = Directory::open(dir.path()).unwrap();
        assert_eq!(data.offsets("t").unwrap(), Offset::new(0)..Offset::new(3000));
        let read_all = |from: u64| {
            let mut records = data.records("t", Some(Offset::new(from))).unwrap();
            let mut payloads = Vec::new();
            while let Some(record) = records.next().unwrap() {
                assert_eq!(record.payload().as_ref(), record.offset().get().to_string().as_bytes());
                payloads.push(record.offset().get());
            }
            payloads
        };
        let starts = (0..3000).step_by(97).chain([1, 2999, 3000]);
        for from in starts.clone() {
            assert_eq!(read_all(from), (from..3000).collect::<Vec<u64>>());
        }
        // Index entries that decode but point between frames are not trusted.
        let mut damaged = 0;
        for file in std::fs::read_dir(dir.path().join("topics/t")).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "index") {
                let mut bytes = std::fs::read(&path).unwrap();
                for entry in 1..u32_at(&bytes, INDEX_COUNT_AT) as usize {
                    let at = INDEX_HEADER_BYTES + entry * INDEX_ENTRY_BYTES + 4;
                    let position = u32_at(&bytes, at);
                    put_u32(&mut bytes, at, position + 1);
                    damaged += 1;
                }
                let crc_at = bytes.len() - 4;
                let crc = crc(&bytes[..crc_at]);
                put_u32(&mut bytes, crc_at, crc);
                std::fs::write(&path, bytes).unwrap();
            }
        }
        assert!(damaged > 4);
        for from in starts {
            assert_eq!(read_all(from), (from..3000).collect::<Vec<u64>>());
        }
        let past = data.records("t", Some(Offset::new(3001))).unwrap_err();
        assert_eq!(past, Error::Read(ReadError::NotWritten { requested: 3001, next: 3000 }));
    }

    #[test]
    fn a_damaged_journal_header_is_damage_in_front_of_entries_and_noted_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = Engine::open(dir.path()).unwrap();
            let topic = engine.topic("t").unwrap();
            topic.publish_batch(["a", "b"]).unwrap();
            let worker = topic.worker("w").unwrap();
            worker.receive(Duration::from_secs(1)).unwrap().unwrap().ack().unwrap();
        }
        let topic_dir = dir.path().join("topics/t");
        let state = read_worker_state(&OsStorage::new(dir.path()), &topic_dir, "w").unwrap().unwrap();
        assert!(!state.journal_header_damaged);
        let journal = topic_dir.join("queues/w/journal");
        let mut bytes = std::fs::read(&journal).unwrap();
        bytes[QJOURNAL_HEADER_GENERATION_AT] ^= 1;
        std::fs::write(&journal, &bytes).unwrap();
        match read_worker_state(&OsStorage::new(dir.path()), &topic_dir, "w") {
            Err(WorkerRead::Damaged(damage)) => {
                assert_eq!((damage.file, damage.position), (journal.clone(), QJOURNAL_HEADER_CRC_AT as u64));
            }
            other => panic!("a damaged header in front of entries must be damage: {other:?}"),
        }
        // In front of no mark and no entry, it is what a crash while
        // creating the journal leaves: nothing is lost.
        bytes[QJOURNAL_MARKS_AT..].fill(0);
        std::fs::write(&journal, &bytes).unwrap();
        let state = read_worker_state(&OsStorage::new(dir.path()), &topic_dir, "w").unwrap().unwrap();
        assert!(state.journal_header_damaged);
        assert!(read_worker_state(&OsStorage::new(dir.path()), &topic_dir, "absent").unwrap().is_none());
    }

    /// The smallest segments, so that a few hundred records roll several.
    fn small_segments() -> TopicConfig {
        TopicConfig { segment_bytes: 4096, max_message_bytes: 1024, ..TopicConfig::default() }
    }

    /// Regression: `held_open` probed with a shared `flock`, so an engine
    /// opening the directory at that moment failed with `Locked`.
    #[cfg(target_os = "linux")]
    #[test]
    fn held_open_takes_no_lock_that_an_opening_engine_could_meet() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let data = Directory::open(dir.path()).unwrap();
        assert!(data.held_open());
        drop(engine);
        assert!(!data.held_open());
        let stop = AtomicBool::new(false);
        let (mut opened, mut locked) = (0u64, 0u64);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::black_box(data.held_open());
                }
            });
            // No waiting for the lock: a probe held for a moment must show.
            let at_once = crate::EngineConfig { lock_wait: Duration::ZERO, ..Default::default() };
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_millis(200) {
                match Engine::open_with(dir.path(), at_once) {
                    Ok(engine) => {
                        opened += 1;
                        drop(engine);
                    }
                    Err(OpenError::Locked { .. }) => locked += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
        assert!(opened > 0);
        assert_eq!(locked, 0, "{locked} of {} opens failed while held_open probed", opened + locked);
    }

    /// Regression: an engine that opened a cleanly shut down directory and
    /// appended while `verify` ran made its last segment look corrupt.
    #[test]
    fn verify_reads_a_topic_an_engine_opens_and_appends_to_during_the_check() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = Engine::open(dir.path()).unwrap();
            engine.topic("a").unwrap().publish_batch((0..10).map(|i| Message::new(format!("m{i}")))).unwrap();
        }
        let data = Directory::open(dir.path()).unwrap();
        let mut engine = None;
        let report = data
            .verify(|_, _| {
                if engine.is_none() {
                    let opened = Engine::open(dir.path()).unwrap();
                    opened.topic("a").unwrap().publish(b"new").unwrap();
                    engine = Some(opened);
                }
            })
            .unwrap();
        assert!(report.is_clean(), "{report:?}");
        let verdict = &report.topics[0];
        assert!(verdict.cut.as_ref().is_none_or(|cut| cut.kind == CutKind::IncompleteTail), "{verdict:?}");
        assert!(verdict.notes.iter().any(|n| n.contains("opened the directory while it was being checked")));
        drop(engine);
        assert!(data.verify(|_, _| {}).unwrap().is_clean());
    }

    /// Regression: a checkpoint with a valid CRC whose clean-shutdown record
    /// cannot describe the last segment (next offset 0) gave wrapped numbers.
    #[test]
    fn a_checkpoint_that_disagrees_with_the_segments_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = Engine::open(dir.path()).unwrap();
            let topic = engine.create_topic("t", small_segments()).unwrap();
            for i in 0..200 {
                topic.publish(format!("record {i:04} {}", "x".repeat(40))).unwrap();
            }
            assert!(topic.info().segments > 1);
        }
        let data = Directory::open(dir.path()).unwrap();
        let before = data.topic("t").unwrap();
        let last = before.segments.last().unwrap().base.get();
        assert!(last > 0 && before.end.get() == 200);
        // Both slots forged (newest: generation 9, next offset 0).
        let path = dir.path().join("topics/t").join(CHECKPOINT_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let slot0 = SLOT_FILE_HEADER_BYTES;
        let slot1 = slot0 + SLOT_BYTES;
        let forged = Checkpoint { recovery_point: last, clean: Some(CleanMark { next_offset: 0, end: 100 }) };
        encode_slot(&mut bytes[slot0..slot1], 8, forged);
        encode_slot(&mut bytes[slot1..slot1 + SLOT_BYTES], 9, forged);
        std::fs::write(&path, &bytes).unwrap();

        let summary = data.topic("t").unwrap();
        assert_eq!((summary.oldest.get(), summary.end.get()), (0, 200));
        assert_eq!(summary.segments.last().unwrap().end.get(), 200);
        assert!(summary.notes.iter().any(|n| n == CHECKPOINT_DISAGREES_NOTE), "{:?}", summary.notes);
        assert_eq!(data.offsets("t").unwrap(), Offset::new(0)..Offset::new(200));
        // Verify calls it the checkpoint's damage, not a cut losing data.
        let report = data.verify(|_, _| {}).unwrap();
        let verdict = &report.topics[0];
        assert!(!verdict.is_clean() && verdict.cut.is_none(), "{verdict:?}");
        assert_eq!(verdict.records, 200);
        let damage = &verdict.damaged[0];
        assert_eq!((damage.file.as_path(), damage.reason), (path.as_path(), CHECKPOINT_DISAGREES));
        assert_eq!(damage.position, slot1 as u64);
        // As it says: opening fails, repair cuts nothing and rewrites it.
        let open = Engine::open(dir.path()).unwrap().topic("t").map(|_| ());
        assert!(matches!(open, Err(TopicError::Corrupt(_))), "{open:?}");
        {
            let engine = Engine::open_with(
                dir.path(),
                crate::EngineConfig { recovery: crate::RecoveryMode::Repair, ..Default::default() },
            );
            let engine = engine.unwrap();
            let topic = engine.topic("t").unwrap();
            assert!(topic.recovery_report().cut.is_none());
            assert_eq!(topic.info().next, Offset::new(200));
        }
        assert!(data.verify(|_, _| {}).unwrap().is_clean());
    }

    /// Regression: `tail -f` kept reading a deleted topic's segment while
    /// listing the segments of the topic created again under its name.
    #[test]
    fn records_end_with_deleted_when_the_topic_is_created_again() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let topic = engine.create_topic("t", small_segments()).unwrap();
        topic.publish_batch((0..5).map(|i| Message::new(format!("old {i}")))).unwrap();
        let mut records = Directory::open(dir.path()).unwrap().records("t", None).unwrap();
        while records.next().unwrap().is_some() {}
        drop(topic);
        engine.delete_topic("t").unwrap();
        let topic = engine.create_topic("t", small_segments()).unwrap();
        for i in 0..400 {
            topic.publish(format!("new {i} {}", "y".repeat(40))).unwrap();
        }
        assert!(topic.info().segments > 2);
        assert_eq!(records.next(), Err(ReadError::Deleted));
    }
}
