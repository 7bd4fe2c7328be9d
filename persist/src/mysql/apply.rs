//! Turning WAL records into SQL: one transaction per batch, fenced by the
//! checkpoint row, and the full rewrite (`resync`) from a `Replica`.
//!
//! Exactly once: every batch transaction first locks `persist_checkpoint`
//! (`SELECT … FOR UPDATE`) and goes on only if it holds the LSN just before
//! the batch; it ends by writing the batch's last LSN there. Either all of a
//! batch and its checkpoint commit, or none does, so a record is applied iff
//! the checkpoint covers it, whatever crashes when.

use super::schema::{datetime, i64_col, ms_of, str_col, u32_col, u64_col, write_datetime};
use crate::consumer::Failure;
use seckill_engine::replica::Replica;
use seckill_engine::{Activity, Event, Order, Product};
use seckill_proto::{OrderId, OrderStatus};
use sqlx::mysql::{MySql, MySqlConnection, MySqlDatabaseError, MySqlRow};
use sqlx::{Connection, QueryBuilder};
use std::collections::{BTreeMap, HashMap};

/// Orders whose status `records` change without creating them first: the
/// batch reads their current rows before it plans. Each once, in the order
/// the log first names them. (The Redis mirror needs none: a status change
/// carries what it uses of its order.)
fn orders_to_load(records: &[(u64, Event)]) -> Vec<OrderId> {
    // Most batches change no status (a sale's buys): nothing to hash then.
    if !records.iter().any(|(_, ev)| ev.status_change().is_some()) {
        return Vec::new();
    }
    let mut created = hashbrown::HashSet::new();
    let mut seen = hashbrown::HashSet::new();
    let mut out = Vec::new();
    for (_, ev) in records {
        match ev {
            Event::OrderCreated(o) => {
                created.insert(o.id);
            }
            ev => {
                if let Some((order_id, ..)) = ev.status_change() {
                    if !created.contains(&order_id) && seen.insert(order_id) {
                        out.push(order_id);
                    }
                }
            }
        }
    }
    out
}

/// Rows per multi-row statement with placeholders (MySQL allows 65535).
const CHUNK: usize = 1000;

/// The statement size to use under a server's `max_allowed_packet`: half of
/// it (room for the reply and for a packet setting lowered later), at most
/// 8 MiB, at least 64 KiB.
pub(crate) fn statement_bytes(max_allowed_packet: u64) -> usize {
    usize::try_from(max_allowed_packet / 2).unwrap_or(usize::MAX).clamp(64 << 10, 8 << 20)
}

/// Reads `max_allowed_packet` and returns the statement size for it.
pub(crate) async fn read_statement_bytes(conn: &mut MySqlConnection) -> Result<usize, Failure> {
    let row = sqlx::query("SELECT CAST(@@max_allowed_packet AS UNSIGNED) AS p").fetch_one(&mut *conn).await?;
    Ok(statement_bytes(u64_col(&row, "p").map_err(Failure::Fatal)?))
}

/// Multi-row statements in the text protocol: `head` then `(…), (…)` rows,
/// then `tail`, each statement at most `max_bytes` long (a row longer than
/// that goes alone). Only for values that need no escaping (numbers, order
/// ids, status names, DATETIME literals): no bind, no prepare round trip,
/// no 12 000-placeholder statement for the server to parse twice.
pub(crate) struct RowsSql {
    head: &'static str,
    tail: &'static str,
    max_bytes: usize,
    cur: String,
    rows: usize,
    done: Vec<String>,
}

impl RowsSql {
    pub fn new(head: &'static str, tail: &'static str, max_bytes: usize) -> Self {
        Self { head, tail, max_bytes, cur: String::new(), rows: 0, done: Vec::new() }
    }

    pub fn row(&mut self, row: &str) {
        if self.rows > 0 && self.cur.len() + row.len() + 2 + self.tail.len() > self.max_bytes {
            self.flush();
        }
        if self.rows == 0 {
            self.cur.push_str(self.head);
        } else {
            self.cur.push_str(", ");
        }
        self.cur.push_str(row);
        self.rows += 1;
    }

    fn flush(&mut self) {
        if self.rows > 0 {
            self.cur.push_str(self.tail);
            self.done.push(std::mem::take(&mut self.cur));
            self.rows = 0;
        }
    }

    pub fn finish(mut self) -> Vec<String> {
        self.flush();
        self.done
    }
}

async fn run_text(conn: &mut MySqlConnection, statements: Vec<String>) -> Result<(), Failure> {
    for sql in &statements {
        sqlx::raw_sql(sql).execute(&mut *conn).await?;
    }
    Ok(())
}

/// MySQL error numbers that mean "this data does not fit", not "try later".
const DATA_ERRORS: &[u16] = &[
    1048, // column cannot be null
    1054, // unknown column (schema changed by hand)
    1062, // duplicate entry
    1264, // out of range
    1292, // incorrect datetime / truncated value
    1366, // incorrect value
    1406, // data too long
    1451, 1452, // foreign keys added by hand
    1690, // BIGINT UNSIGNED value out of range (remaining/total below zero)
    3819, // CHECK constraint (MySQL)
    4025, // CHECK constraint (MariaDB)
];

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) => {
                let number = db.try_downcast_ref::<MySqlDatabaseError>().map(|m| m.number());
                if number.is_some_and(|n| DATA_ERRORS.contains(&n)) {
                    Failure::Fatal(format!("MySQL refused the data: {e}"))
                } else {
                    Failure::Transient(format!("MySQL error: {e}"))
                }
            }
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::TypeNotFound { .. } => Failure::Fatal(format!("unexpected data from MySQL: {e}")),
            _ => Failure::Transient(format!("MySQL unreachable: {e}")),
        }
    }
}

/// An order as the `orders` table holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OrderRow {
    pub order: Order,
    pub updated_lsn: u64,
    pub updated_at_ms: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StockDelta {
    pub remaining: i64,
    pub total: u64,
}

/// One `stock_log` row: `records` changes of one reason to one activity,
/// LSNs `first_lsn..=lsn` (a batch folds its changes into one row per
/// activity and reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StockLog {
    pub first_lsn: u64,
    pub lsn: u64,
    pub activity_id: u64,
    pub delta: i64,
    pub records: u32,
    pub reason: &'static str,
    /// The order, when the row stands for one change of one order.
    pub order_id: Option<OrderId>,
    pub at_ms: u64,
}

impl StockLog {
    fn one(
        lsn: u64,
        activity_id: u64,
        delta: i64,
        reason: &'static str,
        order_id: Option<OrderId>,
        at_ms: u64,
    ) -> Self {
        Self { first_lsn: lsn, lsn, activity_id, delta, records: 1, reason, order_id, at_ms }
    }
}

/// Folds stock changes into one row per (activity, reason).
#[derive(Debug, Default)]
pub(crate) struct StockLogs {
    rows: Vec<StockLog>,
    at: HashMap<(u64, &'static str), usize>,
}

impl StockLogs {
    fn add(&mut self, l: StockLog) {
        match self.at.get(&(l.activity_id, l.reason)) {
            Some(&i) => {
                let r = &mut self.rows[i];
                r.lsn = l.lsn;
                r.delta = r.delta.saturating_add(l.delta);
                r.records = r.records.saturating_add(1);
                r.order_id = None;
                r.at_ms = l.at_ms;
            }
            None => {
                self.at.insert((l.activity_id, l.reason), self.rows.len());
                self.rows.push(l);
            }
        }
    }

    pub fn rows(&self) -> &[StockLog] {
        &self.rows
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub lsn: u64,
    pub order_id: OrderId,
    pub amount_cents: u64,
    pub txn: u64,
    pub at_ms: u64,
}

/// What one batch of records does to MySQL, coalesced: the last version of
/// each row, and one stock delta per activity.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub last_lsn: u64,
    pub products: BTreeMap<u64, (u64, Product)>,
    pub activities: BTreeMap<u64, (u64, Activity)>,
    pub stock: BTreeMap<u64, StockDelta>,
    pub stock_log: StockLogs,
    pub orders: BTreeMap<OrderId, OrderRow>,
    /// (activity, user) → (limit, lsn).
    pub quotas: BTreeMap<(u64, u64), (u32, u64)>,
    pub refusals: Vec<Refusal>,
}

fn signed(q: u32) -> i64 {
    i64::from(q)
}

impl Plan {
    /// An order's status change: its row (from this batch or MySQL) moves,
    /// and the stock it frees or takes again is logged.
    fn status_changed(
        &mut self,
        lsn: u64,
        existing: &HashMap<OrderId, OrderRow>,
        order_id: OrderId,
        (user_id, activity_id): (u64, u64),
        (status, at_ms, txn): (OrderStatus, u64, u64),
    ) -> Result<(), String> {
        let row = match self.orders.entry(order_id) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => v.insert(*existing.get(&order_id).ok_or_else(|| {
                format!(
                    "LSN {lsn} changes order {order_id} to {}, but MySQL has no such order \
                     (rows deleted by hand?)",
                    status.as_str()
                )
            })?),
        };
        if row.order.user_id != user_id || row.order.activity_id != activity_id {
            return Err(format!(
                "LSN {lsn}: order {order_id} belongs to user {} / activity {} in MySQL, \
                 but the log says user {user_id} / activity {activity_id}",
                row.order.user_id, row.order.activity_id
            ));
        }
        // Stock remaining moves opposite to the units held.
        let delta = -row.order.status.held_delta(status, row.order.quantity);
        row.order.status = status;
        if status == OrderStatus::Paid {
            row.order.paid_txn = txn;
        }
        row.updated_lsn = lsn;
        row.updated_at_ms = at_ms;
        if delta != 0 {
            self.stock.entry(activity_id).or_default().remaining += delta;
            let reason = status.as_str();
            self.stock_log.add(StockLog::one(lsn, activity_id, delta, reason, Some(order_id), at_ms));
        }
        Ok(())
    }
}

/// Plans `records` (consecutive LSNs) against the current rows of the
/// orders they change. `now_ms` stamps stock changes that carry no time.
pub(crate) fn plan(
    records: &[(u64, Event)],
    existing: &HashMap<OrderId, OrderRow>,
    now_ms: u64,
) -> Result<Plan, String> {
    let mut p = Plan::default();
    for (lsn, ev) in records {
        let lsn = *lsn;
        p.last_lsn = lsn;
        match ev {
            Event::ProductCreated(prod) => {
                p.products.insert(prod.id, (lsn, prod.clone()));
            }
            Event::ActivityUpserted(a) => {
                p.activities.insert(a.id, (lsn, a.clone()));
            }
            Event::StockAdded { activity_id, amount } => {
                let d = p.stock.entry(*activity_id).or_default();
                d.total = d.total.saturating_add(*amount);
                d.remaining = d.remaining.saturating_add(i64::try_from(*amount).unwrap_or(i64::MAX));
                let delta = i64::try_from(*amount).unwrap_or(i64::MAX);
                p.stock_log.add(StockLog::one(lsn, *activity_id, delta, "stock.add", None, now_ms));
            }
            Event::QuotaSet { activity_id, user_id, limit } => {
                p.quotas.insert((*activity_id, *user_id), (*limit, lsn));
            }
            Event::OrderCreated(o) => {
                if p.orders.contains_key(&o.id) {
                    return Err(format!("order {} is created twice (LSN {lsn})", o.id));
                }
                p.orders.insert(o.id, OrderRow { order: *o, updated_lsn: lsn, updated_at_ms: o.created_at_ms });
                if o.status.holds_stock() {
                    p.stock.entry(o.activity_id).or_default().remaining -= signed(o.quantity);
                    let delta = -signed(o.quantity);
                    p.stock_log.add(StockLog::one(lsn, o.activity_id, delta, "order", Some(o.id), o.created_at_ms));
                }
            }
            Event::OrderStatusChanged { order_id, user_id, activity_id, status, at_ms, txn, .. }
            | Event::OrderStatusChangedV1 { order_id, user_id, activity_id, status, at_ms, txn } => {
                p.status_changed(lsn, existing, *order_id, (*user_id, *activity_id), (*status, *at_ms, *txn))?;
            }
            Event::PaymentRefused { order_id, amount_cents, txn, at_ms } => {
                p.refusals.push(Refusal {
                    lsn,
                    order_id: *order_id,
                    amount_cents: *amount_cents,
                    txn: *txn,
                    at_ms: *at_ms,
                });
            }
        }
    }
    p.stock.retain(|_, d| d.remaining != 0 || d.total != 0);
    Ok(p)
}

/// Locks the checkpoint row for this transaction: (lsn, resync_requested).
pub(crate) async fn lock_checkpoint(conn: &mut MySqlConnection) -> Result<(u64, bool), Failure> {
    let row = sqlx::query("SELECT lsn, resync_requested FROM persist_checkpoint WHERE id = 1 FOR UPDATE")
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Err(Failure::Fatal(
            "persist_checkpoint has no row (deleted by hand?). To rebuild MySQL from the engine run: \
             INSERT INTO persist_checkpoint (id, lsn, resync_requested) VALUES (1, 0, 1)"
                .into(),
        ));
    };
    let lsn = u64_col(&row, "lsn").map_err(|e| Failure::Fatal(format!("persist_checkpoint: {e}")))?;
    let resync = u64_col(&row, "resync_requested").map_err(|e| Failure::Fatal(format!("persist_checkpoint: {e}")))?;
    Ok((lsn, resync != 0))
}

/// Reads the checkpoint without locking: (lsn, resync_requested).
pub(crate) async fn read_checkpoint(conn: &mut MySqlConnection) -> Result<(u64, bool), Failure> {
    let mut tx = conn.begin().await?;
    let r = lock_checkpoint(&mut tx).await;
    tx.rollback().await?;
    r
}

fn order_row(row: &MySqlRow) -> Result<OrderRow, String> {
    let id_text = str_col(row, "order_id")?;
    let id: OrderId = id_text.parse().map_err(|_| format!("orders.order_id `{id_text}` is not an order id"))?;
    let status_text = str_col(row, "status")?;
    let status = OrderStatus::from_name(&status_text)
        .ok_or_else(|| format!("order {id} has status `{status_text}`, which is not one"))?;
    Ok(OrderRow {
        order: Order {
            id,
            user_id: u64_col(row, "user_id")?,
            activity_id: u64_col(row, "activity_id")?,
            quantity: u32_col(row, "quantity")?,
            amount_cents: u64_col(row, "amount_cents")?,
            status,
            created_at_ms: u64_col(row, "created_ms")?,
            pay_before_ms: u64_col(row, "pay_before_ms")?,
            idempotency_key: u64_col(row, "idempotency_key")?,
            paid_txn: u64_col(row, "paid_txn")?,
        },
        updated_lsn: u64_col(row, "updated_lsn")?,
        updated_at_ms: u64_col(row, "updated_ms")?,
    })
}

/// The SELECT list that `order_row` reads.
pub(crate) fn order_columns() -> String {
    format!(
        "order_id, user_id, activity_id, quantity, amount_cents, status, {} AS created_ms, {} AS pay_before_ms, \
         idempotency_key, paid_txn, updated_lsn, {} AS updated_ms",
        ms_of("created_at"),
        ms_of("pay_before"),
        ms_of("updated_at")
    )
}

pub(crate) fn parse_order(row: &MySqlRow) -> Result<OrderRow, String> {
    order_row(row)
}

async fn load_orders(conn: &mut MySqlConnection, ids: &[OrderId]) -> Result<HashMap<OrderId, OrderRow>, Failure> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let list: Vec<String> = chunk.iter().map(|id| format!("'{id}'")).collect();
        let sql = format!("SELECT {} FROM orders WHERE order_id IN ({})", order_columns(), list.join(", "));
        for row in sqlx::raw_sql(&sql).fetch_all(&mut *conn).await? {
            let r = order_row(&row).map_err(Failure::Fatal)?;
            out.insert(r.order.id, r);
        }
    }
    Ok(out)
}

/// Applies `records` (LSNs `expected + 1 ..`) in one transaction, if the
/// checkpoint in MySQL is still `expected`. Returns the new checkpoint.
pub(crate) async fn write_batch(
    conn: &mut MySqlConnection,
    expected: u64,
    records: &[(u64, Event)],
    now_ms: u64,
    statement_bytes: usize,
) -> Result<u64, Failure> {
    let Some(&(first, _)) = records.first() else {
        return Ok(expected);
    };
    if first != expected + 1 {
        return Err(Failure::Fatal(format!("internal: batch starts at LSN {first}, not {}", expected + 1)));
    }
    let mut tx = conn.begin().await?;
    let (cp, resync) = lock_checkpoint(&mut tx).await?;
    if resync {
        return Err(Failure::Restart("a resync was requested (persist_checkpoint.resync_requested = 1)".into()));
    }
    if cp != expected {
        return Err(Failure::Restart(format!(
            "MySQL's checkpoint is LSN {cp}, not {expected} as this persister left it; continuing from MySQL's"
        )));
    }
    let existing = load_orders(&mut tx, &orders_to_load(records)).await?;
    let plan = plan(records, &existing, now_ms).map_err(Failure::Fatal)?;
    write_plan(&mut tx, &plan, statement_bytes).await?;
    sqlx::query("UPDATE persist_checkpoint SET lsn = ? WHERE id = 1").bind(plan.last_lsn).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(plan.last_lsn)
}

async fn write_plan(conn: &mut MySqlConnection, p: &Plan, statement_bytes: usize) -> Result<(), Failure> {
    upsert_products(conn, p.products.values().map(|(l, x)| (*l, x))).await?;
    let acts: Vec<(u64, &Activity, u64, i64)> = p.activities.values().map(|(l, a)| (*l, a, 0, 0)).collect();
    upsert_activities(conn, &acts, StockMode::Incremental).await?;
    upsert_orders(conn, p.orders.values()).await?;
    for (activity_id, d) in &p.stock {
        let done =
            sqlx::query("UPDATE activities SET remaining = remaining + ?, total_stock = total_stock + ? WHERE id = ?")
                .bind(d.remaining)
                .bind(d.total)
                .bind(*activity_id)
                .execute(&mut *conn)
                .await?;
        if done.rows_affected() != 1 {
            return Err(Failure::Fatal(format!(
                "activity {activity_id} is missing from MySQL (deleted by hand?): its stock cannot be updated. \
                 To rebuild MySQL from the engine: UPDATE persist_checkpoint SET resync_requested = 1"
            )));
        }
    }
    insert_stock_log(conn, p.stock_log.rows(), statement_bytes).await?;
    upsert_quotas(conn, p.quotas.iter().map(|(&(a, u), &(limit, lsn))| (a, u, limit, lsn))).await?;
    for chunk in p.refusals.chunks(CHUNK) {
        let mut q = QueryBuilder::<MySql>::new("INSERT INTO payment_refusals (lsn, order_id, amount_cents, txn, at) ");
        q.push_values(chunk, |mut b, r| {
            b.push_bind(r.lsn)
                .push_bind(r.order_id.to_string())
                .push_bind(r.amount_cents)
                .push_bind(r.txn)
                .push_bind(datetime(r.at_ms));
        });
        q.build().persistent(false).execute(&mut *conn).await?;
    }
    Ok(())
}

async fn upsert_products<'a>(
    conn: &mut MySqlConnection,
    rows: impl Iterator<Item = (u64, &'a Product)>,
) -> Result<(), Failure> {
    let rows: Vec<_> = rows.collect();
    for chunk in rows.chunks(CHUNK) {
        let mut q = QueryBuilder::<MySql>::new(
            "INSERT INTO products (id, name, description, image_url, price_cents, in_engine, updated_lsn) ",
        );
        q.push_values(chunk, |mut b, (lsn, x)| {
            b.push_bind(x.id)
                .push_bind(x.name.clone())
                .push_bind(x.description.clone())
                .push_bind(x.image_url.clone())
                .push_bind(x.price_cents)
                .push_bind(1u8)
                .push_bind(*lsn);
        });
        q.push(
            " ON DUPLICATE KEY UPDATE name = VALUES(name), description = VALUES(description), \
             image_url = VALUES(image_url), price_cents = VALUES(price_cents), in_engine = 1, \
             updated_lsn = VALUES(updated_lsn)",
        );
        q.build().persistent(false).execute(&mut *conn).await?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StockMode {
    /// Configuration only; stock moves by deltas. A row an operator
    /// prepared (in_engine = 0) starts from zero: the engine's stock.add
    /// records that follow bring its stock.
    Incremental,
    /// total_stock and remaining are the given values (resync).
    Absolute,
}

/// (lsn, activity, total_stock, remaining)
async fn upsert_activities(
    conn: &mut MySqlConnection,
    rows: &[(u64, &Activity, u64, i64)],
    mode: StockMode,
) -> Result<(), Failure> {
    for chunk in rows.chunks(CHUNK) {
        let mut q = QueryBuilder::<MySql>::new(
            "INSERT INTO activities (id, product_id, product_name, title, price_cents, total_stock, remaining, \
             starts_at, ends_at, per_user_limit, payment_timeout_s, require_buy_token, gate_factor, status, \
             in_engine, updated_lsn) ",
        );
        q.push_values(chunk, |mut b, (lsn, a, total, remaining)| {
            b.push_bind(a.id)
                .push_bind(a.product_id)
                .push_bind(a.product_name.clone())
                .push_bind(a.title.clone())
                .push_bind(a.price_cents)
                .push_bind(*total)
                .push_bind(*remaining)
                .push_bind(datetime(a.terms.starts_at_ms))
                .push_bind(datetime(a.terms.ends_at_ms))
                .push_bind(a.terms.per_user_limit)
                .push_bind(a.terms.payment_timeout_s)
                .push_bind(u8::from(a.terms.require_buy_token))
                .push_bind(a.terms.gate_factor)
                .push_bind(a.status.as_str())
                .push_bind(1u8)
                .push_bind(*lsn);
        });
        // Assignments run left to right: `in_engine` is still the old value
        // when the stock columns read it.
        q.push(match mode {
            StockMode::Incremental => {
                " ON DUPLICATE KEY UPDATE total_stock = IF(in_engine, total_stock, 0), \
                 remaining = IF(in_engine, remaining, 0), "
            }
            StockMode::Absolute => {
                " ON DUPLICATE KEY UPDATE total_stock = VALUES(total_stock), remaining = VALUES(remaining), "
            }
        });
        q.push(
            "in_engine = 1, product_id = VALUES(product_id), product_name = VALUES(product_name), \
             title = VALUES(title), price_cents = VALUES(price_cents), starts_at = VALUES(starts_at), \
             ends_at = VALUES(ends_at), per_user_limit = VALUES(per_user_limit), \
             payment_timeout_s = VALUES(payment_timeout_s), require_buy_token = VALUES(require_buy_token), \
             gate_factor = VALUES(gate_factor), status = VALUES(status), updated_lsn = VALUES(updated_lsn)",
        );
        q.build().persistent(false).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Rows of the largest prepared `orders` statement (12 placeholders a row:
/// 6 144 of MySQL's 65 535).
const ORDER_ROWS_MAX: usize = 512;

const ORDERS_HEAD: &str = "INSERT INTO orders (order_id, user_id, activity_id, quantity, amount_cents, status, \
     created_at, pay_before, paid_txn, idempotency_key, updated_lsn, updated_at) VALUES ";
const ORDERS_TAIL: &str = " ON DUPLICATE KEY UPDATE status = VALUES(status), paid_txn = VALUES(paid_txn), \
     updated_lsn = VALUES(updated_lsn), updated_at = VALUES(updated_at)";

/// The `orders` upsert for `rows` rows (a power of two up to
/// `ORDER_ROWS_MAX`), built once: sqlx prepares each text once per
/// connection and keeps it (its statement cache), so a batch's rows are
/// bound, not parsed. Before 2026-12-06 (evening) they went as text, and
/// parsing them was ~40 % of mysqld's CPU per order (docs/PERFORMANCE.md).
fn orders_sql(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        let mut out = Vec::new();
        let mut n = 1;
        while n <= ORDER_ROWS_MAX {
            let mut sql = String::with_capacity(ORDERS_HEAD.len() + ORDERS_TAIL.len() + n * 28);
            sql.push_str(ORDERS_HEAD);
            for i in 0..n {
                sql.push_str(if i == 0 { "(?,?,?,?,?,?,?,?,?,?,?,?)" } else { ",(?,?,?,?,?,?,?,?,?,?,?,?)" });
            }
            sql.push_str(ORDERS_TAIL);
            out.push(sql);
            n *= 2;
        }
        out
    });
    let i = rows.clamp(1, ORDER_ROWS_MAX).ilog2() as usize;
    &all[i.min(all.len() - 1)]
}

/// The sizes `n` rows go in: `ORDER_ROWS_MAX` while that many are left,
/// then the powers of two of the rest (at most 10 statement texts, each
/// prepared once per connection).
fn order_chunks(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let size = if n >= ORDER_ROWS_MAX { ORDER_ROWS_MAX } else { 1 << n.ilog2() };
        n -= size;
        Some(size)
    })
}

async fn upsert_orders(conn: &mut MySqlConnection, rows: impl Iterator<Item = &OrderRow>) -> Result<(), Failure> {
    use std::fmt::Write as _;
    let rows: Vec<&OrderRow> = rows.collect();
    let mut at = 0;
    // A chunk's text values (order id and three DATETIMEs a row) in one
    // buffer, bound as slices of it: no allocation per value.
    let mut text = String::with_capacity(4 * 36 * ORDER_ROWS_MAX);
    let mut ends: Vec<usize> = Vec::with_capacity(4 * ORDER_ROWS_MAX);
    for size in order_chunks(rows.len()) {
        let chunk = &rows[at..at + size];
        at += size;
        text.clear();
        ends.clear();
        for r in chunk {
            let _ = write!(text, "{}", r.order.id);
            ends.push(text.len());
            for ms in [r.order.created_at_ms, r.order.pay_before_ms, r.updated_at_ms] {
                write_datetime(&mut text, ms);
                ends.push(text.len());
            }
        }
        // Value `j` of the chunk is `text[ends[j - 1]..ends[j]]`.
        let value = |j: usize| text.get(j.checked_sub(1).map_or(0, |p| ends[p])..ends[j]).unwrap_or_default();
        let mut q = sqlx::query(orders_sql(size));
        for (k, r) in chunk.iter().enumerate() {
            let o = &r.order;
            let (id, created_at, pay_before, updated_at) =
                (value(4 * k), value(4 * k + 1), value(4 * k + 2), value(4 * k + 3));
            q = q
                .bind(id)
                .bind(o.user_id)
                .bind(o.activity_id)
                .bind(o.quantity)
                .bind(o.amount_cents)
                .bind(o.status.as_str())
                .bind(created_at)
                .bind(pay_before)
                .bind(o.paid_txn)
                .bind(o.idempotency_key)
                .bind(r.updated_lsn)
                .bind(updated_at);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

async fn insert_stock_log(
    conn: &mut MySqlConnection,
    rows: &[StockLog],
    statement_bytes: usize,
) -> Result<(), Failure> {
    let mut sql = RowsSql::new(
        "INSERT INTO stock_log (lsn, first_lsn, activity_id, delta, records, reason, order_id, at) VALUES ",
        "",
        statement_bytes,
    );
    for r in rows {
        let order_id = r.order_id.map_or_else(|| "NULL".to_string(), |o| format!("'{o}'"));
        sql.row(&format!(
            "({},{},{},{},{},'{}',{order_id},'{}')",
            r.lsn,
            r.first_lsn,
            r.activity_id,
            r.delta,
            r.records,
            r.reason,
            datetime(r.at_ms)
        ));
    }
    run_text(conn, sql.finish()).await
}

/// (activity, user, limit, lsn)
async fn upsert_quotas(
    conn: &mut MySqlConnection,
    rows: impl Iterator<Item = (u64, u64, u32, u64)>,
) -> Result<(), Failure> {
    let rows: Vec<_> = rows.collect();
    for chunk in rows.chunks(CHUNK) {
        let mut q = QueryBuilder::<MySql>::new("INSERT INTO quotas (activity_id, user_id, user_limit, updated_lsn) ");
        q.push_values(chunk, |mut b, (a, u, limit, lsn)| {
            b.push_bind(*a).push_bind(*u).push_bind(*limit).push_bind(*lsn);
        });
        q.push(" ON DUPLICATE KEY UPDATE user_limit = VALUES(user_limit), updated_lsn = VALUES(updated_lsn)");
        q.build().persistent(false).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Rewrites MySQL to equal `replica` (orders and quotas replaced, so the
/// `purchases` view follows;
/// products and activities upserted with absolute stock) and sets the
/// checkpoint to `replica.lsn`, in one transaction. `stock_log` and
/// `payment_refusals` keep their history; each activity whose remaining
/// stock changes gets a `resync` row with the correction.
pub(crate) async fn write_full_state(
    conn: &mut MySqlConnection,
    replica: &Replica,
    now_ms: u64,
    statement_bytes: usize,
) -> Result<u64, Failure> {
    let mut tx = conn.begin().await?;
    lock_checkpoint(&mut tx).await?;
    let mut old_remaining: HashMap<u64, i64> = HashMap::new();
    for row in sqlx::query("SELECT id, remaining FROM activities WHERE in_engine = 1").fetch_all(&mut *tx).await? {
        let id = u64_col(&row, "id").map_err(Failure::Fatal)?;
        let remaining = i64_col(&row, "remaining").map_err(Failure::Fatal)?;
        old_remaining.insert(id, remaining);
    }
    // `purchases` is a view over `orders`.
    for table in ["orders", "quotas"] {
        sqlx::query(&format!("DELETE FROM {table}")).execute(&mut *tx).await?;
    }
    upsert_products(&mut tx, replica.products.values().map(|p| (replica.lsn, p))).await?;
    let held = replica.held_by_activity();
    let mut acts = Vec::with_capacity(replica.activities.len());
    let mut log = Vec::new();
    for (id, (a, added)) in &replica.activities {
        let h = held.get(id).copied().unwrap_or(0);
        let remaining = i64::try_from(added.saturating_sub(h)).unwrap_or(i64::MAX);
        acts.push((replica.lsn, a, *added, remaining));
        let delta = remaining - old_remaining.get(id).copied().unwrap_or(0);
        if delta != 0 {
            log.push(StockLog::one(replica.lsn, *id, delta, "resync", None, now_ms));
        }
    }
    upsert_activities(&mut tx, &acts, StockMode::Absolute).await?;
    let mut orders: Vec<OrderRow> = replica
        .orders
        .values()
        .map(|o| OrderRow { order: *o, updated_lsn: replica.lsn, updated_at_ms: o.created_at_ms })
        .collect();
    orders.sort_unstable_by_key(|r| r.order.id);
    upsert_orders(&mut tx, orders.iter()).await?;
    upsert_quotas(&mut tx, replica.quotas.iter().map(|(&(a, u), &limit)| (a, u, limit, replica.lsn))).await?;
    insert_stock_log(&mut tx, &log, statement_bytes).await?;
    sqlx::query("UPDATE persist_checkpoint SET lsn = ?, resync_requested = 0 WHERE id = 1")
        .bind(replica.lsn)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(replica.lsn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{change, order};

    #[test]
    fn a_batch_coalesces_into_one_delta_per_activity() {
        let (a, b) = (order(1, 10, 2), order(2, 11, 1));
        let recs = vec![
            (5, Event::StockAdded { activity_id: 1, amount: 10 }),
            (6, Event::OrderCreated(a)),
            (7, Event::OrderCreated(b)),
            (8, change(&a, OrderStatus::Cancelled)),
            (9, change(&b, OrderStatus::Paid)),
        ];
        assert!(orders_to_load(&recs).is_empty());
        let p = plan(&recs, &HashMap::new(), 0).expect("plan");
        assert_eq!(p.last_lsn, 9);
        assert_eq!(p.stock[&1], StockDelta { remaining: 10 - 1, total: 10 });
        assert_eq!(p.orders[&a.id].order.status, OrderStatus::Cancelled);
        assert_eq!(p.orders[&b.id].order.paid_txn, 9);
        assert_eq!(p.stock_log.rows().iter().map(|l| l.delta).sum::<i64>(), 9);
        // One row per activity and reason: stock.add, order (2 folded), cancelled.
        let rows: Vec<_> =
            p.stock_log.rows().iter().map(|l| (l.reason, l.delta, l.records, l.first_lsn, l.lsn)).collect();
        assert_eq!(rows, vec![("stock.add", 10, 1, 5, 5), ("order", -3, 2, 6, 7), ("cancelled", 2, 1, 8, 8)]);
        assert_eq!(p.stock_log.rows()[1].order_id, None, "a folded row names no order");
        assert_eq!(p.stock_log.rows()[2].order_id, Some(a.id));
    }

    #[test]
    fn changes_to_older_orders_use_their_rows_and_repeats_change_nothing() {
        let a = order(1, 10, 3);
        let recs = vec![(20, change(&a, OrderStatus::Expired)), (21, change(&a, OrderStatus::Expired))];
        assert_eq!(orders_to_load(&recs), vec![a.id]);
        assert!(plan(&recs, &HashMap::new(), 0).unwrap_err().contains("no such order"));
        let existing = HashMap::from([(a.id, OrderRow { order: a, updated_lsn: 3, updated_at_ms: 0 })]);
        let p = plan(&recs, &existing, 0).expect("plan");
        assert_eq!(p.stock[&1].remaining, 3);
        assert_eq!(p.stock_log.rows().len(), 1);
        assert_eq!(p.orders[&a.id].updated_lsn, 21);
    }

    #[test]
    fn text_statements_stay_under_the_packet() {
        assert_eq!(statement_bytes(16 << 20), 8 << 20);
        assert_eq!(statement_bytes(4 << 20), 2 << 20);
        assert_eq!(statement_bytes(1024), 64 << 10);
        let mut sql = RowsSql::new("INSERT INTO t VALUES ", " ON DUPLICATE KEY UPDATE a = a", 60);
        for i in 0..10 {
            sql.row(&format!("({i},'x')"));
        }
        let done = sql.finish();
        assert!(done.len() > 1, "{done:?}");
        for s in &done {
            assert!(s.len() <= 60, "{s}");
            assert!(s.starts_with("INSERT INTO t VALUES (") && s.ends_with(" ON DUPLICATE KEY UPDATE a = a"), "{s}");
        }
        let rows: usize = done.iter().map(|s| s.matches("'x'").count()).sum();
        assert_eq!(rows, 10, "every row once");
        assert!(RowsSql::new("A ", "", 10).finish().is_empty(), "no rows, no statement");
    }

    #[test]
    fn orders_go_in_few_prepared_sizes() {
        let mut sizes = std::collections::BTreeSet::new();
        for n in (0..3000).chain([65_537, 1_000_000]) {
            let chunks: Vec<usize> = order_chunks(n).collect();
            assert_eq!(chunks.iter().sum::<usize>(), n, "every row once ({n})");
            assert!(chunks.len() <= n / ORDER_ROWS_MAX + 10, "{n}: {chunks:?}");
            for &c in &chunks {
                assert!(c.is_power_of_two() && c <= ORDER_ROWS_MAX, "{n}: {chunks:?}");
                let sql = orders_sql(c);
                assert_eq!(sql.matches('?').count(), 12 * c, "placeholders for {c} rows");
                assert!(sql.starts_with(ORDERS_HEAD) && sql.ends_with(ORDERS_TAIL));
                sizes.insert(c);
            }
        }
        assert_eq!(sizes.len(), 10, "1, 2, 4, … 512: the texts sqlx prepares once each: {sizes:?}");
    }

    #[test]
    fn a_log_that_contradicts_mysql_is_refused() {
        let a = order(1, 10, 1);
        let mut wrong = a;
        wrong.user_id = 99;
        let existing = HashMap::from([(a.id, OrderRow { order: wrong, updated_lsn: 3, updated_at_ms: 0 })]);
        assert!(plan(&[(4, change(&a, OrderStatus::Paid))], &existing, 0).is_err());
        assert!(plan(&[(4, Event::OrderCreated(a)), (5, Event::OrderCreated(a))], &HashMap::new(), 0).is_err());
    }
}
