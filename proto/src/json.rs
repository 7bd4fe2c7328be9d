//! The JSON shapes of DESIGN.md (order view, activity view, errors), shared
//! by the HTTP front and the admin socket so both speak the same words.

use crate::{ActivityStatus, ActivityView, ErrorCode, OrderView, Phase};
use serde::{Serialize, Serializer};
use serde_json::{json, Value};
use std::fmt;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Unix milliseconds as an RFC 3339 UTC string (`2026-11-25T10:00:00.123Z`).
pub fn rfc3339(unix_ms: u64) -> String {
    Rfc3339Ms(unix_ms).to_string()
}

/// Unix milliseconds shown as RFC 3339 in UTC: `2026-11-25T10:00:00Z`, with
/// `.123`-style milliseconds (trailing zeros dropped) when there are any.
/// Written straight into the output, so an answer allocates nothing for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rfc3339Ms(pub u64);

impl fmt::Display for Rfc3339Ms {
    /// Digits written into a stack buffer: every order answer prints two.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Past year 9999 RFC 3339 has no form; such times do not occur.
        let ms = self.0.min(253_402_300_799_999);
        let (days, ms_of_day) = (ms / 86_400_000, ms % 86_400_000);
        let (y, m, d) = civil_from_days(days as i64);
        let secs = ms_of_day / 1000;
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: u64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, y as u64);
        put(5, 2, m as u64);
        put(8, 2, d as u64);
        put(11, 2, secs / 3600);
        put(14, 2, secs / 60 % 60);
        put(17, 2, secs % 60);
        let mut frac = ms_of_day % 1000;
        let len = if frac == 0 {
            19
        } else {
            let mut digits = 3;
            while frac % 10 == 0 {
                frac /= 10;
                digits -= 1;
            }
            put(20, digits, frac);
            20 + digits
        };
        out[len] = b'Z';
        // Only ASCII digits and separators were written.
        f.write_str(std::str::from_utf8(&out[..=len]).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for Rfc3339Ms {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Parses an RFC 3339 time into Unix milliseconds; `None` if it is not one
/// or lies before 1970.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// `serialize_with` for Unix-millisecond fields shown as RFC 3339
/// (the order view's `created_at` and `pay_before`).
pub(crate) fn ms_as_rfc3339<S: Serializer>(unix_ms: &u64, s: S) -> Result<S::Ok, S::Error> {
    Rfc3339Ms(*unix_ms).serialize(s)
}

/// The order view of DESIGN.md as JSON (its `Serialize` is that shape).
pub fn order(o: &OrderView) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

/// The order view's JSON bytes, written in one pass (the buy answer).
pub fn order_bytes(o: &OrderView) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_order(o, &mut out);
    out
}

/// Appends `o`'s JSON to `out`.
pub fn write_order(o: &OrderView, out: &mut Vec<u8>) {
    // Serializing plain numbers and strings into a Vec cannot fail.
    let _ = serde_json::to_writer(out, o);
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
        "starts_at": rfc3339(a.terms.starts_at_ms),
        "ends_at": rfc3339(a.terms.ends_at_ms),
        "starts_in_ms": a.terms.starts_at_ms.saturating_sub(now_ms),
        "per_user_limit": a.terms.per_user_limit,
        "payment_timeout_s": a.terms.payment_timeout_s,
        "require_buy_token": a.terms.require_buy_token,
        "gate_factor": a.terms.gate_factor,
        "status": a.status,
        "phase": phase_at(a, now_ms).as_str(),
    })
}

/// The phase of `a` at `now_ms`. A view may be older than the answer it is
/// in (the front caches views): the times decide again by the engine's rule
/// (`SaleTerms::phase`), so a cached view does not say "upcoming" after the
/// sale has opened. A pause is the engine's word and is kept.
pub fn phase_at(a: &ActivityView, now_ms: u64) -> Phase {
    let paused = a.phase == Phase::Paused && a.status == ActivityStatus::Active;
    a.terms.phase(if paused { ActivityStatus::Paused } else { a.status }, now_ms)
}

pub fn error(code: ErrorCode, message: &str) -> Value {
    json!({ "code": code.as_str(), "message": message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OrderId, OrderStatus, SaleTerms};

    #[test]
    fn rfc3339_matches_the_time_crate() {
        let by_time = |ms: u64| {
            OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
                .ok()
                .and_then(|t| t.format(&Rfc3339).ok())
                .unwrap_or_default()
        };
        let mut ms = 0u64;
        let samples =
            [0, 1, 10, 100, 120, 999, 1000, 86_399_999, 951_782_400_000, 1_795_000_000_123, 4_102_444_800_000];
        for ms in samples {
            assert_eq!(rfc3339(ms), by_time(ms), "{ms}");
        }
        // Leap days, century rules and every millisecond digit pattern.
        for _ in 0..200_000 {
            ms = ms.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) % 4_102_444_800_000;
            assert_eq!(rfc3339(ms), by_time(ms), "{ms}");
        }
    }

    #[test]
    fn order_json_has_the_design_fields() {
        let o = OrderView {
            order_id: OrderId::first_at(1_795_000_000_123, 3),
            user_id: 42,
            activity_id: 7,
            quantity: 2,
            amount_cents: 1998,
            status: OrderStatus::PendingPayment,
            created_at_ms: 1_795_000_000_123,
            pay_before_ms: 1_795_001_800_123,
        };
        let v: Value = serde_json::from_slice(&order_bytes(&o)).unwrap();
        assert_eq!(v, order(&o));
        assert_eq!(v["order_id"], o.order_id.to_string());
        assert_eq!(v["user_id"], 42);
        assert_eq!(v["activity_id"], 7);
        assert_eq!(v["quantity"], 2);
        assert_eq!(v["amount_cents"], 1998);
        assert_eq!(v["status"], "pending_payment");
        assert_eq!(v["created_at"], "2026-11-18T11:06:40.123Z");
        assert_eq!(v["pay_before"], rfc3339(1_795_001_800_123));
        assert_eq!(v.as_object().map(|m| m.len()), Some(8));
    }

    #[test]
    fn a_cached_view_shows_the_phase_of_the_answer_time() {
        let a = ActivityView {
            id: 1,
            product_id: 0,
            product_name: "p".into(),
            title: "t".into(),
            price_cents: 1,
            total_stock: 1,
            remaining: 1,
            terms: SaleTerms {
                starts_at_ms: 1_000,
                ends_at_ms: 2_000,
                per_user_limit: 1,
                payment_timeout_s: 60,
                require_buy_token: false,
                gate_factor: 0,
            },
            status: ActivityStatus::Active,
            phase: Phase::Upcoming,
        };
        assert_eq!(activity(&a, 999)["phase"], "upcoming");
        assert_eq!(activity(&a, 1_000)["phase"], "ongoing", "the view was made before the start");
        assert_eq!(activity(&a, 2_000)["phase"], "ended");
        let paused = ActivityView { status: ActivityStatus::Paused, phase: Phase::Paused, ..a.clone() };
        assert_eq!(activity(&paused, 500)["phase"], "paused");
        assert_eq!(activity(&paused, 1_500)["phase"], "paused");
        assert_eq!(activity(&paused, 2_000)["phase"], "ended");
        let said_paused = ActivityView { phase: Phase::Paused, ..a.clone() };
        assert_eq!(activity(&said_paused, 1_500)["phase"], "paused", "the engine's word is kept");
        assert_eq!(activity(&said_paused, 2_000)["phase"], "ended");
        let disabled = ActivityView { status: ActivityStatus::Disabled, phase: Phase::Ended, ..a };
        assert_eq!(activity(&disabled, 1_500)["phase"], "ended");
    }

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
