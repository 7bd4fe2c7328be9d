//! The HTTP front on tokio: buys on a hand-written HTTP/1.1 loop
//! (`fast_path`), everything else on hyper; JWT auth, per-address limits,
//! load shedding and a sold-out short circuit (per-user click limits are
//! kept by the engine's shards), forwarding each request to the engine in
//! process or over a pooled, pipelined wire connection.
//!
//! Architecture Invariant: the front holds no order or stock state of its
//! own (only caches that expire: sold-out marks, rate buckets); every
//! decision is the engine's. It depends on `proto`, never on `engine`.

// Input-facing: no panics on what peers send (docs/SECURITY.md; tests exempt,
// clippy.toml). `unwrap` is denied workspace-wide (Cargo.toml); here `expect` too.
#![warn(clippy::expect_used)]

pub mod auth;
pub mod buy_token;
pub mod engine_client;
pub mod fast_path;
pub mod groups;
pub mod http;
pub mod hyper_io;
pub mod limits;
pub mod metrics_http;
pub mod observe;
pub mod pages;
pub mod payment;
pub mod secrets;

use engine_client::{EngineLink, EnginePool, LocalEngine};
use hmac::{Hmac, Mac};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use seckill_proto::Address;
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// HTTP connections served at once (default); more wait in the accept backlog.
pub const CONNECTIONS_MAX: usize = 16_384;
/// HTTP connections one client address may hold open (default); more are
/// answered 429 and closed at once.
pub const CONNECTIONS_PER_IP_MAX: u32 = 1_024;
/// Anonymous requests (activity reads, unknown routes) per second per
/// client address (default), in bursts of twice that.
pub const IP_REQUESTS_PER_S: u32 = 20;
/// A client must send its request head within this time (slowloris); it
/// also closes idle keep-alive connections.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A client must send its body within this time once the head is in
/// (slow bodies): 408 `request_timeout`.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request, from its head to the last byte of its answer, may take this
/// long; then its connection is closed (a client that never reads).
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Largest request head (request line and headers); larger is 431.
pub const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Activity views are cached this long (`GET /activities*`).
pub const ACTIVITY_CACHE_TTL_MS: u64 = 1_000;
/// Activity reads in flight to the engine at once (cache misses); more are
/// answered 503 `busy` without touching it, so reads never fill the shard
/// queues that buys need.
pub const ENGINE_READS_IN_FLIGHT_MAX: usize = 32;

/// Limits of the buyer-facing listener.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    pub connections_max: usize,
    /// 0: no cap per address (behind a proxy that limits).
    pub connections_per_ip_max: u32,
    /// 0: no limit.
    pub ip_requests_per_s: u32,
    /// 0: activity reads are not cached.
    pub activity_cache_ms: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            connections_max: CONNECTIONS_MAX,
            connections_per_ip_max: CONNECTIONS_PER_IP_MAX,
            ip_requests_per_s: IP_REQUESTS_PER_S,
            activity_cache_ms: ACTIVITY_CACHE_TTL_MS,
        }
    }
}

pub struct FrontConfig {
    pub http: SocketAddr,
    /// The engine, or every replica of its group (the front follows the
    /// leader among them: `engine_client`).
    pub engines: Vec<Address>,
    /// Other groups than `engines`' (docs/REPLICATION.md, "Activities over
    /// groups"): (group number, its engine or replicas). Empty: one group,
    /// `engines`, which gets every request as before. Otherwise `engines`
    /// is group 0 (unless empty) and requests go by the group their id names.
    pub engine_groups: Vec<(u8, Vec<Address>)>,
    /// Connections to each of `engines`.
    pub engine_connections: usize,
    /// An engine in this process: used instead of `engines` when set.
    pub local_engine: Option<Arc<dyn LocalEngine>>,
    pub auth_secret: Vec<u8>,
    /// Rotation, issuer and audience for bearer tokens.
    pub auth: auth::AuthConfig,
    pub payment_secret: Vec<u8>,
    pub payment_sandbox: bool,
    pub limits: HttpLimits,
    /// Where buy answers are counted per activity (shared with the
    /// operator's dashboard in `seckill up`).
    pub buy_answers: Arc<observe::BuyAnswers>,
}

pub struct Front {
    pub engine: EngineLink,
    pub auth: auth::Auth,
    /// Signs buy tokens (the auth secret: same trust boundary).
    pub token_secret: Vec<u8>,
    pub sold_out: limits::SoldOut,
    pub activity_cache: limits::ActivityCache,
    pub ip_buckets: limits::IpBuckets,
    /// Demo logins per address (`POST /api/v1/demo/token`, sandbox only).
    pub demo_buckets: limits::IpBuckets,
    /// Permits for activity reads that go to the engine.
    pub engine_reads: Semaphore,
    pub limits: HttpLimits,
    pub payment_secret: Vec<u8>,
    pub payment_sandbox: bool,
    /// Request counters and histograms, registered once.
    pub metrics: observe::HttpMetrics,
    /// Buy answers per activity (the dashboard's).
    pub buy_answers: Arc<observe::BuyAnswers>,
    /// HMAC-SHA256 keyed with the auth secret, its key schedule done once.
    hash_key: Hmac<Sha256>,
}

impl Front {
    /// A keyed 64-bit hash of a client-chosen string (Idempotency-Key,
    /// provider transaction id) for the engine to store: unlike a plain hash,
    /// nobody without the secret can make two strings collide on purpose.
    /// Every front of one deployment shares the secret, so they agree.
    pub fn keyed_hash(&self, domain: &[u8], scope: &[u8], value: &[u8]) -> u64 {
        let mut mac = self.hash_key.clone();
        for part in [domain, scope, value] {
            mac.update(&(part.len() as u32).to_le_bytes());
            mac.update(part);
        }
        let digest = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        // 0 means "none" on the wire.
        u64::from_le_bytes(first).max(1)
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Binds the HTTP port and returns the front and its listener; `run` serves.
pub async fn bind(cfg: FrontConfig) -> std::io::Result<(Arc<Front>, TcpListener)> {
    let listener = TcpListener::bind(cfg.http).await?;
    let front = Arc::new(Front {
        engine: match cfg.local_engine {
            Some(local) => EngineLink::local(local),
            None if cfg.engine_groups.is_empty() => EngineLink::Remote(EnginePool::start(
                cfg.engines,
                cfg.engine_connections.max(1),
                seckill_proto::handshake::WireKey::derive(&cfg.auth_secret),
            )),
            None => {
                let key = seckill_proto::handshake::WireKey::derive(&cfg.auth_secret);
                let zero = (!cfg.engines.is_empty()).then_some((0, cfg.engines));
                let pools = zero
                    .into_iter()
                    .chain(cfg.engine_groups)
                    .map(|(g, addrs)| (g, EnginePool::start(addrs, cfg.engine_connections.max(1), key.clone())))
                    .collect();
                EngineLink::Groups(Arc::new(groups::GroupLinks::new(pools)))
            }
        },
        auth: auth::Auth::with(&cfg.auth_secret, cfg.auth),
        token_secret: cfg.auth_secret.clone(),
        sold_out: limits::SoldOut::new(1_000),
        activity_cache: limits::ActivityCache::new(cfg.limits.activity_cache_ms),
        ip_buckets: limits::IpBuckets::new(cfg.limits.ip_requests_per_s),
        demo_buckets: limits::IpBuckets::new(pages::DEMO_TOKENS_PER_S),
        engine_reads: Semaphore::new(ENGINE_READS_IN_FLIGHT_MAX),
        limits: cfg.limits,
        payment_secret: cfg.payment_secret,
        payment_sandbox: cfg.payment_sandbox,
        metrics: observe::HttpMetrics::default(),
        buy_answers: cfg.buy_answers,
        hash_key: Hmac::<Sha256>::new_from_slice(&cfg.auth_secret)
            .map_err(|e| std::io::Error::other(format!("auth secret unusable as an HMAC key: {e}")))?,
    });
    Ok((front, listener))
}

/// Serves HTTP/1.1 until `shutdown` resolves.
pub async fn run(front: Arc<Front>, listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) {
    let permits = Arc::new(Semaphore::new(front.limits.connections_max.max(1)));
    let per_ip = limits::ConnectionsPerIp::new(front.limits.connections_per_ip_max);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Some(slot) = per_ip.open(peer.ip()) else {
            // Over the cap for this address: a JSON 429 if the socket takes
            // it at once (never waiting), then closed.
            front.metrics.connections_refused_per_ip.increment(1);
            let _ = stream.try_write(TOO_MANY_CONNECTIONS);
            // What already arrived is read, so the close is a FIN that lets
            // the client read the 429, not a reset.
            let mut sink = [0u8; 2048];
            let _ = stream.try_read(&mut sink);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let front = front.clone();
        tokio::spawn(async move {
            let deadline = fast_path::Deadline::default();
            deadline.head(now_ms());
            tokio::select! {
                _ = connection(front.clone(), stream, peer.ip(), &deadline) => {}
                in_request = overdue(&deadline) => if in_request {
                    front.metrics.requests_cut.increment(1);
                },
            }
            drop(slot);
            drop(permit);
        });
    }
}

/// Serves one connection: buys on the fast path (`fast_path.rs`), then
/// hyper from the first request that is not a plain buy, with the bytes
/// the fast path read in front (`hyper_io.rs`).
async fn connection(
    front: Arc<Front>,
    mut stream: tokio::net::TcpStream,
    ip: std::net::IpAddr,
    deadline: &fast_path::Deadline,
) {
    let read = match fast_path::serve(&front, &mut stream, deadline).await {
        fast_path::Handoff::Closed => return,
        fast_path::Handoff::Hyper(read) => read,
    };
    let svc = service_fn(|req| {
        deadline.request(now_ms());
        http::handle(front.clone(), ip, req)
    });
    let io = hyper_io::HyperIo::new(TokioIo::new(stream), read);
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(io, svc)
        .await;
}

/// What a client over its address's connection cap gets before the close.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 97\r\n\r\n\
{\"error\":{\"code\":\"rate_limited\",\"message\":\"too many connections from your address; retry later\"}}";

/// Resolves once the connection is past its deadline (`fast_path::Deadline`):
/// a head not in within `HEADER_READ_TIMEOUT`, or a request (head, body,
/// engine and writing the answer) not done within `REQUEST_TIMEOUT_MS`;
/// `true` for the latter. A timer per connection every two seconds,
/// nothing per request but a store. On hyper's side of a connection its
/// own `header_read_timeout` closes slow heads and idle connections.
async fn overdue(deadline: &fast_path::Deadline) -> bool {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(in_request) = deadline.passed(now_ms()) {
            return in_request;
        }
    }
}

/// How often a connection's deadline is checked.
const WATCH_EVERY: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    #[test]
    fn the_canned_429_declares_its_length_and_is_json() {
        let text = std::str::from_utf8(super::TOO_MANY_CONNECTIONS).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.ends_with(&format!("\r\ncontent-length: {}", body.len())), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(v["error"]["code"], "rate_limited");
    }
}
