//! `seckill engine`: the durable engine alone, serving the wire protocol
//! and the admin socket.

use anyhow::Context;
use crossbeam_channel::{bounded, Receiver, Sender};
use seckill_engine::limits;
use seckill_engine::node::{Node, NodeConfig};
use seckill_engine::wal::{Checkpoints, Durability, WalStatus};
use seckill_engine::{EngineConfig, SystemClock};
use seckill_persist::{mysql, redact_url, redis};
use seckill_proto::handshake::WireKey;
use seckill_proto::Address;
use seckill_server::{admin, wire};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(clap::Args, Clone, Debug)]
#[group(id = "engine_options")]
pub struct Args {
    /// WAL, snapshots, engine.sock, admin.sock and generated secrets live here.
    #[arg(long, env = "SECKILL_DATA_DIR", default_value = super::DATA_DIR_DEFAULT)]
    pub data_dir: PathBuf,
    /// Where the engine listens for fronts: unix:PATH or tcp:HOST:PORT
    /// [default: unix:<data-dir>/engine.sock].
    #[arg(long, env = "SECKILL_ENGINE")]
    pub engine: Option<Address>,
    /// `fsync`: every answer waits for fdatasync (safe). `none`: no fsync (benchmarks only; a crash of the machine loses orders).
    #[arg(long, env = "SECKILL_DURABILITY", default_value = "fsync")]
    pub durability: Durability,
    /// Shard threads [default: cores - 1, at least 1]. Fixed for the life of a data dir.
    #[arg(long, env = "SECKILL_SHARDS")]
    pub shards: Option<usize>,
    /// Requests waiting per shard before new ones are answered `busy`.
    #[arg(long, env = "SECKILL_QUEUE_CAPACITY", default_value_t = limits::QUEUE_CAPACITY_DEFAULT)]
    pub queue_capacity: usize,
    /// Buy clicks (buys and buy-token requests) each user may make per minute;
    /// kept by the shard that owns the user, so it holds across every front.
    #[arg(long, env = "SECKILL_BUYS_PER_MINUTE", default_value_t = limits::BUYS_PER_MINUTE_DEFAULT)]
    pub buys_per_minute: u32,
    /// With one shard and --durability fsync: how long (µs) a batch of 2..15
    /// buys waits for more before its fsync. Larger groups, fewer fsyncs,
    /// less CPU per buy under load; at most this much latency added. 0 = off.
    #[arg(long, env = "SECKILL_GROUP_COMMIT_WINDOW_US", default_value_t = limits::GROUP_COMMIT_WINDOW_US_DEFAULT)]
    pub group_commit_window_us: u64,
    /// Write a snapshot after this many log records.
    #[arg(long, env = "SECKILL_SNAPSHOT_EVERY", default_value_t = limits::SNAPSHOT_EVERY_RECORDS_DEFAULT)]
    pub snapshot_every: u64,
    /// Start a new WAL segment after this many bytes.
    #[arg(long, env = "SECKILL_WAL_SEGMENT_BYTES", default_value_t = limits::SEGMENT_BYTES_DEFAULT)]
    pub wal_segment_bytes: u64,
    /// MySQL for the persister (fed from the WAL); `none` disables it.
    /// `--help` never shows the environment's value; logs mask the password.
    #[arg(long, env = "SECKILL_MYSQL_URL", default_value = mysql::DEFAULT_URL, hide_env_values = true)]
    pub mysql_url: String,
    /// Redis for the mirror and event stream (fed from the WAL); `none` disables it.
    /// `--help` never shows the environment's value; logs mask the password.
    #[arg(long, env = "SECKILL_REDIS_URL", default_value = redis::DEFAULT_URL, hide_env_values = true)]
    pub redis_url: String,
    /// Also write a hash `seckill:order:{id}` per order to Redis (off: the
    /// `created` entry of the `seckill:events` stream carries every field of
    /// an order; docs/REDIS.md, "Order hashes"). Costs Redis about 60 % more
    /// CPU per order.
    #[arg(long, env = "SECKILL_REDIS_ORDER_HASHES")]
    pub redis_order_hashes: bool,
    /// Seconds an admin.sock connection may wait between requests before it is closed.
    #[arg(long, env = "SECKILL_ADMIN_IDLE_TIMEOUT", default_value_t = admin::IDLE_TIMEOUT_DEFAULT.as_secs())]
    pub admin_idle_timeout: u64,
    /// The group this engine (or every replica of this replica group) is,
    /// 0..=15 (docs/REPLICATION.md, "Activities over groups"): the ids of
    /// the activities, products and orders it makes name it, so fronts
    /// given several groups (`seckill front --engine-group N=…`) route by
    /// them. Fixed for the life of a data dir (engine.meta).
    #[arg(long, env = "SECKILL_GROUP", default_value_t = 0, value_name = "N")]
    pub group: u8,
    /// Run as replica N of a Raft group (docs/REPLICATION.md): the group's
    /// majority makes each answer durable; the leader serves --engine and
    /// admin.sock (and runs the persister and the mirror), followers only
    /// keep the log and their wal/. Needs --replica-listen, and --peers or --join.
    #[arg(long, env = "SECKILL_REPLICA_ID", value_name = "N", requires = "replica_listen")]
    pub replica_id: Option<u64>,
    /// The replicas that form a new group, this one included, at their
    /// --replica-listen: `1=host:port,2=host:port,3=host:port`, the same on
    /// each. Only used to form the group (a replica with an empty log
    /// proposes it); after that the membership in the Raft log is the truth
    /// (`seckill admin replica add|remove` changes it).
    #[arg(long, env = "SECKILL_PEERS", value_name = "ID=HOST:PORT,...")]
    pub peers: Option<String>,
    /// Join an existing group instead of forming one: this replica never
    /// proposes a membership; it waits, with an empty log, until the
    /// leader adds it (`seckill admin replica add ID=HOST:PORT`).
    #[arg(long, env = "SECKILL_REPLICA_JOIN", requires = "replica_id")]
    pub join: bool,
    /// Where this replica listens for its peers (and `seckill admin replica status`).
    #[arg(long, env = "SECKILL_REPLICA_LISTEN", value_name = "HOST:PORT")]
    pub replica_listen: Option<std::net::SocketAddr>,
    /// Dial some peers at other addresses than those --peers gives (a private
    /// interface, a tunnel, a test's proxy): `2=host:port,3=host:port`.
    #[arg(long, env = "SECKILL_REPLICA_DIAL", value_name = "ID=HOST:PORT,...")]
    pub replica_dial: Option<String>,
    /// The leader sends heartbeats every fifth of this; a follower that
    /// heard from a leader waits out its lease (twice this) and then this to
    /// twice it, at random, before it starts an election: a dead leader is
    /// replaced after 3–4× this (about 2.2 s at 500, 3.8 s at 1000).
    /// Longer: fewer needless elections on a loaded box, a slower failover.
    #[arg(long, env = "SECKILL_REPLICA_ELECTION_TIMEOUT_MS", default_value_t = 500, value_name = "MS")]
    pub replica_election_timeout_ms: u64,
    /// Raft snapshots every this many log entries, then purges the log up
    /// to a tenth of it behind the snapshot; a replica whose log no longer
    /// reaches the leader's (a new one, a long-stopped one) installs the
    /// snapshot. Smaller: a shorter Raft log, more snapshots.
    #[arg(long, env = "SECKILL_REPLICA_SNAPSHOT_ENTRIES", default_value_t = 10_000, value_name = "N")]
    pub replica_snapshot_entries: u64,
    /// Every replica's --engine address, by id (`1=tcp:host:port,...`): a
    /// replica that does not lead answers fronts `not_leader` with the
    /// leader's address from this list (without it, with no address, and
    /// the front tries its other addresses in turn).
    #[arg(long, env = "SECKILL_PEER_ENGINES", value_name = "ID=tcp:HOST:PORT,...", requires = "replica_id")]
    pub peer_engines: Option<String>,
    #[command(flatten)]
    pub metrics: super::front::MetricsArgs,
}

impl Args {
    pub fn engine_address(&self) -> Address {
        self.engine.clone().unwrap_or_else(|| Address::Unix(self.data_dir.join("engine.sock")))
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(id) = args.replica_id {
        return super::replicated::run(args, id);
    }
    let prometheus = super::front::install_metrics();
    let metrics = seckill_front::metrics_http::bind_thread(args.metrics.metrics)
        .with_context(|| format!("binding --metrics {}", args.metrics.metrics))?;
    let running = start(&args, Vec::new())?;
    if let Some(bound) = metrics {
        seckill_front::metrics_http::serve_thread(bound, running.operator(prometheus, None, "engine"))
            .context("starting the metrics thread")?;
    }
    if let seckill_front::metrics_http::MetricsAddr::At(at) = args.metrics.metrics {
        tracing::info!(dashboard = %format!("http://{at}/dashboard"), metrics = %format!("http://{at}/metrics"), "operator's listener");
    }
    println!("seckill engine listening on {} (admin: {})", running.addr, running.admin_path.display());
    if let seckill_front::metrics_http::MetricsAddr::At(at) = args.metrics.metrics {
        println!("  dashboard http://{at}/dashboard  metrics http://{at}/metrics");
    }
    let why = running.wait();
    running.stop(why);
    Ok(())
}

/// A started engine: the node, its sockets, and the stop signal.
pub struct Running {
    pub node: Node,
    pub addr: Address,
    pub admin_path: PathBuf,
    /// What the admin commands act on (also the dashboard's source).
    pub admin: admin::AdminCtx,
    stop_rx: Receiver<&'static str>,
    stop_tx: Sender<&'static str>,
    mirror: Option<redis::MirrorHandle>,
    persister: Option<mysql::PersisterHandle>,
}

impl Running {
    /// What the operator's listener serves for this engine: `/metrics`
    /// and the dashboard. `answers`: the buy answers of a front in this
    /// process (`seckill up`); `process`: `up` or `engine`.
    pub fn operator(
        &self,
        prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
        answers: Option<Arc<seckill_front::observe::BuyAnswers>>,
        process: &'static str,
    ) -> seckill_front::metrics_http::Operator {
        let dashboard = crate::observe::Dashboard::start(self.admin.clone(), answers, process);
        seckill_front::metrics_http::Operator { prometheus, data: Some(dashboard) }
    }

    /// Blocks until Ctrl-C, SIGTERM or the admin `shutdown` command.
    pub fn wait(&self) -> &'static str {
        self.stop_rx.recv().unwrap_or("stop channel closed")
    }

    /// The stop signal (Ctrl-C, SIGTERM, admin `shutdown`) for a caller that
    /// watches it on another thread while its own work runs; putting a
    /// reason back on the sender hands it on to [`Running::wait`].
    pub fn stop_signal(&self) -> (Sender<&'static str>, Receiver<&'static str>) {
        (self.stop_tx.clone(), self.stop_rx.clone())
    }

    /// The MySQL persister, unless `--mysql-url none`.
    pub fn persister(&self) -> Option<&mysql::PersisterHandle> {
        self.persister.as_ref()
    }

    /// The Redis mirror, unless `--redis-url none`.
    pub fn mirror(&self) -> Option<&redis::MirrorHandle> {
        self.mirror.as_ref()
    }

    /// Clean stop: drain the shards, final fsync, remove the sockets.
    pub fn stop(self, why: &str) {
        tracing::info!(why, "stopping: draining shards, final fsync");
        self.node.shutdown();
        // After the engine: the consumers write what its last records say.
        if let Some(p) = self.persister {
            p.shutdown(std::time::Duration::from_secs(5));
        }
        if let Some(m) = self.mirror {
            m.shutdown(redis::SHUTDOWN_DRAIN);
        }
        if let Address::Unix(p) = &self.addr {
            let _ = std::fs::remove_file(p);
        }
        let _ = std::fs::remove_file(&self.admin_path);
        tracing::info!("stopped cleanly");
    }
}

/// Starts the engine. `more_stats`: sections `stats` adds (the in-process
/// front's, in `seckill up`).
pub fn start(args: &Args, more_stats: Vec<(&'static str, admin::StatsHook)>) -> anyhow::Result<Running> {
    anyhow::ensure!(args.replica_id.is_none(), "--replica-id runs with `seckill engine` only");
    let cfg = node_config(args)?;
    anyhow::ensure!(args.admin_idle_timeout >= 1, "--admin-idle-timeout must be at least 1 (seconds)");
    let admin_idle = std::time::Duration::from_secs(args.admin_idle_timeout);
    let node = Node::open(cfg, Arc::new(SystemClock))?;

    let addr = args.engine_address();
    // Fronts prove they hold the auth secret before their first frame.
    let wire_key = WireKey::derive(
        &seckill_front::secrets::load_or_create("SECKILL_AUTH_SECRET", &args.data_dir, "auth.secret")
            .context("reading or creating the auth secret (it also keys the wire handshake)")?,
    );
    let listener = wire::Listener::bind(&addr).with_context(|| format!("listening on {addr}"))?;
    let admin_path = args.data_dir.join("admin.sock");
    let admin_listener = admin::bind(&admin_path).with_context(|| format!("binding {}", admin_path.display()))?;

    let wal_of = || (node.data_dir.as_path(), node.wal.status.clone(), node.wal.checkpoints.clone());
    let mirror = start_mirror(args, wal_of(), node.engine.clock().clone());
    let persister = start_persister(args, wal_of());
    let mut extra_stats: Vec<(&'static str, admin::StatsHook)> = Vec::new();
    if let Some(p) = &persister {
        extra_stats.push(("persister", p.stats_hook()));
    }
    if let Some(m) = &mirror {
        extra_stats.push(("mirror", m.stats_hook()));
    }
    extra_stats.extend(more_stats);
    let (stop_tx, stop_rx) = bounded::<&'static str>(4);
    let kept_tx = stop_tx.clone();
    {
        let engine = node.engine.clone();
        let stop_flag = Arc::new(AtomicBool::new(false));
        std::thread::Builder::new()
            .name("wire-accept".into())
            .spawn(move || wire::serve(engine, listener, stop_flag, wire_key))?;
    }
    let ctx = {
        let stop_tx = stop_tx.clone();
        admin::AdminCtx {
            on_shutdown: Arc::new(move || {
                let _ = stop_tx.try_send("admin shutdown");
            }),
            warmup: persister.as_ref().map(|_| mysql::warmup_hook(args.mysql_url.clone(), node.engine.clone())),
            verify: persister
                .as_ref()
                .map(|_| verify_hook(args.mysql_url.clone(), node.engine.clone(), wal_of().1, wal_of().2)),
            extra_stats,
            ..admin::AdminCtx::of_node(&node)
        }
    };
    {
        let ctx = ctx.clone();
        std::thread::Builder::new()
            .name("admin-accept".into())
            .spawn(move || admin::serve(ctx, admin_listener, admin_idle))?;
    }
    {
        let mut signals =
            signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            if signals.forever().next().is_some() {
                let _ = stop_tx.try_send("signal");
            }
        })?;
    }
    tracing::info!(wire = %addr, admin = %admin_path.display(), durability = ?args.durability, "seckill engine listening");
    Ok(Running { node, addr, admin_path, admin: ctx, stop_rx, stop_tx: kept_tx, mirror, persister })
}

/// The node's configuration from the flags, each checked against its limit.
pub(crate) fn node_config(args: &Args) -> anyhow::Result<NodeConfig> {
    let mut cfg = NodeConfig::new(&args.data_dir);
    cfg.durability = args.durability;
    cfg.engine = EngineConfig {
        queue_capacity: args.queue_capacity,
        clicks_per_minute: args.buys_per_minute,
        group_commit_window_us: args.group_commit_window_us,
        ..EngineConfig::default()
    };
    anyhow::ensure!(
        (args.group as usize) < seckill_proto::GROUPS_MAX,
        "--group must be 0..={}",
        seckill_proto::GROUPS_MAX - 1
    );
    cfg.engine.group = args.group;
    if let Some(n) = args.shards {
        anyhow::ensure!((1..=limits::SHARDS_MAX).contains(&n), "--shards must be 1..={}", limits::SHARDS_MAX);
        cfg.engine.shards = n;
    }
    anyhow::ensure!(args.queue_capacity >= 1, "--queue-capacity must be at least 1");
    anyhow::ensure!(args.buys_per_minute >= 1, "--buys-per-minute must be at least 1");
    anyhow::ensure!(
        args.group_commit_window_us <= limits::GROUP_COMMIT_WINDOW_US_MAX,
        "--group-commit-window-us must be 0..={} (0 turns the window off)",
        limits::GROUP_COMMIT_WINDOW_US_MAX
    );
    cfg.snapshot_every_records = args.snapshot_every.max(1);
    anyhow::ensure!(
        args.wal_segment_bytes >= limits::SEGMENT_BYTES_MIN,
        "--wal-segment-bytes must be at least {}",
        limits::SEGMENT_BYTES_MIN
    );
    cfg.segment_bytes_max = args.wal_segment_bytes;
    Ok(cfg)
}

/// A data dir's `wal/` as its consumers follow it: the dir, the writer's
/// status (durable LSN) and the checkpoints that keep segments.
pub(crate) type WalOf<'a> = (&'a std::path::Path, Arc<WalStatus>, Arc<Checkpoints>);

/// The MySQL persister, unless `--mysql-url none`.
pub(crate) fn start_persister(args: &Args, (dir, status, checkpoints): WalOf) -> Option<mysql::PersisterHandle> {
    if args.mysql_url == "none" {
        tracing::info!("MySQL persister disabled (--mysql-url none)");
        return None;
    }
    tracing::info!(url = %redact_url(&args.mysql_url), "MySQL persister on (it says so if MySQL is unreachable, and retries)");
    Some(mysql::spawn(mysql::PersistConfig::new(args.mysql_url.clone()), dir.to_path_buf(), status, checkpoints))
}

/// The Redis mirror, unless `--redis-url none`. An unreachable Redis is
/// said once and retried in the background: the engine serves regardless.
pub(crate) fn start_mirror(
    args: &Args,
    (dir, status, checkpoints): WalOf,
    clock: Arc<dyn seckill_engine::Clock>,
) -> Option<redis::MirrorHandle> {
    if args.redis_url == "none" {
        tracing::info!("Redis mirror disabled (--redis-url none)");
        return None;
    }
    let mut cfg = redis::MirrorConfig::new(args.redis_url.clone());
    cfg.clock = clock;
    cfg.order_hashes = args.redis_order_hashes;
    match redis::probe(cfg.url.as_str(), std::time::Duration::from_secs(1)) {
        Ok(()) => tracing::info!(url = %redact_url(&args.redis_url), "Redis mirror on"),
        Err(e) => tracing::warn!("Redis mirror: {e}; serving without it and retrying in the background"),
    }
    Some(redis::spawn(cfg, dir.to_path_buf(), status, checkpoints, redis::ReplicaSource::Snapshots))
}

/// `verify`: make everything durable, wait (up to 30 s) until the persister
/// has applied it, then compare MySQL with the engine.
pub(crate) fn verify_hook(
    url: String,
    engine: Arc<seckill_engine::Engine>,
    status: Arc<WalStatus>,
    checkpoints: Arc<Checkpoints>,
) -> admin::WarmupHook {
    Arc::new(move || {
        engine.sync().map_err(|e| e.to_string())?;
        let target = status.durable_lsn.load(std::sync::atomic::Ordering::Acquire);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while checkpoints.get("persister").unwrap_or(0) < target {
            if std::time::Instant::now() > deadline {
                return Err(format!("the persister has not caught up with LSN {target} within 30 s; see `stats`"));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let differences = rt.block_on(mysql::verify(&url, &engine)).map_err(|e| format!("{e:#}"))?;
        Ok(serde_json::json!({"lsn": target, "equal": differences.is_empty(), "differences": differences}))
    })
}
