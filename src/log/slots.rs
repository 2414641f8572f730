//! Small files with a checksum: the two-slot files (`checkpoint`,
//! `<group>.offset`) that are rewritten in place crash-safely, and the
//! write-once files (`tollgate.meta`, `topic.conf`) that are written to a
//! temporary name and renamed.

use std::path::{Path, PathBuf};

use super::format::*;
use crate::error::{Corruption, IoError};
use crate::storage::{Mapped, Storage};

/// A value a two-slot file holds. On disk every slot has the same three
/// words (A: 8 bytes, B: 8 bytes, C: 4 bytes; `docs/FORMAT.md`); each kind of
/// file gives them its own meaning, and its own magic.
pub(crate) trait SlotValue: Copy + std::fmt::Debug {
    /// The file's magic: which kind of slot file it is.
    const MAGIC: [u8; 8];
    /// The value as its slot's words A, B and C.
    fn to_words(self) -> (u64, u64, u32);
    /// The value a valid slot's words A, B and C hold.
    fn from_words(a: u64, b: u64, c: u32) -> Self;
}

/// What a topic's `checkpoint` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Checkpoint {
    /// Base offset of the first segment not known to be synced: recovery
    /// trusts the segments below it (word A).
    pub recovery_point: u64,
    /// Set by a clean shutdown, for the active segment, which starts at
    /// `recovery_point`; cleared by the next open.
    pub clean: Option<CleanMark>,
}

/// Where the log ended at a clean shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CleanMark {
    /// The offset the next publish gets (word B).
    pub next_offset: u64,
    /// Position after the active segment's last frame (word C; never 0,
    /// which marks an unclean checkpoint, as the segment header comes first).
    pub end: u32,
}

impl SlotValue for Checkpoint {
    const MAGIC: [u8; 8] = CHECKPOINT_MAGIC;

    fn to_words(self) -> (u64, u64, u32) {
        match self.clean {
            Some(mark) => {
                debug_assert!(mark.end != 0, "a clean mark's end is past the segment header");
                (self.recovery_point, mark.next_offset, mark.end)
            }
            None => (self.recovery_point, 0, 0),
        }
    }

    fn from_words(a: u64, b: u64, c: u32) -> Self {
        let clean = (c != 0).then_some(CleanMark { next_offset: b, end: c });
        Checkpoint { recovery_point: a, clean }
    }
}

/// What a consumer group's `<group>.offset` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CommittedOffset {
    /// The next offset the group reads (word A).
    pub offset: u64,
    /// When it was committed, microseconds since the Unix epoch (word B).
    pub at_us: u64,
}

impl SlotValue for CommittedOffset {
    const MAGIC: [u8; 8] = OFFSET_MAGIC;

    fn to_words(self) -> (u64, u64, u32) {
        (self.offset, self.at_us, 0)
    }

    fn from_words(a: u64, b: u64, _: u32) -> Self {
        CommittedOffset { offset: a, at_us: b }
    }
}

/// Why a slot file could not be opened.
#[derive(Debug)]
pub(crate) enum SlotFileError {
    /// Wrong magic.
    Corrupt(Corruption),
    /// A version above [`FORMAT_VERSION`].
    Newer {
        path: PathBuf,
        found: u32,
    },
    Io(IoError),
}

/// A two-slot file holding `V`s, open for rewriting. One writer at a time
/// (`&mut self`).
#[derive(Debug)]
pub(crate) struct SlotFile<V> {
    path: PathBuf,
    map: Mapped,
    generation: u64,
    kind: std::marker::PhantomData<V>,
}

impl<V: SlotValue> SlotFile<V> {
    /// Opens the file, creating it (and syncing it and its directory) if it is
    /// missing or was left half-created by a crash. Returns the newest valid
    /// value, if any.
    pub fn open(storage: &dyn Storage, path: &Path) -> Result<(SlotFile<V>, Option<V>), SlotFileError> {
        let io = |op, e| SlotFileError::Io(IoError::new(op, path, e));
        let existing = storage.exists(path);
        if existing {
            let bytes = storage.read_file(path).map_err(|e| io("read", e))?;
            match check_slot_file::<V>(&bytes) {
                SlotFileCheck::HalfCreated => {}
                SlotFileCheck::NotSlotFile => {
                    return Err(SlotFileError::Corrupt(Corruption {
                        file: path.into(),
                        position: 0,
                        reason: NOT_SLOT_FILE,
                    }));
                }
                SlotFileCheck::DamagedHeader(position) => {
                    return Err(SlotFileError::Corrupt(Corruption {
                        file: path.into(),
                        position,
                        reason: DAMAGED_SLOT_HEADER,
                    }));
                }
                SlotFileCheck::Newer(found) => return Err(SlotFileError::Newer { path: path.into(), found }),
                SlotFileCheck::NoValidSlot => {
                    return Err(SlotFileError::Corrupt(Corruption {
                        file: path.into(),
                        position: SLOT_FILE_HEADER_BYTES as u64,
                        reason: NO_VALID_SLOT,
                    }));
                }
                SlotFileCheck::UsedUp(position) => {
                    return Err(SlotFileError::Corrupt(Corruption {
                        file: path.into(),
                        position,
                        reason: GENERATIONS_USED_UP,
                    }));
                }
                SlotFileCheck::Valid(newest) => {
                    let map = storage.open_mapped(path, false, SLOT_FILE_BYTES).map_err(|e| io("map", e))?;
                    // What we read may include a slot whose write was never
                    // synced (a failed write earlier in this boot). Make it
                    // durable before trusting it: the next write goes to the
                    // other slot, which may hold the only durable value.
                    map.sync().map_err(|e| io("sync", e))?;
                    let generation = newest.map_or(0, |(g, _)| g);
                    let file = SlotFile {
                        path: path.into(),
                        map: Mapped::new(map),
                        generation,
                        kind: std::marker::PhantomData,
                    };
                    return Ok((file, newest.map(|(_, v)| v)));
                }
            }
            storage.remove_file(path).map_err(|e| io("remove", e))?;
        }
        let file = storage.open_mapped(path, true, SLOT_FILE_BYTES).map_err(|e| io("create", e))?;
        let created = file.allocate(SLOT_FILE_BYTES as u64).map_err(|e| io("allocate", e)).and_then(|()| {
            let map = Mapped::new(file);
            {
                // SAFETY: the file was just created with SLOT_FILE_BYTES
                // allocated, and nobody else has it.
                let header = unsafe { map.slice_mut(0, SLOT_FILE_HEADER_BYTES) };
                encode_slot_file_header(header, V::MAGIC);
            }
            map.file().sync().map_err(|e| io("sync", e))?;
            let dir = path.parent().unwrap_or(Path::new("."));
            storage.sync_dir(dir).map_err(|e| SlotFileError::Io(IoError::new("sync", dir, e)))?;
            Ok(map)
        });
        match created {
            Ok(map) => Ok((SlotFile { path: path.into(), map, generation: 0, kind: std::marker::PhantomData }, None)),
            Err(e) => {
                // A full disk, say: a creation that failed leaves no file
                // (which, never written, would hold nothing anyway).
                let _ = storage.remove_file(path);
                Err(e)
            }
        }
    }

    /// Writes `value` to the slot not holding the current value, and syncs it.
    pub fn write(&mut self, value: V) -> Result<(), IoError> {
        // `open` refuses a file whose newest generation is the maximum, so
        // this one is valid: the reader takes it.
        let generation = self.generation + 1;
        debug_assert!(generation <= SLOT_GENERATION_MAX, "open refuses a used-up slot file");
        let at = SLOT_FILE_HEADER_BYTES + (generation % 2) as usize * SLOT_BYTES;
        {
            // SAFETY: the file is SLOT_FILE_BYTES long; `&mut self` makes this
            // the only writer, and nobody reads the mapping after open.
            let slot = unsafe { self.map.slice_mut(at, SLOT_BYTES) };
            encode_slot(slot, generation, value);
        }
        self.map.file().flush(at, SLOT_BYTES).map_err(|e| IoError::new("sync", &self.path, e))?;
        self.generation = generation;
        Ok(())
    }
}

/// Writes a slot file's header: `magic`, this build's version, their CRC.
pub(crate) fn encode_slot_file_header(header: &mut [u8], magic: [u8; 8]) {
    header[..8].copy_from_slice(&magic);
    put_u32(header, SLOT_FILE_VERSION_AT, FORMAT_VERSION);
    let crc = crc(&header[..SLOT_FILE_HEADER_CRC_AT]);
    put_u32(header, SLOT_FILE_HEADER_CRC_AT, crc);
}

/// Writes one slot.
pub(crate) fn encode_slot(slot: &mut [u8], generation: u64, value: impl SlotValue) {
    let (a, b, c) = value.to_words();
    put_u64(slot, SLOT_GENERATION_AT, generation);
    put_u64(slot, SLOT_A_AT, a);
    put_u64(slot, SLOT_B_AT, b);
    put_u32(slot, SLOT_C_AT, c);
    let crc = crc(&slot[..SLOT_CRC_AT]);
    put_u32(slot, SLOT_CRC_AT, crc);
}

/// Why a slot file with the wrong magic or size is refused.
pub(crate) const NOT_SLOT_FILE: &str = "not a tollgate slot file";

/// What `inspect` says of a file with a newer format version.
pub(crate) const NEWER_VERSION: &str = "the file has a newer format version";

/// Why a slot file whose header fails its CRC is refused.
pub(crate) const DAMAGED_SLOT_HEADER: &str = "the slot file's header fails its checksum";

/// Why a slot file whose two slots were both written and are both invalid
/// is refused.
pub(crate) const NO_VALID_SLOT: &str = "neither slot is valid";

/// Why a slot file whose newest slot holds the highest generation a valid
/// slot may hold is refused: no write could follow it (made up: a writer
/// adds one per write, and never gets there).
pub(crate) const GENERATIONS_USED_UP: &str = "the newest slot holds the highest generation: no write can follow it";

/// What the bytes of a two-slot file are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotFileCheck<V> {
    /// All zero (of any length): cut short while being created, so nothing
    /// was ever committed to it.
    HalfCreated,
    /// Too short, or the wrong magic.
    NotSlotFile,
    /// The header (magic and version) fails its CRC: damage at this byte
    /// (the version field's, if only it is wrong; see [`header_damage_at`]).
    DamagedHeader(u64),
    /// A version above [`FORMAT_VERSION`], under a valid CRC.
    Newer(u32),
    /// A slot file of this kind: its newest valid slot (generation, value),
    /// if any (none: never written, or its first write was torn).
    Valid(Option<(u64, V)>),
    /// Both slots were written and neither is valid: not what a crash leaves
    /// (a torn write damages one slot), so damage.
    NoValidSlot,
    /// The newest valid slot, at this byte, holds [`SLOT_GENERATION_MAX`]:
    /// no write could follow it (made up, as a writer adds one per write),
    /// so damage.
    UsedUp(u64),
}

/// Checks the whole content of a two-slot file of `V`s.
pub(crate) fn check_slot_file<V: SlotValue>(bytes: &[u8]) -> SlotFileCheck<V> {
    if bytes.iter().all(|&b| b == 0) {
        return SlotFileCheck::HalfCreated;
    }
    // The header is synced before any slot is written, so a zero header in
    // front of a written slot is not what a crash leaves: it is no slot
    // file (below, as its magic is wrong).

    if bytes.len() < SLOT_FILE_BYTES || bytes[..8] != V::MAGIC {
        return SlotFileCheck::NotSlotFile;
    }
    let header_checks = |h: &[u8]| crc(&h[..SLOT_FILE_HEADER_CRC_AT]) == u32_at(h, SLOT_FILE_HEADER_CRC_AT);
    let header = &bytes[..SLOT_FILE_HEADER_BYTES];
    if !header_checks(header) {
        return SlotFileCheck::DamagedHeader(header_damage_at(
            header,
            SLOT_FILE_VERSION_AT,
            SLOT_FILE_HEADER_CRC_AT,
            header_checks,
        ));
    }
    match u32_at(bytes, SLOT_FILE_VERSION_AT) {
        FORMAT_VERSION => {}
        found if found > FORMAT_VERSION => return SlotFileCheck::Newer(found),
        _ => return SlotFileCheck::DamagedHeader(SLOT_FILE_VERSION_AT as u64),
    }
    match newest_slot(bytes) {
        // A torn write damages the slot being written only: the other one
        // holds the value before it, or was never written (all zero).
        None if slot_written(bytes, 0) && slot_written(bytes, 1) => SlotFileCheck::NoValidSlot,
        Some((SLOT_GENERATION_MAX, _)) => {
            SlotFileCheck::UsedUp((SLOT_FILE_HEADER_BYTES + (SLOT_GENERATION_MAX % 2) as usize * SLOT_BYTES) as u64)
        }
        newest => SlotFileCheck::Valid(newest),
    }
}

/// Whether slot `index` of a whole slot file holds anything but zeros.
fn slot_written(file: &[u8], index: usize) -> bool {
    let at = SLOT_FILE_HEADER_BYTES + index * SLOT_BYTES;
    file[at..at + SLOT_BYTES].iter().any(|&b| b != 0)
}

/// The valid slot with the highest generation in a whole slot file.
pub(crate) fn newest_slot<V: SlotValue>(file: &[u8]) -> Option<(u64, V)> {
    (0..2).filter_map(|i| read_slot(file, i)).max_by_key(|(generation, _)| *generation)
}

/// Slot `index` (0 or 1) of a whole slot file, if it is valid: written
/// (generation not 0) and its CRC matches.
pub(crate) fn read_slot<V: SlotValue>(file: &[u8], index: usize) -> Option<(u64, V)> {
    let at = SLOT_FILE_HEADER_BYTES + index * SLOT_BYTES;
    let slot = file.get(at..at + SLOT_BYTES)?;
    let generation = u64_at(slot, SLOT_GENERATION_AT);
    let valid =
        (1..=SLOT_GENERATION_MAX).contains(&generation) && crc(&slot[..SLOT_CRC_AT]) == u32_at(slot, SLOT_CRC_AT);
    valid
        .then(|| (generation, V::from_words(u64_at(slot, SLOT_A_AT), u64_at(slot, SLOT_B_AT), u32_at(slot, SLOT_C_AT))))
}

/// Writes a whole small file crash-safely: to `<path>.tmp`, synced, renamed
/// over `path`, and the directory synced.
pub(crate) fn write_file_atomic(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(TMP_SUFFIX);
    let tmp = PathBuf::from(tmp);
    let written = storage
        .write_file(&tmp, bytes)
        .map_err(|e| IoError::new("write", &tmp, e))
        .and_then(|()| storage.rename(&tmp, path).map_err(|e| IoError::new("rename", path, e)));
    if let Err(e) = written {
        // A full disk, say: leave no temporary file behind.
        let _ = storage.remove_file(&tmp);
        return Err(e);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    storage.sync_dir(dir).map_err(|e| IoError::new("sync", dir, e))
}

/// Encodes `tollgate.meta`.
pub(crate) fn encode_meta() -> [u8; META_BYTES] {
    let mut bytes = [0; META_BYTES];
    bytes[..8].copy_from_slice(&META_MAGIC);
    put_u32(&mut bytes, META_VERSION_AT, FORMAT_VERSION);
    let crc = crc(&bytes[..META_CRC_AT]);
    put_u32(&mut bytes, META_CRC_AT, crc);
    bytes
}

/// What `tollgate.meta` says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum MetaCheck {
    /// Version 1.
    Valid,
    /// Not a tollgate meta file.
    Invalid,
    /// A newer version.
    Newer(u32),
}

/// Why a directory whose `tollgate.meta` fails its checks is refused.
pub(crate) const DAMAGED_META: &str =
    "its tollgate.meta is damaged (opening with RecoveryMode::Repair rewrites it if the rest is a tollgate layout)";

/// Checks `tollgate.meta`.
pub(crate) fn check_meta(bytes: &[u8]) -> MetaCheck {
    if bytes.len() != META_BYTES || bytes[..8] != META_MAGIC {
        return MetaCheck::Invalid;
    }
    if crc(&bytes[..META_CRC_AT]) != u32_at(bytes, META_CRC_AT) {
        return MetaCheck::Invalid;
    }
    match u32_at(bytes, META_VERSION_AT) {
        FORMAT_VERSION => MetaCheck::Valid,
        v if v > FORMAT_VERSION => MetaCheck::Newer(v),
        _ => MetaCheck::Invalid,
    }
}
