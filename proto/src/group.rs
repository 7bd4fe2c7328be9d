//! Groups: several engines (each a single engine or a replica group), each
//! owning the activities it created. Every id names its group, so a front
//! routes a request by the id it carries, with no table to look up
//! (docs/REPLICATION.md, "Activities over groups").
//!
//! * Activity and product ids of group `g` lie in `g << 48 | 1 ..= g << 48 |
//!   (2^48 - 1)`: group 0's are today's ids, and every id stays below 2^52,
//!   exact in a JSON (JavaScript) number.
//! * Order ids carry the group in the top 4 of the 12 bits that named the
//!   shard (`OrderId::group`); shards need at most 8 (`SHARDS_MAX` = 256),
//!   so group 0's order ids are bit for bit what they were.

use crate::{OrderId, Request};
use std::ops::RangeInclusive;

/// Groups one deployment may have (numbers `0..GROUPS_MAX`): 4 bits of an
/// order id and of an activity id.
pub const GROUPS_MAX: usize = 16;

/// Where the group sits in an activity or product id.
pub const ID_GROUP_SHIFT: u32 = 48;

/// The ids group `group` issues for activities (and products).
pub fn id_range(group: u8) -> RangeInclusive<u64> {
    debug_assert!((group as usize) < GROUPS_MAX);
    let base = u64::from(group) << ID_GROUP_SHIFT;
    (base + 1)..=(base | ((1 << ID_GROUP_SHIFT) - 1))
}

/// The group an activity (or product) id belongs to, `None` for an id no
/// group issues (0, or 2^52 and above).
#[inline]
pub fn group_of_id(id: u64) -> Option<u8> {
    let group = id >> ID_GROUP_SHIFT;
    (id & ((1 << ID_GROUP_SHIFT) - 1) != 0 && (group as usize) < GROUPS_MAX).then_some(group as u8)
}

/// Which groups a request concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupRoute {
    /// The group its activity or order id names.
    One(u8),
    /// An id no group issues: the answer is "not found" without asking anyone.
    Nowhere,
    /// Reads that span activities (a user's orders, the activity list): every group.
    Every,
}

impl Request {
    /// The group that owns what this request names: an integer op on the id.
    #[inline]
    pub fn group_route(&self) -> GroupRoute {
        let of_activity = |id: u64| group_of_id(id).map_or(GroupRoute::Nowhere, GroupRoute::One);
        let of_order = |id: OrderId| GroupRoute::One(id.group());
        match *self {
            Request::Buy { activity_id, .. }
            | Request::SetQuota { activity_id, .. }
            | Request::IssueBuyToken { activity_id, .. }
            | Request::GetActivity { activity_id } => of_activity(activity_id),
            Request::GetOrder { order_id, .. }
            | Request::Cancel { order_id, .. }
            | Request::Pay { order_id, .. }
            | Request::Refund { order_id, .. }
            | Request::Ship { order_id }
            | Request::Expire { order_id } => of_order(order_id),
            Request::ListOrders { .. } | Request::ListActivities { .. } => GroupRoute::Every,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn group_zero_ids_are_todays() {
        assert_eq!(id_range(0), 1..=(1 << 48) - 1);
        assert_eq!(group_of_id(1), Some(0));
        assert_eq!(group_of_id(0), None);
        assert_eq!(group_of_id(1 << 48), None, "the first id of group 1 is (1 << 48) + 1");
        assert_eq!(group_of_id((1 << 48) + 1), Some(1));
        assert_eq!(*id_range(15).end(), (1 << 52) - 1);
        assert_eq!(group_of_id(1 << 52), None);
        assert!(*id_range(15).end() < 1 << 53, "ids stay exact in a JavaScript number");
    }

    #[test]
    fn requests_route_by_the_id_they_name() {
        let order_id = OrderId::first_in(5, 3, 2);
        let activity_id = *id_range(7).start();
        assert_eq!(Request::GetActivity { activity_id }.group_route(), GroupRoute::One(7));
        let buy = Request::Buy { user_id: 1, activity_id, quantity: 1, idempotency_key: 0, buy_token_ok: false };
        assert_eq!(buy.group_route(), GroupRoute::One(7));
        assert_eq!(Request::Cancel { user_id: 1, order_id }.group_route(), GroupRoute::One(3));
        assert_eq!(Request::Pay { order_id, amount_cents: 1, txn: 1 }.group_route(), GroupRoute::One(3));
        assert_eq!(Request::GetActivity { activity_id: 0 }.group_route(), GroupRoute::Nowhere);
        assert_eq!(Request::ListOrders { user_id: 1, offset: 0, limit: 1 }.group_route(), GroupRoute::Every);
        assert_eq!(Request::ListActivities { offset: 0, limit: 1 }.group_route(), GroupRoute::Every);
    }

    proptest! {
        #[test]
        fn an_id_names_the_group_whose_range_holds_it(group in 0u8..16, offset in 1u64..(1 << 48)) {
            let id = (u64::from(group) << ID_GROUP_SHIFT) | offset;
            prop_assert!(id_range(group).contains(&id));
            prop_assert_eq!(group_of_id(id), Some(group));
            for other in 0..16u8 {
                prop_assert_eq!(id_range(other).contains(&id), other == group);
            }
        }
    }
}
