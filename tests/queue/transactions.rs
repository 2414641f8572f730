//! Transactions: locks held across an atomic batch and handed back, a refused
//! batch publishes nothing and releases the locks, and a batch is all or
//! nothing after a power cut.

use std::thread;
use std::time::Duration;

use tollgate::{LockError, LockManager, Message, Offset, PublishError};

use super::fixture::{open_sim, sim_disk, temp_topic};
use super::{WAIT, records};

#[test]
fn a_transaction_holds_its_locks_across_an_atomic_publish_and_hands_them_back() {
    let (_dir, _engine, topic) = temp_topic("orders");
    let locks = LockManager::new();
    let tx = topic.transaction(&locks.session(), ["sku:2", "sku:1"], WAIT).unwrap();
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
    let _held = topic.transaction(&locks.session(), ["sku:1"], WAIT).unwrap();
    let other = thread::scope(|s| {
        s.spawn(|| topic.transaction(&locks.session(), ["sku:1"], Duration::from_millis(20)).map(|_| ()))
            .join()
            .unwrap()
    });
    assert!(matches!(other, Err(LockError::Timeout { .. })));
}

#[test]
fn a_refused_batch_publishes_nothing_and_releases_the_locks() {
    let (_dir, _engine, topic) = temp_topic("orders");
    let locks = LockManager::new();
    let tx = topic.transaction(&locks.session(), ["sku:1"], WAIT).unwrap();
    let Err(err) = tx.commit([Message::new("reserve"), Message::new("order").priority(10)]) else {
        panic!("a batch with a bad priority was published");
    };
    assert!(matches!(err, PublishError::InvalidMessage { .. }));
    assert_eq!(topic.info().next, Offset::new(0));
    assert!(thread::scope(|s| s.spawn(|| locks.try_lock("sku:1").is_ok()).join().unwrap()));
    let tx = topic.transaction(&locks.session(), ["sku:1"], WAIT).unwrap();
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
            let tx = topic.transaction(&locks.session(), ["sku:1"], WAIT).unwrap();
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
