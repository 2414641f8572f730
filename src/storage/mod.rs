//! The storage seam: every file-system call the log and the queues make goes
//! through [`Storage`], so that tests can swap the operating system for a
//! simulated disk that loses unsynced writes on a power cut.
//!
//! - this file: the [`ReadStorage`], [`Storage`], [`ReadAt`] and [`MappedFile`]
//!   traits, and [`Mapped`],
//!   the shared mapping that segments, journals and the `Bytes` handed to
//!   readers point into (the mapping `unsafe`);
//! - `os.rs`: [`OsStorage`], the real thing: `std::fs`, `fallocate`, `memmap2`;
//! - `sim.rs`: `SimDisk`, a disk with live and durable images for power-cut
//!   tests (feature `sim`).

mod os;
#[cfg(feature = "sim")]
mod sim;

pub(crate) use os::OsStorage;
#[cfg(feature = "sim")]
pub(crate) use sim::SimClock;
#[cfg(feature = "sim")]
pub use sim::SimDisk;

use std::any::Any;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// The file-system operations that only read, as `inspect` needs them: it
/// holds a `dyn ReadStorage`, so it cannot write a byte by construction.
///
/// Paths are absolute or relative to the process's working directory, exactly
/// as the engine built them. Below the data directory, no symbolic link is
/// followed (`OsStorage`; a `SimDisk` has none): an operation whose path
/// meets one fails with an error whose source is a
/// [`SymlinkError`](crate::error::SymlinkError) naming it, and
/// [`exists`](ReadStorage::exists) and [`is_dir`](ReadStorage::is_dir)
/// answer `true` for it, so that the link is refused where the caller uses
/// it rather than passed over in silence.
pub(crate) trait ReadStorage: Send + Sync + fmt::Debug {
    /// The names of the entries of a directory, in no particular order.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// Whether a directory exists at `path`.
    fn is_dir(&self, path: &Path) -> bool;
    /// The length of a file in bytes.
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// The whole content of a file.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Opens a file for positional reads. The handle goes on reading the
    /// file it opened when its name is removed or replaced, as a file
    /// descriptor does.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadAt>>;
    /// An identity of the file or directory at `path` that changes when it
    /// is deleted and created again under the same name (device and inode);
    /// `None` where the system has none.
    fn identity(&self, path: &Path) -> io::Result<Option<(u64, u64)>>;
    /// Whether someone holds the lock [`Storage::lock_file`] takes on
    /// `path`, found without taking it (where the system allows: see
    /// `OsStorage`). `false` if the file does not exist; `true`, the
    /// cautious answer, if it cannot be examined.
    fn lock_held(&self, path: &Path) -> bool;
}

/// A file open for positional reads ([`ReadStorage::open_read`]).
pub(crate) trait ReadAt: Send + Sync + fmt::Debug {
    /// Current length of the file.
    fn len(&self) -> io::Result<u64>;
    /// Reads bytes from `position` into `buf`; returns how many (0 at the
    /// end of the file).
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize>;
}

/// File-system operations, as the log needs them: [`ReadStorage`]'s, and
/// those that write.
pub(crate) trait Storage: ReadStorage {
    /// `mkdir -p`.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates or replaces a file with `bytes`, and syncs it (not its directory).
    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Atomically renames a file or directory.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Deletes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Deletes a directory and everything in it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes a directory's entries (creates, renames, deletes) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// The simulated clock engines on this storage read
    /// ([`SimDisk::with_simulated_clock`]); `None`: the system's clocks.
    #[cfg(feature = "sim")]
    fn sim_clock(&self) -> Option<Arc<SimClock>> {
        None
    }
    /// Takes an exclusive lock on `path` (created if missing) for as long as
    /// the returned value lives; `Ok(None)` if someone else holds it.
    fn lock_file(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>>;
    /// Creates `to`, which must not exist, holding the first `len` bytes
    /// of `from`, and syncs it (not its directory). Fails with
    /// `UnexpectedEof` if `from` is shorter. For backups: this default reads
    /// the bytes into memory; [`OsStorage`] streams them.
    fn copy_file(&self, from: &Path, to: &Path, len: u64) -> io::Result<()> {
        let source = self.open_read(from)?;
        let mut bytes = vec![0; usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::FileTooLarge))?];
        let mut done = 0;
        while done < bytes.len() {
            match source.read_at(&mut bytes[done..], done as u64)? {
                0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file is shorter than expected")),
                n => done += n,
            }
        }
        if self.exists(to) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        self.write_file(to, &bytes)
    }
    /// Opens (or, with `create`, creates empty) a file and maps `map_len`
    /// bytes of it, read-write and shared. The mapping may be longer than the
    /// file; bytes past the file's end must not be touched.
    fn open_mapped(&self, path: &Path, create: bool, map_len: usize) -> io::Result<Arc<dyn MappedFile>>;
}

/// A file with a writable shared mapping of its first `map_len()` bytes.
pub(crate) trait MappedFile: Send + Sync + fmt::Debug {
    /// First byte of the mapping. Valid for `map_len()` bytes while `self`
    /// lives; only bytes below the file's length may be accessed.
    fn ptr(&self) -> *mut u8;
    /// Length of the mapping.
    fn map_len(&self) -> usize;
    /// Current length of the file.
    fn len(&self) -> io::Result<u64>;
    /// Makes the file at least `len` bytes long with its blocks allocated, so
    /// that writes through the mapping below `len` never need new space.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Truncates or extends the file to `len` bytes; new bytes read as zero.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Best effort: maps the pages of `[at, at + len)` (below the file's
    /// length) writable now, so that writes to them later take no page
    /// faults. Changes no bytes.
    fn prefault(&self, at: usize, len: usize);
    /// Makes the mapped bytes in `[at, at + len)` durable (`msync`).
    fn flush(&self, at: usize, len: usize) -> io::Result<()>;
    /// Makes the whole file, its length included, durable (`fsync`).
    fn sync(&self) -> io::Result<()>;
}

/// A mapped file shared by a segment, its readers and the `Bytes` they hold.
///
/// The methods that touch mapped bytes are `unsafe` because the mapping is
/// shared memory: soundness rests on the log's protocol, stated in each
/// method's `# Safety`, that a range is written by one writer before it is
/// published (Release) and never written again while readers may see it.
#[derive(Clone, Debug)]
pub(crate) struct Mapped {
    file: Arc<dyn MappedFile>,
    /// `file.ptr()` and `file.map_len()`, cached: they are fixed for the
    /// mapping's life, and reading them through the trait object on every
    /// access shows up in a publish's instruction count.
    ptr: *mut u8,
    len: usize,
}

// SAFETY: `ptr` points into the mapping owned by `file` (which is Send and
// Sync); access to the bytes is governed by the unsafe methods' contracts.
unsafe impl Send for Mapped {}
// SAFETY: as above.
unsafe impl Sync for Mapped {}

impl Mapped {
    pub(crate) fn new(file: Arc<dyn MappedFile>) -> Self {
        let (ptr, len) = (file.ptr(), file.map_len());
        Self { file, ptr, len }
    }

    pub(crate) fn file(&self) -> &dyn MappedFile {
        &*self.file
    }

    #[inline]
    fn check(&self, at: usize, len: usize) {
        assert!(at.checked_add(len).is_some_and(|end| end <= self.len), "range outside the mapping");
    }

    /// The mapped bytes `[at, at + len)`, to write.
    ///
    /// # Safety
    ///
    /// The range lies below the file's (allocated) length, and no other
    /// reference to any byte of it exists while the returned slice lives.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_mut(&self, at: usize, len: usize) -> &mut [u8] {
        self.check(at, len);
        // SAFETY: in bounds of the mapping (checked), backed by the file
        // (caller), and exclusive (caller).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), len) }
    }

    /// The mapped bytes `[at, at + len)`, to read.
    ///
    /// # Safety
    ///
    /// The range lies below the file's length and nobody writes it while the
    /// returned slice lives.
    #[inline]
    pub(crate) unsafe fn slice(&self, at: usize, len: usize) -> &[u8] {
        self.check(at, len);
        // SAFETY: in bounds (checked), backed and not written (caller).
        unsafe { std::slice::from_raw_parts(self.ptr.add(at), len) }
    }

    /// The mapped bytes `[at, at + len)` as `Bytes` that keep the mapping alive.
    ///
    /// # Safety
    ///
    /// As [`Mapped::slice`], for as long as any clone of the `Bytes` lives:
    /// the range is never written again (the log never rewrites published
    /// frames; recovery and truncation run before any reader exists).
    pub(crate) unsafe fn bytes(&self, at: usize, len: usize) -> bytes::Bytes {
        self.check(at, len);
        bytes::Bytes::from_owner(MappedSlice { file: self.clone(), at, len })
    }
}

/// Owner of a `Bytes` over part of a mapping.
struct MappedSlice {
    file: Mapped,
    at: usize,
    len: usize,
}

impl AsRef<[u8]> for MappedSlice {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: built only by `Mapped::bytes`, whose caller guarantees the
        // range stays backed and unwritten while this owner lives.
        unsafe { self.file.slice(self.at, self.len) }
    }
}
