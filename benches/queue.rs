//! Benchmarks of tollgate's work queues (worker groups) against peer queues, side by side in every group.
//!
//! Run with `cargo bench --bench queue` (about 2 minutes on 2 cores); a filter runs some groups only, e.g.
//! `cargo bench --bench queue -- ack_latency`.
//!
//! The contenders and the drain are shared with the scorecard, in `support/queue.rs`.
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
//!   with a busy handler (see `sqlite_connection` in `support/queue.rs`). `synchronous=NORMAL` (in WAL mode: no
//!   sync at commit) is the counterpart of `Buffered` (`rusqlite-normal`), `synchronous=FULL` (the WAL is synced
//!   at every commit, so twice per message: claim and ack) that of `Sync` (`rusqlite-full`).
//!
//! Groups:
//! - `work_queue_buffered_64B`: throughput (elements = messages) with 1 and 2 worker threads (ids
//!   `<impl>/<workers>`): tollgate `Buffered`, yaque, rusqlite `NORMAL`. The time of a sample runs from the
//!   first worker's start to the last worker's end.
//! - `async_receive_ack_buffered_64B`: throughput of one worker draining a `Buffered` queue, blocking
//!   (`receive(Duration::ZERO)` + `ack`, as in `work_queue_buffered_64B`: `tollgate-blocking/1`) against async
//!   (`receive_async(Duration::ZERO)` + `ack_async`, each future run by a plain thread-parking `block_on`:
//!   `tollgate-async/1`). The queue is full, so neither waits: the row measures what the async form adds (a
//!   future, its `Taking` state and the poll-depth marker) to the same look at the group.
//! - `async_receive_ack_sync_64B`: the same on a `Sync` queue, with 1 and 2 workers. A blocking worker runs
//!   its journal syncs itself; an async one asks the engine's flusher thread and waits for its mark (no task
//!   runs an `msync`), so the row measures that hand-off.
//! - `work_queue_sync_64B`: the same with tollgate `Sync` and rusqlite `FULL`.
//! - `ack_latency`: the time of the acknowledgement alone, with 1 worker: `Delivery::ack` (`tollgate/buffered`,
//!   `tollgate/sync`), yaque's `RecvGuard::commit` (`yaque/commit`), and rusqlite's ack transaction
//!   (`rusqlite/normal`, `rusqlite/full`). The criterion time of a sample is its *median* ack time (as in
//!   `benches/log.rs`: on a 2-core VM a mean is dominated by the rare descheduling, which the percentiles
//!   show). After the group, a fixed run per contender, with 1 and 2 workers (yaque: 1), alternating between
//!   the contenders in rounds, prints p50/p99/p99.9/max of the ack time and the messages per second.
//! - `delayed_delivery`: how late a `deliver_after(2 ms)` message reaches a worker parked in `receive`
//!   (tollgate only; neither peer delays messages).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hdrhistogram::Histogram;

mod support;
use support::queue::{Contender, GROUP, PAYLOAD, Sqlite, TOPIC, Tollgate, TollgateAsync, Yaque, run};
use support::{disk_dir, group, latency_histogram, reporting};
use tollgate::{Durability, Engine, Worker};

/// The percentile runs after `ack_latency` alternate between the contenders in this many rounds.
const REPORT_ROUNDS: u64 = 4;
/// Messages per worker count of a percentile run after `ack_latency`, for contenders that do not sync
/// ([`REPORT_MESSAGES_SYNC`] for those that do).
const REPORT_MESSAGES: u64 = 100_000;
const REPORT_MESSAGES_SYNC: u64 = 4_000;

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

/// Blocking against async receive + ack, one worker, on one `Buffered` queue setup.
#[allow(non_snake_case)]
fn async_receive_ack_buffered_64B(c: &mut Criterion) {
    let mut g = group(c, "async_receive_ack_buffered_64B", Duration::from_secs(4));
    g.throughput(Throughput::Elements(1));
    throughput(&mut g, "tollgate-blocking", &Tollgate(Durability::Buffered), 1);
    throughput(&mut g, "tollgate-async", &TollgateAsync(Durability::Buffered), 1);
    g.finish();
}

/// Blocking against async receive + ack on a `Sync` queue: the flusher runs the async side's syncs.
#[allow(non_snake_case)]
fn async_receive_ack_sync_64B(c: &mut Criterion) {
    let mut g = group(c, "async_receive_ack_sync_64B", Duration::from_secs(8));
    g.throughput(Throughput::Elements(1));
    for workers in [1, 2] {
        throughput(&mut g, "tollgate-blocking", &Tollgate(Durability::Sync), workers);
        throughput(&mut g, "tollgate-async", &TollgateAsync(Durability::Sync), workers);
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
    targets = work_queue_buffered_64B, async_receive_ack_buffered_64B, async_receive_ack_sync_64B, work_queue_sync_64B,
        ack_latency,
        delayed_delivery_lateness
}
criterion_main!(benches);
