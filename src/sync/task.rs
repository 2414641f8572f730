//! Whether the current thread is inside the `poll` of one of tollgate's
//! futures (or a handler that a tollgate run loop polls). A thread-owned lock
//! taken there would belong to every task the executor runs on that thread,
//! so such calls are refused (`LockError::ThreadOwnerInTask`).
//!
//! Code that runs outside our polls (a plain `tokio::spawn`) is not seen;
//! the hazard is documented on `LockManager`.

use std::cell::Cell;

use super::thread_local;

#[cfg(not(loom))]
thread_local! {
    static POLL_DEPTH: Cell<u32> = const { Cell::new(0) };
}
#[cfg(loom)]
thread_local! {
    static POLL_DEPTH: Cell<u32> = Cell::new(0);
}

/// Marks the current thread as polling a task until dropped.
#[derive(Debug)]
pub(crate) struct Polling(());

/// Enters a poll; nests.
pub(crate) fn enter() -> Polling {
    POLL_DEPTH.with(|depth| depth.set(depth.get() + 1));
    Polling(())
}

impl Drop for Polling {
    fn drop(&mut self) {
        POLL_DEPTH.with(|depth| depth.set(depth.get() - 1));
    }
}

/// Whether the current thread is inside a tollgate poll.
pub(crate) fn inside() -> bool {
    POLL_DEPTH.with(|depth| depth.get() > 0)
}
