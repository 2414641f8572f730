//! Benchmarks of tollgate's durable log against peer queues, logs and stores, side by side in every group.
//!
//! Peers: `crossbeam-channel` (an unbounded in-memory channel: the ceiling, with no file at all), `yaque` (a
//! file-backed queue: one `write` per send), `commitlog` (a segmented, indexed log), `fjall` (an LSM-tree
//! key-value store; keys are a thread byte and a big-endian sequence number) and `rusqlite` (SQLite, bundled,
//! in WAL mode, a table `log (id INTEGER PRIMARY KEY, payload BLOB)`, one connection per thread with a busy
//! handler that yields instead of sleeping). Peers whose writer needs `&mut` (yaque, commitlog) are shared by
//! two producers behind a `Mutex`, as an application would have to.
//!
//! The stores and the latency runs are shared with the scorecard, in `support/log.rs`.
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
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use commitlog::ReadLimit;
use commitlog::message::MessageSet;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hdrhistogram::Histogram;
use tempfile::TempDir;

mod support;
use support::log::{
    Channel, CommitLogStore, FjallStore, SYNC_BATCH, Sqlite, Store, TOPIC, TollgateLog, Yaque, append_run,
    channel_one_way, mpsc_one_way, open_commitlog, tollgate_one_way,
};
use support::{Budget, disk_dir, group, latency_histogram, memory_dir, reporting};
use tollgate::{Durability, Engine, Offset, TopicConfig};

/// Messages of the percentile run after `subscriber_latency_spinning`.
const SPINNING_REPORT_MESSAGES: u64 = 200_000;
/// Messages of the percentile run after `subscriber_wakeup_parked`.
const PARKED_REPORT_MESSAGES: u64 = 2_000;
/// The percentile runs of the latency groups alternate between tollgate and its peer in this many rounds.
const REPORT_ROUNDS: u64 = 4;
/// Calls per thread of the percentile runs after `sync_2_publishers`, for single publishes and for batches.
const SYNC_REPORT_CALLS: u64 = 500;
const SYNC_REPORT_BATCH_CALLS: u64 = 200;
/// Records read by each `sequential_read` iteration.
const READ_RECORDS: u64 = 100_000;
/// About how much log `recovery_scan` scans.
const RECOVERY_DATA_BYTES: u64 = 160 << 20;
/// Segment size of the topics of `open_time`.
const OPEN_SEGMENT_BYTES: u64 = 64 << 10;
/// Index entries per commitlog index file in `open_time`: enough for a 64 KiB segment of 1 KiB messages.
const OPEN_COMMITLOG_INDEX_ITEMS: usize = 1024;

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
        b.iter_custom(|iters| append_run(dir, &open, threads, payload, batch, Budget::Calls(iters)).elapsed)
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

/// One implementation of a latency group: runs `one_way` (`support/log.rs`) within a budget, parked or spinning.
type OneWay = fn(Budget, bool) -> (Duration, Histogram<u64>);

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
        g.bench_function(contender, |b| b.iter_custom(|iters| median(run(Budget::Calls(iters), parked))));
    }
    g.finish();
    if !reporting(name) {
        return;
    }
    // Rounds alternate between the contenders, so that all see the same background load.
    let mut histograms: Vec<Histogram<u64>> = contenders.iter().map(|_| latency_histogram()).collect();
    for _ in 0..REPORT_ROUNDS {
        for (histogram, &(_, run)) in histograms.iter_mut().zip(contenders) {
            histogram.add(run(Budget::Calls(report_messages / REPORT_ROUNDS), parked).1).expect("same bounds");
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
