//! The connection as hyper sees it: first the bytes the buy fast path
//! already read (`fast_path::Handoff::Hyper`), then the socket; and hyper's
//! own empty error answers made JSON.
//!
//! Hyper answers some malformed requests itself, before our service sees
//! them (a request line that does not parse: 400; a head over its buffer or
//! with too many headers: 431; a URI too long: 414), with an empty body.
//! hyper 1 has no hook for those answers, so the connection's I/O is
//! wrapped: a write that is exactly such an answer (a 4xx head alone with
//! `content-length: 0`, which our service never makes: its errors all have
//! a JSON body) is replaced by the same status with a JSON error body.
//! Every other write passes through after a 10-byte prefix compare.

use hyper::rt::{Read, ReadBufCursor, Write};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

pub struct HyperIo<T> {
    inner: T,
    /// Bytes read before hyper had the connection, and how many of them
    /// hyper has taken.
    read: Vec<u8>,
    taken: usize,
    /// A replacement being written, and how many bytes of hyper's buffer
    /// to report once it is out.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<T> HyperIo<T> {
    /// `inner` with `read` (what was read from it already) in front.
    pub fn new(inner: T, read: Vec<u8>) -> Self {
        Self { inner, read, taken: 0, pending: None }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The JSON answer to write instead of `buf`, if `buf` is one of hyper's
/// own empty error answers.
pub fn replacement(buf: &[u8]) -> Option<Vec<u8>> {
    if !buf.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let (code, message) = match buf.get(9..12)? {
        b"400" => ("bad_request", "the request could not be parsed as HTTP/1.1"),
        b"414" => ("uri_too_long", "the request URI is too long"),
        b"431" => ("header_too_large", "the request head is too large or has too many headers"),
        _ => return None,
    };
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    if head_end != buf.len() || find(buf, b"\r\ncontent-length: 0\r\n").is_none() {
        return None;
    }
    let status_line_end = find(buf, b"\r\n")? + 2;
    let body = format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#);
    let mut out = Vec::with_capacity(status_line_end + 96 + body.len());
    out.extend_from_slice(buf.get(..status_line_end)?);
    out.extend_from_slice(b"content-type: application/json\r\nconnection: close\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

impl<T: Write + Unpin> HyperIo<T> {
    /// Writes the pending replacement; `Ok(claimed)` once it is all out.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some((bytes, written, claimed)) = self.pending.as_mut() else { return Poll::Ready(Ok(0)) };
        while *written < bytes.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => *written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let claimed = *claimed;
        self.pending = None;
        Poll::Ready(Ok(claimed))
    }
}

impl<T: Read + Unpin> Read for HyperIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, mut buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.taken < this.read.len() {
            let n = buf.remaining().min(this.read.len() - this.taken);
            buf.put_slice(&this.read[this.taken..this.taken + n]);
            this.taken += n;
            if this.taken == this.read.len() {
                (this.read, this.taken) = (Vec::new(), 0);
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for HyperIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.pending.is_none() {
            match replacement(buf) {
                Some(bytes) => self.pending = Some((bytes, 0, buf.len())),
                None => return Pin::new(&mut self.inner).poll_write(cx, buf),
            }
        }
        self.drive(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.pending.is_none() {
            // Hyper's own answers are a head alone: one non-empty buffer.
            let mut non_empty = bufs.iter().filter(|b| !b.is_empty());
            let only = match (non_empty.next(), non_empty.next()) {
                (Some(first), None) => replacement(first).map(|r| (r, first.len())),
                _ => None,
            };
            match only {
                Some((bytes, claimed)) => self.pending = Some((bytes, 0, claimed)),
                None => return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
            }
        }
        self.drive(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_bytes_read_come_first_then_the_socket() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b" world").await.unwrap_or_default();
        drop(a);
        let mut io = HyperIo::new(hyper_util::rt::TokioIo::new(b), b"hello".to_vec());
        let mut all = Vec::new();
        loop {
            // Smaller than what was read: hyper may take it in pieces.
            let mut space = [0u8; 4];
            let mut buf = hyper::rt::ReadBuf::new(&mut space);
            let read = std::future::poll_fn(|cx| Pin::new(&mut io).poll_read(cx, buf.unfilled())).await;
            assert!(read.is_ok(), "{read:?}");
            if buf.filled().is_empty() {
                break;
            }
            all.extend_from_slice(buf.filled());
        }
        assert_eq!(all, b"hello world");
    }

    #[test]
    fn only_hyper_s_empty_error_answers_are_replaced() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = replacement(hyper_431).unwrap_or_default();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.ends_with(&format!("content-length: {}", body.len())), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(v["error"]["code"], "header_too_large");
        // Ours (a body follows), successes, and heads with a body: untouched.
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 20\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}").is_none());
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").is_some());
    }
}
