//! [`OsStorage`]: the operating system's file system, through `std::fs`,
//! `posix_fallocate` and `memmap2` mappings.

use std::any::Any;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use super::{MappedFile, ReadAt, ReadStorage, Storage};

/// The operating system's file system.
#[derive(Debug, Default)]
pub(crate) struct OsStorage;

impl ReadStorage for OsStorage {
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
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
        path.exists()
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadAt>> {
        Ok(Box::new(OsReadFile(File::open(path)?)))
    }

    fn identity(&self, path: &Path) -> io::Result<Option<(u64, u64)>> {
        let metadata = std::fs::metadata(path)?;
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
    fn lock_held(&self, path: &Path) -> bool {
        let metadata = match std::fs::metadata(path) {
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
        probe_lock(path)
    }
}

impl Storage for OsStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // Opening a directory read-only and fsyncing it is how POSIX makes its
        // entries durable.
        File::open(path)?.sync_all()
    }

    fn lock_file(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
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
        let file = OpenOptions::new().read(true).write(true).create_new(create).open(path)?;
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

/// Whether the lock file `path` is locked, found by taking a shared,
/// non-blocking `flock` on it and releasing it at once: where the kernel's
/// lock table cannot be read. An engine opening the directory in that
/// instant finds it locked and fails to open.
fn probe_lock(path: &Path) -> bool {
    let file = match File::open(path) {
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
