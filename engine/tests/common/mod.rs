//! Fixtures shared by the engine's integration tests.

use seckill_engine::ActivitySpec;

/// The tests' "now" (ms): a fixed instant, so deadlines and phases replay.
pub const T0: u64 = 1_800_000_000_000;

/// An activity on sale since just before `T0` for a day, one unit per buyer.
pub fn spec(stock: u64) -> ActivitySpec {
    ActivitySpec {
        title: "t".into(),
        product_id: None,
        price_cents: 100,
        stock,
        terms: seckill_proto::SaleTerms {
            starts_at_ms: T0 - 1,
            ends_at_ms: T0 + 86_400_000,
            per_user_limit: 1,
            payment_timeout_s: 3600,
            require_buy_token: false,
            gate_factor: 5,
        },
    }
}
