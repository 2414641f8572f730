//! Settling from async code: [`Settling`], the future of
//! [`Delivery::ack_async`], [`Delivery::nack_async`] and
//! [`Delivery::reject_async`].
//!
//! The settle is decided under the group lock at the first poll, exactly as
//! the blocking form decides it. On a `Sync` topic it then waits for the
//! journal entries it wrote to be durable without blocking the thread: the
//! task asks the engine's flusher for a pass (`TopicLog::request_group_sync`),
//! the flusher syncs the journal through what tasks asked for (group commit,
//! shared with blocking settles), and the journal's synced mark rings the
//! task (`JournalFile::poll_synced`). Without a flusher thread the task
//! syncs itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::delivery::{Decided, Delivery, How};
use super::journal::JournalFile;
use crate::error::QueueError;
use crate::log::doorbell::Listening;
use crate::sync::task;

/// A settle in progress, from [`Delivery::ack_async`],
/// [`Delivery::nack_async`] or [`Delivery::reject_async`]. Resolves once the
/// settle is as durable as the topic promises (and, for a dead letter, once
/// it is published).
///
/// Dropping it before its first poll settles nothing: the delivery is
/// dropped, which gives the message back as a failed attempt. Dropping it
/// later does not undo the settle; it only stops waiting for its sync.
#[must_use = "futures do nothing unless polled: the delivery is settled at the first poll"]
pub struct Settling {
    delivery: Option<Delivery>,
    how: Option<How>,
    waiting: Option<Waiting>,
    /// A PostgreSQL delivery's settle, once started.
    #[cfg(feature = "postgres")]
    call: Option<crate::log::remote::Call<Result<(), QueueError>>>,
}

/// A decided settle waiting for its journal entries to be durable.
struct Waiting {
    journal: Arc<JournalFile>,
    upto: u64,
    listening: Listening,
    /// The dead letter to publish once durable, with its reason.
    dead_letter: Option<Box<str>>,
}

impl Future for Settling {
    type Output = Result<(), QueueError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let _polling = task::enter();
        let this = self.get_mut();
        #[cfg(feature = "postgres")]
        {
            if let (Some(how), Some(delivery)) = (&this.how, &mut this.delivery)
                && let Some(call) = delivery.remote_settle(how)
            {
                this.how = None;
                this.call = Some(call);
            }
            if let Some(call) = &mut this.call {
                let settled = std::task::ready!(call.as_mut().poll(cx));
                this.call = None;
                this.delivery = None;
                return Poll::Ready(settled);
            }
        }
        if let Some(how) = this.how.take() {
            let delivery = this.delivery.as_mut().expect("a settle not yet decided has its delivery");
            let (sync, dead_letter) = match delivery.decide(how) {
                Err(error) => return Poll::Ready(Err(error)),
                Ok(Decided::Durable(sync)) => (sync, None),
                Ok(Decided::DeadLetter(sync, reason)) => (sync, Some(reason)),
            };
            match sync {
                None => return Poll::Ready(this.finish(Ok(()), dead_letter.as_deref())),
                Some((journal, upto)) => {
                    this.waiting = Some(Waiting { journal, upto, listening: Listening::default(), dead_letter });
                }
            }
        }
        let Some(waiting) = &mut this.waiting else { panic!("`Settling` polled after it resolved") };
        let delivery = this.delivery.as_ref().expect("a settle in progress has its delivery");
        let topic = &delivery.group().topic;
        let synced = std::task::ready!(
            waiting.journal.poll_synced(cx, waiting.upto, &mut waiting.listening, || { topic.request_group_sync() })
        );
        let dead_letter = waiting.dead_letter.take();
        this.waiting = None;
        Poll::Ready(this.finish(synced.map_err(QueueError::from), dead_letter.as_deref()))
    }
}

impl Settling {
    fn new(delivery: Delivery, how: How) -> Self {
        Self {
            delivery: Some(delivery),
            how: Some(how),
            waiting: None,
            #[cfg(feature = "postgres")]
            call: None,
        }
    }

    /// Ends the settle once its entries are durable (`synced`): publishes
    /// the dead letter if there is one.
    fn finish(&mut self, synced: Result<(), QueueError>, dead_letter: Option<&str>) -> Result<(), QueueError> {
        let delivery = self.delivery.take().expect("a settle in progress has its delivery");
        match dead_letter {
            Some(reason) => delivery.dead_letter_after(synced, reason),
            None => synced,
        }
    }
}

impl Drop for Settling {
    fn drop(&mut self) {
        if let Some(waiting) = &mut self.waiting {
            waiting.journal.forget(&mut waiting.listening);
        }
    }
}

impl std::fmt::Debug for Settling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settling")
            .field("delivery", &self.delivery)
            .field("how", &self.how)
            .field("waiting_for_sync", &self.waiting.is_some())
            .finish()
    }
}

/// The async forms of the settles: decided at the first poll as the
/// blocking forms decide them; on a `Sync` topic they wait for the journal
/// without blocking the thread (the engine's flusher runs the sync).
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// use std::time::Duration;
/// use tollgate::{Durability, Engine, TopicConfig};
///
/// let engine = Engine::open(dir.path())?;
/// let orders = engine.create_topic("orders", TopicConfig { durability: Durability::Sync, ..TopicConfig::default() })?;
/// orders.publish("order 1001")?;
/// let payments = orders.worker("payments")?;
/// # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
/// let delivery = payments.receive_async(Duration::from_secs(1)).await?.expect("a message");
/// delivery.ack_async().await?; // on disk now
/// # Ok::<(), tollgate::QueueError>(())
/// # })?;
/// assert_eq!(payments.metrics().acked, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl Delivery {
    /// The async form of [`ack`](Delivery::ack).
    pub fn ack_async(self) -> Settling {
        Settling::new(self, How::Ack)
    }

    /// The async form of [`nack`](Delivery::nack).
    pub fn nack_async(self, retry_after: Duration, reason: &str) -> Settling {
        Settling::new(self, How::Nack { retry_after, reason: reason.into() })
    }

    /// The async form of [`reject`](Delivery::reject). The dead letter's own
    /// publish runs at the poll that finds the decision durable (on a
    /// `Sync` dead-letter topic, with its sync).
    pub fn reject_async(self, reason: &str) -> Settling {
        Settling::new(self, How::Reject { reason: reason.into() })
    }
}
