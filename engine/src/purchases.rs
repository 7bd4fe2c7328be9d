//! How many units each user holds in one activity, owned by one shard.
//!
//! Almost every buyer holds exactly one unit, so those users live in a bare
//! set of ids (8 bytes + 1 control byte per slot); the few with more live in
//! a side map. 10M records measure ~15 bytes each (`cargo run -p
//! seckill-benches --release --bin engine-memory`), against ~70 in Redis.

use hashbrown::{HashMap, HashSet};

/// Units held per user in one activity.
#[derive(Debug, Default, Clone)]
pub struct Purchases {
    single: HashSet<u64>,
    multi: HashMap<u64, u32>,
}

impl Purchases {
    /// A table with room for `users` buyers of one unit.
    pub fn with_capacity(users: usize) -> Self {
        Self { single: HashSet::with_capacity(users), multi: HashMap::new() }
    }

    /// Units `user_id` holds (0 if none).
    #[inline]
    pub fn held(&self, user_id: u64) -> u32 {
        if self.single.contains(&user_id) {
            1
        } else {
            self.multi.get(&user_id).copied().unwrap_or(0)
        }
    }

    /// Records `quantity` more units for `user_id`.
    #[inline]
    pub fn add(&mut self, user_id: u64, quantity: u32) {
        debug_assert!(quantity > 0);
        let now = self.held(user_id) + quantity;
        self.set(user_id, now);
    }

    /// Gives back `quantity` units. Releasing more than is held is a bug in
    /// the caller (a token returned twice) and stops the process.
    pub fn release(&mut self, user_id: u64, quantity: u32) {
        let held = self.held(user_id);
        assert!(held >= quantity, "user {user_id} releases {quantity} but holds {held}");
        self.set(user_id, held - quantity);
    }

    fn set(&mut self, user_id: u64, count: u32) {
        match count {
            0 => {
                self.single.remove(&user_id);
                self.multi.remove(&user_id);
            }
            1 => {
                self.multi.remove(&user_id);
                self.single.insert(user_id);
            }
            n => {
                self.single.remove(&user_id);
                self.multi.insert(user_id, n);
            }
        }
    }

    /// Number of users holding at least one unit.
    pub fn users(&self) -> usize {
        self.single.len() + self.multi.len()
    }

    /// Sum of units held by all users.
    pub fn units(&self) -> u64 {
        self.single.len() as u64 + self.multi.values().map(|&n| n as u64).sum::<u64>()
    }

    /// Every (user, units held), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.single.iter().map(|&u| (u, 1)).chain(self.multi.iter().map(|(&u, &n)| (u, n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_move_between_single_and_multi() {
        let mut p = Purchases::default();
        assert_eq!(p.held(7), 0);
        p.add(7, 1);
        assert_eq!(p.held(7), 1);
        p.add(7, 2);
        assert_eq!(p.held(7), 3);
        p.release(7, 2);
        assert_eq!(p.held(7), 1);
        p.release(7, 1);
        assert_eq!(p.held(7), 0);
        assert_eq!(p.users(), 0);
    }

    #[test]
    #[should_panic(expected = "releases")]
    fn releasing_more_than_held_is_caught() {
        let mut p = Purchases::default();
        p.add(1, 1);
        p.release(1, 2);
    }
}
