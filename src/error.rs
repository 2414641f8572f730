//! Public error types: one enum per kind of operation, and the crate-wide
//! [`Error`] they all convert into; and [`Escaped`], how they (and the
//! `tollgate` tool) print names and paths without control characters.
//!
//! `std::sync::Arc` here is std's even under loom: errors are not part of any
//! loom model.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A name or path, printed with its control characters escaped.
///
/// tollgate refuses control characters in new names, but a directory made
/// by an older build or by hand may hold a topic or group whose name has
/// them, and a path may hold anything. Printed raw, an escape sequence in a
/// name drives the terminal that shows it (sets its title, clears its
/// screen). `Escaped` writes each control character (C0, DEL and C1: what
/// [`char::is_control`] says) the way [`char::escape_debug`] writes it
/// (`\t`, `\n`, `\r`, `\0`, `\u{1b}`, `\u{7f}`, `\u{9b}`...), and for a path
/// each byte that is not UTF-8 as `\xNN`. Every other character is written
/// as it is: an ordinary name prints unchanged, and escaping text already
/// escaped changes nothing. (Names tollgate made hold no `\`, so in a
/// name's escaped form `\u{1b}` always stands for one escaped character.)
///
/// Every error's message writes its paths and lock keys this way, and its
/// names as [`Debug`](fmt::Debug) strings (quoted, control characters
/// escaped the same way), so no message of tollgate holds a control
/// character.
///
/// ```
/// use std::path::Path;
/// use tollgate::Escaped;
///
/// assert_eq!(Escaped::text("orders").to_string(), "orders");
/// let hostile = "\x1b]0;pwned\x07\x1b[2JRED";
/// assert_eq!(Escaped::text(hostile).to_string(), r"\u{1b}]0;pwned\u{7}\u{1b}[2JRED");
/// assert_eq!(Escaped::path(Path::new("data/a\tb")).to_string(), r"data/a\tb");
/// // Idempotent: escaped text has no control characters left to escape.
/// let once = Escaped::text(hostile).to_string();
/// assert_eq!(Escaped::text(&once).to_string(), once);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(&'a [u8]);

impl<'a> Escaped<'a> {
    /// `text` with its control characters escaped.
    pub fn text(text: &'a str) -> Escaped<'a> {
        Escaped(text.as_bytes())
    }

    /// `path` with its control characters, and any bytes that are not
    /// UTF-8, escaped. (On Windows, a path's bytes are its WTF-8 encoding.)
    pub fn path<P: AsRef<Path> + ?Sized>(path: &'a P) -> Escaped<'a> {
        Escaped(path.as_ref().as_os_str().as_encoded_bytes())
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            let mut rest = chunk.valid();
            while let Some(at) = rest.find(char::is_control) {
                f.write_str(&rest[..at])?;
                let control = rest[at..].chars().next().expect("found at `at`");
                write!(f, "{}", control.escape_debug())?;
                rest = &rest[at + control.len_utf8()..];
            }
            f.write_str(rest)?;
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

/// Lock keys, escaped, joined by `, `.
struct EscapedList<'a>(&'a [String]);

impl fmt::Display for EscapedList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, key) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", Escaped::text(key))?;
        }
        Ok(())
    }
}

/// Why a lock operation failed.
///
/// Every variant leaves the lock manager unchanged: a failed acquisition holds
/// nothing and leaves no waiter behind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// A non-blocking acquisition found the key held by another owner, or
    /// found other owners already waiting for it (waiters are served first).
    #[error("the key is held by another owner")]
    WouldBlock,
    /// A timed acquisition gave up when its timeout passed.
    #[error("timed out after {} ms waiting for the lock", waited.as_millis())]
    Timeout {
        /// How long the caller waited.
        waited: Duration,
    },
    /// The wait was interrupted by [`Session::interrupt`](crate::Session::interrupt)
    /// or by cancelling the request's [`CancelToken`](crate::CancelToken).
    #[error("the wait for the lock was interrupted")]
    Interrupted,
    /// The waiter was part of a cycle of owners each waiting for a lock held by
    /// the next, and was chosen to break it. Nothing it already held was released.
    #[error("deadlock: this wait closed a cycle over keys {}; it was chosen to give up", EscapedList(keys))]
    Deadlock {
        /// The keys waited for along the cycle, starting with this waiter's key.
        keys: Vec<String>,
    },
    /// The grant's lease ran out. The key may since have been granted to
    /// another owner with a higher fencing token; the old grant is void.
    #[error("the lease expired: the lock may now belong to another owner")]
    LeaseExpired,
    /// [`renew`](crate::LockGuard::renew) was called on a grant made without a lease.
    #[error("the lock was granted without a lease, so there is nothing to renew")]
    NoLease,
    /// The owner holds the key shared and asked for it exclusively. Waiting
    /// would deadlock on itself; release the shared lock first.
    #[error("cannot upgrade a shared lock to exclusive: release the shared lock first")]
    Upgrade,
    /// The key is empty or longer than [`KEY_BYTES_MAX`](crate::KEY_BYTES_MAX).
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The [`LockRequest`](crate::LockRequest) asks for something unsupported
    /// or out of range.
    #[error("invalid lock request: {reason}")]
    InvalidRequest {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A thread-owned lock ([`LockManager`](crate::LockManager)'s own
    /// methods) was asked for inside an async task that tollgate polls (one
    /// of its futures or streams, or a handler of a run loop). Every task
    /// that the executor runs on that thread would share the lock as one
    /// owner; use a [`Session`](crate::Session) per task instead, or
    /// `spawn_blocking` for blocking code.
    #[error("a thread-owned lock was requested inside an async task: use a Session")]
    ThreadOwnerInTask,
    /// The PostgreSQL backend could not reach the database, or the database
    /// refused the operation. See [`BackendError`] for what is known of the
    /// operation's outcome.
    #[error(transparent)]
    Backend(BackendError),
}

/// The database behind the PostgreSQL backend failed an operation.
///
/// An operation that failed with [`BackendErrorKind::Unavailable`] may or
/// may not have taken effect: the connection was lost while it ran, or
/// could not be made. The backend reconnects on the next call. Grants and
/// waits of a client that can no longer reach the database end when its
/// heartbeat lapses (`PgConfig::client_ttl`): its locks then pass to others
/// with higher fencing tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PostgreSQL backend: {kind}: {message}")]
pub struct BackendError {
    /// What kind of failure it was.
    pub kind: BackendErrorKind,
    /// What the client library or the server said.
    pub message: String,
}

/// The kinds of [`BackendError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The database could not be reached, or the connection was lost
    /// during the operation (which may or may not have taken effect).
    /// Retrying later is the remedy.
    #[error("the database is unavailable")]
    Unavailable,
    /// The operation did not finish within `PgConfig::operation_timeout`.
    /// It may or may not have taken effect.
    #[error("the operation timed out")]
    TimedOut,
    /// This client's heartbeat lapsed: the database treats it as dead, so
    /// its grants were void and may belong to others now. New grants are
    /// made under a new client registration.
    #[error("this client's registration expired")]
    ClientExpired,
    /// The server refused the statement (a bug, or a schema changed by hand).
    #[error("the database refused the operation")]
    Refused,
}

impl BackendError {
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn new(kind: BackendErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

/// Any error tollgate returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A lock operation failed.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Opening an engine failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A topic operation failed.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// A publish failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// A read failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A commit failed.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// A worker's receive, or the settling of a delivery, failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A worker's run loop could not run.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A backup failed.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// A routing-key pattern did not parse.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// A worker group's configuration text did not parse.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// An I/O error, with the operation and the file it happened on.
///
/// Cloneable (the source is shared) so that errors can be handed to every
/// caller a failed group commit was serving. Two `IoError`s are equal when
/// their operation, path and [`std::io::ErrorKind`] are.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} {}: {source}", Escaped::path(path))]
pub struct IoError {
    /// What was being done: `"create"`, `"sync"`, `"allocate"`...
    pub op: &'static str,
    /// The file or directory it was done to.
    pub path: PathBuf,
    /// What the operating system reported.
    #[source]
    pub source: Arc<std::io::Error>,
}

impl IoError {
    pub(crate) fn new(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self { op, path: path.into(), source: Arc::new(source) }
    }

    /// The kind of the underlying error; [`std::io::ErrorKind::StorageFull`]
    /// when the disk is full.
    pub fn kind(&self) -> std::io::ErrorKind {
        self.source.kind()
    }

    /// The symbolic link inside the data directory that made the operation
    /// fail, if that is why it failed: the source is then a
    /// [`SymlinkError`]. The link may be the file operated on or a
    /// directory on the way to it, so it is not always [`IoError::path`].
    pub fn symlink(&self) -> Option<&Path> {
        self.source.get_ref()?.downcast_ref::<SymlinkError>().map(|e| e.path.as_path())
    }
}

/// A symbolic link found inside a data directory, where the engine (and
/// [`inspect`](crate::inspect)) follows none: the source of the
/// [`IoError`] of the operation it refused ([`IoError::symlink`]).
///
/// The data directory's own path (what is given to
/// [`Engine::open`](crate::Engine::open)) may go through links; every
/// file and directory inside it must be a real one, so that the engine
/// never creates, writes or reads a file outside it. Nothing was created or
/// written through the link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} is a symbolic link: tollgate follows no link inside its data directory", path.display())]
pub struct SymlinkError {
    /// The link.
    pub path: PathBuf,
}

impl PartialEq for IoError {
    fn eq(&self, other: &Self) -> bool {
        self.op == other.op && self.path == other.path && self.kind() == other.kind()
    }
}

impl Eq for IoError {}

/// Bytes on disk that fail their checks, with where they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt data in {} at byte {position}: {reason}", Escaped::path(file))]
pub struct Corruption {
    /// The file holding the bad bytes.
    pub file: PathBuf,
    /// Byte position of the bad frame or field in that file.
    pub position: u64,
    /// What check failed.
    pub reason: &'static str,
}

/// Why [`Engine::open`](crate::Engine::open) failed. Nothing was changed on disk
/// except, for a directory that did not exist, its creation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another [`Engine`](crate::Engine), in this process or another, has the directory open.
    #[error("{} is already open in another engine (its lock file is held)", Escaped::path(path))]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// The directory holds files but is not a tollgate data directory.
    #[error("{} is not a tollgate data directory: {reason}", Escaped::path(path))]
    NotTollgate {
        /// The data directory.
        path: PathBuf,
        /// What was found instead.
        reason: &'static str,
    },
    /// A file carries a format version this build cannot read.
    #[error("{} has format version {found}; this build reads up to {supported}", Escaped::path(path))]
    NewerVersion {
        /// The file with the newer version.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A topic's files could not be opened.
    #[error("topic {name:?}: {source}")]
    Topic {
        /// The topic.
        name: String,
        /// What went wrong.
        #[source]
        source: Box<TopicError>,
    },
    /// The [`EngineConfig`](crate::EngineConfig) is out of range.
    #[error("invalid engine configuration: {reason}")]
    InvalidConfig {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Reading or creating the directory failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The PostgreSQL database's tollgate schema is newer than this build:
    /// a newer release migrated it. Nothing was changed.
    #[error("schema {schema:?} has version {found}; this build knows up to {supported}")]
    SchemaTooNew {
        /// The schema.
        schema: String,
        /// Its version.
        found: i32,
        /// The newest version this build knows.
        supported: i32,
    },
    /// The PostgreSQL database's tollgate schema is older than this build
    /// and `PgConfig::migrate` is off: run the migrations first
    /// (`tollgate pg migrate`). Nothing was changed.
    #[error("schema {schema:?} has version {found}; this build needs {required}: migrate it first")]
    SchemaOutdated {
        /// The schema.
        schema: String,
        /// Its version (0: not created).
        found: i32,
        /// The version this build needs.
        required: i32,
    },
    /// The `postgres://` URL or the `PgConfig` is not valid.
    #[error("invalid PostgreSQL configuration: {reason}")]
    InvalidPgConfig {
        /// What is wrong with it.
        reason: String,
    },
    /// A `postgres://` backend was asked for in a build without the
    /// `postgres` feature.
    #[error("this build of tollgate has no PostgreSQL backend: enable the `postgres` feature")]
    PostgresNotBuilt,
    /// Connecting to PostgreSQL, or setting up the schema, failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Why creating, opening, deleting or subscribing to a topic failed. Nothing
/// was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// A topic or group name is empty, longer than 255 bytes (a group's 248),
    /// contains `/`, `\` or NUL, or is `.` or `..`; or a name that would
    /// create a topic or group contains a control character (C0, DEL or C1:
    /// [`char::is_control`]). A topic or group that already exists under a
    /// name with control characters (made by an older build, or by hand)
    /// still opens; print such names with [`Escaped`].
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// [`Engine::create_topic`](crate::Engine::create_topic) found the topic already there.
    #[error("topic {name:?} already exists")]
    AlreadyExists {
        /// The topic.
        name: String,
    },
    /// No topic has this name.
    #[error("topic {name:?} does not exist")]
    NotFound {
        /// The topic.
        name: String,
    },
    /// The group already has a live [`Subscription`](crate::Subscription) on this topic.
    #[error("consumer group {group:?} already has a live subscription to this topic")]
    GroupBusy {
        /// The group.
        group: String,
    },
    /// The topic was deleted while this handle was open.
    #[error("the topic was deleted")]
    Deleted,
    /// The [`TopicConfig`](crate::TopicConfig) is out of range.
    #[error("invalid topic configuration: {reason}")]
    InvalidConfig {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file carries a format version this build cannot read.
    #[error("{} has format version {found}; this build reads up to {supported}", Escaped::path(path))]
    NewerVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A file that cannot be rebuilt failed its checks.
    #[error(transparent)]
    Corrupt(#[from] Corruption),
    /// A worker group of this name is open with a different
    /// [`QueueConfig`](crate::QueueConfig); its workers must share one.
    #[error("worker group {group:?} is already open with a different configuration")]
    GroupConfigDiffers {
        /// The group.
        group: String,
    },
    /// The engine was closed (its last handle dropped).
    #[error("the engine was closed")]
    Closed,
    /// The backend cannot provide a setting that was asked for: a
    /// [`TopicConfig`](crate::TopicConfig) field that only means something
    /// for files on disk (segment size, retention by bytes), set to other
    /// than its default on PostgreSQL.
    #[error("the {backend} backend does not support {setting}")]
    Unsupported {
        /// The backend: `"postgres"` or `"embedded"`.
        backend: &'static str,
        /// The setting or operation.
        setting: &'static str,
    },
    /// The PostgreSQL backend could not reach the database, or the database
    /// refused the operation (see [`BackendError`]: the operation's outcome
    /// may be unknown).
    #[error(transparent)]
    Backend(BackendError),
    /// The file system refused.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Why a worker could not receive, or a delivery could not be settled.
///
/// A settle that fails with `Expired`, `TooLong`, `Closed` or `Deleted`, or
/// with `Io` from writing the journal, changed nothing: the message stays in
/// flight until its visibility deadline, then is delivered again (or
/// dead-lettered). On a `Sync` topic, an `Io` error from *syncing* the
/// journal comes after the settle took effect in this process: it is not
/// known to survive a power cut. A dead letter that fails (`DeadLetter`, or
/// `Io` recording it after it was published) gave the message back to the
/// group, to be dead-lettered again a second later (possibly a second time).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The delivery's visibility deadline passed before it was settled or
    /// extended: the message has been (or will be) handed out again, and
    /// this delivery can no longer settle it.
    #[error("the delivery of offset {offset} passed its visibility deadline; the message is delivered again")]
    Expired {
        /// The message's offset.
        offset: u64,
    },
    /// A retry delay or visibility extension is longer than its limit
    /// ([`DELAY_MAX`](crate::DELAY_MAX), [`VISIBILITY_MAX`](crate::VISIBILITY_MAX)).
    #[error("{requested:?} is longer than the limit of {max:?}")]
    TooLong {
        /// What was asked for.
        requested: Duration,
        /// The limit.
        max: Duration,
    },
    /// The message was to be dead-lettered, and publishing it to the
    /// dead-letter topic failed. It stays in the group, held back for a
    /// second; then a worker that would receive it dead-letters it instead
    /// (it is not delivered again).
    #[error("could not dead-letter the message: {0}")]
    DeadLetter(#[source] PublishError),
    /// Reading the topic failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Writing the group's state failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The topic was deleted.
    #[error("the topic was deleted")]
    Deleted,
    /// The PostgreSQL backend could not reach the database, or the database
    /// refused the operation (see [`BackendError`]: the operation's outcome
    /// may be unknown).
    #[error(transparent)]
    Backend(BackendError),
    /// The engine was closed (its last handle dropped): deliveries can no
    /// longer be settled, and their messages are delivered again after a
    /// restart.
    #[error("the engine was closed")]
    Closed,
}

/// Why a worker's run loop ([`Worker::run`](crate::Worker::run),
/// [`Worker::run_async`](crate::Worker::run_async)) could not run. Errors
/// while it runs are counted in its [`RunReport`](crate::RunReport) instead.
///
/// ```
/// use tollgate::{RunConfig, RunError};
///
/// # let dir = tempfile::tempdir()?;
/// let engine = tollgate::Engine::open(dir.path())?;
/// let worker = engine.topic("orders")?.worker("payments")?;
/// let config = RunConfig { concurrency: 0, ..RunConfig::default() };
/// let error = worker.run(config, |_| tollgate::Settle::Ack).unwrap_err();
/// assert!(matches!(error, RunError::Config { option: "concurrency", .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A [`RunConfig`](crate::RunConfig) value is out of its range.
    #[error("the run option {option} is {value}; it must be 1 to {max}")]
    Config {
        /// The option at fault.
        option: &'static str,
        /// Its value.
        value: usize,
        /// The most it may be.
        max: usize,
    },
    /// The run loop's future was polled again after it completed.
    #[error("the run loop has already finished")]
    Finished,
}

/// A routing-key pattern that does not parse (see [`KeyPattern`](crate::KeyPattern)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid key pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A worker group configuration text that does not parse (see
/// [`QueueConfig`](crate::QueueConfig)'s `FromStr`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid queue option {option:?}: {reason}")]
pub struct ConfigError {
    /// The option (or whole text) at fault.
    pub option: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Why a publish failed. Nothing was appended (no offset was used, and no
/// reader will see any part of the message or batch), with one exception:
/// an [`Io`](PublishError::Io) error from the sync of a `Sync` publish comes
/// after the record was appended, so readers may see it although it is not
/// known to be durable; the topic then refuses writes
/// ([`PreviousIo`](PublishError::PreviousIo)) until it is reopened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The message, or the batch as one frame, is larger than the topic allows.
    #[error("message of {bytes} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// Its encoded size.
        bytes: usize,
        /// The limit: `max_message_bytes`, or for a batch what fits in a segment.
        max: usize,
    },
    /// A key, header or batch is out of range.
    #[error("invalid message: {reason}")]
    InvalidMessage {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The topic was deleted while this handle was open.
    #[error("the topic was deleted")]
    Deleted,
    /// The engine was closed (its last handle dropped).
    #[error("the engine was closed")]
    Closed,
    /// An earlier write or sync failed, so the log's tail is in doubt and the
    /// topic refuses writes until it is reopened (recovery then decides what
    /// survived).
    #[error("an earlier I/O error on this topic stops further writes; reopen the engine to recover")]
    PreviousIo,
    /// A lock of the [`Transaction`](crate::Transaction) was no longer held
    /// when it committed (its lease ran out, or, on PostgreSQL, this
    /// process's registration lapsed): nothing was published. Checked in the
    /// same database transaction as the publish on PostgreSQL.
    #[error("the lock on {} was lost before the commit: nothing was published", Escaped::text(key))]
    LockLost {
        /// The key whose lock was lost.
        key: String,
    },
    /// The operation needs another backend: `Topic::publish_in`
    /// on an embedded topic, say.
    #[error("{operation} is not supported by the {backend} backend")]
    Unsupported {
        /// The topic's backend: `"embedded"` or `"postgres"`.
        backend: &'static str,
        /// What was asked for.
        operation: &'static str,
    },
    /// The PostgreSQL backend could not reach the database, or the database
    /// refused the operation (see [`BackendError`]: the operation's outcome
    /// may be unknown).
    #[error(transparent)]
    Backend(BackendError),
    /// This write failed. Errors while making room (allocating space or
    /// creating the next segment; a full disk has [`IoError::kind`]
    /// `StorageFull`) fail the publish before anything is written, so
    /// publishing can be retried, and works again once space is freed.
    /// Errors while syncing written data also set [`PublishError::PreviousIo`].
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Retention deleted the segment holding this offset.
    #[error("offset {requested} is no longer retained; the oldest retained offset is {oldest}")]
    NotRetained {
        /// The offset asked for.
        requested: u64,
        /// The oldest offset still in the log.
        oldest: u64,
    },
    /// No record has this offset yet.
    #[error("offset {requested} has not been written; the next offset is {next}")]
    NotWritten {
        /// The offset asked for.
        requested: u64,
        /// The offset the next publish will get.
        next: u64,
    },
    /// The record's bytes fail their CRC or structure checks.
    #[error(transparent)]
    Corrupt(#[from] Corruption),
    /// The topic was deleted while this handle was open.
    #[error("the topic was deleted")]
    Deleted,
    /// The PostgreSQL backend could not reach the database, or the database
    /// refused the operation (see [`BackendError`]: the operation's outcome
    /// may be unknown).
    #[error(transparent)]
    Backend(BackendError),
    /// The file system refused.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Why a commit failed. The group's committed offset is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The offset is past the end of the log.
    #[error("cannot commit offset {requested}: the log ends at {end}")]
    BeyondEnd {
        /// The offset asked for.
        requested: u64,
        /// The offset the next publish will get.
        end: u64,
    },
    /// The topic was deleted while this handle was open.
    #[error("the topic was deleted")]
    Deleted,
    /// The engine was closed (its last handle dropped).
    #[error("the engine was closed")]
    Closed,
    /// The PostgreSQL backend could not reach the database, or the database
    /// refused the operation (see [`BackendError`]: the operation's outcome
    /// may be unknown).
    #[error(transparent)]
    Backend(BackendError),
    /// Writing or syncing the offset file failed.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Why [`Engine::backup_to`](crate::Engine::backup_to) failed. A backup that
/// fails after it started writing removes what it wrote; the data directory
/// is never changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The destination exists and is not an empty directory.
    #[error("{} exists and is not an empty directory", path.display())]
    DestinationNotEmpty {
        /// The destination.
        path: PathBuf,
    },
    /// The destination is the data directory or inside it.
    #[error("{} is inside the data directory {}", path.display(), data_dir.display())]
    DestinationInside {
        /// The destination.
        path: PathBuf,
        /// The data directory being backed up.
        data_dir: PathBuf,
    },
    /// A topic's files could not be copied: its checkpoint in the copy
    /// could not be written.
    #[error(transparent)]
    Topic(TopicError),
    /// The engine keeps its topics in PostgreSQL: back the database up
    /// with its own tools (`pg_dump`, base backups and WAL archiving).
    #[error("a PostgreSQL engine is backed up with PostgreSQL's tools (pg_dump), not backup_to")]
    Unsupported,
    /// Reading the data directory or writing the copy failed.
    #[error(transparent)]
    Io(#[from] IoError),
}

impl From<TopicError> for BackupError {
    fn from(e: TopicError) -> Self {
        match e {
            TopicError::Io(e) => BackupError::Io(e),
            e => BackupError::Topic(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_shows_controls_and_bytes_that_are_not_utf8() {
        assert_eq!(Escaped::text("a\0b\r\u{85}é").to_string(), r"a\0b\r\u{85}é");
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let path = Path::new(std::ffi::OsStr::from_bytes(b"dir/\xff\x1b\xc3"));
            assert_eq!(Escaped::path(path).to_string(), r"dir/\xff\u{1b}\xc3");
        }
    }
}
