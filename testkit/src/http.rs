//! A tiny blocking HTTP/1.1 client for tests: one request per fresh
//! connection, the answer as it came (status, headers, body), so tests can
//! send malformed requests and see exactly what a server answers.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

/// An HTTP answer.
#[derive(Debug)]
pub struct HttpResp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResp {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (with the body) if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("status {}: body is not JSON ({e}): {:?}", self.status, self.text()))
    }
}

/// One request on a fresh connection; panics on I/O errors.
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResp {
    try_request(port, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"))
}

/// One request on a fresh connection (`Connection: close`, `Content-Length`).
pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResp> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    raw_request(port, &raw)
}

/// Writes `raw` bytes as they are and reads one HTTP/1.1 answer.
pub fn raw_request(port: u16, raw: &[u8]) -> std::io::Result<HttpResp> {
    raw_request_within(port, raw, Duration::from_secs(30))
}

/// `raw_request` that gives up (an error) when a read or write waits longer than `timeout`.
pub fn raw_request_within(port: u16, raw: &[u8], timeout: Duration) -> std::io::Result<HttpResp> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(raw)?;
    read_response(s)
}

/// Reads one HTTP/1.1 answer from `s`.
pub fn read_response(s: std::net::TcpStream) -> std::io::Result<HttpResp> {
    read_response_from(&mut BufReader::new(s))
}

/// Reads the next HTTP/1.1 answer from `r` (one of several on a keep-alive
/// connection, when each has a `Content-Length`).
pub fn read_response_from(r: &mut impl BufRead) -> std::io::Result<HttpResp> {
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(bad(format!("bad status line {line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("bad status line {line:?}")));
    }
    let status: u16 = code.parse().map_err(|_| bad(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("connection closed inside the headers".into()));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').ok_or_else(|| bad(format!("bad header line {l:?}")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let resp = HttpResp { status, headers, body: Vec::new() };
    let len =
        resp.header("content-length").map(|v| v.parse::<usize>().map_err(|_| bad(format!("content-length {v:?}"))));
    let mut body = Vec::new();
    match len {
        Some(n) => {
            body.resize(n?, 0);
            r.read_exact(&mut body)?;
        }
        None => {
            r.read_to_end(&mut body)?;
        }
    }
    Ok(HttpResp { body, ..resp })
}
