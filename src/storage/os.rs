//! [`OsStorage`]: the operating system's file system, through `std::fs`,
//! `posix_fallocate` and `memmap2` mappings, following no symbolic link
//! below the data directory.

use std::any::Any;
use std::collections::HashSet;
use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};
use parking_lot::Mutex;

use super::{MappedFile, ReadAt, ReadStorage, Storage};
use crate::error::SymlinkError;

/// The operating system's file system, for one data directory: `root`.
///
/// The root itself, and every path outside it, is taken as given (symbolic
/// links followed: where the data directory lives is the caller's choice).
/// Below the root, nothing is followed: an operation whose path meets a
/// symbolic link, on the way (`lstat` of each directory below the root) or
/// as the file or directory it opens (`O_NOFOLLOW`), fails with an error
/// whose source is a [`SymlinkError`] naming the link, before anything is
/// created or written. [`ReadStorage::exists`] and [`ReadStorage::is_dir`]
/// answer `true` for such a path, so that the caller goes on to an
/// operation that refuses it rather than skipping it in silence. Renames
/// and removals act on the entry named, never on what a link there points
/// to (the system calls do not follow the last component), and a directory
/// renamed away or removed must not be a link either.
///
/// The checks and the operations are separate system calls: a process that
/// swaps a directory for a link between the two can still make the engine
/// follow it. That is outside what the engine defends against: it assumes
/// nobody else writes inside the directory while it holds the lock. Under
/// the same assumption, a directory found to be a real one is remembered as
/// such (until it is renamed or removed through this storage), so that the
/// per-segment `stat`s of a topic's statistics and of retention cost one
/// `lstat` each, not one per directory on the way.
#[derive(Debug)]
pub(crate) struct OsStorage {
    root: PathBuf,
    /// Directories below `root` found to be real ones (not links).
    real_dirs: Mutex<HashSet<PathBuf>>,
}

impl OsStorage {
    /// The file system, for the data directory `root`.
    pub(crate) fn new(root: impl Into<PathBuf>) -> OsStorage {
        OsStorage { root: root.into(), real_dirs: Mutex::new(HashSet::new()) }
    }

    /// The part of `path` below the root; `None` for the root itself and
    /// for paths outside it.
    fn below<'a>(&self, path: &'a Path) -> Option<&'a Path> {
        path.strip_prefix(&self.root).ok().filter(|below| below.components().next().is_some())
    }

    /// Refuses `path` if a symbolic link is at one of its components below
    /// the root: up to its parent, or with `last` up to itself. Components
    /// from the first missing one on are not checked (nothing there to
    /// follow; the operation reports the missing directory).
    fn refuse_links(&self, path: &Path, last: bool) -> io::Result<()> {
        let Some(below) = self.below(path) else { return Ok(()) };
        let mut at = self.root.clone();
        let mut components = below.components().peekable();
        while let Some(component) = components.next() {
            let on_the_way = components.peek().is_some();
            if !last && !on_the_way {
                break;
            }
            at.push(component);
            if on_the_way && self.real_dirs.lock().contains(&at) {
                continue;
            }
            match std::fs::symlink_metadata(&at) {
                Ok(metadata) if metadata.file_type().is_symlink() => return Err(symlink_error(at)),
                Ok(metadata) if on_the_way && metadata.is_dir() => {
                    self.real_dirs.lock().insert(at.clone());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Forgets what is known of `path` and the directories under it: it
    /// was renamed or removed.
    fn forget(&self, path: &Path) {
        self.real_dirs.lock().retain(|dir| !dir.starts_with(path));
    }

    /// The metadata of `path`, a symbolic link below the root refused.
    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        if self.below(path).is_none() {
            return std::fs::metadata(path);
        }
        self.refuse_links(path, false)?;
        let metadata = std::fs::symlink_metadata(path)?;
        if metadata.file_type().is_symlink() {
            return Err(symlink_error(path.to_path_buf()));
        }
        Ok(metadata)
    }

    /// Whether `path` exists as `what` says, counting a path through a
    /// symbolic link below the root as there (see [`OsStorage`]).
    fn found(&self, path: &Path, what: impl Fn(&Metadata) -> bool) -> bool {
        match self.metadata(path) {
            Ok(metadata) => what(&metadata),
            Err(e) => is_symlink_error(&e),
        }
    }

    /// Opens the file `path` with `options`, refusing a symbolic link below
    /// the root on the way to it or at it.
    fn open(&self, path: &Path, options: &mut OpenOptions) -> io::Result<File> {
        if self.below(path).is_none() {
            return options.open(path);
        }
        self.refuse_links(path, false)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // The last component: refused by the kernel as it opens (ELOOP),
            // so a link put there after a check would not be followed either.
            options.custom_flags(libc::O_NOFOLLOW);
            options.open(path).map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => symlink_error(path.to_path_buf()),
                _ => e,
            })
        }
        #[cfg(not(unix))]
        {
            self.refuse_links(path, true)?;
            options.open(path)
        }
    }
}

/// The error of an operation refused because `path`, below the data
/// directory, is a symbolic link.
fn symlink_error(path: PathBuf) -> io::Error {
    io::Error::other(SymlinkError { path })
}

/// Whether `e` is a [`symlink_error`].
fn is_symlink_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<SymlinkError>())
}

impl ReadStorage for OsStorage {
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.refuse_links(path, true)?;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            // Names that are not UTF-8 were not made by tollgate: skip them
            // (a lossy name would not lead back to the file).
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        self.found(path, |_| true)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(self.metadata(path)?.len())
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open(path, OpenOptions::new().read(true))?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.found(path, Metadata::is_dir)
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadAt>> {
        Ok(Box::new(OsReadFile(self.open(path, OpenOptions::new().read(true))?)))
    }

    fn identity(&self, path: &Path) -> io::Result<Option<(u64, u64)>> {
        let metadata = self.metadata(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Ok(Some((metadata.dev(), metadata.ino())))
        }
        #[cfg(not(unix))]
        {
            let _ = metadata;
            Ok(None)
        }
    }

    /// Takes no lock: on Linux, it looks the file's device and inode up in
    /// the kernel's lock table, `/proc/locks`, so an engine opening the
    /// directory at the same moment is not disturbed. Two limits of that
    /// table: a lock held by a process in another PID namespace (a process
    /// in another container sharing the directory) is not listed, and
    /// neither is one whose locking process has exited while a child it
    /// forked keeps the descriptor, unless `/proc` belongs to the initial
    /// PID namespace.
    ///
    /// Where `/proc/locks` cannot be read (other systems, `/proc` not
    /// mounted), it falls back to probing with a shared, non-blocking lock
    /// on the file, released at once: an engine opening the directory in
    /// the same microseconds would then find it locked and fail to open.
    ///
    /// A lock file that is a symbolic link is not examined: `true`.
    fn lock_held(&self, path: &Path) -> bool {
        let metadata = match self.metadata(path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return false,
            Err(_) => return true,
        };
        #[cfg(target_os = "linux")]
        if let Ok(locks) = std::fs::read_to_string(PROC_LOCKS) {
            use std::os::unix::fs::MetadataExt;
            let id = (libc::major(metadata.dev()), libc::minor(metadata.dev()));
            // The kernel writes the table a page at a time, and each read
            // resumes at a line number: a lock released meanwhile shifts the
            // lines after it, so one line can be skipped. Missing from one
            // reading is not proof of absence; listed in any is proof of a
            // holder. The reads are cheap, so the table is read up to three
            // times before the answer is "not held".
            return flock_listed(&locks, id, metadata.ino())
                || (0..2).any(|_| {
                    std::fs::read_to_string(PROC_LOCKS).is_ok_and(|locks| flock_listed(&locks, id, metadata.ino()))
                });
        }
        let _ = metadata;
        probe_lock(self.open(path, OpenOptions::new().read(true)))
    }
}

impl Storage for OsStorage {
    /// Below the root, one directory at a time: `mkdir` does not follow a
    /// link where it would create, and an existing entry must be a
    /// directory, not a link to one.
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let Some(below) = self.below(path) else { return std::fs::create_dir_all(path) };
        std::fs::create_dir_all(&self.root)?;
        let mut at = self.root.clone();
        for component in below.components() {
            at.push(component);
            match std::fs::create_dir(&at) {
                Ok(()) => continue,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            let metadata = std::fs::symlink_metadata(&at)?;
            if metadata.file_type().is_symlink() {
                return Err(symlink_error(at));
            }
            if !metadata.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", at.display()),
                ));
            }
        }
        Ok(())
    }

    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = self.open(path, OpenOptions::new().write(true).create(true).truncate(true))?;
        file.write_all(bytes)?;
        file.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.refuse_links(from, true)?;
        self.refuse_links(to, false)?;
        let renamed = std::fs::rename(from, to);
        self.forget(from);
        self.forget(to);
        renamed
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.refuse_links(path, false)?;
        std::fs::remove_file(path)
    }

    /// `std::fs::remove_dir_all` follows no link inside the tree it removes.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.refuse_links(path, true)?;
        let removed = std::fs::remove_dir_all(path);
        self.forget(path);
        removed
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // Opening a directory read-only and fsyncing it is how POSIX makes its
        // entries durable.
        self.open(path, OpenOptions::new().read(true))?.sync_all()
    }

    fn lock_file(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>> {
        let file = self.open(path, OpenOptions::new().read(true).write(true).create(true).truncate(false))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(file))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn copy_file(&self, from: &Path, to: &Path, len: u64) -> io::Result<()> {
        let mut source = File::open(from)?.take(len);
        let mut copy = OpenOptions::new().write(true).create_new(true).open(to)?;
        // `std::io::copy` between files uses `copy_file_range` where it can.
        let copied = std::io::copy(&mut source, &mut copy)?;
        if copied != len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file is shorter than expected"));
        }
        copy.sync_all()
    }

    fn open_mapped(&self, path: &Path, create: bool, map_len: usize) -> io::Result<Arc<dyn MappedFile>> {
        let file = self.open(path, OpenOptions::new().read(true).write(true).create_new(create))?;
        let map = MmapOptions::new().len(map_len).map_raw(&file)?;
        Ok(Arc::new(OsMappedFile { file, map }))
    }
}

/// A file and its `memmap2` mapping.
struct OsMappedFile {
    file: File,
    map: MmapRaw,
}

impl fmt::Debug for OsMappedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OsMappedFile").field("map_len", &self.map.len()).finish()
    }
}

impl MappedFile for OsMappedFile {
    fn ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    fn map_len(&self) -> usize {
        self.map.len()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        allocate(&self.file, len)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn prefault(&self, at: usize, len: usize) {
        // MADV_POPULATE_WRITE (Linux 5.14+); older kernels refuse it, and
        // the pages then fault in on first write as usual.
        #[cfg(target_os = "linux")]
        let _ = self.map.advise_range(memmap2::Advice::PopulateWrite, at, len);
        #[cfg(not(target_os = "linux"))]
        let _ = (at, len);
    }

    fn flush(&self, at: usize, len: usize) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.map.flush_range(at, len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// Allocates blocks for the file's first `len` bytes (extending it if
/// shorter), so that a full disk fails here and not in a page fault.
/// `posix_fallocate` falls back to writing zeros on file systems without
/// `fallocate`, so the blocks are real either way.
#[cfg(target_os = "linux")]
fn allocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let current = file.metadata()?.len();
    if current >= len {
        return Ok(());
    }
    // Only the new range: allocating from 0 would make every step cost as
    // much as the whole file.
    let from = i64::try_from(current).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let len = i64::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: `posix_fallocate` reads no memory; the descriptor is open
        // for as long as `file` is borrowed.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), from, len - from) };
        match rc {
            0 => return Ok(()),
            libc::EINTR => continue,
            errno => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn allocate(file: &File, len: u64) -> io::Result<()> {
    if file.metadata()?.len() < len { file.set_len(len) } else { Ok(()) }
}

/// A file open for positional reads.
#[derive(Debug)]
struct OsReadFile(File);

impl ReadAt for OsReadFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    #[cfg(unix)]
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.0, buf, position)
    }

    #[cfg(windows)]
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        std::os::windows::fs::FileExt::seek_read(&self.0, buf, position)
    }
}

/// The kernel's table of file locks (Linux).
#[cfg(target_os = "linux")]
const PROC_LOCKS: &str = "/proc/locks";

/// Whether the `/proc/locks` text `locks` lists a granted `flock` on the
/// file with device `(major, minor)` and inode `inode`.
///
/// A line is `<n>: FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF`,
/// major and minor in hex (`%02x`), the inode in decimal (`lock_get_status`
/// in the kernel's `fs/locks.c`); a request waiting for a lock has `->`
/// after the number and is not a holder.
#[cfg(any(target_os = "linux", test))]
fn flock_listed(locks: &str, (major, minor): (u32, u32), inode: u64) -> bool {
    locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"FLOCK") {
            return false;
        }
        let Some(mut id) = fields.get(5).map(|id| id.split(':')) else { return false };
        let (Some(maj), Some(min), Some(ino), None) = (id.next(), id.next(), id.next(), id.next()) else {
            return false;
        };
        u32::from_str_radix(maj, 16) == Ok(major)
            && u32::from_str_radix(min, 16) == Ok(minor)
            && ino.parse::<u64>() == Ok(inode)
    })
}

/// Whether the lock file `opened` is locked, found by taking a shared,
/// non-blocking `flock` on it and releasing it at once: where the kernel's
/// lock table cannot be read. An engine opening the directory in that
/// instant finds it locked and fails to open.
fn probe_lock(opened: io::Result<File>) -> bool {
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return false,
        Err(_) => return true,
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flock_lines_are_matched_by_device_and_inode() {
        let locks = "1: FLOCK  ADVISORY  WRITE 10362 fe:00:6447165 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 10400 08:11:42 0 EOF\n\
                     3: POSIX  ADVISORY  WRITE 10252 08:11:43 0 EOF\n\
                     4: FLOCK  ADVISORY  READ 10252 103:0a:99 0 EOF\n";
        assert!(flock_listed(locks, (0xfe, 0), 6_447_165));
        assert!(flock_listed(locks, (0x103, 0x0a), 99));
        // Another device, a waiter (`->`), a POSIX lock: none is a holder.
        assert!(!flock_listed(locks, (0xfe, 1), 6_447_165));
        assert!(!flock_listed(locks, (8, 0x11), 42));
        assert!(!flock_listed(locks, (8, 0x11), 43));
        assert!(!flock_listed("", (0xfe, 0), 6_447_165));
    }
}
