//! Replays the fuzz corpora (`fuzz/corpus/<target>/`) through the shared
//! harnesses on stable, and runs the lock harness on random byte strings.

#[path = "support/decoders.rs"]
mod decoders;
#[path = "support/lock_ops.rs"]
mod lock_ops;
#[path = "support/log_ops.rs"]
mod log_ops;
#[path = "support/log_recovery.rs"]
mod log_recovery;
#[path = "support/queue_ops.rs"]
mod queue_ops;
#[path = "support/segment_recovery.rs"]
mod segment_recovery;

#[allow(dead_code)] // each test binary uses some of it
#[path = "support/fixture.rs"]
mod fixture;
use fixture::{DATA, open_sim, sim_disk};

use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;

/// Runs `run` on every file of `fuzz/corpus/<target>/`, naming the input
/// that fails.
fn replay(target: &str, run: fn(&[u8])) {
    replay_matching(target, "", run);
}

/// Runs `run` on the files of `fuzz/corpus/<target>/` whose names start with
/// `prefix`.
fn replay_matching(target: &str, prefix: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.is_file())
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with(prefix)))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no input", dir.display());
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
        // Name the input if it fails (the panic message comes first).
        let outcome = std::panic::catch_unwind(|| run(&data));
        if let Err(panic) = outcome {
            eprintln!("corpus input {} failed", path.display());
            std::panic::resume_unwind(panic);
        }
    }
}

/// The decoder targets' corpora (`fuzz/corpus/decode_*/`).
#[test]
fn decoder_corpora_replay() {
    for (target, run) in decoders::TARGETS {
        replay(target, run);
    }
}

/// Rewrites the decoder targets' seeds from a real engine's files (run it
/// with `cargo test --test fuzz_replay -- --ignored write_decoder_seeds`).
#[test]
#[ignore = "writes the seed corpora"]
fn write_decoder_seeds() {
    decoders::write_seeds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus"));
    decoder_corpora_replay();
}

#[test]
fn corpus_replays() {
    replay("lock_ops", lock_ops::run);
}

#[test]
fn log_ops_corpus_replays() {
    replay("log_ops", log_ops::run);
}

/// The same inputs on engines with their flusher thread, reading back every
/// record after each reopen where `log_ops::run` reads a sample (the
/// `log_ops_threaded` target).
#[test]
fn log_ops_threaded_corpus_replays() {
    replay("log_ops", log_ops::run_threaded);
}

#[test]
fn log_recovery_corpus_replays() {
    replay("log_recovery", log_recovery::run);
}

/// The same inputs written to the real file system and opened with
/// `Engine::open` (the `log_recovery_files` target).
#[test]
fn log_recovery_corpus_replays_on_files() {
    replay("log_recovery", log_recovery::run_on_files);
}

#[test]
fn segment_recovery_corpus_replays() {
    replay("segment_recovery", segment_recovery::run);
}

/// Rewrites the `segment_recovery` target's seeds from a real engine's
/// segments (run it with
/// `cargo test --test fuzz_replay -- --ignored write_segment_recovery_seeds`).
#[test]
#[ignore = "writes the seed corpus"]
fn write_segment_recovery_seeds() {
    segment_recovery::write_seeds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus"));
    segment_recovery_corpus_replays();
}

#[test]
fn queue_ops_corpus_replays() {
    replay("queue_ops", queue_ops::run);
}

/// The same inputs on engines with their flusher thread (the
/// `queue_ops_threaded` target).
#[test]
fn queue_ops_threaded_corpus_replays() {
    replay("queue_ops", queue_ops::run_threaded);
}

/// The `bug-*` inputs of the `log_ops` corpus, with the checks that the
/// known bugs listed at `log_ops::run_with_known_bugs` break.
#[test]
fn log_ops_known_bugs_replay() {
    replay_matching("log_ops", "bug-", log_ops::run_with_known_bugs);
}

/// Regression: a clean close writes an index for the active segment; after
/// the reopen, records are appended to that segment and it is sealed, and if
/// the power is cut before the sealed segment's sync rewrites its index, the
/// stale index survived and a later open trusted it, so reads past its old
/// end failed ("the data ends early"), even with `repair`. Found by the
/// `log_ops` fuzz target (`fuzz/corpus/log_ops/found-stale-index-after-crash`).
#[test]
fn segment_appended_after_a_clean_reopen_reads_back_after_a_crash() {
    use tollgate::{Engine, EngineConfig, Offset, TopicConfig};
    let disk = sim_disk();
    let config = TopicConfig { segment_bytes: 4096, max_message_bytes: 1024, ..TopicConfig::default() };
    let engine = open_sim(&disk);
    let topic = engine.create_topic("t", config).unwrap();
    for i in 0..3 {
        topic.publish(format!("before the clean close {i}")).unwrap();
    }
    drop((topic, engine));
    let engine = open_sim(&disk);
    let topic = engine.topic("t").unwrap();
    while topic.info().segments < 2 {
        topic.publish([b'x'; 200]).unwrap();
    }
    let next = topic.info().next.get();
    // The power fails while the sealed segment is synced: after its bytes
    // (a flush and an fsync), before its new index.
    disk.fail_after_syncs(2);
    assert!(topic.sync().is_err());
    drop((topic, engine));
    // Each seed keeps, loses or tears the pages not synced (the new
    // segment's header among them): with some, the new segment survives and
    // the stale index of the first one is used.
    for seed in 0..16 {
        let repair = EngineConfig { recovery: tollgate::RecoveryMode::Repair, ..EngineConfig::default() };
        let engine = Engine::open_sim(&disk.power_cut(seed), DATA, repair).unwrap();
        let topic = engine.topic("t").unwrap();
        let recovered = topic.info().next.get();
        assert!(
            recovered >= next - 1,
            "seed {seed}: the synced sealed segment was lost: {recovered} of {next} records"
        );
        for offset in 0..recovered {
            if let Err(error) = topic.read(Offset::new(offset)) {
                panic!("seed {seed}: read({offset}) of {recovered} recovered records: {error}");
            }
        }
        assert_eq!(topic.verify(), Ok(recovered), "seed {seed}");
    }
}

/// The `bug-*` inputs of the `log_recovery` corpus, with the checks that the
/// known bugs listed at `log_recovery::run_with_known_bugs` break.
#[test]
fn log_recovery_known_bugs_replay() {
    replay_matching("log_recovery", "bug-", log_recovery::run_with_known_bugs);
}

/// Regression: after a clean shutdown, `open_topic` trusted the active
/// segment without scanning it, so a corrupt frame in it (a flipped bit on
/// the medium) went unnoticed and new records were appended after it, to be
/// cut by the next recovery after a crash: an acknowledged `Sync` record was
/// lost. Found by the `log_recovery` fuzz target
/// (`fuzz/corpus/log_recovery/bug-clean-open-appends-after-corrupt-frame`).
/// Now the clean open scans the active segment and refuses to append after
/// damage; `repair` cuts it, and what is published after that survives.
#[test]
fn sync_record_published_after_a_clean_open_survives_a_crash() {
    use tollgate::{Durability, Engine, EngineConfig, Offset, TopicConfig, TopicError};
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("data");
    let config = TopicConfig {
        durability: Durability::Sync,
        segment_bytes: 4096,
        max_message_bytes: 1024,
        ..TopicConfig::default()
    };
    let engine = Engine::open(&dir).unwrap();
    let topic = engine.create_topic("t", config).unwrap();
    for payload in ["a", "b", "c"] {
        topic.publish(payload).unwrap();
    }
    drop((topic, engine));
    // Flip a bit in the payload of the second frame (each frame: a 32-byte
    // header, an 8-byte entry header, one payload byte).
    let segment = dir.join("topics/t/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[32 + 41 + 40] ^= 1;
    std::fs::write(&segment, bytes).unwrap();

    let engine = Engine::open(&dir).unwrap();
    match engine.topic("t") {
        Err(TopicError::Corrupt(c)) => assert_eq!((c.file, c.position), (segment.clone(), 32 + 41)),
        other => panic!("expected the damage to be reported, got {other:?}"),
    }
    drop(engine);
    let engine =
        Engine::open_with(&dir, EngineConfig { recovery: tollgate::RecoveryMode::Repair, ..Default::default() })
            .unwrap();
    let topic = engine.topic("t").unwrap();
    assert_eq!(topic.info().next, Offset::new(1), "repair cut at the damaged frame");
    let acked = topic.publish(b"acknowledged").unwrap();
    // The directory as a power cut now would leave it: everything is synced.
    let crashed = scratch.path().join("crashed");
    std::fs::create_dir_all(crashed.join("topics/t/groups")).unwrap();
    for file in ["tollgate.meta", "topics/t/topic.conf", "topics/t/checkpoint", "topics/t/00000000000000000000.log"] {
        std::fs::copy(dir.join(file), crashed.join(file)).unwrap();
    }
    let engine = Engine::open(&crashed).unwrap();
    let recovered = engine.topic("t").unwrap();
    assert_eq!(recovered.info().next, acked.next());
    assert_eq!(recovered.read(acked).unwrap().payload().as_ref(), b"acknowledged");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_ops(data in vec(any::<u8>(), 0..600)) {
        lock_ops::run(&data);
    }
}

/// Regression: `TopicInner::close` wrote the active segment's index without
/// syncing the directory, so a power cut right after a clean close lost the
/// clean mark's index (nothing else). The close no longer writes that index:
/// a clean open scans the active segment instead. Found by the `log_ops`
/// fuzz target (restart op with a cut).
#[test]
fn clean_close_survives_a_power_cut() {
    let disk = sim_disk();
    let engine = open_sim(&disk);
    engine.topic("t").unwrap().publish(b"one").unwrap();
    drop(engine);
    let engine = open_sim(&disk.power_cut(0));
    let topic = engine.topic("t").unwrap();
    assert_eq!(topic.info().next.get(), 1);
    assert!(topic.recovery_report().clean, "{:?}", topic.recovery_report());
}

/// Regression (found while writing the `queue_ops` target): on a
/// `Durability::Sync` topic, `Delivery::nack` journaled the retry time but
/// did not sync it, so a power cut before the group's next sync lost it and
/// the message was handed out at once after the reboot, before its time.
#[test]
fn nack_retry_time_survives_a_power_cut() {
    use std::time::Duration;
    use tollgate::{Durability, TopicConfig};
    let config = TopicConfig {
        durability: Durability::Sync,
        segment_bytes: 4096,
        max_message_bytes: 1024,
        ..Default::default()
    };
    for seed in 0..8 {
        let disk = sim_disk();
        let engine = open_sim(&disk);
        let topic = engine.create_topic("q", config).unwrap();
        engine.create_topic("q.dlq", config).unwrap();
        topic.publish(b"order 1001").unwrap();
        let worker = topic.worker("g").unwrap();
        let delivery = worker.receive(Duration::ZERO).unwrap().expect("published above");
        delivery.nack(Duration::from_secs(3600), "the card service is down: retry in an hour").unwrap();
        let rebooted = disk.power_cut(seed);
        drop((worker, topic, engine));
        let engine = open_sim(&rebooted);
        let worker = engine.topic("q").unwrap().worker("g").unwrap();
        if let Some(delivery) = worker.receive(Duration::ZERO).unwrap() {
            panic!("seed {seed}: attempt {} handed out right after the reboot, an hour early", delivery.attempt());
        }
    }
}
