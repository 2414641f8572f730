//! A throwaway Redis server for the benchmarks that compare against Redis: `redis-server` from the machine
//! (Debian's `redis-server` package), on 127.0.0.1 and a free port, its files in a temporary directory, killed
//! when dropped. `REDIS_URL` names an existing server instead.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How the server keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing on disk: how Redis runs as a lock service.
    None,
    /// The append-only file, synced on every write (`appendfsync always`): how Redis runs when what it
    /// acknowledges must survive a crash.
    FsyncAlways,
}

/// A running server (or the one `REDIS_URL` names).
pub struct RedisServer {
    url: String,
    child: Option<Child>,
    _dir: Option<TempDir>,
}

impl RedisServer {
    /// Starts a server with `persistence`. Panics with the install instruction if `redis-server` is missing.
    pub fn start(persistence: Persistence) -> RedisServer {
        if let Ok(url) = std::env::var("REDIS_URL") {
            return RedisServer { url, child: None, _dir: None };
        }
        let dir = tempfile::Builder::new().prefix("tollgate-bench-redis-").tempdir().expect("a temporary directory");
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--daemonize", "no"]);
        command.arg("--dir").arg(dir.path());
        match persistence {
            Persistence::None => command.args(["--appendonly", "no"]),
            Persistence::FsyncAlways => command.args(["--appendonly", "yes", "--appendfsync", "always"]),
        };
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| {
            panic!("redis-server did not start ({e}): install it (`apt-get install -y redis-server`) or set REDIS_URL")
        });
        let server = RedisServer { url: format!("redis://127.0.0.1:{port}/"), child: Some(child), _dir: Some(dir) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.connection().is_err() {
            assert!(Instant::now() < deadline, "redis-server did not answer on port {port} within 10 s");
            thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// A new connection.
    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url.as_str())?.get_connection()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
