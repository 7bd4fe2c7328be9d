//! The file-system seam under the WAL, the snapshots and the data dir's
//! metadata: every file operation recovery and the writer depend on goes
//! through [`Fs`]. Production uses `OsFs` (through [`os_fs`]); the simulation test uses
//! [`super::sim_fs::SimFs`], which remembers what was made durable and
//! forgets the rest on a power cut.
//!
//! The operations are the ones whose durability matters: writing files,
//! fsync of a file, creating, renaming and deleting names (durable only after
//! an fsync of the directory), and cutting a file.
//!
//! `OsFs` creates every directory 0700 and every file 0600: the data dir
//! holds every order, so no other local user may read any of it
//! (docs/SECURITY.md).

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file being written (a WAL segment, a snapshot being written).
pub trait LogFile: Send {
    /// Writes at the file's position (the end, for a file opened to append).
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Writes at `offset`, over what is there (a segment's zeros written
    /// ahead) or past the end; the position of `write_all` does not move.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// `fdatasync`: the bytes written so far (and the size) are durable.
    fn sync_data(&mut self) -> io::Result<()>;
    /// `fsync`: as `sync_data`, plus the file's other metadata.
    fn sync_all(&mut self) -> io::Result<()> {
        self.sync_data()
    }
    /// Sends the bytes at `offset..offset + len` to the disk and waits for
    /// them, so they do not pile up in the page cache. Not a durability
    /// point: no metadata, no cache flush (`sync_data` is).
    fn write_back(&mut self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
}

impl LogFile for File {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(self, buf)
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }
    fn sync_all(&mut self) -> io::Result<()> {
        File::sync_all(self)
    }
    #[allow(unsafe_code)] // sync_file_range: see the SAFETY comment
    fn write_back(&mut self, offset: u64, len: u64) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            let flags =
                libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            // SAFETY: a plain syscall on a file descriptor this `File` owns.
            let rc = unsafe { libc::sync_file_range(self.as_raw_fd(), offset as i64, len as i64, flags) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (offset, len);
        Ok(())
    }
}

/// A file opened for reading (a snapshot or a WAL segment read in slices).
pub trait ReadFile: Send {
    /// Reads into `buf` from `offset`; returns how many bytes, 0 at the end
    /// of the file. May return fewer than asked before the end.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadFile for File {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

/// Bytes in memory read as a file (what `segment::scan` and
/// `snapshot::parse` read through the same slicing reader as the disk).
pub(crate) struct InMemory<'a>(pub &'a [u8]);

impl ReadFile for InMemory<'_> {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let from = usize::try_from(offset).unwrap_or(usize::MAX).min(self.0.len());
        let n = buf.len().min(self.0.len() - from);
        buf[..n].copy_from_slice(&self.0[from..from + n]);
        Ok(n)
    }
}

/// Held while the data dir is in use; dropping it lets another engine in.
pub trait DirLock: Send + Sync {}
impl DirLock for File {}

/// The file-system seam: every file operation the WAL, snapshots and
/// `engine.meta` depend on, so a simulated disk can stand in for the OS.
pub trait Fs: Send + Sync + 'static {
    /// Creates `dir` and its missing parents. Not durable until the parent
    /// of each new directory is synced ([`Fs::sync_dir`]).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens a WAL segment for writing at offsets, creating it (empty) if it
    /// does not exist. Never opened to append: Linux ignores the offset of
    /// a positioned write to such a file.
    fn open_segment(&self, path: &Path) -> io::Result<Box<dyn LogFile>>;
    /// Creates `path` empty (truncating what was there) for appending.
    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>>;
    /// Reads the whole file (small files, and recovery's segments).
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Opens `path` to read it in slices (snapshots, and the WAL read to
    /// build one). The file stays readable if its name is removed meanwhile.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>>;
    /// The entries of `dir` (full paths), in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> bool;
    /// Renames `from` to `to` (durable once the directory is synced).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Deletes `path` (durable once the directory is synced).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Cuts `path` to `len` bytes and fsyncs it.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Cuts up to `bytes` off the end of `path`, unsynced, and returns the
    /// length left: how a big file goes away in small discards (`trim.rs`).
    fn shrink(&self, path: &Path, bytes: u64) -> io::Result<u64>;
    /// Opens `path` and fsyncs it (recovery makes what it replays durable).
    fn sync_file(&self, path: &Path) -> io::Result<()>;
    /// fsync of a directory: its entries (creates, renames, deletes) are durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the data dir's exclusive lock (one writer per data dir), or
    /// `None` if another process holds it.
    fn lock(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>>;
}

/// A file system shared by the WAL's threads.
pub type SharedFs = Arc<dyn Fs>;

/// Mode of every directory [`OsFs`] creates (the data dir, `wal/`, `snapshots/`).
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of every file [`OsFs`] creates (segments, snapshots, `engine.meta`, `LOCK`).
pub(crate) const FILE_MODE: u32 = 0o600;

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OsFs;

/// Options that create a file private to this user (the umask may only
/// narrow it further).
fn private_file() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// The real file system, shared.
pub fn os_fs() -> SharedFs {
    Arc::new(OsFs)
}

impl Fs for OsFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
    }
    fn open_segment(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let f = private_file().create(true).truncate(false).write(true).open(path)?;
        Ok(Box::new(f))
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        Ok(Box::new(private_file().create(true).truncate(true).write(true).open(path)?))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        Ok(Box::new(File::open(path)?))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect()
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(len)?;
        f.sync_all()
    }
    fn shrink(&self, path: &Path, bytes: u64) -> io::Result<u64> {
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        let left = f.metadata()?.len().saturating_sub(bytes);
        f.set_len(left)?;
        Ok(left)
    }
    fn sync_file(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    #[allow(unsafe_code)] // flock: see the SAFETY comment
    fn lock(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>> {
        let path = dir.join("LOCK");
        let mut f = private_file().create(true).truncate(false).write(true).open(&path)?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Ok(None);
        }
        f.set_len(0)?;
        writeln!(f, "{}", std::process::id())?;
        Ok(Some(Box::new(f)))
    }
}

/// The operations a test may replace with [`overlay`]; each one left out
/// goes to the base file system. (A test that needs another operation adds it
/// here, with the same default.)
#[cfg(any(test, feature = "sim"))]
pub trait Override: Send + Sync + 'static {
    /// Opens a WAL segment ([`Fs::open_segment`]).
    fn open_segment(&self, base: &dyn Fs, path: &Path) -> io::Result<Box<dyn LogFile>> {
        base.open_segment(path)
    }
    /// Creates a file to append to ([`Fs::create`]).
    fn create(&self, base: &dyn Fs, path: &Path) -> io::Result<Box<dyn LogFile>> {
        base.create(path)
    }
    /// Reads a whole file ([`Fs::read`]).
    fn read(&self, base: &dyn Fs, path: &Path) -> io::Result<Vec<u8>> {
        base.read(path)
    }
    /// Opens a file to read in slices ([`Fs::open_read`]).
    fn open_read(&self, base: &dyn Fs, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        base.open_read(path)
    }
}

/// A file system that is `base` in everything but what `over` replaces: a
/// disk that fails, loses or holds up one operation, for tests, without a
/// wrapper that forwards every other method by hand.
#[cfg(any(test, feature = "sim"))]
pub fn overlay<O: Override>(base: SharedFs, over: O) -> SharedFs {
    Arc::new(Overlay { base, over })
}

/// See [`overlay`].
#[cfg(any(test, feature = "sim"))]
struct Overlay<O> {
    base: SharedFs,
    over: O,
}

#[cfg(any(test, feature = "sim"))]
impl<O: Override> Fs for Overlay<O> {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.base.create_dir_all(dir)
    }
    fn open_segment(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        self.over.open_segment(&*self.base, path)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        self.over.create(&*self.base, path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.over.read(&*self.base, path)
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        self.over.open_read(&*self.base, path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.base.list(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        self.base.exists(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.base.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.base.remove_file(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.base.truncate(path, len)
    }
    fn shrink(&self, path: &Path, bytes: u64) -> io::Result<u64> {
        self.base.shrink(path, bytes)
    }
    fn sync_file(&self, path: &Path) -> io::Result<()> {
        self.base.sync_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.base.sync_dir(dir)
    }
    fn lock(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>> {
        self.base.lock(dir)
    }
}

/// Creates `dir` (and parents) and makes its name durable: the parent of
/// every directory it creates is synced, and so are `dir`'s parent (always: a
/// crash may have left a directory whose creation was never synced) and `dir`.
pub(crate) fn create_dir_durable(fs: &dyn Fs, dir: &Path) -> io::Result<()> {
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && a.parent().is_some() && !fs.exists(a))
        .map(Path::to_path_buf)
        .collect();
    fs.create_dir_all(dir)?;
    let mut parents: Vec<&Path> = missing.iter().rev().filter_map(|d| d.parent()).collect();
    parents.extend(dir.parent());
    parents.dedup();
    for p in parents.into_iter().filter(|p| !p.as_os_str().is_empty()) {
        fs.sync_dir(p)?;
    }
    fs.sync_dir(dir)
}
