//! The JSON shapes of DESIGN.md (order view, activity view, errors), shared
//! by the HTTP front and the admin socket so both speak the same words.

use crate::{ActivityView, ErrorCode, OrderView};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Unix milliseconds as an RFC 3339 UTC string (`2026-11-25T10:00:00.123Z`).
pub fn rfc3339(unix_ms: u64) -> String {
    let nanos = unix_ms as i128 * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// Parses an RFC 3339 time into Unix milliseconds; `None` if it is not one
/// or lies before 1970.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

pub fn order(o: &OrderView) -> Value {
    json!({
        "order_id": o.order_id.to_string(),
        "user_id": o.user_id,
        "activity_id": o.activity_id,
        "quantity": o.quantity,
        "amount_cents": o.amount_cents,
        "status": o.status.as_str(),
        "created_at": rfc3339(o.created_at_ms),
        "pay_before": rfc3339(o.pay_before_ms),
    })
}

pub fn activity(a: &ActivityView, now_ms: u64) -> Value {
    json!({
        "id": a.id,
        "product_id": a.product_id,
        "product_name": a.product_name,
        "title": a.title,
        "price_cents": a.price_cents,
        "total_stock": a.total_stock,
        "remaining": a.remaining,
        "sold_out": a.remaining == 0,
        "starts_at": rfc3339(a.starts_at_ms),
        "ends_at": rfc3339(a.ends_at_ms),
        "starts_in_ms": a.starts_at_ms.saturating_sub(now_ms),
        "per_user_limit": a.per_user_limit,
        "payment_timeout_s": a.payment_timeout_s,
        "require_buy_token": a.require_buy_token,
        "gate_factor": a.gate_factor,
        "status": a.status,
        "phase": a.phase.as_str(),
    })
}

pub fn error(code: ErrorCode, message: &str) -> Value {
    json!({ "code": code.as_str(), "message": message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let ms = 1_795_000_000_123;
        let s = rfc3339(ms);
        assert!(s.ends_with('Z'), "{s}");
        assert_eq!(parse_rfc3339(&s), Some(ms));
        assert_eq!(parse_rfc3339("2026-11-25T10:00:00+01:00"), parse_rfc3339("2026-11-25T09:00:00Z"));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), None);
    }
}
