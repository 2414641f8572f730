//! Damage to each kind of file, and files of a newer format version: one
//! flipped bit is reported as damage where it is (never as a newer version),
//! `repair` handles it, and a newer file is refused and never rewritten.

use std::path::{Path, PathBuf};
use std::time::Duration;

#[allow(dead_code)] // only `below` is used here
#[path = "support/rng.rs"]
mod rng;

use rng::Rng;
use tempfile::TempDir;
use tollgate::inspect::Directory;
use tollgate::{Corruption, Engine, EngineConfig, OpenError, RecoveryMode, StartAt, TopicError};

/// Messages the fixture publishes to `t`, and how many of them its worker
/// group `w` acknowledges (in order, one at a time).
const MESSAGES: u64 = 60;
const ACKED: u64 = 50;

/// A data directory, cleanly closed, with topic `t` holding `MESSAGES`
/// records, a subscription group `billing` that committed 10, and a worker
/// group `w` that acknowledged the first `ACKED`.
fn fixture() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let topic = engine.topic("t").unwrap();
    for i in 0..MESSAGES {
        topic.publish(format!("order {i}")).unwrap();
    }
    let mut billing = topic.subscribe_with("billing", StartAt::Earliest).unwrap();
    billing.commit_at(tollgate::Offset::new(10)).unwrap();
    let worker = topic.worker("w").unwrap();
    for i in 0..ACKED {
        let delivery = worker.receive(Duration::from_secs(5)).unwrap().expect("a message");
        assert_eq!(delivery.offset().get(), i);
        delivery.ack().unwrap();
    }
    dir
}

fn repair_config() -> EngineConfig {
    EngineConfig { recovery: RecoveryMode::Repair, ..EngineConfig::default() }
}

/// The files of the fixture, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Meta,
    TopicConf,
    Segment,
    Checkpoint,
    Offset,
    State,
    Journal,
}

const KINDS: [Kind; 7] =
    [Kind::Meta, Kind::TopicConf, Kind::Segment, Kind::Checkpoint, Kind::Offset, Kind::State, Kind::Journal];

impl Kind {
    fn path(self, dir: &Path) -> PathBuf {
        let topic = dir.join("topics/t");
        match self {
            Kind::Meta => dir.join("tollgate.meta"),
            Kind::TopicConf => topic.join("topic.conf"),
            Kind::Segment => topic.join("00000000000000000000.log"),
            Kind::Checkpoint => topic.join("checkpoint"),
            Kind::Offset => topic.join("groups/billing.offset"),
            Kind::State => topic.join("queues/w/state"),
            Kind::Journal => topic.join("queues/w/journal"),
        }
    }

    /// Rewrites the CRC that covers the version field, as a newer build
    /// writing the file would (the table in FORMAT.md, "Version changes").
    fn reseal(self, bytes: &mut [u8]) {
        let (at, crc) = match self {
            Kind::Meta | Kind::Checkpoint | Kind::Offset => (12, crc32fast::hash(&bytes[..12])),
            Kind::TopicConf => (60, crc32fast::hash(&bytes[..60])),
            Kind::Segment => (24, crc32fast::hash(&bytes[..24])),
            Kind::State => {
                let mut hasher = crc32fast::Hasher::new();
                hasher.update(&bytes[..12]);
                hasher.update(&bytes[16..40]);
                (12, hasher.finalize())
            }
            Kind::Journal => (28, crc32fast::hash(&bytes[..28])),
        };
        bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// What opening the directory as far as the file of `kind` gives: the
/// engine, topic `t`, subscription group `billing`, worker group `w`.
#[derive(Debug)]
enum Opened {
    Fine,
    Engine(OpenError),
    Topic(TopicError),
}

fn open_through(dir: &Path, kind: Kind, config: EngineConfig) -> Opened {
    let engine = match Engine::open_with(dir, config) {
        Ok(engine) => engine,
        Err(e) => return Opened::Engine(e),
    };
    let topic = match engine.topic("t") {
        Ok(topic) => topic,
        Err(e) => return Opened::Topic(e),
    };
    let opened = match kind {
        Kind::Offset => topic.subscribe("billing").map(drop),
        Kind::State | Kind::Journal => topic.worker("w").map(drop),
        _ => Ok(()),
    };
    match opened {
        Ok(()) => Opened::Fine,
        Err(e) => Opened::Topic(e),
    }
}

fn flip(path: &Path, byte: usize, bit: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[byte] ^= 1 << bit;
    std::fs::write(path, bytes).unwrap();
}

/// What `verify` (the read-only inspector) reports as damaged.
fn verify_damage(dir: &Path) -> Vec<Corruption> {
    let report = Directory::open(dir).unwrap().verify(|_, _| {}).unwrap();
    report.topics.into_iter().flat_map(|t| t.damaged.into_iter().chain(t.cut.map(|c| c.at))).collect()
}

/// Issue 12, item 4: a flipped bit in any file's version field read as a
/// newer version ("checkpoint has format version 513"), unopenable even by
/// repair, and was reported at byte 0.
#[test]
fn a_flipped_version_bit_is_damage_at_the_version_field_never_a_newer_version() {
    for kind in KINDS {
        let dir = fixture();
        let path = kind.path(dir.path());
        flip(&path, 9, 1); // version 1 -> 513
        match open_through(dir.path(), kind, EngineConfig::default()) {
            Opened::Engine(OpenError::NotTollgate { reason, .. }) if kind == Kind::Meta => {
                assert!(reason.contains("tollgate.meta is damaged"), "{reason}");
            }
            Opened::Topic(TopicError::Corrupt(c)) => {
                assert_eq!((c.file.as_path(), c.position), (path.as_path(), 8), "{kind:?}: {c}");
            }
            other => panic!("{kind:?}: a flipped version bit must be damage at byte 8, not {other:?}"),
        }
        if kind != Kind::Meta {
            // Where opening the topic says, a segment's header too (its cut
            // then removes the whole file).
            let damage = verify_damage(dir.path());
            assert!(damage.iter().any(|c| c.file == path && c.position == 8), "{kind:?}: verify says {damage:?}");
        }
        // Repair handles it, except in topic.conf, whose settings cannot be
        // rebuilt from anything else.
        let repaired = open_through(dir.path(), kind, repair_config());
        if kind == Kind::TopicConf {
            assert!(matches!(repaired, Opened::Topic(TopicError::Corrupt(_))), "{kind:?}: {repaired:?}");
        } else {
            assert!(matches!(repaired, Opened::Fine), "{kind:?}: repair left {repaired:?}");
            assert!(matches!(open_through(dir.path(), kind, EngineConfig::default()), Opened::Fine), "{kind:?}");
        }
    }
}

/// Issue 12, item 5: a worker journal of a newer version was discarded and
/// rewritten as version 1. No file of a newer version may be rewritten, by
/// opening or by repair.
#[test]
fn a_newer_version_is_refused_and_never_rewritten() {
    for kind in KINDS {
        let dir = fixture();
        let path = kind.path(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        kind.reseal(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        for config in [EngineConfig::default(), repair_config()] {
            match open_through(dir.path(), kind, config) {
                Opened::Engine(OpenError::NewerVersion { path: p, found: 2, supported: 1 })
                | Opened::Topic(TopicError::NewerVersion { path: p, found: 2, supported: 1 }) => {
                    assert_eq!(p, path, "{kind:?}");
                }
                other => panic!("{kind:?} ({:?}): a newer version must be refused, not {other:?}", config.recovery),
            }
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{kind:?} was rewritten");
        }
    }
}

/// The fixture's journal entry `i` (entries follow a 32-byte header and two
/// 16-byte synced marks).
fn entry_at(i: usize) -> usize {
    64 + 32 * i
}

/// Issue 12, item 3: one flipped bit in a journal entry made `verify` say
/// clean, repair find nothing, and the group reopen with acks lost.
#[test]
fn a_flipped_bit_in_a_journal_entry_is_reported_and_repair_keeps_the_other_acks() {
    let dir = fixture();
    let journal = Kind::Journal.path(dir.path());
    // Entries: delivered 0, settled 0, delivered 1, settled 1, ...: entry 3
    // settles offset 1.
    flip(&journal, entry_at(3) + 16, 0);
    let damage = verify_damage(dir.path());
    assert!(
        damage.iter().any(|c| c.file == journal && c.position == entry_at(3) as u64),
        "verify must name the journal and the entry's byte: {damage:?}"
    );
    match open_through(dir.path(), Kind::Journal, EngineConfig::default()) {
        Opened::Topic(TopicError::Corrupt(c)) => assert_eq!((c.file, c.position), (journal.clone(), 160)),
        other => panic!("the damaged group must not open as if nothing happened: {other:?}"),
    }
    // Repair drops the damaged entry only: offset 1 is delivered again, and
    // none of the other 49 acknowledged messages is.
    {
        let engine = Engine::open_with(dir.path(), repair_config()).unwrap();
        let worker = engine.topic("t").unwrap().worker("w").unwrap();
        let mut delivered = Vec::new();
        while let Some(delivery) = worker.receive(Duration::from_millis(200)).unwrap() {
            delivered.push(delivery.offset().get());
            delivery.ack().unwrap();
        }
        let mut expected = vec![1];
        expected.extend(ACKED..MESSAGES);
        assert_eq!(delivered, expected);
    }
    assert!(verify_damage(dir.path()).is_empty());
}

/// Issue 12, item 3: of 172 random journal mutations, none produced an
/// error. Every flipped bit in the journal's header, marks and written
/// entries is either reported as damage naming the journal, or loses
/// nothing (a mark slot whose twin still holds the count).
#[test]
fn random_bit_flips_in_a_journal_are_reported_or_lose_nothing() {
    let dir = fixture();
    let files = [Kind::State.path(dir.path()), Kind::Journal.path(dir.path())];
    let pristine: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let written = entry_at(2 * ACKED as usize);
    let mut rng = Rng::new(12);
    let (mut reported, mut harmless) = (0, 0);
    for _ in 0..200 {
        for (file, bytes) in files.iter().zip(&pristine) {
            std::fs::write(file, bytes).unwrap();
        }
        let byte = rng.below(written as u64) as usize;
        flip(&files[1], byte, rng.below(8) as u8);
        let engine = Engine::open(dir.path()).unwrap();
        let topic = engine.topic("t").unwrap();
        match topic.worker("w") {
            Err(TopicError::Corrupt(c)) => {
                assert_eq!(c.file, files[1]);
                reported += 1;
            }
            Ok(worker) => {
                assert!((32..64).contains(&byte), "a flip at byte {byte} outside the marks went unreported");
                let next = worker.receive(Duration::from_millis(100)).unwrap().expect("an unacknowledged message");
                assert_eq!(next.offset().get(), ACKED, "a flip at byte {byte} lost acks");
                harmless += 1;
            }
            Err(e) => panic!("flip at byte {byte}: {e}"),
        }
    }
    assert!(reported > 150 && harmless > 0, "{reported} reported, {harmless} harmless");
}

/// Every mutation of `tollgate.meta` made the directory unopenable with no
/// way back: repair now rewrites it when the rest is a tollgate layout, and
/// refuses anything else.
#[test]
fn repair_rewrites_a_damaged_meta_file_of_a_tollgate_layout_only() {
    let dir = fixture();
    let meta = Kind::Meta.path(dir.path());
    std::fs::write(&meta, b"garbage").unwrap();
    assert!(matches!(Engine::open(dir.path()), Err(OpenError::NotTollgate { .. })));
    {
        let engine = Engine::open_with(dir.path(), repair_config()).unwrap();
        assert_eq!(engine.topic("t").unwrap().info().next.get(), MESSAGES);
    }
    assert!(Engine::open(dir.path()).is_ok());

    // A directory with a damaged meta file and anything but a tollgate
    // layout is refused, and nothing is written.
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir(other.path().join("topics")).unwrap();
    std::fs::write(other.path().join("tollgate.meta"), b"garbage").unwrap();
    std::fs::write(other.path().join("notes.txt"), b"mine").unwrap();
    let result = Engine::open_with(other.path(), repair_config());
    assert!(matches!(result, Err(OpenError::NotTollgate { .. })), "{result:?}");
    assert_eq!(std::fs::read(other.path().join("tollgate.meta")).unwrap(), b"garbage");
    let mut names: Vec<_> = std::fs::read_dir(other.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["notes.txt", "tollgate.meta", "topics"]);
}

/// Damages the state file's header of the fixture's worker group (its
/// low-water mark: the header's CRC no longer matches).
fn damage_state_header(dir: &Path) {
    flip(&Kind::State.path(dir), 24, 0);
}

/// Review finding: repair, starting over a group whose state header is
/// damaged, removed its journal even when the journal was of a newer
/// version.
#[test]
fn repair_leaves_a_newer_journal_alone_when_the_state_header_is_damaged() {
    let dir = fixture();
    let journal = Kind::Journal.path(dir.path());
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    Kind::Journal.reseal(&mut bytes);
    std::fs::write(&journal, &bytes).unwrap();
    damage_state_header(dir.path());
    let repaired = open_through(dir.path(), Kind::Journal, repair_config());
    assert!(matches!(repaired, Opened::Topic(TopicError::NewerVersion { .. })), "{repaired:?}");
    assert_eq!(std::fs::read(&journal).unwrap(), bytes, "the newer journal was rewritten or removed");
}

/// Review finding: a worker group whose state header was damaged while the
/// topic was open, opened in repair mode with `StartAt::Latest`, was taken
/// for a new group and started at the end: unacknowledged messages were
/// never delivered. It starts over at the oldest record instead.
#[test]
fn repair_starts_a_group_with_a_damaged_state_header_over_at_the_oldest_record() {
    let dir = fixture();
    let engine = Engine::open_with(dir.path(), repair_config()).unwrap();
    let topic = engine.topic("t").unwrap();
    damage_state_header(dir.path());
    let config = tollgate::QueueConfig { start: StartAt::Latest, ..tollgate::QueueConfig::default() };
    let worker = topic.worker_with("w", config).unwrap();
    let first = worker.receive(Duration::from_secs(5)).unwrap().expect("every message is delivered again");
    assert_eq!(first.offset().get(), 0);
}

/// Review finding: a topic directory whose `topic.conf` is missing takes the
/// creation path; when opening it then failed, the cleanup of a failed
/// creation removed the whole directory, segments included. Only what the
/// creation wrote is removed.
#[test]
fn a_failed_open_of_a_directory_without_its_configuration_removes_only_what_it_wrote() {
    let dir = fixture();
    let topic_dir = dir.path().join("topics/t");
    std::fs::remove_file(topic_dir.join("topic.conf")).unwrap();
    flip(&Kind::Checkpoint.path(dir.path()), 13, 0); // the header's CRC
    let listing = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        names
    };
    let before = listing(&topic_dir);
    let engine = Engine::open(dir.path()).unwrap();
    assert!(matches!(engine.topic("t"), Err(TopicError::Corrupt(_))));
    assert_eq!(listing(&topic_dir), before);
}

#[allow(dead_code)] // only the simulated disk's setups are used here
#[path = "support/fixture.rs"]
mod fixture;

/// The synced marks never turn a crash into damage: a `Sync` topic, three
/// threads acknowledging (group commits, a mark written after each), the
/// disk dying after each of many sync counts and the power cut with
/// several seeds; the group always reopens.
#[test]
fn power_cuts_never_make_a_journal_damaged() {
    for die_after in (5..400).step_by(19) {
        let disk = fixture::sim_disk();
        let engine = fixture::open_sim(&disk);
        let topic = engine.create_topic("t", fixture::sync_topic()).unwrap();
        for i in 0..200 {
            topic.publish(format!("m{i}")).unwrap();
        }
        let worker = topic.worker("w").unwrap();
        disk.fail_after_syncs(die_after);
        std::thread::scope(|s| {
            for _ in 0..3 {
                let worker = worker.clone();
                s.spawn(move || {
                    while let Ok(Some(delivery)) = worker.receive(Duration::from_millis(50)) {
                        if delivery.ack().is_err() {
                            return;
                        }
                    }
                });
            }
        });
        for seed in 0..3 {
            let cut = disk.power_cut(seed * 7919 + die_after);
            let engine = fixture::open_sim(&cut);
            let reopened = engine.topic("t").unwrap().worker("w");
            assert!(reopened.is_ok(), "die_after {die_after}, seed {seed}: {reopened:?}");
        }
    }
}

/// Review finding: an offset file with an all-zero header in front of a
/// written slot was taken for one a crash left half-created and recreated,
/// losing its committed offset. The header is synced before any slot is
/// written, so it is damage.
#[test]
fn a_zeroed_slot_file_header_in_front_of_a_written_slot_is_damage() {
    let dir = fixture();
    let offsets = Kind::Offset.path(dir.path());
    let mut bytes = std::fs::read(&offsets).unwrap();
    bytes[..16].fill(0);
    std::fs::write(&offsets, &bytes).unwrap();
    match open_through(dir.path(), Kind::Offset, EngineConfig::default()) {
        Opened::Topic(TopicError::Corrupt(c)) => assert_eq!((c.file, c.position), (offsets.clone(), 0)),
        other => panic!("a zeroed header in front of a written slot must be damage: {other:?}"),
    }
    assert_eq!(std::fs::read(&offsets).unwrap(), bytes, "the file was recreated");
}

/// Writes a valid slot 0 (bytes 16..48) into the fixture's `billing.offset`,
/// whose one commit (10) is generation 1, in slot 1.
fn forge_offset_slot(dir: &Path, generation: u64, offset: u64) -> PathBuf {
    let path = Kind::Offset.path(dir);
    let mut bytes = std::fs::read(&path).unwrap();
    let slot = &mut bytes[16..48];
    slot.fill(0);
    slot[..8].copy_from_slice(&generation.to_le_bytes());
    slot[8..16].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32fast::hash(&slot[..28]);
    slot[28..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    path
}

/// Fuzzing finding (`log_recovery`): a made-up slot holding generation
/// `u64::MAX` under a valid CRC was the newest, so the next write (opening
/// the topic lowers an offset past its end) wrapped to generation 0, which
/// reads as "never written": the write was lost, and a debug build panicked
/// on the overflow. Generations above 2^62 are invalid now: the real slot
/// is the newest, and writes after it read back.
#[test]
fn a_made_up_slot_generation_above_the_maximum_is_invalid_and_no_write_is_lost() {
    for generation in [u64::MAX, (1 << 62) + 1] {
        let dir = fixture();
        forge_offset_slot(dir.path(), generation, 1_000_000);
        {
            let engine = Engine::open(dir.path()).unwrap();
            let topic = engine.topic("t").unwrap();
            let mut billing = topic.subscribe("billing").unwrap();
            assert_eq!(billing.committed().get(), 10, "generation {generation}: the real slot is the newest");
            billing.commit_at(tollgate::Offset::new(20)).unwrap();
        }
        let engine = Engine::open(dir.path()).unwrap();
        let committed = engine.topic("t").unwrap().subscribe("billing").unwrap().committed().get();
        assert_eq!(committed, 20, "generation {generation}: the commit after it was lost");
    }
}

/// The edge of the above: a newest slot at the maximum itself is damage
/// (no write could follow it), reported where it is; `repair` removes the
/// group's file and the group starts over.
#[test]
fn a_newest_slot_at_the_maximum_generation_is_damage() {
    let dir = fixture();
    let offsets = forge_offset_slot(dir.path(), 1 << 62, 1_000_000);
    {
        let engine = Engine::open(dir.path()).unwrap();
        let topic = engine.topic("t").expect("a damaged group file does not keep its topic from opening");
        match topic.subscribe("billing") {
            Err(TopicError::Corrupt(c)) => assert_eq!((c.file, c.position), (offsets.clone(), 16)),
            other => panic!("a used-up slot file must be damage: {other:?}"),
        }
    }
    let damage = verify_damage(dir.path());
    assert!(
        damage.iter().any(|c| (&c.file, c.position) == (&offsets, 16)),
        "verify reports it where it is: {damage:?}"
    );
    let engine = Engine::open_with(dir.path(), repair_config()).unwrap();
    let billing = engine.topic("t").unwrap().subscribe_with("billing", StartAt::Earliest).unwrap();
    assert_eq!(billing.committed().get(), 0, "repair starts the group over");
}
