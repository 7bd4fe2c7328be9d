//! Secrets: from the environment, or generated once into the data dir
//! (mode 0600) so every process on that dir agrees.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Shortest secret accepted: an HS256 key shorter than its hash makes one
/// captured token enough for an offline brute force.
pub const SECRET_BYTES_MIN: usize = 32;

fn long_enough(what: &str, secret: Vec<u8>) -> std::io::Result<Vec<u8>> {
    if secret.len() < SECRET_BYTES_MIN {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{what} is {} bytes; secrets must be at least {SECRET_BYTES_MIN} bytes \
                 (make one with `openssl rand -hex 32`)",
                secret.len()
            ),
        ));
    }
    Ok(secret)
}

/// The secret in env var `env` if set and non-empty; otherwise the content
/// of `<data_dir>/<file>`, created with 32 random bytes (hex) when missing.
/// Secrets shorter than `SECRET_BYTES_MIN` are refused.
pub fn load_or_create(env: &str, data_dir: &Path, file: &str) -> std::io::Result<Vec<u8>> {
    if let Ok(v) = std::env::var(env) {
        if !v.is_empty() {
            return long_enough(env, v.into_bytes());
        }
    }
    let path = data_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return long_enough(&path.display().to_string(), s.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // The engine's data dir (0700, as the engine makes it); the front may be first.
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(data_dir)?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let tmp = data_dir.join(format!("{file}.tmp"));
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(secret.into_bytes())
}

/// Older secrets still accepted for verification while tokens signed with
/// them are out (key rotation): env var `env`, comma-separated.
pub fn previous(env: &str) -> std::io::Result<Vec<Vec<u8>>> {
    let Ok(v) = std::env::var(env) else { return Ok(Vec::new()) };
    v.split(',').filter(|s| !s.is_empty()).map(|s| long_enough(env, s.as_bytes().to_vec())).collect()
}
