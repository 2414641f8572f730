//! Per-topic configuration: durability, segment size, limits, retention, and
//! its `topic.conf` encoding.

use std::path::Path;
use std::time::Duration;

use super::format::*;
use crate::error::{Corruption, IoError, TopicError};
use crate::storage::ReadStorage;

/// Smallest `segment_bytes`.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Largest `segment_bytes` (positions inside a segment are `u32`).
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
/// Shortest `Durability::Interval`.
pub const FLUSH_INTERVAL_MIN: Duration = Duration::from_millis(1);

/// When a publish is durable: an explicit per-topic choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// In the page cache: survives a crash of the process, not of the machine.
    /// Segments are synced when they fill up, in the background.
    Buffered,
    /// Synced in the background at this interval: after a power cut, at most
    /// about one interval of acknowledged records is lost (always a suffix).
    Interval(Duration),
    /// `publish` returns only once the record is on disk. Concurrent
    /// publishers share one sync (group commit).
    Sync,
}

/// How a topic stores its records. Fixed when the topic is created.
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Durability, TopicConfig};
///
/// let config = TopicConfig {
///     durability: Durability::Sync,
///     retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
///     ..TopicConfig::default()
/// };
/// # let _ = config;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicConfig {
    /// When publishes are durable. Default [`Durability::Buffered`].
    pub durability: Durability,
    /// A segment is sealed and a new one started when the next frame would
    /// not fit in this many bytes. Default 64 MiB; 4 KiB to 1 GiB.
    pub segment_bytes: u64,
    /// Largest message (payload, key and headers as encoded). Default 1 MiB;
    /// must leave room for a frame header in a segment.
    pub max_message_bytes: usize,
    /// Delete the oldest segments while the topic is larger than this.
    /// Default `None` (keep everything).
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this. Default `None`.
    pub retention_age: Option<Duration>,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Buffered,
            segment_bytes: 64 << 20,
            max_message_bytes: 1 << 20,
            retention_bytes: None,
            retention_age: None,
        }
    }
}

impl TopicConfig {
    /// Checks the ranges; the reason is for an `InvalidConfig` error.
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err("segment_bytes must be between 4 KiB and 1 GiB");
        }
        let room = self.segment_bytes as usize - SEGMENT_HEADER_BYTES - FRAME_HEADER_BYTES - ENTRY_HEADER_BYTES;
        if self.max_message_bytes == 0 || self.max_message_bytes > room {
            return Err("max_message_bytes must be at least 1 and fit in a segment with its headers");
        }
        if let Durability::Interval(d) = self.durability
            && (d < FLUSH_INTERVAL_MIN || d.as_micros() > u128::from(u64::MAX))
        {
            return Err("the flush interval must be at least 1 ms");
        }
        if self.retention_age.is_some_and(|age| age.is_zero()) {
            return Err("retention_age must be positive");
        }
        if self.retention_age.is_some_and(|age| age.as_micros() > u128::from(u64::MAX)) {
            return Err("retention_age is too large (at most u64::MAX microseconds)");
        }
        if self.retention_bytes == Some(0) {
            return Err("retention_bytes must be positive");
        }
        Ok(())
    }

    /// Encodes `topic.conf`.
    pub(crate) fn encode(&self) -> [u8; TOPIC_BYTES] {
        let mut bytes = [0; TOPIC_BYTES];
        bytes[..8].copy_from_slice(&TOPIC_MAGIC);
        put_u32(&mut bytes, TOPIC_VERSION_AT, FORMAT_VERSION);
        let (kind, interval_us) = match self.durability {
            Durability::Buffered => (0, 0),
            Durability::Interval(d) => (1, d.as_micros() as u64),
            Durability::Sync => (2, 0),
        };
        bytes[TOPIC_DURABILITY_AT] = kind;
        put_u64(&mut bytes, TOPIC_INTERVAL_AT, interval_us);
        put_u64(&mut bytes, TOPIC_SEGMENT_BYTES_AT, self.segment_bytes);
        put_u32(&mut bytes, TOPIC_MESSAGE_BYTES_AT, self.max_message_bytes as u32);
        put_u64(&mut bytes, TOPIC_RETENTION_BYTES_AT, self.retention_bytes.unwrap_or(0));
        put_u64(&mut bytes, TOPIC_RETENTION_AGE_AT, self.retention_age.map_or(0, |d| d.as_millis() as u64));
        let crc = crc(&bytes[..TOPIC_CRC_AT]);
        put_u32(&mut bytes, TOPIC_CRC_AT, crc);
        bytes
    }

    /// Reads a topic's `topic.conf` at `path`: the one reader of it (the
    /// engine opening a topic, and `inspect`).
    pub(crate) fn read(storage: &dyn ReadStorage, path: &Path) -> Result<TopicConfig, TopicError> {
        let bytes = storage.read_file(path).map_err(|e| TopicError::Io(IoError::new("read", path, e)))?;
        TopicConfig::decode(&bytes).map_err(|newer| match newer {
            Some(found) => TopicError::NewerVersion { path: path.to_path_buf(), found, supported: FORMAT_VERSION },
            None => {
                // Damage the CRC catches is placed by `header_damage_at` (at
                // the version if only it is wrong); other faults at byte 0.
                let checks = |b: &[u8]| crc(&b[..TOPIC_CRC_AT]) == u32_at(b, TOPIC_CRC_AT);
                let position = if bytes.len() == TOPIC_BYTES && bytes[..8] == TOPIC_MAGIC && !checks(&bytes) {
                    header_damage_at(&bytes, TOPIC_VERSION_AT, TOPIC_CRC_AT, checks)
                } else {
                    0
                };
                TopicError::Corrupt(Corruption {
                    file: path.to_path_buf(),
                    position,
                    reason: "not a valid topic configuration",
                })
            }
        })
    }

    /// Decodes `topic.conf`: `Err(Some(version))` for a newer version,
    /// `Err(None)` for anything invalid.
    pub(crate) fn decode(bytes: &[u8]) -> Result<TopicConfig, Option<u32>> {
        if bytes.len() != TOPIC_BYTES || bytes[..8] != TOPIC_MAGIC {
            return Err(None);
        }
        if crc(&bytes[..TOPIC_CRC_AT]) != u32_at(bytes, TOPIC_CRC_AT) {
            return Err(None);
        }
        let version = u32_at(bytes, TOPIC_VERSION_AT);
        if version > FORMAT_VERSION {
            return Err(Some(version));
        }
        if version == 0 {
            return Err(None);
        }
        let durability = match bytes[TOPIC_DURABILITY_AT] {
            0 => Durability::Buffered,
            1 => Durability::Interval(Duration::from_micros(u64_at(bytes, TOPIC_INTERVAL_AT))),
            2 => Durability::Sync,
            _ => return Err(None),
        };
        let nonzero = |v: u64| (v != 0).then_some(v);
        let config = TopicConfig {
            durability,
            segment_bytes: u64_at(bytes, TOPIC_SEGMENT_BYTES_AT),
            max_message_bytes: u32_at(bytes, TOPIC_MESSAGE_BYTES_AT) as usize,
            retention_bytes: nonzero(u64_at(bytes, TOPIC_RETENTION_BYTES_AT)),
            retention_age: nonzero(u64_at(bytes, TOPIC_RETENTION_AGE_AT)).map(Duration::from_millis),
        };
        config.validate().map_err(|_| None)?;
        Ok(config)
    }
}
