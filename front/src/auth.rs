//! Bearer JWTs (HS256 only), `sub` = decimal user id, `exp` required.
//!
//! Every buy carries a token, so the check is on the fast path: it is done
//! here in one pass with no allocation (stack buffers, borrowed JSON, the
//! HMAC key pads hashed once per secret), where `jsonwebtoken::decode`
//! allocated the header, every claim and the signature's text and parsed
//! the claims twice. It accepts exactly the tokens `jsonwebtoken` 9 accepts
//! with the validation below; a differential property test holds it to
//! that. `jsonwebtoken` still signs the tokens seckill issues.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
}

/// Longest token read (base64 text, all three parts).
pub const TOKEN_BYTES_MAX: usize = 4096;
/// Seconds of clock difference forgiven on `exp` and `nbf`.
pub const LEEWAY_S: u64 = 5;

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
    /// HMAC-SHA256 keyed with each accepted secret, current first.
    keys: Vec<ring::hmac::Key>,
    encoding: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
}

/// The JOSE header fields `jsonwebtoken` knows; a wrong type in any of them
/// refuses the token there, so here too. Others are ignored.
#[derive(Deserialize)]
#[allow(dead_code, reason = "fields other than alg are read only to refuse a wrong type")]
struct JoseHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow, default)]
    typ: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    cty: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    jku: Option<Cow<'a, str>>,
    /// A key inside an HS256 token has no use: refused (`jsonwebtoken`
    /// parses it and goes on; the one deliberate difference).
    #[serde(default)]
    jwk: Option<serde::de::IgnoredAny>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    x5u: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    x5c: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    x5t: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "x5t#S256")]
    x5t_s256: Option<Cow<'a, str>>,
}

/// The claims read, borrowed from the decoded payload.
#[derive(Deserialize)]
struct TokenClaims<'a> {
    #[serde(borrow, default)]
    sub: Option<Cow<'a, str>>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    nbf: Option<NotBefore>,
    #[serde(borrow, default)]
    iss: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    aud: Option<Cow<'a, str>>,
}

/// `nbf` as `jsonwebtoken` reads it: a number (a fraction rounded) is
/// checked; a negative one, a string, a boolean or null is ignored; an
/// array or object refuses the token.
struct NotBefore(Option<u64>);

impl<'de> Deserialize<'de> for NotBefore {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = NotBefore;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a NumericDate")
            }
            fn visit_u64<E>(self, v: u64) -> Result<NotBefore, E> {
                Ok(NotBefore(Some(v)))
            }
            fn visit_i64<E>(self, _: i64) -> Result<NotBefore, E> {
                Ok(NotBefore(None))
            }
            fn visit_f64<E>(self, v: f64) -> Result<NotBefore, E> {
                let fits = v.is_finite() && v >= 0.0 && v < u64::MAX as f64;
                Ok(NotBefore(fits.then(|| v.round() as u64)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<NotBefore, E> {
                Ok(NotBefore(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<NotBefore, E> {
                Ok(NotBefore(None))
            }
            // `jsonwebtoken` loses its place in the JSON after one of
            // these, so it refuses the whole token.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<NotBefore, A::Error> {
                Err(serde::de::Error::custom("nbf must be a number"))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<NotBefore, A::Error> {
                Err(serde::de::Error::custom("nbf must be a number"))
            }
        }
        d.deserialize_any(V)
    }
}

impl Auth {
    /// `secret` is used as raw bytes (DESIGN.md: the UTF-8 bytes of SECKILL_AUTH_SECRET).
    pub fn new(secret: &[u8]) -> Self {
        Self::with(secret, AuthConfig::default())
    }

    pub fn with(secret: &[u8], cfg: AuthConfig) -> Self {
        let keys = std::iter::once(secret)
            .chain(cfg.previous_secrets.iter().map(Vec::as_slice))
            .map(|k| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k))
            .collect();
        Self { keys, encoding: EncodingKey::from_secret(secret), issuer: cfg.issuer, audience: cfg.audience }
    }

    /// The user id of a valid `Authorization` header value, if it is one.
    pub fn user_of(&self, header: Option<&[u8]>) -> Option<u64> {
        self.user_at(header?, now_s())
    }

    fn user_at(&self, header: &[u8], now_s: u64) -> Option<u64> {
        let value = std::str::from_utf8(header).ok()?;
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = token.trim();
        if token.len() > TOKEN_BYTES_MAX {
            return None;
        }
        let (message, signature) = token.rsplit_once('.')?;
        let (header, payload) = message.rsplit_once('.')?;
        let mut buf = [0u8; TOKEN_BYTES_MAX / 4 * 3];
        let n = URL_SAFE_NO_PAD.decode_slice(header, &mut buf).ok()?;
        let jose: JoseHeader = json_object(&buf[..n])?;
        // Only HS256: `none` and every other algorithm are refused.
        if jose.alg != "HS256" || jose.jwk.is_some() {
            return None;
        }
        let mut mac = [0u8; 48];
        if URL_SAFE_NO_PAD.decode_slice(signature, &mut mac).ok()? != 32 {
            return None;
        }
        // Constant-time comparison inside `verify`.
        let signed_by_us = self.keys.iter().any(|key| ring::hmac::verify(key, message.as_bytes(), &mac[..32]).is_ok());
        if !signed_by_us {
            return None;
        }
        let n = URL_SAFE_NO_PAD.decode_slice(payload, &mut buf).ok()?;
        let claims: TokenClaims = json_object(&buf[..n])?;
        if claims.exp? < now_s.saturating_sub(LEEWAY_S) {
            return None;
        }
        // A token that is not valid yet is refused as one that expired.
        if claims.nbf.and_then(|n| n.0).is_some_and(|nbf| nbf > now_s + LEEWAY_S) {
            return None;
        }
        if self.issuer.as_deref().is_some_and(|want| claims.iss.as_deref() != Some(want)) {
            return None;
        }
        if self.audience.as_deref().is_some_and(|want| claims.aud.as_deref() != Some(want)) {
            return None;
        }
        let user = claims.sub?.parse::<u64>().ok()?;
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

/// A JOSE header or claims set: a JSON object (RFC 7519), never an array
/// (serde would read one as the struct's fields in order).
fn json_object<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Option<T> {
    if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(json).ok()
}

pub fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `jsonwebtoken::decode` answers with the validation this module
    /// used to configure: the reference the fast check must agree with.
    fn reference(header: &[u8], cfg: &AuthConfig, secret: &[u8]) -> Option<u64> {
        use jsonwebtoken::{decode, DecodingKey, Validation};
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_S;
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
        let value = std::str::from_utf8(header).ok()?;
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().len() > TOKEN_BYTES_MAX {
            return None;
        }
        let data = std::iter::once(secret)
            .chain(cfg.previous_secrets.iter().map(Vec::as_slice))
            .find_map(|k| decode::<Claims>(token.trim(), &DecodingKey::from_secret(k), &validation).ok())?;
        let user = data.claims.sub.parse::<u64>().ok()?;
        (user > 0).then_some(user)
    }

    const HEADERS: &[&str] = &[
        r#"{"alg":"HS256","typ":"JWT"}"#,
        r#"{"alg":"HS256"}"#,
        r#"{"typ":"JWT","alg":"HS256","kid":"k1","cty":"x"}"#,
        r#"{"alg":"HS256","typ":null,"x5c":["a","b"],"x5t#S256":"t"}"#,
        r#"{"alg":"HS256","other":{"deep":[1,2]}}"#,
        r#"{"alg":"HS\u0032\u0035\u0036"}"#,
        r#"{"alg":"HS512","typ":"JWT"}"#,
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"hs256"}"#,
        r#"{"alg":"HS256","kid":5}"#,
        r#"{"alg":"HS256","x5c":"a"}"#,
        r#"{"alg":"HS256","alg":"HS256"}"#,
        r#"{"typ":"JWT"}"#,
        r#"["HS256"]"#,
        r#"{"alg":"HS256""#,
        "",
    ];

    fn claim_values(now: u64) -> [Vec<Option<String>>; 5] {
        let some = |v: &[String]| v.iter().cloned().map(Some).chain([None]).collect::<Vec<_>>();
        [
            // sub
            some(
                &["\"1\"", "\"42\"", "\"0\"", "\"-1\"", "\"bob\"", "7", "null", "\"+5\"", "\"18446744073709551616\""]
                    .map(String::from),
            ),
            // exp: far from the boundaries, so a second passing between the two checks changes nothing
            some(&[
                format!("{}", now + 60),
                format!("{}", now - 2),
                format!("{}", now - 20),
                "null".into(),
                "\"9999999999\"".into(),
                format!("{}.0", now + 60),
                "-1".into(),
                "1e99".into(),
            ]),
            // nbf
            some(&[
                format!("{}", now + 300),
                format!("{}", now + 2),
                format!("{}", now - 1),
                format!("{}.4", now + 300),
                "\"x\"".into(),
                "-5".into(),
                "null".into(),
                "{\"a\":1}".into(),
                "[1]".into(),
                "true".into(),
            ]),
            // iss
            some(&["\"shop\"", "\"other\"", "[\"shop\"]", "5", "null"].map(String::from)),
            // aud
            some(&["\"seckill\"", "\"other\"", "[\"seckill\"]", "5", "null"].map(String::from)),
        ]
    }

    fn sign(message: &str, secret: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, message.as_bytes()))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]

        /// The fast check accepts exactly what `jsonwebtoken` accepts, over
        /// headers, claims, signatures and encodings good and bad.
        #[test]
        fn agrees_with_jsonwebtoken(
            h in 0..HEADERS.len(),
            picks in proptest::array::uniform5(0usize..16),
            extra in proptest::bool::ANY,
            sig in 0u8..9,
            mangle in 0u8..8,
            cfg_kind in 0u8..3,
            scheme in 0u8..4,
        ) {
            let now = now_s();
            let values = claim_values(now);
            let mut fields = Vec::new();
            for (i, name) in ["sub", "exp", "nbf", "iss", "aud"].iter().enumerate() {
                if let Some(v) = &values[i][picks[i] % values[i].len()] {
                    fields.push(format!("\"{name}\":{v}"));
                }
            }
            if extra {
                fields.push("\"role\":[\"admin\",{\"x\":null}]".into());
            }
            let payload = format!("{{{}}}", fields.join(","));
            let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(HEADERS[h]), URL_SAFE_NO_PAD.encode(&payload));
            let signature = match sig {
                0..=2 => sign(&message, b"secret"),
                3 => sign(&message, b"old-secret"),
                4 => sign(&message, b"wrong"),
                5 => format!("{}=", sign(&message, b"secret")),
                6 => sign(&message, b"secret")[..40].to_string(),
                7 => String::new(),
                _ => sign(&message, b"secret").replace('A', "B"),
            };
            let mut token = format!("{message}.{signature}");
            match mangle {
                0 => token = format!("{token}.x"),
                1 => token = format!("  {token} "),
                2 => token = token.replacen('.', "=.", 1),
                3 => token = token.replace('-', "+").replace('_', "/"),
                _ => {}
            }
            let cfg = match cfg_kind {
                0 => AuthConfig::default(),
                1 => AuthConfig { issuer: Some("shop".into()), audience: Some("seckill".into()), ..Default::default() },
                _ => AuthConfig { previous_secrets: vec![b"old-secret".to_vec()], ..Default::default() },
            };
            let scheme = ["Bearer", "bearer", "BEARER", "Basic"][scheme as usize];
            let header = format!("{scheme} {token}");
            let auth = Auth::with(b"secret", cfg.clone());
            proptest::prop_assert_eq!(
                auth.user_at(header.as_bytes(), now),
                reference(header.as_bytes(), &cfg, b"secret"),
                "header {} payload {}", HEADERS[h], payload
            );
        }
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
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"1","exp":{}}}"#, now_s() + 60))
        );
        assert_eq!(a.user_of(Some(format!("Bearer {none}").as_bytes())), None);
        let refused = |t: String| assert_eq!(a.user_of(Some(format!("Bearer {t}").as_bytes())), None, "{t}");
        // Expired.
        refused(token_with(serde_json::json!({"sub": "1", "exp": 1}), b"secret"));
        // sub not a number.
        refused(token_with(serde_json::json!({"sub": "bob", "exp": now_s() + 60}), b"secret"));
        // HS512 with the same secret (algorithm confusion).
        refused(signed(Algorithm::HS512, serde_json::json!({"sub": "1", "exp": now_s() + 60}), b"secret"));
        // The same claims as HS256 are accepted: the refusals above are for their reason.
        assert_eq!(
            a.user_of(Some(
                format!("Bearer {}", token_with(serde_json::json!({"sub": "1", "exp": now_s() + 60}), b"secret"))
                    .as_bytes()
            )),
            Some(1)
        );
    }

    fn signed(alg: Algorithm, claims: serde_json::Value, secret: &[u8]) -> String {
        encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn token_with(claims: serde_json::Value, secret: &[u8]) -> String {
        signed(Algorithm::HS256, claims, secret)
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
