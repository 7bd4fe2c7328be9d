//! The cost of payment deadlines: buys/s on a shard that already holds
//! 1M pending orders (1M deadlines in its heap) against an empty one.
//! `engine/timers/{0,1000000}` — same buys, same batches as the shard loop.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use seckill_engine::{Activity, Batch, ShardState, StockPool};
use seckill_proto::{ActivityStatus, Request, Response};
use std::sync::Arc;
use std::time::Duration;

const NOW_MS: u64 = 1_800_000_000_000;
const BATCH: u64 = 256;

fn shard(pending: u64) -> ShardState {
    let mut s = ShardState::new(0);
    let activity = Activity {
        id: 1,
        product_id: 0,
        product_name: "p".into(),
        title: "t".into(),
        price_cents: 100,
        terms: seckill_proto::SaleTerms {
            starts_at_ms: 0,
            ends_at_ms: u64::MAX / 2,
            per_user_limit: 1,
            payment_timeout_s: 1800,
            require_buy_token: false,
            gate_factor: 5,
        },
        status: ActivityStatus::Active,
    };
    s.install(Arc::new(activity), Arc::new(StockPool::new(1_000_000_000)));
    let mut batch = Batch::default();
    for user_id in 1..=pending {
        let req = Request::Buy { user_id, activity_id: 1, quantity: 1, idempotency_key: 0, buy_token_ok: false };
        assert!(matches!(s.handle(&req, NOW_MS, &mut batch), Response::Order(_)));
        if user_id % BATCH == 0 {
            batch.release();
        }
    }
    batch.release();
    s
}

fn timers(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine/timers");
    g.sample_size(20).measurement_time(Duration::from_secs(5)).throughput(Throughput::Elements(BATCH));
    for pending in [0u64, 1_000_000] {
        let mut s = shard(pending);
        let mut next_user = 10_000_000u64;
        let mut batch = Batch::default();
        g.bench_function(BenchmarkId::from_parameter(pending), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    next_user += 1;
                    let req = Request::Buy {
                        user_id: next_user,
                        activity_id: 1,
                        quantity: 1,
                        idempotency_key: 0,
                        buy_token_ok: false,
                    };
                    std::hint::black_box(s.handle(&req, NOW_MS, &mut batch));
                }
                s.expire_due(NOW_MS, &mut batch);
                batch.release();
            })
        });
        assert_eq!(s.next_deadline_ms(), Some(NOW_MS + 1_800_000), "the deadlines are all still pending");
    }
    g.finish();
}

criterion_group!(benches, timers);
criterion_main!(benches);
