//! Arbitrary bytes as a response stream: splitting and decoding must never
//! panic, and every frame that decodes must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seckill_proto::frame::{decode_response, encode_response, split_frame};

fuzz_target!(|data: &[u8]| {
    // The bytes as one frame body, as the front sees it after split_frame.
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
    if let Ok((request_id, resp)) = decode_response(body) {
        let mut out = Vec::new();
        encode_response(&mut out, request_id, &resp);
        assert_eq!(
            &out[4..],
            body,
            "decoded response does not re-encode canonically"
        );
    }
}
