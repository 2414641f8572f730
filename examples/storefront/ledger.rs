//! The ledger: what the topics say, read from the first record to the last.

use std::collections::{HashMap, HashSet};

use tollgate::{Record, Topic};

use super::messages::{CREATED, Catalog, DECLINED, FAILED, Line, OrderMessage, RELEASED, RESERVED, SETTLED};
use super::sale::Error;

/// Everything the logs record about the orders of every run. Read at start
/// (to rebuild the stock and what was already done) and at the end (to check
/// the invariants).
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// `stock.reserved` records, by order.
    pub(super) reserved: HashMap<u64, Vec<Line>>,
    /// `order.created` records: order → run.
    pub(super) created: HashMap<u64, u64>,
    /// `order.created` records not directly preceded by their order's
    /// `stock.reserved` (the two are published as one atomic batch).
    pub(super) unpaired: u64,
    /// `stock.released` records, by order, with how many times.
    pub(super) released: HashMap<u64, (Vec<Line>, u64)>,
    /// `payment.settled` records: order → count.
    pub(super) settled: HashMap<u64, u64>,
    /// `payment.failed` records: order → count.
    pub(super) failed_notices: HashMap<u64, u64>,
    /// Dead letters: order → (declined, count).
    pub(super) dead: HashMap<u64, (bool, u64)>,
    /// Records that do not parse, or name a SKU not in the catalog.
    pub(super) malformed: u64,
    /// Order numbers reserved or created more than once.
    pub(super) duplicate_orders: u64,
    /// Units left per SKU, applying reservations and releases in log order.
    pub(super) balance: Vec<i128>,
    /// SKUs whose balance went below zero at some point of the log.
    pub(super) oversold: HashSet<u32>,
    /// Highest order number seen.
    pub(super) last_order: u64,
    /// Records in `payments` (for the notifications check).
    pub(super) payments_end: u64,
}

impl Ledger {
    pub(super) fn read(
        catalog: Catalog,
        orders: &Topic,
        payments: &Topic,
        dead_letters: &Topic,
    ) -> Result<Ledger, Error> {
        let mut ledger =
            Ledger { balance: vec![i128::from(catalog.stock); catalog.skus as usize], ..Ledger::default() };
        let mut previous_reservation = None;
        for record in records(orders)? {
            let record = record?;
            let Some(message) = OrderMessage::decode(record.payload()) else {
                ledger.malformed += 1;
                continue;
            };
            if message.lines.iter().any(|line| line.sku >= catalog.skus) {
                ledger.malformed += 1;
                continue;
            }
            ledger.last_order = ledger.last_order.max(message.order);
            match record.key() {
                Some(RESERVED) => {
                    previous_reservation = Some(message.order);
                    ledger.apply(&message.lines, -1);
                    if ledger.reserved.insert(message.order, message.lines).is_some() {
                        ledger.duplicate_orders += 1;
                    }
                    continue;
                }
                Some(CREATED) => {
                    if previous_reservation != Some(message.order) {
                        ledger.unpaired += 1;
                    }
                    if ledger.created.insert(message.order, message.run).is_some() {
                        ledger.duplicate_orders += 1;
                    }
                }
                Some(RELEASED) => {
                    ledger.apply(&message.lines, 1);
                    ledger.released.entry(message.order).or_insert((message.lines, 0)).1 += 1;
                }
                _ => ledger.malformed += 1,
            }
            previous_reservation = None;
        }
        for record in records(payments)? {
            let record = record?;
            let order = OrderMessage::decode(record.payload()).map(|m| m.order);
            match (record.key(), order) {
                (Some(SETTLED), Some(order)) => *ledger.settled.entry(order).or_default() += 1,
                (Some(FAILED), Some(order)) => *ledger.failed_notices.entry(order).or_default() += 1,
                _ => ledger.malformed += 1,
            }
        }
        ledger.payments_end = payments.info().next.get();
        for record in records(dead_letters)? {
            let record = record?;
            let Some(message) = OrderMessage::decode(record.payload()) else {
                ledger.malformed += 1;
                continue;
            };
            let declined = record.header("tollgate.dlq.reason") == Some(DECLINED.as_bytes());
            ledger.dead.entry(message.order).or_insert((declined, 0)).1 += 1;
        }
        Ok(ledger)
    }

    /// Applies a reservation (`sign` -1) or a release (+1) to the balance,
    /// noting any SKU it takes below zero: an oversell, even if a later
    /// release brings the SKU back.
    fn apply(&mut self, lines: &[Line], sign: i128) {
        for line in lines {
            let units = &mut self.balance[line.sku as usize];
            *units += sign * i128::from(line.quantity);
            if *units < 0 {
                self.oversold.insert(line.sku);
            }
        }
    }
}

/// Every record of `topic` from the oldest (nothing is deleted here: the
/// topics have no retention).
pub(super) fn records(topic: &Topic) -> Result<impl Iterator<Item = Result<Record, Error>> + '_, Error> {
    let info = topic.info();
    Ok((info.oldest.get()..info.next.get())
        .map(|offset| topic.read(tollgate::Offset::new(offset)).map_err(Error::from)))
}
