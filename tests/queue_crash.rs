//! Real `kill -9` crash tests of worker groups.
//!
//! The test runs its own binary again as a child process (`queue_child`, told
//! which data directory to use by `TOLLGATE_QUEUE_CHILD`). The child opens two
//! topics, one `Durability::Sync` and one `Durability::Buffered` (a kill -9
//! keeps the page cache, so every invariant must hold for both), rebuilds a
//! stock count per SKU from their logs, and then, until it is killed:
//!
//! - publishes messages to both, some with a priority, some delayed with
//!   `Message::deliver_after`, some in batches;
//! - runs four workers per topic in one group (3 attempts; a visibility
//!   timeout of 50, 100 or 200 ms and a window of 8, 64 or 65,536 messages,
//!   chosen per directory) that ack most deliveries, nack some (retry after
//!   0-5 ms), reject a few, let a few time out (sleeping past the deadline,
//!   then checking that `ack` fails with `QueueError::Expired`), drop a few,
//!   and extend a few before acking them;
//! - places orders with `Topic::transaction` over `sku:N` locks: a
//!   reservation per SKU and the order in one batch, only while the SKU's
//!   stock (kept in memory, changed only under its lock) is positive, and
//!   restocks SKUs that ran out.
//!
//! It prints a line after each receive (`d`: offset, attempt, when), before
//! each settle (`i`: what it is about to do), and after each settle or
//! publish that returned (`a` acked, `n` nacked, `r` rejected, `x` expired,
//! `k` dropped, `p` published, `t` transaction committed). The parent SIGKILLs
//! it at a random moment (sometimes right after a given kind of `i` line, to
//! land inside an ack or a dead letter), and from time to time reopens the
//! directory in-process and checks, across every restart of it:
//!
//! - nothing acknowledged is delivered again, nor dead-lettered;
//! - attempt numbers never repeat, never exceed `max_attempts`, and every
//!   delivery after a restart has a higher attempt than every attempt printed
//!   before it for that offset;
//! - no message is delivered after it was dead-lettered (a dead letter with
//!   `n` attempts means no attempt above `n`); a dead letter whose `reject`
//!   or last `nack` returned is in the dead-letter topic, with the right
//!   headers, key, payload and at most `max_attempts` attempts;
//! - nothing is delivered before its `deliver_after` time or a nack's retry
//!   time, and an ack before the deadline never fails with `Expired`;
//! - every order is in the log right after its reservations, in one batch,
//!   and vice versa; replaying reservations and restocks from the log never
//!   takes a SKU's stock below zero;
//! - after the last kill on a directory, fresh workers drain the group until
//!   nothing is left: then every offset below the topic's end was acked, or
//!   is in the dead-letter topic, or was being acked when a child was killed
//!   (and never delivered again); a clean reopen finds the group empty.
//!
//! Violations are counted over every kill point and must be zero.
//!
//! `reject_interrupted_after_the_dead_letter_is_not_delivered_again` is the
//! smallest reproduction of a violation this test found: a kill between the
//! dead letter's publish and the journal entry that settles it makes a
//! rejected message come back as a new attempt.
//!
//! 100 kill points by default; `TOLLGATE_QUEUE_KILL_POINTS` sets the number
//! and `TOLLGATE_QUEUE_KILL_SEED` replays a run's random choices (the timing
//! of each kill still varies). The first few directories in which a
//! violation was found are kept and their paths printed. The kill points, the
//! kills and the report are the shared driver's (`tests/support/kill.rs`).
#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "support/kill.rs"]
mod kill;
use kill::rng::Rng;
use kill::{
    CHILD_LIFETIME, ChildEvent, KillTest, Trigger, child_env, emit, emit_ready, fatal, kill_self,
    run_self_killing_child,
};

use tollgate::{
    Durability, Engine, LockError, LockManager, Message, Offset, QueueConfig, QueueError, Record, Topic, TopicConfig,
    Worker,
};

/// Set for the child: the data directory its workload runs on.
const CHILD_ENV: &str = "TOLLGATE_QUEUE_CHILD";
/// Set for the child: the kill point's number, which makes its ids unique.
const RUN_ENV: &str = "TOLLGATE_QUEUE_RUN";
/// Set for the child: its seed.
const CHILD_SEED_ENV: &str = "TOLLGATE_QUEUE_CHILD_SEED";
/// Set for the child: its groups' `QueueConfig`, in text.
const CONFIG_ENV: &str = "TOLLGATE_QUEUE_CONFIG";
/// The parent's child, kill points and seed, and how many it prints of the violations found.
const TEST: KillTest = KillTest {
    name: "queue_crash",
    child: "queue_child",
    dir_env: CHILD_ENV,
    run_env: RUN_ENV,
    child_seed_env: CHILD_SEED_ENV,
    points_env: "TOLLGATE_QUEUE_KILL_POINTS",
    points_default: 100,
    seed_env: "TOLLGATE_QUEUE_KILL_SEED",
    violations_printed_max: 40,
};

/// Kill points on one directory before it is drained, checked a last time
/// and replaced by a fresh one.
const KILLS_PER_DIR: u64 = 10;
/// The topics, one per durability that a kill -9 must not matter to.
const TOPICS: [(&str, Durability); 2] = [("sync", Durability::Sync), ("buffered", Durability::Buffered)];
/// Segment sizes a topic is created with, chosen per directory: small ones
/// make the group's reader cross segments.
const SEGMENT_BYTES_CHOICES: [u64; 3] = [16 << 10, 64 << 10, 1 << 20];
const GROUP: &str = "workers";
/// Visibility timeouts and windows a directory's groups get (the window
/// default, and small ones that fill up).
const VISIBILITY_CHOICES: [&str; 3] = ["50ms", "100ms", "200ms"];
const WINDOW_CHOICES: [usize; 4] = [65_536, 65_536, 64, 8];
const MAX_ATTEMPTS: u32 = 3;
/// What `extend` asks for: long enough that an ack after it never expires.
const EXTEND_BY: Duration = Duration::from_secs(30);
/// Workers per topic in the child.
const WORKERS: u64 = 4;
/// Threads placing orders and restocking, each on a topic chosen per order.
const ORDER_THREADS: u64 = 2;
const SKUS: usize = 4;
/// The publisher waits while its topic's group has this many unsettled messages.
const LAG_MAX: u64 = 300;

/// Draining a directory's groups gives up (a violation) after this long.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// The configuration of the reproductions' groups.
fn queue_config() -> QueueConfig {
    QueueConfig { visibility_timeout: Duration::from_millis(100), max_attempts: MAX_ATTEMPTS, ..QueueConfig::default() }
}

/// A directory's group configuration, in text, chosen at random.
fn random_config(rng: &mut Rng) -> String {
    let visibility = VISIBILITY_CHOICES[rng.below(VISIBILITY_CHOICES.len() as u64) as usize];
    let window = WINDOW_CHOICES[rng.below(WINDOW_CHOICES.len() as u64) as usize];
    format!("visibility_timeout={visibility}, max_attempts={MAX_ATTEMPTS}, window={window}")
}

fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

// ---------------------------------------------------------------------------
// The parent: kill points, checks, drains.

#[test]
#[cfg_attr(miri, ignore)]
fn kill_9_keeps_worker_groups_consistent() {
    if std::env::var_os(CHILD_ENV).is_some() || std::env::var_os(REPRO_CHILD_ENV).is_some() {
        return;
    }
    TEST.run(Counts::print, |kills, dir, report| {
        let mut model = Model::create(dir, &mut kills.rng);
        let mut killed = 0;
        while killed < KILLS_PER_DIR && !kills.done() {
            let config = [(CONFIG_ENV, model.config_text.as_str().into())];
            killed += kills.kill_chain(dir, &config, KillPlan::random, |run| {
                report.child_deliveries +=
                    run.events.iter().filter(|e| matches!(e, Event::Delivered { .. })).count() as u64;
                model.absorb(&run.events, run.early_exit(), report);
            });
            report.check(|report| model.check(dir, report));
        }
        model.finish(dir, report);
        format!(" ({})", model.config_text)
    });
}

/// What a worker is about to do with a delivery (an `i` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    Ack,
    /// Sleep past the deadline, then ack, which must fail with `Expired`.
    Late,
    /// Extend the deadline, sleep past the old one, then ack.
    Extend,
    Nack,
    Reject,
    Drop,
}

impl Intent {
    const ALL: [Intent; 6] = [Intent::Ack, Intent::Late, Intent::Extend, Intent::Nack, Intent::Reject, Intent::Drop];

    fn name(self) -> &'static str {
        match self {
            Intent::Ack => "ack",
            Intent::Late => "late",
            Intent::Extend => "extend",
            Intent::Nack => "nack",
            Intent::Reject => "reject",
            Intent::Drop => "drop",
        }
    }

    fn parse(name: &str) -> Option<Intent> {
        Intent::ALL.into_iter().find(|i| i.name() == name)
    }

    /// Whether the message may be acknowledged if the child dies after this
    /// line and before the outcome's.
    fn may_ack(self) -> bool {
        matches!(self, Intent::Ack | Intent::Extend)
    }
}

/// What a kill plan counts: it kills the child as soon as it has printed
/// so many deliveries, or so many intents of a kind (inside an ack's journal
/// write, or a dead letter's publish).
#[derive(Debug, Clone, Copy)]
enum Counted {
    Deliveries,
    Intents(Intent),
}

impl Trigger<Event> for Counted {
    fn counts(self, event: &Event) -> bool {
        match (self, event) {
            (Counted::Deliveries, Event::Delivered { .. }) => true,
            (Counted::Intents(kind), Event::Intent { intent, .. }) => *intent == kind,
            _ => false,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Counted::Deliveries => "after N deliveries",
            Counted::Intents(_) => "right after N intents (an ack, nack, reject, drop or extend began)",
        }
    }
}

/// When the parent kills a child (this long after spawning it is often while
/// it opens the engine, or its groups).
type KillPlan = kill::KillPlan<Counted>;

impl KillPlan {
    fn random(rng: &mut Rng) -> KillPlan {
        match rng.below(100) {
            0..12 => KillPlan::SinceSpawn(Duration::from_micros(rng.below(60_001))),
            12..40 => KillPlan::SinceReady(Duration::from_micros(rng.below(1_000_001))),
            40..70 => KillPlan::After(Counted::Deliveries, rng.log_uniform(2000)),
            _ => {
                let intent = [Intent::Ack, Intent::Nack, Intent::Reject, Intent::Reject, Intent::Drop, Intent::Extend]
                    [rng.below(6) as usize];
                KillPlan::After(Counted::Intents(intent), 1 + rng.below(3))
            }
        }
    }
}

/// A line the child printed, parsed. `topic` is an index into `TOPICS`.
#[derive(Debug, Clone)]
enum Event {
    Ready,
    /// Plain messages `<id>/0` .. `<id>/<count - 1>` at `first`...
    Published {
        topic: usize,
        first: u64,
        count: u64,
        id: String,
    },
    /// An order (its reservations, then the order) or a restock (`count` 1).
    Transaction {
        topic: usize,
        first: u64,
        count: u64,
        id: String,
    },
    Delivered {
        topic: usize,
        offset: u64,
        attempt: u32,
        at_us: u64,
    },
    Intent {
        topic: usize,
        offset: u64,
        attempt: u32,
        intent: Intent,
    },
    Acked {
        topic: usize,
        offset: u64,
        attempt: u32,
    },
    /// A settle failed with `Expired`.
    Expired {
        topic: usize,
        offset: u64,
        attempt: u32,
    },
    /// `not_before_us` is 0 for a retry at once.
    Nacked {
        topic: usize,
        offset: u64,
        attempt: u32,
        not_before_us: u64,
    },
    Rejected {
        topic: usize,
        offset: u64,
        attempt: u32,
    },
    Dropped {
        topic: usize,
        offset: u64,
        attempt: u32,
    },
    /// The child found something wrong, or an operation failed.
    Failure(String),
}

impl ChildEvent for Event {
    fn parse(line: &str) -> Option<Event> {
        let words: Vec<&str> = line.split(' ').collect();
        let kind = *words.first()?;
        if kind == "bad" || kind == "error" {
            return Some(Event::Failure(line.to_owned()));
        }
        if kind == "ready" {
            return Some(Event::Ready);
        }
        let topic = words.get(1)?.parse::<usize>().ok().filter(|&t| t < TOPICS.len())?;
        let number = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
        let attempt = || words.get(3).and_then(|w| w.parse::<u32>().ok());
        let offset = number(2)?;
        let event = match (kind, words.len()) {
            ("p", 5) => Event::Published { topic, first: offset, count: number(3)?, id: words[4].to_owned() },
            ("t", 5) => Event::Transaction { topic, first: offset, count: number(3)?, id: words[4].to_owned() },
            ("d", 5) => Event::Delivered { topic, offset, attempt: attempt()?, at_us: number(4)? },
            ("i", 5) => Event::Intent { topic, offset, attempt: attempt()?, intent: Intent::parse(words[4])? },
            ("a", 4) => Event::Acked { topic, offset, attempt: attempt()? },
            ("x", 4) => Event::Expired { topic, offset, attempt: attempt()? },
            ("n", 5) => Event::Nacked { topic, offset, attempt: attempt()?, not_before_us: number(4)? },
            ("r", 4) => Event::Rejected { topic, offset, attempt: attempt()? },
            ("k", 4) => Event::Dropped { topic, offset, attempt: attempt()? },
            _ => return Some(Event::Failure(format!("an unreadable line from the child: {line:?}"))),
        };
        Some(event)
    }

    fn is_ready(&self) -> bool {
        matches!(self, Event::Ready)
    }
}

/// Everything known about one offset of a topic, over every child that ran
/// on the directory.
#[derive(Default)]
struct History {
    /// attempt -> (the child that printed it, wall-clock µs after `receive` returned).
    delivered: BTreeMap<u32, (u64, u64)>,
    /// Attempts whose `ack` returned `Ok`.
    acks: Vec<u32>,
    /// Attempts of the dead letters of this offset in the dead-letter topic.
    dead: Vec<u32>,
    /// attempt -> the earliest wall-clock µs the next attempt may be received, after a nack with a delay.
    retry_not_before: BTreeMap<u32, u64>,
    /// Attempts an ack was started for (an `i ack` or `i extend` line).
    ack_started: BTreeSet<u32>,
    /// Attempts whose settle was reported, whatever the outcome.
    settled: BTreeSet<u32>,
    /// Attempts whose `reject` or last `nack` returned `Ok`.
    dead_returned: BTreeSet<u32>,
}

impl History {
    /// The child died during an ack of the last attempt, which may have
    /// happened: the message is acknowledged if it is never seen again.
    /// What happened to the message, for a violation's report.
    fn story(&self) -> String {
        let delivered: Vec<String> =
            self.delivered.iter().map(|(attempt, (child, _))| format!("{attempt} by child {child}")).collect();
        let dead_returned: Vec<u32> = self.dead_returned.iter().copied().collect();
        format!(
            "attempts delivered: [{}]; dead-lettering calls that returned Ok: {dead_returned:?}; dead letters: {:?}",
            delivered.join(", "),
            self.dead
        )
    }

    /// How the dead letter with `attempts` came about, as far as the
    /// children said.
    fn dead_by(&self, attempts: u32) -> &'static str {
        if self.dead_returned.contains(&attempts) {
            " by a reject or nack that returned Ok"
        } else if self.settled.contains(&attempts) {
            " by a receive that gave up on it"
        } else if self.delivered.get(&attempts).is_some_and(|_| attempts < MAX_ATTEMPTS) {
            " by a reject that a kill interrupted"
        } else {
            " by a receive, or a reject or nack that a kill interrupted"
        }
    }

    fn maybe_acked(&self) -> bool {
        self.delivered
            .last_key_value()
            .is_some_and(|(attempt, _)| self.ack_started.contains(attempt) && !self.settled.contains(attempt))
    }
}

/// A record of a topic, as the workload wrote it (its payload, in text).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rec {
    /// `m|<id>`: a plain message.
    Plain(String),
    /// `r|<order>|<sku>`: one unit of `sku` reserved for `order`.
    Reserve { order: String, sku: usize },
    /// `o|<order>|<sku>,<sku>...`: the order, after its reservations.
    Order { order: String, skus: Vec<usize> },
    /// `s|<id>|<sku>|<amount>`: stock added.
    Restock { id: String, sku: usize, amount: i64 },
}

impl Rec {
    fn parse(payload: &[u8]) -> Option<Rec> {
        let text = std::str::from_utf8(payload).ok()?;
        let fields: Vec<&str> = text.split('|').collect();
        let sku = |s: &str| s.parse::<usize>().ok().filter(|&sku| sku < SKUS);
        match fields[..] {
            ["m", id] => Some(Rec::Plain(id.to_owned())),
            ["r", order, s] => Some(Rec::Reserve { order: order.to_owned(), sku: sku(s)? }),
            ["o", order, skus] => {
                let skus: Option<Vec<usize>> = skus.split(',').map(sku).collect();
                Some(Rec::Order { order: order.to_owned(), skus: skus? })
            }
            ["s", id, s, amount] => {
                Some(Rec::Restock { id: id.to_owned(), sku: sku(s)?, amount: amount.parse().ok().filter(|&a| a > 0)? })
            }
            _ => None,
        }
    }
}

/// What the parent knows about one topic of a directory.
#[derive(Default)]
struct TopicModel {
    offsets: HashMap<u64, History>,
    /// Dead letters already taken in from the dead-letter topic.
    dead_letters_read: u64,
    /// Dead letters whose `reject` or last `nack` returned `Ok`, to find in
    /// the dead-letter topic at the next check.
    dead_lines: Vec<(u64, u32)>,
    /// Acknowledged publishes and transactions: (first offset, count, id, transaction).
    published: Vec<(u64, u64, String, bool)>,
    /// The topic's end at the last check.
    end: u64,
}

/// What the parent knows about one data directory.
struct Model {
    /// The groups' configuration, in text (the children get it so).
    config_text: String,
    config: QueueConfig,
    topics: [TopicModel; 2],
    /// How many children (and drains) have run on the directory; the number
    /// of the one being taken in.
    child: u64,
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
                max_message_bytes: segment_bytes as usize / 4,
                ..TopicConfig::default()
            };
            engine.create_topic(name, config).expect("create a topic");
        }
        let config_text = random_config(rng);
        let config = config_text.parse().expect("a valid group configuration");
        Model { config_text, config, topics: Default::default(), child: 0 }
    }

    /// Takes in what a child (or a drain) printed, checking each delivery
    /// and settle against everything known so far.
    fn absorb(&mut self, events: &[Event], early_exit: Option<String>, report: &mut Report) {
        self.child += 1;
        let child = self.child;
        for event in events {
            match *event {
                Event::Ready => {}
                Event::Published { topic, first, count, ref id } => {
                    report.published += count;
                    self.topics[topic].published.push((first, count, id.clone(), false));
                }
                Event::Transaction { topic, first, count, ref id } => {
                    if count == 1 {
                        report.restocks += 1;
                    } else {
                        report.orders += 1;
                    }
                    self.topics[topic].published.push((first, count, id.clone(), true));
                }
                Event::Delivered { topic, offset, attempt, at_us } => {
                    report.deliveries += 1;
                    if attempt > 1 {
                        report.redeliveries += 1;
                    }
                    self.topics[topic].delivered(topic, offset, attempt, child, at_us, report);
                }
                Event::Intent { topic, offset, attempt, intent } => {
                    if intent.may_ack() {
                        self.topics[topic].history(offset).ack_started.insert(attempt);
                    }
                    if intent == Intent::Extend {
                        report.extends += 1;
                    }
                }
                Event::Acked { topic, offset, attempt } => {
                    report.acks += 1;
                    self.topics[topic].history(offset).settled.insert(attempt);
                    self.topics[topic].acked(topic, offset, attempt, report);
                }
                Event::Expired { topic, offset, attempt } => {
                    report.expired += 1;
                    self.topics[topic].history(offset).settled.insert(attempt);
                }
                Event::Nacked { topic, offset, attempt, not_before_us } => {
                    report.nacks += 1;
                    let model = &mut self.topics[topic];
                    model.history(offset).settled.insert(attempt);
                    if attempt >= MAX_ATTEMPTS {
                        model.history(offset).dead_returned.insert(attempt);
                        model.dead_lines.push((offset, attempt));
                    } else if not_before_us > 0 {
                        model.nacked(topic, offset, attempt, not_before_us, report);
                    }
                }
                Event::Rejected { topic, offset, attempt } => {
                    report.rejects += 1;
                    let model = &mut self.topics[topic];
                    model.history(offset).settled.insert(attempt);
                    model.history(offset).dead_returned.insert(attempt);
                    model.dead_lines.push((offset, attempt));
                }
                Event::Dropped { topic, offset, attempt } => {
                    report.drops += 1;
                    self.topics[topic].history(offset).settled.insert(attempt);
                }
                Event::Failure(ref line) => report.violation(format!("the child reported: {line}")),
            }
        }
        if let Some(early) = early_exit {
            report.violation(early);
        }
    }

    /// Reopens the directory and checks the logs, the dead letters, and the
    /// deliveries against them.
    fn check(&mut self, dir: &Path, report: &mut Report) {
        let engine = match Engine::open(dir) {
            Ok(engine) => engine,
            Err(e) => {
                report.violation(format!("opening the directory after the kill failed: {e}"));
                return;
            }
        };
        let names = engine.topics().unwrap_or_default();
        for (t, (name, _)) in TOPICS.iter().enumerate() {
            let topic = match engine.topic(name) {
                Ok(topic) => topic,
                Err(e) => {
                    report.violation(format!("{name}: opening the topic after the kill failed: {e}"));
                    continue;
                }
            };
            let dead_letters = if names.contains(&dead_letter_topic(name)) {
                match engine.topic(&dead_letter_topic(name)) {
                    Ok(topic) => Some(topic),
                    Err(e) => {
                        report.violation(format!("{name}: opening the dead-letter topic failed: {e}"));
                        None
                    }
                }
            } else {
                None
            };
            self.topics[t].check(t, &topic, dead_letters.as_ref(), report);
        }
    }

    /// After the last kill on the directory: drains both groups with fresh
    /// workers, checks everything once more, checks that every offset was
    /// acknowledged or dead-lettered, and that a clean reopen finds nothing.
    fn finish(&mut self, dir: &Path, report: &mut Report) {
        let events = match drain(dir, &self.config) {
            Ok(events) => events,
            Err(e) => {
                report.violation(e);
                return;
            }
        };
        report.drained += events.iter().filter(|e| matches!(e, Event::Delivered { .. })).count() as u64;
        self.absorb(&events, None, report);
        report.check(|report| self.check(dir, report));
        for (t, (name, _)) in TOPICS.iter().enumerate() {
            let model = &self.topics[t];
            for offset in 0..model.end {
                report.offsets_settled += 1;
                let history = model.offsets.get(&offset);
                match history {
                    Some(h) if !h.acks.is_empty() || !h.dead.is_empty() => {}
                    Some(h) if h.maybe_acked() => report.maybe_acked += 1,
                    _ => {
                        let attempts: Vec<u32> =
                            history.map(|h| h.delivered.keys().copied().collect()).unwrap_or_default();
                        report.violation(format!(
                            "{name}@{offset}: lost: after the drain it was neither acknowledged nor dead-lettered (attempts delivered: {attempts:?})"
                        ));
                    }
                }
            }
        }
        // A clean reopen: nothing left to deliver, nothing unsettled.
        let engine = match Engine::open(dir) {
            Ok(engine) => engine,
            Err(e) => {
                report.violation(format!("reopening the drained directory failed: {e}"));
                return;
            }
        };
        for (name, _) in TOPICS {
            let worker = match engine.topic(name).and_then(|topic| topic.worker_with(GROUP, self.config.clone())) {
                Ok(worker) => worker,
                Err(e) => {
                    report.violation(format!("{name}: opening the drained group failed: {e}"));
                    continue;
                }
            };
            match worker.receive(Duration::ZERO) {
                Ok(None) => {}
                Ok(Some(d)) => report.violation(format!(
                    "{name}@{}: delivered (attempt {}) after a drain and a clean reopen",
                    d.offset(),
                    d.attempt()
                )),
                Err(e) => report.violation(format!("{name}: receive after the drain failed: {e}")),
            }
            let lag = worker.metrics().lag;
            if lag != 0 {
                report.violation(format!("{name}: after a drain and a clean reopen, {lag} messages are unsettled"));
            }
        }
    }
}

impl TopicModel {
    fn history(&mut self, offset: u64) -> &mut History {
        self.offsets.entry(offset).or_default()
    }

    fn delivered(&mut self, t: usize, offset: u64, attempt: u32, child: u64, at_us: u64, report: &mut Report) {
        let name = TOPICS[t].0;
        let h = self.history(offset);
        let mut problems = Vec::new();
        if attempt == 0 || attempt > MAX_ATTEMPTS {
            problems.push(format!("attempt {attempt} is outside 1..={MAX_ATTEMPTS}"));
        }
        if h.delivered.contains_key(&attempt) {
            problems.push(format!("attempt {attempt} was delivered twice"));
        }
        if let Some((&before, &(other, _))) = h.delivered.iter().rev().find(|(_, (c, _))| *c < child)
            && before >= attempt
        {
            problems.push(format!(
                "attempt {attempt} after a restart, where the process before had delivered attempt {before} (children {other} and {child}): attempts went back"
            ));
        }
        if let Some(acked) = h.acks.iter().find(|&&a| a < attempt) {
            problems.push(format!("delivered as attempt {attempt} after attempt {acked} was acknowledged"));
        }
        if let Some(&dead) = h.dead.iter().find(|&&d| d < attempt) {
            problems.push(format!(
                "delivered as attempt {attempt} after it was dead-lettered with {dead} attempts{}",
                h.dead_by(dead)
            ));
        }
        if let Some(&not_before) = attempt.checked_sub(1).and_then(|before| h.retry_not_before.get(&before))
            && at_us < not_before
        {
            problems.push(format!(
                "attempt {attempt} came {} µs before the retry time of the nack of attempt {}",
                not_before - at_us,
                attempt - 1
            ));
        }
        h.delivered.insert(attempt, (child, at_us));
        for problem in problems {
            report.violation(format!("{name}@{offset}: {problem} ({})", h.story()));
        }
    }

    fn acked(&mut self, t: usize, offset: u64, attempt: u32, report: &mut Report) {
        let name = TOPICS[t].0;
        let h = self.history(offset);
        let mut problems = Vec::new();
        if !h.delivered.contains_key(&attempt) {
            problems.push(format!("attempt {attempt} was acknowledged but its delivery was never printed"));
        }
        if let Some(other) = h.acks.first() {
            problems.push(format!("acknowledged twice: attempts {other} and {attempt}"));
        }
        if let Some((later, _)) = h.delivered.range(attempt + 1..).next() {
            problems.push(format!("attempt {attempt} was acknowledged, and attempt {later} delivered"));
        }
        if let Some(&dead) = h.dead.first() {
            problems.push(format!(
                "attempt {attempt} was acknowledged, and it is dead-lettered with {dead} attempts{}",
                h.dead_by(dead)
            ));
        }
        h.acks.push(attempt);
        for problem in problems {
            report.violation(format!("{name}@{offset}: {problem} ({})", h.story()));
        }
    }

    fn nacked(&mut self, t: usize, offset: u64, attempt: u32, not_before_us: u64, report: &mut Report) {
        let h = self.history(offset);
        h.retry_not_before.insert(attempt, not_before_us);
        if let Some(&(_, at_us)) = h.delivered.get(&(attempt + 1))
            && at_us < not_before_us
        {
            report.violation(format!(
                "{}@{offset}: attempt {} came {} µs before the retry time of the nack of attempt {attempt}",
                TOPICS[t].0,
                attempt + 1,
                not_before_us - at_us
            ));
        }
    }

    fn dead_lettered(&mut self, t: usize, offset: u64, attempts: u32, report: &mut Report) {
        let name = TOPICS[t].0;
        let h = self.history(offset);
        let mut problems = Vec::new();
        if attempts == 0 || attempts > MAX_ATTEMPTS {
            problems.push(format!("dead-lettered with {attempts} attempts, outside 1..={MAX_ATTEMPTS}"));
        }
        if !h.dead.is_empty() {
            report.duplicate_dead_letters += 1;
        }
        let by = h.dead_by(attempts);
        if let Some((later, _)) = h.delivered.range(attempts + 1..).next() {
            problems.push(format!("dead-lettered with {attempts} attempts{by}, and attempt {later} delivered"));
        }
        if let Some(acked) = h.acks.first() {
            problems.push(format!("dead-lettered with {attempts} attempts{by}, and attempt {acked} acknowledged"));
        }
        h.dead.push(attempts);
        for problem in problems {
            report.violation(format!("{name}@{offset}: {problem} ({})", h.story()));
        }
    }

    /// Reads the topic and its dead letters after a kill.
    fn check(&mut self, t: usize, topic: &Topic, dead_letters: Option<&Topic>, report: &mut Report) {
        let name = TOPICS[t].0;
        let end = topic.info().next.get();
        if end < self.end {
            report.violation(format!("{name}: the log ends at {end}, where an earlier check found {}", self.end));
        }
        self.end = end;
        let mut records = Vec::with_capacity(end as usize);
        for offset in 0..end {
            match topic.read(Offset::new(offset)) {
                Ok(record) => records.push(Some(record)),
                Err(e) => {
                    report.violation(format!("{name}@{offset}: reading failed: {e}"));
                    records.push(None);
                }
            }
        }
        report.records_checked += end;
        let parsed: Vec<Option<Rec>> = records
            .iter()
            .enumerate()
            .map(|(offset, record)| {
                let rec = record.as_ref().and_then(|r| Rec::parse(r.payload()));
                if record.is_some() && rec.is_none() {
                    report.violation(format!("{name}@{offset}: a record the workload did not write"));
                }
                rec
            })
            .collect();
        check_orders(name, &parsed, report);
        self.check_published(name, &parsed, report);
        if let Some(max) = self.offsets.iter().filter(|(_, h)| !h.delivered.is_empty()).map(|(&o, _)| o).max()
            && max >= end
        {
            report.violation(format!("{name}@{max}: delivered, but the log ends at {end} after recovery"));
        }
        if let Some(dead_letters) = dead_letters {
            self.check_dead_letters(t, dead_letters, &records, report);
        }
        for (offset, attempt) in std::mem::take(&mut self.dead_lines) {
            report.dead_lines += 1;
            let found = self.offsets.get(&offset).is_some_and(|h| h.dead.contains(&attempt));
            if !found {
                report.violation(format!(
                    "{name}@{offset}: attempt {attempt} was dead-lettered (the call returned Ok), but the dead-letter topic does not have it"
                ));
            }
        }
    }

    /// Every acknowledged publish and transaction is in the log, where it said.
    fn check_published(&self, name: &str, records: &[Option<Rec>], report: &mut Report) {
        for (first, count, id, transaction) in &self.published {
            let at = |i: u64| records.get((first + i) as usize).and_then(Option::as_ref);
            let ok = if !transaction {
                (0..*count).all(|i| at(i) == Some(&Rec::Plain(format!("{id}/{i}"))))
            } else if *count == 1 {
                matches!(at(0), Some(Rec::Restock { id: found, .. }) if found == id)
            } else {
                (0..count - 1).all(|i| matches!(at(i), Some(Rec::Reserve { order, .. }) if order == id))
                    && matches!(at(count - 1), Some(Rec::Order { order, .. }) if order == id)
            };
            if !ok {
                report.violation(format!("{name}@{first}: acknowledged publish {id} ({count} records) is not there"));
            }
        }
    }

    /// Takes in the dead letters added since the last check, checking their
    /// headers and contents.
    fn check_dead_letters(&mut self, t: usize, dead_letters: &Topic, records: &[Option<Record>], report: &mut Report) {
        let name = TOPICS[t].0;
        let end = dead_letters.info().next.get();
        if end < self.dead_letters_read {
            report.violation(format!(
                "{name}: the dead-letter topic ends at {end}, where an earlier check found {}",
                self.dead_letters_read
            ));
        }
        for at in self.dead_letters_read..end {
            let dead = match dead_letters.read(Offset::new(at)) {
                Ok(dead) => dead,
                Err(e) => {
                    report.violation(format!("{name}.dlq@{at}: reading failed: {e}"));
                    continue;
                }
            };
            report.dead_letters += 1;
            let text = |header: &str| dead.header(header).and_then(|v| std::str::from_utf8(v).ok());
            let number = |header: &str| text(header).and_then(|v| v.parse::<u64>().ok());
            let (Some(offset), Some(attempts)) = (number("tollgate.dlq.offset"), number("tollgate.dlq.attempts"))
            else {
                report.violation(format!("{name}.dlq@{at}: no offset or attempts header"));
                continue;
            };
            let mut problems = Vec::new();
            if text("tollgate.dlq.topic") != Some(name) {
                problems.push(format!("topic header {:?}", text("tollgate.dlq.topic")));
            }
            if text("tollgate.dlq.group") != Some(GROUP) {
                problems.push(format!("group header {:?}", text("tollgate.dlq.group")));
            }
            if text("tollgate.dlq.reason").is_none_or(str::is_empty) {
                problems.push("no reason".to_owned());
            }
            match records.get(offset as usize) {
                Some(Some(original)) => {
                    if original.payload() != dead.payload()
                        || original.key() != dead.key()
                        || original.header("h") != dead.header("h")
                        || original.priority() != dead.priority()
                    {
                        problems.push("its payload, key, headers or priority differ from the message's".to_owned());
                    }
                }
                Some(None) => {}
                None => problems.push(format!("offset {offset} is past the log's end {}", records.len())),
            }
            for problem in problems {
                report.violation(format!("{name}.dlq@{at} (of {name}@{offset}): {problem}"));
            }
            let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
            self.dead_lettered(t, offset, attempts, report);
        }
        self.dead_letters_read = self.dead_letters_read.max(end);
    }
}

/// Every order comes right after its reservations, one per SKU, and every
/// reservation is followed by its order; replaying reservations and
/// restocks never takes a SKU's stock below zero.
fn check_orders(name: &str, records: &[Option<Rec>], report: &mut Report) {
    let mut stock = [0i64; SKUS];
    let mut at = 0;
    while at < records.len() {
        match &records[at] {
            Some(Rec::Reserve { order, .. }) => {
                let mut skus = Vec::new();
                let mut next = at;
                while let Some(Some(Rec::Reserve { order: o, sku })) = records.get(next)
                    && o == order
                {
                    skus.push(*sku);
                    next += 1;
                }
                for &sku in &skus {
                    stock[sku] -= 1;
                    if stock[sku] < 0 {
                        let left = stock[sku];
                        report.violation(format!("{name}@{at}: order {order} oversold sku:{sku} (stock {left})"));
                    }
                }
                match records.get(next) {
                    Some(Some(Rec::Order { order: o, skus: ordered })) if o == order && *ordered == skus => {
                        report.orders_checked += 1;
                        at = next + 1;
                    }
                    _ => {
                        report.violation(format!(
                            "{name}@{at}: the reservations of order {order} are not followed by the order"
                        ));
                        at = next;
                    }
                }
            }
            Some(Rec::Order { order, .. }) => {
                report.violation(format!("{name}@{at}: order {order} without its reservations right before it"));
                at += 1;
            }
            Some(Rec::Restock { sku, amount, .. }) => {
                stock[*sku] += amount;
                at += 1;
            }
            Some(Rec::Plain(_)) | None => at += 1,
        }
    }
}

/// Drains both groups of a killed directory with fresh workers (four per
/// topic, acking everything) until nothing is left unsettled, and returns
/// what they did as events, like a child's.
fn drain(dir: &Path, config: &QueueConfig) -> Result<Vec<Event>, String> {
    let engine = Engine::open(dir).map_err(|e| format!("opening the directory to drain it failed: {e}"))?;
    let events = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for (t, (name, _)) in TOPICS.iter().enumerate() {
            let worker = match engine.topic(name).and_then(|topic| topic.worker_with(GROUP, config.clone())) {
                Ok(worker) => worker,
                Err(e) => {
                    failures.lock().unwrap().push(format!("{name}: opening the group to drain it failed: {e}"));
                    continue;
                }
            };
            for _ in 0..WORKERS {
                let (worker, events, failures) = (worker.clone(), &events, &failures);
                s.spawn(move || {
                    let fail = |what: String| failures.lock().unwrap().push(format!("{name} (drain): {what}"));
                    let push = |event| events.lock().unwrap().push(event);
                    loop {
                        let delivery = match worker.receive(Duration::from_millis(20)) {
                            Ok(Some(delivery)) => delivery,
                            Ok(None) if worker.metrics().lag == 0 => return,
                            Ok(None) if started.elapsed() > DRAIN_LIMIT => {
                                let m = worker.metrics();
                                return fail(format!("not drained after {DRAIN_LIMIT:?}: {m:?}"));
                            }
                            Ok(None) => continue,
                            Err(e) => return fail(format!("receive failed: {e}")),
                        };
                        let (offset, attempt) = (delivery.offset().get(), delivery.attempt());
                        let at_us = now_us();
                        push(Event::Delivered { topic: t, offset, attempt, at_us });
                        if let Some(at) = delivery.record().deliver_at_us()
                            && at_us < at
                        {
                            fail(format!("offset {offset} delivered {} µs before its delivery time", at - at_us));
                        }
                        push(Event::Intent { topic: t, offset, attempt, intent: Intent::Ack });
                        let deadline = delivery.deadline();
                        match delivery.ack() {
                            Ok(()) => push(Event::Acked { topic: t, offset, attempt }),
                            Err(QueueError::Expired { .. }) => {
                                if Instant::now() < deadline {
                                    fail(format!("the ack of offset {offset} expired before its deadline"));
                                }
                                push(Event::Expired { topic: t, offset, attempt });
                            }
                            Err(e) => fail(format!("the ack of offset {offset} failed: {e}")),
                        }
                    }
                });
            }
        }
    });
    let failures = failures.into_inner().unwrap();
    if let Some(first) = failures.first() {
        return Err(first.clone());
    }
    Ok(events.into_inner().unwrap())
}

/// Violations and counts across all kill points.
type Report = kill::Report<Counts>;

/// This test's own counts across all kill points.
#[derive(Default)]
struct Counts {
    /// Deliveries the children printed before they were killed.
    child_deliveries: u64,
    deliveries: u64,
    redeliveries: u64,
    drained: u64,
    acks: u64,
    nacks: u64,
    rejects: u64,
    expired: u64,
    drops: u64,
    extends: u64,
    /// `reject`s and last `nack`s that returned, looked up in the dead-letter topic.
    dead_lines: u64,
    dead_letters: u64,
    duplicate_dead_letters: u64,
    maybe_acked: u64,
    offsets_settled: u64,
    published: u64,
    orders: u64,
    restocks: u64,
    orders_checked: u64,
    records_checked: u64,
}

impl Counts {
    fn print(&self) {
        println!(
            "  {} deliveries checked ({} printed by children before their kill, {} redeliveries, {} by drains): {} acks, {} nacks, {} rejects, {} expired, {} drops, {} extends",
            self.deliveries,
            self.child_deliveries,
            self.redeliveries,
            self.drained,
            self.acks,
            self.nacks,
            self.rejects,
            self.expired,
            self.drops,
            self.extends
        );
        println!(
            "  {} dead letters ({} duplicates), {} returned dead-letterings found there; {} offsets checked settled after drains ({} by an ack a kill interrupted)",
            self.dead_letters, self.duplicate_dead_letters, self.dead_lines, self.offsets_settled, self.maybe_acked
        );
        println!(
            "  {} messages published, {} orders and {} restocks committed, {} orders checked in the logs, {} records read",
            self.published, self.orders, self.restocks, self.orders_checked, self.records_checked
        );
    }
}

// ---------------------------------------------------------------------------
// The smallest reproduction of a violation the random test found.

/// Set for `repro_child`: the data directory it uses.
const REPRO_CHILD_ENV: &str = "TOLLGATE_QUEUE_REPRO_CHILD";
/// Tries of the reproduction: each needs its kill to land in a window of
/// about a sync's length.
const REPRO_TRIES: u32 = 20;

/// A worker rejects a message (attempt 1 of 3). `reject` publishes the dead
/// letter, syncs the dead-letter topic, and only then writes the journal
/// entry that settles the message. The child's other thread SIGKILLs the
/// process as soon as the dead letter is visible, which is almost always
/// before that entry. Without a record of the rejection in the journal, the
/// restarted group knew nothing of the dead letter and delivered the message
/// again, as attempt 2, although it was in the dead-letter topic. It must
/// instead dead-letter it again (a duplicate, as the README allows), or
/// leave it settled if the settle was journaled before the kill.
#[test]
#[cfg_attr(miri, ignore)]
fn reject_interrupted_after_the_dead_letter_is_not_delivered_again() {
    if std::env::var_os(CHILD_ENV).is_some() || std::env::var_os(REPRO_CHILD_ENV).is_some() {
        return;
    }
    // Tries in which the kill fell between the dead letter and its settle.
    let mut in_window = 0;
    for try_number in 1..=REPRO_TRIES {
        let dir = tempfile::tempdir().expect("temporary directory");
        {
            let engine = Engine::open(dir.path()).expect("open");
            engine.create_topic("t", TopicConfig::default()).expect("create topic");
        }
        run_self_killing_child("repro_child", REPRO_CHILD_ENV, dir.path());

        let engine = Engine::open(dir.path()).expect("open after the kill");
        let dead = engine.topic(&dead_letter_topic("t")).expect("dead-letter topic");
        assert_eq!(dead.info().next.get(), 1, "the child is killed only once the dead letter is visible");
        let worker = engine.topic("t").expect("topic").worker_with(GROUP, queue_config()).expect("worker");
        if let Some(delivery) = worker.receive(Duration::from_millis(50)).expect("receive") {
            panic!(
                "offset {} is in the dead-letter topic (rejected at attempt 1), and was delivered again as attempt {} (try {try_number})",
                delivery.offset(),
                delivery.attempt()
            );
        }
        assert_eq!(worker.metrics().lag, 0, "the rejected message is settled after the restart");
        if dead.info().next.get() == 2 {
            in_window += 1;
        }
    }
    println!("the kill fell between the dead letter and its settle in {in_window} of {REPRO_TRIES} tries");
}

/// The child of the reproduction: receives the only message, and rejects
/// it while another thread waits for the dead letter to appear and then
/// SIGKILLs the process.
#[test]
fn repro_child() {
    let Some(dir) = std::env::var_os(REPRO_CHILD_ENV) else { return };
    let engine = Engine::open(&dir).expect("open");
    let topic = engine.topic("t").expect("topic");
    topic.publish("the message").expect("publish");
    let worker = topic.worker_with(GROUP, queue_config()).expect("worker");
    let dead = engine.topic(&dead_letter_topic("t")).expect("dead-letter topic");
    let delivery = worker.receive(Duration::from_secs(5)).expect("receive").expect("the message");
    assert_eq!(delivery.attempt(), 1);
    std::thread::scope(|s| {
        s.spawn(|| {
            while dead.info().next.get() == 0 {
                std::hint::spin_loop();
            }
            kill_self();
        });
        let _ = delivery.reject("rejected by the reproduction");
        // The settle was journaled before the kill: nothing to reproduce.
        kill_self();
    });
}

// ---------------------------------------------------------------------------
// The child: the workload that gets killed.

/// Runs the workload when the parent started this binary as its child;
/// otherwise (an ordinary `cargo test`) does nothing.
#[test]
fn queue_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else { return };
    child::run(Path::new(&dir));
}

mod child {
    use super::*;

    /// Opens the engine, its topics and groups, rebuilds the stock from the
    /// logs, prints `ready`, and works until killed.
    pub(super) fn run(dir: &Path) -> ! {
        let (run, seed) = (child_env(RUN_ENV), child_env(CHILD_SEED_ENV));
        let config: QueueConfig = std::env::var(CONFIG_ENV)
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| fatal(format!("{CONFIG_ENV} is not set or not valid")));
        let engine = Engine::open(dir).unwrap_or_else(|e| fatal(format!("open: {e}")));
        let topics: Vec<Topic> = TOPICS
            .iter()
            .map(|(name, _)| engine.topic(name).unwrap_or_else(|e| fatal(format!("open topic {name}: {e}"))))
            .collect();
        let stock: Vec<Vec<AtomicI64>> = topics.iter().map(rebuild_stock).collect();
        let workers: Vec<Worker> = topics
            .iter()
            .map(|topic| {
                topic.worker_with(GROUP, config.clone()).unwrap_or_else(|e| fatal(format!("open the group: {e}")))
            })
            .collect();
        emit_ready();
        let locks = LockManager::new();
        let deadline = Instant::now() + CHILD_LIFETIME;
        std::thread::scope(|s| {
            for t in 0..TOPICS.len() {
                for w in 0..WORKERS {
                    let worker = workers[t].clone();
                    let rng = Rng::new(seed ^ (t as u64 * 16 + w + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    s.spawn(move || work(t, &worker, rng, deadline));
                }
                let (topic, worker) = (&topics[t], &workers[t]);
                let rng = Rng::new(seed ^ (t as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
                s.spawn(move || publish(t, topic, worker, run, rng, deadline));
            }
            let shop =
                Shop { topics: &topics, workers: &workers, stock: &stock, locks: &locks, run, lifetime: deadline };
            for x in 0..ORDER_THREADS {
                let rng = Rng::new(seed ^ (x + 1).wrapping_mul(0x8CB9_2BA7_2F3D_8DD7));
                s.spawn(move || order(x, shop, rng));
            }
        });
        fatal("was never killed".to_owned())
    }

    /// Each SKU's stock: what restocks added, less what reservations took.
    fn rebuild_stock(topic: &Topic) -> Vec<AtomicI64> {
        let mut stock = [0i64; SKUS];
        for offset in 0..topic.info().next.get() {
            let record = topic.read(Offset::new(offset)).unwrap_or_else(|e| fatal(format!("read {offset}: {e}")));
            match Rec::parse(record.payload()) {
                Some(Rec::Restock { sku, amount, .. }) => stock[sku] += amount,
                Some(Rec::Reserve { sku, .. }) => stock[sku] -= 1,
                _ => {}
            }
        }
        for (sku, &count) in stock.iter().enumerate() {
            if count < 0 {
                emit(&format!("bad {}: sku:{sku} has a stock of {count} in the log", topic.name()));
            }
        }
        stock.into_iter().map(AtomicI64::new).collect()
    }

    /// One worker: receives and settles, in every way, until the deadline.
    fn work(t: usize, worker: &Worker, mut rng: Rng, lifetime: Instant) {
        while Instant::now() < lifetime {
            let delivery = match worker.receive(Duration::from_millis(50)) {
                Ok(Some(delivery)) => delivery,
                Ok(None) => continue,
                Err(e) => fatal(format!("receive on topic {t}: {e}")),
            };
            let (offset, attempt) = (delivery.offset().get(), delivery.attempt());
            let at_us = now_us();
            emit(&format!("d {t} {offset} {attempt} {at_us}"));
            if let Some(at) = delivery.record().deliver_at_us()
                && at_us < at
            {
                emit(&format!("bad {t} {offset}: delivered {} µs before its delivery time", at - at_us));
            }
            let intent = match rng.below(100) {
                0..68 => Intent::Ack,
                68..80 => Intent::Nack,
                80..84 => Intent::Reject,
                84..89 => Intent::Late,
                89..95 => Intent::Drop,
                _ => Intent::Extend,
            };
            emit(&format!("i {t} {offset} {attempt} {}", intent.name()));
            let mut deadline = delivery.deadline();
            // What the settle returned, and the line that says it returned Ok.
            let (result, ok_line) = match intent {
                Intent::Ack => {
                    if rng.chance(20) {
                        std::thread::sleep(Duration::from_micros(rng.below(2000)));
                    }
                    (delivery.ack(), format!("a {t} {offset} {attempt}"))
                }
                Intent::Nack => {
                    let retry = Duration::from_micros(rng.below(5001));
                    let not_before = if retry.is_zero() { 0 } else { now_us() + retry.as_micros() as u64 };
                    (delivery.nack(retry, "nacked by the test"), format!("n {t} {offset} {attempt} {not_before}"))
                }
                Intent::Reject => (delivery.reject("rejected by the test"), format!("r {t} {offset} {attempt}")),
                Intent::Late => {
                    sleep_past(deadline);
                    match delivery.ack() {
                        Err(QueueError::Expired { .. }) => {}
                        Ok(()) => {
                            emit(&format!("bad {t} {offset}: an ack after the visibility deadline returned Ok"));
                            emit(&format!("a {t} {offset} {attempt}"));
                            continue;
                        }
                        Err(e) => fatal(format!("late ack on topic {t}: {e}")),
                    }
                    // Expired, as it must be.
                    emit(&format!("x {t} {offset} {attempt}"));
                    continue;
                }
                Intent::Drop => {
                    drop(delivery);
                    emit(&format!("k {t} {offset} {attempt}"));
                    continue;
                }
                Intent::Extend => {
                    let mut delivery = delivery;
                    let old = deadline;
                    match delivery.extend(EXTEND_BY) {
                        Ok(()) => {
                            deadline = delivery.deadline();
                            sleep_past(old);
                            (delivery.ack(), format!("a {t} {offset} {attempt}"))
                        }
                        Err(e) => (Err(e), String::new()),
                    }
                }
            };
            match result {
                Ok(()) => emit(&ok_line),
                Err(QueueError::Expired { .. }) => {
                    // Only legitimate once the deadline has passed (looked at
                    // after the call, so never a false alarm).
                    if Instant::now() < deadline {
                        emit(&format!("bad {t} {offset}: {} returned Expired before the deadline", intent.name()));
                    }
                    emit(&format!("x {t} {offset} {attempt}"));
                }
                Err(e) => fatal(format!("{} on topic {t}: {e}", intent.name())),
            }
        }
    }

    /// Sleeps until `deadline` has passed.
    fn sleep_past(deadline: Instant) {
        while Instant::now() <= deadline {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(1));
        }
    }

    /// Publishes plain messages (some with a priority, some delayed, some in
    /// batches) while the group keeps up.
    fn publish(t: usize, topic: &Topic, worker: &Worker, run: u64, mut rng: Rng, lifetime: Instant) {
        let mut sequence = 0;
        while Instant::now() < lifetime {
            if worker.metrics().lag > LAG_MAX {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            sequence += 1;
            let id = format!("{run}.{t}.{sequence}");
            let count = if rng.chance(15) { 2 + rng.below(3) } else { 1 };
            let messages: Vec<Message> = (0..count)
                .map(|i| {
                    let mut message =
                        Message::new(format!("m|{id}/{i}")).key(format!("m.{id}")).header("h", id.clone());
                    if rng.chance(25) {
                        message = message.priority(1 + rng.below(9) as u8);
                    }
                    if rng.chance(15) {
                        message = message.deliver_after(Duration::from_micros(1000 + rng.below(30_000)));
                    }
                    message
                })
                .collect();
            let first = if count == 1 {
                topic.publish_message(messages.into_iter().next().expect("one message"))
            } else {
                topic.publish_batch(messages).map(|range| range.start)
            };
            match first {
                Ok(first) => emit(&format!("p {t} {first} {count} {id}")),
                Err(e) => fatal(format!("publish to topic {t}: {e}")),
            }
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
        }
    }

    /// What the order threads share.
    #[derive(Clone, Copy)]
    struct Shop<'a> {
        topics: &'a [Topic],
        workers: &'a [Worker],
        /// Per topic, per SKU; changed only under the SKU's lock.
        stock: &'a [Vec<AtomicI64>],
        locks: &'a LockManager,
        run: u64,
        lifetime: Instant,
    }

    /// Places orders of one or two SKUs as [reservations, order] batches
    /// under the SKUs' locks while they have stock, and restocks SKUs that
    /// ran out; the stock in memory changes only under the locks.
    fn order(x: u64, shop: Shop<'_>, mut rng: Rng) {
        let Shop { topics, workers, stock, locks, run, lifetime } = shop;
        let session = locks.session();
        let mut sequence = 0;
        let timeout = Duration::from_secs(1);
        while Instant::now() < lifetime {
            std::thread::sleep(Duration::from_micros(1000 + rng.below(7000)));
            let t = rng.below(TOPICS.len() as u64) as usize;
            if workers[t].metrics().lag > LAG_MAX {
                continue;
            }
            let (topic, stock) = (&topics[t], &stock[t]);
            let first = rng.below(SKUS as u64) as usize;
            let mut skus = vec![first];
            if rng.chance(40) {
                skus.push((first + 1 + rng.below(SKUS as u64 - 1) as usize) % SKUS);
            }
            let keys: Vec<String> = skus.iter().map(|sku| format!("sku:{sku}")).collect();
            let tx = match topic.transaction(&session, &keys, timeout) {
                Ok(tx) => tx,
                Err(LockError::Timeout { .. }) => continue,
                Err(e) => fatal(format!("lock {keys:?}: {e}")),
            };
            sequence += 1;
            let id = format!("{run}.{x}.{sequence}");
            let out_of_stock = skus.iter().copied().find(|&sku| stock[sku].load(Ordering::Relaxed) <= 0);
            if let Some(sku) = out_of_stock {
                drop(tx);
                let tx = match topic.transaction(&session, [format!("sku:{sku}")], timeout) {
                    Ok(tx) => tx,
                    Err(LockError::Timeout { .. }) => continue,
                    Err(e) => fatal(format!("lock sku:{sku}: {e}")),
                };
                if stock[sku].load(Ordering::Relaxed) > 0 {
                    continue; // restocked meanwhile
                }
                let amount = 1 + rng.below(8) as i64;
                let restock = Message::new(format!("s|{id}|{sku}|{amount}")).key(format!("stock.sku:{sku}"));
                match tx.commit([restock]) {
                    Ok((offsets, held)) => {
                        stock[sku].store(stock[sku].load(Ordering::Relaxed) + amount, Ordering::Relaxed);
                        drop(held);
                        emit(&format!("t {t} {} 1 {id}", offsets.start));
                    }
                    Err(e) => fatal(format!("restock on topic {t}: {e}")),
                }
                continue;
            }
            let mut batch: Vec<Message> =
                skus.iter().map(|sku| Message::new(format!("r|{id}|{sku}")).key(format!("stock.sku:{sku}"))).collect();
            let list: Vec<String> = skus.iter().map(usize::to_string).collect();
            batch.push(Message::new(format!("o|{id}|{}", list.join(","))).key(format!("order.{id}")));
            let count = batch.len();
            match tx.commit(batch) {
                Ok((offsets, held)) => {
                    for &sku in &skus {
                        stock[sku].store(stock[sku].load(Ordering::Relaxed) - 1, Ordering::Relaxed);
                    }
                    drop(held);
                    emit(&format!("t {t} {} {count} {id}", offsets.start));
                }
                Err(e) => fatal(format!("order on topic {t}: {e}")),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers.

/// The wall clock in microseconds since the Unix epoch, as delays use it.
fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}
