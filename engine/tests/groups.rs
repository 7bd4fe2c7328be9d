//! An engine of a group other than 0 (docs/REPLICATION.md, "Activities over
//! groups"): every id it issues names its group, ids of other groups are
//! not its own, and its data dir stays its group's.

use seckill_engine::node::{Node, NodeConfig, NodeError};
use seckill_engine::{EngineConfig, ManualClock};
use seckill_proto::group::id_range;
use seckill_proto::{ErrorCode, OrderId, OrderView, Request, Response};
use std::sync::Arc;

mod common;

use common::{spec, T0};

fn cfg(dir: &std::path::Path, group: u8) -> NodeConfig {
    let mut c = NodeConfig::new(dir);
    c.engine = EngineConfig { shards: 2, queue_capacity: 64, group, ..EngineConfig::default() };
    c
}

fn buy(node: &Node, user_id: u64, activity_id: u64) -> OrderView {
    match node.engine.call(Request::Buy { user_id, activity_id, quantity: 1, idempotency_key: 0, buy_token_ok: false })
    {
        Response::Order(o) => o,
        other => panic!("user {user_id}: {other:?}"),
    }
}

#[test]
fn a_group_issues_ids_in_its_range_and_its_data_dir_stays_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(T0));
    let (activity_id, orders) = {
        let node = Node::open(cfg(dir.path(), 3), clock.clone()).expect("open group 3");
        assert_eq!(node.engine.group(), 3);
        let p = node.engine.create_product("p".into(), String::new(), String::new(), 1).expect("product");
        assert_eq!(p.id, *id_range(3).start(), "a product id names the group");
        let a = node.engine.create_activity(spec(10)).expect("activity");
        assert_eq!(a.id, *id_range(3).start(), "an activity id names the group");
        let orders: Vec<OrderView> = (1..=4).map(|u| buy(&node, u, a.id)).collect();
        for o in &orders {
            assert_eq!(o.order_id.group(), 3, "{}", o.order_id);
            let mine = node.engine.call(Request::GetOrder { user_id: Some(o.user_id), order_id: o.order_id });
            assert_eq!(mine, Response::Order(*o));
            // The same shard and sequence under group 0 is not this engine's.
            let foreign = OrderId(o.order_id.0 & !(0xf00u128 << 64));
            assert_eq!((foreign.group(), foreign.shard()), (0, o.order_id.shard()));
            let other = node.engine.call(Request::GetOrder { user_id: Some(o.user_id), order_id: foreign });
            assert_eq!(other, Response::Error(ErrorCode::OrderNotFound));
        }
        // A chosen id outside the group's range is refused.
        let err = node.engine.create_activity_as(Some(99), spec(1)).expect_err("group 0's id on group 3");
        assert_eq!(err.code, ErrorCode::BadRequest);
        node.shutdown();
        (a.id, orders)
    };
    let meta = std::fs::read_to_string(dir.path().join("engine.meta")).expect("engine.meta");
    assert_eq!(meta, "shards=2\ngroup=3\n");
    {
        let node = Node::open(cfg(dir.path(), 3), clock.clone()).expect("reopen group 3");
        for o in &orders {
            let got = node.engine.call(Request::GetOrder { user_id: Some(o.user_id), order_id: o.order_id });
            assert_eq!(got, Response::Order(*o), "recovered into its shard");
        }
        let next = buy(&node, 9, activity_id);
        assert_eq!(next.order_id.group(), 3);
        assert!(orders.iter().all(|o| o.order_id != next.order_id));
        let b = node.engine.create_activity(spec(1)).expect("second activity");
        assert_eq!(b.id, activity_id + 1);
        node.shutdown();
    }
    match Node::open(cfg(dir.path(), 0), clock.clone()) {
        Err(NodeError::Group { found: 3, wanted: 0, .. }) => {}
        Err(e) => panic!("wrong refusal: {e}"),
        Ok(_) => panic!("group 3's data dir opened as group 0"),
    }
    // Without engine.meta, the state itself says whose it is.
    std::fs::remove_file(dir.path().join("engine.meta")).expect("rm engine.meta");
    match Node::open(cfg(dir.path(), 0), clock) {
        Err(NodeError::Inconsistent(m)) => assert!(m.contains("group 3"), "{m}"),
        Err(e) => panic!("wrong refusal: {e}"),
        Ok(_) => panic!("group 3's state opened as group 0"),
    }
}

#[test]
fn group_zero_keeps_the_ids_and_the_meta_file_it_had_before_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(cfg(dir.path(), 0), Arc::new(ManualClock::new(T0))).expect("open");
    let a = node.engine.create_activity(spec(1)).expect("activity");
    assert_eq!(a.id, 1);
    let o = buy(&node, 1, a.id);
    let shard = seckill_engine::shard_of_user(1, 2) as u16;
    assert_eq!(o.order_id, OrderId::first_at(T0, shard), "the first id of its shard at T0, as before groups");
    node.shutdown();
    drop(node);
    assert_eq!(std::fs::read_to_string(dir.path().join("engine.meta")).expect("meta"), "shards=2\n");
}

#[test]
fn a_state_with_another_groups_activity_is_refused_without_engine_meta() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(T0));
    {
        let node = Node::open(cfg(dir.path(), 4), clock.clone()).expect("open group 4");
        node.engine.create_activity(spec(1)).expect("activity, and no order");
        node.shutdown();
    }
    std::fs::remove_file(dir.path().join("engine.meta")).expect("rm engine.meta");
    match Node::open(cfg(dir.path(), 0), clock) {
        Err(NodeError::Inconsistent(m)) => assert!(m.contains("group 4"), "{m}"),
        Err(e) => panic!("wrong refusal: {e}"),
        Ok(_) => panic!("group 4's activity opened as group 0's"),
    }
}
