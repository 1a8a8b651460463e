//! A target's settings: where the copy goes, as whom, and how deletes propagate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use storage::units::{format_duration, parse_duration};

use crate::error::{Error, ErrorKind};

/// How a local delete reaches the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletePolicy {
    /// At once, like any other change.
    Mirror,
    /// After this long (a compromised client or a bad script that deletes locally
    /// cannot delete the copy before someone notices). The default: 7 days.
    Delay(Duration),
    /// Never: the copy keeps everything (the target's own lifecycle rules expire it).
    Never,
}

impl Default for DeletePolicy {
    fn default() -> Self {
        DeletePolicy::Delay(Duration::from_secs(7 * 86_400))
    }
}

impl DeletePolicy {
    /// Parses `mirror`, `never`, `delay 7d` (also `delay=7d`, `delay:7d`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "mirror" => return Ok(DeletePolicy::Mirror),
            "never" => return Ok(DeletePolicy::Never),
            _ => {}
        }
        let rest = s
            .strip_prefix("delay")
            .map(|r| r.trim_start_matches([' ', '=', ':']))
            .filter(|r| !r.is_empty())
            .ok_or_else(|| format!("deletes must be mirror, never or 'delay DURATION' (e.g. 'delay 7d'), not {s:?}"))?;
        let d = parse_duration(rest).map_err(|e| format!("deletes {s:?}: {e}"))?;
        Ok(if d.is_zero() { DeletePolicy::Mirror } else { DeletePolicy::Delay(d) })
    }

    /// The form [`DeletePolicy::parse`] reads.
    pub fn name(&self) -> String {
        match self {
            DeletePolicy::Mirror => "mirror".into(),
            DeletePolicy::Never => "never".into(),
            DeletePolicy::Delay(d) => format!("delay {}", format_duration(*d)),
        }
    }
}

impl Serialize for DeletePolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for DeletePolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DeletePolicy::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Default number of objects sent at once per target.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Objects larger than this go up as multipart uploads, in parts of this size.
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;

/// Where a target is and how to talk to it. Stored (as JSON) with the target in
/// the index; holds no secret, only where to read one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TargetSpec {
    /// `http(s)://host:port` of the S3 service.
    pub endpoint: String,
    /// Bucket on the target (must exist).
    pub bucket: String,
    /// Prefix on the target, empty or ending in `/`. A local object `B/K` is copied
    /// to `<prefix>B/K`, so the copy of a WAL-G repository at `s3://B/P` is the
    /// repository `s3://<bucket>/<prefix>B/P`.
    #[serde(default)]
    pub prefix: String,
    /// Region to sign for.
    pub region: String,
    /// CA certificate (PEM) to trust for an `https` endpoint, instead of the system roots.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// File with the access key (`access_key_id = …`, `secret_access_key = …`; an AWS
    /// credentials file works). Unset: the environment variables
    /// `WALSTORE_REPLICATION_<NAME>_ACCESS_KEY_ID` / `…_SECRET_ACCESS_KEY` of the server.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Delete propagation.
    #[serde(default)]
    pub deletes: DeletePolicy,
    /// Objects sent at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Multipart threshold and part size in bytes.
    #[serde(default = "default_part_size")]
    pub part_size: u64,
    /// A key given directly (an import's source, handed over by the CLI); never serialized.
    #[serde(skip)]
    pub secret: Option<Secret>,
}

fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}

fn default_part_size() -> u64 {
    DEFAULT_PART_SIZE
}

impl TargetSpec {
    /// Checks what can be checked without the network.
    pub fn validate(&self) -> Result<(), String> {
        let rest = self
            .endpoint
            .strip_prefix("http://")
            .or_else(|| self.endpoint.strip_prefix("https://"))
            .ok_or_else(|| format!("endpoint {:?}: give http://host:port or https://host:port", self.endpoint))?;
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains(['/', '?', '#', '@']) {
            return Err(format!("endpoint {:?}: give the service address only (no path)", self.endpoint));
        }
        if self.bucket.is_empty() || self.bucket.contains('/') {
            return Err(format!("target bucket {:?}: give a bucket name", self.bucket));
        }
        if !self.prefix.is_empty() && !self.prefix.ends_with('/') {
            return Err(format!("target prefix {:?} must end with '/'", self.prefix));
        }
        if self.region.is_empty() {
            return Err("give the target's region (--region; us-east-1 for most S3-compatible stores)".into());
        }
        if !(1..=64).contains(&self.concurrency) {
            return Err(format!("concurrency {} must be 1 to 64", self.concurrency));
        }
        if !(5 << 20..=5 << 30).contains(&self.part_size) {
            return Err(format!("part size {} must be 5 MiB to 5 GiB (S3's limits)", self.part_size));
        }
        if let Some(ca) = &self.ca_cert {
            if !self.endpoint.starts_with("https://") {
                return Err("--ca-cert needs an https:// endpoint".into());
            }
            std::fs::metadata(ca).map_err(|e| format!("CA certificate {}: {e}", ca.display()))?;
        }
        Ok(())
    }

    /// The key on the target of local object `bucket/key`.
    pub fn target_key(&self, bucket: &str, key: &str) -> String {
        format!("{}{bucket}/{key}", self.prefix)
    }

    /// The local bucket and key of a key on the target (`None`: not one of ours).
    pub fn source_of<'a>(&self, target_key: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = target_key.strip_prefix(self.prefix.as_str())?;
        let (b, k) = rest.split_once('/')?;
        (!b.is_empty() && !k.is_empty()).then_some((b, k))
    }
}

/// An access key for a target.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({}, <redacted>)", self.access_key_id)
    }
}

/// The environment variable holding `what` (`ACCESS_KEY_ID`, `SECRET_ACCESS_KEY`) of
/// target `name`.
pub fn env_var(name: &str, what: &str) -> String {
    format!("WALSTORE_REPLICATION_{}_{what}", name.to_ascii_uppercase().replace('-', "_"))
}

/// Reads the credentials of target `name`: from its file, else its environment variables.
pub fn load_secret(name: &str, spec: &TargetSpec) -> Result<Secret, Error> {
    if let Some(s) = &spec.secret {
        return Ok(s.clone());
    }
    match &spec.credentials_file {
        Some(path) => read_credentials_file(path),
        None => {
            let get = |what: &str| {
                let var = env_var(name, what);
                std::env::var(&var).ok().filter(|v| !v.is_empty()).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Config,
                        format!("no credentials: set {var} (and its pair) in the server's environment, or give --credentials-file"),
                    )
                })
            };
            Ok(Secret { access_key_id: get("ACCESS_KEY_ID")?, secret_access_key: get("SECRET_ACCESS_KEY")? })
        }
    }
}

/// Reads `access_key_id = …` and `secret_access_key = …` lines (an `aws_` prefix,
/// `:` instead of `=`, `[sections]` and `#` comments are accepted: the first
/// section of an AWS credentials file works).
pub fn read_credentials_file(path: &Path) -> Result<Secret, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(ErrorKind::Config, format!("credentials file {}: {e}", path.display())))?;
    let (mut id, mut secret) = (None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if line.starts_with('[') {
            if id.is_some() || secret.is_some() {
                break;
            }
            continue;
        }
        let Some((k, v)) = line.split_once(['=', ':']) else { continue };
        let v = v.trim().trim_matches('"').to_owned();
        match k.trim().trim_start_matches("aws_") {
            "access_key_id" => id = Some(v),
            "secret_access_key" => secret = Some(v),
            _ => {}
        }
    }
    match (id, secret) {
        (Some(a), Some(s)) if !a.is_empty() && !s.is_empty() => Ok(Secret { access_key_id: a, secret_access_key: s }),
        _ => Err(Error::new(
            ErrorKind::Config,
            format!("credentials file {} needs access_key_id = … and secret_access_key = … lines", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_policies() {
        assert_eq!(DeletePolicy::parse("mirror"), Ok(DeletePolicy::Mirror));
        assert_eq!(DeletePolicy::parse("never"), Ok(DeletePolicy::Never));
        assert_eq!(DeletePolicy::parse("delay 7d"), Ok(DeletePolicy::Delay(Duration::from_secs(7 * 86400))));
        assert_eq!(DeletePolicy::parse("delay:90s"), Ok(DeletePolicy::Delay(Duration::from_secs(90))));
        assert_eq!(DeletePolicy::parse("delay 0s"), Ok(DeletePolicy::Mirror));
        assert!(DeletePolicy::parse("delay").is_err());
        assert!(DeletePolicy::parse("sometimes").is_err());
        assert_eq!(DeletePolicy::default().name(), "delay 1w");
        assert_eq!(DeletePolicy::parse("delay 1w"), Ok(DeletePolicy::default()));
    }

    #[test]
    fn keys_map_both_ways() {
        let spec = TargetSpec {
            endpoint: "http://127.0.0.1:9000".into(),
            bucket: "dr".into(),
            prefix: "site-a/".into(),
            region: "us-east-1".into(),
            ca_cert: None,
            credentials_file: None,
            deletes: DeletePolicy::Mirror,
            concurrency: 4,
            part_size: DEFAULT_PART_SIZE,
            secret: None,
        };
        assert!(spec.validate().is_ok());
        let k = spec.target_key("pg", "spilo/db1/wal/16/wal_005/000000010000000000000001.br");
        assert_eq!(k, "site-a/pg/spilo/db1/wal/16/wal_005/000000010000000000000001.br");
        assert_eq!(spec.source_of(&k), Some(("pg", "spilo/db1/wal/16/wal_005/000000010000000000000001.br")));
        assert_eq!(spec.source_of("elsewhere/pg/x"), None);
        let bad = TargetSpec { endpoint: "ftp://x".into(), ..spec.clone() };
        assert!(bad.validate().is_err());
        let bad = TargetSpec { prefix: "no-slash".into(), ..spec };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn credentials_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("creds");
        std::fs::write(
            &p,
            "[default]\naws_access_key_id = AK\naws_secret_access_key = \"SK\"\n[other]\naccess_key_id=X\n",
        )
        .expect("write");
        let s = read_credentials_file(&p).expect("read");
        assert_eq!((s.access_key_id.as_str(), s.secret_access_key.as_str()), ("AK", "SK"));
        assert!(!format!("{s:?}").contains("SK"));
        std::fs::write(&p, "access_key_id: AK\n").expect("write");
        assert!(read_credentials_file(&p).is_err());
        assert_eq!(env_var("off-site", "ACCESS_KEY_ID"), "WALSTORE_REPLICATION_OFF_SITE_ACCESS_KEY_ID");
    }
}
