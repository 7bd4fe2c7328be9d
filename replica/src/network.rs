//! The transport between the replicas of a group: one TCP connection per
//! (caller, peer) pair, carrying length-prefixed frames `len u32 LE |
//! postcard body`, one request and then its answer.
//!
//! Every input is bounded: a frame longer than [`FRAME_BYTES_MAX`] closes
//! the connection, a server takes at most [`CONNECTIONS_MAX`] connections
//! and drops one idle for [`IDLE_TIMEOUT_MS`], and nothing read from a
//! socket is unwrapped. An AppendEntries whose entries do not fit in one
//! frame sends the prefix that fits and reports a partial success; openraft
//! sends the rest next.
//!
//! With a key (the binary always gives one: the wire key derived from the
//! auth secret, the same on every replica), a connection first proves that
//! its peer holds the secret, as on the engine wire
//! (`seckill_proto::handshake`): the server sends a hello with a random
//! nonce, the caller answers with the HMAC of it, and a wrong or missing
//! answer within [`HANDSHAKE_TIMEOUT_MS`] closes the connection before any
//! frame is read.

use crate::membership::{Change, ChangeError, Changed, Leave, Membership};
use crate::status::Status;
use crate::{NodeId, Raft, TypeConfig};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, RPCTypes};
use seckill_proto::handshake::{WireKey, HELLO_BYTES, NONCE_BYTES, PROOF_BYTES};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The longest frame either side reads. One entry is at most
/// `BATCH_BYTES_MAX` (8 MiB) and a snapshot chunk at most the configured
/// chunk size (`node::SNAPSHOT_CHUNK_BYTES`, 1 MiB), so both always fit.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Connections one replica serves at once (two peers open a few each).
pub const CONNECTIONS_MAX: usize = 64;
/// A connection that sends nothing for this long is closed (a leader sends
/// heartbeats far more often).
pub const IDLE_TIMEOUT_MS: u64 = 60_000;
/// A caller that has not answered the hello within this long is closed.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// What a peer asks (borrowed for sending: the same encoding as [`Request`]).
#[derive(Serialize)]
enum RequestRef<'a> {
    AppendEntries(&'a AppendEntriesRequest<TypeConfig>),
    Vote(&'a VoteRequest<NodeId>),
    InstallSnapshot(&'a InstallSnapshotRequest<TypeConfig>),
    Status,
    Change(&'a Change),
    Leave(&'a Leave),
}

/// What a peer asks, as received.
#[derive(Deserialize)]
enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// The replica's [`Status`] (`seckill admin replica status`).
    Status,
    /// A membership change (`seckill admin replica add|remove`), done by
    /// the leader; any other replica answers who leads.
    Change(Change),
    /// The leader's notice to a replica it removed from the group.
    Leave(Leave),
}

#[derive(Serialize, Deserialize)]
enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Status(Status),
    Change(Result<Changed, ChangeError>),
    /// Whether the replica accepted the notice (it is not in the membership
    /// the notice carries) and stops.
    Leave(bool),
}

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// Reads one frame's body, or `None` at a clean end of stream.
async fn read_frame(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > FRAME_BYTES_MAX {
        return Err(invalid(format!("frame of {len} bytes (at most {FRAME_BYTES_MAX})")));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Encodes `msg` as one frame, or `None` when it exceeds [`FRAME_BYTES_MAX`].
fn encode_frame(msg: &impl Serialize) -> io::Result<Option<Vec<u8>>> {
    let out = postcard::to_extend(msg, vec![0u8; 4]).map_err(io::Error::other)?;
    let len = out.len() - 4;
    if len > FRAME_BYTES_MAX {
        return Ok(None);
    }
    let mut out = out;
    out[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(Some(out))
}

/// What the server of one replica answers from: its Raft, the state
/// machine's counters (for [`Status`]) and the membership side
/// ([`Membership`]: changes on the leader, the removal notice).
#[derive(Clone)]
pub struct Served {
    pub raft: Raft,
    /// The state machine's applied LSN.
    pub applied_lsn: Arc<AtomicU64>,
    /// Snapshots installed from a leader since this replica started.
    pub snapshots_installed: Arc<AtomicU64>,
    pub membership: Membership,
    /// The handshake's key; `None`: callers are not asked to prove anything.
    pub key: Option<WireKey>,
}

impl Served {
    /// This replica's [`Status`], as `replica status` shows it.
    pub fn status(&self) -> Status {
        let mut s = Status::of(&self.raft.metrics().borrow(), self.applied_lsn.load(Ordering::Acquire));
        s.snapshots_installed = self.snapshots_installed.load(Ordering::Acquire);
        s.removed = self.membership.is_removed();
        s
    }
}

/// Serves the peers of `served.raft` on `listener` until the future is
/// dropped (dropping it closes every connection it accepted).
pub async fn serve(listener: TcpListener, served: Served) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, "replica connection refused: {CONNECTIONS_MAX} already open");
                        continue;
                    };
                    let served = served.clone();
                    conns.spawn(async move {
                        let _permit = permit;
                        if let Err(e) = serve_conn(stream, &served).await {
                            if e.kind() == io::ErrorKind::InvalidData {
                                metrics::counter!("seckill_replica_bad_frames_total").increment(1);
                                tracing::warn!(%peer, error = %e, "replica connection closed: bad frame");
                            } else if e.kind() == io::ErrorKind::PermissionDenied {
                                tracing::warn!(%peer, error = %e, "replica connection refused");
                            } else {
                                tracing::debug!(%peer, error = %e, "replica connection closed");
                            }
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a replica connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// The server's side of the handshake: hello out, proof in.
async fn authenticate(stream: &mut TcpStream, key: &WireKey) -> io::Result<()> {
    let nonce: [u8; NONCE_BYTES] = rand::random();
    stream.write_all(&WireKey::hello(&nonce)).await?;
    let mut proof = [0u8; PROOF_BYTES];
    let read = tokio::time::timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS), stream.read_exact(&mut proof)).await;
    if !matches!(read, Ok(Ok(_))) || !key.verify(&nonce, &proof) {
        metrics::counter!("seckill_replica_handshake_refused_total").increment(1);
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the caller did not prove the group's secret (SECKILL_AUTH_SECRET)",
        ));
    }
    Ok(())
}

/// The caller's side: connects to `addr` and, with a key, answers its hello.
async fn connect(addr: &str, key: Option<&WireKey>) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    if let Some(key) = key {
        let mut hello = [0u8; HELLO_BYTES];
        stream.read_exact(&mut hello).await?;
        let proof = key.proof(&hello).ok_or_else(|| invalid("the peer's hello is not a seckill replica's"))?;
        stream.write_all(&proof).await?;
    }
    Ok(stream)
}

async fn serve_conn(mut stream: TcpStream, served: &Served) -> io::Result<()> {
    let raft = &served.raft;
    stream.set_nodelay(true)?;
    if let Some(key) = &served.key {
        authenticate(&mut stream, key).await?;
    }
    loop {
        let frame = tokio::time::timeout(Duration::from_millis(IDLE_TIMEOUT_MS), read_frame(&mut stream))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "idle replica connection"))??;
        let Some(body) = frame else { return Ok(()) };
        let req: Request = postcard::from_bytes(&body).map_err(|e| invalid(format!("undecodable request: {e}")))?;
        let resp = match req {
            Request::AppendEntries(r) => Response::AppendEntries(raft.append_entries(r).await),
            Request::Vote(r) => Response::Vote(raft.vote(r).await),
            Request::InstallSnapshot(r) => Response::InstallSnapshot(raft.install_snapshot(r).await),
            Request::Status => Response::Status(served.status()),
            Request::Change(c) => Response::Change(served.membership.change(raft, c).await),
            Request::Leave(l) => Response::Leave(served.membership.leave(raft, &l)),
        };
        let frame = encode_frame(&resp)?.ok_or_else(|| invalid("response exceeds the frame limit"))?;
        stream.write_all(&frame).await?;
    }
}

/// Makes the clients openraft uses to reach each peer.
#[derive(Clone)]
pub struct NetworkFactory {
    /// This replica's id (for openraft's timeout errors).
    pub id: NodeId,
    /// Where to dial a peer instead of its address in the membership.
    pub dial: Arc<BTreeMap<NodeId, String>>,
    /// The handshake's key (as the peers' servers expect).
    pub key: Option<WireKey>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        let addr = self.dial.get(&target).cloned().unwrap_or_else(|| node.addr.clone());
        PeerClient { id: self.id, target, addr, conn: None, key: self.key.clone() }
    }
}

/// One connection to one peer, opened on first use and again after any error.
pub struct PeerClient {
    id: NodeId,
    target: NodeId,
    addr: String,
    conn: Option<TcpStream>,
    key: Option<WireKey>,
}

/// Why a call got no answer.
enum CallError {
    Connect(io::Error),
    Io(io::Error),
    Timeout,
}

impl PeerClient {
    async fn call(&mut self, frame: &[u8], ttl: Duration) -> Result<Response, CallError> {
        let res = tokio::time::timeout(ttl, self.exchange(frame)).await;
        let res = match res {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout),
        };
        if res.is_err() {
            // A connection that failed mid-exchange may hold half an answer.
            self.conn = None;
        }
        res
    }

    async fn exchange(&mut self, frame: &[u8]) -> Result<Response, CallError> {
        let stream = match &mut self.conn {
            Some(s) => s,
            None => {
                let s = connect(&self.addr, self.key.as_ref()).await.map_err(CallError::Connect)?;
                self.conn.insert(s)
            }
        };
        stream.write_all(frame).await.map_err(CallError::Io)?;
        let body = read_frame(stream)
            .await
            .map_err(CallError::Io)?
            .ok_or_else(|| CallError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed the connection")))?;
        postcard::from_bytes(&body).map_err(|e| CallError::Io(invalid(format!("undecodable response: {e}"))))
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        e: CallError,
        action: RPCTypes,
        ttl: Duration,
    ) -> RPCError<NodeId, BasicNode, E> {
        match e {
            CallError::Connect(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Io(e) => RPCError::Network(NetworkError::new(&e)),
            CallError::Timeout => RPCError::Timeout(Timeout { action, id: self.id, target: self.target, timeout: ttl }),
        }
    }

    /// Sends `req` (`what` names it when it does not fit in a frame) and
    /// takes its answer out of the response with `answer` (`None`: an
    /// answer of another kind).
    async fn ask<R, E: std::error::Error>(
        &mut self,
        req: RequestRef<'_>,
        what: &str,
        action: RPCTypes,
        option: RPCOption,
        answer: fn(Response) -> Option<Result<R, E>>,
    ) -> Result<R, RPCError<NodeId, BasicNode, E>> {
        let ttl = option.hard_ttl();
        let frame = encode_frame(&req)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?
            .ok_or_else(|| RPCError::Network(NetworkError::new(&invalid(format!("{what} exceeds the frame limit")))))?;
        match self.call(&frame, ttl).await.map(answer) {
            Ok(Some(Ok(r))) => Ok(r),
            Ok(Some(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(None) => Err(unexpected()),
            Err(e) => Err(self.rpc_error(e, action, ttl)),
        }
    }
}

/// One request to the replica at `addr` on a connection of its own, and
/// its answer (waiting at most `ttl`): the operator's calls.
async fn ask_once(addr: &str, req: RequestRef<'_>, ttl: Duration, key: Option<&WireKey>) -> io::Result<Response> {
    let ask = async {
        let mut stream = connect(addr, key).await?;
        let frame = encode_frame(&req)?.ok_or_else(|| invalid("request too large"))?;
        stream.write_all(&frame).await?;
        let body = read_frame(&mut stream)
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the replica closed the connection"))?;
        postcard::from_bytes(&body).map_err(|e| invalid(format!("undecodable answer: {e}")))
    };
    tokio::time::timeout(ttl, ask).await.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))?
}

/// Asks the replica at `addr` for its [`Status`] (waiting at most `ttl`;
/// `key`: the group's handshake key, when its replicas have one).
pub async fn query_status(addr: &str, ttl: Duration, key: Option<&WireKey>) -> io::Result<Status> {
    match ask_once(addr, RequestRef::Status, ttl, key).await? {
        Response::Status(s) => Ok(s),
        _ => Err(invalid("answer of another kind")),
    }
}

/// Asks the replica at `addr` to make a membership change (only a leader
/// does; another answers [`ChangeError::NotLeader`]).
pub async fn request_change(
    addr: &str,
    change: &Change,
    ttl: Duration,
    key: Option<&WireKey>,
) -> io::Result<Result<Changed, ChangeError>> {
    match ask_once(addr, RequestRef::Change(change), ttl, key).await? {
        Response::Change(r) => Ok(r),
        _ => Err(invalid("answer of another kind")),
    }
}

/// Tells the replica at `addr` that it was removed; whether it accepted.
pub async fn send_leave(addr: &str, leave: &Leave, ttl: Duration, key: Option<&WireKey>) -> io::Result<bool> {
    match ask_once(addr, RequestRef::Leave(leave), ttl, key).await? {
        Response::Leave(ok) => Ok(ok),
        _ => Err(invalid("answer of another kind")),
    }
}

fn unexpected<E: std::error::Error>() -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&invalid("answer of another kind")))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let sent_all = rpc.entries.len();
        // Halve the entries until the request fits in a frame (one entry
        // always does: a batch is at most BATCH_BYTES_MAX).
        let frame = loop {
            let encoded =
                encode_frame(&RequestRef::AppendEntries(&rpc)).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
            match encoded {
                Some(f) => break f,
                None if rpc.entries.len() > 1 => rpc.entries.truncate(rpc.entries.len() / 2),
                None => {
                    return Err(RPCError::Network(NetworkError::new(&invalid("one log entry exceeds the frame limit"))))
                }
            }
        };
        let last_sent = rpc.entries.last().map(|e| e.log_id);
        let ttl = option.hard_ttl();
        match self.call(&frame, ttl).await {
            Ok(Response::AppendEntries(Ok(AppendEntriesResponse::Success))) if rpc.entries.len() < sent_all => {
                Ok(AppendEntriesResponse::PartialSuccess(last_sent))
            }
            Ok(Response::AppendEntries(Ok(r))) => Ok(r),
            Ok(Response::AppendEntries(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(_) => Err(unexpected()),
            Err(e) => Err(self.rpc_error(e, RPCTypes::AppendEntries, ttl)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        let req = RequestRef::InstallSnapshot(&rpc);
        self.ask(req, "snapshot chunk", RPCTypes::InstallSnapshot, option, |r| match r {
            Response::InstallSnapshot(answer) => Some(answer),
            _ => None,
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.ask(RequestRef::Vote(&rpc), "vote", RPCTypes::Vote, option, |r| match r {
            Response::Vote(answer) => Some(answer),
            _ => None,
        })
        .await
    }
}
