//! Workers: a group's competing consumers. One look at the group (`look`)
//! takes the best ready messages from the window (`group.rs`), dead-letters
//! those out of attempts on the way, or counts the worker idle; `receive`
//! then parks on the topic's doorbell until a publish, a give-back
//! (`wake.rs`), a delay or a deadline (the async forms, in `receive.rs`,
//! wait on the same doorbell as tasks); `metrics` reports the group's counts.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::QueueConfig;
use super::delivery::Delivery;
use super::group::{Group, SyncPoint, Take, made_durable};
use super::wake::Ticket;
use super::window::{QueueMetrics, earliest};
use crate::error::QueueError;
use crate::log::doorbell::Doorbell;
use crate::log::topic::TopicLog;
use crate::sync::task;

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
    pub(super) kind: Kind,
}

/// What a worker's group is: embedded, or (feature `postgres`) rows in
/// PostgreSQL.
#[derive(Clone)]
pub(super) enum Kind {
    Local(Arc<Group>),
    #[cfg(feature = "postgres")]
    Remote(Arc<super::remote::RemoteGroup>),
}

/// Most deliveries a batch reserves room for up front; a larger `max`
/// grows the vector as messages are taken.
const BATCH_CAPACITY: usize = 64;

/// What one look at the group found ([`Worker::look`]).
pub(super) enum Look {
    /// Messages were taken; with a sync point, they may be handed out once
    /// the journal is synced through it (a look that did not sync itself).
    Taken(SyncPoint),
    /// The engine is closed.
    Closed,
    /// Nothing was taken, but a message was dead-lettered: look again.
    Again,
    /// Nothing to take: the worker is counted idle until `leave_idle`.
    Idle(Wait),
}

/// What an idle worker waits for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Wait {
    /// The epoch noted when the worker counted itself idle.
    pub(super) ticket: Ticket,
    /// The log position read to (`u64::MAX`: the window is full, so a
    /// publish changes nothing).
    pub(super) seen: u64,
    /// The deadline, or the next delay or visibility deadline, whichever is first.
    pub(super) wake_at: Option<Instant>,
    /// The deadline passed (or the clock is simulated): do not wait.
    pub(super) give_up: bool,
}

impl Worker {
    /// A worker of `group`.
    pub(crate) fn new(group: Arc<Group>) -> Worker {
        Worker { kind: Kind::Local(group) }
    }

    /// A worker of a PostgreSQL group.
    #[cfg(feature = "postgres")]
    pub(crate) fn remote(group: Arc<super::remote::RemoteGroup>) -> Worker {
        Worker { kind: Kind::Remote(group) }
    }

    /// The embedded group. Only called on the embedded paths.
    #[inline]
    pub(super) fn local(&self) -> &Arc<Group> {
        match &self.kind {
            Kind::Local(group) => group,
            #[cfg(feature = "postgres")]
            Kind::Remote(_) => unreachable!("an embedded path of a PostgreSQL worker"),
        }
    }

    /// Whether `other` works for the same group (in this process).
    pub(super) fn same_group(&self, other: &Worker) -> bool {
        match (&self.kind, &other.kind) {
            (Kind::Local(a), Kind::Local(b)) => Arc::ptr_eq(a, b),
            #[cfg(feature = "postgres")]
            (Kind::Remote(a), Kind::Remote(b)) => Arc::ptr_eq(a, b),
            #[cfg(feature = "postgres")]
            _ => false,
        }
    }

    /// Whether the group's topic was deleted, or its engine closed.
    pub(super) fn ended(&self) -> (bool, bool) {
        match &self.kind {
            Kind::Local(group) => (group.topic.is_deleted(), group.topic.is_closed()),
            #[cfg(feature = "postgres")]
            Kind::Remote(_) => (false, false),
        }
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        match &self.kind {
            Kind::Local(group) => &group.name,
            #[cfg(feature = "postgres")]
            Kind::Remote(group) => &group.name,
        }
    }

    /// The group's configuration.
    pub fn config(&self) -> &QueueConfig {
        match &self.kind {
            Kind::Local(group) => &group.config,
            #[cfg(feature = "postgres")]
            Kind::Remote(group) => &group.config,
        }
    }

    /// The next message for this group, waiting up to `timeout` for one;
    /// `None` if none came (or the engine was closed).
    ///
    /// Takes the highest-priority ready message in the window, the oldest
    /// first within a priority. Messages whose attempts are used up (after
    /// timeouts, or a crash during their last attempt) are dead-lettered on
    /// the way, by the receiving thread.
    ///
    /// It blocks the thread: in async code use
    /// [`receive_async`](Worker::receive_async). Debug builds assert that it
    /// is not called inside the poll of one of tollgate's futures (a
    /// `run_async` handler, say).
    pub fn receive(&self, timeout: Duration) -> Result<Option<Delivery>, QueueError> {
        debug_assert!(!task::inside(), "a blocking receive inside a tollgate poll: use receive_async");
        let mut taken = Vec::with_capacity(1);
        self.receive_into(1, Instant::now().checked_add(timeout), &|| false, &mut taken)?;
        Ok(taken.pop())
    }

    /// Up to `max` messages, waiting up to `timeout` for the first one;
    /// empty if none came (or the engine was closed, or `max` is 0).
    ///
    /// The messages are taken under one lock of the group's state, in the
    /// order [`receive`](Worker::receive) would take them, and on a
    /// [`Durability::Sync`](crate::Durability::Sync) topic their attempts
    /// are on disk after one journal sync. Each is settled on its own.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use std::time::Duration;
    /// use tollgate::Engine;
    ///
    /// let engine = Engine::open(dir.path())?;
    /// let orders = engine.topic("orders")?;
    /// for n in 0..3 {
    ///     orders.publish(format!("order {n}"))?;
    /// }
    /// let payments = orders.worker("payments")?;
    /// let batch = payments.receive_batch(2, Duration::from_millis(100))?;
    /// assert_eq!(batch.len(), 2);
    /// for delivery in batch {
    ///     delivery.ack()?;
    /// }
    /// assert_eq!(payments.receive_batch(10, Duration::from_millis(100))?.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receive_batch(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>, QueueError> {
        debug_assert!(!task::inside(), "a blocking receive inside a tollgate poll: use receive_batch_async");
        let mut taken = Vec::with_capacity(max.min(BATCH_CAPACITY));
        self.receive_into(max, Instant::now().checked_add(timeout), &|| false, &mut taken)?;
        Ok(taken)
    }

    /// Takes up to `max` messages into `taken`, parking until `deadline`
    /// for the first; returns early, with nothing, once `halt()` holds (a
    /// run loop stopping: its `stop` rings the doorbell).
    pub(super) fn receive_into(
        &self,
        max: usize,
        deadline: Option<Instant>,
        halt: &dyn Fn() -> bool,
        taken: &mut Vec<Delivery>,
    ) -> Result<(), QueueError> {
        let group = match &self.kind {
            Kind::Local(group) => &**group,
            #[cfg(feature = "postgres")]
            Kind::Remote(group) => return group.receive_into(max, deadline, halt, taken),
        };
        let topic = &*group.topic;
        while max > 0 && !halt() {
            match self.look(max, deadline, taken, true)? {
                Look::Taken(_) | Look::Closed => return Ok(()),
                Look::Again => {}
                Look::Idle(wait) => {
                    if !wait.give_up {
                        let stop =
                            || group.epoch.moved(wait.ticket) || topic.is_closed() || topic.is_deleted() || halt();
                        topic.committed().wait(wait.seen, wait.wake_at, stop);
                    }
                    self.leave_idle();
                    if wait.give_up {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// One look at the group: takes up to `max` ready messages into
    /// `taken` under one lock (with one journal sync on a `Sync` topic),
    /// dead-letters a message out of attempts, or, with nothing to take,
    /// counts the worker idle and says what to wait for. The caller of an
    /// `Idle` look must call [`leave_idle`](Worker::leave_idle) after its
    /// wait (and before it looks again). With `sync_now` false, a `Sync`
    /// topic's journal sync is left to the caller (`Look::Taken`'s point):
    /// a task waits for it without blocking its thread.
    pub(super) fn look(
        &self,
        max: usize,
        deadline: Option<Instant>,
        taken: &mut Vec<Delivery>,
        sync_now: bool,
    ) -> Result<Look, QueueError> {
        let group = self.local();
        let topic = &*group.topic;
        if topic.is_deleted() {
            return Err(QueueError::Deleted);
        }
        if topic.is_closed() {
            // The engine is closed: its files may already belong to another.
            return Ok(Look::Closed);
        }
        let first = taken.len();
        let mut sync = None;
        let mut dead = None;
        {
            let mut state = group.state.lock();
            while taken.len() - first < max {
                let take = match state.take(group) {
                    Ok(take) => take,
                    // What was taken is handed out; the error comes back
                    // at the next look.
                    Err(_) if taken.len() > first => break,
                    Err(e) => return Err(e),
                };
                match take {
                    Take::Deliver(record, attempt, token, until, point) => {
                        taken.push(Delivery::new(group.clone(), record, attempt, token, until));
                        // Later points cover earlier ones (one journal).
                        sync = point.or(sync);
                    }
                    Take::DeadLetter(record, attempts, reason, point) => {
                        dead = Some((record, attempts, reason, point));
                        break;
                    }
                    Take::Nothing(_) if taken.len() > first => break,
                    Take::Nothing(next_event) => {
                        let ticket = state.idle.enter(&group.epoch);
                        // With the window full, a publish changes nothing for us.
                        let seen =
                            if state.window.has_room(group.config.window) { state.reader.next } else { u64::MAX };
                        // A simulated clock moves only when the test moves
                        // it: waiting for an instant would never end.
                        let simulated = topic.clock().is_simulated();
                        let give_up = deadline.is_some_and(|d| Instant::now() >= d) || simulated;
                        let wake_at = if simulated { None } else { earliest(deadline, next_event) };
                        return Ok(Look::Idle(Wait { ticket, seen, wake_at, give_up }));
                    }
                }
            }
        }
        // On a Sync topic the attempts are on disk before the worker sees
        // the messages; if that fails, dropping the deliveries gives them back.
        if sync_now && let Err(e) = made_durable(sync.take()) {
            taken.truncate(first);
            return Err(e);
        }
        if let Some((record, attempts, reason, point)) = dead {
            // A failure is counted (`dead_letter_failures`) and retried
            // later; it does not stop this receive.
            if made_durable(point).is_ok() {
                let _ = group.dead_letter(record, attempts, &reason);
            } else {
                // The decision is not durable yet: held back, it is tried
                // again (it is rejected in memory, so never handed out).
                group.state.lock().hold_back(record.offset().get(), reason);
            }
        }
        Ok(if taken.len() > first { Look::Taken(sync) } else { Look::Again })
    }

    /// The topic's log (for the flusher a task asks to sync).
    pub(super) fn topic_log(&self) -> &TopicLog {
        &self.local().topic
    }

    /// After the wait of an `Idle` look (or instead of it).
    pub(super) fn leave_idle(&self) {
        self.local().state.lock().idle.leave();
    }

    /// The topic's doorbell, which idle workers wait on.
    pub(super) fn doorbell(&self) -> &Doorbell {
        match &self.kind {
            Kind::Local(group) => group.topic.committed(),
            #[cfg(feature = "postgres")]
            Kind::Remote(group) => &group.bell,
        }
    }

    /// Whether a waiting worker should look again: a give-back since
    /// `ticket`, or the topic closed or deleted.
    pub(super) fn woken(&self, ticket: Ticket) -> bool {
        let group = self.local();
        let topic = &*group.topic;
        group.epoch.moved(ticket) || topic.is_closed() || topic.is_deleted()
    }

    /// The group's counts: what is ready, in flight, delayed, not yet read,
    /// and what happened since it was opened.
    ///
    /// On PostgreSQL, `ready`, `delayed` and `in_flight` are the group's
    /// jobs in the database (every process's), `lag` their sum, `backlog`
    /// zero (a publish makes the jobs), and `acked`, `dead_lettered` and
    /// `redelivered` this process's counts; the others stay zero.
    pub fn metrics(&self) -> QueueMetrics {
        let group = match &self.kind {
            Kind::Local(group) => &**group,
            #[cfg(feature = "postgres")]
            Kind::Remote(group) => return group.metrics(),
        };
        let mut state = group.state.lock();
        let clock = group.topic.clock();
        state.window.expire(clock.now());
        state.window.promote(clock.now_us());
        let end = group.topic.committed().load();
        let mut metrics = state.window.metrics(end);
        metrics.backlog = end.saturating_sub(state.reader.next);
        metrics
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker").field("group", &self.group()).finish()
    }
}
