//! The ledger: what the topics say, read from the first record to the last.
//! A run rebuilds its stock, its order numbers and what is already paid or
//! released from it at start; the tests check the invariants on it after a
//! run (and after a `kill -9` and a restart).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tollgate::{Offset, ReadError, Record, Topic};

use crate::messages::{CREATED, Catalog, FAILED, Line, Order, RELEASED, RESERVED, SETTLED};

/// Where an order stands, as `GET /orders/{id}` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Placed; no payment record yet.
    Pending,
    /// `payment.settled`.
    Paid,
    /// `payment.failed`: declined, and the stock released.
    Failed,
}

/// Everything `orders` and `payments` record, counted per order.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Units left per SKU: the catalog's, with reservations and releases
    /// applied in log order.
    pub stock: BTreeMap<String, i64>,
    /// SKUs whose stock went below zero at some point of the log.
    pub oversold: BTreeSet<String>,
    /// `stock.reserved` records per order.
    pub reserved: BTreeMap<u64, u32>,
    /// `order.created` records per order.
    pub created: BTreeMap<u64, u32>,
    /// `order.created` records not directly after their order's
    /// `stock.reserved` (the two are one atomic batch).
    pub unpaired: u64,
    /// `stock.released` records per order.
    pub released: BTreeMap<u64, u32>,
    /// `payment.settled` records per order.
    pub settled: BTreeMap<u64, u32>,
    /// `payment.failed` records per order.
    pub failed: BTreeMap<u64, u32>,
    /// Records that do not parse, or name a SKU not in the catalog.
    pub malformed: u64,
}

impl Ledger {
    /// Reads both topics from their oldest record (they have no retention,
    /// so that is the first).
    pub fn read(catalog: &Catalog, orders: &Topic, payments: &Topic) -> Result<Ledger, ReadError> {
        let stock = catalog.stock.iter().map(|(sku, &units)| (sku.clone(), units as i64)).collect();
        let mut ledger = Ledger { stock, ..Ledger::default() };
        let mut reservation = None;
        for record in records(orders) {
            let record = record?;
            let order = match Order::decode(record.payload()) {
                Some(order) if order.lines.iter().all(|line| ledger.stock.contains_key(&line.sku)) => order,
                _ => {
                    ledger.malformed += 1;
                    continue;
                }
            };
            let previous = reservation.take();
            match record.key() {
                Some(RESERVED) => {
                    ledger.apply(&order.lines, -1);
                    *ledger.reserved.entry(order.order).or_default() += 1;
                    reservation = Some(order.order);
                }
                Some(CREATED) => {
                    ledger.unpaired += u64::from(previous != Some(order.order));
                    *ledger.created.entry(order.order).or_default() += 1;
                }
                Some(RELEASED) => {
                    ledger.apply(&order.lines, 1);
                    *ledger.released.entry(order.order).or_default() += 1;
                }
                _ => ledger.malformed += 1,
            }
        }
        for record in records(payments) {
            let record = record?;
            match (record.key(), Order::decode(record.payload())) {
                (Some(SETTLED), Some(order)) => *ledger.settled.entry(order.order).or_default() += 1,
                (Some(FAILED), Some(order)) => *ledger.failed.entry(order.order).or_default() += 1,
                _ => ledger.malformed += 1,
            }
        }
        Ok(ledger)
    }

    /// Applies a reservation (`sign` -1) or a release (+1), noting any SKU
    /// it takes below zero: an oversell, even if a later release makes up
    /// for it.
    fn apply(&mut self, lines: &[Line], sign: i64) {
        for line in lines {
            let units = self.stock.get_mut(&line.sku).expect("checked against the catalog");
            *units += sign * line.qty as i64;
            if *units < 0 {
                self.oversold.insert(line.sku.clone());
            }
        }
    }

    /// Where `order` stands, if it was placed.
    pub fn status(&self, order: u64) -> Option<Status> {
        if !self.created.contains_key(&order) {
            None
        } else if self.settled.contains_key(&order) {
            Some(Status::Paid)
        } else if self.failed.contains_key(&order) {
            Some(Status::Failed)
        } else {
            Some(Status::Pending)
        }
    }

    /// The highest order number in the log (0 if none).
    pub fn last_order(&self) -> u64 {
        self.created.keys().chain(self.reserved.keys()).copied().max().unwrap_or(0)
    }

    /// Placed orders with no payment record yet.
    pub fn pending(&self) -> usize {
        self.created.keys().filter(|&&order| self.status(order) == Some(Status::Pending)).count()
    }

    /// The invariants that hold at any instant, even right after a
    /// `kill -9`; each failure as a sentence.
    ///
    /// - nothing oversold: no SKU's stock went below zero, in log order;
    /// - every order is reserved and created exactly once, as one batch;
    /// - every order is settled at most once: paid or failed, not both;
    /// - a failed order's stock is released exactly once (a release that is
    ///   not yet followed by its `payment.failed` is a crash between the
    ///   two, finished by the redelivery), a paid order's never;
    /// - every record parses and names a placed order.
    pub fn violations(&self) -> Vec<String> {
        let mut found = Vec::new();
        if !self.oversold.is_empty() {
            found.push(format!("oversold: {:?}", self.oversold));
        }
        if self.unpaired > 0 {
            found.push(format!("{} order.created records without their reservation", self.unpaired));
        }
        if self.malformed > 0 {
            found.push(format!("{} malformed records", self.malformed));
        }
        let orders: BTreeSet<u64> = self.created.keys().chain(self.reserved.keys()).copied().collect();
        for order in orders {
            let count = |map: &BTreeMap<u64, u32>| map.get(&order).copied().unwrap_or(0);
            let (reserved, created) = (count(&self.reserved), count(&self.created));
            let (released, settled, failed) = (count(&self.released), count(&self.settled), count(&self.failed));
            if reserved != 1 || created != 1 {
                found.push(format!("order {order}: reserved {reserved} times, created {created} times"));
            }
            if settled + failed > 1 {
                found.push(format!("order {order}: settled {settled} times, failed {failed} times"));
            }
            if released > 1 || (released == 1 && settled > 0) || (failed > 0 && released != 1) {
                found.push(format!("order {order}: released {released} times, settled {settled}, failed {failed}"));
            }
        }
        let unknown = |map: &BTreeMap<u64, u32>| map.keys().filter(|order| !self.created.contains_key(order)).count();
        let unknown = unknown(&self.released) + unknown(&self.settled) + unknown(&self.failed);
        if unknown > 0 {
            found.push(format!("{unknown} payment or release records of orders never created"));
        }
        found
    }
}

/// Every record of `topic`, from the oldest.
pub fn records(topic: &Topic) -> impl Iterator<Item = Result<Record, ReadError>> + '_ {
    let info = topic.info();
    (info.oldest.get()..info.next.get()).map(|offset| topic.read(Offset::new(offset)))
}
