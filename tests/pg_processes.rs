//! Locks shared by several OS processes through PostgreSQL, with a real
//! server (a throwaway one from `tollgate-pgtemp`, or `TOLLGATE_PG_URL`).
//!
//! This test binary is its own harness (`harness = false`): run plainly it
//! is the parent, which runs each scenario by starting copies of itself as
//! children (`TOLLGATE_CHILD=<role>`), and fails if any scenario does.
//!
//! - Mutual exclusion: 3 processes × 150 critical sections on one key,
//!   each a read-modify-write of a counter file plus an "inside" marker
//!   that only one process may hold. Lost updates and overlaps are counted.
//! - A `kill -9`'d holder of a leased lock: its key passes to a waiter in
//!   another process once the lease ends, with a higher fencing token.
//! - PostgreSQL restarted (crash, `-m immediate`) while 3 processes lock:
//!   they get typed errors (`LockError::Backend`), reconnect, and finish,
//!   still with no overlap.
//! - A `kill -9`'d worker holding 5 deliveries: the other workers get them
//!   after the visibility timeout; every message is acked, none twice.
//! - PostgreSQL crashed twice while a process publishes (each message
//!   retried until a publish of it returns `Ok`) and two workers ack: every
//!   publish that returned `Ok` is delivered and acked, none twice.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tollgate::{
    Durability, Engine, LockError, LockManager, LockRequest, OpenError, PgConfig, QueueConfig, TopicConfig,
};

const ROUNDS: u64 = 150;

fn main() {
    match std::env::var("TOLLGATE_CHILD") {
        Ok(role) => child(&role),
        Err(_) => parent(),
    }
}

/// One scenario, run by the parent against the shared server.
type Scenario = fn(&tollgate_pgtemp::Server);

fn parent() {
    let server = tollgate_pgtemp::server();
    let scenarios: [(&str, Scenario); 5] = [
        ("three processes exclude each other on one key", mutual_exclusion),
        ("a kill -9'd holder's key passes on with a higher fencing token", killed_holder),
        ("a PostgreSQL crash and restart under load: typed errors, then recovery", server_restart),
        ("a kill -9'd worker's deliveries come back; nothing acked comes back, nothing is lost", killed_worker),
        ("queues through PostgreSQL crashes: every acknowledged publish is delivered and acked once", queue_restart),
    ];
    let mut failed = 0;
    let scenarios_run = scenarios.len();
    for (name, scenario) in scenarios {
        let started = Instant::now();
        match std::panic::catch_unwind(|| scenario(server)) {
            Ok(()) => println!("test {name} ... ok ({:.1} s)", started.elapsed().as_secs_f64()),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("test result: {} passed; {failed} failed", scenarios_run - failed);
    if failed > 0 {
        std::process::exit(1);
    }
}

/// What every child needs to connect.
struct Setup {
    url: String,
    schema: String,
    dir: PathBuf,
}

impl Setup {
    fn new(server: &tollgate_pgtemp::Server) -> Setup {
        let dir = tempfile::tempdir().expect("a temporary directory").keep();
        Setup { url: server.url(), schema: server.schema_name(), dir }
    }

    fn spawn(&self, role: &str, index: usize) -> Child {
        Command::new(std::env::current_exe().expect("the test binary"))
            .env("TOLLGATE_CHILD", role)
            .env("CHILD_URL", &self.url)
            .env("CHILD_SCHEMA", &self.schema)
            .env("CHILD_DIR", &self.dir)
            .env("CHILD_INDEX", index.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("a child process")
    }
}

/// The child's settings: a short client TTL, so a killed child's keys pass
/// on within seconds.
fn child_config() -> PgConfig {
    let url = std::env::var("CHILD_URL").expect("CHILD_URL");
    let schema = std::env::var("CHILD_SCHEMA").expect("CHILD_SCHEMA");
    PgConfig::new(&url)
        .and_then(|c| c.schema(&schema))
        .expect("a valid configuration")
        .client_ttl(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(5))
        .label(&format!("child {}", std::env::var("CHILD_INDEX").unwrap_or_default()))
}

/// `connect(child_config())`, retried for a minute: children may start
/// while the server restarts.
fn connect_retrying<T>(connect: impl Fn(PgConfig) -> Result<T, OpenError>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match connect(child_config()) {
            Ok(connected) => return connected,
            Err(error) if Instant::now() < deadline => {
                eprintln!("connect: {error}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(error) => panic!("could not connect: {error}"),
        }
    }
}

fn child(role: &str) {
    let dir = PathBuf::from(std::env::var("CHILD_DIR").expect("CHILD_DIR"));
    match role {
        "work" | "work-through-restarts" => work(&dir, false),
        "work-slowly" => work(&dir, true),
        "publish-through-restarts" => publish_through_restarts(&dir),
        "count" => count(&connect_retrying(LockManager::connect), &dir, false),
        "count-through-restarts" => count(&connect_retrying(LockManager::connect), &dir, true),
        "hold" => {
            let locks = connect_retrying(LockManager::connect);
            // A lease shorter than the client's TTL: the key passes on when
            // the lease ends, whether or not the killed client is noticed.
            let request = LockRequest::exclusive().lease(Duration::from_millis(1500));
            let guard = locks.acquire("held", request).expect("the first holder gets the key");
            println!("fence {}", guard.fencing_token().get());
            std::io::stdout().flush().expect("stdout");
            // Until killed.
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        "wait" => {
            let locks = connect_retrying(LockManager::connect);
            let guard = locks.lock_for("held", Duration::from_secs(60)).expect("the key passes on");
            println!("fence {}", guard.fencing_token().get());
        }
        other => panic!("unknown role {other}"),
    }
}

/// `ROUNDS` critical sections on "counter": each checks and takes the
/// "inside" marker, increments the counter file, and drops the marker.
/// Prints the violations seen, and (through restarts) the typed errors.
fn count(locks: &LockManager, dir: &Path, through_restarts: bool) {
    let (mut overlaps, mut errors, mut done) = (0u64, 0u64, 0u64);
    while done < ROUNDS {
        let guard = match locks.lock_for("counter", Duration::from_secs(30)) {
            Ok(guard) => guard,
            Err(LockError::Backend(error)) if through_restarts => {
                errors += 1;
                eprintln!("typed error: {error}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(error) => panic!("lock: {error}"),
        };
        let marker = dir.join("inside");
        if fs::OpenOptions::new().write(true).create_new(true).open(&marker).is_err() {
            overlaps += 1;
        }
        let counter = dir.join("counter");
        let value: u64 = fs::read_to_string(&counter).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        std::thread::yield_now();
        fs::write(&counter, (value + 1).to_string()).expect("write the counter");
        let _ = fs::remove_file(&marker);
        done += 1;
        match guard.release() {
            Ok(()) => {}
            // The release may be lost with the connection; the grant then
            // ends with this client's registration or is released later.
            Err(LockError::Backend(_)) if through_restarts => errors += 1,
            Err(error) => panic!("release: {error}"),
        }
    }
    println!("overlaps {overlaps} errors {errors}");
}

/// The numbers a child printed on its "name value" lines.
fn report(child: Child) -> Vec<(String, u64)> {
    let output = child.wait_with_output().expect("the child's output");
    assert!(output.status.success(), "a child failed: {:?}", output.status);
    let mut values = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.chunks(2) {
            if let [name, value] = pair
                && let Ok(value) = value.parse()
            {
                values.push((name.to_string(), value));
            }
        }
    }
    values
}

fn value(values: &[(String, u64)], name: &str) -> u64 {
    values.iter().find(|(n, _)| n == name).map(|&(_, v)| v).unwrap_or_else(|| panic!("no {name} in {values:?}"))
}

fn mutual_exclusion(server: &tollgate_pgtemp::Server) {
    let setup = Setup::new(server);
    let children: Vec<Child> = (0..3).map(|i| setup.spawn("count", i)).collect();
    let overlaps: u64 = children.into_iter().map(|c| value(&report(c), "overlaps")).sum();
    let counter: u64 = fs::read_to_string(setup.dir.join("counter")).expect("the counter").trim().parse().unwrap();
    println!("  3 processes × {ROUNDS}: counter {counter}, overlaps {overlaps}");
    assert_eq!(overlaps, 0, "two processes were inside at once");
    assert_eq!(counter, 3 * ROUNDS, "lost updates: the lock did not exclude");
}

fn killed_holder(server: &tollgate_pgtemp::Server) {
    let setup = Setup::new(server);
    let mut holder = setup.spawn("hold", 0);
    let mut line = String::new();
    BufReader::new(holder.stdout.as_mut().expect("piped")).read_line(&mut line).expect("the holder's fence");
    let first: u64 = line.trim().strip_prefix("fence ").expect("a fence line").parse().unwrap();
    let waiter = setup.spawn("wait", 1);
    // Let the waiter queue behind the live holder, then kill the holder.
    std::thread::sleep(Duration::from_millis(500));
    let killed_at = Instant::now();
    holder.kill().expect("kill -9 the holder");
    holder.wait().expect("reap the holder");
    let second = value(&report(waiter), "fence");
    println!(
        "  holder's fence {first}; the waiter's {second}, {:.1} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    assert!(second > first, "the next grant must carry a higher fencing token");
}

fn server_restart(server: &tollgate_pgtemp::Server) {
    let setup = Setup::new(server);
    let children: Vec<Child> = (0..3).map(|i| setup.spawn("count-through-restarts", i)).collect();
    // Crash the server while they run, twice.
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(700));
        server.restart_immediate();
    }
    let reports: Vec<_> = children.into_iter().map(report).collect();
    let overlaps: u64 = reports.iter().map(|r| value(r, "overlaps")).sum();
    let errors: u64 = reports.iter().map(|r| value(r, "errors")).sum();
    let counter: u64 = fs::read_to_string(setup.dir.join("counter")).expect("the counter").trim().parse().unwrap();
    println!("  through 2 crashes: counter {counter}, overlaps {overlaps}, typed errors {errors}");
    assert_eq!(overlaps, 0, "two processes were inside at once");
    assert_eq!(counter, 3 * ROUNDS);
}

/// The messages of the queue scenarios.
const JOBS: u64 = 300;
/// Their topic and worker group.
const TOPIC: &str = "jobs";
const GROUP: &str = "workers";

/// The worker group every worker opens: a short visibility timeout, so a
/// killed worker's deliveries come back soon.
fn queue_config() -> QueueConfig {
    QueueConfig { visibility_timeout: Duration::from_secs(2), max_attempts: 100, ..QueueConfig::default() }
}

/// Receives and acks until `dir/stop` exists, appending each message acked
/// (`payload@offset`) to `dir/acked-<index>`, after the ack returned. A slow
/// worker takes 5 deliveries, prints "holding 5" and sleeps until killed.
fn work(dir: &Path, slowly: bool) {
    let engine = connect_retrying(Engine::connect);
    let worker = loop {
        match engine.topic(TOPIC).and_then(|topic| topic.worker_with(GROUP, queue_config())) {
            Ok(worker) => break worker,
            Err(error) => {
                eprintln!("opening the group: {error}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    let index = std::env::var("CHILD_INDEX").expect("CHILD_INDEX");
    if slowly {
        let mut held = Vec::new();
        while held.len() < 5 {
            if let Ok(Some(delivery)) = worker.receive(Duration::from_secs(5)) {
                held.push(delivery);
            }
        }
        println!("holding {}", held.len());
        std::io::stdout().flush().expect("stdout");
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
    let mut log =
        fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("acked-{index}"))).expect("the ack log");
    let mut errors = 0u64;
    while !dir.join("stop").exists() {
        let delivery = match worker.receive(Duration::from_millis(200)) {
            Ok(Some(delivery)) => delivery,
            Ok(None) => continue,
            Err(error) => {
                errors += 1;
                eprintln!("receive: {error}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let payload = String::from_utf8(delivery.payload().to_vec()).expect("a UTF-8 payload");
        let offset = delivery.offset().get();
        match delivery.ack() {
            Ok(()) => writeln!(log, "{payload}@{offset}").expect("write the ack log"),
            Err(error) => {
                // Not acknowledged: the message comes back to someone.
                errors += 1;
                eprintln!("ack: {error}");
            }
        }
    }
    println!("errors {errors}");
}

/// Publishes `JOBS` messages one at a time through server crashes, each
/// retried until a publish of it returns `Ok`; appends each message whose
/// publish returned `Ok` to `dir/published`.
fn publish_through_restarts(dir: &Path) {
    let engine = connect_retrying(Engine::connect);
    let mut log = fs::OpenOptions::new().create(true).append(true).open(dir.join("published")).expect("the log");
    let mut errors = 0u64;
    for job in 0..JOBS {
        loop {
            match engine.topic(TOPIC).map(|topic| topic.publish(format!("job {job}"))) {
                Ok(Ok(_)) => break,
                Ok(Err(error)) => eprintln!("publish: {error}"),
                Err(error) => eprintln!("topic: {error}"),
            }
            errors += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        writeln!(log, "job {job}").expect("write the log");
        // Paced, so that the publishing spans the server's crashes.
        std::thread::sleep(Duration::from_millis(8));
    }
    println!("errors {errors}");
}

/// Every message acked (`payload@offset`), with how many times, from the
/// workers' logs. An offset is acked at most once; a payload may be at two
/// offsets when a publish whose answer was lost was retried.
fn acked(dir: &Path) -> std::collections::BTreeMap<String, u64> {
    let mut acked = std::collections::BTreeMap::new();
    for entry in fs::read_dir(dir).expect("the scenario's directory") {
        let path = entry.expect("an entry").path();
        if path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("acked-")) {
            for line in fs::read_to_string(&path).expect("an ack log").lines() {
                *acked.entry(line.to_owned()).or_insert(0) += 1;
            }
        }
    }
    acked
}

/// The payloads of acked messages.
fn payloads(acked: &std::collections::BTreeMap<String, u64>) -> std::collections::BTreeSet<String> {
    acked.keys().map(|line| line.rsplit_once('@').map_or(line.as_str(), |(payload, _)| payload).to_owned()).collect()
}

/// Waits (at most two minutes) until the workers acked every one of `expected`.
fn until_acked(dir: &Path, expected: &std::collections::BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !payloads(&acked(dir)).is_superset(expected) {
        assert!(Instant::now() < deadline, "not every message was acked within two minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The parent's engine on the scenario's schema, with the jobs topic.
fn parent_engine(setup: &Setup) -> Engine {
    let config = PgConfig::new(&setup.url).and_then(|c| c.schema(&setup.schema)).expect("a valid configuration");
    let engine = Engine::connect(config).expect("the parent connects");
    let sync = TopicConfig { durability: Durability::Sync, ..TopicConfig::default() };
    let topic = engine.create_topic(TOPIC, sync).expect("the jobs topic");
    // The group exists before anything is published, so it gets every job.
    drop(topic.worker_with(GROUP, queue_config()).expect("the worker group"));
    engine
}

fn killed_worker(server: &tollgate_pgtemp::Server) {
    let setup = Setup::new(server);
    let engine = parent_engine(&setup);
    let topic = engine.topic(TOPIC).unwrap();
    let jobs: std::collections::BTreeSet<String> = (0..JOBS).map(|job| format!("job {job}")).collect();
    for job in &jobs {
        topic.publish(job.as_str()).expect("publish");
    }
    let mut slow = setup.spawn("work-slowly", 0);
    let mut line = String::new();
    BufReader::new(slow.stdout.as_mut().expect("piped")).read_line(&mut line).expect("the slow worker's line");
    assert_eq!(line.trim(), "holding 5");
    slow.kill().expect("kill -9 the slow worker");
    slow.wait().expect("reap it");
    let workers: Vec<Child> = (1..3).map(|i| setup.spawn("work", i)).collect();
    until_acked(&setup.dir, &jobs);
    fs::write(setup.dir.join("stop"), "").expect("the stop file");
    for worker in workers {
        report(worker);
    }
    let acked = acked(&setup.dir);
    let twice: Vec<_> = acked.iter().filter(|&(_, &n)| n > 1).collect();
    println!("  {} messages, 5 held by the killed worker: {} acked, {} acked twice", JOBS, acked.len(), twice.len());
    assert!(twice.is_empty(), "acked twice: {twice:?}");
    assert_eq!(acked.len() as u64, JOBS, "one offset per job, each acked once");
    assert_eq!(payloads(&acked), jobs, "lost or unknown messages");
}

fn queue_restart(server: &tollgate_pgtemp::Server) {
    let setup = Setup::new(server);
    drop(parent_engine(&setup));
    let workers: Vec<Child> = (0..2).map(|i| setup.spawn("work-through-restarts", i)).collect();
    let publisher = setup.spawn("publish-through-restarts", 2);
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(700));
        server.restart_immediate();
    }
    let publish_errors = value(&report(publisher), "errors");
    let published: std::collections::BTreeSet<String> =
        fs::read_to_string(setup.dir.join("published")).expect("the publish log").lines().map(str::to_owned).collect();
    assert_eq!(published.len() as u64, JOBS, "every job was published in the end");
    until_acked(&setup.dir, &published);
    fs::write(setup.dir.join("stop"), "").expect("the stop file");
    let worker_errors: u64 = workers.into_iter().map(|w| value(&report(w), "errors")).sum();
    let acked = acked(&setup.dir);
    let twice: Vec<_> = acked.iter().filter(|&(_, &n)| n > 1).collect();
    println!(
        "  through 2 crashes: {} published ({publish_errors} typed errors), {} acked ({worker_errors} typed errors), {} acked twice",
        published.len(),
        acked.len(),
        twice.len()
    );
    assert!(twice.is_empty(), "acked twice: {twice:?}");
    assert!(payloads(&acked).is_superset(&published), "an acknowledged publish was lost");
}
