//! The buyer page and the API's own description, served by the buyer
//! listener beside the API, plus the two small JSON routes the page needs:
//!
//! * `GET /`, `/app.js`, `/app.css`: plain HTML, JS and CSS compiled into
//!   the binary (`front/web/`), no build step and nothing from another
//!   origin. Every answer carries a strict Content-Security-Policy (scripts
//!   and styles from this origin only, no inline code), an `ETag`, and
//!   `Cache-Control: no-cache` (revalidated, then answered 304).
//! * `GET /api/v1/openapi.json`: `docs/openapi.yaml` as JSON
//!   (`front/web/openapi.json`, kept in sync by a test).
//! * `GET /api/v1/info`: the server's clock (`now`, so a page counts down by
//!   the server's time, not the visitor's) and its payment mode.
//! * `POST /api/v1/demo/token`: a bearer token for any user id, **only**
//!   with `--payment sandbox` (404 otherwise), a few per second per client
//!   address (docs/SECURITY.md).
//!
//! None of this is on the buy path: `route` reaches these only for paths
//! the API table does not match first, or for these exact API paths.

#![allow(clippy::result_large_err)]

use crate::http::{error, Body};
use crate::Front;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use hyper::{Method, Response as HttpResponse, StatusCode};
use seckill_proto::{json, ErrorCode};
use serde::Deserialize;
use serde_json::json;
use std::net::IpAddr;
use std::sync::OnceLock;

/// The page's policy: everything from this origin only, no inline script or
/// style, no frames, no plugins, forms post nowhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Demo tokens minted per second per client address (bursts of twice that).
pub const DEMO_TOKENS_PER_S: u32 = 2;
/// How long a demo token is valid.
pub const DEMO_TOKEN_TTL_S: u64 = 3_600;
/// Largest user id a demo token is minted for: the largest integer a
/// JavaScript number holds exactly, so the page never rounds an id.
pub const DEMO_USER_ID_MAX: u64 = (1 << 53) - 1;

/// One embedded file and its validator.
struct Asset {
    content_type: &'static str,
    body: &'static str,
}

const INDEX: Asset = Asset { content_type: "text/html; charset=utf-8", body: include_str!("../web/index.html") };
const APP_JS: Asset = Asset { content_type: "text/javascript; charset=utf-8", body: include_str!("../web/app.js") };
const APP_CSS: Asset = Asset { content_type: "text/css; charset=utf-8", body: include_str!("../web/app.css") };
/// `docs/openapi.yaml` as JSON.
pub const OPENAPI_JSON: &str = include_str!("../web/openapi.json");

/// The page's file for a path outside `/api/v1`, if it is one.
fn asset(path: &[&str]) -> Option<(usize, &'static Asset)> {
    match path {
        [] | ["index.html"] => Some((0, &INDEX)),
        ["app.js"] => Some((1, &APP_JS)),
        ["app.css"] => Some((2, &APP_CSS)),
        _ => None,
    }
}

/// Whether `path` (segments outside `/api/v1`) is one of the page's files.
pub fn is_page(path: &[&str]) -> bool {
    asset(path).is_some()
}

/// A strong validator per file: the first 16 hex digits of its SHA-256,
/// computed once.
fn etag(i: usize) -> HeaderValue {
    static TAGS: OnceLock<[HeaderValue; 3]> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        [INDEX.body, APP_JS.body, APP_CSS.body].map(|body| {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(body.as_bytes());
            HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..8])))
                .unwrap_or(HeaderValue::from_static("\"0\""))
        })
    });
    tags[i].clone()
}

/// The headers every page answer has (the 304 too).
fn page_headers(r: &mut HttpResponse<Body>) {
    let h = r.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    // Always revalidated: a new binary's page is seen at once, an unchanged one costs a 304.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

/// `GET` (or `HEAD`) of one of the page's files; `None` for other paths.
pub fn serve(path: &[&str], method: &Method, headers: &HeaderMap) -> Option<HttpResponse<Body>> {
    let (i, a) = asset(path)?;
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let tag = etag(i);
    let fresh = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == tag.to_str().unwrap_or(""));
    let mut r = if fresh {
        let mut r = HttpResponse::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = HttpResponse::new(Full::new(Bytes::from_static(a.body.as_bytes())));
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
        r
    };
    r.headers_mut().insert(ETAG, tag);
    page_headers(&mut r);
    Some(r)
}

/// `GET /api/v1/openapi.json`.
pub fn openapi() -> HttpResponse<Body> {
    let mut r = HttpResponse::new(Full::new(Bytes::from_static(OPENAPI_JSON.as_bytes())));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /api/v1/info`: the server's clock and what this front offers.
pub fn info(front: &Front) -> HttpResponse<Body> {
    let payment = if front.payment_sandbox { "sandbox" } else { "notify" };
    let body = json!({
        "now": json::rfc3339(crate::now_ms()),
        "payment": payment,
        "demo_login": front.payment_sandbox,
        "version": env!("CARGO_PKG_VERSION"),
    });
    let mut r = HttpResponse::new(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap_or_default())));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoTokenBody {
    user_id: u64,
}

/// Parses `{"user_id":N}` with 1 ≤ N ≤ `DEMO_USER_ID_MAX`.
pub fn parse_demo_token(bytes: &[u8]) -> Result<u64, &'static str> {
    const SHAPE: &str = "the body must be a JSON object like {\"user_id\":42}";
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(SHAPE);
    }
    let b: DemoTokenBody = serde_json::from_slice(bytes).map_err(|_| SHAPE)?;
    if b.user_id == 0 || b.user_id > DEMO_USER_ID_MAX {
        return Err("user_id must be between 1 and 9007199254740991");
    }
    Ok(b.user_id)
}

/// The refusal of `POST /api/v1/demo/token` when the front is not in
/// sandbox mode: the same 404 as a route that does not exist.
pub fn demo_off() -> HttpResponse<Body> {
    let body =
        br#"{"error":{"code":"not_found","message":"demo login is off; it exists only with --payment sandbox"}}"#;
    let mut r = HttpResponse::new(Full::new(Bytes::from_static(body)));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Mints the demo token once the caller has checked the mode and read the body.
pub fn demo_token(front: &Front, ip: IpAddr, bytes: &[u8]) -> Result<HttpResponse<Body>, HttpResponse<Body>> {
    if let Err(retry_after_s) = front.demo_buckets.take(ip, crate::now_ms()) {
        metrics::counter!("seckill_front_demo_tokens_refused_total").increment(1);
        let mut r = error(ErrorCode::RateLimited, "too many demo logins from your address; retry later");
        r.headers_mut().insert(hyper::header::RETRY_AFTER, HeaderValue::from(retry_after_s));
        return Err(r);
    }
    let user_id = parse_demo_token(bytes).map_err(|m| error(ErrorCode::BadRequest, m))?;
    metrics::counter!("seckill_front_demo_tokens_total").increment(1);
    let token = front.auth.issue(user_id, DEMO_TOKEN_TTL_S);
    let expires_ms = crate::now_ms() + DEMO_TOKEN_TTL_S * 1000;
    let body = json!({"token": token, "user_id": user_id, "expires_at": json::rfc3339(expires_ms)});
    let mut r = HttpResponse::new(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap_or_default())));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_token_bodies() {
        assert_eq!(parse_demo_token(br#"{"user_id":42}"#), Ok(42));
        assert_eq!(parse_demo_token(b" {\"user_id\": 9007199254740991}"), Ok(DEMO_USER_ID_MAX));
        for bad in [
            &br#"{"user_id":0}"#[..],
            br#"{"user_id":9007199254740992}"#,
            br#"{"user_id":-1}"#,
            br#"{"user_id":"42"}"#,
            br#"{"user_id":42,"admin":true}"#,
            br#"{}"#,
            br#"[42]"#,
            b"",
            b"\xff",
        ] {
            assert!(parse_demo_token(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_page_loads_nothing_inline_or_from_elsewhere() {
        let html = INDEX.body;
        assert!(!html.contains("<script>") && !html.contains("style="), "inline code breaks the CSP");
        assert!(!html.contains("http://") && !html.contains("https://"), "no other origin");
        assert!(html.contains(r#"<script src="/app.js" defer></script>"#));
        assert!(html.contains(r#"href="/app.css""#));
    }

    #[test]
    fn the_embedded_openapi_is_json() {
        let v: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert!(v["openapi"].as_str().unwrap().starts_with("3."));
    }
}
