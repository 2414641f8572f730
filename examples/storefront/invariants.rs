//! The invariants a sale is checked against, and `check`, which counts
//! their failures from the ledger.

use std::sync::atomic::Ordering;

use super::ledger::Ledger;
use super::shop::Shop;

/// The invariants, counted over every run in the data directory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Invariants {
    /// SKUs whose stock went below zero at some point of the log
    /// (reservations and releases applied in log order).
    pub oversold: u64,
    /// Order numbers reserved or created more than once.
    pub duplicate_orders: u64,
    /// Order locks whose lease ran out while the order held them: another
    /// buyer may then have sold the same units (raise `--lease-ms`).
    pub leases_expired: u64,
    /// SKUs whose in-memory stock differs from the ledger's at the end.
    pub books_out_of_balance: u64,
    /// Orders lost: placed by a buyer but not in the log, created without
    /// their reservation, or still unsettled after the drain.
    pub lost_orders: u64,
    /// Orders with more than one payment, or paid and told they failed.
    pub settled_twice: u64,
    /// Failed orders whose stock was not released, or released twice, and
    /// releases of orders that did not fail (paid orders included).
    pub stock_not_released_once: u64,
    /// Payment records the notification group had not read after the
    /// drain, and failed orders without a `payment.failed` record.
    pub unnotified: u64,
    /// Records that refer to no placed order, or do not parse.
    pub unknown_records: u64,
    /// Unexpected errors, with their messages (none should happen).
    pub errors: Vec<String>,
}

/// Checks the invariants of the ledger `after` (every run), and of this run's
/// placed orders and in-memory stock.
pub(super) fn check(
    shop: &Shop,
    after: &Ledger,
    placed: &[u64],
    leases_expired: u64,
    errors: Vec<String>,
) -> Invariants {
    let mut i = Invariants { errors, unknown_records: after.malformed, ..Invariants::default() };
    i.oversold = after.oversold.len() as u64;
    i.duplicate_orders = after.duplicate_orders;
    i.leases_expired = leases_expired;
    i.books_out_of_balance = shop
        .catalog
        .iter()
        .zip(&after.balance)
        .filter(|(sku, units)| i128::from(sku.stock.load(Ordering::Relaxed)) != **units)
        .count() as u64;

    // Every order placed is in the log, with its reservation, and settled.
    i.lost_orders = after.unpaired + placed.iter().filter(|order| !after.created.contains_key(order)).count() as u64;
    i.lost_orders += after.reserved.keys().filter(|order| !after.created.contains_key(order)).count() as u64;
    for order in after.created.keys() {
        let paid = after.settled.get(order).copied().unwrap_or(0);
        // A dead letter of a paid order is a lost ack (see `compensate`),
        // not a failure.
        let failed = paid == 0 && after.dead.contains_key(order);
        if paid == 0 && !failed {
            i.lost_orders += 1;
        }
        if paid > 1 || (paid == 1 && after.failed_notices.contains_key(order)) {
            i.settled_twice += 1;
        }
        let released = after.released.get(order).map_or(0, |(_, n)| *n);
        if released != u64::from(failed) {
            i.stock_not_released_once += 1;
        }
        if failed && !after.failed_notices.contains_key(order) {
            i.unnotified += 1;
        }
    }
    let unknown = |order: &u64| !after.created.contains_key(order);
    i.unknown_records += after.settled.keys().filter(|o| unknown(o)).count() as u64
        + after.failed_notices.keys().filter(|o| unknown(o)).count() as u64
        + after.dead.keys().filter(|o| unknown(o)).count() as u64
        + after.released.keys().filter(|o| unknown(o)).count() as u64;
    i.unnotified += after.payments_end.saturating_sub(shop.notification_position.load(Ordering::Acquire));
    i
}
