//! `seckill load` end to end: a real `seckill up`, a real load subprocess.

use seckill_testkit::free_port;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "load-test-auth-secret-0123456789abcdef";

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_seckill"))
}

/// `seckill up` on a free port; killed (-9) when dropped.
struct Up {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Up {
    fn start(data_dir: &Path) -> Up {
        let log = data_dir.with_extension("log");
        for _ in 0..3 {
            let port = free_port();
            let child = Command::new(bin())
                .arg("up")
                .arg("--data-dir")
                .arg(data_dir)
                .args(["--http", &format!("127.0.0.1:{port}"), "--mysql-url", "none", "--redis-url", "none"])
                .env("SECKILL_AUTH_SECRET", SECRET)
                .env("SECKILL_METRICS", "none")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("spawning seckill up");
            let mut up = Up { child, port, log: log.clone() };
            if up.wait_ready() {
                return up;
            }
        }
        panic!("seckill up did not start; its log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if readyz(self.port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn readyz(port: u16) -> bool {
    let get = b"GET /api/v1/readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    seckill_testkit::http::raw_request_within(port, get, Duration::from_secs(2)).is_ok_and(|r| r.status == 200)
}

#[test]
fn setup_load_and_verify_sells_exactly_the_stock() {
    let (tmp, dir) = seckill_testkit::data_dir();
    let up = Up::start(&dir);
    let report = tmp.path().join("report.json");
    let out = Command::new(bin())
        .args(["load", "--url", &up.url(), "--data-dir"])
        .arg(&dir)
        .args(["--setup", "--stock", "200", "--users", "1000", "--connections", "16", "--verify", "--quiet"])
        .arg("--report")
        .arg(&report)
        .env("SECKILL_AUTH_SECRET", SECRET)
        .output()
        .expect("running seckill load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "seckill load failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nup log:\n{}",
        out.status,
        std::fs::read_to_string(&up.log).unwrap_or_default()
    );
    assert!(stdout.contains("PASS no oversell"), "stdout:\n{stdout}");
    assert!(!stdout.contains("FAIL"), "stdout:\n{stdout}");
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report written")).expect("report is JSON");
    assert_eq!(v["created"], 200, "report: {v:#}");
    assert_eq!(v["outcomes"]["201"], 200, "report: {v:#}");
    assert_eq!(v["requests"], 1000, "report: {v:#}");
    assert_eq!(v["verify"]["passed"], true, "report: {v:#}");
    assert_eq!(v["verify"]["remaining"], 0, "report: {v:#}");
    assert!(v["latency_ms"]["p99"].as_f64().is_some_and(|p| p > 0.0), "report: {v:#}");
}

#[test]
fn load_without_a_server_says_what_to_do() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = Command::new(bin())
        .args(["load", "--url", &url, "--activity", "1", "--quiet", "--data-dir"])
        .arg(tmp.path())
        .env("SECKILL_AUTH_SECRET", SECRET)
        .output()
        .expect("running seckill load");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot reach") && stderr.contains("seckill up"), "stderr:\n{stderr}");
}

/// The open loop sends exactly `rate × duration` clicks, none before it is
/// due (so the run lasts at least the duration), and every one gets an
/// answer. Fails if the pacer releases requests early or loses some
/// (e.g. the end-of-run permits not given, which would hang the workers).
#[test]
fn the_open_loop_sends_each_click_when_due_and_all_of_them() {
    let (tmp, dir) = seckill_testkit::data_dir();
    let up = Up::start(&dir);
    let report = tmp.path().join("report.json");
    let started = Instant::now();
    let out = Command::new(bin())
        .args(["load", "--url", &up.url(), "--data-dir"])
        .arg(&dir)
        .args(["--setup", "--stock", "5000", "--users", "1500", "--connections", "8"])
        .args(["--rate", "1000", "--duration", "1500ms", "--quiet", "--report"])
        .arg(&report)
        .env("SECKILL_AUTH_SECRET", SECRET)
        .output()
        .expect("running seckill load");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "seckill load failed: {}\nstderr:\n{stderr}", out.status);
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report written")).expect("report is JSON");
    assert_eq!(v["mode"], "open", "report: {v:#}");
    assert_eq!(v["requests"], 1500, "report: {v:#}");
    assert_eq!(v["created"], 1500, "report: {v:#}");
    // The last click is due at 1.499 s: a run that ended sooner sent early.
    let run_s = v["duration_s"].as_f64().expect("duration_s");
    assert!(run_s >= 1.49, "ran {run_s} s for clicks due over 1.5 s: report {v:#}");
    assert!(started.elapsed() >= Duration::from_millis(1490));
}
