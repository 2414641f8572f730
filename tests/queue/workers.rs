//! Workers and deliveries: workers of a group compete (clones and further
//! `worker` calls share the group), `receive` times out with `None`, attempts
//! count from 1, `ack` settles for good, `nack` retries (at once or after a
//! delay), a dropped delivery comes back at once, a visibility timeout
//! redelivers, `extend` keeps a delivery, settling after the deadline fails
//! with `Expired`, over-long delays fail with `TooLong`.

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tollgate::{DELAY_MAX, Delivery, QueueError, VISIBILITY_MAX, Worker};

use super::fixture::{one_message, temp_topic};
use super::{BRIEF, config, drain, nothing, now_us, publish_n, records, sleep_past, take};

#[test]
fn workers_and_deliveries_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<Worker>();
    assert_send::<Delivery>();
}

#[test]
fn workers_of_a_group_compete_each_message_goes_to_one_of_them() {
    let (_dir, _engine, topic) = temp_topic("orders");
    publish_n(&topic, 3);
    let a = topic.worker("billing").unwrap();
    let b = a.clone();
    let c = topic.worker("billing").unwrap(); // joins the same group
    assert_eq!(c.group(), "billing");
    let held = [take(&a), take(&b), take(&c)];
    let offsets: BTreeSet<u64> = held.iter().map(|d| d.offset().get()).collect();
    assert_eq!(offsets, BTreeSet::from([0, 1, 2]));
    nothing(&a, BRIEF);
    nothing(&c, BRIEF);
}

#[test]
fn separate_groups_each_get_every_message() {
    let (_dir, _engine, topic) = temp_topic("orders");
    publish_n(&topic, 2);
    for group in ["billing", "shipping"] {
        let w = topic.worker(group).unwrap();
        let got: Vec<u64> = drain(&w).into_iter().map(|d| d.offset().get()).collect();
        assert_eq!(got, [0, 1], "group {group}");
    }
}

#[test]
fn receive_returns_none_when_nothing_comes_in_time() {
    let (_dir, _engine, topic) = temp_topic("orders");
    let w = topic.worker("g").unwrap();
    assert!(w.receive(Duration::ZERO).unwrap().is_none());
    assert!(w.receive(BRIEF).unwrap().is_none());
    topic.publish(b"x").unwrap();
    let d = w.receive(Duration::ZERO).unwrap().expect("a zero timeout still takes a ready message");
    assert_eq!(d.offset().get(), 0);
}

#[test]
fn receive_wakes_up_for_a_message_published_while_it_waits() {
    let (_dir, engine, topic) = temp_topic("orders");
    let w = topic.worker("g").unwrap();
    let (tx, rx) = mpsc::channel();
    {
        let w = w.clone();
        // No timeout at all: only the publish ends the wait.
        thread::spawn(move || tx.send(w.receive(Duration::MAX).unwrap().map(|d| (d.offset().get(), d.attempt()))));
    }
    thread::sleep(Duration::from_millis(20));
    topic.publish(b"late").unwrap();
    // A backstop against hanging the suite on a lost wake-up, not a speed check.
    let got = rx.recv_timeout(Duration::from_secs(60));
    drop(engine); // ends the wait if the wake-up was lost
    assert_eq!(got, Ok(Some((0, 1))), "the publish did not wake the waiting worker");
}

#[test]
fn the_first_delivery_is_attempt_one_and_each_retry_counts_up() {
    let (_dir, _engine, topic) = one_message();
    let w = topic.worker_with("g", config(30_000, 10)).unwrap();
    for expected in 1..=4 {
        let d = take(&w);
        assert_eq!((d.offset().get(), d.attempt()), (0, expected));
        d.nack(Duration::ZERO, "again").unwrap();
    }
    take(&w).ack().unwrap();
}

#[test]
fn an_acked_message_is_never_delivered_again() {
    let (_dir, _engine, topic) = one_message();
    let w = topic.worker_with("g", config(500, 5)).unwrap();
    let d = take(&w);
    let deadline = d.deadline();
    d.ack().unwrap();
    sleep_past(deadline); // its visibility deadline passing changes nothing
    nothing(&w, BRIEF);
    assert_eq!(w.metrics().acked, 1);
}

#[test]
fn nack_without_delay_redelivers_at_once() {
    let (_dir, _engine, topic) = one_message();
    let w = topic.worker("g").unwrap();
    take(&w).nack(Duration::ZERO, "try again").unwrap();
    let d = take(&w);
    assert_eq!((d.offset().get(), d.attempt()), (0, 2));
}

#[test]
fn nack_with_delay_holds_the_message_back_until_its_retry_time() {
    let (_dir, _engine, topic) = one_message();
    let w = topic.worker("g").unwrap();
    let d = take(&w);
    let before_nack = now_us();
    d.nack(Duration::from_millis(150), "card declined").unwrap();
    let d = take(&w);
    assert!(now_us() >= before_nack + 150_000, "handed out before its retry time");
    assert_eq!(d.attempt(), 2);
}

#[test]
fn a_dropped_delivery_comes_back_at_once_as_a_failed_attempt() {
    let (_dir, _engine, topic) = one_message();
    let w = topic.worker("g").unwrap(); // 30 s visibility: only the drop can bring it back
    drop(take(&w));
    let d = take(&w);
    assert_eq!((d.offset().get(), d.attempt()), (0, 2));
}

#[test]
fn the_visibility_timeout_redelivers_an_unsettled_message() {
    let (_dir, _engine, topic) = one_message();
    let w = topic.worker_with("g", config(500, 5)).unwrap();
    let first = take(&w);
    let second = take(&w); // while `first` is still held
    assert!(Instant::now() >= first.deadline(), "redelivered before the visibility deadline");
    assert_eq!((second.offset().get(), second.attempt()), (0, 2));
    assert_eq!(first.ack(), Err(QueueError::Expired { offset: 0 }));
    assert!(w.metrics().timed_out >= 1);
}

#[test]
fn settling_after_the_visibility_deadline_fails_with_expired() {
    let (_dir, engine, topic) = one_message();
    let w = topic.worker_with("g", config(20, 10)).unwrap();
    let expired = QueueError::Expired { offset: 0 };
    // Nobody else received it in the meantime: the deadline alone decides.
    let d = take(&w);
    sleep_past(d.deadline());
    assert_eq!(d.ack(), Err(expired.clone()));
    let d = take(&w);
    sleep_past(d.deadline());
    assert_eq!(d.nack(Duration::ZERO, "late"), Err(expired.clone()));
    let d = take(&w);
    sleep_past(d.deadline());
    assert_eq!(d.reject("late"), Err(expired.clone()));
    let mut d = take(&w);
    sleep_past(d.deadline());
    assert_eq!(d.extend(Duration::from_secs(1)), Err(expired));
    drop(d);
    assert_eq!(take(&w).attempt(), 5, "nothing settled it");
    assert!(records(&engine.topic("orders.dlq").unwrap()).is_empty(), "a late reject dead-lettered it");
}

#[test]
fn extend_keeps_a_delivery_past_its_visibility_timeout() {
    let (_dir, _engine, topic) = one_message();
    let w = topic.worker_with("g", config(500, 5)).unwrap();
    let mut d = take(&w);
    let first_deadline = d.deadline();
    d.extend(Duration::from_secs(30)).unwrap();
    assert!(d.deadline() > first_deadline);
    sleep_past(first_deadline + Duration::from_millis(20));
    nothing(&w, BRIEF);
    d.ack().unwrap();
    assert_eq!(w.metrics().timed_out, 0);
}

#[test]
fn extend_beyond_the_limit_is_too_long_and_changes_nothing() {
    let (_dir, _engine, topic) = one_message();
    let w = topic.worker("g").unwrap();
    let mut d = take(&w);
    let deadline = d.deadline();
    let too_long = VISIBILITY_MAX + Duration::from_secs(1);
    assert_eq!(d.extend(too_long), Err(QueueError::TooLong { requested: too_long, max: VISIBILITY_MAX }));
    let max = Duration::MAX;
    assert_eq!(d.extend(max), Err(QueueError::TooLong { requested: max, max: VISIBILITY_MAX }));
    assert_eq!(d.deadline(), deadline);
    d.ack().unwrap();
}

#[test]
fn a_retry_delay_beyond_the_limit_is_too_long_and_leaves_the_message_in_flight() {
    let (_dir, _engine, topic) = one_message();
    let w = topic.worker_with("g", config(500, 5)).unwrap();
    let d = take(&w);
    let deadline = d.deadline();
    let too_long = DELAY_MAX + Duration::from_millis(1);
    assert_eq!(d.nack(too_long, "later"), Err(QueueError::TooLong { requested: too_long, max: DELAY_MAX }));
    assert_eq!(w.metrics().in_flight, 1);
    // Still in flight: it comes back at its deadline, not before.
    let d = take(&w);
    assert!(Instant::now() >= deadline);
    assert_eq!(d.attempt(), 2);
    assert_eq!(d.nack(Duration::MAX, "later"), Err(QueueError::TooLong { requested: Duration::MAX, max: DELAY_MAX }));
}
