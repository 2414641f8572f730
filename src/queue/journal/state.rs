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
    pub(in crate::queue) generation: u64,
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
    pub(in crate::queue) fn is_open(&self, offset: u64) -> bool {
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
    pub(super) fn encode(&self) -> Vec<u8> {
        let ranges = self.settled.ranges();
        let mut bytes =
            vec![0; QSTATE_HEADER_BYTES + ranges * QSTATE_RANGE_BYTES + self.facts.len() * QSTATE_FACT_BYTES];
        bytes[..8].copy_from_slice(&QSTATE_MAGIC);
        put_u32(&mut bytes, QSTATE_VERSION_AT, FORMAT_VERSION);
        put_u64(&mut bytes, QSTATE_GENERATION_AT, self.generation);
        put_u64(&mut bytes, QSTATE_LOW_AT, self.low);
        put_u32(&mut bytes, QSTATE_RANGES_AT, ranges as u32);
        put_u32(&mut bytes, QSTATE_FACTS_AT, self.facts.len() as u32);
        let mut at = QSTATE_HEADER_BYTES;
        for (start, end) in self.settled.iter() {
            put_u64(&mut bytes, at, start);
            put_u64(&mut bytes, at + 8, end);
            at += QSTATE_RANGE_BYTES;
        }
        for (&offset, facts) in &self.facts {
            put_u64(&mut bytes, at, offset);
            put_u32(&mut bytes, at + 8, facts.attempts);
            put_u32(&mut bytes, at + 12, u32::from(facts.rejected));
            put_u64(&mut bytes, at + 16, facts.retry_at_us);
            at += QSTATE_FACT_BYTES;
        }
        let crc = crc(&bytes[QSTATE_CRC_FROM..]);
        put_u32(&mut bytes, QSTATE_CRC_AT, crc);
        bytes
    }

    /// Decodes a state file; `Err(Some(v))` for a newer version `v`.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Persisted, Option<u32>> {
        if bytes.len() < QSTATE_HEADER_BYTES || bytes[..8] != QSTATE_MAGIC {
            return Err(None);
        }
        let version = u32_at(bytes, QSTATE_VERSION_AT);
        if version > FORMAT_VERSION {
            return Err(Some(version));
        }
        if version != FORMAT_VERSION || crc(&bytes[QSTATE_CRC_FROM..]) != u32_at(bytes, QSTATE_CRC_AT) {
            return Err(None);
        }
        let ranges = u32_at(bytes, QSTATE_RANGES_AT) as usize;
        let facts = u32_at(bytes, QSTATE_FACTS_AT) as usize;
        let expected = ranges
            .checked_mul(QSTATE_RANGE_BYTES)
            .and_then(|r| facts.checked_mul(QSTATE_FACT_BYTES).and_then(|f| r.checked_add(f)))
            .and_then(|body| body.checked_add(QSTATE_HEADER_BYTES));
        if expected != Some(bytes.len()) {
            return Err(None);
        }
        let mut state = Persisted {
            generation: u64_at(bytes, QSTATE_GENERATION_AT),
            low: u64_at(bytes, QSTATE_LOW_AT),
            ..Persisted::default()
        };
        let mut at = QSTATE_HEADER_BYTES;
        let mut last_end = state.low;
        for _ in 0..ranges {
            let (start, end) = (u64_at(bytes, at), u64_at(bytes, at + 8));
            // Ranges are sorted, above `low`, and apart: anything else is forged.
            if start <= last_end || end <= start {
                return Err(None);
            }
            state.settled.insert(start, end);
            last_end = end;
            at += QSTATE_RANGE_BYTES;
        }
        for _ in 0..facts {
            let offset = u64_at(bytes, at);
            let flags = u32_at(bytes, at + 12);
            let facts = Facts {
                attempts: u32_at(bytes, at + 8),
                retry_at_us: u64_at(bytes, at + 16),
                rejected: flags & 1 == 1,
            };
            if flags > 1 || !state.is_open(offset) || state.facts.insert(offset, facts).is_some() {
                return Err(None);
            }
            at += QSTATE_FACT_BYTES;
        }
        Ok(state)
    }
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
