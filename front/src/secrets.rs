//! Secrets: from the environment, or generated once into the data dir
//! (mode 0600) so every process on that dir agrees.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The secret in env var `env` if set and non-empty; otherwise the content
/// of `<data_dir>/<file>`, created with 32 random bytes (hex) when missing.
pub fn load_or_create(env: &str, data_dir: &Path, file: &str) -> std::io::Result<Vec<u8>> {
    if let Ok(v) = std::env::var(env) {
        if !v.is_empty() {
            return Ok(v.into_bytes());
        }
    }
    let path = data_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let tmp = data_dir.join(format!("{file}.tmp"));
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(secret.into_bytes())
}
