//! Reading a group's state back: replaying a journal onto the state file
//! it continues, and, after an unclean recovery of the log, forgetting
//! in every group what the log lost.

use std::path::Path;

use super::entry::Entry;
use super::group_files::GroupFiles;
use super::state::{Persisted, StateFault};
use crate::error::{IoError, TopicError};
use crate::log::RecoveryMode;
use crate::log::format::*;
use crate::log::names::check_group_name;
use crate::storage::Storage;

/// Applies the journal `bytes` of `state.generation` to `state`: every valid
/// entry in order, up to the first invalid one at or past the journal's
/// synced mark (a torn or never-written entry: the tail a crash leaves).
///
/// An invalid entry below the synced mark was on disk whole, so it is
/// damage; so is a damaged header in front of entries or marks of this
/// generation. `strict` makes damage an error naming its byte; otherwise
/// (repair) damaged entries are skipped and every valid one applied. A
/// journal of another generation (a leftover of a crash between a state
/// file's rename and the new journal) and a header never written in front of
/// nothing of this generation (a crash while creating it) are ignored.
pub(crate) fn replay(bytes: &[u8], state: &mut Persisted, strict: bool) -> Result<(), StateFault> {
    let generation = state.generation;
    let damaged = |position: usize, reason| StateFault::Damaged { position: position as u64, reason };
    let Some(header) = bytes.get(..QJOURNAL_HEADER_BYTES) else { return Ok(()) };
    if header_valid(header) {
        match u32_at(header, QJOURNAL_VERSION_AT) {
            FORMAT_VERSION => {}
            found if found > FORMAT_VERSION => return Err(StateFault::Newer(found)),
            _ => return Err(damaged(QJOURNAL_VERSION_AT, "the journal has format version 0")),
        }
        if u64_at(header, QJOURNAL_HEADER_GENERATION_AT) != generation {
            return Ok(());
        }
    } else {
        let entries = bytes.get(QJOURNAL_ENTRIES_AT..).unwrap_or_default();
        let continues = synced_mark(bytes, generation).is_some()
            || entries.chunks_exact(QJOURNAL_ENTRY_BYTES).any(|slot| Entry::decode(slot, generation).is_some());
        if !continues {
            return Ok(());
        }
        if strict {
            let at = if header[..8] == QJOURNAL_MAGIC {
                header_damage_at(header, QJOURNAL_VERSION_AT, QJOURNAL_HEADER_CRC_AT, header_valid) as usize
            } else {
                0
            };
            return Err(damaged(at, "the journal's header fails its checks"));
        }
    }
    let mark = synced_mark(bytes, generation).unwrap_or(0);
    let entries = bytes.get(QJOURNAL_ENTRIES_AT..).unwrap_or_default();
    if strict && ((entries.len() / QJOURNAL_ENTRY_BYTES) as u64) < mark {
        return Err(damaged(bytes.len(), "the journal ends before its synced mark"));
    }
    for (i, slot) in entries.chunks_exact(QJOURNAL_ENTRY_BYTES).enumerate() {
        match Entry::decode(slot, generation) {
            Some(entry) => state.apply(entry),
            None if (i as u64) < mark && strict => {
                let at = QJOURNAL_ENTRIES_AT + i * QJOURNAL_ENTRY_BYTES;
                return Err(damaged(at, "a journal entry below the synced mark fails its checks"));
            }
            None if (i as u64) < mark => {}
            None => break,
        }
    }
    Ok(())
}

/// The version a journal's header gives, if the header is valid (its CRC,
/// which covers the version, matches).
pub(super) fn journal_version(bytes: &[u8]) -> Option<u32> {
    let header = bytes.get(..QJOURNAL_HEADER_BYTES)?;
    header_valid(header).then(|| u32_at(header, QJOURNAL_VERSION_AT))
}

/// Whether a journal's header (`QJOURNAL_HEADER_BYTES` long) has the magic
/// and its CRC matches.
pub(super) fn header_valid(header: &[u8]) -> bool {
    header[..8] == QJOURNAL_MAGIC && crc(&header[..QJOURNAL_HEADER_CRC_AT]) == u32_at(header, QJOURNAL_HEADER_CRC_AT)
}

/// The journal's synced mark for `generation`: the larger count of its two
/// valid mark slots, if either is valid.
pub(super) fn synced_mark(bytes: &[u8], generation: u64) -> Option<u64> {
    (0..2)
        .filter_map(|i| {
            let at = QJOURNAL_MARKS_AT + i * QJOURNAL_MARK_BYTES;
            let slot = bytes.get(at..at + QJOURNAL_MARK_BYTES)?;
            (mark_crc(slot, generation) == u32_at(slot, QJOURNAL_MARK_CRC_AT) && u32_at(slot, 8) == 0)
                .then(|| u64_at(slot, 0))
        })
        .max()
}

/// The CRC of a mark slot: its bytes 0..12, then the journal's generation.
pub(super) fn mark_crc(slot: &[u8], generation: u64) -> u32 {
    crc_of(&[&slot[..QJOURNAL_MARK_CRC_AT], &generation.to_le_bytes()])
}

/// Recovery of a topic's worker groups, as the topic opens:
///
/// - after an unclean shutdown (`end` is the recovered end of the log),
///   forgets in every group the offsets at or past `end`: the log was cut
///   there (or never reached them durably), and new messages will take them;
/// - with [`RecoveryMode::Repair`], rewrites every damaged group from what
///   can be saved of it ([`GroupFiles::load`]): a group whose state file
///   header is damaged starts over at `oldest`, the topic's oldest offset, so
///   every message still in the log is delivered again.
///
/// A group whose state cannot be read is otherwise left for its next open to
/// report, and a group of a newer version is never rewritten.
pub(crate) fn recover_groups(
    storage: &dyn Storage,
    topic_dir: &Path,
    end: Option<u64>,
    oldest: u64,
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
        let (mut state, damaged) = match files.read(storage) {
            Ok(Some(saved)) => (saved.persisted, false),
            Ok(None) => continue,
            Err(TopicError::Corrupt(_)) if mode == RecoveryMode::Repair => match files.load(storage, mode, oldest) {
                Ok(Some(salvaged)) => (salvaged, true),
                Ok(None) | Err(TopicError::NewerVersion { .. }) => continue,
                Err(e) => return Err(e),
            },
            Err(TopicError::Corrupt(_) | TopicError::NewerVersion { .. }) => continue,
            Err(e) => return Err(e),
        };
        let before = state.clone();
        if let Some(end) = end {
            state.clamp(end);
        }
        if damaged || state != before {
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
    use crate::queue::journal::writer::{encode_header, encode_mark};

    fn entry() -> impl Strategy<Value = Entry> {
        prop_oneof![
            (0u64..40, 1u32..6).prop_map(|(offset, attempt)| Entry::Delivered { offset, attempt }),
            (0u64..40).prop_map(|offset| Entry::Settled { offset, how: Settled::Acked }),
            (0u64..40).prop_map(|offset| Entry::Settled { offset, how: Settled::DeadLettered }),
            (0u64..40, 0u64..1000).prop_map(|(offset, retry_at_us)| Entry::Nacked { offset, retry_at_us }),
            (0u64..40).prop_map(|offset| Entry::Rejected { offset }),
        ]
    }

    /// A journal of `generation` holding `entries`, with a synced mark of
    /// `mark` entries (none if `None`) and one never-written slot after them.
    fn journal(generation: u64, entries: &[Entry], mark: Option<u64>) -> Vec<u8> {
        let mut bytes = vec![0u8; QJOURNAL_ENTRIES_AT + (entries.len() + 1) * QJOURNAL_ENTRY_BYTES];
        encode_header(&mut bytes[..QJOURNAL_HEADER_BYTES], generation);
        if let Some(mark) = mark {
            encode_mark(&mut bytes[QJOURNAL_MARKS_AT..QJOURNAL_MARKS_AT + QJOURNAL_MARK_BYTES], mark, generation);
        }
        for (i, e) in entries.iter().enumerate() {
            let at = QJOURNAL_ENTRIES_AT + i * QJOURNAL_ENTRY_BYTES;
            e.encode(&mut bytes[at..at + QJOURNAL_ENTRY_BYTES], generation);
        }
        bytes
    }

    fn acks(n: u64) -> Vec<Entry> {
        (0..n).map(|offset| Entry::Settled { offset, how: Settled::Acked }).collect()
    }

    #[test]
    fn an_invalid_entry_below_the_synced_mark_is_damage_naming_its_byte() {
        let mut bytes = journal(1, &acks(50), Some(50));
        let third = QJOURNAL_ENTRIES_AT + 3 * QJOURNAL_ENTRY_BYTES;
        bytes[third + QJOURNAL_OFFSET_AT] ^= 0x10;
        let mut state = Persisted { generation: 1, ..Persisted::default() };
        let fault = replay(&bytes, &mut state, true).unwrap_err();
        assert_eq!(
            fault,
            StateFault::Damaged {
                position: third as u64,
                reason: "a journal entry below the synced mark fails its checks"
            }
        );
        // Repair skips it and keeps the 49 other acks.
        let mut repaired = Persisted { generation: 1, ..Persisted::default() };
        replay(&bytes, &mut repaired, false).unwrap();
        assert_eq!((repaired.low, repaired.settled.len()), (3, 46));
    }

    #[test]
    fn an_invalid_entry_past_the_synced_mark_is_a_torn_tail() {
        let mut bytes = journal(1, &acks(50), Some(10));
        let at = QJOURNAL_ENTRIES_AT + 20 * QJOURNAL_ENTRY_BYTES;
        bytes[at..at + QJOURNAL_ENTRY_BYTES].fill(0);
        let mut state = Persisted { generation: 1, ..Persisted::default() };
        replay(&bytes, &mut state, true).unwrap();
        assert_eq!(state.low, 20, "entries from the first invalid one past the mark on are ignored");
        // A journal cut short before its mark is damage.
        let bytes = journal(1, &acks(5), Some(9));
        let fault = replay(&bytes, &mut Persisted { generation: 1, ..Persisted::default() }, true).unwrap_err();
        assert!(matches!(fault, StateFault::Damaged { reason: "the journal ends before its synced mark", .. }));
    }

    #[test]
    fn a_damaged_header_is_damage_only_in_front_of_this_generation() {
        let mut state = Persisted { generation: 1, ..Persisted::default() };
        // The version field: damage at byte 8, never a newer version.
        let mut bytes = journal(1, &acks(4), Some(4));
        bytes[QJOURNAL_VERSION_AT + 1] ^= 2;
        let fault = replay(&bytes, &mut state, true).unwrap_err();
        assert!(matches!(fault, StateFault::Damaged { position: 8, .. }), "{fault:?}");
        // The generation field: damage at the CRC, which no longer matches.
        let mut bytes = journal(1, &acks(4), None);
        bytes[QJOURNAL_HEADER_GENERATION_AT] ^= 1;
        let fault = replay(&bytes, &mut state, true).unwrap_err();
        assert!(matches!(fault, StateFault::Damaged { position: 28, .. }), "{fault:?}");
        // A header torn while the journal was created, in front of nothing.
        let mut bytes = journal(1, &[], None);
        bytes[3] ^= 1;
        replay(&bytes, &mut state, true).unwrap();
        // A newer version under a valid CRC is refused.
        let mut bytes = journal(1, &acks(2), Some(2));
        put_u32(&mut bytes, QJOURNAL_VERSION_AT, FORMAT_VERSION + 1);
        let c = crc(&bytes[..QJOURNAL_HEADER_CRC_AT]);
        put_u32(&mut bytes, QJOURNAL_HEADER_CRC_AT, c);
        assert_eq!(replay(&bytes, &mut state, true), Err(StateFault::Newer(FORMAT_VERSION + 1)));
        assert_eq!(replay(&bytes, &mut state, false), Err(StateFault::Newer(FORMAT_VERSION + 1)));
    }

    proptest! {
        /// A state written and read back, and a journal replayed, give what
        /// applying the entries in memory gives.
        #[test]
        fn state_and_journal_round_trip(before in proptest::collection::vec(entry(), 0..40), after in proptest::collection::vec(entry(), 0..40), marked in 0usize..41) {
            let mut state = Persisted { generation: 3, low: 2, ..Persisted::default() };
            for e in &before { state.apply(*e); }
            let decoded = Persisted::decode(&state.encode()).unwrap();
            prop_assert_eq!(&decoded, &state);

            let journal = journal(3, &after, Some(marked.min(after.len()) as u64));
            let mut replayed = decoded.clone();
            replay(&journal, &mut replayed, true).unwrap();
            let mut expected = state.clone();
            for e in &after { expected.apply(*e); }
            prop_assert_eq!(&replayed, &expected);

            // A journal of another generation is ignored.
            let mut other = decoded.clone();
            other.generation = 4;
            replay(&journal, &mut other, true).unwrap();
            prop_assert_eq!(other.settled, decoded.settled);
        }

        /// One flipped bit anywhere in a state file is reported as damage
        /// (or, in the version field, never as a newer version).
        #[test]
        fn a_flipped_bit_in_a_state_file_is_damage(before in proptest::collection::vec(entry(), 1..40), bit in any::<prop::sample::Index>()) {
            let mut state = Persisted { generation: 3, low: 2, ..Persisted::default() };
            for e in &before { state.apply(*e); }
            let mut bytes = state.encode();
            let bit = bit.index(bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            let decoded = Persisted::decode(&bytes);
            prop_assert!(matches!(decoded, Err(StateFault::Damaged { .. })), "{:?}", decoded);
        }

        /// No byte string makes decoding panic.
        #[test]
        fn decoding_garbage_does_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Persisted::decode(&bytes);
            let _ = Persisted::salvage(&bytes);
            let mut state = Persisted::default();
            let _ = replay(&bytes, &mut state, true);
            let _ = replay(&bytes, &mut state, false);
        }
    }
}
