//! Benchmarks of tollgate's lock manager against peer keyed-lock designs, side by side in every group.
//!
//! Peers: `dashmap+mutex` (`DashMap<String, Arc<parking_lot::Mutex<()>>>`: get or insert the `Arc`, then lock),
//! `lockable` (`lockable::LockPool<String>`, blocking API; it takes an owned key, so every lock clones the
//! `&str` into a `String`), `std_mutex+condvar` (a `std::sync::Mutex<HashMap<String, bool>>` of held keys plus
//! one `Condvar`; unlock marks the key free, or removes it when reclaiming, and calls `notify_all`), and
//! `parking_lot` (one `parking_lot::Mutex<()>`, no key at all) where a single lock makes sense.
//!
//! Groups, and the PRODUCT goal each one checks:
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
//! - `vs_redis`: a leased lock + release: tollgate `acquire` with a 5 s lease against Redis `SET key token NX PX
//!   5000` plus the usual Lua compare-and-delete release (`EVALSHA`), over loopback. Goal: ≥ 1000× faster.
//!   Needs a Redis server at `REDIS_URL` (default `redis://127.0.0.1:6379/`); without one the Redis side is
//!   skipped with a message.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Condvar};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use criterion::{BenchmarkId, measurement::WallTime};
use dashmap::DashMap;
use lockable::LockPool;
use tollgate::{LockManager, LockRequest};

/// How long the holder waits before releasing in `handoff_parked`, so that the waiter has parked.
const PARK_WAIT: Duration = Duration::from_micros(200);
/// Keys cycled through by `uncontended_fresh_key`.
const FRESH_KEYS: usize = 1 << 16;
/// Keys each thread cycles through in `disjoint_keys`.
const KEYS_PER_THREAD: usize = 64;
/// The keys of `lock_all_3`, already sorted.
const KEYS_3: [&str; 3] = ["sku:1", "sku:2", "sku:3"];

/// A keyed exclusive lock, as the benchmarks use it: run `f` while holding `key`.
trait KeyedLock: Sync {
    fn with_lock<R>(&self, key: &str, f: impl FnOnce() -> R) -> R;

    /// Makes sure `key` has an entry that survives its unlock.
    fn prewarm(&self, key: &str) {
        self.with_lock(key, || ());
    }
}

/// The crate under test.
struct Tollgate(LockManager);

impl KeyedLock for Tollgate {
    #[inline]
    fn with_lock<R>(&self, key: &str, f: impl FnOnce() -> R) -> R {
        let guard = self.0.lock(key).expect("tollgate lock");
        let result = f();
        drop(guard);
        result
    }
}

/// `DashMap` of `Arc<parking_lot::Mutex<()>>`; with `reclaim`, the entry is removed on unlock when nobody
/// else holds its `Arc` (this simple removal is only sound single-threaded: a concurrent version would have
/// to re-check the map after locking, which would cost more).
struct DashLocks {
    map: DashMap<String, Arc<parking_lot::Mutex<()>>>,
    reclaim: bool,
}

impl DashLocks {
    fn new(reclaim: bool) -> Self {
        Self { map: DashMap::new(), reclaim }
    }
}

impl KeyedLock for DashLocks {
    #[inline]
    fn with_lock<R>(&self, key: &str, f: impl FnOnce() -> R) -> R {
        let mutex = match self.map.get(key) {
            Some(entry) => Arc::clone(entry.value()),
            None => Arc::clone(self.map.entry(key.to_owned()).or_default().value()),
        };
        let guard = mutex.lock();
        let result = f();
        drop(guard);
        drop(mutex);
        if self.reclaim {
            self.map.remove_if(key, |_, mutex| Arc::strong_count(mutex) == 1);
        }
        result
    }
}

/// The `lockable` crate's lock pool (an entry exists while locked, or while it holds a value).
struct Lockable(LockPool<String>);

impl KeyedLock for Lockable {
    #[inline]
    fn with_lock<R>(&self, key: &str, f: impl FnOnce() -> R) -> R {
        let guard = self.0.blocking_lock(key.to_owned());
        let result = f();
        drop(guard);
        result
    }

    fn prewarm(&self, key: &str) {
        // A value keeps the entry after unlock.
        self.0.blocking_lock(key.to_owned()).insert(());
    }
}

/// A `std::sync::Mutex` over a map of held keys, and one `Condvar` for every waiter.
struct CondvarLocks {
    held: std::sync::Mutex<HashMap<String, bool>>,
    freed: Condvar,
    reclaim: bool,
}

impl CondvarLocks {
    fn new(reclaim: bool) -> Self {
        Self { held: std::sync::Mutex::new(HashMap::new()), freed: Condvar::new(), reclaim }
    }
}

impl KeyedLock for CondvarLocks {
    #[inline]
    fn with_lock<R>(&self, key: &str, f: impl FnOnce() -> R) -> R {
        {
            let mut held = self.held.lock().unwrap();
            loop {
                match held.get_mut(key) {
                    Some(true) => held = self.freed.wait(held).unwrap(),
                    Some(flag) => {
                        *flag = true;
                        break;
                    }
                    None => {
                        held.insert(key.to_owned(), true);
                        break;
                    }
                }
            }
        }
        let result = f();
        {
            let mut held = self.held.lock().unwrap();
            if self.reclaim {
                held.remove(key);
            } else if let Some(flag) = held.get_mut(key) {
                *flag = false;
            }
        }
        self.freed.notify_all();
        result
    }
}

/// One `parking_lot::Mutex<()>`, ignoring the key: the floor for a single lock.
struct ParkingLot(parking_lot::Mutex<()>);

impl KeyedLock for ParkingLot {
    #[inline]
    fn with_lock<R>(&self, _key: &str, f: impl FnOnce() -> R) -> R {
        let guard = self.0.lock();
        let result = f();
        drop(guard);
        result
    }
}

fn tollgate() -> Tollgate {
    Tollgate(LockManager::new())
}

fn lockable() -> Lockable {
    Lockable(LockPool::new())
}

fn parking_lot() -> ParkingLot {
    ParkingLot(parking_lot::Mutex::new(()))
}

fn group<'c>(c: &'c mut Criterion, name: &str) -> BenchmarkGroup<'c, WallTime> {
    let mut group = c.benchmark_group(name);
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    group
}

fn existing_key<L: KeyedLock>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, locks: L) {
    let key = "sku:42";
    locks.prewarm(key);
    g.bench_function(name, |b| b.iter(|| locks.with_lock(black_box(key), || ())));
}

fn uncontended_existing_key(c: &mut Criterion) {
    let mut g = group(c, "uncontended_existing_key");
    existing_key(&mut g, "tollgate", tollgate());
    existing_key(&mut g, "dashmap+mutex", DashLocks::new(false));
    existing_key(&mut g, "lockable", lockable());
    existing_key(&mut g, "std_mutex+condvar", CondvarLocks::new(false));
    existing_key(&mut g, "parking_lot", parking_lot());
    g.finish();
}

fn fresh_key<L: KeyedLock>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, locks: L, keys: &[String]) {
    let mut next = 0;
    g.bench_function(name, |b| {
        b.iter(|| {
            let key = &keys[next % FRESH_KEYS];
            next += 1;
            locks.with_lock(black_box(key), || ())
        })
    });
}

fn uncontended_fresh_key(c: &mut Criterion) {
    let keys: Vec<String> = (0..FRESH_KEYS).map(|i| format!("sku:{i}")).collect();
    let mut g = group(c, "uncontended_fresh_key");
    fresh_key(&mut g, "tollgate", tollgate(), &keys);
    fresh_key(&mut g, "dashmap+mutex", DashLocks::new(true), &keys);
    fresh_key(&mut g, "lockable", lockable(), &keys);
    fresh_key(&mut g, "std_mutex+condvar", CondvarLocks::new(true), &keys);
    g.finish();
}

/// Runs one thread per element of `keys`, each doing `iters` lock + unlock cycles over its own key list, and
/// returns the time from the first thread's start to the last thread's end.
fn run_threads<L: KeyedLock>(locks: &L, keys: &[Vec<String>], iters: u64) -> Duration {
    let barrier = Barrier::new(keys.len());
    let spans: Vec<(Instant, Instant)> = thread::scope(|s| {
        let handles: Vec<_> = keys
            .iter()
            .map(|own| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let mut next = 0;
                    for _ in 0..iters {
                        let key = &own[next];
                        next = if next + 1 == own.len() { 0 } else { next + 1 };
                        locks.with_lock(black_box(key), || black_box(key.len()));
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    let start = spans.iter().map(|span| span.0).min().unwrap();
    let end = spans.iter().map(|span| span.1).max().unwrap();
    end - start
}

fn disjoint<L: KeyedLock>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, locks: L) {
    for threads in [1, 2] {
        let keys: Vec<Vec<String>> =
            (0..threads).map(|t| (0..KEYS_PER_THREAD).map(|i| format!("sku:{t}:{i}")).collect()).collect();
        for own in &keys {
            for key in own {
                locks.prewarm(key);
            }
        }
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_with_input(BenchmarkId::new(name, threads), &keys, |b, keys| {
            b.iter_custom(|iters| run_threads(&locks, keys, iters))
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

/// A persistent waiter thread locks the key each time the holder signals it, after which the holder sleeps
/// [`PARK_WAIT`], notes `t0` and releases; the waiter notes `t1` as soon as it holds the key. Only `t1 - t0`
/// is measured.
fn handoff<L: KeyedLock>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, locks: L) {
    let key = "sku:handoff";
    locks.prewarm(key);
    let locks = &locks;
    thread::scope(|s| {
        let (go, go_rx) = mpsc::channel::<()>();
        let (done_tx, done) = mpsc::channel::<Instant>();
        s.spawn(move || {
            while go_rx.recv().is_ok() {
                let t1 = locks.with_lock(key, Instant::now);
                done_tx.send(t1).unwrap();
            }
        });
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = locks.with_lock(key, || {
                        go.send(()).unwrap();
                        thread::sleep(PARK_WAIT);
                        Instant::now()
                    });
                    let t1 = done.recv().unwrap();
                    total += t1.saturating_duration_since(t0);
                }
                total
            })
        });
        // Dropping `go` ends the waiter.
        drop(go);
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
    g.bench_function(name, |b| b.iter_custom(|iters| run_threads(&locks, &keys, iters)));
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

criterion_group!(
    benches,
    uncontended_existing_key,
    uncontended_fresh_key,
    disjoint_keys,
    handoff_parked,
    contended_2_threads,
    lock_all_3,
    vs_redis
);
criterion_main!(benches);
