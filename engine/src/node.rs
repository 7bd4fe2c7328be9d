//! A durable engine on a data dir: lock the dir, recover, start the WAL and
//! the shards. `seckill engine` and `seckill up` run one `Node`.

use crate::clock::Clock;
use crate::commit::Sink;
use crate::engine::{Engine, EngineConfig};
use crate::wal::fs::{self, DirLock, Fs, SharedFs};
use crate::wal::{Durability, OnFailure, RecoveryError, Wal, WalConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where and how a node keeps its state: data dir, durability, engine and WAL settings.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub durability: Durability,
    pub engine: EngineConfig,
    pub snapshot_every_records: u64,
    pub segment_bytes_max: u64,
    /// A failed WAL write or fsync exits the process (the default) or
    /// leaves it up answering `busy` (tests).
    pub on_failure: OnFailure,
}

impl NodeConfig {
    /// The defaults (fsync, default segment and snapshot sizes) for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let wal = WalConfig::new(data_dir);
        Self {
            data_dir: wal.data_dir,
            durability: wal.durability,
            engine: EngineConfig::default(),
            snapshot_every_records: wal.snapshot_every_records,
            segment_bytes_max: wal.segment_bytes_max,
            on_failure: wal.on_failure,
        }
    }
}

/// Why a node did not start.
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
    #[error(
        "data dir {path} belongs to group {found}, not {wanted}: its ids name their group, \
         so start with --group {found}"
    )]
    Group { path: PathBuf, found: u8, wanted: u8 },
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error("recovered state is inconsistent: {0}")]
    Inconsistent(String),
}

/// A running engine on its data dir: recovered state, WAL writer, snapshot
/// thread and shards. Holds the data dir's lock while it lives.
pub struct Node {
    pub engine: Arc<Engine>,
    pub wal: Wal,
    pub data_dir: PathBuf,
    _lock: Box<dyn DirLock>,
}

impl Node {
    /// Locks the data dir, recovers from the newest snapshot and the log, then
    /// starts the WAL and the shards. Warns when the data dir is readable by others.
    pub fn open(cfg: NodeConfig, clock: Arc<dyn Clock>) -> Result<Node, NodeError> {
        let dir = cfg.data_dir.clone();
        let node = Self::open_with(cfg, clock, fs::os_fs())?;
        if let Some(warning) = looser_than_private(&dir) {
            tracing::warn!("{warning}");
        }
        Ok(node)
    }

    /// `open` on another file system: the simulated disk of the simulation
    /// test, or one that injects faults (everything else uses the OS).
    pub fn open_with(cfg: NodeConfig, clock: Arc<dyn Clock>, fs: SharedFs) -> Result<Node, NodeError> {
        let dir = &cfg.data_dir;
        let io = |source| NodeError::Io { path: dir.clone(), source };
        fs::create_dir_durable(&*fs, dir).map_err(io)?;
        let lock = fs.lock(dir).map_err(io)?.ok_or_else(|| NodeError::Locked(dir.clone()))?;
        check_meta(&*fs, dir, cfg.engine.shards, cfg.engine.group)?;
        let wal_cfg = WalConfig {
            data_dir: dir.clone(),
            durability: cfg.durability,
            segment_bytes_max: cfg.segment_bytes_max,
            snapshot_every_records: cfg.snapshot_every_records,
            on_failure: cfg.on_failure,
        };
        // One shard commits on its own thread (no hand-off per batch);
        // several share a writer thread that gathers their batches into one
        // fsync. docs/ARCHITECTURE.md, "Thread layout".
        let (wal, replica, sink) = if cfg.engine.shards == 1 {
            let (wal, replica, writer) = Wal::open_owned(&wal_cfg, fs)?;
            (wal, replica, Sink::Own(Box::new(writer)))
        } else {
            let (wal, replica, batches) = Wal::open(&wal_cfg, fs)?;
            (wal, replica, Sink::Log(batches))
        };
        let (catalog, states) =
            replica.into_parts(cfg.engine.shards, cfg.engine.group).map_err(NodeError::Inconsistent)?;
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

/// A data dir made by this engine is 0700 (`OsFs`); one that existed
/// before may be looser. Other users could then read the WAL and snapshots
/// (every order): say so, with the fix. The engine still starts (the files
/// it writes are 0600 regardless), so an upgrade never stops a sale.
pub(crate) fn looser_than_private(dir: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "data dir {} is mode {mode:04o}: other local users can list it and read files in it that were \
             created before this version (orders, secrets); fix: chmod 700 {} (and chmod 600 the files in it)",
            dir.display(),
            dir.display()
        )
    })
}

/// `engine.meta`: the shard count (`shards=N`) and, for a group other
/// than 0, the group (`group=G`; no line means 0, so a data dir made before
/// groups is group 0's and its file stays as it was). Written on the first
/// start, checked on every later one: order ids name their shard and every
/// id names its group, so neither may change for the life of a data dir.
/// Replicas (`seckill engine --replica-id`) keep one too.
pub fn check_meta(fs: &dyn Fs, dir: &Path, wanted: usize, group: u8) -> Result<(), NodeError> {
    let path = dir.join("engine.meta");
    let io = |source| NodeError::Io { path: path.clone(), source };
    match fs.read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let line = |key: &str| text.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()));
            let found = line("shards=")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| NodeError::Inconsistent(format!("{} has no shards= line", path.display())))?;
            if found != wanted {
                return Err(NodeError::ShardCount { path: dir.to_path_buf(), found, wanted });
            }
            let found_group = match line("group=") {
                None => 0,
                Some(g) => g.parse::<u8>().map_err(|_| {
                    NodeError::Inconsistent(format!("{}: group={g} is not a group number", path.display()))
                })?,
            };
            if found_group != group {
                return Err(NodeError::Group { path: dir.to_path_buf(), found: found_group, wanted: group });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join("engine.meta.tmp");
            let mut f = fs.create(&tmp).map_err(io)?;
            let text = match group {
                0 => format!("shards={wanted}\n"),
                g => format!("shards={wanted}\ngroup={g}\n"),
            };
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            drop(f);
            fs.rename(&tmp, &path).map_err(io)?;
            fs.sync_dir(dir).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}
