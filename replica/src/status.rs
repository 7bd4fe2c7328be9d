//! What a replica says about itself: [`Status`] (answered on the replica
//! port to `seckill admin replica status`) and the Prometheus gauges that
//! follow Raft's metrics ([`export_metrics`]).
//!
//! Gauges: `seckill_replica_term`, `seckill_replica_leader` (the leader's
//! id, 0 while none is known), `seckill_replica_is_leader`,
//! `seckill_replica_last_log_index`, `seckill_replica_applied_index`,
//! `seckill_replica_apply_lag_entries` (entries in this replica's log not
//! yet applied), `seckill_replica_applied_lsn`, and on the leader
//! `seckill_replica_follower_lag_entries{peer}` (entries of the leader's log
//! a follower has not acknowledged: how far it is from counting towards a
//! commit).

use crate::{NodeId, TypeConfig};
use openraft::{BasicNode, RaftMetrics};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One replica's view of its group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub id: NodeId,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub state: String,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// The LSN of the last record applied here.
    pub applied_lsn: u64,
    pub snapshot_index: Option<u64>,
    /// The voters and learners, with their addresses.
    pub members: Vec<(NodeId, String)>,
    /// On the leader: each replica's last acknowledged log index.
    pub matched: Vec<(NodeId, Option<u64>)>,
    /// The voters of the membership this replica knows (both halves of a
    /// joint one), and its learners (replicas that receive the log but do
    /// not vote: one being added).
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Snapshots this replica installed from a leader since it started.
    pub snapshots_installed: u64,
    /// This replica learned that it was removed from the group and stops.
    pub removed: bool,
}

impl Status {
    /// The status from Raft's metrics and the applied LSN.
    pub fn of(m: &RaftMetrics<NodeId, BasicNode>, applied_lsn: u64) -> Status {
        Status {
            id: m.id,
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            applied_lsn,
            snapshot_index: m.snapshot.map(|l| l.index),
            members: m.membership_config.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
            matched: m
                .replication
                .as_ref()
                .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
                .unwrap_or_default(),
            voters: crate::membership::sorted(m.membership_config.membership().voter_ids()),
            learners: crate::membership::sorted(m.membership_config.membership().learner_ids()),
            snapshots_installed: 0,
            removed: false,
        }
    }

    /// Entries in this replica's log not applied yet.
    pub fn apply_lag_entries(&self) -> u64 {
        self.last_log_index.unwrap_or(0).saturating_sub(self.applied_index.unwrap_or(0))
    }
}

/// Sets the replica gauges on every change of Raft's metrics, until Raft stops.
pub async fn export_metrics(raft: openraft::Raft<TypeConfig>, applied_lsn: Arc<AtomicU64>) {
    let mut rx = raft.metrics();
    loop {
        let s = Status::of(&rx.borrow_and_update(), applied_lsn.load(Ordering::Acquire));
        metrics::gauge!("seckill_replica_term").set(s.term as f64);
        metrics::gauge!("seckill_replica_leader").set(s.leader.unwrap_or(0) as f64);
        metrics::gauge!("seckill_replica_is_leader").set(if s.leader == Some(s.id) { 1.0 } else { 0.0 });
        metrics::gauge!("seckill_replica_last_log_index").set(s.last_log_index.unwrap_or(0) as f64);
        metrics::gauge!("seckill_replica_applied_index").set(s.applied_index.unwrap_or(0) as f64);
        metrics::gauge!("seckill_replica_apply_lag_entries").set(s.apply_lag_entries() as f64);
        metrics::gauge!("seckill_replica_applied_lsn").set(s.applied_lsn as f64);
        let last = s.last_log_index.unwrap_or(0);
        for (peer, matched) in &s.matched {
            metrics::gauge!("seckill_replica_follower_lag_entries", "peer" => peer.to_string())
                .set(last.saturating_sub(matched.unwrap_or(0)) as f64);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
