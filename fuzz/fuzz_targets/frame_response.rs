//! Arbitrary bytes as a response stream (one body, as the front sees it after
//! FrameReader, and a stream of frames): splitting and decoding must never
//! panic, and every frame that decodes must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seckill_proto::frame::{decode_response, encode_response};

fuzz_target!(|data: &[u8]| {
    seckill_fuzz::each_frame(data, |body| seckill_fuzz::reencodes(body, decode_response, encode_response, "response"))
});
