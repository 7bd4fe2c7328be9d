//! Property tests of the DESIGN.md invariants on the in-memory engine.
//!
//! * `shard_state_matches_model`: one thread drives several `ShardState`s
//!   (sharing `StockPool`s, as the engine's shards do) with random
//!   operations, predicts every answer with a plain reference model and
//!   checks the invariants after every step: tokens conserved exactly, never
//!   oversold, no user above their limit, purchases consistent with orders,
//!   tokens returned only on `Batch::release` and exactly once, and every
//!   transition idempotent (a refused payment is only ever recorded for
//!   reconciliation), idempotency keys replay, and the shards' own payment
//!   timers (`expire_due`) expire exactly the orders past their deadline.
//! * `engine_concurrent_clients_keep_invariants`: several client threads
//!   hammer a real `Engine` (1..=4 shards, `Sink::Immediate`, a
//!   `ManualClock`) while the shards' timers expire orders on their own; the
//!   final state is checked through `Engine::inspect` and `Engine::activity`.
//! * `give_back_races_stock_add` and `activity_view_consistent_during_stock_add`:
//!   targeted races between `stock.add` and returning tokens / reading the
//!   activity view.

use proptest::prelude::*;
use proptest::sample::Index;
use seckill_engine::limits::PER_USER_LIMIT_MAX;
use seckill_engine::{shard_of_user, Activity, Event};
use seckill_engine::{
    ActivitySpec, Batch, Clock, Engine, EngineConfig, Envelope, ManualClock, Order, ShardState, Sink, StockPool,
};
use seckill_proto::{ActivityStatus, ErrorCode, OrderId, OrderStatus, OrderView, Request, Response};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Start of every test's clock (2024-01-01T00:00:00Z).
const T0: u64 = 1_704_067_200_000;

// ---------------------------------------------------------------------------
// Reference model of the status machine, written from DESIGN.md (not from
// `order::step`), shared by both tests.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum T {
    Pay { amount_cents: u64, txn: u64 },
    Cancel,
    Expire,
    Refund { activity_ended: bool },
    Ship,
}

/// What a transition on `o` (paid by `paid_txn`, 0 if unpaid) must do at
/// `now_ms`: the status it leaves (the same one when the transition already
/// happened) or the error, and whether refused money is recorded for
/// reconciliation (a `PaymentRefused` event).
fn predict_transition(o: &OrderView, paid_txn: u64, t: T, now_ms: u64) -> (Result<OrderStatus, ErrorCode>, bool) {
    use OrderStatus::*;
    if let T::Pay { amount_cents, txn } = t {
        return match o.status {
            _ if amount_cents != o.amount_cents => (Err(ErrorCode::AmountMismatch), true),
            PendingPayment => (Ok(Paid), false),
            // The same transaction again is a replay; another one is a
            // second payment, refused and recorded.
            Paid | Shipped | Refunded if txn == paid_txn => (Ok(o.status), false),
            _ => (Err(ErrorCode::InvalidState), true),
        };
    }
    let outcome = match (o.status, t) {
        (PendingPayment, T::Cancel) => Ok(Cancelled),
        (Cancelled, T::Cancel) => Ok(Cancelled),
        (PendingPayment, T::Expire) if now_ms < o.pay_before_ms => Err(ErrorCode::InvalidState),
        (PendingPayment, T::Expire) => Ok(Expired),
        (Expired, T::Expire) => Ok(Expired),
        (Paid, T::Refund { activity_ended: false }) => Ok(Refunded),
        (Refunded, T::Refund { .. }) => Ok(Refunded),
        (Paid, T::Ship) => Ok(Shipped),
        (Shipped, T::Ship) => Ok(Shipped),
        _ => Err(ErrorCode::InvalidState),
    };
    (outcome, false)
}

fn refused_payment(order_id: OrderId, t: T, at_ms: u64) -> Event {
    let T::Pay { amount_cents, txn } = t else { panic!("only a payment is refused with a record") };
    Event::PaymentRefused { order_id, amount_cents, txn, at_ms }
}

fn request_for(o: &OrderView, t: T) -> Request {
    let order_id = o.order_id;
    match t {
        T::Pay { amount_cents, txn } => Request::Pay { order_id, amount_cents, txn },
        T::Cancel => Request::Cancel { user_id: o.user_id, order_id },
        T::Expire => Request::Expire { order_id },
        T::Refund { .. } => Request::Refund { user_id: o.user_id, order_id },
        T::Ship => Request::Ship { order_id },
    }
}

fn holds(s: OrderStatus) -> bool {
    matches!(s, OrderStatus::PendingPayment | OrderStatus::Paid | OrderStatus::Shipped)
}

fn as_order(resp: &Response) -> Option<&OrderView> {
    match resp {
        Response::Order(v) => Some(v),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// 1. Single-threaded model test on `ShardState::handle`.
// ---------------------------------------------------------------------------

const USERS: u64 = 6;
/// Activities 1..=ACTIVITIES exist; ACTIVITIES + 1 is never installed.
const ACTIVITIES: u64 = 3;

#[derive(Clone, Debug)]
struct ActSpec {
    stock: u64,
    per_user_limit: u32,
    price_cents: u64,
    timeout_s: u32,
    starts_in_ms: u64,
    lasts_ms: u64,
    require_buy_token: bool,
}

/// Mostly 1, sometimes more, sometimes the invalid 0.
fn quantity() -> impl Strategy<Value = u32> {
    prop_oneof![1 => Just(0u32), 6 => Just(1), 2 => Just(2), 1 => Just(3)]
}

fn act_spec() -> impl Strategy<Value = ActSpec> {
    (
        prop_oneof![1 => Just(0u64), 6 => 1u64..=8],
        prop_oneof![1 => Just(0u32), 6 => 1u32..=3],
        1u64..=500,
        1u32..=3,
        prop_oneof![4 => Just(0u64), 1 => 1u64..=2_000],
        2_000u64..=40_000,
        prop::bool::weighted(0.2),
    )
        .prop_map(|(stock, per_user_limit, price_cents, timeout_s, starts_in_ms, lasts_ms, token)| ActSpec {
            stock,
            per_user_limit,
            price_cents,
            timeout_s,
            starts_in_ms,
            lasts_ms,
            require_buy_token: token,
        })
}

/// One step of the model test (`op`), or of a concurrent client (`cop`).
#[derive(Clone, Debug)]
enum Op {
    /// `key`: an Idempotency-Key hash (0: none); `token_ok`: the front
    /// verified a buy token.
    Buy {
        user: u64,
        act: u64,
        qty: u32,
        key: u64,
        token_ok: bool,
    },
    /// `by` is the requester; a different user than the owner must get
    /// `order_not_found`.
    Cancel {
        pick: Index,
        by: Option<u64>,
    },
    Pay {
        pick: Index,
        wrong_amount: bool,
        txn: u64,
    },
    /// `advance` moves the clock to the deadline (or 1 ms past it) first.
    Expire {
        pick: Index,
        advance: Option<u64>,
    },
    Refund {
        pick: Index,
        by: Option<u64>,
    },
    Ship {
        pick: Index,
    },
    AddStock {
        act: u64,
        amount: u64,
    },
    SetQuota {
        user: u64,
        act: u64,
        limit: u32,
    },
    SetStatus {
        act: u64,
        status: ActivityStatus,
    },
    Advance {
        ms: u64,
    },
    /// A transition on an id no shard issued.
    Ghost {
        kind: u8,
    },
    /// The shards' payment timers run (`ShardState::expire_due`).
    ExpireDue,
}

fn op() -> impl Strategy<Value = Op> {
    let user = 1..=USERS;
    let act = prop_oneof![12 => 1..=ACTIVITIES, 1 => Just(ACTIVITIES + 1)];
    let by = prop_oneof![3 => Just(None), 1 => (1..=USERS).prop_map(Some)];
    prop_oneof![
        8 => (user.clone(), act.clone(), quantity(), prop_oneof![4 => Just(0u64), 1 => 1u64..=2], prop::bool::weighted(0.5))
            .prop_map(|(user, act, qty, key, token_ok)| Op::Buy { user, act, qty, key, token_ok }),
        3 => (any::<Index>(), by.clone()).prop_map(|(pick, by)| Op::Cancel { pick, by }),
        4 => (any::<Index>(), prop::bool::weighted(0.2), prop_oneof![4 => Just(1u64), 1 => Just(2u64)])
            .prop_map(|(pick, wrong_amount, txn)| Op::Pay { pick, wrong_amount, txn }),
        3 => (any::<Index>(), prop_oneof![Just(None), Just(Some(0u64)), Just(Some(1u64))])
            .prop_map(|(pick, advance)| Op::Expire { pick, advance }),
        3 => (any::<Index>(), by).prop_map(|(pick, by)| Op::Refund { pick, by }),
        2 => any::<Index>().prop_map(|pick| Op::Ship { pick }),
        2 => (1..=ACTIVITIES, 1u64..=3).prop_map(|(act, amount)| Op::AddStock { act, amount }),
        2 => (user, act.clone(), prop_oneof![10 => 0u32..=4, 1 => Just(PER_USER_LIMIT_MAX + 1)])
            .prop_map(|(user, act, limit)| Op::SetQuota { user, act, limit }),
        1 => (1..=ACTIVITIES, prop_oneof![
                6 => Just(ActivityStatus::Active),
                2 => Just(ActivityStatus::Paused),
                1 => Just(ActivityStatus::Disabled),
            ])
            .prop_map(|(act, status)| Op::SetStatus { act, status }),
        2 => (0u64..=4_000).prop_map(|ms| Op::Advance { ms }),
        1 => (0u8..5).prop_map(|kind| Op::Ghost { kind }),
        2 => Just(Op::ExpireDue),
    ]
}

/// The reference model: plain maps, no sharing, no atomics.
struct Model {
    now: u64,
    acts: BTreeMap<u64, Activity>,
    added: BTreeMap<u64, u64>,
    quotas: HashMap<(u64, u64), u32>,
    orders: HashMap<OrderId, OrderView>,
    /// Creation order, for picking an order to act on.
    order_ids: Vec<OrderId>,
    /// The transaction that paid each paid order.
    paid_txn: HashMap<OrderId, u64>,
    /// Refused payments already recorded: (order, txn).
    refused: std::collections::HashSet<(OrderId, u64)>,
    /// (user, Idempotency-Key hash) → the order that key made.
    idempotency: HashMap<(u64, u64), OrderId>,
    /// (user, activity) whose quota was lowered below what they already
    /// held: they keep those units (nothing is revoked) but may never grow.
    grandfathered: HashMap<(u64, u64), u32>,
}

impl Model {
    fn limit(&self, user: u64, act: u64) -> u32 {
        self.quotas.get(&(user, act)).copied().unwrap_or(self.acts[&act].terms.per_user_limit)
    }

    fn held(&self, user: u64, act: u64) -> u32 {
        self.orders
            .values()
            .filter(|o| o.user_id == user && o.activity_id == act && holds(o.status))
            .map(|o| o.quantity)
            .sum()
    }

    fn held_total(&self, act: u64) -> u64 {
        self.orders.values().filter(|o| o.activity_id == act && holds(o.status)).map(|o| o.quantity as u64).sum()
    }

    fn ended(&self, act: u64) -> bool {
        let a = &self.acts[&act];
        a.status == ActivityStatus::Disabled || self.now >= a.terms.ends_at_ms
    }

    /// The answer a buy must get: `Ok(view without its id)` or the error.
    fn predict_buy(&self, user: u64, act: u64, qty: u32, token_ok: bool) -> Result<OrderView, ErrorCode> {
        let a = self.acts.get(&act).ok_or(ErrorCode::ActivityNotFound)?;
        if self.ended(act) {
            return Err(ErrorCode::Ended);
        }
        if a.status == ActivityStatus::Paused {
            return Err(ErrorCode::Paused);
        }
        if self.now < a.terms.starts_at_ms {
            return Err(ErrorCode::NotStarted);
        }
        if a.terms.require_buy_token && !token_ok {
            return Err(ErrorCode::BuyTokenRequired);
        }
        let limit = self.limit(user, act);
        if limit == 0 {
            return Err(ErrorCode::LimitReached);
        }
        if qty == 0 || qty > limit {
            return Err(ErrorCode::BadRequest);
        }
        if self.held(user, act) + qty > limit {
            return Err(ErrorCode::LimitReached);
        }
        if self.added[&act] - self.held_total(act) < qty as u64 {
            return Err(ErrorCode::SoldOut);
        }
        Ok(OrderView {
            order_id: OrderId::default(),
            user_id: user,
            activity_id: act,
            quantity: qty,
            amount_cents: a.price_cents * qty as u64,
            status: OrderStatus::PendingPayment,
            created_at_ms: self.now,
            pay_before_ms: self.now + a.terms.payment_timeout_s as u64 * 1000,
        })
    }
}

struct Harness {
    shards: Vec<ShardState>,
    pools: BTreeMap<u64, Arc<StockPool>>,
    model: Model,
}

/// Everything observable about the engine side, to prove that a repeated
/// request changed nothing.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    orders: Vec<(OrderId, Order)>,
    pools: Vec<(u64, u64, u64)>,
    purchases: Vec<(u16, u64, u64, u32)>,
    quotas: Vec<(u16, u64, u64, u32)>,
}

impl Harness {
    fn new(n_shards: usize, specs: &[ActSpec]) -> Self {
        let mut shards: Vec<ShardState> = (0..n_shards).map(|i| ShardState::new(i as u16)).collect();
        let mut pools = BTreeMap::new();
        let mut acts = BTreeMap::new();
        let mut added = BTreeMap::new();
        for (i, s) in specs.iter().enumerate() {
            let id = i as u64 + 1;
            let starts_at_ms = T0 + s.starts_in_ms;
            // Activity 1 never ends, so the clock can move freely.
            let ends_at_ms = if id == 1 { T0 + 1_000_000_000 } else { starts_at_ms + s.lasts_ms };
            let a = Activity {
                id,
                product_id: 0,
                product_name: format!("product {id}"),
                title: format!("sale {id}"),
                price_cents: s.price_cents,
                terms: seckill_proto::SaleTerms {
                    starts_at_ms,
                    ends_at_ms,
                    per_user_limit: s.per_user_limit,
                    payment_timeout_s: s.timeout_s,
                    require_buy_token: s.require_buy_token,
                    gate_factor: 5,
                },
                status: ActivityStatus::Active,
            };
            a.validate().expect("test activity is valid");
            let pool = Arc::new(StockPool::new(s.stock));
            let a_arc = Arc::new(a.clone());
            for sh in &mut shards {
                sh.install(a_arc.clone(), pool.clone());
            }
            pools.insert(id, pool);
            acts.insert(id, a);
            added.insert(id, s.stock);
        }
        let model = Model {
            now: T0,
            acts,
            added,
            quotas: HashMap::new(),
            orders: HashMap::new(),
            order_ids: Vec::new(),
            paid_txn: HashMap::new(),
            refused: std::collections::HashSet::new(),
            idempotency: HashMap::new(),
            grandfathered: HashMap::new(),
        };
        Self { shards, pools, model }
    }

    fn shard_of(&self, user: u64) -> usize {
        shard_of_user(user, self.shards.len())
    }

    fn fingerprint(&self) -> Fingerprint {
        let mut orders: Vec<_> = self.shards.iter().flat_map(|s| s.orders.values().map(|o| (o.id, *o))).collect();
        orders.sort_by_key(|(k, _)| *k);
        let pools = self.pools.iter().map(|(id, p)| (*id, p.added(), p.remaining())).collect();
        let mut purchases = Vec::new();
        let mut quotas = Vec::new();
        for s in &self.shards {
            for (aid, slot) in &s.slots {
                purchases.extend(slot.purchases.iter().map(|(u, n)| (s.id, *aid, u, n)));
                quotas.extend(slot.quotas.iter().map(|(u, n)| (s.id, *aid, *u, *n)));
            }
        }
        purchases.sort_unstable();
        quotas.sort_unstable();
        Fingerprint { orders, pools, purchases, quotas }
    }

    /// Runs one request on one shard, before release: the answer and the batch.
    fn decide(&mut self, shard: usize, req: &Request) -> (Response, Batch) {
        let mut batch = Batch::default();
        let resp = self.shards[shard].handle(req, self.model.now, &mut batch);
        (resp, batch)
    }

    /// A transition request, checked against the model, then repeated.
    fn transition(&mut self, shard: usize, req: Request, order_id: OrderId, t: T) {
        let now = self.model.now;
        let (expected, refused) = match self.model.orders.get(&order_id) {
            None => (Err(ErrorCode::OrderNotFound), false),
            Some(o) => {
                let owner_ok = match req {
                    Request::Cancel { user_id, .. } | Request::Refund { user_id, .. } => user_id == o.user_id,
                    _ => true,
                };
                if owner_ok {
                    let paid_txn = self.model.paid_txn.get(&order_id).copied().unwrap_or(0);
                    predict_transition(o, paid_txn, t, now)
                } else {
                    (Err(ErrorCode::OrderNotFound), false)
                }
            }
        };
        // A refused payment leaves one reconciliation record and nothing
        // else, once per (order, txn): a replay of it records nothing.
        let first_refusal = refused && {
            let T::Pay { txn, .. } = t else { panic!("only a payment is refused with a record") };
            self.model.refused.insert((order_id, txn))
        };
        let refusal_record: Vec<Event> =
            if first_refusal { vec![refused_payment(order_id, t, now)] } else { Vec::new() };
        let before = self.fingerprint();
        let (resp, mut batch) = self.decide(shard, &req);
        match expected {
            Err(code) => {
                assert_eq!(resp, Response::Error(code), "{req:?}");
                assert_eq!(batch.events, refusal_record, "{req:?}");
                assert!(batch.returns.is_empty(), "a refusal returned tokens: {req:?}");
            }
            Ok(status) => {
                let old = self.model.orders[&order_id];
                assert_eq!(resp, Response::Order(OrderView { status, ..old }), "{req:?}");
                if status == old.status {
                    assert!(batch.events.is_empty() && batch.returns.is_empty(), "a repeat changed state: {req:?}");
                } else {
                    let txn = match t {
                        T::Pay { txn, .. } => txn,
                        _ => 0,
                    };
                    let changed = Event::OrderStatusChanged {
                        order_id,
                        user_id: old.user_id,
                        activity_id: old.activity_id,
                        from: old.status,
                        status,
                        quantity: old.quantity,
                        amount_cents: old.amount_cents,
                        at_ms: now,
                        txn,
                    };
                    assert_eq!(batch.events, vec![changed], "{req:?}");
                    self.check_returns(&batch, &[old], status);
                }
            }
        }
        // Tokens go back only on release (once durable), never at decision time.
        self.check_pools_unchanged(&before);
        batch.release();
        if let Ok(status) = expected {
            let o = self.model.orders.get_mut(&order_id).expect("predicted order");
            if status == OrderStatus::Paid && o.status == OrderStatus::PendingPayment {
                let T::Pay { txn, .. } = t else { panic!("paid by {t:?}") };
                self.model.paid_txn.insert(order_id, txn);
            }
            o.status = status;
        }
        self.check();

        // Idempotence: the same request again answers the same and changes
        // nothing (a refused payment was recorded the first time only).
        let before = self.fingerprint();
        let (again, mut batch) = self.decide(shard, &req);
        assert_eq!(again, resp, "repeat of {req:?}");
        assert_eq!(batch.events, Vec::<Event>::new(), "repeat of {req:?}");
        assert!(batch.returns.is_empty(), "repeat of {req:?} returned tokens");
        batch.release();
        assert_eq!(self.fingerprint(), before, "repeat of {req:?} changed state");
    }

    /// Invariant 5: the batch returns exactly the tokens of the `orders`
    /// that stopped holding stock, once each, to their own pools.
    fn check_returns(&self, batch: &Batch, orders: &[OrderView], status: OrderStatus) {
        let freeing: Vec<&OrderView> = orders.iter().filter(|o| holds(o.status) && !holds(status)).collect();
        assert_eq!(batch.returns.len(), freeing.len(), "one return per freed order");
        let mut returned: BTreeMap<u64, u64> = BTreeMap::new();
        for r in &batch.returns {
            let act = self
                .pools
                .iter()
                .find(|(_, p)| Arc::ptr_eq(p, &r.pool))
                .map(|(a, _)| *a)
                .expect("tokens returned to a pool of this test");
            *returned.entry(act).or_default() += r.quantity;
        }
        let mut want: BTreeMap<u64, u64> = BTreeMap::new();
        for o in freeing {
            *want.entry(o.activity_id).or_default() += o.quantity as u64;
        }
        assert_eq!(returned, want, "tokens returned per activity");
    }

    fn check_pools_unchanged(&self, before: &Fingerprint) {
        let now: Vec<(u64, u64, u64)> = self.pools.iter().map(|(id, p)| (*id, p.added(), p.remaining())).collect();
        assert_eq!(now, before.pools, "tokens moved before the batch was released");
    }

    fn pick(&self, pick: &Index) -> Option<OrderView> {
        if self.model.order_ids.is_empty() {
            None
        } else {
            Some(self.model.orders[&self.model.order_ids[pick.index(self.model.order_ids.len())]])
        }
    }

    /// The shards' payment timers: exactly the pending orders at or past
    /// their deadline expire, each returning its tokens once.
    fn expire_due(&mut self) {
        let now = self.model.now;
        for shard in 0..self.shards.len() {
            let mut due: Vec<OrderView> = self
                .model
                .orders
                .values()
                .filter(|o| o.order_id.shard() as usize == shard)
                .filter(|o| o.status == OrderStatus::PendingPayment && o.pay_before_ms <= now)
                .copied()
                .collect();
            due.sort_by_key(|o| o.order_id);
            let before = self.fingerprint();
            let mut batch = Batch::default();
            let n = self.shards[shard].expire_due(now, &mut batch);
            assert_eq!(n, due.len(), "shard {shard}: orders expired at {now}");
            let mut events = batch.events.clone();
            events.sort_by_key(|e| match e {
                Event::OrderStatusChanged { order_id, .. } => *order_id,
                _ => OrderId::default(),
            });
            let want: Vec<Event> = due
                .iter()
                .map(|o| Event::OrderStatusChanged {
                    order_id: o.order_id,
                    user_id: o.user_id,
                    activity_id: o.activity_id,
                    from: OrderStatus::PendingPayment,
                    status: OrderStatus::Expired,
                    quantity: o.quantity,
                    amount_cents: o.amount_cents,
                    at_ms: now,
                    txn: 0,
                })
                .collect();
            assert_eq!(events, want, "shard {shard}: expiry events");
            self.check_returns(&batch, &due, OrderStatus::Expired);
            self.check_pools_unchanged(&before);
            batch.release();
            for o in &due {
                self.model.orders.get_mut(&o.order_id).expect("due order").status = OrderStatus::Expired;
            }
            self.check();
            // Running the timers again at the same time does nothing.
            let before = self.fingerprint();
            let mut batch = Batch::default();
            assert_eq!(self.shards[shard].expire_due(now, &mut batch), 0);
            assert!(batch.is_empty(), "timers ran twice");
            assert_eq!(self.fingerprint(), before);
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Buy { user, act, qty, key, token_ok } => {
                let replay = self.model.idempotency.get(&(user, key)).copied().filter(|_| key != 0);
                let expected = match replay {
                    Some(id) => Ok(self.model.orders[&id]),
                    None => self.model.predict_buy(user, act, qty, token_ok),
                };
                let shard = self.shard_of(user);
                let before = self.fingerprint();
                let remaining_before = self.pools.get(&act).map(|p| p.remaining());
                let req = Request::Buy {
                    user_id: user,
                    activity_id: act,
                    quantity: qty,
                    idempotency_key: key,
                    buy_token_ok: token_ok,
                };
                let (resp, mut batch) = self.decide(shard, &req);
                assert!(batch.returns.is_empty());
                match (expected, replay.is_some()) {
                    (Err(code), _) => {
                        assert_eq!(resp, Response::Error(code), "{req:?}");
                        assert!(batch.events.is_empty(), "a refused buy changed state");
                        self.check_pools_unchanged(&before);
                    }
                    (Ok(first), true) => {
                        // The same key again: the order it made, nothing new.
                        assert_eq!(resp, Response::Replayed(first), "{req:?}");
                        assert!(batch.events.is_empty(), "a replayed buy changed state");
                        self.check_pools_unchanged(&before);
                    }
                    (Ok(want), false) => {
                        let got = *as_order(&resp).unwrap_or_else(|| panic!("{req:?} -> {resp:?}"));
                        assert_eq!(OrderView { order_id: OrderId::default(), ..got }, want, "{req:?}");
                        assert!(got.order_id.is_well_formed());
                        assert_eq!(got.order_id.shard() as usize, shard, "order id names its shard");
                        assert!(!self.model.orders.contains_key(&got.order_id), "order id issued twice");
                        assert!(
                            matches!(&batch.events[..], [Event::OrderCreated(o)]
                                if o.view() == got && o.idempotency_key == key && o.paid_txn == 0),
                            "{:?}",
                            batch.events
                        );
                        // The tokens are taken at decision time.
                        assert_eq!(self.pools[&act].remaining(), remaining_before.expect("pool") - qty as u64);
                        self.model.orders.insert(got.order_id, got);
                        self.model.order_ids.push(got.order_id);
                        if key != 0 {
                            self.model.idempotency.insert((user, key), got.order_id);
                        }
                        let (limit, held) = (self.model.limit(user, act), self.model.held(user, act));
                        assert!(held <= limit, "user {user} holds {held} > limit {limit} after a buy");
                    }
                }
                batch.release();
            }
            Op::Cancel { ref pick, by } => {
                let Some(o) = self.pick(pick) else { return };
                let user_id = by.unwrap_or(o.user_id);
                let req = Request::Cancel { user_id, order_id: o.order_id };
                self.transition(self.shard_of(user_id), req, o.order_id, T::Cancel);
            }
            Op::Refund { ref pick, by } => {
                let Some(o) = self.pick(pick) else { return };
                let user_id = by.unwrap_or(o.user_id);
                let req = Request::Refund { user_id, order_id: o.order_id };
                let t = T::Refund { activity_ended: self.model.ended(o.activity_id) };
                self.transition(self.shard_of(user_id), req, o.order_id, t);
            }
            Op::Pay { ref pick, wrong_amount, txn } => {
                let Some(o) = self.pick(pick) else { return };
                let amount_cents = o.amount_cents + wrong_amount as u64;
                let t = T::Pay { amount_cents, txn };
                self.transition(o.order_id.shard() as usize, request_for(&o, t), o.order_id, t);
            }
            Op::Expire { ref pick, advance } => {
                let Some(o) = self.pick(pick) else { return };
                if let Some(extra) = advance {
                    self.model.now = self.model.now.max(o.pay_before_ms + extra);
                }
                let t = T::Expire;
                self.transition(o.order_id.shard() as usize, request_for(&o, t), o.order_id, t);
            }
            Op::Ship { ref pick } => {
                let Some(o) = self.pick(pick) else { return };
                let t = T::Ship;
                self.transition(o.order_id.shard() as usize, request_for(&o, t), o.order_id, t);
            }
            Op::Ghost { kind } => {
                let order_id = OrderId::first_at(self.model.now, OrderId::SHARD_MAX);
                let req = match kind {
                    0 => Request::Pay { order_id, amount_cents: 1, txn: 1 },
                    1 => Request::Cancel { user_id: 1, order_id },
                    2 => Request::Refund { user_id: 1, order_id },
                    3 => Request::Ship { order_id },
                    _ => Request::Expire { order_id },
                };
                self.transition(0, req, order_id, T::Ship);
            }
            Op::ExpireDue => self.expire_due(),
            Op::AddStock { act, amount } => {
                self.pools[&act].add(amount);
                *self.model.added.get_mut(&act).expect("activity") += amount;
            }
            Op::SetQuota { user, act, limit } => {
                let shard = self.shard_of(user);
                let req = Request::SetQuota { activity_id: act, user_id: user, limit };
                let (resp, mut batch) = self.decide(shard, &req);
                if limit > PER_USER_LIMIT_MAX {
                    assert_eq!(resp, Response::Error(ErrorCode::BadRequest));
                    assert!(batch.events.is_empty());
                } else if !self.model.acts.contains_key(&act) {
                    assert_eq!(resp, Response::Error(ErrorCode::ActivityNotFound));
                    assert!(batch.events.is_empty());
                } else {
                    assert_eq!(resp, Response::Done);
                    assert_eq!(batch.events, vec![Event::QuotaSet { activity_id: act, user_id: user, limit }]);
                    self.model.quotas.insert((user, act), limit);
                    let held = self.model.held(user, act);
                    if held > limit {
                        self.model.grandfathered.insert((user, act), held);
                    } else {
                        self.model.grandfathered.remove(&(user, act));
                    }
                }
                batch.release();
            }
            Op::SetStatus { act, status } => {
                let a = self.model.acts.get_mut(&act).expect("activity");
                a.status = status;
                let a = Arc::new(a.clone());
                for s in &mut self.shards {
                    s.install(a.clone(), self.pools[&act].clone());
                }
            }
            Op::Advance { ms } => self.model.now += ms,
        }
        self.check();
    }

    /// The invariants, after every step.
    fn check(&self) {
        let m = &self.model;
        let mut engine_held: BTreeMap<u64, u64> = BTreeMap::new();
        for s in &self.shards {
            for (a, n) in s.held_by_activity() {
                *engine_held.entry(a).or_default() += n;
            }
        }
        for (&act, pool) in &self.pools {
            let held = engine_held.get(&act).copied().unwrap_or(0);
            assert_eq!(pool.added(), m.added[&act], "activity {act}: tokens added");
            assert!(pool.remaining() <= pool.added(), "activity {act}: remaining above added");
            // Invariant 1: never oversold; tokens conserved exactly.
            assert!(held <= pool.added(), "activity {act} oversold: {held} held of {}", pool.added());
            assert_eq!(held, pool.added() - pool.remaining(), "activity {act}: tokens not conserved");
            assert_eq!(held, m.held_total(act), "activity {act}: engine and model disagree");
        }
        let engine_orders: usize = self.shards.iter().map(|s| s.orders.len()).sum();
        assert_eq!(engine_orders, m.orders.len(), "phantom or lost orders");
        for o in m.orders.values() {
            let s = &self.shards[o.order_id.shard() as usize];
            let e = s.orders.get(&o.order_id).expect("order lost");
            assert_eq!(e.view(), *o, "order differs from model");
            assert_eq!(e.paid_txn, m.paid_txn.get(&o.order_id).copied().unwrap_or(0));
        }
        for s in &self.shards {
            // The payment timer is armed no later than the first deadline.
            let first_due = m
                .orders
                .values()
                .filter(|o| o.order_id.shard() == s.id && o.status == OrderStatus::PendingPayment)
                .map(|o| o.pay_before_ms)
                .min();
            if let Some(due) = first_due {
                let armed = s.next_deadline_ms().expect("a pending order without a timer");
                assert!(armed <= due, "shard {}: timer at {armed}, first deadline {due}", s.id);
            }
            for u in 1..=USERS {
                let mine = shard_of_user(u, self.shards.len()) == s.id as usize;
                let n = s.user_orders.get(&u).map_or(0, |v| v.len());
                let want = if mine { m.orders.values().filter(|o| o.user_id == u).count() } else { 0 };
                assert_eq!(n, want, "user {u}: order list on shard {}", s.id);
            }
            for (&act, slot) in &s.slots {
                for (u, _) in slot.purchases.iter() {
                    assert!((1..=USERS).contains(&u), "purchase by unknown user {u}");
                }
                for u in 1..=USERS {
                    let mine = shard_of_user(u, self.shards.len()) == s.id as usize;
                    let from_orders: u32 = s
                        .orders
                        .values()
                        .filter(|o| o.user_id == u && o.activity_id == act && holds(o.status))
                        .map(|o| o.quantity)
                        .sum();
                    let held = slot.purchases.held(u);
                    assert_eq!(held, from_orders, "user {u} act {act}: purchases vs orders");
                    assert_eq!(held, if mine { m.held(u, act) } else { 0 }, "user {u} act {act}: purchases vs model");
                    if mine {
                        assert_eq!(slot.quotas.get(&u).copied(), m.quotas.get(&(u, act)).copied());
                        // Invariant 2: nobody above their limit (a lowered quota revokes nothing).
                        let limit = m.limit(u, act);
                        let cap = m.grandfathered.get(&(u, act)).copied().unwrap_or(0).max(limit);
                        assert!(held <= cap, "user {u} act {act}: holds {held} > limit {limit}");
                    } else {
                        assert!(slot.quotas.get(&u).is_none(), "quota on the wrong shard");
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, max_shrink_iters: 2_000, max_shrink_time: 60_000, ..ProptestConfig::default() })]

    #[test]
    fn shard_state_matches_model(
        n_shards in 1usize..=3,
        specs in prop::collection::vec(act_spec(), ACTIVITIES as usize),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut h = Harness::new(n_shards, &specs);
        h.check();
        for op in &ops {
            h.apply(op);
        }
        // Drain: the timers expire everything pending, paid orders are
        // refunded; every token not held by a shipped order (or a paid one
        // whose sale ended) comes home.
        h.model.now += 10_000;
        h.expire_due();
        let ids = h.model.order_ids.clone();
        for id in ids {
            let o = h.model.orders[&id];
            prop_assert_ne!(o.status, OrderStatus::PendingPayment);
            h.transition(id.shard() as usize, Request::Expire { order_id: id }, id, T::Expire);
            if o.status == OrderStatus::Paid && !h.model.ended(o.activity_id) {
                let req = Request::Refund { user_id: o.user_id, order_id: id };
                h.transition(h.shard_of(o.user_id), req, id, T::Refund { activity_ended: false });
            }
        }
        for (act, pool) in &h.pools {
            let still_held = h.model.held_total(*act);
            prop_assert_eq!(pool.added() - pool.remaining(), still_held);
            let unreleasable: u64 = h.model.orders.values()
                .filter(|o| o.activity_id == *act && holds(o.status))
                .inspect(|o| assert!(o.status == OrderStatus::Shipped || h.model.ended(*act), "{o:?} still holds stock"))
                .map(|o| o.quantity as u64)
                .sum();
            prop_assert_eq!(still_held, unreleasable);
        }
    }
}

// ---------------------------------------------------------------------------
// 2. Concurrent clients on a real `Engine`.
// ---------------------------------------------------------------------------

const MT_ACTIVITIES: u64 = 2;
const MT_USERS_PER_CLIENT: u64 = 3;

/// The operations of one concurrent client: `Op`'s transitions by their
/// owner, buys without key or token, `user` an index into the client's
/// users, and `Expire { advance: Some(0) }` moving the shared clock to the
/// deadline first. No `SetStatus`, `Advance`, `Ghost` or `ExpireDue`.
fn cop() -> impl Strategy<Value = Op> {
    let user = 0..MT_USERS_PER_CLIENT;
    let act = 1..=MT_ACTIVITIES;
    prop_oneof![
        8 => (user.clone(), act.clone(), quantity())
            .prop_map(|(user, act, qty)| Op::Buy { user, act, qty, key: 0, token_ok: false }),
        3 => any::<Index>().prop_map(|pick| Op::Cancel { pick, by: None }),
        3 => (any::<Index>(), prop::bool::weighted(0.2), prop_oneof![4 => Just(1u64), 1 => Just(2u64)])
            .prop_map(|(pick, wrong_amount, txn)| Op::Pay { pick, wrong_amount, txn }),
        2 => any::<Index>().prop_map(|pick| Op::Refund { pick, by: None }),
        1 => any::<Index>().prop_map(|pick| Op::Ship { pick }),
        2 => (any::<Index>(), any::<bool>()).prop_map(|(pick, advance)| Op::Expire { pick, advance: advance.then_some(0) }),
        1 => (act.clone(), 1u64..=3).prop_map(|(act, amount)| Op::AddStock { act, amount }),
        1 => (user, act, 0u32..=3).prop_map(|(user, act, limit)| Op::SetQuota { user, act, limit }),
    ]
}

/// One request through the front's path (`Engine::try_submit`, retried
/// every 50 µs while the queue is full), waiting at most 10 s for the answer. Unlike
/// `Engine::call`, this fails instead of hanging when a shard thread died
/// with the request queued (as a broken engine under test may).
fn call(engine: &Engine, req: Request) -> Response {
    let give_up = Instant::now() + Duration::from_secs(10);
    let (tx, rx) = crossbeam_channel::bounded(1);
    loop {
        let env = Envelope { req: req.clone(), tag: 7, reply: tx.clone().into() };
        match engine.try_submit(env) {
            Ok(()) => break,
            Err(code) => {
                assert!(Instant::now() < give_up, "{req:?}: {code:?} for 10 s");
                // Back off as a front's client would: spinning clients on
                // 2 cores starve the shard they wait for.
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
    match rx.recv_timeout(give_up.saturating_duration_since(Instant::now())) {
        Ok((tag, resp)) => {
            assert_eq!(tag, 7, "answer for another request");
            resp
        }
        Err(_) => panic!("{req:?}: no answer within 10 s (shard thread dead?)"),
    }
}

/// A pending order whose deadline has passed by `now_ms`: the shard's
/// timer may expire it at any moment, so its status is uncertain.
fn may_have_expired(o: &OrderView, now_ms: u64) -> bool {
    o.status == OrderStatus::PendingPayment && o.pay_before_ms <= now_ms
}

/// What one client knows: its own users, their quotas, and the last answer
/// it got for each of its orders. Only this client (and the shards' payment
/// timers) touch these.
struct Client {
    users: Vec<u64>,
    per_user_limit: BTreeMap<u64, u32>,
    quotas: HashMap<(u64, u64), u32>,
    grandfathered: HashMap<(u64, u64), u32>,
    orders: Vec<OrderView>,
    paid_txn: HashMap<OrderId, u64>,
    stock_added: BTreeMap<u64, u64>,
}

impl Client {
    fn limit(&self, user: u64, act: u64) -> u32 {
        self.quotas.get(&(user, act)).copied().unwrap_or(self.per_user_limit[&act])
    }

    /// Units held, exactly (once no status is uncertain any more).
    fn held(&self, user: u64, act: u64) -> u32 {
        self.held_range(user, act, 0).1
    }

    /// Units held at `now_ms`: (surely, at most).
    fn held_range(&self, user: u64, act: u64, now_ms: u64) -> (u32, u32) {
        let mine = self.orders.iter().filter(|o| o.user_id == user && o.activity_id == act && holds(o.status));
        mine.fold((0, 0), |(min, max), o| {
            let sure = if may_have_expired(o, now_ms) { 0 } else { o.quantity };
            (min + sure, max + o.quantity)
        })
    }

    /// Asks for every order whose status the timers may have changed.
    fn refresh(&mut self, engine: &Engine) {
        let now = engine.clock().now_ms();
        for o in self.orders.iter_mut().filter(|o| may_have_expired(o, now)) {
            let req = Request::GetOrder { user_id: Some(o.user_id), order_id: o.order_id };
            match call(engine, req) {
                Response::Order(v) if v == *o || v == OrderView { status: OrderStatus::Expired, ..*o } => *o = v,
                other => panic!("GetOrder of {o:?} -> {other:?}"),
            }
        }
    }

    fn run(&mut self, engine: &Engine, clock: &ManualClock, prices: &BTreeMap<u64, u64>, ops: &[Op]) {
        for op in ops {
            self.refresh(engine);
            match *op {
                Op::Buy { user, act, qty, .. } => self.buy(engine, prices, self.users[user as usize], act, qty),
                Op::Cancel { ref pick, .. } => self.transition(engine, pick, |_| T::Cancel),
                Op::Pay { ref pick, wrong_amount, txn } => self
                    .transition(engine, pick, |o| T::Pay { amount_cents: o.amount_cents + wrong_amount as u64, txn }),
                Op::Refund { ref pick, .. } => self.transition(engine, pick, |_| T::Refund { activity_ended: false }),
                Op::Ship { ref pick } => self.transition(engine, pick, |_| T::Ship),
                Op::Expire { ref pick, advance } => {
                    if let (Some(_), Some(o)) = (advance, self.pick(pick)) {
                        // Only ever forward: other clients move the clock too.
                        clock.advance_ms(o.pay_before_ms.saturating_sub(clock.now_ms()));
                    }
                    self.transition(engine, pick, |_| T::Expire);
                }
                Op::AddStock { act, amount } => {
                    let v = engine.add_stock(act, amount).expect("stock.add");
                    assert!(v.remaining <= v.total_stock, "{v:?}");
                    *self.stock_added.entry(act).or_default() += amount;
                }
                Op::SetQuota { user, act, limit } => {
                    let user = self.users[user as usize];
                    let resp = call(engine, Request::SetQuota { activity_id: act, user_id: user, limit });
                    assert_eq!(resp, Response::Done);
                    self.quotas.insert((user, act), limit);
                    let held = self.held_range(user, act, engine.clock().now_ms()).1;
                    if held > limit {
                        self.grandfathered.insert((user, act), held);
                    } else {
                        self.grandfathered.remove(&(user, act));
                    }
                }
                Op::SetStatus { .. } | Op::Advance { .. } | Op::Ghost { .. } | Op::ExpireDue => {
                    unreachable!("{op:?}: not a concurrent client's operation (`cop`)")
                }
            }
        }
    }

    fn buy(&mut self, engine: &Engine, prices: &BTreeMap<u64, u64>, user: u64, act: u64, qty: u32) {
        let req =
            Request::Buy { user_id: user, activity_id: act, quantity: qty, idempotency_key: 0, buy_token_ok: false };
        let resp = call(engine, req.clone());
        let after = engine.clock().now_ms();
        let limit = self.limit(user, act);
        let (held_min, held_max) = self.held_range(user, act, after);
        let exact = if limit == 0 {
            Some(ErrorCode::LimitReached)
        } else if qty == 0 || qty > limit {
            Some(ErrorCode::BadRequest)
        } else if held_min + qty > limit {
            Some(ErrorCode::LimitReached)
        } else {
            None // success or sold_out (the stock is shared), or limit_reached
                 // if an order of this user has not expired yet
        };
        match (exact, &resp) {
            (Some(code), _) => assert_eq!(resp, Response::Error(code), "{req:?}"),
            (None, Response::Error(ErrorCode::SoldOut)) => {}
            (None, Response::Error(ErrorCode::LimitReached)) if held_max + qty > limit => {}
            (None, Response::Order(v)) => {
                assert_eq!((v.user_id, v.activity_id, v.quantity), (user, act, qty));
                assert_eq!(v.status, OrderStatus::PendingPayment);
                assert_eq!(v.amount_cents, prices[&act] * qty as u64);
                // Decided at a time the clock showed (see `transition`).
                assert!((T0..=after).contains(&v.created_at_ms), "{v:?}");
                let timeout_ms = 1_000 * act; // activity i+1 has a timeout of i+1 s
                assert_eq!(v.pay_before_ms, v.created_at_ms + timeout_ms, "{v:?}");
                assert!(!self.orders.iter().any(|o| o.order_id == v.order_id), "id issued twice");
                self.orders.push(*v);
            }
            (None, other) => panic!("{req:?} -> {other:?}"),
        }
    }

    fn pick(&self, pick: &Index) -> Option<OrderView> {
        (!self.orders.is_empty()).then(|| self.orders[pick.index(self.orders.len())])
    }

    fn transition(&mut self, engine: &Engine, pick: &Index, t: impl Fn(&OrderView) -> T) {
        let Some(o) = self.pick(pick) else { return };
        let t = t(&o);
        let req = request_for(&o, t);
        let paid_txn = self.paid_txn.get(&o.order_id).copied().unwrap_or(0);
        // A shard decides a whole batch at the time it read when the batch
        // began, so a request may be decided slightly in the past. An order
        // past its deadline must still expire once a fresh batch sees the
        // clock: retry a refusal a bounded number of times.
        let before = engine.clock().now_ms();
        let mut resp = call(engine, req.clone());
        let must_expire = t == T::Expire && may_have_expired(&o, before);
        for _ in 0..1_000 {
            if !(must_expire && resp == Response::Error(ErrorCode::InvalidState)) {
                break;
            }
            std::thread::yield_now();
            resp = call(engine, req.clone());
        }
        let after = engine.clock().now_ms();
        // The order as it may have been when decided: as last seen, or
        // expired by its shard's timer.
        let mut states = vec![o];
        if may_have_expired(&o, after) {
            states.push(OrderView { status: OrderStatus::Expired, ..o });
        }
        let explains = |s: &OrderView, resp: &Response| {
            [before, after].iter().any(|&now| match predict_transition(s, paid_txn, t, now).0 {
                Ok(status) => *resp == Response::Order(OrderView { status, ..*s }),
                Err(code) => *resp == Response::Error(code),
            })
        };
        let possible: Vec<OrderView> = states.iter().copied().filter(|s| explains(s, &resp)).collect();
        assert!(!possible.is_empty(), "{req:?} on {o:?} -> {resp:?}");
        // Idempotent: the same request again, same answer (unless it was a
        // refused expiry, which the clock may have made due in between).
        let again = call(engine, req.clone());
        if !(t == T::Expire
            && o.status == OrderStatus::PendingPayment
            && resp == Response::Error(ErrorCode::InvalidState))
        {
            assert_eq!(again, resp, "repeat of {req:?}");
        }
        let last = match (&resp, &again) {
            (_, Response::Order(v)) | (Response::Order(v), _) => *v,
            // Only "expired" explains the refusal: the timer got there first.
            _ if possible.len() == 1 => possible[0],
            _ => o,
        };
        assert_eq!(last.order_id, o.order_id);
        if let (T::Pay { txn, .. }, OrderStatus::PendingPayment, OrderStatus::Paid) = (t, o.status, last.status) {
            self.paid_txn.insert(o.order_id, txn);
        }
        let slot = self.orders.iter_mut().find(|x| x.order_id == o.order_id).expect("own order");
        *slot = last;
    }
}

/// Per shard: (held per activity, every order, every purchase record, quotas).
type ShardDump = (HashMap<u64, u64>, Vec<Order>, Vec<(u64, u64, u32)>, Vec<(u64, u64, u32)>);

fn mt_case(n_shards: usize, queue_capacity: usize, stocks: &[u64], limits: &[u32], clients: &[Vec<Op>]) {
    let clock = ManualClock::new(T0);
    let config = EngineConfig { shards: n_shards, queue_capacity, ..EngineConfig::default() };
    let engine = Engine::start(config, Arc::new(clock.clone()), Sink::Immediate);
    let mut prices = BTreeMap::new();
    let mut per_user_limit = BTreeMap::new();
    for (i, (&stock, &limit)) in stocks.iter().zip(limits).enumerate() {
        let v = engine
            .create_activity(ActivitySpec {
                title: format!("sale {i}"),
                product_id: None,
                price_cents: 100 + i as u64,
                stock,
                terms: seckill_proto::SaleTerms {
                    starts_at_ms: T0,
                    ends_at_ms: T0 + 1_000_000_000,
                    per_user_limit: limit,
                    payment_timeout_s: 1 + i as u32,
                    require_buy_token: false,
                    gate_factor: 5,
                },
            })
            .expect("activity.create");
        prices.insert(v.id, v.price_cents);
        per_user_limit.insert(v.id, limit);
    }
    assert_eq!(prices.keys().copied().collect::<Vec<_>>(), (1..=MT_ACTIVITIES).collect::<Vec<_>>());

    // While the clients run, a watcher reads the activities the way an
    // operator (`activity.show`) and a buyer (`GET /activities/{id}`, served
    // by a shard) do: remaining never above total.
    let done = AtomicBool::new(false);
    let mut results: Vec<Client> = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            while !done.load(Ordering::Acquire) {
                for id in 1..=MT_ACTIVITIES {
                    let v = engine.activity(id).expect("activity");
                    assert!(v.remaining <= v.total_stock, "{v:?}");
                    match call(&engine, Request::GetActivity { activity_id: id }) {
                        Response::Activity(v) => assert!(v.remaining <= v.total_stock, "{v:?}"),
                        other => panic!("GetActivity {id} -> {other:?}"),
                    }
                }
                std::thread::yield_now();
            }
        });
        let handles: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(c, ops)| {
                let (engine, clock, prices) = (&engine, &clock, &prices);
                let mut client = Client {
                    users: (0..MT_USERS_PER_CLIENT).map(|u| 1_000 * (c as u64 + 1) + u).collect(),
                    per_user_limit: per_user_limit.clone(),
                    quotas: HashMap::new(),
                    grandfathered: HashMap::new(),
                    orders: Vec::new(),
                    paid_txn: HashMap::new(),
                    stock_added: BTreeMap::new(),
                };
                s.spawn(move || {
                    client.run(engine, clock, prices, ops);
                    client
                })
            })
            .collect();
        // Stop the watcher even when a client failed, then report the failure.
        let joined: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        done.store(true, Ordering::Release);
        let watched = watcher.join();
        let results = joined.into_iter().map(|r| r.unwrap_or_else(|e| std::panic::resume_unwind(e))).collect();
        watched.unwrap_or_else(|e| std::panic::resume_unwind(e));
        results
    });

    // The clock stands still now. The shards' timers must expire every
    // order past its deadline on their own; after that nothing moves.
    let now = clock.now_ms();
    let give_up = Instant::now() + Duration::from_secs(3);
    loop {
        let due: usize = engine
            .inspect(move |st| st.orders.values().filter(|o| may_have_expired(&o.view(), now)).count())
            .into_iter()
            .sum();
        if due == 0 {
            break;
        }
        assert!(Instant::now() < give_up, "{due} orders past their deadline never expired");
        std::thread::sleep(Duration::from_millis(5));
    }

    let dumps: Vec<ShardDump> = engine.inspect(|st| {
        let mut purchases = Vec::new();
        let mut quotas = Vec::new();
        for (&a, slot) in &st.slots {
            purchases.extend(slot.purchases.iter().map(|(u, n)| (a, u, n)));
            quotas.extend(slot.quotas.iter().map(|(&u, &n)| (a, u, n)));
        }
        let orders = st.orders.values().copied().collect();
        (st.held_by_activity().into_iter().collect(), orders, purchases, quotas)
    });

    // Invariant 1, across shards: tokens conserved exactly, never oversold.
    for (i, &stock) in stocks.iter().enumerate() {
        let act = i as u64 + 1;
        let v = engine.activity(act).expect("activity");
        let added: u64 = results.iter().map(|c| c.stock_added.get(&act).copied().unwrap_or(0)).sum();
        assert_eq!(v.total_stock, stock + added, "activity {act}: total");
        let held: u64 = dumps.iter().map(|d| d.0.get(&act).copied().unwrap_or(0)).sum();
        assert!(v.remaining <= v.total_stock);
        assert!(held <= v.total_stock, "activity {act} oversold: {held} of {}", v.total_stock);
        assert_eq!(held, v.total_stock - v.remaining, "activity {act}: tokens not conserved");
    }

    // Every order a client was answered exists, with the last status it saw
    // (or expired, if it was pending past its deadline), paid by the
    // transaction the client paid it with; no order exists that no client
    // was answered.
    let engine_orders: HashMap<OrderId, Order> = dumps.iter().flat_map(|d| d.1.iter().map(|o| (o.id, *o))).collect();
    let client_orders: usize = results.iter().map(|c| c.orders.len()).sum();
    assert_eq!(engine_orders.len(), client_orders, "phantom or lost orders");
    for c in &mut results {
        for o in &mut c.orders {
            let e = engine_orders.get(&o.order_id).unwrap_or_else(|| panic!("lost {o:?}"));
            if may_have_expired(o, now) && e.status == OrderStatus::Expired {
                o.status = OrderStatus::Expired;
            }
            assert_eq!(e.view(), *o, "order changed");
            assert_eq!(e.paid_txn, c.paid_txn.get(&o.order_id).copied().unwrap_or(0), "{o:?}");
        }
    }

    // Invariant 2 and purchase records: per user, what the orders say.
    let mut purchases: HashMap<(u64, u64), u32> = HashMap::new();
    for (s, d) in dumps.iter().enumerate() {
        for &(a, u, n) in &d.2 {
            assert_eq!(shard_of_user(u, n_shards), s, "user {u}'s purchases on the wrong shard");
            assert!(purchases.insert((u, a), n).is_none());
        }
        for &(_, u, _) in &d.3 {
            assert_eq!(shard_of_user(u, n_shards), s, "user {u}'s quota on the wrong shard");
        }
    }
    for c in &results {
        for &u in &c.users {
            for act in 1..=MT_ACTIVITIES {
                let held = purchases.remove(&(u, act)).unwrap_or(0);
                assert_eq!(held, c.held(u, act), "user {u} act {act}: purchases vs orders");
                let limit = c.limit(u, act);
                let cap = c.grandfathered.get(&(u, act)).copied().unwrap_or(0).max(limit);
                assert!(held <= cap, "user {u} act {act}: holds {held} > limit {limit}");
            }
        }
    }
    assert!(purchases.is_empty(), "purchases by nobody: {purchases:?}");
    engine.shutdown();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, max_shrink_iters: 200, max_shrink_time: 60_000, ..ProptestConfig::default() })]

    #[test]
    fn engine_concurrent_clients_keep_invariants(
        n_shards in 1usize..=4,
        queue_capacity in prop_oneof![Just(1usize), 2usize..=64],
        stocks in prop::collection::vec(0u64..=12, MT_ACTIVITIES as usize),
        limits in prop::collection::vec(1u32..=3, MT_ACTIVITIES as usize),
        clients in prop::collection::vec(prop::collection::vec(cop(), 1..80), 2..=4),
    ) {
        mt_case(n_shards, queue_capacity, &stocks, &limits, &clients);
    }
}

// ---------------------------------------------------------------------------
// 3. Returning tokens while stock is added.
// ---------------------------------------------------------------------------

/// Runs `body` while another thread adds one token at a time to `pool`, and
/// returns how many it added. The adder stops when `body` returns or panics.
fn while_stock_is_added(pool: &StockPool, body: impl FnOnce()) -> u64 {
    /// Stops the adder on the way out of `body`, a panic included (the scope
    /// would otherwise wait for it forever).
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let adder = s.spawn(|| {
            let mut added = 0u64;
            while !done.load(Ordering::Acquire) {
                pool.add(1);
                added += 1;
            }
            added
        });
        {
            let _stop = Stop(&done);
            body();
        }
        adder.join().expect("adder thread")
    })
}

/// Invariant 5 under concurrency: a cancelled order's tokens must go back
/// even while an operator adds stock to the same pool (the shard panics and
/// stops serving if `give_back` refuses them).
#[test]
fn give_back_races_stock_add() {
    const ROUNDS: u64 = 300_000;
    let pool = StockPool::new(1);
    let added = while_stock_is_added(&pool, || {
        for round in 0..ROUNDS {
            if pool.try_take(1) {
                if let Err(e) = pool.give_back(1) {
                    panic!("round {round}: a held token was refused: {e}");
                }
            }
        }
    });
    assert!(added > 0);
    assert_eq!(pool.added(), added + 1);
    assert_eq!(pool.remaining(), added + 1, "every taken token came back");
}

/// A buyer's view of an activity (served by a shard, without the catalog
/// lock) must never show more remaining than total, even while stock is
/// added.
#[test]
fn activity_view_consistent_during_stock_add() {
    const READS: u64 = 200_000;
    let pool = Arc::new(StockPool::new(0));
    let activity = Activity {
        id: 1,
        product_id: 0,
        product_name: "p".into(),
        title: "sale".into(),
        price_cents: 1,
        terms: seckill_proto::SaleTerms {
            starts_at_ms: T0,
            ends_at_ms: T0 + 1_000,
            per_user_limit: 1,
            payment_timeout_s: 1,
            require_buy_token: false,
            gate_factor: 5,
        },
        status: ActivityStatus::Active,
    };
    let mut shard = ShardState::new(0);
    shard.install(Arc::new(activity), pool.clone());
    let mut batch = Batch::default();
    let added = while_stock_is_added(&pool, || {
        for read in 0..READS {
            let resp = shard.handle(&Request::GetActivity { activity_id: 1 }, T0, &mut batch);
            let Response::Activity(v) = resp else { panic!("{resp:?}") };
            assert!(v.remaining <= v.total_stock, "read {read}: remaining {} > total {}", v.remaining, v.total_stock);
        }
    });
    assert!(batch.is_empty(), "a read changed state");
    assert!(added > 0);
    assert_eq!((pool.added(), pool.remaining()), (added, added));
}
