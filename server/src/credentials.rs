//! Root credentials: from `WALSTORE_ROOT_ACCESS_KEY` / `WALSTORE_ROOT_SECRET_KEY`,
//! else from `<data-dir>/root-credentials` (created on first start with mode
//! 0600 and printed once).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand::Rng;
use serde::Deserialize;

const FILE: &str = "root-credentials";

/// A root key pair.
#[derive(Debug, Clone, Deserialize)]
pub struct RootCredentials {
    /// Format version of the file (1).
    #[serde(default = "one")]
    pub format: u32,
    /// Access key id.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
}

fn one() -> u32 {
    1
}

fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::thread_rng();
    (0..len).map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char).collect()
}

/// How the credentials were obtained.
pub enum Origin {
    /// From the environment.
    Environment,
    /// From the file in the data directory.
    File,
    /// Generated now (the caller prints them once).
    Generated,
}

/// Returns the root credentials, creating the file if needed.
pub fn load_or_create(data_dir: &Path) -> Result<(RootCredentials, Origin), String> {
    let env_key = std::env::var("WALSTORE_ROOT_ACCESS_KEY").ok().filter(|s| !s.is_empty());
    let env_secret = std::env::var("WALSTORE_ROOT_SECRET_KEY").ok().filter(|s| !s.is_empty());
    match (env_key, env_secret) {
        (Some(access_key), Some(secret_key)) => {
            if secret_key.len() < 8 {
                return Err("WALSTORE_ROOT_SECRET_KEY must be at least 8 characters".into());
            }
            return Ok((RootCredentials { format: 1, access_key, secret_key }, Origin::Environment));
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err("set both WALSTORE_ROOT_ACCESS_KEY and WALSTORE_ROOT_SECRET_KEY, or neither".into())
        }
        (None, None) => {}
    }
    let path = data_dir.join(FILE);
    if path.exists() {
        let mode = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "root credentials file is readable by others; chmod 600 it");
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let creds: RootCredentials = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if creds.format != 1 {
            return Err(format!("{}: unsupported format {}", path.display(), creds.format));
        }
        return Ok((creds, Origin::File));
    }
    std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let creds = RootCredentials {
        format: 1,
        access_key: random_string(20, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
        secret_key: random_string(40, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"),
    };
    let text = format!(
        "# walstore root credentials. Keep this file secret (mode 0600).\nformat = 1\naccess_key = \"{}\"\nsecret_key = \"{}\"\n",
        creds.access_key, creds.secret_key
    );
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    Ok((creds, Origin::Generated))
}
