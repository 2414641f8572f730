//! Async lock acquisition by sessions: the same queue, hand-off, leases,
//! interruption and deadlock detection as blocking waits, mixed on one key;
//! a dropped future leaves no trace; tasks on one thread exclude each other.
//! Under tokio (both runtimes), smol and a hand-written `block_on`. The
//! rules that take a `LockManager` run on both backends
//! (`tests/support/backends.rs`); the rest check what only the embedded
//! manager does (a grant on the first poll, the state of a future dropped
//! between polls).

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use tollgate::{CancelToken, LockError, LockManager, LockRequest};

#[path = "support/backends.rs"]
mod backends;

#[path = "support/block_on.rs"]
mod executor;
#[allow(dead_code)] // only `below` is used here
#[path = "support/rng.rs"]
mod rng;

use executor::block_on;
use rng::Rng;

/// Waits (without asserting on time) until `condition` holds.
fn until(mut condition: impl FnMut() -> bool) {
    while !condition() {
        thread::sleep(Duration::from_millis(1));
    }
}

/// Polls `future` once with a waker that does nothing.
fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::pin::Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn an_uncontended_async_lock_is_granted_on_its_first_poll_with_increasing_tokens() {
    let locks = LockManager::new();
    let session = locks.session();
    let mut future = session.lock_async("sku:1");
    let Poll::Ready(Ok(first)) = poll_once(&mut future) else { panic!("not granted at once") };
    drop(future);
    let token = first.fencing_token();
    drop(first);
    let again = block_on(session.lock_async("sku:1")).unwrap();
    assert!(again.fencing_token() > token);
    assert_eq!(block_on(session.lock_async("")).map(|_| ()), Err(LockError::InvalidKey { reason: "the key is empty" }));
    let shared_lease = LockRequest::shared().lease(Duration::from_secs(1));
    assert!(matches!(block_on(session.acquire_async("k", shared_lease)), Err(LockError::InvalidRequest { .. })));
    // Reentrant, as for blocking session locks.
    let nested = block_on(session.lock_async("sku:1")).unwrap();
    assert_eq!(nested.fencing_token(), again.fencing_token());
}

fn threads_and_tasks_queued_alternately_on_one_key_are_granted_in_arrival_order(locks: LockManager) {
    let runtime = multi_thread();
    let holder = locks.lock("sku:1").unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    let mut tasks = Vec::new();
    for id in 0..8 {
        let (manager, order) = (locks.clone(), Arc::clone(&order));
        if id % 2 == 0 {
            threads.push(thread::spawn(move || {
                let guard = manager.session().lock("sku:1").unwrap();
                order.lock().unwrap().push(id);
                drop(guard);
            }));
        } else {
            tasks.push(runtime.spawn(async move {
                let session = manager.session();
                let guard = session.lock_async("sku:1").await.unwrap();
                order.lock().unwrap().push(id);
                drop(guard);
            }));
        }
        // The next one arrives only once this one is queued.
        until(|| locks.stats().waiting == id + 1);
    }
    drop(holder);
    for thread in threads {
        thread.join().unwrap();
    }
    runtime.block_on(async {
        for task in tasks {
            task.await.unwrap();
        }
    });
    assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<u64>>());
    assert_eq!(locks.stats().waiting, 0);
}

#[test]
fn a_future_dropped_at_any_point_leaves_no_trace() {
    let locks = LockManager::new();
    let (holder, waiter, behind) = (locks.session(), locks.session(), locks.session());

    // Before its first poll: nothing was queued.
    let held = holder.lock("k").unwrap();
    drop(waiter.lock_async("k"));
    assert_eq!(locks.stats().waiting, 0);

    // Queued, then dropped: it leaves the queue, and the key passes to the
    // waiter behind it.
    let mut queued = waiter.lock_async("k");
    assert!(poll_once(&mut queued).is_pending());
    let mut last = behind.lock_async("k");
    assert!(poll_once(&mut last).is_pending());
    assert_eq!(locks.stats().waiting, 2);
    drop(queued);
    assert_eq!(locks.stats().waiting, 1);
    drop(held);
    let Poll::Ready(Ok(guard)) = poll_once(&mut last) else { panic!("the waiter behind was not granted") };
    drop(guard);
    drop(last);

    // Granted but never polled again, then dropped: the grant passes on.
    let held = holder.lock("k").unwrap();
    let mut granted = waiter.lock_async("k");
    assert!(poll_once(&mut granted).is_pending());
    let mut next = behind.lock_async("k");
    assert!(poll_once(&mut next).is_pending());
    drop(held); // the key goes to `granted`'s waiter
    assert_eq!(locks.stats().waiting, 1);
    drop(granted); // ... which releases it to `next`
    let Poll::Ready(Ok(guard)) = poll_once(&mut next) else { panic!("a dropped grant was not handed on") };
    drop(guard);
    drop(next);

    // A lock_all dropped while waiting for its second key releases its first.
    let held = holder.lock("k2").unwrap();
    let mut all = waiter.lock_all_async(["k1", "k2"], Duration::from_secs(60));
    assert!(poll_once(&mut all).is_pending());
    assert!(matches!(behind.try_lock("k1"), Err(LockError::WouldBlock)));
    drop(all);
    assert!(behind.try_lock("k1").is_ok());
    drop(held);

    // Under a runtime's timeout.
    let held = holder.lock("k").unwrap();
    let runtime = current_thread();
    let timed_out =
        runtime.block_on(async { tokio::time::timeout(Duration::from_millis(5), waiter.lock_async("k")).await });
    assert!(timed_out.is_err());
    assert_eq!(locks.stats().waiting, 0);
    drop(held);
    assert!(behind.try_lock("k").is_ok());
    let stats = locks.stats();
    assert_eq!((stats.waiting, stats.held), (0, 0));
}

/// Mutual exclusion per key, counted: `enter` reports a second holder.
#[derive(Default)]
struct Exclusion {
    inside: [AtomicUsize; 2],
    violations: AtomicUsize,
    granted: AtomicUsize,
}

impl Exclusion {
    fn enter(&self, key: usize) {
        if self.inside[key].fetch_add(1, Ordering::SeqCst) != 0 {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
        self.granted.fetch_add(1, Ordering::SeqCst);
    }

    fn leave(&self, key: usize) {
        self.inside[key].fetch_sub(1, Ordering::SeqCst);
    }
}

fn dropping_futures_at_random_points_under_contention_leaves_no_trace_and_no_two_holders(locks: LockManager) {
    // Each attempt on PostgreSQL is a round trip: fewer rounds, the same races.
    let rounds = if locks.is_remote() { 40 } else { 300 };
    const KEYS: [&str; 2] = ["a", "b"];
    let runtime = multi_thread();
    let counts = Arc::new(Exclusion::default());
    let tasks: Vec<_> = (0..8u64)
        .map(|seed| {
            let (locks, counts) = (locks.clone(), Arc::clone(&counts));
            runtime.spawn(async move {
                let session = locks.session();
                let mut rng = Rng::new(seed);
                for _ in 0..rounds {
                    let key = rng.below(2) as usize;
                    // Give up after a random few microseconds: many waits are
                    // dropped queued, some just as they are granted.
                    let wait = Duration::from_micros(rng.below(200));
                    if let Ok(guard) = tokio::time::timeout(wait, session.lock_async(KEYS[key])).await {
                        let guard = guard.unwrap();
                        counts.enter(key);
                        if rng.below(2) == 0 {
                            tokio::task::yield_now().await;
                        }
                        counts.leave(key);
                        drop(guard);
                    }
                }
            })
        })
        .collect();
    // Blocking waiters on the same keys, with timeouts that race grants too.
    let threads: Vec<_> = (0..2u64)
        .map(|seed| {
            let (locks, counts) = (locks.clone(), Arc::clone(&counts));
            thread::spawn(move || {
                let mut rng = Rng::new(100 + seed);
                let session = locks.session();
                for _ in 0..rounds {
                    let key = rng.below(2) as usize;
                    if let Ok(guard) = session.lock_for(KEYS[key], Duration::from_micros(rng.below(200))) {
                        counts.enter(key);
                        counts.leave(key);
                        drop(guard);
                    }
                }
            })
        })
        .collect();
    runtime.block_on(async {
        for task in tasks {
            task.await.unwrap();
        }
    });
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(counts.violations.load(Ordering::SeqCst), 0, "two holders of one key at once");
    assert!(counts.granted.load(Ordering::SeqCst) > 0);
    // A PostgreSQL manager undoes a dropped attempt in the background.
    until(|| {
        let stats = locks.stats();
        (stats.waiting, stats.held) == (0, 0) || !locks.is_remote()
    });
    let stats = locks.stats();
    assert_eq!((stats.waiting, stats.held), (0, 0), "a dropped future left a trace");
    let session = locks.session();
    assert!(session.try_lock("a").is_ok() && session.try_lock("b").is_ok());
}

fn three_tasks_on_one_thread_with_a_session_each_never_hold_one_key_at_once(locks: LockManager) {
    let runtime = current_thread();
    let counts = Arc::new(Exclusion::default());
    let local = tokio::task::LocalSet::new();
    for _ in 0..3 {
        let (locks, counts) = (locks.clone(), Arc::clone(&counts));
        local.spawn_local(async move {
            let session = locks.session();
            for _ in 0..100 {
                let guard = session.lock_for_async("sku:1", Duration::from_secs(60)).await.unwrap();
                counts.enter(0);
                tokio::task::yield_now().await; // the other tasks run meanwhile
                counts.leave(0);
                drop(guard);
                tokio::task::yield_now().await;
            }
        });
    }
    runtime.block_on(local);
    assert_eq!(counts.violations.load(Ordering::SeqCst), 0);
    assert_eq!(counts.granted.load(Ordering::SeqCst), 300);
}

fn a_cycle_of_tasks_is_found_and_exactly_one_gives_up_with_the_keys(locks: LockManager) {
    for (round, runtime) in [current_thread(), multi_thread()].into_iter().enumerate() {
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let task = |first: &'static str, second: &'static str| {
            let (locks, barrier) = (locks.clone(), Arc::clone(&barrier));
            runtime.spawn(async move {
                let session = locks.session();
                let held = session.lock_async(first).await.unwrap();
                barrier.wait().await;
                let outcome = session.lock_async(second).await.map(drop);
                drop(held);
                outcome
            })
        };
        let (one, two) = (task("k1", "k2"), task("k2", "k1"));
        let outcomes = runtime.block_on(async { [one.await.unwrap(), two.await.unwrap()] });
        let victims: Vec<_> = outcomes.iter().filter_map(|outcome| outcome.as_ref().err()).collect();
        assert_eq!(victims.len(), 1, "{outcomes:?}");
        let LockError::Deadlock { keys } = victims[0] else { panic!("{outcomes:?}") };
        assert_eq!(keys.len(), 2);
        assert_eq!(locks.stats().deadlocks, round as u64 + 1);
    }
}

fn a_cycle_of_a_task_and_a_thread_is_found(locks: LockManager) {
    let runtime = multi_thread();
    let session = locks.session();
    let held_by_task = session.lock("k1").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = {
        let locks = locks.clone();
        thread::spawn(move || {
            let held = locks.lock("k2").unwrap();
            tx.send(()).unwrap();
            let outcome = locks.lock("k1").map(drop);
            drop(held);
            outcome
        })
    };
    rx.recv().unwrap();
    let task_outcome = runtime.block_on(async {
        let outcome = session.lock_async("k2").await.map(drop);
        drop(held_by_task);
        outcome
    });
    let thread_outcome = thread.join().unwrap();
    let deadlocks = [&task_outcome, &thread_outcome]
        .iter()
        .filter(|outcome| matches!(outcome, Err(LockError::Deadlock { .. })))
        .count();
    assert_eq!(deadlocks, 1, "{task_outcome:?} {thread_outcome:?}");
    assert!(task_outcome.is_ok() || thread_outcome.is_ok());
}

fn a_task_waiting_behind_a_lease_is_granted_when_it_runs_out_with_no_other_activity(locks: LockManager) {
    // Only the timer can wake the task: nobody releases or polls.
    let stale = locks.session();
    let lease = LockRequest::exclusive().lease(Duration::from_millis(30));
    let stale_guard = stale.acquire("sku:1", lease).unwrap();
    let waiter = locks.session();
    let guard = block_on(waiter.lock_async("sku:1")).unwrap();
    assert!(guard.fencing_token() > stale_guard.fencing_token());
    assert_eq!(stale_guard.release(), Err(LockError::LeaseExpired));
    assert_eq!(locks.stats().leases_expired, 1);
}

fn an_interrupt_or_a_cancel_wakes_a_task_waiter_and_a_pending_interrupt_fails_the_next_wait(locks: LockManager) {
    let runtime = multi_thread();
    let held = locks.session().lock("k").unwrap();

    let session = locks.session();
    let interrupter = session.interrupter();
    let waiting = runtime.spawn({
        let locks = locks.clone();
        async move { session.lock_async("k").await.map(drop).map_err(|e| (e, locks.stats().waiting)) }
    });
    until(|| locks.stats().waiting == 1);
    interrupter.interrupt();
    let (error, _) = runtime.block_on(waiting).unwrap().unwrap_err();
    assert_eq!(error, LockError::Interrupted);

    let token = CancelToken::new();
    let request = LockRequest::exclusive().cancel(&token);
    let waiting = runtime.spawn({
        let locks = locks.clone();
        async move { locks.session().acquire_async("k", request).await.map(drop) }
    });
    until(|| locks.stats().waiting == 1);
    token.cancel();
    assert_eq!(runtime.block_on(waiting).unwrap(), Err(LockError::Interrupted));

    // An interrupt with no wait blocked fails the next async wait.
    let session = locks.session();
    session.interrupt();
    assert_eq!(block_on(session.lock_async("k")).map(drop), Err(LockError::Interrupted));
    drop(held);
    assert!(block_on(session.lock_async("k")).is_ok(), "the interrupt was consumed");
    assert_eq!(locks.stats().waiting, 0);
}

fn a_timed_async_wait_times_out_and_counts_from_its_first_poll(locks: LockManager) {
    let _held = locks.session().lock("k").unwrap();
    let session = locks.session();
    let timeout = Duration::from_millis(20);
    let wait = session.lock_for_async("k", timeout);
    thread::sleep(timeout * 2); // not yet polled: the clock has not started
    let mut wait = pin!(wait);
    let first_poll = Instant::now();
    let first = wait.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    // Timed out at once only if the poll itself outlasted the timeout (a
    // very slow machine): never because of the sleep before it.
    assert!(first.is_pending() || first_poll.elapsed() >= timeout, "the timeout counted from the future's creation");
    let outcome = match first {
        Poll::Ready(outcome) => outcome,
        Poll::Pending => block_on(wait),
    };
    let Err(LockError::Timeout { waited }) = outcome else { panic!("did not time out") };
    assert!(waited >= timeout);
    assert_eq!(locks.stats().timeouts, 1);
}

fn session_guards_cross_awaits_tasks_and_spawn_blocking(locks: LockManager) {
    let runtime = multi_thread();
    let locks = Arc::new(locks);
    let keys = runtime.block_on({
        let locks = Arc::clone(&locks);
        async move {
            let session = locks.session();
            let guard = session.lock_async("sku:1").await.unwrap();
            tokio::task::yield_now().await;
            // Moved into another task, then into a blocking thread.
            let guard = tokio::spawn(async move { guard }).await.unwrap();
            let set = session.lock_all_async(["sku:3", "sku:2"], Duration::from_secs(1)).await.unwrap();
            let locks = Arc::clone(&locks);
            tokio::task::spawn_blocking(move || {
                let busy = locks.try_lock("sku:1");
                let keys: Vec<String> = set.guards().iter().map(|g| g.key().to_owned()).collect();
                drop((guard, set));
                (busy.map(drop), keys)
            })
            .await
            .unwrap()
        }
    });
    assert_eq!(keys, (Err(LockError::WouldBlock), vec!["sku:2".to_owned(), "sku:3".to_owned()]));
    assert_eq!(locks.stats().held, 0);
}

#[test]
fn the_async_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let locks = LockManager::new();
    let session = locks.session();
    assert_send(&session.lock_async("k"));
    assert_send(&session.lock_all_async(vec!["a".to_owned()], Duration::from_secs(1)));
}

fn under_smol_tasks_and_a_thread_share_one_key_and_a_queue_drains(locks: LockManager) {
    // The third runtime: smol's executor on two threads of its own.
    let counts = Arc::new(Exclusion::default());
    let executor = Arc::new(smol::Executor::new());
    let (stop, stopped) = smol::channel::unbounded::<()>();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (executor, stopped) = (Arc::clone(&executor), stopped.clone());
            thread::spawn(move || smol::block_on(executor.run(stopped.recv())))
        })
        .collect();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (locks, counts) = (locks.clone(), Arc::clone(&counts));
            executor.spawn(async move {
                let session = locks.session();
                for _ in 0..100 {
                    let guard = session.lock_for_async("sku:1", Duration::from_secs(60)).await.unwrap();
                    counts.enter(0);
                    smol::future::yield_now().await;
                    counts.leave(0);
                    drop(guard);
                }
            })
        })
        .collect();
    let blocking = {
        let (locks, counts) = (locks.clone(), Arc::clone(&counts));
        thread::spawn(move || {
            for _ in 0..100 {
                let guard = locks.lock("sku:1").unwrap();
                counts.enter(0);
                counts.leave(0);
                drop(guard);
            }
        })
    };
    smol::block_on(async {
        for task in tasks {
            task.await;
        }
    });
    blocking.join().unwrap();
    drop(stop);
    for thread in threads {
        thread.join().unwrap().unwrap_err(); // the channel closed
    }
    assert_eq!(counts.violations.load(Ordering::SeqCst), 0);
    assert_eq!(counts.granted.load(Ordering::SeqCst), 500);
    assert_eq!(locks.stats().waiting, 0);
}

backends::on_every_backend!(
    threads_and_tasks_queued_alternately_on_one_key_are_granted_in_arrival_order,
    dropping_futures_at_random_points_under_contention_leaves_no_trace_and_no_two_holders,
    three_tasks_on_one_thread_with_a_session_each_never_hold_one_key_at_once,
    a_cycle_of_tasks_is_found_and_exactly_one_gives_up_with_the_keys,
    a_cycle_of_a_task_and_a_thread_is_found,
    a_task_waiting_behind_a_lease_is_granted_when_it_runs_out_with_no_other_activity,
    an_interrupt_or_a_cancel_wakes_a_task_waiter_and_a_pending_interrupt_fails_the_next_wait,
    a_timed_async_wait_times_out_and_counts_from_its_first_poll,
    session_guards_cross_awaits_tasks_and_spawn_blocking,
    under_smol_tasks_and_a_thread_share_one_key_and_a_queue_drains,
);
