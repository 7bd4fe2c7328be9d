//! `seckill admin …`: the operator's commands, sent to the engine's admin
//! socket (`<data-dir>/admin.sock`, JSON lines; docs/API.md).
//!
//! Two forms:
//! * subcommands with flags (`seckill admin activity create --title … --stock …`)
//!   that print aligned tables, or with `--json` the protocol's `result`;
//! * the raw form, one protocol verb and its JSON arguments
//!   (`seckill admin activity.create --json '{…}'`), printing the `result`
//!   as JSON, as before the subcommands existed.

mod table;

use anyhow::{bail, Context};
use seckill_server::admin::COMMANDS;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
#[command(after_help = admin_help())]
pub struct Args {
    /// The engine's data dir (its admin.sock is used).
    #[arg(long, env = "SECKILL_DATA_DIR", default_value = super::DATA_DIR_DEFAULT, global = true)]
    pub data_dir: PathBuf,
    /// Print the engine's JSON answer (its `result`) instead of a table, for
    /// scripts. With a value it is the raw form's arguments (`stats --json '{}'`).
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "", value_name = "ARGS", value_parser = json_arg)]
    pub json: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// `--json` with no value, or a JSON object (the raw form's arguments).
fn json_arg(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() || t.starts_with('{') {
        return Ok(s.to_string());
    }
    Err(format!(
        "`{s}` is not a JSON object: `--json` alone prints JSON (put it after the command, e.g. \
         `seckill admin activity list --json`); `--json '{{…}}'` passes arguments in the raw form"
    ))
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Sales: create, list, get, update, pause, resume, disable, add stock.
    #[command(subcommand)]
    Activity(ActivityCmd),
    /// Products an activity can point at.
    #[command(subcommand)]
    Product(ProductCmd),
    /// Orders: look one up, mark it shipped.
    #[command(subcommand)]
    Order(OrderCmd),
    /// Per-user limits above an activity's default (VIPs).
    #[command(subcommand)]
    Quota(QuotaCmd),
    /// Queue depths, WAL positions, checkpoints, persister and mirror lag.
    Stats,
    /// Compare MySQL with the engine (waits up to 30 s for the persister); fails on any difference.
    Verify,
    /// Load products and activities prepared in MySQL (`in_engine = 0`) into the engine.
    Warmup,
    /// Write a snapshot of everything durable now; prints its LSN.
    Snapshot,
    /// Stop the engine cleanly (drain, final fsync).
    Shutdown,
    /// A replica group (`seckill engine --replica-id …`): asks each replica on its replica port.
    #[command(subcommand)]
    Replica(ReplicaCmd),
    /// The raw form: a protocol verb such as `activity.create` and `--json '{…}'`.
    #[command(external_subcommand)]
    Raw(Vec<String>),
}

#[derive(clap::Subcommand, Debug)]
pub enum ReplicaCmd {
    /// Each replica's state, term, leader, log and apply positions; fails when none leads.
    Status {
        /// Every replica of the group: `1=host:port,2=host:port,3=host:port` (their --replica-listen).
        #[arg(long, env = "SECKILL_PEERS")]
        peers: String,
    },
    /// Add a replica (started with `seckill engine --replica-id ID --join`): as a learner, then a voter once
    /// its log has caught up with the leader's.
    Add {
        /// The new replica: `ID=HOST:PORT` (its id and --replica-listen).
        replica: String,
        /// Replicas to ask (any of them; the leader does it): `1=host:port,…`.
        #[arg(long, env = "SECKILL_PEERS")]
        peers: String,
        /// The longest to wait for the new replica to catch up before promoting it (it stays a learner if it
        /// does not).
        #[arg(long, default_value_t = 120_000, value_name = "MS")]
        catch_up_timeout_ms: u64,
    },
    /// Remove a replica from the group (a voter or a learner; not the leader: stop it first).
    Remove {
        /// The replica's id.
        id: u64,
        /// Replicas to ask (any of them; the leader does it): `1=host:port,…`.
        #[arg(long, env = "SECKILL_PEERS")]
        peers: String,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum ActivityCmd {
    /// Create a sale (an activity with its own stock).
    Create(ActivityCreate),
    /// List sales.
    List {
        /// Skip this many.
        #[arg(long, default_value_t = 0)]
        offset: u32,
        /// At most this many (the engine caps it at 100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show one sale.
    #[command(visible_alias = "show")]
    Get {
        /// Activity id.
        id: u64,
    },
    /// Change a sale's settings (only the flags given).
    Update(ActivityUpdate),
    /// Stop selling for now (buys answer `paused`).
    Pause {
        /// Activity id.
        id: u64,
    },
    /// Sell again after `pause`.
    Resume {
        /// Activity id.
        id: u64,
    },
    /// End a sale for good (cannot be undone).
    Disable {
        /// Activity id.
        id: u64,
    },
    /// Add units to a sale's stock.
    Stock {
        /// Activity id.
        id: u64,
        /// Units to add.
        #[arg(long, value_name = "N")]
        add: u64,
    },
}

#[derive(clap::Args, Debug)]
pub struct ActivityCreate {
    /// What buyers see.
    #[arg(long)]
    title: String,
    /// Price of one unit, in cents.
    #[arg(long, value_name = "CENTS")]
    price_cents: u64,
    /// Units on sale.
    #[arg(long, value_name = "N")]
    stock: u64,
    /// When buying opens: RFC 3339 (2026-11-25T10:00:00Z), `now` or `+10m` (s, m, h, d).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    starts_at: String,
    /// When buying closes (same forms as --starts-at).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    ends_at: String,
    /// Units one buyer may hold; 0: only users with a quota [engine default: 1].
    #[arg(long, visible_alias = "limit-per-user", value_name = "N")]
    per_user_limit: Option<u32>,
    /// A product made with `product create` (its name shows as product_name) [default: none].
    #[arg(long, value_name = "ID")]
    product_id: Option<u64>,
    /// Seconds a buyer has to pay before the order expires [engine default: 1800].
    #[arg(long, value_name = "S")]
    payment_timeout_s: Option<u32>,
    /// Buyers must fetch a buy token first (POST …/token) [engine default: no].
    #[arg(long)]
    require_buy_token: bool,
    /// With --require-buy-token: tokens handed out per unit of stock, 1..=1000 [engine default: 5].
    #[arg(long, value_name = "N")]
    gate_factor: Option<u32>,
}

#[derive(clap::Args, Debug)]
pub struct ActivityUpdate {
    /// Activity id.
    id: u64,
    #[arg(long)]
    title: Option<String>,
    #[arg(long, value_name = "CENTS")]
    price_cents: Option<u64>,
    /// RFC 3339, `now` or `+10m`.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    starts_at: Option<String>,
    /// RFC 3339, `now` or `+10m`.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    ends_at: Option<String>,
    #[arg(long, visible_alias = "limit-per-user", value_name = "N")]
    per_user_limit: Option<u32>,
    #[arg(long, value_name = "S")]
    payment_timeout_s: Option<u32>,
    #[arg(long, value_name = "true|false")]
    require_buy_token: Option<bool>,
    #[arg(long, value_name = "N")]
    gate_factor: Option<u32>,
}

#[derive(clap::Subcommand, Debug)]
pub enum ProductCmd {
    /// Create a product.
    Create {
        #[arg(long)]
        name: String,
        /// Price of one unit, in cents.
        #[arg(long, value_name = "CENTS")]
        price_cents: u64,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long, default_value = "")]
        image_url: String,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum OrderCmd {
    /// Show any buyer's order.
    #[command(visible_alias = "show")]
    Get {
        /// Order id, as the buy answered it.
        id: String,
    },
    /// Mark a paid order shipped.
    Ship {
        /// Order id.
        id: String,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum QuotaCmd {
    /// Let one user hold up to LIMIT units of an activity (0: the activity's default).
    Set {
        #[arg(long, value_name = "ID")]
        activity: u64,
        #[arg(long, value_name = "ID")]
        user: u64,
        #[arg(long, value_name = "N")]
        limit: u32,
    },
}

/// `now`, `+90s` / `+10m` / `+2h` / `+1d` from now, or an RFC 3339 time;
/// returns RFC 3339 UTC.
pub fn parse_time(s: &str) -> Result<String, String> {
    use time::format_description::well_known::Rfc3339;
    let bad = || format!("`{s}` is not a time: use RFC 3339 like 2026-11-25T10:00:00Z, `now`, or `+10m` (s, m, h, d)");
    let t = s.trim();
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).map_err(|_| bad())?;
    let at = if t == "now" {
        now
    } else if let Some(rel) = t.strip_prefix('+') {
        let split = rel.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: i64 = rel[..split].parse().map_err(|_| bad())?;
        let secs = match &rel[split..] {
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86_400,
            _ => return Err(bad()),
        };
        now + time::Duration::seconds(secs)
    } else {
        time::OffsetDateTime::parse(t, &Rfc3339).map_err(|_| bad())?
    };
    at.to_offset(time::UtcOffset::UTC).format(&Rfc3339).map_err(|_| bad())
}

fn admin_help() -> String {
    let mut s = String::from(
        "Examples:\n  \
         seckill admin activity create --title phone --price-cents 99900 --stock 100 --starts-at +1m --ends-at +1h\n  \
         seckill admin activity list\n  \
         seckill admin activity stock 1 --add 500\n  \
         seckill admin activity get 1 --json        # the engine's JSON, for scripts\n\n\
         The raw form sends one protocol verb with JSON arguments (times are RFC 3339):\n  \
         seckill admin activity.create --json '{\"title\":\"phone\",\"price_cents\":99900,\"stock\":100,\
         \"starts_at\":\"2026-11-25T10:00:00Z\",\"ends_at\":\"2026-11-26T10:00:00Z\"}'\n\
         Verbs and their --json arguments:\n",
    );
    for c in COMMANDS {
        s.push_str(&format!("  {:<18} {}\n", c.name, c.args));
    }
    s
}

/// An error the engine answered (as opposed to not reaching it).
#[derive(Debug)]
pub struct EngineError {
    pub cmd: String,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}: {}", self.cmd, self.code, self.message)
    }
}

impl std::error::Error for EngineError {}

impl EngineError {
    /// What the operator can do about it, when there is something to say.
    fn hint(&self) -> Option<&'static str> {
        Some(match self.code.as_str() {
            "activity_not_found" => "`seckill admin activity list` shows the activities there are",
            "product_not_found" => "`seckill admin product create` makes one; or leave --product-id out",
            "order_not_found" => "order ids are the `order_id` of a buy answer (GET /api/v1/orders lists a buyer's)",
            "invalid_state" if self.cmd == "verify" => {
                "the persister may be behind or halted: `seckill admin stats` shows its lag and last error"
            }
            "invalid_state" => "`seckill admin activity get ID` / `order get ID` show the current state",
            "bad_request" => "`--help` on the command lists its flags and the forms its values take",
            "busy" => "retry in a moment",
            "internal" => "the engine's log (stderr) has the details",
            _ => return None,
        })
    }
}

/// Sends one command and returns its `result`, or the engine's error.
pub fn call(data_dir: &Path, cmd: &str, json: &str) -> anyhow::Result<Value> {
    let args: Value = serde_json::from_str(json).context("--json is not valid JSON")?;
    call_value(data_dir, cmd, &args)
}

/// [`call`] with the arguments as a JSON value. An answer `ok: false` is an
/// [`EngineError`] inside the `anyhow::Error`.
pub fn call_value(data_dir: &Path, cmd: &str, args: &Value) -> anyhow::Result<Value> {
    let path = data_dir.join("admin.sock");
    let stream = UnixStream::connect(&path).with_context(|| {
        format!(
            "cannot reach {}; is `seckill engine` (or `up`) running with --data-dir {}? (pass --data-dir or set \
             SECKILL_DATA_DIR)",
            path.display(),
            data_dir.display()
        )
    })?;
    let mut w = stream.try_clone()?;
    let line = json!({"cmd": cmd, "args": args});
    // An engine that refuses the connection (another user, too many open)
    // answers one line and closes, maybe before this write: read it anyway.
    let sent = writeln!(w, "{line}");
    let mut reply = String::new();
    let read = BufReader::new(stream).read_line(&mut reply);
    if reply.trim().is_empty() {
        sent.context("sending the command")?;
        read.context("reading the answer")?;
        bail!("the engine closed the admin connection without an answer");
    }
    let reply: Value = serde_json::from_str(&reply).context("the engine answered something that is not JSON")?;
    if reply["ok"] == Value::Bool(true) {
        Ok(reply["result"].clone())
    } else {
        Err(EngineError {
            cmd: cmd.to_string(),
            code: reply["error"]["code"].as_str().unwrap_or("unknown").to_string(),
            message: reply["error"]["message"].as_str().unwrap_or("").to_string(),
        }
        .into())
    }
}

/// An engine error with what to do next on a line of its own.
fn with_hint(e: anyhow::Error) -> anyhow::Error {
    match e.downcast_ref::<EngineError>().and_then(|ee| ee.hint().map(|h| (ee.to_string(), h))) {
        Some((msg, hint)) => anyhow::anyhow!("{msg}\n  next: {hint}"),
        None => e,
    }
}

/// How to print a result.
#[derive(Clone, Copy)]
enum Shape {
    /// `activity.list`: a row per activity.
    Activities,
    /// Anything else: a row per field.
    Fields,
}

/// The protocol verb, its arguments and how to print its result.
fn request(cmd: Command) -> anyhow::Result<(String, Value, Shape)> {
    let verb = |v: &str| v.to_string();
    Ok(match cmd {
        Command::Activity(a) => match a {
            ActivityCmd::Create(c) => {
                let mut args = json!({
                    "title": c.title, "price_cents": c.price_cents, "stock": c.stock,
                    "starts_at": c.starts_at, "ends_at": c.ends_at,
                });
                put(&mut args, "per_user_limit", c.per_user_limit);
                put(&mut args, "product_id", c.product_id);
                put(&mut args, "payment_timeout_s", c.payment_timeout_s);
                put(&mut args, "gate_factor", c.gate_factor);
                if c.require_buy_token {
                    args["require_buy_token"] = json!(true);
                }
                (verb("activity.create"), args, Shape::Fields)
            }
            ActivityCmd::List { offset, limit } => {
                (verb("activity.list"), json!({"offset": offset, "limit": limit}), Shape::Activities)
            }
            ActivityCmd::Get { id } => (verb("activity.show"), json!({"activity_id": id}), Shape::Fields),
            ActivityCmd::Update(u) => {
                let mut args = json!({"activity_id": u.id});
                put(&mut args, "title", u.title);
                put(&mut args, "price_cents", u.price_cents);
                put(&mut args, "starts_at", u.starts_at);
                put(&mut args, "ends_at", u.ends_at);
                put(&mut args, "per_user_limit", u.per_user_limit);
                put(&mut args, "payment_timeout_s", u.payment_timeout_s);
                put(&mut args, "require_buy_token", u.require_buy_token);
                put(&mut args, "gate_factor", u.gate_factor);
                if args.as_object().is_some_and(|o| o.len() == 1) {
                    bail!(
                        "nothing to change: pass at least one of --title, --price-cents, --starts-at, --ends-at, \
                         --per-user-limit, --payment-timeout-s, --require-buy-token, --gate-factor"
                    );
                }
                (verb("activity.update"), args, Shape::Fields)
            }
            ActivityCmd::Pause { id } => (verb("activity.pause"), json!({"activity_id": id}), Shape::Fields),
            ActivityCmd::Resume { id } => (verb("activity.resume"), json!({"activity_id": id}), Shape::Fields),
            ActivityCmd::Disable { id } => (verb("activity.disable"), json!({"activity_id": id}), Shape::Fields),
            ActivityCmd::Stock { id, add } => {
                (verb("stock.add"), json!({"activity_id": id, "amount": add}), Shape::Fields)
            }
        },
        Command::Product(ProductCmd::Create { name, price_cents, description, image_url }) => (
            verb("product.create"),
            json!({"name": name, "price_cents": price_cents, "description": description, "image_url": image_url}),
            Shape::Fields,
        ),
        Command::Order(OrderCmd::Get { id }) => (verb("order.show"), json!({"order_id": id}), Shape::Fields),
        Command::Order(OrderCmd::Ship { id }) => (verb("order.ship"), json!({"order_id": id}), Shape::Fields),
        Command::Quota(QuotaCmd::Set { activity, user, limit }) => {
            (verb("quota.set"), json!({"activity_id": activity, "user_id": user, "limit": limit}), Shape::Fields)
        }
        Command::Stats => (verb("stats"), json!({}), Shape::Fields),
        Command::Verify => (verb("verify"), json!({}), Shape::Fields),
        Command::Warmup => (verb("warmup"), json!({}), Shape::Fields),
        Command::Snapshot => (verb("snapshot"), json!({}), Shape::Fields),
        Command::Shutdown => (verb("shutdown"), json!({}), Shape::Fields),
        Command::Raw(_) | Command::Replica(_) => bail!("internal: the raw form and `replica` are handled apart"),
    })
}

fn put<T: serde::Serialize>(args: &mut Value, key: &str, v: Option<T>) {
    if let Some(v) = v {
        args[key] = json!(v);
    }
}

/// The raw form's words after `seckill admin`: VERB [--json ARGS] [--data-dir DIR].
fn raw(words: &[String], mut json: Option<String>, mut data_dir: PathBuf) -> anyhow::Result<(String, Value, PathBuf)> {
    let Some((verb, rest)) = words.split_first() else { bail!("no command given: see `seckill admin --help`") };
    if !COMMANDS.iter().any(|c| c.name == verb) {
        let subs = "activity, product, order, quota, stats, verify, warmup, snapshot, shutdown";
        let verbs: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        bail!(
            "unknown admin command `{verb}`: the commands are {subs} (`seckill admin --help`); the raw form takes \
             one of {}",
            verbs.join(", ")
        );
    }
    let mut it = rest.iter();
    while let Some(w) = it.next() {
        let (flag, inline) = match w.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (w.as_str(), None),
        };
        let mut value =
            |name: &str| inline.clone().or_else(|| it.next().cloned()).with_context(|| format!("{name} needs a value"));
        match flag {
            "--json" => json = Some(value("--json")?),
            "--data-dir" => data_dir = PathBuf::from(value("--data-dir")?),
            other => bail!(
                "`{other}` is not an argument of the raw form `seckill admin {verb} --json '{{…}}'`; the subcommands \
                 take flags (`seckill admin --help`)"
            ),
        }
    }
    let text = json.filter(|j| !j.trim().is_empty()).unwrap_or_else(|| "{}".into());
    let args: Value = serde_json::from_str(&text).with_context(|| format!("--json is not valid JSON: {text}"))?;
    Ok((verb.clone(), args, data_dir))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match &args.command {
        Command::Replica(ReplicaCmd::Status { peers }) => {
            return super::replicated::status(peers, &args.data_dir, args.json.is_some())
        }
        Command::Replica(ReplicaCmd::Add { replica, peers, catch_up_timeout_ms }) => {
            return super::replicated::add(peers, replica, *catch_up_timeout_ms, &args.data_dir, args.json.is_some())
        }
        Command::Replica(ReplicaCmd::Remove { id, peers }) => {
            return super::replicated::remove(peers, *id, &args.data_dir, args.json.is_some())
        }
        _ => {}
    }
    if let Command::Raw(words) = &args.command {
        let (verb, json_args, data_dir) = raw(words, args.json.clone(), args.data_dir.clone())?;
        let result = call_value(&data_dir, &verb, &json_args).map_err(with_hint)?;
        return emit(&format!("{}\n", serde_json::to_string_pretty(&result)?));
    }
    // `--json '{…}'` after a subcommand: only the verbs without flags take
    // arguments that way (the raw form of `stats`, `snapshot`, …).
    let raw_args = args.json.as_deref().filter(|j| !j.trim().is_empty());
    let flagless = matches!(
        args.command,
        Command::Stats | Command::Verify | Command::Warmup | Command::Snapshot | Command::Shutdown
    );
    if raw_args.is_some() && !flagless {
        bail!(
            "--json takes no value after this command: give its fields as flags (see --help) and `--json` alone \
             for JSON output, or use the raw form `seckill admin VERB --json '{{…}}'`"
        );
    }
    let (verb, mut json_args, shape) = request(args.command)?;
    if let Some(text) = raw_args {
        json_args = serde_json::from_str(text).with_context(|| format!("--json is not valid JSON: {text}"))?;
    }
    let result = call_value(&args.data_dir, &verb, &json_args).map_err(with_hint)?;
    if args.json.is_some() {
        return emit(&format!("{}\n", serde_json::to_string_pretty(&result)?));
    }
    let text = match shape {
        Shape::Activities => table::activities(&result),
        Shape::Fields => table::fields(&result),
    };
    emit(&text)?;
    if verb == "shutdown" {
        emit("the engine is stopping: it drains its queues, fsyncs and exits\n")?;
    }
    Ok(())
}

/// Writes to stdout. A reader that left early (`seckill admin stats | head`)
/// is not an error: the command already did its work.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing the answer to stdout"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_take_three_forms() {
        assert_eq!(parse_time("2026-11-25T10:00:00Z").as_deref(), Ok("2026-11-25T10:00:00Z"));
        assert_eq!(parse_time("2026-11-25T12:00:00+02:00").as_deref(), Ok("2026-11-25T10:00:00Z"));
        let now = parse_time("now").expect("now");
        let later = parse_time("+10m").expect("+10m");
        assert!(later > now, "{later} after {now}");
        assert!(parse_time("+1d").is_ok());
        for bad in ["tomorrow", "+10", "+m", "+10w", "2026-11-25", ""] {
            assert!(parse_time(bad).unwrap_err().contains("RFC 3339"), "{bad}");
        }
    }

    #[test]
    fn the_raw_form_reads_json_and_data_dir() {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (verb, args, dir) =
            raw(&w(&["activity.show", "--json", r#"{"activity_id":3}"#]), None, "./data".into()).expect("ok");
        assert_eq!((verb.as_str(), args["activity_id"].as_u64(), dir), ("activity.show", Some(3), "./data".into()));
        let (_, args, dir) = raw(&w(&["stats", "--data-dir=/x"]), None, "./data".into()).expect("ok");
        assert_eq!((args, dir), (json!({}), PathBuf::from("/x")));
        let (_, args, _) = raw(&w(&["order.show"]), Some(r#"{"order_id":"a"}"#.into()), "d".into()).expect("ok");
        assert_eq!(args["order_id"], "a");
        assert!(raw(&w(&["activty.create"]), None, "d".into()).unwrap_err().to_string().contains("unknown"));
        assert!(raw(&w(&["stats", "--bogus"]), None, "d".into()).unwrap_err().to_string().contains("--bogus"));
        assert!(raw(&w(&["stats", "--json"]), None, "d".into()).is_err());
    }
}
