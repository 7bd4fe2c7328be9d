//! Products and activities: the configuration every shard holds a copy of.

use seckill_proto::ActivityStatus;
use seckill_proto::{ErrorCode, Phase, SaleTerms};

use crate::limits::GATE_FACTOR_MAX;
pub(crate) use crate::limits::{PAYMENT_TIMEOUT_S_MAX, PER_USER_LIMIT_MAX, STOCK_MAX, TEXT_BYTES_MAX};

/// A product on sale: what an activity sells.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Product {
    pub id: u64,
    pub name: String,
    pub description: String,
    pub image_url: String,
    pub price_cents: u64,
}

/// One flash sale of one product, as every shard holds it (a read-only copy
/// pushed on each change).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Activity {
    pub id: u64,
    pub product_id: u64,
    pub product_name: String,
    pub title: String,
    pub price_cents: u64,
    /// Archived in place of the flat fields it holds, with the same bytes
    /// (`SaleTerms`; `wal::codec`'s `an_activity_record_keeps_its_bytes`).
    pub terms: SaleTerms,
    pub status: ActivityStatus,
}

impl Activity {
    /// The phase buyers see at `now_ms` ([`SaleTerms::phase`]).
    pub fn phase(&self, now_ms: u64) -> Phase {
        self.terms.phase(self.status, now_ms)
    }

    /// Why a buy is refused at `now_ms`, if it is.
    pub(crate) fn refuse_buy(&self, now_ms: u64) -> Option<ErrorCode> {
        match self.phase(now_ms) {
            Phase::Ongoing => None,
            Phase::Upcoming => Some(ErrorCode::NotStarted),
            Phase::Ended => Some(ErrorCode::Ended),
            Phase::Paused => Some(ErrorCode::Paused),
        }
    }

    /// Moves to `to` by the status rule: active and paused move freely, but
    /// a disabled activity stays disabled (its buyers were told it ended).
    pub fn set_status(&mut self, to: ActivityStatus) -> Result<(), &'static str> {
        if self.status == ActivityStatus::Disabled {
            return Err("the activity is disabled; that cannot be undone");
        }
        self.status = to;
        Ok(())
    }

    /// Applies `changes`: each setting given replaces the current one.
    pub fn apply(&mut self, changes: ActivityChanges) {
        changes.apply_terms(&mut self.terms);
        set(&mut self.title, changes.title);
        set(&mut self.price_cents, changes.price_cents);
    }

    /// Whether the settings make a sale that can run; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.title.is_empty() || self.title.len() > TEXT_BYTES_MAX {
            return Err(format!("title must be 1..={TEXT_BYTES_MAX} bytes"));
        }
        let t = &self.terms;
        if t.ends_at_ms <= t.starts_at_ms {
            return Err("ends_at must be after starts_at".into());
        }
        if t.per_user_limit > PER_USER_LIMIT_MAX {
            return Err(format!("per_user_limit must be at most {PER_USER_LIMIT_MAX}"));
        }
        if t.payment_timeout_s == 0 || t.payment_timeout_s > PAYMENT_TIMEOUT_S_MAX {
            return Err(format!("payment_timeout_s must be 1..={PAYMENT_TIMEOUT_S_MAX}"));
        }
        if t.gate_factor == 0 || t.gate_factor > GATE_FACTOR_MAX {
            return Err(format!("gate_factor must be 1..={GATE_FACTOR_MAX}"));
        }
        Ok(())
    }
}

/// An operator's change to an activity's settings (`activity.update`):
/// `None` keeps the current value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActivityChanges {
    pub title: Option<String>,
    pub price_cents: Option<u64>,
    pub starts_at_ms: Option<u64>,
    pub ends_at_ms: Option<u64>,
    pub per_user_limit: Option<u32>,
    pub payment_timeout_s: Option<u32>,
    pub require_buy_token: Option<bool>,
    pub gate_factor: Option<u32>,
}

impl ActivityChanges {
    /// Sets each of `terms` that these changes give (the title and price
    /// are the caller's: `Activity::apply`). Every term is named, so a new
    /// one does not compile until it has its change here.
    pub(crate) fn apply_terms(&self, terms: &mut SaleTerms) {
        let SaleTerms { starts_at_ms, ends_at_ms, per_user_limit, payment_timeout_s, require_buy_token, gate_factor } =
            terms;
        set(starts_at_ms, self.starts_at_ms);
        set(ends_at_ms, self.ends_at_ms);
        set(per_user_limit, self.per_user_limit);
        set(payment_timeout_s, self.payment_timeout_s);
        set(require_buy_token, self.require_buy_token);
        set(gate_factor, self.gate_factor);
    }
}

fn set<T>(field: &mut T, to: Option<T>) {
    if let Some(v) = to {
        *field = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Activity {
        Activity {
            id: 1,
            product_id: 1,
            product_name: "phone".into(),
            title: "sale".into(),
            price_cents: 100,
            terms: SaleTerms {
                starts_at_ms: 1_000,
                ends_at_ms: 2_000,
                per_user_limit: 1,
                payment_timeout_s: 1800,
                require_buy_token: false,
                gate_factor: 5,
            },
            status: ActivityStatus::Active,
        }
    }

    #[test]
    fn phases_follow_the_clock_and_status() {
        let mut a = sample();
        assert_eq!(a.phase(999), Phase::Upcoming);
        assert_eq!(a.phase(1_000), Phase::Ongoing);
        assert_eq!(a.phase(1_999), Phase::Ongoing);
        assert_eq!(a.phase(2_000), Phase::Ended);
        a.status = ActivityStatus::Paused;
        assert_eq!(a.phase(1_500), Phase::Paused);
        assert_eq!(a.phase(500), Phase::Paused);
        assert_eq!(a.phase(2_500), Phase::Ended);
        a.status = ActivityStatus::Disabled;
        assert_eq!(a.phase(1_500), Phase::Ended);
    }

    #[test]
    fn refusals_name_the_phase() {
        let a = sample();
        assert_eq!(a.refuse_buy(0), Some(ErrorCode::NotStarted));
        assert_eq!(a.refuse_buy(1_500), None);
        assert_eq!(a.refuse_buy(3_000), Some(ErrorCode::Ended));
        let p = Activity { status: ActivityStatus::Paused, ..sample() };
        assert_eq!(p.refuse_buy(1_500), Some(ErrorCode::Paused));
    }

    #[test]
    fn disabled_stays_disabled() {
        let mut a = sample();
        assert_eq!(a.set_status(ActivityStatus::Paused), Ok(()));
        assert_eq!(a.set_status(ActivityStatus::Active), Ok(()));
        assert_eq!(a.set_status(ActivityStatus::Disabled), Ok(()));
        for to in [ActivityStatus::Active, ActivityStatus::Paused, ActivityStatus::Disabled] {
            assert!(a.set_status(to).is_err(), "{to:?}");
            assert_eq!(a.status, ActivityStatus::Disabled);
        }
    }

    #[test]
    fn changes_replace_only_what_they_name() {
        let mut a = sample();
        a.apply(ActivityChanges { title: Some("new".into()), gate_factor: Some(9), ..ActivityChanges::default() });
        let changed =
            Activity { title: "new".into(), terms: SaleTerms { gate_factor: 9, ..sample().terms }, ..sample() };
        assert_eq!(a, changed);
        a.apply(ActivityChanges::default());
        assert_eq!(a, changed);
    }

    #[test]
    fn validation_catches_bad_specs() {
        assert!(sample().validate().is_ok());
        let with_terms = |terms| Activity { terms, ..sample() };
        assert!(with_terms(SaleTerms { ends_at_ms: 1_000, ..sample().terms }).validate().is_err());
        assert!(Activity { title: String::new(), ..sample() }.validate().is_err());
        assert!(with_terms(SaleTerms { payment_timeout_s: 0, ..sample().terms }).validate().is_err());
        assert!(with_terms(SaleTerms { per_user_limit: 10_001, ..sample().terms }).validate().is_err());
    }
}
