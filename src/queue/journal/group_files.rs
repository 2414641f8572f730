//! Where a group's files are (`queues/<group>/state` and
//! `queues/<group>/journal`), and loading and saving them: a state file
//! written whole and renamed into place, then a new journal after it.

use std::path::{Path, PathBuf};

use super::recovery::{header_valid, journal_version, replay};
use super::state::{Persisted, StateFault};
use super::writer::JournalFile;
use crate::error::{Corruption, IoError, TopicError};
use crate::log::RecoveryMode;
use crate::log::format::*;
use crate::log::slots::write_file_atomic;
use crate::storage::{ReadStorage, Storage};

/// A group's saved state, as opening it reads it ([`GroupFiles::read`]).
#[derive(Debug)]
pub(crate) struct SavedGroup {
    pub persisted: Persisted,
    /// Bytes of the state file and of the journal.
    pub state_bytes: u64,
    pub journal_bytes: u64,
    /// The journal's header is not all zero (never written) and fails its
    /// checks, in front of nothing of the state's generation (a crash while
    /// creating it): there was nothing in it to lose.
    pub journal_header_damaged: bool,
}

/// The files of a group: `queues/<group>/state` and `queues/<group>/journal`.
#[derive(Debug, Clone)]
pub(crate) struct GroupFiles {
    dir: PathBuf,
    state: PathBuf,
    journal: PathBuf,
}

impl GroupFiles {
    pub(crate) fn new(topic_dir: &Path, group: &str) -> GroupFiles {
        let dir = topic_dir.join(QUEUES_DIR).join(group);
        GroupFiles { state: dir.join(QSTATE_FILE), journal: dir.join(QJOURNAL_FILE), dir }
    }

    /// The state file, `queues/<group>/state`.
    pub(in crate::queue) fn state_path(&self) -> &Path {
        &self.state
    }

    /// Whether the group's directory exists: whether the group was ever
    /// opened (a name that does not is a new one).
    pub(crate) fn exists(&self, storage: &dyn Storage) -> bool {
        storage.exists(&self.dir)
    }

    /// Reads the saved state, if the group has any. With
    /// [`RecoveryMode::Repair`], damage is repaired as far as it can be:
    /// damaged records of the state file and damaged journal entries are
    /// dropped and every valid one kept; a state file whose header is
    /// damaged starts the group over at `oldest`, the topic's oldest offset
    /// (every message still in the log is delivered again), and its journal,
    /// which continues nothing that can be read, is removed, unless it is of
    /// a newer version (then `NewerVersion`, and nothing is changed).
    pub(in crate::queue) fn load(
        &self,
        storage: &dyn Storage,
        mode: RecoveryMode,
        oldest: u64,
    ) -> Result<Option<Persisted>, TopicError> {
        match self.read_with(storage, mode) {
            // In repair, only a damaged header makes the state file `Corrupt`.
            Err(TopicError::Corrupt(damage)) if mode == RecoveryMode::Repair && damage.file == self.state => {
                let journal = match storage.read_file(&self.journal) {
                    Ok(bytes) => bytes,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(TopicError::Io(IoError::new("read", &self.journal, e))),
                };
                if let Some(found) = journal_version(&journal).filter(|&v| v > FORMAT_VERSION) {
                    return Err(TopicError::NewerVersion {
                        path: self.journal.clone(),
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                if !journal.is_empty() {
                    storage.remove_file(&self.journal).map_err(|e| IoError::new("remove", &self.journal, e))?;
                }
                Ok(Some(Persisted { low: oldest, ..Persisted::default() }))
            }
            read => Ok(read?.map(|saved| saved.persisted)),
        }
    }

    /// Reads the state file and replays the journal after it, as opening
    /// the group does (the engine's `load`, and `inspect`, which reports on
    /// it without opening): `None` if there is no state file (a group being
    /// created). Damage to either file is `Corrupt`, naming the byte; a
    /// newer version is `NewerVersion`.
    pub(crate) fn read(&self, storage: &dyn ReadStorage) -> Result<Option<SavedGroup>, TopicError> {
        self.read_with(storage, RecoveryMode::Normal)
    }

    fn read_with(&self, storage: &dyn ReadStorage, mode: RecoveryMode) -> Result<Option<SavedGroup>, TopicError> {
        let io = |op, path: &Path, e| TopicError::Io(IoError::new(op, path, e));
        let fault = |path: &Path, fault| match fault {
            StateFault::Newer(found) => {
                TopicError::NewerVersion { path: path.to_path_buf(), found, supported: FORMAT_VERSION }
            }
            StateFault::Damaged { position, reason } => {
                TopicError::Corrupt(Corruption { file: path.to_path_buf(), position, reason })
            }
        };
        let repair = mode == RecoveryMode::Repair;
        let bytes = match storage.read_file(&self.state) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read", &self.state, e)),
        };
        let mut persisted = match Persisted::decode(&bytes) {
            Ok(state) => state,
            Err(e @ StateFault::Damaged { .. }) if repair => match Persisted::salvage(&bytes) {
                Some(state) => state,
                None => return Err(fault(&self.state, e)),
            },
            Err(e) => return Err(fault(&self.state, e)),
        };
        let journal = match storage.read_file(&self.journal) {
            Ok(bytes) => bytes,
            // Between a compaction's two steps there is no journal.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io("read", &self.journal, e)),
        };
        let journal_header_damaged =
            journal.get(..QJOURNAL_HEADER_BYTES).is_some_and(|h| !header_valid(h) && h.iter().any(|&b| b != 0));
        replay(&journal, &mut persisted, !repair).map_err(|e| fault(&self.journal, e))?;
        Ok(Some(SavedGroup {
            persisted,
            state_bytes: bytes.len() as u64,
            journal_bytes: journal.len() as u64,
            journal_header_damaged,
        }))
    }

    /// Makes the group's directory, durably: its entries in `queues/` and
    /// the topic's directory are synced on every open, since a crash may
    /// have come between an earlier creation and its sync.
    pub(in crate::queue) fn create_dir(&self, storage: &dyn Storage) -> Result<(), IoError> {
        let queues = self.dir.parent().expect("queues/<group>");
        let topic = queues.parent().expect("<topic>/queues");
        if !storage.exists(&self.dir) {
            storage.create_dir_all(&self.dir).map_err(|e| IoError::new("create", &self.dir, e))?;
        }
        storage.sync_dir(topic).map_err(|e| IoError::new("sync", topic, e))?;
        storage.sync_dir(queues).map_err(|e| IoError::new("sync", queues, e))
    }

    /// Removes the group's directory and what is in it, after its creation
    /// failed (a full disk, say), so that it leaves nothing behind. Only for
    /// a group that had no state file: one that had is never removed. Best
    /// effort: what cannot be removed is a creation the next open finishes,
    /// as after a crash.
    pub(in crate::queue) fn discard_new(&self, storage: &dyn Storage) {
        if storage.remove_dir_all(&self.dir).is_ok() {
            let queues = self.dir.parent().expect("queues/<group>");
            let _ = storage.sync_dir(queues);
        }
    }

    /// Writes `state` as the state file (generation `state.generation`) and
    /// starts an empty journal of that generation after it. A crash between
    /// the two leaves a journal of an older generation, which `load` ignores.
    pub(in crate::queue) fn save(&self, storage: &dyn Storage, state: &Persisted) -> Result<JournalFile, IoError> {
        write_file_atomic(storage, &self.state, &state.encode())?;
        JournalFile::create(storage, &self.journal, state.generation)
    }
}
