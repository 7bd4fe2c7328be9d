//! A durable engine on a data dir: lock the dir, recover, start the WAL and
//! the shards. `seckill engine` and `seckill up` run one `Node`.

use crate::clock::Clock;
use crate::commit::Sink;
use crate::engine::{Engine, EngineConfig};
use crate::wal::{writer::open_os_segment, Durability, OpenSegment, RecoveryError, Wal, WalConfig};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub durability: Durability,
    pub engine: EngineConfig,
    pub snapshot_every_records: u64,
    pub segment_bytes_max: u64,
}

impl NodeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let wal = WalConfig::new(data_dir);
        Self {
            data_dir: wal.data_dir,
            durability: wal.durability,
            engine: EngineConfig::default(),
            snapshot_every_records: wal.snapshot_every_records,
            segment_bytes_max: wal.segment_bytes_max,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot use data dir {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("data dir {0} is in use by another seckill engine; stop it first (or use another --data-dir)")]
    Locked(PathBuf),
    #[error(
        "data dir {path} was written with {found} shards, not {wanted}: order ids name their shard, \
         so start with --shards {found}"
    )]
    ShardCount { path: PathBuf, found: usize, wanted: usize },
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error("recovered state is inconsistent: {0}")]
    Inconsistent(String),
}

pub struct Node {
    pub engine: Arc<Engine>,
    pub wal: Wal,
    pub data_dir: PathBuf,
    _lock: File,
}

impl Node {
    pub fn open(cfg: NodeConfig, clock: Arc<dyn Clock>) -> Result<Node, NodeError> {
        Self::open_with(cfg, clock, open_os_segment())
    }

    /// `open` with the WAL's segment files opened by `open` (tests inject
    /// disk faults through it; everything else uses `open_os_segment`).
    pub fn open_with(cfg: NodeConfig, clock: Arc<dyn Clock>, open: OpenSegment) -> Result<Node, NodeError> {
        let dir = &cfg.data_dir;
        let io = |source| NodeError::Io { path: dir.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = lock_dir(dir)?;
        check_shard_count(dir, cfg.engine.shards)?;
        let wal_cfg = WalConfig {
            data_dir: dir.clone(),
            durability: cfg.durability,
            segment_bytes_max: cfg.segment_bytes_max,
            snapshot_every_records: cfg.snapshot_every_records,
        };
        // One shard commits on its own thread (no hand-off per batch);
        // several share a writer thread that gathers their batches into one
        // fsync. docs/ARCHITECTURE.md, "Thread layout".
        let (wal, replica, sink) = if cfg.engine.shards == 1 {
            let (wal, replica, writer) = Wal::open_owned(&wal_cfg, open)?;
            (wal, replica, Sink::Own(Box::new(writer)))
        } else {
            let (wal, replica, batches) = Wal::open(&wal_cfg, open)?;
            (wal, replica, Sink::Log(batches))
        };
        let (catalog, states) = replica.into_parts(cfg.engine.shards).map_err(NodeError::Inconsistent)?;
        let engine = Engine::start_from(cfg.engine.clone(), clock, sink, catalog, states);
        tracing::info!(
            data_dir = %dir.display(),
            shards = cfg.engine.shards,
            durability = ?cfg.durability,
            next_lsn = wal.status.durable_lsn.load(std::sync::atomic::Ordering::Acquire) + 1,
            "engine ready"
        );
        Ok(Node { engine: Arc::new(engine), wal, data_dir: dir.clone(), _lock: lock })
    }

    /// Clean stop: the shards decide what is queued, the WAL makes it
    /// durable, everyone gets an answer.
    pub fn shutdown(&self) {
        self.engine.close();
        if self.engine.sync().is_err() {
            tracing::warn!("the WAL was not accepting writes at shutdown");
        }
    }
}

fn lock_dir(dir: &Path) -> Result<File, NodeError> {
    let path = dir.join("LOCK");
    let io = |source| NodeError::Io { path: path.clone(), source };
    let mut f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(NodeError::Locked(dir.to_path_buf()));
    }
    f.set_len(0).map_err(io)?;
    writeln!(f, "{}", std::process::id()).map_err(io)?;
    Ok(f)
}

fn check_shard_count(dir: &Path, wanted: usize) -> Result<(), NodeError> {
    let path = dir.join("engine.meta");
    let io = |source| NodeError::Io { path: path.clone(), source };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found = text
                .lines()
                .find_map(|l| l.strip_prefix("shards="))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .ok_or_else(|| NodeError::Inconsistent(format!("{} has no shards= line", path.display())))?;
            if found != wanted {
                return Err(NodeError::ShardCount { path: dir.to_path_buf(), found, wanted });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join("engine.meta.tmp");
            let mut f = File::create(&tmp).map_err(io)?;
            writeln!(f, "shards={wanted}").map_err(io)?;
            f.sync_all().map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            crate::wal::sync_dir(dir).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}
