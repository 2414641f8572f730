//! Worker groups: competing workers sharing a topic's messages, each
//! message settled on its own (ack, nack with a delay, reject), redelivered
//! after a visibility timeout, dead-lettered after `max_attempts`.
//!
//! A group is one `Group` behind an `Arc`, shared by its workers and their
//! deliveries, with its state under one mutex: the window of unsettled
//! messages (`window.rs`), the log reader that fills it, the journal writer,
//! and the count of idle workers (`wake.rs`). Every change that must survive
//! a crash is written to the journal (`journal/`) before it takes effect in
//! the window.

use std::sync::Arc;
use std::time::Instant;

use super::config::QueueConfig;
use super::journal::{Entry, GroupFiles, JournalFile, Persisted, Settled};
use super::wake::{Epoch, Idle};
use super::window::{Next, Window};
use crate::error::{IoError, QueueError, ReadError, TopicError};
use crate::log::subscription::Reader;
use crate::log::topic::TopicLog;
use crate::log::{Durability, Record, RecoveryMode, StartAt};
use crate::sync::{Mutex, MutexGuard};

pub(crate) struct Group {
    pub(super) name: String,
    pub(super) topic: Arc<TopicLog>,
    pub(super) dead_letter: Arc<TopicLog>,
    pub(super) config: QueueConfig,
    files: GroupFiles,
    pub(super) state: Mutex<GroupState>,
    /// Bumped (then waiters woken) when a message becomes ready or window
    /// space frees up while a worker waits.
    pub(super) epoch: Epoch,
}

/// What is under a group's lock.
pub(super) struct GroupState {
    pub(super) window: Window,
    journal: Arc<JournalFile>,
    /// Reads the log; `reader.next` is the first offset not yet read.
    pub(super) reader: Reader,
    /// Workers waiting in `receive`.
    pub(super) idle: Idle,
}

/// A group frozen for a backup's cut ([`Group::freeze`]).
pub(crate) struct FrozenGroup<'a> {
    _state: MutexGuard<'a, GroupState>,
}

/// What `take` found.
pub(super) enum Take {
    /// The record, its attempt, the delivery's token and deadline, and the
    /// journal entries to sync through before handing it out.
    Deliver(Record, u32, u64, Instant, SyncPoint),
    /// The record, its attempts and the reason, to dead-letter once the
    /// decision (a `Rejected` entry) is durable.
    DeadLetter(Record, u32, Arc<str>, SyncPoint),
    /// Nothing ready; the next delay or deadline ends then.
    Nothing(Option<Instant>),
}

/// What an operation waits for before it returns: on a `Sync` topic, the
/// journal synced through the entries written so far; elsewhere nothing.
pub(super) type SyncPoint = Option<(Arc<JournalFile>, u64)>;

/// Waits for `sync` (group commit: one sync serves every waiter behind it).
pub(super) fn made_durable(sync: SyncPoint) -> Result<(), QueueError> {
    if let Some((journal, written)) = sync {
        journal.sync_through(written)?;
    }
    Ok(())
}

impl Group {
    /// Opens the worker group `name` of `topic`: reads its saved state (so
    /// nothing acknowledged comes back and attempt counts carry on) and
    /// starts a new generation of its journal. `dead_letter` is its
    /// dead-letter topic, already open. The caller holds the topic's group
    /// registry and checked the name, the configuration, and that the topic
    /// is neither deleted nor closed.
    pub(crate) fn open(
        topic: &Arc<TopicLog>,
        name: &str,
        config: QueueConfig,
        dead_letter: Arc<TopicLog>,
        mode: RecoveryMode,
    ) -> Result<Arc<Group>, TopicError> {
        let storage = topic.storage();
        let files = GroupFiles::new(topic.dir(), name);
        let saved =
            files.create_dir(storage).map_err(TopicError::Io).and_then(|()| files.load(storage, mode, topic.oldest()));
        let (mut persisted, new) = match saved {
            Ok(Some(persisted)) => (persisted, false),
            Ok(None) => {
                let low = match config.start {
                    StartAt::Earliest => topic.oldest(),
                    StartAt::Latest => topic.committed().load(),
                };
                (Persisted { low, ..Persisted::default() }, true)
            }
            Err(e) => {
                // Only a directory it just made holds no state file.
                if storage.file_len(files.state_path()).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
                    files.discard_new(storage);
                }
                return Err(e);
            }
        };
        persisted.generation += 1;
        let journal = files.save(storage, &persisted).inspect_err(|_| {
            if new {
                files.discard_new(storage);
            }
        })?;
        let reader = Reader::new(topic.clone(), persisted.low);
        let state =
            GroupState { window: Window::new(persisted), journal: Arc::new(journal), reader, idle: Idle::default() };
        Ok(Arc::new(Group {
            name: name.to_owned(),
            topic: topic.clone(),
            dead_letter,
            config,
            files,
            state: Mutex::new(state),
            epoch: Epoch::new(),
        }))
    }

    /// The group's configuration.
    pub(crate) fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Wakes waiting workers, after a change that may let one of them take
    /// a message. Called with the state locked, so that a worker about to
    /// wait is either counted in `idle` or has not looked yet.
    pub(super) fn wake_idle(&self, state: &GroupState) {
        if state.idle.wake(&self.epoch) {
            self.topic.committed().wake();
        }
    }

    /// A message left the window: a full window has room again.
    fn after_settle(&self, state: &GroupState) {
        if state.window.len() + 1 >= self.config.window {
            self.wake_idle(state);
        }
    }

    /// Holds the group's lock for a backup's cut: nothing is delivered,
    /// settled or journaled, and the journal is not compacted, until the
    /// result is dropped. Its state and journal files on disk then say what
    /// the group is.
    pub(crate) fn freeze(&self) -> FrozenGroup<'_> {
        FrozenGroup { _state: self.state.lock() }
    }

    /// For the engine's flusher: syncs the journal entries that tasks wait
    /// for (`JournalFile::poll_synced`).
    pub(crate) fn sync_requested(&self) {
        let journal = self.state.lock().journal.clone();
        journal.sync_requested();
    }

    /// Syncs everything journaled so far, and the journal's synced mark.
    pub(crate) fn sync(&self) -> Result<(), IoError> {
        let journal = self.state.lock().journal.clone();
        journal.sync_all()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = self.state.get_mut().journal.sync_all();
    }
}

impl GroupState {
    /// Finds a message to hand out: expires deadlines, promotes due delays,
    /// reads the log into the window, then takes the best ready message.
    pub(super) fn take(&mut self, group: &Group) -> Result<Take, QueueError> {
        if self.reader.topic.is_closed() {
            // Checked under the lock: after close, the group's files may
            // belong to another engine. `receive` then returns `None`.
            return Ok(Take::Nothing(None));
        }
        let clock = self.reader.topic.clock();
        let (now, now_us) = (clock.now(), clock.now_us());
        self.window.expire(now);
        self.window.promote(now_us);
        self.scan(group, now_us)?;
        match self.window.pop_ready(now, now_us, group.config.max_attempts) {
            Next::Nothing(next_event) => Ok(Take::Nothing(next_event)),
            Next::DeadLetter { offset, record, attempts, reason } => match self.leave_for_dead_letter(group, offset) {
                Ok(sync) => Ok(Take::DeadLetter(record, attempts, reason, sync)),
                Err(e) => {
                    self.window.unpop(offset);
                    Err(e.into())
                }
            },
            Next::Deliver { offset, attempt } => {
                let written = match self.append(group, Entry::Delivered { offset, attempt }) {
                    Ok(written) => written,
                    Err(e) => {
                        self.window.unpop(offset);
                        return Err(e.into());
                    }
                };
                let deadline = now + group.config.visibility_timeout;
                let (record, token) = self.window.deliver(offset, attempt, deadline);
                Ok(Take::Deliver(record, attempt, token, deadline, self.sync_point(written)))
            }
        }
    }

    /// Reads records from the log into the window until it is full or the
    /// log is read to its end.
    fn scan(&mut self, group: &Group, now_us: u64) -> Result<(), QueueError> {
        while self.window.has_room(group.config.window) {
            let record = match self.reader.next() {
                Ok(Some(record)) => record,
                Ok(None) => return Ok(()),
                Err(ReadError::NotRetained { oldest, .. }) => {
                    // Retention deleted messages the group had not settled.
                    self.window.lost(self.reader.next, oldest);
                    self.reader.seek(oldest)?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            self.window.admit(record, now_us, group.config.filter.as_ref());
        }
        Ok(())
    }

    /// Checks that the delivery `token` of `offset` is still in flight and
    /// before its deadline (expiring it if not).
    pub(super) fn check_mine(&mut self, offset: u64, token: u64) -> Result<(), QueueError> {
        if self.reader.topic.is_closed() {
            return Err(QueueError::Closed);
        }
        if self.reader.topic.is_deleted() {
            return Err(QueueError::Deleted);
        }
        self.window.check_mine(offset, token, self.reader.topic.clock().now())
    }

    /// Settles the message at `offset` (`how`): journaled first, then out
    /// of the window. Returns what to sync through.
    pub(super) fn settle(&mut self, group: &Group, offset: u64, how: Settled) -> Result<SyncPoint, IoError> {
        let written = self.append(group, Entry::Settled { offset, how })?;
        self.window.settle(offset, how);
        group.after_settle(self);
        Ok(self.sync_point(written))
    }

    /// What an operation that wrote `written` journal entries waits for.
    pub(super) fn sync_point(&self, written: u64) -> SyncPoint {
        (self.reader.topic.config().durability == Durability::Sync).then(|| (self.journal.clone(), written))
    }

    /// Entries written to the journal so far.
    pub(super) fn written(&self) -> u64 {
        self.journal.written()
    }

    /// Writes a journal entry, compacting first if the journal is full.
    /// Returns the entries written so far, to sync through.
    pub(super) fn append(&mut self, group: &Group, entry: Entry) -> Result<u64, IoError> {
        if self.journal.failed() {
            // A failed sync may have dropped pages of the journal: start over
            // from the state in memory, written out whole and synced.
            self.compact(group)?;
        }
        if let Some(written) = self.journal.append(entry)? {
            return Ok(written);
        }
        self.compact(group)?;
        Ok(self.journal.append(entry)?.expect("a new journal has room"))
    }

    /// Writes the whole state as a new state file and starts a new journal.
    fn compact(&mut self, group: &Group) -> Result<(), IoError> {
        let snapshot = self.window.snapshot();
        let journal = group.files.save(group.topic.storage(), &snapshot)?;
        self.journal.retire();
        self.journal = Arc::new(journal);
        self.window.compacted(snapshot.generation);
        Ok(())
    }
}
