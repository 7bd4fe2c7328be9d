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
    OrderStatusChanged {
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
}
