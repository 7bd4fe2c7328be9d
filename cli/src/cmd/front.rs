//! `seckill front`: an HTTP front alone, forwarding to an engine.

use anyhow::Context;
use seckill_front::engine_client::EngineAddr;
use seckill_front::{secrets, FrontConfig};
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
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Data dir shared with the engine (secrets are read from it).
    #[arg(long, env = "SECKILL_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Engine address: unix:PATH or tcp:HOST:PORT [default: unix:<data-dir>/engine.sock].
    #[arg(long, env = "SECKILL_ENGINE")]
    pub engine: Option<String>,
    #[command(flatten)]
    pub http: HttpArgs,
}

pub fn config(http: &HttpArgs, data_dir: &Path, engine: EngineAddr) -> anyhow::Result<FrontConfig> {
    anyhow::ensure!((1..=64).contains(&http.engine_connections), "--engine-connections must be 1..=64");
    Ok(FrontConfig {
        http: http.http,
        engine,
        engine_connections: http.engine_connections,
        local_engine: None,
        auth_secret: secrets::load_or_create("SECKILL_AUTH_SECRET", data_dir, "auth.secret")
            .context("reading or creating the auth secret")?,
        auth: auth_config(http)?,
        payment_secret: secrets::load_or_create("SECKILL_PAYMENT_SECRET", data_dir, "payment.secret")
            .context("reading or creating the payment secret")?,
        payment_sandbox: http.payment == "sandbox",
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
    match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
            None
        }
    }
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("front")
        .build()
        .context("starting the tokio runtime")
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let engine: EngineAddr = match &args.engine {
        Some(s) => s.parse().map_err(anyhow::Error::msg)?,
        None => EngineAddr::Unix(args.data_dir.join("engine.sock")),
    };
    let cfg = config(&args.http, &args.data_dir, engine.clone())?;
    let prometheus = install_metrics();
    runtime()?.block_on(async move {
        let (front, listener) =
            seckill_front::bind(cfg, prometheus).await.with_context(|| format!("binding {}", args.http.http))?;
        tracing::info!(http = %args.http.http, engine = %engine, "seckill front listening");
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
