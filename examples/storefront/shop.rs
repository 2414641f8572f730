//! The shop: stock under locks, and the buyers (with the example's xorshift
//! `Rng`, which the payment outcomes use too).

use std::collections::HashSet;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tollgate::{LockError, LockManager, LockRequest, Topic};

use super::Config;
use super::messages::{CREATED, Line, OrderMessage, RESERVED, now_us};

/// One SKU's stock. Read and written with a separate load and store, with
/// the order's work in between: only the SKU's lock makes that safe.
pub(super) struct Sku {
    pub(super) key: String,
    pub(super) stock: AtomicU64,
}

/// Counters the progress bar shows, updated by every thread.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) attempts: AtomicU64,
    pub(super) placed: AtomicU64,
    pub(super) paid: AtomicU64,
    pub(super) dead_lettered: AtomicU64,
    pub(super) notified: AtomicU64,
    /// Compensation's lock releases that found a lease had run out.
    pub(super) leases_expired: AtomicU64,
}

/// What the threads of a run share.
pub(super) struct Shop<'a> {
    pub(super) config: &'a Config,
    pub(super) run: u64,
    pub(super) locks: LockManager,
    pub(super) catalog: Vec<Sku>,
    pub(super) orders: Topic,
    pub(super) payments: Topic,
    pub(super) next_order: AtomicU64,
    pub(super) counters: Counters,
    /// Orders with a `payment.settled` record (from the log, then this run).
    pub(super) settled: Mutex<HashSet<u64>>,
    /// Orders whose stock was released (from the log, then this run).
    pub(super) released: Mutex<HashSet<u64>>,
    /// Orders with a `payment.failed` record (from the log, then this run).
    pub(super) failed_notices: Mutex<HashSet<u64>>,
    /// Set once no more orders will be placed.
    pub(super) selling_done: AtomicBool,
    /// Set once the sale has drained: every thread stops.
    pub(super) drained: AtomicBool,
    /// Where compensation has read (and done) up to.
    pub(super) compensation_position: AtomicU64,
    /// Where notifications have read (and sent) up to.
    pub(super) notification_position: AtomicU64,
    /// Unexpected errors, as messages (none should happen).
    pub(super) errors: Mutex<Vec<String>>,
}

impl Shop<'_> {
    pub(super) fn lock_request(&self) -> LockRequest {
        let request = LockRequest::exclusive().timeout(Duration::from_millis(self.config.timeout_ms));
        match self.config.lease_ms {
            0 => request,
            lease_ms => request.lease(Duration::from_millis(lease_ms)),
        }
    }

    pub(super) fn error(&self, what: &str, error: impl fmt::Display) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 20 {
            errors.push(format!("{what}: {error}"));
        }
    }

    /// Adds `sign * quantity` of each line to the stock. Call with the
    /// lines' locks held.
    pub(super) fn adjust_stock(&self, lines: &[Line], add: bool) {
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
pub(super) struct StopOnDrop<'a, 'c>(pub(super) &'a Shop<'c>);

impl Drop for StopOnDrop<'_, '_> {
    fn drop(&mut self) {
        self.0.selling_done.store(true, Ordering::Relaxed);
        self.0.drained.store(true, Ordering::Relaxed);
    }
}

/// What one buyer saw.
pub(super) struct BuyerLog {
    pub(super) attempts: u64,
    /// Order numbers whose publish returned `Ok`.
    pub(super) placed: Vec<u64>,
    pub(super) out_of_stock: u64,
    pub(super) timeouts: u64,
    pub(super) leases_expired: u64,
    pub(super) lock_wait_ns: Histogram<u64>,
}

/// A xorshift64* generator.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
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
    pub(super) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }
}

/// Zipf (s = 1) popularity: SKU 0 is the hottest.
pub(super) struct Popularity {
    cumulative: Vec<f64>,
}

impl Popularity {
    pub(super) fn new(skus: u32) -> Self {
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
pub(super) fn histogram() -> Histogram<u64> {
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
pub(super) fn buyer(shop: &Shop, id: u32, popularity: &Popularity) -> BuyerLog {
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
    // The buyer's locks belong to this session, not to its thread.
    let session = shop.locks.session();
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
        let tx = match shop.orders.transaction(&session, &keys, shop.lock_request()) {
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
