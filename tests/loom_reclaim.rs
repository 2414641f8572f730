//! Loom model of entry reclamation racing a new acquisition: a sweep that
//! kills an idle entry must never let two owners in, never free memory a
//! lookup still reads, and never let a fencing token go backwards. Run with
//! `RUSTFLAGS="--cfg loom --cfg crossbeam_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom_reclaim`.
#![cfg(loom)]

use std::time::Duration;

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use tollgate::{LockConfig, LockManager};

#[test]
fn reclamation_racing_acquire_keeps_exclusion_and_token_order() {
    loom::model(|| {
        let locks = Arc::new(LockManager::with_config(LockConfig {
            shards: 1,
            idle_entries_per_shard: 0,
            deadlock_threshold: Duration::from_secs(3600),
            ..LockConfig::default()
        }));
        // The highest fencing token seen, guarded by the lock itself.
        let last_token = Arc::new(UnsafeCell::new(0u64));
        let first = locks.lock("k").unwrap().fencing_token().get();
        last_token.with_mut(|last| unsafe { *last = first });

        let acquirer = {
            let (locks, last_token) = (Arc::clone(&locks), Arc::clone(&last_token));
            thread::spawn(move || {
                let guard = locks.lock("k").unwrap();
                let token = guard.fencing_token().get();
                last_token.with_mut(|last| unsafe {
                    assert!(token > *last, "token {token} after {}", *last);
                    *last = token;
                });
            })
        };
        // Sweeps the idle entry while the other thread looks it up.
        locks.shrink();
        {
            let guard = locks.lock("k").unwrap();
            let token = guard.fencing_token().get();
            last_token.with_mut(|last| unsafe {
                assert!(token > *last, "token {token} after {}", *last);
                *last = token;
            });
        }
        acquirer.join().unwrap();
        locks.shrink();
        assert_eq!(locks.stats().entries, 0);
    });
}
