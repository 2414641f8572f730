//! The durable log: topics of append-only, memory-mapped, checksummed
//! segments, with crash recovery and consumer groups. Byte layout and
//! recovery rules: `docs/FORMAT.md`.
//!
//! - `format.rs`: the constants of `docs/FORMAT.md` and little-endian helpers.
//! - `clock.rs`: the clocks the queues read: the system's, or a simulated disk's.
//! - `record.rs`: `Message`, `Record`, `Offset`, and the frame codec.
//! - `config.rs`: `TopicConfig`, `Durability`, and `topic.conf`.
//! - `scan.rs`: the one frame scanner, over a mapping or positional reads.
//! - `segment.rs`: one segment file: header, frames, sparse index, scans.
//! - `names.rs`: the checks of topic and group names (they become file names).
//! - `pattern.rs`: `KeyPattern`, RabbitMQ topic-binding patterns over record keys.
//! - `slots.rs`: checksummed small files (two-slot offsets and checkpoint; write-once meta).
//! - `topic.rs`: appending, reading, rolling, group commit, retention, close.
//! - `publish.rs`: `Publish`, a publish from async code (the flusher leads a `Sync` topic's sync).
//! - `recovery.rs`: opening a topic directory after a clean or unclean shutdown.
//! - `doorbell.rs`: the committed offset, and waiting until it moves, as a thread or a task (no lost wake-ups).
//! - `subscription.rs`: consumer groups: cursors, waiting, commits.
//! - `commit.rs`: a group's offset file, and `commit_async` (the flusher writes it for tasks).
//! - `records.rs`: a subscription's async forms: `next_async`, the `Records` stream, `Progress`.
//! - `remote.rs` (feature `postgres`): a topic and its subscriptions kept in PostgreSQL.
//! - `backup.rs`: a topic's side of a backup: the cut, and the copy of the log up to it.

pub(crate) mod backup;
pub(crate) mod clock;
pub(crate) mod commit;
pub(crate) mod config;
pub(crate) mod doorbell;
pub(crate) mod format;
pub(crate) mod names;
pub(crate) mod pattern;
pub(crate) mod publish;
pub(crate) mod record;
pub(crate) mod records;
pub(crate) mod recovery;
#[cfg(feature = "postgres")]
pub(crate) mod remote;
pub(crate) mod scan;
pub(crate) mod segment;
pub(crate) mod slots;
pub(crate) mod subscription;
pub(crate) mod topic;

pub use commit::Commit;
pub use config::{Durability, FLUSH_INTERVAL_MIN, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, TopicConfig};
pub use pattern::KeyPattern;
pub use publish::Publish;
pub use record::{Headers, Message, Offset, Record};
pub use records::{NextRecord, Progress, Records};
pub use recovery::{RecoveryMode, RecoveryReport};
pub use subscription::{StartAt, Subscription};
pub use topic::TopicInfo;
