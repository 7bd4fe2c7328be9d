//! The binary frame codec of the front ↔ engine protocol (DESIGN.md,
//! "Front ↔ engine wire protocol").
//!
//! ```text
//! u32 LE len | u8 kind | u64 LE request_id | payload
//! ```
//!
//! `len` counts the bytes after itself (kind + id + payload) and is at most
//! [`FRAME_BYTES_MAX`]. Payloads have a fixed layout: little-endian integers,
//! an [`OrderId`] as a u128, enums and `bool` as a u8, `Option<u64>` as a u8
//! tag (0 or 1) followed by a u64 that is 0 when the tag is 0, strings as a
//! u16 byte count + UTF-8, vectors as a u32 item count + items. Fields are
//! written in declaration order. The encoding is canonical: a frame that
//! decodes re-encodes to the same bytes.
//!
//! Kinds 1..=12 are the [`Request`] variants in declaration order; kinds
//! 128..=136 are the [`Response`] variants, also in declaration order (see
//! [`kind`]). Kind 136 (`NotLeader`, a replica that does not lead) came
//! with replica groups; a front from before it closes the connection on
//! that kind (`UnknownKind`), which only a replica group can send.
//!
//! Decoding never panics and never trusts a count: a malformed frame is a
//! [`FrameError`], and the connection that sent it is closed by its owner.
//! Requests and `Response::Order`/`Replayed`/`Done`/`Error` decode without
//! allocating; encoding only appends to the caller's (reused) buffer.

use crate::{
    ActivityStatus, ActivityView, ErrorCode, OrderId, OrderStatus, OrderView, Phase, Request, Response, SaleTerms,
};

/// Largest allowed `len` (bytes after the length field) of one frame.
pub const FRAME_BYTES_MAX: usize = 64 * 1024;

/// Bytes of the length prefix.
pub const LEN_BYTES: usize = 4;

/// Bytes of kind + request id, the smallest legal `len`.
pub const HEADER_BYTES: usize = 1 + 8;

/// The `kind` byte of each message.
pub mod kind {
    pub const BUY: u8 = 1;
    pub const GET_ORDER: u8 = 2;
    pub const LIST_ORDERS: u8 = 3;
    pub const CANCEL: u8 = 4;
    pub const PAY: u8 = 5;
    pub const REFUND: u8 = 6;
    pub const SHIP: u8 = 7;
    pub const EXPIRE: u8 = 8;
    pub const SET_QUOTA: u8 = 9;
    pub const ISSUE_BUY_TOKEN: u8 = 10;
    pub const GET_ACTIVITY: u8 = 11;
    pub const LIST_ACTIVITIES: u8 = 12;

    pub const ORDER: u8 = 128;
    pub const REPLAYED: u8 = 129;
    pub const ORDERS: u8 = 130;
    pub const ACTIVITY: u8 = 131;
    pub const ACTIVITIES: u8 = 132;
    pub const DONE: u8 = 133;
    pub const ERROR: u8 = 134;
    pub const RATE_LIMITED: u8 = 135;
    pub const NOT_LEADER: u8 = 136;
}

/// Encoded size of one [`OrderView`].
const ORDER_VIEW_BYTES: usize = 16 + 8 + 8 + 4 + 8 + 1 + 8 + 8;

/// Smallest encoded size of one [`ActivityView`] (all strings empty).
const ACTIVITY_VIEW_BYTES_MIN: usize = 7 * 8 + 3 * 4 + 3 * 2 + 1 + 1;

/// Why bytes are not a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {len} exceeds the limit of {FRAME_BYTES_MAX} bytes")]
    TooLarge { len: u64 },
    #[error("frame length {len} is shorter than kind + request id ({HEADER_BYTES} bytes)")]
    TooShort { len: u64 },
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame payload ends inside {field}")]
    Truncated { field: &'static str },
    #[error("bad value for {field}")]
    BadValue { field: &'static str },
    #[error("{count} trailing bytes after the payload")]
    TrailingBytes { count: usize },
}

// ---------------------------------------------------------------------------
// Splitting a receive buffer
// ---------------------------------------------------------------------------

/// Finds the first frame in a receive buffer.
///
/// Returns the frame body (kind + id + payload, without the length field)
/// and the number of bytes it occupies in `buf` (`4 + len`), `Ok(None)` when
/// more bytes are needed, or an error when the length field is impossible
/// (the error is reported as soon as the 4 length bytes are present).
pub fn split_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some((len_bytes, rest)) = buf.split_first_chunk::<LEN_BYTES>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(*len_bytes);
    let len = check_len(u64::from(len))?;
    match rest.get(..len) {
        Some(body) => Ok(Some((body, LEN_BYTES + len))),
        None => Ok(None),
    }
}

fn check_len(len: u64) -> Result<usize, FrameError> {
    if len < HEADER_BYTES as u64 {
        return Err(FrameError::TooShort { len });
    }
    if len > FRAME_BYTES_MAX as u64 {
        return Err(FrameError::TooLarge { len });
    }
    usize::try_from(len).map_err(|_| FrameError::TooLarge { len })
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// Appends one whole request frame (length included) to `out`.
pub fn encode_request(out: &mut Vec<u8>, request_id: u64, req: &Request) {
    let start = begin(out, request_kind(req), request_id);
    match *req {
        Request::Buy { user_id, activity_id, quantity, idempotency_key, buy_token_ok } => {
            put_u64(out, user_id);
            put_u64(out, activity_id);
            put_u32(out, quantity);
            put_u64(out, idempotency_key);
            put_bool(out, buy_token_ok);
        }
        Request::GetOrder { user_id, order_id } => {
            put_opt_u64(out, user_id);
            put_order_id(out, order_id);
        }
        Request::ListOrders { user_id, offset, limit } => {
            put_u64(out, user_id);
            put_u32(out, offset);
            put_u32(out, limit);
        }
        Request::Cancel { user_id, order_id } | Request::Refund { user_id, order_id } => {
            put_u64(out, user_id);
            put_order_id(out, order_id);
        }
        Request::Pay { order_id, amount_cents, txn } => {
            put_order_id(out, order_id);
            put_u64(out, amount_cents);
            put_u64(out, txn);
        }
        Request::Ship { order_id } | Request::Expire { order_id } => put_order_id(out, order_id),
        Request::SetQuota { activity_id, user_id, limit } => {
            put_u64(out, activity_id);
            put_u64(out, user_id);
            put_u32(out, limit);
        }
        Request::IssueBuyToken { user_id, activity_id } => {
            put_u64(out, user_id);
            put_u64(out, activity_id);
        }
        Request::GetActivity { activity_id } => put_u64(out, activity_id),
        Request::ListActivities { offset, limit } => {
            put_u32(out, offset);
            put_u32(out, limit);
        }
    }
    // Requests are fixed-size and far below the limit.
    let finished = finish(out, start);
    debug_assert!(finished);
}

/// Appends one whole response frame (length included) to `out`.
///
/// A response that cannot fit in one frame (a list too long, a string over
/// 64 KiB) is sent as `Response::Error(ErrorCode::PayloadTooLarge)` with the
/// same request id instead, so the peer gets an answer rather than a frame it
/// must reject.
pub fn encode_response(out: &mut Vec<u8>, request_id: u64, resp: &Response) {
    let start = out.len();
    if encode_response_unchecked(out, request_id, resp) {
        return;
    }
    out.truncate(start);
    let fallback = Response::Error(ErrorCode::PayloadTooLarge);
    let fitted = encode_response_unchecked(out, request_id, &fallback);
    debug_assert!(fitted);
}

/// Encodes `resp`; false (with `out` holding an oversized frame) when it
/// does not fit.
fn encode_response_unchecked(out: &mut Vec<u8>, request_id: u64, resp: &Response) -> bool {
    // Lists that cannot possibly fit are refused before encoding them.
    match resp {
        Response::Orders { items, .. } if items.len() > FRAME_BYTES_MAX / ORDER_VIEW_BYTES => {
            return false;
        }
        Response::Activities { items, .. } if items.len() > FRAME_BYTES_MAX / ACTIVITY_VIEW_BYTES_MIN => {
            return false;
        }
        _ => {}
    }
    let start = begin(out, response_kind(resp), request_id);
    match resp {
        Response::Order(view) | Response::Replayed(view) => put_order_view(out, view),
        Response::Orders { items, total } => {
            put_list(out, items, put_order_view);
            put_u64(out, *total);
        }
        Response::Activity(view) => put_activity_view(out, view),
        Response::Activities { items, total } => {
            put_list(out, items, put_activity_view);
            put_u64(out, *total);
        }
        Response::Done => {}
        Response::Error(code) => code.put(out),
        Response::RateLimited { retry_after_s } => put_u32(out, *retry_after_s),
        Response::NotLeader { leader } => put_str(out, leader),
    }
    finish(out, start)
}

fn request_kind(req: &Request) -> u8 {
    match req {
        Request::Buy { .. } => kind::BUY,
        Request::GetOrder { .. } => kind::GET_ORDER,
        Request::ListOrders { .. } => kind::LIST_ORDERS,
        Request::Cancel { .. } => kind::CANCEL,
        Request::Pay { .. } => kind::PAY,
        Request::Refund { .. } => kind::REFUND,
        Request::Ship { .. } => kind::SHIP,
        Request::Expire { .. } => kind::EXPIRE,
        Request::SetQuota { .. } => kind::SET_QUOTA,
        Request::IssueBuyToken { .. } => kind::ISSUE_BUY_TOKEN,
        Request::GetActivity { .. } => kind::GET_ACTIVITY,
        Request::ListActivities { .. } => kind::LIST_ACTIVITIES,
    }
}

fn response_kind(resp: &Response) -> u8 {
    match resp {
        Response::Order(_) => kind::ORDER,
        Response::Replayed(_) => kind::REPLAYED,
        Response::Orders { .. } => kind::ORDERS,
        Response::Activity(_) => kind::ACTIVITY,
        Response::Activities { .. } => kind::ACTIVITIES,
        Response::Done => kind::DONE,
        Response::Error(_) => kind::ERROR,
        Response::RateLimited { .. } => kind::RATE_LIMITED,
        Response::NotLeader { .. } => kind::NOT_LEADER,
    }
}

/// Writes a placeholder length, the kind and the id; returns where the frame
/// starts.
fn begin(out: &mut Vec<u8>, kind: u8, request_id: u64) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_BYTES]);
    put_u8(out, kind);
    put_u64(out, request_id);
    start
}

/// Patches the length of the frame that starts at `start`; false when the
/// frame is over [`FRAME_BYTES_MAX`] (the length is then left unpatched).
fn finish(out: &mut [u8], start: usize) -> bool {
    let len = out.len().saturating_sub(start).saturating_sub(LEN_BYTES);
    if len > FRAME_BYTES_MAX {
        return false;
    }
    let Ok(len) = u32::try_from(len) else {
        return false;
    };
    match out.get_mut(start..).and_then(|f| f.first_chunk_mut::<LEN_BYTES>()) {
        Some(slot) => {
            *slot = len.to_le_bytes();
            true
        }
        None => false,
    }
}

fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

fn put_bool(out: &mut Vec<u8>, v: bool) {
    put_u8(out, u8::from(v));
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_order_id(out: &mut Vec<u8>, id: OrderId) {
    out.extend_from_slice(&id.0.to_le_bytes());
}

fn put_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => {
            put_u8(out, 1);
            put_u64(out, v);
        }
        None => {
            put_u8(out, 0);
            put_u64(out, 0);
        }
    }
}

/// A count that does not fit in u32 makes the frame oversized anyway, so
/// saturating here is caught by [`finish`].
fn put_count(out: &mut Vec<u8>, n: usize) {
    put_u32(out, u32::try_from(n).unwrap_or(u32::MAX));
}

/// A string over u16::MAX bytes makes the frame oversized anyway, so the
/// saturated length is caught by [`finish`].
fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A count, then every item.
fn put_list<T>(out: &mut Vec<u8>, items: &[T], put: impl Fn(&mut Vec<u8>, &T)) {
    put_count(out, items.len());
    for item in items {
        put(out, item);
    }
}

/// A value's own encoding, for the views' field lists ([`wire_layout!`]).
trait Wire: Sized {
    fn put(&self, out: &mut Vec<u8>);
    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, FrameError>;
}

/// The [`Wire`] encoding of a type, by the `put_*` and `Reader` function
/// that already encode it.
macro_rules! wire_by {
    ($($ty:ty: |$out:ident, $v:ident| $put:expr, |$r:ident, $field:ident| $get:expr;)+) => {$(
        impl Wire for $ty {
            fn put(&self, $out: &mut Vec<u8>) {
                let $v = self;
                $put
            }
            fn get($r: &mut Reader<'_>, $field: &'static str) -> Result<Self, FrameError> {
                $get
            }
        }
    )+};
}

wire_by! {
    u32: |out, v| put_u32(out, *v), |r, field| r.u32(field);
    u64: |out, v| put_u64(out, *v), |r, field| r.u64(field);
    bool: |out, v| put_bool(out, *v), |r, field| r.bool(field);
    String: |out, v| put_str(out, v), |r, field| r.string(field);
    OrderId: |out, v| put_order_id(out, *v), |r, field| r.order_id(field);
    // On the wire as its name (the layout predates the enum).
    ActivityStatus: |out, v| put_str(out, v.as_str()),
        |r, field| ActivityStatus::from_name(r.str(field)?).ok_or(FrameError::BadValue { field });
    // In an activity view, its fields in its own layout (below).
    SaleTerms: |out, v| put_sale_terms(out, v), |r, _field| r.sale_terms();
}

/// The other enums travel as their number (a u8).
macro_rules! wire_as_u8 {
    ($($ty:ty),+) => {$(
        impl Wire for $ty {
            fn put(&self, out: &mut Vec<u8>) {
                put_u8(out, *self as u8);
            }
            fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, FrameError> {
                <$ty>::from_u8(r.u8(field)?).ok_or(FrameError::BadValue { field })
            }
        }
    )+};
}
wire_as_u8!(OrderStatus, Phase, ErrorCode);

/// A struct's wire layout: its fields in order, each in its [`Wire`]
/// encoding. The one list makes both the encoder `$put` and the decoder
/// `Reader::$get` (whose errors name `$prefix.field`), so the two cannot
/// disagree, and the decoder's struct literal fails to compile when a
/// field is missing from the list.
macro_rules! wire_layout {
    ($ty:ident, $put:ident, $get:ident, $prefix:literal: $($field:ident),+ $(,)?) => {
        fn $put(out: &mut Vec<u8>, v: &$ty) {
            $( Wire::put(&v.$field, out); )+
        }

        impl Reader<'_> {
            fn $get(&mut self) -> Result<$ty, FrameError> {
                Ok($ty { $( $field: Wire::get(self, concat!($prefix, ".", stringify!($field)))?, )+ })
            }
        }
    };
}

wire_layout!(OrderView, put_order_view, order_view, "order":
    order_id, user_id, activity_id, quantity, amount_cents, status, created_at_ms, pay_before_ms);

wire_layout!(ActivityView, put_activity_view, activity_view, "activity":
    id, product_id, product_name, title, price_cents, total_stock, remaining, terms, status, phase);

wire_layout!(SaleTerms, put_sale_terms, sale_terms, "activity":
    starts_at_ms, ends_at_ms, per_user_limit, payment_timeout_s, require_buy_token, gate_factor);

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// Decodes one request frame body (kind + id + payload, as returned by
/// [`split_frame`]). Allocates nothing.
pub fn decode_request(frame: &[u8]) -> Result<(u64, Request), FrameError> {
    let (kind, request_id, mut r) = header(frame)?;
    let req = match kind {
        kind::BUY => Request::Buy {
            user_id: r.u64("user_id")?,
            activity_id: r.u64("activity_id")?,
            quantity: r.u32("quantity")?,
            idempotency_key: r.u64("idempotency_key")?,
            buy_token_ok: r.bool("buy_token_ok")?,
        },
        kind::GET_ORDER => Request::GetOrder { user_id: r.opt_u64("user_id")?, order_id: r.order_id("order_id")? },
        kind::LIST_ORDERS => {
            Request::ListOrders { user_id: r.u64("user_id")?, offset: r.u32("offset")?, limit: r.u32("limit")? }
        }
        kind::CANCEL => Request::Cancel { user_id: r.u64("user_id")?, order_id: r.order_id("order_id")? },
        kind::PAY => {
            Request::Pay { order_id: r.order_id("order_id")?, amount_cents: r.u64("amount_cents")?, txn: r.u64("txn")? }
        }
        kind::REFUND => Request::Refund { user_id: r.u64("user_id")?, order_id: r.order_id("order_id")? },
        kind::SHIP => Request::Ship { order_id: r.order_id("order_id")? },
        kind::EXPIRE => Request::Expire { order_id: r.order_id("order_id")? },
        kind::SET_QUOTA => {
            Request::SetQuota { activity_id: r.u64("activity_id")?, user_id: r.u64("user_id")?, limit: r.u32("limit")? }
        }
        kind::ISSUE_BUY_TOKEN => {
            Request::IssueBuyToken { user_id: r.u64("user_id")?, activity_id: r.u64("activity_id")? }
        }
        kind::GET_ACTIVITY => Request::GetActivity { activity_id: r.u64("activity_id")? },
        kind::LIST_ACTIVITIES => Request::ListActivities { offset: r.u32("offset")?, limit: r.u32("limit")? },
        other => return Err(FrameError::UnknownKind(other)),
    };
    r.finish()?;
    Ok((request_id, req))
}

/// Decodes one response frame body (kind + id + payload, as returned by
/// [`split_frame`]). `Order`, `Replayed`, `Done` and `Error` allocate
/// nothing.
pub fn decode_response(frame: &[u8]) -> Result<(u64, Response), FrameError> {
    let (kind, request_id, mut r) = header(frame)?;
    let resp = match kind {
        kind::ORDER => Response::Order(r.order_view()?),
        kind::REPLAYED => Response::Replayed(r.order_view()?),
        kind::ORDERS => Response::Orders {
            items: r.list("orders.count", ORDER_VIEW_BYTES, Reader::order_view)?,
            total: r.u64("total")?,
        },
        kind::ACTIVITY => Response::Activity(Box::new(r.activity_view()?)),
        kind::ACTIVITIES => Response::Activities {
            items: r.list("activities.count", ACTIVITY_VIEW_BYTES_MIN, Reader::activity_view)?,
            total: r.u64("total")?,
        },
        kind::DONE => Response::Done,
        kind::ERROR => Response::Error(Wire::get(&mut r, "error_code")?),
        kind::RATE_LIMITED => Response::RateLimited { retry_after_s: r.u32("retry_after_s")? },
        kind::NOT_LEADER => Response::NotLeader { leader: r.string("leader")? },
        other => return Err(FrameError::UnknownKind(other)),
    };
    r.finish()?;
    Ok((request_id, resp))
}

fn header(frame: &[u8]) -> Result<(u8, u64, Reader<'_>), FrameError> {
    check_len(u64::try_from(frame.len()).unwrap_or(u64::MAX))?;
    let mut r = Reader { buf: frame };
    let kind = r.u8("kind")?;
    let request_id = r.u64("request_id")?;
    Ok((kind, request_id, r))
}

/// A cursor over a payload; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], FrameError> {
        let (head, rest) = self.buf.split_first_chunk::<N>().ok_or(FrameError::Truncated { field })?;
        self.buf = rest;
        Ok(*head)
    }

    fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], FrameError> {
        let head = self.buf.get(..n).ok_or(FrameError::Truncated { field })?;
        self.buf = self.buf.get(n..).ok_or(FrameError::Truncated { field })?;
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, FrameError> {
        self.array::<1>(field).map(|[b]| b)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, FrameError> {
        self.array(field).map(u16::from_le_bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, FrameError> {
        self.array(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, FrameError> {
        self.array(field).map(u64::from_le_bytes)
    }

    fn order_id(&mut self, field: &'static str) -> Result<OrderId, FrameError> {
        let id = OrderId(self.array(field).map(u128::from_le_bytes)?);
        if id.is_well_formed() {
            Ok(id)
        } else {
            Err(FrameError::BadValue { field })
        }
    }

    fn opt_u64(&mut self, field: &'static str) -> Result<Option<u64>, FrameError> {
        let tag = self.u8(field)?;
        let v = self.u64(field)?;
        match (tag, v) {
            (0, 0) => Ok(None),
            (1, v) => Ok(Some(v)),
            _ => Err(FrameError::BadValue { field }),
        }
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, FrameError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(FrameError::BadValue { field }),
        }
    }

    fn str(&mut self, field: &'static str) -> Result<&'a str, FrameError> {
        let n = usize::from(self.u16(field)?);
        let bytes = self.bytes(n, field)?;
        std::str::from_utf8(bytes).map_err(|_| FrameError::BadValue { field })
    }

    fn string(&mut self, field: &'static str) -> Result<String, FrameError> {
        self.str(field).map(str::to_owned)
    }

    /// An item count, refused unless `count * item_bytes_min` fits in what
    /// is left, so a lying count cannot make us allocate.
    fn count(&mut self, field: &'static str, item_bytes_min: usize) -> Result<usize, FrameError> {
        let n = usize::try_from(self.u32(field)?).map_err(|_| FrameError::Truncated { field })?;
        match n.checked_mul(item_bytes_min) {
            Some(need) if need <= self.buf.len() => Ok(n),
            _ => Err(FrameError::Truncated { field }),
        }
    }

    /// A count (checked as [`Self::count`]), then that many items.
    fn list<T>(
        &mut self,
        field: &'static str,
        item_bytes_min: usize,
        item: impl Fn(&mut Self) -> Result<T, FrameError>,
    ) -> Result<Vec<T>, FrameError> {
        let n = self.count(field, item_bytes_min)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(item(self)?);
        }
        Ok(items)
    }

    fn finish(self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::TrailingBytes { count: self.buf.len() })
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // -- strategies ---------------------------------------------------------

    fn well_formed(raw: u128) -> OrderId {
        let cleared = raw & !(0xfu128 << 76) & !(0b11u128 << 62);
        OrderId(cleared | (0x7u128 << 76) | (0b10u128 << 62))
    }

    fn order_id() -> impl Strategy<Value = OrderId> {
        any::<u128>().prop_map(well_formed)
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            (any::<u64>(), any::<u64>(), any::<u32>(), any::<u64>(), any::<bool>()).prop_map(
                |(user_id, activity_id, quantity, idempotency_key, buy_token_ok)| {
                    Request::Buy { user_id, activity_id, quantity, idempotency_key, buy_token_ok }
                }
            ),
            (any::<Option<u64>>(), order_id()).prop_map(|(user_id, order_id)| Request::GetOrder { user_id, order_id }),
            (any::<u64>(), any::<u32>(), any::<u32>())
                .prop_map(|(user_id, offset, limit)| { Request::ListOrders { user_id, offset, limit } }),
            (any::<u64>(), order_id()).prop_map(|(user_id, order_id)| Request::Cancel { user_id, order_id }),
            (order_id(), any::<u64>(), any::<u64>())
                .prop_map(|(order_id, amount_cents, txn)| { Request::Pay { order_id, amount_cents, txn } }),
            (any::<u64>(), order_id()).prop_map(|(user_id, order_id)| Request::Refund { user_id, order_id }),
            order_id().prop_map(|order_id| Request::Ship { order_id }),
            order_id().prop_map(|order_id| Request::Expire { order_id }),
            (any::<u64>(), any::<u64>(), any::<u32>())
                .prop_map(|(activity_id, user_id, limit)| { Request::SetQuota { activity_id, user_id, limit } }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(user_id, activity_id)| { Request::IssueBuyToken { user_id, activity_id } }),
            any::<u64>().prop_map(|activity_id| Request::GetActivity { activity_id }),
            (any::<u32>(), any::<u32>()).prop_map(|(offset, limit)| Request::ListActivities { offset, limit }),
        ]
    }

    fn order_view() -> impl Strategy<Value = OrderView> {
        (
            order_id(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
            proptest::sample::select(OrderStatus::ALL.to_vec()),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(
                |(order_id, user_id, activity_id, quantity, amount_cents, status, created_at_ms, pay_before_ms)| {
                    OrderView {
                        order_id,
                        user_id,
                        activity_id,
                        quantity,
                        amount_cents,
                        status,
                        created_at_ms,
                        pay_before_ms,
                    }
                },
            )
    }

    fn sale_terms() -> impl Strategy<Value = SaleTerms> {
        (any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>(), any::<bool>(), any::<u32>()).prop_map(
            |(starts_at_ms, ends_at_ms, per_user_limit, payment_timeout_s, require_buy_token, gate_factor)| SaleTerms {
                starts_at_ms,
                ends_at_ms,
                per_user_limit,
                payment_timeout_s,
                require_buy_token,
                gate_factor,
            },
        )
    }

    fn activity_view() -> impl Strategy<Value = ActivityView> {
        (
            (any::<u64>(), any::<u64>(), "\\PC{0,24}", "\\PC{0,40}", any::<u64>(), any::<u64>(), any::<u64>()),
            sale_terms(),
            (proptest::sample::select(ActivityStatus::ALL.to_vec()), proptest::sample::select(Phase::ALL.to_vec())),
        )
            .prop_map(
                |(
                    (id, product_id, product_name, title, price_cents, total_stock, remaining),
                    terms,
                    (status, phase),
                )| {
                    ActivityView {
                        id,
                        product_id,
                        product_name,
                        title,
                        price_cents,
                        total_stock,
                        remaining,
                        terms,
                        status,
                        phase,
                    }
                },
            )
    }

    fn response() -> impl Strategy<Value = Response> {
        prop_oneof![
            order_view().prop_map(Response::Order),
            order_view().prop_map(Response::Replayed),
            (proptest::collection::vec(order_view(), 0..24), any::<u64>())
                .prop_map(|(items, total)| Response::Orders { items, total }),
            activity_view().prop_map(|v| Response::Activity(Box::new(v))),
            (proptest::collection::vec(activity_view(), 0..8), any::<u64>())
                .prop_map(|(items, total)| Response::Activities { items, total }),
            Just(Response::Done),
            proptest::sample::select(ErrorCode::ALL.to_vec()).prop_map(Response::Error),
            any::<u32>().prop_map(|retry_after_s| Response::RateLimited { retry_after_s }),
            "\\PC{0,24}".prop_map(|leader| Response::NotLeader { leader }),
        ]
    }

    // -- fixtures -----------------------------------------------------------

    fn id(n: u128) -> OrderId {
        well_formed(n)
    }

    fn sample_order() -> OrderView {
        OrderView {
            order_id: OrderId::first_at(1_700_000_000_000, 3),
            user_id: 42,
            activity_id: 7,
            quantity: 2,
            amount_cents: 1998,
            status: OrderStatus::PendingPayment,
            created_at_ms: 1_700_000_000_000,
            pay_before_ms: 1_700_000_900_000,
        }
    }

    fn sample_activity() -> ActivityView {
        ActivityView {
            id: 7,
            product_id: 3,
            product_name: "手机 phone".into(),
            title: "flash sale".into(),
            price_cents: 999,
            total_stock: 100,
            remaining: 40,
            terms: SaleTerms {
                starts_at_ms: 1,
                ends_at_ms: 2,
                per_user_limit: 1,
                payment_timeout_s: 900,
                require_buy_token: true,
                gate_factor: 3,
            },
            status: ActivityStatus::Active,
            phase: Phase::Ongoing,
        }
    }

    fn all_requests() -> Vec<Request> {
        vec![
            Request::Buy { user_id: 1, activity_id: 2, quantity: 3, idempotency_key: 0, buy_token_ok: false },
            Request::Buy {
                user_id: 1,
                activity_id: 2,
                quantity: 1,
                idempotency_key: 0xdead_beef_cafe_f00d,
                buy_token_ok: true,
            },
            Request::GetOrder { user_id: None, order_id: id(1) },
            Request::GetOrder { user_id: Some(9), order_id: id(2) },
            Request::ListOrders { user_id: 1, offset: 5, limit: 100 },
            Request::Cancel { user_id: 1, order_id: id(3) },
            Request::Pay { order_id: id(4), amount_cents: 1998, txn: 0x0123_4567_89ab_cdef },
            Request::Refund { user_id: 1, order_id: id(5) },
            Request::Ship { order_id: id(6) },
            Request::Expire { order_id: id(7) },
            Request::SetQuota { activity_id: 7, user_id: 1, limit: 4 },
            Request::IssueBuyToken { user_id: 1, activity_id: 7 },
            Request::GetActivity { activity_id: 7 },
            Request::ListActivities { offset: 0, limit: 20 },
        ]
    }

    fn all_responses() -> Vec<Response> {
        vec![
            Response::Order(sample_order()),
            Response::Replayed(OrderView { status: OrderStatus::Paid, ..sample_order() }),
            Response::Orders { items: vec![], total: 0 },
            Response::Orders { items: vec![sample_order(); 3], total: 10 },
            Response::Activity(Box::new(sample_activity())),
            Response::Activities { items: vec![], total: 0 },
            Response::Activities { items: vec![sample_activity(); 2], total: 2 },
            Response::Done,
            Response::Error(ErrorCode::SoldOut),
            Response::NotLeader { leader: String::new() },
            Response::NotLeader { leader: "tcp:10.0.0.2:7000".into() },
        ]
    }

    /// Requests and responses alike, so that each check is written once.
    trait Message: Sized + PartialEq + std::fmt::Debug {
        fn encode(&self, out: &mut Vec<u8>, request_id: u64);
        fn decode(body: &[u8]) -> Result<(u64, Self), FrameError>;
    }

    impl Message for Request {
        fn encode(&self, out: &mut Vec<u8>, request_id: u64) {
            encode_request(out, request_id, self)
        }
        fn decode(body: &[u8]) -> Result<(u64, Self), FrameError> {
            decode_request(body)
        }
    }

    impl Message for Response {
        fn encode(&self, out: &mut Vec<u8>, request_id: u64) {
            encode_response(out, request_id, self)
        }
        fn decode(body: &[u8]) -> Result<(u64, Self), FrameError> {
            decode_response(body)
        }
    }

    /// One encoded frame, checked to split as a whole; returns its body.
    fn encoded<M: Message>(request_id: u64, m: &M) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode(&mut out, request_id);
        let (body, used) = split_frame(&out).unwrap().unwrap();
        assert_eq!(used, out.len());
        body.to_vec()
    }

    fn encoded_request(request_id: u64, req: &Request) -> Vec<u8> {
        encoded(request_id, req)
    }

    fn encoded_response(request_id: u64, resp: &Response) -> Vec<u8> {
        encoded(request_id, resp)
    }

    /// Feeds `stream` to a receive buffer in the chunks given by `cuts` and
    /// returns the frame bodies in order.
    fn receive(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain(std::iter::once(&stream.len())) {
            buf.extend_from_slice(&stream[from..to]);
            from = to;
            while let Some((body, used)) = split_frame(&buf).unwrap() {
                frames.push(body.to_vec());
                buf.drain(..used);
            }
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        frames
    }

    // -- layout -------------------------------------------------------------

    #[test]
    fn buy_layout_is_as_documented() {
        let mut out = Vec::new();
        encode_request(
            &mut out,
            0x0102,
            &Request::Buy { user_id: 5, activity_id: 6, quantity: 7, idempotency_key: 8, buy_token_ok: true },
        );
        let mut want = Vec::new();
        want.extend_from_slice(&38u32.to_le_bytes());
        want.push(kind::BUY);
        want.extend_from_slice(&0x0102u64.to_le_bytes());
        want.extend_from_slice(&5u64.to_le_bytes());
        want.extend_from_slice(&6u64.to_le_bytes());
        want.extend_from_slice(&7u32.to_le_bytes());
        want.extend_from_slice(&8u64.to_le_bytes());
        want.push(1);
        assert_eq!(out, want);
    }

    /// API.md's kind 131, written out field by field: the view's wire
    /// layout, whatever struct holds its fields (`SaleTerms`).
    #[test]
    fn activity_layout_is_as_documented() {
        let a = sample_activity();
        let mut out = Vec::new();
        encode_response(&mut out, 9, &Response::Activity(Box::new(a.clone())));
        let mut want = vec![kind::ACTIVITY];
        want.extend_from_slice(&9u64.to_le_bytes());
        let t = a.terms;
        want.extend_from_slice(&a.id.to_le_bytes());
        want.extend_from_slice(&a.product_id.to_le_bytes());
        for s in [&a.product_name, &a.title] {
            want.extend_from_slice(&(s.len() as u16).to_le_bytes());
            want.extend_from_slice(s.as_bytes());
        }
        for n in [a.price_cents, a.total_stock, a.remaining, t.starts_at_ms, t.ends_at_ms] {
            want.extend_from_slice(&n.to_le_bytes());
        }
        want.extend_from_slice(&t.per_user_limit.to_le_bytes());
        want.extend_from_slice(&t.payment_timeout_s.to_le_bytes());
        want.push(u8::from(t.require_buy_token));
        want.extend_from_slice(&t.gate_factor.to_le_bytes());
        want.extend_from_slice(&6u16.to_le_bytes());
        want.extend_from_slice(b"active");
        want.push(2);
        assert_eq!(out[..LEN_BYTES], (want.len() as u32).to_le_bytes());
        assert_eq!(out[LEN_BYTES..], want[..]);
    }

    #[test]
    fn kinds_follow_declaration_order() {
        let kinds: Vec<u8> = all_requests().iter().map(request_kind).collect();
        assert_eq!(kinds, [1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let kinds: Vec<u8> = all_responses().iter().map(response_kind).collect();
        assert_eq!(kinds, [128, 129, 130, 130, 131, 132, 132, 133, 134, 136, 136]);
    }

    #[test]
    fn not_leader_layout_is_as_documented() {
        let mut out = Vec::new();
        encode_response(&mut out, 9, &Response::NotLeader { leader: "tcp:1.2.3.4:5".into() });
        let mut want = Vec::new();
        want.extend_from_slice(&(1u32 + 8 + 2 + 13).to_le_bytes());
        want.push(kind::NOT_LEADER);
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(&13u16.to_le_bytes());
        want.extend_from_slice(b"tcp:1.2.3.4:5");
        assert_eq!(out, want);
    }

    #[test]
    fn item_size_constants_match_the_encoder() {
        let mut out = Vec::new();
        put_order_view(&mut out, &sample_order());
        assert_eq!(out.len(), ORDER_VIEW_BYTES);
        out.clear();
        let empty = ActivityView { product_name: String::new(), title: String::new(), ..sample_activity() };
        put_activity_view(&mut out, &empty);
        // The minimum counts the status as an empty string: a lower bound.
        assert_eq!(out.len(), ACTIVITY_VIEW_BYTES_MIN + empty.status.as_str().len());
    }

    #[test]
    fn every_fixture_round_trips() {
        for (i, req) in all_requests().iter().enumerate() {
            let body = encoded_request(i as u64, req);
            assert_eq!(decode_request(&body), Ok((i as u64, req.clone())));
            assert!(decode_response(&body).is_err());
        }
        for (i, resp) in all_responses().iter().enumerate() {
            let body = encoded_response(u64::MAX - i as u64, resp);
            assert_eq!(decode_response(&body), Ok((u64::MAX - i as u64, resp.clone())));
            assert!(decode_request(&body).is_err());
        }
    }

    #[test]
    fn encoding_appends_to_the_buffer() {
        let mut out = b"prefix".to_vec();
        encode_request(&mut out, 1, &Request::Ship { order_id: id(1) });
        encode_response(&mut out, 2, &Response::Done);
        assert_eq!(&out[..6], b"prefix");
        let (body, used) = split_frame(&out[6..]).unwrap().unwrap();
        assert_eq!(decode_request(body), Ok((1, Request::Ship { order_id: id(1) })));
        let (body, _) = split_frame(&out[6 + used..]).unwrap().unwrap();
        assert_eq!(decode_response(body), Ok((2, Response::Done)));
    }

    // -- split_frame --------------------------------------------------------

    #[test]
    fn split_frame_rejects_impossible_lengths() {
        assert_eq!(split_frame(&[]), Ok(None));
        assert_eq!(split_frame(&[9, 0, 0]), Ok(None));
        for len in 0..HEADER_BYTES as u32 {
            assert_eq!(split_frame(&len.to_le_bytes()), Err(FrameError::TooShort { len: len.into() }));
        }
        let over = FRAME_BYTES_MAX as u32 + 1;
        assert_eq!(split_frame(&over.to_le_bytes()), Err(FrameError::TooLarge { len: over.into() }));
        assert_eq!(split_frame(&u32::MAX.to_le_bytes()), Err(FrameError::TooLarge { len: u32::MAX.into() }));
        // The largest legal frame is only incomplete until all of it is there.
        let mut buf = (FRAME_BYTES_MAX as u32).to_le_bytes().to_vec();
        buf.resize(LEN_BYTES + FRAME_BYTES_MAX - 1, 0);
        assert_eq!(split_frame(&buf), Ok(None));
        buf.push(0);
        buf.push(0xAA); // the start of the next frame
        let (body, used) = split_frame(&buf).unwrap().unwrap();
        assert_eq!((body.len(), used), (FRAME_BYTES_MAX, LEN_BYTES + FRAME_BYTES_MAX));
    }

    #[test]
    fn a_stream_cut_at_every_byte_reassembles() {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for (i, req) in all_requests().iter().enumerate() {
            encode_request(&mut stream, i as u64, req);
            want.push(i as u64);
        }
        let frames = receive(&stream, &[]);
        assert_eq!(frames.len(), want.len());
        for cut in 0..=stream.len() {
            let frames = receive(&stream, &[cut]);
            let got: Vec<(u64, Request)> = frames.iter().map(|f| decode_request(f).unwrap()).collect();
            let expect: Vec<(u64, Request)> =
                all_requests().into_iter().enumerate().map(|(i, r)| (i as u64, r)).collect();
            assert_eq!(got, expect, "cut at {cut}");
        }
        // One byte at a time.
        let cuts: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(receive(&stream, &cuts), frames);

        let mut stream = Vec::new();
        for (i, resp) in all_responses().iter().enumerate() {
            encode_response(&mut stream, i as u64, resp);
        }
        for cut in 0..=stream.len() {
            let got: Vec<Response> = receive(&stream, &[cut]).iter().map(|f| decode_response(f).unwrap().1).collect();
            assert_eq!(got, all_responses(), "cut at {cut}");
        }
    }

    // -- malformed frames ---------------------------------------------------

    #[test]
    fn malformed_frames_are_errors() {
        let good = encoded_request(1, &Request::Ship { order_id: id(1) });
        // Truncated payload.
        assert_eq!(decode_request(&good[..good.len() - 1]), Err(FrameError::Truncated { field: "order_id" }));
        // Trailing bytes.
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode_request(&long), Err(FrameError::TrailingBytes { count: 1 }));
        // Unknown kinds, in both directions.
        let mut bad = good.clone();
        bad[0] = 0;
        assert_eq!(decode_request(&bad), Err(FrameError::UnknownKind(0)));
        bad[0] = kind::ORDER;
        assert_eq!(decode_request(&bad), Err(FrameError::UnknownKind(kind::ORDER)));
        assert_eq!(decode_response(&good), Err(FrameError::UnknownKind(kind::SHIP)));
        // Not one of our ids.
        let mut bad = good.clone();
        bad[HEADER_BYTES..].copy_from_slice(&0u128.to_le_bytes());
        assert_eq!(decode_request(&bad), Err(FrameError::BadValue { field: "order_id" }));
        // Too short / too long as a body.
        assert_eq!(decode_request(&good[..8]), Err(FrameError::TooShort { len: 8 }));
        assert_eq!(
            decode_response(&vec![kind::DONE; FRAME_BYTES_MAX + 1]),
            Err(FrameError::TooLarge { len: FRAME_BYTES_MAX as u64 + 1 })
        );
    }

    #[test]
    fn bad_enum_option_and_bool_values_are_errors() {
        // Option tag other than 0/1, and tag 0 with a value.
        let mut body = encoded_request(1, &Request::GetOrder { user_id: None, order_id: id(1) });
        body[HEADER_BYTES] = 2;
        assert_eq!(decode_request(&body), Err(FrameError::BadValue { field: "user_id" }));
        body[HEADER_BYTES] = 0;
        body[HEADER_BYTES + 1] = 1;
        assert_eq!(decode_request(&body), Err(FrameError::BadValue { field: "user_id" }));

        // A bool other than 0/1.
        let mut body = encoded_request(
            1,
            &Request::Buy { user_id: 1, activity_id: 2, quantity: 1, idempotency_key: 3, buy_token_ok: true },
        );
        let token_ok_at = body.len() - 1;
        assert_eq!(body[token_ok_at], 1);
        for b in [2u8, 0x80, 255] {
            body[token_ok_at] = b;
            assert_eq!(decode_request(&body), Err(FrameError::BadValue { field: "buy_token_ok" }));
        }

        let mut body = encoded_response(1, &Response::Error(ErrorCode::Busy));
        for code in [0u8, 20, 255] {
            body[HEADER_BYTES] = code;
            assert_eq!(decode_response(&body), Err(FrameError::BadValue { field: "error_code" }));
        }

        for resp in [Response::Order(sample_order()), Response::Replayed(sample_order())] {
            let mut body = encoded_response(1, &resp);
            let status_at = HEADER_BYTES + 16 + 8 + 8 + 4 + 8;
            assert_eq!(body[status_at], OrderStatus::PendingPayment as u8);
            body[status_at] = 7;
            assert_eq!(decode_response(&body), Err(FrameError::BadValue { field: "order.status" }));
        }

        let activity = ActivityView { product_name: String::new(), title: String::new(), ..sample_activity() };
        let status_len = activity.status.as_str().len();
        let body = encoded_response(1, &Response::Activity(Box::new(activity)));
        let phase_at = body.len() - 1;
        let status_at = phase_at - status_len;
        let token_at = phase_at - status_len - 2 - 4 - 1;
        let mut bad = body.clone();
        bad[status_at] = b'x';
        assert_eq!(decode_response(&bad), Err(FrameError::BadValue { field: "activity.status" }));
        let mut bad = body.clone();
        bad[phase_at] = 0;
        assert_eq!(decode_response(&bad), Err(FrameError::BadValue { field: "activity.phase" }));
        let mut bad = body.clone();
        bad[token_at] = 2;
        assert_eq!(decode_response(&bad), Err(FrameError::BadValue { field: "activity.require_buy_token" }));
        // Invalid UTF-8 in a string.
        let mut bad = body.clone();
        let name_at = HEADER_BYTES + 16;
        bad.splice(name_at..name_at + 2, [1, 0, 0xff]);
        assert_eq!(decode_response(&bad), Err(FrameError::BadValue { field: "activity.product_name" }));
    }

    #[test]
    fn lying_counts_are_refused_before_allocating() {
        for (k, field) in [(kind::ORDERS, "orders.count"), (kind::ACTIVITIES, "activities.count")] {
            let mut body = vec![k];
            body.extend_from_slice(&1u64.to_le_bytes());
            body.extend_from_slice(&u32::MAX.to_le_bytes());
            body.extend_from_slice(&[0; 64]);
            assert_eq!(decode_response(&body), Err(FrameError::Truncated { field }));
        }
        // A count that fits the bytes but whose items are short strings of
        // garbage still fails cleanly.
        let mut body = vec![kind::ACTIVITIES];
        body.extend_from_slice(&1u64.to_le_bytes());
        body.extend_from_slice(&2u32.to_le_bytes());
        body.extend_from_slice(&[0xff; 2 * ACTIVITY_VIEW_BYTES_MIN + 8]);
        assert!(decode_response(&body).is_err());
    }

    #[test]
    fn oversized_responses_become_payload_too_large() {
        let big = ActivityView { title: "x".repeat(4000), ..sample_activity() };
        let resp = Response::Activities { items: vec![big; 20], total: 20 };
        let mut out = b"keep".to_vec();
        encode_response(&mut out, 77, &resp);
        assert_eq!(&out[..4], b"keep");
        let (body, used) = split_frame(&out[4..]).unwrap().unwrap();
        assert_eq!(used, out.len() - 4);
        assert_eq!(decode_response(body), Ok((77, Response::Error(ErrorCode::PayloadTooLarge))));

        let huge = ActivityView { product_name: "y".repeat(70_000), ..sample_activity() };
        let body = encoded_response(78, &Response::Activity(Box::new(huge)));
        assert_eq!(decode_response(&body), Ok((78, Response::Error(ErrorCode::PayloadTooLarge))));

        let many = Response::Orders { items: vec![sample_order(); 2000], total: 2000 };
        let body = encoded_response(79, &many);
        assert_eq!(decode_response(&body), Ok((79, Response::Error(ErrorCode::PayloadTooLarge))));

        // The largest list that fits is sent as is.
        let n = (FRAME_BYTES_MAX - HEADER_BYTES - 4 - 8) / ORDER_VIEW_BYTES;
        let fits = Response::Orders { items: vec![sample_order(); n], total: 1 };
        let body = encoded_response(80, &fits);
        assert_eq!(decode_response(&body), Ok((80, fits)));
    }

    // -- allocation -----------------------------------------------------------

    // A counting allocator is the one way to see allocations from a test.
    #[allow(unsafe_code)]
    mod alloc_count {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        /// Counts allocations made by the current thread.
        pub struct Counting;

        thread_local! {
            static COUNT: Cell<u64> = const { Cell::new(0) };
        }

        // SAFETY: every method forwards to `System` with the caller's
        // arguments unchanged, so `System`'s guarantees are ours; counting
        // touches only a thread-local `Cell` (`try_with`: never during TLS teardown).
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                let _ = COUNT.try_with(|c| c.set(c.get() + 1));
                // SAFETY: the caller's contract for `alloc`, passed on.
                unsafe { System.alloc(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                // SAFETY: `ptr` came from `System` (every allocation here does), with `layout`.
                unsafe { System.dealloc(ptr, layout) }
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                let _ = COUNT.try_with(|c| c.set(c.get() + 1));
                // SAFETY: as `dealloc`; `new_size` is the caller's, checked by its contract.
                unsafe { System.realloc(ptr, layout, new_size) }
            }
        }

        #[global_allocator]
        static GLOBAL: Counting = Counting;

        pub fn allocations() -> u64 {
            COUNT.with(|c| c.get())
        }
    }

    #[test]
    fn buy_and_order_paths_do_not_allocate() {
        let buy = Request::Buy { user_id: 1, activity_id: 2, quantity: 1, idempotency_key: 0xfeed, buy_token_ok: true };
        let order = Response::Order(sample_order());
        let replayed = Response::Replayed(sample_order());
        let mut out = Vec::with_capacity(1024);
        let before = alloc_count::allocations();
        for i in 0..100 {
            out.clear();
            encode_request(&mut out, i, &buy);
            encode_response(&mut out, i, &order);
            encode_response(&mut out, i, &replayed);
            encode_response(&mut out, i, &Response::Error(ErrorCode::SoldOut));
            let (body, used) = split_frame(&out).unwrap().unwrap();
            assert_eq!(decode_request(body).unwrap().1, buy);
            let rest = &out[used..];
            let (body, used) = split_frame(rest).unwrap().unwrap();
            assert!(matches!(decode_response(body), Ok((_, Response::Order(_)))));
            let rest = &rest[used..];
            let (body, used) = split_frame(rest).unwrap().unwrap();
            assert!(matches!(decode_response(body), Ok((_, Response::Replayed(_)))));
            let (body, _) = split_frame(&rest[used..]).unwrap().unwrap();
            assert!(matches!(decode_response(body), Ok((_, Response::Error(ErrorCode::SoldOut)))));
        }
        assert_eq!(alloc_count::allocations() - before, 0);
    }

    // -- properties -----------------------------------------------------------

    /// A decoded frame re-encodes to exactly the same bytes.
    fn assert_canonical<M: Message>(body: &[u8]) {
        if let Ok((request_id, m)) = M::decode(body) {
            assert_eq!(encoded(request_id, &m), body);
        }
    }

    fn assert_canonical_request(body: &[u8]) {
        assert_canonical::<Request>(body)
    }

    fn assert_canonical_response(body: &[u8]) {
        assert_canonical::<Response>(body)
    }

    /// `msgs` encoded as one stream (tagged 0, 1, …), received in chunks
    /// cut where `cuts` point in it, decode to `msgs` again.
    fn survives_cuts<M: Message>(msgs: &[M], cuts: &[prop::sample::Index]) -> Result<(), TestCaseError> {
        let mut stream = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            m.encode(&mut stream, i as u64);
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        let got: Vec<M> = receive(&stream, &cuts).iter().map(|f| M::decode(f).unwrap().1).collect();
        prop_assert_eq!(got, msgs);
        Ok(())
    }

    /// `m`'s frame with byte `at` set to `byte` splits, decodes (as `M` and
    /// as the other kind `O`) and re-encodes without a panic.
    fn mutated_never_panics<M: Message, O: Message>(m: &M, at: prop::sample::Index, byte: u8) {
        let mut frame = Vec::new();
        m.encode(&mut frame, 3);
        let at = at.index(frame.len());
        frame[at] = byte;
        if let Ok(Some((body, _))) = split_frame(&frame) {
            assert_canonical::<M>(body);
            let _ = O::decode(body);
        }
        assert_canonical::<M>(&frame[LEN_BYTES..]);
    }

    proptest! {
        #[test]
        fn requests_round_trip(request_id in any::<u64>(), req in request()) {
            let body = encoded_request(request_id, &req);
            prop_assert_eq!(decode_request(&body), Ok((request_id, req)));
        }

        #[test]
        fn responses_round_trip(request_id in any::<u64>(), resp in response()) {
            let body = encoded_response(request_id, &resp);
            prop_assert_eq!(decode_response(&body), Ok((request_id, resp)));
        }

        #[test]
        fn streams_split_at_any_cuts(
            reqs in proptest::collection::vec(request(), 1..8),
            resps in proptest::collection::vec(response(), 1..4),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            survives_cuts(&reqs, &cuts)?;
            survives_cuts(&resps, &cuts)?;
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(Some((body, used))) = split_frame(&bytes) {
                prop_assert!(used <= bytes.len());
                prop_assert_eq!(body.len() + LEN_BYTES, used);
            }
            assert_canonical_request(&bytes);
            assert_canonical_response(&bytes);
        }

        #[test]
        fn arbitrary_payloads_behind_a_valid_header_never_panic(
            kind in prop_oneof![1u8..=12, 128u8..=134, any::<u8>()],
            payload in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut body = vec![kind];
            body.extend_from_slice(&7u64.to_le_bytes());
            body.extend_from_slice(&payload);
            assert_canonical_request(&body);
            assert_canonical_response(&body);
        }

        #[test]
        fn mutated_frames_never_panic(
            req in request(),
            resp in response(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            mutated_never_panics::<Request, Response>(&req, at, byte);
            mutated_never_panics::<Response, Request>(&resp, at, byte);
        }
    }
}
