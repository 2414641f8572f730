//! The durable log's rules, one test each: publishing, reading, segments,
//! recovery, durability, subscriptions, retention, and bad input.

use std::time::Duration;

use tollgate::{
    CommitError, Durability, Engine, Message, Offset, OpenError, PublishError, ReadError, StartAt, TopicConfig,
    TopicError,
};

fn small_segments() -> TopicConfig {
    TopicConfig { segment_bytes: 4096, max_message_bytes: 1024, ..TopicConfig::default() }
}

#[test]
fn offsets_are_dense_and_records_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let topic = engine.topic("orders").unwrap();
    for i in 0..100u64 {
        assert_eq!(topic.publish(format!("order {i}")).unwrap(), Offset::new(i));
    }
    for i in 0..100u64 {
        assert_eq!(topic.read(Offset::new(i)).unwrap().payload().as_ref(), format!("order {i}").as_bytes());
    }
    assert_eq!(topic.read(Offset::new(100)), Err(ReadError::NotWritten { requested: 100, next: 100 }));
}

#[test]
fn records_survive_reopen_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path()).unwrap();
        let topic = engine.create_topic("t", small_segments()).unwrap();
        for i in 0..2000u64 {
            topic.publish_message(Message::new(format!("payload {i}")).key(format!("k{i}")).header("h", "v")).unwrap();
        }
        assert!(topic.info().segments > 10, "{:?}", topic.info());
    }
    let engine = Engine::open(dir.path()).unwrap();
    let topic = engine.topic("t").unwrap();
    assert_eq!(topic.info().next, Offset::new(2000));
    for i in (0..2000u64).step_by(7) {
        let rec = topic.read(Offset::new(i)).unwrap();
        assert_eq!(rec.payload().as_ref(), format!("payload {i}").as_bytes());
        assert_eq!(rec.key(), Some(format!("k{i}").as_str()));
        assert_eq!(rec.header("h"), Some(&b"v"[..]));
    }
    assert_eq!(topic.verify().unwrap(), 2000);
    let mut sub = topic.subscribe("g").unwrap();
    for i in 0..2000u64 {
        assert_eq!(sub.next().unwrap().unwrap().offset(), Offset::new(i));
    }
    assert!(sub.next().unwrap().is_none());
}

#[test]
fn reopen_after_unclean_shutdown_recovers_by_scanning() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let topic = engine.create_topic("t", small_segments()).unwrap();
    for i in 0..500u64 {
        topic.publish(format!("p{i}")).unwrap();
    }
    // Leak the engine: no clean shutdown, the lock file stays held by this
    // process's descriptor, so copy the directory to reopen it elsewhere.
    std::mem::forget(topic);
    std::mem::forget(engine);
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    std::fs::remove_file(copy.path().join("tollgate.lock")).unwrap();
    let engine = Engine::open(copy.path()).unwrap();
    let topic = engine.topic("t").unwrap();
    assert_eq!(topic.info().next, Offset::new(500));
    assert_eq!(topic.verify().unwrap(), 500);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn subscription_resumes_at_committed_offset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path()).unwrap();
        let topic = engine.topic("t").unwrap();
        for i in 0..10 {
            topic.publish(format!("{i}")).unwrap();
        }
        let mut sub = topic.subscribe("billing").unwrap();
        for _ in 0..4 {
            sub.next().unwrap().unwrap();
        }
        sub.commit().unwrap();
        assert_eq!(sub.committed(), Offset::new(4));
        assert_eq!(sub.lag(), 6);
        assert_eq!(sub.commit_at(Offset::new(11)), Err(CommitError::BeyondEnd { requested: 11, end: 10 }));
    }
    let engine = Engine::open(dir.path()).unwrap();
    let topic = engine.topic("t").unwrap();
    let mut sub = topic.subscribe("billing").unwrap();
    assert_eq!(sub.next().unwrap().unwrap().offset(), Offset::new(4));
    let mut late = topic.subscribe_with("audit", StartAt::Latest).unwrap();
    assert!(late.next().unwrap().is_none());
    topic.publish("x").unwrap();
    assert_eq!(late.next().unwrap().unwrap().offset(), Offset::new(10));
    assert!(matches!(topic.subscribe("billing"), Err(TopicError::GroupBusy { .. })));
}

#[test]
fn parked_subscriber_wakes_on_publish() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let topic = engine.topic("t").unwrap();
    let mut sub = topic.subscribe("g").unwrap();
    let publisher = {
        let topic = topic.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            topic.publish("hello").unwrap();
        })
    };
    let rec = sub.next_timeout(Duration::from_secs(30)).unwrap().expect("woken by the publish");
    assert_eq!(rec.payload().as_ref(), b"hello");
    publisher.join().unwrap();
    assert!(sub.next_timeout(Duration::from_millis(5)).unwrap().is_none());
}

#[test]
fn sync_durability_with_concurrent_publishers() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let config = TopicConfig { durability: Durability::Sync, ..small_segments() };
    let topic = engine.create_topic("t", config).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let topic = topic.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    topic.publish(format!("{t}:{i}")).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let info = topic.info();
    assert_eq!(info.next, Offset::new(200));
    assert_eq!(info.durable, Offset::new(200));
}

#[test]
fn bad_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let long = "x".repeat(256);
    for name in ["", ".", "..", "a/b", "a\\b", "a\0b", long.as_str()] {
        assert!(matches!(engine.topic(name), Err(TopicError::InvalidName { .. })), "{name:?}");
    }
    let topic = engine.topic("ok").unwrap();
    for name in ["", "..", "../x"] {
        assert!(matches!(topic.subscribe(name), Err(TopicError::InvalidName { .. })), "{name:?}");
    }
    assert_eq!(engine.topics().unwrap(), ["ok"]);
}

#[test]
fn oversized_messages_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let topic = engine.create_topic("t", small_segments()).unwrap();
    assert_eq!(topic.publish(vec![0u8; 1025]), Err(PublishError::TooLarge { bytes: 1025, max: 1024 }));
    assert_eq!(topic.info().next, Offset::new(0));
    let batch: Vec<Message> = (0..10).map(|_| Message::new(vec![1u8; 1000])).collect();
    assert!(matches!(topic.publish_batch(batch), Err(PublishError::TooLarge { .. })));
    assert_eq!(
        topic.publish_batch(Vec::<Message>::new()),
        Err(PublishError::InvalidMessage { reason: "a batch needs at least one message" })
    );
}

#[test]
fn second_engine_on_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _engine = Engine::open(dir.path()).unwrap();
    assert!(matches!(Engine::open(dir.path()), Err(OpenError::Locked { .. })));
}

#[test]
fn directory_that_is_not_tollgate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), b"keep me").unwrap();
    assert!(matches!(Engine::open(dir.path()), Err(OpenError::NotTollgate { .. })));
    assert_eq!(std::fs::read(dir.path().join("precious.txt")).unwrap(), b"keep me");
}
