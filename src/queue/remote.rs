//! Worker groups kept in PostgreSQL (feature `postgres`): what a
//! [`Worker`](super::Worker) and a [`Delivery`](super::Delivery) of a
//! PostgreSQL topic do instead of the window and the journal. A receive is
//! one call (`tg.receive`: claim the best visible jobs with `SKIP LOCKED`);
//! a settle is one call that checks the delivery's receipt.
//!
//! Waiting for a message: register an interest in the topic's
//! notifications (publishes, nacks and extensions notify when they
//! commit), then receive; with nothing to take, sleep until the interest
//! rings, the group's next job may become visible (the `retry` the receive
//! returned: a delay, a retry time or a deadline), the caller's deadline,
//! or the group's local bell (a run loop's [`Shutdown`](super::Shutdown)).

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::config::QueueConfig;
use super::delivery::Delivery;
use super::window::QueueMetrics;
use crate::error::{BackendError, QueueError, TopicError};
use crate::log::StartAt;
use crate::log::doorbell::{Doorbell, Listening};
use crate::log::remote::{Call, RemoteTopic, record};
use crate::pg::listen::Interest;
use crate::pg::runtime;
use crate::pg::topics::{Claimed, GroupId, GroupSettings, OpenGroup, Receive, Settled, within};
use crate::sync::timer::Timer;

/// A worker group of a PostgreSQL topic, shared by its workers in this
/// process.
#[derive(Debug)]
pub(crate) struct RemoteGroup {
    pub(crate) topic: Arc<RemoteTopic>,
    pub(crate) name: String,
    pub(crate) config: QueueConfig,
    pub(crate) id: GroupId,
    /// Rung by a run loop's stop: its waiting receives look again.
    pub(crate) bell: Doorbell,
    acked: AtomicU64,
    dead_lettered: AtomicU64,
    redelivered: AtomicU64,
}

impl RemoteGroup {
    /// Opens (creating if needed) the group `name` of `topic` with `config`
    /// (checked by the caller); its dead-letter topic is created with it.
    pub(crate) fn open(topic: &Arc<RemoteTopic>, name: &str, config: QueueConfig) -> Result<RemoteGroup, TopicError> {
        let settings = GroupSettings {
            filter: config.filter.as_ref().map(|pattern| pattern.as_str()),
            dead_letter: config.dead_letter_topic.as_deref(),
            max_attempts: config.max_attempts,
            visibility: config.visibility_timeout,
            start_latest: config.start == StartAt::Latest,
        };
        let call = topic.store.open_group(topic.id, name, &settings);
        match runtime::block_on(within(topic.store.operation_timeout(), call)).map_err(TopicError::Backend)? {
            OpenGroup::Opened { id, .. } => Ok(RemoteGroup {
                topic: Arc::clone(topic),
                name: name.to_owned(),
                config,
                id,
                bell: Doorbell::new(0),
                acked: AtomicU64::new(0),
                dead_lettered: AtomicU64::new(0),
                redelivered: AtomicU64::new(0),
            }),
            OpenGroup::NoTopic => Err(TopicError::Deleted),
            OpenGroup::DeadLetterIsTopic => {
                Err(TopicError::InvalidConfig { reason: "the dead-letter topic must not be the topic itself" })
            }
        }
    }

    fn timeout(&self) -> Duration {
        self.topic.store.operation_timeout()
    }

    /// One receive of up to `max` deliveries.
    fn receive_call(self: &Arc<Self>, max: usize) -> Call<Result<Receive, BackendError>> {
        let group = Arc::clone(self);
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        Box::pin(async move { within(group.timeout(), group.topic.store.receive(group.id, max)).await })
    }

    /// A delivery of `claimed`, whose deadline is `visible_for` after `asked`
    /// (read before the call: the deadline is never later than the server's).
    fn delivery(self: &Arc<Self>, claimed: Claimed, asked: Instant) -> Delivery {
        if claimed.attempt > 1 {
            self.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        let token = u64::try_from(claimed.receipt).unwrap_or(0);
        Delivery::remote(Arc::clone(self), record(claimed.message), claimed.attempt, token, asked + claimed.visible_for)
    }

    /// Settles delivery `token` of the message at `offset`, `how`.
    pub(crate) fn settle_call(self: &Arc<Self>, offset: u64, token: u64, how: Settle) -> Call<Result<(), QueueError>> {
        let group = Arc::clone(self);
        let receipt = i64::try_from(token).unwrap_or(i64::MAX);
        Box::pin(async move {
            let store = &group.topic.store;
            let call = async {
                match &how {
                    Settle::Ack => store.ack(group.id, offset, receipt).await,
                    Settle::Nack { retry_after, reason } => {
                        store.nack(group.id, offset, receipt, *retry_after, reason).await
                    }
                    Settle::Reject { reason } => store.reject(group.id, offset, receipt, reason).await,
                    Settle::Extend { by } => store.extend(group.id, offset, receipt, *by).await,
                }
            };
            match within(group.timeout(), call).await.map_err(QueueError::Backend)? {
                Settled::Done => {
                    if matches!(how, Settle::Ack) {
                        group.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                }
                Settled::DeadLettered => {
                    group.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Settled::Stale => Err(QueueError::Expired { offset }),
            }
        })
    }

    /// The group's counts now (ready, delayed, in flight from the database;
    /// the totals since this process opened it).
    pub(crate) fn metrics(&self) -> QueueMetrics {
        let counts = runtime::block_on(within(self.timeout(), self.topic.store.counts(self.id))).unwrap_or_default();
        QueueMetrics {
            ready: counts.ready,
            in_flight: counts.in_flight,
            delayed: counts.delayed,
            backlog: 0,
            lag: counts.ready + counts.in_flight + counts.delayed,
            acked: self.acked.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            redelivered: self.redelivered.load(Ordering::Relaxed),
            ..QueueMetrics::default()
        }
    }

    /// Takes up to `max` deliveries into `taken`, waiting until `deadline`
    /// for the first, or until `halt()` holds; blocking.
    pub(crate) fn receive_into(
        self: &Arc<Self>,
        max: usize,
        deadline: Option<Instant>,
        halt: &dyn Fn() -> bool,
        taken: &mut Vec<Delivery>,
    ) -> Result<(), QueueError> {
        let mut taking = RemoteTaking::new(Arc::clone(self), deadline);
        runtime::block_on(poll_fn(|cx| taking.poll_take(cx, max, halt, taken)))
    }
}

/// How a remote delivery is settled.
#[derive(Debug, Clone)]
pub(crate) enum Settle {
    Ack,
    Nack { retry_after: Duration, reason: Box<str> },
    Reject { reason: Box<str> },
    Extend { by: Duration },
}

/// A receive in progress on a PostgreSQL worker group: the call in
/// flight, or the wait after a receive that found nothing.
pub(crate) struct RemoteTaking {
    group: Arc<RemoteGroup>,
    deadline: Option<Instant>,
    interest: Option<Interest>,
    call: Option<(Call<Result<Receive, BackendError>>, Instant)>,
    /// Sleeping until then (or a notification, or the bell).
    waiting: Option<Option<Instant>>,
    timer: Timer,
    listening: Listening,
}

impl std::fmt::Debug for RemoteTaking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteTaking")
            .field("group", &self.group.name)
            .field("receiving", &self.call.is_some())
            .field("waiting", &self.waiting)
            .finish()
    }
}

impl RemoteTaking {
    pub(crate) fn new(group: Arc<RemoteGroup>, deadline: Option<Instant>) -> RemoteTaking {
        RemoteTaking {
            group,
            deadline,
            interest: None,
            call: None,
            waiting: None,
            timer: Timer::new(),
            listening: Listening::default(),
        }
    }

    /// As the embedded `Taking::poll_take`: `Ready` with deliveries, or
    /// with none once the deadline passes or `halt()` holds.
    pub(crate) fn poll_take(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        halt: &dyn Fn() -> bool,
        taken: &mut Vec<Delivery>,
    ) -> Poll<Result<(), QueueError>> {
        loop {
            if let Some(wake_at) = self.waiting {
                let rung = self.interest.as_ref().is_some_and(|interest| interest.poll_rung(cx).is_ready());
                let bell = !rung && self.group.bell.poll_wait(&mut self.listening, cx, u64::MAX, halt).is_ready();
                if !rung && !bell && self.timer.poll_until(cx, wake_at).is_pending() {
                    return Poll::Pending;
                }
                self.leave();
            }
            if max == 0 || halt() {
                return Poll::Ready(Ok(()));
            }
            if self.call.is_none() {
                // Before the receive: a publish or give-back committed after it rings this.
                self.interest.get_or_insert_with(|| self.group.topic.interest());
                self.call = Some((self.group.receive_call(max), Instant::now()));
            }
            let (call, asked) = self.call.as_mut().expect("set above");
            let received = std::task::ready!(call.as_mut().poll(cx));
            let asked = *asked;
            self.call = None;
            match received.map_err(QueueError::Backend)? {
                Receive::Taken { deliveries, dead_lettered } => {
                    self.group.dead_lettered.fetch_add(u64::from(dead_lettered), Ordering::Relaxed);
                    self.interest = None;
                    taken.extend(deliveries.into_iter().map(|claimed| self.group.delivery(claimed, asked)));
                    return Poll::Ready(Ok(()));
                }
                Receive::Nothing { dead_lettered, retry } => {
                    self.group.dead_lettered.fetch_add(u64::from(dead_lettered), Ordering::Relaxed);
                    if self.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                        self.interest = None;
                        return Poll::Ready(Ok(()));
                    }
                    let retry_at = retry.and_then(|retry| asked.checked_add(retry + Duration::from_millis(1)));
                    self.waiting = Some(match (self.deadline, retry_at) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    });
                }
                Receive::NoGroup => return Poll::Ready(Err(QueueError::Deleted)),
            }
        }
    }

    /// Stops waiting: gives up the interest and the bell's list.
    pub(crate) fn leave(&mut self) {
        self.waiting = None;
        self.interest = None;
        self.group.bell.forget(&mut self.listening);
    }
}

impl Drop for RemoteTaking {
    fn drop(&mut self) {
        self.group.bell.forget(&mut self.listening);
        // A receive in flight may claim jobs nobody will see: they come
        // back after the group's visibility timeout, as a lost worker's do.
    }
}

/// Gives a dropped delivery's message back at once (a nack without delay),
/// in the background.
pub(crate) fn give_back(group: &Arc<RemoteGroup>, offset: u64, token: u64) {
    let reason = "the delivery was dropped without being settled".into();
    let call = group.settle_call(offset, token, Settle::Nack { retry_after: Duration::ZERO, reason });
    runtime::detach(async move {
        let _ = call.await;
    });
}
