//! A front over several groups (docs/REPLICATION.md, "Activities over
//! groups"): one [`EnginePool`] per group (one engine or a replica group's addresses), each request sent to the group
//! its id names (`Request::group_route`, an integer op: no table, no
//! lookup), and the reads that span activities asked of every group and
//! merged into the answer one engine would give.
//!
//! The routing "table" is the id ranges (`seckill_proto::group`) plus the
//! addresses each group was given; what the front caches of a group's
//! activities (sold-out marks, views) is keyed by ids that are unique
//! across groups and expires as before.

use crate::engine_client::EnginePool;
use seckill_proto::{ErrorCode, GroupRoute, OrderView, Request, Response, GROUPS_MAX, PAGE_LIMIT_MAX};
use std::sync::Arc;

/// Deepest window (`offset + limit`) of a user's order list across groups:
/// each group is asked for its newest that many, in pages of
/// `PAGE_LIMIT_MAX`, and the merge keeps the page. Deeper asks are
/// `bad_request` (a buyer holds a handful of orders; this bounds the
/// calls one request makes: `GROUPS_MAX` × 10).
pub const ORDERS_WINDOW_MAX: u32 = 1_000;

/// Every group this front reaches, by number.
pub struct GroupLinks {
    links: Vec<Option<Arc<EnginePool>>>,
}

impl GroupLinks {
    /// `groups`: (number, link), numbers distinct and below `GROUPS_MAX`.
    pub fn new(groups: Vec<(u8, Arc<EnginePool>)>) -> Self {
        let mut links: Vec<Option<Arc<EnginePool>>> = (0..GROUPS_MAX).map(|_| None).collect();
        for (g, link) in groups {
            let slot = &mut links[g as usize];
            assert!(slot.is_none(), "group {g} given twice");
            *slot = Some(link);
        }
        GroupLinks { links }
    }

    fn each(&self) -> impl Iterator<Item = (u8, &Arc<EnginePool>)> {
        self.links.iter().enumerate().filter_map(|(g, l)| l.as_ref().map(|l| (g as u8, l)))
    }

    /// Ready while any group is: the others' sales go on (a down group's
    /// requests answer `group_unavailable`).
    pub fn is_up(&self) -> bool {
        self.each().any(|(_, l)| l.is_up())
    }

    /// The groups with no engine reachable.
    pub fn down(&self) -> Vec<u8> {
        self.each().filter(|(_, l)| !l.is_up()).map(|(g, _)| g).collect()
    }

    /// Whether any group's link may send a request twice (a replica group).
    pub fn retries(&self) -> bool {
        self.each().any(|(_, l)| l.retries())
    }

    pub async fn call(&self, req: Request) -> Response {
        match req.group_route() {
            GroupRoute::One(g) => match self.links.get(g as usize).and_then(Option::as_ref) {
                Some(link) => call_one(g, link, req).await,
                // An id of a group this front was not given: not one of this deployment's.
                None => not_found(&req),
            },
            GroupRoute::Nowhere => not_found(&req),
            GroupRoute::Every => match req {
                Request::ListActivities { offset, limit } => self.list_activities(offset, limit).await,
                Request::ListOrders { user_id, offset, limit } => self.list_orders(user_id, offset, limit).await,
                // `group_route` answers `Every` for the two lists only.
                _ => Response::Error(ErrorCode::Internal),
            },
        }
    }

    /// Activities sort by id, and group `g`'s ids all lie below group
    /// `g + 1`'s: the list is the groups' lists one after the other. Each
    /// group is asked for the part of the page that falls in it (limit 0
    /// when none does: its total still counts).
    async fn list_activities(&self, offset: u32, limit: u32) -> Response {
        let limit = limit.min(PAGE_LIMIT_MAX);
        let mut items = Vec::new();
        let mut total: u64 = 0;
        for (g, link) in self.each() {
            // What the page skips of this group's list (the groups before
            // it hold `total`), and the room left on the page.
            let skip = u64::from(offset).saturating_sub(total).min(u64::from(u32::MAX)) as u32;
            let want = limit - items.len() as u32;
            let req = Request::ListActivities { offset: skip, limit: want };
            match call_one(g, link, req).await {
                Response::Activities { items: mine, total: n } => {
                    items.extend(mine.into_iter().take(want as usize));
                    total += n;
                }
                Response::Error(code) => return Response::Error(code),
                _ => return Response::Error(ErrorCode::Internal),
            }
        }
        Response::Activities { items, total }
    }

    /// A user's orders, newest first: each group's newest `offset + limit`
    /// merged by order id (ids sort by creation time), then the page.
    async fn list_orders(&self, user_id: u64, offset: u32, limit: u32) -> Response {
        let limit = limit.min(PAGE_LIMIT_MAX);
        let window = offset.saturating_add(limit);
        if window > ORDERS_WINDOW_MAX {
            return Response::Error(ErrorCode::BadRequest);
        }
        let mut all: Vec<OrderView> = Vec::new();
        let mut total: u64 = 0;
        for (g, link) in self.each() {
            let mut got: u32 = 0;
            loop {
                let want = (window - got).min(PAGE_LIMIT_MAX);
                let req = Request::ListOrders { user_id, offset: got, limit: want };
                match call_one(g, link, req).await {
                    Response::Orders { items, total: n } => {
                        let len = items.len() as u32;
                        all.extend(items);
                        got += len;
                        if got >= window || u64::from(got) >= n || len == 0 {
                            total += n;
                            break;
                        }
                    }
                    Response::Error(code) => return Response::Error(code),
                    _ => return Response::Error(ErrorCode::Internal),
                }
            }
        }
        all.sort_unstable_by_key(|o| std::cmp::Reverse(o.order_id));
        let items = all.into_iter().skip(offset as usize).take(limit as usize).collect();
        Response::Orders { items, total }
    }
}

/// One group's answer. `busy` from a group with no engine reachable is
/// `group_unavailable`: the buyer (and the operator's metrics) see which
/// failure it is, and that other sales are unaffected.
async fn call_one(group: u8, link: &Arc<EnginePool>, req: Request) -> Response {
    match link.call(req).await {
        Response::Error(ErrorCode::Busy) if !link.is_up() => {
            tracing::debug!(group, "engine group unreachable");
            metrics::counter!("seckill_front_group_unavailable_total").increment(1);
            Response::Error(ErrorCode::GroupUnavailable)
        }
        resp => resp,
    }
}

/// The "not found" of what `req` names.
fn not_found(req: &Request) -> Response {
    Response::Error(match req {
        Request::GetOrder { .. }
        | Request::Cancel { .. }
        | Request::Pay { .. }
        | Request::Refund { .. }
        | Request::Ship { .. }
        | Request::Expire { .. } => ErrorCode::OrderNotFound,
        _ => ErrorCode::ActivityNotFound,
    })
}
