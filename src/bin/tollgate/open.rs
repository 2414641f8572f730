//! Opening a data directory for reading, and turning what goes wrong in
//! reading it into a `Failure` with its exit code, so that every command
//! reports a missing directory, topic or offset in the same words.

use std::io;
use std::path::Path;

use tollgate::inspect::{Directory, Records};
use tollgate::{Error, Escaped, OpenError, ReadError, TopicError};

use crate::{EXIT_CORRUPT, EXIT_FAILED, Failure, fail, note};

/// Opens `dir` for reading, and says so if a process holds it. Returns
/// whether one does, so that a command looks once.
pub(super) fn open_dir(dir: &Path) -> Result<(Directory, bool), Failure> {
    let data = open_quietly(dir)?;
    let held_open = data.held_open();
    if held_open {
        note(&format!(
            "note: {} is held open by a running process: reading without locking; the newest records may be incomplete",
            Escaped::path(dir)
        ));
    }
    Ok((data, held_open))
}

/// Opens `dir` for reading.
pub(super) fn open_quietly(dir: &Path) -> Result<Directory, Failure> {
    Directory::open(dir).map_err(|e| match e {
        OpenError::Io(io) if io.kind() == io::ErrorKind::NotFound => {
            fail(EXIT_FAILED, format!("{}: no such directory", Escaped::path(dir)))
        }
        e => fail(EXIT_FAILED, e.to_string()),
    })
}

/// A topic that could not be read.
pub(super) fn topic_failure(dir: &Path, e: TopicError) -> Failure {
    match e {
        TopicError::NotFound { name } => {
            fail(EXIT_FAILED, format!("{}: topic {name:?} does not exist", Escaped::path(dir)))
        }
        TopicError::Corrupt(c) => fail(EXIT_CORRUPT, c.to_string()),
        e => fail(EXIT_FAILED, e.to_string()),
    }
}

/// A read of `topic` that failed.
pub(super) fn read_failure(topic: &str, e: ReadError) -> Failure {
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
pub(super) fn open_records(data: &Directory, topic: &str, from: Option<u64>) -> Result<Records, Failure> {
    data.records(topic, from.map(tollgate::Offset::new)).map_err(|e| match e {
        Error::Topic(e) => topic_failure(data.path(), e),
        Error::Read(e) => read_failure(topic, e),
        e => fail(EXIT_FAILED, e.to_string()),
    })
}
