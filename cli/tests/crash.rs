//! Crash harness: a real `seckill engine` process under load from several
//! client threads, killed with SIGKILL at random moments and restarted on
//! the same data dir, cycle after cycle. After every restart:
//!
//! * every acknowledged order exists, in its last acknowledged status (or in
//!   the status of an operation that was sent but never answered);
//! * the activity is not oversold and no user holds more than the limit;
//! * tokens are conserved: every other cycle the load stops before the
//!   kill, and the live engine's numbers are taken then (held by orders +
//!   remaining = total must hold on the live engine, which is where a token
//!   leak shows: recovery recomputes `remaining` from the orders and would
//!   erase it); after the restart the recovered orders, held units and
//!   remaining stock must equal those live numbers exactly.
//!
//! `SECKILL_CRASH_CYCLES` runs more cycles (the CI default is 20);
//! `scripts/crash` runs it long.

mod common;

use common::EngineProc;
use rand::{Rng, SeedableRng};
use seckill_proto::Address;
use seckill_proto::{ErrorCode, OrderId, OrderStatus, Request, Response};
use seckill_server::client::Pool;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const USERS: u64 = 400;
const LIMIT: u32 = 2;
const STOCK: u64 = 600;
const CLIENTS: usize = 8;

/// What a client knows about one order: the last status it was told, and
/// the statuses that operations sent but never answered could have set.
#[derive(Clone, Debug)]
struct Known {
    user_id: u64,
    amount_cents: u64,
    acked: OrderStatus,
    maybe: HashSet<OrderStatus>,
}

/// No click limit worth the name: each client clicks for its 50 users as fast
/// as the engine answers, so the default 60 a minute answered `rate_limited`
/// whenever an engine lived a few seconds (this harness is about durability).
fn engine_args() -> Vec<&'static str> {
    vec!["--shards", "2", "--snapshot-every", "100", "--wal-segment-bytes", "8192", "--buys-per-minute", "1000000"]
}

#[test]
fn acknowledged_orders_survive_kill_9() {
    let cycles: usize = std::env::var("SECKILL_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let seed: u64 = std::env::var("SECKILL_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("crash harness: {cycles} cycles, seed {seed} (SECKILL_CRASH_SEED={seed} to repeat)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).expect("data dir");
    let mut engine = EngineProc::start(&dir, &engine_args());
    let activity_id = engine
        .create_activity(json!({"title": "crash", "price_cents": 100, "stock": STOCK, "per_user_limit": LIMIT,
                   "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z"}));
    let addr = Address::Unix(dir.join("engine.sock"));

    let mut known: HashMap<OrderId, Known> = HashMap::new();
    let mut total_acked = 0usize;
    for cycle in 0..cycles {
        let pool = Arc::new(Pool::connect(&addr, 2, &common::wire_key()).expect("connect"));
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (pool, stop) = (pool.clone(), stop.clone());
                let mine: HashMap<OrderId, Known> = known
                    .iter()
                    .filter(|(_, k)| k.user_id % CLIENTS as u64 == c as u64)
                    .map(|(id, k)| (*id, k.clone()))
                    .collect();
                let seed = rng.gen::<u64>();
                std::thread::spawn(move || client(&pool, &stop, activity_id, c as u64, mine, seed))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.gen_range(30..250)));
        // Every other cycle the load stops first, so the live numbers can
        // be taken and compared with what recovery finds.
        let quiet = cycle % 2 == 1;
        if !quiet {
            engine.kill9();
        }
        stop.store(true, Ordering::Release);
        for w in workers {
            let (mine, acked) = w.join().expect("client thread");
            total_acked += acked;
            known.extend(mine);
        }
        drop(pool);
        let live = if quiet {
            let live = check(&addr, activity_id, &mut known, cycle);
            engine.kill9();
            Some(live)
        } else {
            None
        };

        engine = EngineProc::start(&dir, &engine_args());
        let recovered = check(&addr, activity_id, &mut known, cycle);
        if let Some(live) = live {
            assert_eq!(recovered, live, "cycle {cycle}: the state after kill -9 differs from the live state before it");
        }
        if cycle % 5 == 4 {
            // A clean stop now and then: shutdown must drain and lose nothing.
            engine.admin("shutdown", json!({})).expect("shutdown");
            let _ = engine.child.wait();
            engine = EngineProc::start(&dir, &engine_args());
            check(&addr, activity_id, &mut known, cycle);
        }
    }
    let snapshots = std::fs::read_dir(dir.join("snapshots")).expect("snapshots dir").count();
    let segments = std::fs::read_dir(dir.join("wal")).expect("wal dir").count();
    eprintln!(
        "crash harness: {cycles} cycles, {total_acked} acknowledged answers, {} orders checked, {snapshots} snapshots, {segments} WAL segments on disk",
        known.len()
    );
    assert!(total_acked > 0, "the load never got an answer: the harness tested nothing");
    assert!(!known.is_empty(), "no order was ever acknowledged");
}

/// One client: buys for its users, cancels and pays some of its orders,
/// recording what the engine acknowledged. Stops at the first I/O error
/// (the engine was killed).
fn client(
    pool: &Pool,
    stop: &AtomicBool,
    activity_id: u64,
    client: u64,
    mut mine: HashMap<OrderId, Known>,
    seed: u64,
) -> (HashMap<OrderId, Known>, usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut acked = 0;
    while !stop.load(Ordering::Acquire) {
        let pending: Vec<OrderId> =
            mine.iter().filter(|(_, k)| k.acked == OrderStatus::PendingPayment).map(|(id, _)| *id).collect();
        let op = rng.gen_range(0..10);
        if op < 2 && !pending.is_empty() {
            let id = pending[rng.gen_range(0..pending.len())];
            let (user_id, amount_cents) = (mine[&id].user_id, mine[&id].amount_cents);
            let (req, target) = if op == 0 {
                (Request::Cancel { user_id, order_id: id }, OrderStatus::Cancelled)
            } else {
                (Request::Pay { order_id: id, amount_cents, txn: id.0 as u64 }, OrderStatus::Paid)
            };
            mine.get_mut(&id).expect("known").maybe.insert(target);
            match pool.call(&req) {
                Ok(Response::Order(o)) => {
                    let k = mine.get_mut(&id).expect("known");
                    assert_eq!(o.status, target, "{req:?}");
                    k.acked = o.status;
                    k.maybe.clear();
                    acked += 1;
                }
                Ok(Response::Error(ErrorCode::Busy)) => {}
                Ok(other) => panic!("unexpected answer to {req:?}: {other:?}"),
                Err(_) => break,
            }
        } else {
            let user_id = rng.gen_range(0..USERS / CLIENTS as u64) * CLIENTS as u64 + client + 1;
            let quantity = rng.gen_range(1..=LIMIT);
            match pool.call(&Request::Buy { user_id, activity_id, quantity, idempotency_key: 0, buy_token_ok: false }) {
                Ok(Response::Order(o)) => {
                    assert_eq!((o.user_id, o.quantity, o.status), (user_id, quantity, OrderStatus::PendingPayment));
                    let known = Known { user_id, amount_cents: o.amount_cents, acked: o.status, maybe: HashSet::new() };
                    assert!(mine.insert(o.order_id, known).is_none(), "order id {} issued twice", o.order_id);
                    acked += 1;
                }
                Ok(Response::Error(
                    ErrorCode::SoldOut | ErrorCode::LimitReached | ErrorCode::Busy | ErrorCode::BadRequest,
                )) => {}
                Ok(other) => panic!("unexpected answer to a buy: {other:?}"),
                Err(_) => break,
            }
        }
    }
    (mine, acked)
}

/// What `check` saw: units held by orders, remaining stock, and every
/// known order's status.
#[derive(Debug, PartialEq, Eq)]
struct Numbers {
    held: u64,
    remaining: u64,
    statuses: Vec<(OrderId, u8)>,
}

fn check(addr: &Address, activity_id: u64, known: &mut HashMap<OrderId, Known>, cycle: usize) -> Numbers {
    let pool = Pool::connect(addr, 1, &common::wire_key()).expect("connect after restart");
    for (id, k) in known.iter_mut() {
        match pool.call(&Request::GetOrder { user_id: Some(k.user_id), order_id: *id }).expect("get order") {
            Response::Order(o) => {
                assert!(
                    o.status == k.acked || k.maybe.contains(&o.status),
                    "cycle {cycle}: order {id} is {:?}, but {:?} was acknowledged (maybe {:?})",
                    o.status,
                    k.acked,
                    k.maybe
                );
                // What is durable now is what later cycles must find.
                k.acked = o.status;
                k.maybe.clear();
            }
            other => panic!("cycle {cycle}: acknowledged order {id} is gone after kill -9: {other:?}"),
        }
    }
    let Response::Activity(a) = pool.call(&Request::GetActivity { activity_id }).expect("get activity") else {
        panic!("activity {activity_id} is gone after restart");
    };
    let call = |req: &Request| pool.call(req).map_err(|e| e.to_string());
    let held_total = common::check_stock(call, USERS, LIMIT, &a, &format!("cycle {cycle}: ")).expect("list orders");
    let mut statuses: Vec<(OrderId, u8)> = known.iter().map(|(id, k)| (*id, k.acked as u8)).collect();
    statuses.sort();
    Numbers { held: held_total, remaining: a.remaining, statuses }
}
