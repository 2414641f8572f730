//! Work queues on the log, one test per rule, in a file per section, each
//! naming its rules at its top: workers and deliveries, dead letters,
//! configuration and bad input, delays and priorities, filters, the window
//! and metrics, transactions, restarts and crashes, threads, other errors,
//! and the bugs found in review (a regression test each). Here: the waits
//! and helpers the sections share; `tests/support/fixture.rs` has the setups.

mod bugs;
mod configuration;
mod dead_letters;
mod delays_and_priorities;
mod filters;
mod other_errors;
mod restarts;
mod threads;
mod transactions;
mod window_and_metrics;
mod workers;

use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "../support/engines.rs"]
mod engines;
#[allow(dead_code)] // each test binary uses some of it
#[path = "../support/fixture.rs"]
mod fixture;
#[allow(dead_code)] // only `below` is used here
#[path = "../support/rng.rs"]
mod rng;

use tollgate::{Delivery, Engine, Offset, QueueConfig, Record, Topic, Worker};

/// How long a test waits for something that should come (never reached when it works).
const WAIT: Duration = Duration::from_secs(10);
/// How long a test waits to see that nothing comes.
const BRIEF: Duration = Duration::from_millis(30);

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
