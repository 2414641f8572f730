//! Helpers shared by the benchmarks (`benches/log.rs`, `benches/queue.rs`): directories, criterion group
//! settings, whether to print a percentile report, and the latency histogram.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode};
use hdrhistogram::Histogram;
use tempfile::TempDir;

/// A fresh directory in `std::env::temp_dir()`, on disk (on the machine these were recorded on): fsync is what
/// `Durability::Sync` pays for.
pub fn disk_dir() -> TempDir {
    tempfile::Builder::new().prefix("tollgate-bench-").tempdir().expect("temporary directory")
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
