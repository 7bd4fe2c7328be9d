//! The engine's sockets: the binary wire protocol for fronts and tools
//! (`wire`), and the JSON-lines admin socket for operators (`admin`).

// Input-facing: no panics on what peers send (docs/SECURITY.md; tests exempt, clippy.toml).
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod wire;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// Binds a unix socket that only this user can connect to: created under a
/// 0077 umask (no window in which another user could connect before a
/// chmod), then set to 0600 in case the file system ignores the umask.
#[allow(unsafe_code)] // umask: see the SAFETY comments
pub fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    // SAFETY: umask only swaps the process's file-creation mask; it touches
    // no memory. Other threads creating files meanwhile get stricter modes.
    let old = unsafe { libc::umask(0o077) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Where a socket listens or connects: `unix:PATH` or `tcp:HOST:PORT`.
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
}
