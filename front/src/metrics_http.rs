//! The operator's listener, on its own address (`--metrics`, loopback by
//! default), never on the buyer port:
//!
//! * `GET /metrics`: Prometheus text (every process);
//! * `GET /dashboard` and its files, `GET /api/dashboard.json`: the live
//!   sale dashboard (`seckill up` and `seckill engine`, which have the
//!   engine's figures; a front alone serves `/metrics` only).
//!
//! The dashboard is plain HTML + JS embedded in the binary, with uPlot
//! (MIT, `assets/vendor/uplot/`) for the charts: nothing is fetched from
//! anywhere else, and no build step is needed.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
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

/// Figures computed when asked (they read engine state: called on a
/// blocking thread, never on the async workers).
pub trait OperatorData: Send + Sync {
    /// Appends Prometheus text to `/metrics` after the recorder's own
    /// (families rendered at scrape time, such as per-activity figures).
    fn metrics_text(&self, out: &mut String);
    /// The body of `GET /api/dashboard.json` (docs/API.md).
    fn dashboard_json(&self) -> Vec<u8>;
}

/// What the listener serves.
#[derive(Clone, Default)]
pub struct Operator {
    pub prometheus: Option<PrometheusHandle>,
    /// `None`: `/metrics` only (a front alone).
    pub data: Option<Arc<dyn OperatorData>>,
}

impl Operator {
    pub fn metrics_only(prometheus: Option<PrometheusHandle>) -> Operator {
        Operator { prometheus, data: None }
    }
}

/// The dashboard's files: path, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("/dashboard", "text/html; charset=utf-8", include_bytes!("../assets/dashboard/index.html")),
    ("/dashboard/dashboard.js", "text/javascript; charset=utf-8", include_bytes!("../assets/dashboard/dashboard.js")),
    ("/dashboard/dashboard.css", "text/css; charset=utf-8", include_bytes!("../assets/dashboard/dashboard.css")),
    (
        "/dashboard/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/vendor/uplot/uPlot.iife.min.js"),
    ),
    ("/dashboard/uPlot.min.css", "text/css; charset=utf-8", include_bytes!("../assets/vendor/uplot/uPlot.min.css")),
    ("/dashboard/uPlot.LICENSE.txt", "text/plain; charset=utf-8", include_bytes!("../assets/vendor/uplot/LICENSE")),
];

/// The page may load only its own files and fetch only this listener.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn ok(ctype: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
    r
}

/// Runs `f` on a blocking thread (it reads engine state behind locks the
/// control path holds while it waits for the disk).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

async fn answer(op: Arc<Operator>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let dashboard = op.data.is_some();
    let known = path == "/metrics"
        || (dashboard && (path == "/api/dashboard.json" || ASSETS.iter().any(|(p, _, _)| *p == path)));
    if req.method() != Method::GET && known {
        let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use GET");
        r.headers_mut().insert(hyper::header::ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    match path {
        "/metrics" => {
            let op2 = op.clone();
            let text = blocking(move || {
                let mut text = op2.prometheus.as_ref().map(|h| h.render()).unwrap_or_default();
                if let Some(d) = &op2.data {
                    d.metrics_text(&mut text);
                }
                text
            })
            .await
            .unwrap_or_default();
            ok("text/plain; version=0.0.4", Bytes::from(text))
        }
        "/api/dashboard.json" if dashboard => {
            let op2 = op.clone();
            match blocking(move || op2.data.as_ref().map(|d| d.dashboard_json())).await.flatten() {
                Some(body) => ok("application/json", Bytes::from(body)),
                None => json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the dashboard data failed"),
            }
        }
        "/" if dashboard => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::FOUND;
            r.headers_mut().insert(LOCATION, HeaderValue::from_static("/dashboard"));
            r
        }
        p if dashboard => match ASSETS.iter().find(|(a, _, _)| *a == p) {
            Some((_, ctype, bytes)) => {
                let mut r = ok(ctype, Bytes::from_static(bytes));
                let h = r.headers_mut();
                h.insert(HeaderName::from_static("content-security-policy"), HeaderValue::from_static(CSP));
                h.insert(HeaderName::from_static("referrer-policy"), HeaderValue::from_static("no-referrer"));
                h.insert(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"));
                r
            }
            None => json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "this listener serves GET /metrics, /dashboard and /api/dashboard.json",
            ),
        },
        _ => json_error(StatusCode::NOT_FOUND, "not_found", "this listener serves GET /metrics only"),
    }
}

/// Serves the operator's routes on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, op: Operator, shutdown: impl std::future::Future<Output = ()>) {
    let op = Arc::new(op);
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
        let op = op.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let op = op.clone();
                async move { Ok::<_, Infallible>(answer(op, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(crate::HEADER_READ_TIMEOUT)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), svc);
            // A connection lives at most a minute (a dashboard's page
            // reconnects by itself and skips a poll at worst).
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
            drop(permit);
        });
    }
}

/// The operator's listener bound, with the small runtime that will serve
/// it on a thread of its own (for `seckill engine`, which has no other).
pub struct Bound(tokio::runtime::Runtime, TcpListener);

/// Binds `addr` (unless `none`), before anything else starts: a taken port
/// fails the start, and once the engine answers, the listener is there.
pub fn bind_thread(addr: MetricsAddr) -> std::io::Result<Option<Bound>> {
    let MetricsAddr::At(addr) = addr else { return Ok(None) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(4).build()?;
    let listener = rt.block_on(TcpListener::bind(addr))?;
    Ok(Some(Bound(rt, listener)))
}

/// Serves the operator's routes on `bound` from a thread of its own.
pub fn serve_thread(bound: Bound, op: Operator) -> std::io::Result<()> {
    let Bound(rt, listener) = bound;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        rt.block_on(serve(listener, op, std::future::pending()));
    })?;
    Ok(())
}
