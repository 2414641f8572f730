//! Interruption: a [`CancelToken`] any thread can cancel, and the interrupt
//! signal of a [`Session`](crate::Session). Both wake the waits registered on
//! them; the waits then give up with [`LockError::Interrupted`](crate::LockError::Interrupted).

use crate::sync::{Arc, AtomicBool, AtomicU64, Mutex, Ordering};

use super::wait::Waiter;

/// What wakes waits besides their grant: a cancel token or a session's
/// interrupt. A raise bumps `generation` and wakes every registered wait; a
/// wait is interrupted when the generation moved since it began (a session
/// interrupt) or is non-zero at all (a cancel token, which stays cancelled).
#[derive(Debug, Default)]
pub(crate) struct Signal {
    generation: AtomicU64,
    /// A session interrupt raised while none of its waits was registered,
    /// kept for the next wait.
    pending: AtomicBool,
    waiters: Mutex<Vec<Arc<Waiter>>>,
}

impl Signal {
    /// Cancels every current and future wait (cancel tokens).
    pub(crate) fn cancel(&self) {
        let waiters = self.waiters.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        for waiter in waiters.iter() {
            waiter.notify();
        }
    }

    /// Whether [`cancel`](Self::cancel) was ever called.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.generation.load(Ordering::SeqCst) != 0
    }

    /// Interrupts every registered wait, or the next wait if none is
    /// registered (sessions). Under the mutex, so a wait registers either
    /// before (and sees the generation move) or after (and finds `pending`).
    pub(crate) fn interrupt(&self) {
        let waiters = self.waiters.lock();
        if waiters.is_empty() {
            self.pending.store(true, Ordering::SeqCst);
            return;
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        for waiter in waiters.iter() {
            waiter.notify();
        }
    }

    /// Leaves an interrupt for the next wait (one that lost a race to a grant).
    pub(crate) fn defer(&self) {
        self.pending.store(true, Ordering::SeqCst);
    }

    /// Registers a wait. Returns the generation it begins in, or `None` if it
    /// consumed a pending interrupt and is interrupted at once.
    pub(crate) fn register(&self, waiter: &Arc<Waiter>) -> Option<u64> {
        let mut waiters = self.waiters.lock();
        waiters.push(Arc::clone(waiter));
        if self.pending.swap(false, Ordering::SeqCst) {
            return None;
        }
        Some(self.generation.load(Ordering::SeqCst))
    }

    /// Whether a raise happened since `generation`.
    pub(crate) fn moved_since(&self, generation: u64) -> bool {
        self.generation.load(Ordering::SeqCst) != generation
    }

    pub(crate) fn deregister(&self, waiter: &Arc<Waiter>) {
        let mut waiters = self.waiters.lock();
        if let Some(position) = waiters.iter().position(|w| Arc::ptr_eq(w, waiter)) {
            waiters.swap_remove(position);
        }
    }
}

/// Cancels lock waits from any thread.
///
/// Pass it to a request with [`LockRequest::cancel`](crate::LockRequest::cancel);
/// [`cancel`](Self::cancel) wakes every wait using it with
/// [`LockError::Interrupted`](crate::LockError::Interrupted). Cancellation is
/// permanent: later waits with the same token fail at once. Clones share the
/// same state.
///
/// ```
/// use std::time::Duration;
/// use tollgate::{CancelToken, LockError, LockManager, LockRequest};
///
/// let locks = LockManager::new();
/// let held = locks.lock("order:1001")?;
/// let token = CancelToken::new();
/// std::thread::scope(|s| {
///     let waiter = s.spawn(|| {
///         locks.acquire("order:1001", LockRequest::exclusive().cancel(&token)).map(|_| ())
///     });
///     std::thread::sleep(Duration::from_millis(10));
///     token.cancel();
///     assert_eq!(waiter.join().unwrap(), Err(LockError::Interrupted));
/// });
/// drop(held);
/// # Ok::<(), LockError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    signal: Arc<Signal>,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels every current and future wait that uses this token.
    pub fn cancel(&self) {
        self.signal.cancel();
    }

    /// Whether [`cancel`](Self::cancel) has been called.
    pub fn is_cancelled(&self) -> bool {
        self.signal.is_cancelled()
    }

    pub(crate) fn signal(&self) -> &Signal {
        &self.signal
    }
}
