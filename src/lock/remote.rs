//! Locks kept in PostgreSQL (feature `postgres`): how a manager connected
//! with [`LockManager::connect`](crate::LockManager::connect) acquires,
//! waits, releases and renews. The tables and the one-call-per-operation
//! functions are `pg/locks.rs`; docs/POSTGRES.md is the design.
//!
//! An acquisition is a loop of attempts. Before each attempt the waiter
//! registers its interest in the key's notifications, so a release that
//! commits after the attempt wakes it. Between attempts it sleeps until the
//! first of: a notification for the key, the moment a blocking holder's
//! lease or client may expire (the attempt says when), its own deadline,
//! or its cancel token or session interrupt. Threads and tasks run the same
//! future; a thread polls it with `block_on`.
//!
//! A dropped future leaves no trace in the database: a queued wait is given
//! up, and an attempt still in flight is finished on the backend's runtime,
//! its grant (if it got one) released.

#[cfg(feature = "postgres")]
pub(crate) use imp::*;
#[cfg(not(feature = "postgres"))]
pub(crate) use stub::*;

/// Who acquires: a thread (`'t'`) or a session (`'s'`), by owner id.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) struct Owner {
    pub(crate) kind: char,
    pub(crate) id: u64,
}

/// Without the feature: no store can exist, so the manager's
/// `Option<Arc<Store>>` is always `None` and these are never called.
#[cfg(not(feature = "postgres"))]
mod stub {
    use std::sync::Arc;
    use std::time::Duration;

    use super::Owner;
    use crate::error::LockError;
    use crate::lock::manager::LockMode;
    use crate::lock::pending::WaitLimits;

    #[derive(Debug)]
    pub(crate) enum Store {}

    #[derive(Debug)]
    pub(crate) enum RemoteGrant {}

    impl RemoteGrant {
        pub(crate) fn key(&self) -> &str {
            match *self {}
        }
    }

    pub(crate) type Acquired = (RemoteGrant, u64, LockMode);

    pub(crate) async fn acquire(
        store: &Arc<Store>,
        _: Owner,
        _: &str,
        _: LockMode,
        _: u64,
        _: Option<&WaitLimits<'_>>,
    ) -> Result<Acquired, LockError> {
        match **store {}
    }

    pub(crate) fn acquire_blocking(
        store: &Arc<Store>,
        _: Owner,
        _: &str,
        _: LockMode,
        _: u64,
        _: Option<&WaitLimits<'_>>,
    ) -> Result<Acquired, LockError> {
        match **store {}
    }

    pub(crate) async fn acquire_all(
        store: &Arc<Store>,
        _: Owner,
        _: &[String],
        _: LockMode,
        _: u64,
        _: Option<&WaitLimits<'_>>,
    ) -> Result<Vec<(RemoteGrant, u64)>, LockError> {
        match **store {}
    }

    pub(crate) fn acquire_all_blocking(
        store: &Arc<Store>,
        _: Owner,
        _: &[String],
        _: LockMode,
        _: u64,
        _: Option<&WaitLimits<'_>>,
    ) -> Result<Vec<(RemoteGrant, u64)>, LockError> {
        match **store {}
    }

    pub(crate) fn release_blocking(grant: &RemoteGrant) -> Result<(), LockError> {
        match *grant {}
    }

    pub(crate) fn renew_blocking(grant: &RemoteGrant, _: Duration) -> Result<(), LockError> {
        match *grant {}
    }

    pub(crate) fn one_acquisition(grants: &[&RemoteGrant]) -> bool {
        grants.first().is_some_and(|grant| match **grant {})
    }

    pub(crate) fn release_all_blocking(grants: &[&RemoteGrant]) -> Result<(), LockError> {
        match grants.first() {
            Some(grant) => match **grant {},
            None => Ok(()),
        }
    }

    pub(crate) fn stamp(store: &Store, _: &str) -> Option<i64> {
        match *store {}
    }

    pub(crate) fn stats(store: &Store) -> [u64; 4] {
        match *store {}
    }

    pub(crate) fn shrink(store: &Store) {
        match *store {}
    }
}

#[cfg(feature = "postgres")]
mod imp {
    use std::future::{Future, poll_fn};
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::task::{Context, Poll};
    use std::time::{Duration, Instant};

    use crate::error::{BackendError, BackendErrorKind, LockError};
    use crate::lock::manager::LockMode;
    use crate::lock::pending::WaitLimits;
    use crate::lock::wait::Waiter;
    use crate::pg::listen::Interest;
    pub(crate) use crate::pg::locks::LockStore as Store;
    use crate::pg::locks::{Attempt, AttemptAll};
    use crate::pg::runtime;
    use crate::sync::timer::Timer;

    use super::Owner;

    /// A remote grant: what releasing it needs.
    #[derive(Debug)]
    pub(crate) struct RemoteGrant {
        pub(crate) store: Arc<Store>,
        pub(crate) key: Box<str>,
        pub(crate) owner: String,
        /// This acquisition's id among the owner's nested acquisitions.
        pub(crate) level: i64,
    }

    /// A new acquisition id, unique in this process (and so per owner).
    fn next_level() -> i64 {
        static NEXT: AtomicI64 = AtomicI64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    impl RemoteGrant {
        pub(crate) fn key(&self) -> &str {
            &self.key
        }
    }

    /// A grant, its fencing token and the mode it is held in.
    pub(crate) type Acquired = (RemoteGrant, u64, LockMode);

    /// [`acquire`] for a thread: parks it between polls.
    pub(crate) fn acquire_blocking(
        store: &Arc<Store>,
        owner: Owner,
        key: &str,
        mode: LockMode,
        lease_ns: u64,
        wait: Option<&WaitLimits<'_>>,
    ) -> Result<Acquired, LockError> {
        runtime::block_on(acquire(store, owner, key, mode, lease_ns, wait))
    }

    /// [`acquire_all`] for a thread.
    pub(crate) fn acquire_all_blocking(
        store: &Arc<Store>,
        owner: Owner,
        keys: &[String],
        mode: LockMode,
        lease_ns: u64,
        wait: Option<&WaitLimits<'_>>,
    ) -> Result<Vec<(RemoteGrant, u64)>, LockError> {
        runtime::block_on(acquire_all(store, owner, keys, mode, lease_ns, wait))
    }

    /// [`release`] for a thread (and for guards dropped anywhere).
    pub(crate) fn release_blocking(grant: &RemoteGrant) -> Result<(), LockError> {
        runtime::block_on(release(grant))
    }

    /// Whether `grants` are the keys of one acquisition (one `lock_all`):
    /// one store, one owner, one level.
    pub(crate) fn one_acquisition(grants: &[&RemoteGrant]) -> bool {
        grants.windows(2).all(|pair| {
            Arc::ptr_eq(&pair[0].store, &pair[1].store)
                && pair[0].owner == pair[1].owner
                && pair[0].level == pair[1].level
        })
    }

    /// Releases the keys of one acquisition in one call. `LeaseExpired` if
    /// any was void; if the database cannot answer, the release is retried
    /// in the background and the caller gets the error.
    pub(crate) fn release_all_blocking(grants: &[&RemoteGrant]) -> Result<(), LockError> {
        let Some(first) = grants.first() else { return Ok(()) };
        let keys: Vec<String> = grants.iter().map(|grant| grant.key.to_string()).collect();
        let call = first.store.release_all(&keys, &first.owner, first.level);
        match runtime::block_on(within(first.store.operation_timeout(), call)) {
            Ok(0) => Ok(()),
            Ok(_) => Err(LockError::LeaseExpired),
            Err(error) => {
                runtime::detach(undo(Arc::clone(&first.store), keys, first.owner.clone(), first.level, None));
                Err(error)
            }
        }
    }

    /// [`renew`] for a thread.
    pub(crate) fn renew_blocking(grant: &RemoteGrant, lease: Duration) -> Result<(), LockError> {
        runtime::block_on(renew(grant, lease))
    }

    /// Acquires `key`: one attempt if `wait` is `None`, else attempts and
    /// waits as the module describes. Returns the grant and its token.
    pub(crate) async fn acquire(
        store: &Arc<Store>,
        owner: Owner,
        key: &str,
        mode: LockMode,
        lease_ns: u64,
        wait: Option<&WaitLimits<'_>>,
    ) -> Result<Acquired, LockError> {
        let exclusive = mode == LockMode::Exclusive;
        let lease = (lease_ns != 0).then(|| Duration::from_nanos(lease_ns));
        let signals = Signals::register(wait, mode, key);
        let queue_on_failure = wait.is_some();
        let level = next_level();
        let mut queued: Option<Queued> = None;
        loop {
            if signals.raised() {
                return Err(LockError::Interrupted);
            }
            let who = store.owner(owner.kind, owner.id);
            let interest = wait.map(|_| store.interest(key, Some(&who)));
            let attempt = {
                let (store, key, who) = (Arc::clone(store), key.to_owned(), who.clone());
                InFlight::new(async move {
                    let outcome = store.acquire(&key, &who, exclusive, lease, queue_on_failure, level).await;
                    Finished { outcome, store, keys: vec![key], owner: who, level }
                })
            };
            let outcome = within(store.operation_timeout(), attempt).await?;
            match outcome {
                Attempt::Granted { fence, nested } => {
                    if let Some(queued) = queued.as_mut() {
                        queued.done = true;
                    }
                    signals.keep_if_raised();
                    let mode = if nested { LockMode::Exclusive } else { mode };
                    let grant = RemoteGrant { store: Arc::clone(store), key: key.into(), owner: who, level };
                    return Ok((grant, fence, mode));
                }
                Attempt::Upgrade => return Err(LockError::Upgrade),
                Attempt::Deadlock(keys) => {
                    if let Some(queued) = queued.as_mut() {
                        queued.done = true;
                    }
                    return Err(LockError::Deadlock { keys });
                }
                Attempt::ClientExpired => continue,
                Attempt::Busy { retry } => {
                    let Some(limits) = wait else { return Err(LockError::WouldBlock) };
                    let queue = queued.get_or_insert_with(|| Queued::new(store, key, &who, level));
                    queue.owner.clone_from(&who);
                    let interest = interest.expect("a waiting attempt registers its interest");
                    match sleep(&interest, &signals, limits.deadline, retry).await {
                        Woken::Retry => {}
                        Woken::Deadline => {
                            queue.give_up().await;
                            let waited = limits.since.map_or(Duration::ZERO, |since| since.elapsed());
                            return Err(LockError::Timeout { waited });
                        }
                        Woken::Signal => {
                            queue.give_up().await;
                            return Err(LockError::Interrupted);
                        }
                    }
                }
            }
        }
    }

    /// Acquires every key of `keys` (sorted, distinct) or none.
    pub(crate) async fn acquire_all(
        store: &Arc<Store>,
        owner: Owner,
        keys: &[String],
        mode: LockMode,
        lease_ns: u64,
        wait: Option<&WaitLimits<'_>>,
    ) -> Result<Vec<(RemoteGrant, u64)>, LockError> {
        let exclusive = mode == LockMode::Exclusive;
        let lease = (lease_ns != 0).then(|| Duration::from_nanos(lease_ns));
        let first = keys.first().map_or("", String::as_str);
        let signals = Signals::register(wait, mode, first);
        let watch_on_failure = wait.is_some();
        let level = next_level();
        let mut watching: Option<(Vec<String>, String)> = None;
        let result = loop {
            if signals.raised() {
                break Err(LockError::Interrupted);
            }
            let who = store.owner(owner.kind, owner.id);
            let interests: Vec<Interest> =
                if wait.is_some() { keys.iter().map(|key| store.interest(key, None)).collect() } else { Vec::new() };
            let attempt = {
                let (store, keys, who) = (Arc::clone(store), keys.to_vec(), who.clone());
                InFlight::new(async move {
                    let outcome = store.acquire_all(&keys, &who, exclusive, lease, watch_on_failure, level).await;
                    Finished { outcome, store, keys, owner: who, level }
                })
            };
            match within(store.operation_timeout(), attempt).await {
                Err(error) => break Err(error),
                Ok(AttemptAll::Granted(fences)) => {
                    signals.keep_if_raised();
                    let grants = keys
                        .iter()
                        .zip(fences)
                        .map(|(key, fence)| {
                            let grant = RemoteGrant {
                                store: Arc::clone(store),
                                key: key.as_str().into(),
                                owner: who.clone(),
                                level,
                            };
                            (grant, fence)
                        })
                        .collect();
                    return Ok(grants);
                }
                Ok(AttemptAll::Upgrade) => break Err(LockError::Upgrade),
                Ok(AttemptAll::ClientExpired) => continue,
                Ok(AttemptAll::Busy { retry }) => {
                    let Some(limits) = wait else { break Err(LockError::WouldBlock) };
                    watching = Some((keys.to_vec(), who));
                    match sleep_any(&interests, &signals, limits.deadline, retry).await {
                        Woken::Retry => {}
                        Woken::Deadline => {
                            let waited = limits.since.map_or(Duration::ZERO, |since| since.elapsed());
                            break Err(LockError::Timeout { waited });
                        }
                        Woken::Signal => break Err(LockError::Interrupted),
                    }
                }
            }
        };
        if let Some((keys, who)) = watching {
            let _ = store.give_up_all(&keys, &who, level).await;
        }
        result
    }

    /// Releases `grant`. `LeaseExpired` if it was void. If the database
    /// cannot answer, the release is retried in the background until it
    /// does (a release is harmless to repeat), and the caller gets the error.
    pub(crate) async fn release(grant: &RemoteGrant) -> Result<(), LockError> {
        let call = grant.store.release(&grant.key, &grant.owner, grant.level);
        match within(grant.store.operation_timeout(), call).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(LockError::LeaseExpired),
            Err(error) => {
                let (store, keys) = (Arc::clone(&grant.store), vec![grant.key.to_string()]);
                runtime::detach(undo(store, keys, grant.owner.clone(), grant.level, None));
                Err(error)
            }
        }
    }

    /// Releases acquisition `level` of `keys` and leaves their queues (or
    /// stops watching them, `queued: Some(false)`), retrying until the
    /// database answers or the owner's registration has surely lapsed.
    async fn undo(store: Arc<Store>, keys: Vec<String>, owner: String, level: i64, queued: Option<bool>) {
        let mut backoff = Duration::from_millis(100);
        let give_up_by = Instant::now() + store.client_ttl() * 2;
        loop {
            let mut done = true;
            for key in &keys {
                done &= store.release(key, &owner, level).await.is_ok();
            }
            done &= match queued {
                Some(true) => store.give_up(&keys[0], &owner, level).await.is_ok(),
                Some(false) => store.give_up_all(&keys, &owner, level).await.is_ok(),
                None => true,
            };
            if done || Instant::now() >= give_up_by {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Moves `grant`'s lease to `lease` from now.
    pub(crate) async fn renew(grant: &RemoteGrant, lease: Duration) -> Result<(), LockError> {
        let call = grant.store.renew(&grant.key, &grant.owner, lease);
        match within(grant.store.operation_timeout(), call).await? {
            None => Ok(()),
            Some(true) => Err(LockError::LeaseExpired),
            Some(false) => Err(LockError::NoLease),
        }
    }

    /// Grants, held, waiting and entries, across every process; zeros if
    /// the database cannot be reached.
    pub(crate) fn stats(store: &Store) -> [u64; 4] {
        runtime::block_on(within(store.operation_timeout(), store.stats())).unwrap_or_default()
    }

    /// Deletes the database's rows of idle keys (a no-op if it cannot be
    /// reached: the next call does it).
    pub(crate) fn shrink(store: &Store) {
        let _ = runtime::block_on(within(store.operation_timeout(), store.shrink()));
    }

    /// The stamp of `key`, `None` when held exclusively or unreachable.
    pub(crate) fn stamp(store: &Store, key: &str) -> Option<i64> {
        runtime::block_on(within(store.operation_timeout(), store.stamp(key))).ok().flatten()
    }

    /// The waiter's place in a key's queue, given up if the wait ends
    /// without a grant, or if the future waiting is dropped.
    struct Queued {
        store: Arc<Store>,
        key: String,
        owner: String,
        level: i64,
        done: bool,
    }

    impl Queued {
        fn new(store: &Arc<Store>, key: &str, owner: &str, level: i64) -> Self {
            Queued { store: Arc::clone(store), key: key.into(), owner: owner.into(), level, done: false }
        }

        async fn give_up(&mut self) {
            self.done = true;
            let call = self.store.give_up(&self.key, &self.owner, self.level);
            if within(self.store.operation_timeout(), call).await.is_err() {
                let (store, keys) = (Arc::clone(&self.store), vec![std::mem::take(&mut self.key)]);
                runtime::detach(undo(store, keys, self.owner.clone(), self.level, Some(true)));
            }
        }
    }

    impl Drop for Queued {
        fn drop(&mut self) {
            if !self.done {
                let (store, keys) = (Arc::clone(&self.store), vec![std::mem::take(&mut self.key)]);
                runtime::detach(undo(store, keys, self.owner.clone(), self.level, Some(true)));
            }
        }
    }

    /// The cancel token and session interrupt of a wait, watched through a
    /// task waiter registered with them.
    struct Signals<'l> {
        limits: Option<&'l WaitLimits<'l>>,
        waiter: Arc<Waiter>,
        interrupt_since: Option<Option<u64>>,
    }

    impl<'l> Signals<'l> {
        fn register(limits: Option<&'l WaitLimits<'l>>, mode: LockMode, key: &str) -> Self {
            let waiter = Waiter::new(0, 0, mode, 0, key, 0, true);
            let mut interrupt_since = None;
            if let Some(limits) = limits {
                if let Some(cancel) = limits.cancel {
                    cancel.register(&waiter);
                }
                interrupt_since = limits.interrupt.map(|signal| signal.register(&waiter));
            }
            Signals { limits, waiter, interrupt_since }
        }

        fn poll_register(&self, cx: &Context<'_>) {
            self.waiter.register(cx.waker());
        }

        fn interrupted(&self) -> bool {
            let Some(limits) = self.limits else { return false };
            match (limits.interrupt, self.interrupt_since) {
                (Some(signal), Some(Some(generation))) => signal.moved_since(generation),
                (Some(_), Some(None)) => true,
                _ => false,
            }
        }

        fn raised(&self) -> bool {
            self.interrupted()
                || self.limits.and_then(|limits| limits.cancel).is_some_and(|signal| signal.is_cancelled())
        }

        /// After a grant: an interrupt raised during the wait is left for
        /// the session's next wait, as the embedded manager does.
        fn keep_if_raised(&self) {
            if self.interrupted()
                && let Some(signal) = self.limits.and_then(|limits| limits.interrupt)
            {
                signal.defer();
            }
        }
    }

    impl Drop for Signals<'_> {
        fn drop(&mut self) {
            if let Some(limits) = self.limits {
                if let Some(cancel) = limits.cancel {
                    cancel.deregister(&self.waiter);
                }
                if let Some(interrupt) = limits.interrupt {
                    interrupt.deregister(&self.waiter);
                }
            }
        }
    }

    enum Woken {
        Retry,
        Deadline,
        Signal,
    }

    /// Sleeps until a notification, the retry moment, the deadline or a signal.
    async fn sleep(
        interest: &Interest,
        signals: &Signals<'_>,
        deadline: Option<Instant>,
        retry: Option<Duration>,
    ) -> Woken {
        sleep_any(std::slice::from_ref(interest), signals, deadline, retry).await
    }

    async fn sleep_any(
        interests: &[Interest],
        signals: &Signals<'_>,
        deadline: Option<Instant>,
        retry: Option<Duration>,
    ) -> Woken {
        let retry_at = retry.and_then(|retry| Instant::now().checked_add(retry));
        let wake_at = match (deadline, retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut timer = Timer::new();
        poll_fn(|cx| {
            signals.poll_register(cx);
            if signals.raised() {
                return Poll::Ready(Woken::Signal);
            }
            if interests.iter().any(|interest| interest.poll_rung(cx).is_ready()) {
                return Poll::Ready(Woken::Retry);
            }
            if timer.poll_until(cx, wake_at).is_ready() {
                let deadline_passed = deadline.is_some_and(|deadline| Instant::now() >= deadline);
                return Poll::Ready(if deadline_passed { Woken::Deadline } else { Woken::Retry });
            }
            Poll::Pending
        })
        .await
    }

    /// An attempt's outcome, with what undoing it needs.
    struct Finished<T> {
        outcome: Result<T, BackendError>,
        store: Arc<Store>,
        keys: Vec<String>,
        owner: String,
        level: i64,
    }

    impl<T: Outcome> Finished<T> {
        /// Undoes the attempt in the background: whatever it was granted
        /// (releasing a level is harmless to repeat), and its place in the
        /// queue.
        fn undo(self) {
            runtime::detach(undo(self.store, self.keys, self.owner, self.level, Some(T::QUEUES)));
        }
    }

    /// The outcomes of the two kinds of attempt.
    trait Outcome: Send + 'static {
        /// Whether a failed attempt queued (one key) rather than watched (`lock_all`).
        const QUEUES: bool;
    }

    impl Outcome for Attempt {
        const QUEUES: bool = true;
    }

    impl Outcome for AttemptAll {
        const QUEUES: bool = false;
    }

    /// An acquisition attempt in flight. Dropped before it finished (its
    /// waiting future was dropped, or it timed out), it is finished on the
    /// backend's runtime, and a grant it got is released: the attempt
    /// leaves nothing behind.
    struct InFlight<T: Outcome> {
        call: Option<Pin<Box<dyn Future<Output = Finished<T>> + Send>>>,
    }

    impl<T: Outcome> InFlight<T> {
        fn new<F>(call: F) -> Self
        where
            F: Future<Output = Finished<T>> + Send + 'static,
        {
            InFlight { call: Some(Box::pin(call)) }
        }
    }

    impl<T: Outcome> Future for InFlight<T> {
        type Output = Result<T, BackendError>;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let call = self.call.as_mut().expect("polled after completion");
            let Finished { outcome, store, keys, owner, level } = std::task::ready!(call.as_mut().poll(cx));
            self.call = None;
            if outcome.is_err() {
                // The connection went while the attempt ran: it may have
                // been granted. Undo it, whichever it was.
                runtime::detach(undo(store, keys, owner, level, Some(T::QUEUES)));
            }
            Poll::Ready(outcome)
        }
    }

    impl<T: Outcome> Drop for InFlight<T> {
        fn drop(&mut self) {
            let Some(call) = self.call.take() else { return };
            runtime::detach(async move { call.await.undo() });
        }
    }

    /// Runs `call`, failing with `TimedOut` after `limit`. A signal raised
    /// meanwhile does not cut an attempt short: its outcome decides.
    pub(crate) async fn within<F, T>(limit: Duration, call: F) -> Result<T, LockError>
    where
        F: Future<Output = Result<T, BackendError>>,
    {
        let deadline = Instant::now().checked_add(limit);
        let mut call = std::pin::pin!(call);
        let mut timer = Timer::new();
        poll_fn(|cx| {
            if let Poll::Ready(outcome) = call.as_mut().poll(cx) {
                return Poll::Ready(outcome.map_err(LockError::Backend));
            }
            if timer.poll_until(cx, deadline).is_ready() {
                let error =
                    BackendError::new(BackendErrorKind::TimedOut, format!("no answer within {} ms", limit.as_millis()));
                return Poll::Ready(Err(LockError::Backend(error)));
            }
            Poll::Pending
        })
        .await
    }
}
