//! Operations on two topics of a simulated disk (`SimDisk`), decoded from raw
//! bytes and checked against a model, with power cuts in between. Shared by
//! the `log_ops` fuzz target (`fuzz/fuzz_targets/log_ops.rs`) and
//! `tests/fuzz_replay.rs`; `fuzz/seeds.py` writes its seed corpus.
//!
//! The model of a topic is the sequence of messages published to it (index =
//! offset), the set of frame ends (a batch is one frame), the offset below
//! which everything is known to be synced (an `Ok` from `sync`, or any `Ok`
//! publish on a `Durability::Sync` topic), and for each consumer group the
//! committed offsets a reopen may find. After every power cut the recovered
//! log must be a prefix of the published sequence (identical records at their
//! offsets, from `info().oldest` on, since retention may have dropped a
//! prefix) that holds at least everything synced and ends at a frame end
//! (the records compared: all of them in [`run_threaded`]; in [`run`], the
//! first, the last frame's and one in [`SAMPLE_STRIDE`], picked by the
//! input, see `Run::read_back`);
//! `verify` must pass; group offsets must be ones that were committed,
//! lowered to the recovered end. Between cuts, every publish, read,
//! subscription record, sync and commit is checked against the model too.
//!
//! Encoding (stops when the bytes run out, after [`MAX_OPS`] ops, or after
//! [`MAX_REOPENS`] reopens); every byte string is a valid input:
//!
//! - bytes 0 and 1 configure topics `a` and `b`: durability in bits 0-1
//!   (0 and 3: buffered, 1: sync, 2: interval of 10 s), segment size in
//!   bits 2-3 (4096, 5120, 6144, 8192 bytes), retention by bytes in bits 4-6
//!   (0-3: none, 4: 4096, 5: 8192, 6: 12288, 7: 20000);
//! - then each op is one byte (`byte % 12`) followed by its operands, where
//!   `flags` bit 0 picks the topic and, for group ops, bit 1 the group:
//!
//! | op | name        | operands |
//! |----|-------------|----------|
//! | 0  | publish     | flags (bit 1: a key, bits 2-3: header count), size |
//! | 1  | batch       | flags (bits 1-5: count - 1, mod 20; bit 6: keys and headers), size |
//! | 2  | sync        | flags |
//! | 3  | consume     | flags (bits 2-7: records to read) |
//! | 4  | commit      | flags (bit 2: `commit_at(position - bits 3-7)`, else `commit`) |
//! | 5  | unsubscribe | flags |
//! | 6  | read        | flags, which (bit 0: from the end, bits 1-7: distance) |
//! | 7  | fail after  | k: the disk dies after `k % 24` more syncs (once per engine life) |
//! | 8  | crash       | flags (bit 0: reopen with `repair`; bit 1: the disk dies again after bits 2-7 syncs of recovery, which is then cut and rerun), seed |
//! | 9  | restart     | flags (bit 0: `repair`; bit 1: cut the power after the clean close), seed |
//! | 10 | capacity    | c: 0 lifts the limit, else the disk holds 16 KiB + `c` KiB |
//! | 11 | check       | flags (bit 1: run a pass of the background work first, `Engine::run_background`) |
//!
//! A size byte `s` gives a payload of `s + s / 4` bytes (0 to 318). A crash
//! kills the disk, drops the engine, cuts the power with the seed and
//! reopens; a restart without a scheduled failure closes the engine cleanly
//! (so nothing may be lost); with one, it is a crash. Every run ends with a
//! crash.

use std::collections::BTreeSet;
use std::time::Duration;

use tollgate::{
    CommitError, Durability, Engine, EngineConfig, Message, Offset, PublishError, ReadError, Record, RecoveryMode,
    SimDisk, Subscription, Topic, TopicConfig, TopicError,
};

/// At most this many ops per run.
const MAX_OPS: usize = 200;
/// At most this many reopens (crashes and restarts) per run.
const MAX_REOPENS: usize = 8;
/// A reopen of [`run`] reads back one record in this many (and the first
/// and the last frame's); [`run_threaded`] reads back all of them.
const SAMPLE_STRIDE: u64 = 8;
/// The data directory on every simulated disk.
const DATA: &str = "/data";
const TOPICS: [&str; 2] = ["a", "b"];
const GROUPS: [&str; 2] = ["g0", "g1"];
/// Frame and entry header sizes (docs/FORMAT.md), for the batch size limit.
const FRAME_HEADER_BYTES: usize = 32;
const SEGMENT_HEADER_BYTES: usize = 32;
const ENTRY_HEADER_BYTES: usize = 8;
const MESSAGE_HEADER_PREFIX_BYTES: usize = 6;

/// Runs the input with every check and panics if one fails. (The bugs
/// the checks of [`run_with_known_bugs`] were written for are fixed, so this
/// is the same thing; it is kept for the `*_known_bugs_replay` tests.)
///
/// The engines have no flusher thread (`Engine::open_sim_without_flusher`):
/// the background work (syncing sealed segments, retention) runs at the
/// `check` ops that ask for it, so a run is deterministic and opens no
/// thread. After a reopen it reads back a sample of the records, which the
/// input picks (`Run::read_back`). [`run_threaded`] runs the same ops with
/// the thread and reads back every record.
pub fn run(data: &[u8]) {
    run_checks(data, true, false);
}

/// Runs the input as [`run`] does, but on engines with their flusher
/// thread, which may sync sealed segments and apply retention between any
/// two ops, and reads back every record after each reopen (slower: a
/// thread per engine, and every record; the `log_ops_threaded` target).
pub fn run_threaded(data: &[u8]) {
    run_checks(data, true, true);
}

/// Runs the ops with every check, including those for these bugs (all
/// fixed, each with a regression test in tests/fuzz_replay.rs):
///
/// - `load_slot` (src/log/topic.rs) finds a segment in the topic's map and
///   then stats its file; retention on the background thread may delete it
///   in between, and the read fails with an I/O error (`NotFound`) instead
///   of `NotRetained`. Reproducer: `fuzz/corpus/log_ops/bug-retention-race-*`
///   (a race: it fails only when the timing is right).
/// - `SlotFile::open` (src/log/slots.rs) takes the highest generation it
///   reads, but after a failed commit that slot holds bytes that were never
///   synced: the next commit then overwrites the other slot, the one with
///   the last durable value, and a power cut that tears it brings back an
///   older commit (the group goes back, past a commit that returned `Ok`).
///   Reproducer: `fuzz/corpus/log_ops/bug-group-commit-goes-back`.
pub fn run_with_known_bugs(data: &[u8]) {
    run_checks(data, true, true);
}

/// Whether `error` is the symptom of a known bug (and those are not checked).
fn known_bug(known_bugs: bool, error: &ReadError) -> bool {
    !known_bugs && matches!(error, ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
}

fn run_checks(data: &[u8], known_bugs: bool, threaded: bool) {
    let mut bytes = data.iter().copied();
    let configs = [topic_config(bytes.next().unwrap_or(0)), topic_config(bytes.next().unwrap_or(0))];
    let disk = SimDisk::new();
    disk.create_dir_all_durable(DATA).expect("create the data directory");
    let engine = open(&disk, false, threaded).unwrap_or_else(|e| panic!("open a fresh engine: {e}"));
    let topics = [0, 1].map(|t| {
        engine.create_topic(TOPICS[t], configs[t]).unwrap_or_else(|e| panic!("create topic {}: {e}", TOPICS[t]))
    });
    let mut run = Run {
        disk,
        life: Some(Life { _engine: engine, topics, subs: Default::default(), failing: false, capacity: false }),
        models: configs.map(TopicModel::new),
        published: 0,
        reopens: 0,
        step: 0,
        known_bugs,
        threaded,
    };
    for step in 0..MAX_OPS {
        run.step = step;
        let Some(op) = bytes.next() else { break };
        if run.op(op, &mut bytes).is_none() || run.reopens >= MAX_REOPENS {
            break;
        }
    }
    run.step = MAX_OPS;
    run.crash(false, None, data.len() as u64);
}

/// Whether to print each op (`TOLLGATE_FUZZ_TRACE` set), to debug an input.
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("TOLLGATE_FUZZ_TRACE").is_some())
}

/// A topic's configuration from its byte.
fn topic_config(byte: u8) -> TopicConfig {
    let durability = match byte & 3 {
        1 => Durability::Sync,
        2 => Durability::Interval(Duration::from_secs(10)),
        _ => Durability::Buffered,
    };
    let segment_bytes = [4096, 5120, 6144, 8192][usize::from((byte >> 2) & 3)];
    let retention_bytes =
        [None, None, None, None, Some(4096), Some(8192), Some(12288), Some(20000)][usize::from((byte >> 4) & 7)];
    TopicConfig { durability, segment_bytes, max_message_bytes: 1024, retention_bytes, retention_age: None }
}

/// Opens the engine, with its flusher thread if `threaded`.
fn open(disk: &SimDisk, repair: bool, threaded: bool) -> Result<Engine, tollgate::OpenError> {
    let config = EngineConfig {
        recovery: if repair { RecoveryMode::Repair } else { RecoveryMode::Normal },
        ..EngineConfig::default()
    };
    if threaded { Engine::open_sim(disk, DATA, config) } else { Engine::open_sim_without_flusher(disk, DATA, config) }
}

/// A message as the model keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    payload: Vec<u8>,
    key: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
}

impl Msg {
    /// The `number`-th message of the run: its payload starts with the number,
    /// so that no two messages are alike.
    fn new(number: u64, payload_bytes: usize, key: bool, headers: usize) -> Msg {
        let mut payload: Vec<u8> = (0..payload_bytes).map(|i| (number as usize * 31 + i) as u8).collect();
        let prefix = payload_bytes.min(8);
        payload[..prefix].copy_from_slice(&number.to_le_bytes()[..prefix]);
        Msg {
            payload,
            key: key.then(|| format!("k{}", number % 5)),
            headers: (0..headers).map(|i| (format!("h{i}"), vec![b'v'; (number as usize + i) % 9])).collect(),
        }
    }

    fn plain(&self) -> bool {
        self.key.is_none() && self.headers.is_empty()
    }

    fn message(&self) -> Message {
        let mut message = Message::new(self.payload.clone());
        if let Some(key) = &self.key {
            message = message.key(key.clone());
        }
        for (name, value) in &self.headers {
            message = message.header(name.clone(), value.clone());
        }
        message
    }

    /// Its entry's size in a frame.
    fn entry_bytes(&self) -> usize {
        ENTRY_HEADER_BYTES
            + self.key.as_ref().map_or(0, String::len)
            + self.headers.iter().map(|(n, v)| MESSAGE_HEADER_PREFIX_BYTES + n.len() + v.len()).sum::<usize>()
            + self.payload.len()
    }

    fn check(&self, record: &Record, what: &str) {
        assert_eq!(record.payload().as_ref(), &self.payload[..], "{what}: payload");
        assert_eq!(record.key(), self.key.as_deref(), "{what}: key");
        let headers: Vec<(String, Vec<u8>)> = record.headers().map(|(n, v)| (n.to_owned(), v.to_vec())).collect();
        assert_eq!(headers, self.headers, "{what}: headers");
    }
}

/// What a consumer group may have committed, durably.
#[derive(Debug, Clone)]
struct GroupModel {
    /// The values a reopen may find: the last `Ok` commit (`None`: never
    /// committed), and those of failed commits since, which a power cut may
    /// or may not have kept.
    candidates: Vec<Option<u64>>,
    /// Values committed (`Ok`) before the last one, in this engine's life:
    /// a known bug can bring one back (see [`run_with_known_bugs`]).
    older: Vec<Option<u64>>,
}

#[derive(Debug)]
struct TopicModel {
    config: TopicConfig,
    /// Every message in the live log, at its offset.
    msgs: Vec<Msg>,
    /// Timestamps seen for each offset, to compare after a reopen.
    timestamps: Vec<Option<u64>>,
    /// Frame ends: where a recovered log may end.
    ends: BTreeSet<u64>,
    /// Everything below this offset was synced.
    synced: u64,
    /// The oldest retained offset last seen in this engine's life.
    oldest: u64,
    groups: [GroupModel; 2],
}

impl TopicModel {
    fn new(config: TopicConfig) -> TopicModel {
        let group = GroupModel { candidates: vec![None], older: Vec::new() };
        TopicModel {
            config,
            msgs: Vec::new(),
            timestamps: Vec::new(),
            ends: BTreeSet::from([0]),
            synced: 0,
            oldest: 0,
            groups: [group.clone(), group],
        }
    }

    fn next(&self) -> u64 {
        self.msgs.len() as u64
    }

    /// Checks a record read at `offset` against the model, and remembers its
    /// timestamp.
    fn check(&mut self, offset: u64, record: &Record, what: &str) {
        let what = format!("{what}: record {offset}");
        assert_eq!(record.offset(), Offset::new(offset), "{what}: offset");
        let Some(msg) = self.msgs.get(offset as usize) else {
            panic!("{what}: beyond the {} records published", self.msgs.len())
        };
        msg.check(record, &what);
        let seen = &mut self.timestamps[offset as usize];
        match seen {
            Some(us) => assert_eq!(record.timestamp_us(), *us, "{what}: timestamp changed"),
            None => *seen = Some(record.timestamp_us()),
        }
    }

    fn append(&mut self, msgs: Vec<Msg>) {
        self.timestamps.extend(msgs.iter().map(|_| None));
        self.msgs.extend(msgs);
        self.ends.insert(self.next());
    }
}

/// One engine's life on the current disk.
struct Life {
    /// Held for the life: dropping the last handle closes the topics.
    _engine: Engine,
    topics: [Topic; 2],
    subs: [[Option<Subscription>; 2]; 2],
    /// A failure was scheduled: any write may fail from now on.
    failing: bool,
    /// A capacity limit is set: allocations may fail with `StorageFull`.
    capacity: bool,
}

struct Run {
    disk: SimDisk,
    /// `None` only inside a reopen.
    life: Option<Life>,
    models: [TopicModel; 2],
    /// Messages made so far (numbers them).
    published: u64,
    reopens: usize,
    step: usize,
    /// Check what known bugs break too (see [`run_with_known_bugs`]).
    known_bugs: bool,
    /// Engines run their flusher thread, and reopens read back every
    /// record rather than a sample (see [`run_threaded`]).
    threaded: bool,
}

/// Whether an I/O error says the disk is full.
fn is_full(error: &tollgate::IoError) -> bool {
    error.kind() == std::io::ErrorKind::StorageFull
}

impl Run {
    fn life(&mut self) -> &mut Life {
        self.life.as_mut().expect("an engine is open")
    }

    /// Runs one op; `None` when the bytes ran out inside it.
    fn op(&mut self, op: u8, bytes: &mut impl Iterator<Item = u8>) -> Option<()> {
        if trace() {
            let next = self.models.each_ref().map(TopicModel::next);
            eprintln!("op {}: {} (next {next:?})", self.step, op % 12);
        }
        match op % 12 {
            0 => {
                let (flags, size) = (bytes.next()?, bytes.next()?);
                self.publish(flags, size);
            }
            1 => {
                let (flags, size) = (bytes.next()?, bytes.next()?);
                self.batch(flags, size);
            }
            2 => self.sync(usize::from(bytes.next()? & 1)),
            3 => self.consume(bytes.next()?),
            4 => self.commit(bytes.next()?),
            5 => {
                let flags = bytes.next()?;
                self.life().subs[usize::from(flags & 1)][usize::from((flags >> 1) & 1)] = None;
            }
            6 => {
                let (flags, which) = (bytes.next()?, bytes.next()?);
                self.read(usize::from(flags & 1), which);
            }
            7 => {
                let k = bytes.next()?;
                // Once per life: a second call would bring a dead disk back,
                // which is not a power cut.
                if !self.life().failing {
                    self.disk.fail_after_syncs(u64::from(k % 24));
                    self.life().failing = true;
                }
            }
            8 => {
                let (flags, seed) = (bytes.next()?, bytes.next()?);
                let recovery_fails = (flags & 2 != 0).then_some(u64::from(flags >> 2));
                if trace() {
                    eprintln!("crash: repair {}, recovery fails after {recovery_fails:?}, seed {seed}", flags & 1);
                }
                self.crash(flags & 1 != 0, recovery_fails, u64::from(seed));
            }
            9 => {
                let (flags, seed) = (bytes.next()?, bytes.next()?);
                self.restart(flags & 1 != 0, flags & 2 != 0, u64::from(seed));
            }
            10 => {
                let c = bytes.next()?;
                let capacity = (c != 0).then(|| 16384 + u64::from(c) * 1024);
                self.disk.set_capacity(capacity);
                self.life().capacity = capacity.is_some();
            }
            _ => {
                let flags = bytes.next()?;
                if flags & 2 != 0 {
                    self.life()._engine.run_background();
                }
                self.check_live(usize::from(flags & 1));
            }
        }
        Some(())
    }

    fn new_msg(&mut self, payload_bytes: usize, key: bool, headers: usize) -> Msg {
        self.published += 1;
        Msg::new(self.published, payload_bytes, key, headers)
    }

    fn publish(&mut self, flags: u8, size: u8) {
        let t = usize::from(flags & 1);
        let size = usize::from(size) + usize::from(size) / 4;
        let msg = self.new_msg(size, flags & 2 != 0, usize::from((flags >> 2) & 3));
        let topic = self.life().topics[t].clone();
        let result = if msg.plain() { topic.publish(&msg.payload) } else { topic.publish_message(msg.message()) };
        self.published_result(t, vec![msg], result.map(|o| o..o.next()), "publish");
    }

    fn batch(&mut self, flags: u8, size: u8) {
        let t = usize::from(flags & 1);
        let count = 1 + usize::from((flags >> 1) & 31) % 20;
        let size = usize::from(size) + usize::from(size) / 4;
        let msgs: Vec<Msg> = (0..count)
            .map(|i| {
                let extras = flags & 64 != 0 && i % 2 == 1;
                self.new_msg((size + i * 37) % 319, extras, if extras { i % 3 } else { 0 })
            })
            .collect();
        let topic = self.life().topics[t].clone();
        let result = topic.publish_batch(msgs.iter().map(Msg::message));
        self.published_result(t, msgs, result, "publish_batch");
    }

    /// Checks a publish's result against the model and records what it appended.
    fn published_result(
        &mut self,
        t: usize,
        msgs: Vec<Msg>,
        result: Result<std::ops::Range<Offset>, PublishError>,
        what: &str,
    ) {
        let what = format!("op {}: {what} of {} message(s) to {}", self.step, msgs.len(), TOPICS[t]);
        let model = &self.models[t];
        let before = model.next();
        let count = msgs.len() as u64;
        let frame_bytes = FRAME_HEADER_BYTES + msgs.iter().map(Msg::entry_bytes).sum::<usize>();
        let too_large = frame_bytes > model.config.segment_bytes as usize - SEGMENT_HEADER_BYTES;
        let life = self.life.as_ref().expect("an engine is open");
        let (failing, capacity) = (life.failing, life.capacity);
        let next = life.topics[t].info().next.get();
        match result {
            Ok(range) => {
                assert!(!too_large, "{what}: a frame of {frame_bytes} bytes was accepted");
                assert_eq!(range, Offset::new(before)..Offset::new(before + count), "{what}: offsets");
                assert_eq!(next, before + count, "{what}: info().next after it");
                let model = &mut self.models[t];
                model.append(msgs);
                if model.config.durability == Durability::Sync {
                    model.synced = model.next();
                }
            }
            Err(PublishError::TooLarge { .. }) => {
                assert!(too_large, "{what}: TooLarge for a frame of {frame_bytes} bytes");
                assert_eq!(next, before, "{what}: refused, yet info().next moved");
            }
            Err(error) => {
                assert!(!too_large, "{what}: expected TooLarge, got {error}");
                match &error {
                    PublishError::Io(e) if is_full(e) => {
                        assert!(capacity, "{what}: disk full without a capacity limit: {error}");
                        assert_eq!(next, before, "{what}: a full disk must fail before anything is written");
                    }
                    PublishError::Io(_) | PublishError::PreviousIo => {
                        assert!(failing, "{what}: {error} on a disk that is not failing");
                    }
                    _ => panic!("{what}: unexpected error {error:?}"),
                }
                if next == before + count {
                    // Appended, then the sync that `Durability::Sync` waits
                    // for failed: readers see it, a power cut may take it.
                    assert_eq!(
                        self.models[t].config.durability,
                        Durability::Sync,
                        "{what}: failed ({error}) but appended"
                    );
                    self.models[t].append(msgs);
                } else {
                    assert_eq!(next, before, "{what}: failed ({error}), and info().next moved to {next}");
                }
            }
        }
    }

    fn sync(&mut self, t: usize) {
        let what = format!("op {}: sync of {}", self.step, TOPICS[t]);
        let life = self.life.as_ref().expect("an engine is open");
        match life.topics[t].sync() {
            Ok(()) => self.models[t].synced = self.models[t].next(),
            Err(PublishError::Io(_) | PublishError::PreviousIo) if life.failing => {}
            Err(error) => panic!("{what}: {error:?}"),
        }
    }

    /// The live subscription of a group, subscribing it if needed; `None`
    /// if subscribing failed on a failing disk.
    fn subscription(&mut self, t: usize, g: usize) -> Option<&mut Subscription> {
        let step = self.step;
        let life = self.life.as_mut().expect("an engine is open");
        if life.subs[t][g].is_none() {
            match life.topics[t].subscribe(GROUPS[g]) {
                Ok(sub) => life.subs[t][g] = Some(sub),
                Err(TopicError::Io(e)) if life.failing || life.capacity && is_full(&e) => return None,
                Err(error) => panic!("op {step}: subscribe {} to {}: {error:?}", GROUPS[g], TOPICS[t]),
            }
        }
        life.subs[t][g].as_mut()
    }

    fn consume(&mut self, flags: u8) {
        let (t, g) = (usize::from(flags & 1), usize::from((flags >> 1) & 1));
        let what = format!("op {}: {} reads {}", self.step, GROUPS[g], TOPICS[t]);
        let topic = self.life().topics[t].clone();
        let known_bugs = self.known_bugs;
        let mut records = Vec::new();
        let Some(sub) = self.subscription(t, g) else { return };
        for _ in 0..(flags >> 2) {
            let position = sub.position().get();
            match sub.next() {
                Ok(Some(record)) => records.push((position, record)),
                Ok(None) => {
                    assert_eq!(position, topic.info().next.get(), "{what}: None before the end");
                    break;
                }
                Err(ReadError::NotRetained { requested, oldest }) => {
                    assert_eq!(requested, position, "{what}: NotRetained names another offset");
                    assert!(oldest > position, "{what}: NotRetained at {position}, yet the oldest is {oldest}");
                    sub.seek(Offset::new(oldest)).unwrap_or_else(|e| panic!("{what}: seek to {oldest}: {e:?}"));
                }
                Err(error) if known_bug(known_bugs, &error) => break,
                Err(error) => panic!("{what}: at {position}: {error:?}"),
            }
        }
        for (position, record) in records {
            self.models[t].check(position, &record, &what);
        }
    }

    fn commit(&mut self, flags: u8) {
        let (t, g) = (usize::from(flags & 1), usize::from((flags >> 1) & 1));
        let what = format!("op {}: {} commits on {}", self.step, GROUPS[g], TOPICS[t]);
        let failing = self.life().failing;
        let Some(sub) = self.subscription(t, g) else { return };
        let offset = if flags & 4 != 0 {
            let offset = sub.position().get().saturating_sub(u64::from(flags >> 3));
            (offset, sub.commit_at(Offset::new(offset)))
        } else {
            (sub.position().get(), sub.commit())
        };
        if trace() {
            eprintln!("{what}: {offset:?}");
        }
        let group = &mut self.models[t].groups[g];
        match offset {
            (offset, Ok(())) => {
                assert_eq!(sub_committed(&self.life, t, g), offset, "{what}: committed() after commit");
                let before = std::mem::replace(&mut group.candidates, vec![Some(offset)]);
                group.older.extend(before);
            }
            (offset, Err(CommitError::Io(_))) if failing => group.candidates.push(Some(offset)),
            (offset, Err(error)) => panic!("{what}: commit of {offset}: {error:?}"),
        }
    }

    fn read(&mut self, t: usize, which: u8) {
        let topic = self.life().topics[t].clone();
        let info = topic.info();
        let (oldest, next) = (info.oldest.get(), info.next.get());
        let distance = u64::from(which >> 1);
        let offset = if which & 1 != 0 { next.saturating_sub(distance) } else { oldest + distance };
        let what = format!("op {}: read {} at {offset}", self.step, TOPICS[t]);
        match topic.read(Offset::new(offset)) {
            Ok(record) => {
                assert!(offset < next, "{what}: a record at or past the end {next}");
                self.models[t].check(offset, &record, &what);
            }
            Err(ReadError::NotWritten { requested, next: end }) => {
                assert_eq!((requested, end), (offset, next), "{what}: NotWritten");
                assert!(offset >= next, "{what}: NotWritten below the end {next}");
            }
            Err(ReadError::NotRetained { requested, oldest: first }) => {
                assert_eq!(requested, offset, "{what}: NotRetained");
                // Retention may have moved on since `info()`.
                assert!(offset < first && first >= oldest, "{what}: NotRetained, oldest {first} (was {oldest})");
            }
            Err(error) if known_bug(self.known_bugs, &error) => {}
            Err(error) => panic!("{what}: {error:?}"),
        }
    }

    /// Compares the live topic with the model: end, oldest, `verify`.
    fn check_live(&mut self, t: usize) {
        let what = format!("op {}: check of {}", self.step, TOPICS[t]);
        let topic = self.life().topics[t].clone();
        let model = &mut self.models[t];
        let info = topic.info();
        let (oldest, next) = (info.oldest.get(), info.next.get());
        assert_eq!(next, model.next(), "{what}: info().next");
        assert!(
            oldest >= model.oldest && oldest <= next,
            "{what}: oldest {oldest} (was {}), next {next}",
            model.oldest
        );
        assert!(model.ends.contains(&oldest), "{what}: oldest {oldest} is not a frame end");
        model.oldest = oldest;
        match topic.verify() {
            Ok(records) => assert!(records <= next - oldest, "{what}: verify() counted {records} records"),
            Err(error) if known_bug(self.known_bugs, &error) => {}
            Err(error) => panic!("{what}: verify(): {error:?}"),
        }
    }

    /// Kills the disk, drops the engine, cuts the power and reopens. With
    /// `recovery_fails`, the disk dies again after that many syncs of the
    /// recovery, and the recovery's disk is cut and recovered in turn.
    fn crash(&mut self, repair: bool, recovery_fails: Option<u64>, seed: u64) {
        self.disk.fail_after_syncs(0);
        self.disk.set_capacity(None);
        drop(self.life.take());
        self.disk = self.disk.power_cut(seed);
        if let Some(k) = recovery_fails {
            self.disk.fail_after_syncs(k);
            if let Ok(engine) = open(&self.disk, repair, self.threaded) {
                let _ = TOPICS.map(|name| engine.topic(name));
                self.disk.fail_after_syncs(0);
                drop(engine);
            }
            self.disk = self.disk.power_cut(seed ^ 0x5a5a);
        }
        self.reopen(repair, Shutdown::Crash, seed);
    }

    /// A clean close then a reopen, with a power cut in between if `cut`;
    /// nothing may be lost. With a failure scheduled, a crash.
    fn restart(&mut self, repair: bool, cut: bool, seed: u64) {
        if self.life().failing {
            self.crash(repair, None, seed);
            return;
        }
        self.disk.set_capacity(None);
        drop(self.life.take());
        if cut {
            self.disk = self.disk.power_cut(seed);
        }
        self.reopen(repair, if cut { Shutdown::CleanThenCut } else { Shutdown::Clean }, seed);
    }

    /// Opens an engine on the disk and checks each topic against the model;
    /// `seed` picks the records read back (see [`Run::read_back`]).
    fn reopen(&mut self, repair: bool, shutdown: Shutdown, seed: u64) {
        self.reopens += 1;
        let what = format!("op {}: reopen {} after {shutdown:?} (repair {repair})", self.step, self.reopens);
        let engine = open(&self.disk, repair, self.threaded).unwrap_or_else(|e| panic!("{what}: open: {e}"));
        assert_eq!(engine.topics().unwrap_or_else(|e| panic!("{what}: topics(): {e}")), TOPICS, "{what}: topics()");
        let topics =
            [0, 1].map(|t| engine.topic(TOPICS[t]).unwrap_or_else(|e| panic!("{what}: topic {}: {e}", TOPICS[t])));
        for (t, topic) in topics.iter().enumerate() {
            self.check_recovered(t, topic, shutdown, repair, seed, &what);
        }
        self.life = Some(Life { _engine: engine, topics, subs: Default::default(), failing: false, capacity: false });
    }

    /// The records a reopen reads back of a log that holds `oldest..next`:
    /// on engines with their thread (the `log_ops_threaded` target), every
    /// one; else the first, those of the last frame, and one in
    /// [`SAMPLE_STRIDE`] from the oldest on, at the place in the stride that
    /// the crash's or restart's seed byte picks (bits 5-7), so that an input
    /// reaches any record. `verify` still checks every frame; the sample is
    /// what is compared with the model.
    fn read_back(&self, t: usize, oldest: u64, next: u64, seed: u64) -> Vec<u64> {
        let last_frame = self.models[t].ends.range(..next).next_back().copied().unwrap_or(0);
        let phase = (seed >> 5) % SAMPLE_STRIDE;
        (oldest..next)
            .filter(|&offset| {
                self.threaded || offset == oldest || offset >= last_frame || (offset - oldest) % SAMPLE_STRIDE == phase
            })
            .collect()
    }

    fn check_recovered(&mut self, t: usize, topic: &Topic, shutdown: Shutdown, repair: bool, seed: u64, what: &str) {
        let known_bugs = self.known_bugs;
        let clean = shutdown != Shutdown::Crash;
        let what = format!("{what}: topic {}", TOPICS[t]);
        let info = topic.info();
        let (oldest, next) = (info.oldest.get(), info.next.get());
        let sampled = self.read_back(t, oldest, next, seed);
        let model = &mut self.models[t];
        assert_eq!(info.config, model.config, "{what}: configuration");
        assert!(next <= model.next(), "{what}: recovered {next} records, only {} were ever published", model.next());
        assert!(next >= model.synced, "{what}: recovered {next} records, {} were synced", model.synced);
        if clean {
            assert_eq!(next, model.next(), "{what}: records lost across a clean close");
        }
        assert!(model.ends.contains(&next), "{what}: the log ends at {next}, inside a batch");
        assert!(oldest <= next, "{what}: oldest {oldest} past next {next}");
        assert!(model.ends.contains(&oldest), "{what}: the log starts at {oldest}, inside a batch");
        assert_eq!(info.durable.get(), next, "{what}: info().durable after recovery");
        let report = topic.recovery_report();
        if trace() {
            eprintln!("{what}: {info:?}, {report:?}");
        }
        match shutdown {
            Shutdown::Clean => {
                assert_eq!(report.clean, !repair, "{what}: recovery_report().clean after a clean close; {report:?}")
            }
            // Known bug (see `clean_close_survives_a_power_cut` in
            // tests/fuzz_replay.rs): the close does not sync the directory
            // after writing the active segment's index, so a cut may lose
            // the index and with it the clean mark; nothing else is lost.
            Shutdown::CleanThenCut => {}
            // A crash may still look clean: when the disk dies right after the
            // close synced everything, the unsynced clean mark can reach the
            // disk. The open then checks the active segment against the mark
            // (and fails the topic if it does not match), so that is safe.
            Shutdown::Crash => {}
        }
        // Retention (the engine's background thread) may drop segments
        // while this runs: a read may find its record gone, and `verify`
        // counts only the segments still there when it reaches them.
        let mut retained = oldest;
        for offset in sampled {
            match topic.read(Offset::new(offset)) {
                Ok(record) => model.check(offset, &record, &what),
                Err(ReadError::NotRetained { oldest: now, .. })
                    if now > offset && model.config.retention_bytes.is_some() =>
                {
                    retained = retained.max(now);
                }
                Err(error) if known_bug(known_bugs, &error) => {}
                Err(error) => panic!("{what}: read({offset}): {error:?}"),
            }
        }
        match topic.verify() {
            Ok(verified) => {
                let oldest_after = topic.info().oldest.get().max(retained);
                assert!(
                    (next - oldest_after..=next - oldest).contains(&verified),
                    "{what}: verify() counted {verified} records; oldest went from {oldest} to {oldest_after}, next {next}"
                );
            }
            Err(error) if known_bug(known_bugs, &error) => {}
            Err(error) => panic!("{what}: verify(): {error:?}"),
        }
        model.msgs.truncate(next as usize);
        model.timestamps.truncate(next as usize);
        model.ends.retain(|&end| end <= next);
        model.synced = next;
        model.oldest = oldest;
        let known_bugs = self.known_bugs;
        for (g, group) in model.groups.iter_mut().enumerate() {
            let sub = topic.subscribe(GROUPS[g]).unwrap_or_else(|e| panic!("{what}: subscribe {}: {e}", GROUPS[g]));
            let committed = sub.committed().get();
            // A group that never committed starts at the oldest record, which
            // retention may have moved.
            let oldest_now = topic.info().oldest.get();
            let found = |candidate: &&Option<u64>| match candidate {
                Some(c) => (*c).min(next) == committed,
                None => (oldest..=oldest_now).contains(&committed),
            };
            if !known_bugs && !group.candidates.iter().any(|c| found(&c)) && group.older.iter().any(|c| found(&c)) {
                // The known bug: an older commit came back.
                group.candidates = group.older.clone();
            }
            group.older.clear();
            assert!(
                group.candidates.iter().any(|c| found(&c)),
                "{what}: group {} resumes at {committed}; expected one of {:?} (lowered to {next}, or {oldest} if none)",
                GROUPS[g],
                group.candidates
            );
            let candidates: BTreeSet<Option<u64>> =
                group.candidates.iter().filter(found).map(|c| c.map(|c| c.min(next))).collect();
            group.candidates = candidates.into_iter().collect();
        }
    }
}

/// How the engine before a reopen ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    /// Closed cleanly; no power cut.
    Clean,
    /// Closed cleanly, then a power cut.
    CleanThenCut,
    /// The disk died, then a power cut.
    Crash,
}

/// The group's committed offset as its live subscription reports it.
fn sub_committed(life: &Option<Life>, t: usize, g: usize) -> u64 {
    let life = life.as_ref().expect("an engine is open");
    life.subs[t][g].as_ref().expect("subscribed").committed().get()
}
