//! What the mirror keeps between batches: the catalog (products, activities
//! with the tokens ever added and the units held) and nothing per order or
//! per buyer. A status change carries what the mirror needs of its order
//! (quantity, amount, status before: `Event::OrderStatusChanged`), so no
//! batch reads anything from Redis, and buyers' units move by increments in
//! Redis. A resync builds the whole state transiently (snapshot + WAL) and
//! drops it.

use seckill_engine::replica::Replica;
use seckill_engine::{Activity, Event, Order, Product};
use seckill_proto::{OrderId, OrderStatus};
use std::collections::{BTreeMap, BTreeSet};

/// One activity as the mirror shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ActivityState {
    pub activity: Activity,
    /// Every token ever added.
    pub added: u64,
    /// Units held by pending, paid and shipped orders.
    pub held: u64,
}

impl ActivityState {
    /// (total stock, remaining)
    pub fn stock(&self) -> (u64, u64) {
        (self.added, self.added.saturating_sub(self.held))
    }
}

#[derive(Debug, Default)]
pub(crate) struct MirrorState {
    pub products: BTreeMap<u64, Product>,
    pub activities: BTreeMap<u64, ActivityState>,
}

impl MirrorState {
    pub fn from_replica(r: &Replica) -> Self {
        let held = r.held_by_activity();
        Self {
            products: r.products.clone(),
            activities: r
                .activities
                .iter()
                .map(|(id, (a, added))| {
                    let held = held.get(id).copied().unwrap_or(0);
                    (*id, ActivityState { activity: a.clone(), added: *added, held })
                })
                .collect(),
        }
    }
}

/// One batch of records planned against the state before it: what to
/// write to Redis, and the activities and products as they are after it
/// (applied to the state only once Redis has the batch).
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub products: BTreeMap<u64, Product>,
    pub activities: BTreeMap<u64, ActivityState>,
    /// Orders created in the batch, as they are at its end (one full HSET;
    /// only with order hashes).
    pub created: BTreeMap<OrderId, Order>,
    /// Orders created before the batch whose status changed: the new status
    /// (only with order hashes).
    pub changed: BTreeMap<OrderId, OrderStatus>,
    /// (activity, user) → change of units held (an increment in Redis).
    pub purchased: BTreeMap<u64, BTreeMap<u64, i64>>,
}

impl Plan {
    /// Activities whose hash must be rewritten (stock or configuration).
    pub fn touched_activities(&self) -> BTreeSet<u64> {
        self.activities.keys().copied().collect()
    }
}

/// Plans `records` against `state`; `order_hashes`: whether orders get
/// hashes (else `created` and `changed` stay empty).
pub(crate) fn plan(state: &MirrorState, records: &[(u64, Event)], order_hashes: bool) -> Result<Plan, String> {
    let mut p = Plan::default();
    fn act<'a>(p: &'a mut Plan, state: &MirrorState, id: u64) -> Option<&'a mut ActivityState> {
        match p.activities.entry(id) {
            std::collections::btree_map::Entry::Occupied(e) => Some(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(e) => Some(e.insert(state.activities.get(&id)?.clone())),
        }
    }
    for (lsn, ev) in records {
        match ev {
            Event::ProductCreated(prod) => {
                p.products.insert(prod.id, prod.clone());
            }
            Event::ActivityUpserted(a) => match act(&mut p, state, a.id) {
                Some(s) => s.activity = a.clone(),
                None => {
                    p.activities.insert(a.id, ActivityState { activity: a.clone(), added: 0, held: 0 });
                }
            },
            Event::StockAdded { activity_id, amount } => {
                let s = act(&mut p, state, *activity_id)
                    .ok_or_else(|| format!("LSN {lsn} adds stock to unknown activity {activity_id}"))?;
                s.added = s.added.saturating_add(*amount);
            }
            Event::QuotaSet { .. } | Event::PaymentRefused { .. } => {}
            Event::OrderCreated(o) => {
                if o.status.holds_stock() {
                    let s = act(&mut p, state, o.activity_id)
                        .ok_or_else(|| format!("LSN {lsn}: order {} of unknown activity {}", o.id, o.activity_id))?;
                    s.held = s.held.saturating_add(u64::from(o.quantity));
                    *p.purchased.entry(o.activity_id).or_default().entry(o.user_id).or_default() +=
                        i64::from(o.quantity);
                }
                if order_hashes {
                    p.created.insert(o.id, *o);
                }
            }
            Event::OrderStatusChanged { order_id, user_id, activity_id, from, status, quantity, txn, .. } => {
                let delta = from.held_delta(*status, *quantity);
                if delta != 0 {
                    let s = act(&mut p, state, *activity_id)
                        .ok_or_else(|| format!("LSN {lsn}: order {order_id} of unknown activity {activity_id}"))?;
                    s.held = s.held.saturating_add_signed(delta);
                    *p.purchased.entry(*activity_id).or_default().entry(*user_id).or_default() += delta;
                }
                if !order_hashes {
                    continue;
                }
                match p.created.get_mut(order_id) {
                    Some(o) => {
                        o.status = *status;
                        if *status == OrderStatus::Paid {
                            o.paid_txn = *txn;
                        }
                    }
                    None => {
                        p.changed.insert(*order_id, *status);
                    }
                }
            }
            // Only logs written before 2026-12-07 have these, and they are
            // behind the resync every mirror starts with.
            Event::OrderStatusChangedV1 { order_id, .. } => {
                return Err(format!(
                    "LSN {lsn} changes order {order_id} in the form logged before 2026-12-07 \
                     (without its quantity and status before)"
                ));
            }
        }
    }
    for buyers in p.purchased.values_mut() {
        buyers.retain(|_, d| *d != 0);
    }
    p.purchased.retain(|_, b| !b.is_empty());
    Ok(p)
}

impl MirrorState {
    /// The batch is in Redis: take its activities and products.
    pub fn commit(&mut self, plan: &Plan) {
        for (id, prod) in &plan.products {
            self.products.insert(*id, prod.clone());
        }
        for (id, a) in &plan.activities {
            self.activities.insert(*id, a.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{change, order};

    fn activity(id: u64) -> Activity {
        Activity {
            id,
            product_id: 0,
            product_name: String::new(),
            title: "t".into(),
            price_cents: 100,
            terms: seckill_proto::SaleTerms {
                starts_at_ms: 0,
                ends_at_ms: u64::MAX / 2,
                per_user_limit: 2,
                payment_timeout_s: 60,
                require_buy_token: false,
                gate_factor: 5,
            },
            status: seckill_proto::ActivityStatus::Active,
        }
    }

    #[test]
    fn a_batch_moves_counters_from_the_records_alone() {
        let mut state = MirrorState::default();
        state.activities.insert(1, ActivityState { activity: activity(1), added: 10, held: 3 });
        let old = order(1, 7, 3);
        let (a, b) = (order(2, 10, 2), order(3, 11, 1));
        let recs = vec![
            (5, Event::OrderCreated(a)),
            (6, Event::OrderCreated(b)),
            (7, change(&a, OrderStatus::Cancelled)),
            (8, change(&b, OrderStatus::Paid)),
            (9, change(&old, OrderStatus::Expired)),
        ];
        let p = plan(&state, &recs, true).expect("plan");
        assert_eq!(p.activities[&1].stock(), (10, 10 - 1), "only b holds: 3 + 2 + 1 - 2 - 3");
        assert_eq!(p.purchased[&1].get(&10), None, "user 10 gave back what they took");
        assert_eq!(p.purchased[&1][&11], 1);
        assert_eq!(p.purchased[&1][&7], -3, "from the record's quantity and status before");
        assert_eq!(p.created[&a.id].status, OrderStatus::Cancelled);
        assert_eq!(p.created[&b.id].paid_txn, 9);
        assert_eq!(p.changed[&old.id], OrderStatus::Expired);
        assert_eq!(state.activities[&1].held, 3, "the state moves only on commit");

        let bare = plan(&state, &recs, false).expect("plan");
        assert!(bare.created.is_empty() && bare.changed.is_empty(), "no order hashes to write");
        assert_eq!((bare.purchased, bare.activities), (p.purchased.clone(), p.activities.clone()));
        state.commit(&p);
        assert_eq!(state.activities[&1].held, 1);

        let v1 = Event::OrderStatusChangedV1 {
            order_id: old.id,
            user_id: 7,
            activity_id: 1,
            status: OrderStatus::Paid,
            at_ms: 1,
            txn: 1,
        };
        assert!(plan(&state, &[(10, v1)], false).unwrap_err().contains("before 2026-12-07"));
    }
}
