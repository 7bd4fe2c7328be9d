//! Bearer JWTs (HS256 only), `sub` = decimal user id, `exp` required.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// Checks and issues tokens with one secret.
pub struct Auth {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl Auth {
    /// `secret` is used as raw bytes (DESIGN.md: the UTF-8 bytes of SECKILL_AUTH_SECRET).
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Only HS256: `none` and every other algorithm are refused.
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        Self { decoding: DecodingKey::from_secret(secret), encoding: EncodingKey::from_secret(secret), validation }
    }

    /// The user id of a valid `Authorization` header value, if it is one.
    pub fn user_of(&self, header: Option<&[u8]>) -> Option<u64> {
        let value = std::str::from_utf8(header?).ok()?;
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = token.trim();
        if token.len() > 4096 {
            return None;
        }
        let data = decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        let user = data.claims.sub.parse::<u64>().ok()?;
        (user > 0).then_some(user)
    }

    pub fn issue(&self, user_id: u64, ttl_s: u64) -> String {
        let exp = now_s() + ttl_s;
        let claims = Claims { sub: user_id.to_string(), exp };
        match encode(&Header::new(Algorithm::HS256), &claims, &self.encoding) {
            Ok(t) => t,
            // HS256 over a small JSON object cannot fail.
            Err(e) => panic!("signing a token failed: {e}"),
        }
    }
}

pub fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        use std::fmt::Write;
        // Minimal base64url without padding, enough for test tokens.
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = s.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                let _ = write!(out, "{}", T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn issued_tokens_verify() {
        let a = Auth::new(b"secret");
        let t = a.issue(42, 60);
        assert_eq!(a.user_of(Some(format!("Bearer {t}").as_bytes())), Some(42));
        assert_eq!(Auth::new(b"other").user_of(Some(format!("Bearer {t}").as_bytes())), None);
    }

    #[test]
    fn bad_tokens_are_refused() {
        let a = Auth::new(b"secret");
        assert_eq!(a.user_of(None), None);
        assert_eq!(a.user_of(Some(b"Bearer")), None);
        assert_eq!(a.user_of(Some(b"Basic abc")), None);
        assert_eq!(a.user_of(Some(b"Bearer a.b.c")), None);
        assert_eq!(a.user_of(Some(&[0xff, 0xfe])), None);
        // alg: none with a valid-looking payload.
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(r#"{{"sub":"1","exp":{}}}"#, now_s() + 60))
        );
        assert_eq!(a.user_of(Some(format!("Bearer {none}").as_bytes())), None);
        // Expired.
        let old = encode(
            &Header::new(Algorithm::HS256),
            &Claims { sub: "1".into(), exp: 1 },
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(a.user_of(Some(format!("Bearer {old}").as_bytes())), None);
        // sub not a number.
        let t = encode(
            &Header::new(Algorithm::HS256),
            &Claims { sub: "bob".into(), exp: now_s() + 60 },
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(a.user_of(Some(format!("Bearer {t}").as_bytes())), None);
        // HS512 with the same secret (algorithm confusion).
        let t = encode(
            &Header::new(Algorithm::HS512),
            &Claims { sub: "1".into(), exp: now_s() + 60 },
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(a.user_of(Some(format!("Bearer {t}").as_bytes())), None);
    }
}
