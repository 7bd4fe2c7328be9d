//! The buyer page's routes over plain HTTP (the browser tests are in
//! browser.rs): `/`, `/app.js`, `/app.css` with their headers and 304s,
//! `/api/v1/info`, `/api/v1/openapi.json`, the sandbox-only demo login and
//! its rate limit, `now` in activity lists, and a cached activity view that
//! still switches phase at the start time.

mod common;

use common::UpProc;
use seckill_testkit::{data_dir, now_ms};
use serde_json::json;
use std::time::Duration;

#[test]
fn the_page_is_served_with_a_strict_policy_and_validators() {
    let (_tmp, dir) = data_dir();
    let up = UpProc::start(&dir, &[]);
    for (path, ctype, needle) in [
        ("/", "text/html; charset=utf-8", "<script src=\"/app.js\" defer></script>"),
        ("/index.html", "text/html; charset=utf-8", "<title>"),
        ("/app.js", "text/javascript; charset=utf-8", "'use strict'"),
        ("/app.css", "text/css; charset=utf-8", ".sale"),
    ] {
        let r = up.get(path, None);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some(ctype), "{path}");
        assert!(r.text().contains(needle), "{path} has {needle:?}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{path}: {csp}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        let etag = r.header("etag").unwrap_or_else(|| panic!("{path} has no ETag")).to_string();
        // Revalidation: the same tag is a 304 without a body.
        let again = up.req("GET", path, &[("If-None-Match", &etag)], b"");
        assert_eq!(again.status, 304, "{path}");
        assert!(again.body.is_empty());
        assert_eq!(again.header("etag"), Some(etag.as_str()));
        let other = up.req("GET", path, &[("If-None-Match", "\"other\"")], b"");
        assert_eq!(other.status, 200, "{path}");
    }
    let r = up.post("/", None, b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(up.get("/nope.js", None).status, 404);
}

#[test]
fn info_says_the_clock_and_the_mode_and_the_description_is_served() {
    let (_tmp, dir) = data_dir();
    let up = UpProc::start(&dir, &[]);
    let before = now_ms();
    let r = up.get("/api/v1/info", None);
    let after = now_ms();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    assert_eq!(v["payment"], "sandbox");
    assert_eq!(v["demo_login"], true);
    let now = seckill_proto::json::parse_rfc3339(v["now"].as_str().expect("now")).expect("RFC 3339");
    assert!(before <= now && now <= after, "{before} <= {now} <= {after}");

    let list = up.get("/api/v1/activities", None).json();
    let now = seckill_proto::json::parse_rfc3339(list["now"].as_str().expect("now in the list")).expect("RFC 3339");
    assert!(now >= before);

    let r = up.get("/api/v1/openapi.json", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let spec = r.json();
    assert!(spec["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    assert!(spec["paths"]["/api/v1/activities/{activity_id}/buy"]["post"].is_object());

    let (_tmp2, dir2) = data_dir();
    let notify = UpProc::start(&dir2, &["--payment", "notify"]);
    let v = notify.get("/api/v1/info", None).json();
    assert_eq!((v["payment"].as_str(), v["demo_login"].as_bool()), (Some("notify"), Some(false)));
}

#[test]
fn demo_login_exists_only_in_sandbox_and_is_rate_limited() {
    let (_tmp, dir) = data_dir();
    let up = UpProc::start(&dir, &[]);
    let r = up.post("/api/v1/demo/token", None, br#"{"user_id":42}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["user_id"], 42);
    let token = v["token"].as_str().expect("token");
    // The token is a real bearer token for user 42.
    let orders = up.req("GET", "/api/v1/orders", &[("Authorization", &format!("Bearer {token}"))], b"");
    assert_eq!(orders.status, 200, "{}", orders.text());

    // Every attempt counts against the address's bucket, bad ones too: paced.
    for bad in [&br#"{"user_id":0}"#[..], br#"{"user_id":"7"}"#, br#"{"user_id":7,"admin":true}"#, b"[7]", b""] {
        std::thread::sleep(Duration::from_millis(520));
        let r = up.post("/api/v1/demo/token", None, bad);
        assert_eq!(r.status, 400, "{:?}: {}", String::from_utf8_lossy(bad), r.text());
    }
    // 2 a second, bursts of 4, per address: a tight loop is refused soon, with Retry-After.
    let refused = (0..20)
        .map(|_| up.post("/api/v1/demo/token", None, br#"{"user_id":1}"#))
        .find(|r| r.status == 429)
        .expect("a burst of demo logins is refused");
    assert_eq!(refused.json()["error"]["code"], "rate_limited");
    assert!(refused.header("retry-after").is_some_and(|s| s.parse::<u32>().is_ok_and(|n| n >= 1)));

    let (_tmp2, dir2) = data_dir();
    let prod = UpProc::start(&dir2, &["--payment", "notify"]);
    let r = prod.post("/api/v1/demo/token", None, br#"{"user_id":42}"#);
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "not_found");
}

#[test]
fn a_cached_view_switches_phase_at_the_start() {
    let (_tmp, dir) = data_dir();
    // Views cached for a minute: only the times can move the phase.
    let up = UpProc::start(&dir, &["--activity-cache-ms", "60000"]);
    let starts_ms = now_ms() + 1_500;
    let id = up.create_activity(
        json!({"title": "soon", "price_cents": 1, "stock": 5, "starts_at": seckill_proto::json::rfc3339(starts_ms),
               "ends_at": "2099-01-01T00:00:00Z"}),
    );
    let path = format!("/api/v1/activities/{id}");
    let v = up.get(&path, None).json();
    assert_eq!(v["phase"], "upcoming");
    assert_eq!(up.get("/api/v1/activities", None).json()["items"][0]["phase"], "upcoming");
    std::thread::sleep(Duration::from_millis(starts_ms.saturating_sub(now_ms()) + 100));
    let v = up.get(&path, None).json();
    assert_eq!((v["phase"].as_str(), v["starts_in_ms"].as_u64()), (Some("ongoing"), Some(0)), "{v}");
    assert_eq!(up.get("/api/v1/activities", None).json()["items"][0]["phase"], "ongoing");
}
