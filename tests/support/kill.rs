//! The `kill -9` driver of `tests/crash_kill.rs` (the log) and `tests/queue_crash.rs` (worker
//! groups). A test runs kill points on fresh data directories: at each one a child process (the
//! test binary run again, one test of it, see `child.rs`) works on the directory and is SIGKILLed
//! at a random moment; now and then the test checks the directory. Shared here:
//!
//! - the number of kill points and the seed, from environment variables (a seed replays a run's
//!   random choices; the timing of each kill still varies);
//! - chains: sometimes several children in a row before a check, so that the later ones recover
//!   a killed directory themselves, and may be killed while doing so;
//! - when a child is killed (`KillPlan`): a time after its spawn or after its `ready` line, or as
//!   soon as it printed so many lines of a kind the test chooses; and a kill that has not happened
//!   after `KILL_TIMEOUT` anyway;
//! - the report: violations (all counted and summed up by kind, the first ones printed), the
//!   kills' counts and timing, the test's own counts, and the first few data directories with a
//!   violation kept for inspection (the others are deleted);
//! - the child's side: `emit_ready`, `emit` and `fatal` print its lines, `child_env` reads what
//!   the parent set, `kill_self` ends a reproduction's child.
//!
//! What a test's children do and what it checks after a kill stay in the test.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "child.rs"]
mod child_process;
#[allow(dead_code)] // each test uses some of it
#[path = "rng.rs"]
pub mod rng;

use child_process::{Child, killed_by_sigkill, test_args};
use rng::{Rng, env_u64};

/// A kill that has not happened by then happens anyway (and is counted).
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// A child that was never killed exits by itself after this long.
pub const CHILD_LIFETIME: Duration = Duration::from_secs(60);
/// Data directories with a violation kept for inspection.
const KEPT_DIRS_MAX: usize = 3;
/// Violations printed before only the first one of each failed check is.
const VIOLATIONS_PRINTED_FIRST: usize = 10;
/// The lines of its stderr reported for a child that exited before it was killed.
const STDERR_TAIL_LINES: usize = 15;

/// A kill -9 test: its name, its child, and the environment variables that set its kill points
/// and seed, and that tell the child what to do.
#[derive(Clone, Copy)]
pub struct KillTest {
    /// Names the test in its report and its data directories.
    pub name: &'static str,
    /// The test of this binary that is the child: it runs its workload when `dir_env` is set.
    pub child: &'static str,
    /// Set for the child: the data directory it works on, the kill point's number (unique in
    /// the run), and its seed.
    pub dir_env: &'static str,
    pub run_env: &'static str,
    pub child_seed_env: &'static str,
    /// Sets how many kill points run; `points_default` if it is not set.
    pub points_env: &'static str,
    pub points_default: u64,
    /// Sets the seed, to replay a run; one from the clock if it is not set.
    pub seed_env: &'static str,
    /// Violations printed at most (all are counted).
    pub violations_printed_max: usize,
}

impl KillTest {
    /// Runs the kill points. `per_dir` gets a fresh data directory and runs kill points
    /// (`Kills::kill_chain`) and checks (`Report::check`) on it until it is done with it or no
    /// kill point is left; it returns a note for the line that names the directory if it is kept.
    /// Then prints the report (the test's own counts with `print_counts`) and asserts that no
    /// violation was found.
    pub fn run<C: Default>(
        &self,
        print_counts: impl FnOnce(&C),
        mut per_dir: impl FnMut(&mut Kills, &Path, &mut Report<C>) -> String,
    ) {
        let mut kills = Kills::new(*self);
        let mut report = Report::new(self.violations_printed_max);
        let mut kept = 0;
        while !kills.done() {
            let prefix = format!("tollgate-{}-", self.name);
            let dir = tempfile::Builder::new().prefix(&prefix).tempdir().expect("temporary directory");
            kills.dirs += 1;
            let violations_before = report.violations.len();
            let note = per_dir(&mut kills, dir.path(), &mut report);
            if report.violations.len() > violations_before && kept < KEPT_DIRS_MAX {
                kept += 1;
                println!("kept the data directory {}{note} for inspection", dir.keep().display());
            }
        }
        kills.print(self.name, &report);
        print_counts(&report.counts);
        report.print_violations();
        assert!(
            report.violations.is_empty(),
            "{} violations over {} kill points (seed {}); first: {}",
            report.violations.len(),
            kills.kill_points,
            kills.seed,
            report.violations[0]
        );
    }
}

/// A line a child printed, as the test parses it.
pub trait ChildEvent: Sized {
    /// The line's event, or `None` for a line that is not one (the test harness's own).
    fn parse(line: &str) -> Option<Self>;
    /// Whether it is the child's `ready` line: its workload is set up.
    fn is_ready(&self) -> bool;
}

/// A kind of line a `KillPlan::After` counts.
pub trait Trigger<E>: Copy {
    fn counts(self, event: &E) -> bool;
    /// When a kill after such lines is, for the report: "after ...".
    fn label(self) -> &'static str;
}

/// When the parent kills a child.
#[derive(Debug, Clone, Copy)]
pub enum KillPlan<T> {
    /// This long after spawning it: sometimes before it is ready.
    SinceSpawn(Duration),
    /// This long after it printed `ready`.
    SinceReady(Duration),
    /// As soon as it has printed this many lines that `T` counts.
    After(T, u64),
}

impl<T> KillPlan<T> {
    fn label<E>(&self) -> &'static str
    where
        T: Trigger<E>,
    {
        match self {
            KillPlan::SinceSpawn(_) => "at a time after spawn",
            KillPlan::SinceReady(_) => "at a time after ready",
            KillPlan::After(trigger, _) => trigger.label(),
        }
    }
}

/// What one child did before it died.
pub struct ChildRun<E> {
    /// Every line it printed, parsed.
    pub events: Vec<E>,
    ready: bool,
    /// How long after spawning it the child was ready.
    ready_after: Option<Duration>,
    /// How long it worked, from `ready` to the kill.
    worked: Option<Duration>,
    timed_out: bool,
    /// Set when the child exited before the kill.
    exited_early: Option<ExitStatus>,
    stderr: String,
}

impl<E> ChildRun<E> {
    /// The violation to count if the child exited before it was killed: how, and how its
    /// stderr ends.
    pub fn early_exit(&self) -> Option<String> {
        let status = self.exited_early?;
        let lines: Vec<&str> = self.stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n");
        Some(format!("the child exited before it was killed ({status}); its stderr ends:\n{tail}"))
    }
}

/// A run's kill points: its generator, and counts of the kills for the report.
pub struct Kills {
    /// The run's generator: what the test chooses at random comes from it.
    pub rng: Rng,
    test: KillTest,
    seed: u64,
    points: u64,
    started: Instant,
    /// Kill points run so far.
    kill_points: u64,
    dirs: u64,
    /// Kills per plan, by the plan's label (a trigger's in the order first seen).
    plans: Vec<(&'static str, u64)>,
    timeouts: u64,
    /// Kills of a child that was not ready yet.
    before_ready: u64,
    /// Kills of a child started on a killed directory nobody had checked.
    chained: u64,
    chained_before_ready: u64,
    /// Time from spawn to `ready`, over the children that got there.
    ready_after_total: Duration,
    ready_after_max: Duration,
    ready_children: u32,
    /// Time children worked, from `ready` to the kill.
    worked: Duration,
}

impl Kills {
    fn new(test: KillTest) -> Kills {
        let points = env_u64(test.points_env).unwrap_or(test.points_default);
        let seed = env_u64(test.seed_env).unwrap_or_else(|| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            now.as_nanos() as u64 ^ u64::from(std::process::id())
        });
        Kills {
            rng: Rng::new(seed),
            test,
            seed,
            points,
            started: Instant::now(),
            kill_points: 0,
            dirs: 0,
            plans: vec![("at a time after spawn", 0), ("at a time after ready", 0)],
            timeouts: 0,
            before_ready: 0,
            chained: 0,
            chained_before_ready: 0,
            ready_after_total: Duration::ZERO,
            ready_after_max: Duration::ZERO,
            ready_children: 0,
            worked: Duration::ZERO,
        }
    }

    /// Whether every kill point has run.
    pub fn done(&self) -> bool {
        self.kill_points >= self.points
    }

    /// Runs children on `dir` before its next check, one kill point each: usually one, sometimes
    /// several in a row, so that the later ones recover a killed directory themselves, and may
    /// be killed while doing so. Each child gets the test's variables and `envs`, and is killed
    /// as `plan` chooses; `absorb` takes in what it did. Returns how many children ran.
    pub fn kill_chain<E: ChildEvent, T: Trigger<E>>(
        &mut self,
        dir: &Path,
        envs: &[(&'static str, OsString)],
        mut plan: impl FnMut(&mut Rng) -> KillPlan<T>,
        mut absorb: impl FnMut(ChildRun<E>),
    ) -> u64 {
        let chain = if self.rng.chance(25) { 2 + self.rng.below(2) } else { 1 }.min(self.points - self.kill_points);
        for link in 0..chain {
            let plan = plan(&mut self.rng);
            let test = self.test;
            let mut child_envs = vec![
                (test.dir_env, dir.into()),
                (test.run_env, self.kill_points.to_string().into()),
                (test.child_seed_env, self.rng.next_u64().to_string().into()),
            ];
            child_envs.extend_from_slice(envs);
            absorb(self.kill(child_envs, plan, link > 0));
        }
        chain
    }

    /// Runs the child with `envs` set, kills it as `plan` says, and returns every line it
    /// printed before it died. `chained`: it runs on a killed directory that nobody checked.
    fn kill<E: ChildEvent, T: Trigger<E>>(
        &mut self,
        envs: Vec<(&'static str, OsString)>,
        plan: KillPlan<T>,
        chained: bool,
    ) -> ChildRun<E> {
        let run = run_child(self.test.child, envs, plan);
        self.kill_points += 1;
        let label = plan.label();
        match self.plans.iter_mut().find(|(l, _)| *l == label) {
            Some((_, count)) => *count += 1,
            None => self.plans.push((label, 1)),
        }
        if !run.ready {
            self.before_ready += 1;
        }
        if let Some(after) = run.ready_after {
            self.ready_after_total += after;
            self.ready_after_max = self.ready_after_max.max(after);
            self.ready_children += 1;
        }
        self.worked += run.worked.unwrap_or_default();
        if chained {
            self.chained += 1;
            if !run.ready {
                self.chained_before_ready += 1;
            }
        }
        if run.timed_out {
            self.timeouts += 1;
        }
        run
    }

    fn print<C>(&self, name: &str, report: &Report<C>) {
        println!("{name}: seed {}, {:.1} s", self.seed, self.started.elapsed().as_secs_f64());
        println!(
            "  {} kill points ({} in chains, {} of them before the child was ready), {} checks, {} directories",
            self.kill_points, self.chained, self.chained_before_ready, report.checks, self.dirs
        );
        let plans: Vec<String> = self.plans.iter().map(|(label, count)| format!("{count} {label}")).collect();
        println!("  kills planned: {}; {} timed out", plans.join(", "), self.timeouts);
        let ready = f64::from(self.ready_children.max(1));
        println!(
            "  {} kills before the child was ready; children were ready {:.1} ms after spawn on average ({:.1} ms at most), and worked {:.0} ms until the kill",
            self.before_ready,
            self.ready_after_total.as_secs_f64() * 1e3 / ready,
            self.ready_after_max.as_secs_f64() * 1e3,
            self.worked.as_secs_f64() * 1e3 / ready
        );
    }
}

/// Spawns the test `name` of this binary with `envs` set, kills it as `plan` says, and returns
/// every line it printed before it died.
fn run_child<E: ChildEvent, T: Trigger<E>>(
    name: &str,
    envs: impl IntoIterator<Item = (&'static str, OsString)>,
    plan: KillPlan<T>,
) -> ChildRun<E> {
    let spawned_at = Instant::now();
    let child = Child::spawn(name, envs);
    let mut events = Vec::new();
    let mut ready_at = None;
    let mut ready_after = None;
    let mut counted = 0;
    let mut timed_out = false;
    let mut closed = false;
    loop {
        let now = Instant::now();
        let deadline = match plan {
            KillPlan::SinceSpawn(delay) => Some(spawned_at + delay),
            KillPlan::SinceReady(delay) => ready_at.map(|at| at + delay),
            KillPlan::After(..) => None,
        };
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        let timeout = spawned_at + KILL_TIMEOUT;
        if now >= timeout {
            timed_out = true;
            break;
        }
        let wait = deadline.unwrap_or(timeout).min(timeout) - now;
        match child.next_line(wait) {
            Ok(line) => {
                let Some(event) = E::parse(&line) else { continue };
                if event.is_ready() {
                    ready_at = Some(Instant::now());
                    ready_after = Some(spawned_at.elapsed());
                }
                let done = match plan {
                    KillPlan::After(trigger, n) if trigger.counts(&event) => {
                        counted += 1;
                        counted >= n
                    }
                    _ => false,
                };
                events.push(event);
                if done {
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                closed = true;
                break;
            }
        }
    }
    let worked = ready_at.map(|at: Instant| at.elapsed());
    let (status, rest, stderr) = child.kill();
    // Lines the child wrote before it died, not yet read: acknowledged too.
    events.extend(rest.iter().filter_map(|line| E::parse(line)));
    ChildRun {
        ready: events.iter().any(E::is_ready),
        events,
        ready_after,
        worked,
        timed_out,
        exited_early: (closed || !killed_by_sigkill(status)).then_some(status),
        stderr,
    }
}

/// Violations and counts over all kill points: the driver's, and the test's own `C` (its fields
/// are the report's, through `Deref`).
pub struct Report<C> {
    pub counts: C,
    /// Checks run (`check`), and those that found a violation.
    checks: u64,
    checks_failed: u64,
    violations: Vec<String>,
    /// Violations by kind: their text up to the details, digits left out.
    kinds: BTreeMap<String, u64>,
    printed: usize,
    printed_max: usize,
    /// The check whose violations were printed last.
    printed_in_check: Option<u64>,
}

impl<C: Default> Report<C> {
    fn new(printed_max: usize) -> Report<C> {
        Report {
            counts: C::default(),
            checks: 0,
            checks_failed: 0,
            violations: Vec::new(),
            kinds: BTreeMap::new(),
            printed: 0,
            printed_max,
            printed_in_check: None,
        }
    }
}

impl<C> Report<C> {
    /// Counts a violation. Prints the first ones of the first failed check, then the first one
    /// of each later failed check, up to a limit.
    pub fn violation(&mut self, what: String) {
        let first_in_check = self.printed_in_check != Some(self.checks);
        if self.printed < self.printed_max
            && (first_in_check || self.checks_failed == 0 && self.printed < VIOLATIONS_PRINTED_FIRST)
        {
            println!("VIOLATION (check {}): {what}", self.checks);
            self.printed += 1;
            self.printed_in_check = Some(self.checks);
        }
        let problem = what.split_once(": ").map_or(what.as_str(), |(_, rest)| rest);
        let problem = problem.split(" (").next().unwrap_or(problem);
        let kind: String = problem.chars().filter(|c| !c.is_ascii_digit()).collect();
        *self.kinds.entry(kind).or_default() += 1;
        self.violations.push(what);
    }

    /// Runs one check of a data directory: counts it, and counts it as failed if it found a
    /// violation. Returns whether it found none.
    pub fn check(&mut self, check: impl FnOnce(&mut Self)) -> bool {
        self.checks += 1;
        let before = self.violations.len();
        check(self);
        let clean = self.violations.len() == before;
        if !clean {
            self.checks_failed += 1;
        }
        clean
    }

    fn print_violations(&self) {
        println!("  violations: {} in {} of {} checks", self.violations.len(), self.checks_failed, self.checks);
        for (kind, count) in &self.kinds {
            println!("    {count} x {kind}");
        }
    }
}

impl<C> Deref for Report<C> {
    type Target = C;

    fn deref(&self) -> &C {
        &self.counts
    }
}

impl<C> DerefMut for Report<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.counts
    }
}

// ---------------------------------------------------------------------------
// The child's side.

/// Prints the child's `ready` line: its workload is set up.
pub fn emit_ready() {
    // The empty line ends whatever the test harness printed.
    emit("");
    emit("ready");
}

/// Prints one line and flushes it; exits if the parent is gone.
pub fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

/// Prints `error <what>` (a violation, to the parent) and exits.
pub fn fatal(what: String) -> ! {
    emit(&format!("error {what}"));
    std::process::exit(2);
}

/// The environment variable `name`, a number the parent set for the child.
pub fn child_env(name: &str) -> u64 {
    env_u64(name).unwrap_or_else(|| fatal(format!("{name} is not set")))
}

// ---------------------------------------------------------------------------
// Reproductions: a child that kills itself at a chosen moment.

/// Runs the test `name` of this binary with `env` set to `dir`, and asserts that it died of
/// SIGKILL (its own `kill_self`).
pub fn run_self_killing_child(name: &str, env: &str, dir: &Path) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let status =
        Command::new(exe).args(test_args(name)).env(env, dir).stdout(Stdio::null()).status().expect("run the child");
    assert!(killed_by_sigkill(status), "the child was not killed: {status}");
}

/// SIGKILLs this process.
pub fn kill_self() -> ! {
    // SAFETY: kill(2) with a pid and a signal number reads no memory.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    unreachable!("SIGKILL is not caught");
}
