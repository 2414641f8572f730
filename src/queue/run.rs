//! Run loops: a worker that receives, hands each delivery to a handler, and
//! settles what the handler returns ([`Settle`]), until it is stopped
//! ([`Shutdown`]), the engine closes, or the topic is deleted; never because
//! it was idle. `Worker::run` runs `concurrency` threads in a scope;
//! `Worker::run_async` is one future polling at most `concurrency` handler
//! futures in a small slot set of its own (no spawning, so no runtime).
//!
//! A graceful stop stops taking, lets the handlers in flight finish, and
//! settles what they return. A handler that panics gives its delivery back
//! (the delivery's `Drop`). `Shutdown::stop` rings the doorbells of the
//! groups its runs wait on, so a waiting receive sees the stop at once.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::delivery::Delivery;
use super::receive::Taking;
use super::worker::Worker;
use crate::error::{QueueError, RunError};
use crate::sync::timer::Timer;
use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering, task};

/// Most handlers a run loop runs at once ([`RunConfig::concurrency`]).
///
/// ```
/// use tollgate::{CONCURRENCY_MAX, RunConfig};
///
/// let config = RunConfig { concurrency: CONCURRENCY_MAX, ..RunConfig::default() };
/// # drop(config);
/// ```
pub const CONCURRENCY_MAX: usize = 1024;

/// Most deliveries a run loop takes at once ([`RunConfig::batch`]).
///
/// ```
/// use tollgate::{BATCH_MAX, RunConfig};
///
/// let config = RunConfig { batch: BATCH_MAX, ..RunConfig::default() };
/// # drop(config);
/// ```
pub const BATCH_MAX: usize = 1024;

/// How long a run loop waits before receiving again after a receive failed
/// (other than with `Deleted`, which ends it).
const RETRY_AFTER_ERROR: Duration = Duration::from_millis(10);

/// What a run loop's handler decided for a delivery; the loop settles it.
/// Returning one is the only way out of a handler, so a delivery cannot be
/// forgotten.
///
/// ```
/// use std::time::Duration;
/// use tollgate::Settle;
///
/// let retry = Settle::Nack { retry_after: Duration::from_millis(5), reason: "card declined".into() };
/// assert_ne!(retry, Settle::Ack);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// [`Delivery::ack`]: done, never delivered again.
    Ack,
    /// [`Delivery::nack`]: a failed attempt, retried after `retry_after`.
    Nack {
        /// The delay before the retry (zero: at once).
        retry_after: Duration,
        /// Why, for the dead letter if this was the last attempt.
        reason: String,
    },
    /// [`Delivery::reject`]: dead-lettered now.
    Reject {
        /// Why, for the dead letter.
        reason: String,
    },
}

/// How a run loop runs ([`Worker::run`], [`Worker::run_async`]).
///
/// ```
/// use tollgate::{RunConfig, Shutdown};
///
/// let shutdown = Shutdown::new();
/// let config = RunConfig { concurrency: 4, batch: 8, shutdown: shutdown.clone() };
/// assert_eq!(RunConfig::default().concurrency, 1);
/// # drop(config);
/// ```
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Handlers running at once: threads for `run`, handler futures in
    /// flight for `run_async`. Default 1; 1 to [`CONCURRENCY_MAX`].
    pub concurrency: usize,
    /// Deliveries taken at once (under one lock of the group's state, with
    /// one journal sync on a `Sync` topic), handled one after the other by
    /// a thread of `run`, or started together by `run_async` (as many as
    /// it has room for). Default 1; 1 to [`BATCH_MAX`].
    pub batch: usize,
    /// Stops the loop, and reads its counts while it runs. Default: a new
    /// handle that nothing else holds (the loop then ends only on close or
    /// delete).
    pub shutdown: Shutdown,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig { concurrency: 1, batch: 1, shutdown: Shutdown::new() }
    }
}

impl RunConfig {
    /// Checks each value against its range.
    fn check(&self) -> Result<(), RunError> {
        let range = |option, value, max| {
            if (1..=max).contains(&value) { Ok(()) } else { Err(RunError::Config { option, value, max }) }
        };
        range("concurrency", self.concurrency, CONCURRENCY_MAX)?;
        range("batch", self.batch, BATCH_MAX)
    }
}

/// Why a run loop ended ([`RunReport::ended`]).
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// use tollgate::{RunConfig, RunEnd, Settle};
///
/// let engine = tollgate::Engine::open(dir.path())?;
/// let payments = engine.topic("orders")?.worker("payments")?;
/// engine.delete_topic("orders")?;
/// let report = payments.run(RunConfig::default(), |_| Settle::Ack)?;
/// assert_eq!(report.ended, Some(RunEnd::Deleted));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// [`Shutdown::stop`] was called.
    Stopped,
    /// The engine was closed.
    Closed,
    /// The topic was deleted.
    Deleted,
}

/// What a run loop did: read while it runs ([`Shutdown::report`]) or
/// returned when it ends.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// use std::time::Duration;
/// use tollgate::{RunConfig, Settle};
///
/// let engine = tollgate::Engine::open(dir.path())?;
/// let orders = engine.topic("orders")?;
/// orders.publish(b"order 1001")?;
/// let payments = orders.worker("payments")?;
/// let config = RunConfig::default();
/// let shutdown = config.shutdown.clone();
/// let report = payments.run(config, |_| {
///     shutdown.stop();
///     Settle::Nack { retry_after: Duration::from_secs(1), reason: "later".into() }
/// })?;
/// assert_eq!((report.handled, report.nacked, report.errors), (1, 1, 0));
/// assert_eq!(shutdown.report().nacked, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunReport {
    /// Deliveries whose handler returned a [`Settle`].
    pub handled: u64,
    /// Acknowledged.
    pub acked: u64,
    /// Given back for a retry (or dead-lettered, if it was the last attempt).
    pub nacked: u64,
    /// Dead-lettered by the handler.
    pub rejected: u64,
    /// Handlers that panicked; their deliveries were given back.
    pub panicked: u64,
    /// Receives and settles that failed (the loop went on).
    pub errors: u64,
    /// Why the loop ended; `None` while it runs.
    pub ended: Option<RunEnd>,
}

/// Stops run loops and reads their counts from anywhere; cheap to clone.
/// One handle may serve several loops (clones of a worker in several tasks,
/// say): `stop` stops them all, and `report` adds up their counts.
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Engine, RunConfig, Settle, Shutdown};
///
/// # let dir = tempfile::tempdir()?;
/// let engine = Engine::open(dir.path())?;
/// let orders = engine.topic("orders")?;
/// orders.publish(b"order 1001")?;
/// let payments = orders.worker("payments")?;
///
/// let shutdown = Shutdown::new();
/// let config = RunConfig { concurrency: 2, shutdown: shutdown.clone(), ..RunConfig::default() };
/// let stopper = std::thread::spawn(move || {
///     while shutdown.report().acked < 1 {
///         std::thread::sleep(Duration::from_millis(1));
///     }
///     shutdown.stop();
/// });
/// let report = payments.run(config, |_delivery| Settle::Ack)?;
/// stopper.join().unwrap();
/// assert_eq!(report.acked, 1);
/// assert_eq!(payments.metrics().in_flight, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    shared: Arc<ShutdownState>,
}

#[derive(Debug, Default)]
struct ShutdownState {
    stopped: AtomicBool,
    counts: Counts,
    /// The groups that running loops wait on, one entry per loop: `stop`
    /// rings their doorbells.
    groups: Mutex<Vec<Worker>>,
}

#[derive(Debug, Default)]
struct Counts {
    handled: AtomicU64,
    acked: AtomicU64,
    nacked: AtomicU64,
    rejected: AtomicU64,
    panicked: AtomicU64,
    errors: AtomicU64,
}

impl Shutdown {
    /// A handle that has not been stopped.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Stops every loop run with this handle: they take no more messages,
    /// let the handlers in flight finish, settle what those return, and
    /// end. Loops started with it afterwards end at once.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // After the flag: a receive that joins the doorbell's list before
        // this ring is woken by it, and one that joins after sees the flag.
        for worker in self.shared.groups.lock().iter() {
            worker.doorbell().wake();
        }
    }

    /// Whether `stop` was called.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::SeqCst)
    }

    /// The counts so far of every loop run with this handle (`ended` is
    /// `None`).
    pub fn report(&self) -> RunReport {
        let counts = &self.shared.counts;
        let read = |count: &AtomicU64| count.load(Ordering::Relaxed);
        RunReport {
            handled: read(&counts.handled),
            acked: read(&counts.acked),
            nacked: read(&counts.nacked),
            rejected: read(&counts.rejected),
            panicked: read(&counts.panicked),
            errors: read(&counts.errors),
            ended: None,
        }
    }
}

/// One loop's counts, added to its `Shutdown`'s as they happen.
#[derive(Debug)]
struct Run {
    shutdown: Shutdown,
    worker: Worker,
    mine: Counts,
}

impl Run {
    /// Registers the loop's group with the shutdown handle.
    fn start(worker: &Worker, shutdown: &Shutdown) -> Run {
        shutdown.shared.groups.lock().push(worker.clone());
        Run { shutdown: shutdown.clone(), worker: worker.clone(), mine: Counts::default() }
    }

    fn stopped(&self) -> bool {
        self.shutdown.is_stopped()
    }

    /// Why a receive that took nothing ended the loop, if it did.
    fn end_after_empty_receive(&self) -> Option<RunEnd> {
        let (deleted, closed) = self.worker.ended();
        if deleted {
            Some(RunEnd::Deleted)
        } else if closed {
            Some(RunEnd::Closed)
        } else if self.stopped() {
            Some(RunEnd::Stopped)
        } else {
            None
        }
    }

    fn count(&self, pick: fn(&Counts) -> &AtomicU64) {
        pick(&self.mine).fetch_add(1, Ordering::Relaxed);
        pick(&self.shutdown.shared.counts).fetch_add(1, Ordering::Relaxed);
    }

    /// Settles `delivery` as the handler decided, and counts it.
    fn settle(&self, delivery: Delivery, settle: Settle) {
        self.count(|c| &c.handled);
        type Pick = fn(&Counts) -> &AtomicU64;
        let (result, settled): (Result<(), QueueError>, Pick) = match settle {
            Settle::Ack => (delivery.ack(), |c| &c.acked),
            Settle::Nack { retry_after, reason } => (delivery.nack(retry_after, &reason), |c| &c.nacked),
            Settle::Reject { reason } => (delivery.reject(&reason), |c| &c.rejected),
        };
        match result {
            Ok(()) => self.count(settled),
            Err(_) => self.count(|c| &c.errors),
        }
    }

    /// Deregisters the loop's group and returns its report.
    fn finish(self, ended: RunEnd) -> RunReport {
        let mut groups = self.shutdown.shared.groups.lock();
        if let Some(at) = groups.iter().position(|w| w.same_group(&self.worker)) {
            groups.swap_remove(at);
        }
        drop(groups);
        let read = |count: &AtomicU64| count.load(Ordering::Relaxed);
        RunReport {
            handled: read(&self.mine.handled),
            acked: read(&self.mine.acked),
            nacked: read(&self.mine.nacked),
            rejected: read(&self.mine.rejected),
            panicked: read(&self.mine.panicked),
            errors: read(&self.mine.errors),
            ended: Some(ended),
        }
    }
}

impl Worker {
    /// Runs `handler` on the group's messages on `config.concurrency`
    /// threads, settling each delivery as the handler decides, until
    /// [`Shutdown::stop`] (then the handlers running finish and are
    /// settled), the engine closes, or the topic is deleted; an idle period
    /// never ends it. A handler that panics gives its delivery back, to be
    /// delivered again (it counts as a failed attempt), and the loop goes on.
    ///
    /// Fails only if `config` is out of range.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use std::time::Duration;
    /// use tollgate::{Engine, RunConfig, RunEnd, Settle};
    ///
    /// let engine = Engine::open(dir.path())?;
    /// let orders = engine.topic("orders")?;
    /// orders.publish(b"order 1001")?;
    /// orders.publish(b"order 1002")?;
    /// let payments = orders.worker("payments")?;
    ///
    /// let config = RunConfig::default();
    /// let shutdown = config.shutdown.clone();
    /// let report = payments.run(config, |delivery| {
    ///     if delivery.payload().as_ref() == b"order 1002" {
    ///         shutdown.stop(); // the loop ends once this handler returns
    ///     }
    ///     Settle::Ack
    /// })?;
    /// assert_eq!((report.acked, report.ended), (2, Some(RunEnd::Stopped)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run<H>(&self, config: RunConfig, handler: H) -> Result<RunReport, RunError>
    where
        H: Fn(&Delivery) -> Settle + Sync,
    {
        config.check()?;
        let run = Run::start(self, &config.shutdown);
        let end = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..config.concurrency)
                .map(|_| scope.spawn(|| self.run_thread(&run, config.batch, &handler)))
                .collect();
            let ends: Vec<RunEnd> = threads.into_iter().map(|t| t.join().unwrap_or(RunEnd::Stopped)).collect();
            // The first thread to see a close or delete names the end.
            ends.iter().copied().find(|end| *end != RunEnd::Stopped).unwrap_or(RunEnd::Stopped)
        });
        Ok(run.finish(end))
    }

    /// One thread of `run`.
    fn run_thread<H: Fn(&Delivery) -> Settle>(&self, run: &Run, batch: usize, handler: &H) -> RunEnd {
        let halt = || run.stopped();
        let mut taken = Vec::with_capacity(batch);
        loop {
            match self.receive_into(batch, None, &halt, &mut taken) {
                Ok(()) => {}
                Err(QueueError::Deleted) => return RunEnd::Deleted,
                Err(_) => {
                    run.count(|c| &c.errors);
                    std::thread::sleep(RETRY_AFTER_ERROR);
                    continue;
                }
            }
            if taken.is_empty() {
                if let Some(end) = run.end_after_empty_receive() {
                    return end;
                }
                continue;
            }
            // Taken means in flight: each is handled, even after a stop.
            for delivery in taken.drain(..) {
                match catch_unwind(AssertUnwindSafe(|| handler(&delivery))) {
                    Ok(settle) => run.settle(delivery, settle),
                    Err(_) => {
                        drop(delivery);
                        run.count(|c| &c.panicked);
                    }
                }
            }
        }
    }

    /// The async form of [`run`](Worker::run): one future that keeps at
    /// most `config.concurrency` handler futures in flight, polling them
    /// itself (it spawns nothing, so it works under any executor; for
    /// parallelism, run several, in several tasks, with clones of the
    /// worker and one [`Shutdown`]).
    ///
    /// The handler is called with each delivery and returns a future of its
    /// [`Settle`]; that future may not borrow the delivery (clone what it
    /// needs, as the example does). The loop keeps the delivery and settles
    /// it when the future completes. The returned future is `Send` when the
    /// handler and its futures are, so it can be given to `tokio::spawn`.
    /// A handler (or handler future) that panics gives its delivery back.
    /// On a [`Durability::Sync`](crate::Durability::Sync) topic the journal
    /// syncs of receives and settles run inside the loop's poll.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    /// # runtime.block_on(async {
    /// use tollgate::{Engine, RunConfig, RunEnd, Settle};
    ///
    /// let engine = Engine::open(dir.path())?;
    /// let orders = engine.topic("orders")?;
    /// orders.publish(b"order 1001")?;
    /// let payments = orders.worker("payments")?;
    ///
    /// let config = RunConfig { concurrency: 8, ..RunConfig::default() };
    /// let shutdown = config.shutdown.clone();
    /// let report = payments
    ///     .run_async(config, move |delivery| {
    ///         let (payload, shutdown) = (delivery.payload().clone(), shutdown.clone());
    ///         async move {
    ///             assert_eq!(payload.as_ref(), b"order 1001");
    ///             shutdown.stop();
    ///             Settle::Ack
    ///         }
    ///     })
    ///     .await?;
    /// assert_eq!((report.acked, report.ended), (1, Some(RunEnd::Stopped)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run_async<H, F>(&self, config: RunConfig, handler: H) -> RunAsync<H, F>
    where
        H: FnMut(&Delivery) -> F + Unpin,
        F: Future<Output = Settle>,
    {
        let invalid = config.check().err();
        let run = invalid.is_none().then(|| Run::start(self, &config.shutdown));
        RunAsync {
            taking: Taking::new(self.clone(), None),
            handler,
            slots: (0..if invalid.is_some() { 0 } else { config.concurrency }).map(|_| None).collect(),
            batch: config.batch,
            run,
            invalid,
            end: None,
            retry_at: None,
            timer: Timer::new(),
        }
    }
}

/// The future of [`Worker::run_async`]: the loop's [`RunReport`] once it
/// ends. Dropping it before then gives the deliveries in flight back.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let runtime = tokio::runtime::Builder::new_current_thread().build()?;
/// # runtime.block_on(async {
/// use tollgate::{RunConfig, RunEnd, Settle, Shutdown};
///
/// let engine = tollgate::Engine::open(dir.path())?;
/// let payments = engine.topic("orders")?.worker("payments")?;
/// let shutdown = Shutdown::new();
/// let config = RunConfig { shutdown: shutdown.clone(), ..RunConfig::default() };
/// let running = tokio::spawn(payments.run_async(config, |_| std::future::ready(Settle::Ack)));
/// shutdown.stop();
/// assert_eq!(running.await??.ended, Some(RunEnd::Stopped));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct RunAsync<H, F> {
    taking: Taking,
    handler: H,
    /// The handlers in flight, each with its delivery.
    slots: Vec<Option<(Delivery, Pin<Box<F>>)>>,
    batch: usize,
    /// `None` once the future has completed (or if the config was invalid).
    run: Option<Run>,
    invalid: Option<RunError>,
    /// Why the loop stops taking; it ends once no handler is in flight.
    end: Option<RunEnd>,
    /// After a failed receive: when to receive again.
    retry_at: Option<Instant>,
    timer: Timer,
}

impl<H, F> Future for RunAsync<H, F>
where
    H: FnMut(&Delivery) -> F + Unpin,
    F: Future<Output = Settle>,
{
    type Output = Result<RunReport, RunError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let _polling = task::enter();
        // Unpin: the handler futures are pinned in boxes of their own.
        let this = self.get_mut();
        if let Some(invalid) = this.invalid.take() {
            return Poll::Ready(Err(invalid));
        }
        let Some(run) = this.run.take() else {
            return Poll::Ready(Err(RunError::Finished));
        };
        match this.drive(&run, cx) {
            Some(end) => Poll::Ready(Ok(run.finish(end))),
            None => {
                this.run = Some(run);
                Poll::Pending
            }
        }
    }
}

impl<H, F> RunAsync<H, F>
where
    H: FnMut(&Delivery) -> F + Unpin,
    F: Future<Output = Settle>,
{
    /// Polls the handlers in flight, settles those done, and starts new
    /// ones while there is room; `Some` once the loop has ended (it stopped
    /// taking and nothing is in flight), `None` when it must wait.
    fn drive(&mut self, run: &Run, cx: &mut Context<'_>) -> Option<RunEnd> {
        loop {
            let mut progressed = false;
            for slot in &mut self.slots {
                let Some((_, future)) = slot else { continue };
                match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                    Ok(Poll::Pending) => continue,
                    Ok(Poll::Ready(settle)) => {
                        let (delivery, _) = slot.take().expect("checked above");
                        run.settle(delivery, settle);
                    }
                    Err(_) => {
                        // Dropping the delivery gives it back.
                        *slot = None;
                        run.count(|c| &c.panicked);
                    }
                }
                progressed = true;
            }
            if self.end.is_none() && run.stopped() {
                self.end = Some(RunEnd::Stopped);
            }
            if self.end.is_some() {
                // Taking no more: out of the group's idle count.
                self.taking.leave();
            }
            let free = self.slots.iter().filter(|slot| slot.is_none()).count();
            if self.end.is_none() && free > 0 {
                progressed |= self.take(run, cx, free);
            }
            if self.end.is_some() && free == self.slots.len() {
                return self.end;
            }
            if !progressed {
                return None;
            }
        }
    }

    /// Takes up to `free` deliveries (at most a batch) and starts their
    /// handlers; returns whether it started any (they need a first poll),
    /// and sets `end` if the loop must stop taking.
    fn take(&mut self, run: &Run, cx: &mut Context<'_>, free: usize) -> bool {
        if self.retry_at.is_some() && self.timer.poll_until(cx, self.retry_at).is_pending() {
            return false;
        }
        self.retry_at = None;
        let mut taken = Vec::new();
        let halt = || run.stopped();
        match self.taking.poll_take(cx, free.min(self.batch), &halt, &mut taken) {
            Poll::Pending => return false,
            Poll::Ready(Err(QueueError::Deleted)) => self.end = Some(RunEnd::Deleted),
            Poll::Ready(Err(_)) => {
                run.count(|c| &c.errors);
                self.retry_at = Instant::now().checked_add(RETRY_AFTER_ERROR);
                return true;
            }
            Poll::Ready(Ok(())) if taken.is_empty() => self.end = run.end_after_empty_receive(),
            Poll::Ready(Ok(())) => {}
        }
        let started = !taken.is_empty();
        let mut free_slots = self.slots.iter_mut().filter(|slot| slot.is_none());
        for delivery in taken {
            let slot = free_slots.next().expect("took at most as many as there are free slots");
            match catch_unwind(AssertUnwindSafe(|| (self.handler)(&delivery))) {
                Ok(future) => *slot = Some((delivery, Box::pin(future))),
                Err(_) => {
                    drop(delivery);
                    run.count(|c| &c.panicked);
                }
            }
        }
        started
    }
}

impl<H, F> Drop for RunAsync<H, F> {
    fn drop(&mut self) {
        // Dropped before it completed: the deliveries in flight go back
        // with their slots; the group is deregistered from the handle.
        if let Some(run) = self.run.take() {
            run.finish(RunEnd::Stopped);
        }
    }
}

impl<H, F> std::fmt::Debug for RunAsync<H, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let in_flight = self.slots.iter().filter(|slot| slot.is_some()).count();
        f.debug_struct("RunAsync").field("in_flight", &in_flight).field("end", &self.end).finish()
    }
}
