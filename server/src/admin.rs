//! The admin socket: one JSON object per line each way.
//!
//! `{"cmd":"activity.create","args":{…}}` → `{"ok":true,"result":…}` or
//! `{"ok":false,"error":{"code","message"}}`. The socket file is mode 0600:
//! only the user running the engine can manage it. Should the mode be lost
//! (a copied data dir, a file system that ignores it), every peer is still
//! checked with `SO_PEERCRED`: the engine's own uid or root, no one else.
//! At most [`CONNECTIONS_MAX`] connections at once, each closed after
//! the idle timeout (`--admin-idle-timeout`) without a request.

use seckill_engine::node::Node;
use seckill_engine::wal::{Checkpoints, Snapshotter, WalStatus};
use seckill_engine::{ActivityChanges, ActivitySpec, AdminError, Engine};
use seckill_proto::{json, ActivityStatus, ActivityView, ErrorCode, OrderId, Request, Response, PAGE_LIMIT_MAX};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Longest request line accepted; longer ones get an error and the connection closes.
pub const LINE_BYTES_MAX: u64 = 64 * 1024;
/// Admin connections served at once; one more is answered `busy` and closed.
/// Operators run one command at a time; this only stops a leak or a loop
/// from holding a thread per connection without bound.
pub const CONNECTIONS_MAX: usize = 16;
/// How long an admin connection may wait between requests (the default of
/// `--admin-idle-timeout`); then it is closed. Commands themselves may take
/// longer (`verify` waits up to 30 s): the clock runs only while reading.
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(300);

/// What the admin commands act on.
#[derive(Clone)]
pub struct AdminCtx {
    pub engine: Arc<Engine>,
    pub wal_status: Arc<WalStatus>,
    pub checkpoints: Arc<Checkpoints>,
    pub snapshotter: Snapshotter,
    /// Called once on `shutdown`.
    pub on_shutdown: Arc<dyn Fn() + Send + Sync>,
    /// Runs `warmup` (load products and activities prepared in MySQL);
    /// `None` when no persister is configured.
    pub warmup: Option<WarmupHook>,
    /// Runs `verify` (MySQL against engine state, once caught up).
    pub verify: Option<WarmupHook>,
    /// More sections for `stats` (persister, mirror): name → current figures.
    pub extra_stats: Vec<(&'static str, StatsHook)>,
}

pub use seckill_engine::{StatsHook, WarmupHook};

impl AdminCtx {
    /// The commands of `node` with nothing behind them: no MySQL or Redis
    /// hooks, and a `shutdown` that only answers. Tests and fuzzers use it
    /// as it is; the binary sets the rest (`..AdminCtx::of_node(&node)`).
    pub fn of_node(node: &Node) -> AdminCtx {
        AdminCtx {
            engine: node.engine.clone(),
            wal_status: node.wal.status.clone(),
            checkpoints: node.wal.checkpoints.clone(),
            snapshotter: node.wal.snapshotter(),
            on_shutdown: Arc::new(|| {}),
            warmup: None,
            verify: None,
            extra_stats: Vec::new(),
        }
    }
}

/// One admin verb: its name, the arguments it takes (shown by `seckill
/// admin --help`), and the handler that answers it.
pub struct Command {
    pub name: &'static str,
    pub args: &'static str,
    run: Handler,
}

/// A verb's handler: the request's `args` in, the `result` out.
type Handler = fn(&Call<'_>, Value) -> Result<Value, AdminError>;

const fn verb(name: &'static str, args: &'static str, run: Handler) -> Command {
    Command { name, args, run }
}

/// Every admin verb, in the order `--help` lists them.
pub const COMMANDS: &[Command] = &[
    verb("product.create", r#"{"name","description"?,"image_url"?,"price_cents"}"#, product_create),
    verb(
        "activity.create",
        r#"{"title","product_id"?,"price_cents","stock","starts_at","ends_at","per_user_limit"?,"payment_timeout_s"?,"require_buy_token"?,"gate_factor"?}"#,
        activity_create,
    ),
    verb(
        "activity.update",
        r#"{"activity_id", any of title, price_cents, starts_at, ends_at, per_user_limit, payment_timeout_s, require_buy_token, gate_factor}"#,
        activity_update,
    ),
    verb("activity.pause", r#"{"activity_id"}"#, activity_pause),
    verb("activity.resume", r#"{"activity_id"}"#, activity_resume),
    verb("activity.disable", r#"{"activity_id"}"#, activity_disable),
    verb("activity.list", r#"{"offset"?,"limit"?}"#, activity_list),
    verb("activity.show", r#"{"activity_id"}"#, activity_show),
    verb("stock.add", r#"{"activity_id","amount"}"#, stock_add),
    verb("quota.set", r#"{"activity_id","user_id","limit"}"#, quota_set),
    verb("order.show", r#"{"order_id"}"#, order_show),
    verb("order.ship", r#"{"order_id"}"#, order_ship),
    verb("warmup", "{}", warmup),
    verb("verify", "{}  (MySQL equals the engine? non-zero exit with the differences if not)", verify),
    verb("stats", "{}", |call, raw| {
        let _: Value = raw;
        Ok(stats(call.ctx))
    }),
    verb("snapshot", "{}", snapshot),
    verb("shutdown", "{}", |_, _| Ok(json!({"stopping": true}))),
];

pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.exists() && UnixStream::connect(path).is_err() {
        std::fs::remove_file(path)?;
    }
    super::bind_private(path)
}

/// Whether a peer with `peer_uid` may use the admin socket of an engine
/// running as `own_uid`: the same user, or root.
pub fn peer_allowed(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == own_uid || peer_uid == 0
}

/// The uid of the process that connected `stream` (`SO_PEERCRED`, as it was
/// at `connect`; the peer cannot change it afterwards).
#[allow(unsafe_code)] // getsockopt: see the SAFETY comment
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a live, writable `ucred` and `len` is its size, so
    // getsockopt writes at most that many bytes into memory we own; the
    // descriptor is borrowed from `stream` for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

#[allow(unsafe_code)] // geteuid: see the SAFETY comment
fn own_uid() -> u32 {
    // SAFETY: geteuid has no preconditions, touches no memory and cannot fail.
    unsafe { libc::geteuid() }
}

/// Answers `e` on `stream` and closes it (a refusal at accept).
fn refuse(mut stream: UnixStream, e: &AdminError) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = writeln!(stream, "{}", failure(e));
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Accepts admin connections for ever: each peer is checked
/// ([`peer_allowed`]), at most [`CONNECTIONS_MAX`] are served at once, and
/// one that sends no request for `idle` is closed.
pub fn serve(ctx: AdminCtx, listener: UnixListener, idle: Duration) {
    let own = own_uid();
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        match peer_uid(&stream) {
            Ok(uid) if peer_allowed(uid, own) => {}
            found => {
                let who = found.map_or_else(|e| format!("unknown ({e})"), |uid| uid.to_string());
                tracing::warn!(peer_uid = %who, engine_uid = own, "admin connection refused: not the engine's user or root");
                let msg = format!("admin connection refused: uid {who} is neither the engine's user ({own}) nor root");
                refuse(stream, &AdminError::new(ErrorCode::Unauthorized, msg));
                continue;
            }
        }
        if open.load(Ordering::Acquire) >= CONNECTIONS_MAX {
            tracing::warn!("admin connection refused: {CONNECTIONS_MAX} already open");
            let msg = format!("{CONNECTIONS_MAX} admin connections are open already; close one and retry");
            refuse(stream, &AdminError::new(ErrorCode::Busy, msg));
            continue;
        }
        open.fetch_add(1, Ordering::AcqRel);
        let (ctx, open_now) = (ctx.clone(), open.clone());
        let spawned = std::thread::Builder::new().name("admin-conn".into()).spawn(move || {
            match connection(&ctx, stream, idle) {
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    tracing::info!("admin connection closed: no request for {} s", idle.as_secs_f64());
                }
                Err(e) => tracing::debug!(error = %e, "admin connection ended"),
                Ok(()) => {}
            }
            open_now.fetch_sub(1, Ordering::AcqRel);
        });
        if let Err(e) = spawned {
            open.fetch_sub(1, Ordering::AcqRel);
            tracing::error!(error = %e, "could not spawn an admin connection thread");
        }
    }
}

fn connection(ctx: &AdminCtx, stream: UnixStream, idle: Duration) -> io::Result<()> {
    stream.set_read_timeout(Some(idle))?;
    stream.set_write_timeout(Some(idle))?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader).take(LINE_BYTES_MAX + 1).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if n as u64 > LINE_BYTES_MAX {
            let e = AdminError::new(ErrorCode::PayloadTooLarge, "request line longer than 64 KiB");
            writeln!(out, "{}", failure(&e))?;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        let (reply, shutdown) = handle_line(ctx, text.trim());
        writeln!(out, "{reply}")?;
        out.flush()?;
        if shutdown {
            (ctx.on_shutdown)();
            return Ok(());
        }
    }
}

fn failure(e: &AdminError) -> Value {
    json!({"ok": false, "error": json::error(e.code, &e.message)})
}

/// Answers one request line. The bool says whether to shut down after replying.
pub fn handle_line(ctx: &AdminCtx, line: &str) -> (Value, bool) {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        cmd: String,
        #[serde(default)]
        args: Value,
    }
    let parsed: Line = match serde_json::from_str(line) {
        Ok(l) => l,
        Err(e) => {
            let msg = format!("expected {{\"cmd\":\"…\",\"args\":{{…}}}}: {e}");
            return (failure(&AdminError::new(ErrorCode::BadRequest, msg)), false);
        }
    };
    let shutdown = parsed.cmd == "shutdown";
    match dispatch(ctx, &parsed.cmd, parsed.args) {
        Ok(result) => (json!({"ok": true, "result": result}), shutdown),
        Err(e) => (failure(&e), false),
    }
}

fn args<T: DeserializeOwned>(v: Value) -> Result<T, AdminError> {
    let v = if v.is_null() { json!({}) } else { v };
    serde_json::from_value(v).map_err(|e| AdminError::new(ErrorCode::BadRequest, format!("bad args: {e}")))
}

fn time_arg(name: &str, s: &str) -> Result<u64, AdminError> {
    json::parse_rfc3339(s).ok_or_else(|| {
        AdminError::new(ErrorCode::BadRequest, format!("{name} must be an RFC 3339 time like 2026-11-25T10:00:00Z"))
    })
}

fn order_arg(s: &str) -> Result<OrderId, AdminError> {
    s.parse().map_err(|e| AdminError::new(ErrorCode::BadRequest, format!("order_id: {e}")))
}

fn engine_answer(resp: Response, now_ms: u64) -> Result<Value, AdminError> {
    match resp {
        Response::Order(o) => Ok(json::order(&o)),
        Response::Activity(a) => Ok(json::activity(&a, now_ms)),
        Response::Done => Ok(json!({})),
        Response::Error(code) => Err(AdminError::new(code, code.as_str().replace('_', " "))),
        other => Err(AdminError::new(ErrorCode::Internal, format!("unexpected engine answer {other:?}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivityId {
    activity_id: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderArg {
    order_id: String,
}

/// One request being answered: the context, and the time it arrived (the
/// views it returns are as of then).
struct Call<'a> {
    ctx: &'a AdminCtx,
    now_ms: u64,
}

impl Call<'_> {
    fn engine(&self) -> &Engine {
        &self.ctx.engine
    }

    fn view(&self, v: ActivityView) -> Value {
        json::activity(&v, self.now_ms)
    }

    fn answer(&self, resp: Response) -> Result<Value, AdminError> {
        engine_answer(resp, self.now_ms)
    }
}

fn dispatch(ctx: &AdminCtx, cmd: &str, raw: Value) -> Result<Value, AdminError> {
    let call = Call { ctx, now_ms: ctx.engine.clock().now_ms() };
    match COMMANDS.iter().find(|c| c.name == cmd) {
        Some(c) => (c.run)(&call, raw),
        None => {
            let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
            Err(AdminError::new(
                ErrorCode::BadRequest,
                format!("unknown command `{cmd}`; commands: {}", names.join(", ")),
            ))
        }
    }
}

fn product_create(call: &Call<'_>, raw: Value) -> Result<Value, AdminError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct A {
        name: String,
        #[serde(default)]
        description: String,
        #[serde(default)]
        image_url: String,
        price_cents: u64,
    }
    let a: A = args(raw)?;
    let p = call.engine().create_product(a.name, a.description, a.image_url, a.price_cents)?;
    Ok(
        json!({"id": p.id, "name": p.name, "description": p.description, "image_url": p.image_url, "price_cents": p.price_cents}),
    )
}

fn activity_create(call: &Call<'_>, raw: Value) -> Result<Value, AdminError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct A {
        title: String,
        product_id: Option<u64>,
        price_cents: u64,
        stock: u64,
        starts_at: String,
        ends_at: String,
        per_user_limit: Option<u32>,
        payment_timeout_s: Option<u32>,
        require_buy_token: Option<bool>,
        gate_factor: Option<u32>,
    }
    let a: A = args(raw)?;
    let starts = time_arg("starts_at", &a.starts_at)?;
    let ends = time_arg("ends_at", &a.ends_at)?;
    let options = ActivityChanges {
        per_user_limit: a.per_user_limit,
        payment_timeout_s: a.payment_timeout_s,
        require_buy_token: a.require_buy_token,
        gate_factor: a.gate_factor,
        ..ActivityChanges::default()
    };
    let spec =
        ActivitySpec { product_id: a.product_id, ..ActivitySpec::new(a.title, a.price_cents, a.stock, starts, ends) }
            .with(&options);
    call.engine().create_activity(spec).map(|v| call.view(v))
}

fn activity_update(call: &Call<'_>, raw: Value) -> Result<Value, AdminError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct A {
        activity_id: u64,
        title: Option<String>,
        price_cents: Option<u64>,
        starts_at: Option<String>,
        ends_at: Option<String>,
        per_user_limit: Option<u32>,
        payment_timeout_s: Option<u32>,
        require_buy_token: Option<bool>,
        gate_factor: Option<u32>,
    }
    let a: A = args(raw)?;
    let changes = ActivityChanges {
        title: a.title,
        price_cents: a.price_cents,
        starts_at_ms: a.starts_at.as_deref().map(|s| time_arg("starts_at", s)).transpose()?,
        ends_at_ms: a.ends_at.as_deref().map(|s| time_arg("ends_at", s)).transpose()?,
        per_user_limit: a.per_user_limit,
        payment_timeout_s: a.payment_timeout_s,
        require_buy_token: a.require_buy_token,
        gate_factor: a.gate_factor,
    };
    call.engine().update_activity(a.activity_id, |x| x.apply(changes)).map(|v| call.view(v))
}

fn set_status(call: &Call<'_>, raw: Value, status: ActivityStatus) -> Result<Value, AdminError> {
    let a: ActivityId = args(raw)?;
    call.engine().set_activity_status(a.activity_id, status).map(|v| call.view(v))
}

fn activity_pause(call: &Call<'_>, raw: Value) -> Result<Value, AdminError> {
    set_status(call, raw, ActivityStatus::Paused)
}

fn activity_resume(call: &Call<'_>, raw: Value) -> Result<Value, AdminError> {
    set_status(call, raw, ActivityStatus::Active)
}

fn activity_disable(call: &Call<'_>, raw: Value) -> Result<Value, AdminError> {
    set_status(call, raw, ActivityStatus::Disabled)
}

fn activity_show(call: &Call<'_>, raw: Value) -> Result<Value, AdminError> {
    let a: ActivityId = args(raw)?;
    call.engine().activity(a.activity_id).map(|v| call.view(v))
}

fn activity_list(call: &Call<'_>, raw: Value) -> Result<Value, AdminError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct A {
        #[serde(default)]
        offset: u32,
        #[serde(default = "default_limit")]
        limit: u32,
    }
    let a: A = args(raw)?;
    match call.engine().call(Request::ListActivities { offset: a.offset, limit: a.limit.min(PAGE_LIMIT_MAX) }) {
        Response::Activities { items, total } => {
            Ok(json!({"items": items.into_iter().map(|v| call.view(v)).collect::<Vec<_>>(), "total": total}))
        }
        other => call.answer(other),
    }
}

fn stock_add(call: &Call<'_>, raw: Value) -> Result<Value, AdminError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct A {
        activity_id: u64,
        amount: u64,
    }
    let a: A = args(raw)?;
    call.engine().add_stock(a.activity_id, a.amount).map(|v| call.view(v))
}

fn quota_set(call: &Call<'_>, raw: Value) -> Result<Value, AdminError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct A {
        activity_id: u64,
        user_id: u64,
        limit: u32,
    }
    let a: A = args(raw)?;
    let req = Request::SetQuota { activity_id: a.activity_id, user_id: a.user_id, limit: a.limit };
    call.answer(call.engine().call(req))
        .map(|_| json!({"activity_id": a.activity_id, "user_id": a.user_id, "limit": a.limit}))
}

fn order_show(call: &Call<'_>, raw: Value) -> Result<Value, AdminError> {
    let a: OrderArg = args(raw)?;
    let req = Request::GetOrder { user_id: None, order_id: order_arg(&a.order_id)? };
    call.answer(call.engine().call(req))
}

fn order_ship(call: &Call<'_>, raw: Value) -> Result<Value, AdminError> {
    let a: OrderArg = args(raw)?;
    call.answer(call.engine().call(Request::Ship { order_id: order_arg(&a.order_id)? }))
}

fn snapshot(call: &Call<'_>, raw: Value) -> Result<Value, AdminError> {
    let _: Value = raw;
    let lsn = call
        .ctx
        .snapshotter
        .snapshot()
        .map_err(|e| AdminError::new(ErrorCode::Internal, format!("snapshot failed: {e}")))?;
    Ok(json!({"lsn": lsn}))
}

/// Runs the MySQL hook of the verb `name` (which `does` something with MySQL),
/// or refuses when the engine runs without MySQL.
fn mysql_hook(hook: &Option<WarmupHook>, name: &str, does: &str) -> Result<Value, AdminError> {
    let Some(hook) = hook else {
        return Err(AdminError::new(
            ErrorCode::BadRequest,
            format!("{name} {does}, and this engine runs without one (--mysql-url none)"),
        ));
    };
    hook().map_err(|m| AdminError::new(ErrorCode::Internal, format!("{name} failed: {m}")))
}

fn verify(call: &Call<'_>, raw: Value) -> Result<Value, AdminError> {
    let _: Value = raw;
    let report = mysql_hook(&call.ctx.verify, "verify", "compares MySQL")?;
    match report["differences"].as_array() {
        Some(d) if !d.is_empty() => Err(AdminError::new(
            ErrorCode::InvalidState,
            format!("MySQL differs from the engine in {} place(s): {}", d.len(), report["differences"]),
        )),
        _ => Ok(report),
    }
}

fn warmup(call: &Call<'_>, raw: Value) -> Result<Value, AdminError> {
    let _: Value = raw;
    mysql_hook(&call.ctx.warmup, "warmup", "loads from MySQL")
}

fn default_limit() -> u32 {
    20
}

/// What `stats` answers (docs/API.md lists every field). The operator's
/// dashboard serves this same object, so the two agree.
pub fn stats(ctx: &AdminCtx) -> Value {
    let engine = &ctx.engine;
    let s = &ctx.wal_status;
    let checkpoints: serde_json::Map<String, Value> =
        ctx.checkpoints.all().into_iter().map(|(k, v)| (k, json!(v))).collect();
    let activities: Vec<Value> = engine.activity_stats().iter().map(|a| a.to_json()).collect();
    let mut stats = json!({
        "now": json::rfc3339(engine.clock().now_ms()),
        "group": engine.group(),
        "shards": engine.shard_count(),
        "queue_depths": engine.queue_depths(),
        "wal_queue_depth": engine.wal_queue_depth(),
        "written_lsn": s.written_lsn.load(Ordering::Acquire),
        "durable_lsn": s.durable_lsn.load(Ordering::Acquire),
        "fsyncs": s.fsyncs.load(Ordering::Acquire),
        "wal_failed": s.failed.load(Ordering::Acquire),
        "checkpoints": checkpoints,
        "activities": activities,
    });
    for (name, hook) in &ctx.extra_stats {
        stats[*name] = hook();
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_engines_user_or_root_may_administer() {
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 1000), "root");
        assert!(peer_allowed(0, 0));
        assert!(!peer_allowed(1001, 1000), "another user");
        assert!(!peer_allowed(65534, 0), "nobody, against an engine run by root");
        assert!(!peer_allowed(1000, 0));
    }

    #[test]
    fn peer_uid_reads_the_connecting_process() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        assert_eq!(peer_uid(&a).expect("SO_PEERCRED"), own_uid());
    }
}
