//! Loom models of the async wait protocol: a task waiter registering its
//! waker against a grant, a pending future dropped against a grant, a cancel
//! racing both, and a thread and a task waiting on one key. A lost wake-up
//! shows as a deadlocked model (`loom::future::block_on` parks until woken).
//! Run with
//! `RUSTFLAGS="--cfg loom --cfg crossbeam_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom_async`.
#![cfg(loom)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use tollgate::{CancelToken, LockError, LockManager, LockRequest};

#[path = "support/loom.rs"]
mod support;
use support::manager;

fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

/// A thread running a task that locks "k" as a new session and increments
/// `data` under it.
fn task_incrementing(locks: &LockManager, data: &Arc<UnsafeCell<u32>>) -> thread::JoinHandle<()> {
    let (session, data) = (locks.session(), Arc::clone(data));
    thread::spawn(move || {
        let guard = loom::future::block_on(session.lock_async("k")).unwrap();
        data.with_mut(|value| unsafe { *value += 1 });
        drop(guard);
    })
}

#[test]
fn a_task_waiter_is_woken_by_a_grant_racing_its_registration() {
    loom::model(|| {
        let locks = manager();
        let data = Arc::new(UnsafeCell::new(0u32));
        let holder = locks.session();
        let held = holder.lock("k").unwrap();
        let task = task_incrementing(&locks, &data);
        data.with_mut(|value| unsafe { *value += 1 });
        drop(held);
        task.join().unwrap();
        assert_eq!(data.with(|value| unsafe { *value }), 2);
        assert!(holder.try_lock("k").is_ok(), "nothing left queued or held");
    });
}

#[test]
fn a_pending_future_dropped_against_a_grant_hands_the_key_on() {
    loom::model(|| {
        let locks = manager();
        let holder = locks.session();
        let held = holder.lock("k").unwrap();
        let (dropped, behind) = (locks.session(), locks.session());
        let mut future = dropped.lock_async("k");
        assert!(poll_once(&mut future).is_pending(), "queued behind the holder");
        let mut next = behind.lock_async("k");
        assert!(poll_once(&mut next).is_pending(), "queued behind the future to drop");
        // The holder releases on another thread while this one drops the
        // pending future (session guards move between threads).
        let releaser = thread::spawn(move || drop(held));
        drop(future);
        releaser.join().unwrap();
        // The key reached `next`, whichever way the race went.
        let Poll::Ready(Ok(guard)) = poll_once(&mut next) else { panic!("the key was stranded") };
        drop(guard);
        drop(next);
        assert!(holder.try_lock("k").is_ok());
        assert_eq!(locks.stats().waiting, 0);
    });
}

#[test]
fn a_cancel_racing_a_grant_gives_exactly_one_outcome_and_no_trace() {
    loom::model(|| {
        let locks = manager();
        let holder = locks.session();
        let held = holder.lock("k").unwrap();
        let token = CancelToken::new();
        let task = {
            let (session, token) = (locks.session(), token.clone());
            thread::spawn(move || {
                let request = LockRequest::exclusive().cancel(&token);
                loom::future::block_on(session.acquire_async("k", request)).map(drop)
            })
        };
        let canceller = thread::spawn(move || token.cancel());
        drop(held);
        canceller.join().unwrap();
        let outcome = task.join().unwrap();
        assert!(matches!(outcome, Ok(()) | Err(LockError::Interrupted)), "{outcome:?}");
        assert!(holder.try_lock("k").is_ok());
        assert_eq!(locks.stats().waiting, 0);
    });
}

#[test]
fn a_thread_and_a_task_waiting_on_one_key_exclude_each_other() {
    loom::model(|| {
        let locks = manager();
        let data = Arc::new(UnsafeCell::new(0u32));
        let holder = locks.session();
        let held = holder.lock("k").unwrap();
        let task = task_incrementing(&locks, &data);
        drop(held);
        {
            // Thread-owned: a thread that holds nothing skips the deadlock
            // search, so its park has no deadline.
            let _guard = locks.lock("k").unwrap();
            data.with_mut(|value| unsafe { *value += 1 });
        }
        task.join().unwrap();
        assert_eq!(data.with(|value| unsafe { *value }), 2);
        assert!(holder.try_lock("k").is_ok());
    });
}
