//! Slow paths: the FIFO wait queue of each key, direct hand-off to waiters,
//! lease revocation, and the loop a blocked owner parks in.
//!
//! Everything here runs under the entry's `queue` mutex, which serialises all
//! changes of the lock word except the fast paths of `word.rs`. Those only act
//! while `QUEUED` and `LEASED` are clear, so a waiter is never overtaken: once
//! anyone waits, the key passes from holder to waiter in arrival order
//! (barging happens only while nobody waits).
//!
//! A waiter is granted *by the releaser*: it sets the word to the waiter's
//! grant, publishes the token in `Waiter::granted` and unparks it. The waiter
//! never races for the word after waking, so a grant cannot be lost, and a
//! waiter that gives up (timeout, interrupt, deadlock) either finds itself
//! already granted or removes itself under the same mutex, leaving no trace.

use std::time::{Duration, Instant};

use crate::error::LockError;
use crate::sync::{self, Arc, AtomicU64, Ordering};

use super::cancel::Signal;
use super::manager::{LockManager, LockMode};
use super::word::{
    DEAD, EXCLUSIVE, Entry, LEASED, NESTED, ONE_SHARED, QUEUED, Queue, exclusive_word, held_exclusively_by, is_free,
    payload,
};

/// One blocked acquisition. Parks on its own address.
#[derive(Debug)]
pub(crate) struct Waiter {
    /// Who waits.
    pub(crate) owner: u64,
    /// For what.
    pub(crate) mode: LockMode,
    /// Lease to start when granted, in nanoseconds (0: none).
    pub(crate) lease_ns: u64,
    /// The key waited for (deadlock reports and searches).
    pub(crate) key: Box<str>,
    /// Its hash.
    pub(crate) hash: u64,
    /// 0 while waiting; the granted fencing token once granted (tokens are ≥ 1).
    pub(crate) granted: AtomicU64,
}

impl Waiter {
    pub(crate) fn new(owner: u64, mode: LockMode, lease_ns: u64, key: &str, hash: u64) -> Arc<Self> {
        Arc::new(Self { owner, mode, lease_ns, key: key.into(), hash, granted: AtomicU64::new(0) })
    }

    /// The address this waiter parks on.
    pub(crate) fn park_key(&self) -> usize {
        self as *const Self as usize
    }

    /// The granted token, if granted.
    pub(crate) fn granted(&self) -> Option<u64> {
        match self.granted.load(Ordering::Acquire) {
            0 => None,
            token => Some(token),
        }
    }
}

/// The outcome of an acquisition attempt under the queue mutex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Granted with this token; `nested` if it is a nested acquisition of the
    /// owner's exclusive grant, `leased` if that grant has a lease.
    Granted { token: u64, nested: bool, leased: bool },
    /// Not grantable now, and the caller does not wait.
    WouldBlock,
    /// The waiter was queued; the caller must wait for the grant.
    Queued,
    /// The owner holds the key shared and asked for it exclusively.
    Upgrade,
    /// The entry died; look the key up again.
    Dead,
}

/// Threads to unpark once the queue mutex is released.
pub(crate) type Wakeups = Vec<Arc<Waiter>>;

/// Wakes granted waiters (after the queue mutex is dropped, to keep it short).
pub(crate) fn wake(wakeups: Wakeups) {
    for waiter in wakeups {
        sync::unpark(waiter.park_key());
    }
}

/// Whether a release made under the queue mutex succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Released {
    /// The grant was released (or one nesting level of it).
    Yes,
    /// The grant had already been revoked, or its lease ran out just now.
    LeaseExpired,
}

impl Entry {
    /// Acquires on the slow path: revokes an expired lease, grants if the key
    /// is free and nobody waits (or the owner already holds it), otherwise
    /// queues `waiter`, or reports `WouldBlock` if there is none.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn admit(
        &self,
        owner: u64,
        mode: LockMode,
        lease_ns: u64,
        now_ns: u64,
        waiter: Option<&Arc<Waiter>>,
        expired: &mut u64,
        wakeups: &mut Wakeups,
    ) -> Admit {
        let mut queue = self.queue.lock();
        *expired += u64::from(self.revoke_expired(&mut queue, now_ns, wakeups));
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            if word == DEAD {
                return Admit::Dead;
            }
            if held_exclusively_by(word, owner) {
                // Our own exclusive grant covers any request. Setting NESTED
                // fails if another thread of ours just released the grant
                // (fast, without this mutex); then we acquire afresh.
                if word & NESTED == 0
                    && let Err(actual) =
                        self.word.compare_exchange(word, word | NESTED, Ordering::Acquire, Ordering::Acquire)
                {
                    word = actual;
                    continue;
                }
                self.depth.fetch_add(1, Ordering::Relaxed);
                let token = self.token.load(Ordering::Relaxed);
                return Admit::Granted { token, nested: true, leased: word & LEASED != 0 };
            }
            match mode {
                LockMode::Exclusive => {
                    if word & EXCLUSIVE == 0 && self.names_reader(owner) {
                        return Admit::Upgrade;
                    }
                    if is_free(word) && queue.is_empty() {
                        let granted = exclusive_word(owner) | if lease_ns != 0 { LEASED } else { 0 };
                        match self.word.compare_exchange(word, granted, Ordering::Acquire, Ordering::Acquire) {
                            Ok(_) => {
                                // Nobody else writes these while we hold the
                                // key and the queue mutex.
                                self.record_grant(lease_ns, now_ns);
                                let token = self.next_exclusive_token();
                                return Admit::Granted { token, nested: false, leased: lease_ns != 0 };
                            }
                            Err(actual) => {
                                word = actual;
                                continue;
                            }
                        }
                    }
                }
                LockMode::Shared => {
                    // Overtake the queue only to avoid waiting on ourselves: when
                    // we already hold the key shared, or may (an unnamed holder).
                    let may_hold = self.names_reader(owner) || payload(word) > self.named_readers();
                    if word & EXCLUSIVE == 0 && (queue.is_empty() || may_hold) {
                        match self.word.compare_exchange(word, word + ONE_SHARED, Ordering::Acquire, Ordering::Acquire)
                        {
                            Ok(_) => {
                                self.occupy_reader_slot(owner);
                                let token = self.token.fetch_add(1, Ordering::Relaxed) + 1;
                                return Admit::Granted { token, nested: false, leased: false };
                            }
                            Err(actual) => {
                                word = actual;
                                continue;
                            }
                        }
                    }
                }
            }
            let Some(waiter) = waiter else {
                return Admit::WouldBlock;
            };
            // Under the mutex only the fast paths change the word, and they
            // stop as soon as QUEUED is visible.
            match self.word.compare_exchange(word, word | QUEUED, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    queue.push_back(Arc::clone(waiter));
                    return Admit::Queued;
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Resets the nesting depth and records the lease of a new exclusive
    /// grant. Caller holds the queue mutex and the grant.
    fn record_grant(&self, lease_ns: u64, now_ns: u64) {
        self.depth.store(0, Ordering::Relaxed);
        let deadline = if lease_ns != 0 { now_ns.saturating_add(lease_ns) } else { 0 };
        self.lease_deadline_ns.store(deadline, Ordering::Relaxed);
    }

    /// Grants the key to waiters at the head of the queue for as long as they
    /// are compatible with the current holders, and clears QUEUED once the
    /// queue is empty. Restores the invariant "QUEUED implies held" after any
    /// slow-path change. Caller holds the queue mutex.
    pub(crate) fn grant_queued(&self, queue: &mut Queue, now_ns: u64, wakeups: &mut Wakeups) {
        loop {
            let word = self.word.load(Ordering::Acquire);
            let Some(head) = queue.front() else {
                if word & QUEUED != 0 {
                    self.word.fetch_and(!QUEUED, Ordering::Release);
                }
                return;
            };
            match head.mode {
                LockMode::Exclusive => {
                    if !is_free(word) {
                        return;
                    }
                    let head = queue.pop_front().expect("queue has a head");
                    // A free word with waiters is stable under the mutex: the
                    // fast paths neither grant nor release while QUEUED is set.
                    self.record_grant(head.lease_ns, now_ns);
                    let mut granted = exclusive_word(head.owner);
                    if head.lease_ns != 0 {
                        granted |= LEASED;
                    }
                    if !queue.is_empty() {
                        granted |= QUEUED;
                    }
                    self.word.store(granted, Ordering::Release);
                    let token = self.next_exclusive_token();
                    head.granted.store(token, Ordering::Release);
                    if head.lease_ns != 0 {
                        // Waiters behind a leased grant may have parked with no
                        // deadline: wake them to park again until the lease
                        // runs out, so that one of them revokes it then.
                        wakeups.extend(queue.iter().cloned());
                    }
                    wakeups.push(head);
                    return;
                }
                LockMode::Shared => {
                    if word & EXCLUSIVE != 0 {
                        return;
                    }
                    let head = queue.pop_front().expect("queue has a head");
                    // Shared holders may be releasing concurrently (never the
                    // last one: that release takes this mutex), so add, not store.
                    self.word.fetch_add(ONE_SHARED, Ordering::AcqRel);
                    self.occupy_reader_slot(head.owner);
                    let token = self.token.fetch_add(1, Ordering::Relaxed) + 1;
                    head.granted.store(token, Ordering::Release);
                    wakeups.push(head);
                }
            }
        }
    }

    /// Revokes the exclusive grant if its lease has run out, handing the key to
    /// the next waiter. Returns whether it revoked. Caller holds the queue mutex.
    pub(crate) fn revoke_expired(&self, queue: &mut Queue, now_ns: u64, wakeups: &mut Wakeups) -> bool {
        let word = self.word.load(Ordering::Acquire);
        if word & LEASED == 0 || self.lease_deadline_ns.load(Ordering::Relaxed) > now_ns {
            return false;
        }
        self.depth.store(0, Ordering::Relaxed);
        self.lease_deadline_ns.store(0, Ordering::Relaxed);
        // A leased grant is changed only under this mutex.
        self.word.store(word & QUEUED, Ordering::Release);
        self.grant_queued(queue, now_ns, wakeups);
        true
    }

    /// The lease deadline of the current exclusive grant, if it has one.
    pub(crate) fn lease_deadline(&self) -> Option<u64> {
        if self.word.load(Ordering::Acquire) & LEASED == 0 {
            return None;
        }
        let _queue = self.queue.lock();
        (self.word.load(Ordering::Acquire) & LEASED != 0).then(|| self.lease_deadline_ns.load(Ordering::Relaxed))
    }

    /// Releases one acquisition of the exclusive grant `(owner, token)` on the
    /// slow path: leased grants always come here, unleased ones when waiters
    /// are queued. `expired` counts a lease this call found run out.
    pub(crate) fn release_exclusive(
        &self,
        owner: u64,
        token: u64,
        now_ns: u64,
        expired: &mut u64,
        wakeups: &mut Wakeups,
    ) -> Released {
        let mut queue = self.queue.lock();
        let word = self.word.load(Ordering::Acquire);
        if !held_exclusively_by(word, owner) || self.token.load(Ordering::Relaxed) != token {
            return Released::LeaseExpired;
        }
        if self.revoke_expired(&mut queue, now_ns, wakeups) {
            *expired += 1;
            return Released::LeaseExpired;
        }
        if word & NESTED != 0 {
            // The word cannot lose its grant under us: NESTED stops the fast release.
            let depth = self.depth.load(Ordering::Relaxed) - 1;
            self.depth.store(depth, Ordering::Relaxed);
            if depth == 0 {
                self.word.fetch_and(!NESTED, Ordering::Release);
            }
            return Released::Yes;
        }
        self.lease_deadline_ns.store(0, Ordering::Relaxed);
        self.word.store(word & QUEUED, Ordering::Release);
        self.grant_queued(&mut queue, now_ns, wakeups);
        Released::Yes
    }

    /// Releases the last shared grant while waiters are queued, handing the
    /// key to the head of the queue. The reader slot is already vacated.
    pub(crate) fn release_last_shared(&self, now_ns: u64, wakeups: &mut Wakeups) {
        let mut queue = self.queue.lock();
        let previous = self.word.fetch_sub(ONE_SHARED, Ordering::AcqRel);
        debug_assert!(previous & EXCLUSIVE == 0 && payload(previous) >= 1);
        self.grant_queued(&mut queue, now_ns, wakeups);
    }

    /// Extends the lease of the grant `(owner, token)` to `now + lease_ns`.
    pub(crate) fn renew(
        &self,
        owner: u64,
        token: u64,
        lease_ns: u64,
        now_ns: u64,
        expired: &mut u64,
        wakeups: &mut Wakeups,
    ) -> Result<(), LockError> {
        let mut queue = self.queue.lock();
        let word = self.word.load(Ordering::Acquire);
        if !held_exclusively_by(word, owner) || self.token.load(Ordering::Relaxed) != token {
            return Err(LockError::LeaseExpired);
        }
        if word & LEASED == 0 {
            return Err(LockError::NoLease);
        }
        if self.revoke_expired(&mut queue, now_ns, wakeups) {
            *expired += 1;
            return Err(LockError::LeaseExpired);
        }
        self.lease_deadline_ns.store(now_ns.saturating_add(lease_ns), Ordering::Relaxed);
        Ok(())
    }

    /// Takes `waiter` out of the queue because it gives up. Returns its token
    /// instead if it was granted first: then it holds the key after all.
    pub(crate) fn abandon(&self, waiter: &Arc<Waiter>, now_ns: u64, wakeups: &mut Wakeups) -> Option<u64> {
        let mut queue = self.queue.lock();
        if let Some(token) = waiter.granted() {
            return Some(token);
        }
        let position = queue.iter().position(|queued| Arc::ptr_eq(queued, waiter));
        debug_assert!(position.is_some(), "an ungranted waiter is queued");
        if let Some(position) = position {
            queue.remove(position);
        }
        // Leaving may unblock those behind us (shared waiters behind an
        // exclusive one), and clears QUEUED when we were the last.
        self.grant_queued(&mut queue, now_ns, wakeups);
        None
    }

    /// Owners the waiter `waiter` waits for: the holders, and the waiters
    /// queued ahead of it. For deadlock detection; a snapshot.
    pub(crate) fn blockers(&self, waiter: &Arc<Waiter>, out: &mut Vec<u64>) {
        let queue = self.queue.lock();
        // A waiter that was granted (and has yet to deregister) or has left
        // the queue waits for nobody.
        let Some(position) = queue.iter().position(|queued| Arc::ptr_eq(queued, waiter)) else {
            return;
        };
        let word = self.word.load(Ordering::Acquire);
        if word & EXCLUSIVE != 0 {
            out.push(payload(word));
        } else {
            out.extend(self.readers.iter().map(|slot| slot.load(Ordering::Relaxed)).filter(|&id| id != 0));
        }
        out.extend(queue.iter().take(position).map(|queued| queued.owner));
        out.retain(|&id| id != waiter.owner);
    }
}

/// What a blocked acquisition may be woken by besides its grant.
pub(crate) struct WaitLimits<'a> {
    /// Give up with `Timeout` at this instant.
    pub(crate) deadline: Option<Instant>,
    /// When the wait that the deadline bounds began (the call), for
    /// `Timeout { waited }`; `None` without a deadline.
    pub(crate) since: Option<Instant>,
    /// Give up with `Interrupted` once this is raised (stays raised).
    pub(crate) cancel: Option<&'a Signal>,
    /// Give up with `Interrupted` once this is raised (consumed).
    pub(crate) interrupt: Option<&'a Signal>,
}

impl LockManager {
    /// Parks until `waiter`, queued on `entry`, is granted, or gives up. On
    /// giving up it leaves the queue with no trace (or keeps the key, if the
    /// grant won the race). Returns the granted token.
    ///
    /// Every iteration pins the epoch *before* it checks for the grant and
    /// touches `entry` only under that pin, and the thread never parks
    /// pinned. While the waiter is queued the entry cannot be swept; once it
    /// is granted a leased grant, the lease may run out and the entry be
    /// revoked and reclaimed at any moment, so after seeing the grant this
    /// function no longer touches the entry.
    pub(crate) fn wait(
        &self,
        entry: &Entry,
        waiter: &Arc<Waiter>,
        limits: &WaitLimits<'_>,
        search: bool,
    ) -> Result<u64, LockError> {
        let now = Instant::now();
        // A timeout reports the whole wait, from the call: spinning and
        // earlier keys of a `lock_all` included.
        let started = limits.since.unwrap_or(now);
        if let Some(cancel) = limits.cancel {
            cancel.register(waiter);
        }
        // `None`: a pending interrupt was consumed; the wait is interrupted.
        let interrupt_since = limits.interrupt.map(|signal| signal.register(waiter));
        let interrupted = || match (limits.interrupt, interrupt_since) {
            (Some(signal), Some(Some(generation))) => signal.moved_since(generation),
            (Some(_), Some(None)) => true,
            _ => false,
        };
        let raised = || limits.cancel.is_some_and(Signal::is_cancelled) || interrupted();
        // Only a waiter that may close a cycle is a node of the wait-for graph:
        // one that holds nothing has no blockers that those queued behind it
        // do not also have (docs/CONCURRENCY.md), so it stays out of the
        // registry and its mutex.
        if search {
            self.deadlocks.register(waiter);
        }
        let mut search_interval = self.config.deadlock_threshold;
        let mut search_at = if search { now.checked_add(search_interval) } else { None };

        let (outcome, pin) = loop {
            let pin = crossbeam_epoch::pin();
            if let Some(token) = waiter.granted() {
                break (Ok(token), pin);
            }
            if raised() {
                break (Err(LockError::Interrupted), pin);
            }
            let now = Instant::now();
            if limits.deadline.is_some_and(|deadline| now >= deadline) {
                break (Err(LockError::Timeout { waited: now - started }), pin);
            }
            if search_at.is_some_and(|at| now >= at) {
                if let Some(keys) = self.deadlocks.search(waiter, &self.table) {
                    break (Err(LockError::Deadlock { keys }), pin);
                }
                search_interval = (search_interval * 2).min(DEADLOCK_SEARCH_INTERVAL_MAX.max(search_interval));
                search_at = now.checked_add(search_interval);
            }
            let mut wake_at = [limits.deadline, search_at].into_iter().flatten().min();
            if let Some(lease_ns) = entry.lease_deadline() {
                let now_ns = self.clock.now_ns();
                if lease_ns <= now_ns {
                    self.revoke(entry, now_ns);
                    continue;
                }
                let lease_at = self.clock.instant(lease_ns);
                wake_at = Some(wake_at.map_or(lease_at, |at| at.min(lease_at)));
            }
            drop(pin);
            sync::park(waiter.park_key(), || waiter.granted().is_none() && !raised(), wake_at);
        };

        if search {
            self.deadlocks.deregister(waiter);
        }
        for signal in [limits.cancel, limits.interrupt].into_iter().flatten() {
            signal.deregister(waiter);
        }
        let error = match outcome {
            Ok(token) => {
                // Granted, though an interrupt may have come too (or been
                // consumed at registration): it lost the race; keep it for
                // the session's next wait.
                if interrupted()
                    && let Some(interrupt) = limits.interrupt
                {
                    interrupt.defer();
                }
                return Ok(token);
            }
            Err(error) => error,
        };
        // Still under the pin taken before we last saw "not granted", so the
        // entry is alive even if a grant raced us and has since been revoked.
        let mut wakeups = Wakeups::new();
        let late_grant = entry.abandon(waiter, self.clock.now_ns(), &mut wakeups);
        drop(pin);
        wake(wakeups);
        if let Some(token) = late_grant {
            if interrupted() {
                // The interrupt lost the race; keep it for the session's next wait.
                if let Some(interrupt) = limits.interrupt {
                    interrupt.defer();
                }
            }
            return Ok(token);
        }
        self.counters.record(&error);
        Err(error)
    }

    /// Revokes `entry`'s grant if its lease has run out and wakes whoever gets it.
    pub(crate) fn revoke(&self, entry: &Entry, now_ns: u64) {
        let mut wakeups = Wakeups::new();
        let _pin = crossbeam_epoch::pin();
        let revoked = {
            let mut queue = entry.queue.lock();
            entry.revoke_expired(&mut queue, now_ns, &mut wakeups)
        };
        self.counters.count_expired(u64::from(revoked));
        wake(wakeups);
    }
}

/// Searches repeat with doubling intervals up to this, so that a deadlock
/// formed while a long wait was already under way is still found.
const DEADLOCK_SEARCH_INTERVAL_MAX: Duration = Duration::from_millis(100);
