//! Queue semantics on the log: worker groups with per-message
//! acknowledgement, redelivery, dead letters, delays and priorities;
//! and publishing under locks.
//!
//! - `config.rs`: `QueueConfig`, its limits and its text form.
//! - `worker.rs`: `Worker`: a look at the group, the blocking receives, parking for work, the group's metrics.
//! - `run.rs`: run loops: `Worker::run` and `run_async`, `Settle`, `RunConfig`, `Shutdown`, `RunReport`.
//! - `receive.rs`: a worker's async forms: `receive_async`, `receive_batch_async`, the `Deliveries` stream.
//! - `delivery.rs`: `Delivery` and its settles: ack, nack, reject, extend, drop.
//! - `settle.rs`: `Settling`, the async settles (the flusher syncs the journal for a `Sync` topic).
//! - `group.rs`: `Group`: opening it, the state behind its one mutex, journaling and syncing.
//! - `window.rs`: the window state machine (ready, delayed, in flight, leaving) and its counts, without I/O.
//! - `wake.rs`: the wake-up protocol between waiting workers and give-backs, with its loom model.
//! - `dead_letter.rs`: the dead-letter topic's config; building, publishing and retrying dead letters.
//! - `transaction.rs`: `Transaction`, locks held across an atomic publish (`Topic::transaction`).
//! - `remote.rs` (feature `postgres`): a worker group kept in PostgreSQL: receives, waits, settles.
//! - `ranges.rs`: the settled offsets above a group's low-water mark.
//! - `journal/`: a group's state file and journal on disk.

mod config;
pub(crate) mod dead_letter;
mod delivery;
pub(crate) mod group;
pub(crate) mod journal;
mod ranges;
mod receive;
#[cfg(feature = "postgres")]
pub(crate) mod remote;
mod run;
mod settle;
mod transaction;
mod wake;
mod window;
mod worker;

pub use config::{ATTEMPTS_MAX, DELAY_MAX, PRIORITY_MAX, QueueConfig, VISIBILITY_MAX, WINDOW_MAX};
pub use delivery::Delivery;
pub use receive::{Deliveries, Receive, ReceiveBatch};
pub use run::{BATCH_MAX, CONCURRENCY_MAX, RunAsync, RunConfig, RunEnd, RunReport, Settle, Shutdown};
pub use settle::Settling;
pub use transaction::Transaction;
pub use window::QueueMetrics;
pub use worker::Worker;
