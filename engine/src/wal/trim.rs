//! Deleting big files without stalling the log.
//!
//! On a file system mounted with `discard` (ext4 on this VM, and many cloud
//! images), deleting a 64 MiB segment or a snapshot sends the device one
//! discard of the whole file. This VM took 6–18 ms per 50–64 MiB discard,
//! and every WAL fdatasync queued behind it waited: an open loop at 20,000
//! buys/s on a server that rotated segments had p99.9 25–39 ms, against
//! ~8 ms on a fresh one (docs/PERFORMANCE.md, "Deleting in slices"). So an
//! old file is first renamed out of its listing, then cut from the end one
//! [`SLICE_BYTES`] slice at a time (each its own small discard, between
//! which the log's fdatasyncs run), and deleted once empty.

use super::fs::Fs;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bytes cut off a retired file per step: one discard of ~0.3–0.5 ms here.
pub(crate) const SLICE_BYTES: u64 = 2 << 20;
/// Appended to a retired file's name: no listing of segments or snapshots
/// matches it, and a restart finds it to finish the job.
pub(crate) const RETIRED_SUFFIX: &str = ".retired";
/// Files queued at most; past this, the oldest are deleted at once (a
/// writer that retires files faster than it trims them is a bug or a
/// misconfiguration, and unbounded queues are worse than one long discard).
pub(crate) const QUEUE_MAX: usize = 64;

/// Files on their way out, cut a slice per [`Trimmer::step`] by the thread
/// that owns them.
#[derive(Debug, Default)]
pub(crate) struct Trimmer {
    queue: VecDeque<PathBuf>,
}

impl Trimmer {
    /// Renames `path` to `<path>.retired` and queues it. The caller syncs
    /// the directory (the rename must not come back undone after a crash
    /// that kept a cut).
    pub fn retire(&mut self, fs: &dyn Fs, path: &Path) -> io::Result<()> {
        let mut name = OsString::from(path.as_os_str());
        name.push(RETIRED_SUFFIX);
        let retired = PathBuf::from(name);
        fs.rename(path, &retired)?;
        self.queue(fs, retired);
        Ok(())
    }

    /// Queues the retired files a previous run left in `dir` (a crash or a
    /// stop between the rename and the last cut).
    pub fn adopt_leftovers(&mut self, fs: &dyn Fs, dir: &Path) -> io::Result<()> {
        let mut left: Vec<PathBuf> = fs
            .list(dir)?
            .into_iter()
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(RETIRED_SUFFIX)))
            .collect();
        left.sort();
        for path in left {
            self.queue(fs, path);
        }
        Ok(())
    }

    fn queue(&mut self, fs: &dyn Fs, path: PathBuf) {
        while self.queue.len() >= QUEUE_MAX {
            if let Some(oldest) = self.queue.pop_front() {
                remove(fs, &oldest);
            }
        }
        self.queue.push_back(path);
    }

    /// Whether nothing is queued.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// Cuts one slice off the oldest queued file, deleting it once empty.
    /// A file that cannot be cut is deleted whole (logged, never fatal: it
    /// holds nothing anyone reads).
    pub fn step(&mut self, fs: &dyn Fs) {
        let Some(path) = self.queue.front() else { return };
        match fs.shrink(path, SLICE_BYTES) {
            Ok(left) if left > 0 => {}
            Ok(_) => {
                remove(fs, path);
                self.queue.pop_front();
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "could not cut a retired file; deleting it whole");
                    remove(fs, path);
                }
                self.queue.pop_front();
            }
        }
    }

    /// Trims every queued file, pausing `pause` between slices: the way of
    /// a background thread that has nothing else to do.
    pub fn drain(&mut self, fs: &dyn Fs, pause: Duration) {
        while !self.is_idle() {
            self.step(fs);
            if !self.is_idle() {
                std::thread::sleep(pause);
            }
        }
    }
}

fn remove(fs: &dyn Fs, path: &Path) {
    match fs.remove_file(path) {
        Ok(()) => tracing::debug!(path = %path.display(), "deleted a retired file"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not delete a retired file"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::sim_fs::SimFs;

    fn file(fs: &dyn Fs, path: &Path, len: usize) {
        let mut f = fs.create(path).expect("create");
        f.write_all(&vec![7u8; len]).expect("write");
        f.sync_all().expect("sync");
    }

    /// A simulated disk with an empty directory `/d`.
    fn sim_dir() -> (SimFs, &'static Path) {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).expect("dir");
        (fs, dir)
    }

    fn len_of(fs: &dyn Fs, path: &Path) -> Option<usize> {
        fs.exists(path).then(|| fs.read(path).expect("read").len())
    }

    #[test]
    fn a_retired_file_leaves_its_listing_at_once_and_shrinks_a_slice_per_step_until_gone() {
        let (fs, dir) = sim_dir();
        let path = dir.join("00000000000000000001.wal");
        let size = (2 * SLICE_BYTES + 5) as usize;
        file(&fs, &path, size);
        let mut t = Trimmer::default();
        t.retire(&fs, &path).expect("retire");
        assert!(!fs.exists(&path), "renamed out of the listing");
        let retired = dir.join("00000000000000000001.wal.retired");
        assert_eq!(len_of(&fs, &retired), Some(size));
        t.step(&fs);
        assert_eq!(len_of(&fs, &retired), Some(size - SLICE_BYTES as usize), "one slice per step");
        t.step(&fs);
        assert_eq!(len_of(&fs, &retired), Some(5));
        assert!(!t.is_idle());
        t.step(&fs);
        assert_eq!(len_of(&fs, &retired), None, "deleted once empty");
        assert!(t.is_idle());
    }

    #[test]
    fn leftovers_of_a_previous_run_are_adopted_and_nothing_else() {
        let (fs, dir) = sim_dir();
        let left = dir.join("00000000000000000001.wal.retired");
        let live = dir.join("00000000000000000009.wal");
        file(&fs, &left, 10);
        file(&fs, &live, 10);
        let mut t = Trimmer::default();
        t.adopt_leftovers(&fs, dir).expect("adopt");
        t.drain(&fs, Duration::ZERO);
        assert!(!fs.exists(&left));
        assert_eq!(len_of(&fs, &live), Some(10), "a live segment is never touched");
    }

    #[test]
    fn the_queue_is_bounded() {
        let (fs, dir) = sim_dir();
        let mut t = Trimmer::default();
        for i in 0..QUEUE_MAX + 3 {
            let p = dir.join(format!("{i:020}.wal"));
            file(&fs, &p, 1);
            t.retire(&fs, &p).expect("retire");
        }
        assert_eq!(t.queue.len(), QUEUE_MAX);
        assert!(!fs.exists(&dir.join(format!("{:020}.wal.retired", 0))), "the oldest went at once");
    }
}
