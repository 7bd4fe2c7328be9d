//! The MySQL persister against a real MariaDB/MySQL at 127.0.0.1:3306
//! (override the server with SECKILL_TEST_MYSQL=mysql://user@host:port).
//! Each test makes its own database `seckill_test_<random>` (prefix: `SECKILL_TEST_DB_PREFIX`) and drops it at
//! the end. With SECKILL_REQUIRE_SERVICES set (scripts/test sets it) an unreachable
//! server fails the tests; elsewhere
//! they print a loud SKIP and pass.

use seckill_engine::node::{Node, NodeConfig};
use seckill_engine::wal::tail::Tailer;
use seckill_engine::wal::Durability;
use seckill_engine::{ActivitySpec, Engine, EngineConfig, SystemClock};
use seckill_persist::mysql::{self, PersistConfig, PersisterHandle};
use seckill_proto::{OrderStatus, OrderView, Request, Response};
use seckill_testkit::{now_ms, TcpProxy};
use sqlx::{Connection, MySqlConnection, Row};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn server_url() -> String {
    std::env::var("SECKILL_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_string())
}

fn server_addr() -> String {
    let url = server_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    host.split(['/', '?']).next().unwrap_or("127.0.0.1:3306").to_string()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A database of this test's own, dropped when the guard goes.
struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    /// None (after a loud message) when MySQL is unreachable outside CI.
    fn create(test: &str) -> Option<TestDb> {
        Self::create_with(test, usize::MAX)
    }

    /// With only the first `migrations` migrations applied.
    fn create_with(test: &str, migrations: usize) -> Option<TestDb> {
        let reachable = TcpStream::connect_timeout(
            &server_addr().parse().expect("SECKILL_TEST_MYSQL must name host:port as an IP address"),
            Duration::from_secs(2),
        )
        .is_ok();
        if !reachable {
            if std::env::var("SECKILL_REQUIRE_SERVICES").is_ok_and(|v| !v.is_empty() && v != "0") {
                panic!(
                    "MariaDB/MySQL is not reachable at {} and SECKILL_REQUIRE_SERVICES is set: start it (scripts/services)",
                    server_addr()
                );
            }
            eprintln!(
                "\n#####\n##### SKIP {test}: MariaDB/MySQL is not reachable at {} \
                 (start it: scripts/services). This test did NOT run.\n#####\n",
                server_addr()
            );
            return None;
        }
        // SECKILL_TEST_DB_PREFIX: engineers sharing one server keep to their own names.
        let prefix = std::env::var("SECKILL_TEST_DB_PREFIX").unwrap_or_else(|_| "seckill_test".into());
        let name = format!("{prefix}_{:016x}", rand::random::<u64>());
        let url = format!("{}/{name}", server_url());
        if migrations >= mysql::MIGRATOR.iter().count() {
            rt().block_on(mysql::migrate(&url)).expect("migrate");
        } else {
            let old = sqlx::migrate::Migrator {
                migrations: std::borrow::Cow::Owned(mysql::MIGRATOR.iter().take(migrations).cloned().collect()),
                ..sqlx::migrate::Migrator::DEFAULT
            };
            rt().block_on(async {
                let mut c = MySqlConnection::connect(&server_url()).await.expect("connect");
                sqlx::query(&format!("CREATE DATABASE `{name}`")).execute(&mut c).await.expect("create database");
                let mut c = MySqlConnection::connect(&url).await.expect("connect");
                old.run(&mut c).await.expect("old migrations");
            });
        }
        Some(TestDb { name, url })
    }

    /// The same database through another server address (the proxy).
    fn url_via(&self, port: u16) -> String {
        let server = server_url();
        let (scheme, rest) = server.split_once("://").expect("scheme");
        let user = rest.rsplit_once('@').map_or("", |(u, _)| u);
        let at = if user.is_empty() { String::new() } else { format!("{user}@") };
        format!("{scheme}://{at}127.0.0.1:{port}/{}", self.name)
    }

    fn exec(&self, sql: &str) {
        rt().block_on(async {
            let mut c = MySqlConnection::connect(&self.url).await.expect("connect");
            sqlx::query(sql).execute(&mut c).await.expect(sql);
        });
    }

    fn scalar(&self, sql: &str) -> i64 {
        rt().block_on(async {
            let mut c = MySqlConnection::connect(&self.url).await.expect("connect");
            let row = sqlx::query(&format!("SELECT CAST(({sql}) AS SIGNED) AS v")).fetch_one(&mut c).await.expect(sql);
            row.try_get::<Option<i64>, _>("v").expect("v").unwrap_or(0)
        })
    }

    fn verify(&self, engine: &Engine) -> Vec<String> {
        rt().block_on(mysql::verify(&self.url, engine)).expect("verify runs")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, name) = (server_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            rt().block_on(async {
                if let Ok(mut c) = MySqlConnection::connect(&server).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`")).execute(&mut c).await;
                }
            })
        })
        .join();
    }
}

fn open_node(dir: &Path, durability: Durability) -> Node {
    open_node_with(dir, durability, NodeConfig::new(dir).segment_bytes_max)
}

/// With WAL segments of `segment_bytes_max` (small ones: snapshots can
/// delete WAL a test still needs).
fn open_node_with(dir: &Path, durability: Durability, segment_bytes_max: u64) -> Node {
    let mut cfg = NodeConfig::new(dir);
    cfg.durability = durability;
    cfg.segment_bytes_max = segment_bytes_max;
    cfg.engine = EngineConfig { shards: 2, queue_capacity: 4096, ..EngineConfig::default() };
    Node::open(cfg, Arc::new(SystemClock)).expect("node opens")
}

/// A test's own database, data dir and node; `None` (skip) without MySQL.
fn setup(test: &str, durability: Durability) -> Option<(TestDb, tempfile::TempDir, Node)> {
    let db = TestDb::create(test)?;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open_node(dir.path(), durability);
    Some((db, dir, node))
}

fn spec(title: &str, stock: u64, limit: u32, timeout_s: u32) -> ActivitySpec {
    ActivitySpec {
        title: title.into(),
        product_id: None,
        price_cents: 990,
        stock,
        terms: seckill_proto::SaleTerms {
            starts_at_ms: now_ms() - 1_000,
            ends_at_ms: now_ms() + 3_600_000,
            per_user_limit: limit,
            payment_timeout_s: timeout_s,
            require_buy_token: false,
            gate_factor: 5,
        },
    }
}

fn fast_config(url: &str) -> PersistConfig {
    let mut cfg = PersistConfig::new(url);
    cfg.batch_ms = 10;
    cfg.backoff_max_ms = 400;
    cfg.batch_timeout_ms = 5_000;
    cfg
}

fn spawn(node: &Node, cfg: PersistConfig) -> PersisterHandle {
    mysql::spawn(cfg, node.data_dir.clone(), node.wal.status.clone(), node.wal.checkpoints.clone())
}

fn durable(node: &Node) -> u64 {
    node.wal.status.durable_lsn.load(Ordering::Acquire)
}

fn caught_up(node: &Node, p: &PersisterHandle, timeout: Duration) {
    node.engine.sync().expect("sync");
    assert!(
        p.wait_caught_up(timeout),
        "persister did not catch up: applied {} of {}, last error {:?}",
        p.applied_lsn(),
        durable(node),
        p.last_error()
    );
    assert_eq!(p.lag_records(), 0);
}

/// Caught up, and MySQL holds what the engine does.
fn in_sync(db: &TestDb, node: &Node, p: &PersisterHandle, timeout: Duration) {
    caught_up(node, p, timeout);
    assert_equal(db, &node.engine);
}

/// Buyers `users` on `threads` threads; per user, by id: every 5th cancels,
/// every 3rd pays, every 7th paid one refunds, every 11th paid one is paid
/// again by another transaction (a refused payment). Returns the orders.
fn load(engine: &Arc<Engine>, activity_id: u64, users: std::ops::Range<u64>, threads: u64) -> Vec<OrderView> {
    let out = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for t in 0..threads {
            let (engine, out, users) = (engine.clone(), out.clone(), users.clone());
            s.spawn(move || {
                for user in users.filter(|u| u % threads == t) {
                    let buy = Request::Buy {
                        user_id: user,
                        activity_id,
                        quantity: 1,
                        idempotency_key: 0,
                        buy_token_ok: false,
                    };
                    let Response::Order(o) = engine.call(buy) else {
                        continue;
                    };
                    let id = o.order_id;
                    if user % 5 == 0 {
                        engine.call(Request::Cancel { user_id: user, order_id: id });
                    } else if user % 3 == 0 {
                        engine.call(Request::Pay { order_id: id, amount_cents: o.amount_cents, txn: user });
                        if user % 7 == 0 {
                            engine.call(Request::Refund { user_id: user, order_id: id });
                        } else if user % 11 == 0 {
                            engine.call(Request::Pay { order_id: id, amount_cents: o.amount_cents, txn: user + 1 });
                        }
                    }
                    out.lock().expect("lock").push(o);
                }
            });
        }
    });
    let v = out.lock().expect("lock").clone();
    v
}

fn assert_equal(db: &TestDb, engine: &Engine) {
    let diffs = db.verify(engine);
    assert!(diffs.is_empty(), "MySQL differs from the engine:\n{}", diffs.join("\n"));
}

/// [`in_sync`] within 20 s, and the stock bookkeeping adds up.
fn settled(db: &TestDb, node: &Node, p: &PersisterHandle) {
    in_sync(db, node, p, Duration::from_secs(20));
    assert_stock_log_adds_up(db);
}

/// Stops the persister, then the node.
fn stop(p: PersisterHandle, node: Node) {
    p.shutdown(Duration::from_secs(1));
    node.shutdown();
}

/// Stock bookkeeping that must hold whenever MySQL is caught up.
fn assert_stock_log_adds_up(db: &TestDb) {
    let bad = db.scalar(
        "SELECT COUNT(*) FROM activities a WHERE a.in_engine = 1 AND a.remaining <> \
         (SELECT COALESCE(SUM(delta), 0) FROM stock_log l WHERE l.activity_id = a.id)",
    );
    assert_eq!(bad, 0, "SUM(stock_log.delta) = remaining for every activity");
}

// (a) A load of buys / cancels / pays / refunds / expiries through a real
// Node; the persister catches up and MySQL equals the engine. Then (d): the
// engine "dies" (dropped without shutdown) while the persister is still
// draining, reopens on the same dir, and a new persister continues from
// MySQL's checkpoint.
#[test]
fn persister_catches_up_and_survives_an_engine_crash() {
    let Some((db, dir, node)) = setup("persister_catches_up_and_survives_an_engine_crash", Durability::Fsync) else {
        return;
    };
    let engine = node.engine.clone();
    let product =
        engine.create_product("phone".into(), "a phone".into(), "http://img/1".into(), 99_900).expect("product");
    let a = engine
        .create_activity(ActivitySpec { product_id: Some(product.id), ..spec("phone sale", 600, 1, 1800) })
        .expect("a");
    let quick = engine.create_activity(spec("expiring sale", 50, 2, 1)).expect("b");
    engine.call(Request::SetQuota { activity_id: a.id, user_id: 7, limit: 3 });
    let p = spawn(&node, fast_config(&db.url));

    let orders = load(&engine, a.id, 1..801, 8);
    assert!(orders.len() >= 600, "stock 600 (plus what cancels and refunds gave back): {}", orders.len());
    assert!(engine.activity(a.id).expect("view").remaining < 100, "800 buyers nearly sold it out");
    engine.add_stock(a.id, 100).expect("stock.add");
    let more = load(&engine, a.id, 801..1001, 4);
    assert!(!more.is_empty());
    engine.update_activity(a.id, |x| x.title = "phone sale (extended)".into()).expect("update");
    for user in 0..20 {
        let r = engine.call(Request::Buy {
            user_id: 5000 + user,
            activity_id: quick.id,
            quantity: 2,
            idempotency_key: 0,
            buy_token_ok: false,
        });
        assert!(matches!(r, Response::Order(_)), "{r:?}");
    }
    // Their payment deadline is 1 s: the engine expires them.
    std::thread::sleep(Duration::from_millis(2_300));
    assert_eq!(engine.activity(quick.id).expect("view").remaining, 50, "all expired");
    settled(&db, &node, &p);
    assert_eq!(db.scalar("SELECT lsn FROM persist_checkpoint") as u64, durable(&node));
    assert_eq!(db.scalar("SELECT COUNT(*) FROM orders WHERE status = 'expired'"), 20);
    assert!(db.scalar("SELECT COUNT(*) FROM payment_refusals") > 0, "second payments are kept for reconciliation");
    assert_eq!(p.last_error(), None);

    // (d) More load, and the engine dies with the persister mid-drain (its
    // batches wait 500 ms here, so the last records are not in MySQL yet).
    p.shutdown(Duration::ZERO);
    let p = spawn(&node, PersistConfig { batch_ms: 500, ..fast_config(&db.url) });
    let c = engine.create_activity(spec("crash sale", 1_000, 1, 1800)).expect("c");
    assert_eq!(load(&engine, c.id, 2000..2400, 4).len(), 400);
    engine.sync().expect("sync");
    let durable_at_crash = durable(&node);
    assert!(p.applied_lsn() < durable_at_crash, "mid-drain");
    assert!(node.wal.checkpoints.get(mysql::CHECKPOINT_NAME).is_some());
    drop(p);
    // Dropping waits for the thread, which gives up its checkpoint.
    assert_eq!(node.wal.checkpoints.get(mysql::CHECKPOINT_NAME), None);
    drop(engine);
    drop(node); // no shutdown: the process "dies" here

    let node = open_node(dir.path(), Durability::Fsync);
    assert_eq!(durable(&node), durable_at_crash, "every durable record survived");
    let p = spawn(&node, fast_config(&db.url));
    assert_eq!(load(&node.engine, c.id, 3000..3100, 2).len(), 100);
    settled(&db, &node, &p);
    stop(p, node);
}

// (b) Exactly once: a batch applied, then the same records offered again
// from a stale position (a persister that crashed after the MySQL commit
// and before registering its checkpoint, restarted from what it last
// knew): the fence refuses it and nothing is doubled. Then a persister
// dropped mid-run while a new one starts at once (both briefly alive).
#[test]
fn records_apply_exactly_once_across_persister_crashes() {
    let Some((db, _dir, node)) = setup("records_apply_exactly_once_across_persister_crashes", Durability::None) else {
        return;
    };
    let engine = node.engine.clone();
    let a = engine.create_activity(spec("sale", 400, 1, 1800)).expect("a");
    load(&engine, a.id, 1..501, 4);
    engine.sync().expect("sync");

    let mut records = Vec::new();
    let mut tail = Tailer::new(&node.data_dir, node.wal.status.clone(), 0);
    while (records.len() as u64) < durable(&node) {
        tail.poll(10_000, &mut records).expect("tail");
    }
    let half = records.len() / 2;
    let rt = rt();
    assert_eq!(rt.block_on(mysql::apply_records(&db.url, 0, &records[..half])).expect("first half"), half as u64);
    let orders_after_half = db.scalar("SELECT COUNT(*) FROM orders");
    let units_after_half = db.scalar("SELECT SUM(`count`) FROM purchases");
    let log_after_half = db.scalar("SELECT COUNT(*) FROM stock_log");

    // The stale restart: everything from LSN 1 again.
    let err = rt.block_on(mysql::apply_records(&db.url, 0, &records)).expect_err("fenced");
    assert!(err.to_string().contains("checkpoint"), "{err}");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM orders"), orders_after_half);
    assert_eq!(db.scalar("SELECT SUM(`count`) FROM purchases"), units_after_half);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM stock_log"), log_after_half);
    assert_eq!(rt.block_on(mysql::checkpoint(&db.url)).expect("cp"), half as u64);

    // A real persister continues from MySQL's checkpoint, not from 0.
    let p = spawn(&node, fast_config(&db.url));
    settled(&db, &node, &p);
    let stock_changes = records
        .iter()
        .filter(|(_, e)| match e {
            seckill_engine::Event::StockAdded { .. } | seckill_engine::Event::OrderCreated(_) => true,
            seckill_engine::Event::OrderStatusChanged { status, .. } => !status.holds_stock(),
            _ => false,
        })
        .count() as i64;
    assert_eq!(db.scalar("SELECT SUM(records) FROM stock_log"), stock_changes, "every stock change counted once");
    assert!(
        db.scalar("SELECT COUNT(*) FROM stock_log") < stock_changes / 4,
        "stock_log holds one row per batch, activity and reason, not one per change"
    );

    // Drop the persister mid-run and start another at once, while buying.
    let b = engine.create_activity(spec("second", 3000, 1, 1800)).expect("b");
    let mut p = Some(p);
    std::thread::scope(|s| {
        let engine = engine.clone();
        let buyers = s.spawn(move || load(&engine, b.id, 10_000..13_000, 4));
        for round in 0..6 {
            std::thread::sleep(Duration::from_millis(40 + round * 15));
            drop(p.take());
            p = Some(spawn(&node, fast_config(&db.url)));
        }
        assert_eq!(buyers.join().expect("buyers").len(), 3000);
    });
    let p = p.expect("persister");
    settled(&db, &node, &p);
    stop(p, node);
}

// (c) MySQL unreachable mid-load (through the cuttable proxy above): the
// engine keeps answering at full speed, lag grows and is reported, and
// after the restore it drains to zero with nothing lost.
#[test]
fn an_outage_only_delays_mysql() {
    let Some(db) = TestDb::create("an_outage_only_delays_mysql") else {
        return;
    };
    let proxy = TcpProxy::start(&server_addr());
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open_node(dir.path(), Durability::None);
    let engine = node.engine.clone();
    let a = engine.create_activity(spec("sale", 5_000, 1, 1800)).expect("a");
    let p = spawn(&node, fast_config(&db.url_via(proxy.port)));
    load(&engine, a.id, 1..1001, 4);
    caught_up(&node, &p, Duration::from_secs(20));

    proxy.cut();
    let t0 = Instant::now();
    let during = load(&engine, a.id, 1001..3001, 4);
    let buying_took = t0.elapsed();
    assert_eq!(during.len(), 2000, "every buy answered while MySQL is away");
    engine.sync().expect("sync");
    let lag1 = p.lag_records();
    assert!(lag1 > 0, "lag is visible");
    load(&engine, a.id, 3001..3501, 2);
    engine.sync().expect("sync");
    std::thread::sleep(Duration::from_millis(600));
    let lag2 = p.lag_records();
    assert!(lag2 > lag1, "lag grows while MySQL is away: {lag1} → {lag2}");
    assert!(p.lag_ms() >= 500, "lag_ms counts the wait: {}", p.lag_ms());
    assert!(p.last_error().is_some(), "the failure is reported");
    assert!(!p.is_halted(), "an outage is not bad data");
    eprintln!(
        "outage: 2000 buys answered in {buying_took:?} with MySQL away; lag {lag2} records, {} ms; error: {:?}",
        p.lag_ms(),
        p.last_error()
    );

    proxy.restore();
    let t1 = Instant::now();
    caught_up(&node, &p, Duration::from_secs(20));
    eprintln!("outage: drained {lag2} records in {:?} after the restore", t1.elapsed());
    assert_eq!(p.lag_ms(), 0);
    assert_eq!(p.last_error(), None);
    assert_equal(&db, &engine);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM orders") as usize,
        engine.inspect(|s| s.orders.len()).iter().sum::<usize>(),
        "0 orders lost"
    );
    stop(p, node);
}

// Bad data in MySQL never panics: the persister halts with a clear error,
// keeps the engine serving, and a resync request rebuilds MySQL.
#[test]
fn a_garbage_checkpoint_halts_clearly_and_a_resync_repairs() {
    let Some((db, _dir, node)) = setup("a_garbage_checkpoint_halts_clearly_and_a_resync_repairs", Durability::None)
    else {
        return;
    };
    let engine = node.engine.clone();
    let a = engine.create_activity(spec("sale", 300, 1, 1800)).expect("a");
    load(&engine, a.id, 1..201, 2);
    db.exec("UPDATE persist_checkpoint SET lsn = 987654321 WHERE id = 1");
    let p = spawn(&node, fast_config(&db.url));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.is_halted() {
        assert!(Instant::now() < deadline, "never halted: {:?}", p.last_error());
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = p.last_error().expect("error");
    assert!(err.contains("987654321") && err.contains("resync_requested"), "{err}");
    assert!(matches!(
        engine.call(Request::Buy {
            user_id: 900,
            activity_id: a.id,
            quantity: 1,
            idempotency_key: 0,
            buy_token_ok: false
        }),
        Response::Order(_)
    ));

    // The operator asks for a rebuild in SQL.
    db.exec("UPDATE persist_checkpoint SET resync_requested = 1");
    caught_up(&node, &p, Duration::from_secs(20));
    assert!(!p.is_halted());
    assert_equal(&db, &engine);

    // A hand-deleted order is refused too, not guessed around.
    db.exec("DELETE FROM orders WHERE status = 'pending_payment' LIMIT 1");
    let r = engine.call(Request::Buy {
        user_id: 901,
        activity_id: a.id,
        quantity: 1,
        idempotency_key: 0,
        buy_token_ok: false,
    });
    assert!(matches!(r, Response::Order(_)), "{r:?}");
    // Cancel every pending order: one of them is missing in MySQL.
    let pending: Vec<(u64, seckill_proto::OrderId)> = engine
        .inspect(|s| {
            s.orders
                .values()
                .filter(|o| o.status == OrderStatus::PendingPayment)
                .map(|o| (o.user_id, o.id))
                .collect::<Vec<_>>()
        })
        .concat();
    for (user_id, order_id) in pending {
        engine.call(Request::Cancel { user_id, order_id });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.is_halted() {
        assert!(Instant::now() < deadline, "never halted: {:?}", p.last_error());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(p.last_error().expect("error").contains("no such order"), "{:?}", p.last_error());
    p.request_resync();
    in_sync(&db, &node, &p, Duration::from_secs(20));
    stop(p, node);
}

// The WAL below MySQL's checkpoint is gone (the engine ran without a
// persister and snapshots let segments go): the persister rebuilds MySQL
// from snapshot + WAL and continues.
#[test]
fn a_truncated_wal_is_resynced_from_engine_state() {
    let Some(db) = TestDb::create("a_truncated_wal_is_resynced_from_engine_state") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open_node_with(dir.path(), Durability::None, 4096);
    let engine = node.engine.clone();
    let a = engine.create_activity(spec("sale", 1000, 1, 1800)).expect("a");
    load(&engine, a.id, 1..301, 2);
    node.wal.snapshot().expect("snapshot");
    load(&engine, a.id, 301..601, 2);
    node.wal.snapshot().expect("snapshot");
    load(&engine, a.id, 601..901, 2);
    engine.sync().expect("sync");
    let first_segment = std::fs::read_dir(dir.path().join("wal"))
        .expect("wal dir")
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".wal")?.parse::<u64>().ok())
        .min()
        .expect("segments");
    assert!(first_segment > 1, "old segments were deleted");

    let p = spawn(&node, fast_config(&db.url));
    in_sync(&db, &node, &p, Duration::from_secs(20));
    assert!(db.scalar("SELECT COUNT(*) FROM stock_log WHERE reason = 'resync'") >= 1);
    load(&engine, a.id, 901..1001, 2);
    settled(&db, &node, &p);
    stop(p, node);
}

// Warmup: products and activities prepared in SQL come into the engine
// with their ids; the persister then owns the rows without doubling stock.
#[test]
fn warmup_loads_prepared_rows_with_their_ids() {
    let Some((db, _dir, node)) = setup("warmup_loads_prepared_rows_with_their_ids", Durability::None) else { return };
    let engine = node.engine.clone();
    let p = spawn(&node, fast_config(&db.url));
    let first = engine.create_activity(spec("made by admin", 10, 1, 1800)).expect("a");
    assert_eq!(first.id, 1);
    caught_up(&node, &p, Duration::from_secs(20));

    db.exec("INSERT INTO products (id, name, description, price_cents) VALUES (4, 'tv', 'a tv', 150000)");
    db.exec(
        "INSERT INTO activities (id, product_id, title, price_cents, total_stock, remaining, starts_at, ends_at, \
         per_user_limit) VALUES \
         (1, 0, 'clash: id taken', 1, 5, 5, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3) + INTERVAL 1 HOUR, 1) \
         ON DUPLICATE KEY UPDATE title = title",
    );
    db.exec(
        "INSERT INTO activities (id, product_id, title, price_cents, total_stock, remaining, starts_at, ends_at, \
         per_user_limit, status) VALUES \
         (5, 4, 'tv sale', 99900, 30, 30, UTC_TIMESTAMP(3) - INTERVAL 1 MINUTE, UTC_TIMESTAMP(3) + INTERVAL 1 HOUR, 1, 'active'), \
         (8, 0, 'later sale', 500, 7, 0, UTC_TIMESTAMP(3) + INTERVAL 1 DAY, UTC_TIMESTAMP(3) + INTERVAL 2 DAY, 2, 'paused')",
    );
    db.exec("INSERT INTO quotas (activity_id, user_id, user_limit) VALUES (5, 42, 3)");

    // Through the admin socket's dispatcher, as `seckill admin warmup` does.
    let ctx = seckill_server::admin::AdminCtx {
        engine: engine.clone(),
        wal_status: node.wal.status.clone(),
        checkpoints: node.wal.checkpoints.clone(),
        snapshotter: node.wal.snapshotter(),
        on_shutdown: Arc::new(|| {}),
        warmup: Some(mysql::warmup_hook(db.url.clone(), engine.clone())),
        verify: None,
        extra_stats: vec![("persister", p.stats_hook())],
    };
    let (answer, _) = seckill_server::admin::handle_line(&ctx, r#"{"cmd":"warmup"}"#);
    assert_eq!(answer["ok"], true, "{answer}");
    let report = &answer["result"];
    let (stats, _) = seckill_server::admin::handle_line(&ctx, r#"{"cmd":"stats"}"#);
    assert_eq!(stats["result"]["persister"]["halted"], false, "{stats}");
    assert!(stats["result"]["persister"]["lag_records"].is_u64(), "{stats}");
    assert_eq!(report["products_created"], serde_json::json!([4]), "{report}");
    assert_eq!(report["activities_created"], serde_json::json!([5, 8]), "{report}");
    assert_eq!(report["quotas_set"], 1, "{report}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    let tv = engine.activity(5).expect("activity 5");
    assert_eq!((tv.total_stock, tv.product_id, tv.product_name.as_str()), (30, 4, "tv"));
    assert_eq!(engine.activity(8).expect("activity 8").status, seckill_proto::ActivityStatus::Paused);
    let r =
        engine.call(Request::Buy { user_id: 42, activity_id: 5, quantity: 3, idempotency_key: 0, buy_token_ok: false });
    assert!(matches!(r, Response::Order(_)), "the quota came along: {r:?}");
    assert_eq!(engine.create_activity(spec("next", 1, 1, 1800)).expect("next").id, 9, "ids go on from the largest");

    in_sync(&db, &node, &p, Duration::from_secs(20));
    assert_eq!(db.scalar("SELECT total_stock FROM activities WHERE id = 5"), 30, "not doubled");
    assert_eq!(db.scalar("SELECT remaining FROM activities WHERE id = 5"), 27);
    let again = rt().block_on(mysql::warmup(&db.url, &engine)).expect("warmup again");
    assert!(again.activities_created.is_empty() && again.products_created.is_empty(), "{again:?}");
    stop(p, node);
}

// How fast a backlog drains into MySQL (printed; the assertion is loose).
#[test]
fn backlog_drain_rate() {
    let Some((db, _dir, node)) = setup("backlog_drain_rate", Durability::None) else { return };
    let engine = node.engine.clone();
    let a = engine.create_activity(spec("sale", 40_000, 1, 1800)).expect("a");
    load(&engine, a.id, 1..20_001, 4);
    engine.sync().expect("sync");
    let backlog = durable(&node);
    let t0 = Instant::now();
    let p = spawn(&node, PersistConfig::new(db.url.clone()));
    caught_up(&node, &p, Duration::from_secs(40));
    let took = t0.elapsed();
    eprintln!(
        "backlog: {backlog} records applied to MySQL in {took:?} = {:.0} records/s (batches of up to 5000)",
        backlog as f64 / took.as_secs_f64()
    );
    assert_equal(&db, &engine);
    stop(p, node);
}

/// Found by the chaos harness: a kill -9 while the first migration ran left
/// it marked unfinished, and every later start refused to go on. MySQL
/// cannot roll DDL back, so `migrate` re-runs a migration it finds dirty
/// (they are written to be run twice).
#[test]
fn an_interrupted_migration_is_run_again() {
    let Some(db) = TestDb::create("an_interrupted_migration_is_run_again") else { return };
    db.exec("UPDATE _sqlx_migrations SET success = 0");
    db.exec("DROP TABLE payment_refusals");
    rt().block_on(mysql::migrate(&db.url)).expect("a dirty migration is re-run, not a dead end");
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = 1") as usize,
        mysql::MIGRATOR.iter().count()
    );
    assert_eq!(db.scalar("SELECT COUNT(*) FROM purchases"), 0, "the view is still there");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM payment_refusals"), 0, "the dropped table is back");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM persist_checkpoint"), 1, "INSERT IGNORE kept one row");
}

/// A DATETIME(3) literal of Unix ms, whatever the session's time zone.
fn dt(ms: u64) -> String {
    format!("DATE_ADD('1970-01-01', INTERVAL {} MICROSECOND)", ms * 1000)
}

/// Writes the engine's state as the persister of migration 0001 did: three
/// rows per order (orders, purchases upserted, one stock_log row per
/// change), purchases rows left at 0 after a cancel, and the checkpoint.
fn write_as_0001(db: &TestDb, node: &Node) {
    let engine = &node.engine;
    for p in engine.products() {
        db.exec(&format!(
            "INSERT INTO products (id, name, description, image_url, price_cents, in_engine) \
             VALUES ({}, '{}', '{}', '{}', {}, 1)",
            p.id, p.name, p.description, p.image_url, p.price_cents
        ));
    }
    type Part = (Vec<seckill_engine::Order>, Vec<(seckill_engine::Activity, u64, u64)>, Vec<(u64, u64, u32)>);
    let parts: Vec<Part> = engine.inspect(|st: &seckill_engine::ShardState| {
        let orders = st.orders.values().copied().collect();
        let acts = st.slots.values().map(|s| ((*s.activity).clone(), s.pool.added(), s.pool.remaining())).collect();
        let quotas =
            st.slots.iter().flat_map(|(a, s)| s.quotas.iter().map(move |(u, l)| (*a, *u, *l))).collect::<Vec<_>>();
        (orders, acts, quotas)
    });
    let mut lsn = 0u64;
    for (a, added, remaining) in &parts[0].1 {
        db.exec(&format!(
            "INSERT INTO activities (id, product_id, product_name, title, price_cents, total_stock, remaining, \
             starts_at, ends_at, per_user_limit, payment_timeout_s, require_buy_token, gate_factor, status, \
             in_engine, updated_lsn) VALUES ({}, {}, '{}', '{}', {}, {added}, {remaining}, {}, {}, {}, {}, {}, {}, \
             '{}', 1, 1)",
            a.id,
            a.product_id,
            a.product_name,
            a.title,
            a.price_cents,
            dt(a.terms.starts_at_ms),
            dt(a.terms.ends_at_ms),
            a.terms.per_user_limit,
            a.terms.payment_timeout_s,
            u8::from(a.terms.require_buy_token),
            a.terms.gate_factor,
            a.status.as_str()
        ));
        lsn += 1;
        db.exec(&format!(
            "INSERT INTO stock_log (lsn, activity_id, delta, reason, order_id, at) \
             VALUES ({lsn}, {}, {added}, 'stock.add', NULL, {})",
            a.id,
            dt(now_ms())
        ));
    }
    let mut purchases: std::collections::BTreeMap<(u64, u64), i64> = Default::default();
    for o in parts.iter().flat_map(|p| p.0.iter()) {
        db.exec(&format!(
            "INSERT INTO orders (order_id, user_id, activity_id, quantity, amount_cents, status, created_at, \
             pay_before, paid_txn, idempotency_key, updated_lsn, updated_at) \
             VALUES ('{}', {}, {}, {}, {}, '{}', {}, {}, {}, {}, 1, {})",
            o.id,
            o.user_id,
            o.activity_id,
            o.quantity,
            o.amount_cents,
            o.status.as_str(),
            dt(o.created_at_ms),
            dt(o.pay_before_ms),
            o.paid_txn,
            o.idempotency_key,
            dt(o.created_at_ms)
        ));
        let q = i64::from(o.quantity);
        lsn += 1;
        db.exec(&format!(
            "INSERT INTO stock_log (lsn, activity_id, delta, reason, order_id, at) VALUES ({lsn}, {}, {}, 'order', '{}', {})",
            o.activity_id,
            -q,
            o.id,
            dt(o.created_at_ms)
        ));
        let held = if o.status.holds_stock() {
            q
        } else {
            lsn += 1;
            db.exec(&format!(
                "INSERT INTO stock_log (lsn, activity_id, delta, reason, order_id, at) \
                 VALUES ({lsn}, {}, {q}, '{}', '{}', {})",
                o.activity_id,
                o.status.as_str(),
                o.id,
                dt(o.created_at_ms)
            ));
            0
        };
        *purchases.entry((o.user_id, o.activity_id)).or_default() += held;
    }
    for ((user, activity), n) in purchases {
        db.exec(&format!("INSERT INTO purchases (user_id, activity_id, `count`) VALUES ({user}, {activity}, {n})"));
    }
    for (a, u, l) in parts.iter().flat_map(|p| p.2.iter()) {
        db.exec(&format!(
            "INSERT INTO quotas (activity_id, user_id, user_limit, updated_lsn) VALUES ({a}, {u}, {l}, 1)"
        ));
    }
    db.exec(&format!("UPDATE persist_checkpoint SET lsn = {} WHERE id = 1", durable(node)));
}

// Migration 0002 upgrades a database the 0001 persister wrote (orders with
// two secondary indexes, a `purchases` table, one stock_log row per change)
// in place: verify finds 0 differences, the stock log still adds up, and
// the persister goes on from the old checkpoint with the new rows.
#[test]
fn migration_0002_upgrades_a_database_holding_orders() {
    let Some(db) = TestDb::create_with("migration_0002_upgrades_a_database_holding_orders", 1) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open_node(dir.path(), Durability::None);
    let engine = node.engine.clone();
    let product = engine.create_product("tv".into(), "a tv".into(), "http://img/tv".into(), 50_000).expect("product");
    let a = engine
        .create_activity(ActivitySpec { product_id: Some(product.id), ..spec("tv sale", 700, 2, 1800) })
        .expect("a");
    engine.call(Request::SetQuota { activity_id: a.id, user_id: 3, limit: 4 });
    let orders = load(&engine, a.id, 1..1001, 4);
    assert!(orders.len() >= 700, "{}", orders.len());
    engine.sync().expect("sync");
    write_as_0001(&db, &node);
    let idx = "SELECT COUNT(DISTINCT index_name) FROM information_schema.statistics WHERE table_schema = DATABASE() \
               AND table_name = 'orders' AND index_name = 'orders_by_activity'";
    assert_eq!(db.scalar(idx), 1, "the old schema");
    let pre = db.scalar("SELECT SUM(`count`) FROM purchases");
    assert!(pre > 0);
    assert!(db.scalar("SELECT COUNT(*) FROM purchases WHERE `count` = 0") > 0, "0001 left zero rows");
    assert_equal(&db, &engine);

    rt().block_on(mysql::migrate(&db.url)).expect("migrate to the current schema");
    assert_eq!(db.scalar(idx), 0, "orders_by_activity dropped");
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() \
             AND table_name = 'purchases' AND table_type = 'VIEW'"
        ),
        1,
        "purchases is a view"
    );
    assert_eq!(db.scalar("SELECT SUM(`count`) FROM purchases"), pre, "the same units held");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM stock_log WHERE records <> 1 OR first_lsn <> lsn"), 0);
    assert_equal(&db, &engine);
    assert_stock_log_adds_up(&db);
    rt().block_on(mysql::migrate(&db.url)).expect("migrating again changes nothing");

    // The persister goes on from the checkpoint 0001 left.
    let p = spawn(&node, fast_config(&db.url));
    engine.add_stock(a.id, 300).expect("stock.add");
    assert!(!load(&engine, a.id, 1001..1601, 4).is_empty());
    caught_up(&node, &p, Duration::from_secs(30));
    assert_eq!(p.last_error(), None);
    assert_equal(&db, &engine);
    assert_stock_log_adds_up(&db);
    stop(p, node);
}

/// (oldest LSN the WAL still has, bytes of WAL on disk).
fn wal_extent(dir: &Path) -> (u64, u64) {
    let segs = seckill_engine::wal::segment::list(&dir.join("wal")).expect("list segments");
    let bytes = segs.iter().map(|s| std::fs::metadata(&s.path).map_or(0, |m| m.len())).sum();
    (segs.first().map_or(0, |s| s.first_lsn), bytes)
}

// The persister's WAL budget: with MySQL away (the proxy cut) while more
// than the budget is written, the persister lets the WAL go (snapshots then
// delete it), so an outage cannot fill the disk; when MySQL is back it
// rebuilds MySQL from snapshot + WAL and verify finds 0 differences.
#[test]
fn a_long_outage_past_the_wal_budget_keeps_the_wal_bounded() {
    let Some(db) = TestDb::create("a_long_outage_past_the_wal_budget_keeps_the_wal_bounded") else { return };
    let proxy = TcpProxy::start(&server_addr());
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open_node_with(dir.path(), Durability::None, 16 * 1024);
    let engine = node.engine.clone();
    let a = engine.create_activity(spec("sale", 20_000, 1, 1800)).expect("a");
    let budget = 2_000;
    let p = spawn(&node, PersistConfig { wal_budget_records: budget, ..fast_config(&db.url_via(proxy.port)) });
    load(&engine, a.id, 1..501, 4);
    caught_up(&node, &p, Duration::from_secs(20));
    assert!(!p.is_over_budget());

    proxy.cut();
    let at_cut = p.applied_lsn();
    for round in 0..4u64 {
        let from = 501 + round * 2_000;
        load(&engine, a.id, from..from + 2_000, 4);
        engine.sync().expect("sync");
        node.wal.snapshot().expect("snapshot");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !p.is_over_budget() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(p.is_over_budget(), "lag {} > budget {budget}", p.lag_records());
    assert_eq!(node.wal.checkpoints.get(mysql::CHECKPOINT_NAME), None, "holds no WAL past the budget");
    assert!(p.last_error().is_some() && !p.is_halted());
    // More writes rotate segments, which deletes those nobody holds.
    load(&engine, a.id, 8_501..9_001, 4);
    engine.sync().expect("sync");
    let (oldest, bytes) = wal_extent(dir.path());
    let behind = durable(&node) - at_cut;
    eprintln!("budget: MySQL {behind} records behind; WAL from LSN {oldest}, {bytes} bytes on disk");
    assert!(behind > 4 * budget, "the outage wrote well past the budget");
    assert!(oldest > at_cut + 1, "the WAL MySQL lacks was let go (oldest LSN {oldest}, MySQL at {at_cut})");
    assert!(
        durable(&node) - oldest < behind / 2,
        "the WAL kept is what the snapshots need, not what MySQL lacks ({} of {behind} records)",
        durable(&node) - oldest
    );

    proxy.restore();
    caught_up(&node, &p, Duration::from_secs(30));
    assert!(!p.is_over_budget());
    assert_eq!(node.wal.checkpoints.get(mysql::CHECKPOINT_NAME), Some(p.applied_lsn()), "holds WAL again");
    assert!(p.stats().resyncs >= 1, "{:?}", p.stats());
    assert_equal(&db, &engine);
    assert_stock_log_adds_up(&db);
    load(&engine, a.id, 9_001..9_501, 4);
    settled(&db, &node, &p);
    stop(p, node);
}
