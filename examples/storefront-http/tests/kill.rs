//! The shop's binary as a child process, killed with `kill -9` while 64
//! HTTP clients check out, then restarted on the same data directory: the
//! restart rebuilds the stock from the log and resumes the payments, a
//! second load gets only 201, 409 and 503, and once everything settles and
//! the shop stops on `SIGTERM`, the log shows nothing oversold and every
//! order whose 201 a client received (before or after the kill) present
//! once, paid or failed with its stock released.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::{Http, check, load, settled, skus};
use tollgate_storefront_http::read_ledger;

const CLIENTS: u64 = 64;
const SKUS: u32 = 4;
const STOCK: u64 = 100;
/// The kill comes once this many orders were answered 201 (or the first
/// load ends, if it places fewer).
const KILL_AFTER_PLACED: u64 = 60;
/// Longest wait for the shop to exit after `SIGTERM`.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The shop as a child process; killed (`kill -9`) when dropped, so that a
/// failing test leaves no process behind.
struct Shop {
    child: Child,
    addr: SocketAddr,
    /// The rest of its standard output, read to the end by a thread.
    output: Option<JoinHandle<String>>,
}

impl Shop {
    /// Starts the shop on `dir` and waits for its `listening on ADDR`.
    fn start(dir: &Path) -> Shop {
        let mut child = Command::new(env!("CARGO_BIN_EXE_storefront-http"))
            .arg(dir)
            .args(["--bind", "127.0.0.1:0", "--skus", &SKUS.to_string(), "--stock", &STOCK.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("the storefront-http binary starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut shop = Shop { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), output: None };
        let mut first = String::new();
        stdout.read_line(&mut first).expect("the shop's output");
        shop.addr = first
            .trim()
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("expected `listening on ADDR`, got {first:?}"));
        shop.output = Some(std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
            rest
        }));
        shop
    }

    /// `kill -9`.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL is delivered");
        self.child.wait().expect("the killed shop is reaped");
    }

    /// `SIGTERM`, then waits for a graceful exit; returns its status and
    /// what it printed.
    fn terminate(mut self) -> (ExitStatus, String) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits");
        // SAFETY: `kill` is called with the pid of our own child, which is
        // not reaped yet (so the pid is not reused), and a valid signal.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM is delivered");
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("the shop's status") {
                break status;
            }
            assert!(Instant::now() < deadline, "the shop did not stop within {STOP_TIMEOUT:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let output = self.output.take().map(|reader| reader.join().unwrap_or_default()).unwrap_or_default();
        (status, output)
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_checkouts_loses_no_order_and_oversells_nothing() {
    let dir = tempfile::tempdir().expect("a temporary directory");

    // The first run: killed once enough orders are placed, mid-load.
    let shop = Shop::start(dir.path());
    let http = Http::new(shop.addr);
    let placed = Arc::new(AtomicU64::new(0));
    let first = tokio::spawn({
        let (http, placed) = (http.clone(), placed.clone());
        async move { load(&http, CLIENTS, 1000, &skus(SKUS), placed).await }
    });
    while placed.load(Ordering::Relaxed) < KILL_AFTER_PLACED && !first.is_finished() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::task::spawn_blocking(move || shop.kill()).await.expect("killed");
    let first = first.await.expect("the first load");
    println!(
        "before the kill: {:?}, {} requests cut off; {}",
        first.statuses,
        first.transport_errors,
        first.percentiles()
    );
    assert_eq!(first.unexpected(), 0, "responses other than 201, 409, 503: {:?}", first.statuses);
    assert!(first.transport_errors > 0, "the kill came mid-load");

    // The restart: the stock is the log's, and a second load is served.
    let shop = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || Shop::start(&dir)
    })
    .await
    .expect("restarted");
    let http = Http::new(shop.addr);
    let second = load(&http, CLIENTS, 4, &skus(SKUS), Arc::new(AtomicU64::new(0))).await;
    println!("after the restart: {:?}; {}", second.statuses, second.percentiles());
    assert_eq!(second.transport_errors, 0);
    assert_eq!(second.unexpected(), 0, "responses other than 201, 409, 503: {:?}", second.statuses);
    let metrics = settled(&http).await;
    println!("settled: {metrics}");
    assert_eq!(metrics["errors"], serde_json::json!([]));

    let (status, output) = tokio::task::spawn_blocking(move || shop.terminate()).await.expect("stopped");
    assert!(status.success(), "the shop exited with {status}: {output}");
    let ledger = read_ledger(dir.path()).expect("the log reads back");
    let placed: Vec<u64> = first.placed.iter().chain(&second.placed).copied().collect();
    check(&ledger, &placed, &metrics["stock"]);
    println!("{} orders in the log, {} answered 201; {output}", ledger.created.len(), placed.len());
}
