//! `seckill up`: engine + HTTP front in one process, sane defaults.

use super::{engine, front};
use anyhow::Context;
use seckill_engine::ReplyTx;
use seckill_engine::{Engine, Envelope};
use seckill_front::engine_client::{Delivery, LocalEngine};
use seckill_proto::{ErrorCode, Request};
use std::sync::Arc;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub engine: engine::Args,
    #[command(flatten)]
    pub http: front::HttpArgs,
}

/// A running engine + front in this process.
pub struct Service {
    pub running: engine::Running,
    rt: Arc<tokio::runtime::Runtime>,
    /// Drives the runtime (a current-thread runtime runs only inside
    /// `block_on`) until the HTTP server returns.
    driver: std::thread::JoinHandle<()>,
    stop_front: tokio::sync::oneshot::Sender<()>,
}

impl Service {
    pub fn start(
        args: &Args,
        prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> anyhow::Result<Service> {
        // The front's buy answers per activity: in `stats` and on the dashboard.
        let answers = Arc::new(seckill_front::observe::BuyAnswers::default());
        let front_stats: seckill_server::admin::StatsHook = {
            let answers = answers.clone();
            Arc::new(move || answers.to_json())
        };
        // One process, one group: other groups are `seckill engine --group N`
        // behind `seckill front --engine-group` (docs/OPERATIONS.md).
        anyhow::ensure!(
            args.engine.group == 0,
            "seckill up runs group 0 only; run other groups with `seckill engine --group N`"
        );
        let running = engine::start(&args.engine, vec![("front", front_stats)])?;
        let mut cfg = front::config(&args.http, &args.engine.data_dir, vec![running.addr.clone()])?;
        // The front in this process hands requests to the engine directly:
        // same queues, same batches, same durability, two thread hops and
        // four syscalls fewer per request than the socket. The socket stays
        // open for other fronts and tools.
        cfg.local_engine = Some(Arc::new(InProcess(running.node.engine.clone())));
        cfg.buy_answers = answers.clone();
        let rt = Arc::new(front::runtime(args.http.front_threads()?)?);
        let (front, listener) =
            rt.block_on(seckill_front::bind(cfg)).with_context(|| format!("binding HTTP on {}", args.http.http))?;
        // Engine and front metrics share one recorder in this process; the
        // dashboard runs only where the listener does.
        if let seckill_front::metrics_http::MetricsAddr::At(at) = args.engine.metrics.metrics {
            let op = running.operator(prometheus, Some(answers), "up");
            rt.block_on(front::serve_metrics(args.engine.metrics.metrics, op))?;
            tracing::info!(dashboard = %format!("http://{at}/dashboard"), metrics = %format!("http://{at}/metrics"), "operator's listener");
        }
        tracing::info!(http = %args.http.http, payment = %args.http.payment, "front listening");
        let (stop_front, rx) = tokio::sync::oneshot::channel::<()>();
        let server = rt.spawn(seckill_front::run(front, listener, async move {
            let _ = rx.await;
        }));
        let driver = {
            let rt = rt.clone();
            std::thread::Builder::new()
                .name("front".into())
                .spawn(move || {
                    let _ = rt.block_on(server);
                })
                .context("starting the front thread")?
        };
        Ok(Service { running, rt, driver, stop_front })
    }

    /// Blocks until Ctrl-C, SIGTERM or the admin `shutdown` command.
    pub fn wait(&self) -> &'static str {
        self.running.wait()
    }

    /// Stops the front, then the engine (drain, final fsync).
    pub fn stop(self, why: &str) {
        let _ = self.stop_front.send(());
        let _ = self.driver.join();
        // The front's engine connections go first, so they do not see the
        // engine leave and log it as a lost connection.
        if let Ok(rt) = Arc::try_unwrap(self.rt) {
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
        }
        self.running.stop(why);
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Before anything records a metric, so engine and front metrics land in /metrics.
    let prometheus = front::install_metrics();
    let service = Service::start(&args, prometheus)?;
    println!(
        "seckill up: http://{}/api/v1  engine {}  admin {}  data {}",
        args.http.http,
        service.running.addr,
        service.running.admin_path.display(),
        args.engine.data_dir.display()
    );
    if let seckill_front::metrics_http::MetricsAddr::At(at) = args.engine.metrics.metrics {
        println!("  dashboard http://{at}/dashboard  metrics http://{at}/metrics");
    }
    let why = service.wait();
    service.stop(why);
    Ok(())
}

/// The engine of this process, as the front sees it.
struct InProcess(Arc<Engine>);

impl LocalEngine for InProcess {
    fn submit(&self, req: Request, done: Delivery) -> Result<(), ErrorCode> {
        let reply = ReplyTx::Callback(Box::new(move |resp| done.deliver(resp)));
        self.0.try_submit(Envelope { req, tag: 0, reply })
    }
}
