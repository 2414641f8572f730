//! Messages going in, records coming out, and the frame codec between them
//! (layout in `docs/FORMAT.md`, constants in `format.rs`).
//!
//! Encoding writes straight into the segment's mapping; decoding checks a
//! frame completely (size, CRC, kind, entry structure, offset) before any of
//! its records is handed out, so a record whose CRC fails is never returned.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::format::*;
use crate::error::PublishError;

/// A record's position in its topic: dense, starting at 0, assigned in
/// publish order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(u64);

impl Offset {
    /// The offset with this number.
    pub const fn new(offset: u64) -> Self {
        Self(offset)
    }

    /// Its number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The offset after this one.
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl From<u64> for Offset {
    fn from(offset: u64) -> Self {
        Self(offset)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A message to publish: a payload, and optionally a key and headers.
///
/// ```
/// use tollgate::Message;
///
/// let msg = Message::new("order 1001").key("sku:42").header("type", "created");
/// assert_eq!(msg.payload().as_ref(), b"order 1001");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    key: Option<String>,
    /// Headers set by tollgate itself (`tollgate.` names): priority,
    /// delivery time, dead-letter details. Encoded before `headers`.
    system: Vec<(&'static str, Bytes)>,
    headers: Vec<(String, Bytes)>,
    payload: Bytes,
}

impl Message {
    /// A message with this payload, no key and no headers.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self { key: None, system: Vec::new(), headers: Vec::new(), payload: payload.into() }
    }

    /// Sets the key (at most 1024 bytes), e.g. the entity the message is about.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header (name 1..=255 bytes; at most 64 headers). Names
    /// starting with `tollgate.` are reserved: publishing a message with one
    /// fails with [`PublishError::InvalidMessage`].
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the priority for [workers](crate::Worker): 0 (the default) to
    /// [`PRIORITY_MAX`](crate::PRIORITY_MAX) (9), higher first. Publishing fails with
    /// [`PublishError::InvalidMessage`] if it is out of range.
    pub fn priority(self, priority: u8) -> Self {
        self.system_header(PRIORITY_HEADER, Bytes::copy_from_slice(&[priority]))
    }

    /// Holds the message back from [workers](crate::Worker) until `at`
    /// (wall clock, stored with the message). A time in the past delivers at
    /// once; publishing fails with [`PublishError::InvalidMessage`] if `at`
    /// is more than [`DELAY_MAX`](crate::DELAY_MAX) (30 days) ahead. Subscriptions see the
    /// message at once: delays are a work-queue feature.
    pub fn deliver_at(self, at: SystemTime) -> Self {
        let us = at.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.system_header(DELIVER_AT_HEADER, Bytes::copy_from_slice(&us.to_le_bytes()))
    }

    /// Holds the message back from [workers](crate::Worker) for `delay` from
    /// now: [`deliver_at`](Message::deliver_at)`(now + delay)`.
    pub fn deliver_after(self, delay: Duration) -> Self {
        let at = SystemTime::now().checked_add(delay).unwrap_or(UNIX_EPOCH + Duration::from_micros(u64::MAX));
        self.deliver_at(at)
    }

    /// Its key, reserved headers, user headers and payload (for a backend
    /// that stores them as columns).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    #[allow(clippy::type_complexity, reason = "the four parts, named by the doc")]
    pub(crate) fn parts(&self) -> (Option<&str>, &[(&'static str, Bytes)], &[(String, Bytes)], &Bytes) {
        (self.key.as_deref(), &self.system, &self.headers, &self.payload)
    }

    /// Number of reserved headers set.
    pub(crate) fn system_header_count(&self) -> usize {
        self.system.len()
    }

    /// Number of user headers.
    pub(crate) fn header_count(&self) -> usize {
        self.headers.len()
    }

    /// Sets a reserved header, replacing an earlier value.
    pub(crate) fn system_header(mut self, name: &'static str, value: Bytes) -> Self {
        self.system.retain(|(n, _)| *n != name);
        self.system.push((name, value));
        self
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Size of this message's entry in a frame, after checking its key and
    /// headers against the format's limits.
    pub(crate) fn entry_bytes(&self) -> Result<usize, PublishError> {
        let key_bytes = self.key.as_ref().map_or(0, String::len);
        if key_bytes > RECORD_KEY_BYTES_MAX {
            return Err(PublishError::InvalidMessage { reason: "the key is longer than 1024 bytes" });
        }
        if self.system.len() + self.headers.len() > MESSAGE_HEADERS_MAX {
            return Err(PublishError::InvalidMessage { reason: "a message has at most 64 headers" });
        }
        let mut bytes = ENTRY_HEADER_BYTES + key_bytes;
        for (name, value) in &self.system {
            match *name {
                PRIORITY_HEADER if value.len() != 1 || value[0] > PRIORITY_MAX => {
                    return Err(PublishError::InvalidMessage { reason: "the priority is above 9" });
                }
                DELIVER_AT_HEADER if value.len() != 8 || u64_at(value, 0) > now_us().saturating_add(DELAY_MAX_US) => {
                    return Err(PublishError::InvalidMessage {
                        reason: "the delivery time is more than 30 days ahead",
                    });
                }
                _ => {}
            }
            bytes += MESSAGE_HEADER_PREFIX_BYTES + name.len() + value.len();
        }
        for (name, value) in &self.headers {
            if name.is_empty() || name.len() > MESSAGE_HEADER_NAME_BYTES_MAX {
                return Err(PublishError::InvalidMessage { reason: "a header name must be 1 to 255 bytes" });
            }
            if name.starts_with(RESERVED_HEADER_PREFIX) {
                return Err(PublishError::InvalidMessage {
                    reason: "header names starting with \"tollgate.\" are reserved",
                });
            }
            if value.len() > u32::MAX as usize {
                return Err(PublishError::InvalidMessage { reason: "a header value is larger than 4 GiB" });
            }
            bytes += MESSAGE_HEADER_PREFIX_BYTES + name.len() + value.len();
        }
        if self.payload.len() > u32::MAX as usize {
            return Err(PublishError::InvalidMessage { reason: "the payload is larger than 4 GiB" });
        }
        Ok(bytes + self.payload.len())
    }

    /// Writes this message's entry into `dst`, which is exactly `entry_bytes()` long.
    pub(crate) fn encode_entry(&self, dst: &mut [u8]) {
        let key = self.key.as_deref().unwrap_or("").as_bytes();
        let system = self.system.iter().map(|(n, v)| (*n, v.as_ref()));
        let headers = system.chain(self.headers.iter().map(|(n, v)| (n.as_str(), v.as_ref())));
        encode_entry_parts(dst, key, self.system.len() + self.headers.len(), headers, &self.payload);
    }
}

impl From<&[u8]> for Message {
    fn from(payload: &[u8]) -> Self {
        Self::new(Bytes::copy_from_slice(payload))
    }
}

impl From<Vec<u8>> for Message {
    fn from(payload: Vec<u8>) -> Self {
        Self::new(payload)
    }
}

impl From<Bytes> for Message {
    fn from(payload: Bytes) -> Self {
        Self::new(payload)
    }
}

impl From<&str> for Message {
    fn from(payload: &str) -> Self {
        Self::new(Bytes::copy_from_slice(payload.as_bytes()))
    }
}

impl From<String> for Message {
    fn from(payload: String) -> Self {
        Self::new(payload)
    }
}

/// Size of the entry of a payload-only message.
#[inline]
pub(crate) const fn plain_entry_bytes(payload_bytes: usize) -> usize {
    ENTRY_HEADER_BYTES + payload_bytes
}

/// Writes an entry into `dst`, which is exactly as long as the entry.
#[inline]
pub(crate) fn encode_entry_parts<'a>(
    dst: &mut [u8],
    key: &[u8],
    header_count: usize,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    payload: &[u8],
) {
    put_u32(dst, ENTRY_PAYLOAD_LEN_AT, payload.len() as u32);
    put_u16(dst, ENTRY_KEY_LEN_AT, key.len() as u16);
    put_u16(dst, ENTRY_HEADER_COUNT_AT, header_count as u16);
    let mut at = ENTRY_HEADER_BYTES;
    dst[at..at + key.len()].copy_from_slice(key);
    at += key.len();
    for (name, value) in headers {
        put_u16(dst, at, name.len() as u16);
        put_u32(dst, at + 2, value.len() as u32);
        at += MESSAGE_HEADER_PREFIX_BYTES;
        dst[at..at + name.len()].copy_from_slice(name.as_bytes());
        at += name.len();
        dst[at..at + value.len()].copy_from_slice(value);
        at += value.len();
    }
    dst[at..].copy_from_slice(payload);
}

/// Writes a frame header into `frame` (the whole frame, entries already in
/// place) and then its CRC, which covers everything after the CRC field.
#[inline]
pub(crate) fn seal_frame(frame: &mut [u8], count: u32, first_offset: u64, timestamp_us: u64) {
    put_u32(frame, FRAME_LEN_AT, frame.len() as u32);
    frame[FRAME_KIND_AT] = FRAME_KIND_RECORDS;
    frame[FRAME_FLAGS_AT] = 0;
    put_u16(frame, FRAME_FLAGS_AT + 1, 0);
    put_u32(frame, FRAME_COUNT_AT, count);
    put_u64(frame, FRAME_OFFSET_AT, first_offset);
    put_u64(frame, FRAME_TIMESTAMP_AT, timestamp_us);
    let crc = crc(&frame[FRAME_CRC_FROM..]);
    put_u32(frame, FRAME_CRC_AT, crc);
}

/// What a valid frame header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameInfo {
    /// Frame size in bytes.
    pub len: usize,
    /// Number of records.
    pub count: u32,
    /// Offset of the first record.
    pub first_offset: u64,
    /// Microseconds since the Unix epoch.
    pub timestamp_us: u64,
}

impl FrameInfo {
    /// The offset after the frame's last record.
    pub fn end_offset(&self) -> u64 {
        self.first_offset + u64::from(self.count)
    }
}

/// Why the bytes at a position are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameFault {
    /// Frame size 0: no frame was ever written here.
    End,
    /// The frame size is below the header size or runs past the readable bytes.
    BadLength,
    /// The CRC does not match.
    BadCrc,
    /// The kind byte is not a known kind.
    BadKind,
    /// The record count is out of range or the entries do not fill the frame.
    BadEntries,
    /// The frame's first offset is not the one expected at this position.
    BadOffset,
}

impl FrameFault {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            FrameFault::End => "the data ends early",
            FrameFault::BadLength => "the frame size is out of range",
            FrameFault::BadCrc => "the frame's CRC does not match",
            FrameFault::BadKind => "unknown frame kind",
            FrameFault::BadEntries => "the frame's records do not fill it",
            FrameFault::BadOffset => "the frame's offset is out of sequence",
        }
    }
}

/// Kinds of frame, decoded from the kind byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    Records,
}

impl TryFrom<u8> for FrameKind {
    type Error = FrameFault;

    fn try_from(byte: u8) -> Result<Self, FrameFault> {
        match byte {
            FRAME_KIND_RECORDS => Ok(FrameKind::Records),
            _ => Err(FrameFault::BadKind),
        }
    }
}

/// Checks the frame at the start of `bytes` (which runs to the end of the
/// readable data) completely, including that its first offset is `expected`.
pub(crate) fn check_frame(bytes: &[u8], expected: u64) -> Result<FrameInfo, FrameFault> {
    if bytes.len() < 4 {
        return Err(if bytes.iter().all(|&b| b == 0) { FrameFault::End } else { FrameFault::BadLength });
    }
    let len = u32_at(bytes, FRAME_LEN_AT) as usize;
    if len == 0 {
        return Err(FrameFault::End);
    }
    if len < FRAME_HEADER_BYTES || len > bytes.len() {
        return Err(FrameFault::BadLength);
    }
    let frame = &bytes[..len];
    if crc(&frame[FRAME_CRC_FROM..]) != u32_at(frame, FRAME_CRC_AT) {
        return Err(FrameFault::BadCrc);
    }
    let FrameKind::Records = FrameKind::try_from(frame[FRAME_KIND_AT])?;
    let count = u32_at(frame, FRAME_COUNT_AT);
    if count == 0 || count as usize > FRAME_RECORDS_MAX {
        return Err(FrameFault::BadEntries);
    }
    let first_offset = u64_at(frame, FRAME_OFFSET_AT);
    // Offsets must not run past u64::MAX (only a forged file gets near it).
    if first_offset != expected || first_offset.checked_add(u64::from(count)).is_none() {
        return Err(FrameFault::BadOffset);
    }
    let mut at = FRAME_HEADER_BYTES;
    for _ in 0..count {
        at = entry_end(frame, at).ok_or(FrameFault::BadEntries)?;
    }
    if at != len {
        return Err(FrameFault::BadEntries);
    }
    Ok(FrameInfo { len, count, first_offset, timestamp_us: u64_at(frame, FRAME_TIMESTAMP_AT) })
}

/// Position after the entry starting at `at` in `frame`, if it fits and its
/// key and header names are well formed.
fn entry_end(frame: &[u8], at: usize) -> Option<usize> {
    let header = frame.get(at..at.checked_add(ENTRY_HEADER_BYTES)?)?;
    let payload_bytes = u32_at(header, ENTRY_PAYLOAD_LEN_AT) as usize;
    let key_bytes = u16_at(header, ENTRY_KEY_LEN_AT) as usize;
    let header_count = u16_at(header, ENTRY_HEADER_COUNT_AT) as usize;
    if key_bytes > RECORD_KEY_BYTES_MAX || header_count > MESSAGE_HEADERS_MAX {
        return None;
    }
    let mut pos = at + ENTRY_HEADER_BYTES;
    std::str::from_utf8(frame.get(pos..pos.checked_add(key_bytes)?)?).ok()?;
    pos += key_bytes;
    for _ in 0..header_count {
        let prefix = frame.get(pos..pos.checked_add(MESSAGE_HEADER_PREFIX_BYTES)?)?;
        let name_bytes = u16_at(prefix, 0) as usize;
        let value_bytes = u32_at(prefix, 2) as usize;
        if name_bytes == 0 || name_bytes > MESSAGE_HEADER_NAME_BYTES_MAX {
            return None;
        }
        pos += MESSAGE_HEADER_PREFIX_BYTES;
        std::str::from_utf8(frame.get(pos..pos.checked_add(name_bytes)?)?).ok()?;
        pos = pos.checked_add(name_bytes)?.checked_add(value_bytes)?;
    }
    let end = pos.checked_add(payload_bytes)?;
    (end <= frame.len()).then_some(end)
}

/// A record read from a topic. Its key, header values and payload are
/// zero-copy views of the mapped log file.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    offset: Offset,
    timestamp_us: u64,
    /// The whole entry: header, key, headers, payload.
    entry: Bytes,
    payload: Bytes,
}

impl Record {
    /// Decodes the entry at `at` of a frame that `check_frame` accepted.
    pub(crate) fn decode(frame: &Bytes, at: usize, offset: u64, timestamp_us: u64) -> (Record, usize) {
        let end = entry_end(frame, at).expect("entry of a checked frame");
        let payload_bytes = u32_at(frame, at + ENTRY_PAYLOAD_LEN_AT) as usize;
        let record = Record {
            offset: Offset(offset),
            timestamp_us,
            entry: frame.slice(at..end),
            payload: frame.slice(end - payload_bytes..end),
        };
        (record, end)
    }

    /// A record made from its parts (a backend that stores messages as
    /// rows): the entry is encoded as a frame would hold it.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn from_parts<'a>(
        offset: u64,
        timestamp_us: u64,
        key: Option<&str>,
        headers: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
        payload: &[u8],
    ) -> Record {
        let key = key.unwrap_or("").as_bytes();
        let (mut count, mut bytes) = (0, ENTRY_HEADER_BYTES + key.len() + payload.len());
        for (name, value) in headers.clone() {
            count += 1;
            bytes += MESSAGE_HEADER_PREFIX_BYTES + name.len() + value.len();
        }
        let mut entry = vec![0; bytes];
        encode_entry_parts(&mut entry, key, count, headers, payload);
        let entry = Bytes::from(entry);
        let payload = entry.slice(bytes - payload.len()..);
        Record { offset: Offset(offset), timestamp_us, entry, payload }
    }

    /// The record's offset.
    pub fn offset(&self) -> Offset {
        self.offset
    }

    /// When it was published (wall clock, microsecond precision).
    pub fn timestamp(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.timestamp_us)
    }

    /// When it was published, in microseconds since the Unix epoch.
    pub fn timestamp_us(&self) -> u64 {
        self.timestamp_us
    }

    /// The key, if the message had one.
    pub fn key(&self) -> Option<&str> {
        let key_bytes = u16_at(&self.entry, ENTRY_KEY_LEN_AT) as usize;
        let key = &self.entry[ENTRY_HEADER_BYTES..ENTRY_HEADER_BYTES + key_bytes];
        // Checked as UTF-8 when the frame was decoded.
        (key_bytes > 0).then(|| std::str::from_utf8(key).unwrap_or_default())
    }

    /// The headers, in the order they were added.
    pub fn headers(&self) -> Headers<'_> {
        let key_bytes = u16_at(&self.entry, ENTRY_KEY_LEN_AT) as usize;
        let remaining = u16_at(&self.entry, ENTRY_HEADER_COUNT_AT);
        Headers { entry: &self.entry, at: ENTRY_HEADER_BYTES + key_bytes, remaining }
    }

    /// The value of the first header with this name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The priority set with [`Message::priority`]; 0 if none.
    pub fn priority(&self) -> u8 {
        match self.header(PRIORITY_HEADER) {
            Some(&[p]) => p.min(PRIORITY_MAX),
            _ => 0,
        }
    }

    /// The delivery time set with [`Message::deliver_at`] or
    /// [`Message::deliver_after`], in microseconds since the Unix epoch.
    pub fn deliver_at_us(&self) -> Option<u64> {
        let value = self.header(DELIVER_AT_HEADER)?;
        (value.len() == 8).then(|| u64_at(value, 0))
    }

    /// The payload, keeping only it.
    pub fn into_payload(self) -> Bytes {
        self.payload
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("offset", &self.offset.0)
            .field("timestamp_us", &self.timestamp_us)
            .field("key", &self.key())
            .field("headers", &self.headers().count())
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

/// Iterator over a record's headers, as `(name, value)`.
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    entry: &'a [u8],
    at: usize,
    remaining: u16,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let name_bytes = u16_at(self.entry, self.at) as usize;
        let value_bytes = u32_at(self.entry, self.at + 2) as usize;
        let name_at = self.at + MESSAGE_HEADER_PREFIX_BYTES;
        let value_at = name_at + name_bytes;
        self.at = value_at + value_bytes;
        // Checked as UTF-8 when the frame was decoded.
        let name = std::str::from_utf8(&self.entry[name_at..value_at]).unwrap_or_default();
        Some((name, &self.entry[value_at..self.at]))
    }
}

/// A checked frame, handed out record by record: the one walk over a
/// frame's entries, for `Topic::read`, subscriptions and worker groups
/// (`Reader`), and `inspect`'s reader of directories in use.
#[derive(Debug)]
pub(crate) struct OpenFrame {
    bytes: Bytes,
    info: FrameInfo,
    /// Offset and position of the next entry to hand out.
    offset: u64,
    at: usize,
}

impl OpenFrame {
    /// The frame `bytes`, which `check_frame` accepted (saying `info`),
    /// positioned at its record `offset`: the entries before it are skipped.
    pub(crate) fn at_offset(bytes: Bytes, info: FrameInfo, offset: u64) -> OpenFrame {
        let mut frame = OpenFrame { bytes, info, offset: info.first_offset, at: FRAME_HEADER_BYTES };
        while frame.offset < offset && frame.offset < info.end_offset() {
            let (_, end) = Record::decode(&frame.bytes, frame.at, frame.offset, info.timestamp_us);
            frame.at = end;
            frame.offset += 1;
        }
        frame
    }

    /// The next record of the frame, if any is left.
    #[inline]
    pub(crate) fn next_record(&mut self) -> Option<Record> {
        if self.offset >= self.info.end_offset() {
            return None;
        }
        let (record, end) = Record::decode(&self.bytes, self.at, self.offset, self.info.timestamp_us);
        self.offset += 1;
        self.at = end;
        Some(record)
    }
}
