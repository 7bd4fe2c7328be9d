//! Key names and the fields written under them (docs/REDIS.md is the
//! schema other teams read; keep the two in step).

use super::resp::Resp;
use seckill_engine::{Activity, Event, Order, Product};
use seckill_proto::json::rfc3339;
use seckill_proto::{OrderId, OrderStatus};
use std::fmt::Write as _;

pub(crate) type Fields = Vec<(&'static str, String)>;

/// Names under one prefix (default `seckill:`).
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

/// What a key under the prefix is, for the sweep after a resync.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Product(u64),
    Activity(u64),
    Order(OrderId),
    Purchased(u64),
    /// Scratch space of an interrupted resync.
    Scratch,
    /// Anything else (the LSN, run id, the stream, keys we do not know).
    Other,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_string() }
    }
    pub fn product(&self, id: u64) -> String {
        format!("{}product:{id}", self.prefix)
    }
    pub fn activity(&self, id: u64) -> String {
        format!("{}activity:{id}", self.prefix)
    }
    #[cfg(test)]
    pub fn order(&self, id: OrderId) -> String {
        format!("{}order:{id}", self.prefix)
    }
    /// `order(id)` written into `buf` (cleared first): no `String` per
    /// order on the mirror's hot path.
    pub fn order_in<'a>(&self, buf: &'a mut String, id: OrderId) -> &'a str {
        buf.clear();
        let _ = write!(buf, "{}order:{id}", self.prefix);
        buf
    }
    pub fn purchased(&self, activity_id: u64) -> String {
        format!("{}purchased:{activity_id}", self.prefix)
    }
    /// Where a resync builds a purchased hash before renaming it in place.
    pub fn purchased_scratch(&self, activity_id: u64) -> String {
        format!("{}mirror:scratch:purchased:{activity_id}", self.prefix)
    }
    pub fn lsn(&self) -> String {
        format!("{}mirror:lsn", self.prefix)
    }
    pub fn run(&self) -> String {
        format!("{}mirror:run", self.prefix)
    }
    /// The digest of the record at `mirror:lsn`: whether a starting mirror's
    /// log is the one Redis follows (`Redis::resume`).
    pub fn tip(&self) -> String {
        format!("{}mirror:tip", self.prefix)
    }
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// A SCAN MATCH pattern for every key under the prefix.
    pub fn pattern(&self) -> String {
        let mut p = String::with_capacity(self.prefix.len() + 1);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                p.push('\\');
            }
            p.push(c);
        }
        p.push('*');
        p
    }

    pub fn classify(&self, key: &str) -> KeyKind {
        let Some(rest) = key.strip_prefix(self.prefix.as_str()) else { return KeyKind::Other };
        let num = |s: &str| s.parse::<u64>().ok();
        if let Some(id) = rest.strip_prefix("product:").and_then(num) {
            KeyKind::Product(id)
        } else if let Some(id) = rest.strip_prefix("activity:").and_then(num) {
            KeyKind::Activity(id)
        } else if let Some(id) = rest.strip_prefix("purchased:").and_then(num) {
            KeyKind::Purchased(id)
        } else if let Some(id) = rest.strip_prefix("order:").and_then(|s| s.parse::<OrderId>().ok()) {
            KeyKind::Order(id)
        } else if rest.starts_with("mirror:scratch:") {
            KeyKind::Scratch
        } else {
            KeyKind::Other
        }
    }
}

pub(crate) fn product_fields(p: &Product) -> Fields {
    vec![
        ("id", p.id.to_string()),
        ("name", p.name.clone()),
        ("description", p.description.clone()),
        ("image_url", p.image_url.clone()),
        ("price_cents", p.price_cents.to_string()),
    ]
}

/// The activity view of DESIGN.md (same names as the HTTP JSON), with
/// times both as RFC 3339 and as Unix milliseconds.
pub(crate) fn activity_fields(a: &Activity, total_stock: u64, remaining: u64, now_ms: u64) -> Fields {
    vec![
        ("id", a.id.to_string()),
        ("product_id", a.product_id.to_string()),
        ("product_name", a.product_name.clone()),
        ("title", a.title.clone()),
        ("price_cents", a.price_cents.to_string()),
        ("total_stock", total_stock.to_string()),
        ("remaining", remaining.to_string()),
        ("sold_out", u8::from(remaining == 0).to_string()),
        ("starts_at", rfc3339(a.terms.starts_at_ms)),
        ("ends_at", rfc3339(a.terms.ends_at_ms)),
        ("starts_at_ms", a.terms.starts_at_ms.to_string()),
        ("ends_at_ms", a.terms.ends_at_ms.to_string()),
        ("per_user_limit", a.terms.per_user_limit.to_string()),
        ("payment_timeout_s", a.terms.payment_timeout_s.to_string()),
        ("require_buy_token", u8::from(a.terms.require_buy_token).to_string()),
        ("gate_factor", a.terms.gate_factor.to_string()),
        ("status", a.status.as_str().to_string()),
        ("phase", a.phase(now_ms).as_str().to_string()),
    ]
}

/// Fields of an order hash.
const ORDER_FIELDS: usize = 7;

/// `HSET <key> …` of an order: the order view of DESIGN.md without what
/// the key already says (the id) and with times as Unix milliseconds only
/// (written straight into `r`: this runs once per order).
pub(crate) fn order_hset(r: &mut Resp, key: &str, o: &Order) {
    r.cmd(2 + 2 * ORDER_FIELDS)
        .arg("HSET")
        .arg(key)
        .arg("user_id")
        .num(o.user_id)
        .arg("activity_id")
        .num(o.activity_id)
        .arg("quantity")
        .num(o.quantity)
        .arg("amount_cents")
        .num(o.amount_cents)
        .arg("status")
        .arg(o.status.as_str())
        .arg("created_at_ms")
        .num(o.created_at_ms)
        .arg("pay_before_ms")
        .num(o.pay_before_ms);
}

/// `HSET <key> <field> <value>…` of a product or activity.
pub(crate) fn hset(r: &mut Resp, key: &str, fields: &Fields) {
    r.cmd(2 + 2 * fields.len()).arg("HSET").arg(key);
    for (f, v) in fields {
        r.arg(f).arg(v);
    }
}

/// The event name of an order status in the stream.
pub(crate) fn event_type(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::PendingPayment => "created",
        other => other.as_str(),
    }
}

/// Fields of a stream entry of an order event (`created` has one more,
/// `pay_before_ms`).
const EVENT_FIELDS: usize = 8;

/// `XADD <key> <lsn>-0 …`, the stream entry of one record; false (nothing
/// written) for records that are not order events. The entry says what
/// happened to which order and enough to act on it without a read: who,
/// which activity, how many units, for how much, when, and for `created`
/// the deadline to pay: everything the order hash holds, so that the
/// stream alone is the record of the orders. The LSN is the id's first
/// part and the status follows from `type`, so neither is repeated.
/// `order` gives (quantity, amount_cents) for a status change logged
/// before 2026-12-07, which does not carry them. `create`: whether the
/// entry may create the stream; a batch's may not (`NOMKSTREAM`): after
/// a `FLUSHDB` the batch that finds it (its fence is read inside the
/// transaction, checked after) would otherwise start a stream that looks
/// whole from its first entry on, and the resync would add nothing before.
pub(crate) fn event_xadd(
    r: &mut Resp,
    key: &str,
    lsn: u64,
    ev: &Event,
    prev: &str,
    order: &dyn Fn(&OrderId) -> Option<(u32, u64)>,
    create: bool,
) -> bool {
    let (id, user_id, activity_id, quantity, amount_cents, status, at_ms, pay_before_ms) = match ev {
        Event::OrderCreated(o) => (
            o.id,
            o.user_id,
            o.activity_id,
            o.quantity,
            o.amount_cents,
            o.status,
            o.created_at_ms,
            Some(o.pay_before_ms),
        ),
        Event::OrderStatusChanged { order_id, user_id, activity_id, status, quantity, amount_cents, at_ms, .. } => {
            (*order_id, *user_id, *activity_id, *quantity, *amount_cents, *status, *at_ms, None)
        }
        Event::OrderStatusChangedV1 { order_id, user_id, activity_id, status, at_ms, .. } => {
            let Some((quantity, amount_cents)) = order(order_id) else { return false };
            (*order_id, *user_id, *activity_id, quantity, amount_cents, *status, *at_ms, None)
        }
        _ => return false,
    };
    let fields = EVENT_FIELDS + usize::from(pay_before_ms.is_some());
    r.cmd(3 + usize::from(!create) + 2 * fields).arg("XADD").arg(key);
    if !create {
        r.arg("NOMKSTREAM");
    }
    r.display(EventId(lsn))
        .arg("type")
        .arg(event_type(status))
        .arg("prev")
        .arg(prev)
        .arg("order_id")
        .display(id)
        .arg("user_id")
        .num(user_id)
        .arg("activity_id")
        .num(activity_id)
        .arg("quantity")
        .num(quantity)
        .arg("amount_cents")
        .num(amount_cents)
        .arg("at_ms")
        .num(at_ms);
    if let Some(t) = pay_before_ms {
        r.arg("pay_before_ms").num(t);
    }
    true
}

/// The stream id of an order event: its LSN, so ids and LSNs order alike
/// and a repeated XADD of the same record is refused by Redis (`<lsn>-0`).
pub(crate) struct EventId(pub u64);

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-0", self.0)
    }
}

/// The LSN part of a stream id (`<lsn>-<seq>`).
pub(crate) fn id_lsn(id: &str) -> Option<u64> {
    id.split_once('-').map_or(id, |(ms, _)| ms).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_classify_back() {
        let k = Keys::new("t:x*:");
        assert_eq!(k.classify(&k.activity(7)), KeyKind::Activity(7));
        assert_eq!(k.classify(&k.product(3)), KeyKind::Product(3));
        assert_eq!(k.classify(&k.purchased(9)), KeyKind::Purchased(9));
        let id = OrderId::first_at(1_700_000_000_000, 2);
        assert_eq!(k.classify(&k.order(id)), KeyKind::Order(id));
        assert_eq!(k.classify(&k.purchased_scratch(9)), KeyKind::Scratch);
        assert_eq!(k.classify(&k.lsn()), KeyKind::Other);
        assert_eq!(k.classify(&k.events()), KeyKind::Other);
        assert_eq!(k.classify("other:activity:1"), KeyKind::Other);
        assert_eq!(k.pattern(), "t:x\\*:*");
        assert_eq!(id_lsn("42-0"), Some(42));
        assert_eq!(id_lsn("42-3"), Some(42));
        assert_eq!(id_lsn("x"), None);
        let mut buf = String::from("left over");
        assert_eq!(k.order_in(&mut buf, id), k.order(id));
        assert_eq!(EventId(42).to_string(), "42-0");
    }
}
