//! The records: small JSON texts (readable with `tollgate dump`), keyed by
//! what they say, and the topic, group and lock-key names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tollgate::Message;

// Topics and groups.
/// The catalog: one record, written by the first run in a data directory.
pub const CATALOG: &str = "catalog";
/// Reservations, orders and releases, in the order they happened.
pub const ORDERS: &str = "orders";
/// What the payment workers decided: settled or failed, once per order.
pub const PAYMENTS: &str = "payments";
/// The worker group on `orders` that charges each order.
pub const PAYMENT_GROUP: &str = "payments";
/// The subscription group on `payments` that tracks each order's status.
pub const NOTIFICATION_GROUP: &str = "notifications";

// Record keys.
/// In `orders`: units taken from the stock (published with `order.created`,
/// as one atomic batch).
pub const RESERVED: &str = "stock.reserved";
/// In `orders`: an order to charge (what the payment workers take).
pub const CREATED: &str = "order.created";
/// In `orders`: units given back by a failed order's compensation.
pub const RELEASED: &str = "stock.released";
/// In `payments`: the order was paid.
pub const SETTLED: &str = "payment.settled";
/// In `payments`: the card was declined and the stock released.
pub const FAILED: &str = "payment.failed";

/// One line of an order: a SKU and a quantity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The SKU's name in the catalog (`sku-1`, ...).
    pub sku: String,
    /// Units, at least 1.
    pub qty: u64,
}

/// An order, as every record about it in `orders` and `payments` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The order's number, unique in the data directory, from 1.
    pub order: u64,
    /// Distinct SKUs.
    pub lines: Vec<Line>,
}

impl Order {
    /// The record `kind` (one of the keys above) about this order.
    pub fn message(&self, kind: &str) -> Message {
        Message::new(serde_json::to_vec(self).expect("an order always serializes")).key(kind)
    }

    /// The order in `payload`, if it is one.
    pub fn decode(payload: &[u8]) -> Option<Order> {
        serde_json::from_slice(payload).ok()
    }
}

/// The catalog a data directory was created with: units of each SKU at the
/// start of the sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// SKU name → initial units.
    pub stock: BTreeMap<String, u64>,
}

impl Catalog {
    /// `skus` SKUs named `sku-1`, `sku-2`, ..., with `stock` units each.
    pub fn new(skus: u32, stock: u64) -> Catalog {
        Catalog { stock: (1..=skus).map(|n| (format!("sku-{n}"), stock)).collect() }
    }

    /// The record that stores it.
    pub fn message(&self) -> Message {
        Message::new(serde_json::to_vec(self).expect("a catalog always serializes"))
    }

    /// The catalog in `payload`, if it is one.
    pub fn decode(payload: &[u8]) -> Option<Catalog> {
        serde_json::from_slice(payload).ok()
    }
}

/// The lock that guards a SKU's stock.
pub fn sku_key(sku: &str) -> String {
    format!("sku:{sku}")
}

/// The lock that makes settling an order's payment idempotent.
pub fn order_key(order: u64) -> String {
    format!("order:{order}")
}
