//! Attacks on the HTTP front (docs/SECURITY.md rows 3, 4, 5 and 9), each
//! against a real `seckill up`: a slow-body flood, a page-refresh flood, a
//! replayed payment notify, and a look for metrics on the buyer port.
//! Floods come from 127.0.0.2 (all of 127/8 is loopback), buyers from
//! 127.0.0.1, as two clients on the internet would.

mod common;

use common::{bearer, HttpResp, UpProc, PAYMENT_SECRET};
use serde_json::{json, Value};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    (tmp, dir)
}

fn activity(up: &UpProc, stock: u64) -> u64 {
    up.create_activity(json!({"title": "sec", "price_cents": 100, "stock": stock,
                   "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z"}))
}

/// A TCP connection to the front from `source` (another loopback address).
fn connect_from(source: &str, port: u16) -> std::io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(format!("{source}:0").parse::<SocketAddr>().map_err(std::io::Error::other)?)?;
        socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await
    })?;
    let std = stream.into_std()?;
    std.set_nonblocking(false)?;
    Ok(std)
}

/// One request from 127.0.0.1 that must be answered within `timeout_ms`.
fn request_within(up: &UpProc, method: &str, path: &str, user: Option<u64>, body: &[u8], timeout_ms: u64) -> HttpResp {
    let auth = user.map(|u| format!("Authorization: {}\r\n", bearer(u))).unwrap_or_default();
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n",
        body.len()
    );
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    common::raw_request_within(up.port, &raw, Duration::from_millis(timeout_ms))
        .unwrap_or_else(|e| panic!("{method} {path} was not answered within {timeout_ms} ms: {e}"))
}

fn error_code(r: &HttpResp) -> String {
    r.json()["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code: {}", r.text())).to_string()
}

/// The value of one sample of the operator's `/metrics` (0 when absent).
fn metric(up: &UpProc, name_and_labels: &str) -> f64 {
    let r = common::request(up.metrics_port, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200);
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|v| v.trim().parse::<f64>().ok()))
        .unwrap_or(0.0)
}

// ---- row 3: slow clients -----------------------------------------------------

/// Slowloris and idle keep-alive: a head trickled a line a second, and a
/// connection that sent one request and then nothing, are both closed
/// about `HEADER_READ_TIMEOUT` (10 s) after their last head or answer,
/// while requests keep being answered meanwhile; on hyper's side (a read)
/// and on the buy fast path's (a buy). Fails without hyper's
/// `header_read_timeout` in `front/src/lib.rs` (the read's two stay open)
/// or without the fast path's head deadline (`Deadline::head`: the buy's).
#[test]
fn trickled_heads_and_idle_connections_are_closed_after_the_head_timeout() {
    let (_tmp, dir) = data_dir();
    let up = UpProc::start(&dir, &[]);
    let act = activity(&up, 1_000);
    let started = Instant::now();
    let buy_head = format!("POST /api/v1/activities/{act}/buy HTTP/1.1\r\nHost: x\r\n");
    let buy = format!("{buy_head}Authorization: {}\r\n\r\n", bearer(1));
    let read_head = "GET /api/v1/healthz HTTP/1.1\r\nHost: x\r\n".to_string();
    // (what, socket, trickled: the head never ends; else idle after one answer)
    let mut conns = Vec::new();
    for (i, (what, first, trickled)) in [
        ("trickled read head", read_head.clone(), true),
        ("idle after a read", format!("{read_head}\r\n"), false),
        ("trickled buy head", buy_head, true),
        ("idle after a buy", buy, false),
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = connect_from(&format!("127.0.0.{}", 3 + i), up.port).expect("connect");
        s.write_all(first.as_bytes()).expect("write");
        if !trickled {
            s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
            let mut answer = [0u8; 1024];
            let n = std::io::Read::read(&mut s, &mut answer).expect("the idle connection's first answer");
            let text = String::from_utf8_lossy(&answer[..n]);
            assert!(text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.1 201"), "{what}: {text}");
            s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        }
        conns.push((what, s, trickled, None::<Duration>));
    }
    let mut answer = [0u8; 512];
    while started.elapsed() < Duration::from_secs(20) && conns.iter().any(|c| c.3.is_none()) {
        for (_, s, trickled, closed) in conns.iter_mut().filter(|c| c.3.is_none()) {
            let gone = if *trickled {
                // A header line a second never finishes the head.
                s.write_all(b"X-Slow: 1\r\n").is_err()
            } else {
                match std::io::Read::read(s, &mut answer) {
                    Ok(n) => n == 0,
                    Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
                }
            };
            if gone {
                *closed = Some(started.elapsed());
            }
        }
        assert_eq!(request_within(&up, "GET", "/api/v1/healthz", None, b"", 2_000).status, 200);
        std::thread::sleep(Duration::from_millis(900));
    }
    for (what, _, _, closed) in conns {
        let at = closed.unwrap_or_else(|| panic!("the {what} connection was still open after 20 s"));
        assert!(at >= Duration::from_secs(9), "the {what} connection was closed after only {at:?}");
    }
}

/// A slow-body flood (`Content-Length: 4096`, a byte every second) from one
/// address: it gets at most its per-address share of connections, each
/// slow body is cut with a JSON 408, and buyers are served all along.
/// Fails without the per-address cap (the flood holds every connection
/// permit and buys hang) or without the body deadline (no 408).
#[test]
fn slow_body_flood_leaves_the_front_serving_buys() {
    let (_tmp, dir) = data_dir();
    let up = UpProc::start(&dir, &["--http-connections-max", "96", "--http-connections-per-ip", "32"]);
    let act = activity(&up, 1_000);

    let head = b"POST /api/v1/payments/notify HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n{";
    let mut flood = Vec::new();
    for _ in 0..200 {
        let Ok(mut s) = connect_from("127.0.0.2", up.port) else { continue };
        if s.write_all(head).is_ok() {
            flood.push(s);
        }
    }
    assert!(flood.len() >= 150, "the flood opened only {} sockets", flood.len());
    let started = Instant::now();
    // A byte a second on every socket while the buyers buy.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<TcpStream> = flood.iter().filter_map(|s| s.try_clone().ok()).collect();
    let trickle = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut writers = writers;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for w in &mut writers {
                    let _ = w.write_all(b" ");
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    for user in 1..=20 {
        let r = request_within(&up, "POST", &format!("/api/v1/activities/{act}/buy"), Some(user), b"", 5_000);
        assert_eq!(r.status, 201, "buyer {user} during the flood: {}", r.text());
    }

    // Every flood socket gets an answer: 429 at once (over the address's
    // share) or 408 once the body deadline passes; all of them JSON.
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for s in flood {
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        // A refused socket may be reset before its 429 is read: status 0.
        let Ok(r) = common::read_response(s) else {
            *by_status.entry(0).or_default() += 1;
            continue;
        };
        let code = error_code(&r);
        match r.status {
            408 => assert_eq!(code, "request_timeout"),
            429 => assert_eq!(code, "rate_limited"),
            other => panic!("flood socket answered {other}: {}", r.text()),
        }
        *by_status.entry(r.status).or_default() += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = trickle.join();
    assert_eq!(by_status.get(&408), Some(&32), "the address's 32 connections end in 408: {by_status:?}");
    assert!(started.elapsed() < Duration::from_secs(25), "the 408s came after {:?}", started.elapsed());
    assert_eq!(request_within(&up, "GET", "/api/v1/healthz", None, b"", 5_000).status, 200);
}

// ---- row 4: page-refresh floods ------------------------------------------------

/// Bots refreshing the sale page from one address as fast as they can:
/// the cache answers most reads, the address's bucket refuses the rest
/// with 429, and the engine sees a handful of reads while buyers on
/// another address all get their orders. Fails without the cache (the
/// engine sees every read) or without the bucket (no 429).
#[test]
fn page_refresh_flood_does_not_reach_the_engine_or_starve_buyers() {
    let (_tmp, dir) = data_dir();
    let up = UpProc::start(&dir, &["--activity-cache-ms", "1000", "--ip-requests-per-s", "50"]);
    let act = activity(&up, 1_000);
    let port = up.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bots: Vec<_> = (0..8)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeMap::<u16, usize>::new();
                let path = if i % 2 == 0 { format!("/api/v1/activities/{act}") } else { "/api/v1/activities".into() };
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(mut s) = connect_from("127.0.0.2", port) else { continue };
                    let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                    if s.write_all(raw.as_bytes()).is_err() {
                        continue;
                    }
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    if let Ok(r) = common::read_response(s) {
                        *seen.entry(r.status).or_default() += 1;
                    }
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    for user in 1..=50 {
        let r = request_within(&up, "POST", &format!("/api/v1/activities/{act}/buy"), Some(user), b"", 5_000);
        assert_eq!(r.status, 201, "buyer {user} during the flood: {}", r.text());
    }
    while t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut seen = std::collections::BTreeMap::<u16, usize>::new();
    for b in bots {
        for (k, v) in b.join().expect("bot thread") {
            *seen.entry(k).or_default() += v;
        }
    }
    let total: usize = seen.values().sum();
    assert!(total >= 400, "the bots made only {total} requests: {seen:?}");
    assert!(seen.get(&429).copied().unwrap_or(0) > 0, "the address's bucket refused nothing: {seen:?}");
    assert!(seen.get(&200).copied().unwrap_or(0) > 0, "reads are still answered: {seen:?}");
    assert_eq!(seen.keys().filter(|s| **s != 200 && **s != 429).count(), 0, "{seen:?}");
    let from_engine = metric(&up, r#"seckill_front_activity_reads_total{source="engine"}"#);
    let from_cache = metric(&up, r#"seckill_front_activity_reads_total{source="cache"}"#);
    // Two keys, about one engine read per key per second of flood (a few
    // more when bots miss at the same moment), and most reads from the cache.
    assert!(
        from_engine <= 40.0 && from_cache >= 4.0 * from_engine,
        "{from_engine} reads reached the engine, {from_cache} came from the cache: {seen:?}"
    );
    // Buyers on another address still read the page.
    let a = request_within(&up, "GET", &format!("/api/v1/activities/{act}"), None, b"", 5_000);
    assert_eq!(a.status, 200, "{}", a.text());
}

// ---- row 5: payment replays ----------------------------------------------------

fn notify_body(order_id: &str, txn: &str) -> Vec<u8> {
    json!({"order_id": order_id, "amount_cents": 100, "provider_txn_id": txn}).to_string().into_bytes()
}

fn notify(up: &UpProc, body: &[u8], signature: &str) -> HttpResp {
    up.req("POST", "/api/v1/payments/notify", &[("X-Seckill-Signature", signature)], body)
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn written_lsn(up: &UpProc) -> u64 {
    up.admin("stats", json!({})).expect("stats")["written_lsn"].as_u64().expect("written_lsn")
}

/// A captured notify for an order that was cancelled: refused and recorded
/// once; replays answer the same and append nothing, also after a snapshot
/// and a kill -9; a signature older (or newer) than 5 minutes is 401, and
/// so is the old `sha256=` form. Fails if replays are recorded again, if
/// the memory of refusals is not rebuilt on restart, or without the skew check.
#[test]
fn replayed_payment_notifies_are_refused_once_and_stale_ones_not_at_all() {
    let (_tmp, dir) = data_dir();
    let mut up = UpProc::start(&dir, &["--payment", "notify"]);
    let act = activity(&up, 10);
    let order = |up: &UpProc, user: u64| -> String {
        let o = up.post(&format!("/api/v1/activities/{act}/buy"), Some(user), b"").json();
        let id = o["order_id"].as_str().expect("order_id").to_string();
        let r = up.post(&format!("/api/v1/orders/{id}/cancel"), Some(user), b"");
        assert_eq!(r.status, 200, "{}", r.text());
        id
    };
    let (a, b) = (order(&up, 1), order(&up, 2));
    let secret = PAYMENT_SECRET.as_bytes();
    let body_a = notify_body(&a, "txn-a");
    let sig_a = seckill_front::payment::sign(secret, &body_a);

    // Stale, future and old-format signatures: 401, nothing recorded.
    let lsn = written_lsn(&up);
    for sig in [
        seckill_front::payment::sign_at(secret, now_s() - 301, &body_a),
        seckill_front::payment::sign_at(secret, now_s() + 301, &body_a),
        format!("sha256={}", seckill_front::payment::hmac_hex(secret, &body_a)),
    ] {
        let r = notify(&up, &body_a, &sig);
        assert_eq!((r.status, error_code(&r)), (401, "unauthorized".into()), "{sig}: {}", r.text());
    }
    assert_eq!(written_lsn(&up), lsn, "refused signatures record nothing");

    // The first refusal is recorded (one record); replays are not.
    let r = notify(&up, &body_a, &sig_a);
    assert_eq!((r.status, error_code(&r)), (409, "invalid_state".into()), "{}", r.text());
    assert_eq!(written_lsn(&up), lsn + 1, "the refusal is recorded");
    for _ in 0..5 {
        let r = notify(&up, &body_a, &sig_a);
        assert_eq!((r.status, error_code(&r)), (409, "invalid_state".into()), "{}", r.text());
    }
    assert_eq!(written_lsn(&up), lsn + 1, "replays record nothing");

    // A snapshot holds refusal A; refusal B is only in the WAL after it.
    up.admin("snapshot", json!({})).expect("snapshot");
    let body_b = notify_body(&b, "txn-b");
    let r = notify(&up, &body_b, &seckill_front::payment::sign(secret, &body_b));
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(written_lsn(&up), lsn + 2);

    up.kill9();
    let up = UpProc::start(&dir, &["--payment", "notify"]);
    let lsn = written_lsn(&up);
    for body in [&body_a, &body_b] {
        let r = notify(&up, body, &seckill_front::payment::sign(secret, body));
        assert_eq!((r.status, error_code(&r)), (409, "invalid_state".into()), "{}", r.text());
    }
    assert_eq!(written_lsn(&up), lsn, "after a restart, replays still record nothing");
    // Another transaction for the same order is news: recorded.
    let body_c = notify_body(&a, "txn-c");
    assert_eq!(notify(&up, &body_c, &seckill_front::payment::sign(secret, &body_c)).status, 409);
    assert_eq!(written_lsn(&up), lsn + 1);
}

// ---- row 9: metrics and error bodies --------------------------------------------

/// Metrics are on the operator's listener only; every error the buyer port
/// makes is JSON, including a head too large (431), an unknown path, and
/// the 400/431 hyper makes itself. Fails if `/metrics` is served on the
/// buyer port again, without `head_bytes`, or without `HyperIo`'s rewrite.
#[test]
fn metrics_are_not_on_the_buyer_port_and_errors_are_json() {
    let (_tmp, dir) = data_dir();
    let up = UpProc::start(&dir, &[]);
    for path in ["/metrics", "/api/v1/metrics", "/metrics/"] {
        let r = request_within(&up, "GET", path, None, b"", 5_000);
        assert_eq!((r.status, error_code(&r)), (404, "not_found".into()), "{path}: {}", r.text());
        assert!(!r.text().contains("seckill_"), "{path} leaks metrics");
    }
    let m = common::request(up.metrics_port, "GET", "/metrics", &[], b"");
    assert_eq!(m.status, 200);
    assert!(m.text().contains("seckill_http_requests_total"), "{}", m.text());
    let other = common::request(up.metrics_port, "GET", "/api/v1/activities", &[], b"");
    assert_eq!((other.status, error_code(&other)), (404, "not_found".into()));

    // A 20 KiB header: 431 in JSON, not hyper's empty answer.
    let big = "a".repeat(20 * 1024);
    let r = up.req("GET", "/api/v1/healthz", &[("X-Big", &big)], b"");
    assert_eq!((r.status, error_code(&r)), (431, "header_too_large".into()), "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    // What hyper answers before our code sees a request is made JSON too.
    let huge = format!("GET /api/v1/healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(70 * 1024));
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /api/v1/healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    for (what, raw, status, code) in [
        ("a 70 KiB head", huge.as_str(), 431, "header_too_large"),
        ("150 headers", many.as_str(), 431, "header_too_large"),
        ("a request line that is no HTTP", "GARBAGE\r\n\r\n", 400, "bad_request"),
        ("a bad header line", "GET / HTTP/1.1\r\nHost x\r\n\r\n", 400, "bad_request"),
    ] {
        let r = common::raw_request_within(up.port, raw.as_bytes(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        assert_eq!((r.status, error_code(&r)), (status, code.into()), "{what}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    }
    // Still serving.
    let h: Value = up.get("/api/v1/healthz", None).json();
    assert_eq!(h["status"], "ok");
}

/// `seckill engine` and `seckill front` run apart: each serves `/metrics` on
/// its own `--metrics` address, and the front's buyer port does not.
#[test]
fn engine_and_front_serve_metrics_on_their_own_listeners() {
    let (_tmp, dir) = data_dir();
    let engine_metrics = common::free_port();
    let engine_metrics_addr = format!("127.0.0.1:{engine_metrics}");
    let _engine = common::EngineProc::start(&dir, &["--metrics", &engine_metrics_addr]);
    let r = common::request(engine_metrics, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/plain")), "{:?}", r.headers);

    let (port, front_metrics) = (common::free_port(), common::free_port());
    let log = std::fs::File::create(dir.with_extension("front.log")).expect("log");
    let _front = common::spawn_front(&dir, port, &["--metrics", &format!("127.0.0.1:{front_metrics}")], log);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !common::try_request(port, "GET", "/api/v1/readyz", &[], b"").is_ok_and(|r| r.status == 200) {
        let log = std::fs::read_to_string(dir.with_extension("front.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "seckill front not ready: {log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = common::request(port, "GET", "/metrics", &[], b"");
    assert_eq!((r.status, error_code(&r)), (404, "not_found".into()));
    let m = common::request(front_metrics, "GET", "/metrics", &[], b"");
    assert_eq!(m.status, 200);
    assert!(m.text().contains("seckill_http_requests_total"), "{}", m.text());
}
