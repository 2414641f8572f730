//! The lock manager: keyed locks with owners, reentrancy, timeouts,
//! interruption, leases, fencing tokens, FIFO waiting and deadlock detection.
//!
//! - `manager.rs`: the public API; routes an acquisition fast path → spin → queue.
//! - `table.rs`: the sharded, epoch-reclaimed table of entries, one per key.
//! - `word.rs`: the lock word's states and the lock-free fast paths.
//! - `wait.rs`: the wait queue, hand-off to waiters, leases.
//! - `pending.rs`: how a queued acquisition waits (one step function; threads park between steps).
//! - `deadlock.rs`: the wait-for graph and its cycle search.
//! - `cancel.rs`: cancel tokens and session interrupts.
//! - `guard.rs`: owners, fencing tokens, guards and sessions.
//! - `future.rs`: the async forms of a session's acquisitions.
//! - `remote.rs`: the same operations on locks kept in PostgreSQL (feature `postgres`).

mod cancel;
mod deadlock;
mod future;
mod guard;
mod manager;
mod pending;
pub(crate) mod remote;
mod table;
mod wait;
mod word;

pub use cancel::CancelToken;
pub use future::{Acquire, AcquireAll};
pub use guard::{FencingToken, Interrupter, LockGuard, LockSet, OwnerKind, Session, SessionOwned, ThreadOwned};
pub use manager::{
    DEADLOCK_THRESHOLD_MIN, KEY_BYTES_MAX, LEASE_MAX, LOCK_ALL_KEYS_MAX, LockConfig, LockManager, LockMode,
    LockRequest, LockStats, SHARDS_MAX, SPIN_LIMIT_MAX, Stamp,
};
