//! Running real `seckill` processes from tests.

// Each test binary uses a part of this module (and of what it re-exports).
#![allow(dead_code, unused_imports)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use seckill_testkit::http::{
    raw_request, raw_request_within, read_response, read_response_from, request, try_request, HttpResp,
};
pub use seckill_testkit::{free_port, wait_until, KillOnDrop, TcpProxy};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_seckill"))
}

/// `seckill` as the tests run it: the tests' JWT and payment secrets (the
/// JWT secret also keys the engine's wire handshake, so engines and fronts
/// must share it), `RUST_LOG=warn`, stdout to nowhere (the caller adds the
/// arguments and where stderr goes).
pub fn seckill() -> Command {
    let mut cmd = Command::new(bin());
    cmd.env("SECKILL_AUTH_SECRET", AUTH_SECRET)
        .env("SECKILL_PAYMENT_SECRET", PAYMENT_SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    cmd
}

/// `path` opened to append: a child's stderr that outlives it.
pub fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new().create(true).append(true).open(path).expect("log file")
}

/// A `seckill front` on `127.0.0.1:port` for the engine of `data_dir`
/// (`extra` after it, e.g. `--engine`, `--metrics`; `--metrics none` unless
/// named), killed when dropped. Does not wait: see [`wait_http_ok`].
pub fn spawn_front(data_dir: &Path, port: u16, extra: &[&str], stderr: impl Into<Stdio>) -> KillOnDrop {
    let mut cmd = seckill();
    cmd.args(["front", "--http", &format!("127.0.0.1:{port}"), "--data-dir"]).arg(data_dir);
    if !extra.contains(&"--metrics") {
        cmd.args(["--metrics", "none"]);
    }
    KillOnDrop(cmd.args(extra).stderr(stderr).spawn().expect("spawning seckill front"))
}

/// Waits (30 s at most) until `GET path` on `127.0.0.1:port` answers 200.
pub fn wait_http_ok(port: u16, path: &str) {
    wait_until(&format!("200 from GET {path} on port {port}"), Duration::from_secs(30), || {
        try_request(port, "GET", path, &[], b"").is_ok_and(|r| r.status == 200)
    });
}

/// Sends `signal` (`"INT"`, `"TERM"`) to `child` and waits (at most `within`) for it to exit.
pub fn signal_and_wait(child: &mut Child, signal: &str, within: Duration) -> std::process::ExitStatus {
    let sent = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} {}", child.id());
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "{} did not exit within {within:?} of SIG{signal}", child.id());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `activity.create` with `fields` on the engine of `data_dir`; the new activity's id.
pub fn create_activity(data_dir: &Path, fields: Value) -> u64 {
    let a = admin(data_dir, "activity.create", fields).unwrap_or_else(|e| panic!("activity.create: {e}"));
    a["id"].as_u64().unwrap_or_else(|| panic!("no activity id in {a}"))
}

/// A `seckill` child and its data dir, killed (-9) when dropped: what
/// [`EngineProc`] and [`UpProc`] share (both deref to it).
pub struct Proc {
    pub child: Child,
    pub data_dir: PathBuf,
}

impl Proc {
    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub fn admin(&self, cmd: &str, args: Value) -> Result<Value, Value> {
        admin(&self.data_dir, cmd, args)
    }

    /// `activity.create` with `fields`; the new activity's id.
    pub fn create_activity(&self, fields: Value) -> u64 {
        create_activity(&self.data_dir, fields)
    }

    /// The end of this process's log (stderr), for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.data_dir)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `EngineProc` and `UpProc` are a [`Proc`] with more.
macro_rules! deref_to_proc {
    ($($t:ty),+) => {$(
        impl std::ops::Deref for $t {
            type Target = Proc;
            fn deref(&self) -> &Proc {
                &self.proc
            }
        }
        impl std::ops::DerefMut for $t {
            fn deref_mut(&mut self) -> &mut Proc {
                &mut self.proc
            }
        }
    )+};
}
deref_to_proc!(EngineProc, UpProc);

/// A `seckill engine` child; killed (-9) when dropped.
pub struct EngineProc {
    proc: Proc,
}

impl EngineProc {
    pub fn start(data_dir: &Path, extra: &[&str]) -> EngineProc {
        let child = seckill()
            .arg("engine")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--mysql-url", "none", "--redis-url", "none"])
            .args(if extra.contains(&"--metrics") { &[][..] } else { &["--metrics", "none"][..] })
            .args(extra)
            .stderr(log_file(&data_dir.with_extension("log")))
            .spawn()
            .expect("spawning seckill engine");
        let mut p = EngineProc { proc: Proc { child, data_dir: data_dir.to_path_buf() } };
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

/// A `seckill up` child (engine + HTTP front, no MySQL, no Redis) on a free
/// port; killed (-9) when dropped.
pub struct UpProc {
    proc: Proc,
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
            let mut cmd = seckill();
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
            let child =
                cmd.args(extra).stderr(log_file(&data_dir.with_extension("log"))).spawn().expect("spawning seckill up");
            let mut p = UpProc { proc: Proc { child, data_dir: data_dir.to_path_buf() }, port, metrics_port };
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

/// Every order of `user_id` that `call` lists (one page of up to 100; more
/// fails the test: raise the page size in the harness). `Err` when the call
/// fails or is not answered with orders.
pub fn orders_of(
    mut call: impl FnMut(&seckill_proto::Request) -> Result<seckill_proto::Response, String>,
    user_id: u64,
) -> Result<Vec<seckill_proto::OrderView>, String> {
    match call(&seckill_proto::Request::ListOrders { user_id, offset: 0, limit: 100 })? {
        seckill_proto::Response::Orders { items, total } => {
            assert!(total <= 100, "user {user_id} has {total} orders; raise the page size in the harness");
            Ok(items)
        }
        other => Err(format!("list orders of user {user_id}: {other:?}")),
    }
}

/// Checks the stock of activity `a` against its buyers `1..=users`, whose
/// orders `call` lists (one page of up to 100 each): nobody holds more than
/// `limit` units, nothing is oversold, and the units held plus `a.remaining`
/// make `a.total_stock`. Returns the units held; `Err` when a call fails or
/// is not answered with orders. `context` starts every assertion message.
pub fn check_stock(
    mut call: impl FnMut(&seckill_proto::Request) -> Result<seckill_proto::Response, String>,
    users: u64,
    limit: u32,
    a: &seckill_proto::ActivityView,
    context: &str,
) -> Result<u64, String> {
    let mut held_total = 0u64;
    for user_id in 1..=users {
        let items = orders_of(&mut call, user_id)?;
        let held: u64 = items.iter().filter(|o| o.status.holds_stock()).map(|o| u64::from(o.quantity)).sum();
        assert!(held <= u64::from(limit), "{context}user {user_id} holds {held} > limit {limit}");
        held_total += held;
    }
    assert!(held_total <= a.total_stock, "{context}oversold: {held_total} held of {}", a.total_stock);
    assert_eq!(
        held_total + a.remaining,
        a.total_stock,
        "{context}tokens not conserved: held {held_total} + remaining {} != total {}",
        a.remaining,
        a.total_stock
    );
    Ok(held_total)
}

/// Differences between the Redis mirror under `prefix` and the engine's
/// orders `(order id, status)` of activity `act` and its `remaining` stock;
/// `hashes`: whether the mirror writes order hashes. The stream must give
/// each order's status by its last entry, hold each order's `created` once
/// (a failover or restart that re-added an event twice shows here), and
/// have no hole unless a `resync` entry says `gap = 1`.
pub fn redis_mirror_differences(
    conn: &mut redis::Connection,
    prefix: &str,
    act: u64,
    engine_orders: &[(String, String)],
    remaining: u64,
    hashes: bool,
) -> Vec<String> {
    use std::collections::{HashMap, HashSet};
    let mut diffs = Vec::new();
    let lsn: Option<String> = redis::cmd("GET").arg(format!("{prefix}mirror:lsn")).query(conn).expect("GET mirror:lsn");
    if lsn.is_none() {
        diffs.push("mirror:lsn is absent (mirror being rebuilt)".into());
    }
    // Each order's status as its last stream entry says, how many
    // `created` entries it has, and whether the stream has a hole.
    let (mut streamed, mut created) = (HashMap::new(), HashMap::<String, u32>::new());
    let (mut hole, mut from) = (false, "-".to_string());
    loop {
        type Entry = (String, HashMap<String, String>);
        let page: Vec<Entry> = redis::cmd("XRANGE")
            .arg(format!("{prefix}events"))
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query(conn)
            .expect("XRANGE");
        for (_, f) in &page {
            match (f["type"].as_str(), f.get("order_id")) {
                ("resync", _) => hole |= f["gap"] == "1",
                ("created", Some(id)) => {
                    *created.entry(id.clone()).or_default() += 1;
                    streamed.insert(id.clone(), "pending_payment".to_string());
                }
                (status, Some(id)) => drop(streamed.insert(id.clone(), status.to_string())),
                _ => diffs.push(format!("a stream entry without an order id: {f:?}")),
            }
        }
        match page.last() {
            Some((id, _)) if page.len() == 1000 => from = format!("({id}"),
            _ => break,
        }
    }
    for (id, n) in created.iter().filter(|(_, n)| **n > 1) {
        diffs.push(format!("order {id}: {n} `created` entries in the stream"));
    }
    let mut engine_keys = HashSet::new();
    for (id, status) in engine_orders {
        let key = format!("{prefix}order:{id}");
        if hashes {
            let got: Option<String> = redis::cmd("HGET").arg(&key).arg("status").query(conn).expect("HGET");
            if got.as_deref() != Some(status.as_str()) {
                diffs.push(format!("{key}: Redis status {got:?}, engine {status}"));
            }
            engine_keys.insert(key);
        }
        match streamed.get(id) {
            Some(s) if s == status => {}
            None if hole => {} // its events went with Redis's data and the WAL
            got => diffs.push(format!("order {id}: last stream entry {got:?}, engine {status}")),
        }
    }
    let (mut cursor, mut redis_keys) = (0u64, HashSet::new());
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}order:*"))
            .arg("COUNT")
            .arg(1000)
            .query(conn)
            .expect("SCAN");
        redis_keys.extend(keys);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    // Without order hashes there must be none.
    for extra in redis_keys.difference(&engine_keys) {
        diffs.push(format!("{extra}: in Redis, not in the engine (or order hashes are off)"));
    }
    let got: Option<String> =
        redis::cmd("HGET").arg(format!("{prefix}activity:{act}")).arg("remaining").query(conn).expect("HGET remaining");
    if got.as_deref().and_then(|r| r.parse::<u64>().ok()) != Some(remaining) {
        diffs.push(format!("activity {act}: Redis remaining {got:?}, engine {remaining}"));
    }
    diffs
}
