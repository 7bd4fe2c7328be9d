//! The whole engine state as one plain value, rebuilt by applying events in
//! log order. Recovery builds one (snapshot + WAL), the snapshot thread keeps
//! one current, and `into_parts` turns it into a catalog and shard states.

use crate::activity::{Activity, Product};
use crate::engine::{shard_of_user, Catalog};
use crate::event::Event;
use crate::order::Order;
use crate::shard::ShardState;
use crate::stock::StockPool;
use seckill_proto::OrderId;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The whole state as the log describes it, rebuilt by applying events in
/// LSN order: what recovery, snapshots and consumers' resyncs start from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replica {
    /// The LSN of the last event applied.
    pub lsn: u64,
    pub products: BTreeMap<u64, Product>,
    /// Each activity with every token ever added to it.
    pub activities: BTreeMap<u64, (Activity, u64)>,
    pub orders: HashMap<OrderId, Order>,
    pub quotas: BTreeMap<(u64, u64), u32>,
    /// Refused payments (order, transaction hash) with what was refused, so
    /// a replay of one is not recorded again after a restart.
    pub refused: BTreeMap<(OrderId, u64), (u64, u64)>,
}

/// An event that cannot follow the state it is applied to (a damaged or
/// misordered log).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplicaError {
    #[error("event at LSN {lsn} does not follow LSN {last}")]
    OutOfOrder { lsn: u64, last: u64 },
    #[error("event at LSN {lsn} names unknown order {order_id}")]
    UnknownOrder { lsn: u64, order_id: OrderId },
    #[error("event at LSN {lsn} names unknown activity {activity_id}")]
    UnknownActivity { lsn: u64, activity_id: u64 },
    #[error("order {order_id} appears twice (LSN {lsn})")]
    DuplicateOrder { lsn: u64, order_id: OrderId },
    #[error("order {order_id} at LSN {lsn} has quantity 0")]
    EmptyOrder { lsn: u64, order_id: OrderId },
}

impl Replica {
    /// Applies one event. A log that breaks the rules is an error, never a
    /// panic: recovery reports it and stops.
    pub fn apply(&mut self, lsn: u64, event: &Event) -> Result<(), ReplicaError> {
        if lsn <= self.lsn && self.lsn != 0 {
            return Err(ReplicaError::OutOfOrder { lsn, last: self.lsn });
        }
        match event {
            Event::ProductCreated(p) => {
                self.products.insert(p.id, p.clone());
            }
            Event::ActivityUpserted(a) => {
                let added = self.activities.get(&a.id).map_or(0, |(_, n)| *n);
                self.activities.insert(a.id, (a.clone(), added));
            }
            Event::StockAdded { activity_id, amount } => {
                let (_, added) = self
                    .activities
                    .get_mut(activity_id)
                    .ok_or(ReplicaError::UnknownActivity { lsn, activity_id: *activity_id })?;
                *added += amount;
            }
            Event::QuotaSet { activity_id, user_id, limit } => {
                self.quotas.insert((*activity_id, *user_id), *limit);
            }
            Event::OrderCreated(o) => {
                // The engine never makes one; a log that has one was not written by it.
                if o.quantity == 0 {
                    return Err(ReplicaError::EmptyOrder { lsn, order_id: o.id });
                }
                if self.orders.insert(o.id, *o).is_some() {
                    return Err(ReplicaError::DuplicateOrder { lsn, order_id: o.id });
                }
            }
            Event::OrderStatusChanged { order_id, status, txn, .. }
            | Event::OrderStatusChangedV1 { order_id, status, txn, .. } => {
                let o = self.orders.get_mut(order_id).ok_or(ReplicaError::UnknownOrder { lsn, order_id: *order_id })?;
                o.status = *status;
                if *status == seckill_proto::OrderStatus::Paid {
                    o.paid_txn = *txn;
                }
            }
            Event::PaymentRefused { order_id, amount_cents, txn, at_ms } => {
                // The first record of a refusal is the one kept.
                self.refused.entry((*order_id, *txn)).or_insert((*amount_cents, *at_ms));
            }
        }
        self.lsn = lsn;
        Ok(())
    }

    /// Events that rebuild this state from nothing (what a snapshot stores).
    pub fn to_events(&self) -> impl Iterator<Item = Event> + '_ {
        let products = self.products.values().cloned().map(Event::ProductCreated);
        let activities = self.activities.values().flat_map(|(a, added)| {
            [Event::ActivityUpserted(a.clone()), Event::StockAdded { activity_id: a.id, amount: *added }]
        });
        let quotas =
            self.quotas.iter().map(|(&(activity_id, user_id), &limit)| Event::QuotaSet { activity_id, user_id, limit });
        let mut ids: Vec<&OrderId> = self.orders.keys().collect();
        ids.sort_unstable();
        let orders = ids.into_iter().map(|id| Event::OrderCreated(self.orders[id]));
        let refused = self.refused.iter().map(|(&(order_id, txn), &(amount_cents, at_ms))| Event::PaymentRefused {
            order_id,
            amount_cents,
            txn,
            at_ms,
        });
        products.chain(activities).chain(quotas).chain(orders).chain(refused)
    }

    /// Units held per activity by orders that hold stock.
    pub fn held_by_activity(&self) -> BTreeMap<u64, u64> {
        let mut held = BTreeMap::new();
        for o in self.orders.values().filter(|o| o.status.holds_stock()) {
            *held.entry(o.activity_id).or_insert(0) += o.quantity as u64;
        }
        held
    }

    /// Splits the state into what the engine runs on. Stock pools are set
    /// from the orders (`remaining = added - held`), which is exact however
    /// the shards' records interleaved in the log.
    pub fn into_parts(&self, shards: usize, group: u8) -> Result<(Catalog, Vec<ShardState>), String> {
        // A data dir (or a replica group's log) belongs to one group: its
        // ids name it, and fronts route by them.
        let range = seckill_proto::group::id_range(group);
        let foreign = self.activities.keys().chain(self.products.keys()).find(|id| !range.contains(id));
        if let Some(id) = foreign {
            return Err(format!(
                "activity or product id {id} is not one of group {group}'s ids; this state belongs to group {}: \
                 start with --group {0}",
                seckill_proto::group_of_id(*id).map_or_else(|| "none".to_string(), |g| g.to_string())
            ));
        }
        if let Some(o) = self.orders.values().find(|o| o.id.group() != group) {
            return Err(format!(
                "order {} was issued by group {}, not {group}: start with --group {}",
                o.id,
                o.id.group(),
                o.id.group()
            ));
        }
        let held = self.held_by_activity();
        let mut catalog = Catalog { products: self.products.clone(), ..Catalog::default() };
        for (id, (activity, added)) in &self.activities {
            let h = held.get(id).copied().unwrap_or(0);
            if h > *added {
                return Err(format!("activity {id}: orders hold {h} units but only {added} were ever added"));
            }
            let pool = StockPool::new(0);
            pool.reset(*added, h);
            catalog.activities.insert(*id, (Arc::new(activity.clone()), Arc::new(pool)));
        }
        let mut states: Vec<ShardState> = (0..shards).map(|i| ShardState::in_group(group, i as u16)).collect();
        for state in &mut states {
            for (a, pool) in catalog.activities.values() {
                state.install(a.clone(), pool.clone());
            }
        }
        for (&(activity_id, user_id), &limit) in &self.quotas {
            let shard = &mut states[shard_of_user(user_id, shards)];
            if let Some(slot) = shard.slots.get_mut(&activity_id) {
                slot.quotas.insert(user_id, limit);
            }
        }
        let mut orders: Vec<&Order> = self.orders.values().collect();
        orders.sort_unstable_by_key(|o| o.id);
        for o in orders {
            let shard = shard_of_user(o.user_id, shards);
            if o.id.shard() as usize != shard {
                return Err(format!(
                    "order {} was issued by shard {} but its user maps to shard {shard} of {shards}; \
                     start with the shard count the data was written with",
                    o.id,
                    o.id.shard()
                ));
            }
            states[shard].insert_order(*o);
        }
        for &(order_id, txn) in self.refused.keys() {
            let Some(state) = states.get_mut(order_id.shard() as usize) else { continue };
            if state.refused.len() < crate::shard::state::REFUSALS_REMEMBERED_MAX {
                state.refused.insert((order_id, txn));
            }
        }
        Ok((catalog, states))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seckill_proto::OrderStatus;

    /// Found by the `snapshot` fuzz target: an order of quantity 0 used to
    /// pass `apply` and then panic in `into_parts`. It is now refused.
    #[test]
    fn an_empty_order_is_an_error_not_a_panic() {
        let mut r = Replica::default();
        let o = Order {
            id: OrderId::first_at(1, 0),
            user_id: 1,
            activity_id: 1,
            quantity: 0,
            amount_cents: 0,
            status: OrderStatus::PendingPayment,
            created_at_ms: 1,
            pay_before_ms: 2,
            idempotency_key: 0,
            paid_txn: 0,
        };
        assert!(matches!(r.apply(1, &Event::OrderCreated(o)), Err(ReplicaError::EmptyOrder { .. })));
        assert!(r.orders.is_empty());
        assert!(r.into_parts(1, 0).is_ok());
    }
}
