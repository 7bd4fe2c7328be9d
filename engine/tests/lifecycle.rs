//! The order lifecycle on the engine: payment deadlines, idempotent buys,
//! payments checked by amount and transaction, the buy-token gate, and
//! expiry across a crash.

use seckill_engine::node::{Node, NodeConfig};
use seckill_engine::Activity;
use seckill_engine::{ActivitySpec, Batch, Engine, EngineConfig, Event, ManualClock, ShardState, Sink, StockPool};
use seckill_proto::{ActivityStatus, ErrorCode, OrderStatus, Request, Response};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::T0;

fn activity(timeout_s: u32, require_buy_token: bool) -> Activity {
    Activity {
        id: 1,
        product_id: 0,
        product_name: "p".into(),
        title: "t".into(),
        price_cents: 250,
        terms: seckill_proto::SaleTerms {
            starts_at_ms: T0 - 1,
            ends_at_ms: T0 + 86_400_000,
            per_user_limit: 1,
            payment_timeout_s: timeout_s,
            require_buy_token,
            gate_factor: 2,
        },
        status: ActivityStatus::Active,
    }
}

fn shard(stock: u64, require_buy_token: bool) -> (ShardState, Arc<StockPool>) {
    let mut s = ShardState::new(0);
    let pool = Arc::new(StockPool::new(stock));
    s.install(Arc::new(activity(60, require_buy_token)), pool.clone());
    (s, pool)
}

/// A shard selling `stock` units, and the order `user_id` bought there at
/// `T0`, made durable.
fn shard_with_order(stock: u64, user_id: u64) -> (ShardState, Arc<StockPool>, seckill_proto::OrderView) {
    let (mut s, pool) = shard(stock, false);
    let mut b = Batch::default();
    let o = order(s.handle(&buy(user_id, 0), T0, &mut b));
    b.release();
    (s, pool, o)
}

fn buy(user_id: u64, key: u64) -> Request {
    Request::Buy { user_id, activity_id: 1, quantity: 1, idempotency_key: key, buy_token_ok: false }
}

fn order(r: Response) -> seckill_proto::OrderView {
    match r {
        Response::Order(o) | Response::Replayed(o) => o,
        other => panic!("expected an order, got {other:?}"),
    }
}

#[test]
fn deadlines_expire_pending_orders_once_and_return_stock() {
    let (mut s, pool, o) = shard_with_order(1, 7);
    let mut b = Batch::default();
    assert_eq!(o.pay_before_ms, T0 + 60_000);
    assert_eq!(s.next_deadline_ms(), Some(T0 + 60_000));
    assert_eq!(s.expire_due(T0 + 59_999, &mut b), 0, "not before the deadline");
    assert_eq!(s.expire_due(T0 + 60_000, &mut b), 1);
    assert!(matches!(b.events[..], [Event::OrderStatusChanged { status: OrderStatus::Expired, .. }]));
    assert_eq!(pool.remaining(), 0, "tokens return only once durable");
    b.release();
    assert_eq!(pool.remaining(), 1);
    assert_eq!(s.expire_due(T0 + 120_000, &mut b), 0, "expires exactly once");
    assert_eq!(s.orders[&o.order_id].status, OrderStatus::Expired);
    // The buyer's quota came back too.
    assert!(matches!(s.handle(&buy(7, 0), T0 + 120_000, &mut b), Response::Order(_)));
}

#[test]
fn paid_and_cancelled_orders_do_not_expire() {
    let (mut s, _pool) = shard(2, false);
    let mut b = Batch::default();
    let a = order(s.handle(&buy(1, 0), T0, &mut b));
    let c = order(s.handle(&buy(2, 0), T0, &mut b));
    let paid = s.handle(&Request::Pay { order_id: a.order_id, amount_cents: 250, txn: 9 }, T0, &mut b);
    assert_eq!(order(paid).status, OrderStatus::Paid);
    let cancelled = s.handle(&Request::Cancel { user_id: 2, order_id: c.order_id }, T0, &mut b);
    assert_eq!(order(cancelled).status, OrderStatus::Cancelled);
    b.release();
    assert_eq!(s.expire_due(T0 + 3_600_000, &mut b), 0);
    assert!(b.events.is_empty());
}

#[test]
fn an_idempotency_key_returns_the_same_order() {
    let (mut s, pool) = shard(5, false);
    let mut b = Batch::default();
    let first = s.handle(&buy(3, 42), T0, &mut b);
    let again = s.handle(&buy(3, 42), T0 + 5, &mut b);
    let Response::Order(o1) = first else { panic!("{first:?}") };
    assert_eq!(again, Response::Replayed(o1));
    assert_eq!(b.events.len(), 1, "a replay changes nothing");
    assert_eq!(s.handle(&buy(3, 43), T0, &mut b), Response::Error(ErrorCode::LimitReached));
    assert_eq!(order(s.handle(&buy(4, 42), T0, &mut b)).user_id, 4, "keys are per user");
    b.release();
    assert_eq!(pool.remaining(), 3);
}

#[test]
fn payments_are_checked_and_refusals_recorded() {
    let (mut s, _pool, o) = shard_with_order(2, 1);
    let mut b = Batch::default();
    let pay = |amount_cents, txn| Request::Pay { order_id: o.order_id, amount_cents, txn };
    assert_eq!(s.handle(&pay(1, 5), T0, &mut b), Response::Error(ErrorCode::AmountMismatch));
    assert!(matches!(b.events[..], [Event::PaymentRefused { txn: 5, .. }]));
    b.release();
    assert_eq!(order(s.handle(&pay(250, 5), T0, &mut b)).status, OrderStatus::Paid);
    b.release();
    assert_eq!(order(s.handle(&pay(250, 5), T0, &mut b)).status, OrderStatus::Paid, "replay of the same txn");
    assert!(b.events.is_empty());
    assert_eq!(s.handle(&pay(250, 6), T0, &mut b), Response::Error(ErrorCode::InvalidState), "a second payment");
    assert!(matches!(b.events[..], [Event::PaymentRefused { txn: 6, .. }]));
    b.release();

    let c = order(s.handle(&buy(2, 0), T0, &mut b));
    s.handle(&Request::Cancel { user_id: 2, order_id: c.order_id }, T0, &mut b);
    b.release();
    let late = Request::Pay { order_id: c.order_id, amount_cents: 250, txn: 7 };
    assert_eq!(s.handle(&late, T0, &mut b), Response::Error(ErrorCode::InvalidState));
    assert!(matches!(b.events[..], [Event::PaymentRefused { txn: 7, .. }]));
}

#[test]
fn the_buy_token_gate_caps_tokens_at_gate_factor_times_stock() {
    let (mut s, _pool) = shard(2, true);
    let mut b = Batch::default();
    assert_eq!(s.handle(&buy(1, 0), T0, &mut b), Response::Error(ErrorCode::BuyTokenRequired));
    let issue = |u| Request::IssueBuyToken { user_id: u, activity_id: 1 };
    for u in 1..=4 {
        assert_eq!(s.handle(&issue(u), T0, &mut b), Response::Done, "user {u}");
    }
    assert_eq!(s.handle(&issue(5), T0, &mut b), Response::Error(ErrorCode::SoldOut), "2 × 2 tokens issued");
    let with_token = Request::Buy { user_id: 1, activity_id: 1, quantity: 1, idempotency_key: 0, buy_token_ok: true };
    assert!(matches!(s.handle(&with_token, T0, &mut b), Response::Order(_)));
    assert_eq!(s.handle(&issue(1), T0, &mut b), Response::Error(ErrorCode::LimitReached));
    let (mut plain, _) = shard(1, false);
    assert_eq!(plain.handle(&issue(1), T0, &mut b), Response::Error(ErrorCode::BadRequest));
}

/// The shared fixture with a payment timeout of `timeout_s`.
fn spec(stock: u64, timeout_s: u32) -> ActivitySpec {
    let mut spec = common::spec(stock);
    spec.terms.payment_timeout_s = timeout_s;
    spec
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn shard_threads_expire_orders_when_the_clock_passes_the_deadline() {
    let clock = ManualClock::new(T0);
    let engine = Engine::start(
        EngineConfig { shards: 2, queue_capacity: 64, ..EngineConfig::default() },
        Arc::new(clock.clone()),
        Sink::Immediate,
    );
    let a = engine.create_activity(spec(1, 2)).expect("activity");
    let o = order(engine.call(Request::Buy {
        user_id: 9,
        activity_id: a.id,
        quantity: 1,
        idempotency_key: 0,
        buy_token_ok: false,
    }));
    assert_eq!(engine.activity(a.id).expect("view").remaining, 0);
    clock.advance_ms(2_000);
    wait_for("expiry", || {
        matches!(engine.call(Request::GetOrder { user_id: None, order_id: o.order_id }),
                 Response::Order(v) if v.status == OrderStatus::Expired)
    });
    assert_eq!(engine.activity(a.id).expect("view").remaining, 1);
}

#[test]
fn deadlines_that_pass_while_down_expire_after_recovery_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let cfg = || {
        let mut c = NodeConfig::new(dir.path());
        c.engine = EngineConfig { shards: 2, queue_capacity: 64, ..EngineConfig::default() };
        c
    };
    let (activity_id, order_id) = {
        let node = Node::open(cfg(), Arc::new(clock.clone())).expect("open");
        let a = node.engine.create_activity(spec(3, 60)).expect("activity");
        let o = order(node.engine.call(Request::Buy {
            user_id: 5,
            activity_id: a.id,
            quantity: 1,
            idempotency_key: 77,
            buy_token_ok: false,
        }));
        // No shutdown: the process "dies" here with the order pending.
        (a.id, o.order_id)
    };
    clock.advance_ms(61_000);
    for round in 0..2 {
        let node = Node::open(cfg(), Arc::new(clock.clone())).expect("reopen");
        wait_for("expiry after recovery", || {
            matches!(node.engine.call(Request::GetOrder { user_id: None, order_id }),
                     Response::Order(v) if v.status == OrderStatus::Expired)
        });
        node.engine.sync().expect("sync");
        assert_eq!(
            node.engine.activity(activity_id).expect("view").remaining,
            3,
            "round {round}: stock back exactly once"
        );
        // The idempotency key survived too.
        let again = node.engine.call(Request::Buy {
            user_id: 5,
            activity_id,
            quantity: 1,
            idempotency_key: 77,
            buy_token_ok: false,
        });
        assert!(matches!(again, Response::Replayed(v) if v.order_id == order_id), "round {round}: {again:?}");
        node.shutdown();
    }
}
