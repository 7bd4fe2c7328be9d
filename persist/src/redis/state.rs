//! The mirror's own copy of engine state: a `Replica` kept current from the
//! WAL, plus the two sums Redis shows that a replica does not keep (units
//! held per activity and per buyer), so a batch never scans every order.

use seckill_engine::event::Event;
use seckill_engine::replica::{Replica, ReplicaError};
use seckill_proto::OrderId;
use std::collections::{BTreeSet, HashMap};

pub(crate) struct MirrorState {
    pub replica: Replica,
    /// Units held (pending + paid + shipped orders) per activity.
    held: HashMap<u64, u64>,
    /// Units held per (activity, user); absent when zero.
    purchased: HashMap<(u64, u64), u64>,
}

impl MirrorState {
    pub fn new(replica: Replica) -> Self {
        let mut s = Self { replica, held: HashMap::new(), purchased: HashMap::new() };
        let holding: Vec<_> = s
            .replica
            .orders
            .values()
            .filter(|o| o.status.holds_stock())
            .map(|o| (o.activity_id, o.user_id, o.quantity as u64))
            .collect();
        for (a, u, q) in holding {
            s.hold(a, u, q as i64);
        }
        s
    }

    /// The LSN of the last record applied.
    pub fn lsn(&self) -> u64 {
        self.replica.lsn
    }

    pub fn apply(&mut self, lsn: u64, ev: &Event) -> Result<(), ReplicaError> {
        let before = match ev {
            Event::OrderStatusChanged { order_id, .. } => self.replica.orders.get(order_id).copied(),
            _ => None,
        };
        self.replica.apply(lsn, ev)?;
        match ev {
            Event::OrderCreated(o) if o.status.holds_stock() => self.hold(o.activity_id, o.user_id, o.quantity as i64),
            Event::OrderStatusChanged { status, .. } => {
                if let Some(o) = before {
                    let q = o.quantity as i64;
                    match (o.status.holds_stock(), status.holds_stock()) {
                        (true, false) => self.hold(o.activity_id, o.user_id, -q),
                        (false, true) => self.hold(o.activity_id, o.user_id, q),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn hold(&mut self, activity_id: u64, user_id: u64, delta: i64) {
        let h = self.held.entry(activity_id).or_insert(0);
        *h = h.saturating_add_signed(delta);
        let p = self.purchased.entry((activity_id, user_id)).or_insert(0);
        *p = p.saturating_add_signed(delta);
        if *p == 0 {
            self.purchased.remove(&(activity_id, user_id));
        }
    }

    /// (total stock ever added, remaining) of an activity.
    pub fn stock(&self, activity_id: u64) -> (u64, u64) {
        let added = self.replica.activities.get(&activity_id).map_or(0, |(_, n)| *n);
        let held = self.held.get(&activity_id).copied().unwrap_or(0);
        (added, added.saturating_sub(held))
    }

    /// Units `user_id` holds in `activity_id` (0: none).
    pub fn purchased(&self, activity_id: u64, user_id: u64) -> u64 {
        self.purchased.get(&(activity_id, user_id)).copied().unwrap_or(0)
    }

    /// Every (activity, user, units held), in no particular order.
    pub fn all_purchased(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.purchased.iter().map(|(&(a, u), &n)| (a, u, n))
    }
}

/// Keys a run of records changed, so a batch writes each once (coalesced)
/// with its value after the batch.
#[derive(Default, Debug)]
pub(crate) struct Touched {
    pub products: BTreeSet<u64>,
    pub activities: BTreeSet<u64>,
    pub orders: BTreeSet<OrderId>,
    pub purchased: BTreeSet<(u64, u64)>,
}

impl Touched {
    pub fn add(&mut self, ev: &Event) {
        match ev {
            Event::ProductCreated(p) => {
                self.products.insert(p.id);
            }
            Event::ActivityUpserted(a) => {
                self.activities.insert(a.id);
            }
            Event::StockAdded { activity_id, .. } => {
                self.activities.insert(*activity_id);
            }
            Event::OrderCreated(o) => {
                self.orders.insert(o.id);
                self.activities.insert(o.activity_id);
                self.purchased.insert((o.activity_id, o.user_id));
            }
            Event::OrderStatusChanged { order_id, user_id, activity_id, status, .. } => {
                self.orders.insert(*order_id);
                if !status.holds_stock() {
                    self.activities.insert(*activity_id);
                    self.purchased.insert((*activity_id, *user_id));
                }
            }
            Event::QuotaSet { .. } | Event::PaymentRefused { .. } => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.products.is_empty() && self.activities.is_empty() && self.orders.is_empty() && self.purchased.is_empty()
    }
}
