//! The durable log: topics of append-only, memory-mapped, checksummed
//! segments, with crash recovery and consumer groups. Byte layout and
//! recovery rules: `docs/FORMAT.md`.
//!
//! - `format.rs`: the constants of `docs/FORMAT.md` and little-endian helpers.
//! - `record.rs`: `Message`, `Record`, `Offset`, and the frame codec.
//! - `config.rs`: `TopicConfig`, `Durability`, and `topic.conf`.
//! - `storage.rs`: the file-system seam and its OS implementation (the only mapping `unsafe`).
//! - `sim.rs`: `SimDisk`, a simulated disk with live and durable images, for power-cut tests.
//! - `segment.rs`: one segment file: header, frames, sparse index, scans.
//! - `slots.rs`: checksummed small files (two-slot offsets and checkpoint; write-once meta).
//! - `topic.rs`: appending, reading, rolling, group commit, retention, close.
//! - `recovery.rs`: opening a topic directory after a clean or unclean shutdown.
//! - `doorbell.rs`: the committed offset, and parking until it moves (no lost wake-ups).
//! - `subscription.rs`: consumer groups: cursors, waiting, commits.

pub(crate) mod config;
pub(crate) mod doorbell;
pub(crate) mod format;
pub(crate) mod record;
pub(crate) mod recovery;
pub(crate) mod segment;
pub(crate) mod sim;
pub(crate) mod slots;
pub(crate) mod storage;
pub(crate) mod subscription;
pub(crate) mod topic;

pub use config::{Durability, FLUSH_INTERVAL_MIN, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, TopicConfig};
pub use record::{Headers, Message, Offset, Record};
pub use recovery::RecoveryReport;
pub use sim::SimDisk;
pub use subscription::{StartAt, Subscription};
pub use topic::{Topic, TopicInfo};
