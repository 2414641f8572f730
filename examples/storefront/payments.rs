//! Payments, compensation, notifications: what happens to an order once a
//! buyer placed it.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tollgate::{Delivery, LockError, Topic, Worker};

use super::Config;
use super::messages::{
    COMPENSATION_GROUP, DECLINED, FAILED, GATEWAY_TIMEOUT, NOTIFICATION_GROUP, OrderMessage, RELEASED, SETTLED, now_us,
    sku_key,
};
use super::shop::{Rng, Shop, histogram};

/// How long a thread waits for work before it looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// What a payment attempt does, decided by the order and the attempt alone,
/// so that a rerun of the same directory sees the same outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charge {
    Paid,
    TransientFailure,
    Declined,
}

fn charge(config: &Config, order: u64, attempt: u32) -> Charge {
    let roll = Rng::new(config.seed ^ order.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(attempt)).unit();
    if roll < config.declines {
        Charge::Declined
    } else if roll < config.declines + config.transient_failures {
        Charge::TransientFailure
    } else {
        Charge::Paid
    }
}

/// One payment worker: charges orders until the sale has drained.
pub(super) fn payment_worker(shop: &Shop, worker: &Worker) {
    while !shop.drained.load(Ordering::Relaxed) {
        match worker.receive(POLL) {
            Ok(Some(delivery)) => charge_order(shop, delivery),
            Ok(None) => {}
            Err(error) => {
                shop.error("receiving a payment", error);
                thread::sleep(POLL);
            }
        }
    }
}

/// Charges the order of `delivery` and settles the delivery: ack once its
/// payment is recorded, nack on a transient failure, reject if declined.
///
/// An order is charged at most once, however often it is delivered (a
/// restart between publishing its payment and the ack delivers it again),
/// and never after it failed (a dead letter published just before a crash
/// is published again, but a run with a higher `--max-attempts` delivers
/// the order again instead): under the order's lock, an order already paid
/// or compensated is only acked.
fn charge_order(shop: &Shop, delivery: Delivery) {
    let Some(order) = OrderMessage::decode(delivery.payload()) else {
        return settle(shop, delivery.reject("malformed order"));
    };
    let guard = match shop.locks.lock(&format!("order:{}", order.order)) {
        Ok(guard) => guard,
        Err(error) => return shop.error("locking an order", error),
    };
    let done = |set: &Mutex<HashSet<u64>>| set.lock().unwrap().contains(&order.order);
    if done(&shop.settled) || done(&shop.released) {
        drop(guard);
        return settle(shop, delivery.ack());
    }
    match charge(shop.config, order.order, delivery.attempt()) {
        Charge::Paid => {
            if let Err(error) = shop.payments.publish_message(order.message(SETTLED)) {
                // The delivery is dropped: it goes back, to be tried again.
                return shop.error("publishing a payment", error);
            }
            shop.settled.lock().unwrap().insert(order.order);
            shop.counters.paid.fetch_add(1, Ordering::Relaxed);
            drop(guard);
            settle(shop, delivery.ack());
        }
        Charge::TransientFailure => {
            if delivery.attempt() >= shop.config.max_attempts {
                shop.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
            }
            settle(shop, delivery.nack(Duration::from_millis(shop.config.retry_ms), GATEWAY_TIMEOUT));
        }
        Charge::Declined => {
            shop.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
            settle(shop, delivery.reject(DECLINED));
        }
    }
}

fn settle(shop: &Shop, settled: Result<(), tollgate::QueueError>) {
    if let Err(error) = settled {
        shop.error("settling a payment", error);
    }
}

/// Compensation: releases the stock of every dead-lettered order (once) and
/// tells the customer (once), then commits its position.
pub(super) fn compensation(shop: &Shop, dead_letters: &Topic) {
    let mut subscription = match dead_letters.subscribe(COMPENSATION_GROUP) {
        Ok(subscription) => subscription,
        Err(error) => return shop.error("subscribing to the dead letters", error),
    };
    while !shop.drained.load(Ordering::Relaxed) {
        shop.compensation_position.store(subscription.position().get(), Ordering::Release);
        let record = match subscription.next_timeout(POLL) {
            Ok(Some(record)) => record,
            Ok(None) => continue,
            Err(error) => {
                shop.error("reading the dead letters", error);
                thread::sleep(POLL);
                continue;
            }
        };
        match OrderMessage::decode(record.payload()) {
            Some(order) if compensate(shop, &order) => {}
            Some(_) => {
                // Not done: read it again.
                let _ = subscription.seek(record.offset());
                thread::sleep(POLL);
                continue;
            }
            None => shop.error("a dead letter", "not an order"),
        }
        if let Err(error) = subscription.commit() {
            shop.error("committing compensation", error);
        }
    }
}

/// Releases `order`'s stock and publishes its `payment.failed`, each unless
/// already done. Returns whether both are done.
///
/// An order can be dead-lettered after it was paid: a crash between its
/// payment and the ack loses the ack, and if that was its last attempt the
/// group dead-letters it on restart. Such an order keeps its payment and its
/// stock; its dead letter is only counted.
fn compensate(shop: &Shop, order: &OrderMessage) -> bool {
    let _order_lock = match shop.locks.lock(&format!("order:{}", order.order)) {
        Ok(guard) => guard,
        Err(error) => {
            shop.error("locking a failed order", error);
            return false;
        }
    };
    if shop.settled.lock().unwrap().contains(&order.order) {
        return true;
    }
    if !shop.released.lock().unwrap().contains(&order.order) {
        let keys: Vec<String> = order.lines.iter().map(|line| sku_key(line.sku)).collect();
        let tx = match shop.orders.transaction(&shop.locks.session(), &keys, shop.lock_request()) {
            Ok(tx) => tx,
            Err(LockError::Timeout { .. }) => return false,
            Err(error) => {
                shop.error("locking a failed order's SKUs", error);
                return false;
            }
        };
        let held = match tx.commit([order.message(RELEASED)]) {
            Ok((_, held)) => held,
            Err(error) => {
                shop.error("releasing stock", error);
                return false;
            }
        };
        shop.adjust_stock(&order.lines, true);
        shop.released.lock().unwrap().insert(order.order);
        match held.release() {
            Ok(()) => {}
            Err(LockError::LeaseExpired) => _ = shop.counters.leases_expired.fetch_add(1, Ordering::Relaxed),
            Err(error) => shop.error("releasing a failed order's SKUs", error),
        }
    }
    if !shop.failed_notices.lock().unwrap().contains(&order.order) {
        if let Err(error) = shop.payments.publish_message(order.message(FAILED)) {
            shop.error("publishing a failed payment", error);
            return false;
        }
        shop.failed_notices.lock().unwrap().insert(order.order);
    }
    true
}

/// Notifications: one message "sent" per payment record; measures order →
/// notification latency for this run's orders. Commits every 100 ms, so a
/// crash may send a few notifications twice (at least once).
pub(super) fn notifications(shop: &Shop, latency_us: &Mutex<Histogram<u64>>) {
    let mut subscription = match shop.payments.subscribe(NOTIFICATION_GROUP) {
        Ok(subscription) => subscription,
        Err(error) => return shop.error("subscribing to payments", error),
    };
    let mut latencies = histogram();
    let mut last_commit = Instant::now();
    loop {
        let drained = shop.drained.load(Ordering::Relaxed);
        if drained || last_commit.elapsed() >= Duration::from_millis(100) {
            if subscription.position() != subscription.committed()
                && let Err(error) = subscription.commit()
            {
                shop.error("committing notifications", error);
            }
            last_commit = Instant::now();
        }
        shop.notification_position.store(subscription.position().get(), Ordering::Release);
        if drained {
            break;
        }
        match subscription.next_timeout(POLL) {
            Ok(Some(record)) => match OrderMessage::decode(record.payload()) {
                Some(order) => {
                    if order.run == shop.run {
                        latencies.saturating_record(now_us().saturating_sub(order.created_us).max(1));
                    }
                    shop.counters.notified.fetch_add(1, Ordering::Relaxed);
                }
                None => shop.error("a payment record", "not an order"),
            },
            Ok(None) => {}
            Err(error) => {
                shop.error("reading payments", error);
                thread::sleep(POLL);
            }
        }
    }
    latency_us.lock().unwrap().add(&latencies).expect("histograms with the same bounds merge");
}
