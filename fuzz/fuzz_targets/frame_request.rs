//! Arbitrary bytes as a request stream: splitting and decoding must never
//! panic, and every frame that decodes must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seckill_proto::frame::{decode_request, encode_request, split_frame};

fuzz_target!(|data: &[u8]| {
    // The bytes as one frame body, as the engine sees it after split_frame.
    check(data);
    // The bytes as a receive buffer holding any number of frames.
    let mut rest = data;
    while let Ok(Some((body, used))) = split_frame(rest) {
        assert!(used <= rest.len() && used == body.len() + 4);
        check(body);
        rest = &rest[used..];
    }
});

fn check(body: &[u8]) {
    if let Ok((request_id, req)) = decode_request(body) {
        let mut out = Vec::new();
        encode_request(&mut out, request_id, &req);
        assert_eq!(
            &out[4..],
            body,
            "decoded request does not re-encode canonically"
        );
    }
}
