//! The shop in-process on 127.0.0.1:0, under 64 concurrent HTTP clients
//! doing checkouts on 4 hot SKUs with little stock: every response is a
//! 201, 409 or 503; after the payments settle and the shop shuts down, the
//! log shows nothing oversold and no order lost, each paid or failed with
//! its stock released. Prints the checkout latency percentiles (never
//! asserted: the machine may be loaded).

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use hyper::Method;
use serde_json::json;
use support::{Http, check, load, settled, skus};
use tokio::net::TcpListener;
use tollgate_storefront_http::{Config, read_ledger, serve};

const CLIENTS: u64 = 64;
const REQUESTS_PER_CLIENT: u64 = 8;
const SKUS: u32 = 4;
const STOCK: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checkouts_never_oversell_and_lose_no_order() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = Config { skus: SKUS, stock: STOCK, ..Config::new(dir.path().to_owned()) };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let http = Http::new(listener.local_addr().expect("bound"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(config, listener, async move {
        let _ = stopped.await;
    }));

    let started = std::time::Instant::now();
    let seen = load(&http, CLIENTS, REQUESTS_PER_CLIENT, &skus(SKUS), Arc::new(AtomicU64::new(0))).await;
    let elapsed = started.elapsed();
    println!(
        "{} checkouts from {CLIENTS} clients in {elapsed:.2?}: {:?}; {}",
        seen.latencies.len(),
        seen.statuses,
        seen.percentiles()
    );
    assert_eq!(seen.transport_errors, 0);
    assert_eq!(seen.unexpected(), 0, "responses other than 201, 409, 503: {:?}", seen.statuses);
    assert_eq!(seen.statuses.values().sum::<u64>(), CLIENTS * REQUESTS_PER_CLIENT);
    assert!(seen.statuses.contains_key(&409), "the stock is small enough to run out: {:?}", seen.statuses);

    // Bad input is a 400, never a panic; statuses are served.
    let bad = http.send(Method::POST, "/checkout", Some(&json!({ "lines": "none" }))).await.expect("an answer");
    assert_eq!(bad.0, 400);
    let unknown = json!({ "lines": [{ "sku": "sku-999", "qty": 1 }] });
    assert_eq!(http.send(Method::POST, "/checkout", Some(&unknown)).await.expect("an answer").0, 400);
    assert_eq!(http.get("/orders/not-a-number").await.expect("an answer").0, 400);

    let metrics = settled(&http).await;
    for &order in seen.placed.iter().take(5) {
        let (status, body) = http.get(&format!("/orders/{order}")).await.expect("an answer");
        assert_eq!(status, 200);
        assert!(body["status"] == "paid" || body["status"] == "failed", "order {order}: {body}");
    }
    println!("settled: {metrics}");

    let _ = stop.send(());
    let summary = server.await.expect("the server task").expect("a clean shutdown");
    assert!(summary.metrics.errors.is_empty(), "unexpected errors: {:?}", summary.metrics.errors);
    let ledger = read_ledger(dir.path()).expect("the log reads back");
    check(&ledger, &seen.placed, &metrics["stock"]);
    assert_eq!(ledger.created.len(), seen.placed.len(), "every order in the log got its 201");
}
