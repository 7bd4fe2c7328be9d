//! The durable Raft log of one replica: `raft.log`, one append-only file of
//! checked records, and `vote`, a small file replaced atomically.
//!
//! `raft.log` = magic, then records `len u32 | crc32c(body) u32 | body`,
//! little-endian, where body = kind `u8` + postcard payload:
//!
//! * `ENTRIES`: the entries of one `append` call (one record per call, so a
//!   torn write can only damage the last record);
//! * `TRUNCATE`: entries at and after an index are gone (a new leader
//!   overwrote an uncommitted suffix);
//! * `PURGE`: entries up to a log id are gone (they are in a snapshot).
//!
//! An append, a truncation and a vote are fdatasynced before they are
//! acknowledged: a replica that answered "I have it" still has it after a
//! power cut, which is what a majority's acknowledgement is worth. A purge
//! is written but not synced on its own (forgetting it only keeps entries
//! longer). Opening the file replays the records; a damaged last record is
//! an append that was never acknowledged and is cut; damage before the last
//! record refuses to open (an acknowledged entry would be lost).
//!
//! Entries are not kept in memory: an index maps each log index to its
//! record, read back with a positioned read. When purged records make up
//! most of a large file, the live entries are rewritten to a new file
//! (temp file, fsync, rename, directory fsync).

use crate::{NodeId, TypeConfig};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogId, LogState, OptionalSend, RaftLogId, RaftLogReader, StorageError, StorageIOError, Vote};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"SKRAFT\0\x01";
const LOG_FILE: &str = "raft.log";
const VOTE_FILE: &str = "vote";
const RECORD_HEADER_BYTES: usize = 8;
/// Most bytes one record may hold. An append is one record: at most a
/// frame's worth of entries from a leader (`network::FRAME_BYTES_MAX`), or
/// the client writes a leader gathered. A length above it is garbage.
pub const RECORD_BYTES_MAX: usize = 256 * 1024 * 1024;

const KIND_ENTRIES: u8 = 1;
const KIND_TRUNCATE: u8 = 2;
const KIND_PURGE: u8 = 3;

/// How the log store keeps its file.
#[derive(Clone, Debug)]
pub struct LogStoreConfig {
    pub dir: PathBuf,
    /// The file is rewritten without its purged entries once it is at least
    /// this large and purged records make up more than half of it.
    pub compact_bytes_min: u64,
}

impl LogStoreConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), compact_bytes_min: 64 * 1024 * 1024 }
    }
}

/// Where one entry is: in the record at `offset` (`len` bytes of body), the
/// `nth` entry of it.
#[derive(Clone, Copy, Debug)]
struct Loc {
    offset: u64,
    len: u32,
    nth: u32,
    log_id: LogId<NodeId>,
}

#[derive(Serialize, Deserialize)]
struct Truncate {
    since: u64,
}

#[derive(Serialize, Deserialize)]
struct Purge {
    upto: LogId<NodeId>,
}

struct Inner {
    cfg: LogStoreConfig,
    file: File,
    /// Bytes of the file (where the next record goes).
    len: u64,
    index: BTreeMap<u64, Loc>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    /// Set once a write or fsync failed: nothing is acknowledged after it
    /// (a failed fsync may have dropped the pages; retrying would lie).
    failed: bool,
    /// `seckill_replica_log_fsync_seconds`, registered once.
    fsync_seconds: metrics::Histogram,
}

/// The durable Raft log. Clones share the file: openraft reads entries for
/// replication through its reader while the core appends.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a Raft log (bad magic)")]
    NotALog { path: PathBuf },
    #[error(
        "{path} is damaged at byte {offset} ({why}) and records follow it: acknowledged entries would be \
         lost. Replace this replica (docs/REPLICATION.md, \"replacing a replica\")"
    )]
    Damaged { path: PathBuf, offset: u64, why: &'static str },
}

/// One record read from the file.
enum Scanned {
    Record {
        kind: u8,
        body_at: u64,
        body: Vec<u8>,
    },
    /// The end of the records; `cut_at` is set when a damaged last record
    /// (a torn, unacknowledged append) starts there.
    End {
        cut_at: Option<u64>,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io { path: path.to_path_buf(), source }
}

/// Reads the record at `at` of the `file_len`-byte file, telling a torn tail
/// (cut it) from damage with records after it (refuse).
fn scan_one(file: &File, path: &Path, at: u64, file_len: u64) -> Result<Scanned, OpenError> {
    if at == file_len {
        return Ok(Scanned::End { cut_at: None });
    }
    let rest = file_len - at;
    let torn = |why: &'static str, reaches_end: bool| -> Result<Scanned, OpenError> {
        if reaches_end || all_zero(file, at, file_len).map_err(io_at(path))? {
            Ok(Scanned::End { cut_at: Some(at) })
        } else {
            Err(OpenError::Damaged { path: path.to_path_buf(), offset: at, why })
        }
    };
    if rest < RECORD_HEADER_BYTES as u64 {
        return torn("short header", true);
    }
    let mut header = [0u8; RECORD_HEADER_BYTES];
    file.read_exact_at(&mut header, at).map_err(io_at(path))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > RECORD_BYTES_MAX {
        return torn("record length out of range", false);
    }
    let end = at + (RECORD_HEADER_BYTES + len) as u64;
    if end > file_len {
        return torn("record runs past the end of the file", true);
    }
    let mut body = vec![0u8; len];
    file.read_exact_at(&mut body, at + RECORD_HEADER_BYTES as u64).map_err(io_at(path))?;
    if crc32c::crc32c(&body) != crc {
        return torn("CRC mismatch", end == file_len);
    }
    Ok(Scanned::Record { kind: body[0], body_at: at + RECORD_HEADER_BYTES as u64, body })
}

fn all_zero(file: &File, from: u64, to: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

fn encode_record(kind: u8, payload: &impl Serialize) -> io::Result<Vec<u8>> {
    let mut body = vec![kind];
    body = postcard::to_extend(payload, body).map_err(io::Error::other)?;
    if body.len() > RECORD_BYTES_MAX {
        return Err(io::Error::other(format!("a log record of {} bytes exceeds {RECORD_BYTES_MAX}", body.len())));
    }
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Files and directories only this user can read, as the engine's data dir
/// (docs/SECURITY.md): the log holds every decision.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// Creates (or empties) `path` for writing, readable by this user only.
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create(true).truncate(true).mode(FILE_MODE).open(path)
}

/// Creates `dir` and its missing parents, accessible by this user only.
pub(crate) fn create_dir_private(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Syncs a directory, so a file created or renamed in it survives a power cut.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `dir/name` with `bytes` so that a crash leaves the old file or
/// the new one, never part of one: a private temp file, synced, renamed, the
/// directory synced.
pub(crate) fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let f = create_private(&tmp)?;
        f.write_all_at(bytes, 0)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

impl Inner {
    /// Opens the log; `read_only` changes nothing on disk (no file created,
    /// no torn tail cut), for reading the log of a running replica.
    fn open(cfg: LogStoreConfig, read_only: bool) -> Result<Inner, OpenError> {
        let path = cfg.dir.join(LOG_FILE);
        if !read_only {
            create_dir_private(&cfg.dir).map_err(io_at(&cfg.dir))?;
        }
        let file = OpenOptions::new()
            .mode(FILE_MODE)
            .read(true)
            .write(!read_only)
            .create(!read_only)
            .truncate(false)
            .open(&path)
            .map_err(io_at(&path))?;
        let mut file_len = file.metadata().map_err(io_at(&path))?.len();
        if file_len < MAGIC.len() as u64 && !read_only {
            // New, or created and cut before its magic was synced: nothing in it.
            file.set_len(0).map_err(io_at(&path))?;
            file.write_all_at(MAGIC, 0).map_err(io_at(&path))?;
            file.sync_all().map_err(io_at(&path))?;
            sync_dir(&cfg.dir).map_err(io_at(&cfg.dir))?;
            file_len = MAGIC.len() as u64;
        }
        let mut magic = [0u8; 8];
        file.read_exact_at(&mut magic, 0).map_err(io_at(&path))?;
        if &magic != MAGIC {
            return Err(OpenError::NotALog { path });
        }
        let vote = read_vote_file(&cfg.dir).map_err(io_at(&cfg.dir))?;
        let mut inner = Inner {
            cfg,
            file,
            len: file_len,
            index: BTreeMap::new(),
            last_purged: None,
            vote,
            failed: false,
            fsync_seconds: metrics::histogram!("seckill_replica_log_fsync_seconds"),
        };
        let mut at = MAGIC.len() as u64;
        loop {
            match scan_one(&inner.file, &path, at, file_len)? {
                Scanned::Record { kind, body_at, body } => {
                    let len = body.len();
                    inner.replay(kind, body_at, &body).map_err(|why| OpenError::Damaged {
                        path: path.clone(),
                        offset: at,
                        why,
                    })?;
                    at = body_at + len as u64;
                }
                Scanned::End { cut_at } => {
                    if let Some(cut) = cut_at.filter(|_| !read_only) {
                        tracing::warn!(path = %path.display(), offset = cut, "cutting a torn, unacknowledged append at the end of the Raft log");
                        inner.file.set_len(cut).map_err(io_at(&path))?;
                        inner.file.sync_all().map_err(io_at(&path))?;
                        inner.len = cut;
                    }
                    break;
                }
            }
        }
        Ok(inner)
    }

    /// Applies one record read back from the file to the index.
    fn replay(&mut self, kind: u8, body_at: u64, body: &[u8]) -> Result<(), &'static str> {
        let payload = &body[1..];
        match kind {
            KIND_ENTRIES => {
                let entries: Vec<Entry<TypeConfig>> =
                    postcard::from_bytes(payload).map_err(|_| "entries do not decode")?;
                let len = u32::try_from(body.len()).map_err(|_| "record too long")?;
                self.index_entries(body_at - RECORD_HEADER_BYTES as u64, len, &entries);
            }
            KIND_TRUNCATE => {
                let t: Truncate = postcard::from_bytes(payload).map_err(|_| "truncation does not decode")?;
                self.index.split_off(&t.since);
            }
            KIND_PURGE => {
                let p: Purge = postcard::from_bytes(payload).map_err(|_| "purge does not decode")?;
                self.forget_upto(p.upto);
            }
            _ => return Err("unknown record kind"),
        }
        Ok(())
    }

    fn index_entries(&mut self, offset: u64, len: u32, entries: &[Entry<TypeConfig>]) {
        for (nth, e) in entries.iter().enumerate() {
            let log_id = *e.get_log_id();
            self.index.insert(log_id.index, Loc { offset, len, nth: nth as u32, log_id });
        }
    }

    fn forget_upto(&mut self, upto: LogId<NodeId>) {
        let keep = self.index.split_off(&(upto.index + 1));
        self.index = keep;
        if self.last_purged.is_none_or(|p| p < upto) {
            self.last_purged = Some(upto);
        }
    }

    /// Writes `record` at the end of the file, fdatasynced when `sync`.
    /// Returns where it starts. After a failure, refuses every write.
    fn write(&mut self, record: &[u8], sync: bool) -> io::Result<u64> {
        if self.failed {
            return Err(io::Error::other("an earlier write or fsync of the Raft log failed"));
        }
        let at = self.len;
        let res = self.file.write_all_at(record, at).and_then(|()| {
            if !sync {
                return Ok(());
            }
            let started = std::time::Instant::now();
            let synced = self.file.sync_data();
            self.fsync_seconds.record(started.elapsed().as_secs_f64());
            synced
        });
        if let Err(e) = res {
            self.failed = true;
            tracing::error!(error = %e, "writing the Raft log failed: this replica acknowledges nothing more");
            return Err(e);
        }
        self.len += record.len() as u64;
        Ok(at)
    }

    fn append(&mut self, entries: &[Entry<TypeConfig>]) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let record = encode_record(KIND_ENTRIES, &entries)?;
        let at = self.write(&record, true)?;
        self.index_entries(at, (record.len() - RECORD_HEADER_BYTES) as u32, entries);
        Ok(())
    }

    fn read(&self, range: impl RangeBounds<u64>) -> io::Result<Vec<Entry<TypeConfig>>> {
        let mut out = Vec::new();
        let mut cached: Option<(u64, Vec<Entry<TypeConfig>>)> = None;
        for loc in self.index.range(range).map(|(_, l)| *l) {
            if cached.as_ref().is_none_or(|(off, _)| *off != loc.offset) {
                let mut body = vec![0u8; loc.len as usize];
                self.file.read_exact_at(&mut body, loc.offset + RECORD_HEADER_BYTES as u64)?;
                let entries = postcard::from_bytes(&body[1..]).map_err(io::Error::other)?;
                cached = Some((loc.offset, entries));
            }
            let Some((_, entries)) = &cached else { continue };
            let e = entries
                .get(loc.nth as usize)
                .filter(|e| *e.get_log_id() == loc.log_id)
                .ok_or_else(|| io::Error::other(format!("log entry {} is not where the index says", loc.log_id)))?;
            out.push(e.clone());
        }
        Ok(out)
    }

    /// Rewrites the file with only the entries after the last purge, once
    /// purged records make up most of a large file.
    fn maybe_compact(&mut self) -> io::Result<()> {
        let live_bytes: u64 = {
            let mut seen = std::collections::BTreeSet::new();
            self.index
                .values()
                .filter(|l| seen.insert(l.offset))
                .map(|l| l.len as u64 + RECORD_HEADER_BYTES as u64)
                .sum()
        };
        if self.len < self.cfg.compact_bytes_min || live_bytes * 2 > self.len {
            return Ok(());
        }
        let path = self.cfg.dir.join(LOG_FILE);
        let tmp = self.cfg.dir.join(format!("{LOG_FILE}.tmp"));
        let f = create_private(&tmp)?;
        let mut at = 0u64;
        let mut put = |bytes: &[u8]| -> io::Result<()> {
            f.write_all_at(bytes, at)?;
            at += bytes.len() as u64;
            Ok(())
        };
        put(MAGIC)?;
        if let Some(upto) = self.last_purged {
            put(&encode_record(KIND_PURGE, &Purge { upto })?)?;
        }
        // One old record at a time (its live entries), so memory stays
        // within one record however long the log.
        let locs: Vec<Loc> = self.index.values().copied().collect();
        for same_record in locs.chunk_by(|a, b| a.offset == b.offset) {
            let (first, last) = (same_record[0].log_id.index, same_record[same_record.len() - 1].log_id.index);
            put(&encode_record(KIND_ENTRIES, &self.read(first..=last)?)?)?;
        }
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.cfg.dir)?;
        let before = self.len;
        let reopened = Inner::open(self.cfg.clone(), false).map_err(io::Error::other)?;
        *self = reopened;
        tracing::info!(before_bytes = before, after_bytes = self.len, "compacted the Raft log");
        Ok(())
    }
}

fn read_vote_file(dir: &Path) -> io::Result<Option<Vote<NodeId>>> {
    let bytes = match std::fs::read(dir.join(VOTE_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let (crc, body) = bytes.split_at_checked(4).ok_or_else(|| io::Error::other("vote file too short"))?;
    if crc32c::crc32c(body).to_le_bytes() != crc {
        // Written to a temp file, synced and renamed: never torn. A bad CRC
        // is damage, and a replica that forgot its vote could vote twice.
        return Err(io::Error::other("the vote file is damaged"));
    }
    postcard::from_bytes(body).map(Some).map_err(io::Error::other)
}

fn write_vote_file(dir: &Path, vote: &Vote<NodeId>) -> io::Result<()> {
    let body = postcard::to_stdvec(vote).map_err(io::Error::other)?;
    let mut bytes = crc32c::crc32c(&body).to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    replace_file(dir, VOTE_FILE, &bytes)
}

impl LogStore {
    /// Opens (or creates) the log in `cfg.dir`, replaying its records.
    pub fn open(cfg: LogStoreConfig) -> Result<LogStore, OpenError> {
        Ok(LogStore { inner: Arc::new(Mutex::new(Inner::open(cfg, false)?)) })
    }

    /// Every entry in the log in `dir`, read back from the file without
    /// changing it (the replica may be running). For tests and operators:
    /// what this replica would have after a restart.
    pub fn read_all(dir: &Path) -> Result<Vec<Entry<TypeConfig>>, OpenError> {
        let inner = Inner::open(LogStoreConfig::new(dir), true)?;
        inner.read(..).map_err(io_at(dir))
    }
}

fn read_err(e: io::Error) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: io::Error) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let range = (clone_bound(range.start_bound()), clone_bound(range.end_bound()));
        self.inner.lock().read(range).map_err(read_err)
    }
}

fn clone_bound(b: Bound<&u64>) -> Bound<u64> {
    match b {
        Bound::Included(x) => Bound::Included(*x),
        Bound::Excluded(x) => Bound::Excluded(*x),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.inner.lock();
        let last = inner.index.values().next_back().map(|l| l.log_id).or(inner.last_purged);
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock();
        write_vote_file(&inner.cfg.dir, vote).map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().vote)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        // Written and fdatasynced before the callback: openraft counts this
        // replica towards a majority (and a follower answers the leader)
        // only once the callback ran.
        let res = self.inner.lock().append(&entries);
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = write_err(io::Error::new(e.kind(), e.to_string()));
                callback.log_io_completed(Err(e));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock();
        let record = encode_record(KIND_TRUNCATE, &Truncate { since: log_id.index }).map_err(write_err)?;
        // Synced: entries a new leader replaced must not come back after a
        // power cut and be offered as this replica's log.
        inner.write(&record, true).map_err(write_err)?;
        inner.index.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock();
        let record = encode_record(KIND_PURGE, &Purge { upto: log_id }).map_err(write_err)?;
        inner.write(&record, false).map_err(write_err)?;
        inner.forget_upto(log_id);
        inner.maybe_compact().map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Batch;
    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::log_id;
    use openraft::EntryPayload;

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry { log_id: log_id(term, 1, index), payload: EntryPayload::Normal(Batch(vec![index as u8; 100].into())) }
    }

    fn indexes(dir: &Path) -> Vec<(u64, u64)> {
        LogStore::read_all(dir).expect("reads back").iter().map(|e| (e.log_id.leader_id.term, e.log_id.index)).collect()
    }

    fn file_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join(LOG_FILE)).expect("log file").len()
    }

    #[tokio::test]
    async fn appends_truncations_purges_and_the_vote_survive_a_reopen() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path();
        let mut log = LogStore::open(LogStoreConfig::new(dir)).expect("opens");
        log.blocking_append((1..=5).map(|i| entry(1, i))).await.expect("append");
        log.truncate(log_id(1, 1, 4)).await.expect("truncate");
        log.blocking_append([entry(2, 4)]).await.expect("append after truncation");
        log.purge(log_id(1, 1, 2)).await.expect("purge");
        let vote = Vote::new(2, 1);
        log.save_vote(&vote).await.expect("vote");
        drop(log);

        assert_eq!(indexes(dir), vec![(1, 3), (2, 4)]);
        use std::os::unix::fs::PermissionsExt;
        for f in [LOG_FILE, VOTE_FILE] {
            let mode = std::fs::metadata(dir.join(f)).expect("file").permissions().mode() & 0o777;
            assert_eq!(mode, FILE_MODE, "{f}: only this user may read the log");
        }
        let mut log = LogStore::open(LogStoreConfig::new(dir)).expect("reopens");
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 2)));
        assert_eq!(state.last_log_id, Some(log_id(2, 1, 4)));
        assert_eq!(log.read_vote().await.expect("vote"), Some(vote));
        let got = log.try_get_log_entries(3..5).await.expect("entries");
        assert_eq!(got, vec![entry(1, 3), entry(2, 4)]);
    }

    #[tokio::test]
    async fn a_log_purged_to_its_end_still_reports_its_last_id() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut log = LogStore::open(LogStoreConfig::new(tmp.path())).expect("opens");
        log.blocking_append((1..=3).map(|i| entry(1, i))).await.expect("append");
        log.purge(log_id(1, 1, 3)).await.expect("purge");
        let state = log.get_log_state().await.expect("state");
        assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(1, 1, 3)), Some(log_id(1, 1, 3))));
    }

    /// A power cut in the middle of an append leaves part of its record:
    /// it was never acknowledged, so it is cut and the rest kept.
    #[tokio::test]
    async fn a_torn_last_append_is_cut() {
        for tail in ["half", "zeros"] {
            let tmp = tempfile::tempdir().expect("temp dir");
            let dir = tmp.path();
            let mut log = LogStore::open(LogStoreConfig::new(dir)).expect("opens");
            log.blocking_append((1..=2).map(|i| entry(1, i))).await.expect("append");
            let good = file_len(dir);
            log.blocking_append([entry(1, 3)]).await.expect("append");
            drop(log);
            let f = OpenOptions::new().write(true).open(dir.join(LOG_FILE)).expect("open");
            match tail {
                "half" => f.set_len(file_len(dir) - 10).expect("cut"),
                _ => f.write_all_at(&[0u8; 300], good).expect("zeros over the last record"),
            }
            drop(f);
            assert_eq!(indexes(dir), vec![(1, 1), (1, 2)], "{tail}");
            let mut log = LogStore::open(LogStoreConfig::new(dir)).expect("reopens");
            assert_eq!(file_len(dir), good, "{tail}: the torn record is cut");
            log.blocking_append([entry(2, 3)]).await.expect("appends after the cut");
            drop(log);
            assert_eq!(indexes(dir), vec![(1, 1), (1, 2), (2, 3)], "{tail}");
        }
    }

    /// Damage with records after it is not a torn append: opening refuses
    /// rather than drop entries this replica acknowledged.
    #[tokio::test]
    async fn damage_before_the_last_record_refuses_to_open() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path();
        let mut log = LogStore::open(LogStoreConfig::new(dir)).expect("opens");
        log.blocking_append([entry(1, 1)]).await.expect("append");
        log.blocking_append([entry(1, 2)]).await.expect("append");
        drop(log);
        let f = OpenOptions::new().write(true).open(dir.join(LOG_FILE)).expect("open");
        f.write_all_at(b"x", MAGIC.len() as u64 + 20).expect("flip a byte of the first record");
        drop(f);
        match LogStore::open(LogStoreConfig::new(dir)) {
            Err(OpenError::Damaged { offset, .. }) => assert_eq!(offset, MAGIC.len() as u64),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a damaged log opened"),
        }
    }

    #[tokio::test]
    async fn purged_records_are_compacted_away() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path();
        let cfg = LogStoreConfig { dir: dir.to_path_buf(), compact_bytes_min: 4096 };
        let mut log = LogStore::open(cfg.clone()).expect("opens");
        for i in 1..=100 {
            log.blocking_append([entry(1, i)]).await.expect("append");
        }
        let before = file_len(dir);
        log.purge(log_id(1, 1, 90)).await.expect("purge");
        assert!(file_len(dir) < before / 4, "{} bytes after compaction, {before} before", file_len(dir));
        log.blocking_append([entry(1, 101)]).await.expect("append after compaction");
        drop(log);
        let mut log = LogStore::open(cfg).expect("reopens");
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 90)));
        let got = log.try_get_log_entries(..).await.expect("entries");
        assert_eq!(got, (91..=101).map(|i| entry(1, i)).collect::<Vec<_>>());
    }

    #[test]
    fn a_damaged_vote_file_is_an_error_not_a_fresh_vote() {
        let tmp = tempfile::tempdir().expect("temp dir");
        write_vote_file(tmp.path(), &Vote { leader_id: openraft::LeaderId::new(3, 2), committed: true })
            .expect("write");
        let mut bytes = std::fs::read(tmp.path().join(VOTE_FILE)).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(tmp.path().join(VOTE_FILE), bytes).expect("write");
        assert!(read_vote_file(tmp.path()).is_err());
    }
}
