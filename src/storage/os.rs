//! [`OsStorage`]: the operating system's file system, through `std::fs`,
//! `posix_fallocate` and `memmap2` mappings.

use std::any::Any;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use super::{MappedFile, Storage};

/// The operating system's file system.
#[derive(Debug, Default)]
pub(crate) struct OsStorage;

impl Storage for OsStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

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
