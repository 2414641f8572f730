//! Recovery of a data directory whose files were damaged or forged: the
//! files of a directory written by a real engine, changed as the input says,
//! written to a fresh directory and opened four times. [`run`] lays the
//! directory out on a simulated disk (`SimDisk`) and opens it with engines
//! without a flusher thread (the `log_recovery` fuzz target,
//! `fuzz/fuzz_targets/log_recovery.rs`); [`run_on_files`] writes it to a
//! real directory (tmpfs if there is one) and opens it with `Engine::open`,
//! as it did before, for what only the real file system does (the
//! `log_recovery_files` target, 20× slower). `tests/fuzz_replay.rs` replays
//! the corpus both ways; `fuzz/seeds.py` writes its seed corpus.
//!
//! The four opens: (A) plain, publish a marker, commit a group, close; (B)
//! plain again; (C) with `repair`, publish a marker, close; (D) with
//! `repair` again. Checked on every input:
//!
//! - nothing panics; every error is typed, and every file it names (corrupt
//!   data, I/O, newer version) is inside the data directory;
//! - `verify()` is `Ok` or names a corrupt file inside the directory;
//! - recovery is idempotent: B finds what A left (the same records, byte for
//!   byte with their timestamps, or the same kind of error at each offset;
//!   the same `info().next` and `oldest`; a clean shutdown), and D what C left
//!   (on the simulated disk, B and D read back the first and last records
//!   and one in [`SAMPLE_STRIDE`] of the others, at the place in the stride
//!   that bits 2-4 of byte 0 pick; on files, every record A and C read);
//! - after a topic opens, group offsets on disk are at most its end;
//! - nothing outside the data directory is touched.
//!
//! When the input only damaged files (overwrote, flipped, truncated or
//! deleted them; no CRC made to match), it cannot have made a valid record,
//! so also: every record any read or subscription returns is the one the
//! engine wrote at that offset (or a marker); publishing works and reads
//! back; with `repair`, every record up to the end reads back and `verify`
//! passes; whenever `verify` passes, reads and a subscription agree. (What a
//! known bug breaks is checked only by [`run_with_known_bugs`].)
//!
//! Encoding: byte 0 picks the template directory (`byte % 4`, see
//! [`templates`]) and in bits 2-4 which records B and D read back; then up
//! to [`MAX_MUTATIONS`] mutations, each a byte (`byte % 12`) and its
//! operands, where `file` is two bytes, a role and an
//! index (see [`select_path`]); the input stops where the bytes run out:
//!
//! | op | mutation    | operands | forges |
//! |----|-------------|----------|--------|
//! | 0  | overwrite   | file, position (2), n, `n % 16 + 1` bytes | |
//! | 1  | flip a bit  | file, position (2), bit | |
//! | 2  | truncate    | file, length (2, modulo length + 1) | |
//! | 3  | delete      | file | |
//! | 4  | replace     | file, n, `n` bytes | |
//! | 5  | set integer | file, position (2), spec (width bits 0-1, value bits 2-4), [8 bytes if value 7] | |
//! | 6  | fix CRC     | file, position (2): the CRC of what holds it | yes |
//! | 7  | add a file  | kind, argument, n, `n` bytes | kinds 0, 1, 6 |
//! | 8  | copy        | file, file | yes |
//! | 9  | add a frame | file, spec (count bits 0-1, first offset bits 2-4), one size byte per record | yes |
//! | 10 | set a slot  | file, spec (slot bit 0, generation bits 1-2), a, b, c | checkpoint |
//! | 11 | set version | file, version: the format version field, CRC fixed | |
//!
//! Positions are taken modulo the file's length (plus one where extending
//! makes sense).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tollgate::{
    Durability, Engine, EngineConfig, Message, Offset, OpenError, PublishError, ReadError, Record, RecoveryMode,
    SimDisk, Topic, TopicConfig, TopicError,
};

/// At most this many mutations per input.
const MAX_MUTATIONS: usize = 24;
/// Offsets read per topic and open: all of them up to this many, else the
/// first and last halves of it.
const READ_LIMIT: u64 = 400;
/// On the simulated disk, the opens B and D read back one record in this
/// many (and the first and the last), where A and C read all of them.
const SAMPLE_STRIDE: u64 = 8;
/// The group each open subscribes and commits.
const CHECK_GROUP: &str = "fuzz-check";

const SEGMENT_HEADER_BYTES: usize = 32;
/// The highest generation of a valid slot (docs/FORMAT.md).
const SLOT_GENERATION_MAX: u64 = 1 << 62;
const FRAME_HEADER_BYTES: usize = 32;
const SLOT_FILE_HEADER_BYTES: usize = 16;
const SLOT_BYTES: usize = 32;
const SLOT_FILE_BYTES: usize = SLOT_FILE_HEADER_BYTES + 2 * SLOT_BYTES;
const INDEX_HEADER_BYTES: usize = 32;

/// Runs the input with every check and panics if one fails. (The bugs
/// the checks of [`run_with_known_bugs`] were written for are fixed, so this
/// is the same thing; it is kept for the `*_known_bugs_replay` tests.)
pub fn run(data: &[u8]) {
    run_checks(data, true, Disk::sim());
}

/// Runs the input with every check, B and D reading back every record, its
/// directory written to a real file system (tmpfs if there is one) and
/// opened with `Engine::open`.
pub fn run_on_files(data: &[u8]) {
    run_checks(data, true, Disk::files());
}

/// Runs the input with every check, including those for these bugs (all
/// fixed, each with a regression test in tests/fuzz_replay.rs):
///
/// - after a clean shutdown, opening trusts the active segment without
///   scanning it (`open_topic` in src/log/recovery.rs, rule 1 of
///   docs/FORMAT.md), so a corrupt frame in it goes unnoticed and new
///   records are appended after it: `publish` succeeds but `read` of the new
///   record fails, and the next unclean recovery or repair cuts the log at
///   the corrupt frame, losing records acknowledged since (even with
///   `Durability::Sync`). Reproducer:
///   `fuzz/corpus/log_recovery/bug-clean-open-appends-after-corrupt-frame`.
/// - a segment file named for offset `u64::MAX` (`18446744073709551615.log`)
///   is accepted as the log's last segment: `load_slot` (src/log/topic.rs)
///   overflowed computing `base + 1`, and a publish into it overflows
///   `next_offset` in `TopicInner::append` (a panic in debug builds, a wrap
///   to offset 0 in release). Without known bugs, the input's "segment at the
///   largest offset" is put at 2^62 instead. Reproducer:
///   `fuzz/corpus/log_recovery/bug-segment-named-u64-max`.
pub fn run_with_known_bugs(data: &[u8]) {
    run_checks(data, true, Disk::sim());
}

fn run_checks(data: &[u8], known_bugs: bool, disk: Disk) {
    let mut input = Input(data);
    let first = input.byte().unwrap_or(0);
    let template = &templates()[usize::from(first) % 4];
    let sample = matches!(disk, Disk::Sim(_)).then_some(u64::from(first >> 2) % SAMPLE_STRIDE);
    let mut files = template.files.clone();
    let mut forged = false;
    for _ in 0..MAX_MUTATIONS {
        match mutate(&mut files, &mut input, known_bugs) {
            Some(forges) => forged |= forges,
            None => break,
        }
    }
    let root = disk.root();
    let dir = root.join("data");
    for sub in &template.dirs {
        disk.create_dir(&dir.join(sub));
    }
    for (path, bytes) in &files {
        disk.write(&dir.join(path), bytes);
    }
    let sentinel = root.join("outside");
    disk.write(&sentinel, b"not tollgate's");

    let topic_dirs: BTreeSet<String> = files
        .keys()
        .filter_map(|path| path.strip_prefix("topics/")?.split_once('/').map(|(name, _)| name.to_owned()))
        .collect();
    let expected = template.records.clone();
    let mut ctx =
        Ctx { disk, dir, topic_dirs, strict: !forged, known_bugs, sample, expected, commits: BTreeMap::new() };

    let a = ctx.open(false, true, "A");
    ctx.check_group_files(&a, "A");
    let b = ctx.open(false, false, "B");
    ctx.compare(&a, &b, false, "A then B");
    let c = ctx.open(true, true, "C");
    ctx.check_group_files(&c, "C");
    if let (Some(b), Some(c)) = (&b, &c) {
        for (name, view_c) in c {
            let (Some(view_b), Some(view_c)) = (b.get(name).and_then(Option::as_ref), view_c) else { continue };
            if ctx.strict {
                assert!(
                    view_c.next_before <= view_b.next,
                    "topic {name}: repair found {} records, the plain open {}",
                    view_c.next_before,
                    view_b.next
                );
            }
        }
    }
    let d = ctx.open(true, false, "D");
    ctx.compare(&c, &d, true, "C then D");

    let mut entries = ctx.disk.list(&root).expect("list the scratch directory");
    entries.sort();
    assert_eq!(entries, ["data", "outside"], "something was made outside the data directory");
    assert_eq!(ctx.disk.read(&sentinel).expect("read the sentinel"), b"not tollgate's", "the sentinel changed");
}

/// Where an input's directory is laid out and opened.
enum Disk {
    /// A simulated disk; the scratch directory is its root.
    Sim(SimDisk),
    /// A fresh directory on the real file system.
    Files(tempfile::TempDir),
}

impl Disk {
    fn sim() -> Disk {
        Disk::Sim(SimDisk::new())
    }

    fn files() -> Disk {
        Disk::Files(scratch_dir())
    }

    /// The scratch directory: the data directory (`data`) and the sentinel
    /// (`outside`) go in it.
    fn root(&self) -> PathBuf {
        match self {
            Disk::Sim(_) => PathBuf::from("/"),
            Disk::Files(scratch) => scratch.path().to_path_buf(),
        }
    }

    /// Creates a directory and its parents (durably: as found after a reboot).
    fn create_dir(&self, path: &Path) {
        match self {
            Disk::Sim(disk) => disk.create_dir_all_durable(path).expect("create a directory"),
            Disk::Files(_) => std::fs::create_dir_all(path).expect("create a directory"),
        }
    }

    /// Writes a new file, and its parent directories (durably).
    fn write(&self, path: &Path, bytes: &[u8]) {
        match self {
            Disk::Sim(disk) => disk.write_file_durable(path, bytes).expect("write a file"),
            Disk::Files(_) => {
                std::fs::create_dir_all(path.parent().expect("inside the directory")).expect("create a directory");
                std::fs::write(path, bytes).expect("write a file");
            }
        }
    }

    /// A file's content, if it is one.
    fn read(&self, path: &Path) -> Option<Vec<u8>> {
        match self {
            Disk::Sim(disk) => disk.file_bytes(path).ok(),
            Disk::Files(_) => std::fs::read(path).ok(),
        }
    }

    /// The names in a directory, if it is one.
    fn list(&self, dir: &Path) -> Option<Vec<String>> {
        match self {
            Disk::Sim(disk) => {
                let tree = disk.tree(dir);
                let names = tree.iter().filter(|(path, _)| path.parent() == Some(dir));
                Some(names.filter_map(|(path, _)| Some(path.file_name()?.to_string_lossy().into_owned())).collect())
            }
            Disk::Files(_) => Some(
                std::fs::read_dir(dir)
                    .ok()?
                    .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
                    .collect(),
            ),
        }
    }

    /// Opens an engine on the data directory `dir`: without a flusher
    /// thread on a simulated disk.
    fn open(&self, dir: &Path, config: EngineConfig) -> Result<Engine, OpenError> {
        match self {
            Disk::Sim(disk) => Engine::open_sim_without_flusher(disk, dir, config),
            Disk::Files(_) => Engine::open_with(dir, config),
        }
    }
}

/// A fresh directory, on tmpfs if there is one.
fn scratch_dir() -> tempfile::TempDir {
    let builder = || {
        let mut builder = tempfile::Builder::new();
        builder.prefix("tollgate-recovery-");
        builder
    };
    builder().tempdir_in("/dev/shm").or_else(|_| builder().tempdir()).expect("create a temporary directory")
}

/// Reads the input's bytes.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }

    fn bytes(&mut self, n: usize) -> Option<Vec<u8>> {
        if self.0.len() < n {
            return None;
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(taken.to_vec())
    }
}

/// A record as compared between opens.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RecordData {
    offset: u64,
    timestamp_us: u64,
    key: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    payload: Vec<u8>,
}

impl From<&Record> for RecordData {
    fn from(record: &Record) -> Self {
        RecordData {
            offset: record.offset().get(),
            timestamp_us: record.timestamp_us(),
            key: record.key().map(str::to_owned),
            headers: record.headers().map(|(n, v)| (n.to_owned(), v.to_vec())).collect(),
            payload: record.payload().to_vec(),
        }
    }
}

/// A data directory written by a real engine, as files in memory.
struct Template {
    /// Path (relative, `/`-separated) to content; the lock file left out.
    files: BTreeMap<String, Vec<u8>>,
    /// Directories, including empty ones.
    dirs: Vec<String>,
    /// Every record of every topic, by offset.
    records: BTreeMap<String, BTreeMap<u64, RecordData>>,
}

/// The templates, written once per process:
///
/// 0. one buffered topic `t` of 4 KiB segments (four of them) with
///    keys, headers and batches; groups `g` and `h` committed; closed cleanly.
/// 1. the same workload, synced halfway, then copied while the engine is
///    open: an unclean checkpoint, an unsynced tail, a preallocated segment.
/// 2. a sync topic `a` (8 KiB segments) and an interval
///    topic `b` (4 KiB segments, a group); closed cleanly.
/// 3. a sync topic `t` with three records and an empty topic `e`, copied
///    while open.
fn templates() -> &'static [Template; 4] {
    static TEMPLATES: OnceLock<[Template; 4]> = OnceLock::new();
    TEMPLATES.get_or_init(|| [0, 1, 2, 3].map(build_template))
}

fn config(durability: Durability, segment_bytes: u64) -> TopicConfig {
    TopicConfig { durability, segment_bytes, max_message_bytes: 2000, ..TopicConfig::default() }
}

/// Publishes `count` messages (some with keys and headers, some in batches)
/// numbered from `first`.
fn workload(topic: &Topic, first: usize, count: usize) {
    let mut i = first;
    while i < first + count {
        let payload = |i: usize| {
            let mut payload = format!("message {i} ").into_bytes();
            payload.resize(payload.len() + (i * 37) % 280, b'a' + (i % 26) as u8);
            payload
        };
        if i % 7 == 6 {
            let batch = (0..3).map(|j| Message::new(payload(i + j)).key(format!("batch-{i}")));
            topic.publish_batch(batch).expect("publish a batch");
            i += 3;
            continue;
        }
        let mut message = Message::new(payload(i));
        if i.is_multiple_of(3) {
            message = message.key(format!("key-{}", i % 4));
        }
        if i.is_multiple_of(5) {
            message = message.header("type", "created").header("trace", vec![i as u8; i % 11]);
        }
        topic.publish_message(message).expect("publish");
        i += 1;
    }
}

fn build_template(which: usize) -> Template {
    let scratch = scratch_dir();
    let dir = scratch.path().join("data");
    let engine = Engine::open(&dir).expect("open a template engine");
    let mut records = BTreeMap::new();
    let mut keep = |topic: &Topic| {
        let info = topic.info();
        let all = (info.oldest.get()..info.next.get())
            .map(|o| (o, RecordData::from(&topic.read(Offset::new(o)).expect("read a template record"))))
            .collect();
        records.insert(topic.name().to_owned(), all);
    };
    let snapshot = match which {
        0 | 1 => {
            let t = engine.create_topic("t", config(Durability::Buffered, 4096)).expect("create t");
            workload(&t, 0, 60);
            if which == 1 {
                t.sync().expect("sync");
            }
            workload(&t, 60, 40);
            let mut g = t.subscribe("g").expect("subscribe g");
            for _ in 0..30 {
                g.next().expect("read").expect("a record");
            }
            g.commit().expect("commit g");
            t.subscribe("h").expect("subscribe h").commit_at(Offset::new(4)).expect("commit h");
            keep(&t);
            which == 1
        }
        2 => {
            let a = engine.create_topic("a", config(Durability::Sync, 8192)).expect("create a");
            let interval = config(Durability::Interval(Duration::from_secs(1)), 4096);
            let b = engine.create_topic("b", interval).expect("create b");
            workload(&a, 0, 60);
            workload(&b, 0, 50);
            let mut g = b.subscribe("g").expect("subscribe g");
            for _ in 0..7 {
                g.next().expect("read").expect("a record");
            }
            g.commit().expect("commit g");
            keep(&a);
            keep(&b);
            false
        }
        _ => {
            let t = engine.create_topic("t", config(Durability::Sync, 4096)).expect("create t");
            workload(&t, 0, 3);
            let e = engine.create_topic("e", config(Durability::Buffered, 4096)).expect("create e");
            keep(&t);
            keep(&e);
            true
        }
    };
    if !snapshot {
        drop(engine);
    }
    let mut files = BTreeMap::new();
    let mut dirs = Vec::new();
    collect(&dir, "", &mut files, &mut dirs);
    Template { files, dirs, records }
}

/// Reads every file under `dir` (but the lock file) into `files`.
fn collect(dir: &Path, prefix: &str, files: &mut BTreeMap<String, Vec<u8>>, dirs: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("list a template directory") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("{prefix}{name}");
        if entry.file_type().expect("file type").is_dir() {
            dirs.push(path.clone());
            collect(&entry.path(), &format!("{path}/"), files, dirs);
        } else if path != "tollgate.lock" {
            files.insert(path, std::fs::read(entry.path()).expect("read a template file"));
        }
    }
}

// ---------------------------------------------------------------------------
// Mutations

/// Applies one mutation from the input; `None` when the input ran out,
/// else whether it may have forged (made checks pass on made-up bytes).
fn mutate(files: &mut BTreeMap<String, Vec<u8>>, input: &mut Input<'_>, known_bugs: bool) -> Option<bool> {
    let op = input.byte()? % 12;
    let mut forged = false;
    match op {
        0 => {
            let (file, position, n) = (input.u16()?, input.u16()?, input.byte()?);
            let bytes = input.bytes(usize::from(n % 16) + 1)?;
            if let Some(content) = select(files, file) {
                let at = usize::from(position) % (content.len() + 1);
                if content.len() < at + bytes.len() {
                    content.resize(at + bytes.len(), 0);
                }
                content[at..at + bytes.len()].copy_from_slice(&bytes);
            }
        }
        1 => {
            let (file, position, bit) = (input.u16()?, input.u16()?, input.byte()?);
            if let Some(content) = select(files, file).filter(|c| !c.is_empty()) {
                let at = usize::from(position) % content.len();
                content[at] ^= 1 << (bit % 8);
            }
        }
        2 => {
            let (file, len) = (input.u16()?, input.u16()?);
            if let Some(content) = select(files, file) {
                let len = usize::from(len) % (content.len() + 1);
                content.truncate(len);
            }
        }
        3 => {
            let file = input.u16()?;
            if let Some(path) = select_path(files, file) {
                files.remove(&path);
            }
        }
        4 => {
            let (file, n) = (input.u16()?, input.byte()?);
            let bytes = input.bytes(usize::from(n))?;
            if let Some(content) = select(files, file) {
                *content = bytes;
            }
        }
        5 => {
            let (file, position, spec) = (input.u16()?, input.u16()?, input.byte()?);
            let width = [1, 2, 4, 8][usize::from(spec & 3)];
            let given = if (spec >> 2) & 7 == 7 { u64::from_le_bytes(input.bytes(8)?.try_into().ok()?) } else { 0 };
            if let Some(content) = select(files, file) {
                let len = content.len() as u64;
                let value = [0, 1, 2, u64::MAX, 32, 4096, len, given][usize::from((spec >> 2) & 7)];
                let at = usize::from(position) % (content.len() + 1);
                if content.len() < at + width {
                    content.resize(at + width, 0);
                }
                content[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
            }
        }
        6 => {
            let (file, position) = (input.u16()?, input.u16()?);
            if let Some(path) = select_path(files, file) {
                let content = files.get_mut(&path).expect("selected");
                fix_crc(&path, content, usize::from(position));
                forged = true;
            }
        }
        7 => {
            let (kind, arg, n) = (input.byte()?, input.byte()?, input.byte()?);
            let bytes = input.bytes(usize::from(n))?;
            forged = add_file(files, kind, arg, bytes, known_bugs);
        }
        8 => {
            let (from, to) = (input.u16()?, input.u16()?);
            if let (Some(from), Some(to)) = (select_path(files, from), select_path(files, to)) {
                let content = files[&from].clone();
                files.insert(to, content);
                forged = true;
            }
        }
        9 => {
            let (file, spec) = (input.u16()?, input.byte()?);
            let sizes = input.bytes(usize::from(spec & 3) + 1)?;
            if let Some(path) = select_path(files, file).filter(|p| p.ends_with(".log")) {
                let content = files.get_mut(&path).expect("selected");
                append_frame(&path, content, spec >> 2, &sizes);
                forged = true;
            }
        }
        10 => {
            let (file, spec) = (input.u16()?, input.byte()?);
            let (a, b, c) = (input.byte()?, input.byte()?, input.byte()?);
            if let Some(path) = select_path(files, file).filter(|p| is_slot_file(p)) {
                set_slot(files, &path, spec, [a, b, c]);
                forged = path.ends_with("checkpoint");
            }
        }
        _ => {
            let (file, version) = (input.u16()?, input.byte()?);
            if let Some(path) = select_path(files, file) {
                // A CRC made to match over an index or configuration that was damaged before.
                forged = path.ends_with(".index") || path.ends_with("topic.conf");
                let content = files.get_mut(&path).expect("selected");
                if content.len() >= 12 {
                    content[8..12].copy_from_slice(&u32::from(version).to_le_bytes());
                    if !is_slot_file(&path) {
                        // The header's CRC (a frame position never holds the version).
                        fix_crc(&path, content, 8);
                    }
                }
            }
        }
    }
    Some(forged)
}

/// Topic names in the files, sorted.
fn topic_names(files: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let names: BTreeSet<String> = files
        .keys()
        .filter_map(|path| path.strip_prefix("topics/")?.split_once('/').map(|(name, _)| name.to_owned()))
        .collect();
    names.into_iter().collect()
}

/// Segment (`suffix` ".log") or index files of `topic`, in offset order.
fn topic_files(files: &BTreeMap<String, Vec<u8>>, topic: &str, suffix: &str) -> Vec<String> {
    let prefix = format!("topics/{topic}/");
    files
        .keys()
        .filter(|p| p.strip_prefix(&prefix).is_some_and(|rest| !rest.contains('/') && rest.ends_with(suffix)))
        .cloned()
        .collect()
}

/// The file a two-byte selector names, if any: the low byte is the role,
/// the high byte an index (bit 0 the topic for roles 1 to 6, the rest which
/// file of that kind):
///
/// | role % 8 | file |
/// |----------|------|
/// | 0 | `tollgate.meta` |
/// | 1 | the topic's `topic.conf` |
/// | 2 | the topic's `checkpoint` |
/// | 3 | a segment, counting from the first |
/// | 4 | a segment, counting from the last |
/// | 5 | an index file |
/// | 6 | a group offset file |
/// | 7 | any file, in path order |
fn select_path(files: &BTreeMap<String, Vec<u8>>, selector: u16) -> Option<String> {
    let [role, index] = selector.to_le_bytes();
    let topics = topic_names(files);
    let topic = (!topics.is_empty()).then(|| topics[usize::from(index & 1) % topics.len()].clone());
    let k = usize::from(index >> 1);
    let nth = |list: Vec<String>, from_end: bool| {
        if list.is_empty() {
            return None;
        }
        let i = k % list.len();
        Some(list[if from_end { list.len() - 1 - i } else { i }].clone())
    };
    let path = match role % 8 {
        0 => Some("tollgate.meta".to_owned()),
        1 => topic.map(|t| format!("topics/{t}/topic.conf")),
        2 => topic.map(|t| format!("topics/{t}/checkpoint")),
        3 | 4 => nth(topic_files(files, &topic?, ".log"), role % 8 == 4),
        5 => nth(topic_files(files, &topic?, ".index"), false),
        6 => {
            let prefix = format!("topics/{}/groups/", topic?);
            nth(files.keys().filter(|p| p.starts_with(&prefix) && p.ends_with(".offset")).cloned().collect(), false)
        }
        _ => nth(files.keys().cloned().collect(), false),
    }?;
    files.contains_key(&path).then_some(path)
}

fn select(files: &mut BTreeMap<String, Vec<u8>>, selector: u16) -> Option<&mut Vec<u8>> {
    let path = select_path(files, selector)?;
    files.get_mut(&path)
}

fn is_slot_file(path: &str) -> bool {
    path.ends_with("/checkpoint") || path.ends_with(".offset")
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

/// The base offset in a segment's or index's file name.
fn base_of(path: &str) -> Option<u64> {
    let name = path.rsplit('/').next()?;
    let digits = name.strip_suffix(".log").or_else(|| name.strip_suffix(".index"))?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

fn segment_name(topic: &str, base: u64, suffix: &str) -> String {
    format!("topics/{topic}/{base:020}{suffix}")
}

/// Where a segment's valid frames end, and the offset after them.
fn walk_frames(segment: &[u8], base: u64) -> (usize, u64) {
    let (mut at, mut next) = (SEGMENT_HEADER_BYTES, base);
    while at + FRAME_HEADER_BYTES <= segment.len() {
        let len = u32_at(segment, at) as usize;
        if len < FRAME_HEADER_BYTES || len > segment.len() - at {
            break;
        }
        let frame = &segment[at..at + len];
        if crc(&frame[8..]) != u32_at(frame, 4) || u64_at(frame, 16) != next {
            break;
        }
        next = next.saturating_add(u64::from(u32_at(frame, 12)));
        at += len;
    }
    (at, next)
}

/// Recomputes the CRC of the header, frame or slot that holds `position`.
fn fix_crc(path: &str, content: &mut [u8], position: usize) {
    let len = content.len();
    if path.ends_with("tollgate.meta") && len >= 16 {
        let crc = crc(&content[..12]);
        put_u32(content, 12, crc);
    } else if path.ends_with("topic.conf") && len >= 64 {
        let crc = crc(&content[..60]);
        put_u32(content, 60, crc);
    } else if path.ends_with(".index") && len >= 4 {
        let crc = crc(&content[..len - 4]);
        put_u32(content, len - 4, crc);
    } else if is_slot_file(path) {
        let at = SLOT_FILE_HEADER_BYTES + usize::from(position >= SLOT_FILE_HEADER_BYTES + SLOT_BYTES) * SLOT_BYTES;
        if len >= at + SLOT_BYTES {
            let crc = crc(&content[at..at + 28]);
            put_u32(content, at + 28, crc);
        }
    } else if path.ends_with(".log") && len >= SEGMENT_HEADER_BYTES {
        if position % len < SEGMENT_HEADER_BYTES {
            let crc = crc(&content[..24]);
            put_u32(content, 24, crc);
            return;
        }
        let position = position % len;
        let mut at = SEGMENT_HEADER_BYTES;
        while at + FRAME_HEADER_BYTES <= len {
            let frame_len = u32_at(content, at) as usize;
            if frame_len < FRAME_HEADER_BYTES || frame_len > len - at {
                return;
            }
            if position < at + frame_len {
                let crc = crc(&content[at + 8..at + frame_len]);
                put_u32(content, at + 4, crc);
                return;
            }
            at += frame_len;
        }
    }
}

/// A segment header for `base`.
fn segment_header(base: u64) -> Vec<u8> {
    let mut header = vec![0; SEGMENT_HEADER_BYTES];
    header[..8].copy_from_slice(b"TGLOGSEG");
    put_u32(&mut header, 8, 1);
    put_u32(&mut header, 12, SEGMENT_HEADER_BYTES as u32);
    put_u64(&mut header, 16, base);
    let crc = crc(&header[..24]);
    put_u32(&mut header, 24, crc);
    header
}

/// A valid frame of payload-only records of these sizes.
fn frame(first: u64, sizes: &[u8]) -> Vec<u8> {
    let mut frame = vec![0; FRAME_HEADER_BYTES];
    for (i, &size) in sizes.iter().enumerate() {
        frame.extend_from_slice(&u32::from(size).to_le_bytes());
        frame.extend_from_slice(&[0; 4]);
        frame.extend((0..size).map(|j| b'f' ^ (i as u8) ^ j));
    }
    let len = frame.len() as u32;
    put_u32(&mut frame, 0, len);
    frame[8] = 1;
    put_u32(&mut frame, 12, sizes.len() as u32);
    put_u64(&mut frame, 16, first);
    put_u64(&mut frame, 24, 1_000_000);
    let crc = crc(&frame[8..]);
    put_u32(&mut frame, 4, crc);
    frame
}

/// Writes a valid frame after a segment's valid frames; its first offset is
/// the next one, or (by `which`) one that does not follow.
fn append_frame(path: &str, content: &mut Vec<u8>, which: u8, sizes: &[u8]) {
    let Some(base) = base_of(path) else { return };
    if content.len() < SEGMENT_HEADER_BYTES {
        *content = segment_header(base);
    }
    let (at, next) = walk_frames(content, base);
    let first = match which % 8 {
        3 => next.wrapping_add(1),
        4 => next.wrapping_sub(1),
        5 => next.wrapping_add(2),
        6 => u64::MAX,
        7 => 0,
        _ => next,
    };
    let frame = frame(first, sizes);
    if content.len() < at + frame.len() {
        content.resize(at + frame.len(), 0);
    }
    content[at..at + frame.len()].copy_from_slice(&frame);
}

/// Interesting offsets for the topic holding `path`: segment bases, the end
/// of the last segment's frames, and extremes.
fn interesting(files: &BTreeMap<String, Vec<u8>>, path: &str) -> (Vec<u64>, u64, usize) {
    let topic = path.strip_prefix("topics/").and_then(|p| p.split('/').next()).unwrap_or("");
    let segments = topic_files(files, topic, ".log");
    let mut values: Vec<u64> = segments.iter().filter_map(|p| base_of(p)).collect();
    let (end, next) =
        segments.last().and_then(|p| Some(walk_frames(&files[p], base_of(p)?))).unwrap_or((SEGMENT_HEADER_BYTES, 0));
    values.extend([next, next.saturating_add(1), 0, u64::MAX]);
    (values, next, end)
}

/// Writes one slot of a two-slot file, with a valid CRC.
fn set_slot(files: &mut BTreeMap<String, Vec<u8>>, path: &str, spec: u8, [a, b, c]: [u8; 3]) {
    let (values, next, end) = interesting(files, path);
    let content = files.get_mut(path).expect("selected");
    if content.len() < SLOT_FILE_BYTES {
        content.resize(SLOT_FILE_BYTES, 0);
    }
    let generation_at = |slot: usize| SLOT_FILE_HEADER_BYTES + slot * SLOT_BYTES;
    let newest = (0..2).map(|s| u64_at(content, generation_at(s))).max().unwrap_or(0);
    let generation = [newest.wrapping_add(1), newest, 1, 0][usize::from((spec >> 1) & 3)];
    let pick = |v: u8| values[usize::from(v) % values.len()];
    let c = [0, end as u32, end as u32 + 1, 32, u32::from(c) * 64][usize::from(c % 5)];
    let b = if b % 2 == 0 { next } else { pick(b >> 1) };
    let at = generation_at(usize::from(spec & 1));
    let slot = &mut content[at..at + SLOT_BYTES];
    put_u64(slot, 0, generation);
    put_u64(slot, 8, pick(a));
    put_u64(slot, 16, b);
    put_u32(slot, 24, c);
    let crc = crc(&slot[..28]);
    put_u32(slot, 28, crc);
}

/// A two-slot file whose slot 0 holds `a`.
fn slot_file(magic: &[u8; 8], a: u64) -> Vec<u8> {
    let mut content = vec![0; SLOT_FILE_BYTES];
    content[..8].copy_from_slice(magic);
    put_u32(&mut content, 8, 1);
    let header_crc = crc(&content[..12]);
    put_u32(&mut content, 12, header_crc);
    let slot = &mut content[SLOT_FILE_HEADER_BYTES..SLOT_FILE_HEADER_BYTES + SLOT_BYTES];
    put_u64(slot, 0, 1);
    put_u64(slot, 8, a);
    let crc = crc(&slot[..28]);
    put_u32(slot, 28, crc);
    content
}

/// Adds a file of `kind` (see the table in the code); returns whether it may
/// forge.
fn add_file(files: &mut BTreeMap<String, Vec<u8>>, kind: u8, arg: u8, bytes: Vec<u8>, known_bugs: bool) -> bool {
    let topics = topic_names(files);
    let topic = topics.get(usize::from(arg & 1) % topics.len().max(1)).cloned().unwrap_or_else(|| "t".to_owned());
    let segments = topic_files(files, &topic, ".log");
    let last = segments.last().and_then(|p| Some((base_of(p)?, walk_frames(&files[p], base_of(p)?))));
    let (last_base, (_, last_next)) = last.unwrap_or((0, (SEGMENT_HEADER_BYTES, 0)));
    let choice = usize::from(arg >> 1);
    match kind % 8 {
        // A segment: after the last one, inside it, at 0, after a gap, at the largest offset.
        0 => {
            let largest = if known_bugs { u64::MAX } else { 1 << 62 };
            let base = [last_next, last_base.saturating_add(1), 0, last_next.saturating_add(7), largest][choice % 5];
            let mut content = segment_header(base);
            content.extend(bytes);
            files.insert(segment_name(&topic, base, ".log"), content);
            true
        }
        // A CRC-valid index for a segment, with some end.
        1 => {
            let Some(path) = segments.get(choice % segments.len().max(1)) else { return false };
            let Some(base) = base_of(path) else { return false };
            let (end, _) = walk_frames(&files[path], base);
            let end = [end, end.saturating_sub(1), files[path].len(), SEGMENT_HEADER_BYTES][choice % 4];
            let mut index = vec![0; INDEX_HEADER_BYTES + 8 + 4];
            index[..8].copy_from_slice(b"TGLOGIDX");
            put_u32(&mut index, 8, 1);
            put_u32(&mut index, 12, 1);
            put_u64(&mut index, 16, base);
            put_u64(&mut index, 24, end as u64);
            put_u32(&mut index, INDEX_HEADER_BYTES + 4, SEGMENT_HEADER_BYTES as u32);
            let crc_at = index.len() - 4;
            let crc = crc(&index[..crc_at]);
            put_u32(&mut index, crc_at, crc);
            files.insert(segment_name(&topic, base, ".index"), index);
            true
        }
        // A group's offsets, committed at some offset.
        2 => {
            let a = [0, last_next, last_next.saturating_add(5), u64::MAX][choice % 4];
            files.insert(format!("topics/{topic}/groups/x{}.offset", choice % 3), slot_file(b"TGOFFSET", a));
            false
        }
        // Temporary files a crash left behind.
        3 => {
            let path =
                if choice % 2 == 0 { format!("topics/{topic}/topic.conf.tmp") } else { "tollgate.meta.tmp".into() };
            files.insert(path, bytes);
            false
        }
        // Files tollgate does not know.
        4 => {
            let path = ["stray", "topics/stray.txt"][choice % 2].to_owned();
            files.insert(if choice % 3 == 2 { format!("topics/{topic}/notes.txt") } else { path }, bytes);
            false
        }
        // A topic being deleted (a directory in trash/), or a stray file there.
        5 => {
            let path =
                if choice % 2 == 0 { format!("trash/{choice}/00000000000000000000.log") } else { "trash/x".into() };
            files.insert(path, bytes);
            false
        }
        // Another topic: a copy of this one's configuration, or a segment without one.
        6 => {
            let name = format!("topics/n{}/", choice % 3);
            let source = if choice % 2 == 0 {
                files.get(&format!("topics/{topic}/topic.conf")).map(|c| (format!("{name}topic.conf"), c.clone()))
            } else {
                segments.first().map(|p| (format!("{name}00000000000000000000.log"), files[p].clone()))
            };
            if let Some((path, content)) = source {
                files.insert(path, content);
            }
            true
        }
        // A file in a groups directory that is not a group's.
        _ => {
            files.insert(format!("topics/{topic}/groups/junk"), bytes);
            false
        }
    }
}

// ---------------------------------------------------------------------------
// Opening and checking

/// What one open saw of a topic.
#[derive(Debug)]
struct View {
    oldest: u64,
    /// `info().next` at open, before the marker.
    next_before: u64,
    /// `info().next` at close.
    next: u64,
    clean: bool,
    /// Retention is configured: the engine's background thread may delete
    /// old segments at any time (only a forged `topic.conf` asks for it).
    retention: bool,
    /// Reads at open (and of the marker), by offset: a record or the error's kind.
    reads: BTreeMap<u64, Result<RecordData, &'static str>>,
    /// What `CHECK_GROUP` committed.
    committed: Option<u64>,
    /// Whether the marker publish failed (so the close may not be clean).
    publish_failed: bool,
}

type Opened = Option<BTreeMap<String, Option<View>>>;

struct Ctx {
    disk: Disk,
    dir: PathBuf,
    /// Names of the directories under `topics/` in the input.
    topic_dirs: BTreeSet<String>,
    /// No mutation forged anything.
    strict: bool,
    /// Check what known bugs break too.
    known_bugs: bool,
    /// Which records the opens that only look (B and D) read back: with
    /// `Some(phase)`, the first, the last, and those `phase` past a multiple
    /// of [`SAMPLE_STRIDE`] from the oldest; with `None`, all of them.
    sample: Option<u64>,
    /// With `strict`: the record each offset may hold, by topic.
    expected: BTreeMap<String, BTreeMap<u64, RecordData>>,
    /// What the last open committed for `CHECK_GROUP`, by topic.
    commits: BTreeMap<String, u64>,
}

/// A read's "error" when retention deleted the record meanwhile.
const NOT_RETAINED: Result<RecordData, &str> = Err("not retained");

fn error_kind(error: &ReadError) -> &'static str {
    match error {
        ReadError::Corrupt(_) => "corrupt",
        ReadError::Io(_) => "io",
        ReadError::NotRetained { .. } => "not retained",
        ReadError::NotWritten { .. } => "not written",
        ReadError::Deleted => "deleted",
        _ => "other",
    }
}

impl Ctx {
    fn inside(&self, path: &Path, what: &str) {
        assert!(path.starts_with(&self.dir), "{what}: names {} outside the data directory", path.display());
    }

    fn check_open_error(&self, error: &OpenError, what: &str) {
        assert!(!error.to_string().is_empty());
        match error {
            OpenError::NotTollgate { path, .. } | OpenError::NewerVersion { path, .. } => self.inside(path, what),
            OpenError::Io(e) => self.inside(&e.path, what),
            OpenError::Topic { source, .. } => self.check_topic_error(source, what),
            _ => panic!("{what}: unexpected {error:?}"),
        }
    }

    fn check_topic_error(&self, error: &TopicError, what: &str) {
        assert!(!error.to_string().is_empty());
        match error {
            TopicError::NewerVersion { path, .. } => self.inside(path, what),
            TopicError::Corrupt(c) => self.inside(&c.file, what),
            TopicError::Io(e) => self.inside(&e.path, what),
            _ => panic!("{what}: unexpected {error:?}"),
        }
    }

    /// Checks an error from reading an offset between oldest and next.
    fn check_read_error(&self, error: &ReadError, what: &str) {
        assert!(!error.to_string().is_empty());
        match error {
            ReadError::Corrupt(c) => self.inside(&c.file, what),
            ReadError::Io(e) => self.inside(&e.path, what),
            _ => panic!("{what}: unexpected {error:?}"),
        }
    }

    /// With `strict`, checks that a record is the one written at its offset.
    fn check_expected(&self, topic: &str, record: &RecordData, what: &str) {
        if !self.strict {
            return;
        }
        let expected = self.expected.get(topic).and_then(|records| records.get(&record.offset));
        assert_eq!(Some(record), expected, "{what}: a record that was never written at {}", record.offset);
    }

    /// Opens the directory, looks at every topic, and with `act` publishes a
    /// marker and commits a group; closes it again.
    fn open(&mut self, repair: bool, act: bool, phase: &str) -> Opened {
        let engine = match self.disk.open(
            &self.dir,
            EngineConfig {
                recovery: if repair { RecoveryMode::Repair } else { RecoveryMode::Normal },
                ..EngineConfig::default()
            },
        ) {
            Ok(engine) => engine,
            Err(error) => {
                self.check_open_error(&error, &format!("{phase}: open"));
                return None;
            }
        };
        let mut names = self.topic_dirs.clone();
        match engine.topics() {
            Ok(listed) => names.extend(listed),
            Err(error) => self.check_topic_error(&error, &format!("{phase}: topics()")),
        }
        let mut views = BTreeMap::new();
        for name in names {
            let what = format!("{phase}: topic {name:?}");
            let view = match engine.topic(&name) {
                Ok(topic) => Some(self.view(&topic, act, &what)),
                Err(error) => {
                    self.check_topic_error(&error, &what);
                    None
                }
            };
            views.insert(name, view);
        }
        drop(engine);
        Some(views)
    }

    fn view(&mut self, topic: &Topic, act: bool, what: &str) -> View {
        let info = topic.info();
        let (oldest, next) = (info.oldest.get(), info.next.get());
        assert!(oldest <= next, "{what}: oldest {oldest} past next {next}");
        let retention = info.config.retention_bytes.is_some() || info.config.retention_age.is_some();
        let mut offsets: Vec<u64> = if next - oldest <= READ_LIMIT {
            (oldest..next).collect()
        } else {
            (oldest..oldest + READ_LIMIT / 2).chain(next - READ_LIMIT / 2..next).collect()
        };
        if let (false, Some(phase)) = (act, self.sample) {
            offsets.retain(|&o| o == oldest || o + 1 == next || (o - oldest) % SAMPLE_STRIDE == phase);
        }
        let mut reads = BTreeMap::new();
        for offset in offsets {
            let read = match topic.read(Offset::new(offset)) {
                Ok(record) => {
                    let record = RecordData::from(&record);
                    assert_eq!(record.offset, offset, "{what}: read({offset}) returned another offset");
                    self.check_expected(topic.name(), &record, &format!("{what}: read({offset})"));
                    Ok(record)
                }
                Err(ReadError::NotRetained { oldest: now, .. }) if retention && now > offset => NOT_RETAINED,
                Err(error) => {
                    self.check_read_error(&error, &format!("{what}: read({offset})"));
                    Err(error_kind(&error))
                }
            };
            reads.insert(offset, read);
        }
        let verified = match topic.verify() {
            Ok(records) => {
                assert!(records <= next - oldest, "{what}: verify() counted {records} records");
                true
            }
            Err(error) => {
                self.check_read_error(&error, &format!("{what}: verify()"));
                false
            }
        };
        let report = topic.recovery_report();
        if self.strict && verified {
            // Everything between oldest and next passed: every read did.
            assert!(
                reads.values().all(|read| read.is_ok() || read == &NOT_RETAINED),
                "{what}: verify() passed, yet a read failed: {reads:?}"
            );
        }
        let mut view = View {
            oldest,
            next_before: next,
            next,
            clean: report.clean,
            retention,
            reads,
            committed: None,
            publish_failed: false,
        };
        if act {
            self.subscribe(topic, &mut view, verified, what);
            self.publish_marker(topic, &mut view, what);
        }
        view.next = topic.info().next.get();
        view
    }

    /// Reads the topic through a new group's subscription, compares with the
    /// reads, and commits.
    fn subscribe(&mut self, topic: &Topic, view: &mut View, verified: bool, what: &str) {
        let what = format!("{what}: subscription");
        let mut sub = match topic.subscribe(CHECK_GROUP) {
            Ok(sub) => sub,
            Err(error) => {
                self.check_topic_error(&error, &what);
                return;
            }
        };
        let start = self.commits.get(topic.name()).map_or(view.oldest, |&c| c.min(view.next_before));
        let resumed = sub.position().get();
        if view.retention {
            // The flusher thread may have applied retention since `oldest`
            // was read (a template's records are as old as the process, so
            // a made-up `retention_age` of a minute deletes them during a
            // long run): the group then starts at the new oldest.
            let oldest_now = topic.info().oldest.get();
            assert!(
                start <= resumed && resumed <= start.max(oldest_now),
                "{what}: the group resumes at {resumed}, not in {start}..={}",
                start.max(oldest_now)
            );
        } else {
            assert_eq!(resumed, start, "{what}: where the group resumes");
        }
        for _ in 0..READ_LIMIT / 2 {
            let position = sub.position().get();
            match sub.next() {
                Ok(Some(record)) => {
                    let record = RecordData::from(&record);
                    assert_eq!(record.offset, position, "{what}: next() at {position}");
                    self.check_expected(topic.name(), &record, &what);
                    if self.strict
                        && verified
                        && let Some(read) = view.reads.get(&position)
                    {
                        assert_eq!(read, &Ok(record), "{what}: next() and read() differ");
                    }
                }
                Ok(None) => {
                    // Overlapping segments (made up, and trusted by a plain
                    // open) can hand out a batch past the end.
                    if self.strict {
                        assert_eq!(position, view.next_before, "{what}: None before the end");
                    }
                    break;
                }
                Err(ReadError::NotRetained { .. }) if position < view.oldest || view.retention => break,
                Err(error) => {
                    self.check_read_error(&error, &format!("{what}: next() at {position}"));
                    assert!(!(self.strict && verified), "{what}: verify() passed, yet next() failed: {error}");
                    break;
                }
            }
        }
        let position = sub.position().get();
        match sub.commit() {
            Ok(()) => {
                view.committed = Some(position);
                self.commits.insert(topic.name().to_owned(), position);
            }
            Err(tollgate::CommitError::Io(e)) => self.inside(&e.path, &what),
            // After a batch handed out past the end (see above).
            Err(tollgate::CommitError::BeyondEnd { .. }) if !self.strict => {}
            Err(error) => panic!("{what}: commit: {error:?}"),
        }
    }

    /// Publishes a marker; it must read back, and later opens must find it.
    fn publish_marker(&mut self, topic: &Topic, view: &mut View, what: &str) {
        let what = format!("{what}: marker");
        let marker = Message::new(format!("marker at {}", view.next_before)).key("marker").header("by", "fuzz");
        match topic.publish_message(marker) {
            Ok(offset) => {
                let offset = offset.get();
                assert_eq!(offset, view.next_before, "{what}: offset");
                match topic.read(Offset::new(offset)) {
                    Ok(record) => {
                        let record = RecordData::from(&record);
                        // A made-up clean checkpoint can claim a next offset
                        // that the log already holds: the clean path trusts it.
                        if self.strict {
                            assert_eq!(record.payload, format!("marker at {offset}").into_bytes(), "{what}: read back");
                        }
                        // A topic not in the template (one that only a
                        // group's offsets, say, made) holds only markers.
                        let records = self.expected.entry(topic.name().to_owned()).or_default();
                        records.retain(|&o, _| o < offset);
                        records.insert(offset, record.clone());
                        view.reads.insert(offset, Ok(record));
                    }
                    Err(error) => {
                        self.check_read_error(&error, &format!("{what}: read back"));
                        // The known bug: a clean open trusted an active segment
                        // with a corrupt frame, and appended after it.
                        let known_bug = view.clean && !self.known_bugs;
                        assert!(!self.strict || known_bug, "{what}: published at {offset}, read back: {error}");
                        view.reads.insert(offset, Err(error_kind(&error)));
                    }
                }
            }
            Err(error) => {
                view.publish_failed = true;
                match &error {
                    PublishError::Io(e) => self.inside(&e.path, &what),
                    PublishError::PreviousIo => {}
                    // A forged segment named near u64::MAX leaves no offsets.
                    PublishError::InvalidMessage { reason } if reason.contains("every offset") => {}
                    _ => panic!("{what}: unexpected {error:?}"),
                }
                assert!(!self.strict, "{what}: publish failed: {error}");
            }
        }
    }

    /// The second of two opens found what the first left.
    fn compare(&self, first: &Opened, second: &Opened, repair: bool, what: &str) {
        let (Some(first), Some(second)) = (first, second) else {
            assert!(first.is_none() || second.is_some(), "{what}: the first open worked, the second failed");
            return;
        };
        for (name, view) in first {
            let Some(view) = view else { continue };
            let what = format!("{what}: topic {name:?}");
            let Some(Some(again)) = second.get(name) else { panic!("{what}: opened the first time, not the second") };
            assert_eq!(again.next_before, view.next, "{what}: info().next");
            let retention = view.retention || again.retention;
            if !retention {
                assert_eq!(again.oldest, view.oldest, "{what}: info().oldest");
            }
            if !repair && !view.publish_failed {
                assert!(again.clean, "{what}: the first open closed cleanly, the second recovered");
            }
            for (offset, read) in &view.reads {
                if let Some(again) = again.reads.get(offset)
                    && !(retention && (read == &NOT_RETAINED || again == &NOT_RETAINED))
                {
                    assert_eq!(again, read, "{what}: read({offset})");
                }
            }
        }
    }

    /// Group offsets on disk, after an open: at most the topic's end.
    fn check_group_files(&self, opened: &Opened, what: &str) {
        let Some(opened) = opened else { return };
        for (name, view) in opened {
            let Some(view) = view else { continue };
            let groups = self.dir.join("topics").join(name).join("groups");
            let Some(entries) = self.disk.list(&groups) else { continue };
            for entry in entries {
                let path = groups.join(entry);
                if path.extension().is_none_or(|e| e != "offset") {
                    continue;
                }
                let Some(bytes) = self.disk.read(&path) else { panic!("{what}: {} is not a file", path.display()) };
                if let Some(a) = newest_slot(&bytes) {
                    assert!(
                        a <= view.next,
                        "{what}: {} commits {a}, past the end {} of topic {name:?}",
                        path.display(),
                        view.next
                    );
                }
                if path.file_stem().is_some_and(|s| s == CHECK_GROUP)
                    && let Some(committed) = view.committed
                {
                    assert_eq!(newest_slot(&bytes), Some(committed), "{what}: {} on disk", path.display());
                }
            }
        }
    }
}

/// Value A of the newest valid slot of a two-slot file.
/// The committed offset a group file holds, as the engine would read it:
/// none if its header (magic, version 1, their CRC) is not a valid
/// offset-file header (the engine refuses such a file: the group's subscribe
/// fails, or `repair` removes it).
fn newest_slot(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < SLOT_FILE_BYTES
        || &bytes[..8] != b"TGOFFSET"
        || u32_at(bytes, 8) != 1
        || crc(&bytes[..12]) != u32_at(bytes, 12)
    {
        return None;
    }
    (0..2)
        .filter_map(|i| {
            let slot = &bytes[SLOT_FILE_HEADER_BYTES + i * SLOT_BYTES..][..SLOT_BYTES];
            let generation = u64_at(slot, 0);
            let valid = (1..=SLOT_GENERATION_MAX).contains(&generation) && crc(&slot[..28]) == u32_at(slot, 28);
            valid.then(|| (generation, u64_at(slot, 8)))
        })
        .max_by_key(|(generation, _)| *generation)
        // A newest slot at the maximum is damage: the engine reads no value.
        .filter(|&(generation, _)| generation < SLOT_GENERATION_MAX)
        .map(|(_, a)| a)
}
