//! Queue semantics on the log: worker groups with per-message
//! acknowledgement, redelivery, dead letters, delays and priorities;
//! and publishing under locks.
//!
//! - `config.rs`: `QueueConfig`, its limits and its text form.
//! - `ranges.rs`: the settled offsets above a group's low-water mark.
//! - `journal/`: a group's state file and journal on disk.
//! - `worker.rs`: `Worker`, `Delivery`, and the group state they share.
//! - `transaction.rs`: `Topic::publish_locked`.

pub(crate) mod config;
pub(crate) mod journal;
pub(crate) mod ranges;
pub(crate) mod transaction;
pub(crate) mod worker;

pub use config::{ATTEMPTS_MAX, DELAY_MAX, PRIORITY_MAX, QueueConfig, VISIBILITY_MAX, WINDOW_MAX};
pub use transaction::Transaction;
pub use worker::{Delivery, QueueMetrics, Worker};
