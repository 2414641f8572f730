//! Messages: small `name=value` texts, readable with `tollgate dump`, and
//! the topic, group and key names they go under.

use std::time::{SystemTime, UNIX_EPOCH};

use tollgate::Message;

use super::{SKUS_MAX, STOCK_MAX};

// Topic, group and key names.
pub(super) const CATALOG: &str = "catalog";
pub(super) const ORDERS: &str = "orders";
pub(super) const PAYMENTS: &str = "payments";
pub(super) const DEAD_LETTERS: &str = "orders.dlq";
pub(super) const PAYMENT_GROUP: &str = "payments";
pub(super) const COMPENSATION_GROUP: &str = "compensation";
pub(super) const NOTIFICATION_GROUP: &str = "notifications";
pub(super) const RESERVED: &str = "stock.reserved";
pub(super) const CREATED: &str = "order.created";
pub(super) const RELEASED: &str = "stock.released";
pub(super) const SETTLED: &str = "payment.settled";
pub(super) const FAILED: &str = "payment.failed";
/// The dead-letter reason of a declined payment; any other reason means the
/// order ran out of attempts.
pub(super) const DECLINED: &str = "declined";
pub(super) const GATEWAY_TIMEOUT: &str = "gateway timeout";

/// One order line: a SKU and a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Line {
    pub(super) sku: u32,
    pub(super) quantity: u64,
}

/// What `stock.reserved`, `order.created`, `stock.released` and the
/// payment records say about an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OrderMessage {
    pub(super) order: u64,
    /// The run (1 for the first in the data directory) that placed it.
    pub(super) run: u64,
    /// Wall-clock time the order was placed, in microseconds since the epoch.
    pub(super) created_us: u64,
    pub(super) lines: Vec<Line>,
}

impl OrderMessage {
    fn encode(&self) -> String {
        let lines: Vec<String> = self.lines.iter().map(|l| format!("{}x{}", l.sku, l.quantity)).collect();
        format!("order={} run={} created_us={} lines={}", self.order, self.run, self.created_us, lines.join(","))
    }

    pub(super) fn decode(payload: &[u8]) -> Option<OrderMessage> {
        let text = std::str::from_utf8(payload).ok()?;
        let field = |name: &str| {
            text.split(' ').find_map(|pair| pair.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
        };
        let lines = match field("lines")? {
            "" => Vec::new(),
            lines => lines
                .split(',')
                .map(|line| {
                    let (sku, quantity) = line.split_once('x')?;
                    Some(Line { sku: sku.parse().ok()?, quantity: quantity.parse().ok()? })
                })
                .collect::<Option<Vec<Line>>>()?,
        };
        Some(OrderMessage {
            order: field("order")?.parse().ok()?,
            run: field("run")?.parse().ok()?,
            created_us: field("created_us")?.parse().ok()?,
            lines,
        })
    }

    pub(super) fn message(&self, key: &str) -> Message {
        Message::new(self.encode()).key(key)
    }
}

/// The catalog a data directory was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Catalog {
    pub(super) skus: u32,
    /// Units of each SKU at the start of the sale.
    pub(super) stock: u64,
}

impl Catalog {
    pub(super) fn encode(self) -> String {
        format!("skus={} stock={}", self.skus, self.stock)
    }

    /// The catalog in `payload`, if it is one within the command line's ranges.
    pub(super) fn decode(payload: &[u8]) -> Option<Catalog> {
        let text = std::str::from_utf8(payload).ok()?;
        let (skus, stock) = text.split_once(' ')?;
        let catalog = Catalog {
            skus: skus.strip_prefix("skus=")?.parse().ok()?,
            stock: stock.strip_prefix("stock=")?.parse().ok()?,
        };
        ((1..=SKUS_MAX).contains(&catalog.skus) && catalog.stock <= STOCK_MAX).then_some(catalog)
    }
}

pub(super) fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

pub(super) fn sku_key(sku: u32) -> String {
    format!("sku:{sku}")
}
