//! A worker's async forms: the [`Receive`] and [`ReceiveBatch`] futures and
//! the [`Deliveries`] stream. Each looks at the group as `receive` does
//! (`Worker::look`); with nothing to take it stays counted idle and waits as
//! a task on the topic's doorbell (the list parked workers join, rung by
//! publishes and give-backs) and on a timer for the next delay or deadline.
//! A future dropped while it waits leaves the idle count and the doorbell's
//! list; it holds no delivery between polls, so it has nothing to give back.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;

use super::delivery::Delivery;
use super::journal::JournalFile;
use super::worker::{Look, Wait, Worker};
use crate::error::QueueError;
use crate::log::doorbell::Listening;
use crate::sync::task;
use crate::sync::timer::Timer;

impl Worker {
    /// The async form of [`receive`](Worker::receive): the next message,
    /// waiting up to `timeout` for one; `None` if none came (or the engine
    /// was closed).
    ///
    /// The future waits on the topic's doorbell and a runtime-free timer, so
    /// it works under any executor. Dropping it before it completes leaves
    /// no trace: the worker leaves the group's idle count, and no message is
    /// taken except in the poll that returns it (a delivery taken while its
    /// attempt is being synced goes back if the future is dropped). On a
    /// [`Durability::Sync`](crate::Durability::Sync) topic the attempt is on
    /// disk before the delivery is returned; the engine's flusher thread
    /// runs that journal sync, so the executor's thread never blocks on it.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    /// # runtime.block_on(async {
    /// use std::time::Duration;
    /// use tollgate::Engine;
    ///
    /// let engine = Engine::open(dir.path())?;
    /// let orders = engine.topic("orders")?;
    /// orders.publish(b"order 1001")?;
    ///
    /// let payments = orders.worker("payments")?;
    /// let delivery = payments.receive_async(Duration::from_secs(1)).await?.expect("published above");
    /// assert_eq!(delivery.payload().as_ref(), b"order 1001");
    /// delivery.ack()?;
    /// assert!(payments.receive_async(Duration::from_millis(10)).await?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receive_async(&self, timeout: Duration) -> Receive {
        Receive { taking: Taking::new(self.clone(), Instant::now().checked_add(timeout)) }
    }

    /// The async form of [`receive_batch`](Worker::receive_batch): up to
    /// `max` messages under one lock of the group's state, waiting up to
    /// `timeout` for the first; empty if none came.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    /// # runtime.block_on(async {
    /// use std::time::Duration;
    /// use tollgate::Engine;
    ///
    /// let engine = Engine::open(dir.path())?;
    /// let orders = engine.topic("orders")?;
    /// orders.publish(b"order 1001")?;
    /// orders.publish(b"order 1002")?;
    ///
    /// let payments = orders.worker("payments")?;
    /// let batch = payments.receive_batch_async(10, Duration::from_secs(1)).await?;
    /// assert_eq!(batch.len(), 2);
    /// for delivery in batch {
    ///     delivery.ack()?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receive_batch_async(&self, max: usize, timeout: Duration) -> ReceiveBatch {
        ReceiveBatch { taking: Taking::new(self.clone(), Instant::now().checked_add(timeout)), max }
    }

    /// The group's messages as a [`Stream`] of deliveries, for this worker:
    /// it waits as long as it takes for each, and ends when the engine
    /// closes. Errors are yielded and the stream goes on, except
    /// [`QueueError::Deleted`], which is yielded once and ends it.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    /// # runtime.block_on(async {
    /// use std::future::poll_fn;
    /// use std::pin::Pin;
    /// use futures_core::Stream;
    /// use tollgate::Engine;
    ///
    /// let engine = Engine::open(dir.path())?;
    /// let orders = engine.topic("orders")?;
    /// orders.publish(b"order 1001")?;
    ///
    /// let mut deliveries = orders.worker("payments")?.deliveries();
    /// let delivery = poll_fn(|cx| Pin::new(&mut deliveries).poll_next(cx)).await.expect("published")?;
    /// assert_eq!(delivery.payload().as_ref(), b"order 1001");
    /// delivery.ack()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn deliveries(&self) -> Deliveries {
        Deliveries { taking: Taking::new(self.clone(), None), done: false }
    }
}

/// A task taking messages: the worker, its deadline, and, while it waits,
/// its idle registration, its place on the doorbell and its timer; or, on a
/// `Sync` topic, the deliveries taken and the journal sync they wait for.
#[derive(Debug)]
pub(super) enum Taking {
    Local(LocalTaking),
    #[cfg(feature = "postgres")]
    Remote(super::remote::RemoteTaking),
}

impl Taking {
    pub(super) fn new(worker: Worker, deadline: Option<Instant>) -> Taking {
        match &worker.kind {
            #[cfg(feature = "postgres")]
            super::worker::Kind::Remote(group) => {
                Taking::Remote(super::remote::RemoteTaking::new(Arc::clone(group), deadline))
            }
            _ => Taking::Local(LocalTaking::new(worker, deadline)),
        }
    }

    /// See [`LocalTaking::poll_take`].
    pub(super) fn poll_take(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        halt: &dyn Fn() -> bool,
        taken: &mut Vec<Delivery>,
    ) -> Poll<Result<(), QueueError>> {
        match self {
            Taking::Local(local) => local.poll_take(cx, max, halt, taken),
            #[cfg(feature = "postgres")]
            Taking::Remote(remote) => remote.poll_take(cx, max, halt, taken),
        }
    }

    /// Leaves the idle count and the doorbell's list, if counted.
    pub(super) fn leave(&mut self) {
        match self {
            Taking::Local(local) => local.leave(),
            #[cfg(feature = "postgres")]
            Taking::Remote(remote) => remote.leave(),
        }
    }
}

/// The embedded form of [`Taking`].
#[derive(Debug)]
pub(super) struct LocalTaking {
    worker: Worker,
    deadline: Option<Instant>,
    /// Counted idle in the group: `leave_idle` is owed.
    idle: Option<Wait>,
    listening: Listening,
    timer: Timer,
    /// Taken, not yet handed out: their attempts are being synced.
    unsynced: Vec<Delivery>,
    syncing: Option<Syncing>,
}

/// Deliveries' attempts being synced by the engine's flusher.
#[derive(Debug)]
struct Syncing {
    journal: Arc<JournalFile>,
    upto: u64,
    listening: Listening,
}

impl LocalTaking {
    fn new(worker: Worker, deadline: Option<Instant>) -> LocalTaking {
        LocalTaking {
            worker,
            deadline,
            idle: None,
            listening: Listening::default(),
            timer: Timer::new(),
            unsynced: Vec::new(),
            syncing: None,
        }
    }

    /// Hands out the deliveries taken once their attempts are on disk
    /// (the flusher syncs the journal; without one, the task does). If the
    /// sync fails, dropping them gives them back.
    fn poll_synced(&mut self, cx: &mut Context<'_>, taken: &mut Vec<Delivery>) -> Poll<Result<(), QueueError>> {
        let Some(syncing) = &mut self.syncing else { return Poll::Ready(Ok(())) };
        let topic = self.worker.topic_log();
        let synced = std::task::ready!(
            syncing.journal.poll_synced(cx, syncing.upto, &mut syncing.listening, || { topic.request_group_sync() })
        );
        self.syncing = None;
        match synced {
            Ok(()) => {
                taken.append(&mut self.unsynced);
                Poll::Ready(Ok(()))
            }
            Err(error) => {
                self.unsynced.clear();
                Poll::Ready(Err(error.into()))
            }
        }
    }

    /// Takes up to `max` messages into `taken`: `Ready` with some, or with
    /// none once the deadline passes, the engine closes or `halt()` holds
    /// (a stopping run loop rings the doorbell); otherwise `Pending`,
    /// counted idle and registered on the doorbell and the timer.
    pub(super) fn poll_take(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        halt: &dyn Fn() -> bool,
        taken: &mut Vec<Delivery>,
    ) -> Poll<Result<(), QueueError>> {
        if self.syncing.is_some() {
            return self.poll_synced(cx, taken);
        }
        loop {
            if let Some(wait) = self.idle {
                // Without a deadline (a stream) a simulated clock's give-up
                // does not apply: it waits for a ring.
                let give_up = wait.give_up && self.deadline.is_some();
                let woken = || self.worker.woken(wait.ticket) || halt();
                let doorbell = self.worker.doorbell();
                if !give_up
                    && doorbell.poll_wait(&mut self.listening, cx, wait.seen, woken).is_pending()
                    && self.timer.poll_until(cx, wait.wake_at).is_pending()
                {
                    return Poll::Pending;
                }
                self.leave();
                if give_up {
                    return Poll::Ready(Ok(()));
                }
            }
            if max == 0 || halt() {
                return Poll::Ready(Ok(()));
            }
            match self.worker.look(max, self.deadline, &mut self.unsynced, false)? {
                Look::Taken(Some((journal, upto))) => {
                    self.syncing = Some(Syncing { journal, upto, listening: Listening::default() });
                    return self.poll_synced(cx, taken);
                }
                Look::Taken(None) | Look::Closed => {
                    taken.append(&mut self.unsynced);
                    return Poll::Ready(Ok(()));
                }
                Look::Again => {}
                Look::Idle(wait) => self.idle = Some(wait),
            }
        }
    }

    /// Leaves the idle count and the doorbell's list, if counted.
    pub(super) fn leave(&mut self) {
        if self.idle.take().is_some() {
            self.worker.leave_idle();
        }
        self.worker.doorbell().forget(&mut self.listening);
    }
}

impl Drop for LocalTaking {
    fn drop(&mut self) {
        self.leave();
        // Deliveries taken but not handed out go back as they drop.
        if let Some(syncing) = &mut self.syncing {
            syncing.journal.forget(&mut syncing.listening);
        }
    }
}

/// The future of [`Worker::receive_async`]: the next delivery, or `None` on
/// timeout or once the engine is closed. It is `Send` and `'static`.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let runtime = tokio::runtime::Builder::new_current_thread().build()?;
/// # runtime.block_on(async {
/// use std::time::Duration;
///
/// let engine = tollgate::Engine::open(dir.path())?;
/// let payments = engine.topic("orders")?.worker("payments")?;
/// let receive: tollgate::Receive = payments.receive_async(Duration::from_millis(5));
/// assert!(tokio::spawn(receive).await??.is_none()); // nothing published
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Receive {
    taking: Taking,
}

impl Future for Receive {
    type Output = Result<Option<Delivery>, QueueError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let _polling = task::enter();
        let mut taken = Vec::with_capacity(1);
        match self.get_mut().taking.poll_take(cx, 1, &|| false, &mut taken) {
            Poll::Ready(result) => Poll::Ready(result.map(|()| taken.pop())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The future of [`Worker::receive_batch_async`]: up to its `max`
/// deliveries, empty on timeout or once the engine is closed.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let runtime = tokio::runtime::Builder::new_current_thread().build()?;
/// # runtime.block_on(async {
/// use std::time::Duration;
///
/// let engine = tollgate::Engine::open(dir.path())?;
/// let payments = engine.topic("orders")?.worker("payments")?;
/// let batch: tollgate::ReceiveBatch = payments.receive_batch_async(8, Duration::from_millis(5));
/// assert!(batch.await?.is_empty()); // nothing published
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct ReceiveBatch {
    taking: Taking,
    max: usize,
}

impl Future for ReceiveBatch {
    type Output = Result<Vec<Delivery>, QueueError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let _polling = task::enter();
        let this = self.get_mut();
        let mut taken = Vec::new();
        match this.taking.poll_take(cx, this.max, &|| false, &mut taken) {
            Poll::Ready(result) => Poll::Ready(result.map(|()| taken)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A worker's messages as a [`Stream`] ([`Worker::deliveries`]): it waits
/// for each as long as it takes, yields [`QueueError::Deleted`] once if the
/// topic is deleted, and ends when the engine closes.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let runtime = tokio::runtime::Builder::new_current_thread().build()?;
/// # runtime.block_on(async {
/// use std::future::poll_fn;
/// use std::pin::Pin;
/// use futures_core::Stream;
/// use tollgate::QueueError;
///
/// let engine = tollgate::Engine::open(dir.path())?;
/// let mut deliveries = engine.topic("orders")?.worker("payments")?.deliveries();
/// engine.delete_topic("orders")?;
/// let first = poll_fn(|cx| Pin::new(&mut deliveries).poll_next(cx)).await;
/// assert!(matches!(first, Some(Err(QueueError::Deleted))));
/// assert!(poll_fn(|cx| Pin::new(&mut deliveries).poll_next(cx)).await.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "streams do nothing unless polled"]
#[derive(Debug)]
pub struct Deliveries {
    taking: Taking,
    /// The topic was deleted and that was yielded: the stream has ended.
    done: bool,
}

impl Stream for Deliveries {
    type Item = Result<Delivery, QueueError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let _polling = task::enter();
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let mut taken = Vec::with_capacity(1);
        match this.taking.poll_take(cx, 1, &|| false, &mut taken) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(taken.pop().map(Ok)),
            Poll::Ready(Err(QueueError::Deleted)) => {
                this.done = true;
                Poll::Ready(Some(Err(QueueError::Deleted)))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
        }
    }
}
