//! A TCP forwarder that a test can cut and restore.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A TCP forwarder (std threads) to `target` that a test can cut (every
/// connection reset, new ones closed at once) and restore: an outage of
/// MySQL or Redis without touching the real server.
pub struct TcpProxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    down: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target` (`HOST:PORT`).
    pub fn start(target: &str) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let down = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (d, c, target) = (down.clone(), conns.clone(), target.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if d.load(Ordering::Acquire) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let mut list = c.lock().unwrap_or_else(|p| p.into_inner());
                for s in [&client, &server] {
                    if let Ok(s) = s.try_clone() {
                        list.push(s);
                    }
                }
                drop(list);
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else { continue };
                for (from, to) in [(client2, server2), (server, client)] {
                    std::thread::spawn(move || pipe(from, to));
                }
            }
        });
        TcpProxy { port, down, conns }
    }

    /// Resets every open connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.down.store(true, Ordering::Release);
        for s in self.conns.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Accepts and forwards new connections again.
    pub fn restore(&self) {
        self.down.store(false, Ordering::Release);
    }
}

/// Copies `from` to `to` until either side ends, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut w = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut &s, &mut w);
                });
            }
        });
        addr
    }

    fn echoes(port: u16) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut got = [0u8; 4];
        s.write_all(b"ping").is_ok() && s.read_exact(&mut got).is_ok() && &got == b"ping"
    }

    #[test]
    fn forwards_until_cut_and_again_after_restore() {
        let proxy = TcpProxy::start(&echo_server());
        assert!(echoes(proxy.port));
        let mut open = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        open.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        open.read_exact(&mut one).unwrap();
        proxy.cut();
        assert!(!echoes(proxy.port));
        assert!(matches!(open.read(&mut one), Ok(0) | Err(_)), "an open connection is reset by cut");
        proxy.restore();
        assert!(echoes(proxy.port));
    }
}
