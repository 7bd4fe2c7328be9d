//! A small W3C WebDriver client for the browser tests: `chromedriver`
//! driving headless Chromium from Debian's packages (`chromium`,
//! `chromium-driver`), spoken to as JSON over HTTP with the tests' own
//! blocking client (no WebDriver crate, nothing to download).
//!
//! When the browser or its driver is missing the tests fail if `CI=true` or
//! `SECKILL_REQUIRE_BROWSER` is set (scripts/test sets it and installs the
//! packages first); elsewhere they say so and pass without running.

use crate::common::{free_port, try_request};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key an element reference has in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

fn required() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    set("CI") || set("SECKILL_REQUIRE_BROWSER")
}

fn program(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default))
}

impl Browser {
    /// A fresh headless Chromium (its own profile) behind its own
    /// chromedriver, or `None` when they are not installed and not required.
    pub fn start() -> Option<Browser> {
        let chromium = program("CHROMIUM", "/usr/bin/chromium");
        let driver = program("CHROMEDRIVER", "/usr/bin/chromedriver");
        for p in [&chromium, &driver] {
            if !p.exists() {
                let msg = format!(
                    "{} is missing: install Debian's `chromium` and `chromium-driver` (scripts/test does)",
                    p.display()
                );
                if required() {
                    panic!("{msg}; the browser tests must run here (CI or SECKILL_REQUIRE_BROWSER)");
                }
                eprintln!("browser test not run: {msg}");
                return None;
            }
        }
        // Chromium leaves a crashpad helper and a few zombies if it is not
        // given a profile of its own; each browser gets one and drops it.
        let profile = tempfile::tempdir().expect("profile dir");
        for attempt in 0..3 {
            let port = free_port();
            let mut child = Command::new(&driver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawning {}: {e}", driver.display()));
            if !wait_ready(port, &mut child) {
                let _ = child.kill();
                let _ = child.wait();
                if attempt == 2 {
                    panic!("chromedriver did not become ready on port {port}");
                }
                continue;
            }
            let caps = json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--window-size=1280,900", "--hide-scrollbars", "--no-first-run",
                        "--disable-extensions", "--disable-background-networking",
                        format!("--user-data-dir={}", profile.path().display()),
                    ],
                },
            }}});
            let v = call(port, "POST", "/session", &caps).unwrap_or_else(|e| panic!("new WebDriver session: {e}"));
            let session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no sessionId in {v}")).to_string();
            let b = Browser { driver: child, port, session, _profile: profile };
            // Answers in the tests are waited for explicitly; a short implicit
            // wait only covers an element being re-rendered.
            let _ = b.cmd("POST", "timeouts", &json!({"implicit": 0, "pageLoad": 30_000, "script": 10_000}));
            return Some(b);
        }
        unreachable!()
    }

    fn cmd(&self, method: &str, path: &str, body: &Value) -> Result<Value, String> {
        let full = if path.is_empty() {
            format!("/session/{}", self.session)
        } else {
            format!("/session/{}/{path}", self.session)
        };
        call(self.port, method, &full, body)
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "url", &json!({"url": url})).unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The element `css` selects, if there is one now.
    pub fn find(&self, css: &str) -> Option<String> {
        let v = self.cmd("POST", "element", &json!({"using": "css selector", "value": css})).ok()?;
        v[ELEMENT].as_str().map(str::to_string)
    }

    /// Its visible text, "" when it is missing or hidden.
    pub fn text(&self, css: &str) -> String {
        self.find(css)
            .and_then(|e| self.cmd("GET", &format!("element/{e}/text"), &Value::Null).ok())
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    pub fn enabled(&self, css: &str) -> bool {
        self.find(css)
            .and_then(|e| self.cmd("GET", &format!("element/{e}/enabled"), &Value::Null).ok())
            .is_some_and(|v| v == Value::Bool(true))
    }

    pub fn displayed(&self, css: &str) -> bool {
        self.find(css)
            .and_then(|e| self.cmd("GET", &format!("element/{e}/displayed"), &Value::Null).ok())
            .is_some_and(|v| v == Value::Bool(true))
    }

    /// Clicks `css`, waiting up to 10 s for it to exist.
    pub fn click(&self, css: &str) {
        let e = self.wait_for(css, Duration::from_secs(10));
        self.cmd("POST", &format!("element/{e}/click"), &json!({})).unwrap_or_else(|err| panic!("click {css}: {err}"));
    }

    /// Replaces the value of the input `css` with `text`.
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.wait_for(css, Duration::from_secs(10));
        self.cmd("POST", &format!("element/{e}/clear"), &json!({})).unwrap_or_else(|err| panic!("clear {css}: {err}"));
        self.cmd("POST", &format!("element/{e}/value"), &json!({"text": text}))
            .unwrap_or_else(|err| panic!("type into {css}: {err}"));
    }

    /// Waits until `css` exists; its element reference.
    pub fn wait_for(&self, css: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            assert!(Instant::now() < deadline, "{css} did not appear within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the text of `css` satisfies `ok`; that text. Panics with
    /// the last text seen (and `what`) when it does not within `within`.
    pub fn wait_text(&self, css: &str, within: Duration, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let last = self.text(css).trim().to_string();
            if ok(&last) {
                return last;
            }
            assert!(Instant::now() < deadline, "{css}: expected {what} within {within:?}; it says {last:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the viewport, written to `path` (directories made).
    pub fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "screenshot", &Value::Null).unwrap_or_else(|e| panic!("screenshot: {e}"));
        let png = base64_decode(v.as_str().expect("screenshot is base64 text"));
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// Runs `script` in the page (WebDriver's, not the page's: the page's
    /// Content-Security-Policy does not apply to it); its result.
    pub fn execute(&self, script: &str) -> Value {
        self.cmd("POST", "execute/sync", &json!({"script": script, "args": []}))
            .unwrap_or_else(|e| panic!("execute {script}: {e}"))
    }

    /// Resizes the window (screenshots of the whole page).
    pub fn window_size(&self, width: u32, height: u32) {
        let _ = self.cmd("POST", "window/rect", &json!({"width": width, "height": height}));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.cmd("DELETE", "", &Value::Null);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn wait_ready(port: u16, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if call(port, "GET", "/status", &Value::Null).is_ok_and(|v| v["ready"] == Value::Bool(true)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// One WebDriver command; its `value`, or the driver's error as text.
fn call(port: u16, method: &str, path: &str, body: &Value) -> Result<Value, String> {
    let bytes = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
    let headers: &[(&str, &str)] =
        if bytes.is_empty() { &[] } else { &[("Content-Type", "application/json; charset=utf-8")] };
    let r = try_request(port, method, path, headers, &bytes).map_err(|e| format!("{method} {path}: {e}"))?;
    let v: Value = serde_json::from_slice(&r.body).map_err(|e| format!("{method} {path}: {e}: {}", r.text()))?;
    if r.status != 200 {
        return Err(format!("{method} {path}: {} {}", r.status, v["value"]));
    }
    Ok(v["value"].clone())
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter_map(val) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
