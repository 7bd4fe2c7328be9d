//! `seckill demo`: a whole flash sale for a newcomer, in one command.
//!
//! Starts the real service (durable engine + HTTP front, and the MySQL
//! persister and Redis mirror when those servers are reachable) on a
//! temporary data dir, creates an activity, fires a burst of buyers at it
//! over HTTP with the load generator, verifies the invariants through the
//! public API, waits for the MySQL and Redis copies to catch up and checks
//! them, prints a short report, and stops cleanly (or, with `--serve`,
//! keeps running until Ctrl-C).

mod copies;

use super::{admin, engine, front, load, up};
use anyhow::{ensure, Context};
use copies::{Expected, Outcome, Plan};
use seckill_front::metrics_http::MetricsAddr;
use seckill_persist::redact_url;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
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
    /// MySQL for the persister's copy, or `none`. The demo drops and recreates
    /// this database every run, so its name must start with `seckill_demo`.
    /// Unreachable: the copy is skipped (and the report says how to start it).
    #[arg(long, env = "SECKILL_DEMO_MYSQL_URL", default_value = copies::MYSQL_URL, hide_env_values = true)]
    mysql_url: String,
    /// Redis for the mirror's copy, or `none`. The demo deletes the `seckill:*`
    /// keys of this database every run. Unreachable: the copy is skipped.
    #[arg(long, env = "SECKILL_DEMO_REDIS_URL", default_value = copies::REDIS_URL, hide_env_values = true)]
    redis_url: String,
    /// Fail instead of skipping a copy whose server cannot be used.
    #[arg(long, env = "SECKILL_DEMO_REQUIRE_SERVICES")]
    require_services: bool,
    /// How long the MySQL and Redis copies may take to catch up after the sale.
    #[arg(long, value_parser = load::parse_duration, default_value = "30s")]
    catch_up_timeout: Duration,
    /// After the report keep the service running (buyer HTTP, metrics,
    /// dashboard) and print its URLs; Ctrl-C stops it.
    #[arg(long)]
    serve: bool,
    /// Buyer HTTP address [default: a free port; with --serve 127.0.0.1:8080 when free].
    #[arg(long)]
    http: Option<SocketAddr>,
    /// With --serve: the operator's listener (`/metrics`, `/dashboard`), HOST:PORT or `none`.
    #[arg(long, default_value = super::METRICS_DEFAULT)]
    metrics: MetricsAddr,
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?)
}

/// `--http`, else 127.0.0.1:8080 for `--serve` when nothing listens there, else a free port.
fn http_addr(args: &Args) -> anyhow::Result<SocketAddr> {
    if let Some(a) = args.http {
        return Ok(a);
    }
    let usual = SocketAddr::from(([127, 0, 0, 1], 8080));
    if args.serve && TcpListener::bind(usual).is_ok() {
        return Ok(usual);
    }
    free_port()
}

/// The closing table: one row per copy of the sale.
fn table(rows: &[Outcome]) -> String {
    let w = rows.iter().map(|r| r.copy.len()).max().unwrap_or(0).max(4);
    let mut s = format!("  {:<w$}  {:<8}  {}\n", "copy", "state", "what was checked");
    for r in rows {
        let mut lines = r.detail.lines();
        s.push_str(&format!("  {:<w$}  {:<8}  {}\n", r.copy, r.state, lines.next().unwrap_or_default()));
        for more in lines {
            s.push_str(&format!("  {:<w$}  {:<8}  {more}\n", "", ""));
        }
    }
    s
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.stock >= 1 && args.buyers >= 1, "--stock and --buyers must be at least 1");
    // The load generator and the copies' checks (the service has its own).
    let rt = front::runtime(std::thread::available_parallelism().map_or(2, |n| n.get()).max(2))?;

    // The copies first: a missing server is said before anything starts.
    let (mysql, redis) = prepare_copies(&rt, &args)?;

    // Private like every data dir (orders and secrets live in it).
    let tmp = tempfile::Builder::new()
        .prefix("seckill-demo-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .context("creating a temp data dir")?;
    let data_dir = tmp.path().to_path_buf();
    let http = http_addr(&args)?;
    let metrics = if args.serve { args.metrics } else { MetricsAddr::Off };
    let up_args = service_args(&args, &data_dir, http, metrics, &mysql, &redis);
    println!("seckill demo: starting the service on http://{http} (data dir {})", data_dir.display());
    println!(
        "  durability {}; the WAL is the system of record, MySQL and Redis are copies fed from it",
        format!("{:?}", args.durability).to_lowercase()
    );
    for (name, plan) in [("MySQL persister", &mysql), ("Redis mirror   ", &redis)] {
        match plan {
            Plan::On { url } => println!("  {name}  on: {} (emptied for this run)", redact_url(url)),
            Plan::Skipped { why, .. } => println!("  {name}  OFF: {why}; the demo runs without this copy"),
        }
    }
    // The metrics recorder only when someone can read it (`--serve`).
    let prometheus = if args.serve { front::install_metrics() } else { None };
    let service = up::Service::start(&up_args, prometheus)?;
    let selling = interrupt_watch(&service, &data_dir, args.keep);
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
    let sale = rt.block_on(load::run_load(cfg.clone())).and_then(|report| {
        print!("{}", report.to_text());
        // The copies catch up while nothing else writes; then the checks.
        let caught_up = wait_for_copies(&service, &mysql, &redis, args.catch_up_timeout)?;
        let verify_cfg = load::VerifyConfig {
            url: cfg.url.clone(),
            activity_id,
            auth_secret: cfg.auth_secret.clone(),
            connections: 32,
            timeout: cfg.timeout,
            only_buyers: true,
        };
        let verified = rt.block_on(load::verify(&verify_cfg, &report))?;
        print!("{}", verified.to_text());
        anyhow::Ok((report, caught_up, verified))
    });
    let (report, caught_up, verified) = match sale {
        Ok(r) => r,
        Err(e) => {
            drop(rt);
            service.stop("demo failed");
            return Err(e);
        }
    };

    let outcomes = outcomes(&rt, &data_dir, (&mysql, &redis), &report, &caught_up, &verified, activity_id);
    println!("\nthe sale and its copies:");
    print!("{}", table(&outcomes));
    let passed = outcomes.iter().all(|o| o.state != "FAILED");
    print_where_to_look(&mysql, &redis, activity_id);

    // From here a Ctrl-C is `--serve`'s ordinary stop, not an interruption.
    selling.store(false, AtomicOrdering::Release);
    if args.serve {
        serve(&service, &data_dir, http, metrics, passed);
    }
    drop(rt);
    let why = if args.serve { service.wait() } else { "demo finished" };
    service.stop(why);
    if args.keep {
        let kept = tmp.keep();
        println!("data dir kept at {}", kept.display());
    }
    ensure!(passed, "verification failed: see the FAIL lines and the FAILED rows above");
    print_verdict(&outcomes, args.serve);
    Ok(())
}

/// Empties the demo's MySQL database and Redis db, or says why a copy is
/// skipped; with `--require-services` a skipped copy is an error.
fn prepare_copies(rt: &tokio::runtime::Runtime, args: &Args) -> anyhow::Result<(Plan, Plan)> {
    let mysql = copies::prepare_mysql(rt, &args.mysql_url)?;
    let redis = copies::prepare_redis(&args.redis_url)?;
    if args.require_services {
        for plan in [&mysql, &redis] {
            if let Plan::Skipped { why, fix } = plan {
                anyhow::bail!("{why}, and --require-services is set: {fix}");
            }
        }
    }
    Ok((mysql, redis))
}

/// The last words of a demo that passed: which copies agree, what next.
fn print_verdict(outcomes: &[Outcome], serve: bool) {
    let skipped: Vec<&str> = outcomes.iter().filter(|o| o.state == "skipped").map(|o| o.copy).collect();
    if skipped.is_empty() {
        println!("\ndemo OK: the engine, MySQL and Redis agree.");
    } else {
        let copy = if skipped.len() > 1 { "copies" } else { "copy" };
        println!("\ndemo OK, without the {} {copy} (skipped, see above).", skipped.join(" and "));
    }
    if !serve {
        println!("Next: `seckill demo --serve` keeps it running; `seckill up` runs the service (README.md).");
    }
}

/// `seckill up`'s arguments for the demo: a private temp data dir, the demo's
/// own MySQL database and Redis db (or none), the usual defaults otherwise.
fn service_args(
    args: &Args,
    data_dir: &Path,
    http: SocketAddr,
    metrics: MetricsAddr,
    mysql: &Plan,
    redis: &Plan,
) -> up::Args {
    up::Args {
        engine: engine::Args {
            data_dir: data_dir.to_path_buf(),
            engine: None,
            durability: args.durability,
            shards: None,
            queue_capacity: seckill_engine::limits::QUEUE_CAPACITY_DEFAULT,
            buys_per_minute: 1_000_000,
            group_commit_window_us: seckill_engine::limits::GROUP_COMMIT_WINDOW_US_DEFAULT,
            snapshot_every: seckill_engine::limits::SNAPSHOT_EVERY_RECORDS_DEFAULT,
            wal_segment_bytes: seckill_engine::limits::SEGMENT_BYTES_DEFAULT,
            // Only the demo's own database and Redis db (prepared above), never
            // the ones `seckill up` uses by default.
            mysql_url: mysql.url().unwrap_or("none").to_string(),
            redis_url: redis.url().unwrap_or("none").to_string(),
            redis_order_hashes: false,
            admin_idle_timeout: seckill_server::admin::IDLE_TIMEOUT_DEFAULT.as_secs(),
            group: 0,
            replica_id: None,
            peers: None,
            join: false,
            replica_listen: None,
            replica_dial: None,
            replica_election_timeout_ms: 1000,
            replica_snapshot_entries: 10_000,
            peer_engines: None,
            metrics: front::MetricsArgs { metrics },
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
            front_threads: None,
        },
    }
}

/// One row per copy: the engine's own checks, then MySQL and Redis checked
/// against what the sale acknowledged (or why they were skipped or behind).
fn outcomes(
    rt: &tokio::runtime::Runtime,
    data_dir: &Path,
    (mysql, redis): (&Plan, &Plan),
    report: &load::LoadReport,
    caught_up: &CaughtUp,
    verified: &load::VerifyReport,
    activity_id: u64,
) -> Vec<Outcome> {
    let want = Expected {
        activity_id,
        total_stock: verified.total_stock,
        remaining: verified.remaining,
        orders: &report.orders,
        lsn: caught_up.lsn,
    };
    let wal = format!(
        "{} orders fsynced and read back over HTTP; {} checks {}",
        report.orders.len(),
        verified.checks.len(),
        if verified.passed { "passed" } else { "run, some FAILED (above)" }
    );
    let mut outcomes = vec![if verified.passed {
        Outcome::verified("engine (WAL)", wal)
    } else {
        Outcome::failed("engine (WAL)", wal)
    }];
    outcomes.push(match (mysql, &caught_up.mysql) {
        (Plan::Skipped { why, fix }, _) => Outcome::skipped("MySQL", why, fix),
        (Plan::On { url }, Ok(_)) => copies::check_mysql(rt, data_dir, url, &want),
        (Plan::On { .. }, Err(e)) => Outcome::failed("MySQL", e.clone()),
    });
    outcomes.push(match (redis, &caught_up.redis) {
        (Plan::Skipped { why, fix }, _) => Outcome::skipped("Redis", why, fix),
        (Plan::On { url }, Ok(_)) => copies::check_redis(url, &want),
        (Plan::On { .. }, Err(e)) => Outcome::failed("Redis", e.clone()),
    });
    outcomes
}

/// The commands that show the copies, for whoever wants to look.
fn print_where_to_look(mysql: &Plan, redis: &Plan, activity_id: u64) {
    if let Some(url) = mysql.url() {
        let db = url.rsplit_once('/').map_or("", |(_, d)| d);
        println!("  look: mysql -uroot {db} -e 'SELECT status, COUNT(*) FROM orders GROUP BY status'");
    }
    if let Some(url) = redis.url() {
        let db = url.rsplit_once('/').map_or("0", |(_, d)| d);
        println!(
            "        redis-cli -n {db} HGETALL seckill:activity:{activity_id}; redis-cli -n {db} XLEN seckill:events"
        );
    }
}

/// Ctrl-C or SIGTERM while the sale or its checks run: the engine's signal
/// handler only records it (for `Running::wait`), so without this the demo
/// would go on to the end. Stops the process at once (exit 130), removing
/// the data dir unless `--keep`. Once the returned flag is cleared, a
/// signal is handed back to `Running::wait` instead (`--serve`, the stop).
fn interrupt_watch(service: &up::Service, data_dir: &std::path::Path, keep: bool) -> Arc<AtomicBool> {
    let selling = Arc::new(AtomicBool::new(true));
    let (tx, rx) = service.running.stop_signal();
    let (flag, dir) = (selling.clone(), data_dir.to_path_buf());
    let watcher = std::thread::Builder::new().name("demo-interrupt".into()).spawn(move || {
        let Ok(why) = rx.recv() else { return };
        if !flag.load(AtomicOrdering::Acquire) {
            let _ = tx.try_send(why);
            return;
        }
        eprintln!("\nseckill demo: interrupted ({why}); stopping without a report");
        if !keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
        std::process::exit(130);
    });
    if let Err(e) = watcher {
        tracing::warn!(error = %e, "no Ctrl-C watcher: the demo runs to its end");
    }
    selling
}

/// Where the copies got to after the sale.
struct CaughtUp {
    /// Everything the engine decided is durable up to here.
    lsn: u64,
    /// How long each copy took to reach `lsn`, or why it did not.
    mysql: Result<Duration, String>,
    redis: Result<Duration, String>,
}

/// Makes everything durable, then waits (up to `timeout` in all) until the
/// persister and the mirror have it; says how long they took.
fn wait_for_copies(service: &up::Service, mysql: &Plan, redis: &Plan, timeout: Duration) -> anyhow::Result<CaughtUp> {
    let since = std::time::Instant::now();
    let deadline = since + timeout;
    let node = &service.running.node;
    node.engine.sync().map_err(|e| anyhow::anyhow!("the engine could not sync its log: {}", e.message))?;
    let lsn = node.wal.status.durable_lsn.load(AtomicOrdering::Acquire);
    let off = || Err("off".to_string());
    let behind = |what: &str, lag: u64, err: Option<String>| {
        format!(
            "the {what} is still {lag} records behind after {} s (last error: {}); `seckill admin stats` shows it",
            timeout.as_secs_f64(),
            err.unwrap_or_else(|| "none".into())
        )
    };
    if mysql.url().is_some() || redis.url().is_some() {
        println!("copies: waiting for them to reach LSN {lsn} (at most {} s)", timeout.as_secs_f64());
    }
    let mysql = match (mysql.url(), service.running.persister()) {
        (None, _) => off(),
        (Some(_), None) => Err("the persister did not start".into()),
        (Some(_), Some(p)) => copies::wait_for(lsn, since, deadline, || p.applied_lsn())
            .ok_or_else(|| behind("persister", p.lag_records(), p.last_error())),
    };
    let redis = match (redis.url(), service.running.mirror()) {
        (None, _) => off(),
        (Some(_), None) => Err("the mirror did not start".into()),
        (Some(_), Some(m)) => copies::wait_for(lsn, since, deadline, || m.applied_lsn())
            .ok_or_else(|| behind("mirror", m.lag_records(), m.last_error())),
    };
    for (name, r) in [("MySQL", &mysql), ("Redis", &redis)] {
        match r {
            Ok(took) => println!("  {name} caught up {:.2} s after the last buy", took.as_secs_f64()),
            Err(e) if e != "off" => println!("  {name}: {e}"),
            Err(_) => {}
        }
    }
    Ok(CaughtUp { lsn, mysql, redis })
}

/// `--serve`: a second sale that starts in a minute (so the buyer page has a
/// countdown), then the URLs.
fn serve(service: &up::Service, data_dir: &std::path::Path, http: SocketAddr, metrics: MetricsAddr, passed: bool) {
    use time::format_description::well_known::Rfc3339;
    let now = time::OffsetDateTime::now_utc();
    let at = |d: time::Duration| (now + d).format(&Rfc3339).unwrap_or_default();
    let next = serde_json::json!({
        "title": "demo: the next sale",
        "price_cents": 4900,
        "stock": 100,
        "starts_at": at(time::Duration::minutes(1)),
        "ends_at": at(time::Duration::hours(1)),
        "per_user_limit": 2,
    });
    let next = match admin::call(data_dir, "activity.create", &next.to_string()) {
        Ok(a) => format!("activity {} starts at {} (100 units)", a["id"], a["starts_at"].as_str().unwrap_or("?")),
        Err(e) => format!("could not be created ({e:#})"),
    };
    let dir = data_dir.display();
    println!("\nthe service keeps running{}:", if passed { "" } else { " (the checks FAILED, see above)" });
    println!("  buyer HTTP   http://{http}/api/v1/activities");
    match metrics {
        MetricsAddr::At(m) => {
            println!("  metrics      http://{m}/metrics");
            println!("  dashboard    http://{m}/dashboard");
        }
        MetricsAddr::Off => println!("  metrics      off (--metrics none)"),
    }
    println!("  next sale    {next}");
    println!("  a buyer      TOKEN=$(seckill token --data-dir {dir} --user 42)");
    println!("  an operator  seckill admin --data-dir {dir} activity list");
    println!("  engine       {} (admin {})", service.running.addr, service.running.admin_path.display());
    println!("Ctrl-C stops it (and deletes the data dir unless --keep).");
}
