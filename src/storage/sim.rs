//! `SimDisk`: a simulated disk for crash tests, in the manner of redb's
//! `tests/crash_consistency.rs`. It implements [`Storage`] in memory and
//! keeps two images of every file and directory: the **live** one, which the
//! running program sees, and the **durable** one, which survives a power cut.
//! A test runs a workload, lets the disk die at its Nth sync, cuts the power,
//! reopens the engine on what survived, and checks what recovery kept.
//!
//! The model is the storage `docs/FORMAT.md` assumes, at its weakest:
//!
//! - A file is an inode with live bytes (one allocation that mappings point
//!   into) and durable bytes. Writes through a mapping, `allocate` and
//!   `set_len` change only the live bytes. `flush(at, len)` makes that range
//!   and the file's length durable (msync plus fdatasync); `sync` and
//!   `write_file` make the whole file durable.
//! - A directory is an inode with live and durable entries (name to inode).
//!   Creating, renaming and deleting change the live entries; `sync_dir`
//!   makes all of them durable. A file whose last durable entry is gone is
//!   gone after a cut, however well its bytes were synced.
//! - [`SimDisk::power_cut`] builds the disk a reboot would find: the durable
//!   entries (unsynced directory operations are all lost), each file at its
//!   durable length or, by chance, its live one (metadata written back ahead
//!   of the data), and each 4096-byte page whose live and durable bytes differ
//!   either old, new, or torn (new up to a random byte, old after it).
//!
//! `flush` copies exactly the bytes asked for, not the whole pages around
//! them as `msync` writes: the rest of those pages is left to the cut, which
//! may keep it or not like any unsynced page. That covers what `msync` can
//! produce, and it never reads a byte outside the range, which another thread
//! may be writing through its mapping at that moment.

use std::any::Any;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// The disk's maps and sets of inodes: hashed with foldhash, not SipHash
/// (the fuzz targets spend much of their time looking paths up).
type InoMap<V> = HashMap<Ino, V, foldhash::fast::FixedState>;
type InoSet = HashSet<Ino, foldhash::fast::FixedState>;
/// A directory's entries. Hashed rather than ordered: a lookup then
/// compares one name, where a search of an ordered map compares several,
/// and each unequal `memcmp` costs a fuzz target a value-profile entry.
/// Whoever needs an order sorts.
type Entries = HashMap<String, Ino, foldhash::fast::FixedState>;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::{MappedFile, ReadAt, ReadStorage, Storage};
use crate::error::Escaped;

/// A simulated disk for crash tests: an in-memory file system that keeps a
/// live image (what the program sees) and a durable image (what survives a
/// power cut) of every file and directory.
///
/// Clones share the same disk. Open an engine on it with
/// [`Engine::open_sim`](crate::Engine::open_sim); make it die at a chosen sync with
/// [`fail_after_syncs`](SimDisk::fail_after_syncs); take what survives with
/// [`power_cut`](SimDisk::power_cut), which leaves this disk as it is, so
/// several cuts can be taken at the same point with different seeds.
///
/// What it models, exactly: a write through a mapping is only live until a
/// flush or sync covers it; creating, renaming and deleting are only live
/// until the parent directory is synced; at a cut, every unsynced page of a
/// file keeps its old bytes, takes its new ones, or is torn between the two.
///
/// ```
/// use tollgate::{Durability, Engine, EngineConfig, Offset, SimDisk, TopicConfig};
///
/// let disk = SimDisk::new();
/// disk.create_dir_all_durable("/data")?;
/// let engine = Engine::open_sim(&disk, "/data", EngineConfig::default())?;
/// let config = TopicConfig { durability: Durability::Sync, ..TopicConfig::default() };
/// let orders = engine.create_topic("orders", config)?;
/// orders.publish(b"order 1001")?;
///
/// // The machine dies at its next sync: this publish is never acknowledged.
/// disk.fail_after_syncs(0);
/// assert!(orders.publish(b"order 1002").is_err());
///
/// // Reboot on what reached the disk. The acknowledged record is there; the
/// // other one may or may not be, whole.
/// let rebooted = disk.power_cut(7);
/// let engine = Engine::open_sim(&rebooted, "/data", EngineConfig::default())?;
/// let orders = engine.topic("orders")?;
/// assert!(orders.info().next >= Offset::new(1));
/// assert_eq!(orders.read(Offset::new(0))?.payload().as_ref(), b"order 1001");
/// orders.verify()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
    /// The clock engines on this disk read, if simulated.
    clock: Option<Arc<SimClock>>,
}

impl SimDisk {
    /// An empty disk: just a root directory, no capacity limit, never failing.
    /// Engines on it read the system's clocks.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    /// An empty disk, as [`new`](SimDisk::new), with a simulated clock:
    /// engines opened on it (and on the disks its
    /// [`power_cut`](SimDisk::power_cut) and
    /// [`kill_process`](SimDisk::kill_process) make, which share the clock)
    /// read the time from a clock that starts at the system's time and then
    /// moves only by [`advance_clock`](SimDisk::advance_clock). It drives
    /// every time the work queues compare: visibility deadlines, delays
    /// ([`Message::deliver_at`](crate::Message::deliver_at); `deliver_after`
    /// reads the system's clock, use `deliver_at(disk.system_time() + delay)`),
    /// nack retry times and dead-letter retries. Since time never passes on
    /// its own, [`Worker::receive`](crate::Worker::receive) does not wait:
    /// with nothing to hand out it returns `None` at once, whatever its
    /// timeout. What the log stamps on records, retention by age, interval
    /// flushes and subscriptions' waits keep the system's clocks. For fuzz
    /// targets and tests of timeouts that must not sleep.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Engine, EngineConfig, QueueConfig, SimDisk, TopicConfig};
    ///
    /// let disk = SimDisk::with_simulated_clock();
    /// let engine = Engine::open_sim(&disk, "/data", EngineConfig::default())?;
    /// let topic = engine.create_topic("jobs", TopicConfig::default())?;
    /// let config = QueueConfig { visibility_timeout: Duration::from_secs(30), ..QueueConfig::default() };
    /// let worker = topic.worker_with("g", config)?;
    /// topic.publish(b"resize image 7")?;
    /// let first = worker.receive(Duration::ZERO)?.expect("published");
    /// assert!(worker.receive(Duration::from_secs(1))?.is_none(), "in flight, and no time passed");
    /// disk.advance_clock(Duration::from_secs(31));
    /// let again = worker.receive(Duration::ZERO)?.expect("the visibility timeout passed");
    /// assert_eq!(again.attempt(), 2);
    /// drop(first);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_simulated_clock() -> SimDisk {
        SimDisk { clock: Some(Arc::new(SimClock::new())), ..SimDisk::default() }
    }

    /// Moves the disk's simulated clock forward by `by` (in whole
    /// microseconds), for every engine on it.
    ///
    /// # Panics
    ///
    /// If the disk was not made with
    /// [`with_simulated_clock`](SimDisk::with_simulated_clock).
    pub fn advance_clock(&self, by: Duration) {
        self.clock.as_ref().expect("advance_clock: the disk has no simulated clock").advance(by);
    }

    /// The monotonic time engines on this disk read: the simulated clock's,
    /// or `Instant::now()`.
    pub fn now(&self) -> Instant {
        self.clock.as_ref().map_or_else(Instant::now, |clock| clock.now())
    }

    /// The wall-clock time engines on this disk read: the simulated clock's,
    /// or `SystemTime::now()`.
    pub fn system_time(&self) -> SystemTime {
        match &self.clock {
            Some(clock) => UNIX_EPOCH + Duration::from_micros(clock.now_us()),
            None => SystemTime::now(),
        }
    }

    /// What survives if the power is cut now, as a new disk whose live and
    /// durable images are both that.
    ///
    /// Every durable byte and directory entry survives. Of what was not
    /// synced, `seed` chooses (the same seed on the same disk chooses the
    /// same): each file keeps its durable length or takes its live one, and
    /// each 4096-byte page whose live bytes differ from its durable ones keeps
    /// the durable bytes, takes the live ones, or is torn (live up to a random
    /// byte, durable after it). Directory operations not made durable by a
    /// `sync_dir` are all lost. The new disk keeps this one's capacity; it
    /// starts with no sync counted, no failure scheduled and no file locked.
    ///
    /// This disk is left as it is and keeps working. Take the cut while no
    /// thread is publishing to an engine on this disk (after the workload has
    /// stopped, or once the disk has died): it reads every file's live bytes,
    /// and a byte being written at that moment is a race.
    pub fn power_cut(&self, seed: u64) -> SimDisk {
        self.survivors(Some(seed))
    }

    /// What survives if the process is killed now (`kill -9`) but the
    /// machine keeps running: everything written, synced or not (the page
    /// cache keeps it), as a new disk whose live and durable images are
    /// that. Drop the engine that was running on this disk afterwards: what
    /// it does after the kill reaches only this disk, not the new one.
    ///
    /// Take it while no thread is writing, as for [`power_cut`](SimDisk::power_cut).
    pub fn kill_process(&self) -> SimDisk {
        self.survivors(None)
    }

    /// A new disk of what survives a power cut (with the seed) or a kill (without).
    fn survivors(&self, power_cut: Option<u64>) -> SimDisk {
        let old = self.state.lock();
        let mut rng = SplitMix64(power_cut.unwrap_or(0));
        let mut new = State { capacity_bytes: old.capacity_bytes, ..State::default() };
        let mut renumbered = InoMap::from_iter([(ROOT, ROOT)]);
        let mut pending = vec![ROOT];
        while let Some(old_dir) = pending.pop() {
            let new_dir = renumbered[&old_dir];
            for (name, old_ino) in old.dir(old_dir).sorted(power_cut.is_some()) {
                let ino = match renumbered.get(&old_ino) {
                    Some(&ino) => ino,
                    None => {
                        let ino = new.new_ino();
                        renumbered.insert(old_ino, ino);
                        let node = match &old.nodes[&old_ino] {
                            Node::Dir(_) => {
                                pending.push(old_ino);
                                Node::Dir(SimDir::default())
                            }
                            Node::File(file) => {
                                let bytes = if power_cut.is_some() { file.survivor(&mut rng) } else { file.live() };
                                Node::File(SimFile::with_bytes(&bytes))
                            }
                        };
                        new.nodes.insert(ino, node);
                        ino
                    }
                };
                // Live and durable alike, so nothing is left to sync.
                let dir = new.dir_mut(new_dir);
                dir.live.insert(name.clone(), ino);
                dir.durable.insert(name.clone(), ino);
            }
        }
        SimDisk { state: Arc::new(Mutex::new(new)), clock: self.clock.clone() }
    }

    /// Makes the disk die after `n` more successful syncs (`flush`, `sync`,
    /// `write_file`, `sync_dir`): from then on every operation that writes or
    /// syncs fails with an `io::Error` ("simulated power loss") and changes
    /// nothing durable, as if the machine had lost power there. Reads go on
    /// working, and so do writes through existing mappings, which only ever
    /// reach the live image. `fail_after_syncs(0)` makes it die at once.
    pub fn fail_after_syncs(&self, n: u64) {
        self.state.lock().syncs_left = Some(n);
    }

    /// The number of successful syncs so far.
    pub fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Limits the total live length of the files to `bytes` (`None`: no
    /// limit). Then `allocate` and `write_file` that would go past it, and
    /// creating a file when the disk is full, fail with
    /// [`io::ErrorKind::StorageFull`].
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state.lock().capacity_bytes = bytes;
    }

    /// Bytes the files take, as [`set_capacity`](SimDisk::set_capacity)
    /// counts them: the live length of every file in the live tree, and of
    /// unlinked files still mapped.
    pub fn used_bytes(&self) -> u64 {
        self.state.lock().used_bytes()
    }

    /// Every live directory and file below `dir`, with a file's live length
    /// (`None` for a directory), sorted by path: what a program listing the
    /// disk now would see.
    pub fn tree(&self, dir: impl AsRef<Path>) -> Vec<(PathBuf, Option<u64>)> {
        let state = self.state.lock();
        let mut found = Vec::new();
        let Ok(ino) = state.lookup(dir.as_ref()) else { return found };
        let mut pending = vec![(dir.as_ref().to_path_buf(), ino)];
        while let Some((path, ino)) = pending.pop() {
            if let Some(Node::Dir(d)) = state.nodes.get(&ino) {
                for (name, &child) in &d.live {
                    let child_path = path.join(name);
                    match &state.nodes[&child] {
                        Node::Dir(_) => {
                            found.push((child_path.clone(), None));
                            pending.push((child_path, child));
                        }
                        Node::File(file) => found.push((child_path, Some(file.len as u64))),
                    }
                }
            }
        }
        found.sort();
        found
    }

    /// Creates a directory and its missing parents, durably at once, as if
    /// it had been made and synced before the program started: for tests
    /// that take their data directory as given.
    pub fn create_dir_all_durable(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.state.lock().create_dir_all(path.as_ref(), true)
    }

    /// Creates the file `path` (which must not exist) holding `bytes`, and
    /// its missing parent directories, all durably at once, as if they had
    /// been written and synced before the program started: for tests and
    /// fuzz targets that lay out a data directory file by file (a real
    /// one's files, damaged). Counts no sync. Fails as writing a new file
    /// does: `AlreadyExists`, `StorageFull` past the capacity, or once the
    /// disk has died.
    pub fn write_file_durable(&self, path: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
        let path = path.as_ref();
        let mut state = self.state.lock();
        state.alive()?;
        if let Some(parent) = path.parent() {
            state.create_dir_all(parent, true)?;
        }
        let (parent, name) = state.parent_and_name(path)?;
        if state.dir(parent).live.contains_key(&name) {
            return Err(error(io::ErrorKind::AlreadyExists, path));
        }
        state.check_room_for_new_file(bytes.len() as u64)?;
        let ino = state.new_ino();
        state.nodes.insert(ino, Node::File(SimFile::with_bytes(bytes)));
        let dir = state.dir_mut(parent);
        dir.link(name.clone(), ino);
        dir.durable.insert(name, ino);
        Ok(())
    }

    /// The live bytes of the file `path`: what a program reading it now
    /// would get.
    pub fn file_bytes(&self, path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
        ReadStorage::read_file(self, path.as_ref())
    }
}

/// A clock that starts at the system's time when it is made and then moves
/// only by [`SimClock::advance`] ([`SimDisk::with_simulated_clock`]).
#[derive(Debug)]
pub(crate) struct SimClock {
    start: Instant,
    start_us: u64,
    /// Microseconds advanced since the start.
    elapsed_us: AtomicU64,
}

impl SimClock {
    fn new() -> SimClock {
        let start_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        SimClock { start: Instant::now(), start_us, elapsed_us: AtomicU64::new(0) }
    }

    /// The monotonic time now.
    pub(crate) fn now(&self) -> Instant {
        self.start + Duration::from_micros(self.elapsed_us.load(Ordering::Acquire))
    }

    /// Microseconds since the Unix epoch, now.
    pub(crate) fn now_us(&self) -> u64 {
        self.start_us.saturating_add(self.elapsed_us.load(Ordering::Acquire))
    }

    fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        let _ = self.elapsed_us.fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| Some(e.saturating_add(by)));
    }
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        let files = state.nodes.values().filter(|node| matches!(node, Node::File(_))).count();
        f.debug_struct("SimDisk")
            .field("files", &files)
            .field("directories", &(state.nodes.len() - files))
            .field("syncs", &state.syncs)
            .field("syncs_left", &state.syncs_left)
            .field("capacity_bytes", &state.capacity_bytes)
            .finish()
    }
}

impl ReadStorage for SimDisk {
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let state = self.state.lock();
        let ino = state.lookup(path)?;
        match &state.nodes[&ino] {
            // In no particular order, as a real directory's.
            Node::Dir(dir) => Ok(dir.live.keys().cloned().collect()),
            Node::File(_) => Err(error(io::ErrorKind::NotADirectory, path)),
        }
    }

    fn exists(&self, path: &Path) -> bool {
        self.state.lock().find(path).is_ok()
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let state = self.state.lock();
        let ino = state.lookup(path)?;
        match &state.nodes[&ino] {
            Node::File(file) => Ok(file.len as u64),
            Node::Dir(_) => Err(error(io::ErrorKind::IsADirectory, path)),
        }
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.state.lock();
        let ino = state.lookup(path)?;
        match &state.nodes[&ino] {
            Node::File(file) => Ok(file.live()),
            Node::Dir(_) => Err(error(io::ErrorKind::IsADirectory, path)),
        }
    }

    fn is_dir(&self, path: &Path) -> bool {
        let state = self.state.lock();
        state.find(path).is_ok_and(|ino| matches!(state.nodes[&ino], Node::Dir(_)))
    }

    /// The handle holds the file's bytes, as a mapping does, so it keeps
    /// reading them after the name is removed. As for
    /// [`power_cut`](SimDisk::power_cut), read while no thread writes
    /// through a mapping of the file.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadAt>> {
        let mut state = self.state.lock();
        let ino = state.lookup(path)?;
        if matches!(state.nodes[&ino], Node::Dir(_)) {
            return Err(error(io::ErrorKind::IsADirectory, path));
        }
        let data = state.file_mut(ino).data.clone();
        Ok(Box::new(SimReader { state: self.state.clone(), ino, data }))
    }

    fn identity(&self, path: &Path) -> io::Result<Option<(u64, u64)>> {
        Ok(Some((0, self.state.lock().lookup(path)?)))
    }

    fn lock_held(&self, path: &Path) -> bool {
        let state = self.state.lock();
        state.find(path).is_ok_and(|ino| state.locked.contains(&ino))
    }
}

impl Storage for SimDisk {
    fn sim_clock(&self) -> Option<Arc<SimClock>> {
        self.clock.clone()
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.state.lock().create_dir_all(path, false)
    }

    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        state.alive()?;
        let (parent, name) = state.parent_and_name(path)?;
        match state.dir(parent).live.get(&name).copied() {
            Some(ino) => {
                let old_len = match &state.nodes[&ino] {
                    Node::File(file) => file.len,
                    Node::Dir(_) => return Err(error(io::ErrorKind::IsADirectory, path)),
                };
                state.check_room(bytes.len().saturating_sub(old_len) as u64)?;
                state.file_mut(ino).replace(bytes)?;
            }
            None => {
                state.check_room_for_new_file(bytes.len() as u64)?;
                let ino = state.new_ino();
                state.nodes.insert(ino, Node::File(SimFile::with_bytes(bytes)));
                state.dir_mut(parent).link(name, ino);
            }
        }
        state.count_sync();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.alive()?;
        let (from_parent, from_name) = state.parent_and_name(from)?;
        let (to_parent, to_name) = state.parent_and_name(to)?;
        let Some(ino) = state.dir(from_parent).live.get(&from_name).copied() else {
            return Err(error(io::ErrorKind::NotFound, from));
        };
        let moving_dir = matches!(state.nodes[&ino], Node::Dir(_));
        if let Some(target) = state.dir(to_parent).live.get(&to_name).copied() {
            if target == ino {
                return Ok(());
            }
            match (&state.nodes[&target], moving_dir) {
                (Node::Dir(_), false) => return Err(error(io::ErrorKind::IsADirectory, to)),
                (Node::File(_), true) => return Err(error(io::ErrorKind::NotADirectory, to)),
                (Node::Dir(dir), true) if !dir.live.is_empty() => {
                    return Err(error(io::ErrorKind::DirectoryNotEmpty, to));
                }
                _ => {}
            }
        }
        if moving_dir && state.is_inside(to_parent, ino) {
            return Err(error(io::ErrorKind::InvalidInput, to));
        }
        state.dir_mut(from_parent).unlink(&from_name);
        let replaced = state.dir_mut(to_parent).link(to_name.clone(), ino);
        // Only a replaced target can become unreachable, and only if no
        // durable entry still reaches it.
        if replaced.is_some() && state.dir(to_parent).durable.get(&to_name) != replaced.as_ref() {
            state.collect_garbage();
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.alive()?;
        let (parent, name) = state.parent_and_name(path)?;
        match state.dir(parent).live.get(&name).map(|ino| &state.nodes[ino]) {
            None => return Err(error(io::ErrorKind::NotFound, path)),
            Some(Node::Dir(_)) => return Err(error(io::ErrorKind::IsADirectory, path)),
            Some(Node::File(_)) => {}
        }
        let removed = state.dir_mut(parent).unlink(&name);
        // A durable entry still reaches the file until its directory is synced.
        if state.dir(parent).durable.get(&name) != removed.as_ref() {
            state.collect_garbage();
        }
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.alive()?;
        let (parent, name) = state.parent_and_name(path)?;
        let Some(ino) = state.dir(parent).live.get(&name).copied() else {
            return Err(error(io::ErrorKind::NotFound, path));
        };
        if matches!(state.nodes[&ino], Node::File(_)) {
            return Err(error(io::ErrorKind::NotADirectory, path));
        }
        // Unlink everything below, live: what was durable comes back at a
        // cut unless the directories holding it are synced.
        let mut pending = vec![ino];
        while let Some(dir) = pending.pop() {
            let entries = state.dir_mut(dir).take_live();
            pending.extend(entries.into_values().filter(|child| matches!(state.nodes[child], Node::Dir(_))));
        }
        state.dir_mut(parent).unlink(&name);
        state.collect_garbage();
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.alive()?;
        let ino = state.lookup(path)?;
        let Node::Dir(dir) = state.nodes.get_mut(&ino).expect("looked up") else {
            return Err(error(io::ErrorKind::NotADirectory, path));
        };
        let dropped = dir.sync();
        state.count_sync();
        if dropped {
            state.collect_garbage();
        }
        Ok(())
    }

    fn lock_file(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>> {
        let mut state = self.state.lock();
        let ino = match state.lookup(path) {
            Ok(ino) => ino,
            Err(e) if e.kind() == io::ErrorKind::NotFound => state.create_file(path, 0)?,
            Err(e) => return Err(e),
        };
        if matches!(state.nodes[&ino], Node::Dir(_)) {
            return Err(error(io::ErrorKind::IsADirectory, path));
        }
        if !state.locked.insert(ino) {
            return Ok(None);
        }
        Ok(Some(Box::new(SimLock { state: self.state.clone(), ino })))
    }

    fn open_mapped(&self, path: &Path, create: bool, map_len: usize) -> io::Result<Arc<dyn MappedFile>> {
        let mut state = self.state.lock();
        let ino = if create {
            if state.find(path).is_ok() {
                return Err(error(io::ErrorKind::AlreadyExists, path));
            }
            state.create_file(path, map_len)?
        } else {
            let ino = state.lookup(path)?;
            if matches!(state.nodes[&ino], Node::Dir(_)) {
                return Err(error(io::ErrorKind::IsADirectory, path));
            }
            ino
        };
        let file = state.file_mut(ino);
        file.reserve(map_len)?;
        let data = file.data.clone();
        Ok(Arc::new(SimMapping { state: self.state.clone(), ino, data, map_len }))
    }
}

/// A mapping of a simulated file: a pointer into its live bytes.
struct SimMapping {
    state: Arc<Mutex<State>>,
    ino: Ino,
    /// The file's live bytes; holding them keeps them in place.
    data: Arc<SimBuffer>,
    map_len: usize,
}

impl fmt::Debug for SimMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimMapping").field("inode", &self.ino).field("map_len", &self.map_len).finish()
    }
}

impl MappedFile for SimMapping {
    fn ptr(&self) -> *mut u8 {
        self.data.as_ptr()
    }

    fn map_len(&self) -> usize {
        self.map_len
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.state.lock().file_mut(self.ino).len as u64)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut state = self.state.lock();
        state.alive()?;
        let current = state.file_mut(self.ino).len;
        if len > current {
            state.check_room((len - current) as u64)?;
            state.file_mut(self.ino).set_len(len)?;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut state = self.state.lock();
        state.alive()?;
        state.file_mut(self.ino).set_len(len)
    }

    fn prefault(&self, _at: usize, _len: usize) {
        // The buffer is ordinary zeroed memory: there is nothing to map.
    }

    fn flush(&self, at: usize, len: usize) -> io::Result<()> {
        // As `OsStorage`: flushing nothing makes no system call, so it
        // neither syncs nor fails.
        if len == 0 {
            return Ok(());
        }
        let mut state = self.state.lock();
        state.alive()?;
        let file = state.file_mut(self.ino);
        let end = at.saturating_add(len).min(file.len);
        file.durable.resize(file.len, 0);
        if at < end {
            // SAFETY: the log flushes only bytes it has finished writing and
            // never writes again (published frames, a slot written under
            // `&mut`), so nobody writes `[at, end)` while it is copied.
            unsafe { file.data.read(at, &mut file.durable[at..end]) };
        }
        state.count_sync();
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        state.alive()?;
        let file = state.file_mut(self.ino);
        file.durable = file.live();
        state.count_sync();
        Ok(())
    }
}

/// A simulated file open for positional reads.
struct SimReader {
    state: Arc<Mutex<State>>,
    ino: Ino,
    /// The file's live bytes; holding them keeps the file (as a mapping does).
    data: Arc<SimBuffer>,
}

impl fmt::Debug for SimReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimReader").field("inode", &self.ino).finish()
    }
}

impl ReadAt for SimReader {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state.lock().file_mut(self.ino).len as u64)
    }

    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        let len = self.state.lock().file_mut(self.ino).len;
        let at = usize::try_from(position).unwrap_or(usize::MAX).min(len);
        let n = buf.len().min(len - at);
        // SAFETY: `[at, at + n)` lies below the file's live length, within
        // the buffer; readers use this handle while no thread writes through
        // a mapping of the file (see `open_read`).
        unsafe { self.data.read(at, &mut buf[..n]) };
        Ok(n)
    }
}

/// The lock `lock_file` hands out: held until dropped.
struct SimLock {
    state: Arc<Mutex<State>>,
    ino: Ino,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.state.lock().locked.remove(&self.ino);
    }
}

/// An inode number.
type Ino = u64;

/// The root directory's inode: `/`, and where relative paths start.
const ROOT: Ino = 0;

/// Unsynced bytes reach the disk, or not, a page at a time.
const PAGE_BYTES: usize = 4096;

/// The whole disk, behind the mutex every operation but mapped access takes.
struct State {
    nodes: InoMap<Node>,
    next_ino: Ino,
    /// Successful syncs so far.
    syncs: u64,
    /// Successful syncs before the disk dies; at `Some(0)` it is dead.
    syncs_left: Option<u64>,
    capacity_bytes: Option<u64>,
    /// Files locked by `lock_file`.
    locked: InoSet,
}

impl Default for State {
    fn default() -> Self {
        State {
            nodes: InoMap::from_iter([(ROOT, Node::Dir(SimDir::default()))]),
            next_ino: ROOT + 1,
            syncs: 0,
            syncs_left: None,
            capacity_bytes: None,
            locked: InoSet::default(),
        }
    }
}

enum Node {
    Dir(SimDir),
    File(SimFile),
}

/// A directory: its entries as the program sees them and as they are on disk.
#[derive(Default)]
struct SimDir {
    live: Entries,
    durable: Entries,
    /// The changes to `live` since the last sync, in order (`None`: the
    /// name was removed), so that a sync copies only what changed.
    unsynced: Vec<(String, Option<Ino>)>,
}

impl SimDir {
    fn link(&mut self, name: String, ino: Ino) -> Option<Ino> {
        self.unsynced.push((name.clone(), Some(ino)));
        self.live.insert(name, ino)
    }

    fn unlink(&mut self, name: &str) -> Option<Ino> {
        let removed = self.live.remove(name);
        if removed.is_some() {
            self.unsynced.push((name.to_owned(), None));
        }
        removed
    }

    fn take_live(&mut self) -> Entries {
        self.unsynced.extend(self.live.keys().map(|name| (name.clone(), None)));
        std::mem::take(&mut self.live)
    }

    /// Makes the live entries durable; returns whether an entry that was
    /// durable is gone (only then can an inode have become unreachable).
    fn sync(&mut self) -> bool {
        let mut dropped = false;
        for (name, ino) in self.unsynced.drain(..) {
            let old = match ino {
                Some(ino) => self.durable.insert(name, ino),
                None => self.durable.remove(&name),
            };
            dropped |= old.is_some() && old != ino;
        }
        debug_assert!(self.durable == self.live, "a change to the live entries was not recorded");
        dropped
    }

    /// The entries `durable` or live, sorted by name: an order that does
    /// not depend on the hash map's.
    fn sorted(&self, durable: bool) -> Vec<(&String, Ino)> {
        let mut entries: Vec<_> =
            if durable { &self.durable } else { &self.live }.iter().map(|(n, &i)| (n, i)).collect();
        entries.sort_unstable();
        entries
    }
}

/// A file: live bytes that mappings point into, and durable bytes.
struct SimFile {
    /// Live bytes. Mappings hold clones, so while any lives it never moves.
    data: Arc<SimBuffer>,
    /// Live length. Every byte of `data` at or past it is zero.
    len: usize,
    /// Durable bytes; their length is the durable length.
    durable: Vec<u8>,
}

impl State {
    fn new_ino(&mut self) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    fn dir(&self, ino: Ino) -> &SimDir {
        match &self.nodes[&ino] {
            Node::Dir(dir) => dir,
            Node::File(_) => unreachable!("inode {ino} is a file, not a directory"),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> &mut SimDir {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(dir)) => dir,
            _ => unreachable!("inode {ino} is not a directory"),
        }
    }

    /// A file's inode. Mapped files are never collected, so a mapping's
    /// inode is always there.
    fn file_mut(&mut self, ino: Ino) -> &mut SimFile {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(file)) => file,
            _ => unreachable!("inode {ino} is not a file"),
        }
    }

    /// The inode at `path`, through live entries.
    fn lookup(&self, path: &Path) -> io::Result<Ino> {
        self.find(path).map_err(|kind| error(kind, path))
    }

    /// [`lookup`](State::lookup) without building an error: `exists` and
    /// the like ask it of missing paths often, and a path without `..` (all
    /// the engine's) is walked without allocating.
    fn find(&self, path: &Path) -> Result<Ino, io::ErrorKind> {
        let mut ino = ROOT;
        if path.components().any(|component| component == Component::ParentDir) {
            for name in components(path) {
                ino = self.child(ino, &name)?;
            }
        } else {
            for component in path.components() {
                if let Component::Normal(name) = component {
                    ino = self.child(ino, &name.to_string_lossy())?;
                }
            }
        }
        Ok(ino)
    }

    /// The entry `name` of directory `ino`, through live entries.
    fn child(&self, ino: Ino, name: &str) -> Result<Ino, io::ErrorKind> {
        let Node::Dir(dir) = &self.nodes[&ino] else {
            return Err(io::ErrorKind::NotADirectory);
        };
        dir.live.get(name).copied().ok_or(io::ErrorKind::NotFound)
    }

    /// The directory that holds (or would hold) `path`, and its last name.
    fn parent_and_name(&self, path: &Path) -> io::Result<(Ino, String)> {
        let mut names = components(path);
        let name = names.pop().ok_or_else(|| error(io::ErrorKind::InvalidInput, path))?.into_owned();
        let mut parent = ROOT;
        for component in names {
            parent = self.child(parent, &component).map_err(|kind| error(kind, path))?;
        }
        match self.nodes[&parent] {
            Node::Dir(_) => Ok((parent, name)),
            Node::File(_) => Err(error(io::ErrorKind::NotADirectory, path)),
        }
    }

    /// Whether directory `ino` is `ancestor` or below it.
    fn is_inside(&self, mut ino: Ino, ancestor: Ino) -> bool {
        loop {
            if ino == ancestor {
                return true;
            }
            if ino == ROOT {
                return false;
            }
            let parent = self.nodes.iter().find_map(|(&candidate, node)| match node {
                Node::Dir(dir) if dir.live.values().any(|&child| child == ino) => Some(candidate),
                _ => None,
            });
            match parent {
                Some(parent) => ino = parent,
                None => return false,
            }
        }
    }

    /// `mkdir -p`; with `durable`, every entry on the way is made durable too.
    fn create_dir_all(&mut self, path: &Path, durable: bool) -> io::Result<()> {
        let mut ino = ROOT;
        for name in components(path) {
            let name = name.into_owned();
            let existing = self.dir(ino).live.get(&name).copied();
            let child = match existing {
                Some(child) if matches!(self.nodes[&child], Node::Dir(_)) => child,
                Some(_) => return Err(error(io::ErrorKind::NotADirectory, path)),
                None => {
                    self.alive()?;
                    let child = self.new_ino();
                    self.nodes.insert(child, Node::Dir(SimDir::default()));
                    self.dir_mut(ino).link(name.clone(), child);
                    child
                }
            };
            if durable {
                self.dir_mut(ino).durable.insert(name, child);
            }
            ino = child;
        }
        Ok(())
    }

    /// Creates an empty file at `path` (which does not exist), with room for
    /// `capacity` bytes before its buffer has to move.
    fn create_file(&mut self, path: &Path, capacity: usize) -> io::Result<Ino> {
        self.alive()?;
        let (parent, name) = self.parent_and_name(path)?;
        self.check_room_for_new_file(0)?;
        let ino = self.new_ino();
        self.nodes.insert(ino, Node::File(SimFile::new(capacity)));
        self.dir_mut(parent).link(name, ino);
        Ok(ino)
    }

    /// Fails once the disk has died (see `fail_after_syncs`).
    fn alive(&self) -> io::Result<()> {
        if self.syncs_left == Some(0) { Err(io::Error::other("simulated power loss")) } else { Ok(()) }
    }

    fn count_sync(&mut self) {
        self.syncs += 1;
        if let Some(left) = &mut self.syncs_left {
            *left -= 1;
        }
    }

    /// Fails if `more` live bytes would not fit in the capacity.
    fn check_room(&self, more: u64) -> io::Result<()> {
        match self.capacity_bytes {
            Some(capacity) if more > 0 && self.used_bytes() + more > capacity => {
                Err(io::Error::new(io::ErrorKind::StorageFull, "simulated disk is full"))
            }
            _ => Ok(()),
        }
    }

    /// Fails if a new file of `len` bytes does not fit; a new file needs the
    /// disk not to be full, even an empty one.
    fn check_room_for_new_file(&self, len: u64) -> io::Result<()> {
        match self.capacity_bytes {
            Some(capacity) if self.used_bytes() + len.max(1) > capacity => {
                Err(io::Error::new(io::ErrorKind::StorageFull, "simulated disk is full"))
            }
            _ => Ok(()),
        }
    }

    /// Live bytes of the files in the live tree, and of unlinked files that
    /// are still mapped (their space is freed when the last mapping goes).
    fn used_bytes(&self) -> u64 {
        let mut linked = InoSet::default();
        let mut pending = vec![ROOT];
        while let Some(ino) = pending.pop() {
            if let Node::Dir(dir) = &self.nodes[&ino] {
                for &child in dir.live.values() {
                    if linked.insert(child) {
                        pending.push(child);
                    }
                }
            }
        }
        self.nodes
            .iter()
            .filter_map(|(ino, node)| match node {
                Node::File(file) if linked.contains(ino) || file.is_mapped() => Some(file.len as u64),
                _ => None,
            })
            .sum()
    }

    /// Forgets inodes that no live or durable entry reaches and nothing maps
    /// or locks.
    fn collect_garbage(&mut self) {
        let mut reachable = InoSet::from_iter([ROOT]);
        let mut pending = vec![ROOT];
        while let Some(ino) = pending.pop() {
            if let Some(Node::Dir(dir)) = self.nodes.get(&ino) {
                for &child in dir.live.values().chain(dir.durable.values()) {
                    if reachable.insert(child) {
                        pending.push(child);
                    }
                }
            }
        }
        let locked = &self.locked;
        self.nodes.retain(|ino, node| {
            reachable.contains(ino) || locked.contains(ino) || matches!(node, Node::File(file) if file.is_mapped())
        });
    }
}

impl SimFile {
    /// An empty file with room for `capacity` bytes.
    fn new(capacity: usize) -> SimFile {
        SimFile { data: Arc::new(SimBuffer::zeroed(capacity)), len: 0, durable: Vec::new() }
    }

    /// A file holding `bytes`, live and durable.
    fn with_bytes(bytes: &[u8]) -> SimFile {
        let data = SimBuffer::zeroed(bytes.len());
        // SAFETY: the buffer was just made; nobody else can reach it.
        unsafe { data.write(0, bytes) };
        SimFile { data: Arc::new(data), len: bytes.len(), durable: bytes.to_vec() }
    }

    fn is_mapped(&self) -> bool {
        Arc::strong_count(&self.data) > 1
    }

    /// A copy of the live bytes.
    fn live(&self) -> Vec<u8> {
        let mut bytes = vec![0; self.len];
        // SAFETY: whole-file reads (`read_file`, `sync`, a power cut) happen
        // when nobody writes the file through a mapping: the log reads and
        // syncs whole only files it is not writing (small files, sealed or
        // recovering segments), and `power_cut` asks for a quiet disk.
        unsafe { self.data.read(0, &mut bytes) };
        bytes
    }

    /// Makes room for `len` live bytes, moving them to a larger buffer if
    /// no mapping points into the current one.
    fn reserve(&mut self, len: usize) -> io::Result<()> {
        if len <= self.data.capacity() {
            return Ok(());
        }
        if self.is_mapped() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "simulated disk: a mapped file cannot grow past its first mapping's length",
            ));
        }
        let grown = SimBuffer::zeroed(len);
        // SAFETY: `grown` is new and unshared; `self.data` is not mapped (checked).
        unsafe { grown.write(0, &self.live()) };
        self.data = Arc::new(grown);
        Ok(())
    }

    /// Truncates or extends the live bytes. Cut bytes are zeroed, so that
    /// extending again reads zeros, as POSIX requires.
    fn set_len(&mut self, len: usize) -> io::Result<()> {
        self.reserve(len)?;
        if len < self.len {
            // SAFETY: the log truncates only past the data it has published,
            // bytes no reader looks at and no writer writes.
            unsafe { self.data.zero(len, self.len - len) };
        }
        self.len = len;
        Ok(())
    }

    /// Replaces the content with `bytes` and makes it durable (`write_file`).
    fn replace(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.set_len(0)?;
        self.reserve(bytes.len())?;
        // SAFETY: the log never maps the small files it writes whole.
        unsafe { self.data.write(0, bytes) };
        self.len = bytes.len();
        self.durable = bytes.to_vec();
        Ok(())
    }

    /// The bytes a reboot finds, with `rng` choosing among what the model
    /// allows (see `SimDisk::power_cut`).
    fn survivor(&self, rng: &mut SplitMix64) -> Vec<u8> {
        let mut new = self.live();
        let len = if new.len() != self.durable.len() && rng.below(2) == 1 { new.len() } else { self.durable.len() };
        new.resize(len, 0);
        let mut old = self.durable.clone();
        old.resize(len, 0);
        for start in (0..len).step_by(PAGE_BYTES) {
            let end = (start + PAGE_BYTES).min(len);
            if old[start..end] == new[start..end] {
                continue;
            }
            let torn_at = match rng.below(3) {
                0 => start,
                1 => end,
                _ => start + 1 + rng.below((end - start - 1).max(1) as u64) as usize,
            };
            old[start..torn_at.min(end)].copy_from_slice(&new[start..torn_at.min(end)]);
        }
        old
    }
}

/// Zeroed bytes at a fixed address: a file's live image, which mappings
/// point into. Accessed only through raw pointers, never through a reference
/// to the whole, because mappings write parts of it from other threads.
///
/// Small buffers come from the allocator (`alloc_zeroed`). Large ones (at
/// least [`SimBuffer::MAP_FROM`] bytes, such as a worker group's 4 MiB
/// journal) are, on Unix, an anonymous mapping of fresh zero pages: the
/// allocator's `calloc` would hand back reused memory and clear all of it
/// (two thirds of the `queue_ops` fuzz target's time), where only the pages
/// touched cost anything here. The mapping ends at an inaccessible guard
/// page, so that a write past the buffer's end faults at once, as
/// AddressSanitizer reports one past a heap allocation's.
struct SimBuffer {
    ptr: NonNull<u8>,
    capacity: usize,
    /// Where the buffer came from, to give it back.
    source: Source,
}

/// How a [`SimBuffer`]'s bytes were allocated.
#[derive(Clone, Copy)]
enum Source {
    /// `std::alloc::alloc_zeroed`, with `SimBuffer::layout(capacity)`.
    Heap,
    /// An anonymous mapping of `len` bytes at `base`, its last page a guard.
    #[cfg(unix)]
    Mapped { base: NonNull<u8>, len: usize },
}

// SAFETY: the buffer owns its allocation; sharing it across threads is what
// a shared file mapping does, and the storage contract (one writer per
// range, publication before reading) is what keeps the accesses apart.
unsafe impl Send for SimBuffer {}
// SAFETY: as above; `&SimBuffer` hands out only a raw pointer and copies.
unsafe impl Sync for SimBuffer {}

impl SimBuffer {
    fn layout(capacity: usize) -> std::alloc::Layout {
        std::alloc::Layout::array::<u8>(capacity.max(1)).expect("simulated file too large")
    }

    /// Buffers of at least this many bytes are mapped (on Unix).
    const MAP_FROM: usize = 256 << 10;

    fn zeroed(capacity: usize) -> SimBuffer {
        #[cfg(unix)]
        if capacity >= SimBuffer::MAP_FROM
            && let Some(buffer) = SimBuffer::mapped(capacity)
        {
            return buffer;
        }
        let layout = SimBuffer::layout(capacity);
        // SAFETY: the layout's size is at least 1.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else { std::alloc::handle_alloc_error(layout) };
        SimBuffer { ptr, capacity, source: Source::Heap }
    }

    /// `capacity` zeroed bytes in an anonymous private mapping, placed so
    /// that they end where its last page, a guard page, begins; `None` if
    /// the system refuses (then the allocator is used).
    #[cfg(unix)]
    fn mapped(capacity: usize) -> Option<SimBuffer> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok().filter(|&p| p > 0)?;
        let data_len = capacity.checked_next_multiple_of(page)?;
        let len = data_len.checked_add(page)?;
        // SAFETY: a new anonymous mapping at an address the system picks;
        // it touches no memory of ours.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let base = NonNull::new(base.cast::<u8>())?;
        // SAFETY: the last page lies inside the mapping just made, which
        // nothing uses yet.
        let guarded = unsafe { libc::mprotect(base.as_ptr().add(data_len).cast(), page, libc::PROT_NONE) } == 0;
        if !guarded {
            // SAFETY: the mapping just made, unused.
            unsafe { libc::munmap(base.as_ptr().cast(), len) };
            return None;
        }
        // Untouched pages read as zeros one fault each; with transparent
        // huge pages, one per 2 MiB (recovery checks that the unwritten
        // rest of a 64 MiB segment is zeros). Only advice: ignore a refusal.
        // SAFETY: the readable pages of the mapping just made.
        unsafe { libc::madvise(base.as_ptr().cast(), data_len, libc::MADV_HUGEPAGE) };
        // SAFETY: `data_len - capacity < page`, so the buffer starts inside
        // the mapping's readable pages and ends at the guard page.
        let ptr = unsafe { base.add(data_len - capacity) };
        Some(SimBuffer { ptr, capacity, source: Source::Mapped { base, len } })
    }

    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    /// Copies `[at, at + dst.len())` into `dst`.
    ///
    /// # Safety
    ///
    /// Nobody writes those bytes during the copy.
    unsafe fn read(&self, at: usize, dst: &mut [u8]) {
        assert!(at.checked_add(dst.len()).is_some_and(|end| end <= self.capacity), "read outside the buffer");
        // SAFETY: in bounds (checked); not written meanwhile (caller); `dst`
        // is ordinary memory, disjoint from the buffer.
        unsafe { std::ptr::copy_nonoverlapping(self.as_ptr().add(at), dst.as_mut_ptr(), dst.len()) };
    }

    /// Copies `src` to `[at, at + src.len())`.
    ///
    /// # Safety
    ///
    /// Nobody reads or writes those bytes during the copy.
    unsafe fn write(&self, at: usize, src: &[u8]) {
        assert!(at.checked_add(src.len()).is_some_and(|end| end <= self.capacity), "write outside the buffer");
        // SAFETY: in bounds (checked); not accessed meanwhile (caller); `src`
        // is disjoint from the buffer, which nothing borrows.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.as_ptr().add(at), src.len()) };
    }

    /// Zeroes `[at, at + len)`.
    ///
    /// # Safety
    ///
    /// Nobody reads or writes those bytes meanwhile.
    unsafe fn zero(&self, at: usize, len: usize) {
        assert!(at.checked_add(len).is_some_and(|end| end <= self.capacity), "zeroing outside the buffer");
        // SAFETY: in bounds (checked); not accessed meanwhile (caller).
        unsafe { std::ptr::write_bytes(self.as_ptr().add(at), 0, len) };
    }
}

impl Drop for SimBuffer {
    fn drop(&mut self) {
        match self.source {
            // SAFETY: allocated in `zeroed` with this layout; the last owner
            // (file or mapping) is going, so no pointer into it is used again.
            Source::Heap => unsafe { std::alloc::dealloc(self.ptr.as_ptr(), SimBuffer::layout(self.capacity)) },
            // SAFETY: mapped in `mapped` with this base and length; the last
            // owner is going, as above. An error would leave it mapped,
            // which is only a leak.
            #[cfg(unix)]
            Source::Mapped { base, len } => unsafe {
                libc::munmap(base.as_ptr().cast(), len);
            },
        }
    }
}

/// The path's names from the root, resolving `.` and `..` lexically;
/// relative paths start at the root too.
/// Borrowed where the name is valid UTF-8 (every name the engine uses): a
/// lookup allocates no string per name.
fn components(path: &Path) -> Vec<Cow<'_, str>> {
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => names.push(name.to_string_lossy()),
            Component::ParentDir => {
                names.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    names
}

fn error(kind: io::ErrorKind, path: &Path) -> io::Error {
    io::Error::new(kind, format!("simulated disk: {}", Escaped::path(path)))
}

/// SplitMix64 (Steele, Lea and Flood): enough randomness to choose which
/// unsynced pages survive, reproducibly from a seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` is at least 1.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(disk: &SimDisk, path: &str, create: bool, map_len: usize) -> Arc<dyn MappedFile> {
        disk.open_mapped(Path::new(path), create, map_len).unwrap()
    }

    fn write_at(file: &dyn MappedFile, at: usize, bytes: &[u8]) {
        assert!(at + bytes.len() <= file.len().unwrap() as usize);
        // SAFETY: inside the file's length and mapping; this test is the only
        // user of the mapping.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), file.ptr().add(at), bytes.len()) };
    }

    fn read(disk: &SimDisk, path: &str) -> Vec<u8> {
        disk.read_file(Path::new(path)).unwrap()
    }

    #[test]
    fn a_large_file_reads_zeros_keeps_its_writes_and_grows() {
        // Large enough to be mapped rather than allocated, and not a whole
        // number of pages.
        let len = SimBuffer::MAP_FROM + 100;
        let disk = SimDisk::new();
        let file = mapped(&disk, "/big", true, len);
        file.allocate(len as u64).unwrap();
        assert!(read(&disk, "/big").iter().all(|&b| b == 0), "a new file reads zeros");
        write_at(&*file, 0, b"first");
        write_at(&*file, len - 4, b"last");
        file.flush(0, len).unwrap();
        disk.sync_dir(Path::new("/")).unwrap();
        let bytes = read(&disk, "/big");
        assert_eq!((&bytes[..5], &bytes[len - 4..]), (&b"first"[..], &b"last"[..]));
        drop(file);
        let rebooted = disk.power_cut(1);
        assert_eq!(read(&rebooted, "/big"), bytes);
        // Reopened with a longer mapping: moved to a larger buffer, zeros after.
        let file = mapped(&rebooted, "/big", false, 2 * len);
        file.set_len(2 * len as u64).unwrap();
        let grown = read(&rebooted, "/big");
        assert_eq!(grown[..len], bytes[..]);
        assert!(grown[len..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_file_written_durably_survives_a_power_cut_with_its_directories() {
        let disk = SimDisk::new();
        disk.write_file_durable("/data/topics/t/checkpoint", b"saved").unwrap();
        assert_eq!(disk.file_bytes("/data/topics/t/checkpoint").unwrap(), b"saved");
        let rebooted = disk.power_cut(3);
        assert_eq!(rebooted.file_bytes("/data/topics/t/checkpoint").unwrap(), b"saved");
        assert_eq!(
            rebooted.write_file_durable("/data/topics/t/checkpoint", b"again").unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        rebooted.set_capacity(Some(8));
        let full = rebooted.write_file_durable("/data/big", &[0; 9]).unwrap_err();
        assert_eq!(full.kind(), io::ErrorKind::StorageFull);
        assert!(!rebooted.exists(Path::new("/data/big")));
        assert_eq!(disk.syncs(), 0);
    }

    /// A disk with a durable directory `/d` holding the file `/d/f` of `len`
    /// zero bytes, synced and linked durably, mapped for at least four pages.
    fn disk_with_file(len: usize) -> (SimDisk, Arc<dyn MappedFile>) {
        let disk = SimDisk::new();
        disk.create_dir_all_durable("/d").unwrap();
        let file = mapped(&disk, "/d/f", true, len.max(4 * PAGE_BYTES));
        file.allocate(len as u64).unwrap();
        file.sync().unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        (disk, file)
    }

    #[test]
    fn unsynced_write_is_lost_or_kept_whole_at_a_cut() {
        let (disk, file) = disk_with_file(100);
        write_at(&*file, 10, b"hello");
        assert_eq!(&read(&disk, "/d/f")[10..15], b"hello");
        let mut outcomes = HashSet::new();
        for seed in 0..64 {
            let bytes = read(&disk.power_cut(seed), "/d/f");
            assert_eq!(bytes.len(), 100);
            outcomes.insert(bytes[10..15].to_vec());
        }
        // Old, new, or torn inside the (one-page) file: never anything else.
        assert!(outcomes.contains(&vec![0; 5]), "{outcomes:?}");
        assert!(outcomes.contains(b"hello".as_slice()), "{outcomes:?}");
        for bytes in &outcomes {
            let live = bytes.iter().take_while(|&&b| b != 0).count();
            assert_eq!(bytes[..live], b"hello"[..live]);
            assert!(bytes[live..].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn flushed_and_synced_writes_survive_every_cut() {
        let (disk, file) = disk_with_file(3 * PAGE_BYTES);
        write_at(&*file, 5000, b"flushed");
        file.flush(5000, 7).unwrap();
        write_at(&*file, 9000, b"synced");
        file.sync().unwrap();
        for seed in 0..32 {
            let bytes = read(&disk.power_cut(seed), "/d/f");
            assert_eq!(&bytes[5000..5007], b"flushed");
            assert_eq!(&bytes[9000..9006], b"synced");
        }
    }

    #[test]
    fn flush_covers_only_its_range_and_pages_can_tear() {
        let (disk, file) = disk_with_file(PAGE_BYTES);
        write_at(&*file, 0, &[7; PAGE_BYTES]);
        file.flush(0, 100).unwrap();
        let mut torn = false;
        for seed in 0..64 {
            let bytes = read(&disk.power_cut(seed), "/d/f");
            assert!(bytes[..100].iter().all(|&b| b == 7), "the flushed range survives");
            let live = 100 + bytes[100..].iter().take_while(|&&b| b == 7).count();
            assert!(bytes[live..].iter().all(|&b| b == 0), "a prefix new, the rest old");
            torn |= live > 100 && live < PAGE_BYTES;
        }
        assert!(torn, "some seed tears the page");
    }

    #[test]
    fn cut_keeps_durable_length_or_takes_live_one() {
        let (disk, file) = disk_with_file(10);
        file.allocate(50).unwrap();
        let lengths: HashSet<usize> = (0..32).map(|seed| read(&disk.power_cut(seed), "/d/f").len()).collect();
        assert_eq!(lengths, HashSet::from([10, 50]));
        file.flush(0, 1).unwrap();
        assert!((0..32).all(|seed| read(&disk.power_cut(seed), "/d/f").len() == 50), "flush makes the length durable");
    }

    #[test]
    fn directory_entries_need_sync_dir() {
        let disk = SimDisk::new();
        disk.create_dir_all_durable("/d").unwrap();
        disk.write_file(Path::new("/d/a"), b"synced content").unwrap();
        let cut = disk.power_cut(1);
        assert!(!cut.exists(Path::new("/d/a")), "entry lost without sync_dir");

        disk.sync_dir(Path::new("/d")).unwrap();
        assert_eq!(read(&disk.power_cut(1), "/d/a"), b"synced content");

        disk.rename(Path::new("/d/a"), Path::new("/d/b")).unwrap();
        disk.create_dir_all(Path::new("/d/sub/deeper")).unwrap();
        let cut = disk.power_cut(2);
        assert_eq!(cut.list_dir(Path::new("/d")).unwrap(), ["a"], "rename and mkdir lost");
        disk.sync_dir(Path::new("/d")).unwrap();
        let cut = disk.power_cut(3);
        let mut names = cut.list_dir(Path::new("/d")).unwrap();
        names.sort();
        assert_eq!(names, ["b", "sub"]);
        assert!(!cut.exists(Path::new("/d/sub/deeper")), "its own entries need their own sync");

        disk.remove_file(Path::new("/d/b")).unwrap();
        disk.remove_dir_all(Path::new("/d/sub")).unwrap();
        assert!(!disk.exists(Path::new("/d/b")));
        let cut = disk.power_cut(4);
        assert_eq!(read(&cut, "/d/b"), b"synced content", "unsynced delete undone");
        assert!(cut.exists(Path::new("/d/sub")));
        disk.sync_dir(Path::new("/d")).unwrap();
        assert!(disk.power_cut(5).list_dir(Path::new("/d")).unwrap().is_empty());
    }

    #[test]
    fn write_file_makes_content_durable_but_not_its_entry() {
        let disk = SimDisk::new();
        disk.create_dir_all_durable("/d").unwrap();
        disk.write_file(Path::new("/d/a"), b"first").unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        disk.write_file(Path::new("/d/a"), b"2nd").unwrap();
        assert_eq!(read(&disk, "/d/a"), b"2nd");
        assert!((0..8).all(|seed| read(&disk.power_cut(seed), "/d/a") == b"2nd"));
    }

    #[test]
    fn set_len_zeroes_what_it_cuts() {
        let (disk, file) = disk_with_file(64);
        write_at(&*file, 0, &[9; 64]);
        file.set_len(16).unwrap();
        assert_eq!(file.len().unwrap(), 16);
        file.set_len(64).unwrap();
        assert_eq!(read(&disk, "/d/f"), [[9; 16].as_slice(), &[0; 48]].concat());
        // SAFETY: inside the file and mapping; nobody else uses it.
        let reread = unsafe { std::slice::from_raw_parts(file.ptr(), 64) }.to_vec();
        assert_eq!(reread, read(&disk, "/d/f"), "the mapping sees the zeros too");
    }

    #[test]
    fn mappings_of_one_file_share_bytes_and_open_checks_existence() {
        let (disk, file) = disk_with_file(32);
        let again = mapped(&disk, "/d/f", false, 32);
        write_at(&*file, 3, b"x");
        // SAFETY: inside the file and mapping; nobody writes it now.
        assert_eq!(unsafe { *again.ptr().add(3) }, b'x');
        let exists = disk.open_mapped(Path::new("/d/f"), true, 32).unwrap_err();
        assert_eq!(exists.kind(), io::ErrorKind::AlreadyExists);
        let missing = disk.open_mapped(Path::new("/d/g"), false, 32).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn fail_after_syncs_kills_writes_and_syncs_but_not_reads() {
        let (disk, file) = disk_with_file(PAGE_BYTES);
        let before = disk.syncs();
        disk.fail_after_syncs(1);
        write_at(&*file, 0, b"one");
        file.flush(0, 3).unwrap();
        assert_eq!(disk.syncs(), before + 1);
        write_at(&*file, 3, b"two");
        assert!(file.flush(3, 3).is_err());
        assert!(file.sync().is_err());
        assert!(file.allocate(2 * PAGE_BYTES as u64).is_err());
        assert!(disk.write_file(Path::new("/d/g"), b"g").is_err());
        assert!(disk.sync_dir(Path::new("/d")).is_err());
        assert!(disk.rename(Path::new("/d/f"), Path::new("/d/h")).is_err());
        assert!(disk.open_mapped(Path::new("/d/new"), true, 8).is_err());
        assert_eq!(disk.syncs(), before + 1);
        assert_eq!(&read(&disk, "/d/f")[..6], b"onetwo", "reads see the live image");
        for seed in 0..16 {
            let bytes = read(&disk.power_cut(seed), "/d/f");
            assert_eq!(&bytes[..3], b"one");
            assert!(!disk.power_cut(seed).exists(Path::new("/d/g")));
        }
        let rebooted = disk.power_cut(0);
        assert!(rebooted.sync_dir(Path::new("/d")).is_ok(), "the new disk works");
    }

    #[test]
    fn capacity_limits_allocation_and_new_files() {
        let (disk, file) = disk_with_file(100);
        disk.set_capacity(Some(150));
        assert!(file.allocate(150).is_ok());
        let full = file.allocate(151).unwrap_err();
        assert_eq!(full.kind(), io::ErrorKind::StorageFull);
        assert_eq!(disk.write_file(Path::new("/d/g"), b"x").unwrap_err().kind(), io::ErrorKind::StorageFull);
        assert_eq!(disk.open_mapped(Path::new("/d/h"), true, 8).unwrap_err().kind(), io::ErrorKind::StorageFull);
        file.set_len(100).unwrap();
        assert!(disk.write_file(Path::new("/d/g"), &[1; 50]).is_ok());
        disk.set_capacity(None);
        assert!(file.allocate(100_000).is_err(), "a mapped file cannot outgrow its mapping");
    }

    #[test]
    fn lock_file_is_exclusive_until_dropped() {
        let disk = SimDisk::new();
        let lock = disk.lock_file(Path::new("/lock")).unwrap();
        assert!(lock.is_some());
        assert!(disk.exists(Path::new("/lock")));
        assert!(disk.lock_file(Path::new("/lock")).unwrap().is_none());
        drop(lock);
        assert!(disk.lock_file(Path::new("/lock")).unwrap().is_some());
    }

    #[test]
    fn unlinked_mapped_file_keeps_working() {
        let (disk, file) = disk_with_file(16);
        disk.remove_file(Path::new("/d/f")).unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        write_at(&*file, 0, b"still here");
        assert!(file.sync().is_ok());
        assert_eq!(file.len().unwrap(), 16);
        assert!(!disk.power_cut(0).exists(Path::new("/d/f")));
    }
}
