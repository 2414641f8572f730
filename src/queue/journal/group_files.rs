//! Where a group's files are (`queues/<group>/state` and
//! `queues/<group>/journal`), and loading and saving them: a state file
//! written whole and renamed into place, then a new journal after it.

use std::path::{Path, PathBuf};

use super::recovery::replay;
use super::state::Persisted;
use super::writer::JournalFile;
use crate::error::{Corruption, IoError, TopicError};
use crate::log::RecoveryMode;
use crate::log::format::*;
use crate::log::slots::write_file_atomic;
use crate::storage::Storage;

/// The files of a group: `queues/<group>/state` and `queues/<group>/journal`.
#[derive(Debug, Clone)]
pub(in crate::queue) struct GroupFiles {
    dir: PathBuf,
    state: PathBuf,
    journal: PathBuf,
}

impl GroupFiles {
    pub(in crate::queue) fn new(topic_dir: &Path, group: &str) -> GroupFiles {
        let dir = topic_dir.join(QUEUES_DIR).join(group);
        GroupFiles { state: dir.join(QSTATE_FILE), journal: dir.join(QJOURNAL_FILE), dir }
    }

    /// Reads the saved state, if the group has any. With
    /// [`RecoveryMode::Repair`], a damaged state file is treated as absent
    /// (the group starts over).
    pub(in crate::queue) fn load(
        &self,
        storage: &dyn Storage,
        mode: RecoveryMode,
    ) -> Result<Option<Persisted>, TopicError> {
        let io = |op, path: &Path, e| TopicError::Io(IoError::new(op, path, e));
        if !storage.exists(&self.state) {
            return Ok(None);
        }
        let bytes = storage.read_file(&self.state).map_err(|e| io("read", &self.state, e))?;
        let mut state = match Persisted::decode(&bytes) {
            Ok(state) => state,
            Err(Some(found)) => {
                return Err(TopicError::NewerVersion { path: self.state.clone(), found, supported: FORMAT_VERSION });
            }
            Err(None) if mode == RecoveryMode::Repair => return Ok(None),
            Err(None) => {
                return Err(TopicError::Corrupt(Corruption {
                    file: self.state.clone(),
                    position: 0,
                    reason: "not a valid queue state file",
                }));
            }
        };
        if storage.exists(&self.journal) {
            let bytes = storage.read_file(&self.journal).map_err(|e| io("read", &self.journal, e))?;
            replay(&bytes, &mut state);
        }
        Ok(Some(state))
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

    /// Writes `state` as the state file (generation `state.generation`) and
    /// starts an empty journal of that generation after it. A crash between
    /// the two leaves a journal of an older generation, which `load` ignores.
    pub(in crate::queue) fn save(&self, storage: &dyn Storage, state: &Persisted) -> Result<JournalFile, IoError> {
        write_file_atomic(storage, &self.state, &state.encode())?;
        JournalFile::create(storage, &self.journal, state.generation)
    }
}
