//! Window and metrics: the window bounds what is tracked; ready, in flight,
//! delayed, backlog, lag, acked, dead-lettered, redelivered, timed out.

use std::thread;
use std::time::Duration;

use tollgate::{Message, QueueConfig};

use super::fixture::temp_topic;
use super::{BRIEF, WAIT, config, dead_letters, nothing, publish_n, sleep_past, take};

#[test]
fn the_window_bounds_unsettled_messages_and_a_settle_frees_room() {
    let (_dir, _engine, topic) = temp_topic("orders");
    publish_n(&topic, 3);
    let w = topic.worker_with("g", QueueConfig { window: 2, ..QueueConfig::default() }).unwrap();
    let a = take(&w);
    let b = take(&w);
    nothing(&w, BRIEF);
    let m = w.metrics();
    assert_eq!((m.in_flight, m.backlog, m.lag), (2, 1, 3));
    // A worker waiting on the full window gets the third message once one settles.
    let waiter = {
        let w = w.clone();
        thread::spawn(move || w.receive(WAIT).unwrap().map(|d| d.offset().get()))
    };
    thread::sleep(Duration::from_millis(20));
    a.ack().unwrap();
    assert_eq!(waiter.join().unwrap(), Some(2));
    b.ack().unwrap();
}

#[test]
fn metrics_count_ready_in_flight_delayed_backlog_and_lag() {
    let (_dir, _engine, topic) = temp_topic("orders");
    topic.publish(b"m0").unwrap();
    topic.publish(b"m1").unwrap();
    topic.publish_message(Message::new("m2").deliver_after(Duration::from_secs(600))).unwrap();
    topic.publish(b"m3").unwrap();
    let w = topic.worker("g").unwrap();
    let m = w.metrics();
    assert_eq!((m.ready, m.in_flight, m.delayed, m.backlog, m.lag), (0, 0, 0, 4, 4), "nothing read yet");
    let d0 = take(&w);
    let m = w.metrics();
    assert_eq!((m.ready, m.in_flight, m.delayed, m.backlog, m.lag), (2, 1, 1, 0, 4));
    d0.ack().unwrap();
    topic.publish(b"m4").unwrap();
    let m = w.metrics();
    assert_eq!((m.ready, m.in_flight, m.delayed, m.backlog, m.lag, m.acked), (2, 0, 1, 1, 4, 1));
}

#[test]
fn metrics_count_acked_dead_lettered_redelivered_and_timed_out() {
    let (_dir, engine, topic) = temp_topic("orders");
    publish_n(&topic, 4);
    let w = topic.worker_with("g", config(500, 2)).unwrap();
    take(&w).ack().unwrap(); // m0
    take(&w).nack(Duration::ZERO, "x").unwrap(); // m1, attempt 1
    let d = take(&w);
    assert_eq!((d.offset().get(), d.attempt()), (1, 2));
    d.nack(Duration::ZERO, "x").unwrap(); // m1 dead-lettered
    take(&w).reject("no").unwrap(); // m2 dead-lettered
    let d = take(&w); // m3
    sleep_past(d.deadline());
    let m = w.metrics();
    assert_eq!((m.ready, m.in_flight, m.timed_out), (1, 0, 1));
    drop(d);
    take(&w).ack().unwrap(); // m3, attempt 2
    let m = w.metrics();
    assert_eq!((m.acked, m.dead_lettered, m.redelivered, m.timed_out, m.lag), (2, 2, 2, 1, 0));
    assert_eq!(dead_letters(&engine, "orders.dlq").len(), 2);
}
