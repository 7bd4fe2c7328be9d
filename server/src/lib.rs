//! The engine's sockets: the binary wire protocol for fronts and tools
//! (`wire`), the JSON-lines admin socket for operators (`admin`), and a
//! blocking wire client for tools and tests (`client`).
//!
//! Architecture Invariant: `seckill-engine` does no socket I/O; every socket
//! it answers on is opened here.

// Input-facing: no panics on what peers send (docs/SECURITY.md; tests exempt,
// clippy.toml). `unwrap` is denied workspace-wide (Cargo.toml); here `expect` too.
#![warn(clippy::expect_used)]

pub mod admin;
pub mod client;
pub mod wire;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;

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
