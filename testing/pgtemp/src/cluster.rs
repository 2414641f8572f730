//! One PostgreSQL cluster in a temporary directory: `initdb`, `pg_ctl start` and `stop`, its watchdog, and its
//! removal.

use std::ffi::CStr;
use std::fs;
use std::io::Write;
use std::mem::MaybeUninit;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, PoisonError};

use crate::bindir;

/// How many ports `create` tries: another process may take the free port it found before the server binds it.
const START_TRIES: usize = 5;

/// The watchdog, run by `sh -c` with the binary directory as `$1` and the temporary directory as `$2`. It waits
/// for end of file on its stdin, which comes when the test process exits however it exits (`kill -9` included:
/// the kernel closes the pipe's other end), then stops the server and removes the directory. It ignores SIGINT
/// and SIGHUP, and runs in its own process group, so that Ctrl-C on `cargo test` does not kill it with the test
/// process (`pg_ctl` starts the server in its own session, which Ctrl-C does not reach either).
const WATCHDOG: &str = r#"trap '' HUP INT
read -r _
"$1/pg_ctl" -D "$2/data" -m immediate -w stop
rm -rf -- "$2""#;

/// A PostgreSQL server in a temporary directory, on 127.0.0.1 only, with trust authentication.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// Where `initdb` and `pg_ctl` are.
    bindir: PathBuf,
    /// The temporary directory: `data/`, the server's `log`, its Unix socket.
    dir: PathBuf,
    /// The TCP port, the same across restarts.
    port: u16,
    /// The `postgres` OS user's uid and gid, when this process runs as root: `initdb` and `postgres` refuse to.
    owner: Option<(u32, u32)>,
    /// Taken by each stop and start, so that a restart is one step for other threads.
    lock: Mutex<()>,
    /// The watchdog's stdin, never written to; its closing tells the watchdog that this process is gone.
    _watchdog: ChildStdin,
}

impl Cluster {
    /// Runs `initdb` in a new temporary directory and starts the server on a free port.
    pub(crate) fn create() -> Result<Cluster, String> {
        let bindir = bindir::find()?;
        let owner = if is_root() { Some(postgres_user()?) } else { None };
        let dir = tempfile::Builder::new()
            .prefix("tollgate-pgtemp-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?
            .keep();
        let watchdog = prepare(&dir, owner).and_then(|()| spawn_watchdog(&bindir, &dir, owner)).inspect_err(|_| {
            let _ = fs::remove_dir_all(&dir);
        })?;
        // From here on, dropping `cluster` (an error) makes the watchdog remove the directory.
        let mut cluster = Cluster { bindir, dir, port: 0, owner, lock: Mutex::new(()), _watchdog: watchdog };
        cluster.initdb()?;
        cluster.configure()?;
        for attempt in 1..=START_TRIES {
            cluster.port = free_port()?;
            match cluster.start() {
                Ok(()) => break,
                Err(e) if attempt < START_TRIES && e.contains("Address already in use") => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(cluster)
    }

    /// The server's TCP port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id, from `postmaster.pid`; `None` when the server is stopped.
    pub(crate) fn pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Starts the stopped server: `pg_ctl start`, waiting up to 60 s for it to accept connections.
    pub(crate) fn start(&self) -> Result<(), String> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.start_locked()
    }

    /// Stops the server as a crash would: `pg_ctl stop -m immediate`, no shutdown checkpoint, every connection cut.
    pub(crate) fn stop_immediate(&self) -> Result<(), String> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.stop_locked()
    }

    /// `stop_immediate` and `start`, with no other stop or start in between.
    pub(crate) fn restart_immediate(&self) -> Result<(), String> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.stop_locked()?;
        self.start_locked()
    }

    /// Stops the server if it runs and removes the temporary directory, ignoring every error; for the exit
    /// handler, which must not panic, and which must not wait for the lock a thread may hold while the process
    /// exits.
    pub(crate) fn remove(&self) {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "stop"]);
        let _ = stop.stdout(Stdio::null()).stderr(Stdio::null()).status();
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// The data directory.
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// One of the server's programs, run as the `postgres` OS user when this process is root, in the temporary
    /// directory (the test's working directory may be closed to that user), with English messages (`create`
    /// reads them).
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bindir.join(program));
        command.current_dir(&self.dir).env("LC_ALL", "C").stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn initdb(&self) -> Result<(), String> {
        let mut initdb = self.command("initdb");
        initdb.arg("-D").arg(self.data());
        initdb.args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"]);
        // PostgreSQL 13 and later; older ones reject it.
        let help = self.command("initdb").arg("--help").output().map_err(|e| format!("cannot run initdb: {e}"))?;
        if String::from_utf8_lossy(&help.stdout).contains("--no-instructions") {
            initdb.arg("--no-instructions");
        }
        run(initdb, "initdb")
    }

    /// Settings for every start; the port alone is given to `pg_ctl start`, in case `create` has to try another.
    fn configure(&self) -> Result<(), String> {
        let settings = format!(
            "\n# tollgate-pgtemp: a throwaway server for tests.\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = {}\n\
             max_connections = 200\n\
             # Only an operating system crash or power loss can lose data without fsync, never a crash of\n\
             # PostgreSQL (`restart_immediate`): the page cache survives that. Tests do not need the former, and\n\
             # are faster without fsync. synchronous_commit keeps its default (on).\n\
             fsync = off\n",
            quote(&self.dir)
        );
        let conf = self.data().join("postgresql.conf");
        let mut file =
            fs::OpenOptions::new().append(true).open(&conf).map_err(|e| format!("{}: {e}", conf.display()))?;
        file.write_all(settings.as_bytes()).map_err(|e| format!("{}: {e}", conf.display()))
    }

    fn start_locked(&self) -> Result<(), String> {
        let log = self.dir.join("log");
        let from = fs::metadata(&log).map_or(0, |meta| meta.len());
        let mut start = self.command("pg_ctl");
        start.arg("-D").arg(self.data()).arg("-l").arg(&log);
        start.args(["-w", "-t", "60", "-o"]).arg(format!("-p {}", self.port)).arg("start");
        run(start, &format!("pg_ctl start (port {})", self.port))
            .map_err(|e| format!("{e}\nThe end of the server log:\n{}", log_tail(&log, from)))
    }

    fn stop_locked(&self) -> Result<(), String> {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "stop"]);
        run(stop, "pg_ctl stop -m immediate")
    }
}

/// Runs `command`; an error holds its output.
fn run(mut command: Command, what: &str) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("{what}: cannot run it: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Err(format!("{what} failed ({}):\n{}{}", out.status, stdout, stderr))
}

/// Gives the new temporary directory to the `postgres` OS user when this process is root.
fn prepare(dir: &Path, owner: Option<(u32, u32)>) -> Result<(), String> {
    match owner {
        Some((uid, gid)) => std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .map_err(|e| format!("cannot give {} to the postgres OS user: {e}", dir.display())),
        None => Ok(()),
    }
}

/// Starts the watchdog (see [`WATCHDOG`]) and returns its stdin.
fn spawn_watchdog(bindir: &Path, dir: &Path, owner: Option<(u32, u32)>) -> Result<ChildStdin, String> {
    let mut watchdog = Command::new("/bin/sh");
    watchdog.args(["-c", WATCHDOG, "tollgate-pgtemp-watchdog"]).arg(bindir).arg(dir);
    watchdog.current_dir("/").env("LC_ALL", "C").process_group(0);
    watchdog.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
    if let Some((uid, gid)) = owner {
        watchdog.uid(uid).gid(gid);
    }
    let mut child = watchdog.spawn().map_err(|e| format!("cannot start the watchdog (/bin/sh): {e}"))?;
    child.stdin.take().ok_or_else(|| "the watchdog has no stdin".to_string())
}

/// A port that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|e| format!("cannot find a free port: {e}"))?;
    listener.local_addr().map(|addr| addr.port()).map_err(|e| format!("cannot find a free port: {e}"))
}

/// The last lines the server logged after byte `from`.
fn log_tail(log: &Path, from: u64) -> String {
    const LINES: usize = 40;
    let Ok(bytes) = fs::read(log) else { return format!("({} cannot be read)", log.display()) };
    let text = String::from_utf8_lossy(bytes.get(from as usize..).unwrap_or_default());
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LINES)..].join("\n")
}

/// `path` as a string literal for postgresql.conf.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\\', "\\\\").replace('\'', "''"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of the `postgres` OS user.
fn postgres_user() -> Result<(u32, u32), String> {
    const NAME: &CStr = c"postgres";
    let mut entry = MaybeUninit::<libc::passwd>::uninit();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: NAME is NUL-terminated; `entry`, `buf` (with its true length) and `found` are valid for writes and
    // outlive the call, which writes the entry's strings into `buf` and points `found` at `entry` on success.
    let rc = unsafe { libc::getpwnam_r(NAME.as_ptr(), entry.as_mut_ptr(), buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        return Err("this test process runs as root, which initdb and postgres refuse, and there is no `postgres` \
            OS user to run them as: install PostgreSQL's server package (it creates the user), or run the tests \
            as another user"
            .to_string());
    }
    // SAFETY: `found` is not null, so getpwnam_r initialised `entry`.
    let entry = unsafe { entry.assume_init() };
    Ok((entry.pw_uid, entry.pw_gid))
}
