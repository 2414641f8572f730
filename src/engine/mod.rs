//! The engine: the composition root. It owns the data directory (its lock
//! file, its format marker, the topics in it), opens each topic's log and
//! the worker groups on it, and runs the background flusher.
//!
//! - this file: [`Engine`], [`EngineConfig`]: opening the directory, opening,
//!   listing and deleting topics, and closing everything on the last drop;
//! - `topic.rs`: [`Topic`], the handle to an open topic and its worker groups;
//! - `flusher.rs`: the background thread (interval flushes, sealed segments,
//!   retention).
//! - `backup.rs`: [`Engine::backup_to`], a consistent copy of the directory
//!   while it is in use.
//! - `backend.rs`: [`Backend`], what [`Engine::start`] opens: a directory or
//!   a PostgreSQL database; [`Engine::locks`], the lock manager that goes with it.
//! - `remote.rs` (feature `postgres`): an engine whose topics are in
//!   PostgreSQL ([`Engine::connect`]).

mod backend;
mod backup;
mod flusher;
#[cfg(feature = "postgres")]
mod remote;
mod topic;

pub use backend::Backend;
pub use backup::BackupReport;
pub use topic::Topic;

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::error::{IoError, OpenError, TopicError};
use crate::log::format::*;
use crate::log::names::{check_new_name, check_topic_name};
use crate::log::recovery::open_topic;
use crate::log::slots::{DAMAGED_META, MetaCheck, check_meta, encode_meta, write_file_atomic};
use crate::log::{RecoveryMode, TopicConfig};
use crate::queue::journal::recover_groups;
#[cfg(feature = "sim")]
use crate::storage::SimDisk;
use crate::storage::{OsStorage, Storage};
use flusher::Flusher;
use topic::OpenTopic;

/// Settings for [`Engine::open_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Configuration for topics created by [`Engine::topic`].
    pub default_topic: TopicConfig,
    /// How topics are opened: [`RecoveryMode::Normal`] (the default) scans
    /// only what was written since the last checkpoint, and corruption in
    /// an old segment is reported by the reads (and [`Topic::verify`]) that
    /// meet it; [`RecoveryMode::Repair`] scans every segment and cuts each
    /// log at its first corrupt frame.
    pub recovery: RecoveryMode,
    /// How long [`Engine::open_with`] waits for the directory's lock while
    /// someone else holds it, before failing with
    /// [`OpenError::Locked`]. [`LOCK_WAIT_DEFAULT`] (2 s) by default;
    /// [`Duration::ZERO`] fails at once.
    ///
    /// The lock can be held for a moment by no engine at all: a child
    /// process that another thread forks holds a copy of the lock file's
    /// descriptor until it runs `exec`, so the directory stays locked for
    /// that moment after its last [`Engine`] is dropped. Waiting also lets a
    /// restart open the directory while the old process is still exiting.
    /// The lock is tried again with short pauses (1 ms, doubling up to
    /// 50 ms), so the open returns soon after the lock is let go. A wait too
    /// long to add to the current time waits for as long as it takes.
    pub lock_wait: Duration,
}

/// What one run of [`Engine::cleanup`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanupReport {
    /// Per topic that lost messages: its name, the messages deleted, and its
    /// oldest retained offset now.
    pub topics: Vec<(String, u64, u64)>,
    /// Whether the run stopped at its budget with more possibly due: run it
    /// again soon.
    pub more: bool,
}

/// The default [`EngineConfig::lock_wait`]: 2 seconds.
pub const LOCK_WAIT_DEFAULT: Duration = Duration::from_secs(2);

/// The first pause between tries of the directory's lock.
const LOCK_RETRY_FIRST: Duration = Duration::from_millis(1);
/// The longest pause between tries of the directory's lock.
const LOCK_RETRY_MAX: Duration = Duration::from_millis(50);

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            default_topic: TopicConfig::default(),
            recovery: RecoveryMode::default(),
            lock_wait: LOCK_WAIT_DEFAULT,
        }
    }
}

/// An open data directory: the durable topics of one process.
///
/// Cheap to clone; the directory stays open (and locked against other
/// engines) until the last clone is dropped, which syncs every topic and
/// records a clean shutdown so the next open scans nothing. Topic handles
/// used after that fail with `Closed`.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// use std::time::Duration;
/// use tollgate::{Durability, Engine, EngineConfig, OpenError, TopicConfig};
///
/// let engine = Engine::open(dir.path())?;
/// let orders = engine.create_topic("orders", TopicConfig { durability: Durability::Sync, ..Default::default() })?;
/// orders.publish(b"order 1001")?;
/// assert_eq!(engine.topics()?, ["orders"]);
///
/// // One engine per directory, in this process or any other: a second open
/// // waits up to `lock_wait` for the lock, then fails.
/// let quick = EngineConfig { lock_wait: Duration::from_millis(10), ..EngineConfig::default() };
/// assert!(matches!(Engine::open_with(dir.path(), quick), Err(OpenError::Locked { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Engine {
    kind: Kind,
}

/// What an engine is: a data directory, or (feature `postgres`) a
/// PostgreSQL database.
#[derive(Clone, Debug)]
enum Kind {
    Embedded(Arc<Shared>),
    #[cfg(feature = "postgres")]
    Postgres(Arc<remote::RemoteEngine>),
}

#[derive(Debug)]
pub(crate) struct Shared {
    dir: PathBuf,
    config: EngineConfig,
    storage: Arc<dyn Storage>,
    topics: Mutex<HashMap<String, Arc<OpenTopic>>>,
    flusher: Arc<Flusher>,
    flusher_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    trash_sequence: AtomicU64,
    /// Topics a backup is copying: none of them is deleted, and those that
    /// are not open are not opened, until it is done (`backup.rs`).
    copying: Mutex<HashSet<String>>,
    /// Notified when a backup is done copying a topic.
    copied: Condvar,
    /// Held by a backup for its whole run: one at a time.
    backup: Mutex<()>,
    /// The lock manager of [`Engine::locks`], made on first use.
    locks: std::sync::OnceLock<crate::lock::LockManager>,
    /// Held for the engine's life: the directory's lock file.
    _lock: Box<dyn Any + Send + Sync>,
}

impl Engine {
    /// Opens (creating if needed) the data directory at `dir` with default settings.
    pub fn open(dir: impl AsRef<Path>) -> Result<Engine, OpenError> {
        Self::open_with(dir, EngineConfig::default())
    }

    /// Opens (creating if needed) the data directory at `dir`.
    ///
    /// Fails if another engine has it open (after waiting up to
    /// [`EngineConfig::lock_wait`] for it to let go), if it holds files but
    /// is not a tollgate directory, or if it was written by a newer format
    /// version.
    ///
    /// # What the engine trusts
    ///
    /// The path `dir` is used as given: it, or a directory above it, may be
    /// a symbolic link. Inside it, the engine follows no link: a file or
    /// directory of its layout that is a symbolic link (`tollgate.lock`,
    /// `topics/<topic>`, a segment, `groups/`, `queues/<group>`...) makes
    /// the operation that meets it fail, with an [`IoError`] whose
    /// [`symlink`](IoError::symlink) names the link, before anything is
    /// created or written through it; so the engine never creates or writes
    /// a file outside `dir`, nor in another engine's directory behind its
    /// lock. It assumes that no other process writes inside `dir` while the
    /// engine holds its lock (one that swapped a directory for a link
    /// between the engine's check and its use could still redirect it), and
    /// that nothing inside was made a hard link to a file elsewhere.
    /// Topics are opened (and recovered) on first use, so opening takes the
    /// same time however much data the directory holds.
    pub fn open_with(dir: impl AsRef<Path>, config: EngineConfig) -> Result<Engine, OpenError> {
        Self::open_on(Arc::new(OsStorage::new(dir.as_ref())), dir.as_ref(), config)
    }

    pub(crate) fn open_on(storage: Arc<dyn Storage>, dir: &Path, config: EngineConfig) -> Result<Engine, OpenError> {
        Self::open_on_with(storage, dir, config, true)
    }

    /// Opens the directory; `flusher_thread`: start the background thread (else
    /// background work runs only when [`Engine::run_background`] is called).
    fn open_on_with(
        storage: Arc<dyn Storage>,
        dir: &Path,
        config: EngineConfig,
        flusher_thread: bool,
    ) -> Result<Engine, OpenError> {
        config.default_topic.validate().map_err(|reason| OpenError::InvalidConfig { reason })?;
        let io = |op, path: &Path, e| OpenError::Io(IoError::new(op, path, e));
        let dir = dir.to_path_buf();
        if !storage.exists(&dir) {
            storage.create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
            // A new directory's own entry must be durable too.
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            storage.sync_dir(&parent).map_err(|e| io("sync", &parent, e))?;
        }
        let meta = dir.join(META_FILE);
        let entries = storage.list_dir(&dir).map_err(|e| io("list", &dir, e))?;
        let mut write_meta = !storage.exists(&meta);
        if !write_meta {
            let bytes = storage.read_file(&meta).map_err(|e| io("read", &meta, e))?;
            match check_meta(&bytes) {
                MetaCheck::Valid => {}
                MetaCheck::Newer(found) => {
                    return Err(OpenError::NewerVersion { path: meta, found, supported: FORMAT_VERSION });
                }
                // The meta file says only "tollgate, version 1": a layout of
                // nothing but tollgate's own names lets repair rewrite it.
                MetaCheck::Invalid
                    if config.recovery == RecoveryMode::Repair
                        && storage.is_dir(&dir.join(TOPICS_DIR))
                        && entries.iter().all(|name| is_layout_file(name)) =>
                {
                    write_meta = true;
                }
                MetaCheck::Invalid => return Err(OpenError::NotTollgate { path: dir, reason: DAMAGED_META }),
            }
        } else if entries.iter().any(|name| !is_fresh_layout_file(name)) {
            return Err(OpenError::NotTollgate { path: dir, reason: "it holds other files and no tollgate.meta" });
        }
        let lock = take_lock(&*storage, &dir.join(LOCK_FILE), config.lock_wait).map_err(|e| io("lock", &dir, e))?;
        let Some(lock) = lock else { return Err(OpenError::Locked { path: dir }) };
        if write_meta {
            // A crash may have left a temporary meta file behind; it is rewritten.
            write_file_atomic(&*storage, &meta, &encode_meta())?;
        }
        for sub in [TOPICS_DIR, TRASH_DIR] {
            let path = dir.join(sub);
            if !storage.exists(&path) {
                storage.create_dir_all(&path).map_err(|e| io("create", &path, e))?;
                storage.sync_dir(&dir).map_err(|e| io("sync", &dir, e))?;
            }
        }
        // Finish deleting topics a crash interrupted.
        let trash = dir.join(TRASH_DIR);
        for name in storage.list_dir(&trash).map_err(|e| io("list", &trash, e))? {
            let path = trash.join(name);
            storage.remove_dir_all(&path).map_err(|e| io("remove", &path, e))?;
        }
        let flusher = Arc::new(Flusher::default());
        let shared = Arc::new(Shared {
            dir,
            config,
            storage,
            topics: Mutex::new(HashMap::new()),
            flusher: flusher.clone(),
            flusher_thread: Mutex::new(None),
            trash_sequence: AtomicU64::new(0),
            copying: Mutex::new(HashSet::new()),
            copied: Condvar::new(),
            backup: Mutex::new(()),
            locks: std::sync::OnceLock::new(),
            _lock: lock,
        });
        if flusher_thread {
            let thread = std::thread::Builder::new()
                .name("tollgate-flusher".into())
                .spawn(move || flusher.run())
                .map_err(|e| io("spawn flusher for", &shared.dir, e))?;
            *shared.flusher_thread.lock() = Some(thread);
        }
        Ok(Engine { kind: Kind::Embedded(shared) })
    }

    /// Opens (creating if needed) the data directory `dir` on a simulated
    /// disk, as [`Engine::open_with`] does on the real file system: for crash
    /// tests that cut the power with [`SimDisk::power_cut`] and reopen.
    #[cfg(feature = "sim")]
    pub fn open_sim(disk: &SimDisk, dir: impl AsRef<Path>, config: EngineConfig) -> Result<Engine, OpenError> {
        Engine::open_on(Arc::new(disk.clone()), dir.as_ref(), config)
    }

    /// Opens the directory `dir` on a simulated disk as
    /// [`Engine::open_sim`] does, but starts no background thread: interval
    /// flushes, the syncing of sealed segments and retention run only when
    /// [`Engine::run_background`] is called (and at a `Sync` publish,
    /// [`Topic::sync`] and the close, as always). For fuzz targets and
    /// deterministic tests, which open thousands of engines a second and
    /// decide when the background work runs.
    ///
    /// ```
    /// use tollgate::{Engine, EngineConfig, SimDisk, TopicConfig};
    ///
    /// let disk = SimDisk::new();
    /// let engine = Engine::open_sim_without_flusher(&disk, "/data", EngineConfig::default())?;
    /// let config =
    ///     TopicConfig { segment_bytes: 4096, max_message_bytes: 1024, retention_bytes: Some(4096), ..TopicConfig::default() };
    /// let topic = engine.create_topic("t", config)?;
    /// for _ in 0..100 {
    ///     topic.publish([b'x'; 100])?;
    /// }
    /// assert_eq!(topic.info().oldest.get(), 0, "nothing applies retention yet");
    /// engine.run_background();
    /// assert!(topic.info().oldest.get() > 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "sim")]
    pub fn open_sim_without_flusher(
        disk: &SimDisk,
        dir: impl AsRef<Path>,
        config: EngineConfig,
    ) -> Result<Engine, OpenError> {
        Engine::open_on_with(Arc::new(disk.clone()), dir.as_ref(), config, false)
    }

    /// Runs one pass of the background work the flusher thread does, on
    /// the calling thread: each open topic's due interval flush (and the
    /// sync of its worker groups' journals after it), the syncing of sealed
    /// segments, and retention. Errors are kept by each topic and reported
    /// by its next operation, as the thread's are. For engines opened with
    /// [`Engine::open_sim_without_flusher`]; on others it only runs a pass
    /// early.
    #[cfg(feature = "sim")]
    pub fn run_background(&self) {
        if let Some(shared) = self.embedded() {
            shared.flusher.pass();
        }
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> Engine {
        Engine { kind: Kind::Embedded(shared) }
    }

    /// The embedded engine's state; `None` for a PostgreSQL engine.
    fn embedded(&self) -> Option<&Arc<Shared>> {
        match &self.kind {
            Kind::Embedded(shared) => Some(shared),
            #[cfg(feature = "postgres")]
            Kind::Postgres(_) => None,
        }
    }

    /// How the engine opens topics and worker groups.
    pub(crate) fn recovery_mode(&self) -> RecoveryMode {
        self.embedded().map_or(RecoveryMode::Normal, |shared| shared.config.recovery)
    }

    /// The data directory; for a PostgreSQL engine, an empty path.
    pub fn path(&self) -> &Path {
        match &self.kind {
            Kind::Embedded(shared) => &shared.dir,
            #[cfg(feature = "postgres")]
            Kind::Postgres(_) => Path::new(""),
        }
    }

    /// Whether the engine keeps its topics in PostgreSQL
    /// (`Engine::connect`, feature `postgres`) rather than in a data directory.
    pub fn is_remote(&self) -> bool {
        self.embedded().is_none()
    }

    /// Runs the retention job once, and reports what it removed.
    ///
    /// On PostgreSQL: deletes, topic by topic, the oldest messages past
    /// their topic's retention (`TopicConfig::retention_age` and the count
    /// limit) that every worker group has settled, in transactions of at
    /// most 1,000 messages, until none is left or 100 transactions ran
    /// ([`CleanupReport::more`] says whether more may be due); then the rows
    /// of lock keys nobody holds or waits for ([`LockManager::shrink`]).
    /// Run it every minute or so from one process (docs/OPERATIONS.md);
    /// running it from several at once is safe, only wasteful.
    ///
    /// On a data directory the engine's background thread applies retention
    /// itself, segment by segment: this only shrinks the lock manager and
    /// reports nothing removed.
    ///
    /// [`LockManager::shrink`]: crate::LockManager::shrink
    pub fn cleanup(&self) -> Result<CleanupReport, TopicError> {
        match &self.kind {
            Kind::Embedded(shared) => {
                if let Some(locks) = shared.locks.get() {
                    locks.shrink();
                }
                Ok(CleanupReport::default())
            }
            #[cfg(feature = "postgres")]
            Kind::Postgres(remote) => remote.cleanup(),
        }
    }

    /// The lock manager that goes with this engine, for
    /// [`Topic::transaction`]: for an engine on a data directory, one
    /// manager of this process, made with the engine (every call returns a
    /// handle to the same one); for a PostgreSQL engine, a manager whose
    /// locks are in the same database and schema, on the engine's
    /// connections.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use std::time::Duration;
    /// use tollgate::{Engine, Message};
    ///
    /// let engine = Engine::open(dir.path())?;
    /// let orders = engine.topic("orders")?;
    /// let buyer = engine.locks().session();
    /// let tx = orders.transaction(&buyer, ["sku:1"], Duration::from_millis(50))?;
    /// tx.commit([Message::new("order 7")])?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn locks(&self) -> crate::lock::LockManager {
        match &self.kind {
            Kind::Embedded(shared) => shared.locks.get_or_init(crate::lock::LockManager::new).clone(),
            #[cfg(feature = "postgres")]
            Kind::Postgres(remote) => remote.locks.clone(),
        }
    }

    /// The topic called `name`, created with the engine's default
    /// configuration if it does not exist. A name that is not a single file
    /// name, or that would create a topic and holds a control character, is
    /// [`TopicError::InvalidName`].
    pub fn topic(&self, name: &str) -> Result<Topic, TopicError> {
        self.open_topic(name, None)
    }

    /// Creates the topic `name` with `config`; fails if it exists. On
    /// PostgreSQL, a [`TopicConfig::segment_bytes`] other than the default,
    /// or a [`TopicConfig::retention_bytes`], is
    /// [`TopicError::Unsupported`].
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Topic, TopicError> {
        self.open_topic(name, Some(config))
    }

    fn open_topic(&self, name: &str, create: Option<TopicConfig>) -> Result<Topic, TopicError> {
        let shared_arc = match &self.kind {
            Kind::Embedded(shared) => shared,
            #[cfg(feature = "postgres")]
            Kind::Postgres(remote) => return remote.open_topic(name, create),
        };
        check_topic_name(name)?;
        let shared = &**shared_arc;
        let mut topics = shared.lock_topics(name, true);
        let topic_dir = shared.dir.join(TOPICS_DIR).join(name);
        let conf = topic_dir.join(TOPIC_FILE);
        let exists = shared.storage.exists(&conf);
        if create.is_some() && exists {
            return Err(TopicError::AlreadyExists { name: name.to_owned() });
        }
        if let Some(open) = topics.get(name) {
            return Ok(Topic::new(open.clone()));
        }
        let io = |op, path: &Path, e| TopicError::Io(IoError::new(op, path, e));
        let mut dir_existed = true;
        let config = if exists {
            TopicConfig::read(&*shared.storage, &conf)?
        } else {
            check_new_name(name)?;
            let config = create.unwrap_or(shared.config.default_topic);
            config.validate().map_err(|reason| TopicError::InvalidConfig { reason })?;
            // The configuration is written last, so a topic directory
            // without one is a creation a crash interrupted and is reused.
            let topics_dir = shared.dir.join(TOPICS_DIR);
            dir_existed = match shared.storage.list_dir(&topic_dir) {
                Ok(_) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(io("list", &topic_dir, e)),
            };
            let created = shared
                .storage
                .create_dir_all(&topic_dir)
                .map_err(|e| io("create", &topic_dir, e))
                .and_then(|()| shared.storage.sync_dir(&topics_dir).map_err(|e| io("sync", &topics_dir, e)))
                .and_then(|()| Ok(write_file_atomic(&*shared.storage, &conf, &config.encode())?));
            if let Err(e) = created {
                shared.discard_new_topic(&topic_dir, dir_existed);
                return Err(e);
            }
            config
        };
        let log =
            open_topic(shared.storage.clone(), topic_dir.clone(), name.to_owned(), config, shared.config.recovery)
                .inspect_err(|_| {
                    if !exists {
                        shared.discard_new_topic(&topic_dir, dir_existed);
                    }
                })?;
        let mode = shared.config.recovery;
        if !log.recovery().clean || mode == RecoveryMode::Repair {
            // Worker groups may have settled offsets that did not survive
            // (recovery rule 5): lower them to the recovered end of the log,
            // before any worker can read them. Repair also rewrites damaged
            // groups.
            let end = (!log.recovery().clean).then(|| log.committed().load());
            recover_groups(&*shared.storage, &topic_dir, end, log.oldest(), mode)?;
        }
        if shared.flusher_thread.lock().is_some() {
            // Tasks waiting for a `Sync` publish ask the flusher to sync.
            let flusher = Arc::clone(&shared.flusher);
            log.set_sync_requester(Box::new(move || flusher.request()));
        }
        let open = Arc::new(OpenTopic::new(log, Arc::downgrade(shared_arc)));
        topics.insert(name.to_owned(), open.clone());
        shared.flusher.add(&open);
        Ok(Topic::new(open))
    }

    /// The names of the topics in the directory, sorted.
    pub fn topics(&self) -> Result<Vec<String>, TopicError> {
        let shared = match &self.kind {
            Kind::Embedded(shared) => &**shared,
            #[cfg(feature = "postgres")]
            Kind::Postgres(remote) => return remote.topics(),
        };
        let dir = shared.dir.join(TOPICS_DIR);
        let _topics = shared.topics.lock();
        let mut names: Vec<String> = shared
            .storage
            .list_dir(&dir)
            .map_err(|e| TopicError::Io(IoError::new("list", &dir, e)))?
            .into_iter()
            .filter(|name| check_topic_name(name).is_ok() && shared.storage.exists(&dir.join(name).join(TOPIC_FILE)))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Deletes the topic `name` and everything in it, group offsets
    /// included. Handles to it fail with `Deleted` from then on.
    pub fn delete_topic(&self, name: &str) -> Result<(), TopicError> {
        check_topic_name(name)?;
        let shared = match &self.kind {
            Kind::Embedded(shared) => &**shared,
            #[cfg(feature = "postgres")]
            Kind::Postgres(remote) => return remote.delete_topic(name),
        };
        let mut topics = shared.lock_topics(name, false);
        let topics_dir = shared.dir.join(TOPICS_DIR);
        let topic_dir = topics_dir.join(name);
        if !shared.storage.exists(&topic_dir.join(TOPIC_FILE)) {
            return Err(TopicError::NotFound { name: name.to_owned() });
        }
        let io = |op, path: &Path, e| TopicError::Io(IoError::new(op, path, e));
        let trash_dir = shared.dir.join(TRASH_DIR);
        let trash =
            trash_dir.join(format!("{}-{}", std::process::id(), shared.trash_sequence.fetch_add(1, Ordering::Relaxed)));
        let open = topics.get(name).cloned();
        // The rename is the deletion's commit point; removing the files
        // after it may be finished by the next open. It runs under the
        // topic's locks (`TopicLog::delete_with`: no publish, sync or
        // retention pass touches `topics/<name>` after it, when the name may
        // belong to a new topic), and under the worker-group registry's: no
        // group of it is opened (its directory created) after it.
        let rename = || {
            let _groups = open.as_ref().map(|open| open.groups.lock());
            shared.storage.rename(&topic_dir, &trash).map_err(|e| io("rename", &topic_dir, e))
        };
        match &open {
            Some(open) => open.log.delete_with(rename)?,
            None => rename()?,
        }
        topics.remove(name);
        shared.storage.sync_dir(&topics_dir).map_err(|e| io("sync", &topics_dir, e))?;
        shared.storage.sync_dir(&trash_dir).map_err(|e| io("sync", &trash_dir, e))?;
        shared.storage.remove_dir_all(&trash).map_err(|e| io("remove", &trash, e))?;
        Ok(())
    }
}

/// Takes the lock on `path`, trying again with growing pauses while someone
/// else holds it, for up to `wait`; `Ok(None)` if it is still held then.
fn take_lock(
    storage: &dyn Storage,
    path: &Path,
    wait: Duration,
) -> std::io::Result<Option<Box<dyn Any + Send + Sync>>> {
    let deadline = Instant::now().checked_add(wait);
    let mut pause = LOCK_RETRY_FIRST;
    loop {
        if let Some(lock) = storage.lock_file(path)? {
            return Ok(Some(lock));
        }
        let left = deadline.map_or(pause, |deadline| deadline.saturating_duration_since(Instant::now()));
        if left.is_zero() {
            return Ok(None);
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(LOCK_RETRY_MAX);
    }
}

impl Shared {
    /// Removes what a topic creation that failed (a full disk, say) wrote,
    /// so that it leaves nothing behind: the directory, if this creation
    /// made it (`dir_existed` false); otherwise (a directory without
    /// `topic.conf`, which a crash or a hand left) only the configuration,
    /// which it wrote, so that whatever else the directory holds stays.
    /// Best effort: what cannot be removed now is a creation the next one
    /// reuses, as after a crash.
    fn discard_new_topic(&self, topic_dir: &Path, dir_existed: bool) {
        let removed = if dir_existed {
            let conf = topic_dir.join(TOPIC_FILE);
            match self.storage.remove_file(&conf) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                removed => removed,
            }
            .and_then(|()| self.storage.sync_dir(topic_dir))
        } else {
            self.storage.remove_dir_all(topic_dir).and_then(|()| self.storage.sync_dir(&self.dir.join(TOPICS_DIR)))
        };
        let _ = removed;
    }

    /// The topic registry, once no backup is copying the topic `name`'s
    /// files, or, with `open_ok`, once it is either open or not being
    /// copied (an open topic's files are copied up to the backup's cut
    /// while it runs; a topic at rest must stay at rest until copied).
    fn lock_topics(&self, name: &str, open_ok: bool) -> MutexGuard<'_, HashMap<String, Arc<OpenTopic>>> {
        loop {
            let topics = self.topics.lock();
            // Backups pin topics under the registry's lock, so this check
            // cannot miss one.
            if (open_ok && topics.contains_key(name)) || !self.copying.lock().contains(name) {
                return topics;
            }
            drop(topics);
            let mut copying = self.copying.lock();
            while copying.contains(name) {
                self.copied.wait(&mut copying);
            }
        }
    }
}

/// Whether `name` may be in a data directory that has no `tollgate.meta`
/// yet: the lock file, and the temporary meta file of a creation a crash
/// interrupted. Anything else (`tollgate.meta.orig`, a user's file) means the
/// directory is not a tollgate directory being created, and it is refused
/// before anything is written.
fn is_fresh_layout_file(name: &str) -> bool {
    name == LOCK_FILE || name.strip_prefix(META_FILE) == Some(TMP_SUFFIX)
}

/// Whether `name` is one of the entries a data directory holds.
fn is_layout_file(name: &str) -> bool {
    is_fresh_layout_file(name) || [META_FILE, TOPICS_DIR, TRASH_DIR].contains(&name)
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.flusher.stop();
        if let Some(thread) = self.flusher_thread.lock().take() {
            let _ = thread.join();
        }
        for open in self.topics.lock().values() {
            open.log.close(|| open.sync_groups());
        }
    }
}
