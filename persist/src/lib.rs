//! Downstream copies of the engine's state, fed from its WAL: the MySQL
//! persister (`mysql/`) and the Redis mirror (`redis/`). Both tail the log
//! (`seckill_engine::wal::tail::Tailer`), apply records in batches, and
//! register a checkpoint so the WAL is kept until they have it: one driver
//! does all that (`consumer`), MySQL and Redis are its targets.
//!
//! Architecture Invariant: nothing here can slow or stop the engine. A
//! consumer that falls behind only lags; MySQL or Redis being down never
//! blocks a buy.

pub mod consumer;
pub mod mysql;
pub mod redact;
pub mod redis;

pub use redact::{redact_url, BackendUrl};

/// Orders and status changes for the targets' unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use seckill_engine::{Event, Order};
    use seckill_proto::{OrderId, OrderStatus};

    /// A pending order of activity 1: `q` units at 100 cents each.
    pub(crate) fn order(seq: u128, user: u64, q: u32) -> Order {
        Order {
            id: OrderId(OrderId::first_at(1_700_000_000_000, 0).0 + seq),
            user_id: user,
            activity_id: 1,
            quantity: q,
            amount_cents: 100 * u64::from(q),
            status: OrderStatus::PendingPayment,
            created_at_ms: 1_700_000_000_000,
            pay_before_ms: 1_700_000_900_000,
            idempotency_key: 0,
            paid_txn: 0,
        }
    }

    pub(crate) fn change(o: &Order, status: OrderStatus) -> Event {
        Event::OrderStatusChanged {
            order_id: o.id,
            user_id: o.user_id,
            activity_id: o.activity_id,
            from: o.status,
            status,
            quantity: o.quantity,
            amount_cents: o.amount_cents,
            at_ms: 1_700_000_001_000,
            txn: 9,
        }
    }
}
