//! Worker groups on a simulated disk (`SimDisk`) with a simulated clock:
//! operations decoded from raw bytes, run against two groups of one topic,
//! and checked against a model, with process kills and power cuts in
//! between. Time passes only when the input says so (`SimDisk::advance_clock`:
//! the waits, and the timeouts of `receive`s that found nothing, which on the
//! simulated clock return at once), so no input sleeps. Shared by the `queue_ops`
//! fuzz target (`fuzz/fuzz_targets/queue_ops.rs`; engines without a flusher
//! thread), the `queue_ops_threaded` one (with it) and `tests/fuzz_replay.rs`;
//! `fuzz/seeds.py` writes its seed corpus.
//!
//! # Setup
//!
//! Topic `q` (`Durability::Sync`, or `Buffered` for a quarter of the inputs;
//! 4 or 8 KiB segments) and two worker groups `g0` and `g1`, each with two
//! workers, a visibility timeout of 5 to 20 ms, 1 to 5 attempts, a window of
//! 1, 2, 4 or 65,536, and a key filter (none, `a.*`, `a.#`, `*.x`; messages
//! have no key or `a.x`, `a.y.z`, `b.x`). Dead letters go to `q.dlq` (`g1`:
//! `dead` if the setup says so).
//!
//! # The model
//!
//! Per group and offset: settled (acked or dead-lettered) or not; the bounds
//! `lo..=hi` of its attempt count and `synced`, the count a power cut cannot
//! take back (and whether its last retry time is synced); whether a delivery
//! holds it (with that delivery's exact deadline, from `Delivery::deadline`)
//! or, if not, the bounds of the wall clock time at which it is ready; the
//! reasons its dead letter may give.
//! Since the group was opened: the deliveries made and what became of each
//! (settled in time, timed out, not known, still out), the reader position
//! (the window: the first `window` unsettled matching offsets, once read),
//! and the counts of acks, dead letters and redeliveries. Every call is
//! timed (before and after, on both clocks), so that "surely ready", "surely
//! in flight" and "surely expired" are decided only where the clocks leave no
//! doubt; in between, both outcomes are accepted and the model learns which.
//! (On the simulated clock, before and after are the same instant but for a
//! `receive` that waited its timeout out, so nearly every outcome is decided.)
//!
//! Checked:
//!
//! - a message never reaches a worker or the dead-letter topic again once
//!   acked or dead-lettered (across every kill and power cut), and a message
//!   whose key the filter refuses never does at all;
//! - a message is held by at most one delivery: it is not delivered while an
//!   earlier delivery is surely before its deadline;
//! - attempt numbers: a delivery's attempt is exactly one more than the
//!   last one seen (so attempts strictly increase, across kills too: the
//!   journal entry written at `receive` survives in the page cache), and
//!   never above `max_attempts`. Across a power cut only what was synced
//!   counts: the model tracks the group's sync points (on a `Sync` topic,
//!   `receive` syncs the journal through the attempt it hands out, and `ack`
//!   and dead letters sync it too; opening the group writes its state out
//!   whole), and after a cut accepts any attempt from the synced count + 1
//!   to the last seen + 1. Since every `receive` of a `Sync` topic is a sync
//!   point, that range is a single value: attempts never go back. (A
//!   `Buffered` topic's cut is a kill unless the engine was closed first,
//!   which syncs everything; see the setup.) Retry times of nacks are synced
//!   by the nack on a `Sync` topic, so a cut never loses one (this was a bug,
//!   found by this target: `nack_retry_time_survives_a_power_cut` in
//!   `tests/fuzz_replay.rs`);
//! - `ack`/`nack`/`reject`/`extend` of a delivery whose deadline surely
//!   passed, or whose message went to another delivery, fail with `Expired`;
//!   before its deadline they succeed; after a restart, those of a delivery
//!   of the old engine fail with `Closed`; `TooLong` for a delay or extension
//!   above the limit, whatever the state; a worker of an old engine
//!   receives nothing;
//! - dead letters: exactly one record per dead-lettered message, in the
//!   group's dead-letter topic, with the payload, key, priority and user
//!   headers of the message, no delivery time, and headers naming the topic,
//!   group, offset, attempts and reason. `reject` and a `nack` of the last
//!   attempt dead-letter at once with the delivery's attempt and the reason
//!   given; `receive` dead-letters only a message that may be ready, in the
//!   window, with `max_attempts` attempts, and with a reason the model allows
//!   (the last failure, or "cut short by a restart");
//! - `receive` hands out only a message in the window that may be ready, of
//!   the right payload, key, priority and headers, with a deadline one
//!   visibility timeout after the call; no message of the window that was
//!   surely ready when the call began has a higher priority (or the same and
//!   a lower offset); `None` only if no message of the window was surely
//!   ready when the call began (a timed `receive` that came back empty is
//!   not held to the messages that became ready while it waited: a thread
//!   preempted between its last look and its deadline check may miss them);
//! - `metrics`: `acked`, `dead_lettered` and `redelivered` since the group
//!   was opened, exactly; `expired` and `dead_letter_failures` 0;
//!   `timed_out`, `in_flight`, `ready` and `delayed` within the bounds the
//!   clocks allow, and the last three summing to the window; `backlog` and
//!   `lag` exactly once the group has read;
//! - after every kill or power cut the topic holds every message published
//!   and each dead-letter topic every dead letter seen (all synced); a clean
//!   close syncs everything, so a cut after one loses nothing, with either
//!   durability;
//! - at the end, every open delivery is acked and the groups are drained
//!   (receive and ack until the model has nothing unsettled, waiting out
//!   delays; if that takes more than [`DRAIN_LIMIT`], something was lost):
//!   every published message the group's filter takes was acked or
//!   dead-lettered. Then a power cut or a kill (after a clean close or not)
//!   and a reopen: nothing is delivered again, and `lag` is 0;
//! - nothing panics in the library.
//!
//! # Encoding
//!
//! Three setup bytes, then ops; every byte string is a valid input (it stops
//! where the bytes run out, after [`MAX_OPS`] ops or after [`MAX_REOPENS`]
//! kills and cuts):
//!
//! - bytes 0 and 1 configure `g0` and `g1`: visibility timeout in bits 0-1
//!   (5, 8, 12, 20 ms), `max_attempts` in bits 2-3 (1, 2, 3, 5), window in
//!   bits 4-5 (1, 2, 4, 65536), filter in bits 6-7 (none, `a.*`, `a.#`,
//!   `*.x`);
//! - byte 2: bits 0-1 both set: `Buffered` (a power cut is then a kill
//!   unless the engine was closed first, since a `Buffered` ack may be lost
//!   to one), else `Sync`; bit 2: `g1`'s dead letters go to `dead`; bit 3:
//!   8 KiB segments (else 4 KiB);
//! - each op is a byte (`byte % 13`) and its operands; `i` picks an open
//!   delivery (`i % count`, of this engine's or kept from an old one; the op
//!   does nothing if there is none):
//!
//! | op | name    | operands |
//! |----|---------|----------|
//! | 0  | publish | flags: bits 0-3 priority (0: none, 1-9, 10: invalid, 11-15: 0-4), bits 4-5 delay (0, 0, 2, 6 ms), bits 6-7 key |
//! | 1  | batch   | flags: bits 0-1 count - 2, bits 2-5 first priority (then +3 each, mod 10), bits 6-7 first key (then +1 each) |
//! | 2  | receive | bit 0 group, bit 1 worker, bits 2-3 timeout (0, 0, 1, 3 ms); bit 4: on a worker of an old engine (bits 5-7 pick it), if one was kept |
//! | 3  | ack     | i |
//! | 4  | nack    | bits 0-4 i, bits 5-7 retry delay (0, 0, 1, 3, 6, 2 ms, above `DELAY_MAX`, 0) |
//! | 5  | reject  | i |
//! | 6  | drop    | i |
//! | 7  | extend  | bits 0-4 i, bits 5-7 by (0, 1 ms, visibility, 2 × visibility, 3 ms, above `VISIBILITY_MAX`, 10 ms, visibility / 2) |
//! | 8  | wait    | bits 0-1: past the longest visibility timeout, 1, 2, 4 ms |
//! | 9  | metrics | bit 0 group; bit 1: run a pass of the background work first (`Engine::run_background`) |
//! | 10 | kill    | bit 0: keep this engine's deliveries and a worker of each group (else drop them); bit 1: close the engine first |
//! | 11 | cut     | flags (bits 0 and 1 as for kill), seed |
//! | 12 | rejoin  | bit 0 group: drop its workers and take new ones (if no delivery holds the group, it is closed and opened again) |
//!
//! Sleeping (waits and timed receives) stops at [`SLEEP_BUDGET`] per input,
//! to keep executions fast; the final drain waits as long as it must.

use std::time::{Duration, Instant, UNIX_EPOCH};

use tollgate::{
    DELAY_MAX, Delivery, Durability, Engine, EngineConfig, KeyPattern, Message, Offset, PublishError, QueueConfig,
    QueueError, Record, SimDisk, Topic, TopicConfig, TopicError, VISIBILITY_MAX, Worker,
};

/// At most this many ops per input.
const MAX_OPS: usize = 150;
/// At most this many kills and power cuts per input (the final one aside).
const MAX_REOPENS: usize = 6;
/// Most time an input lets pass on the simulated clock in its ops.
const SLEEP_BUDGET: Duration = Duration::from_millis(40);
/// The final drain gives up (and reports lost messages) after this long.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// The data directory on every simulated disk.
const DATA: &str = "/data";
const TOPIC: &str = "q";
const GROUPS: [&str; 2] = ["g0", "g1"];
const DEAD_LETTER_TOPICS: [&str; 2] = ["q.dlq", "dead"];
const KEYS: [Option<&str>; 4] = [None, Some("a.x"), Some("a.y.z"), Some("b.x")];
const FILTERS: [Option<&str>; 4] = [None, Some("a.*"), Some("a.#"), Some("*.x")];
/// `MATCHES[filter][key]`: whether the filter takes the key (written out
/// here rather than asking `KeyPattern`).
const MATCHES: [[bool; 4]; 4] =
    [[true, true, true, true], [false, true, false, false], [false, true, true, false], [false, true, false, true]];
const VISIBILITY_MS: [u64; 4] = [5, 8, 12, 20];
const ATTEMPTS: [u32; 4] = [1, 2, 3, 5];
const WINDOWS: [usize; 4] = [1, 2, 4, 65_536];
const PUBLISH_DELAY_MS: [u64; 4] = [0, 0, 2, 6];
const RECEIVE_TIMEOUT_MS: [u64; 4] = [0, 0, 1, 3];
const WAIT_MS: [u64; 4] = [0, 1, 2, 4];
/// The dead-letter reasons the library gives on its own.
const CUT_SHORT: &str = "its last attempt was cut short by a restart";
const TIMED_OUT: &str = "its visibility timeout passed";
const DROPPED: &str = "the delivery was dropped without being settled";

/// Runs the input and panics if a check fails. The engines have no flusher
/// thread (`Engine::open_sim_without_flusher`): its work (here, syncing a
/// `Buffered` topic's sealed segments) runs at the `metrics` ops that ask
/// for it, and no thread is started and joined at each open and close.
/// [`run_threaded`] runs the same ops with the thread.
pub fn run(data: &[u8]) {
    run_checks(data, false);
}

/// Runs the input as [`run`] does, on engines with their flusher thread,
/// which may sync sealed segments between any two ops (slower: a thread
/// started and joined per engine; the `queue_ops_threaded` target).
pub fn run_threaded(data: &[u8]) {
    run_checks(data, true);
}

fn run_checks(data: &[u8], threaded: bool) {
    let mut bytes = data.iter().copied();
    let setup = Setup::new(bytes.next().unwrap_or(0), bytes.next().unwrap_or(0), bytes.next().unwrap_or(0));
    if trace() {
        eprintln!("setup: {setup:?}");
    }
    let mut run = Run::new(setup, threaded);
    for step in 0..MAX_OPS {
        run.step = step;
        let Some(op) = bytes.next() else { break };
        if run.op(op, &mut bytes).is_none() || run.reopens >= MAX_REOPENS {
            break;
        }
    }
    run.step = MAX_OPS;
    run.drain();
    run.final_restart(data.len() as u64);
}

/// Whether to print each op (`TOLLGATE_FUZZ_TRACE` set), to debug an input.
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("TOLLGATE_FUZZ_TRACE").is_some())
}

/// Both clocks at once: deadlines are `Instant`s, delivery times wall-clock
/// microseconds.
#[derive(Debug, Clone, Copy)]
struct Now {
    i: Instant,
    w: u64,
}

/// The time on `disk`'s simulated clock, which the engines on it read.
fn now(disk: &SimDisk) -> Now {
    let i = disk.now();
    let w = disk.system_time().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    Now { i, w }
}

#[derive(Debug, Clone, Copy)]
struct GroupSetup {
    visibility: Duration,
    max_attempts: u32,
    window: usize,
    filter: usize,
    /// Index into [`DEAD_LETTER_TOPICS`].
    dead_letters: usize,
}

impl GroupSetup {
    fn new(byte: u8, dead_letters: usize) -> GroupSetup {
        GroupSetup {
            visibility: Duration::from_millis(VISIBILITY_MS[usize::from(byte & 3)]),
            max_attempts: ATTEMPTS[usize::from((byte >> 2) & 3)],
            window: WINDOWS[usize::from((byte >> 4) & 3)],
            filter: usize::from(byte >> 6),
            dead_letters,
        }
    }

    fn config(&self) -> QueueConfig {
        QueueConfig {
            visibility_timeout: self.visibility,
            max_attempts: self.max_attempts,
            dead_letter_topic: (self.dead_letters == 1).then(|| DEAD_LETTER_TOPICS[1].to_owned()),
            filter: FILTERS[self.filter].map(|f| KeyPattern::new(f).expect("a valid pattern")),
            window: self.window,
            ..QueueConfig::default()
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Setup {
    durability: Durability,
    segment_bytes: u64,
    groups: [GroupSetup; 2],
}

impl Setup {
    fn new(g0: u8, g1: u8, flags: u8) -> Setup {
        Setup {
            durability: if flags & 3 == 3 { Durability::Buffered } else { Durability::Sync },
            segment_bytes: if flags & 8 != 0 { 8192 } else { 4096 },
            groups: [GroupSetup::new(g0, 0), GroupSetup::new(g1, usize::from((flags >> 2) & 1))],
        }
    }

    fn topic_config(&self) -> TopicConfig {
        TopicConfig {
            durability: self.durability,
            segment_bytes: self.segment_bytes,
            max_message_bytes: 1024,
            retention_bytes: None,
            retention_age: None,
        }
    }

    /// Whether acks and dead letters are synced when they return.
    fn sync(&self) -> bool {
        self.durability == Durability::Sync
    }
}

/// A published message.
#[derive(Debug, Clone)]
struct Msg {
    /// Numbers the messages of an input, from 1; in the payload and header `n`.
    number: u64,
    priority: u8,
    /// Index into [`KEYS`].
    key: usize,
    /// Exactly as the record stores it; 0 without a delay.
    deliver_at_us: u64,
}

impl Msg {
    fn payload(&self) -> Vec<u8> {
        let mut payload = format!("message {}", self.number).into_bytes();
        payload.resize(payload.len() + (self.number as usize * 7) % 40, b'.');
        payload
    }

    /// Checks a record (delivered or dead-lettered) against the message.
    fn check(&self, record: &Record, what: &str) {
        assert_eq!(record.payload().as_ref(), &self.payload()[..], "{what}: payload");
        assert_eq!(record.key(), KEYS[self.key], "{what}: key");
        assert_eq!(record.priority(), self.priority, "{what}: priority");
        let user: Vec<(&str, &[u8])> = record.headers().filter(|(name, _)| !name.starts_with("tollgate.")).collect();
        assert_eq!(user, vec![("n", self.number.to_string().as_bytes())], "{what}: user headers");
    }
}

/// Where a message is, for a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Avail {
    /// Held by this delivery (an index into `GroupModel::deliveries`), until
    /// its deadline; ready after it.
    Held(usize),
    /// Not held; ready from a wall-clock time between `lo` and `hi` (µs), or
    /// if `hi` is in the past, at some time before now.
    Free { lo: u64, hi: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    No,
    Acked,
    DeadLettered,
}

/// A message as one group sees it.
#[derive(Debug, Clone)]
struct GroupMsg {
    settled: Settled,
    /// Attempts so far: at least `lo`, at most `hi`.
    lo: u32,
    hi: u32,
    /// Attempts a power cut cannot take back.
    synced: u32,
    avail: Avail,
    /// What its dead letter may give as the reason if `receive` dead-letters
    /// it (the last failure the group knows of).
    reasons: Vec<String>,
}

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Holds its message until its deadline (its handle may be gone: a
    /// `nack` refused as `TooLong` consumes it and leaves the message in
    /// flight).
    Out,
    /// Settled (or given back) before its deadline.
    InTime,
    /// Its deadline passed first (`metrics().timed_out` counted it).
    TimedOut,
    /// Given back by a drop at about its deadline: either.
    Unknown,
}

#[derive(Debug, Clone)]
struct Deliv {
    offset: u64,
    attempt: u32,
    deadline: Instant,
    fate: Fate,
}

#[derive(Debug)]
struct GroupModel {
    setup: GroupSetup,
    /// By offset, for every published message (unused where the filter
    /// refuses the key).
    msgs: Vec<GroupMsg>,
    // Since the group was opened:
    deliveries: Vec<Deliv>,
    /// The reader's position once the group has looked for a message (`None`:
    /// it has not, and its window is empty).
    reader_next: Option<u64>,
    acked: u64,
    dead_lettered: u64,
    redelivered: u64,
}

impl GroupModel {
    fn new(setup: GroupSetup) -> GroupModel {
        GroupModel {
            setup,
            msgs: Vec::new(),
            deliveries: Vec::new(),
            reader_next: None,
            acked: 0,
            dead_lettered: 0,
            redelivered: 0,
        }
    }

    fn matches(&self, msg: &Msg) -> bool {
        MATCHES[self.setup.filter][msg.key]
    }

    fn published(&mut self, msg: &Msg) {
        let ready = msg.deliver_at_us;
        self.msgs.push(GroupMsg {
            settled: Settled::No,
            lo: 0,
            hi: 0,
            synced: 0,
            avail: Avail::Free { lo: ready, hi: ready },
            reasons: vec![CUT_SHORT.to_owned()],
        });
    }

    /// Unsettled offsets the filter takes, in order.
    fn unsettled(&self, msgs: &[Msg]) -> Vec<u64> {
        (0..msgs.len())
            .filter(|&o| self.matches(&msgs[o]) && self.msgs[o].settled == Settled::No)
            .map(|o| o as u64)
            .collect()
    }

    /// The window: unsettled offsets read so far.
    fn tracked(&self, msgs: &[Msg]) -> Vec<u64> {
        let next = self.reader_next.unwrap_or(0);
        let mut tracked = self.unsettled(msgs);
        tracked.retain(|&o| o < next);
        if self.reader_next.is_none() {
            tracked.clear();
        }
        tracked
    }

    /// The reader's position after a look for a message: the window filled
    /// up to `window` unsettled messages, or the log read to its end.
    fn looked(&mut self, msgs: &[Msg]) {
        let unsettled = self.unsettled(msgs);
        let filled = match unsettled.get(self.setup.window - 1) {
            Some(&o) => o + 1,
            None => msgs.len() as u64,
        };
        self.reader_next = Some(self.reader_next.map_or(filled, |n| n.max(filled)));
    }

    /// Whether `offset` is surely ready (`.0`) and possibly ready (`.1`)
    /// at some time between `t0` and `t1`.
    fn ready(&self, offset: u64, t0: Now, t1: Now) -> (bool, bool) {
        match self.msgs[offset as usize].avail {
            Avail::Held(d) => {
                let deadline = self.deliveries[d].deadline;
                (deadline <= t0.i, deadline <= t1.i)
            }
            Avail::Free { lo, hi } => (hi <= t0.w, lo <= t1.w),
        }
    }

    /// The journal was synced: every attempt written is durable.
    fn synced(&mut self) {
        for msg in &mut self.msgs {
            msg.synced = msg.lo;
        }
    }

    /// The group is gone (closed, or its process killed, or its machine cut
    /// off with `cut`); what the next open finds.
    fn closed(&mut self, cut: bool, now: Now) {
        for state in &mut self.msgs {
            if state.settled != Settled::No {
                continue;
            }
            if let Avail::Held(_) = state.avail {
                // Its last retry time (if any) is in the past.
                state.avail = Avail::Free { lo: 0, hi: now.w };
            }
            if cut {
                // Attempts not synced may be lost.
                state.lo = state.synced;
            }
            state.reasons = vec![CUT_SHORT.to_owned()];
        }
        self.deliveries.clear();
        self.reader_next = None;
        self.acked = 0;
        self.dead_lettered = 0;
        self.redelivered = 0;
    }

    /// The group was opened: its state is written out whole and synced.
    fn opened(&mut self) {
        self.synced();
    }
}

/// An open delivery.
struct Open {
    delivery: Delivery,
    group: usize,
    /// The engine it came from (`Run::life_id`).
    life: u64,
    /// Its index in `GroupModel::deliveries` (of that engine's life).
    rec: usize,
}

/// A record read from a dead-letter topic.
#[derive(Debug)]
struct Dead {
    group: usize,
    offset: u64,
    attempts: u32,
    reason: String,
}

/// One engine's life on the current disk.
struct Life {
    /// Held for the life: dropping the last handle closes the topics.
    _engine: Engine,
    topic: Topic,
    dead_letters: [Topic; 2],
    workers: [Vec<Worker>; 2],
}

/// What a settle call should return, from the delivery's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Valid,
    Expired,
    Either,
}

struct Run {
    setup: Setup,
    disk: SimDisk,
    /// `None` only inside a restart.
    life: Option<Life>,
    life_id: u64,
    msgs: Vec<Msg>,
    groups: [GroupModel; 2],
    /// Records seen of each dead-letter topic.
    dead_seen: [u64; 2],
    open: Vec<Open>,
    /// Workers of old engines (kept by a kill or cut that keeps deliveries).
    stale_workers: Vec<Worker>,
    slept: Duration,
    reopens: usize,
    step: usize,
    /// Numbers nack and reject reasons.
    reasons: u64,
    /// Engines run their flusher thread (see [`run_threaded`]).
    threaded: bool,
}

impl Run {
    fn new(setup: Setup, threaded: bool) -> Run {
        let disk = SimDisk::with_simulated_clock();
        disk.create_dir_all_durable(DATA).expect("create the data directory");
        let mut run = Run {
            setup,
            disk,
            life: None,
            life_id: 0,
            msgs: Vec::new(),
            groups: setup.groups.map(GroupModel::new),
            dead_seen: [0; 2],
            open: Vec::new(),
            stale_workers: Vec::new(),
            slept: Duration::ZERO,
            reopens: 0,
            step: 0,
            reasons: 0,
            threaded,
        };
        run.open_life(true);
        run
    }

    fn life(&self) -> &Life {
        self.life.as_ref().expect("an engine is open")
    }

    /// Opens an engine on the disk (creating the topics if `fresh`) and the
    /// groups, and checks what it finds against the model.
    fn open_life(&mut self, fresh: bool) {
        let what = format!("op {}: open {}", self.step, self.life_id);
        let engine = if self.threaded {
            Engine::open_sim(&self.disk, DATA, EngineConfig::default())
        } else {
            Engine::open_sim_without_flusher(&self.disk, DATA, EngineConfig::default())
        };
        let engine = engine.unwrap_or_else(|e| panic!("{what}: open the engine: {e}"));
        let config = self.setup.topic_config();
        let open_topic = |name: &str| {
            let topic = if fresh { engine.create_topic(name, config) } else { engine.topic(name) };
            let topic = topic.unwrap_or_else(|e| panic!("{what}: topic {name}: {e}"));
            assert_eq!(topic.info().config, config, "{what}: configuration of {name}");
            topic
        };
        let topic = open_topic(TOPIC);
        let dead_letters = DEAD_LETTER_TOPICS.map(open_topic);
        assert_eq!(topic.info().next.get(), self.msgs.len() as u64, "{what}: published messages lost");
        for (q, dead) in dead_letters.iter().enumerate() {
            assert_eq!(dead.info().next.get(), self.dead_seen[q], "{what}: dead letters in {}", DEAD_LETTER_TOPICS[q]);
        }
        let workers = [0, 1].map(|g| self.join(&topic, g, &what));
        // A worker must share its group's configuration.
        let mut other = self.setup.groups[0].config();
        other.max_attempts = other.max_attempts % 5 + 1;
        match topic.worker_with(GROUPS[0], other) {
            Err(TopicError::GroupConfigDiffers { group }) => assert_eq!(group, GROUPS[0], "{what}"),
            Err(e) => panic!("{what}: joining g0 with another configuration: {e:?}"),
            Ok(_) => panic!("{what}: joined g0 with another configuration"),
        }
        self.life = Some(Life { _engine: engine, topic, dead_letters, workers });
        for g in 0..2 {
            self.groups[g].opened();
            self.check_metrics(g);
        }
    }

    /// Two workers of group `g`.
    fn join(&self, topic: &Topic, g: usize, what: &str) -> Vec<Worker> {
        (0..2)
            .map(|_| {
                let worker = topic
                    .worker_with(GROUPS[g], self.setup.groups[g].config())
                    .unwrap_or_else(|e| panic!("{what}: worker of {}: {e}", GROUPS[g]));
                assert_eq!(worker.group(), GROUPS[g], "{what}");
                worker
            })
            .collect()
    }

    /// Runs one op; `None` when the bytes ran out inside it.
    fn op(&mut self, op: u8, bytes: &mut impl Iterator<Item = u8>) -> Option<()> {
        let op = op % 13;
        let arg = bytes.next()?;
        if trace() {
            let open: Vec<_> = self.open.iter().map(|o| (o.group, o.delivery.offset().get(), o.life)).collect();
            eprintln!("op {}: {op} {arg:#04x}; open {open:?}", self.step);
        }
        match op {
            0 => self.publish(arg),
            1 => self.batch(arg),
            2 => {
                let timeout = RECEIVE_TIMEOUT_MS[usize::from((arg >> 2) & 3)];
                let timeout = self.budget(Duration::from_millis(timeout));
                let received = if arg & 16 != 0 && !self.stale_workers.is_empty() {
                    self.stale_receive(usize::from(arg >> 5), timeout);
                    None
                } else {
                    self.receive(usize::from(arg & 1), usize::from((arg >> 1) & 1), timeout)
                };
                // On the simulated clock `receive` returns at once; one that
                // found nothing would have waited its timeout out.
                if received.is_none() {
                    self.sleep(timeout);
                }
            }
            3 => self.ack(arg),
            4 => {
                let delay = match arg >> 5 {
                    2 => Duration::from_millis(1),
                    3 => Duration::from_millis(3),
                    4 => Duration::from_millis(6),
                    5 => Duration::from_millis(2),
                    6 => DELAY_MAX + Duration::from_millis(1),
                    _ => Duration::ZERO,
                };
                self.nack(arg & 31, delay);
            }
            5 => self.reject(arg),
            6 => self.drop_delivery(arg),
            7 => self.extend(arg & 31, arg >> 5),
            8 => {
                let longest = self.setup.groups.iter().map(|g| g.visibility).max().expect("two groups");
                let ms = WAIT_MS[usize::from(arg & 3)];
                let wait = if ms == 0 { longest + Duration::from_millis(1) } else { Duration::from_millis(ms) };
                self.sleep(self.budget(wait));
            }
            9 => {
                if arg & 2 != 0 {
                    self.life()._engine.run_background();
                }
                self.check_metrics(usize::from(arg & 1));
            }
            10 => self.restart(None, arg & 1 != 0, arg & 2 != 0),
            11 => {
                let seed = bytes.next()?;
                self.restart(Some(u64::from(seed)), arg & 1 != 0, arg & 2 != 0);
            }
            _ => self.rejoin(usize::from(arg & 1)),
        }
        Some(())
    }

    /// Lets `time` pass on the simulated clock, out of the sleep budget.
    fn sleep(&mut self, time: Duration) {
        self.disk.advance_clock(time);
        self.slept += time;
    }

    /// As much of `wanted` as the sleep budget has left.
    fn budget(&self, wanted: Duration) -> Duration {
        wanted.min(SLEEP_BUDGET.saturating_sub(self.slept))
    }

    fn publish(&mut self, flags: u8) {
        let what = format!("op {}: publish", self.step);
        let (priority, invalid) = match flags & 15 {
            0 => (None, false),
            10 => (Some(10), true),
            p @ 1..=9 => (Some(p), false),
            p => (Some(p - 11), false),
        };
        let delay = PUBLISH_DELAY_MS[usize::from((flags >> 4) & 3)];
        let key = usize::from(flags >> 6);
        let msg = Msg { number: self.msgs.len() as u64 + 1, priority: priority.unwrap_or(0), key, deliver_at_us: 0 };
        let mut message = Message::new(msg.payload()).header("n", msg.number.to_string());
        if let Some(k) = KEYS[key] {
            message = message.key(k);
        }
        if let Some(p) = priority {
            message = message.priority(p);
        }
        if delay > 0 {
            // `deliver_after` would read the system's clock.
            message = message.deliver_at(self.disk.system_time() + Duration::from_millis(delay));
        }
        let topic = self.life().topic.clone();
        let result = topic.publish_message(message);
        if invalid {
            match result {
                Err(PublishError::InvalidMessage { .. }) => {}
                other => panic!("{what}: priority 10 gave {other:?}"),
            }
            assert_eq!(topic.info().next.get(), self.msgs.len() as u64, "{what}: refused, yet appended");
            return;
        }
        let offset = result.unwrap_or_else(|e| panic!("{what}: {e:?}"));
        self.published(vec![msg], offset, delay > 0, &what);
    }

    fn batch(&mut self, flags: u8) {
        let what = format!("op {}: batch", self.step);
        let count = 2 + u64::from(flags & 3);
        let first = self.msgs.len() as u64 + 1;
        let msgs: Vec<Msg> = (0..count)
            .map(|i| Msg {
                number: first + i,
                priority: ((u64::from((flags >> 2) & 15) + 3 * i) % 10) as u8,
                key: ((u64::from(flags >> 6) + i) % 4) as usize,
                deliver_at_us: 0,
            })
            .collect();
        let messages = msgs.iter().map(|msg| {
            let mut message = Message::new(msg.payload()).header("n", msg.number.to_string()).priority(msg.priority);
            if let Some(k) = KEYS[msg.key] {
                message = message.key(k);
            }
            message
        });
        let topic = self.life().topic.clone();
        let range = topic.publish_batch(messages).unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(range.end.get() - range.start.get(), count, "{what}: offsets {range:?}");
        self.published(msgs, range.start, false, &what);
    }

    /// Records messages published from `first` on, reading them back (for
    /// their exact delivery times).
    fn published(&mut self, msgs: Vec<Msg>, first: Offset, delayed: bool, what: &str) {
        assert_eq!(first.get(), self.msgs.len() as u64, "{what}: offset");
        let topic = self.life().topic.clone();
        for (i, mut msg) in msgs.into_iter().enumerate() {
            let offset = first.get() + i as u64;
            let record = topic.read(Offset::new(offset)).unwrap_or_else(|e| panic!("{what}: read {offset}: {e:?}"));
            msg.check(&record, what);
            match record.deliver_at_us() {
                Some(at) => {
                    assert!(delayed, "{what}: a delivery time without a delay");
                    msg.deliver_at_us = at;
                }
                None => assert!(!delayed, "{what}: no delivery time"),
            }
            for group in &mut self.groups {
                group.published(&msg);
            }
            self.msgs.push(msg);
        }
    }

    /// Reads the dead letters published since the last look, checking each
    /// against the message it came from.
    fn dead_letters(&mut self, what: &str) -> Vec<Dead> {
        let mut dead = Vec::new();
        for (q, name) in DEAD_LETTER_TOPICS.iter().enumerate() {
            let topic = self.life().dead_letters[q].clone();
            let next = topic.info().next.get();
            while self.dead_seen[q] < next {
                let at = self.dead_seen[q];
                let what = format!("{what}: dead letter {at} of {name}");
                let record = topic.read(Offset::new(at)).unwrap_or_else(|e| panic!("{what}: {e:?}"));
                let header = |name: &str| -> String {
                    let value = record.header(name).unwrap_or_else(|| panic!("{what}: no header {name}"));
                    String::from_utf8(value.to_vec()).unwrap_or_else(|_| panic!("{what}: header {name} not UTF-8"))
                };
                assert_eq!(header("tollgate.dlq.topic"), TOPIC, "{what}: topic header");
                let group = header("tollgate.dlq.group");
                let g =
                    GROUPS.iter().position(|&name| name == group).unwrap_or_else(|| panic!("{what}: group {group}"));
                assert_eq!(self.setup.groups[g].dead_letters, q, "{what}: a dead letter of {group} in the wrong topic");
                let offset: u64 = header("tollgate.dlq.offset").parse().unwrap_or_else(|_| panic!("{what}: offset"));
                let attempts: u32 =
                    header("tollgate.dlq.attempts").parse().unwrap_or_else(|_| panic!("{what}: attempts"));
                let msg = self.msgs.get(offset as usize).unwrap_or_else(|| panic!("{what}: offset {offset}"));
                msg.check(&record, &what);
                assert_eq!(record.deliver_at_us(), None, "{what}: a dead letter keeps no delivery time");
                assert!(
                    (1..=self.setup.groups[g].max_attempts).contains(&attempts),
                    "{what}: {attempts} attempts, max_attempts {}",
                    self.setup.groups[g].max_attempts
                );
                dead.push(Dead { group: g, offset, attempts, reason: header("tollgate.dlq.reason") });
                self.dead_seen[q] += 1;
            }
        }
        if trace() && !dead.is_empty() {
            eprintln!("{what}: dead letters {dead:?}");
        }
        dead
    }

    fn expect_no_dead_letters(&mut self, what: &str) {
        let dead = self.dead_letters(what);
        assert!(dead.is_empty(), "{what}: unexpected dead letters {dead:?}");
    }

    /// A message was dead-lettered (by `receive`, `nack` or `reject`).
    fn dead_lettered(&mut self, g: usize, offset: u64, what: &str) {
        let sync = self.setup.sync();
        let group = &mut self.groups[g];
        let state = &mut group.msgs[offset as usize];
        match state.settled {
            Settled::No => {}
            Settled::Acked => panic!("{what}: offset {offset} was acked, and is dead-lettered"),
            Settled::DeadLettered => panic!("{what}: offset {offset} was dead-lettered twice"),
        }
        state.settled = Settled::DeadLettered;
        if let Avail::Held(d) = state.avail
            && group.deliveries[d].fate == Fate::Out
        {
            group.deliveries[d].fate = Fate::TimedOut;
        }
        group.dead_lettered += 1;
        if sync {
            group.synced();
        }
    }

    /// `receive` on worker `w` of group `g`; the index of the new open
    /// delivery, if one came.
    fn receive(&mut self, g: usize, w: usize, timeout: Duration) -> Option<usize> {
        let what = format!("op {}: receive({timeout:?}) on {}", self.step, GROUPS[g]);
        let worker = self.life().workers[g][w].clone();
        let t0 = now(&self.disk);
        let result = worker.receive(timeout);
        let t1 = now(&self.disk);
        let dead = self.dead_letters(&what);
        let delivery = result.unwrap_or_else(|e| panic!("{what}: {e:?}"));
        // Dead letters `receive` sent on its way, in order.
        for dead in dead {
            let what = format!("{what}: dead letter of offset {}", dead.offset);
            assert_eq!(dead.group, g, "{what}: from the other group");
            let group = &self.groups[g];
            let setup = group.setup;
            let msg = &self.msgs[dead.offset as usize];
            assert!(group.matches(msg), "{what}: the filter refuses its key");
            let unsettled = group.unsettled(&self.msgs);
            assert!(
                unsettled.iter().take(setup.window).any(|&o| o == dead.offset),
                "{what}: not in the window {unsettled:?}"
            );
            let state = &group.msgs[dead.offset as usize];
            let (_, possible) = group.ready(dead.offset, t0, t1);
            assert!(possible, "{what}: not ready ({:?})", state.avail);
            assert!(state.hi >= setup.max_attempts, "{what}: only {} attempts", state.hi);
            assert_eq!(dead.attempts, setup.max_attempts, "{what}: attempts header");
            let reasons: &[String] =
                if let Avail::Held(_) = state.avail { &[TIMED_OUT.to_owned()] } else { &state.reasons };
            assert!(reasons.contains(&dead.reason), "{what}: reason {:?}, expected one of {reasons:?}", dead.reason);
            self.dead_lettered(g, dead.offset, &what);
        }
        self.groups[g].looked(&self.msgs);
        let group = &self.groups[g];
        let tracked = group.tracked(&self.msgs);
        let Some(delivery) = delivery else {
            for &o in &tracked {
                let (sure, _) = group.ready(o, t0, t1);
                assert!(!sure, "{what}: None, yet offset {o} was ready ({:?})", group.msgs[o as usize].avail);
            }
            return None;
        };
        let offset = delivery.offset().get();
        let what = format!("{what}: offset {offset}, attempt {}", delivery.attempt());
        let msg = self.msgs.get(offset as usize).unwrap_or_else(|| panic!("{what}: never published"));
        msg.check(delivery.record(), &what);
        assert_eq!(delivery.payload(), delivery.record().payload(), "{what}");
        assert!(group.matches(msg), "{what}: the filter refuses its key {:?}", KEYS[msg.key]);
        let state = &group.msgs[offset as usize];
        match state.settled {
            Settled::No => {}
            Settled::Acked => panic!("{what}: delivered again after its ack"),
            Settled::DeadLettered => panic!("{what}: delivered again after its dead letter"),
        }
        assert!(tracked.contains(&offset), "{what}: not in the window {tracked:?}");
        if let Avail::Held(d) = state.avail {
            let other = &group.deliveries[d];
            assert!(
                other.deadline <= t1.i,
                "{what}: still held by attempt {} until {:?} after the call",
                other.attempt,
                other.deadline - t1.i
            );
        }
        let (_, possible) = group.ready(offset, t0, t1);
        assert!(possible, "{what}: not ready yet ({:?}, now {})", state.avail, t1.w);
        let attempt = delivery.attempt();
        assert!(
            (state.lo + 1..=state.hi + 1).contains(&attempt),
            "{what}: attempt {attempt}, expected {} to {} (synced {})",
            state.lo + 1,
            state.hi + 1,
            state.synced
        );
        assert!(attempt <= group.setup.max_attempts, "{what}: past max_attempts {}", group.setup.max_attempts);
        let deadline = delivery.deadline();
        let visibility = group.setup.visibility;
        assert!(
            deadline >= t0.i + visibility && deadline <= t1.i + visibility,
            "{what}: deadline not one visibility timeout after the call"
        );
        let beats = |o: u64| {
            let (p, q) = (self.msgs[o as usize].priority, msg.priority);
            p > q || (p == q && o < offset)
        };
        for &o in &tracked {
            if o != offset && beats(o) {
                let (sure, _) = group.ready(o, t0, t1);
                assert!(
                    !sure,
                    "{what}: offset {o} (priority {}) was ready and goes first (priority {})",
                    self.msgs[o as usize].priority, msg.priority
                );
            }
        }
        let group = &mut self.groups[g];
        if let Avail::Held(d) = group.msgs[offset as usize].avail {
            group.deliveries[d].fate = Fate::TimedOut;
        }
        let rec = group.deliveries.len();
        group.deliveries.push(Deliv { offset, attempt, deadline, fate: Fate::Out });
        let state = &mut group.msgs[offset as usize];
        state.avail = Avail::Held(rec);
        state.lo = attempt;
        state.hi = attempt;
        state.reasons = vec![TIMED_OUT.to_owned()];
        if attempt > 1 {
            group.redelivered += 1;
        }
        if self.setup.sync() {
            // The attempt is on disk before the delivery is handed out.
            group.synced();
        }
        self.open.push(Open { delivery, group: g, life: self.life_id, rec });
        Some(self.open.len() - 1)
    }

    /// `receive` on a worker of an old engine: nothing (its files may belong
    /// to the new engine by now).
    fn stale_receive(&mut self, i: usize, timeout: Duration) {
        let worker = self.stale_workers[i % self.stale_workers.len()].clone();
        let what = format!("op {}: receive({timeout:?}) on {} of an old engine", self.step, worker.group());
        match worker.receive(timeout) {
            Ok(None) => {}
            Ok(Some(delivery)) => panic!("{what}: delivered offset {}", delivery.offset().get()),
            Err(error) => panic!("{what}: {error:?}"),
        }
        self.expect_no_dead_letters(&what);
    }

    /// Whether the delivery `rec` of group `g` may be settled between `t0`
    /// and `t1`.
    fn expect(&self, g: usize, rec: usize, t0: Now, t1: Now) -> Expect {
        let group = &self.groups[g];
        let d = &group.deliveries[rec];
        if group.msgs[d.offset as usize].avail != Avail::Held(rec) || d.deadline <= t0.i {
            Expect::Expired
        } else if d.deadline > t1.i {
            Expect::Valid
        } else {
            Expect::Either
        }
    }

    /// Checks a settle call's result against `expect`: `true` if it went
    /// through, `false` if it was `Expired`.
    fn settled_result(
        &mut self,
        g: usize,
        rec: usize,
        expect: Expect,
        result: Result<(), QueueError>,
        what: &str,
    ) -> bool {
        match result {
            Ok(()) => {
                assert_ne!(expect, Expect::Expired, "{what}: accepted after the deadline or a redelivery");
                self.groups[g].deliveries[rec].fate = Fate::InTime;
                true
            }
            Err(QueueError::Expired { offset }) => {
                assert_ne!(expect, Expect::Valid, "{what}: Expired before the deadline");
                let group = &mut self.groups[g];
                let d = &mut group.deliveries[rec];
                assert_eq!(offset, d.offset, "{what}: Expired names another offset");
                d.fate = Fate::TimedOut;
                let state = &mut group.msgs[offset as usize];
                if state.avail == Avail::Held(rec) {
                    state.avail = Avail::Free { lo: 0, hi: 0 };
                    state.reasons = vec![TIMED_OUT.to_owned()];
                }
                false
            }
            Err(error) => panic!("{what}: {error:?}"),
        }
    }

    /// Takes the open delivery `i` picks (`i % count`), if there is one.
    fn pick(&mut self, i: u8) -> Option<Open> {
        if self.open.is_empty() {
            return None;
        }
        let at = usize::from(i) % self.open.len();
        Some(self.open.remove(at))
    }

    fn ack(&mut self, i: u8) {
        let Some(open) = self.pick(i) else { return };
        let what = format!("op {}: ack of {} offset {}", self.step, GROUPS[open.group], open.delivery.offset().get());
        if open.life != self.life_id {
            match open.delivery.ack() {
                Err(QueueError::Closed) => {}
                other => panic!("{what} (of an old engine): {other:?}"),
            }
            return;
        }
        let (g, rec) = (open.group, open.rec);
        let t0 = now(&self.disk);
        let result = open.delivery.ack();
        let t1 = now(&self.disk);
        self.expect_no_dead_letters(&what);
        let expect = self.expect(g, rec, t0, t1);
        if self.settled_result(g, rec, expect, result, &what) {
            let sync = self.setup.sync();
            let group = &mut self.groups[g];
            let offset = group.deliveries[rec].offset;
            group.msgs[offset as usize].settled = Settled::Acked;
            group.acked += 1;
            if sync {
                group.synced();
            }
        }
    }

    fn nack(&mut self, i: u8, delay: Duration) {
        let Some(open) = self.pick(i) else { return };
        self.reasons += 1;
        let reason = format!("nack {}", self.reasons);
        let what = format!(
            "op {}: nack({delay:?}) of {} offset {}",
            self.step,
            GROUPS[open.group],
            open.delivery.offset().get()
        );
        let too_long = delay > DELAY_MAX;
        if open.life != self.life_id {
            match (open.delivery.nack(delay, &reason), too_long) {
                (Err(QueueError::TooLong { .. }), true) | (Err(QueueError::Closed), false) => {}
                (other, _) => panic!("{what} (of an old engine): {other:?}"),
            }
            return;
        }
        let (g, rec) = (open.group, open.rec);
        let attempt = self.groups[g].deliveries[rec].attempt;
        let t0 = now(&self.disk);
        let result = open.delivery.nack(delay, &reason);
        let t1 = now(&self.disk);
        if too_long {
            // Nothing changes: the message stays in flight until its deadline.
            assert!(matches!(result, Err(QueueError::TooLong { .. })), "{what}: {result:?}");
            self.expect_no_dead_letters(&what);
            return;
        }
        let dead = self.dead_letters(&what);
        let expect = self.expect(g, rec, t0, t1);
        let ok = self.settled_result(g, rec, expect, result, &what);
        let offset = self.groups[g].deliveries[rec].offset;
        if ok && attempt >= self.setup.groups[g].max_attempts {
            self.expect_dead_letter(g, offset, attempt, &reason, dead, &what);
        } else {
            assert!(dead.is_empty(), "{what}: unexpected dead letters {dead:?}");
            if ok {
                let state = &mut self.groups[g].msgs[offset as usize];
                let us = delay.as_micros() as u64;
                state.avail = if delay.is_zero() {
                    Avail::Free { lo: 0, hi: 0 }
                } else {
                    Avail::Free { lo: t0.w + us, hi: t1.w + us }
                };
                state.reasons = vec![reason];
            }
        }
    }

    /// `dead` must be exactly the dead letter of `offset` with `attempts` and `reason`.
    fn expect_dead_letter(&mut self, g: usize, offset: u64, attempts: u32, reason: &str, dead: Vec<Dead>, what: &str) {
        assert_eq!(dead.len(), 1, "{what}: expected one dead letter, got {dead:?}");
        let d = &dead[0];
        assert_eq!((d.group, d.offset, d.attempts), (g, offset, attempts), "{what}: dead letter {d:?}");
        assert_eq!(d.reason, reason, "{what}: reason");
        self.dead_lettered(g, offset, what);
    }

    fn reject(&mut self, i: u8) {
        let Some(open) = self.pick(i) else { return };
        self.reasons += 1;
        let reason = format!("reject {}", self.reasons);
        let what =
            format!("op {}: reject of {} offset {}", self.step, GROUPS[open.group], open.delivery.offset().get());
        if open.life != self.life_id {
            match open.delivery.reject(&reason) {
                Err(QueueError::Closed) => {}
                other => panic!("{what} (of an old engine): {other:?}"),
            }
            return;
        }
        let (g, rec) = (open.group, open.rec);
        let attempt = self.groups[g].deliveries[rec].attempt;
        let t0 = now(&self.disk);
        let result = open.delivery.reject(&reason);
        let t1 = now(&self.disk);
        let dead = self.dead_letters(&what);
        let expect = self.expect(g, rec, t0, t1);
        let offset = self.groups[g].deliveries[rec].offset;
        if self.settled_result(g, rec, expect, result, &what) {
            self.expect_dead_letter(g, offset, attempt, &reason, dead, &what);
        } else {
            assert!(dead.is_empty(), "{what}: unexpected dead letters {dead:?}");
        }
    }

    fn drop_delivery(&mut self, i: u8) {
        let Some(open) = self.pick(i) else { return };
        let what = format!("op {}: drop of {} offset {}", self.step, GROUPS[open.group], open.delivery.offset().get());
        let stale = open.life != self.life_id;
        let (g, rec) = (open.group, open.rec);
        let t0 = now(&self.disk);
        drop(open.delivery);
        let t1 = now(&self.disk);
        self.expect_no_dead_letters(&what);
        if stale {
            return;
        }
        let expect = self.expect(g, rec, t0, t1);
        let group = &mut self.groups[g];
        let d = &mut group.deliveries[rec];
        let state = &mut group.msgs[d.offset as usize];
        if state.avail != Avail::Held(rec) {
            return;
        }
        // Given back at once, or (past its deadline) ready already.
        state.avail = Avail::Free { lo: 0, hi: 0 };
        (d.fate, state.reasons) = match expect {
            Expect::Valid => (Fate::InTime, vec![DROPPED.to_owned()]),
            Expect::Expired => (Fate::TimedOut, vec![TIMED_OUT.to_owned()]),
            Expect::Either => (Fate::Unknown, vec![DROPPED.to_owned(), TIMED_OUT.to_owned()]),
        };
    }

    fn extend(&mut self, i: u8, which: u8) {
        if self.open.is_empty() {
            return;
        }
        let at = usize::from(i) % self.open.len();
        let (g, rec, life) = (self.open[at].group, self.open[at].rec, self.open[at].life);
        let visibility = self.setup.groups[g].visibility;
        let by = match which {
            0 => Duration::ZERO,
            1 => Duration::from_millis(1),
            2 => visibility,
            3 => visibility * 2,
            4 => Duration::from_millis(3),
            5 => VISIBILITY_MAX + Duration::from_millis(1),
            6 => Duration::from_millis(10),
            _ => visibility / 2,
        };
        let offset = self.open[at].delivery.offset().get();
        let what = format!("op {}: extend({by:?}) of {} offset {offset}", self.step, GROUPS[g]);
        let too_long = by > VISIBILITY_MAX;
        let before = self.open[at].delivery.deadline();
        let t0 = now(&self.disk);
        let result = self.open[at].delivery.extend(by);
        let t1 = now(&self.disk);
        let deadline = self.open[at].delivery.deadline();
        self.expect_no_dead_letters(&what);
        if too_long {
            assert!(matches!(result, Err(QueueError::TooLong { .. })), "{what}: {result:?}");
            assert_eq!(deadline, before, "{what}: refused, yet the deadline moved");
            return;
        }
        if life != self.life_id {
            assert!(matches!(result, Err(QueueError::Closed)), "{what} (of an old engine): {result:?}");
            return;
        }
        let expect = self.expect(g, rec, t0, t1);
        if self.settled_result(g, rec, expect, result, &what) {
            assert!(deadline >= t0.i + by && deadline <= t1.i + by, "{what}: the new deadline is off");
            let d = &mut self.groups[g].deliveries[rec];
            d.deadline = deadline;
            d.fate = Fate::Out;
        } else {
            assert_eq!(deadline, before, "{what}: Expired, yet the deadline moved");
        }
    }

    /// Compares `metrics()` with the model.
    fn check_metrics(&mut self, g: usize) {
        let what = format!("op {}: metrics of {}", self.step, GROUPS[g]);
        let worker = self.life().workers[g][0].clone();
        let t0 = now(&self.disk);
        let m = worker.metrics();
        let t1 = now(&self.disk);
        let group = &self.groups[g];
        if trace() {
            eprintln!("{what}: {m:?}");
        }
        assert_eq!(m.acked, group.acked, "{what}: acked; {m:?}");
        assert_eq!(m.dead_lettered, group.dead_lettered, "{what}: dead_lettered; {m:?}");
        assert_eq!(m.redelivered, group.redelivered, "{what}: redelivered; {m:?}");
        assert_eq!(m.expired, 0, "{what}: expired; {m:?}");
        assert_eq!(m.dead_letter_failures, 0, "{what}: dead_letter_failures; {m:?}");
        // Timed out: known, plus those whose deadline passed by now.
        let (mut timed_lo, mut timed_hi) = (0, 0);
        for d in &group.deliveries {
            match d.fate {
                Fate::TimedOut => (timed_lo, timed_hi) = (timed_lo + 1, timed_hi + 1),
                Fate::Unknown => timed_hi += 1,
                Fate::Out if d.deadline <= t0.i => (timed_lo, timed_hi) = (timed_lo + 1, timed_hi + 1),
                Fate::Out if d.deadline <= t1.i => timed_hi += 1,
                Fate::Out | Fate::InTime => {}
            }
        }
        assert!(
            (timed_lo..=timed_hi).contains(&m.timed_out),
            "{what}: timed_out not in {timed_lo}..={timed_hi}; {m:?}"
        );
        let end = self.msgs.len() as u64;
        let unsettled = group.unsettled(&self.msgs).len() as u64;
        let refused = |from: u64| (from..end).filter(|&o| !group.matches(&self.msgs[o as usize])).count() as u64;
        let Some(next) = group.reader_next else {
            // Nothing read yet: the window is empty.
            assert_eq!((m.ready, m.delayed, m.in_flight), (0, 0, 0), "{what}: before any receive; {m:?}");
            assert!(
                (unsettled..=unsettled + refused(0)).contains(&m.lag),
                "{what}: lag, {unsettled} unsettled and {} refused; {m:?}",
                refused(0)
            );
            assert!(m.backlog <= end, "{what}: backlog; {m:?}");
            return;
        };
        assert_eq!(m.backlog, end - next, "{what}: backlog; {m:?}");
        assert_eq!(m.lag, unsettled + refused(next), "{what}: lag; {m:?}");
        let tracked = group.tracked(&self.msgs);
        let (mut ready, mut delayed, mut in_flight) = ((0, 0), (0, 0), (0, 0));
        fn add(count: &mut (u64, u64), sure: bool, possible: bool) {
            count.0 += u64::from(sure);
            count.1 += u64::from(possible);
        }
        for &o in &tracked {
            match group.msgs[o as usize].avail {
                Avail::Held(d) => {
                    let deadline = group.deliveries[d].deadline;
                    add(&mut in_flight, deadline > t1.i, deadline > t0.i);
                    add(&mut ready, deadline <= t0.i, deadline <= t1.i);
                }
                Avail::Free { lo, hi } => {
                    add(&mut ready, hi <= t0.w, lo <= t1.w);
                    add(&mut delayed, lo > t1.w, hi > t0.w);
                }
            }
        }
        for (name, value, (lo, hi)) in
            [("ready", m.ready, ready), ("delayed", m.delayed, delayed), ("in_flight", m.in_flight, in_flight)]
        {
            assert!((lo..=hi).contains(&value), "{what}: {name} not in {lo}..={hi}; window {tracked:?}; {m:?}");
        }
        assert_eq!(m.ready + m.delayed + m.in_flight, tracked.len() as u64, "{what}: the window {tracked:?}; {m:?}");
    }

    /// A process kill, or a power cut with `seed`, then a reopen; with
    /// `clean`, the engine is closed first. The deliveries of the old engine
    /// are kept (`keep`) to be settled later, or dropped.
    fn restart(&mut self, seed: Option<u64>, keep: bool, clean: bool) {
        // What a `Buffered` topic's acks and attempts leave on the disk is
        // not synced until the engine closes: without a clean close, its cut
        // is a kill.
        let cut = if self.setup.sync() || clean { seed } else { None };
        if trace() {
            eprintln!("op {}: restart, cut {cut:?}, keep {keep}, clean {clean}", self.step);
        }
        let take = |disk: &SimDisk| match cut {
            Some(seed) => disk.power_cut(seed),
            None => disk.kill_process(),
        };
        let disk = if clean { None } else { Some(take(&self.disk)) };
        if keep {
            let life = self.life();
            let old = [&life.workers[0][0], &life.workers[1][0]].map(Worker::clone);
            self.stale_workers.extend(old);
            let excess = self.stale_workers.len().saturating_sub(4);
            self.stale_workers.drain(..excess);
        } else {
            let life = self.life_id;
            self.open.retain(|o| o.life != life);
        }
        drop(self.life.take());
        self.disk = disk.unwrap_or_else(|| take(&self.disk));
        self.life_id += 1;
        self.reopens += 1;
        for group in &mut self.groups {
            if clean {
                // Closing the topic synced the group's journal.
                group.synced();
            }
            group.closed(cut.is_some(), now(&self.disk));
        }
        self.open_life(false);
    }

    /// Drops a group's workers and takes new ones: if no open delivery
    /// holds the group, it is closed (its journal synced) and opened again.
    fn rejoin(&mut self, g: usize) {
        let what = format!("op {}: rejoin {}", self.step, GROUPS[g]);
        let held = self.open.iter().any(|o| o.life == self.life_id && o.group == g);
        let mut life = self.life.take().expect("an engine is open");
        life.workers[g].clear();
        if !held {
            self.groups[g].closed(false, now(&self.disk));
        }
        life.workers[g] = self.join(&life.topic, g, &what);
        self.life = Some(life);
        if !held {
            self.groups[g].opened();
        }
        self.check_metrics(g);
    }

    /// Acks every open delivery, then receives and acks until the model
    /// has nothing unsettled; checks that nothing was lost.
    fn drain(&mut self) {
        self.open.retain(|o| o.life == self.life_id);
        while !self.open.is_empty() {
            self.ack(0);
        }
        let started = self.disk.now();
        for (g, name) in GROUPS.iter().enumerate() {
            loop {
                let left = self.groups[g].unsettled(&self.msgs);
                if left.is_empty() {
                    break;
                }
                let waited = self.disk.now() - started;
                assert!(waited < DRAIN_LIMIT, "drain of {name}: offsets {left:?} never came back (lost)");
                // Nothing else is open: the new delivery is the only one.
                if self.receive(g, 0, Duration::from_millis(20)).is_some() {
                    self.ack(0);
                } else {
                    // Waiting out delays and visibility timeouts.
                    self.disk.advance_clock(Duration::from_millis(1));
                }
            }
            self.check_metrics(g);
        }
        for (g, group) in self.groups.iter().enumerate() {
            for (o, msg) in self.msgs.iter().enumerate() {
                if group.matches(msg) {
                    assert_ne!(group.msgs[o].settled, Settled::No, "drain of {}: offset {o} unsettled", GROUPS[g]);
                }
            }
        }
    }

    /// After the drain: a power cut (or kill), a reopen, and nothing comes back.
    fn final_restart(&mut self, seed: u64) {
        self.restart(seed.is_multiple_of(2).then_some(seed), false, seed.is_multiple_of(3));
        for (g, name) in GROUPS.iter().enumerate() {
            assert!(self.receive(g, 1, Duration::ZERO).is_none(), "after the drain: {name} received a message");
            self.check_metrics(g);
        }
        self.expect_no_dead_letters("after the drain");
    }
}
