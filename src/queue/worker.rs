//! Worker groups: competing workers sharing a topic's messages, each
//! message settled on its own (ack, nack with a delay, reject), redelivered
//! after a visibility timeout, dead-lettered after `max_attempts`.
//!
//! A group is one `Group` behind an `Arc`, shared by its workers and their
//! deliveries, with its state under one mutex. The state tracks a window of
//! unsettled messages read from the log: ready ones ordered by priority and
//! offset, delayed ones by time, in-flight ones by deadline. Every change
//! that must survive a crash is written to the journal (`journal.rs`)
//! before it takes effect in memory.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use super::config::{DELAY_MAX, QueueConfig, VISIBILITY_MAX};
use super::journal::{Entry, Facts, GroupFiles, JournalFile, Persisted, Settled};
use crate::error::{IoError, PublishError, QueueError, ReadError, TopicError};
use crate::log::format::{
    DLQ_ATTEMPTS_HEADER, DLQ_GROUP_HEADER, DLQ_HEADERS_OMITTED_HEADER, DLQ_OFFSET_HEADER, DLQ_OMITTED_HEADER,
    DLQ_REASON_HEADER, DLQ_TOPIC_HEADER, MESSAGE_HEADERS_MAX, RESERVED_HEADER_PREFIX, now_us,
};
use crate::log::subscription::Reader;
use crate::log::topic::TopicLog;
use crate::log::{Message, Offset, Record, RecoveryMode, StartAt, TopicConfig};

/// One of a group's competing workers; cheap to clone, usable from any
/// thread. All workers of a group (clones, or from further
/// [`Topic::worker`](crate::Topic::worker) calls) share its messages: each message goes to one
/// worker at a time.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// use std::time::Duration;
/// use tollgate::{Engine, Message};
///
/// let engine = Engine::open(dir.path())?;
/// let orders = engine.topic("orders")?;
/// orders.publish(b"order 1001")?;
/// orders.publish_message(Message::new("order 1002").priority(9))?;
///
/// let payments = orders.worker("payments")?;
/// // The higher priority goes first.
/// let delivery = payments.receive(Duration::from_millis(100))?.expect("published above");
/// assert_eq!(delivery.payload().as_ref(), b"order 1002");
/// assert_eq!(delivery.attempt(), 1);
/// delivery.ack()?;
///
/// // A failure: retry in 10 ms, as attempt 2.
/// let delivery = payments.receive(Duration::from_millis(100))?.expect("published above");
/// delivery.nack(Duration::from_millis(10), "card declined")?;
/// let retried = payments.receive(Duration::from_secs(1))?.expect("retried");
/// assert_eq!((retried.offset().get(), retried.attempt()), (0, 2));
/// retried.ack()?;
/// assert_eq!(payments.metrics().acked, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Worker {
    group: Arc<Group>,
}

/// A message handed to a worker, until it is settled: by [`ack`](Delivery::ack),
/// [`nack`](Delivery::nack), [`reject`](Delivery::reject), or by its
/// visibility deadline passing. Each of those consumes the delivery, so a
/// delivery settles its message at most once.
///
/// Dropping a delivery without settling it gives the message back at once,
/// as a failed attempt (as RabbitMQ does when a consumer's channel closes).
#[must_use = "a delivery is settled with ack, nack or reject; dropping it retries the message at once"]
pub struct Delivery {
    group: Arc<Group>,
    record: Record,
    attempt: u32,
    token: u64,
    deadline: Instant,
    /// Settled (or given up by a failed settle): nothing for `Drop` to do.
    done: bool,
}

/// A group's counts, from [`Worker::metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct QueueMetrics {
    /// Messages ready to be received now (in the window).
    pub ready: u64,
    /// Messages handed to a worker and not yet settled.
    pub in_flight: u64,
    /// Messages waiting for their delivery time (a delay or a nack's retry delay).
    pub delayed: u64,
    /// Messages published but not yet read into the window (including
    /// any the group's filter will skip).
    pub backlog: u64,
    /// Messages published and not yet settled: ready, in flight, delayed and
    /// backlog.
    pub lag: u64,
    /// Acknowledged since the group was opened in this process.
    pub acked: u64,
    /// Dead-lettered (rejected, or out of attempts) since the group was opened.
    pub dead_lettered: u64,
    /// Deliveries that were a second or later attempt, since the group was opened.
    pub redelivered: u64,
    /// Deliveries whose visibility deadline passed, since the group was opened.
    pub timed_out: u64,
    /// Messages retention deleted before the group settled them, since it was opened.
    pub expired: u64,
    /// Dead letters that could not be published (each is tried again a
    /// second later), since the group was opened.
    pub dead_letter_failures: u64,
}

pub(crate) struct Group {
    name: String,
    topic: Arc<TopicLog>,
    dead_letter: Arc<TopicLog>,
    config: QueueConfig,
    files: GroupFiles,
    state: Mutex<GroupState>,
    /// Bumped (then waiters woken) when a message becomes ready or window
    /// space frees up while a worker waits.
    epoch: AtomicU64,
}

struct GroupState {
    /// Low-water mark and settled offsets (in memory, and as far as the
    /// journal goes, on disk); attempts and delays of messages not yet read.
    persisted: Persisted,
    journal: Arc<JournalFile>,
    /// Reads the log; `reader.next` is the first offset not yet read.
    reader: Reader,
    /// Boxed: the map moves its values around as it changes.
    tracked: BTreeMap<u64, Box<Tracked>>,
    /// (priority, offset) of ready messages: highest priority, then lowest offset, first.
    ready: BTreeSet<(Reverse<u8>, u64)>,
    /// (time, offset) of delayed messages.
    delayed: BTreeSet<(u64, u64)>,
    /// (deadline, offset) of messages in flight.
    deadlines: BTreeSet<(Instant, u64)>,
    next_token: u64,
    /// Workers waiting in `receive`.
    idle: u32,
    metrics: QueueMetrics,
}

/// An unsettled message in the window.
struct Tracked {
    record: Record,
    priority: u8,
    attempts: u32,
    retry_at_us: u64,
    state: State,
    /// Why the last attempt failed, for the dead letter.
    last_error: Option<Arc<str>>,
    /// Rejected, and its dead letter failed: dead-letter it, never deliver it.
    rejected: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    Delayed(u64),
    InFlight {
        deadline: Instant,
        token: u64,
    },
    /// Being published to the dead-letter topic.
    Leaving,
}

/// What `take` found.
enum Take {
    /// The record, its attempt, the delivery's token and deadline, and the
    /// journal entries to sync through before handing it out.
    Deliver(Record, u32, u64, Instant, SyncPoint),
    /// The record, its attempts and the reason, to dead-letter once the
    /// decision (a `Rejected` entry) is durable.
    DeadLetter(Record, u32, Arc<str>, SyncPoint),
    /// Nothing ready; the next delay or deadline ends then.
    Nothing(Option<Instant>),
}

impl Group {
    /// Opens the worker group `name` of `topic`: reads its saved state (so
    /// nothing acknowledged comes back and attempt counts carry on) and
    /// starts a new generation of its journal. `dead_letter` is its
    /// dead-letter topic, already open. The caller holds the topic's group
    /// registry and checked the name, the configuration, and that the topic
    /// is neither deleted nor closed.
    pub(crate) fn open(
        topic: &Arc<TopicLog>,
        name: &str,
        config: QueueConfig,
        dead_letter: Arc<TopicLog>,
        mode: RecoveryMode,
    ) -> Result<Arc<Group>, TopicError> {
        let storage = &*topic.storage;
        let files = GroupFiles::new(&topic.dir, name);
        files.create_dir(storage)?;
        let mut persisted = match files.load(storage, mode)? {
            Some(persisted) => persisted,
            None => {
                let low = match config.start {
                    StartAt::Earliest => topic.segments.read().keys().next().copied().unwrap_or(0),
                    StartAt::Latest => topic.committed.load(),
                };
                Persisted { low, ..Persisted::default() }
            }
        };
        persisted.generation += 1;
        let journal = files.save(storage, &persisted)?;
        let reader = Reader::new(topic.clone(), persisted.low);
        let state = GroupState {
            persisted,
            journal: Arc::new(journal),
            reader,
            tracked: BTreeMap::new(),
            ready: BTreeSet::new(),
            delayed: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            next_token: 0,
            idle: 0,
            metrics: QueueMetrics::default(),
        };
        Ok(Arc::new(Group {
            name: name.to_owned(),
            topic: topic.clone(),
            dead_letter,
            config,
            files,
            state: Mutex::new(state),
            epoch: AtomicU64::new(0),
        }))
    }

    /// The group's configuration.
    pub(crate) fn config(&self) -> &QueueConfig {
        &self.config
    }
}

impl Worker {
    /// A worker of `group`.
    pub(crate) fn new(group: Arc<Group>) -> Worker {
        Worker { group }
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group.name
    }

    /// The group's configuration.
    pub fn config(&self) -> &QueueConfig {
        &self.group.config
    }

    /// The next message for this group, waiting up to `timeout` for one;
    /// `None` if none came (or the engine was closed).
    ///
    /// Takes the highest-priority ready message in the window, the oldest
    /// first within a priority. Messages whose attempts are used up (after
    /// timeouts, or a crash during their last attempt) are dead-lettered on
    /// the way, by the receiving thread.
    pub fn receive(&self, timeout: Duration) -> Result<Option<Delivery>, QueueError> {
        let group = &self.group;
        let topic = &*group.topic;
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if topic.deleted.load(Ordering::Acquire) {
                return Err(QueueError::Deleted);
            }
            if topic.closed.load(Ordering::Acquire) {
                // The engine is closed: its files may already belong to another.
                return Ok(None);
            }
            let (epoch, seen, wake_at) = {
                let mut state = group.state.lock();
                match state.take(group)? {
                    Take::Deliver(record, attempt, token, until, sync) => {
                        drop(state);
                        let delivery =
                            Delivery { group: group.clone(), record, attempt, token, deadline: until, done: false };
                        // On a Sync topic the attempt is on disk before the
                        // worker sees the message; if that fails, dropping the
                        // delivery gives the message back.
                        made_durable(sync)?;
                        return Ok(Some(delivery));
                    }
                    Take::DeadLetter(record, attempts, reason, sync) => {
                        drop(state);
                        // A failure is counted (`dead_letter_failures`) and
                        // retried later; it does not stop this receive.
                        if made_durable(sync).is_ok() {
                            let _ = group.dead_letter(record, attempts, &reason);
                        } else {
                            // The decision is not durable yet: held back, it
                            // is tried again (it is rejected in memory, so
                            // never handed out).
                            let retry_at_us = now_us().saturating_add(DEAD_LETTER_RETRY.as_micros() as u64);
                            let mut state = group.state.lock();
                            state.give_back(record.offset().get(), retry_at_us, reason);
                            state.metrics.dead_letter_failures += 1;
                        }
                        continue;
                    }
                    Take::Nothing(next_event) => {
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            return Ok(None);
                        }
                        state.idle += 1;
                        // With the window full, a publish changes nothing for us.
                        let seen = if state.tracked.len() < group.config.window { state.reader.next } else { u64::MAX };
                        (group.epoch.load(Ordering::Acquire), seen, earliest(deadline, next_event))
                    }
                }
            };
            let stop = || {
                group.epoch.load(Ordering::Acquire) != epoch
                    || topic.closed.load(Ordering::Relaxed)
                    || topic.deleted.load(Ordering::Relaxed)
            };
            topic.committed.wait(seen, wake_at, stop);
            group.state.lock().idle -= 1;
        }
    }

    /// The group's counts: what is ready, in flight, delayed, not yet read,
    /// and what happened since it was opened.
    pub fn metrics(&self) -> QueueMetrics {
        let group = &*self.group;
        let mut state = group.state.lock();
        state.expire(Instant::now());
        state.promote(now_us());
        let end = group.topic.committed.load();
        let mut metrics = state.metrics;
        metrics.ready = state.ready.len() as u64;
        metrics.delayed = state.delayed.len() as u64;
        // In flight: handed out, or being dead-lettered.
        metrics.in_flight = (state.tracked.len() - state.ready.len() - state.delayed.len()) as u64;
        metrics.backlog = end.saturating_sub(state.reader.next);
        let persisted = &state.persisted;
        metrics.lag = end.saturating_sub(persisted.low).saturating_sub(persisted.settled.len());
        metrics
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker").field("topic", &self.group.topic.name).field("group", &self.group.name).finish()
    }
}

/// How long a message whose dead letter failed is held back before the
/// next try.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(1);

/// Longest reason kept in a dead letter, in bytes.
const DEAD_LETTER_REASON_MAX: usize = 1024;

/// Room the dead-letter topic leaves above its topic's message limit for
/// the dead-letter headers (names, topic and group names, a reason).
const DEAD_LETTER_HEADROOM: usize = 4096;

/// The configuration a dead-letter topic is created with: `source`'s, with
/// room for the headers a dead letter adds, if the limits allow it.
pub(crate) fn dead_letter_config(source: TopicConfig) -> TopicConfig {
    let max_message_bytes = source.max_message_bytes + DEAD_LETTER_HEADROOM;
    let needed = (max_message_bytes as u64 + 2 * 64).next_power_of_two();
    // Dead letters are kept until someone deals with them: no retention.
    let config = TopicConfig {
        max_message_bytes,
        segment_bytes: source.segment_bytes.max(needed),
        retention_bytes: None,
        retention_age: None,
        ..source
    };
    if config.validate().is_ok() { config } else { source }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What an operation waits for before it returns: on a `Sync` topic, the
/// journal synced through the entries written so far; elsewhere nothing.
type SyncPoint = Option<(Arc<JournalFile>, u64)>;

/// Waits for `sync` (group commit: one sync serves every waiter behind it).
fn made_durable(sync: SyncPoint) -> Result<(), QueueError> {
    if let Some((journal, written)) = sync {
        journal.sync_through(written)?;
    }
    Ok(())
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Delivery {
    /// The message.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The message's offset in its topic.
    pub fn offset(&self) -> Offset {
        self.record.offset()
    }

    /// The message's payload.
    pub fn payload(&self) -> &Bytes {
        self.record.payload()
    }

    /// Which delivery of the message this is: 1 for the first, counted
    /// across crashes and restarts.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the message goes back to the group if this delivery is not
    /// settled or extended by then.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Acknowledges the message: it is done, and never delivered again. With
    /// [`Durability::Sync`](crate::Durability::Sync) on the topic, the
    /// acknowledgement is on disk when this returns; otherwise it survives a
    /// crash of the process at once, and a power cut once synced (see the
    /// README's delivery guarantees).
    pub fn ack(mut self) -> Result<(), QueueError> {
        self.done = true;
        let group = self.group.clone();
        let sync = {
            let mut state = group.state.lock();
            state.check_mine(self.offset().get(), self.token)?;
            let offset = self.offset().get();
            let written = state.append(&group, Entry::Settled { offset, how: Settled::Acked })?;
            state.settle(offset);
            state.metrics.acked += 1;
            group.after_settle(&state);
            state.sync_point(written)
        };
        made_durable(sync)
    }

    /// Gives the message back as a failed attempt, to be delivered again
    /// after `retry_after` (zero: at once); `reason` says why, and goes into
    /// the dead letter if this was the last attempt, in which case the
    /// message is dead-lettered now.
    ///
    /// A `retry_after` above [`DELAY_MAX`] fails with
    /// [`QueueError::TooLong`] and changes nothing: the message stays in
    /// flight until its deadline.
    pub fn nack(mut self, retry_after: Duration, reason: &str) -> Result<(), QueueError> {
        self.done = true;
        if retry_after > DELAY_MAX {
            return Err(QueueError::TooLong { requested: retry_after, max: DELAY_MAX });
        }
        let group = self.group.clone();
        let offset = self.offset().get();
        let mut state = group.state.lock();
        state.check_mine(offset, self.token)?;
        if self.attempt >= group.config.max_attempts {
            // Decided under the same lock as the check: a nack in time is
            // never turned into `Expired`.
            let sync = state.leave_for_dead_letter(&group, offset)?;
            drop(state);
            return self.dead_letter_now(sync, reason);
        }
        let (retry_at_us, written) = if retry_after.is_zero() {
            (0, 0)
        } else {
            let retry_at_us = now_us().saturating_add(retry_after.as_micros() as u64);
            (retry_at_us, state.append(&group, Entry::Nacked { offset, retry_at_us })?)
        };
        state.give_back(offset, retry_at_us, reason.into());
        group.wake_idle(&state);
        let sync = state.sync_point(written);
        drop(state);
        // On a Sync topic the retry time is on disk when this returns.
        made_durable(sync)
    }

    /// Refuses the message: it goes to the dead-letter topic now, with
    /// `reason`, whatever attempts it has left.
    pub fn reject(mut self, reason: &str) -> Result<(), QueueError> {
        self.done = true;
        let group = self.group.clone();
        let offset = self.offset().get();
        let sync = {
            let mut state = group.state.lock();
            state.check_mine(offset, self.token)?;
            state.leave_for_dead_letter(&group, offset)?
        };
        self.dead_letter_now(sync, reason)
    }

    /// Dead-letters the message (a reject, or a nack of the last attempt),
    /// once the decision to (journaled by
    /// [`GroupState::leave_for_dead_letter`]) is as durable as the topic's
    /// durability promises. If that sync fails, the message goes back to
    /// the group, held back for a while, and the next worker to receive it
    /// dead-letters it: it is never handed out again.
    fn dead_letter_now(self, sync: SyncPoint, reason: &str) -> Result<(), QueueError> {
        let group = &self.group;
        if let Err(e) = made_durable(sync) {
            let retry_at_us = now_us().saturating_add(DEAD_LETTER_RETRY.as_micros() as u64);
            let mut state = group.state.lock();
            state.give_back(self.offset().get(), retry_at_us, reason.into());
            state.metrics.dead_letter_failures += 1;
            group.wake_idle(&state);
            return Err(e);
        }
        group.dead_letter(self.record.clone(), self.attempt, reason)
    }

    /// Moves the visibility deadline to `by` from now (SQS's
    /// `ChangeMessageVisibility`), for work that takes longer than the
    /// group's visibility timeout. Fails with [`QueueError::Expired`] if the
    /// deadline already passed, and with [`QueueError::TooLong`] if `by` is
    /// above [`VISIBILITY_MAX`].
    pub fn extend(&mut self, by: Duration) -> Result<(), QueueError> {
        if by > VISIBILITY_MAX {
            return Err(QueueError::TooLong { requested: by, max: VISIBILITY_MAX });
        }
        let offset = self.offset().get();
        let mut state = self.group.state.lock();
        state.check_mine(offset, self.token)?;
        let deadline = Instant::now() + by;
        state.deadlines.remove(&(self.deadline, offset));
        state.deadlines.insert((deadline, offset));
        if let Some(tracked) = state.tracked.get_mut(&offset) {
            tracked.state = State::InFlight { deadline, token: self.token };
        }
        if deadline < self.deadline {
            // Waiting workers may be parked until the old, later deadline.
            self.group.wake_idle(&state);
        }
        self.deadline = deadline;
        Ok(())
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let group = &*self.group;
        let offset = self.record.offset().get();
        let mut state = group.state.lock();
        if state.check_mine(offset, self.token).is_ok() {
            state.give_back(offset, 0, "the delivery was dropped without being settled".into());
            group.wake_idle(&state);
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("offset", &self.record.offset().get())
            .field("attempt", &self.attempt)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Group {
    /// Wakes waiting workers, after a change that may let one of them take
    /// a message. Called with the state locked, so that a worker about to
    /// wait is either counted in `idle` or has not looked yet.
    fn wake_idle(&self, state: &GroupState) {
        if state.idle > 0 {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            self.topic.committed.wake();
        }
    }

    /// A message left the window: a full window has room again.
    fn after_settle(&self, state: &GroupState) {
        if state.tracked.len() + 1 >= self.config.window {
            self.wake_idle(state);
        }
    }

    /// Syncs everything journaled so far.
    pub(crate) fn sync(&self) -> Result<(), IoError> {
        let journal = self.state.lock().journal.clone();
        journal.sync_through(journal.written())
    }

    /// Publishes `record` to the dead-letter topic (synced), then settles
    /// it. The message must be `Leaving`. If publishing fails it goes back
    /// to ready, to be tried again by the next worker to receive it.
    fn dead_letter(&self, record: Record, attempts: u32, reason: &str) -> Result<(), QueueError> {
        let offset = record.offset().get();
        let reason = truncate(reason, DEAD_LETTER_REASON_MAX);
        let mut published = self.dead_letter.publish_message(self.dead_letter_message(&record, attempts, reason, true));
        if let Err(PublishError::TooLarge { .. } | PublishError::InvalidMessage { .. }) = published {
            // The dead-letter topic's limit is lower than this topic's: the
            // payload stays behind, at `tollgate.dlq.offset` in this topic.
            published = self.dead_letter.publish_message(self.dead_letter_message(&record, attempts, reason, false));
        }
        let published = published.and_then(|_| self.dead_letter.sync(true));
        let mut state = self.state.lock();
        let written = match published {
            Ok(()) => {
                state.append(self, Entry::Settled { offset, how: Settled::DeadLettered }).map_err(QueueError::from)
            }
            Err(e) => Err(QueueError::DeadLetter(e)),
        };
        let written = match written {
            Ok(written) => written,
            Err(e) => {
                // Back to the group, held back for a while so that other
                // messages go on flowing: then a worker that would receive
                // it tries to dead-letter it again (rejected or out of
                // attempts, it is never handed out again).
                let retry_at_us = now_us().saturating_add(DEAD_LETTER_RETRY.as_micros() as u64);
                state.give_back(offset, retry_at_us, reason.into());
                state.metrics.dead_letter_failures += 1;
                self.wake_idle(&state);
                return Err(e);
            }
        };
        state.settle(offset);
        state.metrics.dead_lettered += 1;
        self.after_settle(&state);
        let sync = state.sync_point(written);
        drop(state);
        made_durable(sync)
    }

    /// The dead letter of `record`: its key, headers (but its delivery
    /// time) and payload, and where it came from and why.
    fn dead_letter_message(&self, record: &Record, attempts: u32, reason: &str, with_payload: bool) -> Message {
        let mut message = if with_payload {
            Message::new(record.payload().clone())
        } else {
            Message::new(Bytes::new())
                .system_header(DLQ_OMITTED_HEADER, Bytes::from(record.payload().len().to_string()))
        };
        if let Some(key) = record.key() {
            message = message.key(key);
        }
        let text = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        message = message
            .system_header(DLQ_TOPIC_HEADER, text(&self.topic.name))
            .system_header(DLQ_GROUP_HEADER, text(&self.name))
            .system_header(DLQ_OFFSET_HEADER, text(&record.offset().get().to_string()))
            .system_header(DLQ_ATTEMPTS_HEADER, text(&attempts.to_string()))
            .system_header(DLQ_REASON_HEADER, text(reason));
        if record.priority() > 0 {
            message = message.priority(record.priority());
        }
        let user_headers = record.headers().filter(|(name, _)| !name.starts_with(RESERVED_HEADER_PREFIX));
        let room = MESSAGE_HEADERS_MAX - message.system_header_count() - 1;
        let mut omitted = 0;
        for (name, value) in user_headers {
            if room > message.header_count() {
                message = message.header(name, Bytes::copy_from_slice(value));
            } else {
                omitted += 1;
            }
        }
        if omitted > 0 {
            message = message.system_header(DLQ_HEADERS_OMITTED_HEADER, Bytes::from(omitted.to_string()));
        }
        message
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let journal = self.state.get_mut().journal.clone();
        let _ = journal.sync_through(journal.written());
    }
}

impl GroupState {
    /// Finds a message to hand out: expires deadlines, promotes due delays,
    /// reads the log into the window, then takes the best ready message.
    fn take(&mut self, group: &Group) -> Result<Take, QueueError> {
        if self.reader.topic.closed.load(Ordering::Acquire) {
            // Checked under the lock: after close, the group's files may
            // belong to another engine. `receive` then returns `None`.
            return Ok(Take::Nothing(None));
        }
        let now = Instant::now();
        let now_us = now_us();
        self.expire(now);
        self.promote(now_us);
        self.scan(group, now_us)?;
        let Some((Reverse(priority), offset)) = self.ready.pop_first() else {
            let delayed =
                self.delayed.first().map(|&(at_us, _)| now + Duration::from_micros(at_us - now_us.min(at_us)));
            let deadline = self.deadlines.first().map(|&(at, _)| at);
            return Ok(Take::Nothing(earliest(delayed, deadline)));
        };
        let tracked = self.tracked.get_mut(&offset).expect("ready messages are tracked");
        if tracked.attempts >= group.config.max_attempts || tracked.rejected {
            let (record, attempts) = (tracked.record.clone(), tracked.attempts);
            let reason =
                tracked.last_error.clone().unwrap_or_else(|| "its last attempt was cut short by a restart".into());
            return match self.leave_for_dead_letter(group, offset) {
                Ok(sync) => Ok(Take::DeadLetter(record, attempts, reason, sync)),
                Err(e) => {
                    self.ready.insert((Reverse(priority), offset));
                    Err(e.into())
                }
            };
        }
        let attempt = tracked.attempts + 1;
        let written = match self.append(group, Entry::Delivered { offset, attempt }) {
            Ok(written) => written,
            Err(e) => {
                self.ready.insert((Reverse(priority), offset));
                return Err(e.into());
            }
        };
        let token = self.next_token;
        self.next_token += 1;
        let deadline = now + group.config.visibility_timeout;
        let tracked = self.tracked.get_mut(&offset).expect("ready messages are tracked");
        tracked.attempts = attempt;
        tracked.state = State::InFlight { deadline, token };
        let record = tracked.record.clone();
        self.deadlines.insert((deadline, offset));
        if attempt > 1 {
            self.metrics.redelivered += 1;
        }
        Ok(Take::Deliver(record, attempt, token, deadline, self.sync_point(written)))
    }

    /// Gives messages whose visibility deadline passed back to the group.
    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, offset)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(tracked) = self.tracked.get_mut(&offset) {
                tracked.state = State::Ready;
                tracked.last_error = Some("its visibility timeout passed".into());
                self.ready.insert((Reverse(tracked.priority), offset));
                self.metrics.timed_out += 1;
            }
        }
    }

    /// Makes delayed messages whose time has come ready.
    fn promote(&mut self, now_us: u64) {
        while let Some(&(at_us, offset)) = self.delayed.first() {
            if at_us > now_us {
                break;
            }
            self.delayed.pop_first();
            if let Some(tracked) = self.tracked.get_mut(&offset) {
                tracked.state = State::Ready;
                self.ready.insert((Reverse(tracked.priority), offset));
            }
        }
    }

    /// Reads records from the log into the window until it is full or the
    /// log is read to its end.
    fn scan(&mut self, group: &Group, now_us: u64) -> Result<(), QueueError> {
        while self.tracked.len() < group.config.window {
            let record = match self.reader.next() {
                Ok(Some(record)) => record,
                Ok(None) => return Ok(()),
                Err(ReadError::NotRetained { oldest, .. }) => {
                    // Retention deleted messages the group had not settled.
                    let lost = (self.reader.next..oldest).filter(|&o| self.persisted.is_open(o)).count();
                    self.metrics.expired += lost as u64;
                    self.persisted.settle_range(self.reader.next, oldest);
                    self.reader.seek(oldest)?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let offset = record.offset().get();
            if !self.persisted.is_open(offset) {
                continue;
            }
            if group.config.filter.as_ref().is_some_and(|f| !f.matches_record(record.key())) {
                // Not the group's: settled without a journal entry, as
                // reading the log again filters it out again.
                self.persisted.settle(offset);
                continue;
            }
            let facts = self.persisted.facts.remove(&offset).unwrap_or_default();
            let priority = record.priority();
            let ready_at = record.deliver_at_us().unwrap_or(0).max(facts.retry_at_us);
            let state = if ready_at > now_us {
                self.delayed.insert((ready_at, offset));
                State::Delayed(ready_at)
            } else {
                self.ready.insert((Reverse(priority), offset));
                State::Ready
            };
            let tracked = Tracked {
                record,
                priority,
                attempts: facts.attempts,
                retry_at_us: facts.retry_at_us,
                state,
                last_error: None,
                rejected: facts.rejected,
            };
            self.tracked.insert(offset, Box::new(tracked));
        }
        Ok(())
    }

    /// Checks that the delivery `token` of `offset` is still in flight and
    /// before its deadline (expiring it if not).
    fn check_mine(&mut self, offset: u64, token: u64) -> Result<(), QueueError> {
        if self.reader.topic.closed.load(Ordering::Acquire) {
            return Err(QueueError::Closed);
        }
        if self.reader.topic.deleted.load(Ordering::Acquire) {
            return Err(QueueError::Deleted);
        }
        self.expire(Instant::now());
        match self.tracked.get(&offset).map(|t| t.state) {
            Some(State::InFlight { token: t, .. }) if t == token => Ok(()),
            _ => Err(QueueError::Expired { offset }),
        }
    }

    /// Takes an in-flight message out of the deadline set, to dead-letter it.
    fn leave(&mut self, offset: u64) {
        if let Some(tracked) = self.tracked.get_mut(&offset) {
            if let State::InFlight { deadline, .. } = tracked.state {
                self.deadlines.remove(&(deadline, offset));
            }
            tracked.state = State::Leaving;
        }
    }

    /// Takes the message at `offset` (in flight, or just taken from the
    /// ready set) out of circulation to be dead-lettered. The decision is
    /// journaled first, as a `Rejected` entry unless it has one (and on a
    /// Sync topic synced through the returned point), so that if the dead
    /// letter fails, or the process or machine dies, the message is
    /// dead-lettered later, never delivered again, even by a group reopened
    /// with a higher `max_attempts`.
    fn leave_for_dead_letter(&mut self, group: &Group, offset: u64) -> Result<SyncPoint, IoError> {
        let written = if self.tracked.get(&offset).is_some_and(|tracked| tracked.rejected) {
            self.journal.written()
        } else {
            let written = self.append(group, Entry::Rejected { offset })?;
            if let Some(tracked) = self.tracked.get_mut(&offset) {
                tracked.rejected = true;
            }
            written
        };
        self.leave(offset);
        Ok(self.sync_point(written))
    }

    /// An in-flight message failed: ready again, or delayed until `retry_at_us`.
    fn give_back(&mut self, offset: u64, retry_at_us: u64, reason: Arc<str>) {
        let Some(tracked) = self.tracked.get_mut(&offset) else { return };
        if let State::InFlight { deadline, .. } = tracked.state {
            self.deadlines.remove(&(deadline, offset));
        }
        tracked.last_error = Some(reason);
        tracked.retry_at_us = retry_at_us;
        if retry_at_us > now_us() {
            tracked.state = State::Delayed(retry_at_us);
            self.delayed.insert((retry_at_us, offset));
        } else {
            tracked.state = State::Ready;
            self.ready.insert((Reverse(tracked.priority), offset));
        }
    }

    /// Removes a settled message from the window.
    fn settle(&mut self, offset: u64) {
        if let Some(tracked) = self.tracked.remove(&offset) {
            match tracked.state {
                State::InFlight { deadline, .. } => {
                    self.deadlines.remove(&(deadline, offset));
                }
                State::Ready => {
                    self.ready.remove(&(Reverse(tracked.priority), offset));
                }
                State::Delayed(at) => {
                    self.delayed.remove(&(at, offset));
                }
                State::Leaving => {}
            }
        }
        self.persisted.settle(offset);
    }

    /// What an operation that wrote `written` journal entries waits for.
    fn sync_point(&self, written: u64) -> SyncPoint {
        (self.reader.topic.config.durability == crate::Durability::Sync).then(|| (self.journal.clone(), written))
    }

    /// Writes a journal entry, compacting first if the journal is full.
    /// Returns the entries written so far, to sync through.
    fn append(&mut self, group: &Group, entry: Entry) -> Result<u64, IoError> {
        if self.journal.failed() {
            // A failed sync may have dropped pages of the journal: start over
            // from the state in memory, written out whole and synced.
            self.compact(group)?;
        }
        if let Some(written) = self.journal.append(entry)? {
            return Ok(written);
        }
        self.compact(group)?;
        Ok(self.journal.append(entry)?.expect("a new journal has room"))
    }

    /// Writes the whole state as a new state file and starts a new journal.
    fn compact(&mut self, group: &Group) -> Result<(), IoError> {
        let mut snapshot = self.persisted.clone();
        snapshot.generation += 1;
        for (&offset, tracked) in &self.tracked {
            if tracked.attempts > 0 || tracked.retry_at_us > 0 || tracked.rejected {
                let facts =
                    Facts { attempts: tracked.attempts, retry_at_us: tracked.retry_at_us, rejected: tracked.rejected };
                snapshot.facts.insert(offset, facts);
            }
        }
        let journal = group.files.save(&*group.topic.storage, &snapshot)?;
        self.journal.retire();
        self.journal = Arc::new(journal);
        self.persisted.generation = snapshot.generation;
        Ok(())
    }
}

/// Loom model of the wake-up protocol of `receive` (docs/CONCURRENCY.md,
/// "Waiting for work without lost wake-ups"), with the group's state reduced
/// to what the protocol reads: `idle` and a count of takeable messages. Run
/// with `RUSTFLAGS="--cfg loom --cfg crossbeam_loom" cargo test --release
/// --lib loom_worker`.
#[cfg(all(test, loom))]
mod tests {
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicU64, Ordering};
    use loom::thread;

    use crate::sync::Mutex;

    struct Model {
        /// (idle workers, takeable messages), as under `Group::state`.
        state: Mutex<(u32, u32)>,
        epoch: AtomicU64,
    }

    /// A worker that finds nothing and decides to sleep is always woken by a
    /// nack that makes a message takeable: the nack sees it idle and bumps
    /// the epoch, or the worker sees the message itself.
    #[test]
    fn loom_worker_never_sleeps_through_a_give_back() {
        loom::model(|| {
            let model = Arc::new(Model { state: Mutex::new((0, 0)), epoch: AtomicU64::new(0) });
            let worker = {
                let model = model.clone();
                thread::spawn(move || {
                    // `receive`: under the lock, take or count itself idle.
                    let seen = {
                        let mut state = model.state.lock();
                        if state.1 > 0 {
                            state.1 -= 1;
                            return (false, true);
                        }
                        state.0 += 1;
                        model.epoch.load(Ordering::Acquire)
                    };
                    // The park's validation: sleep only if the epoch is unchanged.
                    let sleeps = model.epoch.load(Ordering::Acquire) == seen;
                    (sleeps, false)
                })
            };
            // `nack`: under the lock, make a message takeable; wake if anyone is idle.
            let woke = {
                let mut state = model.state.lock();
                state.1 += 1;
                if state.0 > 0 {
                    model.epoch.fetch_add(1, Ordering::AcqRel);
                    true
                } else {
                    false
                }
            };
            let (sleeps, took) = worker.join().unwrap();
            assert!(!sleeps || woke, "the worker slept and the nack saw nobody idle");
            assert!(!(took && sleeps), "a worker that took a message does not wait");
        });
    }
}
