//! A group's state file (layout in `docs/FORMAT.md`, "Worker group state"):
//! the low-water mark, the settled ranges above it and what is known of
//! unsettled messages, as `Persisted`, which also applies journal entries.

use std::collections::BTreeMap;

use super::entry::Entry;
use crate::log::format::*;
use crate::queue::ranges::RangeSet;

/// What is known of an unsettled message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    /// Deliveries so far.
    pub(crate) attempts: u32,
    /// Not to be delivered before this time (µs since the epoch; 0 = no delay).
    pub(crate) retry_at_us: u64,
    /// Rejected: to be dead-lettered, never delivered again.
    pub(crate) rejected: bool,
}

/// A group's durable state: what the state file and journal say together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Persisted {
    /// The journal generation that continues this state.
    pub(crate) generation: u64,
    /// Every offset below it is settled.
    pub(crate) low: u64,
    /// Settled offsets above `low`.
    pub(crate) settled: RangeSet,
    /// Attempts and delays of unsettled messages at or above `low`.
    pub(crate) facts: BTreeMap<u64, Facts>,
}

impl Persisted {
    /// Applies one journal entry.
    pub(super) fn apply(&mut self, entry: Entry) {
        match entry {
            Entry::Delivered { offset, attempt } => {
                if self.is_open(offset) {
                    let facts = self.facts.entry(offset).or_default();
                    facts.attempts = facts.attempts.max(attempt);
                }
            }
            Entry::Nacked { offset, retry_at_us } => {
                if self.is_open(offset) {
                    self.facts.entry(offset).or_default().retry_at_us = retry_at_us;
                }
            }
            Entry::Rejected { offset } => {
                if self.is_open(offset) {
                    self.facts.entry(offset).or_default().rejected = true;
                }
            }
            Entry::Settled { offset, .. } => self.settle(offset),
        }
    }

    /// Whether `offset` is not settled.
    pub(crate) fn is_open(&self, offset: u64) -> bool {
        offset >= self.low && !self.settled.contains(offset)
    }

    /// Marks `[start, end)` settled.
    pub(in crate::queue) fn settle_range(&mut self, start: u64, end: u64) {
        let start = start.max(self.low);
        if start >= end {
            return;
        }
        self.settled.insert(start, end);
        if let Some(end) = self.settled.take_starting_at(self.low) {
            self.low = end;
        }
        let settled: Vec<u64> = self.facts.range(start..end).map(|(&o, _)| o).collect();
        for o in settled {
            self.facts.remove(&o);
        }
        let below: Vec<u64> = self.facts.range(..self.low).map(|(&o, _)| o).collect();
        for o in below {
            self.facts.remove(&o);
        }
    }

    pub(in crate::queue) fn settle(&mut self, offset: u64) {
        if offset == self.low && offset < u64::MAX {
            // The common case, in-order settling: move the mark, and over
            // the range of later settled offsets it now touches.
            self.low = self.settled.take_starting_at(offset + 1).unwrap_or(offset + 1);
            while self.facts.first_key_value().is_some_and(|(&o, _)| o < self.low) {
                self.facts.pop_first();
            }
            return;
        }
        self.settle_range(offset, offset.saturating_add(1));
    }

    /// Forgets everything at or above `end`: the log was cut there by
    /// recovery, and those offsets will be given to new messages.
    pub(super) fn clamp(&mut self, end: u64) {
        self.low = self.low.min(end);
        self.settled.truncate(end);
        self.facts.retain(|&o, _| o < end);
    }

    /// Encodes the state file.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let ranges = self.settled.ranges();
        let mut bytes =
            vec![0; QSTATE_HEADER_BYTES + ranges * QSTATE_RANGE_BYTES + self.facts.len() * QSTATE_FACT_BYTES];
        bytes[..8].copy_from_slice(&QSTATE_MAGIC);
        put_u32(&mut bytes, QSTATE_VERSION_AT, FORMAT_VERSION);
        put_u64(&mut bytes, QSTATE_GENERATION_AT, self.generation);
        put_u64(&mut bytes, QSTATE_LOW_AT, self.low);
        put_u32(&mut bytes, QSTATE_RANGES_AT, ranges as u32);
        put_u32(&mut bytes, QSTATE_FACTS_AT, self.facts.len() as u32);
        let header = header_crc(&bytes);
        put_u32(&mut bytes, QSTATE_CRC_AT, header);
        let mut at = QSTATE_HEADER_BYTES;
        for (start, end) in self.settled.iter() {
            let record = &mut bytes[at..at + QSTATE_RANGE_BYTES];
            put_u64(record, 0, start);
            put_u64(record, 8, end);
            let crc = crc(&record[..QSTATE_RANGE_CRC_AT]);
            put_u32(record, QSTATE_RANGE_CRC_AT, crc);
            at += QSTATE_RANGE_BYTES;
        }
        for (&offset, facts) in &self.facts {
            let record = &mut bytes[at..at + QSTATE_FACT_BYTES];
            put_u64(record, 0, offset);
            put_u32(record, 8, facts.attempts);
            put_u32(record, 12, u32::from(facts.rejected));
            put_u64(record, 16, facts.retry_at_us);
            let crc = crc(&record[..QSTATE_FACT_CRC_AT]);
            put_u32(record, QSTATE_FACT_CRC_AT, crc);
            at += QSTATE_FACT_BYTES;
        }
        bytes
    }

    /// Decodes a state file: every record must be valid.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Persisted, StateFault> {
        Self::read(bytes, true)
    }

    /// What can be saved of a damaged state file, for repair: every record
    /// that is valid, the others dropped (a dropped range's offsets are
    /// delivered again; a dropped message's attempts start over). `None` if
    /// the header is not valid (or the file is of a newer version).
    pub(crate) fn salvage(bytes: &[u8]) -> Option<Persisted> {
        Self::read(bytes, false).ok()
    }

    /// Reads a state file; `strict`: a damaged record is an error, else it is
    /// skipped.
    fn read(bytes: &[u8], strict: bool) -> Result<Persisted, StateFault> {
        let damaged = |position: usize, reason| StateFault::Damaged { position: position as u64, reason };
        if bytes.len() < QSTATE_HEADER_BYTES || bytes[..8] != QSTATE_MAGIC {
            return Err(damaged(0, "not a queue state file"));
        }
        let checks = |h: &[u8]| header_crc(h) == u32_at(h, QSTATE_CRC_AT);
        let header = &bytes[..QSTATE_HEADER_BYTES];
        if !checks(header) {
            let at = header_damage_at(header, QSTATE_VERSION_AT, QSTATE_CRC_AT, checks);
            return Err(damaged(at as usize, "the state file's header fails its checksum"));
        }
        match u32_at(bytes, QSTATE_VERSION_AT) {
            FORMAT_VERSION => {}
            found if found > FORMAT_VERSION => return Err(StateFault::Newer(found)),
            _ => return Err(damaged(QSTATE_VERSION_AT, "the state file has format version 0")),
        }
        let ranges = u32_at(bytes, QSTATE_RANGES_AT) as usize;
        let facts = u32_at(bytes, QSTATE_FACTS_AT) as usize;
        // Both counts are below 2^32, so this cannot overflow a 64-bit usize.
        let expected = QSTATE_HEADER_BYTES as u64
            + ranges as u64 * QSTATE_RANGE_BYTES as u64
            + facts as u64 * QSTATE_FACT_BYTES as u64;
        if strict && expected != bytes.len() as u64 {
            let at = expected.min(bytes.len() as u64) as usize;
            return Err(damaged(at, "the state file's length does not match its record counts"));
        }
        let mut state = Persisted {
            generation: u64_at(bytes, QSTATE_GENERATION_AT),
            low: u64_at(bytes, QSTATE_LOW_AT),
            ..Persisted::default()
        };
        let mut at = QSTATE_HEADER_BYTES;
        let mut last_end = state.low;
        for _ in 0..ranges {
            let Some(record) = bytes.get(at..at + QSTATE_RANGE_BYTES) else { return Ok(state) };
            let (start, end) = (u64_at(record, 0), u64_at(record, 8));
            let valid = crc(&record[..QSTATE_RANGE_CRC_AT]) == u32_at(record, QSTATE_RANGE_CRC_AT)
                && u32_at(record, 16) == 0
                // Ranges are sorted, above `low`, and apart.
                && start > last_end
                && end > start;
            if valid {
                state.settled.insert(start, end);
                last_end = end;
            } else if strict {
                return Err(damaged(at, "a settled range in the state file fails its checks"));
            }
            at += QSTATE_RANGE_BYTES;
        }
        for _ in 0..facts {
            let Some(record) = bytes.get(at..at + QSTATE_FACT_BYTES) else { return Ok(state) };
            let offset = u64_at(record, 0);
            let flags = u32_at(record, 12);
            let facts =
                Facts { attempts: u32_at(record, 8), retry_at_us: u64_at(record, 16), rejected: flags & 1 == 1 };
            let valid = crc(&record[..QSTATE_FACT_CRC_AT]) == u32_at(record, QSTATE_FACT_CRC_AT)
                && u32_at(record, 24) == 0
                && flags <= 1
                && state.is_open(offset)
                && !state.facts.contains_key(&offset);
            if valid {
                state.facts.insert(offset, facts);
            } else if strict {
                return Err(damaged(at, "a message in the state file fails its checks"));
            }
            at += QSTATE_FACT_BYTES;
        }
        Ok(state)
    }
}

/// What is wrong with a state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateFault {
    /// A newer format version, under a valid header CRC.
    Newer(u32),
    /// Damage at this byte.
    Damaged { position: u64, reason: &'static str },
}

/// The CRC of a state file's header: its bytes 0..12 and 16..40.
fn header_crc(header: &[u8]) -> u32 {
    crc_of(&[&header[..QSTATE_CRC_AT], &header[QSTATE_CRC_AT + 4..QSTATE_HEADER_BYTES]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settling_moves_the_low_water_mark() {
        let mut state = Persisted::default();
        state.apply(Entry::Delivered { offset: 1, attempt: 2 });
        state.settle(1);
        assert_eq!(state.low, 0);
        assert!(state.facts.is_empty());
        state.settle(0);
        assert_eq!(state.low, 2);
        assert_eq!(state.settled.len(), 0);
        state.settle(5);
        state.clamp(4);
        assert_eq!(state.settled.len(), 0);
        state.clamp(1);
        assert_eq!(state.low, 1);
    }
}
