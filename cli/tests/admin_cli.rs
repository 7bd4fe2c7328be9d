//! `seckill admin` through the real binary against a running `seckill up`
//! (no MySQL, no Redis): every subcommand's table and `--json` output
//! parsed, the raw form (`VERB --json '{…}'`) still answering the same
//! JSON, and bad flags or bad ids giving an error that says what to do.

mod common;

use common::UpProc;
use seckill_testkit::data_dir;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn admin(data_dir: &Path, args: &[&str]) -> Out {
    let out = Command::new(common::bin())
        .arg("admin")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("SECKILL_DATA_DIR")
        .output()
        .expect("running seckill admin");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Words split on blanks (no argument here contains one).
fn w(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

/// Runs and expects success.
#[track_caller]
fn ok(data_dir: &Path, args: &[&str]) -> String {
    let o = admin(data_dir, args);
    assert_eq!(o.code, 0, "seckill admin {args:?} failed:\n{}{}", o.stdout, o.stderr);
    o.stdout
}

/// Runs with `--json` and parses stdout.
#[track_caller]
fn json(data_dir: &Path, args: &[&str]) -> Value {
    let text = ok(data_dir, args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{text}"))
}

/// Runs and expects failure; returns stderr.
#[track_caller]
fn fails(data_dir: &Path, args: &[&str], code: i32) -> String {
    let o = admin(data_dir, args);
    assert_eq!(o.code, code, "seckill admin {args:?} should fail with {code}:\n{}{}", o.stdout, o.stderr);
    assert!(o.stdout.is_empty(), "nothing on stdout when failing: {}", o.stdout);
    o.stderr
}

/// A FIELD / VALUE table as a map; checks the header and the alignment.
#[track_caller]
fn fields(table: &str) -> HashMap<String, String> {
    let mut lines = table.lines();
    let header = lines.next().expect("a header");
    assert!(header.starts_with("FIELD "), "header: {header:?}\n{table}");
    let value_col = header.find("VALUE").expect("VALUE column");
    let mut map = HashMap::new();
    for l in lines {
        assert_eq!(l, l.trim_end(), "no trailing blanks: {l:?}");
        let (k, v) = l.split_at(value_col);
        assert!(!k.trim().is_empty() && !k.trim().contains(' '), "field {k:?} in {l:?}");
        assert!(!v.starts_with(' '), "values start in the VALUE column: {l:?}\n{table}");
        map.insert(k.trim().to_string(), v.to_string());
    }
    map
}

/// A horizontal table as rows of column → cell (cells split on 2+ blanks).
#[track_caller]
fn rows(table: &str) -> Vec<HashMap<String, String>> {
    let split = |l: &str| -> Vec<String> {
        l.trim().split("  ").map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect()
    };
    let mut lines = table.lines();
    let header = split(lines.next().expect("a header"));
    lines
        .filter(|l| !l.contains(" of ") || !l.ends_with("activities"))
        .map(|l| {
            let cells = split(l);
            assert_eq!(cells.len(), header.len(), "row {l:?} against {header:?}");
            header.iter().cloned().zip(cells).collect()
        })
        .collect()
}

/// An activity without `starts_in_ms` (it counts down between two reads).
fn no_clock(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("starts_in_ms");
    }
    v
}

fn is_rfc3339(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

#[test]
fn admin_subcommands_print_tables_and_json() {
    let (_tmp, dir) = data_dir();
    let up = UpProc::start(&dir, &[]);
    let d = dir.as_path();

    // activity create: a table of the new activity.
    let create = "activity create --title phone --price-cents 99900 --stock 100";
    let t = ok(d, &w(&format!("{create} --starts-at 2020-01-01T00:00:00Z --ends-at +1h --limit-per-user 2")));
    let a = fields(&t);
    assert_eq!(a["id"], "1", "{t}");
    assert_eq!(a["title"], "phone");
    assert_eq!((a["total_stock"].as_str(), a["remaining"].as_str()), ("100", "100"));
    assert_eq!(a["per_user_limit"], "2");
    assert_eq!((a["phase"].as_str(), a["status"].as_str()), ("ongoing", "active"));
    assert!(is_rfc3339(&a["starts_at"]) && is_rfc3339(&a["ends_at"]), "{t}");
    let first_lines: Vec<&str> = t.lines().skip(1).take(3).map(|l| l.split(' ').next().unwrap_or("")).collect();
    assert_eq!(first_lines, ["id", "title", "product_id"], "what an operator looks for comes first:\n{t}");

    // --json: exactly the protocol's result.
    let b = json(d, &w("activity create --title tv --price-cents 5000 --stock 7 --starts-at +1d --ends-at +2d --json"));
    assert_eq!(
        (b["id"].as_u64(), b["phase"].as_str(), b["total_stock"].as_u64()),
        (Some(2), Some("upcoming"), Some(7))
    );
    assert_eq!(no_clock(&b), no_clock(&json(d, &["activity", "get", "2", "--json"])));
    let raw = up.admin("activity.show", serde_json::json!({"activity_id": 2})).expect("activity.show");
    assert_eq!(no_clock(&b), no_clock(&raw), "--json prints the admin socket's result");

    // activity list: a row per activity, aligned, and the total.
    let t = ok(d, &["activity", "list"]);
    let r = rows(&t);
    assert_eq!(r.len(), 2, "{t}");
    assert_eq!((r[0]["ID"].as_str(), r[0]["TITLE"].as_str(), r[0]["REMAINING"].as_str()), ("1", "phone", "100"));
    assert_eq!((r[1]["TITLE"].as_str(), r[1]["PHASE"].as_str()), ("tv", "upcoming"));
    assert!(r.iter().all(|row| is_rfc3339(&row["STARTS_AT"]) && is_rfc3339(&row["ENDS_AT"])), "{t}");
    assert!(t.ends_with("2 of 2 activities\n"), "{t}");
    let header = t.lines().next().unwrap_or_default();
    let col = header.find("STATUS").expect("STATUS");
    assert!(t.lines().skip(1).take(2).all(|l| l[col..].starts_with("active")), "columns line up:\n{t}");
    let l = json(d, &["activity", "list", "--limit", "1", "--json"]);
    assert_eq!((l["items"].as_array().map(Vec::len), l["total"].as_u64()), (Some(1), Some(2)));

    // stock, update, pause/resume.
    assert_eq!(fields(&ok(d, &["activity", "stock", "1", "--add", "50"]))["total_stock"], "150");
    let u = fields(&ok(d, &["activity", "update", "1", "--title", "tablet", "--per-user-limit", "3"]));
    assert_eq!((u["title"].as_str(), u["per_user_limit"].as_str()), ("tablet", "3"));
    assert_eq!(fields(&ok(d, &["activity", "pause", "1"]))["status"], "paused");
    assert_eq!(fields(&ok(d, &["activity", "resume", "1"]))["status"], "active");
    assert_eq!(fields(&ok(d, &["activity", "show", "1"]))["title"], "tablet", "`show` is `get`");

    // product, quota.
    let p = fields(&ok(d, &["product", "create", "--name", "cable", "--price-cents", "900"]));
    assert_eq!((p["id"].as_str(), p["name"].as_str(), p["price_cents"].as_str()), ("1", "cable", "900"));
    let q = fields(&ok(d, &["quota", "set", "--activity", "1", "--user", "42", "--limit", "5"]));
    assert_eq!((q["activity_id"].as_str(), q["user_id"].as_str(), q["limit"].as_str()), ("1", "42", "5"));

    // An order: bought over HTTP, looked up, paid, shipped.
    let bought = up.post("/api/v1/activities/1/buy", Some(42), br#"{"quantity":1}"#);
    assert_eq!(bought.status, 201, "{}", bought.text());
    let id = bought.json()["order_id"].as_str().expect("order_id").to_string();
    let o = fields(&ok(d, &["order", "get", &id]));
    assert_eq!(
        (o["order_id"].as_str(), o["user_id"].as_str(), o["status"].as_str()),
        (id.as_str(), "42", "pending_payment")
    );
    assert!(is_rfc3339(&o["created_at"]) && is_rfc3339(&o["pay_before"]), "{o:?}");
    let e = fails(d, &["order", "ship", &id], 1);
    assert!(e.contains("invalid_state") && e.contains("next:"), "shipping an unpaid order: {e}");
    assert_eq!(up.post(&format!("/api/v1/orders/{id}/pay"), Some(42), b"").status, 200);
    assert_eq!(fields(&ok(d, &["order", "ship", &id]))["status"], "shipped");
    assert_eq!(json(d, &["order", "get", &id, "--json"])["status"], "shipped");

    // stats, snapshot, verify (no MySQL here).
    let s = fields(&ok(d, &["stats"]));
    let durable: u64 = s["durable_lsn"].parse().expect("durable_lsn is a number");
    assert!(durable >= 8, "{s:?}");
    assert_eq!(s["wal_failed"], "false");
    assert!(json(d, &["stats", "--json"])["durable_lsn"].as_u64() >= Some(durable));
    let snap = fields(&ok(d, &["snapshot"]));
    assert!(snap["lsn"].parse::<u64>().expect("lsn") >= durable, "{snap:?}");
    let e = fails(d, &["verify"], 1);
    assert!(e.contains("runs without one"), "{e}");

    // The raw form answers as before: the result as pretty JSON.
    let raw = json(d, &["activity.show", "--json", r#"{"activity_id":1}"#]);
    assert_eq!(no_clock(&raw), no_clock(&json(d, &["activity", "get", "1", "--json"])));
    assert_eq!(json(d, &["--json", r#"{"activity_id":1}"#, "activity.show"])["title"], "tablet");
    assert!(json(d, &["stats", "--json", "{}"])["durable_lsn"].is_u64());
    let raw = json(d, &["stock.add", "--json", r#"{"activity_id":2,"amount":3}"#]);
    assert_eq!(raw["total_stock"], 10);
    let e = fails(d, &["activity.show", "--json", r#"{"activity_id":9}"#], 1);
    assert!(e.contains("activity_not_found") && e.contains("activity list"), "{e}");

    // Errors from the engine say what to do next.
    let e = fails(d, &["activity", "get", "99"], 1);
    assert!(e.contains("activity_not_found") && e.contains("next: `seckill admin activity list`"), "{e}");
    let e = fails(d, &["order", "get", "not-an-order"], 1);
    assert!(e.contains("bad_request") && e.contains("next:"), "{e}");
    let e = fails(d, &["activity", "update", "1"], 1);
    assert!(e.contains("nothing to change") && e.contains("--title"), "{e}");
    let e = fails(d, &w("activity create --title x --price-cents 1 --stock 1 --starts-at +1h --ends-at now"), 1);
    assert!(e.contains("bad_request"), "ends before it starts: {e}");

    // shutdown stops the engine.
    let t = ok(d, &["shutdown"]);
    assert!(t.contains("stopping"), "{t}");
    let mut up = up;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while up.child.try_wait().expect("try_wait").is_none() {
        assert!(std::time::Instant::now() < deadline, "seckill up did not stop after `admin shutdown`");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn bad_flags_and_a_missing_engine_say_what_to_do() {
    let (_tmp, dir) = data_dir();
    let d = dir.as_path();
    // Usage errors are clap's (exit 2), naming the flag and the forms it takes.
    let e = fails(d, &w("activity create --title x --price-cents 1 --stock 1 --starts-at tomorrow --ends-at +1h"), 2);
    assert!(e.contains("--starts-at") && e.contains("RFC 3339") && e.contains("+10m"), "{e}");
    let e = fails(d, &["activity", "create", "--title", "x", "--price-cents", "abc"], 2);
    assert!(e.contains("--price-cents") && e.contains("abc"), "{e}");
    let e = fails(d, &["activity", "create", "--title", "x"], 2);
    assert!(e.contains("--price-cents") && e.contains("required"), "{e}");
    let e = fails(d, &["activity", "get"], 2);
    assert!(e.contains("<ID>") && e.contains("required"), "{e}");
    let e = fails(d, &["activity", "stock", "1"], 2);
    assert!(e.contains("--add"), "{e}");
    let e = fails(d, &["activity", "list", "--json", "5"], 2);
    assert!(e.contains("not a JSON object") && e.contains("after the command"), "{e}");
    let e = fails(d, &["activity", "get", "1", "--json", r#"{"activity_id":1}"#], 1);
    assert!(e.contains("--json takes no value after this command"), "{e}");

    // Unknown commands list the ones there are.
    let e = fails(d, &["activty", "list"], 1);
    assert!(e.contains("unknown admin command `activty`") && e.contains("activity, product"), "{e}");
    let e = fails(d, &["activity.show", "--activity", "1"], 1);
    assert!(e.contains("`--activity` is not an argument of the raw form"), "{e}");
    let e = fails(d, &["activity.show", "--json", "{nope"], 1);
    assert!(e.contains("not valid JSON"), "{e}");

    // No engine: where it looked and how to point it elsewhere.
    let e = fails(d, &["activity", "list"], 1);
    assert!(e.contains("admin.sock") && e.contains("--data-dir") && e.contains("running"), "{e}");

    // Every subcommand has help.
    for sub in [&["activity", "create"][..], &["activity", "list"], &["order", "ship"], &["quota", "set"], &["stats"]] {
        let mut a = sub.to_vec();
        a.push("--help");
        let h = ok(d, &a);
        assert!(h.contains("Usage: seckill admin"), "{sub:?}: {h}");
    }
    let h = ok(d, &["--help"]);
    assert!(h.contains("activity.create") && h.contains("seckill admin activity create --title"), "{h}");
}

#[test]
fn a_reader_that_leaves_early_is_not_a_crash() {
    let (_tmp, dir) = data_dir();
    let _up = UpProc::start(&dir, &[]);
    for args in [&["stats"][..], &["stats", "--json"][..], &["stats", "--json", "{}"][..]] {
        // `seckill admin stats | head -0`: the pipe's reader is gone before
        // the answer is written.
        let mut child = Command::new(common::bin())
            .arg("admin")
            .arg("--data-dir")
            .arg(&dir)
            .args(args)
            .env_remove("SECKILL_DATA_DIR")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running seckill admin");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("seckill admin finished");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !stderr.contains("panicked"), "{args:?}: {:?} {stderr}", out.status);
    }
}
