//! The wire server: long-lived, pipelined, multiplexed connections.
//!
//! Each connection has a reader thread (frames in, requests to the shards)
//! and a writer thread (answers out, many per `write`). Connections are few
//! (a front keeps a small pool), so two threads each is cheap and keeps the
//! engine free of an async runtime. A malformed frame closes its connection
//! and nothing else.
//!
//! Every connection first proves it holds the deployment's secret
//! (`seckill_proto::handshake`), within `HANDSHAKE_TIMEOUT`; and the
//! operator's request kinds (ship, expire, quotas, reads without an owner)
//! are refused on the wire: they belong to the admin socket.
//!
//! A replica of a group serves its wire port before it leads
//! ([`Serving::follower`]): every request is answered `NotLeader` (with
//! the leader's address when known), so fronts re-route at once instead of
//! waiting on a refused connection; once it leads ([`Serving::lead`]) the
//! same connections reach its engine.

use crossbeam_channel::{unbounded, Receiver};
use seckill_engine::{Engine, Envelope};
use seckill_proto::handshake::{WireKey, NONCE_BYTES, PROOF_BYTES};
use seckill_proto::Address;
use seckill_proto::{decode_request, encode_response, ErrorCode, FrameReader, Response};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Connections served at once; more are closed at accept.
pub const CONNECTIONS_MAX: usize = 256;
/// Requests one connection may have waiting for answers; the reader stops
/// reading until answers drain (the client feels back-pressure, memory stays bounded).
pub const IN_FLIGHT_MAX: usize = 16 * 1024;
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A new connection must answer the hello within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_BATCH_MAX: usize = 1024;

pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// A connected stream of either kind.
pub trait Stream: Read + Write + Send + 'static {
    fn try_clone_stream(&self) -> io::Result<Box<dyn Stream>>;
    fn shutdown_both(&self);
    fn set_read_timeout_to(&self, timeout: Option<Duration>) -> io::Result<()>;
}

/// `Stream` for the std socket types, whose inherent methods have these names.
macro_rules! impl_stream {
    ($($t:ty),+) => {$(
        impl Stream for $t {
            fn try_clone_stream(&self) -> io::Result<Box<dyn Stream>> {
                Ok(Box::new(self.try_clone()?))
            }
            fn shutdown_both(&self) {
                let _ = self.shutdown(Shutdown::Both);
            }
            fn set_read_timeout_to(&self, timeout: Option<Duration>) -> io::Result<()> {
                self.set_read_timeout(timeout)
            }
        }
    )+};
}
impl_stream!(UnixStream, TcpStream);

impl Listener {
    /// Binds `addr`. A stale unix socket file (no one listening) is replaced.
    pub fn bind(addr: &Address) -> io::Result<Listener> {
        match addr {
            Address::Unix(path) => {
                if path.exists() && UnixStream::connect(path).is_err() {
                    std::fs::remove_file(path)?;
                }
                Ok(Listener::Unix(super::bind_private(path)?))
            }
            Address::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a)?)),
        }
    }

    fn accept(&self) -> io::Result<Box<dyn Stream>> {
        match self {
            Listener::Unix(l) => Ok(Box::new(l.accept()?.0)),
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nodelay(true)?;
                Ok(Box::new(s))
            }
        }
    }
}

/// Who answers a wire listener's requests: an engine, or (a replica that
/// does not lead) nobody yet, which answers every request `NotLeader`.
/// A replica leads at most once per process (it exits when it steps down),
/// so the engine is set once.
pub struct Serving {
    engine: OnceLock<Arc<Engine>>,
    /// The leader's engine address as this replica last heard it; empty
    /// when unknown.
    leader: Mutex<String>,
}

impl Serving {
    /// A replica that does not lead (yet).
    pub fn follower() -> Serving {
        Serving { engine: OnceLock::new(), leader: Mutex::new(String::new()) }
    }

    /// From now on requests go to `engine` (a second call is ignored).
    pub fn lead(&self, engine: Arc<Engine>) {
        let _ = self.engine.set(engine);
    }

    /// The leader's engine address to hint in `NotLeader` answers (empty: unknown).
    pub fn set_leader(&self, address: &str) {
        let mut leader = self.leader.lock().unwrap_or_else(|p| p.into_inner());
        if *leader != address {
            leader.clear();
            leader.push_str(address);
        }
    }

    fn not_leader(&self) -> Response {
        Response::NotLeader { leader: self.leader.lock().unwrap_or_else(|p| p.into_inner()).clone() }
    }
}

/// Accepts connections until `stop` is set (checked after each accept).
pub fn serve(engine: Arc<Engine>, listener: Listener, stop: Arc<AtomicBool>, key: WireKey) {
    let serving = Serving::follower();
    serving.lead(engine);
    serve_replica(Arc::new(serving), listener, stop, key)
}

/// [`serve`] for a replica: requests are answered `NotLeader` until
/// [`Serving::lead`] gives it an engine.
pub fn serve_replica(serving: Arc<Serving>, listener: Listener, stop: Arc<AtomicBool>, key: WireKey) {
    let open = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Acquire) {
        let stream = match listener.accept() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if stop.load(Ordering::Acquire) {
            break;
        }
        if open.load(Ordering::Acquire) >= CONNECTIONS_MAX {
            tracing::warn!("wire connection refused: {CONNECTIONS_MAX} already open");
            stream.shutdown_both();
            continue;
        }
        open.fetch_add(1, Ordering::AcqRel);
        let (serving, open, key) = (serving.clone(), open.clone(), key.clone());
        let spawned = std::thread::Builder::new().name("wire-conn".into()).spawn(move || {
            let mut stream = stream;
            if let Err(e) = authenticate(&mut *stream, &key).and_then(|()| connection(&serving, stream)) {
                tracing::debug!(error = %e, "wire connection ended");
            }
            open.fetch_sub(1, Ordering::AcqRel);
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not spawn a connection thread");
        }
    }
}

/// The handshake: hello out, proof in, within `HANDSHAKE_TIMEOUT`.
fn authenticate(stream: &mut dyn Stream, key: &WireKey) -> io::Result<()> {
    let nonce: [u8; NONCE_BYTES] = rand::random();
    stream.write_all(&WireKey::hello(&nonce))?;
    stream.set_read_timeout_to(Some(HANDSHAKE_TIMEOUT))?;
    let mut proof = [0u8; PROOF_BYTES];
    let read = stream.read_exact(&mut proof);
    if read.is_err() || !key.verify(&nonce, &proof) {
        tracing::warn!("wire connection refused: it did not prove the shared secret (SECKILL_AUTH_SECRET)");
        metrics::counter!("seckill_wire_handshake_refused_total").increment(1);
        stream.shutdown_both();
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, "wire handshake failed"));
    }
    stream.set_read_timeout_to(None)
}

fn connection(serving: &Serving, mut stream: Box<dyn Stream>) -> io::Result<()> {
    let writer_stream = stream.try_clone_stream()?;
    let (tx, rx) = unbounded::<(u64, Response)>();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let writer = {
        let in_flight = in_flight.clone();
        std::thread::Builder::new()
            .name("wire-write".into())
            .spawn(move || write_loop(writer_stream, rx, &in_flight))?
    };
    let result = read_loop(serving, &mut *stream, &tx, &in_flight);
    if result.is_err() {
        stream.shutdown_both();
    }
    drop(tx);
    let _ = writer.join();
    result
}

fn read_loop(
    serving: &Serving,
    stream: &mut dyn Stream,
    tx: &crossbeam_channel::Sender<(u64, Response)>,
    in_flight: &AtomicUsize,
) -> io::Result<()> {
    let mut frames = FrameReader::with_capacity(READ_CHUNK_BYTES * 2);
    loop {
        let n = stream.read(frames.spare(READ_CHUNK_BYTES))?;
        if n == 0 {
            return Ok(());
        }
        frames.filled(n);
        loop {
            let frame = match frames.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            };
            let (tag, req) =
                decode_request(frame).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            // Every answer counts against the bound, refusals too: a peer
            // that keeps sending and never reads is held here, not queued for.
            while in_flight.load(Ordering::Acquire) >= IN_FLIGHT_MAX {
                std::thread::sleep(Duration::from_micros(50));
            }
            // Counted before it is queued: the writer subtracts what it sent.
            in_flight.fetch_add(1, Ordering::AcqRel);
            if !req.allowed_on_wire() {
                let _ = tx.send((tag, Response::Error(ErrorCode::Unauthorized)));
                continue;
            }
            let Some(engine) = serving.engine.get() else {
                let _ = tx.send((tag, serving.not_leader()));
                continue;
            };
            if let Err(code) = engine.try_submit(Envelope { req, tag, reply: tx.clone().into() }) {
                let _ = tx.send((tag, Response::Error(code)));
            }
        }
    }
}

fn write_loop(mut stream: Box<dyn Stream>, rx: Receiver<(u64, Response)>, in_flight: &AtomicUsize) {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut broken = false;
    while let Ok((tag, resp)) = rx.recv() {
        out.clear();
        encode_response(&mut out, tag, &resp);
        let mut n = 1;
        for (tag, resp) in rx.try_iter().take(WRITE_BATCH_MAX) {
            encode_response(&mut out, tag, &resp);
            n += 1;
        }
        in_flight.fetch_sub(n, Ordering::AcqRel);
        // After a failed write keep draining (discarding), so the reader
        // never waits on answers that will not be written.
        if !broken && stream.write_all(&out).is_err() {
            stream.shutdown_both();
            broken = true;
        }
    }
}
