//! The topic's committed offset, and waiting for it to move: publishers
//! set it and notify; caught-up subscribers park on it. A publish costs one fence and
//! one load when nobody waits; no wake-up is ever lost.
//!
//! Protocol (Dekker's, with fences because loom models `fence(SeqCst)`
//! exactly but treats SeqCst accesses as AcqRel):
//!
//! - publish: `value.store(v, Release)` (`set`, under the publisher's lock, so
//!   values only grow); then `fence(SeqCst)`; `waiters.load(Relaxed)`; unpark
//!   everyone if it is non-zero (`notify`, after the lock is released).
//! - wait: `waiters.fetch_add(1, Relaxed)`; `fence(SeqCst)`; park, with the
//!   park's validation (under the parking lot's bucket lock) re-reading
//!   `value`; `waiters.fetch_sub(1, Relaxed)`.
//!
//! The two fences are ordered one way or the other. If the publisher's fence
//! is first, the waiter's read of `value` after its own fence sees `v` and it
//! does not park. If the waiter's fence is first, the publisher's read of
//! `waiters` sees the increment and it unparks; the unpark takes the bucket
//! lock, so it lands either before the validation (which then sees `v`) or
//! after the waiter is parked (which it wakes). `loom_doorbell_*` below check
//! this under every interleaving.

use std::time::Instant;

use crate::sync::{self, AtomicU64, Ordering, fence};

#[derive(Debug)]
pub(crate) struct Doorbell {
    value: AtomicU64,
    waiters: AtomicU64,
}

impl Doorbell {
    pub(crate) fn new(value: u64) -> Self {
        Self { value: AtomicU64::new(value), waiters: AtomicU64::new(0) }
    }

    /// The current value; everything published before it was rung is visible.
    #[inline]
    pub(crate) fn load(&self) -> u64 {
        self.value.load(Ordering::Acquire)
    }

    /// Publishes `value` (Release). Values must be set in increasing order:
    /// callers set under the lock that orders them, and `notify` after
    /// releasing it.
    #[inline]
    pub(crate) fn set(&self, value: u64) {
        self.value.store(value, Ordering::Release);
    }

    /// Wakes every waiter if there is any, after a `set`. Returns whether
    /// anyone was waiting.
    #[inline]
    pub(crate) fn notify(&self) -> bool {
        fence(Ordering::SeqCst);
        let waiting = self.waiters.load(Ordering::Relaxed) > 0;
        if waiting {
            self.wake();
        }
        waiting
    }

    /// Wakes every waiter without changing the value (the topic closed or
    /// was deleted: waiters re-check and leave).
    #[cold]
    pub(crate) fn wake(&self) {
        sync::unpark_all(self.key());
    }

    /// Parks until the value is above `seen`, `stop()` holds, `wake` is
    /// called, or `deadline` passes. Returns `true` if the deadline passed.
    /// May return early; callers re-check.
    pub(crate) fn wait(&self, seen: u64, deadline: Option<Instant>, stop: impl Fn() -> bool) -> bool {
        self.register();
        let timed_out = sync::park(self.key(), || self.should_sleep(seen) && !stop(), deadline);
        self.deregister();
        timed_out
    }

    fn register(&self) {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    fn should_sleep(&self, seen: u64) -> bool {
        self.value.load(Ordering::Relaxed) <= seen
    }

    fn deregister(&self) {
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }

    fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }
}

/// Loom models: run with `RUSTFLAGS="--cfg loom --cfg crossbeam_loom"
/// cargo test --release --lib loom_doorbell`.
#[cfg(all(test, loom))]
mod tests {
    use loom::sync::Arc;
    use loom::thread;

    use super::Doorbell;

    /// A waiter that decides to sleep is always seen by the publisher.
    #[test]
    fn loom_doorbell_never_loses_a_wake_up() {
        loom::model(|| {
            let bell = Arc::new(Doorbell::new(0));
            let waiter = {
                let bell = bell.clone();
                // A waiter that decides to sleep stays registered until it is
                // woken, so the model does not deregister it.
                thread::spawn(move || {
                    bell.register();
                    bell.should_sleep(0)
                })
            };
            bell.set(1);
            let woke = bell.notify();
            let sleeps = waiter.join().unwrap();
            assert!(!sleeps || woke, "the waiter slept on 0 and the publisher saw nobody waiting");
        });
    }

    /// What was written before a ring is visible to whoever sees its value.
    #[test]
    fn loom_doorbell_publishes_data_written_before_the_ring() {
        loom::model(|| {
            let bell = Arc::new(Doorbell::new(0));
            let data = Arc::new(loom::sync::atomic::AtomicU64::new(0));
            let reader = {
                let (bell, data) = (bell.clone(), data.clone());
                thread::spawn(move || {
                    if bell.load() == 1 {
                        assert_eq!(data.load(loom::sync::atomic::Ordering::Relaxed), 42);
                    }
                })
            };
            data.store(42, loom::sync::atomic::Ordering::Relaxed);
            bell.set(1);
            bell.notify();
            reader.join().unwrap();
        });
    }
}
