//! `Engine::backup_to`: a backup taken while threads publish, consume and
//! ack in several topics is one instant of the whole directory, opens
//! cleanly, and refuses bad destinations. The design is in
//! `docs/OPERATIONS.md`, "Backup and restore".

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use tollgate::inspect::Directory;
use tollgate::{BackupError, Engine, Offset, QueueConfig, ReadError, Topic, TopicConfig};

/// Small segments, so that a backup meets sealed segments (synced or not)
/// as well as the active one.
fn small_segments() -> TopicConfig {
    TopicConfig { segment_bytes: 8192, max_message_bytes: 1024, ..TopicConfig::default() }
}

fn payload_number(topic: &Topic, offset: u64) -> u64 {
    let record = topic.read(Offset::new(offset)).unwrap();
    std::str::from_utf8(record.payload()).unwrap().parse().unwrap()
}

/// Every payload of `topic`, as numbers.
fn numbers(topic: &Topic) -> Vec<u64> {
    (0..topic.info().next.get()).map(|offset| payload_number(topic, offset)).collect()
}

/// A writer publishes `i` to `a` then to `b`; payment workers take each
/// record of `a`, publish it to `paid`, then ack it; a subscriber reads `b`,
/// publishes each to `seen`, and commits. A backup in the middle must be
/// one instant of all of it: `b` is `a` or one behind, every ack in it has
/// its `paid` record and every `paid` record its order, and the committed
/// offset of `b`'s group is covered by `seen`.
#[test]
fn a_backup_while_threads_publish_and_ack_is_one_instant() {
    let dir = tempfile::tempdir().unwrap();
    let backups = tempfile::tempdir().unwrap();
    let dest = backups.path().join("copy");
    let engine = Engine::open(dir.path().join("data")).unwrap();
    let [a, b, paid, seen] =
        ["a", "b", "paid", "seen"].map(|name| engine.create_topic(name, small_segments()).unwrap());
    let worker = a.worker_with("payments", QueueConfig::default()).unwrap();
    let stop = AtomicBool::new(false);
    let published = AtomicU64::new(0);
    let report = thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                a.publish(i.to_string()).unwrap();
                b.publish(i.to_string()).unwrap();
                i += 1;
                published.store(i, Ordering::Relaxed);
            }
        });
        for _ in 0..2 {
            let worker = worker.clone();
            let (paid, stop) = (&paid, &stop);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(delivery) = worker.receive(Duration::from_millis(10)).unwrap() {
                        paid.publish(delivery.record().payload()).unwrap();
                        delivery.ack().unwrap();
                    }
                }
            });
        }
        s.spawn(|| {
            let mut notices = b.subscribe("notices").unwrap();
            while !stop.load(Ordering::Relaxed) {
                if let Some(record) = notices.next_timeout(Duration::from_millis(10)).unwrap() {
                    seen.publish(record.payload()).unwrap();
                    notices.commit().unwrap();
                }
            }
        });
        // Enough of everything before the cut: publishes, acks (a payment
        // is published before its ack) and commits.
        while published.load(Ordering::Relaxed) < 3000 || paid.info().next.get() < 100 || seen.info().next.get() < 100 {
            thread::sleep(Duration::from_millis(1));
        }
        let report = engine.backup_to(&dest);
        let at_backup = published.load(Ordering::Relaxed);
        while published.load(Ordering::Relaxed) < at_backup + 1000 {
            thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
        report.unwrap()
    });
    drop(worker);
    assert_eq!(report.topics, 5, "a, b, paid, seen and a.dlq");
    assert!(report.pause <= report.elapsed);

    // At rest, before anything opens it: clean, intact, offsets in range.
    let inspected = Directory::open(&dest).unwrap();
    assert!(inspected.verify(|_, _| {}).unwrap().is_clean());
    let b_summary = inspected.topic("b").unwrap();
    assert!(b_summary.clean_shutdown);
    let committed = b_summary.groups.iter().find(|g| g.name == "notices").and_then(|g| g.committed);
    let committed = committed.map_or(0, Offset::get);
    assert!(committed <= b_summary.end.get(), "a commit past the end of the copied log");

    let copy = Engine::open(&dest).unwrap();
    let [a, b, paid, seen] = ["a", "b", "paid", "seen"].map(|name| copy.topic(name).unwrap());
    for topic in [&a, &b, &paid, &seen] {
        assert!(topic.recovery_report().clean, "{} was not copied as a clean shutdown", topic.name());
        assert_eq!(topic.verify().unwrap(), topic.info().next.get());
    }
    let (a_numbers, b_numbers) = (numbers(&a), numbers(&b));
    assert_eq!(a_numbers, (0..a_numbers.len() as u64).collect::<Vec<_>>());
    assert_eq!(b_numbers, (0..b_numbers.len() as u64).collect::<Vec<_>>());
    let (a_len, b_len) = (a_numbers.len() as u64, b_numbers.len() as u64);
    assert!(b_len <= a_len && a_len <= b_len + 1, "a has {a_len} records and b {b_len}: not one instant");
    assert!(a_len >= 3000, "the backup was taken after 3000 publishes, it has {a_len}");

    // Every `paid` record has its order; every ack has its `paid` record.
    let paid_numbers: BTreeSet<u64> = numbers(&paid).into_iter().collect();
    assert!(paid_numbers.iter().all(|n| *n < a_len), "a payment for an order the copy does not have");
    let worker = a.worker("payments").unwrap();
    let mut unsettled = BTreeSet::new();
    while let Some(delivery) = worker.receive(Duration::ZERO).unwrap() {
        unsettled.insert(payload_number(&a, delivery.offset().get()));
        delivery.ack().unwrap();
    }
    let settled: Vec<u64> = (0..a_len).filter(|n| !unsettled.contains(n)).collect();
    let unpaid_acks: Vec<&u64> = settled.iter().filter(|n| !paid_numbers.contains(n)).collect();
    assert!(unpaid_acks.is_empty(), "acked in the copy without their payment: {unpaid_acks:?}");
    assert!(settled.len() >= 98, "at most two of the first 100 payments were not acked yet: {}", settled.len());

    // The subscriber's commit is covered by what it published.
    let seen_numbers = numbers(&seen);
    assert!(committed <= seen_numbers.len() as u64, "committed {committed} but published {}", seen_numbers.len());
    assert!(committed >= 99, "the subscriber had published 100 and committed all but the last: {committed}");
    assert_eq!(seen_numbers, (0..seen_numbers.len() as u64).collect::<Vec<_>>());
}

#[test]
fn topics_not_open_are_copied_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path()).unwrap();
        let quiet = engine.create_topic("quiet", small_segments()).unwrap();
        for i in 0..500u64 {
            quiet.publish(i.to_string()).unwrap();
        }
        let mut group = quiet.subscribe("reader").unwrap();
        group.seek(Offset::new(120)).unwrap();
        group.commit().unwrap();
    }
    let engine = Engine::open(dir.path()).unwrap();
    // Nothing opened "quiet": it is copied at rest, file by file.
    let report = engine.backup_to(dest.path()).unwrap();
    assert_eq!((report.topics, report.records), (1, 0));
    // The directory goes on working, and the topic opens after the copy.
    engine.topic("quiet").unwrap().publish("500").unwrap();
    drop(engine);

    let copy = Engine::open(dest.path()).unwrap();
    let quiet = copy.topic("quiet").unwrap();
    assert!(quiet.recovery_report().clean, "the source's clean shutdown is kept");
    assert_eq!(numbers(&quiet), (0..500).collect::<Vec<_>>());
    assert_eq!(quiet.subscribe("reader").unwrap().committed(), Offset::new(120));
}

#[test]
fn a_backup_of_a_backup_and_retention_during_it() {
    let dir = tempfile::tempdir().unwrap();
    let backups = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let config = TopicConfig { retention_bytes: Some(20_000), ..small_segments() };
    let topic = engine.create_topic("t", config).unwrap();
    for i in 0..3000u64 {
        topic.publish(i.to_string()).unwrap();
    }
    topic.sync().unwrap();
    let first = engine.backup_to(backups.path().join("first")).unwrap();
    assert_eq!(first.records, 3000);
    let copy = Engine::open(backups.path().join("first")).unwrap();
    let t = copy.topic("t").unwrap();
    assert_eq!(t.info().next.get(), 3000);
    // The copy's background thread applies retention at any moment, so the
    // oldest retained record may go between reading `oldest` and reading it.
    loop {
        let oldest = t.info().oldest.get();
        match t.read(Offset::new(oldest)) {
            Ok(record) => {
                assert_eq!(std::str::from_utf8(record.payload()).unwrap(), oldest.to_string());
                break;
            }
            Err(ReadError::NotRetained { .. }) => continue,
            Err(other) => panic!("reading the oldest retained record: {other:?}"),
        }
    }
    t.publish("3000").unwrap();
    let second = copy.backup_to(backups.path().join("second")).unwrap();
    assert_eq!(second.records, 3001);
    drop(t);
    drop(copy);
    let again = Engine::open(backups.path().join("second")).unwrap();
    assert_eq!(again.topic("t").unwrap().info().next.get(), 3001);
}

/// An engine on `<temp>/data` with a topic `t` of one record.
fn engine_with_one_topic() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path().join("data")).unwrap();
    engine.topic("t").unwrap().publish("x").unwrap();
    (dir, engine)
}

#[test]
fn bad_destinations_are_refused_and_nothing_is_left_behind() {
    let (dir, engine) = engine_with_one_topic();

    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("something"), b"mine").unwrap();
    match engine.backup_to(&full) {
        Err(BackupError::DestinationNotEmpty { path }) => assert_eq!(path, full),
        other => panic!("a non-empty destination was not refused: {other:?}"),
    }
    assert_eq!(std::fs::read(full.join("something")).unwrap(), b"mine", "the destination is untouched");

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    assert!(matches!(engine.backup_to(&file), Err(BackupError::DestinationNotEmpty { .. })));

    for inside in [dir.path().join("data"), dir.path().join("data").join("backup"), dir.path().join("data/../data/x")] {
        match engine.backup_to(&inside) {
            Err(BackupError::DestinationInside { .. }) => {}
            other => panic!("{} is inside the data directory: {other:?}", inside.display()),
        }
    }
    assert!(!dir.path().join("data").join("backup").exists());

    // An empty directory is fine, and becomes the copy.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    engine.backup_to(&empty).unwrap();
    assert!(empty.join("tollgate.meta").exists());
}

#[test]
fn a_failed_backup_removes_its_partial_copy() {
    let (dir, engine) = engine_with_one_topic();
    // A topic whose segment cannot be read: the copy fails part-way.
    let at_rest = dir.path().join("data/topics/broken");
    std::fs::create_dir_all(&at_rest).unwrap();
    std::fs::copy(dir.path().join("data/topics/t/topic.conf"), at_rest.join("topic.conf")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/tollgate-backup-test", at_rest.join("00000000000000000000.log")).unwrap();
    let dest = dir.path().join("copy");
    let error = engine.backup_to(&dest).expect_err("the dangling segment cannot be copied");
    assert!(matches!(error, BackupError::Io(_)), "{error:?}");
    assert!(!dest.exists(), "the partial copy is removed");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    engine.backup_to(&empty).expect_err("the same failure");
    assert!(empty.exists() && std::fs::read_dir(&empty).unwrap().next().is_none(), "emptied, not removed");
    assert!(!Path::new(&dest).exists());
}
