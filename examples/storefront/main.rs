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
//! [`Topic::transaction`]: tollgate::Topic::transaction
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
//! cargo run --release -p tollgate-storefront
//! cargo run --release -p tollgate-storefront -- --buyers 16 --seconds 10 --durability sync
//! cargo run --release -p tollgate-storefront -- --data-dir /tmp/sale --keep   # kill -9 it, run again
//! cargo run --release -p tollgate-storefront --features postgres -- --backend postgres://shop@localhost/shop
//! ```
//!
//! The example's modules, in reading order:
//!
//! 1. `messages` - the records' `name=value` texts (an order, the catalog)
//!    and the topic, group and key names.
//! 2. `ledger` - what the topics say, read from the first record to the
//!    last: the stock and the orders of every run.
//! 3. `shop` - what a run's threads share (the stock under the SKUs' locks,
//!    the counters), the buyers, and their random choices (the xorshift `Rng`).
//! 4. `payments` - the payment workers, the compensation of dead-lettered
//!    orders, and the notifications.
//! 5. `sale` - running a sale: the topics and the catalog, the threads,
//!    selling then draining, the books.
//! 6. `invariants` - what is checked after a sale, and the check, from the
//!    ledger.
//! 7. `report` - what a run prints, and which invariants failed.
//! 8. `signals` - `SIGTERM` and `SIGINT` stop the sale cleanly.
//!
//! With `--backup-to DIR`, the sale backs its data directory up while it
//! runs ([`tollgate::Engine::backup_to`]) once `--backup-after` orders are
//! placed, and at the end resumes the backup as a sale of its own with no
//! new orders: the backup's invariants are checked as if the shop had been
//! restored from it, and the report says how long writers paused.
//!
//! `SIGTERM` or `SIGINT` (Ctrl-C) stops the buyers and drains the sale, then
//! reports it as interrupted; the engine is dropped, so the directory
//! records a clean shutdown. A second signal stops the drain.
//!
//! This file: the command line ([`Config`]), the progress bar and `main`.

mod invariants;
mod ledger;
mod messages;
mod payments;
mod report;
mod sale;
mod shop;
mod signals;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tollgate::Durability;

// `Config`, `Report` and `run` are what tests/storefront.rs uses. `Report` is
// re-exported `pub`: the example never names it, so a `pub(crate)` re-export
// would be an unused import in its build.
pub use report::Report;
pub(crate) use sale::{Progress, run};
pub use signals::install as handle_signals;

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
    /// Run on this backend instead: a data directory, or a PostgreSQL
    /// database (`postgres://user@host/db`; build with `--features
    /// postgres`). On PostgreSQL the sale's topics live in the schema
    /// --schema, and a run resumes what earlier runs there left, as on a
    /// kept directory.
    #[arg(long, value_name = "DIR|URL", conflicts_with_all = ["data_dir", "keep", "backup_to"])]
    pub backend: Option<String>,
    /// The PostgreSQL schema of --backend postgres://...
    #[arg(long, default_value = "storefront", requires = "backend")]
    pub schema: String,
    /// Longest wait for the sale to drain after the last order, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub drain_seconds: u64,
    /// Seed of the buyers' choices and of the payment outcomes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Back the data directory up to this directory (which must not exist,
    /// or be empty) while the sale runs, then check the backup's invariants
    /// by resuming it, with no new orders, at the end.
    #[arg(long, value_name = "DIR")]
    pub backup_to: Option<PathBuf>,
    /// Take the backup once this many orders are placed (or when selling
    /// ends, if fewer are).
    #[arg(long, default_value_t = 1000, value_name = "N", requires = "backup_to")]
    pub backup_after: u64,
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

/// Most SKUs in a catalog, and most units of each.
const SKUS_MAX: u32 = 100_000;
const STOCK_MAX: u64 = 1_000_000_000;

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
    if let Err(error) = signals::install() {
        eprintln!("storefront: cannot handle SIGTERM and SIGINT: {error}");
        return ExitCode::from(2);
    }
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
    if report.kept && config.backend.is_none() {
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
