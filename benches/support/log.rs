//! The append stores of `benches/log.rs` and the scorecard, and the publish → subscriber latency runs both
//! measure. See `benches/log.rs` for each peer's setup.

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use commitlog::{CommitLog, LogOptions};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use hdrhistogram::Histogram;
use rusqlite::{Connection, TransactionBehavior};
use tempfile::TempDir;
use tollgate::{Durability, Engine, SEGMENT_BYTES_MAX, StartAt, TopicConfig};

use super::{Budget, Span, latency_histogram, memory_dir, run_threads};

/// The topic every tollgate benchmark of the log uses.
pub const TOPIC: &str = "bench";
/// How long a sender waits before publishing to a parked receiver, so that the receiver has parked.
pub const PARK_WAIT: Duration = Duration::from_micros(200);
/// How long a parked receiver waits at most; far beyond any benchmark.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Messages per `publish_batch` of the `Sync` batch case.
pub const SYNC_BATCH: usize = 64;
/// Index entries per commitlog index file: enough that no benchmark rolls a commitlog segment because its index
/// is full (the file is sparse), which the `fdatasync` of the sync benchmark relies on.
const COMMITLOG_INDEX_ITEMS: usize = 1 << 24;

/// A store that messages are appended to, as the append and sync benchmarks use it. `thread` and `seq` make a
/// key unique for the stores that need one.
pub trait Store: Sync {
    fn append(&self, thread: usize, seq: u64, payload: &[u8]);

    /// Appends `count` copies of `payload` in one atomic write.
    fn append_batch(&self, thread: usize, seq: u64, payload: &[u8], count: usize);
}

/// The crate under test: one topic in its own engine.
pub struct TollgateLog {
    pub topic: tollgate::Topic,
    _engine: Engine,
}

impl TollgateLog {
    pub fn open(dir: &Path, durability: Durability) -> Self {
        let engine = Engine::open(dir).expect("open engine");
        let config = TopicConfig { durability, segment_bytes: SEGMENT_BYTES_MAX, ..TopicConfig::default() };
        let topic = engine.create_topic(TOPIC, config).expect("create topic");
        Self { topic, _engine: engine }
    }
}

impl Store for TollgateLog {
    #[inline]
    fn append(&self, _thread: usize, _seq: u64, payload: &[u8]) {
        black_box(self.topic.publish(payload).expect("publish"));
    }

    fn append_batch(&self, _thread: usize, _seq: u64, payload: &[u8], count: usize) {
        let message = Bytes::copy_from_slice(payload);
        black_box(self.topic.publish_batch(std::iter::repeat_n(message, count)).expect("publish_batch"));
    }
}

/// crossbeam-channel's unbounded channel of `N`-byte arrays, never drained.
pub struct Channel<const N: usize> {
    tx: crossbeam_channel::Sender<[u8; N]>,
    _rx: crossbeam_channel::Receiver<[u8; N]>,
}

impl<const N: usize> Channel<N> {
    pub fn new() -> Self {
        let (tx, _rx) = crossbeam_channel::unbounded();
        Self { tx, _rx }
    }
}

impl<const N: usize> Store for Channel<N> {
    #[inline]
    fn append(&self, _thread: usize, _seq: u64, payload: &[u8]) {
        self.tx.send(payload.try_into().expect("payload of N bytes")).expect("receiver alive");
    }

    fn append_batch(&self, thread: usize, seq: u64, payload: &[u8], count: usize) {
        for _ in 0..count {
            self.append(thread, seq, payload);
        }
    }
}

/// yaque's sender, unbounded, shared behind a mutex (it takes `&mut self`).
pub struct Yaque(Mutex<yaque::Sender>);

impl Yaque {
    pub fn open(dir: &Path) -> Self {
        Self(Mutex::new(yaque::Sender::open(dir).expect("open yaque")))
    }
}

impl Store for Yaque {
    #[inline]
    fn append(&self, _thread: usize, _seq: u64, payload: &[u8]) {
        self.0.lock().unwrap().try_send(payload).expect("yaque send");
    }

    fn append_batch(&self, _thread: usize, _seq: u64, payload: &[u8], count: usize) {
        self.0.lock().unwrap().try_send_batch(std::iter::repeat_n(payload, count)).expect("yaque send_batch");
    }
}

/// commitlog behind a mutex; with `sync`, every append is followed by `flush` and an `fdatasync` of the
/// segment file.
pub struct CommitLogStore {
    pub log: Mutex<CommitLog>,
    /// The (only) segment, for `fdatasync`: see [`COMMITLOG_INDEX_ITEMS`].
    segment: fs::File,
    sync: bool,
}

impl CommitLogStore {
    pub fn open(dir: &Path, sync: bool) -> Self {
        let log = open_commitlog(dir, 1 << 30, COMMITLOG_INDEX_ITEMS);
        let segment = fs::File::open(dir.join(format!("{:020}.log", 0))).expect("commitlog segment");
        Self { log: Mutex::new(log), segment, sync }
    }

    fn synced(&self, log: &mut CommitLog) {
        if self.sync {
            // The file holds every record: a second segment would need more index entries than it has.
            assert!(log.next_offset() < COMMITLOG_INDEX_ITEMS as u64, "commitlog rolled its segment");
            log.flush().expect("commitlog flush");
            self.segment.sync_data().expect("commitlog fdatasync");
        }
    }
}

pub fn open_commitlog(dir: &Path, segment_bytes: usize, index_items: usize) -> CommitLog {
    let mut options = LogOptions::new(dir);
    options.segment_max_bytes(segment_bytes).index_max_items(index_items);
    CommitLog::new(options).expect("open commitlog")
}

impl Store for CommitLogStore {
    #[inline]
    fn append(&self, _thread: usize, _seq: u64, payload: &[u8]) {
        let mut log = self.log.lock().unwrap();
        black_box(log.append_msg(payload).expect("commitlog append"));
        self.synced(&mut log);
    }

    fn append_batch(&self, _thread: usize, _seq: u64, payload: &[u8], count: usize) {
        let mut batch: commitlog::message::MessageBuf = std::iter::repeat_n(payload, count).collect();
        let mut log = self.log.lock().unwrap();
        black_box(log.append(&mut batch).expect("commitlog append"));
        self.synced(&mut log);
    }
}

/// fjall, one keyspace; with `sync`, every write is persisted with `PersistMode::SyncAll`.
pub struct FjallStore {
    pub keyspace: Keyspace,
    db: Database,
    sync: bool,
}

impl FjallStore {
    pub fn open(dir: &Path, sync: bool) -> Self {
        let db = Database::builder(dir).open().expect("open fjall");
        let keyspace = db.keyspace("log", KeyspaceCreateOptions::default).expect("fjall keyspace");
        Self { keyspace, db, sync }
    }
}

fn fjall_key(thread: usize, seq: u64) -> [u8; 9] {
    let mut key = [0; 9];
    key[0] = thread as u8;
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

impl Store for FjallStore {
    #[inline]
    fn append(&self, thread: usize, seq: u64, payload: &[u8]) {
        self.keyspace.insert(&fjall_key(thread, seq)[..], payload).expect("fjall insert");
        if self.sync {
            self.db.persist(PersistMode::SyncAll).expect("fjall persist");
        }
    }

    fn append_batch(&self, thread: usize, seq: u64, payload: &[u8], count: usize) {
        let mut batch = self.db.batch();
        if self.sync {
            batch = batch.durability(Some(PersistMode::SyncAll));
        }
        for i in 0..count as u64 {
            batch.insert(&self.keyspace, &fjall_key(thread, seq * count as u64 + i)[..], payload);
        }
        batch.commit().expect("fjall batch");
    }
}

/// SQLite in WAL mode, one connection per thread.
pub struct Sqlite {
    pub connections: Vec<Mutex<Connection>>,
}

impl Sqlite {
    /// `synchronous` is `OFF` or `FULL`.
    pub fn open(dir: &Path, threads: usize, synchronous: &str) -> Self {
        let path = dir.join("log.sqlite");
        let connections = (0..threads)
            .map(|i| {
                let mut conn = Connection::open(&path).expect("open sqlite");
                let mode: String =
                    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)).expect("WAL mode");
                assert_eq!(mode, "wal");
                conn.pragma_update(None, "synchronous", synchronous).expect("synchronous");
                // The default handler sleeps for milliseconds when the other connection holds the write lock.
                conn.busy_handler(Some(|_| {
                    thread::yield_now();
                    true
                }))
                .expect("busy handler");
                if i == 0 {
                    conn.execute_batch("CREATE TABLE log (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
                        .expect("create table");
                }
                Mutex::new(conn)
            })
            .collect();
        Self { connections }
    }
}

const SQLITE_INSERT: &str = "INSERT INTO log (payload) VALUES (?1)";

impl Store for Sqlite {
    #[inline]
    fn append(&self, thread: usize, _seq: u64, payload: &[u8]) {
        let conn = self.connections[thread].lock().unwrap();
        conn.prepare_cached(SQLITE_INSERT).and_then(|mut insert| insert.execute([payload])).expect("insert");
    }

    fn append_batch(&self, thread: usize, _seq: u64, payload: &[u8], count: usize) {
        let mut conn = self.connections[thread].lock().unwrap();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).expect("begin");
        {
            let mut insert = tx.prepare_cached(SQLITE_INSERT).expect("prepare");
            for _ in 0..count {
                insert.execute([payload]).expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
}

/// Makes `threads` threads append `payload` (in batches of `batch` when it is above 1) within `budget` to a store
/// that `open` makes in a fresh directory from `dir`; opening and closing the store are not timed. A call is
/// one append (of `batch` messages).
pub fn append_run<S: Store>(
    dir: fn() -> TempDir,
    open: impl Fn(&Path) -> S,
    threads: usize,
    payload: &[u8],
    batch: usize,
    budget: Budget,
) -> Span {
    let dir = dir();
    let store = open(dir.path());
    let span = run_threads(threads, budget, |t| {
        let store = &store;
        move |i| {
            if batch == 1 {
                store.append(t, i, payload);
            } else {
                store.append_batch(t, i, payload, batch);
            }
        }
    });
    drop(store);
    span
}

/// Nanoseconds since `base`: the stamp a latency message carries in its first 8 bytes.
fn stamp(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// A latency message: `stamp` in its first 8 bytes.
fn stamped_message(stamp: u64) -> [u8; 64] {
    let mut message = [0xA5; 64];
    message[..8].copy_from_slice(&stamp.to_le_bytes());
    message
}

fn stamp_of(message: &[u8]) -> u64 {
    u64::from_le_bytes(message[..8].try_into().expect("8 bytes"))
}

/// The stamp of the message that ends a timed run of [`one_way`].
const END_STAMP: u64 = u64::MAX;

/// Sends stamped messages, one in flight at a time, from this thread to a receiver thread that polls `receive`
/// (which returns a message's stamp, or `None` if there is none yet), within `budget`: `iters` messages for
/// `Budget::Calls(iters)`; for `Budget::Time`, messages for its warm-up (not recorded), then for its measure,
/// then one stamped [`END_STAMP`] that ends the receiver. With `pause`, the sender sleeps that long before each
/// message. Returns the sum of the recorded one-way latencies and their histogram.
fn one_way(
    budget: Budget,
    pause: Option<Duration>,
    mut send: impl FnMut([u8; 64]),
    mut receive: impl FnMut() -> Option<u64> + Send,
) -> (Duration, Histogram<u64>) {
    let (iters, warm_up_ns, end_ns) = match budget {
        Budget::Calls(iters) => (iters, 0, u64::MAX),
        Budget::Time { warm_up, measure } => {
            (u64::MAX, warm_up.as_nanos() as u64, (warm_up + measure).as_nanos() as u64)
        }
    };
    let base = Instant::now();
    let received = AtomicU64::new(0);
    thread::scope(|s| {
        let receiver = s.spawn(|| {
            let mut histogram = latency_histogram();
            let mut total_ns = 0;
            for i in 1..=iters {
                let sent = loop {
                    if let Some(sent) = receive() {
                        break sent;
                    }
                };
                if sent == END_STAMP {
                    break;
                }
                let latency_ns = stamp(base).saturating_sub(sent);
                if sent >= warm_up_ns {
                    total_ns += latency_ns;
                    histogram.saturating_record(latency_ns.max(1));
                }
                received.store(i, Ordering::Release);
            }
            (Duration::from_nanos(total_ns), histogram)
        });
        // A timed run records at least one message, however late the first ones come.
        let mut recorded = false;
        for i in 0..iters {
            while received.load(Ordering::Acquire) < i {
                std::hint::spin_loop();
            }
            if let Some(pause) = pause {
                thread::sleep(pause);
            }
            let now = stamp(base);
            if now >= end_ns && recorded {
                send(stamped_message(END_STAMP));
                break;
            }
            recorded |= now >= warm_up_ns;
            send(stamped_message(now));
        }
        receiver.join().unwrap()
    })
}

/// [`one_way`] through a tollgate topic in a fresh engine; `parked` receivers wait in `next_timeout`.
pub fn tollgate_one_way(budget: Budget, parked: bool) -> (Duration, Histogram<u64>) {
    let dir = memory_dir();
    let engine = Engine::open(dir.path()).expect("open engine");
    let topic = engine.create_topic(TOPIC, TopicConfig::default()).expect("create topic");
    let mut subscription = topic.subscribe_with("latency", StartAt::Latest).expect("subscribe");
    let send = |message| {
        black_box(topic.publish(message).expect("publish"));
    };
    let pause = parked.then_some(PARK_WAIT);
    if parked {
        one_way(budget, pause, send, || {
            subscription.next_timeout(RECEIVE_TIMEOUT).expect("next").map(|record| stamp_of(record.payload()))
        })
    } else {
        one_way(budget, pause, send, || subscription.next().expect("next").map(|record| stamp_of(record.payload())))
    }
}

/// [`one_way`] through a crossbeam channel; `parked` receivers block in `recv`.
pub fn channel_one_way(budget: Budget, parked: bool) -> (Duration, Histogram<u64>) {
    let (tx, rx) = crossbeam_channel::unbounded::<[u8; 64]>();
    let send = |message| tx.send(message).expect("receiver alive");
    let pause = parked.then_some(PARK_WAIT);
    if parked {
        one_way(budget, pause, send, || Some(stamp_of(&rx.recv().expect("sender alive"))))
    } else {
        one_way(budget, pause, send, || rx.try_recv().ok().map(|message| stamp_of(&message)))
    }
}

/// [`one_way`] through `std::sync::mpsc`; `parked` receivers block in `recv`.
pub fn mpsc_one_way(budget: Budget, parked: bool) -> (Duration, Histogram<u64>) {
    let (tx, rx) = std::sync::mpsc::channel::<[u8; 64]>();
    let send = |message| tx.send(message).expect("receiver alive");
    let pause = parked.then_some(PARK_WAIT);
    if parked {
        one_way(budget, pause, send, move || Some(stamp_of(&rx.recv().expect("sender alive"))))
    } else {
        one_way(budget, pause, send, move || rx.try_recv().ok().map(|message| stamp_of(&message)))
    }
}
