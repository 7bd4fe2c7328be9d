//! `seckill front`: an HTTP front alone, forwarding to an engine.

use anyhow::Context;
use seckill_front::{secrets, FrontConfig};
use seckill_proto::Address;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Clone, Debug)]
#[group(id = "http_options")]
pub struct HttpArgs {
    /// HTTP listen address.
    #[arg(long, env = "SECKILL_HTTP", default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// `notify`: orders are paid by signed provider callbacks only. `sandbox`: also POST /orders/{id}/pay.
    #[arg(long, env = "SECKILL_PAYMENT", default_value = "notify", value_parser = ["notify", "sandbox"])]
    pub payment: String,
    /// When set, bearer tokens must carry this `iss` claim.
    #[arg(long, env = "SECKILL_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// When set, bearer tokens must carry this `aud` claim.
    #[arg(long, env = "SECKILL_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Pipelined connections from this front to the engine.
    #[arg(long, env = "SECKILL_ENGINE_CONNECTIONS", default_value_t = 4)]
    pub engine_connections: usize,
    /// HTTP connections served at once; more wait in the accept backlog.
    #[arg(long, env = "SECKILL_HTTP_CONNECTIONS_MAX", default_value_t = seckill_front::CONNECTIONS_MAX)]
    pub http_connections_max: usize,
    /// HTTP connections one client address (IPv4, or IPv6 /64) may hold open;
    /// more get 429 and are closed. 0: no cap (behind a proxy that limits).
    #[arg(long, env = "SECKILL_HTTP_CONNECTIONS_PER_IP", default_value_t = seckill_front::CONNECTIONS_PER_IP_MAX)]
    pub http_connections_per_ip: u32,
    /// Anonymous requests (activity reads, unknown paths) per second per client
    /// address, in bursts of twice that; more get 429. 0: no limit.
    #[arg(long, env = "SECKILL_IP_REQUESTS_PER_S", default_value_t = seckill_front::IP_REQUESTS_PER_S)]
    pub ip_requests_per_s: u32,
    /// Activity views (GET /activities*) are answered from the front's cache
    /// for this long; `remaining` may lag by as much. 0: no cache.
    #[arg(long, env = "SECKILL_ACTIVITY_CACHE_MS", default_value_t = seckill_front::ACTIVITY_CACHE_TTL_MS)]
    pub activity_cache_ms: u64,
    /// Threads serving HTTP. 1 runs the front on a single-threaded runtime:
    /// no work stealing, and the engine's answers wake one thread
    /// (docs/PERFORMANCE.md). [default: 1 on up to 2 cores, else one per core]
    #[arg(long, env = "SECKILL_FRONT_THREADS")]
    pub front_threads: Option<usize>,
}

/// Most HTTP threads (`--front-threads`).
pub const FRONT_THREADS_MAX: usize = 256;

impl HttpArgs {
    /// `--front-threads` or its default for this machine's cores.
    pub fn front_threads(&self) -> anyhow::Result<usize> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let n = self.front_threads.unwrap_or(if cores <= 2 { 1 } else { cores });
        anyhow::ensure!((1..=FRONT_THREADS_MAX).contains(&n), "--front-threads must be 1..={FRONT_THREADS_MAX}");
        Ok(n)
    }
}

/// The operator's listener, apart from the buyer port.
#[derive(clap::Args, Clone, Debug)]
#[group(id = "metrics_options")]
pub struct MetricsArgs {
    /// The operator's listener: `GET /metrics` (Prometheus text) and, on
    /// `up` and `engine`, the live dashboard at `/dashboard`. HOST:PORT, or
    /// `none`. Never on the buyer port; keep it on loopback or a private network.
    #[arg(long, env = "SECKILL_METRICS", default_value = super::METRICS_DEFAULT)]
    pub metrics: seckill_front::metrics_http::MetricsAddr,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Data dir shared with the engine (secrets are read from it).
    #[arg(long, env = "SECKILL_DATA_DIR", default_value = super::DATA_DIR_DEFAULT)]
    pub data_dir: PathBuf,
    /// Engine address: unix:PATH or tcp:HOST:PORT [default: unix:<data-dir>/engine.sock].
    /// For a replica group, every replica's address, comma-separated
    /// (`tcp:A,tcp:B,tcp:C`): the front sends to the leader and follows it.
    #[arg(long, env = "SECKILL_ENGINE", value_name = "ADDRESS[,ADDRESS...]")]
    pub engine: Option<String>,
    /// Another group of engines (docs/OPERATIONS.md, "Several groups"):
    /// `N=ADDRESS[,ADDRESS...]`, its number (the engines' `--group N`) and
    /// its engine or replicas; repeat it for each group (in the environment,
    /// separated by `;`). Requests then go to the group their activity or
    /// order id names; `--engine` (when given) is group 0.
    #[arg(
        long = "engine-group",
        env = "SECKILL_ENGINE_GROUPS",
        value_delimiter = ';',
        value_name = "N=ADDRESS[,ADDRESS...]"
    )]
    pub engine_groups: Vec<String>,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// `--engine`: one address, or a group's replicas separated by commas.
pub fn parse_engines(text: &str) -> anyhow::Result<Vec<Address>> {
    let engines = text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<Address>().map_err(|e| anyhow::anyhow!("--engine: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let max = seckill_front::engine_client::ENGINES_MAX;
    anyhow::ensure!((1..=max).contains(&engines.len()), "--engine takes 1..={max} addresses");
    anyhow::ensure!(
        engines.iter().enumerate().all(|(i, a)| !engines[..i].contains(a)),
        "--engine names an address twice"
    );
    Ok(engines)
}

/// `--engine-group N=ADDRESS[,ADDRESS...]`, each group once, at most
/// `GROUPS_MAX`; group 0 only when `--engine` is not given.
pub fn parse_engine_groups(texts: &[String], has_engine: bool) -> anyhow::Result<Vec<(u8, Vec<Address>)>> {
    let max = seckill_proto::GROUPS_MAX;
    let mut groups: Vec<(u8, Vec<Address>)> = Vec::new();
    for text in texts.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        let (n, addrs) = text
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--engine-group {text}: expected N=ADDRESS[,ADDRESS...]"))?;
        let group = n
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|g| (*g as usize) < max)
            .ok_or_else(|| anyhow::anyhow!("--engine-group {text}: the group must be 0..={}", max - 1))?;
        anyhow::ensure!(!(group == 0 && has_engine), "--engine-group 0=… and --engine both name group 0");
        anyhow::ensure!(groups.iter().all(|(g, _)| *g != group), "--engine-group names group {group} twice");
        groups.push((group, parse_engines(addrs).with_context(|| format!("--engine-group {text}"))?));
    }
    let all: Vec<&Address> = groups.iter().flat_map(|(_, a)| a).collect();
    anyhow::ensure!(
        all.iter().enumerate().all(|(i, a)| !all[..i].contains(a)),
        "--engine-group names one address in two groups"
    );
    Ok(groups)
}

pub fn config(http: &HttpArgs, data_dir: &Path, engines: Vec<Address>) -> anyhow::Result<FrontConfig> {
    anyhow::ensure!((1..=64).contains(&http.engine_connections), "--engine-connections must be 1..=64");
    anyhow::ensure!((1..=1_000_000).contains(&http.http_connections_max), "--http-connections-max must be 1..=1000000");
    if http.payment == "sandbox" {
        // Sandbox: demo logins for any user id and payments without a
        // provider (docs/SECURITY.md). Said louder when others can reach it.
        let what = "--payment sandbox: anyone who reaches the buyer port may sign in as any user \
                    (POST /api/v1/demo/token) and pay without a provider; never use it for real sales";
        if http.http.ip().is_loopback() {
            tracing::info!(http = %http.http, "{what}");
        } else {
            tracing::warn!(http = %http.http, "{what}");
        }
    }
    Ok(FrontConfig {
        http: http.http,
        engines,
        engine_groups: Vec::new(),
        engine_connections: http.engine_connections,
        local_engine: None,
        auth_secret: secrets::load_or_create("SECKILL_AUTH_SECRET", data_dir, "auth.secret")
            .context("reading or creating the auth secret")?,
        auth: auth_config(http)?,
        payment_secret: secrets::load_or_create("SECKILL_PAYMENT_SECRET", data_dir, "payment.secret")
            .context("reading or creating the payment secret")?,
        payment_sandbox: http.payment == "sandbox",
        limits: seckill_front::HttpLimits {
            connections_max: http.http_connections_max,
            connections_per_ip_max: http.http_connections_per_ip,
            ip_requests_per_s: http.ip_requests_per_s,
            activity_cache_ms: http.activity_cache_ms.min(60_000),
        },
        buy_answers: Default::default(),
    })
}

/// Token rules: `SECKILL_AUTH_SECRET_PREVIOUS` (comma-separated older
/// secrets still accepted while a rotation is under way), issuer, audience.
pub fn auth_config(http: &HttpArgs) -> anyhow::Result<seckill_front::auth::AuthConfig> {
    Ok(seckill_front::auth::AuthConfig {
        previous_secrets: secrets::previous("SECKILL_AUTH_SECRET_PREVIOUS")
            .context("reading SECKILL_AUTH_SECRET_PREVIOUS")?,
        issuer: http.jwt_issuer.clone(),
        audience: http.jwt_audience.clone(),
    })
}

pub fn install_metrics() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    crate::observe::install_metrics()
}

/// Binds `--metrics` (unless `none`) and serves the operator's routes on
/// the current runtime.
pub async fn serve_metrics(
    addr: seckill_front::metrics_http::MetricsAddr,
    op: seckill_front::metrics_http::Operator,
) -> anyhow::Result<()> {
    let seckill_front::metrics_http::MetricsAddr::At(at) = addr else { return Ok(()) };
    let listener = tokio::net::TcpListener::bind(at).await.with_context(|| format!("binding --metrics {at}"))?;
    tokio::spawn(seckill_front::metrics_http::serve(listener, op, std::future::pending()));
    Ok(())
}

/// The front's runtime: one thread (current-thread scheduler, driven by
/// whoever calls `block_on`) or a work-stealing pool of `threads`.
pub fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    b.enable_all().thread_name("front").build().context("starting the tokio runtime")
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let engine_groups = parse_engine_groups(&args.engine_groups, args.engine.is_some())?;
    let engines: Vec<Address> = match &args.engine {
        Some(s) => parse_engines(s)?,
        // With groups and no --engine, group 0 is one of them or absent.
        None if !engine_groups.is_empty() => Vec::new(),
        None => vec![Address::Unix(args.data_dir.join("engine.sock"))],
    };
    let mut engine = engines.iter().map(Address::to_string).collect::<Vec<_>>().join(",");
    for (g, addrs) in &engine_groups {
        let list = addrs.iter().map(Address::to_string).collect::<Vec<_>>().join(",");
        engine = if engine.is_empty() { format!("group {g}: {list}") } else { format!("{engine}; group {g}: {list}") };
    }
    let mut cfg = config(&args.http, &args.data_dir, engines)?;
    cfg.engine_groups = engine_groups;
    let prometheus = install_metrics();
    runtime(args.http.front_threads()?)?.block_on(async move {
        let (front, listener) =
            seckill_front::bind(cfg).await.with_context(|| format!("binding {}", args.http.http))?;
        serve_metrics(args.metrics.metrics, seckill_front::metrics_http::Operator::metrics_only(prometheus)).await?;
        tracing::info!(http = %args.http.http, engine = %engine, metrics = %args.metrics.metrics, "seckill front listening");
        println!("seckill front listening on http://{} (engine {engine})", args.http.http);
        seckill_front::run(front, listener, shutdown_signal()).await;
        tracing::info!("front stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
