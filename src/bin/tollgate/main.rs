//! `tollgate`: look into, check, read, repair and benchmark tollgate data
//! directories. Reference, with examples of every command: `docs/CLI.md`.
//!
//! The read commands (`inspect`, `verify`, `dump`, `tail`) go through
//! `tollgate::inspect`, which never writes a byte nor takes the directory's
//! lock, so they are safe on a directory a running process holds open.
//! `repair` writes, through an `Engine` in repair mode, and refuses a
//! directory in use; so does `backup`, through `Engine::backup_to`. `bench` works in a fresh directory of its own.
//!
//! Exit codes: 0 success (for `verify`: clean), 1 corruption found, 2 bad
//! usage, an I/O error, or a refusal. Errors are one line on stderr,
//! `tollgate: <what>: <why>`.
//!
//! Names and paths are printed with their control characters escaped
//! (`tollgate::Escaped`, and `text::escaped` for text the library made), so
//! that a name holding an escape sequence cannot drive the terminal.
//!
//! The code, a file a part:
//!
//! - `main.rs`: the command line, the exit codes, and how a failure is told.
//! - `open.rs`: opening a data directory for reading, and the failures of reading it.
//! - `text.rs`: the formatting every command shares: escaped text, counts, sizes, durations, times, hex, base64,
//!   tables, JSON.
//! - `record.rs`: a record as a line of text or a JSON object, for `dump` and `tail`.
//! - `inspect.rs`: `tollgate inspect`, a directory's topics, segments and groups.
//! - `verify.rs`: `tollgate verify`, and the checking and verdicts `repair` shares.
//! - `dump.rs`: `tollgate dump`, a topic's records from an offset.
//! - `tail.rs`: `tollgate tail`, a topic's last records, and with `-f` its new ones.
//! - `repair.rs`: `tollgate repair`, cutting each log at its first corruption.
//! - `backup.rs`: `tollgate backup`, a consistent copy of a stopped directory.
//! - `bench.rs`: `tollgate bench`, numbers for this machine.

mod backup;
mod bench;
mod dump;
mod inspect;
mod open;
#[cfg(feature = "postgres")]
mod pg;
mod record;
mod repair;
mod tail;
mod text;
mod verify;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use record::Style;
use tollgate::Escaped;

/// Exit code: corruption found.
const EXIT_CORRUPT: u8 = 1;
/// Exit code: bad usage, an I/O error, or a refusal.
const EXIT_FAILED: u8 = 2;

#[derive(Parser)]
#[command(name = "tollgate", version, about = "Inspect, check, read, repair and benchmark tollgate data directories.")]
#[command(long_about = "Inspect, check, read, repair and benchmark tollgate data directories.\n\n\
    inspect, verify, dump and tail only read: they take no lock and write nothing, so they are safe on a \
    directory a running process holds open. repair and backup write and refuse a directory in use.\n\n\
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
    /// Copy a data directory that no process has open to DEST.
    ///
    /// Refuses a directory in use (a running process backs itself up with
    /// `Engine::backup_to`). DEST must not exist or must be an empty
    /// directory outside the data directory. Every file and directory of
    /// the copy is synced, `tollgate.meta` last; a failed backup removes
    /// what it wrote. Restore by putting the copy in the directory's place
    /// while nothing runs on it (`docs/OPERATIONS.md`).
    Backup {
        /// The data directory.
        dir: PathBuf,
        /// Where the copy goes.
        dest: PathBuf,
    },
    /// The PostgreSQL backend's schema (builds with the `postgres` feature).
    #[cfg(feature = "postgres")]
    Pg {
        #[command(subcommand)]
        command: PgCommand,
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

/// `tollgate pg` commands.
#[cfg(feature = "postgres")]
#[derive(Subcommand)]
enum PgCommand {
    /// Create the schema, or upgrade it to this build's version.
    ///
    /// Each version is applied in one transaction; concurrent migrators
    /// (several processes starting) apply it once. A schema newer than this
    /// build is refused and left as it is.
    Migrate {
        /// The database: `postgres://user:password@host:port/database`.
        url: String,
        /// The schema holding tollgate's tables.
        #[arg(long, default_value = "tollgate")]
        schema: String,
    },
    /// Run the retention job once: delete expired messages every worker
    /// group has settled, and the rows of idle lock keys.
    ///
    /// Run it every minute or so from one place (cron, a systemd timer);
    /// see docs/OPERATIONS.md. Refuses a schema that does not exist or is
    /// not at this build's version.
    Cleanup {
        /// The database: `postgres://user:password@host:port/database`.
        url: String,
        /// The schema holding tollgate's tables.
        #[arg(long, default_value = "tollgate")]
        schema: String,
    },
    /// Show the schema's version and whether this build can use it.
    ///
    /// Exits 2 if the schema is newer than this build.
    Status {
        /// The database: `postgres://user:password@host:port/database`.
        url: String,
        /// The schema holding tollgate's tables.
        #[arg(long, default_value = "tollgate")]
        schema: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { dir, json } => inspect::inspect(&dir, json),
        Command::Verify { dir } => verify::verify(&dir),
        Command::Dump { dir, topic, from, limit, json, max_bytes } => {
            dump::dump(&dir, &topic, from, limit, Style { json, max_bytes })
        }
        Command::Tail { dir, topic, count, follow, json, max_bytes, interval_ms } => {
            let follow = follow.then(|| Duration::from_millis(interval_ms.max(1)));
            tail::tail(&dir, &topic, count, follow, Style { json, max_bytes })
        }
        Command::Repair { dir, yes } => repair::repair(&dir, yes),
        Command::Backup { dir, dest } => backup::backup(&dir, &dest),
        Command::Bench { seconds, dir } => bench::bench(seconds, dir),
        #[cfg(feature = "postgres")]
        Command::Pg { command: PgCommand::Migrate { url, schema } } => pg::migrate(&url, &schema),
        #[cfg(feature = "postgres")]
        Command::Pg { command: PgCommand::Status { url, schema } } => pg::status(&url, &schema),
        #[cfg(feature = "postgres")]
        Command::Pg { command: PgCommand::Cleanup { url, schema } } => pg::cleanup(&url, &schema),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure { code, message }) => {
            if let Some(message) = message {
                let _ = writeln!(io::stderr(), "tollgate: {}", Escaped::text(&message));
            }
            ExitCode::from(code)
        }
    }
}

/// Why a command stopped: the exit code, and the line for stderr (none when
/// the output was closed, which ends a command quietly). The line is
/// escaped when it is printed, so it may hold names and paths as they are.
struct Failure {
    code: u8,
    message: Option<String>,
}

/// A failure with `code` and `message` for stderr.
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

/// A line on stderr: notes and prompts, never data. Escaped, as a failure's
/// message is: either may name a topic or path.
fn note(line: &str) {
    let _ = writeln!(io::stderr(), "{}", Escaped::text(line));
}
