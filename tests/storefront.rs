//! Runs small flash sales from `examples/storefront/` (included as a
//! module) and checks what their reports say: the invariants hold, over one
//! run, over runs resumed on a kept directory, after a `kill -9`, in a
//! backup taken during a sale, and after a `SIGTERM` (which stops cleanly).

#[allow(dead_code)] // `main` is only used by the example
#[path = "../examples/storefront/main.rs"]
mod storefront;

#[path = "support/child.rs"]
mod child_process;

use std::path::Path;
use std::time::Duration;

use child_process::{Child, killed_by_sigkill};
use clap::Parser;
use storefront::{Config, Report, handle_signals, run};

fn config(args: &[&str]) -> Config {
    Config::try_parse_from(["storefront", "--quiet"].iter().chain(args)).expect("valid arguments")
}

/// Runs a sale and checks that every invariant holds and the books add up.
fn sale(args: &[&str]) -> Report {
    let report = run(&config(args), &mut |_| {}).expect("the sale runs");
    assert!(report.failures().is_empty(), "invariants failed: {:?}\n{report}", report.failures());
    let i = &report.invariants;
    assert_eq!((i.oversold, i.books_out_of_balance, i.lost_orders, i.settled_twice), (0, 0, 0, 0), "{report}");
    assert_eq!((i.stock_not_released_once, i.unnotified, i.unknown_records), (0, 0, 0), "{report}");
    assert!(i.errors.is_empty(), "{:?}", i.errors);
    assert_eq!(
        report.orders_total,
        report.paid_total + report.failed_total + report.dead_lettered_total,
        "every order is paid, failed or dead-lettered:\n{report}"
    );
    assert!(report.units_sold <= report.units_initial);
    report
}

#[test]
fn a_sale_balances_and_reports_its_invariants() {
    // Few SKUs and little stock: the hot SKUs sell out under contention.
    let report = sale(&["--orders", "3000", "--buyers", "4", "--skus", "5", "--stock", "40", "--work-us", "0"]);
    assert_eq!(report.attempts, 3000);
    assert_eq!(report.attempts, report.placed + report.out_of_stock + report.lock_timeouts);
    assert!(report.placed > 0 && report.out_of_stock > 0, "{report}");
    assert_eq!((report.run, report.runs, report.orders_total), (1, 1, report.placed));
    assert_eq!(report.locks.held, 0);
    assert!(!report.kept, "a temporary directory is removed");
    assert!(!report.data_dir.exists(), "{} should be gone", report.data_dir.display());
    let text = report.to_string();
    for line in ["oversold: 0", "lost orders: 0", "settled more than once: 0", "all invariants hold"] {
        assert!(text.contains(line), "the report lacks {line:?}:\n{text}");
    }
}

#[test]
fn every_payment_outcome_is_accounted_for() {
    // Every attempt declined: all orders fail, and all their stock comes back.
    let declined = sale(&["--orders", "300", "--buyers", "2", "--declines", "1", "--transient-failures", "0"]);
    assert!(declined.orders_total > 0);
    assert_eq!((declined.paid_total, declined.failed_total), (0, declined.orders_total), "{declined}");
    assert_eq!(declined.units_sold, 0, "{declined}");

    // Every attempt fails transiently: all orders run out of attempts.
    let exhausted = sale(&[
        "--orders",
        "200",
        "--buyers",
        "2",
        "--declines",
        "0",
        "--transient-failures",
        "1",
        "--max-attempts",
        "3",
        "--retry-ms",
        "1",
    ]);
    assert_eq!(exhausted.dead_lettered_total, exhausted.orders_total, "{exhausted}");
    assert_eq!(exhausted.redelivered, 2 * exhausted.orders_total, "two retries per order:\n{exhausted}");
    assert_eq!(exhausted.units_sold, 0);

    // Nothing fails: every order is paid.
    let paid = sale(&["--orders", "300", "--buyers", "2", "--declines", "0", "--transient-failures", "0"]);
    assert_eq!(paid.paid_total, paid.orders_total, "{paid}");
}

#[test]
fn sync_durability_and_no_leases() {
    let report = sale(&["--orders", "400", "--buyers", "4", "--durability", "sync", "--lease-ms", "0"]);
    assert!(report.placed > 0);
    assert_eq!(report.leases_expired, 0);
}

#[test]
fn a_kept_directory_resumes_with_its_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let first = sale(&["--orders", "1000", "--skus", "8", "--stock", "30", "--data-dir", path]);
    assert!(first.kept && dir.path().join("tollgate.meta").exists());
    // Different catalog flags: the directory's own catalog wins.
    let second = sale(&["--orders", "1000", "--skus", "99", "--stock", "5", "--data-dir", path]);
    assert_eq!((second.run, second.runs), (2, 2), "{second}");
    assert_eq!(second.units_initial, 8 * 30, "{second}");
    assert_eq!(second.orders_total, first.orders_total + second.placed, "{second}");
    assert!(second.units_sold >= first.units_sold, "stock rebuilt from the log, not refilled:\n{second}");
}

/// Set for the child: the data directory of the sale it runs until killed.
const CHILD_ENV: &str = "TOLLGATE_STOREFRONT_CHILD";

/// The child of `a_sale_killed_by_sigkill_resumes`: sells for up to a minute,
/// printing how many orders are placed (acknowledged) as it goes.
#[test]
fn storefront_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else { return };
    let dir = dir.to_str().expect("a UTF-8 path").to_owned();
    // Limited stock, so that an oversell after a restart would show.
    let config = config(&["--seconds", "60", "--buyers", "4", "--skus", "20", "--stock", "300", "--data-dir", &dir]);
    let result = run(&config, &mut |progress| println!("placed {}", progress.placed));
    panic!("the child should have been killed, but the sale ended: {:?}", result.map(|r| r.to_string()));
}

#[test]
fn a_sale_killed_by_sigkill_resumes() {
    let dir = tempfile::tempdir().unwrap();
    // Two runs killed while they sell, pay and notify; each resumes the last.
    let mut placed_before = 0;
    for _ in 0..2 {
        placed_before += kill_a_sale(dir.path());
    }
    let report = resume(dir.path());
    assert_eq!((report.run, report.runs), (3, 3), "{report}");
    assert!(
        report.orders_total >= placed_before + report.placed,
        "orders the killed runs placed are missing: they reported {placed_before}\n{report}"
    );
}

/// Runs a sale on `dir` in a child process and kills it with SIGKILL once it
/// has placed some orders. Returns how many it reported placed.
fn kill_a_sale(dir: &Path) -> u64 {
    let child = Child::spawn("storefront_child", [(CHILD_ENV, dir.as_os_str().to_owned())]);
    let mut placed = wait_for_orders(&child, 500);
    let (status, lines, stderr) = child.kill();
    assert!(killed_by_sigkill(status), "the child ended by itself: {status:?}\n{stderr}");
    if let Some(last) = lines.iter().rev().find_map(|line| line.strip_prefix("placed ")) {
        placed = last.parse().expect("a progress line");
    }
    placed
}

/// Reads the child's progress lines until it reports `orders` placed;
/// returns how many it reported.
fn wait_for_orders(child: &Child, orders: u64) -> u64 {
    let mut placed = 0;
    while placed < orders {
        let line = child.next_line(Duration::from_secs(60)).expect("the child reports progress");
        if let Some(count) = line.strip_prefix("placed ") {
            placed = count.parse().expect("a progress line");
        }
    }
    placed
}

fn resume(dir: &Path) -> Report {
    let path = dir.to_str().unwrap();
    sale(&["--orders", "500", "--buyers", "2", "--skus", "20", "--data-dir", path])
}

#[test]
fn a_backup_taken_during_a_sale_holds_a_consistent_part_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("backup");
    let args = ["--seconds", "4", "--buyers", "4", "--skus", "20", "--stock", "400", "--backup-after", "100"];
    let report = sale(&[&args[..], &["--backup-to", dest.to_str().unwrap()]].concat());
    let backup = report.backup.as_ref().expect("a backup was taken");
    let resumed = &backup.resumed;
    // `sale` checked the backup's invariants (its failures are the
    // report's); and it opened as a clean shutdown.
    assert!(resumed.opened_clean, "{report}");
    assert_eq!((resumed.run, resumed.placed), (2, 0), "{report}");
    assert!(backup.placed_before >= 100, "taken after 100 orders:\n{report}");
    assert!(resumed.orders_total >= backup.placed_before, "orders placed before the backup are missing:\n{report}");
    // How many orders the sale placed after the backup depends on the
    // machine's speed, so only the bound is checked (tests/backup.rs checks
    // that a backup taken while writers run is one instant).
    assert!(resumed.orders_total <= report.orders_total, "the backup holds orders the sale never placed:\n{report}");
    assert!(report.to_string().contains("writers paused"), "{report}");
}

/// Set for the child: the data directory of the sale it runs until SIGTERM.
const SIGTERM_CHILD_ENV: &str = "TOLLGATE_STOREFRONT_SIGTERM_CHILD";

/// The child of `a_sale_stopped_by_sigterm_shuts_down_cleanly`: handles
/// signals as the example does, sells for up to a minute printing its
/// progress, and passes if the sale, interrupted, keeps every invariant.
#[test]
fn storefront_sigterm_child() {
    let Some(dir) = std::env::var_os(SIGTERM_CHILD_ENV) else { return };
    let dir = dir.to_str().expect("a UTF-8 path").to_owned();
    handle_signals().expect("handlers installed");
    let config = config(&["--seconds", "60", "--buyers", "4", "--skus", "20", "--stock", "300", "--data-dir", &dir]);
    let report = run(&config, &mut |progress| println!("placed {}", progress.placed)).expect("the sale runs");
    println!("interrupted {}", report.interrupted);
    assert!(report.failures().is_empty(), "invariants failed: {:?}\n{report}", report.failures());
}

#[test]
fn a_sale_stopped_by_sigterm_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let child = Child::spawn("storefront_sigterm_child", [(SIGTERM_CHILD_ENV, dir.path().as_os_str().to_owned())]);
    wait_for_orders(&child, 300);
    let (status, lines, stderr) = child.terminate();
    assert!(status.success(), "the child did not exit normally: {status:?}\n{stderr}");
    assert!(lines.iter().any(|line| line == "interrupted true"), "{lines:?}");
    {
        // Every topic was closed cleanly: nothing to recover.
        let engine = tollgate::Engine::open(dir.path()).unwrap();
        for name in engine.topics().unwrap() {
            let topic = engine.topic(&name).unwrap();
            assert!(topic.recovery_report().clean, "{name} needed a recovery scan after SIGTERM");
        }
    }
    let report = resume(dir.path());
    assert!(report.opened_clean, "{report}");
    assert_eq!((report.run, report.runs), (2, 2), "{report}");
}

#[test]
fn bad_arguments_are_refused() {
    for args in [
        &["--buyers", "0"][..],
        &["--orders", "10", "--seconds", "1"],
        &["--skus", "many"],
        &["--declines", "1.5"],
        &["--transient-failures", "-0.1"],
        &["--durability", "sometimes"],
        &["--max-attempts", "0"],
        &["--backup-after", "10"],
    ] {
        let parsed = Config::try_parse_from(["storefront"].iter().chain(args));
        assert!(parsed.is_err(), "{args:?} should be refused");
    }
}

#[test]
fn a_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _engine = tollgate::Engine::open(dir.path()).unwrap();
    let error = run(&config(&["--orders", "10", "--data-dir", dir.path().to_str().unwrap()]), &mut |_| {})
        .expect_err("the directory is locked");
    assert!(error.to_string().contains("in use") || error.to_string().contains("lock"), "{error}");
}

#[test]
fn a_panic_in_the_progress_callback_stops_every_thread() {
    // A timed sale of a minute: if the panic left the buyers running, the
    // scope would never join them and this test would hang.
    let sale =
        std::panic::AssertUnwindSafe(|| run(&config(&["--seconds", "60"]), &mut |_| panic!("the display broke")));
    assert!(std::panic::catch_unwind(sale).is_err());
}

#[test]
fn an_oversell_in_the_log_is_flagged_even_if_a_release_repaid_it() {
    // A forged history: one unit of one SKU, reserved twice (an oversell),
    // then one order's stock released. The stock is back at zero, but the
    // log went below it.
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = tollgate::Engine::open(dir.path()).unwrap();
        engine.topic("catalog").unwrap().publish("skus=1 stock=1").unwrap();
        let orders = engine.topic("orders").unwrap();
        for order in [1, 2] {
            let text = format!("order={order} run=1 created_us=1 lines=0x1");
            let batch = [
                tollgate::Message::new(text.clone()).key("stock.reserved"),
                tollgate::Message::new(text).key("order.created"),
            ];
            orders.publish_batch(batch).unwrap();
        }
        orders
            .publish_message(tollgate::Message::new("order=2 run=1 created_us=1 lines=0x1").key("stock.released"))
            .unwrap();
    }
    let report = run(&config(&["--orders", "0", "--data-dir", dir.path().to_str().unwrap()]), &mut |_| {}).unwrap();
    assert_eq!(report.invariants.oversold, 1, "{report}");
    assert!(!report.failures().is_empty());
}

#[test]
fn a_lease_that_runs_out_under_an_order_fails_the_sale() {
    // Leases of 1 ms around 3 ms of work: every order outlives its lease.
    let args = ["--quiet", "--orders", "20", "--buyers", "2", "--lease-ms", "1", "--work-us", "3000"];
    let report = run(&Config::try_parse_from(["storefront"].iter().chain(&args)).unwrap(), &mut |_| {}).unwrap();
    assert!(report.invariants.leases_expired > 0, "{report}");
    assert!(report.failures().iter().any(|f| f.contains("leases")), "{:?}", report.failures());
}

#[test]
fn a_directory_with_an_invalid_catalog_is_refused() {
    for catalog in ["skus=0 stock=10", "skus=4000000000 stock=10", "not a catalog"] {
        let dir = tempfile::tempdir().unwrap();
        tollgate::Engine::open(dir.path()).unwrap().topic("catalog").unwrap().publish(catalog).unwrap();
        let error = run(&config(&["--orders", "10", "--data-dir", dir.path().to_str().unwrap()]), &mut |_| {})
            .expect_err("an invalid catalog");
        assert!(error.to_string().contains("no valid catalog"), "{catalog}: {error}");
    }
}

/// The same sale on PostgreSQL (a throwaway server), then a second run on
/// the same schema: it resumes, and the invariants hold over both.
#[cfg(feature = "postgres")]
#[test]
fn a_sale_on_postgres_balances_and_resumes() {
    let server = tollgate_pgtemp::server();
    let (url, schema) = (server.url(), server.schema_name());
    let args = ["--orders", "400", "--buyers", "4", "--skus", "5", "--stock", "30", "--work-us", "0"];
    let on_postgres: Vec<&str> = args.iter().copied().chain(["--backend", &url, "--schema", &schema]).collect();
    let first = sale(&on_postgres);
    assert_eq!((first.run, first.runs), (1, 1));
    assert!(first.placed > 0 && first.out_of_stock > 0, "the hot SKUs sell out:\n{first}");
    assert!(first.to_string().contains(&format!("PostgreSQL, schema {schema}")));
    let second = sale(&on_postgres);
    assert_eq!((second.run, second.runs), (2, 2));
    assert_eq!(second.orders_total, first.orders_total + second.placed, "the second run sees the first's orders");
    assert!(second.units_sold <= second.units_initial);
}
