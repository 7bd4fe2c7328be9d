//! The vocabulary shared by the front, the engine and the tools.
//!
//! Architecture Invariant: this crate does no I/O and depends on no other
//! seckill crate. It turns bytes into messages and back, nothing else.

pub mod error;
pub mod frame;
pub mod json;
pub mod model;
pub mod msg;

pub use error::ErrorCode;
pub use frame::{
    decode_request, decode_response, encode_request, encode_response, split_frame, FrameError, FRAME_BYTES_MAX,
};
pub use model::{ActivityView, OrderId, OrderStatus, OrderView, Phase};
pub use msg::{Request, Response, Route, PAGE_LIMIT_MAX};

/// FNV-1a, 64 bits: a stable hash for client-chosen strings (Idempotency
/// keys, payment transaction ids) that the engine stores as numbers. Never 0,
/// which means "none" on the wire.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}
