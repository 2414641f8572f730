//! Slow paths: the FIFO wait queue of each key, direct hand-off to waiters,
//! and lease revocation. How a queued waiter waits is `pending.rs`.
//!
//! Everything here runs under the entry's `queue` mutex, which serialises all
//! changes of the lock word except the fast paths of `word.rs`. Those only act
//! while `QUEUED` and `LEASED` are clear, so a waiter is never overtaken: once
//! anyone waits, the key passes from holder to waiter in arrival order
//! (barging happens only while nobody waits).
//!
//! A waiter is granted *by the releaser*: it sets the word to the waiter's
//! grant, publishes the token in `Waiter::granted` and wakes it (a parked
//! thread or a task, `Waiter::notify`). The waiter
//! never races for the word after waking, so a grant cannot be lost, and a
//! waiter that gives up (timeout, interrupt, deadlock) either finds itself
//! already granted or removes itself under the same mutex, leaving no trace.

use std::task::Waker;

use crate::error::LockError;
use crate::sync::slot::WakerSlot;
use crate::sync::{self, Arc, AtomicU64, Ordering};

use super::manager::LockMode;
use super::word::{
    DEAD, EXCLUSIVE, Entry, LEASED, NESTED, ONE_SHARED, QUEUED, Queue, exclusive_word, held_exclusively_by, is_free,
    payload,
};

/// One blocked acquisition: a thread parked on the waiter's address, or a
/// future whose task waits on the waiter's slot.
#[derive(Debug)]
pub(crate) struct Waiter {
    /// Who waits.
    pub(crate) owner: u64,
    /// The parked thread's own owner id, when a session's blocking wait
    /// parks a thread that holds thread-owned locks: those cannot be
    /// released while it waits, so the wait stands for that owner too in
    /// the wait-for graph. 0 otherwise (tasks do not block their thread).
    pub(crate) thread: u64,
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
    /// How to wake it: `None` for a thread parked on [`park_key`](Self::park_key),
    /// the task's waker for a future.
    task: Option<WakerSlot>,
}

impl Waiter {
    /// A waiter that parks the calling thread (`task: false`; `thread` as
    /// the field says) or a future's.
    pub(crate) fn new(
        owner: u64,
        thread: u64,
        mode: LockMode,
        lease_ns: u64,
        key: &str,
        hash: u64,
        task: bool,
    ) -> Arc<Self> {
        let task = task.then(WakerSlot::default);
        Arc::new(Self { owner, thread, mode, lease_ns, key: key.into(), hash, granted: AtomicU64::new(0), task })
    }

    /// The owner ids this wait stands for: its owner, and the parked thread's.
    pub(crate) fn owners(&self) -> impl Iterator<Item = u64> {
        [self.owner, self.thread].into_iter().filter(|&id| id != 0)
    }

    /// The address a thread waiter parks on; also the waiter's identity.
    pub(crate) fn park_key(&self) -> usize {
        self as *const Self as usize
    }

    /// Registers the polling task's waker (task waiters only), before the
    /// poll checks the grant and the signals (see `sync::slot`).
    pub(crate) fn register(&self, waker: &Waker) {
        if let Some(slot) = &self.task {
            slot.register(waker);
        }
    }

    /// Wakes the waiter, whichever kind it is: after its grant, a raised
    /// signal, or a lease granted ahead of it.
    pub(crate) fn notify(&self) {
        match &self.task {
            None => sync::unpark(self.park_key()),
            Some(slot) => slot.wake(),
        }
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

/// Waiters to wake once the queue mutex is released.
pub(crate) type Wakeups = Vec<Arc<Waiter>>;

/// Wakes granted waiters (after the queue mutex is dropped, to keep it short).
/// Inline, and at once done when there is nobody to wake: the common case of
/// an uncontended slow-path grant (a session's exclusive lock).
#[inline]
pub(crate) fn wake(wakeups: Wakeups) {
    if wakeups.is_empty() {
        return;
    }
    for waiter in wakeups {
        waiter.notify();
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
