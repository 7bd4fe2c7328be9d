//! Attacks on the engine's wire socket (docs/SECURITY.md), against a real
//! `seckill engine`: a peer without the secret gets nothing, a peer with it
//! still cannot do the operator's work, and the sockets are private.

mod common;

use common::EngineProc;
use seckill_proto::handshake::{WireKey, HELLO_BYTES};
use seckill_proto::Address;
use seckill_proto::{encode_request, ErrorCode, Request, Response};
use seckill_server::client::Pool;
use serde_json::json;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn engine() -> (tempfile::TempDir, EngineProc, u64) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let engine = EngineProc::start(&dir, &[]);
    let id = engine.create_activity(json!({"title": "wire", "price_cents": 100, "stock": 10,
                   "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z"}));
    (tmp, engine, id)
}

fn remaining(engine: &EngineProc, activity_id: u64) -> u64 {
    let a = engine.admin("activity.show", json!({"activity_id": activity_id})).expect("activity.show");
    a["remaining"].as_u64().expect("remaining")
}

fn buy(user_id: u64, activity_id: u64) -> Request {
    Request::Buy { user_id, activity_id, quantity: 1, idempotency_key: 0, buy_token_ok: true }
}

/// Reads until the engine closes the connection (or 10 s pass).
fn read_to_close(s: &mut UnixStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

#[test]
fn a_peer_without_the_secret_gets_nothing() {
    let (_tmp, engine, act) = engine();
    let sock = engine.data_dir.join("engine.sock");

    // Frames straight away, as the old protocol allowed: the engine reads
    // them as a wrong proof and closes; the buys never reach a shard.
    let mut frames = Vec::new();
    for user in 1..=5 {
        encode_request(&mut frames, user, &buy(user, act));
    }
    let mut s = UnixStream::connect(&sock).expect("connect");
    let _ = s.write_all(&frames);
    let got = read_to_close(&mut s);
    assert_eq!(got.len(), HELLO_BYTES, "only the hello came back, no answers");

    // A proof made with another secret.
    let wrong = WireKey::derive(b"not the deployment's secret, 32 bytes+");
    let mut s = UnixStream::connect(&sock).expect("connect");
    let mut hello = [0u8; HELLO_BYTES];
    s.read_exact(&mut hello).expect("hello");
    s.write_all(&wrong.proof(&hello).expect("a hello")).expect("proof");
    let _ = s.write_all(&frames);
    assert!(read_to_close(&mut s).is_empty(), "no answer after a wrong proof");

    // The blocking client with the wrong key cannot call either.
    let addr = Address::Unix(sock.clone());
    if let Ok(pool) = Pool::connect(&addr, 1, &wrong) {
        assert!(pool.call(&buy(9, act)).is_err(), "a wrong key was served");
    }
    assert_eq!(remaining(&engine, act), 10, "nothing was bought");
}

#[test]
fn operator_requests_are_refused_on_the_wire() {
    let (_tmp, engine, act) = engine();
    let addr = Address::Unix(engine.data_dir.join("engine.sock"));
    let pool = Pool::connect(&addr, 1, &common::wire_key()).expect("connect");
    let Response::Order(o) = pool.call(&buy(1, act)).expect("buy") else { panic!("the front's requests still work") };
    let refused = [
        Request::Ship { order_id: o.order_id },
        Request::Expire { order_id: o.order_id },
        Request::SetQuota { activity_id: act, user_id: 2, limit: 100 },
        Request::GetOrder { user_id: None, order_id: o.order_id },
    ];
    for req in refused {
        assert_eq!(pool.call(&req).expect("an answer"), Response::Error(ErrorCode::Unauthorized), "{req:?}");
    }
    // The order is as it was, and the owner still reads it.
    match pool.call(&Request::GetOrder { user_id: Some(1), order_id: o.order_id }).expect("read") {
        Response::Order(again) => assert_eq!(again, o),
        other => panic!("{other:?}"),
    }
    assert_eq!(remaining(&engine, act), 9);
}

#[test]
fn engine_sockets_are_private_to_their_user() {
    let (_tmp, engine, _) = engine();
    for name in ["engine.sock", "admin.sock"] {
        let mode = std::fs::metadata(engine.data_dir.join(name)).expect("socket").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} is {mode:o}");
    }
}
