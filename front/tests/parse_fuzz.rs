//! Fuzz-style property tests of everything the front parses from a client:
//! bodies, query strings, auth headers, buy tokens, payment callbacks. No
//! input may panic; valid inputs must still be understood.

use proptest::prelude::*;
use seckill_front::auth::Auth;
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
