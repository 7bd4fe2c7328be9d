//! Buy tokens (seed 002's gate): `user.activity.expires_ms.hmac`, signed with
//! the auth secret, bound to one user and one activity, valid for minutes.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a buy token stays valid.
pub const TTL_MS: u64 = 120_000;

fn mac(secret: &[u8], user_id: u64, activity_id: u64, expires_ms: u64) -> Hmac<Sha256> {
    let mut m = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(e) => panic!("HMAC takes keys of any length: {e}"),
    };
    m.update(format!("buy-token|{user_id}|{activity_id}|{expires_ms}").as_bytes());
    m
}

pub fn issue(secret: &[u8], user_id: u64, activity_id: u64, expires_ms: u64) -> String {
    let sig = hex::encode(mac(secret, user_id, activity_id, expires_ms).finalize().into_bytes());
    format!("{user_id}.{activity_id}.{expires_ms}.{sig}")
}

/// True when `token` was issued by us for this user and activity and has
/// not expired. Constant-time on the signature.
pub fn verify(secret: &[u8], token: &str, user_id: u64, activity_id: u64, now_ms: u64) -> bool {
    if token.len() > 256 {
        return false;
    }
    let mut parts = token.split('.');
    let (Some(u), Some(a), Some(e), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(u), Ok(a), Ok(e), Ok(sig)) = (u.parse::<u64>(), a.parse::<u64>(), e.parse::<u64>(), hex::decode(sig))
    else {
        return false;
    };
    u == user_id && a == activity_id && e > now_ms && mac(secret, u, a, e).verify_slice(&sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_user_activity_and_time() {
        let t = issue(b"s", 7, 3, 1_000);
        assert!(verify(b"s", &t, 7, 3, 999));
        assert!(!verify(b"s", &t, 7, 3, 1_000), "expired");
        assert!(!verify(b"s", &t, 8, 3, 0), "other user");
        assert!(!verify(b"s", &t, 7, 4, 0), "other activity");
        assert!(!verify(b"x", &t, 7, 3, 0), "other secret");
        assert!(!verify(b"s", "7.3.5000.00", 7, 3, 0), "forged");
        assert!(!verify(b"s", "", 7, 3, 0));
        assert!(!verify(b"s", &format!("{t}.x"), 7, 3, 0));
    }
}
