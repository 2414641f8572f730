//! Bugs found in review, fixed, one regression test each:
//! `start_latest_group_skips_messages_published_before_it_opened`,
//! `group_state_about_a_lost_log_tail_is_dropped_even_if_the_group_skipped_the_recovery_session`,
//! `an_oversized_dead_letter_does_not_block_the_group`,
//! `a_dead_letter_of_a_message_with_64_headers_does_not_block_the_group`,
//! `a_rejected_message_whose_dead_letter_failed_is_not_handed_out_again`,
//! `a_rejected_message_whose_dead_letter_failed_is_not_handed_out_again_after_a_restart`,
//! `shortening_a_visibility_deadline_wakes_a_waiting_worker`,
//! `attempts_survive_a_power_cut_on_a_sync_topic`,
//! `a_transaction_whose_sync_fails_reports_io_publishes_all_or_nothing_and_releases_its_locks`.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tollgate::{
    Durability, Engine, KeyPattern, LockManager, Message, Offset, PublishError, QueueConfig, QueueError, StartAt,
    TopicConfig, Worker,
};

use super::fixture::{one_message, open_sim, sim_disk, sync_topic, temp_topic};
use super::{BRIEF, WAIT, config, dead_letters, drain, payload, publish_n, take};

#[test]
fn start_latest_group_skips_messages_published_before_it_opened() {
    let (_dir, _engine, topic) = temp_topic("orders");
    publish_n(&topic, 3); // published after the topic was opened
    let w = topic.worker_with("g", QueueConfig { start: StartAt::Latest, ..QueueConfig::default() }).unwrap();
    topic.publish(b"new").unwrap();
    let got: Vec<String> = drain(&w).iter().map(payload).collect();
    assert_eq!(got, ["new"], "a group starting at the latest message got older ones");
}

#[test]
fn group_state_about_a_lost_log_tail_is_dropped_even_if_the_group_skipped_the_recovery_session() {
    // Session 1: the group acks records the log never synced; its journal is synced.
    let disk = sim_disk();
    let engine = open_sim(&disk);
    let topic = engine.topic("orders").unwrap(); // Buffered
    for i in 0..3 {
        topic.publish(format!("a{i}")).unwrap();
    }
    topic.sync().unwrap();
    let w = topic.worker("g").unwrap();
    for i in 3..6 {
        topic.publish(format!("a{i}")).unwrap();
    }
    for d in drain(&w) {
        d.ack().unwrap();
    }
    drop(w); // the group closes: its journal is synced, the log's tail is not
    // A power cut that loses the log's unsynced tail (a3..a5).
    let cut = (0..64)
        .map(|seed| disk.power_cut(seed))
        .find(|cut| open_sim(cut).topic("orders").unwrap().info().next == Offset::new(3))
        .expect("a seed that loses the tail");
    drop(topic);
    drop(engine);
    // Session 2: recovery; new messages take offsets 3..5; the group is not opened.
    {
        let engine = open_sim(&cut);
        let topic = engine.topic("orders").unwrap();
        assert_eq!(topic.info().next, Offset::new(3));
        for i in 3..6 {
            topic.publish(format!("b{i}")).unwrap();
        }
        topic.sync().unwrap();
    }
    // Session 3: the group must get the new messages.
    let engine = open_sim(&cut);
    let w = engine.topic("orders").unwrap().worker("g").unwrap();
    let got: Vec<String> = drain(&w).iter().map(payload).collect();
    assert_eq!(got, ["b3", "b4", "b5"], "the group took new messages for acked lost ones");
}

/// Receives until `offset` comes (true) or five receives pass without it,
/// collecting the errors `receive` returned meanwhile.
fn gets_through(w: &Worker, offset: u64) -> (bool, Vec<String>) {
    let mut errors = Vec::new();
    for _ in 0..5 {
        match w.receive(BRIEF) {
            Ok(Some(d)) if d.offset().get() == offset => return (true, errors),
            Ok(_) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    (false, errors)
}

#[test]
fn an_oversized_dead_letter_does_not_block_the_group() {
    let (_dir, engine, topic) = temp_topic("orders");
    // As large as the topic allows: with the dead-letter headers added it is
    // larger than a message of the topic may be.
    topic.publish(vec![b'x'; TopicConfig::default().max_message_bytes]).unwrap();
    topic.publish(b"next").unwrap();
    let w = topic.worker_with("g", config(30_000, 1)).unwrap();
    let big = take(&w);
    assert_eq!(big.offset().get(), 0);
    let _ = big.nack(Duration::ZERO, "cannot process"); // its last attempt: dead-lettered
    let (through, errors) = gets_through(&w, 1);
    assert!(through, "the next message never came; receive failed with {errors:?}");
    let dead = dead_letters(&engine, "orders.dlq");
    assert_eq!(dead.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [0], "the big message was not dead-lettered");
}

#[test]
fn a_dead_letter_of_a_message_with_64_headers_does_not_block_the_group() {
    let (_dir, _engine, topic) = temp_topic("orders");
    // The most headers a message may have: its dead letter adds five more.
    let message = (0..64).fold(Message::new("many headers"), |m, i| m.header(format!("h{i}"), "v"));
    topic.publish_message(message).unwrap();
    topic.publish(b"next").unwrap();
    let w = topic.worker_with("g", config(30_000, 1)).unwrap();
    let first = take(&w);
    assert_eq!(first.offset().get(), 0);
    let _ = first.nack(Duration::ZERO, "cannot process"); // its last attempt: dead-lettered
    let (through, errors) = gets_through(&w, 1);
    assert!(through, "the next message never came; receive failed with {errors:?}");
}

#[test]
fn a_rejected_message_whose_dead_letter_failed_is_not_handed_out_again() {
    // `QueueError::DeadLetter`: "It stays in the queue: the next attempt to
    // dead-letter it happens when a worker would receive it."
    let (_dir, engine, topic) = temp_topic("orders");
    topic.publish(b"malformed").unwrap();
    let w = topic.worker("g").unwrap();
    let d = take(&w);
    engine.delete_topic("orders.dlq").unwrap(); // publishing a dead letter now fails
    assert!(matches!(d.reject("malformed"), Err(QueueError::DeadLetter(_))));
    if let Ok(Some(d)) = w.receive(BRIEF) {
        panic!("the rejected message was handed out again, as attempt {}", d.attempt());
    }
}

#[test]
fn a_rejected_message_whose_dead_letter_failed_is_not_handed_out_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path()).unwrap();
        let topic = engine.topic("orders").unwrap();
        topic.publish(b"malformed").unwrap();
        let w = topic.worker("g").unwrap();
        let d = take(&w);
        engine.delete_topic("orders.dlq").unwrap(); // publishing a dead letter now fails
        assert!(matches!(d.reject("malformed"), Err(QueueError::DeadLetter(_))));
    }
    let engine = Engine::open(dir.path()).unwrap();
    let w = engine.topic("orders").unwrap().worker("g").unwrap(); // the dead-letter topic is back
    if let Ok(Some(d)) = w.receive(BRIEF) {
        panic!("the rejected message was handed out again after a restart, as attempt {}", d.attempt());
    }
    assert_eq!(dead_letters(&engine, "orders.dlq").len(), 1, "the rejected message was not dead-lettered");
}

#[test]
fn a_message_whose_last_nack_failed_to_dead_letter_stays_dead_with_more_attempts_after_a_restart() {
    // The decision to dead-letter is recorded before the dead letter is
    // published: a group reopened with a higher `max_attempts` dead-letters
    // the message instead of handing it out again (which could process a
    // message that is also in the dead-letter topic).
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path()).unwrap();
        let topic = engine.topic("orders").unwrap();
        topic.publish(b"flaky").unwrap();
        let w = topic.worker_with("g", config(60_000, 1)).unwrap();
        let d = take(&w);
        engine.delete_topic("orders.dlq").unwrap(); // publishing a dead letter now fails
        assert!(matches!(d.nack(Duration::ZERO, "gateway timeout"), Err(QueueError::DeadLetter(_))));
    }
    let engine = Engine::open(dir.path()).unwrap();
    let w = engine.topic("orders").unwrap().worker_with("g", config(60_000, 5)).unwrap();
    if let Ok(Some(d)) = w.receive(BRIEF) {
        panic!("the message was handed out again after its last attempt, as attempt {}", d.attempt());
    }
    let dead = dead_letters(&engine, "orders.dlq");
    assert_eq!(dead.len(), 1, "the message was not dead-lettered");
}

#[test]
fn shortening_a_visibility_deadline_wakes_a_waiting_worker() {
    // A liveness check: the bound (5 s) is 500 times the 10 ms the message needs.
    let (_dir, engine, topic) = one_message();
    let w = topic.worker_with("g", config(600_000, 5)).unwrap();
    let mut d = take(&w);
    let (tx, rx) = mpsc::channel();
    {
        let w = w.clone();
        thread::spawn(move || {
            let got = w.receive(Duration::from_secs(60)).map(|d| d.map(|d| (d.offset().get(), d.attempt())));
            let _ = tx.send(got);
        });
    }
    thread::sleep(Duration::from_millis(100)); // let it park on the 10-minute deadline
    d.extend(Duration::from_millis(10)).unwrap(); // SQS's "change visibility" to hand it back soon
    let got = rx.recv_timeout(Duration::from_secs(5));
    drop(d);
    drop(engine); // wakes the waiter if it is still parked
    assert_eq!(got, Ok(Ok(Some((0, 2)))), "the waiting worker slept through the new deadline");
}

#[test]
fn attempts_survive_a_power_cut_on_a_sync_topic() {
    // `Delivery::attempt` is "counted across crashes and restarts"; on a Sync
    // topic a power cut during every attempt must still count them.
    let mut violations = Vec::new();
    for seed in 0..6 {
        let mut disk = sim_disk();
        {
            let engine = open_sim(&disk);
            engine.create_topic("orders", sync_topic()).unwrap().publish(b"poison").unwrap();
        }
        for expected in 1..=3 {
            let engine = open_sim(&disk);
            let w = engine.topic("orders").unwrap().worker("g").unwrap();
            let d = take(&w);
            if d.attempt() != expected {
                violations.push(format!("seed {seed}: attempt {} where {expected} was due", d.attempt()));
                break;
            }
            let next = disk.power_cut(seed * 10 + u64::from(expected));
            drop(d);
            drop(w);
            drop(engine);
            disk = next;
        }
    }
    assert_eq!(violations, Vec::<String>::new());
}

#[test]
fn a_transaction_whose_sync_fails_reports_io_publishes_all_or_nothing_and_releases_its_locks() {
    // `Transaction::commit`: on an `Io` error from a `Sync` topic's sync, readers
    // may see the batch; the topic then refuses writes until it is reopened.
    let disk = sim_disk();
    let engine = open_sim(&disk);
    let topic = engine.create_topic("orders", sync_topic()).unwrap();
    let locks = LockManager::new();
    let tx = topic.transaction(&locks.session(), ["sku:1"], WAIT).unwrap();
    disk.fail_after_syncs(0);
    let Err(err) = tx.commit([Message::new("reserve"), Message::new("order")]) else {
        panic!("the commit succeeded on a dead disk");
    };
    assert!(matches!(err, PublishError::Io(_)), "{err:?}");
    let visible = topic.info().next.get();
    assert!(visible == 0 || visible == 2, "{visible} of the batch's 2 records are visible");
    assert_eq!(topic.publish(b"x"), Err(PublishError::PreviousIo));
    assert!(thread::scope(|s| s.spawn(|| locks.try_lock("sku:1").is_ok()).join().unwrap()), "locks kept");
}

/// Regression (second review): on an `Interval` topic that rolls segments
/// faster than its interval, syncing the sealed segments restarted the
/// interval, so the interval sync (and with it the group journals' sync)
/// never ran: acks from long before a power cut came back. The cut is taken
/// after ten intervals of a busy publisher (a liveness margin, not a timing
/// assertion).
#[test]
fn interval_topics_sync_group_journals_while_segments_roll() {
    let disk = sim_disk();
    let engine = open_sim(&disk);
    let config = TopicConfig {
        durability: Durability::Interval(Duration::from_millis(200)),
        segment_bytes: 64 << 10,
        max_message_bytes: 1024,
        ..TopicConfig::default()
    };
    let topic = engine.create_topic("orders", config).unwrap();
    let only_jobs = QueueConfig { filter: Some(KeyPattern::new("job").unwrap()), ..QueueConfig::default() };
    for i in 0..10 {
        topic.publish_message(Message::new(format!("job {i}")).key("job")).unwrap();
    }
    topic.sync().unwrap();
    let w = topic.worker_with("g", only_jobs.clone()).unwrap();
    for _ in 0..10 {
        take(&w).ack().unwrap();
    }
    // Noise the group filters out, rolling a 64 KiB segment every ~60 ms.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        topic.publish_message(Message::new(vec![7u8; 1000]).key("noise")).unwrap();
        thread::sleep(Duration::from_micros(200));
    }
    let mut redelivered = Vec::new();
    for seed in 0..16 {
        let cut = disk.power_cut(seed);
        let engine = open_sim(&cut);
        let w = engine.topic("orders").unwrap().worker_with("g", only_jobs.clone()).unwrap();
        if let Some(d) = w.receive(BRIEF).unwrap() {
            redelivered.push((seed, d.offset().get()));
        }
    }
    assert_eq!(redelivered, [], "acks made ten intervals before the cut came back");
}

/// Regression (second review): closing the engine did not wake workers
/// parked on a topic whose writes had failed, so `receive` slept to its
/// timeout (600 s here). The bound (60 s) is a liveness margin: the wake-up
/// takes microseconds.
#[test]
fn closing_the_engine_wakes_workers_of_a_failed_topic() {
    let disk = sim_disk();
    let engine = open_sim(&disk);
    let topic = engine.create_topic("orders", sync_topic()).unwrap();
    let only_jobs = QueueConfig { filter: Some(KeyPattern::new("job").unwrap()), ..QueueConfig::default() };
    let w = topic.worker_with("g", only_jobs).unwrap();
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let _ = tx.send(w.receive(Duration::from_secs(600)).map(|d| d.is_some()));
    });
    thread::sleep(Duration::from_millis(50));
    disk.fail_after_syncs(0);
    assert!(topic.publish_message(Message::new("x").key("noise")).is_err(), "the topic is now poisoned");
    drop(topic);
    drop(engine);
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(Ok(false)), "receive kept waiting after close");
    waiter.join().unwrap();
}
