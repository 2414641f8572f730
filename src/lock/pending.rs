//! How a queued acquisition waits: one step function that both drivers run.
//!
//! [`Pending::step`] does what one round of a wait does: see whether the
//! waiter was granted, whether a cancel token or the session's interrupt was
//! raised, whether the deadline passed, whether it is time to search for a
//! deadlock, and whether the holder's lease ran out (then it revokes it). It
//! returns the outcome, or the instant to sleep until. A blocked thread
//! (`Inner::wait`) parks between steps; a future registers its
//! waker in the waiter and arms a timer (`lock/future.rs`). So queueing,
//! hand-off, leases, interruption and deadlock search are the same code for
//! threads and tasks, mixed on one key.
//!
//! Giving up (timeout, interrupt, deadlock, or a dropped future) goes through
//! `Entry::abandon` under the queue mutex, which orders it against every
//! grant: either the grant came first, and the waiter holds the key after all
//! (a dropped future then releases it, handing it on), or the waiter leaves
//! the queue with no trace.
//!
//! The entry stays alive while its waiter is queued (a queued word is never
//! idle, so never swept). Each step pins the epoch before it checks for the
//! grant and touches the entry only under that pin: once granted a *leased*
//! grant, the lease may run out and the entry be revoked and reclaimed at any
//! moment, so after seeing the grant nothing here touches the entry.

use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crossbeam_epoch::Guard;

use crate::error::LockError;
use crate::sync::{self, Arc};

use super::cancel::Signal;
use super::guard::{Grant, Holder, Target};
use super::manager::Inner;
use super::wait::{Waiter, Wakeups, wake};
use super::word::Entry;

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

/// The outcome of one [`Pending::step`].
#[derive(Debug)]
pub(crate) enum Step {
    /// The wait is over: granted with this token, or given up. The waiter has
    /// left every registry and, unless granted, the queue.
    Done(Result<u64, LockError>),
    /// Not yet: sleep until woken or until this instant.
    Sleep(Option<Instant>),
}

/// A waiter just queued on an entry.
pub(crate) struct Queued {
    /// Alive while the waiter is queued.
    pub(crate) entry: NonNull<Entry>,
    pub(crate) waiter: Arc<Waiter>,
    /// Whether the wait is a node of the wait-for graph.
    pub(crate) search: bool,
}

// SAFETY: as for `Pending`.
unsafe impl Send for Queued {}
// SAFETY: as for `Pending`.
unsafe impl Sync for Queued {}

/// A waiter queued on an entry, between its steps.
pub(crate) struct Pending {
    /// Alive while the waiter is queued; see the module documentation.
    entry: NonNull<Entry>,
    waiter: Arc<Waiter>,
    /// When the call began (spinning and earlier keys of a `lock_all`
    /// included): a timeout reports the whole wait.
    started: Instant,
    /// The interrupt generation the wait began in; `Some(None)` if it
    /// consumed a pending interrupt; `None` without an interrupt signal.
    interrupt_since: Option<Option<u64>>,
    /// Whether the waiter is in the deadlock registry.
    search: bool,
    search_interval: Duration,
    search_at: Option<Instant>,
}

// SAFETY: `entry` is shared state behind atomics and mutexes, alive while the
// waiter is queued; the pending wait has no thread affinity.
unsafe impl Send for Pending {}
// SAFETY: `&Pending` gives access to nothing but the waiter's atomics.
unsafe impl Sync for Pending {}

impl Pending {
    /// Starts waiting: registers `waiter`, queued on `entry`, with its
    /// signals, and with the deadlock registry if `search`.
    ///
    /// Only a waiter that may close a cycle is a node of the wait-for graph:
    /// one whose owner holds nothing has no blockers that those queued behind
    /// it do not also have (docs/CONCURRENCY.md), so it stays out of the
    /// registry and its mutex.
    pub(crate) fn start(inner: &Inner, queued: Queued, limits: &WaitLimits<'_>) -> Self {
        let Queued { entry, waiter, search } = queued;
        let now = Instant::now();
        if let Some(cancel) = limits.cancel {
            cancel.register(&waiter);
        }
        let interrupt_since = limits.interrupt.map(|signal| signal.register(&waiter));
        if search {
            inner.deadlocks.register(&waiter);
        }
        let search_interval = inner.config.deadlock_threshold;
        Self {
            entry,
            waiter,
            started: limits.since.unwrap_or(now),
            interrupt_since,
            search,
            search_interval,
            search_at: if search { now.checked_add(search_interval) } else { None },
        }
    }

    /// The waiter.
    pub(crate) fn waiter(&self) -> &Arc<Waiter> {
        &self.waiter
    }

    /// The grant for `token`, which this wait was given: by key for a
    /// leased grant (its entry may be gone already), by entry otherwise.
    pub(crate) fn grant<'a, H: Holder<'a>>(&self, holder: H, token: u64) -> Grant<'a> {
        let waiter = &*self.waiter;
        let target = if waiter.lease_ns != 0 {
            Target::Leased { key: &waiter.key, hash: waiter.hash }
        } else {
            // SAFETY: an unleased grant keeps its entry alive.
            Target::Held(unsafe { self.entry.as_ref() })
        };
        Grant::new(holder, target, waiter.owner, token, waiter.mode)
    }

    fn interrupted(&self, limits: &WaitLimits<'_>) -> bool {
        match (limits.interrupt, self.interrupt_since) {
            (Some(signal), Some(Some(generation))) => signal.moved_since(generation),
            (Some(_), Some(None)) => true,
            _ => false,
        }
    }

    /// Whether a cancel token or the interrupt was raised.
    pub(crate) fn raised(&self, limits: &WaitLimits<'_>) -> bool {
        limits.cancel.is_some_and(Signal::is_cancelled) || self.interrupted(limits)
    }

    /// One round of the wait. `limits` must be the ones the wait started with.
    /// After `Done`, the pending wait is over: step it no more.
    pub(crate) fn step(&mut self, inner: &Inner, limits: &WaitLimits<'_>) -> Step {
        loop {
            let pin = crossbeam_epoch::pin();
            if let Some(token) = self.waiter.granted() {
                return Step::Done(self.finish(inner, limits, Ok(token), pin));
            }
            if self.raised(limits) {
                return Step::Done(self.finish(inner, limits, Err(LockError::Interrupted), pin));
            }
            let now = Instant::now();
            if limits.deadline.is_some_and(|deadline| now >= deadline) {
                let waited = now - self.started;
                return Step::Done(self.finish(inner, limits, Err(LockError::Timeout { waited }), pin));
            }
            if self.search_at.is_some_and(|at| now >= at) {
                if let Some(keys) = inner.deadlocks.search(&self.waiter, &inner.table) {
                    return Step::Done(self.finish(inner, limits, Err(LockError::Deadlock { keys }), pin));
                }
                self.search_interval =
                    (self.search_interval * 2).min(DEADLOCK_SEARCH_INTERVAL_MAX.max(self.search_interval));
                self.search_at = now.checked_add(self.search_interval);
            }
            let mut wake_at = [limits.deadline, self.search_at].into_iter().flatten().min();
            // SAFETY: not granted under this pin, so still queued (see the
            // module documentation).
            let entry = unsafe { self.entry.as_ref() };
            if let Some(lease_ns) = entry.lease_deadline() {
                let now_ns = inner.clock.now_ns();
                if lease_ns <= now_ns {
                    inner.revoke(entry, now_ns);
                    continue;
                }
                let lease_at = inner.clock.instant(lease_ns);
                wake_at = Some(wake_at.map_or(lease_at, |at| at.min(lease_at)));
            }
            return Step::Sleep(wake_at);
        }
    }

    /// Ends the wait with `outcome`, decided under `pin` (taken before the
    /// last "not granted" check): leaves the registries, and on an error
    /// leaves the queue, unless a grant won the race.
    fn finish(
        &mut self,
        inner: &Inner,
        limits: &WaitLimits<'_>,
        outcome: Result<u64, LockError>,
        pin: Guard,
    ) -> Result<u64, LockError> {
        self.deregister(inner, limits);
        let error = match outcome {
            Ok(token) => {
                drop(pin);
                self.keep_lost_interrupt(limits);
                return Ok(token);
            }
            Err(error) => error,
        };
        match self.leave(inner, pin) {
            Some(token) => {
                self.keep_lost_interrupt(limits);
                Ok(token)
            }
            None => {
                inner.counters.record(&error);
                Err(error)
            }
        }
    }

    /// Gives up without an outcome (a dropped future): leaves the registries
    /// and the queue. Returns the token if a grant won the race: the caller
    /// then holds the key, and must release it.
    pub(crate) fn abandon(&mut self, inner: &Inner, limits: &WaitLimits<'_>) -> Option<u64> {
        let pin = crossbeam_epoch::pin();
        self.deregister(inner, limits);
        if let Some(token) = self.waiter.granted() {
            return Some(token);
        }
        self.leave(inner, pin)
    }

    fn deregister(&self, inner: &Inner, limits: &WaitLimits<'_>) {
        if self.search {
            inner.deadlocks.deregister(&self.waiter);
        }
        for signal in [limits.cancel, limits.interrupt].into_iter().flatten() {
            signal.deregister(&self.waiter);
        }
    }

    /// Leaves the queue, under `pin` taken before the waiter was last seen
    /// not granted (so the entry is alive even if a grant raced us and has
    /// since been revoked). Returns the token of a grant that came first.
    fn leave(&self, inner: &Inner, pin: Guard) -> Option<u64> {
        let mut wakeups = Wakeups::new();
        // SAFETY: see above.
        let entry = unsafe { self.entry.as_ref() };
        let late_grant = entry.abandon(&self.waiter, inner.clock.now_ns(), &mut wakeups);
        drop(pin);
        wake(wakeups);
        late_grant
    }

    /// Granted, though an interrupt may have come too (or been consumed at
    /// registration): it lost the race; keep it for the session's next wait.
    fn keep_lost_interrupt(&self, limits: &WaitLimits<'_>) {
        if self.interrupted(limits)
            && let Some(interrupt) = limits.interrupt
        {
            interrupt.defer();
        }
    }
}

impl Inner {
    /// The blocking driver: parks the calling thread between steps until
    /// its waiter is granted or gives up.
    pub(crate) fn wait<'a, H: Holder<'a>>(
        &self,
        holder: H,
        queued: Queued,
        limits: &WaitLimits<'_>,
    ) -> Result<Grant<'a>, LockError> {
        let mut pending = Pending::start(self, queued, limits);
        loop {
            match pending.step(self, limits) {
                Step::Done(outcome) => return outcome.map(|token| pending.grant(holder, token)),
                Step::Sleep(wake_at) => {
                    let waiter = pending.waiter();
                    sync::park(waiter.park_key(), || waiter.granted().is_none() && !pending.raised(limits), wake_at);
                }
            }
        }
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
