//! The vocabulary shared by the front, the engine and the tools.
//!
//! Architecture Invariant: this crate does no I/O and depends on no other
//! seckill crate. It turns bytes into messages and back, nothing else.

// Input-facing: no panics on what peers send (docs/SECURITY.md; tests exempt,
// clippy.toml). `unwrap` is denied workspace-wide (Cargo.toml); here `expect` too.
#![warn(clippy::expect_used)]

mod named;

pub mod address;
pub mod bucket;
pub mod error;
pub mod frame;
pub mod frame_reader;
pub mod group;
pub mod handshake;
pub mod json;
pub mod model;
pub mod msg;
pub mod stats;

pub use address::Address;
pub use bucket::{TokenBucket, TokenRate};
pub use error::ErrorCode;
pub use frame::{
    decode_request, decode_response, encode_request, encode_response, split_frame, FrameError, FRAME_BYTES_MAX,
};
pub use frame_reader::FrameReader;
pub use group::{group_of_id, GroupRoute, GROUPS_MAX};
pub use model::{ActivityStatus, ActivityView, OrderId, OrderStatus, OrderView, Phase, SaleTerms};
pub use msg::{Request, Response, Route, PAGE_LIMIT_MAX};
