//! The report: what a run prints, and which invariants failed.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;
use tollgate::{BackupReport, LockStats};

use super::invariants::Invariants;

/// The outcome of a run.
#[derive(Debug)]
pub struct Report {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Where the sale's data is, for people: the directory, or the
    /// PostgreSQL schema.
    pub location: String,
    /// Whether the data directory stays after the run.
    pub kept: bool,
    /// Whether every topic opened after a clean shutdown (no recovery
    /// scan): the last run in the directory stopped cleanly, or there was
    /// none.
    pub opened_clean: bool,
    /// A `SIGTERM` or `SIGINT` stopped the sale early.
    pub interrupted: bool,
    /// The backup taken during the sale (`--backup-to`), and what resuming
    /// it found.
    pub backup: Option<BackupCheck>,
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

/// A backup taken during a sale, checked by resuming it.
#[derive(Debug)]
pub struct BackupCheck {
    /// Where it is.
    pub path: PathBuf,
    /// Orders this run had placed when it was taken.
    pub placed_before: u64,
    /// What the backup reported (its pause, its size).
    pub taken: BackupReport,
    /// The report of the sale resumed on the backup, with no new orders.
    pub resumed: Box<Report>,
}

impl Report {
    /// The invariants that failed, as messages; empty if all hold. A
    /// backup's failures count, prefixed `backup: `.
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
        if let Some(backup) = &self.backup {
            if !backup.resumed.opened_clean {
                failures.push("backup: a topic of the backup needed a recovery scan".to_owned());
            }
            failures.extend(backup.resumed.failures().into_iter().map(|failure| format!("backup: {failure}")));
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
        writeln!(f, "flash sale, run {} in {}", self.run, self.location)?;
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
        if let Some(backup) = &self.backup {
            let (taken, resumed) = (&backup.taken, &backup.resumed);
            writeln!(f, "backup to {}:", backup.path.display())?;
            writeln!(
                f,
                "  taken:                 after {} orders; writers paused {:.2} ms; {} files, {:.1} MiB in {:.2} s",
                backup.placed_before,
                taken.pause.as_secs_f64() * 1000.0,
                taken.files,
                taken.bytes as f64 / (1 << 20) as f64,
                taken.elapsed.as_secs_f64()
            )?;
            writeln!(
                f,
                "  resumed:               {} orders = {} paid + {} failed + {} dead-lettered; opened {}; {}",
                resumed.orders_total,
                resumed.paid_total,
                resumed.failed_total,
                resumed.dead_lettered_total,
                if resumed.opened_clean { "clean" } else { "after a recovery scan" },
                if resumed.failures().is_empty() { "all invariants hold" } else { "INVARIANTS FAILED" }
            )?;
        }
        if self.interrupted {
            writeln!(f, "interrupted by a signal: stopped selling, drained, shut down cleanly")?;
        }
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
