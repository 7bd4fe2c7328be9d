//! The error codes of DESIGN.md, one enum for every layer.

use serde::{Deserialize, Serialize};

crate::named_enum! {
    /// Every way a request can be refused. The front maps each code to the HTTP
    /// status of DESIGN.md; the engine never invents codes outside this list.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum ErrorCode: u8 {
        BadRequest = 1 => "bad_request",
        Unauthorized = 2 => "unauthorized",
        ActivityNotFound = 3 => "activity_not_found",
        OrderNotFound = 4 => "order_not_found",
        SoldOut = 5 => "sold_out",
        LimitReached = 6 => "limit_reached",
        NotStarted = 7 => "not_started",
        Ended = 8 => "ended",
        Paused = 9 => "paused",
        InvalidState = 10 => "invalid_state",
        BuyTokenRequired = 11 => "buy_token_required",
        PayloadTooLarge = 12 => "payload_too_large",
        RateLimited = 13 => "rate_limited",
        Busy = 14 => "busy",
        AmountMismatch = 15 => "amount_mismatch",
        ProductNotFound = 16 => "product_not_found",
        Internal = 17 => "internal",
        IdempotencyKeyReused = 18 => "idempotency_key_reused",
        /// From a front with several groups: the group that owns the
        /// activity or order (or one a list spans) has no engine reachable.
        GroupUnavailable = 19 => "group_unavailable",
    }
}

impl ErrorCode {
    /// The HTTP status DESIGN.md assigns to this code.
    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::ActivityNotFound | Self::OrderNotFound | Self::ProductNotFound => 404,
            Self::SoldOut
            | Self::LimitReached
            | Self::NotStarted
            | Self::Ended
            | Self::Paused
            | Self::InvalidState
            | Self::BuyTokenRequired
            | Self::AmountMismatch => 409,
            Self::PayloadTooLarge => 413,
            Self::IdempotencyKeyReused => 422,
            Self::RateLimited => 429,
            Self::Busy | Self::GroupUnavailable => 503,
            Self::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_u8_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u8(code as u8), Some(code));
            assert!(seen.insert(code.as_str()));
        }
        assert_eq!(ErrorCode::from_u8(0), None);
        assert_eq!(ErrorCode::from_u8(200), None);
    }

    #[test]
    fn statuses_follow_design() {
        assert_eq!(ErrorCode::SoldOut.http_status(), 409);
        assert_eq!(ErrorCode::Busy.http_status(), 503);
        assert_eq!(ErrorCode::RateLimited.http_status(), 429);
        assert_eq!(ErrorCode::PayloadTooLarge.http_status(), 413);
        assert_eq!(ErrorCode::OrderNotFound.http_status(), 404);
    }
}
