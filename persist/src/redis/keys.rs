//! Key names and the fields written under them (docs/REDIS.md is the
//! schema other teams read; keep the two in step).

use seckill_engine::event::Event;
use seckill_engine::{Activity, Order, Product};
use seckill_proto::json::{rfc3339, Rfc3339Ms};
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
        ("starts_at", rfc3339(a.starts_at_ms)),
        ("ends_at", rfc3339(a.ends_at_ms)),
        ("starts_at_ms", a.starts_at_ms.to_string()),
        ("ends_at_ms", a.ends_at_ms.to_string()),
        ("per_user_limit", a.per_user_limit.to_string()),
        ("payment_timeout_s", a.payment_timeout_s.to_string()),
        ("require_buy_token", u8::from(a.require_buy_token).to_string()),
        ("gate_factor", a.gate_factor.to_string()),
        ("status", a.status.as_str().to_string()),
        ("phase", a.phase(now_ms).as_str().to_string()),
    ]
}

/// `v` formatted into `buf` (cleared first): an argument written without a
/// `String` of its own (the command copies the bytes).
pub(crate) fn fmt_in(buf: &mut String, v: impl std::fmt::Display) -> &str {
    buf.clear();
    let _ = write!(buf, "{v}");
    buf
}

/// The order view of DESIGN.md, with times also as Unix milliseconds, as
/// `HSET` arguments after the key (no `String` per field: this runs once
/// per order; `buf` is scratch space).
pub(crate) fn order_args(c: &mut redis::Pipeline, o: &Order, buf: &mut String) {
    c.arg("order_id")
        .arg(fmt_in(buf, o.id))
        .arg("user_id")
        .arg(o.user_id)
        .arg("activity_id")
        .arg(o.activity_id)
        .arg("quantity")
        .arg(o.quantity)
        .arg("amount_cents")
        .arg(o.amount_cents)
        .arg("status")
        .arg(o.status.as_str())
        .arg("created_at")
        .arg(fmt_in(buf, Rfc3339Ms(o.created_at_ms)))
        .arg("pay_before")
        .arg(fmt_in(buf, Rfc3339Ms(o.pay_before_ms)))
        .arg("created_at_ms")
        .arg(o.created_at_ms)
        .arg("pay_before_ms")
        .arg(o.pay_before_ms);
}

/// The event name of an order status in the stream.
pub(crate) fn event_type(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::PendingPayment => "created",
        other => other.as_str(),
    }
}

/// The fields of the stream entry of one record, appended to `c` (an
/// `XADD key id`); false (nothing appended) for records that are not order
/// events. `order` gives what a status change does not carry (quantity,
/// amount_cents: fixed when the order is created).
pub(crate) fn event_args(
    c: &mut redis::Pipeline,
    lsn: u64,
    ev: &Event,
    prev: &str,
    order: &dyn Fn(&OrderId) -> Option<(u32, u64)>,
    buf: &mut String,
) -> bool {
    let (id, user_id, activity_id, quantity, amount_cents, status, at_ms) = match ev {
        Event::OrderCreated(o) => {
            (o.id, o.user_id, o.activity_id, o.quantity, o.amount_cents, o.status, o.created_at_ms)
        }
        Event::OrderStatusChanged { order_id, user_id, activity_id, status, at_ms, .. } => {
            let Some((quantity, amount_cents)) = order(order_id) else { return false };
            (*order_id, *user_id, *activity_id, quantity, amount_cents, *status, *at_ms)
        }
        _ => return false,
    };
    c.arg("type")
        .arg(event_type(status))
        .arg("lsn")
        .arg(lsn)
        .arg("prev")
        .arg(prev)
        .arg("order_id")
        .arg(fmt_in(buf, id))
        .arg("user_id")
        .arg(user_id)
        .arg("activity_id")
        .arg(activity_id)
        .arg("status")
        .arg(status.as_str())
        .arg("quantity")
        .arg(quantity)
        .arg("amount_cents")
        .arg(amount_cents)
        .arg("at_ms")
        .arg(at_ms);
    true
}

/// Whether a record gets a stream entry (`event_args` would write one).
pub(crate) fn is_order_event(ev: &Event) -> bool {
    matches!(ev, Event::OrderCreated(_) | Event::OrderStatusChanged { .. })
}

/// The stream id of an order event: its LSN, so ids and LSNs order alike
/// and a repeated XADD of the same record is refused by Redis.
/// Written into `buf` (cleared first): `<lsn>-0`.
pub(crate) fn event_id_in(buf: &mut String, lsn: u64) {
    buf.clear();
    let _ = write!(buf, "{lsn}-0");
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
        event_id_in(&mut buf, 42);
        assert_eq!(buf, "42-0");
        assert_eq!(fmt_in(&mut buf, Rfc3339Ms(0)), rfc3339(0));
    }
}
