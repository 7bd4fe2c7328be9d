//! HTTP integration tests: a real `seckill up` process (engine + front, no
//! MySQL, no Redis) driven over TCP by a tiny blocking HTTP/1.1 client.
//!
//! * every route and every error code of DESIGN.md's HTTP API that exists
//!   today, each error body checked to be `{"error":{"code","message"}}`;
//! * buy tokens, Idempotency-Key, payment deadlines (also across kill -9),
//!   second payments;
//! * the per-user rate limit (429 with `Retry-After`), 503 `busy` from a
//!   front whose engine is unreachable;
//! * concurrent clicks of one user never exceed their limit;
//! * a flood of 2,000 buyers on 500 units: exactly 500 orders, no user with
//!   two, remaining 0; then kill -9 and a restart on the same data dir:
//!   every 201 order is still there, in its acknowledged status (and again
//!   after a SIGTERM stop).

mod common;

use common::{bearer, forge_jwt, raw_request, read_response_from, HttpResp, UpProc, AUTH_SECRET, PAYMENT_SECRET};
use seckill_testkit::data_dir;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const OPEN: (&str, &str) = ("2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z");
const UPCOMING: (&str, &str) = ("2098-01-01T00:00:00Z", "2099-01-01T00:00:00Z");
const PAST: (&str, &str) = ("2020-01-01T00:00:00Z", "2021-01-01T00:00:00Z");

/// An activity titled `sale` on `up`: its id.
fn create_activity(
    up: &UpProc,
    price_cents: u64,
    stock: u64,
    per_user_limit: u32,
    (starts, ends): (&str, &str),
) -> u64 {
    up.create_activity(
        json!({"title": "sale", "price_cents": price_cents, "stock": stock, "per_user_limit": per_user_limit,
                   "starts_at": starts, "ends_at": ends}),
    )
}

/// A fresh `seckill up` (keep the `TempDir` while it runs) with an open
/// sale of 2 units, one per buyer, that takes buy tokens (at most
/// `gate_factor` × stock of them): the sale and the path of its tokens.
fn up_with_gated_sale(gate_factor: u32) -> (tempfile::TempDir, UpProc, u64, String) {
    let (tmp, dir) = data_dir();
    let up = UpProc::start(&dir, &[]);
    let gated = up.create_activity(json!({"title": "gated", "price_cents": 100, "stock": 2, "per_user_limit": 1,
        "require_buy_token": true, "gate_factor": gate_factor, "starts_at": OPEN.0, "ends_at": OPEN.1}));
    (tmp, up, gated, format!("/api/v1/activities/{gated}/token"))
}

/// A fresh `seckill up` (in a temp dir: keep the `TempDir` while it runs)
/// with one sale, as [`create_activity`] makes it.
fn up_with_sale(
    price_cents: u64,
    stock: u64,
    per_user_limit: u32,
    window: (&str, &str),
) -> (tempfile::TempDir, UpProc, u64) {
    let (tmp, dir) = data_dir();
    let up = UpProc::start(&dir, &[]);
    let act = create_activity(&up, price_cents, stock, per_user_limit, window);
    (tmp, up, act)
}

/// Asserts `r` is the error `status` / `code` with DESIGN.md's error body.
#[track_caller]
fn assert_error(r: &HttpResp, status: u16, code: &str) {
    assert_eq!(r.status, status, "expected {status} {code}, got {} {}", r.status, r.text());
    let v = r.json();
    let obj = v.as_object().unwrap_or_else(|| panic!("error body is not an object: {v}"));
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["error"], "error body has other keys: {v}");
    let e = v["error"].as_object().unwrap_or_else(|| panic!("`error` is not an object: {v}"));
    let mut keys: Vec<&String> = e.keys().collect();
    keys.sort();
    assert_eq!(keys, ["code", "message"], "error object keys: {v}");
    assert_eq!(e["code"], code, "{v}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "message must be a non-empty string: {v}");
    assert!(
        r.header("content-type").is_some_and(|c| c.starts_with("application/json")),
        "error content-type: {:?}",
        r.header("content-type")
    );
}

#[track_caller]
fn assert_status(r: &HttpResp, status: u16) -> Value {
    assert_eq!(r.status, status, "expected {status}, got {} {}", r.status, r.text());
    r.json()
}

fn remaining(up: &UpProc, activity: u64) -> u64 {
    let v = assert_status(&up.get(&format!("/api/v1/activities/{activity}"), None), 200);
    v["remaining"].as_u64().unwrap_or_else(|| panic!("remaining: {v}"))
}

fn buy(up: &UpProc, activity: u64, user: u64, body: &str) -> HttpResp {
    up.post(&format!("/api/v1/activities/{activity}/buy"), Some(user), body.as_bytes())
}

/// Buys and returns the order view, asserting 201 and the Location header.
#[track_caller]
fn buy_ok(up: &UpProc, activity: u64, user: u64, body: &str) -> Value {
    let r = buy(up, activity, user, body);
    let o = assert_status(&r, 201);
    let id = o["order_id"].as_str().unwrap_or_else(|| panic!("order_id: {o}"));
    assert_eq!(r.header("location"), Some(format!("/api/v1/orders/{id}").as_str()), "Location of {o}");
    assert_eq!(o["user_id"], user, "{o}");
    assert_eq!(o["activity_id"], activity, "{o}");
    assert_eq!(o["status"], "pending_payment", "{o}");
    o
}

fn order_path(o: &Value) -> String {
    format!("/api/v1/orders/{}", o["order_id"].as_str().expect("order_id"))
}

/// A well-formed order id that no order has: `id` moved to a far-off millisecond.
fn unknown_id(id: &str) -> String {
    let first = if id.starts_with('f') { "0" } else { "f" };
    let other = format!("{first}{}", &id[1..]);
    assert!(other.parse::<seckill_proto::OrderId>().is_ok(), "{other} must be well-formed");
    other
}

fn notify_body(order_id: &str, amount_cents: u64, txn: &str) -> Vec<u8> {
    json!({"order_id": order_id, "amount_cents": amount_cents, "provider_txn_id": txn}).to_string().into_bytes()
}

fn notify(up: &UpProc, body: &[u8], signature: Option<&str>) -> HttpResp {
    let headers: Vec<(&str, &str)> = signature.map(|s| vec![("X-Seckill-Signature", s)]).unwrap_or_default();
    up.req("POST", "/api/v1/payments/notify", &headers, body)
}

fn sign(body: &[u8]) -> String {
    seckill_front::payment::sign(PAYMENT_SECRET.as_bytes(), body)
}

#[test]
fn activities_list_and_show() {
    let (_tmp, dir) = data_dir();
    let up = UpProc::start(&dir, &[]);
    let product = up
        .admin("product.create", json!({"name": "phone", "description": "a phone", "price_cents": 99_900}))
        .expect("product.create");
    let first = up
        .create_activity(json!({"title": "phone sale", "product_id": product["id"], "price_cents": 4_900, "stock": 7,
                   "starts_at": OPEN.0, "ends_at": OPEN.1, "per_user_limit": 2}));
    let upcoming = create_activity(&up, 100, 3, 1, UPCOMING);
    let ended = create_activity(&up, 100, 3, 1, PAST);
    for _ in 3..105 {
        create_activity(&up, 100, 1, 1, OPEN);
    }

    // Show: the fields buyers rely on.
    let a = assert_status(&up.get(&format!("/api/v1/activities/{first}"), None), 200);
    assert_eq!(a["id"], first);
    assert_eq!(a["phase"], "ongoing", "{a}");
    assert_eq!(a["remaining"], 7, "{a}");
    assert_eq!(a["total_stock"], 7, "{a}");
    assert_eq!(a["sold_out"], false, "{a}");
    assert_eq!(a["starts_in_ms"], 0, "{a}");
    assert_eq!(a["price_cents"], 4_900, "{a}");
    assert_eq!(a["per_user_limit"], 2, "{a}");
    assert_eq!(a["product_id"], product["id"], "{a}");
    assert_eq!(a["product_name"], "phone", "{a}");
    assert_eq!(a["starts_at"], OPEN.0, "{a}");
    assert_eq!(a["ends_at"], OPEN.1, "{a}");

    let a = assert_status(&up.get(&format!("/api/v1/activities/{upcoming}"), None), 200);
    assert_eq!(a["phase"], "upcoming", "{a}");
    let in_ms = a["starts_in_ms"].as_u64().expect("starts_in_ms");
    assert!(in_ms > 365 * 86_400_000, "starts in 2098, yet starts_in_ms = {in_ms}");
    let a = assert_status(&up.get(&format!("/api/v1/activities/{ended}"), None), 200);
    assert_eq!(a["phase"], "ended", "{a}");
    assert_eq!(a["starts_in_ms"], 0, "{a}");

    // Unknown and malformed ids.
    for path in ["/api/v1/activities/999999", "/api/v1/activities/abc", "/api/v1/activities/0", "/api/v1/activities/-1"]
    {
        assert_error(&up.get(path, None), 404, "activity_not_found");
    }

    // List: default page 20, offset/limit, limit capped at 100.
    let l = assert_status(&up.get("/api/v1/activities", None), 200);
    assert_eq!(l["total"], 105, "{l}");
    let items = l["items"].as_array().expect("items");
    assert_eq!(items.len(), 20);
    assert_eq!(items[0]["id"], first);
    assert!(
        items[0]["remaining"].is_u64() && items[0]["phase"].is_string(),
        "list items are activity views: {}",
        items[0]
    );
    let l = assert_status(&up.get("/api/v1/activities?offset=1&limit=2", None), 200);
    let ids: Vec<&Value> = l["items"].as_array().expect("items").iter().map(|a| &a["id"]).collect();
    assert_eq!(ids, [upcoming, ended], "{l}");
    assert_eq!(l["total"], 105);
    let l = assert_status(&up.get("/api/v1/activities?limit=1000", None), 200);
    assert_eq!(l["items"].as_array().expect("items").len(), 100, "limit is at most 100");
    let l = assert_status(&up.get("/api/v1/activities?offset=100&limit=100", None), 200);
    assert_eq!(l["items"].as_array().expect("items").len(), 5);
    let l = assert_status(&up.get("/api/v1/activities?offset=1000", None), 200);
    assert_eq!(l["items"], json!([]));
    assert_eq!(l["total"], 105);
    for q in ["limit=abc", "limit=-1", "offset=x", "limit=1.5", "limit="] {
        assert_error(&up.get(&format!("/api/v1/activities?{q}"), None), 400, "bad_request");
    }
}

#[test]
fn buy_answers_and_errors() {
    let (_tmp, up, act) = up_with_sale(1_250, 5, 1, OPEN);
    let path = format!("/api/v1/activities/{act}/buy");

    // Empty body = quantity 1; 201 with Location pointing at the order.
    let o = buy_ok(&up, act, 1, "");
    assert_eq!(o["quantity"], 1, "{o}");
    assert_eq!(o["amount_cents"], 1_250, "{o}");
    for f in ["created_at", "pay_before"] {
        assert!(o[f].as_str().is_some_and(|t| t.ends_with('Z')), "{f} must be RFC 3339 UTC: {o}");
    }
    let shown = assert_status(&up.get(&order_path(&o), Some(1)), 200);
    assert_eq!(shown, o, "GET Location returns the same order");
    // Same user again with limit 1.
    assert_error(&buy(&up, act, 1, r#"{"quantity":1}"#), 409, "limit_reached");
    let o2 = buy_ok(&up, act, 2, r#"{"quantity":1}"#);
    assert_ne!(o2["order_id"], o["order_id"]);

    // Bad bodies.
    for body in [
        r#"{"quantity":0}"#,
        r#"{"quantity":-1}"#,
        r#"{"quantity":2}"#,
        r#"{"quantity":99999999999}"#,
        r#"{"quantity":"1"}"#,
        r#"{"quantity":1.5}"#,
        "hello",
        "{",
        "null",
        r#""quantity""#,
    ] {
        assert_error(&buy(&up, act, 3, body), 400, "bad_request");
    }
    // Too large: declared by Content-Length, and chunked without one.
    let big = format!(r#"{{"quantity":1,"pad":"{}"}}"#, "x".repeat(5000));
    assert_error(&buy(&up, act, 3, &big), 413, "payload_too_large");
    let token = bearer(3);
    let mut chunked = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {token}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        big.len()
    )
    .into_bytes();
    chunked.extend_from_slice(big.as_bytes());
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_error(&raw_request(up.port, &chunked).expect("chunked request"), 413, "payload_too_large");
    // Just under the limit is fine (padded with whitespace, which JSON allows).
    let fits = format!(r#"{{"quantity":1{}}}"#, " ".repeat(4000));
    assert!(fits.len() <= 4096);
    buy_ok(&up, act, 3, &fits);

    // Authentication.
    let now = seckill_front::auth::now_s();
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let valid_claims = json!({"sub": "4", "exp": now + 600});
    let secret = AUTH_SECRET.as_bytes();
    let none = json!({"alg": "none", "typ": "JWT"});
    let jwt = |h: &Value, c: Value, s: Option<&[u8]>| format!("Bearer {}", forge_jwt(h, &c, s));
    // The forging helper is right: a forged token with the real secret works.
    let forged_ok = jwt(&hs256, valid_claims.clone(), Some(secret));
    let bad_tokens = [
        String::new(),
        "Bearer".into(),
        "Bearer garbage".into(),
        "Basic dXNlcjpwYXNz".into(),
        jwt(&none, valid_claims.clone(), None),
        jwt(&none, valid_claims.clone(), Some(secret)),
        jwt(&hs256, valid_claims.clone(), Some(b"another secret")),
        jwt(&hs256, json!({"sub": "4", "exp": now - 3600}), Some(secret)),
        jwt(&hs256, json!({"sub": "4"}), Some(secret)),
        jwt(&hs256, json!({"sub": "bob", "exp": now + 600}), Some(secret)),
        jwt(&hs256, json!({"sub": "0", "exp": now + 600}), Some(secret)),
        jwt(&hs256, json!({"exp": now + 600}), Some(secret)),
        format!("Bearer {}", seckill_front::auth::Auth::new(b"wrong").issue(4, 600)),
    ];
    for t in &bad_tokens {
        let headers: Vec<(&str, &str)> = if t.is_empty() { vec![] } else { vec![("Authorization", t.as_str())] };
        let r = up.req("POST", &path, &headers, b"");
        assert_error(&r, 401, "unauthorized");
    }
    assert_eq!(remaining(&up, act), 2, "refused buys must not take stock");
    let r = up.req("POST", &path, &[("Authorization", &forged_ok)], b"");
    assert_eq!(assert_status(&r, 201)["user_id"], 4);

    // Sold out: the front short-circuits later buyers, same answer.
    assert_eq!(remaining(&up, act), 1);
    buy_ok(&up, act, 5, "");
    for user in [6, 7] {
        assert_error(&buy(&up, act, user, ""), 409, "sold_out");
    }
    let a = assert_status(&up.get(&format!("/api/v1/activities/{act}"), None), 200);
    assert_eq!((a["remaining"].clone(), a["sold_out"].clone()), (json!(0), json!(true)), "{a}");

    // Unknown activity.
    assert_error(&buy(&up, 999_999, 1, ""), 404, "activity_not_found");
    assert_error(&up.post("/api/v1/activities/abc/buy", Some(1), b""), 404, "activity_not_found");

    // Phases.
    let upcoming = create_activity(&up, 100, 5, 1, UPCOMING);
    assert_error(&buy(&up, upcoming, 1, ""), 409, "not_started");
    let ended = create_activity(&up, 100, 5, 1, PAST);
    assert_error(&buy(&up, ended, 1, ""), 409, "ended");
    let paused = create_activity(&up, 100, 5, 1, OPEN);
    up.admin("activity.pause", json!({"activity_id": paused})).expect("pause");
    assert_error(&buy(&up, paused, 1, ""), 409, "paused");
    let a = assert_status(&up.get(&format!("/api/v1/activities/{paused}"), None), 200);
    assert_eq!(a["phase"], "paused", "{a}");
    up.admin("activity.resume", json!({"activity_id": paused})).expect("resume");
    buy_ok(&up, paused, 1, "");
    up.admin("activity.disable", json!({"activity_id": paused})).expect("disable");
    assert_error(&buy(&up, paused, 2, ""), 409, "ended");
    assert_eq!(remaining(&up, upcoming) + remaining(&up, ended) + remaining(&up, paused), 5 + 5 + 4);

    // per_user_limit 0: only users with a quota may buy, up to the quota.
    let vip = create_activity(&up, 300, 10, 0, OPEN);
    assert_error(&buy(&up, vip, 7, ""), 409, "limit_reached");
    up.admin("quota.set", json!({"activity_id": vip, "user_id": 7, "limit": 2})).expect("quota.set");
    assert_error(&buy(&up, vip, 7, r#"{"quantity":3}"#), 400, "bad_request");
    let o = buy_ok(&up, vip, 7, r#"{"quantity":2}"#);
    assert_eq!((o["quantity"].clone(), o["amount_cents"].clone()), (json!(2), json!(600)), "{o}");
    assert_error(&buy(&up, vip, 7, ""), 409, "limit_reached");
    assert_error(&buy(&up, vip, 8, ""), 409, "limit_reached");
    assert_eq!(remaining(&up, vip), 8);
}

#[test]
fn orders_cancel_pay_refund() {
    let (_tmp, up, act) = up_with_sale(500, 10, 3, OPEN);
    let a = buy_ok(&up, act, 1, "");
    let b = buy_ok(&up, act, 1, "");
    let c = buy_ok(&up, act, 1, "");
    assert_error(&buy(&up, act, 1, ""), 409, "limit_reached");
    assert_eq!(remaining(&up, act), 7);

    // Show: owner only; malformed and unknown ids.
    assert_status(&up.get(&order_path(&a), Some(1)), 200);
    assert_error(&up.get(&order_path(&a), Some(2)), 404, "order_not_found");
    assert_error(&up.get(&order_path(&a), None), 401, "unauthorized");
    let id = a["order_id"].as_str().expect("order_id");
    let other = unknown_id(id);
    for bad in ["abc", "1", other.as_str(), &id.to_uppercase().replace('-', "_"), &format!("{id}0")] {
        assert_error(&up.get(&format!("/api/v1/orders/{bad}"), Some(1)), 404, "order_not_found");
    }

    // List: newest first, total, paging; someone else's list is empty.
    let l = assert_status(&up.get("/api/v1/orders", Some(1)), 200);
    assert_eq!(l["total"], 3, "{l}");
    let ids: Vec<&Value> = l["items"].as_array().expect("items").iter().map(|o| &o["order_id"]).collect();
    assert_eq!(ids, [&c["order_id"], &b["order_id"], &a["order_id"]], "newest first");
    let l = assert_status(&up.get("/api/v1/orders?offset=1&limit=1", Some(1)), 200);
    assert_eq!(l["items"].as_array().expect("items").len(), 1);
    assert_eq!(l["items"][0]["order_id"], b["order_id"]);
    assert_eq!(l["total"], 3);
    let l = assert_status(&up.get("/api/v1/orders", Some(2)), 200);
    assert_eq!(l, json!({"items": [], "total": 0}));
    assert_error(&up.get("/api/v1/orders", None), 401, "unauthorized");
    assert_error(&up.get("/api/v1/orders?limit=x", Some(1)), 400, "bad_request");

    // Cancel: pending → cancelled, the unit and the quota come back; twice is the same.
    assert_error(&up.post(&format!("{}/cancel", order_path(&a)), Some(2), b""), 404, "order_not_found");
    let r = assert_status(&up.post(&format!("{}/cancel", order_path(&a)), Some(1), b""), 200);
    assert_eq!(r["status"], "cancelled", "{r}");
    assert_eq!(r["order_id"], a["order_id"]);
    assert_eq!(remaining(&up, act), 8, "a cancelled order returns its unit");
    let again = assert_status(&up.post(&format!("{}/cancel", order_path(&a)), Some(1), b""), 200);
    assert_eq!(again, r, "cancel twice answers the same");
    assert_eq!(remaining(&up, act), 8, "cancel twice returns the unit once");
    assert_eq!(assert_status(&up.get(&order_path(&a), Some(1)), 200)["status"], "cancelled");
    let d = buy_ok(&up, act, 1, ""); // the quota came back
    assert_eq!(remaining(&up, act), 7);

    // Pay (sandbox): pending → paid; twice is the same; a paid order cannot be cancelled.
    assert_error(&up.post(&format!("{}/pay", order_path(&b)), Some(2), b""), 404, "order_not_found");
    let r = assert_status(&up.post(&format!("{}/pay", order_path(&b)), Some(1), b""), 200);
    assert_eq!(r["status"], "paid", "{r}");
    assert_eq!(assert_status(&up.post(&format!("{}/pay", order_path(&b)), Some(1), b""), 200), r);
    assert_error(&up.post(&format!("{}/cancel", order_path(&b)), Some(1), b""), 409, "invalid_state");
    assert_error(&up.post(&format!("{}/pay", order_path(&a)), Some(1), b""), 409, "invalid_state");
    assert_error(&up.post(&format!("{}/refund", order_path(&c)), Some(1), b""), 409, "invalid_state");
    assert_eq!(remaining(&up, act), 7);

    // Refund: paid → refunded, the unit comes back once.
    assert_error(&up.post(&format!("{}/refund", order_path(&b)), Some(2), b""), 404, "order_not_found");
    let r = assert_status(&up.post(&format!("{}/refund", order_path(&b)), Some(1), b""), 200);
    assert_eq!(r["status"], "refunded", "{r}");
    assert_eq!(remaining(&up, act), 8, "a refund returns the unit");
    assert_eq!(assert_status(&up.post(&format!("{}/refund", order_path(&b)), Some(1), b""), 200), r);
    assert_eq!(remaining(&up, act), 8, "refund twice returns the unit once");
    // Paying a refunded order again is a replay of the payment: same order, nothing changes.
    let replay = assert_status(&up.post(&format!("{}/pay", order_path(&b)), Some(1), b""), 200);
    assert_eq!(replay, r, "pay after refund changes nothing");
    assert_eq!(remaining(&up, act), 8);

    // A shipped order cannot be refunded.
    assert_status(&up.post(&format!("{}/pay", order_path(&c)), Some(1), b""), 200);
    up.admin("order.ship", json!({"order_id": c["order_id"]})).expect("order.ship");
    assert_eq!(assert_status(&up.get(&order_path(&c), Some(1)), 200)["status"], "shipped");
    assert_error(&up.post(&format!("{}/refund", order_path(&c)), Some(1), b""), 409, "invalid_state");
    assert_eq!(remaining(&up, act), 8);

    // Statuses in the list match.
    let l = assert_status(&up.get("/api/v1/orders", Some(1)), 200);
    let st: Vec<&Value> = l["items"].as_array().expect("items").iter().map(|o| &o["status"]).collect();
    assert_eq!(st, ["pending_payment", "shipped", "refunded", "cancelled"], "{l}");
    assert_eq!(l["items"][0]["order_id"], d["order_id"]);
    for p in ["/cancel", "/pay", "/refund"] {
        assert_error(&up.post(&format!("/api/v1/orders/nope{p}"), Some(1), b""), 404, "order_not_found");
        assert_error(&up.post(&format!("{}{p}", order_path(&d)), None, b""), 401, "unauthorized");
    }

    // No refund once the sale has ended.
    let short = create_activity(&up, 100, 5, 1, OPEN);
    let e = buy_ok(&up, short, 1, "");
    assert_status(&up.post(&format!("{}/pay", order_path(&e)), Some(1), b""), 200);
    up.admin("activity.update", json!({"activity_id": short, "ends_at": "2021-01-01T00:00:00Z"})).expect("update");
    assert_error(&up.post(&format!("{}/refund", order_path(&e)), Some(1), b""), 409, "invalid_state");
    assert_eq!(assert_status(&up.get(&order_path(&e), Some(1)), 200)["status"], "paid");

    // A unit freed on a sold-out sale is sold again (the front's sold-out
    // mark lasts at most a second).
    let one = create_activity(&up, 100, 1, 1, OPEN);
    let f = buy_ok(&up, one, 10, "");
    assert_error(&buy(&up, one, 11, ""), 409, "sold_out");
    assert_status(&up.post(&format!("{}/cancel", order_path(&f)), Some(10), b""), 200);
    assert_eq!(remaining(&up, one), 1);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = buy(&up, one, 11, "");
        if r.status == 201 {
            break;
        }
        assert_error(&r, 409, "sold_out");
        assert!(Instant::now() < deadline, "the returned unit is still sold out after 3 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(remaining(&up, one), 0);
}

#[test]
fn buy_tokens_gate_the_sale() {
    let (_tmp, up, gated, token_path) = up_with_gated_sale(1);
    let with_token = |t: &str| json!({"quantity": 1, "buy_token": t}).to_string();

    assert_error(&buy(&up, gated, 1, ""), 409, "buy_token_required");
    assert_error(&buy(&up, gated, 1, &with_token("1.1.99999999999999.00")), 409, "buy_token_required");
    assert_error(&up.post(&token_path, None, b""), 401, "unauthorized");
    assert_error(&up.post("/api/v1/activities/999999/token", Some(1), b""), 404, "activity_not_found");

    let t = assert_status(&up.post(&token_path, Some(1), b""), 200);
    let token1 = t["buy_token"].as_str().unwrap_or_else(|| panic!("buy_token: {t}")).to_string();
    let expires = t["expires_at"].as_str().unwrap_or_else(|| panic!("expires_at: {t}"));
    assert!(expires.ends_with('Z'), "expires_at is RFC 3339 UTC: {t}");
    // A token is bound to its user and its activity.
    assert_error(&buy(&up, gated, 2, &with_token(&token1)), 409, "buy_token_required");
    let other = create_activity(&up, 100, 5, 1, OPEN);
    assert_error(&up.post(&format!("/api/v1/activities/{other}/token"), Some(1), b""), 400, "bad_request");
    let o = buy_ok(&up, gated, 1, &with_token(&token1));
    assert_eq!(o["quantity"], 1);
    // A buyer at the limit gets no token; at most gate_factor × stock are handed out.
    assert_error(&up.post(&token_path, Some(1), b""), 409, "limit_reached");
    let token2 = assert_status(&up.post(&token_path, Some(2), b""), 200)["buy_token"].clone();
    assert_error(&up.post(&token_path, Some(3), b""), 409, "sold_out");
    buy_ok(&up, gated, 2, &with_token(token2.as_str().expect("token")));
    assert_eq!(remaining(&up, gated), 0);
    let upcoming = up
        .create_activity(json!({"title": "later", "price_cents": 100, "stock": 2, "require_buy_token": true,
                   "starts_at": UPCOMING.0, "ends_at": UPCOMING.1}));
    assert_error(&up.post(&format!("/api/v1/activities/{upcoming}/token"), Some(1), b""), 409, "not_started");
    assert_error(&up.get(&token_path, Some(1)), 405, "method_not_allowed");
}

/// Seed 002's gate hands out at most gate_factor × stock buy tokens so that
/// many buyers get a chance. Bug: neither front/src/http.rs `buy_token`
/// (no rate limit) nor engine/src/shard/state.rs `issue_buy_token` (no
/// per-user count) stops one user from taking every token, so a single
/// logged-in client can lock everyone else out of a gated sale.
#[test]
fn one_user_cannot_drain_the_buy_token_gate() {
    let (_tmp, up, _, token_path) = up_with_gated_sale(2);
    for _ in 0..10 {
        let _ = up.post(&token_path, Some(1), b"");
    }
    assert_status(&up.post(&token_path, Some(2), b""), 200);
}

#[test]
fn idempotency_key_returns_the_same_order() {
    let (_tmp, up, act) = up_with_sale(100, 10, 2, OPEN);
    let path = format!("/api/v1/activities/{act}/buy");
    let click = |user: u64, key: &str| {
        let auth = bearer(user);
        up.req("POST", &path, &[("Authorization", &auth), ("Idempotency-Key", key)], b"")
    };
    let first = assert_status(&click(1, "k-1"), 201);
    let again = click(1, "k-1");
    assert_eq!(assert_status(&again, 200), first, "the same key answers the first order");
    assert_eq!(remaining(&up, act), 9, "a replayed key takes no stock");
    // Another key is another buy; another user's same key is theirs.
    let second = assert_status(&click(1, "k-2"), 201);
    assert_ne!(second["order_id"], first["order_id"]);
    assert_error(&click(1, "k-3"), 409, "limit_reached");
    assert_eq!(assert_status(&click(1, "k-1"), 200), first, "replays still work at the limit");
    let theirs = assert_status(&click(2, "k-1"), 201);
    assert_eq!(theirs["user_id"], 2);
    assert_eq!(remaining(&up, act), 7);
    let l = assert_status(&up.get("/api/v1/orders", Some(1)), 200);
    assert_eq!(l["total"], 2, "{l}");
    // Bad keys.
    assert_error(&click(3, &"k".repeat(256)), 400, "bad_request");
    assert_error(&click(3, ""), 400, "bad_request");
    assert_status(&click(3, &"k".repeat(255)), 201);
}

/// DESIGN.md: "the same key from the same user returns the same order
/// (200)". Bug in front/src/http.rs `buy`: the sold-out short circuit
/// (`front.sold_out.is_sold_out`) answers before the engine sees the key, so
/// a buyer who retries a buy whose answer was lost gets 409 sold_out for the
/// next second although they hold an order.
#[test]
fn idempotency_key_replays_after_sold_out() {
    let (_tmp, up, act) = up_with_sale(100, 1, 1, OPEN);
    let path = format!("/api/v1/activities/{act}/buy");
    let auth = bearer(1);
    let headers = [("Authorization", auth.as_str()), ("Idempotency-Key", "once")];
    let first = assert_status(&up.req("POST", &path, &headers, b""), 201);
    assert_error(&buy(&up, act, 2, ""), 409, "sold_out");
    assert_eq!(assert_status(&up.req("POST", &path, &headers, b""), 200), first);
}

#[test]
fn payment_deadline_expires_orders_even_across_kill_9() {
    let (_tmp, dir) = data_dir();
    let mut up = UpProc::start(&dir, &[]);
    let act = up.create_activity(
        json!({"title": "quick", "price_cents": 100, "stock": 3, "per_user_limit": 1, "payment_timeout_s": 1,
                   "starts_at": OPEN.0, "ends_at": OPEN.1}),
    );
    let a = buy_ok(&up, act, 1, "");
    let ms = |o: &Value, f: &str| {
        seckill_proto::json::parse_rfc3339(o[f].as_str().expect("time")).unwrap_or_else(|| panic!("{f}: {o}"))
    };
    assert_eq!(ms(&a, "pay_before") - ms(&a, "created_at"), 1_000, "{a}");
    assert_eq!(remaining(&up, act), 2);
    let wait_expired = |up: &UpProc, o: &Value, user: u64| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = assert_status(&up.get(&order_path(o), Some(user)), 200);
            if now["status"] == "expired" {
                return now;
            }
            assert_eq!(now["status"], "pending_payment", "{now}");
            assert!(Instant::now() < deadline, "order not expired 4 s after its deadline: {now}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_expired(&up, &a, 1);
    assert_eq!(remaining(&up, act), 3, "an expired order returns its unit");
    assert_error(&up.post(&format!("{}/pay", order_path(&a)), Some(1), b""), 409, "invalid_state");
    assert_error(&up.post(&format!("{}/cancel", order_path(&a)), Some(1), b""), 409, "invalid_state");

    // The quota came back; the new order's deadline passes while the process is dead.
    let b = buy_ok(&up, act, 1, "");
    up.kill9();
    let due = ms(&b, "pay_before");
    while seckill_front::now_ms() < due + 100 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let up = UpProc::start(&dir, &[]);
    wait_expired(&up, &b, 1);
    assert_eq!(remaining(&up, act), 3);
}

/// DESIGN.md: a buy body is a JSON object (`{"quantity":1}`) or empty.
/// Bug in front/src/http.rs `parse_buy`: serde's derived `Deserialize` for
/// `BuyBody` also accepts a JSON array, so `[]` buys 1 unit and `[2]` buys 2.
#[test]
fn buy_body_must_be_an_object() {
    let (_tmp, up, act) = up_with_sale(100, 10, 3, OPEN);
    for body in ["[]", "[2]", "[1, null]", "true", "1"] {
        assert_error(&buy(&up, act, 1, body), 400, "bad_request");
    }
    assert_eq!(remaining(&up, act), 10);
}

/// SECURITY.md: a secret short enough to brute-force offline from one token
/// stops the service at start, with a message that says what to do.
#[test]
fn short_secrets_are_refused_at_start() {
    for (var, value) in [("SECKILL_AUTH_SECRET", "x"), ("SECKILL_PAYMENT_SECRET", "0123456789abcdef0123456789abcde")] {
        let (_tmp, dir) = data_dir();
        let out = std::process::Command::new(common::bin())
            .args(["up", "--http", &format!("127.0.0.1:{}", common::free_port()), "--mysql-url", "none"])
            .args(["--redis-url", "none", "--data-dir"])
            .arg(&dir)
            .env("SECKILL_AUTH_SECRET", AUTH_SECRET)
            .env("SECKILL_PAYMENT_SECRET", PAYMENT_SECRET)
            .env("SECKILL_METRICS", "none")
            .env(var, value)
            .output()
            .expect("seckill up");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} was accepted");
        assert!(err.contains("at least 32 bytes") && err.contains(var), "{var}: {err}");
    }
}

/// SECURITY.md: a misspelt field is not silently ignored (`{"qty":3}` used to
/// buy 1), and a body that is not UTF-8 JSON is refused.
#[test]
fn buy_body_with_unknown_fields_or_bad_utf8_is_refused() {
    let (_tmp, up, act) = up_with_sale(100, 10, 3, OPEN);
    for body in [&br#"{"qty":3}"#[..], br#"{"quantity":1,"coupon":"FREE"}"#, b"{\"quantity\":1,\"x\":\"\xff\"}"] {
        let r = up.post(&format!("/api/v1/activities/{act}/buy"), Some(1), body);
        assert_error(&r, 400, "bad_request");
    }
    assert_eq!(remaining(&up, act), 10, "nothing was bought");
    assert_status(&buy(&up, act, 1, r#"{"quantity":2}"#), 201);
}

/// SECURITY.md: the same Idempotency-Key with a different request is a
/// client bug, not a retry: 422, and no second order.
#[test]
fn idempotency_key_reused_for_another_request_is_422() {
    let (_tmp, up, act) = up_with_sale(100, 10, 3, OPEN);
    let path = format!("/api/v1/activities/{act}/buy");
    let auth = bearer(1);
    let click = |body: &[u8]| up.req("POST", &path, &[("Authorization", &auth), ("Idempotency-Key", "k")], body);
    let first = assert_status(&click(br#"{"quantity":1}"#), 201);
    assert_error(&click(br#"{"quantity":2}"#), 422, "idempotency_key_reused");
    assert_eq!(assert_status(&click(br#"{"quantity":1}"#), 200), first, "the real retry still replays");
    assert_eq!(remaining(&up, act), 9);
}

#[test]
fn payment_notify() {
    let (_tmp, dir) = data_dir();
    let up = UpProc::start(&dir, &["--payment", "notify"]);
    let act = create_activity(&up, 777, 10, 1, OPEN);
    let a = buy_ok(&up, act, 1, "");
    let b = buy_ok(&up, act, 2, "");
    let c = buy_ok(&up, act, 3, "");
    let id = |o: &Value| o["order_id"].as_str().expect("order_id").to_string();

    // Sandbox pay is off without --payment sandbox.
    let r = up.post(&format!("{}/pay", order_path(&a)), Some(1), b"");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(assert_status(&up.get(&order_path(&a), Some(1)), 200)["status"], "pending_payment");

    // Bad signatures, no auth header needed: 401 and nothing changes.
    let body = notify_body(&id(&a), 777, "txn-a");
    assert_error(&notify(&up, &body, None), 401, "unauthorized");
    let other = seckill_front::payment::sign(b"not the secret", &body);
    assert_error(&notify(&up, &body, Some(&other)), 401, "unauthorized");
    let sig_of_other_body = sign(&notify_body(&id(&a), 1, "txn-a"));
    assert_error(&notify(&up, &body, Some(&sig_of_other_body)), 401, "unauthorized");
    let good = sign(&body);
    let hex = good.split_once(",v1=").map(|(_, h)| h.to_string()).expect("t=…,v1=…");
    assert_error(&notify(&up, &body, Some(&hex)), 401, "unauthorized");
    assert_error(&notify(&up, &body, Some(&format!("sha256={hex}"))), 401, "unauthorized");
    assert_error(&notify(&up, &body, Some("sha256=zz")), 401, "unauthorized");
    assert_eq!(assert_status(&up.get(&order_path(&a), Some(1)), 200)["status"], "pending_payment");

    // A good notify pays; a replay answers the same.
    let r = assert_status(&notify(&up, &body, Some(&good)), 200);
    assert_eq!(r["status"], "paid", "{r}");
    assert_eq!(r["order_id"], a["order_id"]);
    assert_eq!(assert_status(&up.get(&order_path(&a), Some(1)), 200)["status"], "paid");
    let replay = assert_status(&notify(&up, &body, Some(&good)), 200);
    assert_eq!(replay, r, "a replayed notify answers the same");
    // Another transaction for a paid order is a second payment: refused.
    let second = notify_body(&id(&a), 777, "txn-a-again");
    assert_error(&notify(&up, &second, Some(&sign(&second))), 409, "invalid_state");
    assert_eq!(assert_status(&up.get(&order_path(&a), Some(1)), 200), r);

    // Wrong amount: 409 and the order stays unpaid.
    let wrong = notify_body(&id(&b), 776, "txn-b");
    assert_error(&notify(&up, &wrong, Some(&sign(&wrong))), 409, "amount_mismatch");
    assert_eq!(assert_status(&up.get(&order_path(&b), Some(2)), 200)["status"], "pending_payment");

    // A cancelled order cannot be paid.
    assert_status(&up.post(&format!("{}/cancel", order_path(&c)), Some(3), b""), 200);
    let late = notify_body(&id(&c), 777, "txn-c");
    assert_error(&notify(&up, &late, Some(&sign(&late))), 409, "invalid_state");
    assert_eq!(assert_status(&up.get(&order_path(&c), Some(3)), 200)["status"], "cancelled");

    // Unknown order, malformed bodies (signed, so the body is what is wrong).
    let unknown = notify_body(&unknown_id(&id(&b)), 777, "txn-x");
    assert_error(&notify(&up, &unknown, Some(&sign(&unknown))), 404, "order_not_found");
    for bad in [
        b"not json".to_vec(),
        br#"{"order_id":"x","amount_cents":777,"provider_txn_id":"t"}"#.to_vec(),
        json!({"order_id": id(&b), "amount_cents": "777", "provider_txn_id": "t"}).to_string().into_bytes(),
        json!({"order_id": id(&b), "amount_cents": 777}).to_string().into_bytes(),
        json!({"order_id": id(&b), "amount_cents": 777, "provider_txn_id": ""}).to_string().into_bytes(),
    ] {
        assert_error(&notify(&up, &bad, Some(&sign(&bad))), 400, "bad_request");
    }
    let big = vec![b' '; 5000];
    assert_error(&notify(&up, &big, Some(&sign(&big))), 413, "payload_too_large");
    assert_eq!(assert_status(&up.get(&order_path(&b), Some(2)), 200)["status"], "pending_payment");

    // The right amount pays b; the refund route works on a notify-paid order.
    let right = notify_body(&id(&b), 777, "txn-b2");
    assert_eq!(assert_status(&notify(&up, &right, Some(&sign(&right))), 200)["status"], "paid");
    let before = remaining(&up, act);
    assert_eq!(assert_status(&up.post(&format!("{}/refund", order_path(&b)), Some(2), b""), 200)["status"], "refunded");
    assert_eq!(remaining(&up, act), before + 1);
    // A late replay of the notify after the refund answers the order as it is.
    let replay = assert_status(&notify(&up, &right, Some(&sign(&right))), 200);
    assert_eq!(replay["status"], "refunded", "{replay}");
    assert_eq!(remaining(&up, act), before + 1, "a replayed notify must not take the unit again");
}

#[test]
fn rate_limit_answers_429_with_retry_after() {
    let (_tmp, dir) = data_dir();
    let up = UpProc::start(&dir, &["--buys-per-minute", "3"]);
    let act = create_activity(&up, 100, 10, 1, OPEN);
    buy_ok(&up, act, 1, "");
    assert_error(&buy(&up, act, 1, ""), 409, "limit_reached");
    assert_error(&buy(&up, act, 1, ""), 409, "limit_reached");
    let r = buy(&up, act, 1, "");
    assert_error(&r, 429, "rate_limited");
    let retry: u64 = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {:?}", r.headers))
        .parse()
        .expect("Retry-After is whole seconds");
    assert!((1..=20).contains(&retry), "3 clicks/min refill one every 20 s, yet Retry-After = {retry}");
    assert_error(&buy(&up, act, 1, ""), 429, "rate_limited");
    // Per user: another user still gets through, and reads are not limited.
    buy_ok(&up, act, 2, "");
    for _ in 0..5 {
        assert_status(&up.get("/api/v1/orders", Some(1)), 200);
    }
    assert_eq!(remaining(&up, act), 8);
}

#[test]
fn routes_health_and_metrics() {
    let (_tmp, dir) = data_dir();
    let up = UpProc::start(&dir, &[]);
    let h = assert_status(&up.get("/api/v1/healthz", None), 200);
    assert!(h.is_object(), "{h}");
    assert_status(&up.get("/api/v1/readyz", None), 200);

    // `/` is the buyer page (cli/tests/pages.rs); other paths outside the API are 404.
    assert_eq!(up.get("/", None).status, 200);
    for path in ["/nope", "/api/v1", "/api/v1/nope", "/api/v2/activities", "/api/v1/activities/1/buy/x", "/healthz"] {
        assert_error(&up.get(path, None), 404, "not_found");
    }
    for (method, path, allow) in [
        ("DELETE", "/api/v1/activities", "GET"),
        ("POST", "/api/v1/activities/1", "GET"),
        ("GET", "/api/v1/activities/1/buy", "POST"),
        ("PUT", "/api/v1/orders", "GET"),
        ("GET", "/api/v1/payments/notify", "POST"),
        ("POST", "/api/v1/healthz", "GET"),
    ] {
        let r = up.req(method, path, &[], b"");
        assert_error(&r, 405, "method_not_allowed");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }

    // Metrics are the operator's (`--metrics`): not on the buyer port.
    for path in ["/metrics", "/api/v1/metrics"] {
        assert_error(&up.get(path, None), 404, "not_found");
    }
    let r = common::request(up.metrics_port, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/plain")), "{:?}", r.headers);
    let text = r.text();
    assert!(text.contains("seckill_http_requests_total"), "/metrics lacks seckill_http_requests_total:\n{text}");
    assert!(text.contains(r#"route="healthz""#), "requests are counted by route:\n{text}");

    // A token printed by `seckill token` (same secret) is accepted.
    let out = std::process::Command::new(common::bin())
        .args(["token", "--user", "77", "--data-dir"])
        .arg(&dir)
        .env("SECKILL_AUTH_SECRET", AUTH_SECRET)
        .output()
        .expect("seckill token");
    assert!(out.status.success(), "seckill token: {}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).expect("utf-8").trim().to_string();
    let auth = format!("Bearer {token}");
    let l = assert_status(&up.req("GET", "/api/v1/orders", &[("Authorization", &auth)], b""), 200);
    assert_eq!(l["total"], 0);
}

#[test]
fn front_without_engine_is_not_ready() {
    let (_tmp, dir) = data_dir();
    let port = common::free_port();
    let no_engine = format!("unix:{}", dir.join("no-engine.sock").display());
    let log = std::fs::File::create(dir.with_extension("log")).expect("log");
    let _child = common::spawn_front(&dir, port, &["--engine", &no_engine], log);
    common::wait_http_ok(port, "/api/v1/healthz");
    let r = common::request(port, "GET", "/api/v1/readyz", &[], b"");
    assert_error(&r, 503, "busy");
    assert!(r.header("retry-after").is_some(), "503 without Retry-After: {:?}", r.headers);
    let auth = bearer(1);
    let r = common::request(port, "POST", "/api/v1/activities/1/buy", &[("Authorization", &auth)], b"");
    assert_error(&r, 503, "busy");
    assert!(r.header("retry-after").is_some(), "503 without Retry-After: {:?}", r.headers);
}

#[test]
fn same_user_clicking_concurrently_gets_at_most_the_limit() {
    const USERS: u64 = 50;
    const CLICKS: u64 = 6;
    const LIMIT: u64 = 2;
    let (_tmp, dir) = data_dir();
    let up = UpProc::start(&dir, &["--buys-per-minute", "1000000"]);
    let act = create_activity(&up, 100, 1_000, LIMIT as u32, OPEN);
    let port = up.port;
    // Click i belongs to user (i - 1) % USERS + 1: a user's clicks run side by side.
    let results = on_pool(USERS * CLICKS, move |click| {
        let user = (click - 1) % USERS + 1;
        let auth = bearer(user);
        loop {
            let r = common::request(
                port,
                "POST",
                &format!("/api/v1/activities/{act}/buy"),
                &[("Authorization", &auth)],
                b"",
            );
            if r.status != 503 {
                return (user, r);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let mut per_user: HashMap<u64, u64> = HashMap::new();
    for (_, (user, r)) in &results {
        match r.status {
            201 => *per_user.entry(*user).or_default() += 1,
            _ => assert_error(r, 409, "limit_reached"),
        }
    }
    for user in 1..=USERS {
        assert_eq!(per_user.get(&user).copied().unwrap_or(0), LIMIT, "user {user}: 201 answers");
        let l = assert_status(&up.get("/api/v1/orders", Some(user)), 200);
        assert_eq!(l["total"], LIMIT, "user {user}: {l}");
    }
    assert_eq!(remaining(&up, act), 1_000 - USERS * LIMIT);
}

const FLOOD_USERS: u64 = 2_000;
const FLOOD_STOCK: u64 = 500;
const FLOOD_THREADS: usize = 32;
const FLOOD_PAID: usize = 100;

/// Runs `work(user)` for users 1..=n on a pool of threads.
fn on_pool<T: Send + 'static>(n: u64, work: impl Fn(u64) -> T + Send + Sync + 'static) -> Vec<(u64, T)> {
    let next = Arc::new(AtomicU64::new(1));
    let out = Arc::new(Mutex::new(Vec::with_capacity(n as usize)));
    let work = Arc::new(work);
    let threads: Vec<_> = (0..FLOOD_THREADS)
        .map(|_| {
            let (next, out, work) = (next.clone(), out.clone(), work.clone());
            std::thread::spawn(move || loop {
                let user = next.fetch_add(1, Ordering::Relaxed);
                if user > n {
                    return;
                }
                let r = work(user);
                out.lock().expect("results").push((user, r));
            })
        })
        .collect();
    for t in threads {
        t.join().expect("pool thread panicked");
    }
    let mut v = std::mem::take(&mut *out.lock().expect("results"));
    v.sort_by_key(|(u, _)| *u);
    v
}

#[test]
fn flood_then_kill_9() {
    let (_tmp, dir) = data_dir();
    let mut up = UpProc::start(&dir, &["--buys-per-minute", "1000000"]);
    let act = create_activity(&up, 990, FLOOD_STOCK, 1, OPEN);
    let port = up.port;

    // 2,000 buyers, one click each (503 busy is retried until a final answer).
    let started = Instant::now();
    let busy = Arc::new(AtomicU64::new(0));
    let busy2 = busy.clone();
    let results = on_pool(FLOOD_USERS, move |user| {
        let auth = bearer(user);
        let key = format!("flood-{user}");
        let path = format!("/api/v1/activities/{act}/buy");
        loop {
            let r = common::request(
                port,
                "POST",
                &path,
                &[("Authorization", &auth), ("Idempotency-Key", &key)],
                br#"{"quantity":1}"#,
            );
            if r.status == 503 {
                busy2.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            return r;
        }
    });
    let flood_time = started.elapsed();
    let mut won: HashMap<u64, Value> = HashMap::new();
    let mut sold_out = 0u64;
    for (user, r) in &results {
        match r.status {
            201 => {
                let o = r.json();
                assert_eq!(o["user_id"], *user, "{o}");
                assert_eq!(o["status"], "pending_payment", "{o}");
                assert_eq!(
                    r.header("location"),
                    Some(format!("/api/v1/orders/{}", o["order_id"].as_str().expect("id")).as_str())
                );
                assert!(won.insert(*user, o).is_none());
            }
            409 => {
                assert_error(r, 409, "sold_out");
                sold_out += 1;
            }
            s => panic!("user {user}: unexpected answer {s} {}", r.text()),
        }
    }
    eprintln!(
        "flood: {} users in {flood_time:?}: {} orders, {sold_out} sold_out, {} busy retries",
        results.len(),
        won.len(),
        busy.load(Ordering::Relaxed)
    );
    assert_eq!(results.len() as u64, FLOOD_USERS);
    assert_eq!(won.len() as u64, FLOOD_STOCK, "exactly the stock is sold");
    assert_eq!(sold_out, FLOOD_USERS - FLOOD_STOCK);
    let ids: HashSet<&Value> = won.values().map(|o| &o["order_id"]).collect();
    assert_eq!(ids.len(), won.len(), "order ids are unique");
    let a = assert_status(&up.get(&format!("/api/v1/activities/{act}"), None), 200);
    assert_eq!((a["remaining"].clone(), a["sold_out"].clone()), (json!(0), json!(true)), "{a}");

    // Every user holds exactly the orders they were answered 201 for.
    let won = Arc::new(won);
    let won2 = won.clone();
    on_pool(FLOOD_USERS, move |user| {
        let l = assert_status(
            &common::request(port, "GET", "/api/v1/orders", &[("Authorization", &bearer(user))], b""),
            200,
        );
        match won2.get(&user) {
            Some(o) => assert_eq!(l, json!({"items": [o], "total": 1}), "user {user}"),
            None => assert_eq!(l, json!({"items": [], "total": 0}), "user {user}"),
        }
    });

    // Pay some winners, so more than one status must survive.
    let mut winners: Vec<u64> = won.keys().copied().collect();
    winners.sort_unstable();
    let mut expected: HashMap<u64, Value> = won.iter().map(|(u, o)| (*u, o.clone())).collect();
    for user in winners.iter().take(FLOOD_PAID) {
        let o = &won[user];
        let paid = assert_status(&up.post(&format!("{}/pay", order_path(o)), Some(*user), b""), 200);
        assert_eq!(paid["status"], "paid");
        expected.insert(*user, paid);
    }

    // kill -9, restart on the same data dir.
    up.kill9();
    let restarted = Instant::now();
    let up = UpProc::start(&dir, &["--buys-per-minute", "1000000"]);
    eprintln!("flood: restart took {:?}", restarted.elapsed());
    let port = up.port;
    let expected = Arc::new(expected);
    let expected2 = expected.clone();
    let checked = on_pool(FLOOD_USERS, move |user| {
        let Some(o) = expected2.get(&user) else {
            return false;
        };
        let r = common::request(port, "GET", &order_path(o), &[("Authorization", &bearer(user))], b"");
        assert_eq!(
            r.status,
            200,
            "user {user}: acknowledged order {} is gone after kill -9: {}",
            o["order_id"],
            r.text()
        );
        assert_eq!(&r.json(), o, "user {user}: order changed across kill -9");
        true
    });
    assert_eq!(checked.iter().filter(|(_, c)| *c).count() as u64, FLOOD_STOCK);
    // Idempotency keys survive too: a retried click gets its order back.
    for user in winners.iter().step_by(10) {
        let (auth, key) = (bearer(*user), format!("flood-{user}"));
        let r = up.req(
            "POST",
            &format!("/api/v1/activities/{act}/buy"),
            &[("Authorization", &auth), ("Idempotency-Key", &key)],
            b"",
        );
        assert_eq!(&assert_status(&r, 200), &expected[user], "user {user}: replayed key after kill -9");
    }
    let a = assert_status(&up.get(&format!("/api/v1/activities/{act}"), None), 200);
    assert_eq!((a["remaining"].clone(), a["sold_out"].clone()), (json!(0), json!(true)), "after restart: {a}");
    assert_error(&buy(&up, act, FLOOD_USERS + 1, ""), 409, "sold_out");
    let paid = expected.values().filter(|o| o["status"] == "paid").count();
    assert_eq!(paid, FLOOD_PAID);

    // A clean stop (SIGTERM) exits 0 and loses nothing either.
    let mut up = up;
    let status = common::signal_and_wait(&mut up.child, "TERM", Duration::from_secs(15));
    assert!(status.success(), "seckill up exited with {status} on SIGTERM; log:\n{}", up.log_tail());
    let up = UpProc::start(&dir, &[]);
    for user in winners.iter().step_by(7) {
        let o = &expected[user];
        assert_eq!(&assert_status(&up.get(&order_path(o), Some(*user)), 200), o, "user {user} after SIGTERM");
    }
    assert_eq!(remaining(&up, act), 0);
}

/// `seckill front` processes reach the engine over its socket: two fronts
/// share one engine, the per-user click limit holds across them (the
/// user's shard keeps it), and a front outlives an engine restart (503
/// `busy` meanwhile, then it redials on its own).
#[test]
fn two_fronts_share_one_engine_over_the_socket() {
    let (_tmp, dir) = data_dir();
    let mut engine = common::EngineProc::start(&dir, &["--shards", "2", "--buys-per-minute", "4"]);
    let start_front =
        |port: u16| common::spawn_front(&dir, port, &[], common::log_file(&dir.join(format!("front-{port}.log"))));
    let wait_ready = |port: u16| common::wait_http_ok(port, "/api/v1/readyz");
    let (pa, pb) = (common::free_port(), common::free_port());
    let _fa = start_front(pa);
    let _fb = start_front(pb);
    wait_ready(pa);
    wait_ready(pb);
    let a = engine.create_activity(json!({"title": "two fronts", "price_cents": 300, "stock": 5,
               "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z"}));
    let buy_path = format!("/api/v1/activities/{a}/buy");
    let auth = bearer(7);
    let r = common::request(pa, "POST", &buy_path, &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 201, "{}", r.text());
    let order_id = r.json()["order_id"].as_str().expect("order_id").to_string();
    let r = common::request(pb, "GET", &format!("/api/v1/orders/{order_id}"), &[("Authorization", &auth)], b"");
    assert_eq!((r.status, r.json()["status"].clone()), (200, json!("pending_payment")), "{}", r.text());
    let r = common::request(pb, "POST", &buy_path, &[("Authorization", &auth)], b"");
    assert_error(&r, 409, "limit_reached");
    // Clicks 3 and 4 of 4 per minute, one on each front; the 5th is refused
    // whichever front it reaches.
    for port in [pa, pb] {
        assert_error(&common::request(port, "POST", &buy_path, &[("Authorization", &auth)], b""), 409, "limit_reached");
    }
    for port in [pa, pb] {
        let r = common::request(port, "POST", &buy_path, &[("Authorization", &auth)], b"");
        assert_error(&r, 429, "rate_limited");
        let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After in seconds");
        assert!((10..=15).contains(&retry), "4 clicks a minute come back one every 15 s; Retry-After {retry}");
    }

    engine.kill9();
    let r = common::request(pa, "GET", &format!("/api/v1/orders/{order_id}"), &[("Authorization", &auth)], b"");
    assert_error(&r, 503, "busy");
    let _engine = common::EngineProc::start(&dir, &["--shards", "2"]);
    wait_ready(pa);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = common::request(pa, "GET", &format!("/api/v1/orders/{order_id}"), &[("Authorization", &auth)], b"");
        if r.status == 200 {
            assert_eq!(r.json()["status"], "pending_payment", "{}", r.text());
            break;
        }
        assert!(Instant::now() < deadline, "front did not recover after the engine restart: {}", r.text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The buy fast path (`front/src/fast_path.rs`) answers as hyper's handler
/// does. Each case is sent once as a plain buy (the fast path serves it)
/// and once with a query string (the fast path hands it to hyper, whose
/// router ignores the query): both get the same status, the same headers
/// but `date` (and `location`'s order id), and the same body but the
/// order's own id, buyer and times. Then one keep-alive connection carries
/// buys, a read (hyper from there on) and more buys.
#[test]
fn the_fast_path_answers_as_hyper_does() {
    let (_tmp, up, act) = up_with_sale(100, 1_000, 1, OPEN);
    let sold = create_activity(&up, 100, 1, 1, OPEN);
    let upcoming = create_activity(&up, 100, 5, 1, UPCOMING);
    let long_key = "k".repeat(300);
    let (a, s, u) = (act.to_string(), sold.to_string(), upcoming.to_string());
    // (what, activity, buyer on the fast path and on hyper's, headers, body)
    type Case<'a> = (&'a str, &'a str, Option<(u64, u64)>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        ("created", &a, Some((1, 2)), vec![], r#"{"quantity":1}"#),
        ("limit reached", &a, Some((1, 2)), vec![], ""),
        ("no token", &a, None, vec![], ""),
        ("bad token", &a, None, vec![("Authorization", "Bearer nope")], ""),
        ("no such activity", "999999", Some((3, 4)), vec![], ""),
        ("not an id", "abc", Some((3, 4)), vec![], ""),
        ("unknown field", &a, Some((3, 4)), vec![], r#"{"qty":3}"#),
        ("not json", &a, Some((3, 4)), vec![], "[1]"),
        ("long key", &a, Some((3, 4)), vec![("Idempotency-Key", &long_key)], ""),
        ("keyed", &a, Some((5, 6)), vec![("Idempotency-Key", "k1")], ""),
        ("replayed", &a, Some((5, 6)), vec![("Idempotency-Key", "k1")], ""),
        ("key reused", &a, Some((5, 6)), vec![("Idempotency-Key", "k1")], r#"{"quantity":2}"#),
        ("last unit", &s, Some((7, 7)), vec![], ""),
        ("sold out", &s, Some((8, 9)), vec![], ""),
        ("upcoming", &u, Some((8, 9)), vec![], ""),
    ];
    for (what, id, users, headers, body) in cases {
        let send = |via_hyper: bool| {
            let tokens = users.map(|(fast, hyper)| bearer(if via_hyper { hyper } else { fast }));
            let mut hs = headers.clone();
            if let Some(t) = &tokens {
                hs.push(("Authorization", t));
            }
            let path = format!("/api/v1/activities/{id}/buy{}", if via_hyper { "?via=hyper" } else { "" });
            up.req("POST", &path, &hs, body.as_bytes())
        };
        let fast = send(false);
        if what == "last unit" {
            assert_status(&fast, 201);
            continue;
        }
        let hyper = send(true);
        assert_eq!(fast.status, hyper.status, "{what}: {} vs {}", fast.text(), hyper.text());
        assert_eq!(comparable_headers(&fast), comparable_headers(&hyper), "{what}");
        assert_eq!(comparable_body(&fast), comparable_body(&hyper), "{what}");
    }

    // Keep-alive: two buys, a read, two buys on one connection, written at once.
    let mut raw = Vec::new();
    for (i, user) in [11u64, 12, 0, 13, 14].into_iter().enumerate() {
        if i == 2 {
            raw.extend_from_slice(format!("GET /api/v1/activities/{act} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
            continue;
        }
        raw.extend_from_slice(
            format!(
                "POST /api/v1/activities/{act}/buy HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 2\r\n\r\n{{}}",
                bearer(user)
            )
            .as_bytes(),
        );
    }
    let mut s = std::net::TcpStream::connect(("127.0.0.1", up.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    std::io::Write::write_all(&mut s, &raw).expect("write");
    let mut r = std::io::BufReader::new(s);
    let statuses: Vec<u16> = (0..5).map(|_| read_response_from(&mut r).expect("an answer").status).collect();
    assert_eq!(statuses, [201, 201, 200, 201, 201]);
}

/// Header names and values, lowercased names, without what differs by time
/// or by order: no `date`, `location` without the order id, and in place of
/// `content-length` (an order id's digits vary) whether it is the body's.
fn comparable_headers(r: &HttpResp) -> Vec<(String, String)> {
    let mut hs: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .filter(|(k, _)| k != "date")
        .map(|(k, v)| match k.as_str() {
            "location" => (k, v.rsplit_once('/').map(|x| x.0.to_string()).unwrap_or(v)),
            "content-length" => (k, format!("of the body: {}", v == r.body.len().to_string())),
            _ => (k, v),
        })
        .collect();
    hs.sort();
    hs
}

/// The body as JSON with an order's own fields blanked.
fn comparable_body(r: &HttpResp) -> Value {
    let mut v = r.json();
    if let Some(o) = v.as_object_mut() {
        for k in ["order_id", "user_id", "created_at", "pay_before"] {
            if let Some(x) = o.get_mut(k) {
                *x = Value::Null;
            }
        }
    }
    v
}
