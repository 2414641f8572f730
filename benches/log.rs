//! Benchmarks of tollgate's durable log against peer queues, logs and stores, side by side in every group.
//!
//! Peers: `crossbeam-channel` (an unbounded in-memory channel: the ceiling, with no file at all), `yaque` (a
//! file-backed queue: one `write` per send), `commitlog` (a segmented, indexed log), `fjall` (an LSM-tree
//! key-value store; keys are a thread byte and a big-endian sequence number) and `rusqlite` (SQLite, bundled,
//! in WAL mode, a table `log (id INTEGER PRIMARY KEY, payload BLOB)`, one connection per thread with a busy
//! handler that yields instead of sleeping). Peers whose writer needs `&mut` (yaque, commitlog) are shared by
//! two producers behind a `Mutex`, as an application would have to.
//!
//! Where the files go: groups about CPU cost use a tmpfs (`/dev/shm`, falling back to the temporary directory
//! where there is none), so that no disk write-back adds noise; `sync_2_publishers` uses
//! `std::env::temp_dir()`, on a real disk on the machine these were recorded on, since fsync is what it
//! measures.
//!
//! Groups, and the goal each one checks:
//! - `append_64B`, `append_1KiB`: appends by 1 and 2 producer threads (ids `<impl>/<threads>`, elements =
//!   messages). Every sample starts from an empty store in a fresh directory (`iter_custom`), so the bytes a
//!   run writes stay bounded; opening and closing the store is not timed. tollgate: `Durability::Buffered`,
//!   1 GiB segments. crossbeam-channel: `send` of the payload as an array, with no consumer (messages stay
//!   queued, as records stay in a log). yaque: `try_send` (never full: no size limit). commitlog:
//!   `append_msg`, no flush. fjall: `insert`, no persist (each insert still writes its journal entry to the
//!   OS, fjall's default). rusqlite: one `INSERT` per transaction, `synchronous=OFF`.
//! - `subscriber_latency_spinning`: one-way latency from just before `publish` to a subscriber thread spinning
//!   on `Subscription::next()` seeing the record, one message in flight; the sender stamps the message with
//!   the time, the receiver takes the difference. Peer: crossbeam-channel `send` / `try_recv` spin. The
//!   criterion time of a sample is its *median* latency (see `latency_group`). After the group, a fixed run of
//!   messages, alternating between tollgate and the peer, prints p50/p99/p99.9/max. Goal: tollgate p50 ≤
//!   250 ns, p99 ≤ 1 µs.
//! - `subscriber_wakeup_parked`: the same, but the sender first sleeps [`PARK_WAIT`] so that the receiver has
//!   parked, in `next_timeout(60 s)` / crossbeam-channel's blocking `recv`; measures publish → wake. Medians
//!   and percentiles as above. Goal: tollgate ≤ 1.2× crossbeam-channel. A second peer, `std::sync::mpsc`
//!   (crossbeam-channel's algorithm without its extra spinning and `yield_now`, rust-lang/rust#93563), shows a
//!   plain wake-up: when other processes load the machine, crossbeam-channel's blocking `recv` measured here
//!   tens of µs to milliseconds where `std::sync::mpsc` and a bare park/unpark take ~2 µs (compare
//!   crossbeam-rs/crossbeam#821 and #1029).
//! - `sync_2_publishers`: 2 threads publishing 64 B messages to a `Durability::Sync` topic (group commit), as
//!   single publishes (`<impl>/single`, 2 messages per iteration) and as `publish_batch` of 64 (`<impl>/batch64`,
//!   128 messages per iteration). Peers doing the same durably: rusqlite `synchronous=FULL` (one transaction per
//!   message or per batch), fjall `insert` + `persist(SyncAll)` (or a batch committed with `SyncAll`), and
//!   commitlog `append` + `flush` + `fdatasync` of the segment (commitlog's `flush` only msyncs its index and
//!   calls `File::flush`, which does not sync the segment, so the bench syncs the segment file itself). After
//!   the group, a fixed run prints per-call p50/p99 and messages/s. Goal: ≥ 100 k msg/s at p50 ≤ 0.5 ms.
//! - `sequential_read`: reading [`READ_RECORDS`] 64 B records from the start: a subscription `seek` to 0 then
//!   `next()` to the end; commitlog `read` in 1 MiB chunks; fjall `iter` over its keyspace (flushed to a disk
//!   table first); rusqlite `SELECT payload FROM log ORDER BY id`; crossbeam-channel `recv` from a channel
//!   pre-filled outside the timing. No numeric goal.
//! - `recovery_scan`: opening an engine and its topic when recovery must scan every segment (an unclean
//!   shutdown), in bytes of log per second: each iteration copies a cleanly closed topic of about
//!   [`RECOVERY_DATA_BYTES`] into a fresh directory, minus its `checkpoint` and the active segment's `.index`,
//!   and times only `Engine::open` + `topic()`. Messages of 64 B and 1 KiB, one publish each. Goal ≥ 2 GB/s.
//!   No peer: none of them checks every record's checksum on open.
//! - `open_time`: a clean `Engine::open` + `topic()` of a topic with 1 and with 100 sealed segments (64 KiB
//!   each), against `CommitLog::new` of a commitlog with as many segments. Goal: independent of the number of
//!   segments.

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use commitlog::message::MessageSet;
use commitlog::{CommitLog, LogOptions, ReadLimit};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use hdrhistogram::Histogram;
use rusqlite::{Connection, TransactionBehavior};
use tempfile::TempDir;

mod support;
use support::{disk_dir, group, latency_histogram, reporting};
use tollgate::{Durability, Engine, Offset, SEGMENT_BYTES_MAX, StartAt, TopicConfig};

/// The topic every tollgate benchmark uses.
const TOPIC: &str = "bench";
/// How long a sender waits before publishing in `subscriber_wakeup_parked`, so that the receiver has parked.
const PARK_WAIT: Duration = Duration::from_micros(200);
/// How long a parked receiver waits at most; far beyond any benchmark.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Messages of the percentile run after `subscriber_latency_spinning`.
const SPINNING_REPORT_MESSAGES: u64 = 200_000;
/// Messages of the percentile run after `subscriber_wakeup_parked`.
const PARKED_REPORT_MESSAGES: u64 = 2_000;
/// The percentile runs of the latency groups alternate between tollgate and its peer in this many rounds.
const REPORT_ROUNDS: u64 = 4;
/// Calls per thread of the percentile runs after `sync_2_publishers`, for single publishes and for batches.
const SYNC_REPORT_CALLS: u64 = 500;
const SYNC_REPORT_BATCH_CALLS: u64 = 200;
/// Messages per `publish_batch` in `sync_2_publishers`.
const SYNC_BATCH: usize = 64;
/// Records read by each `sequential_read` iteration.
const READ_RECORDS: u64 = 100_000;
/// About how much log `recovery_scan` scans.
const RECOVERY_DATA_BYTES: u64 = 160 << 20;
/// Segment size of the topics of `open_time`.
const OPEN_SEGMENT_BYTES: u64 = 64 << 10;
/// Index entries per commitlog index file: enough that no benchmark rolls a commitlog segment because its index
/// is full (the file is sparse), which the `fdatasync` of the sync benchmark relies on.
const COMMITLOG_INDEX_ITEMS: usize = 1 << 24;
/// Index entries per commitlog index file in `open_time`: enough for a 64 KiB segment of 1 KiB messages.
const OPEN_COMMITLOG_INDEX_ITEMS: usize = 1024;

/// A fresh directory on a tmpfs (`/dev/shm`), for groups about CPU cost; in the temporary directory if there is
/// no `/dev/shm`.
fn memory_dir() -> TempDir {
    let mut builder = tempfile::Builder::new();
    builder.prefix("tollgate-bench-");
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { builder.tempdir_in(shm) } else { builder.tempdir() }.expect("temporary directory")
}

/// A store that messages are appended to, as the append and sync benchmarks use it. `thread` and `seq` make a
/// key unique for the stores that need one.
trait Store: Sync {
    fn append(&self, thread: usize, seq: u64, payload: &[u8]);

    /// Appends `count` copies of `payload` in one atomic write.
    fn append_batch(&self, thread: usize, seq: u64, payload: &[u8], count: usize);
}

/// The crate under test: one topic in its own engine.
struct TollgateLog {
    topic: tollgate::Topic,
    _engine: Engine,
}

impl TollgateLog {
    fn open(dir: &Path, durability: Durability) -> Self {
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
struct Channel<const N: usize> {
    tx: crossbeam_channel::Sender<[u8; N]>,
    _rx: crossbeam_channel::Receiver<[u8; N]>,
}

impl<const N: usize> Channel<N> {
    fn new() -> Self {
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
struct Yaque(Mutex<yaque::Sender>);

impl Yaque {
    fn open(dir: &Path) -> Self {
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
struct CommitLogStore {
    log: Mutex<CommitLog>,
    /// The (only) segment, for `fdatasync`: see [`COMMITLOG_INDEX_ITEMS`].
    segment: fs::File,
    sync: bool,
}

impl CommitLogStore {
    fn open(dir: &Path, sync: bool) -> Self {
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

fn open_commitlog(dir: &Path, segment_bytes: usize, index_items: usize) -> CommitLog {
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
struct FjallStore {
    keyspace: Keyspace,
    db: Database,
    sync: bool,
}

impl FjallStore {
    fn open(dir: &Path, sync: bool) -> Self {
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
struct Sqlite {
    connections: Vec<Mutex<Connection>>,
}

impl Sqlite {
    /// `synchronous` is `OFF` or `FULL`.
    fn open(dir: &Path, threads: usize, synchronous: &str) -> Self {
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

/// Runs `work(thread, i)` for `i` in `0..iters` on each of `threads` threads, started together; returns the
/// time from the first thread's start to the last thread's end.
fn run_threads(threads: usize, iters: u64, work: impl Fn(usize, u64) + Sync) -> Duration {
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, work) = (&barrier, &work);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        work(t, i);
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

/// Benchmarks `threads` threads appending `payload` (in batches of `batch` when it is above 1) to a store that
/// `open` makes in a fresh directory from `dir` for every sample.
fn appends<S: Store>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    dir: fn() -> TempDir,
    open: impl Fn(&Path) -> S,
    threads: usize,
    payload: &[u8],
    batch: usize,
) {
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let dir = dir();
            let store = open(dir.path());
            let elapsed = run_threads(threads, iters, |t, i| {
                if batch == 1 {
                    store.append(t, i, payload);
                } else {
                    store.append_batch(t, i, payload, batch);
                }
            });
            drop(store);
            elapsed
        })
    });
}

fn append_group<const N: usize>(c: &mut Criterion, name: &str) {
    let payload = [0xA5; N];
    let mut g = group(c, name, Duration::from_secs(2));
    for threads in [1, 2] {
        g.throughput(Throughput::Elements(threads as u64));
        let id = |name| BenchmarkId::new(name, threads);
        let buffered = |dir: &Path| TollgateLog::open(dir, Durability::Buffered);
        appends(&mut g, id("tollgate"), memory_dir, buffered, threads, &payload, 1);
        appends(&mut g, id("crossbeam-channel"), memory_dir, |_| Channel::<N>::new(), threads, &payload, 1);
        appends(&mut g, id("yaque"), memory_dir, Yaque::open, threads, &payload, 1);
        appends(&mut g, id("commitlog"), memory_dir, |dir| CommitLogStore::open(dir, false), threads, &payload, 1);
        appends(&mut g, id("fjall"), memory_dir, |dir| FjallStore::open(dir, false), threads, &payload, 1);
        let sqlite = |dir: &Path| Sqlite::open(dir, threads, "OFF");
        appends(&mut g, id("rusqlite"), memory_dir, sqlite, threads, &payload, 1);
    }
    g.finish();
}

#[allow(non_snake_case)]
fn append_64B(c: &mut Criterion) {
    append_group::<64>(c, "append_64B");
}

#[allow(non_snake_case)]
fn append_1KiB(c: &mut Criterion) {
    append_group::<1024>(c, "append_1KiB");
}

/// Nanoseconds since `base`: the stamp a latency message carries in its first 8 bytes.
fn stamp(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

fn stamped_message(base: Instant) -> [u8; 64] {
    let mut message = [0xA5; 64];
    message[..8].copy_from_slice(&stamp(base).to_le_bytes());
    message
}

fn stamp_of(message: &[u8]) -> u64 {
    u64::from_le_bytes(message[..8].try_into().expect("8 bytes"))
}

/// Sends `iters` stamped messages, one in flight at a time, from this thread to a receiver thread that polls
/// `receive` (which returns a message's stamp, or `None` if there is none yet). With `pause`, the sender sleeps
/// that long before each message. Returns the sum of the one-way latencies and their histogram.
fn one_way(
    iters: u64,
    pause: Option<Duration>,
    mut send: impl FnMut(Instant),
    mut receive: impl FnMut() -> Option<u64> + Send,
) -> (Duration, Histogram<u64>) {
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
                let latency_ns = stamp(base).saturating_sub(sent);
                total_ns += latency_ns;
                histogram.saturating_record(latency_ns.max(1));
                received.store(i, Ordering::Release);
            }
            (Duration::from_nanos(total_ns), histogram)
        });
        for i in 0..iters {
            while received.load(Ordering::Acquire) < i {
                std::hint::spin_loop();
            }
            if let Some(pause) = pause {
                thread::sleep(pause);
            }
            send(base);
        }
        receiver.join().unwrap()
    })
}

/// [`one_way`] through a tollgate topic in a fresh engine; `parked` receivers wait in `next_timeout`.
fn tollgate_one_way(iters: u64, parked: bool) -> (Duration, Histogram<u64>) {
    let dir = memory_dir();
    let engine = Engine::open(dir.path()).expect("open engine");
    let topic = engine.create_topic(TOPIC, TopicConfig::default()).expect("create topic");
    let mut subscription = topic.subscribe_with("latency", StartAt::Latest).expect("subscribe");
    let send = |base| {
        black_box(topic.publish(stamped_message(base)).expect("publish"));
    };
    let pause = parked.then_some(PARK_WAIT);
    if parked {
        one_way(iters, pause, send, || {
            subscription.next_timeout(RECEIVE_TIMEOUT).expect("next").map(|record| stamp_of(record.payload()))
        })
    } else {
        one_way(iters, pause, send, || subscription.next().expect("next").map(|record| stamp_of(record.payload())))
    }
}

/// [`one_way`] through a crossbeam channel; `parked` receivers block in `recv`.
fn channel_one_way(iters: u64, parked: bool) -> (Duration, Histogram<u64>) {
    let (tx, rx) = crossbeam_channel::unbounded::<[u8; 64]>();
    let send = |base| tx.send(stamped_message(base)).expect("receiver alive");
    let pause = parked.then_some(PARK_WAIT);
    if parked {
        one_way(iters, pause, send, || Some(stamp_of(&rx.recv().expect("sender alive"))))
    } else {
        one_way(iters, pause, send, || rx.try_recv().ok().map(|message| stamp_of(&message)))
    }
}

/// [`one_way`] through `std::sync::mpsc`; `parked` receivers block in `recv`.
fn mpsc_one_way(iters: u64, parked: bool) -> (Duration, Histogram<u64>) {
    let (tx, rx) = std::sync::mpsc::channel::<[u8; 64]>();
    let send = |base| tx.send(stamped_message(base)).expect("receiver alive");
    let pause = parked.then_some(PARK_WAIT);
    if parked {
        one_way(iters, pause, send, move || Some(stamp_of(&rx.recv().expect("sender alive"))))
    } else {
        one_way(iters, pause, send, move || rx.try_recv().ok().map(|message| stamp_of(&message)))
    }
}

fn print_latency(group: &str, name: &str, histogram: &Histogram<u64>) {
    let at = |q| histogram.value_at_quantile(q);
    println!(
        "{group}/{name}: {} messages, one-way p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        histogram.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        histogram.max()
    );
}

/// One implementation of a latency group: runs [`one_way`] for `iters` messages, parked or spinning.
type OneWay = fn(u64, bool) -> (Duration, Histogram<u64>);

fn latency_group(c: &mut Criterion, name: &str, parked: bool, report_messages: u64, contenders: &[(&str, OneWay)]) {
    // Each sample is reported as its median latency times its message count: with two threads spinning on a
    // 2-core VM, a mean is dominated by the rare milliseconds one of them is descheduled for, which the
    // percentiles printed below show instead.
    let median = |(_, histogram): (Duration, Histogram<u64>)| {
        Duration::from_nanos(histogram.value_at_quantile(0.5) * histogram.len())
    };
    let mut g = group(c, name, Duration::from_secs(2));
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    for &(contender, run) in contenders {
        g.bench_function(contender, |b| b.iter_custom(|iters| median(run(iters, parked))));
    }
    g.finish();
    if !reporting(name) {
        return;
    }
    // Rounds alternate between the contenders, so that all see the same background load.
    let mut histograms: Vec<Histogram<u64>> = contenders.iter().map(|_| latency_histogram()).collect();
    for _ in 0..REPORT_ROUNDS {
        for (histogram, &(_, run)) in histograms.iter_mut().zip(contenders) {
            histogram.add(run(report_messages / REPORT_ROUNDS, parked).1).expect("same bounds");
        }
    }
    for (histogram, &(contender, _)) in histograms.iter().zip(contenders) {
        print_latency(name, contender, histogram);
    }
}

fn subscriber_latency_spinning(c: &mut Criterion) {
    let contenders: [(&str, OneWay); 2] = [("tollgate", tollgate_one_way), ("crossbeam-channel", channel_one_way)];
    latency_group(c, "subscriber_latency_spinning", false, SPINNING_REPORT_MESSAGES, &contenders);
}

fn subscriber_wakeup_parked(c: &mut Criterion) {
    let contenders: [(&str, OneWay); 3] =
        [("tollgate", tollgate_one_way), ("crossbeam-channel", channel_one_way), ("std-mpsc", mpsc_one_way)];
    latency_group(c, "subscriber_wakeup_parked", true, PARKED_REPORT_MESSAGES, &contenders);
}

/// Two threads each make `calls` appends (of `batch` messages) to a fresh store on disk; prints the per-call
/// latency percentiles and the message rate.
fn report_sync<S: Store>(name: &str, open: impl Fn(&Path) -> S, calls: u64, batch: usize, payload: &[u8]) {
    let dir = disk_dir();
    let store = open(dir.path());
    let barrier = Barrier::new(2);
    let start = Instant::now();
    let histograms: Vec<Histogram<u64>> = thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let (barrier, store) = (&barrier, &store);
                s.spawn(move || {
                    let mut histogram = latency_histogram();
                    barrier.wait();
                    for i in 0..calls {
                        let call = Instant::now();
                        if batch == 1 {
                            store.append(t, i, payload);
                        } else {
                            store.append_batch(t, i, payload, batch);
                        }
                        histogram.saturating_record((call.elapsed().as_nanos() as u64).max(1));
                    }
                    histogram
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    let elapsed = start.elapsed();
    let mut histogram = latency_histogram();
    for h in &histograms {
        histogram.add(h).expect("same bounds");
    }
    let messages = 2 * calls * batch as u64;
    let us = |q| histogram.value_at_quantile(q) as f64 / 1e3;
    println!(
        "sync_2_publishers/{name}: {} calls of {batch}, per call p50 {:.1} µs, p99 {:.1} µs; {:.0} msg/s",
        histogram.len(),
        us(0.5),
        us(0.99),
        messages as f64 / elapsed.as_secs_f64()
    );
}

fn sync_2_publishers(c: &mut Criterion) {
    let payload = [0xA5; 64];
    let tollgate = |dir: &Path| TollgateLog::open(dir, Durability::Sync);
    let sqlite = |dir: &Path| Sqlite::open(dir, 2, "FULL");
    let fjall = |dir: &Path| FjallStore::open(dir, true);
    let commitlog = |dir: &Path| CommitLogStore::open(dir, true);
    let mut g = group(c, "sync_2_publishers", Duration::from_secs(2));
    for (variant, batch) in [("single", 1), ("batch64", SYNC_BATCH)] {
        g.throughput(Throughput::Elements(2 * batch as u64));
        let id = |name| BenchmarkId::new(name, variant);
        appends(&mut g, id("tollgate"), disk_dir, tollgate, 2, &payload, batch);
        appends(&mut g, id("rusqlite"), disk_dir, sqlite, 2, &payload, batch);
        appends(&mut g, id("fjall"), disk_dir, fjall, 2, &payload, batch);
        appends(&mut g, id("commitlog"), disk_dir, commitlog, 2, &payload, batch);
    }
    g.finish();
    if !reporting("sync_2_publishers") {
        return;
    }
    for (variant, batch, calls) in [("single", 1, SYNC_REPORT_CALLS), ("batch64", SYNC_BATCH, SYNC_REPORT_BATCH_CALLS)]
    {
        report_sync(&format!("tollgate/{variant}"), tollgate, calls, batch, &payload);
        report_sync(&format!("rusqlite/{variant}"), sqlite, calls, batch, &payload);
        report_sync(&format!("fjall/{variant}"), fjall, calls, batch, &payload);
        report_sync(&format!("commitlog/{variant}"), commitlog, calls, batch, &payload);
    }
}

fn sequential_read(c: &mut Criterion) {
    let payload = [0xA5; 64];
    let mut g = group(c, "sequential_read", Duration::from_secs(2));
    g.throughput(Throughput::Elements(READ_RECORDS));

    let dir = memory_dir();
    let log = TollgateLog::open(dir.path(), Durability::Buffered);
    for _ in 0..READ_RECORDS {
        log.topic.publish(payload).expect("publish");
    }
    let mut subscription = log.topic.subscribe("reader").expect("subscribe");
    g.bench_function("tollgate", |b| {
        b.iter(|| {
            subscription.seek(Offset::new(0)).expect("seek");
            let mut count = 0;
            while let Some(record) = subscription.next().expect("next") {
                black_box(record.payload());
                count += 1;
            }
            assert_eq!(count, READ_RECORDS);
        })
    });
    drop((subscription, log, dir));

    let dir = memory_dir();
    let store = CommitLogStore::open(dir.path(), false);
    for _ in 0..READ_RECORDS {
        store.append(0, 0, &payload);
    }
    let log = store.log.lock().unwrap();
    g.bench_function("commitlog", |b| {
        b.iter(|| {
            let mut next = 0;
            while next < READ_RECORDS {
                let chunk = log.read(next, ReadLimit::max_bytes(1 << 20)).expect("commitlog read");
                for message in chunk.iter() {
                    black_box(message.payload());
                    next = message.offset() + 1;
                }
            }
            assert_eq!(next, READ_RECORDS);
        })
    });
    drop(log);
    drop((store, dir));

    let dir = memory_dir();
    let store = FjallStore::open(dir.path(), false);
    for seq in 0..READ_RECORDS {
        store.append(0, seq, &payload);
    }
    store.keyspace.rotate_memtable_and_wait().expect("fjall flush");
    g.bench_function("fjall", |b| {
        b.iter(|| {
            let mut count = 0;
            for item in store.keyspace.iter() {
                black_box(item.value().expect("fjall read"));
                count += 1;
            }
            assert_eq!(count, READ_RECORDS);
        })
    });
    drop((store, dir));

    let dir = memory_dir();
    let store = Sqlite::open(dir.path(), 1, "OFF");
    for _ in 0..READ_RECORDS {
        store.append(0, 0, &payload);
    }
    let conn = store.connections[0].lock().unwrap();
    let mut select = conn.prepare("SELECT payload FROM log ORDER BY id").expect("prepare");
    g.bench_function("rusqlite", |b| {
        b.iter(|| {
            let mut rows = select.query([]).expect("select");
            let mut count = 0;
            while let Some(row) = rows.next().expect("row") {
                black_box(row.get_ref(0).and_then(|value| Ok(value.as_blob()?)).expect("blob"));
                count += 1;
            }
            assert_eq!(count, READ_RECORDS);
        })
    });
    drop(select);
    drop(conn);
    drop(store);

    let (tx, rx) = crossbeam_channel::unbounded::<[u8; 64]>();
    g.bench_function("crossbeam-channel", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                for _ in 0..READ_RECORDS {
                    tx.send(payload).expect("receiver alive");
                }
                let start = Instant::now();
                for _ in 0..READ_RECORDS {
                    black_box(rx.recv().expect("sender alive"));
                }
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

/// Copies a cleanly closed engine directory from `from` to `to` without the topic's `checkpoint` and the
/// active segment's `.index`, so that opening the copy scans every segment, as after an unclean stop.
fn copy_unclean(from: &Path, to: &Path) {
    fs::copy(from.join("tollgate.meta"), to.join("tollgate.meta")).expect("copy meta");
    let (topic_from, topic_to) = (from.join("topics").join(TOPIC), to.join("topics").join(TOPIC));
    fs::create_dir_all(&topic_to).expect("create topic directory");
    let mut names: Vec<String> = fs::read_dir(&topic_from)
        .expect("list topic")
        .map(|entry| entry.expect("entry").file_name().into_string().expect("UTF-8 name"))
        .collect();
    names.sort();
    let active_index = names.iter().rfind(|name| name.ends_with(".log")).expect("a segment").replace(".log", ".index");
    for name in &names {
        let path = topic_from.join(name);
        if name == "checkpoint" || *name == active_index || !path.is_file() {
            continue;
        }
        fs::copy(&path, topic_to.join(name)).expect("copy topic file");
    }
}

/// Opens the engine in `dir` and its topic; returns how long that took and the offset after the last record.
fn timed_open(dir: &Path) -> (Duration, u64) {
    let start = Instant::now();
    let engine = Engine::open(dir).expect("open engine");
    let topic = engine.topic(TOPIC).expect("open topic");
    let elapsed = start.elapsed();
    let next = topic.info().next.get();
    drop((topic, engine));
    (elapsed, next)
}

fn recovery_group<const N: usize>(g: &mut BenchmarkGroup<'_, WallTime>, label: &str) {
    let source = memory_dir();
    // A one-publish frame of a payload without key or headers: a 32-byte frame header, an 8-byte entry
    // header and the payload (docs/FORMAT.md).
    let frame_bytes = 32 + 8 + N as u64;
    let records = RECOVERY_DATA_BYTES.div_ceil(frame_bytes);
    let bytes = records * frame_bytes;
    {
        let engine = Engine::open(source.path()).expect("open engine");
        let topic = engine.create_topic(TOPIC, TopicConfig::default()).expect("create topic");
        for _ in 0..records {
            topic.publish([0xA5; N]).expect("publish");
        }
    }
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function(BenchmarkId::new("tollgate", label), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let copy = memory_dir();
                copy_unclean(source.path(), copy.path());
                let (elapsed, next) = timed_open(copy.path());
                assert_eq!(next, records, "recovery kept every record");
                total += elapsed;
            }
            total
        })
    });
}

fn recovery_scan(c: &mut Criterion) {
    let mut g = group(c, "recovery_scan", Duration::from_secs(2));
    g.measurement_time(Duration::from_secs(3));
    recovery_group::<64>(&mut g, "64B");
    recovery_group::<1024>(&mut g, "1KiB");
    g.finish();
}

fn open_time(c: &mut Criterion) {
    let payload = [0xA5; 1024];
    let mut g = group(c, "open_time", Duration::from_secs(2));
    for sealed in [1, 100] {
        let label = format!("{sealed}_sealed");
        let dir = memory_dir();
        let records = {
            let engine = Engine::open(dir.path()).expect("open engine");
            let config = TopicConfig {
                segment_bytes: OPEN_SEGMENT_BYTES,
                max_message_bytes: payload.len(),
                ..TopicConfig::default()
            };
            let topic = engine.create_topic(TOPIC, config).expect("create topic");
            while topic.info().segments <= sealed {
                topic.publish(payload).expect("publish");
            }
            topic.info().next.get()
        };
        g.bench_function(BenchmarkId::new("tollgate", &label), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (elapsed, next) = timed_open(dir.path());
                    assert_eq!(next, records);
                    total += elapsed;
                }
                total
            })
        });
        drop(dir);

        let dir = memory_dir();
        {
            let mut log = open_commitlog(dir.path(), OPEN_SEGMENT_BYTES as usize, OPEN_COMMITLOG_INDEX_ITEMS);
            while segment_count(dir.path()) <= sealed {
                log.append_msg(payload).expect("commitlog append");
            }
        }
        g.bench_function(BenchmarkId::new("commitlog", &label), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let log = open_commitlog(dir.path(), OPEN_SEGMENT_BYTES as usize, OPEN_COMMITLOG_INDEX_ITEMS);
                    total += start.elapsed();
                    black_box(log.next_offset());
                }
                total
            })
        });
    }
    g.finish();
}

fn segment_count(dir: &Path) -> usize {
    fs::read_dir(dir)
        .expect("list")
        .filter(|entry| entry.as_ref().expect("entry").path().extension().is_some_and(|ext| ext == "log"))
        .count()
}

criterion_group!(
    benches,
    append_64B,
    append_1KiB,
    subscriber_latency_spinning,
    subscriber_wakeup_parked,
    sync_2_publishers,
    sequential_read,
    recovery_scan,
    open_time
);
criterion_main!(benches);
