//! Fuzz-style property tests of everything the front parses from a client:
//! bodies, query strings, auth headers, buy tokens, payment callbacks. No
//! input may panic; valid inputs must still be understood.

use proptest::prelude::*;
use seckill_front::auth::Auth;
use seckill_front::fast_path::{next, Buy, Next};
use seckill_front::http::{page, parse_buy};
use seckill_front::{buy_token, payment};

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn buy_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_buy(&bytes);
    }

    #[test]
    fn json_shaped_buy_bodies_never_panic(s in r#"\{("quantity"|"buy_token"|"x")?:?[-0-9.e"a-z\[\]{}, ]{0,40}\}?"#) {
        if let Ok((q, _)) = parse_buy(s.as_bytes()) {
            prop_assert!(q >= 1);
        }
    }

    #[test]
    fn valid_quantities_are_read(q in 1u32..=10_000, ws in "[ \t\n]{0,3}") {
        let body = format!("{ws}{{\"quantity\":{q}}}{ws}");
        prop_assert_eq!(parse_buy(body.as_bytes()), Ok((q, None)));
    }

    #[test]
    fn unknown_fields_are_refused(name in "[a-z_]{1,12}", v in 0u32..5) {
        prop_assume!(name != "quantity" && name != "buy_token");
        let body = format!("{{\"{name}\":{v}}}");
        prop_assert!(parse_buy(body.as_bytes()).is_err(), "{body} was accepted");
    }

    #[test]
    fn query_strings_never_panic(q in "[a-z=&0-9%-]{0,60}") {
        if let Ok((_, limit)) = page(Some(&q)) {
            prop_assert!(limit <= 100);
        }
    }

    #[test]
    fn auth_headers_never_panic(h in proptest::collection::vec(any::<u8>(), 0..300)) {
        let a = Auth::new(b"secret");
        prop_assert_eq!(a.user_of(Some(&h)), None);
    }

    #[test]
    fn bearer_garbage_is_refused(t in "[A-Za-z0-9._-]{0,200}") {
        let a = Auth::new(b"secret");
        prop_assert_eq!(a.user_of(Some(format!("Bearer {t}").as_bytes())), None);
    }

    #[test]
    fn buy_tokens_cannot_be_forged(t in "[0-9.a-f]{0,120}", user in 1u64..100, act in 1u64..100) {
        prop_assert!(!buy_token::verify(b"secret", &t, user, act, 0));
    }

    #[test]
    fn notify_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), sig in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = payment::parse_notify(&bytes);
        prop_assert!(!payment::signature_ok(b"k", &bytes, Some(&sig)));
    }
}

/// Flips the case of the letters whose bit in `mask` is set (header names
/// are case-insensitive).
fn mixed_case(name: &str, mask: u64) -> String {
    name.chars().enumerate().map(|(i, c)| if mask >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c }).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// The buy fast path's request classifier on any bytes: no panic, and
    /// a buy it finds lies within the bytes, its body last.
    #[test]
    fn fast_path_heads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Next::Buy(b) = next(&bytes) {
            prop_assert!(b.len <= bytes.len());
            prop_assert_eq!(b.body, &bytes[b.len - b.body.len()..b.len]);
        }
    }

    /// A well-formed buy, headers in any order and case, with or without a
    /// key, a body and `Connection: close`, followed by anything: read
    /// whole and exactly; no strict prefix of it is taken for a buy.
    #[test]
    fn fast_path_reads_buys_exactly(
        id in 1u64..u64::MAX,
        token in "[A-Za-z0-9._-]{1,300}",
        key in proptest::option::of("[!-~]{1,40}"),
        body in proptest::collection::vec(any::<u8>(), 0..200),
        close in any::<bool>(),
        masks in proptest::collection::vec(any::<u64>(), 6),
        order in Just(vec![0usize, 1, 2, 3, 4, 5]).prop_shuffle(),
        after in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let names = ["authorization", "idempotency-key", "content-length", "connection", "host", "x-trace"];
        let values = [format!("Bearer {token}"), key.clone().unwrap_or_default(), body.len().to_string(),
                      (if close { "close" } else { "keep-alive" }).to_string(), "shop.example".into(), "abc".into()];
        let mut req = format!("POST /api/v1/activities/{id}/buy HTTP/1.1\r\n").into_bytes();
        for i in order {
            if i == 1 && key.is_none() {
                continue;
            }
            req.extend_from_slice(format!("{}: {}\r\n", mixed_case(names[i], masks[i]), values[i]).as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(&body);
        let whole = req.len();
        for cut in 0..whole {
            prop_assert!(!matches!(next(&req[..cut]), Next::Buy(_)), "a prefix of {} bytes read as a buy", cut);
        }
        req.extend_from_slice(&after);
        let id_text = id.to_string();
        let bearer = format!("Bearer {token}");
        let want = Buy {
            activity: &id_text,
            authorization: Some(bearer.as_bytes()),
            idempotency_key: key.as_deref().map(str::as_bytes),
            body: &body,
            len: whole,
            close,
        };
        prop_assert_eq!(next(&req), Next::Buy(want));
    }
}
