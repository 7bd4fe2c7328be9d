//! `warmup`: load products and activities an operator prepared in MySQL.
//!
//! The rule: rows with `in_engine = 0` whose id is above the largest id the
//! engine has are created in the engine, in id order, with exactly that id
//! (ids only grow, so a row at or below the largest id cannot get its id and
//! is reported, not renumbered). Activities are created with `total_stock`
//! as their stock (the row's `remaining` is ignored) and then paused or
//! disabled if the row says so; `quotas` rows of the activities created are
//! set too. Rows the engine already has are left alone: the engine is the
//! source of truth, and the persister soon marks the new ones
//! `in_engine = 1` with the engine's numbers.

use super::schema::{self, str_col, u32_col, u64_col};
use seckill_engine::WarmupHook;
use seckill_engine::{ActivitySpec, Engine};
use seckill_proto::{ActivityStatus, Request, Response};
use serde_json::{json, Value};
use sqlx::mysql::MySqlRow;
use sqlx::{Connection, MySql, MySqlConnection, QueryBuilder};
use std::sync::Arc;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WarmupReport {
    pub products_created: Vec<u64>,
    pub activities_created: Vec<u64>,
    pub quotas_set: usize,
    /// Rows left alone, and why.
    pub skipped: Vec<String>,
    /// Rows the engine refused, and why.
    pub errors: Vec<String>,
}

impl WarmupReport {
    pub fn to_json(&self) -> Value {
        json!({
            "products_created": self.products_created,
            "activities_created": self.activities_created,
            "quotas_set": self.quotas_set,
            "skipped": self.skipped,
            "errors": self.errors,
        })
    }
}

struct ActivityRow {
    id: u64,
    spec: ActivitySpec,
    status: ActivityStatus,
}

fn activity_row(row: &MySqlRow) -> Result<ActivityRow, String> {
    let id = u64_col(row, "id")?;
    let status_text = str_col(row, "status")?;
    let status = ActivityStatus::from_name(&status_text)
        .ok_or_else(|| format!("status `{status_text}` is not active, paused or disabled"))?;
    let product_id = u64_col(row, "product_id")?;
    Ok(ActivityRow {
        id,
        spec: ActivitySpec {
            title: str_col(row, "title")?,
            product_id: (product_id != 0).then_some(product_id),
            price_cents: u64_col(row, "price_cents")?,
            stock: u64_col(row, "total_stock")?,
            terms: schema::sale_terms(row)?,
        },
        status,
    })
}

/// Loads what MySQL has prepared and the engine lacks (see the module
/// doc for the rule). Errors only when MySQL cannot be read; rows the
/// engine refuses are listed in the report.
pub async fn warmup(url: &str, engine: &Engine) -> anyhow::Result<WarmupReport> {
    let mut conn = schema::connect(&schema::options(url)?).await?;
    let mut report = WarmupReport::default();
    let (last_product, last_activity) = engine.last_ids();
    products(&mut conn, engine, last_product, &mut report).await?;
    activities(&mut conn, engine, last_activity, &mut report).await?;
    quotas(&mut conn, engine, &mut report).await?;
    let _ = conn.close().await;
    tracing::info!(
        products = report.products_created.len(),
        activities = report.activities_created.len(),
        quotas = report.quotas_set,
        skipped = report.skipped.len(),
        errors = report.errors.len(),
        "warmup from MySQL"
    );
    Ok(report)
}

/// Products marked `in_engine = 0` with ids above the engine's.
async fn products(
    conn: &mut MySqlConnection,
    engine: &Engine,
    last_product: u64,
    report: &mut WarmupReport,
) -> anyhow::Result<()> {
    let products = sqlx::query(
        "SELECT id, name, description, image_url, price_cents FROM products WHERE in_engine = 0 ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in &products {
        let parsed = (|| -> Result<_, String> {
            Ok((
                u64_col(row, "id")?,
                str_col(row, "name")?,
                str_col(row, "description")?,
                str_col(row, "image_url")?,
                u64_col(row, "price_cents")?,
            ))
        })();
        let (id, name, description, image_url, price) = match parsed {
            Ok(p) => p,
            Err(e) => {
                report.errors.push(format!("a products row: {e}"));
                continue;
            }
        };
        if id <= last_product {
            report
                .skipped
                .push(format!("product {id}: the engine's ids are already at {last_product} (use an id above it)"));
            continue;
        }
        match engine.create_product_as(Some(id), name, description, image_url, price) {
            Ok(p) => report.products_created.push(p.id),
            Err(e) => report.errors.push(format!("product {id}: {e}")),
        }
    }
    Ok(())
}

/// Activities marked `in_engine = 0` with ids above the engine's, created
/// with their status.
async fn activities(
    conn: &mut MySqlConnection,
    engine: &Engine,
    last_activity: u64,
    report: &mut WarmupReport,
) -> anyhow::Result<()> {
    let sql = format!(
        "SELECT id, product_id, title, price_cents, total_stock, {}, status FROM activities WHERE in_engine = 0 \
         ORDER BY id",
        schema::terms_columns()
    );
    for row in sqlx::query(&sql).fetch_all(&mut *conn).await? {
        let a = match activity_row(&row) {
            Ok(a) => a,
            Err(e) => {
                let id = u64_col(&row, "id").map_or_else(|_| "?".to_string(), |i| i.to_string());
                report.errors.push(format!("activity {id}: {e}"));
                continue;
            }
        };
        if a.id <= last_activity {
            report.skipped.push(format!(
                "activity {}: the engine's ids are already at {last_activity} (use an id above it)",
                a.id
            ));
            continue;
        }
        match engine.create_activity_as(Some(a.id), a.spec) {
            Ok(v) => {
                report.activities_created.push(v.id);
                if a.status != ActivityStatus::Active {
                    if let Err(e) = engine.set_activity_status(v.id, a.status) {
                        report.errors.push(format!(
                            "activity {}: created, but setting it {}: {e}",
                            v.id,
                            a.status.as_str()
                        ));
                    }
                }
            }
            Err(e) => report.errors.push(format!("activity {}: {e}", a.id)),
        }
    }
    Ok(())
}

/// The quotas of the activities this warmup created.
async fn quotas(conn: &mut MySqlConnection, engine: &Engine, report: &mut WarmupReport) -> anyhow::Result<()> {
    for chunk in report.activities_created.clone().chunks(500) {
        let mut q =
            QueryBuilder::<MySql>::new("SELECT activity_id, user_id, user_limit FROM quotas WHERE activity_id IN (");
        let mut sep = q.separated(", ");
        for id in chunk {
            sep.push_bind(*id);
        }
        q.push(") ORDER BY activity_id, user_id");
        for row in q.build().fetch_all(&mut *conn).await? {
            let parsed = (|| -> Result<_, String> {
                Ok((u64_col(&row, "activity_id")?, u64_col(&row, "user_id")?, u32_col(&row, "user_limit")?))
            })();
            let (activity_id, user_id, limit) = match parsed {
                Ok(q) => q,
                Err(e) => {
                    report.errors.push(format!("a quotas row: {e}"));
                    continue;
                }
            };
            match engine.call(Request::SetQuota { activity_id, user_id, limit }) {
                Response::Done => report.quotas_set += 1,
                other => report.errors.push(format!("quota of user {user_id} in activity {activity_id}: {other:?}")),
            }
        }
    }
    Ok(())
}

/// The admin `warmup` command for `AdminCtx.warmup`: runs `warmup` on a
/// small runtime of its own (the admin thread has none).
pub fn warmup_hook(url: String, engine: Arc<Engine>) -> WarmupHook {
    Arc::new(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting a runtime: {e}"))?;
        rt.block_on(warmup(&url, &engine)).map(|r| r.to_json()).map_err(|e| format!("{e:#}"))
    })
}
