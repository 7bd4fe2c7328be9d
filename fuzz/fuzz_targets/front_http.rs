//! The front's parsers of untrusted request parts. The first byte picks the
//! parser, the rest is its input: 0 buy body, 1 query string (`page`),
//! 2 payment notify body, 3 `Authorization` header, 4 buy token, 5 the buy
//! fast path's request head. Never a panic, and what is accepted is within
//! the documented bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seckill_front::{auth::Auth, buy_token, fast_path, http, payment};
use std::sync::OnceLock;

static AUTH: OnceLock<Auth> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 6 {
        0 => {
            if let Ok((q, _token)) = http::parse_buy(rest) {
                assert!(q >= 1);
            }
        }
        1 => {
            if let Ok(s) = std::str::from_utf8(rest) {
                if let Ok((_offset, limit)) = http::page(Some(s)) {
                    assert!(limit <= 100, "limit {limit}");
                }
            }
        }
        2 => {
            if let Ok(n) = payment::parse_notify(rest) {
                assert!(!n.provider_txn_id.is_empty() && n.provider_txn_id.len() <= 128);
                let back: seckill_proto::OrderId = n.order_id.to_string().parse().expect("order id display parses");
                assert_eq!(back, n.order_id);
            }
        }
        3 => {
            let auth = AUTH.get_or_init(|| Auth::new(b"k"));
            if let Some(user) = auth.user_of(Some(rest)) {
                assert!(user > 0);
            }
        }
        5 => {
            if let fast_path::Next::Buy(b) = fast_path::next(rest) {
                assert!(b.len <= rest.len() && b.body.len() <= http::BODY_BYTES_MAX);
                assert_eq!(b.body, &rest[b.len - b.body.len()..b.len]);
            }
        }
        _ => {
            if let Ok(s) = std::str::from_utf8(rest) {
                // User 7, activity 3, now 1000 ms: the seeds are tokens for them.
                let _ = buy_token::verify(b"k", s, 7, 3, 1_000);
            }
        }
    }
});
