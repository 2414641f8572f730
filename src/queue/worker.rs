//! Workers: a group's competing consumers. `receive` takes the best ready
//! message from the window (`group.rs`), dead-letters those out of attempts
//! on the way, and otherwise parks on the topic's doorbell until a publish,
//! a give-back (`wake.rs`), a delay or a deadline; `metrics` reports the
//! group's counts.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::QueueConfig;
use super::delivery::Delivery;
use super::group::{Group, Take, made_durable};
use super::window::{QueueMetrics, earliest};
use crate::error::QueueError;

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
            if topic.is_deleted() {
                return Err(QueueError::Deleted);
            }
            if topic.is_closed() {
                // The engine is closed: its files may already belong to another.
                return Ok(None);
            }
            let (ticket, seen, wake_at) = {
                let mut state = group.state.lock();
                match state.take(group)? {
                    Take::Deliver(record, attempt, token, until, sync) => {
                        drop(state);
                        let delivery = Delivery::new(group.clone(), record, attempt, token, until);
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
                            group.state.lock().hold_back(record.offset().get(), reason);
                        }
                        continue;
                    }
                    Take::Nothing(next_event) => {
                        // A simulated clock moves only when the test moves
                        // it: waiting would never end on its own.
                        if deadline.is_some_and(|d| Instant::now() >= d) || topic.clock().is_simulated() {
                            return Ok(None);
                        }
                        let ticket = state.idle.enter(&group.epoch);
                        // With the window full, a publish changes nothing for us.
                        let seen =
                            if state.window.has_room(group.config.window) { state.reader.next } else { u64::MAX };
                        (ticket, seen, earliest(deadline, next_event))
                    }
                }
            };
            let stop = || group.epoch.moved(ticket) || topic.is_closed() || topic.is_deleted();
            topic.committed().wait(seen, wake_at, stop);
            group.state.lock().idle.leave();
        }
    }

    /// The group's counts: what is ready, in flight, delayed, not yet read,
    /// and what happened since it was opened.
    pub fn metrics(&self) -> QueueMetrics {
        let group = &*self.group;
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
        f.debug_struct("Worker").field("topic", &self.group.topic.name()).field("group", &self.group.name).finish()
    }
}
