//! The server goes with the test process however that ends (a normal exit, `kill -9`, Ctrl-C), and
//! `TOLLGATE_PG_URL` replaces it. Each test runs this binary again as a child process, which plays the role the
//! environment variable `ROLE` gives it in the test `child`.

use std::env;
use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::panic;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const ROLE: &str = "TOLLGATE_PGTEMP_TEST_ROLE";
const URL_VAR: &str = "TOLLGATE_PG_URL";
/// What the child prints once its server runs, before its port and data directory.
const READY: &str = "pgtemp-ready";

/// The child half of the tests below; returns at once when `ROLE` is not set (the normal run of this binary).
#[test]
fn child() {
    match env::var(ROLE).as_deref() {
        Ok("serve") => {
            let server = tollgate_pgtemp::server();
            let port = server.url().rsplit_once(':').unwrap().1.trim_end_matches("/postgres").to_string();
            let data = data_dir(server.pid().unwrap());
            // Past the test harness's capture of `println!`.
            writeln!(io::stdout(), "{READY} {port} {}", data.display()).unwrap();
            if env::var("TOLLGATE_PGTEMP_TEST_EXIT").is_err() {
                thread::sleep(Duration::from_secs(600));
            }
        }
        Ok("external") => {
            let server = tollgate_pgtemp::server();
            assert_eq!(server.url(), env::var(URL_VAR).unwrap());
            assert_eq!(server.pid(), None);
            let panic = panic::catch_unwind(|| server.restart_immediate()).unwrap_err();
            let message = panic.downcast_ref::<String>().unwrap();
            assert!(message.contains("TOLLGATE_PG_URL is set") && message.contains("throwaway server"), "{message}");
        }
        Ok(role) => panic!("unknown {ROLE} {role}"),
        Err(_) => {}
    }
}

/// The data directory of the postmaster `pid`: the `tollgate-pgtemp-*/data` whose `postmaster.pid` names it.
fn data_dir(pid: u32) -> PathBuf {
    let dirs = std::fs::read_dir(env::temp_dir()).unwrap().map(|entry| entry.unwrap().path().join("data"));
    let mut ours = dirs.filter(|data| {
        let pidfile = std::fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
        data.to_string_lossy().contains("tollgate-pgtemp-") && pidfile.lines().next() == Some(&pid.to_string())
    });
    ours.next().expect("the server's data directory")
}

/// The child `role`, in its own process group, with `vars` in its environment.
fn command(role: &str, vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env::current_exe().unwrap());
    command.args(["--exact", "child", "--test-threads=1"]).env(ROLE, role).env_remove(URL_VAR);
    command.envs(vars.iter().copied()).process_group(0);
    command
}

/// A child serving, killed if the test fails before it ends.
struct Serving {
    child: Child,
    port: u16,
    /// The server's data directory, in the temporary directory that should go with it.
    data: PathBuf,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the child `serve` and waits for its server.
fn serve(vars: &[(&str, &str)]) -> Serving {
    let mut child = command("serve", vars).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut before = Vec::new();
    let ready = loop {
        match (&mut stdout).lines().next() {
            // After the harness's `test child ... `, with no line break in between.
            Some(Ok(line)) if line.contains(READY) => break line,
            Some(Ok(line)) => before.push(line),
            _ => panic!("the child has no server:\n{}", before.join("\n")),
        }
    };
    // The rest, so that the child's last words do not fail on a closed pipe.
    thread::spawn(move || io::copy(&mut stdout, &mut io::sink()));
    let (_, fields) = ready.split_once(READY).unwrap();
    let (port, data) = fields.trim().split_once(' ').unwrap();
    let serving = Serving { child, port: port.parse().unwrap(), data: PathBuf::from(data) };
    assert!(TcpStream::connect(("127.0.0.1", serving.port)).is_ok(), "the child's server accepts connections");
    assert!(serving.data.is_dir());
    serving
}

/// Waits up to 10 s for the server on `port` to stop and for its directory `data` to go; how long it took.
fn gone(port: u16, data: &Path) -> Duration {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_ok() || data.parent().unwrap().exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "the server on port {port} outlived its test process");
        thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn signal(pid: i32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

#[test]
fn a_normal_exit_stops_the_server_before_the_process_ends() {
    let mut serving = serve(&[("TOLLGATE_PGTEMP_TEST_EXIT", "1")]);
    assert!(serving.child.wait().unwrap().success());
    // The exit handler ran before the process ended; the watchdog only starts then, and would take longer.
    assert!(TcpStream::connect(("127.0.0.1", serving.port)).is_err(), "the exit handler stopped the server");
    assert!(!serving.data.parent().unwrap().exists(), "the exit handler removed {}", serving.data.display());
}

#[test]
fn kill_9_of_the_test_process_stops_the_server() {
    let mut serving = serve(&[]);
    serving.child.kill().unwrap();
    serving.child.wait().unwrap();
    eprintln!("server gone {:?} after kill -9", gone(serving.port, &serving.data));
}

#[test]
fn ctrl_c_of_the_test_process_group_stops_the_server() {
    let mut serving = serve(&[]);
    signal(-(serving.child.id() as i32), libc::SIGINT);
    serving.child.wait().unwrap();
    eprintln!("server gone {:?} after SIGINT to the process group", gone(serving.port, &serving.data));
}

#[test]
fn tollgate_pg_url_replaces_the_server_and_forbids_restarts() {
    let out = command("external", &[(URL_VAR, "postgres://someone@db.invalid:5432/tollgate")]).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
