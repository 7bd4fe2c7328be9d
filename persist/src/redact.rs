//! The one place a MySQL or Redis URL is made fit for a log line, an error
//! message or `--help`: [`redact_url`]. Every message that names a backend
//! goes through it (docs/SECURITY.md, "secrets in logs").

/// What replaces a password.
pub const MASK: &str = "***";

/// `raw` with its password (and any query parameter that looks like one)
/// replaced by `***`; user, host, port, path and other options stay, so
/// the message still says which server was meant. A URL that does not
/// parse is hidden whole: a half-parsed one could show its password.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return match raw.split_once("://") {
            Some((scheme, _))
                if !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
            {
                format!("{scheme}://{MASK} (hidden: not a valid URL)")
            }
            _ => format!("{MASK} (hidden: not a valid URL)"),
        };
    };
    // `user:secret@host` without `//` parses as scheme `user`, path
    // `secret@host`: nothing a server URL looks like, so hidden whole.
    if url.cannot_be_a_base() {
        return format!("{MASK} (hidden: not a server URL)");
    }
    if url.password().is_some() && url.set_password(Some(MASK)).is_err() {
        return format!("{}://{MASK} (hidden)", url.scheme());
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = ["pass", "secret", "token", "auth"].iter().any(|s| k.to_ascii_lowercase().contains(s));
                (k.into_owned(), if secret { MASK.to_string() } else { v.into_owned() })
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// A MySQL or Redis URL that prints (`{}` and `{:?}`) only as
/// [`redact_url`] shows it, so a config can derive `Debug` and a message
/// can name its server without a password; [`Self::as_str`] is the URL.
#[derive(Clone, PartialEq, Eq)]
pub struct BackendUrl(String);

impl BackendUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL itself, password included: for connecting, never for printing.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl std::fmt::Debug for BackendUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&redact_url(&self.0), f)
    }
}

#[cfg(test)]
mod tests {
    use super::{redact_url, BackendUrl};

    #[test]
    fn configs_print_their_url_redacted() {
        let mysql = crate::mysql::PersistConfig::new("mysql://u:Xq9-secret@h:3306/db");
        let redis = crate::redis::MirrorConfig::new("redis://:Xq9-secret@h:6379/2");
        for shown in [format!("{mysql:?}"), format!("{redis:?}"), BackendUrl::new("redis://:Xq9@h").to_string()] {
            assert!(!shown.contains("Xq9"), "{shown}");
            assert!(shown.contains("***@h"), "{shown}");
        }
        assert_eq!(mysql.url.as_str(), "mysql://u:Xq9-secret@h:3306/db");
    }

    #[test]
    fn passwords_are_masked_and_the_rest_stays() {
        assert_eq!(redact_url("mysql://u:secret@h:3306/db"), "mysql://u:***@h:3306/db");
        assert_eq!(redact_url("mysql://root@127.0.0.1:3306/seckill"), "mysql://root@127.0.0.1:3306/seckill");
        assert_eq!(redact_url("redis://:secret@127.0.0.1:6379/9"), "redis://:***@127.0.0.1:6379/9");
        assert_eq!(redact_url("redis://default:secret@h:6379"), "redis://default:***@h:6379");
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_url("mysql://u:s@h/db?ssl-mode=disabled"), "mysql://u:***@h/db?ssl-mode=disabled");
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?pass=secret&db=2"),
            "redis+unix:///run/redis.sock?pass=***&db=2"
        );
    }

    #[test]
    fn the_cases_the_old_redacts_got_wrong() {
        // An `@` in the password (percent-encoded or not): the MySQL one
        // split at the first `@` and printed the rest of the password.
        for raw in ["mysql://u:p%40ss-Xq9@h/db", "mysql://u:p@ss-Xq9@h/db", "redis://u:a@b:c-Xq9@h:6379"] {
            let shown = redact_url(raw);
            assert!(!shown.contains("Xq9") && !shown.contains("ss"), "{raw} -> {shown}");
        }
        // A password in a query parameter.
        let shown = redact_url("mysql://u@h/db?password=Xq9&ssl-mode=required");
        assert!(!shown.contains("Xq9") && shown.contains("ssl-mode=required"), "{shown}");
        // Not a URL at all: hidden whole.
        for raw in ["u:Xq9@h", "mysql://u:Xq9@h:notaport/db", "mysql://u:Xq9@[::1/db"] {
            let shown = redact_url(raw);
            assert!(!shown.contains("Xq9"), "{raw} -> {shown}");
        }
    }
}
