//! The operator's listener: `GET /metrics` (Prometheus text) on its own
//! address (`--metrics`, loopback by default), never on the buyer port.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Scrapers served at once; more wait in the backlog.
pub const CONNECTIONS_MAX: usize = 64;

/// Where the metrics listener binds: an address, or `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsAddr {
    Off,
    At(std::net::SocketAddr),
}

impl std::str::FromStr for MetricsAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(MetricsAddr::Off);
        }
        s.parse().map(MetricsAddr::At).map_err(|e| format!("{s:?}: {e} (expected HOST:PORT or none)"))
    }
}

impl std::fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsAddr::Off => f.write_str("none"),
            MetricsAddr::At(a) => a.fmt(f),
        }
    }
}

fn answer(handle: &Option<PrometheusHandle>, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            Bytes::from(handle.as_ref().map(|h| h.render()).unwrap_or_default()),
        ),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "application/json",
            Bytes::from_static(br#"{"error":{"code":"method_not_allowed","message":"use GET"}}"#),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "application/json",
            Bytes::from_static(br#"{"error":{"code":"not_found","message":"this listener serves GET /metrics only"}}"#),
        ),
    };
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    handle: Option<PrometheusHandle>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let handle = Arc::new(handle);
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let r = answer(&handle, &req);
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(crate::HEADER_READ_TIMEOUT)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
            drop(permit);
        });
    }
}

/// Binds `addr` (unless `none`) and serves metrics on a thread of its own
/// with a one-thread runtime (for `seckill engine`, which has no other).
pub fn spawn_thread(addr: MetricsAddr, handle: Option<PrometheusHandle>) -> std::io::Result<()> {
    let MetricsAddr::At(addr) = addr else { return Ok(()) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let listener = rt.block_on(TcpListener::bind(addr))?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        rt.block_on(serve(listener, handle, std::future::pending()));
    })?;
    Ok(())
}
