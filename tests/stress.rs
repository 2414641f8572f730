//! Multi-threaded stress over a small key space, mixing every operation, with
//! per-key occupancy counters that count violations of mutual exclusion and
//! of fencing-token order (both must stay 0). Runs a few seconds; set
//! `TOLLGATE_STRESS_SECS` for longer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

#[allow(dead_code)] // only `below` is used here
#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

use tollgate::{LockConfig, LockError, LockManager, LockMode, LockRequest, Session};

const THREADS: usize = 8;
const KEYS: usize = 6;

fn stress_duration() -> Duration {
    let secs = std::env::var("TOLLGATE_STRESS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    Duration::from_secs(secs)
}

/// What the holders of one key are doing; checked on entry to each critical section.
#[derive(Default)]
struct Occupancy {
    writers: AtomicU64,
    readers: AtomicU64,
    /// The highest fencing token an exclusive holder has seen.
    token_max: AtomicU64,
}

#[derive(Default)]
struct Tally {
    exclusion_violations: AtomicU64,
    token_violations: AtomicU64,
    stale_lease_accepted: AtomicU64,
    operations: AtomicU64,
    timeouts: AtomicU64,
    interrupts: AtomicU64,
    deadlocks: AtomicU64,
    would_block: AtomicU64,
}

fn key(i: usize) -> String {
    format!("sku:{i}")
}

fn enter(occupancy: &Occupancy, tally: &Tally, mode: LockMode, token: u64) {
    match mode {
        LockMode::Exclusive => {
            if occupancy.writers.fetch_add(1, Ordering::SeqCst) != 0 || occupancy.readers.load(Ordering::SeqCst) != 0 {
                tally.exclusion_violations.fetch_add(1, Ordering::SeqCst);
            }
            if occupancy.token_max.fetch_max(token, Ordering::SeqCst) >= token {
                tally.token_violations.fetch_add(1, Ordering::SeqCst);
            }
        }
        LockMode::Shared => {
            occupancy.readers.fetch_add(1, Ordering::SeqCst);
            if occupancy.writers.load(Ordering::SeqCst) != 0 {
                tally.exclusion_violations.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

fn leave(occupancy: &Occupancy, mode: LockMode) {
    match mode {
        LockMode::Exclusive => occupancy.writers.fetch_sub(1, Ordering::SeqCst),
        LockMode::Shared => occupancy.readers.fetch_sub(1, Ordering::SeqCst),
    };
}

fn count_error(tally: &Tally, error: &LockError) {
    let counter = match error {
        LockError::Timeout { .. } => &tally.timeouts,
        LockError::Interrupted => &tally.interrupts,
        LockError::Deadlock { .. } => &tally.deadlocks,
        LockError::WouldBlock => &tally.would_block,
        other => panic!("unexpected error in stress: {other}"),
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

fn critical_section(rng: &mut Rng) {
    for _ in 0..rng.below(50) {
        std::hint::spin_loop();
    }
    if rng.below(200) == 0 {
        thread::yield_now();
    }
}

fn worker(
    locks: &LockManager,
    session: &Session,
    occupancy: &[Occupancy],
    tally: &Tally,
    seed: u64,
    stop: &AtomicBool,
) {
    let mut rng = Rng::new(seed);
    let timeout = Duration::from_millis(20);
    while !stop.load(Ordering::Relaxed) {
        tally.operations.fetch_add(1, Ordering::Relaxed);
        let k = rng.below(KEYS as u64) as usize;
        let use_session = rng.below(2) == 0;
        match rng.below(10) {
            // Blocking, try and timed exclusive locks, as a thread or a session.
            op @ 0..=2 => {
                let result = match (op, use_session) {
                    (0, false) => locks.lock(&key(k)).map(|g| (g.fencing_token(), Some(g), None)),
                    (0, true) => session.lock(&key(k)).map(|g| (g.fencing_token(), None, Some(g))),
                    (1, false) => locks.try_lock(&key(k)).map(|g| (g.fencing_token(), Some(g), None)),
                    (1, true) => session.try_lock(&key(k)).map(|g| (g.fencing_token(), None, Some(g))),
                    // Short timeouts, so that timing out races with being granted.
                    (_, false) => {
                        let timeout = Duration::from_micros(rng.below(100));
                        locks.lock_for(&key(k), timeout).map(|g| (g.fencing_token(), Some(g), None))
                    }
                    (_, true) => {
                        let timeout = Duration::from_micros(rng.below(100));
                        session.lock_for(&key(k), timeout).map(|g| (g.fencing_token(), None, Some(g)))
                    }
                };
                match result {
                    Ok((token, thread_guard, session_guard)) => {
                        enter(&occupancy[k], tally, LockMode::Exclusive, token.get());
                        critical_section(&mut rng);
                        leave(&occupancy[k], LockMode::Exclusive);
                        drop((thread_guard, session_guard));
                    }
                    Err(error) => count_error(tally, &error),
                }
            }
            // Shared locks, sometimes nested twice by the same owner.
            3 | 4 => match session.acquire(&key(k), LockRequest::shared().timeout(timeout)) {
                Ok(guard) => {
                    let mode = guard.mode();
                    enter(&occupancy[k], tally, mode, guard.fencing_token().get());
                    if mode == LockMode::Shared && rng.below(4) == 0 {
                        let again = session.acquire(&key(k), LockRequest::shared().no_wait()).expect("nested shared");
                        drop(again);
                    }
                    critical_section(&mut rng);
                    leave(&occupancy[k], mode);
                }
                Err(error) => count_error(tally, &error),
            },
            // Reentrant exclusive.
            5 => match locks.lock_for(&key(k), timeout) {
                Ok(outer) => {
                    enter(&occupancy[k], tally, LockMode::Exclusive, outer.fencing_token().get());
                    let inner = locks.lock(&key(k)).expect("reentrant lock");
                    if inner.fencing_token() != outer.fencing_token() {
                        tally.token_violations.fetch_add(1, Ordering::SeqCst);
                    }
                    critical_section(&mut rng);
                    leave(&occupancy[k], LockMode::Exclusive);
                    drop(outer);
                    drop(inner);
                }
                Err(error) => count_error(tally, &error),
            },
            // lock_all of up to three keys.
            6 => {
                let keys: Vec<String> = (0..1 + rng.below(3)).map(|_| key(rng.below(KEYS as u64) as usize)).collect();
                match session.lock_all(&keys, timeout) {
                    Ok(set) => {
                        let indices: Vec<usize> =
                            set.guards().iter().map(|g| g.key()[4..].parse().expect("sku:n")).collect();
                        for (guard, &i) in set.guards().iter().zip(&indices) {
                            enter(&occupancy[i], tally, LockMode::Exclusive, guard.fencing_token().get());
                        }
                        critical_section(&mut rng);
                        for &i in &indices {
                            leave(&occupancy[i], LockMode::Exclusive);
                        }
                    }
                    Err(error) => count_error(tally, &error),
                }
            }
            // A lease honoured: long enough never to run out here.
            7 => match session
                .acquire(&key(k), LockRequest::exclusive().timeout(timeout).lease(Duration::from_secs(30)))
            {
                Ok(guard) => {
                    enter(&occupancy[k], tally, LockMode::Exclusive, guard.fencing_token().get());
                    critical_section(&mut rng);
                    guard.renew(Duration::from_secs(30)).expect("renew of a live lease");
                    leave(&occupancy[k], LockMode::Exclusive);
                    guard.release().expect("release of a live lease");
                }
                Err(error) => count_error(tally, &error),
            },
            // Hold one key while waiting for another, in random order: owners
            // can deadlock, and detection must pick a victim.
            9 => {
                let other = (k + 1 + rng.below(KEYS as u64 - 1) as usize) % KEYS;
                match session.lock(&key(k)) {
                    Ok(first) => {
                        enter(&occupancy[k], tally, LockMode::Exclusive, first.fencing_token().get());
                        match session.lock(&key(other)) {
                            Ok(second) => {
                                enter(&occupancy[other], tally, LockMode::Exclusive, second.fencing_token().get());
                                critical_section(&mut rng);
                                leave(&occupancy[other], LockMode::Exclusive);
                            }
                            Err(error) => count_error(tally, &error),
                        }
                        leave(&occupancy[k], LockMode::Exclusive);
                    }
                    Err(error) => count_error(tally, &error),
                }
            }
            // A lease that runs out: the holder stalls past it and must be told.
            _ => match session
                .acquire(&key(k), LockRequest::exclusive().timeout(timeout).lease(Duration::from_micros(200)))
            {
                Ok(guard) => {
                    // Its token is not checked against `token_max`: the grant may
                    // be revoked, and the key regranted, before this thread could
                    // record it. Exclusive holders that cannot be revoked check it.
                    thread::sleep(Duration::from_micros(400));
                    if guard.release().is_ok() {
                        tally.stale_lease_accepted.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Err(error) => count_error(tally, &error),
            },
        }
    }
}

#[test]
fn stress_mixed_operations_never_violate_exclusion() {
    let locks = LockManager::with_config(LockConfig {
        idle_entries_per_shard: 1,
        shards: 4,
        deadlock_threshold: Duration::from_micros(200),
        ..LockConfig::default()
    });
    let occupancy: Vec<Occupancy> = (0..KEYS).map(|_| Occupancy::default()).collect();
    let tally = Tally::default();
    let stop = AtomicBool::new(false);
    let sessions: Vec<Session> = (0..THREADS).map(|_| locks.session()).collect();
    thread::scope(|s| {
        for (t, session) in sessions.iter().enumerate() {
            let (locks, occupancy, tally, stop) = (&locks, &occupancy, &tally, &stop);
            s.spawn(move || worker(locks, session, occupancy, tally, 0x9E37_79B9 * (t as u64 + 1), stop));
        }
        // Interrupts and reclamation race with everything else.
        s.spawn(|| {
            let mut rng = Rng::new(7);
            while !stop.load(Ordering::Relaxed) {
                sessions[rng.below(THREADS as u64) as usize].interrupt();
                if rng.below(8) == 0 {
                    locks.shrink();
                }
                thread::sleep(Duration::from_micros(300));
            }
        });
        let end = Instant::now() + stress_duration();
        while Instant::now() < end {
            thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let stats = locks.stats();
    let load = |c: &AtomicU64| c.load(Ordering::SeqCst);
    println!(
        "operations {}, timeouts {}, interrupts {}, deadlocks {}, would_block {}, stats {stats:?}",
        load(&tally.operations),
        load(&tally.timeouts),
        load(&tally.interrupts),
        load(&tally.deadlocks),
        load(&tally.would_block)
    );
    assert_eq!(load(&tally.exclusion_violations), 0, "two owners inside at once");
    assert_eq!(load(&tally.token_violations), 0, "a fencing token did not grow");
    assert_eq!(load(&tally.stale_lease_accepted), 0, "an expired lease released without error");
    assert!(load(&tally.operations) > 0);
    assert_eq!((stats.held, stats.waiting), (0, 0), "everything released, nobody left waiting");
    // Every interrupt left pending is consumed by at most one wait; clear them.
    locks.shrink();
    assert_eq!(locks.stats().entries, 0, "every idle entry reclaimed");
}

#[test]
fn million_distinct_keys_leave_no_entries() {
    const KEYS_TOTAL: usize = if cfg!(miri) { 1_000 } else { 1_000_000 };
    let locks = LockManager::new();
    let bound = (locks.config().shards * locks.config().idle_entries_per_shard) as u64 + 1;
    let mut key = String::with_capacity(32);
    for i in 0..KEYS_TOTAL {
        key.clear();
        use std::fmt::Write;
        write!(key, "order:{i}").unwrap();
        let guard = locks.lock(&key).unwrap();
        drop(guard);
        if i % 4096 == 0 {
            let entries = locks.stats().entries;
            assert!(entries <= bound, "{entries} idle entries after {i} keys (bound {bound})");
        }
    }
    let stats = locks.stats();
    assert_eq!(stats.grants, KEYS_TOTAL as u64);
    assert!(stats.entries <= bound);
    locks.shrink();
    assert_eq!(locks.stats().entries, 0);
}

#[test]
fn million_distinct_keys_from_two_threads_leave_no_entries() {
    const PER_THREAD: usize = if cfg!(miri) { 500 } else { 500_000 };
    let locks = LockManager::new();
    thread::scope(|s| {
        for t in 0..2 {
            let locks = &locks;
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let guard = locks.lock(&format!("t{t}:{i}")).unwrap();
                    drop(guard);
                }
            });
        }
    });
    assert_eq!(locks.stats().grants, 2 * PER_THREAD as u64);
    locks.shrink();
    assert_eq!(locks.stats().entries, 0);
}

/// Regression (use-after-free): a waiter granted a leased lock used to keep
/// touching the entry unpinned, while the lease ran out and the entry was
/// revoked and reclaimed. Leases here are shorter than a wake-up, and
/// another thread sweeps constantly. Without the fix this crashes under
/// AddressSanitizer or Miri; here it must simply run clean.
#[test]
fn leased_hand_offs_racing_reclamation() {
    let locks = LockManager::with_config(LockConfig { shards: 1, idle_entries_per_shard: 0, ..LockConfig::default() });
    let stop = AtomicBool::new(false);
    let end = Instant::now() + Duration::from_millis(if cfg!(miri) { 50 } else { 1500 });
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let session = locks.session();
                while Instant::now() < end {
                    let request =
                        LockRequest::exclusive().timeout(Duration::from_millis(5)).lease(Duration::from_nanos(200));
                    if let Ok(guard) = session.acquire("k", request) {
                        // Usually expired already: the release reports it.
                        let _ = guard.release();
                    }
                }
            });
        }
        s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                drop(locks.lock(&format!("other:{}", i % 8)));
                locks.shrink();
                i += 1;
            }
        });
        while Instant::now() < end {
            thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
    });
    locks.shrink();
    assert_eq!(locks.stats().held, 0);
}
