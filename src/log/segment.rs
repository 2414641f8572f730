//! One segment file: its header, the frames in it, its sparse index, and the
//! frame-by-frame scan that recovery, index rebuilding and `verify` share.
//!
//! Publication protocol (what makes the `unsafe` reads in this file sound):
//! the single writer (the topic's append lock) writes a frame in the bytes at
//! and after `end`, then stores the new `end` with Release; readers load `end`
//! (or the topic's committed offset, stored after it) with Acquire and read
//! only below it. Bytes below `end` are never written again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;

use super::format::*;
use super::record::{FrameFault, FrameInfo, check_frame};
use super::scan::{FrameScan, InMemory, scan_frames};
use crate::error::{Corruption, IoError};
use crate::storage::{Mapped, ReadStorage, Storage};

/// One sparse index entry: a frame's first offset (relative to the segment's
/// base) and its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// A mapped segment.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Offset of its first record; also its file name.
    pub base: u64,
    pub path: PathBuf,
    map: Mapped,
    /// End of the published frames (Release by the writer, Acquire by readers).
    end: AtomicUsize,
    /// Offset after its last published record.
    next_offset: AtomicU64,
    /// Timestamp of its last published record, microseconds.
    newest_us: AtomicU64,
    index: RwLock<Vec<IndexEntry>>,
}

/// Result of scanning a segment's frames.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Position after the last valid frame.
    pub end: usize,
    /// Offset after the last valid frame's records.
    pub next_offset: u64,
    pub newest_us: u64,
    pub index: Vec<IndexEntry>,
    /// Where and why the scan stopped before the end of the file, unless it
    /// stopped at a clean end (zero frame size, or the file's end).
    pub fault: Option<(usize, FrameFault)>,
}

impl Scan {
    /// Where the scan stopped, as the scanner reports it.
    pub fn frames(&self) -> FrameScan {
        FrameScan {
            end: self.end as u64,
            next_offset: self.next_offset,
            fault: self.fault.map(|(position, fault)| (position as u64, fault)),
        }
    }
}

impl Segment {
    /// Creates the file for a new segment at `base`, mapped for `capacity`
    /// bytes with the first `allocate` bytes allocated, and writes its header.
    /// The header becomes durable with the segment's first flush.
    pub fn create(
        storage: &dyn Storage,
        dir: &Path,
        base: u64,
        capacity: usize,
        allocate: usize,
    ) -> Result<Segment, IoError> {
        let path = dir.join(segment_file_name(base, SEGMENT_SUFFIX));
        let file = storage.open_mapped(&path, true, capacity).map_err(|e| IoError::new("create", &path, e))?;
        if let Err(e) = file.allocate(allocate as u64) {
            drop(file);
            // Leave no empty segment behind: the publish that needed it failed.
            let _ = storage.remove_file(&path);
            return Err(IoError::new("allocate", &path, e));
        }
        let map = Mapped::new(file);
        // SAFETY: the header lies in the allocated part of a file nobody else
        // has opened yet.
        let header = unsafe { map.slice_mut(0, SEGMENT_HEADER_BYTES) };
        encode_header(header, base);
        Ok(Segment::from_parts(base, path, map, SEGMENT_HEADER_BYTES, base, 0, vec![]))
    }

    /// Maps an existing segment file (`map_len` at least its length) and
    /// checks its header.
    pub fn open(
        storage: &dyn Storage,
        path: PathBuf,
        base: u64,
        map_len: usize,
    ) -> Result<(Segment, usize), OpenFault> {
        let file =
            storage.open_mapped(&path, false, map_len).map_err(|e| OpenFault::Io(IoError::new("map", &path, e)))?;
        let file_len = file.len().map_err(|e| OpenFault::Io(IoError::new("stat", &path, e)))? as usize;
        let file_len = file_len.min(map_len);
        let map = Mapped::new(file);
        // SAFETY: below the file's length; nobody writes a segment being opened.
        let header = unsafe { map.slice(0, file_len.min(SEGMENT_HEADER_BYTES)) };
        check_header(header, base).map_err(|fault| match fault {
            HeaderFault::Newer(found) => OpenFault::Newer { path: path.clone(), found },
            bad => OpenFault::Corrupt(bad.corruption(&path)),
        })?;
        Ok((Segment::from_parts(base, path, map, SEGMENT_HEADER_BYTES, base, 0, vec![]), file_len))
    }

    fn from_parts(
        base: u64,
        path: PathBuf,
        map: Mapped,
        end: usize,
        next_offset: u64,
        newest_us: u64,
        index: Vec<IndexEntry>,
    ) -> Segment {
        Segment {
            base,
            path,
            map,
            end: AtomicUsize::new(end),
            next_offset: AtomicU64::new(next_offset),
            newest_us: AtomicU64::new(newest_us),
            index: RwLock::new(index),
        }
    }

    pub fn map(&self) -> &Mapped {
        &self.map
    }

    /// End of the published frames.
    #[inline]
    pub fn end(&self) -> usize {
        self.end.load(Ordering::Acquire)
    }

    /// Offset after the last published record.
    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Timestamp of the newest record, microseconds since the epoch (0 if empty).
    pub fn newest_us(&self) -> u64 {
        self.newest_us.load(Ordering::Relaxed)
    }

    /// Publishes frames written up to `end`, ending at offset `next_offset`.
    /// Only the writer calls this, after the bytes are in place.
    #[inline]
    pub fn publish(&self, end: usize, next_offset: u64, timestamp_us: u64) {
        self.newest_us.store(timestamp_us, Ordering::Relaxed);
        self.next_offset.store(next_offset, Ordering::Release);
        self.end.store(end, Ordering::Release);
    }

    /// Adds an index entry; the writer calls this for a frame before publishing it.
    pub fn push_index(&self, entry: IndexEntry) {
        self.index.write().push(entry);
    }

    /// Adopts the result of a scan: published end, next offset, index.
    pub fn adopt(&self, scan: &Scan) {
        *self.index.write() = scan.index.clone();
        self.publish(scan.end, scan.next_offset, scan.newest_us);
    }

    /// A copy of the index.
    pub fn index(&self) -> Vec<IndexEntry> {
        self.index.read().clone()
    }

    /// Position and first offset of the frame holding `offset` or the last
    /// indexed frame before it. `offset` must be at least `base`.
    pub fn seek(&self, offset: u64) -> (usize, u64) {
        let index = self.index.read();
        let relative = offset - self.base;
        let at = index.partition_point(|e| u64::from(e.relative_offset) <= relative);
        match at.checked_sub(1).map(|i| index[i]) {
            Some(e) => (e.position as usize, self.base + u64::from(e.relative_offset)),
            None => (SEGMENT_HEADER_BYTES, self.base),
        }
    }

    /// The frame at `position`, whose first offset must be `expected`,
    /// checked completely, as zero-copy `Bytes`.
    pub fn frame(&self, position: usize, expected: u64) -> Result<(FrameInfo, Bytes), Corruption> {
        let end = self.end();
        if position >= end {
            return Err(corrupt(&self.path, position, FrameFault::End.reason()));
        }
        // SAFETY: `[position, end)` holds published frames, never written again.
        let bytes = unsafe { self.map.slice(position, end - position) };
        let info = check_frame(bytes, expected).map_err(|fault| corrupt(&self.path, position, fault.reason()))?;
        // SAFETY: as above; the `Bytes` keeps the mapping alive.
        Ok((info, unsafe { self.map.bytes(position, info.len) }))
    }

    /// The published bytes of the segment, from its start to its current
    /// end, as one `Bytes` that frames can be sliced from without allocating.
    pub fn view(&self) -> Bytes {
        // SAFETY: `[0, end)` is the header and published frames, never written again.
        unsafe { self.map.bytes(0, self.end()) }
    }

    /// The frame at `position` of `view` (from [`Segment::view`]), whose
    /// first offset must be `expected`, checked completely.
    pub fn frame_in(&self, view: &Bytes, position: usize, expected: u64) -> Result<(FrameInfo, Bytes), Corruption> {
        let bytes = view.get(position..).filter(|b| !b.is_empty());
        let bytes = bytes.ok_or_else(|| corrupt(&self.path, position, FrameFault::End.reason()))?;
        let info = check_frame(bytes, expected).map_err(|fault| corrupt(&self.path, position, fault.reason()))?;
        Ok((info, view.slice(position..position + info.len)))
    }

    /// Scans frames in `[from, limit)` starting at offset `next`, checking
    /// every one, and builds the index of what it accepts.
    ///
    /// The caller guarantees `[from, limit)` lies within the file and nobody
    /// writes it during the scan (recovery, or a sealed segment).
    pub fn scan(&self, from: usize, limit: usize, next: u64, mut index: Vec<IndexEntry>) -> Scan {
        // SAFETY: the caller's guarantee above.
        let bytes = unsafe { self.map.slice(0, limit) };
        let mut newest_us = self.newest_us();
        let mut last_indexed = index.last().map_or(0, |e| e.position as usize);
        let Ok(scan) = scan_frames(&mut InMemory(bytes), from as u64, next, |position, info| {
            let position = position as usize;
            if index.is_empty() || position - last_indexed >= INDEX_INTERVAL_BYTES {
                let relative_offset = (info.first_offset - self.base) as u32;
                index.push(IndexEntry { relative_offset, position: position as u32 });
                last_indexed = position;
            }
            newest_us = info.timestamp_us;
        });
        Scan {
            end: scan.end as usize,
            next_offset: scan.next_offset,
            newest_us,
            index,
            fault: scan.fault.map(|(position, fault)| (position as usize, fault)),
        }
    }
}

/// The base offsets of the segment files in the topic directory `dir`,
/// ascending: the one listing of a topic's segments (recovery, `inspect`).
pub(crate) fn segment_bases(storage: &dyn ReadStorage, dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut bases: Vec<u64> =
        storage.list_dir(dir)?.iter().filter_map(|name| parse_segment_file_name(name, SEGMENT_SUFFIX)).collect();
    bases.sort_unstable();
    Ok(bases)
}

/// Why an existing segment could not be opened.
#[derive(Debug)]
pub(crate) enum OpenFault {
    Corrupt(Corruption),
    Newer { path: PathBuf, found: u32 },
    Io(IoError),
}

pub(crate) fn corrupt(path: &Path, position: usize, reason: &'static str) -> Corruption {
    Corruption { file: path.to_path_buf(), position: position as u64, reason }
}

/// Writes a segment header.
pub(crate) fn encode_header(header: &mut [u8], base: u64) {
    header[..8].copy_from_slice(&SEGMENT_MAGIC);
    put_u32(header, SEGMENT_VERSION_AT, FORMAT_VERSION);
    put_u32(header, SEGMENT_HEADER_SIZE_AT, SEGMENT_HEADER_BYTES as u32);
    put_u64(header, SEGMENT_BASE_AT, base);
    let crc = crc(&header[..SEGMENT_CRC_AT]);
    put_u32(header, SEGMENT_CRC_AT, crc);
    put_u32(header, SEGMENT_CRC_AT + 4, 0);
}

/// What is wrong with a segment header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderFault {
    /// Damage, at byte `at` of the header.
    Bad { at: usize, reason: &'static str },
    /// A newer version, under a valid CRC.
    Newer(u32),
}

/// Why a segment whose header holds a newer version cannot be read.
const NEWER_SEGMENT: &str = "the segment has a newer format version";

impl HeaderFault {
    /// The one report of a refused header, for every reader of segment
    /// files (recovery, reads, `verify`, `inspect`): the segment file, the
    /// header's byte where the check failed (a newer version at the version
    /// field, as for every file: `docs/FORMAT.md`), and why. The log is cut
    /// there, which removes the whole file: a position below
    /// `SEGMENT_HEADER_BYTES` is a cut in the header.
    pub(crate) fn corruption(&self, path: &Path) -> Corruption {
        match *self {
            HeaderFault::Bad { at, reason } => corrupt(path, at, reason),
            HeaderFault::Newer(_) => corrupt(path, SEGMENT_VERSION_AT, NEWER_SEGMENT),
        }
    }
}

/// Checks a segment header against the base offset its file name gives:
/// the one check of a segment's header. `header` is the file's first bytes
/// (fewer than a header's if the file is shorter; any after the header's
/// are ignored).
pub(crate) fn check_header(header: &[u8], base: u64) -> Result<(), HeaderFault> {
    let Some(header) = header.get(..SEGMENT_HEADER_BYTES) else {
        return Err(HeaderFault::Bad { at: 0, reason: "the segment is shorter than its header" });
    };
    if header[..8] != SEGMENT_MAGIC {
        return Err(HeaderFault::Bad { at: 0, reason: "not a tollgate segment" });
    }
    let checks = |h: &[u8]| crc(&h[..SEGMENT_CRC_AT]) == u32_at(h, SEGMENT_CRC_AT);
    if !checks(header) {
        let at = header_damage_at(header, SEGMENT_VERSION_AT, SEGMENT_CRC_AT, checks) as usize;
        return Err(HeaderFault::Bad { at, reason: "the segment header's CRC does not match" });
    }
    let version = u32_at(header, SEGMENT_VERSION_AT);
    if version > FORMAT_VERSION {
        return Err(HeaderFault::Newer(version));
    }
    if version == 0 {
        return Err(HeaderFault::Bad { at: SEGMENT_VERSION_AT, reason: "unsupported segment header" });
    }
    if u32_at(header, SEGMENT_HEADER_SIZE_AT) as usize != SEGMENT_HEADER_BYTES {
        return Err(HeaderFault::Bad { at: SEGMENT_HEADER_SIZE_AT, reason: "unsupported segment header" });
    }
    if u64_at(header, SEGMENT_BASE_AT) != base {
        return Err(HeaderFault::Bad {
            at: SEGMENT_BASE_AT,
            reason: "the segment's base offset does not match its file name",
        });
    }
    Ok(())
}

/// Encodes a sealed segment's index file.
pub(crate) fn encode_index(base: u64, end: usize, entries: &[IndexEntry]) -> Vec<u8> {
    let mut bytes = vec![0; INDEX_HEADER_BYTES + entries.len() * INDEX_ENTRY_BYTES + 4];
    bytes[..8].copy_from_slice(&INDEX_MAGIC);
    put_u32(&mut bytes, INDEX_VERSION_AT, FORMAT_VERSION);
    put_u32(&mut bytes, INDEX_COUNT_AT, entries.len() as u32);
    put_u64(&mut bytes, INDEX_BASE_AT, base);
    put_u64(&mut bytes, INDEX_END_AT, end as u64);
    for (i, e) in entries.iter().enumerate() {
        let at = INDEX_HEADER_BYTES + i * INDEX_ENTRY_BYTES;
        put_u32(&mut bytes, at, e.relative_offset);
        put_u32(&mut bytes, at + 4, e.position);
    }
    let crc_at = bytes.len() - 4;
    let crc = crc(&bytes[..crc_at]);
    put_u32(&mut bytes, crc_at, crc);
    bytes
}

/// Decodes an index file, if it is valid for a segment at `base` whose file
/// is `file_len` bytes long: returns the data end and the entries.
pub(crate) fn decode_index(bytes: &[u8], base: u64, file_len: usize) -> Option<(usize, Vec<IndexEntry>)> {
    if bytes.len() < INDEX_HEADER_BYTES + 4 || bytes[..8] != INDEX_MAGIC {
        return None;
    }
    let crc_at = bytes.len() - 4;
    if crc(&bytes[..crc_at]) != u32_at(bytes, crc_at) || u32_at(bytes, INDEX_VERSION_AT) != FORMAT_VERSION {
        return None;
    }
    let count = u32_at(bytes, INDEX_COUNT_AT) as usize;
    let end = u64_at(bytes, INDEX_END_AT) as usize;
    if u64_at(bytes, INDEX_BASE_AT) != base
        || INDEX_HEADER_BYTES + count.checked_mul(INDEX_ENTRY_BYTES)? != crc_at
        || end > file_len
        || end < SEGMENT_HEADER_BYTES
    {
        return None;
    }
    let entries: Vec<IndexEntry> = (0..count)
        .map(|i| {
            let at = INDEX_HEADER_BYTES + i * INDEX_ENTRY_BYTES;
            IndexEntry { relative_offset: u32_at(bytes, at), position: u32_at(bytes, at + 4) }
        })
        .collect();
    // Entries must ascend and point inside the data; otherwise rebuild.
    let ordered =
        entries.windows(2).all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position);
    let inside = entries.iter().all(|e| (e.position as usize) >= SEGMENT_HEADER_BYTES && (e.position as usize) < end);
    let starts_at_base =
        entries.first().is_some_and(|e| e.relative_offset == 0 && e.position as usize == SEGMENT_HEADER_BYTES);
    (ordered && inside && (starts_at_base || entries.is_empty() && end == SEGMENT_HEADER_BYTES))
        .then_some((end, entries))
}
