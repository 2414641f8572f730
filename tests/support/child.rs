//! The child processes of the `kill -9` tests (`tests/crash_kill.rs`, `tests/queue_crash.rs`), and of the
//! storefront's `kill -9` and `SIGTERM` tests (`tests/storefront.rs`): the test binary
//! run again, one test of it by name, with environment variables telling it what to do. Its stdout lines are
//! what it acknowledged; a line the kill cut short (no newline) is dropped, as what it would have said is
//! unknown.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Command-line arguments that run the one test `name` of a test binary, quietly.
pub fn test_args(name: &str) -> [&str; 5] {
    [name, "--exact", "--nocapture", "--test-threads=1", "--quiet"]
}

/// A running child whose stdout is read line by line.
pub struct Child {
    child: std::process::Child,
    lines: Receiver<String>,
    stdout: JoinHandle<()>,
    stderr: JoinHandle<String>,
}

impl Child {
    /// Runs the test `name` of this test binary with `envs` set.
    pub fn spawn(name: &str, envs: impl IntoIterator<Item = (&'static str, OsString)>) -> Child {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut child = Command::new(exe)
            .args(test_args(name))
            .envs(envs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (lines_tx, lines) = mpsc::channel();
        let stdout = std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = Vec::new();
            while stdout.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) && line.ends_with(b"\n") {
                if lines_tx.send(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned()).is_err() {
                    break;
                }
                line.clear();
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Child { child, lines, stdout, stderr }
    }

    /// The next whole line, waiting up to `wait`; `Disconnected` once the child closed its stdout.
    pub fn next_line(&self, wait: Duration) -> Result<String, RecvTimeoutError> {
        self.lines.recv_timeout(wait)
    }

    /// SIGKILLs the child (if it still runs) and waits for it. Returns its exit status, the whole lines it
    /// printed that were not read yet (acknowledged too: it wrote them before it died), and its stderr.
    pub fn kill(mut self) -> (ExitStatus, Vec<String>, String) {
        // `Child::kill` sends SIGKILL on Unix.
        let _ = self.child.kill();
        self.wait()
    }

    /// Sends the child SIGTERM, as a service manager stopping it would, and waits for it to exit. Returns what
    /// [`Child::kill`] does.
    #[allow(dead_code)] // only tests/storefront.rs stops a child with SIGTERM
    pub fn terminate(self) -> (ExitStatus, Vec<String>, String) {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM failed: {sent:?}");
        self.wait()
    }

    /// Waits for the child to exit; see [`Child::kill`].
    fn wait(mut self) -> (ExitStatus, Vec<String>, String) {
        let status = self.child.wait().expect("wait for the child");
        self.stdout.join().expect("stdout reader");
        let rest = self.lines.try_iter().collect();
        (status, rest, self.stderr.join().unwrap_or_default())
    }
}

/// Whether the child died of SIGKILL.
pub fn killed_by_sigkill(status: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(9)
}
