//! Arbitrary bytes as a request stream (one body, as the engine sees it after
//! FrameReader, and a stream of frames): splitting and decoding must never
//! panic, and every frame that decodes must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seckill_proto::frame::{decode_request, encode_request};

fuzz_target!(|data: &[u8]| {
    seckill_fuzz::each_frame(data, |body| seckill_fuzz::reencodes(body, decode_request, encode_request, "request"))
});
