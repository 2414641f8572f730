//! Interruption: a [`CancelToken`] any thread can cancel, and the interrupt
//! signal of a [`Session`](crate::Session). Both wake the waits registered on
//! them; the waits then give up with [`LockError::Interrupted`](crate::LockError::Interrupted).

use crate::sync::{Arc, AtomicBool, Mutex, Ordering, unpark};

use super::wait::Waiter;

/// A flag plus the waiters to wake when it is raised.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    raised: AtomicBool,
    waiters: Mutex<Vec<Arc<Waiter>>>,
}

impl Signal {
    /// Raises the flag and wakes every registered waiter.
    pub(crate) fn raise(&self) {
        // Raised before the waiters are read: a waiter registering after this
        // lock sees the flag before it parks.
        self.raised.store(true, Ordering::SeqCst);
        for waiter in self.waiters.lock().iter() {
            unpark(waiter.park_key());
        }
    }

    /// Whether the flag is raised.
    pub(crate) fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// Lowers the flag, returning whether it was raised.
    pub(crate) fn take(&self) -> bool {
        self.raised.load(Ordering::SeqCst) && self.raised.swap(false, Ordering::SeqCst)
    }

    pub(crate) fn register(&self, waiter: &Arc<Waiter>) {
        self.waiters.lock().push(Arc::clone(waiter));
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
        self.signal.raise();
    }

    /// Whether [`cancel`](Self::cancel) has been called.
    pub fn is_cancelled(&self) -> bool {
        self.signal.is_raised()
    }

    pub(crate) fn signal(&self) -> &Signal {
        &self.signal
    }
}
