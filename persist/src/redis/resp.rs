//! The mirror's batches as raw RESP: commands written straight into one
//! reused buffer, sent on a connection of its own, and only the parts of
//! the replies the mirror needs read back.
//!
//! The redis crate builds a `Cmd` per command (allocations, a `memmove`
//! per argument when the pipeline is packed) and parses every reply into a
//! `Value`; for a batch of 1000 orders that was most of the mirror
//! thread's CPU. Everything that is not a batch (connect, fence checks,
//! resync) still goes through the crate.

use redis::{ConnectionAddr, ConnectionInfo};
use std::fmt::Write as _;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Commands written into one buffer, RESP2 (`*argc`, then `$len` + bytes
/// per argument).
#[derive(Default)]
pub(crate) struct Resp {
    buf: Vec<u8>,
    cmds: usize,
    scratch: String,
}

impl Resp {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.cmds = 0;
    }

    /// Starts a command of `argc` arguments (its name included).
    pub fn cmd(&mut self, argc: usize) -> &mut Self {
        self.cmds += 1;
        self.buf.push(b'*');
        self.uint(argc as u64);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    pub fn arg(&mut self, a: impl AsRef<[u8]>) -> &mut Self {
        let a = a.as_ref();
        self.buf.push(b'$');
        self.uint(a.len() as u64);
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(a);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// A number argument, formatted in place.
    pub fn num(&mut self, v: impl Into<i128>) -> &mut Self {
        let v: i128 = v.into();
        let mut out = [0u8; 41];
        let mut i = digits(v.unsigned_abs(), &mut out);
        if v < 0 {
            i -= 1;
            out[i] = b'-';
        }
        self.arg(&out[i..])
    }

    /// An argument formatted with `Display` (through a reused `String`).
    pub fn display(&mut self, v: impl std::fmt::Display) -> &mut Self {
        let mut s = std::mem::take(&mut self.scratch);
        s.clear();
        let _ = write!(s, "{v}");
        self.arg(s.as_bytes());
        self.scratch = s;
        self
    }

    fn uint(&mut self, n: u64) {
        let mut out = [0u8; 41];
        let i = digits(u128::from(n), &mut out);
        self.buf.extend_from_slice(&out[i..]);
    }

    /// Commands written since `clear`.
    pub fn len(&self) -> usize {
        self.cmds
    }

    pub fn is_empty(&self) -> bool {
        self.cmds == 0
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// `n` in decimal at the end of `out`; returns where it starts (one byte
/// is left free before it for a sign).
fn digits(mut n: u128, out: &mut [u8; 41]) -> usize {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return i;
        }
    }
}

/// One reply, or one element of an array reply, as far as the mirror
/// looks at it (strings borrowed from the read buffer).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Item<'a> {
    /// `$…` or `+…`
    Text(&'a [u8]),
    Int(i64),
    Error(&'a [u8]),
    Nil,
    /// `*n`: its elements are not parsed.
    Array(usize),
}

impl Item<'_> {
    pub fn text(&self) -> Option<&[u8]> {
        match self {
            Item::Text(t) => Some(t),
            _ => None,
        }
    }
}

/// Nesting deeper than this is refused (the mirror's commands reply with
/// at most an array of arrays).
const DEPTH_MAX: usize = 8;
/// A single bulk string longer than this is refused.
const BULK_MAX: usize = 64 << 20;

/// The line at the start of `b` (without its `\r\n`) and its length with it.
fn line(b: &[u8]) -> Option<(&[u8], usize)> {
    let nl = b.iter().position(|&c| c == b'\n')?;
    Some((b[..nl].strip_suffix(b"\r").unwrap_or(&b[..nl]), nl + 1))
}

fn int(s: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad number in a Redis reply: {:?}", String::from_utf8_lossy(s)))
}

/// The value at the start of `b` and its length in bytes; `None` while it
/// is not complete yet.
pub(crate) fn item(b: &[u8]) -> Result<Option<(Item<'_>, usize)>, String> {
    value(b, 0)
}

fn value(b: &[u8], depth: usize) -> Result<Option<(Item<'_>, usize)>, String> {
    let Some(&kind) = b.first() else { return Ok(None) };
    let Some((head, head_len)) = line(&b[1..]) else { return Ok(None) };
    let head_len = head_len + 1;
    Ok(Some(match kind {
        b'+' => (Item::Text(head), head_len),
        b'-' => (Item::Error(head), head_len),
        b':' => (Item::Int(int(head)?), head_len),
        b'$' => {
            let n = int(head)?;
            if n < 0 {
                (Item::Nil, head_len)
            } else {
                let n = usize::try_from(n).map_err(|_| "bad length".to_string())?;
                if n > BULK_MAX {
                    return Err(format!("a Redis reply of {n} bytes"));
                }
                if b.len() < head_len + n + 2 {
                    return Ok(None);
                }
                (Item::Text(&b[head_len..head_len + n]), head_len + n + 2)
            }
        }
        b'*' => {
            let n = int(head)?;
            if n < 0 {
                (Item::Nil, head_len)
            } else {
                if depth >= DEPTH_MAX {
                    return Err("a Redis reply nested too deep".into());
                }
                let mut at = head_len;
                for _ in 0..n {
                    match value(&b[at..], depth + 1)? {
                        Some((_, len)) => at += len,
                        None => return Ok(None),
                    }
                }
                (Item::Array(n as usize), at)
            }
        }
        other => return Err(format!("unexpected Redis reply type {:?}", other as char)),
    }))
}

/// The elements of the array reply `b` (one allocation per reply, none
/// per element).
pub(crate) fn elements(b: &[u8]) -> Result<Vec<Item<'_>>, String> {
    let Some((Item::Array(n), _)) = item(b)? else {
        return Err(format!("expected an array reply, got {:?}", item(b)?.map(|(i, _)| i)));
    };
    let (_, mut at) = line(&b[1..]).ok_or("truncated reply")?;
    at += 1;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (v, len) = value(&b[at..], 1)?.ok_or("truncated reply")?;
        out.push(v);
        at += len;
    }
    Ok(out)
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// A plain Redis connection for batches: write a buffer, read a known
/// number of replies back.
pub(crate) struct Link {
    stream: Stream,
    rbuf: Vec<u8>,
    /// Where each reply of the last exchange starts and ends in `rbuf`.
    spans: Vec<(usize, usize)>,
}

impl Link {
    /// Connects and authenticates / selects the database as the URL says.
    pub async fn open(info: &ConnectionInfo, timeout: Duration) -> Result<Link, String> {
        let stream = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(|e| e.to_string())?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                Stream::Tcp(s)
            }
            ConnectionAddr::Unix(path) => {
                Stream::Unix(tokio::net::UnixStream::connect(path).await.map_err(|e| e.to_string())?)
            }
            other => return Err(format!("the mirror does not support {other:?}")),
        };
        let mut link = Link { stream, rbuf: Vec::with_capacity(64 << 10), spans: Vec::new() };
        let settings = info.redis_settings();
        let mut hello = Resp::default();
        match (settings.username(), settings.password()) {
            (Some(u), Some(p)) => drop(hello.cmd(3).arg("AUTH").arg(u).arg(p)),
            (None, Some(p)) => drop(hello.cmd(2).arg("AUTH").arg(p)),
            _ => {}
        }
        if settings.db() != 0 {
            hello.cmd(2).arg("SELECT").num(settings.db());
        }
        if !hello.is_empty() {
            let n = link.exchange(&hello, timeout).await?;
            for i in 0..n {
                if let Item::Error(e) = link.reply(i)? {
                    return Err(format!("Redis refused the mirror's connection: {}", String::from_utf8_lossy(e)));
                }
            }
        }
        Ok(link)
    }

    /// Sends `req` and reads one reply per command; returns their number.
    /// An `EXEC` counts as one reply (its array).
    pub async fn exchange(&mut self, req: &Resp, timeout: Duration) -> Result<usize, String> {
        match tokio::time::timeout(timeout, self.exchange_now(req)).await {
            Ok(r) => r,
            Err(_) => Err(format!("Redis did not answer within {} ms", timeout.as_millis())),
        }
    }

    async fn exchange_now(&mut self, req: &Resp) -> Result<usize, String> {
        let io = |e: std::io::Error| format!("Redis: {e}");
        match &mut self.stream {
            Stream::Tcp(s) => s.write_all(req.bytes()).await.map_err(io)?,
            Stream::Unix(s) => s.write_all(req.bytes()).await.map_err(io)?,
        }
        self.rbuf.clear();
        self.spans.clear();
        let mut at = 0;
        while self.spans.len() < req.len() {
            if let Some((_, len)) = item(&self.rbuf[at..])? {
                self.spans.push((at, at + len));
                at += len;
                continue;
            }
            if self.rbuf.len() == self.rbuf.capacity() {
                self.rbuf.reserve(self.rbuf.capacity().max(64 << 10));
            }
            let n = match &mut self.stream {
                Stream::Tcp(s) => s.read_buf(&mut self.rbuf).await.map_err(io)?,
                Stream::Unix(s) => s.read_buf(&mut self.rbuf).await.map_err(io)?,
            };
            if n == 0 {
                return Err("Redis closed the connection".into());
            }
        }
        Ok(self.spans.len())
    }

    /// Reply `i` of the last exchange.
    pub fn reply(&self, i: usize) -> Result<Item<'_>, String> {
        let (from, to) = *self.spans.get(i).ok_or("no such reply")?;
        Ok(item(&self.rbuf[from..to])?.ok_or("truncated reply")?.0)
    }

    /// The raw bytes of reply `i` (for `elements`).
    pub fn raw(&self, i: usize) -> &[u8] {
        self.spans.get(i).map_or(&[], |&(from, to)| &self.rbuf[from..to])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_resp_and_replies_parse_without_copies() {
        let mut r = Resp::default();
        r.cmd(4).arg("SET").arg("k").num(-42i64).display(7u8);
        assert_eq!(r.bytes(), b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n-42\r\n$1\r\n7\r\n");
        r.clear();
        r.cmd(2).num(0u64).num(u64::MAX);
        assert_eq!(r.bytes(), b"*2\r\n$1\r\n0\r\n$20\r\n18446744073709551615\r\n");
        assert_eq!(r.len(), 1);

        let exec = b"*5\r\n$2\r\n17\r\n$-1\r\n:3\r\n-WRONGTYPE no\r\n*2\r\n+a\r\n*0\r\n+OK\r\n";
        let (it, len) = item(exec).unwrap().unwrap();
        assert_eq!((it, len), (Item::Array(5), exec.len() - 5));
        let els = elements(exec).unwrap();
        assert_eq!(els[0].text(), Some(&b"17"[..]));
        assert_eq!(els[1], Item::Nil);
        assert_eq!(els[2], Item::Int(3));
        assert_eq!(els[3], Item::Error(b"WRONGTYPE no"));
        assert_eq!(els[4], Item::Array(2));
        // Incomplete at every cut: never a wrong value, only "not yet".
        for cut in 0..len {
            assert_eq!(item(&exec[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(item(b"?x\r\n").is_err());
        assert!(item(b"$abc\r\n").is_err());
    }
}
