//! The hyper client for the few requests off the hot path (preflight,
//! `--verify`); buy clicks go through [`super::wire`]. Also the target and the
//! failure kinds both share.
//!
//! Each [`Conn`] owns at most one TCP connection and sends one request at a
//! time on it, so `C` workers mean exactly `C` concurrent connections. A
//! connection that fails or times out is dropped and replaced on the next
//! request (a POST is never retried: its outcome is reported as unknown).

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Where the front is: a resolved address plus what goes into each request.
#[derive(Debug)]
pub struct Target {
    /// The URL as given, without a trailing `/` (for messages).
    pub base: String,
    pub addr: SocketAddr,
    host: HeaderValue,
    /// Path prefix before `/api/v1` (usually empty).
    prefix: String,
}

impl Target {
    /// Parses `http://host[:port][/prefix]` and resolves the host.
    pub async fn resolve(url: &str) -> anyhow::Result<Target> {
        let base = url.trim_end_matches('/').to_string();
        let rest = match base.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => bail!("--url {url}: only http:// is supported, not {scheme}://"),
            None => bail!("--url {url} is not a URL like http://127.0.0.1:8080"),
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, String::new()),
        };
        anyhow::ensure!(!authority.is_empty(), "--url {url} has no host");
        let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&with_port)
            .await
            .with_context(|| format!("cannot resolve the host of --url {url}"))?
            .collect();
        anyhow::ensure!(!addrs.is_empty(), "the host of --url {url} resolves to no address");
        // `localhost` may name ::1 and 127.0.0.1: use the first that accepts.
        let mut addr = addrs[0];
        if addrs.len() > 1 {
            for a in &addrs {
                let probe = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(a)).await;
                if matches!(probe, Ok(Ok(_))) {
                    addr = *a;
                    break;
                }
            }
        }
        let host = HeaderValue::from_str(authority).with_context(|| format!("--url {url}: bad host"))?;
        Ok(Target { base, addr, host, prefix })
    }

    /// The request URI (origin form) for an API path such as `/api/v1/orders`.
    pub fn uri(&self, path: &str) -> anyhow::Result<Uri> {
        let full = self.path(path);
        full.parse::<Uri>().with_context(|| format!("bad request path {full}"))
    }

    /// The request path for an API path, with the URL's prefix.
    pub fn path(&self, path: &str) -> String {
        format!("{}{}", self.prefix, path)
    }

    /// `host[:port]` as given in the URL, for the Host header.
    pub fn authority(&self) -> &str {
        // Built from a `&str` in `resolve`, so always valid UTF-8.
        self.host.to_str().unwrap_or_default()
    }

    pub(super) fn unreachable(&self, e: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!("cannot reach {} ({}: {e}); is `seckill up` running there?", self.base, self.addr)
    }
}

/// Why a request got no HTTP answer.
#[derive(Debug)]
pub enum Failure {
    Connect(std::io::Error),
    /// The connection broke while the request was in flight.
    Io(hyper::Error),
    /// Reading or writing the socket failed (buy path).
    Stream(std::io::Error),
    /// The server closed the connection before a whole answer.
    Closed,
    /// Not an HTTP/1.1 answer this client understands.
    BadAnswer(String),
    /// The answer's head exceeds `wire::MAX_HEAD_BYTES`.
    HeadTooLarge,
    /// The answer's Content-Length exceeds `wire::MAX_BODY_BYTES`.
    BodyTooLarge(u64),
    /// The answer's body length is not given by a Content-Length.
    NoLength(&'static str),
    Timeout,
}

impl Failure {
    /// A short label for the outcome table.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "connect_error",
            Failure::Io(e) if e.is_incomplete_message() || e.is_canceled() => "connection_closed",
            Failure::Io(_) | Failure::Stream(_) => "io_error",
            Failure::Closed => "connection_closed",
            Failure::BadAnswer(_) => "bad_answer",
            Failure::HeadTooLarge => "answer_head_too_large",
            Failure::BodyTooLarge(_) => "answer_body_too_large",
            Failure::NoLength(_) => "answer_without_length",
            Failure::Timeout => "timeout",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connect: {e}"),
            Failure::Io(e) => write!(f, "{e}"),
            Failure::Stream(e) => write!(f, "{e}"),
            Failure::Closed => write!(f, "the server closed the connection before a whole answer"),
            Failure::BadAnswer(why) => write!(f, "{why}"),
            Failure::HeadTooLarge => write!(f, "answer head over {} bytes", super::wire::MAX_HEAD_BYTES),
            Failure::BodyTooLarge(n) => {
                write!(f, "answer body of {n} bytes, over the {} byte limit", super::wire::MAX_BODY_BYTES)
            }
            Failure::NoLength(why) => write!(f, "{why}"),
            Failure::Timeout => write!(f, "no answer within the timeout"),
        }
    }
}

/// An HTTP answer: status and whole body.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// One keep-alive connection, reopened when it breaks.
pub struct Conn {
    target: Arc<Target>,
    sender: Option<SendRequest<Full<Bytes>>>,
    timeout: Duration,
    /// Connections opened, including the first.
    pub opened: u64,
}

impl Conn {
    pub fn new(target: Arc<Target>, timeout: Duration) -> Conn {
        Conn { target, sender: None, timeout, opened: 0 }
    }

    /// Opens the connection now (so set-up cost is paid before the clock starts).
    pub async fn connect(&mut self) -> anyhow::Result<()> {
        if self.sender.is_none() {
            let s = self.open().await.map_err(|e| self.target.unreachable(e))?;
            self.sender = Some(s);
        }
        Ok(())
    }

    async fn open(&mut self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let tcp = TcpStream::connect(self.target.addr).await.map_err(Failure::Connect)?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(Failure::Io)?;
        tokio::spawn(async move {
            // Ends when the connection closes; errors surface on the next send.
            let _ = conn.await;
        });
        self.opened += 1;
        Ok(sender)
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &mut self,
        method: Method,
        uri: Uri,
        auth: Option<&HeaderValue>,
        body: Option<Bytes>,
    ) -> Result<Answer, Failure> {
        let has_body = body.is_some();
        let mut req = Request::new(Full::new(body.unwrap_or_default()));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        h.insert(HOST, self.target.host.clone());
        if has_body {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(a) = auth {
            h.insert(AUTHORIZATION, a.clone());
        }
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.exchange(req)).await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                // The request may still be in flight: this connection is unusable.
                self.sender = None;
                Err(Failure::Timeout)
            }
        }
    }

    /// Sends `req` on the connection (reopened first if it closed) and reads the answer.
    async fn exchange(&mut self, req: Request<Full<Bytes>>) -> Result<Answer, Failure> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = None;
            self.sender = Some(self.open().await?);
        }
        let Some(sender) = self.sender.as_mut() else {
            return Err(Failure::Timeout);
        };
        sender.ready().await.map_err(Failure::Io)?;
        let resp = sender.send_request(req).await.map_err(Failure::Io)?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(Failure::Io)?.to_bytes();
        Ok(Answer { status, body })
    }
}

/// `Bearer <token>` as a cheaply clonable header value.
pub fn bearer(token: &str) -> anyhow::Result<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(format!("Bearer {token}")))
        .context("a token is not a valid header value")
}
