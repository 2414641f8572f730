//! Async acquisition by a [`Session`]: futures that queue on the same wait
//! queue as blocking waiters and run the same step function
//! (`pending.rs`), so FIFO order, hand-off, leases, interruption and
//! deadlock detection hold for tasks and threads mixed on one key.
//!
//! A future tries to grant at once on its first poll (it never spins, which
//! would stall its executor), else queues a task waiter. Each later poll
//! registers the task's waker in the waiter before it checks the grant, so
//! no grant or signal is missed (`sync/slot.rs`), and arms a timer for the
//! next instant the wait must act at (its timeout, a deadlock search, the
//! holder's lease end), so a wait needs no runtime timer.
//!
//! Dropping a future leaves no trace: a queued waiter leaves the queue under
//! the queue mutex; a grant that reached it first is released at once, which
//! hands the key to the next waiter. (Leaking a pending future with
//! `mem::forget` is not a drop: its waiter stays queued, like a thread
//! parked forever.)

use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::error::LockError;
use crate::sync::Arc;
use crate::sync::timer::Timer;

use super::guard::{Grant, Holder, LockGuard, LockSet, Session, SessionOwned, SessionState};
use super::manager::{Admitted, Inner, LockRequest, Plan, Window, check_key, sorted_keys};
use super::pending::{Pending, Step, WaitLimits};
use super::remote;

/// The wait for one key, across polls.
#[derive(Default)]
struct KeyWait {
    /// The queued waiter, once the key could not be granted at once.
    pending: Option<Pending>,
    timer: Timer,
}

impl KeyWait {
    /// Acquires `key` for `session`: grants at once, or queues and waits.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        session: &Arc<SessionState>,
        key: &str,
        request: &LockRequest,
        window: Window,
    ) -> Poll<Result<Grant<'static>, LockError>> {
        let plan = match Plan::with_window(request, window, Some(session.interrupt_signal()), false) {
            Ok(plan) => plan,
            Err(error) => return Poll::Ready(Err(error)),
        };
        let inner = session.inner();
        let pending = match &mut self.pending {
            Some(pending) => pending,
            None => match Inner::start_task(session, session.owner(), key, &plan) {
                Err(error) => return Poll::Ready(Err(error)),
                Ok(Admitted::Granted(grant)) => return Poll::Ready(Ok(grant)),
                Ok(Admitted::Queued(queued)) => {
                    let limits = plan.wait.as_ref().expect("only a request that may wait is queued");
                    self.pending.insert(Pending::start(inner, queued, limits))
                }
            },
        };
        let limits = plan.wait.as_ref().expect("only a request that may wait is queued");
        // Register before the step's checks: see `sync/slot.rs`.
        pending.waiter().register(cx.waker());
        match pending.step(inner, limits) {
            Step::Done(outcome) => {
                let result = outcome.map(|token| pending.grant(session, token));
                self.pending = None;
                self.timer = Timer::new();
                Poll::Ready(result)
            }
            Step::Sleep(until) => {
                if self.timer.poll_until(cx, until).is_ready() {
                    // The instant passed meanwhile: step again soon.
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }

    /// Gives up a wait in progress (its future was dropped), leaving no
    /// trace: the waiter leaves the queue, or, if a grant reached it first,
    /// the grant is released and passes to the next waiter.
    fn abandon(&mut self, session: &Arc<SessionState>, request: &LockRequest) {
        let Some(mut pending) = self.pending.take() else { return };
        let limits = WaitLimits {
            deadline: None,
            since: None,
            cancel: request.cancel_signal(),
            interrupt: Some(session.interrupt_signal()),
        };
        if let Some(token) = pending.abandon(session.inner(), &limits) {
            drop(pending.grant(session, token));
        }
    }
}

/// A session's acquisition of one key, from [`Session::lock_async`],
/// [`Session::lock_for_async`] or [`Session::acquire_async`]. Resolves to a
/// guard that is `Send + 'static`; dropping the future before it resolves
/// leaves no trace.
#[must_use = "futures do nothing unless polled"]
pub struct Acquire<'a> {
    session: &'a Arc<SessionState>,
    key: &'a str,
    request: LockRequest,
    /// Fixed at the first poll: a timeout counts from there.
    window: Option<Window>,
    wait: KeyWait,
    /// A PostgreSQL manager's acquisition, once started.
    remote: Option<Remote<'a, Grant<'static>>>,
    done: bool,
}

/// An acquisition on a PostgreSQL manager (`remote.rs`): dropping it leaves
/// no trace in the database either.
type Remote<'a, T> = Pin<Box<dyn Future<Output = Result<T, LockError>> + Send + 'a>>;

impl Future for Acquire<'_> {
    type Output = Result<LockGuard<'static, SessionOwned>, LockError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.done, "`Acquire` polled after it resolved");
        let window = *this.window.get_or_insert_with(|| this.request.window());
        if let Some(store) = &this.session.inner().remote {
            let (key, request) = (this.key, &this.request);
            let future = this.remote.get_or_insert_with(|| {
                let (store, session, request) =
                    (std::sync::Arc::clone(store), Arc::clone(this.session), request.clone());
                Box::pin(async move {
                    check_key(key)?;
                    let plan = Plan::with_window(&request, window, Some(session.interrupt_signal()), false)?;
                    let owner = remote::Owner { kind: 's', id: session.owner() };
                    let wait = plan.wait.as_ref();
                    let acquired = remote::acquire(&store, owner, key, plan.mode, plan.lease_ns, wait).await;
                    let (grant, token, mode) = acquired.inspect_err(|e| (&session).inner().counters.record(e))?;
                    Ok(Grant::remote(&session, grant, owner.id, token, mode))
                })
            });
            let result = std::task::ready!(future.as_mut().poll(cx));
            this.remote = None;
            this.done = true;
            return Poll::Ready(result.map(LockGuard::new));
        }
        let result = std::task::ready!(this.wait.poll(cx, this.session, this.key, &this.request, window));
        this.done = true;
        Poll::Ready(result.map(LockGuard::new))
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        self.wait.abandon(self.session, &self.request);
    }
}

impl std::fmt::Debug for Acquire<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acquire")
            .field("key", &self.key)
            .field("mode", &self.request.mode())
            .field("queued", &self.wait.pending.is_some())
            .finish()
    }
}

/// A session's acquisition of several keys, all or none, from
/// [`Session::lock_all_async`] or [`Session::acquire_all_async`]. Keys are
/// taken in sorted order, as by [`Session::acquire_all`]; the timeout bounds
/// the whole acquisition. Dropping the future releases the keys taken so
/// far and leaves no trace of the one waited for.
#[must_use = "futures do nothing unless polled"]
pub struct AcquireAll<'a, K> {
    session: &'a Arc<SessionState>,
    /// Sorted and deduplicated; or why the keys were refused.
    keys: Result<Vec<K>, LockError>,
    request: LockRequest,
    window: Option<Window>,
    grants: Vec<Grant<'static>>,
    wait: KeyWait,
    remote: Option<Remote<'a, Vec<Grant<'static>>>>,
    done: bool,
}

// The keys are never pinned: nothing hands out a `Pin<&mut K>`.
impl<K> Unpin for AcquireAll<'_, K> {}

impl<K: AsRef<str>> Future for AcquireAll<'_, K> {
    type Output = Result<LockSet<'static, SessionOwned>, LockError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.done, "`AcquireAll` polled after it resolved");
        let keys = match &this.keys {
            Ok(keys) => keys,
            Err(error) => {
                this.done = true;
                return Poll::Ready(Err(error.clone()));
            }
        };
        let window = *this.window.get_or_insert_with(|| this.request.window());
        if let Some(store) = &this.session.inner().remote {
            let request = &this.request;
            let future = this.remote.get_or_insert_with(|| {
                let (store, session, request) =
                    (std::sync::Arc::clone(store), Arc::clone(this.session), request.clone());
                let keys = keys.iter().map(|key| check_key(key.as_ref()).map(|()| key.as_ref().to_owned()));
                let keys = keys.collect::<Result<Vec<_>, _>>();
                Box::pin(async move {
                    let keys = keys?;
                    let plan = Plan::with_window(&request, window, Some(session.interrupt_signal()), false)?;
                    let owner = remote::Owner { kind: 's', id: session.owner() };
                    let wait = plan.wait.as_ref();
                    let granted = remote::acquire_all(&store, owner, &keys, plan.mode, plan.lease_ns, wait).await;
                    let granted = granted.inspect_err(|e| (&session).inner().counters.record(e))?;
                    let grants = granted
                        .into_iter()
                        .map(|(grant, token)| Grant::remote(&session, grant, owner.id, token, plan.mode));
                    Ok(grants.collect())
                })
            });
            let result = std::task::ready!(future.as_mut().poll(cx));
            this.remote = None;
            this.done = true;
            return Poll::Ready(result.map(LockSet::new));
        }
        while let Some(key) = keys.get(this.grants.len()) {
            match std::task::ready!(this.wait.poll(cx, this.session, key.as_ref(), &this.request, window)) {
                Ok(grant) => this.grants.push(grant),
                Err(error) => {
                    this.done = true;
                    // Releases what was taken.
                    this.grants.clear();
                    return Poll::Ready(Err(error));
                }
            }
        }
        this.done = true;
        Poll::Ready(Ok(LockSet::new(mem::take(&mut this.grants))))
    }
}

impl<K> Drop for AcquireAll<'_, K> {
    fn drop(&mut self) {
        self.wait.abandon(self.session, &self.request);
    }
}

impl<K> std::fmt::Debug for AcquireAll<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcquireAll")
            .field("taken", &self.grants.len())
            .field("mode", &self.request.mode())
            .field("queued", &self.wait.pending.is_some())
            .finish()
    }
}

/// The async forms of a session's acquisitions. They wait in the same queue
/// as blocking waiters, in arrival order, and are found by the same deadlock
/// search; [`Session::interrupt`], a request's
/// [`CancelToken`](crate::CancelToken), timeouts and leases work as for the
/// blocking forms. They need no particular executor.
///
/// ```
/// use std::time::Duration;
/// use tollgate::{LockError, LockManager};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let locks = LockManager::new();
/// let buyer = locks.session();
/// let guard = buyer.lock_async("sku:42").await?;
/// // Held across `.await`, and `Send + 'static`: may move into another task.
/// tokio::task::yield_now().await;
/// let other = locks.session();
/// let busy = other.lock_for_async("sku:42", Duration::from_millis(10)).await;
/// assert!(matches!(busy, Err(LockError::Timeout { .. })));
/// drop(guard);
/// let both = other.lock_all_async(["sku:43", "sku:42"], Duration::from_millis(10)).await?;
/// assert_eq!(both.guards()[0].key(), "sku:42");
/// # Ok::<(), LockError>(())
/// # }).unwrap();
/// ```
impl Session {
    /// Takes `key` exclusively, waiting as long as it takes (or until a
    /// deadlock makes this wait the victim, or the session is interrupted).
    pub fn lock_async<'a>(&'a self, key: &'a str) -> Acquire<'a> {
        self.acquire_async(key, LockRequest::exclusive())
    }

    /// Takes `key` exclusively, waiting at most `timeout` from the first poll.
    pub fn lock_for_async<'a>(&'a self, key: &'a str, timeout: Duration) -> Acquire<'a> {
        self.acquire_async(key, LockRequest::exclusive().timeout(timeout))
    }

    /// Takes `key` as `request` describes; a timeout counts from the first
    /// poll.
    pub fn acquire_async<'a>(&'a self, key: &'a str, request: LockRequest) -> Acquire<'a> {
        Acquire {
            session: self.state(),
            key,
            request,
            window: None,
            wait: KeyWait::default(),
            remote: None,
            done: false,
        }
    }

    /// Takes all of `keys` exclusively, or none, waiting at most `timeout`
    /// in all; see [`LockManager::lock_all`](crate::LockManager::lock_all).
    pub fn lock_all_async<K: AsRef<str>>(
        &self,
        keys: impl IntoIterator<Item = K>,
        timeout: Duration,
    ) -> AcquireAll<'_, K> {
        self.acquire_all_async(keys, LockRequest::exclusive().timeout(timeout))
    }

    /// Takes all of `keys` as `request` describes, or none; see
    /// [`LockManager::acquire_all`](crate::LockManager::acquire_all).
    pub fn acquire_all_async<K: AsRef<str>>(
        &self,
        keys: impl IntoIterator<Item = K>,
        request: LockRequest,
    ) -> AcquireAll<'_, K> {
        AcquireAll {
            session: self.state(),
            keys: sorted_keys(keys),
            request,
            window: None,
            grants: Vec::new(),
            wait: KeyWait::default(),
            remote: None,
            done: false,
        }
    }
}
