//! `seckill load`: a load generator for the HTTP front.
//!
//! Many simulated buyers (JWTs issued before the clock starts) click "buy" on
//! one activity over `C` HTTP/1.1 keep-alive connections, each driven by its
//! worker's task through the light client in [`wire`] (one write per click,
//! answers parsed in a reused buffer; hyper serves only the preflight and
//! `--verify`, off the clock), either closed loop
//! (each connection sends its next request when the previous one answered) or
//! open loop (`--rate`: request `i` is due at `i / R` seconds, and its latency
//! counts from that due time, so queueing in the client is not hidden).
//! Latencies go into an HdrHistogram; the report breaks outcomes down by
//! status and error code, and `--verify` checks the invariants afterwards.
//!
//! [`run_load`] and [`verify`] take plain configs so other commands (`demo`)
//! can drive a load in process.

mod client;
mod pacer;
mod plot;
mod report;
mod verify;
mod wire;

pub use report::LoadReport;
pub use verify::{verify, VerifyConfig, VerifyReport};

use anyhow::{bail, Context};
use client::{bearer, Conn, Target};
use hdrhistogram::Histogram;
use hyper::header::HeaderValue;
use hyper::Method;
use seckill_front::auth::Auth;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use wire::BuyConn;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target_activity").required(true).args(["activity", "setup"])))]
pub struct Args {
    /// Base URL of the HTTP front.
    #[arg(long, env = "SECKILL_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Data dir of the service (its auth secret signs the buyers' tokens; its admin socket serves --setup).
    #[arg(long, env = "SECKILL_DATA_DIR", default_value = super::DATA_DIR_DEFAULT)]
    pub data_dir: PathBuf,
    /// Activity to buy from.
    #[arg(long, env = "SECKILL_LOAD_ACTIVITY")]
    pub activity: Option<u64>,
    /// Create a fresh activity (starting now, ending in 1 h) through the admin socket and load it.
    #[arg(long, env = "SECKILL_LOAD_SETUP")]
    pub setup: bool,
    /// Units on sale in the activity made by --setup.
    #[arg(long, env = "SECKILL_LOAD_STOCK", default_value_t = 10_000, conflicts_with = "activity")]
    pub stock: u64,
    /// Per-user limit of the activity made by --setup.
    #[arg(long, env = "SECKILL_LOAD_PER_USER_LIMIT", default_value_t = 1, conflicts_with = "activity")]
    pub per_user_limit: u32,
    /// Distinct buyers (user ids first-user .. first-user+users-1), used round robin.
    #[arg(long, env = "SECKILL_LOAD_USERS", default_value_t = 10_000)]
    pub users: u64,
    /// The first buyer's user id.
    #[arg(long, env = "SECKILL_LOAD_FIRST_USER", default_value_t = 1)]
    pub first_user: u64,
    /// Concurrent HTTP/1.1 keep-alive connections (one worker each).
    #[arg(long, short = 'c', env = "SECKILL_LOAD_CONNECTIONS", default_value_t = 64)]
    pub connections: usize,
    /// Open loop: requests per second, e.g. 2000 or 2000/s (absent: closed loop).
    #[arg(long, env = "SECKILL_LOAD_RATE", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Run for this long, e.g. 10s, 500ms, 2m.
    #[arg(long, env = "SECKILL_LOAD_DURATION", value_parser = parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Send this many requests [default: --users, so each buyer clicks once].
    #[arg(long, env = "SECKILL_LOAD_REQUESTS")]
    pub requests: Option<u64>,
    /// A request with no answer after this long counts as `timeout`.
    #[arg(long, env = "SECKILL_LOAD_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,
    /// Write the report as JSON here.
    #[arg(long, env = "SECKILL_LOAD_REPORT", value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write a latency percentile plot (SVG) here.
    #[arg(long, env = "SECKILL_LOAD_PLOT", value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// After the run check: no oversell, no user above the limit, every 201 order retrievable.
    #[arg(long, env = "SECKILL_LOAD_VERIFY")]
    pub verify: bool,
    /// No progress bar.
    #[arg(long, short = 'q', env = "SECKILL_LOAD_QUIET")]
    pub quiet: bool,
}

/// `2000`, `2000/s` or `2000rps` → 2000.0.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let num = s.trim().trim_end_matches("/s").trim_end_matches("rps");
    match num.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 10_000_000.0 => Ok(r),
        _ => Err(format!("`{s}` is not a rate like 2000 or 2000/s (0 < rate <= 10M)")),
    }
}

/// `10s`, `500ms`, `2m`, `1h`, or plain seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let mult = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    match num.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n * mult <= 7.0 * 86_400.0 => Ok(Duration::from_secs_f64(n * mult)),
        _ => Err(format!("`{s}` is not a duration like 10s, 500ms or 2m")),
    }
}

/// When a run stops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stop {
    Requests(u64),
    Duration(Duration),
}

/// Everything [`run_load`] needs; no flags, no files.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Base URL of the front, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    pub activity_id: u64,
    /// The front's JWT secret (raw bytes).
    pub auth_secret: Vec<u8>,
    pub first_user: u64,
    pub users: u64,
    pub connections: usize,
    /// `Some(r)`: open loop at `r` requests per second.
    pub rate: Option<f64>,
    pub stop: Stop,
    pub timeout: Duration,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// What the service answered to buy clicks; one row per status and error code.
#[derive(Clone, Debug, Default)]
struct Tally {
    /// `(status, code)`; status 0 = no HTTP answer, code = failure label.
    /// A few distinct rows, so a scan (no key allocation per click) beats a map.
    counts: Vec<((u16, String), u64)>,
}

impl Tally {
    fn add(&mut self, status: u16, code: &str) {
        match self.counts.iter_mut().find(|((s, c), _)| *s == status && c == code) {
            Some((_, n)) => *n += 1,
            None => self.counts.push(((status, code.to_string()), 1)),
        }
    }
}

/// One worker's results, merged after the run.
struct WorkerOut {
    hist: Histogram<u64>,
    tally: Tally,
    /// `(user_id, order_id)` of every 201.
    created: Vec<(u64, String)>,
    /// Users with a request whose outcome is unknown (no answer, or a 5xx: the engine may have acted).
    unknown: Vec<u64>,
    first_failure: Option<String>,
    reconnects: u64,
}

/// Live counters for the progress bar.
#[derive(Default)]
struct Live {
    done: AtomicU64,
    created: AtomicU64,
    /// Nanoseconds from start to the first `sold_out` answer (u64::MAX: none yet).
    first_sold_out_ns: AtomicU64,
}

struct Shared {
    target: Arc<Target>,
    cfg: LoadConfig,
    tokens: Vec<HeaderValue>,
    next: AtomicU64,
    live: Live,
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow)]
    error: ErrorInner<'a>,
}
#[derive(Deserialize)]
struct ErrorInner<'a> {
    /// Borrowed: a sold-out storm allocates nothing per answer.
    #[serde(borrow)]
    code: std::borrow::Cow<'a, str>,
}
#[derive(Deserialize)]
struct OrderBody<'a> {
    /// Borrowed unless the JSON escapes something.
    #[serde(borrow)]
    order_id: std::borrow::Cow<'a, str>,
}

/// The `error.code` of an error answer, or `""`.
fn error_code(body: &[u8]) -> std::borrow::Cow<'_, str> {
    serde_json::from_slice::<ErrorBody>(body).map(|e| e.error.code).unwrap_or_default()
}

pub fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs .. 1 h, 3 significant digits.
    match Histogram::new_with_bounds(1, 3_600_000_000, 3) {
        Ok(h) => h,
        Err(e) => unreachable!("constant histogram bounds are valid: {e}"),
    }
}

/// Issues one token per buyer (before the clock starts).
fn issue_tokens(cfg: &LoadConfig, ttl_s: u64) -> anyhow::Result<Vec<HeaderValue>> {
    let auth = Auth::new(&cfg.auth_secret);
    (0..cfg.users).map(|i| bearer(&auth.issue(cfg.first_user + i, ttl_s))).collect()
}

/// Checks that the front is up, the activity exists and our tokens are accepted.
async fn preflight(conn: &mut Conn, target: &Target, cfg: &LoadConfig, token: &HeaderValue) -> anyhow::Result<()> {
    conn.connect().await?;
    let path = format!("/api/v1/activities/{}", cfg.activity_id);
    let a = conn
        .send(Method::GET, target.uri(&path)?, None, None)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {} ({e}); is `seckill up` running there?", target.base))?;
    match a.status {
        200 => {
            let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
            match v["phase"].as_str() {
                Some("ongoing") | None => {}
                Some(phase) => eprintln!(
                    "warning: activity {} is {phase}; buys will be refused (see `seckill admin activity get {}`)",
                    cfg.activity_id, cfg.activity_id
                ),
            }
        }
        404 => bail!(
            "activity {} does not exist at {}; create one with `seckill load --setup` or `seckill admin activity create`",
            cfg.activity_id,
            target.base
        ),
        s => bail!("GET {}{path} answered {s}: {}", target.base, String::from_utf8_lossy(&a.body)),
    }
    let a = conn
        .send(Method::GET, target.uri("/api/v1/orders?limit=1")?, Some(token), None)
        .await
        .map_err(|e| anyhow::anyhow!("{} stopped answering ({e})", target.base))?;
    if a.status == 401 {
        bail!(
            "the front at {} refuses our tokens (401): pass the --data-dir of the running `seckill up` \
             (its auth.secret signs the tokens) or the same SECKILL_AUTH_SECRET",
            target.base
        );
    }
    Ok(())
}

/// Runs one load and returns its report; the caller prints or stores it.
pub async fn run_load(cfg: LoadConfig) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(cfg.users >= 1, "--users must be at least 1");
    anyhow::ensure!(cfg.first_user >= 1, "--first-user must be at least 1 (user ids are positive)");
    anyhow::ensure!((1..=100_000).contains(&cfg.connections), "--connections must be 1..=100000");
    if let Stop::Requests(n) = cfg.stop {
        anyhow::ensure!(n >= 1, "--requests must be at least 1");
    }
    let target = Arc::new(Target::resolve(&cfg.url).await?);

    // Tokens and connections are ready before the clock starts.
    let run_s = match cfg.stop {
        Stop::Duration(d) => d.as_secs(),
        Stop::Requests(n) => match cfg.rate {
            Some(r) => (n as f64 / r) as u64,
            None => 0,
        },
    };
    let tokens = issue_tokens(&cfg, 3600 + 2 * run_s)?;
    preflight(&mut Conn::new(target.clone(), cfg.timeout), &target, &cfg, &tokens[0]).await?;
    let prefix = wire::buy_prefix(&target, cfg.activity_id);
    let mut conns = Vec::with_capacity(cfg.connections);
    for _ in 0..cfg.connections {
        let mut c = BuyConn::new(target.clone(), prefix.clone(), cfg.timeout);
        c.connect().await?;
        conns.push(c);
    }
    let total = match (cfg.stop, cfg.rate) {
        (Stop::Requests(n), _) => Some(n),
        (Stop::Duration(d), Some(r)) => Some(((d.as_secs_f64() * r).ceil() as u64).max(1)),
        (Stop::Duration(_), None) => None,
    };
    let shared = Arc::new(Shared {
        target: target.clone(),
        cfg: cfg.clone(),
        tokens,
        next: AtomicU64::new(0),
        live: Live { first_sold_out_ns: AtomicU64::new(u64::MAX), ..Live::default() },
    });
    let bar = progress_bar(&cfg, total);

    let start = tokio::time::Instant::now();
    let deadline = match cfg.stop {
        Stop::Duration(d) if cfg.rate.is_none() => Some(start + d),
        _ => None,
    };
    let due = Arc::new(Semaphore::new(0));
    if let Some(rate) = cfg.rate {
        tokio::spawn(release_due(due.clone(), total.unwrap_or(0), rate, start, cfg.connections));
    }
    let workers: Vec<_> = conns
        .into_iter()
        .map(|conn| {
            let (shared, due) = (shared.clone(), due.clone());
            tokio::spawn(async move {
                match shared.cfg.rate {
                    Some(rate) => open_loop(&shared, conn, &due, total.unwrap_or(0), rate, start).await,
                    None => closed_loop(&shared, conn, total, deadline, start).await,
                }
            })
        })
        .collect();
    let ticker = {
        let (shared, bar) = (shared.clone(), bar.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let done = shared.live.done.load(Ordering::Relaxed);
                let created = shared.live.created.load(Ordering::Relaxed);
                let secs = start.elapsed().as_secs_f64().max(1e-3);
                match total {
                    Some(_) => bar.set_position(done),
                    None => bar.set_position(start.elapsed().as_millis() as u64),
                }
                bar.set_message(format!("{done} req, {created} created, {:.0} req/s", done as f64 / secs));
            }
        })
    };
    let mut outs = Vec::with_capacity(workers.len());
    for w in workers {
        outs.push(w.await.context("a load worker panicked")?);
    }
    let elapsed = start.elapsed();
    ticker.abort();
    bar.finish_and_clear();

    let first_sold_out = match shared.live.first_sold_out_ns.load(Ordering::Relaxed) {
        u64::MAX => None,
        ns => Some(Duration::from_nanos(ns)),
    };
    Ok(report::build(&cfg, &target.base, outs, elapsed, first_sold_out))
}

fn progress_bar(cfg: &LoadConfig, total: Option<u64>) -> indicatif::ProgressBar {
    if !cfg.progress {
        return indicatif::ProgressBar::hidden();
    }
    let (len, template) = match (total, cfg.stop) {
        (Some(n), _) => (n, "{elapsed_precise} [{bar:40}] {pos}/{len} {msg}"),
        (None, Stop::Duration(d)) => (d.as_millis() as u64, "{elapsed_precise} [{bar:40}] {percent}% {msg}"),
        (None, Stop::Requests(n)) => (n, "{elapsed_precise} [{bar:40}] {pos}/{len} {msg}"),
    };
    let bar = indicatif::ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

impl Shared {
    fn worker_out(&self) -> WorkerOut {
        WorkerOut {
            hist: histogram(),
            tally: Tally::default(),
            created: Vec::new(),
            unknown: Vec::new(),
            first_failure: None,
            reconnects: 0,
        }
    }

    /// Sends buy click `i` and records its outcome; latency from `from`.
    async fn click(
        &self,
        conn: &mut BuyConn,
        out: &mut WorkerOut,
        i: u64,
        from: tokio::time::Instant,
        start: tokio::time::Instant,
    ) {
        let idx = i % self.cfg.users;
        let user = self.cfg.first_user + idx;
        // `tokens` holds one per user, so `idx` is always in range.
        let auth = self.tokens.get(idx as usize).map_or(&[][..], |t| t.as_bytes());
        let res = conn.buy(auth).await;
        let now = tokio::time::Instant::now();
        let us = now.saturating_duration_since(from).as_micros() as u64;
        out.hist.saturating_record(us.max(1));
        match res {
            Ok((201, body)) => {
                match serde_json::from_slice::<OrderBody>(body) {
                    Ok(o) => {
                        out.tally.add(201, "");
                        out.created.push((user, o.order_id.into_owned()));
                    }
                    Err(_) => {
                        out.tally.add(201, "no_order_id");
                        out.unknown.push(user);
                    }
                }
                self.live.created.fetch_add(1, Ordering::Relaxed);
            }
            Ok((status, body)) => {
                let code = error_code(body);
                if code == "sold_out" {
                    let ns = now.saturating_duration_since(start).as_nanos() as u64;
                    self.live.first_sold_out_ns.fetch_min(ns, Ordering::Relaxed);
                }
                if status >= 500 {
                    out.unknown.push(user);
                }
                out.tally.add(status, &code);
            }
            Err(f) => {
                out.tally.add(0, f.label());
                out.unknown.push(user);
                if out.first_failure.is_none() {
                    out.first_failure = Some(format!("{} ({})", f, self.target.base));
                }
            }
        }
        self.live.done.fetch_add(1, Ordering::Relaxed);
    }
}

async fn closed_loop(
    shared: &Shared,
    mut conn: BuyConn,
    total: Option<u64>,
    deadline: Option<tokio::time::Instant>,
    start: tokio::time::Instant,
) -> WorkerOut {
    let mut out = shared.worker_out();
    loop {
        let now = tokio::time::Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if total.is_some_and(|n| i >= n) {
            break;
        }
        shared.click(&mut conn, &mut out, i, now, start).await;
    }
    out.reconnects = conn.opened.saturating_sub(1);
    out
}

/// Request `i` is due at `start + i/rate`. [`release_due`] hands out one
/// permit per request that came due; an idle connection takes a permit and
/// the next request, so one slow answer delays no later request while
/// another connection is free (as a pool of clients would); when all are
/// busy, requests leave late and their latency still counts from the due time.
async fn open_loop(
    shared: &Shared,
    mut conn: BuyConn,
    due: &Semaphore,
    total: u64,
    rate: f64,
    start: tokio::time::Instant,
) -> WorkerOut {
    let mut out = shared.worker_out();
    loop {
        match due.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_closed) => break,
        }
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            break;
        }
        let due_at = start + Duration::from_secs_f64(i as f64 / rate);
        shared.click(&mut conn, &mut out, i, due_at, start).await;
    }
    out.reconnects = conn.opened.saturating_sub(1);
    out
}

/// Adds a permit to `due` for each of the `total` requests as it comes due
/// (at most [`pacer::TICK`] late), then one per connection so each sees the end.
async fn release_due(due: Arc<Semaphore>, total: u64, rate: f64, start: tokio::time::Instant, connections: usize) {
    let mut ticker = pacer::Ticker::every(pacer::TICK);
    let mut released = 0u64;
    while released < total {
        ticker.tick().await;
        // Requests 0..=floor(elapsed × rate) are due.
        let due_now = ((start.elapsed().as_secs_f64() * rate) as u64).saturating_add(1).min(total);
        if due_now > released {
            due.add_permits((due_now - released) as usize);
            released = due_now;
        }
    }
    due.add_permits(connections);
}

/// The auth secret of a running service: SECKILL_AUTH_SECRET or `<data-dir>/auth.secret`
/// (never created here: a new secret would only get 401s, or be refused by a
/// replica group's handshake).
pub fn auth_secret(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let env_set = std::env::var("SECKILL_AUTH_SECRET").is_ok_and(|v| !v.is_empty());
    let file = data_dir.join("auth.secret");
    if !env_set && !file.exists() {
        bail!(
            "no auth secret: {} does not exist and SECKILL_AUTH_SECRET is unset; pass the --data-dir of the running \
             `seckill up` or replica (or set SECKILL_AUTH_SECRET to its secret)",
            file.display()
        );
    }
    seckill_front::secrets::load_or_create("SECKILL_AUTH_SECRET", data_dir, "auth.secret")
        .with_context(|| format!("reading the auth secret {}", file.display()))
}

/// Creates an activity that starts now and ends in one hour; returns its id.
pub fn setup_activity(data_dir: &Path, stock: u64, per_user_limit: u32) -> anyhow::Result<u64> {
    use time::format_description::well_known::Rfc3339;
    let now = time::OffsetDateTime::now_utc();
    let starts = (now - time::Duration::seconds(1)).format(&Rfc3339).context("formatting a time")?;
    let ends = (now + time::Duration::hours(1)).format(&Rfc3339).context("formatting a time")?;
    let args = serde_json::json!({
        "title": "seckill load",
        "price_cents": 100,
        "stock": stock,
        "starts_at": starts,
        "ends_at": ends,
        "per_user_limit": per_user_limit,
    });
    let created =
        super::admin::call(data_dir, "activity.create", &args.to_string()).context("--setup: creating the activity")?;
    created["id"].as_u64().context("--setup: activity.create answered no id")
}

/// Prints to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let stop = match (args.duration, args.requests) {
        (Some(d), _) => Stop::Duration(d),
        (None, Some(n)) => Stop::Requests(n),
        (None, None) => Stop::Requests(args.users),
    };
    let auth_secret = auth_secret(&args.data_dir)?;
    let (activity_id, created_here) = match (args.activity, args.setup) {
        (Some(id), _) => (id, false),
        (None, true) => (setup_activity(&args.data_dir, args.stock, args.per_user_limit)?, true),
        (None, false) => bail!("pass --activity ID or --setup"),
    };
    let cfg = LoadConfig {
        url: args.url.clone(),
        activity_id,
        auth_secret: auth_secret.clone(),
        first_user: args.first_user,
        users: args.users,
        connections: args.connections,
        rate: args.rate,
        stop,
        timeout: args.timeout,
        progress: !args.quiet,
    };
    if created_here {
        say(&format!("created activity {activity_id}: {} units, per-user limit {}\n", args.stock, args.per_user_limit));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("load")
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        let mut report = run_load(cfg).await?;
        say(&report.to_text());
        if let Some(path) = &args.plot {
            plot::write_svg(&report, path)?;
            say(&format!("plot: {}\n", path.display()));
        }
        let mut failed = false;
        if args.verify {
            let vcfg = VerifyConfig {
                url: args.url.clone(),
                activity_id,
                auth_secret,
                connections: args.connections.min(32),
                timeout: args.timeout,
                only_buyers: created_here,
            };
            let v = verify(&vcfg, &report).await?;
            say(&v.to_text());
            failed = !v.passed;
            report.verify = Some(v);
        }
        if let Some(path) = &args.report {
            let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
            std::fs::write(path, json + "\n").with_context(|| format!("writing the report to {}", path.display()))?;
            say(&format!("report: {}\n", path.display()));
        }
        if failed {
            bail!("verify failed (see the FAIL lines above)");
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_rates_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_rate("2000/s"), Ok(2000.0));
        assert_eq!(parse_rate("150"), Ok(150.0));
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn error_codes_are_read_from_error_bodies() {
        assert_eq!(error_code(br#"{"error":{"code":"sold_out","message":"sold out"}}"#), "sold_out");
        assert_eq!(error_code(b"not json"), "");
    }
}
