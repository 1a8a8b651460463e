//! The server's configuration: one typed struct, filled from (highest first)
//! command-line flags, `WALSTORE_*` environment variables, a TOML file
//! (`--config`), and the defaults documented on each field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use storage::units::{parse_duration, parse_size};

/// Effective configuration of `walstore serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory (`index/`, `blobs/`, `root-credentials`). Default `./walstore-data`.
    pub data_dir: PathBuf,
    /// Listen address. Default `0.0.0.0:9000` (MinIO's port).
    pub listen: SocketAddr,
    /// Region the server answers as; requests signed for it or for `us-east-1`
    /// are accepted. Default `us-east-1`.
    pub region: String,
    /// Buckets created at start-up if missing.
    pub buckets: Vec<String>,
    /// Log level filter (`error`, `warn`, `info`, `debug`, `trace`, or a
    /// `tracing` filter string). Default `info`; `debug` logs one line per request.
    pub log_level: String,
    /// Log format. Default text.
    pub log_format: LogFormat,
    /// Largest object a single PutObject may store. Default `5GiB`.
    pub max_object_size: u64,
    /// How long an unreferenced blob is kept before GC removes it. Default `1h`.
    pub gc_grace: Duration,
    /// How often the maintenance worker runs (GC, upload expiry). Default `1m`.
    pub gc_interval: Duration,
    /// Multipart uploads older than this are aborted. Default `7d`.
    pub multipart_expiry: Duration,
    /// How long in-flight requests may take to finish on shutdown. Default `30s`.
    pub drain_timeout: Duration,
    /// RocksDB block cache. Default `16MiB`.
    pub block_cache: u64,
    /// Policy of repositories without a stored policy.
    pub default_policy: storage::wal::StoredPolicy,
    /// How often repositories are evaluated (and retention enforced). Default `5m`.
    pub retention_interval: Duration,
    /// TLS certificate chain and key (PEM); HTTPS when both are set.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Bearer token for `/metrics` (open when unset).
    pub metrics_token: Option<String>,
    /// How often every blob is re-hashed (`0s` = never). Default `7d`.
    pub scrub_interval: Duration,
    /// Bytes per second the background scrub reads at most (`0` = unpaced). Default `64MiB`.
    pub scrub_rate: u64,
    /// Free space writes must leave for deletes and the index. Default `auto`
    /// (1 GiB or 5 % of the filesystem, whichever is smaller).
    pub reserve_space: storage::SpaceReserve,
    /// Connections served at once; more get `503 SlowDown`. Default 4096.
    pub max_connections: usize,
    /// Largest request head (request line + headers); larger gets `431`. Default `64KiB`.
    pub max_header_size: usize,
    /// Time for a request's headers to arrive, from the connection's start or the end of
    /// the previous response (so also the keep-alive idle timeout). Default `30s`.
    pub header_timeout: Duration,
    /// Longest pause in a request body, or in a client taking a response body. Default `30s`.
    pub body_timeout: Duration,
    /// Bytes per second a request body must average after `body_timeout` (0 = no rate
    /// rule). Default `1KiB`.
    pub body_min_rate: u64,
    /// Accept AWS Signature Version 2 (header and presigned forms). Default on.
    pub signature_v2: bool,
    /// How often the tier worker looks for objects to evict. Default `30s`.
    pub tier_interval: Duration,
    /// How often the targets' copies of evicted blobs are checked (`0s` = never). Default `24h`.
    pub tier_scrub_interval: Duration,
    /// The tier scrub reads and verifies every byte too (not only a HEAD). Default off.
    pub tier_scrub_full: bool,
    /// Bytes that reads of tiered objects may bring back and keep local (policies with
    /// `--rehydrate-on-read`). Default `1GiB`.
    pub tier_cache: u64,
    /// Replication targets defined in the configuration file (`[[replication]]`): the
    /// file is their source of truth (added, changed and removed at start-up).
    pub replication: Vec<s3api::admin::ReplicationDoc>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The same settings as they appear in the TOML file and on the command line
/// (all optional; unset means "use the next source").
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Data directory [default: ./walstore-data]
    #[arg(long, env = "WALSTORE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Listen address [default: 0.0.0.0:9000]
    #[arg(long, env = "WALSTORE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Region to answer as; us-east-1 signatures are always accepted [default: us-east-1]
    #[arg(long, env = "WALSTORE_REGION")]
    pub region: Option<String>,
    /// Bucket to create at start-up if missing (repeatable; env: comma-separated)
    #[arg(long = "bucket", env = "WALSTORE_BUCKETS", value_delimiter = ',')]
    #[serde(default)]
    pub buckets: Vec<String>,
    /// Log level or tracing filter [default: info]
    #[arg(long, env = "WALSTORE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format [default: text]
    #[arg(long, env = "WALSTORE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Largest single PutObject, e.g. 5GiB [default: 5GiB]
    #[arg(long, env = "WALSTORE_MAX_OBJECT_SIZE")]
    pub max_object_size: Option<String>,
    /// Grace period before an unreferenced blob is deleted, e.g. 1h [default: 1h]
    #[arg(long, env = "WALSTORE_GC_GRACE")]
    pub gc_grace: Option<String>,
    /// Maintenance interval, e.g. 1m [default: 1m]
    #[arg(long, env = "WALSTORE_GC_INTERVAL")]
    pub gc_interval: Option<String>,
    /// Abort multipart uploads older than this, e.g. 7d [default: 7d]
    #[arg(long, env = "WALSTORE_MULTIPART_EXPIRY")]
    pub multipart_expiry: Option<String>,
    /// Drain deadline on shutdown, e.g. 30s [default: 30s]
    #[arg(long, env = "WALSTORE_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<String>,
    /// RocksDB block cache size, e.g. 16MiB [default: 16MiB]
    #[arg(long, env = "WALSTORE_BLOCK_CACHE")]
    pub block_cache: Option<String>,
    /// Default delete protection of WAL-G repositories: allow, protect-required or deny-all [default: protect-required]
    #[arg(long, env = "WALSTORE_DELETE_PROTECTION")]
    pub delete_protection: Option<String>,
    /// Default recovery window of the retention policy, e.g. 7d [default: 7d]
    #[arg(long, env = "WALSTORE_RECOVERY_WINDOW")]
    pub recovery_window: Option<String>,
    /// Default minimum number of backups kept [default: 2]
    #[arg(long, env = "WALSTORE_MIN_BACKUPS")]
    pub min_backups: Option<u32>,
    /// Let the server delete what the default retention policy releases [default: false]
    #[arg(long, env = "WALSTORE_RETENTION_ENFORCE")]
    pub retention_enforce: Option<bool>,
    /// Default dwell time between an object becoming deletable and the retention worker deleting it, e.g. 1d [default: 1d]
    #[arg(long, env = "WALSTORE_GC_DELAY")]
    pub gc_delay: Option<String>,
    /// Refuse a different upload for an existing WAL segment or history file [default: true]
    #[arg(long, env = "WALSTORE_SPLIT_BRAIN_GUARD")]
    pub split_brain_guard: Option<bool>,
    /// Default identity check of WAL-G repositories (an upload from another cluster: system identifier, PostgreSQL version, segment size): enforce, warn or off [default: enforce]
    #[arg(long, env = "WALSTORE_IDENTITY_CHECK")]
    pub identity_check: Option<String>,
    /// Accept AWS Signature Version 2 (boto3 presigned URLs in us-east-1, s3cmd, WAL-E): on or off [default: on]
    #[arg(long, env = "WALSTORE_SIGNATURE_V2")]
    pub signature_v2: Option<String>,
    /// How often the tier worker looks for objects to evict, e.g. 30s [default: 30s]
    #[arg(long, env = "WALSTORE_TIER_INTERVAL")]
    pub tier_interval: Option<String>,
    /// How often the targets' copies of evicted (tiered) blobs are checked with a HEAD, e.g. 24h; 0s disables [default: 24h]
    #[arg(long, env = "WALSTORE_TIER_SCRUB_INTERVAL")]
    pub tier_scrub_interval: Option<String>,
    /// The tier scrub also reads every evicted byte back and verifies it: on or off [default: off]
    #[arg(long, env = "WALSTORE_TIER_SCRUB_FULL")]
    pub tier_scrub_full: Option<String>,
    /// Local disk that reads of tiered objects may fill with bytes they bring back (policies set with --rehydrate-on-read), e.g. 10GiB [default: 1GiB]
    #[arg(long, env = "WALSTORE_TIER_CACHE")]
    pub tier_cache: Option<String>,
    /// How often repositories are evaluated and retention enforced, e.g. 5m [default: 5m]
    #[arg(long, env = "WALSTORE_RETENTION_INTERVAL")]
    pub retention_interval: Option<String>,
    /// TLS certificate chain (PEM); with --tls-key the server speaks HTTPS and reloads both on SIGHUP or change
    #[arg(long, env = "WALSTORE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, env = "WALSTORE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Bearer token required by GET /metrics [default: none, open]
    #[arg(long, env = "WALSTORE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// How often every blob is re-hashed, e.g. 7d; 0s disables [default: 7d]
    #[arg(long, env = "WALSTORE_SCRUB_INTERVAL")]
    pub scrub_interval: Option<String>,
    /// Bytes per second the background scrub may read, e.g. 64MiB; 0 = unpaced [default: 64MiB]
    #[arg(long, env = "WALSTORE_SCRUB_RATE")]
    pub scrub_rate: Option<String>,
    /// Free space new uploads must leave on the data filesystem (for deletes and the index): auto, a size like 2GiB, a percentage like 5%, or 0 for none [default: auto = min(1GiB, 5%)]
    #[arg(long, env = "WALSTORE_RESERVE_SPACE")]
    pub reserve_space: Option<String>,
    /// Connections served at once; more are answered 503 SlowDown and closed [default: 4096]
    #[arg(long, env = "WALSTORE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Largest request line + headers, at least 8KiB; larger gets 431 [default: 64KiB]
    #[arg(long, env = "WALSTORE_MAX_HEADER_SIZE")]
    pub max_header_size: Option<String>,
    /// Time for a request's headers to arrive; also the keep-alive idle timeout [default: 30s]
    #[arg(long, env = "WALSTORE_HEADER_TIMEOUT")]
    pub header_timeout: Option<String>,
    /// Longest pause in a request body (or in taking a response body) before it is cut off [default: 30s]
    #[arg(long, env = "WALSTORE_BODY_TIMEOUT")]
    pub body_timeout: Option<String>,
    /// Bytes per second a request body must average after --body-timeout; 0 disables [default: 1KiB]
    #[arg(long, env = "WALSTORE_BODY_MIN_RATE")]
    pub body_min_rate: Option<String>,
    /// Replication targets (`[[replication]]` tables; configuration file only).
    #[arg(skip)]
    #[serde(default)]
    pub replication: Vec<s3api::admin::ReplicationDoc>,
}

impl Settings {
    /// Loads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Fills every unset field from `lower`.
    pub fn or(self, lower: Settings) -> Settings {
        Settings {
            data_dir: self.data_dir.or(lower.data_dir),
            listen: self.listen.or(lower.listen),
            region: self.region.or(lower.region),
            buckets: if self.buckets.is_empty() { lower.buckets } else { self.buckets },
            log_level: self.log_level.or(lower.log_level),
            log_format: self.log_format.or(lower.log_format),
            max_object_size: self.max_object_size.or(lower.max_object_size),
            gc_grace: self.gc_grace.or(lower.gc_grace),
            gc_interval: self.gc_interval.or(lower.gc_interval),
            multipart_expiry: self.multipart_expiry.or(lower.multipart_expiry),
            drain_timeout: self.drain_timeout.or(lower.drain_timeout),
            block_cache: self.block_cache.or(lower.block_cache),
            delete_protection: self.delete_protection.or(lower.delete_protection),
            recovery_window: self.recovery_window.or(lower.recovery_window),
            min_backups: self.min_backups.or(lower.min_backups),
            retention_enforce: self.retention_enforce.or(lower.retention_enforce),
            gc_delay: self.gc_delay.or(lower.gc_delay),
            split_brain_guard: self.split_brain_guard.or(lower.split_brain_guard),
            identity_check: self.identity_check.or(lower.identity_check),
            signature_v2: self.signature_v2.or(lower.signature_v2),
            tier_interval: self.tier_interval.or(lower.tier_interval),
            tier_scrub_interval: self.tier_scrub_interval.or(lower.tier_scrub_interval),
            tier_scrub_full: self.tier_scrub_full.or(lower.tier_scrub_full),
            tier_cache: self.tier_cache.or(lower.tier_cache),
            retention_interval: self.retention_interval.or(lower.retention_interval),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            metrics_token: self.metrics_token.or(lower.metrics_token),
            scrub_interval: self.scrub_interval.or(lower.scrub_interval),
            scrub_rate: self.scrub_rate.or(lower.scrub_rate),
            reserve_space: self.reserve_space.or(lower.reserve_space),
            max_connections: self.max_connections.or(lower.max_connections),
            max_header_size: self.max_header_size.or(lower.max_header_size),
            header_timeout: self.header_timeout.or(lower.header_timeout),
            body_timeout: self.body_timeout.or(lower.body_timeout),
            body_min_rate: self.body_min_rate.or(lower.body_min_rate),
            replication: if self.replication.is_empty() { lower.replication } else { self.replication },
        }
    }

    /// Applies defaults and validates.
    pub fn resolve(self) -> Result<Config, String> {
        let dur = |v: Option<String>, default: &str, name: &str| {
            parse_duration(v.as_deref().unwrap_or(default)).map_err(|e| format!("{name}: {e}"))
        };
        let size = |v: Option<String>, default: &str, name: &str| {
            parse_size(v.as_deref().unwrap_or(default)).map_err(|e| format!("{name}: {e}"))
        };
        let region = self.region.unwrap_or_else(|| "us-east-1".into());
        if region.is_empty() || !region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("region: {region:?} is not a valid region name"));
        }
        let cfg = Config {
            data_dir: self.data_dir.unwrap_or_else(|| PathBuf::from("./walstore-data")),
            listen: self.listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 9000))),
            region,
            buckets: self.buckets.into_iter().map(|b| b.trim().to_owned()).filter(|b| !b.is_empty()).collect(),
            log_level: self.log_level.unwrap_or_else(|| "info".into()),
            log_format: self.log_format.unwrap_or(LogFormat::Text),
            max_object_size: size(self.max_object_size, "5GiB", "max-object-size")?,
            gc_grace: dur(self.gc_grace, "1h", "gc-grace")?,
            gc_interval: dur(self.gc_interval, "1m", "gc-interval")?,
            multipart_expiry: dur(self.multipart_expiry, "7d", "multipart-expiry")?,
            drain_timeout: dur(self.drain_timeout, "30s", "drain-timeout")?,
            block_cache: size(self.block_cache, "16MiB", "block-cache")?,
            default_policy: {
                let mut p = storage::wal::StoredPolicy::default();
                if let Some(v) = &self.delete_protection {
                    p.policy.protection = storage::wal::DeleteProtection::from_name(v).ok_or_else(|| {
                        format!("delete-protection: {v:?} is not allow, protect-required or deny-all")
                    })?;
                }
                p.policy.recovery_window = dur(self.recovery_window, "7d", "recovery-window")?;
                if let Some(n) = self.min_backups {
                    if n == 0 {
                        return Err("min-backups: must be at least 1".into());
                    }
                    p.policy.min_backups = n;
                }
                p.policy.gc_delay = dur(self.gc_delay, "1d", "gc-delay")?;
                p.policy.enforce = self.retention_enforce.unwrap_or(false);
                p.split_brain_guard = self.split_brain_guard.unwrap_or(true);
                if let Some(m) = &self.identity_check {
                    p.identity_check = Some(
                        storage::wal::IdentityCheck::from_name(m)
                            .ok_or_else(|| format!("identity-check: {m:?} is not enforce, warn or off"))?,
                    );
                }
                p
            },
            retention_interval: dur(self.retention_interval, "5m", "retention-interval")?,
            tls: match (self.tls_cert, self.tls_key) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                _ => return Err("tls-cert and tls-key: set both or neither".into()),
            },
            metrics_token: self.metrics_token.filter(|t| !t.is_empty()),
            scrub_interval: parse_duration(self.scrub_interval.as_deref().unwrap_or("7d"))
                .or_else(|e| if self.scrub_interval.as_deref() == Some("0") { Ok(Duration::ZERO) } else { Err(e) })
                .map_err(|e| format!("scrub-interval: {e}"))?,
            reserve_space: self
                .reserve_space
                .as_deref()
                .unwrap_or("auto")
                .parse()
                .map_err(|e| format!("reserve-space: {e}"))?,
            max_connections: self.max_connections.unwrap_or(4096),
            max_header_size: usize::try_from(size(self.max_header_size, "64KiB", "max-header-size")?)
                .map_err(|_| "max-header-size: too large".to_string())?,
            header_timeout: dur(self.header_timeout, "30s", "header-timeout")?,
            body_timeout: dur(self.body_timeout, "30s", "body-timeout")?,
            body_min_rate: size(self.body_min_rate, "1KiB", "body-min-rate")?,
            scrub_rate: size(self.scrub_rate, "64MiB", "scrub-rate")?,
            signature_v2: on_off(self.signature_v2.as_deref(), true, "signature-v2")?,
            tier_interval: dur(self.tier_interval, "30s", "tier-interval")?,
            tier_scrub_interval: match self.tier_scrub_interval.as_deref().map(str::trim) {
                Some("0") => Duration::ZERO,
                v => parse_duration(v.unwrap_or("24h")).map_err(|e| format!("tier-scrub-interval: {e}"))?,
            },
            tier_scrub_full: on_off(self.tier_scrub_full.as_deref(), false, "tier-scrub-full")?,
            tier_cache: size(self.tier_cache, "1GiB", "tier-cache")?,
            replication: self.replication,
        };
        let mut names = std::collections::HashSet::new();
        for r in &cfg.replication {
            r.record(storage::Timestamp::from_millis(0), true).map_err(|e| format!("replication {:?}: {e}", r.name))?;
            if !names.insert(r.name.clone()) {
                return Err(format!("replication {:?}: defined twice", r.name));
            }
        }
        if cfg.max_connections == 0 {
            return Err("max-connections: must be at least 1".into());
        }
        if !(s3api::MIN_HEADER_BYTES..=16 << 20).contains(&cfg.max_header_size) {
            return Err("max-header-size: must be between 8KiB and 16MiB".into());
        }
        if cfg.header_timeout.is_zero() {
            return Err("header-timeout: must be greater than zero".into());
        }
        if cfg.body_timeout.is_zero() {
            return Err("body-timeout: must be greater than zero".into());
        }
        if cfg.gc_interval.is_zero() {
            return Err("gc-interval: must be greater than zero".into());
        }
        for b in &cfg.buckets {
            storage::BucketName::parse(b).map_err(|e| format!("bucket: {e}"))?;
        }
        Ok(cfg)
    }
}

/// An on/off setting (`true`/`false` too), `default` when unset.
fn on_off(v: Option<&str>, default: bool, name: &str) -> Result<bool, String> {
    match v.map(str::trim) {
        None => Ok(default),
        Some("on" | "true") => Ok(true),
        Some("off" | "false") => Ok(false),
        Some(other) => Err(format!("{name}: expected on or off, not {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_defaults() {
        let file: Settings =
            toml::from_str("region = \"de01\"\nlisten = \"127.0.0.1:1\"\ngc-grace = \"2h\"\nbuckets = [\"a-b\"]\n")
                .expect("toml");
        let flags = Settings { listen: Some("127.0.0.1:2".parse().expect("addr")), ..Default::default() };
        let cfg = flags.or(file).resolve().expect("resolve");
        assert_eq!(cfg.listen.port(), 2, "flags win over the file");
        assert_eq!(cfg.region, "de01");
        assert_eq!(cfg.gc_grace, Duration::from_secs(7200));
        assert_eq!(cfg.buckets, vec!["a-b".to_string()]);
        assert_eq!(cfg.max_object_size, 5 << 30);
        assert_eq!(cfg.data_dir, PathBuf::from("./walstore-data"));
        assert_eq!(cfg.max_connections, 4096);
        assert_eq!(cfg.max_header_size, 64 << 10);
        assert_eq!((cfg.header_timeout, cfg.body_timeout), (Duration::from_secs(30), Duration::from_secs(30)));
        assert_eq!(cfg.body_min_rate, 1024);
    }

    #[test]
    fn connection_limits() {
        let file: Settings = toml::from_str(
            "max-connections = 100\nmax-header-size = \"16KiB\"\nheader-timeout = \"5s\"\nbody-timeout = \"1m\"\nbody-min-rate = \"0\"\n",
        )
        .expect("toml");
        let cfg = file.resolve().expect("resolve");
        assert_eq!(cfg.max_connections, 100);
        assert_eq!(cfg.max_header_size, 16 << 10);
        assert_eq!(cfg.header_timeout, Duration::from_secs(5));
        assert_eq!(cfg.body_timeout, Duration::from_secs(60));
        assert_eq!(cfg.body_min_rate, 0);
        for (bad, name) in [
            (Settings { max_connections: Some(0), ..Default::default() }, "max-connections:"),
            (Settings { max_header_size: Some("4KiB".into()), ..Default::default() }, "max-header-size:"),
            (Settings { header_timeout: Some("0s".into()), ..Default::default() }, "header-timeout:"),
            (Settings { body_timeout: Some("0s".into()), ..Default::default() }, "body-timeout:"),
            (Settings { body_min_rate: Some("fast".into()), ..Default::default() }, "body-min-rate:"),
        ] {
            let e = bad.resolve().expect_err(name);
            assert!(e.starts_with(name), "{e}");
        }
    }

    #[test]
    fn bad_values_are_reported_by_name() {
        let e = Settings { gc_grace: Some("soon".into()), ..Default::default() }.resolve().expect_err("bad");
        assert!(e.starts_with("gc-grace:"), "{e}");
        let e = Settings { buckets: vec!["Bad_Name".into()], ..Default::default() }.resolve().expect_err("bad");
        assert!(e.starts_with("bucket:"), "{e}");
        assert!(toml::from_str::<Settings>("colour = 1").is_err(), "unknown keys are rejected");
    }
}
