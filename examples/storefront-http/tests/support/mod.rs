//! What the HTTP tests share: a small client on hyper (what axum is built
//! on), a load of concurrent checkouts, waiting for the payments to settle,
//! and the checks on the ledger.

// Each test uses part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tollgate_storefront_http::ledger::Ledger;

/// Longest wait for one response: a request that takes longer counts as a
/// transport error (never expected; it keeps a broken server from hanging
/// the test).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for every order to be paid or failed.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(40);

/// An HTTP/1.1 client for one server, with a pool of keep-alive connections.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Http {
        Http { client: Client::builder(TokioExecutor::new()).build_http(), base: format!("http://{addr}") }
    }

    /// Sends a request and reads the whole response: its status and its
    /// body as JSON (`Null` if it is not JSON).
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
        let body = body.map_or_else(Bytes::new, |body| Bytes::from(body.to_string()));
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|error| error.to_string())?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|error| error.to_string())?;
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await.map_err(|error| error.to_string())?.to_bytes();
            Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.map_err(|_| "no response in time".to_owned())?
    }

    pub async fn get(&self, path: &str) -> Result<(u16, Value), String> {
        self.send(Method::GET, path, None).await
    }
}

/// What a load saw.
#[derive(Debug, Default)]
pub struct Load {
    /// Responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Order numbers of the 201s.
    pub placed: Vec<u64>,
    /// Each checkout's time from request to whole response.
    pub latencies: Vec<Duration>,
    /// Requests that got no response (the server was killed, or is gone).
    pub transport_errors: u64,
}

impl Load {
    fn merge(&mut self, other: Load) {
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.placed.extend(other.placed);
        self.latencies.extend(other.latencies);
        self.transport_errors += other.transport_errors;
    }

    /// Responses that are neither 201, nor a deliberate 409 or 503.
    pub fn unexpected(&self) -> u64 {
        self.statuses.iter().filter(|(status, _)| ![201, 409, 503].contains(*status)).map(|(_, n)| n).sum()
    }

    /// `p50 .. ms, p99 .. ms` of the checkout latencies.
    pub fn percentiles(&self) -> String {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let at = |p: f64| {
            let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
            sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        format!("p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", at(0.50), at(0.99), at(1.0))
    }
}

/// `clients` concurrent clients, each sending `requests` checkouts of 1–2
/// of the hot `skus`, 1–2 units each, one after the other. A client stops
/// at its first transport error (the server is gone). `placed` counts the
/// 201s as they arrive.
pub async fn load(http: &Http, clients: u64, requests: u64, skus: &[String], placed: Arc<AtomicU64>) -> Load {
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (http, skus, placed) = (http.clone(), skus.to_vec(), placed.clone());
            tokio::spawn(async move {
                let mut rng = Rng(client.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
                let mut seen = Load::default();
                for _ in 0..requests {
                    let first = rng.below(skus.len() as u64) as usize;
                    let mut lines = vec![json!({ "sku": skus[first], "qty": 1 + rng.below(2) })];
                    if rng.below(2) == 1 {
                        let second = (first + 1 + rng.below(skus.len() as u64 - 1) as usize) % skus.len();
                        lines.push(json!({ "sku": skus[second], "qty": 1 + rng.below(2) }));
                    }
                    let started = Instant::now();
                    match http.send(Method::POST, "/checkout", Some(&json!({ "lines": lines }))).await {
                        Ok((status, body)) => {
                            seen.latencies.push(started.elapsed());
                            *seen.statuses.entry(status).or_default() += 1;
                            if status == 201 {
                                seen.placed.push(body["order"].as_u64().expect("a 201 names its order"));
                                placed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            seen.transport_errors += 1;
                            break;
                        }
                    }
                }
                seen
            })
        })
        .collect();
    let mut total = Load::default();
    for task in tasks {
        total.merge(task.await.expect("a client task never panics"));
    }
    total
}

/// Waits until no order is pending (every one paid or failed), by polling
/// `GET /metrics`; returns the metrics then.
pub async fn settled(http: &Http) -> Value {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let (status, metrics) = http.get("/metrics").await.expect("the server answers /metrics");
        assert_eq!(status, 200);
        if metrics["orders_pending"] == 0 {
            return metrics;
        }
        assert!(Instant::now() < deadline, "orders still pending after {SETTLE_TIMEOUT:?}: {metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The checks after a run has settled and stopped, from the log alone:
/// the ledger's invariants (nothing oversold, each order reserved and
/// created once as one batch, settled at most once, failed orders released
/// once); every order whose 201 a client received is in the log exactly
/// once; nothing is pending; and the stock `GET /metrics` showed at the end
/// is the log's.
pub fn check(ledger: &Ledger, placed: &[u64], final_stock: &Value) {
    assert_eq!(ledger.violations(), Vec::<String>::new());
    let lost: Vec<u64> = placed.iter().copied().filter(|order| ledger.created.get(order) != Some(&1)).collect();
    assert!(lost.is_empty(), "orders answered 201 but not in the log exactly once: {lost:?}");
    assert_eq!(ledger.pending(), 0, "orders neither paid nor failed");
    for (sku, units) in &ledger.stock {
        assert!(*units >= 0, "{sku} oversold");
        assert_eq!(final_stock[sku].as_i64(), Some(*units), "{sku}: the shop's stock differs from the log's");
    }
}

/// The hot SKUs of a catalog of `count`.
pub fn skus(count: u32) -> Vec<String> {
    (1..=count).map(|n| format!("sku-{n}")).collect()
}

/// A xorshift64 generator (never seeded with 0).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
