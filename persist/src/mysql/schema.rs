//! Connecting, creating the database, applying `migrations/`, and the small
//! conversions every query needs (times, integers read back from rows).

use crate::redact_url;
use anyhow::Context;
use seckill_proto::SaleTerms;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlRow};
use sqlx::{Connection, Executor, Row};
use std::str::FromStr;
use std::time::Duration;

/// The URL `seckill up`, `engine` and `migrate` use unless told otherwise.
pub const DEFAULT_URL: &str = "mysql://root@127.0.0.1:3306/seckill";

/// The migrations in `migrations/`, compiled in.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// How long one connection attempt may take before it counts as a failure.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connection options for `url`. Sessions use UTC (sqlx's default), so
/// `NOW()` and `DATETIME` columns agree with the engine's clock.
pub(crate) fn options(url: &str) -> anyhow::Result<MySqlConnectOptions> {
    let opts = MySqlConnectOptions::from_str(url).with_context(|| format!("bad MySQL URL {}", redact_url(url)))?;
    Ok(opts.timezone(Some("+00:00".to_string())))
}

/// One connection, or an error within `CONNECT_TIMEOUT`.
pub(crate) async fn connect(opts: &MySqlConnectOptions) -> anyhow::Result<MySqlConnection> {
    match tokio::time::timeout(CONNECT_TIMEOUT, MySqlConnection::connect_with(opts)).await {
        Ok(conn) => Ok(conn?),
        Err(_) => anyhow::bail!("no answer from MySQL within {} s", CONNECT_TIMEOUT.as_secs()),
    }
}

/// Splits `mysql://user@host:port/db?opts` into the server URL (no
/// database) and the database name, which must be a plain identifier.
pub(crate) fn split_url(url: &str) -> anyhow::Result<(String, String)> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        anyhow::anyhow!("bad MySQL URL {}: expected mysql://user@host:port/database", redact_url(url))
    })?;
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, db) = match rest.split_once('/') {
        Some((a, d)) => (a, d.trim_end_matches('/')),
        None => (rest, ""),
    };
    anyhow::ensure!(!db.is_empty(), "MySQL URL {} names no database (add /seckill)", redact_url(url));
    anyhow::ensure!(
        db.len() <= 64 && db.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$'),
        "database name `{db}` in the MySQL URL must be letters, digits, `_` or `$` (at most 64)"
    );
    let mut server = format!("{scheme}://{authority}");
    if let Some(q) = query {
        server.push('?');
        server.push_str(q);
    }
    Ok((server, db.to_string()))
}

/// Creates the database named in `url` if it is missing (connecting to the
/// server without one first), then applies every migration in
/// `migrations/` that is not applied yet. Safe to run again and again.
pub async fn migrate(url: &str) -> anyhow::Result<()> {
    let (server, db) = split_url(url)?;
    let opts = options(url)?;
    let mut conn = match connect(&opts).await {
        Ok(conn) => conn,
        Err(e) if is_unknown_database(&e) => {
            let mut conn = connect(&options(&server)?)
                .await
                .with_context(|| format!("connecting to MySQL at {}", redact_url(&server)))?;
            let create =
                format!("CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci");
            conn.execute(create.as_str()).await.with_context(|| format!("creating database {db}"))?;
            let _ = conn.close().await;
            tracing::info!(database = %db, "created the MySQL database");
            connect(&opts).await.with_context(|| format!("connecting to {}", redact_url(url)))?
        }
        Err(e) => return Err(e.context(format!("connecting to {}", redact_url(url)))),
    };
    let mut result = MIGRATOR.run(&mut conn).await;
    // One round per migration at most: each clears one mark.
    for _ in 0..MIGRATOR.iter().count() {
        let Err(sqlx::migrate::MigrateError::Dirty(version)) = result else { break };
        // MySQL cannot roll back DDL, so a crash while a migration ran leaves
        // it marked unfinished for good. Ours are written to be re-run
        // (`IF NOT EXISTS`, `INSERT IGNORE`, information_schema checks):
        // forget the mark and run again.
        tracing::warn!(version, "migration {version} was interrupted earlier; running it again");
        conn.execute(sqlx::query("DELETE FROM _sqlx_migrations WHERE version = ? AND success = 0").bind(version))
            .await
            .with_context(|| format!("clearing the unfinished mark of migration {version}"))?;
        result = MIGRATOR.run(&mut conn).await;
    }
    let _ = conn.close().await;
    result.with_context(|| format!("applying migrations to {db}"))
}

/// Whether the MySQL server of `url` (its database need not exist) takes a
/// connection within `timeout`; the server's version when it does. For a
/// plain "MySQL is not reachable at …" before anything depends on it.
pub async fn probe(url: &str, timeout: Duration) -> anyhow::Result<String> {
    let (server, _) = split_url(url)?;
    let opts = options(&server)?;
    let mut conn = match tokio::time::timeout(timeout, MySqlConnection::connect_with(&opts)).await {
        Ok(conn) => conn.with_context(|| format!("connecting to {}", redact_url(&server)))?,
        Err(_) => anyhow::bail!("no answer from {} within {} s", redact_url(&server), timeout.as_secs_f64()),
    };
    let version: String =
        sqlx::query_scalar("SELECT VERSION()").fetch_one(&mut conn).await.context("SELECT VERSION()")?;
    let _ = conn.close().await;
    Ok(version)
}

/// Drops the database named in `url` if it exists, creates it again and
/// applies every migration: an empty copy, for a caller that owns the
/// database outright (`seckill demo` starts each run from nothing).
pub async fn recreate(url: &str) -> anyhow::Result<()> {
    let (server, db) = split_url(url)?;
    let mut conn =
        connect(&options(&server)?).await.with_context(|| format!("connecting to MySQL at {}", redact_url(&server)))?;
    conn.execute(format!("DROP DATABASE IF EXISTS `{db}`").as_str())
        .await
        .with_context(|| format!("dropping database {db}"))?;
    let _ = conn.close().await;
    migrate(url).await
}

/// MySQL's "Unknown database" (1049).
fn is_unknown_database(e: &anyhow::Error) -> bool {
    e.downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|d| d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|d| d.number() == 1049)
}

/// The largest time a DATETIME holds (9999-12-31 23:59:59.999 UTC).
const DATETIME_MS_MAX: u64 = 253_402_300_799_999;

/// Unix milliseconds as a `DATETIME(3)` literal in UTC.
pub(crate) fn datetime(ms: u64) -> String {
    let mut s = String::with_capacity(23);
    write_datetime(&mut s, ms);
    s
}

/// `datetime(ms)` appended to `out` (no allocation of its own).
pub(crate) fn write_datetime(out: &mut String, ms: u64) {
    use std::fmt::Write as _;
    let ms = ms.min(DATETIME_MS_MAX);
    let days = (ms / 86_400_000) as i64;
    let in_day = ms % 86_400_000;
    let (y, m, d) = seckill_proto::json::civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    );
}

/// SQL that reads a DATETIME column back as Unix milliseconds (BIGINT).
/// DATETIME has no time zone, so this is exact whatever the session's.
pub(crate) fn ms_of(column: &str) -> String {
    format!("(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {column}) DIV 1000)")
}

/// The SELECT list of an activity's terms, which `sale_terms` reads (warmup
/// and verify both read activity rows).
pub(crate) fn terms_columns() -> String {
    format!(
        "{} AS starts_ms, {} AS ends_ms, per_user_limit, payment_timeout_s, require_buy_token, gate_factor",
        ms_of("starts_at"),
        ms_of("ends_at")
    )
}

/// An activity row's terms (selected by `terms_columns`).
pub(crate) fn sale_terms(row: &MySqlRow) -> Result<SaleTerms, String> {
    Ok(SaleTerms {
        starts_at_ms: u64_col(row, "starts_ms")?,
        ends_at_ms: u64_col(row, "ends_ms")?,
        per_user_limit: u32_col(row, "per_user_limit")?,
        payment_timeout_s: u32_col(row, "payment_timeout_s")?,
        require_buy_token: u64_col(row, "require_buy_token")? != 0,
        gate_factor: u32_col(row, "gate_factor")?,
    })
}

/// An integer column, whether MySQL typed it signed or not, as `T`. Bad
/// data (a value `T` cannot hold) is an error naming the column, never a
/// panic.
fn int_col<T: TryFrom<u64> + TryFrom<i64>>(row: &MySqlRow, col: &str) -> Result<T, String> {
    let out_of_range =
        |v: &dyn std::fmt::Display| format!("column {col} is {v}, out of range for {}", std::any::type_name::<T>());
    if let Ok(v) = row.try_get::<u64, _>(col) {
        return T::try_from(v).map_err(|_| out_of_range(&v));
    }
    match row.try_get::<i64, _>(col) {
        Ok(v) => T::try_from(v).map_err(|_| out_of_range(&v)),
        Err(e) => Err(format!("column {col}: {e}")),
    }
}

pub(crate) fn u64_col(row: &MySqlRow, col: &str) -> Result<u64, String> {
    int_col(row, col)
}

pub(crate) fn i64_col(row: &MySqlRow, col: &str) -> Result<i64, String> {
    int_col(row, col)
}

pub(crate) fn u32_col(row: &MySqlRow, col: &str) -> Result<u32, String> {
    int_col(row, col)
}

pub(crate) fn str_col(row: &MySqlRow, col: &str) -> Result<String, String> {
    row.try_get::<Option<String>, _>(col).map(Option::unwrap_or_default).map_err(|e| format!("column {col}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_are_utc_with_milliseconds() {
        assert_eq!(datetime(0), "1970-01-01 00:00:00.000");
        assert_eq!(datetime(1_700_000_000_123), "2023-11-14 22:13:20.123");
        assert_eq!(datetime(951_782_400_000), "2000-02-29 00:00:00.000");
        assert_eq!(datetime(u64::MAX), "9999-12-31 23:59:59.999");
    }

    #[test]
    fn urls_split_into_server_and_database() {
        assert_eq!(
            split_url("mysql://root@127.0.0.1:3306/seckill").unwrap(),
            ("mysql://root@127.0.0.1:3306".to_string(), "seckill".to_string())
        );
        assert_eq!(
            split_url("mysql://u:p@h/db_1?ssl-mode=disabled").unwrap(),
            ("mysql://u:p@h?ssl-mode=disabled".to_string(), "db_1".to_string())
        );
        assert!(split_url("mysql://root@h:3306").is_err());
        assert!(split_url("mysql://root@h/a;drop").is_err());
        assert!(split_url("nonsense").is_err());
    }
}
