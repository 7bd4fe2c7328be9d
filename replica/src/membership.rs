//! Membership changes of a running group: a replica added as a learner,
//! promoted to voter once it has caught up, a replica removed
//! (`seckill admin replica add|remove`, docs/OPERATIONS.md "Replacing a
//! replica").
//!
//! After the group formed, the membership in the Raft log is the truth:
//! which replicas vote, which only learn, and at which address each is
//! dialed (unless `ReplicaConfig::dial` overrides it). The `--peers` list a
//! replica starts with only forms a new group (replicas with an empty log
//! propose it) and tells operators' tools where to ask.
//!
//! The operator's tool sends a [`Change`] to any replica on the replica
//! port (`network::request_change`); only the leader makes it, any other
//! replica answers [`ChangeError::NotLeader`] with the leader it knows, and
//! [`request`] follows that hint (or tries the next address) within a
//! deadline. On the leader ([`Membership::change`]):
//!
//! * `AddLearner`: openraft's `add_learner` (not blocking: openraft's own
//!   wait has no bound). The leader starts replicating to it: the log, or a
//!   snapshot when the log no longer reaches back far enough.
//! * `Promote`: waits, at most `wait_ms`, until the learner's log reaches
//!   the leader's last log index as it was when the request came, then
//!   `change_membership` makes it a voter. A voter that lags would count
//!   towards a majority it cannot help form: with replica 4 promoted while
//!   still installing a snapshot and one old voter down, the group could
//!   commit nothing until 4 caught up.
//! * `Remove`: `change_membership` without it (not kept as a learner);
//!   the leader itself is refused (stop it first, another replica is
//!   elected). Then the leader tells the removed replica ([`Leave`], best
//!   effort): it marks its dir removed and stops (its process exits), so a
//!   replica that is no longer a member does not keep answering fronts or
//!   campaigning. A replica that was down at the removal learns nothing,
//!   but it is not in the membership, so no leader replicates to it or
//!   counts its vote.
//!
//! Every wait is bounded ([`CHANGE_TIMEOUT_MS`], `wait_ms`).

use crate::network::{request_change, send_leave};
use crate::{NodeId, Raft};
use openraft::{BasicNode, ChangeMembers};
use seckill_proto::handshake::WireKey;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest a leader waits for one membership entry (openraft commits
/// a joint then a uniform configuration) before answering that it failed.
pub const CHANGE_TIMEOUT_MS: u64 = 30_000;
/// The longest a `Promote` may wait for the learner to catch up.
pub const CATCH_UP_WAIT_MS_MAX: u64 = 600_000;
/// Replicas (voters and learners) one group may hold.
pub const MEMBERS_MAX: usize = 7;
/// The file that marks a replica's dir as removed from its group
/// (in the replica's Raft dir); such a dir never starts again.
pub const REMOVED_FILE: &str = "REMOVED";
/// One change request's own bound on the operator's side: the leader's
/// wait for the commit and some room for the round trip.
const REQUEST_TTL_MS: u64 = CHANGE_TIMEOUT_MS + 5_000;
/// How long the leader gives the removed replica to take its notice.
const LEAVE_TTL_MS: u64 = 2_000;

/// A membership change, sent to the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Add replica `id`, reached at `addr` (its `--replica-listen`), as a
    /// learner: it receives the log but does not vote.
    AddLearner { id: NodeId, addr: String },
    /// Make learner `id` a voter once its log reaches the leader's (as it
    /// was when asked), waiting at most `wait_ms` for that.
    Promote { id: NodeId, wait_ms: u64 },
    /// Take replica `id` out of the group (voter or learner).
    Remove { id: NodeId },
}

/// The group's membership after a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    /// The leader that made it.
    pub leader: NodeId,
    /// Whether the membership changed (false: it already was so).
    pub changed: bool,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// The leader's last log index when it answered.
    pub last_log_index: u64,
    /// `Remove` only: whether the removed replica took the notice and stops.
    pub left: Option<bool>,
}

/// Why a change was not made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ChangeError {
    /// This replica does not lead; `addr` is the leader's replica address
    /// from the membership, when one is known.
    #[error("not the leader (the leader is {leader:?} at {addr:?})")]
    NotLeader { leader: Option<NodeId>, addr: Option<String> },
    /// The change would be wrong; nothing was done.
    #[error("refused: {0}")]
    Refused(String),
    /// Raft did not complete it in time, or lost the lead meanwhile: the
    /// change may or may not be in effect (`replica status` says; making
    /// the same change again is safe).
    #[error("not completed: {0}")]
    Failed(String),
}

/// The leader's notice to a replica it removed: the membership without it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leave {
    pub id: NodeId,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

/// One replica's side of membership changes: what its server does with a
/// [`Change`] or a [`Leave`], and whether it was removed.
#[derive(Clone)]
pub struct Membership {
    id: NodeId,
    /// The replica's Raft dir, where [`REMOVED_FILE`] goes.
    dir: PathBuf,
    /// Where to dial a replica instead of its membership address.
    dial: Arc<BTreeMap<NodeId, String>>,
    removed: Arc<tokio::sync::watch::Sender<bool>>,
    /// The handshake's key, for the notice to a removed replica.
    key: Option<WireKey>,
}

/// Replica ids in ascending order, each once (a joint membership names a
/// voter in both halves).
pub(crate) fn sorted(ids: impl Iterator<Item = NodeId>) -> Vec<NodeId> {
    ids.collect::<BTreeSet<_>>().into_iter().collect()
}

/// Whether `addr` is `HOST:PORT`.
pub fn is_host_port(addr: &str) -> bool {
    addr.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
}

impl Membership {
    pub fn new(id: NodeId, dir: PathBuf, dial: Arc<BTreeMap<NodeId, String>>, key: Option<WireKey>) -> Self {
        Self { id, dir, dial, removed: Arc::new(tokio::sync::watch::channel(false).0), key }
    }

    /// Why this dir must not start: it was removed from its group.
    pub fn removed_mark(dir: &std::path::Path) -> Option<String> {
        std::fs::read_to_string(dir.join(REMOVED_FILE)).ok()
    }

    pub fn is_removed(&self) -> bool {
        *self.removed.borrow()
    }

    /// Becomes true once this replica learns it is no longer a member.
    pub fn removed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.removed.subscribe()
    }

    /// Marks the dir removed (so it never starts again) and tells the
    /// process to stop.
    fn mark_removed(&self, why: &str) {
        if self.is_removed() {
            return;
        }
        let text = format!("replica {} was removed from its group: {why}\n", self.id);
        if let Err(e) = std::fs::write(self.dir.join(REMOVED_FILE), &text) {
            tracing::error!(error = %e, "could not mark the data dir removed");
        }
        tracing::warn!(id = self.id, why, "removed from the group: stopping");
        metrics::counter!("seckill_replica_removed_total").increment(1);
        self.removed.send_replace(true);
    }

    /// Follows Raft's metrics: once this replica was a member and then
    /// applied a membership without it, it was removed (the leader's
    /// [`Leave`] may not have reached it). Ends when Raft stops.
    pub async fn watch(self, raft: Raft) {
        let mut rx = raft.metrics();
        let mut was_member = false;
        loop {
            let gone = {
                let m = rx.borrow_and_update();
                let member = m.membership_config.membership().get_node(&self.id).is_some();
                was_member |= member;
                // Applied means committed: never a configuration a new
                // leader could still drop.
                let applied =
                    m.membership_config.log_id().is_some_and(|l| Some(l.index) <= m.last_applied.map(|a| a.index));
                was_member && !member && applied
            };
            if gone {
                self.mark_removed("it applied a membership without it");
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// The removed replica's side of [`Leave`]: accepted when the notice
    /// is for this replica, the membership it carries does not hold it, and
    /// this replica does not lead.
    pub fn leave(&self, raft: &Raft, leave: &Leave) -> bool {
        let leads = raft.metrics().borrow().current_leader == Some(self.id);
        let named = leave.voters.contains(&self.id) || leave.learners.contains(&self.id);
        if leave.id != self.id || named || leads {
            tracing::warn!(?leave, leads, "a removal notice that does not apply here: ignored");
            return false;
        }
        self.mark_removed(&format!("voters now {:?}, learners {:?}", leave.voters, leave.learners));
        true
    }

    /// Makes `change` if this replica leads (module doc).
    pub async fn change(&self, raft: &Raft, change: Change) -> Result<Changed, ChangeError> {
        let m = raft.metrics().borrow().clone();
        let mem = m.membership_config.membership().clone();
        if m.current_leader != Some(self.id) {
            let addr = m.current_leader.and_then(|l| mem.get_node(&l)).map(|n| n.addr.clone());
            return Err(ChangeError::NotLeader { leader: m.current_leader, addr });
        }
        if mem.get_joint_config().len() > 1 {
            return Err(ChangeError::Failed("a membership change is still in progress: try again".into()));
        }
        let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
        let is_member = |id: &NodeId| mem.get_node(id).is_some();
        let changes: ChangeMembers<NodeId, BasicNode> = match &change {
            Change::AddLearner { id, addr } => {
                if !is_host_port(addr) {
                    return Err(ChangeError::Refused(format!("`{addr}` is not HOST:PORT")));
                }
                match mem.get_node(id) {
                    Some(n) if n.addr != *addr => {
                        let what = if voters.contains(id) { "a voter" } else { "a learner" };
                        return Err(ChangeError::Refused(format!(
                            "replica {id} is {what} at {}, not {addr}: a new replica takes a new id",
                            n.addr
                        )));
                    }
                    Some(_) => return Ok(self.changed(raft, false, None)),
                    None if mem.nodes().count() >= MEMBERS_MAX => {
                        return Err(ChangeError::Refused(format!("the group has {MEMBERS_MAX} replicas already")))
                    }
                    None => {}
                }
                ChangeMembers::AddNodes([(*id, BasicNode { addr: addr.clone() })].into())
            }
            Change::Promote { id, wait_ms } => {
                if voters.contains(id) {
                    return Ok(self.changed(raft, false, None));
                }
                if !is_member(id) {
                    return Err(ChangeError::Refused(format!("replica {id} is not a learner: add it first")));
                }
                self.wait_caught_up(raft, *id, Duration::from_millis((*wait_ms).min(CATCH_UP_WAIT_MS_MAX))).await?;
                ChangeMembers::AddVoterIds([*id].into())
            }
            Change::Remove { id } => {
                if *id == self.id {
                    return Err(ChangeError::Refused(format!(
                        "replica {id} leads: stop it (the others elect a leader) and remove it through them"
                    )));
                }
                if !is_member(id) {
                    return Ok(self.changed(raft, false, None));
                }
                if voters.contains(id) {
                    ChangeMembers::RemoveVoters([*id].into())
                } else {
                    ChangeMembers::RemoveNodes([*id].into())
                }
            }
        };
        let done =
            tokio::time::timeout(Duration::from_millis(CHANGE_TIMEOUT_MS), raft.change_membership(changes, false))
                .await
                .map_err(|_| ChangeError::Failed(format!("not committed within {CHANGE_TIMEOUT_MS} ms")))?;
        done.map_err(|e| ChangeError::Failed(e.to_string()))?;
        tracing::info!(?change, "membership changed");
        let left = match &change {
            Change::Remove { id } => Some(self.notify_removed(raft, *id, mem.get_node(id)).await),
            _ => None,
        };
        Ok(self.changed(raft, true, left))
    }

    /// Waits until learner `id`'s log reaches the leader's last log index
    /// as it is now, at most `within`.
    async fn wait_caught_up(&self, raft: &Raft, id: NodeId, within: Duration) -> Result<(), ChangeError> {
        let target = raft.metrics().borrow().last_log_index.unwrap_or(0);
        let matched = |m: &openraft::RaftMetrics<NodeId, BasicNode>| {
            m.replication.as_ref().and_then(|r| r.get(&id).copied().flatten()).map(|l| l.index)
        };
        let got =
            raft.wait(Some(within)).metrics(|m| matched(m).is_some_and(|i| i >= target), "the learner caught up").await;
        match got {
            Ok(_) => Ok(()),
            Err(_) => {
                let at = matched(&raft.metrics().borrow());
                Err(ChangeError::Refused(format!(
                    "replica {id} did not catch up within {} ms (its log is at {at:?}, the leader's was at {target} \
                     when asked): it stays a learner; ask again, or remove it",
                    within.as_millis()
                )))
            }
        }
    }

    /// Tells the removed replica so (best effort: it may be down).
    async fn notify_removed(&self, raft: &Raft, id: NodeId, node: Option<&BasicNode>) -> bool {
        let Some(addr) = self.dial.get(&id).cloned().or_else(|| node.map(|n| n.addr.clone())) else { return false };
        let mem = raft.metrics().borrow().membership_config.membership().clone();
        let leave = Leave { id, voters: sorted(mem.voter_ids()), learners: sorted(mem.learner_ids()) };
        match send_leave(&addr, &leave, Duration::from_millis(LEAVE_TTL_MS), self.key.as_ref()).await {
            Ok(took) => took,
            Err(e) => {
                tracing::info!(id, %addr, error = %e, "the removed replica did not take the notice (down?)");
                false
            }
        }
    }

    fn changed(&self, raft: &Raft, changed: bool, left: Option<bool>) -> Changed {
        let m = raft.metrics().borrow().clone();
        let mem = m.membership_config.membership();
        Changed {
            leader: self.id,
            changed,
            voters: sorted(mem.voter_ids()),
            learners: sorted(mem.learner_ids()),
            last_log_index: m.last_log_index.unwrap_or(0),
            left,
        }
    }
}

/// Sends `change` to the group's leader: to each of `addrs` in turn,
/// following a `NotLeader` hint at once, until one leader answers or
/// `within` has passed (an election in between is waited out). `ttl`: one
/// request's own bound (a `Promote` waits for its learner); `key`: the
/// group's handshake key.
pub async fn request(
    addrs: &[String],
    change: &Change,
    ttl: Duration,
    within: Duration,
    key: Option<&WireKey>,
) -> Result<Changed, ChangeError> {
    if addrs.is_empty() {
        return Err(ChangeError::Refused("no replica address given".into()));
    }
    let deadline = Instant::now() + within;
    let mut last = ChangeError::Failed("no replica answered".into());
    let mut hint: Option<String> = None;
    let mut next = 0usize;
    for attempt in 1usize.. {
        let addr = match hint.take() {
            Some(a) => a,
            None => {
                next += 1;
                addrs[next % addrs.len()].clone()
            }
        };
        match request_change(&addr, change, ttl, key).await {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(ChangeError::NotLeader { addr: Some(leader), .. })) if leader != addr => hint = Some(leader),
            Ok(Err(e @ (ChangeError::Refused(_) | ChangeError::Failed(_)))) => return Err(e),
            Ok(Err(e)) => last = e,
            Err(e) => last = ChangeError::Failed(format!("{addr}: {e}")),
        }
        if Instant::now() >= deadline {
            break;
        }
        if attempt.is_multiple_of(addrs.len() + 1) {
            // As many tries as addresses (and a hint) without a leader: an
            // election, most likely, or hints that went stale.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Err(last)
}

/// `seckill admin replica add`: adds `id` at `addr` as a learner, then
/// promotes it once caught up (waiting at most `catch_up`). A learner that
/// does not catch up in time stays a learner (the error says so).
pub async fn add(
    addrs: &[String],
    id: NodeId,
    addr: &str,
    catch_up: Duration,
    within: Duration,
    key: Option<&WireKey>,
) -> Result<Changed, ChangeError> {
    let rpc = Duration::from_millis(REQUEST_TTL_MS);
    request(addrs, &Change::AddLearner { id, addr: addr.to_string() }, rpc, within, key).await?;
    let wait_ms = u64::try_from(catch_up.as_millis()).unwrap_or(u64::MAX).min(CATCH_UP_WAIT_MS_MAX);
    request(addrs, &Change::Promote { id, wait_ms }, rpc + Duration::from_millis(wait_ms), within, key).await
}

/// `seckill admin replica remove`.
pub async fn remove(
    addrs: &[String],
    id: NodeId,
    within: Duration,
    key: Option<&WireKey>,
) -> Result<Changed, ChangeError> {
    request(addrs, &Change::Remove { id }, Duration::from_millis(REQUEST_TTL_MS), within, key).await
}
