//! Routing and handlers: every route of docs/API.md (and docs/openapi.yaml).
//!
//! Handlers turn HTTP into one engine request and the answer back into JSON.
//! Errors are always `{"error":{"code","message"}}` with the status of the code.

// Handlers return a ready response as their error; boxing it would only add
// an allocation to every refusal.
#![allow(clippy::result_large_err)]

use crate::limits::ActivityKey;
use crate::Front;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use hyper::{Method, Request as HttpRequest, Response as HttpResponse, StatusCode};
use seckill_proto::{json, ErrorCode, OrderId, Request, Response, PAGE_LIMIT_MAX};
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

pub type Body = Full<Bytes>;

/// Largest request body read; larger ones get 413 before they are read whole.
pub const BODY_BYTES_MAX: usize = 4 * 1024;
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

pub async fn handle(
    front: Arc<Front>,
    ip: IpAddr,
    req: HttpRequest<Incoming>,
) -> Result<HttpResponse<Body>, Infallible> {
    let started = Instant::now();
    let (route, resp) = route(&front, ip, req).await;
    front.metrics.record(route, resp.status().as_u16(), started.elapsed());
    Ok(resp)
}

/// Most path segments a route has (`/api/v1/activities/{id}/buy`).
const PATH_SEGMENTS_MAX: usize = 6;

async fn route(front: &Front, ip: IpAddr, req: HttpRequest<Incoming>) -> (&'static str, HttpResponse<Body>) {
    if head_bytes(&req) > crate::HEAD_BYTES_MAX {
        return ("unknown", head_too_large());
    }
    // A clone of the URI shares its bytes: the path outlives `req`, which
    // the body-reading handlers consume.
    let uri = req.uri().clone();
    let method = req.method().clone();
    let mut segs = [""; PATH_SEGMENTS_MAX];
    let mut n = 0;
    for seg in uri.path().trim_end_matches('/').split('/').skip(1) {
        if n == PATH_SEGMENTS_MAX {
            return ("unknown", anonymous(front, ip).unwrap_or_else(not_found));
        }
        segs[n] = seg;
        n += 1;
    }
    // `/metrics` lives on the operator's listener (`--metrics`), not here.
    let api: &[&str] = match &segs[..n] {
        ["api", "v1", rest @ ..] => rest,
        // The buyer page (`/`, `/app.js`, `/app.css`): anonymous, so per address.
        page if crate::pages::is_page(page) => {
            let r = anonymous(front, ip)
                .or_else(|| crate::pages::serve(page, &method, req.headers()))
                .unwrap_or_else(|| method_not_allowed("GET, HEAD"));
            return ("page", r);
        }
        _ => return ("unknown", anonymous(front, ip).unwrap_or_else(not_found)),
    };
    match (api, &method) {
        (["healthz"], &Method::GET) => ("healthz", ok(json!({"status": "ok"}))),
        (["info"], &Method::GET) => ("info", anonymous(front, ip).unwrap_or_else(|| crate::pages::info(front))),
        (["openapi.json"], &Method::GET) => ("openapi", anonymous(front, ip).unwrap_or_else(crate::pages::openapi)),
        (["demo", "token"], &Method::POST) => ("demo.token", demo_token(front, ip, req).await),
        (["readyz"], &Method::GET) => ("readyz", readyz(front)),
        (["activities"], &Method::GET) => match anonymous(front, ip) {
            None => ("activities.list", list_activities(front, &req).await),
            Some(r) => ("activities.list", r),
        },
        (["activities", id], &Method::GET) => match anonymous(front, ip) {
            None => ("activities.show", show_activity(front, id).await),
            Some(r) => ("activities.show", r),
        },
        (["activities", id, "buy"], &Method::POST) => ("buy", buy(front, id, req).await),
        (["activities", id, "token"], &Method::POST) => ("buy_token", buy_token(front, &req, id).await),
        (["orders"], &Method::GET) => ("orders.list", list_orders(front, &req).await),
        (["orders", id], &Method::GET) => ("orders.show", show_order(front, &req, id).await),
        (["orders", id, "cancel"], &Method::POST) => ("orders.cancel", cancel(front, &req, id).await),
        (["orders", id, "refund"], &Method::POST) => ("orders.refund", refund(front, &req, id).await),
        (["orders", id, "pay"], &Method::POST) => ("orders.pay", pay(front, &req, id).await),
        (["payments", "notify"], &Method::POST) => ("payments.notify", notify(front, req).await),
        (p, _) if allowed(p).is_some() => ("wrong_method", method_not_allowed(allowed(p).unwrap_or("GET"))),
        _ => ("unknown", anonymous(front, ip).unwrap_or_else(not_found)),
    }
}

/// The per-address token bucket of anonymous routes (activity reads,
/// unknown paths): the 429 when this address is over it, `None` to go on.
fn anonymous(front: &Front, ip: IpAddr) -> Option<HttpResponse<Body>> {
    let retry_after_s = front.ip_buckets.take(ip, crate::now_ms()).err()?;
    front.metrics.ip_rate_limited.increment(1);
    Some(rate_limited(retry_after_s))
}

/// The methods a known path accepts, for 405 answers.
fn allowed(path: &[&str]) -> Option<&'static str> {
    match path {
        ["healthz"]
        | ["readyz"]
        | ["info"]
        | ["openapi.json"]
        | ["activities"]
        | ["activities", _]
        | ["orders"]
        | ["orders", _] => Some("GET"),
        ["activities", _, "buy" | "token"]
        | ["orders", _, "cancel" | "refund" | "pay"]
        | ["payments", "notify"]
        | ["demo", "token"] => Some("POST"),
        _ => None,
    }
}

// ---- responses ----------------------------------------------------------

fn respond(status: StatusCode, body: &Value) -> HttpResponse<Body> {
    respond_bytes(status, Bytes::from(serde_json::to_vec(body).unwrap_or_default()))
}

fn respond_bytes(status: StatusCode, body: Bytes) -> HttpResponse<Body> {
    let mut r = HttpResponse::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn ok(body: Value) -> HttpResponse<Body> {
    respond(StatusCode::OK, &body)
}

fn message_of(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadRequest => "the request is malformed",
        ErrorCode::Unauthorized => "a valid Bearer token is required",
        ErrorCode::ActivityNotFound => "no such activity",
        ErrorCode::OrderNotFound => "no such order",
        ErrorCode::ProductNotFound => "no such product",
        ErrorCode::SoldOut => "sold out",
        ErrorCode::LimitReached => "you already hold as many as you may buy",
        ErrorCode::NotStarted => "the sale has not started",
        ErrorCode::Ended => "the sale has ended",
        ErrorCode::Paused => "the sale is paused",
        ErrorCode::InvalidState => "the order is not in a state that allows this",
        ErrorCode::BuyTokenRequired => "this sale needs a buy token first",
        ErrorCode::PayloadTooLarge => "the body is larger than 4 KiB",
        ErrorCode::RateLimited => "too many clicks; retry later",
        ErrorCode::Busy => "busy or the outcome is unknown; retry with the same Idempotency-Key",
        ErrorCode::AmountMismatch => "the amount does not match the order",
        ErrorCode::Internal => "internal error",
        ErrorCode::GroupUnavailable => {
            "the engines of the group that owns this sale or order are unreachable; other sales go on; retry later"
        }
        ErrorCode::IdempotencyKeyReused => {
            "this Idempotency-Key was used for a different request; use a new key for a new buy"
        }
    }
}

/// `Retry-After: 1` on the answers that say "try again shortly" (the
/// engine busy, a group unreachable).
fn retry_after_s_of(code: ErrorCode) -> Option<u32> {
    matches!(code, ErrorCode::Busy | ErrorCode::GroupUnavailable).then_some(1)
}

fn retry_later(code: ErrorCode, mut r: HttpResponse<Body>) -> HttpResponse<Body> {
    if let Some(s) = retry_after_s_of(code) {
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

pub fn error(code: ErrorCode, message: &str) -> HttpResponse<Body> {
    retry_later(code, respond_bytes(status_of(code), error_json(code, message)))
}

fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The JSON body of an engine error code, made once per code (a sold-out
/// sale answers most buyers with it); shared with the buy fast path.
pub(crate) fn error_body(code: ErrorCode) -> Bytes {
    static BODIES: std::sync::OnceLock<Vec<Bytes>> = std::sync::OnceLock::new();
    let bodies = BODIES.get_or_init(|| {
        let mut v = vec![Bytes::new(); ErrorCode::ALL.len() + 1];
        for c in ErrorCode::ALL {
            v[c as usize] = error_json(c, message_of(c));
        }
        v
    });
    match bodies.get(code as usize) {
        Some(body) if !body.is_empty() => body.clone(),
        _ => error_json(code, message_of(code)),
    }
}

/// The answer for an engine's error code.
fn engine_error(code: ErrorCode) -> HttpResponse<Body> {
    answer_response(Answer::Error(code))
}

fn rate_limited(retry_after_s: u32) -> HttpResponse<Body> {
    answer_response(Answer::RateLimited { retry_after_s })
}

fn not_found() -> HttpResponse<Body> {
    respond(
        StatusCode::NOT_FOUND,
        &json!({"error": {"code": "not_found", "message": "no such route; the API lives under /api/v1"}}),
    )
}

/// The size of a request head as sent (request line and header lines).
/// Hyper refuses heads over its buffer (64 KiB) itself, with an empty 431;
/// below that this limit answers in JSON.
fn head_bytes(req: &HttpRequest<Incoming>) -> usize {
    let line = req.method().as_str().len() + req.uri().path().len() + req.uri().query().map_or(0, |q| q.len() + 1) + 12;
    req.headers().iter().fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

fn head_too_large() -> HttpResponse<Body> {
    let mut r = respond(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        &json!({"error": {"code": "header_too_large", "message": "the request head is larger than 16 KiB"}}),
    );
    r.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// 408: the body did not arrive in time. The connection is closed after it
/// (the rest of the body is never read).
fn request_timeout() -> HttpResponse<Body> {
    let mut r = respond(
        StatusCode::REQUEST_TIMEOUT,
        &json!({"error": {"code": "request_timeout", "message": "the body did not arrive within 10 s"}}),
    );
    r.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn method_not_allowed(allow: &'static str) -> HttpResponse<Body> {
    let mut r = respond(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"error": {"code": "method_not_allowed", "message": format!("use {allow}")}}),
    );
    r.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// An order answer before it is HTTP: hyper's handlers render it with
/// `answer_response`, the buy fast path (`fast_path.rs`) writes it itself.
pub(crate) enum Answer {
    /// An order; 201 carries its `Location`.
    Order(seckill_proto::OrderView, StatusCode),
    Error(ErrorCode),
    RateLimited {
        retry_after_s: u32,
    },
    BadRequest(&'static str),
    Unexpected,
}

impl Answer {
    /// The answer to an engine's `resp` to a request whose success is `status`.
    pub(crate) fn of(resp: Response, status: StatusCode) -> Answer {
        match resp {
            // The same Idempotency-Key again: the first order, 200 not 201.
            Response::Replayed(o) => Answer::Order(o, StatusCode::OK),
            Response::Order(o) => Answer::Order(o, status),
            Response::Error(code) => Answer::Error(code),
            Response::RateLimited { retry_after_s } => Answer::RateLimited { retry_after_s },
            _ => Answer::Unexpected,
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        let code = match self {
            Answer::Order(_, status) => return *status,
            Answer::Error(code) => *code,
            Answer::RateLimited { .. } => ErrorCode::RateLimited,
            Answer::BadRequest(_) => ErrorCode::BadRequest,
            Answer::Unexpected => ErrorCode::Internal,
        };
        status_of(code)
    }

    /// Where a created order lives: only a 201 carries `Location`.
    pub(crate) fn location(&self) -> Option<Location> {
        match self {
            Answer::Order(o, StatusCode::CREATED) => Some(Location(o.order_id)),
            _ => None,
        }
    }

    /// `Retry-After` seconds, if the answer says "try again shortly".
    pub(crate) fn retry_after_s(&self) -> Option<u32> {
        match self {
            Answer::RateLimited { retry_after_s } => Some(*retry_after_s),
            Answer::Error(code) => retry_after_s_of(*code),
            _ => None,
        }
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> Bytes {
        match self {
            Answer::Order(o, _) => Bytes::from(json::order_bytes(o)),
            Answer::Error(code) => error_body(*code),
            Answer::RateLimited { .. } => error_body(ErrorCode::RateLimited),
            Answer::BadRequest(msg) => error_json(ErrorCode::BadRequest, msg),
            Answer::Unexpected => error_json(ErrorCode::Internal, "unexpected engine answer"),
        }
    }

    /// The JSON body, appended to `out` (an order without a `Vec` of its own).
    pub(crate) fn write_body(&self, out: &mut Vec<u8>) {
        match self {
            Answer::Order(o, _) => json::write_order(o, out),
            other => out.extend_from_slice(&other.body()),
        }
    }
}

/// The `Location` of an order: `/api/v1/orders/{id}`.
pub(crate) struct Location(OrderId);

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/api/v1/orders/{}", self.0)
    }
}

fn error_json(code: ErrorCode, message: &str) -> Bytes {
    Bytes::from(serde_json::to_vec(&json!({"error": json::error(code, message)})).unwrap_or_default())
}

fn answer_response(a: Answer) -> HttpResponse<Body> {
    let mut r = respond_bytes(a.status(), a.body());
    if let Some(location) = a.location() {
        if let Ok(v) = HeaderValue::from_str(&location.to_string()) {
            r.headers_mut().insert(LOCATION, v);
        }
    }
    if let Some(s) = a.retry_after_s() {
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

fn order_response(resp: Response, status: StatusCode) -> HttpResponse<Body> {
    answer_response(Answer::of(resp, status))
}

// ---- inputs -------------------------------------------------------------

fn user(front: &Front, req: &HttpRequest<Incoming>) -> Result<u64, HttpResponse<Body>> {
    front
        .auth
        .user_of(req.headers().get(AUTHORIZATION).map(|v| v.as_bytes()))
        .ok_or_else(|| engine_error(ErrorCode::Unauthorized))
}

fn activity_id(s: &str) -> Result<u64, HttpResponse<Body>> {
    parse_activity_id(s).ok_or_else(|| engine_error(ErrorCode::ActivityNotFound))
}

/// An activity id in a path: a positive integer.
fn parse_activity_id(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().filter(|id| *id > 0)
}

fn order_id(s: &str) -> Result<OrderId, HttpResponse<Body>> {
    s.parse::<OrderId>().map_err(|_| engine_error(ErrorCode::OrderNotFound))
}

/// `offset` and `limit` from the query string (limit default 20, at most 100).
pub fn page(query: Option<&str>) -> Result<(u32, u32), HttpResponse<Body>> {
    let (mut offset, mut limit) = (0u32, 20u32);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let n = || {
            v.parse::<u32>().map_err(|_| error(ErrorCode::BadRequest, &format!("{k} must be a non-negative integer")))
        };
        match k {
            "offset" => offset = n()?,
            "limit" => limit = n()?.min(PAGE_LIMIT_MAX),
            _ => {}
        }
    }
    Ok((offset, limit))
}

/// Reads at most `BODY_BYTES_MAX` bytes; a declared or actual larger body is 413.
async fn body(req: HttpRequest<Incoming>) -> Result<Bytes, HttpResponse<Body>> {
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_BYTES_MAX as u64) {
        return Err(engine_error(ErrorCode::PayloadTooLarge));
    }
    // A body that came with its head is read without a timer; only one
    // still on its way gets a deadline (slow bodies).
    let mut collect = std::pin::pin!(Limited::new(req.into_body(), BODY_BYTES_MAX).collect());
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(collect.as_mut().poll(cx))).await;
    let read = match first {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => match tokio::time::timeout(crate::BODY_READ_TIMEOUT, collect).await {
            Ok(r) => r,
            Err(_) => {
                // Rare (a slow client); the macro's lookup is fine here.
                metrics::counter!("seckill_http_body_timeouts_total").increment(1);
                return Err(request_timeout());
            }
        },
    };
    match read {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(engine_error(ErrorCode::PayloadTooLarge)),
        Err(_) => Err(error(ErrorCode::BadRequest, "the body could not be read")),
    }
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BuyBody {
    #[serde(default)]
    pub quantity: Option<i64>,
    #[serde(default)]
    pub buy_token: Option<String>,
}

/// Parses a buy body: empty means quantity 1. Only `quantity` and
/// `buy_token` are known: `{"qty":3}` is refused, not read as a buy of 1.
/// Never panics.
pub fn parse_buy(bytes: &[u8]) -> Result<(u32, Option<String>), &'static str> {
    if std::str::from_utf8(bytes).is_err() {
        return Err("the body must be UTF-8 JSON");
    }
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Ok((1, None)),
        Some(b'{') => {}
        // serde would also take `[2]` as a struct; only an object is a body.
        Some(_) => return Err("the body must be a JSON object like {\"quantity\":1}"),
    }
    let b: BuyBody = serde_json::from_slice(bytes).map_err(|_| {
        "the body must be a JSON object with only \"quantity\" (and \"buy_token\"), like {\"quantity\":1}"
    })?;
    let q = b.quantity.unwrap_or(1);
    if q < 1 {
        return Err("quantity must be at least 1");
    }
    let q = u32::try_from(q).map_err(|_| "quantity is above the per-user limit")?;
    Ok((q, b.buy_token))
}

// ---- handlers -------------------------------------------------------------

fn readyz(front: &Front) -> HttpResponse<Body> {
    if let crate::engine_client::EngineLink::Groups(groups) = &front.engine {
        // Ready while any group is: a down group's sales answer
        // `group_unavailable`, the others' go on (every front sees the same).
        if groups.is_up() {
            return ok(json!({"status": "ready", "groups_down": groups.down()}));
        }
    }
    if front.engine.is_up() {
        ok(json!({"status": "ready"}))
    } else {
        error(ErrorCode::Busy, "the engine is unreachable or recovering")
    }
}

async fn list_activities(front: &Front, req: &HttpRequest<Incoming>) -> HttpResponse<Body> {
    let (offset, limit) = match page(req.uri().query()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let now = crate::now_ms();
    let resp =
        activity_read(front, ActivityKey::Page { offset, limit }, Request::ListActivities { offset, limit }).await;
    match &*resp {
        Response::Activities { items, total } => {
            // `now`: the server's clock, for countdowns (docs/API.md).
            ok(json!({"items": items.iter().map(|a| json::activity(a, now)).collect::<Vec<_>>(), "total": total,
                      "now": json::rfc3339(now)}))
        }
        Response::Error(code) => engine_error(*code),
        _ => error(ErrorCode::Internal, "unexpected engine answer"),
    }
}

/// An activity read from the cache, or from the engine when the cache has
/// none (at most `ENGINE_READS_IN_FLIGHT_MAX` at once; more are `busy`).
/// Answers and "no such activity" are cached for `ACTIVITY_CACHE_TTL_MS`;
/// `busy` is not.
async fn activity_read(front: &Front, key: ActivityKey, req: Request) -> Arc<Response> {
    let now = crate::now_ms();
    if let Some(hit) = front.activity_cache.get(key, now) {
        front.metrics.activity_reads_cache.increment(1);
        return hit;
    }
    let Ok(_permit) = front.engine_reads.try_acquire() else {
        front.metrics.activity_reads_shed.increment(1);
        return Arc::new(Response::Error(ErrorCode::Busy));
    };
    front.metrics.activity_reads_engine.increment(1);
    let resp = Arc::new(front.engine.call(req).await);
    if matches!(
        *resp,
        Response::Activity(_) | Response::Activities { .. } | Response::Error(ErrorCode::ActivityNotFound)
    ) {
        front.activity_cache.put(key, resp.clone(), now);
    }
    resp
}

async fn show_activity(front: &Front, id: &str) -> HttpResponse<Body> {
    let activity_id = match activity_id(id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let resp = activity_read(front, ActivityKey::One(activity_id), Request::GetActivity { activity_id }).await;
    match &*resp {
        Response::Activity(a) => ok(json::activity(a, crate::now_ms())),
        Response::Error(code) => engine_error(*code),
        _ => error(ErrorCode::Internal, "unexpected engine answer"),
    }
}

/// A buy, counted per activity for the operator's dashboard.
async fn buy(front: &Front, id: &str, req: HttpRequest<Incoming>) -> HttpResponse<Body> {
    let started = Instant::now();
    // A body that could not be read (413, 408) is a ready response.
    let resp = buy_answer(front, id, req).await.map_or_else(|r| r, answer_response);
    if let Ok(activity_id) = id.parse::<u64>() {
        front.buy_answers.record(activity_id, resp.status().as_u16(), started.elapsed());
    }
    resp
}

async fn buy_answer(front: &Front, id: &str, req: HttpRequest<Incoming>) -> Result<Answer, HttpResponse<Body>> {
    let head = match buy_head(
        front,
        id,
        req.headers().get(AUTHORIZATION).map(|v| v.as_bytes()),
        req.headers().get("idempotency-key").map(|v| v.as_bytes()),
    ) {
        Ok(h) => h,
        Err(a) => return Ok(a),
    };
    let bytes = body(req).await?;
    Ok(match buy_request(front, head, &bytes, crate::now_ms()) {
        Ok((request, pending)) => buy_finish(front, pending, front.engine.call(request).await),
        Err(a) => a,
    })
}

/// What a buy's head says: who buys, in which sale, under which key.
pub(crate) struct BuyHead {
    user_id: u64,
    activity_id: u64,
    idempotency_key: u64,
}

/// What `buy_finish` needs of the request the engine answered.
pub(crate) struct PendingBuy {
    activity_id: u64,
    quantity: u32,
    own_key: bool,
    now_ms: u64,
}

/// A buy's checks before its body is read: the token, the activity id and
/// the Idempotency-Key (so a 401 never waits for a body).
pub(crate) fn buy_head(
    front: &Front,
    id: &str,
    authorization: Option<&[u8]>,
    idempotency_key: Option<&[u8]>,
) -> Result<BuyHead, Answer> {
    let user_id = front.auth.user_of(authorization).ok_or(Answer::Error(ErrorCode::Unauthorized))?;
    let activity_id = parse_activity_id(id).ok_or(Answer::Error(ErrorCode::ActivityNotFound))?;
    let idempotency_key = match idempotency_key {
        None => 0,
        // Scoped to the activity: the same key on another sale is another buy.
        Some(k) if !k.is_empty() && k.len() <= IDEMPOTENCY_KEY_BYTES_MAX => {
            front.keyed_hash(b"idempotency-key", &activity_id.to_le_bytes(), k)
        }
        Some(_) => return Err(Answer::BadRequest("Idempotency-Key must be 1..=255 bytes")),
    };
    Ok(BuyHead { user_id, activity_id, idempotency_key })
}

/// The engine request of a buy whose body is `bytes`, or the answer that
/// needs no engine (a bad body, a sale known to be sold out).
pub(crate) fn buy_request(
    front: &Front,
    head: BuyHead,
    bytes: &[u8],
    now_ms: u64,
) -> Result<(Request, PendingBuy), Answer> {
    let BuyHead { user_id, activity_id, idempotency_key } = head;
    let (quantity, buy_token) = parse_buy(bytes).map_err(Answer::BadRequest)?;
    let buy_token_ok =
        buy_token.is_some_and(|t| crate::buy_token::verify(&front.token_secret, &t, user_id, activity_id, now_ms));
    // A retry with an Idempotency-Key must reach the engine: its order may
    // have taken the last unit.
    if idempotency_key == 0 && front.sold_out.is_sold_out(activity_id, now_ms) {
        front.metrics.sold_out_short_circuit.increment(1);
        return Err(Answer::Error(ErrorCode::SoldOut));
    }
    // A front that may send a buy twice (to an old and a new leader of a
    // replica group) keys every buy the buyer did not key, so the second
    // attempt answers the order the first made (docs/REPLICATION.md).
    let own_key = idempotency_key == 0 && front.engine.retries();
    let idempotency_key = if own_key { rand::random::<u64>().max(1) } else { idempotency_key };
    let request = Request::Buy { user_id, activity_id, quantity, idempotency_key, buy_token_ok };
    Ok((request, PendingBuy { activity_id, quantity, own_key, now_ms }))
}

/// The buyer's answer to the engine's `resp`.
pub(crate) fn buy_finish(front: &Front, pending: PendingBuy, resp: Response) -> Answer {
    if resp == Response::Error(ErrorCode::SoldOut) {
        front.sold_out.mark(pending.activity_id, pending.now_ms);
    }
    match resp {
        // The front's own key replayed: this buyer's one buy, retried by
        // the front, made this order; to the buyer it is new (201).
        Response::Replayed(o) if pending.own_key => {
            front.metrics.own_key_replayed.increment(1);
            Answer::Order(o, StatusCode::CREATED)
        }
        // The key's first buy was for another quantity: not a retry of it.
        Response::Replayed(o) if o.quantity != pending.quantity => Answer::Error(ErrorCode::IdempotencyKeyReused),
        resp => Answer::of(resp, StatusCode::CREATED),
    }
}

async fn buy_token(front: &Front, req: &HttpRequest<Incoming>, id: &str) -> HttpResponse<Body> {
    let user_id = match user(front, req) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let activity_id = match activity_id(id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match front.engine.call(Request::IssueBuyToken { user_id, activity_id }).await {
        Response::Done => {
            let expires_ms = crate::now_ms() + crate::buy_token::TTL_MS;
            let token = crate::buy_token::issue(&front.token_secret, user_id, activity_id, expires_ms);
            ok(json!({"buy_token": token, "expires_at": json::rfc3339(expires_ms)}))
        }
        Response::Error(ErrorCode::BadRequest) => {
            error(ErrorCode::BadRequest, "this activity does not use buy tokens; buy directly")
        }
        Response::Error(code) => engine_error(code),
        Response::RateLimited { retry_after_s } => rate_limited(retry_after_s),
        _ => error(ErrorCode::Internal, "unexpected engine answer"),
    }
}

async fn list_orders(front: &Front, req: &HttpRequest<Incoming>) -> HttpResponse<Body> {
    let user_id = match user(front, req) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let (offset, limit) = match page(req.uri().query()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let window_max = crate::groups::ORDERS_WINDOW_MAX;
    if matches!(front.engine, crate::engine_client::EngineLink::Groups(_)) && offset.saturating_add(limit) > window_max
    {
        return error(
            ErrorCode::BadRequest,
            &format!("offset + limit must be at most {window_max} on a front over several groups"),
        );
    }
    match front.engine.call(Request::ListOrders { user_id, offset, limit }).await {
        Response::Orders { items, total } => {
            ok(json!({"items": items.iter().map(json::order).collect::<Vec<_>>(), "total": total}))
        }
        Response::Error(code) => engine_error(code),
        _ => error(ErrorCode::Internal, "unexpected engine answer"),
    }
}

async fn show_order(front: &Front, req: &HttpRequest<Incoming>, id: &str) -> HttpResponse<Body> {
    let (user_id, order_id) = match user(front, req).and_then(|u| order_id(id).map(|o| (u, o))) {
        Ok(x) => x,
        Err(r) => return r,
    };
    order_response(front.engine.call(Request::GetOrder { user_id: Some(user_id), order_id }).await, StatusCode::OK)
}

async fn cancel(front: &Front, req: &HttpRequest<Incoming>, id: &str) -> HttpResponse<Body> {
    let (user_id, order_id) = match user(front, req).and_then(|u| order_id(id).map(|o| (u, o))) {
        Ok(x) => x,
        Err(r) => return r,
    };
    order_response(front.engine.call(Request::Cancel { user_id, order_id }).await, StatusCode::OK)
}

async fn refund(front: &Front, req: &HttpRequest<Incoming>, id: &str) -> HttpResponse<Body> {
    let (user_id, order_id) = match user(front, req).and_then(|u| order_id(id).map(|o| (u, o))) {
        Ok(x) => x,
        Err(r) => return r,
    };
    order_response(front.engine.call(Request::Refund { user_id, order_id }).await, StatusCode::OK)
}

async fn pay(front: &Front, req: &HttpRequest<Incoming>, id: &str) -> HttpResponse<Body> {
    if !front.payment_sandbox {
        return respond(
            StatusCode::NOT_FOUND,
            &json!({"error": {"code": "not_found", "message": "sandbox payment is off; start with --payment sandbox"}}),
        );
    }
    let (user_id, order_id) = match user(front, req).and_then(|u| order_id(id).map(|o| (u, o))) {
        Ok(x) => x,
        Err(r) => return r,
    };
    // Only the owner may pay: look the order up as that user first.
    let amount_cents = match front.engine.call(Request::GetOrder { user_id: Some(user_id), order_id }).await {
        Response::Order(o) => o.amount_cents,
        other => return order_response(other, StatusCode::OK),
    };
    let txn = front.keyed_hash(b"payment-txn", &[], b"sandbox");
    order_response(front.engine.call(Request::Pay { order_id, amount_cents, txn }).await, StatusCode::OK)
}

/// `POST /api/v1/demo/token`: only in sandbox mode (404 otherwise, before
/// the body is read), rate limited per address (`pages::DEMO_TOKENS_PER_S`).
async fn demo_token(front: &Front, ip: IpAddr, req: HttpRequest<Incoming>) -> HttpResponse<Body> {
    if !front.payment_sandbox {
        return crate::pages::demo_off();
    }
    let bytes = match body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    crate::pages::demo_token(front, ip, &bytes).unwrap_or_else(|r| r)
}

async fn notify(front: &Front, req: HttpRequest<Incoming>) -> HttpResponse<Body> {
    let signature = req.headers().get("x-seckill-signature").map(|v| v.as_bytes().to_vec());
    let bytes = match body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(e) = crate::payment::verify(&front.payment_secret, &bytes, signature.as_deref(), crate::payment::now_s())
    {
        return error(ErrorCode::Unauthorized, e.message());
    }
    let n = match crate::payment::parse_notify(&bytes) {
        Ok(n) => n,
        Err(msg) => return error(ErrorCode::BadRequest, msg),
    };
    let txn = front.keyed_hash(b"payment-txn", &[], n.provider_txn_id.as_bytes());
    let resp = front.engine.call(Request::Pay { order_id: n.order_id, amount_cents: n.amount_cents, txn }).await;
    if matches!(resp, Response::Error(ErrorCode::InvalidState | ErrorCode::AmountMismatch)) {
        tracing::warn!(order_id = %n.order_id, provider_txn_id = %n.provider_txn_id, ?resp, "payment notify refused; reconcile with the provider");
        front.metrics.notify_refused.increment(1);
    }
    order_response(resp, StatusCode::OK)
}

/// Wraps a handler's panic-free path for tests that want the route table.
pub fn route_methods(path: &str) -> Option<&'static str> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(3).collect();
    allowed(&segs)
}
