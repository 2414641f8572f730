//! Arbitrary bytes fed to the one reader the engine has for each kind of
//! file (through `tollgate::fuzzing`, feature `fuzzing`), with the checks of
//! the decoder fuzz targets (`fuzz/fuzz_targets/decode_*.rs`), which
//! `tests/fuzz_replay.rs` also runs over `fuzz/corpus/decode_*/` on stable.
//! Their seeds are files a real engine wrote (`write_seeds`).
//!
//! Every reader must return a typed verdict without panicking, and:
//!
//! - `checkpoint`, `offsets` (two-slot files): a valid newest slot, written
//!   to a new file by the engine's writer, reads back as the same slot; a
//!   checkpoint without a clean mark has words B and C zero; a damaged
//!   header is damaged inside the header; a newer version is newer; a file
//!   of one kind is never a valid file of the other;
//! - `meta` (`tollgate.meta`): valid exactly when it is the bytes the
//!   engine writes; a newer version is newer;
//! - `topic_conf` (`topic.conf`): a configuration that reads is one the
//!   engine accepts, and its encoding reads back as it; an error is
//!   `Corrupt` naming the file and a byte inside it, or `NewerVersion`;
//! - `state` (a worker group's state file): what decodes strictly also
//!   salvages to the same state; whatever decodes or salvages is a state the
//!   engine can write, and its encoding decodes back to it; damage is placed
//!   inside the file, and a newer version is not salvaged;
//! - `journal` (a group's journal replayed onto a state file): input is a
//!   state file's length (2 bytes), the state file, then the journal; a
//!   strict replay (a plain open) that succeeds gives what repair gives;
//!   both give states the engine can write; damage is placed inside the
//!   journal;
//! - `frame`: input is the offset expected (8 bytes), then the frame; a
//!   frame that checks has as many records as it says, at consecutive
//!   offsets from the expected one, inside its bytes, each with a readable
//!   key, headers and payload.

use tollgate::fuzzing::{self, GroupFault, GroupState, MetaVerdict, SlotKind, SlotVerdict};
use tollgate::{TopicConfig, TopicError};

/// A `checkpoint`'s bytes.
pub fn checkpoint(data: &[u8]) {
    slot_file(SlotKind::Checkpoint, SlotKind::Offset, data);
}

/// A `<group>.offset`'s bytes.
pub fn offsets(data: &[u8]) {
    slot_file(SlotKind::Offset, SlotKind::Checkpoint, data);
}

fn slot_file(kind: SlotKind, other: SlotKind, data: &[u8]) {
    let verdict = fuzzing::read_slot_file(kind, data);
    match verdict {
        SlotVerdict::Valid(Some(slot)) => {
            assert_ne!(slot.generation, 0, "a valid slot of generation 0");
            if kind == SlotKind::Checkpoint && slot.words.2 == 0 {
                assert_eq!(slot.words.1, 0, "a checkpoint without a clean mark kept word B");
            }
            let rewritten = fuzzing::encode_slot_file(kind, slot);
            assert_eq!(fuzzing::read_slot_file(kind, &rewritten), verdict, "the slot did not read back");
        }
        SlotVerdict::DamagedHeader(at) => assert!(at < 16, "header damage placed at {at}"),
        SlotVerdict::Newer(found) => assert!(found > fuzzing::VERSION, "newer version {found}"),
        SlotVerdict::UsedUp(at) => assert!(at == 16 || at == 48, "a used-up slot placed at {at}"),
        SlotVerdict::Valid(None) | SlotVerdict::HalfCreated | SlotVerdict::NotSlotFile | SlotVerdict::NoValidSlot => {}
    }
    if let SlotVerdict::Valid(_)
    | SlotVerdict::Newer(_)
    | SlotVerdict::DamagedHeader(_)
    | SlotVerdict::NoValidSlot
    | SlotVerdict::UsedUp(_) = verdict
    {
        assert_eq!(
            fuzzing::read_slot_file(other, data),
            SlotVerdict::NotSlotFile,
            "a {kind:?} file ({verdict:?}) is also a {other:?} file"
        );
    }
}

/// A `tollgate.meta`'s bytes.
pub fn meta(data: &[u8]) {
    match fuzzing::read_meta(data) {
        MetaVerdict::Valid => assert_eq!(data, fuzzing::encode_meta_file(), "a valid meta file unlike the engine's"),
        MetaVerdict::Newer(found) => assert!(found > fuzzing::VERSION, "newer version {found}"),
        MetaVerdict::Invalid => assert_ne!(data, fuzzing::encode_meta_file(), "the engine's meta file refused"),
    }
}

/// A `topic.conf`'s bytes.
pub fn topic_conf(data: &[u8]) {
    match fuzzing::read_topic_conf(data) {
        Ok(config) => {
            assert!(fuzzing::topic_config_is_valid(&config), "{config:?} read, but the engine refuses it");
            let rewritten = fuzzing::encode_topic_conf(&config);
            let again: TopicConfig = fuzzing::read_topic_conf(&rewritten).expect("the rewritten file reads");
            assert_eq!(again, config, "the configuration did not read back");
        }
        Err(TopicError::Corrupt(c)) => {
            assert_eq!(c.file, std::path::Path::new(fuzzing::TOPIC_CONF_PATH), "{c:?}");
            assert!(c.position < data.len().max(1) as u64, "damage placed at {} of {}", c.position, data.len());
        }
        Err(TopicError::NewerVersion { found, supported, .. }) => {
            assert!(found > supported && supported == fuzzing::VERSION, "newer version {found} of {supported}");
        }
        Err(error) => panic!("topic.conf: unexpected error {error:?}"),
    }
}

/// Checks that `state` is one the engine writes, and that its encoding
/// decodes back to it.
fn check_writable(state: &GroupState, what: &str) {
    let Some(bytes) = fuzzing::encode_state(state) else { panic!("{what}: {state:?} is no state file's") };
    assert_eq!(fuzzing::decode_state(&bytes).as_ref(), Ok(state), "{what}: the state did not read back");
}

fn check_fault(fault: GroupFault, len: usize, what: &str) {
    match fault {
        GroupFault::Damaged { position, reason } => {
            assert!(position <= len as u64, "{what}: damage placed at {position} of {len} bytes ({reason})")
        }
        GroupFault::Newer(found) => assert!(found > fuzzing::VERSION, "{what}: newer version {found}"),
    }
}

/// A worker group's state file's bytes.
pub fn state(data: &[u8]) {
    let salvaged = fuzzing::salvage_state(data);
    match fuzzing::decode_state(data) {
        Ok(decoded) => {
            assert_eq!(salvaged.as_ref(), Some(&decoded), "a state file that decodes salvages otherwise");
            check_writable(&decoded, "decoded");
        }
        Err(fault) => {
            check_fault(fault, data.len(), "state file");
            if let GroupFault::Newer(_) = fault {
                assert_eq!(salvaged, None, "a newer state file was salvaged");
            }
        }
    }
    if let Some(salvaged) = &salvaged {
        check_writable(salvaged, "salvaged");
    }
}

/// A state file's length (2 bytes), the state file, then a journal.
pub fn journal(data: &[u8]) {
    let (state_len, rest) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => return,
    };
    let (state_bytes, journal) = rest.split_at(state_len.min(rest.len()));
    let state = fuzzing::decode_state(state_bytes).unwrap_or(GroupState {
        generation: 1,
        low: 0,
        settled: Vec::new(),
        facts: Vec::new(),
    });
    let strict = fuzzing::replay_journal(&state, journal, true).expect("a state file's state");
    let repaired = fuzzing::replay_journal(&state, journal, false).expect("a state file's state");
    match &strict {
        Ok(replayed) => {
            assert_eq!(repaired.as_ref(), Ok(replayed), "a journal that replays strictly repairs otherwise");
            assert_eq!(replayed.generation, state.generation, "the replay changed the generation");
            check_writable(replayed, "replayed");
        }
        Err(fault) => check_fault(*fault, journal.len(), "journal"),
    }
    match repaired {
        Ok(repaired) => check_writable(&repaired, "repaired"),
        Err(fault) => {
            assert!(matches!(fault, GroupFault::Newer(_)), "repair refused a journal: {fault:?}");
            assert_eq!(strict, Err(fault), "only the plain open found a newer journal");
        }
    }
}

/// The offset expected (8 bytes), then a frame.
pub fn frame(data: &[u8]) {
    let Some((offset, bytes)) = data.split_first_chunk::<8>() else { return };
    let offset = u64::from_le_bytes(*offset);
    let Ok(frame) = fuzzing::read_frame(bytes, offset) else { return };
    assert!(frame.len <= bytes.len(), "a frame of {} bytes in {}", frame.len, bytes.len());
    assert_eq!(frame.first_offset.get(), offset, "the frame starts elsewhere");
    assert!(!frame.records.is_empty(), "a frame without records");
    for (i, record) in frame.records.iter().enumerate() {
        assert_eq!(record.offset().get(), offset + i as u64, "record {i}'s offset");
        assert_eq!(record.timestamp_us(), frame.timestamp_us, "record {i}'s timestamp");
        let inside = record.key().map_or(0, str::len)
            + record.headers().map(|(name, value)| name.len() + value.len()).sum::<usize>()
            + record.payload().len();
        assert!(inside <= frame.len, "record {i} holds {inside} bytes of a {}-byte frame", frame.len);
        let _ = (record.priority(), record.deliver_at_us());
    }
}

/// A target's checks of one input.
pub type Check = fn(&[u8]);

/// The decoder targets, with their checks.
pub const TARGETS: [(&str, Check); 7] = [
    ("decode_checkpoint", checkpoint),
    ("decode_offsets", offsets),
    ("decode_meta", meta),
    ("decode_topic_conf", topic_conf),
    ("decode_state", state),
    ("decode_journal", journal),
    ("decode_frame", frame),
];

/// Writes each decoder target's seeds to `corpus/<target>/` from the files
/// of real data directories: topics of each durability with groups that
/// committed and worker groups that received, acked and nacked, copied
/// while the engine is open (unclean checkpoint, journals in use) and after
/// it closed.
pub fn write_seeds(corpus: &std::path::Path) {
    use std::time::Duration;
    use tollgate::{Durability, Engine, Message};
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let dir = scratch.path().join("data");
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    let mut take = |dir: &std::path::Path, tag: &str| {
        let read = |path: &str| std::fs::read(dir.join(path)).ok();
        let mut take = |target, name: String, bytes| seeds.push((target, format!("{tag}-{name}"), bytes));
        take("decode_meta", "meta".into(), read("tollgate.meta").expect("the meta file"));
        for topic in ["sync", "interval", "buffered"] {
            let topic_dir = format!("topics/{topic}");
            take("decode_topic_conf", topic.into(), read(&format!("{topic_dir}/topic.conf")).expect("topic.conf"));
            take("decode_checkpoint", topic.into(), read(&format!("{topic_dir}/checkpoint")).expect("checkpoint"));
            if let Some(bytes) = read(&format!("{topic_dir}/groups/billing.offset")) {
                take("decode_offsets", topic.into(), bytes);
            }
            for group in ["payments", "mail"] {
                let Some(state) = read(&format!("{topic_dir}/queues/{group}/state")) else { continue };
                let journal = read(&format!("{topic_dir}/queues/{group}/journal")).unwrap_or_default();
                let mut input = (state.len() as u16).to_le_bytes().to_vec();
                input.extend_from_slice(&state);
                // The journal's entries in use, and a few slots after them.
                let used = journal.iter().rposition(|&b| b != 0).map_or(0, |at| (at / 32 + 3) * 32);
                input.extend_from_slice(&journal[..used.min(journal.len())]);
                take("decode_state", format!("{topic}-{group}"), state);
                take("decode_journal", format!("{topic}-{group}"), input);
            }
            let segment = read(&format!("{topic_dir}/00000000000000000000.log")).expect("the first segment");
            let (mut at, mut offset) = (32, 0u64);
            for i in 0..4 {
                let Ok(frame) = fuzzing::read_frame(&segment[at..], offset) else { break };
                let mut input = offset.to_le_bytes().to_vec();
                input.extend_from_slice(&segment[at..at + frame.len]);
                take("decode_frame", format!("{topic}-{i}"), input);
                at += frame.len;
                offset += frame.records.len() as u64;
            }
        }
    };
    let engine = Engine::open(&dir).expect("open");
    let durabilities = [
        ("sync", Durability::Sync),
        ("interval", Durability::Interval(Duration::from_millis(5))),
        ("buffered", Durability::Buffered),
    ];
    for (round, (name, durability)) in durabilities.into_iter().enumerate() {
        let config = TopicConfig {
            durability,
            segment_bytes: 4096 << round,
            max_message_bytes: 1024,
            retention_bytes: (round == 1).then_some(65536),
            retention_age: (round == 2).then_some(Duration::from_secs(3600)),
        };
        let topic = engine.create_topic(name, config).expect("create");
        engine.topic(&format!("{name}.dlq")).expect("the dead-letter topic");
        topic.publish(b"one").expect("publish");
        let message = Message::new("two").key("order.1").header("type", "created").priority(3);
        topic.publish_message(message).expect("publish");
        topic.publish_batch((0..3).map(|i| Message::new(vec![b'x'; 10 * i]).key(format!("k{i}")))).expect("batch");
        let mut billing = topic.subscribe("billing").expect("subscribe");
        billing.next().expect("read");
        billing.commit().expect("commit");
        for group in ["payments", "mail"] {
            let worker = topic.worker(group).expect("a worker");
            let first = worker.receive(Duration::ZERO).expect("receive").expect("published");
            let second = worker.receive(Duration::ZERO).expect("receive").expect("published");
            first.ack().expect("ack");
            if group == "payments" {
                second.nack(Duration::from_secs(60), "later").expect("nack");
            }
        }
        billing.next().expect("read");
        billing.commit().expect("commit");
    }
    take(&dir, "open");
    drop(engine);
    take(&dir, "closed");
    for (target, name, bytes) in seeds {
        let target_dir = corpus.join(target);
        std::fs::create_dir_all(&target_dir).expect("create the corpus directory");
        std::fs::write(target_dir.join(format!("seed-{name}")), bytes).expect("write a seed");
    }
}
