//! Publishing from async code: [`Publish`], a future that appends at its
//! first poll and, on a `Sync` topic, waits without blocking its thread
//! until the records are durable.
//!
//! The sync itself runs on the engine's flusher thread: the task raises the
//! topic's wanted mark (`TopicLog::request_sync`), and the flusher syncs
//! through it with the same group commit as blocking publishers
//! (`TopicLog::sync_through`), which raises the durable mark and rings its
//! doorbell. So no task runs an `msync`, and tasks and threads that publish
//! at once share syncs. An engine without a flusher thread (the simulated
//! ones fuzzing uses) syncs at the task's poll instead.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::config::Durability;
use super::doorbell::Listening;
use super::record::{Message, Offset};
use super::topic::TopicLog;
use crate::error::PublishError;
use crate::sync::task;

/// A publish in progress, from [`Topic::publish_async`](crate::Topic::publish_async),
/// [`Topic::publish_message_async`](crate::Topic::publish_message_async) or
/// [`Topic::publish_batch_async`](crate::Topic::publish_batch_async).
///
/// The messages are appended at the first poll, as one atomic frame, and
/// readers see them then; on a `Sync` topic the future resolves once they
/// are durable. Dropping it before the first poll publishes nothing;
/// dropping it later does not take the records back, it only stops waiting
/// for their sync (which the flusher still runs).
#[must_use = "futures do nothing unless polled: nothing is published until then"]
pub struct Publish<T> {
    log: Target,
    state: State,
    /// What the caller gets from the offsets.
    finish: fn(Range<Offset>) -> T,
}

/// Where the messages go.
enum Target {
    Local(Arc<TopicLog>),
    /// A PostgreSQL topic: the publish's call.
    #[cfg(feature = "postgres")]
    Remote(super::remote::Call<Result<Range<Offset>, PublishError>>),
}

enum State {
    /// Not yet appended.
    Start(Vec<Message>),
    /// Appended; waiting for `durable` to reach the end.
    Durable { first: u64, end: u64, listening: Listening },
    /// Resolved.
    Done,
}

impl<T> Publish<T> {
    pub(crate) fn new(log: Arc<TopicLog>, messages: Vec<Message>, finish: fn(Range<Offset>) -> T) -> Self {
        Self { log: Target::Local(log), state: State::Start(messages), finish }
    }

    /// A publish to a PostgreSQL topic: `call` publishes.
    #[cfg(feature = "postgres")]
    pub(crate) fn remote(
        call: super::remote::Call<Result<Range<Offset>, PublishError>>,
        finish: fn(Range<Offset>) -> T,
    ) -> Self {
        Self { log: Target::Remote(call), state: State::Done, finish }
    }
}

impl<T> Future for Publish<T> {
    type Output = Result<T, PublishError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let _polling = task::enter();
        let this = self.get_mut();
        let log = match &mut this.log {
            Target::Local(log) => &**log,
            #[cfg(feature = "postgres")]
            Target::Remote(call) => return call.as_mut().poll(cx).map(|published| published.map(this.finish)),
        };
        if let State::Start(messages) = &mut this.state {
            let (first, end) = match log.append_batch(std::mem::take(messages)) {
                Ok(range) => range,
                Err(error) => {
                    this.state = State::Done;
                    return Poll::Ready(Err(error));
                }
            };
            if log.config.durability != Durability::Sync {
                this.state = State::Done;
                return Poll::Ready(Ok((this.finish)(Offset::new(first)..Offset::new(end))));
            }
            this.state = State::Durable { first, end, listening: Listening::default() };
        }
        let State::Durable { first, end, listening } = &mut this.state else {
            panic!("`Publish` polled after it resolved");
        };
        let (first, end) = (*first, *end);
        let outcome = loop {
            if log.durable.load() >= end {
                break Ok(());
            }
            if log.is_deleted() {
                break Err(PublishError::Deleted);
            }
            if log.is_poisoned() {
                break Err(log.sync_failure().unwrap_or(PublishError::PreviousIo));
            }
            if log.is_closed() {
                break Err(PublishError::Closed);
            }
            if !log.request_sync(end) {
                break log.sync_through(end);
            }
            let stop = || log.is_poisoned() || log.is_deleted() || log.is_closed();
            match log.durable.poll_wait(listening, cx, end - 1, stop) {
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        };
        log.durable.forget(listening);
        this.state = State::Done;
        Poll::Ready(outcome.map(|()| (this.finish)(Offset::new(first)..Offset::new(end))))
    }
}

impl<T> Drop for Publish<T> {
    fn drop(&mut self) {
        if let (State::Durable { listening, .. }, Target::Local(log)) = (&mut self.state, &self.log) {
            log.durable.forget(listening);
        }
    }
}

impl<T> std::fmt::Debug for Publish<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Start(messages) => format!("not appended ({} messages)", messages.len()),
            State::Durable { first, end, .. } => format!("waiting for {first}..{end} to be durable"),
            State::Done => "resolved".to_owned(),
        };
        let topic = match &self.log {
            Target::Local(log) => log.name.as_str(),
            #[cfg(feature = "postgres")]
            Target::Remote(_) => "(PostgreSQL)",
        };
        f.debug_struct("Publish").field("topic", &topic).field("state", &state).finish()
    }
}
