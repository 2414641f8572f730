//! The numbers of `docs/FORMAT.md`, and the little-endian field helpers every
//! decoder uses. `tests/format.rs` checks these constants against the tables
//! in that document.

/// Format version written into every file; files with a higher one are refused.
pub const FORMAT_VERSION: u32 = 1;

/// `tollgate.meta`: magic, version, CRC.
pub const META_MAGIC: [u8; 8] = *b"TOLLGATE";
pub const META_BYTES: usize = 16;
pub const META_VERSION_AT: usize = 8;
pub const META_CRC_AT: usize = 12;

/// `topic.conf`.
pub const TOPIC_MAGIC: [u8; 8] = *b"TGTOPIC1";
pub const TOPIC_BYTES: usize = 64;
pub const TOPIC_VERSION_AT: usize = 8;
pub const TOPIC_DURABILITY_AT: usize = 12;
pub const TOPIC_INTERVAL_AT: usize = 16;
pub const TOPIC_SEGMENT_BYTES_AT: usize = 24;
pub const TOPIC_MESSAGE_BYTES_AT: usize = 32;
pub const TOPIC_RETENTION_BYTES_AT: usize = 40;
pub const TOPIC_RETENTION_AGE_AT: usize = 48;
pub const TOPIC_CRC_AT: usize = 60;

/// Segment header.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TGLOGSEG";
pub const SEGMENT_HEADER_BYTES: usize = 32;
pub const SEGMENT_VERSION_AT: usize = 8;
pub const SEGMENT_HEADER_SIZE_AT: usize = 12;
pub const SEGMENT_BASE_AT: usize = 16;
pub const SEGMENT_CRC_AT: usize = 24;

/// Frame header.
pub const FRAME_HEADER_BYTES: usize = 32;
pub const FRAME_LEN_AT: usize = 0;
pub const FRAME_CRC_AT: usize = 4;
/// The CRC covers the frame from here to its end.
pub const FRAME_CRC_FROM: usize = 8;
pub const FRAME_KIND_AT: usize = 8;
pub const FRAME_FLAGS_AT: usize = 9;
pub const FRAME_COUNT_AT: usize = 12;
pub const FRAME_OFFSET_AT: usize = 16;
pub const FRAME_TIMESTAMP_AT: usize = 24;
/// The only frame kind of version 1: one or more records.
pub const FRAME_KIND_RECORDS: u8 = 1;
/// Most records one frame (one batch) may hold.
pub const FRAME_RECORDS_MAX: usize = 65_536;

/// Record entry inside a frame.
pub const ENTRY_HEADER_BYTES: usize = 8;
pub const ENTRY_PAYLOAD_LEN_AT: usize = 0;
pub const ENTRY_KEY_LEN_AT: usize = 4;
pub const ENTRY_HEADER_COUNT_AT: usize = 6;
/// Each message header: name size (2) and value size (4) before the bytes.
pub const MESSAGE_HEADER_PREFIX_BYTES: usize = 6;
/// Longest record key.
pub const RECORD_KEY_BYTES_MAX: usize = 1024;
/// Most headers on one message.
pub const MESSAGE_HEADERS_MAX: usize = 64;
/// Longest header name.
pub const MESSAGE_HEADER_NAME_BYTES_MAX: usize = 255;

/// `<base>.index`.
pub const INDEX_MAGIC: [u8; 8] = *b"TGLOGIDX";
pub const INDEX_HEADER_BYTES: usize = 32;
pub const INDEX_VERSION_AT: usize = 8;
pub const INDEX_COUNT_AT: usize = 12;
pub const INDEX_BASE_AT: usize = 16;
pub const INDEX_END_AT: usize = 24;
pub const INDEX_ENTRY_BYTES: usize = 8;
/// An index entry is added once frames have advanced this far past the last one.
pub const INDEX_INTERVAL_BYTES: usize = 4096;

/// Two-slot files (`checkpoint`, `<group>.offset`).
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"TGCHKPT1";
pub const OFFSET_MAGIC: [u8; 8] = *b"TGOFFSET";
pub const SLOT_FILE_HEADER_BYTES: usize = 16;
pub const SLOT_FILE_VERSION_AT: usize = 8;
/// The header's CRC covers its bytes 0..12 (magic and version).
pub const SLOT_FILE_HEADER_CRC_AT: usize = 12;
pub const SLOT_BYTES: usize = 32;
pub const SLOT_FILE_BYTES: usize = SLOT_FILE_HEADER_BYTES + 2 * SLOT_BYTES;
pub const SLOT_GENERATION_AT: usize = 0;
pub const SLOT_A_AT: usize = 8;
pub const SLOT_B_AT: usize = 16;
pub const SLOT_C_AT: usize = 24;
pub const SLOT_CRC_AT: usize = 28;
/// The highest generation a valid slot holds. A writer adds one per write,
/// so no file reaches it in practice; a slot above it was made up, and is
/// read as invalid (a generation near `u64::MAX` would wrap to 0, the
/// "never written" generation, and the write after it would be lost).
pub const SLOT_GENERATION_MAX: u64 = 1 << 62;

/// Header names starting with this are set by tollgate only.
pub const RESERVED_HEADER_PREFIX: &str = "tollgate.";
/// A message's priority for workers: one byte, 0 to [`PRIORITY_MAX`].
pub const PRIORITY_HEADER: &str = "tollgate.priority";
/// Highest priority.
pub const PRIORITY_MAX: u8 = 9;
/// When workers may take a message: `u64`, microseconds since the Unix epoch.
pub const DELIVER_AT_HEADER: &str = "tollgate.deliver-at";
/// Headers of a dead letter: where it came from and why (UTF-8 text,
/// numbers in decimal).
pub const DLQ_TOPIC_HEADER: &str = "tollgate.dlq.topic";
pub const DLQ_GROUP_HEADER: &str = "tollgate.dlq.group";
pub const DLQ_OFFSET_HEADER: &str = "tollgate.dlq.offset";
pub const DLQ_ATTEMPTS_HEADER: &str = "tollgate.dlq.attempts";
pub const DLQ_REASON_HEADER: &str = "tollgate.dlq.reason";
pub const DLQ_OMITTED_HEADER: &str = "tollgate.dlq.payload-omitted";
pub const DLQ_HEADERS_OMITTED_HEADER: &str = "tollgate.dlq.headers-omitted";
/// Longest delay of a message or a retry, in microseconds (30 days).
pub const DELAY_MAX_US: u64 = 30 * 24 * 3600 * 1_000_000;

/// A worker group's state file, `queues/<group>/state`.
pub const QSTATE_MAGIC: [u8; 8] = *b"TGQSTATE";
pub const QSTATE_VERSION_AT: usize = 8;
/// The header's CRC covers its other bytes: 0..12 and 16..40.
pub const QSTATE_CRC_AT: usize = 12;
pub const QSTATE_GENERATION_AT: usize = 16;
pub const QSTATE_LOW_AT: usize = 24;
pub const QSTATE_RANGES_AT: usize = 32;
pub const QSTATE_FACTS_AT: usize = 36;
pub const QSTATE_HEADER_BYTES: usize = 40;
/// A settled range: start, end, zero, and the CRC of its bytes 0..20.
pub const QSTATE_RANGE_BYTES: usize = 24;
pub const QSTATE_RANGE_CRC_AT: usize = 20;
/// A message: offset, attempts, flags, retry time, zero, and the CRC of its
/// bytes 0..28.
pub const QSTATE_FACT_BYTES: usize = 32;
pub const QSTATE_FACT_CRC_AT: usize = 28;

/// A worker group's journal, `queues/<group>/journal`.
pub const QJOURNAL_MAGIC: [u8; 8] = *b"TGQJOURN";
pub const QJOURNAL_VERSION_AT: usize = 8;
pub const QJOURNAL_HEADER_GENERATION_AT: usize = 16;
pub const QJOURNAL_HEADER_CRC_AT: usize = 28;
pub const QJOURNAL_HEADER_BYTES: usize = 32;
/// Two synced marks follow the header, each the count of entries known to be
/// on disk (8 bytes), zero (4), and a CRC (4) of its bytes 0..12 followed by
/// the header's generation.
pub const QJOURNAL_MARKS_AT: usize = 32;
pub const QJOURNAL_MARK_BYTES: usize = 16;
pub const QJOURNAL_MARK_CRC_AT: usize = 12;
/// Entries start after the marks.
pub const QJOURNAL_ENTRIES_AT: usize = QJOURNAL_MARKS_AT + 2 * QJOURNAL_MARK_BYTES;
pub const QJOURNAL_ENTRY_BYTES: usize = 32;
/// Bytes mapped for a worker-group journal: when it is full, the group compacts.
pub const JOURNAL_MAP_BYTES: usize = 4 << 20;
pub const QJOURNAL_CRC_AT: usize = 0;
/// A journal entry's CRC covers it from here to its end.
pub const QJOURNAL_CRC_FROM: usize = 4;
pub const QJOURNAL_KIND_AT: usize = 4;
pub const QJOURNAL_GENERATION_AT: usize = 8;
pub const QJOURNAL_OFFSET_AT: usize = 16;
pub const QJOURNAL_VALUE_AT: usize = 24;
pub const QJOURNAL_DELIVERED: u8 = 1;
pub const QJOURNAL_SETTLED: u8 = 2;
pub const QJOURNAL_NACKED: u8 = 3;
pub const QJOURNAL_REJECTED: u8 = 4;

/// Longest topic name, in bytes (a file name).
pub const NAME_BYTES_MAX: usize = 255;
/// Longest group name, in bytes: its file name adds `.offset`.
pub const GROUP_NAME_BYTES_MAX: usize = NAME_BYTES_MAX - OFFSET_SUFFIX.len();

/// File names inside a data directory.
pub const META_FILE: &str = "tollgate.meta";
pub const LOCK_FILE: &str = "tollgate.lock";
pub const TOPICS_DIR: &str = "topics";
pub const TRASH_DIR: &str = "trash";
pub const TOPIC_FILE: &str = "topic.conf";
pub const CHECKPOINT_FILE: &str = "checkpoint";
pub const GROUPS_DIR: &str = "groups";
pub const SEGMENT_SUFFIX: &str = ".log";
pub const INDEX_SUFFIX: &str = ".index";
pub const OFFSET_SUFFIX: &str = ".offset";
/// Added to a small file's name while it is written, before the rename
/// that makes it whole (`write_file_atomic`).
pub const TMP_SUFFIX: &str = ".tmp";
pub const QUEUES_DIR: &str = "queues";
pub const QSTATE_FILE: &str = "state";
pub const QJOURNAL_FILE: &str = "journal";
/// Digits of the base offset in a segment's file name.
pub const SEGMENT_NAME_DIGITS: usize = 20;

const _: () = assert!(FRAME_TIMESTAMP_AT + 8 == FRAME_HEADER_BYTES);
const _: () = assert!(SEGMENT_CRC_AT + 8 == SEGMENT_HEADER_BYTES);
const _: () = assert!(SLOT_CRC_AT + 4 == SLOT_BYTES);
const _: () = assert!(META_CRC_AT + 4 == META_BYTES);
const _: () = assert!(TOPIC_CRC_AT + 4 == TOPIC_BYTES);
const _: () = assert!(FRAME_RECORDS_MAX <= u32::MAX as usize);
const _: () = assert!(RECORD_KEY_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(MESSAGE_HEADERS_MAX <= u16::MAX as usize);
const _: () = assert!(MESSAGE_HEADER_NAME_BYTES_MAX <= u16::MAX as usize);

/// Reads a little-endian `u16` at `at`. The caller has checked the bounds.
#[inline]
pub fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

/// Reads a little-endian `u32` at `at`. The caller has checked the bounds.
#[inline]
pub fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

/// Reads a little-endian `u64` at `at`. The caller has checked the bounds.
#[inline]
pub fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

/// Writes a little-endian `u16` at `at`.
#[inline]
pub fn put_u16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

/// Writes a little-endian `u32` at `at`.
#[inline]
pub fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Writes a little-endian `u64` at `at`.
#[inline]
pub fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Whether every byte is zero: the test of what follows a segment's last
/// frame. An OR over blocks rather than a test per byte: the compiler
/// vectorises it, and a fuzz target's compare tracing then sees one test
/// per block instead of one per byte of a mostly empty segment.
pub fn all_zero(bytes: &[u8]) -> bool {
    bytes.chunks(256).all(|block| block.iter().fold(0, |acc, &b| acc | b) == 0)
}

/// CRC-32 of `bytes`.
#[inline]
pub fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// CRC-32 of `parts`, one after the other.
pub fn crc_of(parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

/// Where a header that fails its CRC is reported damaged: at its version
/// field (`version_at`) if the header checks once this build's version is
/// put there, so one flipped bit in the version reads as damage at that
/// field, never as a newer version; otherwise at its CRC field (`crc_at`):
/// the CRC, or a byte it covers, is damaged. `checks` is the header's CRC
/// check.
pub fn header_damage_at(header: &[u8], version_at: usize, crc_at: usize, checks: impl Fn(&[u8]) -> bool) -> u64 {
    let mut restored = header.to_vec();
    if restored.len() >= version_at + 4 {
        put_u32(&mut restored, version_at, FORMAT_VERSION);
        if checks(&restored) {
            return version_at as u64;
        }
    }
    crc_at as u64
}

/// Microseconds since the Unix epoch, now (0 before 1970).
#[cfg(unix)]
#[inline]
pub fn now_us() -> u64 {
    // `SystemTime::now().duration_since(UNIX_EPOCH)` costs ~80 instructions
    // around the clock read, a fifth of a publish; this costs ~10.
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `clock_gettime` writes only the `timespec` it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    if rc != 0 || ts.tv_sec < 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Microseconds since the Unix epoch, now (0 before 1970).
#[cfg(not(unix))]
pub fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// A segment's or index's file name for base offset `base`.
pub fn segment_file_name(base: u64, suffix: &str) -> String {
    format!("{base:0width$}{suffix}", width = SEGMENT_NAME_DIGITS)
}

/// The base offset in a segment's or index's file name, if it is one.
pub fn parse_segment_file_name(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    //! Checks these constants against the tables of `docs/FORMAT.md`, so the
    //! document and the code cannot drift apart.

    use super::*;

    const DOC: &str = include_str!("../../docs/FORMAT.md");

    /// The rows `| offset | size | field |` of the table under `heading`.
    fn table(heading: &str) -> Vec<(usize, String, String)> {
        let start = DOC.find(heading).unwrap_or_else(|| panic!("FORMAT.md has no section {heading:?}"));
        let mut rows = Vec::new();
        let mut in_table = false;
        for line in DOC[start..].lines().skip(1) {
            if line.starts_with('#') {
                break;
            }
            if !line.starts_with('|') {
                if in_table {
                    break;
                }
                continue;
            }
            in_table = true;
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            if let Ok(offset) = cells[0].parse::<usize>() {
                rows.push((offset, cells[1].to_owned(), cells[2].to_owned()));
            } else if cells[0].starts_with("32+8E") {
                rows.push((usize::MAX, cells[1].to_owned(), cells[2].to_owned()));
            }
        }
        assert!(!rows.is_empty(), "no table rows under {heading:?}");
        rows
    }

    /// The documented offset of the field whose description starts with `field`.
    fn at(rows: &[(usize, String, String)], field: &str) -> usize {
        rows.iter().find(|(_, _, f)| f.starts_with(field)).unwrap_or_else(|| panic!("no field {field:?}")).0
    }

    fn size(rows: &[(usize, String, String)], field: &str) -> String {
        rows.iter().find(|(_, _, f)| f.starts_with(field)).unwrap_or_else(|| panic!("no field {field:?}")).1.clone()
    }

    fn magic(rows: &[(usize, String, String)]) -> String {
        let field = &rows.iter().find(|(_, _, f)| f.starts_with("magic")).expect("magic row").2;
        field.split('`').nth(1).expect("magic in backquotes").to_owned()
    }

    #[test]
    fn title_names_the_format_version() {
        assert!(DOC.starts_with(&format!("# On-disk format, version {FORMAT_VERSION}\n")));
    }

    #[test]
    fn meta_file_matches_document() {
        let rows = table("## Engine file `tollgate.meta` (16 bytes)");
        assert_eq!(magic(&rows).as_bytes(), META_MAGIC);
        assert_eq!(at(&rows, "format version"), META_VERSION_AT);
        assert_eq!(at(&rows, "CRC of bytes 0..12"), META_CRC_AT);
        assert_eq!(META_BYTES, 16);
    }

    #[test]
    fn topic_file_matches_document() {
        let rows = table("## Topic file `topic.conf` (64 bytes)");
        assert_eq!(magic(&rows).as_bytes(), TOPIC_MAGIC);
        assert_eq!(at(&rows, "format version"), TOPIC_VERSION_AT);
        assert_eq!(at(&rows, "durability"), TOPIC_DURABILITY_AT);
        assert_eq!(at(&rows, "flush interval"), TOPIC_INTERVAL_AT);
        assert_eq!(at(&rows, "segment size limit"), TOPIC_SEGMENT_BYTES_AT);
        assert_eq!(at(&rows, "largest message"), TOPIC_MESSAGE_BYTES_AT);
        assert_eq!(at(&rows, "retention by bytes"), TOPIC_RETENTION_BYTES_AT);
        assert_eq!(at(&rows, "retention by age"), TOPIC_RETENTION_AGE_AT);
        assert_eq!(at(&rows, "CRC of bytes 0..60"), TOPIC_CRC_AT);
        assert_eq!(TOPIC_BYTES, 64);
    }

    #[test]
    fn segment_header_matches_document() {
        let rows = table("### Segment header (32 bytes)");
        assert_eq!(magic(&rows).as_bytes(), SEGMENT_MAGIC);
        assert_eq!(at(&rows, "format version"), SEGMENT_VERSION_AT);
        assert_eq!(at(&rows, "header size"), SEGMENT_HEADER_SIZE_AT);
        assert!(size(&rows, "header size").len() == 1 && rows.iter().any(|(_, _, f)| f.contains("`32`")));
        assert_eq!(at(&rows, "base offset"), SEGMENT_BASE_AT);
        assert_eq!(at(&rows, "CRC of bytes 0..24"), SEGMENT_CRC_AT);
        assert_eq!(SEGMENT_HEADER_BYTES, 32);
    }

    #[test]
    fn frame_header_matches_document() {
        let rows = table("### Frame");
        assert_eq!(at(&rows, "frame size"), FRAME_LEN_AT);
        assert_eq!(at(&rows, "CRC of bytes 8..L"), FRAME_CRC_AT);
        assert_eq!(FRAME_CRC_FROM, 8);
        assert_eq!(at(&rows, "kind"), FRAME_KIND_AT);
        assert!(size(&rows, "kind") == "1" && DOC.contains(&format!("kind: {FRAME_KIND_RECORDS} = records")));
        assert_eq!(at(&rows, "flags"), FRAME_FLAGS_AT);
        assert_eq!(at(&rows, "record count"), FRAME_COUNT_AT);
        assert!(DOC.contains(&format!("record count N, 1..={FRAME_RECORDS_MAX}")));
        assert_eq!(at(&rows, "offset of the first record"), FRAME_OFFSET_AT);
        assert_eq!(at(&rows, "timestamp"), FRAME_TIMESTAMP_AT);
        assert_eq!(at(&rows, "N record entries"), FRAME_HEADER_BYTES);
    }

    #[test]
    fn record_entry_matches_document() {
        let rows = table("### Record entry");
        assert_eq!(at(&rows, "payload size"), ENTRY_PAYLOAD_LEN_AT);
        assert_eq!(at(&rows, "key size"), ENTRY_KEY_LEN_AT);
        assert!(DOC.contains(&format!("at most {RECORD_KEY_BYTES_MAX}")));
        assert_eq!(at(&rows, "header count"), ENTRY_HEADER_COUNT_AT);
        assert!(DOC.contains(&format!("header count H, at most {MESSAGE_HEADERS_MAX}")));
        assert_eq!(at(&rows, "key bytes"), ENTRY_HEADER_BYTES);
        assert!(DOC.contains(&format!(
            "name size (2), value size (4), name bytes (UTF-8, 1..={MESSAGE_HEADER_NAME_BYTES_MAX})"
        )));
        assert_eq!(MESSAGE_HEADER_PREFIX_BYTES, 2 + 4);
    }

    #[test]
    fn index_file_matches_document() {
        let rows = table("## Index file `<base>.index`");
        assert_eq!(magic(&rows).as_bytes(), INDEX_MAGIC);
        assert_eq!(at(&rows, "format version"), INDEX_VERSION_AT);
        assert_eq!(at(&rows, "entry count"), INDEX_COUNT_AT);
        assert_eq!(at(&rows, "base offset"), INDEX_BASE_AT);
        assert_eq!(at(&rows, "end of the segment"), INDEX_END_AT);
        assert_eq!(at(&rows, "entries"), INDEX_HEADER_BYTES);
        assert_eq!(size(&rows, "entries"), format!("{INDEX_ENTRY_BYTES}·E"));
        assert!(DOC.contains(&format!("at least {INDEX_INTERVAL_BYTES} bytes after")));
    }

    #[test]
    fn slot_files_match_document() {
        let rows = table("## Two-slot files");
        assert!(rows.iter().any(|(_, _, f)| f.contains(std::str::from_utf8(&CHECKPOINT_MAGIC).unwrap())));
        assert!(rows.iter().any(|(_, _, f)| f.contains(std::str::from_utf8(&OFFSET_MAGIC).unwrap())));
        assert_eq!(at(&rows, "format version"), SLOT_FILE_VERSION_AT);
        assert_eq!(at(&rows, "CRC of bytes 0..12"), SLOT_FILE_HEADER_CRC_AT);
        assert_eq!(at(&rows, "slot 0"), SLOT_FILE_HEADER_BYTES);
        assert_eq!(at(&rows, "slot 1"), SLOT_FILE_HEADER_BYTES + SLOT_BYTES);
        assert!(DOC.contains(&format!("({SLOT_FILE_BYTES} bytes)")));
        let slot = table("Slot:");
        assert_eq!(at(&slot, "generation"), SLOT_GENERATION_AT);
        assert_eq!(at(&slot, "value A"), SLOT_A_AT);
        assert_eq!(at(&slot, "value B"), SLOT_B_AT);
        assert_eq!(at(&slot, "value C"), SLOT_C_AT);
        assert_eq!(at(&slot, "CRC of slot bytes 0..28"), SLOT_CRC_AT);
    }

    #[test]
    fn queue_files_match_document() {
        let state = table("## Worker group state");
        assert_eq!(magic(&state), std::str::from_utf8(&QSTATE_MAGIC).unwrap());
        assert_eq!(at(&state, "format version"), QSTATE_VERSION_AT);
        assert_eq!(at(&state, "CRC of header bytes 0..12 and 16..40"), QSTATE_CRC_AT);
        assert_eq!(QSTATE_HEADER_BYTES, 40);
        assert_eq!(at(&state, "generation G"), QSTATE_GENERATION_AT);
        assert_eq!(at(&state, "low-water mark"), QSTATE_LOW_AT);
        assert_eq!(at(&state, "settled range count"), QSTATE_RANGES_AT);
        assert_eq!(at(&state, "message count"), QSTATE_FACTS_AT);
        assert_eq!(at(&state, "settled ranges"), QSTATE_HEADER_BYTES);
        assert_eq!(size(&state, "settled ranges"), format!("{QSTATE_RANGE_BYTES}·R"));
        let range = table("Settled range (sorted");
        assert_eq!(at(&range, "CRC of range bytes 0..20"), QSTATE_RANGE_CRC_AT);
        assert_eq!(QSTATE_RANGE_CRC_AT + 4, QSTATE_RANGE_BYTES);
        let message = table("Message (sorted");
        assert_eq!(at(&message, "CRC of message bytes 0..28"), QSTATE_FACT_CRC_AT);
        assert_eq!(QSTATE_FACT_CRC_AT + 4, QSTATE_FACT_BYTES);
        assert!(DOC.contains(&format!("M messages ({QSTATE_FACT_BYTES} bytes each)")));

        let journal = table("## Worker group journal");
        assert_eq!(magic(&journal), std::str::from_utf8(&QJOURNAL_MAGIC).unwrap());
        assert_eq!(at(&journal, "format version"), QJOURNAL_VERSION_AT);
        assert_eq!(at(&journal, "generation"), QJOURNAL_HEADER_GENERATION_AT);
        assert_eq!(at(&journal, "CRC of header bytes 0..28"), QJOURNAL_HEADER_CRC_AT);
        assert_eq!(QJOURNAL_HEADER_CRC_AT + 4, QJOURNAL_HEADER_BYTES);
        assert_eq!(at(&journal, "synced mark 0"), QJOURNAL_MARKS_AT);
        assert_eq!(at(&journal, "synced mark 1"), QJOURNAL_MARKS_AT + QJOURNAL_MARK_BYTES);
        assert_eq!(at(&journal, "entries"), QJOURNAL_ENTRIES_AT);
        let mark = table("Synced mark:");
        assert_eq!(at(&mark, "CRC of mark bytes 0..12"), QJOURNAL_MARK_CRC_AT);
        assert_eq!(QJOURNAL_MARK_CRC_AT + 4, QJOURNAL_MARK_BYTES);
        let entry = table("Entry:");
        assert_eq!(at(&entry, "CRC of entry bytes 4..32"), QJOURNAL_CRC_AT);
        assert_eq!(QJOURNAL_CRC_FROM, 4);
        assert_eq!(at(&entry, "kind"), QJOURNAL_KIND_AT);
        assert!(size(&entry, "value") == "8" && at(&entry, "value") + 8 == QJOURNAL_ENTRY_BYTES);
        assert_eq!(at(&entry, "generation"), QJOURNAL_GENERATION_AT);
        assert_eq!(at(&entry, "offset of the message"), QJOURNAL_OFFSET_AT);
        assert_eq!(at(&entry, "value"), QJOURNAL_VALUE_AT);
        let kinds = format!(
            "{QJOURNAL_DELIVERED} delivered, {QJOURNAL_SETTLED} settled, {QJOURNAL_NACKED} nacked, {QJOURNAL_REJECTED} rejected"
        );
        assert!(DOC.contains(&kinds));
        assert!(DOC.contains(&format!("up to\n{} MiB", JOURNAL_MAP_BYTES >> 20)));

        for name in [
            PRIORITY_HEADER,
            DELIVER_AT_HEADER,
            DLQ_TOPIC_HEADER,
            DLQ_GROUP_HEADER,
            DLQ_OFFSET_HEADER,
            DLQ_ATTEMPTS_HEADER,
            DLQ_REASON_HEADER,
            DLQ_OMITTED_HEADER,
            DLQ_HEADERS_OMITTED_HEADER,
        ] {
            assert!(DOC.contains(&format!("`{name}`")), "{name} is not in FORMAT.md");
        }
        assert!(DOC.contains(&format!("0–{PRIORITY_MAX}")));
        assert_eq!(SLOT_GENERATION_MAX, 1 << 62);
        assert!(DOC.contains("generation, 1 to 2^62"));
        for name in [QSTATE_FILE, QJOURNAL_FILE] {
            assert!(DOC.contains(&format!("{QUEUES_DIR}/<group>/{name}")), "{name} is not in FORMAT.md");
        }
    }

    #[test]
    fn names_match_document() {
        for name in [META_FILE, LOCK_FILE, TOPIC_FILE, CHECKPOINT_FILE] {
            assert!(DOC.contains(name), "{name} is not in FORMAT.md");
        }
        for dir in [TOPICS_DIR, TRASH_DIR, GROUPS_DIR] {
            assert!(DOC.contains(&format!("/{dir}/")), "{dir}/ is not in FORMAT.md");
        }
        assert!(DOC.contains(&format!("{SEGMENT_NAME_DIGITS} decimal digits")));
        assert!(DOC.contains(&format!("1–{NAME_BYTES_MAX} bytes")));
        assert!(DOC.contains(&format!("groups 1–{GROUP_NAME_BYTES_MAX}, as `{OFFSET_SUFFIX}` is added")));
        assert_eq!(segment_file_name(42, SEGMENT_SUFFIX), "00000000000000000042.log");
        assert_eq!(parse_segment_file_name("00000000000000000042.index", INDEX_SUFFIX), Some(42));
        assert_eq!(parse_segment_file_name("42.log", SEGMENT_SUFFIX), None);
    }
}
