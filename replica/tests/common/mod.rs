//! A group of replicas in one process over real TCP on localhost, and the
//! batches of WAL records the tests replicate.
#![allow(dead_code)]

use bytes::Bytes;
use seckill_engine::wal::codec::{self, Encoder};
use seckill_engine::wal::{segment, WalConfig};
use seckill_engine::Event;
use seckill_replica::log_store::LogStore;
use seckill_replica::node::{default_raft_config, StartError};
use seckill_replica::openraft;
use seckill_replica::state_machine::RecordsState;
use seckill_replica::{Applied, NodeId, ReplicaConfig, ReplicaNode};
use seckill_testkit::TcpProxy;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The group's handshake key (every replica proves it to its peers).
pub fn key() -> seckill_proto::handshake::WireKey {
    seckill_proto::handshake::WireKey::derive(b"a group's auth secret, 32 bytes or more")
}

/// Long enough for an election on a loaded 2-core box; never a timing assert.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub type Node = ReplicaNode<RecordsState>;

/// A replica's state, with `wal/` and `snapshots/` in `dir` (as the binary's).
pub fn state(dir: &std::path::Path) -> RecordsState {
    RecordsState::with_wal(&WalConfig::new(dir)).expect("the replica's wal/ opens")
}

/// Every record in `dir`'s `wal/`, segment after segment, checked to
/// follow one another with no LSN twice and none missing.
pub fn wal_records(dir: &std::path::Path) -> Vec<(u64, Event)> {
    let mut out: Vec<(u64, Event)> = Vec::new();
    for seg in segment::list(&dir.join("wal")).expect("wal/ lists") {
        let end = segment::read(&seg, |lsn, ev| out.push((lsn, ev))).expect("a segment reads");
        assert_eq!(end.stopped, None, "{} stops early (record after LSN {})", seg.path.display(), end.last_lsn);
    }
    for pair in out.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "wal/ in {} does not follow LSN {}", dir.display(), pair[0].0);
    }
    out
}

/// The records of acknowledged batches, decoded.
pub fn records_of(acked: &[Acked]) -> Vec<(u64, Event)> {
    let mut out = Vec::new();
    let mut aligned = Default::default();
    for a in acked {
        let mut at = 0;
        while at < a.bytes.len() {
            match codec::decode(&a.bytes[at..], &mut aligned) {
                codec::Decoded::Record { lsn, event, bytes } => {
                    out.push((lsn, *event));
                    at += bytes;
                }
                other => panic!("batch {} does not decode: {other:?}", a.tag),
            }
        }
    }
    out
}

/// `n` records (quota events of activity `tag`) numbered from `first_lsn`.
pub fn batch(tag: u64, first_lsn: u64, n: u64) -> Bytes {
    let mut out = Vec::new();
    let mut enc = Encoder::default();
    for i in 0..n {
        enc.append(&mut out, first_lsn + i, &Event::QuotaSet { activity_id: tag, user_id: i, limit: tag as u32 });
    }
    Bytes::from(out)
}

/// A batch the group acknowledged.
#[derive(Clone, Debug)]
pub struct Acked {
    pub tag: u64,
    pub bytes: Bytes,
    pub last_lsn: u64,
}

pub struct Group {
    pub root: tempfile::TempDir,
    pub addrs: BTreeMap<NodeId, SocketAddr>,
    pub nodes: BTreeMap<NodeId, Node>,
    /// With `start_proxied`: the proxy replica `.0` dials replica `.1` through.
    pub proxies: BTreeMap<(NodeId, NodeId), TcpProxy>,
}

impl Group {
    pub fn dir(&self, id: NodeId) -> PathBuf {
        self.root.path().join(format!("replica-{id}"))
    }

    fn config(&self, id: NodeId, listen: SocketAddr) -> ReplicaConfig {
        let mut cfg = ReplicaConfig::new(id, listen, self.dir(id));
        cfg.key = Some(key());
        cfg.dial = self
            .proxies
            .iter()
            .filter(|((from, _), _)| *from == id)
            .map(|((_, to), p)| (*to, format!("127.0.0.1:{}", p.port)))
            .collect();
        cfg.raft = openraft::Config {
            // Generous: elections must not start because the box is busy.
            election_timeout_min: 600,
            election_timeout_max: 1200,
            // Snapshots only when a test asks, and then the whole log may go.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: 0,
            ..default_raft_config()
        };
        cfg
    }

    /// Starts `ids` on free ports and initializes the group on the first.
    pub async fn start(ids: &[NodeId]) -> Group {
        Self::start_with(ids, false).await
    }

    /// `start`, with every replica dialing every other through its own
    /// [`TcpProxy`], so a test can cut any link in either direction.
    pub async fn start_proxied(ids: &[NodeId]) -> Group {
        Self::start_with(ids, true).await
    }

    /// Proxied replicas listen on ports picked before they bind (the proxies
    /// must know them), which another test may take in between: such a start
    /// is tried again on new ports.
    async fn start_with(ids: &[NodeId], proxied: bool) -> Group {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            match Self::try_start_with(ids, proxied).await {
                Ok(group) => return group,
                Err(StartError::Listen { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse && attempt < ATTEMPTS => {}
                Err(e) => panic!("replica starts: {e:?}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    async fn try_start_with(ids: &[NodeId], proxied: bool) -> Result<Group, StartError> {
        let root = tempfile::tempdir().expect("temp dir");
        let mut group = Group { root, addrs: BTreeMap::new(), nodes: BTreeMap::new(), proxies: BTreeMap::new() };
        for &id in ids {
            let port = if proxied { seckill_testkit::free_port() } else { 0 };
            group.addrs.insert(id, SocketAddr::from(([127, 0, 0, 1], port)));
        }
        if proxied {
            for &from in ids {
                for &to in ids.iter().filter(|to| **to != from) {
                    group.proxies.insert((from, to), TcpProxy::start(&group.addrs[&to].to_string()));
                }
            }
        }
        for &id in ids {
            let node = ReplicaNode::start(group.config(id, group.addrs[&id]), state(&group.dir(id))).await?;
            group.addrs.insert(id, node.addr());
            group.nodes.insert(id, node);
        }
        let members: BTreeMap<NodeId, openraft::BasicNode> =
            group.addrs.iter().map(|(id, a)| (*id, openraft::BasicNode { addr: a.to_string() })).collect();
        group.nodes[&ids[0]].raft().initialize(members).await.expect("group initializes");
        Ok(group)
    }

    /// Cuts every link between `id` and the others, both ways.
    pub fn isolate(&self, id: NodeId) {
        for ((from, to), p) in &self.proxies {
            if *from == id || *to == id {
                p.cut();
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        for p in self.proxies.values() {
            p.restore();
        }
    }

    /// Starts a new replica `id` on a free port and an empty dir, without
    /// proposing any membership: it waits to be added
    /// (`seckill_replica::membership`).
    pub async fn join(&mut self, id: NodeId) -> SocketAddr {
        let node = ReplicaNode::start(self.config(id, SocketAddr::from(([127, 0, 0, 1], 0))), state(&self.dir(id)))
            .await
            .expect("a joining replica starts");
        let addr = node.addr();
        self.addrs.insert(id, addr);
        self.nodes.insert(id, node);
        addr
    }

    /// Takes the whole applied log of `leader` into a snapshot and purges
    /// it: a replica that joins now must install the snapshot.
    pub async fn snapshot_and_purge(&self, leader: NodeId) -> u64 {
        let raft = self.nodes[&leader].raft().clone();
        let last_index = raft.metrics().borrow().last_log_index.expect("a log");
        raft.trigger().snapshot().await.expect("snapshot triggered");
        raft.wait(Some(PATIENCE))
            .metrics(|m| m.snapshot.is_some_and(|s| s.index >= last_index), "snapshot built")
            .await
            .expect("the leader builds a snapshot");
        raft.trigger().purge_log(last_index).await.expect("purge triggered");
        raft.wait(Some(PATIENCE))
            .metrics(|m| m.purged.is_some_and(|p| p.index >= last_index), "log purged")
            .await
            .expect("the leader purges its log");
        last_index
    }

    /// Starts `id` again on its old address and its (possibly wiped) dir.
    pub async fn restart(&mut self, id: NodeId) {
        let addr = self.addrs[&id];
        let deadline = Instant::now() + PATIENCE;
        // The old listener's port may take a moment to be free again.
        let node = loop {
            match ReplicaNode::start(self.config(id, addr), state(&self.dir(id))).await {
                Ok(n) => break n,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart of {id} failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("replica {id} does not restart: {e}"),
            }
        };
        self.nodes.insert(id, node);
    }

    /// Stops `id` the way a crash would leave its disk.
    pub async fn kill(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).expect("a running replica");
        node.shutdown().await;
    }

    /// The leader the running replicas settle on, once it has applied its
    /// whole log, with the LSN its state is at.
    pub async fn leader(&self) -> (NodeId, u64) {
        let all: Vec<NodeId> = self.nodes.keys().copied().collect();
        self.leader_among(&all).await
    }

    /// `leader`, looking only at `ids` (the majority side of a partition).
    pub async fn leader_among(&self, ids: &[NodeId]) -> (NodeId, u64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            for (id, node) in self.nodes.iter().filter(|(id, _)| ids.contains(id)) {
                if node.raft().metrics().borrow().current_leader == Some(*id) {
                    if let Ok(lsn) = node.ready_to_lead(Duration::from_millis(500)).await {
                        return (*id, lsn);
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader among {:?} within {PATIENCE:?}", self.nodes.keys());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Proposes `n` batches of `records` records on `leader`, from LSN
    /// `lsn + 1`, tagged from `first_tag`; returns what was acknowledged.
    pub async fn propose(&self, leader: NodeId, mut lsn: u64, first_tag: u64, n: u64, records: u64) -> Vec<Acked> {
        let mut acked = Vec::new();
        for tag in first_tag..first_tag + n {
            let bytes = batch(tag, lsn + 1, records);
            match self.nodes[&leader].propose(bytes.clone()).await {
                Ok(Applied::Records { first_lsn, last_lsn }) => {
                    assert_eq!((first_lsn, last_lsn), (lsn + 1, lsn + records), "batch {tag} applied at other LSNs");
                    lsn = last_lsn;
                    acked.push(Acked { tag, bytes, last_lsn });
                }
                other => panic!("batch {tag} on leader {leader}: {other:?}"),
            }
        }
        acked
    }

    /// Waits until `id` has applied up to LSN `lsn`.
    pub async fn wait_applied(&self, id: NodeId, lsn: u64) {
        let deadline = Instant::now() + PATIENCE;
        let at = self.nodes[&id].state().last_lsn();
        while at.load(std::sync::atomic::Ordering::Acquire) < lsn {
            assert!(Instant::now() < deadline, "replica {id} did not reach LSN {lsn}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many replicas' log files hold `bytes` as an entry, read back
    /// from disk (running replicas included: the read changes nothing).
    pub fn copies_on_disk(&self, bytes: &Bytes) -> usize {
        self.addrs
            .keys()
            .filter(|id| {
                let entries = LogStore::read_all(&self.dir(**id).join("log")).expect("the log reads back");
                entries.iter().any(|e| matches!(&e.payload, openraft::EntryPayload::Normal(b) if b.0 == *bytes))
            })
            .count()
    }
}

/// Every acknowledged batch is in `node`'s state: its quota events, at LSNs
/// no later than the state's.
pub fn assert_state_has(node: &Node, acked: &[Acked]) {
    node.state().with_state(|s| {
        let r = s.replica();
        for a in acked {
            assert!(r.lsn >= a.last_lsn, "replica {} is at LSN {} < acknowledged {}", node.id, r.lsn, a.last_lsn);
            assert_eq!(
                r.quotas.get(&(a.tag, 0)),
                Some(&(a.tag as u32)),
                "replica {} lacks acknowledged batch {}",
                node.id,
                a.tag
            );
        }
    });
}
