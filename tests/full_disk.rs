//! A full disk, on the simulated disk: opening a topic and reading it need
//! no free space, and a creation that fails for want of space (a consumer
//! group, a worker group, a topic) leaves nothing behind.

#[allow(dead_code)] // each test binary uses some of it
#[path = "support/fixture.rs"]
mod fixture;

use std::io::ErrorKind;
use std::path::PathBuf;
use std::time::Duration;

use fixture::{DATA, open_sim, sim_disk};
use tollgate::{Offset, SimDisk, StartAt, TopicConfig, TopicError};

const RECORDS: u64 = 100;

/// A simulated disk whose data directory, cleanly closed, holds topic `t`
/// with `RECORDS` records, a consumer group `old` that committed 50, and a
/// worker group `w` that acknowledged the first 10.
fn setup() -> SimDisk {
    let disk = sim_disk();
    let engine = open_sim(&disk);
    let topic = engine.topic("t").unwrap();
    for i in 0..RECORDS {
        topic.publish(format!("record {i}")).unwrap();
    }
    topic.subscribe_with("old", StartAt::Earliest).unwrap().commit_at(Offset::new(50)).unwrap();
    let worker = topic.worker("w").unwrap();
    for _ in 0..10 {
        worker.receive(Duration::from_secs(5)).unwrap().expect("a message").ack().unwrap();
    }
    disk
}

/// Whether `e` is the full disk.
fn is_full(e: &TopicError) -> bool {
    matches!(e, TopicError::Io(io) if io.kind() == ErrorKind::StorageFull)
}

/// Runs `create`; if it fails, the disk must hold exactly what it held
/// before, and the failure must be the full disk.
fn fails_cleanly<T>(
    disk: &SimDisk,
    what: &str,
    slack: u64,
    create: impl FnOnce() -> Result<T, TopicError>,
) -> Option<T> {
    let before: Vec<(PathBuf, Option<u64>)> = disk.tree(DATA);
    match create() {
        Ok(created) => Some(created),
        Err(e) => {
            assert!(is_full(&e), "{what} with {slack} bytes free failed with {e}, not a full disk");
            assert_eq!(disk.tree(DATA), before, "{what} with {slack} bytes free left debris behind");
            None
        }
    }
}

/// Issue 12, item 1: a subscribe that failed on a full disk left
/// `groups/<g>.offset` behind, and the topic then did not reopen until space
/// was freed; failed creations of groups, worker groups and topics left
/// debris (`topic.conf.tmp`, an empty topic directory, an offset file).
#[test]
fn failed_creations_on_a_full_disk_leave_nothing_and_the_topic_reopens_and_reads() {
    let mut failures = 0;
    let slacks = [0, 1, 40, 79, 80, 100, 1000, 4096, 20_000, 70_000, 200_000];
    for (slack, killed) in slacks.into_iter().flat_map(|slack| [(slack, false), (slack, true)]) {
        let mut disk = setup();
        {
            let engine = open_sim(&disk);
            let topic = engine.topic("t").unwrap();
            disk.set_capacity(Some(disk.used_bytes() + slack));
            let subscribed = fails_cleanly(&disk, "a new consumer group", slack, || topic.subscribe("g"));
            let worker = fails_cleanly(&disk, "a new worker group", slack, || topic.worker("nw"));
            let created =
                fails_cleanly(&disk, "a new topic", slack, || engine.create_topic("new", TopicConfig::default()));
            failures += [subscribed.is_none(), worker.is_none(), created.is_none()].iter().filter(|&&f| f).count();
            if killed {
                // The process dies instead of closing (what the engine does
                // as it drops goes to the dead disk): the next open recovers,
                // on the disk still full.
                disk = disk.kill_process();
            }
        }
        // The disk is still full: reopening the topic (recovering it after a
        // kill) and reading it, and resuming a consumer group, must work all
        // the same.
        let engine = open_sim(&disk);
        let topic = engine.topic("t").unwrap();
        for i in 0..RECORDS {
            assert_eq!(topic.read(Offset::new(i)).unwrap().payload(), format!("record {i}").as_bytes());
        }
        let mut old = topic.subscribe("old").unwrap();
        assert_eq!(old.next().unwrap().unwrap().offset(), Offset::new(50));
        // A worker group needs space to open (it rewrites its state), but a
        // failed open loses nothing: with space again, its acks are there.
        let reopened = topic.worker("w");
        assert!(reopened.as_ref().is_ok() || reopened.as_ref().is_err_and(is_full), "{reopened:?}");
        drop(reopened);
        disk.set_capacity(None);
        let worker = topic.worker("w").unwrap();
        assert_eq!(worker.receive(Duration::from_secs(5)).unwrap().unwrap().offset(), Offset::new(10));
    }
    assert!(failures >= 10, "the disk was rarely full enough: {failures} failed creations");
}

/// An offset file a crash left created but never written (all zero) holds
/// nothing: opening the topic leaves it as it is, needing no space, and only
/// the group's next subscribe recreates it.
#[test]
fn opening_a_topic_does_not_recreate_a_half_created_offset_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = tollgate::Engine::open(dir.path()).unwrap();
        let topic = engine.topic("t").unwrap();
        topic.publish(b"x").unwrap();
        topic.subscribe("old").unwrap();
    }
    let offset_file = dir.path().join("topics/t/groups/g.offset");
    std::fs::write(&offset_file, [0; 80]).unwrap();
    let engine = tollgate::Engine::open(dir.path()).unwrap();
    let topic = engine.topic("t").unwrap();
    assert_eq!(std::fs::read(&offset_file).unwrap(), [0; 80], "opening the topic rewrote it");
    let mut g = topic.subscribe_with("g", StartAt::Earliest).unwrap();
    assert_eq!(g.next().unwrap().unwrap().offset(), Offset::new(0));
    assert_ne!(std::fs::read(&offset_file).unwrap(), [0; 80], "subscribing recreates it");
}
