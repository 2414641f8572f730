//! Checkout: a `Session` per request takes the order's SKU locks (all or
//! none, sorted, with a timeout and a lease) through
//! `Topic::transaction_async`, checks the stock under them, and publishes
//! `stock.reserved` and `order.created` as one atomic batch before taking
//! the units from the in-memory stock and releasing the locks.
//!
//! The request waits for the locks as a task (no thread blocks); the commit
//! itself is a copy into the mapped log on a `Buffered` topic, short enough
//! to run on the executor's thread.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Deserialize;
use tollgate::{LockError, LockRequest};

use crate::ledger::Status;
use crate::messages::{CREATED, Line, Order, RESERVED, sku_key};
use crate::shop::Shop;

/// Most lines in one order.
pub const LINES_MAX: usize = 8;
/// Most units of one SKU in one order.
pub const QTY_MAX: u64 = 100;
/// The lease on each SKU lock: a checkout holds them for microseconds, so a
/// lease only matters if a task stalls; it bounds how long others wait.
const LEASE: Duration = Duration::from_secs(5);

/// The body of `POST /checkout`: `{"lines": [{"sku": "sku-1", "qty": 2}]}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// 1 to `LINES_MAX` lines, each SKU at most once.
    pub lines: Vec<Line>,
}

/// How a checkout ended; `app.rs` turns it into a status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 201: the order and its reservation are in the log.
    Placed(u64),
    /// 409: this SKU had too few units left.
    OutOfStock(String),
    /// 503: the locks stayed busy past the timeout, or the shop is closing,
    /// or the log refused the write; the client may retry.
    Unavailable(&'static str),
    /// 400: the request names an unknown SKU, repeats one, or is out of range.
    Invalid(String),
}

/// Places the order `request` describes, or says why not.
pub async fn checkout(shop: &Shop, request: CheckoutRequest) -> Outcome {
    if let Err(reason) = validate(shop, &request.lines) {
        shop.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
        return Outcome::Invalid(reason);
    }
    if shop.closing.load(Ordering::Relaxed) {
        shop.counters.refused_closing.fetch_add(1, Ordering::Relaxed);
        return Outcome::Unavailable("shutting down");
    }
    let keys: Vec<String> = request.lines.iter().map(|line| sku_key(&line.sku)).collect();
    // The locks belong to this request's session, not to the executor's
    // thread, so the task may move between threads while it holds them.
    let session = shop.locks.session();
    let lock_request = LockRequest::exclusive().timeout(shop.lock_timeout).lease(LEASE);
    let tx = match shop.orders.transaction_async(&session, &keys, lock_request).await {
        Ok(tx) => tx,
        Err(LockError::Timeout { .. }) => {
            shop.counters.lock_timeouts.fetch_add(1, Ordering::Relaxed);
            return Outcome::Unavailable("the SKUs are busy, retry");
        }
        Err(error) => {
            shop.error("locking an order's SKUs", error);
            return Outcome::Unavailable("the SKUs could not be locked");
        }
    };
    // Under the locks: check every line, then reserve.
    let short = request.lines.iter().find(|line| shop.stock[&line.sku].load(Ordering::Relaxed) < line.qty);
    if let Some(line) = short {
        shop.counters.out_of_stock.fetch_add(1, Ordering::Relaxed);
        return Outcome::OutOfStock(line.sku.clone()); // dropping `tx` publishes nothing and unlocks
    }
    let order = Order { order: shop.next_order.fetch_add(1, Ordering::Relaxed), lines: request.lines };
    let held = match tx.commit_async([order.message(RESERVED), order.message(CREATED)]).await {
        Ok((_, held)) => held,
        Err(error) => {
            shop.error("publishing an order", error);
            return Outcome::Unavailable("the order could not be written");
        }
    };
    shop.adjust_stock(&order.lines, false);
    shop.set_status(order.order, Status::Pending);
    shop.counters.placed.fetch_add(1, Ordering::Relaxed);
    if let Err(error) = held.release() {
        // `LeaseExpired`: the task stalled for a whole lease under the locks.
        shop.error("releasing an order's SKUs", error);
    }
    Outcome::Placed(order.order)
}

/// Checks the lines against the catalog and the limits.
fn validate(shop: &Shop, lines: &[Line]) -> Result<(), String> {
    if lines.is_empty() || lines.len() > LINES_MAX {
        return Err(format!("an order has 1 to {LINES_MAX} lines"));
    }
    let mut seen = HashSet::new();
    for line in lines {
        if !shop.stock.contains_key(&line.sku) {
            return Err(format!("unknown SKU {:?}", line.sku));
        }
        if !seen.insert(line.sku.as_str()) {
            return Err(format!("SKU {:?} appears twice", line.sku));
        }
        if !(1..=QTY_MAX).contains(&line.qty) {
            return Err(format!("a quantity is 1 to {QTY_MAX}"));
        }
    }
    Ok(())
}
