//! Benchmarks of tollgate's lock manager against peer keyed-lock designs, side by side in every group.
//!
//! Peers: see `support/locks.rs`, where the contenders and the operations measured are shared with the
//! scorecard (`benches/scorecard.rs`).
//!
//! Groups, and the goal (docs/BENCHMARKS.md, Goals) each one checks:
//! - `uncontended_existing_key`: lock + unlock of one pre-warmed key on one thread.
//!   Goal: tollgate ≤ 25 ns and ≤ 0.5× `dashmap+mutex`.
//! - `uncontended_fresh_key`: lock + unlock of a key with no entry (cycling over 65 536 pre-generated keys, far
//!   more than tollgate keeps idle, so each key's entry was reclaimed before it comes round again); the dashmap
//!   and condvar peers remove the entry on unlock. Goal: tollgate ≤ 60 ns.
//! - `disjoint_keys`: throughput of 1 and 2 threads, each cycling lock + unlock over 64 keys of its own
//!   (ids `<impl>/<threads>`, elements = operations). Goal: tollgate 1 → 2 threads ≥ 1.8× throughput.
//! - `handoff_parked`: time from the holder's release to a parked waiter's return from `lock` (the waiter is
//!   given 200 µs to park, which is not measured). Goal: tollgate ≤ 1.2× `parking_lot`.
//! - `contended_2_threads`: throughput of 2 threads locking + unlocking the same key (tiny critical section).
//!   No numeric goal; context for the handoff and scaling goals.
//! - `lock_all_3`: tollgate `lock_all` of 3 pre-warmed keys against the peers taking the same 3 keys one by one
//!   in sorted order, on one thread. No numeric goal.
//! - `async_uncontended`: lock + unlock of one pre-warmed key on one thread: a session's `lock_async` future
//!   polled once (granted at once) against the blocking `Session::lock` and `LockManager::lock`, with tokio's
//!   `Mutex::lock` future polled the same way for context. Goal: async ≤ 1.2× blocking.
//! - `async_handoff`: on a 2-worker tokio runtime, the time from the holder task's release to the return of a
//!   waiting task's `lock_async` (the waiter is given 200 µs to queue, which is not measured), against
//!   `tokio::sync::Mutex` measured the same way. Goal: tollgate ≤ 1× tokio.
//! - `vs_redis`: a leased lock + release: tollgate `acquire` with a 5 s lease against Redis `SET key token NX PX
//!   5000` plus the usual Lua compare-and-delete release (`EVALSHA`), over loopback. Goal: ≥ 1000× faster.
//!   Needs a Redis server at `REDIS_URL` (default `redis://127.0.0.1:6379/`); without one the Redis side is
//!   skipped with a message.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use criterion::{BenchmarkId, measurement::WallTime};
use tollgate::{LockManager, LockRequest};

mod support;
use support::locks::{
    AsyncHandoffs, CondvarLocks, DashLocks, KeyedLock, cycle_keys, disjoint_key_sets, existing_key, fresh_key,
    fresh_keys, lockable, parking_lot, tollgate, tollgate_session, with_handoff,
};
use support::{Budget, run_threads};

/// The keys of `lock_all_3`, already sorted.
const KEYS_3: [&str; 3] = ["sku:1", "sku:2", "sku:3"];

fn group<'c>(c: &'c mut Criterion, name: &str) -> BenchmarkGroup<'c, WallTime> {
    let mut group = c.benchmark_group(name);
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    group
}

fn existing<L: KeyedLock>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, locks: L) {
    let mut lock_unlock = existing_key(&locks);
    g.bench_function(name, |b| b.iter(|| lock_unlock(0)));
}

fn uncontended_existing_key(c: &mut Criterion) {
    let mut g = group(c, "uncontended_existing_key");
    existing(&mut g, "tollgate", tollgate());
    existing(&mut g, "tollgate_session", tollgate_session());
    existing(&mut g, "dashmap+mutex", DashLocks::new(false));
    existing(&mut g, "lockable", lockable());
    existing(&mut g, "std_mutex+condvar", CondvarLocks::new(false));
    existing(&mut g, "parking_lot", parking_lot());
    g.finish();
}

fn fresh<L: KeyedLock>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, locks: L, keys: &[String]) {
    let mut lock_unlock = fresh_key(&locks, keys);
    let mut next = 0;
    g.bench_function(name, |b| {
        b.iter(|| {
            lock_unlock(next);
            next += 1;
        })
    });
}

fn uncontended_fresh_key(c: &mut Criterion) {
    let keys = fresh_keys();
    let mut g = group(c, "uncontended_fresh_key");
    fresh(&mut g, "tollgate", tollgate(), &keys);
    fresh(&mut g, "dashmap+mutex", DashLocks::new(true), &keys);
    fresh(&mut g, "lockable", lockable(), &keys);
    fresh(&mut g, "std_mutex+condvar", CondvarLocks::new(true), &keys);
    g.finish();
}

/// Runs one thread per element of `keys`, each doing `iters` lock + unlock cycles over its own key list, and
/// returns the time from the first thread's start to the last thread's end.
fn cycle_threads<L: KeyedLock>(locks: &L, keys: &[Vec<String>], iters: u64) -> Duration {
    run_threads(keys.len(), Budget::Calls(iters), |t| cycle_keys(locks, &keys[t])).elapsed
}

fn disjoint<L: KeyedLock>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, locks: L) {
    for threads in [1, 2] {
        let keys = disjoint_key_sets(&locks, threads);
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_with_input(BenchmarkId::new(name, threads), &keys, |b, keys| {
            b.iter_custom(|iters| cycle_threads(&locks, keys, iters))
        });
    }
}

fn disjoint_keys(c: &mut Criterion) {
    let mut g = group(c, "disjoint_keys");
    disjoint(&mut g, "tollgate", tollgate());
    disjoint(&mut g, "dashmap+mutex", DashLocks::new(false));
    disjoint(&mut g, "lockable", lockable());
    disjoint(&mut g, "std_mutex+condvar", CondvarLocks::new(false));
    g.finish();
}

/// See [`with_handoff`]: only the time from the holder's release to the parked waiter's return is measured.
fn handoff<L: KeyedLock>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, locks: L) {
    with_handoff(&locks, |handoff| {
        g.bench_function(name, |b| b.iter_custom(|iters| (0..iters).map(|_| handoff()).sum()));
    });
}

fn handoff_parked(c: &mut Criterion) {
    let mut g = c.benchmark_group("handoff_parked");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sampling_mode(SamplingMode::Flat);
    handoff(&mut g, "tollgate", tollgate());
    handoff(&mut g, "parking_lot", parking_lot());
    handoff(&mut g, "dashmap+mutex", DashLocks::new(false));
    handoff(&mut g, "lockable", lockable());
    handoff(&mut g, "std_mutex+condvar", CondvarLocks::new(false));
    g.finish();
}

fn contended<L: KeyedLock>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, locks: L) {
    let key = "sku:hot".to_owned();
    locks.prewarm(&key);
    let keys = vec![vec![key.clone()], vec![key]];
    g.bench_function(name, |b| b.iter_custom(|iters| cycle_threads(&locks, &keys, iters)));
}

fn contended_2_threads(c: &mut Criterion) {
    let mut g = group(c, "contended_2_threads");
    g.throughput(Throughput::Elements(2));
    contended(&mut g, "tollgate", tollgate());
    contended(&mut g, "parking_lot", parking_lot());
    contended(&mut g, "dashmap+mutex", DashLocks::new(false));
    contended(&mut g, "lockable", lockable());
    contended(&mut g, "std_mutex+condvar", CondvarLocks::new(false));
    g.finish();
}

fn three_keys<L: KeyedLock>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, locks: L) {
    for key in KEYS_3 {
        locks.prewarm(key);
    }
    g.bench_function(name, |b| {
        b.iter(|| {
            let [k1, k2, k3] = black_box(KEYS_3);
            locks.with_lock(k1, || locks.with_lock(k2, || locks.with_lock(k3, || ())))
        })
    });
}

fn lock_all_3(c: &mut Criterion) {
    let mut g = group(c, "lock_all_3");
    let locks = LockManager::new();
    for key in KEYS_3 {
        drop(locks.lock(key).unwrap());
    }
    g.bench_function("tollgate", |b| {
        b.iter(|| drop(black_box(locks.lock_all(black_box(KEYS_3), Duration::from_secs(1)).unwrap())))
    });
    three_keys(&mut g, "dashmap+mutex", DashLocks::new(false));
    three_keys(&mut g, "lockable", lockable());
    three_keys(&mut g, "std_mutex+condvar", CondvarLocks::new(false));
    g.finish();
}

/// Redis's compare-and-delete release: delete the key only if it still holds our token.
const REDIS_RELEASE: &str =
    r#"if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end"#;

fn vs_redis(c: &mut Criterion) {
    let mut g = group(c, "vs_redis");
    let locks = LockManager::new();
    let lease = LockRequest::exclusive().lease(Duration::from_secs(5));
    g.bench_function("tollgate_leased", |b| {
        b.iter(|| {
            let guard = locks.acquire(black_box("sku:42"), lease.clone()).expect("tollgate lock");
            guard.release().expect("release within the lease");
        })
    });
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned());
    let connection = redis::Client::open(url.as_str()).and_then(|client| client.get_connection());
    match connection {
        Ok(mut con) => {
            let release = redis::Script::new(REDIS_RELEASE);
            let mut token: u64 = 0;
            g.bench_function("redis_set_nx_px+lua", |b| {
                b.iter(|| {
                    token += 1;
                    let set: Option<String> = redis::cmd("SET")
                        .arg("sku:42")
                        .arg(token)
                        .arg("NX")
                        .arg("PX")
                        .arg(5000)
                        .query(&mut con)
                        .expect("redis SET");
                    assert_eq!(set.as_deref(), Some("OK"), "the key was free");
                    let deleted: i64 = release.key("sku:42").arg(token).invoke(&mut con).expect("redis release");
                    assert_eq!(deleted, 1, "our token was still there");
                })
            });
        }
        Err(error) => eprintln!("vs_redis: Redis side skipped, no server at {url}: {error}"),
    }
    g.finish();
}

/// Polls a future that is ready at once (an uncontended acquisition).
#[inline]
fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an uncontended acquisition waited"),
    }
}

fn async_uncontended(c: &mut Criterion) {
    let mut g = group(c, "async_uncontended");
    let locks = LockManager::new();
    let session = locks.session();
    drop(session.lock("sku:1").unwrap());
    g.bench_function("tollgate_session_async", |b| {
        b.iter(|| drop(ready(session.lock_async(black_box("sku:1"))).unwrap()));
    });
    g.bench_function("tollgate_session", |b| b.iter(|| drop(session.lock(black_box("sku:1")).unwrap())));
    g.bench_function("tollgate", |b| b.iter(|| drop(locks.lock(black_box("sku:1")).unwrap())));
    let mutex = tokio::sync::Mutex::new(());
    g.bench_function("tokio_mutex_async", |b| b.iter(|| drop(ready(black_box(&mutex).lock()))));
    g.finish();
}

fn async_handoff(c: &mut Criterion) {
    let mut g = c.benchmark_group("async_handoff");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sampling_mode(SamplingMode::Flat);
    let handoffs = AsyncHandoffs::new();
    g.bench_function("tollgate", |b| b.iter_custom(|iters| handoffs.tollgate(iters)));
    g.bench_function("tokio_mutex", |b| b.iter_custom(|iters| handoffs.tokio_mutex(iters)));
    g.finish();
}

criterion_group!(
    benches,
    uncontended_existing_key,
    uncontended_fresh_key,
    disjoint_keys,
    handoff_parked,
    contended_2_threads,
    lock_all_3,
    async_uncontended,
    async_handoff,
    vs_redis
);
criterion_main!(benches);
