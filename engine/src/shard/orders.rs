//! A shard's orders: kept densely in the order they were recorded and found
//! by id through an index of 4-byte positions.
//!
//! Why not a `HashMap<OrderId, Order>`: a hash table holds up to twice as
//! many buckets as entries (hashbrown doubles at 7/8 full), and each bucket
//! of that map is the 80-byte order plus its 16-byte key, so a million
//! orders took ~200 MB. Here the orders are a `Vec` (80 bytes each; spare
//! capacity is never touched, so never resident) and only the 4-byte
//! positions (with 4 bytes of hash) sit in the sparse table: ~100 MB a
//! million (docs/PERFORMANCE.md). Orders are never removed, so a position
//! stays valid.

use crate::order::Order;
use hashbrown::{DefaultHashBuilder, HashTable};
use seckill_proto::OrderId;
use std::hash::BuildHasher;

/// Where an order sits in its shard's [`OrderTable`].
pub type Position = u32;

/// Orders by id, and by the position they were recorded at.
#[derive(Default)]
pub struct OrderTable {
    orders: Vec<Order>,
    /// Each order's position and the 32 bits of its id's hash the table
    /// is keyed by: growing the table rehashes from these alone, without
    /// reading the orders (a million random reads would stall the shard).
    by_id: HashTable<(Position, u32)>,
    hasher: DefaultHashBuilder,
}

/// The table's 64-bit hash, spread from the 32 bits kept with each entry
/// (hashbrown takes the bucket from the low bits and a tag from the top 7).
fn spread(h32: u32) -> u64 {
    u64::from(h32).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl OrderTable {
    /// Makes room for `additional` more orders, so a sale does not rehash
    /// its table on the shard thread while buyers wait.
    pub fn reserve(&mut self, additional: usize) {
        self.orders.reserve(additional);
        self.by_id.reserve(additional, |(_, h32)| spread(*h32));
    }

    fn hash32(&self, id: OrderId) -> u32 {
        // The high half: foldhash mixes its output's top bits best.
        (self.hasher.hash_one(id) >> 32) as u32
    }

    /// Records a new order; returns its position. An id recorded twice is a
    /// broken invariant (ids only grow), so it panics.
    pub fn insert(&mut self, order: Order) -> Position {
        let h32 = self.hash32(order.id);
        assert!(self.find(h32, order.id).is_none(), "order id {} issued twice", order.id);
        let at = Position::try_from(self.orders.len()).expect("at most 2^32 orders per shard");
        self.orders.push(order);
        self.by_id.insert_unique(spread(h32), (at, h32), |(_, h32)| spread(*h32));
        at
    }

    fn find(&self, h32: u32, id: OrderId) -> Option<Position> {
        self.by_id.find(spread(h32), |(p, h)| *h == h32 && self.orders[*p as usize].id == id).map(|(p, _)| *p)
    }

    /// The position of order `id`, if this shard holds it.
    fn position(&self, id: OrderId) -> Option<Position> {
        self.find(self.hash32(id), id)
    }

    pub fn get(&self, id: &OrderId) -> Option<&Order> {
        self.position(*id).map(|p| &self.orders[p as usize])
    }

    pub fn get_mut(&mut self, id: &OrderId) -> Option<&mut Order> {
        self.position(*id).map(|p| &mut self.orders[p as usize])
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

    proptest! {
        /// The table answers as a map from id to order would, however it
        /// grows (with or without room reserved first).
        #[test]
        fn finds_what_a_map_would(ids in proptest::collection::hash_set(any::<u128>(), 0..2000), reserve in 0usize..3000) {
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
            }
            let absent = OrderId(u128::MAX - 7);
            prop_assert_eq!(table.get(&absent).is_some(), map.contains_key(&absent));
            let users: Vec<u64> = table.values().map(|o| o.user_id).collect();
            prop_assert_eq!(users, (0..ids.len() as u64).collect::<Vec<_>>(), "recorded order is kept");
        }
    }

    #[test]
    #[should_panic(expected = "issued twice")]
    fn an_id_recorded_twice_is_refused() {
        let mut table = OrderTable::default();
        table.insert(order(OrderId(7), 1));
        table.insert(order(OrderId(7), 2));
    }
}
