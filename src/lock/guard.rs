//! Owners and what they hold: owner ids (threads by default, or a
//! [`Session`]), fencing tokens, and the RAII guards that release a grant.
//!
//! A guard remembers the owner and the fencing token of its grant, and every
//! slow-path release checks both under the entry's queue mutex, so a guard can
//! never release a grant that has since been revoked and given to someone else.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use crossbeam_epoch as epoch;

use crate::error::LockError;
use crate::sync::{Arc, Ordering, fence, thread_local};

use super::cancel::Signal;
use super::manager::{Inner, LEASE_MAX, LockManager, LockMode, LockRequest, Plan};
use super::remote::{self, RemoteGrant};
use super::wait::{Released, Wakeups, wake};
use super::word::{Entry, OWNER_ID_MAX};

/// Hands out owner ids; 0 means "none", so ids start at 1.
static NEXT_OWNER_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_owner_id() -> u64 {
    let id = NEXT_OWNER_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // 2^56 ids: a billion new owners a second for two years.
    assert!(id <= OWNER_ID_MAX, "tollgate owner ids exhausted");
    id
}

/// The current thread as an owner: its id (0 until first used) and how many
/// grants it holds, which tells a wait whether it could be part of a deadlock.
struct ThreadState {
    owner: Cell<u64>,
    held: Cell<u64>,
}

#[cfg(not(loom))]
thread_local! {
    static THREAD: ThreadState = const { ThreadState { owner: Cell::new(0), held: Cell::new(0) } };
}
#[cfg(loom)]
thread_local! {
    static THREAD: ThreadState = ThreadState { owner: Cell::new(0), held: Cell::new(0) };
}

/// The owner id of the current thread, assigned on first use.
#[inline]
pub(crate) fn thread_owner() -> u64 {
    THREAD.with(|thread| match thread.owner.get() {
        0 => {
            let id = next_owner_id();
            thread.owner.set(id);
            id
        }
        id => id,
    })
}

/// The owner id of the current thread, refusing a thread-owned lock inside
/// one of tollgate's polls (it would be shared by every task on the thread).
#[inline]
pub(crate) fn thread_owner_outside_tasks() -> Result<u64, LockError> {
    if crate::sync::task::inside() {
        return Err(LockError::ThreadOwnerInTask);
    }
    Ok(thread_owner())
}

/// How many grants the current thread holds as a thread owner.
pub(crate) fn thread_held() -> u64 {
    THREAD.with(|thread| thread.held.get())
}

#[inline]
fn count_thread_held(granted: bool) {
    THREAD.with(|thread| {
        let held = thread.held.get();
        thread.held.set(if granted { held + 1 } else { held.saturating_sub(1) });
    });
}

/// A fencing token: strictly greater for every later grant of the same key,
/// including grants made after a lease expired or after the key's entry was
/// reclaimed. Pass it along with writes to a resource that remembers the
/// highest token it has seen, and that resource can refuse a stale holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(u64);

impl FencingToken {
    /// The token as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Who owns a guard: [`ThreadOwned`] or [`SessionOwned`]. Sealed.
pub trait OwnerKind: sealed::Sealed {}

/// Marks guards owned by the thread that acquired them. Such guards cannot
/// be sent to another thread (`!Send`): the lock belongs to the thread.
#[derive(Debug)]
pub struct ThreadOwned(PhantomData<*const ()>);

/// Marks guards owned by a [`Session`]; they may move between threads.
#[derive(Debug)]
pub struct SessionOwned(());

impl sealed::Sealed for ThreadOwned {}
impl sealed::Sealed for SessionOwned {}
impl OwnerKind for ThreadOwned {}
impl OwnerKind for SessionOwned {}

/// Where a grant's entry is found when releasing it.
enum Handle {
    /// An unleased grant keeps its entry alive (a held word is never swept).
    Held(NonNull<Entry>),
    /// A leased grant can be revoked, after which its entry may be reclaimed,
    /// so it is looked up again by key.
    Leased(Box<LeasedKey>),
    /// A grant kept in PostgreSQL.
    Remote(Box<RemoteGrant>),
}

struct LeasedKey {
    key: Box<str>,
    hash: u64,
}

/// What a new grant refers to.
pub(crate) enum Target<'e> {
    /// The entry of an unleased grant (alive while the grant lasts).
    Held(&'e Entry),
    /// The key of a leased grant. Never the entry: by the time the grant is
    /// built, the lease may have run out and the entry been reclaimed.
    Leased { key: &'e str, hash: u64 },
}

/// How a grant reaches its manager to release: a thread's grant borrows the
/// manager; a session's keeps the session alive (one reference count on the
/// session's cache line, not the manager's), so it is `'static`.
#[derive(Clone)]
pub(crate) enum ManagerRef<'a> {
    Thread(&'a Inner),
    Session(Arc<SessionState>),
}

impl ManagerRef<'_> {
    fn inner(&self) -> &Inner {
        match self {
            Self::Thread(inner) => inner,
            Self::Session(session) => &session.manager.inner,
        }
    }
}

/// Who an acquisition is for, as the acquiring code sees it: the calling
/// thread (borrowing the manager) or a session. Makes the grant's
/// [`ManagerRef`] only once the key is granted.
pub(crate) trait Holder<'a>: Copy {
    /// The manager.
    fn inner(&self) -> &Inner;
    /// What the grant keeps.
    fn manager_ref(self) -> ManagerRef<'a>;
}

impl<'a> Holder<'a> for &'a Inner {
    #[inline]
    fn inner(&self) -> &Inner {
        self
    }

    #[inline]
    fn manager_ref(self) -> ManagerRef<'a> {
        ManagerRef::Thread(self)
    }
}

impl<'a> Holder<'a> for &Arc<SessionState> {
    #[inline]
    fn inner(&self) -> &Inner {
        &self.manager.inner
    }

    #[inline]
    fn manager_ref(self) -> ManagerRef<'a> {
        ManagerRef::Session(Arc::clone(self))
    }
}

/// One grant, released at most once.
pub(crate) struct Grant<'a> {
    manager: ManagerRef<'a>,
    handle: Handle,
    owner: u64,
    token: u64,
    mode: LockMode,
    released: bool,
}

// SAFETY: the entry pointer is shared state behind atomics and mutexes; the
// grant itself carries no thread affinity (guards add it where it matters).
unsafe impl Send for Grant<'_> {}
// SAFETY: `&Grant` only reads immutable fields and the entry's key.
unsafe impl Sync for Grant<'_> {}

impl<'a> Grant<'a> {
    #[inline]
    pub(crate) fn new<H: Holder<'a>>(holder: H, target: Target<'_>, owner: u64, token: u64, mode: LockMode) -> Self {
        if mode == LockMode::Exclusive {
            // Orders the grant (word and token) before the holder's writes to
            // the data it protects, for optimistic readers (`Entry::validate`).
            fence(Ordering::Release);
        }
        let handle = match target {
            Target::Held(entry) => Handle::Held(NonNull::from(entry)),
            Target::Leased { key, hash } => Handle::Leased(Box::new(LeasedKey { key: key.into(), hash })),
        };
        let manager = holder.manager_ref();
        if let ManagerRef::Thread(_) = manager {
            count_thread_held(true);
        }
        Self { manager, handle, owner, token, mode, released: false }
    }

    /// A grant kept in PostgreSQL (out of line: the embedded paths never
    /// make one).
    #[cold]
    #[inline(never)]
    pub(crate) fn remote<H: Holder<'a>>(holder: H, grant: RemoteGrant, owner: u64, token: u64, mode: LockMode) -> Self {
        let manager = holder.manager_ref();
        if let ManagerRef::Thread(_) = manager {
            count_thread_held(true);
        }
        Self { manager, handle: Handle::Remote(Box::new(grant)), owner, token, mode, released: false }
    }

    fn key(&self) -> &str {
        match &self.handle {
            // SAFETY: the grant is unreleased (guards release only on drop or
            // by consuming themselves), so its entry is alive.
            Handle::Held(entry) => unsafe { entry.as_ref().key.as_str() },
            Handle::Leased(leased) => &leased.key,
            Handle::Remote(grant) => grant.key(),
        }
    }

    /// The entry of a leased grant, if it still exists; looked up exactly.
    fn with_leased_entry<R>(&self, leased: &LeasedKey, f: impl FnOnce(&Entry) -> R) -> Option<R> {
        let guard = epoch::pin();
        let table = &self.manager.inner().table;
        let (key, hash) = (&*leased.key, leased.hash);
        let entry = table.find(key, hash, &guard).or_else(|| {
            // A miss may be a resize in progress; confirm under the shard mutex.
            table.absent_floor(key, hash).is_none().then(|| table.find(key, hash, &guard)).flatten()
        })?;
        Some(f(entry))
    }

    /// Marks a grant released by someone else (a batch release of a
    /// PostgreSQL `LockSet`), so that dropping it does nothing.
    fn mark_released(&mut self) {
        if !std::mem::replace(&mut self.released, true)
            && let ManagerRef::Thread(_) = self.manager
        {
            count_thread_held(false);
        }
    }

    #[inline]
    fn release(&mut self) -> Result<(), LockError> {
        if std::mem::replace(&mut self.released, true) {
            return Ok(());
        }
        if let ManagerRef::Thread(_) = self.manager {
            count_thread_held(false);
        }
        if let Handle::Held(entry) = &self.handle {
            // SAFETY: unreleased until now, so the entry is alive; see `key`.
            let entry = unsafe { entry.as_ref() };
            let done = match self.mode {
                LockMode::Exclusive => entry.unlock_exclusive_fast(self.owner),
                LockMode::Shared => entry.unlock_shared_fast(self.owner),
            };
            if done {
                return Ok(());
            }
        }
        self.release_slow()
    }

    /// Releases a grant with waiters queued behind it, or a leased grant.
    #[cold]
    #[inline(never)]
    fn release_slow(&self) -> Result<(), LockError> {
        if let Handle::Remote(grant) = &self.handle {
            let released = remote::release_blocking(grant);
            if released == Err(LockError::LeaseExpired) {
                self.manager.inner().counters.count_expired(1);
            }
            return released;
        }
        let manager = self.manager.inner();
        let (owner, token) = (self.owner, self.token);
        let mut wakeups = Wakeups::new();
        let mut expired = 0;
        let outcome = match &self.handle {
            Handle::Held(entry) => {
                // SAFETY: unreleased until now, so the entry is alive; see `key`.
                let entry = unsafe { entry.as_ref() };
                // The word may become idle and be swept while we still hold
                // its queue mutex: pin before touching it.
                let _pin = epoch::pin();
                match self.mode {
                    LockMode::Exclusive => {
                        entry.release_exclusive(owner, token, manager.clock.now_ns(), &mut expired, &mut wakeups)
                    }
                    LockMode::Shared => {
                        entry.release_last_shared(manager.clock.now_ns(), &mut wakeups);
                        Released::Yes
                    }
                }
            }
            Handle::Leased(leased) => self
                .with_leased_entry(leased, |entry| {
                    entry.release_exclusive(owner, token, manager.clock.now_ns(), &mut expired, &mut wakeups)
                })
                .unwrap_or(Released::LeaseExpired),
            Handle::Remote(_) => unreachable!("released above"),
        };
        wake(wakeups);
        manager.counters.count_expired(expired);
        match outcome {
            Released::Yes => Ok(()),
            Released::LeaseExpired => Err(LockError::LeaseExpired),
        }
    }

    fn renew(&self, lease: Duration) -> Result<(), LockError> {
        if let Handle::Held(_) = &self.handle {
            return Err(LockError::NoLease);
        }
        if lease.is_zero() || lease > LEASE_MAX {
            return Err(LockError::InvalidRequest { reason: "a lease must be longer than zero and at most LEASE_MAX" });
        }
        let leased = match &self.handle {
            Handle::Leased(leased) => leased,
            Handle::Remote(grant) => return remote::renew_blocking(grant, lease),
            Handle::Held(_) => unreachable!("answered above"),
        };
        let manager = self.manager.inner();
        let (mut expired, mut wakeups) = (0, Wakeups::new());
        let outcome = self
            .with_leased_entry(leased, |entry| {
                let now_ns = manager.clock.now_ns();
                entry.renew(self.owner, self.token, lease.as_nanos() as u64, now_ns, &mut expired, &mut wakeups)
            })
            .unwrap_or(Err(LockError::LeaseExpired));
        wake(wakeups);
        manager.counters.count_expired(expired);
        outcome
    }
}

impl Drop for Grant<'_> {
    #[inline]
    fn drop(&mut self) {
        // A guard dropped after its lease ran out has nothing left to release.
        let _ = self.release();
    }
}

/// Holds one key; releases it when dropped or by [`release`](Self::release).
///
/// `O` says who owns it: the acquiring thread ([`ThreadOwned`], the default,
/// `!Send`) or a [`Session`] ([`SessionOwned`], `Send`). A nested acquisition
/// by the holder returns another guard for the same grant (same fencing
/// token); the key is released when the last of them goes.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a, O: OwnerKind = ThreadOwned> {
    grant: Grant<'a>,
    _owner: PhantomData<O>,
}

impl<'a, O: OwnerKind> LockGuard<'a, O> {
    #[inline]
    pub(crate) fn new(grant: Grant<'a>) -> Self {
        Self { grant, _owner: PhantomData }
    }

    /// The key held.
    pub fn key(&self) -> &str {
        self.grant.key()
    }

    /// How the key is held. A shared request by the exclusive holder is
    /// granted as a nested exclusive acquisition.
    pub fn mode(&self) -> LockMode {
        self.grant.mode
    }

    /// This grant's fencing token.
    pub fn fencing_token(&self) -> FencingToken {
        FencingToken(self.grant.token)
    }

    /// For a grant kept in PostgreSQL: the key, the owner string and the
    /// acquisition's level, which a publish under the lock checks in the
    /// same transaction (the holder row must still be there, live).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn remote(&self) -> Option<&RemoteGrant> {
        match &self.grant.handle {
            Handle::Remote(grant) => Some(grant),
            _ => None,
        }
    }

    /// Extends the lease to `lease` from now. Fails with
    /// [`LockError::LeaseExpired`] if the lease already ran out (the grant is
    /// then void), [`LockError::NoLease`] for a grant without a lease.
    pub fn renew(&self, lease: Duration) -> Result<(), LockError> {
        self.grant.renew(lease)
    }

    /// Releases the key now. [`LockError::LeaseExpired`] tells a leased holder
    /// that its lease ran out first, so its work under the lock may have
    /// overlapped with the next holder's.
    pub fn release(mut self) -> Result<(), LockError> {
        self.grant.release()
    }
}

impl<O: OwnerKind> fmt::Debug for LockGuard<'_, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.key())
            .field("mode", &self.mode())
            .field("fencing_token", &self.grant.token)
            .finish()
    }
}

/// The keys taken by one `lock_all`, sorted; all released together.
#[must_use = "the locks are released as soon as the set is dropped"]
pub struct LockSet<'a, O: OwnerKind = ThreadOwned> {
    guards: Vec<LockGuard<'a, O>>,
}

impl<'a, O: OwnerKind> LockSet<'a, O> {
    pub(crate) fn new(grants: Vec<Grant<'a>>) -> Self {
        Self { guards: grants.into_iter().map(LockGuard::new).collect() }
    }

    /// The guards, in key order.
    pub fn guards(&self) -> &[LockGuard<'a, O>] {
        &self.guards
    }

    /// Number of distinct keys held.
    pub fn len(&self) -> usize {
        self.guards.len()
    }

    /// Whether the set holds no key (`lock_all` of no keys).
    pub fn is_empty(&self) -> bool {
        self.guards.is_empty()
    }

    /// Releases every key; reports the first error (every key is released
    /// regardless). On PostgreSQL the keys of one `lock_all` are released
    /// in one call (one transaction), as dropping the set does.
    pub fn release(mut self) -> Result<(), LockError> {
        release_all(std::mem::take(&mut self.guards))
    }
}

impl<O: OwnerKind> Drop for LockSet<'_, O> {
    fn drop(&mut self) {
        let _ = release_all(std::mem::take(&mut self.guards));
    }
}

/// Releases `guards`: one call for the keys of one PostgreSQL `lock_all`
/// (one owner, one acquisition level), else one by one.
fn release_all<O: OwnerKind>(mut guards: Vec<LockGuard<'_, O>>) -> Result<(), LockError> {
    if guards.len() > 1 {
        let remote: Vec<&RemoteGrant> = guards.iter().map_while(LockGuard::remote).collect();
        if remote.len() == guards.len() && remote::one_acquisition(&remote) {
            let released = remote::release_all_blocking(&remote);
            for guard in &mut guards {
                guard.grant.mark_released();
            }
            return released;
        }
    }
    let mut first = Ok(());
    for guard in guards {
        let result = guard.release();
        if first.is_ok() {
            first = result;
        }
    }
    first
}

impl<O: OwnerKind> fmt::Debug for LockSet<'_, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.guards).finish()
    }
}

/// An owner that is not a thread: a request, a task, a saga. Locks taken
/// through a session belong to it whichever thread or task uses it, so its
/// guards may move between threads, be held across `.await`, and outlive the
/// [`LockManager`] handle it came from (they are `'static`). Threads or tasks
/// that share one session are one owner: they share its locks (reentrancy),
/// like clients sharing a ZooKeeper session. To share one deliberately, put
/// it in an `Arc`; a session is not `Clone`.
///
/// [`interrupt`](Self::interrupt) wakes the session's blocked waits with
/// [`LockError::Interrupted`]; if none is blocked, the next one fails instead.
///
/// ```
/// use std::time::Duration;
/// use tollgate::{LockError, LockManager};
///
/// let locks = LockManager::new();
/// let holder = locks.lock("cart:7")?;
/// let session = locks.session();
/// std::thread::scope(|s| {
///     let waiter = s.spawn(|| session.lock("cart:7").map(|_| ()));
///     std::thread::sleep(Duration::from_millis(10));
///     session.interrupt();
///     assert_eq!(waiter.join().unwrap(), Err(LockError::Interrupted));
/// });
/// drop(holder);
/// let guard = session.lock("cart:7")?;
/// std::thread::spawn(move || drop(guard)).join().unwrap(); // session guards are Send + 'static
/// # Ok::<(), LockError>(())
/// ```
pub struct Session {
    state: Arc<SessionState>,
}

/// What a session's guards keep alive.
pub(crate) struct SessionState {
    manager: LockManager,
    owner: u64,
    interrupt: Signal,
}

impl Session {
    pub(crate) fn new(manager: LockManager) -> Self {
        Self { state: Arc::new(SessionState { manager, owner: next_owner_id(), interrupt: Signal::default() }) }
    }

    /// This session's owner id (unique within the process).
    pub fn id(&self) -> u64 {
        self.state.owner
    }

    /// Takes `key` exclusively for this session, waiting as long as it takes.
    pub fn lock(&self, key: &str) -> Result<LockGuard<'static, SessionOwned>, LockError> {
        self.acquire(key, LockRequest::exclusive())
    }

    /// Takes `key` exclusively if possible at once; otherwise
    /// [`LockError::WouldBlock`].
    pub fn try_lock(&self, key: &str) -> Result<LockGuard<'static, SessionOwned>, LockError> {
        self.acquire(key, LockRequest::exclusive().no_wait())
    }

    /// Takes `key` exclusively, waiting at most `timeout`.
    pub fn lock_for(&self, key: &str, timeout: Duration) -> Result<LockGuard<'static, SessionOwned>, LockError> {
        self.acquire(key, LockRequest::exclusive().timeout(timeout))
    }

    /// Takes `key` as `request` describes.
    pub fn acquire(&self, key: &str, request: LockRequest) -> Result<LockGuard<'static, SessionOwned>, LockError> {
        let plan = Plan::new(&request, Some(&self.state.interrupt), false)?;
        Inner::acquire_as(&self.state, self.state.owner, key, &plan).map(LockGuard::new)
    }

    /// Takes all of `keys` exclusively, or none; see [`LockManager::lock_all`].
    pub fn lock_all<K: AsRef<str>>(
        &self,
        keys: impl IntoIterator<Item = K>,
        timeout: Duration,
    ) -> Result<LockSet<'static, SessionOwned>, LockError> {
        self.acquire_all(keys, LockRequest::exclusive().timeout(timeout))
    }

    /// Takes all of `keys` as `request` describes, or none; see
    /// [`LockManager::acquire_all`].
    pub fn acquire_all<K: AsRef<str>>(
        &self,
        keys: impl IntoIterator<Item = K>,
        request: LockRequest,
    ) -> Result<LockSet<'static, SessionOwned>, LockError> {
        let plan = Plan::new(&request, Some(&self.state.interrupt), false)?;
        Inner::lock_all_as(&self.state, self.state.owner, keys, &plan).map(LockSet::new)
    }

    /// Interrupts this session's blocked waits (they return
    /// [`LockError::Interrupted`]), or its next wait if none is blocked.
    pub fn interrupt(&self) {
        self.state.interrupt.interrupt();
    }

    /// A handle that interrupts this session from anywhere, for when the
    /// session itself has moved into a task or thread.
    ///
    /// ```
    /// use tollgate::{LockError, LockManager};
    ///
    /// let locks = LockManager::new();
    /// let _held = locks.lock("cart:7")?;
    /// let session = locks.session();
    /// let interrupter = session.interrupter();
    /// interrupter.interrupt(); // no wait is blocked: the next one fails
    /// assert_eq!(session.lock("cart:7").map(|_| ()), Err(LockError::Interrupted));
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn interrupter(&self) -> Interrupter {
        Interrupter { state: Arc::clone(&self.state) }
    }

    /// Whether the session's manager keeps its locks in PostgreSQL (a
    /// transaction checks that its topic is of the same backend).
    pub(crate) fn is_remote(&self) -> bool {
        self.state.manager.is_remote()
    }

    pub(crate) fn state(&self) -> &Arc<SessionState> {
        &self.state
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("id", &self.state.owner).finish_non_exhaustive()
    }
}

impl SessionState {
    pub(crate) fn owner(&self) -> u64 {
        self.owner
    }

    pub(crate) fn interrupt_signal(&self) -> &Signal {
        &self.interrupt
    }
}

/// Interrupts a [`Session`]'s waits from any thread or task; from
/// [`Session::interrupter`]. `Send + Sync + Clone`.
#[derive(Clone)]
pub struct Interrupter {
    state: Arc<SessionState>,
}

impl Interrupter {
    /// Same as [`Session::interrupt`].
    pub fn interrupt(&self) {
        self.state.interrupt.interrupt();
    }
}

impl fmt::Debug for Interrupter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interrupter").field("session", &self.state.owner).finish()
    }
}
