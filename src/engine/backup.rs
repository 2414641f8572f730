//! [`Engine::backup_to`]: a copy of the data directory that equals its
//! state at one instant across every topic and group, taken while the
//! engine runs. Writers pause only while the cut is taken; the logs are
//! copied after it. The design, and what a backup does not hold, are in
//! `docs/OPERATIONS.md`, "Backup and restore".

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::topic::OpenTopic;
use super::{Engine, Shared};
use crate::error::{BackupError, IoError};
use crate::log::backup::{Frozen, LogCut};
use crate::log::format::*;
use crate::log::names::check_topic_name;
use crate::log::slots::{encode_meta, write_file_atomic};
use crate::queue::group::Group;
use crate::storage::Storage;

/// What [`Engine::backup_to`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupReport {
    /// Topics in the copy.
    pub topics: usize,
    /// Records in the copy's topics that were open in the engine (topics
    /// copied at rest are not counted).
    pub records: u64,
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// How long writers (publishes, commits, worker groups) were paused
    /// while the cut was taken.
    pub pause: Duration,
    /// How long the whole backup took, the copy and its syncs included.
    pub elapsed: Duration,
}

impl Engine {
    /// Writes to `dest` a copy of the data directory as it is at one
    /// instant (the *cut*), across every topic and group, while the engine
    /// keeps running: every record, committed offset and worker-group
    /// change made before the cut, and nothing after. Opened, the copy
    /// starts as a clean shutdown at the cut would: no recovery scan,
    /// messages that were in flight delivered again.
    ///
    /// Publishes, consumer-group commits and worker-group operations wait
    /// while the cut is taken (the report's [`pause`](BackupReport::pause));
    /// reads never do. The logs are copied after it, while writers go on.
    /// `dest` must not exist, or be an empty directory, and must not be in
    /// the data directory. Every file and directory of the copy is synced,
    /// and its `tollgate.meta` is written last, so that an interrupted copy
    /// cannot be opened; a backup that fails removes what it wrote. One
    /// backup runs at a time; meanwhile, topics cannot be deleted, and a
    /// topic that was not open waits to be opened until it is copied.
    /// `docs/OPERATIONS.md` has the design and how to restore.
    ///
    /// A PostgreSQL engine (`Engine::connect`) fails with
    /// [`BackupError::Unsupported`]: back the database up with its own
    /// tools (`pg_dump`, or base backups with WAL archiving).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let backups = tempfile::tempdir()?;
    /// use tollgate::Engine;
    ///
    /// let engine = Engine::open(dir.path().join("data"))?;
    /// engine.topic("orders")?.publish(b"order 1001")?;
    ///
    /// let report = engine.backup_to(backups.path().join("monday"))?;
    /// assert_eq!((report.topics, report.records), (1, 1));
    ///
    /// let copy = Engine::open(backups.path().join("monday"))?;
    /// let orders = copy.topic("orders")?;
    /// assert!(orders.recovery_report().clean);
    /// assert_eq!(orders.read(tollgate::Offset::new(0))?.payload().as_ref(), b"order 1001");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn backup_to(&self, dest: impl AsRef<Path>) -> Result<BackupReport, BackupError> {
        let started = Instant::now();
        let Some(shared) = self.embedded() else { return Err(BackupError::Unsupported) };
        let shared = &**shared;
        let _one_at_a_time = shared.backup.lock();
        let dest = dest.as_ref();
        let created = prepare_destination(shared, dest)?;
        let result = copy(shared, dest, started);
        if result.is_err() {
            remove_partial_copy(&*shared.storage, dest, created);
        }
        result
    }
}

/// Checks the destination; creates it if it does not exist. Returns whether
/// it did.
fn prepare_destination(shared: &Shared, dest: &Path) -> Result<bool, BackupError> {
    let storage = &*shared.storage;
    let io = |op, path: &Path, e| BackupError::Io(IoError::new(op, path, e));
    if is_inside(dest, &shared.dir) {
        return Err(BackupError::DestinationInside { path: dest.to_owned(), data_dir: shared.dir.clone() });
    }
    if storage.exists(dest) {
        let empty = storage.is_dir(dest) && storage.list_dir(dest).map_err(|e| io("list", dest, e))?.is_empty();
        if !empty {
            return Err(BackupError::DestinationNotEmpty { path: dest.to_owned() });
        }
        return Ok(false);
    }
    storage.create_dir_all(dest).map_err(|e| io("create", dest, e))?;
    let parent = parent_of(dest);
    storage.sync_dir(&parent).map_err(|e| io("sync", &parent, e))?;
    Ok(true)
}

/// Whether `path` is `dir` or inside it, comparing canonical paths where
/// they exist (`path` may not exist yet: its nearest existing ancestor is
/// made canonical).
fn is_inside(path: &Path, dir: &Path) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(if p.as_os_str().is_empty() { Path::new(".") } else { p }).ok();
    let Some(dir) = canonical(dir) else { return path.starts_with(dir) };
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Some(mut full) = canonical(existing) {
            full.extend(rest.iter().rev());
            return full.starts_with(&dir);
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return path.starts_with(&dir),
        }
    }
}

/// The directory holding `path`'s entry.
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Removes what a failed backup wrote: the destination if it created it,
/// else everything in it. Best effort: the copy has no `tollgate.meta`
/// yet, so nothing opens what is left.
fn remove_partial_copy(storage: &dyn Storage, dest: &Path, created: bool) {
    if created {
        let _ = storage.remove_dir_all(dest);
        let _ = storage.sync_dir(&parent_of(dest));
        return;
    }
    for name in storage.list_dir(dest).unwrap_or_default() {
        let path = dest.join(name);
        let _ = if storage.is_dir(&path) { storage.remove_dir_all(&path) } else { storage.remove_file(&path) };
    }
    let _ = storage.sync_dir(dest);
}

/// Topics pinned by the backup (`Shared::copying`): unpinned one by one as
/// they are copied, and all at once when dropped.
struct Pins<'a> {
    shared: &'a Shared,
    names: Vec<String>,
}

impl Pins<'_> {
    fn pin(&mut self, names: impl IntoIterator<Item = String>) {
        let mut copying = self.shared.copying.lock();
        for name in names {
            copying.insert(name.clone());
            self.names.push(name);
        }
    }

    fn unpin(&mut self, name: &str) {
        self.names.retain(|n| n != name);
        self.shared.copying.lock().remove(name);
        self.shared.copied.notify_all();
    }
}

impl Drop for Pins<'_> {
    fn drop(&mut self) {
        let mut copying = self.shared.copying.lock();
        for name in self.names.drain(..) {
            copying.remove(&name);
        }
        drop(copying);
        self.shared.copied.notify_all();
    }
}

/// An open topic at the cut: where its log ended, and its small mutable
/// files (group offsets, worker-group state and journals), read during the
/// cut, by path relative to the topic's directory.
struct TopicCut {
    name: String,
    log: LogCut,
    files: Vec<(PathBuf, Vec<u8>)>,
}

/// Steps 1 to 4 of `docs/OPERATIONS.md`, "What a backup is".
fn copy(shared: &Shared, dest: &Path, started: Instant) -> Result<BackupReport, BackupError> {
    let storage = &*shared.storage;
    let io = |op, path: &Path, e| BackupError::Io(IoError::new(op, path, e));
    let topics_dir = shared.dir.join(TOPICS_DIR);
    let mut pins = Pins { shared, names: Vec::new() };
    let (cuts, at_rest, pause) = {
        // Under the registry: no topic is created, opened or deleted.
        let topics = shared.topics.lock();
        let mut open: Vec<Arc<OpenTopic>> = topics.values().cloned().collect();
        open.sort_by(|a, b| a.log.name().cmp(b.log.name()));
        let mut at_rest = Vec::new();
        for name in storage.list_dir(&topics_dir).map_err(|e| io("list", &topics_dir, e))? {
            let is_topic = check_topic_name(&name).is_ok() && storage.exists(&topics_dir.join(&name).join(TOPIC_FILE));
            if is_topic && !topics.contains_key(&name) {
                at_rest.push(name);
            }
        }
        at_rest.sort();
        pins.pin(open.iter().map(|t| t.log.name().to_owned()).chain(at_rest.iter().cloned()));
        let (cuts, pause) = cut(storage, &open)?;
        (cuts, at_rest, pause)
    };

    let copy_topics = dest.join(TOPICS_DIR);
    for dir in [&copy_topics, &dest.join(TRASH_DIR)] {
        storage.create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    }
    let topics_copied = cuts.len() + at_rest.len();
    let (mut files, mut bytes, mut records) = (0, 0, 0);
    for cut in &cuts {
        let to = copy_topics.join(&cut.name);
        storage.create_dir_all(&to).map_err(|e| io("create", &to, e))?;
        let (f, b) = cut.log.copy_to(&to)?;
        files += f;
        bytes += b;
        records += cut.log.next_offset();
        for (relative, content) in &cut.files {
            let path = to.join(relative);
            let dir = parent_of(&path);
            storage.create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
            storage.write_file(&path, content).map_err(|e| io("write", &path, e))?;
            files += 1;
            bytes += content.len() as u64;
        }
        sync_tree(storage, &to)?;
        pins.unpin(&cut.name);
    }
    drop(cuts);
    for name in &at_rest {
        let (f, b) = copy_tree(storage, &topics_dir.join(name), &copy_topics.join(name))?;
        files += f;
        bytes += b;
        pins.unpin(name);
    }
    for dir in [&copy_topics, &dest.join(TRASH_DIR)] {
        storage.sync_dir(dir).map_err(|e| io("sync", dir, e))?;
    }
    // Last: a copy without it is refused by `Engine::open`.
    write_file_atomic(storage, &dest.join(META_FILE), &encode_meta())?;
    let parent = parent_of(dest);
    storage.sync_dir(&parent).map_err(|e| io("sync", &parent, e))?;
    Ok(BackupReport {
        topics: topics_copied,
        records,
        files: files + 1,
        bytes: bytes + META_BYTES as u64,
        pause,
        elapsed: started.elapsed(),
    })
}

/// Step 2: freezes every open topic (its append lock and commit gate, its
/// worker-group registry), then every live worker group, in the order of
/// `docs/CONCURRENCY.md`; notes where each log ends and reads the small
/// mutable files; lets everything go. Returns the cuts and how long writers
/// were paused.
fn cut(storage: &dyn Storage, open: &[Arc<OpenTopic>]) -> Result<(Vec<TopicCut>, Duration), BackupError> {
    let paused = Instant::now();
    let mut logs: Vec<Frozen<'_>> = Vec::with_capacity(open.len());
    let mut registries = Vec::with_capacity(open.len());
    let mut groups: Vec<Arc<Group>> = Vec::new();
    for topic in open {
        logs.push(topic.log.freeze());
        let registry = topic.groups.lock();
        groups.extend(registry.values().filter_map(Weak::upgrade));
        registries.push(registry);
    }
    let frozen_groups: Vec<_> = groups.iter().map(|group| group.freeze()).collect();
    let files: Result<Vec<_>, BackupError> = open.iter().map(|topic| small_files(storage, topic.log.dir())).collect();
    drop(frozen_groups);
    drop(registries);
    let logs: Vec<LogCut> = logs.into_iter().map(Frozen::release).collect();
    let pause = paused.elapsed();
    // After the pause: dropping the last handle to a group syncs its journal.
    drop(groups);
    let cuts = open
        .iter()
        .zip(logs)
        .zip(files?)
        .map(|((topic, log), files)| TopicCut { name: topic.log.name().to_owned(), log, files })
        .collect();
    Ok((cuts, pause))
}

/// The files of a topic that change in place, read whole: consumer-group
/// offsets (`groups/*.offset`) and worker-group state and journals
/// (`queues/<group>/state`, `queues/<group>/journal`).
fn small_files(storage: &dyn Storage, topic_dir: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>, BackupError> {
    let mut wanted = Vec::new();
    let list = |dir: &Path| match storage.list_dir(dir) {
        Ok(names) => Ok(names),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(BackupError::Io(IoError::new("list", dir, e))),
    };
    for name in list(&topic_dir.join(GROUPS_DIR))? {
        if name.ends_with(OFFSET_SUFFIX) {
            wanted.push(Path::new(GROUPS_DIR).join(name));
        }
    }
    for group in list(&topic_dir.join(QUEUES_DIR))? {
        for file in [QSTATE_FILE, QJOURNAL_FILE] {
            wanted.push(Path::new(QUEUES_DIR).join(&group).join(file));
        }
    }
    let mut files = Vec::with_capacity(wanted.len());
    for relative in wanted {
        let path = topic_dir.join(&relative);
        match storage.read_file(&path) {
            Ok(bytes) => files.push((relative, bytes)),
            // A group between a compaction's two steps has no journal.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BackupError::Io(IoError::new("read", &path, e))),
        }
    }
    Ok(files)
}

/// Copies the directory `from` to `to` (which must not exist) with
/// everything in it, each file synced, then syncs the directories. Returns
/// the files and bytes copied.
fn copy_tree(storage: &dyn Storage, from: &Path, to: &Path) -> Result<(u64, u64), BackupError> {
    let io = |op, path: &Path, e| BackupError::Io(IoError::new(op, path, e));
    storage.create_dir_all(to).map_err(|e| io("create", to, e))?;
    let (mut files, mut bytes) = (0, 0);
    for name in storage.list_dir(from).map_err(|e| io("list", from, e))? {
        let (source, copy) = (from.join(&name), to.join(&name));
        if storage.is_dir(&source) {
            let (f, b) = copy_tree(storage, &source, &copy)?;
            files += f;
            bytes += b;
        } else {
            let len = storage.file_len(&source).map_err(|e| io("stat", &source, e))?;
            storage.copy_file(&source, &copy, len).map_err(|e| io("copy", &source, e))?;
            files += 1;
            bytes += len;
        }
    }
    storage.sync_dir(to).map_err(|e| io("sync", to, e))?;
    Ok((files, bytes))
}

/// Syncs every directory under `dir`, and `dir`, deepest first.
fn sync_tree(storage: &dyn Storage, dir: &Path) -> Result<(), BackupError> {
    let io = |op, path: &Path, e| BackupError::Io(IoError::new(op, path, e));
    for name in storage.list_dir(dir).map_err(|e| io("list", dir, e))? {
        let path = dir.join(name);
        if storage.is_dir(&path) {
            sync_tree(storage, &path)?;
        }
    }
    storage.sync_dir(dir).map_err(|e| io("sync", dir, e))
}
