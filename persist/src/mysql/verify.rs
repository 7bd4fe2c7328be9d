//! Comparing MySQL with the engine (invariant 4 of DESIGN.md).

use super::apply::{self, parse_order};
use super::schema::{self, str_col, u32_col, u64_col};
use seckill_engine::{Activity, Engine, Order, ShardState};
use seckill_proto::OrderId;
use sqlx::{Connection, MySqlConnection};
use std::collections::{BTreeMap, HashMap};

/// Differences listed per kind before the rest are only counted.
const SHOWN_PER_KIND: usize = 20;

struct Diffs {
    out: Vec<String>,
    per_kind: HashMap<&'static str, usize>,
}

impl Diffs {
    fn add(&mut self, kind: &'static str, msg: String) {
        let n = self.per_kind.entry(kind).or_default();
        *n += 1;
        if *n <= SHOWN_PER_KIND {
            self.out.push(msg);
        }
    }

    fn finish(mut self) -> Vec<String> {
        let mut kinds: Vec<_> = self.per_kind.into_iter().filter(|(_, n)| *n > SHOWN_PER_KIND).collect();
        kinds.sort();
        for (kind, n) in kinds {
            self.out.push(format!("… {} more {kind} differences ({n} in all)", n - SHOWN_PER_KIND));
        }
        self.out
    }
}

struct EngineState {
    orders: HashMap<OrderId, Order>,
    /// (user, activity) → units held
    purchases: BTreeMap<(u64, u64), u64>,
    /// (activity, user) → limit
    quotas: BTreeMap<(u64, u64), u32>,
    /// id → (config, total stock, remaining)
    activities: BTreeMap<u64, (Activity, u64, u64)>,
}

type ShardPart = (Vec<Order>, Vec<(u64, u64, u64)>, Vec<(u64, u64, u32)>, Vec<(Activity, u64, u64)>);

fn engine_state(engine: &Engine) -> EngineState {
    let parts: Vec<ShardPart> = engine.inspect(|st: &ShardState| {
        let orders = st.orders.values().copied().collect();
        let mut purchases = Vec::new();
        let mut quotas = Vec::new();
        let mut activities = Vec::new();
        for (&activity_id, slot) in &st.slots {
            purchases.extend(slot.purchases.iter().map(|(user, n)| (user, activity_id, u64::from(n))));
            quotas.extend(slot.quotas.iter().map(|(&user, &limit)| (activity_id, user, limit)));
            if st.id == 0 {
                activities.push(((*slot.activity).clone(), slot.pool.added(), slot.pool.remaining()));
            }
        }
        (orders, purchases, quotas, activities)
    });
    let mut s = EngineState {
        orders: HashMap::new(),
        purchases: BTreeMap::new(),
        quotas: BTreeMap::new(),
        activities: BTreeMap::new(),
    };
    for (orders, purchases, quotas, activities) in parts {
        s.orders.extend(orders.into_iter().map(|o| (o.id, o)));
        for (user, activity, n) in purchases.into_iter().filter(|p| p.2 > 0) {
            *s.purchases.entry((user, activity)).or_default() += n;
        }
        s.quotas.extend(quotas.into_iter().map(|(a, u, l)| ((a, u), l)));
        s.activities.extend(activities.into_iter().map(|(a, total, rem)| (a.id, (a, total, rem))));
    }
    s
}

/// Compares MySQL with the engine's state: orders (every field, status
/// included), purchases, quotas, and each activity's configuration, total
/// and remaining stock. Returns the differences in words; empty means
/// equal. Call it when the persister has caught up and nothing is being
/// written (otherwise it reports the lag as differences).
pub async fn verify(url: &str, engine: &Engine) -> anyhow::Result<Vec<String>> {
    let mut conn = schema::connect(&schema::options(url)?).await?;
    let e = engine_state(engine);
    let mut d = Diffs { out: Vec::new(), per_kind: HashMap::new() };
    orders(&mut conn, &e, &mut d).await?;
    purchases(&mut conn, &e, &mut d).await?;
    quotas(&mut conn, &e, &mut d).await?;
    activities(&mut conn, &e, &mut d).await?;
    products(&mut conn, engine, &mut d).await?;
    let _ = conn.close().await;
    Ok(d.finish())
}

fn bad(m: String) -> anyhow::Error {
    anyhow::anyhow!("unreadable row in MySQL: {m}")
}

/// Every order in both, field by field, and the ones only one side has.
async fn orders(conn: &mut MySqlConnection, e: &EngineState, d: &mut Diffs) -> anyhow::Result<()> {
    let mut seen = 0usize;
    let rows = sqlx::query(&format!("SELECT {} FROM orders", apply::order_columns())).fetch_all(&mut *conn).await?;
    for row in &rows {
        let r = parse_order(row).map_err(bad)?;
        let m = r.order;
        match e.orders.get(&m.id) {
            None => d.add("order", format!("order {} is in MySQL ({}) but not in the engine", m.id, m.status.as_str())),
            Some(o) => {
                seen += 1;
                if o != &m {
                    d.add("order", format!("order {}: engine {:?} ≠ MySQL {:?}", m.id, o, m));
                }
            }
        }
    }
    if seen < e.orders.len() {
        let in_mysql: std::collections::HashSet<OrderId> =
            rows.iter().filter_map(|r| parse_order(r).ok()).map(|r| r.order.id).collect();
        let mut missing: Vec<&Order> = e.orders.values().filter(|o| !in_mysql.contains(&o.id)).collect();
        missing.sort_unstable_by_key(|o| o.id);
        for o in missing {
            d.add("order", format!("order {} ({}) is not in MySQL", o.id, o.status.as_str()));
        }
    }
    Ok(())
}

/// Units each user holds per activity (rows of 0 in MySQL count as none).
async fn purchases(conn: &mut MySqlConnection, e: &EngineState, d: &mut Diffs) -> anyhow::Result<()> {
    let mut mysql_purchases: BTreeMap<(u64, u64), i64> = BTreeMap::new();
    for row in sqlx::query("SELECT user_id, activity_id, `count` FROM purchases WHERE `count` <> 0")
        .fetch_all(&mut *conn)
        .await?
    {
        let key = (u64_col(&row, "user_id").map_err(bad)?, u64_col(&row, "activity_id").map_err(bad)?);
        mysql_purchases.insert(key, schema::i64_col(&row, "count").map_err(bad)?);
    }
    for (key, n) in &e.purchases {
        let m = mysql_purchases.remove(key).unwrap_or(0);
        if m != *n as i64 {
            d.add("purchase", format!("user {} in activity {} holds {n} in the engine, {m} in MySQL", key.0, key.1));
        }
    }
    for ((user, activity), m) in mysql_purchases {
        d.add("purchase", format!("user {user} in activity {activity} holds 0 in the engine, {m} in MySQL"));
    }
    Ok(())
}

/// Per-user limits set by the operator.
async fn quotas(conn: &mut MySqlConnection, e: &EngineState, d: &mut Diffs) -> anyhow::Result<()> {
    let mut mysql_quotas: BTreeMap<(u64, u64), u32> = BTreeMap::new();
    for row in sqlx::query("SELECT activity_id, user_id, user_limit FROM quotas").fetch_all(&mut *conn).await? {
        let key = (u64_col(&row, "activity_id").map_err(bad)?, u64_col(&row, "user_id").map_err(bad)?);
        mysql_quotas.insert(key, u32_col(&row, "user_limit").map_err(bad)?);
    }
    for (key, limit) in &e.quotas {
        match mysql_quotas.remove(key) {
            Some(m) if m == *limit => {}
            other => d.add(
                "quota",
                format!("quota of user {} in activity {}: engine {limit}, MySQL {other:?}", key.1, key.0),
            ),
        }
    }
    for ((activity, user), m) in mysql_quotas {
        d.add("quota", format!("quota of user {user} in activity {activity}: engine none, MySQL {m}"));
    }
    Ok(())
}

/// Each activity's configuration, total and remaining stock, and its `in_engine` mark.
async fn activities(conn: &mut MySqlConnection, e: &EngineState, d: &mut Diffs) -> anyhow::Result<()> {
    let sql = format!(
        "SELECT id, product_id, product_name, title, price_cents, total_stock, remaining, {}, status, in_engine \
         FROM activities",
        schema::terms_columns()
    );
    let mut mysql_activities = BTreeMap::new();
    for row in sqlx::query(&sql).fetch_all(&mut *conn).await? {
        let id = u64_col(&row, "id").map_err(bad)?;
        let status_text = str_col(&row, "status").map_err(bad)?;
        let a = Activity {
            id,
            product_id: u64_col(&row, "product_id").map_err(bad)?,
            product_name: str_col(&row, "product_name").map_err(bad)?,
            title: str_col(&row, "title").map_err(bad)?,
            price_cents: u64_col(&row, "price_cents").map_err(bad)?,
            terms: schema::sale_terms(&row).map_err(bad)?,
            status: seckill_proto::ActivityStatus::from_name(&status_text)
                .ok_or_else(|| bad(format!("activity {id} has status `{status_text}`")))?,
        };
        let total = u64_col(&row, "total_stock").map_err(bad)?;
        let remaining = schema::i64_col(&row, "remaining").map_err(bad)?;
        let in_engine = u64_col(&row, "in_engine").map_err(bad)? != 0;
        mysql_activities.insert(id, (a, total, remaining, in_engine));
    }
    for (id, (a, total, remaining)) in &e.activities {
        match mysql_activities.remove(id) {
            None => d.add("activity", format!("activity {id} is not in MySQL")),
            Some((m, m_total, m_remaining, in_engine)) => {
                if !in_engine {
                    d.add("activity", format!("activity {id} is still marked in_engine = 0 in MySQL"));
                }
                if m != *a {
                    d.add("activity", format!("activity {id} configuration: engine {a:?} ≠ MySQL {m:?}"));
                }
                if m_total != *total {
                    d.add("stock", format!("activity {id} total_stock: engine {total}, MySQL {m_total}"));
                }
                if m_remaining != *remaining as i64 {
                    d.add("stock", format!("activity {id} remaining: engine {remaining}, MySQL {m_remaining}"));
                }
            }
        }
    }
    for (id, (_, _, _, in_engine)) in mysql_activities {
        if in_engine {
            d.add("activity", format!("activity {id} is in MySQL (in_engine = 1) but not in the engine"));
        }
    }
    Ok(())
}

/// Each product's fields and its `in_engine` mark.
async fn products(conn: &mut MySqlConnection, engine: &Engine, d: &mut Diffs) -> anyhow::Result<()> {
    let mut mysql_products = BTreeMap::new();
    for row in sqlx::query("SELECT id, name, description, image_url, price_cents, in_engine FROM products")
        .fetch_all(&mut *conn)
        .await?
    {
        let id = u64_col(&row, "id").map_err(bad)?;
        let fields = (
            str_col(&row, "name").map_err(bad)?,
            str_col(&row, "description").map_err(bad)?,
            str_col(&row, "image_url").map_err(bad)?,
            u64_col(&row, "price_cents").map_err(bad)?,
        );
        mysql_products.insert(id, (fields, u64_col(&row, "in_engine").map_err(bad)? != 0));
    }
    for p in engine.products() {
        match mysql_products.remove(&p.id) {
            Some(((name, description, image_url, price), true))
                if name == p.name
                    && description == p.description
                    && image_url == p.image_url
                    && price == p.price_cents => {}
            Some(_) => d.add("product", format!("product {} differs in MySQL (or is marked in_engine = 0)", p.id)),
            None => d.add("product", format!("product {} is not in MySQL", p.id)),
        }
    }
    for (id, (_, in_engine)) in mysql_products {
        if in_engine {
            d.add("product", format!("product {id} is in MySQL (in_engine = 1) but not in the engine"));
        }
    }
    Ok(())
}
