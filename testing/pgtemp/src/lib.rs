//! A real, throwaway PostgreSQL server for tollgate's tests.
//!
//! [`server()`] starts one server per test process, the first time a test asks for it: `initdb` into a new
//! temporary directory, then `pg_ctl start` listening on 127.0.0.1 only, on a free port, with trust
//! authentication and the superuser `postgres`. Tests share it, and keep out of each other's way with a schema
//! each ([`Server::schema_name`]).
//!
//! ```no_run
//! let server = tollgate_pgtemp::server();
//! let url = server.url(); // postgres://postgres@127.0.0.1:<port>/postgres
//! let schema = server.schema_name(); // t_<pid>_<seconds>_<n>: CREATE SCHEMA it, and work in it
//! # let _ = (url, schema);
//! ```
//!
//! The server goes when the process does: an exit handler stops it and removes its directory, and a watchdog
//! process does the same if the test process dies without running exit handlers (`kill -9`, an abort, Ctrl-C).
//!
//! The server runs with `fsync = off`, for speed. That loses data only if the machine crashes, never when
//! PostgreSQL does, so [`Server::restart_immediate`] (a simulated PostgreSQL crash) keeps every committed
//! transaction, as a real server would.
//!
//! # Finding PostgreSQL
//!
//! The server binaries come from `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`, else the
//! `initdb` on `PATH`. A process running as root runs them as the `postgres` OS user, as they refuse root.
//!
//! With `TOLLGATE_PG_URL` set, the tests use that server instead and start none; they cannot restart it.
//!
//! # Failures
//!
//! A test that needs PostgreSQL fails when there is none: [`server()`] panics with what to install. It never
//! skips the test.

mod bindir;
mod cluster;

use std::env;
use std::process;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cluster::Cluster;

/// The environment variable naming an existing server to use instead of a throwaway one.
const URL_VAR: &str = "TOLLGATE_PG_URL";

/// This process's server, or why it has none (every later call fails with the same message, at once).
static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();

/// This process's PostgreSQL server, started by the first call; later and concurrent calls get the same one.
///
/// The first call blocks while `initdb` and `pg_ctl start` run: under a second on an idle machine.
///
/// # Panics
///
/// If the server cannot start: when the PostgreSQL server binaries are not installed (the message says how to
/// install them, or to set `TOLLGATE_PG_URL`), or when `initdb` or `pg_ctl start` fails (the message holds their
/// output and the end of the server's log). Later calls panic with the same message.
#[track_caller]
pub fn server() -> &'static Server {
    match SERVER.get_or_init(Server::launch) {
        Ok(server) => server,
        Err(e) => panic!("tollgate-pgtemp: {e}"),
    }
}

/// A PostgreSQL server for the tests of one process; see [`server()`].
#[derive(Debug)]
pub struct Server {
    kind: Kind,
    /// When the server was launched, in seconds since the Unix epoch: part of every schema name, as a process id
    /// alone could repeat on a long-lived `TOLLGATE_PG_URL` server.
    launched: u64,
}

#[derive(Debug)]
enum Kind {
    /// The server `TOLLGATE_PG_URL` names.
    External(String),
    /// One started by this process.
    Throwaway(Cluster),
}

impl Server {
    fn launch() -> Result<Server, String> {
        let launched = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
        let kind = match env::var(URL_VAR) {
            Ok(url) if !url.is_empty() => Kind::External(url),
            Err(env::VarError::NotUnicode(_)) => return Err(format!("{URL_VAR} is not valid UTF-8")),
            _ => {
                let cluster = Cluster::create()?;
                remove_at_exit();
                Kind::Throwaway(cluster)
            }
        };
        Ok(Server { kind, launched })
    }

    /// The URL to connect to: `postgres://postgres@127.0.0.1:<port>/postgres` (user `postgres`, no password),
    /// or `TOLLGATE_PG_URL` when set.
    pub fn url(&self) -> String {
        match &self.kind {
            Kind::External(url) => url.clone(),
            Kind::Throwaway(cluster) => format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port()),
        }
    }

    /// A schema name no other call returns, in this process or another: `t_<process id>_<seconds>_<n>`, in
    /// lower case, so that it needs no quoting. Only a name: the test creates the schema.
    pub fn schema_name(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        format!("t_{}_{}_{}", process::id(), self.launched, NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The server's process id (the postmaster's), or `None` when it is stopped or is `TOLLGATE_PG_URL`'s.
    pub fn pid(&self) -> Option<u32> {
        match &self.kind {
            Kind::External(_) => None,
            Kind::Throwaway(cluster) => cluster.pid(),
        }
    }

    /// Simulates a PostgreSQL crash and recovery: [`stop_immediate`](Self::stop_immediate), then
    /// [`start`](Self::start), on the same port and data. No other thread's stop or start comes in between;
    /// every test of the process sees the crash.
    ///
    /// # Panics
    ///
    /// When `TOLLGATE_PG_URL` is set, or when stopping or starting fails (see those two).
    #[track_caller]
    pub fn restart_immediate(&self) {
        self.cluster().restart_immediate().unwrap_or_else(|e| panic!("tollgate-pgtemp: {e}"));
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`): every connection is cut at once, with no
    /// shutdown checkpoint, so that the next start recovers from the write-ahead log. Every test of the process
    /// sees it.
    ///
    /// # Panics
    ///
    /// When `TOLLGATE_PG_URL` is set (restarts need a throwaway server), or when the server is not running.
    #[track_caller]
    pub fn stop_immediate(&self) {
        self.cluster().stop_immediate().unwrap_or_else(|e| panic!("tollgate-pgtemp: {e}"));
    }

    /// Starts the server again after [`stop_immediate`](Self::stop_immediate), on the same port and data, and
    /// returns once it accepts connections.
    ///
    /// # Panics
    ///
    /// When `TOLLGATE_PG_URL` is set (restarts need a throwaway server), or when the server does not start
    /// within 60 s, or is already running; the message holds the end of the server's log.
    #[track_caller]
    pub fn start(&self) {
        self.cluster().start().unwrap_or_else(|e| panic!("tollgate-pgtemp: {e}"));
    }

    #[track_caller]
    fn cluster(&self) -> &Cluster {
        match &self.kind {
            Kind::Throwaway(cluster) => cluster,
            Kind::External(_) => panic!(
                "tollgate-pgtemp: {URL_VAR} is set, and stopping or restarting PostgreSQL needs a throwaway \
                 server: unset {URL_VAR} to run this test"
            ),
        }
    }
}

/// Has the exit handler stop the server and remove its directory (statics are never dropped).
fn remove_at_exit() {
    extern "C" fn remove() {
        if let Some(Ok(Server { kind: Kind::Throwaway(cluster), .. })) = SERVER.get() {
            cluster.remove();
        }
    }
    // SAFETY: `remove` takes nothing and returns nothing, as atexit requires, and cannot unwind: `Cluster::remove`
    // ignores every error. If registering fails, the watchdog still removes the server when the process exits.
    unsafe {
        libc::atexit(remove);
    }
}
