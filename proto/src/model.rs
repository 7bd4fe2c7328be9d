//! Plain data that crosses the front↔engine boundary.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A 128-bit order id laid out as a UUIDv7: 48 bits of Unix milliseconds,
/// the version nibble, 12 bits of origin (4 bits of group, then 8 of shard),
/// the variant bits and a 62-bit per-shard sequence. Ids therefore sort by
/// creation time, are unique across shards and groups without
/// coordination, and name the group and the shard that own them. Group 0's
/// ids are those of the engine before groups (the 12 bits were the shard,
/// and shards never exceeded 8 bits' worth).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct OrderId(pub u128);

impl OrderId {
    pub const SEQ_BITS: u32 = 62;
    /// Bits of the origin field that number the shard (the rest: the group).
    pub const SHARD_BITS: u32 = 8;
    pub const SHARD_MAX: u16 = (1 << Self::SHARD_BITS) - 1;
    /// The largest group number an id can carry (`group::GROUPS_MAX` - 1).
    pub const GROUP_MAX: u8 = 0xf;

    /// The smallest id shard `shard` of group 0 may issue at `unix_ms`.
    pub fn first_at(unix_ms: u64, shard: u16) -> Self {
        Self::first_in(unix_ms, 0, shard)
    }

    /// The smallest id shard `shard` of group `group` may issue at `unix_ms`.
    pub fn first_in(unix_ms: u64, group: u8, shard: u16) -> Self {
        debug_assert!(shard <= Self::SHARD_MAX && group <= Self::GROUP_MAX);
        let ms = (unix_ms as u128) & 0xffff_ffff_ffff;
        let version = 0x7u128;
        let variant = 0b10u128;
        let origin = ((group as u128 & 0xf) << Self::SHARD_BITS) | (shard as u128 & Self::SHARD_MAX as u128);
        OrderId((ms << 80) | (version << 76) | (origin << 64) | (variant << 62))
    }

    /// The next id after `self` from the same shard (same ms, sequence + 1).
    pub fn successor(self) -> Self {
        let seq_mask = (1u128 << Self::SEQ_BITS) - 1;
        let seq = self.0 & seq_mask;
        assert!(seq < seq_mask, "order id sequence exhausted within one millisecond");
        OrderId(self.0 + 1)
    }

    /// The shard (of its group's engine) that issued this id.
    #[inline]
    pub fn shard(self) -> u16 {
        ((self.0 >> 64) as u16) & Self::SHARD_MAX
    }

    /// The group whose engine issued this id (0 for every id made before groups).
    #[inline]
    pub fn group(self) -> u8 {
        (((self.0 >> 64) as u16 & 0xfff) >> Self::SHARD_BITS) as u8
    }

    pub fn unix_ms(self) -> u64 {
        (self.0 >> 80) as u64
    }

    /// True when the version and variant bits say this is one of our ids.
    pub fn is_well_formed(self) -> bool {
        (self.0 >> 76) & 0xf == 0x7 && (self.0 >> 62) & 0b11 == 0b10
    }
}

impl fmt::Display for OrderId {
    /// `8-4-4-4-12` lowercase hex digits, built in a stack buffer (every
    /// order answer prints one).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 36];
        let mut nibble = 32;
        for (i, c) in out.iter_mut().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                continue;
            }
            nibble -= 1;
            *c = HEX[((self.0 >> (nibble * 4)) & 0xf) as usize];
        }
        // Only ASCII hex digits and dashes were written.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an order id (expected a UUID like 0192f0c1-7a2b-7001-8000-000000000001)")]
pub struct BadOrderId;

impl FromStr for OrderId {
    type Err = BadOrderId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() != 36 {
            return Err(BadOrderId);
        }
        let mut v: u128 = 0;
        for (i, &c) in b.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return Err(BadOrderId);
                }
                continue;
            }
            let d = (c as char).to_digit(16).ok_or(BadOrderId)?;
            v = (v << 4) | d as u128;
        }
        let id = OrderId(v);
        if !id.is_well_formed() {
            return Err(BadOrderId);
        }
        Ok(id)
    }
}

impl Serialize for OrderId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OrderId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

crate::named_enum! {
    /// Where an order is in its life (DESIGN.md's status machine).
    #[derive(
        Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
    )]
    #[serde(rename_all = "snake_case")]
    pub enum OrderStatus: u8 {
        PendingPayment = 1 => "pending_payment",
        Paid = 2 => "paid",
        Cancelled = 3 => "cancelled",
        Expired = 4 => "expired",
        Refunded = 5 => "refunded",
        Shipped = 6 => "shipped",
    }
}

impl OrderStatus {
    /// Whether an order in this status holds stock tokens.
    pub fn holds_stock(self) -> bool {
        matches!(self, Self::PendingPayment | Self::Paid | Self::Shipped)
    }

    /// The change in units held when an order of `quantity` units moves
    /// from `self` to `to`: `+quantity` when it starts holding stock,
    /// `-quantity` when it stops (the tokens go back), 0 otherwise. Stock
    /// remaining moves by the opposite amount.
    pub fn held_delta(self, to: OrderStatus, quantity: u32) -> i64 {
        match (self.holds_stock(), to.holds_stock()) {
            (true, false) => -i64::from(quantity),
            (false, true) => i64::from(quantity),
            _ => 0,
        }
    }
}

crate::named_enum! {
    /// An activity as buyers see it at one moment.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Phase: u8 {
        Upcoming = 1 => "upcoming",
        Ongoing = 2 => "ongoing",
        Ended = 3 => "ended",
        Paused = 4 => "paused",
    }
}

crate::named_enum! {
    /// What an operator set an activity to (DESIGN.md: `active|paused|disabled`).
    #[derive(
        Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
    )]
    #[serde(rename_all = "snake_case")]
    pub enum ActivityStatus: u8 {
        Active = 1 => "active",
        Paused = 2 => "paused",
        Disabled = 3 => "disabled",
    }
}

/// One order. Fixed size and `Copy` so answers allocate nothing. Its
/// `Serialize` is DESIGN.md's order JSON: times as RFC 3339 `created_at`
/// and `pay_before`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct OrderView {
    pub order_id: OrderId,
    pub user_id: u64,
    pub activity_id: u64,
    pub quantity: u32,
    pub amount_cents: u64,
    pub status: OrderStatus,
    #[serde(rename = "created_at", serialize_with = "crate::json::ms_as_rfc3339")]
    pub created_at_ms: u64,
    #[serde(rename = "pay_before", serialize_with = "crate::json::ms_as_rfc3339")]
    pub pay_before_ms: u64,
}

/// The terms of a sale: when it runs, how much each buyer may take, how long
/// a buyer has to pay, and whether buyers need a buy token. The engine's
/// `Activity` and `ActivitySpec` and the [`ActivityView`] hold one each.
/// `Activity` is archived in the WAL and in snapshots with these fields in
/// this order, in its own place between `price_cents` and `status`: the
/// archived bytes are those of the flat fields it replaced (the engine's
/// `an_activity_record_keeps_its_bytes` holds them), so do not reorder them.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct SaleTerms {
    pub starts_at_ms: u64,
    pub ends_at_ms: u64,
    /// 0 means only users with a quota may buy.
    pub per_user_limit: u32,
    pub payment_timeout_s: u32,
    pub require_buy_token: bool,
    /// Buy tokens issued per unit of stock (with `require_buy_token`).
    pub gate_factor: u32,
}

impl SaleTerms {
    /// The phase buyers see at `now_ms` of a sale on these terms with
    /// `status`. Disabled and past-the-end both read as ended; a pause only
    /// shows while the sale would otherwise be open or upcoming.
    pub fn phase(&self, status: ActivityStatus, now_ms: u64) -> Phase {
        if status == ActivityStatus::Disabled || now_ms >= self.ends_at_ms {
            Phase::Ended
        } else if status == ActivityStatus::Paused {
            Phase::Paused
        } else if now_ms < self.starts_at_ms {
            Phase::Upcoming
        } else {
            Phase::Ongoing
        }
    }
}

/// An activity with its product and live stock, as the engine reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityView {
    pub id: u64,
    pub product_id: u64,
    pub product_name: String,
    pub title: String,
    pub price_cents: u64,
    pub total_stock: u64,
    pub remaining: u64,
    #[serde(flatten)]
    pub terms: SaleTerms,
    pub status: ActivityStatus,
    pub phase: Phase,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_name_their_shard_and_time() {
        let id = OrderId::first_at(1_700_000_000_123, 7);
        assert_eq!(id.shard(), 7);
        assert_eq!(id.unix_ms(), 1_700_000_000_123);
        assert!(id.is_well_formed());
        assert!(id.successor() > id);
        assert_eq!(id.successor().shard(), 7);
    }

    #[test]
    fn display_is_a_uuid_v7() {
        let s = OrderId::first_at(1, 1).to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "7");
        assert_eq!(s.parse::<OrderId>(), Ok(OrderId::first_at(1, 1)));
    }

    #[test]
    fn garbage_is_not_an_id() {
        for bad in ["", "x", "00000000-0000-0000-0000-000000000000", "zzzzzzzz-zzzz-7zzz-8zzz-zzzzzzzzzzzz"] {
            assert!(bad.parse::<OrderId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_activity_view_keeps_its_terms_flat_in_json() {
        let terms = SaleTerms {
            starts_at_ms: 1,
            ends_at_ms: 2,
            per_user_limit: 3,
            payment_timeout_s: 4,
            require_buy_token: true,
            gate_factor: 5,
        };
        let view = ActivityView {
            id: 7,
            product_id: 8,
            product_name: "p".into(),
            title: "t".into(),
            price_cents: 9,
            total_stock: 10,
            remaining: 11,
            terms,
            status: ActivityStatus::Paused,
            phase: Phase::Paused,
        };
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!((&json["starts_at_ms"], &json["gate_factor"], json.get("terms")), (&1.into(), &5.into(), None));
        assert_eq!(serde_json::from_value::<ActivityView>(json).unwrap(), view);
    }

    #[test]
    fn named_enums_round_trip_and_match_their_json_names() {
        fn check<T: Copy + PartialEq + std::fmt::Debug + Serialize>(
            all: &[T],
            name: fn(T) -> &'static str,
            by_name: fn(&str) -> Option<T>,
        ) {
            for &v in all {
                assert_eq!(by_name(name(v)), Some(v));
                assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"{}\"", name(v)));
            }
            assert_eq!(by_name("nonsense"), None);
        }
        check(&OrderStatus::ALL, OrderStatus::as_str, OrderStatus::from_name);
        check(&Phase::ALL, Phase::as_str, Phase::from_name);
        check(&ActivityStatus::ALL, ActivityStatus::as_str, ActivityStatus::from_name);
        check(&crate::ErrorCode::ALL, crate::ErrorCode::as_str, crate::ErrorCode::from_name);
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::from_u8(s as u8), Some(s));
        }
        for s in ActivityStatus::ALL {
            assert_eq!(ActivityStatus::from_u8(s as u8), Some(s));
        }
        assert_eq!(Phase::from_u8(0), None);
        assert_eq!(ActivityStatus::from_u8(4), None);
    }

    #[test]
    fn held_delta_follows_holding() {
        use OrderStatus::*;
        assert_eq!(PendingPayment.held_delta(Cancelled, 3), -3);
        assert_eq!(Paid.held_delta(Refunded, 2), -2);
        assert_eq!(PendingPayment.held_delta(Paid, 3), 0);
        assert_eq!(Paid.held_delta(Shipped, 3), 0);
        assert_eq!(Expired.held_delta(Paid, 4), 4);
        assert_eq!(Cancelled.held_delta(Expired, 4), 0);
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                let d = from.held_delta(to, 5);
                assert_eq!(d != 0, from.holds_stock() != to.holds_stock(), "{from:?} -> {to:?}");
            }
        }
    }

    /// The layout of order ids before groups, written out again: group 0
    /// must keep producing exactly these (WAL, snapshots, golden tests).
    fn before_groups(unix_ms: u64, shard: u16) -> OrderId {
        let ms = (unix_ms as u128) & 0xffff_ffff_ffff;
        OrderId((ms << 80) | (0x7u128 << 76) | ((shard as u128 & 0xfff) << 64) | (0b10u128 << 62))
    }

    #[test]
    fn a_known_id_keeps_its_text() {
        let id = OrderId::first_at(1_700_000_000_123, 7);
        assert_eq!(id.to_string(), "018bcfe5-687b-7007-8000-000000000000");
        let id = OrderId::first_in(1_700_000_000_123, 1, 7);
        assert_eq!(id.to_string(), "018bcfe5-687b-7107-8000-000000000000");
    }

    proptest! {
        #[test]
        fn ids_name_their_group_and_shard(ms in 0u64..(1 << 48), group in 0u8..=15, shard in 0u16..=0xff, n in 0u32..100) {
            let mut id = OrderId::first_in(ms, group, shard);
            for _ in 0..n { id = id.successor(); }
            prop_assert_eq!((id.group(), id.shard(), id.unix_ms()), (group, shard, ms));
            let parsed: OrderId = id.to_string().parse().unwrap();
            prop_assert_eq!(parsed, id);
            prop_assert_eq!(OrderId::first_in(ms, 0, shard), before_groups(ms, shard));
            prop_assert_eq!(OrderId::first_at(ms, shard), before_groups(ms, shard));
        }

        #[test]
        fn order_ids_round_trip_and_sort(ms in 0u64..(1 << 48), shard in 0u16..=0xff, n in 0u32..1000) {
            let mut id = OrderId::first_at(ms, shard);
            for _ in 0..n { id = id.successor(); }
            let parsed: OrderId = id.to_string().parse().unwrap();
            prop_assert_eq!(parsed, id);
            prop_assert!(OrderId::first_at(ms + 1, 0) > id || ms + 1 >= (1 << 48));
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<OrderId>();
        }
    }
}
