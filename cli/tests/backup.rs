//! The live backup procedure of docs/OPERATIONS.md (`scripts/backup`), run
//! against an engine under load with segments small enough to rotate many
//! times a second: every copy must start, hold every order acknowledged
//! before the backup began, and conserve stock.

mod common;

use common::{bin, EngineProc};
use seckill_proto::Address;
use seckill_proto::{OrderId, Request, Response};
use seckill_server::client::Pool;
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const STOCK: u64 = 1_000_000;

fn engine_args() -> Vec<&'static str> {
    vec!["--shards", "2", "--snapshot-every", "300", "--wal-segment-bytes", "4096"]
}

#[test]
fn a_live_backup_while_segments_rotate_starts_and_holds_every_earlier_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).expect("data dir");
    let engine = EngineProc::start(&dir, &engine_args());
    let activity_id = engine
        .create_activity(json!({"title": "backup", "price_cents": 100, "stock": STOCK, "per_user_limit": 1,
                   "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z"}));
    let pool =
        Arc::new(Pool::connect(&Address::Unix(dir.join("engine.sock")), 2, &common::wire_key()).expect("connect"));

    let stop = Arc::new(AtomicBool::new(false));
    let next_user = Arc::new(AtomicU64::new(1));
    let acked: Arc<Mutex<Vec<(OrderId, u64)>>> = Arc::default();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (pool, stop, next_user, acked) = (pool.clone(), stop.clone(), next_user.clone(), acked.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let user_id = next_user.fetch_add(1, Ordering::Relaxed);
                    let req =
                        Request::Buy { user_id, activity_id, quantity: 1, idempotency_key: 0, buy_token_ok: false };
                    if let Ok(Response::Order(o)) = pool.call(&req) {
                        acked.lock().expect("acked").push((o.order_id, user_id));
                    }
                }
            })
        })
        .collect();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/backup");
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(400));
        let before: Vec<(OrderId, u64)> = acked.lock().expect("acked").clone();
        let dest = tmp.path().join(format!("copy{round}"));
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .arg(&dest)
            .env("SECKILL_BIN", bin())
            .output()
            .expect("run scripts/backup");
        assert!(out.status.success(), "scripts/backup failed: {}", String::from_utf8_lossy(&out.stderr));
        let segments = std::fs::read_dir(dest.join("wal")).expect("copied wal").count();

        // The copy must start (EngineProc::start panics if it exits).
        let copy = EngineProc::start(&dest, &engine_args());
        let cp = Pool::connect(&Address::Unix(dest.join("engine.sock")), 1, &common::wire_key())
            .expect("connect to the copy");
        for (order_id, user_id) in &before {
            let got = cp.call(&Request::GetOrder { user_id: Some(*user_id), order_id: *order_id }).expect("get order");
            assert!(
                matches!(got, Response::Order(_)),
                "round {round}: order {order_id} acknowledged before the backup is missing from it: {got:?}"
            );
        }
        let Response::Activity(a) = cp.call(&Request::GetActivity { activity_id }).expect("activity") else {
            panic!("round {round}: the activity is missing from the copy");
        };
        let held = STOCK - a.remaining;
        assert!(
            held >= before.len() as u64,
            "round {round}: {held} held in the copy, {} acknowledged before",
            before.len()
        );
        assert!(held <= next_user.load(Ordering::Relaxed), "round {round}: more units held than buys sent");
        eprintln!(
            "backup round {round}: {} orders before, {held} in the copy, {segments} segments copied",
            before.len()
        );
        drop(cp);
        drop(copy);
    }
    stop.store(true, Ordering::Release);
    for w in workers {
        w.join().expect("worker");
    }
    let rotations = std::fs::read_dir(dir.join("snapshots")).map(|d| d.count()).unwrap_or(0);
    assert!(
        acked.lock().expect("acked").len() > 300,
        "the load was too light to rotate segments ({rotations} snapshots)"
    );
}
