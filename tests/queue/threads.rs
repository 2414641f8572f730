//! Threads: 6 workers with no failures ack every message exactly once; 6
//! workers with injected failures (nacks, drops, timeouts, rejects, extends)
//! settle every message, never ack one twice, and an ack after the deadline
//! always fails with `Expired`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tollgate::{Delivery, Message, QueueError};

use super::fixture::temp_topic;
use super::rng::Rng;
use super::{config, dead_letters, publish_n, sleep_past};

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
