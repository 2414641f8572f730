//! The two backends side by side, with Redis as the peer a storefront would otherwise use: the same
//! operations on the embedded engine, on PostgreSQL (a throwaway server with `fsync = on`, from
//! `tollgate-pgtemp`) and on Redis (a throwaway `redis-server`), with 1 client and with 8.
//!
//! - `backend_lock_unlock/<backend>/<clients>`: an exclusive lock and its release, each client on keys of its
//!   own (uncontended). tollgate: `LockManager::lock` and the guard's drop, on an embedded manager and on one
//!   from `LockManager::connect`. Redis: `SET key token NX PX 5000` and the compare-and-delete Lua release.
//!   With 8 clients the time is per operation of the whole run (the inverse of the throughput).
//!
//! Run: `cargo bench -p tollgate-bench --bench backends`. Needs `redis-server` and the PostgreSQL server
//! binaries (`apt-get install -y redis-server postgresql`); `REDIS_URL` and `TOLLGATE_PG_URL` name existing
//! servers instead. docs/BENCHMARKS.md has the numbers.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tollgate::{LockManager, PgConfig};

mod support;
use support::redis::{Persistence, RedisServer};
use support::{Budget, run_threads};

/// Clients in the concurrent runs.
const CLIENTS: usize = 8;

/// Redis's compare-and-delete release: delete the key only if it still holds our token.
const REDIS_RELEASE: &str =
    r#"if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end"#;

/// A PostgreSQL lock manager on the durable test server, in a schema of its own.
fn postgres_locks() -> LockManager {
    let server = tollgate_pgtemp::durable_server();
    let config = PgConfig::new(&server.url())
        .and_then(|config| config.schema(&server.schema_name()))
        .expect("the test server's configuration")
        .connections(CLIENTS);
    LockManager::connect(config).expect("connecting to the benchmark's PostgreSQL")
}

/// `iters` lock+unlock calls spread over `clients` threads, each on its own key; the whole run's time.
fn lock_unlock_tollgate(locks: &LockManager, clients: usize, iters: u64) -> Duration {
    let per_client = iters.div_ceil(clients as u64);
    let span = run_threads(clients, Budget::Calls(per_client), |client| {
        let key = format!("bench:{client}");
        move |_| drop(black_box(locks.lock(&key).expect("an uncontended lock")))
    });
    span.elapsed.mul_f64(iters as f64 / (per_client * clients as u64) as f64)
}

fn lock_unlock_redis(redis: &RedisServer, clients: usize, iters: u64) -> Duration {
    let per_client = iters.div_ceil(clients as u64);
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
    span.elapsed.mul_f64(iters as f64 / (per_client * clients as u64) as f64)
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
    let _ = Instant::now();
}

criterion_group!(benches, backend_lock_unlock);
criterion_main!(benches);
