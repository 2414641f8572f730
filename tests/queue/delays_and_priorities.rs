//! Delays and priorities: `deliver_after`/`deliver_at` never handed out before
//! their time (checked against the wall clock, never against an upper bound),
//! past times at once, priorities highest first then oldest.

use crate::engines::{Store, on_every_engine};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tollgate::Message;

use super::{drain, now_us, payload, publish_n, take};

fn a_delayed_message_is_not_handed_out_before_its_time(store: Store) {
    let _engine = store.open();
    let topic = _engine.topic("orders").unwrap();
    let offset = topic.publish_message(Message::new("later").deliver_after(Duration::from_millis(200))).unwrap();
    topic.publish(b"now").unwrap();
    let at = topic.read(offset).unwrap().deliver_at_us().unwrap();
    let w = topic.worker("g").unwrap();
    let d = take(&w);
    if d.offset() == offset {
        assert!(now_us() >= at, "handed out before its time"); // a slow machine: already due
        return;
    }
    assert_eq!(payload(&d), "now");
    d.ack().unwrap();
    let metrics = w.metrics();
    if now_us() < at {
        assert_eq!((metrics.delayed, metrics.ready), (1, 0));
    }
    loop {
        // Short receives: each one that returns the message must be at or after its time.
        if let Some(d) = w.receive(Duration::from_millis(20)).unwrap() {
            assert!(now_us() >= at, "handed out {} µs early", at - now_us());
            assert_eq!(d.offset(), offset);
            d.ack().unwrap();
            break;
        }
    }
}

fn a_delivery_time_in_the_past_is_delivered_at_once(store: Store) {
    let _engine = store.open();
    let topic = _engine.topic("orders").unwrap();
    topic.publish_message(Message::new("old").deliver_at(SystemTime::now() - Duration::from_secs(60))).unwrap();
    topic.publish_message(Message::new("epoch").deliver_at(UNIX_EPOCH - Duration::from_secs(1))).unwrap();
    let w = topic.worker("g").unwrap();
    let first = take(&w);
    assert_eq!(w.metrics().delayed, 0);
    assert_eq!(w.metrics().ready, 1);
    assert_eq!((payload(&first), payload(&take(&w))), ("old".into(), "epoch".into()));
}

fn subscriptions_see_delayed_messages_at_once(store: Store) {
    let _engine = store.open();
    let topic = _engine.topic("orders").unwrap();
    topic.publish_message(Message::new("later").deliver_after(Duration::from_secs(3600))).unwrap();
    let mut sub = topic.subscribe("audit").unwrap();
    assert_eq!(sub.next().unwrap().unwrap().payload().as_ref(), b"later");
}

fn priorities_go_highest_first_then_oldest_first(store: Store) {
    let _engine = store.open();
    let topic = _engine.topic("orders").unwrap();
    let published = [(0, "a"), (5, "b"), (9, "c"), (1, "d"), (9, "e"), (5, "f"), (0, "g")];
    for (p, label) in published {
        topic.publish_message(Message::new(label).priority(p)).unwrap();
    }
    let w = topic.worker("g").unwrap();
    let got: Vec<String> = drain(&w).iter().map(payload).collect();
    assert_eq!(got, ["c", "e", "b", "f", "d", "a", "g"]);
}

fn a_redelivered_message_keeps_its_priority(store: Store) {
    let _engine = store.open();
    let topic = _engine.topic("orders").unwrap();
    topic.publish_message(Message::new("low").priority(1)).unwrap();
    topic.publish_message(Message::new("high").priority(8)).unwrap();
    let w = topic.worker("g").unwrap();
    let d = take(&w);
    assert_eq!(payload(&d), "high");
    d.nack(Duration::ZERO, "again").unwrap();
    let d = take(&w);
    assert_eq!((payload(&d), d.attempt()), ("high".into(), 2));
}

fn a_delayed_high_priority_message_goes_first_once_due(store: Store) {
    let _engine = store.open();
    let topic = _engine.topic("orders").unwrap();
    let urgent =
        topic.publish_message(Message::new("urgent").priority(9).deliver_after(Duration::from_millis(60))).unwrap();
    let at = topic.read(urgent).unwrap().deliver_at_us().unwrap();
    publish_n(&topic, 3);
    let w = topic.worker("g").unwrap();
    let first = take(&w); // reads the window
    if payload(&first) == "urgent" {
        assert!(now_us() >= at, "handed out before its time"); // a slow machine: already due
        return;
    }
    while now_us() <= at + 1000 {
        thread::sleep(Duration::from_millis(5));
    }
    let d = take(&w);
    assert_eq!(payload(&d), "urgent", "the due priority-9 message goes before the priority-0 ones");
    drop(first);
}

/// On a disk with a simulated clock, the queue waits for that clock and no
/// other: a delay of an hour, a nack's retry and a visibility timeout all
/// pass when the clock is moved, not before, and a power cut keeps the
/// clock (the retry time written before it is still in the future after).
#[test]
fn on_a_simulated_clock_delays_retries_and_timeouts_follow_it() {
    use tollgate::{Durability, Engine, EngineConfig, QueueConfig, SimDisk, TopicConfig};
    let disk = SimDisk::with_simulated_clock();
    let engine = Engine::open_sim(&disk, "/data", EngineConfig::default()).unwrap();
    let config = TopicConfig { durability: Durability::Sync, ..TopicConfig::default() };
    let topic = engine.create_topic("orders", config).unwrap();
    engine.create_topic("orders.dlq", config).unwrap();
    let hour = Duration::from_secs(3600);
    topic.publish_message(Message::new("later").deliver_at(disk.system_time() + hour)).unwrap();
    let queue = QueueConfig { visibility_timeout: Duration::from_secs(60), ..QueueConfig::default() };
    let worker = topic.worker_with("g", queue.clone()).unwrap();
    assert!(worker.receive(Duration::from_secs(10)).unwrap().is_none(), "an hour early");
    disk.advance_clock(hour - Duration::from_secs(1));
    assert!(worker.receive(Duration::ZERO).unwrap().is_none(), "a second early");
    disk.advance_clock(Duration::from_secs(1));
    let first = worker.receive(Duration::ZERO).unwrap().expect("due");
    assert_eq!(first.deadline(), disk.now() + Duration::from_secs(60));
    disk.advance_clock(Duration::from_secs(60));
    assert!(first.ack().is_err(), "acked after its visibility timeout");
    let second = worker.receive(Duration::ZERO).unwrap().expect("redelivered after the timeout");
    assert_eq!(second.attempt(), 2);
    second.nack(Duration::from_secs(600), "retry in ten minutes").unwrap();
    disk.advance_clock(Duration::from_secs(599));
    assert!(worker.receive(Duration::ZERO).unwrap().is_none(), "a second before the retry");
    let rebooted = disk.power_cut(1);
    drop((worker, topic, engine));
    let engine = Engine::open_sim(&rebooted, "/data", EngineConfig::default()).unwrap();
    let worker = engine.topic("orders").unwrap().worker_with("g", queue).unwrap();
    assert!(worker.receive(Duration::ZERO).unwrap().is_none(), "the reboot kept the clock: still early");
    rebooted.advance_clock(Duration::from_secs(1));
    let third = worker.receive(Duration::ZERO).unwrap().expect("the retry is due");
    assert_eq!(third.attempt(), 3);
    third.ack().unwrap();
}

on_every_engine!(
    a_delayed_message_is_not_handed_out_before_its_time,
    a_delivery_time_in_the_past_is_delivered_at_once,
    subscriptions_see_delayed_messages_at_once,
    priorities_go_highest_first_then_oldest_first,
    a_redelivered_message_keeps_its_priority,
    a_delayed_high_priority_message_goes_first_once_due,
);
