//! The ceiling: a hyper hello-world with the front's server settings, to
//! load with `seckill load` in the same run as seckill (`scripts/bench-e2e`).
//! Whatever seckill reaches is measured against this.
//!
//!     cargo run --release -p seckill-benches --example hello -- 127.0.0.1:18300

mod common;

use bytes::Bytes;
use http_body_util::Full;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18300".into());
    // POST answers like a buy (201 + a small JSON body), GET like a read.
    common::serve("hello", &addr, |req| async move {
        let post = req.method() == hyper::Method::POST;
        let body: &'static [u8] = if post { b"{\"order_id\":\"hello\"}" } else { b"{\"id\":1,\"remaining\":1}" };
        let mut r = hyper::Response::new(Full::new(Bytes::from_static(body)));
        if post {
            *r.status_mut() = hyper::StatusCode::CREATED;
        }
        r
    })
    .await
}
