//! `--verify`: after a run, check the invariants through the public API.
//!
//! * every 201 order is retrievable by its buyer and still holds stock;
//! * no order id was answered twice;
//! * no buyer holds more than the per-user limit;
//! * orders held by the buyers account exactly for the stock sold
//!   (`total_stock - remaining`), and never more than `total_stock`.

use super::client::{bearer, Conn, Target};
use super::LoadReport;
use anyhow::{bail, Context};
use hyper::Method;
use seckill_front::auth::Auth;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Statuses in which an order holds its units.
const HOLDING: [&str; 3] = ["pending_payment", "paid", "shipped"];
/// Failures listed per check, at most.
const SAMPLES: usize = 5;

#[derive(Clone, Debug)]
pub struct VerifyConfig {
    pub url: String,
    pub activity_id: u64,
    pub auth_secret: Vec<u8>,
    /// Concurrent connections for the checking requests.
    pub connections: usize,
    pub timeout: Duration,
    /// True when only the load's users bought in this activity (it was made by
    /// `--setup`), so their orders must account for all stock sold; otherwise
    /// other buyers may hold some and only "not more than sold" is checked.
    pub only_buyers: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub pass: bool,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub passed: bool,
    pub checks: Vec<Check>,
    pub total_stock: u64,
    pub remaining: u64,
    /// Units held by the orders of the users checked.
    pub held: u64,
    pub users_checked: usize,
    pub orders_checked: usize,
}

impl VerifyReport {
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "verify: activity stock {} remaining {} sold {}; {} users, {} orders checked\n",
            self.total_stock,
            self.remaining,
            self.total_stock.saturating_sub(self.remaining),
            self.users_checked,
            self.orders_checked
        );
        for c in &self.checks {
            let _ = writeln!(s, "  {} {}: {}", if c.pass { "PASS" } else { "FAIL" }, c.name, c.detail);
        }
        s
    }
}

#[derive(Deserialize)]
struct ActivityBody {
    total_stock: u64,
    remaining: u64,
    per_user_limit: u64,
}

#[derive(Deserialize, Clone, Debug)]
struct OrderBody {
    order_id: String,
    user_id: u64,
    activity_id: u64,
    quantity: u64,
    status: String,
}

#[derive(Deserialize)]
struct OrderPage {
    items: Vec<OrderBody>,
    total: u64,
}

/// What was found for one user.
#[derive(Default)]
struct UserFinding {
    /// Units held in this activity (orders listed for the user).
    held: u64,
    /// Problems with this user's 201 orders.
    problems: Vec<String>,
    /// The user's requests could not be made.
    unreachable: Option<String>,
}

async fn get_json<T: for<'de> Deserialize<'de>>(
    conn: &mut Conn,
    target: &Target,
    path: &str,
    auth: Option<&hyper::header::HeaderValue>,
) -> anyhow::Result<(u16, Option<T>)> {
    let a =
        conn.send(Method::GET, target.uri(path)?, auth, None).await.map_err(|e| anyhow::anyhow!("GET {path}: {e}"))?;
    if a.status != 200 {
        return Ok((a.status, None));
    }
    let v = serde_json::from_slice(&a.body).with_context(|| format!("GET {path}: unexpected JSON"))?;
    Ok((200, Some(v)))
}

async fn check_user(
    conn: &mut Conn,
    target: &Target,
    auth: &Auth,
    activity_id: u64,
    user: u64,
    created: &[String],
) -> anyhow::Result<UserFinding> {
    let token = bearer(&auth.issue(user, 3600))?;
    let mut f = UserFinding::default();
    let mut offset = 0u64;
    loop {
        let path = format!("/api/v1/orders?offset={offset}&limit=100");
        let page = match get_json::<OrderPage>(conn, target, &path, Some(&token)).await? {
            (200, Some(p)) => p,
            (s, _) => bail!("GET {path} as user {user} answered {s}"),
        };
        let n = page.items.len() as u64;
        for o in page.items.iter().filter(|o| o.activity_id == activity_id) {
            if HOLDING.contains(&o.status.as_str()) {
                f.held += o.quantity;
            }
        }
        offset += n;
        if n == 0 || offset >= page.total {
            break;
        }
    }
    for id in created {
        let path = format!("/api/v1/orders/{id}");
        match get_json::<OrderBody>(conn, target, &path, Some(&token)).await? {
            (200, Some(o)) => {
                if o.order_id != *id || o.user_id != user || o.activity_id != activity_id {
                    f.problems.push(format!(
                        "order {id} of user {user} reads back as order {} of user {} in activity {}",
                        o.order_id, o.user_id, o.activity_id
                    ));
                } else if !HOLDING.contains(&o.status.as_str()) {
                    f.problems.push(format!("order {id} of user {user} is {} (holds no stock)", o.status));
                }
            }
            (s, _) => f.problems.push(format!("order {id} of user {user}: GET answered {s}")),
        }
    }
    Ok(f)
}

/// Checks the invariants after `run`; fails only when the service cannot be asked.
pub async fn verify(cfg: &VerifyConfig, run: &LoadReport) -> anyhow::Result<VerifyReport> {
    let target = Arc::new(Target::resolve(&cfg.url).await?);
    let mut conn = Conn::new(target.clone(), cfg.timeout);
    conn.connect().await?;
    let path = format!("/api/v1/activities/{}", cfg.activity_id);
    let first_read = std::time::Instant::now();
    match get_json::<ActivityBody>(&mut conn, &target, &path, None).await? {
        (200, Some(_)) => {}
        (s, _) => bail!("verify: GET {}{path} answered {s}", target.base),
    }

    // Users to look at: every 201 buyer, and every user whose outcome is unknown.
    let mut by_user: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for (user, id) in &run.orders {
        by_user.entry(*user).or_default().push(id.clone());
        *seen.entry(id.as_str()).or_default() += 1;
    }
    for u in &run.unknown_users {
        by_user.entry(*u).or_default();
    }
    let users: Vec<(u64, Vec<String>)> = by_user.into_iter().collect();
    let findings = check_users(cfg, &target, &mut conn, users).await?;

    // The front answers activity views from a cache (`--activity-cache-ms`,
    // default 1 s): read `remaining` again once anything cached at or
    // before the first read has expired.
    let fresh_after = std::time::Duration::from_millis(seckill_front::ACTIVITY_CACHE_TTL_MS + 100);
    tokio::time::sleep(fresh_after.saturating_sub(first_read.elapsed())).await;
    conn.connect().await?;
    let activity = match get_json::<ActivityBody>(&mut conn, &target, &path, None).await? {
        (200, Some(a)) => a,
        (s, _) => bail!("verify: GET {}{path} answered {s}", target.base),
    };
    let orders_checked = run.orders.len();
    let (checks, held) = checks(&findings, &seen, &activity, orders_checked, cfg.only_buyers);
    let passed = checks.iter().all(|c| c.pass);
    Ok(VerifyReport {
        passed,
        checks,
        total_stock: activity.total_stock,
        remaining: activity.remaining,
        held,
        users_checked: findings.len(),
        orders_checked,
    })
}

/// Reads every user in `users` (with the orders their 201s named) over
/// `cfg.connections` connections, the first of them `conn`.
async fn check_users(
    cfg: &VerifyConfig,
    target: &Arc<Target>,
    conn: &mut Conn,
    users: Vec<(u64, Vec<String>)>,
) -> anyhow::Result<Vec<(u64, UserFinding)>> {
    let users = Arc::new(users);
    let auth = Arc::new(Auth::new(&cfg.auth_secret));
    let next = Arc::new(AtomicUsize::new(0));
    let workers = cfg.connections.clamp(1, users.len().max(1));
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let (users, auth, next, target, activity_id) =
            (users.clone(), auth.clone(), next.clone(), target.clone(), cfg.activity_id);
        let mut conn = if w == 0 {
            std::mem::replace(conn, Conn::new(target.clone(), cfg.timeout))
        } else {
            Conn::new(target.clone(), cfg.timeout)
        };
        tasks.push(tokio::spawn(async move {
            let mut found = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((user, created)) = users.get(i) else {
                    break;
                };
                let f = match check_user(&mut conn, &target, &auth, activity_id, *user, created).await {
                    Ok(f) => f,
                    Err(e) => UserFinding { unreachable: Some(format!("{e:#}")), ..UserFinding::default() },
                };
                found.push((*user, f));
            }
            found
        }));
    }
    let mut findings = Vec::with_capacity(users.len());
    for t in tasks {
        findings.extend(t.await.context("a verify worker panicked")?);
    }
    Ok(findings)
}

/// The checks of a sale from what was found per user, how often each order
/// id was answered, and the activity read at the end; and the units held.
fn checks(
    findings: &[(u64, UserFinding)],
    seen: &HashMap<&str, u32>,
    activity: &ActivityBody,
    orders_checked: usize,
    only_buyers: bool,
) -> (Vec<Check>, u64) {
    let mut checks = Vec::new();
    let sold = activity.total_stock.saturating_sub(activity.remaining);

    let unreachable: Vec<String> =
        findings.iter().filter_map(|(u, f)| f.unreachable.as_ref().map(|e| format!("user {u}: {e}"))).collect();
    checks.push(check(
        "every buyer's orders could be read",
        &unreachable,
        format!("{} users", findings.len()),
        unreachable.len(),
    ));

    let problems: Vec<String> = findings.iter().flat_map(|(_, f)| f.problems.iter().cloned()).collect();
    checks.push(check(
        "every 201 order is retrievable and holds stock",
        &problems,
        format!("{orders_checked} orders"),
        problems.len(),
    ));

    let dups: Vec<String> =
        seen.iter().filter(|(_, n)| **n > 1).map(|(id, n)| format!("order {id} answered {n} times")).collect();
    checks.push(check("no order id answered twice", &dups, format!("{} distinct", seen.len()), dups.len()));

    let over: Vec<String> = findings
        .iter()
        .filter(|(_, f)| f.held > activity.per_user_limit)
        .map(|(u, f)| format!("user {u} holds {} (limit {})", f.held, activity.per_user_limit))
        .collect();
    let max_held = findings.iter().map(|(_, f)| f.held).max().unwrap_or(0);
    checks.push(check(
        "no user above the per-user limit",
        &over,
        format!("max held {max_held}, limit {}", activity.per_user_limit),
        over.len(),
    ));

    let held: u64 = findings.iter().map(|(_, f)| f.held).sum();
    let oversold = activity.remaining > activity.total_stock || held > activity.total_stock;
    checks.push(Check {
        name: "no oversell".into(),
        pass: !oversold,
        detail: format!(
            "held {held}, sold {sold}, remaining {}, total stock {}",
            activity.remaining, activity.total_stock
        ),
    });
    let (pass, detail) = if only_buyers {
        (held == sold, format!("orders hold {held} units, total_stock - remaining = {sold}"))
    } else {
        (
            held <= sold,
            format!("orders of these users hold {held} units <= sold {sold} (other buyers may hold the rest)"),
        )
    };
    checks.push(Check { name: "held stock matches stock sold".into(), pass, detail });
    (checks, held)
}

fn check(name: &str, failures: &[String], ok_detail: String, n: usize) -> Check {
    if failures.is_empty() {
        return Check { name: name.into(), pass: true, detail: ok_detail };
    }
    let mut detail = format!("{n} problem(s): ");
    detail.push_str(&failures.iter().take(SAMPLES).cloned().collect::<Vec<_>>().join("; "));
    if n > SAMPLES {
        let _ = write!(detail, "; … {} more", n - SAMPLES);
    }
    Check { name: name.into(), pass: false, detail }
}
