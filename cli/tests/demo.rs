//! `seckill demo` through the real binary.
//!
//! * Against the local MariaDB and Redis (its own database
//!   `seckill_demo_cli_test` and Redis db 11, so it runs beside other tests
//!   and a user's own demo): the report says the engine's, MySQL's and
//!   Redis's copies are verified, and the copies hold what the report says.
//!   Unreachable servers skip it with a loud line, unless
//!   `SECKILL_REQUIRE_SERVICES` is set (scripts/test sets it): then it fails.
//! * With the servers unreachable (port 1) the demo still sells, says which
//!   copies it skipped and how to start them, and `--require-services`
//!   turns that into a failure.
//! * A database not named `seckill_demo…` is refused before anything is touched.
//! * `--serve` keeps both listeners answering after the report, prints their
//!   URLs, and stops cleanly on SIGINT; a SIGINT during the sale stops the
//!   demo at once (exit 130) and removes its data dir.

mod common;

use std::collections::HashMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const MYSQL_DB: &str = "seckill_demo_cli_test";
const REDIS_DB: u32 = 11;

/// The MySQL server (no database), as the other suites take it.
fn mysql_server() -> String {
    std::env::var("SECKILL_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// The test's own Redis database.
fn redis_url() -> String {
    let server = std::env::var("SECKILL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    format!("{}/{REDIS_DB}", server.trim_end_matches('/'))
}

fn require_services() -> bool {
    std::env::var("SECKILL_REQUIRE_SERVICES").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn demo(args: &[&str]) -> (Output, String) {
    let out = Command::new(common::bin())
        .arg("demo")
        .args(args)
        // The demo's own environment must not leak in from the caller.
        .env_remove("SECKILL_DEMO_MYSQL_URL")
        .env_remove("SECKILL_DEMO_REDIS_URL")
        .env_remove("SECKILL_DEMO_REQUIRE_SERVICES")
        .env_remove("SECKILL_DEMO_STOCK")
        .env_remove("SECKILL_DEMO_BUYERS")
        .output()
        .expect("running seckill demo");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out, text)
}

/// The rows of the closing table: copy → (state, first line of detail).
fn copies(stdout: &str) -> HashMap<String, (String, String)> {
    let mut rows = HashMap::new();
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("the sale and its copies:")).skip(1);
    let Some(header) = lines.next() else { return rows };
    let state_col = header.find("state").unwrap_or(0);
    let detail_col = header.find("what was checked").unwrap_or(0);
    for l in lines {
        if l.len() <= detail_col || !l.starts_with("  ") {
            break;
        }
        let copy = l[..state_col].trim();
        if copy.is_empty() {
            continue; // a continuation line
        }
        rows.insert(copy.to_string(), (l[state_col..detail_col].trim().to_string(), l[detail_col..].to_string()));
    }
    rows
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Drops the test's database and empties its Redis db, now and on drop.
struct Cleanup;

impl Cleanup {
    fn run() {
        let _ = rt().block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::MySqlConnection::connect(&mysql_server()).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS `{MYSQL_DB}`")).execute(&mut c).await?;
            anyhow::Ok(())
        });
        let client = redis::Client::open(redis_url());
        if let Ok(mut c) = client.and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2))) {
            let _ = redis::cmd("FLUSHDB").query::<()>(&mut c);
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        Cleanup::run();
    }
}

#[test]
fn the_demo_verifies_the_mysql_and_redis_copies() {
    Cleanup::run();
    let _cleanup = Cleanup;
    let (mysql_url, redis_url) = (format!("{}/{MYSQL_DB}", mysql_server()), redis_url());
    let started = Instant::now();
    let (out, text) = demo(&[
        "--stock",
        "300",
        "--buyers",
        "1200",
        "--connections",
        "16",
        "--mysql-url",
        &mysql_url,
        "--redis-url",
        &redis_url,
        "--require-services",
    ]);
    if !out.status.success() && text.contains("--require-services is set") && !require_services() {
        eprintln!(
            "\n#####\n##### SKIPPED the demo's MySQL/Redis test: a server is unreachable (scripts/services starts \
             them). This test did NOT run.\n##### {}\n#####\n",
            text.lines().find(|l| l.contains("--require-services")).unwrap_or_default()
        );
        return;
    }
    assert!(out.status.success(), "seckill demo failed:\n{text}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows = copies(&stdout);
    for copy in ["engine (WAL)", "MySQL", "Redis"] {
        let (state, detail) = rows.get(copy).unwrap_or_else(|| panic!("no `{copy}` row in the report:\n{stdout}"));
        assert_eq!(state, "verified", "{copy}: {detail}\n{stdout}");
    }
    assert!(rows["MySQL"].1.contains("0 differences") && rows["MySQL"].1.contains("300 orders"), "{stdout}");
    assert!(
        rows["Redis"].1.contains("stock left 0 of 300") && rows["Redis"].1.contains("300 stream entries"),
        "{stdout}"
    );
    assert!(stdout.contains("MySQL caught up") && stdout.contains("Redis caught up"), "{stdout}");
    assert!(stdout.contains("demo OK: the engine, MySQL and Redis agree"), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(60), "the demo took {:?}", started.elapsed());

    // The copies are really there (the demo leaves them for a look).
    let (orders, paid): (i64, i64) = rt().block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::MySqlConnection::connect(&mysql_url).await.expect("connect to the demo's database");
        let n = sqlx::query_scalar("SELECT COUNT(*) FROM orders").fetch_one(&mut c).await.expect("count");
        let p = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status <> 'pending_payment'")
            .fetch_one(&mut c)
            .await
            .expect("count");
        (n, p)
    });
    assert_eq!((orders, paid), (300, 0));
    let mut r = redis::Client::open(redis_url.as_str()).expect("url").get_connection().expect("redis");
    let remaining: u64 = redis::cmd("HGET").arg("seckill:activity:1").arg("remaining").query(&mut r).expect("HGET");
    let held: u64 = redis::cmd("HLEN").arg("seckill:purchased:1").query(&mut r).expect("HLEN");
    assert_eq!((remaining, held), (0, 300));

    // A second run starts from nothing again (the database is recreated, the keys emptied).
    let (out, text) = demo(&[
        "--stock",
        "20",
        "--buyers",
        "50",
        "--mysql-url",
        &mysql_url,
        "--redis-url",
        &redis_url,
        "--require-services",
    ]);
    assert!(out.status.success(), "second run:\n{text}");
    let rows = copies(&String::from_utf8_lossy(&out.stdout));
    assert!(rows["MySQL"].1.contains("20 orders") && rows["Redis"].1.contains("20 stream entries"), "{text}");
}

#[test]
fn unreachable_servers_are_skipped_and_said_or_required() {
    let args = [
        "--stock",
        "20",
        "--buyers",
        "40",
        "--connections",
        "4",
        "--mysql-url",
        "mysql://root@127.0.0.1:1/seckill_demo_unreachable",
        "--redis-url",
        "redis://127.0.0.1:1/11",
    ];
    let (out, text) = demo(&args);
    assert!(out.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("MySQL persister  OFF: MySQL is not reachable at 127.0.0.1:1"), "{stdout}");
    let rows = copies(&stdout);
    assert_eq!(rows["engine (WAL)"].0, "verified", "{stdout}");
    for copy in ["MySQL", "Redis"] {
        assert_eq!(rows[copy].0, "skipped", "{stdout}");
        assert!(rows[copy].1.contains("not reachable at 127.0.0.1:1"), "{stdout}");
    }
    assert!(stdout.contains("sudo service mariadb start") && stdout.contains("sudo service redis-server start"));
    assert!(stdout.contains("demo OK, without the MySQL and Redis copies"), "{stdout}");

    let mut required = args.to_vec();
    required.push("--require-services");
    let started = Instant::now();
    let (out, text) = demo(&required);
    assert!(!out.status.success(), "--require-services with no servers must fail:\n{text}");
    assert!(text.contains("MySQL is not reachable") && text.contains("--require-services is set"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10), "it fails before selling anything");
}

#[test]
fn only_a_seckill_demo_database_is_dropped() {
    let (out, text) = demo(&["--mysql-url", "mysql://root@127.0.0.1:3306/seckill", "--redis-url", "none"]);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("only uses one whose name starts with `seckill_demo`"), "{text}");
    assert!(!text.contains("starting the service"), "refused before anything started: {text}");
}

#[test]
fn serve_keeps_the_service_running_until_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let (http, metrics) = (common::free_port(), common::free_port());
    let mut child = Command::new(common::bin())
        .args(["demo", "--stock", "5", "--buyers", "20", "--connections", "2", "--serve"])
        .args(["--mysql-url", "none", "--redis-url", "none"])
        .args(["--http", &format!("127.0.0.1:{http}"), "--metrics", &format!("127.0.0.1:{metrics}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawning seckill demo --serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("a line");
        let done = line.starts_with("Ctrl-C stops it");
        printed.push(line);
        if done {
            break;
        }
    }
    let text = printed.join("\n");
    assert!(text.contains(&format!("buyer HTTP   http://127.0.0.1:{http}/api/v1/activities")), "{text}");
    assert!(text.contains(&format!("metrics      http://127.0.0.1:{metrics}/metrics")), "{text}");
    assert!(text.contains(&format!("dashboard    http://127.0.0.1:{metrics}/dashboard")), "{text}");
    assert!(text.contains("next sale    activity 2 starts at"), "{text}");

    // Still serving after the report: both listeners answer, the next sale is upcoming.
    let a = common::request(http, "GET", "/api/v1/activities/2", &[], b"");
    assert_eq!((a.status, a.json()["phase"].as_str()), (200, Some("upcoming")), "{}", a.text());
    let m = common::request(metrics, "GET", "/metrics", &[], b"");
    assert!(m.status == 200 && m.text().contains("seckill_"), "{} {}", m.status, m.text());

    let status = common::signal_and_wait(&mut child, "INT", Duration::from_secs(15));
    assert!(status.success(), "{status}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.starts_with("demo OK")), "{rest:?}");
}

#[test]
fn ctrl_c_during_the_sale_stops_the_demo() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(common::bin())
        .args(["demo", "--stock", "100000", "--buyers", "300000", "--connections", "2"])
        .args(["--mysql-url", "none", "--redis-url", "none"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning seckill demo");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut data_dir = None;
    for line in lines.by_ref() {
        let line = line.expect("a line");
        if let Some(rest) = line.split("(data dir ").nth(1) {
            data_dir = Some(std::path::PathBuf::from(rest.trim_end_matches(')')));
        }
        if line.trim_start().starts_with("activity 1:") {
            break;
        }
    }
    let data_dir = data_dir.expect("the demo names its data dir");
    assert!(data_dir.exists());
    let status = common::signal_and_wait(&mut child, "INT", Duration::from_secs(15));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!data_dir.exists(), "the temp data dir is removed");
}
