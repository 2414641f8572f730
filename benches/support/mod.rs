//! Helpers shared by the benchmarks: the criterion benches (`benches/locks.rs`, `benches/log.rs`,
//! `benches/queue.rs`) and the scorecard (`benches/scorecard.rs`), which measure the same operations of the same
//! contenders.
//!
//! - this file: directories, criterion group settings, whether to print a percentile report, the latency
//!   histogram, and [`run_threads`], which runs calls on threads for a number of calls (criterion) or for a time
//!   (the scorecard);
//! - `locks.rs`: the keyed-lock contenders and the lock operations measured;
//! - `log.rs`: the append stores and the publish → subscriber latency runs;
//! - `queue.rs`: the work-queue contenders and the drain of a filled queue;
//! - `redis.rs`: a throwaway Redis server for the comparisons with Redis.

// Each criterion bench uses only its part of this module; the scorecard uses every part but criterion's.
#![allow(dead_code)]

pub mod locks;
pub mod log;
pub mod queue;
pub mod redis;

use std::path::Path;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode};
use hdrhistogram::Histogram;
use tempfile::TempDir;

/// While a timed run's calls take less than this per chunk, the chunk doubles: reading the clock once a chunk
/// then costs little beside fast calls, and a slow call does not overshoot the run's end by more than itself.
const CHUNK_TIME: Duration = Duration::from_micros(100);
/// The most calls between two readings of the clock in a timed run.
const CHUNK_CALLS_MAX: u64 = 1 << 12;

/// A fresh directory in `std::env::temp_dir()`, on disk (on the machine these were recorded on): fsync is what
/// `Durability::Sync` pays for.
pub fn disk_dir() -> TempDir {
    tempfile::Builder::new().prefix("tollgate-bench-").tempdir().expect("temporary directory")
}

/// A fresh directory on a tmpfs (`/dev/shm`), for cases about CPU cost; in the temporary directory if there is
/// no `/dev/shm`.
pub fn memory_dir() -> TempDir {
    let mut builder = tempfile::Builder::new();
    builder.prefix("tollgate-bench-");
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { builder.tempdir_in(shm) } else { builder.tempdir() }.expect("temporary directory")
}

/// Whether to run the percentile report of `group` after it: only under `cargo bench` (not `--test` or
/// `--list`), and, when filters are given, only if one of them names the group (or a benchmark in it).
pub fn reporting(group: &str) -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|arg| arg == name);
    let filters: Vec<&String> = args.iter().filter(|arg| !arg.starts_with('-')).collect();
    flag("--bench")
        && !flag("--test")
        && !flag("--list")
        && (filters.is_empty() || filters.iter().any(|f| group.contains(f.as_str()) || f.starts_with(group)))
}

/// A group of 10 flat samples after a 1 s warm-up, measured for `measurement`.
pub fn group<'c>(c: &'c mut Criterion, name: &str, measurement: Duration) -> BenchmarkGroup<'c, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(measurement)
        .sampling_mode(SamplingMode::Flat);
    group
}

/// Nanoseconds from 1 to 60 s, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

/// How many calls a run makes on each thread.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    /// This many, all timed: the iterations criterion's `iter_custom` asks for.
    Calls(u64),
    /// As many as fit: calls for `warm_up` (not timed), then for `measure` (timed). The scorecard's.
    Time { warm_up: Duration, measure: Duration },
}

/// The timed part of a run: its calls (over all threads), and the time from the first thread's start of that
/// part to the last thread's end of it.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    pub calls: u64,
    pub elapsed: Duration,
}

impl Span {
    /// Nanoseconds per call.
    pub fn ns_per_call(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.calls as f64
    }

    /// Calls per second.
    pub fn calls_per_s(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }
}

/// Makes `call(i)` for `i` = 0, 1, 2, ... on this thread within `budget`; returns the call count of the timed
/// part and when that part started and ended.
pub fn run_for(budget: Budget, mut call: impl FnMut(u64)) -> (u64, Instant, Instant) {
    match budget {
        Budget::Calls(calls) => {
            let start = Instant::now();
            for i in 0..calls {
                call(i);
            }
            (calls, start, Instant::now())
        }
        Budget::Time { warm_up, measure } => {
            let mut chunk = 1;
            let (warm_up_calls, start) = calls_until(&mut call, 0, &mut chunk, Instant::now() + warm_up);
            let (calls, end) = calls_until(&mut call, warm_up_calls, &mut chunk, start + measure);
            (calls, start, end)
        }
    }
}

/// Makes calls from `call(first)` on, in chunks of `chunk` calls (see [`CHUNK_TIME`]), until `deadline` has
/// passed; returns how many it made and when the last chunk ended.
fn calls_until(call: &mut impl FnMut(u64), first: u64, chunk: &mut u64, deadline: Instant) -> (u64, Instant) {
    let mut next = first;
    let mut last = Instant::now();
    while last < deadline {
        for _ in 0..*chunk {
            call(next);
            next += 1;
        }
        let now = Instant::now();
        if now - last < CHUNK_TIME {
            *chunk = (*chunk * 2).min(CHUNK_CALLS_MAX);
        }
        last = now;
    }
    (next - first, last)
}

/// Runs on each of `threads` threads, started together, the calls that `work(thread)` returns, within
/// `budget` (see [`run_for`]).
pub fn run_threads<C: FnMut(u64)>(threads: usize, budget: Budget, work: impl Fn(usize) -> C + Sync) -> Span {
    let barrier = Barrier::new(threads);
    let runs: Vec<(u64, Instant, Instant)> = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, work) = (&barrier, &work);
                s.spawn(move || {
                    let call = work(t);
                    barrier.wait();
                    run_for(budget, call)
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    let start = runs.iter().map(|run| run.1).min().unwrap();
    let end = runs.iter().map(|run| run.2).max().unwrap();
    Span { calls: runs.iter().map(|run| run.0).sum(), elapsed: end - start }
}
