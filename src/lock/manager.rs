//! The public face of the lock manager: configuration, requests, routing an
//! acquisition through the fast path, a short spin and the slow path,
//! `lock_all`, sessions, optimistic stamps and statistics.

use std::time::{Duration, Instant};

use crossbeam_epoch as epoch;

use crate::error::LockError;
use std::ptr::NonNull;

use crate::sync::{Arc, AtomicU64, Ordering, fence, spin};

use super::cancel::{CancelToken, Signal};
use super::deadlock::Deadlocks;
use super::guard::{
    Grant, Holder, LockGuard, LockSet, Session, Target, ThreadOwned, thread_held, thread_owner,
    thread_owner_outside_tasks,
};
use super::pending::{Queued, WaitLimits};
use super::remote;
use super::table::{Found, Table};
use super::wait::{Admit, Waiter, Wakeups, wake};
use super::word::{Entry, Fast, LEASED, QUEUED, held_exclusively_by};

/// The longest key, in bytes.
pub const KEY_BYTES_MAX: usize = 1024;
/// The longest lease a request may ask for.
pub const LEASE_MAX: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most keys one [`LockManager::lock_all`] call may take.
pub const LOCK_ALL_KEYS_MAX: usize = 1024;
/// The most shards a manager may have.
pub const SHARDS_MAX: usize = 1 << 16;
/// The shortest deadlock threshold; shorter ones are raised to it.
pub const DEADLOCK_THRESHOLD_MIN: Duration = Duration::from_micros(10);

/// Most spin-then-yield rounds of [`LockConfig::spin_limit`]: spinning longer
/// only burns a core that a parked wait would leave to the holder.
pub const SPIN_LIMIT_MAX: u32 = 64;

/// How a key is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// One owner at a time, and no shared holders meanwhile.
    Exclusive,
    /// Any number of owners at once, but no exclusive holder meanwhile.
    Shared,
}

/// Tuning for a [`LockManager`]. Start from `LockConfig::default()`.
///
/// ```
/// use std::time::Duration;
/// use tollgate::{LockConfig, LockManager};
///
/// let locks = LockManager::with_config(LockConfig {
///     deadlock_threshold: Duration::from_millis(10),
///     ..LockConfig::default()
/// });
/// # drop(locks);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockConfig {
    /// Number of table shards; rounded up to a power of two and clamped to
    /// `1..=SHARDS_MAX`. Default 64.
    pub shards: usize,
    /// How long a wait lasts before it searches for a deadlock (and then at
    /// doubling intervals up to 100 ms). Default 1 ms; at least
    /// [`DEADLOCK_THRESHOLD_MIN`].
    pub deadlock_threshold: Duration,
    /// Idle entries (keys nobody holds or waits for) a shard keeps for reuse
    /// before an insert into it reclaims them; at most this many, or as many
    /// as the shard has busy entries, whichever is larger.
    /// [`LockManager::shrink`] reclaims them all at once. Default 32.
    pub idle_entries_per_shard: usize,
    /// Spin-then-yield rounds a blocked acquisition tries before it queues
    /// and parks (only while nobody is queued yet). Default 10, at most
    /// [`SPIN_LIMIT_MAX`] (larger values are lowered to it). A wait's
    /// deadline holds while it spins too.
    pub spin_limit: u32,
}

impl Default for LockConfig {
    fn default() -> Self {
        Self { shards: 64, deadlock_threshold: Duration::from_millis(1), idle_entries_per_shard: 32, spin_limit: 10 }
    }
}

/// What to acquire and how: mode, how long to wait, lease, cancellation.
///
/// ```
/// use std::time::Duration;
/// use tollgate::{LockManager, LockRequest};
///
/// let locks = LockManager::new();
/// let guard = locks.acquire(
///     "sku:42",
///     LockRequest::exclusive().timeout(Duration::from_millis(50)).lease(Duration::from_secs(5)),
/// )?;
/// assert!(guard.fencing_token().get() > 0);
/// # Ok::<(), tollgate::LockError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LockRequest {
    mode: LockMode,
    wait: Wait,
    lease: Option<Duration>,
    cancel: Option<CancelToken>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Forever,
    Never,
    For(Duration),
}

/// A timeout alone: an exclusive lock that gives up after waiting that
/// long, as [`LockManager::lock_all`] takes. Lets calls that accept
/// `impl Into<LockRequest>` (such as [`Topic::transaction`](crate::Topic::transaction))
/// take either a `Duration` or a full request.
impl From<Duration> for LockRequest {
    fn from(timeout: Duration) -> Self {
        Self::exclusive().timeout(timeout)
    }
}

impl LockRequest {
    /// An exclusive lock, waiting as long as it takes.
    pub fn exclusive() -> Self {
        Self { mode: LockMode::Exclusive, wait: Wait::Forever, lease: None, cancel: None }
    }

    /// A shared lock, waiting as long as it takes.
    pub fn shared() -> Self {
        Self { mode: LockMode::Shared, ..Self::exclusive() }
    }

    /// Gives up with [`LockError::Timeout`] after waiting `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.wait = Wait::For(timeout);
        self
    }

    /// Does not wait: fails with [`LockError::WouldBlock`] if the key is not
    /// available at once.
    pub fn no_wait(mut self) -> Self {
        self.wait = Wait::Never;
        self
    }

    /// Grants with a lease: once `lease` has passed without a
    /// [`renew`](LockGuard::renew), the key may be granted to the next waiter
    /// and the old guard's `release`/`renew` fail with
    /// [`LockError::LeaseExpired`]. Exclusive requests only; at most
    /// [`LEASE_MAX`], more than zero.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Gives up with [`LockError::Interrupted`] when `token` is cancelled.
    pub fn cancel(mut self, token: &CancelToken) -> Self {
        self.cancel = Some(token.clone());
        self
    }

    /// The requested mode.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    fn lease_ns(&self) -> Result<u64, LockError> {
        match self.lease {
            None => Ok(0),
            Some(_) if self.mode == LockMode::Shared => {
                Err(LockError::InvalidRequest { reason: "leases are supported on exclusive locks only" })
            }
            Some(lease) if lease.is_zero() => {
                Err(LockError::InvalidRequest { reason: "a lease must be longer than zero" })
            }
            Some(lease) if lease > LEASE_MAX => {
                Err(LockError::InvalidRequest { reason: "a lease may be at most LEASE_MAX (30 days)" })
            }
            Some(lease) => Ok(lease.as_nanos() as u64),
        }
    }
}

/// An optimistic read of a key, from [`LockManager::stamp`]; check it with
/// [`LockManager::validate`] after reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp<'k> {
    key: &'k str,
    hash: u64,
    token: u64,
    kind: StampKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StampKind {
    /// The key had an entry with this token.
    Present,
    /// The key had no entry; `token` is its shard's token floor.
    Absent,
    /// The key was held exclusively: never valid.
    Invalid,
    /// A PostgreSQL manager's: `token` is the key's version, as its bits.
    Remote,
}

/// Counters and a snapshot of a [`LockManager`], from [`LockManager::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockStats {
    /// Grants made (exclusive and shared; a nested acquisition by the
    /// exclusive holder is not a new grant).
    pub grants: u64,
    /// Acquisitions that had to queue.
    pub contended: u64,
    /// Waits that timed out.
    pub timeouts: u64,
    /// Waits that were interrupted or cancelled.
    pub interrupts: u64,
    /// Waits that were chosen as deadlock victims.
    pub deadlocks: u64,
    /// Leases that ran out and were revoked.
    pub leases_expired: u64,
    /// Grants outstanding now.
    pub held: u64,
    /// Acquisitions blocked now.
    pub waiting: u64,
    /// Entries in the table now, idle ones included.
    pub entries: u64,
}

/// Monotonic nanoseconds since the manager was created; 0 is never returned,
/// so that 0 can mean "no deadline".
#[derive(Debug)]
pub(crate) struct Clock {
    base: Instant,
}

impl Clock {
    pub(crate) fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64 + 1
    }

    pub(crate) fn instant(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns.saturating_sub(1))
    }
}

/// Slow-path event counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) contended: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) interrupts: AtomicU64,
    pub(crate) deadlocks: AtomicU64,
    pub(crate) leases_expired: AtomicU64,
}

impl Counters {
    /// Counts leases found expired (most calls find none: no atomic then).
    pub(crate) fn count_expired(&self, expired: u64) {
        if expired > 0 {
            self.leases_expired.fetch_add(expired, Ordering::Relaxed);
        }
    }

    pub(crate) fn record(&self, error: &LockError) {
        let counter = match error {
            LockError::Timeout { .. } => &self.timeouts,
            LockError::Interrupted => &self.interrupts,
            LockError::Deadlock { .. } => &self.deadlocks,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How one acquisition may wait, resolved from a request.
pub(crate) struct Plan<'a> {
    pub(crate) mode: LockMode,
    pub(crate) lease_ns: u64,
    /// `None`: do not wait at all.
    pub(crate) wait: Option<WaitLimits<'a>>,
    /// The owner is the calling thread (not a session).
    pub(crate) thread_owned: bool,
}

/// When a wait that begins now must end, from a request: `None` if it must
/// not wait at all, else its deadline (if any) and when it began.
pub(crate) type Window = Option<(Option<Instant>, Option<Instant>)>;

impl LockRequest {
    /// The wait's window, for a wait beginning now.
    pub(crate) fn window(&self) -> Window {
        match self.wait {
            Wait::Never => None,
            Wait::Forever => Some((None, None)),
            Wait::For(timeout) => {
                let now = Instant::now();
                // A timeout too long to represent waits forever.
                Some((now.checked_add(timeout), Some(now)))
            }
        }
    }

    /// The request's cancel signal, if it has a token.
    pub(crate) fn cancel_signal(&self) -> Option<&Signal> {
        self.cancel.as_ref().map(CancelToken::signal)
    }
}

impl<'a> Plan<'a> {
    pub(crate) fn new(
        request: &'a LockRequest,
        interrupt: Option<&'a Signal>,
        thread_owned: bool,
    ) -> Result<Self, LockError> {
        Self::with_window(request, request.window(), interrupt, thread_owned)
    }

    /// A plan whose wait window was fixed before (an async wait's, at its
    /// first poll).
    pub(crate) fn with_window(
        request: &'a LockRequest,
        window: Window,
        interrupt: Option<&'a Signal>,
        thread_owned: bool,
    ) -> Result<Self, LockError> {
        let wait =
            window.map(|(deadline, since)| WaitLimits { deadline, since, cancel: request.cancel_signal(), interrupt });
        Ok(Self { mode: request.mode, lease_ns: request.lease_ns()?, wait, thread_owned })
    }

    /// An exclusive, unleased acquisition by the calling thread.
    fn thread_exclusive(wait: Option<WaitLimits<'a>>) -> Self {
        Self { mode: LockMode::Exclusive, lease_ns: 0, wait, thread_owned: true }
    }

    /// Whether the lock-free fast path may grant this request. Not for leased
    /// grants (made under the queue mutex, so revocation cannot race them),
    /// and not for a session's exclusive grants: another thread of the same
    /// session may nest on the grant at once, under the queue mutex, and must
    /// read the grant's fencing token, which a fast grant writes only after
    /// its CAS. A thread's nested acquisitions follow its grant in program
    /// order.
    #[inline]
    fn fast_path(&self) -> bool {
        self.lease_ns == 0 && (self.thread_owned || self.mode == LockMode::Shared)
    }
}

/// Validates a key.
pub(crate) fn check_key(key: &str) -> Result<(), LockError> {
    if key.is_empty() {
        return Err(LockError::InvalidKey { reason: "the key is empty" });
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(LockError::InvalidKey { reason: "the key is longer than KEY_BYTES_MAX (1024 bytes)" });
    }
    Ok(())
}

/// A lock manager: named locks for the threads and tasks of one process.
///
/// Keys are strings (`"sku:42"`). Each key can be held exclusively by one
/// owner or shared by many. Owners are threads by default, or explicit
/// [`Session`]s. A key that nobody holds or waits for keeps at most a small
/// idle entry (see [`LockConfig::idle_entries_per_shard`]).
///
/// A `LockManager` is a handle: clones share one manager, and it is cheap to
/// clone into tasks and threads (so is an `Arc<LockManager>`).
///
/// **Threads or sessions.** The manager's own methods lock for the *calling
/// thread*: the guard is `!Send`, and the thread may nest on its own lock.
/// Never call them from async code: every task an executor runs on that
/// thread would be the same owner, and would walk into each other's
/// "exclusive" locks. Async code uses a [`Session`] per task (its
/// [`lock_async`](Session::lock_async) and friends), or `spawn_blocking`.
/// Inside the futures, streams and run-loop handlers that tollgate polls,
/// a thread-owned call fails with [`LockError::ThreadOwnerInTask`]; code
/// that an executor polls directly cannot be told apart from a thread.
///
/// ```
/// use std::time::Duration;
/// use tollgate::{LockError, LockManager};
///
/// let locks = LockManager::new();
/// let guard = locks.lock("sku:42")?;
/// // Other threads now get WouldBlock or wait; this thread may nest.
/// std::thread::scope(|s| {
///     let other = s.spawn(|| locks.try_lock("sku:42").map(|_| ()));
///     assert_eq!(other.join().unwrap(), Err(LockError::WouldBlock));
/// });
/// let token = guard.fencing_token();
/// guard.release()?;
/// assert!(locks.lock("sku:42")?.fencing_token() > token);
/// # Ok::<(), LockError>(())
/// ```
#[derive(Clone)]
pub struct LockManager {
    pub(crate) inner: Arc<Inner>,
}

/// What a [`LockManager`] handle shares with its clones, its sessions and
/// their guards.
pub(crate) struct Inner {
    pub(crate) table: Table,
    pub(crate) config: LockConfig,
    pub(crate) clock: Clock,
    pub(crate) deadlocks: Deadlocks,
    pub(crate) counters: Counters,
    /// The PostgreSQL lock tables, for a manager from
    /// [`LockManager::connect`] (the table above is then unused).
    pub(crate) remote: Option<std::sync::Arc<remote::Store>>,
}

impl std::fmt::Debug for LockManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockManager").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl Default for LockManager {
    fn default() -> Self {
        Self::new()
    }
}

impl LockManager {
    /// A manager with the default [`LockConfig`].
    pub fn new() -> Self {
        Self::with_config(LockConfig::default())
    }

    /// A manager with the given configuration (out-of-range values are
    /// rounded or clamped as documented on [`LockConfig`]).
    pub fn with_config(mut config: LockConfig) -> Self {
        config.shards = config.shards.clamp(1, SHARDS_MAX).next_power_of_two();
        config.deadlock_threshold = config.deadlock_threshold.max(DEADLOCK_THRESHOLD_MIN);
        config.spin_limit = config.spin_limit.min(SPIN_LIMIT_MAX);
        let inner = Inner {
            table: Table::new(config.shards, config.idle_entries_per_shard),
            config,
            clock: Clock { base: Instant::now() },
            deadlocks: Deadlocks::default(),
            counters: Counters::default(),
            remote: None,
        };
        Self { inner: Arc::new(inner) }
    }

    /// A manager whose locks are kept in PostgreSQL (feature `postgres`),
    /// shared by every process connected to the same database and schema.
    /// The API is the same as the embedded manager's; docs/POSTGRES.md
    /// lists where the guarantees differ (latency, fairness, what survives
    /// which crash).
    ///
    /// Connecting creates or upgrades the schema (unless
    /// [`PgConfig::migrate`](crate::PgConfig::migrate) is off), registers
    /// this process, and starts its heartbeat and its `LISTEN` connection.
    /// Each lock operation is then one round trip. Locks of a process that
    /// dies pass on after [`PgConfig::client_ttl`](crate::PgConfig::client_ttl),
    /// with higher fencing tokens.
    ///
    /// ```no_run
    /// use tollgate::{LockManager, PgConfig};
    ///
    /// let locks = LockManager::connect(PgConfig::new("postgres://shop@db.internal/shop")?)?;
    /// let guard = locks.lock("sku:42")?; // held across every process on this database
    /// drop(guard);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "postgres")]
    pub fn connect(config: crate::PgConfig) -> Result<Self, crate::OpenError> {
        let link = crate::pg::runtime::block_on(crate::pg::link::Link::connect(config))?;
        Ok(Self::on_link(link))
    }

    /// A PostgreSQL manager over a link shared with others (an engine's).
    #[cfg(feature = "postgres")]
    pub(crate) fn on_link(link: std::sync::Arc<crate::pg::link::Link>) -> Self {
        let store = crate::pg::locks::LockStore::new(link);
        let inner = Inner {
            table: Table::new(1, 0),
            config: LockConfig::default(),
            clock: Clock { base: Instant::now() },
            deadlocks: Deadlocks::default(),
            counters: Counters::default(),
            remote: Some(std::sync::Arc::new(store)),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Whether this manager's locks are kept in PostgreSQL.
    pub fn is_remote(&self) -> bool {
        self.inner.remote.is_some()
    }

    /// Takes `key` exclusively for the current thread, waiting as long as it
    /// takes (or until a deadlock makes this wait the victim).
    #[inline]
    pub fn lock(&self, key: &str) -> Result<LockGuard<'_>, LockError> {
        let plan =
            Plan::thread_exclusive(Some(WaitLimits { deadline: None, since: None, cancel: None, interrupt: None }));
        Inner::acquire_as(&*self.inner, thread_owner_outside_tasks()?, key, &plan).map(LockGuard::new)
    }

    /// Takes `key` exclusively for the current thread if that is possible at
    /// once; otherwise [`LockError::WouldBlock`].
    #[inline]
    pub fn try_lock(&self, key: &str) -> Result<LockGuard<'_>, LockError> {
        Inner::acquire_as(&*self.inner, thread_owner_outside_tasks()?, key, &Plan::thread_exclusive(None))
            .map(LockGuard::new)
    }

    /// Takes `key` exclusively for the current thread, waiting at most `timeout`.
    #[inline]
    pub fn lock_for(&self, key: &str, timeout: Duration) -> Result<LockGuard<'_>, LockError> {
        let since = Instant::now();
        let deadline = since.checked_add(timeout);
        let plan =
            Plan::thread_exclusive(Some(WaitLimits { deadline, since: Some(since), cancel: None, interrupt: None }));
        Inner::acquire_as(&*self.inner, thread_owner_outside_tasks()?, key, &plan).map(LockGuard::new)
    }

    /// Takes `key` for the current thread as `request` describes.
    pub fn acquire(&self, key: &str, request: LockRequest) -> Result<LockGuard<'_>, LockError> {
        let plan = Plan::new(&request, None, true)?;
        Inner::acquire_as(&*self.inner, thread_owner_outside_tasks()?, key, &plan).map(LockGuard::new)
    }

    /// Takes every key in `keys` exclusively for the current thread, or none:
    /// on failure those already taken are released. Keys are taken in sorted
    /// order, so concurrent `lock_all` calls never deadlock with each other.
    /// `timeout` bounds the whole call; duplicates are taken once.
    pub fn lock_all<K: AsRef<str>>(
        &self,
        keys: impl IntoIterator<Item = K>,
        timeout: Duration,
    ) -> Result<LockSet<'_, ThreadOwned>, LockError> {
        self.acquire_all(keys, LockRequest::exclusive().timeout(timeout))
    }

    /// Takes every key in `keys` for the current thread as `request`
    /// describes (mode, timeout for the whole call, lease per key,
    /// cancellation), or none; sorted and deduplicated like
    /// [`lock_all`](Self::lock_all).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{LockManager, LockRequest};
    ///
    /// let locks = LockManager::new();
    /// let request = LockRequest::exclusive().timeout(Duration::from_millis(50)).lease(Duration::from_secs(5));
    /// let order = locks.acquire_all(["sku:2", "sku:1"], request)?;
    /// assert_eq!(order.guards()[0].key(), "sku:1");
    /// # Ok::<(), tollgate::LockError>(())
    /// ```
    pub fn acquire_all<K: AsRef<str>>(
        &self,
        keys: impl IntoIterator<Item = K>,
        request: LockRequest,
    ) -> Result<LockSet<'_, ThreadOwned>, LockError> {
        let plan = Plan::new(&request, None, true)?;
        Inner::lock_all_as(&*self.inner, thread_owner_outside_tasks()?, keys, &plan).map(LockSet::new)
    }

    /// A new owner that is not a thread (a request, a task, a saga): locks it
    /// takes belong to it, whichever thread uses it.
    pub fn session(&self) -> Session {
        Session::new(self.clone())
    }

    /// Starts an optimistic read of `key`: read the protected data, then
    /// [`validate`](Self::validate). Never blocks and never blocks writers.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use tollgate::LockManager;
    ///
    /// let locks = LockManager::new();
    /// let price = AtomicU64::new(1999);
    /// let stamp = locks.stamp("price:42");
    /// let seen = price.load(Ordering::Relaxed);
    /// if locks.validate(&stamp) {
    ///     assert_eq!(seen, 1999); // no writer locked "price:42" meanwhile
    /// }
    /// ```
    pub fn stamp<'k>(&self, key: &'k str) -> Stamp<'k> {
        if let Some(store) = &self.inner.remote {
            return match remote::stamp(store, key) {
                Some(version) => Stamp { key, hash: 0, token: version as u64, kind: StampKind::Remote },
                None => Stamp { key, hash: 0, token: 0, kind: StampKind::Invalid },
            };
        }
        let hash = self.inner.table.hash(key);
        loop {
            let guard = epoch::pin();
            if let Some(entry) = self.inner.table.find(key, hash, &guard) {
                return match entry.stamp() {
                    Some(token) => Stamp { key, hash, token, kind: StampKind::Present },
                    None => Stamp { key, hash, token: 0, kind: StampKind::Invalid },
                };
            }
            if let Some(floor) = self.inner.table.absent_floor(key, hash) {
                return Stamp { key, hash, token: floor, kind: StampKind::Absent };
            }
        }
    }

    /// Whether no exclusive grant of the stamp's key was made since
    /// [`stamp`](Self::stamp), so the data read in between is consistent. May
    /// return `false` spuriously (after shared grants, or when the key's
    /// entry was reclaimed); never returns `true` after an exclusive grant.
    pub fn validate(&self, stamp: &Stamp<'_>) -> bool {
        match stamp.kind {
            StampKind::Invalid => false,
            StampKind::Remote => self
                .inner
                .remote
                .as_ref()
                .and_then(|store| remote::stamp(store, stamp.key))
                .is_some_and(|version| version as u64 == stamp.token),
            StampKind::Present => {
                let guard = epoch::pin();
                self.inner.table.find(stamp.key, stamp.hash, &guard).is_some_and(|entry| entry.validate(stamp.token))
            }
            StampKind::Absent => {
                {
                    let guard = epoch::pin();
                    if self.inner.table.find(stamp.key, stamp.hash, &guard).is_some() {
                        return false;
                    }
                }
                // Pairs with the writer's Release fence, as in `Entry::validate`;
                // the shard mutex then orders us after any sweep of its entry.
                fence(Ordering::Acquire);
                self.inner.table.absent_floor(stamp.key, stamp.hash) == Some(stamp.token)
            }
        }
    }

    /// Counters since creation, and a snapshot of what is held now.
    ///
    /// On a PostgreSQL manager the snapshot (`grants`, `held`, `waiting`,
    /// `entries`) is the database's, across every process of the schema,
    /// read with one query (zeros if it cannot be reached); the counters
    /// (`timeouts`, `interrupts`, `deadlocks`) are this handle's.
    pub fn stats(&self) -> LockStats {
        let counters = &self.inner.counters;
        if let Some(store) = &self.inner.remote {
            let [grants, held, waiting, entries] = remote::stats(store);
            return LockStats {
                grants,
                contended: counters.contended.load(Ordering::Relaxed),
                timeouts: counters.timeouts.load(Ordering::Relaxed),
                interrupts: counters.interrupts.load(Ordering::Relaxed),
                deadlocks: counters.deadlocks.load(Ordering::Relaxed),
                leases_expired: counters.leases_expired.load(Ordering::Relaxed),
                held,
                waiting,
                entries,
            };
        }
        let (mut grants, mut held, mut waiting) = (0, 0, 0);
        let (entries, retired) = self.inner.table.for_each(|entry| {
            waiting += entry.queue.lock().len() as u64;
            grants += entry.token.load(Ordering::Relaxed) - entry.token_initial;
            let word = entry.word.load(Ordering::Relaxed);
            if word & super::word::EXCLUSIVE != 0 {
                held += 1;
            } else if word != super::word::DEAD {
                held += super::word::payload(word);
            }
        });
        LockStats {
            grants: grants + retired,
            contended: counters.contended.load(Ordering::Relaxed),
            timeouts: counters.timeouts.load(Ordering::Relaxed),
            interrupts: counters.interrupts.load(Ordering::Relaxed),
            deadlocks: counters.deadlocks.load(Ordering::Relaxed),
            leases_expired: counters.leases_expired.load(Ordering::Relaxed),
            held,
            waiting,
            entries,
        }
    }

    /// Reclaims the entries of every key that nobody holds or waits for, now.
    /// (Inserts reclaim them anyway once a shard's idle budget is used up.)
    ///
    /// On a PostgreSQL manager this deletes the database's rows of keys
    /// that no process holds or waits for (one statement; run it now and
    /// then, as the cleanup job of docs/POSTGRES.md does).
    pub fn shrink(&self) {
        if let Some(store) = &self.inner.remote {
            return remote::shrink(store);
        }
        self.inner.table.shrink();
    }

    /// The configuration in force (after rounding).
    pub fn config(&self) -> &LockConfig {
        &self.inner.config
    }
}

impl Inner {
    /// Acquires `key` for `owner`, blocking: the lock-free fast path on an
    /// existing entry, else `acquire_slow`.
    #[inline(always)]
    pub(crate) fn acquire_as<'a, H: Holder<'a>>(
        holder: H,
        owner: u64,
        key: &str,
        plan: &Plan<'_>,
    ) -> Result<Grant<'a>, LockError> {
        check_key(key)?;
        if holder.inner().remote.is_some() {
            return Self::acquire_remote(holder, owner, key, plan);
        }
        let hash = holder.inner().table.hash(key);
        if let Some(grant) = Self::acquire_fast(holder, owner, key, hash, plan) {
            return Ok(grant);
        }
        Self::acquire_slow(holder, owner, key, hash, plan)
    }

    /// [`acquire_as`](Self::acquire_as) on a PostgreSQL manager.
    #[cold]
    #[inline(never)]
    fn acquire_remote<'a, H: Holder<'a>>(
        holder: H,
        owner: u64,
        key: &str,
        plan: &Plan<'_>,
    ) -> Result<Grant<'a>, LockError> {
        let store = holder.inner().remote.as_ref().expect("a PostgreSQL manager");
        let owner = remote::Owner { kind: if plan.thread_owned { 't' } else { 's' }, id: owner };
        let acquired = remote::acquire_blocking(store, owner, key, plan.mode, plan.lease_ns, plan.wait.as_ref());
        let (grant, token, mode) = acquired.inspect_err(|error| holder.inner().counters.record(error))?;
        Ok(Grant::remote(holder, grant, owner.id, token, mode))
    }

    /// The lock-free grant on an existing entry, if the plan allows it and
    /// the word is free (or shared).
    #[inline(always)]
    fn acquire_fast<'a, H: Holder<'a>>(
        holder: H,
        owner: u64,
        key: &str,
        hash: u64,
        plan: &Plan<'_>,
    ) -> Option<Grant<'a>> {
        if !plan.fast_path() {
            return None;
        }
        let guard = epoch::pin();
        let entry = holder.inner().table.find(key, hash, &guard)?;
        let fast = match plan.mode {
            LockMode::Exclusive => entry.lock_exclusive_fast(owner),
            LockMode::Shared => entry.lock_shared_fast(owner),
        };
        match fast {
            Fast::Granted(token) => Some(Grant::new(holder, Target::Held(entry), owner, token, plan.mode)),
            Fast::Slow | Fast::Dead => None,
        }
    }

    /// The blocking slow path: grants, or queues and parks until granted.
    #[cold]
    #[inline(never)]
    fn acquire_slow<'a, H: Holder<'a>>(
        holder: H,
        owner: u64,
        key: &str,
        hash: u64,
        plan: &Plan<'_>,
    ) -> Result<Grant<'a>, LockError> {
        match Self::admit_or_queue(holder, owner, key, hash, plan, false)? {
            Admitted::Granted(grant) => Ok(grant),
            Admitted::Queued(queued) => {
                let limits = plan.wait.as_ref().expect("only a request that may wait is queued");
                holder.inner().wait(holder, queued, limits)
            }
        }
    }

    /// Starts an acquisition by a task: grants at once, or queues a task
    /// waiter for the caller's future to wait on. Never spins or parks.
    pub(crate) fn start_task<'a, H: Holder<'a>>(
        holder: H,
        owner: u64,
        key: &str,
        plan: &Plan<'_>,
    ) -> Result<Admitted<'a>, LockError> {
        check_key(key)?;
        let hash = holder.inner().table.hash(key);
        if let Some(grant) = Self::acquire_fast(holder, owner, key, hash, plan) {
            return Ok(Admitted::Granted(grant));
        }
        Self::admit_or_queue(holder, owner, key, hash, plan, true)
    }

    /// Inserts a missing entry (granted); else spins briefly while nobody
    /// is queued (threads only), then grants under the queue mutex or
    /// queues a waiter (of a thread, or a `task`).
    fn admit_or_queue<'a, H: Holder<'a>>(
        holder: H,
        owner: u64,
        key: &str,
        hash: u64,
        plan: &Plan<'_>,
        task: bool,
    ) -> Result<Admitted<'a>, LockError> {
        let this = holder.inner();
        let exclusive = plan.mode == LockMode::Exclusive;
        let grant = |entry: &Entry, token, mode, leased: bool| {
            let target = if leased { Target::Leased { key, hash } } else { Target::Held(entry) };
            Admitted::Granted(Grant::new(holder, target, owner, token, mode))
        };
        let mut waiter: Option<Arc<Waiter>> = None;
        let guard = epoch::pin();
        // After meeting a dead entry, look up under the shard mutex: the sweep
        // that killed it holds the mutex until it is unlinked, so we wait for
        // it there instead of spinning on the lock-free path.
        let mut exact = false;
        let entry = 'lookup: loop {
            let found = if exact { None } else { this.table.find(key, hash, &guard) };
            let entry = match found {
                Some(entry) => entry,
                None => {
                    let now_ns = if plan.lease_ns != 0 { this.clock.now_ns() } else { 0 };
                    let make = |floor| {
                        let entry = Entry::new_granted(key, hash, owner, exclusive, floor);
                        if plan.lease_ns != 0 {
                            entry.lease_deadline_ns.store(now_ns + plan.lease_ns, Ordering::Relaxed);
                            entry.word.fetch_or(LEASED, Ordering::Relaxed);
                        }
                        entry
                    };
                    match this.table.find_or_insert(key, hash, &guard, make) {
                        Found::Inserted(entry) => {
                            let token = entry.token.load(Ordering::Relaxed);
                            return Ok(grant(entry, token, plan.mode, plan.lease_ns != 0));
                        }
                        Found::Existing(entry) => entry,
                    }
                }
            };
            // A task never spins: it would stall its executor.
            if plan.fast_path() && !task {
                let mut step = 0;
                loop {
                    let fast = if exclusive { entry.lock_exclusive_fast(owner) } else { entry.lock_shared_fast(owner) };
                    match fast {
                        Fast::Granted(token) => return Ok(grant(entry, token, plan.mode, false)),
                        Fast::Dead => {
                            exact = true;
                            continue 'lookup;
                        }
                        Fast::Slow => {}
                    }
                    // Spinning cannot help once waiters are queued, for a leased
                    // holder, or when the holder is the caller (nesting).
                    let word = entry.word.load(Ordering::Relaxed);
                    let futile = word & (QUEUED | LEASED) != 0 || held_exclusively_by(word, owner);
                    let Some(limits) = &plan.wait else { break };
                    // The deadline holds while spinning too: past it, the
                    // wait below gives up at once. (No clock is read for a
                    // wait without one.)
                    if limits.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                        break;
                    }
                    if futile || !spin(step, this.config.spin_limit) {
                        break;
                    }
                    step += 1;
                }
            }
            let admitted = loop {
                let (mut expired, mut wakeups) = (0, Wakeups::new());
                let now_ns = this.clock.now_ns();
                let admitted =
                    entry.admit(owner, plan.mode, plan.lease_ns, now_ns, waiter.as_ref(), &mut expired, &mut wakeups);
                wake(wakeups);
                this.counters.count_expired(expired);
                // The waiter (two allocations) is made only once a request
                // that may wait finds it must: an uncontended session lock,
                // which always comes here, allocates nothing.
                if matches!(admitted, Admit::WouldBlock) && plan.wait.is_some() && waiter.is_none() {
                    // A session blocking a thread that holds locks of its own.
                    let thread = if !task && !plan.thread_owned && thread_held() > 0 { thread_owner() } else { 0 };
                    waiter = Some(Waiter::new(owner, thread, plan.mode, plan.lease_ns, key, hash, task));
                    continue;
                }
                break admitted;
            };
            match admitted {
                Admit::Granted { token, nested, leased } => {
                    let mode = if nested { LockMode::Exclusive } else { plan.mode };
                    return Ok(grant(entry, token, mode, leased));
                }
                Admit::WouldBlock => return Err(LockError::WouldBlock),
                Admit::Upgrade => return Err(LockError::Upgrade),
                Admit::Dead => exact = true,
                Admit::Queued => break entry,
            }
        };
        this.counters.contended.fetch_add(1, Ordering::Relaxed);
        let waiter = waiter.expect("only a request that may wait is queued");
        // From here the queued waiter keeps the entry alive (its word is not
        // idle), so the epoch guard can go: a long wait must not hold back
        // reclamation everywhere else. `Pending` says how the entry is used.
        let entry = NonNull::from(entry);
        drop(guard);
        // Only an owner that holds a lock can close a wait cycle; a thread
        // that holds none cannot gain one while it waits, so its wait skips the
        // deadlock search (and the timed park that it needs).
        let search = !plan.thread_owned || thread_held() > 0;
        Ok(Admitted::Queued(Queued { entry, waiter, search }))
    }

    /// `lock_all` for `owner`, blocking: sorted, deduplicated, all or nothing.
    pub(crate) fn lock_all_as<'a, H: Holder<'a>, K: AsRef<str>>(
        holder: H,
        owner: u64,
        keys: impl IntoIterator<Item = K>,
        plan: &Plan<'_>,
    ) -> Result<Vec<Grant<'a>>, LockError> {
        let keys = sorted_keys(keys)?;
        if let Some(store) = &holder.inner().remote {
            let keys = keys.iter().map(|key| check_key(key.as_ref()).map(|()| key.as_ref().to_owned()));
            let keys = keys.collect::<Result<Vec<_>, _>>()?;
            let owner = remote::Owner { kind: if plan.thread_owned { 't' } else { 's' }, id: owner };
            let granted =
                remote::acquire_all_blocking(store, owner, &keys, plan.mode, plan.lease_ns, plan.wait.as_ref());
            let granted = granted.inspect_err(|error| holder.inner().counters.record(error))?;
            let grants =
                granted.into_iter().map(|(grant, token)| Grant::remote(holder, grant, owner.id, token, plan.mode));
            return Ok(grants.collect());
        }
        let mut grants = Vec::with_capacity(keys.len());
        for key in &keys {
            // On error, `grants` is dropped and releases what was taken.
            grants.push(Self::acquire_as(holder, owner, key.as_ref(), plan)?);
        }
        Ok(grants)
    }
}

/// What starting an acquisition gives.
pub(crate) enum Admitted<'a> {
    /// The key is held.
    Granted(Grant<'a>),
    /// A waiter is queued; wait on it with a [`Pending`].
    Queued(Queued),
}

/// The keys of a `lock_all`: at most [`LOCK_ALL_KEYS_MAX`], sorted and
/// deduplicated, so that concurrent calls take them in one global order.
pub(crate) fn sorted_keys<K: AsRef<str>>(keys: impl IntoIterator<Item = K>) -> Result<Vec<K>, LockError> {
    let mut keys: Vec<K> = keys.into_iter().take(LOCK_ALL_KEYS_MAX + 1).collect();
    if keys.len() > LOCK_ALL_KEYS_MAX {
        return Err(LockError::InvalidRequest { reason: "lock_all takes at most LOCK_ALL_KEYS_MAX (1024) keys" });
    }
    keys.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
    keys.dedup_by(|a, b| a.as_ref() == b.as_ref());
    Ok(keys)
}
