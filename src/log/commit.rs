//! A consumer group's committed offset on disk, written by its subscription
//! (a blocking [`Subscription::commit`]) or, for a task, by the engine's
//! flusher thread ([`Subscription::commit_async`]), so that no task runs the
//! slot's `msync`.
//!
//! A task's commit is a request: the latest value asked for and a ticket
//! number. The flusher writes the latest value and raises the `written`
//! doorbell to its ticket; a task waits until `written` reaches its own
//! ticket (a later value covers an earlier one). The slot file's mutex
//! orders the flusher's writes against blocking commits, and a blocking
//! commit drops any request still pending, so an older value never
//! overwrites a newer one. Without a flusher thread the task writes itself.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use parking_lot::Mutex;

use super::doorbell::{Doorbell, Listening};
use super::format::now_us;
use super::slots::{CommittedOffset, SlotFile};
use super::subscription::{Kind, Subscription};
use super::topic::TopicLog;
use crate::error::{CommitError, IoError};
use crate::sync::task;

/// A group's offset file, shared by its subscription and the flusher.
#[derive(Debug)]
pub(crate) struct CommitSlot {
    file: Mutex<SlotFile<CommittedOffset>>,
    requested: Mutex<Requested>,
    /// The ticket of the last request written.
    written: Doorbell,
    /// Why the flusher's last write failed.
    failure: Mutex<Option<IoError>>,
}

#[derive(Debug, Default)]
struct Requested {
    value: Option<CommittedOffset>,
    tickets: u64,
}

impl CommitSlot {
    pub(crate) fn new(file: SlotFile<CommittedOffset>) -> Self {
        Self {
            file: Mutex::new(file),
            requested: Mutex::default(),
            written: Doorbell::new(0),
            failure: Mutex::new(None),
        }
    }

    /// Writes `value` now (a blocking commit), dropping any request still
    /// pending: it is older.
    pub(crate) fn write(&self, value: CommittedOffset) -> Result<(), IoError> {
        let mut file = self.file.lock();
        self.requested.lock().value = None;
        file.write(value)
    }

    /// Asks for `value` to be written; returns the request's ticket.
    fn request(&self, value: CommittedOffset) -> u64 {
        let mut requested = self.requested.lock();
        requested.tickets += 1;
        requested.value = Some(value);
        requested.tickets
    }

    /// For the flusher: writes the latest value asked for, if any, under
    /// the topic's commit gate (a backup's cut closes it).
    pub(crate) fn write_requested(&self, topic: &TopicLog) {
        let _gate = topic.commits.read();
        let mut file = self.file.lock();
        let (value, ticket) = {
            let mut requested = self.requested.lock();
            let Some(value) = requested.value.take() else { return };
            (value, requested.tickets)
        };
        match file.write(value) {
            Ok(()) => {
                self.written.set(ticket);
                self.written.notify();
            }
            Err(error) => {
                *self.failure.lock() = Some(error);
                self.written.wake();
            }
        }
    }
}

impl CommitSlot {
    /// Wakes the tasks waiting on this file's commits (the topic closed or
    /// was deleted: they see it).
    pub(crate) fn wake(&self) {
        self.written.wake();
    }
}

/// A commit in progress, from [`Subscription::commit_async`]. Resolves once
/// the offset is on disk. Dropping it before its first poll commits
/// nothing; dropping it later may still commit (the flusher writes what was
/// asked for) unless a later commit supersedes it.
#[must_use = "futures do nothing unless polled: nothing is committed until then"]
pub struct Commit<'a> {
    subscription: &'a mut Subscription,
    offset: u64,
    /// The request's ticket once asked for.
    ticket: Option<u64>,
    listening: Listening,
    done: bool,
    /// On PostgreSQL: the commit's call, once started.
    #[cfg(feature = "postgres")]
    call: Option<super::remote::Call<Result<u64, CommitError>>>,
}

impl std::fmt::Debug for Commit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commit").field("offset", &self.offset).field("done", &self.done).finish()
    }
}

impl Future for Commit<'_> {
    type Output = Result<(), CommitError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let _polling = task::enter();
        let this = self.get_mut();
        assert!(!this.done, "`Commit` polled after it resolved");
        let outcome = this.poll_commit(cx);
        if outcome.is_ready() {
            this.done = true;
            #[allow(irrefutable_let_patterns, reason = "one kind without the feature `postgres`")]
            if let Kind::Local(local) = &this.subscription.kind {
                local.offsets.written.forget(&mut this.listening);
            }
        }
        outcome
    }
}

impl Commit<'_> {
    fn poll_commit(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CommitError>> {
        let offset = self.offset;
        let subscription = match &mut self.subscription.kind {
            Kind::Local(local) => local,
            #[cfg(feature = "postgres")]
            Kind::Remote(remote) => {
                let call = self.call.get_or_insert_with(|| remote.commit_call(offset));
                let committed = std::task::ready!(call.as_mut().poll(cx))?;
                remote.committed_at(committed);
                return Poll::Ready(Ok(()));
            }
        };
        let topic = &*subscription.reader.topic;
        let ticket = match self.ticket {
            Some(ticket) => ticket,
            None => {
                subscription.check_commit(offset)?;
                if !topic.has_flusher() {
                    return Poll::Ready(subscription.commit_at(super::record::Offset::new(offset)));
                }
                let ticket = subscription.offsets.request(CommittedOffset { offset, at_us: now_us() });
                topic.queue_commit(subscription.offsets.clone());
                topic.request_flusher();
                *self.ticket.insert(ticket)
            }
        };
        let slot = &*subscription.offsets;
        loop {
            if slot.written.load() >= ticket {
                subscription.committed_at(offset);
                return Poll::Ready(Ok(()));
            }
            if let Some(error) = slot.failure.lock().clone() {
                return Poll::Ready(Err(CommitError::Io(error)));
            }
            if topic.is_deleted() {
                return Poll::Ready(Err(CommitError::Deleted));
            }
            if topic.is_closed() {
                return Poll::Ready(Err(CommitError::Closed));
            }
            let stop = || slot.failure.lock().is_some() || topic.is_deleted() || topic.is_closed();
            if slot.written.poll_wait(&mut self.listening, cx, ticket - 1, stop).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl Drop for Commit<'_> {
    fn drop(&mut self) {
        #[allow(irrefutable_let_patterns, reason = "one kind without the feature `postgres`")]
        if let Kind::Local(local) = &self.subscription.kind {
            local.offsets.written.forget(&mut self.listening);
        }
    }
}

impl Subscription {
    /// The async form of [`commit`](Subscription::commit): resolves once the
    /// offset is on disk, without blocking the thread (the engine's flusher
    /// thread writes and syncs the offset file).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use tollgate::Engine;
    ///
    /// let engine = Engine::open(dir.path())?;
    /// let orders = engine.topic("orders")?;
    /// orders.publish("order 1001")?;
    /// let mut emails = orders.subscribe("emails")?;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// let record = emails.next()?.expect("a record");
    /// emails.commit_async().await?; // the group has processed order 1001
    /// assert_eq!(emails.committed(), record.offset().next());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn commit_async(&mut self) -> Commit<'_> {
        let offset = self.position();
        self.commit_at_async(offset)
    }

    /// The async form of [`commit_at`](Subscription::commit_at).
    pub fn commit_at_async(&mut self, offset: super::record::Offset) -> Commit<'_> {
        Commit {
            subscription: self,
            offset: offset.get(),
            ticket: None,
            listening: Listening::default(),
            done: false,
            #[cfg(feature = "postgres")]
            call: None,
        }
    }
}
