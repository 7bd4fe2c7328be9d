//! Three replicas in one process over real TCP on localhost: what a
//! majority acknowledged survives the leader's death, and a replica that
//! lost its disk comes back from a snapshot. Timeouts are generous and
//! nothing asserts on timing, so a loaded 2-core box does not fail them.

mod common;

use common::{assert_state_has, records_of, wal_records, Group, PATIENCE};
use seckill_proto::handshake::{WireKey, HELLO_BYTES, HELLO_MAGIC};
use seckill_replica::openraft;
use seckill_replica::ReplicaNode;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const IDS: [u64; 3] = [1, 2, 3];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_has_every_acknowledged_batch() {
    let mut g = Group::start(&IDS).await;
    let (leader, lsn) = g.leader().await;
    assert_eq!(lsn, 0, "a new group starts at LSN 0");

    let acked = g.propose(leader, lsn, 1, 30, 4).await;
    // An acknowledgement means a majority has the batch in its log file.
    for a in &acked {
        let copies = g.copies_on_disk(&a.bytes);
        assert!(copies >= 2, "batch {} acknowledged with {copies} copies on disk", a.tag);
    }

    g.kill(leader).await;
    let (new_leader, lsn) = g.leader().await;
    assert_ne!(new_leader, leader);
    assert_eq!(lsn, acked.last().expect("batches").last_lsn, "the new leader is at the last acknowledged LSN");
    assert_state_has(&g.nodes[&new_leader], &acked);

    // It serves, from the next LSN on.
    let more = g.propose(new_leader, lsn, 100, 10, 4).await;
    for a in &more {
        assert!(g.copies_on_disk(&a.bytes) >= 2, "batch {} acknowledged by a group of two", a.tag);
    }

    // The old leader comes back as a follower and ends with the same state.
    g.restart(leader).await;
    let last = more.last().expect("batches").last_lsn;
    g.wait_applied(leader, last).await;
    assert_ne!(g.nodes[&leader].raft().metrics().borrow().current_leader, Some(leader));
    let theirs = g.nodes[&new_leader].state().with_state(|s| s.replica().clone());
    let mine = g.nodes[&leader].state().with_state(|s| s.replica().clone());
    assert_eq!(mine, theirs, "the old leader diverged from the group");
    assert_state_has(&g.nodes[&leader], &acked);
    assert_state_has(&g.nodes[&leader], &more);
    // Every replica's `wal/` holds the group's records, each once, in
    // order: the old leader's too, whose restart re-applied its whole log.
    let all = records_of(&[acked, more].concat());
    for id in IDS {
        g.wait_applied(id, last).await;
        assert_eq!(wal_records(&g.dir(id)), all, "replica {id}'s wal/ is not the group's log");
    }
    for id in IDS {
        g.kill(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_follower_rejoins_from_a_snapshot() {
    let mut g = Group::start(&IDS).await;
    let (leader, lsn) = g.leader().await;
    let mut acked = g.propose(leader, lsn, 1, 10, 3).await;
    let follower = *IDS.iter().find(|id| **id != leader).expect("a follower");

    g.kill(follower).await;
    std::fs::remove_dir_all(g.dir(follower)).expect("wipe the follower's dir");
    let lsn = acked.last().expect("batches").last_lsn;
    acked.extend(g.propose(leader, lsn, 100, 10, 3).await);

    // Snapshot and purge the whole log: the follower cannot catch up from it.
    let last_index = g.snapshot_and_purge(leader).await;

    g.restart(follower).await;
    let last = acked.last().expect("batches").last_lsn;
    g.wait_applied(follower, last).await;
    let m = g.nodes[&follower].raft().metrics().borrow().clone();
    assert!(m.snapshot.is_some_and(|s| s.index >= last_index), "the follower did not install a snapshot: {m:?}");
    assert_state_has(&g.nodes[&follower], &acked);
    let theirs = g.nodes[&leader].state().with_state(|s| s.replica().clone());
    let mine = g.nodes[&follower].state().with_state(|s| s.replica().clone());
    assert_eq!(mine, theirs);
    // It applies what follows the snapshot (into a `wal/` that starts
    // after it: without that, its first apply finds a gap and stops it).
    let mid = g.propose(leader, last, 150, 3, 3).await;
    let last = mid.last().expect("batches").last_lsn;
    g.wait_applied(follower, last).await;

    // And it takes part again: with the other follower gone, the leader
    // still has a majority.
    let other = *IDS.iter().find(|id| **id != leader && **id != follower).expect("another follower");
    g.kill(other).await;
    let more = g.propose(leader, last, 200, 5, 3).await;
    for a in &more {
        assert!(g.copies_on_disk(&a.bytes) >= 2, "batch {} acknowledged without the rejoined follower", a.tag);
    }
    // Its `wal/` starts over after the snapshot it installed (which is in
    // its `snapshots/`), and snapshot + `wal/` rebuild the leader's state,
    // as the persister's and the mirror's resync would.
    let last_more = more.last().expect("batches").last_lsn;
    g.wait_applied(follower, last_more).await;
    assert_eq!(
        wal_records(&g.dir(follower)),
        records_of(&[mid.clone(), more.clone()].concat()),
        "the rejoined follower's wal/"
    );
    assert_eq!(wal_records(&g.dir(leader)), records_of(&[acked, mid, more].concat()), "the leader's wal/");
    let dir = g.dir(follower);
    let rebuilt = seckill_engine::wal::rebuild(
        &*seckill_engine::wal::os_fs(),
        &dir.join("wal"),
        &dir.join("snapshots"),
        None,
        last_more,
        |_| {},
    )
    .expect("the follower's snapshots/ and wal/ rebuild");
    let theirs = g.nodes[&leader].state().with_state(|s| s.replica().clone());
    assert_eq!(rebuilt, theirs, "snapshot + wal/ on the follower is not the group's state");
    for id in [leader, follower] {
        g.kill(id).await;
    }
}

/// A batch that does not follow the state is skipped on every replica and
/// answered `Rejected`; the group goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_at_the_wrong_lsn_is_rejected_everywhere() {
    let mut g = Group::start(&[1]).await;
    let (leader, lsn) = g.leader().await;
    let acked = g.propose(leader, lsn, 1, 2, 2).await;
    let at = acked.last().expect("batches").last_lsn;
    let stale = common::batch(50, at, 2);
    let got = g.nodes[&leader].propose(stale).await.expect("committed");
    assert_eq!(got, seckill_replica::Applied::Rejected { expected_lsn: at + 1 });
    let garbage = bytes::Bytes::from_static(b"not records");
    assert_eq!(
        g.nodes[&leader].propose(garbage).await.expect("committed"),
        seckill_replica::Applied::Rejected { expected_lsn: at + 1 }
    );
    g.propose(leader, at, 60, 1, 2).await;
    g.kill(leader).await;
}

/// Garbage, an oversized length and a half frame on the replica port close
/// only that connection; the replica keeps serving its group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_replica_port_closes_only_that_connection() {
    let mut g = Group::start(&[1]).await;
    let (leader, lsn) = g.leader().await;
    let addr = g.nodes[&leader].addr();
    let probes: [&[u8]; 4] =
        [&u32::MAX.to_le_bytes(), &[5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff], &[0, 0, 0, 0], &[100, 0, 0, 0, 1, 2]];
    for probe in probes {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.write_all(probe).expect("write");
        s.shutdown(std::net::Shutdown::Write).expect("half close");
        s.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let mut answer = Vec::new();
        // Closed with no answer but the hello (EOF or reset), never a hang.
        let _ = s.read_to_end(&mut answer);
        assert!(
            answer.len() <= HELLO_BYTES && answer.starts_with(HELLO_MAGIC.as_slice()) || answer.is_empty(),
            "an answer to garbage: {answer:?}"
        );
    }
    let deadline = Instant::now() + PATIENCE;
    while openraft::ServerState::Leader != g.nodes[&leader].raft().metrics().borrow().state {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    g.propose(leader, lsn, 1, 3, 2).await;
    g.kill(leader).await;
}

/// A leader cut off from both followers acknowledges nothing; the two
/// elect a leader of their own that serves; after healing, the old leader
/// follows without divergence and its minority batch is nowhere.
///
/// This is the test that catches an answer released after the leader's
/// own fsync only (before a majority has the batch): that leader would
/// acknowledge the minority batch, which the healed group then overwrites
/// (docs/REPLICATION.md, "the mutation the partition test catches").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_in_the_minority_acknowledges_nothing() {
    let g = Group::start_proxied(&IDS).await;
    let (old, lsn) = g.leader().await;
    let acked = g.propose(old, lsn, 1, 5, 2).await;
    let lsn = acked.last().expect("batches").last_lsn;

    g.isolate(old);
    let minority = common::batch(500, lsn + 1, 2);
    let proposer = g.nodes[&old].proposer();
    let mut pending = tokio::spawn(async move { proposer.propose(minority).await });

    let majority: Vec<u64> = IDS.iter().copied().filter(|id| *id != old).collect();
    let (new, new_lsn) = g.leader_among(&majority).await;
    assert_eq!(new_lsn, lsn, "the majority's leader is at the last acknowledged LSN");
    let more = g.propose(new, new_lsn, 100, 5, 2).await;
    let early = match pending.is_finished() {
        true => Some((&mut pending).await.expect("the proposing task")),
        false => None,
    };
    assert!(early.as_ref().is_none_or(|r| r.is_err()), "the minority acknowledged a batch: {early:?}");

    g.heal();
    let last = more.last().expect("batches").last_lsn;
    g.wait_applied(old, last).await;
    // The minority's proposal ends without an acknowledgement: refused
    // once the old leader learns of the new term (or still pending).
    let outcome = match early {
        Some(r) => Some(r),
        None => {
            tokio::time::timeout(Duration::from_secs(5), pending).await.ok().map(|r| r.expect("the proposing task"))
        }
    };
    match outcome {
        Some(Ok(applied)) => panic!("the minority batch was acknowledged: {applied:?}"),
        Some(Err(e)) => eprintln!("the minority batch was refused: {e}"),
        None => eprintln!("the minority batch is still pending"),
    }
    let group = g.nodes[&new].state().with_state(|s| s.replica().clone());
    for id in IDS {
        let state = g.nodes[&id].state().with_state(|s| s.replica().clone());
        assert_eq!(state.lsn, last, "replica {id}");
        assert!(!state.quotas.contains_key(&(500, 0)), "replica {id} applied the minority batch");
        assert_eq!(state, group, "replica {id} diverged");
        assert_state_has(&g.nodes[&id], &acked);
        assert_state_has(&g.nodes[&id], &more);
    }
}

/// Not a check: the figures of docs/REPLICATION.md ("first figures"). Run
/// with `cargo test --profile bench -p seckill-replica --test cluster --
/// --ignored --nocapture`. Batches of 64 records, one after another and
/// then 8 in flight, on a group of three and on a group of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn figures() {
    const BATCHES: u64 = 400;
    const RECORDS: u64 = 64;
    const IN_FLIGHT: usize = 8;
    for ids in [&IDS[..], &IDS[..1]] {
        let mut g = Group::start(ids).await;
        let (leader, mut lsn) = g.leader().await;
        let proposer = g.nodes[&leader].proposer();
        let started = Instant::now();
        for tag in 0..BATCHES {
            proposer.propose(common::batch(tag, lsn + 1, RECORDS)).await.expect("applied");
            lsn += RECORDS;
        }
        let one_by_one = started.elapsed();
        let started = Instant::now();
        let mut pending = std::collections::VecDeque::new();
        for tag in BATCHES..2 * BATCHES {
            pending.push_back(proposer.submit(common::batch(tag, lsn + 1, RECORDS)).await.expect("submitted"));
            lsn += RECORDS;
            if pending.len() >= IN_FLIGHT {
                let got = pending.pop_front().expect("in flight").applied().await.expect("applied");
                assert!(matches!(got, seckill_replica::Applied::Records { .. }), "{got:?}");
            }
        }
        for p in pending {
            p.applied().await.expect("applied");
        }
        let pipelined = started.elapsed();
        let per_s = |d: Duration| BATCHES as f64 / d.as_secs_f64();
        eprintln!(
            "replicas={} one-by-one: {:.0} batches/s ({:.2} ms each); {IN_FLIGHT} in flight: {:.0} batches/s = {:.0} records/s",
            ids.len(),
            per_s(one_by_one),
            one_by_one.as_secs_f64() * 1e3 / BATCHES as f64,
            per_s(pipelined),
            per_s(pipelined) * RECORDS as f64,
        );
        for id in ids {
            g.kill(*id).await;
        }
    }
}

/// The replacement of a replica, in one process: a new replica (4, empty
/// dir) joins without proposing a membership, is added as a learner through
/// a follower (which names the leader), installs the leader's snapshot (the
/// log was purged) and is promoted only once its log reaches the leader's;
/// then follower `gone` is removed: it takes the leader's notice, marks its
/// dir removed and never starts again; the leader and 4 then form a
/// majority without the third replica, and 4's `wal/` holds what the leader's
/// does after the snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_is_added_once_caught_up_and_an_old_one_removed() {
    use seckill_replica::membership::{self, ChangeError};
    let key = common::key();
    let mut g = Group::start(&IDS).await;
    let (leader, lsn) = g.leader().await;
    let before = g.propose(leader, lsn, 1, 20, 4).await;
    g.snapshot_and_purge(leader).await;
    let lsn = before.last().expect("batches").last_lsn;
    let after_snapshot = g.propose(leader, lsn, 100, 10, 4).await;
    let target = g.nodes[&leader].raft().metrics().borrow().last_log_index.expect("a log");

    let addr4 = g.join(4).await;
    let follower = *IDS.iter().find(|id| **id != leader).expect("a follower");
    let ask = vec![g.addrs[&follower].to_string()];
    let added =
        membership::add(&ask, 4, &addr4.to_string(), PATIENCE, PATIENCE, Some(&key)).await.expect("replica 4 added");
    assert_eq!(added.voters, vec![1, 2, 3, 4], "{added:?}");
    assert!(added.learners.is_empty(), "{added:?}");
    // Promoted only once caught up: by then its log reached the leader's.
    let s4 = g.nodes[&4].status();
    assert!(
        s4.last_log_index.is_some_and(|i| i >= target),
        "replica 4 was promoted with its log at {:?}, the leader's at {target}",
        s4.last_log_index
    );
    assert!(s4.snapshots_installed >= 1, "replica 4 caught up without the snapshot: {s4:?}");
    // Adding it again changes nothing.
    let again =
        membership::add(&ask, 4, &addr4.to_string(), PATIENCE, PATIENCE, Some(&key)).await.expect("added twice");
    assert!(!again.changed, "{again:?}");

    // The leader cannot remove itself; a follower can be removed, and stops.
    let refused = membership::remove(&ask, leader, PATIENCE, Some(&key)).await;
    assert!(matches!(refused, Err(ChangeError::Refused(_))), "removing the leader: {refused:?}");
    let gone = follower;
    let removed = membership::remove(&ask, gone, PATIENCE, Some(&key)).await.expect("follower removed");
    let mut voters: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|id| *id != gone).collect();
    voters.sort();
    assert_eq!(removed.voters, voters, "{removed:?}");
    assert_eq!(removed.left, Some(true), "the removed replica did not take the notice: {removed:?}");
    assert!(*g.nodes[&gone].removed().borrow(), "replica {gone} does not know it was removed");
    g.kill(gone).await;
    let mut cfg = seckill_replica::ReplicaConfig::new(gone, "127.0.0.1:0".parse().expect("addr"), g.dir(gone));
    cfg.key = Some(key.clone());
    let restarted = ReplicaNode::start(cfg, common::state(&g.dir(gone))).await;
    assert!(
        matches!(restarted, Err(seckill_replica::node::StartError::Removed(_))),
        "a removed replica's dir started again"
    );
    g.addrs.remove(&gone);

    // Without the third old replica, the leader and 4 are the majority.
    let other = *IDS.iter().find(|id| **id != leader && **id != gone).expect("the other old replica");
    g.kill(other).await;
    let lsn = after_snapshot.last().expect("batches").last_lsn;
    let more = g.propose(leader, lsn, 200, 5, 4).await;
    g.wait_applied(4, more.last().expect("batches").last_lsn).await;
    let on_4 = wal_records(&g.dir(4));
    let on_leader = wal_records(&g.dir(leader));
    assert!(!on_4.is_empty() && on_leader.ends_with(&on_4), "replica 4's wal/ is not the tail of the leader's");
    assert_eq!(on_4, records_of(&[after_snapshot, more].concat()), "replica 4's wal/ after the snapshot");
    for id in [leader, 4] {
        g.kill(id).await;
    }
}

/// A learner whose log does not reach the leader's is not made a voter: it
/// would count towards a majority it cannot help form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_that_did_not_catch_up_is_not_promoted() {
    use seckill_replica::membership::{request, Change, ChangeError};
    let key = common::key();
    let mut g = Group::start(&IDS).await;
    let (leader, lsn) = g.leader().await;
    let addr4 = g.join(4).await;
    let ask = vec![g.addrs[&leader].to_string()];
    let change = Change::AddLearner { id: 4, addr: addr4.to_string() };
    let added = request(&ask, &change, PATIENCE, PATIENCE, Some(&key)).await.expect("learner added");
    assert_eq!(added.learners, vec![4], "{added:?}");
    g.kill(4).await;
    g.propose(leader, lsn, 1, 30, 2).await;
    let promote = Change::Promote { id: 4, wait_ms: 1_000 };
    let got = request(&ask, &promote, PATIENCE, PATIENCE, Some(&key)).await;
    assert!(matches!(got, Err(ChangeError::Refused(_))), "a learner that is down was promoted: {got:?}");
    let s = g.nodes[&leader].status();
    assert_eq!((s.voters.clone(), s.learners.clone()), (vec![1, 2, 3], vec![4]), "{s:?}");
    for id in IDS {
        g.kill(id).await;
    }
}

/// A caller must prove the group's secret before its first frame: without
/// the key, or with another one, the replica answers nothing (not even its
/// status, let alone a vote or a membership change), and the group goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_without_the_groups_secret_is_refused() {
    use seckill_replica::membership::{request, Change};
    use seckill_replica::network::query_status;
    let mut g = Group::start(&IDS).await;
    let (leader, lsn) = g.leader().await;
    let addr = g.addrs[&leader].to_string();
    let ttl = Duration::from_secs(5);
    let wrong = WireKey::derive(b"another deployment's auth secret, 32+ bytes");
    assert!(query_status(&addr, ttl, Some(&wrong)).await.is_err(), "a status for the wrong secret");
    assert!(query_status(&addr, ttl, None).await.is_err(), "a status without the handshake");
    let change = Change::Remove { id: *IDS.iter().find(|id| **id != leader).expect("a follower") };
    let refused = request(std::slice::from_ref(&addr), &change, ttl, Duration::from_secs(1), Some(&wrong)).await;
    assert!(refused.is_err(), "a membership change for the wrong secret: {refused:?}");
    let s = query_status(&addr, ttl, Some(&common::key())).await.expect("the right secret is answered");
    assert_eq!(s.voters, IDS.to_vec(), "the group's membership changed: {s:?}");
    g.propose(leader, lsn, 1, 3, 2).await;
    for id in IDS {
        g.kill(id).await;
    }
}
