//! A subscription's async forms: the [`NextRecord`] future, the [`Records`]
//! stream, and [`Progress`], its position read from any thread. They wait on
//! the topic's doorbell as tasks (`doorbell.rs`, the same list parked threads
//! join) and on a `sync::timer::Timer` for the deadline; they never spin and
//! need no executor of their own.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;

use super::doorbell::Listening;
use super::record::{Offset, Record};
use super::subscription::{Kind, Local, Shared, Subscription};
use super::topic::TopicLog;
use crate::error::ReadError;
use crate::sync::timer::Timer;
use crate::sync::{Ordering, task};

/// What a task waits with between polls: its place on the topic's doorbell
/// and its timer. Dropping it gives up the place (`Doorbell::forget`) and
/// disarms the timer, so a dropped future or stream leaves no trace.
#[derive(Debug)]
struct Waiting {
    topic: Arc<TopicLog>,
    listening: Listening,
    timer: Timer,
}

impl Waiting {
    fn new(topic: &Arc<TopicLog>) -> Waiting {
        Waiting { topic: topic.clone(), listening: Listening::default(), timer: Timer::new() }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.topic.committed().forget(&mut self.listening);
    }
}

impl Subscription {
    /// The async form of [`next_timeout`](Subscription::next_timeout): the
    /// next record, waiting up to `timeout` for one to be published; `None`
    /// on timeout, or at once if the engine has been closed.
    ///
    /// The future waits on the topic's doorbell (a publish wakes it) and a
    /// runtime-free timer; it works under any executor. Dropping it before
    /// it completes leaves no trace: the position moves only when a record
    /// is returned.
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
    /// let mut billing = orders.subscribe("billing")?;
    /// let record = billing.next_async(Duration::from_secs(1)).await?.expect("published above");
    /// assert_eq!(record.payload().as_ref(), b"order 1001");
    /// assert!(billing.next_async(Duration::from_millis(10)).await?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next_async(&mut self, timeout: Duration) -> NextRecord<'_> {
        let deadline = Instant::now().checked_add(timeout);
        let inner = match &mut self.kind {
            Kind::Local(local) => {
                let waiting = Waiting::new(&local.reader.topic);
                NextInner::Local { subscription: local, deadline, waiting }
            }
            #[cfg(feature = "postgres")]
            Kind::Remote(remote) => {
                NextInner::Remote { subscription: remote, deadline, waiting: super::remote::RemoteWait::default() }
            }
        };
        NextRecord { inner }
    }

    /// The subscription as a [`Stream`] of records, in offset order, ending
    /// when the engine closes. Errors are yielded and the stream goes on
    /// (after [`ReadError::NotRetained`] the position stays put, as with
    /// [`next`](Subscription::next)), except [`ReadError::Deleted`], which is
    /// yielded once and ends it.
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
    /// let mut records = orders.subscribe("billing")?.records();
    /// let progress = records.progress();
    /// let next = poll_fn(|cx| Pin::new(&mut records).poll_next(cx)).await;
    /// assert_eq!(next.expect("published")?.payload().as_ref(), b"order 1001");
    /// assert_eq!(progress.position().get(), 1);
    /// records.subscription_mut().commit()?;
    /// assert_eq!(progress.lag(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn records(self) -> Records {
        let waiting = match &self.kind {
            Kind::Local(local) => Waits::Local(Waiting::new(&local.reader.topic)),
            #[cfg(feature = "postgres")]
            Kind::Remote(_) => Waits::Remote(super::remote::RemoteWait::default()),
        };
        Records { waiting, subscription: self, done: false }
    }

    /// A handle that reads this subscription's position, committed offset
    /// and lag from any thread, also while a [`Records`] stream owns it.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use tollgate::Engine;
    ///
    /// let engine = Engine::open(dir.path())?;
    /// let orders = engine.topic("orders")?;
    /// orders.publish(b"order 1001")?;
    /// let mut billing = orders.subscribe("billing")?;
    /// let progress = billing.progress();
    /// assert_eq!(progress.lag(), 1);
    /// billing.next()?;
    /// billing.commit()?;
    /// let watcher = std::thread::spawn(move || (progress.position().get(), progress.lag()));
    /// assert_eq!(watcher.join().unwrap(), (1, 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn progress(&self) -> Progress {
        match &self.kind {
            Kind::Local(local) => {
                Progress { topic: Ends::Local(local.reader.topic.clone()), shared: local.shared.clone() }
            }
            #[cfg(feature = "postgres")]
            Kind::Remote(remote) => {
                Progress { topic: Ends::Remote(remote.topic.clone()), shared: remote.shared.clone() }
            }
        }
    }
}

impl Local {
    /// One step of a task's wait for the next record: the record, the end
    /// (`None`: closed, or the deadline passed), or `Pending` with the task
    /// registered on the doorbell and the timer.
    fn poll_record(
        &mut self,
        waiting: &mut Waiting,
        cx: &mut Context<'_>,
        deadline: Option<Instant>,
    ) -> Poll<Result<Option<Record>, ReadError>> {
        loop {
            if let Some(record) = self.next()? {
                return Poll::Ready(Ok(Some(record)));
            }
            let topic = &*waiting.topic;
            if topic.is_deleted() {
                return Poll::Ready(Err(ReadError::Deleted));
            }
            if topic.is_closed() {
                return Poll::Ready(Ok(None));
            }
            let stop = || topic.is_closed() || topic.is_deleted();
            if topic.committed().poll_wait(&mut waiting.listening, cx, self.reader.next, stop).is_ready() {
                continue;
            }
            if waiting.timer.poll_until(cx, deadline).is_ready() {
                return Poll::Ready(self.next());
            }
            return Poll::Pending;
        }
    }
}

/// The future of [`Subscription::next_async`]: the next record, or `None`
/// on timeout or once the engine is closed.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let runtime = tokio::runtime::Builder::new_current_thread().build()?;
/// # runtime.block_on(async {
/// use std::time::Duration;
///
/// let engine = tollgate::Engine::open(dir.path())?;
/// let orders = engine.topic("orders")?;
/// let mut billing = orders.subscribe("billing")?;
/// let next: tollgate::NextRecord<'_> = billing.next_async(Duration::from_millis(5));
/// assert!(next.await?.is_none()); // nothing published
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct NextRecord<'a> {
    inner: NextInner<'a>,
}

#[derive(Debug)]
enum NextInner<'a> {
    Local {
        subscription: &'a mut Local,
        deadline: Option<Instant>,
        waiting: Waiting,
    },
    #[cfg(feature = "postgres")]
    Remote {
        subscription: &'a mut super::remote::RemoteSubscription,
        deadline: Option<Instant>,
        waiting: super::remote::RemoteWait,
    },
}

impl Future for NextRecord<'_> {
    type Output = Result<Option<Record>, ReadError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let _polling = task::enter();
        match &mut self.get_mut().inner {
            NextInner::Local { subscription, deadline, waiting } => subscription.poll_record(waiting, cx, *deadline),
            #[cfg(feature = "postgres")]
            NextInner::Remote { subscription, deadline, waiting } => waiting.poll_next(subscription, cx, *deadline),
        }
    }
}

/// A subscription as a [`Stream`] of records ([`Subscription::records`]).
/// It owns the subscription: [`subscription_mut`](Records::subscription_mut)
/// reaches it to commit or seek between items.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let runtime = tokio::runtime::Builder::new_current_thread().build()?;
/// # runtime.block_on(async {
/// use std::future::poll_fn;
/// use std::pin::Pin;
/// use futures_core::Stream;
///
/// let engine = tollgate::Engine::open(dir.path())?;
/// let orders = engine.topic("orders")?;
/// orders.publish(b"order 1001")?;
/// let mut records = orders.subscribe("billing")?.records();
/// drop(engine); // closed: the stream yields what was published, then ends
/// let mut payloads = Vec::new();
/// while let Some(record) = poll_fn(|cx| Pin::new(&mut records).poll_next(cx)).await {
///     payloads.push(record?.payload().clone());
/// }
/// assert_eq!(payloads, [&b"order 1001"[..]]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "streams do nothing unless polled"]
#[derive(Debug)]
pub struct Records {
    subscription: Subscription,
    waiting: Waits,
    /// The topic was deleted and that was yielded: the stream has ended.
    done: bool,
}

impl Records {
    /// The subscription, to read its position or committed offset.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let engine = tollgate::Engine::open(dir.path())?;
    /// let records = engine.topic("orders")?.subscribe("billing")?.records();
    /// assert_eq!(records.subscription().group(), "billing");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subscription(&self) -> &Subscription {
        &self.subscription
    }

    /// The subscription, to commit, seek or filter between items.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let engine = tollgate::Engine::open(dir.path())?;
    /// let mut records = engine.topic("orders")?.subscribe("billing")?.records();
    /// records.subscription_mut().commit()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subscription_mut(&mut self) -> &mut Subscription {
        &mut self.subscription
    }

    /// The subscription back, ending the stream.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let engine = tollgate::Engine::open(dir.path())?;
    /// let records = engine.topic("orders")?.subscribe("billing")?.records();
    /// let billing = records.into_subscription();
    /// assert_eq!(billing.position().get(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_subscription(self) -> Subscription {
        self.subscription
    }

    /// A [`Progress`] handle of the subscription (see [`Subscription::progress`]).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let engine = tollgate::Engine::open(dir.path())?;
    /// let records = engine.topic("orders")?.subscribe("billing")?.records();
    /// assert_eq!(records.progress().lag(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn progress(&self) -> Progress {
        self.subscription.progress()
    }
}

impl Stream for Records {
    type Item = Result<Record, ReadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let _polling = task::enter();
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let polled = match (&mut this.subscription.kind, &mut this.waiting) {
            (Kind::Local(local), Waits::Local(waiting)) => local.poll_record(waiting, cx, None),
            #[cfg(feature = "postgres")]
            (Kind::Remote(remote), Waits::Remote(waiting)) => waiting.poll_next(remote, cx, None),
            #[cfg(feature = "postgres")]
            _ => unreachable!("a stream waits as its subscription's kind does"),
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(record)) => Poll::Ready(record.map(Ok)),
            Poll::Ready(Err(ReadError::Deleted)) => {
                this.done = true;
                Poll::Ready(Some(Err(ReadError::Deleted)))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
        }
    }
}

/// A subscription's position, committed offset and lag, readable from any
/// thread ([`Subscription::progress`]). Each read is current when made; the
/// three are not one snapshot.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let engine = tollgate::Engine::open(dir.path())?;
/// let orders = engine.topic("orders")?;
/// orders.publish(b"order 1001")?;
/// let progress = orders.subscribe("billing")?.progress();
/// assert_eq!((progress.position().get(), progress.committed().get(), progress.lag()), (0, 0, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Progress {
    topic: Ends,
    shared: Arc<Shared>,
}

/// Where a [`Progress`] reads the topic's end.
#[derive(Debug, Clone)]
enum Ends {
    Local(Arc<TopicLog>),
    #[cfg(feature = "postgres")]
    Remote(Arc<super::remote::RemoteTopic>),
}

/// How a [`Records`] stream waits: as its subscription's kind does.
#[derive(Debug)]
enum Waits {
    Local(Waiting),
    #[cfg(feature = "postgres")]
    Remote(super::remote::RemoteWait),
}

impl Progress {
    /// The offset of the record the subscription reads next.
    pub fn position(&self) -> Offset {
        Offset::new(self.shared.position.load(Ordering::Relaxed))
    }

    /// The group's committed offset.
    pub fn committed(&self) -> Offset {
        Offset::new(self.shared.committed.load(Ordering::Relaxed))
    }

    /// Records published but not yet committed by the group, as
    /// [`Subscription::lag`] counts them.
    pub fn lag(&self) -> u64 {
        match &self.topic {
            Ends::Local(topic) => topic.committed().load().saturating_sub(self.committed().get()),
            #[cfg(feature = "postgres")]
            Ends::Remote(topic) => topic.lag(self.committed().get()),
        }
    }
}
