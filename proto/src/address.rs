//! Where an engine socket listens or a client connects.

use std::net::SocketAddr;
use std::path::PathBuf;

/// `unix:PATH` or `tcp:HOST:PORT` (an IP host: no name lookup here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::str::FromStr for Address {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path, e.g. unix:./data/engine.sock".into());
            }
            Ok(Address::Unix(PathBuf::from(path)))
        } else if let Some(addr) = s.strip_prefix("tcp:") {
            addr.parse().map(Address::Tcp).map_err(|e| format!("tcp:{addr} is not HOST:PORT with an IP host ({e})"))
        } else {
            Err(format!("`{s}` is not an address: use unix:PATH or tcp:HOST:PORT"))
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!("unix:/tmp/x.sock".parse(), Ok(Address::Unix("/tmp/x.sock".into())));
        assert_eq!("tcp:127.0.0.1:7000".parse(), Ok(Address::Tcp("127.0.0.1:7000".parse().unwrap())));
        assert!("tcp:localhost".parse::<Address>().is_err());
        assert!("/tmp/x".parse::<Address>().is_err());
        assert!("unix:".parse::<Address>().is_err());
    }

    #[test]
    fn addresses_display_as_they_parse() {
        for s in ["unix:/tmp/x.sock", "unix:relative/e.sock", "tcp:127.0.0.1:7000", "tcp:[::1]:9"] {
            assert_eq!(s.parse::<Address>().unwrap().to_string(), s);
        }
    }
}
