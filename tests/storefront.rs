//! Runs a small flash sale from `examples/storefront.rs` (included as a
//! module) and checks its invariants: nothing oversold, no order lost, no
//! stale fencing token accepted, no lock left held.

#[allow(dead_code)] // `main` and some report helpers are only used by the example
#[path = "../examples/storefront.rs"]
mod storefront;

use clap::Parser;
use storefront::{Config, Report, run};

fn sale(args: &[&str]) -> Report {
    let config = Config::try_parse_from(["storefront", "--quiet"].iter().chain(args)).expect("valid arguments");
    let report = run(&config);
    assert!(report.failures().is_empty(), "invariants failed: {:?}\n{report}", report.failures());
    report
}

fn assert_books_balance(report: &Report) {
    assert_eq!(report.oversold, 0);
    assert_eq!(report.lost_orders, 0);
    assert_eq!(report.stale_refused, 0);
    assert_eq!(report.reused_tokens, 0);
    assert_eq!(report.held_at_end, 0);
    assert!(report.other_errors.is_empty(), "{:?}", report.other_errors);
    assert_eq!(report.attempts, report.placed + report.out_of_stock + report.timeouts);
    assert!(report.units_sold <= report.units_initial);
}

#[test]
fn leased_sale_sells_out_without_overselling() {
    // Few SKUs, little stock, many attempts: everything sells out under contention.
    let report = sale(&["--orders", "2000", "--buyers", "4", "--skus", "5", "--stock", "20", "--work-us", "0"]);
    assert_books_balance(&report);
    assert_eq!(report.attempts, 2000);
    assert!(report.placed > 0 && report.out_of_stock > 0, "{report}");
    assert_eq!(report.units_sold, report.units_initial, "{report}");
    let text = report.to_string();
    for line in ["oversold: 0", "lost orders: 0", "stale fencing tokens refused: 0", "locks held at end: 0"] {
        assert!(text.contains(line), "report lacks {line:?}:\n{text}");
    }
}

#[test]
fn lock_all_sale_without_lease_balances() {
    // More SKUs than 10, so that key order ("sku:10" < "sku:2") differs from index order.
    let report = sale(&["--orders", "2000", "--buyers", "4", "--skus", "30", "--stock", "50", "--lease-ms", "0"]);
    assert_books_balance(&report);
    assert_eq!(report.stats.leases_expired, 0);
}

#[test]
fn bad_arguments_are_refused() {
    for args in [&["--buyers", "0"][..], &["--orders", "10", "--seconds", "1"], &["--skus", "many"]] {
        let parsed = Config::try_parse_from(["storefront"].iter().chain(args));
        assert!(parsed.is_err(), "{args:?} should be refused");
    }
}
