//! The buy fast path: a hand-written HTTP/1.1 loop that serves a
//! connection for as long as its requests are plain buys, and hands it to
//! hyper (with the bytes it has read) at the first request that is not.
//!
//! Why: a buy through hyper cost the front ~9 µs of user-space CPU against
//! ~1.5 µs for a hyper hello-world; most of the difference was the
//! per-request `Request`/`HeaderMap`/body/`Response` machinery, allocations
//! and clock reads around a handler that needs three headers and a
//! 15-byte body (docs/PERFORMANCE.md, "A hand-written buy path").
//!
//! What it serves, and everything else goes to hyper untouched: `POST
//! /api/v1/activities/{id}/buy HTTP/1.1` whose head and body are both in
//! the buffer, with at most `HEADERS_MAX` headers, no `Transfer-Encoding`,
//! no `Expect`, one `Content-Length` of at most `BODY_BYTES_MAX`, and a
//! `Connection` header (if any) of `keep-alive` or `close`. The decisions
//! are hyper's handler's own (`http::buy_head`, `buy_request`,
//! `buy_finish`); only the bytes on the wire are written here, in the
//! shape hyper writes them.

use crate::http::{self, Answer, BODY_BYTES_MAX};
use crate::Front;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The read buffer of a connection on the fast path; a request that does
/// not fit goes to hyper (which answers large heads and bodies).
pub const READ_BYTES: usize = 8 * 1024;
/// Headers a fast-path request may have; more go to hyper.
const HEADERS_MAX: usize = 24;
const BUY_PREFIX: &[u8] = b"/api/v1/activities/";

/// What the fast path leaves for hyper.
pub enum Handoff {
    /// The connection ended (closed by the client, an I/O error, or
    /// `Connection: close` answered).
    Closed,
    /// A request the fast path does not serve starts at the first byte of
    /// these, which hyper reads before the socket.
    Hyper(Vec<u8>),
}

/// A connection's deadline, checked by a per-connection watchdog
/// (`lib.rs`): the time in ms by which the current phase must end, and
/// bit 0 set while a request is being served (a cut request is counted).
#[derive(Default)]
pub struct Deadline(AtomicU64);

impl Deadline {
    /// Waiting for a request head: `HEADER_READ_TIMEOUT` from `now_ms`.
    pub fn head(&self, now_ms: u64) {
        let at = now_ms + crate::HEADER_READ_TIMEOUT.as_millis() as u64;
        self.0.store(at << 1, Ordering::Relaxed);
    }

    /// Serving a request: `REQUEST_TIMEOUT_MS` from `now_ms`.
    pub fn request(&self, now_ms: u64) {
        self.0.store(((now_ms + crate::REQUEST_TIMEOUT_MS) << 1) | 1, Ordering::Relaxed);
    }

    /// `Some(in_request)` once `now_ms` is past the deadline.
    pub fn passed(&self, now_ms: u64) -> Option<bool> {
        let v = self.0.load(Ordering::Relaxed);
        (now_ms > v >> 1).then_some(v & 1 == 1)
    }
}

/// One parsed fast-path buy; the slices borrow the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Buy<'a> {
    pub activity: &'a str,
    pub authorization: Option<&'a [u8]>,
    pub idempotency_key: Option<&'a [u8]>,
    pub body: &'a [u8],
    /// Head and body bytes.
    pub len: usize,
    pub close: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    Buy(Buy<'a>),
    /// More bytes may make it a buy.
    Partial,
    /// Not one the fast path serves (or not yet whole when it would have
    /// to wait for its body): hyper's.
    Other,
}

/// Classifies the request at the start of `buf` (public for the fuzz tests).
pub fn next(buf: &[u8]) -> Next<'_> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            // Hand over as soon as the request line shows it is not a buy
            // (hyper's head timeout then applies to a slow head).
            if req.method.is_some_and(|m| m != "POST") || req.path.is_some_and(|p| activity_of(p).is_none()) {
                return Next::Other;
            }
            return Next::Partial;
        }
        Err(_) => return Next::Other,
    };
    if req.method != Some("POST") || req.version != Some(1) {
        return Next::Other;
    }
    let Some(activity) = req.path.and_then(activity_of) else { return Next::Other };
    let (mut authorization, mut idempotency_key, mut content_length, mut close) = (None, None, None, false);
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"authorization") {
            authorization = authorization.or(Some(h.value));
        } else if name.eq_ignore_ascii_case(b"idempotency-key") {
            idempotency_key = idempotency_key.or(Some(h.value));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if content_length.is_some() {
                return Next::Other;
            }
            match parse_length(h.value) {
                Some(n) if n <= BODY_BYTES_MAX => content_length = Some(n),
                _ => return Next::Other,
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            if h.value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if !h.value.eq_ignore_ascii_case(b"keep-alive") {
                return Next::Other;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") || name.eq_ignore_ascii_case(b"expect") {
            return Next::Other;
        }
    }
    let len = head_len + content_length.unwrap_or(0);
    let Some(body) = buf.get(head_len..len) else {
        // The body is still on its way: hyper reads it, under its deadline.
        return Next::Other;
    };
    Next::Buy(Buy { activity, authorization, idempotency_key, body, len, close })
}

/// `{id}` of `/api/v1/activities/{id}/buy`.
fn activity_of(path: &str) -> Option<&str> {
    let rest = path.as_bytes().strip_prefix(BUY_PREFIX)?;
    let id = rest.strip_suffix(b"/buy")?;
    if id.is_empty() || id.iter().any(|b| matches!(b, b'/' | b'?' | b'#')) {
        return None;
    }
    std::str::from_utf8(id).ok()
}

fn parse_length(v: &[u8]) -> Option<usize> {
    if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0usize, |n, d| n * 10 + (d - b'0') as usize))
}

/// Serves buys on `stream` until it closes or a request is not a buy.
pub async fn serve(front: &Front, stream: &mut TcpStream, deadline: &Deadline) -> Handoff {
    let mut buf = vec![0u8; READ_BYTES];
    let mut have = 0;
    // The answer being written and its body: reused, so a buy allocates
    // nothing here.
    let (mut out, mut body) = (Vec::with_capacity(1024), Vec::with_capacity(512));
    loop {
        let mut start = 0;
        loop {
            let buy = match next(&buf[start..have]) {
                Next::Buy(b) => b,
                Next::Partial => break,
                Next::Other => return Handoff::Hyper(buf[start..have].to_vec()),
            };
            let started = Instant::now();
            let now_ms = crate::now_ms();
            deadline.request(now_ms);
            let answer = answer(front, &buy, now_ms).await;
            let status = answer.status();
            out.clear();
            write_answer(&mut out, &mut body, &answer, buy.close);
            // Counted before it is sent, as on the hyper path: a client that
            // has its answer finds it in `stats`.
            let took = started.elapsed();
            front.metrics.record("buy", status.as_u16(), took);
            if let Ok(activity_id) = buy.activity.parse::<u64>() {
                front.buy_answers.record(activity_id, status.as_u16(), took);
            }
            // One write per answer, as hyper does: a pipelined buy's answer
            // does not wait for the next one's.
            if stream.write_all(&out).await.is_err() {
                return Handoff::Closed;
            }
            if buy.close {
                return Handoff::Closed;
            }
            deadline.head(now_ms);
            start += buy.len;
            debug_assert!(start <= have, "a buy ends within what was read");
        }
        buf.copy_within(start..have, 0);
        have -= start;
        if have == buf.len() {
            // A head larger than the fast path's buffer: hyper answers it.
            return Handoff::Hyper(buf[..have].to_vec());
        }
        match stream.read(&mut buf[have..]).await {
            Ok(0) | Err(_) => return Handoff::Closed,
            Ok(n) => have += n,
        }
    }
}

async fn answer(front: &Front, buy: &Buy<'_>, now_ms: u64) -> Answer {
    let head = match http::buy_head(front, buy.activity, buy.authorization, buy.idempotency_key) {
        Ok(h) => h,
        Err(a) => return a,
    };
    match http::buy_request(front, head, buy.body, now_ms) {
        Ok((request, pending)) => http::buy_finish(front, pending, front.engine.call(request).await),
        Err(a) => a,
    }
}

/// Appends the answer as hyper would write it: status line, the handler's
/// headers, `content-length`, `date`. `body` is scratch space.
fn write_answer(out: &mut Vec<u8>, body: &mut Vec<u8>, answer: &Answer, close: bool) {
    use std::io::Write;
    body.clear();
    answer.write_body(body);
    let status = answer.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\n");
    // Writing into a Vec cannot fail.
    if let Some(location) = answer.location() {
        let _ = write!(out, "location: {location}\r\n");
    }
    if let Some(s) = answer.retry_after_s() {
        let _ = write!(out, "retry-after: {s}\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    let _ = write!(out, "content-length: {}\r\ndate: ", body.len());
    http_date(out);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// The `Date` header's value, formatted once a second per thread.
fn http_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    let now = std::time::SystemTime::now();
    let s = now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    DATE.with_borrow_mut(|(at, text)| {
        if *at != s || text.is_empty() {
            *at = s;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(req: &[u8]) -> &'static str {
        match next(req) {
            Next::Buy(_) => "buy",
            Next::Partial => "partial",
            Next::Other => "other",
        }
    }

    #[test]
    fn only_whole_plain_buys_stay_on_the_fast_path() {
        let buy = b"POST /api/v1/activities/7/buy HTTP/1.1\r\nAuthorization: Bearer x\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(kind(buy), "buy");
        assert_eq!(kind(&buy[..buy.len() - 1]), "other", "a body still on its way is hyper's");
        assert_eq!(kind(&buy[..30]), "partial");
        assert_eq!(kind(b"POST /api/v1/activities/7/buy HTTP/1.1\r\n\r\n"), "buy");
        for other in [
            &b"GET /api/v1/healthz HTTP/1.1\r\n\r\n"[..],
            b"GET /api/v1/act",
            b"POST /api/v1/orders/1/cancel HTTP/1.1\r\n\r\n",
            b"POST /api/v1/activities/7/buy HTTP/1.0\r\n\r\n",
            b"POST /api/v1/activities/7/buy?x=1 HTTP/1.1\r\n\r\n",
            b"POST /api/v1/activities/7/buy/ HTTP/1.1\r\n\r\n",
            b"POST /api/v1/activities//buy HTTP/1.1\r\n\r\n",
            b"POST /api/v1/activities/7/buy HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /api/v1/activities/7/buy HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            b"POST /api/v1/activities/7/buy HTTP/1.1\r\nContent-Length: 5000\r\n\r\n",
            b"POST /api/v1/activities/7/buy HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n{",
            b"POST /api/v1/activities/7/buy HTTP/1.1\r\nContent-Length: +1\r\n\r\n{",
            b"POST /api/v1/activities/7/buy HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
            b"\x00\x01 garbage\r\n\r\n",
        ] {
            assert_eq!(kind(other), "other", "{}", String::from_utf8_lossy(other));
        }
        // Two of a header: the first counts, as `HeaderMap::get` has it.
        let two = b"POST /api/v1/activities/7/buy HTTP/1.1\r\nAuthorization: a\r\nauthorization: b\r\n\r\n";
        assert!(matches!(next(two), Next::Buy(Buy { authorization: Some(b"a"), .. })));
        let close = b"POST /api/v1/activities/7/buy HTTP/1.1\r\nConnection: Close\r\n\r\n";
        assert!(matches!(next(close), Next::Buy(Buy { close: true, .. })));
    }

    #[test]
    fn the_answer_is_a_whole_http_response() {
        let mut out = Vec::new();
        write_answer(&mut out, &mut Vec::new(), &Answer::Error(seckill_proto::ErrorCode::Busy), true);
        let text = String::from_utf8(out).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{head}");
        assert!(head.contains("\r\nretry-after: 1\r\n") && head.contains("\r\nconnection: close\r\n"), "{head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())), "{head}");
        assert!(body.contains("\"busy\""), "{body}");
    }
}
