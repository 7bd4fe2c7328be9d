//! State changes: what the WAL records and what recovery replays.
//! Rejections change nothing and are never events.

use crate::activity::{Activity, Product};
use crate::order::Order;
use seckill_proto::{OrderId, OrderStatus};

/// A state change, as it is logged in the WAL and replayed on recovery.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Event {
    ProductCreated(Product),
    /// The whole activity configuration, on create and on every change.
    ActivityUpserted(Activity),
    StockAdded {
        activity_id: u64,
        amount: u64,
    },
    QuotaSet {
        activity_id: u64,
        user_id: u64,
        limit: u32,
    },
    OrderCreated(Order),
    /// A status change as logged until 2026-12-07, without what the order
    /// was before it: still read (logs and replicas written then), never
    /// written. Its place in the enum is its tag in the WAL: keep it.
    OrderStatusChangedV1 {
        order_id: OrderId,
        user_id: u64,
        activity_id: u64,
        status: OrderStatus,
        at_ms: u64,
        /// The payment transaction hash when `status` is paid, else 0.
        txn: u64,
    },
    /// Money arrived for an order that cannot take it (expired, cancelled,
    /// or already paid by another transaction): kept for reconciliation.
    PaymentRefused {
        order_id: OrderId,
        amount_cents: u64,
        txn: u64,
        at_ms: u64,
    },
    /// An order moved from `from` to `status`. It carries what the order
    /// was (quantity, amount, status before) so that a reader of the log
    /// (the Redis mirror, the persister) can apply it without holding or
    /// reading the order. Appended last: older records keep their tags.
    OrderStatusChanged {
        order_id: OrderId,
        user_id: u64,
        activity_id: u64,
        from: OrderStatus,
        status: OrderStatus,
        quantity: u32,
        amount_cents: u64,
        at_ms: u64,
        /// The payment transaction hash when `status` is paid, else 0.
        txn: u64,
    },
}

impl Event {
    /// `(order_id, status, txn)` of a status change, in either form.
    pub fn status_change(&self) -> Option<(OrderId, OrderStatus, u64)> {
        match self {
            Event::OrderStatusChanged { order_id, status, txn, .. }
            | Event::OrderStatusChangedV1 { order_id, status, txn, .. } => Some((*order_id, *status, *txn)),
            _ => None,
        }
    }
}

/// Events the WAL and snapshot tests write and read back.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// Activity 1 (product 0, active, one per user), titled `title`.
    pub(crate) fn activity(title: &str) -> Activity {
        Activity {
            id: 1,
            product_id: 0,
            product_name: "p".into(),
            title: title.into(),
            price_cents: 5,
            terms: seckill_proto::SaleTerms {
                starts_at_ms: 0,
                ends_at_ms: 10,
                per_user_limit: 1,
                payment_timeout_s: 60,
                require_buy_token: false,
                gate_factor: 5,
            },
            status: seckill_proto::ActivityStatus::Active,
        }
    }

    /// Order `n` of user `n` in activity 1, pending payment.
    pub(crate) fn order(n: u64) -> Order {
        Order {
            id: OrderId::first_at(n, 1),
            user_id: n,
            activity_id: 1,
            quantity: 1,
            amount_cents: 100,
            status: OrderStatus::PendingPayment,
            created_at_ms: n,
            pay_before_ms: n + 1,
            idempotency_key: n,
            paid_txn: 0,
        }
    }
}
