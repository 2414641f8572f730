//! `tollgate`: look into, check, read, repair and benchmark tollgate data
//! directories. Reference, with examples of every command: `docs/CLI.md`.
//!
//! The read commands (`inspect`, `verify`, `dump`, `tail`) go through
//! `tollgate::inspect`, which never writes a byte nor takes the directory's
//! lock, so they are safe on a directory a running process holds open.
//! `repair` writes, through an `Engine` in repair mode, and refuses a
//! directory in use. `bench` works in a fresh directory of its own.
//!
//! Exit codes: 0 success (for `verify`: clean), 1 corruption found, 2 bad
//! usage, an I/O error, or a refusal. Errors are one line on stderr,
//! `tollgate: <what>: <why>`.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use tollgate::inspect::{Cut, CutKind, Directory, Records, TopicSummary, TopicVerdict, VerifyReport};
use tollgate::{
    Durability, Engine, EngineConfig, Error, LockManager, OpenError, ReadError, Record, RecoveryReport, TopicConfig,
    TopicError,
};

/// Exit code: corruption found.
const EXIT_CORRUPT: u8 = 1;
/// Exit code: bad usage, an I/O error, or a refusal.
const EXIT_FAILED: u8 = 2;

#[derive(Parser)]
#[command(name = "tollgate", version, about = "Inspect, check, read, repair and benchmark tollgate data directories.")]
#[command(long_about = "Inspect, check, read, repair and benchmark tollgate data directories.\n\n\
    inspect, verify, dump and tail only read: they take no lock and write nothing, so they are safe on a \
    directory a running process holds open. repair writes and refuses a directory in use.\n\n\
    Exit codes: 0 success (verify: clean), 1 corruption found, 2 bad usage, an I/O error or a refusal.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show topics, segments, offsets, consumer groups and worker groups.
    ///
    /// For each topic: its configuration; its segment files with their
    /// offset ranges and sizes; consumer groups with their committed offsets
    /// and lag; worker groups with their low-water mark, messages in flight
    /// or awaiting a retry (the files cannot tell which), rejected messages,
    /// lag, and the dead letters they sent to `<topic>.dlq`.
    Inspect {
        /// The data directory.
        dir: PathBuf,
        /// Print one JSON document instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Check every checksum, with a progress bar on a terminal.
    ///
    /// Reads every frame of every segment, and the topic, checkpoint, offset,
    /// queue state and journal files. Exits 0 if the directory is clean and 1
    /// if anything is corrupt, naming the file and byte position. A torn
    /// tail after an unclean shutdown (which the next open cuts) and the
    /// frame being written in a directory in use are reported, not failed.
    Verify {
        /// The data directory.
        dir: PathBuf,
    },
    /// Print a topic's records, one per line.
    ///
    /// Text lines show the offset, time, key, headers and payload (as a
    /// quoted string if it is UTF-8, else as hex), cut at --max-bytes. With
    /// --json, one JSON object per record, never cut: payloads and header
    /// values that are not UTF-8 are given in base64 (`payload_base64`,
    /// `value_base64`).
    Dump {
        /// The data directory.
        dir: PathBuf,
        /// The topic.
        topic: String,
        /// Start at this offset (default: the oldest retained record).
        #[arg(long, value_name = "N")]
        from: Option<u64>,
        /// Print at most this many records.
        #[arg(long, value_name = "M")]
        limit: Option<u64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Show at most this many bytes of each payload and header value in
        /// text lines (0: no limit).
        #[arg(long, value_name = "BYTES", default_value_t = 256)]
        max_bytes: usize,
    },
    /// Print a topic's last records; with -f, go on printing new ones.
    ///
    /// Following survives segment rolls and ends when the topic is deleted
    /// or the output is closed.
    Tail {
        /// The data directory.
        dir: PathBuf,
        /// The topic.
        topic: String,
        /// How many of the last records to print.
        #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 10)]
        count: u64,
        /// Keep printing records as they are published.
        #[arg(short, long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Show at most this many bytes of each payload and header value in
        /// text lines (0: no limit).
        #[arg(long, value_name = "BYTES", default_value_t = 256)]
        max_bytes: usize,
        /// How often to look for new records when following, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 100)]
        interval_ms: u64,
    },
    /// Cut each topic's log at its first corruption.
    ///
    /// Refuses a directory in use. Checks the directory first and shows what
    /// would be cut (topic, file, byte position, what is lost), then asks
    /// for confirmation on a terminal; without a terminal, pass --yes. Then
    /// opens every topic in repair mode, shows what each open did, and
    /// checks the directory again. Exits 0 if it is clean afterwards.
    Repair {
        /// The data directory.
        dir: PathBuf,
        /// Repair without asking.
        #[arg(short, long)]
        yes: bool,
    },
    /// Measure tollgate on this machine: locks, publishing, consuming, latency.
    ///
    /// Works in a fresh directory that is removed afterwards. The numbers
    /// depend on the machine, its load and its disk; they are for comparing
    /// runs, not guarantees.
    Bench {
        /// Seconds to run each measurement.
        #[arg(long, value_name = "S", default_value_t = 0.5)]
        seconds: f64,
        /// Where to create the benchmark's directory (default: the system's
        /// temporary directory). Its disk sets the sync latency.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { dir, json } => inspect(&dir, json),
        Command::Verify { dir } => verify(&dir),
        Command::Dump { dir, topic, from, limit, json, max_bytes } => {
            dump(&dir, &topic, from, limit, Style { json, max_bytes })
        }
        Command::Tail { dir, topic, count, follow, json, max_bytes, interval_ms } => {
            let follow = follow.then(|| Duration::from_millis(interval_ms.max(1)));
            tail(&dir, &topic, count, follow, Style { json, max_bytes })
        }
        Command::Repair { dir, yes } => repair(&dir, yes),
        Command::Bench { seconds, dir } => bench(seconds, dir),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure { code, message }) => {
            if let Some(message) = message {
                let _ = writeln!(io::stderr(), "tollgate: {message}");
            }
            ExitCode::from(code)
        }
    }
}

/// Why a command stopped: the exit code, and the line for stderr (none when
/// the output was closed, which ends a command quietly).
struct Failure {
    code: u8,
    message: Option<String>,
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure { code, message: Some(message.into()) }
}

impl From<io::Error> for Failure {
    /// An error writing the output: a closed pipe (`tollgate dump ... | head`)
    /// ends the command quietly.
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure { code: 0, message: None }
        } else {
            fail(EXIT_FAILED, format!("cannot write the output: {e}"))
        }
    }
}

/// A line on stderr: notes and prompts, never data.
fn note(line: &str) {
    let _ = writeln!(io::stderr(), "{line}");
}

/// Opens `dir` for reading, and says so if a process holds it. Returns
/// whether one does, so that a command looks once.
fn open_dir(dir: &Path) -> Result<(Directory, bool), Failure> {
    let data = open_quietly(dir)?;
    let held_open = data.held_open();
    if held_open {
        note(&format!(
            "note: {} is held open by a running process: reading without locking; the newest records may be incomplete",
            dir.display()
        ));
    }
    Ok((data, held_open))
}

/// Opens `dir` for reading.
fn open_quietly(dir: &Path) -> Result<Directory, Failure> {
    Directory::open(dir).map_err(|e| match e {
        OpenError::Io(io) if io.kind() == io::ErrorKind::NotFound => {
            fail(EXIT_FAILED, format!("{}: no such directory", dir.display()))
        }
        e => fail(EXIT_FAILED, e.to_string()),
    })
}

/// A topic that could not be read.
fn topic_failure(dir: &Path, e: TopicError) -> Failure {
    match e {
        TopicError::NotFound { name } => fail(EXIT_FAILED, format!("{}: topic {name:?} does not exist", dir.display())),
        TopicError::Corrupt(c) => fail(EXIT_CORRUPT, c.to_string()),
        e => fail(EXIT_FAILED, e.to_string()),
    }
}

/// A read of `topic` that failed.
fn read_failure(topic: &str, e: ReadError) -> Failure {
    match e {
        ReadError::Corrupt(c) => fail(EXIT_CORRUPT, c.to_string()),
        ReadError::NotWritten { requested, next } => fail(
            EXIT_FAILED,
            format!("offset {requested} is past the end of topic {topic:?}: its next offset is {next}"),
        ),
        ReadError::NotRetained { requested, oldest } => fail(
            EXIT_FAILED,
            format!("offset {requested} of topic {topic:?} is no longer retained: the oldest is {oldest}"),
        ),
        ReadError::Deleted => fail(EXIT_FAILED, format!("topic {topic:?} was deleted while being read")),
        e => fail(EXIT_FAILED, e.to_string()),
    }
}

/// The topic's records from `from`.
fn open_records(data: &Directory, topic: &str, from: Option<u64>) -> Result<Records, Failure> {
    data.records(topic, from.map(tollgate::Offset::new)).map_err(|e| match e {
        Error::Topic(e) => topic_failure(data.path(), e),
        Error::Read(e) => read_failure(topic, e),
        e => fail(EXIT_FAILED, e.to_string()),
    })
}

// ---------------------------------------------------------------- inspect

fn inspect(dir: &Path, json: bool) -> Result<u8, Failure> {
    let (data, held_open) = open_dir(dir)?;
    let names = data.topics().map_err(|e| fail(EXIT_FAILED, e.to_string()))?;
    let mut topics = Vec::new();
    let mut code = 0;
    for name in names {
        match data.topic(&name) {
            Ok(summary) => topics.push(Ok(summary)),
            // Deleted since it was listed.
            Err(TopicError::NotFound { .. }) => {}
            Err(e) => {
                code = code.max(topic_failure(dir, e.clone()).code);
                topics.push(Err((name, e)));
            }
        }
    }
    let mut out = BufWriter::new(io::stdout().lock());
    if json {
        let topics: Vec<Value> = topics
            .iter()
            .map(|topic| match topic {
                Ok(summary) => topic_json(summary),
                Err((name, e)) => json!({ "name": name, "error": e.to_string() }),
            })
            .collect();
        let document = json!({ "directory": dir.display().to_string(), "held_open": held_open, "topics": topics });
        writeln!(out, "{}", serde_json::to_string_pretty(&document).expect("a JSON value serializes"))?;
    } else {
        let count = topics.len();
        writeln!(out, "{}: {count} topic{}", dir.display(), plural(count as u64))?;
        for topic in &topics {
            writeln!(out)?;
            match topic {
                Ok(summary) => write_topic(&mut out, summary, held_open)?,
                Err((name, e)) => writeln!(out, "topic {name}: cannot be read: {e}")?,
            }
        }
    }
    out.flush()?;
    Ok(code)
}

fn write_topic(out: &mut impl Write, topic: &TopicSummary, held_open: bool) -> io::Result<()> {
    let config = &topic.config;
    let records = topic.end.get().saturating_sub(topic.oldest.get());
    writeln!(out, "topic {}", topic.name)?;
    writeln!(
        out,
        "  {}; segments of {}; messages up to {}; {}",
        durability(config.durability),
        human_bytes(config.segment_bytes),
        human_bytes(config.max_message_bytes as u64),
        retention(config)
    )?;
    let shutdown = if held_open {
        "in use"
    } else if topic.clean_shutdown {
        "shut down cleanly"
    } else {
        "not shut down cleanly: the next open recovers it"
    };
    writeln!(
        out,
        "  offsets {}..{} ({records} record{}) in {} segment{}, {}; {shutdown}",
        topic.oldest,
        topic.end,
        plural(records),
        topic.segments.len(),
        plural(topic.segments.len() as u64),
        human_bytes(topic.bytes)
    )?;
    let rows = topic.segments.iter().map(|s| {
        let file = s.path.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        let records = s.end.get().saturating_sub(s.base.get());
        let range = format!("{}..{}", s.base, s.end);
        vec![file, range, records.to_string(), human_bytes(s.bytes), human_bytes(s.file_bytes)]
    });
    write_table(out, &["segment", "offsets", "records", "data", "file"], rows)?;
    if !topic.groups.is_empty() {
        let rows = topic.groups.iter().map(|g| match &g.damage {
            Some(damage) => vec![g.name.clone(), format!("damaged: {damage}")],
            None => vec![
                g.name.clone(),
                g.committed.map_or_else(|| "none".to_owned(), |c| c.to_string()),
                g.lag.to_string(),
                g.committed_at_us.map_or_else(String::new, format_time_us),
            ],
        });
        write_table(out, &["consumer group", "committed", "lag", "committed at"], rows)?;
    }
    if !topic.workers.is_empty() {
        let rows = topic.workers.iter().map(|w| match &w.damage {
            Some(damage) => vec![w.name.clone(), format!("damaged: {damage}")],
            None => vec![
                w.name.clone(),
                w.low_water.to_string(),
                w.settled_above.to_string(),
                w.attempted.to_string(),
                w.rejected.to_string(),
                w.lag.to_string(),
                w.dead_lettered.map_or_else(|| "?".to_owned(), |n| n.to_string()),
            ],
        });
        let dead = format!("dead-lettered to {}", topic.workers[0].dead_letter_topic);
        let headers = ["worker group", "low-water", "settled above", "in flight or retrying", "rejected", "lag", &dead];
        write_table(out, &headers, rows)?;
        writeln!(
            out,
            "  (a worker group's filter is not stored: its lag includes messages the filter skips, until the group next compacts its journal)"
        )?;
    }
    for line in &topic.notes {
        writeln!(out, "  note: {line}")?;
    }
    Ok(())
}

/// A table indented by two spaces: the first column left-aligned, the
/// others right-aligned. A row may have fewer cells than headers (its last
/// cell then runs on unaligned).
fn write_table(out: &mut impl Write, headers: &[&str], rows: impl Iterator<Item = Vec<String>>) -> io::Result<()> {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows.iter().filter(|row| row.len() == headers.len()) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut line = String::from(" ");
        for (i, cell) in cells.iter().enumerate() {
            let width = if cells.len() == headers.len() { widths[i] } else { 0 };
            if i == 0 {
                line.push_str(&format!(" {cell:<width$}"));
            } else {
                line.push_str(&format!("  {cell:>width$}"));
            }
        }
        line.trim_end().to_owned()
    };
    let headers: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    writeln!(out, "{}", line(&headers))?;
    for row in &rows {
        writeln!(out, "{}", line(row))?;
    }
    Ok(())
}

fn topic_json(topic: &TopicSummary) -> Value {
    let config = &topic.config;
    let durability = match config.durability {
        Durability::Buffered => json!("buffered"),
        Durability::Sync => json!("sync"),
        Durability::Interval(d) => json!({ "interval_us": u64::try_from(d.as_micros()).unwrap_or(u64::MAX) }),
    };
    let segments: Vec<Value> = topic
        .segments
        .iter()
        .map(|s| {
            json!({
                "file": s.path.display().to_string(),
                "base": s.base.get(),
                "end": s.end.get(),
                "records": s.end.get().saturating_sub(s.base.get()),
                "bytes": s.bytes,
                "file_bytes": s.file_bytes,
            })
        })
        .collect();
    let groups: Vec<Value> = topic
        .groups
        .iter()
        .map(|g| {
            json!({
                "name": g.name,
                "committed": g.committed.map(|c| c.get()),
                "committed_at_us": g.committed_at_us,
                "committed_at": g.committed_at_us.map(format_time_us),
                "lag": g.lag,
                "damage": g.damage.as_ref().map(ToString::to_string),
            })
        })
        .collect();
    let workers: Vec<Value> = topic
        .workers
        .iter()
        .map(|w| {
            json!({
                "name": w.name,
                "low_water": w.low_water.get(),
                "settled_above": w.settled_above,
                "in_flight_or_retrying": w.attempted,
                "retry_scheduled": w.retry_scheduled,
                "rejected": w.rejected,
                "lag": w.lag,
                "dead_letter_topic": w.dead_letter_topic,
                "dead_lettered": w.dead_lettered,
                "damage": w.damage.as_ref().map(ToString::to_string),
            })
        })
        .collect();
    json!({
        "name": topic.name,
        "config": {
            "durability": durability,
            "segment_bytes": config.segment_bytes,
            "max_message_bytes": config.max_message_bytes,
            "retention_bytes": config.retention_bytes,
            "retention_age_ms": config.retention_age.map(|d| d.as_millis() as u64),
        },
        "clean_shutdown": topic.clean_shutdown,
        "oldest": topic.oldest.get(),
        "end": topic.end.get(),
        "records": topic.end.get().saturating_sub(topic.oldest.get()),
        "bytes": topic.bytes,
        "segments": segments,
        "groups": groups,
        "workers": workers,
        "notes": topic.notes,
    })
}

fn durability(durability: Durability) -> String {
    match durability {
        Durability::Buffered => "buffered".to_owned(),
        Durability::Sync => "sync".to_owned(),
        Durability::Interval(d) => format!("synced every {d:?}"),
    }
}

fn retention(config: &TopicConfig) -> String {
    match (config.retention_bytes, config.retention_age) {
        (None, None) => "kept forever".to_owned(),
        (Some(bytes), None) => format!("kept up to {}", human_bytes(bytes)),
        (None, Some(age)) => format!("kept for {age:?}"),
        (Some(bytes), Some(age)) => format!("kept up to {} and for {age:?}", human_bytes(bytes)),
    }
}

// ---------------------------------------------------------------- verify

fn verify(dir: &Path) -> Result<u8, Failure> {
    let (data, _) = open_dir(dir)?;
    let started = Instant::now();
    let report = check(&data)?;
    let elapsed = started.elapsed();
    let mut out = io::stdout().lock();
    write_verdicts(&mut out, &report)?;
    write_summary(&mut out, &report, elapsed)?;
    Ok(if report.is_clean() { 0 } else { EXIT_CORRUPT })
}

/// Runs [`Directory::verify`] with a progress bar on stderr if it is a terminal.
fn check(data: &Directory) -> Result<VerifyReport, Failure> {
    let bar = if io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
            .expect("a valid template");
        bar.set_style(style);
        bar
    } else {
        ProgressBar::hidden()
    };
    let report = data.verify(|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    report.map_err(|e| fail(EXIT_FAILED, e.to_string()))
}

fn write_verdicts(out: &mut impl Write, report: &VerifyReport) -> io::Result<()> {
    for topic in &report.topics {
        let head = format!(
            "topic {}: {} segment{}, {} record{}",
            topic.name,
            topic.segments,
            plural(topic.segments as u64),
            topic.records,
            plural(topic.records)
        );
        let place = |cut: &Cut| format!("{} at byte {} ({})", cut.at.file.display(), cut.at.position, cut.at.reason);
        match &topic.cut {
            None => writeln!(out, "{head}: {}", if topic.is_clean() { "ok" } else { "DAMAGED" })?,
            Some(cut) => match cut.kind {
                CutKind::Corrupt => {
                    writeln!(out, "{head}: CORRUPT: {}", cut.at)?;
                    writeln!(out, "  {}; `tollgate repair` cuts the log there", lost(topic))?;
                }
                CutKind::TornTail => {
                    writeln!(out, "{head}: torn tail at {}", place(cut))?;
                    writeln!(
                        out,
                        "  the last shutdown was not clean: the next open cuts the log there; {}",
                        lost(topic)
                    )?;
                }
                CutKind::IncompleteTail => {
                    writeln!(out, "{head}: ok")?;
                    writeln!(out, "  the frame being written (the directory is in use) is at {}", place(cut))?;
                }
                _ => writeln!(out, "{head}: the data ends early at {}", place(cut))?,
            },
        }
        for damage in &topic.damaged {
            writeln!(out, "  damaged: {damage}")?;
            writeln!(out, "    {}", damage_effect(damage))?;
        }
        for line in &topic.notes {
            writeln!(out, "  note: {line}")?;
        }
    }
    Ok(())
}

/// What cutting a topic's log at its cut loses.
fn lost(topic: &TopicVerdict) -> String {
    let Some(cut) = &topic.cut else { return String::new() };
    let mut lost = format!(
        "offsets from {} on are lost there: {} of {}",
        cut.first_lost,
        human_bytes(cut.bytes_after),
        cut.at.file.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned())
    );
    if cut.later_segments > 0 {
        lost.push_str(&format!(
            " and {} later segment{} ({})",
            cut.later_segments,
            plural(cut.later_segments as u64),
            human_bytes(cut.later_bytes)
        ));
    }
    lost
}

fn write_summary(out: &mut impl Write, report: &VerifyReport, elapsed: Duration) -> io::Result<()> {
    let seconds = elapsed.as_secs_f64();
    let rate = report.bytes as f64 / seconds.max(1e-9) / f64::from(1 << 30);
    let corrupt = report.topics.iter().filter(|t| !t.is_clean()).count();
    let verdict = if corrupt == 0 {
        "clean".to_owned()
    } else {
        format!("{corrupt} topic{} with corruption", plural(corrupt as u64))
    };
    writeln!(
        out,
        "verified {} file{}, {}, {} record{} in {seconds:.2} s ({rate:.2} GiB/s): {verdict}",
        report.files,
        plural(report.files),
        human_bytes(report.bytes),
        report.records,
        plural(report.records)
    )
}

// ---------------------------------------------------------------- dump and tail

/// How records are printed.
#[derive(Clone, Copy)]
struct Style {
    json: bool,
    /// Longest payload or header value shown in text lines (0: no limit).
    max_bytes: usize,
}

fn dump(dir: &Path, topic: &str, from: Option<u64>, limit: Option<u64>, style: Style) -> Result<u8, Failure> {
    let (data, _) = open_dir(dir)?;
    let mut records = open_records(&data, topic, from)?;
    let mut out = BufWriter::new(io::stdout().lock());
    let mut printed = 0;
    while limit.is_none_or(|limit| printed < limit) {
        match records.next() {
            Ok(Some(record)) => write_record(&mut out, &record, style)?,
            Ok(None) => break,
            Err(e) => {
                out.flush()?;
                return Err(read_failure(topic, e));
            }
        }
        printed += 1;
    }
    out.flush()?;
    Ok(0)
}

fn tail(dir: &Path, topic: &str, count: u64, follow: Option<Duration>, style: Style) -> Result<u8, Failure> {
    let (data, _) = open_dir(dir)?;
    let offsets = data.offsets(topic).map_err(|e| topic_failure(dir, e))?;
    let from = offsets.end.get().saturating_sub(count).max(offsets.start.get());
    let mut records = open_records(&data, topic, Some(from))?;
    let mut out = BufWriter::new(io::stdout().lock());
    loop {
        loop {
            match records.next() {
                Ok(Some(record)) => write_record(&mut out, &record, style)?,
                Ok(None) => break,
                Err(ReadError::Deleted) if follow.is_some() => {
                    out.flush()?;
                    note(&format!(
                        "tollgate: topic {topic:?} was deleted (and maybe created again): stopped following"
                    ));
                    return Ok(0);
                }
                Err(e) => {
                    out.flush()?;
                    return Err(read_failure(topic, e));
                }
            }
        }
        out.flush()?;
        let Some(interval) = follow else { return Ok(0) };
        std::thread::sleep(interval);
    }
}

/// One record as a line of text or JSON.
fn write_record(out: &mut impl Write, record: &Record, style: Style) -> io::Result<()> {
    if style.json {
        return writeln!(out, "{}", record_json(record));
    }
    let mut line = format!("{} {}", record.offset(), format_time_us(record.timestamp_us()));
    if let Some(key) = record.key() {
        line.push_str(&format!(" key={key:?}"));
    }
    let headers: Vec<String> =
        record.headers().map(|(name, value)| header_text(name, value, style.max_bytes)).collect();
    if !headers.is_empty() {
        line.push_str(&format!(" headers={{{}}}", headers.join(", ")));
    }
    line.push_str(&format!(" payload={}", bytes_text(record.payload(), style.max_bytes)));
    writeln!(out, "{line}")
}

/// A header as `name=value` (control characters in the name escaped), the
/// reserved binary ones decoded.
fn header_text(name: &str, value: &[u8], max_bytes: usize) -> String {
    let shown = name.escape_debug();
    match (name, value) {
        ("tollgate.priority", [priority]) => format!("{shown}={priority}"),
        ("tollgate.deliver-at", value) if value.len() == 8 => {
            let us = u64::from_le_bytes(value.try_into().expect("eight bytes"));
            format!("{shown}={}", format_time_us(us))
        }
        _ => format!("{shown}={}", bytes_text(value, max_bytes)),
    }
}

/// Bytes as a quoted, escaped string if they are UTF-8, else as `hex:...`;
/// cut at `max_bytes` (0: never) with the full size added.
fn bytes_text(bytes: &[u8], max_bytes: usize) -> String {
    let cut = max_bytes > 0 && bytes.len() > max_bytes;
    let shown = if cut { &bytes[..max_bytes] } else { bytes };
    let mut text = match std::str::from_utf8(bytes) {
        Ok(_) => {
            // The cut may split a character: show the whole ones before it.
            let valid = std::str::from_utf8(shown)
                .unwrap_or_else(|e| std::str::from_utf8(&shown[..e.valid_up_to()]).expect("valid up to there"));
            format!("{valid:?}")
        }
        Err(_) => format!("hex:{}", hex(shown)),
    };
    if cut {
        text.push_str(&format!("...({} bytes)", bytes.len()));
    }
    text
}

fn record_json(record: &Record) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("offset".into(), json!(record.offset().get()));
    object.insert("timestamp_us".into(), json!(record.timestamp_us()));
    object.insert("time".into(), json!(format_time_us(record.timestamp_us())));
    object.insert("key".into(), json!(record.key()));
    let headers: Vec<Value> = record
        .headers()
        .map(|(name, value)| {
            let mut header = serde_json::Map::new();
            header.insert("name".into(), json!(name));
            insert_bytes(&mut header, "value", value);
            Value::Object(header)
        })
        .collect();
    object.insert("headers".into(), Value::Array(headers));
    insert_bytes(&mut object, "payload", record.payload());
    object.insert("payload_bytes".into(), json!(record.payload().len()));
    Value::Object(object)
}

/// `field` as a string if `bytes` are UTF-8, else `<field>_base64`.
fn insert_bytes(object: &mut serde_json::Map<String, Value>, field: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object.insert(field.to_owned(), json!(text)),
        Err(_) => object.insert(format!("{field}_base64"), json!(base64(bytes))),
    };
}

// ---------------------------------------------------------------- repair

fn repair(dir: &Path, yes: bool) -> Result<u8, Failure> {
    let data = open_quietly(dir)?;
    if data.held_open() {
        return Err(in_use(dir));
    }
    let report = check(&data)?;
    let mut out = io::stdout().lock();
    let cuts: Vec<&TopicVerdict> = report
        .topics
        .iter()
        .filter(|t| t.cut.as_ref().is_some_and(|cut| cut.kind != CutKind::IncompleteTail))
        .collect();
    let damaged = report.topics.iter().filter(|t| !t.damaged.is_empty()).count();
    if cuts.is_empty() && damaged == 0 {
        writeln!(out, "nothing to repair: {} is clean", dir.display())?;
        return Ok(0);
    }
    writeln!(out, "repair would change {}:", dir.display())?;
    for topic in &cuts {
        let cut = topic.cut.as_ref().expect("filtered on it");
        writeln!(
            out,
            "  topic {}: cut {} at byte {} ({})",
            topic.name,
            cut.at.file.display(),
            cut.at.position,
            cut.at.reason
        )?;
        writeln!(out, "    {}", lost(topic))?;
    }
    for topic in report.topics.iter().filter(|t| !t.damaged.is_empty()) {
        for damage in &topic.damaged {
            writeln!(out, "  topic {}: {damage}", topic.name)?;
            writeln!(out, "    {}", damage_effect(damage))?;
        }
    }
    out.flush()?;
    if !yes {
        confirm(dir)?;
    }
    let config = EngineConfig { repair: true, ..EngineConfig::default() };
    let engine = Engine::open_with(dir, config).map_err(|e| match e {
        OpenError::Locked { .. } => in_use(dir),
        e => fail(EXIT_FAILED, e.to_string()),
    })?;
    let names = engine.topics().map_err(|e| fail(EXIT_FAILED, e.to_string()))?;
    let mut failed = false;
    for name in names {
        match engine.topic(&name) {
            Ok(topic) => writeln!(out, "topic {name}: {}", recovery(topic.recovery_report()))?,
            Err(e) => {
                failed = true;
                writeln!(out, "topic {name}: cannot be repaired: {e}")?;
            }
        }
    }
    drop(engine);
    writeln!(out, "checking again:")?;
    let started = Instant::now();
    let after = check(&data)?;
    write_verdicts(&mut out, &after)?;
    write_summary(&mut out, &after, started.elapsed())?;
    Ok(if after.is_clean() && !failed { 0 } else { EXIT_CORRUPT })
}

/// What the engine, and `repair`, make of a damaged file that `verify`
/// reports (`recovery.rs`: `open_topic`, `clamp_groups`), told by the
/// file's name and the check that failed.
fn damage_effect(damage: &tollgate::Corruption) -> &'static str {
    let name = damage.file.file_name().map(|f| f.to_string_lossy()).unwrap_or_default();
    match (name.as_ref(), damage.reason) {
        (name, "not a tollgate slot file") if name.ends_with(".offset") => {
            "repair removes this file: the group starts over, as a new group does"
        }
        (name, "neither slot is valid") if name.ends_with(".offset") => {
            "the engine reads this file as never committed: the group starts over, as a new group does, and its \
             next commit rewrites the file; repair leaves it in place"
        }
        ("checkpoint", "not a tollgate slot file") => {
            "opening the topic fails until repair, which replaces the checkpoint and scans every segment"
        }
        ("checkpoint", "neither slot is valid") => {
            "the engine reads this as no checkpoint: the next open (or repair) scans every segment and rewrites it"
        }
        ("checkpoint", "its clean-shutdown record disagrees with the last segment's data") => {
            "opening the topic fails until repair, which scans every segment and rewrites the checkpoint"
        }
        _ => "repair cannot fix this: it is reported again after repairing",
    }
}

fn in_use(dir: &Path) -> Failure {
    fail(
        EXIT_FAILED,
        format!("{}: in use by a running process (its lock file is held); stop it before repairing", dir.display()),
    )
}

/// Asks on the terminal; refuses without one.
fn confirm(dir: &Path) -> Result<(), Failure> {
    if !io::stdin().is_terminal() {
        return Err(fail(
            EXIT_FAILED,
            format!("{}: not repaired: stdin is not a terminal to confirm on; pass --yes to repair", dir.display()),
        ));
    }
    let _ = write!(io::stderr(), "Repair {}, deleting the data above? [y/N] ", dir.display());
    let mut answer = String::new();
    io::stdin().read_line(&mut answer).map_err(|e| fail(EXIT_FAILED, format!("cannot read the answer: {e}")))?;
    match answer.trim() {
        "y" | "Y" | "yes" => Ok(()),
        _ => Err(fail(EXIT_FAILED, format!("{}: not repaired", dir.display()))),
    }
}

fn recovery(report: &RecoveryReport) -> String {
    let scanned = format!(
        "scanned {} segment{} ({})",
        report.segments_scanned,
        plural(report.segments_scanned as u64),
        human_bytes(report.bytes_scanned)
    );
    let Some(cut) = &report.cut else { return format!("intact, {scanned}") };
    let mut text = format!("{scanned}; cut {} at byte {} ({})", cut.file.display(), cut.position, cut.reason);
    if report.segments_removed > 0 {
        let removed = report.segments_removed;
        text.push_str(&format!("; removed {removed} later segment{}", plural(removed as u64)));
    }
    text
}

// ---------------------------------------------------------------- bench

fn bench(seconds: f64, parent: Option<PathBuf>) -> Result<u8, Failure> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        return Err(fail(EXIT_FAILED, format!("--seconds {seconds}: must be more than 0 and at most 3600")));
    }
    let parent = parent.unwrap_or_else(std::env::temp_dir);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = parent.join(format!("tollgate-bench-{}-{nanos}", std::process::id()));
    let mut out = io::stdout().lock();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    writeln!(out, "tollgate bench: {seconds} s per test, {cpus} CPUs, data in {} (removed afterwards)", dir.display())?;
    let result = Bench { dir: &dir, duration: Duration::from_secs_f64(seconds) }.run(&mut out);
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|()| 0)
}

/// Messages the publish test writes at most (so that a fast machine does
/// not fill a small disk).
const BENCH_MESSAGES_MAX: u64 = 20_000_000;
/// Payload size of the publish tests.
const BENCH_PAYLOAD_BYTES: usize = 64;

struct Bench<'a> {
    dir: &'a Path,
    duration: Duration,
}

impl Bench<'_> {
    fn run(&self, out: &mut impl Write) -> Result<(), Failure> {
        let failed = |e: Error| fail(EXIT_FAILED, format!("bench: {e}"));
        let (ops, elapsed) = self.locks(1).map_err(|e| failed(e.into()))?;
        rate_line(out, "lock+unlock, 1 thread", ops, elapsed, "ops/s")?;
        let (ops, elapsed) = self.locks(2).map_err(|e| failed(e.into()))?;
        rate_line(out, "lock+unlock, 2 threads, own keys", ops, elapsed, "ops/s")?;

        let engine = Engine::open(self.dir).map_err(|e| failed(e.into()))?;
        let topic = engine.topic("bench").map_err(|e| failed(e.into()))?;
        let (published, elapsed) = self.publish(&topic).map_err(failed)?;
        rate_line(out, &format!("publish {BENCH_PAYLOAD_BYTES} B, buffered"), published, elapsed, "msgs/s")?;
        let (consumed, elapsed) = self.consume(&topic, published).map_err(failed)?;
        rate_line(out, "subscriber consume", consumed, elapsed, "msgs/s")?;
        let (acked, elapsed) = self.work(&topic, published).map_err(failed)?;
        rate_line(out, "worker receive+ack", acked, elapsed, "msgs/s")?;

        let latency = self.latency(&engine).map_err(failed)?;
        latency_line(out, "publish -> subscriber latency", &latency)?;
        let sync = TopicConfig { durability: Durability::Sync, ..TopicConfig::default() };
        let topic = engine.create_topic("bench-sync", sync).map_err(|e| failed(e.into()))?;
        let latency = self.sync_publish(&topic).map_err(failed)?;
        latency_line(out, &format!("publish {BENCH_PAYLOAD_BYTES} B, sync"), &latency)?;
        Ok(())
    }

    /// Uncontended lock and unlock, each of `threads` threads on its own keys.
    fn locks(&self, threads: usize) -> Result<(u64, Duration), tollgate::LockError> {
        let locks = LockManager::new();
        let started = Instant::now();
        let ops: Result<Vec<u64>, _> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let locks = &locks;
                    scope.spawn(move || {
                        let keys: Vec<String> = (0..64).map(|i| format!("bench:{t}:{i}")).collect();
                        let mut ops = 0u64;
                        while started.elapsed() < self.duration {
                            for key in &keys {
                                drop(locks.lock(key)?);
                            }
                            ops += keys.len() as u64;
                        }
                        Ok(ops)
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("a benchmark thread panicked")).collect()
        });
        Ok((ops?.iter().sum(), started.elapsed()))
    }

    fn publish(&self, topic: &tollgate::Topic) -> Result<(u64, Duration), Error> {
        let payload = [0x5a_u8; BENCH_PAYLOAD_BYTES];
        self.repeat(BENCH_MESSAGES_MAX, || topic.publish(payload).map(|_| true).map_err(Error::from))
    }

    /// Reads up to `count` records (or for the test's duration).
    fn consume(&self, topic: &tollgate::Topic, count: u64) -> Result<(u64, Duration), Error> {
        let mut subscription = topic.subscribe("bench-subscriber")?;
        self.repeat(count, || Ok(subscription.next()?.is_some()))
    }

    /// Receives and acks up to `count` messages (or for the test's duration).
    fn work(&self, topic: &tollgate::Topic, count: u64) -> Result<(u64, Duration), Error> {
        let worker = topic.worker("bench-worker")?;
        self.repeat(count, || {
            let Some(delivery) = worker.receive(Duration::ZERO)? else { return Ok(false) };
            delivery.ack()?;
            Ok(true)
        })
    }

    /// Runs `step` until it has run `limit` times, the test's duration has
    /// passed (the clock is read every 256 steps), or it returns false.
    /// Returns the steps that ran, and the time they took.
    fn repeat(&self, limit: u64, mut step: impl FnMut() -> Result<bool, Error>) -> Result<(u64, Duration), Error> {
        let started = Instant::now();
        let mut count = 0;
        while count < limit && (!count.is_multiple_of(256) || started.elapsed() < self.duration) {
            if !step()? {
                break;
            }
            count += 1;
        }
        Ok((count, started.elapsed()))
    }

    /// From before `publish` to a waiting subscriber thread holding the
    /// record, one message at a time.
    fn latency(&self, engine: &Engine) -> Result<Histogram<u64>, Error> {
        let topic = engine.topic("bench-latency")?;
        let mut subscription = topic.subscribe("bench-latency")?;
        let received = AtomicU64::new(0);
        let done = AtomicBool::new(false);
        let origin = Instant::now();
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| -> Result<Histogram<u64>, Error> {
                let mut latency = latency_histogram();
                while !done.load(Ordering::Acquire) {
                    let Some(record) = subscription.next_timeout(Duration::from_millis(10))? else { continue };
                    let sent_ns = u64::from_le_bytes(record.payload()[..8].try_into().expect("eight bytes"));
                    latency.saturating_record(origin.elapsed().as_nanos() as u64 - sent_ns);
                    received.fetch_add(1, Ordering::Release);
                }
                Ok(latency)
            });
            let published = (|| -> Result<(), Error> {
                let mut sent = 0;
                while origin.elapsed() < self.duration {
                    topic.publish((origin.elapsed().as_nanos() as u64).to_le_bytes())?;
                    sent += 1;
                    let waited = Instant::now();
                    while received.load(Ordering::Acquire) < sent && waited.elapsed() < Duration::from_secs(1) {
                        std::hint::spin_loop();
                    }
                }
                Ok(())
            })();
            done.store(true, Ordering::Release);
            let latency = reader.join().expect("the benchmark's reader panicked");
            published.and(latency)
        })
    }

    fn sync_publish(&self, topic: &tollgate::Topic) -> Result<Histogram<u64>, Error> {
        let payload = [0x5a_u8; BENCH_PAYLOAD_BYTES];
        let mut latency = latency_histogram();
        let started = Instant::now();
        while started.elapsed() < self.duration {
            let before = Instant::now();
            topic.publish(payload)?;
            latency.saturating_record(before.elapsed().as_nanos() as u64);
        }
        Ok(latency)
    }
}

/// Nanoseconds from 1 ns to an hour, to 3 significant figures (larger
/// values are recorded as an hour).
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600 * 1_000_000_000, 3).expect("valid bounds")
}

fn rate_line(out: &mut impl Write, what: &str, count: u64, elapsed: Duration, unit: &str) -> io::Result<()> {
    let rate = count as f64 / elapsed.as_secs_f64().max(1e-9);
    writeln!(out, "{:<36}{:>14} {unit}", format!("{what}:"), thousands(rate.round() as u64))
}

fn latency_line(out: &mut impl Write, what: &str, latency: &Histogram<u64>) -> io::Result<()> {
    let at = |q| format_ns(latency.value_at_quantile(q));
    writeln!(
        out,
        "{:<36}p50 {}  p99 {}  p99.9 {}  ({} samples)",
        format!("{what}:"),
        at(0.5),
        at(0.99),
        at(0.999),
        thousands(latency.len())
    )
}

// ---------------------------------------------------------------- formatting

fn plural(count: u64) -> &'static str {
    if count == 1 { "" } else { "s" }
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `512 B`, `4.0 KiB`, `1.21 MiB`, `3.50 GiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 { format!("{value:.2} {}", UNITS[unit]) } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Nanoseconds as `850 ns`, `12.3 us`, `4.56 ms`, `1.20 s`.
fn format_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// Microseconds since the Unix epoch as RFC 3339 in UTC, to the microsecond.
/// Times past the year 9999 (only a damaged or forged file has them), which
/// RFC 3339 cannot write, are shown as their number.
fn format_time_us(us: u64) -> String {
    /// 10000-01-01T00:00:00Z.
    const YEAR_10000_US: u64 = 253_402_300_800 * 1_000_000;
    if us >= YEAR_10000_US {
        return format!("{us}us");
    }
    humantime::format_rfc3339_micros(std::time::UNIX_EPOCH + Duration::from_micros(us)).to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Standard base64 (RFC 4648), padded.
fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn times_are_rfc_3339_utc() {
        assert_eq!(format_time_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_time_us(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
        assert_eq!(format_time_us(1_735_689_599_999_999), "2024-12-31T23:59:59.999999Z");
        assert_eq!(format_time_us(253_402_300_799_999_999), "9999-12-31T23:59:59.999999Z");
        assert_eq!(format_time_us(u64::MAX), format!("{}us", u64::MAX));
    }

    #[test]
    fn bytes_show_as_text_or_hex_and_are_cut() {
        assert_eq!(bytes_text(b"order 1001", 0), "\"order 1001\"");
        assert_eq!(bytes_text(b"a\nb", 0), "\"a\\nb\"");
        assert_eq!(bytes_text(&[0, 0xff, 0x10], 0), "hex:00ff10");
        assert_eq!(bytes_text(b"abcdef", 3), "\"abc\"...(6 bytes)");
        assert_eq!(bytes_text("é".repeat(3).as_bytes(), 3), "\"é\"...(6 bytes)");
        assert_eq!(bytes_text(&[0xff; 10], 2), "hex:ffff...(10 bytes)");
    }

    #[test]
    fn numbers_are_readable() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(4096), "4.00 KiB");
        assert_eq!(human_bytes(100 << 20), "100.0 MiB");
        assert_eq!(format_ns(850), "850 ns");
        assert_eq!(format_ns(12_300), "12.3 us");
    }
}
