//! Plain data that crosses the front↔engine boundary.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A 128-bit order id laid out as a UUIDv7: 48 bits of Unix milliseconds,
/// the version nibble, 12 bits of shard, the variant bits and a 62-bit
/// per-shard sequence. Ids therefore sort by creation time, are unique
/// across shards without coordination, and name the shard that owns them.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct OrderId(pub u128);

impl OrderId {
    pub const SEQ_BITS: u32 = 62;
    pub const SHARD_MAX: u16 = 0x0fff;

    /// The smallest id this shard may issue at `unix_ms`.
    pub fn first_at(unix_ms: u64, shard: u16) -> Self {
        debug_assert!(shard <= Self::SHARD_MAX);
        let ms = (unix_ms as u128) & 0xffff_ffff_ffff;
        let version = 0x7u128;
        let variant = 0b10u128;
        OrderId((ms << 80) | (version << 76) | ((shard as u128 & 0xfff) << 64) | (variant << 62))
    }

    /// The next id after `self` from the same shard (same ms, sequence + 1).
    pub fn successor(self) -> Self {
        let seq_mask = (1u128 << Self::SEQ_BITS) - 1;
        let seq = self.0 & seq_mask;
        assert!(seq < seq_mask, "order id sequence exhausted within one millisecond");
        OrderId(self.0 + 1)
    }

    pub fn shard(self) -> u16 {
        ((self.0 >> 64) & 0xfff) as u16
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

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum OrderStatus {
    PendingPayment = 1,
    Paid = 2,
    Cancelled = 3,
    Expired = 4,
    Refunded = 5,
    Shipped = 6,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 6] =
        [Self::PendingPayment, Self::Paid, Self::Cancelled, Self::Expired, Self::Refunded, Self::Shipped];

    /// Whether an order in this status holds stock tokens.
    pub fn holds_stock(self) -> bool {
        matches!(self, Self::PendingPayment | Self::Paid | Self::Shipped)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "pending_payment",
            Self::Paid => "paid",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Refunded => "refunded",
            Self::Shipped => "shipped",
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| *s as u8 == v)
    }
}

/// An activity as buyers see it at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Phase {
    Upcoming = 1,
    Ongoing = 2,
    Ended = 3,
    Paused = 4,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Self::Upcoming, Self::Ongoing, Self::Ended, Self::Paused];

    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|p| *p as u8 == v)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upcoming => "upcoming",
            Self::Ongoing => "ongoing",
            Self::Ended => "ended",
            Self::Paused => "paused",
        }
    }
}

/// One order. Fixed size and `Copy` so answers allocate nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderView {
    pub order_id: OrderId,
    pub user_id: u64,
    pub activity_id: u64,
    pub quantity: u32,
    pub amount_cents: u64,
    pub status: OrderStatus,
    pub created_at_ms: u64,
    pub pay_before_ms: u64,
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
    pub starts_at_ms: u64,
    pub ends_at_ms: u64,
    pub per_user_limit: u32,
    pub payment_timeout_s: u32,
    pub require_buy_token: bool,
    pub gate_factor: u32,
    pub status: String,
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

    proptest! {
        #[test]
        fn order_ids_round_trip_and_sort(ms in 0u64..(1 << 48), shard in 0u16..=0xfff, n in 0u32..1000) {
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
