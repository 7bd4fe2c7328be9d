//! The buy path's own HTTP/1.1 client: one keep-alive `TcpStream` driven by
//! the worker's task itself.
//!
//! The hyper client cost about as much CPU per request as the server under
//! test (a connection task per connection, a `Request` and `HeaderMap` per
//! click, a body `collect()`), and on a shared 2-core box that CPU and the
//! extra task hop showed up as client-side tail latency. Here a click is one
//! `write` of pre-formatted bytes (only the token differs per user) and one
//! or more reads into a reused buffer parsed with `httparse`. Only what the
//! front sends is accepted: a `Content-Length` body (chunked or a missing
//! length is a [`Failure`]), head ≤ [`MAX_HEAD_BYTES`], body ≤
//! [`MAX_BODY_BYTES`]. A failure drops the connection (the next click
//! reconnects); a POST is never retried.

use super::client::{Failure, Target};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer head larger than this is refused (the front's are ~150 bytes).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// An answer body larger than this is refused (a buy answer is ~100 bytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Headers parsed per answer; more is a [`Failure::BadAnswer`].
const MAX_HEADERS: usize = 32;
/// Read size; the whole answer usually arrives in one read.
const READ_CHUNK_BYTES: usize = 4096;

/// What the head of an answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Where the body lies in the read buffer.
    pub body: Range<usize>,
    /// The server will close the connection after this answer.
    pub close: bool,
}

/// Parses the head in `buf`; `Ok(None)` while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => return Err(Failure::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Failure::BadAnswer(format!("unparsable answer head: {e}"))),
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(Failure::HeadTooLarge);
    }
    let Some(status) = resp.code else {
        return Err(Failure::BadAnswer("answer head without a status".into()));
    };
    if status < 200 {
        return Err(Failure::BadAnswer(format!("interim answer {status} (no Expect was sent)")));
    }
    let mut close = resp.version == Some(0);
    let mut len: Option<u64> = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| Failure::BadAnswer("unparsable Content-Length".into()))?;
            if len.is_some_and(|l| l != v) {
                return Err(Failure::BadAnswer("conflicting Content-Length headers".into()));
            }
            len = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Failure::NoLength("Transfer-Encoding (chunked) is not supported"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= h.value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let len = match (status, len) {
        (204 | 304, _) => 0,
        (_, Some(l)) => l,
        (_, None) => return Err(Failure::NoLength("the answer has no Content-Length")),
    };
    if len > MAX_BODY_BYTES as u64 {
        return Err(Failure::BodyTooLarge(len));
    }
    // `len` ≤ 64 KiB, so the cast and the sum cannot overflow.
    Ok(Some(Head { status, body: head_len..head_len + len as usize, close }))
}

/// Reads one whole answer into `buf` (cleared first; its capacity is kept).
pub async fn read_answer<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Result<Head, Failure> {
    buf.clear();
    let mut head = None;
    loop {
        if buf.capacity() - buf.len() < READ_CHUNK_BYTES {
            buf.reserve(READ_CHUNK_BYTES);
        }
        let n = r.read_buf(buf).await.map_err(Failure::Stream)?;
        if n == 0 {
            return Err(Failure::Closed);
        }
        if head.is_none() {
            head = parse_head(buf)?;
        }
        if let Some(h) = &head {
            if buf.len() > h.body.end {
                // One request in flight: nothing may follow its answer.
                return Err(Failure::BadAnswer("bytes after the answer".into()));
            }
            if buf.len() == h.body.end {
                return Ok(h.clone());
            }
        }
    }
}

/// One keep-alive connection that only sends buy clicks; reopened when it breaks.
pub struct BuyConn {
    target: Arc<Target>,
    stream: Option<TcpStream>,
    timeout: Duration,
    /// `POST … HTTP/1.1` up to the Authorization header's value.
    prefix: Arc<[u8]>,
    /// The request being sent (reused).
    req: Vec<u8>,
    /// The answer being read (reused).
    buf: Vec<u8>,
    /// Connections opened, including the first.
    pub opened: u64,
}

/// After the Authorization value: end of head and the body.
const REQUEST_SUFFIX: &[u8] = b"\r\n\r\n{\"quantity\":1}";

/// The fixed part of a buy click, formatted once per run and shared by all connections.
pub fn buy_prefix(target: &Target, activity_id: u64) -> Arc<[u8]> {
    let path = target.path(&format!("/api/v1/activities/{activity_id}/buy"));
    let body_len = REQUEST_SUFFIX.len() - 4;
    format!(
        "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {body_len}\r\nauthorization: ",
        target.authority()
    )
    .into_bytes()
    .into()
}

impl BuyConn {
    pub fn new(target: Arc<Target>, prefix: Arc<[u8]>, timeout: Duration) -> BuyConn {
        let req = Vec::with_capacity(prefix.len() + 512);
        BuyConn { target, stream: None, timeout, prefix, req, buf: Vec::with_capacity(READ_CHUNK_BYTES), opened: 0 }
    }

    /// Opens the connection now (so set-up cost is paid before the clock starts).
    pub async fn connect(&mut self) -> anyhow::Result<()> {
        if self.stream.is_none() {
            let s = self.open().await.map_err(|e| self.target.unreachable(e))?;
            self.stream = Some(s);
        }
        Ok(())
    }

    async fn open(&mut self) -> Result<TcpStream, Failure> {
        let tcp = TcpStream::connect(self.target.addr).await.map_err(Failure::Connect)?;
        let _ = tcp.set_nodelay(true);
        self.opened += 1;
        Ok(tcp)
    }

    /// Sends one buy click with `auth` (`Bearer …`) and returns status and body.
    pub async fn buy(&mut self, auth: &[u8]) -> Result<(u16, &[u8]), Failure> {
        self.req.clear();
        self.req.extend_from_slice(&self.prefix);
        self.req.extend_from_slice(auth);
        self.req.extend_from_slice(REQUEST_SUFFIX);
        let res = match tokio::time::timeout(self.timeout, self.exchange()).await {
            Ok(r) => r,
            // The request may still be in flight: this connection is unusable.
            Err(_) => Err(Failure::Timeout),
        };
        match res {
            Ok(head) => {
                if head.close {
                    self.stream = None;
                }
                Ok((head.status, self.buf.get(head.body).unwrap_or_default()))
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    async fn exchange(&mut self) -> Result<Head, Failure> {
        if self.stream.is_none() {
            self.stream = Some(self.open().await?);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(Failure::Closed);
        };
        stream.write_all(&self.req).await.map_err(Failure::Stream)?;
        read_answer(stream, &mut self.buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Hands out the given pieces one read at a time, then EOF.
    struct Pieces(Vec<Vec<u8>>);

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if !self.0.is_empty() {
                let mut p = self.0.remove(0);
                let n = p.len().min(out.remaining());
                out.put_slice(&p[..n]);
                if n < p.len() {
                    self.0.insert(0, p.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    fn read(pieces: &[&[u8]]) -> Result<(u16, Vec<u8>, bool), Failure> {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let mut r = Pieces(pieces.iter().filter(|p| !p.is_empty()).map(|p| p.to_vec()).collect());
        let mut buf = Vec::new();
        let h = rt.block_on(read_answer(&mut r, &mut buf))?;
        Ok((h.status, buf[h.body].to_vec(), h.close))
    }

    const CREATED: &[u8] =
        b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n{\"order_id\":\"hello\"}";

    #[test]
    fn a_whole_answer_parses() {
        let (status, body, close) = read(&[CREATED]).expect("parses");
        assert_eq!((status, body.as_slice(), close), (201, &b"{\"order_id\":\"hello\"}"[..], false));
    }

    #[test]
    fn an_answer_split_across_reads_parses_at_every_split() {
        for i in 1..CREATED.len() {
            let (status, body, _) = read(&[&CREATED[..i], &CREATED[i..]]).expect("parses");
            assert_eq!((status, body.len()), (201, 20), "split at {i}");
        }
        let bytes: Vec<&[u8]> = CREATED.chunks(1).collect();
        assert_eq!(read(&bytes).expect("byte by byte").0, 201);
    }

    #[test]
    fn close_and_empty_bodies_are_understood() {
        let (_, _, close) =
            read(&[b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n"]).expect("parses");
        assert!(close);
        assert!(read(&[b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"]).expect("1.0").2);
        assert_eq!(read(&[b"HTTP/1.1 204 No Content\r\n\r\n"]).expect("204").1, b"");
    }

    #[test]
    fn chunked_and_missing_lengths_are_refused() {
        let chunked = read(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"]);
        assert!(matches!(chunked, Err(Failure::NoLength(_))), "{chunked:?}");
        let none = read(&[b"HTTP/1.1 200 OK\r\n\r\nhello"]);
        assert!(matches!(none, Err(Failure::NoLength(_))), "{none:?}");
        let bad = read(&[b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello"]);
        assert!(matches!(bad, Err(Failure::BadAnswer(_))), "{bad:?}");
        let twice = read(&[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"]);
        assert!(matches!(twice, Err(Failure::BadAnswer(_))), "{twice:?}");
    }

    #[test]
    fn oversized_answers_are_refused() {
        let mut head = b"HTTP/1.1 200 OK\r\nx-pad: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
        let r = read(&[&head]);
        assert!(matches!(r, Err(Failure::HeadTooLarge)), "{r:?}");
        head.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
        let r = read(&[&head]);
        assert!(matches!(r, Err(Failure::HeadTooLarge)), "{r:?}");
        let big = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", MAX_BODY_BYTES + 1);
        let r = read(&[big.as_bytes()]);
        assert!(matches!(r, Err(Failure::BodyTooLarge(n)) if n == MAX_BODY_BYTES as u64 + 1), "{r:?}");
        let at_limit = format!("HTTP/1.1 200 OK\r\ncontent-length: {MAX_BODY_BYTES}\r\n\r\n");
        let body = vec![b'x'; MAX_BODY_BYTES];
        assert_eq!(read(&[at_limit.as_bytes(), &body]).expect("at the limit").1.len(), MAX_BODY_BYTES);
    }

    #[test]
    fn garbage_short_reads_and_trailing_bytes_fail_cleanly() {
        assert!(matches!(read(&[b"SSH-2.0-OpenSSH\r\n\r\n"]), Err(Failure::BadAnswer(_))));
        assert!(matches!(read(&[b"HTTP/1.1 100 Continue\r\n\r\n"]), Err(Failure::BadAnswer(_))));
        assert!(matches!(read(&[]), Err(Failure::Closed)));
        assert!(matches!(read(&[&CREATED[..CREATED.len() - 1]]), Err(Failure::Closed)));
        let mut two = CREATED.to_vec();
        two.extend_from_slice(CREATED);
        assert!(matches!(read(&[&two]), Err(Failure::BadAnswer(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), split in 0usize..2048) {
            let split = split.min(bytes.len());
            let _ = read(&[&bytes[..split], &bytes[split..]]);
            let _ = parse_head(&bytes);
        }

        #[test]
        fn valid_answers_parse_whatever_the_split(
            status in 200u16..600,
            body in proptest::collection::vec(any::<u8>(), 0..300),
            split in 0usize..400,
        ) {
            prop_assume!(status != 204 && status != 304);
            let mut a = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            a.extend_from_slice(&body);
            let split = split.min(a.len());
            let got = read(&[&a[..split], &a[split..]]);
            prop_assert!(matches!(&got, Ok((s, b, false)) if *s == status && *b == body), "{got:?}");
        }
    }
}
