//! The wire handshake: a connection to the engine proves, before its first
//! frame, that its peer holds the deployment's secret. The engine sends
//! `HELLO_MAGIC` and a random nonce; the client answers
//! HMAC-SHA256(wire key, "client" || nonce). The wire key is derived from
//! `SECKILL_AUTH_SECRET`, which every front already holds, so a deployment
//! has nothing new to configure. No I/O here: the servers and clients do it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const HELLO_MAGIC: &[u8; 8] = b"SKWIRE1\0";
pub const NONCE_BYTES: usize = 32;
/// What the engine sends first: magic, then the nonce.
pub const HELLO_BYTES: usize = HELLO_MAGIC.len() + NONCE_BYTES;
/// What the client answers.
pub const PROOF_BYTES: usize = 32;

/// The key both ends derive from the auth secret.
#[derive(Clone)]
pub struct WireKey(Hmac<Sha256>);

impl WireKey {
    pub fn derive(auth_secret: &[u8]) -> WireKey {
        let mut mac = hmac_of(auth_secret);
        mac.update(b"seckill engine wire key v1");
        WireKey(hmac_of(&mac.finalize().into_bytes()))
    }

    /// The engine's opening bytes for `nonce`.
    pub fn hello(nonce: &[u8; NONCE_BYTES]) -> [u8; HELLO_BYTES] {
        let mut out = [0u8; HELLO_BYTES];
        out[..HELLO_MAGIC.len()].copy_from_slice(HELLO_MAGIC);
        out[HELLO_MAGIC.len()..].copy_from_slice(nonce);
        out
    }

    /// The client's answer to the engine's `hello`, or `None` when those
    /// bytes are not a hello (not a seckill engine, or another version).
    pub fn proof(&self, hello: &[u8]) -> Option<[u8; PROOF_BYTES]> {
        let nonce = hello.strip_prefix(HELLO_MAGIC.as_slice()).filter(|n| n.len() == NONCE_BYTES)?;
        let mut mac = self.0.clone();
        mac.update(b"client");
        mac.update(nonce);
        Some(mac.finalize().into_bytes().into())
    }

    /// Whether `proof` answers `nonce` (constant-time comparison).
    pub fn verify(&self, nonce: &[u8; NONCE_BYTES], proof: &[u8]) -> bool {
        let mut mac = self.0.clone();
        mac.update(b"client");
        mac.update(nonce);
        mac.verify_slice(proof).is_ok()
    }
}

fn hmac_of(key: &[u8]) -> Hmac<Sha256> {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length.
        Err(e) => unreachable!("HMAC refused a key: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_right_key_passes_and_others_do_not() {
        let key = WireKey::derive(b"0123456789abcdef0123456789abcdef");
        let nonce = [7u8; NONCE_BYTES];
        let hello = WireKey::hello(&nonce);
        let proof = key.proof(&hello).expect("a hello");
        assert!(key.verify(&nonce, &proof));
        assert!(!key.verify(&[8u8; NONCE_BYTES], &proof), "a proof answers one nonce only");
        let other = WireKey::derive(b"0123456789abcdef0123456789abcdeF");
        assert!(!key.verify(&nonce, &other.proof(&hello).expect("a hello")));
        assert!(!key.verify(&nonce, &proof[..31]));
        assert_eq!(key.proof(b"SKWIRE2\0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), None);
        assert_eq!(key.proof(&hello[..HELLO_BYTES - 1]), None);
    }
}
