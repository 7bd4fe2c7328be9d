//! One replica: its durable log, its state machine, the server its peers
//! call, and the Raft instance that ties them; a [`Proposer`] is how the
//! leader's engine hands batches to the group. Runs inside a tokio runtime
//! (openraft spawns its tasks on it).

use crate::log_store::{LogStore, LogStoreConfig, OpenError};
use crate::membership::Membership;
use crate::network::{serve, NetworkFactory, Served};
use crate::state_machine::{Apply, ApplyError, StateMachine};
use crate::{Applied, Batch, NodeId, Raft, TypeConfig, BATCH_BYTES_MAX};
use openraft::error::ClientWriteError;
use openraft::raft::responder::Responder;
use openraft::{Config, SnapshotPolicy};
use seckill_proto::handshake::WireKey;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What `client_write_ff` hands back: the answer to one entry, once applied.
type ResponderReceiverOf<C> = <<C as openraft::RaftTypeConfig>::Responder as Responder<C>>::Receiver;

/// Bytes of one snapshot chunk on the wire (well under the frame limit).
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;

/// The Raft timing and compaction a group runs with by default.
///
/// Heartbeats every 100 ms and elections after 0.5–1 s of silence: a
/// leader's death costs about a second of refused buys, and a 2-core box
/// shared by three replicas under load does not miss heartbeats often
/// enough to start needless elections. A snapshot every 10 000 entries
/// (each a group of up to 256 decisions); 1 000 entries kept behind it so
/// a follower that lagged a little catches up from the log, not a snapshot.
pub fn default_raft_config() -> Config {
    Config {
        cluster_name: "seckill".into(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        max_payload_entries: 64,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(10_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Config::default()
    }
}

/// Where and how one replica runs.
#[derive(Clone)]
pub struct ReplicaConfig {
    pub id: NodeId,
    /// The address peers reach this replica on (port 0: any free port).
    pub listen: SocketAddr,
    /// `log/` (the Raft log) and `state/` (the snapshot) live here.
    pub dir: PathBuf,
    pub raft: Config,
    /// Where this replica dials a peer when not at the peer's address in
    /// the membership: another interface, or a test's cuttable proxy.
    pub dial: BTreeMap<NodeId, String>,
    /// The handshake's key (the wire key of the auth secret, the same on
    /// every replica): callers of this replica's port must prove it, and it
    /// proves it to its peers. `None`: an open port (tests only).
    pub key: Option<WireKey>,
}

impl std::fmt::Debug for ReplicaConfig {
    /// Everything but the key (whether there is one).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaConfig")
            .field("id", &self.id)
            .field("listen", &self.listen)
            .field("dir", &self.dir)
            .field("raft", &self.raft)
            .field("dial", &self.dial)
            .field("key", &self.key.is_some())
            .finish()
    }
}

impl ReplicaConfig {
    pub fn new(id: NodeId, listen: SocketAddr, dir: impl Into<PathBuf>) -> Self {
        Self { id, listen, dir: dir.into(), raft: default_raft_config(), dial: BTreeMap::new(), key: None }
    }
}

/// Why a replica did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Log(#[from] OpenError),
    #[error("the state machine: {0}")]
    State(#[from] ApplyError),
    #[error("the Raft configuration: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error("listening on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("starting Raft: {0}")]
    Raft(String),
    /// The dir belongs to a replica that was removed from its group.
    #[error("{0}this data dir is no longer a member of its group: do not start it again (to reuse the machine, start a new replica id on an empty data dir and `seckill admin replica add` it)")]
    Removed(String),
}

/// Why a proposed batch was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("a batch of {0} bytes exceeds the limit of {BATCH_BYTES_MAX}")]
    TooLarge(usize),
    /// This replica is not the leader (any more). A batch refused this way
    /// may still be committed by the next leader: the caller must treat it
    /// as unknown, never as refused (the front's idempotency key settles it).
    #[error("not the leader (the leader is {leader:?} at {addr:?})")]
    NotLeader { leader: Option<NodeId>, addr: Option<String> },
    #[error("timed out waiting to lead")]
    NotReady,
    /// Raft stopped (shut down, or a storage error): outcome unknown.
    #[error("the replica stopped: {0}")]
    Stopped(String),
}

/// Hands batches to the group through one replica.
#[derive(Clone)]
pub struct Proposer {
    raft: Raft,
}

impl Proposer {
    /// Replicates one batch and returns what applying it gave, once a
    /// majority has it on disk and this replica applied it.
    pub async fn propose(&self, batch: bytes::Bytes) -> Result<Applied, ProposeError> {
        self.submit(batch).await?.applied().await
    }

    /// Queues one batch and returns at once: batches submitted one after
    /// another enter the log in that order, so a replicator can keep
    /// several groups in flight (and their LSNs in order) and release each
    /// when its [`Pending`] resolves.
    pub async fn submit(&self, batch: bytes::Bytes) -> Result<Pending, ProposeError> {
        if batch.len() > BATCH_BYTES_MAX {
            return Err(ProposeError::TooLarge(batch.len()));
        }
        let rx = self.raft.client_write_ff(Batch(batch)).await.map_err(|e| ProposeError::Stopped(e.to_string()))?;
        Ok(Pending(rx))
    }
}

/// A submitted batch, not yet committed.
pub struct Pending(ResponderReceiverOf<TypeConfig>);

impl Pending {
    /// Waits until the batch is committed by a majority and applied here.
    /// Any error leaves its outcome unknown: the next leader may still
    /// commit it (so its buyers get `busy`, never a refusal).
    pub async fn applied(self) -> Result<Applied, ProposeError> {
        match self.0.await {
            Ok(Ok(resp)) => Ok(resp.data),
            Ok(Err(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader { leader: f.leader_id, addr: f.leader_node.map(|n| n.addr) })
            }
            Ok(Err(e)) => Err(ProposeError::Stopped(e.to_string())),
            // The responder was dropped: Raft stopped with the batch in flight.
            Err(_) => Err(ProposeError::Stopped("Raft stopped before answering".into())),
        }
    }
}

/// One running replica.
pub struct ReplicaNode<A: Apply> {
    pub id: NodeId,
    raft: Raft,
    state: StateMachine<A>,
    addr: SocketAddr,
    server: JoinHandle<()>,
    /// What the server answers from (its status, the membership side).
    served: Served,
}

impl<A: Apply> ReplicaNode<A> {
    /// Opens the log and the state machine under `cfg.dir`, listens, and
    /// starts Raft. A new group still needs `raft().initialize(...)` on one
    /// replica; a replica restarted on its old dir rejoins by itself.
    pub async fn start(cfg: ReplicaConfig, state: A) -> Result<Self, StartError> {
        let raft_cfg = Arc::new(cfg.raft.validate()?);
        if let Some(why) = Membership::removed_mark(&cfg.dir) {
            return Err(StartError::Removed(why));
        }
        let log = LogStore::open(LogStoreConfig::new(cfg.dir.join("log")))?;
        let sm = StateMachine::open(cfg.dir.join("state"), state)?;
        let listener =
            TcpListener::bind(cfg.listen).await.map_err(|source| StartError::Listen { addr: cfg.listen, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen { addr: cfg.listen, source })?;
        let dial = Arc::new(cfg.dial);
        let network = NetworkFactory { id: cfg.id, dial: dial.clone(), key: cfg.key.clone() };
        let raft =
            Raft::new(cfg.id, raft_cfg, network, log, sm.clone()).await.map_err(|e| StartError::Raft(e.to_string()))?;
        let membership = Membership::new(cfg.id, cfg.dir.clone(), dial, cfg.key.clone());
        let served = Served {
            raft: raft.clone(),
            applied_lsn: sm.last_lsn(),
            snapshots_installed: sm.snapshots_installed(),
            membership: membership.clone(),
            key: cfg.key,
        };
        let server = tokio::spawn(serve(listener, served.clone()));
        tokio::spawn(crate::status::export_metrics(raft.clone(), sm.last_lsn()));
        tokio::spawn(membership.watch(raft.clone()));
        tracing::info!(id = cfg.id, %addr, "replica started");
        Ok(Self { id: cfg.id, raft, state: sm, addr, server, served })
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The address peers reach this replica on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &StateMachine<A> {
        &self.state
    }

    /// Becomes true once this replica learns it was removed from the
    /// group (`membership` module): its dir is marked so, and the process
    /// should stop.
    pub fn removed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.served.membership.removed()
    }

    /// This replica's [`crate::Status`], as `replica status` shows it.
    pub fn status(&self) -> crate::Status {
        self.served.status()
    }

    /// Waits until this replica leads and has applied its whole log (the
    /// previous leaders' entries and its own blank entry), then returns the
    /// state's LSN: the engine's first LSN as leader is the next one. Only
    /// from then on does a new leader decide: its state is the group's.
    pub async fn ready_to_lead(&self, within: Duration) -> Result<u64, ProposeError> {
        let id = self.id;
        self.raft
            .wait(Some(within))
            .metrics(
                |m| {
                    m.current_leader == Some(id)
                        && m.last_log_index.is_some()
                        && m.last_applied.map(|l| l.index) == m.last_log_index
                },
                "leading with the whole log applied",
            )
            .await
            .map_err(|_| ProposeError::NotReady)?;
        Ok(self.state.last_lsn().load(std::sync::atomic::Ordering::Acquire))
    }

    /// Replicates one batch: [`Proposer::propose`].
    pub async fn propose(&self, batch: bytes::Bytes) -> Result<Applied, ProposeError> {
        self.proposer().propose(batch).await
    }

    /// A handle that proposes batches, for the thread or task that
    /// replicates the engine's groups.
    pub fn proposer(&self) -> Proposer {
        Proposer { raft: self.raft.clone() }
    }

    /// Stops Raft and closes every connection. What is on disk stays as a
    /// kill would leave it: appends were synced when acknowledged.
    pub async fn shutdown(mut self) {
        self.server.abort();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "Raft did not stop cleanly");
        }
        let _ = (&mut self.server).await;
    }
}

impl<A: Apply> Drop for ReplicaNode<A> {
    fn drop(&mut self) {
        self.server.abort();
    }
}
