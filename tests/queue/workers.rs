//! Workers and deliveries: workers of a group compete (clones and further
//! `worker` calls share the group), `receive` times out with `None`, attempts
//! count from 1, `ack` settles for good, `nack` retries (at once or after a
//! delay), a dropped delivery comes back at once, a visibility timeout
//! redelivers, `extend` keeps a delivery, settling after the deadline fails
//! with `Expired`, over-long delays fail with `TooLong`.

use crate::engines::{Store, on_every_engine};
use std::collections::BTreeSet;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tollgate::{DELAY_MAX, Delivery, QueueError, VISIBILITY_MAX, Worker};

use super::{BRIEF, config, drain, nothing, now_us, publish_n, records, sleep_past, take};

fn workers_and_deliveries_can_be_shared_between_threads(_store: Store) {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<Worker>();
    assert_send::<Delivery>();
}

fn workers_of_a_group_compete_each_message_goes_to_one_of_them(store: Store) {
    let _engine = store.open();
    let topic = _engine.topic("orders").unwrap();
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

fn separate_groups_each_get_every_message(store: Store) {
    let _engine = store.open();
    let topic = _engine.topic("orders").unwrap();
    publish_n(&topic, 2);
    for group in ["billing", "shipping"] {
        let w = topic.worker(group).unwrap();
        let got: Vec<u64> = drain(&w).into_iter().map(|d| d.offset().get()).collect();
        assert_eq!(got, [0, 1], "group {group}");
    }
}

fn receive_returns_none_when_nothing_comes_in_time(store: Store) {
    let _engine = store.open();
    let topic = _engine.topic("orders").unwrap();
    let w = topic.worker("g").unwrap();
    assert!(w.receive(Duration::ZERO).unwrap().is_none());
    assert!(w.receive(BRIEF).unwrap().is_none());
    topic.publish(b"x").unwrap();
    let d = w.receive(Duration::ZERO).unwrap().expect("a zero timeout still takes a ready message");
    assert_eq!(d.offset().get(), 0);
}

fn receive_wakes_up_for_a_message_published_while_it_waits(store: Store) {
    let engine = store.open();
    let topic = engine.topic("orders").unwrap();
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

fn the_first_delivery_is_attempt_one_and_each_retry_counts_up(store: Store) {
    let _engine = store.open();
    let topic = _engine.topic("orders").unwrap();
    topic.publish(b"x").unwrap();
    let w = topic.worker_with("g", config(30_000, 10)).unwrap();
    for expected in 1..=4 {
        let d = take(&w);
        assert_eq!((d.offset().get(), d.attempt()), (0, expected));
        d.nack(Duration::ZERO, "again").unwrap();
    }
    take(&w).ack().unwrap();
}

fn an_acked_message_is_never_delivered_again(store: Store) {
    let _engine = store.open();
    let topic = _engine.topic("orders").unwrap();
    topic.publish(b"x").unwrap();
    let w = topic.worker_with("g", config(500, 5)).unwrap();
    let d = take(&w);
    let deadline = d.deadline();
    d.ack().unwrap();
    sleep_past(deadline); // its visibility deadline passing changes nothing
    nothing(&w, BRIEF);
    assert_eq!(w.metrics().acked, 1);
}

fn nack_without_delay_redelivers_at_once(store: Store) {
    let _engine = store.open();
    let topic = _engine.topic("orders").unwrap();
    topic.publish(b"x").unwrap();
    let w = topic.worker("g").unwrap();
    take(&w).nack(Duration::ZERO, "try again").unwrap();
    let d = take(&w);
    assert_eq!((d.offset().get(), d.attempt()), (0, 2));
}

fn nack_with_delay_holds_the_message_back_until_its_retry_time(store: Store) {
    let _engine = store.open();
    let topic = _engine.topic("orders").unwrap();
    topic.publish(b"x").unwrap();
    let w = topic.worker("g").unwrap();
    let d = take(&w);
    let before_nack = now_us();
    d.nack(Duration::from_millis(150), "card declined").unwrap();
    let d = take(&w);
    assert!(now_us() >= before_nack + 150_000, "handed out before its retry time");
    assert_eq!(d.attempt(), 2);
}

fn a_dropped_delivery_comes_back_at_once_as_a_failed_attempt(store: Store) {
    let _engine = store.open();
    let topic = _engine.topic("orders").unwrap();
    topic.publish(b"x").unwrap();
    let w = topic.worker("g").unwrap(); // 30 s visibility: only the drop can bring it back
    drop(take(&w));
    let d = take(&w);
    assert_eq!((d.offset().get(), d.attempt()), (0, 2));
}

fn the_visibility_timeout_redelivers_an_unsettled_message(store: Store) {
    let _engine = store.open();
    let topic = _engine.topic("orders").unwrap();
    topic.publish(b"x").unwrap();
    let w = topic.worker_with("g", config(500, 5)).unwrap();
    let first = take(&w);
    let second = take(&w); // while `first` is still held
    assert!(Instant::now() >= first.deadline(), "redelivered before the visibility deadline");
    assert_eq!((second.offset().get(), second.attempt()), (0, 2));
    assert_eq!(first.ack(), Err(QueueError::Expired { offset: 0 }));
    if !store.is_postgres() {
        // PostgreSQL counts no timeouts (Worker::metrics says which counts it keeps).
        assert!(w.metrics().timed_out >= 1);
    }
}

fn settling_after_the_visibility_deadline_fails_with_expired(store: Store) {
    let engine = store.open();
    let topic = engine.topic("orders").unwrap();
    topic.publish(b"x").unwrap();
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

fn extend_keeps_a_delivery_past_its_visibility_timeout(store: Store) {
    let _engine = store.open();
    let topic = _engine.topic("orders").unwrap();
    topic.publish(b"x").unwrap();
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

fn extend_beyond_the_limit_is_too_long_and_changes_nothing(store: Store) {
    let _engine = store.open();
    let topic = _engine.topic("orders").unwrap();
    topic.publish(b"x").unwrap();
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

fn a_retry_delay_beyond_the_limit_is_too_long_and_leaves_the_message_in_flight(store: Store) {
    let _engine = store.open();
    let topic = _engine.topic("orders").unwrap();
    topic.publish(b"x").unwrap();
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

on_every_engine!(
    run_loops_and_the_async_forms_receive_and_settle,
    workers_and_deliveries_can_be_shared_between_threads,
    workers_of_a_group_compete_each_message_goes_to_one_of_them,
    separate_groups_each_get_every_message,
    receive_returns_none_when_nothing_comes_in_time,
    receive_wakes_up_for_a_message_published_while_it_waits,
    the_first_delivery_is_attempt_one_and_each_retry_counts_up,
    an_acked_message_is_never_delivered_again,
    nack_without_delay_redelivers_at_once,
    nack_with_delay_holds_the_message_back_until_its_retry_time,
    a_dropped_delivery_comes_back_at_once_as_a_failed_attempt,
    the_visibility_timeout_redelivers_an_unsettled_message,
    settling_after_the_visibility_deadline_fails_with_expired,
    extend_keeps_a_delivery_past_its_visibility_timeout,
    extend_beyond_the_limit_is_too_long_and_changes_nothing,
    a_retry_delay_beyond_the_limit_is_too_long_and_leaves_the_message_in_flight,
);

fn run_loops_and_the_async_forms_receive_and_settle(store: Store) {
    use futures_core::Stream;
    use std::future::poll_fn;
    use std::pin::Pin;
    use tollgate::{RunConfig, RunEnd, Settle};
    let engine = store.open();
    let topic = engine.topic("orders").unwrap();
    publish_n(&topic, 4);
    let w = topic.worker("g").unwrap();
    let config = RunConfig { concurrency: 2, ..RunConfig::default() };
    let shutdown = config.shutdown.clone();
    let report = w
        .run(config, |_| {
            if shutdown.report().handled >= 1 {
                shutdown.stop();
            }
            Settle::Ack
        })
        .unwrap();
    assert_eq!(report.ended, Some(RunEnd::Stopped));
    let acked = report.acked;
    assert!(acked >= 2, "{report:?}");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        // What the blocking loop left, through the async forms.
        let mut left = 4 - acked;
        while left > 0 {
            let batch = w.receive_batch_async(10, Duration::from_secs(10)).await.unwrap();
            for d in batch {
                d.ack_async().await.unwrap();
                left -= 1;
            }
        }
        assert!(w.receive_async(Duration::from_millis(20)).await.unwrap().is_none());
        topic.publish("late").unwrap();
        let mut deliveries = w.deliveries();
        let d = poll_fn(|cx| Pin::new(&mut deliveries).poll_next(cx)).await.unwrap().unwrap();
        assert_eq!(d.payload().as_ref(), b"late");
        d.nack_async(Duration::ZERO, "again").await.unwrap();
        let d = poll_fn(|cx| Pin::new(&mut deliveries).poll_next(cx)).await.unwrap().unwrap();
        assert_eq!(d.attempt(), 2);
        d.reject_async("no").await.unwrap();
        drop(deliveries);
        topic.publish("async run").unwrap();
        let config = RunConfig::default();
        let shutdown = config.shutdown.clone();
        let report = w
            .run_async(config, move |delivery| {
                let (payload, shutdown) = (delivery.payload().clone(), shutdown.clone());
                async move {
                    assert_eq!(payload.as_ref(), b"async run");
                    shutdown.stop();
                    Settle::Ack
                }
            })
            .await
            .unwrap();
        assert_eq!((report.acked, report.ended), (1, Some(RunEnd::Stopped)));
    });
    assert_eq!(w.metrics().in_flight, 0);
    assert_eq!(w.metrics().dead_lettered, 1);
}
