//! `seckill demo`: a whole flash sale for a newcomer, in one command.
//!
//! Starts the real service (durable engine + HTTP front) on a temporary data
//! dir, creates an activity, fires a burst of buyers at it over HTTP with
//! the load generator, verifies the invariants through the public API,
//! prints a short report, and stops cleanly.

use super::{engine, front, load, up};
use anyhow::{ensure, Context};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Units on sale.
    #[arg(long, env = "SECKILL_DEMO_STOCK", default_value_t = 10_000)]
    stock: u64,
    /// Distinct buyers, each clicking buy once.
    #[arg(long, env = "SECKILL_DEMO_BUYERS", default_value_t = 50_000)]
    buyers: u64,
    /// HTTP connections the buyers share.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// `fsync` (default, what production runs) or `none`.
    #[arg(long, default_value = "fsync")]
    durability: seckill_engine::wal::Durability,
    /// Keep the data dir (printed at the end) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.stock >= 1 && args.buyers >= 1, "--stock and --buyers must be at least 1");
    // Private like every data dir (orders and secrets live in it).
    let tmp = tempfile::Builder::new()
        .prefix("seckill-demo-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .context("creating a temp data dir")?;
    let data_dir = tmp.path().to_path_buf();
    let http = free_port()?;
    let up_args = up::Args {
        engine: engine::Args {
            data_dir: data_dir.clone(),
            engine: None,
            durability: args.durability,
            shards: None,
            queue_capacity: 4096,
            buys_per_minute: 1_000_000,
            group_commit_window_us: seckill_engine::GROUP_COMMIT_WINDOW_US_DEFAULT,
            snapshot_every: 1_000_000,
            wal_segment_bytes: 64 * 1024 * 1024,
            // The demo keeps to itself: the WAL is its system of record, and
            // it never writes into a MySQL or Redis someone else uses.
            mysql_url: "none".into(),
            redis_url: "none".into(),
            admin_idle_timeout: seckill_engine::server::admin::IDLE_TIMEOUT_DEFAULT.as_secs(),
            metrics: front::MetricsArgs { metrics: seckill_front::metrics_http::MetricsAddr::Off },
        },
        http: front::HttpArgs {
            http,
            payment: "sandbox".into(),
            jwt_issuer: None,
            jwt_audience: None,
            engine_connections: 4,
            http_connections_max: seckill_front::CONNECTIONS_MAX,
            http_connections_per_ip: seckill_front::CONNECTIONS_PER_IP_MAX,
            ip_requests_per_s: seckill_front::IP_REQUESTS_PER_S,
            activity_cache_ms: seckill_front::ACTIVITY_CACHE_TTL_MS,
        },
    };
    println!("seckill demo: starting the service on http://{http} (data dir {})", data_dir.display());
    println!(
        "  MySQL persister: off, Redis mirror: off (the WAL is the system of record); durability {:?}",
        args.durability
    );
    let service = up::Service::start(&up_args, None)?;
    let activity_id = load::setup_activity(&data_dir, args.stock, 1)?;
    println!(
        "  activity {activity_id}: {} units, 1 per buyer; {} buyers over {} connections\n",
        args.stock, args.buyers, args.connections
    );
    let cfg = load::LoadConfig {
        url: format!("http://{http}"),
        activity_id,
        auth_secret: load::auth_secret(&data_dir)?,
        first_user: 1,
        users: args.buyers,
        connections: args.connections,
        rate: None,
        stop: load::Stop::Requests(args.buyers),
        timeout: Duration::from_secs(30),
        progress: true,
    };
    let rt = front::runtime()?;
    let result = rt.block_on(async {
        let report = load::run_load(cfg.clone()).await?;
        let verify_cfg = load::VerifyConfig {
            url: cfg.url.clone(),
            activity_id,
            auth_secret: cfg.auth_secret.clone(),
            connections: 32,
            timeout: cfg.timeout,
            only_buyers: true,
        };
        let verified = load::verify(&verify_cfg, &report).await?;
        anyhow::Ok((report, verified))
    });
    drop(rt);
    service.stop("demo finished");
    let (report, verified) = result?;
    print!("{}", report.to_text());
    print!("{}", verified.to_text());
    if args.keep {
        let kept = tmp.keep();
        println!("data dir kept at {}", kept.display());
    }
    ensure!(verified.passed, "verification failed: see the FAIL lines above");
    println!("\ndemo OK. Next: `seckill up` runs the service; see README.md for curl examples.");
    Ok(())
}
