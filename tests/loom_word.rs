//! Loom models of the lock word: acquire and release, hand-off to a queued
//! waiter, shared against exclusive, and a timeout racing a grant. Run with
//! `RUSTFLAGS="--cfg loom --cfg crossbeam_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom_word`.
#![cfg(loom)]

use std::time::Duration;

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use tollgate::{LockError, LockRequest};

#[path = "support/loom.rs"]
mod support;
use support::manager;

#[test]
fn exclusive_lock_excludes_and_hands_off() {
    loom::model(|| {
        let locks = Arc::new(manager());
        let data = Arc::new(UnsafeCell::new(0u32));
        let other = {
            let (locks, data) = (Arc::clone(&locks), Arc::clone(&data));
            thread::spawn(move || {
                let _guard = locks.lock("k").unwrap();
                // Loom reports any access concurrent with another thread's.
                data.with_mut(|value| unsafe { *value += 1 });
            })
        };
        {
            let _guard = locks.lock("k").unwrap();
            data.with_mut(|value| unsafe { *value += 1 });
        }
        other.join().unwrap();
        assert_eq!(data.with(|value| unsafe { *value }), 2);
        assert!(locks.try_lock("k").is_ok(), "nothing left queued or held");
    });
}

#[test]
fn shared_holders_exclude_the_writer() {
    loom::model(|| {
        let locks = Arc::new(manager());
        let data = Arc::new(UnsafeCell::new(0u32));
        let reader = {
            let (locks, data) = (Arc::clone(&locks), Arc::clone(&data));
            thread::spawn(move || {
                let _guard = locks.acquire("k", LockRequest::shared()).unwrap();
                data.with(|value| unsafe { *value })
            })
        };
        {
            let _guard = locks.lock("k").unwrap();
            data.with_mut(|value| unsafe { *value = 1 });
        }
        let seen = reader.join().unwrap();
        assert!(seen == 0 || seen == 1);
        assert!(locks.try_lock("k").is_ok());
    });
}

#[test]
fn timeout_racing_a_grant_leaves_no_trace() {
    loom::model(|| {
        let locks = Arc::new(manager());
        let data = Arc::new(UnsafeCell::new(0u32));
        let holder = locks.session();
        let guard = holder.lock("k").unwrap();
        let waiter = {
            let (locks, data) = (Arc::clone(&locks), Arc::clone(&data));
            thread::spawn(move || match locks.lock_for("k", Duration::ZERO) {
                Ok(guard) => {
                    data.with_mut(|value| unsafe { *value += 1 });
                    drop(guard);
                    true
                }
                Err(LockError::Timeout { .. }) => false,
                Err(other) => panic!("unexpected {other}"),
            })
        };
        data.with_mut(|value| unsafe { *value += 1 });
        drop(guard);
        let granted = waiter.join().unwrap();
        assert_eq!(data.with(|value| unsafe { *value }), 1 + u32::from(granted));
        // Whichever way the race went, the key is free with nobody queued.
        assert!(locks.try_lock("k").is_ok());
        assert_eq!(locks.stats().waiting, 0);
    });
}

/// Regression: one owner on two threads (a session, a guard moved away). A
/// release racing a nested acquisition must neither free a grant that still
/// has a nested holder nor leave a stale nesting depth for the next owner.
#[test]
fn one_owner_on_two_threads_keeps_exclusion() {
    loom::model(|| {
        let locks = manager();
        let session = locks.session();
        let data = Arc::new(UnsafeCell::new(0u32));
        let held = session.lock("k").unwrap();
        // Session guards are 'static: this one moves to another loom thread.
        let mover = thread::spawn(move || drop(held));
        let other = {
            let (locks, data) = (locks.clone(), Arc::clone(&data));
            thread::spawn(move || {
                if let Ok(guard) = locks.try_lock("k") {
                    data.with_mut(|value| unsafe { *value += 1 });
                    drop(guard);
                }
            })
        };
        let nested = session.lock("k").unwrap();
        data.with_mut(|value| unsafe { *value += 1 });
        drop(nested);
        mover.join().unwrap();
        other.join().unwrap();
        assert!(locks.try_lock("k").is_ok(), "the key leaked");
    });
}
