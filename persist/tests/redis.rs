//! The Redis mirror against a real Redis (`SECKILL_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`). Every test writes under its own key prefix
//! and deletes it afterwards. With `SECKILL_REQUIRE_SERVICES` set an unreachable Redis fails the
//! run; elsewhere these tests say loudly that they were skipped.

use redis::Commands;
use seckill_engine::node::{Node, NodeConfig};
use seckill_engine::replica::Replica;
use seckill_engine::wal::tail::Tailer;
use seckill_engine::wal::{self, Durability};
use seckill_engine::{ActivitySpec, EngineConfig, Event, SystemClock};
use seckill_persist::redis::{self as mirror, MirrorConfig, MirrorHandle, ReplicaSource};
use seckill_proto::json::rfc3339;
use seckill_proto::{OrderId, OrderStatus, OrderView, Request, Response};
use seckill_testkit::{now_ms, wait_until, TcpProxy};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;

// ---- Redis, prefixes --------------------------------------------------------

fn redis_url() -> String {
    std::env::var("SECKILL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A connection to the test Redis, or `None` (skip) when it is not there
/// outside CI. In CI a missing Redis is a failure.
fn redis_or_skip() -> Option<redis::Connection> {
    let url = redis_url();
    let conn = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).map(|_| c));
    match conn {
        Ok(c) => Some(c),
        Err(e) if std::env::var("SECKILL_REQUIRE_SERVICES").is_ok_and(|v| !v.is_empty() && v != "0") => {
            panic!(
                "Redis at {url} is unreachable and SECKILL_REQUIRE_SERVICES is set ({e}); scripts/services starts it"
            )
        }
        Err(e) => {
            // The test harness names each test's thread after the test.
            let test = std::thread::current().name().unwrap_or("a test").to_owned();
            eprintln!("\n!!!!!!!! SKIPPED {test}: no Redis at {url} ({e}) !!!!!!!!\n");
            None
        }
    }
}

/// A key prefix of one test, and whether the mirrors it starts write
/// order hashes (`MirrorConfig::order_hashes`, off unless set); its keys
/// are deleted on drop.
struct Prefix(String, std::cell::Cell<bool>);

impl Prefix {
    fn new(test: &str) -> Self {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_nanos();
        Prefix(format!("seckill-test:{test}:{}:{nanos}:", std::process::id()), Default::default())
    }

    fn hashes(&self) -> bool {
        self.1.get()
    }

    fn keys(&self, conn: &mut redis::Connection) -> Vec<String> {
        let pattern = format!("{}*", self.0);
        let mut out = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query(conn)
                .expect("redis answers");
            out.extend(keys);
            if next == 0 {
                return out;
            }
            cursor = next;
        }
    }

    fn delete_all(&self, conn: &mut redis::Connection) {
        for chunk in self.keys(conn).chunks(500) {
            let _: () = redis::cmd("DEL").arg(chunk).query(conn).expect("redis answers");
        }
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        if let Ok(mut c) = redis::Client::open(redis_url().as_str()).and_then(|c| c.get_connection()) {
            self.delete_all(&mut c);
        }
    }
}

// ---- an engine ---------------------------------------------------------------

/// A test's Redis connection, key prefix, data dir and node (WAL segments
/// of `segment_bytes_max`); `None` (skip) without Redis.
fn setup(prefix: &str, segment_bytes_max: u64) -> Option<(redis::Connection, Prefix, TempDir, Arc<Node>)> {
    let conn = redis_or_skip()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Arc::new(open_node(dir.path(), segment_bytes_max));
    Some((conn, Prefix::new(prefix), dir, node))
}

fn open_node(dir: &std::path::Path, segment_bytes_max: u64) -> Node {
    let mut cfg = NodeConfig::new(dir);
    cfg.durability = Durability::None;
    cfg.engine = EngineConfig { shards: 2, queue_capacity: 4096, ..EngineConfig::default() };
    cfg.segment_bytes_max = segment_bytes_max;
    Node::open(cfg, Arc::new(SystemClock)).expect("node opens")
}

fn create_activity(node: &Node, stock: u64, per_user_limit: u32, payment_timeout_s: u32) -> u64 {
    let now = now_ms();
    node.engine
        .create_activity(ActivitySpec {
            title: format!("sale of {stock}"),
            product_id: None,
            price_cents: 990,
            stock,
            terms: seckill_proto::SaleTerms {
                starts_at_ms: now - 1000,
                ends_at_ms: now + 3_600_000,
                per_user_limit,
                payment_timeout_s,
                require_buy_token: false,
                gate_factor: 5,
            },
        })
        .expect("activity created")
        .id
}

fn mirror_config(prefix: &Prefix, url: &str) -> MirrorConfig {
    let mut cfg = MirrorConfig::new(url);
    cfg.prefix = prefix.0.clone();
    cfg.order_hashes = prefix.hashes();
    cfg.batch_ms = 1;
    cfg.check_ms = 200;
    cfg.op_timeout_ms = 1000;
    cfg.backoff_max_ms = 300;
    cfg.stream_maxlen = 100_000;
    cfg
}

fn spawn_mirror(node: &Node, cfg: MirrorConfig) -> MirrorHandle {
    mirror::spawn(
        cfg,
        node.data_dir.clone(),
        node.wal.status.clone(),
        node.wal.checkpoints.clone(),
        ReplicaSource::Snapshots,
    )
}

fn durable(node: &Node) -> u64 {
    node.wal.status.durable_lsn.load(Ordering::Acquire)
}

fn wait_caught_up(node: &Node, m: &MirrorHandle, within: Duration) {
    node.engine.sync().expect("sync");
    let target = durable(node);
    wait_until(&format!("the mirror to reach LSN {target} ({:?})", m.stats()), within, || {
        m.applied_lsn() >= target && !m.stats().resync_pending
    });
}

fn buy(node: &Node, user_id: u64, activity_id: u64, quantity: u32) -> Option<OrderView> {
    let req = Request::Buy { user_id, activity_id, quantity, idempotency_key: 0, buy_token_ok: false };
    match node.engine.call(req) {
        Response::Order(v) => Some(v),
        _ => None,
    }
}

/// Buys for `users` and then moves the orders through every status:
/// cancel, pay, pay + ship, pay + refund, or leave them pending.
fn shop(node: &Node, activity_id: u64, users: std::ops::Range<u64>, quantity: u32) -> Vec<OrderView> {
    let mut orders = Vec::new();
    for user in users {
        let Some(o) = buy(node, user, activity_id, 1 + (user % quantity as u64) as u32) else { continue };
        let pay = Request::Pay { order_id: o.order_id, amount_cents: o.amount_cents, txn: 7_000 + user };
        match user % 5 {
            0 => drop(node.engine.call(Request::Cancel { user_id: user, order_id: o.order_id })),
            1 => drop(node.engine.call(pay)),
            2 => {
                node.engine.call(pay);
                node.engine.call(Request::Ship { order_id: o.order_id });
            }
            3 => {
                node.engine.call(pay);
                node.engine.call(Request::Refund { user_id: user, order_id: o.order_id });
            }
            _ => {}
        }
        orders.push(o);
    }
    orders
}

/// Many buyers on several threads at once.
fn shop_in_parallel(node: &Arc<Node>, activity_id: u64, threads: u64, per_thread: u64, first_user: u64) {
    std::thread::scope(|s| {
        for t in 0..threads {
            let node = node.clone();
            s.spawn(move || {
                let from = first_user + t * per_thread;
                shop(&node, activity_id, from..from + per_thread, 3);
            });
        }
    });
}

/// The engine's state as its log has it (snapshot + WAL).
fn engine_state(node: &Node) -> Replica {
    node.engine.sync().expect("sync");
    let durable = node.wal.status.durable_lsn.load(Ordering::Acquire);
    let (wal_dir, snap_dir) = (node.data_dir.join("wal"), node.data_dir.join("snapshots"));
    wal::rebuild(&*wal::os_fs(), &wal_dir, &snap_dir, None, durable, |_| {}).expect("the log rebuilds")
}

/// An order event of the log: its LSN and the fields of its stream entry
/// but `prev`.
type Logged = (u64, BTreeMap<String, String>);

/// Every order event of the log.
fn logged_order_events(node: &Node) -> Vec<Logged> {
    node.engine.sync().expect("sync");
    let mut tail = Tailer::new(&node.data_dir, node.wal.status.clone(), 0);
    let mut out = Vec::new();
    let mut events = Vec::new();
    // Quantity and amount of each order, for the entries of its changes.
    let mut orders = HashMap::new();
    while tail.poll(10_000, &mut out).expect("the whole WAL is there") > 0 {
        for (lsn, ev) in out.drain(..) {
            let (id, user, activity, kind, at_ms, pay_before) = match ev {
                Event::OrderCreated(o) => {
                    orders.insert(o.id, (o.quantity, o.amount_cents));
                    (o.id, o.user_id, o.activity_id, "created", o.created_at_ms, Some(o.pay_before_ms))
                }
                Event::OrderStatusChanged { order_id, user_id, activity_id, status, at_ms, .. } => {
                    (order_id, user_id, activity_id, status.as_str(), at_ms, None)
                }
                _ => continue,
            };
            let (quantity, amount) = orders[&id];
            let pay_before = pay_before.map(|t| ("pay_before_ms", t.to_string()));
            let fields = [
                ("type", kind.to_string()),
                ("order_id", id.to_string()),
                ("user_id", user.to_string()),
                ("activity_id", activity.to_string()),
                ("quantity", quantity.to_string()),
                ("amount_cents", amount.to_string()),
                ("at_ms", at_ms.to_string()),
            ];
            events.push((lsn, fields.into_iter().chain(pay_before).map(|(k, v)| (k.to_string(), v)).collect()));
        }
    }
    events
}

// ---- comparing -----------------------------------------------------------------

fn order_view(node: &Node, order_id: OrderId) -> OrderView {
    match node.engine.call(Request::GetOrder { user_id: None, order_id }) {
        Response::Order(v) => v,
        other => panic!("order {order_id}: {other:?}"),
    }
}

/// Redis equals the engine: every order hash (none without order hashes),
/// every activity's stock and configuration, every buyer's units, nothing
/// extra, and the LSN.
fn assert_mirror_equals_engine(node: &Node, conn: &mut redis::Connection, prefix: &Prefix) {
    let truth = engine_state(node);
    let p = &prefix.0;
    let lsn: Option<u64> = conn.get(format!("{p}mirror:lsn")).expect("redis answers");
    assert_eq!(lsn, Some(truth.lsn), "mirror:lsn");

    for (id, o) in truth.orders.iter().filter(|_| prefix.hashes()) {
        let view = order_view(node, *id);
        assert_eq!(view, o.view(), "the engine answers what its log says");
        let got: HashMap<String, String> = conn.hgetall(format!("{p}order:{id}")).expect("redis answers");
        let want: HashMap<String, String> = [
            ("user_id", view.user_id.to_string()),
            ("activity_id", view.activity_id.to_string()),
            ("quantity", view.quantity.to_string()),
            ("amount_cents", view.amount_cents.to_string()),
            ("status", view.status.as_str().to_string()),
            ("created_at_ms", view.created_at_ms.to_string()),
            ("pay_before_ms", view.pay_before_ms.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(got, want, "order {id}");
    }

    let mut held: BTreeMap<u64, BTreeMap<String, String>> = BTreeMap::new();
    for o in truth.orders.values().filter(|o| o.status.holds_stock()) {
        let n = held.entry(o.activity_id).or_default().entry(o.user_id.to_string()).or_insert_with(|| "0".into());
        *n = (n.parse::<u64>().expect("a number") + o.quantity as u64).to_string();
    }
    for id in truth.activities.keys() {
        let view = node.engine.activity(*id).expect("activity");
        let got: HashMap<String, String> = conn.hgetall(format!("{p}activity:{id}")).expect("redis answers");
        let field = |k: &str| got.get(k).cloned().unwrap_or_else(|| panic!("activity {id} has no `{k}`: {got:?}"));
        assert_eq!(field("remaining"), view.remaining.to_string(), "activity {id} remaining");
        assert_eq!(field("total_stock"), view.total_stock.to_string(), "activity {id} total_stock");
        assert_eq!(field("sold_out"), u8::from(view.remaining == 0).to_string());
        assert_eq!(field("status"), view.status.as_str());
        assert_eq!(field("phase"), view.phase.as_str());
        assert_eq!(field("title"), view.title);
        assert_eq!(field("per_user_limit"), view.terms.per_user_limit.to_string());
        assert_eq!(field("starts_at"), rfc3339(view.terms.starts_at_ms));
        let buyers: BTreeMap<String, String> = conn.hgetall(format!("{p}purchased:{id}")).expect("redis answers");
        assert_eq!(buyers, held.remove(id).unwrap_or_default(), "purchased:{id}");
    }

    let keys = prefix.keys(conn);
    let count = |kind: &str| keys.iter().filter(|k| k.starts_with(&format!("{p}{kind}:"))).count();
    let orders = if prefix.hashes() { truth.orders.len() } else { 0 };
    assert_eq!(count("order"), orders, "no order keys beyond the engine's (none without order hashes)");
    assert_eq!(count("activity"), truth.activities.len());
    assert!(keys.iter().all(|k| !k.contains(":scratch:")), "no scratch keys left");
}

/// Entries of the stream, oldest first: (id, fields).
type Entry = (String, HashMap<String, String>);

fn parse_entries(v: &redis::Value) -> Vec<Entry> {
    let mut out = Vec::new();
    let redis::Value::Array(entries) = v else { return out };
    for e in entries {
        let redis::Value::Array(parts) = e else { continue };
        let id: String = redis::from_redis_value_ref(&parts[0]).expect("redis value of the expected type");
        let kv: Vec<String> = redis::from_redis_value_ref(&parts[1]).expect("redis value of the expected type");
        out.push((id, kv.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect()));
    }
    out
}

fn stream(conn: &mut redis::Connection, prefix: &Prefix) -> Vec<Entry> {
    let v: redis::Value =
        redis::cmd("XRANGE").arg(format!("{}events", prefix.0)).arg("-").arg("+").query(conn).expect("redis answers");
    parse_entries(&v)
}

/// Once the mirror `m` has caught up with `node`, Redis equals the engine
/// and its stream holds every order event of the log.
fn assert_caught_up_and_equal(node: &Node, m: &MirrorHandle, conn: &mut redis::Connection, prefix: &Prefix) {
    wait_caught_up(node, m, Duration::from_secs(10));
    assert_mirror_equals_engine(node, conn, prefix);
    assert_stream_matches_log(&stream(conn, prefix), &logged_order_events(node));
}

/// The order events of `entries` are exactly `logged` (each once, in LSN
/// order, with exactly the fields of docs/REDIS.md), ids are `<lsn>-0`,
/// and every `prev` names the entry before.
fn assert_stream_matches_log(entries: &[Entry], logged: &[Logged]) {
    let events: Vec<Logged> = entries
        .iter()
        .filter(|(_, f)| f["type"] != "resync")
        .map(|(id, f)| {
            let lsn = keys_lsn(id);
            assert_eq!(id, &format!("{lsn}-0"), "event ids are their LSN");
            let mut f: BTreeMap<String, String> = f.clone().into_iter().collect();
            assert!(f.remove("prev").is_some(), "entry {id} has a prev");
            (lsn, f)
        })
        .collect();
    assert_eq!(events.len(), logged.len(), "as many stream events as order events in the log");
    assert_eq!(events, logged);
    for pair in entries.windows(2) {
        assert_eq!(pair[1].1["prev"], pair[0].0, "prev of {} names the entry before it", pair[1].0);
    }
}

fn keys_lsn(id: &str) -> u64 {
    id.split('-').next().expect("an id").parse().expect("a numeric id")
}

/// CPU time in ns (schedstat) of the threads of process `pid` (`self`, or
/// a pid) whose name starts with `thread` ("" for all of them).
fn cpu_ns(pid: &str, thread: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    let mut total = 0;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(thread) {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        total += stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    total
}

// ---- a TCP proxy that can be cut --------------------------------------------

/// The test Redis's URL through the proxy, with its database number
/// (`SECKILL_TEST_REDIS_URL=redis://…/15` must reach db 15 here too).
fn proxy_url(proxy: &TcpProxy) -> String {
    let url = redis_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let db = rest.split_once('/').map_or("", |(_, db)| db);
    format!("redis://127.0.0.1:{}/{db}", proxy.port)
}

fn upstream_addr() -> String {
    let url = redis_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or("127.0.0.1:6379").to_string()
}

// ---- the tests -------------------------------------------------------------------

#[test]
fn mirror_equals_engine_after_a_load() {
    let Some((mut conn, prefix, _dir, node)) = setup("equal", 64 << 20) else { return };
    prefix.1.set(true); // with order hashes; the other tests run without
    let m = spawn_mirror(&node, mirror_config(&prefix, &redis_url()));
    node.engine.create_product("phone".into(), "a phone".into(), "https://img/1".into(), 1999).unwrap();
    let quick = create_activity(&node, 300, 3, 1); // pending orders expire after 1 s
    let slow = create_activity(&node, 60, 1, 1800);
    assert!(matches!(node.engine.call(Request::SetQuota { activity_id: slow, user_id: 5, limit: 2 }), Response::Done));
    shop_in_parallel(&node, quick, 4, 60, 1);
    shop_in_parallel(&node, slow, 2, 50, 1_000);
    node.engine.add_stock(slow, 10).unwrap();
    shop(&node, slow, 2_000..2_020, 1);
    // Let the payment deadlines of `quick` pass: its pending orders expire.
    std::thread::sleep(Duration::from_millis(1_300));
    wait_caught_up(&node, &m, Duration::from_secs(10));
    let truth = engine_state(&node);
    assert!(truth.orders.values().any(|o| o.status == OrderStatus::Expired), "some orders expired");
    assert!(truth.orders.values().any(|o| o.status == OrderStatus::Shipped));
    assert_mirror_equals_engine(&node, &mut conn, &prefix);
    assert_eq!(m.lag_records(), 0);
    assert_eq!(m.last_error(), None);
    assert_eq!(m.resyncs(), 1, "one resync, at start");
    let batches = m.stats().batches;
    assert!(batches >= 1 && batches <= truth.lsn, "batches written are counted: {batches}");
    let product: HashMap<String, String> = conn.hgetall(format!("{}product:1", prefix.0)).unwrap();
    assert_eq!(product.get("name").map(String::as_str), Some("phone"));
    assert_stream_matches_log(&stream(&mut conn, &prefix), &logged_order_events(&node));
    assert!(node.wal.checkpoints.get("mirror") == Some(m.applied_lsn()), "checkpoint at what Redis has");
    m.shutdown(mirror::SHUTDOWN_DRAIN);
    assert_eq!(node.wal.checkpoints.get("mirror"), None, "a stopped mirror holds no WAL");
}

#[test]
fn a_flushed_mirror_is_rebuilt_within_seconds() {
    let Some((mut conn, prefix, _dir, node)) = setup("flush", 64 << 20) else { return };
    let m = spawn_mirror(&node, mirror_config(&prefix, &redis_url()));
    let a = create_activity(&node, 200, 2, 1800);
    shop_in_parallel(&node, a, 2, 60, 1);
    wait_caught_up(&node, &m, Duration::from_secs(10));
    assert_mirror_equals_engine(&node, &mut conn, &prefix);

    // What FLUSHDB does to this mirror, without touching other tests' keys.
    prefix.delete_all(&mut conn);
    let t = Instant::now();
    wait_until("a resync after the keys were deleted", Duration::from_secs(5), || {
        m.resyncs() >= 2 && conn.exists::<_, bool>(format!("{}mirror:lsn", prefix.0)).unwrap()
    });
    eprintln!("rebuilt {:?} after the flush", t.elapsed());
    assert_mirror_equals_engine(&node, &mut conn, &prefix);
    // The WAL still has every record: the stream is whole again.
    let entries = stream(&mut conn, &prefix);
    let marker = &entries.last().expect("a resync marker").1;
    assert_eq!((marker["type"].as_str(), marker["gap"].as_str()), ("resync", "0"));
    assert_stream_matches_log(&entries, &logged_order_events(&node));

    // And it goes on from there.
    shop_in_parallel(&node, a, 2, 30, 500);
    assert_caught_up_and_equal(&node, &m, &mut conn, &prefix);
    m.shutdown(mirror::SHUTDOWN_DRAIN);
}

/// A flush that only the next batch can notice (the idle check is off):
/// the fence read inside its `MULTI/EXEC` must catch it.
#[test]
fn a_flush_between_batches_is_caught_by_the_next_batch() {
    let Some((mut conn, prefix, _dir, node)) = setup("fence", 64 << 20) else { return };
    let mut cfg = mirror_config(&prefix, &redis_url());
    cfg.check_ms = 600_000;
    let m = spawn_mirror(&node, cfg);
    let a = create_activity(&node, 200, 2, 1800);
    shop(&node, a, 1..40, 1);
    wait_caught_up(&node, &m, Duration::from_secs(10));

    prefix.delete_all(&mut conn);
    buy(&node, 1000, a, 1).expect("a buy");
    wait_until("a resync after the next batch found the keys gone", Duration::from_secs(5), || m.resyncs() >= 2);
    wait_caught_up(&node, &m, Duration::from_secs(10));
    assert_mirror_equals_engine(&node, &mut conn, &prefix);
    // That batch did not start a stream of its own (which the resync would
    // have taken as whole): the WAL has every event, so the stream does.
    assert_stream_matches_log(&stream(&mut conn, &prefix), &logged_order_events(&node));

    // The stream alone deleted: the next batch notices it (its entries are
    // not added to nothing) and the resync puts it back whole.
    let _: () = conn.del(format!("{}events", prefix.0)).unwrap();
    buy(&node, 1001, a, 1).expect("a buy");
    wait_until("a resync after the next batch found the stream gone", Duration::from_secs(5), || m.resyncs() >= 3);
    wait_caught_up(&node, &m, Duration::from_secs(10));
    assert_stream_matches_log(&stream(&mut conn, &prefix), &logged_order_events(&node));
    m.shutdown(mirror::SHUTDOWN_DRAIN);
}

// The mirror keeps no copy of the orders and reads none: a status change of
// an order written by an earlier batch is planned from its record alone
// (quantity, amount, status before), with or without order hashes. Order
// hashes are opt-in: without them the `created` entries carry every order,
// and switching them on or off at a start rewrites (or deletes) them.
#[test]
fn order_hashes_are_opt_in_and_older_orders_change_without_a_read() {
    let Some((mut conn, prefix, _dir, node)) = setup("hashes", 64 << 20) else { return };
    let a = create_activity(&node, 100, 3, 1800);
    let mut older = Vec::new();
    for (round, hashes) in [false, true, false].into_iter().enumerate() {
        prefix.1.set(hashes);
        let m = spawn_mirror(&node, mirror_config(&prefix, &redis_url()));
        let users = 10 * round as u64 + 1..10 * round as u64 + 11;
        let bought: Vec<OrderView> = users.filter_map(|u| buy(&node, u, a, 1 + (u % 3) as u32)).collect();
        wait_caught_up(&node, &m, Duration::from_secs(10));
        assert_eq!(m.resyncs(), 1, "one resync, at start");
        // Orders of earlier batches (and runs) change: cancel, pay, ship, refund.
        for o in bought.iter().chain(&older) {
            let (user, id) = (o.user_id, o.order_id);
            match node.engine.call(Request::GetOrder { user_id: None, order_id: id }) {
                Response::Order(v) if v.status == OrderStatus::PendingPayment && user % 2 == 0 => {
                    node.engine.call(Request::Cancel { user_id: user, order_id: id });
                }
                Response::Order(v) if v.status == OrderStatus::PendingPayment => {
                    node.engine.call(Request::Pay { order_id: id, amount_cents: o.amount_cents, txn: user });
                }
                Response::Order(v) if v.status == OrderStatus::Paid && user % 3 == 0 => {
                    node.engine.call(Request::Refund { user_id: user, order_id: id });
                }
                Response::Order(v) if v.status == OrderStatus::Paid => {
                    node.engine.call(Request::Ship { order_id: id });
                }
                _ => {}
            }
        }
        assert_caught_up_and_equal(&node, &m, &mut conn, &prefix);
        assert_eq!(m.resyncs(), 1, "planned from the records: no read, no resync");
        let hash_keys = prefix.keys(&mut conn).iter().filter(|k| k.starts_with(&format!("{}order:", prefix.0))).count();
        assert_eq!(hash_keys > 0, hashes, "order hashes only when asked for (run {round})");
        m.shutdown(mirror::SHUTDOWN_DRAIN);
        older.extend(bought);
    }
}

// Buyers whose units went up (every buy of a sale) get a plain HINCRBY in
// the transaction; only those whose units went down go through the script
// (which drops a buyer left with nothing). Watched with MONITOR.
#[test]
fn buyers_units_go_up_without_a_script() {
    use std::io::{Read, Write};
    let Some((mut conn, prefix, _dir, node)) = setup("hincrby", 64 << 20) else { return };
    let m = spawn_mirror(&node, mirror_config(&prefix, &redis_url()));
    let a = create_activity(&node, 100, 1, 1800);
    wait_caught_up(&node, &m, Duration::from_secs(10));
    // MONITOR shows every client's commands: read them on a thread of
    // their own while this test runs (other tests write meanwhile).
    let mut monitor = std::net::TcpStream::connect(upstream_addr()).expect("a second connection");
    monitor.write_all(b"MONITOR\r\n").unwrap();
    monitor.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let watching = Arc::new(AtomicBool::new(true));
    let reader = {
        let watching = watching.clone();
        std::thread::spawn(move || {
            let (mut seen, mut buf) = (Vec::new(), vec![0u8; 1 << 16]);
            while watching.load(Ordering::SeqCst) {
                match monitor.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                    Err(_) => {} // a timeout: look at the flag again
                }
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let bought: Vec<OrderView> = (1..=20).filter_map(|u| buy(&node, u, a, 1)).collect();
    assert_eq!(bought.len(), 20);
    wait_caught_up(&node, &m, Duration::from_secs(10));
    for o in &bought[..2] {
        node.engine.call(Request::Cancel { user_id: o.user_id, order_id: o.order_id });
    }
    wait_caught_up(&node, &m, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    watching.store(false, Ordering::SeqCst);
    let seen = reader.join().expect("the MONITOR reader");
    let seen = String::from_utf8_lossy(&seen);
    // Commands the mirror sent (not those its script ran: `[0 lua]`) on this
    // activity's buyers.
    let key = format!("\"{}purchased:{a}\"", prefix.0);
    let sent: Vec<&str> = seen.lines().filter(|l| l.contains(&key) && !l.contains(" lua]")).collect();
    let count = |cmd: &str| sent.iter().filter(|l| l.contains(&format!("] \"{cmd}\""))).count();
    assert_eq!(count("HINCRBY"), 20, "one HINCRBY per buy: {sent:#?}");
    let evals: Vec<&&str> = sent.iter().filter(|l| l.contains("] \"EVAL\"")).collect();
    assert!(matches!(evals.len(), 1 | 2), "the script only for the cancels: {sent:#?}");
    assert!(evals.iter().all(|l| l.trim_end().ends_with("\"-1\"")), "with their negative deltas only: {evals:#?}");
    assert_mirror_equals_engine(&node, &mut conn, &prefix);
    m.shutdown(mirror::SHUTDOWN_DRAIN);
}

#[test]
fn a_stream_consumer_sees_every_order_event_once_in_lsn_order() {
    let Some((_conn, prefix, _dir, node)) = setup("stream", 64 << 20) else { return };
    let m = spawn_mirror(&node, mirror_config(&prefix, &redis_url()));
    let a = create_activity(&node, 400, 3, 1800);

    // The consumer of docs/REDIS.md: XREAD BLOCK from the last id seen,
    // reconnecting now and then (as a restarted consumer would).
    let done = Arc::new(AtomicBool::new(false));
    let key = format!("{}events", prefix.0);
    let consumer = {
        let done = done.clone();
        std::thread::spawn(move || {
            let client = redis::Client::open(redis_url().as_str()).unwrap();
            let mut seen: Vec<Entry> = Vec::new();
            let mut last = "0".to_string();
            let mut idle = 0;
            while idle < 3 {
                let mut c = client.get_connection().unwrap();
                for _ in 0..5 {
                    let v: redis::Value = redis::cmd("XREAD")
                        .arg("COUNT")
                        .arg(37)
                        .arg("BLOCK")
                        .arg(100)
                        .arg("STREAMS")
                        .arg(&key)
                        .arg(&last)
                        .query(&mut c)
                        .unwrap();
                    let got = match &v {
                        redis::Value::Array(streams) => match streams.first() {
                            Some(redis::Value::Array(kv)) => parse_entries(&kv[1]),
                            _ => Vec::new(),
                        },
                        _ => Vec::new(),
                    };
                    if got.is_empty() && done.load(Ordering::SeqCst) {
                        idle += 1;
                    }
                    if let Some((id, _)) = got.last() {
                        last = id.clone();
                    }
                    seen.extend(got);
                }
            }
            seen
        })
    };
    shop_in_parallel(&node, a, 4, 50, 1);
    wait_caught_up(&node, &m, Duration::from_secs(10));
    done.store(true, Ordering::SeqCst);
    let seen = consumer.join().expect("consumer");
    let logged = logged_order_events(&node);
    assert!(logged.len() > 300, "a real load: {} events", logged.len());
    assert_stream_matches_log(&seen, &logged);
    m.shutdown(mirror::SHUTDOWN_DRAIN);
}

#[test]
fn a_redis_outage_leaves_the_engine_alone_and_the_mirror_catches_up() {
    let Some((mut conn, prefix, _dir, node)) = setup("outage", 64 << 20) else { return };
    let proxy = TcpProxy::start(&upstream_addr());
    let m = spawn_mirror(&node, mirror_config(&prefix, &proxy_url(&proxy)));
    let a = create_activity(&node, 1000, 3, 1800);
    shop(&node, a, 1..40, 3);
    wait_caught_up(&node, &m, Duration::from_secs(10));
    let before = m.applied_lsn();

    assert_eq!(mirror::probe(&proxy_url(&proxy), Duration::from_secs(1)), Ok(()));
    proxy.cut();
    assert!(mirror::probe(&proxy_url(&proxy), Duration::from_secs(1)).is_err());
    let t = Instant::now();
    let mut slowest = Duration::ZERO;
    for user in 100..400 {
        let t = Instant::now();
        assert!(buy(&node, user, a, 1).is_some(), "the engine sells while Redis is gone");
        slowest = slowest.max(t.elapsed());
    }
    eprintln!("300 buys during the outage in {:?}, slowest {slowest:?}", t.elapsed());
    // The mirror waits up to 1 s per Redis call here: a buy tied to it would show.
    assert!(slowest < Duration::from_millis(900), "a buy waited on Redis: {slowest:?}");
    node.engine.sync().unwrap();
    wait_until("the mirror to notice", Duration::from_secs(5), || !m.connected() && m.last_error().is_some());
    assert!(m.lag_records() >= 300, "lag grows: {:?}", m.stats());
    assert_eq!(m.applied_lsn(), before);
    std::thread::sleep(Duration::from_millis(200));
    assert!(m.lag_ms() >= 100, "lag in time grows too: {:?}", m.stats());
    assert_eq!(node.wal.checkpoints.get("mirror"), Some(before), "the WAL is kept for Redis");

    proxy.restore();
    wait_caught_up(&node, &m, Duration::from_secs(10));
    assert_eq!(m.resyncs(), 1, "caught up from the WAL, no resync");
    assert_eq!(m.last_error(), None);
    assert_mirror_equals_engine(&node, &mut conn, &prefix);
    assert_stream_matches_log(&stream(&mut conn, &prefix), &logged_order_events(&node));
    m.shutdown(mirror::SHUTDOWN_DRAIN);
}

#[test]
fn past_its_wal_budget_the_mirror_lets_the_wal_go_and_resyncs() {
    let Some((mut conn, prefix, dir, node)) = setup("budget", 4096) else { return };
    let proxy = TcpProxy::start(&upstream_addr());
    let mut cfg = mirror_config(&prefix, &proxy_url(&proxy));
    cfg.wal_budget_records = 50;
    let m = spawn_mirror(&node, cfg);
    let a = create_activity(&node, 2000, 1, 1800);
    shop(&node, a, 1..20, 1);
    wait_caught_up(&node, &m, Duration::from_secs(10));
    let before = m.applied_lsn();

    proxy.cut();
    for user in 100..400 {
        buy(&node, user, a, 1).expect("sold");
    }
    node.engine.sync().unwrap();
    wait_until("the mirror to give up the WAL", Duration::from_secs(5), || {
        m.stats().resync_pending && node.wal.checkpoints.get("mirror").is_none()
    });
    // A snapshot moves the engine's own checkpoint; with the mirror's gone
    // too, old segments are deleted at the next rotation.
    node.wal.snapshot().expect("snapshot");
    for user in 400..500 {
        buy(&node, user, a, 1).expect("sold");
    }
    node.engine.sync().unwrap();
    let oldest = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".wal")?.parse::<u64>().ok())
        .min()
        .unwrap();
    assert!(oldest > before + 1, "segments Redis lacked were deleted (oldest starts at {oldest}, Redis had {before})");

    proxy.restore();
    wait_caught_up(&node, &m, Duration::from_secs(10));
    assert_eq!(m.resyncs(), 2, "rewritten from the replica");
    assert_mirror_equals_engine(&node, &mut conn, &prefix);
    let entries = stream(&mut conn, &prefix);
    let marker = entries.iter().rev().find(|(_, f)| f["type"] == "resync").expect("marker");
    assert_eq!(marker.1["gap"], "1", "events the WAL no longer had are flagged");
    let first_after = entries.iter().find(|(id, _)| keys_lsn(id) > before).expect("events after the outage");
    assert_eq!(first_after.1["prev"], "", "the entry after the hole does not claim to follow the one before it");
    m.shutdown(mirror::SHUTDOWN_DRAIN);
}

#[test]
fn a_restarted_engine_and_mirror_continue_the_stream_without_a_gap() {
    let Some(mut conn) = redis_or_skip() else { return };
    let prefix = Prefix::new("restart");
    let dir = tempfile::tempdir().unwrap();
    let a = {
        let node = open_node(dir.path(), 4096); // many segments, no snapshot
        let m = spawn_mirror(&node, mirror_config(&prefix, &redis_url()));
        let a = create_activity(&node, 500, 1, 1800);
        shop(&node, a, 1..150, 1);
        wait_caught_up(&node, &m, Duration::from_secs(10));
        m.shutdown(mirror::SHUTDOWN_DRAIN);
        // More while no mirror runs: the next one must add these events.
        shop(&node, a, 150..200, 1);
        node.shutdown();
        a
    };
    // A key a rewrite would sweep away (an order hash, with hashes off):
    // still there at the end, Redis was not rewritten.
    let canary = format!("{}order:{}", prefix.0, OrderId(7));
    let _: () = conn.hset(&canary, "status", "canary").unwrap();
    let node = open_node(dir.path(), 4096);
    let m = spawn_mirror(&node, mirror_config(&prefix, &redis_url()));
    shop(&node, a, 200..230, 1);
    wait_caught_up(&node, &m, Duration::from_secs(10));
    assert_eq!(m.resyncs(), 0, "the restarted mirror went on from mirror:lsn: {:?}", m.stats());
    assert!(conn.exists::<_, bool>(&canary).unwrap(), "Redis was rewritten");
    let _: () = conn.del(&canary).unwrap();
    assert_mirror_equals_engine(&node, &mut conn, &prefix);
    let entries = stream(&mut conn, &prefix);
    assert_stream_matches_log(&entries, &logged_order_events(&node));
    let markers: Vec<&str> =
        entries.iter().filter(|(_, f)| f["type"] == "resync").map(|(_, f)| f["gap"].as_str()).collect();
    assert_eq!(markers, ["0"], "one rewrite, at the first start; the second went on from the WAL");
    m.shutdown(mirror::SHUTDOWN_DRAIN);
}

/// Redis written by another engine's log (another data dir on the same
/// prefix, further along than this one's start): its `mirror:lsn` is
/// durable here too, but `mirror:tip` is not this log's record there, so
/// the mirror rewrites Redis instead of going on from it.
#[test]
fn a_mirror_of_another_log_rewrites_redis() {
    let Some(mut conn) = redis_or_skip() else { return };
    let prefix = Prefix::new("other-log");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node_a = open_node(dir_a.path(), 64 << 20);
    let m = spawn_mirror(&node_a, mirror_config(&prefix, &redis_url()));
    let a = create_activity(&node_a, 500, 1, 1800);
    shop(&node_a, a, 1..40, 1);
    wait_caught_up(&node_a, &m, Duration::from_secs(10));
    m.shutdown(mirror::SHUTDOWN_DRAIN);
    node_a.shutdown();
    // The same kind of sale on another engine, past the LSN Redis has.
    let node_b = open_node(dir_b.path(), 64 << 20);
    let b = create_activity(&node_b, 500, 1, 1800);
    assert_eq!(a, b, "both engines number their first activity alike");
    shop(&node_b, b, 1_000..1_080, 1);
    let m = spawn_mirror(&node_b, mirror_config(&prefix, &redis_url()));
    wait_caught_up(&node_b, &m, Duration::from_secs(10));
    assert_eq!(m.resyncs(), 1, "another log's Redis is rewritten: {:?}", m.stats());
    assert_mirror_equals_engine(&node_b, &mut conn, &prefix);
    m.shutdown(mirror::SHUTDOWN_DRAIN);
}

/// Mirror lag under a burst of buys (docs/REDIS.md). Run with
/// `cargo test --release -p seckill-persist --test redis -- --ignored --nocapture burst`;
/// `BURST_USERS` buyers (default 100000, half of them get stock), as fast
/// as 8 threads go or at `BURST_RATE` buys/s; `BURST_ORDER_HASHES=1`: with
/// order hashes.
#[test]
#[ignore]
fn lag_under_a_burst() {
    let Some(mut conn) = redis_or_skip() else { return };
    let prefix = Prefix::new("burst");
    prefix.1.set(std::env::var("BURST_ORDER_HASHES").is_ok_and(|v| v == "1"));
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(open_node(dir.path(), 64 << 20));
    let m = spawn_mirror(&node, mirror_config(&prefix, &redis_url()));
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (users, rate) = (env("BURST_USERS", 100_000), env("BURST_RATE", 0));
    let a = create_activity(&node, users / 2, 1, 1800);
    wait_caught_up(&node, &m, Duration::from_secs(10));
    let redis_pid: Option<u32> = redis::cmd("INFO")
        .arg("server")
        .query::<String>(&mut conn)
        .ok()
        .and_then(|i| i.lines().find_map(|l| l.strip_prefix("process_id:")).and_then(|v| v.trim().parse().ok()));
    let (lsn0, mirror_ns0, redis_ns0) =
        (durable(&node), cpu_ns("self", "redis-mirror"), redis_pid.map(|p| cpu_ns(&p.to_string(), "")));
    let threads = 8;
    let t = Instant::now();
    let max_lag = Arc::new(Mutex::new((0u64, 0u64)));
    std::thread::scope(|s| {
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (stop, max_lag, m) = (stop.clone(), max_lag.clone(), &m);
            s.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let mut g = max_lag.lock().unwrap();
                    g.0 = g.0.max(m.lag_records());
                    g.1 = g.1.max(m.lag_ms());
                    drop(g);
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let node = node.clone();
                s.spawn(move || {
                    let start = Instant::now();
                    for (k, u) in (i..users).step_by(threads as usize).enumerate() {
                        if rate > 0 {
                            // Open loop at `rate` buys/s over all threads.
                            let due = start + Duration::from_secs_f64(k as f64 * threads as f64 / rate as f64);
                            std::thread::sleep(due.saturating_duration_since(Instant::now()));
                        }
                        buy(&node, u + 1, a, 1);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let buys = t.elapsed();
        wait_caught_up(&node, &m, Duration::from_secs(60));
        stop.store(true, Ordering::SeqCst);
        let (records, ms) = *max_lag.lock().unwrap();
        let records_mirrored = (durable(&node) - lsn0).max(1) as f64;
        let per_record = |ns: u64| ns as f64 / 1000.0 / records_mirrored;
        eprintln!(
            "CPU per record: mirror thread {:.2} µs, redis-server {} (all its threads, INFO process_id {redis_pid:?})",
            per_record(cpu_ns("self", "redis-mirror") - mirror_ns0),
            redis_ns0.map_or("not readable".into(), |r0| {
                format!("{:.2} µs", per_record(cpu_ns(&redis_pid.unwrap_or(0).to_string(), "") - r0))
            }),
        );
        eprintln!(
            "{users} buy attempts ({} records) in {buys:?} ({:.0}/s); mirror caught up {:?} after the last; \
             lag p99 {} ms (last 4096 batches), max seen {records} records / {ms} ms",
            durable(&node),
            users as f64 / buys.as_secs_f64(),
            t.elapsed() - buys,
            m.lag_p99_ms(),
        );
    });
    assert_mirror_equals_engine(&node, &mut conn, &prefix);
    let wal_bytes: u64 =
        std::fs::read_dir(dir.path().join("wal")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    // A full rewrite of that state, as after a FLUSHDB.
    let t = Instant::now();
    let _: () = conn.del(format!("{}mirror:lsn", prefix.0)).unwrap();
    wait_until("the resync", Duration::from_secs(60), || m.resyncs() >= 2 && !m.stats().resync_pending);
    eprintln!(
        "WAL {} bytes/record; resync of {} orders took {:?} (detected within check_ms)",
        wal_bytes / durable(&node).max(1),
        engine_state(&node).orders.len(),
        t.elapsed()
    );
    assert_mirror_equals_engine(&node, &mut conn, &prefix);
    m.shutdown(mirror::SHUTDOWN_DRAIN);
}
