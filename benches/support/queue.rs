//! The work-queue contenders of `benches/queue.rs` and the scorecard, and the run both measure: fill a fresh
//! queue, then drain it with workers that receive, read and acknowledge each message. See `benches/queue.rs`
//! for each contender's setup.

use std::cell::Cell;
use std::future::Future;
use std::hint::black_box;
use std::path::Path;
use std::pin::pin;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use tollgate::{Durability, Engine, QueueConfig, TopicConfig, Worker};

use super::{disk_dir, latency_histogram};

/// The topic of every tollgate benchmark.
pub const TOPIC: &str = "jobs";
/// The worker group of every tollgate benchmark.
pub const GROUP: &str = "workers";
/// The message every benchmark publishes.
pub const PAYLOAD: [u8; 64] = [0xA5; 64];
/// How long a claimed SQLite job stays with its worker (what `locked_until` is set to, from now).
const SQLITE_VISIBILITY_MS: i64 = 30_000;
/// How long a SQLite connection waits for a lock before its statement fails.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// One worker's handle on a queue.
pub trait Consumer: Send {
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
pub trait Contender: Sync {
    type Consumer: Consumer;
    type Keep;

    fn open(&self, dir: &Path, messages: u64, workers: usize) -> (Self::Keep, Vec<Self::Consumer>);
}

/// tollgate: a topic of the given durability in its own engine, and one worker group.
pub struct Tollgate(pub Durability);

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

/// tollgate's async receive: the same queue as [`Tollgate`], drained with `Worker::receive_async`, each
/// future run by a plain `block_on` (the calling thread parks while it is pending).
pub struct TollgateAsync(pub Durability);

/// A worker that receives through `receive_async` and acks through `ack_async`.
pub struct AsyncWorker(Worker);

impl Contender for TollgateAsync {
    type Consumer = AsyncWorker;
    type Keep = (Engine, tollgate::Topic);

    fn open(&self, dir: &Path, messages: u64, workers: usize) -> (Self::Keep, Vec<AsyncWorker>) {
        let (keep, workers) = Tollgate(self.0).open(dir, messages, workers);
        (keep, workers.into_iter().map(AsyncWorker).collect())
    }
}

impl Consumer for AsyncWorker {
    #[inline]
    fn consume(&mut self, time_ack: bool) -> Option<Duration> {
        let delivery = block_on(self.0.receive_async(Duration::ZERO)).expect("receive")?;
        black_box(delivery.payload().as_ref());
        Some(timed(time_ack, || block_on(delivery.ack_async()).expect("ack")))
    }
}

/// Unparks the thread blocked on a future.
struct Unparker(thread::Thread);

impl std::task::Wake for Unparker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` on this thread, parking while it is pending; the waker is made once per thread.
fn block_on<F: Future>(future: F) -> F::Output {
    thread_local! {
        static WAKER: Waker = Waker::from(std::sync::Arc::new(Unparker(thread::current())));
    }
    WAKER.with(|waker| {
        let mut cx = Context::from_waker(waker);
        let mut future = pin!(future);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
            thread::park();
        }
    })
}

/// yaque: one queue, one receiver.
pub struct Yaque;

/// yaque's receiver.
pub struct YaqueConsumer(yaque::Receiver);

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
pub struct Sqlite(pub &'static str);

/// One worker's connection.
pub struct SqliteConsumer(Connection);

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
pub fn drain<C: Consumer>(consumers: Vec<C>, messages: u64, time_acks: bool) -> (Duration, Histogram<u64>) {
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
pub fn run<Q: Contender>(contender: &Q, messages: u64, workers: usize, time_acks: bool) -> (Duration, Histogram<u64>) {
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
