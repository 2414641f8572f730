//! Topics, subscriptions and worker groups as calls of the schema's
//! functions (`sql/2_queues.sql`): one round trip each. How a caller waits
//! between calls (on `tg.topic` notifications and the times these calls
//! return) is the queue layer's.
//!
//! Times that are the server's come back as durations from the server's
//! now (a deadline as `visible_for`, a wait as `retry`): a client adds them
//! to its own clock, read before the call, so it never compares clocks with
//! the server. A message's delivery time is the publisher's wall clock, in
//! microseconds since the Unix epoch, as the embedded log keeps it.

// Until the queue layer's PostgreSQL handles call it, only its tests do.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::PgConfig;
use super::client::millis;
use super::db::{Db, classify};
use super::schema;
use crate::error::{BackendError, BackendErrorKind, OpenError};

/// A topic's id in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TopicId(pub(crate) i32);

/// A worker group's id in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct GroupId(pub(crate) i32);

/// When a topic's writes are durable: `Sync` commits wait for the WAL
/// flush; the others commit with `synchronous_commit = off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TopicDurability {
    /// The embedded `Durability::Buffered`.
    Buffered,
    /// The embedded `Durability::Interval`; kept for the topic's
    /// configuration, committed as `Buffered`.
    Interval(Duration),
    /// The embedded `Durability::Sync`.
    Sync,
}

/// The settings a topic is created with and keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TopicSettings {
    /// When its writes are durable.
    pub(crate) durability: TopicDurability,
    /// Largest message, as the embedded topic counts it (checked by the
    /// caller before publishing).
    pub(crate) max_message_bytes: u32,
    /// The cleanup deletes messages older than this.
    pub(crate) retention_age: Option<Duration>,
    /// The cleanup deletes messages further than this behind the end.
    pub(crate) retention_messages: Option<u64>,
}

impl Default for TopicSettings {
    /// The embedded `TopicConfig::default()`'s: buffered, 1 MiB, kept forever.
    fn default() -> Self {
        TopicSettings {
            durability: TopicDurability::Buffered,
            max_message_bytes: 1 << 20,
            retention_age: None,
            retention_messages: None,
        }
    }
}

/// A topic as `open_topic` found or made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicInfo {
    /// Its id.
    pub(crate) id: TopicId,
    /// Whether this call created it.
    pub(crate) created: bool,
    /// Its settings (those it was created with, whatever this call asked).
    pub(crate) settings: TopicSettings,
    /// Its oldest retained offset.
    pub(crate) oldest: u64,
    /// The offset its next message gets.
    pub(crate) end: u64,
}

/// A message to publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Outgoing {
    /// Its key (`None` or empty: none).
    pub(crate) key: Option<String>,
    /// Its priority for workers, 0 to 9.
    pub(crate) priority: u8,
    /// Held back from workers until then: the publisher's wall clock, in
    /// microseconds since the Unix epoch.
    pub(crate) deliver_at_us: Option<u64>,
    /// Its headers, in order.
    pub(crate) headers: Vec<(String, Bytes)>,
    /// Its payload.
    pub(crate) payload: Bytes,
}

/// A message as the topic holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// Its offset.
    pub(crate) offset: u64,
    /// Its key, if it has one.
    pub(crate) key: Option<String>,
    /// Its priority for workers.
    pub(crate) priority: u8,
    /// Its delivery time, as published.
    pub(crate) deliver_at_us: Option<u64>,
    /// When it was published (the server's clock), in microseconds since
    /// the Unix epoch.
    pub(crate) published_us: u64,
    /// Its headers, in order (a dead letter's `tollgate.dlq.*` first).
    pub(crate) headers: Vec<(String, Bytes)>,
    /// Its payload.
    pub(crate) payload: Bytes,
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Read {
    /// Messages from the offset asked for on, dense and in order.
    Messages {
        /// The messages.
        messages: Vec<Stored>,
        /// The topic's end when read.
        end: u64,
    },
    /// The offset asked for is the end: nothing more yet.
    AtEnd,
    /// The offset asked for is below the oldest retained one.
    NotRetained {
        /// The oldest retained offset.
        oldest: u64,
    },
    /// The offset asked for is past the end.
    NotWritten {
        /// The topic's end.
        end: u64,
    },
    /// There is no such topic.
    NoTopic,
}

/// Where a consumer group's subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Start {
    /// The offset it reads first.
    pub(crate) position: u64,
    /// Its committed offset, if it ever committed.
    pub(crate) committed: Option<u64>,
    /// The topic's oldest retained offset.
    pub(crate) oldest: u64,
    /// The topic's end.
    pub(crate) end: u64,
}

/// What a commit of a consumer group's offset did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// The group's committed offset is this now (never lower than before:
    /// a stale commit changes nothing).
    Committed(u64),
    /// The offset is past the topic's end (the embedded `BeyondEnd`).
    BeyondEnd {
        /// The topic's end.
        end: u64,
    },
    /// There is no such topic.
    NoTopic,
}

/// The settings a worker group is opened with (the embedded `QueueConfig`'s,
/// but the window, which PostgreSQL does not need).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupSettings<'a> {
    /// Its routing-key filter, a `KeyPattern` as written (checked by the
    /// caller); `None`: every message.
    pub(crate) filter: Option<&'a str>,
    /// Its dead-letter topic; `None`: `<topic>.dlq`.
    pub(crate) dead_letter: Option<&'a str>,
    /// Deliveries a message gets before it is dead-lettered.
    pub(crate) max_attempts: u32,
    /// How long a delivery stays with its worker.
    pub(crate) visibility: Duration,
    /// Whether a new group starts after the newest message (the embedded
    /// `StartAt::Latest`) rather than at the oldest retained one.
    pub(crate) start_latest: bool,
}

/// What opening a worker group did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenGroup {
    /// The group is open.
    Opened {
        /// Its id.
        id: GroupId,
        /// Its dead-letter topic.
        dead_letter: TopicId,
        /// Created, reopened as it was, or reopened with new settings.
        how: Opened,
    },
    /// There is no such topic.
    NoTopic,
    /// The dead-letter topic would be the topic itself.
    DeadLetterIsTopic,
}

/// How a worker group was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opened {
    /// Created, with a job for each of this many retained messages.
    Created {
        /// Jobs made for the messages already retained.
        backfilled: u64,
    },
    /// It existed with these settings.
    Same,
    /// It existed with other settings, which these replaced (from now on).
    Changed,
}

/// A message handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claimed {
    /// The message.
    pub(crate) message: Stored,
    /// Which delivery of it this is, from 1.
    pub(crate) attempt: u32,
    /// What its settles present: a later delivery has another.
    pub(crate) receipt: i64,
    /// How long it stays in flight, from the server's now when it answered.
    pub(crate) visible_for: Duration,
}

/// What a receive got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Receive {
    /// Deliveries, in the order a worker takes them.
    Taken {
        /// The deliveries.
        deliveries: Vec<Claimed>,
        /// Messages out of attempts dead-lettered on the way.
        dead_lettered: u32,
    },
    /// Nothing to take now.
    Nothing {
        /// Messages out of attempts dead-lettered on the way.
        dead_lettered: u32,
        /// When a job may be visible (a delay, a retry or a deadline ends),
        /// from the server's now; `None` if the group has no job at all.
        retry: Option<Duration>,
    },
    /// There is no such worker group.
    NoGroup,
}

/// What a settle (ack, nack, reject, extend) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Done.
    Done,
    /// Done: the message went to the dead-letter topic (a reject, or a
    /// nack of the last attempt).
    DeadLettered,
    /// The receipt is stale: the message was settled already, or the
    /// delivery's deadline passed (and it may have been delivered again).
    /// Nothing changed: the embedded `QueueError::Expired`.
    Stale,
}

/// A worker group's jobs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct GroupCounts {
    /// Receivable now.
    pub(crate) ready: u64,
    /// Waiting for a delivery or retry time.
    pub(crate) delayed: u64,
    /// Handed to a worker, before their deadline.
    pub(crate) in_flight: u64,
}

/// What the cleanup deleted from one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cleaned {
    /// The topic's name.
    pub(crate) topic: String,
    /// Messages deleted.
    pub(crate) deleted: u64,
    /// Its oldest retained offset now.
    pub(crate) oldest: u64,
}

/// The latest time PostgreSQL and the calls take (the end of year 9999),
/// in microseconds since the Unix epoch: delivery times are cut to it.
const LAST_US: u64 = 253_402_300_799_999_999;

const PUBLISH: &str = "SELECT first_offset, count FROM tg.publish($1, $2, $3, $4, $5, $6, $7, $8, $9)";

const RECEIVE: &str = "SELECT \"offset\", attempt, receipt, visible_ms, key, priority, not_before_us, published_us, \
                       header_names, header_values, payload, retry_ms, dead_lettered FROM tg.receive($1, $2, true)";

const READ: &str = "SELECT \"offset\", key, priority, not_before_us, published_us, header_names, header_values, \
                    payload, oldest, next_offset FROM tg.read($1, $2, $3)";

/// The topics, subscriptions and worker groups of one schema.
#[derive(Debug)]
pub(crate) struct TopicStore {
    db: Arc<Db>,
}

impl TopicStore {
    /// Prepares the schema and connects.
    pub(crate) async fn connect(config: PgConfig) -> Result<TopicStore, OpenError> {
        schema::prepare(&config).await?;
        Ok(TopicStore::new(Arc::new(Db::new(config))))
    }

    /// A store over connections (to a prepared schema) shared with others.
    pub(crate) fn new(db: Arc<Db>) -> TopicStore {
        TopicStore { db }
    }

    /// The topic `name`; if `create` has settings and it does not exist,
    /// created with them. `None`: no such topic (and `create` was `None`).
    pub(crate) async fn open_topic(
        &self,
        name: &str,
        create: Option<&TopicSettings>,
    ) -> Result<Option<TopicInfo>, BackendError> {
        let settings = create.copied().unwrap_or_default();
        let (durability, interval): (i16, Option<i64>) = match settings.durability {
            TopicDurability::Buffered => (0, None),
            TopicDurability::Interval(every) => (1, Some(millis(every).max(1))),
            TopicDurability::Sync => (2, None),
        };
        let max_message_bytes = i32::try_from(settings.max_message_bytes).unwrap_or(i32::MAX);
        let retention_ms = settings.retention_age.map(|age| millis(age).max(1));
        let retention_messages = settings.retention_messages.map(|n| i64::try_from(n.max(1)).unwrap_or(i64::MAX));
        let row = self
            .db
            .query_one(
                "SELECT outcome, id, durability, flush_interval_ms, max_message_bytes, retention_ms, \
                 retention_messages, oldest, next_offset FROM tg.open_topic($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &name,
                    &create.is_some(),
                    &durability,
                    &interval,
                    &max_message_bytes,
                    &retention_ms,
                    &retention_messages,
                ],
            )
            .await?;
        let outcome: i16 = row.get(0);
        if outcome == 2 {
            return Ok(None);
        }
        let durability = match row.get::<_, i16>(2) {
            0 => TopicDurability::Buffered,
            1 => TopicDurability::Interval(ms(row.get::<_, Option<i64>>(3).unwrap_or(1))),
            _ => TopicDurability::Sync,
        };
        Ok(Some(TopicInfo {
            id: TopicId(row.get(1)),
            created: outcome == 0,
            settings: TopicSettings {
                durability,
                max_message_bytes: u32::try_from(row.get::<_, i32>(4)).unwrap_or(0),
                retention_age: row.get::<_, Option<i64>>(5).map(ms),
                retention_messages: row.get::<_, Option<i64>>(6).map(offset),
            },
            oldest: offset(row.get(7)),
            end: offset(row.get(8)),
        }))
    }

    /// The topic's retained messages, `oldest..end`; `None`: no such topic.
    pub(crate) async fn bounds(&self, topic: TopicId) -> Result<Option<Range<u64>>, BackendError> {
        let row = self.db.query_one("SELECT oldest, next_offset FROM tg.topic_bounds($1)", &[&topic.0]).await?;
        let (oldest, end): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
        Ok(oldest.zip(end).map(|(oldest, end)| offset(oldest)..offset(end)))
    }

    /// Publishes `messages` to `topic` atomically, in their own
    /// transaction, at dense offsets (returned); every worker group whose
    /// filter matches gets their jobs. `None`: no such topic. A topic that
    /// is not `Sync` commits without waiting for the WAL flush.
    pub(crate) async fn publish(
        &self,
        topic: TopicId,
        messages: &[Outgoing],
    ) -> Result<Option<Range<u64>>, BackendError> {
        let batch = Batch::new(messages);
        let rows = self.db.query(PUBLISH, &batch.params(&topic.0, &true)).await?;
        published(rows)
    }

    /// Publishes `messages` to `topic` inside the caller's transaction on
    /// `client` (a `tokio_postgres` transaction, or a client that began
    /// one): they commit or roll back with it, and its commit settings are
    /// the caller's. The topic's row stays locked until the caller's
    /// transaction ends, holding up the topic's other publishers: make it
    /// its last statement.
    pub(crate) async fn publish_in(
        &self,
        client: &impl GenericClient,
        topic: TopicId,
        messages: &[Outgoing],
    ) -> Result<Option<Range<u64>>, BackendError> {
        let batch = Batch::new(messages);
        let rows = client.query(&self.db.sql(PUBLISH), &batch.params(&topic.0, &false)).await.map_err(classify)?;
        published(rows)
    }

    /// Up to `max` messages of `topic` from offset `from` on.
    pub(crate) async fn read(&self, topic: TopicId, from: u64, max: u32) -> Result<Read, BackendError> {
        let from_ = signed(from);
        let max = i32::try_from(max.max(1)).unwrap_or(i32::MAX);
        let rows = self.db.query(READ, &[&topic.0, &from_, &max]).await?;
        let Some(first) = rows.first() else { return Ok(Read::NoTopic) };
        let (oldest, end) = (offset(first.get(8)), offset(first.get(9)));
        if first.get::<_, Option<i64>>(0).is_none() {
            return Ok(if from < oldest {
                Read::NotRetained { oldest }
            } else if from > end {
                Read::NotWritten { end }
            } else {
                Read::AtEnd
            });
        }
        let messages = rows.iter().map(|row| stored(row, 0, 1, 2, 3, 4, 5, 6, 7)).collect::<Result<_, _>>()?;
        Ok(Read::Messages { messages, end })
    }

    /// Where consumer group `group`'s subscription to `topic` starts: its
    /// committed offset (cut to the end), or without one the oldest
    /// retained offset, or with `latest` the end. `None`: no such topic.
    pub(crate) async fn subscription_start(
        &self,
        topic: TopicId,
        group: &str,
        latest: bool,
    ) -> Result<Option<Start>, BackendError> {
        let row = self
            .db
            .query_one(
                "SELECT start, committed, oldest, next_offset FROM tg.subscription_start($1, $2, $3)",
                &[&topic.0, &group, &latest],
            )
            .await?;
        let Some(position) = row.get::<_, Option<i64>>(0) else { return Ok(None) };
        Ok(Some(Start {
            position: offset(position),
            committed: row.get::<_, Option<i64>>(1).map(offset),
            oldest: offset(row.get(2)),
            end: offset(row.get(3)),
        }))
    }

    /// Commits `at` for consumer group `group` of `topic`: it has processed
    /// every message before it. The committed offset never moves back.
    pub(crate) async fn commit(&self, topic: TopicId, group: &str, at: u64) -> Result<Commit, BackendError> {
        let row = self
            .db
            .query_one("SELECT status, committed FROM tg.commit_offset($1, $2, $3)", &[&topic.0, &group, &signed(at)])
            .await?;
        Ok(match row.get::<_, i16>(0) {
            0 => Commit::Committed(offset(row.get(1))),
            1 => Commit::BeyondEnd { end: offset(row.get(1)) },
            2 => Commit::NoTopic,
            other => return Err(unexpected("commit_offset", other)),
        })
    }

    /// Consumer group `group`'s committed offset in `topic`, if it has one.
    pub(crate) async fn committed(&self, topic: TopicId, group: &str) -> Result<Option<u64>, BackendError> {
        let row = self.db.query_one("SELECT tg.committed_offset($1, $2)", &[&topic.0, &group]).await?;
        Ok(row.get::<_, Option<i64>>(0).map(offset))
    }

    /// Opens worker group `name` of `topic` with `settings`, creating it
    /// (and its dead-letter topic) if needed. A new group gets jobs for the
    /// retained messages (unless it starts at the latest); reopening adds
    /// none, and new settings apply from now on.
    pub(crate) async fn open_group(
        &self,
        topic: TopicId,
        name: &str,
        settings: &GroupSettings<'_>,
    ) -> Result<OpenGroup, BackendError> {
        let max_attempts = i32::try_from(settings.max_attempts).unwrap_or(i32::MAX);
        let row = self
            .db
            .query_one(
                "SELECT outcome, id, dead_letter, backfilled FROM tg.open_work_group($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &topic.0,
                    &name,
                    &settings.filter,
                    &settings.dead_letter,
                    &max_attempts,
                    &millis(settings.visibility),
                    &settings.start_latest,
                ],
            )
            .await?;
        let opened = |how| OpenGroup::Opened { id: GroupId(row.get(1)), dead_letter: TopicId(row.get(2)), how };
        Ok(match row.get::<_, i16>(0) {
            0 => opened(Opened::Created { backfilled: offset(row.get(3)) }),
            1 => opened(Opened::Same),
            2 => opened(Opened::Changed),
            3 => OpenGroup::NoTopic,
            4 => OpenGroup::DeadLetterIsTopic,
            other => return Err(unexpected("open_work_group", other)),
        })
    }

    /// Up to `max` deliveries for `group`: the best visible jobs (highest
    /// priority, then oldest), each in flight for the group's visibility
    /// timeout; jobs out of attempts are dead-lettered on the way.
    pub(crate) async fn receive(&self, group: GroupId, max: u32) -> Result<Receive, BackendError> {
        let max = i32::try_from(max).unwrap_or(i32::MAX);
        let rows = self.db.query(RECEIVE, &[&group.0, &max]).await?;
        let Some(first) = rows.first() else { return Ok(Receive::NoGroup) };
        let dead_lettered = u32::try_from(first.get::<_, i32>(12)).unwrap_or(0);
        if first.get::<_, Option<i64>>(0).is_none() {
            return Ok(Receive::Nothing { dead_lettered, retry: first.get::<_, Option<i64>>(11).map(ms) });
        }
        let deliveries = rows
            .iter()
            .map(|row| {
                Ok(Claimed {
                    message: stored(row, 0, 4, 5, 6, 7, 8, 9, 10)?,
                    attempt: u32::try_from(row.get::<_, i32>(1)).unwrap_or(0),
                    receipt: row.get(2),
                    visible_for: ms(row.get(3)),
                })
            })
            .collect::<Result<_, BackendError>>()?;
        Ok(Receive::Taken { deliveries, dead_lettered })
    }

    /// Milliseconds until a job of `group` may be received (zero: now);
    /// `None` if it has no job.
    pub(crate) async fn next_visible(&self, group: GroupId) -> Result<Option<Duration>, BackendError> {
        let row = self.db.query_one("SELECT tg.next_visible($1)", &[&group.0]).await?;
        Ok(row.get::<_, Option<i64>>(0).map(ms))
    }

    /// Acknowledges delivery `receipt` of the message at `at`: done.
    pub(crate) async fn ack(&self, group: GroupId, at: u64, receipt: i64) -> Result<Settled, BackendError> {
        let row = self.db.query_one("SELECT tg.ack($1, $2, $3, true)", &[&group.0, &signed(at), &receipt]).await?;
        settled("ack", &row)
    }

    /// Gives delivery `receipt` of the message at `at` back as a failed
    /// attempt: visible again after `retry_after`, or dead-lettered with
    /// `reason` if it was the last attempt.
    pub(crate) async fn nack(
        &self,
        group: GroupId,
        at: u64,
        receipt: i64,
        retry_after: Duration,
        reason: &str,
    ) -> Result<Settled, BackendError> {
        let row = self
            .db
            .query_one(
                "SELECT tg.nack($1, $2, $3, $4, $5, true)",
                &[&group.0, &signed(at), &receipt, &millis(retry_after), &reason],
            )
            .await?;
        settled("nack", &row)
    }

    /// Dead-letters the message at `at` (delivery `receipt`) with `reason`.
    pub(crate) async fn reject(
        &self,
        group: GroupId,
        at: u64,
        receipt: i64,
        reason: &str,
    ) -> Result<Settled, BackendError> {
        let row = self
            .db
            .query_one("SELECT tg.reject($1, $2, $3, $4, true)", &[&group.0, &signed(at), &receipt, &reason])
            .await?;
        settled("reject", &row)
    }

    /// Moves the deadline of delivery `receipt` of the message at `at` to
    /// `by` from the server's now.
    pub(crate) async fn extend(
        &self,
        group: GroupId,
        at: u64,
        receipt: i64,
        by: Duration,
    ) -> Result<Settled, BackendError> {
        let row = self
            .db
            .query_one("SELECT tg.extend($1, $2, $3, $4, true)", &[&group.0, &signed(at), &receipt, &millis(by)])
            .await?;
        settled("extend", &row)
    }

    /// `group`'s jobs now: ready, delayed, in flight.
    pub(crate) async fn counts(&self, group: GroupId) -> Result<GroupCounts, BackendError> {
        let row =
            self.db.query_one("SELECT ready, delayed, in_flight FROM tg.work_group_counts($1)", &[&group.0]).await?;
        Ok(GroupCounts { ready: offset(row.get(0)), delayed: offset(row.get(1)), in_flight: offset(row.get(2)) })
    }

    /// Retention: deletes, topic by topic, the oldest messages past their
    /// topic's retention that no worker group still has a job for, `batch`
    /// at most per topic and transaction, until none is left (or `rounds`
    /// transactions ran). What each topic lost, in topic order.
    pub(crate) async fn cleanup(&self, batch: u32, rounds: u32) -> Result<Vec<Cleaned>, BackendError> {
        let limit = i32::try_from(batch.max(1)).unwrap_or(i32::MAX);
        let mut cleaned: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for _ in 0..rounds.max(1) {
            let rows = self.db.query("SELECT topic, deleted, oldest, more FROM tg.cleanup($1)", &[&limit]).await?;
            let mut more = false;
            for row in &rows {
                let entry = cleaned.entry(row.get(0)).or_default();
                entry.0 += offset(row.get(1));
                entry.1 = offset(row.get(2));
                more |= row.get::<_, bool>(3);
            }
            if !more {
                break;
            }
        }
        Ok(cleaned.into_iter().map(|(topic, (deleted, oldest))| Cleaned { topic, deleted, oldest }).collect())
    }
}

/// A batch's messages as the arrays `tg.publish` takes, borrowed from them.
struct Batch<'a> {
    keys: Vec<Option<&'a str>>,
    priorities: Vec<i16>,
    deliver_at_us: Vec<Option<i64>>,
    payloads: Vec<&'a [u8]>,
    header_of: Vec<i32>,
    header_names: Vec<&'a str>,
    header_values: Vec<&'a [u8]>,
}

impl<'a> Batch<'a> {
    fn new(messages: &'a [Outgoing]) -> Batch<'a> {
        let mut batch = Batch {
            keys: Vec::with_capacity(messages.len()),
            priorities: Vec::with_capacity(messages.len()),
            deliver_at_us: Vec::with_capacity(messages.len()),
            payloads: Vec::with_capacity(messages.len()),
            header_of: Vec::new(),
            header_names: Vec::new(),
            header_values: Vec::new(),
        };
        for (i, message) in messages.iter().enumerate() {
            batch.keys.push(message.key.as_deref());
            batch.priorities.push(i16::from(message.priority));
            batch.deliver_at_us.push(message.deliver_at_us.map(|us| signed(us.min(LAST_US))));
            batch.payloads.push(&message.payload);
            for (name, value) in &message.headers {
                batch.header_of.push(i32::try_from(i + 1).unwrap_or(i32::MAX));
                batch.header_names.push(name);
                batch.header_values.push(value);
            }
        }
        batch
    }

    /// The parameters of [`PUBLISH`].
    fn params<'b>(&'b self, topic: &'b i32, autocommit: &'b bool) -> [&'b (dyn ToSql + Sync); 9] {
        [
            topic,
            &self.keys,
            &self.priorities,
            &self.deliver_at_us,
            &self.payloads,
            &self.header_of,
            &self.header_names,
            &self.header_values,
            autocommit,
        ]
    }
}

/// The offsets `tg.publish` answered.
fn published(rows: Vec<Row>) -> Result<Option<Range<u64>>, BackendError> {
    let row = rows.first().ok_or_else(|| unexpected_rows("publish"))?;
    let Some(first) = row.get::<_, Option<i64>>(0) else { return Ok(None) };
    let first = offset(first);
    Ok(Some(first..first + offset(i64::from(row.get::<_, i32>(1)))))
}

/// The message in `row`, whose columns are at these positions.
#[allow(clippy::too_many_arguments)]
fn stored(
    row: &Row,
    at: usize,
    key: usize,
    priority: usize,
    deliver_at: usize,
    published: usize,
    names: usize,
    values: usize,
    payload: usize,
) -> Result<Stored, BackendError> {
    let names: Vec<String> = row.get(names);
    let values: Vec<Vec<u8>> = row.get(values);
    if names.len() != values.len() {
        return Err(BackendError::new(
            BackendErrorKind::Refused,
            "a message's header names and values differ in number",
        ));
    }
    Ok(Stored {
        offset: offset(row.get(at)),
        key: row.get(key),
        priority: u8::try_from(row.get::<_, i16>(priority)).unwrap_or(0),
        deliver_at_us: row.get::<_, Option<i64>>(deliver_at).map(offset),
        published_us: offset(row.get(published)),
        headers: names.into_iter().zip(values.into_iter().map(Bytes::from)).collect(),
        payload: Bytes::from(row.get::<_, Vec<u8>>(payload)),
    })
}

fn settled(call: &str, row: &Row) -> Result<Settled, BackendError> {
    Ok(match row.get::<_, i16>(0) {
        0 => Settled::Done,
        1 => Settled::Stale,
        2 => Settled::DeadLettered,
        other => return Err(unexpected(call, other)),
    })
}

/// An offset or count from the database (never negative).
fn offset(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// An offset for the database (offsets stay far below `i64::MAX`).
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Milliseconds from the database as a duration.
fn ms(value: i64) -> Duration {
    Duration::from_millis(offset(value))
}

fn unexpected(call: &str, outcome: i16) -> BackendError {
    BackendError::new(BackendErrorKind::Refused, format!("{call} returned unknown outcome {outcome}"))
}

fn unexpected_rows(call: &str) -> BackendError {
    BackendError::new(BackendErrorKind::Refused, format!("{call} returned no row"))
}
