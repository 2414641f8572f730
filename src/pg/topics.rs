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

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::client::millis;
use super::db::{Db, classify};
use crate::error::{BackendError, BackendErrorKind};

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

/// What the cleanup deleted from one topic (for `Engine::cleanup`, not
/// built yet; the tests run it).
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
    /// Prepares the schema and connects (the tests' store; the engine's
    /// shares its link's connections).
    #[cfg(test)]
    pub(crate) async fn connect(config: super::PgConfig) -> Result<TopicStore, crate::error::OpenError> {
        super::schema::prepare(&config).await?;
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
    #[cfg_attr(not(test), allow(dead_code, reason = "the tests read it; the API has its own copy"))]
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
    #[cfg_attr(not(test), allow(dead_code, reason = "the tests read it; the API has its own copy"))]
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
    /// topic's retention that no worker group still has a job for, at most
    /// `batch` per transaction (the topics it looks at wait for it), until
    /// none is left or `rounds` transactions ran. What each topic lost, by
    /// name.
    /// Also whether the last transaction said more may be due.
    pub(crate) async fn cleanup(&self, batch: u32, rounds: u32) -> Result<(Vec<Cleaned>, bool), BackendError> {
        let limit = i32::try_from(batch.max(1)).unwrap_or(i32::MAX);
        let mut cleaned: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut more = false;
        for _ in 0..rounds.max(1) {
            let rows = self.db.query("SELECT topic, deleted, oldest, more FROM tg.cleanup($1)", &[&limit]).await?;
            more = false;
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
        let cleaned = cleaned.into_iter().map(|(topic, (deleted, oldest))| Cleaned { topic, deleted, oldest });
        Ok((cleaned.collect(), more))
    }
}

/// What a publish under locks did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LockedPublish {
    /// Published at these offsets.
    Published(Range<u64>),
    /// The lock on this key was no longer held: nothing was published.
    LockLost(String),
    /// There is no such topic.
    NoTopic,
}

/// A lock a publish checks: key, owner and acquisition level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldLock {
    pub(crate) key: String,
    pub(crate) owner: String,
    pub(crate) level: i64,
}

const PUBLISH_LOCKED: &str = "SELECT first_offset, count, lost_key FROM \
                              tg.publish_locked($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

impl TopicStore {
    /// The configured operation timeout.
    pub(crate) fn operation_timeout(&self) -> Duration {
        self.db.config().operation_timeout
    }

    /// Publishes `messages` as [`publish`](Self::publish) does, in the same
    /// transaction as a check that every lock of `locks` is still held.
    pub(crate) async fn publish_locked(
        &self,
        topic: TopicId,
        messages: &[Outgoing],
        locks: &[HeldLock],
    ) -> Result<LockedPublish, BackendError> {
        let batch = Batch::new(messages);
        let keys: Vec<&str> = locks.iter().map(|l| l.key.as_str()).collect();
        let owners: Vec<&str> = locks.iter().map(|l| l.owner.as_str()).collect();
        let levels: Vec<i64> = locks.iter().map(|l| l.level).collect();
        let autocommit = true;
        let [a, b, c, d, e, f, g, h, i] = batch.params(&topic.0, &autocommit);
        let rows = self.db.query(PUBLISH_LOCKED, &[a, b, c, d, e, f, g, h, i, &keys, &owners, &levels]).await?;
        let row = rows.first().ok_or_else(|| unexpected_rows("publish_locked"))?;
        if let Some(key) = row.get::<_, Option<String>>(2) {
            return Ok(LockedPublish::LockLost(key));
        }
        Ok(match row.get::<_, Option<i64>>(0) {
            None => LockedPublish::NoTopic,
            Some(first) => {
                let first = offset(first);
                LockedPublish::Published(first..first + offset(i64::from(row.get::<_, i32>(1))))
            }
        })
    }

    /// The names of the topics, sorted.
    pub(crate) async fn topic_names(&self) -> Result<Vec<String>, BackendError> {
        let rows = self.db.query("SELECT tg.topic_names()", &[]).await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Deletes topic `name` and everything of it. `Ok(Some(true))`:
    /// deleted; `Ok(None)`: no such topic; `Ok(Some(false))`: another
    /// topic's worker group dead-letters to it (nothing deleted).
    pub(crate) async fn delete_topic(&self, name: &str) -> Result<Option<bool>, BackendError> {
        let row = self.db.query_one("SELECT tg.delete_topic($1)", &[&name]).await?;
        Ok(match row.get::<_, i16>(0) {
            0 => Some(true),
            1 => None,
            2 => Some(false),
            other => return Err(unexpected("delete_topic", other)),
        })
    }
}

/// Runs `call`, failing with [`BackendErrorKind::TimedOut`] after `limit`.
pub(crate) async fn within<F, T>(limit: Duration, call: F) -> Result<T, BackendError>
where
    F: std::future::Future<Output = Result<T, BackendError>>,
{
    let deadline = std::time::Instant::now().checked_add(limit);
    let mut call = std::pin::pin!(call);
    let mut timer = crate::sync::timer::Timer::new();
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(outcome) = call.as_mut().poll(cx) {
            return std::task::Poll::Ready(outcome);
        }
        if timer.poll_until(cx, deadline).is_ready() {
            let message = format!("no answer within {} ms", limit.as_millis());
            return std::task::Poll::Ready(Err(BackendError::new(BackendErrorKind::TimedOut, message)));
        }
        std::task::Poll::Pending
    })
    .await
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
    /// The arrays of `messages`.
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

/// The status a settle (`call`) answered.
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

/// A status the schema's functions never return.
fn unexpected(call: &str, outcome: i16) -> BackendError {
    BackendError::new(BackendErrorKind::Refused, format!("{call} returned unknown outcome {outcome}"))
}

/// A call that returned no row where it always returns one.
fn unexpected_rows(call: &str) -> BackendError {
    BackendError::new(BackendErrorKind::Refused, format!("{call} returned no row"))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::time::{SystemTime, UNIX_EPOCH};

    use parking_lot::Mutex;
    use tokio_postgres::{AsyncMessage, Client};

    use super::*;
    use crate::log::KeyPattern;
    use crate::pg::PgConfig;
    use crate::pg::db;

    /// Settings for a schema of the test's own on the test server
    /// (`tollgate-pgtemp`: a throwaway server, or `TOLLGATE_PG_URL`).
    fn test_config() -> PgConfig {
        let server = tollgate_pgtemp::server();
        PgConfig::new(&server.url())
            .expect("the test server's URL parses")
            .schema(&server.schema_name())
            .expect("a valid name")
            .connections(2)
    }

    async fn store() -> (Arc<TopicStore>, PgConfig) {
        let config = test_config();
        let store = TopicStore::connect(config.clone()).await.expect("the schema is prepared");
        (Arc::new(store), config)
    }

    async fn topic(store: &TopicStore, name: &str) -> TopicId {
        topic_with(store, name, TopicSettings::default()).await
    }

    async fn topic_with(store: &TopicStore, name: &str, settings: TopicSettings) -> TopicId {
        store.open_topic(name, Some(&settings)).await.unwrap().expect("created").id
    }

    fn settings() -> GroupSettings<'static> {
        GroupSettings {
            filter: None,
            dead_letter: None,
            max_attempts: 5,
            visibility: Duration::from_secs(60),
            start_latest: false,
        }
    }

    /// Opens a group; its id and its dead-letter topic's.
    async fn group(store: &TopicStore, topic: TopicId, name: &str, settings: GroupSettings<'_>) -> (GroupId, TopicId) {
        match store.open_group(topic, name, &settings).await.unwrap() {
            OpenGroup::Opened { id, dead_letter, .. } => (id, dead_letter),
            other => panic!("{name} did not open: {other:?}"),
        }
    }

    fn message(payload: &str) -> Outgoing {
        Outgoing { payload: Bytes::copy_from_slice(payload.as_bytes()), ..Outgoing::default() }
    }

    fn keyed(payload: &str, key: &str) -> Outgoing {
        Outgoing { key: Some(key.into()), ..message(payload) }
    }

    async fn publish(store: &TopicStore, topic: TopicId, messages: &[Outgoing]) -> Range<u64> {
        store.publish(topic, messages).await.unwrap().expect("the topic exists")
    }

    /// What one receive of up to `max` took (nothing: empty).
    async fn take(store: &TopicStore, group: GroupId, max: u32) -> Vec<Claimed> {
        match store.receive(group, max).await.unwrap() {
            Receive::Taken { deliveries, .. } => deliveries,
            Receive::Nothing { .. } => Vec::new(),
            Receive::NoGroup => panic!("no such group"),
        }
    }

    /// Receives until nothing is left; the offsets taken.
    async fn drain(store: &TopicStore, group: GroupId) -> Vec<u64> {
        let mut offsets = Vec::new();
        loop {
            let taken = take(store, group, 100).await;
            if taken.is_empty() {
                return offsets;
            }
            offsets.extend(taken.iter().map(|d| d.message.offset));
        }
    }

    fn offsets(deliveries: &[Claimed]) -> Vec<u64> {
        deliveries.iter().map(|d| d.message.offset).collect()
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).expect("UTF-8")
    }

    /// Every message of `topic` from `from` on.
    async fn read_all(store: &TopicStore, topic: TopicId, from: u64) -> Vec<Stored> {
        let mut all = Vec::new();
        let mut next = from;
        loop {
            match store.read(topic, next, 100).await.unwrap() {
                Read::Messages { messages, .. } => {
                    next = messages.last().expect("not empty").offset + 1;
                    all.extend(messages);
                }
                Read::AtEnd => return all,
                other => panic!("reading from {next}: {other:?}"),
            }
        }
    }

    fn header<'a>(message: &'a Stored, name: &str) -> Option<&'a str> {
        message.headers.iter().find(|(n, _)| n == name).map(|(_, v)| text(v))
    }

    /// `tg.publish` called with SQL on `client` (in whatever transaction it
    /// is in), with `p_autocommit` as given.
    async fn raw_publish(
        store: &TopicStore,
        client: &Client,
        topic: TopicId,
        messages: &[Outgoing],
        autocommit: bool,
    ) -> Result<Range<u64>, tokio_postgres::Error> {
        let batch = Batch::new(messages);
        let row = client.query_one(&store.db.sql(PUBLISH), &batch.params(&topic.0, &autocommit)).await?;
        let first = offset(row.get(0));
        Ok(first..first + offset(i64::from(row.get::<_, i32>(1))))
    }

    async fn show_synchronous_commit(client: &Client) -> String {
        client.query_one("SHOW synchronous_commit", &[]).await.unwrap().get(0)
    }

    #[tokio::test]
    async fn a_schema_at_version_1_is_upgraded_with_its_locks_kept() {
        let config = test_config();
        let raw = db::connect(&config).await.unwrap();
        let version_1 = format!(
            "CREATE SCHEMA {}; \
             CREATE TABLE tg.schema_version (version integer PRIMARY KEY, name text NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT clock_timestamp()); \
             {} \
             INSERT INTO tg.schema_version (version, name) VALUES (1, 'locks'); \
             INSERT INTO tg.lock_key (key, version) VALUES ('kept', 7);",
            config.schema_name(),
            include_str!("sql/1_locks.sql")
        );
        raw.batch_execute(&config.qualify(&version_1)).await.unwrap();
        let store = TopicStore::connect(config.clone()).await.expect("upgraded");
        let orders = topic(&store, "orders").await;
        assert_eq!(publish(&store, orders, &[message("m")]).await, 0..1);
        let versions = raw.query(&config.qualify("SELECT version FROM tg.schema_version ORDER BY 1"), &[]).await;
        let versions: Vec<i32> = versions.unwrap().iter().map(|row| row.get(0)).collect();
        assert_eq!(versions, [1, 2]);
        let kept = raw.query_one(&config.qualify("SELECT version FROM tg.lock_key WHERE key = 'kept'"), &[]).await;
        assert_eq!(kept.unwrap().get::<_, i64>(0), 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_publishers_get_dense_offsets_that_readers_see_in_order() {
        const PUBLISHERS: u64 = 4;
        const EACH: u64 = 200;
        const TOTAL: u64 = PUBLISHERS * EACH;
        let (store, _) = store().await;
        let orders = topic(&store, "orders").await;
        // Readers follow the log while it is written: each read must go on
        // exactly where the last ended, so a gap, or an offset showing up
        // below one already seen, fails here.
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while (seen.len() as u64) < TOTAL {
                        match store.read(orders, seen.len() as u64, 64).await.unwrap() {
                            Read::Messages { messages, .. } => {
                                for message in messages {
                                    assert_eq!(message.offset, seen.len() as u64, "a reader saw a gap");
                                    seen.push(text(&message.payload).to_owned());
                                }
                            }
                            Read::AtEnd => tokio::time::sleep(Duration::from_millis(1)).await,
                            other => panic!("{other:?}"),
                        }
                    }
                    seen
                })
            })
            .collect();
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let mut offsets = Vec::new();
                    for i in 0..EACH {
                        let range = publish(&store, orders, &[message(&format!("{p}/{i}"))]).await;
                        assert_eq!(range.end - range.start, 1);
                        offsets.push(range.start);
                    }
                    offsets
                })
            })
            .collect();
        let mut all = Vec::new();
        for publisher in publishers {
            let offsets = publisher.await.unwrap();
            assert!(offsets.windows(2).all(|w| w[0] < w[1]), "a publisher's offsets went back: {offsets:?}");
            all.extend(offsets);
        }
        all.sort_unstable();
        assert_eq!(all, (0..TOTAL).collect::<Vec<_>>(), "offsets are dense, each handed out once");
        for reader in readers {
            let seen = reader.await.unwrap();
            // Each publisher's messages in its order.
            let mut next = [0u64; PUBLISHERS as usize];
            for payload in &seen {
                let (p, i) = payload.split_once('/').unwrap();
                let (p, i): (usize, u64) = (p.parse().unwrap(), i.parse().unwrap());
                assert_eq!(i, next[p], "publisher {p}'s messages out of order");
                next[p] += 1;
            }
        }
        assert_eq!(store.bounds(orders).await.unwrap(), Some(0..TOTAL));
    }

    #[tokio::test]
    async fn a_batch_is_published_whole_in_order_with_its_keys_headers_and_priorities() {
        let (store, _) = store().await;
        let orders = topic(&store, "orders").await;
        let batch = [
            Outgoing {
                key: Some("order.1".into()),
                priority: 7,
                deliver_at_us: Some(1_000_000),
                headers: vec![("type".into(), Bytes::from_static(b"created")), ("type".into(), Bytes::new())],
                payload: Bytes::from_static(b"first"),
            },
            message("second"),
            Outgoing {
                key: Some(String::new()),
                headers: vec![("é".into(), Bytes::from_static(b"\0\xff"))],
                ..message("")
            },
        ];
        assert_eq!(publish(&store, orders, &batch).await, 0..3);
        assert_eq!(publish(&store, orders, &[]).await, 3..3, "an empty batch publishes nothing");
        let read = read_all(&store, orders, 0).await;
        assert_eq!(read.len(), 3);
        assert_eq!(read[0].key.as_deref(), Some("order.1"));
        assert_eq!(read[0].priority, 7);
        assert_eq!(read[0].deliver_at_us, Some(1_000_000));
        assert_eq!(read[0].headers, batch[0].headers);
        assert_eq!(read[0].payload, batch[0].payload);
        assert_eq!((read[1].key.as_deref(), read[1].priority, read[1].headers.len()), (None, 0, 0));
        assert_eq!(read[2].key, None, "an empty key is none");
        assert_eq!(read[2].headers, batch[2].headers);
        assert!(read[0].published_us > 0 && read[0].published_us <= read[2].published_us);
        assert_eq!(store.publish(TopicId(i32::MAX), &batch).await.unwrap(), None, "no such topic");
        assert_eq!(store.read(TopicId(i32::MAX), 0, 10).await.unwrap(), Read::NoTopic);
        assert_eq!(store.read(orders, 4, 10).await.unwrap(), Read::NotWritten { end: 3 });
        assert_eq!(store.read(orders, 3, 10).await.unwrap(), Read::AtEnd);
        match store.read(orders, 1, 1).await.unwrap() {
            Read::Messages { messages, end } => assert_eq!((offsets_of(&messages), end), (vec![1], 3)),
            other => panic!("{other:?}"),
        }
    }

    fn offsets_of(messages: &[Stored]) -> Vec<u64> {
        messages.iter().map(|m| m.offset).collect()
    }

    #[tokio::test]
    async fn a_rolled_back_publish_publishes_nothing_and_a_committed_one_is_delivered_once() {
        let (store, config) = store().await;
        let orders = topic(&store, "orders").await;
        let (payments, _) = group(&store, orders, "payments", settings()).await;
        publish(&store, orders, &[message("before")]).await;
        let raw = db::connect(&config).await.unwrap();

        raw.batch_execute("BEGIN").await.unwrap();
        let before = show_synchronous_commit(&raw).await;
        let range = store.publish_in(&raw, orders, &[message("rolled back"), message("too")]).await.unwrap();
        assert_eq!(range, Some(1..3));
        assert_eq!(show_synchronous_commit(&raw).await, before, "the caller's commit settings are the caller's");
        raw.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(store.bounds(orders).await.unwrap(), Some(0..1), "a rollback gives its offsets back");
        let first = take(&store, payments, 10).await;
        assert_eq!(offsets(&first), [0]);
        assert_eq!(store.ack(payments, 0, first[0].receipt).await.unwrap(), Settled::Done);
        assert_eq!(store.receive(payments, 10).await.unwrap(), Receive::Nothing { dead_lettered: 0, retry: None });

        raw.batch_execute("BEGIN").await.unwrap();
        let range = store.publish_in(&raw, orders, &[message("committed")]).await.unwrap();
        assert_eq!(range, Some(1..2), "the offset the rollback gave back");
        raw.batch_execute("COMMIT").await.unwrap();
        let delivered = take(&store, payments, 10).await;
        assert_eq!(offsets(&delivered), [1]);
        assert_eq!((text(&delivered[0].message.payload), delivered[0].attempt), ("committed", 1));
        assert_eq!(store.ack(payments, 1, delivered[0].receipt).await.unwrap(), Settled::Done);
        assert_eq!(store.receive(payments, 10).await.unwrap(), Receive::Nothing { dead_lettered: 0, retry: None });
        let payloads: Vec<_> = read_all(&store, orders, 0).await.iter().map(|m| text(&m.payload).to_owned()).collect();
        assert_eq!(payloads, ["before", "committed"]);
    }

    #[tokio::test]
    async fn only_the_backends_own_calls_on_a_topic_that_is_not_sync_commit_without_the_flush() {
        let (store, config) = store().await;
        let buffered = topic(&store, "buffered").await;
        let interval = TopicSettings {
            durability: TopicDurability::Interval(Duration::from_millis(5)),
            ..TopicSettings::default()
        };
        let interval = topic_with(&store, "interval", interval).await;
        let sync =
            topic_with(&store, "sync", TopicSettings { durability: TopicDurability::Sync, ..TopicSettings::default() })
                .await;
        let raw = db::connect(&config).await.unwrap();
        raw.batch_execute("BEGIN; SET LOCAL synchronous_commit = on").await.unwrap();
        raw_publish(&store, &raw, buffered, &[message("m")], false).await.unwrap();
        raw_publish(&store, &raw, sync, &[message("m")], true).await.unwrap();
        assert_eq!(show_synchronous_commit(&raw).await, "on");
        raw_publish(&store, &raw, interval, &[message("m")], true).await.unwrap();
        assert_eq!(show_synchronous_commit(&raw).await, "off");
        raw.batch_execute("ROLLBACK").await.unwrap();
        let reopened = store.open_topic("interval", None).await.unwrap().unwrap();
        assert_eq!(reopened.settings.durability, TopicDurability::Interval(Duration::from_millis(5)));
        assert_eq!(reopened.end, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn competing_receivers_never_hold_the_same_job() {
        const MESSAGES: u64 = 500;
        let (store, _) = store().await;
        let orders = topic(&store, "orders").await;
        let (payments, _) = group(&store, orders, "payments", settings()).await;
        for start in (0..MESSAGES).step_by(50) {
            let batch: Vec<_> = (start..start + 50).map(|n| message(&n.to_string())).collect();
            assert_eq!(publish(&store, orders, &batch).await, start..start + 50);
        }
        let claims = Arc::new(Mutex::new(HashMap::<u64, u32>::new()));
        let receivers: Vec<_> = (0..4)
            .map(|_| {
                let (store, claims) = (Arc::clone(&store), Arc::clone(&claims));
                tokio::spawn(async move {
                    // Half the deliveries are held (in flight) to the end.
                    let mut held = Vec::new();
                    loop {
                        let taken = take(&store, payments, 7).await;
                        if taken.is_empty() {
                            return held;
                        }
                        for delivery in taken {
                            assert_eq!(delivery.attempt, 1);
                            *claims.lock().entry(delivery.message.offset).or_default() += 1;
                            if delivery.message.offset % 2 == 0 {
                                let settled = store.ack(payments, delivery.message.offset, delivery.receipt).await;
                                assert_eq!(settled.unwrap(), Settled::Done);
                            } else {
                                held.push(delivery);
                            }
                        }
                    }
                })
            })
            .collect();
        let mut held = Vec::new();
        for receiver in receivers {
            held.extend(receiver.await.unwrap());
        }
        let claims = claims.lock().clone();
        let violations = claims.values().filter(|&&n| n > 1).count();
        assert_eq!(violations, 0, "jobs handed to two receivers while visible");
        assert_eq!(claims.len() as u64, MESSAGES, "every job was received");
        assert_eq!(
            store.counts(payments).await.unwrap(),
            GroupCounts { ready: 0, delayed: 0, in_flight: MESSAGES / 2 }
        );
        for delivery in held {
            assert_eq!(store.ack(payments, delivery.message.offset, delivery.receipt).await.unwrap(), Settled::Done);
        }
        assert_eq!(store.counts(payments).await.unwrap(), GroupCounts::default());
    }

    #[tokio::test]
    async fn an_expired_delivery_is_delivered_again_and_its_receipt_is_refused() {
        let (store, _) = store().await;
        let orders = topic(&store, "orders").await;
        let short = GroupSettings { visibility: Duration::from_millis(300), ..settings() };
        let (payments, _) = group(&store, orders, "payments", short).await;
        publish(&store, orders, &[message("m")]).await;
        let first = take(&store, payments, 1).await.pop().expect("delivered");
        assert_eq!(first.attempt, 1);
        assert!(first.visible_for <= Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // The deadline passed: refused even before anyone took it again.
        assert_eq!(store.ack(payments, 0, first.receipt).await.unwrap(), Settled::Stale);
        assert_eq!(store.counts(payments).await.unwrap().ready, 1);
        let second = take(&store, payments, 1).await.pop().expect("delivered again");
        assert_eq!((second.message.offset, second.attempt), (0, 2));
        assert_ne!(second.receipt, first.receipt);
        for stale in [
            store.ack(payments, 0, first.receipt).await,
            store.nack(payments, 0, first.receipt, Duration::ZERO, "late").await,
            store.reject(payments, 0, first.receipt, "late").await,
            store.extend(payments, 0, first.receipt, Duration::from_secs(60)).await,
        ] {
            assert_eq!(stale.unwrap(), Settled::Stale);
        }
        assert_eq!(store.ack(payments, 0, second.receipt).await.unwrap(), Settled::Done);
        assert_eq!(store.ack(payments, 0, second.receipt).await.unwrap(), Settled::Stale, "settled already");
        assert_eq!(store.ack(payments, 99, second.receipt).await.unwrap(), Settled::Stale, "no such job");
        assert_eq!(store.receive(payments, 1).await.unwrap(), Receive::Nothing { dead_lettered: 0, retry: None });
    }

    #[tokio::test]
    async fn an_extended_delivery_stays_in_flight() {
        let (store, _) = store().await;
        let orders = topic(&store, "orders").await;
        let short = GroupSettings { visibility: Duration::from_secs(2), ..settings() };
        let (payments, _) = group(&store, orders, "payments", short).await;
        publish(&store, orders, &[message("m")]).await;
        let delivery = take(&store, payments, 1).await.pop().expect("delivered");
        assert_eq!(store.extend(payments, 0, delivery.receipt, Duration::from_secs(60)).await.unwrap(), Settled::Done);
        tokio::time::sleep(Duration::from_millis(3000)).await;
        match store.receive(payments, 1).await.unwrap() {
            Receive::Nothing { retry: Some(retry), .. } => assert!(retry > Duration::from_secs(30), "{retry:?}"),
            other => panic!("the extended delivery was handed out again: {other:?}"),
        }
        assert_eq!(store.ack(payments, 0, delivery.receipt).await.unwrap(), Settled::Done);
        assert_eq!(store.extend(payments, 0, delivery.receipt, Duration::from_secs(1)).await.unwrap(), Settled::Stale);
    }

    #[tokio::test]
    async fn a_nack_retries_after_its_delay_or_at_once() {
        let (store, _) = store().await;
        let orders = topic(&store, "orders").await;
        let (payments, _) = group(&store, orders, "payments", settings()).await;
        publish(&store, orders, &[message("m")]).await;
        let first = take(&store, payments, 1).await.pop().expect("delivered");
        let nacked = store.nack(payments, 0, first.receipt, Duration::from_secs(2), "busy").await.unwrap();
        assert_eq!(nacked, Settled::Done);
        match store.receive(payments, 1).await.unwrap() {
            Receive::Nothing { retry: Some(retry), dead_lettered: 0 } => assert!(retry <= Duration::from_secs(2)),
            other => panic!("a nacked message came back before its delay: {other:?}"),
        }
        assert_eq!(store.counts(payments).await.unwrap(), GroupCounts { ready: 0, delayed: 1, in_flight: 0 });
        assert!(store.next_visible(payments).await.unwrap().is_some_and(|wait| wait <= Duration::from_secs(2)));
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let second = take(&store, payments, 1).await.pop().expect("retried");
        assert_eq!((second.message.offset, second.attempt), (0, 2));
        assert_eq!(store.nack(payments, 0, second.receipt, Duration::ZERO, "busy").await.unwrap(), Settled::Done);
        let third = take(&store, payments, 1).await.pop().expect("retried at once");
        assert_eq!(third.attempt, 3);
        assert_eq!(store.next_visible(payments).await.unwrap().map(|wait| wait > Duration::from_secs(30)), Some(true));
    }

    #[tokio::test]
    async fn a_reject_dead_letters_in_the_same_transaction() {
        let (store, config) = store().await;
        let orders = topic(&store, "orders").await;
        let (payments, dead) = group(&store, orders, "payments", settings()).await;
        assert_eq!(store.open_topic("orders.dlq", None).await.unwrap().map(|t| t.id), Some(dead));
        let original = Outgoing {
            key: Some("order.1".into()),
            priority: 3,
            deliver_at_us: Some(1),
            headers: vec![("trace".into(), Bytes::from_static(b"abc"))],
            payload: Bytes::from_static(b"order 1"),
        };
        publish(&store, orders, &[message("padding"), original.clone()]).await;
        let delivery = take(&store, payments, 2).await.into_iter().find(|d| d.message.offset == 1).expect("offset 1");
        assert_eq!(delivery.message.priority, 3);

        // Rolled back: nothing happened, neither the dead letter nor the settle.
        let raw = db::connect(&config).await.unwrap();
        raw.batch_execute("BEGIN").await.unwrap();
        let reject = config.qualify("SELECT tg.reject($1, $2, $3, $4, false)");
        let status: i16 =
            raw.query_one(&reject, &[&payments.0, &1i64, &delivery.receipt, &"bad"]).await.unwrap().get(0);
        assert_eq!(status, 2);
        assert_eq!(store.bounds(dead).await.unwrap(), Some(0..0), "not committed yet");
        raw.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(store.bounds(dead).await.unwrap(), Some(0..0));
        assert_eq!(store.counts(payments).await.unwrap().in_flight, 2);

        let rejected = store.reject(payments, 1, delivery.receipt, "bad input").await.unwrap();
        assert_eq!(rejected, Settled::DeadLettered);
        assert_eq!(store.counts(payments).await.unwrap().in_flight, 1, "the job went with its dead letter");
        let letters = read_all(&store, dead, 0).await;
        assert_eq!(letters.len(), 1);
        let letter = &letters[0];
        assert_eq!((letter.key.as_deref(), letter.priority, &letter.payload), (Some("order.1"), 3, &original.payload));
        assert_eq!(letter.deliver_at_us, None, "a dead letter is not delayed");
        let names: Vec<&str> = letter.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "tollgate.dlq.topic",
                "tollgate.dlq.group",
                "tollgate.dlq.offset",
                "tollgate.dlq.attempts",
                "tollgate.dlq.reason",
                "trace"
            ]
        );
        assert_eq!(header(letter, "tollgate.dlq.topic"), Some("orders"));
        assert_eq!(header(letter, "tollgate.dlq.group"), Some("payments"));
        assert_eq!(header(letter, "tollgate.dlq.offset"), Some("1"));
        assert_eq!(header(letter, "tollgate.dlq.attempts"), Some("1"));
        assert_eq!(header(letter, "tollgate.dlq.reason"), Some("bad input"));
        assert_eq!(header(letter, "trace"), Some("abc"));
    }

    #[tokio::test]
    async fn a_dead_letter_keeps_at_most_64_headers_and_1024_bytes_of_reason() {
        let (store, _) = store().await;
        let orders = topic(&store, "orders").await;
        let (payments, dead) = group(&store, orders, "payments", settings()).await;
        let headers: Vec<_> = (0..64).map(|n| (format!("h{n}"), Bytes::from(n.to_string()))).collect();
        publish(&store, orders, &[Outgoing { headers, priority: 1, ..message("m") }]).await;
        let delivery = take(&store, payments, 1).await.pop().expect("delivered");
        let reason = "é".repeat(600);
        assert_eq!(store.reject(payments, 0, delivery.receipt, &reason).await.unwrap(), Settled::DeadLettered);
        let letter = read_all(&store, dead, 0).await.pop().expect("dead-lettered");
        // 5 dead-letter headers, headers-omitted, and the priority, as the
        // embedded engine counts them, leave room for 57.
        assert_eq!(letter.headers.len() + 1, 64);
        assert_eq!(header(&letter, "tollgate.dlq.headers-omitted"), Some("7"));
        assert_eq!(header(&letter, "h56"), Some("56"));
        assert_eq!(header(&letter, "h57"), None);
        assert_eq!(header(&letter, "tollgate.dlq.reason"), Some("é".repeat(512).as_str()));
    }

    #[tokio::test]
    async fn a_message_out_of_attempts_is_dead_lettered_by_a_nack_or_by_the_next_receive() {
        let (store, _) = store().await;
        let orders = topic(&store, "orders").await;
        let two = GroupSettings { max_attempts: 2, ..settings() };
        let (payments, dead) = group(&store, orders, "payments", two).await;
        publish(&store, orders, &[message("nacked")]).await;
        let first = take(&store, payments, 1).await.pop().expect("delivered");
        assert_eq!(store.nack(payments, 0, first.receipt, Duration::ZERO, "first").await.unwrap(), Settled::Done);
        let second = take(&store, payments, 1).await.pop().expect("retried");
        assert_eq!(second.attempt, 2);
        let last = store.nack(payments, 0, second.receipt, Duration::ZERO, "second").await.unwrap();
        assert_eq!(last, Settled::DeadLettered);
        let letter = read_all(&store, dead, 0).await.pop().expect("dead-lettered");
        assert_eq!(
            (header(&letter, "tollgate.dlq.attempts"), header(&letter, "tollgate.dlq.reason")),
            (Some("2"), Some("second"))
        );

        // A delivery that times out on its last attempt: the next receive
        // dead-letters it instead of handing it out.
        let once =
            GroupSettings { max_attempts: 1, visibility: Duration::from_millis(300), start_latest: true, ..settings() };
        let (billing, billing_dead) = group(&store, orders, "billing", once).await;
        assert_eq!(billing_dead, dead);
        publish(&store, orders, &[message("timed out"), message("fine")]).await;
        let doomed = take(&store, billing, 1).await.pop().expect("delivered");
        assert_eq!(doomed.message.offset, 1);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        match store.receive(billing, 1).await.unwrap() {
            Receive::Taken { deliveries, dead_lettered: 1 } => assert_eq!(offsets(&deliveries), [2]),
            other => panic!("{other:?}"),
        }
        let letters = read_all(&store, dead, 0).await;
        let letter = letters.last().expect("dead-lettered");
        assert_eq!(header(letter, "tollgate.dlq.group"), Some("billing"));
        assert_eq!(header(letter, "tollgate.dlq.reason"), Some("its visibility timeout passed"));
        assert_eq!(text(&letter.payload), "timed out");
        assert_eq!(store.ack(billing, 1, doomed.receipt).await.unwrap(), Settled::Stale);
    }

    #[tokio::test]
    async fn workers_take_the_highest_priority_then_the_oldest() {
        let (store, _) = store().await;
        let orders = topic(&store, "orders").await;
        let (payments, _) = group(&store, orders, "payments", settings()).await;
        let batch: Vec<_> = [0, 5, 9, 5, 0].iter().map(|&priority| Outgoing { priority, ..message("m") }).collect();
        publish(&store, orders, &batch).await;
        assert_eq!(offsets(&take(&store, payments, 2).await), [2, 1]);
        assert_eq!(offsets(&take(&store, payments, 10).await), [3, 0, 4]);
    }

    #[tokio::test]
    async fn a_delayed_message_waits_for_workers_but_not_for_subscriptions() {
        let (store, _) = store().await;
        let orders = topic(&store, "orders").await;
        let (payments, _) = group(&store, orders, "payments", settings()).await;
        let now_us = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
        let later = Outgoing { deliver_at_us: Some(now_us + 2_000_000), ..message("later") };
        let past = Outgoing { deliver_at_us: Some(now_us - 60_000_000), ..message("past") };
        publish(&store, orders, &[later, past]).await;
        assert_eq!(read_all(&store, orders, 0).await.len(), 2, "subscriptions see it at once");
        assert_eq!(offsets(&take(&store, payments, 10).await), [1], "a delivery time in the past is no delay");
        match store.receive(payments, 10).await.unwrap() {
            Receive::Nothing { retry: Some(retry), .. } => assert!(retry <= Duration::from_secs(3), "{retry:?}"),
            other => panic!("delivered before its time: {other:?}"),
        }
        assert_eq!(store.counts(payments).await.unwrap().delayed, 1);
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let delivered = take(&store, payments, 10).await;
        assert_eq!((offsets(&delivered), delivered[0].attempt), (vec![0], 1));
    }

    #[tokio::test]
    async fn a_groups_filter_decides_which_messages_it_gets() {
        let (store, _) = store().await;
        let events = topic(&store, "events").await;
        let filtered = |filter| GroupSettings { filter, ..settings() };
        let (created, _) = group(&store, events, "created", filtered(Some("order.*.created"))).await;
        let (everything, _) = group(&store, events, "everything", filtered(Some("#"))).await;
        let (keyless, _) = group(&store, events, "keyless", filtered(Some(""))).await;
        let (unfiltered, _) = group(&store, events, "unfiltered", filtered(None)).await;
        let batch = [
            keyed("0", "order.eu.created"),
            keyed("1", "order.created"),
            message("2"),
            keyed("3", "payment.eu"),
            keyed("4", "order.eu.created.x"),
            keyed("5", "order.us.created"),
        ];
        publish(&store, events, &batch).await;
        assert_eq!(drain(&store, created).await, [0, 5]);
        assert_eq!(drain(&store, everything).await, [0, 1, 2, 3, 4, 5]);
        assert_eq!(drain(&store, keyless).await, [2]);
        assert_eq!(drain(&store, unfiltered).await, [0, 1, 2, 3, 4, 5]);
        // A group created later is filled from the retained messages, with
        // its filter.
        let (late, _) = group(&store, events, "late", filtered(Some("order.#"))).await;
        assert_eq!(drain(&store, late).await, [0, 1, 4, 5]);
    }

    /// Every pattern and key over two alphabets: the SQL translation of a
    /// pattern matches exactly the keys `KeyPattern` matches.
    #[tokio::test]
    async fn the_sql_filter_matches_exactly_what_key_pattern_matches() {
        fn join_all(alphabet: &[&str], most: usize) -> Vec<String> {
            let mut all = vec![String::new()];
            let mut last: Vec<Vec<&str>> = vec![Vec::new()];
            for _ in 0..most {
                let next: Vec<Vec<&str>> =
                    last.iter().flat_map(|w| alphabet.iter().map(move |a| [w.as_slice(), &[a]].concat())).collect();
                all.extend(next.iter().map(|w| w.join(".")));
                last = next;
            }
            all.sort();
            all.dedup();
            all
        }
        let (store, _) = store().await;
        let special = ["x(y", "\\d", "é", "a+", "[c]", "{1}", "|", "$", "^", "a?", "*", "#"];
        let special_keys =
            ["x(y", "\\d", "é", "a+", "[c]", "{1}", "|", "$", "^", "a?", "xy", "d", "aa", "c", "*", "#", " "];
        let cases = [
            (join_all(&["a", "b", "", "*", "#"], 4), join_all(&["a", "b", ""], 4)),
            (join_all(&special, 2), join_all(&special_keys, 2)),
        ];
        let mut checked = 0;
        for (patterns, keys) in cases {
            let rows = store
                .db
                .query(
                    "SELECT p.i::int, k.i::int, tg.key_matches(p.re, k.key) \
                     FROM (SELECT i, tg.key_regex(pattern) AS re FROM unnest($1::text[]) WITH ORDINALITY AS x (pattern, i)) p \
                     CROSS JOIN unnest($2::text[]) WITH ORDINALITY AS k (key, i)",
                    &[&patterns, &keys],
                )
                .await
                .unwrap();
            assert_eq!(rows.len(), patterns.len() * keys.len());
            let compiled: Vec<KeyPattern> = patterns.iter().map(|p| KeyPattern::new(p).unwrap()).collect();
            let mut wrong = Vec::new();
            for row in rows {
                let (p, k) = (row.get::<_, i32>(0) as usize - 1, row.get::<_, i32>(1) as usize - 1);
                if compiled[p].matches(&keys[k]) != row.get::<_, bool>(2) {
                    wrong.push((patterns[p].clone(), keys[k].clone()));
                }
                checked += 1;
            }
            assert!(wrong.is_empty(), "{} disagreements, e.g. {:?}", wrong.len(), &wrong[..wrong.len().min(10)]);
        }
        assert!(checked > 100_000);
        let no_key = store
            .db
            .query_one("SELECT tg.key_matches(tg.key_regex('#'), NULL), tg.key_matches(tg.key_regex('*'), NULL)", &[])
            .await
            .unwrap();
        assert_eq!((no_key.get::<_, bool>(0), no_key.get::<_, bool>(1)), (true, false));
        let bad = store.db.query_one("SELECT tg.key_regex('ord*')", &[]).await;
        assert!(bad.is_err(), "'*' inside a word is refused");
    }

    #[tokio::test]
    async fn a_consumer_groups_committed_offset_never_moves_back() {
        let (store, _) = store().await;
        let orders = topic(&store, "orders").await;
        publish(&store, orders, &vec![message("m"); 10]).await;
        let start = store.subscription_start(orders, "billing", false).await.unwrap().unwrap();
        assert_eq!(start, Start { position: 0, committed: None, oldest: 0, end: 10 });
        let latest = store.subscription_start(orders, "billing", true).await.unwrap().unwrap();
        assert_eq!(latest.position, 10, "a new group at the latest starts at the end");
        assert_eq!(store.committed(orders, "billing").await.unwrap(), None);
        assert_eq!(store.commit(orders, "billing", 5).await.unwrap(), Commit::Committed(5));
        assert_eq!(store.commit(orders, "billing", 3).await.unwrap(), Commit::Committed(5), "a stale commit");
        assert_eq!(store.commit(orders, "billing", 11).await.unwrap(), Commit::BeyondEnd { end: 10 });
        assert_eq!(store.committed(orders, "billing").await.unwrap(), Some(5));
        assert_eq!(store.commit(orders, "billing", 10).await.unwrap(), Commit::Committed(10));
        assert_eq!(store.commit(orders, "audit", 2).await.unwrap(), Commit::Committed(2), "groups are apart");
        let start = store.subscription_start(orders, "billing", true).await.unwrap().unwrap();
        assert_eq!((start.position, start.committed), (10, Some(10)));
        assert_eq!(store.commit(TopicId(i32::MAX), "billing", 0).await.unwrap(), Commit::NoTopic);
        assert_eq!(store.subscription_start(TopicId(i32::MAX), "billing", false).await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_cleanup_deletes_only_expired_messages_that_every_group_settled() {
        let (store, config) = store().await;
        let by_count = TopicSettings { retention_messages: Some(2), ..TopicSettings::default() };
        let events = topic_with(&store, "events", by_count).await;
        let (payments, _) = group(&store, events, "payments", settings()).await;
        publish(&store, events, &vec![message("m"); 10]).await;
        let receipts: BTreeMap<u64, i64> =
            take(&store, payments, 10).await.iter().map(|d| (d.message.offset, d.receipt)).collect();
        let ack = |at: u64| {
            let store = Arc::clone(&store);
            let receipt = receipts[&at];
            async move { assert_eq!(store.ack(payments, at, receipt).await.unwrap(), Settled::Done) }
        };
        for at in [0, 1, 3, 4] {
            ack(at).await;
        }
        // Offset 2 is not settled: it and all after it stay.
        let cleaned = store.cleanup(100, 10).await.unwrap().0;
        assert_eq!(cleaned, [Cleaned { topic: "events".into(), deleted: 2, oldest: 2 }]);
        assert_eq!(store.read(events, 0, 10).await.unwrap(), Read::NotRetained { oldest: 2 });
        assert_eq!(read_all(&store, events, 2).await.len(), 8);
        for at in [2, 5, 6] {
            ack(at).await;
        }
        // Up to the first job left (7), and at most 8 (two kept).
        assert_eq!(
            store.cleanup(100, 10).await.unwrap().0,
            [Cleaned { topic: "events".into(), deleted: 5, oldest: 7 }]
        );
        for at in [7, 8, 9] {
            ack(at).await;
        }
        assert_eq!(
            store.cleanup(100, 10).await.unwrap().0,
            [Cleaned { topic: "events".into(), deleted: 1, oldest: 8 }]
        );
        assert_eq!(store.cleanup(100, 10).await.unwrap().0, []);
        assert_eq!(store.bounds(events).await.unwrap(), Some(8..10));
        assert_eq!(store.subscription_start(events, "new", false).await.unwrap().unwrap().position, 8);

        // By age (backdated by hand), in batches, blocked by a job.
        let by_age = TopicSettings { retention_age: Some(Duration::from_secs(3600)), ..TopicSettings::default() };
        let logs = topic_with(&store, "logs", by_age).await;
        let (audit, _) = group(&store, logs, "audit", settings()).await;
        publish(&store, logs, &vec![message("old"); 6]).await;
        publish(&store, logs, &[message("new")]).await;
        let raw = db::connect(&config).await.unwrap();
        let backdate = config.qualify(
            "UPDATE tg.message SET published_at = published_at - interval '2 hours' WHERE topic = $1 AND \"offset\" < 6",
        );
        assert_eq!(raw.execute(&backdate, &[&logs.0]).await.unwrap(), 6);
        let taken = take(&store, audit, 10).await;
        for delivery in &taken {
            if delivery.message.offset != 4 {
                assert_eq!(store.ack(audit, delivery.message.offset, delivery.receipt).await.unwrap(), Settled::Done);
            }
        }
        // Two per transaction, one transaction: 0 and 1.
        assert_eq!(store.cleanup(2, 1).await.unwrap().0, [Cleaned { topic: "logs".into(), deleted: 2, oldest: 2 }]);
        // Then 2 and 3; 4 still has a job.
        assert_eq!(store.cleanup(2, 10).await.unwrap().0, [Cleaned { topic: "logs".into(), deleted: 2, oldest: 4 }]);
        let last = taken.iter().find(|d| d.message.offset == 4).unwrap();
        assert_eq!(store.ack(audit, 4, last.receipt).await.unwrap(), Settled::Done);
        // 4 and 5; 6 is young.
        assert_eq!(store.cleanup(100, 10).await.unwrap().0, [Cleaned { topic: "logs".into(), deleted: 2, oldest: 6 }]);
        assert_eq!(read_all(&store, logs, 6).await.len(), 1);
    }

    #[tokio::test]
    async fn one_cleanup_call_deletes_at_most_its_batch_across_topics() {
        let (store, _) = store().await;
        let keep_one = TopicSettings { retention_messages: Some(1), ..TopicSettings::default() };
        let a = topic_with(&store, "a", keep_one).await;
        let b = topic_with(&store, "b", keep_one).await;
        publish(&store, a, &vec![message("m"); 6]).await;
        publish(&store, b, &vec![message("m"); 6]).await;
        // One transaction of 3: all from the first topic.
        assert_eq!(store.cleanup(3, 1).await.unwrap().0, [Cleaned { topic: "a".into(), deleted: 3, oldest: 3 }]);
        assert_eq!(store.bounds(b).await.unwrap(), Some(0..6));
        // Then 3 at a time until nothing is due: a's last 2, b's 5.
        let cleaned = store.cleanup(3, 10).await.unwrap().0;
        assert_eq!(
            cleaned,
            [
                Cleaned { topic: "a".into(), deleted: 2, oldest: 5 },
                Cleaned { topic: "b".into(), deleted: 5, oldest: 5 }
            ]
        );
        assert_eq!(store.cleanup(3, 10).await.unwrap().0, []);
    }

    #[tokio::test]
    async fn opening_a_group_fills_it_once_and_reopening_changes_only_its_settings() {
        let (store, _) = store().await;
        let orders = topic(&store, "orders").await;
        publish(&store, orders, &vec![message("m"); 3]).await;
        let opened = store.open_group(orders, "payments", &settings()).await.unwrap();
        let OpenGroup::Opened { id: payments, dead_letter, how: Opened::Created { backfilled: 3 } } = opened else {
            panic!("{opened:?}")
        };
        let taken = take(&store, payments, 10).await;
        assert_eq!(offsets(&taken), [0, 1, 2]);
        assert_eq!(store.ack(payments, 0, taken[0].receipt).await.unwrap(), Settled::Done);
        let reopened = store.open_group(orders, "payments", &settings()).await.unwrap();
        assert_eq!(reopened, OpenGroup::Opened { id: payments, dead_letter, how: Opened::Same });
        assert_eq!(store.counts(payments).await.unwrap(), GroupCounts { ready: 0, delayed: 0, in_flight: 2 });
        let more = GroupSettings { max_attempts: 7, ..settings() };
        let changed = store.open_group(orders, "payments", &more).await.unwrap();
        assert_eq!(changed, OpenGroup::Opened { id: payments, dead_letter, how: Opened::Changed });
        match store.receive(payments, 10).await.unwrap() {
            Receive::Nothing { retry: Some(retry), .. } => assert!(retry > Duration::from_secs(30), "{retry:?}"),
            other => panic!("reopening brought settled or in-flight messages back: {other:?}"),
        }

        let latest = GroupSettings { start_latest: true, ..settings() };
        let opened = store.open_group(orders, "billing", &latest).await.unwrap();
        let OpenGroup::Opened { id: billing, how: Opened::Created { backfilled: 0 }, .. } = opened else {
            panic!("{opened:?}")
        };
        publish(&store, orders, &[message("new")]).await;
        assert_eq!(drain(&store, billing).await, [3]);
        assert_eq!(drain(&store, payments).await, [3]);

        let own = GroupSettings { dead_letter: Some("orders"), ..settings() };
        assert_eq!(store.open_group(orders, "loop", &own).await.unwrap(), OpenGroup::DeadLetterIsTopic);
        assert_eq!(store.open_group(TopicId(i32::MAX), "x", &settings()).await.unwrap(), OpenGroup::NoTopic);
        let dlq = store.open_topic("orders.dlq", None).await.unwrap().expect("made with the group");
        assert_eq!((dlq.id, dlq.created), (dead_letter, false));
        assert_eq!(dlq.settings.max_message_bytes, (1 << 20) + 4096);
        assert_eq!((dlq.settings.retention_age, dlq.settings.retention_messages), (None, None));
        let named = GroupSettings { dead_letter: Some("failures"), ..settings() };
        let (_, failures) = group(&store, orders, "shipping", named).await;
        assert_eq!(store.open_topic("failures", None).await.unwrap().map(|t| t.id), Some(failures));

        assert_eq!(store.open_topic("missing", None).await.unwrap(), None);
        let other = TopicSettings { durability: TopicDurability::Sync, ..TopicSettings::default() };
        let again = store.open_topic("orders", Some(&other)).await.unwrap().unwrap();
        assert_eq!((again.id, again.created, again.settings), (orders, false, TopicSettings::default()));
        assert_eq!((again.oldest, again.end), (0, 4));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_group_opened_while_publishers_run_gets_every_message_once() {
        let (store, _) = store().await;
        let orders = topic(&store, "orders").await;
        let publishers: Vec<_> = (0..4)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for _ in 0..100 {
                        publish(&store, orders, &[message("m")]).await;
                    }
                })
            })
            .collect();
        while store.bounds(orders).await.unwrap().unwrap().end < 50 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (payments, _) = group(&store, orders, "payments", settings()).await;
        for publisher in publishers {
            publisher.await.unwrap();
        }
        let mut taken = drain(&store, payments).await;
        taken.sort_unstable();
        assert_eq!(taken, (0..400).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_repeatable_read_publisher_older_than_a_new_group_fails_rather_than_miss_it() {
        let (store, config) = store().await;
        let orders = topic(&store, "orders").await;
        let raw = db::connect(&config).await.unwrap();
        let snapshot = config.qualify("SELECT count(*) FROM tg.topic");
        raw.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ").await.unwrap();
        raw.query_one(&snapshot, &[]).await.unwrap();
        let (late, _) = group(&store, orders, "late", settings()).await;
        let error = store.publish_in(&raw, orders, &[message("m")]).await.unwrap_err();
        assert_eq!(error.kind, BackendErrorKind::Refused);
        assert!(error.message.contains("could not serialize"), "{error}");
        raw.batch_execute("ROLLBACK").await.unwrap();

        // In READ COMMITTED the publish sees the group.
        raw.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED").await.unwrap();
        raw.query_one(&snapshot, &[]).await.unwrap();
        let (later, _) = group(&store, orders, "later", settings()).await;
        assert_eq!(store.publish_in(&raw, orders, &[message("m")]).await.unwrap(), Some(0..1));
        raw.batch_execute("COMMIT").await.unwrap();
        assert_eq!(drain(&store, later).await, [0]);
        assert_eq!(drain(&store, late).await, [0]);
    }

    #[tokio::test]
    async fn a_committed_publish_notifies_the_topics_channel_and_a_rolled_back_one_does_not() {
        let (store, config) = store().await;
        let orders = topic(&store, "orders").await;
        let other = topic(&store, "other").await;
        let (sender, mut notified) = tokio::sync::mpsc::unbounded_channel();
        let (listener, _closed) = db::connect_with(&config, move |message| {
            if let AsyncMessage::Notification(n) = message {
                let _ = sender.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        })
        .await
        .unwrap();
        let channel = config.qualify("tg.topic");
        listener.batch_execute(&format!("LISTEN \"{channel}\"")).await.unwrap();
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(10), notified.recv()).await.expect("a notification").unwrap()
        };
        publish(&store, orders, &[message("m")]).await;
        assert_eq!(next().await, (channel.clone(), orders.0.to_string()));

        let raw = db::connect(&config).await.unwrap();
        raw.batch_execute("BEGIN").await.unwrap();
        store.publish_in(&raw, orders, &[message("m")]).await.unwrap();
        raw.batch_execute("ROLLBACK").await.unwrap();
        // Notifications come in commit order: the next one is other's.
        publish(&store, other, &[message("m")]).await;
        assert_eq!(next().await, (channel.clone(), other.0.to_string()));

        // A give-back wakes the topic's workers too.
        let (payments, _) = group(&store, orders, "payments", settings()).await;
        let delivery = take(&store, payments, 1).await.pop().unwrap();
        store.nack(payments, 0, delivery.receipt, Duration::ZERO, "again").await.unwrap();
        assert_eq!(next().await, (channel, orders.0.to_string()));
    }
}
