//! A simulated disk for the simulation test (`engine/tests/simulation.rs`):
//! an in-memory [`Fs`] that knows, per file and per directory entry, what has
//! been made durable, and can forget the rest the way a power cut does.
//!
//! * A file's bytes are durable up to the length they had at its last
//!   `sync_data`/`sync_all`, or up to the lowest offset written since then,
//!   whichever is less: a write over synced bytes (a WAL segment's zeros
//!   written ahead) makes everything from it on undurable again until the
//!   next sync. For the WAL that is exact where it matters (what was under
//!   an unsynced overwrite was zeros, and a power cut here leaves a shorter
//!   file where a disk would leave those zeros: both read as the end).
//! * A name (create, rename, delete) is durable once its directory is synced.
//! * [`SimFs::kill`] is `kill -9`: the page cache survives, so nothing is
//!   lost, but from that moment every operation fails and changes nothing.
//! * [`SimFs::power_cut`] keeps only what is durable, plus (by choice of the
//!   caller's randomness) a torn piece of each file's unsynced tail: a prefix
//!   of it, possibly followed by zeros (a size update that beat its data).
//! * Faults can be armed to fire inside the engine's own threads: before the
//!   write or the `sync_data` of the WAL record with a given LSN, or at the
//!   n-th operation.

use super::codec::HEADER_BYTES;
use super::fs::{DirLock, Fs, LogFile, ReadFile};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the simulated process dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Dies at the WAL write that carries record `lsn`. If `torn_bytes` is
    /// set, the records before it in that write and this many bytes of it
    /// reach the page cache first (a write cut short by the kill).
    AtWalWrite { lsn: u64, torn_bytes: Option<usize> },
    /// Dies at the `sync_data` that would make record `lsn` durable: the
    /// write is in the page cache, the fsync never happens.
    AtWalSync { lsn: u64 },
    /// Dies at the n-th file operation from now (any kind, any file).
    AtOp { nth: u64 },
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable_len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File(u64),
}

#[derive(Debug, Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    live: BTreeMap<PathBuf, Entry>,
    durable: BTreeMap<PathBuf, Entry>,
    dead: bool,
    armed: Option<Fault>,
    ops: u64,
    /// Highest LSN seen written to each WAL inode (for `AtWalSync`).
    wal_written: BTreeMap<u64, u64>,
    locks: BTreeSet<PathBuf>,
    fired: Option<Fault>,
    /// Counters for the test's report.
    syncs: u64,
    dir_syncs: u64,
}

fn dead() -> io::Error {
    io::Error::other("simulated process is dead")
}

impl State {
    fn tick(&mut self) -> io::Result<()> {
        if self.dead {
            return Err(dead());
        }
        self.ops += 1;
        if let Some(Fault::AtOp { nth }) = self.armed {
            if nth <= 1 {
                self.fire();
                return Err(dead());
            }
            self.armed = Some(Fault::AtOp { nth: nth - 1 });
        }
        Ok(())
    }

    fn fire(&mut self) {
        self.fired = self.armed.take();
        self.dead = true;
    }

    fn dir_exists(&self, dir: &Path) -> bool {
        dir.parent().is_none() || self.live.get(dir) == Some(&Entry::Dir)
    }

    fn parent_ok(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(p) if !self.dir_exists(p) => Err(io::Error::new(io::ErrorKind::NotFound, "no such directory")),
            _ => Ok(()),
        }
    }

    fn file(&self, path: &Path) -> io::Result<u64> {
        match self.live.get(path) {
            Some(Entry::File(ino)) => Ok(*ino),
            Some(Entry::Dir) => Err(io::Error::other("is a directory")),
            None => Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))),
        }
    }

    fn new_file(&mut self, path: &Path) -> u64 {
        self.next_ino += 1;
        let ino = self.next_ino;
        self.inodes.insert(ino, Inode::default());
        self.live.insert(path.to_path_buf(), Entry::File(ino));
        ino
    }
}

/// The LSNs of the whole records at the start of `buf` and where each starts.
fn records_in(buf: &[u8]) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(h) = buf.get(at..at + HEADER_BYTES) {
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if len == 0 {
            break; // zeros written ahead of the records
        }
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&h[8..16]);
        out.push((u64::from_le_bytes(lsn), at));
        at += HEADER_BYTES + len;
    }
    out
}

fn is_wal(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wal")
}

/// Cheap to clone; every clone is the same disk.
#[derive(Clone, Default)]
pub struct SimFs(Arc<Mutex<State>>);

impl std::fmt::Debug for SimFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimFs")
    }
}

impl SimFs {
    /// An empty, healthy disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms `fault`; the operation it names kills the process.
    pub fn arm(&self, fault: Fault) {
        let mut st = self.0.lock();
        st.armed = Some(fault);
        st.fired = None;
    }

    /// Disarms a fault that has not fired and says which one did, under one
    /// lock: a background thread (snapshots, expiry) cannot fire it between a
    /// separate check and disarm, leaving a dead disk nobody knows about.
    pub fn disarm_unless_fired(&self) -> Option<Fault> {
        let mut st = self.0.lock();
        st.armed = None;
        st.fired
    }

    /// The fault that fired (and killed the process), if one did.
    pub fn fired(&self) -> Option<Fault> {
        self.0.lock().fired
    }

    /// Whether the simulated process is dead (killed or a fault fired).
    pub fn is_dead(&self) -> bool {
        self.0.lock().dead
    }

    /// `kill -9`: every later operation fails; what was written stays.
    pub fn kill(&self) {
        self.0.lock().dead = true;
    }

    /// A new process starts on this disk (locks of the dead one are gone).
    pub fn restart(&self) {
        let mut st = self.0.lock();
        st.dead = false;
        st.armed = None;
        st.locks.clear();
        st.wal_written.clear();
    }

    /// Power cut: only what was made durable survives. `torn(unsynced)`
    /// says, per file with an unsynced tail of `unsynced` bytes, how many of
    /// them survive anyway and how many zero bytes follow them.
    pub fn power_cut(&self, mut torn: impl FnMut(usize) -> (usize, usize)) {
        let mut st = self.0.lock();
        st.dead = true;
        // A name whose directory's own name was never made durable is gone
        // with it: keep only entries whose every ancestor survived.
        let durable = std::mem::take(&mut st.durable);
        let reachable =
            |p: &Path| p.ancestors().skip(1).all(|a| a.parent().is_none() || durable.get(a) == Some(&Entry::Dir));
        let kept: BTreeMap<PathBuf, Entry> =
            durable.iter().filter(|(p, _)| reachable(p)).map(|(p, e)| (p.clone(), *e)).collect();
        st.durable = kept.clone();
        st.live = kept;
        let alive: BTreeSet<u64> =
            st.live.values().filter_map(|e| if let Entry::File(i) = e { Some(*i) } else { None }).collect();
        st.inodes.retain(|ino, _| alive.contains(ino));
        for inode in st.inodes.values_mut() {
            let unsynced = inode.data.len() - inode.durable_len;
            let (keep, zeros) = if unsynced > 0 { torn(unsynced) } else { (0, 0) };
            inode.data.truncate(inode.durable_len + keep.min(unsynced));
            inode.data.resize(inode.data.len() + zeros, 0);
            inode.durable_len = inode.data.len();
        }
    }

    /// Flips bits of a byte in a file (a disk that rots), durably.
    pub fn corrupt(&self, path: &Path, offset: usize) -> bool {
        let mut st = self.0.lock();
        let Ok(ino) = st.file(path) else { return false };
        let Some(inode) = st.inodes.get_mut(&ino) else { return false };
        match inode.data.get_mut(offset) {
            Some(b) => {
                *b ^= 0x5a;
                true
            }
            None => false,
        }
    }

    /// Zeros `len` bytes of a file from `offset` (a disk that lost synced
    /// data), durably.
    pub fn zero(&self, path: &Path, offset: usize, len: usize) -> bool {
        let mut st = self.0.lock();
        let Ok(ino) = st.file(path) else { return false };
        let Some(inode) = st.inodes.get_mut(&ino) else { return false };
        match inode.data.get_mut(offset..offset + len) {
            Some(range) => {
                range.fill(0);
                true
            }
            None => false,
        }
    }

    /// Bytes of every file (for tests that look at the disk).
    pub fn files(&self) -> Vec<(PathBuf, usize, usize)> {
        let st = self.0.lock();
        st.live
            .iter()
            .filter_map(|(p, e)| match e {
                Entry::File(ino) => st.inodes.get(ino).map(|i| (p.clone(), i.data.len(), i.durable_len)),
                Entry::Dir => None,
            })
            .collect()
    }

    /// (file syncs, directory syncs, operations) so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        let st = self.0.lock();
        (st.syncs, st.dir_syncs, st.ops)
    }
}

struct SimFile {
    fs: SimFs,
    ino: u64,
    wal: bool,
}

impl LogFile for SimFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write(buf, None)
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write(buf, Some(offset as usize))
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut st = self.fs.0.lock();
        st.tick()?;
        if let (true, Some(Fault::AtWalSync { lsn })) = (self.wal, st.armed) {
            if st.wal_written.get(&self.ino).is_some_and(|w| *w >= lsn) {
                st.fire();
                return Err(dead());
            }
        }
        st.syncs += 1;
        if let Some(inode) = st.inodes.get_mut(&self.ino) {
            inode.durable_len = inode.data.len();
        }
        Ok(())
    }
}

impl SimFile {
    /// Appends (`at` = None) or writes at an offset, firing an armed WAL
    /// fault on the way.
    fn write(&mut self, buf: &[u8], at: Option<usize>) -> io::Result<()> {
        let mut st = self.fs.0.lock();
        st.tick()?;
        let mut buf = buf;
        let mut die = false;
        if self.wal {
            let records = records_in(buf);
            if let Some(Fault::AtWalWrite { lsn, torn_bytes }) = st.armed {
                if let Some(&(_, start)) = records.iter().find(|(l, _)| *l >= lsn) {
                    buf = &buf[..torn_bytes.map_or(0, |t| start + t).min(buf.len())];
                    die = true;
                }
            }
            if let Some(&(last, _)) = records.last() {
                st.wal_written.insert(self.ino, last);
            }
        }
        if let Some(inode) = st.inodes.get_mut(&self.ino) {
            let at = at.unwrap_or(inode.data.len());
            inode.durable_len = inode.durable_len.min(at);
            let end = at + buf.len();
            if inode.data.len() < end {
                inode.data.resize(end, 0);
            }
            inode.data[at..end].copy_from_slice(buf);
        }
        if die {
            st.fire();
            return Err(dead());
        }
        Ok(())
    }
}

/// A simulated file open for reading: it reads the inode as it is now (the
/// page cache), even after its name is removed.
struct SimReadFile {
    fs: SimFs,
    ino: u64,
}

impl ReadFile for SimReadFile {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut st = self.fs.0.lock();
        st.tick()?;
        let data = st.inodes.get(&self.ino).map(|i| i.data.as_slice()).unwrap_or_default();
        super::fs::InMemory(data).read_at(buf, offset)
    }
}

struct SimLock {
    fs: SimFs,
    dir: PathBuf,
}

impl DirLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.fs.0.lock().locks.remove(&self.dir);
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.0.lock();
        st.tick()?;
        for d in dir.ancestors() {
            if d.parent().is_none() || d.as_os_str().is_empty() {
                break;
            }
            match st.live.get(d) {
                Some(Entry::Dir) => {}
                Some(Entry::File(_)) => return Err(io::Error::other("a file is in the way")),
                None => {
                    st.live.insert(d.to_path_buf(), Entry::Dir);
                }
            }
        }
        Ok(())
    }

    fn open_segment(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let mut st = self.0.lock();
        st.tick()?;
        st.parent_ok(path)?;
        let ino = match st.file(path) {
            Ok(ino) => ino,
            Err(_) => st.new_file(path),
        };
        Ok(Box::new(SimFile { fs: self.clone(), ino, wal: is_wal(path) }))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let mut st = self.0.lock();
        st.tick()?;
        st.parent_ok(path)?;
        let ino = st.new_file(path);
        Ok(Box::new(SimFile { fs: self.clone(), ino, wal: is_wal(path) }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut st = self.0.lock();
        st.tick()?;
        let ino = st.file(path)?;
        Ok(st.inodes.get(&ino).map(|i| i.data.clone()).unwrap_or_default())
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        let mut st = self.0.lock();
        st.tick()?;
        let ino = st.file(path)?;
        Ok(Box::new(SimReadFile { fs: self.clone(), ino }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut st = self.0.lock();
        st.tick()?;
        if !st.dir_exists(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        Ok(st.live.keys().filter(|p| p.parent() == Some(dir)).cloned().collect())
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.0.lock();
        path.parent().is_none() || st.live.contains_key(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.0.lock();
        st.tick()?;
        let ino = st.file(from)?;
        st.parent_ok(to)?;
        st.live.remove(from);
        st.live.insert(to.to_path_buf(), Entry::File(ino));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.0.lock();
        st.tick()?;
        st.file(path)?;
        st.live.remove(path);
        Ok(())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut st = self.0.lock();
        st.tick()?;
        let ino = st.file(path)?;
        st.syncs += 1;
        if let Some(inode) = st.inodes.get_mut(&ino) {
            inode.data.truncate(len as usize);
            inode.durable_len = inode.data.len();
        }
        Ok(())
    }

    /// Modelled as durable at once: only retired files are shrunk, and no
    /// one reads them, so a cut lost in a crash changes nothing.
    fn shrink(&self, path: &Path, bytes: u64) -> io::Result<u64> {
        let mut st = self.0.lock();
        st.tick()?;
        let ino = st.file(path)?;
        let inode = st.inodes.get_mut(&ino).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let left = inode.data.len().saturating_sub(bytes as usize);
        inode.data.truncate(left);
        inode.durable_len = inode.durable_len.min(left);
        Ok(left as u64)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.0.lock();
        st.tick()?;
        let ino = st.file(path)?;
        st.syncs += 1;
        if let Some(inode) = st.inodes.get_mut(&ino) {
            inode.durable_len = inode.data.len();
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.0.lock();
        st.tick()?;
        if !st.dir_exists(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        st.dir_syncs += 1;
        let State { live, durable, .. } = &mut *st;
        durable.retain(|p, _| p.parent() != Some(dir) || live.contains_key(p));
        for (p, e) in live.iter().filter(|(p, _)| p.parent() == Some(dir)) {
            durable.insert(p.clone(), *e);
        }
        Ok(())
    }

    fn lock(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>> {
        let mut st = self.0.lock();
        st.tick()?;
        if !st.locks.insert(dir.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(Box::new(SimLock { fs: self.clone(), dir: dir.to_path_buf() })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_power_cut_keeps_only_what_was_synced() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        let a = dir.join("a");
        let mut f = fs.create(&a).unwrap();
        f.write_all(b"hello").unwrap();
        f.sync_data().unwrap();
        f.write_all(b" world").unwrap();
        // The name was never made durable: the whole file goes.
        fs.power_cut(|_| (0, 0));
        assert!(!fs.exists(&a));
        fs.restart();
        let mut f = fs.create(&a).unwrap();
        f.write_all(b"hello").unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(dir).unwrap();
        f.write_all(b" world").unwrap();
        fs.power_cut(|n| (n / 2, 2));
        fs.restart();
        assert_eq!(fs.read(&a).unwrap(), b"hello wo\0\0");
        // A rename not followed by a directory sync is undone.
        fs.rename(&a, &dir.join("b")).unwrap();
        fs.power_cut(|_| (0, 0));
        fs.restart();
        assert!(fs.exists(&a) && !fs.exists(&dir.join("b")));
    }

    #[test]
    fn a_killed_process_loses_nothing_but_does_nothing_more() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let mut f = fs.create(Path::new("/d/x")).unwrap();
        f.write_all(b"abc").unwrap();
        fs.kill();
        assert!(f.write_all(b"def").is_err());
        assert!(f.sync_data().is_err());
        fs.restart();
        assert_eq!(fs.read(Path::new("/d/x")).unwrap(), b"abc");
    }
}
