//! The buyer page (`GET /` on the buyer port) in a real headless Chromium,
//! driven over WebDriver (cli/tests/browser/webdriver.rs), against a real
//! `seckill up`:
//!
//! * the countdown ticks by the server's clock and the sale switches from
//!   upcoming to ongoing at its start time, then a buy shows the order,
//!   which is paid from the page;
//! * a sold-out sale says so, also when the click itself is answered 409;
//! * a 429 is shown with its retry time, counting down;
//! * without `--payment sandbox` the page takes a pasted token, refuses a
//!   bad one in words, shows `limit_reached`, offers cancel but no pay, and
//!   signs out on a 401;
//! * a front whose engine is unreachable (503 `busy`) says so and when it retries;
//! * the operator dashboard (`GET /dashboard` on the `--metrics` listener)
//!   shows the numbers `seckill admin stats` has while `seckill load` runs.
//!
//! With `SECKILL_UPDATE_SCREENSHOTS=1` (scripts/screenshots) the pictures in
//! docs/ are written anew; otherwise they go to target/screenshots/.
//!
//! Chromium and chromedriver come from Debian (`chromium`,
//! `chromium-driver`); scripts/test installs them when missing, and in CI a
//! missing browser fails these tests instead of skipping them.

mod common;
#[path = "browser/webdriver.rs"]
mod webdriver;

use common::{bearer, UpProc};
use seckill_testkit::{data_dir, now_ms};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use webdriver::Browser;

const OPEN: (&str, &str) = ("2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z");

/// A fresh `seckill up` with `args` (in a temp dir: keep the `TempDir` while
/// it runs) and one sale, as [`create`] makes it.
fn up_with_sale(
    args: &[&str],
    title: &str,
    stock: u64,
    per_user_limit: u32,
    window: (&str, &str),
) -> (tempfile::TempDir, UpProc, u64) {
    let (tmp, dir) = data_dir();
    let up = UpProc::start(&dir, args);
    let id = create(&up, title, stock, per_user_limit, window);
    (tmp, up, id)
}

fn create(up: &UpProc, title: &str, stock: u64, per_user_limit: u32, (starts, ends): (&str, &str)) -> u64 {
    up.create_activity(json!({"title": title, "price_cents": 129_900, "stock": stock, "per_user_limit": per_user_limit,
                   "starts_at": starts, "ends_at": ends}))
}

/// Where a screenshot goes: docs/ when asked for, target/screenshots/ otherwise.
fn screenshot_path(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    if std::env::var("SECKILL_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        root.join("docs").join(name)
    } else {
        root.join("target").join("screenshots").join(name)
    }
}

const SECOND: Duration = Duration::from_secs(1);

/// Opens the page, waits until it has loaded the sales, and logs in as
/// `login` with the demo login (sandbox mode) if given.
fn open(b: &Browser, up: &UpProc, login: Option<u64>) {
    b.goto(&format!("http://127.0.0.1:{}/", up.port));
    b.wait_for("body[data-ready='true']", 15 * SECOND);
    let Some(user) = login else { return };
    b.type_into("#demo-user", &user.to_string());
    b.click("#demo-login-button");
    b.wait_text("#who", 10 * SECOND, "the user signed in", |t| t == format!("user {user}"));
}

/// The page's seconds of `Starts in 00:00:07`-style text.
fn countdown_s(text: &str) -> Option<u64> {
    let hms = text.rsplit(' ').next()?;
    let parts: Vec<u64> = hms.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    (parts.len() == 3).then(|| parts[0] * 3600 + parts[1] * 60 + parts[2])
}

#[test]
fn the_countdown_ticks_switches_at_the_start_and_a_buy_shows_the_order() {
    let Some(b) = Browser::start() else { return };
    let (_tmp, dir) = data_dir();
    let up = UpProc::start(&dir, &[]);
    // A sale that opens 10 s from now (seconds of the server's clock, which
    // is this machine's): time for the page and the login on a busy machine.
    let starts_ms = (now_ms() / 1000 + 10) * 1000;
    let starts = seckill_proto::json::rfc3339(starts_ms);
    let ends = seckill_proto::json::rfc3339(starts_ms + 2 * 3600 * 1000);
    let id = create(&up, "Phone X, launch sale", 20, 2, (&starts, &ends));

    open(&b, &up, Some(42));
    let sale = format!("#sale-{id}");
    assert_eq!(b.text(&format!("{sale}-phase")), "Upcoming");
    assert!(!b.enabled(&format!("{sale}-buy")), "buy is off before the start");
    assert_eq!(b.text(&format!("{sale}-buy")), "Not started");

    // It ticks: two readings a little over a second apart differ by about
    // the time between them (measured: a loaded machine slows WebDriver).
    let first = b.wait_text(&format!("{sale}-countdown"), 5 * SECOND, "a countdown", |t| t.starts_with("Starts in "));
    let read = Instant::now();
    std::thread::sleep(Duration::from_millis(1_300));
    let second = b.text(&format!("{sale}-countdown"));
    let between_s = read.elapsed().as_secs() + 1;
    let (a, c) = (countdown_s(&first).expect("countdown"), countdown_s(&second).expect("countdown"));
    assert!(a > c && a - c <= between_s, "the countdown ticks: {first:?} then {second:?} ({between_s} s)");
    let left_ms = starts_ms.saturating_sub(now_ms());
    assert!(c * 1000 + 1500 >= left_ms, "{second:?} but {left_ms} ms are left");

    // It switches at the start time: never before it (the page counts by the
    // server's clock, here this machine's), and promptly after (a second
    // plus what a busy machine adds to reading the page).
    let phase = format!("{sale}-phase");
    loop {
        let t = b.text(&phase);
        let now = now_ms();
        if t == "On sale" {
            assert!(now + 300 >= starts_ms, "switched {} ms early", starts_ms - now);
            assert!(now <= starts_ms + 3_000, "switched {} ms late", now - starts_ms);
            break;
        }
        assert_eq!(t, "Upcoming", "before the start");
        assert!(now < starts_ms + 3_000, "still {t:?} {} ms after the start", now - starts_ms);
        std::thread::sleep(Duration::from_millis(50));
    }
    b.wait_text(&format!("{sale}-countdown"), 2 * SECOND, "the end countdown", |t| t.starts_with("Ends in "));
    b.wait_text(&format!("{sale}-buy"), 2 * SECOND, "an enabled buy button", |t| t == "Buy now");

    // A buy shows the order, with its pay-before deadline, then pays it.
    b.click(&format!("{sale}-buy"));
    let msg = b.wait_text(&format!("{sale}-msg"), 10 * SECOND, "the bought message", |t| t.starts_with("Bought"));
    let orders = up.get("/api/v1/orders", Some(42)).json();
    let order_id = orders["items"][0]["order_id"].as_str().expect("an order").to_string();
    assert!(msg.contains(&order_id), "{msg:?} names {order_id}");
    let row = format!("#order-{order_id}");
    b.wait_text(&format!("{row}-status"), 5 * SECOND, "the new order", |t| t == "Awaiting payment");
    let deadline = b.text(&format!("{row}-deadline"));
    assert!(deadline.contains("left"), "the pay-before deadline counts down: {deadline:?}");
    assert_eq!(b.text(&format!("{sale}-remaining")), "19", "the stock left after one unit");

    // The README's picture: an upcoming sale, one on sale with an order, one sold out.
    let soon = seckill_proto::json::rfc3339(now_ms() + 3 * 3600 * 1000);
    let later = seckill_proto::json::rfc3339(now_ms() + 5 * 3600 * 1000);
    create(&up, "Headphones, evening sale", 500, 1, (&soon, &later));
    let gone = create(&up, "Limited watch", 1, 1, (OPEN.0, &ends));
    assert_eq!(up.post(&format!("/api/v1/activities/{gone}/buy"), Some(7), b"").status, 201);
    b.wait_text(&format!("#sale-{gone}-phase"), 5 * SECOND, "sold out", |t| t == "Sold out");
    b.window_size(1280, 1000);
    b.screenshot(&screenshot_path("buyer-page.png"));

    b.click(&format!("{row}-pay"));
    b.wait_text(&format!("{row}-status"), 10 * SECOND, "the paid order", |t| t == "Paid");
    assert!(b.text("#notice").contains("is paid"), "{}", b.text("#notice"));
    assert_eq!(up.get(&format!("/api/v1/orders/{order_id}"), Some(42)).json()["status"], "paid");
}

#[test]
fn a_sold_out_sale_says_so() {
    let Some(b) = Browser::start() else { return };
    let (_tmp, dir) = data_dir();
    let up = UpProc::start(&dir, &[]);
    let gone = create(&up, "Sold before the page opened", 1, 1, OPEN);
    assert_eq!(up.post(&format!("/api/v1/activities/{gone}/buy"), Some(1), b"").status, 201);
    let last = create(&up, "Last unit", 1, 1, OPEN);

    open(&b, &up, Some(2));
    assert_eq!(b.text(&format!("#sale-{gone}-phase")), "Sold out");
    assert_eq!(b.text(&format!("#sale-{gone}-buy")), "Sold out");
    assert!(!b.enabled(&format!("#sale-{gone}-buy")));
    assert!(b.text(&format!("#sale-{gone}-msg")).starts_with("Sold out"), "{}", b.text(&format!("#sale-{gone}-msg")));
    assert_eq!(b.text(&format!("#sale-{gone}-remaining")), "0");

    // The last unit goes to someone else while the page still shows it: the
    // click is answered 409 sold_out (or the next refresh got there first).
    b.wait_text(&format!("#sale-{last}-buy"), 5 * SECOND, "an enabled buy", |t| t == "Buy now");
    assert_eq!(up.post(&format!("/api/v1/activities/{last}/buy"), Some(1), b"").status, 201);
    b.click(&format!("#sale-{last}-buy"));
    let msg = b.wait_text(&format!("#sale-{last}-msg"), 5 * SECOND, "sold out", |t| t.starts_with("Sold out"));
    assert_eq!(msg, "Sold out: every unit of this sale has been taken.");
    b.wait_text(&format!("#sale-{last}-phase"), 5 * SECOND, "the sold-out badge", |t| t == "Sold out");
    assert_eq!(up.get("/api/v1/orders", Some(2)).json()["total"], 0, "user 2 bought nothing");
}

#[test]
fn a_429_is_shown_with_its_retry_time() {
    let Some(b) = Browser::start() else { return };
    // One click a minute: the second click is answered 429 with Retry-After ≈ 60.
    let (_tmp, up, id) = up_with_sale(&["--buys-per-minute", "1"], "Two per buyer", 10, 2, OPEN);
    open(&b, &up, Some(5));
    let sale = format!("#sale-{id}");
    b.click(&format!("{sale}-buy"));
    b.wait_text(&format!("{sale}-msg"), 10 * SECOND, "the bought message", |t| t.starts_with("Bought"));
    b.wait_text(&format!("{sale}-buy"), 5 * SECOND, "buy enabled again", |t| t == "Buy now");
    b.click(&format!("{sale}-buy"));
    let msg =
        b.wait_text(&format!("{sale}-msg"), 10 * SECOND, "the 429 in words", |t| t.starts_with("Too many clicks"));
    let wait_s = |m: &str| -> u64 {
        let n = m.trim_end_matches('.').trim_end_matches(" s").rsplit(' ').next().unwrap_or("");
        n.parse().unwrap_or_else(|_| panic!("no seconds in {m:?}"))
    };
    let first = wait_s(&msg);
    assert!((30..=60).contains(&first), "Retry-After of a 1/min limit: {msg:?}");
    assert!(b.text(&format!("{sale}-buy")).starts_with("Wait "), "{}", b.text(&format!("{sale}-buy")));
    assert!(!b.enabled(&format!("{sale}-buy")));
    std::thread::sleep(Duration::from_millis(2_100));
    let later = wait_s(&b.text(&format!("{sale}-msg")));
    assert!(later < first && first - later <= 5, "the wait counts down: {first} then {later}");
    assert_eq!(up.get("/api/v1/orders", Some(5)).json()["total"], 1, "the refused click bought nothing");
}

#[test]
fn without_sandbox_the_page_takes_a_token_and_offers_no_pay() {
    let Some(b) = Browser::start() else { return };
    let (_tmp, up, id) = up_with_sale(&["--payment", "notify"], "Notify-mode sale", 5, 1, OPEN);
    open(&b, &up, None);
    assert!(!b.displayed("#demo-login"), "no demo login without sandbox");
    assert!(b.displayed("#token-login"));
    assert_eq!(b.text(&format!("#sale-{id}-buy")), "Log in to buy");

    b.type_into("#token-input", "not-a-token");
    b.click("#token-login-button");
    b.wait_text("#notice", 5 * SECOND, "the refusal", |t| t.contains("not accepted"));

    let token = bearer(77);
    b.type_into("#token-input", &token);
    b.click("#token-login-button");
    b.wait_text("#who", 5 * SECOND, "the token's user", |t| t == "user 77");
    b.click(&format!("#sale-{id}-buy"));
    b.wait_text(&format!("#sale-{id}-msg"), 10 * SECOND, "the bought message", |t| t.starts_with("Bought"));
    let order_id =
        up.get("/api/v1/orders", Some(77)).json()["items"][0]["order_id"].as_str().expect("order").to_string();
    let row = format!("#order-{order_id}");
    b.wait_text(&format!("{row}-status"), 5 * SECOND, "the order", |t| t == "Awaiting payment");
    assert!(b.find(&format!("{row}-pay")).is_none(), "no pay button without sandbox");
    // One per buyer: the next click is answered 409 limit_reached, in words.
    b.click(&format!("#sale-{id}-buy"));
    let msg =
        b.wait_text(&format!("#sale-{id}-msg"), 10 * SECOND, "the limit in words", |t| t.starts_with("You already"));
    assert_eq!(msg, "You already have the most one buyer may buy in this sale (1).");
    b.click(&format!("{row}-cancel"));
    b.wait_text(&format!("{row}-status"), 10 * SECOND, "the cancelled order", |t| t == "Cancelled");

    // A token that stops being accepted (here: signed with another secret)
    // turns a click into "log in again", and the page signs out.
    let forged = common::forge_jwt(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &json!({"sub": "77", "exp": now_ms() / 1000 + 600}),
        Some(b"another-secret-another-secret-0123456789"),
    );
    b.execute(&format!("sessionStorage.setItem('seckill.token', {:?})", forged));
    b.goto(&format!("http://127.0.0.1:{}/", up.port));
    b.wait_for("body[data-ready='true']", 15 * SECOND);
    b.wait_text("#notice", 5 * SECOND, "signed out in words", |t| t.contains("Please log in again"));
    assert!(b.displayed("#token-login"), "the token form is back");
    assert_eq!(b.text(&format!("#sale-{id}-buy")), "Log in to buy");

    // The demo route does not exist here.
    let r = up.post("/api/v1/demo/token", None, br#"{"user_id":1}"#);
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn an_unreachable_engine_is_shown_as_busy() {
    let Some(b) = Browser::start() else { return };
    let (_tmp, dir) = data_dir();
    // A front alone whose engine is not there: every engine read is 503 busy.
    let port = common::free_port();
    let no_engine = format!("unix:{}", dir.join("no-engine.sock").display());
    let _front =
        common::spawn_front(&dir, port, &["--engine", &no_engine, "--payment", "sandbox"], std::process::Stdio::null());
    common::wait_http_ok(port, "/api/v1/healthz");
    b.goto(&format!("http://127.0.0.1:{port}/"));
    b.wait_for("body[data-ready='true']", 15 * SECOND);
    let n = b.wait_text("#notice", 5 * SECOND, "busy in words", |t| t.contains("very busy"));
    assert!(n.contains("refresh by itself in 1 s"), "the notice says when it retries (Retry-After: 1): {n:?}");
}

/// The operator dashboard (`GET /dashboard` on `--metrics`, docs/API.md):
/// its per-activity numbers are plain text under stable ids
/// (`act-{id}-sold`), and must agree with `seckill admin stats` while a
/// `seckill load` runs and once it is over.
#[test]
fn the_dashboard_matches_admin_stats_while_load_runs() {
    let Some(b) = Browser::start() else { return };
    let (_tmp, up, id) = up_with_sale(&["--buys-per-minute", "100000"], "Load", 3_000, 1, OPEN);
    let dash = format!("http://127.0.0.1:{}/dashboard", up.metrics_port);
    let r = common::request(up.metrics_port, "GET", "/dashboard", &[], b"");
    assert_eq!(r.status, 200, "GET /dashboard on the metrics listener: {}", r.text());
    b.goto(&dash);
    let sold_css = format!("#act-{id}-sold");
    b.wait_for(&sold_css, 15 * SECOND);

    let mut load = std::process::Command::new(common::bin())
        .args(["load", "--data-dir"])
        .arg(&up.data_dir)
        .args(["--url", &format!("http://127.0.0.1:{}", up.port), "--activity", &id.to_string()])
        // Paced (~6 s), so the page is read many times while it runs.
        .args(["--users", "6000", "--connections", "8", "--rate", "1000", "--duration", "6s", "--quiet"])
        .env("SECKILL_AUTH_SECRET", common::AUTH_SECRET)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("seckill load");

    // While it runs: what the page shows never exceeds what the engine has
    // sold, never goes back, and catches up.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while load.try_wait().expect("load status").is_none() && Instant::now() < deadline {
        let shown = number(&b.text(&sold_css));
        let sold = sold_of(&up, id);
        if let Some(shown) = shown {
            assert!(shown <= sold, "the dashboard shows {shown} sold, the engine has sold {sold}");
            assert!(seen.last().is_none_or(|l| *l <= shown), "sold went back: {seen:?} then {shown}");
            seen.push(shown);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = load.kill();
    let _ = load.wait();
    assert!(seen.len() >= 3, "the page was read only {} times while the load ran", seen.len());
    // Once it is over, the page settles on the engine's number exactly.
    let sold = sold_of(&up, id);
    assert!(sold > 0, "the load sold nothing");
    b.wait_text(&sold_css, 10 * SECOND, &format!("{sold} sold"), |t| number(t) == Some(sold));
    // And so do the other per-activity figures `stats` has.
    let stats = up.admin("stats", json!({})).expect("admin stats");
    let act = stats["activities"].as_array().and_then(|v| v.iter().find(|a| a["id"] == id)).cloned();
    if let Some(act) = act {
        let left = act["stock_left"].as_u64().expect("stock_left");
        b.wait_text(&format!("#act-{id}-stock-left"), 5 * SECOND, &format!("{left} left"), |t| number(t) == Some(left));
        for (status, n) in act["orders"].as_object().expect("orders by status") {
            let n = n.as_u64().expect("a count");
            b.wait_text(&format!("#act-{id}-orders-{status}"), 5 * SECOND, &format!("{n} {status}"), |t| {
                number(t) == Some(n)
            });
        }
    }
    b.window_size(1280, 1500);
    b.screenshot(&screenshot_path("dashboard.png"));
}

/// The digits of a number shown as text (`1,234` or `1 234` too).
fn number(text: &str) -> Option<u64> {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Units sold in `id` as the engine tells the operator: `seckill admin
/// stats` when it lists activities, else `activity.show`.
fn sold_of(up: &UpProc, id: u64) -> u64 {
    let stats = up.admin("stats", json!({})).expect("admin stats");
    if let Some(acts) = stats["activities"].as_array() {
        if let Some(a) = acts.iter().find(|a| a["id"] == id || a["activity_id"] == id) {
            if let Some(sold) = a["sold"].as_u64() {
                return sold;
            }
        }
    }
    if let Some(sold) = stats["activities"][id.to_string()]["sold"].as_u64() {
        return sold;
    }
    let a: Value = up.admin("activity.show", json!({"activity_id": id})).expect("activity.show");
    a["total_stock"].as_u64().expect("total_stock") - a["remaining"].as_u64().expect("remaining")
}
