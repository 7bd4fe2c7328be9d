//! What the operator watches per activity (orders by status, units held,
//! buys by outcome), counted by the shards without slowing them down.
//!
//! Each shard keeps one [`SlotCounters`] per activity, written only by the
//! thread that owns the shard (recovery, then the shard thread): a relaxed
//! load and store per change, no read-modify-write, no lock, no allocation.
//! Readers (`stats`, the dashboard, `/metrics`) add up every shard's
//! counters; the only lock is the list of them, taken when a shard installs
//! an activity and when someone reads.

use parking_lot::Mutex;
use seckill_proto::{ErrorCode, OrderStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

seckill_proto::named_enum! {
    /// How a buy the engine decided ended, as named in `stats`, the
    /// dashboard and `seckill_activity_buys_total{outcome}`; the number is
    /// the index into `BuyOutcome::NAMES`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum BuyOutcome: usize {
        Created = 0 => "created",
        Replayed = 1 => "replayed",
        SoldOut = 2 => "sold_out",
        LimitReached = 3 => "limit_reached",
        RateLimited = 4 => "rate_limited",
        NotStarted = 5 => "not_started",
        Ended = 6 => "ended",
        Paused = 7 => "paused",
        BuyTokenRequired = 8 => "buy_token_required",
        BadRequest = 9 => "bad_request",
        Other = 10 => "other",
    }
}

impl BuyOutcome {
    pub(crate) fn of_error(code: ErrorCode) -> BuyOutcome {
        match code {
            ErrorCode::SoldOut => Self::SoldOut,
            ErrorCode::LimitReached => Self::LimitReached,
            ErrorCode::RateLimited => Self::RateLimited,
            ErrorCode::NotStarted => Self::NotStarted,
            ErrorCode::Ended => Self::Ended,
            ErrorCode::Paused => Self::Paused,
            ErrorCode::BuyTokenRequired => Self::BuyTokenRequired,
            ErrorCode::BadRequest => Self::BadRequest,
            _ => Self::Other,
        }
    }

    /// The HTTP status a buyer gets for this outcome.
    pub fn http_status(self) -> u16 {
        match self {
            Self::Created => 201,
            Self::Replayed => 200,
            Self::RateLimited => 429,
            Self::BadRequest => 400,
            Self::Other => 500,
            _ => 409,
        }
    }
}

#[inline]
fn status_index(s: OrderStatus) -> usize {
    s as usize - 1
}

/// Raw buy counters: [`RAW_CREATED`], each `ErrorCode as usize` (1..=19),
/// [`RAW_REPLAYED`]. Indexed by the code itself so the shard maps nothing
/// when it counts; readers fold them into `BuyOutcome::NAMES`.
const RAW_BUYS: usize = 21;
const RAW_CREATED: usize = 0;
const RAW_REPLAYED: usize = 20;

/// One shard's figures for one activity. Single writer (the shard's owner).
#[derive(Debug, Default)]
pub struct SlotCounters {
    /// Orders in each status (index: `OrderStatus as usize - 1`).
    orders: [AtomicU64; 6],
    /// Units held by orders that hold stock (pending payment, paid, shipped).
    held_units: AtomicU64,
    /// Buys decided, by raw outcome (see `RAW_BUYS`).
    buys: [AtomicU64; RAW_BUYS],
}

/// Adds `by` (may be negative) to a counter only one thread writes: a
/// plain load and store, so the owner pays no locked instruction.
#[inline]
fn add(c: &AtomicU64, by: i64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(by as u64), Ordering::Relaxed);
}

impl SlotCounters {
    /// Counts a buy decided with `result` (`Ok`: an order was made).
    #[inline(always)]
    pub(crate) fn buy_decided(&self, result: Result<(), ErrorCode>) {
        let i = match result {
            Ok(()) => RAW_CREATED,
            Err(code) => code as usize,
        };
        if let Some(c) = self.buys.get(i) {
            add(c, 1);
        }
    }

    /// Counts a buy answered with a replayed order (same Idempotency-Key).
    #[inline]
    pub(crate) fn buy_replayed(&self) {
        add(&self.buys[RAW_REPLAYED], 1);
    }

    /// Counts a buy refused with `code` before the activity was looked at.
    #[inline]
    pub(crate) fn buy_refused(&self, code: ErrorCode) {
        self.buy_decided(Err(code));
    }

    /// A new order (live or replayed in recovery).
    #[inline]
    pub(crate) fn order_added(&self, status: OrderStatus, quantity: u32) {
        add(&self.orders[status_index(status)], 1);
        if status.holds_stock() {
            add(&self.held_units, quantity as i64);
        }
    }

    /// An order moved from `from` to `to`.
    #[inline]
    pub(crate) fn order_moved(&self, from: OrderStatus, to: OrderStatus, quantity: u32) {
        add(&self.orders[status_index(from)], -1);
        add(&self.orders[status_index(to)], 1);
        let delta = from.held_delta(to, quantity);
        if delta != 0 {
            add(&self.held_units, delta);
        }
    }

    /// The figures as of now (each read separately; they may be a moment apart).
    pub fn read(&self) -> SlotFigures {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut buys = [0u64; BuyOutcome::NAMES.len()];
        for (i, c) in self.buys.iter().enumerate() {
            let outcome = match i {
                RAW_CREATED => BuyOutcome::Created,
                RAW_REPLAYED => BuyOutcome::Replayed,
                code => ErrorCode::from_u8(code as u8).map_or(BuyOutcome::Other, BuyOutcome::of_error),
            };
            buys[outcome as usize] += load(c);
        }
        SlotFigures { orders: std::array::from_fn(|i| load(&self.orders[i])), held_units: load(&self.held_units), buys }
    }
}

/// A reading of [`SlotCounters`], or their sum over shards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotFigures {
    pub orders: [u64; 6],
    pub held_units: u64,
    pub buys: [u64; BuyOutcome::NAMES.len()],
}

impl std::ops::AddAssign for SlotFigures {
    fn add_assign(&mut self, o: SlotFigures) {
        for (a, b) in self.orders.iter_mut().zip(o.orders) {
            *a = a.wrapping_add(b);
        }
        self.held_units = self.held_units.wrapping_add(o.held_units);
        for (a, b) in self.buys.iter_mut().zip(o.buys) {
            *a = a.wrapping_add(b);
        }
    }
}

impl SlotFigures {
    /// Orders in `status`.
    pub fn orders_in(&self, status: OrderStatus) -> u64 {
        self.orders[status_index(status)]
    }
}

/// Every [`SlotCounters`] of one shard, for readers.
#[derive(Debug, Default)]
pub struct ShardCounters {
    slots: Mutex<Vec<(u64, Arc<SlotCounters>)>>,
}

impl ShardCounters {
    /// Called by the shard's owner when it installs a new activity.
    pub fn register(&self, activity_id: u64, counters: Arc<SlotCounters>) {
        self.slots.lock().push((activity_id, counters));
    }

    /// `(activity id, figures)` for every activity this shard has.
    pub fn read(&self) -> Vec<(u64, SlotFigures)> {
        self.slots.lock().iter().map(|(id, c)| (*id, c.read())).collect()
    }
}

/// One activity as the operator sees it: its view and its figures summed
/// over every shard.
#[derive(Clone, Debug)]
pub struct ActivityStats {
    pub view: seckill_proto::ActivityView,
    pub figures: SlotFigures,
}

impl ActivityStats {
    /// Units held by orders that hold stock.
    pub fn sold(&self) -> u64 {
        self.figures.held_units
    }

    /// The object `stats` lists under `activities` (docs/API.md).
    pub fn to_json(&self) -> serde_json::Value {
        let v = &self.view;
        let orders: serde_json::Map<String, serde_json::Value> =
            OrderStatus::ALL.iter().map(|s| (s.as_str().to_string(), self.figures.orders_in(*s).into())).collect();
        let buys: serde_json::Map<String, serde_json::Value> =
            BuyOutcome::NAMES.iter().zip(self.figures.buys).map(|(name, n)| (name.to_string(), n.into())).collect();
        serde_json::json!({
            "id": v.id,
            "title": v.title,
            "status": v.status,
            "phase": v.phase,
            "stock_total": v.total_stock,
            "stock_left": v.remaining,
            "sold": self.sold(),
            "orders": orders,
            "buys": buys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_named_in_index_order() {
        for (o, name) in [
            (BuyOutcome::Created, "created"),
            (BuyOutcome::Replayed, "replayed"),
            (BuyOutcome::SoldOut, "sold_out"),
            (BuyOutcome::LimitReached, "limit_reached"),
            (BuyOutcome::RateLimited, "rate_limited"),
            (BuyOutcome::NotStarted, "not_started"),
            (BuyOutcome::Ended, "ended"),
            (BuyOutcome::Paused, "paused"),
            (BuyOutcome::BuyTokenRequired, "buy_token_required"),
            (BuyOutcome::BadRequest, "bad_request"),
            (BuyOutcome::Other, "other"),
        ] {
            assert_eq!(BuyOutcome::NAMES[o as usize], name);
        }
        for (i, o) in BuyOutcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
        // Error codes keep their names where there is an outcome for them.
        for code in ErrorCode::ALL {
            let o = BuyOutcome::of_error(code);
            if o != BuyOutcome::Other {
                assert_eq!(BuyOutcome::NAMES[o as usize], code.as_str());
                assert_eq!(o.http_status(), code.http_status());
            }
        }
    }

    #[test]
    fn buys_are_read_back_by_outcome() {
        let c = SlotCounters::default();
        c.buy_decided(Ok(()));
        c.buy_decided(Ok(()));
        c.buy_decided(Err(ErrorCode::SoldOut));
        c.buy_refused(ErrorCode::RateLimited);
        c.buy_replayed();
        c.buy_decided(Err(ErrorCode::Internal));
        let f = c.read();
        let get = |o: BuyOutcome| f.buys[o as usize];
        assert_eq!(get(BuyOutcome::Created), 2);
        assert_eq!(get(BuyOutcome::SoldOut), 1);
        assert_eq!(get(BuyOutcome::RateLimited), 1);
        assert_eq!(get(BuyOutcome::Replayed), 1);
        assert_eq!(get(BuyOutcome::Other), 1);
        assert_eq!(f.buys.iter().sum::<u64>(), 6);
        assert!(ErrorCode::ALL.iter().all(|c| (*c as usize) < RAW_BUYS && (*c as usize) != RAW_REPLAYED));
    }

    #[test]
    fn orders_move_between_statuses_and_units_follow() {
        let c = SlotCounters::default();
        c.order_added(OrderStatus::PendingPayment, 2);
        c.order_added(OrderStatus::PendingPayment, 1);
        c.order_moved(OrderStatus::PendingPayment, OrderStatus::Paid, 2);
        c.order_moved(OrderStatus::PendingPayment, OrderStatus::Expired, 1);
        let f = c.read();
        assert_eq!(f.orders_in(OrderStatus::PendingPayment), 0);
        assert_eq!(f.orders_in(OrderStatus::Paid), 1);
        assert_eq!(f.orders_in(OrderStatus::Expired), 1);
        assert_eq!(f.held_units, 2);
        let mut sum = f;
        sum += f;
        assert_eq!(sum.held_units, 4);
        assert_eq!(sum.orders_in(OrderStatus::Paid), 2);
    }
}
