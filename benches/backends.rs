//! The two backends side by side, with Redis as the peer a storefront would otherwise use: the same
//! operations on the embedded engine, on PostgreSQL (a throwaway server with `fsync = on`, from
//! `tollgate-pgtemp`) and on Redis (a throwaway `redis-server`), with 1 client and with 8.
//!
//! - `backend_lock_unlock/<backend>/<clients>`: an exclusive lock and its release, each client on keys of its
//!   own (uncontended). tollgate: `LockManager::lock` and the guard's drop, on an embedded manager and on one
//!   from `LockManager::connect`. Redis: `SET key token NX PX 5000` and the compare-and-delete Lua release.
//! - `backend_publish/<backend>/<clients>`: one 64-byte message published and durable. tollgate:
//!   `Topic::publish` on a `Durability::Sync` topic, embedded (data directory on disk) and on PostgreSQL.
//!   Redis: `XADD` on a server with `appendfsync always`.
//! - `backend_receive_ack/<backend>/<clients>`: one message received and acknowledged, from a queue filled
//!   before the timed part (in batches of [`FILL_BATCH`]) with exactly the messages the run takes. tollgate:
//!   `Worker::receive` + `Delivery::ack` on one worker group of a `Sync` topic, a `Worker` handle per client.
//!   Redis Streams: `XREADGROUP GROUP g c<n> COUNT 1 STREAMS s >` + `XACK`, a consumer per client, `appendfsync
//!   always`.
//! - `backend_locked_checkout/<backend>/<clients>`: the storefront's checkout step. tollgate: 2 distinct SKU locks
//!   of [`SKUS`], at random, taken together with `Topic::transaction(&session, keys, 5 s)` (a session of
//!   `Engine::locks` per client), `commit` of two messages (reservation and order) to a `Sync` topic, and the held
//!   locks dropped (released). Redis: `SET key token NX PX 5000` on both keys in one pipeline (all or nothing: a
//!   partial grant is released and retried after a short random pause), two `XADD`s in one `MULTI`/`EXEC`, and
//!   each key released with the compare-and-delete Lua script; `appendfsync always`. Both make four round trips
//!   per checkout: take both keys, publish both messages, release each key.
//!
//! With 8 clients the time is per operation of the whole run (the inverse of the throughput), in every group.
//!
//! Run: `cargo bench -p tollgate-bench --bench backends`. Needs `redis-server` and the PostgreSQL server
//! binaries (`apt-get install -y redis-server postgresql`); `REDIS_URL` and `TOLLGATE_PG_URL` name existing
//! servers instead (a `REDIS_URL` server keeps its own persistence settings). docs/BENCHMARKS.md has the
//! numbers.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tempfile::TempDir;
use tollgate::{Durability, Engine, LockManager, Message, PgConfig, Topic, TopicConfig, Worker};

mod support;
use support::redis::{Persistence, RedisServer};
use support::{Budget, Span, run_threads};

/// Clients in the concurrent runs.
const CLIENTS: usize = 8;

/// Redis's compare-and-delete release: delete the key only if it still holds our token.
const REDIS_RELEASE: &str =
    r#"if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end"#;

/// The payload of `backend_publish` and `backend_receive_ack`.
const PAYLOAD: [u8; 64] = [b'x'; 64];

/// Messages per publish (tollgate) or pipeline (Redis) when filling a queue before a timed run.
const FILL_BATCH: u64 = 1000;

/// The SKUs a checkout picks its 2 keys from.
const SKUS: u64 = 50;

/// How long a checkout waits for its locks (tollgate) or keeps retrying them (Redis); a Redis lock's lease.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// The worker group (tollgate) and consumer group (Redis) of `backend_receive_ack`.
const GROUP: &str = "g";

/// Redis checkouts that found a key taken and tried again (contention), over the whole bench.
static REDIS_RETRIES: AtomicU64 = AtomicU64::new(0);

/// PostgreSQL settings for the durable test server, in a fresh schema of its own.
fn postgres_config() -> PgConfig {
    let server = tollgate_pgtemp::durable_server();
    PgConfig::new(&server.url())
        .and_then(|config| config.schema(&server.schema_name()))
        .expect("the test server's configuration")
        .connections(CLIENTS)
}

/// A PostgreSQL lock manager on the durable test server, in a schema of its own.
fn postgres_locks() -> LockManager {
    LockManager::connect(postgres_config()).expect("connecting to the benchmark's PostgreSQL")
}

/// An engine of either backend, with what must outlive it.
struct Backend {
    name: &'static str,
    engine: Engine,
    _dir: Option<TempDir>,
}

impl Backend {
    /// The embedded engine, its data directory on disk (what `Durability::Sync` pays for is the fsync).
    fn embedded() -> Backend {
        let dir = support::disk_dir();
        let engine = Engine::open(dir.path()).expect("opening the embedded engine");
        Backend { name: "embedded", engine, _dir: Some(dir) }
    }

    /// An engine on the durable PostgreSQL test server, in a schema of its own.
    fn postgres() -> Backend {
        let engine = Engine::connect(postgres_config()).expect("connecting to the benchmark's PostgreSQL");
        Backend { name: "postgres", engine, _dir: None }
    }

    /// Both, embedded first.
    fn both() -> [Backend; 2] {
        [Backend::embedded(), Backend::postgres()]
    }

    /// A new `Durability::Sync` topic.
    fn sync_topic(&self, name: &str) -> Topic {
        let config = TopicConfig { durability: Durability::Sync, ..TopicConfig::default() };
        self.engine.create_topic(name, config).expect("creating a Sync topic")
    }
}

/// A Redis server with `appendfsync always`, its keys `keys` deleted (for a `REDIS_URL` server).
fn redis_fsync_always(keys: &[&str]) -> RedisServer {
    let redis = RedisServer::start(Persistence::FsyncAlways);
    let mut con = redis.connection().expect("a Redis connection");
    let _: i64 = redis::cmd("DEL").arg(keys).query(&mut con).expect("DEL");
    redis
}

/// Calls per client for `iters` calls over `clients`, rounded up.
fn per_client(clients: usize, iters: u64) -> u64 {
    iters.div_ceil(clients as u64)
}

/// The time of `iters` calls at the rate of `span` (which made `per_client` calls on each of `clients`).
fn scaled(span: Span, clients: usize, per_client: u64, iters: u64) -> Duration {
    span.elapsed.mul_f64(iters as f64 / (per_client * clients as u64) as f64)
}

/// A small xorshift generator: a thread's SKUs and back-off pauses.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// Two distinct SKU keys, in ascending order.
    fn two_skus(&mut self) -> [String; 2] {
        let a = self.below(SKUS);
        let b = (a + 1 + self.below(SKUS - 1)) % SKUS;
        let (a, b) = (a.min(b), a.max(b));
        [format!("sku:{a:02}"), format!("sku:{b:02}")]
    }
}

// ---- backend_lock_unlock ----

/// `iters` lock+unlock calls spread over `clients` threads, each on its own key; the whole run's time.
fn lock_unlock_tollgate(locks: &LockManager, clients: usize, iters: u64) -> Duration {
    let per_client = per_client(clients, iters);
    let span = run_threads(clients, Budget::Calls(per_client), |client| {
        let key = format!("bench:{client}");
        move |_| drop(black_box(locks.lock(&key).expect("an uncontended lock")))
    });
    scaled(span, clients, per_client, iters)
}

fn lock_unlock_redis(redis: &RedisServer, clients: usize, iters: u64) -> Duration {
    let per_client = per_client(clients, iters);
    let span = run_threads(clients, Budget::Calls(per_client), |client| {
        let mut con = redis.connection().expect("a Redis connection");
        let release = redis::Script::new(REDIS_RELEASE);
        let key = format!("bench:{client}");
        move |token| {
            let set: Option<String> =
                redis::cmd("SET").arg(&key).arg(token).arg("NX").arg("PX").arg(5000).query(&mut con).expect("SET");
            assert_eq!(set.as_deref(), Some("OK"), "the key was free");
            let deleted: i64 = release.key(&key).arg(token).invoke(&mut con).expect("the release");
            assert_eq!(deleted, 1, "our token was still there");
        }
    });
    scaled(span, clients, per_client, iters)
}

fn backend_lock_unlock(c: &mut Criterion) {
    let embedded = LockManager::new();
    let postgres = postgres_locks();
    let redis = RedisServer::start(Persistence::None);
    let mut g = c.benchmark_group("backend_lock_unlock");
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(20);
    for clients in [1, CLIENTS] {
        g.bench_function(BenchmarkId::new("embedded", clients), |b| {
            b.iter_custom(|iters| lock_unlock_tollgate(&embedded, clients, iters))
        });
        g.bench_function(BenchmarkId::new("postgres", clients), |b| {
            b.iter_custom(|iters| lock_unlock_tollgate(&postgres, clients, iters))
        });
        g.bench_function(BenchmarkId::new("redis_set_nx_px+lua", clients), |b| {
            b.iter_custom(|iters| lock_unlock_redis(&redis, clients, iters))
        });
    }
    g.finish();
}

// ---- backend_publish ----

fn publish_tollgate(topic: &Topic, clients: usize, iters: u64) -> Duration {
    let per_client = per_client(clients, iters);
    let span = run_threads(clients, Budget::Calls(per_client), |_| {
        move |_| {
            black_box(topic.publish(PAYLOAD).expect("a publish"));
        }
    });
    scaled(span, clients, per_client, iters)
}

fn publish_redis(redis: &RedisServer, clients: usize, iters: u64) -> Duration {
    let per_client = per_client(clients, iters);
    let span = run_threads(clients, Budget::Calls(per_client), |_| {
        let mut con = redis.connection().expect("a Redis connection");
        move |_| {
            let id: String =
                redis::cmd("XADD").arg("publish").arg("*").arg("p").arg(&PAYLOAD[..]).query(&mut con).expect("XADD");
            assert!(!id.is_empty(), "XADD returned an entry id");
        }
    });
    scaled(span, clients, per_client, iters)
}

fn backend_publish(c: &mut Criterion) {
    let backends = Backend::both();
    let topics: Vec<Topic> = backends.iter().map(|backend| backend.sync_topic("publish")).collect();
    let redis = redis_fsync_always(&["publish"]);
    let mut g = support::group(c, "backend_publish", Duration::from_secs(4));
    for clients in [1, CLIENTS] {
        for (backend, topic) in backends.iter().zip(&topics) {
            g.bench_function(BenchmarkId::new(backend.name, clients), |b| {
                b.iter_custom(|iters| publish_tollgate(topic, clients, iters))
            });
        }
        g.bench_function(BenchmarkId::new("redis_xadd_fsync_always", clients), |b| {
            b.iter_custom(|iters| publish_redis(&redis, clients, iters))
        });
    }
    g.finish();
}

// ---- backend_receive_ack ----

/// Publishes `messages` messages to `topic` (not timed), in batches.
fn fill_tollgate(topic: &Topic, messages: u64) {
    let mut left = messages;
    while left > 0 {
        let batch = left.min(FILL_BATCH);
        let range = topic.publish_batch((0..batch).map(|_| Message::new(&PAYLOAD[..]))).expect("filling the queue");
        assert_eq!(range.end.get() - range.start.get(), batch, "the whole batch was published");
        left -= batch;
    }
}

/// Fills the queue with exactly the messages of the run, then has each client receive and ack its share; every
/// receive must find a message.
fn receive_ack_tollgate(topic: &Topic, worker: &Worker, clients: usize, iters: u64) -> Duration {
    let per_client = per_client(clients, iters);
    fill_tollgate(topic, per_client * clients as u64);
    let span = run_threads(clients, Budget::Calls(per_client), |_| {
        let worker = worker.clone();
        move |_| {
            let delivery = worker.receive(LOCK_WAIT).expect("a receive").expect("a message in the filled queue");
            black_box(delivery.payload());
            delivery.ack().expect("an ack");
        }
    });
    scaled(span, clients, per_client, iters)
}

/// One entry of an `XREADGROUP` reply: its id and its field-value pairs.
type StreamEntry = (String, Vec<Vec<u8>>);

fn fill_redis(con: &mut redis::Connection, messages: u64) {
    let mut left = messages;
    while left > 0 {
        let batch = left.min(FILL_BATCH);
        let mut pipe = redis::pipe();
        for _ in 0..batch {
            pipe.cmd("XADD").arg("queue").arg("*").arg("p").arg(&PAYLOAD[..]);
        }
        let ids: Vec<String> = pipe.query(con).expect("filling the stream");
        assert_eq!(ids.len() as u64, batch, "the whole pipeline was added");
        left -= batch;
    }
}

fn receive_ack_redis(redis: &RedisServer, clients: usize, iters: u64) -> Duration {
    let per_client = per_client(clients, iters);
    let mut con = redis.connection().expect("a Redis connection");
    fill_redis(&mut con, per_client * clients as u64);
    let span = run_threads(clients, Budget::Calls(per_client), |client| {
        let mut con = redis.connection().expect("a Redis connection");
        let consumer = format!("c{client}");
        move |_| {
            let reply: Option<Vec<(String, Vec<StreamEntry>)>> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&consumer)
                .arg("COUNT")
                .arg(1)
                .arg("STREAMS")
                .arg("queue")
                .arg(">")
                .query(&mut con)
                .expect("XREADGROUP");
            let mut streams = reply.expect("a message in the filled stream");
            let (_, mut entries) = streams.pop().expect("the stream's entries");
            let (id, fields) = entries.pop().expect("one entry");
            black_box(fields);
            let acked: i64 = redis::cmd("XACK").arg("queue").arg(GROUP).arg(&id).query(&mut con).expect("XACK");
            assert_eq!(acked, 1, "the entry was pending");
        }
    });
    scaled(span, clients, per_client, iters)
}

fn backend_receive_ack(c: &mut Criterion) {
    let backends = Backend::both();
    let queues: Vec<(Topic, Worker)> = backends
        .iter()
        .map(|backend| {
            let topic = backend.sync_topic("jobs");
            let worker = topic.worker(GROUP).expect("a worker group");
            (topic, worker)
        })
        .collect();
    let redis = redis_fsync_always(&["queue"]);
    let mut con = redis.connection().expect("a Redis connection");
    let created: String = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("queue")
        .arg(GROUP)
        .arg("$")
        .arg("MKSTREAM")
        .query(&mut con)
        .expect("XGROUP");
    assert_eq!(created, "OK");
    let mut g = support::group(c, "backend_receive_ack", Duration::from_secs(4));
    for clients in [1, CLIENTS] {
        for (backend, (topic, worker)) in backends.iter().zip(&queues) {
            g.bench_function(BenchmarkId::new(backend.name, clients), |b| {
                b.iter_custom(|iters| receive_ack_tollgate(topic, worker, clients, iters))
            });
        }
        g.bench_function(BenchmarkId::new("redis_streams_fsync_always", clients), |b| {
            b.iter_custom(|iters| receive_ack_redis(&redis, clients, iters))
        });
    }
    g.finish();
}

// ---- backend_locked_checkout ----

fn checkout_tollgate(engine: &Engine, orders: &Topic, clients: usize, iters: u64) -> Duration {
    let per_client = per_client(clients, iters);
    let span = run_threads(clients, Budget::Calls(per_client), |client| {
        let session = engine.locks().session();
        let mut rng = Rng::new(client as u64 + 1);
        move |i| {
            let keys = rng.two_skus();
            let tx = orders.transaction(&session, &keys, LOCK_WAIT).expect("both SKU locks");
            let reservation = Message::new(format!("reserve {} {} for client {client} order {i}", keys[0], keys[1]));
            let order = Message::new(format!("order {i} of client {client}: {} {}", keys[0], keys[1]));
            let (offsets, held) = tx.commit([reservation, order]).expect("the checkout's commit");
            assert_eq!(offsets.end.get() - offsets.start.get(), 2, "both messages were published");
            drop(held);
        }
    });
    scaled(span, clients, per_client, iters)
}

fn checkout_redis(redis: &RedisServer, clients: usize, iters: u64) -> Duration {
    let per_client = per_client(clients, iters);
    let span = run_threads(clients, Budget::Calls(per_client), |client| {
        let mut con = redis.connection().expect("a Redis connection");
        let release = redis::Script::new(REDIS_RELEASE);
        let mut rng = Rng::new(client as u64 + 1);
        move |i| {
            let keys = rng.two_skus();
            let token = format!("{client}:{i}");
            let deadline = Instant::now() + LOCK_WAIT;
            loop {
                let mut take = redis::pipe();
                for key in &keys {
                    take.cmd("SET").arg(key).arg(&token).arg("NX").arg("PX").arg(LOCK_WAIT.as_millis() as u64);
                }
                let granted: Vec<Option<String>> = take.query(&mut con).expect("SET NX PX");
                if granted.iter().all(Option::is_some) {
                    break;
                }
                for (key, _) in keys.iter().zip(&granted).filter(|(_, got)| got.is_some()) {
                    let deleted: i64 = release.key(key).arg(&token).invoke(&mut con).expect("the release");
                    assert_eq!(deleted, 1, "our token was still there");
                }
                REDIS_RETRIES.fetch_add(1, Ordering::Relaxed);
                assert!(Instant::now() < deadline, "both SKU locks within {LOCK_WAIT:?}");
                thread::sleep(Duration::from_micros(250 + rng.below(750)));
            }
            let reservation = format!("reserve {} {} for client {client} order {i}", keys[0], keys[1]);
            let order = format!("order {i} of client {client}: {} {}", keys[0], keys[1]);
            let ids: Vec<String> = redis::pipe()
                .atomic()
                .cmd("XADD")
                .arg("orders")
                .arg("*")
                .arg("p")
                .arg(reservation)
                .cmd("XADD")
                .arg("orders")
                .arg("*")
                .arg("p")
                .arg(order)
                .query(&mut con)
                .expect("MULTI/EXEC of both XADDs");
            assert_eq!(ids.len(), 2, "both entries were added");
            for key in &keys {
                let deleted: i64 = release.key(key).arg(&token).invoke(&mut con).expect("the release");
                assert_eq!(deleted, 1, "our token was still there");
            }
        }
    });
    scaled(span, clients, per_client, iters)
}

fn backend_locked_checkout(c: &mut Criterion) {
    let backends = Backend::both();
    let orders: Vec<Topic> = backends.iter().map(|backend| backend.sync_topic("orders")).collect();
    let sku_keys: Vec<String> = (0..SKUS).map(|n| format!("sku:{n:02}")).collect();
    let mut redis_keys: Vec<&str> = sku_keys.iter().map(String::as_str).collect();
    redis_keys.push("orders");
    let redis = redis_fsync_always(&redis_keys);
    let mut g = support::group(c, "backend_locked_checkout", Duration::from_secs(4));
    for clients in [1, CLIENTS] {
        for (backend, topic) in backends.iter().zip(&orders) {
            g.bench_function(BenchmarkId::new(backend.name, clients), |b| {
                b.iter_custom(|iters| checkout_tollgate(&backend.engine, topic, clients, iters))
            });
        }
        g.bench_function(BenchmarkId::new("redis_set_nx+multi_xadd+lua_fsync_always", clients), |b| {
            b.iter_custom(|iters| checkout_redis(&redis, clients, iters))
        });
    }
    g.finish();
    let retries = REDIS_RETRIES.load(Ordering::Relaxed);
    if retries > 0 {
        eprintln!("backend_locked_checkout: Redis checkouts retried after finding a SKU taken: {retries}");
    }
}

criterion_group!(benches, backend_lock_unlock, backend_publish, backend_receive_ack, backend_locked_checkout);
criterion_main!(benches);
