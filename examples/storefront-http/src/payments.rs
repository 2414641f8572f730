//! The payment workers: `Worker::run_async` loops, spawned as tokio tasks,
//! each with at most `concurrency` charges in flight. A charge goes to a
//! fake card gateway (a sleep); the gateway declines a fixed share of
//! orders, chosen by the order number so that a redelivery after a restart
//! gets the same answer. A declined order is compensated at once: its units
//! go back to the stock (`stock.released`, published under the SKUs'
//! locks) and `payment.failed` is published. A paid order gets
//! `payment.settled`.
//!
//! Settling is idempotent: under the order's lock, an order that already
//! has a payment record is only acked (a `kill -9` between the record and
//! the ack delivers it again), and a release already in the log is not
//! published twice. A step that cannot finish (a lock timeout, a refused
//! write) nacks the delivery, to be retried shortly.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;
use tollgate::{Delivery, LockRequest, RunConfig, RunError, RunReport, Session, Settle, Shutdown, Worker};

use crate::ledger::Status;
use crate::messages::{FAILED, Order, RELEASED, SETTLED, order_key, sku_key};
use crate::shop::Shop;

/// How long a payment waits for an order's or its SKUs' locks.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// The delay before a payment that could not finish is retried.
const RETRY_AFTER: Duration = Duration::from_millis(20);

/// Spawns `tasks` run loops of `worker`'s group, each with `concurrency`
/// charges in flight, all stopped by `shutdown`.
pub fn spawn(
    shop: &Arc<Shop>,
    worker: &Worker,
    tasks: usize,
    concurrency: usize,
    shutdown: &Shutdown,
) -> Vec<JoinHandle<Result<RunReport, RunError>>> {
    (0..tasks)
        .map(|_| {
            let shop = shop.clone();
            let config = RunConfig { concurrency, shutdown: shutdown.clone(), ..RunConfig::default() };
            // The handler future owns what it needs: the loop keeps the
            // delivery and settles it with what the future returns.
            tokio::spawn(worker.run_async(config, move |delivery: &Delivery| {
                let (shop, payload) = (shop.clone(), delivery.payload().clone());
                async move { charge(&shop, &payload).await }
            }))
        })
        .collect()
}

/// Charges the order in `payload` and decides how its delivery settles.
async fn charge(shop: &Shop, payload: &[u8]) -> Settle {
    let Some(order) = Order::decode(payload) else {
        shop.error("a payment", "the order does not parse");
        return Settle::Reject { reason: "malformed order".into() };
    };
    let session = shop.locks.session();
    let key = order_key(order.order);
    let _order_lock = match session.lock_for_async(&key, LOCK_WAIT).await {
        Ok(guard) => guard,
        Err(error) => return retry(error),
    };
    if shop.settled.lock().expect("no panics under this lock").contains(&order.order) {
        return Settle::Ack;
    }
    tokio::time::sleep(shop.gateway_latency).await;
    let (record, status) = if declined(order.order, shop.decline_percent) {
        if let Err(error) = release(shop, &session, &order).await {
            return retry(error);
        }
        (FAILED, Status::Failed)
    } else {
        (SETTLED, Status::Paid)
    };
    if let Err(error) = shop.payments.publish_message_async(order.message(record)).await {
        shop.error("publishing a payment", &error);
        return retry(error);
    }
    shop.settled.lock().expect("no panics under this lock").insert(order.order);
    let counter = if status == Status::Paid { &shop.counters.paid } else { &shop.counters.failed };
    counter.fetch_add(1, Ordering::Relaxed);
    Settle::Ack
}

/// Gives a declined order's units back, unless that is already done:
/// `stock.released` under the SKUs' locks, then the in-memory stock.
async fn release(shop: &Shop, session: &Session, order: &Order) -> Result<(), String> {
    if shop.released.lock().expect("no panics under this lock").contains(&order.order) {
        return Ok(());
    }
    let keys: Vec<String> = order.lines.iter().map(|line| sku_key(&line.sku)).collect();
    let tx = shop
        .orders
        .transaction_async(session, &keys, LockRequest::exclusive().timeout(LOCK_WAIT))
        .await
        .map_err(|error| error.to_string())?;
    let (_, held) = tx.commit_async([order.message(RELEASED)]).await.map_err(|error| {
        shop.error("releasing stock", &error);
        error.to_string()
    })?;
    shop.adjust_stock(&order.lines, true);
    shop.released.lock().expect("no panics under this lock").insert(order.order);
    drop(held);
    Ok(())
}

/// Whether the fake gateway declines `order`: a fixed share, by a hash of
/// the order number.
fn declined(order: u64, percent: u32) -> bool {
    // A SplitMix64 step: consecutive order numbers get unrelated answers.
    let mut z = order.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % 100 < u64::from(percent)
}

/// A nack, to try again shortly.
fn retry(reason: impl std::fmt::Display) -> Settle {
    Settle::Nack { retry_after: RETRY_AFTER, reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::declined;

    #[test]
    fn declines_are_about_the_share_asked_for() {
        let count = (1..=10_000).filter(|&order| declined(order, 10)).count();
        assert!((800..1200).contains(&count), "{count} of 10000 declined at 10%");
        assert!(!(1..=1000).any(|order| declined(order, 0)));
    }
}
