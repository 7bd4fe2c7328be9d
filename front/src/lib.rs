//! The HTTP front: hyper on tokio, JWT auth, per-user rate limits, load
//! shedding and a sold-out short circuit (per-user click limits are kept
//! by the engine's shards), forwarding each request to the
//! engine over a pooled, pipelined wire connection.
//!
//! Architecture Invariant: the front holds no order or stock state of its
//! own (only caches that expire: sold-out marks, rate buckets); every
//! decision is the engine's. It depends on `proto`, never on `engine`.

// Input-facing: no panics on what peers send (docs/SECURITY.md; tests exempt, clippy.toml).
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod auth;
pub mod buy_token;
pub mod engine_client;
pub mod http;
pub mod limits;
pub mod payment;
pub mod secrets;

use engine_client::{EngineAddr, EngineLink, EnginePool, LocalEngine};
use hmac::{Hmac, Mac};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// HTTP connections served at once; more wait in the accept backlog.
pub const CONNECTIONS_MAX: usize = 16_384;
/// A client must send its request head within this time (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct FrontConfig {
    pub http: SocketAddr,
    pub engine: EngineAddr,
    pub engine_connections: usize,
    /// An engine in this process: used instead of `engine` when set.
    pub local_engine: Option<Arc<dyn LocalEngine>>,
    pub auth_secret: Vec<u8>,
    /// Rotation, issuer and audience for bearer tokens.
    pub auth: auth::AuthConfig,
    pub payment_secret: Vec<u8>,
    pub payment_sandbox: bool,
}

pub struct Front {
    pub engine: EngineLink,
    pub auth: auth::Auth,
    /// Signs buy tokens (the auth secret: same trust boundary).
    pub token_secret: Vec<u8>,
    pub sold_out: limits::SoldOut,
    pub prometheus: Option<PrometheusHandle>,
    pub payment_secret: Vec<u8>,
    pub payment_sandbox: bool,
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
pub async fn bind(
    cfg: FrontConfig,
    prometheus: Option<PrometheusHandle>,
) -> std::io::Result<(Arc<Front>, TcpListener)> {
    let listener = TcpListener::bind(cfg.http).await?;
    let front = Arc::new(Front {
        engine: match cfg.local_engine {
            Some(local) => EngineLink::Local(local),
            None => EngineLink::Remote(EnginePool::start(
                cfg.engine,
                cfg.engine_connections.max(1),
                seckill_proto::handshake::WireKey::derive(&cfg.auth_secret),
            )),
        },
        auth: auth::Auth::with(&cfg.auth_secret, cfg.auth),
        token_secret: cfg.auth_secret.clone(),
        sold_out: limits::SoldOut::new(1_000),
        prometheus,
        payment_secret: cfg.payment_secret,
        payment_sandbox: cfg.payment_sandbox,
        hash_key: Hmac::<Sha256>::new_from_slice(&cfg.auth_secret)
            .map_err(|e| std::io::Error::other(format!("auth secret unusable as an HMAC key: {e}")))?,
    });
    Ok((front, listener))
}

/// Serves HTTP/1.1 until `shutdown` resolves.
pub async fn run(front: Arc<Front>, listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, _) = tokio::select! {
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
        let _ = stream.set_nodelay(true);
        let front = front.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| http::handle(front.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = conn.await;
            drop(permit);
        });
    }
}
