//! tollgate's storefront as an HTTP service, on axum and tokio: the same
//! shop as the threaded `examples/storefront`, with requests instead of
//! buyer threads and tasks instead of worker threads.
//!
//! ```text
//!  POST /checkout ──lock SKUs (a Session per request), reserve──▶ orders
//!                    stock.reserved + order.created, one batch      │
//!                                                                   ▼
//!  GET /orders/{id} ◀── statuses ◀── notifications ◀── payments ◀── payment workers
//!                                    (records() stream)  topic      (run_async tasks;
//!                                                                    declined: stock.released)
//! ```
//!
//! Nothing is kept only in memory: at start the stock, the order numbers,
//! the statuses and what was already paid or released are rebuilt from the
//! topics (`ledger.rs`), and the payment group resumes where it was, so a
//! `kill -9` loses no order whose 201 was sent.
//!
//! The modules, in reading order:
//!
//! 1. `messages` - the records (JSON) and the topic, group and key names.
//! 2. `ledger` - what the topics say, read from the first record: the
//!    stock, each order's records, and the invariants.
//! 3. `shop` - what the handlers and tasks share, and the metrics.
//! 4. `checkout` - placing an order under its SKUs' locks.
//! 5. `payments` - the payment workers and the compensation of declines.
//! 6. `notifications` - the stream that tracks order statuses.
//! 7. `app` - the routes.
//! 8. this file - opening the shop and serving until shutdown; `main.rs`
//!    is the command line and the signals.

pub mod app;
pub mod checkout;
pub mod ledger;
pub mod messages;
pub mod notifications;
pub mod payments;
pub mod shop;

use std::error::Error;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tollgate::{Engine, KeyPattern, LockManager, QueueConfig, Shutdown, Subscription, Topic, Worker};

use crate::ledger::{Ledger, Status};
use crate::messages::{CATALOG, CREATED, Catalog, NOTIFICATION_GROUP, ORDERS, PAYMENT_GROUP, PAYMENTS};
use crate::shop::{Metrics, Shop};

/// Any error that stops the service from starting or serving.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// How the shop runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The engine's data directory; created if missing, resumed if not.
    pub data_dir: PathBuf,
    /// SKUs in the catalog (used by the first run in `data_dir` only).
    pub skus: u32,
    /// Units of each SKU at the start (first run only).
    pub stock: u64,
    /// How long a checkout waits for its SKUs' locks before a 503.
    pub lock_timeout: Duration,
    /// How long the fake card gateway takes per charge.
    pub gateway_latency: Duration,
    /// Share of orders the gateway declines, in percent.
    pub decline_percent: u32,
    /// Payment run loops (tokio tasks).
    pub payment_tasks: usize,
    /// Charges in flight per payment run loop.
    pub payment_concurrency: usize,
}

impl Config {
    /// The defaults, on `data_dir`.
    pub fn new(data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            skus: 4,
            stock: 100,
            lock_timeout: Duration::from_millis(250),
            gateway_latency: Duration::from_millis(2),
            decline_percent: 10,
            payment_tasks: 2,
            payment_concurrency: 8,
        }
    }
}

/// What a run did, once it has shut down.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The metrics at the end.
    pub metrics: Metrics,
    /// What the payment run loops did, added up.
    pub payments_handled: u64,
}

/// The engine and what the tasks start from.
struct Opened {
    engine: Engine,
    shop: Arc<Shop>,
    payment_worker: Worker,
    notifications: Subscription,
}

/// Serves the shop on `listener` until `signal` completes, then shuts down
/// gracefully: new checkouts get 503 and the listener stops accepting; the
/// requests in flight finish; the payment loops stop taking orders and
/// finish their charges (`Shutdown`); the notifications stream commits and
/// ends; the engine is dropped, which records a clean shutdown.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<Summary, BoxError> {
    let (tasks, concurrency) = (config.payment_tasks, config.payment_concurrency);
    // Opening runs recovery and reads the logs: blocking work.
    let Opened { engine, shop, payment_worker, notifications } =
        tokio::task::spawn_blocking(move || open(&config)).await??;
    let shutdown = Shutdown::new();
    let payment_loops = payments::spawn(&shop, &payment_worker, tasks, concurrency, &shutdown);
    let (stop_notifications, stopped) = tokio::sync::watch::channel(false);
    let notifier = tokio::spawn(notifications::run(shop.clone(), notifications, stopped));

    let closing = shop.clone();
    let served = axum::serve(listener, app::router(shop.clone()))
        .with_graceful_shutdown(async move {
            signal.await;
            closing.closing.store(true, Ordering::Relaxed);
        })
        .await;

    shutdown.stop();
    let mut payments_handled = 0;
    for payment_loop in payment_loops {
        match payment_loop.await? {
            Ok(report) => payments_handled += report.handled,
            Err(error) => shop.error("a payment loop", error),
        }
    }
    let _ = stop_notifications.send(true);
    notifier.await?;
    let summary = Summary { metrics: shop.metrics(), payments_handled };
    drop((shop, payment_worker));
    // Dropping the engine syncs and records a clean shutdown: blocking work.
    tokio::task::spawn_blocking(move || drop(engine)).await?;
    served?;
    Ok(summary)
}

/// Opens the engine on `config.data_dir`, writes the catalog if it is new,
/// and rebuilds the shop from the logs.
fn open(config: &Config) -> Result<Opened, BoxError> {
    let engine = Engine::open(&config.data_dir)?;
    let catalog = catalog(&engine.topic(CATALOG)?, config)?;
    let orders = engine.topic(ORDERS)?;
    let payments = engine.topic(PAYMENTS)?;
    let ledger = Ledger::read(&catalog, &orders, &payments)?;
    let mut shop = Shop::new(LockManager::new(), orders.clone(), payments.clone(), config);
    for (sku, &units) in &ledger.stock {
        // Never below zero: that would be an oversell in the log, which
        // `Ledger::violations` reports.
        shop.stock.insert(sku.clone(), AtomicU64::new(units.max(0) as u64));
    }
    shop.next_order = AtomicU64::new(ledger.last_order() + 1);
    for &order in ledger.created.keys() {
        shop.set_status(order, ledger.status(order).unwrap_or(Status::Pending));
    }
    let settled = ledger.settled.keys().chain(ledger.failed.keys()).copied();
    shop.settled.lock().expect("not shared yet").extend(settled);
    shop.released.lock().expect("not shared yet").extend(ledger.released.keys().copied());

    let queue = QueueConfig {
        filter: Some(KeyPattern::new(CREATED)?),
        // Only lock timeouts and refused writes nack a payment; it is
        // retried rather than dead-lettered.
        max_attempts: 1000,
        ..QueueConfig::default()
    };
    let payment_worker = orders.worker_with(PAYMENT_GROUP, queue)?;
    let notifications = payments.subscribe(NOTIFICATION_GROUP)?;
    Ok(Opened { engine, shop: Arc::new(shop), payment_worker, notifications })
}

/// The catalog in `topic`, written from `config` by the first run.
fn catalog(topic: &Topic, config: &Config) -> Result<Catalog, BoxError> {
    if topic.info().next.get() == 0 {
        topic.publish_message(Catalog::new(config.skus, config.stock).message())?;
        topic.sync()?;
    }
    let first = ledger::records(topic).next().ok_or("the catalog topic is empty")??;
    Ok(Catalog::decode(first.payload()).ok_or("the catalog record does not parse")?)
}

/// Reads the ledger of the data directory `data_dir` (which no process
/// holds open), for checking a run after it stopped or was killed.
pub fn read_ledger(data_dir: &std::path::Path) -> Result<Ledger, BoxError> {
    let engine = Engine::open(data_dir)?;
    let first = ledger::records(&engine.topic(CATALOG)?).next().ok_or("no catalog: never started")??;
    let catalog = Catalog::decode(first.payload()).ok_or("the catalog record does not parse")?;
    Ok(Ledger::read(&catalog, &engine.topic(ORDERS)?, &engine.topic(PAYMENTS)?)?)
}
