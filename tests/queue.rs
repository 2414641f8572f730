//! Work queues on the log, one test per rule:
//!
//! - **Workers and deliveries**: workers of a group compete (clones and
//!   further `worker` calls share the group), `receive` times out with
//!   `None`, attempts count from 1, `ack` settles for good, `nack` retries
//!   (at once or after a delay), a dropped delivery comes back at once, a
//!   visibility timeout redelivers, `extend` keeps a delivery, settling after
//!   the deadline fails with `Expired`, over-long delays fail with `TooLong`.
//! - **Dead letters**: `reject`, attempts used up by nacks or by timeouts,
//!   the default and a configured dead-letter topic, the `tollgate.dlq.*`
//!   headers (topic, group, offset, attempts, reason) and what is copied.
//! - **Configuration and bad input**: defaults, `QueueConfig: FromStr`
//!   (unknown, repeated and out-of-range options), `worker_with` refusing bad
//!   settings, names and a differing configuration, publishes refused for
//!   priorities out of range, reserved headers and delays beyond the limit.
//! - **Delays and priorities**: `deliver_after`/`deliver_at` never handed out
//!   before their time (checked against the wall clock, never against an
//!   upper bound), past times at once, priorities highest first then oldest.
//! - **Filters**: `order.*` and `order.#` for subscriptions
//!   (`set_filter`) and worker groups, where skipped messages count as settled.
//! - **Window and metrics**: the window bounds what is tracked; ready, in
//!   flight, delayed, backlog, lag, acked, dead-lettered, redelivered, timed out.
//! - **Transactions**: locks held across an atomic batch and handed back, a
//!   refused batch publishes nothing and releases the locks, and a batch is
//!   all or nothing after a power cut.
//! - **Restarts and crashes**: a clean close and reopen of the same directory;
//!   `SimDisk::kill_process` (kill -9) and `SimDisk::power_cut` (acks of a
//!   `Sync` topic are durable on return); a poison message whose worker is
//!   killed on every attempt ends in the dead-letter topic after
//!   `max_attempts`; delays and retry times survive; the journal's compaction
//!   keeps everything, also when the disk dies at each of its syncs; a full
//!   disk fails a settle cleanly and the group carries on once space is freed.
//! - **Other errors**: a deleted topic (`Deleted`), a closed engine (`Closed`).
//! - **Threads**: 6 workers with no failures ack every message exactly once;
//!   6 workers with injected failures (nacks, drops, timeouts, rejects,
//!   extends) settle every message, never ack one twice, and an ack after the
//!   deadline always fails with `Expired`.
//! - **Bugs found in review**, fixed, one regression test each: `start_latest_group_skips_messages_published_before_it_opened`,
//!   `group_state_about_a_lost_log_tail_is_dropped_even_if_the_group_skipped_the_recovery_session`,
//!   `an_oversized_dead_letter_does_not_block_the_group`,
//!   `a_dead_letter_of_a_message_with_64_headers_does_not_block_the_group`,
//!   `a_rejected_message_whose_dead_letter_failed_is_not_handed_out_again`,
//!   `a_rejected_message_whose_dead_letter_failed_is_not_handed_out_again_after_a_restart`,
//!   `shortening_a_visibility_deadline_wakes_a_waiting_worker`,
//!   `attempts_survive_a_power_cut_on_a_sync_topic`,
//!   `a_transaction_whose_sync_fails_reports_io_publishes_all_or_nothing_and_releases_its_locks`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[allow(dead_code)] // only `below` is used here
#[path = "support/rng.rs"]
mod rng;
use rng::Rng;
#[allow(dead_code)] // each test binary uses some of it
#[path = "support/fixture.rs"]
mod fixture;
use fixture::{one_message, open_sim, sim_disk, sync_topic, temp_topic};

use tollgate::{
    DELAY_MAX, Delivery, Durability, Engine, KeyPattern, LockError, LockManager, Message, Offset, PRIORITY_MAX,
    PublishError, QueueConfig, QueueError, Record, StartAt, Topic, TopicConfig, TopicError, VISIBILITY_MAX, Worker,
};

/// How long a test waits for something that should come (never reached when it works).
const WAIT: Duration = Duration::from_secs(10);
/// How long a test waits to see that nothing comes.
const BRIEF: Duration = Duration::from_millis(30);
/// Entries one journal holds: (4 MiB - 32-byte header) / 32 bytes (docs/FORMAT.md).
const JOURNAL_ENTRIES: u64 = ((4 << 20) - 32) / 32;

// ---------------------------------------------------------------- helpers

fn config(visibility_ms: u64, max_attempts: u32) -> QueueConfig {
    QueueConfig { visibility_timeout: Duration::from_millis(visibility_ms), max_attempts, ..QueueConfig::default() }
}

/// The next delivery, which must come.
fn take(worker: &Worker) -> Delivery {
    worker.receive(WAIT).unwrap().expect("a message to receive")
}

/// Asserts that nothing is handed out within `wait`.
fn nothing(worker: &Worker, wait: Duration) {
    if let Some(d) = worker.receive(wait).unwrap() {
        panic!("nothing should be ready, got offset {} attempt {}", d.offset(), d.attempt());
    }
}

/// Every delivery until the group has nothing ready for a moment.
fn drain(worker: &Worker) -> Vec<Delivery> {
    let mut all = Vec::new();
    while let Some(d) = worker.receive(Duration::from_millis(50)).unwrap() {
        all.push(d);
    }
    all
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn payload(d: &Delivery) -> String {
    text(d.payload())
}

fn header(record: &Record, name: &str) -> String {
    text(record.header(name).unwrap_or_else(|| panic!("header {name} missing")))
}

/// Every record of a topic.
fn records(topic: &Topic) -> Vec<Record> {
    (topic.info().oldest.get()..topic.info().next.get()).map(|o| topic.read(Offset::new(o)).unwrap()).collect()
}

/// The dead letters in `name`, by the offset they had in their topic.
fn dead_letters(engine: &Engine, name: &str) -> Vec<(u64, Record)> {
    let topic = engine.topic(name).unwrap();
    records(&topic).into_iter().map(|r| (header(&r, "tollgate.dlq.offset").parse().unwrap(), r)).collect()
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// Sleeps until `deadline` has passed (strictly).
fn sleep_past(deadline: Instant) {
    while Instant::now() <= deadline {
        thread::sleep(deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(1));
    }
}

fn publish_n(topic: &Topic, n: u64) {
    for i in 0..n {
        topic.publish(format!("m{i}")).unwrap();
    }
}

// ------------------------------------------------- workers and deliveries

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

// ------------------------------------------------------------ dead letters

#[test]
fn reject_dead_letters_at_once_whatever_attempts_are_left() {
    let (_dir, engine, topic) = temp_topic("orders");
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

#[test]
fn nacks_that_use_up_max_attempts_dead_letter_the_message() {
    let (_dir, engine, topic) = one_message();
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

#[test]
fn timeouts_that_use_up_max_attempts_dead_letter_the_message() {
    let (_dir, engine, topic) = one_message();
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
    assert_eq!(w.metrics().timed_out, 2);
}

#[test]
fn a_dead_letter_names_its_topic_group_offset_attempts_and_reason_and_keeps_the_message() {
    let (_dir, engine, topic) = temp_topic("orders");
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

#[test]
fn the_dead_letter_topic_can_be_chosen() {
    let (_dir, engine, topic) = one_message();
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

// ------------------------------------------- configuration and bad input

#[test]
fn the_default_configuration_is_30s_5_attempts_and_topic_dot_dlq() {
    let config = QueueConfig::default();
    assert_eq!(config.visibility_timeout, Duration::from_secs(30));
    assert_eq!(config.max_attempts, 5);
    assert_eq!(config.dead_letter_topic, None);
    assert_eq!(config.filter, None);
    assert_eq!(config.start, StartAt::Earliest);
    let (_dir, engine, topic) = one_message();
    let w = topic.worker("g").unwrap();
    assert_eq!(w.config(), &config);
    let d = take(&w);
    assert!(d.deadline() > Instant::now() + Duration::from_secs(25), "a 30 s visibility timeout");
    assert_eq!(d.attempt(), 1);
    d.nack(Duration::ZERO, "x").unwrap();
    for attempt in 2..=5 {
        let d = take(&w);
        assert_eq!(d.attempt(), attempt);
        d.nack(Duration::ZERO, "x").unwrap();
    }
    nothing(&w, BRIEF);
    assert_eq!(dead_letters(&engine, "orders.dlq").len(), 1);
}

#[test]
fn queue_config_parses_its_text_form() {
    let parsed: QueueConfig =
        "visibility_timeout=250ms, max_attempts=7, dead_letter_topic=dead, filter=order.#, start=latest, window=10"
            .parse()
            .unwrap();
    let expected = QueueConfig {
        visibility_timeout: Duration::from_millis(250),
        max_attempts: 7,
        dead_letter_topic: Some("dead".into()),
        filter: Some(KeyPattern::new("order.#").unwrap()),
        start: StartAt::Latest,
        window: 10,
    };
    assert_eq!(parsed, expected);
    assert_eq!("".parse::<QueueConfig>().unwrap(), QueueConfig::default());
    assert_eq!("visibility_timeout=2m".parse::<QueueConfig>().unwrap().visibility_timeout, Duration::from_secs(120));
}

#[test]
fn queue_config_refuses_unknown_repeated_and_out_of_range_options() {
    for bad in [
        "max_attempt=3",
        "colour=blue",
        "max_attempts",
        "max_attempts=0",
        "max_attempts=1001",
        "max_attempts=-1",
        "max_attempts=2,max_attempts=3",
        "visibility_timeout=0ms",
        "visibility_timeout=13h",
        "visibility_timeout=30",
        "visibility_timeout=ms",
        "visibility_timeout=1.5s",
        "visibility_timeout=18446744073709551615h",
        "visibility_timeout=18446744073709551615ms",
        "window=0",
        "window=16777217",
        "start=middle",
        "filter=ord*",
        "=3",
        "max_attempts=3,,bogus",
    ] {
        let err = bad.parse::<QueueConfig>().expect_err(bad);
        assert!(!err.reason.is_empty(), "{bad}");
    }
    let err = "max_attempt=3".parse::<QueueConfig>().unwrap_err();
    assert_eq!(err.option, "max_attempt=3");
}

#[test]
fn worker_with_refuses_bad_settings_names_and_a_second_configuration() {
    let (_dir, engine, topic) = temp_topic("orders");
    let invalid = |config: QueueConfig| match topic.worker_with("g", config) {
        Err(TopicError::InvalidConfig { .. }) => {}
        other => panic!("expected InvalidConfig, got {other:?}"),
    };
    invalid(QueueConfig { max_attempts: 0, ..QueueConfig::default() });
    invalid(QueueConfig { max_attempts: 1001, ..QueueConfig::default() });
    invalid(QueueConfig { visibility_timeout: Duration::ZERO, ..QueueConfig::default() });
    invalid(QueueConfig { visibility_timeout: VISIBILITY_MAX * 2, ..QueueConfig::default() });
    invalid(QueueConfig { window: 0, ..QueueConfig::default() });
    invalid(QueueConfig { window: usize::MAX, ..QueueConfig::default() });
    invalid(QueueConfig { dead_letter_topic: Some("orders".into()), ..QueueConfig::default() });
    for name in ["", "a/b", "..", &"g".repeat(249)] {
        assert!(matches!(topic.worker(name), Err(TopicError::InvalidName { .. })), "group {name:?}");
    }
    let bad_dlq = QueueConfig { dead_letter_topic: Some("a/b".into()), ..QueueConfig::default() };
    assert!(matches!(topic.worker_with("g", bad_dlq), Err(TopicError::InvalidName { .. })));
    let long = engine.topic(&"t".repeat(253)).unwrap(); // its default dead-letter name is too long
    assert!(matches!(long.worker("g"), Err(TopicError::InvalidName { .. })));
    let _w = topic.worker("g").unwrap();
    assert_eq!(
        topic.worker_with("g", config(1000, 5)).unwrap_err(),
        TopicError::GroupConfigDiffers { group: "g".into() }
    );
    assert!(topic.worker("g").is_ok(), "the same configuration joins");
}

#[test]
fn publishing_a_priority_out_of_range_is_an_invalid_message() {
    let (_dir, _engine, topic) = temp_topic("orders");
    for p in [PRIORITY_MAX + 1, 200, u8::MAX] {
        assert!(matches!(
            topic.publish_message(Message::new("x").priority(p)),
            Err(PublishError::InvalidMessage { .. })
        ));
    }
    assert!(matches!(
        topic.publish_batch([Message::new("ok"), Message::new("x").priority(10)]),
        Err(PublishError::InvalidMessage { .. })
    ));
    assert_eq!(topic.info().next, Offset::new(0), "nothing was published");
    topic.publish_message(Message::new("x").priority(PRIORITY_MAX)).unwrap();
    topic.publish_message(Message::new("x").priority(10).priority(0)).unwrap(); // the last one set counts
}

#[test]
fn publishing_a_reserved_header_is_an_invalid_message() {
    let (_dir, _engine, topic) = temp_topic("orders");
    for name in ["tollgate.priority", "tollgate.deliver-at", "tollgate.dlq.offset", "tollgate.anything"] {
        assert!(matches!(
            topic.publish_message(Message::new("x").header(name, vec![1u8])),
            Err(PublishError::InvalidMessage { .. })
        ));
    }
    assert_eq!(topic.info().next, Offset::new(0));
}

#[test]
fn publishing_a_delay_beyond_the_limit_is_an_invalid_message() {
    let (_dir, _engine, topic) = temp_topic("orders");
    let far = DELAY_MAX + Duration::from_secs(3600);
    for message in [
        Message::new("x").deliver_after(far),
        Message::new("x").deliver_after(Duration::MAX),
        Message::new("x").deliver_at(SystemTime::now() + far),
        Message::new("x").deliver_at(UNIX_EPOCH + Duration::from_secs(1 << 62)),
    ] {
        assert!(matches!(topic.publish_message(message), Err(PublishError::InvalidMessage { .. })));
    }
    assert_eq!(topic.info().next, Offset::new(0));
    topic.publish_message(Message::new("x").deliver_after(DELAY_MAX - Duration::from_secs(60))).unwrap();
}

// ------------------------------------------------- delays and priorities

#[test]
fn a_delayed_message_is_not_handed_out_before_its_time() {
    let (_dir, _engine, topic) = temp_topic("orders");
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

#[test]
fn a_delivery_time_in_the_past_is_delivered_at_once() {
    let (_dir, _engine, topic) = temp_topic("orders");
    topic.publish_message(Message::new("old").deliver_at(SystemTime::now() - Duration::from_secs(60))).unwrap();
    topic.publish_message(Message::new("epoch").deliver_at(UNIX_EPOCH - Duration::from_secs(1))).unwrap();
    let w = topic.worker("g").unwrap();
    let first = take(&w);
    assert_eq!(w.metrics().delayed, 0);
    assert_eq!(w.metrics().ready, 1);
    assert_eq!((payload(&first), payload(&take(&w))), ("old".into(), "epoch".into()));
}

#[test]
fn subscriptions_see_delayed_messages_at_once() {
    let (_dir, _engine, topic) = temp_topic("orders");
    topic.publish_message(Message::new("later").deliver_after(Duration::from_secs(3600))).unwrap();
    let mut sub = topic.subscribe("audit").unwrap();
    assert_eq!(sub.next().unwrap().unwrap().payload().as_ref(), b"later");
}

#[test]
fn priorities_go_highest_first_then_oldest_first() {
    let (_dir, _engine, topic) = temp_topic("orders");
    let published = [(0, "a"), (5, "b"), (9, "c"), (1, "d"), (9, "e"), (5, "f"), (0, "g")];
    for (p, label) in published {
        topic.publish_message(Message::new(label).priority(p)).unwrap();
    }
    let w = topic.worker("g").unwrap();
    let got: Vec<String> = drain(&w).iter().map(payload).collect();
    assert_eq!(got, ["c", "e", "b", "f", "d", "a", "g"]);
}

#[test]
fn a_redelivered_message_keeps_its_priority() {
    let (_dir, _engine, topic) = temp_topic("orders");
    topic.publish_message(Message::new("low").priority(1)).unwrap();
    topic.publish_message(Message::new("high").priority(8)).unwrap();
    let w = topic.worker("g").unwrap();
    let d = take(&w);
    assert_eq!(payload(&d), "high");
    d.nack(Duration::ZERO, "again").unwrap();
    let d = take(&w);
    assert_eq!((payload(&d), d.attempt()), ("high".into(), 2));
}

#[test]
fn a_delayed_high_priority_message_goes_first_once_due() {
    let (_dir, _engine, topic) = temp_topic("orders");
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

// ------------------------------------------------------------------ filters

fn publish_keys(topic: &Topic) {
    for key in ["order.1", "order.1.paid", "order", "payment.1", "orders.1"] {
        topic.publish_message(Message::new(key).key(key)).unwrap();
    }
    topic.publish(b"no key").unwrap();
}

#[test]
fn a_subscription_filter_star_matches_exactly_one_word() {
    let (_dir, _engine, topic) = temp_topic("events");
    publish_keys(&topic);
    let mut sub = topic.subscribe("audit").unwrap();
    sub.set_filter(Some(KeyPattern::new("order.*").unwrap()));
    let mut got = Vec::new();
    while let Some(rec) = sub.next().unwrap() {
        got.push(rec.key().unwrap().to_owned());
    }
    assert_eq!(got, ["order.1"]);
    assert_eq!(sub.position(), Offset::new(6), "skipped records move the position");
}

#[test]
fn a_subscription_filter_hash_matches_any_number_of_words_and_none_resets() {
    let (_dir, _engine, topic) = temp_topic("events");
    publish_keys(&topic);
    let mut sub = topic.subscribe("audit").unwrap();
    sub.set_filter(Some(KeyPattern::new("order.#").unwrap()));
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(sub.next().unwrap().unwrap().key().unwrap().to_owned());
    }
    assert_eq!(got, ["order.1", "order.1.paid", "order"]);
    sub.set_filter(None);
    assert_eq!(sub.next().unwrap().unwrap().key(), Some("payment.1"));
    sub.set_filter(Some(KeyPattern::new("#").unwrap()));
    assert_eq!(sub.next().unwrap().unwrap().key(), Some("orders.1"));
    assert_eq!(sub.next().unwrap().unwrap().key(), None, "`#` matches a record without a key");
}

#[test]
fn a_worker_filter_star_matches_exactly_one_word() {
    let (_dir, _engine, topic) = temp_topic("events");
    publish_keys(&topic);
    let config = QueueConfig { filter: Some(KeyPattern::new("order.*").unwrap()), ..QueueConfig::default() };
    let w = topic.worker_with("g", config).unwrap();
    let got: Vec<String> = drain(&w).iter().map(payload).collect();
    assert_eq!(got, ["order.1"]);
}

#[test]
fn a_worker_filter_hash_matches_any_words_and_skipped_messages_count_as_settled() {
    let (_dir, _engine, topic) = temp_topic("events");
    publish_keys(&topic);
    let config: QueueConfig = "filter=order.#".parse().unwrap();
    let w = topic.worker_with("g", config.clone()).unwrap();
    let all = drain(&w);
    let got: Vec<String> = all.iter().map(payload).collect();
    assert_eq!(got, ["order.1", "order.1.paid", "order"]);
    for d in all {
        d.ack().unwrap();
    }
    assert_eq!(w.metrics().lag, 0, "skipped messages are settled");
    drop(w);
    // A later match still comes through, and nothing skipped does.
    topic.publish_message(Message::new("order.2").key("order.2")).unwrap();
    topic.publish_message(Message::new("cart.2").key("cart.2")).unwrap();
    let w = topic.worker_with("g", config).unwrap();
    let got: Vec<String> = drain(&w).iter().map(payload).collect();
    assert_eq!(got, ["order.2"]);
}

// ------------------------------------------------------ window and metrics

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

// ------------------------------------------------------------ transactions

#[test]
fn a_transaction_holds_its_locks_across_an_atomic_publish_and_hands_them_back() {
    let (_dir, _engine, topic) = temp_topic("orders");
    let locks = LockManager::new();
    let tx = topic.transaction(&locks, ["sku:2", "sku:1"], WAIT).unwrap();
    assert_eq!(tx.locks().len(), 2);
    let busy = |key: &'static str| thread::scope(|s| s.spawn(|| locks.try_lock(key).is_err()).join().unwrap());
    assert!(busy("sku:1") && busy("sku:2"), "the keys are locked while the transaction is open");
    let (offsets, held) =
        tx.commit([Message::new("reserve").key("stock.sku:1"), Message::new("order 1001").key("order.1001")]).unwrap();
    assert_eq!((offsets.start.get(), offsets.end.get()), (0, 2));
    assert_eq!(held.len(), 2);
    assert!(busy("sku:1"), "still held after the commit");
    drop(held);
    assert!(!busy("sku:1") && !busy("sku:2"));
    let keys: Vec<_> = records(&topic).iter().map(|r| r.key().unwrap().to_owned()).collect();
    assert_eq!(keys, ["stock.sku:1", "order.1001"]);
}

#[test]
fn a_transaction_waits_for_its_locks_and_times_out() {
    let (_dir, _engine, topic) = temp_topic("orders");
    let locks = LockManager::new();
    let _held = topic.transaction(&locks, ["sku:1"], WAIT).unwrap();
    let other = thread::scope(|s| {
        s.spawn(|| topic.transaction(&locks, ["sku:1"], Duration::from_millis(20)).map(|_| ())).join().unwrap()
    });
    assert!(matches!(other, Err(LockError::Timeout { .. })));
}

#[test]
fn a_refused_batch_publishes_nothing_and_releases_the_locks() {
    let (_dir, _engine, topic) = temp_topic("orders");
    let locks = LockManager::new();
    let tx = topic.transaction(&locks, ["sku:1"], WAIT).unwrap();
    let Err(err) = tx.commit([Message::new("reserve"), Message::new("order").priority(10)]) else {
        panic!("a batch with a bad priority was published");
    };
    assert!(matches!(err, PublishError::InvalidMessage { .. }));
    assert_eq!(topic.info().next, Offset::new(0));
    assert!(thread::scope(|s| s.spawn(|| locks.try_lock("sku:1").is_ok()).join().unwrap()));
    let tx = topic.transaction(&locks, ["sku:1"], WAIT).unwrap();
    drop(tx); // dropping publishes nothing either
    assert_eq!(topic.info().next, Offset::new(0));
}

#[test]
fn a_committed_batch_is_all_or_nothing_after_a_power_cut() {
    for seed in 0..6 {
        let disk = sim_disk();
        let locks = LockManager::new();
        {
            let engine = open_sim(&disk);
            let topic = engine.topic("orders").unwrap(); // Buffered: the batch is not synced
            topic.publish(b"before").unwrap();
            topic.sync().unwrap();
            let tx = topic.transaction(&locks, ["sku:1"], WAIT).unwrap();
            let batch: Vec<Message> = (0..50).map(|i| Message::new(vec![b'x'; 200]).key(format!("k{i}"))).collect();
            let (_offsets, _held) = tx.commit(batch).unwrap();
            let cut = disk.power_cut(seed);
            drop(engine);
            let engine = open_sim(&cut);
            let next = engine.topic("orders").unwrap().info().next.get();
            assert!(next == 1 || next == 51, "seed {seed}: {next} records survived");
        }
    }
}

// ------------------------------------------------- restarts and crashes

#[test]
fn acked_messages_are_not_delivered_again_after_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path()).unwrap();
        let topic = engine.topic("orders").unwrap();
        publish_n(&topic, 10);
        let w = topic.worker("g").unwrap();
        for d in drain(&w) {
            if d.offset().get() % 2 == 1 {
                d.ack().unwrap(); // out of order: settled ranges above the low-water mark
            }
        }
    }
    let engine = Engine::open(dir.path()).unwrap();
    let w = engine.topic("orders").unwrap().worker("g").unwrap();
    assert_eq!(w.metrics().lag, 5, "the settled offsets above the low-water mark were kept");
    let got: Vec<u64> = drain(&w).iter().map(|d| d.offset().get()).collect();
    assert_eq!(got, [0, 2, 4, 6, 8]);
}

#[test]
fn unacked_messages_come_back_after_a_clean_restart_with_their_attempts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path()).unwrap();
        let topic = engine.topic("orders").unwrap();
        publish_n(&topic, 4);
        let w = topic.worker_with("g", config(30_000, 5)).unwrap();
        take(&w).nack(Duration::ZERO, "x").unwrap(); // m0 attempt 1
        let held = drain(&w); // m0 (attempt 2), m1, m2, m3 in flight at the close
        assert_eq!(held.len(), 4);
    }
    let engine = Engine::open(dir.path()).unwrap();
    let w = engine.topic("orders").unwrap().worker_with("g", config(30_000, 5)).unwrap();
    let got: Vec<(u64, u32)> = drain(&w).iter().map(|d| (d.offset().get(), d.attempt())).collect();
    assert_eq!(got, [(0, 3), (1, 2), (2, 2), (3, 2)]);
}

#[test]
fn a_kill_keeps_acks_and_the_attempts_of_messages_in_flight() {
    let disk = sim_disk();
    let survivor = {
        let engine = open_sim(&disk);
        let topic = engine.topic("orders").unwrap();
        publish_n(&topic, 20);
        let w = topic.worker("g").unwrap();
        let mut held = Vec::new();
        for d in drain(&w) {
            if d.offset().get() % 3 == 0 {
                d.ack().unwrap();
            } else {
                held.push(d);
            }
        }
        disk.kill_process() // with the deliveries still held
    };
    let engine = open_sim(&survivor);
    let w = engine.topic("orders").unwrap().worker("g").unwrap();
    let got: Vec<(u64, u32)> = drain(&w).iter().map(|d| (d.offset().get(), d.attempt())).collect();
    let expected: Vec<(u64, u32)> = (0..20).filter(|o| o % 3 != 0).map(|o| (o, 2)).collect();
    assert_eq!(got, expected);
}

#[test]
fn a_power_cut_keeps_every_ack_of_a_sync_topic() {
    for seed in 0..4 {
        let disk = sim_disk();
        let cut = {
            let engine = open_sim(&disk);
            let topic = engine.create_topic("orders", sync_topic()).unwrap();
            publish_n(&topic, 20);
            let w = topic.worker("g").unwrap();
            let all = drain(&w);
            let mut held = Vec::new();
            for d in all {
                if d.offset().get() % 2 == 0 {
                    d.ack().unwrap(); // durable when it returns
                } else {
                    held.push(d);
                }
            }
            disk.power_cut(seed)
        };
        let engine = open_sim(&cut);
        let w = engine.topic("orders").unwrap().worker("g").unwrap();
        let got: Vec<(u64, u32)> = drain(&w).iter().map(|d| (d.offset().get(), d.attempt())).collect();
        let expected: Vec<(u64, u32)> = (0..20).filter(|o| o % 2 == 1).map(|o| (o, 2)).collect();
        assert_eq!(got, expected, "seed {seed}");
    }
}

#[test]
fn a_poison_message_whose_worker_is_killed_every_time_is_dead_lettered_after_max_attempts() {
    let mut disk = sim_disk();
    {
        let engine = open_sim(&disk);
        let topic = engine.topic("orders").unwrap();
        topic.publish(b"poison").unwrap();
        topic.publish(b"good").unwrap();
    }
    let config = config(30_000, 3);
    let mut poison_attempts = Vec::new();
    let mut good = 0;
    for _round in 0..6 {
        let engine = open_sim(&disk);
        let w = engine.topic("orders").unwrap().worker_with("g", config.clone()).unwrap();
        let mut killed = None;
        while let Some(d) = w.receive(Duration::from_millis(50)).unwrap() {
            if payload(&d) == "poison" {
                poison_attempts.push(d.attempt());
                killed = Some(disk.kill_process()); // the worker dies while processing it
                break;
            }
            d.ack().unwrap();
            good += 1;
        }
        drop(w);
        drop(engine);
        match killed {
            Some(next) => disk = next,
            None => break,
        }
    }
    assert_eq!(poison_attempts, [1, 2, 3]);
    assert_eq!(good, 1);
    let engine = open_sim(&disk);
    let dead = dead_letters(&engine, "orders.dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, 0);
    assert_eq!(header(&dead[0].1, "tollgate.dlq.attempts"), "3");
    assert_eq!(header(&dead[0].1, "tollgate.dlq.reason"), "its last attempt was cut short by a restart");
    let w = engine.topic("orders").unwrap().worker_with("g", config).unwrap();
    nothing(&w, BRIEF);
}

#[test]
fn a_delayed_message_keeps_its_time_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let at;
    {
        let engine = Engine::open(dir.path()).unwrap();
        let topic = engine.topic("orders").unwrap();
        let offset = topic.publish_message(Message::new("later").deliver_after(Duration::from_millis(200))).unwrap();
        at = topic.read(offset).unwrap().deliver_at_us().unwrap();
        let w = topic.worker("g").unwrap();
        if w.receive(Duration::ZERO).unwrap().is_some() {
            assert!(now_us() >= at, "handed out before its time"); // a slow machine: already due
            return;
        }
    }
    let engine = Engine::open(dir.path()).unwrap();
    let w = engine.topic("orders").unwrap().worker("g").unwrap();
    let d = take(&w);
    assert!(now_us() >= at, "handed out before its time after a restart");
    assert_eq!(d.attempt(), 1);
}

#[test]
fn a_nack_retry_time_survives_a_kill() {
    let disk = sim_disk();
    let before_nack;
    let survivor = {
        let engine = open_sim(&disk);
        let topic = engine.topic("orders").unwrap();
        topic.publish(b"x").unwrap();
        let w = topic.worker("g").unwrap();
        let d = take(&w);
        before_nack = now_us();
        d.nack(Duration::from_millis(250), "later").unwrap();
        disk.kill_process()
    };
    let engine = open_sim(&survivor);
    let w = engine.topic("orders").unwrap().worker("g").unwrap();
    let d = take(&w);
    assert!(now_us() >= before_nack + 250_000, "the retry delay was forgotten");
    assert_eq!(d.attempt(), 2);
}

/// Receives and acks until `count` more journal entries are written (two per message).
fn ack_entries(w: &Worker, count: u64) -> Vec<u64> {
    assert_eq!(count % 2, 0);
    (0..count / 2)
        .map(|_| {
            let d = take(w);
            let o = d.offset().get();
            d.ack().unwrap();
            o
        })
        .collect()
}

#[test]
fn journal_compaction_keeps_attempts_retry_times_and_settled_offsets() {
    let disk = sim_disk();
    let messages = JOURNAL_ENTRIES / 2 + 100;
    let survivor = {
        let engine = open_sim(&disk);
        let topic = engine.topic("orders").unwrap();
        for chunk in 0..messages.div_ceil(1000) {
            let n = (messages - chunk * 1000).min(1000);
            topic.publish_batch((0..n).map(|i| Message::new(format!("m{i}")))).unwrap();
        }
        let w = topic.worker_with("g", config(30_000, 5)).unwrap();
        let held = [take(&w), take(&w)]; // offsets 0, 1: attempt 1, in flight across the compaction
        let d = take(&w); // offset 2: delayed across the compaction
        d.nack(Duration::from_secs(3600), "later").unwrap();
        // 4 entries so far (3 delivered, 1 nacked); fill the journal and go a little past it.
        ack_entries(&w, JOURNAL_ENTRIES - 4 + 11);
        let m = w.metrics();
        assert_eq!((m.in_flight, m.delayed), (2, 1));
        drop(held);
        disk.kill_process()
    };
    let engine = open_sim(&survivor);
    let w = engine.topic("orders").unwrap().worker_with("g", config(30_000, 5)).unwrap();
    let first = drain(&w);
    let got: Vec<(u64, u32)> = first.iter().map(|d| (d.offset().get(), d.attempt())).collect();
    let acked_before = (JOURNAL_ENTRIES - 4 + 11) / 2;
    let mut expected = vec![(0, 2), (1, 2)];
    expected.extend((3 + acked_before..messages).map(|o| (o, 1)));
    assert_eq!(got, expected, "in flight come back as attempt 2, acked never");
    assert_eq!(w.metrics().delayed, 1, "the retry time was lost in the compaction");
}

/// Writes exactly `count` journal entries cheaply (no sync): a delivered entry
/// per receive, the delivery dropped; once a message has had 900 attempts it is
/// acked (a settled entry, synced on a `Sync` topic). Returns the acked offsets.
fn fill_journal(w: &Worker, mut count: u64) -> BTreeSet<u64> {
    let mut acked = BTreeSet::new();
    while count > 0 {
        let d = take(w);
        count -= 1;
        if d.attempt() >= 900 && count > 0 {
            acked.insert(d.offset().get());
            d.ack().unwrap();
            count -= 1;
        }
    }
    acked
}

#[test]
fn a_disk_dying_at_any_sync_of_a_journal_compaction_loses_no_ack() {
    // Compaction runs inside the ack that finds the journal full: state file
    // (write, directory sync), new journal (sync, directory sync), then the
    // ack's own sync. The disk dies at each of those syncs, then the power is cut.
    for die_after in 0..6u64 {
        let disk = sim_disk();
        let messages = 200;
        let (acked, unsure) = {
            let engine = open_sim(&disk);
            let topic = engine.create_topic("orders", sync_topic()).unwrap();
            publish_n(&topic, messages);
            let w = topic.worker_with("g", QueueConfig { max_attempts: 1000, ..QueueConfig::default() }).unwrap();
            let held = take(&w); // offset 0, attempt 1 in every state written
            let mut acked = fill_journal(&w, JOURNAL_ENTRIES - 2); // one slot left
            let d = take(&w); // its delivered entry fills the journal
            let last = d.offset().get();
            let syncs = disk.syncs();
            disk.fail_after_syncs(die_after);
            let unsure = match d.ack() {
                Ok(()) => {
                    acked.insert(last);
                    None
                }
                Err(_) => Some(last),
            };
            if unsure.is_none() {
                assert!(disk.syncs() - syncs >= 3, "the ack did not compact the journal");
            }
            drop(held);
            (acked, unsure)
        };
        let cut = disk.power_cut(die_after);
        let engine = open_sim(&cut);
        let w = engine.topic("orders").unwrap().worker_with("g", config(30_000, 1000)).unwrap();
        let got: BTreeMap<u64, u32> = drain(&w).iter().map(|d| (d.offset().get(), d.attempt())).collect();
        for o in &acked {
            assert!(!got.contains_key(o), "die_after {die_after}: acked offset {o} came back");
        }
        assert_eq!(got.get(&0), Some(&2), "die_after {die_after}: the held message");
        for o in (0..messages).filter(|o| !acked.contains(o) && Some(*o) != unsure) {
            assert!(got.contains_key(&o), "die_after {die_after}: unacked offset {o} was lost");
        }
    }
}

#[test]
fn a_full_disk_fails_a_settle_cleanly_and_the_group_carries_on_once_space_is_freed() {
    let disk = sim_disk();
    let engine = open_sim(&disk);
    let topic = engine.topic("orders").unwrap();
    let messages = 1100; // more than the first 64 KiB of journal holds (2,047 entries)
    publish_n(&topic, messages);
    let w = topic.worker_with("g", config(500, 5)).unwrap();
    disk.set_capacity(Some(0)); // nothing more can be allocated
    let mut acked = BTreeSet::new();
    let failed = loop {
        let d = match w.receive(WAIT) {
            Ok(d) => d.expect("a message"),
            Err(e) => break (None, e),
        };
        let o = d.offset().get();
        match d.ack() {
            Ok(()) => assert!(acked.insert(o)),
            Err(e) => break (Some(o), e),
        }
    };
    match &failed.1 {
        QueueError::Io(e) => assert_eq!(e.kind(), std::io::ErrorKind::StorageFull),
        other => panic!("expected a StorageFull I/O error, got {other:?}"),
    }
    disk.set_capacity(None);
    let mut attempts = BTreeMap::new();
    while (acked.len() as u64) < messages {
        let d = take(&w);
        attempts.insert(d.offset().get(), d.attempt());
        let o = d.offset().get();
        d.ack().unwrap();
        assert!(acked.insert(o), "offset {o} acked twice");
    }
    if let Some(o) = failed.0 {
        assert_eq!(attempts.get(&o), Some(&2), "the message whose ack failed came back after its deadline");
    }
    let survivor = disk.kill_process();
    drop(w);
    drop(topic);
    drop(engine);
    let engine = open_sim(&survivor);
    let w = engine.topic("orders").unwrap().worker_with("g", config(500, 5)).unwrap();
    nothing(&w, BRIEF);
}

// ----------------------------------------------------------------- threads

#[test]
fn concurrent_workers_without_failures_ack_every_message_exactly_once() {
    const MESSAGES: u64 = 3000;
    const WORKERS: usize = 6;
    let (_dir, _engine, topic) = temp_topic("orders");
    let worker = topic.worker("g").unwrap();
    let acks: Arc<Vec<AtomicU32>> = Arc::new((0..MESSAGES).map(|_| AtomicU32::new(0)).collect());
    let total = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for _ in 0..WORKERS {
        let (w, acks, total) = (worker.clone(), acks.clone(), total.clone());
        threads.push(thread::spawn(move || {
            let mut attempts_above_one = 0;
            while total.load(Ordering::Acquire) < MESSAGES {
                if let Some(d) = w.receive(Duration::from_millis(20)).unwrap() {
                    attempts_above_one += u32::from(d.attempt() > 1);
                    let o = d.offset().get() as usize;
                    d.ack().unwrap();
                    acks[o].fetch_add(1, Ordering::Relaxed);
                    total.fetch_add(1, Ordering::AcqRel);
                }
            }
            attempts_above_one
        }));
    }
    let publisher = {
        let topic = topic.clone();
        thread::spawn(move || {
            for i in 0..MESSAGES / 10 {
                topic.publish_batch((0..10).map(|j| Message::new(format!("m{}", i * 10 + j)))).unwrap();
            }
        })
    };
    publisher.join().unwrap();
    let redelivered: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let not_once: Vec<(usize, u32)> =
        acks.iter().enumerate().map(|(o, n)| (o, n.load(Ordering::Relaxed))).filter(|&(_, n)| n != 1).collect();
    assert_eq!(not_once, [], "offsets not acked exactly once");
    assert_eq!(redelivered, 0);
    let m = worker.metrics();
    assert_eq!((m.acked, m.lag, m.redelivered, m.in_flight), (MESSAGES, 0, 0, 0));
}

#[test]
fn concurrent_workers_with_injected_failures_settle_every_message_and_never_ack_twice() {
    const MESSAGES: u64 = 600;
    const WORKERS: u64 = 6;
    let (_dir, engine, topic) = temp_topic("orders");
    publish_n(&topic, MESSAGES);
    let worker = topic.worker_with("g", config(25, 4)).unwrap();
    let acks: Arc<Vec<AtomicU32>> = Arc::new((0..MESSAGES).map(|_| AtomicU32::new(0)).collect());
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..WORKERS {
        let (w, acks, violations, done) = (worker.clone(), acks.clone(), violations.clone(), done.clone());
        threads.push(thread::spawn(move || {
            let mut rng = Rng::new(t + 1);
            let mut stats = HashMap::<&str, u64>::new();
            let violation = |what: String| violations.lock().unwrap().push(what);
            // Runs one settle of `d` and checks its result against the clock: started
            // after the deadline it must fail with Expired; Expired before the
            // deadline is wrong too. Returns whether it succeeded.
            let settle =
                |d: &mut Option<Delivery>,
                 what: &str,
                 op: &mut dyn FnMut(&mut Option<Delivery>) -> Result<(), QueueError>| {
                    let (o, deadline) = {
                        let d = d.as_ref().unwrap();
                        (d.offset().get(), d.deadline())
                    };
                    let started = Instant::now();
                    let result = op(d);
                    let ended = Instant::now();
                    match result {
                        Ok(()) if started > deadline => {
                            violation(format!("offset {o}: {what} succeeded after its deadline"))
                        }
                        Ok(()) => return true,
                        Err(QueueError::Expired { offset }) if offset == o && ended > deadline => {}
                        Err(e) => violation(format!("offset {o}: {what} failed: {e}")),
                    }
                    false
                };
            let ack = |d: Delivery, stats: &mut HashMap<&str, u64>| {
                let o = d.offset().get();
                let mut d = Some(d);
                if settle(&mut d, "ack", &mut |d| d.take().unwrap().ack()) {
                    acks[o as usize].fetch_add(1, Ordering::Relaxed);
                    *stats.entry("acked").or_default() += 1;
                } else {
                    *stats.entry("expired").or_default() += 1;
                }
            };
            loop {
                let Some(d) = w.receive(Duration::from_millis(10)).unwrap() else {
                    if done.load(Ordering::Acquire) {
                        return stats;
                    }
                    continue;
                };
                match rng.below(100) {
                    0..50 => ack(d, &mut stats),
                    50..62 => {
                        let retry = Duration::from_millis(rng.below(3));
                        settle(&mut Some(d), "nack", &mut |d| d.take().unwrap().nack(retry, "random failure"));
                    }
                    62..70 => drop(d),
                    70..80 => {
                        // A stall past the visibility timeout: the ack must fail.
                        sleep_past(d.deadline());
                        ack(d, &mut stats);
                    }
                    80..84 => {
                        settle(&mut Some(d), "reject", &mut |d| d.take().unwrap().reject("random reject"));
                    }
                    _ => {
                        let mut d = Some(d);
                        if settle(&mut d, "extend", &mut |d| d.as_mut().unwrap().extend(Duration::from_secs(5))) {
                            ack(d.take().unwrap(), &mut stats);
                        }
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    while worker.metrics().lag > 0 && started.elapsed() < Duration::from_secs(60) {
        thread::sleep(Duration::from_millis(5));
    }
    done.store(true, Ordering::Release);
    let mut stats = HashMap::<&str, u64>::new();
    for t in threads {
        for (k, v) in t.join().unwrap() {
            *stats.entry(k).or_default() += v;
        }
    }
    let mut dead = BTreeMap::<u64, u32>::new();
    for (o, _) in dead_letters(&engine, "orders.dlq") {
        *dead.entry(o).or_default() += 1;
    }
    let mut violations = violations.lock().unwrap().clone();
    for o in 0..MESSAGES {
        let (a, d) = (acks[o as usize].load(Ordering::Relaxed), dead.get(&o).copied().unwrap_or(0));
        match (a, d) {
            (1, 0) | (0, 1) => {}
            (0, 0) => violations.push(format!("offset {o} was neither acked nor dead-lettered")),
            _ => violations.push(format!("offset {o}: acked {a} times, dead-lettered {d} times")),
        }
    }
    assert_eq!(violations, Vec::<String>::new());
    let m = worker.metrics();
    assert_eq!(m.lag, 0);
    assert_eq!(m.acked, stats["acked"]);
    assert_eq!(m.acked + m.dead_lettered, MESSAGES);
    assert!(stats.get("expired").copied().unwrap_or(0) > 0, "no timeout was injected: {stats:?}");
    assert!(m.dead_lettered > 0 && m.redelivered > 0 && m.timed_out > 0, "{m:?}");
}

// --------------------------------------------------------- other errors

#[test]
fn a_worker_of_a_deleted_topic_fails_with_deleted() {
    let (_dir, engine, topic) = one_message();
    let w = topic.worker("g").unwrap();
    let d = take(&w);
    engine.delete_topic("orders").unwrap();
    assert_eq!(w.receive(BRIEF).unwrap_err(), QueueError::Deleted);
    assert_eq!(d.ack(), Err(QueueError::Deleted));
    assert_eq!(topic.worker("h").unwrap_err(), TopicError::Deleted);
}

#[test]
fn after_the_engine_closes_receive_returns_none_and_settling_fails_with_closed() {
    let (dir, engine, topic) = temp_topic("orders");
    publish_n(&topic, 2);
    let w = topic.worker("g").unwrap();
    let d = take(&w);
    drop(engine);
    assert!(w.receive(BRIEF).unwrap().is_none());
    assert_eq!(d.ack(), Err(QueueError::Closed));
    drop(w);
    let engine = Engine::open(dir.path()).unwrap();
    let w = engine.topic("orders").unwrap().worker("g").unwrap();
    let got: Vec<(u64, u32)> = drain(&w).iter().map(|d| (d.offset().get(), d.attempt())).collect();
    assert_eq!(got, [(0, 2), (1, 1)]);
}

// --------------------------------------------------------------------- bugs

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
    let tx = topic.transaction(&locks, ["sku:1"], WAIT).unwrap();
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
