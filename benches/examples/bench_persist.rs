//! Persister drain benchmark (run it through `scripts/bench-persist`).
//!
//! 1. Pre-fills a WAL (temp dir, `--durability none`, no snapshots) with
//!    `ORDERS` buys (default 1,000,000) of one activity, through the real
//!    engine (`Engine::try_submit`, many in flight): one `OrderCreated` each.
//! 2. For each batch size in `BATCHES` (default: the persister's default),
//!    times the persister draining that WAL into a fresh database
//!    `seckill_bench_<random>_b<size>`: orders/s = ORDERS / (seconds from
//!    `spawn` to `wait_caught_up`), migrations and connect included. Notes
//!    the CPU seconds the persister's process and mysqld/mariadbd used.
//! 3. In the same run, the seeds' way for `SEED_ORDERS` orders (default
//!    20,000) on one connection into `seckill_bench_<random>_seed`: per
//!    order BEGIN; SELECT version, stock; optimistic-lock UPDATE; INSERT
//!    order; COMMIT. Its rate is extrapolated.
//! 4. Prints the table, drops every database it made, and writes the
//!    markdown section to `REPORT` (if set) for docs/PERFORMANCE.md.
//!
//! Knobs (env): MYSQL (mysql://root@127.0.0.1:3306), ORDERS, SEED_ORDERS,
//! BATCHES (comma-separated batch_records_max values), REPORT.

use crossbeam_channel::unbounded;
use seckill_benches::{ongoing_spec, user_id};
use seckill_engine::node::{Node, NodeConfig};
use seckill_engine::wal::Durability;
use seckill_engine::{EngineConfig, Envelope, SystemClock};
use seckill_persist::mysql::{spawn, PersistConfig};
use seckill_proto::{ErrorCode, Request, Response};
use sqlx::{Connection, Executor, MySqlConnection, Row};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().replace('_', "").parse().unwrap_or_else(|_| panic!("bad {name}={v}")),
        _ => default,
    }
}

/// CPU seconds (user + system) of process `pid` ("self" for this one).
#[allow(unsafe_code)] // sysconf: see the SAFETY comment
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(f64::NAN)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks / if hz > 0 { hz as f64 } else { 100.0 }
}

/// The pid of the local MySQL server, if one runs here.
fn mysqld_pid() -> Option<String> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) {
            if matches!(comm.trim(), "mariadbd" | "mysqld") {
                return Some(name);
            }
        }
    }
    None
}

/// Fills the node's WAL with `n` buys of one activity (one unit each,
/// distinct users), keeping many in flight. Returns the activity id.
fn prefill(node: &Node, n: u64, now_ms: u64) -> u64 {
    let engine = &node.engine;
    let act = engine.create_activity(ongoing_spec(n, now_ms)).expect("create activity").id;
    let (tx, rx) = unbounded::<(u64, Response)>();
    let (mut received, mut won) = (0u64, 0u64);
    let mut take = |(_, resp): (u64, Response)| {
        received += 1;
        match resp {
            Response::Order(_) => won += 1,
            other => panic!("unexpected answer to a buy: {other:?}"),
        }
    };
    for i in 0..n {
        let req = Request::Buy {
            user_id: user_id(i),
            activity_id: act,
            quantity: 1,
            idempotency_key: 0,
            buy_token_ok: false,
        };
        loop {
            match engine.try_submit(Envelope { req: req.clone(), tag: i, reply: tx.clone().into() }) {
                Ok(()) => break,
                Err(ErrorCode::Busy) => {
                    rx.try_iter().for_each(&mut take);
                    std::thread::yield_now();
                }
                Err(e) => panic!("try_submit refused: {e:?}"),
            }
        }
        if i % 1024 == 1023 {
            rx.try_iter().for_each(&mut take);
        }
    }
    drop(tx);
    rx.iter().for_each(&mut take);
    assert_eq!((received, won), (n, n), "every buy answered with an order");
    engine.sync().expect("WAL written");
    act
}

async fn admin(base: &str) -> MySqlConnection {
    MySqlConnection::connect(&format!("{base}/mysql")).await.expect("connect to MySQL")
}

async fn count(base: &str, db: &str, table: &str) -> i64 {
    let mut c = admin(base).await;
    let row = sqlx::query(&format!("SELECT COUNT(*) FROM `{db}`.`{table}`")).fetch_one(&mut c).await.expect("count");
    row.get::<i64, _>(0)
}

async fn drop_db(base: &str, db: &str) {
    let mut c = admin(base).await;
    c.execute(format!("DROP DATABASE IF EXISTS `{db}`").as_str()).await.expect("drop database");
}

struct Drain {
    batch: usize,
    secs: f64,
    batches: u64,
    ours_cpu: f64,
    mysql_cpu: f64,
}

/// Times the persister draining the node's WAL into a fresh database.
fn drain(node: &Node, base: &str, db: &str, batch: usize, n: u64, mysqld: Option<&str>) -> Drain {
    let _ = std::fs::remove_file(node.data_dir.join("persister.checkpoint"));
    let mut cfg = PersistConfig::new(format!("{base}/{db}"));
    cfg.batch_records_max = batch;
    let target = node.wal.status.durable_lsn.load(Ordering::Acquire);
    let (ours0, my0) = (cpu_seconds("self"), mysqld.map_or(f64::NAN, cpu_seconds));
    let started = Instant::now();
    let p = spawn(cfg, node.data_dir.clone(), node.wal.status.clone(), node.wal.checkpoints.clone());
    let ok = p.wait_caught_up(Duration::from_secs(3600));
    let secs = started.elapsed().as_secs_f64();
    let (ours1, my1) = (cpu_seconds("self"), mysqld.map_or(f64::NAN, cpu_seconds));
    assert!(ok && p.applied_lsn() >= target, "persister did not catch up: {:?}", p.last_error());
    let batches = p.stats().batches;
    p.shutdown(Duration::from_secs(5));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let orders = rt.block_on(count(base, db, "orders"));
    assert_eq!(orders as u64, n, "orders in MySQL");
    Drain { batch, secs, batches, ours_cpu: ours1 - ours0, mysql_cpu: my1 - my0 }
}

/// The seeds' way: one transaction per order on one connection. Returns
/// (orders/s, mysqld CPU seconds while it ran).
async fn seed_way(base: &str, db: &str, n: u64, now_ms: u64, mysqld: Option<&str>) -> (f64, f64) {
    let mut c = admin(base).await;
    c.execute(format!("CREATE DATABASE `{db}`").as_str()).await.expect("create seed database");
    let mut c = MySqlConnection::connect(&format!("{base}/{db}")).await.expect("connect seed database");
    c.execute(
        "CREATE TABLE seed_stock (id BIGINT UNSIGNED NOT NULL PRIMARY KEY, stock BIGINT NOT NULL, \
         version BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB",
    )
    .await
    .expect("seed_stock");
    c.execute(
        "CREATE TABLE seed_orders (order_id CHAR(36) CHARACTER SET ascii NOT NULL PRIMARY KEY, \
         user_id BIGINT UNSIGNED NOT NULL, activity_id BIGINT UNSIGNED NOT NULL, quantity INT UNSIGNED NOT NULL, \
         amount_cents BIGINT UNSIGNED NOT NULL, status VARCHAR(16) NOT NULL, created_at DATETIME(3) NOT NULL, \
         KEY seed_orders_by_user (user_id, created_at)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    )
    .await
    .expect("seed_orders");
    sqlx::query("INSERT INTO seed_stock (id, stock, version) VALUES (1, ?, 0)")
        .bind(n as i64)
        .execute(&mut c)
        .await
        .expect("seed stock row");
    let my0 = mysqld.map_or(f64::NAN, cpu_seconds);
    let started = Instant::now();
    let mut i = 0u64;
    while i < n {
        let mut tx = c.begin().await.expect("begin");
        let row = sqlx::query("SELECT version, stock FROM seed_stock WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .expect("select");
        let (version, stock): (u64, i64) = (row.get(0), row.get(1));
        assert!(stock > 0, "seed stock ran out");
        let done =
            sqlx::query("UPDATE seed_stock SET stock = stock - 1, version = version + 1 WHERE id = 1 AND version = ?")
                .bind(version)
                .execute(&mut *tx)
                .await
                .expect("update");
        if done.rows_affected() != 1 {
            tx.rollback().await.expect("rollback");
            continue; // lost the optimistic race: retry
        }
        let uid = user_id(i);
        sqlx::query(
            "INSERT INTO seed_orders (order_id, user_id, activity_id, quantity, amount_cents, status, created_at) \
             VALUES (?, ?, 1, 1, 99900, 'pending_payment', FROM_UNIXTIME(? / 1000))",
        )
        .bind(format!("{:08x}-0000-4000-8000-{:012x}", i as u32, uid & 0xffff_ffff_ffff))
        .bind(uid)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .expect("insert");
        tx.commit().await.expect("commit");
        i += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let my1 = mysqld.map_or(f64::NAN, cpu_seconds);
    assert_eq!(count(base, db, "seed_orders").await as u64, n, "seed orders");
    (n as f64 / secs, my1 - my0)
}

/// mysqld CPU µs per order.
fn us_per(cpu_s: f64, n: u64) -> String {
    if cpu_s.is_finite() {
        format!("{:.1}", cpu_s * 1e6 / n as f64)
    } else {
        "n/a".into()
    }
}

fn fmt_rate(r: f64) -> String {
    let digits = (r.round() as u64).to_string();
    let head = digits.len() % 3;
    let mut groups: Vec<&str> = Vec::new();
    if head > 0 {
        groups.push(&digits[..head]);
    }
    groups.extend(digits.as_bytes()[head..].chunks(3).map(|c| std::str::from_utf8(c).unwrap_or("")));
    groups.join(",")
}

fn main() {
    let base = std::env::var("MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    let base = base.trim_end_matches('/').to_string();
    let n: u64 = env_or("ORDERS", 1_000_000);
    let seed_n: u64 = env_or("SEED_ORDERS", 20_000);
    let default_batch = PersistConfig::new("").batch_records_max;
    let batches: Vec<usize> = std::env::var("BATCHES")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.split(',').map(|b| b.trim().replace('_', "").parse().expect("BATCHES: numbers")).collect())
        .unwrap_or_else(|| vec![default_batch]);
    let tag = {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos() as u64;
        format!("{:08x}", (t ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32)
    };
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64;
    let mysqld = mysqld_pid();
    let load_before = loadavg();

    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = NodeConfig::new(dir.path());
    cfg.durability = Durability::None;
    cfg.snapshot_every_records = u64::MAX; // keep every segment: the persister reads them all
    cfg.engine = EngineConfig { queue_capacity: 65_536, ..EngineConfig::default() };
    let node = Node::open(cfg, Arc::new(SystemClock)).expect("open node");
    eprintln!("==> pre-filling the WAL with {n} orders ({} shards)", node.engine.shard_count());
    let t = Instant::now();
    prefill(&node, n, now_ms);
    let records = node.wal.status.durable_lsn.load(Ordering::Acquire);
    eprintln!("    {records} WAL records in {:.1} s", t.elapsed().as_secs_f64());

    let mut drains = Vec::new();
    let mut dbs = Vec::new();
    for (i, &b) in batches.iter().enumerate() {
        let db = format!("seckill_bench_{tag}_{i}_b{b}");
        dbs.push(db.clone());
        eprintln!("==> draining into {db} (batch_records_max {b})");
        let d = drain(&node, &base, &db, b, n, mysqld.as_deref());
        eprintln!(
            "    {:.2} s, {} orders/s, {} batches; CPU s: persister process {:.1}, mysqld {:.1}",
            d.secs,
            fmt_rate(n as f64 / d.secs),
            d.batches,
            d.ours_cpu,
            d.mysql_cpu
        );
        drains.push(d);
    }
    node.shutdown();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let seed_db = format!("seckill_bench_{tag}_seed");
    eprintln!("==> the seeds' way: {seed_n} orders, one transaction each, into {seed_db}");
    let (seed_rate, seed_cpu) = rt.block_on(seed_way(&base, &seed_db, seed_n, now_ms, mysqld.as_deref()));
    dbs.push(seed_db);
    for db in &dbs {
        rt.block_on(drop_db(&base, db));
    }

    let main = drains.iter().find(|d| d.batch == default_batch).unwrap_or(&drains[0]);
    let drain_rate = n as f64 / main.secs;
    println!();
    println!("| what | orders | seconds | orders/s | mysqld CPU µs/order |");
    println!("|---|---:|---:|---:|---:|");
    for d in &drains {
        println!(
            "| persister drain, batch {} | {n} | {:.2} | {} | {} |",
            d.batch,
            d.secs,
            fmt_rate(n as f64 / d.secs),
            us_per(d.mysql_cpu, n)
        );
    }
    println!(
        "| seeds' way (1 tx/order) | {seed_n} | {:.2} | {} | {} |",
        seed_n as f64 / seed_rate,
        fmt_rate(seed_rate),
        us_per(seed_cpu, seed_n)
    );
    println!("| ratio drain / seed | | | {:.0}x |", drain_rate / seed_rate);

    if let Ok(path) = std::env::var("REPORT") {
        let mut md = String::new();
        let host = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            })
            .unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
        let _ = writeln!(
            md,
            "Measured {} on {cores} cores ({host}), MariaDB at `{}` with its settings as found.",
            date(now_ms),
            seckill_persist::redact_url(&base)
        );
        let _ = writeln!(
            md,
            "WAL pre-filled with {n} buys of one activity (`--durability none`, {records} records); the persister"
        );
        let _ = writeln!(
            md,
            "drains it into a fresh database, timed from `spawn` to `wait_caught_up` (migrations included)."
        );
        let _ = writeln!(md, "Seeds' way: one connection, one transaction per order (SELECT version; optimistic UPDATE; INSERT; COMMIT),");
        let _ = writeln!(
            md,
            "{seed_n} orders, rate extrapolated. Load average (1 min) {load_before} before, {} after: other work \
             shared the machine when it is above ~1.\n",
            loadavg()
        );
        let _ = writeln!(md, "| what | orders | seconds | orders/s | CPU s: ours / mysqld | mysqld CPU µs/order |");
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
        for d in &drains {
            let _ = writeln!(
                md,
                "| persister drain, `batch_records_max` {} ({} batches) | {n} | {:.2} | **{}** | {:.1} / {:.1} | **{}** |",
                d.batch,
                d.batches,
                d.secs,
                fmt_rate(n as f64 / d.secs),
                d.ours_cpu,
                d.mysql_cpu,
                us_per(d.mysql_cpu, n)
            );
        }
        let _ = writeln!(
            md,
            "| seeds' way (1 transaction per order) | {seed_n} | {:.2} | {} | – / {:.1} | {} |",
            seed_n as f64 / seed_rate,
            fmt_rate(seed_rate),
            seed_cpu,
            us_per(seed_cpu, seed_n)
        );
        let _ = writeln!(md, "| **ratio** drain / seeds' way | | | **{:.0}×** | | |", drain_rate / seed_rate);
        std::fs::write(&path, md).expect("write REPORT");
    }
}

/// The 1-minute load average, as /proc/loadavg has it.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "n/a".into())
}

/// YYYY-MM-DD (UTC) of a Unix ms time.
fn date(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64;
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
