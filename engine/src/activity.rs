//! Products and activities: the configuration every shard holds a copy of.

use seckill_proto::ActivityStatus;
use seckill_proto::{ErrorCode, Phase};

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
    pub starts_at_ms: u64,
    pub ends_at_ms: u64,
    /// 0 means only users with a quota may buy.
    pub per_user_limit: u32,
    pub payment_timeout_s: u32,
    pub require_buy_token: bool,
    pub gate_factor: u32,
    pub status: ActivityStatus,
}

impl Activity {
    /// The phase buyers see at `now_ms`. Disabled and past-the-end both read
    /// as ended; a pause only shows while the sale would otherwise be open
    /// or upcoming.
    pub fn phase(&self, now_ms: u64) -> Phase {
        if self.status == ActivityStatus::Disabled || now_ms >= self.ends_at_ms {
            Phase::Ended
        } else if self.status == ActivityStatus::Paused {
            Phase::Paused
        } else if now_ms < self.starts_at_ms {
            Phase::Upcoming
        } else {
            Phase::Ongoing
        }
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
        fn set<T>(field: &mut T, to: Option<T>) {
            if let Some(v) = to {
                *field = v;
            }
        }
        let ActivityChanges {
            title,
            price_cents,
            starts_at_ms,
            ends_at_ms,
            per_user_limit,
            payment_timeout_s,
            require_buy_token,
            gate_factor,
        } = changes;
        set(&mut self.title, title);
        set(&mut self.price_cents, price_cents);
        set(&mut self.starts_at_ms, starts_at_ms);
        set(&mut self.ends_at_ms, ends_at_ms);
        set(&mut self.per_user_limit, per_user_limit);
        set(&mut self.payment_timeout_s, payment_timeout_s);
        set(&mut self.require_buy_token, require_buy_token);
        set(&mut self.gate_factor, gate_factor);
    }

    /// Whether the settings make a sale that can run; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.title.is_empty() || self.title.len() > TEXT_BYTES_MAX {
            return Err(format!("title must be 1..={TEXT_BYTES_MAX} bytes"));
        }
        if self.ends_at_ms <= self.starts_at_ms {
            return Err("ends_at must be after starts_at".into());
        }
        if self.per_user_limit > PER_USER_LIMIT_MAX {
            return Err(format!("per_user_limit must be at most {PER_USER_LIMIT_MAX}"));
        }
        if self.payment_timeout_s == 0 || self.payment_timeout_s > PAYMENT_TIMEOUT_S_MAX {
            return Err(format!("payment_timeout_s must be 1..={PAYMENT_TIMEOUT_S_MAX}"));
        }
        if self.gate_factor == 0 || self.gate_factor > GATE_FACTOR_MAX {
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
            starts_at_ms: 1_000,
            ends_at_ms: 2_000,
            per_user_limit: 1,
            payment_timeout_s: 1800,
            require_buy_token: false,
            gate_factor: 5,
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
        assert_eq!(a, Activity { title: "new".into(), gate_factor: 9, ..sample() });
        a.apply(ActivityChanges::default());
        assert_eq!(a, Activity { title: "new".into(), gate_factor: 9, ..sample() });
    }

    #[test]
    fn validation_catches_bad_specs() {
        assert!(sample().validate().is_ok());
        assert!(Activity { ends_at_ms: 1_000, ..sample() }.validate().is_err());
        assert!(Activity { title: String::new(), ..sample() }.validate().is_err());
        assert!(Activity { payment_timeout_s: 0, ..sample() }.validate().is_err());
        assert!(Activity { per_user_limit: 10_001, ..sample() }.validate().is_err());
    }
}
