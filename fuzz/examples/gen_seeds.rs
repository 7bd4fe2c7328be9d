//! Writes the seed corpora under fuzz/seeds/<target>/ (run from anywhere):
//!   cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds
//! Seeds are real inputs made with the real encoders, so the fuzzer starts
//! from valid segments, snapshots, records, bodies, tokens and admin lines.

use seckill_engine::replica::Replica;
use seckill_engine::wal::codec::Encoder;
use seckill_engine::wal::{segment, snapshot};
use seckill_engine::{Activity, Event, Order, Product};
use seckill_proto::{ActivityStatus, OrderId, OrderStatus};
use std::path::{Path, PathBuf};

fn events() -> Vec<Event> {
    let order = |n: u64, user: u64, shard: u16| Order {
        id: OrderId::first_at(1_760_000_000_000 + n, shard),
        user_id: user,
        activity_id: 1,
        quantity: 1,
        amount_cents: 999,
        status: OrderStatus::PendingPayment,
        created_at_ms: 1_760_000_000_000 + n,
        pay_before_ms: 1_760_000_900_000 + n,
        idempotency_key: n * 31,
        paid_txn: 0,
    };
    let o1 = order(1, 2, 0);
    let o2 = order(2, 3, 1);
    vec![
        Event::ProductCreated(Product {
            id: 1,
            name: "Phone".into(),
            description: "A phone".into(),
            image_url: "https://img.example/1.png".into(),
            price_cents: 99_900,
        }),
        Event::ActivityUpserted(Activity {
            id: 1,
            product_id: 1,
            product_name: "Phone".into(),
            title: "Black Friday phone".into(),
            price_cents: 999,
            terms: seckill_proto::SaleTerms {
                starts_at_ms: 1_760_000_000_000,
                ends_at_ms: 1_760_086_400_000,
                per_user_limit: 2,
                payment_timeout_s: 900,
                require_buy_token: true,
                gate_factor: 3,
            },
            status: ActivityStatus::Active,
        }),
        Event::StockAdded { activity_id: 1, amount: 100 },
        Event::QuotaSet { activity_id: 1, user_id: 5, limit: 4 },
        Event::OrderCreated(o1),
        Event::OrderCreated(o2),
        Event::OrderStatusChangedV1 {
            order_id: o1.id,
            user_id: 2,
            activity_id: 1,
            status: OrderStatus::Paid,
            at_ms: 1_760_000_010_000,
            txn: 77,
        },
        Event::OrderStatusChanged {
            order_id: o2.id,
            user_id: 3,
            activity_id: 1,
            from: OrderStatus::PendingPayment,
            status: OrderStatus::Expired,
            quantity: o2.quantity,
            amount_cents: o2.amount_cents,
            at_ms: 1_760_000_950_000,
            txn: 0,
        },
        Event::PaymentRefused { order_id: o2.id, amount_cents: 999, txn: 78, at_ms: 1_760_000_960_000 },
    ]
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let evs = events();

    // wal_segment: real segments, from LSN 1.
    let d = root.join("wal_segment");
    let mut enc = Encoder::default();
    let mut seg = segment::MAGIC.to_vec();
    for (i, ev) in evs.iter().enumerate() {
        enc.append(&mut seg, i as u64 + 1, ev);
    }
    write(&d, "all_events.wal", &seg);
    let mut one = segment::MAGIC.to_vec();
    enc.append(&mut one, 1, &evs[2]);
    write(&d, "one_stock_added.wal", &one);
    write(&d, "torn_tail.wal", &seg[..seg.len() - 5]);
    write(&d, "magic_only.wal", segment::MAGIC);

    // wal_codec: single records, and bare rkyv payloads (the target also
    // wraps its input in a record with a correct CRC).
    let d = root.join("wal_codec");
    for (i, ev) in evs.iter().enumerate() {
        let mut rec = Vec::new();
        enc.append(&mut rec, i as u64 + 1, ev);
        write(&d, &format!("record_{i}.bin"), &rec);
        write(&d, &format!("payload_{i}.bin"), &rec[16..]);
    }

    // snapshot: written by snapshot::write from a replica of the events.
    let d = root.join("snapshot");
    let mut replica = Replica::default();
    for (i, ev) in evs.iter().enumerate() {
        replica.apply(i as u64 + 1, ev).expect("seed events apply");
    }
    let tmp = std::env::temp_dir().join(format!("seckill-gen-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let path = snapshot::write(&tmp, &replica).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(snapshot::parse(&bytes).as_ref(), Some(&replica));
    write(&d, "full.snap", &bytes);
    let empty = snapshot::write(&tmp, &Replica { lsn: 5, ..Replica::default() }).unwrap();
    write(&d, "empty.snap", &std::fs::read(&empty).unwrap());
    std::fs::remove_dir_all(&tmp).unwrap();

    // front_http: first byte picks the parser.
    let d = root.join("front_http");
    let oid = OrderId::first_at(1_760_000_000_000, 1);
    let token = seckill_front::auth::Auth::new(b"k").issue(42, 10 * 365 * 86_400);
    let bt = seckill_front::buy_token::issue(b"k", 7, 3, 120_000);
    let seeds: Vec<(&str, u8, String)> = vec![
        ("buy_empty", 0, String::new()),
        ("buy_quantity", 0, r#"{"quantity":2}"#.into()),
        ("buy_token", 0, format!(r#"{{"quantity":1,"buy_token":"{bt}"}}"#)),
        ("page", 1, "offset=20&limit=50".into()),
        ("page_other", 1, "limit=1000&x=y&offset".into()),
        ("notify", 2, format!(r#"{{"order_id":"{oid}","amount_cents":999,"provider_txn_id":"txn-1"}}"#)),
        ("auth_valid", 3, format!("Bearer {token}")),
        ("auth_lower", 3, format!("bearer  {token} ")),
        ("buy_token_valid", 4, bt.clone()),
    ];
    for (name, which, body) in seeds {
        let mut b = vec![which];
        b.extend_from_slice(body.as_bytes());
        write(&d, name, &b);
    }

    // admin_line: one line per command, with plausible arguments.
    let d = root.join("admin_line");
    let lines = [
        r#"{"cmd":"product.create","args":{"name":"Phone","price_cents":99900,"description":"d","image_url":"https://x/1.png"}}"#,
        r#"{"cmd":"activity.create","args":{"product_id":1,"title":"BF","price_cents":999,"stock":10,"starts_at":"2026-11-25T10:00:00Z","ends_at":"2026-11-26T10:00:00Z","per_user_limit":2}}"#,
        r#"{"cmd":"activity.update","args":{"activity_id":1,"title":"BF2","gate_factor":3,"require_buy_token":true}}"#,
        r#"{"cmd":"activity.pause","args":{"activity_id":1}}"#,
        r#"{"cmd":"activity.resume","args":{"activity_id":1}}"#,
        r#"{"cmd":"activity.disable","args":{"activity_id":2}}"#,
        r#"{"cmd":"activity.list","args":{"offset":0,"limit":10}}"#,
        r#"{"cmd":"activity.show","args":{"activity_id":1}}"#,
        r#"{"cmd":"stock.add","args":{"activity_id":1,"amount":5}}"#,
        r#"{"cmd":"quota.set","args":{"activity_id":1,"user_id":9,"limit":3}}"#,
        r#"{"cmd":"order.show","args":{"order_id":"0199a1b2-c3d4-7001-8000-000000000001"}}"#,
        r#"{"cmd":"order.ship","args":{"order_id":"0199a1b2-c3d4-7001-8000-000000000001"}}"#,
        r#"{"cmd":"stats"}"#,
        r#"{"cmd":"warmup","args":{}}"#,
        r#"{"cmd":"snapshot"}"#,
        r#"{"cmd":"help"}"#,
    ];
    for (i, l) in lines.iter().enumerate() {
        write(&d, &format!("line_{i:02}"), l.as_bytes());
    }

    // The frame targets keep whatever seeds they have; nothing generated.
    println!("seeds written under {}", root.display());
}
