//! The one place atomics, mutexes, thread-locals and parking come from: std and
//! `parking_lot` normally, `loom` under `--cfg loom` so that the loom models in
//! `tests/loom_*.rs` and `src/` explore every interleaving of the real code.

#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::thread_local;

#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
#[cfg(loom)]
pub(crate) use loom::thread_local;

use std::time::Instant;

pub(crate) mod slot;
pub(crate) mod task;
pub(crate) mod timer;

/// A mutex whose `lock` returns the guard directly (no poisoning).
#[cfg(not(loom))]
pub(crate) type Mutex<T> = parking_lot::Mutex<T>;

/// What [`Mutex::lock`] returns.
#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

/// What [`Mutex::lock`] returns.
#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

/// A mutex whose `lock` returns the guard directly (no poisoning).
#[cfg(loom)]
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.0.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Blocks the current thread on `key` (the address of a waiter it owns) while
/// `should_park` holds, until `unpark(key)` or `deadline`. Returns `true` if it
/// returned because the deadline passed. Spurious returns are allowed: callers
/// re-check their condition in a loop.
#[cfg(not(loom))]
pub(crate) fn park(key: usize, should_park: impl FnOnce() -> bool, deadline: Option<Instant>) -> bool {
    // SAFETY: `key` is the address of a `Waiter` owned (through an `Arc`) by
    // the calling thread, so no other synchronisation primitive parks on it;
    // the callbacks neither panic nor call back into the parking lot.
    let result = unsafe {
        parking_lot_core::park(key, should_park, || {}, |_, _| {}, parking_lot_core::DEFAULT_PARK_TOKEN, deadline)
    };
    matches!(result, parking_lot_core::ParkResult::TimedOut)
}

/// Wakes the thread parked on `key`, if any.
#[cfg(not(loom))]
pub(crate) fn unpark(key: usize) {
    // SAFETY: `key` is a waiter's address (see `park`); unparking a key that
    // nobody parks on, or waking a thread early, is harmless because every
    // parked thread re-checks its condition.
    unsafe {
        parking_lot_core::unpark_one(key, |_| parking_lot_core::DEFAULT_UNPARK_TOKEN);
    }
}

/// Wakes every thread parked on `key`.
#[cfg(not(loom))]
pub(crate) fn unpark_all(key: usize) {
    // SAFETY: unparking by address only, with no callbacks; waking a thread
    // that parked on the same address for another reason is harmless because
    // every parked thread re-checks its condition.
    unsafe {
        parking_lot_core::unpark_all(key, parking_lot_core::DEFAULT_UNPARK_TOKEN);
    }
}

/// Under loom, waking is implied by the parked thread's next yield.
#[cfg(loom)]
pub(crate) fn unpark_all(_key: usize) {}

/// Under loom a park is a yield: the model explores the interleavings, and a
/// timed park reports that its deadline passed.
#[cfg(loom)]
pub(crate) fn park(_key: usize, should_park: impl FnOnce() -> bool, deadline: Option<Instant>) -> bool {
    if should_park() {
        loom::thread::yield_now();
    }
    deadline.is_some()
}

/// Under loom, waking is implied by the parked thread's next yield.
#[cfg(loom)]
pub(crate) fn unpark(_key: usize) {}

/// One step of a bounded spin-then-yield back-off; returns `false` once the
/// caller should stop spinning and queue. Loom explores interleavings itself,
/// so under loom nobody spins.
#[inline]
pub(crate) fn spin(step: u32, limit: u32) -> bool {
    if cfg!(loom) || step >= limit {
        return false;
    }
    if step < 4 {
        for _ in 0..(4u32 << step) {
            std::hint::spin_loop();
        }
    } else {
        std::thread::yield_now();
    }
    true
}
