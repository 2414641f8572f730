//! The scorecard: tollgate and its strongest in-process peers, side by side in one run, for the headline goals of
//! docs/BENCHMARKS.md that need no server. `cargo bench --bench scorecard` (about 1.5 minutes on 2 cores).
//!
//! Every case measures what the criterion bench of its part measures, with the same contenders and operations
//! (shared in `support/`): `benches/locks.rs` for the lock rows, `benches/log.rs` for append, latency and `Sync`
//! publish, `benches/queue.rs` for the worker row. The scorecard differs only in how it samples: [`ROUNDS`]
//! rounds, each running every case once, and within a case every contender once, in an order that rotates from
//! round to round, so that all contenders of a case see the same background load. A contender's measurement is
//! a warm-up and then a timed part of fixed length ([`WARM_UP`], [`MEASURE`]), except the worker case, which
//! drains a queue filled with about [`MEASURE`] worth of messages. A row gives each contender's median over the
//! rounds; the best peer is the peer with the best median, and the ratio is tollgate's median divided by that
//! peer's.
//!
//! Prints the table on stdout (progress on stderr) and writes its rows as JSON to `scorecard.json` in the target
//! directory (`CARGO_TARGET_DIR` if set, relative to the working directory, else `target/` of this package).
//! With `--test` (or without `--bench`, as under `cargo test --benches`) it makes a smoke run instead: one
//! round of a few milliseconds per contender, whose figures mean nothing; it prints them but writes no JSON.
//! Other arguments are filters: `cargo bench --bench scorecard -- hand-off` runs only the cases with a row whose
//! name contains one of them, and writes no JSON either.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use tollgate::Durability;

mod support;
use support::locks::{
    AsyncHandoffs, CondvarLocks, DashLocks, KeyedLock, cycle_keys, disjoint_key_sets, existing_key, fresh_key,
    fresh_keys, lockable, parking_lot, tollgate, with_handoff,
};
use support::log::{
    Channel, CommitLogStore, FjallStore, SYNC_BATCH, Sqlite, Store, TollgateLog, Yaque, append_run, channel_one_way,
    tollgate_one_way,
};
use support::queue;
use support::{Budget, disk_dir, memory_dir, run_for, run_threads};

/// Rounds of a full run.
const ROUNDS: usize = 7;
/// Warm-up of each timed measurement of a full run.
const WARM_UP: Duration = Duration::from_millis(100);
/// Timed part of each timed measurement of a full run.
const MEASURE: Duration = Duration::from_millis(300);
/// Messages of the first drain of a worker contender, which measures its rate so that later drains hold about
/// [`MEASURE`] worth of messages (within [`DRAIN_MESSAGES_MIN`] and [`DRAIN_MESSAGES_MAX`]).
const DRAIN_CALIBRATION_MESSAGES: u64 = 2_000;
const DRAIN_MESSAGES_MIN: u64 = 200;
const DRAIN_MESSAGES_MAX: u64 = 1_000_000;
/// The payload of the append and `Sync` publish cases.
const PAYLOAD: [u8; 64] = [0xA5; 64];

/// How long a run measures.
#[derive(Clone, Copy, Debug)]
struct Plan {
    rounds: usize,
    warm_up: Duration,
    measure: Duration,
    drain_calibration_messages: u64,
    smoke: bool,
}

impl Plan {
    const FULL: Plan = Plan {
        rounds: ROUNDS,
        warm_up: WARM_UP,
        measure: MEASURE,
        drain_calibration_messages: DRAIN_CALIBRATION_MESSAGES,
        smoke: false,
    };

    const SMOKE: Plan = Plan {
        rounds: 1,
        warm_up: Duration::from_millis(1),
        measure: Duration::from_millis(5),
        drain_calibration_messages: DRAIN_MESSAGES_MIN,
        smoke: true,
    };

    fn budget(&self) -> Budget {
        Budget::Time { warm_up: self.warm_up, measure: self.measure }
    }
}

/// Which way a figure is better.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Better {
    Lower,
    Higher,
}

impl Better {
    fn word(self) -> &'static str {
        match self {
            Better::Lower => "lower",
            Better::Higher => "higher",
        }
    }

    /// Whether `a` is better than `b`.
    fn prefers(self, a: f64, b: f64) -> bool {
        match self {
            Better::Lower => a < b,
            Better::Higher => a > b,
        }
    }
}

/// One row of the scorecard: what it measures, in which unit.
struct Row {
    case: &'static str,
    unit: &'static str,
    better: Better,
}

impl Row {
    /// The unit with its direction, as the JSON gives it: "ns/op (lower is better)".
    fn unit_text(&self) -> String {
        format!("{} ({} is better)", self.unit, self.better.word())
    }
}

/// How to measure a contender once: one figure per row of its case.
type Measure<'a> = Box<dyn FnMut(&Plan) -> Vec<f64> + 'a>;

/// Rows measured together (one measurement of a contender gives a figure for each), and their contenders,
/// tollgate first.
struct Case<'a> {
    rows: Vec<Row>,
    contenders: Vec<(&'static str, Measure<'a>)>,
}

/// ns per lock + unlock of one prewarmed key.
fn lock_existing<L: KeyedLock>(locks: L, plan: &Plan) -> Vec<f64> {
    vec![run_threads(1, plan.budget(), |_| existing_key(&locks)).ns_per_call()]
}

/// ns per lock + unlock of a key whose entry is created and reclaimed.
fn lock_fresh<L: KeyedLock>(locks: L, keys: &[String], plan: &Plan) -> Vec<f64> {
    vec![run_threads(1, plan.budget(), |_| fresh_key(&locks, keys)).ns_per_call()]
}

/// Mean ns from the holder's release to the parked waiter's return.
fn handoff<L: KeyedLock>(locks: L, plan: &Plan) -> Vec<f64> {
    with_handoff(&locks, |handoff| {
        let mut times = Vec::new();
        let (calls, _, _) = run_for(plan.budget(), |_| times.push(handoff()));
        let timed = &times[times.len() - calls as usize..];
        vec![timed.iter().sum::<Duration>().as_nanos() as f64 / calls as f64]
    })
}

/// Mean ns of a hand-off to a waiting task, by `handoffs` (see [`AsyncHandoffs`]).
fn async_handoff(handoffs: impl Fn(u64) -> Duration, plan: &Plan) -> Vec<f64> {
    let mut times = Vec::new();
    let (calls, _, _) = run_for(plan.budget(), |_| times.push(handoffs(1)));
    let timed = &times[times.len() - calls as usize..];
    vec![timed.iter().sum::<Duration>().as_nanos() as f64 / calls as f64]
}

/// Total M lock + unlock per second of 2 threads on keys of their own, and that throughput over 1 thread's.
fn disjoint<L: KeyedLock>(locks: L, plan: &Plan) -> Vec<f64> {
    let keys = disjoint_key_sets(&locks, 2);
    let one = run_threads(1, plan.budget(), |t| cycle_keys(&locks, &keys[t]));
    let two = run_threads(2, plan.budget(), |t| cycle_keys(&locks, &keys[t]));
    vec![two.calls_per_s() / 1e6, two.calls_per_s() / one.calls_per_s()]
}

/// M appends of 64 B per second, one producer, files on a tmpfs.
fn append<S: Store>(open: impl Fn(&Path) -> S, plan: &Plan) -> Vec<f64> {
    vec![append_run(memory_dir, open, 1, &PAYLOAD, 1, plan.budget()).calls_per_s() / 1e6]
}

/// p50 and p99 ns from just before a publish to a spinning receiver seeing it, one message in flight.
fn spinning(one_way: fn(Budget, bool) -> (Duration, Histogram<u64>), plan: &Plan) -> Vec<f64> {
    let (_, histogram) = one_way(plan.budget(), false);
    assert!(!histogram.is_empty(), "a timed run records at least one message");
    vec![histogram.value_at_quantile(0.5) as f64, histogram.value_at_quantile(0.99) as f64]
}

/// k messages per second of 2 threads durably appending batches of [`SYNC_BATCH`], files on disk.
fn sync_batches<S: Store>(open: impl Fn(&Path) -> S, plan: &Plan) -> Vec<f64> {
    let span = append_run(disk_dir, open, 2, &PAYLOAD, SYNC_BATCH, plan.budget());
    vec![span.calls_per_s() * SYNC_BATCH as f64 / 1e3]
}

/// M messages per second that one worker receives, reads and acknowledges, draining a queue filled beforehand.
/// The first call drains [`Plan::drain_calibration_messages`] to learn the contender's rate (`rate`); each
/// call then drains about [`Plan::measure`] worth of messages at the rate seen last.
fn drain<Q: queue::Contender>(contender: &Q, rate: &mut Option<f64>, plan: &Plan) -> Vec<f64> {
    let drain_rate = |messages: u64| messages as f64 / queue::run(contender, messages, 1, false).0.as_secs_f64();
    let per_s = *rate.get_or_insert_with(|| drain_rate(plan.drain_calibration_messages));
    let messages = ((per_s * plan.measure.as_secs_f64()) as u64).clamp(DRAIN_MESSAGES_MIN, DRAIN_MESSAGES_MAX);
    let per_s = drain_rate(messages);
    *rate = Some(per_s);
    vec![per_s / 1e6]
}

/// A contender of a case: its name and how to measure it.
fn each<'a>(name: &'static str, measure: impl FnMut(&Plan) -> Vec<f64> + 'a) -> (&'static str, Measure<'a>) {
    (name, Box::new(measure))
}

fn row(case: &'static str, unit: &'static str, better: Better) -> Row {
    Row { case, unit, better }
}

/// The cases, in the order each round runs them.
fn cases<'a>(fresh: &'a [String], handoffs: &'a AsyncHandoffs) -> Vec<Case<'a>> {
    let (mut yaque_rate, mut sqlite_rate, mut tollgate_rate) = (None, None, None);
    vec![
        Case {
            rows: vec![row("lock+unlock, existing key", "ns/op", Better::Lower)],
            contenders: vec![
                each("tollgate", |plan| lock_existing(tollgate(), plan)),
                each("dashmap+mutex", |plan| lock_existing(DashLocks::new(false), plan)),
                each("lockable", |plan| lock_existing(lockable(), plan)),
                each("std_mutex+condvar", |plan| lock_existing(CondvarLocks::new(false), plan)),
            ],
        },
        Case {
            rows: vec![row("lock+unlock, fresh key (entry created and reclaimed)", "ns/op", Better::Lower)],
            contenders: vec![
                each("tollgate", move |plan| lock_fresh(tollgate(), fresh, plan)),
                each("dashmap+mutex", move |plan| lock_fresh(DashLocks::new(true), fresh, plan)),
                each("lockable", move |plan| lock_fresh(lockable(), fresh, plan)),
                each("std_mutex+condvar", move |plan| lock_fresh(CondvarLocks::new(true), fresh, plan)),
            ],
        },
        Case {
            rows: vec![row("hand-off to a parked waiter", "ns/op", Better::Lower)],
            contenders: vec![
                each("tollgate", |plan| handoff(tollgate(), plan)),
                each("parking_lot", |plan| handoff(parking_lot(), plan)),
            ],
        },
        Case {
            rows: vec![row("hand-off to a waiting task (async)", "ns/op", Better::Lower)],
            contenders: vec![
                each("tollgate", move |plan| async_handoff(|n| handoffs.tollgate(n), plan)),
                each("tokio_mutex", move |plan| async_handoff(|n| handoffs.tokio_mutex(n), plan)),
            ],
        },
        Case {
            rows: vec![
                row("disjoint keys, 2 threads (total)", "M ops/s", Better::Higher),
                row("disjoint keys, scaling 1 → 2 threads", "× 1-thread throughput", Better::Higher),
            ],
            contenders: vec![
                each("tollgate", |plan| disjoint(tollgate(), plan)),
                each("dashmap+mutex", |plan| disjoint(DashLocks::new(false), plan)),
            ],
        },
        Case {
            rows: vec![row("append 64 B, 1 producer, Buffered (tmpfs)", "M msg/s", Better::Higher)],
            contenders: vec![
                each("tollgate", |plan| append(|dir| TollgateLog::open(dir, Durability::Buffered), plan)),
                each("crossbeam-channel", |plan| append(|_| Channel::<64>::new(), plan)),
                each("yaque", |plan| append(Yaque::open, plan)),
                each("commitlog", |plan| append(|dir| CommitLogStore::open(dir, false), plan)),
                each("fjall", |plan| append(|dir| FjallStore::open(dir, false), plan)),
                each("rusqlite", |plan| append(|dir| Sqlite::open(dir, 1, "OFF"), plan)),
            ],
        },
        Case {
            rows: vec![
                row("publish → spinning subscriber, p50", "ns", Better::Lower),
                row("publish → spinning subscriber, p99", "ns", Better::Lower),
            ],
            contenders: vec![
                each("tollgate", |plan| spinning(tollgate_one_way, plan)),
                each("crossbeam-channel", |plan| spinning(channel_one_way, plan)),
            ],
        },
        Case {
            rows: vec![row("Sync publish, 2 publishers, batches of 64 (disk)", "k msg/s", Better::Higher)],
            contenders: vec![
                each("tollgate", |plan| sync_batches(|dir| TollgateLog::open(dir, Durability::Sync), plan)),
                each("fjall", |plan| sync_batches(|dir| FjallStore::open(dir, true), plan)),
                each("commitlog", |plan| sync_batches(|dir| CommitLogStore::open(dir, true), plan)),
                each("rusqlite", |plan| sync_batches(|dir| Sqlite::open(dir, 2, "FULL"), plan)),
            ],
        },
        Case {
            rows: vec![row("worker receive+ack, 1 worker, Buffered (disk)", "M msg/s", Better::Higher)],
            contenders: vec![
                each("tollgate", move |plan| drain(&queue::Tollgate(Durability::Buffered), &mut tollgate_rate, plan)),
                each("yaque", move |plan| drain(&queue::Yaque, &mut yaque_rate, plan)),
                each("rusqlite", move |plan| drain(&queue::Sqlite("NORMAL"), &mut sqlite_rate, plan)),
            ],
        },
    ]
}

/// `figures[case][contender][row]`: the figure of each round.
type Figures = Vec<Vec<Vec<Vec<f64>>>>;

/// Runs the rounds: in each, every case, and in each case every contender, starting one further along each round.
fn measure(cases: &mut [Case<'_>], plan: &Plan, started: Instant) -> Figures {
    let mut figures: Figures =
        cases.iter().map(|case| case.contenders.iter().map(|_| vec![Vec::new(); case.rows.len()]).collect()).collect();
    for round in 0..plan.rounds {
        for (case, case_figures) in cases.iter_mut().zip(&mut figures) {
            let count = case.contenders.len();
            let order: Vec<usize> = (0..count).map(|k| (k + round) % count).collect();
            let names: Vec<&str> = order.iter().map(|&c| case.contenders[c].0).collect();
            eprintln!(
                "[{:5.1} s] round {}/{}: {} ({})",
                started.elapsed().as_secs_f64(),
                round + 1,
                plan.rounds,
                case.rows[0].case,
                names.join(", ")
            );
            let mut seen = Vec::new();
            for c in order {
                let measured = (case.contenders[c].1)(plan);
                assert_eq!(measured.len(), case.rows.len(), "one figure per row");
                let shown: Vec<String> = measured.iter().map(|&value| figure(value)).collect();
                seen.push(format!("{} {}", case.contenders[c].0, shown.join(" / ")));
                for (row_figures, value) in case_figures[c].iter_mut().zip(measured) {
                    row_figures.push(value);
                }
            }
            eprintln!("          {}", seen.join(", "));
        }
    }
    figures
}

/// One contender's figures of one row over the rounds.
#[derive(Clone, Debug)]
struct Spread {
    name: &'static str,
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn new(name: &'static str, figures: &[f64]) -> Self {
        let mut sorted = figures.to_vec();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 { sorted[middle] } else { (sorted[middle - 1] + sorted[middle]) / 2.0 };
        Spread { name, median, min: sorted[0], max: sorted[sorted.len() - 1] }
    }
}

/// A row's result: tollgate, its best peer, and every peer.
struct Line<'a> {
    row: &'a Row,
    tollgate: Spread,
    best: Spread,
    peers: Vec<Spread>,
}

impl Line<'_> {
    fn ratio(&self) -> f64 {
        self.tollgate.median / self.best.median
    }

    /// Who is ahead, tollgate or the best peer.
    fn ahead(&self) -> &'static str {
        if self.row.better.prefers(self.tollgate.median, self.best.median) { "tollgate" } else { self.best.name }
    }
}

fn lines<'a>(cases: &'a [Case<'_>], figures: &Figures) -> Vec<Line<'a>> {
    let mut lines = Vec::new();
    for (case, case_figures) in cases.iter().zip(figures) {
        for (r, row) in case.rows.iter().enumerate() {
            let spread = |c: usize| Spread::new(case.contenders[c].0, &case_figures[c][r]);
            let peers: Vec<Spread> = (1..case.contenders.len()).map(spread).collect();
            let best = peers
                .iter()
                .cloned()
                .reduce(|best, peer| if row.better.prefers(peer.median, best.median) { peer } else { best })
                .expect("every case has a peer");
            lines.push(Line { row, tollgate: spread(0), best, peers });
        }
    }
    lines
}

/// A figure with three or four significant digits.
fn figure(value: f64) -> String {
    match value.abs() {
        v if v >= 100.0 => format!("{value:.0}"),
        v if v >= 10.0 => format!("{value:.1}"),
        v if v >= 1.0 => format!("{value:.2}"),
        _ => format!("{value:.3}"),
    }
}

fn with_spread(spread: &Spread) -> String {
    format!("{} ({}–{})", figure(spread.median), figure(spread.min), figure(spread.max))
}

fn table(lines: &[Line<'_>], plan: &Plan) -> String {
    let header = ["case", "unit", "tollgate (min–max)", "best peer", "peer (min–max)", "ratio", "ahead"];
    let rows: Vec<[String; 7]> = lines
        .iter()
        .map(|line| {
            [
                line.row.case.to_owned(),
                format!("{}, {} better", line.row.unit, line.row.better.word()),
                with_spread(&line.tollgate),
                line.best.name.to_owned(),
                with_spread(&line.best),
                format!("{}×", figure(line.ratio())),
                line.ahead().to_owned(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, &width)| format!("{cell:width$}")).collect();
        writeln!(out, "| {} |", padded.join(" | ")).expect("write to a string");
    };
    line(&header.map(str::to_owned));
    line(&widths.map(|width| "-".repeat(width)));
    for row in &rows {
        line(row);
    }
    writeln!(
        out,
        "\nMedians of {} round(s), min–max over the rounds; ratio = tollgate / best peer, in the row's unit.",
        plan.rounds
    )
    .expect("write to a string");
    writeln!(out, "\nEvery contender, median (min–max):").expect("write to a string");
    for line in lines {
        let peers: Vec<String> = line.peers.iter().map(|peer| format!("{} {}", peer.name, with_spread(peer))).collect();
        writeln!(out, "- {}: tollgate {}; {}", line.row.case, with_spread(&line.tollgate), peers.join("; "))
            .expect("write to a string");
    }
    out
}

fn json(lines: &[Line<'_>], plan: &Plan) -> serde_json::Value {
    let spread = |s: &Spread| json!({ "name": s.name, "median": s.median, "min": s.min, "max": s.max });
    lines
        .iter()
        .map(|line| {
            json!({
                "case": line.row.case,
                "unit": line.row.unit_text(),
                "tollgate": line.tollgate.median,
                "peer": line.best.name,
                "peer_value": line.best.median,
                "ratio": line.ratio(),
                "rounds": plan.rounds,
                "tollgate_min": line.tollgate.min,
                "tollgate_max": line.tollgate.max,
                "peer_min": line.best.min,
                "peer_max": line.best.max,
                "peers": line.peers.iter().map(spread).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// `scorecard.json` in the target directory: `CARGO_TARGET_DIR` if set, else this package's `target/`.
fn json_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("scorecard.json")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|arg| arg == name);
    if flag("--list") {
        println!("scorecard: benchmark");
        return;
    }
    let plan = if flag("--test") || !flag("--bench") { Plan::SMOKE } else { Plan::FULL };
    let filters: Vec<&String> = args.iter().filter(|arg| !arg.starts_with('-')).collect();
    let fresh = fresh_keys();
    let handoffs = AsyncHandoffs::new();
    let mut cases = cases(&fresh, &handoffs);
    cases.retain(|case| {
        filters.is_empty() || case.rows.iter().any(|row| filters.iter().any(|f| row.case.contains(f.as_str())))
    });
    if cases.is_empty() {
        println!("No case matches {filters:?}.");
        return;
    }
    let started = Instant::now();
    let figures = measure(&mut cases, &plan, started);
    let lines = lines(&cases, &figures);
    println!("{}", table(&lines, &plan));
    println!("Wall time of the measurements: {:.1} s.", started.elapsed().as_secs_f64());
    if plan.smoke {
        println!("Smoke run (--test): the figures mean nothing, and no JSON was written.");
        return;
    }
    if !filters.is_empty() {
        println!("Only the cases matching {filters:?} ran, so no JSON was written.");
        return;
    }
    let path = json_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create the target directory");
    }
    let text = serde_json::to_string_pretty(&json(&lines, &plan)).expect("JSON of the rows");
    std::fs::write(&path, text + "\n").expect("write scorecard.json");
    println!("Rows written to {}.", path.display());
}
