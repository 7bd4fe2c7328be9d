//! Orders and their status machine.

use seckill_proto::{ErrorCode, OrderId, OrderStatus, OrderView};

/// An order as its shard keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub user_id: u64,
    pub activity_id: u64,
    pub quantity: u32,
    pub amount_cents: u64,
    pub status: OrderStatus,
    pub created_at_ms: u64,
    pub pay_before_ms: u64,
    /// Hash of the buyer's Idempotency-Key (0: none).
    pub idempotency_key: u64,
    /// Hash of the payment transaction that paid it (0: unpaid).
    pub paid_txn: u64,
}

impl Order {
    /// The order as clients see it.
    pub fn view(&self) -> OrderView {
        OrderView {
            order_id: self.id,
            user_id: self.user_id,
            activity_id: self.activity_id,
            quantity: self.quantity,
            amount_cents: self.amount_cents,
            status: self.status,
            created_at_ms: self.created_at_ms,
            pay_before_ms: self.pay_before_ms,
        }
    }
}

/// What may happen to an order after it is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    Pay,
    Cancel,
    Expire,
    /// `activity_ended`: refunds close when the activity ends.
    Refund {
        activity_ended: bool,
    },
    Ship,
}

/// The result of a transition that is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The order moves to this status; `frees_stock` says its tokens return.
    To { status: OrderStatus, frees_stock: bool },
    /// The transition already happened: same answer, nothing changes.
    AlreadyDone,
}

/// The status machine of DESIGN.md as one pure function. Repeating a
/// transition that already happened answers `AlreadyDone`, which is what
/// makes every transition idempotent.
pub(crate) fn step(from: OrderStatus, t: Transition) -> Result<Step, ErrorCode> {
    use OrderStatus::*;
    let to = |status| Ok(Step::To { status, frees_stock: !status.holds_stock() });
    match (from, t) {
        (PendingPayment, Transition::Pay) => to(Paid),
        (PendingPayment, Transition::Cancel) => to(Cancelled),
        (PendingPayment, Transition::Expire) => to(Expired),
        (Paid, Transition::Refund { activity_ended: false }) => to(Refunded),
        (Paid, Transition::Ship) => to(Shipped),
        (Paid | Shipped | Refunded, Transition::Pay)
        | (Cancelled, Transition::Cancel)
        | (Expired, Transition::Expire)
        | (Refunded, Transition::Refund { .. })
        | (Shipped, Transition::Ship) => Ok(Step::AlreadyDone),
        _ => Err(ErrorCode::InvalidState),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::*;

    const ALL_T: [Transition; 6] = [
        Transition::Pay,
        Transition::Cancel,
        Transition::Expire,
        Transition::Refund { activity_ended: false },
        Transition::Refund { activity_ended: true },
        Transition::Ship,
    ];

    #[test]
    fn the_table_of_design_md() {
        let ok = |s| Ok(Step::To { status: s, frees_stock: !s.holds_stock() });
        assert_eq!(step(PendingPayment, Transition::Pay), ok(Paid));
        assert_eq!(step(PendingPayment, Transition::Cancel), ok(Cancelled));
        assert_eq!(step(PendingPayment, Transition::Expire), ok(Expired));
        assert_eq!(step(Paid, Transition::Refund { activity_ended: false }), ok(Refunded));
        assert_eq!(step(Paid, Transition::Ship), ok(Shipped));
        assert_eq!(step(Paid, Transition::Refund { activity_ended: true }), Err(ErrorCode::InvalidState));
        assert_eq!(step(Shipped, Transition::Refund { activity_ended: false }), Err(ErrorCode::InvalidState));
        assert_eq!(step(Paid, Transition::Cancel), Err(ErrorCode::InvalidState));
        assert_eq!(step(Expired, Transition::Pay), Err(ErrorCode::InvalidState));
        assert_eq!(step(Cancelled, Transition::Pay), Err(ErrorCode::InvalidState));
        assert_eq!(step(PendingPayment, Transition::Ship), Err(ErrorCode::InvalidState));
    }

    #[test]
    fn stock_is_freed_exactly_by_cancel_expire_refund() {
        for from in OrderStatus::ALL {
            for t in ALL_T {
                if let Ok(Step::To { status, frees_stock }) = step(from, t) {
                    assert!(from.holds_stock());
                    assert_eq!(frees_stock, matches!(status, Cancelled | Expired | Refunded));
                }
            }
        }
    }

    #[test]
    fn every_transition_is_idempotent() {
        for from in OrderStatus::ALL {
            for t in ALL_T {
                if let Ok(Step::To { status, .. }) = step(from, t) {
                    assert_eq!(step(status, t), Ok(Step::AlreadyDone), "{from:?} {t:?}");
                }
            }
        }
    }

    #[test]
    fn terminal_states_never_move() {
        for from in [Cancelled, Expired, Refunded] {
            for t in ALL_T {
                assert!(!matches!(step(from, t), Ok(Step::To { .. })), "{from:?} {t:?}");
            }
        }
    }
}
