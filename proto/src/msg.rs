//! Requests a front (or a tool) sends to the engine, and the answers.

use crate::{ActivityView, ErrorCode, OrderId, OrderView};

/// One request to the engine. Each variant says who owns the state it
/// touches, so the engine can route it without looking inside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `idempotency_key`: a hash of the client's Idempotency-Key header, 0
    /// for none. `buy_token_ok`: the front verified a buy token for this
    /// user and activity (needed when the activity requires one).
    Buy {
        user_id: u64,
        activity_id: u64,
        quantity: u32,
        idempotency_key: u64,
        buy_token_ok: bool,
    },
    /// `user_id: None` is an operator's view (admin `order.show`).
    GetOrder {
        user_id: Option<u64>,
        order_id: OrderId,
    },
    ListOrders {
        user_id: u64,
        offset: u32,
        limit: u32,
    },
    Cancel {
        user_id: u64,
        order_id: OrderId,
    },
    /// Payment confirmed (sandbox or a verified notify). `txn`: a hash of
    /// the provider's transaction id; the same txn again is a replay (200),
    /// another txn for a paid order is a second payment (409, reconciled).
    Pay {
        order_id: OrderId,
        amount_cents: u64,
        txn: u64,
    },
    Refund {
        user_id: u64,
        order_id: OrderId,
    },
    Ship {
        order_id: OrderId,
    },
    /// The payment deadline passed; sent by the engine's own timers and tests.
    Expire {
        order_id: OrderId,
    },
    SetQuota {
        activity_id: u64,
        user_id: u64,
        limit: u32,
    },
    /// May this user get a buy token for this activity? (gate of seed 002:
    /// at most gate_factor × stock are handed out). The front signs it.
    IssueBuyToken {
        user_id: u64,
        activity_id: u64,
    },
    GetActivity {
        activity_id: u64,
    },
    ListActivities {
        offset: u32,
        limit: u32,
    },
}

impl Request {
    /// Whether a front may send this over the wire. Shipping, expiring,
    /// setting quotas and reading any order without its owner are the
    /// operator's (admin socket) and the engine's own; on the wire they are
    /// refused, so a leaked wire connection cannot do them.
    pub fn allowed_on_wire(&self) -> bool {
        !matches!(
            self,
            Request::Ship { .. }
                | Request::Expire { .. }
                | Request::SetQuota { .. }
                | Request::GetOrder { user_id: None, .. }
        )
    }
}

/// Which owner a request belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    User(u64),
    Order(OrderId),
    Any,
}

impl Request {
    pub fn route(&self) -> Route {
        match *self {
            Request::Buy { user_id, .. }
            | Request::ListOrders { user_id, .. }
            | Request::Cancel { user_id, .. }
            | Request::Refund { user_id, .. }
            | Request::SetQuota { user_id, .. }
            | Request::IssueBuyToken { user_id, .. } => Route::User(user_id),
            Request::GetOrder { order_id, .. }
            | Request::Pay { order_id, .. }
            | Request::Ship { order_id }
            | Request::Expire { order_id } => Route::Order(order_id),
            Request::GetActivity { .. } | Request::ListActivities { .. } => Route::Any,
        }
    }
}

/// Upper bound on one page of a list; larger asks are clamped.
pub const PAGE_LIMIT_MAX: u32 = 100;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Order(OrderView),
    /// A buy whose Idempotency-Key was used before: the order it made then.
    Replayed(OrderView),
    Orders {
        items: Vec<OrderView>,
        total: u64,
    },
    Activity(Box<ActivityView>),
    Activities {
        items: Vec<ActivityView>,
        total: u64,
    },
    Done,
    Error(ErrorCode),
    /// `rate_limited` (429): the user's buy clicks are used up for now;
    /// one more is allowed after `retry_after_s` seconds.
    RateLimited {
        retry_after_s: u32,
    },
    /// From a replica of a group that does not lead (docs/REPLICATION.md,
    /// "Fronts follow the leader"): it decided nothing; send the request to
    /// the leader. `leader`: the leader's engine address as the replica
    /// knows it (`tcp:HOST:PORT`), empty when it does not. Only fronts see
    /// it: they re-route, and answer a buyer `busy` if no leader answers.
    NotLeader {
        leader: String,
    },
}
