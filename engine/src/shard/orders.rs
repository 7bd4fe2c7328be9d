//! A shard's orders: kept densely in the order they were recorded and found
//! by id through runs of consecutive ids.
//!
//! Why not a hash index: a shard issues its ids in increasing order, and
//! every order decided in one millisecond gets the next sequence number
//! (`OrderId::successor`), so the orders of a batch sit at consecutive
//! positions with consecutive ids. One run (first id, position, length)
//! then stands for all of them: recording an order extends the last run or
//! appends one, touching only the end of two vectors. A hash index took two
//! random cache misses per order (control bytes and bucket of a table sized
//! for the whole sale), the shard thread's largest single cost per buy
//! (docs/PERFORMANCE.md). Lookups (pay, cancel, views) binary-search the
//! runs, which are few: one per millisecond with orders at the most.
//! Orders are never removed, so a position stays valid.

use crate::order::Order;
use hashbrown::HashMap;
use seckill_proto::OrderId;

/// Where an order sits in its shard's [`OrderTable`].
pub type Position = u32;

/// Orders by id, and by the position they were recorded at.
#[derive(Default)]
pub struct OrderTable {
    orders: Vec<Order>,
    /// Consecutive ids recorded at consecutive positions, sorted by id.
    runs: Vec<Run>,
    /// Ids recorded below the last run's end (another shard's, or after a
    /// clock step back on restore): rare, so a plain map.
    strays: HashMap<OrderId, Position>,
}

/// Ids `first ..= first + len - 1` at positions `at ..= at + len - 1`.
#[derive(Clone, Copy)]
struct Run {
    first: OrderId,
    at: Position,
    len: u32,
}

impl Run {
    fn last(&self) -> OrderId {
        OrderId(self.first.0 + u128::from(self.len - 1))
    }

    /// How far into the run `id` is, if it is in it.
    fn offset(&self, id: OrderId) -> Option<u32> {
        id.0.checked_sub(self.first.0).filter(|d| *d < u128::from(self.len)).map(|d| d as u32)
    }
}

impl OrderTable {
    /// Makes room for `additional` more orders, so a sale does not move its
    /// orders on the shard thread while buyers wait. The spare capacity is
    /// never touched, so never resident.
    pub fn reserve(&mut self, additional: usize) {
        self.orders.reserve(additional);
    }

    /// Records a new order; returns its position. An id recorded twice is a
    /// broken invariant (ids only grow), so it panics.
    pub fn insert(&mut self, order: Order) -> Position {
        let at = Position::try_from(self.orders.len()).expect("at most 2^32 orders per shard");
        let id = order.id;
        match self.runs.last_mut() {
            // The shard's own next order: the common case, no lookup at all.
            Some(last) if id.0.checked_sub(last.first.0) == Some(last.len.into()) && at == last.at + last.len => {
                last.len += 1
            }
            Some(last) if id <= last.last() => {
                assert!(self.find(id).is_none(), "order id {id} issued twice");
                self.strays.insert(id, at);
            }
            _ => self.runs.push(Run { first: id, at, len: 1 }),
        }
        self.orders.push(order);
        at
    }

    fn find(&self, id: OrderId) -> Option<Position> {
        let after = self.runs.partition_point(|r| r.first <= id);
        let in_run = after.checked_sub(1).and_then(|i| {
            let run = &self.runs[i];
            run.offset(id).map(|d| run.at + d)
        });
        in_run.or_else(|| self.strays.get(&id).copied())
    }

    pub fn get(&self, id: &OrderId) -> Option<&Order> {
        self.find(*id).map(|p| &self.orders[p as usize])
    }

    pub fn get_mut(&mut self, id: &OrderId) -> Option<&mut Order> {
        self.find(*id).map(|p| &mut self.orders[p as usize])
    }

    /// The order at `at` (a position this table returned).
    pub fn at(&self, at: Position) -> &Order {
        &self.orders[at as usize]
    }

    pub fn len(&self) -> usize {
        self.orders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }

    /// Every order, in the order they were recorded.
    pub fn values(&self) -> impl Iterator<Item = &Order> {
        self.orders.iter()
    }
}

impl std::ops::Index<&OrderId> for OrderTable {
    type Output = Order;

    /// Panics when the shard has no such order (callers know it has).
    fn index(&self, id: &OrderId) -> &Order {
        self.get(id).unwrap_or_else(|| panic!("no order {id} in this shard"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use seckill_proto::OrderStatus;

    fn order(id: OrderId, user_id: u64) -> Order {
        Order {
            id,
            user_id,
            activity_id: 1,
            quantity: 1,
            amount_cents: 100,
            status: OrderStatus::PendingPayment,
            created_at_ms: 0,
            pay_before_ms: 0,
            idempotency_key: 0,
            paid_txn: 0,
        }
    }

    /// One id after another, as `ids` makes them.
    #[derive(Clone, Debug)]
    enum Step {
        /// The successor (same millisecond).
        Next,
        /// A later millisecond.
        Jump(u128),
        /// Any id at all (another shard's, a clock stepped back).
        Any(u128),
    }

    /// Ids as a shard issues them, with now and then one out of order:
    /// every branch of `insert`.
    fn ids() -> impl Strategy<Value = Vec<u128>> {
        let step = prop_oneof![
            6 => Just(Step::Next),
            2 => (1u128..1 << 90).prop_map(Step::Jump),
            1 => any::<u128>().prop_map(Step::Any),
        ];
        (any::<u128>(), proptest::collection::vec(step, 0..2000)).prop_map(|(start, steps)| {
            let mut seen = std::collections::HashSet::new();
            let mut next = start >> 8;
            let mut ids = Vec::new();
            for step in steps {
                let id = match step {
                    Step::Next => next,
                    Step::Jump(by) => next.saturating_add(by),
                    Step::Any(id) => id,
                };
                if seen.insert(id) {
                    ids.push(id);
                }
                next = id.saturating_add(1);
            }
            ids
        })
    }

    proptest! {
        /// The table answers as a map from id to order would, whatever the
        /// order of the ids (with or without room reserved first).
        #[test]
        fn finds_what_a_map_would(ids in ids(), reserve in 0usize..3000) {
            let mut table = OrderTable::default();
            table.reserve(reserve);
            let mut map = std::collections::HashMap::new();
            for (i, id) in ids.iter().enumerate() {
                let o = order(OrderId(*id), i as u64);
                let at = table.insert(o);
                prop_assert_eq!(table.at(at), &o);
                map.insert(OrderId(*id), o);
            }
            prop_assert_eq!(table.len(), map.len());
            for (id, o) in &map {
                prop_assert_eq!(table.get(id), Some(o));
                prop_assert_eq!(&table[id], o);
                for near in [id.0.wrapping_sub(1), id.0.wrapping_add(1)] {
                    prop_assert_eq!(table.get(&OrderId(near)), map.get(&OrderId(near)));
                }
            }
            for absent in [0, 1, u128::MAX - 7, u128::MAX] {
                prop_assert_eq!(table.get(&OrderId(absent)), map.get(&OrderId(absent)));
            }
            let users: Vec<u64> = table.values().map(|o| o.user_id).collect();
            prop_assert_eq!(users, (0..ids.len() as u64).collect::<Vec<_>>(), "recorded order is kept");
        }
    }

    #[test]
    #[should_panic(expected = "issued twice")]
    fn an_id_recorded_again_after_others_is_refused() {
        let mut table = OrderTable::default();
        for id in [7, 8, 9, 20] {
            table.insert(order(OrderId(id), 1));
        }
        table.insert(order(OrderId(8), 2));
    }

    #[test]
    #[should_panic(expected = "issued twice")]
    fn an_id_recorded_twice_is_refused() {
        let mut table = OrderTable::default();
        table.insert(order(OrderId(7), 1));
        table.insert(order(OrderId(7), 2));
    }
}
