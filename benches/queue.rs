//! Benchmarks of tollgate's work queues (worker groups) against peer queues, side by side in every group.
//!
//! Run with `cargo bench --bench queue` (about 2 minutes on 2 cores); a filter runs some groups only, e.g.
//! `cargo bench --bench queue -- ack_latency`.
//!
//! Every sample starts from a fresh queue in a fresh directory on disk (`std::env::temp_dir()`, not a tmpfs:
//! fsync is what the `Sync` variants pay for), filled beforehand with as many 64-byte messages as the sample
//! consumes (`iter_custom`); filling, opening and closing the queue are not timed, and `sync(2)` runs before
//! the timed part so that no write-back left from filling lands in it. Workers receive a message, read its
//! payload and acknowledge it, until the queue is empty.
//!
//! Contenders:
//! - `tollgate`: one topic, filled with one `publish` per message, and one worker group (`QueueConfig`
//!   defaults) whose workers are clones of one `Worker`; a worker loops on `receive(Duration::ZERO)` and
//!   `Delivery::ack`. Topic durability `Durability::Buffered`, or `Durability::Sync`, under which `ack` (and,
//!   in the code measured in docs/BENCHMARKS.md, `receive` too, for the delivery's attempt) returns once the
//!   group's journal is synced; one `msync` covers every entry journaled by then (group commit across
//!   workers).
//! - `yaque` (a file-backed queue): filled through its `Sender`, then drained by its `Receiver` with `recv`
//!   (polled once with a no-op waker: the queue is full, so it is always ready) and `RecvGuard::commit`.
//!   A yaque queue has one receiver, so it runs with 1 worker only. It never fsyncs (it saves its read
//!   position every 250 commits with a plain write), so it stands only beside the `Buffered` variants.
//! - `rusqlite`: SQLite (bundled), WAL mode, as the common "SQL table as job queue": a table
//!   `jobs (id INTEGER PRIMARY KEY, payload BLOB, state INTEGER, locked_until INTEGER)`. A worker claims a job
//!   in one `BEGIN IMMEDIATE` transaction, `UPDATE jobs SET state = 1, locked_until = ?
//!   WHERE id = (SELECT id FROM jobs WHERE state = 0 ORDER BY id LIMIT 1) RETURNING id, payload`, and
//!   acknowledges it with `DELETE FROM jobs WHERE id = ?` in a second one. Each worker has its own connection,
//!   with a busy handler (see [`sqlite_connection`]). `synchronous=NORMAL` (in WAL mode: no sync at commit)
//!   is the counterpart of `Buffered` (`rusqlite-normal`), `synchronous=FULL` (the WAL is synced at every
//!   commit, so twice per message: claim and ack) that of `Sync` (`rusqlite-full`).
//!
//! Groups:
//! - `work_queue_buffered_64B`: throughput (elements = messages) with 1 and 2 worker threads (ids
//!   `<impl>/<workers>`): tollgate `Buffered`, yaque, rusqlite `NORMAL`. The time of a sample runs from the
//!   first worker's start to the last worker's end.
//! - `work_queue_sync_64B`: the same with tollgate `Sync` and rusqlite `FULL`.
//! - `ack_latency`: the time of the acknowledgement alone, with 1 worker: `Delivery::ack` (`tollgate/buffered`,
//!   `tollgate/sync`), yaque's `RecvGuard::commit` (`yaque/commit`), and rusqlite's ack transaction
//!   (`rusqlite/normal`, `rusqlite/full`). The criterion time of a sample is its *median* ack time (as in
//!   `benches/log.rs`: on a 2-core VM a mean is dominated by the rare descheduling, which the percentiles
//!   show). After the group, a fixed run per contender, with 1 and 2 workers (yaque: 1), alternating between
//!   the contenders in rounds, prints p50/p99/p99.9/max of the ack time and the messages per second.
//! - `delayed_delivery`: how late a `deliver_after(2 ms)` message reaches a worker parked in `receive`
//!   (tollgate only; neither peer delays messages).

use std::cell::Cell;
use std::future::Future;
use std::hint::black_box;
use std::path::Path;
use std::pin::pin;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hdrhistogram::Histogram;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

mod support;
use support::{disk_dir, group, latency_histogram, reporting};
use tollgate::{Durability, Engine, QueueConfig, TopicConfig, Worker};

/// The topic of every tollgate benchmark.
const TOPIC: &str = "jobs";
/// The worker group of every tollgate benchmark.
const GROUP: &str = "workers";
/// The message every benchmark publishes.
const PAYLOAD: [u8; 64] = [0xA5; 64];
/// How long a claimed SQLite job stays with its worker (what `locked_until` is set to, from now).
const SQLITE_VISIBILITY_MS: i64 = 30_000;
/// How long a SQLite connection waits for a lock before its statement fails.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// The percentile runs after `ack_latency` alternate between the contenders in this many rounds.
const REPORT_ROUNDS: u64 = 4;
/// Messages per worker count of a percentile run after `ack_latency`, for contenders that do not sync
/// ([`REPORT_MESSAGES_SYNC`] for those that do).
const REPORT_MESSAGES: u64 = 100_000;
const REPORT_MESSAGES_SYNC: u64 = 4_000;

/// One worker's handle on a queue.
trait Consumer: Send {
    /// Receives a message, reads its payload and acknowledges it; `None` if the queue is empty, else how long
    /// the acknowledgement alone took when `time_ack` is set (zero when it is not).
    fn consume(&mut self, time_ack: bool) -> Option<Duration>;
}

/// How long `f` took, if `timed`.
#[inline]
fn timed(timed: bool, f: impl FnOnce()) -> Duration {
    if timed {
        let start = Instant::now();
        f();
        start.elapsed()
    } else {
        f();
        Duration::ZERO
    }
}

/// A contender: opens a fresh queue in a directory, fills it with some messages and hands out a consumer
/// per worker, with whatever must stay alive while they work.
trait Contender: Sync {
    type Consumer: Consumer;
    type Keep;

    fn open(&self, dir: &Path, messages: u64, workers: usize) -> (Self::Keep, Vec<Self::Consumer>);
}

/// tollgate: a topic of the given durability in its own engine, and one worker group.
struct Tollgate(Durability);

impl Contender for Tollgate {
    type Consumer = Worker;
    type Keep = (Engine, tollgate::Topic);

    fn open(&self, dir: &Path, messages: u64, workers: usize) -> (Self::Keep, Vec<Worker>) {
        let engine = Engine::open(dir).expect("open engine");
        let config = TopicConfig { durability: self.0, ..TopicConfig::default() };
        let topic = engine.create_topic(TOPIC, config).expect("create topic");
        for _ in 0..messages {
            topic.publish(PAYLOAD).expect("publish");
        }
        let worker = topic.worker_with(GROUP, QueueConfig::default()).expect("worker");
        let consumers = (0..workers).map(|_| worker.clone()).collect();
        ((engine, topic), consumers)
    }
}

impl Consumer for Worker {
    #[inline]
    fn consume(&mut self, time_ack: bool) -> Option<Duration> {
        let delivery = self.receive(Duration::ZERO).expect("receive")?;
        black_box(delivery.payload().as_ref());
        Some(timed(time_ack, || delivery.ack().expect("ack")))
    }
}

/// yaque: one queue, one receiver.
struct Yaque;

/// yaque's receiver.
struct YaqueConsumer(yaque::Receiver);

impl Contender for Yaque {
    type Consumer = YaqueConsumer;
    type Keep = ();

    fn open(&self, dir: &Path, messages: u64, workers: usize) -> ((), Vec<YaqueConsumer>) {
        assert_eq!(workers, 1, "a yaque queue has one receiver");
        {
            let mut sender = yaque::Sender::open(dir).expect("open yaque sender");
            for _ in 0..messages {
                sender.try_send(PAYLOAD).expect("yaque send");
            }
        }
        ((), vec![YaqueConsumer(yaque::Receiver::open(dir).expect("open yaque receiver"))])
    }
}

/// Polls `future` once: its output if it is ready.
fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

impl Consumer for YaqueConsumer {
    #[inline]
    fn consume(&mut self, time_ack: bool) -> Option<Duration> {
        // The queue was filled before: `recv` is pending only once it is empty.
        let guard = poll_once(self.0.recv())?.expect("yaque recv");
        black_box(guard.as_slice());
        Some(timed(time_ack, || guard.commit().expect("yaque commit")))
    }
}

/// SQLite in WAL mode, `synchronous` `NORMAL` or `FULL`.
struct Sqlite(&'static str);

/// One worker's connection.
struct SqliteConsumer(Connection);

const SQLITE_CLAIM: &str = "UPDATE jobs SET state = 1, locked_until = ?1 \
     WHERE id = (SELECT id FROM jobs WHERE state = 0 ORDER BY id LIMIT 1) RETURNING id, payload";
const SQLITE_ACK: &str = "DELETE FROM jobs WHERE id = ?1";

thread_local! {
    /// When the current wait of this thread's SQLite connection for a lock began.
    static BUSY_SINCE: Cell<Instant> = Cell::new(Instant::now());
}

/// A connection to the job database at `path`, in WAL mode with the given `synchronous`, and a busy timeout of
/// [`SQLITE_BUSY_TIMEOUT`] whose handler yields between tries instead of sleeping: SQLite's own
/// `busy_timeout` sleeps 1 ms, then more, whenever the other worker holds the write lock, which with 2 workers
/// happens for most jobs (as in `benches/log.rs`).
fn sqlite_connection(path: &Path, synchronous: &str) -> Connection {
    let mut conn = Connection::open(path).expect("open sqlite");
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)).expect("WAL mode");
    assert_eq!(mode, "wal");
    conn.pragma_update(None, "synchronous", synchronous).expect("synchronous");
    conn.busy_handler(Some(|tries| {
        let now = Instant::now();
        if tries == 0 {
            BUSY_SINCE.set(now);
        }
        thread::yield_now();
        now - BUSY_SINCE.get() < SQLITE_BUSY_TIMEOUT
    }))
    .expect("busy handler");
    conn
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as i64
}

impl Contender for Sqlite {
    type Consumer = SqliteConsumer;
    type Keep = ();

    fn open(&self, dir: &Path, messages: u64, workers: usize) -> ((), Vec<SqliteConsumer>) {
        let path = dir.join("jobs.sqlite");
        {
            let mut conn = sqlite_connection(&path, self.0);
            conn.execute_batch(
                "CREATE TABLE jobs (id INTEGER PRIMARY KEY, payload BLOB NOT NULL, state INTEGER NOT NULL DEFAULT 0, \
                 locked_until INTEGER)",
            )
            .expect("create table");
            let tx = conn.transaction().expect("begin");
            {
                let mut insert = tx.prepare("INSERT INTO jobs (payload) VALUES (?1)").expect("prepare");
                for _ in 0..messages {
                    insert.execute([&PAYLOAD[..]]).expect("insert");
                }
            }
            tx.commit().expect("commit");
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").expect("checkpoint");
        }
        ((), (0..workers).map(|_| SqliteConsumer(sqlite_connection(&path, self.0))).collect())
    }
}

impl Consumer for SqliteConsumer {
    #[inline]
    fn consume(&mut self, time_ack: bool) -> Option<Duration> {
        let conn = &mut self.0;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).expect("begin claim");
        let claimed = tx
            .prepare_cached(SQLITE_CLAIM)
            .and_then(|mut claim| {
                claim
                    .query_row([unix_ms() + SQLITE_VISIBILITY_MS], |row| {
                        black_box(row.get_ref(1)?.as_blob()?);
                        row.get::<_, i64>(0)
                    })
                    .optional()
            })
            .expect("claim");
        tx.commit().expect("commit claim");
        let id = claimed?;
        Some(timed(time_ack, || {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).expect("begin ack");
            tx.prepare_cached(SQLITE_ACK).and_then(|mut ack| ack.execute([id])).expect("ack");
            tx.commit().expect("commit ack");
        }))
    }
}

/// Runs each consumer on its own thread, started together, until the queue is empty. Returns the time from
/// the first worker's start to the last worker's end, and the histogram of ack times if `time_acks`.
fn drain<C: Consumer>(consumers: Vec<C>, messages: u64, time_acks: bool) -> (Duration, Histogram<u64>) {
    let barrier = Barrier::new(consumers.len());
    let results: Vec<(Instant, Instant, u64, Histogram<u64>)> = thread::scope(|s| {
        let handles: Vec<_> = consumers
            .into_iter()
            .map(|mut consumer| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut histogram = latency_histogram();
                    let mut count = 0;
                    barrier.wait();
                    let start = Instant::now();
                    while let Some(ack) = consumer.consume(time_acks) {
                        count += 1;
                        if time_acks {
                            histogram.saturating_record((ack.as_nanos() as u64).max(1));
                        }
                    }
                    let end = Instant::now();
                    // Closing the consumer (a final sync, saving state) is not timed.
                    drop(consumer);
                    (start, end, count, histogram)
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    let start = results.iter().map(|r| r.0).min().unwrap();
    let end = results.iter().map(|r| r.1).max().unwrap();
    let consumed: u64 = results.iter().map(|r| r.2).sum();
    assert_eq!(consumed, messages, "every message consumed once");
    let mut histogram = latency_histogram();
    for r in &results {
        histogram.add(&r.3).expect("same bounds");
    }
    (end - start, histogram)
}

/// Fills a fresh queue of `contender` with `messages` messages and drains it with `workers` workers.
fn run<Q: Contender>(contender: &Q, messages: u64, workers: usize, time_acks: bool) -> (Duration, Histogram<u64>) {
    let dir = disk_dir();
    let (keep, consumers) = contender.open(dir.path(), messages, workers);
    // Whatever filling the queue (or an earlier sample) left to write back is written now, not during the
    // timed part.
    // SAFETY: `sync` takes no arguments and touches no memory of this process.
    unsafe { libc::sync() };
    let result = drain(consumers, messages, time_acks);
    drop(keep);
    result
}

fn throughput<Q: Contender>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, contender: &Q, workers: usize) {
    g.bench_function(BenchmarkId::new(name, workers), |b| {
        b.iter_custom(|iters| run(contender, iters, workers, false).0)
    });
}

#[allow(non_snake_case)]
fn work_queue_buffered_64B(c: &mut Criterion) {
    let mut g = group(c, "work_queue_buffered_64B", Duration::from_secs(4));
    g.throughput(Throughput::Elements(1));
    for workers in [1, 2] {
        throughput(&mut g, "tollgate", &Tollgate(Durability::Buffered), workers);
        if workers == 1 {
            throughput(&mut g, "yaque", &Yaque, workers);
        }
        throughput(&mut g, "rusqlite-normal", &Sqlite("NORMAL"), workers);
    }
    g.finish();
}

#[allow(non_snake_case)]
fn work_queue_sync_64B(c: &mut Criterion) {
    let mut g = group(c, "work_queue_sync_64B", Duration::from_secs(8));
    g.throughput(Throughput::Elements(1));
    for workers in [1, 2] {
        throughput(&mut g, "tollgate", &Tollgate(Durability::Sync), workers);
        throughput(&mut g, "rusqlite-full", &Sqlite("FULL"), workers);
    }
    g.finish();
}

/// One contender of `ack_latency`: a name, whether it syncs, and how to run it.
type LatencyRun<'a> = (&'a str, bool, &'a (dyn Fn(u64, usize) -> (Duration, Histogram<u64>) + Sync));

fn ack_latency(c: &mut Criterion) {
    let tollgate_buffered = |messages, workers| run(&Tollgate(Durability::Buffered), messages, workers, true);
    let tollgate_sync = |messages, workers| run(&Tollgate(Durability::Sync), messages, workers, true);
    let yaque = |messages, workers| run(&Yaque, messages, workers, true);
    let sqlite_normal = |messages, workers| run(&Sqlite("NORMAL"), messages, workers, true);
    let sqlite_full = |messages, workers| run(&Sqlite("FULL"), messages, workers, true);
    let contenders: [LatencyRun; 5] = [
        ("tollgate/buffered", false, &tollgate_buffered),
        ("tollgate/sync", true, &tollgate_sync),
        ("yaque/commit", false, &yaque),
        ("rusqlite/normal", false, &sqlite_normal),
        ("rusqlite/full", true, &sqlite_full),
    ];
    let mut g = group(c, "ack_latency", Duration::from_secs(4));
    g.throughput(Throughput::Elements(1));
    for &(name, _, run) in &contenders {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (_, histogram) = run(iters, 1);
                Duration::from_nanos(histogram.value_at_quantile(0.5) * histogram.len())
            })
        });
    }
    g.finish();
    if !reporting("ack_latency") {
        return;
    }
    for workers in [1, 2] {
        // Rounds alternate between the contenders, so that all see the same background load.
        let mut results: Vec<(Histogram<u64>, Duration, u64)> =
            contenders.iter().map(|_| (latency_histogram(), Duration::ZERO, 0)).collect();
        for _ in 0..REPORT_ROUNDS {
            for (result, &(name, syncs, run)) in results.iter_mut().zip(&contenders) {
                if workers > 1 && name.starts_with("yaque") {
                    continue;
                }
                let messages = if syncs { REPORT_MESSAGES_SYNC } else { REPORT_MESSAGES } / REPORT_ROUNDS;
                let (elapsed, histogram) = run(messages, workers);
                result.0.add(histogram).expect("same bounds");
                result.1 += elapsed;
                result.2 += messages;
            }
        }
        for ((histogram, elapsed, messages), &(name, _, _)) in results.iter().zip(&contenders) {
            if *messages == 0 {
                continue;
            }
            let us = |q| histogram.value_at_quantile(q) as f64 / 1e3;
            println!(
                "ack_latency/{name}/{workers}: {} acks, p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs, max {:.2} µs; \
                 {:.0} msg/s",
                histogram.len(),
                us(0.5),
                us(0.99),
                us(0.999),
                histogram.max() as f64 / 1e3,
                *messages as f64 / elapsed.as_secs_f64()
            );
        }
    }
}

/// How late a delayed message is handed to a worker that is waiting for it: a message published with
/// `deliver_after(2 ms)`, a worker parked in `receive`, and the wall-clock time from the message's delivery
/// time to `receive` returning it. The criterion time is the sample's median lateness; the printed report
/// gives percentiles over 1,000 messages. tollgate only: neither peer has delayed delivery (an SQL queue
/// would poll a `run_at` column).
fn delayed_delivery_lateness(c: &mut Criterion) {
    let dir = disk_dir();
    let engine = Engine::open(dir.path()).expect("open engine");
    let topic = engine.topic(TOPIC).expect("topic");
    let worker = topic.worker(GROUP).expect("worker");
    let delay = Duration::from_millis(2);
    let late_ns = |worker: &Worker| {
        topic.publish_message(tollgate::Message::new(PAYLOAD.to_vec()).deliver_after(delay)).expect("publish");
        let delivery = worker.receive(Duration::from_secs(10)).expect("receive").expect("the delayed message");
        let now_us = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_micros() as u64;
        let at_us = delivery.record().deliver_at_us().expect("a delivery time");
        delivery.ack().expect("ack");
        // Microsecond precision, as stored; never early (a test checks that).
        now_us.saturating_sub(at_us) * 1000
    };
    let mut g = group(c, "delayed_delivery", Duration::from_secs(3));
    g.bench_function("tollgate/lateness", |b| {
        b.iter_custom(|iters| {
            let mut late: Vec<u64> = (0..iters).map(|_| late_ns(&worker)).collect();
            late.sort_unstable();
            Duration::from_nanos(late[late.len() / 2] * iters)
        })
    });
    g.finish();
    if !reporting("delayed_delivery") {
        return;
    }
    let mut histogram = latency_histogram();
    for _ in 0..1000 {
        histogram.record(late_ns(&worker).max(1)).expect("in range");
    }
    let us = |q| histogram.value_at_quantile(q) as f64 / 1e3;
    println!(
        "delayed_delivery/tollgate/lateness: {} messages, p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs late",
        histogram.len(),
        us(0.5),
        us(0.99),
        histogram.max() as f64 / 1e3
    );
}

criterion_group! {
    name = benches;
    // No plots: a sample's median ack time can be the same in every sample (yaque's commit is 38 ns to the
    // nanosecond), and criterion's plots panic on samples without variance.
    config = Criterion::default().without_plots();
    targets = work_queue_buffered_64B, work_queue_sync_64B, ack_latency, delayed_delivery_lateness
}
criterion_main!(benches);
