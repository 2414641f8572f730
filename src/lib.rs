//! tollgate: an embedded lock-and-queue engine for the threads of one process,
//! with the same API on PostgreSQL (feature `postgres`) for several processes:
//! [`Engine::connect`], [`LockManager::connect`], [`Backend`].
//!
//! Two halves:
//!
//! - The **lock manager** ([`LockManager`]): named locks (`"sku:42"`) with
//!   owner ids, reentrancy, timeouts, interruption, leases, fencing tokens,
//!   FIFO waiting, deadlock detection, all-or-nothing multi-key locking and
//!   optimistic read stamps. An uncontended acquire and release is one
//!   compare-and-swap each, with no mutex and no allocation.
//! - The **durable log** ([`Engine`], [`Topic`], [`Subscription`]): topics of
//!   append-only, memory-mapped, checksummed segments with crash recovery,
//!   per-topic [`Durability`] (with group commit), retention, and consumer
//!   groups with committed offsets. The bytes on disk are specified in
//!   `docs/FORMAT.md`.
//! - **Work queues** on the log ([`Worker`], [`Delivery`]): competing workers
//!   in a group, each message acknowledged on its own, retried after a nack
//!   or a visibility timeout, dead-lettered after [`QueueConfig::max_attempts`];
//!   delayed delivery, priorities, routing-key filters ([`KeyPattern`]), and
//!   publishing under locks ([`Transaction`]). Delivery state survives crashes.
//!
//! Locks:
//!
//! ```
//! use std::time::Duration;
//! use tollgate::{LockError, LockManager, LockRequest};
//!
//! let locks = LockManager::new();
//!
//! // Exclusive, blocking; released when the guard drops.
//! let guard = locks.lock("sku:42")?;
//! drop(guard);
//!
//! // Timed, with a lease: if this holder stalls for 5 s, the key moves on and
//! // its fencing token lets storage refuse the stale holder.
//! let guard = locks.acquire(
//!     "sku:42",
//!     LockRequest::exclusive().timeout(Duration::from_millis(50)).lease(Duration::from_secs(5)),
//! )?;
//! let token = guard.fencing_token();
//! guard.renew(Duration::from_secs(5))?;
//! guard.release()?;
//!
//! // Several keys, all or nothing, never deadlocking with other lock_all calls.
//! let set = locks.lock_all(["sku:1", "sku:2", "sku:3"], Duration::from_millis(50))?;
//! assert_eq!(set.len(), 3);
//! drop(set);
//!
//! // Every later grant of a key has a higher fencing token.
//! assert!(locks.lock("sku:42")?.fencing_token() > token);
//! assert_eq!(locks.stats().held, 0);
//! # Ok::<(), LockError>(())
//! ```
//!
//! The log:
//!
//! ```
//! # let dir = tempfile::tempdir().expect("a temporary directory");
//! use std::time::Duration;
//! use tollgate::Engine;
//!
//! let engine = Engine::open(dir.path())?;
//! let orders = engine.topic("orders")?;
//! orders.publish(b"order 1001")?;
//! let mut billing = orders.subscribe("billing")?;
//! let rec = billing.next_timeout(Duration::from_millis(100))?.expect("published above");
//! assert_eq!(rec.payload().as_ref(), b"order 1001");
//! billing.commit()?;
//! # Ok::<(), tollgate::Error>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
// The handles match on their backend; without the feature `postgres` only
// the embedded arm is left.
#![cfg_attr(not(feature = "postgres"), allow(clippy::infallible_destructuring_match, clippy::match_single_binding))]
#![warn(missing_docs)]

mod engine;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod inspect;
mod lock;
mod log;
#[cfg(feature = "postgres")]
mod pg;
mod queue;
mod storage;
mod sync;

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub use engine::{Backend, BackupReport, CleanupReport, Engine, EngineConfig, LOCK_WAIT_DEFAULT, Topic};
pub use error::{
    BackendError, BackendErrorKind, BackupError, CommitError, ConfigError, Corruption, Error, Escaped, IoError,
    LockError, OpenError, PatternError, PublishError, QueueError, ReadError, RunError, SymlinkError, TopicError,
};
pub use lock::*;
pub use log::*;
#[cfg(feature = "postgres")]
pub use pg::{PgConfig, SCHEMA_NAME_MAX, SchemaStatus};
pub use queue::*;
#[cfg(feature = "sim")]
pub use storage::SimDisk;
/// The PostgreSQL client tollgate is built with (feature `postgres`), for
/// [`Topic::publish_in`]: name its types through this re-export, so that
/// the client and its transactions are of the same version.
#[cfg(feature = "postgres")]
pub use tokio_postgres;
