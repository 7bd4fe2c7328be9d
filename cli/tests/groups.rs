//! Two groups behind one front (docs/REPLICATION.md, "Activities over
//! groups"): `seckill engine --group 0` and `seckill engine --group 1`, each
//! on its own data dir, and one `seckill front --engine … --engine-group
//! 1=…`. Buyers speak HTTP to the front only; the test reads each engine's
//! admin socket to see where things landed.
//!
//! `SECKILL_TEST_PORT_BASE` takes the front's port from BASE + 50 instead
//! of a free one.

mod common;

use common::{admin, bearer, request, spawn_front, wait_http_ok, wait_until, EngineProc, HttpResp};
use seckill_proto::OrderId;
use serde_json::{json, Value};
use std::os::unix::net::UnixStream;
use std::time::Duration;

const OPEN: (&str, &str) = ("2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z");

fn json_of(r: &HttpResp) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

fn call(port: u16, method: &str, path: &str, user: u64) -> HttpResp {
    request(port, method, path, &[("Authorization", &bearer(user))], b"")
}

fn order_id_of(v: &Value) -> OrderId {
    v["order_id"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no order id in {v}"))
}

#[test]
fn a_front_routes_each_sale_and_order_to_its_group_and_survives_one_group_down() {
    let root = tempfile::tempdir().expect("tempdir");
    let (dir0, dir1) = (root.path().join("g0"), root.path().join("g1"));
    let g0 = EngineProc::start(&dir0, &[]);
    let mut g1 = EngineProc::start(&dir1, &["--group", "1"]);
    let fields =
        |title: &str| json!({"title": title, "price_cents": 100, "stock": 10, "starts_at": OPEN.0, "ends_at": OPEN.1});
    let a0 = g0.create_activity(fields("on group 0"));
    let a1 = g1.create_activity(fields("on group 1"));
    assert_eq!((a0, a1), (1, (1 << 48) + 1), "activity ids name their group");

    let port = std::env::var("SECKILL_TEST_PORT_BASE")
        .ok()
        .and_then(|b| b.parse::<u16>().ok())
        .map_or_else(seckill_testkit::free_port, |b| b + 50);
    let engine0 = format!("unix:{}", dir0.join("engine.sock").display());
    let group1 = format!("1=unix:{}", dir1.join("engine.sock").display());
    let front_log = common::log_file(&root.path().join("front.log"));
    let _front = spawn_front(
        &dir0,
        port,
        &["--engine", &engine0, "--engine-group", &group1, "--payment", "sandbox", "--activity-cache-ms", "0"],
        front_log,
    );
    wait_http_ok(port, "/api/v1/readyz");

    // The activity list spans both groups, by id, with the page limits of one engine.
    let list = json_of(&request(port, "GET", "/api/v1/activities", &[], b""));
    let ids: Vec<u64> = list["items"].as_array().expect("items").iter().filter_map(|a| a["id"].as_u64()).collect();
    assert_eq!((ids, &list["total"]), (vec![a0, a1], &json!(2)), "{list}");
    let second = json_of(&request(port, "GET", "/api/v1/activities?offset=1&limit=1", &[], b""));
    assert_eq!((&second["items"][0]["id"], &second["total"]), (&json!(a1), &json!(2)), "{second}");

    // Each user buys on both sales; each order lands on its sale's engine.
    let mut orders = Vec::new();
    for user in 1..=3u64 {
        for (activity, dir, group) in [(a0, &dir0, 0u8), (a1, &dir1, 1u8)] {
            let r = call(port, "POST", &format!("/api/v1/activities/{activity}/buy"), user);
            assert_eq!(r.status, 201, "user {user} on {activity}: {}", r.text());
            let id = order_id_of(&json_of(&r));
            assert_eq!(id.group(), group, "{id}");
            let there = admin(dir, "order.show", json!({"order_id": id.to_string()})).expect("on its engine");
            assert_eq!((&there["user_id"], &there["activity_id"]), (&json!(user), &json!(activity)));
            let other = if group == 0 { &dir1 } else { &dir0 };
            assert!(admin(other, "order.show", json!({"order_id": id.to_string()})).is_err(), "{id} on both");
            orders.push((user, activity, id));
        }
    }
    for (dir, activity) in [(&dir0, a0), (&dir1, a1)] {
        let shown = admin(dir, "activity.show", json!({"activity_id": activity})).expect("activity.show");
        assert_eq!(shown["remaining"], json!(7), "{shown}");
    }

    // A user's orders: both groups', newest first, total over both.
    let mine = json_of(&call(port, "GET", "/api/v1/orders", 1));
    let listed: Vec<OrderId> = mine["items"].as_array().expect("items").iter().map(order_id_of).collect();
    let mut expected: Vec<OrderId> = orders.iter().filter(|o| o.0 == 1).map(|o| o.2).collect();
    expected.sort_unstable_by_key(|id| std::cmp::Reverse(*id));
    assert_eq!((listed, &mine["total"]), (expected.clone(), &json!(2)), "{mine}");
    let page = json_of(&call(port, "GET", "/api/v1/orders?offset=1&limit=1", 1));
    assert_eq!(page["items"][0]["order_id"], json!(expected[1].to_string()), "{page}");

    // Pay and cancel go by the order id to its group.
    let (_, _, paid) = orders.iter().find(|o| o.0 == 1 && o.1 == a1).copied().expect("user 1 on group 1");
    let r = call(port, "POST", &format!("/api/v1/orders/{paid}/pay"), 1);
    assert_eq!((r.status, &json_of(&r)["status"]), (200, &json!("paid")), "{}", r.text());
    let shown = admin(&dir1, "order.show", json!({"order_id": paid.to_string()})).expect("order.show");
    assert_eq!(shown["status"], json!("paid"));
    let (_, _, cancelled) = orders.iter().find(|o| o.0 == 2 && o.1 == a0).copied().expect("user 2 on group 0");
    let r = call(port, "POST", &format!("/api/v1/orders/{cancelled}/cancel"), 2);
    assert_eq!((r.status, &json_of(&r)["status"]), (200, &json!("cancelled")), "{}", r.text());
    let shown = admin(&dir0, "order.show", json!({"order_id": cancelled.to_string()})).expect("order.show");
    assert_eq!(shown["status"], json!("cancelled"));
    // An order id of a group this front was not given is no order of its.
    let elsewhere = OrderId(paid.0 | (0x200u128 << 64));
    assert_eq!(elsewhere.group(), 3);
    let r = call(port, "GET", &format!("/api/v1/orders/{elsewhere}"), 1);
    assert_eq!((r.status, &json_of(&r)["error"]["code"]), (404, &json!("order_not_found")), "{}", r.text());

    // Group 1 goes down: its sale answers 503 group_unavailable, group 0 sells on.
    g1.kill9();
    wait_until("group 1's sale to answer group_unavailable", Duration::from_secs(30), || {
        let r = call(port, "POST", &format!("/api/v1/activities/{a1}/buy"), 4);
        assert_ne!(r.status, 201, "a buy on a killed group: {}", r.text());
        r.status == 503 && json_of(&r)["error"]["code"] == json!("group_unavailable")
    });
    let r = call(port, "POST", &format!("/api/v1/activities/{a1}/buy"), 5);
    assert_eq!(r.header("retry-after"), Some("1"), "{}", r.text());
    let r = call(port, "POST", &format!("/api/v1/activities/{a0}/buy"), 4);
    assert_eq!(r.status, 201, "group 0 sells on: {}", r.text());
    assert_eq!(order_id_of(&json_of(&r)).group(), 0);
    let r = call(port, "GET", &format!("/api/v1/orders/{cancelled}"), 2);
    assert_eq!(r.status, 200, "group 0's orders are still read: {}", r.text());
    let r = call(port, "GET", "/api/v1/orders", 1);
    assert_eq!((r.status, &json_of(&r)["error"]["code"]), (503, &json!("group_unavailable")), "{}", r.text());
    let ready = json_of(&request(port, "GET", "/api/v1/readyz", &[], b""));
    assert_eq!(ready, json!({"status": "ready", "groups_down": [1]}));
}

#[test]
fn an_engine_keeps_its_group_for_the_life_of_its_data_dir() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("g2");
    {
        let mut g = EngineProc::start(&dir, &["--group", "2"]);
        let stats = admin(&dir, "stats", json!({})).expect("stats");
        assert_eq!(stats["group"], json!(2));
        g.kill9();
    }
    // The data dir holds no activity: only engine.meta says whose it is.
    // An engine that did start is killed (and the test fails), never waited on.
    let mut child = common::seckill()
        .args(["engine", "--mysql-url", "none", "--redis-url", "none", "--metrics", "none", "--data-dir"])
        .arg(&dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn seckill engine");
    let mut exited = None;
    wait_until("seckill engine --group 0 on group 2's data dir to exit", Duration::from_secs(30), || {
        exited = child.try_wait().expect("try_wait");
        exited.is_some() || UnixStream::connect(dir.join("admin.sock")).is_ok()
    });
    let _ = child.kill();
    let out = child.wait_with_output().expect("its output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(exited.is_some_and(|s| !s.success()) && err.contains("--group 2"), "{exited:?}: {err}");
    let out = common::seckill()
        .args(["engine", "--group", "16", "--data-dir"])
        .arg(root.path().join("g16"))
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run seckill engine");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("0..=15"));
}
