//! Running a sale: the topics and the catalog, the threads, selling then
//! draining, and the books.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tollgate::{Backend, BackupReport, Durability, Engine, KeyPattern, QueueConfig, Topic, TopicConfig, TopicError};

use super::Config;
use super::invariants::check;
use super::ledger::{Ledger, records};
use super::messages::{CATALOG, CREATED, Catalog, DEAD_LETTERS, ORDERS, PAYMENT_GROUP, PAYMENTS, sku_key};
use super::payments::{compensation, notifications, payment_worker};
use super::report::{BackupCheck, Report};
use super::shop::{BuyerLog, Counters, Popularity, Shop, Sku, StopOnDrop, buyer, histogram};
use super::signals;

/// What can stop a sale before it starts or end it early: tollgate's
/// errors, or a data directory whose catalog cannot be read.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

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
    if let Some(backend) = &config.backend {
        let backend: Backend = backend.parse()?;
        #[cfg(feature = "postgres")]
        let backend = match backend {
            Backend::Postgres(pg) => Backend::Postgres(pg.schema(&config.schema)?),
            other => other,
        };
        let location = match &backend {
            Backend::Embedded(dir) => dir.display().to_string(),
            #[allow(unreachable_patterns, reason = "the variant exists with the `postgres` feature only")]
            _ => format!("PostgreSQL, schema {}", config.schema),
        };
        let engine = Engine::start(&backend)?;
        return sale(config, engine, &location, progress);
    }
    let temporary = match &config.data_dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("storefront-").tempdir()?),
    };
    let data_dir = config.data_dir.clone().unwrap_or_else(|| temporary.as_ref().unwrap().path().to_path_buf());
    let report = sale(config, Engine::open(&data_dir)?, &data_dir.display().to_string(), progress)
        .map(|report| Report { data_dir: data_dir.clone(), ..report });
    let kept = temporary.is_none() || config.keep;
    if let Some(temporary) = temporary
        && config.keep
    {
        let _ = temporary.keep();
    }
    report.map(|report| Report { kept, ..report })
}

/// The sale on `engine`, whose data is at `location` (for the report).
fn sale(config: &Config, engine: Engine, location: &str, progress: &mut dyn FnMut(&Progress)) -> Result<Report, Error> {
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
    // Whether the last run stopped cleanly: no topic needed a recovery scan.
    let opened_clean = [&orders, &payments, &dead_letters].iter().all(|t| t.recovery_report().clean);

    // What earlier runs left: the stock and the order numbers from the ledger.
    let before = Ledger::read(catalog, &orders, &payments, &dead_letters)?;
    let shop = Shop {
        config,
        run,
        // The engine's lock manager: this process's on the embedded
        // engine, the database's on PostgreSQL.
        locks: engine.locks(),
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
    let mut drain_stopped = false;
    let mut backup: Option<(u64, Result<BackupReport, tollgate::BackupError>)> = None;
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
        // Takes the backup once, while everything runs.
        let mut back_up = |placed: u64| {
            if let Some(dest) = config.backup_to.as_ref().filter(|_| backup.is_none()) {
                backup = Some((placed, engine.backup_to(dest)));
            }
        };
        // Selling: until the buyers are done (the clock stops them in timed
        // mode, a signal in either).
        while !buyers.iter().all(|buyer| buyer.is_finished()) {
            thread::sleep(Duration::from_millis(100));
            let timed_out = config.seconds.is_some_and(|seconds| started.elapsed() >= Duration::from_secs(seconds));
            if timed_out || signals::received() > 0 {
                shop.selling_done.store(true, Ordering::Relaxed);
            }
            let placed = shop.counters.placed.load(Ordering::Relaxed);
            if placed >= config.backup_after {
                back_up(placed);
            }
            progress(&snapshot(false));
        }
        shop.selling_done.store(true, Ordering::Relaxed);
        back_up(shop.counters.placed.load(Ordering::Relaxed));
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
            // A second signal: stop now, drained or not.
            drain_stopped = !quiet && signals::received() > 1;
            if quiet || drain_stopped || Instant::now() >= deadline {
                drain_timed_out = !quiet && !drain_stopped;
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
    if drain_stopped {
        errors.push("a second signal stopped the drain".to_owned());
    }
    let invariants = check(&shop, &after, &placed, leases_expired, errors);
    let units_initial = stock * u64::from(skus);
    let units_left: i128 = after.balance.iter().sum();
    let failed = |declined: bool| {
        let unpaid = |order: &u64| !after.settled.contains_key(order);
        after.dead.iter().filter(|(order, (d, _))| *d == declined && unpaid(order)).count() as u64
    };
    let backup = match backup {
        Some((placed, taken)) => Some(check_backup(config, placed, taken?)?),
        None => None,
    };
    Ok(Report {
        data_dir: std::path::PathBuf::new(),
        location: location.to_owned(),
        opened_clean,
        interrupted: signals::received() > 0,
        backup,
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

/// Checks a backup taken during the sale: resumes it, as a shop restored
/// from it would, with a sale of no new orders that drains what was in
/// flight at the backup, and checks the invariants over every run in it.
fn check_backup(config: &Config, placed: u64, taken: BackupReport) -> Result<BackupCheck, Error> {
    let dest = config.backup_to.clone().expect("a backup was asked for");
    let resume = Config {
        orders: 0,
        seconds: None,
        data_dir: Some(dest.clone()),
        keep: true,
        quiet: true,
        backup_to: None,
        ..config.clone()
    };
    let resumed = run(&resume, &mut |_| {})?;
    Ok(BackupCheck { path: dest, placed_before: placed, taken, resumed: Box::new(resumed) })
}
