//! Notifications: a `Subscription::records()` stream over `payments`, read
//! by one task, that "tells the customer" (counts) and records each order's
//! status for `GET /orders/{id}`. Its group commits every
//! `COMMIT_EVERY` and when it stops, so a crash may notify a few payments
//! twice (at least once); setting a status twice is harmless.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::watch;
use tollgate::Subscription;

use crate::ledger::Status;
use crate::messages::{FAILED, Order, SETTLED};
use crate::shop::Shop;

/// How often the group's position is committed while records arrive.
const COMMIT_EVERY: Duration = Duration::from_millis(200);

/// Reads `subscription` until `stop` turns true (or the engine closes).
pub async fn run(shop: Arc<Shop>, subscription: Subscription, mut stop: watch::Receiver<bool>) {
    let mut records = subscription.records();
    let mut tick = tokio::time::interval(COMMIT_EVERY);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => commit(&shop, records.subscription_mut()).await,
            next = poll_fn(|cx| Pin::new(&mut records).poll_next(cx)) => match next {
                None => break, // the engine closed
                Some(Ok(record)) => {
                    let status = match record.key() {
                        Some(SETTLED) => Status::Paid,
                        Some(FAILED) => Status::Failed,
                        _ => {
                            shop.error("a payment record", "unknown key");
                            continue;
                        }
                    };
                    match Order::decode(record.payload()) {
                        Some(order) => shop.set_status(order.order, status),
                        None => shop.error("a payment record", "the order does not parse"),
                    }
                    shop.counters.notified.fetch_add(1, Ordering::Relaxed);
                }
                Some(Err(error)) => {
                    shop.error("reading payments", error);
                    tokio::time::sleep(COMMIT_EVERY).await;
                }
            },
        }
    }
    commit(&shop, records.subscription_mut()).await;
}

/// Commits the group's position if it moved (the engine's flusher thread
/// writes the offset file; this task only waits for it).
async fn commit(shop: &Shop, subscription: &mut Subscription) {
    if subscription.position() != subscription.committed()
        && let Err(error) = subscription.commit_async().await
    {
        shop.error("committing notifications", error);
    }
}
