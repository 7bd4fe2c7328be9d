//! The demo's downstream copies: MySQL (the persister) and Redis (the
//! mirror). Each is prepared before the service starts (reachable? then
//! emptied, so this run's copy can be checked exactly) and checked after
//! the sale, once it has caught up with the WAL.

use crate::cmd::admin;
use anyhow::{bail, Context};
use seckill_persist::redact_url;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// The demo's own MySQL database: it is dropped and created again every run.
pub const MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/seckill_demo";
/// The demo's own Redis database (number 12): its `seckill:*` keys are
/// deleted every run. Tests use other numbers (chaos 9, the demo's test 11,
/// host_security 14).
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/12";
/// Only databases with this name prefix are dropped by the demo.
const MYSQL_DB_PREFIX: &str = "seckill_demo";
/// The mirror's key prefix (MirrorConfig's default, docs/REDIS.md).
const PREFIX: &str = "seckill:";
/// Outside the mirror's prefix (its resync deletes unknown keys under it):
/// says that the demo owns this Redis database.
const OWNER_KEY: &str = "seckill-demo:owner";
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

const START_MYSQL: &str = "start MariaDB/MySQL (`sudo service mariadb start`, or `scripts/services` \
                           in a clone) or point --mysql-url at one";
const START_REDIS: &str = "start Redis (`sudo service redis-server start`, or `scripts/services` in a \
                           clone) or point --redis-url at one";

/// What became of one copy before the sale.
pub enum Plan {
    /// Reachable and emptied: the service writes it.
    On { url: String },
    /// Not used this run: why, and how to get it next time.
    Skipped { why: String, fix: String },
}

impl Plan {
    pub fn url(&self) -> Option<&str> {
        match self {
            Plan::On { url } => Some(url),
            Plan::Skipped { .. } => None,
        }
    }
}

/// The name of the database in a `mysql://…/db` URL.
fn mysql_db(url: &str) -> &str {
    let path = url.split_once("://").map_or(url, |(_, r)| r);
    let path = path.split('?').next().unwrap_or_default();
    path.split_once('/').map_or("", |(_, db)| db.trim_end_matches('/'))
}

/// `host:port` of a `scheme://[user[:pw]@]host:port[/…]` URL, for messages.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    host.split(['/', '?']).next().unwrap_or_default().to_string()
}

/// Checks MySQL and gives the demo a fresh, migrated database. A database
/// whose name does not start with `seckill_demo` is refused (an error, not a
/// skip): the demo drops what it is given.
pub fn prepare_mysql(rt: &tokio::runtime::Runtime, url: &str) -> anyhow::Result<Plan> {
    if url == "none" {
        return Ok(Plan::Skipped { why: "--mysql-url none".into(), fix: "drop `--mysql-url none` to see it".into() });
    }
    let db = mysql_db(url);
    if !db.starts_with(MYSQL_DB_PREFIX) {
        bail!(
            "--mysql-url {} names the database `{db}`; the demo drops and recreates its database every run, so it \
             only uses one whose name starts with `{MYSQL_DB_PREFIX}` (e.g. {MYSQL_URL}), or `none`",
            redact_url(url)
        );
    }
    let at = host_port(url);
    if let Err(e) = rt.block_on(seckill_persist::mysql::probe(url, PROBE_TIMEOUT)) {
        // A server that answers and refuses (a password, a grant) needs another URL, not a start.
        if let Some(sqlx::Error::Database(refusal)) = e.downcast_ref::<sqlx::Error>() {
            return Ok(Plan::Skipped {
                why: format!("MySQL at {at} refused the demo's connection ({refusal})"),
                fix: "pass --mysql-url with a user (and password) that may create and drop the database".into(),
            });
        }
        let why = format!("MySQL is not reachable at {at} ({})", e.root_cause());
        return Ok(Plan::Skipped { why, fix: START_MYSQL.into() });
    }
    if let Err(e) = rt.block_on(seckill_persist::mysql::recreate(url)) {
        return Ok(Plan::Skipped {
            why: format!("MySQL at {at} answers but the demo cannot recreate `{db}` ({e:#})"),
            fix: "pass --mysql-url with a user that may create and drop that database".into(),
        });
    }
    Ok(Plan::On { url: url.to_string() })
}

fn redis_conn(url: &str) -> anyhow::Result<redis::Connection> {
    let client = redis::Client::open(url).with_context(|| format!("bad Redis URL {}", redact_url(url)))?;
    let mut c = client.get_connection_with_timeout(PROBE_TIMEOUT).context("connecting")?;
    c.set_read_timeout(Some(Duration::from_secs(10))).context("setting a read timeout")?;
    c.set_write_timeout(Some(Duration::from_secs(10))).context("setting a write timeout")?;
    redis::cmd("PING").query::<String>(&mut c).context("PING")?;
    Ok(c)
}

/// Every key under `pattern` (SCAN, so Redis is never blocked).
fn scan(c: &mut redis::Connection, pattern: &str) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000).query(c)?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// Checks Redis and empties the demo's keys in its database. A database
/// that holds another engine's mirror (its `seckill:mirror:run` is set and
/// the demo's owner key is not) is refused: the demo would overwrite it.
pub fn prepare_redis(url: &str) -> anyhow::Result<Plan> {
    if url == "none" {
        return Ok(Plan::Skipped { why: "--redis-url none".into(), fix: "drop `--redis-url none` to see it".into() });
    }
    let at = host_port(url);
    let mut c = match redis_conn(url) {
        Ok(c) => c,
        Err(e) => {
            let refused = e.downcast_ref::<redis::RedisError>().is_some_and(|r| !r.is_io_error() && !r.is_timeout());
            let down = !refused;
            return Ok(if down {
                Plan::Skipped {
                    why: format!("Redis is not reachable at {at} ({})", e.root_cause()),
                    fix: START_REDIS.into(),
                }
            } else {
                Plan::Skipped {
                    why: format!("Redis at {at} refused the demo ({})", e.root_cause()),
                    fix: "pass --redis-url with the password it needs (redis://:PASSWORD@host:port/db)".into(),
                }
            });
        }
    };
    let foreign: bool = redis::cmd("EXISTS").arg(format!("{PREFIX}mirror:run")).query::<u64>(&mut c)? == 1
        && redis::cmd("EXISTS").arg(OWNER_KEY).query::<u64>(&mut c)? == 0;
    if foreign {
        bail!(
            "Redis at {} holds another engine's mirror ({PREFIX}mirror:run is set) and the demo would overwrite it: \
             pass --redis-url with a database number of its own (e.g. {REDIS_URL}), or `none`",
            redact_url(url)
        );
    }
    redis::cmd("SET")
        .arg(OWNER_KEY)
        .arg("seckill demo: its seckill:* keys are deleted at every demo run")
        .query::<()>(&mut c)?;
    for chunk in scan(&mut c, &format!("{PREFIX}*"))?.chunks(1000) {
        redis::cmd("UNLINK").arg(chunk).query::<u64>(&mut c)?;
    }
    Ok(Plan::On { url: url.to_string() })
}

/// One row of the demo's closing table.
pub struct Outcome {
    pub copy: &'static str,
    /// `verified`, `skipped` or `FAILED`.
    pub state: &'static str,
    pub detail: String,
}

impl Outcome {
    pub fn verified(copy: &'static str, detail: String) -> Outcome {
        Outcome { copy, state: "verified", detail }
    }
    pub fn failed(copy: &'static str, detail: String) -> Outcome {
        Outcome { copy, state: "FAILED", detail }
    }
    pub fn skipped(copy: &'static str, why: &str, fix: &str) -> Outcome {
        Outcome { copy, state: "skipped", detail: format!("{why}\n{fix}") }
    }
}

/// What the sale left, as the engine says: the truth both copies must match.
pub struct Expected<'a> {
    pub activity_id: u64,
    pub total_stock: u64,
    pub remaining: u64,
    /// `(user, order id)` of every acknowledged order (quantity 1 each).
    pub orders: &'a [(u64, String)],
    /// Everything up to this LSN is durable and must be in both copies.
    pub lsn: u64,
}

/// Waits until `applied()` reaches `lsn` or `deadline` passes; the time
/// from `since` until it did, or `None` on timeout.
pub fn wait_for(lsn: u64, since: Instant, deadline: Instant, applied: impl Fn() -> u64) -> Option<Duration> {
    loop {
        if applied() >= lsn {
            return Some(since.elapsed());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// MySQL: the admin `verify` command (every order, purchase, quota, product
/// and activity compared with the engine; 0 differences), plus a count.
pub fn check_mysql(rt: &tokio::runtime::Runtime, data_dir: &Path, url: &str, want: &Expected) -> Outcome {
    let report = match admin::call(data_dir, "verify", "{}") {
        Ok(r) => r,
        Err(e) => return Outcome::failed("MySQL", format!("{e:#}")),
    };
    let lsn = report["lsn"].as_u64().unwrap_or(0);
    let orders = rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::MySqlConnection::connect(url).await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE activity_id = ?")
            .bind(want.activity_id)
            .fetch_one(&mut c)
            .await?;
        let _ = c.close().await;
        anyhow::Ok(n)
    });
    match orders {
        Ok(n) if n as usize == want.orders.len() => Outcome::verified(
            "MySQL",
            format!("`seckill admin verify`: 0 differences at LSN {lsn}; {n} orders in `{}`", mysql_db(url)),
        ),
        Ok(n) => Outcome::failed("MySQL", format!("{n} orders in MySQL, {} acknowledged", want.orders.len())),
        Err(e) => Outcome::failed("MySQL", format!("counting the orders: {e:#}")),
    }
}

/// Redis: the keys of docs/REDIS.md hold what the engine decided.
pub fn check_redis(url: &str, want: &Expected) -> Outcome {
    match redis_findings(url, want) {
        Ok((problems, detail)) if problems.is_empty() => Outcome::verified("Redis", detail),
        Ok((problems, _)) => {
            let n = problems.len();
            let mut d = problems.into_iter().take(3).collect::<Vec<_>>().join("; ");
            if n > 3 {
                d.push_str(&format!("; … {} more", n - 3));
            }
            Outcome::failed("Redis", d)
        }
        Err(e) => Outcome::failed("Redis", format!("reading Redis: {e:#}")),
    }
}

fn redis_findings(url: &str, want: &Expected) -> anyhow::Result<(Vec<String>, String)> {
    let mut c = redis_conn(url)?;
    let mut problems = Vec::new();
    let lsn: Option<u64> = redis::cmd("GET").arg(format!("{PREFIX}mirror:lsn")).query(&mut c)?;
    match lsn {
        Some(l) if l >= want.lsn => {}
        other => problems.push(format!("{PREFIX}mirror:lsn is {other:?}, the engine is at {}", want.lsn)),
    }
    let a: HashMap<String, String> =
        redis::cmd("HGETALL").arg(format!("{PREFIX}activity:{}", want.activity_id)).query(&mut c)?;
    let field = |k: &str| a.get(k).and_then(|v| v.parse::<u64>().ok());
    if field("remaining") != Some(want.remaining) || field("total_stock") != Some(want.total_stock) {
        problems.push(format!(
            "activity {}: remaining {:?} of {:?} in Redis, the engine says {} of {}",
            want.activity_id,
            a.get("remaining"),
            a.get("total_stock"),
            want.remaining,
            want.total_stock
        ));
    }
    // The demo runs without order hashes (`--redis-order-hashes` off): none.
    let order_keys = scan(&mut c, &format!("{PREFIX}order:*"))?.len();
    if order_keys != 0 {
        problems.push(format!("{order_keys} {PREFIX}order:* keys, order hashes are off"));
    }
    let held: HashMap<String, u64> =
        redis::cmd("HGETALL").arg(format!("{PREFIX}purchased:{}", want.activity_id)).query(&mut c)?;
    let units: u64 = held.values().sum();
    if units != want.orders.len() as u64 || held.len() != want.orders.len() {
        problems.push(format!(
            "{PREFIX}purchased:{}: {} buyers hold {units} units, expected {} buyers with 1 each",
            want.activity_id,
            held.len(),
            want.orders.len()
        ));
    }
    // One `created` entry per acknowledged order in the event stream, with
    // its buyer (plus the mirror's `resync` markers).
    let stream = format!("{PREFIX}events");
    let (mut created, mut from) = (HashMap::new(), "-".to_string());
    loop {
        type Entry = (String, HashMap<String, String>);
        let page: Vec<Entry> =
            redis::cmd("XRANGE").arg(&stream).arg(&from).arg("+").arg("COUNT").arg(1000).query(&mut c)?;
        for (_, f) in page.iter().filter(|(_, f)| f.get("type").map(String::as_str) == Some("created")) {
            let user = f.get("user_id").and_then(|u| u.parse::<u64>().ok());
            created.entry(f.get("order_id").cloned().unwrap_or_default()).or_insert((user, 0u32)).1 += 1;
        }
        match page.last() {
            Some((id, _)) if page.len() == 1000 => from = format!("({id}"),
            _ => break,
        }
    }
    for (user, id) in want.orders {
        match created.get(id) {
            Some((u, 1)) if *u == Some(*user) => {}
            found => problems.push(format!("order {id} of user {user}: `created` entries (user, count) {found:?}")),
        }
    }
    if created.len() != want.orders.len() {
        problems.push(format!(
            "{} orders with a `created` entry in {stream}, {} acknowledged",
            created.len(),
            want.orders.len()
        ));
    }
    let created = created.len();
    let db = url.rsplit_once('/').map_or("0", |(_, d)| d);
    let detail = format!(
        "stock left {} of {}; {created} stream entries, one `created` per order with its buyer (redis-cli -n {db})",
        want.remaining, want.total_stock
    );
    Ok((problems, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_for_their_parts() {
        assert_eq!(mysql_db(MYSQL_URL), "seckill_demo");
        assert_eq!(mysql_db("mysql://u:p@h:3306/seckill_demo_x?ssl-mode=disabled"), "seckill_demo_x");
        assert_eq!(mysql_db("mysql://u@h:3306"), "");
        assert_eq!(host_port(MYSQL_URL), "127.0.0.1:3306");
        assert_eq!(host_port("redis://:secret@10.0.0.1:6380/3"), "10.0.0.1:6380");
    }

    #[test]
    fn only_demo_databases_are_dropped() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        for url in ["mysql://root@127.0.0.1:3306/seckill", "mysql://root@127.0.0.1:3306/shop", "mysql://root@h:1"] {
            let e = prepare_mysql(&rt, url).err().expect("refused");
            assert!(e.to_string().contains("starts with `seckill_demo`"), "{e}");
        }
    }
}
