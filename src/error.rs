//! Public error types: one enum per kind of operation, and the crate-wide
//! [`Error`] they all convert into.

use std::time::Duration;

/// Why a lock operation failed.
///
/// Every variant leaves the lock manager unchanged: a failed acquisition holds
/// nothing and leaves no waiter behind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// A non-blocking acquisition found the key held by another owner, or
    /// found other owners already waiting for it (waiters are served first).
    #[error("the key is held by another owner")]
    WouldBlock,
    /// A timed acquisition gave up when its timeout passed.
    #[error("timed out after {} ms waiting for the lock", waited.as_millis())]
    Timeout {
        /// How long the caller waited.
        waited: Duration,
    },
    /// The wait was interrupted by [`Session::interrupt`](crate::Session::interrupt)
    /// or by cancelling the request's [`CancelToken`](crate::CancelToken).
    #[error("the wait for the lock was interrupted")]
    Interrupted,
    /// The waiter was part of a cycle of owners each waiting for a lock held by
    /// the next, and was chosen to break it. Nothing it already held was released.
    #[error("deadlock: this wait closed a cycle over keys {}; it was chosen to give up", keys.join(", "))]
    Deadlock {
        /// The keys waited for along the cycle, starting with this waiter's key.
        keys: Vec<String>,
    },
    /// The grant's lease ran out. The key may since have been granted to
    /// another owner with a higher fencing token; the old grant is void.
    #[error("the lease expired: the lock may now belong to another owner")]
    LeaseExpired,
    /// [`renew`](crate::LockGuard::renew) was called on a grant made without a lease.
    #[error("the lock was granted without a lease, so there is nothing to renew")]
    NoLease,
    /// The owner holds the key shared and asked for it exclusively. Waiting
    /// would deadlock on itself; release the shared lock first.
    #[error("cannot upgrade a shared lock to exclusive: release the shared lock first")]
    Upgrade,
    /// The key is empty or longer than [`KEY_BYTES_MAX`](crate::KEY_BYTES_MAX).
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The [`LockRequest`](crate::LockRequest) asks for something unsupported
    /// or out of range.
    #[error("invalid lock request: {reason}")]
    InvalidRequest {
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Any error tollgate returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A lock operation failed.
    #[error(transparent)]
    Lock(#[from] LockError),
}
