//! Restarts and crashes: a clean close and reopen of the same directory;
//! `SimDisk::kill_process` (kill -9) and `SimDisk::power_cut` (acks of a `Sync`
//! topic are durable on return); a poison message whose worker is killed on
//! every attempt ends in the dead-letter topic after `max_attempts`; delays and
//! retry times survive; the journal's compaction keeps everything, also when
//! the disk dies at each of its syncs; a full disk fails a settle cleanly and
//! the group carries on once space is freed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tollgate::{Engine, Message, QueueConfig, QueueError, Worker};

use super::fixture::{open_sim, sim_disk, sync_topic};
use super::{BRIEF, WAIT, config, dead_letters, drain, header, nothing, now_us, payload, publish_n, take};

/// Entries one journal holds: (4 MiB - 32-byte header - two 16-byte synced
/// marks) / 32 bytes (docs/FORMAT.md).
const JOURNAL_ENTRIES: u64 = ((4 << 20) - 64) / 32;

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
        ack_entries(&w, JOURNAL_ENTRIES - 4 + 12);
        let m = w.metrics();
        assert_eq!((m.in_flight, m.delayed), (2, 1));
        drop(held);
        disk.kill_process()
    };
    let engine = open_sim(&survivor);
    let w = engine.topic("orders").unwrap().worker_with("g", config(30_000, 5)).unwrap();
    let first = drain(&w);
    let got: Vec<(u64, u32)> = first.iter().map(|d| (d.offset().get(), d.attempt())).collect();
    let acked_before = (JOURNAL_ENTRIES - 4 + 12) / 2;
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
