//! `tollgate bench`: measures locks, publishing, consuming and latency on
//! this machine, in a fresh directory that it removes afterwards.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tollgate::{Durability, Engine, Error, Escaped, LockManager, TopicConfig};

use crate::text::{format_ns, thousands};
use crate::{EXIT_FAILED, Failure, fail};

/// Runs `tollgate bench`, in a new directory under `parent`.
pub(super) fn bench(seconds: f64, parent: Option<PathBuf>) -> Result<u8, Failure> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        return Err(fail(EXIT_FAILED, format!("--seconds {seconds}: must be more than 0 and at most 3600")));
    }
    let parent = parent.unwrap_or_else(std::env::temp_dir);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = parent.join(format!("tollgate-bench-{}-{nanos}", std::process::id()));
    let mut out = io::stdout().lock();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    writeln!(
        out,
        "tollgate bench: {seconds} s per test, {cpus} CPUs, data in {} (removed afterwards)",
        Escaped::path(&dir)
    )?;
    let result = Bench { dir: &dir, duration: Duration::from_secs_f64(seconds) }.run(&mut out);
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|()| 0)
}

/// Messages the publish test writes at most (so that a fast machine does
/// not fill a small disk).
const BENCH_MESSAGES_MAX: u64 = 20_000_000;
/// Payload size of the publish tests.
const BENCH_PAYLOAD_BYTES: usize = 64;

struct Bench<'a> {
    dir: &'a Path,
    duration: Duration,
}

impl Bench<'_> {
    fn run(&self, out: &mut impl Write) -> Result<(), Failure> {
        let failed = |e: Error| fail(EXIT_FAILED, format!("bench: {e}"));
        let (ops, elapsed) = self.locks(1).map_err(|e| failed(e.into()))?;
        rate_line(out, "lock+unlock, 1 thread", ops, elapsed, "ops/s")?;
        let (ops, elapsed) = self.locks(2).map_err(|e| failed(e.into()))?;
        rate_line(out, "lock+unlock, 2 threads, own keys", ops, elapsed, "ops/s")?;

        let engine = Engine::open(self.dir).map_err(|e| failed(e.into()))?;
        let topic = engine.topic("bench").map_err(|e| failed(e.into()))?;
        let (published, elapsed) = self.publish(&topic).map_err(failed)?;
        rate_line(out, &format!("publish {BENCH_PAYLOAD_BYTES} B, buffered"), published, elapsed, "msgs/s")?;
        let (consumed, elapsed) = self.consume(&topic, published).map_err(failed)?;
        rate_line(out, "subscriber consume", consumed, elapsed, "msgs/s")?;
        let (acked, elapsed) = self.work(&topic, published).map_err(failed)?;
        rate_line(out, "worker receive+ack", acked, elapsed, "msgs/s")?;

        let latency = self.latency(&engine).map_err(failed)?;
        latency_line(out, "publish -> subscriber latency", &latency)?;
        let sync = TopicConfig { durability: Durability::Sync, ..TopicConfig::default() };
        let topic = engine.create_topic("bench-sync", sync).map_err(|e| failed(e.into()))?;
        let latency = self.sync_publish(&topic).map_err(failed)?;
        latency_line(out, &format!("publish {BENCH_PAYLOAD_BYTES} B, sync"), &latency)?;
        Ok(())
    }

    /// Uncontended lock and unlock, each of `threads` threads on its own keys.
    fn locks(&self, threads: usize) -> Result<(u64, Duration), tollgate::LockError> {
        let locks = LockManager::new();
        let started = Instant::now();
        let ops: Result<Vec<u64>, _> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let locks = &locks;
                    scope.spawn(move || {
                        let keys: Vec<String> = (0..64).map(|i| format!("bench:{t}:{i}")).collect();
                        let mut ops = 0u64;
                        while started.elapsed() < self.duration {
                            for key in &keys {
                                drop(locks.lock(key)?);
                            }
                            ops += keys.len() as u64;
                        }
                        Ok(ops)
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("a benchmark thread panicked")).collect()
        });
        Ok((ops?.iter().sum(), started.elapsed()))
    }

    fn publish(&self, topic: &tollgate::Topic) -> Result<(u64, Duration), Error> {
        let payload = [0x5a_u8; BENCH_PAYLOAD_BYTES];
        self.repeat(BENCH_MESSAGES_MAX, || topic.publish(payload).map(|_| true).map_err(Error::from))
    }

    /// Reads up to `count` records (or for the test's duration).
    fn consume(&self, topic: &tollgate::Topic, count: u64) -> Result<(u64, Duration), Error> {
        let mut subscription = topic.subscribe("bench-subscriber")?;
        self.repeat(count, || Ok(subscription.next()?.is_some()))
    }

    /// Receives and acks up to `count` messages (or for the test's duration).
    fn work(&self, topic: &tollgate::Topic, count: u64) -> Result<(u64, Duration), Error> {
        let worker = topic.worker("bench-worker")?;
        self.repeat(count, || {
            let Some(delivery) = worker.receive(Duration::ZERO)? else { return Ok(false) };
            delivery.ack()?;
            Ok(true)
        })
    }

    /// Runs `step` until it has run `limit` times, the test's duration has
    /// passed (the clock is read every 256 steps), or it returns false.
    /// Returns the steps that ran, and the time they took.
    fn repeat(&self, limit: u64, mut step: impl FnMut() -> Result<bool, Error>) -> Result<(u64, Duration), Error> {
        let started = Instant::now();
        let mut count = 0;
        while count < limit && (!count.is_multiple_of(256) || started.elapsed() < self.duration) {
            if !step()? {
                break;
            }
            count += 1;
        }
        Ok((count, started.elapsed()))
    }

    /// From before `publish` to a waiting subscriber thread holding the
    /// record, one message at a time.
    fn latency(&self, engine: &Engine) -> Result<Histogram<u64>, Error> {
        let topic = engine.topic("bench-latency")?;
        let mut subscription = topic.subscribe("bench-latency")?;
        let received = AtomicU64::new(0);
        let done = AtomicBool::new(false);
        let origin = Instant::now();
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| -> Result<Histogram<u64>, Error> {
                let mut latency = latency_histogram();
                while !done.load(Ordering::Acquire) {
                    let Some(record) = subscription.next_timeout(Duration::from_millis(10))? else { continue };
                    let sent_ns = u64::from_le_bytes(record.payload()[..8].try_into().expect("eight bytes"));
                    latency.saturating_record(origin.elapsed().as_nanos() as u64 - sent_ns);
                    received.fetch_add(1, Ordering::Release);
                }
                Ok(latency)
            });
            let published = (|| -> Result<(), Error> {
                let mut sent = 0;
                while origin.elapsed() < self.duration {
                    topic.publish((origin.elapsed().as_nanos() as u64).to_le_bytes())?;
                    sent += 1;
                    let waited = Instant::now();
                    while received.load(Ordering::Acquire) < sent && waited.elapsed() < Duration::from_secs(1) {
                        std::hint::spin_loop();
                    }
                }
                Ok(())
            })();
            done.store(true, Ordering::Release);
            let latency = reader.join().expect("the benchmark's reader panicked");
            published.and(latency)
        })
    }

    fn sync_publish(&self, topic: &tollgate::Topic) -> Result<Histogram<u64>, Error> {
        let payload = [0x5a_u8; BENCH_PAYLOAD_BYTES];
        let mut latency = latency_histogram();
        let started = Instant::now();
        while started.elapsed() < self.duration {
            let before = Instant::now();
            topic.publish(payload)?;
            latency.saturating_record(before.elapsed().as_nanos() as u64);
        }
        Ok(latency)
    }
}

/// Nanoseconds from 1 ns to an hour, to 3 significant figures (larger
/// values are recorded as an hour).
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600 * 1_000_000_000, 3).expect("valid bounds")
}

fn rate_line(out: &mut impl Write, what: &str, count: u64, elapsed: Duration, unit: &str) -> io::Result<()> {
    let rate = count as f64 / elapsed.as_secs_f64().max(1e-9);
    writeln!(out, "{:<36}{:>14} {unit}", format!("{what}:"), thousands(rate.round() as u64))
}

fn latency_line(out: &mut impl Write, what: &str, latency: &Histogram<u64>) -> io::Result<()> {
    let at = |q| format_ns(latency.value_at_quantile(q));
    writeln!(
        out,
        "{:<36}p50 {}  p99 {}  p99.9 {}  ({} samples)",
        format!("{what}:"),
        at(0.5),
        at(0.99),
        at(0.999),
        thousands(latency.len())
    )
}
