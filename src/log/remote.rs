//! Topics and subscriptions kept in PostgreSQL (feature `postgres`): what
//! a [`Topic`](crate::Topic) and a [`Subscription`] of an engine from
//! `Engine::connect` do instead of reading and writing segments. Each
//! operation is one call of `pg/topics.rs` (one round trip); blocking calls
//! run the same futures with `block_on`.
//!
//! Waiting for a record: register an interest in the topic's notifications
//! (a publish `NOTIFY`s the topic id when it commits), then read; if the
//! read found nothing, sleep until the interest is rung or the deadline
//! passes. No polling: an interest registered before the read cannot miss
//! a publish that committed after it.

use std::collections::{HashSet, VecDeque};
use std::future::{Future, poll_fn};
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::config::{Durability, TopicConfig};
use super::format::{DELIVER_AT_HEADER, ENTRY_HEADER_BYTES, FRAME_RECORDS_MAX, PRIORITY_HEADER, u64_at};
use super::pattern::KeyPattern;
use super::record::{Message, Offset, Record};
use super::recovery::RecoveryReport;
use super::subscription::{Shared, StartAt};
use super::topic::TopicInfo;
use crate::error::{BackendError, CommitError, PublishError, ReadError, TopicError};
use crate::pg::link::Link;
use crate::pg::listen::{Channel, Interest};
use crate::pg::runtime;
use crate::pg::topics::{Outgoing, Read, Stored, TopicId, TopicStore, within};
use crate::sync::timer::Timer;

/// Messages a subscription reads per round trip.
const READ_BATCH: u32 = 256;

/// A boxed future of the backend: `Send`, owning what it needs.
pub(crate) type Call<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One topic of a PostgreSQL engine, shared by its [`Topic`](crate::Topic) handles.
#[derive(Debug)]
pub(crate) struct RemoteTopic {
    pub(crate) link: Arc<Link>,
    pub(crate) store: Arc<TopicStore>,
    pub(crate) id: TopicId,
    pub(crate) name: String,
    /// Its configuration as the database keeps it (segment settings at
    /// their defaults).
    pub(crate) config: TopicConfig,
    /// The bounds last seen, for `info` and `lag` when the database does
    /// not answer.
    oldest: AtomicU64,
    end: AtomicU64,
    /// Consumer groups with a live subscription in this process.
    groups: Mutex<HashSet<String>>,
    recovery: RecoveryReport,
}

impl RemoteTopic {
    pub(crate) fn new(
        link: Arc<Link>,
        store: Arc<TopicStore>,
        id: TopicId,
        name: String,
        config: TopicConfig,
        bounds: Range<u64>,
    ) -> RemoteTopic {
        let recovery = RecoveryReport { clean: true, ..RecoveryReport::default() };
        RemoteTopic {
            link,
            store,
            id,
            name,
            config,
            oldest: AtomicU64::new(bounds.start),
            end: AtomicU64::new(bounds.end),
            groups: Mutex::new(HashSet::new()),
            recovery,
        }
    }

    /// What opening found: nothing to recover (the database did it).
    pub(crate) fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    fn timeout(&self) -> Duration {
        self.store.operation_timeout()
    }

    /// An interest in this topic's notifications (publishes, give-backs).
    pub(crate) fn interest(&self) -> Interest {
        self.link.interest(Channel::Topic, &self.id.0.to_string(), None)
    }

    fn saw_end(&self, end: u64) {
        self.end.fetch_max(end, Ordering::Relaxed);
    }

    /// `messages` as rows, checked as the embedded log checks them.
    pub(crate) fn outgoing(&self, messages: &[Message]) -> Result<Vec<Outgoing>, PublishError> {
        if messages.is_empty() {
            return Err(PublishError::InvalidMessage { reason: "a batch needs at least one message" });
        }
        if messages.len() > FRAME_RECORDS_MAX {
            return Err(PublishError::InvalidMessage { reason: "a batch holds at most 65536 messages" });
        }
        messages.iter().map(|message| outgoing(message, self.config.max_message_bytes)).collect()
    }

    /// Publishes `messages` (checked first) in one transaction; their offsets.
    pub(crate) fn publish_call(self: &Arc<Self>, messages: Vec<Message>) -> Call<Result<Range<Offset>, PublishError>> {
        let topic = Arc::clone(self);
        Box::pin(async move {
            let batch = topic.outgoing(&messages)?;
            drop(messages);
            let published = within(topic.timeout(), topic.store.publish(topic.id, &batch)).await;
            match published.map_err(PublishError::Backend)? {
                Some(range) => {
                    topic.saw_end(range.end);
                    Ok(Offset::new(range.start)..Offset::new(range.end))
                }
                None => Err(PublishError::Deleted),
            }
        })
    }

    /// Publishes `messages` in one transaction that first checks that
    /// every lock of `locks` is still held (`tg.publish_locked`).
    pub(crate) fn publish_locked_call(
        self: &Arc<Self>,
        messages: Vec<Message>,
        locks: Vec<crate::pg::topics::HeldLock>,
    ) -> Call<Result<Range<Offset>, PublishError>> {
        use crate::pg::topics::LockedPublish;
        let topic = Arc::clone(self);
        Box::pin(async move {
            let batch = topic.outgoing(&messages)?;
            drop(messages);
            let published = within(topic.timeout(), topic.store.publish_locked(topic.id, &batch, &locks)).await;
            match published.map_err(PublishError::Backend)? {
                LockedPublish::Published(range) => {
                    topic.saw_end(range.end);
                    Ok(Offset::new(range.start)..Offset::new(range.end))
                }
                LockedPublish::LockLost(key) => Err(PublishError::LockLost { key }),
                LockedPublish::NoTopic => Err(PublishError::Deleted),
            }
        })
    }

    /// Publishes `messages` in the caller's transaction on `client` (the outbox).
    pub(crate) async fn publish_in(
        &self,
        client: &impl tokio_postgres::GenericClient,
        messages: Vec<Message>,
    ) -> Result<Range<Offset>, PublishError> {
        let batch = self.outgoing(&messages)?;
        match self.store.publish_in(client, self.id, &batch).await.map_err(PublishError::Backend)? {
            Some(range) => Ok(Offset::new(range.start)..Offset::new(range.end)),
            None => Err(PublishError::Deleted),
        }
    }

    /// The blocking form of [`publish_call`](Self::publish_call).
    pub(crate) fn publish_batch(self: &Arc<Self>, messages: Vec<Message>) -> Result<Range<Offset>, PublishError> {
        runtime::block_on(self.publish_call(messages))
    }

    /// Up to `max` records from `from` on (what `tg.read` says).
    pub(crate) fn read_call(self: &Arc<Self>, from: u64, max: u32) -> Call<Result<Read, BackendError>> {
        let topic = Arc::clone(self);
        Box::pin(async move { within(topic.timeout(), topic.store.read(topic.id, from, max)).await })
    }

    /// The record at `offset`.
    pub(crate) fn read(self: &Arc<Self>, offset: Offset) -> Result<Record, ReadError> {
        let requested = offset.get();
        match runtime::block_on(self.read_call(requested, 1)).map_err(ReadError::Backend)? {
            Read::Messages { messages, end } => {
                self.saw_end(end);
                let stored = messages.into_iter().next().expect("a read that found messages has one");
                Ok(record(stored))
            }
            Read::AtEnd => Err(ReadError::NotWritten { requested, next: requested }),
            Read::NotWritten { end } => Err(ReadError::NotWritten { requested, next: end }),
            Read::NotRetained { oldest } => Err(ReadError::NotRetained { requested, oldest }),
            Read::NoTopic => Err(ReadError::Deleted),
        }
    }

    /// The retained offsets now, `oldest..end`.
    pub(crate) fn bounds(&self) -> Result<Range<u64>, ReadError> {
        match runtime::block_on(within(self.timeout(), self.store.bounds(self.id))).map_err(ReadError::Backend)? {
            Some(bounds) => {
                self.oldest.store(bounds.start, Ordering::Relaxed);
                self.saw_end(bounds.end);
                Ok(bounds)
            }
            None => Err(ReadError::Deleted),
        }
    }

    /// The bounds, or the last ones seen if the database does not answer.
    fn bounds_or_last(&self) -> Range<u64> {
        self.bounds().unwrap_or_else(|_| self.oldest.load(Ordering::Relaxed)..self.end.load(Ordering::Relaxed))
    }

    /// Offsets and configuration; no segments, no bytes.
    pub(crate) fn info(&self) -> TopicInfo {
        let bounds = self.bounds_or_last();
        TopicInfo {
            name: self.name.clone(),
            config: self.config,
            oldest: Offset::new(bounds.start),
            next: Offset::new(bounds.end),
            durable: Offset::new(bounds.end),
            segments: 0,
            bytes: 0,
        }
    }

    /// The number of records readable now (the database checks its own
    /// pages: there is nothing for tollgate to verify).
    pub(crate) fn verify(&self) -> Result<u64, ReadError> {
        let bounds = self.bounds()?;
        Ok(bounds.end - bounds.start)
    }

    /// Subscribes `group` (checked by the caller).
    pub(crate) fn subscribe(self: &Arc<Self>, group: &str, start: StartAt) -> Result<RemoteSubscription, TopicError> {
        if !self.groups.lock().insert(group.to_owned()) {
            return Err(TopicError::GroupBusy { group: group.to_owned() });
        }
        let call = self.store.subscription_start(self.id, group, start == StartAt::Latest);
        let started = match runtime::block_on(within(self.timeout(), call)) {
            Ok(Some(start)) => start,
            Ok(None) => {
                self.groups.lock().remove(group);
                return Err(TopicError::Deleted);
            }
            Err(error) => {
                self.groups.lock().remove(group);
                return Err(TopicError::Backend(error));
            }
        };
        self.saw_end(started.end);
        let committed = started.committed.unwrap_or(started.position).min(started.end);
        Ok(RemoteSubscription {
            topic: Arc::clone(self),
            group: group.to_owned(),
            next: started.position,
            committed,
            filter: None,
            buffer: VecDeque::new(),
            shared: Arc::new(Shared::new(started.position, committed)),
        })
    }

    /// Records published and not committed by a group that committed `committed`.
    pub(crate) fn lag(&self, committed: u64) -> u64 {
        self.bounds_or_last().end.saturating_sub(committed)
    }
}

/// A message as a row: key, priority, delivery time, headers, payload.
fn outgoing(message: &Message, max_message_bytes: usize) -> Result<Outgoing, PublishError> {
    let bytes = message.entry_bytes()? - ENTRY_HEADER_BYTES;
    if bytes > max_message_bytes {
        return Err(PublishError::TooLarge { bytes, max: max_message_bytes });
    }
    let (key, system, headers, payload) = message.parts();
    let mut out = Outgoing {
        key: key.filter(|key| !key.is_empty()).map(str::to_owned),
        payload: payload.clone(),
        ..Outgoing::default()
    };
    for (name, value) in system {
        match *name {
            PRIORITY_HEADER => out.priority = value[0],
            DELIVER_AT_HEADER => out.deliver_at_us = Some(u64_at(value, 0)),
            _ => out.headers.push(((*name).to_owned(), value.clone())),
        }
    }
    out.headers.extend(headers.iter().cloned());
    Ok(out)
}

/// A row as a record: the priority and delivery time become the reserved
/// headers the embedded log writes, before the others.
pub(crate) fn record(stored: Stored) -> Record {
    let priority = [stored.priority];
    let deliver_at = stored.deliver_at_us.map(u64::to_le_bytes);
    let system = (stored.priority > 0)
        .then_some((PRIORITY_HEADER, &priority[..]))
        .into_iter()
        .chain(deliver_at.as_ref().map(|at| (DELIVER_AT_HEADER, &at[..])));
    let headers = system.chain(stored.headers.iter().map(|(name, value)| (name.as_str(), value.as_ref())));
    Record::from_parts(stored.offset, stored.published_us, stored.key.as_deref(), headers, &stored.payload)
}

/// A consumer group's subscription to a PostgreSQL topic: the position,
/// and the records read ahead of it (one round trip reads up to
/// [`READ_BATCH`]).
#[derive(Debug)]
pub(crate) struct RemoteSubscription {
    pub(crate) topic: Arc<RemoteTopic>,
    pub(crate) group: String,
    /// The offset `next` returns next.
    next: u64,
    pub(crate) committed: u64,
    pub(crate) filter: Option<KeyPattern>,
    /// Records read from `next` on, in order.
    buffer: VecDeque<Record>,
    pub(crate) shared: Arc<Shared>,
}

impl RemoteSubscription {
    pub(crate) fn position(&self) -> u64 {
        self.next
    }

    /// The next buffered record that passes the filter (those that do not
    /// still move the position).
    fn pop(&mut self) -> Option<Record> {
        while let Some(record) = self.buffer.pop_front() {
            self.next = record.offset().get() + 1;
            self.shared.position.store(self.next, Ordering::Relaxed);
            match &self.filter {
                Some(filter) if !filter.matches_record(record.key()) => continue,
                _ => return Some(record),
            }
        }
        None
    }

    /// Takes in what a read from the position found: `true` if it found
    /// records (now buffered), `false` at the end.
    fn take_read(&mut self, read: Result<Read, BackendError>) -> Result<bool, ReadError> {
        let requested = self.next;
        match read.map_err(ReadError::Backend)? {
            Read::Messages { messages, end } => {
                self.topic.saw_end(end);
                // A seek while the read ran makes it stale.
                if messages.first().is_some_and(|m| m.offset == requested) {
                    self.buffer.extend(messages.into_iter().map(record));
                }
                Ok(true)
            }
            Read::AtEnd => Ok(false),
            Read::NotRetained { oldest } => Err(ReadError::NotRetained { requested, oldest }),
            Read::NotWritten { end } => Err(ReadError::NotWritten { requested, next: end }),
            Read::NoTopic => Err(ReadError::Deleted),
        }
    }

    /// The next record, or `None` at the end: one round trip when nothing
    /// is buffered.
    pub(crate) fn next(&mut self) -> Result<Option<Record>, ReadError> {
        loop {
            if let Some(record) = self.pop() {
                return Ok(Some(record));
            }
            let read = runtime::block_on(self.topic.read_call(self.next, READ_BATCH));
            if !self.take_read(read)? {
                return Ok(None);
            }
        }
    }

    /// The next record, waiting until `deadline` for one.
    pub(crate) fn next_until(&mut self, deadline: Option<Instant>) -> Result<Option<Record>, ReadError> {
        let mut waiting = RemoteWait::default();
        runtime::block_on(poll_fn(|cx| waiting.poll_next(self, cx, deadline)))
    }

    /// Moves the position to `offset`, which must be between the oldest
    /// retained offset and the end.
    pub(crate) fn seek(&mut self, offset: u64) -> Result<(), ReadError> {
        let bounds = self.topic.bounds()?;
        if offset > bounds.end {
            return Err(ReadError::NotWritten { requested: offset, next: bounds.end });
        }
        if offset < bounds.start {
            return Err(ReadError::NotRetained { requested: offset, oldest: bounds.start });
        }
        self.next = offset;
        self.buffer.clear();
        self.shared.position.store(offset, Ordering::Relaxed);
        Ok(())
    }

    /// Commits `offset` for the group: a future owning what it needs; its
    /// output is the group's committed offset.
    pub(crate) fn commit_call(&self, offset: u64) -> Call<Result<u64, CommitError>> {
        let (topic, group) = (Arc::clone(&self.topic), self.group.clone());
        Box::pin(async move {
            let call = topic.store.commit(topic.id, &group, offset);
            match within(topic.timeout(), call).await.map_err(CommitError::Backend)? {
                crate::pg::topics::Commit::Committed(at) => Ok(at),
                crate::pg::topics::Commit::BeyondEnd { end } => Err(CommitError::BeyondEnd { requested: offset, end }),
                crate::pg::topics::Commit::NoTopic => Err(CommitError::Deleted),
            }
        })
    }

    /// Notes that the group's committed offset is `offset`.
    pub(crate) fn committed_at(&mut self, offset: u64) {
        self.committed = offset;
        self.shared.committed.store(offset, Ordering::Relaxed);
    }

    /// Commits `offset`, blocking.
    pub(crate) fn commit_at(&mut self, offset: u64) -> Result<(), CommitError> {
        let committed = runtime::block_on(self.commit_call(offset))?;
        self.committed_at(committed);
        Ok(())
    }
}

impl Drop for RemoteSubscription {
    fn drop(&mut self) {
        self.topic.groups.lock().remove(&self.group);
    }
}

/// A task's (or a blocked thread's) wait for the next record of a
/// [`RemoteSubscription`]: the read in flight, or the interest and timer
/// it sleeps on.
#[derive(Default)]
pub(crate) struct RemoteWait {
    interest: Option<Interest>,
    read: Option<Call<Result<Read, BackendError>>>,
    /// The last read found nothing: sleeping on the interest.
    at_end: bool,
    timer: Option<Timer>,
}

impl std::fmt::Debug for RemoteWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWait").field("reading", &self.read.is_some()).field("at_end", &self.at_end).finish()
    }
}

impl RemoteWait {
    /// One step: a record, `None` once `deadline` passed with none, or
    /// `Pending` with the task registered on the interest and the timer.
    pub(crate) fn poll_next(
        &mut self,
        subscription: &mut RemoteSubscription,
        cx: &mut Context<'_>,
        deadline: Option<Instant>,
    ) -> Poll<Result<Option<Record>, ReadError>> {
        loop {
            if let Some(record) = subscription.pop() {
                self.at_end = false;
                return Poll::Ready(Ok(Some(record)));
            }
            if self.at_end {
                let interest = self.interest.as_ref().expect("an interest is registered before each read");
                if interest.poll_rung(cx).is_ready() {
                    self.at_end = false;
                    self.interest = None;
                    continue;
                }
                if self.timer.get_or_insert_with(Timer::new).poll_until(cx, deadline).is_ready() {
                    self.at_end = false;
                    return Poll::Ready(Ok(None));
                }
                return Poll::Pending;
            }
            if self.read.is_none() {
                // Before the read: a publish committed after it rings this.
                self.interest.get_or_insert_with(|| subscription.topic.interest());
                self.read = Some(subscription.topic.read_call(subscription.next, READ_BATCH));
            }
            let read = std::task::ready!(self.read.as_mut().expect("set above").as_mut().poll(cx));
            self.read = None;
            match subscription.take_read(read) {
                Ok(true) => {}
                Ok(false) => self.at_end = true,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

/// The topic settings of `config` on PostgreSQL; settings only files have
/// are refused unless they are at their defaults.
pub(crate) fn settings_of(config: &TopicConfig) -> Result<crate::pg::topics::TopicSettings, TopicError> {
    use crate::pg::topics::{TopicDurability, TopicSettings};
    let defaults = TopicConfig::default();
    if config.segment_bytes != defaults.segment_bytes {
        return Err(TopicError::Unsupported { backend: "postgres", setting: "TopicConfig::segment_bytes" });
    }
    if config.retention_bytes.is_some() {
        return Err(TopicError::Unsupported { backend: "postgres", setting: "TopicConfig::retention_bytes" });
    }
    let durability = match config.durability {
        Durability::Buffered => TopicDurability::Buffered,
        Durability::Interval(every) => TopicDurability::Interval(every),
        Durability::Sync => TopicDurability::Sync,
    };
    Ok(TopicSettings {
        durability,
        max_message_bytes: u32::try_from(config.max_message_bytes).unwrap_or(u32::MAX),
        retention_age: config.retention_age,
        retention_messages: None,
    })
}

/// The configuration a topic of these settings reports.
pub(crate) fn config_of(settings: &crate::pg::topics::TopicSettings) -> TopicConfig {
    use crate::pg::topics::TopicDurability;
    TopicConfig {
        durability: match settings.durability {
            TopicDurability::Buffered => Durability::Buffered,
            TopicDurability::Interval(every) => Durability::Interval(every),
            TopicDurability::Sync => Durability::Sync,
        },
        max_message_bytes: settings.max_message_bytes as usize,
        retention_age: settings.retention_age,
        ..TopicConfig::default()
    }
}
