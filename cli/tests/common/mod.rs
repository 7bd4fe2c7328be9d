//! Running real `seckill` processes from tests.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_seckill"))
}

/// A `seckill engine` child; killed (-9) when dropped.
pub struct EngineProc {
    pub child: Child,
    pub data_dir: PathBuf,
}

impl EngineProc {
    pub fn start(data_dir: &Path, extra: &[&str]) -> EngineProc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"))
            .expect("engine log file");
        let child = Command::new(bin())
            .arg("engine")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--mysql-url", "none", "--redis-url", "none"])
            .args(if extra.contains(&"--metrics") { &[][..] } else { &["--metrics", "none"][..] })
            .args(extra)
            .env("RUST_LOG", "warn")
            // The fronts of the tests hold it too: it keys the wire handshake.
            .env("SECKILL_AUTH_SECRET", AUTH_SECRET)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning seckill engine");
        let mut p = EngineProc { child, data_dir: data_dir.to_path_buf() };
        p.wait_ready();
        p
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "seckill engine exited during start-up: {status}; see {}",
                    self.data_dir.with_extension("log").display()
                );
            }
            if UnixStream::connect(self.data_dir.join("admin.sock")).is_ok()
                && UnixStream::connect(self.data_dir.join("engine.sock")).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("seckill engine did not come up within 30 s");
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub fn admin(&self, cmd: &str, args: Value) -> Result<Value, Value> {
        admin(&self.data_dir, cmd, args)
    }
}

impl Drop for EngineProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn admin(data_dir: &Path, cmd: &str, args: Value) -> Result<Value, Value> {
    let stream = UnixStream::connect(data_dir.join("admin.sock")).expect("admin socket");
    let mut w = stream.try_clone().expect("clone");
    writeln!(w, "{}", serde_json::json!({"cmd": cmd, "args": args})).expect("write admin line");
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).expect("read admin reply");
    let v: Value = serde_json::from_str(&line).expect("admin reply is JSON");
    if v["ok"] == Value::Bool(true) {
        Ok(v["result"].clone())
    } else {
        Err(v["error"].clone())
    }
}

// ---- `seckill up` and a tiny blocking HTTP/1.1 client ----------------------

/// The JWT secret every `UpProc` runs with (`SECKILL_AUTH_SECRET`).
pub const AUTH_SECRET: &str = "test-auth-secret-0123456789-abcdef-0123";
/// The wire key of the engines `EngineProc` starts (from `AUTH_SECRET`).
pub fn wire_key() -> seckill_proto::handshake::WireKey {
    seckill_proto::handshake::WireKey::derive(AUTH_SECRET.as_bytes())
}
/// The payment-notify HMAC secret every `UpProc` runs with (`SECKILL_PAYMENT_SECRET`).
pub const PAYMENT_SECRET: &str = "test-payment-secret-9876543210-abcdef";

/// A port that was free a moment ago (bind port 0, read it, drop the listener).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A `seckill up` child (engine + HTTP front, no MySQL, no Redis) on a free
/// port; killed (-9) when dropped.
pub struct UpProc {
    pub child: Child,
    pub data_dir: PathBuf,
    pub port: u16,
    /// The operator's `--metrics` port (`GET /metrics`).
    pub metrics_port: u16,
}

impl UpProc {
    /// Starts `seckill up` on `data_dir` and waits until `/api/v1/readyz` is
    /// 200. `--payment sandbox` unless `extra` names `--payment` itself.
    pub fn start(data_dir: &Path, extra: &[&str]) -> UpProc {
        UpProc::start_with_backends(data_dir, "none", "none", extra)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("seckill up exited during start-up: {status}"));
            }
            if try_request(self.port, "GET", "/api/v1/readyz", &[], b"").is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        Err("seckill up was not ready within 30 s".into())
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub fn admin(&self, cmd: &str, args: Value) -> Result<Value, Value> {
        admin(&self.data_dir, cmd, args)
    }

    /// The end of this process's log (stderr), for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.data_dir)
    }

    /// One request; panics on I/O errors.
    pub fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResp {
        request(self.port, method, path, headers, body)
    }

    pub fn get(&self, path: &str, user: Option<u64>) -> HttpResp {
        let auth = user.map(bearer);
        self.req("GET", path, &auth_header(&auth), b"")
    }

    pub fn post(&self, path: &str, user: Option<u64>, body: &[u8]) -> HttpResp {
        let auth = user.map(bearer);
        self.req("POST", path, &auth_header(&auth), body)
    }
}

impl Drop for UpProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The last 4 KiB of `<data_dir>.log` (the temp dir is gone once a test fails).
pub fn log_tail(data_dir: &Path) -> String {
    let text = std::fs::read(data_dir.with_extension("log")).unwrap_or_default();
    String::from_utf8_lossy(&text[text.len().saturating_sub(4096)..]).into_owned()
}

fn auth_header(auth: &Option<String>) -> Vec<(&'static str, &str)> {
    auth.as_deref().map(|a| vec![("Authorization", a)]).unwrap_or_default()
}

/// `Bearer <JWT>` for `user`, signed with `AUTH_SECRET`, valid for an hour.
pub fn bearer(user: u64) -> String {
    format!("Bearer {}", seckill_front::auth::Auth::new(AUTH_SECRET.as_bytes()).issue(user, 3600))
}

/// Base64url without padding (JWT segments).
pub fn b64url(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A JWT with any header and claims. `secret: Some` signs it HS256 (through
/// the payment HMAC helper, which is the same HMAC-SHA256); `None` leaves the
/// signature empty (for `alg: none`).
pub fn forge_jwt(header: &Value, claims: &Value, secret: Option<&[u8]>) -> String {
    let signing_input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    let sig = match secret {
        Some(s) => {
            let hex = seckill_front::payment::hmac_hex(s, signing_input.as_bytes());
            let bytes: Vec<u8> =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
            b64url(&bytes)
        }
        None => String::new(),
    };
    format!("{signing_input}.{sig}")
}

/// An HTTP answer.
#[derive(Debug)]
pub struct HttpResp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResp {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (with the body) if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("status {}: body is not JSON ({e}): {:?}", self.status, self.text()))
    }
}

/// One request on a fresh connection; panics on I/O errors.
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResp {
    try_request(port, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"))
}

/// One request on a fresh connection (`Connection: close`, `Content-Length`).
pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResp> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    raw_request(port, &raw)
}

/// Writes `raw` bytes as they are and reads one HTTP/1.1 answer.
pub fn raw_request(port: u16, raw: &[u8]) -> std::io::Result<HttpResp> {
    raw_request_within(port, raw, Duration::from_secs(30))
}

/// `raw_request` that gives up (an error) when a read or write waits longer than `timeout`.
pub fn raw_request_within(port: u16, raw: &[u8], timeout: Duration) -> std::io::Result<HttpResp> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(raw)?;
    read_response(s)
}

/// Reads one HTTP/1.1 answer from `s`.
pub fn read_response(s: std::net::TcpStream) -> std::io::Result<HttpResp> {
    use std::io::Read;
    let mut r = BufReader::new(s);
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(bad(format!("bad status line {line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("bad status line {line:?}")));
    }
    let status: u16 = code.parse().map_err(|_| bad(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("connection closed inside the headers".into()));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').ok_or_else(|| bad(format!("bad header line {l:?}")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let resp = HttpResp { status, headers, body: Vec::new() };
    let len =
        resp.header("content-length").map(|v| v.parse::<usize>().map_err(|_| bad(format!("content-length {v:?}"))));
    let mut body = Vec::new();
    match len {
        Some(n) => {
            body.resize(n?, 0);
            r.read_exact(&mut body)?;
        }
        None => {
            r.read_to_end(&mut body)?;
        }
    }
    Ok(HttpResp { body, ..resp })
}

// ---- additions for the chaos harness (cli/tests/chaos.rs) -------------------

/// Like `admin`, but an unreachable engine or a bad reply is an `Err` string
/// instead of a panic (for samplers that run while the process is killed).
pub fn try_admin(data_dir: &Path, cmd: &str, args: Value) -> Result<Value, String> {
    let stream = UnixStream::connect(data_dir.join("admin.sock")).map_err(|e| format!("admin socket: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(40))).map_err(|e| e.to_string())?;
    let mut w = stream.try_clone().map_err(|e| e.to_string())?;
    writeln!(w, "{}", serde_json::json!({"cmd": cmd, "args": args})).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&line).map_err(|e| format!("admin reply is not JSON ({e}): {line:?}"))?;
    if v["ok"] == Value::Bool(true) {
        Ok(v["result"].clone())
    } else {
        Err(v["error"].to_string())
    }
}

impl UpProc {
    /// `seckill up` with the given `--mysql-url` and `--redis-url` (instead of
    /// `none`), on a free port; waits until `/api/v1/readyz` is 200.
    /// `--payment sandbox` unless `extra` names `--payment` itself.
    pub fn start_with_backends(data_dir: &Path, mysql_url: &str, redis_url: &str, extra: &[&str]) -> UpProc {
        // The free port may be taken by someone else before we bind it: try a few.
        for attempt in 0..3 {
            let port = free_port();
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(data_dir.with_extension("log"))
                .expect("up log file");
            let mut cmd = Command::new(bin());
            cmd.arg("up").arg("--data-dir").arg(data_dir).args([
                "--http",
                &format!("127.0.0.1:{port}"),
                "--mysql-url",
                mysql_url,
                "--redis-url",
                redis_url,
            ]);
            if !extra.contains(&"--payment") {
                cmd.args(["--payment", "sandbox"]);
            }
            let metrics_port = free_port();
            cmd.args(["--metrics", &format!("127.0.0.1:{metrics_port}")]);
            // Functional tests read exact stock and poll freely: the read
            // cache and the per-address bucket are off unless a test names
            // them (cli/tests/front_security.rs does).
            for (flag, off) in [("--activity-cache-ms", "0"), ("--ip-requests-per-s", "0")] {
                if !extra.contains(&flag) {
                    cmd.args([flag, off]);
                }
            }
            let child = cmd
                .args(extra)
                .env("SECKILL_AUTH_SECRET", AUTH_SECRET)
                .env("SECKILL_PAYMENT_SECRET", PAYMENT_SECRET)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawning seckill up");
            let mut p = UpProc { child, data_dir: data_dir.to_path_buf(), port, metrics_port };
            match p.wait_ready() {
                Ok(()) => return p,
                Err(e) if attempt < 2 => {
                    eprintln!("seckill up on port {port} failed ({e}); retrying on another port")
                }
                Err(e) => panic!("{e}; its log:\n{}", log_tail(data_dir)),
            }
        }
        unreachable!()
    }
}

/// A TCP forwarder (std threads) to `target` that a test can cut (every
/// connection reset, new ones closed at once) and restore: an outage of
/// MySQL or Redis without touching the real server.
pub struct TcpProxy {
    pub port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl TcpProxy {
    pub fn start(target: &str) -> TcpProxy {
        use std::io::Read;
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>> = Default::default();
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
                let mut list = c.lock().expect("lock");
                for s in [&client, &server] {
                    if let Ok(s) = s.try_clone() {
                        list.push(s);
                    }
                }
                drop(list);
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else { continue };
                for (mut from, mut to) in [(client2, server2), (server, client)] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        TcpProxy { port, down, conns }
    }

    /// Resets every open connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::Release);
        for s in self.conns.lock().expect("lock").drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.down.store(false, std::sync::atomic::Ordering::Release);
    }
}
