//! Where a task waiting on a lock leaves its `Waker`.
//!
//! The protocol that loses no wake-up: the poller stores its waker here, then
//! checks its condition; the waker of the condition changes it first, then
//! takes the waker out of here and wakes it. If the poller's store comes
//! second, the slot's mutex orders the change before the poller's check, so
//! the poller sees it; otherwise the waker finds the stored waker. A parked
//! thread gets the same guarantee from `park`'s validation under the parking
//! lot's bucket lock.

use std::task::Waker;

use super::Mutex;

/// A task's waker, registered by each poll and taken by a notification.
#[derive(Debug, Default)]
pub(crate) struct WakerSlot {
    waker: Mutex<Option<Waker>>,
}

impl WakerSlot {
    /// Registers `waker` to be woken by the next [`wake`](Self::wake),
    /// replacing one registered before (unless it would wake the same task).
    pub(crate) fn register(&self, waker: &Waker) {
        let mut slot = self.waker.lock();
        match &mut *slot {
            Some(registered) if registered.will_wake(waker) => {}
            other => *other = Some(waker.clone()),
        }
    }

    /// Wakes the registered task, if any (outside the slot's mutex).
    pub(crate) fn wake(&self) {
        let waker = self.waker.lock().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}
