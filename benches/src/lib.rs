//! Benchmarks live in `benches/`; the memory measurement in `src/bin`.
//! This library holds what both share: the sale they simulate.

use seckill_engine::{Activity, ActivitySpec, ShardState, StockPool};
use seckill_proto::ActivityStatus;
use std::sync::Arc;

/// The wall-clock time every in-process decision is made at.
pub const NOW_MS: u64 = 1_700_000_000_000;

/// A distinct, well-spread user id for the `i`-th buyer. splitmix64's
/// finalizer is a bijection on u64, so distinct `i` give distinct ids.
#[inline]
pub fn user_id(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An ongoing sale at `now_ms`: one unit per buyer, open for a day either side.
pub fn ongoing_activity(id: u64, now_ms: u64) -> Activity {
    Activity {
        id,
        product_id: 0,
        product_name: "phone".into(),
        title: "flash sale".into(),
        price_cents: 99_900,
        terms: seckill_proto::SaleTerms {
            starts_at_ms: now_ms - 86_400_000,
            ends_at_ms: now_ms + 86_400_000,
            per_user_limit: 1,
            payment_timeout_s: 1800,
            require_buy_token: false,
            gate_factor: 5,
        },
        status: ActivityStatus::Active,
    }
}

/// The same sale as an operator would create it through `Engine`.
pub fn ongoing_spec(stock: u64, now_ms: u64) -> ActivitySpec {
    let a = ongoing_activity(0, now_ms);
    ActivitySpec { title: a.title, product_id: None, price_cents: a.price_cents, stock, terms: a.terms }
}

/// A fresh shard (id 0) holding one ongoing activity with `stock` units.
pub fn shard_with_sale(activity_id: u64, stock: u64) -> ShardState {
    let mut state = ShardState::new(0);
    state.install(Arc::new(ongoing_activity(activity_id, NOW_MS)), Arc::new(StockPool::new(stock)));
    state
}
