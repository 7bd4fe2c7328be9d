//! The error codes of DESIGN.md, one enum for every layer.

use serde::{Deserialize, Serialize};

/// Every way a request can be refused. The front maps each code to the HTTP
/// status of DESIGN.md; the engine never invents codes outside this list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum ErrorCode {
    BadRequest = 1,
    Unauthorized = 2,
    ActivityNotFound = 3,
    OrderNotFound = 4,
    SoldOut = 5,
    LimitReached = 6,
    NotStarted = 7,
    Ended = 8,
    Paused = 9,
    InvalidState = 10,
    BuyTokenRequired = 11,
    PayloadTooLarge = 12,
    RateLimited = 13,
    Busy = 14,
    AmountMismatch = 15,
    ProductNotFound = 16,
    Internal = 17,
    IdempotencyKeyReused = 18,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 18] = [
        Self::BadRequest,
        Self::Unauthorized,
        Self::ActivityNotFound,
        Self::OrderNotFound,
        Self::SoldOut,
        Self::LimitReached,
        Self::NotStarted,
        Self::Ended,
        Self::Paused,
        Self::InvalidState,
        Self::BuyTokenRequired,
        Self::PayloadTooLarge,
        Self::RateLimited,
        Self::Busy,
        Self::AmountMismatch,
        Self::ProductNotFound,
        Self::Internal,
        Self::IdempotencyKeyReused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::ActivityNotFound => "activity_not_found",
            Self::OrderNotFound => "order_not_found",
            Self::SoldOut => "sold_out",
            Self::LimitReached => "limit_reached",
            Self::NotStarted => "not_started",
            Self::Ended => "ended",
            Self::Paused => "paused",
            Self::InvalidState => "invalid_state",
            Self::BuyTokenRequired => "buy_token_required",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited => "rate_limited",
            Self::Busy => "busy",
            Self::AmountMismatch => "amount_mismatch",
            Self::ProductNotFound => "product_not_found",
            Self::Internal => "internal",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
        }
    }

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
            Self::Busy => 503,
            Self::Internal => 500,
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| *c as u8 == v)
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
