//! Payment provider callbacks: HMAC-SHA256 signatures over a timestamp and
//! the raw body, Stripe style.
//!
//! `X-Seckill-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`.
//! The timestamp is signed with the body, so a captured callback can be
//! replayed for at most `SKEW_MAX_S` around its time; several `v1=` values
//! may be sent (a provider rotating its secret), one matching is enough.
//! Nothing else is accepted: the old `sha256=<hex>` form is refused.

use hmac::{Hmac, Mac};
use seckill_proto::OrderId;
use serde::Deserialize;
use sha2::Sha256;

/// How far the signed time may be from ours, either way (Stripe's default).
pub const SKEW_MAX_S: u64 = 300;
/// Longest signature header read.
pub const HEADER_BYTES_MAX: usize = 1024;
/// Most `v1=` values one header may carry.
pub const SIGNATURES_MAX: usize = 4;

/// Why a signature header was refused (for the 401 message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    Missing,
    Malformed,
    /// The signed time is more than `SKEW_MAX_S` from now.
    Stale,
    Mismatch,
}

impl SignatureError {
    pub fn message(self) -> &'static str {
        match self {
            SignatureError::Missing => "X-Seckill-Signature is missing",
            SignatureError::Malformed => "X-Seckill-Signature must be t=<unix seconds>,v1=<hex HMAC-SHA256>",
            SignatureError::Stale => "X-Seckill-Signature's t= is more than 300 s from now",
            SignatureError::Mismatch => "X-Seckill-Signature does not match the body",
        }
    }
}

fn mac_of(secret: &[u8], t: u64, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// Checks `header` against `body` at `now_s` (unix seconds). Comparisons
/// are constant-time (`verify_slice`).
pub fn verify(secret: &[u8], body: &[u8], header: Option<&[u8]>, now_s: u64) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if header.len() > HEADER_BYTES_MAX {
        return Err(SignatureError::Malformed);
    }
    let header = std::str::from_utf8(header).map_err(|_| SignatureError::Malformed)?;
    let mut t: Option<u64> = None;
    let mut sigs: [Option<&str>; SIGNATURES_MAX] = [None; SIGNATURES_MAX];
    let mut n = 0;
    for part in header.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(SignatureError::Malformed)?;
        match k {
            "t" if t.is_none() => {
                // Digits only: no sign, no spaces, at most 12 of them.
                if v.is_empty() || v.len() > 12 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(SignatureError::Malformed);
                }
                t = Some(v.parse().map_err(|_| SignatureError::Malformed)?);
            }
            "v1" => {
                let slot = sigs.get_mut(n).ok_or(SignatureError::Malformed)?;
                *slot = Some(v);
                n += 1;
            }
            // Other schemes (a future v2) are skipped, as Stripe does.
            "t" => return Err(SignatureError::Malformed),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if n == 0 {
        return Err(SignatureError::Malformed);
    }
    if t.abs_diff(now_s) > SKEW_MAX_S {
        return Err(SignatureError::Stale);
    }
    let mac = mac_of(secret, t, body).ok_or(SignatureError::Mismatch)?;
    for sig in sigs.iter().flatten() {
        let Ok(sig) = hex::decode(sig) else { continue };
        if mac.clone().verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// `verify` at the current time: true when the header is good.
pub fn signature_ok(secret: &[u8], body: &[u8], header: Option<&[u8]>) -> bool {
    verify(secret, body, header, now_s()).is_ok()
}

pub fn now_s() -> u64 {
    crate::now_ms() / 1000
}

/// The hex HMAC-SHA256 of `data` under `secret` (also what JWT tests sign with).
pub fn hmac_hex(secret: &[u8], data: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(e) => panic!("HMAC takes keys of any length: {e}"),
    };
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// The signature header value for `body` signed at `t` (unix seconds).
pub fn sign_at(secret: &[u8], t: u64, body: &[u8]) -> String {
    let mut signed = Vec::with_capacity(body.len() + 21);
    signed.extend_from_slice(t.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    format!("t={t},v1={}", hmac_hex(secret, &signed))
}

/// The signature header value for `body`, signed now (for providers, tests and tools).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    sign_at(secret, now_s(), body)
}

#[derive(Debug, PartialEq)]
pub struct Notify {
    pub order_id: OrderId,
    pub amount_cents: u64,
    pub provider_txn_id: String,
}

pub fn parse_notify(bytes: &[u8]) -> Result<Notify, &'static str> {
    #[derive(Deserialize)]
    struct Raw {
        order_id: String,
        amount_cents: u64,
        provider_txn_id: String,
    }
    let r: Raw = serde_json::from_slice(bytes)
        .map_err(|_| "body must be {\"order_id\",\"amount_cents\",\"provider_txn_id\"}")?;
    let order_id = r.order_id.parse().map_err(|_| "order_id is not an order id")?;
    if r.provider_txn_id.is_empty() || r.provider_txn_id.len() > 128 {
        return Err("provider_txn_id must be 1..=128 bytes");
    }
    Ok(Notify { order_id, amount_cents: r.amount_cents, provider_txn_id: r.provider_txn_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_760_000_000;

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let body = br#"{"order_id":"x"}"#;
        let sig = sign_at(b"k", NOW, body);
        assert!(sig.starts_with(&format!("t={NOW},v1=")), "{sig}");
        assert_eq!(verify(b"k", body, Some(sig.as_bytes()), NOW), Ok(()));
        assert_eq!(verify(b"other", body, Some(sig.as_bytes()), NOW), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"k", b"{}", Some(sig.as_bytes()), NOW), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"k", body, None, NOW), Err(SignatureError::Missing));
        assert!(verify(b"k", body, Some(b"t=1,v1=zz"), 1).is_err());
        // The time is signed: moving it breaks the signature.
        let moved = sig.replacen(&NOW.to_string(), &(NOW + 1).to_string(), 1);
        assert_eq!(verify(b"k", body, Some(moved.as_bytes()), NOW), Err(SignatureError::Mismatch));
    }

    #[test]
    fn old_and_odd_formats_are_refused() {
        let body = b"{}";
        let v1 = sign_at(b"k", NOW, body);
        let hex = v1.split_once(",v1=").map(|(_, h)| h.to_string()).unwrap_or_default();
        for bad in [
            format!("sha256={hex}"),
            hex.clone(),
            format!("v1={hex}"),
            format!("t={NOW}"),
            format!("t=-{NOW},v1={hex}"),
            format!("t=+{NOW},v1={hex}"),
            format!("t={NOW},t={NOW},v1={hex}"),
            format!("t={NOW},v1={hex},v1={hex},v1={hex},v1={hex},v1={hex}"),
            format!("t=99999999999999999999,v1={hex}"),
        ] {
            assert!(verify(b"k", body, Some(bad.as_bytes()), NOW).is_err(), "{bad}");
        }
        // Rotation: a second v1 that matches is enough; spaces are allowed.
        let two = format!("t={NOW}, v1={}, v1={hex}", "ab".repeat(32));
        assert_eq!(verify(b"k", body, Some(two.as_bytes()), NOW), Ok(()));
    }

    #[test]
    fn skew_over_five_minutes_is_refused_either_way() {
        let body = b"{}";
        let sig = sign_at(b"k", NOW, body);
        assert_eq!(verify(b"k", body, Some(sig.as_bytes()), NOW + SKEW_MAX_S), Ok(()));
        assert_eq!(verify(b"k", body, Some(sig.as_bytes()), NOW - SKEW_MAX_S), Ok(()));
        assert_eq!(verify(b"k", body, Some(sig.as_bytes()), NOW + SKEW_MAX_S + 1), Err(SignatureError::Stale));
        assert_eq!(verify(b"k", body, Some(sig.as_bytes()), NOW - SKEW_MAX_S - 1), Err(SignatureError::Stale));
    }
}
