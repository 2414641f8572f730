//! Real `kill -9` crash tests of the log.
//!
//! The test runs its own binary again as a child process (`child_workload`,
//! told which data directory to use by `TOLLGATE_CRASH_CHILD`). The child
//! publishes single messages, keyed messages with headers and batches from
//! several threads to three topics, one per durability, with small segments
//! so that they roll often, and commits consumer-group offsets now and then.
//! It prints one line for every operation that returned `Ok`. The parent
//! SIGKILLs it at a random moment, then recovers the directory in-process and
//! checks that every acknowledged record is there whole, at its offset; that
//! no batch is partial; that no record is corrupt, changed or missing; and
//! that no committed group offset is ahead of the data or behind an
//! acknowledged commit. Violations are counted over every kill point and must
//! be zero.
//!
//! The same directory is reopened for many kill points (sometimes by another
//! child before the parent checks it, so that recovery also runs in a process
//! that is then killed), so recovery keeps running over tails it truncated and
//! that were then appended over.
//!
//! `kill_after_roll_keeps_records_written_since_a_clean_reopen` is the
//! smallest reproduction of a violation this test found: a stale index file
//! left by a clean close hides records after a kill.
//!
//! 200 kill points by default; `TOLLGATE_CRASH_POINTS` sets the number and
//! `TOLLGATE_CRASH_SEED` replays a run's random choices (the timing of each
//! kill still varies). The first few directories in which a violation was
//! found are kept and their paths printed. The kill points, the kills and the
//! report are the shared driver's (`tests/support/kill.rs`).
#![cfg(unix)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[path = "support/kill.rs"]
mod kill;
use kill::rng::Rng;
use kill::{
    CHILD_LIFETIME, ChildEvent, ChildRun, KillTest, Trigger, child_env, emit, emit_ready, fatal, kill_self,
    run_self_killing_child,
};

use tollgate::{Durability, Engine, Message, Offset, Record, Topic, TopicConfig};

/// Set for the child: the data directory its workload runs on.
const CHILD_ENV: &str = "TOLLGATE_CRASH_CHILD";
/// Set for the child: the kill point's number, which makes its batch ids unique.
const RUN_ENV: &str = "TOLLGATE_CRASH_RUN";
/// The parent's seed (to replay a run), and the child's.
const SEED_ENV: &str = "TOLLGATE_CRASH_SEED";
/// The parent's child and kill points, and how many it prints of the violations found.
const TEST: KillTest = KillTest {
    name: "crash_kill",
    child: "child_workload",
    dir_env: CHILD_ENV,
    run_env: RUN_ENV,
    child_seed_env: SEED_ENV,
    points_env: "TOLLGATE_CRASH_POINTS",
    points_default: 200,
    seed_env: SEED_ENV,
    violations_printed_max: 30,
};

/// Checks (recoveries by the parent) on one directory before a fresh one is
/// started, which bounds how much each check reads.
const CHECKS_PER_DIR: usize = 10;
/// The topics the child writes, one per durability.
const TOPICS: [(&str, Durability); 3] = [
    ("buffered", Durability::Buffered),
    ("interval", Durability::Interval(Duration::from_millis(5))),
    ("sync", Durability::Sync),
];
/// Segment sizes a topic is created with, chosen per directory.
const SEGMENT_BYTES_CHOICES: [u64; 4] = [8 << 10, 16 << 10, 32 << 10, 64 << 10];
/// Consumer groups whose offsets the child commits.
const GROUPS: [&str; 2] = ["billing", "shipping"];
/// The group the parent reads every record with; it never commits.
const SWEEP_GROUP: &str = "crash-sweep";

const WRITERS: u64 = 3;
const BATCH_RECORDS_MAX: u64 = 50;
/// An upper bound on a record entry's size without its padding: entry header,
/// key, headers and payload fields (about 130 bytes at most).
const ENTRY_BYTES_MAX_WITHOUT_PADDING: u64 = 160;
const PADDING_BYTES_MAX: u64 = 256;
/// Records read at random offsets through `Topic::read` per topic per check.
const RANDOM_READS: u64 = 64;

// ---------------------------------------------------------------------------
// The parent: kill points, recovery, checks.

#[test]
#[cfg_attr(miri, ignore)]
fn kill_9_loses_no_acknowledged_record_or_commit() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    TEST.run(Counts::print, |kills, dir, report| {
        let mut model = Model::create(dir, &mut kills.rng);
        for _ in 0..CHECKS_PER_DIR {
            if kills.done() {
                break;
            }
            kills.kill_chain(dir, &[], KillPlan::random, |run| {
                report.record_kill(&run);
                model.absorb(&run, report);
            });
            model.inspect_tails(dir, report);
            if !report.check(|report| model.check(dir, &mut kills.rng, report)) {
                // Later checks would count the same damage again: keep this
                // directory as it is and go on in a fresh one.
                break;
            }
        }
        String::new()
    });
}

/// What a kill plan counts: it kills the child as soon as it has
/// acknowledged so many publishes, or seen so many segment rolls.
#[derive(Debug, Clone, Copy)]
enum Counted {
    Acks,
    Rolls,
}

impl Trigger<Event> for Counted {
    fn counts(self, event: &Event) -> bool {
        matches!((self, event), (Counted::Acks, Event::Ack { .. }) | (Counted::Rolls, Event::Roll))
    }

    fn label(self) -> &'static str {
        match self {
            Counted::Acks => "after N acks",
            Counted::Rolls => "after N segment rolls",
        }
    }
}

/// When the parent kills a child.
type KillPlan = kill::KillPlan<Counted>;

impl KillPlan {
    fn random(rng: &mut Rng) -> KillPlan {
        let delay = Duration::from_micros(rng.below(50_001));
        match rng.below(100) {
            // A child takes about 10 ms to open the engine.
            0..15 => KillPlan::SinceSpawn(Duration::from_micros(rng.below(20_001))),
            15..20 => KillPlan::SinceReady(Duration::from_micros(rng.below(1_001))),
            20..40 => KillPlan::SinceReady(delay),
            40..80 => KillPlan::After(Counted::Acks, rng.log_uniform(1000)),
            _ => KillPlan::After(Counted::Rolls, 1 + rng.below(3)),
        }
    }
}

/// A line the child printed, parsed.
#[derive(Debug, Clone)]
enum Event {
    Ready,
    Ack {
        topic: usize,
        first: u64,
        count: u64,
        batch: String,
    },
    Commit {
        topic: usize,
        group: usize,
        offset: u64,
    },
    Roll,
    /// The child found something wrong: a bad record, a failed operation.
    Failure(String),
}

impl ChildEvent for Event {
    fn parse(line: &str) -> Option<Event> {
        let mut words = line.split(' ');
        let kind = words.next()?;
        let topic = |name: Option<&str>| TOPICS.iter().position(|(t, _)| Some(*t) == name);
        match kind {
            "ready" => Some(Event::Ready),
            "roll" => Some(Event::Roll),
            "ack" => {
                let topic = topic(words.next())?;
                let first = words.next()?.parse().ok()?;
                let count = words.next()?.parse().ok()?;
                let batch = words.next()?.to_owned();
                Some(Event::Ack { topic, first, count, batch })
            }
            "commit" => {
                let topic = topic(words.next())?;
                let group = words.next().and_then(|g| GROUPS.iter().position(|name| *name == g))?;
                let offset = words.next()?.parse().ok()?;
                Some(Event::Commit { topic, group, offset })
            }
            "error" | "bad" => Some(Event::Failure(line.to_owned())),
            // The test harness's own lines.
            _ => None,
        }
    }

    fn is_ready(&self) -> bool {
        matches!(self, Event::Ready)
    }
}

/// One acknowledged publish.
#[derive(Debug, Clone)]
struct Ack {
    first: u64,
    count: u64,
    batch: String,
}

/// What the parent knows about one data directory.
struct Model {
    /// Acknowledged publishes per topic, since the directory was created.
    acks: [Vec<Ack>; 3],
    /// Records acknowledged per topic (the sum of `acks`' counts).
    acked_records: [u64; 3],
    /// The highest acknowledged commit per topic and group.
    commits: HashMap<(usize, usize), u64>,
    /// Each record's payload hash, per topic, as the last check found them:
    /// a recovered record must never change or vanish.
    known: [Vec<u64>; 3],
    /// Records the last check found that were never acknowledged.
    unacked: [u64; 3],
    /// Segment files per topic after the last check.
    segments: [usize; 3],
}

impl Model {
    /// Creates the topics, with segment sizes chosen at random, and closes
    /// the engine cleanly.
    fn create(dir: &Path, rng: &mut Rng) -> Model {
        let engine = Engine::open(dir).expect("open a new directory");
        for (name, durability) in TOPICS {
            let segment_bytes = SEGMENT_BYTES_CHOICES[rng.below(SEGMENT_BYTES_CHOICES.len() as u64) as usize];
            let config = TopicConfig {
                durability,
                segment_bytes,
                max_message_bytes: segment_bytes as usize / 2,
                ..TopicConfig::default()
            };
            engine.create_topic(name, config).expect("create a topic");
        }
        Model {
            acks: Default::default(),
            acked_records: [0; 3],
            commits: HashMap::new(),
            known: Default::default(),
            unacked: [0; 3],
            segments: [1; 3],
        }
    }

    /// Takes in what a child acknowledged and any failure it reported.
    fn absorb(&mut self, run: &ChildRun<Event>, report: &mut Report) {
        for event in &run.events {
            match event {
                Event::Ack { topic, first, count, batch } => {
                    self.acks[*topic].push(Ack { first: *first, count: *count, batch: batch.clone() });
                    self.acked_records[*topic] += count;
                    report.acks_seen += 1;
                }
                Event::Commit { topic, group, offset } => {
                    let max = self.commits.entry((*topic, *group)).or_default();
                    *max = (*max).max(*offset);
                    report.commits_seen += 1;
                }
                Event::Failure(line) => report.violation(format!("the child reported: {line}")),
                Event::Ready | Event::Roll => {}
            }
        }
        if let Some(early) = run.early_exit() {
            report.violation(early);
        }
    }

    /// Looks at the raw files before recovery, to report where kills landed.
    fn inspect_tails(&mut self, dir: &Path, report: &mut Report) {
        for (t, (name, _)) in TOPICS.iter().enumerate() {
            let tail = inspect_tail(&dir.join("topics").join(name));
            if tail.segments > self.segments[t] {
                report.tails.rolled += 1;
            }
            match tail.state {
                TailState::HeaderMissing => report.tails.header_missing += 1,
                TailState::Torn => report.tails.torn += 1,
                TailState::Empty => report.tails.empty += 1,
                TailState::Clean => report.tails.clean += 1,
            }
        }
    }

    /// Recovers the directory and checks every invariant.
    fn check(&mut self, dir: &Path, rng: &mut Rng, report: &mut Report) {
        let engine = match Engine::open(dir) {
            Ok(engine) => engine,
            Err(e) => {
                report.violation(format!("opening the directory after the kill failed: {e}"));
                return;
            }
        };
        for (t, (name, _)) in TOPICS.iter().enumerate() {
            match engine.topic(name) {
                Ok(topic) => {
                    self.check_topic(t, &topic, rng, report);
                    self.segments[t] = topic.info().segments;
                }
                Err(e) => report.violation(format!("{name}: opening the topic after the kill failed: {e}")),
            }
        }
        // Dropping the engine closes it cleanly before the next child.
        drop(engine);
    }

    fn check_topic(&mut self, t: usize, topic: &Topic, rng: &mut Rng, report: &mut Report) {
        let name = TOPICS[t].0;
        let info = topic.info();
        let (oldest, next) = (info.oldest.get(), info.next.get());
        if oldest != 0 {
            report.violation(format!("{name}: the oldest offset is {oldest}, though nothing is ever deleted"));
            return;
        }
        match topic.verify() {
            Ok(n) if n == next => {}
            Ok(n) => report.violation(format!("{name}: verify counted {n} records, the log holds {next}")),
            Err(e) => report.violation(format!("{name}: verify failed: {e}")),
        }
        let records = read_in_order(name, topic, next, report);
        check_batches(name, &records, report);
        self.check_acks(t, &records, next, report);
        self.check_known(t, &records, report);
        check_random_reads(name, topic, &records, next, rng, report);
        self.check_groups(t, topic, next, report);
    }

    /// Every acknowledged record is at its offset.
    fn check_acks(&self, t: usize, records: &[Swept], next: u64, report: &mut Report) {
        let name = TOPICS[t].0;
        for ack in &self.acks[t] {
            report.acks_checked += 1;
            report.acked_records_checked += ack.count;
            for i in 0..ack.count {
                let offset = ack.first + i;
                let found = records.get(offset as usize);
                if let Some(Some((tag, _))) = found
                    && tag.batch == ack.batch
                    && tag.index == i
                    && tag.count == ack.count
                {
                    continue;
                }
                let what = match found {
                    Some(Some((tag, _))) => format!("record {} of {} of batch {}", tag.index, tag.count, tag.batch),
                    Some(None) => "corrupt".to_owned(),
                    None => format!("missing (the log ends at {next})"),
                };
                report.violation(format!(
                    "{name}@{offset}: acknowledged record {i} of {} of batch {} is {what}",
                    ack.count, ack.batch
                ));
                break;
            }
        }
    }

    /// What an earlier recovery kept never changes or vanishes.
    fn check_known(&mut self, t: usize, records: &[Swept], report: &mut Report) {
        let name = TOPICS[t].0;
        for (offset, known) in self.known[t].iter().enumerate() {
            if !matches!(records.get(offset), Some(Some((_, print))) if print == known) {
                report.violation(format!("{name}@{offset}: a record an earlier recovery kept changed or vanished"));
                break;
            }
        }
        self.known[t] = records.iter().map(|r| r.as_ref().map_or(0, |(_, print)| *print)).collect();
        let unacked = (records.len() as u64).saturating_sub(self.acked_records[t]);
        report.unacked_survivors += unacked.saturating_sub(self.unacked[t]);
        self.unacked[t] = unacked;
    }

    /// Group offsets: never ahead of the data, never behind an acknowledged
    /// commit, and reading on from them reaches the end.
    fn check_groups(&self, t: usize, topic: &Topic, next: u64, report: &mut Report) {
        let name = TOPICS[t].0;
        for (g, group) in GROUPS.iter().enumerate() {
            report.commits_checked += 1;
            let mut sub = match topic.subscribe(group) {
                Ok(sub) => sub,
                Err(e) => {
                    report.violation(format!("{name}: subscribing {group} failed: {e}"));
                    continue;
                }
            };
            let committed = sub.committed().get();
            if committed > next {
                report.violation(format!("{name}: {group}'s committed offset {committed} is past the end {next}"));
                continue;
            }
            if let Some(&acked) = self.commits.get(&(t, g))
                && committed < acked
            {
                report.violation(format!(
                    "{name}: {group}'s committed offset {committed} is below its acknowledged commit {acked}"
                ));
            }
            let mut expected = committed;
            loop {
                match sub.next() {
                    Ok(Some(rec)) if rec.offset().get() == expected => expected += 1,
                    Ok(Some(rec)) => {
                        report.violation(format!(
                            "{name}: {group} read offset {} where {expected} was due",
                            rec.offset()
                        ));
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        report.violation(format!("{name}: {group} failed to read at {expected}: {e}"));
                        break;
                    }
                }
            }
            if expected < next {
                report.violation(format!("{name}: {group} stopped reading at {expected}, before the end {next}"));
            }
        }
    }
}

/// A record as reading in order found it: what it says about itself and its
/// payload hash, or `None` if it failed `check_record`.
type Swept = Option<(Tag, u64)>;

/// Reads every record, in order, through a subscription that never commits.
fn read_in_order(name: &str, topic: &Topic, next: u64, report: &mut Report) -> Vec<Swept> {
    let mut records = Vec::new();
    let mut sweep = match topic.subscribe(SWEEP_GROUP) {
        Ok(sweep) => sweep,
        Err(e) => {
            report.violation(format!("{name}: subscribing to read every record failed: {e}"));
            return records;
        }
    };
    loop {
        let expected = records.len() as u64;
        match sweep.next() {
            Ok(Some(rec)) if rec.offset().get() != expected => {
                report.violation(format!(
                    "{name}: reading in order, offset {} came where {expected} was due",
                    rec.offset()
                ));
                break;
            }
            Ok(Some(rec)) => match check_record(&rec, name) {
                Ok((tag, hash)) => records.push(Some((tag, hash))),
                Err(reason) => {
                    report.violation(format!("{name}@{expected}: corrupt record: {reason}"));
                    records.push(None);
                }
            },
            Ok(None) => break,
            Err(e) => {
                report.violation(format!("{name}@{expected}: reading in order failed: {e}"));
                break;
            }
        }
    }
    report.records_checked += records.len() as u64;
    if records.len() as u64 != next {
        report.violation(format!("{name}: read {} records in order, the log holds {next}", records.len()));
    }
    records
}

/// No partial batch: every batch starts with its record 0 and has all of
/// its records at consecutive offsets; and no batch is in the log twice.
fn check_batches(name: &str, records: &[Swept], report: &mut Report) {
    let mut batches = HashSet::new();
    let mut at = 0;
    while at < records.len() {
        let Some((tag, _)) = &records[at] else {
            at += 1;
            continue;
        };
        if tag.index != 0 {
            report.violation(format!(
                "{name}@{at}: batch {} starts at its record {} of {}: a partial batch",
                tag.batch, tag.index, tag.count
            ));
            at += 1;
            continue;
        }
        if !batches.insert(tag.batch.clone()) {
            report.violation(format!("{name}@{at}: batch {} is in the log twice", tag.batch));
        }
        let mut present = 1;
        while present < tag.count
            && matches!(records.get(at + present as usize), Some(Some((other, _)))
                if other.batch == tag.batch && other.index == present && other.count == tag.count)
        {
            present += 1;
        }
        if present < tag.count {
            report.violation(format!(
                "{name}@{at}: batch {} has {present} of its {} records: a partial batch",
                tag.batch, tag.count
            ));
        }
        at += present as usize;
    }
}

/// Random access through `Topic::read` (the index and the seek) returns the
/// same records as reading in order; the first and last records included.
fn check_random_reads(name: &str, topic: &Topic, records: &[Swept], next: u64, rng: &mut Rng, report: &mut Report) {
    if next == 0 {
        return;
    }
    let samples: Vec<u64> = (0..RANDOM_READS).map(|_| rng.below(next)).chain([0, next - 1]).collect();
    for offset in samples {
        report.reads_checked += 1;
        match topic.read(Offset::new(offset)) {
            Ok(rec) => {
                let swept = records.get(offset as usize).and_then(Option::as_ref);
                let hash = check_record(&rec, name).map(|(_, hash)| hash).ok();
                if rec.offset().get() != offset || swept.is_some_and(|(_, print)| Some(*print) != hash) {
                    report.violation(format!("{name}@{offset}: read returned another record than reading in order"));
                }
            }
            Err(e) => report.violation(format!("{name}@{offset}: read failed: {e}")),
        }
    }
}

/// What the newest segment file of a topic looked like after the kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TailState {
    /// Created by a roll, but its header not yet written.
    HeaderMissing,
    /// Its last bytes are part of a frame not completely written.
    Torn,
    /// A header and no frames: just rolled.
    Empty,
    Clean,
}

struct Tail {
    segments: usize,
    state: TailState,
}

/// Walks the frames of a topic's newest segment by their sizes and CRCs
/// (`docs/FORMAT.md`), without the engine.
fn inspect_tail(topic_dir: &Path) -> Tail {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(topic_dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    logs.retain(|p| p.extension().is_some_and(|ext| ext == "log"));
    logs.sort();
    let segments = logs.len();
    let bytes = logs.last().and_then(|p| std::fs::read(p).ok()).unwrap_or_default();
    if bytes.len() < 32 || &bytes[..8] != b"TGLOGSEG" {
        return Tail { segments, state: TailState::HeaderMissing };
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
    let mut position = 32;
    let mut frames = 0;
    let state = loop {
        if position + 8 > bytes.len() {
            break if bytes[position..].iter().all(|&b| b == 0) { TailState::Clean } else { TailState::Torn };
        }
        let len = u32_at(position);
        if len == 0 {
            break if bytes[position..].iter().all(|&b| b == 0) { TailState::Clean } else { TailState::Torn };
        }
        if len < 32
            || position + len > bytes.len()
            || crc32fast::hash(&bytes[position + 8..position + len]) != u32_at(position + 4) as u32
        {
            break TailState::Torn;
        }
        position += len;
        frames += 1;
    };
    let state = if state == TailState::Clean && frames == 0 { TailState::Empty } else { state };
    Tail { segments, state }
}

/// Violations and counts across all kill points.
type Report = kill::Report<Counts>;

/// This test's own counts across all kill points.
#[derive(Default)]
struct Counts {
    acks_seen: u64,
    acks_checked: u64,
    acked_records_checked: u64,
    records_checked: u64,
    reads_checked: u64,
    commits_seen: u64,
    commits_checked: u64,
    unacked_survivors: u64,
    /// Kills by the number of acknowledgements before them: 0, 1-9, 10-99, 100-999, 1000+.
    by_acks: [u64; 5],
    tails: TailCounts,
}

#[derive(Default)]
struct TailCounts {
    rolled: u64,
    header_missing: u64,
    torn: u64,
    empty: u64,
    clean: u64,
}

impl Counts {
    fn record_kill(&mut self, run: &ChildRun<Event>) {
        let acks = run.events.iter().filter(|e| matches!(e, Event::Ack { .. })).count();
        let bucket = match acks {
            0 => 0,
            1..10 => 1,
            10..100 => 2,
            100..1000 => 3,
            _ => 4,
        };
        self.by_acks[bucket] += 1;
    }

    fn print(&self) {
        let t = &self.tails;
        println!(
            "  kills landed by acks before: 0: {}, 1-9: {}, 10-99: {}, 100-999: {}, 1000+: {}",
            self.by_acks[0], self.by_acks[1], self.by_acks[2], self.by_acks[3], self.by_acks[4]
        );
        println!(
            "  newest segments after a kill (per topic): {} rolled since the last check, {} header not yet written, {} no frame yet, {} torn frame at the tail, {} clean",
            t.rolled, t.header_missing, t.empty, t.torn, t.clean
        );
        println!(
            "  {} acks seen, {} ack checks ({} acknowledged records), {} records read in order, {} random reads, {} unacknowledged records kept",
            self.acks_seen,
            self.acks_checked,
            self.acked_records_checked,
            self.records_checked,
            self.reads_checked,
            self.unacked_survivors
        );
        println!("  {} commits acknowledged, {} group offsets checked", self.commits_seen, self.commits_checked);
    }
}

// ---------------------------------------------------------------------------
// The smallest reproduction of a violation the random test found.

/// Set for `child_roll_then_kill`: the data directory it uses.
const ROLL_CHILD_ENV: &str = "TOLLGATE_CRASH_ROLL_CHILD";

/// A clean close writes an index file for the active segment. After a clean
/// reopen that segment takes more frames and is sealed; a kill before the
/// flusher syncs it (which rewrites the index) leaves the old index behind.
/// Recovery scans the sealed segment, but when the segment is loaded later
/// the stale index, whose data end is the end at the clean close, must not
/// hide the frames written after the reopen.
#[test]
#[cfg_attr(miri, ignore)]
fn kill_after_roll_keeps_records_written_since_a_clean_reopen() {
    if std::env::var_os(CHILD_ENV).is_some() || std::env::var_os(ROLL_CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let engine = Engine::open(dir.path()).expect("open");
        let config = TopicConfig { segment_bytes: 4096, max_message_bytes: 1024, ..TopicConfig::default() };
        let topic = engine.create_topic("t", config).expect("create topic");
        for i in 0..5 {
            topic.publish(format!("before close {i}")).expect("publish");
        }
    }
    run_self_killing_child("child_roll_then_kill", ROLL_CHILD_ENV, dir.path());

    let engine = Engine::open(dir.path()).expect("open after the kill");
    let topic = engine.topic("t").expect("topic");
    let info = topic.info();
    assert!(info.segments >= 2, "the child did not roll: {info:?}");
    let next = info.next.get();
    for offset in 0..next {
        let expected =
            if offset < 5 { format!("before close {offset}") } else { format!("after reopen {}", offset - 5) };
        match topic.read(Offset::new(offset)) {
            Ok(rec) => assert_eq!(rec.payload().as_ref(), expected.as_bytes(), "offset {offset}"),
            Err(e) => panic!("offset {offset} of {next}, acknowledged before the kill, cannot be read: {e}"),
        }
    }
    assert_eq!(topic.verify().expect("verify"), next);
}

/// The child of `kill_after_roll_keeps_records_written_since_a_clean_reopen`:
/// reopens the directory, publishes until the segment rolls and once more,
/// then SIGKILLs itself.
#[test]
fn child_roll_then_kill() {
    let Some(dir) = std::env::var_os(ROLL_CHILD_ENV) else { return };
    let engine = Engine::open(&dir).expect("open");
    let topic = engine.topic("t").expect("topic");
    let mut i = 0;
    while topic.info().segments < 2 {
        topic.publish(format!("after reopen {i}")).expect("publish");
        i += 1;
    }
    topic.publish(format!("after reopen {i}")).expect("publish");
    kill_self();
}

// ---------------------------------------------------------------------------
// Self-describing records.

/// What a record says about itself. Its payload reads
/// `P|<topic>|<batch>|<index>|<count>|<meta>|<padding>|<hash>`, the hash (FNV-1a,
/// 16 hex digits) covering everything before it; a record with `meta` has a
/// key and headers derived from the same fields.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tag {
    topic: String,
    /// `<kill point>.<writer>.<sequence>`: unique in a directory.
    batch: String,
    index: u64,
    count: u64,
    meta: bool,
}

impl Tag {
    fn key(&self) -> String {
        format!("{}/{}", self.batch, self.index)
    }

    fn payload(&self, padding_bytes: u64, rng: &mut Rng) -> Vec<u8> {
        let mut text =
            format!("P|{}|{}|{}|{}|{}|", self.topic, self.batch, self.index, self.count, u8::from(self.meta));
        text.extend((0..padding_bytes).map(|_| char::from(b'a' + rng.below(26) as u8)));
        text.push('|');
        let hash = fnv1a(text.as_bytes());
        text.push_str(&format!("{hash:016x}"));
        text.into_bytes()
    }

    fn message(&self, padding_bytes: u64, rng: &mut Rng) -> Message {
        let message = Message::new(self.payload(padding_bytes, rng));
        if !self.meta {
            return message;
        }
        message
            .key(self.key())
            .header("batch", self.batch.clone())
            .header("index", self.index.to_string())
            .header("empty", "")
    }
}

/// Checks a record's payload against its hash and its key and headers
/// against its payload, and that it belongs to `topic`. Returns what the
/// record says about itself and its hash, which identifies it.
fn check_record(rec: &Record, topic: &str) -> Result<(Tag, u64), String> {
    let payload = rec.payload().as_ref();
    let split = payload.iter().rposition(|&b| b == b'|').ok_or("the payload has no hash")?;
    let (body, hash) = (&payload[..=split], &payload[split + 1..]);
    let hash = std::str::from_utf8(hash).ok().and_then(|h| u64::from_str_radix(h, 16).ok());
    let Some(hash) = hash.filter(|&hash| hash == fnv1a(body)) else {
        return Err("the payload's hash does not match".to_owned());
    };
    let body = std::str::from_utf8(body).map_err(|_| "the payload is not UTF-8")?;
    let fields: Vec<&str> = body.split('|').collect();
    let [prefix, record_topic, batch, index, count, meta, _padding, ""] = fields[..] else {
        return Err(format!("the payload has {} fields", fields.len()));
    };
    let number = |s: &str| s.parse::<u64>().map_err(|_| format!("bad number {s:?} in the payload"));
    let tag = Tag {
        topic: record_topic.to_owned(),
        batch: batch.to_owned(),
        index: number(index)?,
        count: number(count)?,
        meta: meta == "1",
    };
    if prefix != "P" || !(1..=BATCH_RECORDS_MAX).contains(&tag.count) || tag.index >= tag.count {
        return Err(format!("the payload's fields make no sense: {tag:?}"));
    }
    if tag.topic != topic {
        return Err(format!("a record of topic {} in topic {topic}", tag.topic));
    }
    let headers: Vec<(&str, &[u8])> = rec.headers().collect();
    if tag.meta {
        let index = tag.index.to_string();
        let expected: [(&str, &[u8]); 3] =
            [("batch", tag.batch.as_bytes()), ("index", index.as_bytes()), ("empty", b"")];
        if rec.key() != Some(tag.key().as_str()) || headers != expected {
            return Err(format!("key {:?} or headers {headers:?} do not match the payload", rec.key()));
        }
    } else if rec.key().is_some() || !headers.is_empty() {
        return Err("a record published without key and headers has some".to_owned());
    }
    Ok((tag, hash))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

// ---------------------------------------------------------------------------
// The child: the workload that gets killed.

/// Runs the workload when the parent started this binary as its child;
/// otherwise (an ordinary `cargo test`) does nothing.
#[test]
fn child_workload() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else { return };
    child::run(Path::new(&dir));
}

mod child {
    use super::*;

    /// Opens the engine, prints `ready`, and publishes and commits until
    /// killed, printing a line after every operation that returned `Ok`.
    pub(super) fn run(dir: &Path) -> ! {
        let (run, seed) = (child_env(RUN_ENV), child_env(SEED_ENV));
        let engine = Engine::open(dir).unwrap_or_else(|e| fatal(format!("open: {e}")));
        let topics: Vec<Topic> = TOPICS
            .iter()
            .map(|(name, _)| engine.topic(name).unwrap_or_else(|e| fatal(format!("open topic {name}: {e}"))))
            .collect();
        let segments: Vec<AtomicUsize> = topics.iter().map(|t| AtomicUsize::new(t.info().segments)).collect();
        emit_ready();
        let deadline = Instant::now() + CHILD_LIFETIME;
        std::thread::scope(|s| {
            for writer in 0..WRITERS {
                let (topics, segments) = (&topics, &segments);
                s.spawn(move || write(writer, topics, segments, run, seed, deadline));
            }
            s.spawn(|| commit(&topics, seed, deadline));
        });
        fatal("was never killed".to_owned())
    }

    /// One writer: publishes at random to the topics until the deadline.
    fn write(writer: u64, topics: &[Topic], segments: &[AtomicUsize], run: u64, seed: u64, deadline: Instant) {
        let mut rng = Rng::new(seed ^ (writer + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let segment_bytes: Vec<u64> = topics.iter().map(|t| t.info().config.segment_bytes).collect();
        let mut sequence = 0;
        while Instant::now() < deadline {
            let t = rng.below(topics.len() as u64) as usize;
            let (topic, name) = (&topics[t], TOPICS[t].0);
            sequence += 1;
            let batch = format!("{run}.{writer}.{sequence}");
            let tag = |index, count, meta| Tag { topic: name.to_owned(), batch: batch.clone(), index, count, meta };
            let kind = rng.below(10);
            let (result, count) = if kind < 6 {
                // Mostly small payloads; now and then one of up to half a segment.
                let padding = if rng.chance(5) {
                    rng.below(segment_bytes[t] / 2 - ENTRY_BYTES_MAX_WITHOUT_PADDING)
                } else {
                    rng.below(PADDING_BYTES_MAX + 1)
                };
                let result = if kind < 4 {
                    topic.publish(tag(0, 1, false).payload(padding, &mut rng))
                } else {
                    topic.publish_message(tag(0, 1, true).message(padding, &mut rng))
                };
                (result.map(Offset::get), 1)
            } else {
                let count = 1 + rng.below(BATCH_RECORDS_MAX);
                // The whole batch stays within a segment.
                let padding_max = ((segment_bytes[t] - 64) / count)
                    .saturating_sub(ENTRY_BYTES_MAX_WITHOUT_PADDING)
                    .min(PADDING_BYTES_MAX);
                let mut messages = Vec::with_capacity(count as usize);
                for index in 0..count {
                    let meta = rng.chance(30);
                    let padding = rng.below(padding_max + 1);
                    messages.push(tag(index, count, meta).message(padding, &mut rng));
                }
                let result = topic.publish_batch(messages).map(|range| {
                    if range.end.get() - range.start.get() != count {
                        fatal(format!("publish_batch of {count} returned {range:?}"));
                    }
                    range.start.get()
                });
                (result, count)
            };
            match result {
                Ok(first) => emit(&format!("ack {name} {first} {count} {batch}")),
                Err(e) => fatal(format!("publish to {name}: {e}")),
            }
            let now = topic.info().segments;
            if segments[t].fetch_max(now, Ordering::Relaxed) < now {
                emit(&format!("roll {name} {now}"));
            }
        }
    }

    /// The consumer groups: read some records, check them, commit.
    fn commit(topics: &[Topic], seed: u64, deadline: Instant) {
        let mut rng = Rng::new(seed ^ 0xC0FF_EE00);
        let mut subs = Vec::new();
        for (t, topic) in topics.iter().enumerate() {
            for group in GROUPS {
                let sub = topic.subscribe(group).unwrap_or_else(|e| fatal(format!("subscribe {group}: {e}")));
                subs.push((t, group, sub));
            }
        }
        while Instant::now() < deadline {
            let (t, group, sub) = &mut subs[rng.below(GROUPS.len() as u64 * topics.len() as u64) as usize];
            let name = TOPICS[*t].0;
            for _ in 0..rng.below(300) {
                let expected = sub.position();
                match sub.next() {
                    Ok(Some(rec)) => {
                        if rec.offset() != expected {
                            emit(&format!("bad {name} {group} read {} where {expected} was due", rec.offset()));
                        }
                        if let Err(reason) = check_record(&rec, name) {
                            emit(&format!("bad {name}@{}: {reason}", rec.offset()));
                        }
                    }
                    Ok(None) => break,
                    Err(e) => fatal(format!("{group} reading {name}: {e}")),
                }
            }
            match sub.commit() {
                Ok(()) => emit(&format!("commit {name} {group} {}", sub.committed())),
                Err(e) => fatal(format!("{group} committing on {name}: {e}")),
            }
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
        }
    }
}
