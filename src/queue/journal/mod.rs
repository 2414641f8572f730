//! A worker group's delivery state on disk (layout in `docs/FORMAT.md`): a
//! state file, rewritten whole and renamed into place, and a journal of
//! fixed-size entries appended through a mapping after it. Opening a group
//! reads both and writes them out again as a new state file and an empty
//! journal (a compaction); so does a full journal.
//!
//! - `entry.rs`: the 32-byte journal entry and its codec.
//! - `state.rs`: `Persisted`, the state a state file holds, and its codec.
//! - `writer.rs`: `JournalFile`, the mapped journal: appends and group-commit syncs.
//! - `group_files.rs`: `GroupFiles`, where a group's files are; loading and saving them.
//! - `recovery.rs`: replaying a journal, and `recover_groups`, which clamps
//!   groups after an unclean recovery and rewrites damaged ones in repair.

mod entry;
mod group_files;
mod recovery;
mod state;
mod writer;

pub(super) use entry::{Entry, Settled};
pub(crate) use group_files::{GroupFiles, SavedGroup};
pub(crate) use recovery::recover_groups;
// The journal and state-file readers, for the fuzz targets.
#[cfg(feature = "fuzzing")]
pub(crate) use recovery::replay;
pub(crate) use state::Facts;
pub(crate) use state::Persisted;
#[cfg(feature = "fuzzing")]
pub(crate) use state::StateFault;
pub(super) use writer::JournalFile;
