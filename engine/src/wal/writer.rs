//! The WAL writer thread: the one owner of the log files.
//!
//! Group commit: it takes every batch that arrived while the previous fsync
//! ran, writes them with one `write` and one `fdatasync`, and only then
//! releases them (tokens back, answers out). If a write or fsync fails it
//! never acknowledges again: the pages that failed may be lost, and retrying
//! the fsync would only report success for data that is gone (fsyncgate).

use super::codec::{Encoder, HEADER_BYTES};
use super::fs::SharedFs;
use super::segment::{self, MAGIC};
use super::trim::Trimmer;
use super::{Checkpoints, Durability};
use crate::commit::Batch;
use crate::event::Event;
use crossbeam_channel::Receiver;
use seckill_proto::ErrorCode;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Bytes gathered into one group before it is written, whatever is queued.
pub(crate) const GROUP_BYTES_MAX: usize = 4 * 1024 * 1024;
/// A rough record size, to stop gathering a group before it exceeds
/// `GROUP_BYTES_MAX` without encoding it first.
const EVENT_BYTES_ESTIMATE: usize = 128;
/// Zeros kept written (and synced) ahead of the records. A group written
/// over them changes no file size, so its fdatasync writes the data and a
/// flush but not the inode: on the VM of docs/PERFORMANCE.md 145 µs instead
/// of 230 µs of wall time and 56 instead of 83 µs of CPU. Every this many
/// bytes one group also writes the next zeros (and pays for the size).
pub(crate) const ZEROS_AHEAD_BYTES: usize = 256 * 1024;
/// The zeros a group appends when it reaches the end of those written.
static ZEROS: [u8; ZEROS_AHEAD_BYTES] = [0; ZEROS_AHEAD_BYTES];

/// Creates the segment at `path`: magic, then `ZEROS_AHEAD_BYTES` of zeros,
/// synced. The caller syncs the directory. Returns the file and its length.
pub(crate) fn start_segment(fs: &dyn super::fs::Fs, path: &std::path::Path) -> io::Result<(Box<dyn LogFile>, u64)> {
    let mut file = fs.open_segment(path)?;
    file.write_all_at(MAGIC, 0)?;
    file.write_all_at(&ZEROS, MAGIC.len() as u64)?;
    file.sync_data()?;
    Ok((file, (MAGIC.len() + ZEROS_AHEAD_BYTES) as u64))
}

use super::fs::LogFile;

/// State the writer shares read-only with the rest of the process.
#[derive(Debug, Default)]
pub struct WalStatus {
    /// Highest LSN written to the OS.
    pub written_lsn: AtomicU64,
    /// Highest LSN known durable (equal to written with `--durability none`).
    pub durable_lsn: AtomicU64,
    /// Set once a write or fsync failed; nothing is acknowledged after it.
    pub failed: AtomicBool,
    pub fsyncs: AtomicU64,
    /// How long each fdatasync took (the dashboard's p50/p99).
    pub fsync_latency: seckill_proto::stats::LatencyHistogram,
}

/// The writer's Prometheus handles, registered once when it starts.
struct WriterMetrics {
    bytes: metrics::Counter,
    records: metrics::Counter,
    fsync_seconds: metrics::Histogram,
    durable_lsn: metrics::Gauge,
    failed: metrics::Gauge,
}

impl WriterMetrics {
    fn new() -> Self {
        Self {
            bytes: metrics::counter!("seckill_wal_bytes_total"),
            records: metrics::counter!("seckill_wal_records_total"),
            fsync_seconds: metrics::histogram!("seckill_wal_fsync_seconds"),
            durable_lsn: metrics::gauge!("seckill_wal_durable_lsn"),
            failed: metrics::gauge!("seckill_wal_failed"),
        }
    }
}

/// What the writer does once a write or fsync failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// Crash-only: log why and exit the process (status 70), so that
    /// nothing keeps claiming health; a restart recovers from the log.
    #[default]
    Exit,
    /// Stay up and answer `busy` to everything (tests that look at a
    /// failed node from inside the process).
    AnswerBusy,
}

/// How the writer keeps the log.
pub struct WriterConfig {
    pub dir: PathBuf,
    pub durability: Durability,
    pub segment_bytes_max: u64,
    pub on_failure: OnFailure,
}

/// The only writer of `wal/`: appends groups of records and makes them
/// durable with one write and one `fdatasync` each.
pub struct Writer {
    cfg: WriterConfig,
    fs: SharedFs,
    file: Box<dyn LogFile>,
    /// Where the next record goes in the segment.
    segment_bytes: u64,
    /// The segment's length: records, then zeros up to here.
    zeroed_to: u64,
    next_lsn: u64,
    status: Arc<WalStatus>,
    checkpoints: Arc<Checkpoints>,
    encoder: Encoder,
    buf: Vec<u8>,
    /// `commit_one`'s group, kept to reuse its allocation.
    scratch: Vec<Batch>,
    /// The LSN of the last record written (for `seckill_wal_records_total`).
    flushed_lsn: u64,
    metrics: WriterMetrics,
    /// Segments no consumer needs any more, cut away a slice at a time.
    trimmer: Trimmer,
    /// Commits since the trimmer's last step.
    commits_since_trim: u32,
}

/// Commits between two trimmer steps: at ~2,000 commits/s a 64 MiB segment
/// goes in ~0.25 s, with the device spending ~5 % of its time on discards.
const TRIM_EVERY_COMMITS: u32 = 16;

impl Writer {
    /// Starts the tail segment for `next_lsn` in `cfg.dir` (the caller
    /// syncs the directory) and the writer that appends to it.
    pub fn open(
        cfg: WriterConfig,
        fs: SharedFs,
        next_lsn: u64,
        status: Arc<WalStatus>,
        checkpoints: Arc<Checkpoints>,
    ) -> io::Result<Self> {
        assert!(next_lsn >= 1);
        let (file, zeroed_to) = start_segment(&*fs, &segment::segment_path(&cfg.dir, next_lsn))?;
        let metrics = WriterMetrics::new();
        // Exported from the start, so an alert on it has a series to watch.
        metrics.failed.set(0.0);
        metrics.durable_lsn.set((next_lsn - 1) as f64);
        status.written_lsn.store(next_lsn - 1, Ordering::Release);
        status.durable_lsn.store(next_lsn - 1, Ordering::Release);
        let mut trimmer = Trimmer::default();
        if let Err(e) = trimmer.adopt_leftovers(&*fs, &cfg.dir) {
            tracing::warn!(error = %e, "could not list retired WAL segments; they stay until the next start");
        }
        Ok(Self {
            cfg,
            fs,
            file,
            segment_bytes: MAGIC.len() as u64,
            zeroed_to,
            next_lsn,
            status,
            checkpoints,
            encoder: Encoder::default(),
            buf: Vec::with_capacity(GROUP_BYTES_MAX),
            scratch: Vec::with_capacity(1),
            flushed_lsn: next_lsn - 1,
            metrics,
            trimmer,
            commits_since_trim: 0,
        })
    }

    /// Runs until every sender of `rx` is gone, then returns after a final
    /// fsync (everything acknowledged was already durable).
    pub fn run(mut self, rx: Receiver<Batch>) {
        let mut group: Vec<Batch> = Vec::with_capacity(1024);
        while let Ok(first) = rx.recv() {
            group.push(first);
            let mut bytes = 0;
            while bytes < GROUP_BYTES_MAX {
                let Ok(b) = rx.try_recv() else { break };
                bytes += b.events.len() * EVENT_BYTES_ESTIMATE;
                group.push(b);
            }
            self.commit(&mut group);
        }
        tracing::info!(durable_lsn = self.status.durable_lsn.load(Ordering::Acquire), "WAL writer stopped");
    }

    /// Whether every commit ends with an fdatasync.
    pub fn fsyncs(&self) -> bool {
        self.cfg.durability == Durability::Fsync
    }

    /// `commit` for one batch (the shard that owns the writer).
    pub(crate) fn commit_one(&mut self, batch: &mut Batch) {
        let mut group = std::mem::take(&mut self.scratch);
        group.push(std::mem::take(batch));
        self.commit(&mut group);
        self.scratch = group;
    }

    /// Makes `group` durable with one write and one fdatasync, then releases
    /// it (tokens back, answers out); on failure answers `busy` instead.
    /// Leaves `group` empty. The writer thread calls this for every group it
    /// gathers; a shard that owns the writer (one-shard layout) calls it on
    /// its own thread, so a buy needs no hand-off to another thread.
    pub fn commit(&mut self, group: &mut Vec<Batch>) {
        for b in group.iter() {
            self.encode(&b.events);
        }
        if self.status.failed.load(Ordering::Acquire) {
            self.fail_group(group);
            return;
        }
        match self.flush() {
            Ok(()) => {
                for mut b in group.drain(..) {
                    b.release();
                }
                if let Err(e) = self.maybe_rotate() {
                    self.fail(&e, "rotating the WAL segment");
                }
                self.trim_step();
            }
            Err(e) => {
                self.fail(&e, "writing the WAL");
                self.fail_group(group);
            }
        }
    }

    /// Appends records encoded elsewhere (a replica group's committed
    /// entry, `wal::copy`): `records` holds the records of LSNs
    /// `next_lsn() ..= last_lsn`, in the segment format. Synced only with
    /// `--durability fsync`; on an error nothing more is appended.
    pub(crate) fn append_encoded(&mut self, records: &[u8], last_lsn: u64) -> io::Result<()> {
        if self.status.failed.load(Ordering::Acquire) {
            return Err(io::Error::other("an earlier write to the WAL failed"));
        }
        self.buf.extend_from_slice(records);
        self.next_lsn = last_lsn + 1;
        let wrote = self.flush().and_then(|()| self.maybe_rotate());
        if let Err(e) = &wrote {
            self.fail(e, "writing the WAL copy");
        }
        self.trim_step();
        wrote
    }

    /// The LSN the next record gets.
    pub(crate) fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    fn encode(&mut self, events: &[Event]) {
        for ev in events {
            self.encoder.append(&mut self.buf, self.next_lsn, ev);
            self.next_lsn += 1;
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let at = self.segment_bytes;
        self.file.write_all_at(&self.buf, at)?;
        self.segment_bytes += self.buf.len() as u64;
        if self.segment_bytes > self.zeroed_to - HEADER_BYTES as u64 {
            // The next zeros, synced with this group: readers always find a
            // whole zero header after the last record.
            self.file.write_all_at(&ZEROS, self.segment_bytes)?;
            self.zeroed_to = self.segment_bytes + ZEROS_AHEAD_BYTES as u64;
        }
        self.metrics.bytes.increment(self.buf.len() as u64);
        self.buf.clear();
        let last = self.next_lsn - 1;
        self.metrics.records.increment(last - self.flushed_lsn);
        self.flushed_lsn = last;
        self.status.written_lsn.store(last, Ordering::Release);
        if self.cfg.durability == Durability::Fsync {
            let started = Instant::now();
            self.file.sync_data()?;
            let took = started.elapsed();
            self.metrics.fsync_seconds.record(took.as_secs_f64());
            self.status.fsync_latency.record(took);
            self.status.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        self.status.durable_lsn.store(last, Ordering::Release);
        self.metrics.durable_lsn.set(last as f64);
        Ok(())
    }

    fn fail(&mut self, e: &io::Error, what: &str) {
        self.status.failed.store(true, Ordering::Release);
        self.buf.clear();
        self.metrics.failed.set(1.0);
        match self.cfg.on_failure {
            OnFailure::Exit => {
                tracing::error!(error = %e, "{what} failed: the engine exits; restart it to recover from the log");
                eprintln!("seckill: {what} failed ({e}); exiting so that a restart recovers from the WAL");
                std::process::exit(70);
            }
            OnFailure::AnswerBusy => {
                tracing::error!(error = %e, "{what} failed: the engine stops acknowledging; restart it to recover from the log");
            }
        }
    }

    /// Answers `busy` to everyone in the group and keeps their tokens taken:
    /// the decisions may or may not be on disk, so the stock stays out of
    /// the pool until a restart recovers the truth from the log.
    fn fail_group(&mut self, group: &mut Vec<Batch>) {
        self.buf.clear();
        for b in group.drain(..) {
            for r in b.replies {
                r.tx.send(r.tag, seckill_proto::Response::Error(ErrorCode::Busy));
            }
        }
    }

    fn maybe_rotate(&mut self) -> io::Result<()> {
        if self.segment_bytes < self.cfg.segment_bytes_max {
            return Ok(());
        }
        let path = segment::segment_path(&self.cfg.dir, self.next_lsn);
        let (file, zeroed_to) = start_segment(&*self.fs, &path)?;
        // Renamed before the sync, so the new segment and the old ones'
        // new names are durable together.
        self.retire_old_segments();
        self.fs.sync_dir(&self.cfg.dir)?;
        self.file = file;
        self.segment_bytes = MAGIC.len() as u64;
        self.zeroed_to = zeroed_to;
        Ok(())
    }

    /// Retires segments whose every record is at or below what all
    /// consumers (snapshot, persister, mirror) no longer need.
    fn retire_old_segments(&mut self) {
        let keep_after = self.checkpoints.min();
        let Ok(segments) = segment::list_in(&*self.fs, &self.cfg.dir) else { return };
        for pair in segments.windows(2) {
            // Records of pair[0] are pair[0].first_lsn ..= pair[1].first_lsn - 1.
            if pair[1].first_lsn.saturating_sub(1) <= keep_after {
                match self.trimmer.retire(&*self.fs, &pair[0].path) {
                    Ok(()) => tracing::debug!(path = %pair[0].path.display(), "retired WAL segment"),
                    Err(e) => tracing::warn!(error = %e, "could not retire an old WAL segment"),
                }
            }
        }
    }

    /// One slice off a retired segment every [`TRIM_EVERY_COMMITS`] commits.
    fn trim_step(&mut self) {
        if self.trimmer.is_idle() {
            return;
        }
        self.commits_since_trim += 1;
        if self.commits_since_trim >= TRIM_EVERY_COMMITS {
            self.commits_since_trim = 0;
            self.trimmer.step(&*self.fs);
        }
    }
}
