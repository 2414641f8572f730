//! A delivery: a message handed to a worker, until it is settled, and its
//! settles (ack, nack, reject, extend, and a drop without one), each
//! checked against the delivery's token under the group lock, so that a
//! delivery settles its message at most once and never after its deadline.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::config::{DELAY_MAX, VISIBILITY_MAX};
use super::group::{Group, SyncPoint, made_durable};
use super::journal::{Entry, Settled};
use crate::error::QueueError;
use crate::log::{Offset, Record};

/// A message handed to a worker, until it is settled: by [`ack`](Delivery::ack),
/// [`nack`](Delivery::nack), [`reject`](Delivery::reject), or by its
/// visibility deadline passing. Each of those consumes the delivery, so a
/// delivery settles its message at most once.
///
/// Dropping a delivery without settling it gives the message back at once,
/// as a failed attempt (as RabbitMQ does when a consumer's channel closes).
#[must_use = "a delivery is settled with ack, nack or reject; dropping it retries the message at once"]
pub struct Delivery {
    group: Owner,
    record: Record,
    attempt: u32,
    token: u64,
    deadline: Instant,
    /// Settled (or given up by a failed settle): nothing for `Drop` to do.
    done: bool,
}

/// The group a delivery came from: embedded, or (feature `postgres`) a
/// PostgreSQL worker group (the token is then the delivery's receipt).
enum Owner {
    Local(Arc<Group>),
    #[cfg(feature = "postgres")]
    Remote(Arc<super::remote::RemoteGroup>),
}

impl Delivery {
    /// The delivery `token` of `record`, as `attempt`, in flight until
    /// `deadline`.
    pub(super) fn new(group: Arc<Group>, record: Record, attempt: u32, token: u64, deadline: Instant) -> Delivery {
        Delivery { group: Owner::Local(group), record, attempt, token, deadline, done: false }
    }

    /// A delivery of a PostgreSQL worker group; `receipt` is what its
    /// settles present.
    #[cfg(feature = "postgres")]
    pub(super) fn remote(
        group: Arc<super::remote::RemoteGroup>,
        record: Record,
        attempt: u32,
        receipt: u64,
        deadline: Instant,
    ) -> Delivery {
        Delivery { group: Owner::Remote(group), record, attempt, token: receipt, deadline, done: false }
    }

    /// The embedded group. Only called on the embedded paths.
    #[inline]
    fn local(&self) -> &Arc<Group> {
        match &self.group {
            Owner::Local(group) => group,
            #[cfg(feature = "postgres")]
            Owner::Remote(_) => unreachable!("an embedded path of a PostgreSQL delivery"),
        }
    }

    /// For a PostgreSQL delivery: the call that settles it `how` (the
    /// delivery is done from here on). `None` for an embedded one.
    #[cfg(feature = "postgres")]
    pub(super) fn remote_settle(&mut self, how: &How) -> Option<crate::log::remote::Call<Result<(), QueueError>>> {
        use super::remote::Settle;
        let Owner::Remote(group) = &self.group else { return None };
        self.done = true;
        if Instant::now() >= self.deadline {
            // The server's deadline may be a little later (the local one is
            // counted from before the receive): the local one decides, as
            // for an embedded delivery.
            let error = QueueError::Expired { offset: self.offset().get() };
            return Some(Box::pin(std::future::ready(Err(error))));
        }
        let settle = match how {
            How::Ack => Settle::Ack,
            How::Nack { retry_after, reason } => {
                if *retry_after > DELAY_MAX {
                    let error = QueueError::TooLong { requested: *retry_after, max: DELAY_MAX };
                    return Some(Box::pin(std::future::ready(Err(error))));
                }
                Settle::Nack { retry_after: *retry_after, reason: reason.clone() }
            }
            How::Reject { reason } => Settle::Reject { reason: reason.clone() },
        };
        Some(group.settle_call(self.offset().get(), self.token, settle))
    }

    /// Settles `how`: blocking, whichever the backend.
    fn settle_blocking(mut self, how: How) -> Result<(), QueueError> {
        #[cfg(feature = "postgres")]
        if let Some(call) = self.remote_settle(&how) {
            return crate::pg::runtime::block_on(call);
        }
        let decided = self.decide(how)?;
        self.finish_blocking(decided)
    }

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
    /// README's delivery guarantees). [`ack_async`](Self::ack_async) waits
    /// without blocking the thread.
    pub fn ack(self) -> Result<(), QueueError> {
        self.settle_blocking(How::Ack)
    }

    /// Gives the message back as a failed attempt, to be delivered again
    /// after `retry_after` (zero: at once); `reason` says why, and goes into
    /// the dead letter if this was the last attempt, in which case the
    /// message is dead-lettered now.
    ///
    /// A `retry_after` above [`DELAY_MAX`] fails with
    /// [`QueueError::TooLong`] and changes nothing: the message stays in
    /// flight until its deadline.
    pub fn nack(self, retry_after: Duration, reason: &str) -> Result<(), QueueError> {
        self.settle_blocking(How::Nack { retry_after, reason: reason.into() })
    }

    /// Refuses the message: it goes to the dead-letter topic now, with
    /// `reason`, whatever attempts it has left.
    pub fn reject(self, reason: &str) -> Result<(), QueueError> {
        self.settle_blocking(How::Reject { reason: reason.into() })
    }

    /// Settles the message `how` under the group lock; returns what the
    /// settle still waits for. The delivery is done from here on, whatever
    /// happens.
    pub(super) fn decide(&mut self, how: How) -> Result<Decided, QueueError> {
        self.done = true;
        if let How::Nack { retry_after, .. } = how
            && retry_after > DELAY_MAX
        {
            return Err(QueueError::TooLong { requested: retry_after, max: DELAY_MAX });
        }
        let group = self.local().clone();
        let offset = self.offset().get();
        let mut state = group.state.lock();
        state.check_mine(offset, self.token)?;
        match how {
            How::Ack => Ok(Decided::Durable(state.settle(&group, offset, Settled::Acked)?)),
            How::Nack { reason, .. } if self.attempt >= group.config.max_attempts => {
                // Decided under the same lock as the check: a nack in time is
                // never turned into `Expired`.
                Ok(Decided::DeadLetter(state.leave_for_dead_letter(&group, offset)?, reason))
            }
            How::Nack { retry_after, reason } => {
                let (retry_at_us, written) = if retry_after.is_zero() {
                    (0, 0)
                } else {
                    let retry_at_us = group.topic.clock().now_us().saturating_add(retry_after.as_micros() as u64);
                    (retry_at_us, state.append(&group, Entry::Nacked { offset, retry_at_us })?)
                };
                state.window.give_back(offset, retry_at_us, reason.into(), group.topic.clock().now_us());
                group.wake_idle(&state);
                // On a Sync topic the retry time is on disk when the nack returns.
                Ok(Decided::Durable(state.sync_point(written)))
            }
            How::Reject { reason } => Ok(Decided::DeadLetter(state.leave_for_dead_letter(&group, offset)?, reason)),
        }
    }

    /// Waits for what `decided` needs, blocking the thread.
    fn finish_blocking(self, decided: Decided) -> Result<(), QueueError> {
        match decided {
            Decided::Durable(sync) => made_durable(sync),
            Decided::DeadLetter(sync, reason) => {
                let synced = made_durable(sync);
                self.dead_letter_after(synced, &reason)
            }
        }
    }

    /// Dead-letters the message (a reject, or a nack of the last attempt),
    /// once the decision to (journaled by
    /// `GroupState::leave_for_dead_letter`) is as durable as the topic's
    /// durability promises: `synced` says whether it is. If that sync
    /// failed, the message goes back to the group, held back for a while,
    /// and the next worker to receive it dead-letters it: it is never handed
    /// out again.
    pub(super) fn dead_letter_after(self, synced: Result<(), QueueError>, reason: &str) -> Result<(), QueueError> {
        let group = self.local();
        if let Err(e) = synced {
            let mut state = group.state.lock();
            state.hold_back(self.offset().get(), reason.into());
            group.wake_idle(&state);
            return Err(e);
        }
        group.dead_letter(self.record.clone(), self.attempt, reason)
    }

    /// The group's topic (for the flusher a settling task asks to sync).
    pub(super) fn group(&self) -> &Group {
        self.local()
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
        #[cfg(feature = "postgres")]
        if let Owner::Remote(group) = &self.group {
            let asked = Instant::now();
            if asked >= self.deadline {
                return Err(QueueError::Expired { offset });
            }
            let call = group.settle_call(offset, self.token, super::remote::Settle::Extend { by });
            crate::pg::runtime::block_on(call)?;
            self.deadline = asked + by;
            return Ok(());
        }
        let group = match &self.group {
            Owner::Local(group) => group,
            #[cfg(feature = "postgres")]
            Owner::Remote(_) => unreachable!("handled above"),
        };
        let mut state = group.state.lock();
        state.check_mine(offset, self.token)?;
        let deadline = group.topic.clock().now() + by;
        state.window.extend(offset, self.token, deadline);
        if deadline < self.deadline {
            // Waiting workers may be parked until the old, later deadline.
            group.wake_idle(&state);
        }
        self.deadline = deadline;
        Ok(())
    }
}

/// How a delivery is settled.
#[derive(Debug)]
pub(super) enum How {
    Ack,
    Nack { retry_after: Duration, reason: Box<str> },
    Reject { reason: Box<str> },
}

/// What a settle waits for once decided under the group lock.
pub(super) enum Decided {
    /// The journal synced through its entries (on a `Sync` topic).
    Durable(SyncPoint),
    /// The same, then the dead letter published, with this reason.
    DeadLetter(SyncPoint, Box<str>),
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let group = match &self.group {
            Owner::Local(group) => &**group,
            #[cfg(feature = "postgres")]
            Owner::Remote(group) => {
                if Instant::now() < self.deadline {
                    super::remote::give_back(group, self.record.offset().get(), self.token);
                }
                return;
            }
        };
        let offset = self.record.offset().get();
        let mut state = group.state.lock();
        if state.check_mine(offset, self.token).is_ok() {
            let now_us = group.topic.clock().now_us();
            state.window.give_back(offset, 0, "the delivery was dropped without being settled".into(), now_us);
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
