//! The engine on a replica group, in one process: the leader's shards
//! commit through the replicator (`Sink::Replicated`), answers come only
//! after a majority has the entry, and when the leader goes, a follower
//! takes the lead with every acknowledged order and no unit oversold.

mod common;

use common::{Group, PATIENCE};
use seckill_engine::{ActivitySpec, Engine, EngineConfig, SystemClock};
use seckill_proto::{ErrorCode, OrderId, Request, Response};
use seckill_replica::{lead, Leading};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const IDS: [u64; 3] = [1, 2, 3];
const STOCK: u64 = 150;
const USERS: u64 = 120;
const LIMIT: u32 = 2;

fn config() -> EngineConfig {
    EngineConfig { shards: 2, ..EngineConfig::default() }
}

async fn lead_on(g: &Group, id: u64, stepped_down: Arc<AtomicBool>) -> Leading {
    let on_step_down = Arc::new(move |_: &str| stepped_down.store(true, Ordering::Release));
    lead(&g.nodes[&id], config(), Arc::new(SystemClock), PATIENCE, on_step_down).await.expect("the leader leads")
}

/// Creates an activity of `STOCK` units, `LIMIT` per buyer, open from the
/// epoch for ages, through the leader's `engine`: its id.
fn open_sale(engine: &Engine, title: &str) -> u64 {
    let mut spec = ActivitySpec::new(title.into(), 100, STOCK, 0, u64::MAX / 2);
    spec.terms.per_user_limit = LIMIT;
    tokio::task::block_in_place(|| engine.create_activity(spec)).expect("activity created").id
}

/// Buys from `users` (one at a time, from a blocking thread); the orders
/// acknowledged, and how many got `busy` (their outcome is unknown: a box
/// paused long enough for an election makes some).
async fn buy(engine: Arc<Engine>, activity_id: u64, users: std::ops::Range<u64>) -> (BTreeMap<OrderId, u64>, u64) {
    tokio::task::spawn_blocking(move || {
        let mut acked = BTreeMap::new();
        let mut busy = 0;
        for user_id in users {
            for _ in 0..2 {
                let req = Request::Buy { user_id, activity_id, quantity: 1, idempotency_key: 0, buy_token_ok: false };
                match engine.call(req) {
                    Response::Order(o) => {
                        assert!(acked.insert(o.order_id, user_id).is_none(), "order {} answered twice", o.order_id);
                    }
                    Response::Error(ErrorCode::Busy) => {
                        busy += 1;
                    }
                    Response::Error(ErrorCode::SoldOut | ErrorCode::LimitReached) => {}
                    other => panic!("unexpected answer to a buy: {other:?}"),
                }
            }
        }
        (acked, busy)
    })
    .await
    .expect("buyer thread")
}

/// Every order in `acked` is on `engine` (leading on `g.nodes[id]`), and
/// its activity is not oversold: the units the group's orders hold and the
/// engine's remaining stock add up to the stock.
fn check(g: &Group, id: u64, engine: &Engine, activity_id: u64, acked: &BTreeMap<OrderId, u64>) {
    for (id, user_id) in acked {
        match engine.call(Request::GetOrder { user_id: Some(*user_id), order_id: *id }) {
            Response::Order(o) => assert_eq!(o.user_id, *user_id),
            other => panic!("acknowledged order {id} is missing on the new leader: {other:?}"),
        }
    }
    let a = engine.activity(activity_id).expect("the activity");
    let held = g.nodes[&id].state().with_state(|s| s.replica().held_by_activity().get(&activity_id).copied());
    let held = held.unwrap_or(0);
    assert!(held <= a.total_stock, "oversold: {held} held of {}", a.total_stock);
    assert_eq!(held + a.remaining, a.total_stock, "tokens not conserved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_serves_every_acknowledged_order() {
    let mut g = Group::start(&IDS).await;
    let (leader, _) = g.leader().await;
    let down = Arc::new(AtomicBool::new(false));
    let leading = lead_on(&g, leader, down.clone()).await;
    let engine = leading.engine.clone();
    let activity_id = open_sale(&engine, "r");
    let (mut acked, mut busy) = buy(engine.clone(), activity_id, 1..USERS / 2).await;
    assert!(!acked.is_empty(), "nothing was sold");
    tokio::task::block_in_place(|| check(&g, leader, &engine, activity_id, &acked));

    // Every acknowledged record is on a majority: the followers applied
    // them (or have them in their logs and apply them soon).
    let lsn = g.nodes[&leader].state().last_lsn().load(Ordering::Acquire);
    assert!(lsn >= acked.len() as u64, "the leader applied LSN {lsn} for {} orders", acked.len());

    // The leader goes; its engine must not answer any more.
    drop(engine);
    g.kill(leader).await;
    tokio::task::block_in_place(|| leading.stop());
    let (new_leader, new_lsn) = g.leader().await;
    assert_ne!(new_leader, leader);
    assert!(new_lsn >= lsn, "the new leader is at LSN {new_lsn}, below the acknowledged {lsn}");
    let leading = lead_on(&g, new_leader, Arc::new(AtomicBool::new(false))).await;
    let engine = leading.engine.clone();
    tokio::task::block_in_place(|| check(&g, new_leader, &engine, activity_id, &acked));

    // It sells on from where the group was: the rest of the stock, no more.
    let (more, more_busy) = buy(engine.clone(), activity_id, USERS / 2..USERS + 1).await;
    acked.extend(more);
    busy += more_busy;
    tokio::task::block_in_place(|| check(&g, new_leader, &engine, activity_id, &acked));
    let sold: u64 = acked.len() as u64;
    assert!(sold <= STOCK, "{sold} units sold of {STOCK}");
    let remaining = engine.activity(activity_id).expect("activity").remaining;
    if busy == 0 {
        assert_eq!(remaining, STOCK - sold, "units held by orders nobody was answered");
    }

    // The old leader rejoins as a follower and reaches the same state.
    g.restart(leader).await;
    let last = g.nodes[&new_leader].state().last_lsn().load(Ordering::Acquire);
    g.wait_applied(leader, last).await;
    let theirs = g.nodes[&new_leader].state().with_state(|s| s.replica().clone());
    let mine = g.nodes[&leader].state().with_state(|s| s.replica().clone());
    assert_eq!(mine, theirs, "the old leader diverged from the group");
    if busy == 0 {
        assert_eq!(mine.orders.len(), acked.len(), "the group's state has other orders than those acknowledged");
    }
    drop(engine);
    tokio::task::block_in_place(|| leading.stop());
    for id in IDS {
        g.kill(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_answers_busy_and_steps_down() {
    let g = Group::start_proxied(&IDS).await;
    let (leader, _) = g.leader().await;
    let down = Arc::new(AtomicBool::new(false));
    let leading = lead_on(&g, leader, down.clone()).await;
    let engine = leading.engine.clone();
    let activity_id = open_sale(&engine, "p");
    let (before, _) = buy(engine.clone(), activity_id, 1..10).await;
    assert!(!before.is_empty());

    // Cut off from both followers, the leader's buys cannot commit: no
    // order is acknowledged; they wait, then get `busy` once it steps down.
    g.isolate(leader);
    let (minority, _) = buy(engine.clone(), activity_id, 10..12).await;
    assert!(minority.is_empty(), "a leader in the minority acknowledged {minority:?}");
    assert!(down.load(Ordering::Acquire) && leading.stepped_down(), "the cut-off leader did not step down");
    let others: Vec<u64> = IDS.iter().copied().filter(|id| *id != leader).collect();
    let (new_leader, _) = g.leader_among(&others).await;
    let leading2 = lead_on(&g, new_leader, Arc::new(AtomicBool::new(false))).await;
    tokio::task::block_in_place(|| check(&g, new_leader, &leading2.engine, activity_id, &before));
    g.heal();
    drop(engine);
    tokio::task::block_in_place(|| leading.stop());
    tokio::task::block_in_place(|| leading2.stop());
}

/// What a front's retry after a failover relies on: a buy's idempotency
/// key travels with its order in the group's log, so the new leader answers
/// the same key from the same user with the order the old leader made
/// (`Replayed`), not `limit_reached` nor a second order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_used_on_the_old_leader_replays_on_the_new_one() {
    let mut g = Group::start(&IDS).await;
    let (leader, _) = g.leader().await;
    let leading = lead_on(&g, leader, Arc::new(AtomicBool::new(false))).await;
    let engine = leading.engine.clone();
    // Limit 1: a retry the new leader did not recognise would be refused.
    let mut spec = ActivitySpec::new("k".into(), 100, STOCK, 0, u64::MAX / 2);
    spec.terms.per_user_limit = 1;
    let activity_id = tokio::task::block_in_place(|| engine.create_activity(spec)).expect("activity created").id;
    let buy = |user_id: u64, key: u64| Request::Buy {
        user_id,
        activity_id,
        quantity: 1,
        idempotency_key: key,
        buy_token_ok: false,
    };
    let first: BTreeMap<u64, OrderId> = tokio::task::block_in_place(|| {
        (1..=20u64)
            .map(|u| match engine.call(buy(u, 0xfeed_0000 + u)) {
                Response::Order(o) => (u, o.order_id),
                other => panic!("user {u}'s first buy: {other:?}"),
            })
            .collect()
    });

    drop(engine);
    g.kill(leader).await;
    tokio::task::block_in_place(|| leading.stop());
    let (new_leader, _) = g.leader().await;
    let leading = lead_on(&g, new_leader, Arc::new(AtomicBool::new(false))).await;
    let engine = leading.engine.clone();
    tokio::task::block_in_place(|| {
        for (u, id) in &first {
            match engine.call(buy(*u, 0xfeed_0000 + u)) {
                Response::Replayed(o) => assert_eq!(o.order_id, *id, "user {u}'s retry answered another order"),
                other => panic!("user {u}'s retry on the new leader: {other:?} instead of its order {id}"),
            }
            // Another key is another buy: over the limit.
            assert_eq!(engine.call(buy(*u, 1)), Response::Error(ErrorCode::LimitReached));
        }
    });
    let a = tokio::task::block_in_place(|| engine.activity(activity_id)).expect("activity");
    assert_eq!(a.remaining, STOCK - first.len() as u64, "a retry took stock");
    drop(engine);
    tokio::task::block_in_place(|| leading.stop());
    for id in IDS.into_iter().filter(|id| *id != leader) {
        g.kill(id).await;
    }
}
