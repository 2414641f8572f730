//! The journal's 32-byte entry (layout in `docs/FORMAT.md`, "Worker group
//! journal"): its kind, the generation of the journal it belongs to, a
//! message's offset and a value, under a CRC. The kind byte is decoded with
//! `TryFrom<u8>`, so an unknown kind is an invalid entry.

use crate::log::format::*;

/// How a message was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::queue) enum Settled {
    Acked = 1,
    DeadLettered = 2,
}

impl TryFrom<u64> for Settled {
    /// The value, which names no way of settling.
    type Error = u64;

    fn try_from(value: u64) -> Result<Self, u64> {
        match value {
            1 => Ok(Settled::Acked),
            2 => Ok(Settled::DeadLettered),
            _ => Err(value),
        }
    }
}

/// One journal entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::queue) enum Entry {
    Delivered { offset: u64, attempt: u32 },
    Settled { offset: u64, how: Settled },
    Nacked { offset: u64, retry_at_us: u64 },
    Rejected { offset: u64 },
}

/// Kinds of entry, as the kind byte names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Delivered = QJOURNAL_DELIVERED,
    Settled = QJOURNAL_SETTLED,
    Nacked = QJOURNAL_NACKED,
    Rejected = QJOURNAL_REJECTED,
}

impl TryFrom<u8> for Kind {
    /// The byte, which names no kind.
    type Error = u8;

    fn try_from(byte: u8) -> Result<Self, u8> {
        match byte {
            QJOURNAL_DELIVERED => Ok(Kind::Delivered),
            QJOURNAL_SETTLED => Ok(Kind::Settled),
            QJOURNAL_NACKED => Ok(Kind::Nacked),
            QJOURNAL_REJECTED => Ok(Kind::Rejected),
            _ => Err(byte),
        }
    }
}

impl Entry {
    /// Writes the entry into `slot` (`QJOURNAL_ENTRY_BYTES` long) as an
    /// entry of the journal of `generation`.
    pub(super) fn encode(self, slot: &mut [u8], generation: u64) {
        let (kind, offset, value) = match self {
            Entry::Delivered { offset, attempt } => (Kind::Delivered, offset, u64::from(attempt)),
            Entry::Settled { offset, how } => (Kind::Settled, offset, how as u64),
            Entry::Nacked { offset, retry_at_us } => (Kind::Nacked, offset, retry_at_us),
            Entry::Rejected { offset } => (Kind::Rejected, offset, 0),
        };
        slot[QJOURNAL_KIND_AT] = kind as u8;
        slot[QJOURNAL_KIND_AT + 1..QJOURNAL_GENERATION_AT].fill(0);
        put_u64(slot, QJOURNAL_GENERATION_AT, generation);
        put_u64(slot, QJOURNAL_OFFSET_AT, offset);
        put_u64(slot, QJOURNAL_VALUE_AT, value);
        let crc = crc(&slot[QJOURNAL_CRC_FROM..QJOURNAL_ENTRY_BYTES]);
        put_u32(slot, QJOURNAL_CRC_AT, crc);
    }

    /// The entry in `slot`, if it is a valid entry of the journal of
    /// `generation` (`None`: torn, never written, or of another generation).
    pub(super) fn decode(slot: &[u8], generation: u64) -> Option<Entry> {
        if crc(&slot[QJOURNAL_CRC_FROM..QJOURNAL_ENTRY_BYTES]) != u32_at(slot, QJOURNAL_CRC_AT)
            || u64_at(slot, QJOURNAL_GENERATION_AT) != generation
        {
            return None;
        }
        let offset = u64_at(slot, QJOURNAL_OFFSET_AT);
        let value = u64_at(slot, QJOURNAL_VALUE_AT);
        match Kind::try_from(slot[QJOURNAL_KIND_AT]).ok()? {
            Kind::Delivered => Some(Entry::Delivered { offset, attempt: u32::try_from(value).ok()? }),
            Kind::Settled => Some(Entry::Settled { offset, how: Settled::try_from(value).ok()? }),
            Kind::Nacked => Some(Entry::Nacked { offset, retry_at_us: value }),
            Kind::Rejected if value == 0 => Some(Entry::Rejected { offset }),
            Kind::Rejected => None,
        }
    }
}
