//! Test support shared by the workspace's test suites (a dev-dependency
//! only; it depends on no seckill crate, so any crate may use it).
//!
//! * [`TcpProxy`]: a TCP forwarder a test can cut and restore (an outage of
//!   MySQL, Redis or an engine without touching the real server);
//! * [`http`]: a tiny blocking HTTP/1.1 client that shows raw answers;
//! * [`history`]: a checker of buy histories against one serial order;
//! * [`KillOnDrop`], [`wait_until`], [`free_port`], [`data_dir`], [`now_ms`].

pub mod history;
pub mod http;
mod proxy;

pub use proxy::TcpProxy;

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

/// A port that was free a moment ago (bind port 0, read it, drop the listener).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A fresh temporary directory with an empty `data` directory in it: the
/// path is `<tmp>/data`, so `<tmp>/data.log` (next to it) survives in the
/// same temp dir. Keep the `TempDir` alive as long as the path is used.
pub fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).expect("data dir");
    (tmp, dir)
}

/// A child process killed (SIGKILL) and reaped when dropped, so a failing
/// test leaves nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `cond` every 10 ms; panics naming `what` when it is still false after `within`.
pub fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
