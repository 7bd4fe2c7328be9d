//! Attacks from the engine's own host (docs/SECURITY.md, rows "other local
//! users" and "secrets in logs"), against real `seckill` processes: the data
//! dir and every file in it are private, the admin socket serves only its
//! user (and root), a bounded number of connections, none of them idle for
//! ever; and no password in a MySQL or Redis URL reaches a log or `--help`.

mod common;

use common::{bin, free_port, try_request, EngineProc};
use seckill_server::admin::CONNECTIONS_MAX;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn mysql_server() -> String {
    std::env::var("SECKILL_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_string())
}

fn services_required() -> bool {
    std::env::var("SECKILL_REQUIRE_SERVICES").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn mysql_reachable() -> bool {
    let rest = mysql_server().split_once("://").map_or(String::new(), |(_, r)| r.to_string());
    let host =
        rest.rsplit_once('@').map_or(rest.as_str(), |(_, h)| h).split(['/', '?']).next().unwrap_or("").to_string();
    host.parse().ok().and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok()).is_some()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A database of the test's own, dropped on drop.
struct TestDb(String);

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, name) = (mysql_server(), self.0.clone());
        rt().block_on(async {
            use sqlx::Connection;
            if let Ok(mut c) = sqlx::MySqlConnection::connect(&server).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`")).execute(&mut c).await;
            }
        });
    }
}

/// `seckill up` on `data` with no secrets in its environment (it generates
/// them into the data dir), logging at info to `<data>.log`.
fn spawn_up(data: &Path, port: u16, mysql_url: &str, extra: &[&str]) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(data.with_extension("log")).expect("log");
    Command::new(bin())
        .arg("up")
        .arg("--data-dir")
        .arg(data)
        .args(["--http", &format!("127.0.0.1:{port}"), "--mysql-url", mysql_url, "--redis-url", "none"])
        .args(["--metrics", "none"])
        .args(extra)
        .env_remove("SECKILL_AUTH_SECRET")
        .env_remove("SECKILL_PAYMENT_SECRET")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawning seckill up")
}

fn wait_http(child: &mut Child, port: u16, data: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("seckill up exited: {status}\n{}", common::log_tail(data));
        }
        if try_request(port, "GET", "/api/v1/readyz", &[], b"").is_ok_and(|r| r.status == 200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("seckill up was not ready within 30 s\n{}", common::log_tail(data));
}

/// Every directory and file under `root` (itself included), with its mode.
fn walk(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p).expect("stat");
        out.push((p.clone(), meta.is_dir(), meta.permissions().mode() & 0o7777));
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).expect("read_dir") {
                todo.push(e.expect("entry").path());
            }
        }
    }
    out
}

#[test]
fn every_file_and_dir_the_engine_makes_is_private() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    // MySQL too when it is there: the persister writes its own file
    // (persister.checkpoint) into the data dir.
    let with_mysql = services_required() || mysql_reachable();
    let db = with_mysql.then(|| TestDb(format!("seckill_modes_{}", std::process::id())));
    let mysql_url = db.as_ref().map_or("none".to_string(), |db| format!("{}/{}", mysql_server(), db.0));

    // Small segments and frequent snapshots: rotations and snapshots happen.
    let port = free_port();
    let mut up = spawn_up(&data, port, &mysql_url, &["--wal-segment-bytes", "4096", "--snapshot-every", "20"]);
    wait_http(&mut up, port, &data);
    let act = common::create_activity(
        &data,
        json!({"title": "modes", "price_cents": 100, "stock": 500, "starts_at": "2020-01-01T00:00:00Z",
               "ends_at": "2099-01-01T00:00:00Z"}),
    );
    let secret = std::fs::read_to_string(data.join("auth.secret")).expect("generated auth.secret");
    let auth = seckill_front::auth::Auth::new(secret.trim().as_bytes());
    for user in 1..=120u64 {
        let bearer = format!("Bearer {}", auth.issue(user, 3600));
        let r =
            common::request(port, "POST", &format!("/api/v1/activities/{act}/buy"), &[("Authorization", &bearer)], b"");
        assert_eq!(r.status, 201, "buy {user}: {}", r.text());
    }
    common::admin(&data, "snapshot", json!({})).expect("snapshot");
    if with_mysql {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !data.join("persister.checkpoint").exists() {
            assert!(Instant::now() < deadline, "the persister wrote no checkpoint\n{}", common::log_tail(&data));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let segments = std::fs::read_dir(data.join("wal")).expect("wal/").count();
    let snapshots = std::fs::read_dir(data.join("snapshots")).expect("snapshots/").count();
    assert!(segments >= 2, "the WAL rotated ({segments} segments)");
    assert!(snapshots >= 1, "snapshots were written ({snapshots})");
    let names: Vec<String> =
        std::fs::read_dir(&data).expect("data").map(|e| e.expect("e").file_name().to_string_lossy().into()).collect();
    for must in ["LOCK", "engine.meta", "auth.secret", "payment.secret", "engine.sock", "admin.sock"] {
        assert!(names.iter().any(|n| n == must), "{must} is missing from {names:?}");
    }

    let loose: Vec<String> = walk(&data)
        .into_iter()
        .filter(|(_, dir, mode)| *mode != if *dir { 0o700 } else { 0o600 })
        .map(|(p, dir, mode)| format!("{} {} is {mode:04o}", if dir { "dir" } else { "file" }, p.display()))
        .collect();
    assert!(loose.is_empty(), "readable by other users:\n{}", loose.join("\n"));
    let _ = up.kill();
    let _ = up.wait();

    // A data dir someone left open (an older version, a copy) is named at
    // start, with the fix, and the engine still serves.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let port = free_port();
    let mut up = spawn_up(&data, port, "none", &[]);
    wait_http(&mut up, port, &data);
    let _ = up.kill();
    let _ = up.wait();
    let log = std::fs::read_to_string(data.with_extension("log")).expect("log");
    assert!(
        log.contains("is mode 0755") && log.contains(&format!("chmod 700 {}", data.display())),
        "no warning about the open data dir:\n{}",
        common::log_tail(&data)
    );
}

/// One admin connection that answered a request (so the engine counts it).
fn admin_conn(data: &Path) -> (UnixStream, BufReader<UnixStream>) {
    let s = UnixStream::connect(data.join("admin.sock")).expect("connect admin.sock");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let r = BufReader::new(s.try_clone().expect("clone"));
    (s, r)
}

fn ask(conn: &mut (UnixStream, BufReader<UnixStream>), cmd: &str) -> Value {
    writeln!(conn.0, "{}", json!({"cmd": cmd})).expect("write");
    read_reply(&mut conn.1)
}

/// `ask`, but `None` when the engine closed the connection.
fn try_ask(conn: &mut (UnixStream, BufReader<UnixStream>), cmd: &str) -> Option<Value> {
    let _ = writeln!(conn.0, "{}", json!({"cmd": cmd}));
    let mut line = String::new();
    conn.1.read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

fn read_reply(r: &mut BufReader<UnixStream>) -> Value {
    let mut line = String::new();
    r.read_line(&mut line).expect("read a reply");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
}

#[test]
fn admin_connections_beyond_the_cap_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let engine = EngineProc::start(&tmp.path().join("data"), &[]);
    // Fill every slot. The start-up probe's connection (EngineProc) may not
    // be released yet: a refusal before the cap is full is retried.
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.len() < CONNECTIONS_MAX {
        let mut c = admin_conn(&engine.data_dir);
        if try_ask(&mut c, "stats").is_some_and(|v| v["ok"] == true) {
            held.push(c);
        } else {
            assert!(Instant::now() < deadline, "only {} admin connections were served", held.len());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // One more: one clear line, then closed.
    let (_s, mut r) = admin_conn(&engine.data_dir);
    let refused = read_reply(&mut r);
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(refused["error"]["code"], "busy", "{refused}");
    assert!(refused["error"]["message"].as_str().is_some_and(|m| m.contains("close one")), "{refused}");
    let mut rest = Vec::new();
    assert_eq!(r.read_to_end(&mut rest).expect("closed"), 0, "the refused connection is closed");
    // The held ones still work, and a slot freed is a slot again.
    assert_eq!(ask(&mut held[0], "stats")["ok"], true);
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = admin_conn(&engine.data_dir);
        if try_ask(&mut c, "stats").is_some_and(|v| v["ok"] == true) {
            break;
        }
        assert!(Instant::now() < deadline, "the closed connection's slot never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_idle_admin_connection_is_closed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let engine = EngineProc::start(&tmp.path().join("data"), &["--admin-idle-timeout", "1"]);
    // A connection that keeps asking stays open past the timeout…
    let mut busy = admin_conn(&engine.data_dir);
    for _ in 0..5 {
        assert_eq!(ask(&mut busy, "stats")["ok"], true);
        std::thread::sleep(Duration::from_millis(500));
    }
    // …one that says nothing is closed after it.
    let (_s, mut r) = admin_conn(&engine.data_dir);
    let started = Instant::now();
    let mut rest = Vec::new();
    let n = r.read_to_end(&mut rest).expect("the engine closes it (not our 10 s read timeout)");
    let waited = started.elapsed();
    assert_eq!(n, 0);
    assert!(waited >= Duration::from_millis(800) && waited < Duration::from_secs(5), "closed after {waited:?}");
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

#[test]
fn another_user_is_refused_even_when_the_socket_mode_is_lost() {
    // Needs a second uid: we run `seckill admin` as `nobody` through setpriv,
    // which only root can do. Elsewhere `peer_allowed` is unit-tested alone
    // (server/src/admin.rs).
    let setpriv = Path::new("/usr/bin/setpriv");
    if !is_root() || !setpriv.exists() {
        eprintln!("SKIPPED: needs root and setpriv to run a client as nobody; peer_allowed is unit-tested");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let engine = EngineProc::start(&tmp.path().join("data"), &[]);
    // Undo the first line of defence (as a copied data dir or a careless
    // chmod would): nobody can now reach and connect to admin.sock.
    for (p, mode) in
        [(tmp.path(), 0o711), (engine.data_dir.as_path(), 0o711), (&engine.data_dir.join("admin.sock"), 0o666)]
    {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let as_nobody = |cmd: &str| -> Output {
        Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin())
            .args(["admin", "--data-dir"])
            .arg(&engine.data_dir)
            .arg(cmd)
            .env("RUST_LOG", "off")
            .output()
            .expect("setpriv")
    };
    let out = as_nobody("stats");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "nobody ran an admin command:\n{stdout}");
    assert!(
        stderr.contains("unauthorized") && stderr.contains("uid 65534 is neither the engine's user"),
        "not the clear refusal: {stderr}"
    );
    let out = as_nobody("shutdown");
    assert!(!out.status.success());
    // The engine did not stop, and its own user is still served.
    std::thread::sleep(Duration::from_millis(200));
    assert!(engine.admin("stats", json!({})).is_ok(), "the engine stopped or refused its own user");
}

// ---- secrets in logs --------------------------------------------------------

/// A password no message may contain; `%40` is an `@` (the old MySQL
/// redaction split at the first `@` and printed the rest).
const PASSWORD: &str = "Hunter2-Xq9%40zz";
const TELLTALE: &str = "Xq9";

/// The Redis database this test may fill (and flushes when done).
const REDACT_REDIS_DB: u32 = 14;

struct FlushRedis(u32);

impl Drop for FlushRedis {
    fn drop(&mut self) {
        if let Ok(mut c) = redis::Client::open(format!("redis://127.0.0.1:6379/{}", self.0))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        {
            let _ = redis::cmd("FLUSHDB").query::<()>(&mut c);
        }
    }
}

fn scrub_check(what: &str, text: &str) {
    assert!(!text.contains(TELLTALE), "{what} shows the password:\n{text}");
}

#[test]
fn no_password_reaches_logs_errors_or_help() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    // MariaDB refuses a password root does not have; Redis' default user
    // (nopass) takes any, so the mirror gets a database of its own, flushed after.
    let db = TestDb(format!("seckill_redact_{}", std::process::id()));
    let _flush = FlushRedis(REDACT_REDIS_DB);
    let mysql = format!("mysql://root:{PASSWORD}@127.0.0.1:3306/{}", db.0);
    let redis = format!("redis://default:{PASSWORD}@127.0.0.1:6379/{REDACT_REDIS_DB}");
    let with_env = |c: &mut Command| {
        c.env("SECKILL_MYSQL_URL", &mysql).env("SECKILL_REDIS_URL", &redis).env("RUST_LOG", "debug");
    };

    // --help of every command that takes the URLs, with them in the environment.
    for sub in ["up", "engine", "migrate"] {
        let mut c = Command::new(bin());
        c.args([sub, "--help"]);
        with_env(&mut c);
        let out = c.output().expect("--help");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("SECKILL_MYSQL_URL"), "{sub} --help names the variable:\n{text}");
        scrub_check(&format!("seckill {sub} --help"), &text);
    }

    // migrate: MariaDB refuses the password (or the server is down); the error says where, not with what.
    let mut c = Command::new(bin());
    c.arg("migrate");
    with_env(&mut c);
    let out = c.output().expect("migrate");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("127.0.0.1:3306"), "migrate said nothing about its server:\n{text}");
    scrub_check("seckill migrate", &text);

    // up, with debug logs, long enough for the persister and the mirror to
    // try and fail; warmup and verify go to MySQL on request.
    let port = free_port();
    let log_path = data.with_extension("log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut c = Command::new(bin());
    c.args(["up", "--data-dir"]).arg(&data).args(["--http", &format!("127.0.0.1:{port}"), "--metrics", "none"]);
    with_env(&mut c);
    let mut up = c.stdout(log.try_clone().expect("clone")).stderr(log).spawn().expect("up");
    wait_http(&mut up, port, &data);
    let mut replies = String::new();
    for cmd in ["warmup", "verify", "stats"] {
        replies.push_str(&format!("{:?}\n", common::try_admin(&data, cmd, json!({}))));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let persister_said = text.contains("MySQL") && text.lines().any(|l| l.contains("3306") && l.contains("***"));
        let mirror_said = text.lines().any(|l| l.contains("6379") && l.contains("***"));
        if persister_said && mirror_said {
            break;
        }
        assert!(Instant::now() < deadline, "no log line named the servers (masked) within 30 s:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = common::try_admin(&data, "shutdown", json!({}));
    let _ = up.wait();
    scrub_check("the admin replies", &replies);
    scrub_check("seckill up's stdout and stderr", &std::fs::read_to_string(&log_path).expect("log"));
}
