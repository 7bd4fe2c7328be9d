//! What operators look at, against real `seckill` processes:
//!
//! * every metric an alert rule (`docs/ops/*.rules.yml`) or a Grafana panel
//!   (`docs/ops/*.json`) names is exported, by `seckill up` and, when the
//!   engine and a front run apart, by them (WAL, persister and mirror
//!   metrics by the engine); latency metrics are histograms, not summaries;
//! * the dashboard (`/dashboard`, `/api/dashboard.json`) shows exactly what
//!   `seckill admin stats` says, on `up` and on `engine`;
//! * `--log-format json`: every line on stderr is one JSON object with
//!   `timestamp`, `level`, `target` and `fields.message`.
//!
//! The metric-name test uses MariaDB and Redis (persister and mirror
//! metrics exist only when they run); with SECKILL_REQUIRE_SERVICES set an
//! unreachable server fails it, otherwise those names are skipped, loudly.

mod common;

use common::{bearer, bin, free_port, request, try_request, wait_until, KillOnDrop, UpProc};
use seckill_testkit::data_dir;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn ops_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ops")
}

/// Every `seckill_…` name in the alert rules and the Grafana dashboards.
fn names_in_ops_files() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut files = 0;
    for entry in std::fs::read_dir(ops_dir()).expect("docs/ops") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
        // The rule tests' input series are made up on purpose.
        if !(name.ends_with(".rules.yml") || name.ends_with(".json")) {
            continue;
        }
        files += 1;
        let text = std::fs::read_to_string(&path).expect("read");
        let mut rest = text.as_str();
        while let Some(i) = rest.find("seckill_") {
            let tail = &rest[i..];
            let end =
                tail.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    assert!(files >= 2, "expected the rules file and the Grafana dashboard in docs/ops");
    assert!(names.len() > 20, "too few metric names found in docs/ops: {names:?}");
    names
}

/// The names of every sample in a Prometheus text page.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or("").to_string())
        .collect()
}

/// Whether `name` (as a query names it) is in `have`. A histogram's
/// `_bucket`/`_sum`/`_count` are what a page shows of it.
fn is_exported(name: &str, have: &BTreeSet<String>) -> bool {
    have.contains(name) || ["_bucket", "_sum", "_count"].iter().any(|s| have.contains(&format!("{name}{s}")))
}

fn scrape(port: u16) -> String {
    let r = request(port, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// Latency metrics are histograms with buckets: never a summary's quantiles.
#[track_caller]
fn assert_histograms(text: &str, names: &[&str]) {
    assert!(!text.contains("quantile=\""), "a summary is exported; histograms are wanted:\n{text}");
    for n in names {
        assert!(text.contains(&format!("{n}_bucket{{")), "{n} is not a histogram with buckets:\n{text}");
    }
}

fn services_required() -> bool {
    std::env::var("SECKILL_REQUIRE_SERVICES").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn mysql_server() -> String {
    std::env::var("SECKILL_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_string())
}

fn redis_server() -> String {
    std::env::var("SECKILL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn reachable(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h).split(['/', '?']).next().unwrap_or("");
    host.parse().ok().and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok()).is_some()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// MySQL databases and Redis databases of this test, dropped and flushed at the end.
struct Backends {
    dbs: Vec<String>,
    redis_dbs: Vec<u32>,
}

impl Backends {
    fn mysql_url(&mut self, tag: &str) -> String {
        let name = format!("seckill_obs_{tag}_{}", std::process::id());
        self.dbs.push(name.clone());
        format!("{}/{name}", mysql_server().trim_end_matches('/'))
    }

    fn redis_url(&mut self, db: u32) -> String {
        self.redis_dbs.push(db);
        format!("{}/{db}", redis_server().trim_end_matches('/'))
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        let (server, dbs) = (mysql_server(), self.dbs.clone());
        rt().block_on(async {
            use sqlx::Connection;
            if let Ok(mut c) = sqlx::MySqlConnection::connect(&server).await {
                for name in dbs {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`")).execute(&mut c).await;
                }
            }
        });
        for db in &self.redis_dbs {
            let url = format!("{}/{db}", redis_server().trim_end_matches('/'));
            if let Ok(mut c) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
                let _: Result<(), _> = redis::cmd("FLUSHDB").query(&mut c);
            }
        }
    }
}

/// An open sale of `stock` units, one per buyer, on the engine of `data`.
fn activity(data: &Path, stock: u64) -> u64 {
    common::create_activity(
        data,
        json!({"title": "obs sale", "price_cents": 100, "stock": stock, "per_user_limit": 1,
               "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z"}),
    )
}

/// `buyers` distinct users buy once each from `activity` on `port`; returns the statuses.
fn buy_all(port: u16, activity: u64, first_user: u64, buyers: u64) -> Vec<u16> {
    (first_user..first_user + buyers)
        .map(|u| {
            let auth = bearer(u);
            request(port, "POST", &format!("/api/v1/activities/{activity}/buy"), &[("Authorization", &auth)], b"")
                .status
        })
        .collect()
}

#[test]
fn metrics_named_by_alert_rules_and_grafana_panels_are_exported() {
    let names = names_in_ops_files();
    let services = reachable(&mysql_server()) && reachable(&redis_server());
    if !services && services_required() {
        panic!("MariaDB or Redis unreachable and SECKILL_REQUIRE_SERVICES is set: start them (scripts/services)");
    }
    let needs_services = |n: &str| n.starts_with("seckill_persister_") || n.starts_with("seckill_mirror_");
    if !services {
        eprintln!(
            "\n#####\n##### MariaDB or Redis unreachable: persister and mirror metric names are NOT checked.\n#####\n"
        );
    }
    let wanted: Vec<&String> = names.iter().filter(|n| services || !needs_services(n)).collect();
    let mut backends = Backends { dbs: Vec::new(), redis_dbs: Vec::new() };

    // 1. `seckill up`: everything in one process.
    let (_tmp, dir) = data_dir();
    let (mysql, redis) =
        if services { (backends.mysql_url("up"), backends.redis_url(13)) } else { ("none".into(), "none".into()) };
    let up = UpProc::start_with_backends(&dir, &mysql, &redis, &[]);
    let act = activity(&dir, 3);
    let statuses = buy_all(up.port, act, 1, 6);
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 3, "{statuses:?}");
    if services {
        wait_until("the persister and the mirror to catch up", Duration::from_secs(30), || {
            let s = up.admin("stats", json!({})).expect("stats");
            s["persister"]["lag_records"] == 0 && s["mirror"]["lag_records"] == 0 && s["mirror"]["connected"] == true
        });
    }
    let text = scrape(up.metrics_port);
    let have = exported(&text);
    let missing: Vec<&&String> = wanted.iter().filter(|n| !is_exported(n, &have)).collect();
    assert!(missing.is_empty(), "`seckill up` does not export {missing:?}; it exports {have:?}");
    assert_histograms(
        &text,
        &["seckill_http_request_seconds", "seckill_wal_fsync_seconds", "seckill_shard_batch_size"],
    );
    drop(up);

    // 2. `seckill engine` and `seckill front` apart: the engine's listener
    // has the WAL, persister and mirror metrics; the front's has HTTP.
    let (_tmp2, dir2) = data_dir();
    let (mysql, redis) =
        if services { (backends.mysql_url("engine"), backends.redis_url(10)) } else { ("none".into(), "none".into()) };
    let engine_metrics = free_port();
    let log = std::fs::File::create(dir2.with_extension("log")).expect("log");
    let _engine = KillOnDrop(
        common::seckill()
            .arg("engine")
            .arg("--data-dir")
            .arg(&dir2)
            .args(["--mysql-url", &mysql, "--redis-url", &redis, "--metrics", &format!("127.0.0.1:{engine_metrics}")])
            .stderr(log)
            .spawn()
            .expect("seckill engine"),
    );
    wait_until("the engine's sockets", Duration::from_secs(30), || {
        std::os::unix::net::UnixStream::connect(dir2.join("admin.sock")).is_ok()
    });
    let (port, front_metrics) = (free_port(), free_port());
    let front_log = std::fs::File::create(dir2.with_extension("front.log")).expect("log");
    let _front = common::spawn_front(&dir2, port, &["--metrics", &format!("127.0.0.1:{front_metrics}")], front_log);
    wait_until("the front", Duration::from_secs(30), || {
        try_request(port, "GET", "/api/v1/readyz", &[], b"").is_ok_and(|r| r.status == 200)
    });
    let act = activity(&dir2, 3);
    let statuses = buy_all(port, act, 1, 6);
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 3, "{statuses:?}");
    if services {
        wait_until("the persister and the mirror to catch up", Duration::from_secs(30), || {
            let s = common::admin(&dir2, "stats", json!({})).expect("stats");
            s["persister"]["lag_records"] == 0 && s["mirror"]["lag_records"] == 0 && s["mirror"]["connected"] == true
        });
    }
    let engine_text = scrape(engine_metrics);
    let front_text = scrape(front_metrics);
    let (engine_has, front_has) = (exported(&engine_text), exported(&front_text));
    let front_side = |n: &str| ["seckill_http_", "seckill_front_", "seckill_payment_"].iter().any(|p| n.starts_with(p));
    let missing: Vec<&&String> = wanted
        .iter()
        .filter(|n| if front_side(n) { !is_exported(n, &front_has) } else { !is_exported(n, &engine_has) })
        .collect();
    assert!(
        missing.is_empty(),
        "apart, these are not exported where they belong: {missing:?}\nengine: {engine_has:?}\nfront: {front_has:?}"
    );
    assert_histograms(&engine_text, &["seckill_wal_fsync_seconds", "seckill_shard_batch_size"]);
    assert_histograms(&front_text, &["seckill_http_request_seconds"]);
    // Per-activity figures equal the engine's `stats`.
    let stats = common::admin(&dir2, "stats", json!({})).expect("stats");
    let created = stats["activities"][0]["buys"]["created"].as_u64().expect("created");
    assert_eq!(created, 3);
    let line = format!("seckill_activity_buys_total{{activity=\"{act}\",outcome=\"created\"}} {created}");
    assert!(engine_text.lines().any(|l| l == line), "no `{line}` in:\n{engine_text}");
}

#[test]
fn the_dashboard_shows_what_admin_stats_says() {
    let (_tmp, dir) = data_dir();
    let up = UpProc::start(&dir, &[]);
    let act = activity(&dir, 5);
    let statuses = buy_all(up.port, act, 1, 8);
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 3, "{statuses:?}");

    // Nothing moves now: the dashboard's `stats` is the admin `stats`.
    let admin = up.admin("stats", json!({})).expect("stats");
    let r = request(up.metrics_port, "GET", "/api/dashboard.json", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let d = r.json();
    let without_now = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().expect("object").remove("now");
        v
    };
    assert_eq!(without_now(&d["stats"]), without_now(&admin), "dashboard stats differ from admin stats");
    assert_eq!(d["process"], "up");
    assert_eq!(d["answers_source"], "front");
    let a = &admin["activities"][0];
    assert_eq!(a["id"], act);
    assert_eq!((a["stock_total"].as_u64(), a["stock_left"].as_u64(), a["sold"].as_u64()), (Some(5), Some(0), Some(5)));
    assert_eq!(a["orders"]["pending_payment"], 5);
    assert_eq!(a["buys"]["created"], 5);
    let answers = &admin["front"]["buy_answers"][act.to_string()];
    assert_eq!((answers["201"].as_u64(), answers["409"].as_u64()), (Some(5), Some(3)), "{admin}");

    // The series fill up once a second.
    wait_until("two dashboard samples", Duration::from_secs(10), || {
        let d = request(up.metrics_port, "GET", "/api/dashboard.json", &[], b"").json();
        d["series"]["t"].as_array().is_some_and(|t| t.len() >= 2)
            && d["series"]["activities"][act.to_string()]["stock_left"]
                .as_array()
                .is_some_and(|s| s.last() == Some(&json!(0)))
    });
    let d = request(up.metrics_port, "GET", "/api/dashboard.json", &[], b"").json();
    let n = d["series"]["t"].as_array().map_or(0, |t| t.len());
    for (k, v) in d["series"]["engine"].as_object().expect("engine series") {
        assert_eq!(v.as_array().map(|a| a.len()), Some(n), "series.engine.{k} has one entry per sample");
    }

    // The page and its files, embedded in the binary.
    let page = request(up.metrics_port, "GET", "/dashboard", &[], b"");
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").is_some_and(|c| c.starts_with("text/html")));
    assert!(page.header("content-security-policy").is_some_and(|c| c.contains("default-src 'none'")));
    let html = page.text();
    for needle in ["/dashboard/uPlot.iife.min.js", "/dashboard/dashboard.js", "id=\"engine-durable-lsn\""] {
        assert!(html.contains(needle), "the page lacks {needle}");
    }
    let js = request(up.metrics_port, "GET", "/dashboard/uPlot.iife.min.js", &[], b"");
    let vendored =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../front/assets/vendor/uplot/uPlot.iife.min.js"))
            .expect("vendored uPlot");
    assert_eq!(js.body, vendored, "uPlot is served as vendored");
    let app = request(up.metrics_port, "GET", "/dashboard/dashboard.js", &[], b"").text();
    for id in ["-stock-left", "-sold", "-orders-", "-buys-", "-answers-"] {
        assert!(app.contains(id), "dashboard.js does not make the `act-<id>{id}` elements");
    }
    let root = request(up.metrics_port, "GET", "/", &[], b"");
    assert_eq!((root.status, root.header("location")), (302, Some("/dashboard")));
    let post = request(up.metrics_port, "POST", "/api/dashboard.json", &[], b"");
    assert_eq!(post.status, 405);
    // Not on the buyer port.
    assert_eq!(up.get("/api/dashboard.json", None).status, 404);

    // `/metrics` agrees too.
    let text = scrape(up.metrics_port);
    for line in [
        format!("seckill_activity_buys_total{{activity=\"{act}\",outcome=\"created\"}} 5"),
        format!("seckill_activity_stock_remaining{{activity=\"{act}\"}} 0"),
        format!("seckill_activity_orders{{activity=\"{act}\",status=\"pending_payment\"}} 5"),
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    drop(up);

    // `seckill engine` alone serves the dashboard too, from the engine's decisions.
    let (_tmp2, dir2) = data_dir();
    let m = free_port();
    let engine = common::EngineProc::start(&dir2, &["--metrics", &format!("127.0.0.1:{m}")]);
    let act = activity(&dir2, 2);
    let d = request(m, "GET", "/api/dashboard.json", &[], b"").json();
    assert_eq!((d["process"].as_str(), d["answers_source"].as_str()), (Some("engine"), Some("engine")));
    assert_eq!(without_now(&d["stats"]), without_now(&engine.admin("stats", json!({})).expect("stats")));
    assert_eq!(d["stats"]["activities"][0]["id"], act);
    assert_eq!(d["stats"]["activities"][0]["stock_left"], 2);
}

/// Runs `seckill --log-format json <command> --data-dir <dir> <args>`
/// logging at info to `<dir>.<command>.log`; returns the process and the log.
fn spawn_json(command: &str, dir: &Path, args: &[&str]) -> (KillOnDrop, PathBuf) {
    let log = dir.with_extension(format!("{command}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let p = KillOnDrop(
        common::seckill()
            .arg("--log-format")
            .arg("json")
            .arg(command)
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(file)
            .spawn()
            .expect("spawn seckill"),
    );
    (p, log)
}

/// Stops `p` with SIGTERM and waits for it.
fn term(mut p: KillOnDrop) {
    common::signal_and_wait(&mut p.0, "TERM", Duration::from_secs(20));
}

/// Every line of `log` is a JSON object with the stable fields; returns them.
#[track_caller]
fn json_lines(log: &Path, at_least: usize) -> Vec<Value> {
    let text = std::fs::read_to_string(log).expect("log");
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\n{text}")))
        .collect();
    assert!(lines.len() >= at_least, "fewer than {at_least} log lines:\n{text}");
    for v in &lines {
        assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z') && t.contains('T')), "timestamp: {v}");
        assert!(["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&v["level"].as_str().unwrap_or("")), "level: {v}");
        assert!(v["target"].as_str().is_some_and(|t| t.starts_with("seckill")), "target: {v}");
        assert!(v["fields"]["message"].as_str().is_some_and(|m| !m.is_empty()), "fields.message: {v}");
    }
    lines
}

#[test]
fn json_logs_are_one_object_per_line_with_stable_fields() {
    let (_tmp, dir) = data_dir();
    // `up`
    let (port, metrics) = (free_port(), free_port());
    let (http, metrics) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{metrics}"));
    let (up, log) =
        spawn_json("up", &dir, &["--http", &http, "--metrics", &metrics, "--mysql-url", "none", "--redis-url", "none"]);
    wait_until("seckill up", Duration::from_secs(30), || {
        try_request(port, "GET", "/api/v1/readyz", &[], b"").is_ok_and(|r| r.status == 200)
    });
    let act = activity(&dir, 1);
    buy_all(port, act, 1, 2);
    term(up);
    let lines = json_lines(&log, 5);
    let messages: Vec<&str> = lines.iter().filter_map(|v| v["fields"]["message"].as_str()).collect();
    assert!(messages.contains(&"stopped cleanly"), "{messages:?}");
    assert!(lines
        .iter()
        .any(|v| v["fields"]["message"] == "operator's listener" && v["fields"]["dashboard"].is_string()));

    // `engine` and `front` apart.
    let (engine, engine_log) =
        spawn_json("engine", &dir, &["--mysql-url", "none", "--redis-url", "none", "--metrics", "none"]);
    wait_until("seckill engine", Duration::from_secs(30), || {
        std::os::unix::net::UnixStream::connect(dir.join("engine.sock")).is_ok()
    });
    let fport = free_port();
    let (front, front_log) = spawn_json("front", &dir, &["--http", &format!("127.0.0.1:{fport}"), "--metrics", "none"]);
    wait_until("seckill front", Duration::from_secs(30), || {
        try_request(fport, "GET", "/api/v1/readyz", &[], b"").is_ok_and(|r| r.status == 200)
    });
    term(front);
    term(engine);
    json_lines(&engine_log, 5);
    json_lines(&front_log, 2);

    // A failure to start ends with a JSON line too.
    let out = Command::new(bin())
        .args(["--log-format", "json", "engine", "--data-dir", "/proc/seckill-no-such-dir", "--metrics", "none"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    let last: Value = serde_json::from_str(text.lines().last().unwrap_or("")).expect("last line is JSON");
    assert_eq!(last["level"], "ERROR");
    assert!(last["fields"]["message"].as_str().is_some_and(|m| m.starts_with("error: ")));
}
