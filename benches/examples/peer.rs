//! The peer: the service a Rust team would write instead of seckill in an
//! afternoon, to measure seckill against in `scripts/bench-e2e`.
//!
//! hyper HTTP/1.1, `jsonwebtoken` HS256 auth (`sub` = user id), one
//! multiplexed `redis` connection, and the canonical flash-sale Lua script:
//! per-user count check, stock check, DECRBY, SET, INCR order id. Run it
//! against a redis-server with `appendonly yes` and `appendfsync always`
//! and every 201 is durable. No MQ and no MySQL: every advantage is given
//! to it. Same route, body and answer shape as seckill's buy.
//!
//!     SECKILL_AUTH_SECRET=... cargo run --release -p seckill-benches --example peer -- \
//!         127.0.0.1:18302 redis://127.0.0.1:18312
//!
//! Stock of activity A lives in `peer:stock:A` (set it before the run).

mod common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;

const DEDUCT: &str = r#"
local q = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local bought = tonumber(redis.call('GET', KEYS[2]) or '0')
if bought + q > limit then return -1 end
local stock = tonumber(redis.call('GET', KEYS[1]) or '0')
if stock < q then return 0 end
redis.call('DECRBY', KEYS[1], q)
redis.call('SET', KEYS[2], bought + q)
return redis.call('INCR', KEYS[3])
"#;

const PRICE_CENTS: u64 = 100;
const PAYMENT_TIMEOUT_S: i64 = 1800;

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BuyBody {
    quantity: Option<u32>,
}

struct Peer {
    key: DecodingKey,
    validation: Validation,
    redis: redis::aio::MultiplexedConnection,
    sha: String,
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(serde_json::to_vec(&v).unwrap_or_default())));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({"error": {"code": code, "message": code}}))
}

async fn buy(peer: Arc<Peer>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let Some(activity) = path
        .strip_prefix("/api/v1/activities/")
        .and_then(|p| p.strip_suffix("/buy"))
        .and_then(|id| id.parse::<u64>().ok())
    else {
        return error(StatusCode::NOT_FOUND, "not_found");
    };
    let token = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let Some(user) = token
        .and_then(|t| decode::<Claims>(&t, &peer.key, &peer.validation).ok())
        .and_then(|d| d.claims.sub.parse::<u64>().ok())
    else {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let Ok(body) = Limited::new(req.into_body(), 4096).collect().await else {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    };
    let body = body.to_bytes();
    let parsed: BuyBody = if body.is_empty() {
        BuyBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(_) => return error(StatusCode::BAD_REQUEST, "bad_request"),
        }
    };
    let quantity = parsed.quantity.unwrap_or(1);
    if quantity != 1 {
        return error(StatusCode::BAD_REQUEST, "bad_request");
    }
    let mut conn = peer.redis.clone();
    let result: redis::RedisResult<i64> = redis::cmd("EVALSHA")
        .arg(&peer.sha)
        .arg(3)
        .arg(format!("peer:stock:{activity}"))
        .arg(format!("peer:bought:{activity}:{user}"))
        .arg("peer:order_seq")
        .arg(quantity)
        .arg(1)
        .query_async(&mut conn)
        .await;
    match result {
        Ok(-1) => error(StatusCode::CONFLICT, "limit_reached"),
        Ok(0) => error(StatusCode::CONFLICT, "sold_out"),
        Ok(order_id) => {
            let now = time::OffsetDateTime::now_utc();
            let pay_before = now + time::Duration::seconds(PAYMENT_TIMEOUT_S);
            json(
                StatusCode::CREATED,
                serde_json::json!({
                    "order_id": order_id.to_string(),
                    "user_id": user,
                    "activity_id": activity,
                    "quantity": quantity,
                    "amount_cents": PRICE_CENTS * quantity as u64,
                    "status": "pending_payment",
                    "created_at": now.format(&Rfc3339).unwrap_or_default(),
                    "pay_before": pay_before.format(&Rfc3339).unwrap_or_default(),
                }),
            )
        }
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "busy"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18302".into());
    let redis_url = args.next().unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let secret = std::env::var("SECKILL_AUTH_SECRET").map_err(|_| "set SECKILL_AUTH_SECRET")?;
    let client = redis::Client::open(redis_url)?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(DEDUCT).query_async(&mut redis).await?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let peer = Arc::new(Peer { key: DecodingKey::from_secret(secret.as_bytes()), validation, redis, sha });
    common::serve("peer", &addr, move |req| buy(peer.clone(), req)).await?;
    Ok(())
}
