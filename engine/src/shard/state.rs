//! Everything one shard owns, and the decisions it makes. No threads, no
//! I/O: `handle` is a plain function of (state, request, now), which is what
//! the `engine/decide` benchmark and the property tests drive directly.

use crate::activity::Activity;
use crate::commit::{Batch, StockReturn};
use crate::event::Event;
use crate::order::{step, Order, Step, Transition};
use crate::purchases::Purchases;
use crate::shard::clicks::ClickLimit;
use crate::shard::orders::{OrderTable, Position};
use crate::stats::{ShardCounters, SlotCounters};
use crate::stock::StockPool;
use hashbrown::HashMap;
use seckill_proto::{ActivityView, ErrorCode, OrderId, OrderStatus, Phase, Request, Response, PAGE_LIMIT_MAX};
use smallvec::SmallVec;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// One activity as a shard sees it: shared config and stock, own users.
pub struct Slot {
    pub activity: Arc<Activity>,
    pub pool: Arc<StockPool>,
    pub purchases: Purchases,
    /// Per-user limits that override `per_user_limit` (VIP, whitelist).
    pub quotas: HashMap<u64, u32>,
    /// Users who were given a buy token. A user counts once against the
    /// gate however often they ask, so one user cannot drain it; the map
    /// is bounded by the gate (gate_factor × stock).
    pub token_holders: hashbrown::HashSet<u64>,
    /// This shard's figures for the activity (`stats`, dashboard, `/metrics`).
    pub counters: Arc<SlotCounters>,
}

impl Slot {
    fn limit_of(&self, user_id: u64) -> u32 {
        self.quotas.get(&user_id).copied().unwrap_or(self.activity.terms.per_user_limit)
    }
}

/// Everything one shard owns (its users' purchases, orders, click buckets,
/// payment deadlines) and the decisions made on it; no threads, no I/O.
pub struct ShardState {
    pub id: u16,
    /// The engine's group (`EngineConfig::group`), named in every order id.
    group: u8,
    pub slots: HashMap<u64, Slot>,
    pub orders: OrderTable,
    /// Each user's orders (positions in `orders`), oldest first. Most
    /// buyers of a flash sale hold one or two: they live inline, so
    /// creating them allocates nothing.
    pub user_orders: HashMap<u64, SmallVec<[Position; 2]>>,
    /// The last order id issued; ids only grow.
    last_id: OrderId,
    /// Buy clicks per user (token buckets), for the users this shard owns.
    pub clicks: ClickLimit,
    /// Payments refused and recorded, by (order, transaction hash): a
    /// replay answers the same error without a second record. At most
    /// `REFUSALS_REMEMBERED_MAX`; past that a refusal is recorded each time.
    pub refused: hashbrown::HashSet<(OrderId, u64)>,
    /// Payment deadlines, soonest first. Entries of orders that left
    /// pending_payment are skipped when they come due (no removal needed).
    deadlines: BinaryHeap<Reverse<(u64, OrderId)>>,
    /// Every slot's counters, for readers on other threads.
    pub counters: Arc<ShardCounters>,
}

type Outcome = Result<Response, ErrorCode>;

/// Refused payments a shard remembers (~24 bytes each).
pub(crate) const REFUSALS_REMEMBERED_MAX: usize = 1 << 20;

/// Most orders a shard makes room for when an activity is installed.
pub(crate) const ORDERS_RESERVE_MAX: u64 = 1 << 20;

impl ShardState {
    /// An empty shard numbered `id` of group 0 (named in the order ids it issues).
    pub fn new(id: u16) -> Self {
        Self::in_group(0, id)
    }

    /// An empty shard numbered `id` of the engine of group `group` (both
    /// named in the order ids it issues).
    pub fn in_group(group: u8, id: u16) -> Self {
        assert!(id <= OrderId::SHARD_MAX && group <= OrderId::GROUP_MAX);
        Self {
            id,
            group,
            slots: HashMap::new(),
            orders: OrderTable::default(),
            user_orders: HashMap::new(),
            last_id: OrderId::first_in(0, group, id),
            clicks: ClickLimit::new(0),
            refused: hashbrown::HashSet::new(),
            deadlines: BinaryHeap::new(),
            counters: Arc::default(),
        }
    }

    /// The group whose order ids this shard issues.
    pub fn group(&self) -> u8 {
        self.group
    }

    /// Installs or replaces an activity's configuration and its stock pool.
    pub fn install(&mut self, activity: Arc<Activity>, pool: Arc<StockPool>) {
        let id = activity.id;
        match self.slots.get_mut(&id) {
            Some(slot) => {
                slot.activity = activity;
                slot.pool = pool;
            }
            None => {
                // Room for the whole sale up front (bounded): growing a big
                // table mid-sale rehashes it on the shard thread, a pause of
                // milliseconds that every queued buyer would wait out.
                let expected = pool.added().min(ORDERS_RESERVE_MAX) as usize;
                self.orders.reserve(expected);
                self.user_orders.reserve(expected);
                self.deadlines.reserve(expected);
                self.clicks.reserve(expected);
                let counters = Arc::new(SlotCounters::default());
                self.counters.register(id, counters.clone());
                let slot = Slot {
                    activity,
                    pool,
                    purchases: Purchases::with_capacity(expected),
                    quotas: HashMap::new(),
                    token_holders: Default::default(),
                    counters,
                };
                self.slots.insert(id, slot);
            }
        }
    }

    /// Decides one request. State changes go into `batch.events` (and freed
    /// tokens into `batch.returns`); the answer is returned to the caller,
    /// who must hold it until the batch is durable.
    pub fn handle(&mut self, req: &Request, now_ms: u64, batch: &mut Batch) -> Response {
        let outcome = match *req {
            Request::Buy { user_id, activity_id, quantity, idempotency_key, buy_token_ok } => {
                if let Err(retry_after_s) = self.clicks.take(user_id, now_ms) {
                    if let Some(slot) = self.slots.get(&activity_id) {
                        slot.counters.buy_refused(ErrorCode::RateLimited);
                    }
                    return Response::RateLimited { retry_after_s };
                }
                // Unkeyed buys skip this; a keyed one looks at its buyer's
                // own orders only (most buyers of a sale have none yet).
                if let Some(order) = self.keyed_order(user_id, idempotency_key) {
                    let resp = Response::Replayed(order.view());
                    if let Some(slot) = self.slots.get(&activity_id) {
                        slot.counters.buy_replayed();
                    }
                    return resp;
                }
                // `buy` counts its own outcomes (it has the slot at hand).
                self.buy(user_id, activity_id, quantity, idempotency_key, buy_token_ok, now_ms, batch)
            }
            Request::IssueBuyToken { user_id, activity_id } => {
                if let Err(retry_after_s) = self.clicks.take(user_id, now_ms) {
                    return Response::RateLimited { retry_after_s };
                }
                self.issue_buy_token(user_id, activity_id, now_ms)
            }
            Request::GetOrder { user_id, order_id } => self.find(user_id, order_id).map(|o| Response::Order(o.view())),
            Request::ListOrders { user_id, offset, limit } => Ok(self.list_orders(user_id, offset, limit)),
            Request::Cancel { user_id, order_id } => {
                self.transition(Some(user_id), order_id, Transition::Cancel, now_ms, 0, batch)
            }
            Request::Pay { order_id, amount_cents, txn } => self.pay(order_id, amount_cents, txn, now_ms, batch),
            Request::Refund { user_id, order_id } => {
                let t = Transition::Refund { activity_ended: false };
                self.transition(Some(user_id), order_id, t, now_ms, 0, batch)
            }
            Request::Ship { order_id } => self.transition(None, order_id, Transition::Ship, now_ms, 0, batch),
            Request::Expire { order_id } => self.transition(None, order_id, Transition::Expire, now_ms, 0, batch),
            Request::SetQuota { activity_id, user_id, limit } => self.set_quota(activity_id, user_id, limit, batch),
            Request::GetActivity { activity_id } => self
                .slots
                .get(&activity_id)
                .map(|s| Response::Activity(Box::new(view_of(s, now_ms))))
                .ok_or(ErrorCode::ActivityNotFound),
            Request::ListActivities { offset, limit } => Ok(self.list_activities(offset, limit, now_ms)),
        };
        outcome.unwrap_or_else(Response::Error)
    }

    /// Reads what deciding `req` will read, without deciding: the shard
    /// runs it over a whole batch first (`shard::decide_all`).
    #[inline]
    pub(crate) fn warm(&self, req: &Request) {
        if let Request::Buy { user_id, activity_id, .. } = *req {
            self.clicks.warm(user_id);
            if let Some(slot) = self.slots.get(&activity_id) {
                std::hint::black_box(slot.purchases.held(user_id));
            }
            std::hint::black_box(self.user_orders.contains_key(&user_id));
        }
    }

    /// The order `user_id` made with idempotency key `key` (0: none), if
    /// any. The key is a field of the order (and of its `OrderCreated`
    /// record), so every replica and every recovery knows it; the lookup is
    /// a scan of this user's orders, which are few, instead of a second map
    /// that every keyed order would grow.
    #[inline]
    fn keyed_order(&self, user_id: u64, key: u64) -> Option<&Order> {
        if key == 0 {
            return None;
        }
        let held = self.user_orders.get(&user_id)?;
        held.iter().map(|at| self.orders.at(*at)).find(|o| o.idempotency_key == key)
    }

    #[allow(clippy::too_many_arguments)]
    fn buy(
        &mut self,
        user_id: u64,
        activity_id: u64,
        quantity: u32,
        idempotency_key: u64,
        buy_token_ok: bool,
        now_ms: u64,
        batch: &mut Batch,
    ) -> Outcome {
        let slot = self.slots.get(&activity_id).ok_or(ErrorCode::ActivityNotFound)?;
        let taken = Self::take_stock(slot, user_id, quantity, buy_token_ok, now_ms);
        slot.counters.buy_decided(taken);
        taken?;
        let amount_cents = slot.activity.price_cents.saturating_mul(quantity as u64);
        let pay_before_ms = now_ms + slot.activity.terms.payment_timeout_s as u64 * 1000;
        let order = Order {
            id: self.next_id(now_ms),
            user_id,
            activity_id,
            quantity,
            amount_cents,
            status: OrderStatus::PendingPayment,
            created_at_ms: now_ms,
            pay_before_ms,
            idempotency_key,
            paid_txn: 0,
        };
        self.insert_order(order);
        batch.events.push(Event::OrderCreated(order));
        Ok(Response::Order(order.view()))
    }

    /// The checks of a buy, in order, ending with taking its units from
    /// the pool: `Ok` means the units are taken and the order must be made.
    #[inline(always)]
    fn take_stock(slot: &Slot, user_id: u64, quantity: u32, buy_token_ok: bool, now_ms: u64) -> Result<(), ErrorCode> {
        if let Some(code) = slot.activity.refuse_buy(now_ms) {
            return Err(code);
        }
        if slot.activity.terms.require_buy_token && !buy_token_ok {
            return Err(ErrorCode::BuyTokenRequired);
        }
        let limit = slot.limit_of(user_id);
        if limit == 0 {
            return Err(ErrorCode::LimitReached);
        }
        if quantity == 0 || quantity > limit {
            return Err(ErrorCode::BadRequest);
        }
        if slot.purchases.held(user_id) + quantity > limit {
            return Err(ErrorCode::LimitReached);
        }
        if !slot.pool.try_take(quantity as u64) {
            return Err(ErrorCode::SoldOut);
        }
        Ok(())
    }

    fn next_id(&mut self, now_ms: u64) -> OrderId {
        let id = OrderId::first_in(now_ms, self.group, self.id).max(self.last_id.successor());
        self.last_id = id;
        id
    }

    fn find(&self, user_id: Option<u64>, order_id: OrderId) -> Result<&Order, ErrorCode> {
        self.orders.get(&order_id).filter(|o| user_id.is_none_or(|u| u == o.user_id)).ok_or(ErrorCode::OrderNotFound)
    }

    /// A payment arrived. Checked against the amount and the transaction
    /// that paid the order before; money that cannot be taken is recorded
    /// (a `PaymentRefused` event) so it can be returned to the buyer, once
    /// per (order, transaction): a replay answers the same and records nothing.
    fn pay(&mut self, order_id: OrderId, amount_cents: u64, txn: u64, now_ms: u64, batch: &mut Batch) -> Outcome {
        let order = *self.find(None, order_id)?;
        let remembered = &mut self.refused;
        let mut refused = |batch: &mut Batch, code| {
            if remembered.contains(&(order_id, txn)) {
                return Err(code);
            }
            if remembered.len() < REFUSALS_REMEMBERED_MAX {
                remembered.insert((order_id, txn));
            }
            batch.events.push(Event::PaymentRefused { order_id, amount_cents, txn, at_ms: now_ms });
            tracing::warn!(%order_id, amount_cents, txn, ?code, "payment refused; recorded for reconciliation");
            Err(code)
        };
        if amount_cents != order.amount_cents {
            return refused(batch, ErrorCode::AmountMismatch);
        }
        match order.status {
            OrderStatus::Paid | OrderStatus::Shipped | OrderStatus::Refunded if order.paid_txn != txn => {
                refused(batch, ErrorCode::InvalidState)
            }
            OrderStatus::Cancelled | OrderStatus::Expired => refused(batch, ErrorCode::InvalidState),
            _ => self.transition(None, order_id, Transition::Pay, now_ms, txn, batch),
        }
    }

    /// The buy-token gate: may `user_id` get a token for `activity_id`?
    fn issue_buy_token(&mut self, user_id: u64, activity_id: u64, now_ms: u64) -> Outcome {
        let slot = self.slots.get(&activity_id).ok_or(ErrorCode::ActivityNotFound)?;
        if !slot.activity.terms.require_buy_token {
            return Err(ErrorCode::BadRequest);
        }
        if let Some(code) = slot.activity.refuse_buy(now_ms) {
            return Err(code);
        }
        let limit = slot.limit_of(user_id);
        if limit == 0 || slot.purchases.held(user_id) >= limit {
            return Err(ErrorCode::LimitReached);
        }
        if slot.pool.remaining() == 0 {
            return Err(ErrorCode::SoldOut);
        }
        if slot.token_holders.contains(&user_id) {
            return Ok(Response::Done);
        }
        if !slot.pool.try_issue_gate(slot.activity.terms.gate_factor) {
            return Err(ErrorCode::SoldOut);
        }
        let slot = self.slots.get_mut(&activity_id).ok_or(ErrorCode::ActivityNotFound)?;
        slot.token_holders.insert(user_id);
        Ok(Response::Done)
    }

    /// Expires every pending order whose deadline is at or before `now_ms`.
    /// Returns how many it expired.
    pub fn expire_due(&mut self, now_ms: u64, batch: &mut Batch) -> usize {
        let mut expired = 0;
        while let Some(Reverse((deadline, id))) = self.deadlines.peek().copied() {
            if deadline > now_ms {
                break;
            }
            self.deadlines.pop();
            if self.orders.get(&id).is_some_and(|o| o.status == OrderStatus::PendingPayment) {
                let r = self.transition(None, id, Transition::Expire, now_ms, 0, batch);
                debug_assert!(matches!(r, Ok(Response::Order(_))), "{r:?}");
                expired += 1;
            }
        }
        if expired > 0 {
            metrics::counter!("seckill_orders_expired_total").increment(expired as u64);
        }
        expired
    }

    /// The next payment deadline, if any order is waiting.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.deadlines.peek().map(|Reverse((d, _))| *d)
    }

    fn transition(
        &mut self,
        user_id: Option<u64>,
        order_id: OrderId,
        mut t: Transition,
        now_ms: u64,
        txn: u64,
        batch: &mut Batch,
    ) -> Outcome {
        let order = *self.find(user_id, order_id)?;
        let slot = self.slots.get(&order.activity_id).ok_or(ErrorCode::ActivityNotFound)?;
        match t {
            Transition::Refund { .. } => {
                t = Transition::Refund { activity_ended: slot.activity.phase(now_ms) == Phase::Ended }
            }
            Transition::Expire if now_ms < order.pay_before_ms && order.status == OrderStatus::PendingPayment => {
                return Err(ErrorCode::InvalidState);
            }
            _ => {}
        }
        match step(order.status, t)? {
            Step::AlreadyDone => Ok(Response::Order(order.view())),
            Step::To { status, frees_stock } => {
                if frees_stock {
                    let pool = slot.pool.clone();
                    batch.returns.push(StockReturn { pool, quantity: order.quantity as u64 });
                }
                self.set_status(order_id, status, txn);
                batch.events.push(Event::OrderStatusChanged {
                    order_id,
                    user_id: order.user_id,
                    activity_id: order.activity_id,
                    from: order.status,
                    status,
                    quantity: order.quantity,
                    amount_cents: order.amount_cents,
                    at_ms: now_ms,
                    txn,
                });
                Ok(Response::Order(self.orders[&order_id].view()))
            }
        }
    }

    fn set_quota(&mut self, activity_id: u64, user_id: u64, limit: u32, batch: &mut Batch) -> Outcome {
        if limit > crate::activity::PER_USER_LIMIT_MAX {
            return Err(ErrorCode::BadRequest);
        }
        let slot = self.slots.get_mut(&activity_id).ok_or(ErrorCode::ActivityNotFound)?;
        slot.quotas.insert(user_id, limit);
        batch.events.push(Event::QuotaSet { activity_id, user_id, limit });
        Ok(Response::Done)
    }

    fn list_orders(&self, user_id: u64, offset: u32, limit: u32) -> Response {
        let held = self.user_orders.get(&user_id).map(|v| v.as_slice()).unwrap_or(&[]);
        let items = held
            .iter()
            .rev()
            .skip(offset as usize)
            .take(limit.min(PAGE_LIMIT_MAX) as usize)
            .map(|at| self.orders.at(*at).view())
            .collect();
        Response::Orders { items, total: held.len() as u64 }
    }

    fn list_activities(&self, offset: u32, limit: u32, now_ms: u64) -> Response {
        let mut ids: Vec<u64> = self.slots.keys().copied().collect();
        ids.sort_unstable();
        let items = ids
            .iter()
            .skip(offset as usize)
            .take(limit.min(PAGE_LIMIT_MAX) as usize)
            .map(|id| view_of(&self.slots[id], now_ms))
            .collect();
        Response::Activities { items, total: ids.len() as u64 }
    }

    // The two mutations below are shared by live decisions and recovery, so
    // a replayed log rebuilds exactly the state the live shard had.

    /// Records a new order and the units its buyer now holds.
    pub(crate) fn insert_order(&mut self, order: Order) {
        if let Some(slot) = self.slots.get_mut(&order.activity_id) {
            if order.status.holds_stock() {
                slot.purchases.add(order.user_id, order.quantity);
            }
            slot.counters.order_added(order.status, order.quantity);
        }
        let at = self.orders.insert(order);
        self.user_orders.entry(order.user_id).or_default().push(at);
        if order.status == OrderStatus::PendingPayment {
            self.deadlines.push(Reverse((order.pay_before_ms, order.id)));
        }
        if order.id.shard() == self.id && order.id.group() == self.group && order.id > self.last_id {
            self.last_id = order.id;
        }
    }

    /// Moves an order to `status`, releasing the buyer's units when the new
    /// status no longer holds stock.
    pub fn set_status(&mut self, order_id: OrderId, status: OrderStatus, txn: u64) {
        let Some(order) = self.orders.get_mut(&order_id) else {
            panic!("status change for unknown order {order_id}");
        };
        let was = order.status;
        order.status = status;
        if status == OrderStatus::Paid {
            order.paid_txn = txn;
        }
        let (user, activity, quantity) = (order.user_id, order.activity_id, order.quantity);
        if let Some(slot) = self.slots.get_mut(&activity) {
            if was.holds_stock() && !status.holds_stock() {
                slot.purchases.release(user, quantity);
            }
            slot.counters.order_moved(was, status, quantity);
        }
    }

    /// Units held by orders of this shard, per activity (for recovery and checks).
    pub fn held_by_activity(&self) -> HashMap<u64, u64> {
        let mut held = HashMap::new();
        for o in self.orders.values().filter(|o| o.status.holds_stock()) {
            *held.entry(o.activity_id).or_insert(0) += o.quantity as u64;
        }
        held
    }
}

pub(crate) fn view_of(slot: &Slot, now_ms: u64) -> ActivityView {
    let a = &slot.activity;
    // `remaining` first: `add` grows `added` before `remaining`, so in this
    // order a view never shows more remaining than total during a stock.add.
    let remaining = slot.pool.remaining();
    ActivityView {
        id: a.id,
        product_id: a.product_id,
        product_name: a.product_name.clone(),
        title: a.title.clone(),
        price_cents: a.price_cents,
        total_stock: slot.pool.added(),
        remaining,
        terms: a.terms,
        status: a.status,
        phase: a.phase(now_ms),
    }
}
