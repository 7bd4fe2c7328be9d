//! Payment provider callbacks: HMAC-SHA256 signatures over the raw body.

use hmac::{Hmac, Mac};
use seckill_proto::OrderId;
use serde::Deserialize;
use sha2::Sha256;

/// `X-Seckill-Signature: sha256=<hex>` over the exact body bytes. The
/// comparison is constant-time (`verify_slice`).
pub fn signature_ok(secret: &[u8], body: &[u8], header: Option<&[u8]>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.strip_prefix(b"sha256=")) else { return false };
    let Ok(sig) = hex::decode(hex_sig) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return false };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The signature header value for `body` (for providers, tests and tools).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(e) => panic!("HMAC takes keys of any length: {e}"),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
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

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let body = br#"{"order_id":"x"}"#;
        let sig = sign(b"k", body);
        assert!(signature_ok(b"k", body, Some(sig.as_bytes())));
        assert!(!signature_ok(b"other", body, Some(sig.as_bytes())));
        assert!(!signature_ok(b"k", b"{}", Some(sig.as_bytes())));
        assert!(!signature_ok(b"k", body, None));
        assert!(!signature_ok(b"k", body, Some(b"sha256=zz")));
        assert!(!signature_ok(b"k", body, Some(&sig.as_bytes()[7..])));
    }
}
