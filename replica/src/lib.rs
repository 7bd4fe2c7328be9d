//! Replica groups: three engines that agree on one log with Raft
//! (`openraft` 0.9), so that an answer waits for a majority's fdatasync
//! instead of one disk's, and a follower takes over when the leader dies.
//! The design, and what is not wired yet, is docs/REPLICATION.md.
//!
//! One Raft log entry is one group-commit batch of the leader: the WAL
//! records (`seckill_engine::wal::codec`) of that batch, as opaque bytes
//! ([`Batch`]). Every replica applies committed entries, in log order, to a
//! state machine behind the [`Apply`] trait; the records carry their LSNs,
//! so the LSN of every event is the same on every replica.
//!
//! Architecture Invariant: `replica` depends on `engine` and `proto` only
//! among seckill crates, and only `cli` depends on it; it never depends on
//! `front` or `persist`, and `engine` never depends on it (the engine offers
//! `Sink::Replicated` and `Engine::from_replica`; [`replicator`] drives them).
//!
//! # Parts
//!
//! * [`TypeConfig`]: the openraft type configuration (node ids `u64`,
//!   nodes addressed by `host:port`, entries carrying a [`Batch`]).
//! * [`log_store::LogStore`]: the durable Raft log, one append-only file;
//!   an append is acknowledged only after its fdatasync, the vote is
//!   written to its own file and synced before it counts.
//! * [`state_machine::StateMachine`]: the openraft state machine around an
//!   [`Apply`] (applied log id, membership, snapshots kept on disk);
//!   [`state_machine::RecordsState`] is the reference [`Apply`]: WAL
//!   records applied to `seckill_engine::replica::Replica` and (with
//!   `with_wal`) appended to the data dir's `wal/`, snapshots in the
//!   engine's snapshot format.
//! * [`network`]: length-prefixed postcard frames over TCP between
//!   replicas, with a limit on every frame and on connections.
//! * [`node::ReplicaNode`]: one replica (log store, state machine, server,
//!   Raft) and its [`Proposer`], the leader's way in.
//! * [`replicator`]: the leader's commit path ([`Replicator`]: the engine's
//!   batches as entries, answers released once committed and applied) and
//!   [`lead`], which starts the engine on the group's state.
//! * [`status`]: what a replica says about itself ([`Status`], gauges).
//! * [`membership`]: adding (a learner, promoted once caught up) and
//!   removing replicas of a running group, through its leader.
//!
//! Metrics: `seckill_replica_log_fsync_seconds` (one Raft log fdatasync),
//! `seckill_replica_bad_frames_total` (connections closed for a bad frame),
//! `seckill_replica_handshake_refused_total` (callers that did not prove the secret),
//! `seckill_replica_snapshots_installed_total`, `seckill_replica_removed_total`; the replicator's
//! `seckill_replica_commit_seconds`, `_entry_bytes`, `_records_total`,
//! `_step_downs_total`; and the gauges of [`status`].

pub mod log_store;
pub mod membership;
pub mod network;
pub mod node;
pub mod replicator;
pub mod state_machine;
pub mod status;

use serde::{Deserialize, Serialize};
use std::io::Cursor;

pub use node::{Pending, ProposeError, Proposer, ReplicaConfig, ReplicaNode};
/// The Raft library, for callers that name its types (configuration, membership).
pub use openraft;
pub use replicator::{lead, LeadError, Leading, Replicator, StepDown};
pub use state_machine::{Apply, ApplyError};
pub use status::Status;

/// Node ids of a group: small, stable, chosen by the operator.
pub type NodeId = u64;

/// The payload of one Raft log entry: the encoded WAL records of one
/// group-commit batch, in LSN order. Opaque to Raft; `Bytes` so that the
/// clones openraft makes of entries (replication, apply) copy nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch(pub bytes::Bytes);

/// What applying one entry gave, returned to the proposer once the entry is
/// committed and applied on the leader. The same on every replica: it is a
/// function of the entry and the state before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// An entry that carries no batch (a new leader's blank entry, a
    /// membership change).
    #[default]
    Nothing,
    /// The batch's records were applied; `last_lsn` is the LSN of its last
    /// record (the state's LSN now).
    Records { first_lsn: u64, last_lsn: u64 },
    /// The batch did not follow the state (its first LSN is not
    /// `expected_lsn`, or it does not decode) and was skipped, on every
    /// replica alike. The leader that proposed it had a state the group
    /// does not have: it must not acknowledge the batch and must rebuild
    /// its state from the group's (docs/REPLICATION.md, "stepping down").
    Rejected { expected_lsn: u64 },
}

openraft::declare_raft_types!(
    /// The openraft types of a replica group.
    pub TypeConfig:
        D = Batch,
        R = Applied,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The Raft handle of a replica group.
pub type Raft = openraft::Raft<TypeConfig>;

/// Most bytes one batch may carry. The engine's WAL groups are at most
/// 4 MiB (`GROUP_BYTES_MAX`); twice that leaves room and stays well under
/// [`network::FRAME_BYTES_MAX`], so one entry always fits in one frame.
pub const BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;
