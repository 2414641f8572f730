//! Reading a group's state back: replaying a journal onto the state file
//! it continues, and, after an unclean recovery of the log, forgetting
//! in every group what the log lost.

use std::path::Path;

use super::entry::Entry;
use super::group_files::GroupFiles;
use super::state::Persisted;
use crate::error::{IoError, TopicError};
use crate::log::RecoveryMode;
use crate::log::format::*;
use crate::log::names::check_group_name;
use crate::storage::Storage;

/// Applies the journal `bytes` of `state.generation` to `state`: every entry
/// up to the first that is not valid (a torn or never-written one).
pub(crate) fn replay(bytes: &[u8], state: &mut Persisted) {
    let header_ok = bytes.len() >= QJOURNAL_HEADER_BYTES
        && bytes[..8] == QJOURNAL_MAGIC
        && u32_at(bytes, QJOURNAL_VERSION_AT) == FORMAT_VERSION
        && u64_at(bytes, QJOURNAL_HEADER_GENERATION_AT) == state.generation
        && crc(&bytes[..QJOURNAL_HEADER_CRC_AT]) == u32_at(bytes, QJOURNAL_HEADER_CRC_AT);
    if !header_ok {
        return;
    }
    for slot in bytes[QJOURNAL_HEADER_BYTES..].chunks_exact(QJOURNAL_ENTRY_BYTES) {
        match Entry::decode(slot, state.generation) {
            Some(entry) => state.apply(entry),
            None => return,
        }
    }
}

/// Recovery of a topic that was not shut down cleanly: forgets, in every
/// worker group's saved state, the offsets at or past `end`. The log was cut
/// there (or never reached them durably), and new messages will take them.
/// A group whose state cannot be read is left for its next open to report.
pub(crate) fn clamp_groups(
    storage: &dyn Storage,
    topic_dir: &Path,
    end: u64,
    mode: RecoveryMode,
) -> Result<(), TopicError> {
    let queues = topic_dir.join(QUEUES_DIR);
    if !storage.exists(&queues) {
        return Ok(());
    }
    let names = storage.list_dir(&queues).map_err(|e| TopicError::Io(IoError::new("list", &queues, e)))?;
    for name in names {
        if check_group_name(&name).is_err() {
            continue;
        }
        let files = GroupFiles::new(topic_dir, &name);
        let mut state = match files.load(storage, mode) {
            Ok(Some(state)) => state,
            Ok(None) | Err(TopicError::Corrupt(_) | TopicError::NewerVersion { .. }) => continue,
            Err(e) => return Err(e),
        };
        let before = state.clone();
        state.clamp(end);
        if state != before {
            state.generation += 1;
            files.save(storage, &state)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::queue::journal::entry::Settled;

    fn entry() -> impl Strategy<Value = Entry> {
        prop_oneof![
            (0u64..40, 1u32..6).prop_map(|(offset, attempt)| Entry::Delivered { offset, attempt }),
            (0u64..40).prop_map(|offset| Entry::Settled { offset, how: Settled::Acked }),
            (0u64..40).prop_map(|offset| Entry::Settled { offset, how: Settled::DeadLettered }),
            (0u64..40, 0u64..1000).prop_map(|(offset, retry_at_us)| Entry::Nacked { offset, retry_at_us }),
            (0u64..40).prop_map(|offset| Entry::Rejected { offset }),
        ]
    }

    proptest! {
        /// A state written and read back, and a journal replayed, give what
        /// applying the entries in memory gives.
        #[test]
        fn state_and_journal_round_trip(before in proptest::collection::vec(entry(), 0..40), after in proptest::collection::vec(entry(), 0..40)) {
            let mut state = Persisted { generation: 3, low: 2, ..Persisted::default() };
            for e in &before { state.apply(*e); }
            let decoded = Persisted::decode(&state.encode()).unwrap();
            prop_assert_eq!(&decoded, &state);

            let mut journal = vec![0u8; QJOURNAL_HEADER_BYTES + (after.len() + 1) * QJOURNAL_ENTRY_BYTES];
            journal[..8].copy_from_slice(&QJOURNAL_MAGIC);
            put_u32(&mut journal, QJOURNAL_VERSION_AT, FORMAT_VERSION);
            put_u64(&mut journal, QJOURNAL_HEADER_GENERATION_AT, 3);
            let c = crc(&journal[..QJOURNAL_HEADER_CRC_AT]);
            put_u32(&mut journal, QJOURNAL_HEADER_CRC_AT, c);
            for (i, e) in after.iter().enumerate() {
                let at = QJOURNAL_HEADER_BYTES + i * QJOURNAL_ENTRY_BYTES;
                e.encode(&mut journal[at..at + QJOURNAL_ENTRY_BYTES], 3);
            }
            let mut replayed = decoded.clone();
            replay(&journal, &mut replayed);
            let mut expected = state.clone();
            for e in &after { expected.apply(*e); }
            prop_assert_eq!(&replayed, &expected);

            // A journal of another generation is ignored.
            let mut other = decoded.clone();
            other.generation = 4;
            replay(&journal, &mut other);
            prop_assert_eq!(other.settled, decoded.settled);
        }

        /// No byte string makes decoding panic.
        #[test]
        fn decoding_garbage_does_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Persisted::decode(&bytes);
            let mut state = Persisted::default();
            replay(&bytes, &mut state);
        }
    }
}
