//! The keyed-lock contenders of `benches/locks.rs` and the scorecard, and the operations both measure.
//!
//! Peers: `dashmap+mutex` (`DashMap<String, Arc<parking_lot::Mutex<()>>>`: get or insert the `Arc`, then lock),
//! `lockable` (`lockable::LockPool<String>`, blocking API; it takes an owned key, so every lock clones the
//! `&str` into a `String`), `std_mutex+condvar` (a `std::sync::Mutex<HashMap<String, bool>>` of held keys plus
//! one `Condvar`; unlock marks the key free, or removes it when reclaiming, and calls `notify_all`), and
//! `parking_lot` (one `parking_lot::Mutex<()>`, no key at all) where a single lock makes sense.

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::sync::mpsc;
use std::sync::{Arc, Condvar};
use std::thread;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use lockable::LockPool;
use tollgate::LockManager;

/// How long the holder waits before releasing in a hand-off, so that the waiter has parked.
pub const PARK_WAIT: Duration = Duration::from_micros(200);
/// Keys cycled through by the fresh-key case: far more than tollgate keeps idle, so each key's entry was
/// reclaimed before it comes round again.
pub const FRESH_KEYS: usize = 1 << 16;
/// Keys each thread cycles through in the disjoint-keys case.
pub const KEYS_PER_THREAD: usize = 64;
/// The key of the existing-key case.
const EXISTING_KEY: &str = "sku:42";
/// The key handed over in the hand-off case.
const HANDOFF_KEY: &str = "sku:handoff";

/// A keyed exclusive lock, as the benchmarks use it: run `f` while holding `key`.
pub trait KeyedLock: Sync {
    fn with_lock<R>(&self, key: &str, f: impl FnOnce() -> R) -> R;

    /// Makes sure `key` has an entry that survives its unlock.
    fn prewarm(&self, key: &str) {
        self.with_lock(key, || ());
    }
}

/// The crate under test.
pub struct Tollgate(pub LockManager);

impl KeyedLock for Tollgate {
    #[inline]
    fn with_lock<R>(&self, key: &str, f: impl FnOnce() -> R) -> R {
        let guard = self.0.lock(key).expect("tollgate lock");
        let result = f();
        drop(guard);
        result
    }
}

/// The crate under test, locking as a session (an owner that is not the
/// thread): the owner async code uses.
pub struct TollgateSession(pub tollgate::Session);

impl KeyedLock for TollgateSession {
    #[inline]
    fn with_lock<R>(&self, key: &str, f: impl FnOnce() -> R) -> R {
        let guard = self.0.lock(key).expect("tollgate session lock");
        let result = f();
        drop(guard);
        result
    }
}

pub fn tollgate_session() -> TollgateSession {
    TollgateSession(LockManager::new().session())
}

/// `DashMap` of `Arc<parking_lot::Mutex<()>>`; with `reclaim`, the entry is removed on unlock when nobody
/// else holds its `Arc` (this simple removal is only sound single-threaded: a concurrent version would have
/// to re-check the map after locking, which would cost more).
pub struct DashLocks {
    map: DashMap<String, Arc<parking_lot::Mutex<()>>>,
    reclaim: bool,
}

impl DashLocks {
    pub fn new(reclaim: bool) -> Self {
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
pub struct Lockable(LockPool<String>);

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
pub struct CondvarLocks {
    held: std::sync::Mutex<HashMap<String, bool>>,
    freed: Condvar,
    reclaim: bool,
}

impl CondvarLocks {
    pub fn new(reclaim: bool) -> Self {
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
pub struct ParkingLot(parking_lot::Mutex<()>);

impl KeyedLock for ParkingLot {
    #[inline]
    fn with_lock<R>(&self, _key: &str, f: impl FnOnce() -> R) -> R {
        let guard = self.0.lock();
        let result = f();
        drop(guard);
        result
    }
}

pub fn tollgate() -> Tollgate {
    Tollgate(LockManager::new())
}

pub fn lockable() -> Lockable {
    Lockable(LockPool::new())
}

pub fn parking_lot() -> ParkingLot {
    ParkingLot(parking_lot::Mutex::new(()))
}

/// Prewarms one key and returns the operation of the existing-key case: one lock + unlock of that key.
pub fn existing_key<L: KeyedLock>(locks: &L) -> impl FnMut(u64) + '_ {
    locks.prewarm(EXISTING_KEY);
    move |_| locks.with_lock(black_box(EXISTING_KEY), || ())
}

/// The keys of the fresh-key case.
pub fn fresh_keys() -> Vec<String> {
    (0..FRESH_KEYS).map(|i| format!("sku:{i}")).collect()
}

/// The operation of the fresh-key case: call `i` locks + unlocks key `i` of `keys` (cyclically), whose entry
/// does not exist yet (see [`FRESH_KEYS`]).
pub fn fresh_key<'a, L: KeyedLock>(locks: &'a L, keys: &'a [String]) -> impl FnMut(u64) + 'a {
    move |i| locks.with_lock(black_box(&keys[i as usize % FRESH_KEYS]), || ())
}

/// [`KEYS_PER_THREAD`] keys for each of `threads` threads, none shared, prewarmed in `locks`.
pub fn disjoint_key_sets<L: KeyedLock>(locks: &L, threads: usize) -> Vec<Vec<String>> {
    let keys: Vec<Vec<String>> =
        (0..threads).map(|t| (0..KEYS_PER_THREAD).map(|i| format!("sku:{t}:{i}")).collect()).collect();
    for key in keys.iter().flatten() {
        locks.prewarm(key);
    }
    keys
}

/// The operation of one thread of the multi-threaded cases: lock + unlock of the next of `own` keys, cycling.
pub fn cycle_keys<'a, L: KeyedLock>(locks: &'a L, own: &'a [String]) -> impl FnMut(u64) + 'a {
    let mut next = 0;
    move |_| {
        let key = &own[next];
        next = if next + 1 == own.len() { 0 } else { next + 1 };
        locks.with_lock(black_box(key), || black_box(key.len()));
    }
}

/// Runs `measure` with a hand-off to a parked waiter: a persistent waiter thread locks a prewarmed key each time
/// the holder signals it, after which the holder sleeps [`PARK_WAIT`], notes `t0` and releases; the waiter notes
/// `t1` as soon as it holds the key. Each call of the function given to `measure` makes one hand-off and returns
/// `t1 - t0`, the only part measured.
pub fn with_handoff<L: KeyedLock, R>(locks: &L, measure: impl FnOnce(&mut dyn FnMut() -> Duration) -> R) -> R {
    locks.prewarm(HANDOFF_KEY);
    thread::scope(|s| {
        let (go, go_rx) = mpsc::channel::<()>();
        let (done_tx, done) = mpsc::channel::<Instant>();
        s.spawn(move || {
            while go_rx.recv().is_ok() {
                let t1 = locks.with_lock(HANDOFF_KEY, Instant::now);
                done_tx.send(t1).unwrap();
            }
        });
        let mut handoff = || {
            let t0 = locks.with_lock(HANDOFF_KEY, || {
                go.send(()).unwrap();
                thread::sleep(PARK_WAIT);
                Instant::now()
            });
            let t1 = done.recv().unwrap();
            t1.saturating_duration_since(t0)
        };
        let result = measure(&mut handoff);
        // Dropping `go` ends the waiter.
        drop(go);
        result
    })
}

/// Hand-offs to a waiting task on a 2-worker tokio runtime: the holder task takes the lock, spawns a waiter task,
/// pauses [`PARK_WAIT`] (a blocking sleep: tokio's own timer would pause a whole 1 ms tick, long enough for a
/// tollgate waiter's first deadlock search), notes `t0` and releases; the waiter notes `t1` once it holds the lock.
/// Only `t1 - t0` is measured. The same for a tollgate session's `lock_async` and `tokio::sync::Mutex::lock`.
pub struct AsyncHandoffs {
    runtime: tokio::runtime::Runtime,
    locks: LockManager,
    mutex: Arc<tokio::sync::Mutex<()>>,
}

impl Default for AsyncHandoffs {
    fn default() -> Self {
        Self::new()
    }
}

impl AsyncHandoffs {
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        Self { runtime, locks: LockManager::new(), mutex: Arc::new(tokio::sync::Mutex::new(())) }
    }

    /// The total time of `n` hand-offs between tollgate sessions.
    pub fn tollgate(&self, n: u64) -> Duration {
        let holder = self.locks.session();
        self.runtime.block_on(async {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let locks = self.locks.clone();
                let wait = async move {
                    let session = locks.session();
                    let guard = session.lock_async(HANDOFF_KEY).await.unwrap();
                    let t1 = Instant::now();
                    drop(guard);
                    t1
                };
                let hold = async { holder.lock_async(HANDOFF_KEY).await.unwrap() };
                total += Self::once(hold, wait).await;
            }
            total
        })
    }

    /// The total time of `n` hand-offs of a `tokio::sync::Mutex`.
    pub fn tokio_mutex(&self, n: u64) -> Duration {
        self.runtime.block_on(async {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let waiter = Arc::clone(&self.mutex);
                let wait = async move {
                    let guard = waiter.lock().await;
                    let t1 = Instant::now();
                    drop(guard);
                    t1
                };
                total += Self::once(self.mutex.lock(), wait).await;
            }
            total
        })
    }

    async fn once<G, W>(hold: impl Future<Output = G>, wait: W) -> Duration
    where
        W: Future<Output = Instant> + Send + 'static,
    {
        let guard = hold.await;
        let waiter = tokio::spawn(wait);
        thread::sleep(PARK_WAIT);
        let t0 = Instant::now();
        drop(guard);
        let t1 = waiter.await.unwrap();
        t1.saturating_duration_since(t0)
    }
}
