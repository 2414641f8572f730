//! Dead letters: `reject`, attempts used up by nacks or by timeouts, the
//! default and a configured dead-letter topic, the `tollgate.dlq.*` headers
//! (topic, group, offset, attempts, reason) and what is copied.

use crate::engines::{Store, on_every_engine};
use std::time::{Duration, SystemTime};

use tollgate::{Engine, Message, QueueConfig};

use super::{BRIEF, config, dead_letters, drain, header, nothing, publish_n, sleep_past, take};

fn reject_dead_letters_at_once_whatever_attempts_are_left(store: Store) {
    let engine = store.open();
    let topic = engine.topic("orders").unwrap();
    topic.publish(b"bad order").unwrap();
    let w = topic.worker("g").unwrap();
    take(&w).reject("malformed").unwrap();
    nothing(&w, BRIEF);
    let dead = dead_letters(&engine, "orders.dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0].1, "tollgate.dlq.reason"), "malformed");
    assert_eq!(header(&dead[0].1, "tollgate.dlq.attempts"), "1");
    assert_eq!(w.metrics().dead_lettered, 1);
}

fn nacks_that_use_up_max_attempts_dead_letter_the_message(store: Store) {
    let engine = store.open();
    let topic = engine.topic("orders").unwrap();
    topic.publish(b"x").unwrap();
    let w = topic.worker_with("g", config(30_000, 3)).unwrap();
    for attempt in 1..=3 {
        let d = take(&w);
        assert_eq!(d.attempt(), attempt);
        d.nack(Duration::ZERO, &format!("failure {attempt}")).unwrap();
    }
    nothing(&w, BRIEF);
    let dead = dead_letters(&engine, "orders.dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0].1, "tollgate.dlq.attempts"), "3");
    assert_eq!(header(&dead[0].1, "tollgate.dlq.reason"), "failure 3");
}

fn timeouts_that_use_up_max_attempts_dead_letter_the_message(store: Store) {
    let engine = store.open();
    let topic = engine.topic("orders").unwrap();
    topic.publish(b"x").unwrap();
    let w = topic.worker_with("g", config(15, 2)).unwrap();
    for attempt in 1..=2 {
        let d = take(&w);
        assert_eq!(d.attempt(), attempt);
        sleep_past(d.deadline());
        drop(d);
    }
    nothing(&w, BRIEF);
    let dead = dead_letters(&engine, "orders.dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0].1, "tollgate.dlq.attempts"), "2");
    assert_eq!(header(&dead[0].1, "tollgate.dlq.reason"), "its visibility timeout passed");
    if !store.is_postgres() {
        // PostgreSQL counts no timeouts (Worker::metrics says which counts it keeps).
        assert_eq!(w.metrics().timed_out, 2);
    }
}

fn a_dead_letter_names_its_topic_group_offset_attempts_and_reason_and_keeps_the_message(store: Store) {
    let engine = store.open();
    let topic = engine.topic("orders").unwrap();
    topic.publish(b"first").unwrap();
    let later = SystemTime::now() - Duration::from_secs(1);
    topic
        .publish_message(
            Message::new("order 1002").key("order.1002").header("trace", "abc").priority(7).deliver_at(later),
        )
        .unwrap();
    let w = topic.worker_with("payments", config(30_000, 2)).unwrap();
    let d = take(&w);
    assert_eq!(d.offset().get(), 1, "priority 7 first");
    d.nack(Duration::ZERO, "card declined").unwrap();
    let d = take(&w);
    d.nack(Duration::ZERO, "card declined twice").unwrap();
    let dead = dead_letters(&engine, "orders.dlq");
    assert_eq!(dead.len(), 1);
    let (offset, rec) = &dead[0];
    assert_eq!(*offset, 1);
    assert_eq!(header(rec, "tollgate.dlq.topic"), "orders");
    assert_eq!(header(rec, "tollgate.dlq.group"), "payments");
    assert_eq!(header(rec, "tollgate.dlq.offset"), "1");
    assert_eq!(header(rec, "tollgate.dlq.attempts"), "2");
    assert_eq!(header(rec, "tollgate.dlq.reason"), "card declined twice");
    assert_eq!(rec.payload().as_ref(), b"order 1002");
    assert_eq!(rec.key(), Some("order.1002"));
    assert_eq!(rec.header("trace"), Some(&b"abc"[..]));
    assert_eq!(rec.priority(), 7);
    assert_eq!(rec.deliver_at_us(), None, "the delivery time is not copied");
}

fn the_dead_letter_topic_can_be_chosen(store: Store) {
    let engine = store.open();
    let topic = engine.topic("orders").unwrap();
    topic.publish(b"x").unwrap();
    let config = QueueConfig { dead_letter_topic: Some("graveyard".into()), ..QueueConfig::default() };
    let w = topic.worker_with("g", config).unwrap();
    take(&w).reject("no").unwrap();
    assert_eq!(dead_letters(&engine, "graveyard").len(), 1);
    assert!(!engine.topics().unwrap().contains(&"orders.dlq".to_owned()));
}

#[test]
fn dead_letters_stay_settled_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path()).unwrap();
        let topic = engine.topic("orders").unwrap();
        publish_n(&topic, 2);
        let w = topic.worker("g").unwrap();
        take(&w).reject("no").unwrap();
    }
    let engine = Engine::open(dir.path()).unwrap();
    let w = engine.topic("orders").unwrap().worker("g").unwrap();
    let got: Vec<u64> = drain(&w).iter().map(|d| d.offset().get()).collect();
    assert_eq!(got, [1]);
    assert_eq!(dead_letters(&engine, "orders.dlq").len(), 1);
}

on_every_engine!(
    reject_dead_letters_at_once_whatever_attempts_are_left,
    nacks_that_use_up_max_attempts_dead_letter_the_message,
    timeouts_that_use_up_max_attempts_dead_letter_the_message,
    a_dead_letter_names_its_topic_group_offset_attempts_and_reason_and_keeps_the_message,
    the_dead_letter_topic_can_be_chosen,
);
