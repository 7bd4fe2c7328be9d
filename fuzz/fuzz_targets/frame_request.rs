//! Arbitrary bytes as a request stream (one body, as the engine sees it after
//! FrameReader, and a stream of frames): splitting and decoding must never
//! panic, and every frame that decodes must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seckill_proto::frame::{decode_request, encode_request};

fuzz_target!(|data: &[u8]| seckill_fuzz::each_frame(data, check));

fn check(body: &[u8]) {
    if let Ok((request_id, req)) = decode_request(body) {
        let mut out = Vec::new();
        encode_request(&mut out, request_id, &req);
        assert_eq!(&out[4..], body, "decoded request does not re-encode canonically");
    }
}
