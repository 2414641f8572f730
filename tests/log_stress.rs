//! Multi-threaded stress of one topic: publishers (single and batch) racing
//! segment rolls, subscribers that spin and park, and a ping-pong pair that
//! would hang on a lost wake-up. Every anomaly is counted as a violation (gap,
//! duplicate, reorder, wrong content, split batch, wake-up never delivered);
//! the count must be 0. Runs a few seconds; `TOLLGATE_STRESS_SECS` for longer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tollgate::{Engine, Message, Offset, TopicConfig};

const PUBLISHERS: u64 = 3;
const SUBSCRIBERS: usize = 2;

fn stress_duration() -> Duration {
    let secs = std::env::var("TOLLGATE_STRESS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    Duration::from_secs(secs)
}

/// Payload naming its publisher, its sequence number in that publisher, and
/// its position and size of its batch.
fn payload(publisher: u64, seq: u64, index: u64, batch: u64) -> String {
    format!("{publisher}:{seq}:{index}:{batch}")
}

fn parse(bytes: &[u8]) -> Option<(u64, u64, u64, u64)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut parts = text.split(':').map(|p| p.parse::<u64>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??, parts.next()??))
}

#[test]
fn publishers_and_subscribers_see_every_record_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let config = TopicConfig { segment_bytes: 1 << 20, max_message_bytes: 1024, ..TopicConfig::default() };
    let topic = engine.create_topic("stress", config).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + stress_duration();

    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let topic = topic.clone();
            thread::spawn(move || {
                let mut seq = 0u64;
                let mut rng = p * 7 + 1;
                while Instant::now() < end {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let batch = (rng >> 60) % 4 + 1;
                    if batch == 1 {
                        topic.publish(payload(p, seq, 0, 1)).unwrap();
                    } else {
                        let msgs: Vec<Message> =
                            (0..batch).map(|i| Message::new(payload(p, seq + i, i, batch))).collect();
                        topic.publish_batch(msgs).unwrap();
                    }
                    seq += batch;
                }
                seq
            })
        })
        .collect();

    let subscribers: Vec<_> = (0..SUBSCRIBERS)
        .map(|s| {
            let topic = topic.clone();
            let stop = stop.clone();
            let violations = violations.clone();
            thread::spawn(move || {
                let mut sub = topic.subscribe(&format!("group-{s}")).unwrap();
                let mut next_seq = [0u64; PUBLISHERS as usize];
                let mut expected = 0u64;
                let mut batch_left = 0u64;
                loop {
                    // Even-numbered subscribers park, odd ones poll.
                    let rec = if s % 2 == 0 {
                        sub.next_timeout(Duration::from_millis(20)).unwrap()
                    } else {
                        sub.next().unwrap()
                    };
                    let Some(rec) = rec else {
                        if stop.load(Ordering::Acquire) && sub.position() == topic.info().next {
                            break;
                        }
                        thread::yield_now();
                        continue;
                    };
                    let mut bad = u64::from(rec.offset() != Offset::new(expected));
                    match parse(rec.payload()) {
                        Some((p, seq, index, batch)) if p < PUBLISHERS => {
                            bad += u64::from(seq != next_seq[p as usize]);
                            next_seq[p as usize] = seq + 1;
                            // A batch's records are consecutive in the log.
                            if batch_left > 0 {
                                bad += u64::from(index != batch - batch_left);
                                batch_left -= 1;
                            } else {
                                bad += u64::from(index != 0);
                                batch_left = batch - 1;
                            }
                        }
                        _ => bad += 1,
                    }
                    violations.fetch_add(bad, Ordering::Relaxed);
                    expected = rec.offset().get() + 1;
                    if expected.is_multiple_of(100_000) {
                        sub.commit().unwrap();
                    }
                }
                (expected, next_seq)
            })
        })
        .collect();

    // The end of the log, as readers see it, never moves backwards.
    let watcher = {
        let (topic, stop, violations) = (topic.clone(), stop.clone(), violations.clone());
        thread::spawn(move || {
            let mut last = 0;
            while !stop.load(Ordering::Acquire) {
                let next = topic.info().next.get();
                violations.fetch_add(u64::from(next < last), Ordering::Relaxed);
                last = next;
            }
        })
    };

    // Ping-pong over two more topics: each side parks in `next_timeout` until
    // the other publishes. A lost wake-up shows up as a 10 s timeout.
    let ping = engine.topic("ping").unwrap();
    let pong = engine.topic("pong").unwrap();
    let lost_wakeups = Arc::new(AtomicU64::new(0));
    let rounds = Arc::new(AtomicU64::new(0));
    let ponger = {
        let (ping, pong, lost, stop) = (ping.clone(), pong.clone(), lost_wakeups.clone(), stop.clone());
        thread::spawn(move || {
            let mut sub = ping.subscribe("ponger").unwrap();
            while !stop.load(Ordering::Acquire) {
                match sub.next_timeout(Duration::from_secs(10)).unwrap() {
                    Some(rec) if rec.payload().as_ref() == b"stop" => break,
                    Some(_) => {
                        pong.publish(b"pong").unwrap();
                    }
                    None => {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let mut pongs = pong.subscribe("pinger").unwrap();
    while Instant::now() < end {
        ping.publish(b"ping").unwrap();
        match pongs.next_timeout(Duration::from_secs(10)).unwrap() {
            Some(_) => rounds.fetch_add(1, Ordering::Relaxed),
            None => lost_wakeups.fetch_add(1, Ordering::Relaxed),
        };
    }
    ping.publish(b"stop").unwrap();

    let published: u64 = publishers.into_iter().map(|h| h.join().unwrap()).sum();
    stop.store(true, Ordering::Release);
    ponger.join().unwrap();
    watcher.join().unwrap();
    let total = topic.info().next.get();
    for handle in subscribers {
        let (read, seqs) = handle.join().unwrap();
        violations.fetch_add(u64::from(read != total), Ordering::Relaxed);
        violations.fetch_add(u64::from(seqs.iter().sum::<u64>() != published), Ordering::Relaxed);
    }
    let violations = violations.load(Ordering::Relaxed);
    let lost = lost_wakeups.load(Ordering::Relaxed);
    println!(
        "log stress: {published} records in {} segments, {} ping-pong rounds, {violations} violations, {lost} lost wake-ups",
        topic.info().segments,
        rounds.load(Ordering::Relaxed)
    );
    assert_eq!(published, total);
    assert_eq!(violations, 0);
    assert_eq!(lost, 0);
    assert_eq!(topic.verify().unwrap(), total);
}
