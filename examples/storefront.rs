//! A flash sale in one process, kept honest by tollgate's lock manager alone.
//!
//! Buyer threads race to order from a catalog of SKUs with limited stock.
//! Each order takes 1-3 distinct SKUs (popularity is Zipf-skewed, so a few
//! SKUs are hot): it locks them all, checks every line is in stock, decrements
//! the stock, records the order with the fencing tokens of its grants, and
//! releases. Stock counters are plain `AtomicU64`s updated with a *separate*
//! load and store, so nothing but the tollgate locks stops two buyers from
//! selling the same unit: a broken lock shows up as oversold stock.
//!
//! What it demonstrates:
//! - all-or-nothing multi-key locking with a timeout and a lease per key
//!   ([`LockManager::acquire_all`]; `--lease-ms 0` for no lease);
//! - fencing tokens: every SKU's "storage" remembers the highest token that
//!   wrote to it and refuses any write with a token that is not higher;
//! - lock-wait latency (an HDR histogram) and [`LockManager::stats`].
//!
//! At the end it checks the invariants (nothing oversold, no order lost, no
//! stale token accepted, no lock left held) and exits with status 1 if any
//! fails.
//!
//! Only the lock manager is used: tollgate's durable queue does not exist
//! yet, so orders are recorded in memory, per buyer thread.
//!
//! ```text
//! cargo run --release --example storefront
//! cargo run --release --example storefront -- --buyers 16 --seconds 5 --lease-ms 0
//! ```

use std::fmt;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tollgate::{FencingToken, LockError, LockManager, LockRequest, LockSet, LockStats};

/// The flash sale's settings (also its command line).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "storefront",
    about = "A flash sale in one process, using only tollgate's lock manager.",
    long_about = "A flash sale in one process, using only tollgate's lock manager.\n\n\
        Buyer threads order 1-3 distinct SKUs at a time from a catalog with limited stock; \
        stock is guarded by nothing but tollgate locks. At the end the invariants are checked \
        (nothing oversold, no order lost, no stale fencing token accepted, no lock left held); \
        the exit status is 1 if any fails.\n\n\
        The durable queue does not exist yet: orders are kept in memory."
)]
pub struct Config {
    /// Buyer threads.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub buyers: u32,
    /// SKUs in the catalog.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub skus: u32,
    /// Units of stock per SKU at the start of the sale.
    #[arg(long, default_value_t = 200)]
    pub stock: u64,
    /// Order attempts in total, over all buyers.
    #[arg(long, default_value_t = 200_000)]
    pub orders: u64,
    /// Run for this many seconds instead of a number of orders.
    #[arg(long, conflicts_with = "orders", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub seconds: Option<u64>,
    /// Lease on each SKU lock, in milliseconds; 0 takes the locks without a
    /// lease.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    pub lease_ms: u64,
    /// How long an order waits for all of its locks before giving up, in
    /// milliseconds.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub timeout_ms: u64,
    /// Simulated work (checking and reserving stock) done while holding an
    /// order's locks, in microseconds; it makes the hot SKUs contended.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub work_us: u64,
    /// Seed of the buyers' random choices.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// One SKU: its stock and its "storage", which refuses stale fencing tokens.
///
/// `stock` and `sold` are deliberately updated with a separate load and store
/// (not `fetch_sub`), with the order's work in between for `stock`: only the
/// SKU's lock makes that read-modify-write safe.
struct Sku {
    key: String,
    stock: AtomicU64,
    sold: AtomicU64,
    /// The highest fencing token that wrote to this SKU.
    highest_token: AtomicU64,
}

impl Sku {
    /// Admits a write fenced by `token`: refused unless `token` is higher than
    /// every token seen before (each grant has its own token, so a repeat is
    /// stale too). Atomic by itself, as a storage service would be.
    fn admit(&self, token: FencingToken) -> bool {
        self.highest_token.fetch_max(token.get(), Ordering::Relaxed) < token.get()
    }
}

/// One order line as sold: SKU index, quantity, the fencing token it was written with.
#[derive(Debug, Clone, Copy)]
struct Line {
    sku: u32,
    quantity: u64,
    token: FencingToken,
}

/// What one buyer thread saw.
struct BuyerLog {
    attempts: u64,
    orders: Vec<Vec<Line>>,
    out_of_stock: u64,
    timeouts: u64,
    leases_expired: u64,
    stale_refused: u64,
    other_errors: Vec<String>,
    wait_ns: Histogram<u64>,
}

/// A xorshift64* generator, one per buyer.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // SplitMix64 step, so that nearby seeds give unrelated streams (never 0).
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
        let u = rng.unit();
        let index = self.cumulative.partition_point(|&c| c <= u);
        index.min(self.cumulative.len() - 1) as u32
    }
}

/// The outcome of a sale, with the invariants already checked.
#[derive(Debug)]
pub struct Report {
    /// Order attempts made.
    pub attempts: u64,
    /// Orders placed (every line in stock and sold).
    pub placed: u64,
    /// Orders rejected because a line was out of stock.
    pub out_of_stock: u64,
    /// Orders that gave up waiting for their locks.
    pub timeouts: u64,
    /// Releases that found the lease had run out.
    pub leases_expired: u64,
    /// Unexpected lock errors (none should happen), with their messages.
    pub other_errors: Vec<String>,
    /// Units sold, over all SKUs.
    pub units_sold: u64,
    /// Units of stock at the start, over all SKUs.
    pub units_initial: u64,
    /// Wall time of the sale.
    pub elapsed: Duration,
    /// Lock-wait latency of successful acquisitions, in nanoseconds.
    pub lock_wait_ns: Histogram<u64>,
    /// The lock manager's statistics after the sale.
    pub stats: LockStats,
    /// SKUs whose books do not balance: sold + remaining != initial stock, or
    /// remaining stock wrapped below zero.
    pub oversold: u64,
    /// SKUs whose recorded orders do not add up to what was sold.
    pub lost_orders: u64,
    /// Writes the SKU storage refused because their fencing token was stale.
    pub stale_refused: u64,
    /// Fencing tokens recorded by more than one order line of the same SKU
    /// (every grant has its own token, so this must be 0).
    pub reused_tokens: u64,
    /// Locks still held after every buyer finished.
    pub held_at_end: u64,
}

impl Report {
    /// Orders placed per second.
    pub fn throughput(&self) -> f64 {
        self.placed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Order attempts per second.
    pub fn attempt_rate(&self) -> f64 {
        self.attempts as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The invariants that failed, as messages; empty if all hold.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.oversold != 0 {
            failures.push(format!("oversold: {} SKU(s) sold more than their stock allowed", self.oversold));
        }
        if self.lost_orders != 0 {
            failures.push(format!("lost orders: {} SKU(s) whose recorded orders do not match sales", self.lost_orders));
        }
        if self.stale_refused != 0 {
            failures.push(format!("stale fencing tokens: {} write(s) refused", self.stale_refused));
        }
        if self.reused_tokens != 0 {
            failures.push(format!("fencing tokens reused: {}", self.reused_tokens));
        }
        if self.held_at_end != 0 {
            failures.push(format!("locks held at end: {}", self.held_at_end));
        }
        if !self.other_errors.is_empty() {
            failures.push(format!("unexpected lock errors: {}", self.other_errors.join("; ")));
        }
        failures
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |quantile: f64| self.lock_wait_ns.value_at_quantile(quantile) as f64 / 1000.0;
        let stats = &self.stats;
        writeln!(f, "flash sale: {} attempts in {:.2} s", self.attempts, self.elapsed.as_secs_f64())?;
        writeln!(f, "  orders placed:            {}", self.placed)?;
        writeln!(f, "  rejected (out of stock):  {}", self.out_of_stock)?;
        writeln!(f, "  lock timeouts:            {}", self.timeouts)?;
        writeln!(f, "  units sold:               {} of {}", self.units_sold, self.units_initial)?;
        let (placed_rate, attempt_rate) = (self.throughput(), self.attempt_rate());
        writeln!(
            f,
            "  throughput:               {attempt_rate:.0} orders/s attempted, {placed_rate:.0} orders/s placed"
        )?;
        writeln!(
            f,
            "  lock wait:                p50 {:.1} us, p99 {:.1} us, p999 {:.1} us, max {:.1} us",
            us(0.5),
            us(0.99),
            us(0.999),
            self.lock_wait_ns.max() as f64 / 1000.0
        )?;
        writeln!(
            f,
            "lock manager: grants {}, contended {}, timeouts {}, deadlocks {}, leases expired {}, held {}, entries {}",
            stats.grants,
            stats.contended,
            stats.timeouts,
            stats.deadlocks,
            stats.leases_expired,
            stats.held,
            stats.entries
        )?;
        writeln!(f, "invariants:")?;
        writeln!(f, "  oversold: {}", self.oversold)?;
        writeln!(f, "  lost orders: {}", self.lost_orders)?;
        writeln!(f, "  stale fencing tokens refused: {}", self.stale_refused)?;
        writeln!(f, "  fencing tokens reused: {}", self.reused_tokens)?;
        writeln!(f, "  locks held at end: {}", self.held_at_end)?;
        if !self.other_errors.is_empty() {
            writeln!(f, "  unexpected lock errors: {}", self.other_errors.len())?;
        }
        let failures = self.failures();
        if failures.is_empty() { write!(f, "all invariants hold") } else { write!(f, "INVARIANTS FAILED") }
    }
}

/// An empty lock-wait histogram: 1 ns to 1 hour, 3 significant figures
/// (waits are bounded by `--timeout-ms`, at most an hour).
fn wait_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Busy-waits `duration` (a sleep would be far too coarse for microseconds).
fn work(duration: Duration) {
    if duration.is_zero() {
        return;
    }
    let start = Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}

/// Takes the locks of `keys`, all or none, within `timeout`, each with a
/// lease if one is given. `acquire_all` takes them in sorted order, so buyers
/// never deadlock.
fn lock_order<'a>(
    locks: &'a LockManager,
    keys: &[&str],
    timeout: Duration,
    lease: Option<Duration>,
) -> Result<LockSet<'a>, LockError> {
    let request = LockRequest::exclusive().timeout(timeout);
    let request = match lease {
        Some(lease) => request.lease(lease),
        None => request,
    };
    locks.acquire_all(keys.iter().copied(), request)
}

/// One buyer: places orders until `next_ticket` passes `config.orders` (or
/// until `stop` in timed mode).
fn buyer(
    id: u32,
    config: &Config,
    locks: &LockManager,
    catalog: &[Sku],
    popularity: &Popularity,
    next_ticket: &AtomicU64,
    stop: &AtomicBool,
) -> BuyerLog {
    let mut rng = Rng::new(config.seed ^ u64::from(id).wrapping_mul(0xA24B_AED4_963E_E407));
    let timeout = Duration::from_millis(config.timeout_ms);
    let lease = (config.lease_ms > 0).then(|| Duration::from_millis(config.lease_ms));
    let simulated = Duration::from_micros(config.work_us);
    let mut log = BuyerLog {
        attempts: 0,
        orders: Vec::new(),
        out_of_stock: 0,
        timeouts: 0,
        leases_expired: 0,
        stale_refused: 0,
        other_errors: Vec::new(),
        wait_ns: wait_histogram(),
    };
    let max_lines = catalog.len().min(3) as u64;
    let mut wanted: Vec<(u32, u64)> = Vec::with_capacity(3);
    let mut levels: Vec<u64> = Vec::with_capacity(3);
    loop {
        let ticket = next_ticket.fetch_add(1, Ordering::Relaxed);
        let go_on = if config.seconds.is_some() { !stop.load(Ordering::Relaxed) } else { ticket < config.orders };
        if !go_on {
            break;
        }
        log.attempts += 1;
        // 1-3 distinct SKUs, 1-2 units each, sorted by key (the lock order).
        let lines = 1 + rng.below(max_lines) as usize;
        wanted.clear();
        while wanted.len() < lines {
            let sku = popularity.pick(&mut rng);
            if !wanted.iter().any(|&(s, _)| s == sku) {
                wanted.push((sku, 1 + rng.below(2)));
            }
        }
        wanted.sort_unstable_by(|a, b| catalog[a.0 as usize].key.cmp(&catalog[b.0 as usize].key));
        let keys: Vec<&str> = wanted.iter().map(|&(sku, _)| catalog[sku as usize].key.as_str()).collect();

        let started = Instant::now();
        let held = match lock_order(locks, &keys, timeout, lease) {
            Ok(held) => held,
            Err(LockError::Timeout { .. }) => {
                log.timeouts += 1;
                continue;
            }
            Err(error) => {
                log.other_errors.push(error.to_string());
                continue;
            }
        };
        log.wait_ns.saturating_record(started.elapsed().as_nanos() as u64);

        // Under the locks: read every line's stock, do the work, then write
        // the new stock back. Plain loads and stores far apart: only the
        // locks keep another buyer from selling the same units in between.
        levels.clear();
        levels.extend(wanted.iter().map(|&(sku, _)| catalog[sku as usize].stock.load(Ordering::Relaxed)));
        work(simulated);
        if wanted.iter().zip(&levels).all(|(&(_, quantity), &level)| level >= quantity) {
            let mut order = Vec::with_capacity(wanted.len());
            for (&(sku, quantity), &level) in wanted.iter().zip(&levels) {
                let item = &catalog[sku as usize];
                let Some(guard) = held.guards().iter().find(|guard| guard.key() == item.key) else {
                    log.other_errors.push(format!("no guard for {} in the order's lock set", item.key));
                    continue;
                };
                let token = guard.fencing_token();
                if !item.admit(token) {
                    log.stale_refused += 1;
                    continue;
                }
                item.stock.store(level - quantity, Ordering::Relaxed);
                let sold = item.sold.load(Ordering::Relaxed);
                item.sold.store(sold + quantity, Ordering::Relaxed);
                order.push(Line { sku, quantity, token });
            }
            log.orders.push(order);
        } else {
            log.out_of_stock += 1;
        }
        match held.release() {
            Ok(()) => {}
            Err(LockError::LeaseExpired) => log.leases_expired += 1,
            Err(error) => log.other_errors.push(error.to_string()),
        }
    }
    log
}

/// Shows progress while the sale runs, unless quiet or stdout is not a terminal.
fn progress_bar(config: &Config) -> ProgressBar {
    let (length, template) = match config.seconds {
        Some(seconds) => (seconds * 1000, "{spinner} [{elapsed_precise}] {wide_bar} {msg}"),
        None => (config.orders, "{spinner} [{elapsed_precise}] {wide_bar} {msg}"),
    };
    let bar = ProgressBar::new(length);
    if config.quiet || !std::io::stdout().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// Runs the sale `config` describes and checks its invariants.
pub fn run(config: &Config) -> Report {
    let locks = LockManager::new();
    let catalog: Vec<Sku> = (0..config.skus)
        .map(|i| Sku {
            key: format!("sku:{i}"),
            stock: AtomicU64::new(config.stock),
            sold: AtomicU64::new(0),
            highest_token: AtomicU64::new(0),
        })
        .collect();
    let popularity = Popularity::new(config.skus);
    let next_ticket = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let bar = progress_bar(config);

    let started = Instant::now();
    let logs: Vec<BuyerLog> = thread::scope(|s| {
        let buyers: Vec<_> = (0..config.buyers)
            .map(|id| {
                let (locks, catalog, popularity) = (&locks, &catalog, &popularity);
                let (next_ticket, stop, done) = (&next_ticket, &stop, &done);
                s.spawn(move || {
                    let log = buyer(id, config, locks, catalog, popularity, next_ticket, stop);
                    done.fetch_add(1, Ordering::Release);
                    log
                })
            })
            .collect();
        // Progress, and the clock in timed mode, until every buyer is done.
        while done.load(Ordering::Acquire) < u64::from(config.buyers) {
            thread::sleep(Duration::from_millis(100));
            let elapsed = started.elapsed();
            let attempts = next_ticket.load(Ordering::Relaxed);
            match config.seconds {
                Some(seconds) => {
                    if elapsed >= Duration::from_secs(seconds) {
                        stop.store(true, Ordering::Relaxed);
                    }
                    bar.set_position((elapsed.as_millis() as u64).min(seconds * 1000));
                }
                None => bar.set_position(attempts.min(config.orders)),
            }
            let rate = attempts as f64 / elapsed.as_secs_f64().max(1e-9);
            bar.set_message(format!("{attempts} attempts, {rate:.0}/s"));
        }
        buyers.into_iter().map(|buyer| buyer.join().expect("a buyer thread panicked")).collect()
    });
    let elapsed = started.elapsed();
    bar.finish_and_clear();

    // Merge what the buyers saw.
    let mut lock_wait_ns = wait_histogram();
    let (mut attempts, mut placed, mut out_of_stock, mut timeouts, mut leases_expired, mut stale_refused) =
        (0, 0, 0, 0, 0, 0);
    let mut other_errors = Vec::new();
    let mut recorded = vec![0u64; catalog.len()];
    let mut tokens: Vec<Vec<u64>> = vec![Vec::new(); catalog.len()];
    for log in logs {
        lock_wait_ns.add(&log.wait_ns).expect("histograms with the same bounds always merge");
        attempts += log.attempts;
        placed += log.orders.len() as u64;
        out_of_stock += log.out_of_stock;
        timeouts += log.timeouts;
        leases_expired += log.leases_expired;
        stale_refused += log.stale_refused;
        other_errors.extend(log.other_errors);
        for line in log.orders.iter().flatten() {
            recorded[line.sku as usize] += line.quantity;
            tokens[line.sku as usize].push(line.token.get());
        }
    }

    // The books: per SKU, sold + remaining must equal the initial stock, and
    // the recorded orders must add up to exactly what left the shelf.
    let (mut oversold, mut lost_orders, mut units_sold) = (0, 0, 0);
    for (sku, sold_by_orders) in catalog.iter().zip(recorded) {
        let remaining = sku.stock.load(Ordering::Relaxed);
        let sold = sku.sold.load(Ordering::Relaxed);
        let left_the_shelf = config.stock.wrapping_sub(remaining);
        if remaining > config.stock || sold != left_the_shelf {
            oversold += 1;
        }
        if sold_by_orders != left_the_shelf {
            lost_orders += 1;
        }
        units_sold += sold;
    }
    let mut reused_tokens = 0;
    for sku_tokens in &mut tokens {
        sku_tokens.sort_unstable();
        reused_tokens += sku_tokens.windows(2).filter(|pair| pair[0] == pair[1]).count() as u64;
    }
    let stats = locks.stats();
    Report {
        attempts,
        placed,
        out_of_stock,
        timeouts,
        leases_expired,
        other_errors,
        units_sold,
        units_initial: config.stock.saturating_mul(u64::from(config.skus)),
        elapsed,
        lock_wait_ns,
        stats,
        oversold,
        lost_orders,
        stale_refused,
        reused_tokens,
        held_at_end: stats.held,
    }
}

#[allow(dead_code)] // unused when a test includes this file as a module
fn main() -> ExitCode {
    let config = Config::parse();
    let report = run(&config);
    println!("{report}");
    let failures = report.failures();
    if failures.is_empty() {
        return ExitCode::SUCCESS;
    }
    for failure in &failures {
        eprintln!("storefront: invariant failed: {failure}");
    }
    ExitCode::FAILURE
}
