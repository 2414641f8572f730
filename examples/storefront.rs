//! A flash sale in one process: tollgate's locks, durable topics and work
//! queues doing the jobs a storefront would otherwise give Redis and a broker.
//!
//! ```text
//!  buyers ──lock SKUs, reserve──▶ orders ──"payments" workers──▶ payments ──▶ "notifications"
//!    (lock_all + lease,            topic        │ transient failure: nack, retry later
//!     one atomic batch)                         │ declined, or out of attempts
//!                                               ▼
//!                                          orders.dlq ──"compensation"──▶ stock released,
//!                                                                        payment.failed
//! ```
//!
//! - **Buyers** order 1–3 distinct SKUs (a few are hot). Each order takes
//!   the SKUs' locks with [`Topic::transaction`] (all or none, a timeout, a
//!   lease per key), checks the stock, and publishes `stock.reserved` and
//!   `order.created` as one atomic batch before updating the stock. The stock
//!   counters use a separate load and store: only the locks keep two buyers
//!   from selling the same unit.
//! - **Payment workers** (a worker group on `orders`, filter
//!   `order.created`) charge each order. A share of attempts fails
//!   transiently (nack, retried after a delay) and a share is declined (a
//!   reject, straight to the dead-letter topic); an order that fails
//!   transiently on every attempt is dead-lettered too. A paid order gets a
//!   `payment.settled` record in `payments`, once, even when redelivered.
//! - **Compensation** (a subscription group on `orders.dlq`) releases the
//!   stock of every dead-lettered order, under the SKUs' locks, and publishes
//!   `payment.failed`.
//! - **Notifications** (a subscription group on `payments`) "send" a message
//!   per payment and measure order → notification latency.
//!
//! Nothing is kept only in memory: at start the stock, the order numbers and
//! what was already paid or released are rebuilt from the topics, so a run on
//! a kept `--data-dir` resumes after a `kill -9`. At the end the sale drains
//! (every order paid or dead-lettered, every payment notified) and the
//! invariants are checked over *every* run in the directory, from the logs:
//! nothing oversold, no order lost, each order paid or failed exactly once,
//! every failed order's stock released exactly once. The exit status is 1 if
//! any fails.
//!
//! ```text
//! cargo run --release --example storefront
//! cargo run --release --example storefront -- --buyers 16 --seconds 10 --durability sync
//! cargo run --release --example storefront -- --data-dir /tmp/sale --keep   # kill -9 it, run again
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tollgate::{
    Delivery, Durability, Engine, KeyPattern, LockError, LockManager, LockRequest, LockStats, Message, QueueConfig,
    Record, Topic, TopicConfig, TopicError, Worker,
};

/// The flash sale's settings (also its command line).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "storefront",
    about = "A flash sale in one process on tollgate: locked stock, durable orders, payment workers, dead letters.",
    long_about = "A flash sale in one process on tollgate.\n\n\
        Buyer threads lock 1-3 SKUs, reserve stock and publish the order atomically with the reservation. \
        Payment workers consume the orders, with injected transient failures (retried after a delay) and \
        declines (dead-lettered); dead-lettered orders release their stock; a notification group reads the \
        payments. At the end the sale drains and the invariants are checked over every run in the data \
        directory (nothing oversold, no order lost, each order paid or failed exactly once); the exit \
        status is 1 if any fails.\n\n\
        With --data-dir and --keep the data stays: run again on it (after a kill -9 too) and the sale resumes."
)]
pub struct Config {
    /// Buyer threads.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub buyers: u32,
    /// Payment worker threads (one worker group).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub payment_workers: u32,
    /// SKUs in the catalog (fixed by the first run in a data directory).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=SKUS_MAX as i64))]
    pub skus: u32,
    /// Units of stock per SKU at the start of the sale (fixed by the first run).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=STOCK_MAX))]
    pub stock: u64,
    /// Order attempts in total, over all buyers.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(0..=1_000_000_000))]
    pub orders: u64,
    /// Sell for this many seconds instead of a number of orders.
    #[arg(long, conflicts_with = "orders", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub seconds: Option<u64>,
    /// Lease on each SKU lock, in milliseconds; 0 takes the locks without one.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub lease_ms: u64,
    /// How long an order waits for all of its locks before giving up, in milliseconds.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub timeout_ms: u64,
    /// Simulated work done while holding an order's locks, in microseconds; it
    /// makes the hot SKUs contended.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub work_us: u64,
    /// Share of payment attempts that fail transiently (nacked, retried later).
    #[arg(long, default_value_t = 0.2, value_parser = share)]
    pub transient_failures: f64,
    /// Share of payment attempts that are declined (rejected: dead-lettered at once).
    #[arg(long, default_value_t = 0.02, value_parser = share)]
    pub declines: f64,
    /// Payment attempts an order gets before it is dead-lettered.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_attempts: u32,
    /// Delay before a transiently failed payment is retried, in milliseconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub retry_ms: u64,
    /// Durability of the orders and payments topics (fixed by the first run).
    #[arg(long, value_enum, default_value_t = DurabilityArg::Buffered)]
    pub durability: DurabilityArg,
    /// Where the data goes. Default: a fresh temporary directory, removed at
    /// the end unless --keep.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the temporary data directory (its path is printed).
    #[arg(long)]
    pub keep: bool,
    /// Longest wait for the sale to drain after the last order, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub drain_seconds: u64,
    /// Seed of the buyers' choices and of the payment outcomes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `--durability`: when a publish to `orders` and `payments` is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// In the page cache: survives a kill -9, not a power cut.
    Buffered,
    /// Synced every 10 ms in the background.
    Interval,
    /// Synced before the publish returns (group commit).
    Sync,
}

impl DurabilityArg {
    fn durability(self) -> Durability {
        match self {
            DurabilityArg::Buffered => Durability::Buffered,
            DurabilityArg::Interval => Durability::Interval(Duration::from_millis(10)),
            DurabilityArg::Sync => Durability::Sync,
        }
    }
}

/// Parses a share between 0 and 1.
fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("{text:?} is not a number between 0 and 1")),
    }
}

/// What can stop a sale before it starts or end it early: tollgate's
/// errors, or a data directory whose catalog cannot be read.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Most SKUs in a catalog, and most units of each.
const SKUS_MAX: u32 = 100_000;
const STOCK_MAX: u64 = 1_000_000_000;

// Topic, group and key names.
const CATALOG: &str = "catalog";
const ORDERS: &str = "orders";
const PAYMENTS: &str = "payments";
const DEAD_LETTERS: &str = "orders.dlq";
const PAYMENT_GROUP: &str = "payments";
const COMPENSATION_GROUP: &str = "compensation";
const NOTIFICATION_GROUP: &str = "notifications";
const RESERVED: &str = "stock.reserved";
const CREATED: &str = "order.created";
const RELEASED: &str = "stock.released";
const SETTLED: &str = "payment.settled";
const FAILED: &str = "payment.failed";
/// The dead-letter reason of a declined payment; any other reason means the
/// order ran out of attempts.
const DECLINED: &str = "declined";
const GATEWAY_TIMEOUT: &str = "gateway timeout";
/// How long a thread waits for work before it looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------
// Messages: small `name=value` texts, readable with `tollgate dump`.

/// One order line: a SKU and a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Line {
    sku: u32,
    quantity: u64,
}

/// What `stock.reserved`, `order.created`, `stock.released` and the
/// payment records say about an order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OrderMessage {
    order: u64,
    /// The run (1 for the first in the data directory) that placed it.
    run: u64,
    /// Wall-clock time the order was placed, in microseconds since the epoch.
    created_us: u64,
    lines: Vec<Line>,
}

impl OrderMessage {
    fn encode(&self) -> String {
        let lines: Vec<String> = self.lines.iter().map(|l| format!("{}x{}", l.sku, l.quantity)).collect();
        format!("order={} run={} created_us={} lines={}", self.order, self.run, self.created_us, lines.join(","))
    }

    fn decode(payload: &[u8]) -> Option<OrderMessage> {
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

    fn message(&self, key: &str) -> Message {
        Message::new(self.encode()).key(key)
    }
}

/// The catalog a data directory was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Catalog {
    skus: u32,
    /// Units of each SKU at the start of the sale.
    stock: u64,
}

impl Catalog {
    fn encode(self) -> String {
        format!("skus={} stock={}", self.skus, self.stock)
    }

    /// The catalog in `payload`, if it is one within the command line's ranges.
    fn decode(payload: &[u8]) -> Option<Catalog> {
        let text = std::str::from_utf8(payload).ok()?;
        let (skus, stock) = text.split_once(' ')?;
        let catalog = Catalog {
            skus: skus.strip_prefix("skus=")?.parse().ok()?,
            stock: stock.strip_prefix("stock=")?.parse().ok()?,
        };
        ((1..=SKUS_MAX).contains(&catalog.skus) && catalog.stock <= STOCK_MAX).then_some(catalog)
    }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn sku_key(sku: u32) -> String {
    format!("sku:{sku}")
}

// ---------------------------------------------------------------------------
// The ledger: what the topics say, read from the first record to the last.

/// Everything the logs record about the orders of every run. Read at start
/// (to rebuild the stock and what was already done) and at the end (to check
/// the invariants).
#[derive(Debug, Default)]
struct Ledger {
    /// `stock.reserved` records, by order.
    reserved: HashMap<u64, Vec<Line>>,
    /// `order.created` records: order → run.
    created: HashMap<u64, u64>,
    /// `order.created` records not directly preceded by their order's
    /// `stock.reserved` (the two are published as one atomic batch).
    unpaired: u64,
    /// `stock.released` records, by order, with how many times.
    released: HashMap<u64, (Vec<Line>, u64)>,
    /// `payment.settled` records: order → count.
    settled: HashMap<u64, u64>,
    /// `payment.failed` records: order → count.
    failed_notices: HashMap<u64, u64>,
    /// Dead letters: order → (declined, count).
    dead: HashMap<u64, (bool, u64)>,
    /// Records that do not parse, or name a SKU not in the catalog.
    malformed: u64,
    /// Order numbers reserved or created more than once.
    duplicate_orders: u64,
    /// Units left per SKU, applying reservations and releases in log order.
    balance: Vec<i128>,
    /// SKUs whose balance went below zero at some point of the log.
    oversold: HashSet<u32>,
    /// Highest order number seen.
    last_order: u64,
    /// Records in `payments` (for the notifications check).
    payments_end: u64,
}

impl Ledger {
    fn read(catalog: Catalog, orders: &Topic, payments: &Topic, dead_letters: &Topic) -> Result<Ledger, Error> {
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
fn records(topic: &Topic) -> Result<impl Iterator<Item = Result<Record, Error>> + '_, Error> {
    let info = topic.info();
    Ok((info.oldest.get()..info.next.get())
        .map(|offset| topic.read(tollgate::Offset::new(offset)).map_err(Error::from)))
}

// ---------------------------------------------------------------------------
// The shop: stock under locks, and the buyers.

/// One SKU's stock. Read and written with a separate load and store, with
/// the order's work in between: only the SKU's lock makes that safe.
struct Sku {
    key: String,
    stock: AtomicU64,
}

/// Counters the progress bar shows, updated by every thread.
#[derive(Default)]
struct Counters {
    attempts: AtomicU64,
    placed: AtomicU64,
    paid: AtomicU64,
    dead_lettered: AtomicU64,
    notified: AtomicU64,
    /// Compensation's lock releases that found a lease had run out.
    leases_expired: AtomicU64,
}

/// What the threads of a run share.
struct Shop<'a> {
    config: &'a Config,
    run: u64,
    locks: LockManager,
    catalog: Vec<Sku>,
    orders: Topic,
    payments: Topic,
    next_order: AtomicU64,
    counters: Counters,
    /// Orders with a `payment.settled` record (from the log, then this run).
    settled: Mutex<HashSet<u64>>,
    /// Orders whose stock was released (from the log, then this run).
    released: Mutex<HashSet<u64>>,
    /// Orders with a `payment.failed` record (from the log, then this run).
    failed_notices: Mutex<HashSet<u64>>,
    /// Set once no more orders will be placed.
    selling_done: AtomicBool,
    /// Set once the sale has drained: every thread stops.
    drained: AtomicBool,
    /// Where compensation has read (and done) up to.
    compensation_position: AtomicU64,
    /// Where notifications have read (and sent) up to.
    notification_position: AtomicU64,
    /// Unexpected errors, as messages (none should happen).
    errors: Mutex<Vec<String>>,
}

impl Shop<'_> {
    fn lock_request(&self) -> LockRequest {
        let request = LockRequest::exclusive().timeout(Duration::from_millis(self.config.timeout_ms));
        match self.config.lease_ms {
            0 => request,
            lease_ms => request.lease(Duration::from_millis(lease_ms)),
        }
    }

    fn error(&self, what: &str, error: impl fmt::Display) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 20 {
            errors.push(format!("{what}: {error}"));
        }
    }

    /// Adds `sign * quantity` of each line to the stock. Call with the
    /// lines' locks held.
    fn adjust_stock(&self, lines: &[Line], add: bool) {
        for line in lines {
            let Some(sku) = self.catalog.get(line.sku as usize) else { continue };
            let level = sku.stock.load(Ordering::Relaxed);
            let level = if add { level.checked_add(line.quantity) } else { level.checked_sub(line.quantity) };
            match level {
                Some(level) => sku.stock.store(level, Ordering::Relaxed),
                // Only a broken lock gets here (the level was checked under it).
                None => self.error("updating stock", format!("{} would go below zero", sku.key)),
            }
        }
    }
}

/// Tells every thread of the shop to stop, when dropped.
struct StopOnDrop<'a, 'c>(&'a Shop<'c>);

impl Drop for StopOnDrop<'_, '_> {
    fn drop(&mut self) {
        self.0.selling_done.store(true, Ordering::Relaxed);
        self.0.drained.store(true, Ordering::Relaxed);
    }
}

/// What one buyer saw.
struct BuyerLog {
    attempts: u64,
    /// Order numbers whose publish returned `Ok`.
    placed: Vec<u64>,
    out_of_stock: u64,
    timeouts: u64,
    leases_expired: u64,
    lock_wait_ns: Histogram<u64>,
}

/// A xorshift64* generator.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // A SplitMix64 step, so that nearby seeds give unrelated streams (never 0).
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0.0..1.0`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }
}

/// Zipf (s = 1) popularity: SKU 0 is the hottest.
struct Popularity {
    cumulative: Vec<f64>,
}

impl Popularity {
    fn new(skus: u32) -> Self {
        let mut total = 0.0;
        let mut cumulative: Vec<f64> = (1..=skus)
            .map(|rank| {
                total += 1.0 / f64::from(rank);
                total
            })
            .collect();
        cumulative.iter_mut().for_each(|c| *c /= total);
        Self { cumulative }
    }

    fn pick(&self, rng: &mut Rng) -> u32 {
        let index = self.cumulative.partition_point(|&c| c <= rng.unit());
        index.min(self.cumulative.len() - 1) as u32
    }
}

/// An empty latency histogram: 1 ns to 1 hour, 3 significant figures.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Busy-waits `duration` (a sleep would be far too coarse for microseconds).
fn work(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}

/// One buyer: places orders until the sale's order count (or time) is used up.
fn buyer(shop: &Shop, id: u32, popularity: &Popularity) -> BuyerLog {
    let config = shop.config;
    let mut rng = Rng::new(config.seed ^ shop.run.rotate_left(32) ^ u64::from(id).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut log = BuyerLog {
        attempts: 0,
        placed: Vec::new(),
        out_of_stock: 0,
        timeouts: 0,
        leases_expired: 0,
        lock_wait_ns: histogram(),
    };
    let work_time = Duration::from_micros(config.work_us);
    let max_lines = shop.catalog.len().min(3) as u64;
    loop {
        let ticket = shop.counters.attempts.fetch_add(1, Ordering::Relaxed);
        if shop.selling_done.load(Ordering::Relaxed) || (config.seconds.is_none() && ticket >= config.orders) {
            break;
        }
        log.attempts += 1;
        // 1-3 distinct SKUs, 1-2 units each.
        let mut lines: Vec<Line> = Vec::with_capacity(3);
        while lines.len() < 1 + rng.below(max_lines) as usize {
            let sku = popularity.pick(&mut rng);
            if !lines.iter().any(|line| line.sku == sku) {
                lines.push(Line { sku, quantity: 1 + rng.below(2) });
            }
        }
        let keys: Vec<&str> = lines.iter().map(|line| shop.catalog[line.sku as usize].key.as_str()).collect();

        let started = Instant::now();
        let tx = match shop.orders.transaction(&shop.locks, &keys, shop.lock_request()) {
            Ok(tx) => tx,
            Err(LockError::Timeout { .. }) => {
                log.timeouts += 1;
                continue;
            }
            Err(error) => {
                shop.error("locking an order's SKUs", error);
                continue;
            }
        };
        log.lock_wait_ns.saturating_record(started.elapsed().as_nanos() as u64);

        // Under the locks: read the stock, do the work, check, reserve.
        let levels: Vec<u64> =
            lines.iter().map(|line| shop.catalog[line.sku as usize].stock.load(Ordering::Relaxed)).collect();
        work(work_time);
        if lines.iter().zip(&levels).any(|(line, &level)| level < line.quantity) {
            log.out_of_stock += 1;
            continue; // dropping `tx` publishes nothing and releases the locks
        }
        let order = OrderMessage {
            order: shop.next_order.fetch_add(1, Ordering::Relaxed),
            run: shop.run,
            created_us: now_us(),
            lines,
        };
        let held = match tx.commit([order.message(RESERVED), order.message(CREATED)]) {
            Ok((_, held)) => held,
            Err(error) => {
                shop.error("publishing an order", error);
                continue;
            }
        };
        shop.adjust_stock(&order.lines, false);
        log.placed.push(order.order);
        shop.counters.placed.fetch_add(1, Ordering::Relaxed);
        match held.release() {
            Ok(()) => {}
            Err(LockError::LeaseExpired) => log.leases_expired += 1,
            Err(error) => shop.error("releasing an order's SKUs", error),
        }
    }
    log
}

// ---------------------------------------------------------------------------
// Payments, compensation, notifications.

/// What a payment attempt does, decided by the order and the attempt alone,
/// so that a rerun of the same directory sees the same outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charge {
    Paid,
    TransientFailure,
    Declined,
}

fn charge(config: &Config, order: u64, attempt: u32) -> Charge {
    let roll = Rng::new(config.seed ^ order.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(attempt)).unit();
    if roll < config.declines {
        Charge::Declined
    } else if roll < config.declines + config.transient_failures {
        Charge::TransientFailure
    } else {
        Charge::Paid
    }
}

/// One payment worker: charges orders until the sale has drained.
fn payment_worker(shop: &Shop, worker: &Worker) {
    while !shop.drained.load(Ordering::Relaxed) {
        match worker.receive(POLL) {
            Ok(Some(delivery)) => charge_order(shop, delivery),
            Ok(None) => {}
            Err(error) => {
                shop.error("receiving a payment", error);
                thread::sleep(POLL);
            }
        }
    }
}

/// Charges the order of `delivery` and settles the delivery: ack once its
/// payment is recorded, nack on a transient failure, reject if declined.
///
/// An order is charged at most once, however often it is delivered (a
/// restart between publishing its payment and the ack delivers it again),
/// and never after it failed (a dead letter published just before a crash
/// is published again, but a run with a higher `--max-attempts` delivers
/// the order again instead): under the order's lock, an order already paid
/// or compensated is only acked.
fn charge_order(shop: &Shop, delivery: Delivery) {
    let Some(order) = OrderMessage::decode(delivery.payload()) else {
        return settle(shop, delivery.reject("malformed order"));
    };
    let guard = match shop.locks.lock(&format!("order:{}", order.order)) {
        Ok(guard) => guard,
        Err(error) => return shop.error("locking an order", error),
    };
    let done = |set: &Mutex<HashSet<u64>>| set.lock().unwrap().contains(&order.order);
    if done(&shop.settled) || done(&shop.released) {
        drop(guard);
        return settle(shop, delivery.ack());
    }
    match charge(shop.config, order.order, delivery.attempt()) {
        Charge::Paid => {
            if let Err(error) = shop.payments.publish_message(order.message(SETTLED)) {
                // The delivery is dropped: it goes back, to be tried again.
                return shop.error("publishing a payment", error);
            }
            shop.settled.lock().unwrap().insert(order.order);
            shop.counters.paid.fetch_add(1, Ordering::Relaxed);
            drop(guard);
            settle(shop, delivery.ack());
        }
        Charge::TransientFailure => {
            if delivery.attempt() >= shop.config.max_attempts {
                shop.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
            }
            settle(shop, delivery.nack(Duration::from_millis(shop.config.retry_ms), GATEWAY_TIMEOUT));
        }
        Charge::Declined => {
            shop.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
            settle(shop, delivery.reject(DECLINED));
        }
    }
}

fn settle(shop: &Shop, settled: Result<(), tollgate::QueueError>) {
    if let Err(error) = settled {
        shop.error("settling a payment", error);
    }
}

/// Compensation: releases the stock of every dead-lettered order (once) and
/// tells the customer (once), then commits its position.
fn compensation(shop: &Shop, dead_letters: &Topic) {
    let mut subscription = match dead_letters.subscribe(COMPENSATION_GROUP) {
        Ok(subscription) => subscription,
        Err(error) => return shop.error("subscribing to the dead letters", error),
    };
    while !shop.drained.load(Ordering::Relaxed) {
        shop.compensation_position.store(subscription.position().get(), Ordering::Release);
        let record = match subscription.next_timeout(POLL) {
            Ok(Some(record)) => record,
            Ok(None) => continue,
            Err(error) => {
                shop.error("reading the dead letters", error);
                thread::sleep(POLL);
                continue;
            }
        };
        match OrderMessage::decode(record.payload()) {
            Some(order) if compensate(shop, &order) => {}
            Some(_) => {
                // Not done: read it again.
                let _ = subscription.seek(record.offset());
                thread::sleep(POLL);
                continue;
            }
            None => shop.error("a dead letter", "not an order"),
        }
        if let Err(error) = subscription.commit() {
            shop.error("committing compensation", error);
        }
    }
}

/// Releases `order`'s stock and publishes its `payment.failed`, each unless
/// already done. Returns whether both are done.
///
/// An order can be dead-lettered after it was paid: a crash between its
/// payment and the ack loses the ack, and if that was its last attempt the
/// group dead-letters it on restart. Such an order keeps its payment and its
/// stock; its dead letter is only counted.
fn compensate(shop: &Shop, order: &OrderMessage) -> bool {
    let _order_lock = match shop.locks.lock(&format!("order:{}", order.order)) {
        Ok(guard) => guard,
        Err(error) => {
            shop.error("locking a failed order", error);
            return false;
        }
    };
    if shop.settled.lock().unwrap().contains(&order.order) {
        return true;
    }
    if !shop.released.lock().unwrap().contains(&order.order) {
        let keys: Vec<String> = order.lines.iter().map(|line| sku_key(line.sku)).collect();
        let tx = match shop.orders.transaction(&shop.locks, &keys, shop.lock_request()) {
            Ok(tx) => tx,
            Err(LockError::Timeout { .. }) => return false,
            Err(error) => {
                shop.error("locking a failed order's SKUs", error);
                return false;
            }
        };
        let held = match tx.commit([order.message(RELEASED)]) {
            Ok((_, held)) => held,
            Err(error) => {
                shop.error("releasing stock", error);
                return false;
            }
        };
        shop.adjust_stock(&order.lines, true);
        shop.released.lock().unwrap().insert(order.order);
        match held.release() {
            Ok(()) => {}
            Err(LockError::LeaseExpired) => _ = shop.counters.leases_expired.fetch_add(1, Ordering::Relaxed),
            Err(error) => shop.error("releasing a failed order's SKUs", error),
        }
    }
    if !shop.failed_notices.lock().unwrap().contains(&order.order) {
        if let Err(error) = shop.payments.publish_message(order.message(FAILED)) {
            shop.error("publishing a failed payment", error);
            return false;
        }
        shop.failed_notices.lock().unwrap().insert(order.order);
    }
    true
}

/// Notifications: one message "sent" per payment record; measures order →
/// notification latency for this run's orders. Commits every 100 ms, so a
/// crash may send a few notifications twice (at least once).
fn notifications(shop: &Shop, latency_us: &Mutex<Histogram<u64>>) {
    let mut subscription = match shop.payments.subscribe(NOTIFICATION_GROUP) {
        Ok(subscription) => subscription,
        Err(error) => return shop.error("subscribing to payments", error),
    };
    let mut latencies = histogram();
    let mut last_commit = Instant::now();
    loop {
        let drained = shop.drained.load(Ordering::Relaxed);
        if drained || last_commit.elapsed() >= Duration::from_millis(100) {
            if subscription.position() != subscription.committed()
                && let Err(error) = subscription.commit()
            {
                shop.error("committing notifications", error);
            }
            last_commit = Instant::now();
        }
        shop.notification_position.store(subscription.position().get(), Ordering::Release);
        if drained {
            break;
        }
        match subscription.next_timeout(POLL) {
            Ok(Some(record)) => match OrderMessage::decode(record.payload()) {
                Some(order) => {
                    if order.run == shop.run {
                        latencies.saturating_record(now_us().saturating_sub(order.created_us).max(1));
                    }
                    shop.counters.notified.fetch_add(1, Ordering::Relaxed);
                }
                None => shop.error("a payment record", "not an order"),
            },
            Ok(None) => {}
            Err(error) => {
                shop.error("reading payments", error);
                thread::sleep(POLL);
            }
        }
    }
    latency_us.lock().unwrap().add(&latencies).expect("histograms with the same bounds merge");
}

// ---------------------------------------------------------------------------
// The report.

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

/// The outcome of a run.
#[derive(Debug)]
pub struct Report {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Whether the data directory stays after the run.
    pub kept: bool,
    /// This run's number (1 for the first run in the directory).
    pub run: u64,
    /// Order attempts made by this run's buyers.
    pub attempts: u64,
    /// Simulated work each attempt does under its locks (`--work-us`).
    pub work_us: u64,
    /// Orders this run's buyers placed.
    pub placed: u64,
    /// Attempts turned away because a line was out of stock.
    pub out_of_stock: u64,
    /// Attempts that gave up waiting for their locks.
    pub lock_timeouts: u64,
    /// Lock releases (of buyers and compensation) that found a lease had run out.
    pub leases_expired: u64,
    /// Payments published by this run (including for orders earlier runs placed).
    pub paid_now: u64,
    /// Orders dead-lettered by this run.
    pub dead_lettered_now: u64,
    /// Payment attempts after an order's first, in this run.
    pub redelivered: u64,
    /// Payment deliveries whose visibility timeout passed, in this run.
    pub timed_out: u64,
    /// Notifications sent by this run.
    pub notified: u64,
    /// Time spent selling.
    pub selling: Duration,
    /// Time spent draining after the last order.
    pub draining: Duration,
    /// Lock wait of the orders' SKU locks, in nanoseconds.
    pub lock_wait_ns: Histogram<u64>,
    /// Order → notification latency of this run's orders, in microseconds.
    pub notification_us: Histogram<u64>,
    /// The lock manager after the sale.
    pub locks: LockStats,
    /// Runs started in this directory, this one included.
    pub runs: u64,
    /// Orders placed by every run.
    pub orders_total: u64,
    /// Orders paid, over every run.
    pub paid_total: u64,
    /// Orders failed (payment declined, dead-lettered at once), over every run.
    pub failed_total: u64,
    /// Orders dead-lettered after running out of attempts, over every run.
    pub dead_lettered_total: u64,
    /// Dead letters published twice for one order (a crash between
    /// publishing one and recording it), absorbed by compensation.
    pub duplicate_dead_letters: u64,
    /// Paid orders that were dead-lettered too: a crash lost the ack of
    /// their last attempt. They keep their payment and their stock.
    pub dead_letters_of_paid_orders: u64,
    /// Units of stock at the start of the sale.
    pub units_initial: u64,
    /// Units sold: reserved and not released, over every run.
    pub units_sold: u64,
    /// The invariants checked.
    pub invariants: Invariants,
}

impl Report {
    /// The invariants that failed, as messages; empty if all hold.
    pub fn failures(&self) -> Vec<String> {
        let i = &self.invariants;
        let mut failures = Vec::new();
        let mut check = |count: u64, what: &str| {
            if count != 0 {
                failures.push(format!("{what}: {count}"));
            }
        };
        check(i.oversold, "oversold SKUs");
        check(i.duplicate_orders, "order numbers used twice");
        check(i.leases_expired, "leases that ran out while an order held its locks");
        check(i.books_out_of_balance, "SKUs whose stock disagrees with the log");
        check(i.lost_orders, "lost orders");
        check(i.settled_twice, "orders settled more than once");
        check(i.stock_not_released_once, "failed orders whose stock was not released exactly once");
        check(i.unnotified, "payments not notified");
        check(i.unknown_records, "records of unknown orders, or malformed");
        if !i.errors.is_empty() {
            failures.push(format!("unexpected errors: {}", i.errors.join("; ")));
        }
        failures
    }

    /// Orders placed per second of selling, in this run.
    pub fn orders_per_second(&self) -> f64 {
        self.placed as f64 / self.selling.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let percentiles = |h: &Histogram<u64>, scale: f64, unit: &str| {
            if h.is_empty() {
                return "none".to_owned();
            }
            let at = |q: f64| h.value_at_quantile(q) as f64 / scale;
            format!(
                "p50 {:.1} {unit}, p99 {:.1} {unit}, p99.9 {:.1} {unit}, max {:.1} {unit}",
                at(0.5),
                at(0.99),
                at(0.999),
                h.max() as f64 / scale
            )
        };
        let seconds = self.selling.as_secs_f64();
        writeln!(f, "flash sale, run {} in {}", self.run, self.data_dir.display())?;
        writeln!(
            f,
            "  order attempts:        {} in {seconds:.2} s ({:.0}/s; each holds its SKU locks for {} us of work)",
            self.attempts,
            self.attempts as f64 / seconds.max(1e-9),
            self.work_us
        )?;
        writeln!(f, "  orders placed:         {} ({:.0} orders/s)", self.placed, self.orders_per_second())?;
        writeln!(
            f,
            "  turned away:           {} out of stock, {} lock timeouts",
            self.out_of_stock, self.lock_timeouts
        )?;
        writeln!(
            f,
            "  payments:              {} paid, {} dead-lettered; {} retried attempts, {} timed out",
            self.paid_now, self.dead_lettered_now, self.redelivered, self.timed_out
        )?;
        writeln!(f, "  notifications sent:    {}", self.notified)?;
        writeln!(f, "  drained in:            {:.2} s", self.draining.as_secs_f64())?;
        writeln!(f, "  lock wait:             {}", percentiles(&self.lock_wait_ns, 1000.0, "us"))?;
        writeln!(f, "  order -> notification: {}", percentiles(&self.notification_us, 1000.0, "ms"))?;
        let l = &self.locks;
        writeln!(
            f,
            "  lock manager:          {} grants, {} contended, {} timeouts, {} leases expired, {} held",
            l.grants, l.contended, l.timeouts, self.leases_expired, l.held
        )?;
        writeln!(f, "all runs in this directory ({}):", self.runs)?;
        writeln!(
            f,
            "  orders:                {} placed = {} paid + {} failed (declined) + {} dead-lettered (out of attempts)",
            self.orders_total, self.paid_total, self.failed_total, self.dead_lettered_total
        )?;
        writeln!(f, "  units sold:            {} of {}", self.units_sold, self.units_initial)?;
        writeln!(
            f,
            "  dead letters absorbed: {} duplicates, {} of paid orders (acks lost in a crash)",
            self.duplicate_dead_letters, self.dead_letters_of_paid_orders
        )?;
        let i = &self.invariants;
        writeln!(f, "invariants:")?;
        writeln!(f, "  oversold: {}", i.oversold)?;
        writeln!(f, "  order numbers used twice: {}", i.duplicate_orders)?;
        writeln!(f, "  leases run out under an order: {}", i.leases_expired)?;
        writeln!(f, "  stock out of balance with the log: {}", i.books_out_of_balance)?;
        writeln!(f, "  lost orders: {}", i.lost_orders)?;
        writeln!(f, "  settled more than once: {}", i.settled_twice)?;
        writeln!(f, "  failed orders not released exactly once: {}", i.stock_not_released_once)?;
        writeln!(f, "  payments not notified: {}", i.unnotified)?;
        writeln!(f, "  unknown or malformed records: {}", i.unknown_records)?;
        writeln!(f, "  unexpected errors: {}", i.errors.len())?;
        if self.failures().is_empty() { write!(f, "all invariants hold") } else { write!(f, "INVARIANTS FAILED") }
    }
}

// ---------------------------------------------------------------------------
// Running a sale.

/// How far a running sale is, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Order attempts started (may pass the total by the number of buyers).
    pub attempts: u64,
    /// Orders placed.
    pub placed: u64,
    /// Payments published.
    pub paid: u64,
    /// Orders dead-lettered.
    pub dead_lettered: u64,
    /// Notifications sent.
    pub notified: u64,
    /// Time since the sale started.
    pub elapsed: Duration,
    /// Selling is over; the payments are draining.
    pub draining: bool,
}

/// Opens the topic `name`, creating it with `config` if it does not exist.
fn topic(engine: &Engine, name: &str, config: TopicConfig) -> Result<Topic, Error> {
    match engine.create_topic(name, config) {
        Err(TopicError::AlreadyExists { .. }) => Ok(engine.topic(name)?),
        created => Ok(created?),
    }
}

/// The catalog of the directory, written by its first run, and this run's
/// number: the `catalog` topic holds the catalog, then one `run` record per
/// run started (so a run that placed no order still gets a number).
fn catalog(engine: &Engine, config: &Config) -> Result<(Catalog, u64), Error> {
    let topic = topic(engine, CATALOG, TopicConfig { durability: Durability::Sync, ..TopicConfig::default() })?;
    let mut records = records(&topic)?;
    let catalog = match records.next() {
        Some(record) => Catalog::decode(record?.payload())
            .ok_or("the catalog topic holds no valid catalog (1 to 100000 SKUs, at most 1000000000 units each)")?,
        None => {
            let catalog = Catalog { skus: config.skus, stock: config.stock };
            topic.publish(catalog.encode())?;
            catalog
        }
    };
    let run = records.count() as u64 + 1;
    topic.publish(format!("run={run}"))?;
    Ok((catalog, run))
}

/// Runs the sale `config` describes, calling `progress` about ten times a
/// second, and checks the invariants over every run in the data directory.
pub fn run(config: &Config, progress: &mut dyn FnMut(&Progress)) -> Result<Report, Error> {
    let temporary = match &config.data_dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("storefront-").tempdir()?),
    };
    let data_dir = config.data_dir.clone().unwrap_or_else(|| temporary.as_ref().unwrap().path().to_path_buf());
    let report = sale(config, &data_dir, progress);
    let kept = temporary.is_none() || config.keep;
    if let Some(temporary) = temporary
        && config.keep
    {
        let _ = temporary.keep();
    }
    report.map(|report| Report { kept, ..report })
}

fn sale(config: &Config, data_dir: &std::path::Path, progress: &mut dyn FnMut(&Progress)) -> Result<Report, Error> {
    let engine = Engine::open(data_dir)?;
    let (catalog, run) = catalog(&engine, config)?;
    let (skus, stock) = (catalog.skus, catalog.stock);
    let durable = TopicConfig { durability: config.durability.durability(), ..TopicConfig::default() };
    let orders = topic(&engine, ORDERS, durable)?;
    let payments = topic(&engine, PAYMENTS, durable)?;
    let worker = orders.worker_with(
        PAYMENT_GROUP,
        QueueConfig {
            visibility_timeout: Duration::from_secs(10),
            max_attempts: config.max_attempts,
            dead_letter_topic: Some(DEAD_LETTERS.to_owned()),
            filter: Some(KeyPattern::new(CREATED).expect("a valid key pattern")),
            ..QueueConfig::default()
        },
    )?;
    let dead_letters = engine.topic(DEAD_LETTERS)?;

    // What earlier runs left: the stock and the order numbers from the ledger.
    let before = Ledger::read(catalog, &orders, &payments, &dead_letters)?;
    let shop = Shop {
        config,
        run,
        locks: LockManager::new(),
        catalog: (0..skus)
            .map(|sku| Sku {
                key: sku_key(sku),
                stock: AtomicU64::new(u64::try_from(before.balance[sku as usize].max(0)).unwrap_or(u64::MAX)),
            })
            .collect(),
        orders,
        payments,
        next_order: AtomicU64::new(before.last_order + 1),
        counters: Counters::default(),
        settled: Mutex::new(before.settled.keys().copied().collect()),
        released: Mutex::new(before.released.keys().copied().collect()),
        failed_notices: Mutex::new(before.failed_notices.keys().copied().collect()),
        selling_done: AtomicBool::new(false),
        drained: AtomicBool::new(false),
        compensation_position: AtomicU64::new(0),
        notification_position: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
    };
    let popularity = Popularity::new(skus);
    let notification_us = Mutex::new(histogram());

    let started = Instant::now();
    let mut selling = Duration::ZERO;
    let mut drain_timed_out = false;
    let buyer_logs: Vec<BuyerLog> = thread::scope(|s| {
        let shop = &shop;
        // Stops every thread when this closure ends, by a panic too (of the
        // `progress` callback, say): the scope then joins them.
        let _stop = StopOnDrop(shop);
        for _ in 0..config.payment_workers {
            let worker = worker.clone();
            s.spawn(move || payment_worker(shop, &worker));
        }
        s.spawn(|| compensation(shop, &dead_letters));
        s.spawn(|| notifications(shop, &notification_us));
        let buyers: Vec<_> = (0..config.buyers)
            .map(|id| {
                s.spawn({
                    let popularity = &popularity;
                    move || buyer(shop, id, popularity)
                })
            })
            .collect();

        let snapshot = |draining| Progress {
            attempts: shop.counters.attempts.load(Ordering::Relaxed),
            placed: shop.counters.placed.load(Ordering::Relaxed),
            paid: shop.counters.paid.load(Ordering::Relaxed),
            dead_lettered: shop.counters.dead_lettered.load(Ordering::Relaxed),
            notified: shop.counters.notified.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
            draining,
        };
        // Selling: until the buyers are done (the clock stops them in timed mode).
        while !buyers.iter().all(|buyer| buyer.is_finished()) {
            thread::sleep(Duration::from_millis(100));
            if config.seconds.is_some_and(|seconds| started.elapsed() >= Duration::from_secs(seconds)) {
                shop.selling_done.store(true, Ordering::Relaxed);
            }
            progress(&snapshot(false));
        }
        shop.selling_done.store(true, Ordering::Relaxed);
        let logs: Vec<BuyerLog> = buyers.into_iter().map(|b| b.join().expect("a buyer thread panicked")).collect();
        selling = started.elapsed();

        // Draining: until every order is settled, every dead letter
        // compensated and every payment notified, each stage checked after
        // the one that feeds it.
        let deadline = Instant::now() + Duration::from_secs(config.drain_seconds);
        loop {
            let quiet = worker.metrics().lag == 0
                && shop.compensation_position.load(Ordering::Acquire) >= dead_letters.info().next.get()
                && shop.notification_position.load(Ordering::Acquire) >= shop.payments.info().next.get();
            if quiet || Instant::now() >= deadline {
                drain_timed_out = !quiet;
                break;
            }
            progress(&snapshot(true));
            thread::sleep(Duration::from_millis(20));
        }
        shop.drained.store(true, Ordering::Relaxed);
        logs
    });
    let draining = started.elapsed() - selling;
    let metrics = worker.metrics();
    drop(worker);

    // The books: merge what the buyers saw, then read the whole ledger again.
    let mut lock_wait_ns = histogram();
    let (mut attempts, mut out_of_stock, mut lock_timeouts, mut leases_expired) = (0, 0, 0, 0);
    let mut placed = Vec::new();
    for log in buyer_logs {
        lock_wait_ns.add(&log.lock_wait_ns).expect("histograms with the same bounds merge");
        attempts += log.attempts;
        out_of_stock += log.out_of_stock;
        lock_timeouts += log.timeouts;
        leases_expired += log.leases_expired;
        placed.extend(log.placed);
    }
    leases_expired += shop.counters.leases_expired.load(Ordering::Relaxed);
    let after = Ledger::read(catalog, &shop.orders, &shop.payments, &dead_letters)?;
    let mut errors = std::mem::take(&mut *shop.errors.lock().unwrap());
    if drain_timed_out {
        errors.push(format!("the sale did not drain within {} s", config.drain_seconds));
    }
    let invariants = check(&shop, &after, &placed, leases_expired, errors);
    let units_initial = stock * u64::from(skus);
    let units_left: i128 = after.balance.iter().sum();
    let failed = |declined: bool| {
        let unpaid = |order: &u64| !after.settled.contains_key(order);
        after.dead.iter().filter(|(order, (d, _))| *d == declined && unpaid(order)).count() as u64
    };
    Ok(Report {
        data_dir: data_dir.to_path_buf(),
        kept: true,
        run: shop.run,
        attempts,
        work_us: config.work_us,
        placed: placed.len() as u64,
        out_of_stock,
        lock_timeouts,
        leases_expired,
        paid_now: shop.counters.paid.load(Ordering::Relaxed),
        dead_lettered_now: metrics.dead_lettered,
        redelivered: metrics.redelivered,
        timed_out: metrics.timed_out,
        notified: shop.counters.notified.load(Ordering::Relaxed),
        selling,
        draining,
        lock_wait_ns,
        notification_us: notification_us.into_inner().unwrap(),
        locks: shop.locks.stats(),
        runs: run,
        orders_total: after.created.len() as u64,
        paid_total: after.settled.len() as u64,
        failed_total: failed(true),
        dead_lettered_total: failed(false),
        duplicate_dead_letters: after.dead.values().map(|(_, n)| n - 1).sum(),
        dead_letters_of_paid_orders: after.dead.keys().filter(|order| after.settled.contains_key(order)).count() as u64,
        units_initial,
        units_sold: (i128::from(units_initial) - units_left).max(0) as u64,
        invariants,
    })
}

/// Checks the invariants of the ledger `after` (every run), and of this run's
/// placed orders and in-memory stock.
fn check(shop: &Shop, after: &Ledger, placed: &[u64], leases_expired: u64, errors: Vec<String>) -> Invariants {
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

// ---------------------------------------------------------------------------
// The command line.

/// A progress bar on stderr (hidden when quiet or not on a terminal).
fn progress_bar(config: &Config) -> ProgressBar {
    let length = config.seconds.map_or(config.orders, |seconds| seconds * 1000);
    let bar = ProgressBar::new(length);
    if config.quiet || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}") {
        bar.set_style(style);
    }
    bar
}

#[allow(dead_code)] // unused when a test includes this file as a module
fn main() -> ExitCode {
    let config = Config::parse();
    let bar = progress_bar(&config);
    let mut show = |p: &Progress| {
        let rate = p.placed as f64 / p.elapsed.as_secs_f64().max(1e-9);
        match (p.draining, config.seconds) {
            (true, _) => bar.set_message(format!(
                "draining: {} paid, {} dead-lettered, {} notified",
                p.paid, p.dead_lettered, p.notified
            )),
            (false, seconds) => {
                let position = match seconds {
                    Some(seconds) => (p.elapsed.as_millis() as u64).min(seconds * 1000),
                    None => p.attempts.min(config.orders),
                };
                bar.set_position(position);
                bar.set_message(format!(
                    "{} orders, {rate:.0}/s; {} paid, {} dead-lettered",
                    p.placed, p.paid, p.dead_lettered
                ));
            }
        }
    };
    let report = run(&config, &mut show);
    bar.finish_and_clear();
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            eprintln!("storefront: {error}");
            return ExitCode::from(2);
        }
    };
    println!("{report}");
    if report.kept {
        println!("data kept in {}", report.data_dir.display());
    }
    let failures = report.failures();
    if failures.is_empty() {
        return ExitCode::SUCCESS;
    }
    for failure in &failures {
        eprintln!("storefront: invariant failed: {failure}");
    }
    ExitCode::FAILURE
}
