//! The ceiling: a hyper hello-world with the front's server settings, to
//! load with `seckill load` in the same run as seckill (`scripts/bench-e2e`).
//! Whatever seckill reaches is measured against this.
//!
//!     cargo run --release -p seckill-benches --example hello -- 127.0.0.1:18300

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18300".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("hello listening on http://{addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            // POST answers like a buy (201 + a small JSON body), GET like a read.
            let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let post = req.method() == hyper::Method::POST;
                let body: &'static [u8] =
                    if post { b"{\"order_id\":\"hello\"}" } else { b"{\"id\":1,\"remaining\":1}" };
                let mut r = hyper::Response::new(Full::new(Bytes::from_static(body)));
                if post {
                    *r.status_mut() = hyper::StatusCode::CREATED;
                }
                Ok::<_, Infallible>(r)
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
