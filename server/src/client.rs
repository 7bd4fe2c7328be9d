//! A blocking, multiplexed client for the wire protocol, for tools and
//! tests: any number of threads call through one connection, each waiting
//! for its own answer (matched by request id). `Pool` spreads calls over a
//! few connections.

use crate::wire::Stream;
use crossbeam_channel::{bounded, Sender};
use parking_lot::Mutex;
use seckill_proto::handshake::{WireKey, HELLO_BYTES};
use seckill_proto::Address;
use seckill_proto::{decode_response, encode_request, FrameReader, Request, Response};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Room offered to each socket read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

type Pending = Arc<Mutex<Option<HashMap<u64, Sender<Response>>>>>;

pub struct Client {
    writer: Mutex<(Box<dyn Stream>, Vec<u8>)>,
    /// `None` once the connection is gone: new calls fail at once.
    pending: Pending,
    next_id: AtomicU64,
    timeout: Duration,
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "the engine closed the connection")
}

impl Client {
    /// Connects and proves the shared secret (`key`, from the auth secret).
    pub fn connect(addr: &Address, key: &WireKey) -> io::Result<Client> {
        let mut stream: Box<dyn Stream> = match addr {
            Address::Unix(p) => Box::new(UnixStream::connect(p)?),
            Address::Tcp(a) => {
                let s = std::net::TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
        };
        let mut hello = [0u8; HELLO_BYTES];
        stream.read_exact(&mut hello)?;
        let proof = key
            .proof(&hello)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "the peer is not a seckill engine"))?;
        stream.write_all(&proof)?;
        let reader = stream.try_clone_stream()?;
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let p = pending.clone();
        std::thread::Builder::new().name("wire-client".into()).spawn(move || read_loop(reader, p))?;
        Ok(Client {
            writer: Mutex::new((stream, Vec::with_capacity(256))),
            pending,
            next_id: AtomicU64::new(1),
            timeout: Duration::from_secs(30),
        })
    }

    /// Sends one request and waits for its answer.
    pub fn call(&self, req: &Request) -> io::Result<Response> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = bounded(1);
        match self.pending.lock().as_mut() {
            Some(map) => map.insert(id, tx),
            None => return Err(closed()),
        };
        {
            let mut w = self.writer.lock();
            let (stream, buf) = &mut *w;
            buf.clear();
            encode_request(buf, id, req);
            stream.write_all(buf)?;
        }
        rx.recv_timeout(self.timeout).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => {
                io::Error::new(io::ErrorKind::TimedOut, "no answer from the engine within 30 s")
            }
            crossbeam_channel::RecvTimeoutError::Disconnected => closed(),
        })
    }
}

fn read_loop(mut stream: Box<dyn Stream>, pending: Pending) {
    let mut frames = FrameReader::with_capacity(128 * 1024);
    'outer: loop {
        let n = match stream.read(frames.spare(READ_CHUNK_BYTES)) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        frames.filled(n);
        loop {
            match frames.next_frame() {
                Ok(Some(frame)) => {
                    let Ok((id, resp)) = decode_response(frame) else { break 'outer };
                    if let Some(tx) = pending.lock().as_mut().and_then(|m| m.remove(&id)) {
                        let _ = tx.send(resp);
                    }
                }
                Ok(None) => break,
                Err(_) => break 'outer,
            }
        }
    }
    // Dropping the senders wakes every waiting caller with an error.
    pending.lock().take();
}

/// A few connections, used round robin.
pub struct Pool {
    clients: Vec<Client>,
    next: AtomicUsize,
}

impl Pool {
    pub fn connect(addr: &Address, connections: usize, key: &WireKey) -> io::Result<Pool> {
        assert!(connections >= 1);
        let clients = (0..connections).map(|_| Client::connect(addr, key)).collect::<io::Result<_>>()?;
        Ok(Pool { clients, next: AtomicUsize::new(0) })
    }

    pub fn call(&self, req: &Request) -> io::Result<Response> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[i].call(req)
    }
}
