//! A checker for histories of buys of one activity (issue 20, item 5d):
//! every request a client sent, when it sent it, when (and whether) it got
//! an answer and which, plus the orders the engine holds at the end. It
//! fails when no single serial order of the requests, each taking effect at
//! one instant between its sending and its answer, gives these answers.
//!
//! The model: a stock of `stock` units and a limit of `limit` units per
//! buyer; a buy of `q` units by `u` either creates an order (stock and
//! `u`'s units move by `q`), or is answered `sold_out` (fewer than `q`
//! units left) or `limit_reached` (`u` would hold more than `limit`). No
//! order is cancelled or expires during the history. A request with no
//! answer (lost connection, time-out, `busy`) may or may not have taken
//! effect: the final orders say which did.
//!
//! Why a check per answer is enough: orders only take units away, so the
//! serial order most favourable to every refusal at once puts each buy that
//! succeeded at the instant it was sent and each refusal at the instant it
//! was answered. A refusal is explained iff the orders sent before it was
//! answered leave too little. Successes need nothing more than the final
//! totals staying within stock and limits.

use std::collections::{BTreeMap, HashMap};

/// One request and what its client saw. Times are nanoseconds on one
/// monotonic clock shared by all clients (e.g. since a common `Instant`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub user: u64,
    pub quantity: u32,
    pub sent_ns: u64,
    /// `None`: no answer (the outcome is then `Unknown`).
    pub answered_ns: Option<u64>,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An order, by its id.
    Created(String),
    SoldOut,
    LimitReached,
    /// No answer, or an answer that does not say (`busy`, a time-out): the
    /// request may have made an order.
    Unknown,
}

/// An order the engine holds at the end of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalOrder {
    pub id: String,
    pub user: u64,
    pub quantity: u32,
}

/// What a history that passed held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub created: usize,
    pub sold_out: usize,
    pub limit_reached: usize,
    pub unknown: usize,
    /// Requests without an answer that the final orders show took effect.
    pub unknown_took_effect: usize,
}

/// Checks `ops` against the orders held at the end. `Err` names the first
/// answer no serial order explains.
pub fn check(ops: &[Op], finals: &[FinalOrder], stock: u64, limit: u32) -> Result<Summary, String> {
    let mut summary = Summary::default();
    let by_id: HashMap<&str, &FinalOrder> = finals.iter().map(|o| (o.id.as_str(), o)).collect();
    if by_id.len() != finals.len() {
        return Err("an order id is held twice at the end".into());
    }
    // (sent_ns, user, quantity) of every request that made an order.
    let mut effective: Vec<(u64, u64, u32)> = Vec::new();
    let mut acknowledged: HashMap<&str, &Op> = HashMap::new();
    for op in ops {
        match &op.outcome {
            Outcome::Created(id) => {
                summary.created += 1;
                if let Some(first) = acknowledged.insert(id.as_str(), op) {
                    return Err(format!("order {id} was answered twice: {first:?} and {op:?}"));
                }
                match by_id.get(id.as_str()) {
                    Some(o) if (o.user, o.quantity) == (op.user, op.quantity) => {}
                    Some(o) => return Err(format!("order {id} answered as {op:?} is held as {o:?}")),
                    None => return Err(format!("acknowledged order {id} ({op:?}) is not held at the end")),
                }
                effective.push((op.sent_ns, op.user, op.quantity));
            }
            Outcome::SoldOut => summary.sold_out += 1,
            Outcome::LimitReached => summary.limit_reached += 1,
            Outcome::Unknown => summary.unknown += 1,
        }
    }
    // Orders nobody was told of: each must come from an unanswered request
    // of the same buyer and quantity. The earliest sent of them is the one
    // that took effect (the choice that explains the most refusals).
    let mut unanswered: BTreeMap<(u64, u32), Vec<u64>> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.outcome == Outcome::Unknown) {
        unanswered.entry((op.user, op.quantity)).or_default().push(op.sent_ns);
    }
    for sent in unanswered.values_mut() {
        sent.sort_unstable_by(|a, b| b.cmp(a)); // pop() gives the earliest
    }
    for o in finals.iter().filter(|o| !acknowledged.contains_key(o.id.as_str())) {
        let sent_ns = unanswered.get_mut(&(o.user, o.quantity)).and_then(Vec::pop).ok_or_else(|| {
            format!(
                "order {} of user {} ({} units) was never asked for (no unanswered request explains it)",
                o.id, o.user, o.quantity
            )
        })?;
        summary.unknown_took_effect += 1;
        effective.push((sent_ns, o.user, o.quantity));
    }

    let held: u64 = effective.iter().map(|e| u64::from(e.2)).sum();
    if held > stock {
        return Err(format!("oversold: the orders hold {held} units of {stock}"));
    }
    let mut per_user: HashMap<u64, u64> = HashMap::new();
    for &(_, user, quantity) in &effective {
        *per_user.entry(user).or_default() += u64::from(quantity);
    }
    if let Some((user, units)) = per_user.iter().find(|(_, units)| **units > u64::from(limit)) {
        return Err(format!("user {user} holds {units} units, above the limit {limit}"));
    }

    // Refusals, each at its answer: what had been sent by then must leave
    // too little. Units sent before `t`: a prefix sum over the successes in
    // sending order, overall and per buyer.
    effective.sort_unstable();
    let all = Prefix::new(effective.iter().map(|e| (e.0, e.2)));
    let mut mine: HashMap<u64, Vec<(u64, u32)>> = HashMap::new();
    for &(sent_ns, user, quantity) in &effective {
        mine.entry(user).or_default().push((sent_ns, quantity));
    }
    let mine: HashMap<u64, Prefix> = mine.into_iter().map(|(u, v)| (u, Prefix::new(v.into_iter()))).collect();
    for op in ops {
        let Some(answered) = op.answered_ns else { continue };
        match op.outcome {
            Outcome::SoldOut => {
                let taken = all.units_before(answered);
                if taken + u64::from(op.quantity) <= stock {
                    return Err(format!(
                        "sold_out for {op:?}, yet at most {taken} of {stock} units could be taken by then"
                    ));
                }
            }
            Outcome::LimitReached => {
                let held = mine.get(&op.user).map_or(0, |p| p.units_before(answered));
                if held + u64::from(op.quantity) <= u64::from(limit) {
                    return Err(format!(
                        "limit_reached for {op:?}, yet user {} could hold at most {held} of {limit} units by then",
                        op.user
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(summary)
}

/// Units sent before a time, from (sent_ns, units) in sending order.
struct Prefix {
    sent_ns: Vec<u64>,
    /// `units[i]`: the units of the first `i` requests.
    units: Vec<u64>,
}

impl Prefix {
    fn new(sorted: impl Iterator<Item = (u64, u32)>) -> Prefix {
        let mut p = Prefix { sent_ns: Vec::new(), units: vec![0] };
        for (sent_ns, quantity) in sorted {
            debug_assert!(p.sent_ns.last().is_none_or(|&last| last <= sent_ns), "not in sending order");
            p.sent_ns.push(sent_ns);
            p.units.push(p.units[p.units.len() - 1] + u64::from(quantity));
        }
        p
    }

    fn units_before(&self, t_ns: u64) -> u64 {
        self.units[self.sent_ns.partition_point(|&s| s < t_ns)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(user: u64, quantity: u32, sent_ns: u64, answered_ns: Option<u64>, outcome: Outcome) -> Op {
        Op { user, quantity, sent_ns, answered_ns, outcome }
    }

    fn created(id: &str) -> Outcome {
        Outcome::Created(id.into())
    }

    fn order(id: &str, user: u64, quantity: u32) -> FinalOrder {
        FinalOrder { id: id.into(), user, quantity }
    }

    #[test]
    fn a_serial_history_passes_and_is_counted() {
        let ops = [
            op(1, 1, 0, Some(10), created("a")),
            op(2, 1, 20, Some(30), created("b")),
            op(3, 1, 40, Some(50), Outcome::SoldOut),
            op(1, 1, 60, Some(70), Outcome::LimitReached),
            op(3, 1, 80, None, Outcome::Unknown),
        ];
        let finals = [order("a", 1, 1), order("b", 2, 1)];
        let s = check(&ops, &finals, 2, 1).expect("a serial history");
        assert_eq!(s, Summary { created: 2, sold_out: 1, limit_reached: 1, unknown: 1, unknown_took_effect: 0 });
    }

    #[test]
    fn a_refusal_overlapping_the_last_sale_passes() {
        // b is sent before the sold_out is answered: b may come first.
        let ops = [op(2, 1, 5, Some(30), created("b")), op(3, 1, 0, Some(10), Outcome::SoldOut)];
        assert!(check(&ops, &[order("b", 2, 1)], 1, 1).is_ok());
    }

    #[test]
    fn a_sold_out_before_the_stock_could_be_gone_fails() {
        // b is sent only after the sold_out was answered: one unit was left.
        let ops = [op(3, 1, 0, Some(10), Outcome::SoldOut), op(2, 1, 20, Some(30), created("b"))];
        let e = check(&ops, &[order("b", 2, 1)], 1, 1).expect_err("stock was left");
        assert!(e.contains("sold_out"), "{e}");
    }

    #[test]
    fn a_limit_reached_with_room_fails() {
        let ops = [op(1, 1, 0, Some(10), created("a")), op(1, 1, 20, Some(30), Outcome::LimitReached)];
        let e = check(&ops, &[order("a", 1, 1)], 10, 2).expect_err("room for one more");
        assert!(e.contains("limit_reached"), "{e}");
        // With a limit of 1 it is explained.
        assert!(check(&ops, &[order("a", 1, 1)], 10, 1).is_ok());
    }

    #[test]
    fn a_lost_acknowledged_order_fails() {
        let ops = [op(1, 1, 0, Some(10), created("a")), op(2, 1, 0, Some(10), created("b"))];
        let e = check(&ops, &[order("a", 1, 1)], 10, 1).expect_err("b is lost");
        assert!(e.contains("not held"), "{e}");
    }

    #[test]
    fn an_order_answered_twice_fails() {
        let ops = [op(1, 1, 0, Some(10), created("a")), op(1, 1, 20, Some(30), created("a"))];
        assert!(check(&ops, &[order("a", 1, 1)], 10, 2).expect_err("twice").contains("twice"));
    }

    #[test]
    fn an_order_nobody_asked_for_fails_and_an_unanswered_request_explains_one() {
        let finals = [order("a", 1, 1), order("x", 2, 2)];
        let answered = [op(1, 1, 0, Some(10), created("a"))];
        assert!(check(&answered, &finals, 10, 2).expect_err("x").contains("never asked"));
        let with_lost = [answered[0].clone(), op(2, 2, 5, None, Outcome::Unknown)];
        let s = check(&with_lost, &finals, 10, 2).expect("the lost request made x");
        assert_eq!(s.unknown_took_effect, 1);
        // Of another quantity it does not explain it.
        let other = [answered[0].clone(), op(2, 1, 5, None, Outcome::Unknown)];
        assert!(check(&other, &finals, 10, 2).is_err());
    }

    #[test]
    fn an_unanswered_request_that_took_effect_explains_a_later_refusal() {
        // The lost buy of the last unit was sent before the sold_out was answered.
        let ops = [op(2, 1, 0, None, Outcome::Unknown), op(3, 1, 5, Some(10), Outcome::SoldOut)];
        assert!(check(&ops, &[order("z", 2, 1)], 1, 1).is_ok());
        // Without its order the stock was still there.
        assert!(check(&ops, &[], 1, 1).is_err());
    }

    #[test]
    fn oversold_and_over_the_limit_fail() {
        let ops = [op(1, 2, 0, Some(10), created("a")), op(2, 2, 0, Some(10), created("b"))];
        let finals = [order("a", 1, 2), order("b", 2, 2)];
        assert!(check(&ops, &finals, 3, 2).expect_err("4 of 3").contains("oversold"));
        assert!(check(&ops, &finals, 4, 1).expect_err("2 > 1").contains("limit"));
        assert!(check(&ops, &finals, 4, 2).is_ok());
    }
}
