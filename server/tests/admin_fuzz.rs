//! The admin protocol under arbitrary input: every line gets a JSON answer
//! (ok or a clear error), never a panic, and garbage changes nothing.

use proptest::prelude::*;
use seckill_engine::node::{Node, NodeConfig};
use seckill_engine::{EngineConfig, SystemClock};
use seckill_server::admin::{handle_line, AdminCtx};
use std::sync::Arc;

fn ctx(dir: &std::path::Path) -> (Node, AdminCtx) {
    let mut cfg = NodeConfig::new(dir);
    cfg.engine = EngineConfig { shards: 2, queue_capacity: 64, ..EngineConfig::default() };
    let node = Node::open(cfg, Arc::new(SystemClock)).expect("open");
    let ctx = AdminCtx::of_node(&node);
    (node, ctx)
}

const COMMANDS: &[&str] = &[
    "product.create",
    "activity.create",
    "activity.update",
    "activity.pause",
    "activity.resume",
    "activity.disable",
    "activity.list",
    "activity.show",
    "stock.add",
    "quota.set",
    "order.show",
    "order.ship",
    "stats",
    "warmup",
    "nope",
];

fn json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "[a-zA-Z0-9 :.-]{0,30}".prop_map(|s| format!("\"{s}\"")),
        Just("\"2026-11-25T10:00:00Z\"".to_string()),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
    ]
}

fn args() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("title"),
        Just("price_cents"),
        Just("stock"),
        Just("starts_at"),
        Just("ends_at"),
        Just("activity_id"),
        Just("user_id"),
        Just("limit"),
        Just("amount"),
        Just("order_id"),
        Just("name"),
        Just("per_user_limit"),
        Just("offset"),
        Just("zzz"),
    ];
    proptest::collection::vec((key, json_value()), 0..6).prop_map(|kv| {
        let fields: Vec<String> = kv.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", fields.join(","))
    })
}

#[test]
fn arbitrary_lines_get_answers_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_node, ctx) = ctx(dir.path());
    let mut runner =
        proptest::test_runner::TestRunner::new(ProptestConfig { cases: 1_500, ..ProptestConfig::default() });
    let line = prop_oneof![
        "\\PC{0,120}",
        (proptest::sample::select(COMMANDS), args()).prop_map(|(c, a)| format!("{{\"cmd\":\"{c}\",\"args\":{a}}}")),
    ];
    runner
        .run(&line, |l| {
            let (reply, shutdown) = handle_line(&ctx, &l);
            prop_assert!(!shutdown);
            let ok = reply["ok"].as_bool();
            prop_assert!(ok.is_some(), "no ok field: {reply}");
            if ok == Some(false) {
                prop_assert!(reply["error"]["code"].is_string() && reply["error"]["message"].is_string(), "{reply}");
            }
            Ok(())
        })
        .expect("admin protocol property");
    // The engine is still alive and consistent after all that.
    let (stats, _) = handle_line(&ctx, r#"{"cmd":"stats"}"#);
    assert_eq!(stats["ok"], true, "{stats}");
}
