//! The front's connections to the engine: a few long-lived, pipelined,
//! multiplexed connections shared by every HTTP request.
//!
//! Each connection has a writer task (frames from many requests go out in
//! one `write`) and a reader task (answers matched to waiting requests by
//! id). A dead connection is redialed in the background; while no
//! connection is up, calls fail at once with `busy` (never a hang).
//!
//! With several engine addresses (the replicas of a group,
//! docs/REPLICATION.md) the pool keeps connections to every one and sends
//! to the one that last answered as the leader. A `NotLeader` answer, a
//! lost or missing connection, a timeout or `busy` make it try again, on
//! the hinted leader or the next address, within [`ATTEMPTS_MAX`] attempts
//! and [`CALL_TIMEOUT`], backing off between them; past that the caller
//! gets `busy`. Retrying is safe because every request a front sends is
//! idempotent on the engine once a buy carries an idempotency key, which
//! the front attaches itself when the buyer sent none
//! ([`EngineLink::retries`]). With one address nothing is retried.

use seckill_proto::handshake::{WireKey, HELLO_BYTES};
use seckill_proto::{decode_response, encode_request, Address, ErrorCode, FrameReader, Request, Response};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Requests queued toward one connection before callers get `busy`.
const OUTBOX_MAX: usize = 8192;
/// Longest wait for one answer, retries included: the engine answers within
/// a group commit, so this only fires when something is badly wrong (or a
/// group elects a new leader for longer than this).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one attempt's answer when there are other replicas to
/// try: a leader cut off from its group answers `busy` after 5 s
/// (`COMMIT_TIMEOUT_MS`), one that is gone without a FIN never answers.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts of one call over several replicas (each at most
/// [`ATTEMPT_TIMEOUT`], all within [`CALL_TIMEOUT`]).
pub const ATTEMPTS_MAX: u32 = 24;
/// Wait before a retry, doubled after each failed attempt up to the max;
/// a `NotLeader` naming another replica is followed at once.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(10);
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(400);
/// Retries after `busy` (or a full outbox) within one call: a leader that
/// stepped down answers `busy` and exits (the next attempt finds it gone),
/// but an overloaded one answers `busy` too, and retrying that for long
/// would only add load.
pub const BUSY_RETRIES_MAX: u32 = 2;
/// Engine addresses one front may be given (a group's replicas).
pub const ENGINES_MAX: usize = 7;
const REDIAL_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Longest wait for the engine's hello after connecting.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Room offered to each socket read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

struct Conn {
    outbox: mpsc::Sender<(u64, Request)>,
    waiters: Waiters,
    up: Arc<AtomicBool>,
}

/// The connections to one engine address.
struct Target {
    addr: Address,
    conns: Vec<Conn>,
    next_conn: AtomicUsize,
}

/// How one attempt on one address ended.
enum Attempt {
    Answer(Response),
    /// No connection up, or it was lost before the answer: the request may
    /// or may not have been decided.
    Lost,
    /// The outbox is full: this address is overloaded.
    Full,
    TimedOut,
}

pub struct EnginePool {
    targets: Vec<Target>,
    /// Index of the target that last answered as the leader.
    leader: AtomicUsize,
    next_id: AtomicU64,
}

impl EnginePool {
    /// Starts `connections` connections to each of `addrs` (dialed in the
    /// background, so the front can start before the engine). Each
    /// connection proves the shared secret first (`key`).
    pub fn start(addrs: Vec<Address>, connections: usize, key: WireKey) -> Arc<EnginePool> {
        assert!(connections >= 1);
        assert!((1..=ENGINES_MAX).contains(&addrs.len()));
        let targets = addrs
            .into_iter()
            .map(|addr| {
                let conns = (0..connections)
                    .map(|_| {
                        let (tx, rx) = mpsc::channel(OUTBOX_MAX);
                        let waiters: Waiters = Arc::default();
                        let up = Arc::new(AtomicBool::new(false));
                        tokio::spawn(run_conn(addr.clone(), key.clone(), rx, waiters.clone(), up.clone()));
                        Conn { outbox: tx, waiters, up }
                    })
                    .collect();
                Target { addr, conns, next_conn: AtomicUsize::new(0) }
            })
            .collect();
        Arc::new(EnginePool { targets, leader: AtomicUsize::new(0), next_id: AtomicU64::new(1) })
    }

    /// True when at least one connection is up.
    pub fn is_up(&self) -> bool {
        self.targets.iter().flat_map(|t| &t.conns).any(|c| c.up.load(Ordering::Acquire))
    }

    /// Whether calls are retried on other replicas (several addresses).
    pub fn retries(&self) -> bool {
        self.targets.len() > 1
    }

    /// Sends a request and waits for its answer. Engine unreachable, queue
    /// full or timeout all come back as `Response::Error(Busy)`; with
    /// several addresses, only once every attempt failed.
    pub async fn call(&self, req: Request) -> Response {
        if !self.retries() {
            return match self.attempt(&self.targets[0], req, CALL_TIMEOUT).await {
                // One address that is not the leader: nothing else to try.
                Attempt::Answer(Response::NotLeader { .. }) => Response::Error(ErrorCode::Busy),
                Attempt::Answer(resp) => resp,
                Attempt::Lost | Attempt::Full | Attempt::TimedOut => Response::Error(ErrorCode::Busy),
            };
        }
        let deadline = Instant::now() + CALL_TIMEOUT;
        let n = self.targets.len();
        let mut at = self.leader.load(Ordering::Relaxed) % n;
        let mut backoff = RETRY_BACKOFF_MIN;
        let mut busy = 0;
        // Targets that were lost or timed out in this call (bit i: target
        // i; at most `ENGINES_MAX` < 32).
        let mut failed: u32 = 0;
        for attempt in 0..ATTEMPTS_MAX {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let outcome = self.attempt(&self.targets[at], req.clone(), left.min(ATTEMPT_TIMEOUT)).await;
            let what = match &outcome {
                Attempt::Answer(Response::NotLeader { .. }) => "not_leader",
                Attempt::Answer(_) => "busy",
                Attempt::Lost => "lost",
                Attempt::Full => "full",
                Attempt::TimedOut => "timed_out",
            };
            let next = match outcome {
                Attempt::Answer(Response::NotLeader { leader }) => {
                    match self.targets.iter().position(|t| !leader.is_empty() && t.addr.to_string() == leader) {
                        // Follow the hint at once, unless that replica
                        // failed in this call: a follower names the old
                        // leader until it hears of the new one.
                        Some(hinted) if hinted != at && failed & (1 << hinted) == 0 => {
                            at = hinted;
                            continue;
                        }
                        _ => (at + 1) % n,
                    }
                }
                Attempt::Answer(Response::Error(ErrorCode::Busy)) | Attempt::Full => {
                    busy += 1;
                    if busy > BUSY_RETRIES_MAX {
                        return Response::Error(ErrorCode::Busy);
                    }
                    at
                }
                Attempt::Answer(resp) => {
                    // A read first: calls share this line, and it rarely changes.
                    if self.leader.load(Ordering::Relaxed) != at {
                        self.leader.store(at, Ordering::Relaxed);
                        tracing::info!(engine = %self.targets[at].addr, "engine leader found");
                    }
                    return resp;
                }
                Attempt::Lost | Attempt::TimedOut => {
                    failed |= 1 << at;
                    (at + 1) % n
                }
            };
            tracing::debug!(attempt, engine = %self.targets[at].addr, what, "engine call retried");
            metrics::counter!("seckill_front_engine_retries_total").increment(1);
            at = next;
            tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now()))).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
        metrics::counter!("seckill_front_engine_unreachable_total").increment(1);
        Response::Error(ErrorCode::Busy)
    }

    /// One try on one address.
    async fn attempt(&self, target: &Target, req: Request, timeout: Duration) -> Attempt {
        let n = target.conns.len();
        let start = target.next_conn.fetch_add(1, Ordering::Relaxed);
        let Some(conn) = (0..n).map(|i| &target.conns[(start + i) % n]).find(|c| c.up.load(Ordering::Acquire)) else {
            return Attempt::Lost;
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&conn.waiters).insert(id, tx);
        if conn.outbox.try_send((id, req)).is_err() {
            lock(&conn.waiters).remove(&id);
            return Attempt::Full;
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(resp)) => Attempt::Answer(resp),
            Ok(Err(_)) => Attempt::Lost,
            Err(_) => {
                lock(&conn.waiters).remove(&id);
                Attempt::TimedOut
            }
        }
    }
}

fn lock(w: &Waiters) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Response>>> {
    // A panic while holding this lock cannot leave the map inconsistent.
    w.lock().unwrap_or_else(|p| p.into_inner())
}

async fn run_conn(
    addr: Address,
    key: WireKey,
    mut outbox: mpsc::Receiver<(u64, Request)>,
    waiters: Waiters,
    up: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_millis(20);
    loop {
        // Whether a session ran (the engine was reachable).
        let connected = match &addr {
            Address::Unix(p) => match tokio::net::UnixStream::connect(p).await {
                Ok(s) => {
                    let (r, w) = s.into_split();
                    session(r, w, &key, &mut outbox, &waiters, &up).await
                }
                Err(_) => false,
            },
            Address::Tcp(a) => match tokio::net::TcpStream::connect(a).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let (r, w) = s.into_split();
                    session(r, w, &key, &mut outbox, &waiters, &up).await
                }
                Err(_) => false,
            },
        };
        up.store(false, Ordering::Release);
        // Everyone still waiting on this connection gets `busy` now.
        lock(&waiters).clear();
        match connected {
            true => {
                tracing::warn!(engine = %addr, "engine connection lost; redialing");
                backoff = Duration::from_millis(20);
            }
            false => {
                // Queued requests cannot be sent: drop them (their waiters are cleared).
                while outbox.try_recv().is_ok() {}
                backoff = (backoff * 2).min(REDIAL_BACKOFF_MAX);
            }
        }
        if outbox.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
    }
}

/// One connection's life: the handshake, then frames both ways until either
/// side fails. `false` when the handshake did not pass (not a session).
async fn session<R, W>(
    mut r: R,
    mut w: W,
    key: &WireKey,
    outbox: &mut mpsc::Receiver<(u64, Request)>,
    waiters: &Waiters,
    up: &AtomicBool,
) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut hello = [0u8; HELLO_BYTES];
    let proved = match tokio::time::timeout(HANDSHAKE_TIMEOUT, r.read_exact(&mut hello)).await {
        Ok(Ok(_)) => match key.proof(&hello) {
            Some(proof) => w.write_all(&proof).await.is_ok(),
            None => false,
        },
        _ => false,
    };
    if !proved {
        tracing::warn!("engine handshake failed: is it a seckill engine with the same SECKILL_AUTH_SECRET?");
        return false;
    }
    up.store(true, Ordering::Release);
    let reader = async {
        let mut frames = FrameReader::with_capacity(128 * 1024);
        loop {
            match r.read(frames.spare(READ_CHUNK_BYTES)).await {
                Ok(0) | Err(_) => return,
                Ok(n) => frames.filled(n),
            }
            // A malformed frame or answer ends this connection only.
            loop {
                match frames.next_frame() {
                    Ok(Some(frame)) => {
                        let Ok((id, resp)) = decode_response(frame) else { return };
                        if let Some(tx) = lock(waiters).remove(&id) {
                            let _ = tx.send(resp);
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
    };
    let writer = async {
        let mut out = Vec::with_capacity(64 * 1024);
        while let Some((id, req)) = outbox.recv().await {
            out.clear();
            encode_request(&mut out, id, &req);
            while out.len() < 60 * 1024 {
                match outbox.try_recv() {
                    Ok((id, req)) => encode_request(&mut out, id, &req),
                    Err(_) => break,
                }
            }
            if w.write_all(&out).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
    true
}

/// An engine in the same process (`seckill up`): requests go straight onto
/// its shard queues and answers come back through `done`, with no socket
/// and no connection threads in between. `cli` implements it, so the front
/// still does not depend on the engine crate.
pub trait LocalEngine: Send + Sync + 'static {
    /// Queues `req`; `done` receives the answer once it is durable. `Err`
    /// when the engine refuses it at once (queue full).
    fn submit(&self, req: Request, done: Delivery) -> Result<(), ErrorCode>;
}

/// Answers of an in-process engine on their way back into the runtime.
/// The engine releases a whole group commit at once, from its own thread;
/// waking each waiting request from there costs a cross-thread wake each.
/// Instead the answers queue here and only the first of a group wakes the
/// front's [`dispatch`] task, which hands them out inside the runtime.
/// Holds at most the requests the engine has accepted (its queues are bounded).
#[derive(Default)]
pub struct Mailbox {
    answers: Mutex<Vec<(oneshot::Sender<Response>, Response)>>,
    ready: tokio::sync::Notify,
}

/// Where one in-process answer goes.
pub struct Delivery {
    tx: oneshot::Sender<Response>,
    mailbox: Arc<Mailbox>,
}

impl Delivery {
    /// Called on the engine's thread once the answer may be revealed.
    pub fn deliver(self, resp: Response) {
        let first = {
            let mut answers = self.mailbox.answers.lock().unwrap_or_else(|e| e.into_inner());
            answers.push((self.tx, resp));
            answers.len() == 1
        };
        if first {
            self.mailbox.ready.notify_one();
        }
    }
}

/// Hands the mailbox's answers to their requests; runs for the life of the
/// runtime. A wake that finds the mailbox already emptied does nothing.
async fn dispatch(mailbox: Arc<Mailbox>) {
    let mut out = Vec::new();
    loop {
        mailbox.ready.notified().await;
        std::mem::swap(&mut *mailbox.answers.lock().unwrap_or_else(|e| e.into_inner()), &mut out);
        for (tx, resp) in out.drain(..) {
            // The request may have gone (its connection closed): fine.
            let _ = tx.send(resp);
        }
    }
}

/// How the front reaches its engine.
pub enum EngineLink {
    /// Over the wire protocol (`seckill front`, or several fronts).
    Remote(Arc<EnginePool>),
    /// In process (`seckill up`).
    Local(Arc<dyn LocalEngine>, Arc<Mailbox>),
    /// Several groups over the wire, each request routed by the id it names
    /// (`seckill front --engine-group`; `crate::groups`).
    Groups(Arc<crate::groups::GroupLinks>),
}

impl EngineLink {
    /// The link to an engine in this process; starts the task that hands
    /// out its answers, so it must be called inside the front's runtime.
    pub fn local(engine: Arc<dyn LocalEngine>) -> Self {
        let mailbox = Arc::new(Mailbox::default());
        tokio::spawn(dispatch(mailbox.clone()));
        EngineLink::Local(engine, mailbox)
    }

    pub fn is_up(&self) -> bool {
        match self {
            EngineLink::Remote(pool) => pool.is_up(),
            EngineLink::Local(..) => true,
            EngineLink::Groups(groups) => groups.is_up(),
        }
    }

    /// Whether a call may reach the engine more than once (a front given
    /// several replicas): then the front gives every buy an idempotency key.
    pub fn retries(&self) -> bool {
        match self {
            EngineLink::Remote(pool) => pool.retries(),
            EngineLink::Local(..) => false,
            EngineLink::Groups(groups) => groups.retries(),
        }
    }

    /// One request, one answer; every failure to get one is `busy`.
    pub async fn call(&self, req: Request) -> Response {
        match self {
            EngineLink::Remote(pool) => pool.call(req).await,
            EngineLink::Local(engine, mailbox) => {
                let (tx, rx) = oneshot::channel();
                if let Err(code) = engine.submit(req, Delivery { tx, mailbox: mailbox.clone() }) {
                    return Response::Error(code);
                }
                // No timer: an engine in this process answers everything it
                // accepted (after its fsync, or `busy` when the log failed)
                // or the process is gone (crash-only); a dropped sender is `busy`.
                rx.await.unwrap_or(Response::Error(ErrorCode::Busy))
            }
            EngineLink::Groups(groups) => groups.call(req).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine whose thread answers in groups, as the WAL releases them.
    struct Grouping(std::sync::mpsc::SyncSender<(Request, Delivery)>);

    impl LocalEngine for Grouping {
        fn submit(&self, req: Request, done: Delivery) -> Result<(), ErrorCode> {
            self.0.send((req, done)).map_err(|_| ErrorCode::Busy)
        }
    }

    /// A fake engine on a local port: the wire handshake, then each request
    /// is answered by `answer` (`None`: the connection is dropped with the
    /// request unanswered, as a killed leader leaves it). Every request it
    /// received is kept.
    struct FakeEngine {
        addr: Address,
        seen: Arc<Mutex<Vec<Request>>>,
    }

    type Answer = Arc<dyn Fn(&Request) -> Option<Response> + Send + Sync>;

    async fn fake_engine(key: WireKey, answer: Answer) -> FakeEngine {
        use seckill_proto::handshake::{NONCE_BYTES, PROOF_BYTES};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = Address::Tcp(listener.local_addr().expect("local addr"));
        let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
        let kept = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (key, answer, seen) = (key.clone(), answer.clone(), kept.clone());
                tokio::spawn(async move {
                    let nonce: [u8; NONCE_BYTES] = rand::random();
                    let mut proof = [0u8; PROOF_BYTES];
                    if s.write_all(&WireKey::hello(&nonce)).await.is_err()
                        || s.read_exact(&mut proof).await.is_err()
                        || !key.verify(&nonce, &proof)
                    {
                        return;
                    }
                    let mut frames = FrameReader::with_capacity(4096);
                    loop {
                        match s.read(frames.spare(4096)).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => frames.filled(n),
                        }
                        while let Ok(Some(frame)) = frames.next_frame() {
                            let (id, req) = seckill_proto::decode_request(frame).expect("a request");
                            seen.lock().expect("seen").push(req.clone());
                            let Some(resp) = answer(&req) else { return };
                            let mut out = Vec::new();
                            seckill_proto::encode_response(&mut out, id, &resp);
                            if s.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        FakeEngine { addr, seen }
    }

    fn buy(key: u64) -> Request {
        Request::Buy { user_id: 7, activity_id: 1, quantity: 1, idempotency_key: key, buy_token_ok: false }
    }

    async fn wait_up(pool: &EnginePool) {
        for _ in 0..500 {
            if pool.targets.iter().all(|t| t.conns.iter().all(|c| c.up.load(Ordering::Acquire))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the pool did not connect");
    }

    /// A follower's `NotLeader` naming the leader sends the front there,
    /// and the front remembers it: the next call goes to the leader first.
    #[tokio::test]
    async fn a_follower_sends_the_front_to_the_leader_it_names() {
        let key = WireKey::derive(b"test secret");
        let leader = fake_engine(key.clone(), Arc::new(|_: &Request| Some(Response::Done))).await;
        let hint = leader.addr.to_string();
        let follower =
            fake_engine(key.clone(), Arc::new(move |_: &Request| Some(Response::NotLeader { leader: hint.clone() })))
                .await;
        // A follower that knows no leader, next in line: not asked while the hint works.
        let other =
            fake_engine(key.clone(), Arc::new(|_: &Request| Some(Response::NotLeader { leader: String::new() }))).await;
        let pool = EnginePool::start(vec![follower.addr.clone(), other.addr.clone(), leader.addr.clone()], 1, key);
        wait_up(&pool).await;
        assert!(pool.retries());
        assert_eq!(pool.call(buy(5)).await, Response::Done);
        assert_eq!(pool.call(buy(6)).await, Response::Done);
        assert_eq!(*follower.seen.lock().expect("seen"), vec![buy(5)], "the follower was asked again");
        assert!(other.seen.lock().expect("seen").is_empty(), "the hint was not followed");
        assert_eq!(*leader.seen.lock().expect("seen"), vec![buy(5), buy(6)]);
    }

    /// A request in flight when its leader dies (the connection drops
    /// unanswered) is sent again, the same request with the same key, to
    /// the next replica; the caller sees only the second answer.
    #[tokio::test]
    async fn a_request_lost_with_its_leader_is_retried_on_the_next_replica() {
        let key = WireKey::derive(b"test secret");
        let dying = fake_engine(key.clone(), Arc::new(|_: &Request| None)).await;
        let next = fake_engine(key.clone(), Arc::new(|_: &Request| Some(Response::Error(ErrorCode::SoldOut)))).await;
        let pool = EnginePool::start(vec![dying.addr.clone(), next.addr.clone()], 1, key);
        wait_up(&pool).await;
        assert_eq!(pool.call(buy(0xabc)).await, Response::Error(ErrorCode::SoldOut));
        assert_eq!(*dying.seen.lock().expect("seen"), vec![buy(0xabc)]);
        assert_eq!(*next.seen.lock().expect("seen"), vec![buy(0xabc)]);
    }

    /// One engine address: nothing is retried, and a `NotLeader` (a
    /// follower given as the only engine) is `busy` to the caller.
    #[tokio::test]
    async fn one_address_is_never_retried() {
        let key = WireKey::derive(b"test secret");
        let follower =
            fake_engine(key.clone(), Arc::new(|_: &Request| Some(Response::NotLeader { leader: String::new() }))).await;
        let pool = EnginePool::start(vec![follower.addr.clone()], 1, key);
        wait_up(&pool).await;
        assert!(!pool.retries());
        assert_eq!(pool.call(buy(1)).await, Response::Error(ErrorCode::Busy));
        assert_eq!(follower.seen.lock().expect("seen").len(), 1);
    }

    #[test]
    fn every_answer_of_every_group_reaches_its_request() {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Request, Delivery)>(4096);
        // Releases whatever has queued, all at once, like a group commit.
        let engine = std::thread::spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut group = vec![first];
                group.extend(rx.try_iter());
                std::thread::sleep(Duration::from_micros(200));
                for (req, done) in group {
                    let Request::GetOrder { user_id, .. } = req else { panic!("unexpected request") };
                    done.deliver(Response::Error(if user_id == Some(7) {
                        ErrorCode::SoldOut
                    } else {
                        ErrorCode::Busy
                    }));
                }
            }
        });
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let link = Arc::new(EngineLink::local(Arc::new(Grouping(tx))));
            let calls: Vec<_> = (0..2_000u64)
                .map(|i| {
                    let link = link.clone();
                    tokio::spawn(async move {
                        let user_id = Some(if i % 2 == 0 { 7 } else { 8 });
                        let order_id = seckill_proto::OrderId::first_at(i + 1, 0);
                        (user_id, link.call(Request::GetOrder { user_id, order_id }).await)
                    })
                })
                .collect();
            for call in calls {
                let (user, resp) = tokio::time::timeout(Duration::from_secs(10), call)
                    .await
                    .expect("an answer was delivered but never handed out")
                    .expect("task");
                let want = if user == Some(7) { ErrorCode::SoldOut } else { ErrorCode::Busy };
                assert_eq!(resp, Response::Error(want));
            }
            // One at a time: every group holds a single answer, which alone
            // must wake the runtime.
            for i in 0..20u64 {
                let order_id = seckill_proto::OrderId::first_at(i + 1, 0);
                let call = link.call(Request::GetOrder { user_id: Some(7), order_id });
                let resp = tokio::time::timeout(Duration::from_secs(5), call).await.expect("a lone answer was lost");
                assert_eq!(resp, Response::Error(ErrorCode::SoldOut));
            }
        });
        engine.join().expect("engine thread");
    }
}
