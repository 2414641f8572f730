//! Symbolic links inside a data directory are refused, never followed
//! (issue 12, item 2): for each file and directory of the layout, the test
//! moves the real one out to a second directory and puts a link to it in its
//! place, runs what opens, reads and writes it, and checks that the
//! operation failed with an error naming the link, that nothing outside was
//! created, changed or removed, and that the link is still there. The data
//! directory's own path may be a link (the caller's choice).
#![cfg(unix)]

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use tollgate::inspect::Directory;
use tollgate::{
    CommitError, Engine, IoError, OpenError, PublishError, QueueError, ReadError, SymlinkError, TopicConfig, TopicError,
};

/// A data directory after an engine ran on it: the topic `t` (two
/// segments), a consumer group `c` with a committed offset, and a worker
/// group `w` that acknowledged a message.
fn fixture() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let config = TopicConfig { segment_bytes: 4096, max_message_bytes: 1024, ..TopicConfig::default() };
    let topic = engine.create_topic("t", config).unwrap();
    for i in 0..40 {
        topic.publish(format!("message {i:>100}")).unwrap();
    }
    let mut sub = topic.subscribe("c").unwrap();
    sub.next().unwrap().unwrap();
    sub.commit().unwrap();
    drop(sub);
    let worker = topic.worker("w").unwrap();
    worker.receive(Duration::from_secs(5)).unwrap().unwrap().ack().unwrap();
    drop((worker, topic, engine));
    dir
}

/// The fixture's segment files, oldest first, as paths relative to the
/// data directory.
fn segments() -> Vec<String> {
    let data = fixture();
    let mut names: Vec<String> = std::fs::read_dir(data.path().join("topics/t"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".log"))
        .map(|name| format!("topics/t/{name}"))
        .collect();
    names.sort();
    assert!(names.len() > 1, "{names:?}");
    names
}

/// What a failed operation said: `Ok(link)` if it refused the symbolic
/// link `link`, else the error's text.
type Why = Result<PathBuf, String>;

/// The errors the operations return, each with the [`IoError`] it may carry.
trait CarriesIo: Display {
    fn io(&self) -> Option<&IoError>;
}

impl CarriesIo for OpenError {
    fn io(&self) -> Option<&IoError> {
        match self {
            OpenError::Io(e) => Some(e),
            OpenError::Topic { source, .. } => source.io(),
            _ => None,
        }
    }
}

/// `CarriesIo` for errors whose `Io` variant is the only one with an `IoError`.
macro_rules! carries_io {
    ($($error:ident),*) => {$(
        impl CarriesIo for $error {
            fn io(&self) -> Option<&IoError> {
                if let $error::Io(e) = self { Some(e) } else { None }
            }
        }
    )*};
}

carries_io!(TopicError, PublishError, CommitError, ReadError);

impl CarriesIo for QueueError {
    fn io(&self) -> Option<&IoError> {
        match self {
            QueueError::Io(e) | QueueError::Read(ReadError::Io(e)) => Some(e),
            _ => None,
        }
    }
}

impl CarriesIo for tollgate::Error {
    fn io(&self) -> Option<&IoError> {
        match self {
            tollgate::Error::Open(e) => e.io(),
            tollgate::Error::Topic(e) => e.io(),
            tollgate::Error::Read(e) => e.io(),
            _ => None,
        }
    }
}

/// The link an error names as refused, or its text. The link is also the
/// source of the `IoError`, typed.
fn why(e: impl CarriesIo) -> Why {
    let Some(io) = e.io() else { return Err(e.to_string()) };
    let Some(link) = io.symlink() else { return Err(e.to_string()) };
    let typed = io.source.get_ref().and_then(|s| s.downcast_ref::<SymlinkError>());
    assert_eq!(typed.map(|t| t.path.as_path()), Some(link), "{e}");
    assert!(e.to_string().contains(&link.display().to_string()), "{e}");
    Ok(link.to_path_buf())
}

/// Opens the engine and the topic `t`, publishes to it, and drops them
/// (a clean shutdown writes the checkpoint).
fn open_and_publish(data: &Path) -> Result<(), Why> {
    let engine = Engine::open(data).map_err(why)?;
    let topic = engine.topic("t").map_err(why)?;
    topic.publish(b"more").map_err(why)?;
    Ok(())
}

/// Subscribes the group `c` to `t`, reads a record and commits.
fn subscribe_and_commit(data: &Path) -> Result<(), Why> {
    let engine = Engine::open(data).map_err(why)?;
    let topic = engine.topic("t").map_err(why)?;
    let mut sub = topic.subscribe("c").map_err(why)?;
    sub.next().map_err(why)?;
    sub.commit().map_err(why)?;
    Ok(())
}

/// Opens the worker group `w` of `t`, receives and acknowledges a message.
fn receive_and_ack(data: &Path) -> Result<(), Why> {
    let engine = Engine::open(data).map_err(why)?;
    let topic = engine.topic("t").map_err(why)?;
    let worker = topic.worker("w").map_err(why)?;
    let delivery = worker.receive(Duration::from_secs(5)).map_err(why)?;
    delivery.expect("a message").ack().map_err(why)?;
    Ok(())
}

/// One entry of a directory tree as found, links not followed.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
}

/// Every entry under `root`, by path relative to it.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<PathBuf, Entry>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let kind = std::fs::symlink_metadata(&path).unwrap().file_type();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if kind.is_symlink() {
                into.insert(rel, Entry::Link(std::fs::read_link(&path).unwrap()));
            } else if kind.is_dir() {
                into.insert(rel, Entry::Dir);
                walk(root, &path, into);
            } else {
                into.insert(rel, Entry::File(std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut entries = BTreeMap::new();
    walk(root, root, &mut entries);
    entries
}

/// Replaces `rel` in a fresh fixture by a link to where it is moved, in a
/// second directory (or, if `rel` is not in the fixture, to a new empty
/// directory there), runs `op`, and checks that it refused the link and
/// left the outside and the link as they were.
fn refused(rel: &str, op: fn(&Path) -> Result<(), Why>) {
    let data = fixture();
    let outside = tempfile::tempdir().unwrap();
    let link = data.path().join(rel);
    let target = outside.path().join("target");
    if std::fs::symlink_metadata(&link).is_ok() {
        std::fs::rename(&link, &target).unwrap();
    } else {
        std::fs::create_dir(&target).unwrap();
    }
    if rel == "trash" {
        // What a link to someone's directory holds: the engine finishes
        // deleting what it finds in its trash.
        std::fs::create_dir(target.join("precious")).unwrap();
        std::fs::write(target.join("precious/file"), b"keep me").unwrap();
    }
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let before = snapshot(outside.path());
    let outcome = op(data.path());
    assert_eq!(snapshot(outside.path()), before, "{rel}: what the link points to changed ({outcome:?})");
    assert_eq!(std::fs::read_link(&link).ok(), Some(target), "{rel}: the link is gone");
    assert_eq!(outcome, Err(Ok(link)), "{rel}: not refused as a symbolic link");
}

/// One test each: `name: the entry replaced by a link => what then uses it`.
macro_rules! refused_tests {
    ($($name:ident: $rel:literal => $op:expr;)*) => {$(
        #[test]
        fn $name() {
            refused($rel, $op);
        }
    )*};
}

refused_tests! {
    a_linked_lock_file_is_refused: "tollgate.lock" => open_and_publish;
    a_linked_meta_file_is_refused: "tollgate.meta" => open_and_publish;
    a_linked_trash_directory_is_refused_and_what_it_points_to_is_not_deleted: "trash" => open_and_publish;
    a_linked_topics_directory_is_refused: "topics" => open_and_publish;
    a_linked_topic_directory_is_refused: "topics/t" => open_and_publish;
    a_linked_topic_file_is_refused: "topics/t/topic.conf" => open_and_publish;
    a_linked_checkpoint_is_refused: "topics/t/checkpoint" => open_and_publish;
    a_linked_groups_directory_is_refused: "topics/t/groups" => subscribe_and_commit;
    a_linked_offset_file_is_refused: "topics/t/groups/c.offset" => subscribe_and_commit;
    a_linked_queues_directory_is_refused: "topics/t/queues" => receive_and_ack;
    a_linked_worker_group_directory_is_refused: "topics/t/queues/w" => receive_and_ack;
    a_linked_worker_state_file_is_refused: "topics/t/queues/w/state" => receive_and_ack;
    a_linked_worker_journal_is_refused: "topics/t/queues/w/journal" => receive_and_ack;
}

#[test]
fn a_link_where_a_new_topic_would_be_created_is_refused() {
    refused("topics/new", |data| {
        let engine = Engine::open(data).map_err(why)?;
        engine.topic("new").map_err(why)?.publish(b"first").map_err(why)?;
        Ok(())
    });
}

#[test]
fn a_deleted_linked_topic_is_refused() {
    refused("topics/t", |data| Engine::open(data).map_err(why)?.delete_topic("t").map_err(why));
}

#[test]
fn a_linked_active_segment_is_refused() {
    refused(segments().last().unwrap(), open_and_publish);
}

#[test]
fn a_linked_sealed_segment_is_refused() {
    refused(&segments()[0], |data| {
        let engine = Engine::open(data).map_err(why)?;
        // A clean shutdown: opening trusts the sealed segment unread; the
        // read maps it.
        engine.topic("t").map_err(why)?.read(tollgate::Offset::new(0)).map_err(why)?;
        Ok(())
    });
}

#[test]
fn inspect_reports_a_linked_topic_instead_of_reading_it() {
    refused("topics/t", |data| {
        let dir = Directory::open(data).map_err(why)?;
        assert!(dir.topics().unwrap().contains(&"t".to_owned()), "the link is listed, to be reported");
        dir.topic("t").map_err(why)?;
        Ok(())
    });
}

#[test]
fn inspect_reports_a_linked_segment_instead_of_reading_it() {
    refused(&segments()[0], |data| {
        let dir = Directory::open(data).map_err(why)?;
        dir.records("t", None).map_err(why)?.next().map_err(why)?;
        Ok(())
    });
}

#[test]
fn inspect_reports_a_linked_worker_group() {
    refused("topics/t/queues/w", |data| {
        Directory::open(data).map_err(why)?.topic("t").map_err(why)?;
        Ok(())
    });
}

#[test]
fn the_data_directory_itself_may_be_a_link() {
    let data = fixture();
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("data");
    std::os::unix::fs::symlink(data.path(), &link).unwrap();
    subscribe_and_commit(&link).unwrap();
    receive_and_ack(&link).unwrap();
    open_and_publish(&link).unwrap();
    assert!(Directory::open(&link).unwrap().verify(|_, _| {}).unwrap().is_clean());
    // A new data directory under a linked parent is created where the link
    // points.
    drop(Engine::open(link.join("fresh")).unwrap());
    assert!(std::fs::symlink_metadata(data.path().join("fresh/tollgate.meta")).unwrap().is_file());
}
