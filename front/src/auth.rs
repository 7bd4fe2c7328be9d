//! Bearer JWTs (HS256 only), `sub` = decimal user id, `exp` required.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
}

/// What tokens must satisfy beyond the signature.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// Older secrets still accepted (rotation); tokens are signed with the current one.
    pub previous_secrets: Vec<Vec<u8>>,
    /// When set, tokens must carry this `iss` (and are issued with it).
    pub issuer: Option<String>,
    /// When set, tokens must carry this `aud` (and are issued with it).
    pub audience: Option<String>,
}

/// Checks and issues tokens: signed with the current secret, verified
/// against it or a previous one.
pub struct Auth {
    decoding: Vec<DecodingKey>,
    encoding: EncodingKey,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Auth {
    /// `secret` is used as raw bytes (DESIGN.md: the UTF-8 bytes of SECKILL_AUTH_SECRET).
    pub fn new(secret: &[u8]) -> Self {
        Self::with(secret, AuthConfig::default())
    }

    pub fn with(secret: &[u8], cfg: AuthConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Only HS256: `none` and every other algorithm are refused.
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "sub"]);
        // A token that is not valid yet is refused as one that expired.
        validation.validate_nbf = true;
        validation.leeway = 5;
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        match &cfg.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let decoding = std::iter::once(secret)
            .chain(cfg.previous_secrets.iter().map(Vec::as_slice))
            .map(DecodingKey::from_secret)
            .collect();
        Self {
            decoding,
            encoding: EncodingKey::from_secret(secret),
            validation,
            issuer: cfg.issuer,
            audience: cfg.audience,
        }
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
        let data = self.decoding.iter().find_map(|key| decode::<Claims>(token, key, &self.validation).ok())?;
        let user = data.claims.sub.parse::<u64>().ok()?;
        (user > 0).then_some(user)
    }

    pub fn issue(&self, user_id: u64, ttl_s: u64) -> String {
        let exp = now_s() + ttl_s;
        let claims = Claims { sub: user_id.to_string(), exp, iss: self.issuer.clone(), aud: self.audience.clone() };
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
            &Claims { sub: "1".into(), exp: 1, iss: None, aud: None },
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(a.user_of(Some(format!("Bearer {old}").as_bytes())), None);
        // sub not a number.
        let t = encode(
            &Header::new(Algorithm::HS256),
            &Claims { sub: "bob".into(), exp: now_s() + 60, iss: None, aud: None },
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(a.user_of(Some(format!("Bearer {t}").as_bytes())), None);
        // HS512 with the same secret (algorithm confusion).
        let t = encode(
            &Header::new(Algorithm::HS512),
            &Claims { sub: "1".into(), exp: now_s() + 60, iss: None, aud: None },
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(a.user_of(Some(format!("Bearer {t}").as_bytes())), None);
    }

    fn token_with(claims: serde_json::Value, secret: &[u8]) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    #[test]
    fn not_yet_valid_tokens_are_refused() {
        let a = Auth::new(b"secret");
        let later = token_with(serde_json::json!({"sub": "1", "exp": now_s() + 600, "nbf": now_s() + 300}), b"secret");
        assert_eq!(a.user_of(Some(format!("Bearer {later}").as_bytes())), None);
        let now = token_with(serde_json::json!({"sub": "1", "exp": now_s() + 600, "nbf": now_s() - 1}), b"secret");
        assert_eq!(a.user_of(Some(format!("Bearer {now}").as_bytes())), Some(1));
    }

    #[test]
    fn previous_secrets_verify_during_a_rotation() {
        let old = Auth::new(b"old-secret").issue(5, 60);
        let rotated = Auth::with(
            b"new-secret",
            AuthConfig { previous_secrets: vec![b"old-secret".to_vec()], ..Default::default() },
        );
        assert_eq!(rotated.user_of(Some(format!("Bearer {old}").as_bytes())), Some(5));
        let new = rotated.issue(6, 60);
        assert_eq!(Auth::new(b"new-secret").user_of(Some(format!("Bearer {new}").as_bytes())), Some(6));
        assert_eq!(Auth::new(b"new-secret").user_of(Some(format!("Bearer {old}").as_bytes())), None, "old key dropped");
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let cfg = AuthConfig { issuer: Some("shop".into()), audience: Some("seckill".into()), ..Default::default() };
        let a = Auth::with(b"secret", cfg);
        let good = a.issue(9, 60);
        assert_eq!(a.user_of(Some(format!("Bearer {good}").as_bytes())), Some(9));
        let bare = Auth::new(b"secret").issue(9, 60);
        assert_eq!(a.user_of(Some(format!("Bearer {bare}").as_bytes())), None, "iss and aud are required");
        let wrong = token_with(
            serde_json::json!({"sub": "9", "exp": now_s() + 60, "iss": "other", "aud": "seckill"}),
            b"secret",
        );
        assert_eq!(a.user_of(Some(format!("Bearer {wrong}").as_bytes())), None);
    }
}
