//! `seckill up`: engine + HTTP front in one process, sane defaults.

use super::{engine, front};
use anyhow::Context;
use seckill_engine::server::Address;
use seckill_front::engine_client::EngineAddr;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub engine: engine::Args,
    #[command(flatten)]
    pub http: front::HttpArgs,
    /// MySQL for the persister; `none` disables it.
    #[arg(long, env = "SECKILL_MYSQL_URL", default_value = "mysql://root@127.0.0.1:3306/seckill")]
    pub mysql_url: String,
    /// Redis for the mirror; `none` disables it.
    #[arg(long, env = "SECKILL_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Before anything records a metric, so engine and front metrics land in /metrics.
    let prometheus = front::install_metrics();
    let running = engine::start(&args.engine)?;
    let engine_addr = match &running.addr {
        Address::Unix(p) => EngineAddr::Unix(p.clone()),
        Address::Tcp(a) => EngineAddr::Tcp(*a),
    };
    let cfg = front::config(&args.http, &args.engine.data_dir, engine_addr)?;
    if args.mysql_url != "none" {
        tracing::warn!("persister (MySQL) is not built yet: orders live in the WAL only; --mysql-url is ignored");
    }
    if args.redis_url != "none" {
        tracing::warn!("Redis mirror is not built yet: --redis-url is ignored");
    }
    let rt = front::runtime()?;
    let (front, listener) = rt
        .block_on(seckill_front::bind(cfg, prometheus))
        .with_context(|| format!("binding HTTP on {}", args.http.http))?;
    println!(
        "seckill up: http://{}/api/v1  engine {}  admin {}  data {}",
        args.http.http,
        running.addr,
        running.admin_path.display(),
        args.engine.data_dir.display()
    );
    tracing::info!(http = %args.http.http, payment = %args.http.payment, "front listening");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(seckill_front::run(front, listener, async move {
        let _ = rx.await;
    }));
    let why = running.wait();
    let _ = tx.send(());
    let _ = rt.block_on(server);
    running.stop(why);
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(())
}
