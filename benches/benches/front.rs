//! The HTTP front's own work per buy, without sockets:
//! * `front/jwt/seckill`: the `Authorization` check every buy makes
//!   (`seckill_front::auth::Auth::user_of`), against
//! * `front/jwt/jsonwebtoken`: `jsonwebtoken::decode` with the same
//!   validation, what the check was before (docs/PERFORMANCE.md).
//! * `front/order_json`: the body of a buy's answer.

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use seckill_front::auth::Auth;
use seckill_proto::{OrderId, OrderStatus, OrderView};
use std::hint::black_box;

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    #[allow(dead_code, reason = "read by the validation")]
    exp: u64,
}

fn jwt(c: &mut Criterion) {
    let secret = b"a-secret-of-thirty-two-bytes-min";
    let auth = Auth::new(secret);
    let header = format!("Bearer {}", auth.issue(123_456, 3600));
    let mut g = c.benchmark_group("front/jwt");
    g.bench_function("seckill", |b| b.iter(|| black_box(auth.user_of(Some(black_box(header.as_bytes()))))));
    let key = DecodingKey::from_secret(secret);
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = 5;
    validation.validate_aud = false;
    let token = header.trim_start_matches("Bearer ");
    g.bench_function("jsonwebtoken", |b| {
        b.iter(|| {
            let data = decode::<Claims>(black_box(token), &key, &validation).ok();
            black_box(data.and_then(|d| d.claims.sub.parse::<u64>().ok()))
        })
    });
    g.finish();
}

fn order_json(c: &mut Criterion) {
    let o = OrderView {
        order_id: OrderId::first_at(1_764_900_000_123, 0).successor(),
        user_id: 123_456,
        activity_id: 7,
        quantity: 1,
        amount_cents: 9_900,
        status: OrderStatus::PendingPayment,
        created_at_ms: 1_764_900_000_123,
        pay_before_ms: 1_764_901_800_123,
    };
    c.bench_function("front/order_json", |b| b.iter(|| black_box(seckill_proto::json::order_bytes(black_box(&o)))));
}

criterion_group!(benches, jwt, order_json);
criterion_main!(benches);
