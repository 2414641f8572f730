//! What the request handlers and the background tasks share: the stock
//! under the SKUs' locks, the topics, what is already paid or released, the
//! order statuses, and the counters `GET /metrics` shows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tollgate::{LockManager, Topic};

use crate::ledger::Status;
use crate::messages::Line;

/// Most unexpected errors kept for `GET /metrics` (none should happen).
const ERRORS_KEPT_MAX: usize = 20;

/// The shop's state, shared by every task in an `Arc`.
pub struct Shop {
    /// The SKU locks (checkout, compensation) and the order locks (payments).
    pub locks: LockManager,
    /// `stock.reserved`, `order.created`, `stock.released`.
    pub orders: Topic,
    /// `payment.settled`, `payment.failed`.
    pub payments: Topic,
    /// Units left per SKU. Read and written with a separate load and store:
    /// only the SKU's lock keeps two checkouts from selling the same unit.
    pub stock: BTreeMap<String, AtomicU64>,
    /// The next order number.
    pub next_order: AtomicU64,
    /// Orders with a payment record (paid or failed): the payment workers
    /// charge an order at most once, however often it is delivered.
    pub settled: Mutex<HashSet<u64>>,
    /// Failed orders whose stock was released.
    pub released: Mutex<HashSet<u64>>,
    /// Every order's status, for `GET /orders/{id}`: pending from checkout,
    /// paid or failed from the notifications stream. (An example: it grows
    /// with the orders, one entry each.)
    pub statuses: Mutex<HashMap<u64, Status>>,
    /// Set when shutdown begins: checkouts not yet holding their locks
    /// answer 503.
    pub closing: AtomicBool,
    /// How long a checkout waits for all of its SKUs' locks.
    pub lock_timeout: Duration,
    /// How long the fake card gateway takes per charge.
    pub gateway_latency: Duration,
    /// Share of orders declined, in percent (decided by the order number).
    pub decline_percent: u32,
    /// What happened so far.
    pub counters: Counters,
    /// Unexpected errors, as sentences.
    errors: Mutex<Vec<String>>,
}

/// Counts since the process started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Checkouts answered 201.
    pub placed: AtomicU64,
    /// Checkouts answered 409: a line's SKU had too few units.
    pub out_of_stock: AtomicU64,
    /// Checkouts answered 503: the locks were busy past the timeout.
    pub lock_timeouts: AtomicU64,
    /// Checkouts answered 503 because the shop was shutting down.
    pub refused_closing: AtomicU64,
    /// Checkouts answered 400.
    pub bad_requests: AtomicU64,
    /// Orders paid by this process.
    pub paid: AtomicU64,
    /// Orders declined and compensated by this process.
    pub failed: AtomicU64,
    /// Payment records the notifications stream has read.
    pub notified: AtomicU64,
    /// Unexpected errors (see `Shop::error`).
    pub errors: AtomicU64,
}

impl Shop {
    /// An empty shop; `lib.rs` fills it from the ledger.
    pub(crate) fn new(locks: LockManager, orders: Topic, payments: Topic, settings: &crate::Config) -> Shop {
        Shop {
            locks,
            orders,
            payments,
            stock: BTreeMap::new(),
            next_order: AtomicU64::new(1),
            settled: Mutex::new(HashSet::new()),
            released: Mutex::new(HashSet::new()),
            statuses: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
            lock_timeout: settings.lock_timeout,
            gateway_latency: settings.gateway_latency,
            decline_percent: settings.decline_percent,
            counters: Counters::default(),
            errors: Mutex::new(Vec::new()),
        }
    }

    /// Notes an unexpected error (the first few are kept for `/metrics`).
    pub fn error(&self, what: &str, error: impl std::fmt::Display) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().expect("no panics under this lock");
        if errors.len() < ERRORS_KEPT_MAX {
            errors.push(format!("{what}: {error}"));
        }
    }

    /// Takes (`add` false) or gives back (`add` true) each line's units.
    /// Call with the lines' SKU locks held: the load and the store are
    /// separate.
    pub fn adjust_stock(&self, lines: &[Line], add: bool) {
        for line in lines {
            let Some(units) = self.stock.get(&line.sku) else { continue };
            let level = units.load(Ordering::Relaxed);
            match if add { level.checked_add(line.qty) } else { level.checked_sub(line.qty) } {
                Some(level) => units.store(level, Ordering::Relaxed),
                // Only a broken lock gets here: the level was checked under it.
                None => self.error("updating stock", format!("{} would go below zero", line.sku)),
            }
        }
    }

    /// Sets `order`'s status; a payment's status is never taken back to
    /// pending (the notification may arrive before checkout records it).
    pub fn set_status(&self, order: u64, status: Status) {
        let mut statuses = self.statuses.lock().expect("no panics under this lock");
        let entry = statuses.entry(order).or_insert(status);
        if status != Status::Pending {
            *entry = status;
        }
    }

    /// What `GET /metrics` shows.
    pub fn metrics(&self) -> Metrics {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let c = &self.counters;
        let statuses = self.statuses.lock().expect("no panics under this lock");
        let count = |status| statuses.values().filter(|&&s| s == status).count() as u64;
        let lock_stats = self.locks.stats();
        Metrics {
            placed: load(&c.placed),
            out_of_stock: load(&c.out_of_stock),
            lock_timeouts: load(&c.lock_timeouts),
            refused_closing: load(&c.refused_closing),
            bad_requests: load(&c.bad_requests),
            paid: load(&c.paid),
            failed: load(&c.failed),
            notified: load(&c.notified),
            orders_pending: count(Status::Pending),
            orders_paid: count(Status::Paid),
            orders_failed: count(Status::Failed),
            stock: self.stock.iter().map(|(sku, units)| (sku.clone(), load(units))).collect(),
            lock_grants: lock_stats.grants,
            lock_contended: lock_stats.contended,
            errors: self.errors.lock().expect("no panics under this lock").clone(),
        }
    }
}

/// The body of `GET /metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// Checkouts answered 201 by this process.
    pub placed: u64,
    /// Checkouts answered 409.
    pub out_of_stock: u64,
    /// Checkouts answered 503 for busy locks.
    pub lock_timeouts: u64,
    /// Checkouts answered 503 while shutting down.
    pub refused_closing: u64,
    /// Checkouts answered 400.
    pub bad_requests: u64,
    /// Orders this process paid.
    pub paid: u64,
    /// Orders this process declined and compensated.
    pub failed: u64,
    /// Payment records read by the notifications stream.
    pub notified: u64,
    /// Orders of every run, by status (as the notifications stream saw them).
    pub orders_pending: u64,
    /// Paid orders of every run.
    pub orders_paid: u64,
    /// Failed orders of every run.
    pub orders_failed: u64,
    /// Units left per SKU.
    pub stock: BTreeMap<String, u64>,
    /// The lock manager's grants so far.
    pub lock_grants: u64,
    /// Grants that had to wait.
    pub lock_contended: u64,
    /// The first unexpected errors (none should happen).
    pub errors: Vec<String>,
}
